//! The worker service (1.0.0): a template loaded under many names, whose construction does a
//! little work and which relays calls to other services through the host.

const VERSION: &str = "1.0.0";
const RENDEZVOUS: bool = false;
const PANIC_IN_CREATE: bool = false;

include!("../../shared/worker.rs");

graft_plugin_api::export_service!(Worker, name: "worker", version: VERSION, interface: "worker" @ "1.0.0");
