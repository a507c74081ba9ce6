//! Libraries that left service: unmapped only when that is provably safe, otherwise kept mapped
//! for the rest of the process and accounted for.
//!
//! When the last owner of a loaded library lets go of it, it comes here ([`release`]). Unmapping
//! a Rust cdylib is unsafe whenever its copy of `std` left thread-exit work on a thread that
//! will outlive it (see [`crate::retire`]). Two kinds exist, and each is checked:
//! - **pthread-key destructors.** glibc runs them at every thread's exit, even after the code
//!   is gone, and never unregisters them. The runtime reads glibc's key table (`__pthread_keys`,
//!   whose layout it verifies first with a key of its own, see [`KeyTable`]) and keeps the
//!   library mapped if any live key's destructor lies inside the library's mappings.
//! - **thread-local destructors** registered through `__cxa_thread_atexit_impl`: glibc itself
//!   refuses to unmap a library that has any pending; the runtime then asks the dynamic
//!   loader's list (`dl_iterate_phdr`) after `dlclose` and reports it still mapped.
//!
//! Where the key table cannot be read or verified (another C library, a changed layout), no
//! library is ever closed. What cannot be proven by either check is a plugin breaking its
//! contract: a thread it started and did not stop in `destroy` would run unmapped code; its
//! `std` keeps a library with a live thread of its own mapped (that thread's thread-local
//! destructors), so this takes code that bypasses `std`.
//!
//! Either way the staged file is removed (a mapping keeps the inode alive), and a library that
//! stays mapped is listed ([`retired`]) with what it costs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
    /// Why it was not unmapped.
    pub reason: String,
    /// Whether `/proc/self/maps` still shows it mapped.
    pub mapped: bool,
    /// The address space its mappings take, in bytes (its file's blocks stay allocated on disk
    /// as long as it is mapped, though the file is removed).
    pub mapped_bytes: u64,
    /// How much of that is resident in memory now, in bytes.
    pub resident_bytes: u64,
}

struct Kept {
    service: String,
    version: Version,
    source: PathBuf,
    staged: PathBuf,
    reason: String,
    // Never closed while it is here; `None` where `dlclose` was called and the loader kept it.
    _library: Option<Library>,
}

/// Invariant: a library in this list is never closed: entries are only ever added.
static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

/// How many libraries were unmapped after a proof that it was safe.
static UNMAPPED: AtomicU64 = AtomicU64::new(0);

