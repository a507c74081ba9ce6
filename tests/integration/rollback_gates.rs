//! Rollbacks through the swap's gates, probation windows that close whatever happens, and the
//! operations that ship a breaking change: `replace` and `unload`.

use std::time::Duration;

use graft_runtime::semver::VersionReq;
use graft_runtime::{Error, EventKind, LoadOptions, ProbationPolicy, Runtime, ServiceState};
use graft_tests::Fixture;

use super::{Setup, greeting, strict_probation, wait_for};

/// Loads the worker template as `name`, depending on `greeter` with `requirement`, and starts it.
fn start_dependent(setup: &Setup, name: &str, requirement: &str) {
    let path = graft_tests::path(Fixture::Worker).unwrap();
    let options = LoadOptions::default()
        .name(name)
        .depends_on("greeter", VersionReq::parse(requirement).unwrap());
    setup.runtime.load_with(path, options).unwrap();
    setup.runtime.start(name).unwrap();
}

/// Calls greeter's `greet` until one call fails (the flaky build panics on every fourth).
fn call_until_a_failure(setup: &Setup) {
    let greeter = setup.runtime.handle("greeter").unwrap();
    for _ in 0..8 {
        if greeter.call_to_vec("greet", b"r").is_err() {
            return;
        }
    }
    panic!("the flaky build never failed");
}

/// A rollback to 1.0 succeeded while `front`, requiring ^1.1, ran: it left `front` on an
/// interface it does not accept, which a swap to the same build refused.
#[test]
fn a_rollback_that_would_break_a_running_dependent_is_refused_like_a_swap() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
    start_dependent(&setup, "front", "^1.1");

    let swap = setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_0)).unwrap_err();
    assert!(matches!(swap, Error::BreaksDependent { .. }), "{swap:?}");
    let err = setup.runtime.rollback("greeter").unwrap_err();
    let Error::BreaksDependent { service, dependent, required, found } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (service.as_str(), dependent.as_str(), required.to_string(), found.to_string()),
        ("greeter", "front", "^1.1".to_owned(), "1.0.0".to_owned())
    );
    // Refused means untouched: 1.1 serves, 1.0 is still the rollback target.
    assert_eq!(setup.runtime.call("greeter", "greet", b"r").unwrap(), greeting("r", "1.1.0"));
    let status = setup.runtime.service_status("greeter").unwrap();
    assert_eq!(status.history.len(), 1);
    assert_eq!(status.history[0].version.to_string(), "1.0.0");

    // Once the dependent is gone, the same rollback passes.
    setup.runtime.stop("front").unwrap();
    setup.runtime.rollback("greeter").unwrap();
    assert_eq!(setup.runtime.call("greeter", "greet", b"r").unwrap(), greeting("r", "1.0.0"));
}

/// A rollback brought back a build whose dependency had stopped since: it served without it.
#[test]
fn a_rollback_to_a_build_whose_dependency_does_not_run_is_refused() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Rendezvous)).unwrap();
    setup.runtime.load_and_start(setup.copy(Fixture::GreeterNeedsRendezvous)).unwrap();
    setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
    // 1.1 does not need it, so it may stop; the rollback target 1.10 does.
    setup.runtime.stop("rendezvous").unwrap();

    let err = setup.runtime.rollback("greeter").unwrap_err();
    let Error::DependencyNotRunning { service, dependency, .. } = &err else { panic!("{err:?}") };
    assert_eq!((service.as_str(), dependency.as_str()), ("greeter", "rendezvous"));
    assert_eq!(setup.runtime.call("greeter", "greet", b"r").unwrap(), greeting("r", "1.1.0"));

    setup.runtime.start("rendezvous").unwrap();
    setup.runtime.rollback("greeter").unwrap();
    assert_eq!(setup.runtime.call("greeter", "greet", b"r").unwrap(), greeting("r", "1.10.0"));
}

/// An automatic rollback that broke a dependent went through; one that was refused was only
/// logged, and its probation window stayed open on every call.
#[test]
fn a_refused_automatic_rollback_is_reported_and_the_build_keeps_serving() {
    let setup = Setup::with(Runtime::builder().health_interval(None).probation(strict_probation()));
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let events = setup.runtime.subscribe();
    let swap = setup.runtime.swap("greeter", setup.copy(Fixture::Flaky)).unwrap();
    start_dependent(&setup, "front", "^1.9");

    call_until_a_failure(&setup);
    let event = wait_for(&events, |e| {
        matches!(e.kind, EventKind::RollbackRefused { .. } | EventKind::RolledBack { .. })
    });
    let EventKind::RollbackRefused { from, generation, reason, error } = &event.kind else {
        panic!("expected a refusal, got {event:?}")
    };
    assert_eq!((event.service.as_str(), from.to_string()), ("greeter", "1.9.0".to_owned()));
    assert_eq!(*generation, swap.generation);
    assert!(reason.contains("calls failed"), "{reason}");
    assert!(error.contains("front") && error.contains("^1.9"), "{error}");
    assert_eq!(setup.runtime.handle("greeter").unwrap().generation(), Some(swap.generation));
    assert_eq!(setup.runtime.state("front").unwrap(), ServiceState::Running);
}

