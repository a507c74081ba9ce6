//! Always-on counters: each generation's calls (answered, failures, refusals, panics) and each
//! service's swaps and rollbacks with their durations.
//!
//! The call path writes no cache line another thread writes. Each thread that calls takes a
//! *slot* of its own (the first time it calls; given back when it exits), and each generation
//! keeps one cache-line-padded shard per slot: a thread counts in its own shard with a plain
//! load and store, no atomic read-modify-write, as it is the shard's only writer. Threads past
//! [`SLOTS`] share one overflow shard, counted with atomic adds. Readers sum the shards.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use graft_plugin_api::abi::{STATUS_DEPENDENCY, STATUS_OK, STATUS_PANIC, STATUS_REFUSED};
use parking_lot::Mutex;
use semver::Version;

/// How many threads count without sharing; more share the overflow shard.
pub const SLOTS: usize = 64;

/// A generation's call counters.
#[derive(Debug)]
pub(crate) struct CallCounters {
    /// `SLOTS` shards, one per thread slot, then the overflow shard.
    shards: Box<[Shard]>,
}

/// One thread's counts, alone on its cache lines (128 bytes: adjacent-line prefetching pairs
/// lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    calls: AtomicU64,
    failures: AtomicU64,
    refusals: AtomicU64,
    panics: AtomicU64,
}

impl Shard {
    /// Adds one to `counter`, as this shard's only writer.
    #[inline(always)]
    fn bump_owned(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }
}

/// Calls answered by a generation (or a version), and how they ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallCounts {
    /// Calls answered: every call that reached the instance and returned, however it ended.
    pub calls: u64,
    /// Of them, failures of the service itself: errors (`CallFailed`) and invalid statuses.
    pub failures: u64,
    /// Refusals: the service's deliberate "no" (not found, invalid input, unknown method).
    pub refusals: u64,
    /// Panics caught in the plugin.
    pub panics: u64,
}

impl CallCounts {
    fn add(&mut self, other: CallCounts) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.refusals += other.refusals;
        self.panics += other.panics;
    }
}

impl CallCounters {
    pub fn new() -> Arc<CallCounters> {
        Arc::new(CallCounters { shards: (0..=SLOTS).map(|_| Shard::default()).collect() })
    }

    /// Counts a call that ended with `status`.
    #[inline(always)]
    pub fn record(&self, status: i32) {
        let slot = thread_slot();
        match self.shards.get(slot) {
            Some(shard) if slot < SLOTS => {
                Shard::bump_owned(&shard.calls);
                if status != STATUS_OK {
                    record_outcome(shard, status, Shard::bump_owned);
                }
            }
            _ => self.record_shared(status),
        }
    }

