//! The watcher: keeps the services in step with a plugin directory.
//!
//! It is level-triggered: at start, and after each burst of file-system events, it compares the
//! whole directory with what it has brought into service, instead of acting on single events
//! (a watcher that trusts events misses a change made while it was not running, or an event
//! the kernel coalesced). A file is acted on as soon as it is complete: its ELF headers, section
//! table and loadable segments lie inside it, and its size and modification time are the same
//! before and after that check. There is no fixed debounce: an atomic rename of a finished build
//! is picked up at once. A file that stays incomplete (truncated, or abandoned mid-write) is
//! judged once it has not changed for [`SETTLE`]: refused, never loaded.
//!
//! Each `.so` file is handled through [`Shared::install`]: a new service is loaded and started
//! (in dependency order with the others found at the same time), a newer build of a running one
//! goes through the same gate as a manual swap. A broken file yields one rejection per distinct
//! content; the service keeps serving its old build. A removed file unloads nothing (the running
//! build comes from its staged copy) but is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use notify::Watcher as _;
use semver::Version;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::loader::elf::{self, ElfProblem};
use crate::runtime::{Installed, Shared};

/// How long an incomplete file must stay unchanged before it is judged (and refused) as it is.
pub const SETTLE: Duration = Duration::from_millis(50);

/// What the watcher did with a file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A new service was loaded from the file and started.
    Started {
        /// The file.
        path: PathBuf,
        /// The service.
        service: String,
        /// Its version.
        version: Version,
    },
    /// A running service was swapped to the file's build.
    Swapped {
        /// The file.
        path: PathBuf,
        /// The service.
        service: String,
        /// The version before.
        from: Version,
        /// The version now.
        to: Version,
    },
    /// The file's service is loaded but waits for a dependency to run; it starts when one of
    /// the next passes finds the dependency running.
    Waiting {
        /// The file.
        path: PathBuf,
        /// The service.
        service: String,
        /// The dependency it waits for.
        dependency: String,
    },
    /// The file holds the build its service already runs.
    Unchanged {
        /// The file.
        path: PathBuf,
        /// The service.
        service: String,
    },
    /// The file was refused; reported once per distinct content.
    Rejected {
        /// The file.
        path: PathBuf,
        /// Why.
        error: Arc<Error>,
    },
    /// The file disappeared; nothing was unloaded.
    Removed {
        /// The file.
        path: PathBuf,
        /// The service it last brought into service, if any.
        service: Option<String>,
    },
}

/// Watches a plugin directory for as long as it lives; dropping it stops and joins its thread.
#[derive(Debug)]
pub struct Watcher {
    control: Sender<Message>,
    thread: Option<JoinHandle<()>>,
    // Dropped after the thread is joined (field order): it feeds the thread's channel.
    _notify: notify::RecommendedWatcher,
}

enum Message {
    /// Something changed in the directory.
    Changed,
    Stop,
}

impl Watcher {
    pub(crate) fn start(
        shared: Weak<Shared>,
        dir: PathBuf,
    ) -> Result<(Watcher, Receiver<WatchEvent>), Error> {
        let watch_error = |source: notify::Error| Error::Watch { path: dir.clone(), source };
        let (control, inbox) = crossbeam_channel::unbounded();
        let (events, receiver) = crossbeam_channel::unbounded();
        let changed = control.clone();
        let mut notify =
            notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
                // Which file changed does not matter: the whole directory is reconciled.
                let _ = changed.send(Message::Changed);
            })
            .map_err(watch_error)?;
        notify.watch(&dir, notify::RecursiveMode::NonRecursive).map_err(watch_error)?;
        let state =
            State { dir: dir.clone(), files: BTreeMap::new(), waiting: BTreeSet::new(), events };
        let thread = std::thread::Builder::new()
            .name("graft-watcher".to_owned())
            .spawn(move || state.run(&shared, &inbox))
            .map_err(|source| Error::Thread { source })?;
        Ok((Watcher { control, thread: Some(thread), _notify: notify }, receiver))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.control.send(Message::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the graft watcher thread panicked");
        }
    }
}

