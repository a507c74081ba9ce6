//! A service's lifecycle: load (register), start, stop, restart, pause, resume, reset, fail and
//! unload, and the restore of what a state directory records. Each operation takes the service's
//! control lock, checks, publishes a new lease and emits its event.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::{Mutex, MutexGuard, RwLock};
use semver::{Version, VersionReq};

use super::handoff::Quiesced;
use super::slot::{Control, SlotInfo};
use super::{
    Dependency, LoadReport, OwnedNodes, ServiceState, Shared, Slot, StopReport, SwapReport,
};
use crate::events::EventKind;
use crate::generation::{Gate, Generation, GenerationId, Lease};
use crate::graph;
use crate::history::SavedState;
use crate::host::host_api;
use crate::loader::Plugin;
use crate::supervisor::SupervisorEvent;
use crate::{Error, gate};

/// How to load a plugin: under which name, with which extra dependencies.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    name: Option<String>,
    dependencies: Vec<Dependency>,
}

impl LoadOptions {
    /// Registers the service under `name` instead of the descriptor's name, so that one build
    /// can serve several services (as a systemd template unit does). A swap of such a service
    /// needs a build that declares the descriptor's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a dependency the descriptor does not declare (the host's word wins over the
    /// descriptor's for the same service).
    pub fn depends_on(mut self, service: impl Into<String>, requirement: VersionReq) -> Self {
        self.dependencies.push(Dependency { service: service.into(), requirement });
        self
    }
}

impl Shared {
    pub(super) fn load(&self, path: &Path, options: LoadOptions) -> Result<LoadReport, Error> {
        let started = Instant::now();
        let plugin = self.loader.load(path).inspect_err(refused(None))?;
        self.register(plugin, options, started)
    }

    /// Registers an already loaded plugin as a new service.
    pub(super) fn register(
        &self,
        plugin: Plugin,
        options: LoadOptions,
        started: Instant,
    ) -> Result<LoadReport, Error> {
        let info = plugin.info().clone();
        // Hashed only for the state directory (before the plugin moves into the slot).
        let sha256 = self.store.as_ref().map(|_| plugin.sha256().to_owned()).unwrap_or_default();
        let name = options.name.clone().unwrap_or_else(|| info.service.clone());
        // Names become file names in the state directory: check every one that enters here.
        crate::validate_name(&name).inspect_err(refused(None))?;
        crate::validate_name(&info.service).inspect_err(refused(None))?;
        if let Ok(existing) = self.slot(&name) {
            return Err(Error::AlreadyLoaded {
                service: name,
                version: existing.info.read().plugin.info().plugin_version.clone(),
            });
        }
        let requirement = match self.requirements.get(&name) {
            Some(requirement) => requirement.clone(),
            None => gate::default_requirement(&info.interface_version),
        };
        gate::check_load(&info, &requirement).inspect_err(refused(None))?;
        self.check_interfaces(&name, &info).inspect_err(refused(None))?;
        let dependencies = Arc::new(merge(&plugin, &options.dependencies));
        validate_dependencies(&dependencies).inspect_err(refused(None))?;
        let saved_state = self.saved_state(&name)?;
        let control = Control {
            plugin: Arc::new(plugin),
            dependencies: Arc::clone(&dependencies),
            serving: None,
            pause_gate: None,
            history: VecDeque::new(),
            interface: Arc::from(info.interface.as_str()),
            requirement: Arc::new(requirement),
            host_dependencies: options.dependencies,
            wants_running: false,
            probation: None,
            unloaded: false,
            saved_state,
            opened: None,
            canary: None,
        };
        let slot = Arc::new(Slot {
            name: name.clone(),
            current: ArcSwap::from_pointee(Lease::closed(ServiceState::Loaded)),
            dependencies: ArcSwap::new(Arc::clone(&dependencies)),
            healthy: AtomicBool::new(true),
            info: RwLock::new(Arc::new(SlotInfo::of(&control))),
            shared: self.me.clone(),
            control: Mutex::new(control),
            metrics: Default::default(),
        });
        {
            let mut services = self.services.write();
            if let Some(existing) = services.get(&name) {
                // Read without any lock: a control lock taken under this write lock could wait
                // for an operation that itself waits for a read lock here.
                let version = existing.info.read().plugin.info().plugin_version.clone();
                return Err(Error::AlreadyLoaded { service: name, version });
            }
            // Under the write lock, so that two loads cannot each miss the other's edges.
            let mut nodes: Vec<(String, Vec<String>)> = services
                .values()
                .map(|s| {
                    (
                        s.name.clone(),
                        s.dependencies.load().iter().map(|d| d.service.clone()).collect(),
                    )
                })
                .collect();
            nodes.push((name.clone(), dependencies.iter().map(|d| d.service.clone()).collect()));
            if let Some(cycle) = graph::find_cycle(&OwnedNodes(nodes).as_nodes()) {
                let error = Error::DependencyCycle { cycle: cycle.0 };
                refused(None)(&error);
                return Err(error);
            }
            services.insert(name.clone(), slot);
        }
        tracing::info!(
            service = %name,
            version = %info.plugin_version,
            interface = %info.interface,
            interface_version = %info.interface_version,
            path = %info.source.display(),
            "service loaded"
        );
        self.hooks.events.emit(&name, &info.plugin_version, EventKind::Loaded);
        if let Some(store) = &self.store
            && store.manifest(&name)?.is_none()
        {
            // The first build of a service is its first known-good one.
            let entry =
                store.archive(&name, &info.plugin_version.to_string(), &info.staged, &sha256)?;
            let manifest =
                crate::Manifest { service: name.clone(), current: entry.clone(), committed: entry };
            store.write(&manifest, "load")?;
        }
        Ok(LoadReport { service: name, info, took: started.elapsed() })
    }

