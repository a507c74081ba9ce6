//! Typed state: a serde state type with its format number, encoded by the glue, and an older
//! format migrated by a plain function.

use std::sync::atomic::{AtomicU64, Ordering};

use graft_plugin_api::abi::WriteSink;
use graft_plugin_api::typed::{StateFormat, TypedState, decode_state};
use graft_plugin_api::{Error, ErrorKind, Host, Output, Service, Stateful};

/// Format 1: the bare count.
#[derive(serde::Serialize, serde::Deserialize)]
struct CountV1(u64);

/// Format 2: the count and the handovers.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct CountV2 {
    count: u64,
    handovers: u64,
}

impl StateFormat for CountV2 {
    const FORMAT: u32 = 2;
}

struct Counter {
    count: AtomicU64,
    handovers: u64,
}

impl Service for Counter {
    fn create(_host: Host) -> Result<Self, Error> {
        Ok(Counter { count: AtomicU64::new(0), handovers: 0 })
    }
}

impl TypedState for Counter {
    type State = CountV2;

    fn save(&self) -> Result<CountV2, Error> {
        Ok(CountV2 { count: self.count.load(Ordering::SeqCst), handovers: self.handovers })
    }

    fn restore(_host: Host, state: CountV2) -> Result<Self, Error> {
        Ok(Counter { count: AtomicU64::new(state.count), handovers: state.handovers + 1 })
    }

    fn migrate(format: u32, bytes: &[u8]) -> Result<CountV2, Error> {
        match format {
            1 => Ok(CountV2 { count: decode_state::<CountV1>(bytes)?.0, handovers: 0 }),
            _ => Err(Error::unknown_state_format(format, 2)),
        }
    }
}

fn export(counter: &Counter) -> Vec<u8> {
    let mut state = Vec::new();
    {
        let sink = WriteSink::for_vec(&mut state);
        // SAFETY: the sink's vector is neither moved nor used until the block ends.
        let mut output = unsafe { Output::from_sink(&sink) };
        counter.export_state(&mut output).expect("export");
    }
    state
}

#[test]
fn the_state_crosses_in_its_own_format_and_an_older_one_is_migrated() {
    assert_eq!(<Counter as Stateful>::STATE_FORMAT, 2);
    let counter = Counter { count: AtomicU64::new(41), handovers: 3 };
    let state = export(&counter);
    assert_eq!(decode_state::<CountV2>(&state).unwrap(), CountV2 { count: 41, handovers: 3 });
    let next = Counter::from_state(Host::detached(), 2, &state).expect("import");
    assert_eq!((next.count.load(Ordering::SeqCst), next.handovers), (41, 4));

    let old = postcard::to_allocvec(&CountV1(7)).unwrap();
    let migrated = Counter::from_state(Host::detached(), 1, &old).expect("migrated");
    assert_eq!((migrated.count.load(Ordering::SeqCst), migrated.handovers), (7, 1));
}

#[test]
fn an_unknown_format_or_a_malformed_state_is_refused() {
    let refused = Counter::from_state(Host::detached(), 9, &[]).err().expect("refused");
    assert_eq!(refused.kind(), ErrorKind::Refusal);
    let truncated = Counter::from_state(Host::detached(), 2, &[5]).err().expect("refused");
    assert_eq!(truncated.kind(), ErrorKind::Refusal);
    assert!(truncated.message().contains("does not decode"), "{}", truncated.message());
}
