//! The host's side of the callbacks a plugin calls: the output sink and the log bridge.
//!
//! Every function here is `extern "C"` and is called from plugin code, so none may unwind: each
//! either cannot panic or runs under `catch_unwind`.

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

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
pub(crate) struct HostContext {
    service: String,
    version: String,
}

/// The host API table handed to one instance, and the context its callbacks read.
///
/// Invariant: `api.ctx` points at `*context`. Both are boxed, so their addresses do not change
/// when this value moves, and they live until the instance they were given to is destroyed (the
/// `Generation` that owns this value destroys its instance first).
#[derive(Debug)]
pub(crate) struct HostApiBox {
    api: Box<HostApi>,
    _context: Box<HostContext>,
}

impl HostApiBox {
    pub fn new(service: &str, version: &str) -> Self {
        let context = Box::new(HostContext {
            service: service.to_owned(),
            version: version.to_owned(),
        });
        let api = Box::new(HostApi {
            size: std::mem::size_of::<HostApi>(),
            ctx: (&*context as *const HostContext).cast::<c_void>(),
            log: log_line,
        });
        HostApiBox {
            api,
            _context: context,
        }
    }

    pub fn as_ptr(&self) -> *const HostApi {
        &*self.api
    }
}

/// `LogFn`: forwards a plugin's log line to the host's `tracing`, tagged with the service and
/// its version, under the target `graft::plugin`.
///
/// # Safety
/// `ctx` must be the context of a live [`HostApiBox`]; `message` must point at `len` readable
/// bytes (or be null with `len` 0).
unsafe extern "C" fn log_line(ctx: *const c_void, level: u32, message: *const u8, len: usize) {
    // A subscriber may panic; that must not unwind into the plugin.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the `HostContext` of a live `HostApiBox` (this function's contract).
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
