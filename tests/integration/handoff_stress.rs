//! Stress tests of the stateful handoff and of canary releases, with exact accounting: every
//! increment issued is counted once, every call issued is answered by a known build, and no
//! call fails while operations, refused handovers and canary verdicts interleave with calls.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use graft_runtime::{
    CanaryPolicy, Error, Event, EventKind, EventReceiver, GenerationId, ProbationPolicy, Runtime,
    RuntimeBuilder, ServiceHandle, ServiceState, SwapStrategy,
};
use graft_tests::Fixture;

use super::{PATIENCE, Setup, greeting};

/// No probation and no periodic health check: only the test changes the service.
fn quiet() -> RuntimeBuilder {
    Runtime::builder().probation(ProbationPolicy::disabled()).health_interval(None)
}

fn count(handle: &ServiceHandle) -> u64 {
    let answer = handle.call_to_vec("get", b"").expect("get");
    String::from_utf8(answer).expect("utf-8").parse().expect("a count")
}

fn counter_version(handle: &ServiceHandle) -> String {
    String::from_utf8(handle.call_to_vec("version", b"").expect("version")).expect("utf-8")
}

/// Threads that increment the counter from the moment a barrier lets them go until told to
/// stop; each checks the flag after its call, so each also calls once after the last operation.
/// Each counts the calls it has completed in its own `progress` slot.
struct Incrementers<'scope> {
    stop: &'scope AtomicBool,
    issued: &'scope AtomicU64,
    progress: &'scope [AtomicU64],
    threads: Vec<std::thread::ScopedJoinHandle<'scope, Vec<Error>>>,
}

impl<'scope> Incrementers<'scope> {
    fn spawn<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        handle: &ServiceHandle,
        go: &'scope Barrier,
        stop: &'scope AtomicBool,
        issued: &'scope AtomicU64,
        progress: &'scope [AtomicU64],
    ) -> Incrementers<'scope> {
        let threads = progress
            .iter()
            .map(|done| {
                let handle = handle.clone();
                scope.spawn(move || {
                    let mut errors = Vec::new();
                    go.wait();
                    loop {
                        let last = stop.load(Ordering::Acquire);
                        issued.fetch_add(1, Ordering::Relaxed);
                        if let Err(error) = handle.call_to_vec("increment", b"") {
                            errors.push(error);
                        }
                        done.fetch_add(1, Ordering::Release);
                        if last {
                            return errors;
                        }
                    }
                })
            })
            .collect();
        Incrementers { stop, issued, progress, threads }
    }

    /// Returns once every thread has completed a call it had started or made since: the calls
    /// an operation held back have all been answered (or have failed), so the next operation
    /// is judged on its own.
    fn settle(&self) {
        let before: Vec<u64> = self.progress.iter().map(|d| d.load(Ordering::Acquire)).collect();
        while self.progress.iter().zip(&before).any(|(d, b)| d.load(Ordering::Acquire) <= *b) {
            std::thread::yield_now();
        }
    }

    /// Stops the threads; returns the increments issued and every error they saw.
    fn finish(self) -> (u64, Vec<Error>) {
        self.stop.store(true, Ordering::Release);
        let errors = self.threads.into_iter().flat_map(|t| t.join().expect("caller")).collect();
        (self.issued.load(Ordering::Relaxed), errors)
    }
}

fn progress(threads: usize) -> Vec<AtomicU64> {
    (0..threads).map(|_| AtomicU64::new(0)).collect()
}

/// Sets its flag when dropped, also while a failed assertion unwinds: a scope whose threads
/// loop until the flag is set then ends, and the test fails instead of hanging.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn assert_no_errors(errors: &[Error]) {
    assert!(errors.is_empty(), "{} calls failed, the first: {:?}", errors.len(), errors.first());
}

