//! Staging directories that a killed host does not leave behind for ever.
//!
//! Every runtime holds a lock file in its staging directory, `.graft-<pid>-<random>.lock`,
//! locked with `flock` for the runtime's whole life (the kernel drops the lock when the process
//! dies, however it dies). The file is created under another name, locked, and only then
//! renamed to its `.lock` name, so a cleaner never finds an unlocked lock file of a live
//! runtime.
//!
//! At start a runtime cleans up after dead ones:
//! - with its own temporary staging directory (the default), it removes every sibling
//!   directory named `graft-staging-*` (graft's prefix) that holds at least one lock file and no
//!   held one: a directory without a lock file is never removed (it is not graft's, or is
//!   being created);
//! - with an explicit staging directory (which several runtimes and processes may share), it
//!   removes the lock files no one holds, and the staged copies (`<stem>.<pid>.<n>.so`, the
//!   loader's names) of every process id that holds no lock there. A live runtime takes its
//!   lock before it stages anything, so its copies are never removed; a dead process whose id
//!   was reused by a live runtime keeps its leftovers until that runtime's process is gone too.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::Error;

/// The prefix of the temporary staging directories graft creates.
pub(crate) const TEMP_PREFIX: &str = "graft-staging-";

/// A runtime's lock on its staging directory; released, and its file removed, on drop.
#[derive(Debug)]
pub(crate) struct StagingLock {
    path: PathBuf,
    _file: File,
}

impl StagingLock {
    /// Takes a new lock in `dir`.
    pub fn take(dir: &Path) -> Result<StagingLock, Error> {
        let pid = std::process::id();
        let io = |source| Error::Io {
            action: "locking the staging directory",
            path: dir.to_path_buf(),
            source,
        };
        let temporary = tempfile::Builder::new()
            .prefix(&format!(".graft-{pid}-"))
            .suffix(".new")
            .tempfile_in(dir)
            .map_err(io)?;
        lock(temporary.as_file(), libc::LOCK_SH).map_err(io)?;
        let name = temporary
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".new"))
            .map(|n| format!("{n}.lock"))
            .unwrap_or_else(|| format!(".graft-{pid}.lock"));
        let path = dir.join(name);
        let file = temporary.persist(&path).map_err(|e| io(e.error))?;
        Ok(StagingLock { path, _file: file })
    }
}

impl Drop for StagingLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes what dead runtimes left in the explicit staging directory `dir` (see the module
/// docs). Call it after taking this runtime's own lock.
pub(crate) fn clean_shared(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let names: Vec<String> =
        entries.filter_map(Result::ok).filter_map(|e| e.file_name().into_string().ok()).collect();
    let mut alive: BTreeSet<u32> = BTreeSet::from([std::process::id()]);
    for name in &names {
        let Some(pid) = lock_pid(name) else { continue };
        let path = dir.join(name);
        match stale(&path) {
            Some(file) => {
                // Removed while it is locked here, so no one can be taking it meanwhile.
                let _ = std::fs::remove_file(&path);
                drop(file);
            }
            None => {
                alive.insert(pid);
            }
        }
    }
    for name in &names {
        if let Some(pid) = staged_pid(name)
            && !alive.contains(&pid)
        {
            match std::fs::remove_file(dir.join(name)) {
                Ok(()) => tracing::info!(file = %name, "removed a staged copy a dead process left"),
                Err(error) => {
                    tracing::warn!(file = %name, %error, "removing a leftover staged copy failed")
                }
            }
        }
    }
}

/// Removes the sibling temporary staging directories (under `parent`) of dead runtimes.
pub(crate) fn clean_siblings(parent: &Path, own: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.filter_map(Result::ok) {
        let dir = entry.path();
        let is_ours = entry.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX));
        if !is_ours || dir == own || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(inner) = std::fs::read_dir(&dir) else { continue };
        let locks: Vec<PathBuf> = inner
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(|n| lock_pid(n).is_some()))
            .map(|e| e.path())
            .collect();
        if locks.is_empty() {
            continue;
        }
        // Every lock is held here while the directory is removed.
        let held: Option<Vec<File>> = locks.iter().map(|l| stale(l)).collect();
        if held.is_some() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "removed the staging directory of a dead runtime")
                }
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "removing a dead runtime's staging directory failed")
                }
            }
        }
    }
}

/// The lock file at `path`, locked exclusively here, if no one else holds it.
fn stale(path: &Path) -> Option<File> {
    let file = File::open(path).ok()?;
    lock(&file, libc::LOCK_EX | libc::LOCK_NB).ok()?;
    Some(file)
}

fn lock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the descriptor is owned by `file`, open for the duration of the call; `flock`
    // takes no pointer.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The process id in a lock file's name, `.graft-<pid>-<random>.lock`.
fn lock_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(".graft-")?.strip_suffix(".lock")?;
    rest.split_once('-')?.0.parse().ok()
}

/// The process id in a staged copy's name, `<stem>.<pid>.<n>.so`.
fn staged_pid(name: &str) -> Option<u32> {
    let mut parts = name.strip_suffix(".so")?.rsplitn(3, '.');
    let n = parts.next()?;
    let pid = parts.next()?;
    parts.next()?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_parsed_strictly() {
        assert_eq!(lock_pid(".graft-123-abc.lock"), Some(123));
        assert_eq!(lock_pid(".graft-123-abc.new"), None);
        assert_eq!(lock_pid("graft-123-abc.lock"), None);
        assert_eq!(staged_pid("libgreeter.4242.7.so"), Some(4242));
        assert_eq!(staged_pid("libgreeter.so"), None);
        assert_eq!(staged_pid("a.b.so"), None);
        assert_eq!(staged_pid("greeter-1.0.so"), None);
    }
}
