//! The key-value service, version 1.0.0 (state format 1; reads format 2).

const VERSION: &str = "1.0.0";
const INTERFACE: &str = "1.0.0";
const FORMAT: u32 = 1;

include!("../../shared/kv.rs");

graft_plugin_api::export_service!(
    Kv, name: "kv", version: VERSION, interface: "kv" @ INTERFACE, stateful
);
