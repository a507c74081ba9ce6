//! Services that depend on each other: start order, refusals, calls between services and the
//! provenance of their failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use graft_runtime::{Error, EventKind, Runtime, ServiceState};
use graft_tests::Fixture;

use super::Setup;

#[test]
fn a_dependent_calling_through_a_hundred_restarts_of_its_dependency_sees_no_error() {
    let setup = Setup::new();
    setup.load_as(Fixture::Worker, "back", &[]);
    setup.load_as(Fixture::Worker, "front", &["back"]);
    setup.runtime.start_all().unwrap();
    let front = setup.runtime.handle("front").unwrap();
    let front_generation = front.generation();

    let stop = Arc::new(AtomicBool::new(false));
    let calling = {
        let (front, stop) = (front.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let (mut answered, mut errors) = (0u64, Vec::new());
            loop {
                let last = stop.load(Ordering::Acquire);
                match front.call_to_vec("relay", b"back/whoami") {
                    Ok(answer) if answer == b"back 1.0.0" => answered += 1,
                    Ok(other) => errors.push(format!("unexpected answer {other:?}")),
                    // A call that reached a destroyed instance fails with that message.
                    Err(e) => errors.push(e.to_string()),
                }
                if last {
                    return (answered, errors);
                }
            }
        })
    };
    for _ in 0..100 {
        setup.runtime.restart("back").unwrap();
    }
    stop.store(true, Ordering::Release);
    let (answered, errors) = calling.join().unwrap();
    assert!(errors.is_empty(), "{} errors, first: {:?}", errors.len(), errors.first());
    assert!(answered > 0);
    assert_eq!(front.generation(), front_generation, "the caller was never restarted");
}

#[test]
fn a_call_to_a_service_that_is_not_ready_retries_then_names_it() {
    let setup = Setup::with(Runtime::builder().call_deadline(Duration::from_millis(50)));
    // `front` does not declare `back`, so it can run while `back` does not.
    setup.load_as(Fixture::Worker, "front", &[]);
    setup.load_as(Fixture::Worker, "back", &[]);
    setup.runtime.start("front").unwrap();
    let front = setup.runtime.handle("front").unwrap();
    let front_generation = front.generation();

    let err = front.call_to_vec("relay", b"back/whoami").unwrap_err();
    let Error::DependencyFailed { chain, cause } = &err else { panic!("{err:?}") };
    assert_eq!(chain[0].service, "front");
    assert!(
        matches!(cause.as_ref(), Error::Remote { service, message, .. }
            if service == "back" && message.contains("not ready")),
        "{err}"
    );
    assert!(err.to_string().contains("back"), "{err}");

    // The dependency comes up while a call waits for it: that call succeeds.
    let waiting = std::thread::spawn({
        let front = front.clone();
        move || front.call_to_vec("relay", b"back/whoami")
    });
    setup.runtime.start("back").unwrap();
    let answer = waiting.join().unwrap();
    // Either it was still retrying when `back` started, or it had already given up.
    if let Ok(answer) = answer {
        assert_eq!(answer, b"back 1.0.0");
    }
    assert_eq!(front.call_to_vec("relay", b"back/whoami").unwrap(), b"back 1.0.0");
    assert_eq!(front.generation(), front_generation, "no restart of the caller was needed");
}

#[test]
fn a_paused_dependency_is_waited_for_then_reported_not_ready() {
    let setup = Setup::with(Runtime::builder().call_deadline(Duration::from_millis(30)));
    setup.load_as(Fixture::Worker, "back", &[]);
    setup.load_as(Fixture::Worker, "front", &["back"]);
    setup.runtime.start_all().unwrap();
    setup.runtime.pause("back").unwrap();
    let err = setup.runtime.call("front", "relay", b"back/whoami").unwrap_err();
    assert!(err.to_string().contains("`back` was not ready"), "{err}");
    setup.runtime.resume("back").unwrap();
    assert_eq!(setup.runtime.call("front", "relay", b"back/whoami").unwrap(), b"back 1.0.0");
}

