//! Replacing a service's build: swap and replace through the version gate, rollback through the
//! same gates, the probation window's end (passed and committed, or rolled back), and
//! [`Shared::install`], the watcher's way in.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use semver::Version;

use super::handoff::Quiesced;
use super::lifecycle::{merge, refused, validate_dependencies};
use super::slot::Control;
use super::{LoadOptions, ServiceState, Shared, Slot, SwapReport};
use crate::events::{EventKind, RollbackReason};
use crate::generation::{Generation, GenerationId};
use crate::loader::Plugin;
use crate::probation::Probation;
use crate::supervisor::SupervisorEvent;
use crate::{CanaryPolicy, Error, gate};

/// What [`Shared::install`] did with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Installed {
    /// A new service, loaded and started.
    Started { service: String, version: Version },
    /// A new or known service loaded, whose start waits for a dependency.
    Waiting { service: String, version: Version, dependency: String },
    /// A running service swapped to the file's build.
    Swapped { service: String, from: Version, to: Version },
    /// The file holds the build the service runs already.
    Unchanged { service: String, version: Version },
    /// The file holds another build of the version serving (left serving: bump the version).
    SameVersionChanged { service: String, version: Version },
    /// Another watched file holds a higher version of the service: left as it is.
    Superseded { service: String, version: Version },
}

/// How [`Shared::install`] treats a file.
pub(crate) struct InstallOptions<'a> {
    /// Swap in a changed build of the version serving (development mode).
    pub development: bool,
    /// Whether another source holds a higher version of the service than this one.
    pub superseded: &'a dyn Fn(&str, &Version) -> bool,
}

/// What a swap does with the service's interface requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Requirement {
    /// The new build must satisfy it (a swap).
    Keep,
    /// The new build's interface version becomes it (a replace): a breaking change, shipped
    /// knowingly, still checked against running dependents.
    Lift,
}

/// A build to swap to: a file to load, or a plugin loaded already (with whether a build of the
/// version serving may replace it: the watcher's development mode).
pub(super) enum Candidate<'a> {
    Path(&'a Path),
    Loaded(Box<Plugin>, bool),
}

impl Shared {
    pub(super) fn swap_one(&self, slot: &Slot, path: &Path) -> Result<SwapReport, Error> {
        self.swap_to(slot, Candidate::Path(path), Requirement::Keep, None)
    }

