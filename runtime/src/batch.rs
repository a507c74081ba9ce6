//! Operations over many services: dependency waves, each run in parallel on a bounded pool of
//! scoped worker threads.
//!
//! A wave starts only when the one before it has finished; within a wave at most `concurrency`
//! services are worked on at once. After a wave with a failure, the later waves are skipped and
//! the report says, per service, what happened. Each service's own operation leaves it in a
//! settled state (running, stopped, ...) whatever happens, so a failed batch leaves nothing
//! half-done.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::Error;
use crate::runtime::{Shared, Slot};

/// What an operation over many services did, service by service.
#[derive(Debug)]
#[non_exhaustive]
pub struct BatchReport {
    /// The operation, e.g. `"start"`.
    pub operation: &'static str,
    /// The waves, in the order they ran (or would have).
    pub waves: Vec<Vec<String>>,
    /// What happened to each service that was worked on, in the order they finished.
    pub outcomes: Vec<Outcome>,
    /// Services in waves that were skipped after a failure.
    pub skipped: Vec<String>,
}

/// What happened to one service in a batch.
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// The service.
    pub service: String,
    /// The wave it was in.
    pub wave: usize,
    /// When its operation began and ended.
    pub began: Instant,
    /// See `began`.
    pub ended: Instant,
    /// Its result.
    pub result: Result<(), Error>,
}

impl BatchReport {
    /// True if every service's operation succeeded and no wave was skipped.
    pub fn succeeded(&self) -> bool {
        self.skipped.is_empty() && self.outcomes.iter().all(|o| o.result.is_ok())
    }

    /// The services whose operation failed, with their errors.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &Error)> {
        self.outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().err().map(|e| (o.service.as_str(), e)))
    }
}

impl fmt::Display for BatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} services",
            self.operation,
            self.waves.iter().map(Vec::len).sum::<usize>()
        )?;
        let failures: Vec<String> = self.failures().map(|(s, e)| format!("{s}: {e}")).collect();
        if failures.is_empty() {
            f.write_str(" succeeded")?;
        } else {
            write!(f, " failed ({})", failures.join("; "))?;
        }
        if !self.skipped.is_empty() {
            write!(f, "; skipped: {}", self.skipped.join(", "))?;
        }
        Ok(())
    }
}

/// Runs `op` over `waves`; `Err(Error::Batch)` if any service failed.
pub(crate) fn run_waves(
    shared: &Shared,
    operation: &'static str,
    waves: Vec<Vec<String>>,
    concurrency: usize,
    op: impl Fn(&Shared, &Slot) -> Result<(), Error> + Sync,
) -> Result<BatchReport, Error> {
    let mut report =
        BatchReport { operation, waves: waves.clone(), outcomes: Vec::new(), skipped: Vec::new() };
    for (index, wave) in waves.iter().enumerate() {
        if !report.succeeded() {
            report.skipped.extend(wave.iter().cloned());
            continue;
        }
        let outcomes = Mutex::new(Vec::with_capacity(wave.len()));
        let next = AtomicUsize::new(0);
        let workers = concurrency.max(1).min(wave.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    while let Some(service) = wave.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let began = Instant::now();
                        let result = shared.slot(service).and_then(|slot| op(shared, &slot));
                        let outcome = Outcome {
                            service: service.clone(),
                            wave: index,
                            began,
                            ended: Instant::now(),
                            result,
                        };
                        outcomes
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .push(outcome);
                    }
                });
            }
        });
        report
            .outcomes
            .extend(outcomes.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()));
    }
    if report.succeeded() { Ok(report) } else { Err(Error::Batch(Box::new(report))) }
}
