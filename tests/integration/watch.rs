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

/// A watched directory serving greeter 1.0 from `greeter.so` in it: the path, the watcher and
/// its events (the `Started` already taken).
fn serving_greeter_1_0(
    setup: &Setup,
    options: graft_runtime::WatchOptions,
) -> (PathBuf, graft_runtime::Watcher, Receiver<WatchEvent>) {
    let target = watched(setup).join("greeter.so");
    publish(&target, &library(Fixture::Greeter1_0));
    let (watcher, events) = setup.runtime.watch_with(target.parent().unwrap(), options).unwrap();
    let event = next(&events);
    assert!(
        matches!(&event, WatchEvent::Started { service, .. } if service == "greeter"),
        "{event:?}"
    );
    (target, watcher, events)
}

fn library(fixture: Fixture) -> Vec<u8> {
    std::fs::read(graft_tests::path(fixture).unwrap()).unwrap()
}

/// The next event other than `Unchanged` or `Incomplete`, within [`PATIENCE`].
fn next(events: &Receiver<WatchEvent>) -> WatchEvent {
    loop {
        match events.recv_timeout(PATIENCE).expect("a watch event") {
            WatchEvent::Unchanged { .. } | WatchEvent::Incomplete { .. } => continue,
            event => return event,
        }
    }
}

