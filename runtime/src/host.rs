//! The host's side of the callbacks a plugin calls: the output sink, the log bridge, and calls
//! to other services, with the provenance records that carry their failures back.
//!
//! Every function here is `extern "C"` and is called from plugin code, so none may unwind: each
//! either cannot panic or runs under `catch_unwind`.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use std::sync::Weak;

use graft_plugin_api::abi::{
    HostApi, RawBytes, RawStr, STATUS_DEPENDENCY, STATUS_OK, STATUS_PANIC, STATUS_REFUSED,
    WriteSink, log_level,
};
use graft_plugin_api::provenance::{Failure, FailureKind, Provenance};
use parking_lot::Mutex;

use crate::runtime::Shared;
use crate::{Error, ServiceState};

/// What the callbacks need to know about the instance calling them: which runtime, service
/// and version it belongs to.
struct HostContext {
    runtime: Weak<Shared>,
    service: String,
    version: String,
}

/// One host API table and its context, leaked so that both live until the process exits.
struct HostTable {
    api: HostApi,
    context: HostContext,
}

// SAFETY: the raw pointers in `api` point at `context` and its strings, in the same leaked
// table, which is never mutated after it is published; `Weak<Shared>` is `Send + Sync`.
unsafe impl Sync for HostTable {}
// SAFETY: as for `Sync`.
unsafe impl Send for HostTable {}

/// The tables handed out so far, one per (runtime, service, version).
///
/// Invariant: every table is leaked (`&'static`) and never freed. A plugin may keep a copy of
/// its `Host` anywhere (a static, a thread-local whose destructor runs after the generation was
/// unloaded, since glibc keeps such a library mapped), so no point in time is safe for freeing
/// it. Interning bounds the leak by the number of distinct (runtime, service, version) triples
/// this process ever loads: a few hundred bytes each.
static HOST_TABLES: Mutex<BTreeMap<(u64, String, String), &'static HostTable>> =
    Mutex::new(BTreeMap::new());

/// The host API table for instances of `service` at `version` in the runtime `runtime_id`,
/// valid until the process exits. `runtime` is only stored the first time a key is seen.
pub(crate) fn host_api(
    runtime_id: u64,
    runtime: &Weak<Shared>,
    service: &str,
    version: &str,
) -> &'static HostApi {
    let mut tables = HOST_TABLES.lock();
    let key = (runtime_id, service.to_owned(), version.to_owned());
    let table = *tables.entry(key).or_insert_with(|| {
        let table: &'static mut HostTable = Box::leak(Box::new(HostTable {
            api: HostApi {
                size: std::mem::size_of::<HostApi>(),
                ctx: std::ptr::null(),
                service: RawStr::new(""),
                version: RawStr::new(""),
                log: log_line,
                call_service,
                // `Lease::call_error` turns every status up to this one into its own error.
                max_status: STATUS_REFUSED,
            },
            context: HostContext {
                runtime: runtime.clone(),
                service: service.to_owned(),
                version: version.to_owned(),
            },
        }));
        // The table is leaked, so the addresses of its context and strings are final and
        // valid for ever.
        table.api.ctx = (&table.context as *const HostContext).cast::<c_void>();
        table.api.service = RawStr::new(&table.context.service);
        table.api.version = RawStr::new(&table.context.version);
        table
    });
    &table.api
}

/// `CallServiceFn`: a plugin calls another service by name.
///
/// # Safety
/// `ctx` must be the `ctx` of a table from [`host_api`]; the strings, input and sinks must be
/// valid for the call.
unsafe extern "C" fn call_service(
    ctx: *const c_void,
    service: RawStr,
    method: RawStr,
    input: RawBytes,
    output: *const WriteSink,
    error: *const WriteSink,
) -> i32 {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the `HostContext` of a leaked `HostTable` (this function's contract
        // and `HOST_TABLES`' invariant).
        let context = unsafe { &*ctx.cast::<HostContext>() };
        // SAFETY: the plugin passes views valid for the call (this function's contract).
        let (service, method, input) =
            unsafe { (service.as_bytes(), method.as_bytes(), input.as_slice()) };
        // SAFETY: both sinks are valid for the call (this function's contract).
        let (output, error) = unsafe { (&*output, &*error) };
        let service = String::from_utf8_lossy(service);
        let method = String::from_utf8_lossy(method);
        let mut answer = Vec::new();
        let result = match context.runtime.upgrade() {
            Some(shared) => {
                crate::handle::call_between(&shared, &service, &method, input, &mut answer)
            }
            None => {
                Err(Error::Stopped { service: service.to_string(), state: ServiceState::Stopped })
            }
        };
        match result {
            Ok(()) => {
                if write_sink(output, &answer) {
                    STATUS_OK
                } else {
                    write_failure(error, &service, &method, "the caller could not take the answer")
                }
            }
            Err(e) => {
                let _ = write_sink(error, &provenance::record(&e, &service, &method));
                STATUS_DEPENDENCY
            }
        }
    }));
    match outcome {
        Ok(status) => status,
        Err(payload) => {
            // The host's own code panicked (a bug in the runtime or a `tracing` subscriber):
            // the plugin still gets a record, so that its caller learns what happened instead
            // of an empty failure.
            let why = panic_message(payload.as_ref());
            if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
                std::mem::forget(again);
            }
            let written = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: the plugin passes views valid for the call (this function's contract).
                let (service, method) = unsafe { (service.as_bytes(), method.as_bytes()) };
                let (service, method) =
                    (String::from_utf8_lossy(service), String::from_utf8_lossy(method));
                let why = format!("the host panicked while calling it: {why}");
                write_failure(error, &service, &method, &why)
            }));
            written.unwrap_or(STATUS_PANIC)
        }
    }
}

