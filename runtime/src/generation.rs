//! Generations, leases and drains: what keeps plugin code loaded while it may still run.
//!
//! A [`Generation`] is one instance of one loaded plugin. It owns the instance and a reference
//! to the [`Plugin`] (the library) it was made from; dropping it destroys the instance and then
//! releases the library, which closes with its last generation (a restart makes a new
//! generation from the same library). Because every holder reaches a generation through an
//! `Arc`, it is dropped only when nobody can call into it any more.
//!
//! A [`Lease`] is one *publication* of a generation: the value a service's `ArcSwap` points at.
//! A swap or a rollback stores a new lease and drops the runtime's reference to the old one. A
//! call holds the `ArcSwap::load` guard of the lease it started with; after a swap arc-swap turns
//! each guard still in flight into a strong count on that lease, so the old lease is dropped
//! exactly when the last call that loaded it returns. Its `Drop` is therefore the drain signal:
//! no per-call counter, no polling. A generation is *drained* when it has no live lease.
//!
//! A lease also carries the service's state: only a *serving* lease has a call target; a paused
//! or starting one has a gate that waiting calls block on; a stopped one has neither. So the
//! call path reads the state from the lease it loaded anyway, and pays nothing for it.

use std::ffi::c_void;
use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use graft_plugin_api::abi::{
    CallFn, CallMethodFn, HostApi, RawBytes, RawStr, STATUS_DEPENDENCY, STATUS_ERROR, STATUS_OK,
    STATUS_PANIC, STATUS_REFUSED, WriteSink,
};
use graft_plugin_api::typed::Method;
use parking_lot::{Condvar, Mutex};
use semver::Version;

use crate::events::{EventBus, EventKind};
use crate::host::provenance;
use crate::loader::{Plugin, PluginInfo};
use crate::metrics::CallCounters;
use crate::probation::Probation;
use crate::reaper::ReaperEvent;
use crate::{Error, ServiceState};

/// Identifies one generation within a runtime; increases with every instance the runtime makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GenerationId(pub(crate) u64);

impl GenerationId {
    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One instance of one loaded plugin.
///
/// Invariant: `instance` was made by `plugin`'s `create`, and is destroyed (in `Drop`) before
/// `plugin` is dropped. Nothing else destroys it.
pub(crate) struct Generation {
    id: GenerationId,
    instance: *mut c_void,
    /// The name the instance serves under (the descriptor's, or the alias it was loaded as).
    service: Arc<str>,
    hooks: Hooks,
    /// Taken out only in `Drop`, which hands it to the retire thread with the instance.
    plugin: ManuallyDrop<Arc<Plugin>>,
    life: Arc<Life>,
    /// Its calls, counted.
    counters: Arc<CallCounters>,
}

// SAFETY: `instance` is an instance of a `graft_plugin_api::Service`, which is `Send + Sync`,
// and it is only reached through the plugin's entry points, which the ABI requires to be callable
// from any thread at once. The other fields (the library, copied strings, function pointers, a
// channel sender) are `Send + Sync` on their own.
unsafe impl Send for Generation {}
// SAFETY: as for `Send`.
unsafe impl Sync for Generation {}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .field("service", &self.service)
            .field("version", &self.plugin.info().plugin_version.to_string())
            .finish_non_exhaustive()
    }
}

/// Where a generation reports: the reaper that watches its drain and the runtime's event bus.
#[derive(Debug, Clone)]
pub(crate) struct Hooks {
    pub reaper: Sender<ReaperEvent>,
    pub events: Arc<EventBus>,
}

