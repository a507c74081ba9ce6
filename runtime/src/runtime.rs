//! The [`Runtime`]: the services it holds, and the operations on each of them.
//!
//! Each service has a [`Slot`]: an `ArcSwap` of the lease callers read (which carries the state
//! and, when serving, the call target) and a control lock that serialises the operations on
//! that service. An operation on one service never takes another service's control lock: what
//! it needs to know about others (their state, interface version, dependencies) it reads
//! lock-free from their leases and dependency lists.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use semver::{Version, VersionReq};

use crate::events::{EventBus, EventKind, RollbackReason};
use crate::generation::{Gate, Generation, GenerationId, GenerationWatch, Hooks, Lease};
use crate::graph::{self, Node};
use crate::handle::ServiceHandle;
use crate::host::host_api;
use crate::loader::staging::{self, StagingLock};
use crate::loader::{Loader, Plugin, PluginInfo};
use crate::policy::{ProbationPolicy, RestartPolicy};
use crate::probation::Probation;
use crate::reaper::Reaper;
use crate::supervisor::{Supervisor, SupervisorEvent};
use crate::{Error, gate};

/// The default number of earlier generations kept loaded per service.
pub const DEFAULT_HISTORY_DEPTH: usize = 1;
/// The default time after which a drain that has not finished is reported.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// The default time a call waits for a paused or starting service (and, between services, for
/// one that is not running yet) before it fails with [`Error::NotReady`].
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_secs(5);
/// The default time `stop` waits for the calls running in a service to return.
pub const DEFAULT_STOP_DEADLINE: Duration = Duration::from_secs(30);
/// The default interval of periodic health checks.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The lifecycle state of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceState {
    /// Its plugin is loaded; it was never started.
    Loaded,
    /// An instance is being created; calls wait.
    Starting,
    /// An instance serves calls.
    Running,
    /// Calls wait until it is resumed; calls already running finish.
    Paused,
    /// Stopped: the host's calls fail at once with [`Error::Stopped`]; it can be started again.
    Stopped,
    /// Its restart policy gave up on it; it stays failed until [`Runtime::reset`].
    Failed,
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServiceState::Loaded => "loaded",
            ServiceState::Starting => "starting",
            ServiceState::Running => "running",
            ServiceState::Paused => "paused",
            ServiceState::Stopped => "stopped",
            ServiceState::Failed => "failed",
        })
    }
}

impl ServiceState {
    /// Running or paused: it has a published instance.
    pub fn is_up(self) -> bool {
        matches!(self, ServiceState::Running | ServiceState::Paused)
    }
}

/// A service another one needs, with a requirement on its interface version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The service's name.
    pub service: String,
    /// The requirement on its interface version.
    pub requirement: VersionReq,
}

/// How to load a plugin: under which name, with which extra dependencies.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    name: Option<String>,
    dependencies: Vec<Dependency>,
}

impl LoadOptions {
    /// Registers the service under `name` instead of the descriptor's name, so that one build
    /// can serve several services (as a systemd template unit does). A swap of such a service
    /// needs a build that declares the descriptor's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a dependency the descriptor does not declare (the host's word wins over the
    /// descriptor's for the same service).
    pub fn depends_on(mut self, service: impl Into<String>, requirement: VersionReq) -> Self {
        self.dependencies.push(Dependency { service: service.into(), requirement });
        self
    }
}

/// Configures a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    staging_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    pub(crate) config: Config,
    requirements: HashMap<String, VersionReq>,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub history_depth: usize,
    pub drain_deadline: Duration,
    pub call_deadline: Duration,
    pub stop_deadline: Duration,
    pub health_interval: Option<Duration>,
    pub probation: ProbationPolicy,
    pub restart: RestartPolicy,
    pub concurrency: usize,
    pub commit_after_probation: bool,
    pub max_plugin_size: u64,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            staging_dir: None,
            state_dir: None,
            config: Config {
                history_depth: DEFAULT_HISTORY_DEPTH,
                drain_deadline: DEFAULT_DRAIN_DEADLINE,
                call_deadline: DEFAULT_CALL_DEADLINE,
                stop_deadline: DEFAULT_STOP_DEADLINE,
                health_interval: Some(DEFAULT_HEALTH_INTERVAL),
                probation: ProbationPolicy::default(),
                restart: RestartPolicy::default(),
                concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
                commit_after_probation: false,
                max_plugin_size: crate::loader::DEFAULT_MAX_PLUGIN_SIZE,
            },
            requirements: HashMap::new(),
        }
    }
}

impl RuntimeBuilder {
    /// Stages plugin copies in `dir` (created if missing) instead of a private temporary
    /// directory that is removed with the runtime. Several runtimes may share it: each holds a
    /// lock file there (`.graft-<pid>-*.lock`) for its life, and at start a runtime removes the
    /// staged copies (`<stem>.<pid>.<n>.so`) of processes that hold no lock there any more, so
    /// keep nothing else of that shape in it.
    pub fn staging_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.staging_dir = Some(dir.into());
        self
    }

    /// Keeps the history on disk in `dir` (created if missing): an archived copy of every build
    /// in service and a manifest per service naming its current and its committed (known good)
    /// build. [`Runtime::restore`] brings each service back on its committed build. Without a
    /// state directory nothing survives the process.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Commits a swapped-in build by itself once it has passed its probation (default: only
    /// [`Runtime::commit`] commits).
    pub fn commit_after_probation(mut self, commit: bool) -> Self {
        self.config.commit_after_probation = commit;
        self
    }

    /// Refuses plugin files larger than `bytes` (default
    /// [`DEFAULT_MAX_PLUGIN_SIZE`](crate::DEFAULT_MAX_PLUGIN_SIZE), 512 MiB) with
    /// [`Error::TooLarge`], before copying any of them.
    pub fn max_plugin_size(mut self, bytes: u64) -> Self {
        self.config.max_plugin_size = bytes;
        self
    }

    /// Keeps `depth` earlier generations of each service loaded as rollback targets (default 1).
    /// With 0, a swap cannot be rolled back.
    pub fn history_depth(mut self, depth: usize) -> Self {
        self.config.history_depth = depth;
        self
    }

    /// Reports (without forcing anything) a retired generation whose calls have not all
    /// returned after `deadline` (default 30 s).
    pub fn drain_deadline(mut self, deadline: Duration) -> Self {
        self.config.drain_deadline = deadline;
        self
    }

    /// How long a call waits for a paused or starting service, and a call between services for
    /// one that is not running, before it fails with [`Error::NotReady`] (default 5 s).
    pub fn call_deadline(mut self, deadline: Duration) -> Self {
        self.config.call_deadline = deadline;
        self
    }

    /// How long `stop` waits for running calls to return before it reports them (default 30 s).
    pub fn stop_deadline(mut self, deadline: Duration) -> Self {
        self.config.stop_deadline = deadline;
        self
    }

    /// Checks every running service's health at this interval (default 1 s, at least 1 ms);
    /// `None` disables periodic checks.
    pub fn health_interval(mut self, interval: Option<Duration>) -> Self {
        // A zero interval would keep the supervisor spinning; a millisecond is the floor.
        self.config.health_interval = interval.map(|i| i.max(Duration::from_millis(1)));
        self
    }

    /// The probation every swapped-in build serves (default [`ProbationPolicy::default`]).
    pub fn probation(mut self, policy: ProbationPolicy) -> Self {
        self.config.probation = policy;
        self
    }

    /// How services that fail to start are restarted (default [`RestartPolicy::default`]).
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.config.restart = policy;
        self
    }

    /// How many services an operation over many services works on at once (default: the
    /// number of CPUs). At least 1.
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.config.concurrency = limit.max(1);
        self
    }

    /// Requires every build of `service` to implement an interface version matching
    /// `requirement`. Without one, a service requires `^` the interface version it was first
    /// loaded with.
    pub fn require(mut self, service: impl Into<String>, requirement: VersionReq) -> Self {
        self.requirements.insert(service.into(), requirement);
        self
    }

    /// Creates the runtime and starts its background threads.
    ///
    /// Refused with [`Error::InvalidName`] if a name given to [`RuntimeBuilder::require`]
    /// breaks the naming rule ([`crate::validate_name`]).
    pub fn build(self) -> Result<Runtime, Error> {
        static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);
        for service in self.requirements.keys() {
            crate::validate_name(service)?;
        }
        let (staging, temp) = match self.staging_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                    action: "creating the staging directory",
                    path: dir.clone(),
                    source,
                })?;
                (dir, None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix(staging::TEMP_PREFIX)
                    .tempdir()
                    .map_err(|source| Error::Io {
                        action: "creating a staging directory in",
                        path: std::env::temp_dir(),
                        source,
                    })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        // Locked before anything is staged, then what dead runtimes left is removed.
        let staging_lock = StagingLock::take(&staging)?;
        match &temp {
            Some(temp) => staging::clean_siblings(&std::env::temp_dir(), temp.path()),
            None => staging::clean_shared(&staging),
        }
        let store = self.state_dir.as_deref().map(crate::history::Store::open).transpose()?;
        let reaper = Reaper::start(self.config.drain_deadline)?;
        let (supervisor_events, supervisor_inbox) = crossbeam_channel::unbounded();
        let events = Arc::new(EventBus::default());
        let shared = Arc::new_cyclic(|me| Shared {
            id: NEXT_RUNTIME.fetch_add(1, Ordering::Relaxed),
            me: me.clone(),
            services: RwLock::new(HashMap::new()),
            loader: Loader::new(staging.clone()).with_max_size(self.config.max_plugin_size),
            next_generation: AtomicU64::new(1),
            config: self.config,
            requirements: self.requirements,
            hooks: Hooks { reaper: reaper.sender(), events },
            supervisor: supervisor_events,
            staging,
            dependency_lock: Mutex::new(()),
            store,
        });
        let supervisor = Supervisor::start(Arc::downgrade(&shared), supervisor_inbox)?;
        Ok(Runtime {
            supervisor,
            shared,
            _reaper: reaper,
            _staging_lock: staging_lock,
            _temp: temp,
        })
    }
}

