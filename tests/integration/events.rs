//! The runtime's `tracing` events, and plugin log lines bridged into the host's subscriber.
//!
//! The recorder is installed as the global subscriber, once: a thread-local `with_default`
//! would race with the tests running in parallel on other threads, which can make `tracing`
//! cache a callsite as uninteresting before this test's subscriber exists (seen in CI: the
//! first events of a run went missing). It records only events emitted on threads that asked
//! for it, so other tests' events do not mix in.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use graft_tests::Fixture;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

use super::Setup;

/// One recorded event: its target, message and the `service` and `version` fields.
#[derive(Debug, Clone, Default)]
struct Seen {
    target: String,
    message: String,
    service: String,
    version: String,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(false) };
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !RECORDING.with(Cell::get) {
            return;
        }
        struct Fields<'a>(&'a mut Seen);
        impl Visit for Fields<'_> {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                let slot = match field.name() {
                    "message" => &mut self.0.message,
                    "service" => &mut self.0.service,
                    "version" | "from" => &mut self.0.version,
                    _ => return,
                };
                slot.clear();
                let _ = write!(slot, "{value:?}");
            }
            fn record_str(&mut self, field: &Field, value: &str) {
                match field.name() {
                    "service" => self.0.service = value.to_owned(),
                    "version" | "from" => self.0.version = value.to_owned(),
                    "message" => self.0.message = value.to_owned(),
                    _ => {}
                }
            }
        }
        let mut seen = Seen { target: event.metadata().target().to_owned(), ..Seen::default() };
        event.record(&mut Fields(&mut seen));
        self.0.lock().unwrap().push(seen);
    }
}

impl Recorder {
    /// The process-wide recorder, installed as the global subscriber on first use.
    fn global() -> &'static Recorder {
        static RECORDER: OnceLock<Recorder> = OnceLock::new();
        RECORDER.get_or_init(|| {
            let recorder = Recorder::default();
            let subscriber = tracing_subscriber::registry().with(recorder.clone());
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber");
            recorder
        })
    }

    /// Records the events `run` emits on this thread.
    fn record(run: impl FnOnce()) -> Vec<Seen> {
        let recorder = Recorder::global();
        recorder.0.lock().unwrap().clear();
        RECORDING.with(|r| r.set(true));
        run();
        RECORDING.with(|r| r.set(false));
        std::mem::take(&mut *recorder.0.lock().unwrap())
    }
}

/// The first event whose message starts with `message`.
fn find(events: &[Seen], message: &str) -> Seen {
    events
        .iter()
        .find(|e| e.message.starts_with(message))
        .cloned()
        .unwrap_or_else(|| panic!("no event `{message}` among {events:#?}"))
}

#[test]
fn every_operation_emits_an_event_naming_the_service_and_version() {
    let events = Recorder::record(|| {
        let setup = Setup::new();
        setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
        let greeter = setup.runtime.handle("greeter").unwrap();
        greeter.call_to_vec("log", b"a line from inside").unwrap();
        greeter.call_to_vec("panic", b"").unwrap_err();
        setup.runtime.swap("greeter", setup.copy(Fixture::Greeter2_0)).unwrap_err();
        let swap = setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
        swap.previous.wait_drained(super::PATIENCE).unwrap();
        setup.runtime.rollback("greeter").unwrap();
    });

    for (message, version) in [
        ("service loaded", "1.0.0"),
        ("plugin panicked", "1.0.0"),
        ("swap refused", "1.0.0"),
        ("service swapped", "1.0.0"),
        ("generation drained", "1.0.0"),
        ("service rolled back", "1.1.0"),
    ] {
        let seen = find(&events, message);
        assert_eq!(
            (seen.service.as_str(), seen.version.as_str()),
            ("greeter", version),
            "{seen:?}"
        );
    }

    // A plugin's own log line reaches the host's subscriber, tagged with its service and version.
    let line = find(&events, "greeter 1.0.0 says a line from inside");
    assert_eq!(line.target, "graft::plugin");
    assert_eq!((line.service.as_str(), line.version.as_str()), ("greeter", "1.0.0"));
    let created = find(&events, "greeter 1.1.0 created");
    assert_eq!((created.target.as_str(), created.version.as_str()), ("graft::plugin", "1.1.0"));
}
