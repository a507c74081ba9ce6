//! One service at a time: restart, stop, pause and resume, each leaving the others alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use graft_runtime::{Error, ServiceHandle, ServiceState};
use graft_tests::Fixture;

use super::Setup;

/// Calls `method` on `handle` until `stop`, counting answers and errors.
fn caller(
    handle: ServiceHandle,
    method: &'static str,
    stop: Arc<AtomicBool>,
    start: Arc<Barrier>,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut answered, mut errors) = (0u64, 0u64);
        start.wait();
        loop {
            let last = stop.load(Ordering::Acquire);
            match handle.call_to_vec(method, b"") {
                Ok(_) => answered += 1,
                Err(_) => errors += 1,
            }
            if last {
                return (answered, errors);
            }
        }
    })
}

#[test]
fn restarting_one_of_three_services_leaves_the_other_two_untouched() {
    let setup = Setup::new();
    for name in ["one", "two", "three"] {
        setup.load_as(Fixture::Worker, name, &[]);
    }
    setup.runtime.start_all().unwrap();
    let handles: Vec<ServiceHandle> =
        ["one", "two", "three"].iter().map(|n| setup.runtime.handle(n).unwrap()).collect();
    let identity =
        |h: &ServiceHandle| (h.generation().unwrap(), h.call_to_vec("instance", b"").unwrap());
    let before: Vec<_> = handles.iter().map(identity).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(4));
    let callers: Vec<_> = handles
        .iter()
        .map(|h| caller(h.clone(), "whoami", Arc::clone(&stop), Arc::clone(&start)))
        .collect();
    start.wait();
    for _ in 0..20 {
        let report = setup.runtime.restart("two").unwrap();
        assert_eq!(report.service, "two");
    }
    stop.store(true, Ordering::Release);
    for caller in callers {
        let (answered, errors) = caller.join().unwrap();
        assert_eq!(errors, 0, "no caller of any service sees an error");
        assert!(answered > 0);
    }

    let after: Vec<_> = handles.iter().map(identity).collect();
    assert_eq!(after[0], before[0], "one keeps its generation and instance");
    assert_eq!(after[2], before[2], "three keeps its generation and instance");
    assert_ne!(after[1].0, before[1].0, "two has a new generation");
    assert_ne!(after[1].1, before[1].1, "two has a new instance");
    assert_eq!(handles[1].call_to_vec("whoami", b"").unwrap(), b"two 1.0.0");
}

#[test]
fn stop_fails_new_calls_at_once_and_start_brings_the_service_back() {
    let setup = Setup::new();
    setup.load_as(Fixture::Worker, "solo", &[]);
    setup.load_as(Fixture::Worker, "other", &[]);
    setup.runtime.start_all().unwrap();
    let solo = setup.runtime.handle("solo").unwrap();
    let other_generation = setup.runtime.handle("other").unwrap().generation();

    let report = setup.runtime.stop("solo").unwrap();
    assert!(report.drained);
    assert_eq!(setup.runtime.state("solo").unwrap(), ServiceState::Stopped);
    let err = solo.call_to_vec("whoami", b"").unwrap_err();
    assert!(
        matches!(err, Error::Stopped { ref service, state: ServiceState::Stopped } if service == "solo"),
        "{err:?}"
    );
    assert!(setup.runtime.service_status("solo").unwrap().current.is_none());

    setup.runtime.start("solo").unwrap();
    assert_eq!(solo.call_to_vec("whoami", b"").unwrap(), b"solo 1.0.0");
    assert_eq!(setup.runtime.handle("other").unwrap().generation(), other_generation);
}

