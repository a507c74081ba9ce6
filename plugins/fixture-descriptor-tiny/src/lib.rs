//! Fixture: a greeter whose descriptor is smaller than the fields ABI 2 launched with: its
//! header claims one field less than `MIN_DESCRIPTOR_SIZE`, so the host must refuse it.

const VERSION: &str = "1.12.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

use graft_plugin_api::abi::{MIN_DESCRIPTOR_SIZE, PluginDescriptor, PluginIdentity};

static DESCRIPTOR: PluginDescriptor = {
    let mut descriptor = PluginDescriptor::for_service::<Greeter>(
        PluginIdentity {
            service_name: "greeter",
            plugin_version: VERSION,
            interface_name: "greeter",
            interface_version: "1.12.0",
        },
        &[],
        graft_plugin_api::build_flags!(),
    );
    descriptor.header.descriptor_size = (MIN_DESCRIPTOR_SIZE - std::mem::size_of::<usize>()) as u32;
    descriptor
};

/// The entry point, returning a descriptor too small to be read.
#[unsafe(no_mangle)]
pub extern "C" fn graft_plugin_entry() -> *const PluginDescriptor {
    &DESCRIPTOR
}
