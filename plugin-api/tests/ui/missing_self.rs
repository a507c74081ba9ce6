//! An interface method must take `&self`.

#[graft_plugin_api::interface(name = "counter", version = "1.0.0")]
pub trait Counter {
    fn f(x: u32) -> u32;
}

fn main() {}
