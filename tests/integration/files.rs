//! Plugin files as they really are on disk: FIFOs, huge sparse files, files still being
//! written, half-zero libraries, and what a killed host leaves behind.
//!
//! Scenarios that crashed or hung the old code run in a child process (this test binary, run
//! again with [`SCENARIO`] naming the scenario), with a bounded wait: a crash or a hang fails
//! the test instead of taking the whole test run down with it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use graft_runtime::{Error, Runtime, WatchEvent};
use graft_tests::Fixture;

use super::{PATIENCE, Setup};

/// The environment variable that names the scenario a child process runs.
const SCENARIO: &str = "GRAFT_FILES_SCENARIO";
/// How long a child scenario may take before it is taken as hung and killed.
const CHILD_DEADLINE: Duration = Duration::from_secs(90);

/// Runs `scenario` in a child process with `dir` as its working directory; kills it and fails
/// if it has not finished within [`CHILD_DEADLINE`]; returns its output.
fn in_child(scenario: &str, dir: &Path) -> Output {
    let exe = std::env::current_exe().expect("test binary");
    let child = Command::new(exe)
        .args(["--exact", "integration::files::scenario_entry", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario)
        .env("GRAFT_FILES_DIR", dir)
        .env("GRAFT_FILES_G10", graft_tests::path(Fixture::Greeter1_0).unwrap())
        .env("GRAFT_FILES_G11", graft_tests::path(Fixture::Greeter1_1).unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the child");
    let pid = child.id();
    let (done, finished) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(CHILD_DEADLINE) {
        Ok(output) => output.expect("the child's output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("scenario `{scenario}` hung: killed after {CHILD_DEADLINE:?}");
        }
    }
}

/// Asserts that the child scenario ran its one test to success.
fn assert_passed(scenario: &str) {
    let dir = tempfile::tempdir().unwrap();
    let output = in_child(scenario, dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed") && stdout.contains("SCENARIO OK"),
        "scenario `{scenario}` failed: {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

/// The entry point of the child scenarios; does nothing in the parent test run.
#[test]
fn scenario_entry() {
    let Ok(scenario) = std::env::var(SCENARIO) else { return };
    let dir = PathBuf::from(std::env::var_os("GRAFT_FILES_DIR").unwrap());
    let g10 = PathBuf::from(std::env::var_os("GRAFT_FILES_G10").unwrap());
    let g11 = PathBuf::from(std::env::var_os("GRAFT_FILES_G11").unwrap());
    match scenario.as_str() {
        "deep" => scenario_deep(&dir, &g11),
        "writer" => scenario_writer(&dir, &g10, &g11),
        "flip" => scenario_flip(&dir, &g10, &g11),
        "watch-writer" => scenario_watch_writer(&dir, &g10),
        other => panic!("unknown scenario {other}"),
    }
    println!("SCENARIO OK");
}

fn runtime_in(dir: &Path) -> Runtime {
    Runtime::builder().staging_dir(dir.join("staging")).build().unwrap()
}

fn staged(runtime: &Runtime) -> usize {
    std::fs::read_dir(runtime.staging_dir())
        .unwrap()
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "so")))
        .count()
}

// ---------------------------------------------------------------------------------------------
// Open once, never block; the size limit.

/// Regression: the loader did `stat` then a blocking `open`, so a path flipped to a FIFO in
/// between hung `swap` for ever while it held the service's control lock (and so `rollback`).
#[test]
fn swapping_a_path_that_flips_between_a_build_and_a_fifo_never_hangs() {
    assert_passed("flip");
}

fn scenario_flip(dir: &Path, g10: &Path, g11: &Path) {
    let runtime = Arc::new(runtime_in(dir));
    std::fs::copy(g10, dir.join("first.so")).unwrap();
    runtime.load_and_start(dir.join("first.so")).unwrap();
    let real = dir.join("real.so");
    std::fs::copy(g11, &real).unwrap();
    let pipe = dir.join("pipe");
    assert!(Command::new("mkfifo").arg(&pipe).status().unwrap().success());
    let target = dir.join("flip.so");
    std::fs::hard_link(&real, &target).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, dir, target) = (Arc::clone(&stop), dir.to_path_buf(), target.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (from, via) in [(&real, ".a"), (&pipe, ".b")] {
                    let _ = std::fs::remove_file(dir.join(via));
                    std::fs::hard_link(from, dir.join(via)).unwrap();
                    std::fs::rename(dir.join(via), &target).unwrap();
                }
            }
        })
    };
    let rollbacks = {
        let (stop, runtime) = (Arc::clone(&stop), Arc::clone(&runtime));
        std::thread::spawn(move || {
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Ok, or a typed "nothing to roll back to": it never waits on a stuck swap.
                let _ = runtime.rollback("greeter");
                done += 1;
            }
            done
        })
    };
    let (mut refused_as_fifo, mut swapped) = (0, 0u32);
    let mut attempts = 0;
    // Until thirty swaps found a regular file: the old loader hung when the path flipped
    // between its `stat` and its `open`.
    while swapped < 30 {
        attempts += 1;
        match runtime.swap("greeter", &target) {
            Ok(_) => swapped += 1,
            Err(Error::NotAFile { kind, .. }) => {
                assert!(kind.contains("FIFO"), "{kind}");
                refused_as_fifo += 1;
            }
            Err(Error::SameVersion { .. }) => swapped += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(rollbacks.join().unwrap() > 0);
    println!("{attempts} swaps: {refused_as_fifo} refused as a FIFO, {swapped} found a build");
    assert_eq!(
        staged(&runtime),
        runtime.status().iter().map(|s| 1 + s.history.len()).sum::<usize>()
    );
}

#[test]
fn what_is_not_a_regular_file_is_refused_by_kind_and_names_the_path() {
    let setup = Setup::new();
    let pipe = setup.dir.path().join("pipe.so");
    assert!(Command::new("mkfifo").arg(&pipe).status().unwrap().success());
    let err = setup.runtime.load(&pipe).unwrap_err();
    let Error::NotAFile { path, kind } = &err else { panic!("{err:?}") };
    assert_eq!((path, *kind), (&pipe, "a named pipe (FIFO)"));
    let err = setup.runtime.load(setup.dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotAFile { kind: "a directory", .. }), "{err:?}");
    let err = setup.runtime.load("/dev/null").unwrap_err();
    assert!(matches!(err, Error::NotAFile { kind: "a character device", .. }), "{err:?}");
    assert_eq!(setup.staged_files(), 0);
}

