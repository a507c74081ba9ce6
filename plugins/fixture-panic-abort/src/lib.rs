//! Fixture: a compatible greeter build (1.7.0) that the catalog builds with `panic = "abort"`
//! (profile `plugin-abort`), so that its descriptor lacks the unwind build flag.

const VERSION: &str = "1.7.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

graft_plugin_api::export_service!(Greeter, name: "greeter", version: VERSION, interface: "greeter" @ "1.7.0");
