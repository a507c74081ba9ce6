//! [`RuntimeBuilder`]: a runtime's configuration and its defaults, and the making of a runtime
//! with its background threads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use semver::VersionReq;

use super::{Runtime, Shared};
use crate::Error;
use crate::events::EventBus;
use crate::generation::Hooks;
use crate::loader::Loader;
use crate::loader::staging::{self, StagingLock};
use crate::policy::{ProbationPolicy, RestartPolicy};
use crate::reaper::Reaper;
use crate::supervisor::Supervisor;

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
    pub start_empty_on_bad_state: bool,
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
                start_empty_on_bad_state: false,
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
    ///
    /// A stateful service's state is saved there too (`states/<service>.state`, written
    /// atomically) each time it stops and at each [`Runtime::save_state`], so
    /// [`Runtime::shutdown`] saves every one; loading the service again (by
    /// [`Runtime::restore`] or by hand) creates its next instance from the saved state. A
    /// crash saves nothing: the next run starts from the last save, losing what changed since.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// What [`Runtime::restore`] does with a saved state it cannot use: a state file that
    /// does not parse ([`Error::StateFile`]) or a state the build refuses or fails to import
    /// ([`Error::StateRefused`], [`Error::StateImportFailed`]). By default (`false`) that is
    /// the error and the service is not started; with `true` the service starts empty and the
    /// error is logged.
    pub fn start_empty_on_bad_state(mut self, empty: bool) -> Self {
        self.config.start_empty_on_bad_state = empty;
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
            interfaces: Default::default(),
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