/// Regression: an 8 GiB sparse `.so` was copied whole into staging before any check.
#[test]
fn an_8_gib_sparse_file_is_refused_at_once_and_nothing_is_staged() {
    let setup = Setup::new();
    let path = setup.dir.path().join("huge.so");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&std::fs::read(graft_tests::path(Fixture::Greeter1_0).unwrap()).unwrap())
        .unwrap();
    file.set_len(8 << 30).unwrap();
    drop(file);
    let err = setup.runtime.load(&path).unwrap_err();
    let Error::TooLarge { path: named, size, limit } = &err else { panic!("{err:?}") };
    assert_eq!((named, *size, *limit), (&path, 8 << 30, graft_runtime::DEFAULT_MAX_PLUGIN_SIZE));
    assert_eq!(setup.staged_files(), 0);
}

#[test]
fn the_size_limit_is_configurable() {
    let setup = Setup::with(Runtime::builder().max_plugin_size(4096));
    let err = setup.runtime.load(setup.copy(Fixture::Greeter1_0)).unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 4096, .. }), "{err:?}");
    assert_eq!(setup.staged_files(), 0);
}

/// Regression: a `dlopen` failure named the private staged copy, not the file the caller gave.
#[test]
fn a_dlopen_failure_names_the_given_file_not_the_staged_copy() {
    let setup = Setup::new();
    let mut bytes = std::fs::read(graft_tests::path(Fixture::Greeter1_0).unwrap()).unwrap();
    // The build needs libc.so.6; make it need a library that does not exist, so that dlopen
    // fails after every check before it passed.
    let needle = b"libc.so.6\0";
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("a DT_NEEDED on libc");
    bytes[at..at + 4].copy_from_slice(b"libx");
    let path = setup.dir.path().join("needs-libx.so");
    std::fs::write(&path, &bytes).unwrap();
    let err = setup.runtime.load(&path).unwrap_err();
    let Error::Open { path: named, .. } = &err else { panic!("{err:?}") };
    assert_eq!(named, &path);
    assert!(err.to_string().contains("needs-libx.so"), "{err}");
    assert_eq!(setup.staged_files(), 0);
}

/// A build is hashed where the runtime needs its hash (here: to archive it in the state
/// directory), and status reports it; without a reason to hash it, status says it is unknown.
#[test]
fn the_content_hash_is_reported_and_two_builds_differ() {
    let plain = Setup::new();
    plain.runtime.load_and_start(plain.copy(Fixture::Greeter1_0)).unwrap();
    assert_eq!(plain.runtime.service_status("greeter").unwrap().current.unwrap().sha256, None);

    let state = tempfile::tempdir().unwrap();
    let setup = Setup::with(Runtime::builder().state_dir(state.path()));
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let first = setup.runtime.service_status("greeter").unwrap().current.unwrap().sha256.unwrap();
    setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
    let second = setup.runtime.service_status("greeter").unwrap().current.unwrap().sha256.unwrap();
    assert_eq!((first.len(), second.len()), (64, 64));
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(first, second);
}

// ---------------------------------------------------------------------------------------------
// Never load a file still being written.

