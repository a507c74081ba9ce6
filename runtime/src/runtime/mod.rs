//! The [`Runtime`]: the services it holds, and the operations on each of them.
//!
//! Each service has a [`Slot`]: an `ArcSwap` of the lease callers read (which carries the state
//! and, when serving, the call target) and a control lock that serialises the operations on
//! that service. An operation on one service never takes another service's control lock: what
//! it needs to know about others (their state, interface version, dependencies) it reads
//! lock-free from their leases and dependency lists.
//!
//! The operations live in modules named after what they own: [`builder`] makes the runtime,
//! [`slot`] holds a service's state and publishes it, [`lifecycle`] loads, starts, stops and
//! unloads, [`swap`] replaces builds and rolls them back, [`status`] holds what they report.

mod builder;
mod canary;
mod handoff;
mod interfaces;
mod lifecycle;
mod slot;
mod status;
mod swap;

pub use builder::{
    DEFAULT_CALL_DEADLINE, DEFAULT_DRAIN_DEADLINE, DEFAULT_HEALTH_INTERVAL, DEFAULT_HISTORY_DEPTH,
    DEFAULT_STOP_DEADLINE, RuntimeBuilder,
};
pub use lifecycle::LoadOptions;
pub(crate) use slot::Slot;
pub use status::{
    CanaryStatus, Dependency, GenerationStatus, LoadReport, ServiceState, ServiceStatus,
    StopReport, SwapReport,
};
pub(crate) use swap::{InstallOptions, Installed};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use semver::VersionReq;