    /// Swaps `slot` to a build given by its path or already loaded. With
    /// [`Requirement::Lift`] (a `replace`), the new build's interface version becomes the
    /// service's requirement instead of having to satisfy it. With a `canary` policy the new
    /// build is released as a canary beside the one serving instead of replacing it.
    pub(super) fn swap_to(
        &self,
        slot: &Slot,
        candidate: Candidate<'_>,
        requirement: Requirement,
        canary: Option<&CanaryPolicy>,
    ) -> Result<SwapReport, Error> {
        let started = Instant::now();
        if let Some(policy) = canary
            && !(0.0..=1.0).contains(&policy.weight)
        {
            return Err(Error::InvalidWeight { weight: policy.weight });
        }
        // The file work (open, checks, copy, `dlopen`) happens before the control lock is taken:
        // a slow or stuck file must never hold up a rollback or any other operation on the
        // service. A refused file is logged with the version serving now.
        let operation = match requirement {
            Requirement::Keep => "swap",
            Requirement::Lift => "replace",
        };
        let state = slot.current.load().state();
        if state != ServiceState::Running {
            return Err(Error::InvalidState { service: slot.name.clone(), operation, state });
        }
        let (plugin, same_version) = match candidate {
            Candidate::Path(path) => self
                .loader
                .load(path)
                .inspect_err(|error| {
                    let serving = slot.current.load().generation().map(|g| g.version().clone());
                    match serving {
                        Some(version) => refused(Some((&slot.name, &version)))(error),
                        None => refused(None)(error),
                    }
                })
                .map(|plugin| (plugin, false))?,
            Candidate::Loaded(plugin, same_version) => (*plugin, same_version),
        };
        let mut control = slot.control.lock();
        let state = slot.current.load().state();
        let Some(serving) = control.serving.clone().filter(|_| state == ServiceState::Running)
        else {
            return Err(Error::InvalidState { service: slot.name.clone(), operation, state });
        };
        let from = serving.version().clone();
        let refusal = refused(Some((&slot.name, &from)));
        if let Some(canary) = &control.canary {
            return Err(Error::CanaryInProgress {
                service: slot.name.clone(),
                operation,
                canary: canary.generation.version().clone(),
            });
        }
        if canary.is_some() {
            let stateful =
                [serving.info(), plugin.info()].into_iter().find(|i| i.state_format.is_some());
            if let Some(info) = stateful {
                let error = Error::StatefulCanary {
                    service: slot.name.clone(),
                    version: info.plugin_version.clone(),
                };
                refusal(&error);
                return Err(error);
            }
        }
        let template = control.plugin.info().service.clone();
        let requirement = match requirement {
            Requirement::Keep => Arc::clone(&control.requirement),
            Requirement::Lift => {
                Arc::new(gate::default_requirement(&plugin.info().interface_version))
            }
        };
        match gate::check_swap(&template, &control.interface, &requirement, &from, plugin.info()) {
            // Same version is the gate's last rule: every other check has passed.
            Err(Error::SameVersion { .. }) if same_version => Ok(()),
            checked => checked,
        }
        .map_err(|e| rename(e, &template, &slot.name))
        .inspect_err(&refusal)?;
        // A typed build is checked method by method: against the build it replaces (its
        // version bump must allow what changed) and against the host's clients.
        crate::typed::check_bump(&slot.name, serving.info(), plugin.info())
            .inspect_err(&refusal)?;
        self.check_interfaces(&slot.name, plugin.info()).inspect_err(&refusal)?;
        let dependencies = Arc::new(merge(&plugin, &control.host_dependencies));
        validate_dependencies(&dependencies).inspect_err(&refusal)?;
        let interface_version = plugin.info().interface_version.clone();
        let plugin = Arc::new(plugin);
        // A stateful service's calls are held back and its state exported; the new instance
        // is made from it. Every refusal from here on lets the old instance serve again.
        let handoff = self.hand_off(slot, &mut control, &serving, &plugin).inspect_err(&refusal)?;
        let generation =
            match self.instantiate(&slot.name, &plugin, handoff.as_ref().and_then(Quiesced::state))
            {
                Ok(generation) => generation,
                Err(error) => {
                    refusal(&error);
                    resume(handoff, slot, &mut control);
                    return Err(error);
                }
            };
        crate::fault::point("swap/created");
        if let Some(policy) = canary {
            let checked = {
                let _dependencies = self.dependency_lock.lock();
                self.check_dependents(&slot.name, &interface_version)
                    .and_then(|()| self.check_dependencies(&slot.name, &dependencies))
            };
            checked.inspect_err(&refusal)?;
            drop(refusal);
            return Ok(self.release_canary(
                slot,
                &mut control,
                (generation, plugin, dependencies, requirement),
                policy,
                started,
            ));
        }
        let probation = self.probation_for(&generation);
        let previous = {
            // Checked and published as one step: no dependent can start, and no dependency
            // stop, between the checks and the publication.
            let _dependencies = self.dependency_lock.lock();
            let checked = self
                .check_dependents(&slot.name, &interface_version)
                .and_then(|()| self.check_dependencies(&slot.name, &dependencies));
            if let Err(error) = checked {
                refusal(&error);
                resume(handoff, slot, &mut control);
                return Err(error);
            }
            control.requirement = requirement;
            self.publish(slot, &mut control, generation, dependencies, probation.clone(), plugin)
        };
        if let Some(handoff) = handoff {
            handoff.release(&mut control);
        }
        drop(refusal);
        let to =
            control.serving.as_ref().map(|g| g.version().clone()).unwrap_or_else(|| from.clone());
        let id = control.serving.as_ref().map_or(GenerationId(0), |g| g.id());
        crate::fault::point("swap/published");
        self.record_current(slot, &control);
        drop(control);
        if let Some(probation) = probation {
            let _ = self
                .supervisor
                .send(SupervisorEvent::Probation { service: slot.name.clone(), probation });
        }
        let took = started.elapsed();
        slot.metrics.swapped(took);
        tracing::info!(service = %slot.name, from = %from, to = %to, generation = %id, took = ?took, "service swapped");
        self.hooks.events.emit(
            &slot.name,
            &to,
            EventKind::Swapped { from: from.clone(), generation: id },
        );
        Ok(SwapReport { service: slot.name.clone(), from, to, generation: id, previous, took })
    }