impl Generation {
    /// Creates an instance of `plugin`, serving as `service`, with the host table `host`: a new
    /// one, or one made from `state` (`(format, bytes)`, exported by another instance), which
    /// `plugin` must then be able to take (`PluginInfo::state_format` is `Some`).
    pub fn start(
        plugin: Arc<Plugin>,
        service: Arc<str>,
        id: GenerationId,
        host: &'static HostApi,
        hooks: Hooks,
        state: Option<(u32, &[u8])>,
    ) -> Result<Generation, Error> {
        let info = plugin.info();
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut message = Vec::new();
        let (status, entry) = {
            let sink = WriteSink::for_vec(&mut message);
            match (state, plugin.entry().state) {
                (None, _) => {
                    let create = plugin.entry().create;
                    // SAFETY: `create` comes from `plugin`, which is open; the host table is
                    // `'static`, so it outlives every copy the plugin keeps; the out pointer and
                    // the sink are valid for the call.
                    (unsafe { create(host, &mut instance, &sink) }, "create")
                }
                (Some((format, bytes)), Some(entry)) => {
                    let bytes = RawBytes::new(bytes);
                    // SAFETY: as for `create`; `bytes` describes memory valid for the call.
                    let status =
                        unsafe { (entry.import)(host, format, bytes, &mut instance, &sink) };
                    (status, "import_state")
                }
                (Some(_), None) => {
                    return Err(Error::WouldLoseState {
                        service: service.to_string(),
                        from: info.plugin_version.clone(),
                        to: info.plugin_version.clone(),
                    });
                }
            }
        };
        let message = String::from_utf8_lossy(&message).into_owned();
        let version = info.plugin_version.clone();
        let error = match (status, state) {
            (STATUS_OK, _) if !instance.is_null() => None,
            (STATUS_OK | STATUS_ERROR | STATUS_PANIC, None) => Some(Error::CreateFailed {
                service: service.to_string(),
                version,
                message: if status == STATUS_OK {
                    "create returned no instance".into()
                } else {
                    message
                },
                panicked: status == STATUS_PANIC,
            }),
            (STATUS_OK | STATUS_ERROR | STATUS_PANIC, Some((format, _))) => {
                Some(Error::StateImportFailed {
                    service: service.to_string(),
                    version,
                    format,
                    message: if status == STATUS_OK {
                        "import returned no instance".into()
                    } else {
                        message
                    },
                    panicked: status == STATUS_PANIC,
                })
            }
            (STATUS_REFUSED, Some((format, _))) => Some(Error::StateRefused {
                service: service.to_string(),
                version,
                format,
                own_format: info.state_format.unwrap_or(0),
                message,
            }),
            (status, _) => {
                Some(Error::InvalidStatus { service: service.to_string(), version, entry, status })
            }
        };
        if let Some(error) = error {
            return Err(error);
        }
        let life = Arc::new(Life::new(id, &service, &info.plugin_version, &info.staged));
        tracing::debug!(service = %service, version = %info.plugin_version, generation = %id, from_state = state.is_some(), "instance created");
        Ok(Generation {
            id,
            instance,
            service,
            hooks,
            plugin: ManuallyDrop::new(plugin),
            life,
            counters: CallCounters::new(),
        })
    }

    /// Exports the instance's state: its format version and bytes. The caller makes sure that
    /// no call and no health check runs in the instance (the `Stateful` contract); nothing
    /// unsafe happens if one does, but the state may miss its writes.
    pub fn export_state(&self) -> Result<(u32, Vec<u8>), Error> {
        let Some(entry) = self.plugin.entry().state else {
            return Err(Error::StateExportFailed {
                service: self.service.to_string(),
                version: self.version().clone(),
                message: "the build is not stateful".to_owned(),
                panicked: false,
            });
        };
        let (mut state, mut message) = (Vec::new(), Vec::new());
        let status = {
            let (state_sink, error_sink) =
                (WriteSink::for_vec(&mut state), WriteSink::for_vec(&mut message));
            // SAFETY: `export` comes from the open `plugin`, and `instance` is live (destroyed
            // only in `Drop`); both sinks are valid for the call and their vectors untouched
            // during it.
            unsafe { (entry.export)(self.instance, &state_sink, &error_sink) }
        };
        let failed = |panicked: bool| Error::StateExportFailed {
            service: self.service.to_string(),
            version: self.version().clone(),
            message: String::from_utf8_lossy(&message).into_owned(),
            panicked,
        };
        match status {
            STATUS_OK => Ok((self.info().state_format.unwrap_or(0), state)),
            STATUS_PANIC => Err(failed(true)),
            STATUS_ERROR | STATUS_REFUSED => Err(failed(false)),
            status => Err(Error::InvalidStatus {
                service: self.service.to_string(),
                version: self.version().clone(),
                entry: "export_state",
                status,
            }),
        }
    }

