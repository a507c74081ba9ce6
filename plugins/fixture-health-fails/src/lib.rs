//! Fixture: a compatible greeter build (1.3.0) whose health check fails.

const VERSION: &str = "1.3.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = true;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

graft_plugin_api::export_service!(Greeter, name: "greeter", version: VERSION, interface: "greeter" @ "1.3.0");
