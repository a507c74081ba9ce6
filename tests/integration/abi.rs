//! The plugin ABI as it grows: descriptors of other sizes, other ABI versions, the build profile,
//! and a service's own "no" (a refusal), which is not a failure.

use std::time::Duration;

use graft_plugin_api::abi::{ABI_VERSION, MIN_DESCRIPTOR_SIZE};
use graft_runtime::{BuildProfile, Error, EventKind, ProbationPolicy, RollbackReason, Runtime};
use graft_tests::Fixture;

use super::{PATIENCE, Setup, greeting};

/// Loads and starts `fixture` on a fresh runtime and returns the setup, checking that it
/// answers as its version.
fn serving(fixture: Fixture) -> Setup {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(fixture)).unwrap();
    assert_eq!(
        setup.runtime.call("greeter", "greet", b"abi").unwrap(),
        greeting("abi", fixture.version())
    );
    setup
}

/// Regression: the host required `descriptor_size >= size_of::<PluginDescriptor>()`, so every
/// plugin built before a field was appended was refused by a newer host.
#[test]
fn a_descriptor_without_its_last_field_loads_and_reports_that_field_absent() {
    let setup = serving(Fixture::DescriptorShort);
    let current = setup.runtime.service_status("greeter").unwrap().current.unwrap();
    // The fixture's static holds a debug profile past its declared size: reading it would say
    // `Some(Debug)`; only the bytes the descriptor declares are read.
    assert_eq!(current.build_profile, None);
    assert_eq!(current.version.to_string(), "1.10.0");
}

/// Swapping between an older and a newer descriptor layout works both ways, like any swap.
#[test]
fn a_build_with_a_shorter_descriptor_swaps_in_and_out() {
    let setup = serving(Fixture::Greeter1_0);
    setup.runtime.swap("greeter", setup.copy(Fixture::DescriptorShort)).unwrap();
    assert_eq!(setup.runtime.call("greeter", "greet", b"s").unwrap(), greeting("s", "1.10.0"));
    setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
    let current = setup.runtime.service_status("greeter").unwrap().current.unwrap();
    assert_eq!(current.build_profile, Some(BuildProfile::Optimised));
}

/// A plugin built against a newer `graft-plugin-api` appends fields this host does not know;
/// by the growth rule they are optional, so it loads and the host ignores them.
#[test]
fn a_descriptor_with_a_field_the_host_does_not_know_loads() {
    let setup = serving(Fixture::DescriptorExtended);
    let current = setup.runtime.service_status("greeter").unwrap().current.unwrap();
    assert_eq!(current.version.to_string(), "1.11.0");
    assert_eq!(current.build_profile, Some(BuildProfile::Optimised));
}

#[test]
fn a_different_abi_version_is_refused_naming_both_versions() {
    let setup = Setup::new();
    let err = setup.runtime.load(setup.copy(Fixture::BadAbi)).unwrap_err();
    let Error::AbiMismatch { expected, found, .. } = &err else { panic!("{err:?}") };
    assert_eq!((*expected, *found), (ABI_VERSION, ABI_VERSION + 41));
    let message = err.to_string();
    assert!(
        message.contains(&format!("version {}", ABI_VERSION + 41))
            && message.contains(&format!("version {ABI_VERSION}")),
        "{message}"
    );
    assert_eq!(setup.staged_files(), 0, "the refused build's staged copy is removed");
}

#[test]
fn a_descriptor_smaller_than_the_minimum_is_refused() {
    let setup = Setup::new();
    let err = setup.runtime.load(setup.copy(Fixture::DescriptorTiny)).unwrap_err();
    let Error::DescriptorTooSmall { size, minimum, .. } = &err else { panic!("{err:?}") };
    let word = std::mem::size_of::<usize>();
    assert_eq!(
        (*size as usize, *minimum as usize),
        (MIN_DESCRIPTOR_SIZE - word, MIN_DESCRIPTOR_SIZE)
    );
    assert!(err.to_string().contains(&format!("at least {MIN_DESCRIPTOR_SIZE}")), "{err}");
    assert!(setup.runtime.service_status("greeter").is_err(), "nothing was registered");
    assert_eq!(setup.staged_files(), 0);
}

/// Regression: status did not say how a build was made, so a debug build (many times slower)
/// could be deployed and serve without anyone seeing it.
#[test]
fn status_shows_a_debug_build_as_such() {
    let setup = serving(Fixture::Greeter1_0);
    let status = setup.runtime.service_status("greeter").unwrap();
    assert_eq!(status.current.unwrap().build_profile, Some(BuildProfile::Optimised));

    setup.runtime.swap("greeter", setup.copy(Fixture::GreeterDebug)).unwrap();
    let status = setup.runtime.service_status("greeter").unwrap();
    let current = status.current.unwrap();
    assert_eq!(current.version.to_string(), "1.13.0");
    assert_eq!(current.build_profile, Some(BuildProfile::Debug));
    assert_eq!(BuildProfile::Debug.to_string(), "debug (not optimised)");
    assert_eq!(status.history[0].build_profile, Some(BuildProfile::Optimised));
}

