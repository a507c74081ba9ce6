//! The admin API itself: routes, request bodies, the JSON it answers, and how the runtime's
//! errors map to HTTP statuses. It knows nothing of sockets: [`Api::handle`] takes a method, a
//! path and a body, and blocks as long as the runtime's operation does. `http.rs` carries it.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | `{"status":"alive"}` |
//! | `GET /readyz` | `{"ready":true}`, or 503 `{"ready":false,"not_running":[..]}` |
//! | `GET /metrics` | the Prometheus text format ([`crate::metrics`]) |
//! | `GET /v1/services` | every service ([`Api::service_json`]) |
//! | `GET /v1/services/NAME` | one |
//! | `POST /v1/services/NAME/OP` | OP one of start, stop, restart, pause, resume, rollback, commit, swap (`{"file":..}`), call (`{"method":..,"input":..}`) |
//! | `GET /v1/events` | JSON lines of events, streamed ([`crate::events`]) |
//!
//! Every error is `{"error":{"kind":"..","message":".."}}` with a 4xx or 5xx status.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use graft_runtime::{
    Error, GenerationStatus, Runtime, ServiceState, ServiceStatus, StopReport, SwapReport,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::events::{EventStream, WatchBus};
use crate::plugins::{PathError, PluginDir};

/// The operations `POST /v1/services/NAME/OP` accepts.
pub const OPERATIONS: [&str; 9] =
    ["start", "stop", "restart", "pause", "resume", "rollback", "commit", "swap", "call"];

/// Where the host is in its life, as /readyz reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Restoring and loading the plugin directory.
    Starting = 0,
    /// Serving.
    Serving = 1,
    /// Shutting down.
    Stopping = 2,
}

/// An answer.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Body,
    /// For a 405, the methods the route allows.
    pub allow: Option<&'static str>,
}

/// An answer's body.
#[derive(Debug)]
pub enum Body {
    /// A JSON document.
    Json(Value),
    /// Text of the given content type.
    Text(&'static str, String),
    /// A stream of JSON lines, for as long as the client reads it.
    Events(EventStream),
}

impl Response {
    fn json(status: u16, value: Value) -> Response {
        Response { status, body: Body::Json(value), allow: None }
    }

    fn ok(value: Value) -> Response {
        Response::json(200, value)
    }
}

/// An error answer: `{"error":{"kind":kind,"message":message}}`.
pub fn error(status: u16, kind: &str, message: impl Into<String>) -> Response {
    Response::json(status, json!({ "error": { "kind": kind, "message": message.into() } }))
}

/// The admin API over one runtime.
#[derive(Debug)]
pub struct Api {
    runtime: Arc<Runtime>,
    plugins: Arc<PluginDir>,
    watch_bus: Arc<WatchBus>,
    optional: BTreeSet<String>,
    phase: AtomicU8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwapBody {
    file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallBody {
    method: String,
    input: Option<String>,
    input_base64: Option<String>,
}

impl Api {
    /// The API over `runtime`; `optional` services are left out of readiness.
    pub fn new(
        runtime: Arc<Runtime>,
        plugins: Arc<PluginDir>,
        watch_bus: Arc<WatchBus>,
        optional: impl IntoIterator<Item = String>,
    ) -> Api {
        Api {
            runtime,
            plugins,
            watch_bus,
            optional: optional.into_iter().collect(),
            phase: AtomicU8::new(Phase::Starting as u8),
        }
    }

    /// Moves the host to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Stopping,
        }
    }

    /// Answers one request. Blocks for as long as the operation asked for runs.
    pub fn handle(&self, method: &str, target: &str, body: &[u8]) -> Response {
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        let (allow, route) = match segments.as_slice() {
            ["healthz"] => ("GET", Route::Healthz),
            ["readyz"] => ("GET", Route::Readyz),
            ["metrics"] => ("GET", Route::Metrics),
            ["v1", "events"] => ("GET", Route::Events),
            ["v1", "services"] => ("GET", Route::Services),
            ["v1", "services", name] if !name.is_empty() => ("GET", Route::Service(name)),
            ["v1", "services", name, operation]
                if !name.is_empty() && OPERATIONS.contains(operation) =>
            {
                ("POST", Route::Operation(name, operation))
            }
            _ => return error(404, "unknown_route", format!("no route {path}")),
        };
        if method != allow {
            let mut response =
                error(405, "method_not_allowed", format!("{path} takes {allow}, not {method}"));
            response.allow = Some(allow);
            return response;
        }
        match route {
            Route::Healthz => Response::ok(json!({ "status": "alive" })),
            Route::Readyz => self.readyz(),
            Route::Metrics => Response {
                status: 200,
                body: Body::Text(
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    crate::metrics::render(&self.runtime),
                ),
                allow: None,
            },
            Route::Events => Response {
                status: 200,
                body: Body::Events(EventStream::subscribe(&self.runtime, &self.watch_bus)),
                allow: None,
            },
            Route::Services => {
                let services: Vec<Value> =
                    self.runtime.status().iter().map(|s| self.service_json(s)).collect();
                Response::ok(Value::Array(services))
            }
            Route::Service(name) => match self.runtime.service_status(name) {
                Ok(status) => Response::ok(self.service_json(&status)),
                Err(e) => runtime_error(&e),
            },
            Route::Operation(name, operation) => {
                self.operation(name, operation, body).unwrap_or_else(|response| response)
            }
        }
    }

