//! Typed lifecycle events and the bus that delivers them to subscribers.
//!
//! Every event names its service and that service's version. Subscribers get an unbounded
//! crossbeam channel: nothing is dropped for a slow subscriber (it holds the memory instead),
//! and a subscriber that dropped its receiver is forgotten at the next event.

use std::fmt;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use semver::Version;

use crate::GenerationId;

/// The receiving end of a subscription to [`Runtime::subscribe`](crate::Runtime::subscribe): a
/// crossbeam channel receiver, named here so that a host needs no crossbeam dependency of its
/// own to name it.
pub type EventReceiver = Receiver<Event>;

/// Something that happened to a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The service.
    pub service: String,
    /// The version concerned: the one that changed state, or the one serving after a swap.
    pub version: Version,
    /// What happened.
    pub kind: EventKind,
}

/// What happened, with the details of each kind.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// The plugin was loaded and its service registered (not started yet).
    Loaded,
    /// An instance was created, passed its health check and now serves.
    Started {
        /// The new generation.
        generation: GenerationId,
    },
    /// A start failed; the restart policy may retry it.
    StartFailed {
        /// The error.
        error: String,
        /// Consecutive failures so far.
        attempt: u32,
        /// When the supervisor retries, or `None` when it gives up.
        retry_in: Option<Duration>,
    },
    /// The service was swapped to another build; `version` is the new one.
    Swapped {
        /// The version that served before.
        from: Version,
        /// The new generation.
        generation: GenerationId,
    },
    /// A new instance of the same build replaced the serving one.
    Restarted {
        /// The new generation.
        generation: GenerationId,
    },
    /// Every call that started in a generation no longer published has returned.
    Drained {
        /// The generation.
        generation: GenerationId,
    },
    /// A generation out of the history, drained, had its instance destroyed (on the runtime's
    /// retire thread) and released its library.
    Retired {
        /// The generation.
        generation: GenerationId,
        /// Whether its library is unloaded now, as the dynamic loader's own list shows: it is
        /// unmapped only when that is provably safe, and not while another generation of it
        /// lives.
        unmapped: bool,
    },
    /// An earlier generation was published again; `version` is the one serving now.
    RolledBack {
        /// The version rolled back from.
        from: Version,
        /// The generation serving now.
        generation: GenerationId,
        /// Why.
        reason: RollbackReason,
    },
    /// An automatic rollback was refused (no earlier generation, or the earlier one would
    /// break a running dependent or lacks a running dependency): the current build keeps
    /// serving, and its probation window is closed so that it is not judged again.
    RollbackRefused {
        /// The version that keeps serving (the same as the event's `version`).
        from: Version,
        /// The generation that keeps serving.
        generation: GenerationId,
        /// What tripped the rollback.
        reason: String,
        /// Why it was refused.
        error: String,
    },
    /// A canary release began: `weight` of the calls go to `generation` (the event's version),
    /// the rest stay on the build serving.
    CanaryStarted {
        /// The canary.
        generation: GenerationId,
        /// The build that keeps the rest of the calls.
        stable: Version,
        /// The share of calls it takes.
        weight: f64,
    },
    /// The canary was promoted: it takes every call, and the build before it went to the
    /// history (a rollback target).
    CanaryPromoted {
        /// The build it replaced.
        from: Version,
        /// The canary, now serving.
        generation: GenerationId,
        /// Whether its calls promoted it (`true`) or an operator did.
        automatic: bool,
    },
    /// The canary was aborted: no call goes to it any more, and it is retired once its running
    /// calls return.
    CanaryAborted {
        /// The canary.
        generation: GenerationId,
        /// Why: its calls' verdict, or an operator's abort.
        reason: String,
    },
    /// The service was unloaded: it left the runtime, and its name is free again.
    Unloaded,
    /// New calls wait until the service is resumed.
    Paused,
    /// Waiting calls proceed.
    Resumed,
    /// The service admits no calls; its instance is destroyed once drained.
    Stopped,
    /// The service failed for good (its restart policy gave up); it stays failed until reset.
    Failed {
        /// Why.
        reason: String,
    },
    /// A health check's outcome changed.
    HealthChanged {
        /// Whether the service is healthy now.
        healthy: bool,
        /// The failed check's message, when unhealthy.
        message: Option<String>,
    },
    /// A swapped-in build served its probation window without tripping it.
    ProbationPassed {
        /// Its generation.
        generation: GenerationId,
    },
}

/// Why a rollback happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackReason {
    /// An operator asked for it.
    Manual,
    /// The runtime rolled back by itself; the text says what tripped it.
    Automatic(String),
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackReason::Manual => f.write_str("manual"),
            RollbackReason::Automatic(why) => write!(f, "automatic: {why}"),
        }
    }
}

/// Delivers events to every live subscriber.
#[derive(Debug, Default)]
pub(crate) struct EventBus {
    subscribers: Mutex<Vec<Sender<Event>>>,
}

impl EventBus {
    pub fn subscribe(&self) -> EventReceiver {
        let (sender, receiver) = crossbeam_channel::unbounded();
        self.subscribers.lock().push(sender);
        receiver
    }

    pub fn emit(&self, service: &str, version: &Version, kind: EventKind) {
        let mut subscribers = self.subscribers.lock();
        if subscribers.is_empty() {
            return;
        }
        let event = Event { service: service.to_owned(), version: version.clone(), kind };
        subscribers.retain(|s| s.send(event.clone()).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_gets_every_event_and_dropped_ones_are_forgotten() {
        let bus = EventBus::default();
        let (a, b) = (bus.subscribe(), bus.subscribe());
        bus.emit("greeter", &Version::new(1, 0, 0), EventKind::Paused);
        drop(b);
        bus.emit("greeter", &Version::new(1, 0, 0), EventKind::Resumed);
        assert_eq!(
            a.try_iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventKind::Paused, EventKind::Resumed]
        );
        assert_eq!(bus.subscribers.lock().len(), 1);
    }
}
