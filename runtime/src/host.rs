//! The host's side of the callbacks a plugin calls: the output sink and the log bridge.
//!
//! Every function here is `extern "C"` and is called from plugin code, so none may unwind: each
//! either cannot panic or runs under `catch_unwind`.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use parking_lot::Mutex;

use graft_plugin_api::abi::{HostApi, WriteSink, log_level};

/// A sink that appends to `buffer`; valid while `buffer` is borrowed.
pub(crate) fn vec_sink(buffer: &mut Vec<u8>) -> WriteSink {
    WriteSink {
        ctx: (buffer as *mut Vec<u8>).cast::<c_void>(),
        write: write_vec,
    }
}

/// `WriteFn` for a `Vec<u8>`: appends, or returns 1 if the vector cannot grow.
///
/// # Safety
/// `ctx` must be the `*mut Vec<u8>` of a [`vec_sink`] whose borrow is live and not otherwise
/// used during the call; `data` must point at `len` readable bytes.
unsafe extern "C" fn write_vec(ctx: *mut c_void, data: *const u8, len: usize) -> i32 {
    if len == 0 {
        return 0;
    }
    if data.is_null() {
        return 1;
    }
    // SAFETY: `ctx` is the exclusive borrow taken by `vec_sink` (this function's contract).
    let buffer = unsafe { &mut *ctx.cast::<Vec<u8>>() };
    if buffer.try_reserve(len).is_err() {
        return 1;
    }
    // SAFETY: the plugin passes `len` readable bytes at the non-null `data` (the `WriteFn`
    // contract).
    let bytes = unsafe { std::slice::from_raw_parts(data, len) };
    // Capacity is reserved above, so this cannot allocate or panic.
    buffer.extend_from_slice(bytes);
    0
}

/// What the log bridge needs to tag a plugin's lines: which service and version wrote them.
#[derive(Debug)]
struct HostContext {
    service: String,
    version: String,
}

/// One host API table and its context, leaked so that both live until the process exits.
struct HostTable {
    api: HostApi,
    context: HostContext,
}

// SAFETY: the only raw pointer, `api.ctx`, points at `context` in the same leaked, immutable
// table; sharing it between threads shares nothing mutable.
unsafe impl Sync for HostTable {}
// SAFETY: as for `Sync`; the table is never mutated after it is published.
unsafe impl Send for HostTable {}

/// The tables handed out so far, one per (service, version).
///
/// Invariant: every table is leaked (`&'static`) and never freed. A plugin may keep a copy of
/// its `Host` anywhere (a static, a thread-local whose destructor runs after the generation was
/// unloaded, since glibc keeps such a library mapped), so no point in time is safe for freeing
/// it. Interning bounds the leak by the number of distinct (service, version) pairs this
/// process ever loads: a few hundred bytes each.
static HOST_TABLES: Mutex<BTreeMap<(String, String), &'static HostTable>> =
    Mutex::new(BTreeMap::new());

/// The host API table for instances of `service` at `version`, valid until the process exits.
pub(crate) fn host_api(service: &str, version: &str) -> &'static HostApi {
    let mut tables = HOST_TABLES.lock();
    let key = (service.to_owned(), version.to_owned());
    let table = *tables.entry(key).or_insert_with(|| {
        let table: &'static mut HostTable = Box::leak(Box::new(HostTable {
            api: HostApi {
                size: std::mem::size_of::<HostApi>(),
                ctx: std::ptr::null(),
                log: log_line,
            },
            context: HostContext {
                service: service.to_owned(),
                version: version.to_owned(),
            },
        }));
        // The table is leaked, so its context's address is final and valid for ever.
        table.api.ctx = (&table.context as *const HostContext).cast::<c_void>();
        table
    });
    &table.api
}

/// `LogFn`: forwards a plugin's log line to the host's `tracing`, tagged with the service and
/// its version, under the target `graft::plugin`.
///
/// # Safety
/// `ctx` must be the `ctx` of a table from [`host_api`]; `message` must point at `len` readable
/// bytes (or be null with `len` 0).
unsafe extern "C" fn log_line(ctx: *const c_void, level: u32, message: *const u8, len: usize) {
    // A subscriber may panic; that must not unwind into the plugin.
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the `HostContext` of a leaked `HostTable` (this function's contract
        // and `HOST_TABLES`' invariant), valid for the rest of the process.
        let context = unsafe { &*ctx.cast::<HostContext>() };
        let bytes = if message.is_null() || len == 0 {
            &[][..]
        } else {
            // SAFETY: the plugin passes `len` readable bytes (this function's contract).
            unsafe { std::slice::from_raw_parts(message, len) }
        };
        let text = String::from_utf8_lossy(bytes);
        let (service, version) = (&context.service, &context.version);
        match level {
            log_level::ERROR => {
                tracing::error!(target: "graft::plugin", service, version, "{text}")
            }
            log_level::WARN => tracing::warn!(target: "graft::plugin", service, version, "{text}"),
            log_level::INFO => tracing::info!(target: "graft::plugin", service, version, "{text}"),
            log_level::DEBUG => {
                tracing::debug!(target: "graft::plugin", service, version, "{text}")
            }
            _ => tracing::trace!(target: "graft::plugin", service, version, "{text}"),
        }
    }));
    if let Err(payload) = outcome {
        // Dropping the payload runs its destructor, which may panic too; a second payload is
        // leaked rather than dropped, so nothing unwinds into the plugin.
        if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            std::mem::forget(again);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vec_sink_appends_what_the_plugin_writes() {
        let mut buffer = b"ab".to_vec();
        let sink = vec_sink(&mut buffer);
        // SAFETY: the sink borrows `buffer`, which nothing else touches until the calls return,
        // and each data pointer is valid for its length.
        unsafe {
            assert_eq!((sink.write)(sink.ctx, b"cd".as_ptr(), 2), 0);
            assert_eq!((sink.write)(sink.ctx, std::ptr::null(), 0), 0);
            assert_eq!((sink.write)(sink.ctx, std::ptr::null(), 3), 1);
        }
        assert_eq!(buffer, b"abcd");
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn host_tables_are_interned_per_service_and_version() {
        let a = host_api("interned", "1.0.0");
        assert!(std::ptr::eq(a, host_api("interned", "1.0.0")));
        assert!(!std::ptr::eq(a, host_api("interned", "1.0.1")));
        // SAFETY: `ctx` of a table from `host_api` is its leaked `HostContext`.
        let context = unsafe { &*a.ctx.cast::<HostContext>() };
        assert_eq!(
            (context.service.as_str(), context.version.as_str()),
            ("interned", "1.0.0")
        );
    }
}
