//! A plugin's panic is caught at the boundary and reported; the service keeps serving.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use graft_runtime::Error;
use graft_tests::Fixture;

use super::{Setup, greeting};

#[test]
fn a_panicking_call_is_a_typed_error_and_others_keep_being_served() {
    let setup = Setup::new();
    setup.runtime.load(setup.copy(Fixture::Greeter1_0)).unwrap();
    let handle = setup.runtime.handle("greeter").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(3));
    let bystanders: Vec<_> = (0..2)
        .map(|_| {
            let (handle, stop, start) = (handle.clone(), Arc::clone(&stop), Arc::clone(&start));
            std::thread::spawn(move || {
                let (mut served, mut failed) = (0u64, 0u64);
                start.wait();
                while !stop.load(Ordering::Acquire) {
                    match handle.call_to_vec("greet", b"bystander") {
                        Ok(answer) if answer == greeting("bystander", "1.0.0") => served += 1,
                        _ => failed += 1,
                    }
                }
                (served, failed)
            })
        })
        .collect();

    start.wait();
    for _ in 0..50 {
        let mut output = b"kept".to_vec();
        let err = handle.call("panic", b"", &mut output).unwrap_err();
        match &err {
            Error::PluginPanicked {
                service,
                version,
                method,
                message,
            } => {
                assert_eq!(service, "greeter");
                assert_eq!(version.to_string(), "1.0.0");
                assert_eq!(method, "panic");
                assert_eq!(message, "greeter 1.0.0 panicked on purpose");
            }
            other => panic!("expected PluginPanicked, got {other:?}"),
        }
        assert_eq!(output, b"kept", "a failed call leaves the output as it was");
        assert!(
            err.to_string()
                .contains("greeter 1.0.0 panicked in `panic`"),
            "{err}"
        );
    }
    stop.store(true, Ordering::Release);
    for bystander in bystanders {
        let (served, failed) = bystander.join().unwrap();
        assert_eq!(failed, 0);
        assert!(served > 0);
    }
    assert_eq!(
        handle.call_to_vec("greet", b"after").unwrap(),
        greeting("after", "1.0.0")
    );
}

#[test]
fn a_service_error_names_the_service_version_and_method() {
    let setup = Setup::new();
    setup.runtime.load(setup.copy(Fixture::Greeter1_1)).unwrap();
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
    let err = setup
        .runtime
        .call("greeter", "no-such-method", b"")
        .unwrap_err();
    assert!(
        matches!(&err, Error::CallFailed { message, .. } if message.contains("unknown method"))
    );
}