/// Eight threads increment the counter while one thread runs every operation that moves its
/// state (swap, rollback, restart, each also while paused where allowed, and save_state with a
/// state directory, running and paused) and another reads the status throughout. Every
/// increment issued is counted once, no call fails, the status never shows the service in
/// another state or build, and the state saved at the stop brings back the exact count.
#[test]
fn eight_incrementers_lose_nothing_across_handoffs_pauses_saves_and_status_reads() {
    const ROUNDS: usize = 12;
    let state_dir = tempfile::tempdir().expect("state directory");
    let setup = Setup::with(quiet().state_dir(state_dir.path()));
    let runtime = &setup.runtime;
    let v1_0 = graft_tests::path(Fixture::Counter1_0).unwrap();
    let v1_1 = graft_tests::path(Fixture::Counter1_1).unwrap();
    runtime.load_and_start(&v1_0).unwrap();
    let counter = runtime.handle("counter").unwrap();

    let (go, stop, issued) = (Barrier::new(8 + 2), AtomicBool::new(false), AtomicU64::new(0));
    let (status_stop, progress) = (AtomicBool::new(false), progress(8));
    let (operations, statuses, anomalies, issued, errors) = std::thread::scope(|scope| {
        let _stop = (StopOnDrop(&stop), StopOnDrop(&status_stop));
        let load = Incrementers::spawn(scope, &counter, &go, &stop, &issued, &progress);
        let reader = scope.spawn(|| {
            let mut anomalies = Vec::new();
            let mut reads = 0u64;
            go.wait();
            while !status_stop.load(Ordering::Acquire) {
                reads += 1;
                let all = runtime.status();
                let Some(status) = all.iter().find(|s| s.service == "counter") else {
                    anomalies.push("the status lost the counter".to_owned());
                    continue;
                };
                let version = status.version.to_string();
                let current = status.current.as_ref().map(|g| g.version.to_string());
                let up = matches!(status.state, ServiceState::Running | ServiceState::Paused);
                let known = ["1.0.0", "1.1.0"].contains(&version.as_str());
                if !up || !known || current.is_none() || status.canary.is_some() {
                    anomalies.push(format!(
                        "state {}, build {version}, current {current:?}",
                        status.state
                    ));
                }
            }
            (reads, anomalies)
        });
        go.wait();
        let mut operations = 0u32;
        let mut op = |what: &str, result: Result<(), Error>| {
            if let Err(error) = result {
                panic!("{what} failed: {error:?}");
            }
            operations += 1;
        };
        for _ in 0..ROUNDS {
            let other = if counter_version(&counter) == "1.0.0" { &v1_1 } else { &v1_0 };
            let before = counter.generation();
            op("swap", runtime.swap("counter", other).map(|r| assert_ne!(r.from, r.to)));
            assert_ne!(counter.generation(), before, "the swap published a new generation");
            op("save_state", runtime.save_state("counter"));
            op("restart", runtime.restart("counter").map(drop));
            op("pause", runtime.pause("counter"));
            op("save_state (paused)", runtime.save_state("counter"));
            op("restart (paused)", runtime.restart("counter").map(drop));
            op("rollback (paused)", runtime.rollback("counter").map(drop));
            assert_eq!(counter.state(), ServiceState::Paused, "handoffs keep a pause");
            // A swap is refused while paused; the refusal must not disturb the pause.
            match runtime.swap("counter", other) {
                Err(Error::InvalidState { state: ServiceState::Paused, .. }) => {}
                other => panic!("a swap of a paused service: {other:?}"),
            }
            op("resume", runtime.resume("counter"));
            op("rollback", runtime.rollback("counter").map(drop));
            assert_eq!(counter.state(), ServiceState::Running);
        }
        let (issued, errors) = load.finish();
        status_stop.store(true, Ordering::Release);
        let (statuses, anomalies) = reader.join().expect("status reader");
        (operations, statuses, anomalies, issued, errors)
    });
    assert_no_errors(&errors);
    assert!(anomalies.is_empty(), "{} odd statuses, the first: {}", anomalies.len(), anomalies[0]);
    assert_eq!(operations, 9 * ROUNDS as u32);
    assert!(statuses > 0 && issued > 0);
    assert_eq!(count(&counter), issued, "every increment issued is counted, none twice");

    // The stop saves the state; a new host restores it with the exact count.
    runtime.stop("counter").unwrap();
    drop(counter);
    drop(setup);
    let again = Setup::with(quiet().state_dir(state_dir.path()));
    again.runtime.restore().unwrap();
    let counter = again.runtime.handle("counter").unwrap();
    assert_eq!(count(&counter), issued, "the state saved at the stop holds every increment");
}