    pub fn version(&self) -> &Version {
        &self.plugin.info().plugin_version
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    pub fn id(&self) -> GenerationId {
        self.id
    }

    pub fn info(&self) -> &PluginInfo {
        self.plugin.info()
    }

    /// Its call counters.
    pub fn counters(&self) -> &Arc<CallCounters> {
        &self.counters
    }

    pub fn watch(&self) -> GenerationWatch {
        GenerationWatch { life: Arc::clone(&self.life) }
    }

    /// Runs the instance's health check.
    pub fn check_health(&self) -> Result<(), Error> {
        let mut message = Vec::new();
        let sink = WriteSink::for_vec(&mut message);
        let health = self.plugin.entry().health;
        // SAFETY: `health` comes from the open `plugin`, and `instance` is live (destroyed only in
        // `Drop`); the sink is valid for the call.
        let status = unsafe { health(self.instance, &sink) };
        match status {
            STATUS_OK => Ok(()),
            STATUS_ERROR | STATUS_PANIC => Err(Error::HealthCheckFailed {
                service: self.service.to_string(),
                version: self.version().clone(),
                message: String::from_utf8_lossy(&message).into_owned(),
            }),
            status => Err(Error::InvalidStatus {
                service: self.service.to_string(),
                version: self.version().clone(),
                entry: "health",
                status,
            }),
        }
    }

    /// Marks the generation as out of the history: it is retired once drained.
    pub fn retire(self: Arc<Self>) {
        self.life.state.lock().out_of_history = true;
        // The reaper watches the drain's deadline; if it is gone (the runtime is shutting down),
        // the last `Arc` is dropped wherever that happens, which is just as safe: the instance
        // is destroyed on the retire thread whoever drops it.
        let _ = self.hooks.reaper.send(ReaperEvent::Retire(Arc::clone(&self)));
    }

    pub fn is_drained(&self) -> bool {
        self.life.state.lock().leases == 0
    }

    /// Drops one lease's reference. When it was the last live lease the generation is drained:
    /// waiters are woken and, if the generation is out of the history, this reference goes to
    /// the reaper, which stops watching its drain deadline and drops it.
    fn release_lease(self: Arc<Self>) {
        let out_of_history = {
            let mut state = self.life.state.lock();
            state.leases -= 1;
            // Every release wakes the waiters: a stateful swap waits for one lease, not none.
            self.life.changed.notify_all();
            if state.leases > 0 {
                return;
            }
            state.out_of_history
        };
        tracing::info!(service = %self.service, version = %self.version(), generation = %self.id, "generation drained");
        self.hooks.events.emit(
            &self.service,
            self.version(),
            EventKind::Drained { generation: self.id },
        );
        if out_of_history {
            let reaper = self.hooks.reaper.clone();
            // If the reaper is gone (the runtime is shutting down), the event comes back in the
            // error and the generation is dropped here, which is just as safe.
            let _ = reaper.send(ReaperEvent::Drained(self));
        }
    }
}

impl Drop for Generation {
    /// Hands the instance to the retire thread: it is destroyed there, whichever thread dropped
    /// the last reference (see [`crate::retire`]).
    fn drop(&mut self) {
        // SAFETY: `drop` runs once, and nothing reads `self.plugin` after this line.
        let plugin = unsafe { ManuallyDrop::take(&mut self.plugin) };
        let doomed = Doomed {
            instance: self.instance,
            plugin,
            service: Arc::clone(&self.service),
            id: self.id,
            life: Arc::clone(&self.life),
            events: Arc::clone(&self.hooks.events),
        };
        crate::retire::submit(Box::new(move || doomed.retire()));
    }
}

/// An instance on its way to the retire thread, with the library reference that keeps its code
/// mapped.
///
/// Invariant: `instance` was made by `plugin`'s `create`, no lease or call refers to it any
/// more (the last `Arc<Generation>` is gone), and only `retire` destroys it, once.
struct Doomed {
    instance: *mut c_void,
    plugin: Arc<Plugin>,
    service: Arc<str>,
    id: GenerationId,
    life: Arc<Life>,
    events: Arc<EventBus>,
}

// SAFETY: `instance` is an instance of a `Send + Sync` service (see `Generation`), reached only
// through the plugin's `destroy`, which the ABI allows on any thread; the other fields are
// `Send` on their own.
unsafe impl Send for Doomed {}

impl Doomed {
    /// Destroys the instance and releases the library (which stays mapped), then reports the
    /// generation retired. Runs on the retire thread.
    fn retire(self) {
        let mut message = Vec::new();
        let sink = WriteSink::for_vec(&mut message);
        let destroy = self.plugin.entry().destroy;
        // SAFETY: the type's invariant: nothing refers to the instance any more and it is
        // destroyed once, here, while `plugin` keeps its library mapped.
        let status = unsafe { destroy(self.instance, &sink) };
        let version = self.plugin.info().plugin_version.clone();
        if status != STATUS_OK {
            tracing::warn!(
                service = %self.service,
                version = %version,
                generation = %self.id,
                error = %String::from_utf8_lossy(&message),
                "destroying the instance failed"
            );
        }
        // With its last generation the library is released: unmapped if that is provably safe,
        // kept mapped otherwise, its staged file removed (`loader::retained`). Whether it is
        // still loaded is read from the dynamic loader, not assumed.
        drop(self.plugin);
        let unmapped = !crate::loader::retained::is_loaded(&self.life.staged);
        if unmapped {
            tracing::info!(service = %self.service, version = %version, generation = %self.id,
                "generation retired; its library is unmapped");
        } else {
            tracing::info!(service = %self.service, version = %version, generation = %self.id,
                "generation retired; its library stays mapped");
        }
        // Reported before the waiters wake, so that a waiter finds the event already sent.
        let retired = EventKind::Retired { generation: self.id, unmapped };
        self.events.emit(&self.service, &version, retired);
        let mut state = self.life.state.lock();
        state.destroyed = true;
        self.life.changed.notify_all();
    }
}

/// The drain and retirement state of a generation, shared with [`GenerationWatch`]es, which
/// may outlive the generation.
#[derive(Debug)]
struct Life {
    id: GenerationId,
    service: String,
    version: Version,
    /// The staged copy its library was loaded from, to tell whether it is still mapped.
    staged: std::path::PathBuf,
    state: Mutex<LifeState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct LifeState {
    /// Live leases: 1 while published, plus one per earlier publication still draining.
    leases: usize,
    /// Out of the history: retired once drained.
    out_of_history: bool,
    /// Its instance destroyed (on the retire thread) and its library reference released.
    destroyed: bool,
}

impl Life {
    fn new(id: GenerationId, service: &str, version: &Version, staged: &std::path::Path) -> Self {
        Life {
            id,
            service: service.to_owned(),
            version: version.clone(),
            staged: staged.to_path_buf(),
            state: Mutex::new(LifeState::default()),
            changed: Condvar::new(),
        }
    }
}

/// Watches one generation's drain and retirement without keeping it alive.
#[derive(Debug, Clone)]
pub struct GenerationWatch {
    life: Arc<Life>,
}

impl GenerationWatch {
    /// A watch on no generation: drained and retired from the start.
    pub(crate) fn detached() -> Self {
        let life = Life::new(GenerationId(0), "", &Version::new(0, 0, 0), std::path::Path::new(""));
        life.state.lock().destroyed = true;
        GenerationWatch { life: Arc::new(life) }
    }

