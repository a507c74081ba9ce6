//! Metrics: every call counted once, for the version that answered it, by how it ended; swaps
//! and rollbacks counted and timed.

use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};

use graft_runtime::{CallCounts, Error, ProbationPolicy, Runtime};
use graft_tests::Fixture;

use super::Setup;

/// Eight threads call greeter without pause (greet, and every tenth call a refusal, a failure
/// or a panic) while it is swapped 1.0 -> 1.1 and rolled back 50 times: the counts of each
/// version add up to exactly the calls issued, by outcome, and the operations are counted.
#[test]
fn every_call_is_counted_once_for_the_version_that_answered_it() {
    const THREADS: usize = 8;
    let setup = Setup::with(
        Runtime::builder().probation(ProbationPolicy::disabled()).health_interval(None),
    );
    let runtime = &setup.runtime;
    runtime.load_and_start(graft_tests::path(Fixture::Greeter1_0).unwrap()).unwrap();
    let v1_1 = graft_tests::path(Fixture::Greeter1_1).unwrap();
    let greeter = runtime.handle("greeter").unwrap();
    let (go, stop) = (Barrier::new(THREADS + 1), AtomicBool::new(false));
    let issued = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (greeter, go, stop) = (greeter.clone(), &go, &stop);
                scope.spawn(move || {
                    let mut issued = CallCounts::default();
                    go.wait();
                    let mut n = 0u64;
                    loop {
                        let last = stop.load(Ordering::Acquire);
                        let method = match n % 10 {
                            7 => "find",
                            8 => "fail",
                            9 => "panic",
                            _ => "greet",
                        };
                        n += 1;
                        issued.calls += 1;
                        match greeter.call_to_vec(method, b"m") {
                            Ok(_) => {}
                            Err(Error::Refused { .. }) => issued.refusals += 1,
                            Err(Error::CallFailed { .. }) => issued.failures += 1,
                            Err(Error::PluginPanicked { .. }) => issued.panics += 1,
                            Err(other) => panic!("unexpected error {other}"),
                        }
                        if last {
                            return issued;
                        }
                    }
                })
            })
            .collect();
        go.wait();
        for _ in 0..50 {
            runtime.swap("greeter", &v1_1).unwrap();
            runtime.rollback("greeter").unwrap();
        }
        stop.store(true, Ordering::Release);
        threads.into_iter().map(|t| t.join().expect("caller")).fold(
            CallCounts::default(),
            |mut total, c| {
                total.calls += c.calls;
                total.failures += c.failures;
                total.refusals += c.refusals;
                total.panics += c.panics;
                total
            },
        )
    });
    let metrics = runtime.service_status("greeter").unwrap().metrics;
    let versions: Vec<String> = metrics.versions.iter().map(|v| v.version.to_string()).collect();
    assert_eq!(versions, ["1.0.0", "1.1.0"]);
    let mut counted = CallCounts::default();
    for version in &metrics.versions {
        counted.calls += version.counts.calls;
        counted.failures += version.counts.failures;
        counted.refusals += version.counts.refusals;
        counted.panics += version.counts.panics;
    }
    assert_eq!(counted, issued, "every call counted once, by how it ended");
    let operations = metrics.operations;
    assert_eq!((operations.swaps, operations.rollbacks_manual), (50, 50));
    assert_eq!(operations.rollbacks_automatic, 0);
    assert_eq!(operations.swap_seconds.count, 50);
    assert_eq!(operations.swap_seconds.buckets.iter().sum::<u64>(), 50);
    assert_eq!(operations.rollback_seconds.count, 50);
}
