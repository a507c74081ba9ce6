//! graft-host: a ready-made host for graft plugins. It runs every plugin of a directory in a
//! [`graft_runtime::Runtime`] and serves an admin HTTP API (loopback only unless a bearer token
//! is set) that `graft`, the CLI, drives: status, swap, rollback, lifecycle operations, calls,
//! metrics and a stream of events. See `graft-host --help` and `host/README.md`.
//!
//! The HTTP server is hyper (HTTP/1.1 only) on a one-thread tokio runtime, not the synchronous
//! tiny_http the first plan named: tiny_http reads a request head of any size into memory (its
//! issue #56, open since 2015), gives each connection a thread with no read timeout, and
//! buffers chunked responses, while this API must bound headers, survive slow clients and
//! stream events line by line. hyper, the most used HTTP implementation in Rust, bounds the
//! head (size and header count), times a slow one out, and streams bodies. The API itself stays
//! synchronous (`api.rs`): each request is handled on tokio's blocking pool, since the
//! runtime's operations block.
//!
//! The life of the process: parse the command line, bind the API, restore the state
//! directory's services, bring the plugin directory into service (`plugins.rs`), tell systemd
//! it is ready, then wait for signals: SIGHUP looks at the plugin directory again, SIGTERM and
//! SIGINT shut down.

mod api;
mod auth;
mod events;
mod http;
mod metrics;
mod options;
mod plugins;
mod systemd;

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use graft_runtime::{EventKind, Runtime, ServiceState};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;

use crate::api::{Api, Phase};
use crate::auth::Token;
use crate::events::WatchBus;
use crate::options::{LogFormat, Options};
use crate::plugins::{PluginDir, Reconciled, Reload};

