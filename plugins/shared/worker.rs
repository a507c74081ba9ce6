// The worker service shared by the worker builds: a template the tests and benchmarks load
// under many names. Each crate that includes this file defines, before the `include!`:
//   VERSION, RENDEZVOUS (create waits at the `rendezvous` service for its wave) and
//   PANIC_IN_CREATE (create panics: a crash loop).
// Inner doc comments cannot appear in an included file, hence plain comments.

use graft_plugin_api::{Error, Host, Output, Service};
use std::collections::HashSet;
use std::sync::Mutex;

// The instances of this library that are alive. A restart makes a new instance from the same
// library, so every instance of one service shares this set: a call that reaches an instance
// not in it has reached a destroyed (stopped) instance, and says so.
static LIVE: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

fn live() -> std::sync::MutexGuard<'static, Option<HashSet<usize>>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A worker: its construction does a little work, and it can relay calls to other services.
#[derive(Debug)]
pub struct Worker {
    host: Host,
    id: Box<u8>,
}

impl Worker {
    fn identity(&self) -> usize {
        &*self.id as *const u8 as usize
    }
}

/// A little deterministic work, standing in for a service's set-up (about 50 µs).
fn warm_up() -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

impl Service for Worker {
    fn create(host: Host) -> Result<Self, Error> {
        if PANIC_IN_CREATE {
            panic!("{} {VERSION} cannot start", host.service());
        }
        warm_up();
        if RENDEZVOUS {
            let mut answer = Vec::new();
            host.call("rendezvous", "arrive", host.service().as_bytes(), &mut answer)?;
        }
        let worker = Worker { host, id: Box::new(0) };
        live().get_or_insert_with(HashSet::new).insert(worker.identity());
        Ok(worker)
    }

    fn call(&self, method: &str, input: &[u8], output: &mut Output<'_>) -> Result<(), Error> {
        if !live().as_ref().is_some_and(|l| l.contains(&self.identity())) {
            return Err(Error::new("a call reached a destroyed instance"));
        }
        match method {
            "noop" => Ok(()),
            "whoami" => Ok(output.write(format!("{} {VERSION}", self.host.service()).as_bytes())?),
            "instance" => Ok(output.write(self.identity().to_string().as_bytes())?),
            "fail" => Err(Error::new(format!("{} failed on purpose", self.host.service()))),
            "panic" => panic!("{} panicked on purpose", self.host.service()),
            // `relay` with input "s1,s2/method": calls s1's `relay` with "s2/method", and so on;
            // the last service runs `method` itself. Failures pass back with `?`, keeping their
            // provenance.
            "relay" => {
                let text = std::str::from_utf8(input).map_err(Error::new)?;
                let (path, last) = text.split_once('/').unwrap_or((text, "whoami"));
                match path.split_once(',') {
                    _ if path.is_empty() => self.call(last, b"", output),
                    Some((next, rest)) => self.relay(next, &format!("{rest}/{last}"), output),
                    None => self.relay(path, &format!("/{last}"), output),
                }
            }
            _ => Err(Error::unknown_method(method)),
        }
    }
}

impl Worker {
    fn relay(&self, next: &str, input: &str, output: &mut Output<'_>) -> Result<(), Error> {
        let mut answer = Vec::new();
        self.host.call(next, "relay", input.as_bytes(), &mut answer)?;
        Ok(output.write(&answer)?)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let identity = self.identity();
        if let Some(live) = live().as_mut() {
            live.remove(&identity);
        }
    }
}
