//! Fixture: a greeter build whose descriptor header carries the wrong magic number.

const VERSION: &str = "1.4.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

use graft_plugin_api::abi::{PluginDescriptor, PluginIdentity};

static DESCRIPTOR: PluginDescriptor = {
    let mut descriptor = PluginDescriptor::for_service::<Greeter>(
        PluginIdentity {
            service_name: "greeter",
            plugin_version: VERSION,
            interface_name: "greeter",
            interface_version: "1.4.0",
        },
        &[],
        graft_plugin_api::build_flags!(),
    );
    descriptor.header.magic = u64::from_le_bytes(*b"NOTGRAFT");
    descriptor
};

/// The entry point, returning a descriptor with a wrong magic number.
#[unsafe(no_mangle)]
pub extern "C" fn graft_plugin_entry() -> *const PluginDescriptor {
    &DESCRIPTOR
}
