//! Fixture: a greeter whose descriptor carries a field appended after this host's layout, as a
//! plugin built against a newer `graft-plugin-api` would: the host must load it and ignore the
//! field, which by the ABI's growth rule is optional.

const VERSION: &str = "1.11.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

use graft_plugin_api::abi::{PluginDescriptor, PluginIdentity};

/// The descriptor of a later ABI revision: today's, then one appended field.
#[repr(C)]
#[derive(Debug)]
pub struct ExtendedDescriptor {
    base: PluginDescriptor,
    /// A field this host does not know; non-zero so that a host misreading it would notice.
    future_field: u64,
}

static DESCRIPTOR: ExtendedDescriptor = {
    let mut base = PluginDescriptor::for_service::<Greeter>(
        PluginIdentity {
            service_name: "greeter",
            plugin_version: VERSION,
            interface_name: "greeter",
            interface_version: "1.11.0",
        },
        &[],
        graft_plugin_api::build_flags!(),
    )
    .with_build_profile(graft_plugin_api::build_profile!());
    base.header.descriptor_size = std::mem::size_of::<ExtendedDescriptor>() as u32;
    ExtendedDescriptor { base, future_field: u64::MAX }
};

/// The entry point, returning the extended descriptor (which opens with today's).
#[unsafe(no_mangle)]
pub extern "C" fn graft_plugin_entry() -> *const PluginDescriptor {
    &DESCRIPTOR.base
}