/// A file's size and modification time: if both are unchanged, so is the file, as far as a
/// writer that keeps writing can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct Tracked {
    /// The file state last acted on.
    done: Option<Fingerprint>,
    /// The hash of the last content refused, so that the same content is reported once. Only a
    /// refusal pays for hashing the file: a build that installs is not hashed at all.
    rejected: Option<[u8; 32]>,
    /// An incomplete state first seen at that instant.
    incomplete_since: Option<(Fingerprint, Instant)>,
    /// The service the file last brought into service.
    service: Option<String>,
}

struct State {
    dir: PathBuf,
    files: BTreeMap<PathBuf, Tracked>,
    /// Files whose service waits for a dependency: tried again on every pass.
    waiting: BTreeSet<PathBuf>,
    events: Sender<WatchEvent>,
}

impl State {
    fn run(mut self, shared: &Weak<Shared>, inbox: &Receiver<Message>) {
        let mut recheck = self.reconcile(shared);
        loop {
            let message = match recheck {
                Some(at) => inbox.recv_deadline(at),
                None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match message {
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Message::Changed) | Err(RecvTimeoutError::Timeout) => {}
            }
            // One pass for the whole burst of events already queued.
            while let Ok(message) = inbox.try_recv() {
                if let Message::Stop = message {
                    return;
                }
            }
            recheck = self.reconcile(shared);
        }
    }

    /// Compares the directory with what was acted on; returns when to look again for files
    /// that are not complete yet.
    fn reconcile(&mut self, shared: &Weak<Shared>) -> Option<Instant> {
        let shared = shared.upgrade()?;
        let now = Instant::now();
        let mut recheck: Option<Instant> = None;
        let present = self.plugin_files();

        let gone: Vec<PathBuf> =
            self.files.keys().filter(|p| !present.contains(*p)).cloned().collect();
        for path in gone {
            let tracked = self.files.remove(&path).unwrap_or_default();
            self.waiting.remove(&path);
            tracing::warn!(path = %path.display(), service = ?tracked.service, "plugin file removed; nothing unloaded");
            self.emit(WatchEvent::Removed { path, service: tracked.service });
        }

        let mut candidates: Vec<(PathBuf, Fingerprint)> = Vec::new();
        for path in present {
            let Some(fingerprint) = fingerprint(&path) else { continue };
            let tracked = self.files.entry(path.clone()).or_default();
            if tracked.done == Some(fingerprint) {
                continue;
            }
            if !is_complete(&path, fingerprint) {
                let since = match tracked.incomplete_since {
                    Some((seen, since)) if seen == fingerprint => since,
                    _ => now,
                };
                tracked.incomplete_since = Some((fingerprint, since));
                if now.duration_since(since) < SETTLE {
                    let at = since + SETTLE;
                    recheck = Some(recheck.map_or(at, |r| r.min(at)));
                    continue;
                }
                // Unchanged for the settle time: judged as it is (the install refuses it).
            }
            tracked.incomplete_since = None;
            candidates.push((path, fingerprint));
        }
        let retries: Vec<PathBuf> = self
            .waiting
            .iter()
            .filter(|p| !candidates.iter().any(|(c, _)| c == *p))
            .cloned()
            .collect();
        self.install_all(&shared, candidates, retries);
        recheck
    }

