//! The load budget: how close the process is to the per-process limits that plugin loads use
//! up, and the refusal of a load that would come too close to one.
//!
//! Libraries are never unmapped ([`crate::retire`]), so what a load takes it keeps:
//! - **pthread keys.** A process has `PTHREAD_KEYS_MAX` (1,024 on glibc) and glibc never frees
//!   one that a library's destructor still names. Each copy of a plugin's `std` takes a key the
//!   first time it spawns a thread or asks for `thread::current()`, and when none is left, that
//!   `std` aborts the whole process (`fatal runtime error: out of TLS keys`).
//! - **memory mappings.** Each library maps a handful of regions; the kernel caps a process at
//!   `vm.max_map_count` (65,530 by default) and fails `mmap` beyond it, which breaks the
//!   allocator and the loader alike.
//!
//! A load is refused, with [`crate::Error::LoadBudgetExhausted`], while fewer than a reserve of
//! either is left: the reserve covers what the plugin being loaded and the host itself may still
//! take. What the operator can do is in the error: nothing frees these but a restart of the
//! process.
//!
//! Counting keys without taking them all: glibc hands out the lowest free key, and keys that
//! plugins' `std` copies take are never deleted, so the highest of a few fresh keys tells how many
//! are in use (less any holes beyond the few a host left by deleting its own keys, which makes the
//! count err on the generous side by at most that many). The probe deletes its keys at once.
//! Taking keys until none is left would be exact, but for a moment it would leave none for a
//! concurrent thread, and a plugin's `std` that found none then would abort the process.

use std::path::Path;

use crate::Error;

/// The pthread keys a load leaves free, at least: a plugin's `std` takes one or two, the host's
/// own libraries may take a few more later.
pub const KEY_RESERVE: usize = 64;
/// The memory mappings a load leaves free, at least: a library maps five or six regions, and
/// the host's allocator needs room to grow.
pub const MAP_RESERVE: usize = 1024;

/// How much of the per-process limits that plugin loads consume is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadBudget {
    /// pthread keys not in use (an estimate that errs on the generous side only by keys the
    /// host itself deleted; see the module docs).
    pub pthread_keys_free: usize,
    /// The process's limit of pthread keys.
    pub pthread_keys_max: usize,
    /// Memory mappings of the process now.
    pub maps_used: usize,
    /// The kernel's limit of memory mappings per process (`vm.max_map_count`).
    pub maps_max: usize,
}

impl LoadBudget {
    /// Reads the budget now.
    pub fn now() -> LoadBudget {
        let pthread_keys_max = keys_max();
        LoadBudget {
            pthread_keys_free: keys_free(pthread_keys_max),
            pthread_keys_max,
            maps_used: maps_used(),
            maps_max: maps_max(),
        }
    }

    /// Memory mappings not in use.
    pub fn maps_free(&self) -> usize {
        self.maps_max.saturating_sub(self.maps_used)
    }

    /// The resource a load would come too close to exhausting, if any: its name, what is left,
    /// and the reserve.
    fn shortfall(&self) -> Option<(&'static str, usize, usize)> {
        if self.pthread_keys_free < KEY_RESERVE {
            return Some(("pthread keys", self.pthread_keys_free, KEY_RESERVE));
        }
        if self.maps_free() < MAP_RESERVE {
            return Some(("memory mappings", self.maps_free(), MAP_RESERVE));
        }
        None
    }
}

/// Refuses the load of `path` if it would come too close to a per-process limit.
///
/// Keys are probed on every load (a few `pthread_key_create` calls). Mappings are counted from
/// `/proc/self/maps` only when an upper estimate says the reserve could be near: the count read
/// last time plus [`MAPS_PER_LOAD`] for every load since. Reading the file costs in proportion to
/// the mappings, so reading it on every load would make loads slower as retired libraries pile up.
pub(crate) fn check_load(path: &Path) -> Result<(), Error> {
    let maps_max = maps_max();
    let maps_used = MAPS.lock().estimate(maps_max);
    let keys_max = keys_max();
    let budget = LoadBudget {
        pthread_keys_free: keys_free(keys_max),
        pthread_keys_max: keys_max,
        maps_used,
        maps_max,
    };
    match budget.shortfall() {
        None => Ok(()),
        Some((resource, remaining, reserve)) => {
            let error = Error::LoadBudgetExhausted {
                path: path.to_path_buf(),
                resource,
                remaining,
                reserve,
            };
            tracing::error!(%error, "load refused");
            Err(error)
        }
    }
}

