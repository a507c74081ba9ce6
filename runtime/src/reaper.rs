//! The reaper: the runtime's thread that holds generations that left the history until their
//! last call has returned, and reports drains that miss their deadline.
//!
//! It is driven by one closed enum of events. When a retired generation drains, the reaper drops
//! its reference; the instance is then destroyed on the retire thread ([`crate::retire`]), whoever
//! dropped the last reference. Waiting is not forced: a drain past its deadline is reported once
//! and waited for still.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::Error;
use crate::generation::{Generation, GenerationId};

/// What the reaper is told.
#[derive(Debug)]
pub(crate) enum ReaperEvent {
    /// The generation left the history; it is retired once drained.
    Retire(Arc<Generation>),
    /// The last lease of a retired generation was dropped; this is the lease's reference.
    Drained(Arc<Generation>),
    /// Stop: the runtime is being dropped.
    Shutdown,
    /// Answer on the channel once every earlier event is handled (tests only).
    #[cfg(test)]
    Sync(Sender<()>),
}

/// Owns the reaper thread: tells it to stop and joins it on drop.
#[derive(Debug)]
pub(crate) struct Reaper {
    events: Sender<ReaperEvent>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    pub fn start(drain_deadline: Duration) -> Result<Reaper, Error> {
        let (events, inbox) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("graft-reaper".to_owned())
            .spawn(move || run(&inbox, drain_deadline))
            .map_err(|source| Error::Thread { source })?;
        Ok(Reaper { events, thread: Some(thread) })
    }

    pub fn sender(&self) -> Sender<ReaperEvent> {
        self.events.clone()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.events.send(ReaperEvent::Shutdown);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the graft reaper thread panicked");
        }
    }
}

struct Pending {
    generation: Arc<Generation>,
    /// When to report the drain as overdue; `None` for never.
    deadline: Option<Instant>,
    reported: bool,
}

fn run(inbox: &Receiver<ReaperEvent>, drain_deadline: Duration) {
    let mut pending: HashMap<GenerationId, Pending> = HashMap::new();
    loop {
        let next_deadline =
            pending.values().filter(|p| !p.reported).filter_map(|p| p.deadline).min();
        let event = match next_deadline {
            Some(deadline) => match inbox.recv_deadline(deadline) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => {
                    report_overdue(&mut pending, drain_deadline);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match inbox.recv() {
                Ok(event) => event,
                Err(_) => break,
            },
        };
        match event {
            ReaperEvent::Retire(generation) => {
                if !generation.is_drained() {
                    // `None`: a deadline too far to represent is never reported.
                    let deadline = Instant::now().checked_add(drain_deadline);
                    pending
                        .insert(generation.id(), Pending { generation, deadline, reported: false });
                }
                // Otherwise `generation` is dropped here, and destroyed on the retire thread.
            }
            ReaperEvent::Drained(generation) => {
                // With the pending reference removed, `generation` is the last one; dropping it
                // hands the instance to the retire thread. A generation drained before its
                // `Retire` arrived is not pending; its `Retire` finds it drained and drops it then.
                pending.remove(&generation.id());
            }
            ReaperEvent::Shutdown => break,
            #[cfg(test)]
            ReaperEvent::Sync(reply) => {
                let _ = reply.send(());
            }
        }
    }
    // Events still queued may hold generations, and each generation holds a sender of this
    // channel: drop them now, or that cycle would keep them loaded for ever.
    while let Ok(event) = inbox.try_recv() {
        drop(event);
    }
    // Generations still draining are released here; each is destroyed on the retire thread once
    // whichever thread holds its last reference (its last call) lets go.
}

fn report_overdue(pending: &mut HashMap<GenerationId, Pending>, drain_deadline: Duration) {
    let now = Instant::now();
    for p in pending.values_mut().filter(|p| !p.reported && p.deadline.is_some_and(|d| d <= now)) {
        p.reported = true;
        let info = p.generation.info();
        tracing::warn!(
            service = %info.service,
            version = %info.plugin_version,
            generation = %p.generation.id(),
            deadline = ?drain_deadline,
            "drain deadline missed: calls are still running in a retired generation; it stays loaded until they return"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::Lease;
    use crate::loader::Loader;
    use graft_tests::Fixture;

    impl Reaper {
        /// True once the reaper has handled every event sent before; false if it is dead.
        fn sync(&self) -> bool {
            let (reply, answer) = crossbeam_channel::bounded(1);
            self.events.send(ReaperEvent::Sync(reply)).is_ok()
                && answer.recv_timeout(Duration::from_secs(20)).is_ok()
        }
    }

    /// Regression: `Instant::now() + Duration::MAX` panicked and killed the reaper thread as
    /// soon as a generation was retired with a call still running.
    #[test]
    fn a_drain_deadline_too_far_to_represent_does_not_kill_the_reaper() {
        let reaper = Reaper::start(Duration::MAX).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let plugin = Loader::new(dir.path().to_path_buf())
            .load(&graft_tests::path(Fixture::Greeter1_0).unwrap())
            .unwrap();
        let hooks = crate::generation::Hooks {
            reaper: reaper.sender(),
            events: Arc::new(crate::events::EventBus::default()),
        };
        let host = crate::host::host_api(u64::MAX - 7, &std::sync::Weak::new(), "greeter", "1.0.0");
        let generation = Arc::new(
            Generation::start(
                Arc::new(plugin),
                Arc::from("greeter"),
                GenerationId(1),
                host,
                hooks,
                None,
            )
            .unwrap(),
        );
        let watch = generation.watch();
        // A lease stands for a call still running: the retired generation must wait for it.
        let lease = Lease::serving(Arc::clone(&generation), None);
        generation.retire();
        assert!(reaper.sync(), "the reaper must survive a retire with that deadline");
        assert!(!watch.is_retired());

        drop(lease);
        watch.wait_retired(Duration::from_secs(20)).unwrap();
        assert!(reaper.sync());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the staged copy is removed");
        assert!(!watch.is_mapped(), "nothing of its `std` points into it: it is unmapped");
    }
}
