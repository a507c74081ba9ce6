//! Property tests of the export glue `#[interface]` generates, without loading a plugin.
//!
//! Whatever bytes arrive as a call's arguments, `Serve::dispatch` either answers or refuses them
//! with a typed refusal (`ErrorKind::Refusal`, as `Error::invalid_input` and
//! `Error::unknown_method` make it); it never panics, and a refused call never reaches the
//! method. Valid arguments, encoded with postcard as the generated client encodes them, reach the
//! method exactly, and its answer decodes with `decode_answer` as the method's return type.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, PoisonError};

use graft_plugin_api::abi::WriteSink;
use graft_plugin_api::typed::{Interface, Method, Serve, Transport, decode_answer, method_id};
use graft_plugin_api::{ClientError, Error, ErrorKind, Output};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde::{Deserialize, Serialize};
use serde_bytes::Bytes;

/// An owned serde struct crossing as a parameter and in an answer: strings, a sequence of
/// strings, bytes, a `bool` and a `char` (both of which have invalid encodings), and an enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    payload: Vec<u8>,
    flag: bool,
    initial: char,
    shape: Shape,
}

/// An enum with unit, newtype and struct variants (an unknown discriminant is malformed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Point,
    Circle(u32),
    Rect { w: u16, h: i16 },
}

/// The service's own error, the `Err` of some methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum ProbeError {
    Odd(u64),
    Empty,
}

/// The interface under test: every way a parameter crosses (`&str` and `&[u8]` borrowed,
/// `Vec<u8>`, a plain integer, an owned struct, a struct by reference, an `Option<String>`, several
/// at once, none) and a variety of answers (`Result`s, `Option`s, byte vectors, `()`).
#[graft_plugin_api::interface(name = "probe", version = "1.0.0")]
trait Probe {
    /// The characters of `s`, reversed.
    fn text(&self, s: &str) -> String;
    /// The bytes, reversed.
    fn slice(&self, bytes: &[u8]) -> Vec<u8>;
    /// The bytes, unless there are none.
    fn owned(&self, bytes: Vec<u8>) -> Option<Vec<u8>>;
    /// Half of `n`, which must be even.
    fn number(&self, n: u64) -> Result<u64, ProbeError>;
    /// The record with the next id, if it has a name.
    fn record(&self, record: Record) -> Result<Record, ProbeError>;
    /// The record's flag.
    fn by_ref(&self, record: &Record) -> bool;
    /// The note, exclaimed.
    fn maybe(&self, note: Option<String>) -> Option<String>;
    /// Everything, concatenated, if the key is not empty.
    fn mixed(
        &self,
        key: &str,
        value: &[u8],
        count: u64,
        note: Option<String>,
    ) -> Result<Vec<u8>, ProbeError>;
    /// Nothing at all.
    fn nothing(&self);
}

/// Every method's name, in declaration order.
const NAMES: [&str; 9] =
    ["text", "slice", "owned", "number", "record", "by_ref", "maybe", "mixed", "nothing"];

/// A call as the method received it (or as a test means to make it): its arguments, owned.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Text(String),
    Slice(Vec<u8>),
    Owned(Vec<u8>),
    Number(u64),
    Record(Record),
    ByRef(Record),
    Maybe(Option<String>),
    Mixed(String, Vec<u8>, u64, Option<String>),
    Nothing,
}

