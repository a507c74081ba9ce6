//! Stateful services: state handed over on swap, restart and rollback with no update lost, a
//! failed handover that leaves the old instance serving, and state saved across a restart of
//! the host.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use graft_runtime::{Error, EventKind, ProbationPolicy, Runtime, RuntimeBuilder, ServiceState};
use graft_tests::Fixture;

use super::{PATIENCE, Setup, strict_probation};

/// No probation and no periodic health check: only the test changes the service.
fn quiet() -> RuntimeBuilder {
    Runtime::builder().probation(ProbationPolicy::disabled()).health_interval(None)
}

fn count(runtime: &Runtime) -> u64 {
    let answer = runtime.call("counter", "get", b"").expect("get");
    String::from_utf8(answer).expect("utf-8").parse().expect("a count")
}

fn version(runtime: &Runtime) -> String {
    String::from_utf8(runtime.call("counter", "version", b"").expect("version")).expect("utf-8")
}

/// Threads that increment the counter without pause until stopped, counting what they issued
/// and every call that failed.
struct Load {
    stop: Arc<AtomicBool>,
    issued: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Vec<Error>>>,
}

impl Load {
    fn start(runtime: &Runtime, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicU64::new(0));
        // Every thread has made a call before the load counts as started.
        let started = Arc::new(std::sync::Barrier::new(threads + 1));
        let threads = (0..threads)
            .map(|_| {
                let handle = runtime.handle("counter").expect("handle");
                let (stop, issued, started) =
                    (Arc::clone(&stop), Arc::clone(&issued), Arc::clone(&started));
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    let mut first = true;
                    while !stop.load(Ordering::Relaxed) {
                        issued.fetch_add(1, Ordering::Relaxed);
                        if let Err(error) = handle.call_to_vec("increment", b"") {
                            errors.push(error);
                        }
                        if std::mem::take(&mut first) {
                            started.wait();
                        }
                    }
                    errors
                })
            })
            .collect();
        started.wait();
        Load { stop, issued, threads }
    }

    /// Stops the threads; returns the increments issued and the errors they saw.
    fn finish(self) -> (u64, Vec<Error>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors =
            self.threads.into_iter().flat_map(|t| t.join().expect("load thread")).collect();
        (self.issued.load(Ordering::Relaxed), errors)
    }
}

#[test]
fn eight_threads_lose_no_increment_across_two_hundred_swaps_and_rollbacks() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    let v1 = graft_tests::path(Fixture::Counter1_0).unwrap();
    let v2 = graft_tests::path(Fixture::Counter1_1).unwrap();
    runtime.load_and_start(&v1).unwrap();
    let load = Load::start(runtime, 8);
    let mut changes = 0;
    for i in 0..220 {
        let serving = runtime.handle("counter").unwrap().version().unwrap().to_string();
        // Every third change is a rollback (the state goes back to the build before), the
        // others swap to the other build's file.
        let report = if i % 3 == 2 {
            runtime.rollback("counter").unwrap()
        } else if serving == "1.0.0" {
            runtime.swap("counter", &v2).unwrap()
        } else {
            runtime.swap("counter", &v1).unwrap()
        };
        assert_ne!(report.from, report.to);
        changes += 1;
    }
    let (issued, errors) = load.finish();
    assert!(errors.is_empty(), "{} calls failed, the first: {}", errors.len(), errors[0]);
    assert_eq!(changes, 220);
    assert!(issued > 0);
    assert_eq!(count(runtime), issued, "every increment issued is counted, none twice");
}

#[test]
fn a_restart_hands_the_state_to_the_new_instance() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Counter1_1).unwrap()).unwrap();
    for _ in 0..5 {
        runtime.call("counter", "increment", b"").unwrap();
    }
    let before = runtime.handle("counter").unwrap().generation().unwrap();
    let report = runtime.restart("counter").unwrap();
    assert_ne!(report.generation, before);
    assert_eq!(count(runtime), 5);
    assert_eq!(runtime.call("counter", "handovers", b"").unwrap(), b"1");
}