    /// Creates and health-checks an instance of `plugin` serving as `service`: a new one, or
    /// one made from `state` (a format version and bytes another instance exported).
    pub(super) fn instantiate(
        &self,
        service: &str,
        plugin: &Arc<Plugin>,
        state: Option<(u32, &[u8])>,
    ) -> Result<Arc<Generation>, Error> {
        let _creating = crate::handle::Occupied::enter(self.id, service, ServiceState::Starting);
        let id = GenerationId(self.next_generation.fetch_add(1, Ordering::Relaxed));
        let version = plugin.info().plugin_version.to_string();
        let host = host_api(self.id, &self.me, service, &version);
        let generation = Generation::start(
            Arc::clone(plugin),
            Arc::from(service),
            id,
            host,
            self.hooks.clone(),
            state,
        )?;
        if let Err(error) = generation.check_health() {
            // Destroyed on the retire thread; wait for it, so that a refused build is gone (its
            // staged file too) when the operation returns, as if it had never been loaded.
            let watch = generation.watch();
            drop(generation);
            let _ = watch.wait_retired(self.config.stop_deadline);
            return Err(error);
        }
        // Counted for its service and version from its first call (health checks are not
        // calls). A service being loaded has no slot yet; its instances start later.
        if let Ok(slot) = self.slot(service) {
            slot.metrics.track(generation.version(), generation.counters());
        }
        Ok(Arc::new(generation))
    }

    /// Checks that every one of `dependencies` runs at a satisfying interface version.
    pub(super) fn check_dependencies(
        &self,
        service: &str,
        dependencies: &[Dependency],
    ) -> Result<(), Error> {
        for dependency in dependencies {
            let Ok(slot) = self.slot(&dependency.service) else {
                return Err(Error::DependencyNotRunning {
                    service: service.to_owned(),
                    dependency: dependency.service.clone(),
                    state: None,
                });
            };
            let lease = slot.current.load();
            let Some(generation) = lease.generation().filter(|_| lease.state().is_up()) else {
                return Err(Error::DependencyNotRunning {
                    service: service.to_owned(),
                    dependency: dependency.service.clone(),
                    state: Some(lease.state()),
                });
            };
            let found = &generation.info().interface_version;
            if !dependency.requirement.matches(found) {
                return Err(Error::DependencyMismatch {
                    service: service.to_owned(),
                    dependency: dependency.service.clone(),
                    required: Box::new(dependency.requirement.clone()),
                    found: found.clone(),
                });
            }
        }
        Ok(())
    }