    fn readyz(&self) -> Response {
        let statuses = self.runtime.status();
        let not_running: Vec<&str> = statuses
            .iter()
            .filter(|s| !self.optional.contains(&s.service) && s.state != ServiceState::Running)
            .map(|s| s.service.as_str())
            .collect();
        match self.phase() {
            Phase::Starting => Response::json(
                503,
                json!({ "ready": false, "starting": true, "not_running": not_running }),
            ),
            Phase::Stopping => Response::json(
                503,
                json!({ "ready": false, "stopping": true, "not_running": not_running }),
            ),
            Phase::Serving if not_running.is_empty() => Response::ok(json!({ "ready": true })),
            Phase::Serving => {
                Response::json(503, json!({ "ready": false, "not_running": not_running }))
            }
        }
    }

    fn operation(&self, name: &str, operation: &str, body: &[u8]) -> Result<Response, Response> {
        // The service first: an unknown one is a 404 whatever the body.
        self.runtime.service_status(name).map_err(|e| runtime_error(&e))?;
        let runtime = &self.runtime;
        let details = match operation {
            "start" => runtime.start(name).map(|()| json!({})),
            "stop" => runtime.stop(name).map(|report| stop_json(&report)),
            "restart" => runtime.restart(name).map(|report| swap_json(&report)),
            "pause" => runtime.pause(name).map(|()| json!({})),
            "resume" => runtime.resume(name).map(|()| json!({})),
            "rollback" => runtime.rollback(name).map(|report| swap_json(&report)),
            "commit" => runtime.commit(name).map(|()| json!({})),
            "swap" => {
                let request: SwapBody = parse(body)?;
                let file = self.plugins.resolve(&request.file).map_err(|e| path_error(&e))?;
                runtime.swap(name, &file).map(|report| {
                    let mut details = swap_json(&report);
                    details["file"] = json!(file);
                    details
                })
            }
            "call" => return self.call(name, body),
            other => return Err(error(404, "unknown_route", format!("no operation {other}"))),
        }
        .map_err(|e| runtime_error(&e))?;
        tracing::info!(service = name, operation, "operation done");
        let status = self.runtime.service_status(name).map_err(|e| runtime_error(&e))?;
        let mut answer = json!({
            "service": name,
            "operation": operation,
            "status": self.service_json(&status),
        });
        if let (Value::Object(answer), Value::Object(details)) = (&mut answer, details) {
            answer.extend(details);
        }
        Ok(Response::ok(answer))
    }

    fn call(&self, name: &str, body: &[u8]) -> Result<Response, Response> {
        let request: CallBody = parse(body)?;
        let input = match (request.input, request.input_base64) {
            (Some(_), Some(_)) => {
                return Err(error(
                    400,
                    "malformed_body",
                    "give either `input` or `input_base64`, not both",
                ));
            }
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => BASE64.decode(encoded.as_bytes()).map_err(|e| {
                error(400, "malformed_body", format!("`input_base64` is not base64: {e}"))
            })?,
            (None, None) => Vec::new(),
        };
        let output =
            self.runtime.call(name, &request.method, &input).map_err(|e| runtime_error(&e))?;
        Ok(Response::ok(json!({
            "service": name,
            "method": request.method,
            "output": String::from_utf8_lossy(&output),
            "output_base64": BASE64.encode(&output),
        })))
    }

