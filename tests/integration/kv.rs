//! The `kv` example, a stateful key-value service: its keys and values survive a swap, a
//! rollback and a restart of the host, its malformed input is refused without harm, and its
//! state codec refuses a truncated or altered state instead of reading past it.

use std::collections::BTreeMap;
use std::time::Duration;

use graft_runtime::{
    BatchReport, Error, EventKind, ProbationPolicy, Runtime, RuntimeBuilder, ServiceState,
};
use graft_tests::Fixture;
use sha2::{Digest, Sha256};

use super::{PATIENCE, Setup};

/// No probation and no periodic health check: only the test changes the service.
fn quiet() -> RuntimeBuilder {
    Runtime::builder().probation(ProbationPolicy::disabled()).health_interval(None)
}

fn key(i: usize) -> String {
    format!("key-{i:02}")
}

/// A value of its own length for each key, with 0 bytes and bytes that are not UTF-8 in it.
fn value(i: usize) -> Vec<u8> {
    let mut value = format!("value {i}:").into_bytes();
    for _ in 0..i {
        value.extend_from_slice(&[0, 0xff, i as u8]);
    }
    value
}

fn put(runtime: &Runtime, key: &str, value: &[u8]) {
    let input = [key.as_bytes(), &[0], value].concat();
    let answer = runtime.call("kv", "put", &input).unwrap_or_else(|e| panic!("put {key}: {e}"));
    assert!(answer.is_empty(), "put answers nothing, got {answer:?}");
}

fn answer(runtime: &Runtime, method: &str, input: &[u8]) -> String {
    let answer = runtime.call("kv", method, input).unwrap_or_else(|e| panic!("{method}: {e}"));
    String::from_utf8(answer).expect("utf-8")
}

fn version(runtime: &Runtime) -> String {
    answer(runtime, "version", b"")
}

/// Asserts that `kv` holds exactly `expected`: as many keys, each with its value.
fn assert_holds(runtime: &Runtime, expected: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(answer(runtime, "len", b""), expected.len().to_string(), "the number of keys");
    for (key, value) in expected {
        let found = runtime.call("kv", "get", key.as_bytes());
        assert_eq!(found.as_ref().ok(), Some(value), "the value of {key}: {found:?}");
    }
}

/// Asserts that `kv` refuses `method` with `input`, with a message that contains `why`.
fn assert_refused(runtime: &Runtime, method: &str, input: &[u8], why: &str) {
    match runtime.call("kv", method, input) {
        Err(Error::Refused { service, method: refused, message, .. }) => {
            assert_eq!((service.as_str(), refused.as_str()), ("kv", method));
            assert!(message.contains(why), "{method} {input:?}: {message:?} does not say {why:?}");
        }
        other => panic!("{method} {input:?}: expected a refusal, got {other:?}"),
    }
}

/// The user's story: 15 keys put in 1.0 are all in 1.1 after a swap, and what 1.1 changed
/// (5 keys more, 2 deleted, 1 overwritten) is all in 1.0 after the rollback.
#[test]
fn every_key_survives_a_swap_and_a_rollback_hands_the_changes_back() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Kv1_0).unwrap()).unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..15 {
        put(runtime, &key(i), &value(i));
        expected.insert(key(i), value(i));
    }
    assert_holds(runtime, &expected);

    let report = runtime.swap("kv", graft_tests::path(Fixture::Kv1_1).unwrap()).unwrap();
    assert_eq!((report.from.to_string(), report.to.to_string()), ("1.0.0".into(), "1.1.0".into()));
    assert_eq!(version(runtime), "1.1.0");
    assert_holds(runtime, &expected);

    for i in 15..20 {
        put(runtime, &key(i), &value(i));
        expected.insert(key(i), value(i));
    }
    for i in [3, 7] {
        assert_eq!(answer(runtime, "delete", key(i).as_bytes()), "1", "{} was there", key(i));
        expected.remove(&key(i));
    }
    assert_eq!(answer(runtime, "delete", key(3).as_bytes()), "0", "deleted already");
    put(runtime, &key(1), b"overwritten in 1.1");
    expected.insert(key(1), b"overwritten in 1.1".to_vec());
    assert_eq!(expected.len(), 18);
    assert_holds(runtime, &expected);

    let report = runtime.rollback("kv").unwrap();
    assert_eq!((report.from.to_string(), report.to.to_string()), ("1.1.0".into(), "1.0.0".into()));
    assert_eq!(version(runtime), "1.0.0");
    assert_holds(runtime, &expected);
    for i in [3, 7] {
        assert_refused(runtime, "get", key(i).as_bytes(), &format!("no key `{}`", key(i)));
    }
}