/// A failed verdict with no earlier build to go back to (history depth 0) was only logged.
#[test]
fn a_failed_probation_without_a_rollback_target_closes_its_window_and_says_so() {
    let setup = Setup::with(
        Runtime::builder().history_depth(0).health_interval(None).probation(strict_probation()),
    );
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let events = setup.runtime.subscribe();
    setup.runtime.swap("greeter", setup.copy(Fixture::Flaky)).unwrap();

    call_until_a_failure(&setup);
    let event = wait_for(&events, |e| matches!(e.kind, EventKind::RollbackRefused { .. }));
    let EventKind::RollbackRefused { error, .. } = &event.kind else { unreachable!() };
    assert!(error.contains("no earlier generation"), "{error}");
    // Still serving the build that failed: there was nowhere to go.
    let answer = setup.runtime.call("greeter", "greet", b"r").unwrap();
    assert_eq!(answer, greeting("r", "1.9.0"));
}

/// A window whose deadline passed while the service was paused was dropped: probation never
/// closed, so the build was never passed (nor committed after probation).
#[test]
fn probation_closes_on_time_while_the_service_is_paused() {
    let setup =
        Setup::with(Runtime::builder().health_interval(None).probation(ProbationPolicy {
            duration: Duration::from_millis(30),
            ..strict_probation()
        }));
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let events = setup.runtime.subscribe();
    let swap = setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
    setup.runtime.pause("greeter").unwrap();

    // No call reaches it: the supervisor closes the window by its duration.
    let event = wait_for(&events, |e| matches!(e.kind, EventKind::ProbationPassed { .. }));
    assert_eq!(event.kind, EventKind::ProbationPassed { generation: swap.generation });
    assert_eq!(setup.runtime.state("greeter").unwrap(), ServiceState::Paused);
    setup.runtime.resume("greeter").unwrap();
    assert_eq!(setup.runtime.call("greeter", "greet", b"r").unwrap(), greeting("r", "1.1.0"));
}

/// A breaking interface change could not be shipped to a running host at all: swap refused,
/// load "already loaded", no other operation.
#[test]
fn replace_ships_a_breaking_change_that_swap_refuses() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let err = setup.runtime.swap("greeter", setup.copy(Fixture::Greeter2_0)).unwrap_err();
    assert!(matches!(err, Error::IncompatibleInterface { .. }), "{err:?}");
    assert!(err.to_string().contains("use `replace`"), "{err}");

    let report = setup.runtime.replace("greeter", setup.copy(Fixture::Greeter2_0)).unwrap();
    assert_eq!((report.from.to_string(), report.to.to_string()), ("1.0.0".into(), "2.0.0".into()));
    assert_eq!(setup.runtime.call("greeter", "greet", b"r").unwrap(), greeting("r", "2.0.0"));
    let status = setup.runtime.service_status("greeter").unwrap();
    assert_eq!(status.requirement.to_string(), "^2.0.0");

    // Rolling back across the replace brings back the old build and its requirement.
    setup.runtime.rollback("greeter").unwrap();
    assert_eq!(setup.runtime.call("greeter", "greet", b"r").unwrap(), greeting("r", "1.0.0"));
    let status = setup.runtime.service_status("greeter").unwrap();
    assert_eq!(status.requirement.to_string(), "^1.0.0");
}

#[test]
fn replace_is_refused_while_a_running_dependent_requires_the_old_interface() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    start_dependent(&setup, "front", "^1");
    let err = setup.runtime.replace("greeter", setup.copy(Fixture::Greeter2_0)).unwrap_err();
    let Error::BreaksDependent { dependent, found, .. } = &err else { panic!("{err:?}") };
    assert_eq!((dependent.as_str(), found.to_string()), ("front", "2.0.0".to_owned()));
    assert_eq!(setup.runtime.call("greeter", "greet", b"r").unwrap(), greeting("r", "1.0.0"));
    let status = setup.runtime.service_status("greeter").unwrap();
    assert_eq!(status.requirement.to_string(), "^1.0.0");
}

/// Without `unload`, a stopped service's name stayed taken for the life of the runtime.
#[test]
fn unload_frees_a_stopped_service_name_for_a_new_build() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
    let handle = setup.runtime.handle("greeter").unwrap();
    let events = setup.runtime.subscribe();

    let err = setup.runtime.unload("greeter").unwrap_err();
    assert!(matches!(err, Error::InvalidState { operation: "unload", .. }), "{err:?}");
    setup.runtime.stop("greeter").unwrap();
    let err = setup.runtime.load(setup.copy(Fixture::Greeter2_0)).unwrap_err();
    assert!(matches!(err, Error::AlreadyLoaded { .. }), "{err:?}");

    setup.runtime.unload("greeter").unwrap();
    wait_for(&events, |e| e.kind == EventKind::Unloaded && e.service == "greeter");
    assert!(matches!(setup.runtime.handle("greeter"), Err(Error::UnknownService { .. })));
    assert!(matches!(handle.call_to_vec("greet", b"r"), Err(Error::Stopped { .. })));

    setup.runtime.load_and_start(setup.copy(Fixture::Greeter2_0)).unwrap();
    assert_eq!(setup.runtime.call("greeter", "greet", b"r").unwrap(), greeting("r", "2.0.0"));
}

#[test]
fn unload_is_refused_while_a_loaded_service_depends_on_it() {
    let setup = Setup::new();
    setup.runtime.load(setup.copy(Fixture::Greeter1_0)).unwrap();
    let path = graft_tests::path(Fixture::Worker).unwrap();
    let options = LoadOptions::default()
        .name("front")
        .depends_on("greeter", VersionReq::parse("^1").unwrap());
    setup.runtime.load_with(path, options).unwrap();
    let err = setup.runtime.unload("greeter").unwrap_err();
    let Error::DependentsLoaded { dependents, .. } = &err else { panic!("{err:?}") };
    assert_eq!(dependents, &["front".to_owned()]);
    setup.runtime.unload("front").unwrap();
    setup.runtime.unload("greeter").unwrap();
    assert!(setup.runtime.status().is_empty());
}
