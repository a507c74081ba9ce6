//! The watcher: a plugin directory kept in step with the running services.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Receiver;
use graft_runtime::{Error, SETTLE, WatchEvent};
use graft_tests::Fixture;

use super::{PATIENCE, Setup, greeting};

/// A test's watched directory, inside its private directory.
fn watched(setup: &Setup) -> PathBuf {
    let dir = setup.dir.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `bytes` next to `target` under a dotfile name, then renames it over `target`: what a
/// deploy tool does with a finished build.
fn publish(target: &Path, bytes: &[u8]) {
    let temporary = target.with_file_name(".incoming.tmp");
    std::fs::write(&temporary, bytes).unwrap();
    std::fs::rename(&temporary, target).unwrap();
}

fn library(fixture: Fixture) -> Vec<u8> {
    std::fs::read(graft_tests::path(fixture).unwrap()).unwrap()
}

/// The next event other than `Unchanged`, within [`PATIENCE`].
fn next(events: &Receiver<WatchEvent>) -> WatchEvent {
    loop {
        match events.recv_timeout(PATIENCE).expect("a watch event") {
            WatchEvent::Unchanged { .. } => continue,
            event => return event,
        }
    }
}

#[test]
fn a_renamed_build_is_served_while_callers_run_and_no_call_fails() {
    let setup = Setup::new();
    let dir = watched(&setup);
    let target = dir.join("greeter.so");
    publish(&target, &library(Fixture::Greeter1_0));
    let (_watcher, events) = setup.runtime.watch(&dir).unwrap();
    assert!(
        matches!(next(&events), WatchEvent::Started { ref service, .. } if service == "greeter")
    );
    let greeter = setup.runtime.handle("greeter").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (greeter, stop) = (greeter.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let (mut answered, mut failed) = (0u64, 0u64);
                loop {
                    let last = stop.load(Ordering::Acquire);
                    match greeter.call_to_vec("greet", b"w") {
                        Ok(a) if a == greeting("w", "1.0.0") || a == greeting("w", "1.1.0") => {
                            answered += 1
                        }
                        _ => failed += 1,
                    }
                    if last {
                        return (answered, failed);
                    }
                }
            })
        })
        .collect();

    publish(&target, &library(Fixture::Greeter1_1));
    let event = next(&events);
    let WatchEvent::Swapped { from, to, .. } = &event else { panic!("{event:?}") };
    assert_eq!((from.to_string(), to.to_string()), ("1.0.0".into(), "1.1.0".into()));
    stop.store(true, Ordering::Release);
    for caller in callers {
        let (answered, failed) = caller.join().unwrap();
        assert_eq!(failed, 0);
        assert!(answered > 0);
    }
    assert_eq!(greeter.call_to_vec("greet", b"w").unwrap(), greeting("w", "1.1.0"));
}

