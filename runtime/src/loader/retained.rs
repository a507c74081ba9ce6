//! Libraries that left service: kept mapped for the rest of the process, and accounted for.
//!
//! A plugin's library is never closed (see [`crate::retire`] for why unmapping is not sound for a
//! Rust cdylib). When the last owner of a loaded library lets go of it, the handle moves here:
//! the staged file is removed (the mapping keeps the inode alive), and the library is listed so
//! that an operator can see what retired builds cost ([`retired`]). The handle is kept rather
//! than forgotten so that the list says exactly what is still open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use libloading::os::unix::Library;
use parking_lot::Mutex;
use semver::Version;

/// A library that left service and stays mapped, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetiredLibrary {
    /// The service its descriptor declares.
    pub service: String,
    /// Its plugin version.
    pub version: Version,
    /// The file it was loaded from.
    pub source: PathBuf,
    /// The staged copy that is mapped (removed from the directory; the mapping keeps it).
    pub staged: PathBuf,
    /// Whether `/proc/self/maps` still shows it mapped (always, unless the system unmapped it).
    pub mapped: bool,
    /// The address space its mappings take, in bytes.
    pub mapped_bytes: u64,
    /// How much of that is resident in memory now, in bytes.
    pub resident_bytes: u64,
}

struct Kept {
    service: String,
    version: Version,
    source: PathBuf,
    staged: PathBuf,
    // Never closed; see the module docs.
    _library: Library,
}

/// Invariant: a library in this list is never closed: entries are only ever added.
static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

/// Keeps `library`, loaded from `source` through the staged copy `staged`, mapped for the rest of
/// the process, and removes the staged file.
pub(crate) fn keep(
    library: Library,
    service: &str,
    version: &Version,
    source: &Path,
    staged: &Path,
) {
    KEPT.lock().push(Kept {
        service: service.to_owned(),
        version: version.clone(),
        source: source.to_path_buf(),
        staged: staged.to_path_buf(),
        _library: library,
    });
    super::remove_staged(staged);
}

/// Every library kept mapped so far, with what it costs now.
pub fn retired() -> Vec<RetiredLibrary> {
    let kept: Vec<(String, Version, PathBuf, PathBuf)> = KEPT
        .lock()
        .iter()
        .map(|k| (k.service.clone(), k.version.clone(), k.source.clone(), k.staged.clone()))
        .collect();
    let usage = mapping_usage();
    kept.into_iter()
        .map(|(service, version, source, staged)| {
            let (mapped_bytes, resident_bytes) =
                staged.to_str().and_then(|path| usage.get(path).copied()).unwrap_or((0, 0));
            RetiredLibrary {
                service,
                version,
                source,
                staged,
                mapped: mapped_bytes > 0,
                mapped_bytes,
                resident_bytes,
            }
        })
        .collect()
}

/// Whether `path` (a staged copy, possibly removed) is mapped into this process.
pub(crate) fn is_mapped(path: &Path) -> bool {
    let Some(path) = path.to_str() else { return false };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return false };
    maps.lines().filter_map(mapping_path).any(|mapped| mapped == path)
}

/// Size and resident size of every file mapping of this process, by path, from
/// `/proc/self/smaps` (empty where it cannot be read).
fn mapping_usage() -> HashMap<String, (u64, u64)> {
    let mut usage: HashMap<String, (u64, u64)> = HashMap::new();
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return usage };
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        if let Some(path) = mapping_path(line) {
            current = Some(path.to_owned());
            continue;
        }
        let Some(path) = &current else { continue };
        let field = |name: &str| -> Option<u64> {
            let rest = line.strip_prefix(name)?;
            rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok().map(|kb| kb * 1024)
        };
        if let Some(size) = field("Size:") {
            usage.entry(path.clone()).or_default().0 += size;
        } else if let Some(rss) = field("Rss:") {
            usage.entry(path.clone()).or_default().1 += rss;
        }
    }
    usage
}

/// The path of a `/proc/self/maps` (or smaps header) line that maps a file, without the
/// ` (deleted)` the kernel appends once the file is removed; `None` for other lines.
fn mapping_path(line: &str) -> Option<&str> {
    // address perms offset dev inode path: the path starts after the fifth field.
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start();
        let end = rest.find(' ')?;
        rest = &rest[end..];
    }
    let path = rest.trim_start();
    if !path.starts_with('/') {
        return None;
    }
    Some(path.strip_suffix(" (deleted)").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maps_line_gives_its_path_without_the_deleted_mark() {
        let line = "7f00-7f10 r-xp 00001000 fd:01 1234                       /tmp/s/greeter.1.2.so (deleted)";
        assert_eq!(mapping_path(line), Some("/tmp/s/greeter.1.2.so"));
        let line = "7f00-7f10 r-xp 00001000 fd:01 1234   /tmp/s/greeter.1.2.so";
        assert_eq!(mapping_path(line), Some("/tmp/s/greeter.1.2.so"));
        assert_eq!(mapping_path("7f00-7f10 rw-p 00000000 00:00 0 "), None);
        assert_eq!(mapping_path("7f00-7f10 rw-p 00000000 00:00 0   [heap]"), None);
        assert_eq!(mapping_path("Rss:                 4 kB"), None);
    }
}
