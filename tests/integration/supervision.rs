//! The supervisor: automatic rollback after a bad swap, and the restart policy.

use std::time::Duration;

use graft_runtime::{
    Error, Event, EventKind, ProbationPolicy, RestartPolicy, RollbackReason, Runtime, ServiceState,
};
use graft_tests::Fixture;

use super::{PATIENCE, Setup, greeting};

/// The first event of `service` that `pick` accepts, waiting at most [`PATIENCE`].
fn wait_for(events: &crossbeam_channel::Receiver<Event>, pick: impl Fn(&Event) -> bool) -> Event {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match events.recv_deadline(deadline) {
            Ok(event) if pick(&event) => return event,
            Ok(_) => continue,
            Err(e) => panic!("no such event within {PATIENCE:?}: {e}"),
        }
    }
}

#[test]
fn a_build_that_falls_ill_on_probation_is_rolled_back() {
    let setup =
        Setup::with(Runtime::builder().health_interval(Some(Duration::from_millis(5))).probation(
            ProbationPolicy { duration: Duration::from_secs(60), ..ProbationPolicy::default() },
        ));
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let greeter = setup.runtime.handle("greeter").unwrap();
    let events = setup.runtime.subscribe();

    // The sickly build passes the health check the swap runs, then fails the next one.
    let swap = setup.runtime.swap("greeter", setup.copy(Fixture::Sickly)).unwrap();
    assert_eq!(swap.to.to_string(), "1.8.0");
    let mut errors = 0;
    let deadline = std::time::Instant::now() + PATIENCE;
    let rolled_back = loop {
        assert!(std::time::Instant::now() < deadline, "no rollback within {PATIENCE:?}");
        if greeter.call_to_vec("greet", b"p").is_err() {
            errors += 1;
        }
        if let Ok(event) = events.try_recv()
            && let EventKind::RolledBack { .. } = event.kind
        {
            break event;
        }
    };
    let EventKind::RolledBack { from, reason, .. } = &rolled_back.kind else { unreachable!() };
    assert_eq!(
        (from.to_string(), rolled_back.version.to_string()),
        ("1.8.0".into(), "1.0.0".into())
    );
    let RollbackReason::Automatic(why) = reason else { panic!("{reason:?}") };
    // The periodic check or the one that closes the window, whichever came first, caught it.
    assert!(why.contains("health check failed") && why.contains("fell ill"), "{why}");
    // A failing health check fails no call: the bound on errors is zero.
    assert_eq!(errors, 0);
    assert_eq!(greeter.call_to_vec("greet", b"p").unwrap(), greeting("p", "1.0.0"));
}

#[test]
fn a_build_that_panics_on_a_share_of_calls_is_rolled_back_within_its_window() {
    const MAX_FAILURES: u64 = 3;
    let setup = Setup::with(Runtime::builder().health_interval(None).probation(ProbationPolicy {
        calls: 1000,
        duration: Duration::from_secs(60),
        max_failures: MAX_FAILURES,
        max_failure_rate: 1.0,
        min_calls: u64::MAX,
    }));
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let greeter = setup.runtime.handle("greeter").unwrap();
    let events = setup.runtime.subscribe();
    setup.runtime.swap("greeter", setup.copy(Fixture::Flaky)).unwrap();

    // One caller: the call that makes the failures exceed the limit rolls back before it
    // returns, so exactly MAX_FAILURES + 1 calls see an error (every fourth call of 1.9 panics).
    let (mut calls, mut errors) = (0u64, 0u64);
    loop {
        calls += 1;
        match greeter.call_to_vec("greet", b"q") {
            Ok(answer) if answer == greeting("q", "1.0.0") => break,
            Ok(answer) => assert_eq!(answer, greeting("q", "1.9.0")),
            Err(Error::PluginPanicked { version, .. }) => {
                assert_eq!(version.to_string(), "1.9.0");
                errors += 1;
            }
            Err(other) => panic!("{other:?}"),
        }
        assert!(calls < 1000, "no rollback within the probation window");
    }
    assert_eq!(errors, MAX_FAILURES + 1);
    assert_eq!(calls, 4 * (MAX_FAILURES + 1) + 1, "rolled back on the call that crossed the limit");
    let event = wait_for(&events, |e| matches!(e.kind, EventKind::RolledBack { .. }));
    let EventKind::RolledBack { reason: RollbackReason::Automatic(why), .. } = &event.kind else {
        panic!("{event:?}")
    };
    assert!(why.contains("4 of 16 calls failed"), "{why}");
}

