//! A service's [`Slot`]: the lease callers read, the control state its operations change under
//! its lock, the snapshot `status` reads, and [`Shared::publish`], the one way an operation puts
//! a new generation in service.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use parking_lot::{Mutex, RwLock};
use semver::VersionReq;

use super::{CanaryStatus, Dependency, GenerationStatus, ServiceStatus, Shared};
use crate::generation::{Gate, Generation, GenerationWatch, Lease};
use crate::history::SavedState;
use crate::loader::Plugin;
use crate::probation::Probation;

/// One service: the lease callers read, and the control state operations change.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: String,
    /// The published state. Calls `load()` it; operations `store()` a new one.
    pub(crate) current: ArcSwap<Lease>,
    /// The services it depends on, readable without the control lock.
    pub(crate) dependencies: ArcSwap<Vec<Dependency>>,
    /// The last outcome of a periodic health check.
    pub(crate) healthy: AtomicBool,
    /// What `status` reports besides the state, refreshed by every operation, so that reading it
    /// never waits for one (the lock is held only to swap or clone the pointer).
    pub(super) info: RwLock<Arc<SlotInfo>>,
    pub(crate) shared: Weak<Shared>,
    /// Held for the whole of an operation on this service, so two never interleave.
    pub(super) control: Mutex<Control>,
    /// Its calls per version, and its swaps and rollbacks.
    pub(crate) metrics: crate::metrics::SlotMetrics,
}

#[derive(Debug)]
pub(super) struct Control {
    /// The build new instances (start, restart) are made from.
    pub(super) plugin: Arc<Plugin>,
    /// Its dependencies (the descriptor's and the host's).
    pub(super) dependencies: Arc<Vec<Dependency>>,
    /// The generation published (running or paused), if any.
    pub(super) serving: Option<Arc<Generation>>,
    /// The gate paused calls wait on, while paused.
    pub(super) pause_gate: Option<Arc<Gate>>,
    /// Earlier generations kept loaded as rollback targets, most recent first, each with its
    /// dependencies.
    pub(super) history: VecDeque<(Arc<Generation>, Arc<Vec<Dependency>>)>,
    pub(super) interface: Arc<str>,
    pub(super) requirement: Arc<VersionReq>,
    /// Extra dependencies the host gave at load; they apply to every build of the service.
    pub(super) host_dependencies: Vec<Dependency>,
    /// Whether an operator wants it running: set by start, cleared by stop. An automatic
    /// restart after a failed start happens only while it is set.
    pub(super) wants_running: bool,
    /// The probation window of the serving generation, while one is open.
    pub(super) probation: Option<Arc<Probation>>,
    /// Set by `unload`: the slot left the registry, and no operation may bring it back.
    pub(super) unloaded: bool,
    /// The canary release running, if one is.
    pub(super) canary: Option<Canary>,
    /// A stateful service's state, exported when it stopped (or read back by `restore`): the
    /// next start creates its instance from it.
    pub(super) saved_state: Option<SavedState>,
    /// The gate an operation opened last, whose woken calls the next handover lets pass first
    /// (see [`Gate::wait_passed`]).
    pub(super) opened: Option<Arc<Gate>>,
}

/// A canary release: a generation of a new build taking a share of the calls.
#[derive(Debug)]
pub(super) struct Canary {
    pub(super) generation: Arc<Generation>,
    pub(super) plugin: Arc<Plugin>,
    pub(super) dependencies: Arc<Vec<Dependency>>,
    pub(super) requirement: Arc<VersionReq>,
    /// The counters its calls are judged by.
    pub(super) judge: Arc<Probation>,
    pub(super) weight: f64,
    pub(super) threshold: u64,
}

impl Control {
    /// Opens `gate`: the calls waiting on it read the service's publication again.
    pub(super) fn open(&mut self, gate: Arc<Gate>) {
        gate.open();
        self.opened = Some(gate);
    }

    /// The lease that publishes `generation` as the service's situation says: behind the
    /// pause gate while paused; otherwise serving, under the open probation window, beside
    /// the canary if one is released.
    pub(super) fn lease(&self, generation: &Arc<Generation>) -> Lease {
        let generation = Arc::clone(generation);
        match (&self.pause_gate, &self.canary) {
            (Some(gate), _) => Lease::paused(generation, Arc::clone(gate)),
            (None, Some(canary)) => Lease::with_canary(
                generation,
                self.probation.clone(),
                Arc::clone(&canary.generation),
                Arc::clone(&canary.judge),
                canary.threshold,
            ),
            (None, None) => Lease::serving(generation, self.probation.clone()),
        }
    }
}

