//! The plugin directory: bringing its builds into service (at start, on SIGHUP, and while it is
//! watched), and checking that a file an operator names for a swap lies inside it.
//!
//! The runtime's [`Watcher`] does the work: its first pass loads and starts every complete
//! `.so` file in dependency order (or swaps a running service to a newer build), later passes
//! follow the directory's changes. So a *reconcile* is a fresh watcher: the one before is
//! stopped, a new one makes its first pass over the whole directory, and the host waits until
//! that pass has said something about every file it listed (see [`Pass`]). Without watching,
//! the new watcher is stopped again once its first pass is done.
//!
//! A *reload* (SIGHUP) of a watched directory does not start a new watcher: it makes the one
//! running look at the whole directory again (a file created and removed at once, which it
//! ignores but which wakes it), and that pass acts only on the files that changed since it
//! last acted on them, which is what a lost file-system event would leave behind. A rollback or
//! a stop an operator made holds. (A fresh watcher would also take a service back to the
//! directory's build.) Only when that file cannot be written, and without watching, is a reload
//! a reconcile.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use graft_runtime::{Runtime, ServiceState, WatchEvent, WatchOptions, Watcher};
use parking_lot::Mutex;

use crate::events::WatchBus;

/// The plugin directory and its watcher.
#[derive(Debug)]
pub struct PluginDir {
    /// As given on the command line: the watcher reports paths under it.
    dir: PathBuf,
    /// Its canonical form, which every file named for a swap must lie under.
    canonical: PathBuf,
    watch: bool,
    bus: Arc<WatchBus>,
    active: Mutex<Option<Active>>,
}

/// The watcher running, and the thread that passes its reports on.
#[derive(Debug)]
struct Active {
    watcher: Watcher,
    forwarder: JoinHandle<()>,
}

/// What a reconcile did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Services started.
    pub started: Vec<String>,
    /// Services swapped to another build.
    pub swapped: Vec<String>,
    /// Files refused, with why.
    pub rejected: Vec<(PathBuf, String)>,
    /// Files whose service waits for a dependency that does not run.
    pub waiting: Vec<(PathBuf, String)>,
    /// Files the pass had not finished with when the deadline passed.
    pub unfinished: Vec<PathBuf>,
}

/// What a reload did.
#[derive(Debug)]
pub enum Reload {
    /// The running watcher was woken; its pass runs on its own thread.
    Nudged,
    /// A reconcile ran.
    Reconciled(Reconciled),
}

/// Why a file named for a swap is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// Empty, or with a `..` component.
    BadPath(String),
    /// Nothing there.
    NotFound(String),
    /// It resolves (through symlinks, or as an absolute path) outside the plugin directory.
    Outside(String),
    /// Not a regular file.
    NotAFile(String),
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::BadPath(m)
            | PathError::NotFound(m)
            | PathError::Outside(m)
            | PathError::NotAFile(m) => f.write_str(m),
        }
    }
}

impl PluginDir {
    /// The directory `dir`, which must exist. With `watch`, a reconcile leaves its watcher
    /// running.
    pub fn new(dir: PathBuf, watch: bool, bus: Arc<WatchBus>) -> Result<PluginDir, String> {
        let canonical = dir
            .canonicalize()
            .map_err(|e| format!("the plugin directory {}: {e}", dir.display()))?;
        if !canonical.is_dir() {
            return Err(format!("the plugin directory {} is not a directory", dir.display()));
        }
        Ok(PluginDir { dir, canonical, watch, bus, active: Mutex::new(None) })
    }

