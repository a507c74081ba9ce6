//! Fixture: a valid shared library that exports no graft entry symbol.

const VERSION: &str = "1.6.0";
const FAIL_CREATE: bool = false;
const FAIL_HEALTH: bool = false;
const HEALTHY_CHECKS: Option<usize> = None;
const PANIC_EVERY: Option<usize> = None;

include!("../../shared/greeter.rs");

/// A symbol with a near-miss name, so the library is a real plugin-shaped object that lacks only
/// the entry point.
#[unsafe(no_mangle)]
pub extern "C" fn graft_plugin_entry_v0() -> *const u8 {
    std::ptr::null()
}

/// Keeps the greeter compiled in, so the library is as large as a real plugin.
#[unsafe(no_mangle)]
pub extern "C" fn fixture_greeter_size() -> usize {
    let _ = Greeter::create;
    std::mem::size_of::<Greeter>()
}