/// The host side of graft: holds services loaded from plugins, runs them, and replaces them
/// while calls keep flowing.
///
/// All operations take `&self`; share a runtime between threads with an `Arc`. Two operations
/// on the same service never interleave: the second waits for the first (they are serialised
/// by that service's lock). Operations on different services never wait for each other, and
/// no operation blocks a call.
///
/// # Trust
/// Loading a plugin runs its library initialisers and then its code inside this process. The
/// runtime checks a file's format before loading it and the plugin's declared ABI and versions
/// after, but it cannot make a malicious or broken library safe: load only files you trust.
#[derive(Debug)]
pub struct Runtime {
    // Dropped first: the supervisor must not act on a runtime being torn down.
    supervisor: Supervisor,
    shared: Arc<Shared>,
    // Dropped after the services: it holds retired generations until they drain.
    _reaper: Reaper,
    // Held for the runtime's life, so that no other runtime takes its staged copies for a dead
    // one's; released once they are gone.
    _staging_lock: StagingLock,
    _temp: Option<tempfile::TempDir>,
}

/// What the runtime's parts share: the services, the loader, the configuration and the hooks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) me: Weak<Shared>,
    pub(crate) services: RwLock<HashMap<String, Arc<Slot>>>,
    loader: Loader,
    next_generation: AtomicU64,
    pub(crate) config: Config,
    requirements: HashMap<String, VersionReq>,
    pub(crate) hooks: Hooks,
    pub(crate) supervisor: crossbeam_channel::Sender<SupervisorEvent>,
    staging: PathBuf,
    /// The history on disk, if the runtime has a state directory.
    store: Option<crate::history::Store>,
    /// Held while a start, a stop or a swap checks other services' states and publishes its
    /// own, so that two such checks never interleave (a dependency stopping while a dependent
    /// starts). Taken after a control lock, never before one, and never held across plugin code.
    dependency_lock: Mutex<()>,
}

/// One service: the lease callers read, and the control state operations change.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: String,
    /// The published state. Calls `load()` it; operations `store()` a new one.
    pub(crate) current: ArcSwap<Lease>,
    /// The services it depends on, readable without the control lock.
    pub(crate) dependencies: ArcSwap<Vec<Dependency>>,
    /// The last outcome of a periodic health check.
    pub(crate) healthy: AtomicBool,
    /// What `status` reports besides the state, refreshed by every operation, so that reading it
    /// never waits for one (the lock is held only to swap or clone the pointer).
    info: RwLock<Arc<SlotInfo>>,
    pub(crate) shared: Weak<Shared>,
    /// Held for the whole of an operation on this service, so two never interleave.
    control: Mutex<Control>,
}

#[derive(Debug)]
struct Control {
    /// The build new instances (start, restart) are made from.
    plugin: Arc<Plugin>,
    /// Its dependencies (the descriptor's and the host's).
    dependencies: Arc<Vec<Dependency>>,
    /// The generation published (running or paused), if any.
    serving: Option<Arc<Generation>>,
    /// The gate paused calls wait on, while paused.
    pause_gate: Option<Arc<Gate>>,
    /// Earlier generations kept loaded as rollback targets, most recent first, each with its
    /// dependencies.
    history: VecDeque<(Arc<Generation>, Arc<Vec<Dependency>>)>,
    interface: Arc<str>,
    requirement: Arc<VersionReq>,
    /// Extra dependencies the host gave at load; they apply to every build of the service.
    host_dependencies: Vec<Dependency>,
    /// Whether an operator wants it running: set by start, cleared by stop. An automatic
    /// restart after a failed start happens only while it is set.
    wants_running: bool,
    /// The probation window of the serving generation, while one is open.
    probation: Option<Arc<Probation>>,
    /// Set by `unload`: the slot left the registry, and no operation may bring it back.
    unloaded: bool,
}

/// The part of a service's status that only operations change: shared references, so that an
/// operation refreshes it for the price of a few reference counts. It is refreshed before a
/// generation is retired, so it never keeps a retired generation loaded.
#[derive(Debug)]
struct SlotInfo {
    plugin: Arc<Plugin>,
    interface: Arc<str>,
    requirement: Arc<VersionReq>,
    dependencies: Arc<Vec<Dependency>>,
    current: Option<Arc<Generation>>,
    history: Vec<Arc<Generation>>,
}

impl SlotInfo {
    fn of(control: &Control) -> SlotInfo {
        SlotInfo {
            plugin: Arc::clone(&control.plugin),
            interface: Arc::clone(&control.interface),
            requirement: Arc::clone(&control.requirement),
            dependencies: Arc::clone(&control.dependencies),
            current: control.serving.clone(),
            history: control.history.iter().map(|(g, _)| Arc::clone(g)).collect(),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.supervisor.stop();
        // Tear the services down here: a plugin's call to another service may hold the shared
        // state a little longer. Every instance is destroyed on the retire thread, whoever lets
        // go of it last; those with calls in flight once the calls return.
        let services: Vec<Arc<Slot>> =
            self.shared.services.write().drain().map(|(_, s)| s).collect();
        drop(services);
    }
}

impl Runtime {
    /// A runtime with the default configuration.
    pub fn new() -> Result<Runtime, Error> {
        RuntimeBuilder::default().build()
    }

    /// Configures a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// The directory plugin copies are staged in.
    pub fn staging_dir(&self) -> &Path {
        &self.shared.staging
    }

    /// Subscribes to lifecycle events. Each subscriber gets every event from now on, in order,
    /// through an unbounded channel; dropping the receiver unsubscribes.
    pub fn subscribe(&self) -> crate::EventReceiver {
        self.shared.hooks.events.subscribe()
    }

    /// Loads the plugin at `path` and registers its service, named by its descriptor, in state
    /// [`ServiceState::Loaded`]; [`Runtime::start`] starts it.
    ///
    /// Refused, with the file's staged copy removed, if the file or its descriptor is bad, if a
    /// service of that name is loaded, or if its dependencies would close a cycle.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<LoadReport, Error> {
        self.shared.load(path.as_ref(), LoadOptions::default())
    }

    /// Loads the plugin at `path` with `options` (another name, extra dependencies).
    pub fn load_with(
        &self,
        path: impl AsRef<Path>,
        options: LoadOptions,
    ) -> Result<LoadReport, Error> {
        self.shared.load(path.as_ref(), options)
    }

    /// Loads the plugin at `path` and starts its service.
    pub fn load_and_start(&self, path: impl AsRef<Path>) -> Result<LoadReport, Error> {
        let report = self.shared.load(path.as_ref(), LoadOptions::default())?;
        self.start(&report.service)?;
        Ok(report)
    }

    /// Starts `service`: creates an instance, runs its health check and publishes it.
    ///
    /// Refused with [`Error::DependencyNotRunning`] or [`Error::DependencyMismatch`] unless
    /// every dependency runs at a satisfying interface version; see
    /// [`Runtime::start_with_dependencies`]. Starting a running or paused service does nothing.
    /// A start that fails in the plugin (`create` or the health check) is handed to the restart
    /// policy, which retries it until a stop; a refused start (a dependency) is not retried.
    /// A panic inside a later call does not restart the service: it is contained to that call.
    pub fn start(&self, service: &str) -> Result<(), Error> {
        let slot = self.shared.slot(service)?;
        self.shared.start_one(&slot, false)
    }

    /// Starts `service` and, first, everything it depends on that is not running, in
    /// dependency waves.
    pub fn start_with_dependencies(&self, service: &str) -> Result<crate::BatchReport, Error> {
        self.shared.slot(service)?;
        let names = graph::with_dependencies(&self.shared.nodes_owned().as_nodes(), &[service]);
        self.shared.start_set(&names)
    }

    /// Stops `service`: new calls from the host fail at once with [`Error::Stopped`] (calls from
    /// other services retry until the call deadline, as for any service that is not running),
    /// running calls are given the stop deadline to return, then the instance is destroyed. A
    /// restart the restart policy had scheduled is cancelled.
    ///
    /// Refused with [`Error::DependentsRunning`] while services that depend on it run; see
    /// [`Runtime::stop_cascade`].
    pub fn stop(&self, service: &str) -> Result<StopReport, Error> {
        let slot = self.shared.slot(service)?;
        self.shared.stop_one(&slot)
    }