    /// The services that depend on `service` and have an instance (or are starting one).
    fn running_dependents(&self, service: &str) -> Vec<String> {
        let services = self.services.read();
        let mut dependents: Vec<String> = services
            .values()
            .filter(|slot| slot.dependencies.load().iter().any(|d| d.service == service))
            .filter(|slot| {
                let state = slot.current.load().state();
                state.is_up() || state == ServiceState::Starting
            })
            .map(|slot| slot.name.clone())
            .collect();
        dependents.sort();
        dependents
    }

    /// Starts `slot`. With `automatic` (the supervisor's restart after a failure), only if an
    /// operator still wants it running: a stop since the failure cancels the restart.
    pub(crate) fn start_one(&self, slot: &Slot, automatic: bool) -> Result<(), Error> {
        let mut control = slot.control.lock();
        let previous = slot.current.load().state();
        match previous {
            ServiceState::Running | ServiceState::Paused => return Ok(()),
            ServiceState::Failed | ServiceState::Starting => {
                return Err(Error::InvalidState {
                    service: slot.name.clone(),
                    operation: "start",
                    state: previous,
                });
            }
            ServiceState::Loaded | ServiceState::Stopped => {}
        }
        if automatic && !control.wants_running {
            return Ok(());
        }
        if control.unloaded {
            return Err(Error::UnknownService { service: slot.name.clone() });
        }
        control.wants_running = true;
        let gate = Gate::new();
        {
            // Checked and published as one step: a stop of a dependency cannot slip in between.
            let _dependencies = self.dependency_lock.lock();
            self.check_dependencies(&slot.name, &control.dependencies)?;
            slot.current.store(Arc::new(Lease::starting(Arc::clone(&gate))));
        }
        // Should host code panic before the outcome is published (a bug, but one that must not
        // leave the service starting for ever with every caller waiting on its gate), publish
        // the state before the start and open the gate on the way out.
        let _unwinding = OnUnwind::new(|| {
            slot.current.store(Arc::new(Lease::closed(previous)));
            gate.open();
        });
        #[cfg(test)]
        tests::panic_point("start/starting");
        let result = self.start_instance(slot, &mut control);
        let outcome = match result {
            Ok(generation) => {
                let version = generation.version().clone();
                let id = generation.id();
                slot.current.store(Arc::new(Lease::serving(Arc::clone(&generation), None)));
                control.serving = Some(generation);
                control.probation = None;
                slot.healthy.store(true, Ordering::Relaxed);
                slot.refresh(&control);
                tracing::info!(service = %slot.name, version = %version, generation = %id, "service started");
                self.hooks.events.emit(&slot.name, &version, EventKind::Started { generation: id });
                let _ =
                    self.supervisor.send(SupervisorEvent::Started { service: slot.name.clone() });
                Ok(())
            }
            Err(error) => {
                slot.current.store(Arc::new(Lease::closed(previous)));
                let version = control.plugin.info().plugin_version.clone();
                tracing::warn!(service = %slot.name, version = %version, %error, "start failed");
                let _ = self.supervisor.send(SupervisorEvent::StartFailed {
                    service: slot.name.clone(),
                    version,
                    error: error.to_string(),
                });
                Err(error)
            }
        };
        // Calls waiting for the start read the new state.
        control.open(Arc::clone(&gate));
        outcome
    }

    /// The state the state directory holds for service `name`, read as it is loaded: its next
    /// start creates its instance from it, whether the host restores or loads it by hand.
    fn saved_state(&self, name: &str) -> Result<Option<SavedState>, Error> {
        let Some(store) = &self.store else { return Ok(None) };
        match store.read_state(name) {
            Err(error) if self.config.start_empty_on_bad_state => {
                tracing::error!(service = %name, %error, "the saved state cannot be used; starting empty, as configured");
                Ok(None)
            }
            read => read,
        }
    }