    /// The generation watched.
    pub fn generation(&self) -> GenerationId {
        self.life.id
    }

    /// Its plugin version.
    pub fn version(&self) -> &Version {
        &self.life.version
    }

    /// True when no call can run in the generation: it is not published and every call that
    /// started in it has returned.
    pub fn is_drained(&self) -> bool {
        self.life.state.lock().leases == 0
    }

    /// True once the generation is retired: its instance destroyed (on the runtime's retire
    /// thread) and its reference to the library released. The library is unmapped only when
    /// that is provably safe (see [`GenerationWatch::is_mapped`]).
    pub fn is_retired(&self) -> bool {
        self.life.state.lock().destroyed
    }

    /// Whether the generation's library is mapped into the process, as `/proc/self/maps` shows
    /// it now: read, not assumed. A retired library is unmapped only when no thread-exit work
    /// of its `std` points into it (see [`Runtime::retired_libraries`](crate::Runtime::retired_libraries)),
    /// so this can stay true after retirement.
    pub fn is_mapped(&self) -> bool {
        crate::loader::retained::is_mapped(&self.life.staged)
    }

    /// Waits until the generation is drained, at most `timeout`. A timeout is reported as
    /// [`Error::DrainTimeout`]; nothing is forced.
    pub fn wait_drained(&self, timeout: Duration) -> Result<(), Error> {
        self.wait(timeout, |s| s.leases == 0 || s.destroyed).map_err(|waited| Error::DrainTimeout {
            service: self.life.service.clone(),
            version: self.life.version.clone(),
            generation: self.life.id,
            waited,
        })
    }

    /// Waits until at most `leases` publications hold the generation (calls and health checks
    /// each hold one), at most `timeout`; a timeout is [`Error::DrainTimeout`]. A stateful swap
    /// waits for 1: the paused publication that holds new calls back, and no call running.
    pub(crate) fn wait_leases(&self, leases: usize, timeout: Duration) -> Result<(), Error> {
        self.wait(timeout, |s| s.leases <= leases).map_err(|waited| Error::DrainTimeout {
            service: self.life.service.clone(),
            version: self.life.version.clone(),
            generation: self.life.id,
            waited,
        })
    }

    /// Waits until the generation is retired (its instance destroyed), at most `timeout`. A
    /// generation kept in the history is not retired; this waits for ones that left it.
    pub fn wait_retired(&self, timeout: Duration) -> Result<(), Error> {
        self.wait(timeout, |s| s.destroyed).map_err(|waited| Error::RetireTimeout {
            service: self.life.service.clone(),
            version: self.life.version.clone(),
            generation: self.life.id,
            waited,
        })
    }