/// 1.1 migrates 1.0's format 1 (each entry counts as written once) and counts from there; 1.0
/// reads 1.1's format 2 on a rollback and hands back format 1, without the counts.
#[test]
fn format_1_migrates_to_format_2_and_format_2_rolls_back_to_1_0() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    let (v1, v2) =
        (graft_tests::path(Fixture::Kv1_0).unwrap(), graft_tests::path(Fixture::Kv1_1).unwrap());
    let format = |runtime: &Runtime| {
        runtime.service_status("kv").unwrap().current.expect("an instance").state_format
    };
    runtime.load_and_start(&v1).unwrap();
    assert_eq!(format(runtime), Some(1));
    put(runtime, "a", b"a1");
    put(runtime, "a", b"a2");
    put(runtime, "b", b"b1");
    assert_refused(runtime, "writes", b"a", "unknown method `writes`");

    runtime.swap("kv", &v2).unwrap();
    assert_eq!(format(runtime), Some(2));
    assert_eq!(answer(runtime, "writes", b"a"), "1", "format 1 carries no counts");
    assert_eq!(answer(runtime, "writes", b"b"), "1");
    put(runtime, "a", b"a3");
    put(runtime, "a", b"a4");
    assert_eq!(answer(runtime, "writes", b"a"), "3");
    assert_refused(runtime, "writes", b"c", "no key `c`");

    runtime.rollback("kv").unwrap();
    assert_eq!(version(runtime), "1.0.0");
    assert_eq!(runtime.call("kv", "get", b"a").unwrap(), b"a4");
    assert_eq!(runtime.call("kv", "get", b"b").unwrap(), b"b1");
    put(runtime, "a", b"a5");

    runtime.swap("kv", &v2).unwrap();
    assert_eq!(runtime.call("kv", "get", b"a").unwrap(), b"a5");
    assert_eq!(answer(runtime, "writes", b"a"), "1", "1.0 exported format 1 again");
}

/// Each malformed input is refused as such (never a failure, never a panic), and the service
/// goes on serving what it held, having stored nothing.
#[test]
fn malformed_input_is_refused_and_the_service_keeps_serving() {
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Kv1_0).unwrap()).unwrap();
    put(runtime, "kept", b"value");
    let cases: [(&str, &[u8], &str); 9] = [
        ("put", b"no zero byte", "invalid input: `put` takes the key, a 0 byte, then the value"),
        ("put", b"", "invalid input: `put` takes the key"),
        ("put", b"\0value", "invalid input: the key is empty"),
        ("put", b"\xff\xfekey\0value", "invalid input: the key is not UTF-8"),
        ("get", b"", "invalid input: the key is empty"),
        ("get", b"kept\0", "invalid input: the key holds a 0 byte"),
        ("delete", b"k\xc3", "invalid input: the key is not UTF-8"),
        ("get", b"absent", "no key `absent`"),
        ("frobnicate", b"kept", "unknown method `frobnicate`"),
    ];
    for (method, input, why) in cases {
        assert_refused(runtime, method, input, why);
        assert_eq!(runtime.state("kv").unwrap(), ServiceState::Running);
    }
    assert_holds(runtime, &BTreeMap::from([("kept".to_owned(), b"value".to_vec())]));
    put(runtime, "after", b"");
    assert_eq!(runtime.call("kv", "get", b"after").unwrap(), b"");
    assert_eq!(answer(runtime, "len", b""), "2");
}

/// Refusals are the callers' problem: a probation window that fails at the first failure
/// passes through a run of them, and the build stays.
#[test]
fn refusals_do_not_count_against_a_build_on_probation() {
    let window = ProbationPolicy {
        calls: 8,
        duration: Duration::from_secs(3600),
        max_failures: 0,
        max_failure_rate: 1.0,
        min_calls: u64::MAX,
    };
    let setup = Setup::with(Runtime::builder().probation(window).health_interval(None));
    let runtime = &setup.runtime;
    let events = runtime.subscribe();
    runtime.load_and_start(graft_tests::path(Fixture::Kv1_0).unwrap()).unwrap();
    put(runtime, "kept", b"value");
    let report = runtime.swap("kv", graft_tests::path(Fixture::Kv1_1).unwrap()).unwrap();
    // Seven refusals and one call that succeeds: the eighth call closes the window.
    for input in [&b"no zero byte"[..], b"\0empty key", b"\xffkey\0value"] {
        assert_refused(runtime, "put", input, "invalid input");
    }
    for input in [&b"absent"[..], b"", b"a\0b", b"\xc3"] {
        assert!(matches!(runtime.call("kv", "get", input), Err(Error::Refused { .. })));
    }
    assert_eq!(runtime.call("kv", "get", b"kept").unwrap(), b"value");
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let event = events.recv_deadline(deadline).expect("the window's verdict");
        match event.kind {
            EventKind::ProbationPassed { generation } => {
                assert_eq!(generation, report.generation);
                break;
            }
            EventKind::RolledBack { .. } | EventKind::RollbackRefused { .. } => {
                panic!("refusals failed the window: {event:?}")
            }
            _ => {}
        }
    }
    assert_eq!(version(runtime), "1.1.0");
    assert_holds(runtime, &BTreeMap::from([("kept".to_owned(), b"value".to_vec())]));
}

