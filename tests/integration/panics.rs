//! A plugin's panic is caught at the boundary and reported; the service keeps serving.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use graft_runtime::Error;
use graft_tests::Fixture;

use super::{Setup, greeting};

#[test]
fn a_panicking_call_is_a_typed_error_and_others_keep_being_served() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let handle = setup.runtime.handle("greeter").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(3));
    // Served by both bystanders together, read by the panicking thread so that it keeps
    // panicking until the bystanders have been served in the meantime.
    let served_total = Arc::new(AtomicU64::new(0));
    let bystanders: Vec<_> = (0..2)
        .map(|_| {
            let (handle, stop, start) = (handle.clone(), Arc::clone(&stop), Arc::clone(&start));
            let served_total = Arc::clone(&served_total);
            std::thread::spawn(move || {
                let (mut served, mut failed) = (0u64, 0u64);
                start.wait();
                while !stop.load(Ordering::Acquire) {
                    match handle.call_to_vec("greet", b"bystander") {
                        Ok(answer) if answer == greeting("bystander", "1.0.0") => served += 1,
                        _ => failed += 1,
                    }
                    served_total.fetch_add(1, Ordering::Relaxed);
                }
                (served, failed)
            })
        })
        .collect();

    start.wait();
    let mut panics = 0;
    while panics < 50 || served_total.load(Ordering::Relaxed) < 200 {
        panics += 1;
        let mut output = b"kept".to_vec();
        let err = handle.call("panic", b"", &mut output).unwrap_err();
        match &err {
            Error::PluginPanicked { service, version, method, message } => {
                assert_eq!(service, "greeter");
                assert_eq!(version.to_string(), "1.0.0");
                assert_eq!(method, "panic");
                assert_eq!(message, "greeter 1.0.0 panicked on purpose");
            }
            other => panic!("expected PluginPanicked, got {other:?}"),
        }
        assert_eq!(output, b"kept", "a failed call leaves the output as it was");
        assert!(err.to_string().contains("greeter 1.0.0 panicked in `panic`"), "{err}");
    }
    stop.store(true, Ordering::Release);
    let mut served = 0;
    for bystander in bystanders {
        let (ok, failed) = bystander.join().unwrap();
        assert_eq!(failed, 0);
        served += ok;
    }
    assert!(served >= 200, "the bystanders were served while the panics happened");
    assert_eq!(handle.call_to_vec("greet", b"after").unwrap(), greeting("after", "1.0.0"));
}

#[test]
fn a_service_error_names_the_service_version_and_method() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_1)).unwrap();
    let err = setup.runtime.call("greeter", "fail", b"").unwrap_err();
    assert!(
        matches!(
            &err,
            Error::CallFailed { service, version, method, message }
                if service == "greeter" && version.to_string() == "1.1.0" && method == "fail"
                    && message == "greeter 1.1.0 failed on purpose"
        ),
        "{err:?}"
    );
    // An unknown method is the caller's problem: a refusal, not a failure of the service.
    let err = setup.runtime.call("greeter", "no-such-method", b"").unwrap_err();
    assert!(
        matches!(&err, Error::Refused { message, .. } if message.contains("unknown method")),
        "{err:?}"
    );
}
