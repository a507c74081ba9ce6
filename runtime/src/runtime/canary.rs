//! Canary releases: a new build takes a share of a service's calls beside the build serving,
//! and is promoted (it takes every call) or aborted (it takes none and is retired), by the
//! verdict of its calls or by hand.
//!
//! The routing lives in the lease (see `Lease::with_canary`): a call draws from its thread's
//! own generator, so routing writes no shared memory; only the canary's calls pay for its
//! judging counters. A stateful service is never released as a canary, as its state cannot be
//! split between two builds serving at once.

use std::sync::Arc;
use std::time::Instant;

use super::slot::{Canary, Control};
use super::{Dependency, Shared, Slot, SwapReport};
use crate::events::EventKind;
use crate::generation::{Generation, GenerationId};
use crate::loader::Plugin;
use crate::policy::Verdict;
use crate::probation::Probation;
use crate::{CanaryPolicy, Error};

/// A checked build ready to be released: its generation, plugin, dependencies and the
/// requirement the service has once it is promoted.
pub(super) type Release =
    (Arc<Generation>, Arc<Plugin>, Arc<Vec<Dependency>>, Arc<semver::VersionReq>);

impl Shared {
    /// Releases `release` as `slot`'s canary under `policy`, beside the generation serving;
    /// the caller holds the control lock and has run every check of a swap.
    pub(super) fn release_canary(
        &self,
        slot: &Slot,
        control: &mut Control,
        release: Release,
        policy: &CanaryPolicy,
        started: Instant,
    ) -> SwapReport {
        let (generation, plugin, dependencies, requirement) = release;
        let judge = Arc::new(Probation::canary(generation.id(), policy, Instant::now()));
        let id = generation.id();
        let to = generation.version().clone();
        control.canary = Some(Canary {
            generation,
            plugin,
            dependencies,
            requirement,
            judge,
            weight: policy.weight,
            threshold: policy.threshold(),
        });
        let (serving, from) = match &control.serving {
            Some(serving) => (serving.watch(), serving.version().clone()),
            None => (crate::GenerationWatch::detached(), to.clone()),
        };
        if let Some(current) = control.serving.clone() {
            slot.current.store(Arc::new(control.lease(&current)));
        }
        slot.refresh(control);
        tracing::info!(service = %slot.name, stable = %from, canary = %to, generation = %id, weight = policy.weight, "canary released");
        self.hooks.events.emit(
            &slot.name,
            &to,
            EventKind::CanaryStarted {
                generation: id,
                stable: from.clone(),
                weight: policy.weight,
            },
        );
        SwapReport {
            service: slot.name.clone(),
            from,
            to,
            generation: id,
            previous: serving,
            took: started.elapsed(),
        }
    }

    /// Promotes `slot`'s canary: it takes every call, and the build it replaces goes to the
    /// history, as in a swap. With `only`, only if that generation is the canary.
    pub(super) fn promote(
        &self,
        slot: &Slot,
        only: Option<GenerationId>,
    ) -> Result<SwapReport, Error> {
        let started = Instant::now();
        let mut control = slot.control.lock();
        let Some(candidate) = control
            .canary
            .as_ref()
            .filter(|c| only.is_none_or(|id| c.generation.id() == id))
            .map(|c| Arc::clone(&c.generation))
        else {
            return Err(Error::NoCanary { service: slot.name.clone() });
        };
        // Its health is checked once more before it takes every call: a failure aborts it.
        if let Err(error) = candidate.check_health() {
            let why = format!("health check failed before promotion: {error}");
            self.drop_canary(slot, &mut control, &why, true);
            return Err(error);
        }
        drop(candidate);
        let Some(canary) = control.canary.take() else {
            return Err(Error::NoCanary { service: slot.name.clone() });
        };
        let Some(serving) = control.serving.clone() else {
            // Unreachable: a canary is dropped when its service stops.
            canary.generation.retire();
            slot.refresh(&control);
            return Err(Error::NoCanary { service: slot.name.clone() });
        };
        let from = serving.version().clone();
        let (id, to) = (canary.generation.id(), canary.generation.version().clone());
        control.requirement = canary.requirement;
        // It was judged as a canary: no probation window follows.
        let previous = self.publish(
            slot,
            &mut control,
            canary.generation,
            canary.dependencies,
            None,
            canary.plugin,
        );
        self.record_current(slot, &control);
        drop(control);
        slot.metrics.swapped(started.elapsed());
        let automatic = only.is_some();
        tracing::info!(service = %slot.name, from = %from, to = %to, generation = %id, automatic, "canary promoted");
        self.hooks.events.emit(
            &slot.name,
            &to,
            EventKind::CanaryPromoted { from: from.clone(), generation: id, automatic },
        );
        Ok(SwapReport {
            service: slot.name.clone(),
            from,
            to,
            generation: id,
            previous,
            took: started.elapsed(),
        })
    }

    /// Aborts `slot`'s canary (with `only`, only if that generation is the canary): no new
    /// call goes to it, and it is retired once its running calls return. Returns a watch on
    /// it.
    pub(crate) fn abort(
        &self,
        slot: &Slot,
        only: Option<GenerationId>,
        reason: &str,
    ) -> Result<crate::GenerationWatch, Error> {
        let mut control = slot.control.lock();
        let matches =
            control.canary.as_ref().is_some_and(|c| only.is_none_or(|id| c.generation.id() == id));
        if !matches {
            return Err(Error::NoCanary { service: slot.name.clone() });
        }
        let watch = self.drop_canary(slot, &mut control, reason, true);
        Ok(watch.unwrap_or_else(crate::GenerationWatch::detached))
    }

    /// Takes `slot`'s canary, if it has one, out of the control state and retires it. With
    /// `republish` the generation serving is published again without it (the service goes on);
    /// without, the caller has published a lease without it (a stop).
    pub(super) fn drop_canary(
        &self,
        slot: &Slot,
        control: &mut Control,
        reason: &str,
        republish: bool,
    ) -> Option<crate::GenerationWatch> {
        let canary = control.canary.take()?;
        if let Some(serving) = control.serving.clone().filter(|_| republish) {
            slot.current.store(Arc::new(control.lease(&serving)));
        }
        slot.refresh(control);
        let (id, version) = (canary.generation.id(), canary.generation.version().clone());
        let watch = canary.generation.watch();
        canary.generation.retire();
        tracing::warn!(service = %slot.name, version = %version, generation = %id, reason, "canary aborted");
        self.hooks.events.emit(
            &slot.name,
            &version,
            EventKind::CanaryAborted { generation: id, reason: reason.to_owned() },
        );
        Some(watch)
    }

    /// Carries out the verdict of a canary's calls, if it is still the canary.
    pub(crate) fn canary_verdict(&self, slot: &Slot, generation: GenerationId, verdict: Verdict) {
        let outcome = match verdict {
            Verdict::Pass => self.promote(slot, Some(generation)).map(drop),
            Verdict::Fail(why) => self.abort(slot, Some(generation), &why).map(drop),
            Verdict::Pending => Ok(()),
        };
        // `NoCanary`: an operator promoted or aborted it first.
        if let Err(error) = outcome.or_else(|e| match e {
            Error::NoCanary { .. } => Ok(()),
            other => Err(other),
        }) {
            tracing::error!(service = %slot.name, %error, "carrying out a canary's verdict failed");
        }
    }
}
