//! The admin API's HTTP/1.1 transport: the listeners, the bounds every request is held to, the
//! bearer token, and the streams of events. What each route does is [`crate::api`]'s business.
//!
//! One thread (`graft-host-http`) runs a current-thread tokio runtime that accepts connections
//! and parses requests with hyper; each request's handling, which blocks as long as the
//! runtime's operation does, runs on tokio's blocking pool. Each event stream has a thread of
//! its own that moves events from the runtime's channels to the connection.
//!
//! Bounds: a request head of at most [`MAX_HEADER_BYTES`] and [`MAX_HEADERS`] headers, read
//! within [`HEADER_TIMEOUT`] (hyper answers 431, or closes the connection, before any of this
//! code runs); a body of at most [`MAX_BODY`] (413), read within [`BODY_TIMEOUT`] (408);
//! [`MAX_CONNECTIONS`] connections (more are closed at once) and [`MAX_STREAMS`] event
//! streams (503).

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::api::{self, Api, Body};
use crate::auth::Token;
use crate::events::EventStream;

/// The largest request body: a swap's file name or a call's input.
pub const MAX_BODY: usize = 64 * 1024;
/// The largest request head (request line and headers).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most headers a request may have.
pub const MAX_HEADERS: usize = 64;
/// How long a client has to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections open at once.
pub const MAX_CONNECTIONS: usize = 128;
/// The most event streams open at once.
pub const MAX_STREAMS: usize = 16;
/// An event stream quiet for this long gets an empty line, so that a client that went away is
/// noticed (the write fails) and its stream ended.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events queued for a client that does not read them before its stream is closed.
const STREAM_BACKLOG: usize = 1024;

type HttpBody = BoxBody<Bytes, Infallible>;

/// The HTTP server, running until [`Server::stop`].
#[derive(Debug)]
pub struct Server {
    addresses: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    streams: Arc<Streams>,
}

/// The event streams' pumps.
#[derive(Debug, Default)]
struct Streams {
    /// Set at shutdown: every pump ends its stream.
    closed: AtomicBool,
    open: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// What every request's handling shares.
#[derive(Debug)]
struct Shared {
    api: Arc<Api>,
    token: Option<Token>,
    streams: Arc<Streams>,
}

impl Server {
    /// Binds every address of `addresses` (at least one must bind) and serves `api` on them,
    /// requiring `token` if there is one; pings the systemd watchdog every `watchdog` from the
    /// serving loop, so that a wedged server stops the pings.
    pub fn start(
        addresses: &[SocketAddr],
        api: Arc<Api>,
        token: Option<Token>,
        watchdog: Option<Duration>,
    ) -> Result<Server, String> {
        let mut listeners = Vec::new();
        let mut failures = Vec::new();
        for address in addresses {
            match TcpListener::bind(address).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
                Ok(listener) => listeners.push(listener),
                Err(e) => failures.push(format!("{address}: {e}")),
            }
        }
        if listeners.is_empty() {
            return Err(format!("cannot listen: {}", failures.join("; ")));
        }
        for failure in &failures {
            tracing::warn!(failure, "an address of --listen could not be bound");
        }
        let bound: Vec<SocketAddr> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        let streams = Arc::new(Streams::default());
        let shared = Arc::new(Shared { api, token, streams: Arc::clone(&streams) });
        let (stop, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(64)
            .thread_name("graft-host-api")
            .build()
            .map_err(|e| format!("starting the HTTP runtime: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("graft-host-http".to_owned())
            .spawn(move || {
                runtime.block_on(serve(listeners, shared, stopped, watchdog));
                // Handlers still blocked in plugin code past the shutdown are left behind.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| format!("starting the HTTP thread: {e}"))?;
        for address in &bound {
            tracing::info!(%address, "admin API listening");
        }
        Ok(Server { addresses: bound, stop, thread: Some(thread), streams })
    }

    /// The addresses it listens on.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Ends the event streams, stops accepting, lets the requests in progress finish (for up
    /// to [`SHUTDOWN_GRACE`]), and joins every thread it started.
    pub fn stop(mut self) {
        self.streams.closed.store(true, Ordering::Release);
        let _ = self.stop.send(true);
        for pump in std::mem::take(&mut *self.streams.threads.lock()) {
            if pump.join().is_err() {
                tracing::error!("an event-stream thread panicked");
            }
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the HTTP thread panicked");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.streams.closed.store(true, Ordering::Release);
            let _ = self.stop.send(true);
        }
    }
}

/// How long connections get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

async fn serve(
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    watchdog: Option<Duration>,
) {
    if let Some(interval) = watchdog {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            loop {
                ticks.tick().await;
                crate::systemd::watchdog();
            }
        });
    }
    let graceful = Arc::new(GracefulShutdown::new());
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%error, "registering a listener");
                continue;
            }
        };
        let (shared, graceful, connections) =
            (Arc::clone(&shared), Arc::clone(&graceful), Arc::clone(&connections));
        accepting.spawn(accept(listener, shared, graceful, connections));
    }
    // Until the stop. (An accept loop only ends when aborted: it backs off on errors.)
    let _ = stopped.wait_for(|stop| *stop).await;
    accepting.abort_all();
    while accepting.join_next().await.is_some() {}
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        tracing::error!("connections still registered at shutdown");
        return;
    };
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("some API connections were still busy at shutdown");
        }
    }
}