    /// Brings the directory's builds into service from scratch (see the module docs) and
    /// returns once the first pass is done with every file, or at `deadline`.
    pub fn reconcile(&self, runtime: &Runtime, deadline: Duration) -> Result<Reconciled, String> {
        let mut active = self.active.lock();
        if let Some(previous) = active.take() {
            previous.stop();
        }
        let listed = self.plugin_files();
        let options = WatchOptions::default();
        let (watcher, reports) = runtime
            .watch_with(self.dir.clone(), options)
            .map_err(|e| format!("watching {}: {e}", self.dir.display()))?;
        let mut pass = Pass::new(listed);
        let until = Instant::now() + deadline;
        while !pass.settled(|service| dependencies_run(runtime, service)) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            // Woken at least every 100 ms to notice files removed since the listing.
            match reports.recv_timeout((until - now).min(Duration::from_millis(100))) {
                Ok(report) => {
                    self.bus.publish(&report);
                    pass.note(&report);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err("the plugin-directory watcher stopped".to_owned());
                }
            }
            pass.forget_missing();
        }
        let reconciled = pass.into_report();
        if self.watch {
            let bus = Arc::clone(&self.bus);
            let forwarder = std::thread::Builder::new()
                .name("graft-host-watch".to_owned())
                .spawn(move || forward(&reports, &bus))
                .map_err(|e| format!("starting the watch thread: {e}"))?;
            *active = Some(Active { watcher, forwarder });
        } else {
            drop(watcher);
            // What the pass reported after it was judged done, up to the watcher's stop.
            for report in reports.try_iter() {
                self.bus.publish(&report);
            }
        }
        Ok(reconciled)
    }

    /// Looks at the directory again: the running watcher makes one more pass (see the module
    /// docs), which this does not wait for; without one, this is a [`PluginDir::reconcile`].
    pub fn reload(&self, runtime: &Runtime, deadline: Duration) -> Result<Reload, String> {
        if self.active.lock().is_some() {
            match self.nudge() {
                Ok(()) => return Ok(Reload::Nudged),
                Err(error) => tracing::warn!(
                    dir = %self.dir.display(),
                    %error,
                    "cannot wake the watcher (is the plugin directory read-only?): starting a new one"
                ),
            }
        }
        self.reconcile(runtime, deadline).map(Reload::Reconciled)
    }

    /// Wakes the watcher with a dotfile (which it never loads) created and removed at once.
    fn nudge(&self) -> std::io::Result<()> {
        let path = self.dir.join(format!(".graft-host-reload.{}", std::process::id()));
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
        std::fs::remove_file(&path)
    }

    /// Stops watching (at shutdown): no build comes into service after this returns.
    pub fn stop(&self) {
        if let Some(active) = self.active.lock().take() {
            active.stop();
        }
    }

    /// The regular file inside the plugin directory that `file` names (relative to the
    /// directory, or absolute), with every symlink resolved.
    ///
    /// What the runtime is then given is that resolved path, so a symlink pointing elsewhere
    /// cannot be swapped in; one replaced between this check and the load could, but only by
    /// someone who can write to the plugin directory, who can already deploy any build.
    pub fn resolve(&self, file: &str) -> Result<PathBuf, PathError> {
        if file.is_empty() {
            return Err(PathError::BadPath("the file name is empty".to_owned()));
        }
        let path = Path::new(file);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(PathError::BadPath(format!("`{file}`: `..` is not allowed")));
        }
        let joined = if path.is_absolute() { path.to_path_buf() } else { self.dir.join(path) };
        let resolved = joined.canonicalize().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PathError::NotFound(format!(
                "`{file}`: no such file in the plugin directory {}",
                self.dir.display()
            )),
            _ => PathError::BadPath(format!("`{file}`: {e}")),
        })?;
        if !resolved.starts_with(&self.canonical) {
            return Err(PathError::Outside(format!(
                "`{file}` resolves to {}, outside the plugin directory {}",
                resolved.display(),
                self.canonical.display()
            )));
        }
        let metadata = std::fs::metadata(&resolved)
            .map_err(|e| PathError::BadPath(format!("`{file}`: {e}")))?;
        if !metadata.is_file() {
            return Err(PathError::NotAFile(format!("`{file}` is not a regular file")));
        }
        Ok(resolved)
    }

    /// The `.so` paths the watcher looks at, by its own rule.
    fn plugin_files(&self) -> BTreeSet<PathBuf> {
        graft_runtime::watched_files(&self.dir)
    }
}

impl Active {
    fn stop(self) {
        // Dropping the watcher joins its thread, which drops the sender: the forwarder ends.
        drop(self.watcher);
        if self.forwarder.join().is_err() {
            tracing::error!("the watch-forwarding thread panicked");
        }
    }
}

fn forward(reports: &Receiver<WatchEvent>, bus: &WatchBus) {
    for report in reports {
        tracing::debug!(?report, "watcher");
        bus.publish(&report);
    }
}

/// Whether every dependency of `service` runs, so that a watcher pass that left it waiting
/// will try it again.
fn dependencies_run(runtime: &Runtime, service: &str) -> bool {
    runtime.service_status(service).is_ok_and(|status| {
        status
            .dependencies
            .iter()
            .all(|d| runtime.state(&d.service).is_ok_and(|s| s == ServiceState::Running))
    })
}

/// The watcher's first pass over a listing, followed report by report.
///
/// Every file of the listing gets at least one report in a first pass (started, swapped,
/// unchanged, refused, waiting, incomplete, or named in a conflict when a higher version of its
/// service won), unless it disappears. A file whose service waits for a dependency is settled
/// only while a dependency does not run: once they all run, the pass tries it again at once.
#[derive(Debug)]
struct Pass {
    pending: BTreeSet<PathBuf>,
    waiting: BTreeMap<PathBuf, String>,
    report: Reconciled,
}

impl Pass {
    fn new(listed: BTreeSet<PathBuf>) -> Pass {
        Pass { pending: listed, waiting: BTreeMap::new(), report: Reconciled::default() }
    }

