//! The systemd notification protocol: READY, RELOADING, STOPPING, STATUS and watchdog pings,
//! sent only when the service manager set NOTIFY_SOCKET (otherwise each call does nothing).

use std::time::Duration;

use sd_notify::NotifyState;

/// Startup is done: the plugin directory is loaded and the API serves.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload (SIGHUP) begins. MONOTONIC_USEC lets `Type=notify-reload` match it to its signal.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping services")]);
}

/// The host is alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog, if the service manager enabled it: half its timeout, as
/// `sd_watchdog_enabled(3)` advises.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| (timeout / 2).max(Duration::from_millis(1)))
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "notifying the service manager");
    }
}
