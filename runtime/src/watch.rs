//! The watcher: keeps the services in step with a plugin directory.
//!
//! It is level-triggered: at start, and after each burst of file-system events, it compares the
//! whole directory with what it has brought into service, instead of acting on single events
//! (a watcher that trusts events misses a change made while it was not running, or an event
//! the kernel coalesced). A file is identified by its device, inode, size, modification and
//! change times: a same-size build renamed in with a copied modification time (`cp -p`,
//! reproducible builds) is a new file.
//!
//! Every path is opened the loader's way (once, without blocking): a FIFO, a directory, a
//! device or a dangling or looping symlink at a `.so` path is reported once per distinct state
//! as [`WatchEvent::Rejected`] and never blocks the watcher. A file still being written is
//! *incomplete*, not refused: one that another process has open for writing (the loader's read
//! lease tells), one that changed while it was looked at, or one whose headers do not fit yet
//! is looked at again on the next event (closing a file after writing is one) or after
//! [`SETTLE`]. A file that stays truncated without a writer (abandoned mid-write) is judged once
//! it has not changed for [`SETTLE`]: refused, never loaded. There is no fixed debounce: an
//! atomic rename of a finished build is picked up at once.
//!
//! Each `.so` file is handled through [`Shared::install`]: a new service is loaded and started
//! (in dependency order with the others found at the same time), a newer build of a running one
//! goes through the same gate as a manual swap. A broken file yields one rejection per distinct
//! content (hashed by a read bounded by the maximum plugin size); the service keeps serving its
//! old build. A removed file unloads nothing (the running build comes from its staged copy) but
//! is reported. A changed build of the version serving is reported (bump the version), or, in
//! development mode ([`WatchOptions::development`]), swapped in. When several files declare the
//! same service, the highest version serves, whatever the files' names, and the conflict is
//! reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use notify::Watcher as _;
use semver::Version;

use crate::Error;
use crate::loader::file::{Identity, Source};
use crate::runtime::{InstallOptions, Installed, Shared};

/// How long an incomplete file must stay unchanged before it is judged (and refused) as it is,
/// and how often a file another process keeps open for writing is looked at again.
pub const SETTLE: Duration = Duration::from_millis(50);

/// How a [`Watcher`] treats the files it finds.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct WatchOptions {
    /// See [`WatchOptions::development`].
    pub development: bool,
}

impl WatchOptions {
    /// Development mode (default off): a changed build of the version a service runs is
    /// swapped in, bypassing only the same-version rule of the gate (every other check stays);
    /// its generation is told apart by its content hash
    /// ([`GenerationStatus::sha256`](crate::GenerationStatus::sha256)). Off, such a build is
    /// reported ([`WatchEvent::SameVersionChanged`]) and left out.
    pub fn development(mut self, on: bool) -> Self {
        self.development = on;
        self
    }
}

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
    /// The file holds another build (other content) of the version its service runs: left out,
    /// since two builds under one version cannot be told apart by operators or rolled back
    /// between. Bump the version, or watch in development mode.
    SameVersionChanged {
        /// The file.
        path: PathBuf,
        /// The service.
        service: String,
        /// The version both builds declare.
        version: Version,
    },
    /// The file is still being written; it is looked at again until it is whole. Reported
    /// once per state of the file.
    Incomplete {
        /// The file.
        path: PathBuf,
        /// Why it is taken as incomplete.
        reason: String,
    },
    /// Several files declare the same service: the highest version serves. Reported once per
    /// set of files.
    Conflict {
        /// The service.
        service: String,
        /// The files, with the version each declares, sorted by path.
        files: Vec<(PathBuf, Version)>,
    },
    /// The file (or what is at its path) was refused; reported once per distinct content or
    /// state.
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
        options: WatchOptions,
    ) -> Result<(Watcher, Receiver<WatchEvent>), Error> {
        let watch_error = |source: notify::Error| Error::Watch { path: dir.clone(), source };
        let (control, inbox) = crossbeam_channel::unbounded();
        let (events, receiver) = crossbeam_channel::unbounded();
        let changed = control.clone();
        let mut notify =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                use notify::event::{AccessKind, AccessMode, EventKind};
                // Which file changed does not matter: the whole directory is reconciled. Reads
                // (the watcher's own included) change nothing; a close after writing is the
                // moment a file written in place may have become whole.
                if let Ok(event) = &event
                    && let EventKind::Access(access) = event.kind
                    && access != AccessKind::Close(AccessMode::Write)
                {
                    return;
                }
                let _ = changed.send(Message::Changed);
            })
            .map_err(watch_error)?;
        notify.watch(&dir, notify::RecursiveMode::NonRecursive).map_err(watch_error)?;
        let state = State {
            dir: dir.clone(),
            options,
            files: BTreeMap::new(),
            waiting: BTreeSet::new(),
            conflicts: BTreeMap::new(),
            events,
        };
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