#[test]
fn a_crash_loop_backs_off_then_fails_and_stays_failed_until_reset() {
    let policy = RestartPolicy {
        enabled: true,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(64),
        multiplier: 2,
        burst: 4,
        interval: Duration::from_secs(60),
        stable_after: Duration::from_secs(60),
    };
    let setup = Setup::with(Runtime::builder().restart_policy(policy));
    let events = setup.runtime.subscribe();
    setup.runtime.load(graft_tests::path(Fixture::Crashy).unwrap()).unwrap();
    let err = setup.runtime.start("crashy").unwrap_err();
    assert!(matches!(err, Error::CreateFailed { panicked: true, .. }), "{err:?}");

    let mut delays = Vec::new();
    loop {
        let event = wait_for(&events, |e| {
            matches!(e.kind, EventKind::StartFailed { .. } | EventKind::Failed { .. })
        });
        match event.kind {
            EventKind::StartFailed { attempt, retry_in, .. } => {
                assert_eq!(attempt as usize, delays.len() + 1);
                delays.push(retry_in);
            }
            EventKind::Failed { reason } => {
                assert!(reason.contains("gave up after 5 failed starts"), "{reason}");
                break;
            }
            _ => unreachable!(),
        }
    }
    let ms = |n| Some(Duration::from_millis(n));
    assert_eq!(delays, [ms(1), ms(2), ms(4), ms(8), None], "growing back-off, then give up");
    assert_eq!(setup.runtime.state("crashy").unwrap(), ServiceState::Failed);
    let err = setup.runtime.start("crashy").unwrap_err();
    assert!(matches!(err, Error::InvalidState { state: ServiceState::Failed, .. }), "{err:?}");
    // Failed is final: no restart is scheduled any more.
    assert!(events.recv_timeout(Duration::from_millis(100)).is_err());

    setup.runtime.reset("crashy").unwrap();
    assert_eq!(setup.runtime.state("crashy").unwrap(), ServiceState::Stopped);
    setup.runtime.start("crashy").unwrap_err();
    let event = wait_for(&events, |e| matches!(e.kind, EventKind::StartFailed { .. }));
    assert!(
        matches!(event.kind, EventKind::StartFailed { attempt: 1, .. }),
        "the reset cleared the count"
    );
}

/// Regression: pause and resume republished the service without its probation counters, so a
/// build that went on failing after a pause was never rolled back.
#[test]
fn probation_survives_a_pause_and_a_resume() {
    let setup = Setup::with(Runtime::builder().health_interval(None).probation(ProbationPolicy {
        calls: 1000,
        duration: Duration::from_secs(60),
        max_failures: 3,
        max_failure_rate: 1.0,
        min_calls: u64::MAX,
    }));
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let greeter = setup.runtime.handle("greeter").unwrap();
    setup.runtime.swap("greeter", setup.copy(Fixture::Flaky)).unwrap();
    // Two failures before the pause, two after: the fourth crosses the limit.
    let mut errors = 0;
    for _ in 0..8 {
        errors += u64::from(greeter.call_to_vec("greet", b"r").is_err());
    }
    assert_eq!(errors, 2);
    setup.runtime.pause("greeter").unwrap();
    setup.runtime.resume("greeter").unwrap();
    for _ in 0..8 {
        errors += u64::from(greeter.call_to_vec("greet", b"r").is_err());
    }
    assert_eq!(errors, 4);
    assert_eq!(greeter.call_to_vec("greet", b"r").unwrap(), greeting("r", "1.0.0"));
}

/// Regression: a stop did not cancel the automatic restart scheduled after a failed start, and
/// the supervisor started the service again behind the operator's back.
#[test]
fn a_stop_cancels_the_restart_of_a_failed_start() {
    // The restart is due 400 ms after the failure: the stop comes long before, even on a loaded
    // machine, and a window twice as long would see the restart if it still happened.
    let policy =
        RestartPolicy { initial_backoff: Duration::from_millis(400), ..RestartPolicy::default() };
    let setup = Setup::with(Runtime::builder().restart_policy(policy));
    let events = setup.runtime.subscribe();
    setup.runtime.load(graft_tests::path(Fixture::Crashy).unwrap()).unwrap();
    setup.runtime.start("crashy").unwrap_err();
    let first = wait_for(&events, |e| matches!(e.kind, EventKind::StartFailed { .. }));
    assert!(matches!(first.kind, EventKind::StartFailed { retry_in: Some(_), .. }));
    setup.runtime.stop("crashy").unwrap();
    assert!(events.recv_timeout(Duration::from_millis(800)).is_err(), "no restart after the stop");
    assert_eq!(setup.runtime.state("crashy").unwrap(), ServiceState::Loaded);
}

/// Regression: durations too long to add to an instant panicked the supervisor thread (and a
/// paused call); they now mean "never".
#[test]
fn unrepresentable_durations_mean_never() {
    let policy =
        RestartPolicy { initial_backoff: Duration::from_millis(1), ..RestartPolicy::default() };
    let setup = Setup::with(
        Runtime::builder()
            .health_interval(Some(Duration::MAX))
            .call_deadline(Duration::MAX)
            .restart_policy(policy),
    );
    let events = setup.runtime.subscribe();
    // The supervisor is alive: it still schedules the restarts of a crash loop.
    setup.runtime.load(graft_tests::path(Fixture::Crashy).unwrap()).unwrap();
    setup.runtime.start("crashy").unwrap_err();
    wait_for(&events, |e| matches!(e.kind, EventKind::StartFailed { attempt: 2, .. }));

    // A paused call with no deadline waits for the resume.
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    setup.runtime.pause("greeter").unwrap();
    let greeter = setup.runtime.handle("greeter").unwrap();
    let waiting = std::thread::spawn(move || greeter.call_to_vec("greet", b"s"));
    setup.runtime.resume("greeter").unwrap();
    assert_eq!(waiting.join().unwrap().unwrap(), greeting("s", "1.0.0"));
}
