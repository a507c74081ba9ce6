//! The safe side of the contract: the [`Service`] trait a plugin implements and the types its
//! methods see ([`Host`], [`Output`], [`Error`]).

use std::fmt;

use crate::abi::{HostApi, LogFn, RawBytes, RawStr, STATUS_OK, WriteSink, log_level};
use crate::provenance::Provenance;

/// A service a plugin provides. [`crate::export_service!`] turns an implementation into the
/// plugin's C ABI.
///
/// One instance serves every call: `call` and `health` take `&self` and run on many host
/// threads at once, hence `Send + Sync`. Keep mutable state behind a lock or an atomic.
pub trait Service: Send + Sync + Sized + 'static {
    /// Creates the instance. An `Err` refuses the load or the swap that asked for it; the old
    /// version, if any, keeps serving.
    fn create(host: Host) -> Result<Self, Error>;

    /// Handles one call: reads `input`, writes the answer into `output`.
    fn call(&self, method: &str, input: &[u8], output: &mut Output<'_>) -> Result<(), Error>;

    /// Reports whether the instance can serve. The host runs it before it publishes a new
    /// version and refuses the version when it fails.
    fn health(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// An error a service returns to its caller: a message the host reports along with the
/// service's name and version.
///
/// An error made from a [`CallError`] (as `?` does) also carries where that failure came from,
/// so the host can tell its caller which service failed and through which chain of calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    provenance: Option<Vec<u8>>,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Error { message: message.to_string(), provenance: None }
    }

    /// The error for a method the service does not have.
    pub fn unknown_method(method: &str) -> Self {
        Error::new(format_args!("unknown method `{method}`"))
    }

    /// The provenance record of the failed service call this error passes on, if any.
    pub(crate) fn provenance(&self) -> Option<&[u8]> {
        self.provenance.as_deref()
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::new(message)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error { message, provenance: None }
    }
}

impl From<CallError> for Error {
    fn from(error: CallError) -> Self {
        Error { message: error.message, provenance: Some(error.provenance) }
    }
}

/// A call to another service failed: [`Host::call`]'s error.
///
/// Pass it on with `?` to keep its provenance: the host then reports to its caller which
/// service and version failed and through which chain of calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    message: String,
    provenance: Vec<u8>,
}

impl CallError {
    /// A one-line description: the chain of calls and the failure.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The decoded provenance record, if the host sent a valid one.
    pub fn provenance(&self) -> Option<Provenance> {
        Provenance::decode(&self.provenance)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error::new(error)
    }
}

impl From<OutputFull> for Error {
    fn from(error: OutputFull) -> Self {
        Error::new(error)
    }
}

/// Severity of a log line sent to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// An error.
    Error,
    /// A warning.
    Warn,
    /// Information.
    Info,
    /// Debugging detail.
    Debug,
    /// Tracing detail.
    Trace,
}

/// The host, as seen by a service: calls to other services, and log lines into the host's
/// `tracing`.
///
/// A plugin has its own copy of every global (a `tracing` subscriber, a `log` logger) and the
/// host's are invisible to it; logging through `Host` is how its lines reach the host's output,
/// tagged with the service's name and version. `Host` is `Copy`: keep one in the instance.
#[derive(Clone, Copy)]
pub struct Host {
    api: *const HostApi,
}

// SAFETY: `api` is null or points at a `HostApi` that the host keeps alive and unchanged for the
// rest of the process (the `HostApi` contract), and the host's callbacks are safe to call from
// any thread at any time.
unsafe impl Send for Host {}
// SAFETY: as for `Send`: the pointee is immutable and its callbacks are thread-safe.
unsafe impl Sync for Host {}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

impl Host {
    /// Wraps the host's API table.
    ///
    /// # Safety
    /// `api` must be null or point at a `HostApi` that stays valid and unchanged for as long as
    /// this `Host` or any copy of it is used.
    pub(crate) unsafe fn from_raw(api: *const HostApi) -> Self {
        Host { api }
    }

    /// A host that drops every log line, for unit tests of a service outside any host.
    pub fn detached() -> Self {
        Host { api: std::ptr::null() }
    }

