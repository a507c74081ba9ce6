//! Malformed payloads sent to a typed plugin (kv 2.1), by name (`ServiceHandle::call`) and by
//! method id (`ServiceHandle::call_method`): truncated encodings, encodings of the wrong types,
//! invalid UTF-8, stray trailing bytes, empty input, unknown methods. Each is refused with
//! `Error::Refused` naming the method, reaches nothing in the store, counts as no failure, and
//! the service keeps serving.

use graft_kv_interface::{Kv, KvClient};
use graft_plugin_api::typed::{Interface, fnv1a_32, method_id};
use graft_runtime::{
    Error, EventKind, Method, ProbationPolicy, Runtime, RuntimeBuilder, ServiceHandle, ServiceState,
};
use graft_tests::Fixture;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::{Setup, strict_probation};

fn quiet() -> RuntimeBuilder {
    Runtime::builder().probation(ProbationPolicy::disabled()).health_interval(None)
}

/// The method `name` of the kv interface the host was compiled against.
fn method(name: &'static str) -> Method {
    let id = method_id(<dyn Kv as Interface>::METHODS, name).expect("a method of kv");
    Method { id, name }
}

/// What is already in `output` when a call is made: a failed call must leave it as it was.
const SENTINEL: &[u8] = b"untouched";

/// How a malformed call is made.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// `ServiceHandle::call`, by name.
    Name,
    /// `ServiceHandle::call_method`, by id.
    Id,
}

/// Calls `method` with `input` along `route`, checks that the output was left as it was, and
/// returns the call's outcome.
fn call(handle: &ServiceHandle, route: Route, method: Method, input: &[u8]) -> Result<(), Error> {
    let mut output = SENTINEL.to_vec();
    let result = match route {
        Route::Name => handle.call(method.name, input, &mut output),
        Route::Id => handle.call_method(method, input, &mut output),
    };
    if result.is_err() {
        assert_eq!(output, SENTINEL, "a failed call left output behind ({route:?}, {method:?})");
    }
    result
}

/// Checks that `error` is kv 2.1's refusal of `method`, and returns its message.
fn refusal(error: Error, method: &str) -> String {
    let text = error.to_string();
    let Error::Refused { service, version, method: refused, message } = error else {
        panic!("expected a refusal of `{method}`, got {error:?}");
    };
    assert_eq!((service.as_str(), version.to_string()), ("kv", "2.1.0".to_owned()));
    assert_eq!(refused, method, "the error names the method called");
    assert!(text.contains(&format!("refused `{method}`")), "{text}");
    message
}

