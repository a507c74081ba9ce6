//! Fixture: a service (`crashy` 1.0.0) whose construction always panics: a crash loop for the
//! restart policy.

const VERSION: &str = "1.0.0";
const RENDEZVOUS: bool = false;
const PANIC_IN_CREATE: bool = true;

include!("../../shared/worker.rs");

graft_plugin_api::export_service!(Worker, name: "crashy", version: VERSION, interface: "crashy" @ "1.0.0");