    /// Stops `service` and every service that depends on it, dependents first, in waves.
    pub fn stop_cascade(&self, service: &str) -> Result<crate::BatchReport, Error> {
        self.shared.slot(service)?;
        let nodes = self.shared.nodes_owned();
        let mut names = graph::dependents_of(&nodes.as_nodes(), service);
        names.push(service.to_owned());
        self.shared.stop_set(&names)
    }

    /// Replaces the instance of `service` with a new one from the same build. Calls see no
    /// error: the new instance is published with one atomic store and the old one drains, as in
    /// a swap. Other services are untouched.
    pub fn restart(&self, service: &str) -> Result<SwapReport, Error> {
        let slot = self.shared.slot(service)?;
        self.shared.restart_one(&slot)
    }

    /// Makes new calls to `service` wait (up to the call deadline) instead of running; calls
    /// already running finish.
    pub fn pause(&self, service: &str) -> Result<(), Error> {
        let slot = self.shared.slot(service)?;
        self.shared.pause_one(&slot)
    }

    /// Lets the calls waiting on a paused `service` proceed.
    pub fn resume(&self, service: &str) -> Result<(), Error> {
        let slot = self.shared.slot(service)?;
        self.shared.resume_one(&slot)
    }

    /// Clears a failed service's failure history and makes it [`ServiceState::Stopped`], so
    /// that it can be started again.
    pub fn reset(&self, service: &str) -> Result<(), Error> {
        let slot = self.shared.slot(service)?;
        self.shared.reset_one(&slot)
    }

    /// Starts every loaded service that is not running, in dependency waves, each wave in
    /// parallel under the concurrency limit. A service that fails to start, or is failed and
    /// not reset, fails the batch: the later waves are skipped, and the error's report says
    /// what happened to each service.
    pub fn start_all(&self) -> Result<crate::BatchReport, Error> {
        let names: Vec<String> = self.shared.services.read().keys().cloned().collect();
        self.shared.start_set(&names)
    }

    /// Stops every service, dependents first, in waves.
    pub fn stop_all(&self) -> Result<crate::BatchReport, Error> {
        let names: Vec<String> = self.shared.services.read().keys().cloned().collect();
        self.shared.stop_set(&names)
    }

    /// Restarts `services` in dependency waves.
    pub fn restart_services(&self, services: &[&str]) -> Result<crate::BatchReport, Error> {
        let names: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
        self.shared
            .run_set("restart", &names, false, |shared, slot| shared.restart_one(slot).map(|_| ()))
    }

    /// Swaps each service to its file, in dependency waves.
    pub fn swap_services(&self, swaps: &[(&str, &Path)]) -> Result<crate::BatchReport, Error> {
        let files: HashMap<String, PathBuf> =
            swaps.iter().map(|(s, p)| ((*s).to_owned(), p.to_path_buf())).collect();
        let names: Vec<String> = files.keys().cloned().collect();
        self.shared.run_set("swap", &names, false, |shared, slot| match files.get(&slot.name) {
            Some(path) => shared.swap_one(slot, path).map(|_| ()),
            None => Ok(()),
        })
    }

    /// Replaces the running build of `service` with the plugin at `path`.
    ///
    /// The new build must declare the same service and interface, an interface version that
    /// satisfies the service's requirement and every running dependent's, another plugin
    /// version, and dependencies that run. It is loaded, created and health-checked before
    /// anything changes; any failure returns a typed error and leaves the old build serving,
    /// untouched. Then it is published with one atomic store, under probation: new calls go to
    /// it at once, calls already running finish in the old build, which stays loaded as the
    /// rollback target. This returns once the new build is published;
    /// [`SwapReport::previous`] lets a caller wait for the old one's drain.
    pub fn swap(&self, service: &str, path: impl AsRef<Path>) -> Result<SwapReport, Error> {
        let slot = self.shared.slot(service)?;
        self.shared.swap_one(&slot, path.as_ref())
    }

    /// Publishes the most recent earlier generation of `service` again, with one atomic store of
    /// a new lease: no disk, no `dlopen`, no new instance. The generation it replaces becomes
    /// the rollback target, so a second rollback undoes the first.
    ///
    /// A rollback passes the same gates as a swap: the earlier build's interface version must
    /// satisfy every running dependent ([`Error::BreaksDependent`]) and its dependencies must
    /// run ([`Error::DependencyNotRunning`], [`Error::DependencyMismatch`]). A refused rollback
    /// changes nothing: the current build keeps serving.
    pub fn rollback(&self, service: &str) -> Result<SwapReport, Error> {
        let slot = self.shared.slot(service)?;
        let mut control = slot.control.lock();
        self.shared.rollback_locked(&slot, &mut control, RollbackReason::Manual)
    }

    /// Replaces the running build of `service` with the plugin at `path` whose interface
    /// version may break the service's requirement: a breaking change (1.x to 2.0) shipped
    /// knowingly. It is [`Runtime::swap`] in every other respect (same service and interface,
    /// another plugin version, created and health-checked before publication, under
    /// probation), and it is still refused with [`Error::BreaksDependent`] while a running
    /// dependent requires an interface version the new build does not implement. The new
    /// build's interface version becomes the base of the requirement (`^` that version). A
    /// rollback to the build before goes back to that build's requirement, under the same
    /// check of running dependents.
    pub fn replace(&self, service: &str, path: impl AsRef<Path>) -> Result<SwapReport, Error> {
        let slot = self.shared.slot(service)?;
        self.shared.swap_to(&slot, Candidate::Path(path.as_ref()), Requirement::Lift)
    }

    /// Removes the stopped (or loaded, or failed) `service`: its slot leaves the runtime, the
    /// builds kept for rollback are retired once drained, and the name is free for
    /// a new [`Runtime::load`]. Handles taken before fail their calls with [`Error::Stopped`].
    ///
    /// Refused with [`Error::InvalidState`] unless the service is stopped, loaded or failed,
    /// and with [`Error::DependentsLoaded`] while a loaded service declares it as a dependency.
    /// The state directory's manifest of the service is kept.
    pub fn unload(&self, service: &str) -> Result<(), Error> {
        let slot = self.shared.slot(service)?;
        self.shared.unload_one(&slot)
    }

    /// Watches the plugin directory `dir`: every `.so` file in it is brought into service
    /// (loaded and started, or swapped in through the same gate as [`Runtime::swap`]) as soon as
    /// it is complete, now and whenever the directory changes; see [`Watcher`](crate::Watcher). The receiver
    /// gets what the watcher did with each file. Dropping the watcher stops it.
    pub fn watch(
        &self,
        dir: impl Into<PathBuf>,
    ) -> Result<(crate::Watcher, crossbeam_channel::Receiver<crate::WatchEvent>), Error> {
        self.watch_with(dir, crate::WatchOptions::default())
    }

    /// [`Runtime::watch`] with options, e.g. development mode
    /// ([`WatchOptions::development`](crate::WatchOptions::development)).
    pub fn watch_with(
        &self,
        dir: impl Into<PathBuf>,
        options: crate::WatchOptions,
    ) -> Result<(crate::Watcher, crossbeam_channel::Receiver<crate::WatchEvent>), Error> {
        crate::Watcher::start(Arc::downgrade(&self.shared), dir.into(), options)
    }

    /// Marks the build `service` runs now as known good: a restarted host comes back on it.
    /// Needs a state directory.
    pub fn commit(&self, service: &str) -> Result<(), Error> {
        let slot = self.shared.slot(service)?;
        self.shared.commit(&slot)
    }

    /// The manifest of `service` in the state directory, if it has one.
    pub fn manifest(&self, service: &str) -> Result<Option<crate::Manifest>, Error> {
        match &self.shared.store {
            Some(store) => store.manifest(service),
            None => Ok(None),
        }
    }

    /// Brings back every service the state directory records, each on its committed build, and
    /// starts them in dependency waves. Call it once, after building the runtime.
    pub fn restore(&self) -> Result<crate::BatchReport, Error> {
        let Some(store) = &self.shared.store else {
            return Err(Error::NoStateDir);
        };
        let mut names = Vec::new();
        for manifest in store.manifests()? {
            let path = store.archived(&manifest.committed);
            let options = LoadOptions::default().name(manifest.service.clone());
            match self.shared.load(&path, options) {
                Ok(_) | Err(Error::AlreadyLoaded { .. }) => names.push(manifest.service.clone()),
                Err(error) => return Err(error),
            }
            if manifest.current != manifest.committed {
                // It comes back on the committed build: that is now also the current one.
                let restored = crate::Manifest { current: manifest.committed.clone(), ..manifest };
                store.write(&restored, "restore")?;
            }
        }
        self.shared.start_set(&names)
    }

    /// A handle to `service` that resolves the serving generation on every call.
    pub fn handle(&self, service: &str) -> Result<ServiceHandle, Error> {
        self.shared.slot(service).map(ServiceHandle::new)
    }

    /// Calls `method` of `service` with `input` and returns the answer. Looks the service up by
    /// name each time; keep a [`ServiceHandle`] to call it often.
    pub fn call(&self, service: &str, method: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.handle(service)?.call_to_vec(method, input)
    }

    /// The status of every service, sorted by name.
    pub fn status(&self) -> Vec<ServiceStatus> {
        let slots: Vec<Arc<Slot>> = self.shared.services.read().values().cloned().collect();
        let mut status: Vec<ServiceStatus> = slots.iter().map(|slot| slot.status()).collect();
        status.sort_by(|a, b| a.service.cmp(&b.service));
        status
    }

