//! The counter service, version 1.0.0 (state format 1; reads later formats by their prefix).

const VERSION: &str = "1.0.0";
const FORMAT: u32 = 1;
const READS_LATER: bool = true;
const FAULTS: bool = false;

include!("../../shared/counter.rs");

graft_plugin_api::export_service!(
    Counter, name: "counter", version: VERSION, interface: "counter" @ "1.0.0", stateful
);
