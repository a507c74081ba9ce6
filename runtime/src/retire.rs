//! Retirement: the one thread on which plugin instances are destroyed, and when a plugin library
//! may be unmapped.
//!
//! Two rules, each from a hazard that took hosts down:
//! - **An instance is destroyed on `graft-retire`, a thread the runtime owns**, never on the
//!   thread that happened to drop the last reference to its generation. That thread can be the
//!   plugin's own worker, inside a host callback, whose `destroy` would then join itself; or a
//!   caller's, which should not pay for plugin code it did not ask to run. The thread is
//!   process-wide rather than per runtime because a generation can outlive its runtime (a plugin
//!   thread may hold the last reference while the runtime is dropped), and it must still be
//!   destroyed on a thread of ours then.
//! - **A library is unmapped only when that is proven safe** (see [`crate::loader`]'s `retained`
//!   module): a Rust cdylib carries its own `std`, which registers thread-exit work
//!   (pthread-key destructors) on every host thread its code ran on. glibc runs those at thread
//!   exit even after `dlclose` unmapped the code, a jump into unmapped memory, and never frees
//!   the keys. A retired library with such work pointing into it stays mapped for good, its
//!   staged file removed, what it costs reported ([`crate::Runtime::retired_libraries`]), and the
//!   load budget ([`crate::LoadBudget`]) refuses a load before a per-process limit is reached.
//!
//! The thread is started on first use and lives as long as the process: it is the one thread of
//! the runtime that is never joined, since a generation can be dropped by any thread at any time
//! until the process exits. It runs jobs in order and holds no lock while it runs plugin code.

use std::sync::OnceLock;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

/// The name of the thread that destroys instances.
pub const RETIRE_THREAD: &str = "graft-retire";

/// A job for the retire thread: destroy one instance and release its library.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// Owns the retire thread for the rest of the process.
struct Retirer {
    jobs: Sender<Job>,
    // Held, never joined: the thread serves until the process exits (see the module docs).
    _thread: JoinHandle<()>,
}

static RETIRER: OnceLock<Option<Retirer>> = OnceLock::new();

fn retirer() -> Option<&'static Retirer> {
    RETIRER
        .get_or_init(|| {
            let (jobs, inbox) = crossbeam_channel::unbounded::<Job>();
            let spawned =
                std::thread::Builder::new().name(RETIRE_THREAD.to_owned()).spawn(move || {
                    for job in inbox {
                        job();
                    }
                });
            match spawned {
                Ok(thread) => Some(Retirer { jobs, _thread: thread }),
                Err(error) => {
                    tracing::error!(%error, "the graft retire thread could not be started");
                    None
                }
            }
        })
        .as_ref()
}

/// Runs `job` on the retire thread, after every job submitted before it.
///
/// If the thread could not be started (the process is out of threads), the job is leaked, not
/// run: destroying an instance on whichever thread dropped it is the hazard this module exists to
/// avoid, and a leaked instance only costs memory (its library stays mapped anyway).
pub(crate) fn submit(job: Job) {
    match retirer() {
        Some(retirer) => {
            if let Err(job) = retirer.jobs.send(job) {
                std::mem::forget(job.into_inner());
            }
        }
        None => {
            tracing::error!("no retire thread: an instance is leaked instead of destroyed");
            std::mem::forget(job);
        }
    }
}
