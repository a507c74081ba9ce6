//! A host for the retirement tests: scenarios that crashed or aborted a host process when a
//! plugin's code was retired, run in a process of their own so that a crash fails the test that
//! spawned it instead of killing it. Each prints `ok: ...` and exits 0 when the host survived.
//!
//! - `retire_host thread-exit <threads-1.0> <threads-1.1>`: a long-lived host thread runs plugin
//!   code that calls `std::thread::current()`; the build is swapped out with no history and
//!   retired; then the thread exits. (It died with SIGSEGV when the library was unmapped.)
//! - `retire_host keys <threads-1.0> <threads-1.1>`: swaps back and forth, calling
//!   `std::thread::current()` on a host thread after each swap, so that each copy of the
//!   plugin's `std` takes a pthread key, until a load is refused. (It aborted with
//!   `fatal runtime error: out of TLS keys` after about a thousand loads.)
//! - `retire_host own-thread <threads-1.0>`: a plugin's worker thread, inside a host callback to
//!   its own service, holds the last reference to the instance while the runtime is dropped.
//!   (The instance was destroyed on that worker, whose `destroy` then joined itself.)

use std::process::ExitCode;
use std::time::Duration;

use graft_runtime::{Error, EventKind, Runtime};

const PATIENCE: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    // Thread names on: a test reads which thread destroyed an instance.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_thread_names(true)
        .init();
    match run() {
        Ok(message) => {
            println!("ok: {message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("failed: {error}");
            ExitCode::from(2)
        }
    }
}

type Outcome = Result<String, Box<dyn std::error::Error>>;

fn run() -> Outcome {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [scenario, first, second] if scenario == "thread-exit" => thread_exit(first, second),
        [scenario, first, second] if scenario == "keys" => keys(first, second),
        [scenario, first] if scenario == "own-thread" => own_thread(first),
        _ => Err("usage: retire_host thread-exit|keys|own-thread <plugin> [<plugin>]".into()),
    }
}

fn thread_exit(first: &str, second: &str) -> Outcome {
    let runtime = Runtime::builder().history_depth(0).build()?;
    runtime.load_and_start(first)?;
    let handle = runtime.handle("threads")?;
    let (exit, exit_now) = std::sync::mpsc::channel::<()>();
    let (ran, has_run) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new().name("host-worker".to_owned()).spawn(move || {
        let _ = ran.send(handle.call_to_vec("current", b""));
        // Lives on past the retirement of the build whose code it ran.
        let _ = exit_now.recv();
    })?;
    // The plugin's copy of `std` does not know the host's name for the thread: any answer will
    // do, as long as its code ran on this thread.
    has_run.recv_timeout(PATIENCE)??;
    let swap = runtime.swap("threads", second)?;
    swap.previous.wait_retired(PATIENCE)?;
    // Its `std` left a pthread-key destructor on this host thread: unmapping is not safe.
    if !swap.previous.is_mapped() {
        return Err("the retired library was unmapped under a live key destructor".into());
    }
    // The thread exits now, running the thread-exit work that the retired copy of `std`
    // registered on it.
    exit.send(())?;
    thread.join().map_err(|_| "the host thread panicked")?;
    Ok("the host thread exited after the build it ran was retired".to_owned())
}

fn keys(first: &str, second: &str) -> Outcome {
    let runtime = Runtime::builder().history_depth(0).build()?;
    runtime.load_and_start(first)?;
    let handle = runtime.handle("threads")?;
    let builds = [second, first];
    let start = runtime.load_budget().pthread_keys_free;
    for swap in 0..4096 {
        // Each swap loads a fresh copy of the library, with a fresh copy of `std`.
        match runtime.swap("threads", builds[swap % 2]) {
            Ok(_) => {}
            Err(error @ Error::LoadBudgetExhausted { .. }) => {
                let left = runtime.load_budget().pthread_keys_free;
                // The refused load leaves the serving build serving.
                handle.call_to_vec("ping", b"")?;
                return Ok(format!(
                    "refused after {swap} swaps ({start} keys free before, {left} after): {error}"
                ));
            }
            Err(error) => return Err(error.into()),
        }
        handle.call_to_vec("current", b"")?;
    }
    Err("no load was refused in 4096 swaps".into())
}

fn own_thread(first: &str) -> Outcome {
    let runtime = Runtime::builder().call_deadline(Duration::from_millis(50)).build()?;
    let events = runtime.subscribe();
    runtime.load_and_start(first)?;
    let generation = runtime.handle("threads")?.generation().ok_or("no generation serving")?;
    // The worker is inside a call to its own service when this returns.
    runtime.call("threads", "hold", b"")?;
    drop(runtime);
    // The events keep coming after the runtime is gone: the retire thread reports the
    // instance's destruction.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let event = events.recv_timeout(left).map_err(|_| "the instance was never retired")?;
        if matches!(event.kind, EventKind::Retired { generation: g, .. } if g == generation) {
            return Ok(format!("generation {generation} retired after the runtime was dropped"));
        }
    }
}
