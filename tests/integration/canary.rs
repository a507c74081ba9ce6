//! Canary releases: the share of calls a canary takes, its promotion and abort by its calls'
//! verdict and by hand, the operations refused while one runs, and the stateful refusal.

use graft_runtime::{
    CanaryPolicy, Error, EventKind, ProbationPolicy, Runtime, RuntimeBuilder, SwapStrategy,
};
use graft_tests::Fixture;

use super::{PATIENCE, Setup, greeting, wait_for};

fn quiet() -> RuntimeBuilder {
    Runtime::builder().probation(ProbationPolicy::disabled()).health_interval(None)
}

/// A canary at `weight` that its calls never promote nor abort.
fn never_judged(weight: f64) -> SwapStrategy {
    SwapStrategy::Canary(CanaryPolicy {
        weight,
        calls: u64::MAX,
        max_failures: u64::MAX,
        max_failure_rate: f64::NAN,
        min_calls: u64::MAX,
    })
}

/// Greeter 1.0 serving, with a canary of `canary` released at `strategy`.
fn with_canary(canary: Fixture, strategy: SwapStrategy) -> Setup {
    let setup = Setup::with(quiet());
    setup.runtime.load_and_start(graft_tests::path(Fixture::Greeter1_0).unwrap()).unwrap();
    setup.runtime.swap_with("greeter", graft_tests::path(canary).unwrap(), strategy).unwrap();
    setup
}

/// The share of calls a canary at weight 0.1 answers, from one thread.
///
/// A thread routes its i-th call by the point x + i * a (mod 1) of a Weyl sequence, where a is
/// 2^64 / phi scaled to the unit circle (phi is the golden ratio), and sends it to the canary
/// when the point lies in [0, 0.1). By the Denjoy-Koksma inequality, for any start x the count
/// X of the n first points in an interval of length w satisfies |X - n w| <= V * (b_1 + b_2 +
/// ...), where V = 2 is the variation of the interval's indicator and the b_k are the digits of
/// n's Ostrowski expansion in the denominators of a's convergents: for the golden ratio, the
/// Fibonacci numbers, and the expansion is n's Zeckendorf decomposition (a's 64-bit value
/// shares its first 40 convergents with 1/phi, far past n). The decomposition of 10,000,
/// 6765 + 2584 + 610 + 34 + 5 + 2, has six terms, so |X - 1,000| <= 12: the test accepts 988 <= X <= 1,012, and a routing
/// that strays further is wrong, not unlucky.
#[test]
fn a_canary_at_ten_percent_answers_a_share_within_the_derived_bound() {
    let setup = with_canary(Fixture::Greeter1_1, never_judged(0.1));
    let greeter = setup.runtime.handle("greeter").unwrap();
    let (stable, canary) = (greeting("n", "1.0.0"), greeting("n", "1.1.0"));
    let mut answered_by_canary = 0u64;
    for _ in 0..10_000 {
        let answer = greeter.call_to_vec("greet", b"n").unwrap();
        if answer == canary {
            answered_by_canary += 1;
        } else {
            assert_eq!(answer, stable);
        }
    }
    assert!(
        (988..=1012).contains(&answered_by_canary),
        "the canary answered {answered_by_canary} of 10,000 calls; the bound is [988, 1012]"
    );
    let status = setup.runtime.service_status("greeter").unwrap();
    let shown = status.canary.expect("the status shows the canary");
    assert_eq!(shown.generation.version.to_string(), "1.1.0");
    assert_eq!(shown.weight, 0.1);
    assert_eq!(shown.calls, answered_by_canary, "its counters saw exactly its calls");
    assert_eq!(shown.failures, 0);
    assert_eq!(status.current.unwrap().version.to_string(), "1.0.0");
}

#[test]
fn a_failing_canary_is_aborted_by_itself_and_later_calls_all_go_to_the_stable_build() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    let events = runtime.subscribe();
    runtime.load_and_start(graft_tests::path(Fixture::Greeter1_0).unwrap()).unwrap();
    // The flaky build panics on every fourth call; no failure is tolerated.
    let policy = CanaryPolicy {
        weight: 0.5,
        calls: 1000,
        max_failures: 0,
        max_failure_rate: 1.0,
        min_calls: u64::MAX,
    };
    let report = runtime
        .swap_with(
            "greeter",
            graft_tests::path(Fixture::Flaky).unwrap(),
            SwapStrategy::Canary(policy),
        )
        .unwrap();
    let greeter = runtime.handle("greeter").unwrap();
    let mut panics = 0;
    while runtime.service_status("greeter").unwrap().canary.is_some() {
        match greeter.call_to_vec("greet", b"n") {
            Ok(_) => {}
            Err(Error::PluginPanicked { version, .. }) => {
                assert_eq!(version.to_string(), "1.9.0");
                panics += 1;
            }
            Err(other) => panic!("unexpected error {other}"),
        }
        assert!(panics < 1000, "the canary was never aborted");
    }
    let event = wait_for(&events, |e| matches!(e.kind, EventKind::CanaryAborted { .. }));
    assert!(
        matches!(event.kind, EventKind::CanaryAborted { generation, .. } if generation == report.generation)
    );
    assert!(panics >= 1);
    for _ in 0..2_000 {
        assert_eq!(greeter.call_to_vec("greet", b"n").unwrap(), greeting("n", "1.0.0"));
    }
    assert_eq!(greeter.version().unwrap().to_string(), "1.0.0");
}

