//! Talking to graft-host: the address and token, one request and its JSON answer, and what
//! went wrong, sorted by the exit code it leads to.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// The largest answer read (a call's output, twice: as text and as base64).
const MAX_ANSWER: u64 = 64 << 20;

/// Why a command failed, by exit code.
#[derive(Debug)]
pub enum Failure {
    /// Exit 1: the host answered with an error.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error's kind (`unknown_service`, ...).
        kind: String,
        /// The error's message.
        message: String,
        /// The whole answer, for `--json`.
        body: Value,
    },
    /// Exit 2: the command line cannot work (a bad address, an unreadable token file).
    Usage(String),
    /// Exit 3: the host cannot be reached, or did not answer as graft-host does.
    Unreachable(String),
}

impl Failure {
    /// The exit code documented in `--help`.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused { .. } => 1,
            Failure::Usage(_) => 2,
            Failure::Unreachable(_) => 3,
        }
    }
}

/// A connection to one host.
#[derive(Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    streaming: ureq::Agent,
}

impl Client {
    /// A client of the host at `addr` (`HOST:PORT`, or `http://HOST:PORT`), waiting at most
    /// `timeout` for an answer, with the token of `token_file` or of `GRAFT_TOKEN`.
    pub fn new(
        addr: &str,
        token_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Client, Failure> {
        let base = match addr.split_once("://") {
            None => format!("http://{addr}"),
            Some(("http", _)) => addr.trim_end_matches('/').to_owned(),
            Some((scheme, _)) => {
                return Err(Failure::Usage(format!(
                    "--addr {addr}: graft-host speaks plain HTTP, not {scheme}"
                )));
            }
        };
        let token = match token_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| {
                        Failure::Usage(format!("reading the token file {}: {e}", file.display()))
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var("GRAFT_TOKEN").ok().map(|t| t.trim().to_owned()),
        }
        .filter(|t| !t.is_empty());
        let config = |global: Option<Duration>| {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(5)))
                .timeout_global(global)
                .build()
                .new_agent()
        };
        Ok(Client { base, token, agent: config(Some(timeout)), streaming: config(None) })
    }

    /// Where the host is, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`, answered with JSON.
    pub fn get(&self, path: &str) -> Result<Value, Failure> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.answer(request.call())
    }

    /// `POST path` with `body`, answered with JSON.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let mut request =
            self.agent.post(format!("{}{path}", self.base)).content_type("application/json");
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        self.answer(request.send(body.to_string()))
    }

    /// Streams `GET path` line by line to `each` until the host ends it (`Ok`) or the
    /// connection breaks.
    pub fn stream(&self, path: &str, mut each: impl FnMut(&str)) -> Result<(), Failure> {
        let mut request = self.streaming.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let response = request.call().map_err(|e| self.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(self.refusal(response));
        }
        let reader = BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let line = line.map_err(|e| {
                Failure::Unreachable(format!("the event stream from {} broke: {e}", self.base))
            })?;
            if !line.trim().is_empty() {
                each(&line);
            }
        }
        Ok(())
    }

    fn answer(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, Failure> {
        let response = result.map_err(|e| self.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(self.refusal(response));
        }
        let mut text = String::new();
        let limit = MAX_ANSWER;
        response.into_body().into_reader().take(limit).read_to_string(&mut text).map_err(|e| {
            Failure::Unreachable(format!("reading the answer of {}: {e}", self.base))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            Failure::Unreachable(format!(
                "{} did not answer JSON ({e}): is it graft-host?",
                self.base
            ))
        })
    }

    fn refusal(&self, response: ureq::http::Response<ureq::Body>) -> Failure {
        let status = response.status().as_u16();
        let mut text = String::new();
        let _ = response.into_body().into_reader().take(1 << 20).read_to_string(&mut text);
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let field = |name: &str| body["error"][name].as_str().map(str::to_owned);
        Failure::Refused {
            status,
            kind: field("kind").unwrap_or_else(|| format!("http_{status}")),
            message: field("message").unwrap_or_else(|| {
                let reason = ureq::http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("error");
                format!("{} answered {status} {reason}", self.base)
            }),
            body,
        }
    }

    fn unreachable(&self, error: &ureq::Error) -> Failure {
        match error {
            ureq::Error::BadUri(uri) => Failure::Usage(format!("--addr: not an address: {uri}")),
            other => Failure::Unreachable(format!(
                "cannot reach graft-host at {}: {other} (is it running? set --addr or GRAFT_ADDR)",
                self.base
            )),
        }
    }
}
