//! Fixture: a greeter whose descriptor is the current layout less its last field, as a plugin
//! built before that field was appended: `descriptor_size` ends where `build_profile` begins.

const VERSION: &str = "1.10.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

use graft_plugin_api::abi::{BUILD_PROFILE_DEBUG, PluginDescriptor, PluginIdentity};

static DESCRIPTOR: PluginDescriptor = {
    let mut descriptor = PluginDescriptor::for_service::<Greeter>(
        PluginIdentity {
            service_name: "greeter",
            plugin_version: VERSION,
            interface_name: "greeter",
            interface_version: "1.10.0",
        },
        &[],
        graft_plugin_api::build_flags!(),
    )
    // Past the declared size: a host that reads it (instead of "not provided") reports a debug
    // build, which this optimised fixture is not.
    .with_build_profile(BUILD_PROFILE_DEBUG);
    descriptor.header.descriptor_size =
        std::mem::offset_of!(PluginDescriptor, build_profile) as u32;
    descriptor
};

/// The entry point, returning a descriptor that ends before `build_profile`.
#[unsafe(no_mangle)]
pub extern "C" fn graft_plugin_entry() -> *const PluginDescriptor {
    &DESCRIPTOR
}