#[test]
fn five_services_start_in_parallel_waves_and_stop_in_reverse() {
    let setup = Setup::with(Runtime::builder().concurrency(4));
    setup.runtime.load(graft_tests::path(Fixture::Rendezvous).unwrap()).unwrap();
    setup.runtime.start("rendezvous").unwrap();
    // c needs a and b; d and e need c. The rendezvous holds each wave's services inside their
    // construction until all of them are there: a wave that did not run in parallel would
    // time out and fail the start.
    setup.runtime.call("rendezvous", "expect", b"a,b;c;d,e").unwrap();
    setup.load_as(Fixture::GatedWorker, "a", &[]);
    setup.load_as(Fixture::GatedWorker, "b", &[]);
    setup.load_as(Fixture::GatedWorker, "c", &["a", "b"]);
    setup.load_as(Fixture::GatedWorker, "d", &["c"]);
    setup.load_as(Fixture::GatedWorker, "e", &["c"]);

    let report = setup.runtime.start_all().unwrap();
    assert!(report.succeeded(), "{report}");
    let waves: Vec<Vec<&str>> =
        report.waves.iter().map(|w| w.iter().map(String::as_str).collect()).collect();
    assert_eq!(waves, [vec!["rendezvous"], vec!["a", "b"], vec!["c"], vec!["d", "e"]]);

    let order = setup.runtime.call("rendezvous", "order", b"").unwrap();
    let order: Vec<String> =
        String::from_utf8(order).unwrap().split(',').map(str::to_owned).collect();
    let at = |name: &str| order.iter().position(|n| n == name).unwrap();
    for (dependent, dependency) in [("c", "a"), ("c", "b"), ("d", "c"), ("e", "c")] {
        assert!(
            at(dependency) < at(dependent),
            "{dependency} started before {dependent}: {order:?}"
        );
    }

    let err = setup.runtime.stop("c").unwrap_err();
    let Error::DependentsRunning { dependents, .. } = &err else { panic!("{err:?}") };
    assert_eq!(dependents, &["d", "e"]);
    assert_eq!(setup.runtime.state("c").unwrap(), ServiceState::Running);

    let events = setup.runtime.subscribe();
    let report = setup.runtime.stop_cascade("c").unwrap();
    assert_eq!(report.waves, [vec!["d".to_owned(), "e".to_owned()], vec!["c".to_owned()]]);
    let stopped: Vec<String> =
        events.try_iter().filter(|e| e.kind == EventKind::Stopped).map(|e| e.service).collect();
    assert_eq!(stopped.len(), 3);
    assert_eq!(stopped[2], "c", "c stops after its dependents: {stopped:?}");
    for name in ["a", "b"] {
        assert_eq!(setup.runtime.state(name).unwrap(), ServiceState::Running);
    }
}

#[test]
fn start_refuses_a_missing_dependency_unless_asked_to_start_it() {
    let setup = Setup::new();
    setup.load_as(Fixture::Worker, "base", &[]);
    setup.load_as(Fixture::Worker, "top", &["base"]);
    let err = setup.runtime.start("top").unwrap_err();
    assert!(
        matches!(&err, Error::DependencyNotRunning { service, dependency, state: Some(ServiceState::Loaded) }
            if service == "top" && dependency == "base"),
        "{err:?}"
    );
    let report = setup.runtime.start_with_dependencies("top").unwrap();
    assert_eq!(report.waves, [vec!["base".to_owned()], vec!["top".to_owned()]]);
    assert_eq!(setup.runtime.call("top", "relay", b"base/whoami").unwrap(), b"base 1.0.0");
}

