//! The safe side of the contract: the [`Service`] trait a plugin implements and the types its
//! methods see ([`Host`], [`Output`], [`Error`]).

use std::fmt;

use std::mem::offset_of;

use crate::abi::{
    HostApi, LogFn, RawBytes, RawStr, STATUS_DEPENDENCY, STATUS_OK, WriteSink, log_level,
};
use crate::provenance::{FailureKind, Provenance};

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
    ///
    /// A service exported with a typed interface (`export_service!(..., interface: Trait)`)
    /// leaves it out: its calls, by name or by id, go through the interface's generated glue to
    /// its implementation of the trait. The default refuses every method.
    fn call(&self, method: &str, input: &[u8], output: &mut Output<'_>) -> Result<(), Error> {
        let _ = (input, output);
        Err(Error::unknown_method(method))
    }

    /// Reports whether the instance can serve. The host runs it before it publishes a new
    /// version and refuses the version when it fails.
    fn health(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// A service whose state survives a swap, a rollback and (with a state directory) a restart of
/// the host: declare it with `stateful` in [`crate::export_service!`].
///
/// On a swap the host holds new calls back (they wait; they do not fail), waits until no call
/// runs in the old instance, asks it for its state ([`Stateful::export_state`]), creates the new
/// build's instance from that state ([`Stateful::from_state`]) and checks its health before it
/// lets the calls through to it. If any step fails, the old instance goes on serving with its
/// state. A rollback hands the state back the same way, so the previous build must read the
/// formats of the builds that follow it, or refuse them.
///
/// The bytes are the service's own: choose an encoding, and give each layout a number
/// ([`Stateful::STATE_FORMAT`]) so that a later build can read an earlier one.
///
/// ```
/// use graft_plugin_api::{Error, Host, Output, Service, Stateful};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// pub struct Counter(AtomicU64);
///
/// impl Service for Counter {
///     fn create(_host: Host) -> Result<Self, Error> {
///         Ok(Counter(AtomicU64::new(0)))
///     }
///     fn call(&self, method: &str, _input: &[u8], output: &mut Output<'_>) -> Result<(), Error> {
///         match method {
///             "increment" => write!(output, "{}", self.0.fetch_add(1, Ordering::SeqCst) + 1)?,
///             _ => return Err(Error::unknown_method(method)),
///         }
///         Ok(())
///     }
/// }
///
/// impl Stateful for Counter {
///     const STATE_FORMAT: u32 = 1;
///     fn export_state(&self, state: &mut Output<'_>) -> Result<(), Error> {
///         state.write(&self.0.load(Ordering::SeqCst).to_le_bytes())?;
///         Ok(())
///     }
///     fn from_state(_host: Host, format: u32, state: &[u8]) -> Result<Self, Error> {
///         match format {
///             1 => {
///                 let bytes = state.try_into().map_err(Error::invalid_input)?;
///                 Ok(Counter(AtomicU64::new(u64::from_le_bytes(bytes))))
///             }
///             other => Err(Error::unknown_state_format(other, Self::STATE_FORMAT)),
///         }
///     }
/// }
/// ```
pub trait Stateful: Service {
    /// The format version of the state this build exports. Change it whenever the layout of
    /// the exported bytes changes.
    const STATE_FORMAT: u32;

    /// Writes the instance's state. The host calls it only while no call and no health check
    /// runs in the instance. An `Err` (or a panic) refuses the swap or rollback that asked for
    /// it; the instance goes on serving.
    fn export_state(&self, state: &mut Output<'_>) -> Result<(), Error>;

    /// Creates an instance from `state`, exported in format `format` by this build or by
    /// another build of the service (older or newer). Migrate an older format here; refuse one
    /// this build cannot read with [`Error::unknown_state_format`], which the host reports as
    /// such. Any other `Err` (or a panic) refuses the swap as `create` would.
    fn from_state(host: Host, format: u32, state: &[u8]) -> Result<Self, Error>;
}

/// Whether an [`Error`] is the service's failure or its deliberate answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The service failed: an internal error, a broken dependency, a bug. The host counts it
    /// against the build (a swapped-in build that fails too often is rolled back).
    Failure,
    /// The service said "no" on purpose: the call asked for something that does not exist, gave
    /// input the service does not accept, or named a method it does not have. The caller's
    /// problem: the host reports it as a refusal and never counts it against the build.
    Refusal,
}

/// An error a service returns to its caller: a message the host reports along with the
/// service's name and version, and its [`ErrorKind`].
///
/// Say which kind it is, because the host acts on it: [`Error::new`] is a failure of the
/// service; [`Error::not_found`], [`Error::invalid_input`], [`Error::unknown_method`] and
/// [`Error::refused`] are answers the service gives on purpose, which never make the host roll
/// a build back.
///
/// An error made from a [`CallError`] (as `?` does) also carries where that failure came from,
/// so the host can tell its caller which service failed and through which chain of calls; a
/// refusal passed on that way stays a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    provenance: Option<Vec<u8>>,
}

