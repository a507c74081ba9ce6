//! Moving a stateful service's state from one instance to the next (a swap, a restart, a
//! rollback): calls are held back, the running ones return, the state is exported, and the
//! operation creates the next instance from it. If any step fails, the old instance serves
//! again with its state untouched, and the calls held back go to it.

use std::sync::Arc;
use std::time::Duration;

use super::slot::Control;
use super::{Shared, Slot};
use crate::Error;
use crate::generation::{Gate, Generation, Lease};

/// A stateful generation whose calls are held back, and its exported state. End it with
/// [`Quiesced::resume`] (the operation failed: the generation serves again) or
/// [`Quiesced::release`] (another generation was published).
///
/// Should host code panic while it holds one (a bug, but one that must not leave every caller
/// held back for good), dropping it on the way out lets the old generation serve again.
#[must_use = "calls stay held back until the quiesce is resumed or released"]
pub(super) struct Quiesced<'a> {
    slot: &'a Slot,
    /// Set once resumed or released.
    ended: bool,
    serving: Arc<Generation>,
    gate: Arc<Gate>,
    /// Whether `gate` is this quiesce's own (a running service) rather than the pause gate of
    /// a paused service, which only `resume` opens.
    own_gate: bool,
    /// The state format and bytes exported.
    pub(super) state: (u32, Vec<u8>),
}

impl Shared {
    /// How long a handoff waits for the calls running in the old instance: half the call
    /// deadline (at most the stop deadline), so that a call held back still has the other
    /// half for the export, the import and the health check, and is answered, by the old
    /// instance or the new one, within its own deadline.
    fn quiesce_deadline(&self) -> Duration {
        (self.config.call_deadline / 2).min(self.config.stop_deadline)
    }

    /// Holds calls to `serving` (the published generation of `slot`, whose control lock the
    /// caller holds) back, waits until no call and no health check runs in it, and exports its
    /// state. On failure the generation serves again as before and the error is returned.
    pub(super) fn quiesce<'a>(
        &self,
        slot: &'a Slot,
        control: &mut Control,
        serving: &Arc<Generation>,
    ) -> Result<Quiesced<'a>, Error> {
        self.quiesce_within(slot, control, serving, self.quiesce_deadline())
    }

    /// [`Shared::quiesce`], waiting at most `deadline` for the running calls.
    pub(super) fn quiesce_within<'a>(
        &self,
        slot: &'a Slot,
        control: &mut Control,
        serving: &Arc<Generation>,
        deadline: Duration,
    ) -> Result<Quiesced<'a>, Error> {
        // The calls the last handover (or resume) woke run first: otherwise one that has not
        // been scheduled yet would find this handover's gate, and handovers back to back could
        // hold it past its deadline. They only need a CPU, so this is bounded by the same
        // deadline and gives up (holding them once more) rather than fail the operation.
        if let Some(opened) = control.opened.take() {
            opened.wait_passed(deadline);
        }
        let (gate, own_gate) = match &control.pause_gate {
            Some(gate) => (Arc::clone(gate), false),
            None => (Gate::new(), true),
        };
        let state = slot.current.load().state();
        slot.current.store(Arc::new(Lease::quiesced(
            Arc::clone(serving),
            Arc::clone(&gate),
            state,
        )));
        let mut quiesced = Quiesced {
            slot,
            ended: false,
            serving: Arc::clone(serving),
            gate,
            own_gate,
            state: (0, Vec::new()),
        };
        // One lease is left once every call and health check has returned: the quiesced one.
        let exported = serving
            .watch()
            .wait_leases(1, deadline)
            .map_err(|error| match error {
                Error::DrainTimeout { service, version, waited, .. } => {
                    Error::QuiesceTimeout { service, version, waited }
                }
                other => other,
            })
            .and_then(|()| {
                crate::fault::point("handoff/quiesced");
                // An export that calls its own service is answered at once (`NotReady`)
                // rather than held back behind the gate this export holds closed.
                let _exporting = crate::handle::Occupied::enter(self.id, &slot.name, state);
                serving.export_state()
            });
        #[cfg(test)]
        super::lifecycle::tests::panic_point("handoff/exported");
        match exported {
            Ok(state) => {
                quiesced.state = state;
                Ok(quiesced)
            }
            Err(error) => {
                quiesced.resume(slot, control);
                Err(error)
            }
        }
    }
}

impl Quiesced<'_> {
    /// The state exported, as `Generation::start` takes it.
    pub(super) fn state(&self) -> Option<(u32, &[u8])> {
        Some((self.state.0, &self.state.1))
    }

    /// The operation failed: the old generation serves again, as it did before (paused if the
    /// service is paused, under its probation window if one is open), and the calls held back
    /// go to it.
    pub(super) fn resume(self, slot: &Slot, control: &mut Control) {
        slot.current.store(Arc::new(control.lease(&self.serving)));
        self.release(control);
    }

    /// Another generation was published: the calls held back read it.
    pub(super) fn release(mut self, control: &mut Control) {
        self.ended = true;
        if self.own_gate {
            control.open(Arc::clone(&self.gate));
        }
    }
}

impl Drop for Quiesced<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Not ended: host code unwound past the operation. The old generation serves again
        // (without a probation window: the supervisor judges it no further), or stays paused.
        let generation = Arc::clone(&self.serving);
        let lease = match self.own_gate {
            true => Lease::serving(generation, None),
            false => Lease::paused(generation, Arc::clone(&self.gate)),
        };
        self.slot.current.store(Arc::new(lease));
        if self.own_gate {
            self.gate.open();
        }
    }
}