impl Call {
    fn method(&self) -> &'static str {
        match self {
            Call::Text(_) => "text",
            Call::Slice(_) => "slice",
            Call::Owned(_) => "owned",
            Call::Number(_) => "number",
            Call::Record(_) => "record",
            Call::ByRef(_) => "by_ref",
            Call::Maybe(_) => "maybe",
            Call::Mixed(..) => "mixed",
            Call::Nothing => "nothing",
        }
    }

    fn id(&self) -> u32 {
        id(self.method())
    }

    /// The arguments encoded as the generated client encodes them: a tuple of references, byte
    /// buffers as `serde_bytes::Bytes`.
    fn encode(&self) -> Vec<u8> {
        let encoded = match self {
            Call::Text(s) => postcard::to_allocvec(&(&s.as_str(),)),
            Call::Slice(b) | Call::Owned(b) => postcard::to_allocvec(&(Bytes::new(b),)),
            Call::Number(n) => postcard::to_allocvec(&(n,)),
            Call::Record(r) | Call::ByRef(r) => postcard::to_allocvec(&(r,)),
            Call::Maybe(note) => postcard::to_allocvec(&(note,)),
            Call::Mixed(key, value, count, note) => {
                postcard::to_allocvec(&(&key.as_str(), Bytes::new(value), count, note))
            }
            Call::Nothing => postcard::to_allocvec(&()),
        };
        encoded.expect("valid arguments encode")
    }

    /// Checks that `answer` decodes, as the client decodes it, to what the method answers to
    /// this call.
    fn check_answer(&self, answer: &[u8]) -> Result<(), TestCaseError> {
        let method = self.method();
        match self {
            Call::Text(s) => prop_assert_eq!(decode::<String>(method, answer)?, text(s)),
            Call::Slice(b) => prop_assert_eq!(decode::<Vec<u8>>(method, answer)?, slice(b)),
            Call::Owned(b) => {
                prop_assert_eq!(decode::<Option<Vec<u8>>>(method, answer)?, owned(b.clone()))
            }
            Call::Number(n) => {
                prop_assert_eq!(decode::<Result<u64, ProbeError>>(method, answer)?, number(*n))
            }
            Call::Record(r) => prop_assert_eq!(
                decode::<Result<Record, ProbeError>>(method, answer)?,
                record(r.clone())
            ),
            Call::ByRef(r) => prop_assert_eq!(decode::<bool>(method, answer)?, r.flag),
            Call::Maybe(note) => {
                prop_assert_eq!(decode::<Option<String>>(method, answer)?, maybe(note.clone()))
            }
            Call::Mixed(key, value, count, note) => prop_assert_eq!(
                decode::<Result<Vec<u8>, ProbeError>>(method, answer)?,
                mixed(key, value, *count, note.clone())
            ),
            Call::Nothing => decode::<()>(method, answer)?,
        }
        Ok(())
    }
}

/// The id of the method `name`, from the interface's description.
fn id(name: &str) -> u32 {
    method_id(<dyn Probe as Interface>::METHODS, name).expect("a method of the interface")
}

/// Decodes an answer with the client's decoder.
fn decode<T: serde::de::DeserializeOwned>(
    method: &'static str,
    answer: &[u8],
) -> Result<T, TestCaseError> {
    decode_answer::<T, (), ()>(method, answer).map_err(|e| {
        TestCaseError::fail(format!("the answer of `{method}` does not decode: {e:?}"))
    })
}

/// Checks that `answer` decodes as the return type of `method`, whatever its value.
fn check_answer_type(method: &'static str, answer: &[u8]) -> Result<(), TestCaseError> {
    match method {
        "text" => decode::<String>(method, answer).map(drop),
        "slice" => decode::<Vec<u8>>(method, answer).map(drop),
        "owned" => decode::<Option<Vec<u8>>>(method, answer).map(drop),
        "number" => decode::<Result<u64, ProbeError>>(method, answer).map(drop),
        "record" => decode::<Result<Record, ProbeError>>(method, answer).map(drop),
        "by_ref" => decode::<bool>(method, answer).map(drop),
        "maybe" => decode::<Option<String>>(method, answer).map(drop),
        "mixed" => decode::<Result<Vec<u8>, ProbeError>>(method, answer).map(drop),
        "nothing" => decode::<()>(method, answer),
        other => Err(TestCaseError::fail(format!("no method `{other}`"))),
    }
}

// What each method answers, as plain functions so that the tests can predict it.

fn text(s: &str) -> String {
    s.chars().rev().collect()
}

fn slice(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().rev().copied().collect()
}

fn owned(bytes: Vec<u8>) -> Option<Vec<u8>> {
    (!bytes.is_empty()).then_some(bytes)
}

