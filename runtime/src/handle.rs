//! The call paths: [`ServiceHandle`] for the host's callers, and [`call_between`] for one
//! service calling another through the host.
//!
//! Both read the service's lease once and, when it serves, call straight through: the state
//! costs nothing on that path. The slow paths wait: a paused or starting service makes calls
//! block on its gate until the state changes or the call deadline passes; between services, a
//! target that is not running yet (stopped, loaded, not loaded at all) is retried with a
//! bounded back-off until the deadline, then the call fails with [`Error::NotReady`] naming it.
//! A name that no service has and none declares as a dependency fails at once with
//! [`Error::UnknownService`], and a chain of calls between services deeper than
//! [`MAX_CALL_DEPTH`] on one thread fails with [`Error::CallDepthExceeded`].

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use semver::Version;

use crate::generation::{GenerationId, Lease};
use crate::policy::Verdict;
use crate::runtime::{Shared, Slot};
use crate::{Error, ServiceState};

/// The longest pause between two tries of a call between services whose target is not running.
const MAX_BACKOFF: Duration = Duration::from_millis(25);

/// The deepest chain of calls between services (one service calling another through the host,
/// which calls a third, and so on) that one thread may make; a call past it fails with
/// [`Error::CallDepthExceeded`]. It stops a service that calls itself, directly or in a cycle,
/// before the chain overflows the thread's stack: 64 hops fit in the 2 MiB stack of a spawned
/// Rust thread with room to spare, and no legitimate chain of services is that deep.
pub const MAX_CALL_DEPTH: u32 = 64;