    /// The name this instance serves under, as the host knows it (empty for a detached host).
    ///
    /// It is the descriptor's name unless the host loaded this build under another name.
    pub fn service(&self) -> &'static str {
        self.api_v2().map_or("", |api| {
            // SAFETY: the host's strings live as long as the table, for the rest of the process.
            let bytes = unsafe { api.service.as_bytes() };
            std::str::from_utf8(bytes).unwrap_or("")
        })
    }

    fn api_v2(&self) -> Option<&'static HostApi> {
        if self.api.is_null() {
            return None;
        }
        // SAFETY: non-null, and valid for the rest of the process (`from_raw`'s contract).
        let api = unsafe { &*self.api };
        (api.size >= std::mem::size_of::<HostApi>()).then_some(api)
    }

    /// Writes `message` at `level` into the host's log.
    pub fn log(&self, level: Level, message: &str) {
        if self.api.is_null() {
            return;
        }
        // SAFETY: `api` is non-null, and `from_raw`'s contract keeps it valid while `self` is
        // in use.
        let api = unsafe { &*self.api };
        if api.size < std::mem::size_of::<HostApi>() {
            return;
        }
        let level = match level {
            Level::Error => log_level::ERROR,
            Level::Warn => log_level::WARN,
            Level::Info => log_level::INFO,
            Level::Debug => log_level::DEBUG,
            Level::Trace => log_level::TRACE,
        };
        let log: LogFn = api.log;
        // SAFETY: the host's `log` takes its own `ctx` and a pointer with a length that is valid
        // for the duration of the call, which `message` is.
        unsafe { log(api.ctx, level, message.as_ptr(), message.len()) }
    }

    /// Calls `method` of `service` with `input` through the host, appending the answer to
    /// `output`.
    ///
    /// The host resolves `service` by name on every call, so this never reaches a stale
    /// instance of a service that was restarted or swapped. If the service is starting or
    /// paused, the host waits for it, with a bounded back-off, up to its configured deadline.
    pub fn call(
        &self,
        service: &str,
        method: &str,
        input: &[u8],
        output: &mut Vec<u8>,
    ) -> Result<(), CallError> {
        let unavailable = |why: &str| CallError {
            message: format!("cannot call `{service}`: {why}"),
            provenance: Vec::new(),
        };
        if self.api.is_null() {
            return Err(unavailable("no host (a detached Host)"));
        }
        // SAFETY: `api` is non-null and valid for the rest of the process (`from_raw`'s
        // contract).
        let api = unsafe { &*self.api };
        if api.size < std::mem::size_of::<HostApi>() {
            return Err(unavailable("the host does not offer calls between services"));
        }
        let mut record = Vec::new();
        let output_sink = WriteSink::for_vec(output);
        let error_sink = WriteSink::for_vec(&mut record);
        // SAFETY: the host's `call_service` takes its own `ctx`, string and byte views valid for
        // the call, and two sinks that stay valid (their vectors are borrowed) until it returns.
        let status = unsafe {
            (api.call_service)(
                api.ctx,
                RawStr::new(service),
                RawStr::new(method),
                RawBytes::new(input),
                &output_sink,
                &error_sink,
            )
        };
        if status == STATUS_OK {
            return Ok(());
        }
        let message = match Provenance::decode(&record) {
            Some(provenance) => provenance.describe(),
            None => String::from_utf8_lossy(&record).into_owned(),
        };
        Err(CallError { message, provenance: record })
    }

    /// Writes an error line into the host's log.
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message)
    }

    /// Writes a warning into the host's log.
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message)
    }

    /// Writes an information line into the host's log.
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message)
    }
}

/// The host-owned buffer a call writes its answer into.
///
/// It implements [`std::io::Write`] and [`std::fmt::Write`], so `write!(output, ...)` works.
pub struct Output<'a> {
    sink: &'a WriteSink,
}

impl fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output").finish_non_exhaustive()
    }
}

/// The host could not take more output (it ran out of memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputFull;

impl fmt::Display for OutputFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the host could not take more output")
    }
}

impl std::error::Error for OutputFull {}

impl<'a> Output<'a> {
    /// Wraps a host sink.
    ///
    /// # Safety
    /// `sink.write` must be safe to call with `sink.ctx` and any valid slice for `'a`.
    pub(crate) unsafe fn from_sink(sink: &'a WriteSink) -> Self {
        Output { sink }
    }

    /// Appends `bytes` to the answer.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), OutputFull> {
        write_to_sink(self.sink, bytes)
    }
}

impl std::io::Write for Output<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Output::write(self, buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::OutOfMemory, e))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl fmt::Write for Output<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        Output::write(self, s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// Appends `bytes` through `sink`.
///
/// `sink` must come from the host (the `WriteFn` contract); every caller in this crate gets it
/// from an entry point's arguments.
pub(crate) fn write_to_sink(sink: &WriteSink, bytes: &[u8]) -> Result<(), OutputFull> {
    if bytes.is_empty() {
        return Ok(());
    }
    let write = sink.write;
    // SAFETY: the host's `write` accepts its own `ctx` with any pointer and length describing
    // initialised memory valid for the call, which `bytes` is.
    let status = unsafe { write(sink.ctx, bytes.as_ptr(), bytes.len()) };
    if status == 0 { Ok(()) } else { Err(OutputFull) }
}