/// The part of a service's status that only operations change: shared references, so that an
/// operation refreshes it for the price of a few reference counts. It is refreshed before a
/// generation is retired, so it never keeps a retired generation loaded.
#[derive(Debug)]
pub(super) struct SlotInfo {
    pub(super) plugin: Arc<Plugin>,
    interface: Arc<str>,
    requirement: Arc<VersionReq>,
    dependencies: Arc<Vec<Dependency>>,
    current: Option<Arc<Generation>>,
    history: Vec<Arc<Generation>>,
    canary: Option<(Arc<Generation>, f64, Arc<Probation>)>,
}

impl SlotInfo {
    pub(super) fn of(control: &Control) -> SlotInfo {
        SlotInfo {
            plugin: Arc::clone(&control.plugin),
            interface: Arc::clone(&control.interface),
            requirement: Arc::clone(&control.requirement),
            dependencies: Arc::clone(&control.dependencies),
            current: control.serving.clone(),
            history: control.history.iter().map(|(g, _)| Arc::clone(g)).collect(),
            canary: control
                .canary
                .as_ref()
                .map(|c| (Arc::clone(&c.generation), c.weight, Arc::clone(&c.judge))),
        }
    }
}

impl Slot {
    /// Stores what `status` reports, after an operation changed `control`.
    pub(super) fn refresh(&self, control: &Control) {
        let info = Arc::new(SlotInfo::of(control));
        // The old snapshot is dropped after the lock is released.
        let _old = std::mem::replace(&mut *self.info.write(), info);
    }

    /// Waits until no operation runs on this service (for one that has begun).
    pub(crate) fn wait_for_operation(&self) {
        drop(self.control.lock());
    }

    pub(super) fn status(&self) -> ServiceStatus {
        let info = Arc::clone(&self.info.read());
        ServiceStatus {
            service: self.name.clone(),
            state: self.current.load().state(),
            version: info.plugin.info().plugin_version.clone(),
            interface: info.interface.to_string(),
            requirement: VersionReq::clone(&info.requirement),
            dependencies: info.dependencies.to_vec(),
            current: info.current.as_deref().map(GenerationStatus::of),
            history: info.history.iter().map(|g| GenerationStatus::of(g)).collect(),
            canary: info.canary.as_ref().map(|(generation, weight, judge)| {
                let (calls, failures) = judge.counts();
                CanaryStatus {
                    generation: GenerationStatus::of(generation),
                    weight: *weight,
                    calls,
                    failures,
                }
            }),
            healthy: self.healthy.load(Ordering::Relaxed),
            metrics: self.metrics.snapshot(),
        }
    }
}

impl Shared {
    /// Publishes `generation` for `slot` (paused if the service is paused), pushes the one it
    /// replaces onto the history and retires what falls off the end of it. Returns a watch on
    /// the replaced generation.
    pub(super) fn publish(
        &self,
        slot: &Slot,
        control: &mut Control,
        generation: Arc<Generation>,
        dependencies: Arc<Vec<Dependency>>,
        probation: Option<Arc<Probation>>,
        plugin: Arc<Plugin>,
    ) -> GenerationWatch {
        control.plugin = plugin;
        control.probation = probation;
        slot.current.store(Arc::new(control.lease(&generation)));
        // Most publications keep the dependencies: skip the store (and its wait for readers).
        if **slot.dependencies.load() != *dependencies {
            slot.dependencies.store(Arc::clone(&dependencies));
        }
        let old_dependencies = std::mem::replace(&mut control.dependencies, dependencies);
        let old = control.serving.replace(generation);
        // `publish` is only called with a generation serving (checked by the callers).
        let Some(old) = old else {
            slot.refresh(control);
            return GenerationWatch::detached();
        };
        let watch = old.watch();
        control.history.push_front((old, old_dependencies));
        let excess = control.history.len().saturating_sub(self.config.history_depth);
        let retired: Vec<_> = (0..excess).filter_map(|_| control.history.pop_back()).collect();
        // Refreshed first, so that the status snapshot holds no retired generation.
        slot.refresh(control);
        for (generation, _) in retired {
            generation.retire();
        }
        watch
    }
}
