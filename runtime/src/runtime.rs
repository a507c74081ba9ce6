//! The [`Runtime`]: the services it holds, and the load, swap and rollback operations on them.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use semver::{Version, VersionReq};

use crate::Error;
use crate::gate;
use crate::generation::{Generation, GenerationId, GenerationWatch, Lease};
use crate::handle::ServiceHandle;
use crate::loader::{Loader, PluginInfo};
use crate::reaper::Reaper;

/// The default number of earlier generations kept loaded per service.
pub const DEFAULT_HISTORY_DEPTH: usize = 1;
/// The default time after which a drain that has not finished is reported.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Configures a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    staging_dir: Option<PathBuf>,
    history_depth: usize,
    drain_deadline: Duration,
    requirements: HashMap<String, VersionReq>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            staging_dir: None,
            history_depth: DEFAULT_HISTORY_DEPTH,
            drain_deadline: DEFAULT_DRAIN_DEADLINE,
            requirements: HashMap::new(),
        }
    }
}

impl RuntimeBuilder {
    /// Stages plugin copies in `dir` (created if missing) instead of a private temporary
    /// directory that is removed with the runtime.
    pub fn staging_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.staging_dir = Some(dir.into());
        self
    }

    /// Keeps `depth` earlier generations of each service loaded as rollback targets (default 1).
    /// With 0, a swap cannot be rolled back.
    pub fn history_depth(mut self, depth: usize) -> Self {
        self.history_depth = depth;
        self
    }

    /// Reports (without forcing anything) a retired generation whose calls have not all
    /// returned after `deadline` (default 30 s).
    pub fn drain_deadline(mut self, deadline: Duration) -> Self {
        self.drain_deadline = deadline;
        self
    }

    /// Requires every build of `service` to implement an interface version matching
    /// `requirement`. Without one, a service requires `^` the interface version it was first
    /// loaded with.
    pub fn require(mut self, service: impl Into<String>, requirement: VersionReq) -> Self {
        self.requirements.insert(service.into(), requirement);
        self
    }

    /// Creates the runtime and starts its background thread.
    pub fn build(self) -> Result<Runtime, Error> {
        let (staging, _temp) = match self.staging_dir {
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
                    .prefix("graft-staging-")
                    .tempdir()
                    .map_err(|source| Error::Io {
                        action: "creating a staging directory in",
                        path: std::env::temp_dir(),
                        source,
                    })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let reaper = Reaper::start(self.drain_deadline)?;
        Ok(Runtime {
            services: RwLock::new(HashMap::new()),
            loader: Loader::new(staging.clone()),
            next_generation: AtomicU64::new(1),
            history_depth: self.history_depth,
            requirements: self.requirements,
            staging,
            reaper,
            _temp,
        })
    }
}

/// The host side of graft: holds services loaded from plugins and replaces them while calls
/// keep flowing.
///
/// All operations take `&self`; share a runtime between threads with an `Arc`. Operations on
/// one service (swap, rollback) are serialised by that service's own lock and never block
/// operations on another service or any call.
///
/// # Trust
/// Loading a plugin runs its library initialisers and then its code inside this process. The
/// runtime checks a file's format before loading it and the plugin's declared ABI and versions
/// after, but it cannot make a malicious or broken library safe: load only files you trust.
#[derive(Debug)]
pub struct Runtime {
    services: RwLock<HashMap<String, Arc<Slot>>>,
    loader: Loader,
    next_generation: AtomicU64,
    history_depth: usize,
    requirements: HashMap<String, VersionReq>,
    staging: PathBuf,
    // Dropped before `_temp`: the reaper's last unloads remove staged files inside it.
    reaper: Reaper,
    _temp: Option<tempfile::TempDir>,
}

/// One service: the lease callers read, and the control state operations change.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: String,
    /// The published generation. Calls `load()` it; swaps and rollbacks `swap()` it.
    pub(crate) current: ArcSwap<Lease>,
    /// Held for the whole of an operation on this service, so two never interleave.
    control: Mutex<Control>,
}

