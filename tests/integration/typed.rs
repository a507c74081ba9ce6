//! Typed interfaces: host and plugin clients, per-method compatibility at load, swap and
//! rollback, malformed payloads, and typed state across handovers.

use graft_hello_interface::HelloClient;
use graft_kv_interface::{KvClient, KvError};
use graft_runtime::{ClientError, Error, ProbationPolicy, Runtime, RuntimeBuilder};
use graft_tests::Fixture;

use super::Setup;

fn quiet() -> RuntimeBuilder {
    Runtime::builder().probation(ProbationPolicy::disabled()).health_interval(None)
}

/// The kv interface as it was at 2.0.0 (before `keys`): what a host built then was compiled
/// against.
mod kv_2_0 {
    use graft_kv_interface::KvError;

    #[graft_plugin_api::interface(name = "kv", version = "2.0.0")]
    pub trait Kv {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
        fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
        fn delete(&self, key: &str) -> bool;
    }
}

#[test]
fn a_host_calls_a_typed_kv_through_its_client_and_the_state_survives_a_swap() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Kv2_0).unwrap()).unwrap();
    let v2_0 = runtime.client::<kv_2_0::KvClient<_>>("kv").unwrap();
    v2_0.put("ann", b"1").unwrap();
    assert_eq!(v2_0.get("ann").unwrap(), Some(b"1".to_vec()));
    assert_eq!(v2_0.get("bob").unwrap(), None);
    let long = "k".repeat(300);
    assert!(matches!(v2_0.put(&long, b"x"), Err(ClientError::Service(KvError::KeyTooLong))));
    // A minor bump that adds a method is accepted; the old client keeps calling it.
    runtime.swap("kv", graft_tests::path(Fixture::Kv2_1).unwrap()).unwrap();
    assert_eq!(v2_0.get("ann").unwrap(), Some(b"1".to_vec()), "the state crossed the swap");
    assert!(v2_0.delete("ann").unwrap());
    v2_0.put("cy", b"3").unwrap();
    let current = runtime.client::<KvClient<_>>("kv").unwrap();
    assert_eq!(current.keys().unwrap(), vec!["cy".to_owned()]);
}

#[test]
fn a_plugin_calls_another_through_a_typed_client_across_swaps() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Kv2_0).unwrap()).unwrap();
    runtime.load_and_start(graft_tests::path(Fixture::Hello1_1).unwrap()).unwrap();
    let hello = runtime.client::<HelloClient<_>>("hello").unwrap();
    assert_eq!(hello.greet("ann").unwrap(), "hello, ann (visit 1)");
    runtime.swap("kv", graft_tests::path(Fixture::Kv2_1).unwrap()).unwrap();
    assert_eq!(hello.greet("ann").unwrap(), "hello, ann (visit 2)");
    runtime.swap("hello", graft_tests::path(Fixture::Hello1_0).unwrap()).unwrap();
    assert_eq!(hello.greet("ann").unwrap(), "hello, ann");
    runtime.rollback("hello").unwrap();
    runtime.rollback("kv").unwrap();
    assert_eq!(hello.greet("ann").unwrap(), "hello, ann (visit 3)", "kv 2.0 took the state back");
    hello.ping().unwrap();
}

#[test]
fn a_typed_call_to_an_untyped_build_is_a_typed_error() {
    let setup = Setup::with(quiet());
    setup.runtime.load_and_start(graft_tests::path(Fixture::Kv1_1).unwrap()).unwrap();
    let error = setup.runtime.client::<KvClient<_>>("kv").unwrap_err();
    assert!(matches!(error, Error::UntypedBuild { .. }), "{error:?}");
}

/// The error a refused build gets: the method it names, and the signatures expected and found.
fn incompatible(error: &Error) -> (&str, Option<&str>, Option<&str>) {
    match error {
        Error::IncompatibleMethod { method, expected, found, .. } => {
            (method.as_str(), expected.as_deref(), found.as_deref())
        }
        other => panic!("expected IncompatibleMethod, got {other:?}"),
    }
}

/// kv 2.1 serving; returns the setup.
fn kv_2_1() -> Setup {
    let setup = Setup::with(quiet());
    setup.runtime.load_and_start(graft_tests::path(Fixture::Kv2_1).unwrap()).unwrap();
    setup
}

fn serving(setup: &Setup) -> String {
    setup.runtime.handle("kv").unwrap().version().unwrap().to_string()
}

#[test]
fn a_minor_bump_that_removes_a_method_is_refused_naming_it() {
    let setup = kv_2_1();
    let error =
        setup.runtime.swap("kv", graft_tests::path(Fixture::KvRemoves).unwrap()).unwrap_err();
    assert_eq!(incompatible(&error), ("delete", Some("fn(&str)->bool"), None));
    assert!(error.to_string().contains("method `delete`"), "{error}");
    assert_eq!(serving(&setup), "2.1.0");
}

#[test]
fn a_minor_bump_that_changes_a_parameter_type_is_refused_naming_the_method() {
    let setup = kv_2_1();
    let error =
        setup.runtime.swap("kv", graft_tests::path(Fixture::KvRetyped).unwrap()).unwrap_err();
    assert_eq!(
        incompatible(&error),
        (
            "put",
            Some("fn(&str,&[u8])->Result<(),KvError>"),
            Some("fn(&str,&str)->Result<(),KvError>")
        )
    );
    assert_eq!(serving(&setup), "2.1.0");
}

#[test]
fn a_patch_bump_that_adds_a_method_is_refused_naming_it() {
    let setup = kv_2_1();
    let error =
        setup.runtime.swap("kv", graft_tests::path(Fixture::KvPatchAdds).unwrap()).unwrap_err();
    assert_eq!(incompatible(&error), ("clear", None, Some("fn()->()")));
    assert!(error.to_string().contains("needs a minor bump"), "{error}");
    assert_eq!(serving(&setup), "2.1.0");
}

/// A host compiled against kv 2.1 (whose client calls `keys`) refuses a build of interface 2.0,
/// which lacks it: at load, and on a rollback to it.
#[test]
fn a_build_older_than_the_hosts_client_is_refused_at_load_and_rollback() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.require_interface::<dyn graft_kv_interface::Kv>("kv").unwrap();
    let error = runtime.load(graft_tests::path(Fixture::Kv2_0).unwrap()).unwrap_err();
    assert_eq!(incompatible(&error), ("keys", Some("fn()->Vec<String>"), None));
    assert!(runtime.handle("kv").is_err(), "nothing was loaded");

    // Without the expectation the 2.0 build loads; a 2.1 client taken after the swap to 2.1
    // then refuses the rollback to 2.0, and 2.1 keeps serving.
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Kv2_0).unwrap()).unwrap();
    let error = runtime.client::<KvClient<_>>("kv").unwrap_err();
    assert_eq!(incompatible(&error).0, "keys", "the client needs what 2.0 lacks");
    runtime.swap("kv", graft_tests::path(Fixture::Kv2_1).unwrap()).unwrap();
    let kv = runtime.client::<KvClient<_>>("kv").unwrap();
    kv.put("a", b"1").unwrap();
    let error = runtime.rollback("kv").unwrap_err();
    assert_eq!(incompatible(&error).0, "keys");
    assert_eq!(serving(&setup), "2.1.0");
    assert_eq!(kv.keys().unwrap(), vec!["a".to_owned()]);
}