#[test]
fn a_renamed_build_is_served_while_callers_run_and_no_call_fails() {
    let setup = Setup::new();
    let (target, _watcher, events) = serving_greeter_1_0(&setup, Default::default());
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
    let (target, _watcher, events) = serving_greeter_1_0(&setup, Default::default());

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
            Err(_) | Ok(WatchEvent::Unchanged { .. } | WatchEvent::Incomplete { .. }) => {}
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
    let (target, _watcher, events) = serving_greeter_1_0(&setup, Default::default());

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

/// `library(fixture)` padded with zeros to `len` bytes: another content, the same build (what
/// follows the section headers is never read).
fn padded(fixture: Fixture, len: usize) -> Vec<u8> {
    let mut bytes = library(fixture);
    assert!(bytes.len() <= len);
    bytes.resize(len, 0);
    bytes
}

/// Regression: files were told apart by size and modification time only, so a same-size build
/// renamed in with a copied modification time (`cp -p`, reproducible builds) was never swapped.
#[test]
fn a_same_size_build_with_the_same_mtime_renamed_in_is_swapped() {
    let setup = Setup::new();
    let dir = watched(&setup);
    let target = dir.join("greeter.so");
    let len = library(Fixture::Greeter1_0).len().max(library(Fixture::Greeter1_1).len()) + 1;
    publish(&target, &padded(Fixture::Greeter1_0, len));
    let (_watcher, events) = setup.runtime.watch(&dir).unwrap();
    assert!(matches!(next(&events), WatchEvent::Started { .. }));

    let modified = std::fs::metadata(&target).unwrap().modified().unwrap();
    let temporary = dir.join(".incoming.tmp");
    std::fs::write(&temporary, padded(Fixture::Greeter1_1, len)).unwrap();
    std::fs::File::options().write(true).open(&temporary).unwrap().set_modified(modified).unwrap();
    std::fs::rename(&temporary, &target).unwrap();
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!((after.len(), after.modified().unwrap()), (len as u64, modified));

    let event = next(&events);
    assert!(
        matches!(&event, WatchEvent::Swapped { to, .. } if to.to_string() == "1.1.0"),
        "{event:?}"
    );
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.1.0");
}

/// Regression: a FIFO, a directory or a dangling, looping or device symlink at a `.so` path
/// was skipped silently (and a FIFO could block a naive open for ever).
#[test]
fn what_is_not_a_file_is_rejected_once_each_and_the_watcher_keeps_working() {
    let setup = Setup::new();
    let dir = watched(&setup);
    assert!(
        std::process::Command::new("mkfifo").arg(dir.join("pipe.so")).status().unwrap().success()
    );
    std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling.so")).unwrap();
    std::os::unix::fs::symlink(dir.join("looping.so"), dir.join("looping.so")).unwrap();
    std::os::unix::fs::symlink("/dev/null", dir.join("device.so")).unwrap();
    std::fs::create_dir(dir.join("directory.so")).unwrap();
    let (watcher, events) = setup.runtime.watch(&dir).unwrap();

    let mut rejected = std::collections::BTreeMap::new();
    while rejected.len() < 5 {
        match next(&events) {
            WatchEvent::Rejected { path, error } => {
                let name = path.file_name().unwrap().to_str().unwrap().to_owned();
                assert!(rejected.insert(name, error).is_none(), "rejected twice: {path:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(*rejected["pipe.so"], Error::NotAFile { kind: "a named pipe (FIFO)", .. }));
    assert!(matches!(*rejected["device.so"], Error::NotAFile { kind: "a character device", .. }));
    assert!(matches!(*rejected["directory.so"], Error::NotAFile { kind: "a directory", .. }));
    assert!(matches!(*rejected["dangling.so"], Error::Io { .. }));
    assert!(matches!(*rejected["looping.so"], Error::Io { .. }));

    // Still working: a build dropped in now is started, with no second rejection before it.
    publish(&dir.join("greeter.so"), &library(Fixture::Greeter1_0));
    let event = next(&events);
    assert!(
        matches!(&event, WatchEvent::Started { service, .. } if service == "greeter"),
        "{event:?}"
    );

    // And it stops at once: dropped on another thread, with a bound.
    let (dropped, done) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        drop(watcher);
        let _ = dropped.send(());
    });
    done.recv_timeout(PATIENCE).expect("the watcher stops promptly");
}

/// Regression: a rebuild with the same version and other content was silently ignored.
#[test]
fn a_changed_build_of_the_same_version_is_reported_not_swapped() {
    let setup = Setup::new();
    let (target, _watcher, events) = serving_greeter_1_0(&setup, Default::default());
    let before = setup.runtime.service_status("greeter").unwrap().current.unwrap();

    let len = library(Fixture::Greeter1_0).len() + 64;
    publish(&target, &padded(Fixture::Greeter1_0, len));
    let event = next(&events);
    assert!(
        matches!(&event, WatchEvent::SameVersionChanged { service, version, .. }
            if service == "greeter" && version.to_string() == "1.0.0"),
        "{event:?}"
    );
    let after = setup.runtime.service_status("greeter").unwrap().current.unwrap();
    assert_eq!(after.id, before.id, "the serving generation is untouched");
    // Hashed for the comparison (and only then): the serving build's own content.
    let library = library(Fixture::Greeter1_0);
    assert_eq!(after.sha256.as_deref(), Some(sha256_hex(&library).as_str()));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn in_development_mode_a_changed_build_of_the_same_version_is_swapped_in() {
    let setup = Setup::new();
    let options = graft_runtime::WatchOptions::default().development(true);
    let (target, _watcher, events) = serving_greeter_1_0(&setup, options);
    let before = setup.runtime.service_status("greeter").unwrap().current.unwrap();

    let len = library(Fixture::Greeter1_0).len() + 64;
    publish(&target, &padded(Fixture::Greeter1_0, len));
    let event = next(&events);
    assert!(
        matches!(&event, WatchEvent::Swapped { from, to, .. }
            if from.to_string() == "1.0.0" && to.to_string() == "1.0.0"),
        "{event:?}"
    );
    let after = setup.runtime.service_status("greeter").unwrap();
    let current = after.current.unwrap();
    assert_ne!(current.id, before.id);
    assert_eq!(after.history[0].id, before.id);
    let (new, old) = (current.sha256.unwrap(), after.history[0].sha256.clone().unwrap());
    assert_ne!(new, old, "the generations are told apart by content");
    assert_eq!(old, sha256_hex(&library(Fixture::Greeter1_0)));

    // Every other check stays: a build of another interface major is still refused.
    publish(&target, &library(Fixture::Greeter2_0));
    let event = next(&events);
    assert!(
        matches!(&event, WatchEvent::Rejected { error, .. } if matches!(**error, Error::IncompatibleInterface { .. })),
        "{event:?}"
    );
}

/// Regression: two files declaring the same service ended on whichever came last in name
/// order, a downgrade included; and a first pass brought each in on the way to the highest
/// (1.0 started, then swapped to 1.1). Now the highest starts, and the lower is never served.
#[test]
fn two_files_of_one_service_end_on_the_highest_version_whatever_their_names() {
    for (lower, higher) in [("a.so", "b.so"), ("b.so", "a.so")] {
        let setup = Setup::new();
        let dir = watched(&setup);
        publish(&dir.join(lower), &library(Fixture::Greeter1_0));
        publish(&dir.join(higher), &library(Fixture::Greeter1_1));
        let conflict = |events: &Receiver<WatchEvent>| loop {
            match next(events) {
                WatchEvent::Conflict { service, files } => return (service, files),
                WatchEvent::Started { service, version, .. } => {
                    assert_eq!(
                        (service.as_str(), version.to_string()),
                        ("greeter", "1.1.0".into())
                    );
                }
                other => panic!("only the highest build may go in: {other:?}"),
            }
        };
        let (_watcher, events) = setup.runtime.watch(&dir).unwrap();
        let (service, files) = conflict(&events);
        assert_eq!(service, "greeter");
        let mut expected = vec![
            (dir.join(lower), semver::Version::new(1, 0, 0)),
            (dir.join(higher), semver::Version::new(1, 1, 0)),
        ];
        expected.sort();
        assert_eq!(files, expected);
        assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.1.0", "{lower}");

        // A host restart (a new runtime and watcher on the same directory) ends there too.
        let host = graft_runtime::Runtime::builder()
            .staging_dir(setup.dir.path().join("staging-2"))
            .build()
            .unwrap();
        let (_watcher, events) = host.watch(&dir).unwrap();
        assert_eq!(conflict(&events).0, "greeter");
        assert_eq!(host.call("greeter", "version", b"").unwrap(), b"1.1.0", "{lower}");
    }
}
