//! graft: the command-line client of graft-host's admin API. Each command is one request (or,
//! for `watch`, one stream); the answer is printed for people, or as the host's JSON with
//! `--json`, and the exit code says how it went (see `graft --help`).

mod client;
mod render;

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::client::{Client, Failure};

const EXIT_CODES: &str = "\
Exit codes:
  0  the operation succeeded
  1  the host refused it or it failed (the message says why)
  2  usage error (bad arguments, unreadable token file)
  3  cannot reach the host (not running, wrong --addr, timed out)

The host is found by --addr, else GRAFT_ADDR, else 127.0.0.1:7077; a token by --token-file,
else GRAFT_TOKEN.";

/// Drive a running graft-host: status, swaps, rollbacks, lifecycle, calls and events.
#[derive(Debug, Parser)]
#[command(name = "graft", version, after_help = EXIT_CODES)]
struct Cli {
    /// The host's admin API, as HOST:PORT.
    #[arg(long, global = true, env = "GRAFT_ADDR", default_value = "127.0.0.1:7077")]
    addr: String,

    /// A file holding the host's bearer token (else the GRAFT_TOKEN environment variable).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Print the host's JSON answers (errors too) instead of text, for scripts.
    #[arg(long, global = true)]
    json: bool,

    /// How long to wait for an answer, in seconds.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 300)]
    timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show every service (or one): version, state, health, generation, rollback target.
    Status {
        /// Only this service.
        service: Option<String>,
    },
    /// Swap a service to the build FILE, a file inside the host's plugin directory (relative to
    /// it): it goes through the version gate, and the old build stays as the rollback target.
    Swap {
        /// The service.
        service: String,
        /// The build, e.g. `staged/libgreeter_v1_1.so`.
        file: String,
    },
    /// Serve the previous build again (a second rollback undoes the first).
    Rollback {
        /// The service.
        service: String,
    },
    /// Replace the service's instance with a new one of the same build.
    Restart {
        /// The service.
        service: String,
    },
    /// Stop the service, letting running calls finish.
    Stop {
        /// The service.
        service: String,
    },
    /// Start the service.
    Start {
        /// The service.
        service: String,
    },
    /// Hold new calls until resumed.
    Pause {
        /// The service.
        service: String,
    },
    /// Let held calls through.
    Resume {
        /// The service.
        service: String,
    },
    /// Mark the build serving as known good: a restarted host comes back on it.
    Commit {
        /// The service.
        service: String,
    },
    /// Call METHOD of a service with INPUT (text; `-` reads the bytes of stdin) and print the
    /// output.
    Call {
        /// The service.
        service: String,
        /// The method.
        method: String,
        /// The input; none if left out.
        input: Option<String>,
    },
    /// Print the host's events as they happen, until interrupted.
    Watch,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            report(&failure, cli.json);
            ExitCode::from(failure.exit_code())
        }
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let client =
        Client::new(&cli.addr, cli.token_file.as_deref(), Duration::from_secs(cli.timeout))?;
    match &cli.command {
        Command::Status { service } => {
            let answer = match service {
                Some(service) => client.get(&format!("/v1/services/{}", name(service)?))?,
                None => client.get("/v1/services")?,
            };
            if cli.json {
                println!("{answer}");
            } else {
                let services = match answer {
                    Value::Array(services) => services,
                    one => vec![one],
                };
                print!("{}", render::status_table(&services));
            }
            Ok(())
        }
        Command::Swap { service, file } => {
            operate(&client, cli.json, service, "swap", &json!({ "file": file }))
        }
        Command::Rollback { service } => {
            operate(&client, cli.json, service, "rollback", &json!({}))
        }
        Command::Restart { service } => operate(&client, cli.json, service, "restart", &json!({})),
        Command::Stop { service } => operate(&client, cli.json, service, "stop", &json!({})),
        Command::Start { service } => operate(&client, cli.json, service, "start", &json!({})),
        Command::Pause { service } => operate(&client, cli.json, service, "pause", &json!({})),
        Command::Resume { service } => operate(&client, cli.json, service, "resume", &json!({})),
        Command::Commit { service } => operate(&client, cli.json, service, "commit", &json!({})),
        Command::Call { service, method, input } => call(&client, cli.json, service, method, input),
        Command::Watch => {
            let json = cli.json;
            let mut stdout = std::io::stdout().lock();
            client.stream("/v1/events", |line| {
                let text = if json {
                    line.to_owned()
                } else {
                    serde_json::from_str::<Value>(line)
                        .map_or_else(|_| line.to_owned(), |event| render::event(&event))
                };
                // A closed stdout (`graft watch | head`) ends the command at the next event.
                if writeln!(stdout, "{text}").and_then(|()| stdout.flush()).is_err() {
                    std::process::exit(0);
                }
            })?;
            if !json {
                eprintln!("graft: {} closed the event stream", client.base());
            }
            Ok(())
        }
    }
}