/// The text of a panic's payload, when it is a string.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (None, Some(text)) => text.clone(),
        (None, None) => "a panic without a message".to_owned(),
    }
}

fn write_failure(error: *const WriteSink, service: &str, method: &str, why: &str) -> i32 {
    let record = Provenance {
        chain: Vec::new(),
        failure: Failure {
            kind: FailureKind::Other("failed".to_owned()),
            service: service.to_owned(),
            version: String::new(),
            method: method.to_owned(),
            message: why.to_owned(),
        },
    };
    // SAFETY: `error` is the sink `call_service` received, valid for its call.
    let _ = write_sink(unsafe { &*error }, &record.encode());
    STATUS_DEPENDENCY
}

/// Writes `bytes` through a plugin's sink; false if it could not take them.
fn write_sink(sink: &WriteSink, bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    // SAFETY: the plugin's `write` accepts its own `ctx` and any slice valid for the call.
    unsafe { (sink.write)(sink.ctx, bytes.as_ptr(), bytes.len()) == 0 }
}

/// Turning errors into provenance records and back, at the boundary between services.
pub(crate) mod provenance {
    use graft_plugin_api::provenance::{Failure, FailureKind, Hop as RecordHop, Provenance};
    use semver::Version;

    use crate::Error;
    use crate::error::Hop;

    /// The record a plugin receives when its call to `service`.`method` failed with `error`.
    pub(crate) fn record(error: &Error, service: &str, method: &str) -> Vec<u8> {
        let failure =
            |kind: FailureKind, service: &str, version: &str, method: &str, message: String| {
                Failure {
                    kind,
                    service: service.to_owned(),
                    version: version.to_owned(),
                    method: method.to_owned(),
                    message,
                }
            };
        let provenance = match error {
            Error::DependencyFailed { chain, cause } => Provenance {
                chain: chain
                    .iter()
                    .map(|h| RecordHop {
                        service: h.service.clone(),
                        version: h.version.clone(),
                        method: h.method.clone(),
                    })
                    .collect(),
                failure: record_failure(cause),
            },
            other => Provenance {
                chain: Vec::new(),
                failure: record_failure_or(other, service, method, &failure),
            },
        };
        provenance.encode()
    }

    fn record_failure(error: &Error) -> Failure {
        record_failure_or(error, "", "", &|kind, service, version, method, message| Failure {
            kind,
            service: service.to_owned(),
            version: version.to_owned(),
            method: method.to_owned(),
            message,
        })
    }

    fn record_failure_or(
        error: &Error,
        service: &str,
        method: &str,
        make: &dyn Fn(FailureKind, &str, &str, &str, String) -> Failure,
    ) -> Failure {
        match error {
            Error::CallFailed { service, version, method, message } => {
                make(FailureKind::Error, service, &version.to_string(), method, message.clone())
            }
            Error::Refused { service, version, method, message } => {
                make(FailureKind::Refused, service, &version.to_string(), method, message.clone())
            }
            Error::PluginPanicked { service, version, method, message } => {
                make(FailureKind::Panic, service, &version.to_string(), method, message.clone())
            }
            Error::NotReady { service: target, .. } => {
                make(FailureKind::NotReady, target, "", method, error.to_string())
            }
            Error::Stopped { service: target, .. } => {
                make(FailureKind::Stopped, target, "", method, error.to_string())
            }
            // A failure that came from further down as a record keeps its service and method
            // when it is passed on again, so a chain of any length still names where it was.
            Error::Remote { service: target, method: called, message } => {
                make(FailureKind::Other("failed".to_owned()), target, "", called, message.clone())
            }
            other => make(
                FailureKind::Other("failed".to_owned()),
                service,
                "",
                method,
                other.to_string(),
            ),
        }
    }

