//! What the runtime reports: a service's [`ServiceState`] and [`ServiceStatus`], its
//! generations' [`GenerationStatus`], its [`Dependency`]s, and what a load, a stop or a swap did.

use std::path::PathBuf;
use std::time::Duration;

use semver::{Version, VersionReq};

use crate::generation::{Generation, GenerationId, GenerationWatch};
use crate::loader::PluginInfo;

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
    /// Stopped: the host's calls fail at once with [`Error::Stopped`](crate::Error::Stopped); it
    /// can be started again.
    Stopped,
    /// Its restart policy gave up on it; it stays failed until
    /// [`Runtime::reset`](crate::Runtime::reset).
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

/// What [`Runtime::load`](crate::Runtime::load) did.
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

/// What [`Runtime::stop`](crate::Runtime::stop) did.
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

/// What [`Runtime::swap`](crate::Runtime::swap), [`Runtime::rollback`](crate::Runtime::rollback)
/// or [`Runtime::restart`](crate::Runtime::restart) did.
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
    /// The canary release running beside `current`, if one is.
    pub canary: Option<CanaryStatus>,
    /// The outcome of the last periodic health check (true before the first).
    pub healthy: bool,
    /// Its calls per version (answered, failures, refusals, panics), and its swaps and
    /// rollbacks with their durations: counters that only grow, for an embedding host to
    /// export as it likes.
    pub metrics: crate::ServiceMetrics,
}

/// A canary release, for operators.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CanaryStatus {
    /// The canary's generation.
    pub generation: GenerationStatus,
    /// The share of calls it takes.
    pub weight: f64,
    /// The calls it has answered so far.
    pub calls: u64,
    /// How many of them failed (errors and panics; refusals are not failures).
    pub failures: u64,
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
    /// For a stateful build, the format version of the state it exports; `None` for a
    /// stateless one (and for every plugin built with `graft-plugin-api` before 0.4).
    pub state_format: Option<u32>,
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
    pub(super) fn of(generation: &Generation) -> Self {
        let info = generation.info();
        GenerationStatus {
            id: generation.id(),
            version: info.plugin_version.clone(),
            interface_version: info.interface_version.clone(),
            api_version: info.api_version.clone(),
            build_profile: info.build_profile,
            state_format: info.state_format,
            source: info.source.clone(),
            staged: info.staged.clone(),
            sha256: generation.plugin().known_sha256().map(str::to_owned),
        }
    }
}
