//! Fixture: a greeter build whose descriptor header claims an ABI version the host does not speak.

const VERSION: &str = "1.5.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

use graft_plugin_api::abi::{ABI_VERSION, PluginDescriptor, PluginIdentity};

static DESCRIPTOR: PluginDescriptor = {
    let mut descriptor = PluginDescriptor::for_service::<Greeter>(
        PluginIdentity {
            service_name: "greeter",
            plugin_version: VERSION,
            interface_name: "greeter",
            interface_version: "1.5.0",
        },
        &[],
        graft_plugin_api::build_flags!(),
    );
    descriptor.header.abi_version = ABI_VERSION + 41;
    descriptor
};

/// The entry point, returning a descriptor from an ABI version the host does not speak.
#[unsafe(no_mangle)]
pub extern "C" fn graft_plugin_entry() -> *const PluginDescriptor {
    &DESCRIPTOR
}