use crate::Error;
use crate::events::RollbackReason;
use crate::generation::Hooks;
use crate::graph::{self, Node};
use crate::handle::ServiceHandle;
use crate::loader::Loader;
use crate::loader::staging::StagingLock;
use crate::reaper::Reaper;
use crate::supervisor::{Supervisor, SupervisorEvent};
use builder::Config;
use swap::{Candidate, Requirement};

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
    /// The typed interfaces the host's clients of each service were compiled against
    /// ([`Runtime::client`], [`Runtime::require_interface`]): every later load, swap and rollback of the
    /// service is checked against each.
    interfaces: RwLock<HashMap<String, crate::typed::Expected>>,
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
    /// [`ServiceState::Loaded`]; [`Runtime::start`] starts it. With a state directory holding a
    /// saved state for the service, its start creates it from that state (see
    /// [`Runtime::restore`]).
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

    /// Shuts the services down gracefully: stops every one, dependents first, in waves, as
    /// [`Runtime::stop_all`]. Stopping a stateful service exports its state and, with a state
    /// directory, saves it there (atomically) for [`Runtime::restore`]; a stateful service
    /// whose state cannot be exported or saved is not stopped, and the batch's error says so.
    /// Dropping a runtime without a shutdown saves no state.
    pub fn shutdown(&self) -> Result<crate::BatchReport, Error> {
        self.stop_all()
    }

    /// Saves the state of the stateful `service` in the state directory now, and lets it
    /// serve on: its calls are held back while the running ones return (a pause, as in a
    /// stateful swap, of at most half the call deadline), its state is exported, and the
    /// file is written atomically after the calls are let through again. A crash loses what
    /// changed since the last save (or stop): a host that calls this periodically bounds
    /// that. [`Error::NoStateDir`] without a state directory, [`Error::Stateless`] for a
    /// stateless service.
    pub fn save_state(&self, service: &str) -> Result<(), Error> {
        let slot = self.shared.slot(service)?;
        self.shared.save_state(&slot)
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

    /// Brings the build at `path` into `service` by `strategy`: as [`Runtime::swap`]
    /// ([`SwapStrategy::Immediate`](crate::SwapStrategy::Immediate)), or as a canary
    /// ([`SwapStrategy::Canary`](crate::SwapStrategy::Canary)).
    ///
    /// A canary passes every check of a swap (the gate, its dependencies, its running
    /// dependents, its creation and health check) and is then published beside the build
    /// serving, which keeps the other calls. Its calls are judged by its policy: once it has
    /// answered [`CanaryPolicy::calls`](crate::CanaryPolicy::calls) calls within the thresholds
    /// it is promoted, as if swapped in (with no probation window after); as soon as they are
    /// exceeded it is aborted and retired. Its health is checked with the build serving's
    /// (every health interval) and once more before any promotion: a failed check aborts it.
    /// [`Runtime::promote`] and [`Runtime::abort`] do either by hand. Events report each step, and [`ServiceStatus::canary`] shows it. While a canary
    /// runs, swap, replace, restart and rollback are refused with
    /// [`Error::CanaryInProgress`]; a stop aborts it. A stateful service is never released as a
    /// canary ([`Error::StatefulCanary`]): its state cannot be split between two builds.
    pub fn swap_with(
        &self,
        service: &str,
        path: impl AsRef<Path>,
        strategy: crate::SwapStrategy,
    ) -> Result<SwapReport, Error> {
        let slot = self.shared.slot(service)?;
        let canary = match &strategy {
            crate::SwapStrategy::Canary(policy) => Some(policy),
            crate::SwapStrategy::Immediate => None,
        };
        self.shared.swap_to(&slot, Candidate::Path(path.as_ref()), Requirement::Keep, canary)
    }

    /// Promotes the canary of `service` now: it takes every call, and the build before it goes
    /// to the history. [`Error::NoCanary`] if no canary runs. Its health is checked first: if
    /// the check fails the canary is aborted and that error ([`Error::HealthCheckFailed`]) is
    /// returned.
    pub fn promote(&self, service: &str) -> Result<SwapReport, Error> {
        let slot = self.shared.slot(service)?;
        self.shared.promote(&slot, None)
    }

    /// Aborts the canary of `service` now: no new call goes to it, and it is retired once its
    /// running calls return (the watch returned tells when). [`Error::NoCanary`] if no canary
    /// runs.
    pub fn abort(&self, service: &str) -> Result<crate::GenerationWatch, Error> {
        let slot = self.shared.slot(service)?;
        self.shared.abort(&slot, None, "aborted by an operator")
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
        self.shared.swap_to(&slot, Candidate::Path(path.as_ref()), Requirement::Lift, None)
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
    ///
    /// A stateful service is created from the state it last saved (at its stop, the runtime's
    /// [`Runtime::shutdown`], or [`Runtime::save_state`]), which its committed build may have
    /// to migrate. A state file that does not parse is [`Error::StateFile`], and a state the
    /// build refuses or fails to import fails that service's start ([`Error::StateRefused`],
    /// [`Error::StateImportFailed`]), unless the runtime was built with
    /// [`RuntimeBuilder::start_empty_on_bad_state`]: then the service starts empty.
    pub fn restore(&self) -> Result<crate::BatchReport, Error> {
        self.shared.restore()
    }

    /// A typed client of `service`: `runtime.client::<KvClient<_>>("kv")` for the client that
    /// `#[graft_plugin_api::interface]` generated for trait `Kv`.
    ///
    /// The build the service runs (or will start) is checked first: it must implement the
    /// client's interface, and have each of its methods with the same signature, or this fails
    /// with [`Error::IncompatibleMethod`] (or [`Error::UntypedBuild`], [`Error::InterfaceMismatch`]).
    /// The interface is then remembered for the service, as [`Runtime::require_interface`] does: a later
    /// swap, replace or rollback to a build that lacks one of those methods, or changed its
    /// signature, is refused with the same error, so the client keeps working whatever the
    /// service is swapped to.
    pub fn client<C: graft_plugin_api::Client<ServiceHandle>>(
        &self,
        service: &str,
    ) -> Result<C, Error> {
        let slot = self.shared.slot(service)?;
        let interface = crate::InterfaceInfo::of::<C::Interface>()?;
        self.shared.require_interface(&slot, interface)?;
        Ok(C::with_transport(ServiceHandle::new(slot)))
    }

    /// Declares that the host calls `service` through interface `I` (`dyn Trait`), before or
    /// after the service is loaded: its load (if it comes later), every swap, replace and
    /// rollback are refused when the build lacks one of `I`'s methods or changed its signature
    /// ([`Error::IncompatibleMethod`]). A loaded service's build is checked at once.
    pub fn require_interface<I: ?Sized + graft_plugin_api::typed::Interface>(
        &self,
        service: &str,
    ) -> Result<(), Error> {
        let interface = crate::InterfaceInfo::of::<I>()?;
        match self.shared.slot(service) {
            Ok(slot) => self.shared.require_interface(&slot, interface),
            Err(Error::UnknownService { .. }) => {
                self.shared.remember_interface(service, interface);
                Ok(())
            }
            Err(error) => Err(error),
        }
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
    /// no thread-exit work of its `std` points into it; see
    /// [`GenerationWatch::is_mapped`](crate::GenerationWatch::is_mapped).
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