/// Regression: a writer that sets the final size first and then writes in chunks left a zero
/// tail whose headers "fit": the old loader loaded the half file (and crashed in `dlopen`).
#[test]
fn a_file_being_written_is_refused_as_incomplete_until_whole_and_closed() {
    assert_passed("writer");
}

fn scenario_writer(dir: &Path, g10: &Path, g11: &Path) {
    let runtime = runtime_in(dir);
    std::fs::copy(g10, dir.join("first.so")).unwrap();
    runtime.load_and_start(dir.join("first.so")).unwrap();
    let whole = std::fs::read(g11).unwrap();
    let path = dir.join("next.so");
    let (go, next_step) = crossbeam_channel::unbounded::<()>();
    let (stepped, steps) = crossbeam_channel::unbounded::<()>();
    let writer = {
        let (path, whole) = (path.clone(), whole.clone());
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&path).unwrap();
            file.set_len(whole.len() as u64).unwrap();
            stepped.send(()).unwrap();
            for chunk in whole.chunks(whole.len() / 4 + 1) {
                next_step.recv().unwrap();
                file.write_all(chunk).unwrap();
                file.flush().unwrap();
                stepped.send(()).unwrap();
            }
            next_step.recv().unwrap();
            drop(file);
            stepped.send(()).unwrap();
        })
    };
    // Sized, then each chunk written, the last one included: still open, so still incomplete.
    for _ in 0..5 {
        steps.recv_timeout(PATIENCE).unwrap();
        let err = runtime.load(&path).unwrap_err();
        assert!(matches!(&err, Error::Incomplete { path: p, .. } if *p == path), "{err:?}");
        let err = runtime.swap("greeter", &path).unwrap_err();
        assert!(matches!(err, Error::Incomplete { .. }), "{err:?}");
        assert_eq!(runtime.call("greeter", "version", b"").unwrap(), b"1.0.0");
        assert_eq!(staged(&runtime), 1, "nothing of the half file stays staged");
        go.send(()).unwrap();
    }
    steps.recv_timeout(PATIENCE).unwrap();
    writer.join().unwrap();
    runtime.swap("greeter", &path).unwrap();
    assert_eq!(runtime.call("greeter", "version", b"").unwrap(), b"1.1.0");
}

/// Regression: a library whose dynamic segment, or whose tail from there on, is zero-filled
/// (headers inside the file) crashed the old loader in `dlopen` with SIGSEGV.
#[test]
fn a_zero_filled_dynamic_section_or_tail_is_refused_before_dlopen() {
    assert_passed("deep");
}

fn scenario_deep(dir: &Path, g11: &Path) {
    let runtime = runtime_in(dir);
    let whole = std::fs::read(g11).unwrap();
    let (offset, len) = elf::dynamic(&whole);
    let symtab = elf::file_offset(&whole, elf::dyn_value(&whole, 6).unwrap());
    let strtab = elf::file_offset(&whole, elf::dyn_value(&whole, 5).unwrap());
    assert!(strtab > symtab, "the dynamic symbol table precedes its strings");
    let cases: [(&str, std::ops::Range<usize>); 3] = [
        ("dynamic", offset..offset + len),
        ("tail", offset..whole.len()),
        ("dynsym", symtab..strtab),
    ];
    for (name, zeroed) in cases {
        let mut bytes = whole.clone();
        bytes[zeroed].fill(0);
        let path = dir.join(format!("{name}.so"));
        std::fs::write(&path, &bytes).unwrap();
        let err = runtime.load(&path).unwrap_err();
        assert!(
            matches!(&err, Error::MalformedElf { path: p, .. } if *p == path)
                || matches!(&err, Error::MissingSymbol { source: None, path: p, .. } if *p == path),
            "{name}: {err:?}"
        );
        println!("{name}: {err}");
    }
    assert_eq!(staged(&runtime), 0);
}

/// Regression: the watcher refused a just-created empty file as "not ELF", and took a sized
/// but half-written file as complete (its headers fit) and loaded it.
#[test]
fn the_watcher_waits_for_a_file_being_written_and_loads_it_once_whole() {
    assert_passed("watch-writer");
}

fn scenario_watch_writer(dir: &Path, g10: &Path) {
    let runtime = runtime_in(dir);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (_watcher, events) = runtime.watch(&plugins).unwrap();
    let whole = std::fs::read(g10).unwrap();
    let path = plugins.join("greeter.so");
    let mut file = std::fs::File::create(&path).unwrap();
    let event = events.recv_timeout(PATIENCE).unwrap();
    assert!(matches!(&event, WatchEvent::Incomplete { path: p, .. } if *p == path), "{event:?}");
    file.set_len(whole.len() as u64).unwrap();
    for chunk in whole.chunks(whole.len() / 4 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
    }
    drop(file);
    loop {
        match events.recv_timeout(PATIENCE).unwrap() {
            WatchEvent::Incomplete { .. } => continue,
            WatchEvent::Started { version, .. } => {
                assert_eq!(version.to_string(), "1.0.0");
                break;
            }
            other => panic!("only `Incomplete` may come before `Started`: {other:?}"),
        }
    }
    assert_eq!(runtime.call("greeter", "version", b"").unwrap(), b"1.0.0");
}

