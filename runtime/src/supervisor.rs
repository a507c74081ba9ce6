//! The supervisor: the runtime's thread for timed work. It restarts services whose start
//! failed (per the restart policy), closes probation windows, rolls back a swapped-in build
//! that fails its health check, and runs the periodic health checks.
//!
//! It is driven by one closed enum of events plus its own timers, holds the runtime only
//! weakly, and is stopped and joined when the runtime is dropped. The decisions themselves are
//! the pure functions of [`crate::policy`].

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use semver::Version;

use crate::events::EventKind;
use crate::generation::GenerationId;
use crate::policy::{FailureHistory, RestartDecision, Verdict};
use crate::probation::Probation;
use crate::runtime::Shared;
use crate::{Error, ServiceState};

/// What the supervisor is told.
#[derive(Debug)]
pub(crate) enum SupervisorEvent {
    /// A start failed; apply the restart policy.
    StartFailed { service: String, version: Version, error: String },
    /// A start succeeded.
    Started { service: String },
    /// A swapped-in build is on probation.
    Probation { service: String, probation: Arc<Probation> },
    /// A call closed a probation window with a pass.
    ProbationPassed { service: String, generation: GenerationId },
    /// A call decided a rollback but the service was busy: do it here.
    RollBack { service: String, generation: GenerationId, why: String },
    /// A canary's calls decided its fate: promote it (a pass) or abort it (a failure).
    CanaryVerdict { service: String, generation: GenerationId, verdict: Verdict },
    /// An operator reset a failed service.
    Reset { service: String },
    /// An operator stopped a service: cancel its pending restart.
    Stopped { service: String },
    /// Stop: the runtime is being dropped.
    Shutdown,
}

/// Closes a probation window that its calls passed, after one last health check: a window
/// never passes a build whose health was not checked within it.
fn pass_probation(runtime: &Shared, service: &str, generation: GenerationId) {
    let Ok(slot) = runtime.slot(service) else { return };
    // The check holds the published lease, as a call does, so that the generation is not
    // reported drained (nor destroyed) while its health code runs.
    let mut lease = slot.current.load_full();
    if lease.is_quiesced() {
        // Its state is being moved: once that operation ends, either another generation
        // serves (and this window is moot) or this one serves again and is judged now.
        drop(lease);
        slot.wait_for_operation();
        lease = slot.current.load_full();
    }
    // A quiesced instance runs nothing: its state is being moved, and the operation moving it
    // ends the window or opens a new one.
    let Some(serving) = lease.generation().filter(|g| g.id() == generation && !lease.is_quiesced())
    else {
        return;
    };
    let health = serving.check_health();
    // Let go of the instance before taking the service's lock: a stop holding that lock may be
    // waiting for this very instance to be released.
    drop(lease);
    match health {
        Ok(()) => runtime.end_probation(&slot, generation),
        Err(error) => {
            let why = format!("health check failed at the end of probation: {error}");
            runtime.auto_rollback(&slot, generation, &why, true);
        }
    }
}

/// Owns the supervisor thread.
#[derive(Debug)]
pub(crate) struct Supervisor {
    events: Option<Sender<SupervisorEvent>>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    pub fn start(
        shared: Weak<Shared>,
        inbox: Receiver<SupervisorEvent>,
    ) -> Result<Supervisor, Error> {
        let events = shared.upgrade().map(|s| s.supervisor.clone());
        let thread = std::thread::Builder::new()
            .name("graft-supervisor".to_owned())
            .spawn(move || State::default().run(&shared, &inbox))
            .map_err(|source| Error::Thread { source })?;
        Ok(Supervisor { events, thread: Some(thread) })
    }

    /// Tells the thread to stop and joins it.
    pub fn stop(&mut self) {
        if let Some(events) = self.events.take() {
            let _ = events.send(SupervisorEvent::Shutdown);
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the graft supervisor thread panicked");
        }
    }
}

#[derive(Default)]
struct State {
    failures: HashMap<String, FailureHistory>,
    /// When each running service started, for the restart policy's stable period.
    running_since: HashMap<String, Instant>,
    restarts: Vec<(Instant, String)>,
    probations: Vec<(String, Arc<Probation>)>,
    next_health: Option<Instant>,
}

