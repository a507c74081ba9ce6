//! Retirement: plugin code leaves service without ever crashing or aborting the host. The
//! scenarios that took hosts down run in a child process (`retire_host`), so that a crash fails
//! the test instead of killing this binary.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use graft_runtime::{EventKind, RETIRE_THREAD};
use graft_tests::Fixture;

use super::{PATIENCE, Setup, mapped};

/// Runs `retire_host` with `args`, failing the test if it runs longer than a few minutes.
fn retire_host(args: &[&str]) -> Output {
    let mut command = Command::new(graft_tests::retire_host().unwrap());
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = child.id();
    let (done, finished) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(Duration::from_secs(240)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("retire_host {args:?} hung");
        }
    }
}

fn fixture(fixture: Fixture) -> String {
    graft_tests::path(fixture).unwrap().to_str().unwrap().to_owned()
}

fn assert_survived(output: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success() && stdout.starts_with("ok: "),
        "the host did not survive: {:?}\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    (stdout, stderr)
}

/// Regression: the retired library was unmapped while a host thread still carried thread-exit
/// work of its `std`, and the thread's exit jumped into unmapped code (SIGSEGV).
#[test]
fn a_host_thread_exits_cleanly_after_the_build_it_ran_is_retired() {
    let output =
        retire_host(&["thread-exit", &fixture(Fixture::Threads1_0), &fixture(Fixture::Threads1_1)]);
    assert_survived(&output);
}

/// Regression: every load of a plugin whose `std` took a pthread key used one up for good, and
/// about a thousand loads aborted the process (`fatal runtime error: out of TLS keys`).
#[test]
fn loads_are_refused_before_the_process_runs_out_of_pthread_keys() {
    let output =
        retire_host(&["keys", &fixture(Fixture::Threads1_0), &fixture(Fixture::Threads1_1)]);
    let (stdout, _) = assert_survived(&output);
    assert!(stdout.contains("refused after"), "{stdout}");
    assert!(stdout.contains("pthread keys are left"), "the error names what ran out: {stdout}");
    assert!(stdout.contains("restart the host process"), "and what to do: {stdout}");
}

/// Regression: a plugin's worker, inside a host callback to its own service, held the last
/// reference when the runtime was dropped, and the instance was destroyed on that worker, whose
/// `destroy` joined itself ("failed to join thread: Resource deadlock avoided").
#[test]
fn an_instance_is_destroyed_on_the_retire_thread_when_its_own_worker_lets_go_last() {
    let output = retire_host(&["own-thread", &fixture(Fixture::Threads1_0)]);
    let (_, stderr) = assert_survived(&output);
    let destroyed: Vec<&str> =
        stderr.lines().filter(|line| line.contains("threads 1.0.0 destroyed")).collect();
    assert_eq!(destroyed.len(), 1, "{stderr}");
    assert!(destroyed[0].contains(RETIRE_THREAD), "destroyed on {}", destroyed[0]);
    assert!(!stderr.contains("destroying the instance failed"), "{stderr}");
}

/// A build whose code left no thread-exit work behind (the greeter's `std` never ran
/// `thread::current()` or spawned a thread) is unmapped once retired, and says so.
#[test]
fn a_retired_build_with_nothing_pointing_into_it_is_unmapped() {
    let setup = Setup::with(graft_runtime::Runtime::builder().history_depth(0));
    let events = setup.runtime.subscribe();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let staged = setup.runtime.service_status("greeter").unwrap().current.unwrap().staged;
    let unmapped_before = setup.runtime.unmapped_libraries();
    let swap = setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
    swap.previous.wait_retired(PATIENCE).unwrap();

    assert!(!swap.previous.is_mapped() && !mapped(&staged), "unmapped, and says so");
    assert!(!staged.exists(), "the staged file is removed");
    assert!(setup.runtime.unmapped_libraries() > unmapped_before);
    assert!(setup.runtime.retired_libraries().iter().all(|l| l.staged != staged));
    let generation = swap.previous.generation();
    let retired = events.try_iter().find_map(|e| match e.kind {
        EventKind::Retired { generation: g, unmapped } if g == generation => Some(unmapped),
        _ => None,
    });
    assert_eq!(retired, Some(true), "a Retired event says the library is unmapped");
}

/// A build whose `std` ran `thread::current()` on a host thread left a pthread-key destructor
/// pointing into its code: it stays mapped, is listed with the reason and what it costs, and
/// the event and the watch say it is mapped.
#[test]
fn a_retired_build_with_a_key_destructor_into_it_stays_mapped_and_is_accounted() {
    let setup = Setup::with(graft_runtime::Runtime::builder().history_depth(0));
    let events = setup.runtime.subscribe();
    setup.runtime.load_and_start(setup.copy(Fixture::Threads1_0)).unwrap();
    let staged = setup.runtime.service_status("threads").unwrap().current.unwrap().staged;
    setup.runtime.call("threads", "current", b"").unwrap();
    let swap = setup.runtime.swap("threads", setup.copy(Fixture::Threads1_1)).unwrap();
    swap.previous.wait_retired(PATIENCE).unwrap();

    assert!(swap.previous.is_retired());
    assert!(swap.previous.is_mapped() && mapped(&staged), "kept mapped, and says so");
    assert!(!staged.exists(), "the staged file is removed all the same");
    let retired = setup.runtime.retired_libraries();
    let library = retired.iter().find(|l| l.staged == staged).expect("listed as retired");
    assert_eq!(
        (library.service.as_str(), library.version.to_string()),
        ("threads", "1.0.0".into())
    );
    assert!(library.reason.contains("pthread key"), "{library:?}");
    assert!(library.mapped && library.mapped_bytes > 0, "{library:?}");
    assert!(library.resident_bytes <= library.mapped_bytes, "{library:?}");
    // What a kept build costs, for the record (`--nocapture` shows it).
    println!(
        "kept {} {}: {} bytes mapped, {} resident",
        library.service, library.version, library.mapped_bytes, library.resident_bytes
    );
    let generation = swap.previous.generation();
    let retired = events.try_iter().find_map(|e| match e.kind {
        EventKind::Retired { generation: g, unmapped } if g == generation => Some(unmapped),
        _ => None,
    });
    assert_eq!(retired, Some(false), "a Retired event says the library stays mapped");
}

#[test]
fn the_load_budget_reports_what_is_left_of_the_per_process_limits() {
    let setup = Setup::new();
    let budget = setup.runtime.load_budget();
    assert!(budget.pthread_keys_max >= 128, "{budget:?}");
    assert!(budget.pthread_keys_free > graft_runtime::KEY_RESERVE, "{budget:?}");
    assert!(budget.maps_used > 0 && budget.maps_free() > graft_runtime::MAP_RESERVE, "{budget:?}");
}