/// Sends `input` to `method` both ways and checks that each is refused as invalid input to it.
fn refused(handle: &ServiceHandle, method: Method, input: &[u8], why: &str) {
    for route in [Route::Name, Route::Id] {
        let error = call(handle, route, method, input).expect_err(why);
        let message = refusal(error, method.name);
        assert!(
            message.starts_with("invalid input: ")
                && message.contains(&format!("`{}`", method.name)),
            "{why} ({route:?}): {message}"
        );
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("encodes")
}

/// Every malformed payload of this file, sent to `kv` by name and by id.
fn send_malformed_payloads(handle: &ServiceHandle) {
    let (get, put) = (method("get"), method("put"));

    // Empty input: both take arguments.
    refused(handle, get, &[], "empty input to get");
    refused(handle, put, &[], "empty input to put");

    // Every strict prefix of a valid encoding.
    let valid_get = encode(&("ann",));
    let valid_put = encode(&("ann", &b"value"[..]));
    for cut in 0..valid_get.len() {
        refused(handle, get, &valid_get[..cut], "truncated get");
    }
    for cut in 0..valid_put.len() {
        refused(handle, put, &valid_put[..cut], "truncated put");
    }

    // The wrong types: integers where a string and bytes are expected (their varints read as
    // lengths past the end of the input), invalid UTF-8 where a string is expected.
    refused(handle, get, &encode(&(u64::MAX,)), "a u64 for get's key");
    refused(handle, get, &encode(&(300u64,)), "a u64 for get's key");
    refused(handle, put, &encode(&(42u64, 7u64)), "two u64s for put");
    refused(handle, put, &encode(&(u64::MAX, &b"v"[..])), "a u64 key");
    refused(handle, get, &[2, 0xff, 0xfe], "invalid UTF-8 in get's key");
    refused(handle, get, &[3, b'a', 0xc3, 0x28], "invalid UTF-8 in get's key");
    refused(handle, put, &[2, 0xc3, 0x28, 1, b'v'], "invalid UTF-8 in put's key");
    refused(handle, get, &[0xff; 11], "a varint longer than a u64");

    // Stray bytes after valid arguments, and one method's arguments sent to the other: put's
    // are get's followed by stray bytes, get's lack put's value.
    for extra in [&[0u8][..], &[1, 2, 3], b"ann"] {
        let mut input = valid_get.clone();
        input.extend_from_slice(extra);
        refused(handle, get, &input, "stray bytes after get's key");
        let mut input = valid_put.clone();
        input.extend_from_slice(extra);
        refused(handle, put, &input, "stray bytes after put's value");
    }
    refused(handle, get, &valid_put, "put's arguments to get");
    refused(handle, put, &valid_get, "get's arguments to put");
}

/// Unknown methods: a name the interface does not have, an id it does not have (the runtime's
/// error names the method as the caller named it), and a known name with an unknown id (the
/// plugin dispatches on the id).
fn send_unknown_methods(handle: &ServiceHandle) {
    let input = encode(&("ann",));
    for name in ["frobnicate", "Get", "get ", ""] {
        let error = call(handle, Route::Name, Method { id: 0, name }, &input).unwrap_err();
        let message = refusal(error, name);
        assert_eq!(message, format!("unknown method `{name}`"));
    }
    for unknown in [
        Method { id: fnv1a_32(b"frobnicate"), name: "frobnicate" },
        Method { id: 0, name: "get" },
        Method { id: method("get").id ^ 1, name: "get" },
        Method { id: u32::MAX, name: "put" },
    ] {
        let error = call(handle, Route::Id, unknown, &input).unwrap_err();
        let message = refusal(error, unknown.name);
        assert!(
            message.starts_with("unknown method")
                && message.contains(&format!("{:#010x}", unknown.id)),
            "{unknown:?}: {message}"
        );
    }
}

/// Checks that `kv` still runs `generation`, with its state, and answers typed calls.
fn still_serving(setup: &Setup, generation: graft_runtime::GenerationId) {
    let runtime = &setup.runtime;
    let kv = runtime.client::<KvClient<_>>("kv").unwrap();
    assert_eq!(kv.keys().unwrap(), vec!["ann".to_owned()], "no malformed put reached the store");
    assert_eq!(kv.get("ann").unwrap(), Some(b"1".to_vec()));
    kv.put("bob", b"2").unwrap();
    assert_eq!(kv.get("bob").unwrap(), Some(b"2".to_vec()));
    assert!(kv.delete("bob").unwrap());

    let status = runtime.status();
    let kv = status.iter().find(|s| s.service == "kv").expect("kv in the runtime's status");
    assert_eq!(kv.state, ServiceState::Running);
    assert_eq!(kv.version.to_string(), "2.1.0");
    assert_eq!(kv.current.as_ref().map(|c| c.id), Some(generation), "the same instance serves");
    assert!(kv.healthy);
}

#[test]
fn malformed_payloads_are_refused_by_name_and_by_id_and_the_service_keeps_serving() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Kv2_1).unwrap()).unwrap();
    let handle = runtime.handle("kv").unwrap();
    let generation = handle.generation().unwrap();
    runtime.client::<KvClient<_>>("kv").unwrap().put("ann", b"1").unwrap();

    send_malformed_payloads(&handle);
    send_unknown_methods(&handle);
    // The runtime's by-name shortcut reports the same refusal.
    let error = runtime.call("kv", "get", &[3, b'a']).unwrap_err();
    refusal(error, "get");

    still_serving(&setup, generation);
}

/// Under a probation window that rolls back at the first failure, malformed payloads to the
/// swapped-in build are refusals, not failures: nothing rolls it back.
#[test]
fn malformed_payloads_do_not_count_against_a_build_on_probation() {
    let setup = Setup::with(Runtime::builder().health_interval(None).probation(strict_probation()));
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Kv2_0).unwrap()).unwrap();
    let events = runtime.subscribe();
    let swap = runtime.swap("kv", graft_tests::path(Fixture::Kv2_1).unwrap()).unwrap();
    let handle = runtime.handle("kv").unwrap();
    runtime.client::<KvClient<_>>("kv").unwrap().put("ann", b"1").unwrap();

    send_malformed_payloads(&handle);
    send_unknown_methods(&handle);

    still_serving(&setup, swap.generation);
    let rollbacks: Vec<_> = events
        .try_iter()
        .filter(|e| {
            matches!(e.kind, EventKind::RolledBack { .. } | EventKind::RollbackRefused { .. })
        })
        .collect();
    assert!(rollbacks.is_empty(), "refusals tripped probation: {rollbacks:?}");
    let history = runtime.service_status("kv").unwrap().history;
    assert_eq!(history.len(), 1, "2.0 is kept for rollback");
}

/// Arbitrary bytes to every method of kv, by name and by id, are answered or refused: never a
/// failure or a panic, and the service keeps running.
#[test]
fn arbitrary_payloads_are_answered_or_refused() {
    let setup = Setup::with(quiet());
    setup.runtime.load_and_start(graft_tests::path(Fixture::Kv2_1).unwrap()).unwrap();
    let handle = setup.runtime.handle("kv").unwrap();
    let names = ["get", "put", "delete", "keys"];
    assert_eq!(<dyn Kv as Interface>::METHODS.len(), names.len(), "every method of kv 2.1");
    let mut runner =
        TestRunner::new(Config { cases: 256, failure_persistence: None, ..Config::default() });
    let result = runner.run(&vec(any::<u8>(), 0..48), |input| {
        for &name in &names {
            for route in [Route::Name, Route::Id] {
                match call(&handle, route, method(name), &input) {
                    Ok(()) | Err(Error::Refused { .. }) => {}
                    Err(error) => {
                        prop_assert!(false, "`{}` {:?} on {:02x?}: {:?}", name, route, input, error)
                    }
                }
            }
        }
        prop_assert_eq!(handle.state(), ServiceState::Running);
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}