/// How long a reconcile waits for the watcher's first pass over the plugin directory.
const RECONCILE_DEADLINE: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let options = Options::parse();
    init_logging(options.log_format);
    match run(&options) {
        Ok(code) => code,
        Err(message) => {
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{message}");
            } else {
                eprintln!("graft-host: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let (filter, bad_filter) = match EnvFilter::try_from_default_env() {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), std::env::var_os("RUST_LOG").map(|_| error)),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(error) = bad_filter {
        tracing::warn!(%error, "RUST_LOG is not a valid filter; logging at info");
    }
}

fn run(options: &Options) -> Result<ExitCode, String> {
    let token = Token::load(options.token_file.as_deref())?;
    let (addresses, loopback) = options::resolve_listen(&options.listen)?;
    if !loopback && token.is_none() {
        return Err(format!(
            "refusing to start: --listen {} is not a loopback address, so the admin API would be \
             reachable from other machines; give it a bearer token with --token-file FILE or the \
             {} environment variable",
            options.listen,
            auth::TOKEN_ENV
        ));
    }

    // Signals first, so that a SIGTERM during a long startup is kept and acted on after it.
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|e| format!("handling signals: {e}"))?;
    let signal_handle = signals.handle();
    let (signal_sender, signal_receiver) = crossbeam_channel::unbounded();
    let signal_thread = std::thread::Builder::new()
        .name("graft-host-signals".to_owned())
        .spawn(move || {
            for signal in signals.forever() {
                if signal_sender.send(signal).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| format!("starting the signal thread: {e}"))?;

    std::fs::create_dir_all(&options.state)
        .map_err(|e| format!("creating the state directory {}: {e}", options.state.display()))?;
    let runtime = Arc::new(
        Runtime::builder()
            .state_dir(&options.state)
            .staging_dir(options.state.join("staging"))
            .stop_deadline(options.stop_deadline())
            .build()
            .map_err(|e| format!("starting the runtime: {e}"))?,
    );
    let bus = Arc::new(WatchBus::default());
    let plugins =
        Arc::new(PluginDir::new(options.plugins.clone(), !options.no_watch, Arc::clone(&bus))?);
    let api = Arc::new(Api::new(
        Arc::clone(&runtime),
        Arc::clone(&plugins),
        bus,
        options.optional.iter().cloned(),
    ));
    let server =
        http::Server::start(&addresses, Arc::clone(&api), token, systemd::watchdog_interval())?;

    match runtime.restore() {
        Ok(report) => tracing::info!(%report, "state directory restored"),
        Err(graft_runtime::Error::Batch(report)) => {
            tracing::warn!(%report, "some services of the state directory did not start")
        }
        Err(error) => {
            return Err(format!(
                "restoring the services of the state directory {}: {error}",
                options.state.display()
            ));
        }
    }
    reconcile(&plugins, &runtime)?;
    api.set_phase(Phase::Serving);
    systemd::ready(&status_line(&runtime, server.addresses()));

    loop {
        match signal_receiver.recv() {
            Ok(SIGHUP) => {
                tracing::info!("SIGHUP: looking at the plugin directory again");
                systemd::reloading();
                match plugins.reload(&runtime, RECONCILE_DEADLINE) {
                    Ok(Reload::Nudged) => {
                        tracing::info!("the watcher looks at the directory again")
                    }
                    Ok(Reload::Reconciled(reconciled)) => log_reconciled(&reconciled),
                    Err(error) => tracing::error!(%error, "reloading the plugin directory"),
                }
                systemd::ready(&status_line(&runtime, server.addresses()));
            }
            Ok(signal) => {
                let name = if signal == SIGINT { "SIGINT" } else { "SIGTERM" };
                tracing::info!(signal = name, "shutting down");
                break;
            }
            Err(_) => {
                tracing::error!("the signal thread ended; shutting down");
                break;
            }
        }
    }

    // Not ready any more before systemd hears of the stop.
    api.set_phase(Phase::Stopping);
    systemd::stopping();
    plugins.stop();
    let outcome = shutdown(&runtime);
    // After the services: requests in flight (a slow call) get their answers first.
    server.stop();
    signal_handle.close();
    if signal_thread.join().is_err() {
        tracing::error!("the signal thread panicked");
    }
    if outcome.is_empty() {
        tracing::info!("every service stopped and drained");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!("shutdown incomplete: {}", outcome.join("; ")))
    }
}

/// Brings the plugin directory into service, and logs what happened.
fn reconcile(plugins: &PluginDir, runtime: &Runtime) -> Result<(), String> {
    let reconciled = plugins.reconcile(runtime, RECONCILE_DEADLINE)?;
    log_reconciled(&reconciled);
    Ok(())
}

fn log_reconciled(reconciled: &Reconciled) {
    tracing::info!(
        started = ?reconciled.started,
        swapped = ?reconciled.swapped,
        "plugin directory in service"
    );
    for (path, error) in &reconciled.rejected {
        tracing::warn!(path = %path.display(), %error, "plugin refused");
    }
    for (path, service) in &reconciled.waiting {
        tracing::warn!(path = %path.display(), %service, "service waits for a dependency that does not run");
    }
    for path in &reconciled.unfinished {
        tracing::warn!(path = %path.display(), deadline = ?RECONCILE_DEADLINE, "plugin file not handled by the deadline");
    }
}

fn status_line(runtime: &Runtime, addresses: &[std::net::SocketAddr]) -> String {
    let status = runtime.status();
    let running = status.iter().filter(|s| s.state == ServiceState::Running).count();
    let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    format!("{running} of {} services running; API on {}", status.len(), addresses.join(", "))
}

/// Stops every service (dependents first, stateful ones saving their state) and returns what
/// went wrong: services whose stop failed, and services whose calls had not returned by the
/// stop deadline.
fn shutdown(runtime: &Runtime) -> Vec<String> {
    // A stop reports "drained" when the serving generation's instance was destroyed within the
    // deadline, which is when the runtime reports it `Retired`; the batch report does not
    // carry the per-service answer, so the events tell it.
    let events = runtime.subscribe();
    let serving: BTreeMap<u64, String> = runtime
        .status()
        .into_iter()
        .filter_map(|s| s.current.map(|generation| (generation.id.get(), s.service)))
        .collect();
    let mut problems = Vec::new();
    let mut failed = BTreeSet::new();
    match runtime.shutdown() {
        Ok(report) => tracing::info!(%report, "services stopped"),
        Err(graft_runtime::Error::Batch(report)) => {
            for (service, error) in report.failures() {
                failed.insert(service.to_owned());
                problems.push(format!("{service} did not stop: {error}"));
            }
            for service in &report.skipped {
                failed.insert(service.clone());
                problems.push(format!("{service} was not stopped (an earlier wave failed)"));
            }
        }
        Err(error) => problems.push(format!("stopping the services: {error}")),
    }
    let retired: BTreeSet<u64> = events
        .try_iter()
        .filter_map(|event| match event.kind {
            EventKind::Retired { generation, .. } => Some(generation.get()),
            _ => None,
        })
        .collect();
    for (generation, service) in serving {
        if !retired.contains(&generation) && !failed.contains(&service) {
            problems.push(format!(
                "{service} still had calls running at the stop deadline (generation {generation})"
            ));
        }
    }
    problems
}
