//! Regression tests for the smaller defects of the core: call depth, calls to names nobody has,
//! names that escape the state directory, and health checks that did not hold their generation.

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::time::Duration;

use graft_runtime::semver::VersionReq;
use graft_runtime::{Error, LoadOptions, MAX_CALL_DEPTH, ProbationPolicy, Runtime};
use graft_tests::Fixture;

use super::{PATIENCE, Setup};

/// The `relay` input that makes `service` call itself through the host `depth` times.
fn self_relay(service: &str, depth: u32) -> Vec<u8> {
    let path = vec![service; depth as usize].join(",");
    format!("{path}/whoami").into_bytes()
}

/// Runs `call` on a thread with a large stack (so that even the old, unbounded code could not
/// overflow it here) and waits for its answer at most [`PATIENCE`].
fn on_a_big_stack<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, answer) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let _ = done.send(call());
        })
        .unwrap();
    answer.recv_timeout(PATIENCE).expect("the call did not return in time")
}

/// A service calling itself through the host had no depth limit: it recursed until the stack
/// overflowed and took the host down.
#[test]
fn a_service_calling_itself_too_deep_gets_a_typed_error() {
    let setup = Setup::new();
    setup.load_as(Fixture::Worker, "selfie", &[]);
    setup.runtime.start("selfie").unwrap();
    let selfie = setup.runtime.handle("selfie").unwrap();

    let at_limit = {
        let selfie = selfie.clone();
        on_a_big_stack(move || selfie.call_to_vec("relay", &self_relay("selfie", MAX_CALL_DEPTH)))
    };
    assert_eq!(at_limit.unwrap(), b"selfie 1.0.0");

    let err = on_a_big_stack(move || {
        selfie.call_to_vec("relay", &self_relay("selfie", MAX_CALL_DEPTH + 1))
    })
    .unwrap_err();
    let Error::DependencyFailed { chain, cause } = &err else { panic!("{err:?}") };
    // The service the caller called, then one hop per call between services that passed.
    assert_eq!(chain.len(), MAX_CALL_DEPTH as usize + 1);
    let Error::Remote { service, message, .. } = cause.as_ref() else { panic!("{cause:?}") };
    assert_eq!(service, "selfie");
    assert!(message.contains(&format!("more than the limit of {MAX_CALL_DEPTH}")), "{message}");
}

/// A chain as deep as the limit fits in the stack of an ordinary spawned thread (2 MiB).
#[test]
fn a_chain_as_deep_as_the_limit_fits_an_ordinary_thread() {
    let setup = Setup::new();
    setup.load_as(Fixture::Worker, "deep", &[]);
    setup.runtime.start("deep").unwrap();
    let deep = setup.runtime.handle("deep").unwrap();
    let answer =
        std::thread::spawn(move || deep.call_to_vec("relay", &self_relay("deep", MAX_CALL_DEPTH)))
            .join()
            .unwrap();
    assert_eq!(answer.unwrap(), b"deep 1.0.0");
}

/// A call to a name nobody has was retried until the call deadline (and held up the runtime's
/// drop as long) instead of failing at once.
#[test]
fn a_call_to_a_name_nobody_has_or_declares_fails_at_once() {
    // A deadline far beyond the test's patience: only an immediate refusal passes.
    let setup = Setup::with(Runtime::builder().call_deadline(Duration::from_secs(3600)));
    setup.load_as(Fixture::Worker, "lonely", &[]);
    setup.runtime.start("lonely").unwrap();
    let lonely = setup.runtime.handle("lonely").unwrap();
    let err = on_a_big_stack(move || lonely.call_to_vec("relay", b"nobody/whoami")).unwrap_err();
    let Error::DependencyFailed { cause, .. } = &err else { panic!("{err:?}") };
    let Error::Remote { service, message, .. } = cause.as_ref() else { panic!("{cause:?}") };
    assert_eq!(service, "nobody");
    assert!(message.contains("no service named `nobody`"), "{message}");
}

#[test]
fn a_call_to_a_declared_dependency_that_is_not_loaded_still_waits() {
    let setup = Setup::with(Runtime::builder().call_deadline(Duration::from_millis(30)));
    setup.load_as(Fixture::Worker, "front", &[]);
    // `later` is declared (by `waiter`), not loaded: it may come, so calls wait for it.
    setup.load_as(Fixture::Worker, "waiter", &["later"]);
    setup.runtime.start("front").unwrap();
    let err = setup.runtime.call("front", "relay", b"later/whoami").unwrap_err();
    let Error::DependencyFailed { cause, .. } = &err else { panic!("{err:?}") };
    let Error::Remote { message, .. } = cause.as_ref() else { panic!("{cause:?}") };
    assert!(message.contains("not ready"), "{message}");
}

/// Service names became file names unchecked: `../escape` wrote outside the state directory.
#[test]
fn names_that_could_escape_the_state_directory_are_refused_everywhere_they_enter() {
    let setup = Setup::new();
    let worker = graft_tests::path(Fixture::Worker).unwrap();
    for name in ["../escape", "a/b", "..", ""] {
        let err = setup.runtime.load_with(&worker, LoadOptions::default().name(name)).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidName { name: n, .. } if n.as_str() == name),
            "{err:?}"
        );
    }
    let options =
        LoadOptions::default().name("fine").depends_on("../up", VersionReq::parse("^1").unwrap());
    let err = setup.runtime.load_with(&worker, options).unwrap_err();
    assert!(matches!(&err, Error::InvalidName { name, .. } if name == "../up"), "{err:?}");
    assert!(setup.runtime.status().is_empty(), "a refused name registered nothing");

    let err = Runtime::builder().require("x/../../y", VersionReq::STAR).build().unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err:?}");
}

/// Health checks held only the generation, not a lease: a generation was reported drained
/// while its health code still ran inside it.
#[test]
fn a_health_check_in_progress_holds_up_the_drain_of_its_generation() {
    let setup = Setup::with(
        Runtime::builder()
            .health_interval(Some(Duration::from_millis(1)))
            .probation(ProbationPolicy::disabled()),
    );
    // The socket's name is global to the machine: the process id keeps concurrent runs apart.
    let service = format!("held-{}", std::process::id());
    let address = SocketAddr::from_abstract_name(format!("graft-health-{service}")).unwrap();
    let listener = UnixListener::bind_addr(&address).unwrap();
    let path = graft_tests::path(Fixture::SlowHealth).unwrap();
    setup.runtime.load_with(path, LoadOptions::default().name(&service)).unwrap();
    setup.runtime.start(&service).unwrap();

    // The first periodic check connects and waits for our byte: health code is running.
    let (accepted, connection) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = accepted.send(listener.accept().map(|(stream, _)| stream));
    });
    let mut stream = connection.recv_timeout(PATIENCE).expect("no health check").unwrap();
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).unwrap();

    let report = setup.runtime.restart(&service).unwrap();
    assert!(!report.previous.is_drained(), "drained while its health check runs");
    stream.write_all(b"r").unwrap();
    report.previous.wait_drained(PATIENCE).unwrap();
    let answer = setup.runtime.call(&service, "whoami", b"").unwrap();
    assert_eq!(answer, format!("{service} 1.0.0").into_bytes());
}
