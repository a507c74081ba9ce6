// The greeter service shared by the greeter builds and the fixtures derived from them. Each
// crate that includes this file defines, before the `include!`:
//   VERSION (the plugin version, also in every answer), FAIL_CREATE, FAIL_HEALTH,
//   HEALTHY_CHECKS (`Some(n)`: n health checks pass, every later one fails) and PANIC_EVERY
//   (`Some(n)`: `greet` panics on every n-th call).
// Inner doc comments cannot appear in an included file, hence plain comments.

use graft_plugin_api::{Error, Host, Output, Service};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The greeter: answers `greet` with a line that names its version, so callers can tell builds
/// apart.
#[derive(Debug)]
pub struct Greeter {
    host: Host,
    greetings: AtomicUsize,
    health_checks: AtomicUsize,
}

impl Service for Greeter {
    fn create(host: Host) -> Result<Self, Error> {
        if FAIL_CREATE {
            return Err(Error::new(format!("greeter {VERSION} refuses to start")));
        }
        host.info(&format!("greeter {VERSION} created"));
        Ok(Greeter { host, greetings: AtomicUsize::new(0), health_checks: AtomicUsize::new(0) })
    }

    fn call(&self, method: &str, input: &[u8], output: &mut Output<'_>) -> Result<(), Error> {
        match method {
            // The no-op the benchmarks measure: no input, no output.
            "noop" => Ok(()),
            "version" => Ok(output.write(VERSION.as_bytes())?),
            "greet" => {
                let n = self.greetings.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(every) = PANIC_EVERY
                    && n.is_multiple_of(every)
                {
                    panic!("greeter {VERSION} panicked on greeting {n}");
                }
                let name = std::str::from_utf8(input).map_err(Error::new)?;
                Ok(output.write(format!("hello, {name} from greeter {VERSION}").as_bytes())?)
            }
            // Connects to the Unix socket named by `input`, announces its version, and blocks
            // until the other side sends one byte: lets a test hold a call inside this build.
            "block" => {
                let path = std::str::from_utf8(input).map_err(Error::new)?;
                let mut stream = std::os::unix::net::UnixStream::connect(path)?;
                stream.write_all(VERSION.as_bytes())?;
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte)?;
                Ok(output.write(format!("released from greeter {VERSION}").as_bytes())?)
            }
            "panic" => panic!("greeter {VERSION} panicked on purpose"),
            "fail" => Err(Error::new(format!("greeter {VERSION} failed on purpose"))),
            // A lookup that never finds anything: the service's own "no", not a failure.
            "find" => Err(Error::not_found(format!("`{}`", String::from_utf8_lossy(input)))),
            "log" => {
                self.host.info(&format!("greeter {VERSION} says {}", String::from_utf8_lossy(input)));
                Ok(())
            }
            _ => Err(Error::unknown_method(method)),
        }
    }

    fn health(&self) -> Result<(), Error> {
        if FAIL_HEALTH {
            return Err(Error::new(format!("greeter {VERSION} is unwell")));
        }
        let n = self.health_checks.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(healthy) = HEALTHY_CHECKS
            && n > healthy
        {
            return Err(Error::new(format!("greeter {VERSION} fell ill after {healthy} checks")));
        }
        Ok(())
    }
}