/// Keys and values the codec must carry: empty, 0 bytes, not UTF-8, a key that is not ASCII,
/// a large value, and many entries.
fn awkward_entries() -> BTreeMap<String, Vec<u8>> {
    let mut entries = BTreeMap::from([
        ("empty".to_owned(), Vec::new()),
        ("zeros".to_owned(), vec![0; 3]),
        ("clé ü ✓".to_owned(), vec![0xff, 0xfe, 0, 0x80]),
        ("large".to_owned(), (0..200_000u32).map(|i| (i % 251) as u8).collect()),
    ]);
    entries.extend((0..50).map(|i| (key(i), value(i))));
    entries
}

/// Each build's codec through the state directory: a shutdown saves the state, and a restore
/// in a new runtime brings every key back with its value (and 1.1's write counts).
#[test]
fn shutdown_saves_every_key_and_restore_brings_them_back() {
    for fixture in [Fixture::Kv1_0, Fixture::Kv1_1] {
        let state = tempfile::tempdir().unwrap();
        let expected = awkward_entries();
        {
            let setup = Setup::with(quiet().state_dir(state.path()));
            setup.runtime.load_and_start(graft_tests::path(fixture).unwrap()).unwrap();
            put(&setup.runtime, "empty", b"overwritten below");
            for (key, value) in &expected {
                put(&setup.runtime, key, value);
            }
            setup.runtime.shutdown().unwrap();
            assert_eq!(setup.runtime.state("kv").unwrap(), ServiceState::Stopped);
        }
        let setup = Setup::with(quiet().state_dir(state.path()));
        setup.runtime.restore().unwrap();
        assert_eq!(version(&setup.runtime), fixture.version());
        assert_holds(&setup.runtime, &expected);
        if fixture == Fixture::Kv1_1 {
            assert_eq!(answer(&setup.runtime, "writes", b"empty"), "2");
            assert_eq!(answer(&setup.runtime, "writes", b"large"), "1");
        }
    }
}

/// A host that shuts down on an uncommitted 1.1 saves format 2; it comes back on the committed
/// 1.0, which reads it.
#[test]
fn a_restore_on_the_committed_1_0_reads_the_format_2_state_of_1_1() {
    let state = tempfile::tempdir().unwrap();
    let mut expected = BTreeMap::new();
    {
        let setup = Setup::with(quiet().state_dir(state.path()));
        let runtime = &setup.runtime;
        runtime.load_and_start(graft_tests::path(Fixture::Kv1_0).unwrap()).unwrap();
        runtime.commit("kv").unwrap();
        for i in 0..10 {
            put(runtime, &key(i), &value(i));
            expected.insert(key(i), value(i));
        }
        runtime.swap("kv", graft_tests::path(Fixture::Kv1_1).unwrap()).unwrap();
        put(runtime, "new in 1.1", b"!");
        expected.insert("new in 1.1".to_owned(), b"!".to_vec());
        assert_eq!(answer(runtime, "delete", key(0).as_bytes()), "1");
        expected.remove(&key(0));
        runtime.shutdown().unwrap();
    }
    let setup = Setup::with(quiet().state_dir(state.path()));
    setup.runtime.restore().unwrap();
    assert_eq!(version(&setup.runtime), "1.0.0");
    assert_holds(&setup.runtime, &expected);
}

/// A state in format 1 or 2, as the header of `plugins/shared/kv.rs` describes them, written
/// here independently of the plugin's encoder.
fn encode(format: u32, entries: &[(&[u8], &[u8], u64)]) -> Vec<u8> {
    let mut bytes = (entries.len() as u32).to_le_bytes().to_vec();
    for (key, value, _) in entries {
        bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
        bytes.extend_from_slice(value);
    }
    if format == 2 {
        for (_, _, writes) in entries {
            bytes.extend_from_slice(&writes.to_le_bytes());
        }
    }
    bytes
}

/// A whole state file holding `state`, laid out as the runtime's state directory documents it
/// (`states/<service>.state`: magic, format, version, state, SHA-256 of what precedes it), so
/// that the state reaches the plugin as it is.
fn state_file(format: u32, version: &str, state: &[u8]) -> Vec<u8> {
    let mut bytes = b"graftst1".to_vec();
    bytes.extend_from_slice(&format.to_le_bytes());
    bytes.extend_from_slice(&(version.len() as u32).to_le_bytes());
    bytes.extend_from_slice(version.as_bytes());
    bytes.extend_from_slice(&(state.len() as u64).to_le_bytes());
    bytes.extend_from_slice(state);
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    bytes
}