async fn accept(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    connections: Arc<tokio::sync::Semaphore>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                tracing::warn!(%error, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!(%peer, "too many API connections; closing this one");
            continue;
        };
        let shared = Arc::clone(&shared);
        let service = hyper::service::service_fn(move |request| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(respond(shared, request).await) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "API connection ended");
            }
            drop(permit);
        });
    }
}

async fn respond(shared: Arc<Shared>, request: Request<Incoming>) -> Response<HttpBody> {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let response = match read(&shared, request).await {
        // Liveness is answered here, whatever the blocking pool is busy with.
        Ok(body) if target == "/healthz" => shared.api.handle(&method, &target, &body),
        Ok(body) => {
            let api = Arc::clone(&shared.api);
            let (method, target) = (method.clone(), target.clone());
            match tokio::task::spawn_blocking(move || api.handle(&method, &target, &body)).await {
                Ok(response) => response,
                Err(error) => {
                    tracing::error!(%error, "an API handler panicked");
                    api::error(500, "internal", "the request's handler failed; see the host's log")
                }
            }
        }
        Err(response) => response,
    };
    let status = response.status;
    let response = to_http(&shared, response);
    tracing::debug!(%method, %target, status, took = ?started.elapsed(), "API request");
    response
}

/// Checks the token and reads the body within its bounds.
async fn read(shared: &Shared, request: Request<Incoming>) -> Result<Bytes, api::Response> {
    if let Some(token) = &shared.token {
        let authorization = request.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
        if !token.admits(authorization) {
            return Err(api::error(
                401,
                "unauthorized",
                "this host needs `Authorization: Bearer <token>`",
            ));
        }
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), MAX_BODY).collect();
    match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Err(_) => Err(api::error(408, "body_timeout", "the request body did not arrive in time")),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(error)) => Err(api::error(400, "bad_body", format!("reading the body: {error}"))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn too_large() -> api::Response {
    api::error(413, "body_too_large", format!("the body is larger than {MAX_BODY} bytes"))
}

fn to_http(shared: &Shared, response: api::Response) -> Response<HttpBody> {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (content_type, body): (&'static str, HttpBody) = match response.body {
        Body::Json(value) => {
            ("application/json", Full::new(Bytes::from(format!("{value}\n"))).boxed())
        }
        Body::Text(content_type, text) => (content_type, Full::new(Bytes::from(text)).boxed()),
        Body::Events(stream) => match shared.streams.open(stream) {
            Ok(lines) => ("application/x-ndjson", lines.boxed()),
            Err(refused) => return to_http(shared, refused),
        },
    };
    let mut http = Response::new(body);
    *http.status_mut() = status;
    let headers = http.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(allow) = response.allow {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    http
}

impl Streams {
    /// Starts pumping `stream` into a response body, unless too many streams are open or the
    /// server is stopping.
    fn open(self: &Arc<Self>, stream: EventStream) -> Result<Lines, api::Response> {
        if self.closed.load(Ordering::Acquire) {
            return Err(api::error(503, "stopping", "the host is shutting down"));
        }
        if self.open.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(api::error(
                503,
                "too_many_streams",
                format!("{MAX_STREAMS} event streams are open already"),
            ));
        }
        let (sender, receiver) = mpsc::channel(STREAM_BACKLOG);
        let streams = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("graft-host-events".to_owned())
            .spawn(move || streams.pump(&stream, &sender));
        let mut threads = self.threads.lock();
        threads.retain(|t| !t.is_finished());
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(error) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(api::error(
                    500,
                    "thread",
                    format!("starting an event stream: {error}"),
                ));
            }
        }
        Ok(Lines(receiver))
    }

    /// Moves lines from `stream` to the connection until the client goes away, falls too far
    /// behind, or the server stops.
    fn pump(&self, stream: &EventStream, sender: &mpsc::Sender<Bytes>) {
        let mut last_sent = Instant::now();
        while !self.closed.load(Ordering::Acquire) {
            let line = match stream.next_line(Duration::from_millis(250)) {
                Some(line) => line,
                None if last_sent.elapsed() >= HEARTBEAT => "\n".to_owned(),
                None => continue,
            };
            match sender.try_send(Bytes::from(line)) {
                Ok(()) => last_sent = Instant::now(),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("an event-stream client does not keep up; closing its stream");
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body of lines that a pump thread sends; it ends when the pump does.
#[derive(Debug)]
struct Lines(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|line| line.map(|line| Ok(Frame::data(line))))
    }
}
