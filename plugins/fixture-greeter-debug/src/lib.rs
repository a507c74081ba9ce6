//! Fixture: a compatible greeter (1.13.0) built without optimisations: the catalog builds it
//! with the `plugin-debug` profile, so `debug_assertions` is on and the export macro declares a
//! debug build.

const VERSION: &str = "1.13.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

graft_plugin_api::export_service!(Greeter, name: "greeter", version: VERSION, interface: "greeter" @ "1.13.0");
