//! The key-value service, version 1.1.0: adds the `writes` method (interface kv 1.1.0) and
//! exports state format 2, the entries with their write counts; migrates format 1.

const VERSION: &str = "1.1.0";
const INTERFACE: &str = "1.1.0";
const FORMAT: u32 = 2;

include!("../../shared/kv.rs");

graft_plugin_api::export_service!(
    Kv, name: "kv", version: VERSION, interface: "kv" @ INTERFACE, stateful
);