#[derive(Debug)]
struct Control {
    /// The generation `current` publishes.
    serving: Arc<Generation>,
    /// Earlier generations kept loaded as rollback targets, most recent first.
    history: VecDeque<Arc<Generation>>,
    interface: String,
    requirement: VersionReq,
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
        &self.staging
    }

    /// Loads the plugin at `path` as a new service, named by its descriptor.
    ///
    /// The file is checked, staged, loaded and checked again; an instance is created and must
    /// pass its health check before the service is published.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<LoadReport, Error> {
        let started = Instant::now();
        let plugin = self.loader.load(path.as_ref()).inspect_err(refused(None))?;
        let info = plugin.info().clone();
        if let Some(version) = self.serving_version(&info.service) {
            return Err(Error::AlreadyLoaded {
                service: info.service,
                version,
            });
        }
        let requirement = match self.requirements.get(&info.service) {
            Some(requirement) => requirement.clone(),
            None => gate::default_requirement(&info.interface_version),
        };
        gate::check_load(&info, &requirement).inspect_err(refused(None))?;
        let generation = self.start(plugin).inspect_err(refused(None))?;
        let slot = Arc::new(Slot {
            name: info.service.clone(),
            current: ArcSwap::from_pointee(Lease::new(Arc::clone(&generation))),
            control: Mutex::new(Control {
                serving: Arc::clone(&generation),
                history: VecDeque::new(),
                interface: info.interface.clone(),
                requirement,
            }),
        });
        {
            let mut services = self.services.write();
            if let Some(existing) = services.get(&info.service) {
                // Lock-free: `control` may be held by a swap, which must not stall every lookup
                // behind this write lock.
                let version = existing.serving_version();
                return Err(Error::AlreadyLoaded {
                    service: info.service,
                    version,
                });
            }
            services.insert(info.service.clone(), slot);
        }
        tracing::info!(
            service = %info.service,
            version = %info.plugin_version,
            interface = %info.interface,
            interface_version = %info.interface_version,
            generation = %generation.id(),
            path = %info.source.display(),
            "service loaded"
        );
        Ok(LoadReport {
            service: info.service.clone(),
            generation: generation.id(),
            info,
            took: started.elapsed(),
        })
    }

    /// Replaces the running build of `service` with the plugin at `path`.
    ///
    /// The new build must declare the same service and interface, an interface version that
    /// satisfies the service's requirement, and a plugin version other than the one serving.
    /// It is loaded, created and health-checked before anything changes; any failure returns a
    /// typed error and leaves the old build serving, untouched. Then it is published with one
    /// atomic store: new calls go to it at once, calls already running finish in the old build,
    /// which stays loaded as the rollback target. This returns once the new build is published;
    /// [`SwapReport::previous`] lets a caller wait for the old one's drain.
    pub fn swap(&self, service: &str, path: impl AsRef<Path>) -> Result<SwapReport, Error> {
        let started = Instant::now();
        let slot = self.slot(service)?;
        let mut control = slot.control.lock();
        let from = control.serving.info().plugin_version.clone();
        let refusal = refused(Some((service, &from)));
        let plugin = self.loader.load(path.as_ref()).inspect_err(&refusal)?;
        gate::check_swap(
            service,
            &control.interface,
            &control.requirement,
            &from,
            plugin.info(),
        )
        .inspect_err(&refusal)?;
        let generation = self.start(plugin).inspect_err(&refusal)?;
        drop(refusal);
        let previous = self.publish(&slot, &mut control, generation);
        let to = control.serving.info().plugin_version.clone();
        let generation = control.serving.id();
        drop(control);
        let took = started.elapsed();
        tracing::info!(service, from = %from, to = %to, generation = %generation, took = ?took, "service swapped");
        Ok(SwapReport {
            service: service.to_owned(),
            from,
            to,
            generation,
            previous,
            took,
        })
    }

    /// Publishes the most recent earlier generation of `service` again, with one atomic store of
    /// a new lease: no disk, no `dlopen`, no new instance. The generation it replaces becomes the rollback target, so a second
    /// rollback undoes the first.
    pub fn rollback(&self, service: &str) -> Result<SwapReport, Error> {
        let started = Instant::now();
        let slot = self.slot(service)?;
        let mut control = slot.control.lock();
        let Some(target) = control.history.pop_front() else {
            return Err(Error::NoRollbackTarget {
                service: service.to_owned(),
            });
        };
        let from = control.serving.info().plugin_version.clone();
        let to = target.info().plugin_version.clone();
        let generation = target.id();
        let previous = self.publish(&slot, &mut control, target);
        drop(control);
        let took = started.elapsed();
        tracing::info!(service, from = %from, to = %to, generation = %generation, took = ?took, "service rolled back");
        Ok(SwapReport {
            service: service.to_owned(),
            from,
            to,
            generation,
            previous,
            took,
        })
    }

    /// A handle to `service` that resolves the serving generation on every call.
    pub fn handle(&self, service: &str) -> Result<ServiceHandle, Error> {
        self.slot(service).map(ServiceHandle::new)
    }

    /// Calls `method` of `service` with `input` and returns the answer. Looks the service up by
    /// name each time; keep a [`ServiceHandle`] to call it often.
    pub fn call(&self, service: &str, method: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        self.handle(service)?.call_to_vec(method, input)
    }

    /// The status of every service, sorted by name.
    pub fn status(&self) -> Vec<ServiceStatus> {
        let slots: Vec<Arc<Slot>> = self.services.read().values().cloned().collect();
        let mut status: Vec<ServiceStatus> = slots.iter().map(|slot| slot.status()).collect();
        status.sort_by(|a, b| a.service.cmp(&b.service));
        status
    }

    /// The status of `service`.
    pub fn service_status(&self, service: &str) -> Result<ServiceStatus, Error> {
        Ok(self.slot(service)?.status())
    }

    fn slot(&self, service: &str) -> Result<Arc<Slot>, Error> {
        self.services
            .read()
            .get(service)
            .cloned()
            .ok_or_else(|| Error::UnknownService {
                service: service.to_owned(),
            })
    }

    fn serving_version(&self, service: &str) -> Option<Version> {
        let slot = self.services.read().get(service).cloned()?;
        Some(slot.serving_version())
    }

    /// Creates and health-checks an instance of `plugin`.
    fn start(&self, plugin: crate::loader::Plugin) -> Result<Arc<Generation>, Error> {
        let id = GenerationId(self.next_generation.fetch_add(1, Ordering::Relaxed));
        let generation = Generation::start(plugin, id, self.reaper.sender())?;
        // On failure the generation is dropped here: destroyed and unloaded before returning.
        generation.check_health()?;
        Ok(Arc::new(generation))
    }

    /// Publishes `generation` for `slot`, pushes the one it replaces onto the history and
    /// retires what falls off the end of it. Returns a watch on the replaced generation.
    fn publish(
        &self,
        slot: &Slot,
        control: &mut Control,
        generation: Arc<Generation>,
    ) -> GenerationWatch {
        let old_lease = slot
            .current
            .swap(Arc::new(Lease::new(Arc::clone(&generation))));
        let old = std::mem::replace(&mut control.serving, generation);
        let watch = old.watch();
        control.history.push_front(old);
        while control.history.len() > self.history_depth {
            if let Some(retired) = control.history.pop_back() {
                retired.retire();
            }
        }
        // Calls still holding the old lease keep it alive; its drop marks the drain.
        drop(old_lease);
        watch
    }
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
    /// The version published now, read without the control lock.
    fn serving_version(&self) -> Version {
        self.current
            .load()
            .generation()
            .info()
            .plugin_version
            .clone()
    }

    fn status(&self) -> ServiceStatus {
        let control = self.control.lock();
        ServiceStatus {
            service: self.name.clone(),
            interface: control.interface.clone(),
            requirement: control.requirement.clone(),
            current: GenerationStatus::of(&control.serving),
            history: control
                .history
                .iter()
                .map(|g| GenerationStatus::of(g))
                .collect(),
        }
    }
}

/// What [`Runtime::load`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadReport {
    /// The service loaded.
    pub service: String,
    /// Its first generation.
    pub generation: GenerationId,
    /// What the plugin declares.
    pub info: PluginInfo,
    /// How long the load took, checks and health check included.
    pub took: Duration,
}

/// What [`Runtime::swap`] or [`Runtime::rollback`] did.
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
    /// The interface it implements.
    pub interface: String,
    /// The interface requirement every new build must satisfy.
    pub requirement: VersionReq,
    /// The generation serving calls.
    pub current: GenerationStatus,
    /// Earlier generations kept loaded for rollback, most recent first.
    pub history: Vec<GenerationStatus>,
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
    /// The file it was loaded from.
    pub source: PathBuf,
    /// The staged copy that is mapped.
    pub staged: PathBuf,
}

impl GenerationStatus {
    fn of(generation: &Generation) -> Self {
        let info = generation.info();
        GenerationStatus {
            id: generation.id(),
            version: info.plugin_version.clone(),
            interface_version: info.interface_version.clone(),
            api_version: info.api_version.clone(),
            source: info.source.clone(),
            staged: info.staged.clone(),
        }
    }
}