fn number(n: u64) -> Result<u64, ProbeError> {
    if n % 2 == 1 { Err(ProbeError::Odd(n)) } else { Ok(n / 2) }
}

fn record(record: Record) -> Result<Record, ProbeError> {
    if record.name.is_empty() {
        return Err(ProbeError::Empty);
    }
    Ok(Record { id: record.id.wrapping_add(1), ..record })
}

fn maybe(note: Option<String>) -> Option<String> {
    note.map(|note| note + "!")
}

fn mixed(key: &str, value: &[u8], count: u64, note: Option<String>) -> Result<Vec<u8>, ProbeError> {
    if key.is_empty() {
        return Err(ProbeError::Empty);
    }
    let mut out = key.as_bytes().to_vec();
    out.extend_from_slice(value);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(note.unwrap_or_default().as_bytes());
    Ok(out)
}

/// The service: records every call it receives.
#[derive(Debug, Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
}

impl Recorder {
    fn record(&self, call: Call) {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    }

    /// The calls received since the last time, oldest first.
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Probe for Recorder {
    fn text(&self, s: &str) -> String {
        self.record(Call::Text(s.to_owned()));
        text(s)
    }
    fn slice(&self, bytes: &[u8]) -> Vec<u8> {
        self.record(Call::Slice(bytes.to_vec()));
        slice(bytes)
    }
    fn owned(&self, bytes: Vec<u8>) -> Option<Vec<u8>> {
        self.record(Call::Owned(bytes.clone()));
        owned(bytes)
    }
    fn number(&self, n: u64) -> Result<u64, ProbeError> {
        self.record(Call::Number(n));
        number(n)
    }
    fn record(&self, r: Record) -> Result<Record, ProbeError> {
        self.record(Call::Record(r.clone()));
        record(r)
    }
    fn by_ref(&self, r: &Record) -> bool {
        self.record(Call::ByRef(r.clone()));
        r.flag
    }
    fn maybe(&self, note: Option<String>) -> Option<String> {
        self.record(Call::Maybe(note.clone()));
        maybe(note)
    }
    fn mixed(
        &self,
        key: &str,
        value: &[u8],
        count: u64,
        note: Option<String>,
    ) -> Result<Vec<u8>, ProbeError> {
        self.record(Call::Mixed(key.to_owned(), value.to_vec(), count, note.clone()));
        mixed(key, value, count, note)
    }
    fn nothing(&self) {
        self.record(Call::Nothing);
    }
}

/// Runs the glue as the export shim does: `method` with `input`, the answer appended to a new
/// vector. A panic is caught and comes back as `Err` with its message.
fn dispatch(
    recorder: &Recorder,
    method: u32,
    input: &[u8],
) -> Result<(Result<(), Error>, Vec<u8>), String> {
    let mut answer = Vec::new();
    let outcome = {
        let sink = WriteSink::for_vec(&mut answer);
        // SAFETY: the sink appends to `answer`, which is neither moved, dropped nor used
        // otherwise until `sink` and `output` go out of scope at the end of this block; the
        // sink's `write` is `for_vec`'s, safe with its own `ctx` and any valid slice.
        let mut output = unsafe { Output::from_sink(&sink) };
        catch_unwind(AssertUnwindSafe(|| {
            <dyn Probe as Serve<Recorder>>::dispatch(recorder, method, input, &mut output)
        }))
    };
    match outcome {
        Ok(result) => Ok((result, answer)),
        Err(payload) => Err(payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned())),
    }
}

