//! Fixture: a compatible greeter build (1.10.0, interface greeter 1.0.5) that declares a
//! dependency on the `rendezvous` service, so that a rollback to it needs that service running.

const VERSION: &str = "1.10.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

graft_plugin_api::export_service!(
    Greeter,
    name: "greeter",
    version: VERSION,
    interface: "greeter" @ "1.0.5",
    dependencies: ["rendezvous" @ "^1"],
);
