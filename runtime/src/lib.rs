//! The host side of graft: load services from cdylib plugins and replace them while the host
//! keeps serving.
//!
//! A [`Runtime`] holds services. Each comes from a plugin built against `graft-plugin-api`;
//! [`Runtime::load`] checks the file, stages a private copy, loads it, checks its ABI and
//! versions, creates an instance and runs its health check. Callers reach a service through a
//! [`ServiceHandle`], which reads the serving generation on every call.
//!
//! [`Runtime::swap`] replaces a service's build: the new build must pass the same checks plus
//! the version gate (same service and interface, an interface version that satisfies the
//! service's requirement, another plugin version). Only then is it published, with one atomic
//! store. Calls already running finish in the old build, which stays loaded: [`Runtime::rollback`]
//! publishes it again without touching the disk. Builds that fall out of the history are
//! unloaded by a background thread once their last call has returned.
//!
//! ```no_run
//! use graft_runtime::Runtime;
//!
//! # fn main() -> Result<(), graft_runtime::Error> {
//! let runtime = Runtime::new()?;
//! runtime.load("plugins/libgreeter_v1_0.so")?;
//! let greeter = runtime.handle("greeter")?;
//! assert_eq!(greeter.call_to_vec("greet", b"ada")?, b"hello, ada from greeter 1.0.0");
//!
//! let report = runtime.swap("greeter", "plugins/libgreeter_v1_1.so")?;
//! assert_eq!(greeter.call_to_vec("greet", b"ada")?, b"hello, ada from greeter 1.1.0");
//! report.previous.wait_drained(std::time::Duration::from_secs(5))?;
//!
//! runtime.rollback("greeter")?;
//! assert_eq!(greeter.call_to_vec("greet", b"ada")?, b"hello, ada from greeter 1.0.0");
//! # Ok(())
//! # }
//! ```
//!
//! Every operation emits `tracing` events carrying the service and its version (targets
//! `graft_runtime::*`); plugins' own log lines arrive under the target `graft::plugin`.
#![deny(missing_docs)]

mod error;
mod gate;
mod generation;
mod handle;
mod host;
mod loader;
mod reaper;
mod runtime;

pub use error::Error;
pub use generation::{GenerationId, GenerationWatch};
pub use handle::ServiceHandle;
pub use loader::PluginInfo;
pub use runtime::{
    DEFAULT_DRAIN_DEADLINE, DEFAULT_HISTORY_DEPTH, GenerationStatus, LoadReport, Runtime,
    RuntimeBuilder, ServiceStatus, SwapReport,
};