/// Dispatches `input` (arbitrary, perhaps malformed) to `method` and checks that the glue did
/// not panic and either answered, with one call to the method and an answer of its return
/// type, or refused, with `ErrorKind::Refusal`, without calling the method or writing anything.
/// Returns whether it answered.
fn check_any(
    recorder: &Recorder,
    method: &'static str,
    input: &[u8],
) -> Result<bool, TestCaseError> {
    let (result, answer) = dispatch(recorder, id(method), input).map_err(|panic| {
        TestCaseError::fail(format!("`{method}` panicked on input {input:02x?}: {panic}"))
    })?;
    let calls = recorder.take();
    match result {
        Ok(()) => {
            prop_assert_eq!(
                calls.len(),
                1,
                "`{}` answered {:02x?} without one call",
                method,
                input
            );
            prop_assert_eq!(calls[0].method(), method, "the call reached another method");
            check_answer_type(method, &answer)?;
            Ok(true)
        }
        Err(error) => {
            prop_assert_eq!(
                error.kind(),
                ErrorKind::Refusal,
                "`{}` failed instead of refusing {:02x?}: {}",
                method,
                input,
                error
            );
            prop_assert!(
                error.message().starts_with("invalid input: ")
                    && error.message().contains(&format!("`{method}`")),
                "the refusal does not say the input of `{}` is invalid: {}",
                method,
                error
            );
            prop_assert!(calls.is_empty(), "refused input reached the method: {:?}", calls);
            prop_assert!(answer.is_empty(), "a refusal wrote an answer: {:02x?}", answer);
            Ok(false)
        }
    }
}

/// Checks that malformed `input` is refused for `method`.
fn check_refused(
    recorder: &Recorder,
    method: &'static str,
    input: &[u8],
) -> Result<(), TestCaseError> {
    let answered = check_any(recorder, method, input)?;
    prop_assert!(!answered, "`{}` accepted malformed input {:02x?}", method, input);
    Ok(())
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Point),
        any::<u32>().prop_map(Shape::Circle),
        (any::<u16>(), any::<i16>()).prop_map(|(w, h)| Shape::Rect { w, h }),
    ]
}

fn record_value() -> impl Strategy<Value = Record> {
    (
        any::<u64>(),
        any::<String>(),
        vec(any::<String>(), 0..4),
        vec(any::<u8>(), 0..32),
        any::<bool>(),
        any::<char>(),
        shape(),
    )
        .prop_map(|(id, name, tags, payload, flag, initial, shape)| Record {
            id,
            name,
            tags,
            payload,
            flag,
            initial,
            shape,
        })
}

/// Any valid call, with arguments across their range (empty strings and buffers included,
/// integers of every varint length).
fn call() -> impl Strategy<Value = Call> {
    let bytes = || vec(any::<u8>(), 0..64);
    let number = || prop_oneof![any::<u64>(), 0..300u64, Just(u64::MAX)];
    prop_oneof![
        any::<String>().prop_map(Call::Text),
        bytes().prop_map(Call::Slice),
        bytes().prop_map(Call::Owned),
        number().prop_map(Call::Number),
        record_value().prop_map(Call::Record),
        record_value().prop_map(Call::ByRef),
        any::<Option<String>>().prop_map(Call::Maybe),
        (any::<String>(), bytes(), number(), any::<Option<String>>())
            .prop_map(|(k, v, c, n)| Call::Mixed(k, v, c, n)),
        Just(Call::Nothing),
    ]
}

fn config(cases: u32) -> Config {
    // No regression files: a failure prints its minimal input, and the tests write nothing
    // into the source tree.
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// A generated client that calls the glue directly, as the host's handle would through the ABI.
#[derive(Debug)]
struct Loopback<'a>(&'a Recorder);

impl Transport for Loopback<'_> {
    type Error = Error;

    fn call_method(&self, method: Method, input: &[u8], output: &mut Vec<u8>) -> Result<(), Error> {
        let sink = WriteSink::for_vec(output);
        // SAFETY: `output` is used only through the sink until `out` and `sink` are dropped at
        // the end of this function; the sink's `write` is `for_vec`'s.
        let mut out = unsafe { Output::from_sink(&sink) };
        <dyn Probe as Serve<Recorder>>::dispatch(self.0, method.id, input, &mut out)
    }
}

