//! Swaps and rollbacks under load, with exact accounting of every call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use graft_tests::Fixture;

use super::{PATIENCE, Setup, greeting};

const CALLERS: usize = 8;
const ROUNDS: usize = 100; // each round is one swap and one rollback: 200 operations

#[derive(Debug, Default)]
struct Tally {
    issued: u64,
    answered_1_0: u64,
    answered_1_1: u64,
    unknown_answers: u64,
    errors: u64,
}

#[test]
fn swaps_and_rollbacks_under_load_lose_no_call() {
    let setup = Setup::new();
    let v1_0 = setup.copy(Fixture::Greeter1_0);
    let v1_1 = setup.copy(Fixture::Greeter1_1);
    setup.runtime.load_and_start(&v1_0).unwrap();
    let handle = setup.runtime.handle("greeter").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(CALLERS + 1));
    let callers: Vec<_> = (0..CALLERS)
        .map(|n| {
            let (handle, stop, start) = (handle.clone(), Arc::clone(&stop), Arc::clone(&start));
            std::thread::spawn(move || {
                let name = format!("caller-{n}");
                let (expect_1_0, expect_1_1) = (greeting(&name, "1.0.0"), greeting(&name, "1.1.0"));
                let mut tally = Tally::default();
                let mut answer = Vec::new();
                start.wait();
                // Checked after each call, so every caller also calls once after the last swap.
                loop {
                    let last = stop.load(Ordering::Acquire);
                    answer.clear();
                    tally.issued += 1;
                    match handle.call("greet", name.as_bytes(), &mut answer) {
                        Ok(()) if answer == expect_1_0 => tally.answered_1_0 += 1,
                        Ok(()) if answer == expect_1_1 => tally.answered_1_1 += 1,
                        Ok(()) => tally.unknown_answers += 1,
                        Err(_) => tally.errors += 1,
                    }
                    if last {
                        break tally;
                    }
                }
            })
        })
        .collect();

    start.wait();
    let mut rolled_back = Vec::new();
    for _ in 0..ROUNDS {
        setup.runtime.swap("greeter", &v1_1).unwrap();
        rolled_back.push(setup.runtime.rollback("greeter").unwrap().previous);
    }
    stop.store(true, Ordering::Release);

    let mut total = Tally::default();
    for caller in callers {
        let tally = caller.join().unwrap();
        assert!(tally.answered_1_0 + tally.answered_1_1 > 0);
        total.issued += tally.issued;
        total.answered_1_0 += tally.answered_1_0;
        total.answered_1_1 += tally.answered_1_1;
        total.unknown_answers += tally.unknown_answers;
        total.errors += tally.errors;
    }
    assert_eq!(total.errors, 0, "{total:?}");
    assert_eq!(total.unknown_answers, 0, "{total:?}");
    assert_eq!(total.issued, total.answered_1_0 + total.answered_1_1, "{total:?}");
    assert!(total.answered_1_0 > 0 && total.answered_1_1 > 0, "both builds served: {total:?}");

    // Every 1.1 generation but the last fell out of the history; each must drain and retire.
    let (last, earlier) = rolled_back.split_last().unwrap();
    for watch in earlier {
        watch.wait_retired(PATIENCE).unwrap();
    }
    assert!(!last.is_retired(), "the last 1.1 build is the rollback target and stays loaded");
    assert_eq!(
        setup.staged_files(),
        2,
        "only the serving build and its rollback target stay staged"
    );
    assert_eq!(handle.call_to_vec("greet", b"end").unwrap(), greeting("end", "1.0.0"));
}
