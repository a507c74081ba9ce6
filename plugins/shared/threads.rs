// The `threads` service shared by the fixture-threads builds: plugin code that uses ordinary `std`
// facilities on host threads and threads of its own, the way real plugins do. Each crate that
// includes this file defines VERSION before the `include!`.
// Inner doc comments cannot appear in an included file, hence plain comments.
//
// Methods:
// - `current`: `std::thread::current()` on the calling (host) thread, which makes this copy of
//   `std` take a pthread key whose destructor lives in this library; answers the thread's name.
// - `hold`: starts a worker thread that calls `park` on this very service through the host, and
//   returns once the worker is inside it. The worker holds that call's lease until the host's
//   runtime is gone, so it can hold the last reference to this instance.
// - `park`: waits, inside a call, until calls through the host fail (the runtime was dropped).
// - `ping`: answers `pong`.
// Dropping the instance stops and joins the worker and logs `threads <version> destroyed`.

use graft_plugin_api::{Error, Host, Output, Service};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

static ENTERED: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// The `threads` service: a worker thread of its own, and the host it calls back.
#[derive(Debug)]
pub struct Threads {
    host: Host,
    stop: std::sync::Arc<AtomicBool>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Service for Threads {
    fn create(host: Host) -> Result<Self, Error> {
        Ok(Threads {
            host,
            stop: std::sync::Arc::new(AtomicBool::new(false)),
            worker: Mutex::new(None),
        })
    }

    fn call(&self, method: &str, _input: &[u8], output: &mut Output<'_>) -> Result<(), Error> {
        match method {
            "current" => {
                let current = std::thread::current();
                Ok(output.write(current.name().unwrap_or("unnamed").as_bytes())?)
            }
            "hold" => {
                let (host, stop) = (self.host, std::sync::Arc::clone(&self.stop));
                let worker = std::thread::Builder::new()
                    .name("threads-worker".to_owned())
                    .spawn(move || {
                        while !stop.load(Ordering::Acquire) {
                            let mut answer = Vec::new();
                            if host.call(host.service(), "park", b"", &mut answer).is_err() {
                                break;
                            }
                        }
                    })
                    .map_err(Error::new)?;
                *self.worker.lock().unwrap_or_else(|e| e.into_inner()) = Some(worker);
                let (entered, changed) = &ENTERED;
                let mut entered = entered.lock().unwrap_or_else(|e| e.into_inner());
                while !*entered {
                    entered = changed.wait(entered).unwrap_or_else(|e| e.into_inner());
                }
                Ok(output.write(b"held")?)
            }
            "park" => {
                {
                    let (entered, changed) = &ENTERED;
                    *entered.lock().unwrap_or_else(|e| e.into_inner()) = true;
                    changed.notify_all();
                }
                // Plugin code waiting for its host to go away, as a plugin would: by asking it.
                let mut answer = Vec::new();
                while self.host.call(self.host.service(), "ping", b"", &mut answer).is_ok() {
                    answer.clear();
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            }
            "ping" => Ok(output.write(b"pong")?),
            _ => Err(Error::unknown_method(method)),
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(worker) = worker {
            // Joining from the worker itself fails ("Resource deadlock avoided") and panics:
            // the host must never destroy an instance on a thread running inside it.
            worker.join().expect("joining the worker");
        }
        // The host's log line names the thread this runs on (this library's `std` does not
        // know the names the host's gave its threads).
        self.host.info(&format!("threads {VERSION} destroyed"));
    }
}

graft_plugin_api::export_service!(
    Threads,
    name: "threads",
    version: VERSION,
    interface: "threads" @ "1.0.0"
);