/// An export that calls its own service through the host is answered at once (its calls are
/// held back by the very handover running the export, so waiting would wait for itself): the
/// handover fails with the export's error and the old instance serves on.
#[test]
fn an_export_calling_its_own_service_is_answered_at_once() {
    // Long enough that a call waiting for the deadline would show in the error it reports.
    let setup = Setup::with(quiet().call_deadline(std::time::Duration::from_secs(30)));
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::CounterFaulty1).unwrap()).unwrap();
    runtime.call("counter", "increment", b"").unwrap();
    runtime.call("counter", "fault", b"export-calls-self").unwrap();
    let generation = runtime.handle("counter").unwrap().generation();
    let error = runtime.restart("counter").unwrap_err();
    let Error::StateExportFailed { message, panicked: false, .. } = &error else {
        panic!("expected StateExportFailed, got {error:?}");
    };
    // Refused without waiting: `NotReady` after zero time, while the service is running.
    assert!(
        message.contains("was not ready within 0ns (it is running)"),
        "the export's call to itself: {message}"
    );
    assert_eq!(runtime.handle("counter").unwrap().generation(), generation);
    runtime.call("counter", "fault", b"none").unwrap();
    assert_eq!(count(runtime), 1);
    runtime.restart("counter").unwrap();
    assert_eq!(count(runtime), 1);
}

/// Each step of a handover that can fail: the swap returns its error, the old instance goes on
/// serving with its state, and the calls made meanwhile all succeed.
#[test]
fn a_failed_handover_leaves_the_old_instance_serving_with_its_state() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::CounterFaulty1).unwrap()).unwrap();
    let next = graft_tests::path(Fixture::CounterFaulty2).unwrap();
    let generation = runtime.handle("counter").unwrap().generation().unwrap();
    let load = Load::start(runtime, 4);
    for step in ["export", "import", "import-panic", "health"] {
        runtime.call("counter", "fault", step.as_bytes()).unwrap();
        let error = runtime.swap("counter", &next).expect_err(step);
        match (step, &error) {
            ("export", Error::StateExportFailed { version, panicked: false, .. }) => {
                assert_eq!(version.to_string(), "1.2.0");
            }
            ("import", Error::StateImportFailed { version, format: 2, panicked: false, .. })
            | (
                "import-panic",
                Error::StateImportFailed { version, format: 2, panicked: true, .. },
            ) => {
                assert_eq!(version.to_string(), "1.3.0");
            }
            ("health", Error::HealthCheckFailed { version, .. }) => {
                assert_eq!(version.to_string(), "1.3.0");
            }
            _ => panic!("{step}: unexpected error {error:?}"),
        }
        let handle = runtime.handle("counter").unwrap();
        assert_eq!(handle.generation(), Some(generation), "{step}: the old instance serves");
        assert_eq!(handle.state(), ServiceState::Running);
    }
    let (issued, errors) = load.finish();
    assert!(errors.is_empty(), "{} calls failed, the first: {}", errors.len(), errors[0]);
    assert_eq!(count(runtime), issued, "no increment was lost");
    // With the fault cleared the same swap goes through, and the count follows it.
    runtime.call("counter", "fault", b"none").unwrap();
    runtime.swap("counter", &next).unwrap();
    assert_eq!(version(runtime), "1.3.0");
    assert_eq!(count(runtime), issued);
}

#[test]
fn a_stateless_build_cannot_replace_a_stateful_one() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Counter1_0).unwrap()).unwrap();
    runtime.call("counter", "increment", b"").unwrap();
    // Any build of another interface is refused by the gate first; this one passes it.
    let error = runtime.swap("counter", graft_tests::path(Fixture::CounterAbi2).unwrap());
    match error {
        Err(Error::WouldLoseState { service, from, to }) => {
            assert_eq!(
                (service.as_str(), from.to_string(), to.to_string()),
                ("counter", "1.0.0".into(), "2.0.0".into())
            );
        }
        other => panic!("expected WouldLoseState, got {other:?}"),
    }
    assert_eq!(count(runtime), 1);
}

#[test]
fn a_rollback_to_a_build_that_refuses_the_newer_format_is_refused() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::CounterStrict).unwrap()).unwrap();
    runtime.call("counter", "increment", b"").unwrap();
    // 0.9.0 exports format 1; 1.1.0 migrates it to format 2.
    runtime.swap("counter", graft_tests::path(Fixture::Counter1_1).unwrap()).unwrap();
    runtime.call("counter", "increment", b"").unwrap();
    let error = runtime.rollback("counter").expect_err("0.9.0 does not read format 2");
    match &error {
        Error::StateRefused { version, format, own_format, .. } => {
            assert_eq!((version.to_string().as_str(), *format, *own_format), ("0.9.0", 2, 1));
            let text = error.to_string();
            assert!(text.contains("format 2") && text.contains("format 1"), "{text}");
        }
        other => panic!("expected StateRefused, got {other:?}"),
    }
    assert_eq!(version(runtime), "1.1.0");
    assert_eq!(count(runtime), 2);
    assert_eq!(runtime.state("counter").unwrap(), ServiceState::Running);
}

