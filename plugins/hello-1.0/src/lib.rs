//! The typed hello-world service: the whole plugin.

use graft::{Error, Host, Service};
use graft_hello_interface::Hello;

/// The service; it holds nothing.
#[derive(Debug)]
pub struct Greeter;

impl Service for Greeter {
    fn create(_host: Host) -> Result<Self, Error> {
        Ok(Greeter)
    }
}

impl Hello for Greeter {
    fn greet(&self, name: &str) -> String {
        format!("hello, {name}")
    }
    fn ping(&self) {}
}

graft::export_service!(Greeter, name: "hello", version: "1.0.0", interface: Hello);