impl Error {
    /// A failure of the service with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Error { kind: ErrorKind::Failure, message: message.to_string(), provenance: None }
    }

    /// A refusal: the service answers "no" on purpose, with this message.
    pub fn refused(message: impl fmt::Display) -> Self {
        Error { kind: ErrorKind::Refusal, message: message.to_string(), provenance: None }
    }

    /// A refusal: what the call asked for does not exist. The message is `not found: {what}`.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Error::refused(format_args!("not found: {what}"))
    }

    /// A refusal: the service does not accept the call's input. The message is
    /// `invalid input: {why}`.
    pub fn invalid_input(why: impl fmt::Display) -> Self {
        Error::refused(format_args!("invalid input: {why}"))
    }

    /// A refusal, from [`Stateful::from_state`]: this build does not read state format
    /// `format` (its own is `own`). The host reports it as a refused state format, naming both.
    pub fn unknown_state_format(format: u32, own: u32) -> Self {
        Error::refused(format_args!(
            "state format {format} is not one this build reads (its own is {own})"
        ))
    }

    /// A refusal: the service has no method of that name.
    pub fn unknown_method(method: &str) -> Self {
        Error::refused(format_args!("unknown method `{method}`"))
    }

    /// Whether it is a failure or a refusal.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the service said "no" on purpose ([`ErrorKind::Refusal`]).
    pub fn is_refusal(&self) -> bool {
        self.kind == ErrorKind::Refusal
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
        Error { kind: ErrorKind::Failure, message, provenance: None }
    }
}

