//! Events as the admin API streams them: one JSON object per line, from the runtime's lifecycle
//! events and from what the plugin-directory watcher did with each file.
//!
//! Every line has `time` (RFC 3339, UTC), `source` (`runtime` or `watcher`) and `event` (the
//! kind, in snake case); the other fields depend on the kind.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use graft_runtime::{Event, EventKind, EventReceiver, WatchEvent};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

/// The JSON of a runtime event.
pub fn runtime_event(event: &Event) -> Value {
    let (kind, details) = match &event.kind {
        EventKind::Loaded => ("loaded", json!({})),
        EventKind::Started { generation } => ("started", json!({ "generation": generation.get() })),
        EventKind::StartFailed { error, attempt, retry_in } => (
            "start_failed",
            json!({
                "error": error,
                "attempt": attempt,
                "retry_in_ms": retry_in.map(millis),
            }),
        ),
        EventKind::Swapped { from, generation } => {
            ("swapped", json!({ "from": from.to_string(), "generation": generation.get() }))
        }
        EventKind::Restarted { generation } => {
            ("restarted", json!({ "generation": generation.get() }))
        }
        EventKind::Drained { generation } => ("drained", json!({ "generation": generation.get() })),
        EventKind::Retired { generation, unmapped } => {
            ("retired", json!({ "generation": generation.get(), "unmapped": unmapped }))
        }
        EventKind::RolledBack { from, generation, reason } => (
            "rolled_back",
            json!({
                "from": from.to_string(),
                "generation": generation.get(),
                "reason": reason.to_string(),
            }),
        ),
        EventKind::RollbackRefused { from, generation, reason, error } => (
            "rollback_refused",
            json!({
                "from": from.to_string(),
                "generation": generation.get(),
                "reason": reason,
                "error": error,
            }),
        ),
        EventKind::CanaryStarted { generation, stable, weight } => (
            "canary_started",
            json!({ "generation": generation.get(), "stable": stable.to_string(), "weight": weight }),
        ),
        EventKind::CanaryPromoted { from, generation, automatic } => (
            "canary_promoted",
            json!({ "from": from.to_string(), "generation": generation.get(), "automatic": automatic }),
        ),
        EventKind::CanaryAborted { generation, reason } => {
            ("canary_aborted", json!({ "generation": generation.get(), "reason": reason }))
        }
        EventKind::Unloaded => ("unloaded", json!({})),
        EventKind::Paused => ("paused", json!({})),
        EventKind::Resumed => ("resumed", json!({})),
        EventKind::Stopped => ("stopped", json!({})),
        EventKind::Failed { reason } => ("failed", json!({ "reason": reason })),
        EventKind::HealthChanged { healthy, message } => {
            ("health_changed", json!({ "healthy": healthy, "message": message }))
        }
        EventKind::ProbationPassed { generation } => {
            ("probation_passed", json!({ "generation": generation.get() }))
        }
        // A kind added to the runtime after this host was written: passed on, described.
        other => ("other", json!({ "detail": format!("{other:?}") })),
    };
    line(
        "runtime",
        kind,
        json!({ "service": event.service, "version": event.version.to_string() }),
        details,
    )
}