#[test]
fn a_refusal_names_the_service_version_method_and_message() {
    let setup = serving(Fixture::Greeter1_1);
    let err = setup.runtime.call("greeter", "find", b"k").unwrap_err();
    let Error::Refused { service, version, method, message } = &err else { panic!("{err:?}") };
    assert_eq!(
        (service.as_str(), version.to_string(), method.as_str(), message.as_str()),
        ("greeter", "1.1.0".into(), "find", "not found: `k`")
    );
    assert_eq!(err.to_string(), "greeter 1.1.0 refused `find`: not found: `k`");
    // A failure is still a failure.
    let err = setup.runtime.call("greeter", "fail", b"").unwrap_err();
    assert!(matches!(err, Error::CallFailed { .. }), "{err:?}");
}

/// Regression: a key-value service answering "not found" 11 times in a row after a swap was
/// rolled back by probation ("11 of 11 calls failed"); an unknown method counted the same way.
#[test]
fn refusals_never_roll_a_build_back_but_failures_still_do() {
    const MAX_FAILURES: u64 = 3;
    let setup = Setup::with(Runtime::builder().health_interval(None).probation(ProbationPolicy {
        calls: 1000,
        duration: Duration::from_secs(600),
        max_failures: MAX_FAILURES,
        max_failure_rate: 1.0,
        min_calls: u64::MAX,
    }));
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let greeter = setup.runtime.handle("greeter").unwrap();
    let events = setup.runtime.subscribe();
    setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();

    // Many times the failure limit in refusals: each is answered by 1.1, none counts.
    for i in 0..10 * MAX_FAILURES {
        let (method, input) =
            if i % 2 == 0 { ("find", &b"key"[..]) } else { ("no-such", &b""[..]) };
        match greeter.call_to_vec(method, input) {
            Err(Error::Refused { version, .. }) => assert_eq!(version.to_string(), "1.1.0"),
            other => panic!("call {i}: {other:?}"),
        }
    }
    assert_eq!(greeter.call_to_vec("greet", b"r").unwrap(), greeting("r", "1.1.0"));

    // Failures count from zero: exactly MAX_FAILURES are tolerated, one more rolls back (the
    // call that crosses the limit rolls back before it returns).
    for _ in 0..MAX_FAILURES {
        let err = greeter.call_to_vec("fail", b"").unwrap_err();
        assert!(
            matches!(&err, Error::CallFailed { version, .. } if version.to_string() == "1.1.0")
        );
    }
    assert_eq!(greeter.call_to_vec("greet", b"r").unwrap(), greeting("r", "1.1.0"));
    assert!(greeter.call_to_vec("fail", b"").is_err());
    assert_eq!(greeter.call_to_vec("greet", b"r").unwrap(), greeting("r", "1.0.0"));

    let deadline = std::time::Instant::now() + PATIENCE;
    let reason = loop {
        match events.recv_deadline(deadline) {
            Ok(event) => {
                if let EventKind::RolledBack { reason, .. } = event.kind {
                    break reason;
                }
            }
            Err(e) => panic!("no rollback event within {PATIENCE:?}: {e}"),
        }
    };
    // Every refusal counted as a call, none as a failure: 30 refusals, 2 greetings, 4 failures.
    let RollbackReason::Automatic(why) = &reason else { panic!("{reason:?}") };
    assert!(why.contains("4 of 36 calls failed"), "{why}");
}

/// A refusal deep in a chain of calls reaches the top as a refusal, with the chain.
#[test]
fn a_refusal_passed_on_through_a_chain_stays_a_refusal() {
    let setup = Setup::new();
    setup.load_as(Fixture::Worker, "back", &[]);
    setup.load_as(Fixture::Worker, "middle", &["back"]);
    setup.load_as(Fixture::Worker, "front", &["middle"]);
    setup.runtime.start_all().unwrap();

    let err = setup.runtime.call("front", "relay", b"middle,back/no-such").unwrap_err();
    let Error::DependencyFailed { chain, cause } = &err else { panic!("{err:?}") };
    let hops: Vec<&str> = chain.iter().map(|h| h.service.as_str()).collect();
    assert_eq!(hops, ["front", "middle"]);
    let Error::Refused { service, version, message, .. } = cause.as_ref() else {
        panic!("{cause:?}")
    };
    assert_eq!(
        (service.as_str(), version.to_string(), message.as_str()),
        ("back", "1.0.0".into(), "unknown method `no-such`")
    );
    assert!(
        err.to_string().ends_with("back 1.0.0 refused `relay`: unknown method `no-such`"),
        "{err}"
    );
}
