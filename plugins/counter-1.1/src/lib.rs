//! The counter service, version 1.1.0 (state format 2; migrates format 1).

const VERSION: &str = "1.1.0";
const FORMAT: u32 = 2;
const READS_LATER: bool = true;
const FAULTS: bool = false;

include!("../../shared/counter.rs");

graft_plugin_api::export_service!(
    Counter, name: "counter", version: VERSION, interface: "counter" @ "1.0.0", stateful
);