/// The `StateRefused` a restore failed with, alone or in its batch: (version, format, own
/// format, message).
fn state_refusal(result: Result<BatchReport, Error>) -> (String, u32, u32, String) {
    let error = result.expect_err("the restore is refused");
    let refusal = |e: &Error| match e {
        Error::StateRefused { service, version, format, own_format, message }
            if service == "kv" =>
        {
            Some((version.to_string(), *format, *own_format, message.clone()))
        }
        _ => None,
    };
    let found = match &error {
        Error::Batch(report) => report.failures().find_map(|(_, e)| refusal(e)),
        other => refusal(other),
    };
    found.unwrap_or_else(|| panic!("expected StateRefused, got {error:?}"))
}

/// Every cut of a valid state and every kind of altered field reaches 1.1's `from_state`
/// (inside a state file with a valid checksum) and is refused as invalid, never a panic; so are
/// formats it does not know. The valid state is then restored, so the refusals were the
/// codec's.
#[test]
fn a_truncated_or_altered_state_is_refused_not_read_past_its_end() {
    let state = tempfile::tempdir().unwrap();
    {
        let setup = Setup::with(quiet().state_dir(state.path()));
        setup.runtime.load_and_start(graft_tests::path(Fixture::Kv1_1).unwrap()).unwrap();
        put(&setup.runtime, "alpha", b"one");
        put(&setup.runtime, "beta", b"two");
        setup.runtime.shutdown().unwrap();
    }
    let file = state.path().join("states/kv.state");
    let good = encode(2, &[(b"alpha", b"one", 1), (b"beta", b"two", 1)]);
    let saved = std::fs::read(&file).unwrap();
    assert_eq!(saved, state_file(2, "1.1.0", &good), "the file the runtime saved, rebuilt");

    let invalid = "invalid input: state format";
    let mut cases: Vec<(u32, Vec<u8>, String)> =
        (0..good.len()).map(|cut| (2, good[..cut].to_vec(), invalid.to_owned())).collect();
    let altered: [(u32, Vec<u8>, &str); 11] = [
        (2, [&good[..], &[0]].concat(), "1 bytes after its last field"),
        (1, good.clone(), "16 bytes after its last field"),
        (2, u32::MAX.to_le_bytes().to_vec(), "4294967295 entries cannot fit in 4 bytes"),
        (
            2,
            [&1u32.to_le_bytes()[..], &u32::MAX.to_le_bytes(), &[0; 8]].concat(),
            "ends inside a key",
        ),
        (
            2,
            encode(2, &[(b"beta", b"two", 1), (b"alpha", b"one", 1)]),
            "key `alpha` is out of order",
        ),
        (
            2,
            encode(2, &[(b"alpha", b"one", 1), (b"alpha", b"two", 1)]),
            "key `alpha` is out of order or repeated",
        ),
        (2, encode(2, &[(b"", b"one", 1)]), "entry 0: the key is empty"),
        (2, encode(2, &[(b"a\0b", b"one", 1)]), "entry 0: the key holds a 0 byte"),
        (
            2,
            encode(2, &[(b"alpha", b"one", 1), (b"\xff", b"two", 1)]),
            "entry 1: the key is not UTF-8",
        ),
        (2, encode(2, &[(b"alpha", b"one", 0)]), "entry 0: key `alpha` was never written"),
        (
            1,
            encode(1, &[(b"alpha", &[0; 4], 1)])[..19].to_vec(),
            "ends inside a value (4 bytes, 2 left)",
        ),
    ];
    cases.extend(altered.into_iter().map(|(format, state, why)| (format, state, why.to_owned())));
    for format in [0, 3] {
        let why = format!("state format {format} is not one this build reads (its own is 2)");
        cases.push((format, good.clone(), why));
    }
    for (format, bytes, why) in cases {
        std::fs::write(&file, state_file(format, "1.1.0", &bytes)).unwrap();
        let setup = Setup::with(quiet().state_dir(state.path()));
        let refusal = state_refusal(setup.runtime.restore());
        let (version, refused_format, own_format, message) = &refusal;
        assert_eq!((version.as_str(), *refused_format, *own_format), ("1.1.0", format, 2));
        assert!(
            message.contains(&why),
            "format {format}, {bytes:?}: {message:?} does not say {why:?}"
        );
        assert_ne!(setup.runtime.state("kv").unwrap(), ServiceState::Running);
    }

    std::fs::write(&file, &saved).unwrap();
    let setup = Setup::with(quiet().state_dir(state.path()));
    setup.runtime.restore().unwrap();
    let expected = BTreeMap::from([
        ("alpha".to_owned(), b"one".to_vec()),
        ("beta".to_owned(), b"two".to_vec()),
    ]);
    assert_holds(&setup.runtime, &expected);
}
