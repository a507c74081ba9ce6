//! A call running in the old build finishes there; the old build stays mapped until it has.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread::JoinHandle;

use graft_runtime::ServiceHandle;
use graft_tests::Fixture;

use super::{PATIENCE, Setup, greeting, mapped};

/// A call held inside the greeter's `block` method until `release` is called.
struct HeldCall {
    stream: UnixStream,
    version: String,
    call: JoinHandle<Result<Vec<u8>, graft_runtime::Error>>,
}

impl HeldCall {
    /// Starts a `block` call and returns once it is running inside the plugin.
    fn start(handle: &ServiceHandle, dir: &Path) -> HeldCall {
        let socket = dir.join("block.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let handle = handle.clone();
        let input = socket.to_str().unwrap().as_bytes().to_vec();
        let call = std::thread::spawn(move || handle.call_to_vec("block", &input));
        // The plugin connects and names its version from inside the call: past this point the
        // call is running in that build.
        let (mut stream, _) = listener.accept().unwrap();
        let mut version = [0u8; 5];
        stream.read_exact(&mut version).unwrap();
        HeldCall { stream, version: String::from_utf8(version.to_vec()).unwrap(), call }
    }

    fn release(mut self) -> Result<Vec<u8>, graft_runtime::Error> {
        self.stream.write_all(b"!").unwrap();
        self.call.join().unwrap()
    }
}

#[test]
fn a_call_in_a_retired_build_finishes_there_and_keeps_it_mapped_until_it_returns() {
    // With no history, the swap retires 1.0 at once: only the running call keeps it loaded.
    let setup = Setup::with(graft_runtime::Runtime::builder().history_depth(0));
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let handle = setup.runtime.handle("greeter").unwrap();
    let staged_1_0 = setup.runtime.service_status("greeter").unwrap().current.unwrap().staged;
    assert!(mapped(&staged_1_0));

    let held = HeldCall::start(&handle, setup.dir.path());
    assert_eq!(held.version, "1.0.0");

    let swap = setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
    // New calls go to 1.1 while the held call is still inside 1.0.
    for _ in 0..10 {
        assert_eq!(handle.call_to_vec("greet", b"new").unwrap(), greeting("new", "1.1.0"));
    }
    assert!(setup.runtime.service_status("greeter").unwrap().history.is_empty());
    assert!(!swap.previous.is_drained());
    assert!(!swap.previous.is_retired());
    assert!(mapped(&staged_1_0), "1.0 must stay mapped while a call runs in it");
    let err = swap.previous.wait_drained(std::time::Duration::from_millis(1)).unwrap_err();
    assert!(matches!(err, graft_runtime::Error::DrainTimeout { .. }), "{err:?}");
    assert!(mapped(&staged_1_0), "a missed drain deadline forces nothing");

    assert_eq!(held.release().unwrap(), b"released from greeter 1.0.0");
    swap.previous.wait_drained(PATIENCE).unwrap();
    swap.previous.wait_retired(PATIENCE).unwrap();
    assert!(swap.previous.is_retired(), "1.0 is retired once drained and out of the history");
    assert!(!staged_1_0.exists(), "its staged copy is removed");
    // Nothing of its `std` points into it (the greeter starts no thread): it is unmapped.
    assert!(!mapped(&staged_1_0) && !swap.previous.is_mapped(), "1.0 is unmapped, and says so");
    assert_eq!(handle.call_to_vec("greet", b"after").unwrap(), greeting("after", "1.1.0"));
}

#[test]
fn a_drained_build_stays_loaded_while_in_the_history_and_is_retired_when_it_leaves() {
    let setup = Setup::new();
    let v1_0 = setup.copy(Fixture::Greeter1_0);
    setup.runtime.load_and_start(&v1_0).unwrap();
    let handle = setup.runtime.handle("greeter").unwrap();
    let staged_1_0 = setup.runtime.service_status("greeter").unwrap().current.unwrap().staged;

    let held = HeldCall::start(&handle, setup.dir.path());
    let swap = setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
    assert_eq!(handle.call_to_vec("greet", b"new").unwrap(), greeting("new", "1.1.0"));
    assert_eq!(held.release().unwrap(), b"released from greeter 1.0.0");
    swap.previous.wait_drained(PATIENCE).unwrap();
    assert!(mapped(&staged_1_0), "the drained 1.0 is the rollback target and stays loaded");
    assert!(!swap.previous.is_retired());

    // A new 1.0 build pushes 1.1 into the history and the old 1.0 out of it.
    setup.runtime.swap("greeter", &v1_0).unwrap();
    swap.previous.wait_retired(PATIENCE).unwrap();
    assert!(!staged_1_0.exists(), "its staged copy is removed once retired");
    assert!(!mapped(&staged_1_0), "and its library unmapped");
    assert_eq!(handle.call_to_vec("greet", b"x").unwrap(), greeting("x", "1.0.0"));
}