    fn wait(&self, timeout: Duration, done: impl Fn(&LifeState) -> bool) -> Result<(), Duration> {
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        let mut state = self.life.state.lock();
        while !done(&state) {
            let timed_out = match deadline {
                Some(deadline) => self.life.changed.wait_until(&mut state, deadline).timed_out(),
                None => {
                    self.life.changed.wait(&mut state);
                    false
                }
            };
            if timed_out && !done(&state) {
                return Err(start.elapsed());
            }
        }
        Ok(())
    }
}

/// One publication of a service's state: what its `ArcSwap` points at.
///
/// Invariant: `target` holds copies of the instance pointer and the call entry of
/// `generation`, kept here so that a call reads them without a second indirection; it is `Some`
/// only when `generation` is, and valid while it is, which this lease keeps alive.
pub(crate) struct Lease {
    target: Option<Entries>,
    state: ServiceState,
    /// For a paused or starting lease: where waiting calls block until the state changes.
    gate: Option<Arc<Gate>>,
    /// For a serving lease swapped in under probation: the window's counters.
    probation: Option<Arc<Probation>>,
    /// For a service releasing a canary: the routing between this lease's generation (the
    /// stable one, whose call target is kept here instead of in `target`, so that calls take
    /// the routing path) and the canary's own lease.
    canary: Option<Box<CanaryRoute>>,
    /// Set while a stateful generation's state is moved: calls wait on `gate`, and no health
    /// check may run in the instance (see `Lease::quiesced`).
    quiesced: bool,
    /// Taken out only in `Drop`, which hands it to `Generation::release_lease`.
    generation: ManuallyDrop<Option<Arc<Generation>>>,
}

/// How the calls of a lease that releases a canary are shared.
struct CanaryRoute {
    /// The stable generation's call target (the lease's own generation).
    stable: Entries,
    /// A call goes to the canary when a uniform 64-bit draw is below this.
    threshold: u64,
    /// The canary's serving lease, under its judging counters.
    lease: Lease,
}

/// The step of the routing sequence: 2^64 / phi, odd.
const STEP: u64 = 0x9e37_79b9_7f4a_7c15;

/// The next point of this thread's routing sequence: a Weyl sequence, `x + i * 2^64 / phi`
/// (mod 2^64), whose points spread over the 64-bit range as evenly as any sequence can (phi,
/// the golden ratio, is the irrational worst approximated by fractions). A call goes to the
/// canary when its point falls below `weight * 2^64`, so over `n` calls a thread sends the
/// canary `n * weight` of them give or take 2 for each term of the Zeckendorf (Fibonacci)
/// decomposition of `n` (the Denjoy-Koksma inequality): at most 20 for `n` = 10,000, whatever
/// the weight and the start. Routing writes only this thread-local word; each thread starts
/// from its own point, taken from a shared counter once, at its first canary call.
#[inline]
fn draw() -> u64 {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};
    static STARTS: AtomicU64 = AtomicU64::new(STEP);
    thread_local! {
        static POINT: Cell<u64> = const { Cell::new(0) };
    }
    POINT.with(|point| {
        let mut current = point.get();
        if current == 0 {
            // A scattered start (an odd multiple of a constant of mixed bits) per thread.
            current = STARTS.fetch_add(0xda94_2042_e4dd_58b6, Ordering::Relaxed) | 1;
        }
        let next = current.wrapping_add(STEP);
        point.set(next);
        next
    })
}

/// A serving lease's call target, borrowed from the lease: it cannot outlive the lease that
/// keeps its generation (and so its instance and code) alive.
#[derive(Clone, Copy)]
pub(crate) struct Target<'lease> {
    entries: Entries,
    _lease: std::marker::PhantomData<&'lease Lease>,
}

/// A generation's instance pointer and call entry points, copied into its leases so that a call
/// reads them without a second indirection.
#[derive(Clone, Copy)]
pub(crate) struct Entries {
    instance: *mut c_void,
    call: CallFn,
    /// The typed entry, for a build exported with a typed interface.
    call_method: Option<CallMethodFn>,
    /// The generation's call counters, which it keeps alive.
    counters: *const CallCounters,
}

impl Entries {
    fn of(generation: &Generation) -> Entries {
        let entry = generation.plugin.entry();
        Entries {
            instance: generation.instance,
            call: entry.call,
            call_method: entry.call_method,
            counters: Arc::as_ptr(&generation.counters),
        }
    }
}

/// How a call names its method: by name (`&str`, every build) or by a typed interface's id
/// ([`Method`], a typed build). The call path is generic over it, so each kind compiles to its
/// own straight line.
pub(crate) trait CallKind: Copy {
    /// Whether the call is counted in the generation's metrics: always, except through
    /// [`Uncounted`], the baseline of the `calls/runtime_uncounted` benchmark.
    const COUNTED: bool = true;

    /// The method's name, for errors.
    fn name(&self) -> &str;

