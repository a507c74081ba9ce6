//! A generic trait cannot be an interface.

#[graft_plugin_api::interface(name = "store", version = "1.0.0")]
pub trait Store<T> {
    fn get(&self, key: &str) -> Option<T>;
}

fn main() {}