    /// For a stateful `serving` generation: refuses a `next` build that cannot take its state,
    /// then quiesces it and exports the state. `None` for a stateless service.
    fn hand_off<'a>(
        &self,
        slot: &'a Slot,
        control: &mut Control,
        serving: &Arc<Generation>,
        next: &Plugin,
    ) -> Result<Option<Quiesced<'a>>, Error> {
        if serving.info().state_format.is_none() {
            return Ok(None);
        }
        if next.info().state_format.is_none() {
            return Err(Error::WouldLoseState {
                service: slot.name.clone(),
                from: serving.version().clone(),
                to: next.info().plugin_version.clone(),
            });
        }
        self.quiesce(slot, control, serving).map(Some)
    }

    /// Records the build serving `slot` as current in the state directory's manifest; the
    /// committed one is unchanged, so a crash from here on comes back on the committed build
    /// whatever the file holds. A failure is logged: the swap has happened.
    pub(super) fn record_current(&self, slot: &Slot, control: &Control) {
        let (Some(store), Some(serving)) = (&self.store, &control.serving) else { return };
        let version = serving.version().to_string();
        let recorded = store.manifest(&slot.name).and_then(|manifest| {
            let current = store.archive(
                &slot.name,
                &version,
                &serving.info().staged,
                serving.plugin().sha256(),
            )?;
            let committed = manifest.map_or_else(|| current.clone(), |m| m.committed);
            store.write(&crate::Manifest { service: slot.name.clone(), current, committed }, "swap")
        });
        if let Err(error) = recorded {
            tracing::error!(service = %slot.name, version, %error, "recording the swap in the state directory failed");
        }
    }

    pub(super) fn probation_for(&self, generation: &Generation) -> Option<Arc<Probation>> {
        let policy = &self.config.probation;
        if policy.calls == 0 || policy.duration.is_zero() {
            return None;
        }
        Some(Arc::new(Probation::new(generation.id(), policy.clone(), Instant::now())))
    }

    /// Refuses an interface version that breaks the requirement of a running dependent.
    fn check_dependents(&self, service: &str, interface_version: &Version) -> Result<(), Error> {
        let services = self.services.read();
        let mut dependents: Vec<&Arc<Slot>> = services.values().collect();
        dependents.sort_by(|a, b| a.name.cmp(&b.name));
        for dependent in dependents {
            let state = dependent.current.load().state();
            if !(state.is_up() || state == ServiceState::Starting) {
                continue;
            }
            for dependency in dependent.dependencies.load().iter().filter(|d| d.service == service)
            {
                if !dependency.requirement.matches(interface_version) {
                    return Err(Error::BreaksDependent {
                        service: service.to_owned(),
                        dependent: dependent.name.clone(),
                        required: Box::new(dependency.requirement.clone()),
                        found: interface_version.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Rolls `slot` back; the caller holds its control lock. A paused service stays paused.
    pub(super) fn rollback_locked(
        &self,
        slot: &Slot,
        control: &mut Control,
        reason: RollbackReason,
    ) -> Result<SwapReport, Error> {
        let started = Instant::now();
        let state = slot.current.load().state();
        let Some(serving) = control.serving.clone().filter(|_| state.is_up()) else {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "roll back",
                state,
            });
        };
        if let Some(canary) = &control.canary {
            return Err(Error::CanaryInProgress {
                service: slot.name.clone(),
                operation: "roll back",
                canary: canary.generation.version().clone(),
            });
        }
        let Some((target, dependencies)) = control.history.front().cloned() else {
            return Err(Error::NoRollbackTarget { service: slot.name.clone() });
        };
        let from = serving.version().clone();
        let to = target.version().clone();
        let plugin = Arc::clone(target.plugin());
        let interface_version = target.info().interface_version.clone();
        let refusal = refused(Some((&slot.name, &from)));
        // The earlier build must still serve every method the host's clients call.
        self.check_interfaces(&slot.name, plugin.info()).inspect_err(&refusal)?;
        // A stateful service hands its current state back: the earlier build gets a new
        // instance made from it (the one kept in the history holds stale state), and may
        // refuse a format it does not know. The historical instance is retired once replaced.
        let handoff = self.hand_off(slot, control, &serving, &plugin).inspect_err(&refusal)?;
        let fresh = handoff.as_ref().map(|h| self.instantiate(&slot.name, &plugin, h.state()));
        let (target, stale) = match fresh {
            None => (target, None),
            Some(Ok(fresh)) => (fresh, Some(target)),
            Some(Err(error)) => {
                refusal(&error);
                resume(handoff, slot, control);
                return Err(error);
            }
        };
        let id = target.id();
        let previous = {
            // The gates of a swap, checked and published as one step under the same lock: a
            // rollback must not leave a running dependent on an interface it does not accept,
            // nor bring back a build whose dependencies do not run.
            let _dependencies = self.dependency_lock.lock();
            let checked = self
                .check_dependents(&slot.name, &interface_version)
                .and_then(|()| self.check_dependencies(&slot.name, &dependencies));
            if let Err(error) = checked {
                refusal(&error);
                resume(handoff, slot, control);
                return Err(error);
            }
            control.history.pop_front();
            if !control.requirement.matches(&interface_version) {
                // Rolling back across a `replace` goes back to the requirement of that build.
                control.requirement = Arc::new(gate::default_requirement(&interface_version));
            }
            self.publish(slot, control, target, dependencies, None, plugin)
        };
        if let Some(handoff) = handoff {
            handoff.release(control);
        }
        if let Some(stale) = stale {
            stale.retire();
        }
        drop(refusal);
        let took = started.elapsed();
        slot.metrics.rolled_back(matches!(reason, RollbackReason::Automatic(_)), took);
        match &reason {
            RollbackReason::Manual => {
                tracing::info!(service = %slot.name, from = %from, to = %to, generation = %id, took = ?took, "service rolled back")
            }
            RollbackReason::Automatic(why) => {
                tracing::warn!(service = %slot.name, from = %from, to = %to, generation = %id, why, "service rolled back automatically")
            }
        }
        self.hooks.events.emit(
            &slot.name,
            &to,
            EventKind::RolledBack { from: from.clone(), generation: id, reason },
        );
        Ok(SwapReport { service: slot.name.clone(), from, to, generation: id, previous, took })
    }

    /// Rolls `service` back from `generation` if that generation still serves, because `why`.
    /// With `wait` false (on a caller's thread) it gives up when the service is busy with another
    /// operation, and tells the supervisor to do it instead.
    pub(crate) fn auto_rollback(
        &self,
        slot: &Slot,
        generation: GenerationId,
        why: &str,
        wait: bool,
    ) {
        // A stateful rollback waits for the calls running in the instance to return; a calling
        // thread (which holds one of them) hands it to the supervisor.
        let stateful =
            || slot.current.load().generation().is_some_and(|g| g.info().state_format.is_some());
        let busy = if wait { None } else { Some(slot.control.try_lock()) };
        let mut control = match busy {
            None => slot.control.lock(),
            Some(Some(control)) if !stateful() => control,
            Some(_) => {
                let _ = self.supervisor.send(SupervisorEvent::RollBack {
                    service: slot.name.clone(),
                    generation,
                    why: why.to_owned(),
                });
                return;
            }
        };
        let Some(serving) = control.serving.clone().filter(|g| g.id() == generation) else {
            return;
        };
        if control.canary.is_some() {
            // The build serving failed its window: the canary, newer still, goes first.
            self.drop_canary(slot, &mut control, "the build serving is rolled back", true);
        }
        let Err(error) =
            self.rollback_locked(slot, &mut control, RollbackReason::Automatic(why.to_owned()))
        else {
            return;
        };
        // The verdict stands but cannot be carried out: close the window (calls stop paying
        // for its counters, and it is not judged again) and say so.
        if control.probation.as_ref().is_some_and(|p| p.generation == generation) {
            control.probation = None;
            slot.current.store(Arc::new(control.lease(&serving)));
        }
        drop(control);
        let version = serving.version().clone();
        drop(serving);
        tracing::error!(service = %slot.name, version = %version, %error, why, "automatic rollback refused; the build keeps serving");
        self.hooks.events.emit(
            &slot.name,
            &version,
            EventKind::RollbackRefused {
                from: version.clone(),
                generation,
                reason: why.to_owned(),
                error: error.to_string(),
            },
        );
    }

    /// Records the serving build of `slot` as committed (and current) in the state directory.
    pub(crate) fn commit(&self, slot: &Slot) -> Result<(), Error> {
        let Some(store) = &self.store else {
            return Err(Error::NoStateDir);
        };
        let control = slot.control.lock();
        let state = slot.current.load().state();
        let Some(serving) = control.serving.clone() else {
            return Err(Error::InvalidState {
                service: slot.name.clone(),
                operation: "commit",
                state,
            });
        };
        crate::fault::point("commit/start");
        let entry = store.archive(
            &slot.name,
            &serving.version().to_string(),
            &serving.info().staged,
            serving.plugin().sha256(),
        )?;
        let manifest = crate::Manifest {
            service: slot.name.clone(),
            current: entry.clone(),
            committed: entry,
        };
        store.write(&manifest, "commit")?;
        drop(control);
        tracing::info!(service = %slot.name, version = %serving.version(), "build committed");
        Ok(())
    }

    /// Republishes `service`'s `generation` without probation once its window passed.
    pub(crate) fn end_probation(&self, slot: &Slot, generation: GenerationId) {
        let mut control = slot.control.lock();
        let open = control.probation.as_ref().is_some_and(|p| p.generation == generation);
        let Some(serving) = control.serving.clone().filter(|g| g.id() == generation && open) else {
            return;
        };
        control.probation = None;
        slot.current.store(Arc::new(control.lease(&serving)));
        drop(control);
        if self.config.commit_after_probation
            && let Err(error) = self.commit(slot)
        {
            tracing::error!(service = %slot.name, %error, "committing after probation failed");
        }
        tracing::info!(service = %slot.name, version = %serving.version(), generation = %generation, "probation passed");
        self.hooks.events.emit(
            &slot.name,
            serving.version(),
            EventKind::ProbationPassed { generation },
        );
    }
}

impl Shared {
    /// Checks and loads the build `file` was opened on, for the watcher, which then brings it
    /// into service with [`Shared::install_loaded`].
    pub(crate) fn load_for_install(
        &self,
        file: &crate::loader::file::Source,
    ) -> Result<Plugin, Error> {
        self.loader.load_opened(file).inspect_err(refused(None))
    }

    /// Brings a loaded build into service, whatever the service's situation: a new service is
    /// loaded and started, a running one swapped (through the same gate as a manual swap), one
    /// that is loaded but waits for a dependency is started. Used by the watcher.
    pub(crate) fn install_loaded(
        &self,
        plugin: Plugin,
        options: &InstallOptions<'_>,
    ) -> Result<Installed, Error> {
        let started = Instant::now();
        let service = plugin.info().service.clone();
        let version = plugin.info().plugin_version.clone();
        if (options.superseded)(&service, &version) {
            return Ok(Installed::Superseded { service, version });
        }
        let slot = match self.slot(&service) {
            Ok(slot) => slot,
            Err(_) => {
                self.register(plugin, LoadOptions::default(), started)?;
                let slot = self.slot(&service)?;
                return self.start_installed(&slot, service, version);
            }
        };
        let serving =
            slot.current.load().generation().map(|g| (g.version().clone(), Arc::clone(g.plugin())));
        let known = slot.info.read().plugin.info().plugin_version.clone();
        let state = slot.current.load().state();
        match (serving, state) {
            // The hashes are computed here, and only when the versions match.
            (Some((current, serving)), _)
                if current == version && serving.sha256() == plugin.sha256() =>
            {
                Ok(Installed::Unchanged { service, version })
            }
            (Some((current, _)), ServiceState::Running)
                if current == version && options.development =>
            {
                let report = self.swap_to(
                    &slot,
                    Candidate::Loaded(Box::new(plugin), true),
                    Requirement::Keep,
                    None,
                )?;
                Ok(Installed::Swapped { service, from: report.from, to: report.to })
            }
            (Some((current, _)), _) if current == version => {
                Ok(Installed::SameVersionChanged { service, version })
            }
            (Some(_), ServiceState::Running) => {
                let report = self.swap_to(
                    &slot,
                    Candidate::Loaded(Box::new(plugin), false),
                    Requirement::Keep,
                    None,
                )?;
                Ok(Installed::Swapped { service, from: report.from, to: report.to })
            }
            (None, ServiceState::Loaded | ServiceState::Stopped) if known == version => {
                drop(plugin);
                self.start_installed(&slot, service, version)
            }
            (_, state) => Err(Error::InvalidState { service, operation: "install", state }),
        }
    }

    fn start_installed(
        &self,
        slot: &Slot,
        service: String,
        version: Version,
    ) -> Result<Installed, Error> {
        match self.start_one(slot, false) {
            Ok(()) => Ok(Installed::Started { service, version }),
            Err(Error::DependencyNotRunning { dependency, .. }) => {
                Ok(Installed::Waiting { service, version, dependency })
            }
            Err(error) => Err(error),
        }
    }
}

/// Lets the quiesced generation of a failed handoff, if any, serve again.
fn resume(handoff: Option<Quiesced<'_>>, slot: &Slot, control: &mut Control) {
    if let Some(handoff) = handoff {
        handoff.resume(slot, control);
    }
}

/// Replaces the descriptor's service name by the slot's in a gate error, for aliased services.
fn rename(error: Error, template: &str, name: &str) -> Error {
    if template == name {
        return error;
    }
    match error {
        Error::IncompatibleInterface { required, found, plugin_version, .. } => {
            Error::IncompatibleInterface {
                service: name.to_owned(),
                required,
                found,
                plugin_version,
            }
        }
        Error::SameVersion { version, .. } => {
            Error::SameVersion { service: name.to_owned(), version }
        }
        other => other,
    }
}