/// What one greeter caller saw.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    issued: u64,
    by_1_0: u64,
    by_1_1: u64,
    by_flaky: u64,
    flaky_panics: u64,
    unknown: u64,
    errors: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.issued += other.issued;
        self.by_1_0 += other.by_1_0;
        self.by_1_1 += other.by_1_1;
        self.by_flaky += other.by_flaky;
        self.flaky_panics += other.flaky_panics;
        self.unknown += other.unknown;
        self.errors += other.errors;
    }
}

/// A canary at `weight` that its calls never promote nor abort.
fn never_judged(weight: f64) -> SwapStrategy {
    SwapStrategy::Canary(CanaryPolicy {
        weight,
        calls: u64::MAX,
        max_failures: u64::MAX,
        max_failure_rate: f64::NAN,
        min_calls: u64::MAX,
    })
}

/// A canary at half the calls, promoted after `calls` calls, aborted at its first failure.
fn judged(calls: u64) -> SwapStrategy {
    SwapStrategy::Canary(CanaryPolicy {
        weight: 0.5,
        calls,
        max_failures: 0,
        max_failure_rate: 1.0,
        min_calls: u64::MAX,
    })
}

/// The first event `pick` accepts, among those seen already or arriving within [`PATIENCE`];
/// every event received is kept in `seen`.
fn event(events: &EventReceiver, seen: &mut Vec<Event>, pick: impl Fn(&Event) -> bool) -> Event {
    if let Some(event) = seen.iter().find(|e| pick(e)) {
        return event.clone();
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        match events.recv_deadline(deadline) {
            Ok(event) => {
                seen.push(event.clone());
                if pick(&event) {
                    return event;
                }
            }
            Err(error) => panic!("no such event within {PATIENCE:?}: {error}"),
        }
    }
}

fn serving(runtime: &Runtime) -> String {
    runtime.service_status("greeter").unwrap().current.unwrap().version.to_string()
}

/// Back to greeter 1.0 after a canary of 1.1 was promoted (a stateless rollback).
fn back_to_1_0(runtime: &Runtime) {
    if serving(runtime) == "1.1.0" {
        runtime.rollback("greeter").unwrap();
    }
    assert_eq!(serving(runtime), "1.0.0");
}