thread_local! {
    /// How many calls between services are running on this thread, nested in each other.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// One level of [`DEPTH`], given back when the call returns (or unwinds).
struct Depth;

impl Depth {
    fn enter(service: &str) -> Result<Depth, Error> {
        let depth = DEPTH.with(|d| d.get()).saturating_add(1);
        if depth > MAX_CALL_DEPTH {
            return Err(Error::CallDepthExceeded {
                service: service.to_owned(),
                depth,
                limit: MAX_CALL_DEPTH,
            });
        }
        DEPTH.with(|d| d.set(depth));
        Ok(Depth)
    }
}

impl Drop for Depth {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// A handle to one service, resolved by name once.
///
/// It holds the service's slot, not a generation: every call reads the generation serving at
/// that moment, so a handle taken before a swap, a restart or a rollback calls the new instance
/// after it. A call that is running when one of those happens finishes in the instance it
/// started in.
///
/// Cloning is one reference-count increment.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    slot: Arc<Slot>,
}

impl ServiceHandle {
    pub(crate) fn new(slot: Arc<Slot>) -> Self {
        ServiceHandle { slot }
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.slot.name
    }

    /// Calls `method` with `input`, appending the answer to `output`.
    ///
    /// On error, `output` is left as it was, and the error names the service and the version
    /// that failed. A panic inside the plugin is caught there and comes back as
    /// [`Error::PluginPanicked`]; the service keeps serving. A stopped service fails the call
    /// at once with [`Error::Stopped`]; a paused or starting one makes it wait up to the call
    /// deadline, then fail with [`Error::NotReady`].
    #[inline]
    pub fn call(&self, method: &str, input: &[u8], output: &mut Vec<u8>) -> Result<(), Error> {
        // The guard keeps this publication (and its generation) alive until the call returns.
        let lease = self.slot.current.load();
        if let Some(target) = lease.target() {
            let result = lease.invoke(target, method, input, output);
            if lease.probation().is_some() {
                after_call(&self.slot, &lease, &result);
            }
            return result;
        }
        // A service releasing a canary: the lease routes each call to one of its two targets.
        if let Some((through, target)) = lease.route() {
            let result = through.invoke(target, method, input, output);
            if through.probation().is_some() {
                after_call(&self.slot, through, &result);
            }
            return result;
        }
        drop(lease);
        self.call_waiting(method, input, output)
    }

    #[cold]
    fn call_waiting(&self, method: &str, input: &[u8], output: &mut Vec<u8>) -> Result<(), Error> {
        let (start, deadline) = deadline(&self.slot);
        // Held from the moment a gate woke this call until it holds the next publication.
        let mut passage = None;
        loop {
            let lease = self.slot.current.load();
            if let Some((through, target)) =
                lease.target().map(|target| (&**lease, target)).or_else(|| lease.route())
            {
                drop(passage);
                let result = through.invoke(target, method, input, output);
                after_call(&self.slot, through, &result);
                return result;
            }
            let state = lease.state();
            let Some(gate) = lease.gate().cloned() else {
                return Err(Error::Stopped { service: self.slot.name.clone(), state });
            };
            drop(lease);
            drop(passage);
            passage = gate.wait(deadline);
            if passage.is_none() {
                return Err(Error::NotReady {
                    service: self.slot.name.clone(),
                    state: Some(state),
                    waited: start.elapsed(),
                });
            }
        }
    }

    /// Calls `method` with `input` and returns the answer in a new vector.
    pub fn call_to_vec(&self, method: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let mut output = Vec::new();
        self.call(method, input, &mut output)?;
        Ok(output)
    }

    /// The plugin version serving now, if an instance is published.
    pub fn version(&self) -> Option<Version> {
        self.slot.current.load().generation().map(|g| g.version().clone())
    }

    /// The generation serving now, if an instance is published.
    pub fn generation(&self) -> Option<GenerationId> {
        self.slot.current.load().generation().map(|g| g.id())
    }

    /// The service's state now.
    pub fn state(&self) -> ServiceState {
        self.slot.current.load().state()
    }
}

/// Calls `method` of `service` for another service: resolves the name on every call, waits for
/// a target that is paused or starting, and retries one that is not running with a bounded
/// back-off, up to the call deadline. A target no service has and none declares as a
/// dependency cannot appear by waiting (short of a new load): it fails at once.
pub(crate) fn call_between(
    shared: &Shared,
    service: &str,
    method: &str,
    input: &[u8],
    output: &mut Vec<u8>,
) -> Result<(), Error> {
    let _depth = Depth::enter(service)?;
    let start = Instant::now();
    // `None`: a deadline too far to represent, which never comes.
    let deadline = start.checked_add(shared.config.call_deadline);
    if let Some(state) = Occupied::on_this_thread(shared.id, service) {
        // This very thread is creating the service's instance or exporting its state (its
        // `create` or `export_state` calls itself): waiting for it would wait for ourselves.
        return Err(Error::NotReady {
            service: service.to_owned(),
            state: Some(state),
            waited: Duration::ZERO,
        });
    }
    let mut backoff = Duration::from_millis(1);
    // Held from the moment a gate woke this call until it holds the next publication.
    let mut passage = None;
    loop {
        let slot = shared.services.read().get(service).cloned();
        let mut state = None;
        if let Some(slot) = &slot {
            let lease = slot.current.load();
            if let Some((through, target)) =
                lease.target().map(|target| (&**lease, target)).or_else(|| lease.route())
            {
                drop(passage);
                let result = through.invoke(target, method, input, output);
                after_call(slot, through, &result);
                return result;
            }
            state = Some(lease.state());
            if lease.state() == ServiceState::Failed {
                return Err(Error::Stopped {
                    service: service.to_owned(),
                    state: ServiceState::Failed,
                });
            }
            if let Some(gate) = lease.gate().cloned() {
                drop(lease);
                drop(passage);
                passage = gate.wait(deadline);
                if passage.is_some() {
                    continue;
                }
            }
        } else if !declared(shared, service) {
            return Err(Error::UnknownService { service: service.to_owned() });
        }
        let now = Instant::now();
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
        if left.is_zero() {
            return Err(Error::NotReady {
                service: service.to_owned(),
                state,
                waited: now - start,
            });
        }
        std::thread::sleep(backoff.min(left));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Whether some loaded service declares `service` as a dependency: then it is worth waiting
/// for (a host loading services one by one, a watcher bringing them in).
fn declared(shared: &Shared, service: &str) -> bool {
    shared
        .services
        .read()
        .values()
        .any(|slot| slot.dependencies.load().iter().any(|d| d.service == service))
}

fn deadline(slot: &Slot) -> (Instant, Option<Instant>) {
    let start = Instant::now();
    let wait = slot.shared.upgrade().map_or(Duration::ZERO, |shared| shared.config.call_deadline);
    (start, start.checked_add(wait))
}

/// Marks, on the current thread, a service whose instance is being created or whose state is
/// being exported, with the state its callers see meanwhile: a call from that code to the
/// service itself fails at once instead of waiting for an operation that waits for it.
pub(crate) struct Occupied {
    key: (u64, String),
}

thread_local! {
    static OCCUPIED: std::cell::RefCell<Vec<((u64, String), ServiceState)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Occupied {
    pub fn enter(runtime: u64, service: &str, state: ServiceState) -> Occupied {
        let key = (runtime, service.to_owned());
        OCCUPIED.with(|c| c.borrow_mut().push((key.clone(), state)));
        Occupied { key }
    }

    fn on_this_thread(runtime: u64, service: &str) -> Option<ServiceState> {
        OCCUPIED.with(|c| {
            c.borrow()
                .iter()
                .rev()
                .find(|((r, s), _)| *r == runtime && s == service)
                .map(|(_, state)| *state)
        })
    }
}

impl Drop for Occupied {
    fn drop(&mut self) {
        OCCUPIED.with(|c| {
            let mut occupied = c.borrow_mut();
            if let Some(at) = occupied.iter().rposition(|(k, _)| *k == self.key) {
                occupied.remove(at);
            }
        });
    }
}

/// Counts a call in a probation window, and acts on the verdict it decides.
#[cold]
fn after_call(slot: &Slot, lease: &Lease, result: &Result<(), Error>) {
    let Some(probation) = lease.probation() else {
        return;
    };
    let failed = matches!(
        result,
        Err(Error::CallFailed { .. } | Error::PluginPanicked { .. } | Error::InvalidStatus { .. })
    );
    let Some(verdict) = probation.record(failed) else {
        return;
    };
    let Some(shared) = slot.shared.upgrade() else {
        return;
    };
    if probation.canary {
        // A canary's verdict promotes or aborts it: the supervisor does either, as both wait
        // for the service's lock.
        let _ = shared.supervisor.send(crate::supervisor::SupervisorEvent::CanaryVerdict {
            service: slot.name.clone(),
            generation: probation.generation,
            verdict,
        });
        return;
    }
    match verdict {
        // The call that crossed the threshold rolls back, if no other operation holds the
        // service; a calling thread never waits for one.
        Verdict::Fail(why) => shared.auto_rollback(slot, probation.generation, &why, false),
        Verdict::Pass => {
            let _ = shared.supervisor.send(crate::supervisor::SupervisorEvent::ProbationPassed {
                service: slot.name.clone(),
                generation: probation.generation,
            });
        }
        Verdict::Pending => {}
    }
}