#[test]
fn an_automatic_rollback_hands_the_state_back() {
    let setup = Setup::with(Runtime::builder().probation(strict_probation()).health_interval(None));
    let runtime = &setup.runtime;
    let events = runtime.subscribe();
    runtime.load_and_start(graft_tests::path(Fixture::Counter1_0).unwrap()).unwrap();
    for _ in 0..3 {
        runtime.call("counter", "increment", b"").unwrap();
    }
    runtime.swap("counter", graft_tests::path(Fixture::CounterFaulty1).unwrap()).unwrap();
    for _ in 0..4 {
        runtime.call("counter", "increment", b"").unwrap();
    }
    // The failure closes the window on this thread; the rollback waits for this very call to
    // return, so the supervisor carries it out.
    assert!(matches!(runtime.call("counter", "fail", b""), Err(Error::CallFailed { .. })));
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let event = events.recv_deadline(deadline).expect("a rollback event");
        if let EventKind::RolledBack { from, .. } = &event.kind {
            assert_eq!(from.to_string(), "1.2.0");
            break;
        }
        assert!(!matches!(event.kind, EventKind::RollbackRefused { .. }), "{event:?}");
    }
    assert_eq!(version(runtime), "1.0.0");
    assert_eq!(count(runtime), 7, "the increments made on 1.2.0 came back with it");
}

#[test]
fn shutdown_saves_the_state_and_restore_brings_it_back() {
    let state = tempfile::tempdir().unwrap();
    let path = graft_tests::path(Fixture::Counter1_1).unwrap();
    {
        let setup = Setup::with(quiet().state_dir(state.path()));
        setup.runtime.load_and_start(&path).unwrap();
        for _ in 0..42 {
            setup.runtime.call("counter", "increment", b"").unwrap();
        }
        setup.runtime.shutdown().unwrap();
        assert_eq!(setup.runtime.state("counter").unwrap(), ServiceState::Stopped);
    }
    let setup = Setup::with(quiet().state_dir(state.path()));
    setup.runtime.restore().unwrap();
    assert_eq!(count(&setup.runtime), 42);
    assert_eq!(setup.runtime.call("counter", "handovers", b"").unwrap(), b"1");
}

#[test]
fn a_stop_and_a_start_keep_the_state_in_memory() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Counter1_0).unwrap()).unwrap();
    runtime.call("counter", "increment", b"").unwrap();
    runtime.stop("counter").unwrap();
    runtime.start("counter").unwrap();
    assert_eq!(count(runtime), 1);
}

#[test]
fn a_corrupt_state_file_is_a_typed_error_and_starts_empty_only_if_asked() {
    let state = tempfile::tempdir().unwrap();
    let path = graft_tests::path(Fixture::Counter1_1).unwrap();
    {
        let setup = Setup::with(quiet().state_dir(state.path()));
        setup.runtime.load_and_start(&path).unwrap();
        setup.runtime.call("counter", "increment", b"").unwrap();
        setup.runtime.shutdown().unwrap();
    }
    let file = state.path().join("states/counter.state");
    let mut bytes = std::fs::read(&file).unwrap();
    // One flipped bit in the count, and separately, a file cut short.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    for corrupt in [bytes.clone(), bytes[..bytes.len() - 5].to_vec(), b"hello".to_vec()] {
        std::fs::write(&file, &corrupt).unwrap();
        let setup = Setup::with(quiet().state_dir(state.path()));
        match setup.runtime.restore() {
            Err(Error::StateFile { service, path, .. }) => {
                assert_eq!(service, "counter");
                assert_eq!(path, file);
            }
            other => panic!("expected StateFile, got {other:?}"),
        }
        // Refused at its load: the service is not there to be called empty.
        assert!(matches!(setup.runtime.state("counter"), Err(Error::UnknownService { .. })));
    }
    let setup = Setup::with(quiet().state_dir(state.path()).start_empty_on_bad_state(true));
    setup.runtime.restore().unwrap();
    assert_eq!(count(&setup.runtime), 0);
}

