//! A parameter type without serde's traits cannot cross an interface.

pub struct Point {
    pub x: i32,
    pub y: i32,
}

#[graft_plugin_api::interface(name = "canvas", version = "1.0.0")]
pub trait Canvas {
    fn plot(&self, at: Point) -> bool;
}

fn main() {}
