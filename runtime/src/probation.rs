//! Probation counters: how a swapped-in build's first calls are watched.
//!
//! A serving lease published by a swap carries a [`Probation`] while the window is open. Each
//! call through it counts itself, and a failure also checks the verdict, so a build that fails
//! too often is caught by the call that crossed the threshold. When the window closes (enough
//! calls, or its duration, seen by the supervisor) the service is published again without
//! probation, and calls stop paying for the counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::GenerationId;
use crate::policy::{ProbationPolicy, Verdict, probation_verdict};

/// The counters of one probation window.
#[derive(Debug)]
pub(crate) struct Probation {
    pub generation: GenerationId,
    pub started: Instant,
    pub policy: ProbationPolicy,
    /// Whether it judges a canary (its verdict promotes or aborts it) rather than a build on
    /// probation (its verdict closes the window or rolls back).
    pub canary: bool,
    calls: AtomicU64,
    failures: AtomicU64,
    decided: AtomicBool,
}

impl Probation {
    pub fn new(generation: GenerationId, policy: ProbationPolicy, now: Instant) -> Self {
        Probation {
            generation,
            started: now,
            policy,
            canary: false,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            decided: AtomicBool::new(false),
        }
    }

    /// The counters judging a canary release under `policy`.
    pub fn canary(generation: GenerationId, policy: &crate::CanaryPolicy, now: Instant) -> Self {
        Probation { canary: true, ..Probation::new(generation, policy.judging(), now) }
    }

    /// The calls counted and the failures among them, so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.calls.load(Ordering::Relaxed), self.failures.load(Ordering::Relaxed))
    }

    /// Counts one call. Returns the verdict the first time it is decided, by this call.
    #[inline]
    pub fn record(&self, failed: bool) -> Option<Verdict> {
        let calls = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let failures = if failed {
            self.failures.fetch_add(1, Ordering::Relaxed) + 1
        } else if calls < self.policy.calls {
            // A success inside the window decides nothing: the common case costs one increment.
            return None;
        } else {
            self.failures.load(Ordering::Relaxed)
        };
        self.decide(probation_verdict(calls, failures, self.started.elapsed(), &self.policy))
    }

    /// The verdict at `now` for the counts so far, if it is decided now and was not before.
    pub fn check(&self, now: Instant) -> Option<Verdict> {
        let calls = self.calls.load(Ordering::Relaxed);
        let failures = self.failures.load(Ordering::Relaxed);
        let elapsed = now.saturating_duration_since(self.started);
        self.decide(probation_verdict(calls, failures, elapsed, &self.policy))
    }

    /// Decides `verdict` once: a later decision is dropped, so a window is judged once.
    pub fn decide(&self, verdict: Verdict) -> Option<Verdict> {
        if verdict == Verdict::Pending || self.decided.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(verdict)
    }
}