    /// Calls it on `entries`; [`STATUS_UNTYPED`] when it needs an entry the build lacks.
    ///
    /// # Safety
    /// `entries` must be those of a live generation, kept alive for the call; the sinks must be
    /// valid for the call.
    unsafe fn call(
        self,
        entries: Entries,
        input: &[u8],
        output: &WriteSink,
        error: &WriteSink,
    ) -> i32;
}

/// A status no plugin returns: the typed call reached a build without a typed entry.
const STATUS_UNTYPED: i32 = i32::MIN;

impl CallKind for &str {
    #[inline(always)]
    fn name(&self) -> &str {
        self
    }

    #[inline(always)]
    unsafe fn call(
        self,
        entries: Entries,
        input: &[u8],
        output: &WriteSink,
        error: &WriteSink,
    ) -> i32 {
        // SAFETY: the entries are a live generation's (this function's contract); the method
        // name, the input and both sinks are valid for the call.
        unsafe {
            (entries.call)(entries.instance, RawStr::new(self), RawBytes::new(input), output, error)
        }
    }
}

/// A call by name that is not counted: what the call path costs without its metrics, for the
/// benchmark that measures what counting adds. Resolved at compile time, like the kind.
#[derive(Clone, Copy)]
pub(crate) struct Uncounted<'a>(pub &'a str);

impl CallKind for Uncounted<'_> {
    const COUNTED: bool = false;

    #[inline(always)]
    fn name(&self) -> &str {
        self.0
    }

    #[inline(always)]
    unsafe fn call(
        self,
        entries: Entries,
        input: &[u8],
        output: &WriteSink,
        error: &WriteSink,
    ) -> i32 {
        // SAFETY: this function's contract is `&str`'s.
        unsafe { self.0.call(entries, input, output, error) }
    }
}

impl CallKind for Method {
    #[inline(always)]
    fn name(&self) -> &str {
        self.name
    }

    #[inline(always)]
    unsafe fn call(
        self,
        entries: Entries,
        input: &[u8],
        output: &WriteSink,
        error: &WriteSink,
    ) -> i32 {
        let Some(call_method) = entries.call_method else { return STATUS_UNTYPED };
        // SAFETY: as for `&str`: a live generation's entry, and input and sinks valid for the
        // call.
        unsafe { call_method(entries.instance, self.id, RawBytes::new(input), output, error) }
    }
}

