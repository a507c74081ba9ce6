//! Fixture: a compatible greeter build (1.8.0) that passes its first health check (the one a
//! swap runs) and fails every later one, so only probation can catch it.

const VERSION: &str = "1.8.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = Some(1);
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

graft_plugin_api::export_service!(Greeter, name: "greeter", version: VERSION, interface: "greeter" @ "1.8.0");