    #[cold]
    fn record_shared(&self, status: i32) {
        let Some(shard) = self.shards.last() else { return };
        let add = |counter: &AtomicU64| {
            counter.fetch_add(1, Ordering::Relaxed);
        };
        add(&shard.calls);
        record_outcome(shard, status, add);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> CallCounts {
        let mut counts = CallCounts::default();
        for shard in self.shards.iter() {
            counts.add(CallCounts {
                calls: shard.calls.load(Ordering::Relaxed),
                failures: shard.failures.load(Ordering::Relaxed),
                refusals: shard.refusals.load(Ordering::Relaxed),
                panics: shard.panics.load(Ordering::Relaxed),
            });
        }
        counts
    }
}

/// Counts the outcome of a call that did not succeed. A failure passed on from another service
/// (`STATUS_DEPENDENCY`) is that service's failure, not this one's: only answered.
#[cold]
#[inline(never)]
fn record_outcome(shard: &Shard, status: i32, bump: impl Fn(&AtomicU64)) {
    match status {
        STATUS_REFUSED => bump(&shard.refusals),
        STATUS_PANIC => bump(&shard.panics),
        STATUS_DEPENDENCY => {}
        _ => bump(&shard.failures),
    }
}

/// The registry of thread slots: which are taken.
static TAKEN: Mutex<[bool; SLOTS]> = Mutex::new([false; SLOTS]);

/// This thread's slot, held until the thread exits.
struct Slot(usize);

impl Slot {
    fn take() -> Slot {
        let mut taken = TAKEN.lock();
        match taken.iter().position(|t| !*t) {
            Some(free) => {
                taken[free] = true;
                Slot(free)
            }
            None => Slot(SLOTS),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Calls this thread still makes while it exits count in the shared shard: the slot may
        // belong to another thread from the next line on.
        let _ = SLOT_INDEX.try_with(|index| index.set(SLOTS));
        if let Some(taken) = TAKEN.lock().get_mut(self.0) {
            *taken = false;
        }
    }
}

thread_local! {
    /// This thread's slot index, cached without a destructor (`usize::MAX`: not taken yet).
    static SLOT_INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    /// The slot itself, given back when the thread exits.
    static SLOT: std::cell::OnceCell<Slot> = const { std::cell::OnceCell::new() };
}

/// This thread's slot.
#[inline(always)]
fn thread_slot() -> usize {
    let index = SLOT_INDEX.with(Cell::get);
    if index != usize::MAX {
        return index;
    }
    take_slot()
}

#[cold]
fn take_slot() -> usize {
    // During thread teardown the slot may be gone already: count in the shared shard then.
    let index = SLOT.try_with(|slot| slot.get_or_init(Slot::take).0).unwrap_or(SLOTS);
    SLOT_INDEX.with(|cached| cached.set(index));
    index
}

/// Bounds (seconds) of the duration histograms of swaps and rollbacks: 10 µs to 10 s.
pub const DURATION_BOUNDS: &[f64] =
    &[1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0, 10.0];

/// A histogram of durations, as Prometheus describes one.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Histogram {
    /// The upper bounds of the buckets, in seconds ([`DURATION_BOUNDS`]).
    pub bounds: &'static [f64],
    /// How many observations fell in each bucket (not cumulative): one per bound, then one for
    /// those above the last bound.
    pub buckets: Vec<u64>,
    /// The sum of the observations, in seconds.
    pub sum: f64,
    /// How many observations there were.
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            bounds: DURATION_BOUNDS,
            buckets: vec![0; DURATION_BOUNDS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    fn observe(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = self.bounds.iter().position(|b| seconds <= *b).unwrap_or(self.bounds.len());
        if let Some(count) = self.buckets.get_mut(bucket) {
            *count += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// A service's operations: swaps and rollbacks, counted and timed.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct OperationMetrics {
    /// Swaps (and replaces, and canary promotions) that published a new build.
    pub swaps: u64,
    /// Rollbacks asked for by an operator.
    pub rollbacks_manual: u64,
    /// Rollbacks the runtime made by itself (a failed probation or health check).
    pub rollbacks_automatic: u64,
    /// How long the swaps took, from the call to the publication.
    pub swap_seconds: Histogram,
    /// How long the rollbacks took.
    pub rollback_seconds: Histogram,
}

/// One version's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VersionMetrics {
    /// The plugin version.
    pub version: Version,
    /// The calls every generation of this version has answered, retired ones included.
    pub counts: CallCounts,
}

/// A service's metrics, in its [`ServiceStatus`](crate::ServiceStatus).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ServiceMetrics {
    /// The calls answered by each version that ever served, sorted by version.
    pub versions: Vec<VersionMetrics>,
    /// Its swaps and rollbacks.
    pub operations: OperationMetrics,
}

/// A service's metrics as the runtime keeps them: the counters of its live generations, and the
/// totals of versions whose generations are gone.
#[derive(Debug, Default)]
pub(crate) struct SlotMetrics {
    inner: Mutex<SlotMetricsInner>,
}

#[derive(Debug, Default)]
struct SlotMetricsInner {
    live: Vec<(Version, Arc<CallCounters>)>,
    /// Each version's counts from generations that are gone.
    gone: Vec<(Version, CallCounts)>,
    operations: OperationMetrics,
}

impl SlotMetrics {
    /// Registers a new generation's counters; folds those of generations gone since.
    pub fn track(&self, version: &Version, counters: &Arc<CallCounters>) {
        let mut inner = self.inner.lock();
        inner.fold_gone();
        inner.live.push((version.clone(), Arc::clone(counters)));
    }

    pub fn swapped(&self, took: Duration) {
        let mut inner = self.inner.lock();
        inner.operations.swaps += 1;
        inner.operations.swap_seconds.observe(took);
    }