    /// How much is left of the per-process limits that plugin loads use up for good (pthread
    /// keys, memory mappings). A load is refused with [`Error::LoadBudgetExhausted`] before one
    /// runs out; see [`LoadBudget`](crate::LoadBudget).
    pub fn load_budget(&self) -> crate::LoadBudget {
        crate::LoadBudget::now()
    }

    /// Every plugin library that left service in this process (from any runtime) and stays
    /// mapped, with why and the memory it takes now. A retired library is unmapped only when
    /// no thread-exit work of its `std` points into it; see [`GenerationWatch::is_mapped`].
    pub fn retired_libraries(&self) -> Vec<crate::RetiredLibrary> {
        crate::loader::retained::retired()
    }

    /// How many retired plugin libraries this process unmapped, each after proving that no
    /// thread-exit work of its `std` pointed into it.
    pub fn unmapped_libraries(&self) -> u64 {
        crate::loader::retained::unmapped_count()
    }

    /// The status of `service`.
    pub fn service_status(&self, service: &str) -> Result<ServiceStatus, Error> {
        Ok(self.shared.slot(service)?.status())
    }

    /// The state of `service`, read without waiting for any operation on it.
    pub fn state(&self, service: &str) -> Result<ServiceState, Error> {
        Ok(self.shared.slot(service)?.current.load().state())
    }
}

/// The services' names and dependencies, owned, for the graph functions.
pub(crate) struct OwnedNodes(Vec<(String, Vec<String>)>);

impl OwnedNodes {
    pub fn as_nodes(&self) -> Vec<Node<'_>> {
        self.0
            .iter()
            .map(|(name, deps)| Node {
                name,
                depends_on: deps.iter().map(String::as_str).collect(),
            })
            .collect()
    }
}

impl Shared {
    pub(crate) fn slot(&self, service: &str) -> Result<Arc<Slot>, Error> {
        self.services
            .read()
            .get(service)
            .cloned()
            .ok_or_else(|| Error::UnknownService { service: service.to_owned() })
    }

    pub(crate) fn nodes_owned(&self) -> OwnedNodes {
        let services = self.services.read();
        OwnedNodes(
            services
                .values()
                .map(|slot| {
                    let deps = slot.dependencies.load().iter().map(|d| d.service.clone()).collect();
                    (slot.name.clone(), deps)
                })
                .collect(),
        )
    }

    fn load(&self, path: &Path, options: LoadOptions) -> Result<LoadReport, Error> {
        let started = Instant::now();
        let plugin = self.loader.load(path).inspect_err(refused(None))?;
        self.register(plugin, options, started)
    }

    /// Registers an already loaded plugin as a new service.
    fn register(
        &self,
        plugin: Plugin,
        options: LoadOptions,
        started: Instant,
    ) -> Result<LoadReport, Error> {
        let info = plugin.info().clone();
        // Hashed only for the state directory (before the plugin moves into the slot).
        let sha256 = self.store.as_ref().map(|_| plugin.sha256().to_owned()).unwrap_or_default();
        let name = options.name.clone().unwrap_or_else(|| info.service.clone());
        // Names become file names in the state directory: check every one that enters here.
        crate::validate_name(&name).inspect_err(refused(None))?;
        crate::validate_name(&info.service).inspect_err(refused(None))?;
        if let Ok(existing) = self.slot(&name) {
            return Err(Error::AlreadyLoaded {
                service: name,
                version: existing.info.read().plugin.info().plugin_version.clone(),
            });
        }
        let requirement = match self.requirements.get(&name) {
            Some(requirement) => requirement.clone(),
            None => gate::default_requirement(&info.interface_version),
        };
        gate::check_load(&info, &requirement).inspect_err(refused(None))?;
        let dependencies = Arc::new(merge(&plugin, &options.dependencies));
        validate_dependencies(&dependencies).inspect_err(refused(None))?;
        let control = Control {
            plugin: Arc::new(plugin),
            dependencies: Arc::clone(&dependencies),
            serving: None,
            pause_gate: None,
            history: VecDeque::new(),
            interface: Arc::from(info.interface.as_str()),
            requirement: Arc::new(requirement),
            host_dependencies: options.dependencies,
            wants_running: false,
            probation: None,
            unloaded: false,
        };
        let slot = Arc::new(Slot {
            name: name.clone(),
            current: ArcSwap::from_pointee(Lease::closed(ServiceState::Loaded)),
            dependencies: ArcSwap::new(Arc::clone(&dependencies)),
            healthy: AtomicBool::new(true),
            info: RwLock::new(Arc::new(SlotInfo::of(&control))),
            shared: self.me.clone(),
            control: Mutex::new(control),
        });
        {
            let mut services = self.services.write();
            if let Some(existing) = services.get(&name) {
                // Read without any lock: a control lock taken under this write lock could wait
                // for an operation that itself waits for a read lock here.
                let version = existing.info.read().plugin.info().plugin_version.clone();
                return Err(Error::AlreadyLoaded { service: name, version });
            }
            // Under the write lock, so that two loads cannot each miss the other's edges.
            let mut nodes: Vec<(String, Vec<String>)> = services
                .values()
                .map(|s| {
                    (
                        s.name.clone(),
                        s.dependencies.load().iter().map(|d| d.service.clone()).collect(),
                    )
                })
                .collect();
            nodes.push((name.clone(), dependencies.iter().map(|d| d.service.clone()).collect()));
            if let Some(cycle) = graph::find_cycle(&OwnedNodes(nodes).as_nodes()) {
                let error = Error::DependencyCycle { cycle: cycle.0 };
                refused(None)(&error);
                return Err(error);
            }
            services.insert(name.clone(), slot);
        }
        tracing::info!(
            service = %name,
            version = %info.plugin_version,
            interface = %info.interface,
            interface_version = %info.interface_version,
            path = %info.source.display(),
            "service loaded"
        );
        self.hooks.events.emit(&name, &info.plugin_version, EventKind::Loaded);
        if let Some(store) = &self.store
            && store.manifest(&name)?.is_none()
        {
            // The first build of a service is its first known-good one.
            let entry =
                store.archive(&name, &info.plugin_version.to_string(), &info.staged, &sha256)?;
            let manifest =
                crate::Manifest { service: name.clone(), current: entry.clone(), committed: entry };
            store.write(&manifest, "load")?;
        }
        Ok(LoadReport { service: name, info, took: started.elapsed() })
    }

    /// Creates and health-checks an instance of `plugin` serving as `service`.
    fn instantiate(&self, service: &str, plugin: &Arc<Plugin>) -> Result<Arc<Generation>, Error> {
        let _creating = crate::handle::Creating::enter(self.id, service);
        let id = GenerationId(self.next_generation.fetch_add(1, Ordering::Relaxed));
        let version = plugin.info().plugin_version.to_string();
        let host = host_api(self.id, &self.me, service, &version);
        let generation = Generation::start(
            Arc::clone(plugin),
            Arc::from(service),
            id,
            host,
            self.hooks.clone(),
        )?;
        if let Err(error) = generation.check_health() {
            // Destroyed on the retire thread; wait for it, so that a refused build is gone (its
            // staged file too) when the operation returns, as if it had never been loaded.
            let watch = generation.watch();
            drop(generation);
            let _ = watch.wait_retired(self.config.stop_deadline);
            return Err(error);
        }
        Ok(Arc::new(generation))
    }

    /// Checks that every one of `dependencies` runs at a satisfying interface version.
    fn check_dependencies(&self, service: &str, dependencies: &[Dependency]) -> Result<(), Error> {
        for dependency in dependencies {
            let Ok(slot) = self.slot(&dependency.service) else {
                return Err(Error::DependencyNotRunning {
                    service: service.to_owned(),
                    dependency: dependency.service.clone(),
                    state: None,
                });
            };
            let lease = slot.current.load();
            let Some(generation) = lease.generation().filter(|_| lease.state().is_up()) else {
                return Err(Error::DependencyNotRunning {
                    service: service.to_owned(),
                    dependency: dependency.service.clone(),
                    state: Some(lease.state()),
                });
            };
            let found = &generation.info().interface_version;
            if !dependency.requirement.matches(found) {
                return Err(Error::DependencyMismatch {
                    service: service.to_owned(),
                    dependency: dependency.service.clone(),
                    required: Box::new(dependency.requirement.clone()),
                    found: found.clone(),
                });
            }
        }
        Ok(())
    }

    /// The services that depend on `service` and have an instance (or are starting one).
    fn running_dependents(&self, service: &str) -> Vec<String> {
        let services = self.services.read();
        let mut dependents: Vec<String> = services
            .values()
            .filter(|slot| slot.dependencies.load().iter().any(|d| d.service == service))
            .filter(|slot| {
                let state = slot.current.load().state();
                state.is_up() || state == ServiceState::Starting
            })
            .map(|slot| slot.name.clone())
            .collect();
        dependents.sort();
        dependents
    }