    /// Saves the state of the stateful `slot` now, as a stop would, and lets it serve on:
    /// calls are held back while the running ones return, the state is exported and written
    /// to the state directory. A host that calls it periodically bounds what a crash loses.
    pub(super) fn save_state(&self, slot: &Slot) -> Result<(), Error> {
        let Some(store) = &self.store else {
            return Err(Error::NoStateDir);
        };
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        let Some(serving) = control.serving.clone().filter(|_| state.is_up()) else {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "save the state of",
                state,
            });
        };
        if serving.info().state_format.is_none() {
            return Err(Error::Stateless {
                service: slot.name.clone(),
                version: serving.version().clone(),
            });
        }
        let quiesced = self.quiesce(slot, &mut control, &serving)?;
        let (format, bytes) = quiesced.state.clone();
        quiesced.resume(slot, &mut control);
        // Written under the service's lock (calls flow again), so that two saves land in order.
        let saved = SavedState { format, version: serving.version().to_string(), bytes };
        store.write_state(&slot.name, &saved)?;
        drop(control);
        tracing::info!(service = %slot.name, version = %serving.version(), format, bytes = saved.bytes.len(), "state saved");
        Ok(())
    }

    /// Creates a starting service's instance: from its saved state if it has one (which is
    /// kept for the next start should this one fail).
    fn start_instance(&self, slot: &Slot, control: &mut Control) -> Result<Arc<Generation>, Error> {
        let Some(saved) = control.saved_state.take() else {
            return self.instantiate(&slot.name, &control.plugin, None);
        };
        let result =
            self.instantiate(&slot.name, &control.plugin, Some((saved.format, &saved.bytes)));
        match result {
            Err(
                Error::StateRefused { .. }
                | Error::StateImportFailed { .. }
                | Error::WouldLoseState { .. },
            ) if self.config.start_empty_on_bad_state => {
                let error = result.err().map(|e| e.to_string()).unwrap_or_default();
                tracing::error!(service = %slot.name, %error, "the saved state cannot be used; starting empty, as configured");
                self.instantiate(&slot.name, &control.plugin, None)
            }
            Err(error) => {
                control.saved_state = Some(saved);
                Err(error)
            }
            Ok(generation) => {
                tracing::info!(service = %slot.name, format = saved.format, bytes = saved.bytes.len(), from = %saved.version, "instance created from the saved state");
                Ok(generation)
            }
        }
    }

    /// Stops a stateful service: as [`Shared::stop_one`], but its calls are held back while
    /// the running ones return (within the stop deadline, under the service's lock), its state
    /// is exported, kept for the next start and written to the state directory, and only then
    /// is it stopped. If the export or the write fails it keeps serving, and the stop is
    /// refused with that error: nothing is lost.
    fn stop_stateful(
        &self,
        slot: &Slot,
        mut control: MutexGuard<'_, Control>,
        serving: Arc<Generation>,
    ) -> Result<StopReport, Error> {
        // Refused before any pause when dependents run (and checked again before the stop).
        let dependents = self.running_dependents(&slot.name);
        if !dependents.is_empty() {
            return Err(Error::DependentsRunning { service: slot.name.clone(), dependents });
        }
        let quiesced =
            self.quiesce_within(slot, &mut control, &serving, self.config.stop_deadline)?;
        let (format, bytes) = quiesced.state.clone();
        let saved = SavedState { format, version: serving.version().to_string(), bytes };
        if let Some(store) = &self.store
            && let Err(error) = store.write_state(&slot.name, &saved)
        {
            quiesced.resume(slot, &mut control);
            return Err(error);
        }
        {
            let _dependencies = self.dependency_lock.lock();
            let dependents = self.running_dependents(&slot.name);
            if !dependents.is_empty() {
                quiesced.resume(slot, &mut control);
                return Err(Error::DependentsRunning { service: slot.name.clone(), dependents });
            }
            slot.current.store(Arc::new(Lease::closed(ServiceState::Stopped)));
        }
        control.wants_running = false;
        let _ = self.supervisor.send(SupervisorEvent::Stopped { service: slot.name.clone() });
        control.saved_state = Some(saved);
        control.serving = None;
        control.probation = None;
        if let Some(gate) = control.pause_gate.take() {
            gate.open();
        }
        quiesced.release(&mut control);
        slot.refresh(&control);
        drop(control);
        let version = serving.version().clone();
        let watch = serving.watch();
        serving.retire();
        let drained = watch.wait_retired(self.config.stop_deadline).is_ok();
        tracing::info!(service = %slot.name, version = %version, format, "service stopped; its state is saved");
        self.hooks.events.emit(&slot.name, &version, EventKind::Stopped);
        Ok(StopReport { service: slot.name.clone(), state: ServiceState::Stopped, drained })
    }

    /// Stops `slot`, unless services that depend on it run (those of a cascade are stopped in
    /// an earlier wave). The control lock is released before the wait for running calls, so
    /// nothing that needs it (the supervisor, another operation) can hold the drain up.
    pub(crate) fn stop_one(&self, slot: &Slot) -> Result<StopReport, Error> {
        let started = Instant::now();
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        if control.serving.is_none() {
            // A stop also cancels a pending automatic restart.
            control.wants_running = false;
            let _ = self.supervisor.send(SupervisorEvent::Stopped { service: slot.name.clone() });
            return Ok(StopReport { service: slot.name.clone(), state, drained: true });
        }
        if let Some(serving) = control.serving.clone().filter(|g| g.info().state_format.is_some()) {
            return self.stop_stateful(slot, control, serving);
        }
        {
            let _dependencies = self.dependency_lock.lock();
            let dependents = self.running_dependents(&slot.name);
            if !dependents.is_empty() {
                // Refused: the service goes on as it was, still wanted running.
                return Err(Error::DependentsRunning { service: slot.name.clone(), dependents });
            }
            slot.current.store(Arc::new(Lease::closed(ServiceState::Stopped)));
        }
        control.wants_running = false;
        let _ = self.supervisor.send(SupervisorEvent::Stopped { service: slot.name.clone() });
        self.drop_canary(slot, &mut control, "the service stopped", false);
        let Some(serving) = control.serving.take() else {
            return Ok(StopReport { service: slot.name.clone(), state, drained: true });
        };
        control.probation = None;
        if let Some(gate) = control.pause_gate.take() {
            // Paused calls wake up, see the service stopped and fail at once.
            gate.open();
        }
        slot.refresh(&control);
        drop(control);
        let version = serving.version().clone();
        let watch = serving.watch();
        serving.retire();
        let deadline = self.config.stop_deadline;
        let drained = watch.wait_drained(deadline).is_ok()
            && watch.wait_retired(deadline.saturating_sub(started.elapsed())).is_ok();
        if !drained {
            tracing::warn!(service = %slot.name, version = %version, deadline = ?deadline,
                "stop deadline passed with calls still running; the instance is destroyed when they return");
        }
        tracing::info!(service = %slot.name, version = %version, drained, "service stopped");
        self.hooks.events.emit(&slot.name, &version, EventKind::Stopped);
        Ok(StopReport { service: slot.name.clone(), state: ServiceState::Stopped, drained })
    }

    pub(crate) fn restart_one(&self, slot: &Slot) -> Result<SwapReport, Error> {
        let started = Instant::now();
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        let Some(old) = control.serving.clone() else {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "restart",
                state,
            });
        };
        if let Some(canary) = &control.canary {
            return Err(Error::CanaryInProgress {
                service: slot.name.clone(),
                operation: "restart",
                canary: canary.generation.version().clone(),
            });
        }
        // A stateful instance hands its state to the next one, as in a swap.
        let handoff = match old.info().state_format {
            Some(_) => Some(self.quiesce(slot, &mut control, &old)?),
            None => None,
        };
        let state = handoff.as_ref().and_then(Quiesced::state);
        let generation = match self.instantiate(&slot.name, &control.plugin, state) {
            Ok(generation) => generation,
            Err(error) => {
                if let Some(handoff) = handoff {
                    handoff.resume(slot, &mut control);
                }
                return Err(error);
            }
        };
        let version = generation.version().clone();
        let id = generation.id();
        // A restart during probation opens a new window for the new instance of the same build.
        let probation = control.probation.as_ref().and_then(|_| self.probation_for(&generation));
        control.probation = probation.clone();
        slot.current.store(Arc::new(control.lease(&generation)));
        control.serving = Some(generation);
        slot.refresh(&control);
        if let Some(handoff) = handoff {
            handoff.release(&mut control);
        }
        drop(control);
        if let Some(probation) = probation {
            let _ = self
                .supervisor
                .send(SupervisorEvent::Probation { service: slot.name.clone(), probation });
        }
        let watch = old.watch();
        old.retire();
        tracing::info!(service = %slot.name, version = %version, generation = %id, "service restarted");
        self.hooks.events.emit(&slot.name, &version, EventKind::Restarted { generation: id });
        Ok(SwapReport {
            service: slot.name.clone(),
            from: version.clone(),
            to: version,
            generation: id,
            previous: watch,
            took: started.elapsed(),
        })
    }

    pub(super) fn pause_one(&self, slot: &Slot) -> Result<(), Error> {
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        let Some(serving) = control.serving.clone().filter(|_| state == ServiceState::Running)
        else {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "pause",
                state,
            });
        };
        let gate = Gate::new();
        slot.current.store(Arc::new(Lease::paused(Arc::clone(&serving), Arc::clone(&gate))));
        control.pause_gate = Some(gate);
        tracing::info!(service = %slot.name, version = %serving.version(), "service paused");
        self.hooks.events.emit(&slot.name, serving.version(), EventKind::Paused);
        Ok(())
    }

    pub(super) fn resume_one(&self, slot: &Slot) -> Result<(), Error> {
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        let (Some(serving), Some(gate)) = (control.serving.clone(), control.pause_gate.take())
        else {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "resume",
                state,
            });
        };
        // A window still open when the service was paused goes on counting, and a canary
        // released before takes its share again.
        slot.current.store(Arc::new(control.lease(&serving)));
        control.open(gate);
        tracing::info!(service = %slot.name, version = %serving.version(), "service resumed");
        self.hooks.events.emit(&slot.name, serving.version(), EventKind::Resumed);
        Ok(())
    }

    pub(super) fn reset_one(&self, slot: &Slot) -> Result<(), Error> {
        let _control = slot.control.lock();
        let state = slot.current.load().state();
        if state != ServiceState::Failed {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "reset",
                state,
            });
        }
        slot.current.store(Arc::new(Lease::closed(ServiceState::Stopped)));
        let _ = self.supervisor.send(SupervisorEvent::Reset { service: slot.name.clone() });
        Ok(())
    }

    /// Marks `slot` failed for good (the restart policy gave up); called by the supervisor.
    pub(crate) fn fail(&self, slot: &Slot, reason: &str) {
        let control = slot.control.lock();
        let state = slot.current.load().state();
        if state.is_up() || state == ServiceState::Failed || !control.wants_running {
            return;
        }
        slot.current.store(Arc::new(Lease::closed(ServiceState::Failed)));
        let version = control.plugin.info().plugin_version.clone();
        tracing::error!(service = %slot.name, version = %version, reason, "service failed");
        self.hooks.events.emit(
            &slot.name,
            &version,
            EventKind::Failed { reason: reason.to_owned() },
        );
    }

    /// Removes `slot` from the registry; see [`Runtime::unload`](crate::Runtime::unload).
    pub(super) fn unload_one(&self, slot: &Arc<Slot>) -> Result<(), Error> {
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        if control.unloaded {
            return Err(Error::UnknownService { service: slot.name.clone() });
        }
        if control.serving.is_some()
            || !matches!(state, ServiceState::Loaded | ServiceState::Stopped | ServiceState::Failed)
        {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "unload",
                state,
            });
        }
        {
            // The check and the removal happen under the registry's write lock, which a load
            // takes to register a service: no dependent can be loaded in between.
            let _dependencies = self.dependency_lock.lock();
            let mut services = self.services.write();
            let mut dependents: Vec<String> = services
                .values()
                .filter(|other| other.name != slot.name)
                .filter(|other| other.dependencies.load().iter().any(|d| d.service == slot.name))
                .map(|other| other.name.clone())
                .collect();
            if !dependents.is_empty() {
                dependents.sort();
                return Err(Error::DependentsLoaded { service: slot.name.clone(), dependents });
            }
            if services.get(&slot.name).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                services.remove(&slot.name);
            }
        }
        control.unloaded = true;
        control.wants_running = false;
        let _ = self.supervisor.send(SupervisorEvent::Stopped { service: slot.name.clone() });
        slot.current.store(Arc::new(Lease::closed(ServiceState::Stopped)));
        let history: Vec<_> = control.history.drain(..).collect();
        slot.refresh(&control);
        let version = control.plugin.info().plugin_version.clone();
        drop(control);
        for (generation, _) in history {
            generation.retire();
        }
        tracing::info!(service = %slot.name, version = %version, "service unloaded");
        self.hooks.events.emit(&slot.name, &version, EventKind::Unloaded);
        Ok(())
    }

    /// Brings back every service the state directory records; see
    /// [`Runtime::restore`](crate::Runtime::restore).
    pub(super) fn restore(&self) -> Result<crate::BatchReport, Error> {
        let Some(store) = &self.store else {
            return Err(Error::NoStateDir);
        };
        let mut names = Vec::new();
        for manifest in store.manifests()? {
            let path = store.archived(&manifest.committed);
            let options = LoadOptions::default().name(manifest.service.clone());
            match self.load(&path, options) {
                Ok(_) | Err(Error::AlreadyLoaded { .. }) => names.push(manifest.service.clone()),
                Err(error) => return Err(error),
            }

            if manifest.current != manifest.committed {
                // It comes back on the committed build: that is now also the current one.
                let restored = crate::Manifest { current: manifest.committed.clone(), ..manifest };
                store.write(&restored, "restore")?;
            }
        }
        self.start_set(&names)
    }
}