    pub fn rolled_back(&self, automatic: bool, took: Duration) {
        let mut inner = self.inner.lock();
        match automatic {
            true => inner.operations.rollbacks_automatic += 1,
            false => inner.operations.rollbacks_manual += 1,
        }
        inner.operations.rollback_seconds.observe(took);
    }

    pub fn snapshot(&self) -> ServiceMetrics {
        let mut inner = self.inner.lock();
        inner.fold_gone();
        let mut versions: Vec<VersionMetrics> = inner
            .gone
            .iter()
            .map(|(version, counts)| VersionMetrics { version: version.clone(), counts: *counts })
            .collect();
        for (version, counters) in &inner.live {
            let counts = counters.snapshot();
            match versions.iter_mut().find(|v| v.version == *version) {
                Some(known) => known.counts.add(counts),
                None => versions.push(VersionMetrics { version: version.clone(), counts }),
            }
        }
        versions.sort_by(|a, b| a.version.cmp(&b.version));
        ServiceMetrics { versions, operations: inner.operations.clone() }
    }
}

impl SlotMetricsInner {
    /// Moves the counts of generations no longer alive (only this registry holds their
    /// counters) into their version's total.
    fn fold_gone(&mut self) {
        let mut index = HashMap::new();
        for (at, (version, _)) in self.gone.iter().enumerate() {
            index.insert(version.clone(), at);
        }
        let mut kept = Vec::with_capacity(self.live.len());
        for (version, counters) in self.live.drain(..) {
            if Arc::strong_count(&counters) > 1 {
                kept.push((version, counters));
                continue;
            }
            let counts = counters.snapshot();
            match index.get(&version) {
                Some(&at) => self.gone[at].1.add(counts),
                None => {
                    index.insert(version.clone(), self.gone.len());
                    self.gone.push((version, counts));
                }
            }
        }
        self.live = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up_exactly() {
        let counters = CallCounters::new();
        // More threads than slots, so that the overflow shard is used too.
        std::thread::scope(|scope| {
            for n in 0..(SLOTS + 8) {
                let counters = &counters;
                scope.spawn(move || {
                    for i in 0..1_000 {
                        let status = match (n + i) % 10 {
                            0 => STATUS_REFUSED,
                            1 => STATUS_PANIC,
                            2 => graft_plugin_api::abi::STATUS_ERROR,
                            3 => STATUS_DEPENDENCY,
                            _ => STATUS_OK,
                        };
                        counters.record(status);
                    }
                });
            }
        });
        let counts = counters.snapshot();
        let threads = (SLOTS + 8) as u64;
        assert_eq!(counts.calls, threads * 1_000);
        assert_eq!(counts.refusals, threads * 100);
        assert_eq!(counts.panics, threads * 100);
        assert_eq!(counts.failures, threads * 100);
    }

    #[test]
    fn a_slot_is_given_back_when_its_thread_exits() {
        let first = std::thread::spawn(thread_slot).join().unwrap();
        assert!(first < SLOTS);
        // The same slot (or another free one) is handed out again: exits do not leak slots.
        for _ in 0..(SLOTS * 4) {
            assert!(std::thread::spawn(thread_slot).join().unwrap() < SLOTS);
        }
    }

    #[test]
    fn gone_generations_keep_counting_for_their_version() {
        let metrics = SlotMetrics::default();
        let v1 = Version::new(1, 0, 0);
        let first = CallCounters::new();
        metrics.track(&v1, &first);
        first.record(STATUS_OK);
        first.record(STATUS_REFUSED);
        drop(first);
        let second = CallCounters::new();
        metrics.track(&v1, &second);
        second.record(STATUS_PANIC);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.versions.len(), 1);
        assert_eq!(snapshot.versions[0].counts.calls, 3);
        assert_eq!(snapshot.versions[0].counts.refusals, 1);
        assert_eq!(snapshot.versions[0].counts.panics, 1);
        metrics.swapped(Duration::from_micros(30));
        metrics.rolled_back(true, Duration::from_secs(20));
        let operations = metrics.snapshot().operations;
        assert_eq!((operations.swaps, operations.rollbacks_automatic), (1, 1));
        assert_eq!(operations.swap_seconds.buckets[1], 1, "30 µs is in the 50 µs bucket");
        assert_eq!(operations.rollback_seconds.buckets[DURATION_BOUNDS.len()], 1);
    }
}