#[test]
fn a_file_written_in_chunks_is_loaded_only_once_whole() {
    let setup = Setup::new();
    let dir = watched(&setup);
    let target = dir.join("greeter.so");
    publish(&target, &library(Fixture::Greeter1_0));
    let (_watcher, events) = setup.runtime.watch(&dir).unwrap();
    assert!(matches!(next(&events), WatchEvent::Started { .. }));

    // Written in place, in eight chunks, with a pause after each (shorter than the settle time)
    // during which no swap may happen: until the last chunk the file is not a whole library.
    let bytes = library(Fixture::Greeter1_1);
    let mut file = std::fs::File::create(&target).unwrap();
    let chunks: Vec<&[u8]> = bytes.chunks(bytes.len().div_ceil(8)).collect();
    let (last, partial) = chunks.split_last().unwrap();
    for chunk in partial {
        std::io::Write::write_all(&mut file, chunk).unwrap();
        std::io::Write::flush(&mut file).unwrap();
        match events.recv_timeout(SETTLE / 5) {
            Err(_) | Ok(WatchEvent::Unchanged { .. }) => {}
            // A slow machine may see a pause as long as the settle time: the partial file is
            // then refused, which is allowed; loading it is not.
            Ok(WatchEvent::Rejected { .. }) => {}
            Ok(other) => panic!("acted on a partial file: {other:?}"),
        }
        assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.0.0");
    }
    std::io::Write::write_all(&mut file, last).unwrap();
    drop(file);
    loop {
        match next(&events) {
            WatchEvent::Swapped { to, .. } => {
                assert_eq!(to.to_string(), "1.1.0");
                break;
            }
            WatchEvent::Rejected { .. } => continue,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.1.0");
}

#[test]
fn broken_files_are_refused_once_each_and_a_good_build_after_them_is_swapped_in() {
    let setup = Setup::new();
    let dir = watched(&setup);
    let target = dir.join("greeter.so");
    publish(&target, &library(Fixture::Greeter1_0));
    let (_watcher, events) = setup.runtime.watch(&dir).unwrap();
    assert!(matches!(next(&events), WatchEvent::Started { .. }));

    publish(&target, b"garbage, not a library\n");
    let event = next(&events);
    assert!(
        matches!(&event, WatchEvent::Rejected { error, .. } if matches!(**error, Error::NotElf { .. })),
        "{event:?}"
    );
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.0.0");

    let whole = library(Fixture::Greeter1_1);
    publish(&target, &whole[..whole.len() / 2]);
    let event = next(&events);
    assert!(
        matches!(&event, WatchEvent::Rejected { error, .. } if matches!(**error, Error::Truncated { .. })),
        "{event:?}"
    );
    // The same broken content again (a new inode, a new time): no second rejection.
    publish(&target, &whole[..whole.len() / 2]);
    assert!(events.recv_timeout(SETTLE * 3).is_err(), "one rejection per distinct content");
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.0.0");

    publish(&target, &whole);
    let event = next(&events);
    assert!(
        matches!(&event, WatchEvent::Swapped { to, .. } if to.to_string() == "1.1.0"),
        "{event:?}"
    );
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.1.0");

    std::fs::remove_file(&target).unwrap();
    let event = next(&events);
    assert!(
        matches!(&event, WatchEvent::Removed { service: Some(s), .. } if s == "greeter"),
        "{event:?}"
    );
    assert_eq!(
        setup.runtime.call("greeter", "version", b"").unwrap(),
        b"1.1.0",
        "nothing unloaded"
    );
}

#[test]
fn a_file_changed_while_the_host_was_down_is_picked_up_at_start() {
    let setup = Setup::new();
    let dir = watched(&setup);
    let state = setup.dir.path().join("state");
    let target = dir.join("greeter.so");
    publish(&target, &library(Fixture::Greeter1_0));
    {
        let host = graft_runtime::Runtime::builder().state_dir(&state).build().unwrap();
        let (_watcher, events) = host.watch(&dir).unwrap();
        assert!(matches!(next(&events), WatchEvent::Started { .. }));
        // The host goes down.
    }
    // No host now: this change makes no event anyone will see.
    publish(&target, &library(Fixture::Greeter1_1));

    let host = graft_runtime::Runtime::builder().state_dir(&state).build().unwrap();
    host.restore().unwrap();
    assert_eq!(
        host.call("greeter", "version", b"").unwrap(),
        b"1.0.0",
        "back on the committed build"
    );
    // A watcher that only acted on events would miss the change; the first reconciliation does not.
    let (_watcher, events) = host.watch(&dir).unwrap();
    let event = next(&events);
    assert!(
        matches!(&event, WatchEvent::Swapped { to, .. } if to.to_string() == "1.1.0"),
        "{event:?}"
    );
    assert_eq!(host.call("greeter", "version", b"").unwrap(), b"1.1.0");
}

#[test]
fn two_services_dropped_in_at_once_start_in_dependency_order() {
    let setup = Setup::new();
    let dir = watched(&setup);
    let (_watcher, events) = setup.runtime.watch(&dir).unwrap();
    // `worker` (the gated build) depends on `rendezvous`: named so that it is seen first.
    let worker = std::fs::read(graft_tests::path(Fixture::GatedWorker).unwrap()).unwrap();
    let rendezvous = std::fs::read(graft_tests::path(Fixture::Rendezvous).unwrap()).unwrap();
    std::fs::write(dir.join(".a.tmp"), worker).unwrap();
    std::fs::write(dir.join(".b.tmp"), rendezvous).unwrap();
    std::fs::rename(dir.join(".a.tmp"), dir.join("a-worker.so")).unwrap();
    std::fs::rename(dir.join(".b.tmp"), dir.join("b-rendezvous.so")).unwrap();

    let mut started = Vec::new();
    while started.len() < 2 {
        match next(&events) {
            WatchEvent::Started { service, .. } => started.push(service),
            WatchEvent::Waiting { service, dependency, .. } => {
                assert_eq!((service.as_str(), dependency.as_str()), ("worker", "rendezvous"))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(started, ["rendezvous", "worker"]);
    let order = setup.runtime.call("rendezvous", "order", b"").unwrap();
    assert_eq!(order, b"worker", "the worker met the rendezvous from its construction");
}