/// Runs its closure if it is dropped while its thread unwinds from a panic that began after it
/// was made, and does nothing otherwise: the clean-up of a step that a normal return finishes
/// by itself.
struct OnUnwind<F: FnMut()> {
    restore: F,
    /// Whether the thread was unwinding already when the guard was made (an operation run from
    /// a destructor during a panic): then only a normal return is possible here, not a new
    /// unwind of this step.
    unwinding_before: bool,
}

impl<F: FnMut()> OnUnwind<F> {
    fn new(restore: F) -> Self {
        OnUnwind { restore, unwinding_before: std::thread::panicking() }
    }
}

impl<F: FnMut()> Drop for OnUnwind<F> {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.unwinding_before {
            (self.restore)();
        }
    }
}

/// Checks every dependency's name against the naming rule.
pub(super) fn validate_dependencies(dependencies: &[Dependency]) -> Result<(), Error> {
    dependencies.iter().try_for_each(|d| crate::validate_name(&d.service))
}

/// The dependencies of a build: its descriptor's, overridden and extended by the host's.
pub(super) fn merge(plugin: &Plugin, host: &[Dependency]) -> Vec<Dependency> {
    let mut merged: Vec<Dependency> = plugin
        .dependencies()
        .iter()
        .filter(|d| !host.iter().any(|h| h.service == d.service))
        .cloned()
        .collect();
    merged.extend(host.iter().cloned());
    merged
}

