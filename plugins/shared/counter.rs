// The counter service, shared by its builds. Each build's `lib.rs` sets:
// - `VERSION`: the plugin version;
// - `FORMAT`: the state format it exports (1: the count; 2: the count and the handovers);
// - `READS_LATER`: whether it reads formats later than its own by their prefix (the formats only
//   ever append fields, so a build can read a later one: rollbacks stay possible);
// - `FAULTS`: whether the `fault` method exists (test fixtures only).
//
// Methods: `increment` (answers the new count), `get`, `handovers` (how many times the state was
// handed to a new instance), `version`, and with `FAULTS`, `fail` (a failure, as a probation
// window counts them) and `fault` with input `export`,
// `import`, `import-panic`, `health` or `none`: the step of the next handover that fails. A fault
// of the import or the health check travels in the state to the next build. The step
// `export-calls-self` makes the export call the counter's own `get` through the host and fail
// with what that call answered.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use graft_plugin_api::{Error, Host, Output, Service, Stateful};

/// The counter.
#[derive(Debug)]
pub struct Counter {
    host: Host,
    count: AtomicU64,
    handovers: u64,
    fault: Mutex<String>,
}

impl Counter {
    fn fault(&self) -> String {
        self.fault.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

impl Service for Counter {
    fn create(host: Host) -> Result<Self, Error> {
        Ok(Counter { host, count: AtomicU64::new(0), handovers: 0, fault: Mutex::new(String::new()) })
    }

    fn call(&self, method: &str, input: &[u8], output: &mut Output<'_>) -> Result<(), Error> {
        match method {
            "increment" => write!(output, "{}", self.count.fetch_add(1, Ordering::SeqCst) + 1)?,
            "get" => write!(output, "{}", self.count.load(Ordering::SeqCst))?,
            "handovers" => write!(output, "{}", self.handovers)?,
            "version" => output.write(VERSION.as_bytes())?,
            "fail" if FAULTS => return Err(Error::new("this call fails on purpose")),
            "fault" if FAULTS => {
                let step = std::str::from_utf8(input).map_err(Error::invalid_input)?;
                if !["export", "export-calls-self", "import", "import-panic", "health", "none"].contains(&step) {
                    return Err(Error::invalid_input(format_args!("no fault step `{step}`")));
                }
                *self.fault.lock().map_err(|_| Error::new("poisoned"))? =
                    if step == "none" { String::new() } else { step.to_owned() };
            }
            _ => return Err(Error::unknown_method(method)),
        }
        Ok(())
    }

    fn health(&self) -> Result<(), Error> {
        if FAULTS && self.fault() == "health" {
            return Err(Error::new("unhealthy on purpose"));
        }
        Ok(())
    }
}

impl Stateful for Counter {
    const STATE_FORMAT: u32 = FORMAT;

    fn export_state(&self, state: &mut Output<'_>) -> Result<(), Error> {
        let fault = self.fault();
        if FAULTS && fault == "export" {
            return Err(Error::new("export failed on purpose"));
        }
        if FAULTS && fault == "export-calls-self" {
            let answer = match self.host.call("counter", "get", b"", &mut Vec::new()) {
                Ok(()) => "answered".to_owned(),
                Err(error) => error.message().to_owned(),
            };
            return Err(Error::new(format_args!("the export's call to itself: {answer}")));
        }
        state.write(&self.count.load(Ordering::SeqCst).to_le_bytes())?;
        if FORMAT >= 2 {
            state.write(&self.handovers.to_le_bytes())?;
            state.write(fault.as_bytes())?;
        }
        Ok(())
    }

    fn from_state(host: Host, format: u32, state: &[u8]) -> Result<Self, Error> {
        if format == 0 || (format > FORMAT && !READS_LATER) {
            return Err(Error::unknown_state_format(format, FORMAT));
        }
        let field = |at: usize| -> Result<u64, Error> {
            let bytes = state.get(at..at + 8).ok_or_else(|| Error::invalid_input("state too short"))?;
            Ok(u64::from_le_bytes(bytes.try_into().expect("eight bytes")))
        };
        let count = field(0)?;
        // Format 1 has no handovers: migrated, it starts counting them.
        let (handovers, fault) = if format >= 2 {
            (field(8)?, String::from_utf8_lossy(&state[16..]).into_owned())
        } else {
            (0, String::new())
        };
        if FAULTS && fault == "import" {
            return Err(Error::new("import failed on purpose"));
        }
        if FAULTS && fault == "import-panic" {
            panic!("import panicked on purpose");
        }
        Ok(Counter { host, count: AtomicU64::new(count), handovers: handovers + 1, fault: Mutex::new(fault) })
    }
}
