//! Fixture: the `rendezvous` service (1.0.0), where the gated workers of one start wave wait for
//! each other, and which records the order in which services arrived.
//!
//! - `expect` with input `a,b;c;d,e`: the waves (groups separated by `;`).
//! - `arrive` with a service's name: records it and blocks until every service of its wave has
//!   arrived (at most ten seconds, then an error naming who is missing).
//! - `order`: the arrivals so far, comma-separated.

use graft_plugin_api::{Error, Host, Output, Service, export_service};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The rendezvous: waves, arrivals, and a condition to wait on.
#[derive(Debug, Default)]
pub struct Rendezvous {
    state: Mutex<State>,
    arrived: Condvar,
}

#[derive(Debug, Default)]
struct State {
    waves: Vec<Vec<String>>,
    order: Vec<String>,
}

impl Service for Rendezvous {
    fn create(_host: Host) -> Result<Self, Error> {
        Ok(Rendezvous::default())
    }

    fn call(&self, method: &str, input: &[u8], output: &mut Output<'_>) -> Result<(), Error> {
        let text = std::str::from_utf8(input).map_err(Error::new)?;
        let mut state = self.state.lock().map_err(|_| Error::new("poisoned"))?;
        match method {
            "expect" => {
                state.waves = text
                    .split(';')
                    .map(|wave| wave.split(',').map(str::to_owned).collect())
                    .collect();
                Ok(())
            }
            "arrive" => {
                state.order.push(text.to_owned());
                self.arrived.notify_all();
                let Some(wave) = state.waves.iter().find(|w| w.iter().any(|m| m == text)).cloned()
                else {
                    return Ok(());
                };
                let (state, timeout) = self
                    .arrived
                    .wait_timeout_while(state, Duration::from_secs(10), |s| {
                        !wave.iter().all(|m| s.order.contains(m))
                    })
                    .map_err(|_| Error::new("poisoned"))?;
                if timeout.timed_out() {
                    let missing: Vec<&String> =
                        wave.iter().filter(|m| !state.order.contains(m)).collect();
                    return Err(Error::new(format!("{text} waited in vain for {missing:?}")));
                }
                Ok(())
            }
            "order" => Ok(output.write(state.order.join(",").as_bytes())?),
            _ => Err(Error::unknown_method(method)),
        }
    }
}

export_service!(Rendezvous, name: "rendezvous", version: "1.0.0", interface: "rendezvous" @ "1.0.0");
