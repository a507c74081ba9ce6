//! Fixture: a counter (2.0.0) whose descriptor has the layout of `graft-plugin-api` 0.3, the one
//! before the state entry points were appended: `descriptor_size` ends where `state_format`
//! begins, as in a plugin built against 0.3. The fields past it are filled in (a stateful
//! build's), so that a host reading past the declared size would treat it as stateful: it must
//! not, and loads and swaps it as a stateless service.

const VERSION: &str = "2.0.0";
const FORMAT: u32 = 2;
const READS_LATER: bool = true;
const FAULTS: bool = false;

include!("../../shared/counter.rs");

use graft_plugin_api::abi::{PluginDescriptor, PluginIdentity};

static DESCRIPTOR: PluginDescriptor = {
    let mut descriptor = PluginDescriptor::for_service::<Counter>(
        PluginIdentity {
            service_name: "counter",
            plugin_version: VERSION,
            interface_name: "counter",
            interface_version: "1.0.0",
        },
        &[],
        graft_plugin_api::build_flags!(),
    )
    .with_build_profile(graft_plugin_api::build_profile!())
    .with_state::<Counter>();
    descriptor.header.descriptor_size = std::mem::offset_of!(PluginDescriptor, state_format) as u32;
    descriptor
};

/// The entry point, returning a descriptor of the 0.3 layout.
#[unsafe(no_mangle)]
pub extern "C" fn graft_plugin_entry() -> *const PluginDescriptor {
    &DESCRIPTOR
}