    /// Starts `slot`. With `automatic` (the supervisor's restart after a failure), only if an
    /// operator still wants it running: a stop since the failure cancels the restart.
    pub(crate) fn start_one(&self, slot: &Slot, automatic: bool) -> Result<(), Error> {
        let mut control = slot.control.lock();
        let previous = slot.current.load().state();
        match previous {
            ServiceState::Running | ServiceState::Paused => return Ok(()),
            ServiceState::Failed | ServiceState::Starting => {
                return Err(Error::InvalidState {
                    service: slot.name.clone(),
                    operation: "start",
                    state: previous,
                });
            }
            ServiceState::Loaded | ServiceState::Stopped => {}
        }
        if automatic && !control.wants_running {
            return Ok(());
        }
        if control.unloaded {
            return Err(Error::UnknownService { service: slot.name.clone() });
        }
        control.wants_running = true;
        let gate = Gate::new();
        {
            // Checked and published as one step: a stop of a dependency cannot slip in between.
            let _dependencies = self.dependency_lock.lock();
            self.check_dependencies(&slot.name, &control.dependencies)?;
            slot.current.store(Arc::new(Lease::starting(Arc::clone(&gate))));
        }
        // Should host code panic before the outcome is published (a bug, but one that must not
        // leave the service starting for ever with every caller waiting on its gate), publish
        // the state before the start and open the gate on the way out.
        let _unwinding = OnUnwind::new(|| {
            slot.current.store(Arc::new(Lease::closed(previous)));
            gate.open();
        });
        #[cfg(test)]
        tests::panic_point("start/starting");
        let result = self.instantiate(&slot.name, &control.plugin);
        let outcome = match result {
            Ok(generation) => {
                let version = generation.version().clone();
                let id = generation.id();
                slot.current.store(Arc::new(Lease::serving(Arc::clone(&generation), None)));
                control.serving = Some(generation);
                control.probation = None;
                slot.healthy.store(true, Ordering::Relaxed);
                slot.refresh(&control);
                tracing::info!(service = %slot.name, version = %version, generation = %id, "service started");
                self.hooks.events.emit(&slot.name, &version, EventKind::Started { generation: id });
                let _ =
                    self.supervisor.send(SupervisorEvent::Started { service: slot.name.clone() });
                Ok(())
            }
            Err(error) => {
                slot.current.store(Arc::new(Lease::closed(previous)));
                let version = control.plugin.info().plugin_version.clone();
                tracing::warn!(service = %slot.name, version = %version, %error, "start failed");
                let _ = self.supervisor.send(SupervisorEvent::StartFailed {
                    service: slot.name.clone(),
                    version,
                    error: error.to_string(),
                });
                Err(error)
            }
        };
        // Calls waiting for the start read the new state.
        gate.open();
        outcome
    }

    /// Stops `slot`, unless services that depend on it run (those of a cascade are stopped in
    /// an earlier wave). The control lock is released before the wait for running calls, so
    /// nothing that needs it (the supervisor, another operation) can hold the drain up.
    pub(crate) fn stop_one(&self, slot: &Slot) -> Result<StopReport, Error> {
        let started = Instant::now();
        let mut control = slot.control.lock();
        control.wants_running = false;
        let _ = self.supervisor.send(SupervisorEvent::Stopped { service: slot.name.clone() });
        let state = slot.current.load().state();
        if control.serving.is_none() {
            return Ok(StopReport { service: slot.name.clone(), state, drained: true });
        }
        {
            let _dependencies = self.dependency_lock.lock();
            let dependents = self.running_dependents(&slot.name);
            if !dependents.is_empty() {
                return Err(Error::DependentsRunning { service: slot.name.clone(), dependents });
            }
            slot.current.store(Arc::new(Lease::closed(ServiceState::Stopped)));
        }
        let Some(serving) = control.serving.take() else {
            return Ok(StopReport { service: slot.name.clone(), state, drained: true });
        };
        control.probation = None;
        if let Some(gate) = control.pause_gate.take() {
            // Paused calls wake up, see the service stopped and fail at once.
            gate.open();
        }
        slot.refresh(&control);
        drop(control);
        let version = serving.version().clone();
        let watch = serving.watch();
        serving.retire();
        let deadline = self.config.stop_deadline;
        let drained = watch.wait_drained(deadline).is_ok()
            && watch.wait_retired(deadline.saturating_sub(started.elapsed())).is_ok();
        if !drained {
            tracing::warn!(service = %slot.name, version = %version, deadline = ?deadline,
                "stop deadline passed with calls still running; the instance is destroyed when they return");
        }
        tracing::info!(service = %slot.name, version = %version, drained, "service stopped");
        self.hooks.events.emit(&slot.name, &version, EventKind::Stopped);
        Ok(StopReport { service: slot.name.clone(), state: ServiceState::Stopped, drained })
    }