// SAFETY: the raw pointer and function pointer are the generation's, which is `Send + Sync`
// (see there).
unsafe impl Send for Lease {}
// SAFETY: as for `Send`.
unsafe impl Sync for Lease {}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("state", &self.state)
            .field("generation", &*self.generation)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Publishes `generation` as serving, under `probation` if given.
    pub fn serving(generation: Arc<Generation>, probation: Option<Arc<Probation>>) -> Lease {
        let target = Entries::of(&generation);
        Lease::with(ServiceState::Running, Some(target), None, probation, Some(generation))
    }

    /// A paused publication of `generation`: calls wait on `gate`; the generation stays
    /// published, so it is not drained.
    pub fn paused(generation: Arc<Generation>, gate: Arc<Gate>) -> Lease {
        Lease::with(ServiceState::Paused, None, Some(gate), None, Some(generation))
    }

    /// A publication of `generation` that holds calls back while its state is moved: the
    /// service keeps its `state` (running or paused), calls wait on `gate`, and health checks
    /// skip it. Its own lease is the only one a quiesced generation keeps once the calls that
    /// were running return.
    pub fn quiesced(generation: Arc<Generation>, gate: Arc<Gate>, state: ServiceState) -> Lease {
        let mut lease = Lease::with(state, None, Some(gate), None, Some(generation));
        lease.quiesced = true;
        lease
    }

    /// Publishes `stable` as serving (under `probation` if given) beside `canary`, which takes
    /// the calls whose draw falls below `threshold`, under its judging counters `judge`.
    pub fn with_canary(
        stable: Arc<Generation>,
        probation: Option<Arc<Probation>>,
        canary: Arc<Generation>,
        judge: Arc<Probation>,
        threshold: u64,
    ) -> Lease {
        let route = CanaryRoute {
            stable: Entries::of(&stable),
            threshold,
            lease: Lease::serving(canary, Some(judge)),
        };
        let mut lease = Lease::with(ServiceState::Running, None, None, probation, Some(stable));
        lease.canary = Some(Box::new(route));
        lease
    }

    /// A starting service: calls wait on `gate` until the start ends.
    pub fn starting(gate: Arc<Gate>) -> Lease {
        Lease::with(ServiceState::Starting, None, Some(gate), None, None)
    }

    /// A service with no instance serving: `state` is loaded, stopped or failed.
    pub fn closed(state: ServiceState) -> Lease {
        Lease::with(state, None, None, None, None)
    }

    fn with(
        state: ServiceState,
        target: Option<Entries>,
        gate: Option<Arc<Gate>>,
        probation: Option<Arc<Probation>>,
        generation: Option<Arc<Generation>>,
    ) -> Lease {
        if let Some(generation) = &generation {
            generation.life.state.lock().leases += 1;
        }
        Lease {
            target,
            state,
            gate,
            probation,
            canary: None,
            quiesced: false,
            generation: ManuallyDrop::new(generation),
        }
    }

    pub fn state(&self) -> ServiceState {
        self.state
    }

    pub fn generation(&self) -> Option<&Arc<Generation>> {
        self.generation.as_ref()
    }

    pub fn gate(&self) -> Option<&Arc<Gate>> {
        self.gate.as_ref()
    }

    pub fn probation(&self) -> Option<&Arc<Probation>> {
        self.probation.as_ref()
    }

    /// The canary's generation, for a lease releasing one.
    pub fn canary(&self) -> Option<&Arc<Generation>> {
        self.canary.as_deref().and_then(|route| route.lease.generation())
    }

    /// Whether calls are held back while the generation's state is moved: then nothing may
    /// run in its instance, not even a health check.
    pub fn is_quiesced(&self) -> bool {
        self.quiesced
    }

    /// The call target, if this lease serves, borrowed from it.
    #[inline]
    pub fn target(&self) -> Option<Target<'_>> {
        self.target.map(|entries| Target { entries, _lease: std::marker::PhantomData })
    }

    /// For a lease releasing a canary: the lease a call goes through (the canary's, for the
    /// share of calls its weight gives it, or this one) and its target, borrowed from this
    /// lease. `None` for any other lease.
    #[inline]
    pub fn route(&self) -> Option<(&Lease, Target<'_>)> {
        let route = self.canary.as_deref()?;
        if draw() < route.threshold {
            let target = route.lease.target()?;
            return Some((&route.lease, target));
        }
        Some((self, Target { entries: route.stable, _lease: std::marker::PhantomData }))
    }

    /// Calls `method` on `target`, appending the answer to `output`. On error `output` is left as
    /// it was. `target` borrows a live lease (the one it came from), which keeps its instance
    /// alive for the call: it is sound whichever lease it came from, and the callers pass this
    /// lease's own, so that errors name the right generation.
    #[inline]
    pub fn invoke<M: CallKind>(
        &self,
        target: Target<'_>,
        method: M,
        input: &[u8],
        output: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let start = output.len();
        let mut message = Vec::new();
        let status = {
            let output_sink = WriteSink::for_vec(output);
            let error_sink = WriteSink::for_vec(&mut message);
            // SAFETY: `target` borrows the lease it came from, which keeps that generation, its
            // instance and its library alive for the call (the type's invariant); input and both
            // sinks are valid for the call.
            unsafe { method.call(target.entries, input, &output_sink, &error_sink) }
        };
        if M::COUNTED {
            // SAFETY: the counters belong to the generation the lease keeps alive (as the
            // instance does).
            unsafe { &*target.entries.counters }.record(status);
        }
        if status == STATUS_OK {
            return Ok(());
        }
        Err(self.call_error(status, method.name(), output, start, message))
    }

    #[cold]
    #[inline(never)]
    fn call_error(
        &self,
        status: i32,
        method: &str,
        output: &mut Vec<u8>,
        start: usize,
        message: Vec<u8>,
    ) -> Error {
        output.truncate(start);
        let Some(generation) = self.generation.as_ref() else {
            // Unreachable: only a lease with a generation has a target to call.
            return Error::Stopped { service: String::new(), state: self.state };
        };
        let (service, version) = (generation.service.to_string(), generation.version().clone());
        match status {
            STATUS_ERROR => Error::CallFailed {
                service,
                version,
                method: method.to_owned(),
                message: String::from_utf8_lossy(&message).into_owned(),
            },
            graft_plugin_api::abi::STATUS_REFUSED => Error::Refused {
                service,
                version,
                method: method.to_owned(),
                message: String::from_utf8_lossy(&message).into_owned(),
            },
            STATUS_PANIC => {
                let message = String::from_utf8_lossy(&message).into_owned();
                tracing::error!(service = %service, version = %version, method, panic = %message, "plugin panicked");
                Error::PluginPanicked { service, version, method: method.to_owned(), message }
            }
            STATUS_DEPENDENCY => provenance::received(&service, &version, method, &message),
            STATUS_UNTYPED => Error::UntypedBuild {
                service,
                version,
                interface: generation.info().interface.clone(),
            },
            status => Error::InvalidStatus { service, version, entry: "call", status },
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // SAFETY: `drop` runs once, and nothing reads `self.generation` after this line.
        if let Some(generation) = unsafe { ManuallyDrop::take(&mut self.generation) } {
            generation.release_lease();
        }
    }
}