/// Four threads call the greeter while canaries are released, promoted and aborted over and
/// over, by hand and by their calls' verdicts, also while paused, and with a manual promote or
/// abort racing a verdict: every call is answered by a known build (the flaky canary's panics
/// are its own, counted, failures), nothing else fails, every canary is retired once out of
/// service, and only the serving build and its rollback target stay staged.
#[test]
fn four_callers_see_only_known_builds_while_canaries_churn() {
    const ROUNDS: usize = 24;
    const CALLERS: usize = 4;
    let setup = Setup::with(quiet());
    let runtime = &setup.runtime;
    let events = runtime.subscribe();
    let v1_0 = graft_tests::path(Fixture::Greeter1_0).unwrap();
    let v1_1 = graft_tests::path(Fixture::Greeter1_1).unwrap();
    let flaky = graft_tests::path(Fixture::Flaky).unwrap();
    runtime.load_and_start(&v1_0).unwrap();
    let greeter = runtime.handle("greeter").unwrap();

    let (go, stop) = (Barrier::new(CALLERS + 1), AtomicBool::new(false));
    let mut seen = Vec::new();
    let mut canaries: Vec<GenerationId> = Vec::new();
    let total = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let callers: Vec<_> = (0..CALLERS)
            .map(|n| {
                let (handle, go, stop) = (greeter.clone(), &go, &stop);
                scope.spawn(move || {
                    let name = format!("caller-{n}");
                    let answers = [
                        greeting(&name, "1.0.0"),
                        greeting(&name, "1.1.0"),
                        greeting(&name, "1.9.0"),
                    ];
                    let mut tally = Tally::default();
                    let mut answer = Vec::new();
                    go.wait();
                    loop {
                        let last = stop.load(Ordering::Acquire);
                        answer.clear();
                        tally.issued += 1;
                        match handle.call("greet", name.as_bytes(), &mut answer) {
                            Ok(()) if answer == answers[0] => tally.by_1_0 += 1,
                            Ok(()) if answer == answers[1] => tally.by_1_1 += 1,
                            Ok(()) if answer == answers[2] => tally.by_flaky += 1,
                            Ok(()) => tally.unknown += 1,
                            Err(Error::PluginPanicked { version, .. })
                                if version.to_string() == "1.9.0" =>
                            {
                                tally.flaky_panics += 1;
                            }
                            Err(_) => tally.errors += 1,
                        }
                        if last {
                            return tally;
                        }
                    }
                })
            })
            .collect();
        go.wait();
        for round in 0..ROUNDS {
            match round % 6 {
                // Promoted by hand while paused; the changes a canary blocks are refused.
                0 => {
                    let report = runtime.swap_with("greeter", &v1_1, never_judged(0.5)).unwrap();
                    canaries.push(report.generation);
                    assert!(matches!(
                        runtime.rollback("greeter"),
                        Err(Error::CanaryInProgress { .. })
                    ));
                    assert!(matches!(
                        runtime.restart("greeter"),
                        Err(Error::CanaryInProgress { .. })
                    ));
                    runtime.pause("greeter").unwrap();
                    let promoted = runtime.promote("greeter").unwrap();
                    assert_eq!(promoted.generation, report.generation);
                    assert_eq!(runtime.state("greeter").unwrap(), ServiceState::Paused);
                    runtime.resume("greeter").unwrap();
                    back_to_1_0(runtime);
                }
                // Aborted by hand.
                1 => {
                    let report = runtime.swap_with("greeter", &v1_1, never_judged(0.3)).unwrap();
                    canaries.push(report.generation);
                    let watch = runtime.abort("greeter").unwrap();
                    assert_eq!(watch.generation(), report.generation);
                }
                // Promoted by its calls.
                2 => {
                    let id = runtime.swap_with("greeter", &v1_1, judged(100)).unwrap().generation;
                    canaries.push(id);
                    event(&events, &mut seen, |e| {
                        e.kind
                            == EventKind::CanaryPromoted {
                                from: semver::Version::new(1, 0, 0),
                                generation: id,
                                automatic: true,
                            }
                    });
                    back_to_1_0(runtime);
                }
                // Aborted by its calls: the flaky build panics on every fourth greeting.
                3 => {
                    let id = runtime.swap_with("greeter", &flaky, judged(1_000_000)).unwrap();
                    canaries.push(id.generation);
                    event(&events, &mut seen, |e| {
                        matches!(e.kind, EventKind::CanaryAborted { generation, .. }
                            if generation == id.generation)
                    });
                    assert_eq!(serving(runtime), "1.0.0");
                }
                // A manual promote, then a manual abort, each racing its canary's verdict.
                4 => {
                    let id = runtime.swap_with("greeter", &v1_1, judged(20)).unwrap().generation;
                    canaries.push(id);
                    match runtime.promote("greeter") {
                        Ok(report) => assert_eq!(report.generation, id),
                        Err(Error::NoCanary { .. }) => {}
                        Err(other) => panic!("promote: {other:?}"),
                    }
                    assert_eq!(serving(runtime), "1.1.0", "promoted, by hand or by its calls");
                    back_to_1_0(runtime);
                    let id = runtime.swap_with("greeter", &v1_1, judged(20)).unwrap().generation;
                    canaries.push(id);
                    match runtime.abort("greeter") {
                        Ok(watch) => assert_eq!(watch.generation(), id),
                        Err(Error::NoCanary { .. }) => {}
                        Err(other) => panic!("abort: {other:?}"),
                    }
                    back_to_1_0(runtime);
                }
                // Aborted by hand while paused, taking every call before.
                _ => {
                    let report = runtime.swap_with("greeter", &v1_1, never_judged(1.0)).unwrap();
                    canaries.push(report.generation);
                    runtime.pause("greeter").unwrap();
                    runtime.abort("greeter").unwrap();
                    assert_eq!(runtime.state("greeter").unwrap(), ServiceState::Paused);
                    runtime.resume("greeter").unwrap();
                }
            }
            let status = runtime.service_status("greeter").unwrap();
            assert!(status.canary.is_none(), "round {round} left a canary: {status:?}");
            assert_eq!(status.state, ServiceState::Running);
        }
        stop.store(true, Ordering::Release);
        let mut total = Tally::default();
        for caller in callers {
            total += caller.join().expect("caller");
        }
        total
    });
    assert_eq!(total.errors, 0, "{total:?}");
    assert_eq!(total.unknown, 0, "{total:?}");
    assert_eq!(
        total.issued,
        total.by_1_0 + total.by_1_1 + total.by_flaky + total.flaky_panics,
        "calls issued == calls answered: {total:?}"
    );
    assert!(total.by_1_1 > 0 && total.by_flaky > 0 && total.flaky_panics > 0, "{total:?}");

    // Every canary out of service is retired; the one kept as the rollback target is not.
    let status = runtime.service_status("greeter").unwrap();
    let current = status.current.as_ref().unwrap();
    assert_eq!(current.version.to_string(), "1.0.0");
    let kept: Vec<GenerationId> = status.history.iter().map(|g| g.id).collect();
    for id in canaries.iter().filter(|id| !kept.contains(id)) {
        event(
            &events,
            &mut seen,
            |e| matches!(e.kind, EventKind::Retired { generation, .. } if generation == *id),
        );
    }
    assert_eq!(
        setup.staged_files(),
        1 + status.history.len(),
        "only the serving build and its rollback target stay staged"
    );
    assert_eq!(greeter.call_to_vec("greet", b"end").unwrap(), greeting("end", "1.0.0"));
}