    /// The error a caller of `service`.`method` (at `version`) gets when that call passed on a
    /// failed call to another service, whose record is `record`.
    pub(crate) fn received(service: &str, version: &Version, method: &str, record: &[u8]) -> Error {
        let hop = Hop {
            service: service.to_owned(),
            version: version.to_string(),
            method: method.to_owned(),
        };
        let Some(provenance) = Provenance::decode(record) else {
            // A plugin that passed on an error without its record (or with a broken one) still
            // gives its caller something to act on.
            let message = if record.is_empty() {
                "it passed on a failed call to another service without saying what failed"
                    .to_owned()
            } else {
                format!(
                    "it passed on a failed call to another service with an unreadable record: {}",
                    String::from_utf8_lossy(record)
                )
            };
            return Error::CallFailed {
                service: service.to_owned(),
                version: version.clone(),
                method: method.to_owned(),
                message,
            };
        };
        let mut chain = vec![hop];
        chain.extend(provenance.chain.into_iter().map(|h| Hop {
            service: h.service,
            version: h.version,
            method: h.method,
        }));
        let f = provenance.failure;
        let parsed = Version::parse(&f.version).unwrap_or_else(|_| Version::new(0, 0, 0));
        let cause = match f.kind {
            FailureKind::Error => Error::CallFailed {
                service: f.service,
                version: parsed,
                method: f.method,
                message: f.message,
            },
            FailureKind::Refused => Error::Refused {
                service: f.service,
                version: parsed,
                method: f.method,
                message: f.message,
            },
            FailureKind::Panic => Error::PluginPanicked {
                service: f.service,
                version: parsed,
                method: f.method,
                message: f.message,
            },
            FailureKind::NotReady | FailureKind::Stopped | FailureKind::Other(_) => {
                Error::Remote { service: f.service, method: f.method, message: f.message }
            }
        };
        Error::DependencyFailed { chain, cause: Box::new(cause) }
    }
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
mod table_tests {
    use super::*;

    #[test]
    fn host_tables_are_interned_per_runtime_service_and_version() {
        let none = Weak::new();
        let a = host_api(u64::MAX, &none, "interned", "1.0.0");
        assert!(std::ptr::eq(a, host_api(u64::MAX, &none, "interned", "1.0.0")));
        assert!(!std::ptr::eq(a, host_api(u64::MAX, &none, "interned", "1.0.1")));
        assert!(!std::ptr::eq(a, host_api(u64::MAX - 1, &none, "interned", "1.0.0")));
        // SAFETY: the table's strings are leaked with it.
        assert_eq!(unsafe { a.service.as_bytes() }, b"interned");
        // SAFETY: `ctx` of a table from `host_api` is its leaked `HostContext`.
        let context = unsafe { &*a.ctx.cast::<HostContext>() };
        assert_eq!((context.service.as_str(), context.version.as_str()), ("interned", "1.0.0"));
    }
}

#[cfg(test)]
mod provenance_tests {
    use super::*;
    use semver::Version;

    /// A `CallError` passed on with `?` without a record became `CallFailed` with an empty
    /// message: the caller learned nothing.
    #[test]
    fn a_failure_passed_on_without_a_record_still_says_what_happened() {
        let error = provenance::received("front", &Version::new(1, 0, 0), "relay", b"");
        let Error::CallFailed { service, message, .. } = &error else {
            panic!("expected CallFailed, got {error:?}");
        };
        assert_eq!(service, "front");
        assert!(message.contains("without saying what failed"), "{message}");
    }

    #[test]
    fn a_panic_in_the_host_is_written_as_a_record_the_caller_can_read() {
        let mut record = Vec::new();
        let sink = WriteSink::for_vec(&mut record);
        let status = write_failure(&sink, "back", "greet", "the host panicked: boom");
        assert_eq!(status, STATUS_DEPENDENCY);
        let error = provenance::received("front", &Version::new(1, 0, 0), "relay", &record);
        let text = error.to_string();
        assert!(text.contains("back") && text.contains("boom"), "{text}");
        assert_eq!(panic_message(&"boom"), "boom");
        assert_eq!(panic_message(&String::from("boom")), "boom");
    }
}
