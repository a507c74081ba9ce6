//! A generic method cannot be part of an interface.

#[graft_plugin_api::interface(name = "store", version = "1.0.0")]
pub trait Store {
    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T>;
}

fn main() {}