/// Every step of a handover that can fail (export, import, a panicking import, the new
/// instance's health check), in a swap, a rollback, a restart and a save, under eight
/// incrementing threads and a short call deadline: each operation is refused with its step's
/// error, the old instance serves on, no call fails (the calls held back during an attempt go
/// to the old instance within their deadline) and no increment is lost. After each operation
/// every thread completes a call before the next one begins, so that each refused handover is
/// judged on its own (handovers back to back are the next test's subject).
///
/// The deadline is 2 s, not shorter: the `import-panic` step panics in the plugin while calls
/// are held, and with `RUST_BACKTRACE` set the plugin's panic hook symbolises a backtrace of
/// the test binary first, which took over 250 ms on CI and failed held calls for a reason that
/// is not the runtime's.
#[test]
fn refused_handovers_under_load_and_a_short_call_deadline_fail_no_call() {
    const ROUNDS: usize = 4;
    let state_dir = tempfile::tempdir().expect("state directory");
    let setup =
        Setup::with(quiet().call_deadline(Duration::from_secs(2)).state_dir(state_dir.path()));
    let runtime = &setup.runtime;
    let faulty_1 = graft_tests::path(Fixture::CounterFaulty1).unwrap();
    let faulty_2 = graft_tests::path(Fixture::CounterFaulty2).unwrap();
    runtime.load_and_start(&faulty_1).unwrap();
    let counter = runtime.handle("counter").unwrap();
    // A rollback needs a target: 1.3 serves, 1.2 is kept.
    runtime.swap("counter", &faulty_2).unwrap();

    let (go, stop, issued) = (Barrier::new(8 + 1), AtomicBool::new(false), AtomicU64::new(0));
    let (mut refusals, progress) = (0u32, progress(8));
    let (issued, errors) = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let load = Incrementers::spawn(scope, &counter, &go, &stop, &issued, &progress);
        go.wait();
        for round in 0..ROUNDS {
            for step in ["export", "import", "import-panic", "health"] {
                counter.call_to_vec("fault", step.as_bytes()).unwrap();
                let serving = counter.generation().unwrap();
                let version = counter_version(&counter);
                let other = if version == "1.3.0" { &faulty_1 } else { &faulty_2 };
                // The swap only in the first round: each one loads the library again.
                let operations: &[&str] = if round == 0 {
                    &["rollback", "restart", "swap"]
                } else {
                    &["rollback", "restart"]
                };
                for &operation in operations {
                    let outcome = match operation {
                        "rollback" => runtime.rollback("counter").map(drop),
                        "restart" => runtime.restart("counter").map(drop),
                        _ => runtime.swap("counter", other).map(drop),
                    };
                    load.settle();
                    let context = format!("{operation} with the {step} fault in {version}");
                    let Err(error) = outcome else { panic!("{context} went through") };
                    let expected = matches!(
                        (step, &error),
                        ("export", Error::StateExportFailed { panicked: false, .. })
                            | ("import", Error::StateImportFailed { panicked: false, .. })
                            | ("import-panic", Error::StateImportFailed { panicked: true, .. })
                            | ("health", Error::HealthCheckFailed { .. })
                    );
                    assert!(expected, "{context}: unexpected error {error:?}");
                    assert_eq!(counter.generation(), Some(serving), "{context}: the old serves");
                    refusals += 1;
                }
                // A save exports only: only the export fault refuses it.
                let saved = runtime.save_state("counter");
                load.settle();
                match (step, saved) {
                    ("export", Err(Error::StateExportFailed { .. })) => refusals += 1,
                    ("export", other) => panic!("save_state with the export fault: {other:?}"),
                    (_, Ok(())) => {}
                    (_, Err(error)) => panic!("save_state with the {step} fault: {error:?}"),
                }
                assert_eq!(counter.generation(), Some(serving), "a save keeps the instance");
                assert_eq!(counter.state(), ServiceState::Running);
            }
            // Cleared, the same handovers go through and the builds alternate.
            counter.call_to_vec("fault", b"none").unwrap();
            runtime.rollback("counter").unwrap();
            load.settle();
            runtime.restart("counter").unwrap();
            load.settle();
        }
        load.finish()
    });
    assert_no_errors(&errors);
    // Per round and step, a rollback and a restart (and the first round's swap); per round, the
    // save with the export fault.
    assert_eq!(refusals, 4 * (2 * ROUNDS as u32 + 1) + ROUNDS as u32);
    assert_eq!(count(&counter), issued, "no increment was lost");
}

