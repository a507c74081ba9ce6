//! Generations, leases and drains: what keeps plugin code loaded while it may still run.
//!
//! A [`Generation`] is one instance of one loaded plugin. It owns the [`Plugin`] (the library)
//! and the instance made from it, and dropping it destroys the instance and then closes the
//! library. Because every holder reaches it through an `Arc`, it is dropped only when nobody can
//! call into it any more.
//!
//! A [`Lease`] is one *publication* of a generation: the value a service's `ArcSwap` points at.
//! A swap or a rollback stores a new lease and drops the runtime's reference to the old one. A
//! call holds the `ArcSwap::load` guard of the lease it started with; after a swap arc-swap turns
//! each guard still in flight into a strong count on that lease, so the old lease is dropped
//! exactly when the last call that loaded it returns. Its `Drop` is therefore the drain signal:
//! no per-call counter, no polling. A generation is *drained* when it has no live lease.

use std::ffi::c_void;
use std::fmt;
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use graft_plugin_api::abi::{CallFn, RawBytes, RawStr, STATUS_ERROR, STATUS_OK, STATUS_PANIC};
use parking_lot::{Condvar, Mutex};
use semver::Version;

use crate::Error;
use crate::host::{host_api, vec_sink};
use crate::loader::{Plugin, PluginInfo};
use crate::reaper::ReaperEvent;

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
    reaper: Sender<ReaperEvent>,
    /// Closed when dropped, after `Drop::drop` destroyed the instance.
    plugin: Plugin,
    /// Declared last so that it is dropped last: it reports the generation unloaded only once
    /// `plugin` is closed.
    life: LifeOwner,
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
            .field("service", &self.plugin.info().service)
            .field("version", &self.plugin.info().plugin_version.to_string())
            .finish_non_exhaustive()
    }
}

impl Generation {
    /// Creates an instance of `plugin`. On failure the plugin is dropped, which closes it.
    pub fn start(
        plugin: Plugin,
        id: GenerationId,
        reaper: Sender<ReaperEvent>,
    ) -> Result<Generation, Error> {
        let info = plugin.info();
        let host = host_api(&info.service, &info.plugin_version.to_string());
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut message = Vec::new();
        let sink = vec_sink(&mut message);
        let create = plugin.entry().create;
        // SAFETY: `create` comes from `plugin`, which is open; the host table is `'static`, so it
        // outlives every copy the plugin keeps; the out pointer and the sink are valid for the
        // call.
        let status = unsafe { create(host, &mut instance, &sink) };
        let failed = |panicked: bool, message: Vec<u8>| Error::CreateFailed {
            service: info.service.clone(),
            version: info.plugin_version.clone(),
            message: String::from_utf8_lossy(&message).into_owned(),
            panicked,
        };
        match status {
            STATUS_OK if !instance.is_null() => {}
            STATUS_OK => return Err(failed(false, b"create returned no instance".to_vec())),
            STATUS_ERROR => return Err(failed(false, message)),
            STATUS_PANIC => return Err(failed(true, message)),
            status => {
                return Err(Error::InvalidStatus {
                    service: info.service.clone(),
                    version: info.plugin_version.clone(),
                    entry: "create",
                    status,
                });
            }
        }
        let life = LifeOwner(Arc::new(Life::new(id, info)));
        tracing::debug!(service = %info.service, version = %info.plugin_version, generation = %id, "instance created");
        Ok(Generation {
            id,
            instance,
            reaper,
            plugin,
            life,
        })
    }

    pub fn id(&self) -> GenerationId {
        self.id
    }

    pub fn info(&self) -> &PluginInfo {
        self.plugin.info()
    }

    pub fn watch(&self) -> GenerationWatch {
        GenerationWatch {
            life: Arc::clone(&self.life.0),
        }
    }