    /// Installs the candidates, in as many passes as it takes for services that wait for one
    /// another (a pass that starts nothing ends it).
    fn install_all(
        &mut self,
        shared: &Shared,
        candidates: Vec<(PathBuf, Fingerprint)>,
        retries: Vec<PathBuf>,
    ) {
        for (path, fingerprint) in &candidates {
            self.files.entry(path.clone()).or_default().done = Some(*fingerprint);
        }
        let mut pending: Vec<PathBuf> =
            candidates.into_iter().map(|(p, _)| p).chain(retries).collect();
        let mut reported_waiting: BTreeSet<PathBuf> = BTreeSet::new();
        loop {
            let mut progress = false;
            let mut still: Vec<PathBuf> = Vec::new();
            for path in pending {
                match shared.install(&path) {
                    Ok(Installed::Waiting { service, dependency, .. }) => {
                        self.note_service(&path, &service);
                        if self.waiting.insert(path.clone())
                            && reported_waiting.insert(path.clone())
                        {
                            self.emit(WatchEvent::Waiting {
                                path: path.clone(),
                                service,
                                dependency,
                            });
                        }
                        still.push(path);
                    }
                    Ok(Installed::Started { service, version }) => {
                        progress = true;
                        self.waiting.remove(&path);
                        self.note_service(&path, &service);
                        self.emit(WatchEvent::Started { path, service, version });
                    }
                    Ok(Installed::Swapped { service, from, to }) => {
                        progress = true;
                        self.waiting.remove(&path);
                        self.note_service(&path, &service);
                        self.emit(WatchEvent::Swapped { path, service, from, to });
                    }
                    Ok(Installed::Unchanged { service, .. }) => {
                        self.waiting.remove(&path);
                        self.note_service(&path, &service);
                        self.emit(WatchEvent::Unchanged { path, service });
                    }
                    Err(error) => {
                        self.waiting.remove(&path);
                        let hash = content_hash(&path);
                        let tracked = self.files.entry(path.clone()).or_default();
                        if hash.is_some() && tracked.rejected == hash {
                            continue;
                        }
                        tracked.rejected = hash;
                        tracing::warn!(path = %path.display(), %error, "plugin file refused");
                        self.emit(WatchEvent::Rejected { path, error: Arc::new(error) });
                    }
                }
            }
            if !progress || still.is_empty() {
                return;
            }
            pending = still;
        }
    }

    fn note_service(&mut self, path: &Path, service: &str) {
        let tracked = self.files.entry(path.to_path_buf()).or_default();
        tracked.service = Some(service.to_owned());
        tracked.rejected = None;
    }

    fn emit(&self, event: WatchEvent) {
        let _ = self.events.send(event);
    }

    /// The `.so` files of the directory (dotfiles excluded: a build tool's temporary file).
    fn plugin_files(&self) -> BTreeSet<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return BTreeSet::new() };
        entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !name.starts_with('.') && path.extension().is_some_and(|e| e == "so")
            })
            .collect()
    }
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let metadata = std::fs::metadata(path).ok()?;
    metadata
        .is_file()
        .then(|| Fingerprint { len: metadata.len(), modified: metadata.modified().ok() })
}

/// Whether the file is whole: its ELF structure lies inside it and it did not change while it
/// was checked. A file that is not ELF at all is "complete" (there is nothing to wait for; the
/// install refuses it).
fn is_complete(path: &Path, before: Fingerprint) -> bool {
    let complete = match elf_problem(path, before.len) {
        None | Some(ElfProblem::NotElf) | Some(ElfProblem::Wrong(_)) => true,
        Some(ElfProblem::Truncated { .. }) => false,
    };
    complete && fingerprint(path) == Some(before)
}

fn elf_problem(path: &Path, len: u64) -> Option<ElfProblem> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).ok()?;
    let mut prefix = vec![0u8; elf::HEADER_LEN.min(usize::try_from(len).unwrap_or(usize::MAX))];
    file.read_exact_at(&mut prefix, 0).ok()?;
    let headers = match elf::check_header(&prefix, len) {
        Ok(headers) => headers,
        Err(problem) => return Some(problem),
    };
    let mut table = vec![0u8; usize::try_from(headers.len()).ok()?];
    file.read_exact_at(&mut table, headers.offset).ok()?;
    elf::check_segments(&table, len).err()
}

fn content_hash(path: &Path) -> Option<[u8; 32]> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buffer).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Some(hasher.finalize().into())
}