/// A probation window that closes by time (no number of calls reaches it) must pass once its
/// duration is over, however many handovers of the build on probation hold calls back
/// meanwhile (an operator's rollback refused by the state's import, here; a host's periodic
/// save_state does the same). The supervisor judges the windows it tracks on each tick and
/// forgets one whose lease is not published; the lease a handover publishes while it holds
/// calls back (quiesced) must not count as "not published", or the window is never closed: the
/// build stays on probation for ever, and a failure long after its window (a call, a health
/// check) rolls back a build that had passed it.
#[test]
fn a_probation_window_still_closes_when_refused_handovers_overlap_the_supervisors_ticks() {
    let window = Duration::from_millis(300);
    let setup = Setup::with(
        Runtime::builder()
            .probation(ProbationPolicy {
                calls: u64::MAX,
                duration: window,
                max_failures: u64::MAX,
                max_failure_rate: f64::NAN,
                min_calls: u64::MAX,
            })
            // The supervisor ticks every millisecond: it judges the window on every tick.
            .health_interval(Some(Duration::from_millis(1))),
    );
    let runtime = &setup.runtime;
    let events = runtime.subscribe();
    runtime.load_and_start(graft_tests::path(Fixture::CounterFaulty1).unwrap()).unwrap();
    let counter = runtime.handle("counter").unwrap();
    let opened = Instant::now();
    let on_probation =
        runtime.swap("counter", graft_tests::path(Fixture::CounterFaulty2).unwrap()).unwrap();
    let id = on_probation.generation;
    counter.call_to_vec("increment", b"").unwrap();
    counter.call_to_vec("fault", b"import").unwrap();
    let passed = |e: &Event| e.kind == EventKind::ProbationPassed { generation: id };
    let mut seen = Vec::new();
    let mut refused = 0u32;
    // Refused rollbacks until the window's duration is over twice (or it passed): each holds
    // calls back for an instant, as any handover does.
    while opened.elapsed() < 2 * window && !seen.iter().any(&passed) {
        match runtime.rollback("counter") {
            Err(Error::StateImportFailed { .. }) => refused += 1,
            other => panic!("a rollback with the import fault: {other:?}"),
        }
        seen.extend(events.try_iter());
    }
    assert!(refused > 0);
    assert_eq!(counter.generation(), Some(id), "the build on probation serves on");
    assert_eq!(count(&counter), 1, "no refused handover touched the state");
    // A window whose duration is over passes at the supervisor's next tick (one millisecond).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.iter().any(&passed) {
        match events.recv_deadline(deadline) {
            Ok(event) => seen.push(event),
            Err(_) => panic!(
                "the probation window of generation {id} never closed, {:?} after it opened \
                 ({window:?} long; {refused} refused rollbacks overlapped the supervisor's \
                 ticks); events: {:?}",
                opened.elapsed(),
                seen.iter().map(|e| &e.kind).collect::<Vec<_>>()
            ),
        }
    }
}