#[test]
fn a_saved_state_the_committed_build_refuses_is_a_typed_error() {
    let state = tempfile::tempdir().unwrap();
    {
        let setup = Setup::with(quiet().state_dir(state.path()));
        setup.runtime.load_and_start(graft_tests::path(Fixture::CounterStrict).unwrap()).unwrap();
        setup.runtime.commit("counter").unwrap();
        // The newer build runs, uncommitted, when the host shuts down: its format 2 is saved.
        setup.runtime.swap("counter", graft_tests::path(Fixture::Counter1_1).unwrap()).unwrap();
        setup.runtime.call("counter", "increment", b"").unwrap();
        setup.runtime.shutdown().unwrap();
    }
    let setup = Setup::with(quiet().state_dir(state.path()));
    let error = setup.runtime.restore().expect_err("0.9.0 refuses format 2");
    let refused = |e: &Error| matches!(e, Error::StateRefused { format: 2, own_format: 1, .. });
    let found = match &error {
        Error::Batch(report) => report.failures().any(|(_, e)| refused(e)),
        other => refused(other),
    };
    assert!(found, "{error:?}");
    let setup = Setup::with(quiet().state_dir(state.path()).start_empty_on_bad_state(true));
    setup.runtime.restore().unwrap();
    assert_eq!(count(&setup.runtime), 0);
}

#[test]
fn a_plugin_of_the_previous_layout_loads_beside_and_swaps_as_a_stateless_service() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Counter1_1).unwrap()).unwrap();
    let options = graft_runtime::LoadOptions::default().name("old-counter");
    runtime.load_with(graft_tests::path(Fixture::CounterAbi2).unwrap(), options).unwrap();
    runtime.start("old-counter").unwrap();
    let status = runtime.service_status("old-counter").unwrap();
    assert_eq!(status.current.unwrap().state_format, None, "the 0.3 layout has no state");
    let status = runtime.service_status("counter").unwrap();
    assert_eq!(status.current.unwrap().state_format, Some(2));
    for _ in 0..3 {
        runtime.call("old-counter", "increment", b"").unwrap();
        runtime.call("counter", "increment", b"").unwrap();
    }
    // Stateless: the swap exports nothing (though the fields past its size point at export
    // code), and the new build starts empty.
    let report =
        runtime.swap("old-counter", graft_tests::path(Fixture::Counter1_1).unwrap()).unwrap();
    assert_eq!(report.to.to_string(), "1.1.0");
    assert_eq!(runtime.call("old-counter", "get", b"").unwrap(), b"0");
    assert_eq!(runtime.call("counter", "get", b"").unwrap(), b"3");
}

#[test]
fn a_load_by_hand_takes_the_saved_state_and_save_state_bounds_what_a_crash_loses() {
    let state = tempfile::tempdir().unwrap();
    let path = graft_tests::path(Fixture::Counter1_1).unwrap();
    {
        let setup = Setup::with(quiet().state_dir(state.path()));
        setup.runtime.load_and_start(&path).unwrap();
        for _ in 0..3 {
            setup.runtime.call("counter", "increment", b"").unwrap();
        }
        setup.runtime.save_state("counter").unwrap();
        // Saved while serving: the instance is the same and goes on counting.
        assert_eq!(setup.runtime.call("counter", "handovers", b"").unwrap(), b"0");
        setup.runtime.call("counter", "increment", b"").unwrap();
        // Dropped without a shutdown, as in a crash: the fourth increment is lost.
    }
    let setup = Setup::with(quiet().state_dir(state.path()));
    setup.runtime.load_and_start(&path).unwrap();
    assert_eq!(count(&setup.runtime), 3);
    assert!(matches!(setup.runtime.save_state("missing"), Err(Error::UnknownService { .. })));
    let greeter = Setup::new();
    greeter.runtime.load_and_start(graft_tests::path(Fixture::Greeter1_0).unwrap()).unwrap();
    assert!(matches!(greeter.runtime.save_state("greeter"), Err(Error::NoStateDir)));
    let stateless = Setup::with(quiet().state_dir(state.path()));
    stateless.runtime.load_and_start(graft_tests::path(Fixture::Greeter1_0).unwrap()).unwrap();
    assert!(matches!(stateless.runtime.save_state("greeter"), Err(Error::Stateless { .. })));
}