#[test]
fn the_interface_describes_every_method() {
    let methods = <dyn Probe as Interface>::METHODS;
    assert_eq!(methods.len(), NAMES.len());
    for (spec, name) in methods.iter().zip(NAMES) {
        assert_eq!(spec.id, id(name), "`{name}` is described in declaration order");
        assert_eq!(spec.id, graft_plugin_api::typed::fnv1a_32(name.as_bytes()));
    }
    assert_eq!(<dyn Probe as Interface>::NAME, "probe");
    assert_eq!(<dyn Probe as Interface>::VERSION, "1.0.0");
}

#[test]
fn empty_input_is_refused_by_every_method_with_parameters() {
    let recorder = Recorder::default();
    for name in NAMES {
        let (result, answer) = dispatch(&recorder, id(name), &[]).expect("no panic");
        if name == "nothing" {
            // `()` encodes as nothing: empty input is the valid call.
            result.expect("`nothing` takes no arguments");
            assert_eq!(recorder.take(), vec![Call::Nothing]);
            assert!(answer.is_empty(), "`()` encodes as nothing");
            continue;
        }
        let error = result.expect_err(name);
        assert_eq!(error.kind(), ErrorKind::Refusal, "{name}: {error}");
        assert!(error.message().contains(&format!("`{name}`")), "{error}");
        assert!(recorder.take().is_empty());
    }
}