    /// A service as the API shows it: `name`, `version`, `state`, `interface`, `current`
    /// (`{version, generation}` or null), `history` (the rollback targets, most recent first),
    /// `healthy`, `dependencies` (names), `committed` (`{version}` of the build a restarted
    /// host comes back on, or null), `calls` (per version: `calls`, `failures`, `refusals`,
    /// `panics`), `swaps` and `rollbacks` (`manual`, `automatic`).
    pub fn service_json(&self, status: &ServiceStatus) -> Value {
        let committed = match self.runtime.manifest(&status.service) {
            Ok(manifest) => manifest.map(|m| json!({ "version": m.committed.version })),
            Err(e) => {
                tracing::warn!(service = %status.service, error = %e, "reading the manifest");
                None
            }
        };
        json!({
            "name": status.service,
            "version": status.version.to_string(),
            "state": status.state.to_string(),
            "interface": status.interface,
            "current": status.current.as_ref().map(generation_json),
            "history": status.history.iter().map(generation_json).collect::<Vec<_>>(),
            "healthy": status.healthy,
            "dependencies": status.dependencies.iter().map(|d| &d.service).collect::<Vec<_>>(),
            "committed": committed,
            "calls": status.metrics.versions.iter().map(|v| json!({
                "version": v.version.to_string(),
                "calls": v.counts.calls,
                "failures": v.counts.failures,
                "refusals": v.counts.refusals,
                "panics": v.counts.panics,
            })).collect::<Vec<_>>(),
            "swaps": status.metrics.operations.swaps,
            "rollbacks": {
                "manual": status.metrics.operations.rollbacks_manual,
                "automatic": status.metrics.operations.rollbacks_automatic,
            },
        })
    }
}

enum Route<'a> {
    Healthz,
    Readyz,
    Metrics,
    Events,
    Services,
    Service(&'a str),
    Operation(&'a str, &'a str),
}

fn generation_json(generation: &GenerationStatus) -> Value {
    json!({ "version": generation.version.to_string(), "generation": generation.id.get() })
}

fn swap_json(report: &SwapReport) -> Value {
    json!({
        "from": report.from.to_string(),
        "to": report.to.to_string(),
        "generation": report.generation.get(),
        "took_ms": report.took.as_secs_f64() * 1000.0,
    })
}

fn stop_json(report: &StopReport) -> Value {
    json!({ "drained": report.drained })
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(error(400, "malformed_body", "expected a JSON object as the body"));
    }
    serde_json::from_slice(body).map_err(|e| {
        error(400, "malformed_body", format!("the body is not the JSON expected: {e}"))
    })
}

fn path_error(error: &PathError) -> Response {
    let kind = match error {
        PathError::BadPath(_) => "bad_path",
        PathError::NotFound(_) => "file_not_found",
        PathError::Outside(_) => "outside_plugin_dir",
        PathError::NotAFile(_) => "not_a_file",
    };
    self::error(400, kind, error.to_string())
}

/// The answer to a runtime error: its status and kind (the variant, in snake case) and its
/// message.
pub fn runtime_error(error: &Error) -> Response {
    let (status, kind) = classify(error);
    self::error(status, kind, error.to_string())
}

