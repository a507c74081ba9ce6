//! Plugin files as they really are on disk: FIFOs, huge sparse files, files still being
//! written, half-zero libraries, and what a killed host leaves behind.
//!
//! Scenarios that crashed or hung the old code run in a child process (the runtime's
//! `files_host` example), with a bounded wait: a crash or a hang fails the test instead of
//! taking the whole test run down with it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use graft_runtime::{Error, Runtime};
use graft_tests::Fixture;

use super::Setup;

/// How long a child scenario may take before it is taken as hung and killed.
const CHILD_DEADLINE: Duration = Duration::from_secs(90);

/// Runs `files_host <scenario> <dir> <greeter 1.0> <greeter 1.1>`; kills it and fails if it
/// has not finished within [`CHILD_DEADLINE`]; returns its output.
fn files_host(scenario: &str, dir: &Path) -> Output {
    let child = Command::new(graft_tests::files_host().unwrap())
        .arg(scenario)
        .arg(dir)
        .arg(graft_tests::path(Fixture::Greeter1_0).unwrap())
        .arg(graft_tests::path(Fixture::Greeter1_1).unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning files_host");
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

/// Asserts that `files_host` ran the scenario, in a directory of its own, to its `ok:` line and
/// exited with success.
fn assert_passed(scenario: &str) {
    let dir = tempfile::tempdir().unwrap();
    let output = files_host(scenario, dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.lines().any(|line| line.starts_with("ok: ")),
        "scenario `{scenario}` failed: {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}

// ---------------------------------------------------------------------------------------------
// Open once, never block; the size limit.

/// Regression: the loader did `stat` then a blocking `open`, so a path flipped to a FIFO in
/// between hung `swap` for ever while it held the service's control lock (and so `rollback`).
#[test]
fn swapping_a_path_that_flips_between_a_build_and_a_fifo_never_hangs() {
    assert_passed("flip");
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

/// Regression: a library whose dynamic segment, or whose tail from there on, is zero-filled
/// (headers inside the file) crashed the old loader in `dlopen` with SIGSEGV.
#[test]
fn a_zero_filled_dynamic_section_or_tail_is_refused_before_dlopen() {
    assert_passed("deep");
}

/// Regression: the watcher refused a just-created empty file as "not ELF", and took a sized
/// but half-written file as complete (its headers fit) and loaded it.
#[test]
fn the_watcher_waits_for_a_file_being_written_and_loads_it_once_whole() {
    assert_passed("watch-writer");
}

/// Regression: the watcher, like the loader, did `stat` then a blocking `open`, so a watched
/// path flipped to a FIFO in between hung its thread for ever (and the drop of the `Watcher`).
#[test]
fn a_watched_path_that_flips_between_a_build_and_a_fifo_never_hangs_the_watcher() {
    assert_passed("watch-flip");
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