#[test]
fn a_healthy_canary_is_promoted_by_its_calls() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    let events = runtime.subscribe();
    runtime.load_and_start(graft_tests::path(Fixture::Greeter1_0).unwrap()).unwrap();
    let policy = CanaryPolicy { calls: 100, ..CanaryPolicy::with_weight(0.5) };
    runtime
        .swap_with(
            "greeter",
            graft_tests::path(Fixture::Greeter1_1).unwrap(),
            SwapStrategy::Canary(policy),
        )
        .unwrap();
    let greeter = runtime.handle("greeter").unwrap();
    let mut calls = 0;
    while greeter.version().unwrap().to_string() != "1.1.0" {
        greeter.call_to_vec("greet", b"n").unwrap();
        calls += 1;
        assert!(calls < 100_000, "the canary was never promoted");
    }
    let event = wait_for(&events, |e| matches!(e.kind, EventKind::CanaryPromoted { .. }));
    assert!(matches!(event.kind, EventKind::CanaryPromoted { automatic: true, .. }));
    for _ in 0..1_000 {
        assert_eq!(greeter.call_to_vec("greet", b"n").unwrap(), greeting("n", "1.1.0"));
    }
    let status = runtime.service_status("greeter").unwrap();
    assert!(status.canary.is_none());
    assert_eq!(
        status.history[0].version.to_string(),
        "1.0.0",
        "the stable build is the rollback target"
    );
    runtime.rollback("greeter").unwrap();
    assert_eq!(greeter.call_to_vec("greet", b"n").unwrap(), greeting("n", "1.0.0"));
}

#[test]
fn an_operator_promotes_or_aborts_a_canary_and_other_changes_wait_for_it() {
    let setup = with_canary(Fixture::Greeter1_1, never_judged(0.5));
    let runtime = &setup.runtime;
    let other = graft_tests::path(Fixture::Greeter2_0).unwrap();
    for refused in [
        runtime.swap("greeter", &other).map(drop),
        runtime.rollback("greeter").map(drop),
        runtime.restart("greeter").map(drop),
        runtime.swap_with("greeter", &other, never_judged(0.5)).map(drop),
    ] {
        assert!(
            matches!(&refused, Err(Error::CanaryInProgress { canary, .. }) if canary.to_string() == "1.1.0"),
            "{refused:?}"
        );
    }
    let watch = runtime.abort("greeter").unwrap();
    watch.wait_retired(PATIENCE).unwrap();
    assert!(matches!(runtime.abort("greeter"), Err(Error::NoCanary { .. })));
    assert!(matches!(runtime.promote("greeter"), Err(Error::NoCanary { .. })));
    for _ in 0..200 {
        assert_eq!(runtime.call("greeter", "greet", b"n").unwrap(), greeting("n", "1.0.0"));
    }
    runtime
        .swap_with("greeter", graft_tests::path(Fixture::Greeter1_1).unwrap(), never_judged(0.5))
        .unwrap();
    let report = runtime.promote("greeter").unwrap();
    assert_eq!((report.from.to_string(), report.to.to_string()), ("1.0.0".into(), "1.1.0".into()));
    for _ in 0..200 {
        assert_eq!(runtime.call("greeter", "greet", b"n").unwrap(), greeting("n", "1.1.0"));
    }
}

#[test]
fn a_stop_aborts_the_canary_and_a_paused_canary_resumes_its_share() {
    let setup = with_canary(Fixture::Greeter1_1, never_judged(1.0));
    let runtime = &setup.runtime;
    runtime.pause("greeter").unwrap();
    runtime.resume("greeter").unwrap();
    // At weight 1.0 every call goes to the canary, and still does after a pause.
    assert_eq!(runtime.call("greeter", "greet", b"n").unwrap(), greeting("n", "1.1.0"));
    let canary = runtime.service_status("greeter").unwrap().canary.unwrap().generation.id;
    runtime.stop("greeter").unwrap();
    assert!(runtime.service_status("greeter").unwrap().canary.is_none());
    runtime.start("greeter").unwrap();
    let current = runtime.service_status("greeter").unwrap().current.unwrap();
    assert_eq!(current.version.to_string(), "1.0.0");
    assert_ne!(current.id, canary);
}

#[test]
fn a_canary_weight_outside_zero_to_one_is_refused() {
    let setup = Setup::with(quiet());
    setup.runtime.load_and_start(graft_tests::path(Fixture::Greeter1_0).unwrap()).unwrap();
    let path = graft_tests::path(Fixture::Greeter1_1).unwrap();
    for weight in [-0.1, 1.5, f64::NAN] {
        let refused = setup.runtime.swap_with("greeter", &path, never_judged(weight));
        assert!(matches!(refused, Err(Error::InvalidWeight { .. })), "{weight}: {refused:?}");
    }
}