/// Handoffs back to back, each well within half the call deadline, must still answer every
/// call they hold back within its deadline, as `Shared::quiesce_deadline` promises: a call held
/// by one handoff must get its turn before the next handoff holds calls back again. 400
/// restarts of a key-value store holding 8 MiB follow each other (each moves the state in
/// milliseconds; the call deadline is 250 ms) while four threads write their own keys: no
/// write may fail, and each key counts every write.
#[test]
fn back_to_back_restarts_of_a_large_state_answer_every_held_call_within_its_deadline() {
    const MIB: usize = 8;
    const RESTARTS: usize = 400;
    const CALLERS: usize = 4;
    let setup = Setup::with(quiet().call_deadline(Duration::from_millis(250)));
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Kv1_1).unwrap()).unwrap();
    let kv = runtime.handle("kv").unwrap();
    for i in 0..MIB {
        let mut input = format!("big-{i}\0").into_bytes();
        input.resize(input.len() + (1 << 20), b'x');
        kv.call_to_vec("put", &input).unwrap();
    }

    let (go, stop) = (Barrier::new(CALLERS + 1), AtomicBool::new(false));
    let (longest, callers) = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let callers: Vec<_> = (0..CALLERS)
            .map(|n| {
                let (kv, go, stop) = (kv.clone(), &go, &stop);
                scope.spawn(move || {
                    let input = format!("caller-{n}\0v").into_bytes();
                    let (mut issued, mut errors) = (0u64, Vec::new());
                    go.wait();
                    loop {
                        let last = stop.load(Ordering::Acquire);
                        issued += 1;
                        if let Err(error) = kv.call_to_vec("put", &input) {
                            errors.push(error);
                        }
                        if last {
                            return (issued, errors);
                        }
                    }
                })
            })
            .collect();
        go.wait();
        let mut longest = Duration::ZERO;
        for _ in 0..RESTARTS {
            let started = Instant::now();
            runtime.restart("kv").unwrap();
            longest = longest.max(started.elapsed());
        }
        stop.store(true, Ordering::Release);
        let callers: Vec<_> = callers.into_iter().map(|c| c.join().expect("caller")).collect();
        (longest, callers)
    });
    let failed: Vec<&Error> = callers.iter().flat_map(|(_, errors)| errors).collect();
    assert!(
        failed.is_empty(),
        "{} of {} writes failed (the longest of the {RESTARTS} restarts took {longest:?}), \
         the first: {:?}",
        failed.len(),
        callers.iter().map(|(issued, _)| issued).sum::<u64>(),
        failed[0]
    );
    for (n, (issued, _)) in callers.iter().enumerate() {
        let writes = kv.call_to_vec("writes", format!("caller-{n}").as_bytes()).unwrap();
        assert_eq!(writes, issued.to_string().into_bytes(), "caller {n}: every write counted");
    }
    assert_eq!(kv.call_to_vec("len", b"").unwrap(), (MIB + CALLERS).to_string().into_bytes());
}
