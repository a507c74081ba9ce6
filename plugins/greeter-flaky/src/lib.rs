//! Fixture: a compatible greeter build (1.9.0) whose `greet` panics on every fourth call: a share
//! of failing calls that probation must catch.

const VERSION: &str = "1.9.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = Some(4);

include!("../../shared/greeter.rs");

graft_plugin_api::export_service!(Greeter, name: "greeter", version: VERSION, interface: "greeter" @ "1.9.0");
