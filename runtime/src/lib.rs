//! The host side of graft: load services from cdylib plugins and replace them while the host
//! keeps serving.
//!
//! A [`Runtime`] holds services. Each comes from a plugin built against `graft-plugin-api`;
//! [`Runtime::load`] checks the file, stages a private copy, loads it and checks its ABI,
//! versions and dependencies; [`Runtime::start`] creates an instance, runs its health check and
//! publishes it. Callers reach a service through a [`ServiceHandle`], which reads the serving
//! generation on every call.
//!
//! Each service has its own lifecycle ([`ServiceState`]): start, stop, restart, pause and resume
//! act on one service and never touch another's instance. [`Runtime::start_all`] and its kin
//! work on many services in dependency waves, each wave in parallel. Services call each other
//! through the host by name; a failure down a chain of calls comes back as
//! [`Error::DependencyFailed`], naming the failing service, its version and the chain.
//!
//! [`Runtime::swap`] replaces a service's build: the new build must pass the same checks plus
//! the version gate (same service and interface, an interface version that satisfies the
//! service's requirement, another plugin version). Only then is it published, with one atomic
//! store. Calls already running finish in the old build, which stays loaded: [`Runtime::rollback`]
//! publishes it again without touching the disk. Builds that fall out of the history are
//! retired once their last call has returned: their instances destroyed on the runtime's retire
//! thread, their libraries kept mapped (unmapping a Rust cdylib is not sound; see
//! [`GenerationWatch::is_mapped`]). A swapped-in build serves
//! a probation window ([`ProbationPolicy`]): if it fails too many calls or its health check, the
//! runtime rolls it back by itself. A service whose start fails is restarted with a growing
//! back-off ([`RestartPolicy`]) until it fails too often, and then stays failed until reset.
//!
//! A stateful service (a plugin that implements `graft_plugin_api::Stateful`) keeps its state
//! across a swap, a restart and a rollback: calls are held back (they wait, they do not fail)
//! while the old instance's state is exported and the new instance is created from it, and any
//! failure lets the old instance serve on with its state. Stopping it saves its state, in the
//! state directory if there is one, and the next load or [`Runtime::restore`] takes it back.
//! A stateless service can instead be released as a canary ([`Runtime::swap_with`] with
//! [`SwapStrategy::Canary`]), taking a share of the calls until its calls promote or abort it.
//!
//! A service with a typed interface (a trait marked `#[graft_plugin_api::interface]`) is called
//! through its generated client ([`Runtime::client`]), with the trait's signatures; every load,
//! swap and rollback then checks the build's methods against the client's, and against the
//! build it replaces, by the semver rules ([`Error::IncompatibleMethod`]). The byte-level
//! [`ServiceHandle::call`] works for every service.
//!
//! ```no_run
//! use graft_runtime::Runtime;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new()?;
//! runtime.load_and_start("plugins/libgreeter_v1_0.so")?;
//! let greeter = runtime.handle("greeter")?;
//! assert_eq!(greeter.call_to_vec("greet", b"ada")?, b"hello, ada from greeter 1.0.0");
//!
//! let report = runtime.swap("greeter", "plugins/libgreeter_v1_1.so")?;
//! assert_eq!(greeter.call_to_vec("greet", b"ada")?, b"hello, ada from greeter 1.1.0");
//! report.previous.wait_drained(std::time::Duration::from_secs(5))?;
//!
//! runtime.rollback("greeter")?;
//! assert_eq!(greeter.call_to_vec("greet", b"ada")?, b"hello, ada from greeter 1.0.0");
//!
//! // A typed service, through the client its interface crate generated.
//! runtime.load_and_start("plugins/libkv_v2_1.so")?;
//! let kv = runtime.client::<graft_kv_interface::KvClient<_>>("kv")?;
//! kv.put("ada", b"lovelace")?;
//! assert_eq!(kv.get("ada")?, Some(b"lovelace".to_vec()));
//! # Ok(())
//! # }
//! ```
//!
//! Every operation emits `tracing` events carrying the service and its version (targets
//! `graft_runtime::*`), and typed [`Event`]s to [`Runtime::subscribe`]rs; plugins' own log lines
//! arrive under the target `graft::plugin`.
#![deny(missing_docs)]

mod batch;
mod budget;
mod error;
mod events;
mod fault;
mod gate;
mod generation;
mod graph;
mod handle;
mod history;
mod host;
mod loader;
mod metrics;
mod names;
mod policy;
mod probation;
mod reaper;
mod retire;
mod runtime;
mod supervisor;
#[cfg(test)]
mod test_rng;
mod typed;
mod watch;

pub use batch::{BatchReport, Outcome};
pub use budget::{KEY_RESERVE, LoadBudget, MAP_RESERVE};
pub use error::{Error, Hop};
pub use events::{Event, EventKind, EventReceiver, RollbackReason};
pub use generation::{GenerationId, GenerationWatch};
pub use handle::{MAX_CALL_DEPTH, ServiceHandle};
pub use history::{Manifest, ManifestEntry};
pub use loader::retained::RetiredLibrary;
pub use loader::{BuildProfile, DEFAULT_MAX_PLUGIN_SIZE, PluginInfo};
pub use metrics::{
    CallCounts, DURATION_BOUNDS, Histogram, OperationMetrics, SLOTS, ServiceMetrics, VersionMetrics,
};
pub use names::{MAX_NAME_LEN, validate_name};
pub use policy::{CanaryPolicy, ProbationPolicy, RestartPolicy, SwapStrategy};
pub use retire::RETIRE_THREAD;
pub use runtime::{
    CanaryStatus, DEFAULT_CALL_DEADLINE, DEFAULT_DRAIN_DEADLINE, DEFAULT_HEALTH_INTERVAL,
    DEFAULT_HISTORY_DEPTH, DEFAULT_STOP_DEADLINE, Dependency, GenerationStatus, LoadOptions,
    LoadReport, Runtime, RuntimeBuilder, ServiceState, ServiceStatus, StopReport, SwapReport,
};
pub use typed::{InterfaceInfo, MethodInfo};
pub use watch::{SETTLE, WatchEvent, WatchOptions, Watcher, watched_files};

/// A typed client's error on the host: the service's own error `E`, or the runtime's.
pub type ClientError<E> = graft_plugin_api::ClientError<E, Error>;

/// Typed calls' method names, as a typed client passes them to [`ServiceHandle::call_method`].
pub use graft_plugin_api::typed::Method;

/// The `semver` crate the runtime's API speaks ([`Version`](semver::Version) and
/// [`VersionReq`](semver::VersionReq)), so that a host needs no dependency of its own to name
/// them.
pub use semver;