#[test]
fn pause_holds_calls_and_resume_releases_every_one() {
    const CALLERS: usize = 4;
    const ROUNDS: usize = 20;
    let setup = Setup::new();
    setup.load_as(Fixture::Worker, "held", &[]);
    setup.runtime.start("held").unwrap();
    let handle = setup.runtime.handle("held").unwrap();

    // Callers work in rounds: all wait at `before`, each makes one call, all meet at `after`.
    // The test pauses while every caller waits at `before`, so no call is running when the
    // pause takes effect and every call of that round must wait for the resume.
    let before = Arc::new(Barrier::new(CALLERS + 1));
    let after = Arc::new(Barrier::new(CALLERS + 1));
    let inside = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (handle, before, after) = (handle.clone(), Arc::clone(&before), Arc::clone(&after));
            let (inside, completed) = (Arc::clone(&inside), Arc::clone(&completed));
            std::thread::spawn(move || {
                let (mut issued, mut answered) = (0, 0);
                for _ in 0..ROUNDS {
                    before.wait();
                    issued += 1;
                    inside.fetch_add(1, Ordering::SeqCst);
                    if handle.call_to_vec("whoami", b"").is_ok_and(|a| a == b"held 1.0.0") {
                        answered += 1;
                    }
                    completed.fetch_add(1, Ordering::SeqCst);
                    after.wait();
                }
                (issued, answered)
            })
        })
        .collect();

    for round in 0..ROUNDS {
        let paused = round % 2 == 1;
        if paused {
            setup.runtime.pause("held").unwrap();
        }
        let done_before = completed.load(Ordering::SeqCst);
        let inside_before = inside.load(Ordering::SeqCst);
        before.wait();
        if paused {
            // Every caller has entered its call; none can return while the service is paused.
            while inside.load(Ordering::SeqCst) < inside_before + CALLERS as u64 {
                std::thread::yield_now();
            }
            for _ in 0..200 {
                std::thread::yield_now();
            }
            assert_eq!(completed.load(Ordering::SeqCst), done_before, "a paused call returned");
            assert_eq!(setup.runtime.state("held").unwrap(), ServiceState::Paused);
            setup.runtime.resume("held").unwrap();
        }
        after.wait();
        assert_eq!(completed.load(Ordering::SeqCst), done_before + CALLERS as u64);
    }
    for caller in callers {
        let (issued, answered) = caller.join().unwrap();
        assert_eq!((issued, answered), (ROUNDS, ROUNDS), "every call issued was answered");
    }
}

#[test]
fn a_paused_call_fails_as_not_ready_after_the_call_deadline() {
    let setup = Setup::with(
        graft_runtime::Runtime::builder().call_deadline(std::time::Duration::from_millis(20)),
    );
    setup.load_as(Fixture::Worker, "slow", &[]);
    setup.runtime.start("slow").unwrap();
    setup.runtime.pause("slow").unwrap();
    let err = setup.runtime.call("slow", "whoami", b"").unwrap_err();
    assert!(
        matches!(err, Error::NotReady { ref service, state: Some(ServiceState::Paused), .. } if service == "slow"),
        "{err:?}"
    );
    let err = setup.runtime.pause("slow").unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidState { operation: "pause", state: ServiceState::Paused, .. }
    ));
    setup.runtime.resume("slow").unwrap();
    assert_eq!(setup.runtime.call("slow", "whoami", b"").unwrap(), b"slow 1.0.0");
}

#[test]
fn a_batch_that_fails_skips_later_waves_and_reports_each_service() {
    let setup = Setup::with(
        graft_runtime::Runtime::builder()
            .restart_policy(graft_runtime::RestartPolicy { enabled: false, ..Default::default() }),
    );
    setup.load_as(Fixture::Worker, "base", &[]);
    setup.runtime.load(graft_tests::path(Fixture::Crashy).unwrap()).unwrap();
    setup.load_as(Fixture::Worker, "top", &["crashy", "base"]);

    let err = setup.runtime.start_all().unwrap_err();
    let Error::Batch(report) = &err else { panic!("{err:?}") };
    assert_eq!(
        report.waves,
        [vec!["base".to_owned(), "crashy".to_owned()], vec!["top".to_owned()]]
    );
    let failed: Vec<&str> = report.failures().map(|(service, _)| service).collect();
    assert_eq!(failed, ["crashy"]);
    assert_eq!(report.skipped, ["top"]);
    assert!(err.to_string().contains("crashy"), "{err}");
    // Nothing is left half-started.
    assert_eq!(setup.runtime.state("base").unwrap(), ServiceState::Running);
    assert_eq!(setup.runtime.state("top").unwrap(), ServiceState::Loaded);
    assert!(matches!(
        setup.runtime.state("crashy").unwrap(),
        ServiceState::Loaded | ServiceState::Failed
    ));
}

#[test]
fn restart_and_swap_a_set_of_services_in_dependency_order() {
    let setup = Setup::new();
    setup.load_as(Fixture::Worker, "low", &[]);
    setup.load_as(Fixture::Worker, "high", &["low"]);
    setup.runtime.load(setup.copy(Fixture::Greeter1_0)).unwrap();
    setup.runtime.start_all().unwrap();
    let before: Vec<_> =
        ["low", "high"].iter().map(|s| setup.runtime.handle(s).unwrap().generation()).collect();

    let report = setup.runtime.restart_services(&["high", "low"]).unwrap();
    assert_eq!(report.waves, [vec!["low".to_owned()], vec!["high".to_owned()]]);
    for (name, old) in ["low", "high"].iter().zip(before) {
        assert_ne!(setup.runtime.handle(name).unwrap().generation(), old, "{name} restarted");
    }

    let v1_1 = setup.copy(Fixture::Greeter1_1);
    let report = setup.runtime.swap_services(&[("greeter", v1_1.as_path())]).unwrap();
    assert!(report.succeeded());
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.1.0");
    assert_eq!(setup.runtime.call("high", "relay", b"low/whoami").unwrap(), b"low 1.0.0");
}
