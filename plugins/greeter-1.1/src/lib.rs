//! The greeter service, version 1.1.0: a compatible update (interface greeter 1.1.0).

const VERSION: &str = "1.1.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

graft_plugin_api::export_service!(Greeter, name: "greeter", version: VERSION, interface: "greeter" @ "1.1.0");
