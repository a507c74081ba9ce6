//! An interface method cannot take `impl Trait`.

#[graft_plugin_api::interface(name = "printer", version = "1.0.0")]
pub trait Printer {
    fn print(&self, text: impl std::fmt::Display);
}

fn main() {}