/// A distinct refused state, so that each is reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// The content's SHA-256.
    Content([u8; 32]),
    /// What is at the path, when it is not a readable regular file.
    Other(String),
}

#[derive(Debug, Default)]
struct Tracked {
    /// The file state last acted on.
    done: Option<Identity>,
    /// The last refused state, so that the same one is reported once.
    rejected: Option<Seen>,
    /// An incomplete state first seen at that instant.
    incomplete_since: Option<(Identity, Instant)>,
    /// The last incomplete state reported.
    incomplete_reported: Option<Identity>,
    /// The service the file last brought into service (or declares), and its version.
    service: Option<(String, Version)>,
}

struct State {
    dir: PathBuf,
    options: WatchOptions,
    files: BTreeMap<PathBuf, Tracked>,
    /// Files whose service waits for a dependency: tried again on every pass.
    waiting: BTreeSet<PathBuf>,
    /// The conflicts reported, by service.
    conflicts: BTreeMap<String, Vec<(PathBuf, Version)>>,
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
        let limit = shared.config.max_plugin_size;
        let now = Instant::now();
        let mut recheck: Option<Instant> = None;
        let mut later = |at: Instant| recheck = Some(recheck.map_or(at, |r: Instant| r.min(at)));
        let present = self.plugin_files();

        let gone: Vec<PathBuf> =
            self.files.keys().filter(|p| !present.contains(*p)).cloned().collect();
        for path in gone {
            let tracked = self.files.remove(&path).unwrap_or_default();
            self.waiting.remove(&path);
            let service = tracked.service.map(|(service, _)| service);
            tracing::warn!(path = %path.display(), service = ?service, "plugin file removed; nothing unloaded");
            self.emit(WatchEvent::Removed { path, service });
        }