    /// Runs the instance's health check.
    pub fn check_health(&self) -> Result<(), Error> {
        let mut message = Vec::new();
        let sink = vec_sink(&mut message);
        let health = self.plugin.entry().health;
        // SAFETY: `health` comes from the open `plugin`, and `instance` is live (destroyed only in
        // `Drop`); the sink is valid for the call.
        let status = unsafe { health(self.instance, &sink) };
        let info = self.info();
        match status {
            STATUS_OK => Ok(()),
            STATUS_ERROR | STATUS_PANIC => Err(Error::HealthCheckFailed {
                service: info.service.clone(),
                version: info.plugin_version.clone(),
                message: String::from_utf8_lossy(&message).into_owned(),
            }),
            status => Err(Error::InvalidStatus {
                service: info.service.clone(),
                version: info.plugin_version.clone(),
                entry: "health",
                status,
            }),
        }
    }

    /// Marks the generation as out of the history: the reaper unloads it once drained.
    pub fn retire(self: Arc<Self>) {
        self.life.0.state.lock().retired = true;
        // The reaper checks the drain itself; if it is gone (the runtime is shutting down), the
        // last `Arc` unloads the generation wherever it is dropped, which is just as safe.
        let _ = self.reaper.send(ReaperEvent::Retire(Arc::clone(&self)));
    }

    pub fn is_drained(&self) -> bool {
        self.life.0.state.lock().leases == 0
    }

    /// Drops one lease's reference. When it was the last live lease the generation is drained:
    /// waiters are woken and, if the generation is retired, this reference goes to the reaper,
    /// which then holds the last one, so the unload runs on the reaper's thread, not here.
    fn release_lease(self: Arc<Self>) {
        let retired = {
            let mut state = self.life.0.state.lock();
            state.leases -= 1;
            if state.leases > 0 {
                return;
            }
            self.life.0.changed.notify_all();
            state.retired
        };
        let info = self.info();
        tracing::info!(service = %info.service, version = %info.plugin_version, generation = %self.id, "generation drained");
        if retired {
            let reaper = self.reaper.clone();
            // If the reaper is gone (the runtime is shutting down), the event comes back in the
            // error and the generation is dropped here, which is just as safe.
            let _ = reaper.send(ReaperEvent::Drained(self));
        }
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        let mut message = Vec::new();
        let sink = vec_sink(&mut message);
        let destroy = self.plugin.entry().destroy;
        // SAFETY: the last `Arc<Generation>` is gone, so no lease and no call refers to the
        // instance; it is destroyed once, here, while `plugin` is still open (the
        // type's invariant).
        let status = unsafe { destroy(self.instance, &sink) };
        let info = self.plugin.info();
        if status != STATUS_OK {
            tracing::warn!(
                service = %info.service,
                version = %info.plugin_version,
                generation = %self.id,
                error = %String::from_utf8_lossy(&message),
                "destroying the instance failed"
            );
        }
        tracing::info!(service = %info.service, version = %info.plugin_version, generation = %self.id, "generation unloaded");
        // The fields are dropped after this body, in declaration order: `plugin` closes the
        // library, then `life` reports the generation unloaded.
    }
}

/// The generation's own reference to its [`Life`]; dropping it marks the generation unloaded.
#[derive(Debug)]
struct LifeOwner(Arc<Life>);

impl Drop for LifeOwner {
    fn drop(&mut self) {
        let mut state = self.0.state.lock();
        state.unloaded = true;
        self.0.changed.notify_all();
    }
}

/// The drain and unload state of a generation, shared with [`GenerationWatch`]es, which may
/// outlive the generation.
#[derive(Debug)]
struct Life {
    id: GenerationId,
    service: String,
    version: Version,
    state: Mutex<LifeState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct LifeState {
    /// Live leases: 1 while published, plus one per earlier publication still draining.
    leases: usize,
    /// Out of the history: to be unloaded once drained.
    retired: bool,
    /// Destroyed and its library closed.
    unloaded: bool,
}

impl Life {
    fn new(id: GenerationId, info: &PluginInfo) -> Self {
        Life {
            id,
            service: info.service.clone(),
            version: info.plugin_version.clone(),
            state: Mutex::new(LifeState::default()),
            changed: Condvar::new(),
        }
    }
}

/// Watches one generation's drain and unload without keeping it loaded.
#[derive(Debug, Clone)]
pub struct GenerationWatch {
    life: Arc<Life>,
}

impl GenerationWatch {
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