#[test]
fn a_stateful_service_is_never_released_as_a_canary() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Counter1_0).unwrap()).unwrap();
    runtime.call("counter", "increment", b"").unwrap();
    let refused = runtime.swap_with(
        "counter",
        graft_tests::path(Fixture::Counter1_1).unwrap(),
        never_judged(0.1),
    );
    match refused {
        Err(error @ Error::StatefulCanary { .. }) => {
            assert!(error.to_string().contains("stateful"), "{error}");
        }
        other => panic!("expected StatefulCanary, got {other:?}"),
    }
    assert!(runtime.service_status("counter").unwrap().canary.is_none());
    assert_eq!(runtime.call("counter", "get", b"").unwrap(), b"1");
    // A stateless build is refused a stateful canary too.
    let options = graft_runtime::LoadOptions::default().name("old-counter");
    runtime.load_with(graft_tests::path(Fixture::CounterAbi2).unwrap(), options).unwrap();
    runtime.start("old-counter").unwrap();
    let refused = runtime.swap_with(
        "old-counter",
        graft_tests::path(Fixture::Counter1_1).unwrap(),
        never_judged(0.1),
    );
    assert!(matches!(refused, Err(Error::StatefulCanary { .. })), "{refused:?}");
}

/// A canary's refusals (here, an unknown method) are the service's own "no", not failures: a
/// canary that tolerates no failure is promoted through them.
#[test]
fn a_canary_is_not_aborted_for_its_refusals() {
    let policy = CanaryPolicy {
        weight: 1.0,
        calls: 50,
        max_failures: 0,
        max_failure_rate: 0.0,
        min_calls: 1,
    };
    let setup = with_canary(Fixture::Greeter1_1, SwapStrategy::Canary(policy));
    let events = setup.runtime.subscribe();
    let greeter = setup.runtime.handle("greeter").unwrap();
    for _ in 0..50 {
        match greeter.call_to_vec("no-such-method", b"") {
            Err(Error::Refused { version, .. }) => assert_eq!(version.to_string(), "1.1.0"),
            other => panic!("expected a refusal from the canary, got {other:?}"),
        }
    }
    let event = wait_for(&events, |e| {
        matches!(e.kind, EventKind::CanaryPromoted { .. } | EventKind::CanaryAborted { .. })
    });
    assert!(matches!(event.kind, EventKind::CanaryPromoted { automatic: true, .. }), "{event:?}");
}

/// A canary whose health check fails (after passing the swap's) is aborted by the periodic
/// health check, however its calls go: it answers them well, but must not be promoted.
#[test]
fn an_unhealthy_canary_is_aborted_by_the_health_check() {
    let setup = Setup::with(
        Runtime::builder()
            .probation(ProbationPolicy::disabled())
            .health_interval(Some(std::time::Duration::from_millis(5))),
    );
    let runtime = &setup.runtime;
    let events = runtime.subscribe();
    runtime.load_and_start(graft_tests::path(Fixture::Greeter1_0).unwrap()).unwrap();
    let report = runtime
        .swap_with("greeter", graft_tests::path(Fixture::Sickly).unwrap(), never_judged(0.5))
        .unwrap();
    let event = wait_for(&events, |e| matches!(e.kind, EventKind::CanaryAborted { .. }));
    let EventKind::CanaryAborted { generation, reason } = event.kind else { unreachable!() };
    assert_eq!(generation, report.generation);
    assert!(reason.contains("health check failed"), "{reason}");
    assert!(runtime.service_status("greeter").unwrap().canary.is_none());
    let greeter = runtime.handle("greeter").unwrap();
    for _ in 0..1_000 {
        assert_eq!(greeter.call_to_vec("greet", b"n").unwrap(), greeting("n", "1.0.0"));
    }
}

/// Promoting a canary by hand checks its health first: an unhealthy one is aborted instead,
/// the promotion fails with the health check's error, and the stable build serves on.
#[test]
fn promoting_an_unhealthy_canary_aborts_it() {
    let setup = with_canary(Fixture::Sickly, never_judged(0.5));
    let runtime = &setup.runtime;
    let events = runtime.subscribe();
    let error = runtime.promote("greeter").unwrap_err();
    assert!(
        matches!(&error, Error::HealthCheckFailed { version, .. } if version.to_string() == "1.8.0"),
        "{error:?}"
    );
    let event = wait_for(&events, |e| matches!(e.kind, EventKind::CanaryAborted { .. }));
    assert!(
        matches!(event.kind, EventKind::CanaryAborted { reason, .. } if reason.contains("before promotion"))
    );
    assert!(runtime.service_status("greeter").unwrap().canary.is_none());
    assert_eq!(runtime.handle("greeter").unwrap().version().unwrap().to_string(), "1.0.0");
    assert!(matches!(runtime.promote("greeter"), Err(Error::NoCanary { .. })));
}