impl State {
    fn run(mut self, shared: &Weak<Shared>, inbox: &Receiver<SupervisorEvent>) {
        loop {
            let now = Instant::now();
            let Some(runtime) = shared.upgrade() else { return };
            if self.next_health.is_none() {
                self.next_health = runtime.config.health_interval.and_then(|i| now.checked_add(i));
            }
            let next = self.next_due(&runtime);
            drop(runtime);
            let event = match next {
                Some(at) => inbox.recv_deadline(at),
                None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let Some(runtime) = shared.upgrade() else { return };
            match event {
                Ok(SupervisorEvent::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(event) => self.handle(&runtime, event),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.tick(&runtime, Instant::now());
        }
    }

    fn next_due(&self, runtime: &Shared) -> Option<Instant> {
        let restarts = self.restarts.iter().map(|(at, _)| *at);
        let probations =
            self.probations.iter().filter_map(|(_, p)| p.started.checked_add(p.policy.duration));
        let health = runtime.config.health_interval.and(self.next_health);
        restarts.chain(probations).chain(health).min()
    }

    fn handle(&mut self, runtime: &Shared, event: SupervisorEvent) {
        match event {
            SupervisorEvent::StartFailed { service, version, error } => {
                self.running_since.remove(&service);
                let history = self.failures.entry(service.clone()).or_default();
                let decision = history.record_failure(Instant::now(), &runtime.config.restart);
                let attempt = history.consecutive();
                let retry_in = match decision {
                    RestartDecision::RestartAfter(delay) => {
                        // A delay too long to represent is a restart that never comes.
                        if let Some(at) = Instant::now().checked_add(delay) {
                            self.restarts.push((at, service.clone()));
                        }
                        Some(delay)
                    }
                    RestartDecision::GiveUp => None,
                };
                runtime.hooks.events.emit(
                    &service,
                    &version,
                    EventKind::StartFailed { error: error.clone(), attempt, retry_in },
                );
                if retry_in.is_none()
                    && let Ok(slot) = runtime.slot(&service)
                {
                    runtime.fail(
                        &slot,
                        &format!("gave up after {attempt} failed starts; last: {error}"),
                    );
                }
            }
            SupervisorEvent::Started { service } => {
                self.restarts.retain(|(_, s)| *s != service);
                self.running_since.insert(service, Instant::now());
            }
            SupervisorEvent::Probation { service, probation } => {
                // A service has at most one window open: a newer swap supersedes the older one.
                self.probations.retain(|(s, _)| *s != service);
                self.probations.push((service, probation));
            }
            SupervisorEvent::ProbationPassed { service, generation } => {
                self.probations.retain(|(s, p)| !(*s == service && p.generation == generation));
                pass_probation(runtime, &service, generation);
            }
            SupervisorEvent::RollBack { service, generation, why } => {
                if let Ok(slot) = runtime.slot(&service) {
                    runtime.auto_rollback(&slot, generation, &why, true);
                }
            }
            SupervisorEvent::CanaryVerdict { service, generation, verdict } => {
                if let Ok(slot) = runtime.slot(&service) {
                    runtime.canary_verdict(&slot, generation, verdict);
                }
            }
            SupervisorEvent::Reset { service } => {
                self.failures.remove(&service);
                self.restarts.retain(|(_, s)| *s != service);
            }
            SupervisorEvent::Stopped { service } => {
                self.restarts.retain(|(_, s)| *s != service);
                self.running_since.remove(&service);
            }
            SupervisorEvent::Shutdown => {}
        }
    }

    /// Does whatever has come due by `now`.
    fn tick(&mut self, runtime: &Shared, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) =
            self.restarts.drain(..).partition(|(at, _)| *at <= now);
        self.restarts = later;
        for (_, service) in due {
            let Ok(slot) = runtime.slot(&service) else { continue };
            let state = slot.current.load().state();
            if matches!(state, ServiceState::Stopped | ServiceState::Loaded) {
                // A failure is reported back through `StartFailed` by `start_one` itself.
                let _ = runtime.start_one(&slot, true);
            }
        }

        let probations = std::mem::take(&mut self.probations);
        for (service, probation) in probations {
            // A window whose lease is no longer published (rolled back, swapped again, stopped)
            // has nothing left to judge. A paused lease, or one quiesced while a stateful
            // operation runs, carries no counters but keeps the window open: it closes on time
            // meanwhile, and the lease published after carries it again.
            let published = runtime.slot(&service).is_ok_and(|slot| {
                let lease = slot.current.load();
                lease.probation().is_some_and(|p| Arc::ptr_eq(p, &probation))
                    || ((lease.state() == ServiceState::Paused || lease.is_quiesced())
                        && lease.generation().is_some_and(|g| g.id() == probation.generation))
            });
            if !published {
                continue;
            }
            match probation.check(now) {
                Some(Verdict::Pass) => pass_probation(runtime, &service, probation.generation),
                Some(Verdict::Fail(why)) => {
                    if let Ok(slot) = runtime.slot(&service) {
                        runtime.auto_rollback(&slot, probation.generation, &why, true);
                    }
                }
                // Pending, or decided already by a call: keep it while it is pending.
                Some(Verdict::Pending) | None => {
                    let ends = probation.started.checked_add(probation.policy.duration);
                    if ends.is_none_or(|ends| now < ends) {
                        self.probations.push((service, probation));
                    }
                }
            }
        }

        if let (Some(interval), Some(at)) = (runtime.config.health_interval, self.next_health)
            && at <= now
        {
            self.check_health(runtime, now);
            self.next_health = now.checked_add(interval);
        }
    }

    /// Checks every running service's health; reports changes, rolls back a failing build
    /// that is still on probation, and lets the failure history of stable services lapse.
    fn check_health(&mut self, runtime: &Shared, now: Instant) {
        let slots: Vec<_> = runtime.services.read().values().cloned().collect();
        for slot in slots {
            // Held through the check, as a call holds it: the generation is not drained while
            // its health code runs.
            let lease = slot.current.load_full();
            // A quiesced generation's state is being moved: nothing may run in it.
            if lease.state() != ServiceState::Running || lease.is_quiesced() {
                continue;
            }
            let Some(generation) = lease.generation().cloned() else { continue };
            let probation = lease.probation().cloned();
            if let (Some(since), Some(history)) =
                (self.running_since.get(&slot.name), self.failures.get_mut(&slot.name))
            {
                history.record_running(*since, now, &runtime.config.restart);
            }
            let outcome = generation.check_health();
            let healthy = outcome.is_ok();
            if slot.healthy.swap(healthy, std::sync::atomic::Ordering::Relaxed) != healthy {
                let message = outcome.as_ref().err().map(|e| e.to_string());
                runtime.hooks.events.emit(
                    &slot.name,
                    generation.version(),
                    EventKind::HealthChanged { healthy, message },
                );
            }
            let id = generation.id();
            // A canary's health is checked too; a failure aborts it (a canary that answers
            // its calls but says it is unhealthy must not be promoted by them).
            let canary = lease.canary().map(|canary| (canary.id(), canary.check_health()));
            // As in `pass_probation`: no reference to the instance while taking a lock.
            drop(generation);
            drop(lease);
            if let Some((canary, Err(error))) = canary {
                let why = format!("health check failed: {error}");
                match runtime.abort(&slot, Some(canary), &why) {
                    // An operator or its calls' verdict ended it first.
                    Ok(_) | Err(Error::NoCanary { .. }) => {}
                    Err(error) => {
                        tracing::error!(service = %slot.name, %error, "aborting a canary failed");
                    }
                }
            }
            if let (Err(error), Some(probation)) = (outcome, probation)
                && probation.generation == id
                && probation.decide(Verdict::Fail(String::new())).is_some()
            {
                runtime.auto_rollback(
                    &slot,
                    id,
                    &format!("health check failed during probation: {error}"),
                    true,
                );
            }
        }
    }
}
