//! The runtime's one error type: every failure names what failed, where, and which version.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use semver::{Version, VersionReq};

use crate::{GenerationId, ServiceState};

/// Everything that can go wrong in the runtime.
///
/// Each variant carries the context a caller needs to act without guessing: the file, the
/// service and its version, the expected and found values. Plugin failures name the plugin's
/// service and version.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation failed.
    Io {
        /// What the runtime was doing, e.g. `"staging"`.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The path is not a regular file.
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What was found there instead, e.g. `"a named pipe (FIFO)"`.
        kind: &'static str,
    },
    /// The file is larger than the runtime's maximum plugin size
    /// ([`RuntimeBuilder::max_plugin_size`](crate::RuntimeBuilder::max_plugin_size)); nothing
    /// of it was copied.
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The file is still being written (another process has it open for writing, or it
    /// changed while it was copied): try again once the writer is done. The watcher waits for
    /// such a file instead of refusing it. Writers are seen through a read lease on Linux,
    /// which needs the runtime to own the file or hold `CAP_LEASE`; without one, only a file
    /// that changes during the copy is reported so (the deep ELF check still refuses a
    /// half-written library whose dynamic section is not there yet).
    Incomplete {
        /// The file.
        path: PathBuf,
        /// How that was found out.
        reason: String,
    },
    /// The file does not start with the ELF magic number.
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// The file is ELF but not a shared object this host can load.
    WrongElf {
        /// The file.
        path: PathBuf,
        /// What is wrong, e.g. `"built for machine 183, this host is 62"`.
        reason: String,
    },
    /// The file's dynamic linking structures (the dynamic segment, the dynamic symbol and
    /// string tables, the entry symbol) are missing, out of the file or malformed: `dlopen`
    /// would read garbage (a half-written or zero-filled library), so it is never called.
    MalformedElf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file ends before the headers it declares do: a truncated or half-written library.
    Truncated {
        /// The file.
        path: PathBuf,
        /// The size the headers need.
        needed: u64,
        /// The file's actual size.
        size: u64,
    },
    /// `dlopen` refused the file.
    Open {
        /// The file the caller gave (its private staged copy is what was opened).
        path: PathBuf,
        /// The loader's error.
        source: libloading::Error,
    },
    /// The library does not export a symbol the runtime needs.
    MissingSymbol {
        /// The file.
        path: PathBuf,
        /// The symbol's name.
        symbol: &'static str,
        /// The dynamic loader's error; `None` when the check before loading found the symbol
        /// missing from the dynamic symbol table (the library was then never loaded).
        source: Option<libloading::Error>,
    },
    /// The descriptor does not start with graft's magic number.
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number found.
        found: u64,
    },
    /// The plugin speaks another ABI version.
    AbiMismatch {
        /// The file.
        path: PathBuf,
        /// The ABI version of this host.
        expected: u32,
        /// The ABI version of the plugin.
        found: u32,
    },
    /// The descriptor is smaller than the fields its ABI version launched with, so it cannot be
    /// read (later fields may be absent; those it launched with may not).
    DescriptorTooSmall {
        /// The file.
        path: PathBuf,
        /// The size its header declares.
        size: u32,
        /// The smallest size this host accepts for its ABI version
        /// (`graft_plugin_api::abi::MIN_DESCRIPTOR_SIZE`).
        minimum: u32,
    },
    /// A field of the descriptor is missing or malformed.
    InvalidDescriptor {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Loading would bring the process too close to a per-process limit that plugin loads use
    /// up for good (see [`crate::LoadBudget`]).
    LoadBudgetExhausted {
        /// The file whose load was refused.
        path: PathBuf,
        /// What is running out, e.g. `"pthread keys"`.
        resource: &'static str,
        /// How many are left.
        remaining: usize,
        /// How many the runtime keeps free.
        reserve: usize,
    },
    /// The plugin was built with `panic = "abort"`: its first panic would abort the host.
    PanicAbortBuild {
        /// The file.
        path: PathBuf,
        /// The service it declares.
        service: String,
        /// Its version.
        version: Version,
    },
    /// No service of that name is loaded.
    UnknownService {
        /// The name asked for.
        service: String,
    },
    /// A service name (or a dependency's, or a requirement's) breaks the naming rule; names
    /// become file names in the state directory, so they are checked wherever they enter.
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A service of that name is loaded already; use a swap to replace it.
    AlreadyLoaded {
        /// The service.
        service: String,
        /// The version serving it.
        version: Version,
    },
    /// The file declares another service than the one being swapped.
    ServiceMismatch {
        /// The service being swapped.
        expected: String,
        /// The service the file declares.
        found: String,
        /// The file.
        path: PathBuf,
    },
    /// The file implements another interface than the service's.
    InterfaceMismatch {
        /// The service.
        service: String,
        /// The interface the service implements.
        expected: String,
        /// The interface the file implements.
        found: String,
    },
    /// A typed interface's description is not valid (its version is not semver).
    InvalidInterface {
        /// The interface.
        interface: String,
        /// What is wrong.
        reason: String,
    },
    /// A typed client (or a typed call) needs a build that describes its interface's methods,
    /// and this build is untyped (built without `#[interface]`, or before `graft-plugin-api`
    /// 0.5).
    UntypedBuild {
        /// The service.
        service: String,
        /// The build's version.
        version: Version,
        /// The interface the client calls.
        interface: String,
    },
    /// A build's method is missing or has another signature than a host's client or the build
    /// it replaces requires: refused, with the method, both signatures and the rule broken.
    IncompatibleMethod {
        /// The service.
        service: String,
        /// The version of the build refused (or whose check failed).
        version: Box<Version>,
        /// The method.
        method: String,
        /// The signature required, if the method is required.
        expected: Option<Box<str>>,
        /// The signature found, if the build has the method.
        found: Option<Box<str>>,
        /// The rule it breaks.
        reason: String,
    },
    /// The new build's interface version does not satisfy the service's requirement.
    IncompatibleInterface {
        /// The service.
        service: String,
        /// The requirement (boxed to keep `Error` small).
        required: Box<VersionReq>,
        /// The interface version of the new build.
        found: Version,
        /// The new build's plugin version.
        plugin_version: Version,
    },
    /// The new build has the version that is serving already.
    SameVersion {
        /// The service.
        service: String,
        /// The version.
        version: Version,
    },
    /// The plugin's constructor failed or panicked.
    CreateFailed {
        /// The service.
        service: String,
        /// The version whose constructor failed.
        version: Version,
        /// The plugin's message.
        message: String,
        /// Whether the constructor panicked (as opposed to returning an error).
        panicked: bool,
    },
    /// A stateful service's serving build failed or panicked exporting its state, so the swap
    /// or rollback that asked for it was refused; that build goes on serving with its state.
    StateExportFailed {
        /// The service.
        service: String,
        /// The version that failed to export.
        version: Version,
        /// The plugin's message.
        message: String,
        /// Whether it panicked.
        panicked: bool,
    },
    /// A build failed or panicked creating an instance from a stateful service's state, so it
    /// was not published; the build serving goes on with its state.
    StateImportFailed {
        /// The service.
        service: String,
        /// The version that failed to import.
        version: Version,
        /// The format version of the state it was given.
        format: u32,
        /// The plugin's message.
        message: String,
        /// Whether it panicked.
        panicked: bool,
    },
    /// A build refused the state it was given: it does not read that state format (typically a
    /// newer one than its own, on a rollback), or found the state invalid. The build serving
    /// goes on with its state.
    StateRefused {
        /// The service.
        service: String,
        /// The version that refused.
        version: Version,
        /// The format version of the state it was given.
        format: u32,
        /// The format version of the state that build itself exports.
        own_format: u32,
        /// The plugin's message.
        message: String,
    },
    /// A swap would replace a stateful service's build with one that cannot take its state
    /// (a stateless build), losing it.
    WouldLoseState {
        /// The service.
        service: String,
        /// The stateful version serving.
        from: Version,
        /// The stateless version refused.
        to: Version,
    },
    /// A canary release of a stateful service: its state cannot be split between two builds
    /// serving at once. Swap it instead.
    StatefulCanary {
        /// The service.
        service: String,
        /// The stateful version (serving or offered).
        version: Version,
    },
    /// An operation that would change the build serving was asked while a canary release runs:
    /// promote or abort the canary first.
    CanaryInProgress {
        /// The service.
        service: String,
        /// The operation refused.
        operation: &'static str,
        /// The canary's version.
        canary: Version,
    },
    /// Promote or abort was asked of a service with no canary release running.
    NoCanary {
        /// The service.
        service: String,
    },
    /// A canary weight outside 0.0 to 1.0 (or NaN).
    InvalidWeight {
        /// The weight given.
        weight: f64,
    },
    /// A state operation was asked of a stateless service.
    Stateless {
        /// The service.
        service: String,
        /// The stateless version serving.
        version: Version,
    },
    /// A state file in the state directory is not a whole state file (truncated, altered, or
    /// not one at all). The service is not started from it; see
    /// [`RuntimeBuilder::start_empty_on_bad_state`](crate::RuntimeBuilder::start_empty_on_bad_state).
    StateFile {
        /// The service.
        service: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Calls were still running in a stateful service's instance when the time to hand its
    /// state over ran out (half the call deadline): the operation was refused, and that
    /// instance serves again with its state.
    QuiesceTimeout {
        /// The service.
        service: String,
        /// The version serving.
        version: Version,
        /// How long the operation waited.
        waited: Duration,
    },
    /// The health check of a new instance failed or panicked, so it was not published.
    HealthCheckFailed {
        /// The service.
        service: String,
        /// The version that failed it.
        version: Version,
        /// The plugin's message.
        message: String,
    },
    /// A call returned an error.
    CallFailed {
        /// The service.
        service: String,
        /// The version that answered.
        version: Version,
        /// The method called.
        method: String,
        /// The plugin's message.
        message: String,
    },
    /// The service refused the call on purpose: what it was asked for does not exist, the input
    /// is not acceptable, or the method is unknown. The caller's problem, not a failure of the
    /// service: probation and every count of failures ignore it.
    Refused {
        /// The service.
        service: String,
        /// The version that answered.
        version: Version,
        /// The method called.
        method: String,
        /// The plugin's message.
        message: String,
    },
    /// The plugin panicked during a call; the host caught it and keeps serving.
    PluginPanicked {
        /// The service.
        service: String,
        /// The version that panicked.
        version: Version,
        /// The method called.
        method: String,
        /// The panic's message.
        message: String,
    },
    /// An entry point returned a status the ABI does not define.
    InvalidStatus {
        /// The service.
        service: String,
        /// The version.
        version: Version,
        /// The entry point, e.g. `"call"`.
        entry: &'static str,
        /// The status.
        status: i32,
    },
    /// The host could not allocate room for a plugin's output.
    OutputTooLarge {
        /// The service.
        service: String,
        /// The version.
        version: Version,
        /// The method called.
        method: String,
    },
    /// A rollback was asked for, but no earlier generation is kept.
    NoRollbackTarget {
        /// The service.
        service: String,
    },
    /// Calls still ran in a generation when the deadline to wait for its drain passed. Nothing
    /// was forced: the generation stays loaded until its last call returns.
    DrainTimeout {
        /// The service.
        service: String,
        /// The version of the generation.
        version: Version,
        /// The generation.
        generation: GenerationId,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The generation's instance was not destroyed yet when the deadline to wait for its
    /// retirement passed.
    RetireTimeout {
        /// The service.
        service: String,
        /// The version of the generation.
        version: Version,
        /// The generation.
        generation: GenerationId,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The runtime's background thread could not be started.
    Thread {
        /// The underlying error.
        source: std::io::Error,
    },
    /// The service is stopped (or failed, or loaded but never started) and admits no calls.
    Stopped {
        /// The service.
        service: String,
        /// Its state.
        state: ServiceState,
    },
    /// The service was starting or paused, or not running at all for a call between services,
    /// and did not become ready within the deadline.
    NotReady {
        /// The service.
        service: String,
        /// Its state when the deadline passed (`None`: not loaded).
        state: Option<ServiceState>,
        /// How long the call waited.
        waited: Duration,
    },
    /// A chain of calls between services on one thread (a service calling itself, directly or
    /// in a cycle) went deeper than the runtime allows.
    CallDepthExceeded {
        /// The service the call that went too deep was for.
        service: String,
        /// The depth that call would have had.
        depth: u32,
        /// The limit ([`crate::MAX_CALL_DEPTH`]).
        limit: u32,
    },
    /// The operation is not possible in the service's current state.
    InvalidState {
        /// The service.
        service: String,
        /// What was asked, e.g. `"pause"`.
        operation: &'static str,
        /// The state the service is in.
        state: ServiceState,
    },
    /// A dependency of the service is not running.
    DependencyNotRunning {
        /// The service that needs it.
        service: String,
        /// The dependency.
        dependency: String,
        /// Its state (`None`: not loaded).
        state: Option<ServiceState>,
    },
    /// A dependency runs at an interface version that does not satisfy the requirement.
    DependencyMismatch {
        /// The service that needs it.
        service: String,
        /// The dependency.
        dependency: String,
        /// The requirement on its interface.
        required: Box<VersionReq>,
        /// The interface version it runs.
        found: Version,
    },
    /// The service cannot stop while services that depend on it run; stop with cascade to stop
    /// them too.
    DependentsRunning {
        /// The service.
        service: String,
        /// The running dependents.
        dependents: Vec<String>,
    },
    /// The service cannot be unloaded while loaded services depend on it.
    DependentsLoaded {
        /// The service.
        service: String,
        /// The loaded services that depend on it.
        dependents: Vec<String>,
    },
    /// The new build's interface version would break a running dependent's requirement.
    BreaksDependent {
        /// The service being swapped.
        service: String,
        /// The dependent whose requirement would break.
        dependent: String,
        /// Its requirement.
        required: Box<VersionReq>,
        /// The new build's interface version.
        found: Version,
    },
    /// Loading the service would close a dependency cycle.
    DependencyCycle {
        /// The services on the cycle, in order: each depends on the next, the last on the first.
        cycle: Vec<String>,
    },
    /// A call failed in another service, reached through a chain of calls.
    DependencyFailed {
        /// The calls through which the failure came, outermost first: the service the caller
        /// called, then each service that called the next. The failing service is not in it.
        chain: Vec<Hop>,
        /// The failure where it happened.
        cause: Box<Error>,
    },
    /// A failure that happened in another service down a chain of calls and reached here as a
    /// record: its kind and details are in the message.
    Remote {
        /// The service where it happened.
        service: String,
        /// The method that was called there.
        method: String,
        /// What happened.
        message: String,
    },
    /// A batch operation stopped after a failure; the report says what happened to each service.
    Batch(Box<crate::batch::BatchReport>),
    /// A manifest in the state directory could not be read or written.
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The operation needs a state directory ([`crate::RuntimeBuilder::state_dir`]).
    NoStateDir,
    /// The directory could not be watched.
    Watch {
        /// The directory.
        path: PathBuf,
        /// The watcher's error.
        source: notify::Error,
    },
}

/// One call in a chain of calls between services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The service called.
    pub service: String,
    /// Its version.
    pub version: String,
    /// The method called.
    pub method: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { action, path, source } => {
                write!(f, "{action} {}: {source}", path.display())
            }
            Error::NotAFile { path, kind } => {
                write!(f, "{} is not a regular file: it is {kind}", path.display())
            }
            Error::TooLarge { path, size, limit } => write!(
                f,
                "{} is {size} bytes, more than the maximum plugin size of {limit} bytes",
                path.display()
            ),
            Error::Incomplete { path, reason } => {
                write!(f, "{} is still being written: {reason}", path.display())
            }
            Error::MalformedElf { path, reason } => {
                write!(f, "{} is not a loadable library: {reason}", path.display())
            }
            Error::NotElf { path } => {
                write!(f, "{} is not an ELF file (wrong magic number)", path.display())
            }
            Error::WrongElf { path, reason } => {
                write!(f, "{} is not a shared library for this host: {reason}", path.display())
            }
            Error::Truncated { path, needed, size } => write!(
                f,
                "{} is truncated: its headers need {needed} bytes but the file has {size}",
                path.display()
            ),
            Error::Open { path, source } => {
                write!(f, "loading {} failed: {source}", path.display())
            }
            Error::MissingSymbol { path, symbol, .. } => {
                write!(f, "{} does not export the symbol `{symbol}`", path.display())
            }
            Error::BadMagic { path, found } => write!(
                f,
                "{} is not a graft plugin: descriptor magic is {found:#018x}, expected {:#018x}",
                path.display(),
                graft_plugin_api::abi::MAGIC
            ),
            Error::AbiMismatch { path, expected, found } => write!(
                f,
                "{} speaks graft ABI version {found}, this host speaks version {expected}",
                path.display()
            ),
            Error::DescriptorTooSmall { path, size, minimum } => write!(
                f,
                "{} has a descriptor of {size} bytes, graft ABI version {} needs at least {minimum}",
                path.display(),
                graft_plugin_api::abi::ABI_VERSION
            ),
            Error::InvalidDescriptor { path, field, reason } => {
                write!(f, "{} has an invalid descriptor field `{field}`: {reason}", path.display())
            }
            Error::PanicAbortBuild { path, service, version } => write!(
                f,
                "{service} {version} ({}) was built with panic = \"abort\" and would abort the host on its first panic",
                path.display()
            ),
            Error::UnknownService { service } => {
                write!(f, "no service named `{service}` is loaded")
            }
            Error::InvalidName { name, reason } => {
                write!(f, "invalid service name {name:?}: {reason}")
            }
            Error::AlreadyLoaded { service, version } => {
                write!(f, "service `{service}` is already loaded at version {version}")
            }
            Error::ServiceMismatch { expected, found, path } => {
                write!(f, "{} provides service `{found}`, not `{expected}`", path.display())
            }
            Error::InvalidInterface { interface, reason } => {
                write!(f, "interface `{interface}` is not valid: {reason}")
            }
            Error::UntypedBuild { service, version, interface } => write!(
                f,
                "service `{service}` {version} does not describe the methods of a typed interface, and a typed client of `{interface}` needs it (rebuild it with #[interface] and graft-plugin-api 0.5 or later)"
            ),
            Error::IncompatibleMethod { service, version, method, expected, found, reason } => {
                let show = |s: &Option<Box<str>>| s.as_deref().unwrap_or("none").to_owned();
                write!(
                    f,
                    "service `{service}` {version}: method `{method}` is incompatible (expected {}, found {}): {reason}",
                    show(expected),
                    show(found)
                )
            }
            Error::InterfaceMismatch { service, expected, found } => write!(
                f,
                "service `{service}` implements interface `{expected}`, the new build implements `{found}`"
            ),
            Error::IncompatibleInterface { service, required, found, plugin_version } => write!(
                f,
                "service `{service}` requires interface version {required}, build {plugin_version} implements {found}; use `replace` to ship a breaking change"
            ),
            Error::SameVersion { service, version } => {
                write!(f, "service `{service}` is already serving version {version}")
            }
            Error::CreateFailed { service, version, message, panicked: true } => {
                write!(f, "{service} {version} panicked while starting: {message}")
            }
            Error::CreateFailed { service, version, message, panicked: false } => {
                write!(f, "{service} {version} failed to start: {message}")
            }
            Error::StateExportFailed { service, version, message, panicked } => {
                let what = if *panicked { "panicked" } else { "failed" };
                write!(f, "{service} {version} {what} exporting its state: {message}")
            }
            Error::StateImportFailed { service, version, format, message, panicked } => {
                let what = if *panicked { "panicked" } else { "failed" };
                write!(
                    f,
                    "{service} {version} {what} importing state of format {format}: {message}"
                )
            }
            Error::StateRefused { service, version, format, own_format, message } => write!(
                f,
                "{service} {version} (state format {own_format}) refused state of format {format}: {message}"
            ),
            Error::WouldLoseState { service, from, to } => write!(
                f,
                "{service} {from} is stateful and {to} is not: swapping would lose its state"
            ),
            Error::StatefulCanary { service, version } => write!(
                f,
                "{service} {version} is stateful: a canary would split its state between two builds; swap it instead"
            ),
            Error::CanaryInProgress { service, operation, canary } => write!(
                f,
                "cannot {operation} {service} while its canary {canary} runs: promote or abort it first"
            ),
            Error::NoCanary { service } => write!(f, "{service} has no canary release running"),
            Error::InvalidWeight { weight } => {
                write!(f, "a canary weight must lie between 0.0 and 1.0, not {weight}")
            }
            Error::Stateless { service, version } => {
                write!(f, "{service} {version} is stateless: it has no state to save")
            }
            Error::StateFile { service, path, reason } => write!(
                f,
                "the saved state of {service} ({}) cannot be used: {reason}",
                path.display()
            ),
            Error::QuiesceTimeout { service, version, waited } => write!(
                f,
                "{service} {version} still had calls running after {waited:?}, so its state was not handed over"
            ),
            Error::HealthCheckFailed { service, version, message } => {
                write!(f, "{service} {version} failed its health check: {message}")
            }
            Error::CallFailed { service, version, method, message } => {
                write!(f, "{service} {version} failed in `{method}`: {message}")
            }
            Error::Refused { service, version, method, message } => {
                write!(f, "{service} {version} refused `{method}`: {message}")
            }
            Error::PluginPanicked { service, version, method, message } => {
                write!(f, "{service} {version} panicked in `{method}`: {message}")
            }
            Error::InvalidStatus { service, version, entry, status } => {
                write!(f, "{service} {version} returned undefined status {status} from `{entry}`")
            }
            Error::OutputTooLarge { service, version, method } => {
                write!(f, "{service} {version}: no memory for the output of `{method}`")
            }
            Error::NoRollbackTarget { service } => {
                write!(f, "service `{service}` has no earlier generation to roll back to")
            }
            Error::DrainTimeout { service, version, generation, waited } => write!(
                f,
                "{service} {version} (generation {generation}) still has calls running after {waited:?}"
            ),
            Error::RetireTimeout { service, version, generation, waited } => write!(
                f,
                "{service} {version} (generation {generation}) is not retired after {waited:?}"
            ),
            Error::LoadBudgetExhausted { path, resource, remaining, reserve } => write!(
                f,
                "refusing to load {}: only {remaining} {resource} are left, fewer than the \
                 {reserve} the runtime keeps in reserve; retired plugin libraries stay mapped and \
                 keep what they took, so restart the host process to reclaim them",
                path.display()
            ),
            Error::Thread { source } => write!(f, "starting the runtime's thread failed: {source}"),
            Error::Stopped { service, state } => {
                write!(f, "service `{service}` is {state} and admits no calls")
            }
            Error::NotReady { service, state: Some(state), waited } => {
                write!(f, "service `{service}` was not ready within {waited:?} (it is {state})")
            }
            Error::NotReady { service, state: None, waited } => {
                write!(f, "service `{service}` was not ready within {waited:?} (it is not loaded)")
            }
            Error::CallDepthExceeded { service, depth, limit } => write!(
                f,
                "a call to `{service}` would be {depth} calls between services deep, more than the limit of {limit} (a service calling itself?)"
            ),
            Error::InvalidState { service, operation, state } => {
                write!(f, "cannot {operation} service `{service}` while it is {state}")
            }
            Error::DependencyNotRunning { service, dependency, state: Some(state) } => write!(
                f,
                "service `{service}` depends on `{dependency}`, which is {state}, not running"
            ),
            Error::DependencyNotRunning { service, dependency, state: None } => {
                write!(f, "service `{service}` depends on `{dependency}`, which is not loaded")
            }
            Error::DependencyMismatch { service, dependency, required, found } => write!(
                f,
                "service `{service}` requires `{dependency}` at interface {required}, it runs {found}"
            ),
            Error::DependentsRunning { service, dependents } => write!(
                f,
                "service `{service}` cannot stop while its dependents run: {}",
                dependents.join(", ")
            ),
            Error::DependentsLoaded { service, dependents } => write!(
                f,
                "service `{service}` cannot be unloaded while services that depend on it are loaded: {}",
                dependents.join(", ")
            ),
            Error::BreaksDependent { service, dependent, required, found } => write!(
                f,
                "swapping `{service}` to interface {found} would break `{dependent}`, which requires {required}"
            ),
            Error::DependencyCycle { cycle } => {
                write!(
                    f,
                    "dependency cycle: {} -> {}",
                    cycle.join(" -> "),
                    cycle.first().map_or("", String::as_str)
                )
            }
            Error::DependencyFailed { chain, cause } => {
                for hop in chain {
                    write!(f, "{} {} `{}` -> ", hop.service, hop.version, hop.method)?;
                }
                write!(f, "{cause}")
            }
            Error::Remote { service, method, message } => {
                write!(f, "{service} failed in `{method}`: {message}")
            }
            Error::Batch(report) => write!(f, "{report}"),
            Error::Watch { path, source } => write!(f, "watching {}: {source}", path.display()),
            Error::NoStateDir => f.write_str("the runtime has no state directory"),
            Error::Manifest { path, reason } => {
                write!(f, "manifest {} is not valid: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Thread { source } => Some(source),
            Error::Open { source, .. } | Error::MissingSymbol { source: Some(source), .. } => {
                Some(source)
            }
            Error::DependencyFailed { cause, .. } => Some(cause.as_ref()),
            Error::Watch { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `Result` in the runtime's API carries an `Error`; keep it under clippy's
    /// `result_large_err` threshold (128 bytes) so that callers' lints stay quiet.
    #[test]
    fn error_stays_small() {
        assert!(std::mem::size_of::<Error>() < 128, "{}", std::mem::size_of::<Error>());
    }
}