/// The HTTP status and kind of a runtime error. 404: no such service. 400: a bad name. 409: the
/// operation does not fit the service's situation (its state, its dependencies, the version
/// gate, a canary). 422: the build or the input is refused for what it is. 502: the plugin
/// failed (in a call, its creation, its health check, its state handoff). 503: not serving now,
/// or out of load budget. 500: the host's own trouble (files, threads).
fn classify(error: &Error) -> (u16, &'static str) {
    match error {
        Error::UnknownService { .. } => (404, "unknown_service"),
        Error::InvalidName { .. } => (400, "invalid_name"),
        Error::InvalidState { .. } => (409, "invalid_state"),
        Error::AlreadyLoaded { .. } => (409, "already_loaded"),
        Error::SameVersion { .. } => (409, "same_version"),
        Error::ServiceMismatch { .. } => (409, "service_mismatch"),
        Error::InterfaceMismatch { .. } => (409, "interface_mismatch"),
        Error::IncompatibleInterface { .. } => (409, "incompatible_interface"),
        Error::IncompatibleMethod { .. } => (409, "incompatible_method"),
        Error::WouldLoseState { .. } => (409, "would_lose_state"),
        Error::StatefulCanary { .. } => (409, "stateful_canary"),
        Error::CanaryInProgress { .. } => (409, "canary_in_progress"),
        Error::NoCanary { .. } => (409, "no_canary"),
        Error::Stateless { .. } => (409, "stateless"),
        Error::NoRollbackTarget { .. } => (409, "no_rollback_target"),
        Error::DependencyNotRunning { .. } => (409, "dependency_not_running"),
        Error::DependencyMismatch { .. } => (409, "dependency_mismatch"),
        Error::DependentsRunning { .. } => (409, "dependents_running"),
        Error::DependentsLoaded { .. } => (409, "dependents_loaded"),
        Error::BreaksDependent { .. } => (409, "breaks_dependent"),
        Error::DependencyCycle { .. } => (409, "dependency_cycle"),
        Error::Incomplete { .. } => (409, "incomplete"),
        Error::NoStateDir => (409, "no_state_dir"),
        Error::NotAFile { .. } => (422, "not_a_file"),
        Error::TooLarge { .. } => (422, "too_large"),
        Error::NotElf { .. } => (422, "not_elf"),
        Error::WrongElf { .. } => (422, "wrong_elf"),
        Error::MalformedElf { .. } => (422, "malformed_elf"),
        Error::Truncated { .. } => (422, "truncated"),
        Error::MissingSymbol { .. } => (422, "missing_symbol"),
        Error::BadMagic { .. } => (422, "bad_magic"),
        Error::AbiMismatch { .. } => (422, "abi_mismatch"),
        Error::DescriptorTooSmall { .. } => (422, "descriptor_too_small"),
        Error::InvalidDescriptor { .. } => (422, "invalid_descriptor"),
        Error::PanicAbortBuild { .. } => (422, "panic_abort_build"),
        Error::InvalidInterface { .. } => (422, "invalid_interface"),
        Error::UntypedBuild { .. } => (422, "untyped_build"),
        Error::InvalidWeight { .. } => (422, "invalid_weight"),
        Error::Refused { .. } => (422, "refused"),
        Error::CallDepthExceeded { .. } => (422, "call_depth_exceeded"),
        Error::CallFailed { .. } => (502, "call_failed"),
        Error::PluginPanicked { .. } => (502, "plugin_panicked"),
        Error::InvalidStatus { .. } => (502, "invalid_status"),
        Error::OutputTooLarge { .. } => (502, "output_too_large"),
        Error::DependencyFailed { .. } => (502, "dependency_failed"),
        Error::Remote { .. } => (502, "remote"),
        Error::CreateFailed { .. } => (502, "create_failed"),
        Error::HealthCheckFailed { .. } => (502, "health_check_failed"),
        Error::StateExportFailed { .. } => (502, "state_export_failed"),
        Error::StateImportFailed { .. } => (502, "state_import_failed"),
        Error::StateRefused { .. } => (502, "state_refused"),
        Error::Stopped { .. } => (503, "stopped"),
        Error::NotReady { .. } => (503, "not_ready"),
        Error::QuiesceTimeout { .. } => (503, "quiesce_timeout"),
        Error::DrainTimeout { .. } => (503, "drain_timeout"),
        Error::RetireTimeout { .. } => (503, "retire_timeout"),
        Error::LoadBudgetExhausted { .. } => (503, "load_budget_exhausted"),
        Error::Batch(_) => (500, "batch"),
        Error::Io { .. } => (500, "io"),
        Error::Open { .. } => (500, "open"),
        Error::Thread { .. } => (500, "thread"),
        Error::Manifest { .. } => (500, "manifest"),
        Error::StateFile { .. } => (500, "state_file"),
        Error::Watch { .. } => (500, "watch"),
        _ => (500, "runtime_error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> (tempfile::TempDir, Api) {
        let dir = tempfile::tempdir().unwrap();
        let bus = Arc::new(WatchBus::default());
        let plugins = Arc::new(PluginDir::new(dir.path().into(), false, Arc::clone(&bus)).unwrap());
        let runtime = Arc::new(Runtime::new().unwrap());
        (dir, Api::new(runtime, plugins, bus, Vec::new()))
    }

    fn answer(response: Response) -> (u16, Value) {
        match response.body {
            Body::Json(value) => (response.status, value),
            other => panic!("not JSON: {other:?}"),
        }
    }

    #[test]
    fn routes_methods_and_unknown_services_get_their_statuses() {
        let (_dir, api) = api();
        assert_eq!(answer(api.handle("GET", "/healthz?probe=1", b"")).0, 200);
        let (status, body) = answer(api.handle("GET", "/v1/nothing", b""));
        assert_eq!((status, &body["error"]["kind"]), (404, &json!("unknown_route")));
        let wrong = api.handle("GET", "/v1/services/x/stop", b"");
        assert_eq!(wrong.allow, Some("POST"));
        assert_eq!(answer(wrong).0, 405);
        assert_eq!(answer(api.handle("POST", "/v1/services", b"")).0, 405);
        let (status, body) = answer(api.handle("POST", "/v1/services/x/swap", b"{"));
        assert_eq!((status, &body["error"]["kind"]), (404, &json!("unknown_service")));
        assert_eq!(answer(api.handle("GET", "/v1/services/", b"")).0, 404);
        assert_eq!(answer(api.handle("GET", "/v1/services", b"")), (200, json!([])));
    }

    #[test]
    fn readiness_follows_the_phase() {
        let (_dir, api) = api();
        let (status, body) = answer(api.handle("GET", "/readyz", b""));
        assert_eq!((status, &body["starting"]), (503, &json!(true)));
        api.set_phase(Phase::Serving);
        assert_eq!(answer(api.handle("GET", "/readyz", b"")), (200, json!({ "ready": true })));
        api.set_phase(Phase::Stopping);
        let (status, body) = answer(api.handle("GET", "/readyz", b""));
        assert_eq!((status, &body["stopping"]), (503, &json!(true)));
    }
}
