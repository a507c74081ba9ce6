//! The interface of the hello-world service.

/// Greets people.
#[graft::interface(name = "hello", version = "1.0.0")]
pub trait Hello {
    /// A greeting for `name`.
    fn greet(&self, name: &str) -> String;
    /// Does nothing: a call's bare cost.
    fn ping(&self);
}
