//! The command line, and the checks on it that need no runtime: where to listen and whether
//! that needs a token.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// The address the admin API listens on unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7077";

/// graft-host: runs every plugin of a directory in a graft runtime and serves an admin HTTP API.
///
/// At start it restores the services the state directory records, then loads and starts every
/// complete `.so` file of the plugin directory in dependency order and keeps watching it: a
/// finished build renamed into the directory is swapped in through the runtime's version gate.
/// Files in subdirectories are not watched: keep builds meant for `graft swap` there. SIGHUP
/// looks at the directory again (with --no-watch: loads what changed in it); SIGTERM and SIGINT
/// stop every service, dependents first, saving stateful services' state, and exit.
#[derive(Debug, Parser)]
#[command(
    name = "graft-host",
    version,
    after_help = "\
The admin API listens on 127.0.0.1:7077 by default. A listener that is not on loopback needs a
bearer token (--token-file, or the GRAFT_TOKEN environment variable); with a token, every
request must carry `Authorization: Bearer <token>`.

Exit status: 0 after a clean shutdown (every service stopped and drained), 1 if the host could
not start or the shutdown left a service undrained or unstopped (the log names it), 2 for a
usage error."
)]
pub struct Options {
    /// The plugin directory: every `.so` file in it is loaded and started, and kept in step.
    #[arg(long, value_name = "DIR")]
    pub plugins: PathBuf,

    /// The state directory (created if missing): archived builds, manifests (current and
    /// committed build per service) and stateful services' saved state.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,

    /// Where the admin API listens, as IP:PORT or HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// A file holding the bearer token (surrounding whitespace ignored). Overrides GRAFT_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// How logs are written to stderr (filtered by RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// A service that /readyz does not wait for (repeatable). Every other loaded service must
    /// be running for the host to be ready.
    #[arg(long = "optional", value_name = "NAME")]
    pub optional: Vec<String>,

    /// Only bring the plugin directory into service at start and on SIGHUP; do not watch it.
    #[arg(long)]
    pub no_watch: bool,

    /// How long a stop waits for a service's running calls, in seconds (the runtime's stop
    /// deadline; keep systemd's TimeoutStopSec above it).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stop_deadline: u64,
}

impl Options {
    /// The runtime's stop deadline.
    pub fn stop_deadline(&self) -> Duration {
        Duration::from_secs(self.stop_deadline)
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The addresses `listen` names, and whether every one of them is a loopback address.
pub fn resolve_listen(listen: &str) -> Result<(Vec<SocketAddr>, bool), String> {
    let addresses: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| format!("--listen {listen}: {e} (expected IP:PORT, e.g. {DEFAULT_LISTEN})"))?
        .collect();
    if addresses.is_empty() {
        return Err(format!("--listen {listen}: the name resolves to no address"));
    }
    let loopback = addresses.iter().all(|a| a.ip().is_loopback());
    Ok((addresses, loopback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_told_apart_from_every_other_address() {
        assert!(resolve_listen("127.0.0.1:7077").unwrap().1);
        assert!(resolve_listen("[::1]:7077").unwrap().1);
        assert!(!resolve_listen("0.0.0.0:7077").unwrap().1);
        assert!(!resolve_listen("[::]:7077").unwrap().1);
        assert!(!resolve_listen("192.0.2.1:7077").unwrap().1);
        assert!(resolve_listen("no port").is_err());
    }

    #[test]
    fn the_command_line_parses_with_its_defaults() {
        let options = Options::try_parse_from([
            "graft-host",
            "--plugins",
            "p",
            "--state",
            "s",
            "--optional",
            "a",
            "--optional",
            "b",
        ])
        .unwrap();
        assert_eq!(options.listen, DEFAULT_LISTEN);
        assert_eq!(options.optional, ["a", "b"]);
        assert_eq!(options.log_format, LogFormat::Text);
        assert_eq!(options.stop_deadline(), Duration::from_secs(30));
        assert!(Options::try_parse_from(["graft-host", "--plugins", "p"]).is_err());
    }
}