/// An upper bound of the mappings one load adds: a library maps five or six regions, and its
/// `std` may add a few (thread stacks, guard pages).
pub const MAPS_PER_LOAD: usize = 16;

/// What the last read of `/proc/self/maps` found, and the loads checked since.
struct MapsSeen {
    read: usize,
    loads_since: usize,
}

static MAPS: parking_lot::Mutex<MapsSeen> =
    parking_lot::Mutex::new(MapsSeen { read: 0, loads_since: usize::MAX });

impl MapsSeen {
    /// The mappings in use, read again only when the estimate comes within twice the reserve of
    /// `max`; counts one more load.
    fn estimate(&mut self, max: usize) -> usize {
        let estimate = self.read.saturating_add(self.loads_since.saturating_mul(MAPS_PER_LOAD));
        if estimate.saturating_add(2 * MAP_RESERVE) >= max {
            self.read = maps_used();
            self.loads_since = 0;
        }
        self.loads_since += 1;
        self.read.saturating_add((self.loads_since - 1) * MAPS_PER_LOAD)
    }
}

fn keys_max() -> usize {
    // SAFETY: `sysconf` reads a configuration value; it has no preconditions.
    let max = unsafe { libc::sysconf(libc::_SC_THREAD_KEYS_MAX) };
    usize::try_from(max).ok().filter(|&m| m > 0).unwrap_or(1024)
}

/// How many keys the probe takes at once (see `keys_free`).
const PROBE_KEYS: usize = 4;

/// The keys not in use, from the indexes of a few fresh keys (see the module docs).
///
/// A few rather than one: a copy of `std` never keeps key 0 (it uses 0 as "not created yet",
/// so it takes another and deletes 0), which leaves a hole at 0 that a single probe would fall
/// into. `PROBE_KEYS` keys fill up to `PROBE_KEYS - 1` holes and the last lands above every key
/// in use.
fn keys_free(max: usize) -> usize {
    let mut taken: Vec<libc::pthread_key_t> = Vec::with_capacity(PROBE_KEYS);
    for _ in 0..PROBE_KEYS {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is valid for a write; no destructor is registered.
        if unsafe { libc::pthread_key_create(&mut key, None) } != 0 {
            break;
        }
        taken.push(key);
    }
    let free = match taken.iter().max() {
        // Keys below the highest probe key that the probe did not get are in use.
        Some(&highest) if taken.len() == PROBE_KEYS => {
            let in_use = (highest as usize + 1).saturating_sub(PROBE_KEYS);
            max.saturating_sub(in_use)
        }
        // Fewer than `PROBE_KEYS` were left: exactly as many as it got.
        _ => taken.len(),
    };
    for key in taken {
        // SAFETY: the probe created each key above, and deletes each once.
        unsafe { libc::pthread_key_delete(key) };
    }
    free
}

fn maps_used() -> usize {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |maps| maps.lines().count())
}

fn maps_max() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(65_530)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_taken_and_kept_shows_in_the_budget() {
        let before = LoadBudget::now();
        assert!(
            before.pthread_keys_free > 0 && before.pthread_keys_free <= before.pthread_keys_max
        );
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is valid for a write.
        assert_eq!(unsafe { libc::pthread_key_create(&mut key, None) }, 0);
        let during = LoadBudget::now();
        // SAFETY: the key was created above and is deleted once.
        unsafe { libc::pthread_key_delete(key) };
        // The kept key took the lowest free slot, so a later probe lands above it.
        assert!(during.pthread_keys_free < before.pthread_keys_free);
        assert!(before.maps_used > 0 && before.maps_max > before.maps_used);
    }

    #[test]
    fn a_budget_below_a_reserve_names_that_resource() {
        let plenty = LoadBudget {
            pthread_keys_free: 500,
            pthread_keys_max: 1024,
            maps_used: 100,
            maps_max: 65_530,
        };
        assert_eq!(plenty.shortfall(), None);
        let keys = LoadBudget { pthread_keys_free: KEY_RESERVE - 1, ..plenty };
        assert_eq!(keys.shortfall(), Some(("pthread keys", KEY_RESERVE - 1, KEY_RESERVE)));
        let maps = LoadBudget { maps_used: 65_000, ..plenty };
        assert_eq!(maps.shortfall(), Some(("memory mappings", 530, MAP_RESERVE)));
    }
}