/// The JSON of what the watcher did with a file.
pub fn watch_event(event: &WatchEvent) -> Value {
    let (kind, details) = match event {
        WatchEvent::Started { path, service, version } => {
            ("started", json!({ "path": path, "service": service, "version": version.to_string() }))
        }
        WatchEvent::Swapped { path, service, from, to } => (
            "swapped",
            json!({
                "path": path,
                "service": service,
                "from": from.to_string(),
                "version": to.to_string(),
            }),
        ),
        WatchEvent::Waiting { path, service, dependency } => {
            ("waiting", json!({ "path": path, "service": service, "dependency": dependency }))
        }
        WatchEvent::Unchanged { path, service } => {
            ("unchanged", json!({ "path": path, "service": service }))
        }
        WatchEvent::SameVersionChanged { path, service, version } => (
            "same_version_changed",
            json!({ "path": path, "service": service, "version": version.to_string() }),
        ),
        WatchEvent::Incomplete { path, reason } => {
            ("incomplete", json!({ "path": path, "reason": reason }))
        }
        WatchEvent::Conflict { service, files } => (
            "conflict",
            json!({
                "service": service,
                "files": files
                    .iter()
                    .map(|(path, version)| json!({ "path": path, "version": version.to_string() }))
                    .collect::<Vec<_>>(),
            }),
        ),
        WatchEvent::Rejected { path, error } => {
            ("rejected", json!({ "path": path, "error": error.to_string() }))
        }
        WatchEvent::Removed { path, service } => {
            ("removed", json!({ "path": path, "service": service }))
        }
        other => ("other", json!({ "detail": format!("{other:?}") })),
    };
    line("watcher", kind, json!({}), details)
}

fn line(source: &str, kind: &str, head: Value, details: Value) -> Value {
    let mut object = Map::new();
    object.insert(
        "time".to_owned(),
        Value::String(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
    );
    object.insert("source".to_owned(), Value::String(source.to_owned()));
    object.insert("event".to_owned(), Value::String(kind.to_owned()));
    for value in [head, details] {
        if let Value::Object(fields) = value {
            object.extend(fields);
        }
    }
    Value::Object(object)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Hands the watcher's reports to every open event stream. (The runtime's own events have
/// their bus in the runtime; the watcher's receiver has one reader, the host.)
#[derive(Debug, Default)]
pub struct WatchBus {
    subscribers: Mutex<Vec<Sender<Value>>>,
}

impl WatchBus {
    /// A new subscription; dropping the receiver ends it at the next report.
    pub fn subscribe(&self) -> Receiver<Value> {
        let (sender, receiver) = crossbeam_channel::unbounded();
        self.subscribers.lock().push(sender);
        receiver
    }

    /// Sends `event` to every live subscriber.
    pub fn publish(&self, event: &WatchEvent) {
        let mut subscribers = self.subscribers.lock();
        if subscribers.is_empty() {
            return;
        }
        let value = watch_event(event);
        subscribers.retain(|s| s.send(value.clone()).is_ok());
    }
}

/// One client's stream of events: the runtime's and the watcher's, in arrival order.
#[derive(Debug)]
pub struct EventStream {
    runtime: EventReceiver,
    watcher: Receiver<Value>,
}

impl EventStream {
    /// Subscribes to both sources.
    pub fn subscribe(runtime: &graft_runtime::Runtime, watch: &Arc<WatchBus>) -> EventStream {
        EventStream { runtime: runtime.subscribe(), watcher: watch.subscribe() }
    }

    /// The next line (JSON and a newline), waiting at most `timeout`; `None` if nothing came.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        let value = crossbeam_channel::select! {
            recv(self.runtime) -> event => event.ok().map(|e| runtime_event(&e)),
            recv(self.watcher) -> value => value.ok(),
            default(timeout) => None,
        }?;
        Some(format!("{value}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graft_runtime::semver::Version;

    #[test]
    fn a_watcher_report_is_one_flat_json_object() {
        let event = WatchEvent::Removed { path: "p/libx.so".into(), service: Some("x".into()) };
        let value = watch_event(&event);
        assert_eq!(value["source"], "watcher");
        assert_eq!(value["event"], "removed");
        assert_eq!(value["path"], "p/libx.so");
        assert_eq!(value["service"], "x");
        assert!(value["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn the_bus_forgets_dropped_subscribers() {
        let bus = WatchBus::default();
        let (kept, dropped) = (bus.subscribe(), bus.subscribe());
        drop(dropped);
        let version = Version::new(1, 0, 0);
        bus.publish(&WatchEvent::Started {
            path: "p/libx.so".into(),
            service: "x".into(),
            version,
        });
        assert_eq!(kept.try_recv().unwrap()["event"], "started");
        assert_eq!(bus.subscribers.lock().len(), 1);
    }
}