impl From<CallError> for Error {
    fn from(error: CallError) -> Self {
        let kind = error.kind();
        Error { kind, message: error.message, provenance: Some(error.provenance) }
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

    /// [`ErrorKind::Refusal`] if the service at the end of the chain said "no" on purpose,
    /// otherwise (a failure, a panic, a service that was not running) [`ErrorKind::Failure`].
    pub fn kind(&self) -> ErrorKind {
        match self.provenance() {
            Some(p) if p.failure.kind == FailureKind::Refused => ErrorKind::Refusal,
            _ => ErrorKind::Failure,
        }
    }

    /// Whether the service at the end of the chain said "no" on purpose.
    pub fn is_refusal(&self) -> bool {
        self.kind() == ErrorKind::Refusal
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

/// Reads field `$field` of a [`Host`]'s table through [`Host::field`]: `None` when the table is
/// too short to hold it (an older host) or the host is detached.
macro_rules! host_field {
    ($host:expr, $field:ident) => {
        $host.field(offset_of!(HostApi, $field), |api| {
            // SAFETY: `Host::field` calls this only with its non-null table pointer, once it has
            // checked that the field lies within the table; `&raw const` forms a pointer to the
            // field without reading it or asserting anything about the rest of the struct.
            unsafe { &raw const (*api).$field }
        })
    };
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
    /// `api` must be null or point at a `HostApi` table of at least `size_of::<usize>()` bytes
    /// whose first `api.size` bytes stay valid and unchanged for as long as this `Host` or any
    /// copy of it is used (the `HostApi` contract). The table may be shorter than this crate's
    /// `HostApi`: every field is checked against `size` before it is read.
    pub(crate) unsafe fn from_raw(api: *const HostApi) -> Self {
        Host { api }
    }

    /// A host that drops every log line, for unit tests of a service outside any host.
    pub fn detached() -> Self {
        Host { api: std::ptr::null() }
    }

    /// Reads the field of the host table at `offset`, if the table's `size` covers all of it.
    ///
    /// `project` names the field (`|api| &raw const (*api).field`) so that its type `T` is the
    /// field's own; it is only called once the field is known to lie within the table, so no
    /// pointer past an older host's shorter table is ever formed. Use it through
    /// [`host_field!`].
    fn field<T: Copy>(&self, offset: usize, project: fn(*const HostApi) -> *const T) -> Option<T> {
        if self.api.is_null() {
            return None;
        }
        // SAFETY: a non-null table holds at least its `size` field, the first one (`from_raw`'s
        // contract); the projection reads that one field, not the whole struct.
        let size = unsafe { (&raw const (*self.api).size).read() };
        let end = offset.checked_add(std::mem::size_of::<T>())?;
        if end > size {
            return None;
        }
        let field = project(self.api);
        debug_assert_eq!(field as usize - self.api as usize, offset);
        // `project` gives the field at `offset`, of type `T`: aligned, and what the host wrote.
        // SAFETY: the field lies within the table's first `size` bytes (checked above), valid
        // and unchanged while `self` is used (`from_raw`'s contract).
        Some(unsafe { field.read() })
    }

    /// The name this instance serves under, as the host knows it (empty for a detached host).
    ///
    /// It is the descriptor's name unless the host loaded this build under another name.
    pub fn service(&self) -> &'static str {
        host_field!(self, service).map_or("", |name| {
            // SAFETY: the host's strings live as long as the table, for the rest of the process
            // (the `HostApi` contract).
            let bytes = unsafe { name.as_bytes() };
            std::str::from_utf8(bytes).unwrap_or("")
        })
    }

    /// The highest status the host understands: [`crate::abi::STATUS_DEPENDENCY`] for a host
    /// whose table predates [`HostApi::max_status`], and for a detached host.
    pub(crate) fn max_status(&self) -> i32 {
        match host_field!(self, max_status) {
            // 0 is "not provided", like every appended field's all-zero value.
            Some(status) if status > 0 => status,
            _ => STATUS_DEPENDENCY,
        }
    }

    /// Writes `message` at `level` into the host's log.
    pub fn log(&self, level: Level, message: &str) {
        let (Some(ctx), Some(log)) = (host_field!(self, ctx), host_field!(self, log)) else {
            return;
        };
        let level = match level {
            Level::Error => log_level::ERROR,
            Level::Warn => log_level::WARN,
            Level::Info => log_level::INFO,
            Level::Debug => log_level::DEBUG,
            Level::Trace => log_level::TRACE,
        };
        let log: LogFn = log;
        // SAFETY: the host's `log` takes its own `ctx` and a pointer with a length that is valid
        // for the duration of the call, which `message` is.
        unsafe { log(ctx, level, message.as_ptr(), message.len()) }
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
        let (Some(ctx), Some(call_service)) =
            (host_field!(self, ctx), host_field!(self, call_service))
        else {
            return Err(unavailable("the host does not offer calls between services"));
        };
        let mut record = Vec::new();
        let output_sink = WriteSink::for_vec(output);
        let error_sink = WriteSink::for_vec(&mut record);
        // SAFETY: the host's `call_service` takes its own `ctx`, string and byte views valid for
        // the call, and two sinks that stay valid (their vectors are borrowed) until it returns.
        let status = unsafe {
            call_service(
                ctx,
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

    /// Writes a debugging line into the host's log.
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message)
    }

    /// Writes a tracing line into the host's log.
    pub fn trace(&self, message: &str) {
        self.log(Level::Trace, message)
    }
}

/// The host-owned buffer a call writes its answer into.
///
/// `write!(output, ...)` works whether [`std::io::Write`], [`std::fmt::Write`], both or neither
/// are in scope: the inherent [`Output::write_fmt`] is found before either trait's method, so
/// importing both is not ambiguous, and its [`OutputFull`] converts into [`Error`] with `?`.
/// Both traits are implemented too, for code that takes a generic writer.
///
/// ```
/// use std::fmt::Write as _;
/// use std::io::Write as _;
///
/// use graft_plugin_api::{Error, Output};
///
/// fn answer(output: &mut Output<'_>, name: &str) -> Result<(), Error> {
///     write!(output, "hello, {name}")?;
///     writeln!(output, "!")?;
///     Ok(())
/// }
/// # let mut buffer = Vec::new();
/// # let sink = graft_plugin_api::abi::WriteSink::for_vec(&mut buffer);
/// # // SAFETY: the sink appends to `buffer`, which nothing else uses until it is read below.
/// # let mut output = unsafe { Output::from_sink(&sink) };
/// # answer(&mut output, "ann").unwrap();
/// # assert_eq!(buffer, b"hello, ann!\n");
/// ```
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
    /// Wraps a sink: the host's, or one of [`WriteSink::for_vec`] in a plugin's own unit tests
    /// of [`Service::call`].
    ///
    /// # Safety
    /// `sink.write` must be safe to call with `sink.ctx` and any valid slice for `'a` (for a
    /// [`WriteSink::for_vec`] sink: its vector is neither moved nor used otherwise during `'a`).
    pub unsafe fn from_sink(sink: &'a WriteSink) -> Self {
        Output { sink }
    }

    /// Appends `bytes` to the answer.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), OutputFull> {
        write_to_sink(self.sink, bytes)
    }

    /// Appends formatted text to the answer: what `write!(output, ...)` calls.
    ///
    /// A `Display` implementation that fails (which `std` documents as a bug in it) is reported
    /// as [`OutputFull`] too, since the answer is incomplete either way.
    pub fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> Result<(), OutputFull> {
        if let Some(text) = args.as_str() {
            return self.write(text.as_bytes());
        }
        fmt::Write::write_fmt(self, args).map_err(|_| OutputFull)
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

#[cfg(test)]
mod tests {
    use std::ffi::c_void;
    use std::sync::Mutex;

    use super::*;
    use crate::abi::{CallServiceFn, STATUS_REFUSED};

    /// The lines the test host's `log` received, with the `ctx` it was given.
    static LOGGED: Mutex<Vec<(usize, u32, String)>> = Mutex::new(Vec::new());

    unsafe extern "C" fn test_log(ctx: *const c_void, level: u32, message: *const u8, len: usize) {
        // SAFETY: `Host::log` passes a pointer and length of a live `&str`.
        let bytes = unsafe { std::slice::from_raw_parts(message, len) };
        let line = String::from_utf8_lossy(bytes).into_owned();
        LOGGED.lock().unwrap().push((ctx as usize, level, line));
    }

    /// Answers every call with `pong`.
    unsafe extern "C" fn test_call(
        _ctx: *const c_void,
        _service: RawStr,
        _method: RawStr,
        _input: RawBytes,
        output: *const WriteSink,
        _error: *const WriteSink,
    ) -> i32 {
        // SAFETY: `Host::call` passes a sink valid for the call.
        let _ = write_to_sink(unsafe { &*output }, b"pong");
        STATUS_OK
    }

    /// A complete table of this crate's layout that claims to be `size` bytes long, as an older
    /// host's shorter table would (the bytes past `size` exist here, but must not be read).
    fn table(ctx: usize, size: usize) -> Box<HostApi> {
        Box::new(HostApi {
            size,
            ctx: ctx as *const c_void,
            service: RawStr::new("svc"),
            version: RawStr::new("1.0.0"),
            log: test_log,
            call_service: test_call as CallServiceFn,
            max_status: STATUS_REFUSED,
        })
    }

    fn logged_by(ctx: usize) -> Vec<String> {
        LOGGED.lock().unwrap().iter().filter(|l| l.0 == ctx).map(|l| l.2.clone()).collect()
    }

    #[test]
    fn every_field_of_a_full_table_is_used() {
        let api = table(1, std::mem::size_of::<HostApi>());
        // SAFETY: the table is valid and unchanged for as long as `host` is used.
        let host = unsafe { Host::from_raw(&*api) };
        assert_eq!(host.service(), "svc");
        assert_eq!(host.max_status(), STATUS_REFUSED);
        host.debug("a debug line");
        host.trace("a trace line");
        assert_eq!(logged_by(1), ["a debug line", "a trace line"]);
        let level = LOGGED.lock().unwrap().iter().find(|l| l.0 == 1).map(|l| l.1);
        assert_eq!(level, Some(log_level::DEBUG));
        let mut answer = Vec::new();
        host.call("other", "ping", b"", &mut answer).unwrap();
        assert_eq!(answer, b"pong");
    }

    /// Regression: the plugin side checked `size >= size_of::<HostApi>()` for every field, so a
    /// table one field shorter (an older host) lost logging and calls along with that field.
    #[test]
    fn a_shorter_table_degrades_field_by_field() {
        // An ABI 2.0 host: everything but `max_status`.
        let api = table(2, offset_of!(HostApi, max_status));
        // SAFETY: as above.
        let host = unsafe { Host::from_raw(&*api) };
        assert_eq!(host.max_status(), STATUS_DEPENDENCY, "an absent field reads as not provided");
        host.info("still logs");
        assert_eq!(logged_by(2), ["still logs"]);
        let mut answer = Vec::new();
        host.call("other", "ping", b"", &mut answer).unwrap();
        assert_eq!(answer, b"pong");

        // A table that ends before `call_service`: logging works, calls say what is missing.
        let api = table(3, offset_of!(HostApi, call_service));
        // SAFETY: as above.
        let host = unsafe { Host::from_raw(&*api) };
        host.warn("logs without calls");
        assert_eq!(logged_by(3), ["logs without calls"]);
        let err = host.call("other", "ping", b"", &mut answer).unwrap_err();
        assert!(err.message().contains("does not offer calls"), "{err}");

        // A table that ends inside `log`: nothing but what lies before it.
        let api = table(4, offset_of!(HostApi, log) + 1);
        // SAFETY: as above.
        let host = unsafe { Host::from_raw(&*api) };
        host.error("dropped");
        assert!(logged_by(4).is_empty());
        assert_eq!(host.service(), "svc");

        // A table of nothing but its size.
        let api = table(5, std::mem::size_of::<usize>());
        // SAFETY: as above.
        let host = unsafe { Host::from_raw(&*api) };
        assert_eq!(host.service(), "");
        host.error("dropped");
        assert!(logged_by(5).is_empty());
    }

    #[test]
    fn a_zero_max_status_means_not_provided() {
        let mut api = table(6, std::mem::size_of::<HostApi>());
        api.max_status = 0;
        // SAFETY: as above.
        let host = unsafe { Host::from_raw(&*api) };
        assert_eq!(host.max_status(), STATUS_DEPENDENCY);
    }

    /// Regression: the docs promised `write!(output, ...)`, but with `std::io::Write` and
    /// `std::fmt::Write` both in scope the call was ambiguous and did not compile.
    #[test]
    fn write_works_with_both_traits_in_scope() {
        #[allow(unused_imports)]
        use std::fmt::Write as _;
        #[allow(unused_imports)]
        use std::io::Write as _;

        fn answer(output: &mut Output<'_>) -> Result<(), Error> {
            let two = "two";
            write!(output, "{}-{two}", 1)?;
            write!(output, " plain")?;
            writeln!(output)?;
            Ok(())
        }
        let mut buffer = Vec::new();
        let sink = WriteSink::for_vec(&mut buffer);
        // SAFETY: `buffer` is used only through the sink until `output` is gone.
        let mut output = unsafe { Output::from_sink(&sink) };
        answer(&mut output).unwrap();
        // The traits stay usable by name, for generic writers.
        std::io::Write::write_all(&mut output, b"io ").unwrap();
        std::fmt::Write::write_str(&mut output, "fmt").unwrap();
        assert_eq!(buffer, b"1-two plain\nio fmt");
    }

    #[test]
    fn refusals_and_failures_are_told_apart() {
        assert_eq!(Error::new("disk on fire").kind(), ErrorKind::Failure);
        assert_eq!(Error::from("x").kind(), ErrorKind::Failure);
        for (e, message) in [
            (Error::not_found("key `k`"), "not found: key `k`"),
            (Error::invalid_input("not UTF-8"), "invalid input: not UTF-8"),
            (Error::unknown_method("frob"), "unknown method `frob`"),
            (Error::refused("no"), "no"),
        ] {
            assert!(e.is_refusal(), "{e}");
            assert_eq!(e.message(), message);
        }
    }

    #[test]
    fn a_refusal_passed_on_stays_a_refusal() {
        use crate::provenance::{Failure, FailureKind};
        let record = |kind| Provenance {
            chain: Vec::new(),
            failure: Failure {
                kind,
                service: "store".into(),
                version: "1.0.0".into(),
                method: "get".into(),
                message: "not found: k".into(),
            },
        };
        let refused =
            CallError { message: "m".into(), provenance: record(FailureKind::Refused).encode() };
        assert!(refused.is_refusal());
        assert!(Error::from(refused).is_refusal());
        let failed =
            CallError { message: "m".into(), provenance: record(FailureKind::Error).encode() };
        assert_eq!(Error::from(failed).kind(), ErrorKind::Failure);
        let unreachable = CallError { message: "m".into(), provenance: Vec::new() };
        assert_eq!(unreachable.kind(), ErrorKind::Failure);
    }
}