    pub(crate) fn restart_one(&self, slot: &Slot) -> Result<SwapReport, Error> {
        let started = Instant::now();
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        let Some(old) = control.serving.clone() else {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "restart",
                state,
            });
        };
        let generation = self.instantiate(&slot.name, &control.plugin)?;
        let version = generation.version().clone();
        let id = generation.id();
        // A restart during probation opens a new window for the new instance of the same build.
        let probation = control.probation.as_ref().and_then(|_| self.probation_for(&generation));
        let lease = match &control.pause_gate {
            Some(gate) => Lease::paused(Arc::clone(&generation), Arc::clone(gate)),
            None => Lease::serving(Arc::clone(&generation), probation.clone()),
        };
        slot.current.store(Arc::new(lease));
        control.serving = Some(generation);
        control.probation = probation.clone();
        slot.refresh(&control);
        drop(control);
        if let Some(probation) = probation {
            let _ = self
                .supervisor
                .send(SupervisorEvent::Probation { service: slot.name.clone(), probation });
        }
        let watch = old.watch();
        old.retire();
        tracing::info!(service = %slot.name, version = %version, generation = %id, "service restarted");
        self.hooks.events.emit(&slot.name, &version, EventKind::Restarted { generation: id });
        Ok(SwapReport {
            service: slot.name.clone(),
            from: version.clone(),
            to: version,
            generation: id,
            previous: watch,
            took: started.elapsed(),
        })
    }

    fn pause_one(&self, slot: &Slot) -> Result<(), Error> {
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        let Some(serving) = control.serving.clone().filter(|_| state == ServiceState::Running)
        else {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "pause",
                state,
            });
        };
        let gate = Gate::new();
        slot.current.store(Arc::new(Lease::paused(Arc::clone(&serving), Arc::clone(&gate))));
        control.pause_gate = Some(gate);
        tracing::info!(service = %slot.name, version = %serving.version(), "service paused");
        self.hooks.events.emit(&slot.name, serving.version(), EventKind::Paused);
        Ok(())
    }

    fn resume_one(&self, slot: &Slot) -> Result<(), Error> {
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        let (Some(serving), Some(gate)) = (control.serving.clone(), control.pause_gate.take())
        else {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "resume",
                state,
            });
        };
        // A window still open when the service was paused goes on counting.
        let probation = control.probation.clone();
        slot.current.store(Arc::new(Lease::serving(Arc::clone(&serving), probation)));
        gate.open();
        tracing::info!(service = %slot.name, version = %serving.version(), "service resumed");
        self.hooks.events.emit(&slot.name, serving.version(), EventKind::Resumed);
        Ok(())
    }

    fn reset_one(&self, slot: &Slot) -> Result<(), Error> {
        let _control = slot.control.lock();
        let state = slot.current.load().state();
        if state != ServiceState::Failed {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "reset",
                state,
            });
        }
        slot.current.store(Arc::new(Lease::closed(ServiceState::Stopped)));
        let _ = self.supervisor.send(SupervisorEvent::Reset { service: slot.name.clone() });
        Ok(())
    }

    /// Marks `slot` failed for good (the restart policy gave up); called by the supervisor.
    pub(crate) fn fail(&self, slot: &Slot, reason: &str) {
        let control = slot.control.lock();
        let state = slot.current.load().state();
        if state.is_up() || state == ServiceState::Failed || !control.wants_running {
            return;
        }
        slot.current.store(Arc::new(Lease::closed(ServiceState::Failed)));
        let version = control.plugin.info().plugin_version.clone();
        tracing::error!(service = %slot.name, version = %version, reason, "service failed");
        self.hooks.events.emit(
            &slot.name,
            &version,
            EventKind::Failed { reason: reason.to_owned() },
        );
    }

    fn swap_one(&self, slot: &Slot, path: &Path) -> Result<SwapReport, Error> {
        self.swap_to(slot, Candidate::Path(path), Requirement::Keep)
    }

    /// Swaps `slot` to a build given by its path or already loaded. With
    /// [`Requirement::Lift`] (a `replace`), the new build's interface version becomes the
    /// service's requirement instead of having to satisfy it.
    fn swap_to(
        &self,
        slot: &Slot,
        candidate: Candidate<'_>,
        requirement: Requirement,
    ) -> Result<SwapReport, Error> {
        let started = Instant::now();
        // The file work (open, checks, copy, `dlopen`) happens before the control lock is taken:
        // a slow or stuck file must never hold up a rollback or any other operation on the
        // service. A refused file is logged with the version serving now.
        let operation = match requirement {
            Requirement::Keep => "swap",
            Requirement::Lift => "replace",
        };
        let state = slot.current.load().state();
        if state != ServiceState::Running {
            return Err(Error::InvalidState { service: slot.name.clone(), operation, state });
        }
        let (plugin, same_version) = match candidate {
            Candidate::Path(path) => self
                .loader
                .load(path)
                .inspect_err(|error| {
                    let serving = slot.current.load().generation().map(|g| g.version().clone());
                    match serving {
                        Some(version) => refused(Some((&slot.name, &version)))(error),
                        None => refused(None)(error),
                    }
                })
                .map(|plugin| (plugin, false))?,
            Candidate::Loaded(plugin, same_version) => (*plugin, same_version),
        };
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        let Some(serving) = control.serving.clone().filter(|_| state == ServiceState::Running)
        else {
            return Err(Error::InvalidState { service: slot.name.clone(), operation, state });
        };
        let from = serving.version().clone();
        let refusal = refused(Some((&slot.name, &from)));
        let template = control.plugin.info().service.clone();
        let requirement = match requirement {
            Requirement::Keep => Arc::clone(&control.requirement),
            Requirement::Lift => {
                Arc::new(gate::default_requirement(&plugin.info().interface_version))
            }
        };
        match gate::check_swap(&template, &control.interface, &requirement, &from, plugin.info()) {
            // Same version is the gate's last rule: every other check has passed.
            Err(Error::SameVersion { .. }) if same_version => Ok(()),
            checked => checked,
        }
        .map_err(|e| rename(e, &template, &slot.name))
        .inspect_err(&refusal)?;
        let dependencies = Arc::new(merge(&plugin, &control.host_dependencies));
        validate_dependencies(&dependencies).inspect_err(&refusal)?;
        let interface_version = plugin.info().interface_version.clone();
        let plugin = Arc::new(plugin);
        let generation = self.instantiate(&slot.name, &plugin).inspect_err(&refusal)?;
        crate::fault::point("swap/created");
        let probation = self.probation_for(&generation);
        let previous = {
            // Checked and published as one step: no dependent can start, and no dependency
            // stop, between the checks and the publication.
            let _dependencies = self.dependency_lock.lock();
            self.check_dependents(&slot.name, &interface_version).inspect_err(&refusal)?;
            self.check_dependencies(&slot.name, &dependencies).inspect_err(&refusal)?;
            control.requirement = requirement;
            self.publish(slot, &mut control, generation, dependencies, probation.clone(), plugin)
        };
        drop(refusal);
        let to =
            control.serving.as_ref().map(|g| g.version().clone()).unwrap_or_else(|| from.clone());
        let id = control.serving.as_ref().map_or(GenerationId(0), |g| g.id());
        crate::fault::point("swap/published");
        if let (Some(store), Some(serving)) = (&self.store, &control.serving) {
            // The manifest names the new build current; the committed one is unchanged, so a
            // crash from here on comes back on the committed build whatever the file holds.
            let recorded = store.manifest(&slot.name).and_then(|manifest| {
                let current = store.archive(
                    &slot.name,
                    &to.to_string(),
                    &serving.info().staged,
                    serving.plugin().sha256(),
                )?;
                let committed = manifest.map_or_else(|| current.clone(), |m| m.committed);
                store.write(
                    &crate::Manifest { service: slot.name.clone(), current, committed },
                    "swap",
                )
            });
            if let Err(error) = recorded {
                tracing::error!(service = %slot.name, version = %to, %error, "recording the swap in the state directory failed");
            }
        }
        drop(control);
        if let Some(probation) = probation {
            let _ = self
                .supervisor
                .send(SupervisorEvent::Probation { service: slot.name.clone(), probation });
        }
        let took = started.elapsed();
        tracing::info!(service = %slot.name, from = %from, to = %to, generation = %id, took = ?took, "service swapped");
        self.hooks.events.emit(
            &slot.name,
            &to,
            EventKind::Swapped { from: from.clone(), generation: id },
        );
        Ok(SwapReport { service: slot.name.clone(), from, to, generation: id, previous, took })
    }

    fn probation_for(&self, generation: &Generation) -> Option<Arc<Probation>> {
        let policy = &self.config.probation;
        if policy.calls == 0 || policy.duration.is_zero() {
            return None;
        }
        Some(Arc::new(Probation::new(generation.id(), policy.clone(), Instant::now())))
    }

    /// Refuses an interface version that breaks the requirement of a running dependent.
    fn check_dependents(&self, service: &str, interface_version: &Version) -> Result<(), Error> {
        let services = self.services.read();
        let mut dependents: Vec<&Arc<Slot>> = services.values().collect();
        dependents.sort_by(|a, b| a.name.cmp(&b.name));
        for dependent in dependents {
            let state = dependent.current.load().state();
            if !(state.is_up() || state == ServiceState::Starting) {
                continue;
            }
            for dependency in dependent.dependencies.load().iter().filter(|d| d.service == service)
            {
                if !dependency.requirement.matches(interface_version) {
                    return Err(Error::BreaksDependent {
                        service: service.to_owned(),
                        dependent: dependent.name.clone(),
                        required: Box::new(dependency.requirement.clone()),
                        found: interface_version.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Rolls `slot` back; the caller holds its control lock. A paused service stays paused.
    fn rollback_locked(
        &self,
        slot: &Slot,
        control: &mut Control,
        reason: RollbackReason,
    ) -> Result<SwapReport, Error> {
        let started = Instant::now();
        let state = slot.current.load().state();
        let Some(serving) = control.serving.clone().filter(|_| state.is_up()) else {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "roll back",
                state,
            });
        };
        let Some((target, dependencies)) = control.history.front().cloned() else {
            return Err(Error::NoRollbackTarget { service: slot.name.clone() });
        };
        let from = serving.version().clone();
        let to = target.version().clone();
        let id = target.id();
        let plugin = Arc::clone(target.plugin());
        let interface_version = target.info().interface_version.clone();
        let previous = {
            // The gates of a swap, checked and published as one step under the same lock: a
            // rollback must not leave a running dependent on an interface it does not accept,
            // nor bring back a build whose dependencies do not run.
            let _dependencies = self.dependency_lock.lock();
            let refusal = refused(Some((&slot.name, &from)));
            self.check_dependents(&slot.name, &interface_version).inspect_err(&refusal)?;
            self.check_dependencies(&slot.name, &dependencies).inspect_err(&refusal)?;
            control.history.pop_front();
            if !control.requirement.matches(&interface_version) {
                // Rolling back across a `replace` goes back to the requirement of that build.
                control.requirement = Arc::new(gate::default_requirement(&interface_version));
            }
            self.publish(slot, control, target, dependencies, None, plugin)
        };
        let took = started.elapsed();
        match &reason {
            RollbackReason::Manual => {
                tracing::info!(service = %slot.name, from = %from, to = %to, generation = %id, took = ?took, "service rolled back")
            }
            RollbackReason::Automatic(why) => {
                tracing::warn!(service = %slot.name, from = %from, to = %to, generation = %id, why, "service rolled back automatically")
            }
        }
        self.hooks.events.emit(
            &slot.name,
            &to,
            EventKind::RolledBack { from: from.clone(), generation: id, reason },
        );
        Ok(SwapReport { service: slot.name.clone(), from, to, generation: id, previous, took })
    }

    /// Rolls `service` back from `generation` if that generation still serves, because `why`.
    /// With `wait` false (on a caller's thread) it gives up when the service is busy with another
    /// operation, and tells the supervisor to do it instead.
    pub(crate) fn auto_rollback(
        &self,
        slot: &Slot,
        generation: GenerationId,
        why: &str,
        wait: bool,
    ) {
        let mut control = match slot.control.try_lock() {
            Some(control) => control,
            None if wait => slot.control.lock(),
            None => {
                let _ = self.supervisor.send(SupervisorEvent::RollBack {
                    service: slot.name.clone(),
                    generation,
                    why: why.to_owned(),
                });
                return;
            }
        };
        let Some(serving) = control.serving.clone().filter(|g| g.id() == generation) else {
            return;
        };
        let Err(error) =
            self.rollback_locked(slot, &mut control, RollbackReason::Automatic(why.to_owned()))
        else {
            return;
        };
        // The verdict stands but cannot be carried out: close the window (calls stop paying
        // for its counters, and it is not judged again) and say so.
        if control.probation.as_ref().is_some_and(|p| p.generation == generation) {
            control.probation = None;
            if control.pause_gate.is_none() {
                slot.current.store(Arc::new(Lease::serving(Arc::clone(&serving), None)));
            }
        }
        drop(control);
        let version = serving.version().clone();
        drop(serving);
        tracing::error!(service = %slot.name, version = %version, %error, why, "automatic rollback refused; the build keeps serving");
        self.hooks.events.emit(
            &slot.name,
            &version,
            EventKind::RollbackRefused {
                from: version.clone(),
                generation,
                reason: why.to_owned(),
                error: error.to_string(),
            },
        );
    }

    /// Removes `slot` from the registry; see [`Runtime::unload`].
    fn unload_one(&self, slot: &Arc<Slot>) -> Result<(), Error> {
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        if control.unloaded {
            return Err(Error::UnknownService { service: slot.name.clone() });
        }
        if control.serving.is_some()
            || !matches!(state, ServiceState::Loaded | ServiceState::Stopped | ServiceState::Failed)
        {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "unload",
                state,
            });
        }
        {
            // The check and the removal happen under the registry's write lock, which a load
            // takes to register a service: no dependent can be loaded in between.
            let _dependencies = self.dependency_lock.lock();
            let mut services = self.services.write();
            let mut dependents: Vec<String> = services
                .values()
                .filter(|other| other.name != slot.name)
                .filter(|other| other.dependencies.load().iter().any(|d| d.service == slot.name))
                .map(|other| other.name.clone())
                .collect();
            if !dependents.is_empty() {
                dependents.sort();
                return Err(Error::DependentsLoaded { service: slot.name.clone(), dependents });
            }
            if services.get(&slot.name).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                services.remove(&slot.name);
            }
        }
        control.unloaded = true;
        control.wants_running = false;
        let _ = self.supervisor.send(SupervisorEvent::Stopped { service: slot.name.clone() });
        slot.current.store(Arc::new(Lease::closed(ServiceState::Stopped)));
        let history: Vec<_> = control.history.drain(..).collect();
        slot.refresh(&control);
        let version = control.plugin.info().plugin_version.clone();
        drop(control);
        for (generation, _) in history {
            generation.retire();
        }
        tracing::info!(service = %slot.name, version = %version, "service unloaded");
        self.hooks.events.emit(&slot.name, &version, EventKind::Unloaded);
        Ok(())
    }

    /// Records the serving build of `slot` as committed (and current) in the state directory.
    pub(crate) fn commit(&self, slot: &Slot) -> Result<(), Error> {
        let Some(store) = &self.store else {
            return Err(Error::NoStateDir);
        };
        let control = slot.control.lock();
        let state = slot.current.load().state();
        let Some(serving) = control.serving.clone() else {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "commit",
                state,
            });
        };
        crate::fault::point("commit/start");
        let entry = store.archive(
            &slot.name,
            &serving.version().to_string(),
            &serving.info().staged,
            serving.plugin().sha256(),
        )?;
        let manifest = crate::Manifest {
            service: slot.name.clone(),
            current: entry.clone(),
            committed: entry,
        };
        store.write(&manifest, "commit")?;
        drop(control);
        tracing::info!(service = %slot.name, version = %serving.version(), "build committed");
        Ok(())
    }

    /// Republishes `service`'s `generation` without probation once its window passed.
    pub(crate) fn end_probation(&self, slot: &Slot, generation: GenerationId) {
        let mut control = slot.control.lock();
        let open = control.probation.as_ref().is_some_and(|p| p.generation == generation);
        let Some(serving) = control.serving.clone().filter(|g| g.id() == generation && open) else {
            return;
        };
        control.probation = None;
        if control.pause_gate.is_none() {
            slot.current.store(Arc::new(Lease::serving(Arc::clone(&serving), None)));
        }
        drop(control);
        if self.config.commit_after_probation
            && let Err(error) = self.commit(slot)
        {
            tracing::error!(service = %slot.name, %error, "committing after probation failed");
        }
        tracing::info!(service = %slot.name, version = %serving.version(), generation = %generation, "probation passed");
        self.hooks.events.emit(
            &slot.name,
            serving.version(),
            EventKind::ProbationPassed { generation },
        );
    }

    /// Publishes `generation` for `slot` (paused if the service is paused), pushes the one it
    /// replaces onto the history and retires what falls off the end of it. Returns a watch on
    /// the replaced generation.
    fn publish(
        &self,
        slot: &Slot,
        control: &mut Control,
        generation: Arc<Generation>,
        dependencies: Arc<Vec<Dependency>>,
        probation: Option<Arc<Probation>>,
        plugin: Arc<Plugin>,
    ) -> GenerationWatch {
        control.plugin = plugin;
        let lease = match &control.pause_gate {
            Some(gate) => Lease::paused(Arc::clone(&generation), Arc::clone(gate)),
            None => Lease::serving(Arc::clone(&generation), probation.clone()),
        };
        slot.current.store(Arc::new(lease));
        control.probation = probation;
        // Most publications keep the dependencies: skip the store (and its wait for readers).
        if **slot.dependencies.load() != *dependencies {
            slot.dependencies.store(Arc::clone(&dependencies));
        }
        let old_dependencies = std::mem::replace(&mut control.dependencies, dependencies);
        let old = control.serving.replace(generation);
        // `publish` is only called with a generation serving (checked by the callers).
        let Some(old) = old else {
            slot.refresh(control);
            return GenerationWatch::detached();
        };
        let watch = old.watch();
        control.history.push_front((old, old_dependencies));
        let excess = control.history.len().saturating_sub(self.config.history_depth);
        let retired: Vec<_> = (0..excess).filter_map(|_| control.history.pop_back()).collect();
        // Refreshed first, so that the status snapshot holds no retired generation.
        slot.refresh(control);
        for (generation, _) in retired {
            generation.retire();
        }
        watch
    }

    fn start_set(&self, names: &[String]) -> Result<crate::BatchReport, Error> {
        self.run_set("start", names, false, |shared, slot| shared.start_one(slot, false))
    }

    fn stop_set(&self, names: &[String]) -> Result<crate::BatchReport, Error> {
        self.run_set("stop", names, true, |shared, slot| shared.stop_one(slot).map(|_| ()))
    }

    /// Runs `op` on the services `names`, in dependency waves (reversed for `reverse`), each wave
    /// in parallel under the concurrency limit.
    fn run_set(
        &self,
        operation: &'static str,
        names: &[String],
        reverse: bool,
        op: impl Fn(&Shared, &Slot) -> Result<(), Error> + Sync,
    ) -> Result<crate::BatchReport, Error> {
        let nodes = self.nodes_owned();
        let all = nodes.as_nodes();
        let chosen: Vec<Node<'_>> =
            all.into_iter().filter(|n| names.iter().any(|m| m == n.name)).collect();
        for name in names {
            self.slot(name)?;
        }
        let waves = if reverse { graph::stop_waves(&chosen) } else { graph::start_waves(&chosen) }
            .map_err(|cycle| Error::DependencyCycle { cycle: cycle.0 })?;
        crate::batch::run_waves(self, operation, waves, self.config.concurrency, op)
    }
}