/// Releases `library`, loaded from `source` through the staged copy `staged`: unmaps it if that
/// is provably safe (see the module docs), otherwise keeps it mapped and lists it; removes the
/// staged file either way. Returns whether it was unmapped.
pub(crate) fn release(
    library: Library,
    service: &str,
    version: &Version,
    source: &Path,
    staged: &Path,
) -> bool {
    let kept = |library: Option<Library>, reason: String| Kept {
        service: service.to_owned(),
        version: version.clone(),
        source: source.to_path_buf(),
        staged: staged.to_path_buf(),
        reason,
        _library: library,
    };
    let unmapped = match unmap_refusal(staged) {
        Some(reason) => {
            KEPT.lock().push(kept(Some(library), reason));
            false
        }
        None => match library.close() {
            Ok(()) if !is_loaded(staged) => {
                UNMAPPED.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(()) => {
                let reason = "the dynamic loader kept it mapped (thread-local destructors of its \
                              code are pending)";
                KEPT.lock().push(kept(None, reason.to_owned()));
                false
            }
            Err(error) => {
                let reason = format!("closing it failed: {error}");
                KEPT.lock().push(kept(None, reason));
                false
            }
        },
    };
    super::remove_staged(staged);
    unmapped
}

/// How many retired libraries were unmapped so far, in this process.
pub fn unmapped_count() -> u64 {
    UNMAPPED.load(Ordering::Relaxed)
}

/// Why the library at `staged` must not be unmapped, or `None` if nothing points into it.
fn unmap_refusal(staged: &Path) -> Option<String> {
    let Some(table) = KeyTable::get() else {
        return Some("the pthread key table cannot be read here, so no unmapping is safe".into());
    };
    let ranges = loaded_ranges(staged);
    if ranges.is_empty() {
        return Some("its mappings cannot be found".into());
    }
    let inside =
        |address: usize| ranges.iter().any(|&(start, end)| (start..end).contains(&address));
    table.destructors().into_iter().any(inside).then(|| {
        "a pthread key's destructor points into its code (its `std` ran on host threads)".into()
    })
}

/// glibc's table of pthread keys, `struct { uintptr_t seq; void (*destr)(void *); }
/// __pthread_keys[PTHREAD_KEYS_MAX]` (an odd `seq` marks a key in use), found by name and
/// verified once: a key the runtime creates with a known destructor must show at its index.
struct KeyTable {
    /// Invariant: points at `len` entries of two `usize`s each, inside the C library, valid for
    /// the rest of the process, verified to have the layout above.
    entries: *const [usize; 2],
    len: usize,
}

// SAFETY: the table is process-global C data that lives as long as the process; it is only
// ever read, with atomic loads.
unsafe impl Sync for KeyTable {}
// SAFETY: as for `Sync`.
unsafe impl Send for KeyTable {}

impl KeyTable {
    fn get() -> Option<&'static KeyTable> {
        static TABLE: OnceLock<Option<KeyTable>> = OnceLock::new();
        TABLE.get_or_init(KeyTable::find).as_ref()
    }

    fn find() -> Option<KeyTable> {
        // SAFETY: `dlsym` with RTLD_DEFAULT looks a name up in the global scope; the name is a
        // NUL-terminated C string.
        let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__pthread_keys".as_ptr()) };
        if found.is_null() || !found.cast::<[usize; 2]>().is_aligned() {
            return None;
        }
        // SAFETY: `sysconf` has no preconditions.
        let len = usize::try_from(unsafe { libc::sysconf(libc::_SC_THREAD_KEYS_MAX) }).ok()?;
        let table = KeyTable { entries: found.cast::<[usize; 2]>(), len };
        table.verify().then_some(table)
    }

    /// Creates a key with a known destructor and checks that the table shows it in use at its
    /// index with that destructor, and free again once deleted.
    fn verify(&self) -> bool {
        extern "C" fn marker(_: *mut libc::c_void) {}
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is valid for a write; `marker` is a valid destructor for any value.
        if unsafe { libc::pthread_key_create(&mut key, Some(marker)) } != 0 {
            return false;
        }
        let index = key as usize;
        let live = index < self.len && {
            let (seq, destructor) = self.entry(index);
            seq % 2 == 1 && destructor == marker as *const () as usize
        };
        // SAFETY: the key was created above and is deleted once.
        unsafe { libc::pthread_key_delete(key) };
        live && self.entry(index).0.is_multiple_of(2)
    }

    /// The `(seq, destructor)` of entry `index` (`index < len`).
    fn entry(&self, index: usize) -> (usize, usize) {
        // SAFETY: `index < len` (callers), so the entry lies inside the table (the type's
        // invariant); the words are aligned, live for the process, and read atomically because
        // other threads may be creating keys.
        unsafe {
            let entry = self.entries.add(index).cast::<usize>();
            let seq = AtomicUsize::from_ptr(entry.cast_mut()).load(Ordering::Acquire);
            let destructor = AtomicUsize::from_ptr(entry.add(1).cast_mut()).load(Ordering::Acquire);
            (seq, destructor)
        }
    }

    /// The destructors of every key in use.
    fn destructors(&self) -> Vec<usize> {
        (0..self.len)
            .map(|index| self.entry(index))
            .filter(|&(seq, destructor)| seq % 2 == 1 && destructor != 0)
            .map(|(_, destructor)| destructor)
            .collect()
    }
}

