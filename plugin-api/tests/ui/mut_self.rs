//! An interface method must take `&self`, not `&mut self`.

#[graft_plugin_api::interface(name = "counter", version = "1.0.0")]
pub trait Counter {
    fn increment(&mut self, by: u64) -> u64;
}

fn main() {}