// ---------------------------------------------------------------------------------------------
// A killed host leaves nothing behind for ever.

/// Regression: a killed host's staging directory (and its staged copies) stayed for ever.
#[test]
fn a_dead_runtimes_staging_directory_is_removed_at_start_a_live_ones_is_not() {
    // A live runtime, with its own temporary staging directory (and lock).
    let live = Runtime::new().unwrap();
    std::fs::write(live.staging_dir().join("libkept.1.1.so"), b"staged").unwrap();
    // A dead one: graft's name and a lock file no process holds.
    let dead = tempfile::Builder::new().prefix("graft-staging-").tempdir().unwrap().keep();
    std::fs::write(dead.join(".graft-4000001-dead.lock"), b"").unwrap();
    std::fs::write(dead.join("libleft.4000001.1.so"), b"staged").unwrap();
    // Not graft's: no lock file, so never removed whatever its name.
    let foreign = tempfile::Builder::new().prefix("graft-staging-").tempdir().unwrap();

    let _new = Runtime::new().unwrap();
    assert!(!dead.exists(), "the dead runtime's staging directory is removed");
    assert!(live.staging_dir().join("libkept.1.1.so").exists(), "a live one's is kept");
    assert!(foreign.path().exists(), "a directory without a lock file is not graft's");
}

/// Regression: staged copies of killed hosts stayed for ever in an explicit staging directory.
#[test]
fn dead_processes_staged_copies_are_removed_from_a_shared_staging_directory() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let staging = setup.runtime.staging_dir().to_path_buf();
    std::fs::write(staging.join("libleft.4000003.1.so"), b"staged").unwrap();
    std::fs::write(staging.join(".graft-4000005-dead.lock"), b"").unwrap();
    std::fs::write(staging.join("notes.txt"), b"not graft's").unwrap();

    let second = Runtime::builder().staging_dir(&staging).build().unwrap();
    assert!(!staging.join("libleft.4000003.1.so").exists());
    assert!(!staging.join(".graft-4000005-dead.lock").exists());
    assert!(staging.join("notes.txt").exists());
    assert_eq!(setup.staged_files(), 1, "the live runtime's staged copy is kept");
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.0.0");
    drop(second);
}

/// Regression: temporary files a killed writer left in the state directory stayed for ever.
#[test]
fn leftover_temporary_files_in_the_state_directory_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for sub in ["archive", "manifests"] {
        std::fs::create_dir_all(state.join(sub)).unwrap();
    }
    let leftovers =
        [state.join("archive/.greeter-0123.so.77.tmp"), state.join("manifests/.greeter.json.tmp")];
    for leftover in &leftovers {
        std::fs::write(leftover, b"half").unwrap();
    }
    let _runtime = Runtime::builder()
        .staging_dir(dir.path().join("staging"))
        .state_dir(&state)
        .build()
        .unwrap();
    for leftover in &leftovers {
        assert!(!leftover.exists(), "{} is removed", leftover.display());
    }
}

/// Just enough ELF reading to find the tables a test zero-fills.
mod elf {
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn segments(b: &[u8]) -> impl Iterator<Item = (u32, usize, u64, usize)> + '_ {
        let phoff = u64_at(b, 32) as usize;
        let phnum = u16::from_le_bytes([b[56], b[57]]) as usize;
        (0..phnum).map(move |i| {
            let p = phoff + i * 56;
            let kind = u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
            (kind, u64_at(b, p + 8) as usize, u64_at(b, p + 16), u64_at(b, p + 32) as usize)
        })
    }

    /// The file offset and length of the dynamic segment.
    pub fn dynamic(b: &[u8]) -> (usize, usize) {
        segments(b).find(|s| s.0 == 2).map(|s| (s.1, s.3)).expect("PT_DYNAMIC")
    }

    pub fn dyn_value(b: &[u8], tag: u64) -> Option<u64> {
        let (offset, len) = dynamic(b);
        (offset..offset + len)
            .step_by(16)
            .map(|at| (u64_at(b, at), u64_at(b, at + 8)))
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v)
    }

    pub fn file_offset(b: &[u8], vaddr: u64) -> usize {
        segments(b)
            .find(|s| s.0 == 1 && vaddr >= s.2 && vaddr < s.2 + s.3 as u64)
            .map(|s| s.1 + (vaddr - s.2) as usize)
            .expect("an address in a PT_LOAD segment")
    }
}