#[test]
fn a_dependency_at_an_unsatisfying_version_is_refused() {
    let setup = Setup::new();
    setup.load_as(Fixture::Worker, "base", &[]);
    let path = graft_tests::path(Fixture::Worker).unwrap();
    let options = graft_runtime::LoadOptions::default()
        .name("picky")
        .depends_on("base", semver::VersionReq::parse("^2").unwrap());
    setup.runtime.load_with(path, options).unwrap();
    setup.runtime.start("base").unwrap();
    let err = setup.runtime.start("picky").unwrap_err();
    let Error::DependencyMismatch { dependency, required, found, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (dependency.as_str(), required.to_string(), found.to_string()),
        ("base", "^2".into(), "1.0.0".into())
    );
}

#[test]
fn a_swap_that_would_break_a_running_dependent_is_refused() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let path = graft_tests::path(Fixture::Worker).unwrap();
    let options = graft_runtime::LoadOptions::default()
        .name("fan")
        .depends_on("greeter", semver::VersionReq::parse("~1.0").unwrap());
    setup.runtime.load_with(path, options).unwrap();
    setup.runtime.start("fan").unwrap();
    let err = setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap_err();
    let Error::BreaksDependent { dependent, required, found, .. } = &err else { panic!("{err:?}") };
    assert_eq!(
        (dependent.as_str(), required.to_string(), found.to_string()),
        ("fan", "~1.0".into(), "1.1.0".into())
    );
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.0.0");
}

#[test]
fn a_dependency_cycle_is_refused_at_load_with_its_members() {
    let setup = Setup::new();
    setup.load_as(Fixture::Worker, "x", &["z"]);
    setup.load_as(Fixture::Worker, "y", &["x"]);
    let path = graft_tests::path(Fixture::Worker).unwrap();
    let options = graft_runtime::LoadOptions::default()
        .name("z")
        .depends_on("y", semver::VersionReq::parse("^1").unwrap());
    let err = setup.runtime.load_with(path, options).unwrap_err();
    let Error::DependencyCycle { cycle } = &err else { panic!("{err:?}") };
    let mut members = cycle.clone();
    members.sort();
    assert_eq!(members, ["x", "y", "z"]);
    assert!(err.to_string().starts_with("dependency cycle: "), "{err}");
    assert!(matches!(setup.runtime.handle("z"), Err(Error::UnknownService { .. })));
}

#[test]
fn a_failure_three_services_deep_names_the_service_its_version_and_the_chain() {
    let setup = Setup::new();
    setup.load_as(Fixture::Worker, "back", &[]);
    setup.load_as(Fixture::Worker, "middle", &["back"]);
    setup.load_as(Fixture::Worker, "front", &["middle"]);
    setup.runtime.start_all().unwrap();
    assert_eq!(setup.runtime.call("front", "relay", b"middle,back/whoami").unwrap(), b"back 1.0.0");

    for (method, expect_panic) in [("fail", false), ("panic", true)] {
        let input = format!("middle,back/{method}");
        let err = setup.runtime.call("front", "relay", input.as_bytes()).unwrap_err();
        let Error::DependencyFailed { chain, cause } = &err else { panic!("{err:?}") };
        let hops: Vec<(&str, &str, &str)> = chain
            .iter()
            .map(|h| (h.service.as_str(), h.version.as_str(), h.method.as_str()))
            .collect();
        assert_eq!(hops, [("front", "1.0.0", "relay"), ("middle", "1.0.0", "relay")]);
        match (cause.as_ref(), expect_panic) {
            (Error::CallFailed { service, version, method, message }, false) => {
                assert_eq!(
                    (service.as_str(), version.to_string(), method.as_str()),
                    ("back", "1.0.0".into(), "relay")
                );
                assert_eq!(message, "back failed on purpose");
            }
            (Error::PluginPanicked { service, version, message, .. }, true) => {
                assert_eq!((service.as_str(), version.to_string()), ("back", "1.0.0".into()));
                assert_eq!(message, "back panicked on purpose");
            }
            (other, _) => panic!("unexpected cause {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.starts_with("front 1.0.0 `relay` -> middle 1.0.0 `relay` -> back 1.0.0 "),
            "{text}"
        );
    }
}