#[test]
fn specific_malformed_inputs_are_refused() {
    let recorder = Recorder::default();
    let refused = |method: &'static str, input: &[u8]| {
        check_refused(&recorder, method, input).unwrap_or_else(|e| panic!("{e}"))
    };
    // A string whose bytes are not UTF-8, where a `&str` and a `String` are expected.
    refused("text", &[2, 0xff, 0xfe]);
    refused("mixed", &[2, 0xc3, 0x28, 0, 0, 0]);
    refused("maybe", &[1, 1, 0x80]);
    // Lengths past the end of the input (the last one `u64::MAX`), and one whose varint is
    // longer than any `u64`.
    refused("slice", &[5, 1, 2]);
    refused("owned", &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    refused("text", &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    // A varint longer than a `u64` allows, and one cut short.
    refused("number", &[0x80; 11]);
    refused("number", &[0x80]);
    // An `Option` tag that is neither 0 nor 1.
    refused("maybe", &[2]);
    // A `bool` that is neither 0 nor 1 (the last field of a `Record` before `initial`): a
    // valid record with its flag byte replaced.
    // The record ends with its flag, its initial (a `char` crosses as a string: 'a' is [1, 0x61])
    // and its shape (`Point` is [0]).
    let valid = Call::ByRef(sample_record()).encode();
    assert_eq!(valid[valid.len() - 4..], [1, 1, 0x61, 0]);
    let mut input = valid.clone();
    *input.iter_mut().rev().nth(3).unwrap() = 2;
    refused("by_ref", &input);
    // A `char` that is a surrogate, and one that is two characters.
    for initial in [&[3, 0xed, 0xa0, 0x80][..], &[2, b'a', b'b'], &[0]] {
        let mut input = valid.clone();
        let at = input.len() - 3;
        input.splice(at..at + 2, initial.iter().copied());
        refused("record", &input);
        refused("by_ref", &input);
    }
    // An enum variant that does not exist.
    let mut input = Call::Record(sample_record()).encode();
    *input.last_mut().unwrap() = 3;
    refused("record", &input);
    // Stray bytes after valid arguments, also after a method that takes none.
    refused("nothing", &[0]);
    let mut input = Call::Number(7).encode();
    input.push(0);
    refused("number", &input);
    // A `u64` where a string is expected.
    refused("text", &postcard::to_allocvec(&(u64::MAX,)).unwrap());
}

fn sample_record() -> Record {
    Record {
        id: 1,
        name: "ann".into(),
        tags: vec!["x".into()],
        payload: vec![1, 2],
        flag: true,
        initial: 'a',
        shape: Shape::Point,
    }
}

#[test]
fn an_unknown_method_id_is_refused() {
    let recorder = Recorder::default();
    let known: Vec<u32> = NAMES.iter().map(|name| id(name)).collect();
    for method in
        [0, 1, u32::MAX, 0xdead_beef, id("text") ^ 1, graft_plugin_api::typed::fnv1a_32(b"get")]
    {
        assert!(!known.contains(&method));
        let (result, answer) = dispatch(&recorder, method, &[]).expect("no panic");
        let error = result.expect_err("no such method");
        assert_eq!(error.kind(), ErrorKind::Refusal, "{error}");
        assert!(error.message().starts_with("unknown method"), "{error}");
        assert!(answer.is_empty() && recorder.take().is_empty());
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary bytes, for every method.
    #[test]
    fn arbitrary_bytes_are_answered_or_refused(input in vec(any::<u8>(), 0..96)) {
        let recorder = Recorder::default();
        for name in NAMES {
            check_any(&recorder, name, &input)?;
        }
    }

    /// Short inputs, which reach the decoders' edge cases (empty lengths, tags, small varints)
    /// far more often than long random ones.
    #[test]
    fn short_inputs_are_answered_or_refused(input in vec(any::<u8>(), 0..6)) {
        let recorder = Recorder::default();
        for name in NAMES {
            check_any(&recorder, name, &input)?;
        }
    }

    /// Valid arguments encoded as the client encodes them reach the method exactly, and the
    /// answer decodes to what the method returned.
    #[test]
    fn valid_arguments_round_trip(call in call()) {
        let recorder = Recorder::default();
        let input = call.encode();
        let (result, answer) = dispatch(&recorder, call.id(), &input)
            .map_err(|panic| TestCaseError::fail(format!("panicked: {panic}")))?;
        prop_assert!(result.is_ok(), "{:?} refused: {:?}", call, result);
        prop_assert_eq!(recorder.take(), vec![call.clone()]);
        call.check_answer(&answer)?;
    }

    /// Every strict prefix of a valid encoding is refused: postcard is self-delimiting, so a
    /// prefix that decoded would make the whole encoding one with stray bytes.
    #[test]
    fn truncated_arguments_are_refused(call in call(), cut in any::<prop::sample::Index>()) {
        let input = call.encode();
        prop_assume!(!input.is_empty());
        let recorder = Recorder::default();
        check_refused(&recorder, call.method(), &input[..cut.index(input.len())])?;
    }

    /// Bytes after valid arguments are refused, naming the stray bytes.
    #[test]
    fn trailing_bytes_are_refused(call in call(), extra in vec(any::<u8>(), 1..8)) {
        let mut input = call.encode();
        input.extend_from_slice(&extra);
        let recorder = Recorder::default();
        check_refused(&recorder, call.method(), &input)?;
        let (result, _) = dispatch(&recorder, call.id(), &input)
            .map_err(|panic| TestCaseError::fail(format!("panicked: {panic}")))?;
        let error = result.unwrap_err();
        prop_assert!(
            error.message().contains(&format!("followed by {} stray bytes", extra.len())),
            "{}", error
        );
    }

    /// A valid encoding with bits flipped is answered or refused, never a panic.
    #[test]
    fn flipped_bits_are_answered_or_refused(
        call in call(),
        flips in vec((any::<prop::sample::Index>(), 0..8u8), 1..4),
    ) {
        let mut input = call.encode();
        prop_assume!(!input.is_empty());
        for (at, bit) in &flips {
            let at = at.index(input.len());
            input[at] ^= 1 << bit;
        }
        let recorder = Recorder::default();
        check_any(&recorder, call.method(), &input)?;
    }

    /// A valid encoding of one method's arguments sent to another method (the wrong types) is
    /// answered or refused, never a panic.
    #[test]
    fn arguments_of_another_method_are_answered_or_refused(
        call in call(),
        method in prop::sample::select(NAMES.to_vec()),
    ) {
        let recorder = Recorder::default();
        check_any(&recorder, method, &call.encode())?;
    }

    /// The generated client, over a transport that runs the glue directly: its encoding and
    /// the glue's decoding agree on every call, and so do the answers.
    #[test]
    fn the_generated_client_round_trips(call in call()) {
        let recorder = Recorder::default();
        let client = ProbeClient::new(Loopback(&recorder));
        type Outcome<T> = Result<T, ClientError<ProbeError, Error>>;
        fn service<T>(answer: Result<T, ProbeError>) -> Outcome<T> {
            answer.map_err(ClientError::Service)
        }
        match &call {
            Call::Text(s) => prop_assert_eq!(client.text(s), Ok(text(s))),
            Call::Slice(b) => prop_assert_eq!(client.slice(b), Ok(slice(b))),
            Call::Owned(b) => prop_assert_eq!(client.owned(b.clone()), Ok(owned(b.clone()))),
            Call::Number(n) => prop_assert_eq!(client.number(*n), service(number(*n))),
            Call::Record(r) => {
                prop_assert_eq!(client.record(r.clone()), service(record(r.clone())))
            }
            Call::ByRef(r) => prop_assert_eq!(client.by_ref(r), Ok(r.flag)),
            Call::Maybe(n) => prop_assert_eq!(client.maybe(n.clone()), Ok(maybe(n.clone()))),
            Call::Mixed(k, v, c, n) => prop_assert_eq!(
                client.mixed(k, v, *c, n.clone()),
                service(mixed(k, v, *c, n.clone()))
            ),
            Call::Nothing => prop_assert_eq!(client.nothing(), Ok(())),
        }
        prop_assert_eq!(recorder.take(), vec![call]);
    }
}

/// A recursive type in an interface: postcard decodes it by recursion, so without a limit a
/// few kilobytes of input would overflow the stack and abort the process.
mod recursive {
    use graft_plugin_api::typed::{MAX_DEPTH, Serve};
    use graft_plugin_api::{ErrorKind, Output, abi::WriteSink};

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    pub enum Expr {
        Lit(u64),
        Neg(Box<Expr>),
    }

    #[graft_plugin_api::interface(name = "calc", version = "1.0.0")]
    pub trait Calc {
        fn depth(&self, expr: Expr) -> u32;
    }

    pub struct Calculator;

    impl Calc for Calculator {
        fn depth(&self, expr: Expr) -> u32 {
            let (mut depth, mut at) = (0, &expr);
            while let Expr::Neg(inner) = at {
                depth += 1;
                at = inner;
            }
            depth
        }
    }

    /// `Neg` nested `n` times around `Lit(0)`, encoded: one variant tag per level.
    fn nested(n: usize) -> Vec<u8> {
        let mut input = vec![1u8; n];
        input.extend([0, 0]);
        input
    }

    fn dispatch(input: &[u8]) -> Result<Vec<u8>, graft_plugin_api::Error> {
        let id = <dyn Calc as graft_plugin_api::typed::Interface>::METHODS[0].id;
        let mut answer = Vec::new();
        {
            let sink = WriteSink::for_vec(&mut answer);
            // SAFETY: the sink's vector is neither moved nor used until the block ends.
            let mut output = unsafe { Output::from_sink(&sink) };
            <dyn Calc as Serve<Calculator>>::dispatch(&Calculator, id, input, &mut output)?;
        }
        Ok(answer)
    }

    #[test]
    fn input_nested_deeper_than_the_limit_is_refused_instead_of_overflowing_the_stack() {
        // On a thread of a small stack, so that an unbounded recursion would surely overflow.
        std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(|| {
                // Each `Neg` is two levels (the enum and the box's newtype variant): the deepest
                // accepted is just under the limit.
                let ok = dispatch(&nested(MAX_DEPTH as usize / 2 - 1)).expect("within the limit");
                let depth: u32 = postcard::from_bytes(&ok).expect("an answer");
                assert_eq!(depth, MAX_DEPTH / 2 - 1);
                for n in [MAX_DEPTH as usize, 10_000, 1_000_000] {
                    let error = dispatch(&nested(n)).expect_err("too deep");
                    assert_eq!(error.kind(), ErrorKind::Refusal);
                    assert!(error.message().contains("nested deeper than"), "{}", error.message());
                }
            })
            .expect("thread")
            .join()
            .expect("no panic, no overflow");
    }
}