    /// True once its instance is destroyed and its library closed.
    pub fn is_unloaded(&self) -> bool {
        self.life.state.lock().unloaded
    }

    /// Waits until the generation is drained, at most `timeout`. A timeout is reported as
    /// [`Error::DrainTimeout`]; nothing is forced.
    pub fn wait_drained(&self, timeout: Duration) -> Result<(), Error> {
        self.wait(timeout, |s| s.leases == 0 || s.unloaded)
            .map_err(|waited| Error::DrainTimeout {
                service: self.life.service.clone(),
                version: self.life.version.clone(),
                generation: self.life.id,
                waited,
            })
    }

    /// Waits until the generation is unloaded, at most `timeout`. A generation kept in the
    /// history is not unloaded; this waits for ones that left it.
    pub fn wait_unloaded(&self, timeout: Duration) -> Result<(), Error> {
        self.wait(timeout, |s| s.unloaded)
            .map_err(|waited| Error::UnloadTimeout {
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
                Some(deadline) => self
                    .life
                    .changed
                    .wait_until(&mut state, deadline)
                    .timed_out(),
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

/// One publication of a generation: what a service's `ArcSwap` points at.
///
/// Invariant: `instance` and `call` are copies of the instance pointer and the call entry of
/// `generation`, kept here so that a call reads them without a second indirection; they are
/// valid while `generation` is, which this lease keeps alive.
pub(crate) struct Lease {
    instance: *mut c_void,
    call: CallFn,
    /// Taken out only in `Drop`, which hands it to `Generation::release_lease`.
    generation: ManuallyDrop<Arc<Generation>>,
}

// SAFETY: the raw pointer and function pointer are the generation's, which is `Send + Sync`
// (see there).
unsafe impl Send for Lease {}
// SAFETY: as for `Send`.
unsafe impl Sync for Lease {}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Publishes `generation` once more: the lease counts until it is dropped.
    pub fn new(generation: Arc<Generation>) -> Lease {
        generation.life.0.state.lock().leases += 1;
        Lease {
            instance: generation.instance,
            call: generation.plugin.entry().call,
            generation: ManuallyDrop::new(generation),
        }
    }

    pub fn generation(&self) -> &Arc<Generation> {
        &self.generation
    }

    /// Calls `method`, appending the answer to `output`. On error `output` is left as it was.
    #[inline]
    pub fn call(&self, method: &str, input: &[u8], output: &mut Vec<u8>) -> Result<(), Error> {
        let start = output.len();
        let mut message = Vec::new();
        let status = {
            let output_sink = vec_sink(output);
            let error_sink = vec_sink(&mut message);
            // SAFETY: `call` and `instance` belong to `generation`, which this lease keeps alive
            // (the type's invariant); method, input and both sinks are valid for the call.
            unsafe {
                (self.call)(
                    self.instance,
                    RawStr::new(method),
                    RawBytes::new(input),
                    &output_sink,
                    &error_sink,
                )
            }
        };
        if status == STATUS_OK {
            return Ok(());
        }
        output.truncate(start);
        Err(self.call_error(status, method, message))
    }

    #[cold]
    fn call_error(&self, status: i32, method: &str, message: Vec<u8>) -> Error {
        let info = self.generation.info();
        let (service, version) = (info.service.clone(), info.plugin_version.clone());
        let message = String::from_utf8_lossy(&message).into_owned();
        match status {
            STATUS_ERROR => Error::CallFailed {
                service,
                version,
                method: method.to_owned(),
                message,
            },
            STATUS_PANIC => {
                tracing::error!(service = %service, version = %version, method, panic = %message, "plugin panicked");
                Error::PluginPanicked {
                    service,
                    version,
                    method: method.to_owned(),
                    message,
                }
            }
            status => Error::InvalidStatus {
                service,
                version,
                entry: "call",
                status,
            },
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // SAFETY: `drop` runs once, and nothing reads `self.generation` after this line.
        let generation = unsafe { ManuallyDrop::take(&mut self.generation) };
        generation.release_lease();
    }
}