/// The address ranges of the loadable segments of the object the dynamic loader loaded from
/// `path`, from its own list (`dl_iterate_phdr`): empty if none is loaded. Unlike reading
/// `/proc/self/maps`, this costs nothing per mapping of the process, so retiring stays cheap
/// however many libraries are kept.
fn loaded_ranges(path: &Path) -> Vec<(usize, usize)> {
    use std::os::unix::ffi::OsStrExt;
    struct Search<'a> {
        name: &'a [u8],
        ranges: Vec<(usize, usize)>,
    }
    /// Visits one loaded object; stops the walk (returns 1) at the one named `name`.
    ///
    /// # Safety
    /// `info` must be a valid `dl_phdr_info` for the call and `data` the `Search` passed to
    /// `dl_iterate_phdr` below.
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the function's contract: both pointers are valid for the call, and nothing
        // else touches the `Search` while `dl_iterate_phdr` runs.
        let (info, search) = unsafe { (&*info, &mut *data.cast::<Search<'_>>()) };
        if info.dlpi_name.is_null() {
            return 0;
        }
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string valid for the call.
        let name = unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) };
        if name.to_bytes() != search.name {
            return 0;
        }
        for index in 0..usize::from(info.dlpi_phnum) {
            // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers.
            let header = unsafe { &*info.dlpi_phdr.add(index) };
            if header.p_type == libc::PT_LOAD {
                let start = (info.dlpi_addr as usize).wrapping_add(header.p_vaddr as usize);
                search.ranges.push((start, start.wrapping_add(header.p_memsz as usize)));
            }
        }
        1
    }
    let mut search = Search { name: path.as_os_str().as_bytes(), ranges: Vec::new() };
    // SAFETY: `visit` upholds the callback contract and never unwinds; `search` outlives the
    // call and is only touched through `data` during it.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search<'_>).cast()) };
    search.ranges
}

/// Whether the dynamic loader still has an object loaded from `path`.
pub(crate) fn is_loaded(path: &Path) -> bool {
    !loaded_ranges(path).is_empty()
}

/// Every retired library kept mapped so far, with why and what it costs now.
pub fn retired() -> Vec<RetiredLibrary> {
    let kept: Vec<(String, Version, PathBuf, PathBuf, String)> = KEPT
        .lock()
        .iter()
        .map(|k| {
            (
                k.service.clone(),
                k.version.clone(),
                k.source.clone(),
                k.staged.clone(),
                k.reason.clone(),
            )
        })
        .collect();
    let usage = mapping_usage();
    kept.into_iter()
        .map(|(service, version, source, staged, reason)| {
            let (mapped_bytes, resident_bytes) =
                staged.to_str().and_then(|path| usage.get(path).copied()).unwrap_or((0, 0));
            RetiredLibrary {
                service,
                version,
                source,
                staged,
                reason,
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
    fn the_key_table_is_found_and_shows_a_live_keys_destructor() {
        extern "C" fn destructor(_: *mut libc::c_void) {}
        let table = KeyTable::get().expect("glibc's key table, verified");
        let address = destructor as *const () as usize;
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is valid for a write; `destructor` accepts any value.
        assert_eq!(unsafe { libc::pthread_key_create(&mut key, Some(destructor)) }, 0);
        assert!(table.destructors().contains(&address));
        // A library mapping the destructor's code could not be unmapped. (The test binary is
        // not a loaded library with a path name, so only the table is checked here; the
        // integration tests check the refusal on real plugins.)
        // SAFETY: the key was created above and is deleted once.
        unsafe { libc::pthread_key_delete(key) };
        assert!(!table.destructors().contains(&address));
    }

    #[test]
    fn a_file_that_is_not_mapped_has_no_ranges_and_is_not_unmapped() {
        let path = Path::new("/nonexistent/graft/never-mapped.so");
        assert!(loaded_ranges(path).is_empty());
        assert!(unmap_refusal(path).is_some());
    }

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
