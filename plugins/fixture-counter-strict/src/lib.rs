//! A counter (0.9.0, state format 1) that refuses every later format.

const VERSION: &str = "0.9.0";
const FORMAT: u32 = 1;
const READS_LATER: bool = false;
const FAULTS: bool = false;

include!("../../shared/counter.rs");

graft_plugin_api::export_service!(
    Counter, name: "counter", version: VERSION, interface: "counter" @ "1.0.0", stateful
);