fn operate(
    client: &Client,
    json: bool,
    service: &str,
    operation: &str,
    body: &Value,
) -> Result<(), Failure> {
    let path = format!("/v1/services/{}/{operation}", name(service)?);
    let spinner = Spinner::start(format!("{operation} {service}"));
    let answer = client.post(&path, body);
    drop(spinner);
    let answer = answer?;
    if json {
        println!("{answer}");
    } else {
        println!("{}", render::operation(&answer));
    }
    Ok(())
}

fn call(
    client: &Client,
    json: bool,
    service: &str,
    method: &str,
    input: &Option<String>,
) -> Result<(), Failure> {
    let body = match input.as_deref() {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| Failure::Usage(format!("reading stdin: {e}")))?;
            json!({ "method": method, "input_base64": BASE64.encode(bytes) })
        }
        Some(text) => json!({ "method": method, "input": text }),
        None => json!({ "method": method }),
    };
    let path = format!("/v1/services/{}/call", name(service)?);
    let spinner = Spinner::start(format!("calling {service} {method}"));
    let answer = client.post(&path, &body);
    drop(spinner);
    let answer = answer?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    let output = answer["output_base64"]
        .as_str()
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    let terminal = stdout.is_terminal();
    let written = stdout.write_all(&output).and_then(|()| {
        if terminal && !output.ends_with(b"\n") { stdout.write_all(b"\n") } else { Ok(()) }
    });
    written.map_err(|e| Failure::Usage(format!("writing the output: {e}")))
}

/// A service name as a path segment; a name that would change the route is a usage error.
fn name(service: &str) -> Result<&str, Failure> {
    if service.is_empty()
        || service.bytes().any(|b| matches!(b, b'/' | b'?' | b'#' | b'%') || b <= b' ')
    {
        return Err(Failure::Usage(format!("`{service}` is not a service name")));
    }
    Ok(service)
}

fn report(failure: &Failure, json: bool) {
    match failure {
        Failure::Refused { body, .. } if json && !body.is_null() => println!("{body}"),
        Failure::Refused { status, kind, message, .. } => {
            if json {
                println!(
                    "{}",
                    json!({ "error": { "kind": kind, "message": message, "status": status } })
                );
            } else {
                eprintln!("graft: {message} ({status} {kind})");
            }
        }
        Failure::Usage(message) | Failure::Unreachable(message) => {
            if json {
                let kind = if failure.exit_code() == 2 { "usage" } else { "unreachable" };
                println!("{}", json!({ "error": { "kind": kind, "message": message } }));
            } else {
                eprintln!("graft: {message}");
            }
        }
    }
}

/// A spinner on stderr while a request runs, shown only when stderr is a terminal.
struct Spinner(Option<indicatif::ProgressBar>);

impl Spinner {
    fn start(message: String) -> Spinner {
        if !std::io::stderr().is_terminal() {
            return Spinner(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(Some(bar))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_documents_its_exit_codes() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("3  cannot reach the host"), "{help}");
    }

    #[test]
    fn names_that_would_change_the_route_are_refused() {
        assert!(name("greeter").is_ok());
        for bad in ["", "a/b", "a?b", "a b", "a%2f"] {
            assert_eq!(name(bad).map_err(|f| f.exit_code()), Err(2), "{bad}");
        }
    }

    #[test]
    fn an_unreachable_host_is_exit_code_3() {
        // A port just freed: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client =
            Client::new(&format!("127.0.0.1:{port}"), None, Duration::from_secs(5)).unwrap();
        let failure = client.get("/v1/services").unwrap_err();
        assert_eq!(failure.exit_code(), 3, "{failure:?}");
        assert!(matches!(
            Client::new("https://x:1", None, Duration::from_secs(1)),
            Err(Failure::Usage(_))
        ));
    }
}
