//! Fixture: a worker (1.0.0) whose construction waits at the `rendezvous` service until every
//! service of its start wave is constructing too, which proves that a wave starts in parallel.

const VERSION: &str = "1.0.0";
const RENDEZVOUS: bool = true;
const PANIC_IN_CREATE: bool = false;

include!("../../shared/worker.rs");

graft_plugin_api::export_service!(
    Worker,
    name: "worker",
    version: VERSION,
    interface: "worker" @ "1.0.0",
    dependencies: ["rendezvous" @ "^1"],
);