    fn note(&mut self, event: &WatchEvent) {
        let path = match event {
            WatchEvent::Started { path, service, .. } => {
                self.report.started.push(service.clone());
                path
            }
            WatchEvent::Swapped { path, service, .. } => {
                self.report.swapped.push(service.clone());
                path
            }
            WatchEvent::Waiting { path, service, .. } => {
                self.pending.remove(path);
                self.waiting.insert(path.clone(), service.clone());
                return;
            }
            WatchEvent::Rejected { path, error } => {
                self.report.rejected.push((path.clone(), error.to_string()));
                path
            }
            WatchEvent::Conflict { files, .. } => {
                for (path, _) in files {
                    self.pending.remove(path);
                }
                return;
            }
            WatchEvent::Unchanged { path, .. }
            | WatchEvent::SameVersionChanged { path, .. }
            | WatchEvent::Incomplete { path, .. }
            | WatchEvent::Removed { path, .. } => path,
            _ => return,
        };
        self.pending.remove(path);
        self.waiting.remove(path);
    }

    /// Forgets listed files that are gone: the watcher will not report them.
    fn forget_missing(&mut self) {
        self.pending.retain(|path| std::fs::symlink_metadata(path).is_ok());
    }

    fn settled(&self, dependencies_run: impl Fn(&str) -> bool) -> bool {
        self.pending.is_empty() && self.waiting.values().all(|service| !dependencies_run(service))
    }

    fn into_report(mut self) -> Reconciled {
        self.report.waiting = self.waiting.into_iter().collect();
        self.report.unfinished = self.pending.into_iter().collect();
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graft_runtime::semver::Version;

    fn listed(names: &[&str]) -> BTreeSet<PathBuf> {
        names.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn a_pass_is_settled_once_every_listed_file_was_reported() {
        let mut pass = Pass::new(listed(&["d/a.so", "d/b.so", "d/c.so"]));
        let version = Version::new(1, 0, 0);
        pass.note(&WatchEvent::Started {
            path: "d/a.so".into(),
            service: "a".into(),
            version: version.clone(),
        });
        assert!(!pass.settled(|_| false));
        pass.note(&WatchEvent::Conflict {
            service: "b".into(),
            files: vec![("d/b.so".into(), version.clone()), ("d/c.so".into(), version)],
        });
        assert!(pass.settled(|_| false));
        let report = pass.into_report();
        assert_eq!(report.started, ["a"]);
        assert!(report.unfinished.is_empty());
    }

    #[test]
    fn a_waiting_file_is_settled_only_while_a_dependency_does_not_run() {
        let mut pass = Pass::new(listed(&["d/front.so"]));
        pass.note(&WatchEvent::Waiting {
            path: "d/front.so".into(),
            service: "front".into(),
            dependency: "back".into(),
        });
        assert!(pass.settled(|_| false), "back does not run: front stays waiting");
        assert!(!pass.settled(|_| true), "back runs: the pass tries front again");
        pass.note(&WatchEvent::Started {
            path: "d/front.so".into(),
            service: "front".into(),
            version: Version::new(1, 0, 0),
        });
        assert!(pass.settled(|_| true));
        assert!(pass.into_report().waiting.is_empty());
    }

    fn dir_with(files: &[&str]) -> (tempfile::TempDir, PluginDir) {
        let temp = tempfile::tempdir().unwrap();
        let plugins = temp.path().join("plugins");
        std::fs::create_dir_all(plugins.join("staged")).unwrap();
        for file in files {
            std::fs::write(plugins.join(file), b"x").unwrap();
        }
        let dir = PluginDir::new(plugins, false, Arc::default()).unwrap();
        (temp, dir)
    }

    #[test]
    fn a_file_named_for_a_swap_must_be_a_regular_file_inside_the_directory() {
        let (temp, dir) = dir_with(&["liba.so", "staged/libb.so"]);
        let outside = temp.path().join("libevil.so");
        std::fs::write(&outside, b"x").unwrap();
        let plugins = temp.path().join("plugins");
        std::os::unix::fs::symlink(&outside, plugins.join("libout.so")).unwrap();
        std::os::unix::fs::symlink(plugins.join("liba.so"), plugins.join("libin.so")).unwrap();

        let inside = plugins.canonicalize().unwrap();
        assert_eq!(dir.resolve("liba.so"), Ok(inside.join("liba.so")));
        assert_eq!(dir.resolve("staged/libb.so"), Ok(inside.join("staged/libb.so")));
        assert_eq!(dir.resolve("libin.so"), Ok(inside.join("liba.so")));
        let absolute = inside.join("liba.so");
        assert_eq!(dir.resolve(absolute.to_str().unwrap()), Ok(absolute.clone()));

        assert!(matches!(dir.resolve("../libevil.so"), Err(PathError::BadPath(_))));
        assert!(matches!(dir.resolve("staged/../liba.so"), Err(PathError::BadPath(_))));
        assert!(matches!(dir.resolve(""), Err(PathError::BadPath(_))));
        assert!(matches!(dir.resolve("libout.so"), Err(PathError::Outside(_))));
        assert!(matches!(dir.resolve(outside.to_str().unwrap()), Err(PathError::Outside(_))));
        assert!(matches!(dir.resolve("/etc/passwd"), Err(PathError::Outside(_))));
        assert!(matches!(dir.resolve("staged"), Err(PathError::NotAFile(_))));
        assert!(matches!(dir.resolve("libmissing.so"), Err(PathError::NotFound(_))));
    }
}