/// Where calls wait while a service is paused, starting or handing its state over: they block
/// until it opens.
///
/// It also counts the calls that wait on it and, once it opened, the ones it woke that have
/// not yet read the service's next publication (each holds a [`Passage`]). An operation that is
/// about to hold calls back again waits for those first ([`Gate::wait_passed`]): otherwise a
/// call woken by one handover could read the next one's gate before it ever ran, and handovers
/// back to back would hold it until its deadline.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    /// Calls waiting on the gate, or woken by it and holding their [`Passage`].
    waiting: usize,
}

/// A call woken by an open gate, until it has read the service's next publication (and holds
/// it, if it serves, for as long as it runs). Dropping it tells the gate the call has passed.
#[derive(Debug)]
pub(crate) struct Passage {
    gate: Arc<Gate>,
}

impl Drop for Passage {
    fn drop(&mut self) {
        self.gate.leave();
    }
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// Opens the gate for good: every waiter wakes and reads the service's state again.
    pub fn open(&self) {
        self.state.lock().open = true;
        self.changed.notify_all();
    }

    /// Waits until the gate opens or `deadline` passes (`None`: no deadline). If it opened,
    /// the call holds the [`Passage`] until it has read the service's next publication.
    pub fn wait(self: &Arc<Self>, deadline: Option<Instant>) -> Option<Passage> {
        let mut state = self.state.lock();
        state.waiting += 1;
        while !state.open {
            let timed_out = match deadline {
                Some(deadline) => self.changed.wait_until(&mut state, deadline).timed_out(),
                None => {
                    self.changed.wait(&mut state);
                    false
                }
            };
            if timed_out && !state.open {
                drop(state);
                self.leave();
                return None;
            }
        }
        Some(Passage { gate: Arc::clone(self) })
    }

    fn leave(&self) {
        let mut state = self.state.lock();
        state.waiting = state.waiting.saturating_sub(1);
        if state.waiting == 0 {
            self.changed.notify_all();
        }
    }

    /// Waits, at most `timeout`, until every call this gate woke has read the service's next
    /// publication; true if they all did.
    pub fn wait_passed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.state.lock();
        while state.waiting > 0 {
            match deadline {
                Some(deadline) => {
                    if self.changed.wait_until(&mut state, deadline).timed_out() {
                        return state.waiting == 0;
                    }
                }
                None => self.changed.wait(&mut state),
            }
        }
        true
    }
}

#[cfg(test)]
mod routing_tests {
    use super::STEP;

    /// The number of terms of `n`'s Zeckendorf decomposition (greedy, by Fibonacci numbers).
    fn zeckendorf_terms(mut n: u64) -> u64 {
        let mut fibonacci = vec![1u64, 2];
        while fibonacci[fibonacci.len() - 1] <= n {
            let next = fibonacci[fibonacci.len() - 1] + fibonacci[fibonacci.len() - 2];
            fibonacci.push(next);
        }
        let mut terms = 0;
        for &f in fibonacci.iter().rev() {
            if f <= n {
                n -= f;
                terms += 1;
            }
        }
        terms
    }

    /// The Denjoy-Koksma bound the canary's routing documents: from any start, for any weight,
    /// the calls a thread routes to the canary stray from `n * weight` by at most twice the
    /// number of terms of `n`'s Zeckendorf decomposition.
    #[test]
    fn the_routing_sequence_keeps_within_its_discrepancy_bound() {
        let starts = [1u64, 0xda94_2042_e4dd_58b7, u64::MAX, 1 << 63, 12_345_678_901];
        let weights = [0.001, 0.1, 0.37, 0.5, 0.9, 0.999];
        let lengths = [1u64, 7, 100, 1000, 10_000, 12_345, 100_000];
        for start in starts {
            for weight in weights {
                let threshold = crate::CanaryPolicy::with_weight(weight).threshold();
                for n in lengths {
                    let mut point = start;
                    let mut hits = 0u64;
                    for _ in 0..n {
                        point = point.wrapping_add(STEP);
                        hits += u64::from(point < threshold);
                    }
                    let deviation = (hits as f64 - n as f64 * weight).abs();
                    let bound = 2.0 * zeckendorf_terms(n) as f64;
                    assert!(
                        deviation <= bound,
                        "start {start}, weight {weight}, {n} calls: {hits} hits, off by {deviation} > {bound}"
                    );
                }
            }
        }
        assert_eq!(zeckendorf_terms(10_000), 6);
    }
}