        let mut candidates: Vec<(PathBuf, Identity)> = Vec::new();
        for path in present {
            let source = match Source::open(&path) {
                Ok(source) => source,
                Err(error) => {
                    // Not a regular file, or nothing readable behind a symlink: refused once
                    // per state, and never opened in a way that could block.
                    if let Some(state) = path_state(&path, &error) {
                        self.reject(&path, Seen::Other(state), error);
                    }
                    continue;
                }
            };
            let identity = source.identity();
            let tracked = self.files.entry(path.clone()).or_default();
            if tracked.done == Some(identity) {
                continue;
            }
            let truncated = matches!(source.check(limit), Err(Error::Truncated { .. }));
            if truncated || !source.unchanged() {
                let since = match tracked.incomplete_since {
                    Some((seen, since)) if seen == identity => since,
                    _ => now,
                };
                tracked.incomplete_since = Some((identity, since));
                if now.duration_since(since) < SETTLE {
                    later(since + SETTLE);
                    continue;
                }
                // Unchanged for the settle time: judged as it is (the install refuses it).
            }
            tracked.incomplete_since = None;
            candidates.push((path, identity));
        }
        let retries: Vec<PathBuf> = self
            .waiting
            .iter()
            .filter(|p| !candidates.iter().any(|(c, _)| c == *p))
            .cloned()
            .collect();
        if self.install_all(&shared, candidates, retries) {
            later(now + SETTLE);
        }
        self.report_conflicts();
        recheck
    }

    /// Installs the candidates, in as many passes as it takes for services that wait for one
    /// another (a pass that starts nothing ends it). Returns whether a file was incomplete.
    ///
    /// Each pass first loads every pending file, then installs them service by service, the
    /// highest version first: once one of a service's builds is in service, its lower builds
    /// are superseded, so that a directory holding several builds of a service brings in the
    /// highest that passes the checks, and no other on the way.
    fn install_all(
        &mut self,
        shared: &Shared,
        candidates: Vec<(PathBuf, Identity)>,
        retries: Vec<PathBuf>,
    ) -> bool {
        let mut incomplete = false;
        // What the scan saw of each candidate: the file installed must be that one.
        let scanned: BTreeMap<PathBuf, Identity> = candidates.iter().cloned().collect();
        let mut pending: Vec<PathBuf> =
            candidates.into_iter().map(|(p, _)| p).chain(retries).collect();
        let mut reported_waiting: BTreeSet<PathBuf> = BTreeSet::new();
        loop {
            let mut progress = false;
            let mut still: Vec<PathBuf> = Vec::new();
            let mut loaded = Vec::new();
            for path in pending {
                // Opened once here, and installed, hashed and remembered from that descriptor:
                // what is marked done is exactly what was loaded or refused.
                let source = match Source::open(&path) {
                    Ok(source) => source,
                    Err(error) => {
                        self.waiting.remove(&path);
                        if let Some(state) = path_state(&path, &error) {
                            self.reject(&path, Seen::Other(state), error);
                        }
                        continue;
                    }
                };
                let identity = source.identity();
                if scanned.get(&path).is_some_and(|seen| *seen != identity) {
                    // Replaced since the scan: looked at again from the start.
                    incomplete = true;
                    self.files.entry(path.clone()).or_default().done = None;
                    continue;
                }
                self.files.entry(path.clone()).or_default().done = Some(identity);
                match shared.load_for_install(&source) {
                    Ok(plugin) => loaded.push((path, source, identity, plugin)),
                    Err(error) => {
                        incomplete |= self.refused(shared, path, &source, identity, error);
                    }
                }
            }
            // Service by service, the highest version first.
            loaded.sort_by(|(_, _, _, a), (_, _, _, b)| {
                let (a, b) = (a.info(), b.info());
                a.service.cmp(&b.service).then(b.plugin_version.cmp(&a.plugin_version))
            });
            let mut in_service: BTreeSet<String> = BTreeSet::new();
            for (path, source, identity, plugin) in loaded {
                let (service, version) =
                    (plugin.info().service.clone(), plugin.info().plugin_version.clone());
                if in_service.contains(&service) {
                    // A higher build of the service went in this pass.
                    drop(plugin);
                    self.waiting.remove(&path);
                    self.note_service(&path, &service, &version);
                    continue;
                }
                let superseded = |service: &str, version: &Version| {
                    self.files.iter().any(|(other, tracked)| {
                        *other != path
                            && tracked
                                .service
                                .as_ref()
                                .is_some_and(|(s, v)| s == service && v > version)
                    })
                };
                let options = InstallOptions {
                    development: self.options.development,
                    superseded: &superseded,
                };
                let outcome = shared.install_loaded(plugin, &options);
                if outcome.is_ok() {
                    in_service.insert(service);
                }
                match outcome {
                    Ok(Installed::Waiting { service, version, dependency }) => {
                        self.note_service(&path, &service, &version);
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
                        self.note_service(&path, &service, &version);
                        self.emit(WatchEvent::Started { path, service, version });
                    }
                    Ok(Installed::Swapped { service, from, to }) => {
                        progress = true;
                        self.waiting.remove(&path);
                        self.note_service(&path, &service, &to);
                        self.emit(WatchEvent::Swapped { path, service, from, to });
                    }
                    Ok(Installed::Unchanged { service, version }) => {
                        self.waiting.remove(&path);
                        self.note_service(&path, &service, &version);
                        self.emit(WatchEvent::Unchanged { path, service });
                    }
                    Ok(Installed::SameVersionChanged { service, version }) => {
                        self.waiting.remove(&path);
                        self.note_service(&path, &service, &version);
                        tracing::warn!(
                            path = %path.display(),
                            service = %service,
                            version = %version,
                            "a changed build declares the version already serving; it is not swapped in: bump its version (or watch in development mode)"
                        );
                        self.emit(WatchEvent::SameVersionChanged { path, service, version });
                    }
                    Ok(Installed::Superseded { service, version }) => {
                        self.waiting.remove(&path);
                        self.note_service(&path, &service, &version);
                    }
                    Err(error) => {
                        incomplete |= self.refused(shared, path, &source, identity, error);
                    }
                }
            }
            if !progress || still.is_empty() {
                return incomplete;
            }
            pending = still;
        }
    }

    /// Handles a file whose load or install failed with `error`: one still being written is
    /// looked at again (true), anything else is refused.
    fn refused(
        &mut self,
        shared: &Shared,
        path: PathBuf,
        source: &Source,
        identity: Identity,
        error: Error,
    ) -> bool {
        if let Error::Incomplete { reason, .. } = error {
            // Not acted on: looked at again on the next event or after SETTLE.
            let tracked = self.files.entry(path.clone()).or_default();
            tracked.done = None;
            if tracked.incomplete_reported != Some(identity) {
                tracked.incomplete_reported = Some(identity);
                tracing::debug!(path = %path.display(), %reason, "plugin file still being written");
                self.emit(WatchEvent::Incomplete { path, reason });
            }
            return true;
        }
        self.waiting.remove(&path);
        let limit = shared.config.max_plugin_size;
        let seen = source
            .hash(limit)
            .map(Seen::Content)
            .unwrap_or_else(|| Seen::Other(format!("{identity:?}")));
        self.reject(&path, seen, error);
        false
    }

    /// Reports `error` for `path`, unless the same state was reported last.
    fn reject(&mut self, path: &Path, seen: Seen, error: Error) {
        let tracked = self.files.entry(path.to_path_buf()).or_default();
        if tracked.rejected.as_ref() == Some(&seen) {
            return;
        }
        tracked.rejected = Some(seen);
        tracked.service = None;
        tracing::warn!(path = %path.display(), %error, "plugin file refused");
        self.emit(WatchEvent::Rejected { path: path.to_path_buf(), error: Arc::new(error) });
    }

    /// Reports each new set of files that declare the same service.
    fn report_conflicts(&mut self) {
        let mut by_service: BTreeMap<String, Vec<(PathBuf, Version)>> = BTreeMap::new();
        for (path, tracked) in &self.files {
            if let Some((service, version)) = &tracked.service {
                by_service
                    .entry(service.clone())
                    .or_default()
                    .push((path.clone(), version.clone()));
            }
        }
        by_service.retain(|_, files| files.len() > 1);
        for (service, files) in &by_service {
            if self.conflicts.get(service) != Some(files) {
                tracing::warn!(service = %service, files = ?files, "several plugin files declare the same service; the highest version serves");
                self.emit(WatchEvent::Conflict { service: service.clone(), files: files.clone() });
            }
        }
        self.conflicts = by_service;
    }

    fn note_service(&mut self, path: &Path, service: &str, version: &Version) {
        let tracked = self.files.entry(path.to_path_buf()).or_default();
        tracked.service = Some((service.to_owned(), version.clone()));
        tracked.rejected = None;
        tracked.incomplete_reported = None;
    }

    fn emit(&self, event: WatchEvent) {
        let _ = self.events.send(event);
    }

    fn plugin_files(&self) -> BTreeSet<PathBuf> {
        watched_files(&self.dir)
    }
}

/// The files a [`Watcher`] of `dir` looks at: the `.so` paths in it, whatever is at them
/// (dotfiles excluded: a build tool's temporary file; subdirectories are not looked into).
pub fn watched_files(dir: &Path) -> BTreeSet<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeSet::new() };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && path.extension().is_some_and(|e| e == "so")
        })
        .collect()
}

/// A description of what is at `path` when opening it failed with `error`, or `None` if
/// nothing is there any more (removed since the directory was listed).
fn path_state(path: &Path, error: &Error) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // `symlink_metadata` is an `lstat`: it never opens anything, so it cannot block.
    let link = std::fs::symlink_metadata(path).ok()?;
    let target = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.mode()));
    Some(format!(
        "{error}; link {}:{}:{}, target {target:?}",
        link.dev(),
        link.ino(),
        link.mtime_nsec()
    ))
}