/// Logs a refused load or swap, with the service and its serving version when known.
pub(super) fn refused<'a>(serving: Option<(&'a str, &'a Version)>) -> impl Fn(&Error) + 'a {
    move |error| match serving {
        Some((service, version)) => {
            tracing::warn!(service, version = %version, %error, "swap refused; the serving version is untouched")
        }
        None => tracing::warn!(%error, "load refused"),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::Runtime;
    use std::cell::Cell;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::time::Duration;

    thread_local! {
        /// The host-side step at which this thread's next operation panics, if any.
        static PANIC_AT: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    /// Panics here if this thread asked for a panic at `name`: a stand-in for a host-side bug.
    pub(in crate::runtime) fn panic_point(name: &'static str) {
        if PANIC_AT.with(|at| at.get() == Some(name)) {
            PANIC_AT.with(|at| at.set(None));
            panic!("injected panic at {name}");
        }
    }

    #[test]
    fn on_unwind_runs_only_when_its_thread_panics() {
        let ran = Cell::new(0);
        drop(OnUnwind::new(|| ran.set(ran.get() + 1)));
        assert_eq!(ran.get(), 0, "a normal return must not run the clean-up");
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let _guard = OnUnwind::new(|| ran.set(ran.get() + 1));
            panic!("boom");
        }));
        assert!(outcome.is_err());
        assert_eq!(ran.get(), 1);
    }

    /// A host-side panic after the starting lease was published left the service starting for
    /// ever, so every call waited for a start that had died.
    #[test]
    fn a_host_panic_during_a_start_does_not_leave_the_service_starting() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::builder()
            .staging_dir(dir.path())
            // A call that waited for the gate would fail the test by its error, not hang it.
            .call_deadline(Duration::from_secs(60))
            .build()
            .unwrap();
        let path = graft_tests::path(graft_tests::Fixture::Worker).unwrap();
        runtime.load(&path).unwrap();
        PANIC_AT.with(|at| at.set(Some("start/starting")));
        let outcome = catch_unwind(AssertUnwindSafe(|| runtime.start("worker")));
        assert!(outcome.is_err(), "the injected panic did not happen");
        assert_eq!(runtime.state("worker").unwrap(), ServiceState::Loaded);
        // The gate is open and the lease closed: the call fails at once instead of waiting.
        assert!(matches!(runtime.call("worker", "noop", b""), Err(Error::Stopped { .. })));
        runtime.start("worker").unwrap();
        assert_eq!(runtime.call("worker", "whoami", b"").unwrap(), b"worker 1.0.0");
    }

    /// A stop refused because dependents run changes nothing: the service is still wanted
    /// running (so the supervisor would still restart it after a failed start), stateful or
    /// not.
    #[test]
    fn a_refused_stop_leaves_the_service_wanted_running() {
        use graft_tests::Fixture;
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::builder().staging_dir(dir.path()).build().unwrap();
        for (service, fixture) in [("counter", Fixture::Counter1_0), ("worker", Fixture::Worker)] {
            runtime.load_and_start(graft_tests::path(fixture).unwrap()).unwrap();
            let dependent = LoadOptions::default()
                .name(format!("{service}-user"))
                .depends_on(service, semver::VersionReq::STAR);
            runtime.load_with(graft_tests::path(Fixture::Greeter1_0).unwrap(), dependent).unwrap();
            runtime.start(&format!("{service}-user")).unwrap();
            let error = runtime.stop(service).unwrap_err();
            assert!(matches!(error, Error::DependentsRunning { .. }), "{service}: {error:?}");
            assert_eq!(runtime.state(service).unwrap(), ServiceState::Running);
            let slot = runtime.shared.slot(service).unwrap();
            assert!(slot.control.lock().wants_running, "{service}: still wanted running");
        }
    }

    /// A host-side panic while a stateful service's calls were held back left them held for
    /// good: every later call waited for its deadline and failed.
    #[test]
    fn a_host_panic_during_a_handover_lets_the_old_instance_serve_again() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::builder()
            .staging_dir(dir.path())
            // A call held back would fail the test by its error, not hang it.
            .call_deadline(Duration::from_secs(60))
            .build()
            .unwrap();
        let path = graft_tests::path(graft_tests::Fixture::Counter1_0).unwrap();
        runtime.load_and_start(&path).unwrap();
        for _ in 0..5 {
            runtime.call("counter", "increment", b"").unwrap();
        }
        let old = runtime.handle("counter").unwrap().generation();
        PANIC_AT.with(|at| at.set(Some("handoff/exported")));
        let outcome = catch_unwind(AssertUnwindSafe(|| runtime.restart("counter")));
        assert!(outcome.is_err(), "the injected panic did not happen");
        assert_eq!(runtime.handle("counter").unwrap().generation(), old);
        assert_eq!(runtime.state("counter").unwrap(), ServiceState::Running);
        runtime.call("counter", "increment", b"").unwrap();
        assert_eq!(runtime.call("counter", "get", b"").unwrap(), b"6");
        // And the service's operations go on.
        runtime.restart("counter").unwrap();
        assert_eq!(runtime.call("counter", "get", b"").unwrap(), b"6");
    }
}
