//! Fixture: a compatible greeter build (1.2.0) whose construction fails.

const VERSION: &str = "1.2.0";
const FAIL_CREATE: bool = true;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

graft_plugin_api::export_service!(Greeter, name: "greeter", version: VERSION, interface: "greeter" @ "1.2.0");