/// What a swap does with the service's interface requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Requirement {
    /// The new build must satisfy it (a swap).
    Keep,
    /// The new build's interface version becomes it (a replace): a breaking change, shipped
    /// knowingly, still checked against running dependents.
    Lift,
}

/// A build to swap to: a file to load, or a plugin loaded already (with whether a build of the
/// version serving may replace it: the watcher's development mode).
enum Candidate<'a> {
    Path(&'a Path),
    Loaded(Box<Plugin>, bool),
}

/// What [`Shared::install`] did with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Installed {
    /// A new service, loaded and started.
    Started { service: String, version: Version },
    /// A new or known service loaded, whose start waits for a dependency.
    Waiting { service: String, version: Version, dependency: String },
    /// A running service swapped to the file's build.
    Swapped { service: String, from: Version, to: Version },
    /// The file holds the build the service runs already.
    Unchanged { service: String, version: Version },
    /// The file holds another build of the version serving (left serving: bump the version).
    SameVersionChanged { service: String, version: Version },
    /// Another watched file holds a higher version of the service: left as it is.
    Superseded { service: String, version: Version },
}

/// How [`Shared::install`] treats a file.
pub(crate) struct InstallOptions<'a> {
    /// Swap in a changed build of the version serving (development mode).
    pub development: bool,
    /// Whether another source holds a higher version of the service than this one.
    pub superseded: &'a dyn Fn(&str, &Version) -> bool,
}

impl Shared {
    /// Brings the build `file` was opened on into service, whatever the service's situation: a new service
    /// is loaded and started, a running one swapped (through the same gate as a manual swap),
    /// one that is loaded but waits for a dependency is started. Used by the watcher.
    pub(crate) fn install(
        &self,
        file: &crate::loader::file::Source,
        options: &InstallOptions<'_>,
    ) -> Result<Installed, Error> {
        let started = Instant::now();
        let plugin = self.loader.load_opened(file).inspect_err(refused(None))?;
        let service = plugin.info().service.clone();
        let version = plugin.info().plugin_version.clone();
        if (options.superseded)(&service, &version) {
            return Ok(Installed::Superseded { service, version });
        }
        let slot = match self.slot(&service) {
            Ok(slot) => slot,
            Err(_) => {
                self.register(plugin, LoadOptions::default(), started)?;
                let slot = self.slot(&service)?;
                return self.start_installed(&slot, service, version);
            }
        };
        let serving =
            slot.current.load().generation().map(|g| (g.version().clone(), Arc::clone(g.plugin())));
        let known = slot.info.read().plugin.info().plugin_version.clone();
        let state = slot.current.load().state();
        match (serving, state) {
            // The hashes are computed here, and only when the versions match.
            (Some((current, serving)), _)
                if current == version && serving.sha256() == plugin.sha256() =>
            {
                Ok(Installed::Unchanged { service, version })
            }
            (Some((current, _)), ServiceState::Running)
                if current == version && options.development =>
            {
                let report = self.swap_to(
                    &slot,
                    Candidate::Loaded(Box::new(plugin), true),
                    Requirement::Keep,
                )?;
                Ok(Installed::Swapped { service, from: report.from, to: report.to })
            }
            (Some((current, _)), _) if current == version => {
                Ok(Installed::SameVersionChanged { service, version })
            }
            (Some(_), ServiceState::Running) => {
                let report = self.swap_to(
                    &slot,
                    Candidate::Loaded(Box::new(plugin), false),
                    Requirement::Keep,
                )?;
                Ok(Installed::Swapped { service, from: report.from, to: report.to })
            }
            (None, ServiceState::Loaded | ServiceState::Stopped) if known == version => {
                drop(plugin);
                self.start_installed(&slot, service, version)
            }
            (_, state) => Err(Error::InvalidState { service, operation: "install", state }),
        }
    }

