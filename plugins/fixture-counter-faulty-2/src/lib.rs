//! A counter (1.3.0, state format 2) whose handover steps fail on request.

const VERSION: &str = "1.3.0";
const FORMAT: u32 = 2;
const READS_LATER: bool = true;
const FAULTS: bool = true;

include!("../../shared/counter.rs");

graft_plugin_api::export_service!(
    Counter, name: "counter", version: VERSION, interface: "counter" @ "1.0.0", stateful
);
