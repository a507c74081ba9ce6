//! Fixture: the `slowhealth` service (1.0.0), whose health check can be held by a test.
//!
//! The first health check of an instance (the one a start runs) passes at once. The first later
//! check of this library (a periodic one, or the one that closes a probation window) connects
//! to the abstract Unix socket `graft-health-<service>` (the service's name as loaded), sends
//! one byte and waits for one back: while the test holds that byte, health code runs inside the
//! instance. Nobody listening: it passes at once. Every check after that one passes at once, so
//! that the test never has to release more than one.

use graft_plugin_api::{Error, Host, Output, Service, export_service};
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Whether an instance of this library has held a health check already.
static HELD_ONCE: AtomicBool = AtomicBool::new(false);

/// The service: answers `whoami`, and counts its health checks.
#[derive(Debug)]
pub struct SlowHealth {
    host: Host,
    checks: AtomicUsize,
}

impl Service for SlowHealth {
    fn create(host: Host) -> Result<Self, Error> {
        Ok(SlowHealth { host, checks: AtomicUsize::new(0) })
    }

    fn call(&self, method: &str, _input: &[u8], output: &mut Output<'_>) -> Result<(), Error> {
        match method {
            "whoami" => Ok(output.write(format!("{} 1.0.0", self.host.service()).as_bytes())?),
            _ => Err(Error::unknown_method(method)),
        }
    }

    fn health(&self) -> Result<(), Error> {
        if self.checks.fetch_add(1, Ordering::Relaxed) == 0
            || HELD_ONCE.swap(true, Ordering::AcqRel)
        {
            return Ok(());
        }
        let name = format!("graft-health-{}", self.host.service());
        let Ok(address) = SocketAddr::from_abstract_name(name.as_bytes()) else { return Ok(()) };
        let Ok(mut stream) = UnixStream::connect_addr(&address) else { return Ok(()) };
        // A test that never answers fails by its own bound; this one keeps the host alive.
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(b"h")?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)?;
        Ok(())
    }
}

export_service!(SlowHealth, name: "slowhealth", version: "1.0.0", interface: "slowhealth" @ "1.0.0");