    fn start_installed(
        &self,
        slot: &Slot,
        service: String,
        version: Version,
    ) -> Result<Installed, Error> {
        match self.start_one(slot, false) {
            Ok(()) => Ok(Installed::Started { service, version }),
            Err(Error::DependencyNotRunning { dependency, .. }) => {
                Ok(Installed::Waiting { service, version, dependency })
            }
            Err(error) => Err(error),
        }
    }
}

/// Replaces the descriptor's service name by the slot's in a gate error, for aliased services.
fn rename(error: Error, template: &str, name: &str) -> Error {
    if template == name {
        return error;
    }
    match error {
        Error::IncompatibleInterface { required, found, plugin_version, .. } => {
            Error::IncompatibleInterface {
                service: name.to_owned(),
                required,
                found,
                plugin_version,
            }
        }
        Error::SameVersion { version, .. } => {
            Error::SameVersion { service: name.to_owned(), version }
        }
        other => other,
    }
}

/// Runs its closure if it is dropped while its thread unwinds from a panic that began after it
/// was made, and does nothing otherwise: the clean-up of a step that a normal return finishes
/// by itself.
struct OnUnwind<F: FnMut()> {
    restore: F,
    /// Whether the thread was unwinding already when the guard was made (an operation run from
    /// a destructor during a panic): then only a normal return is possible here, not a new
    /// unwind of this step.
    unwinding_before: bool,
}

impl<F: FnMut()> OnUnwind<F> {
    fn new(restore: F) -> Self {
        OnUnwind { restore, unwinding_before: std::thread::panicking() }
    }
}

impl<F: FnMut()> Drop for OnUnwind<F> {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.unwinding_before {
            (self.restore)();
        }
    }
}

/// Checks every dependency's name against the naming rule.
fn validate_dependencies(dependencies: &[Dependency]) -> Result<(), Error> {
    dependencies.iter().try_for_each(|d| crate::validate_name(&d.service))
}

/// The dependencies of a build: its descriptor's, overridden and extended by the host's.
fn merge(plugin: &Plugin, host: &[Dependency]) -> Vec<Dependency> {
    let mut merged: Vec<Dependency> = plugin
        .dependencies()
        .iter()
        .filter(|d| !host.iter().any(|h| h.service == d.service))
        .cloned()
        .collect();
    merged.extend(host.iter().cloned());
    merged
}

/// Logs a refused load or swap, with the service and its serving version when known.
fn refused<'a>(serving: Option<(&'a str, &'a Version)>) -> impl Fn(&Error) + 'a {
    move |error| match serving {
        Some((service, version)) => {
            tracing::warn!(service, version = %version, %error, "swap refused; the serving version is untouched")
        }
        None => tracing::warn!(%error, "load refused"),
    }
}

impl Slot {
    /// Stores what `status` reports, after an operation changed `control`.
    fn refresh(&self, control: &Control) {
        let info = Arc::new(SlotInfo::of(control));
        // The old snapshot is dropped after the lock is released.
        let _old = std::mem::replace(&mut *self.info.write(), info);
    }

    fn status(&self) -> ServiceStatus {
        let info = Arc::clone(&self.info.read());
        ServiceStatus {
            service: self.name.clone(),
            state: self.current.load().state(),
            version: info.plugin.info().plugin_version.clone(),
            interface: info.interface.to_string(),
            requirement: VersionReq::clone(&info.requirement),
            dependencies: info.dependencies.to_vec(),
            current: info.current.as_deref().map(GenerationStatus::of),
            history: info.history.iter().map(|g| GenerationStatus::of(g)).collect(),
            healthy: self.healthy.load(Ordering::Relaxed),
        }
    }
}

/// What [`Runtime::load`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadReport {
    /// The service registered.
    pub service: String,
    /// What the plugin declares.
    pub info: PluginInfo,
    /// How long the load took, checks included.
    pub took: Duration,
}

/// What [`Runtime::stop`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StopReport {
    /// The service.
    pub service: String,
    /// Its state now.
    pub state: ServiceState,
    /// Whether every running call returned, and the instance was destroyed, within the stop
    /// deadline. If not, the instance is destroyed when the last call returns.
    pub drained: bool,
}

/// What [`Runtime::swap`], [`Runtime::rollback`] or [`Runtime::restart`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SwapReport {
    /// The service.
    pub service: String,
    /// The version that served before.
    pub from: Version,
    /// The version serving now.
    pub to: Version,
    /// The generation serving now.
    pub generation: GenerationId,
    /// The generation that served before: wait on it for its drain.
    pub previous: GenerationWatch,
    /// How long the operation took, up to the publication.
    pub took: Duration,
}

/// A service's state, for operators.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// The service's name.
    pub service: String,
    /// Its lifecycle state.
    pub state: ServiceState,
    /// The version of the build it runs or would start.
    pub version: Version,
    /// The interface it implements.
    pub interface: String,
    /// The interface requirement every new build must satisfy.
    pub requirement: VersionReq,
    /// The services it depends on.
    pub dependencies: Vec<Dependency>,
    /// The generation serving calls (running or paused), if any.
    pub current: Option<GenerationStatus>,
    /// Earlier generations kept loaded for rollback, most recent first.
    pub history: Vec<GenerationStatus>,
    /// The outcome of the last periodic health check (true before the first).
    pub healthy: bool,
}

/// One generation, for operators.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GenerationStatus {
    /// Its id.
    pub id: GenerationId,
    /// The plugin version.
    pub version: Version,
    /// The interface version.
    pub interface_version: Version,
    /// The `graft-plugin-api` version it was built with.
    pub api_version: Version,
    /// How it was built: `Some(BuildProfile::Debug)` for a build without optimisations; `None`
    /// when the plugin does not say (built with `graft-plugin-api` before 0.3).
    pub build_profile: Option<crate::BuildProfile>,
    /// The file it was loaded from.
    pub source: PathBuf,
    /// The staged copy that is mapped.
    pub staged: PathBuf,
    /// The SHA-256 of the library (hex), where the runtime computed it: when the build was
    /// archived in the state directory, or when the watcher compared it with another build of
    /// the same version (see [`WatchOptions::development`](crate::WatchOptions::development)).
    /// Hashing every build would cost as much as the rest of a swap, so it is not done
    /// otherwise.
    pub sha256: Option<String>,
}

impl GenerationStatus {
    fn of(generation: &Generation) -> Self {
        let info = generation.info();
        GenerationStatus {
            id: generation.id(),
            version: info.plugin_version.clone(),
            interface_version: info.interface_version.clone(),
            api_version: info.api_version.clone(),
            build_profile: info.build_profile,
            source: info.source.clone(),
            staged: info.staged.clone(),
            sha256: generation.plugin().known_sha256().map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    thread_local! {
        /// The host-side step at which this thread's next operation panics, if any.
        static PANIC_AT: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    /// Panics here if this thread asked for a panic at `name`: a stand-in for a host-side bug.
    pub(super) fn panic_point(name: &'static str) {
        if PANIC_AT.with(|at| at.get() == Some(name)) {
            PANIC_AT.with(|at| at.set(None));
            panic!("injected panic at {name}");
        }
    }

    #[test]
    fn on_unwind_runs_only_when_its_thread_panics() {
        let ran = Cell::new(0);
        drop(OnUnwind::new(|| ran.set(ran.get() + 1)));
        assert_eq!(ran.get(), 0, "a normal return must not run the clean-up");
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let _guard = OnUnwind::new(|| ran.set(ran.get() + 1));
            panic!("boom");
        }));
        assert!(outcome.is_err());
        assert_eq!(ran.get(), 1);
    }

    /// A host-side panic after the starting lease was published left the service starting for
    /// ever, so every call waited for a start that had died.
    #[test]
    fn a_host_panic_during_a_start_does_not_leave_the_service_starting() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::builder()
            .staging_dir(dir.path())
            // A call that waited for the gate would fail the test by its error, not hang it.
            .call_deadline(Duration::from_secs(60))
            .build()
            .unwrap();
        let path = graft_tests::path(graft_tests::Fixture::Worker).unwrap();
        runtime.load(&path).unwrap();
        PANIC_AT.with(|at| at.set(Some("start/starting")));
        let outcome = catch_unwind(AssertUnwindSafe(|| runtime.start("worker")));
        assert!(outcome.is_err(), "the injected panic did not happen");
        assert_eq!(runtime.state("worker").unwrap(), ServiceState::Loaded);
        // The gate is open and the lease closed: the call fails at once instead of waiting.
        assert!(matches!(runtime.call("worker", "noop", b""), Err(Error::Stopped { .. })));
        runtime.start("worker").unwrap();
        assert_eq!(runtime.call("worker", "whoami", b"").unwrap(), b"worker 1.0.0");
    }
}
