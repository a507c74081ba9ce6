//! The provenance record: how a failure travels back through a chain of service calls.
//!
//! When a call from one service to another fails, the host writes a record into the calling
//! plugin's error buffer: the failure (which service, which version, which method, what kind,
//! the message) and the chain of calls it came through. A plugin that passes the failure on
//! (with `?` on a [`crate::CallError`]) hands the record back unchanged, and the host adds the
//! plugin's own hop. The caller at the top thus learns which service and version failed and
//! through which services, however deep.
//!
//! The encoding is text: records separated by `0x1e`, fields by `0x1f`, the first record a
//! format tag. Those two bytes are replaced by spaces inside fields.

const TAG: &str = "graft-provenance-1";
const RECORD: char = '\u{1e}';
const FIELD: char = '\u{1f}';

/// What kind of failure ended the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The service returned an error: a failure of the service.
    Error,
    /// The service said "no" on purpose (not found, invalid input, unknown method): the
    /// caller's problem, not a failure of the service. Added in `graft-plugin-api` 0.3; an older
    /// decoder reads it as `Other("refused")`.
    Refused,
    /// The service panicked.
    Panic,
    /// The service was not running (starting, paused, stopped or not loaded) within the deadline.
    NotReady,
    /// The service is stopped or failed and admits no calls.
    Stopped,
    /// Anything else, by name.
    Other(String),
}

/// One service call on the way to the failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The service called.
    pub service: String,
    /// Its version.
    pub version: String,
    /// The method called.
    pub method: String,
}

/// Where a chain of calls failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// The service that failed.
    pub service: String,
    /// Its version (empty when it was not running).
    pub version: String,
    /// The method called.
    pub method: String,
    /// The message.
    pub message: String,
}

/// A failure and the chain of calls it came through, outermost first. The chain does not
/// include the failing service itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The calls between the top and the failure, outermost first.
    pub chain: Vec<Hop>,
    /// The failure.
    pub failure: Failure,
}

impl Provenance {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let kind = match &self.failure.kind {
            FailureKind::Error => "error",
            FailureKind::Refused => "refused",
            FailureKind::Panic => "panic",
            FailureKind::NotReady => "not-ready",
            FailureKind::Stopped => "stopped",
            FailureKind::Other(other) => other.as_str(),
        };
        let f = &self.failure;
        let mut out = String::from(TAG);
        push_record(&mut out, &[kind, &f.service, &f.version, &f.method, &f.message]);
        for hop in &self.chain {
            push_record(&mut out, &[&hop.service, &hop.version, &hop.method]);
        }
        out.into_bytes()
    }

    /// Decodes a record; `None` if `bytes` is not one.
    pub fn decode(bytes: &[u8]) -> Option<Provenance> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut records = text.split(RECORD);
        if records.next()? != TAG {
            return None;
        }
        let failure: Vec<&str> = records.next()?.split(FIELD).collect();
        let [kind, service, version, method, message] = failure.as_slice() else {
            return None;
        };
        let kind = match *kind {
            "error" => FailureKind::Error,
            "refused" => FailureKind::Refused,
            "panic" => FailureKind::Panic,
            "not-ready" => FailureKind::NotReady,
            "stopped" => FailureKind::Stopped,
            other => FailureKind::Other(other.to_owned()),
        };
        let failure = Failure {
            kind,
            service: (*service).to_owned(),
            version: (*version).to_owned(),
            method: (*method).to_owned(),
            message: (*message).to_owned(),
        };
        let chain = records
            .map(|record| {
                let fields: Vec<&str> = record.split(FIELD).collect();
                match fields.as_slice() {
                    [service, version, method] => Some(Hop {
                        service: (*service).to_owned(),
                        version: (*version).to_owned(),
                        method: (*method).to_owned(),
                    }),
                    _ => None,
                }
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Provenance { chain, failure })
    }

    /// A one-line description: the chain, then the failure.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for hop in &self.chain {
            out.push_str(&format!("{} {} `{}` -> ", hop.service, hop.version, hop.method));
        }
        let f = &self.failure;
        let what = match &f.kind {
            FailureKind::Error => "failed",
            FailureKind::Refused => "refused",
            FailureKind::Panic => "panicked",
            FailureKind::NotReady => "was not ready",
            FailureKind::Stopped => "is stopped",
            FailureKind::Other(other) => other.as_str(),
        };
        let version = if f.version.is_empty() { String::new() } else { format!(" {}", f.version) };
        out.push_str(&format!("{}{version} {what} in `{}`: {}", f.service, f.method, f.message));
        out
    }
}

fn push_record(out: &mut String, fields: &[&str]) {
    out.push(RECORD);
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(FIELD);
        }
        out.extend(field.chars().map(|c| if c == RECORD || c == FIELD { ' ' } else { c }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Provenance {
        Provenance {
            chain: vec![
                Hop { service: "front".into(), version: "1.0.0".into(), method: "get".into() },
                Hop { service: "middle".into(), version: "1.2.0".into(), method: "fetch".into() },
            ],
            failure: Failure {
                kind: FailureKind::Panic,
                service: "back".into(),
                version: "2.0.0".into(),
                method: "read".into(),
                message: "disk\u{1e}on fire".into(),
            },
        }
    }

    #[test]
    fn a_record_round_trips_with_separators_in_fields_replaced() {
        let decoded = Provenance::decode(&sample().encode()).unwrap();
        assert_eq!(decoded.chain, sample().chain);
        assert_eq!(decoded.failure.message, "disk on fire");
        assert_eq!(decoded.failure.kind, FailureKind::Panic);
    }

    #[test]
    fn describe_names_the_chain_and_the_failing_service() {
        assert_eq!(
            sample().describe(),
            "front 1.0.0 `get` -> middle 1.2.0 `fetch` -> back 2.0.0 panicked in `read`: disk\u{1e}on fire"
        );
    }

    #[test]
    fn a_refusal_round_trips_as_a_refusal() {
        let mut refusal = sample();
        refusal.failure.kind = FailureKind::Refused;
        let decoded = Provenance::decode(&refusal.encode()).unwrap();
        assert_eq!(decoded.failure.kind, FailureKind::Refused);
        assert!(decoded.describe().ends_with("back 2.0.0 refused in `read`: disk on fire"));
    }

    #[test]
    fn other_bytes_are_not_a_record() {
        assert_eq!(Provenance::decode(b"plain message"), None);
        assert_eq!(Provenance::decode(b"graft-provenance-1\x1eerror\x1fa"), None);
    }
}
