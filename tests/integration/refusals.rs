//! Every way a swap can be refused: each is its own typed error, and the old build serves on.

use std::path::PathBuf;

use graft_runtime::Error;
use graft_tests::Fixture;

use super::{Setup, greeting};

/// Loads greeter 1.0, tries to swap to the file `make` prepares, and checks that the swap fails
/// with an error `expected` accepts, that 1.0 still answers, and that nothing is left staged.
fn refused(make: impl FnOnce(&Setup) -> PathBuf, expected: impl FnOnce(&Error) -> bool) -> Error {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let handle = setup.runtime.handle("greeter").unwrap();
    let before = setup.runtime.service_status("greeter").unwrap().current.unwrap().id;
    let path = make(&setup);

    let err = setup.runtime.swap("greeter", &path).unwrap_err();
    assert!(expected(&err), "unexpected error: {err:?}");
    assert_eq!(handle.call_to_vec("greet", b"still").unwrap(), greeting("still", "1.0.0"));
    let status = setup.runtime.service_status("greeter").unwrap();
    assert_eq!(status.current.unwrap().id, before);
    assert!(status.history.is_empty());
    assert_eq!(setup.staged_files(), 1, "the refused build's staged copy is removed");
    assert!(!err.to_string().is_empty());
    err
}

#[test]
fn an_incompatible_interface_is_refused_with_both_versions() {
    let err = refused(
        |s| s.copy(Fixture::Greeter2_0),
        |e| matches!(e, Error::IncompatibleInterface { .. }),
    );
    let Error::IncompatibleInterface { service, required, found, plugin_version } = err else {
        unreachable!()
    };
    assert_eq!(service, "greeter");
    assert_eq!(required.to_string(), "^1.0.0");
    assert_eq!(found.to_string(), "2.0.0");
    assert_eq!(plugin_version.to_string(), "2.0.0");
}

#[test]
fn a_wrong_magic_number_is_refused() {
    let err = refused(|s| s.copy(Fixture::BadMagic), |e| matches!(e, Error::BadMagic { .. }));
    let Error::BadMagic { found, .. } = err else { unreachable!() };
    assert_eq!(found, u64::from_le_bytes(*b"NOTGRAFT"));
}

#[test]
fn a_wrong_abi_version_is_refused() {
    let err = refused(|s| s.copy(Fixture::BadAbi), |e| matches!(e, Error::AbiMismatch { .. }));
    let Error::AbiMismatch { expected, found, .. } = err else { unreachable!() };
    assert_eq!(expected, graft_plugin_api::abi::ABI_VERSION);
    assert_eq!(found, graft_plugin_api::abi::ABI_VERSION + 41);
}

#[test]
fn a_file_that_is_not_elf_is_refused_before_loading() {
    refused(
        |s| {
            let path = s.dir.path().join("notes.so");
            std::fs::write(&path, "this is not a shared library\n").unwrap();
            path
        },
        |e| matches!(e, Error::NotElf { .. }),
    );
}

#[test]
fn a_truncated_library_is_refused_before_loading() {
    let err = refused(
        |s| {
            let whole = std::fs::read(s.copy(Fixture::Greeter1_1)).unwrap();
            let path = s.dir.path().join("half.so");
            std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
            path
        },
        |e| matches!(e, Error::Truncated { .. }),
    );
    let Error::Truncated { needed, size, .. } = err else { unreachable!() };
    assert!(needed > size);
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    let err = refused(|s| s.copy(Fixture::NoEntry), |e| matches!(e, Error::MissingSymbol { .. }));
    let Error::MissingSymbol { symbol, .. } = err else { unreachable!() };
    assert_eq!(symbol, "graft_plugin_entry");
}

#[test]
fn a_build_whose_construction_fails_is_refused() {
    let err =
        refused(|s| s.copy(Fixture::CreateFails), |e| matches!(e, Error::CreateFailed { .. }));
    let Error::CreateFailed { version, message, panicked, .. } = err else { unreachable!() };
    assert_eq!(version.to_string(), "1.2.0");
    assert_eq!(message, "greeter 1.2.0 refuses to start");
    assert!(!panicked);
}

#[test]
fn a_build_that_fails_its_health_check_is_refused() {
    let err =
        refused(|s| s.copy(Fixture::HealthFails), |e| matches!(e, Error::HealthCheckFailed { .. }));
    let Error::HealthCheckFailed { version, message, .. } = err else { unreachable!() };
    assert_eq!(version.to_string(), "1.3.0");
    assert_eq!(message, "greeter 1.3.0 is unwell");
}

#[test]
fn the_version_already_serving_is_refused() {
    refused(|s| s.copy(Fixture::Greeter1_0), |e| matches!(e, Error::SameVersion { .. }));
}

#[test]
fn a_directory_is_refused() {
    refused(|s| s.dir.path().to_path_buf(), |e| matches!(e, Error::NotAFile { .. }));
}

#[test]
fn a_missing_file_is_refused_with_its_path() {
    let err = refused(|s| s.dir.path().join("absent.so"), |e| matches!(e, Error::Io { .. }));
    assert!(err.to_string().contains("absent.so"), "{err}");
}

#[test]
fn a_start_that_fails_its_health_check_leaves_the_service_without_an_instance() {
    let setup = Setup::with(
        graft_runtime::Runtime::builder()
            .restart_policy(graft_runtime::RestartPolicy { enabled: false, ..Default::default() }),
    );
    let events = setup.runtime.subscribe();
    let err = setup.runtime.load_and_start(setup.copy(Fixture::HealthFails)).unwrap_err();
    assert!(matches!(err, Error::HealthCheckFailed { .. }), "{err:?}");
    // With restarts disabled, the first failure is final: the service ends failed, and a call
    // fails at once instead of reaching an instance.
    let failed =
        events.iter().find(|e| matches!(e.kind, graft_runtime::EventKind::Failed { .. })).unwrap();
    assert_eq!(
        (failed.service.as_str(), failed.version.to_string()),
        ("greeter", "1.3.0".to_owned())
    );
    assert_eq!(setup.runtime.state("greeter").unwrap(), graft_runtime::ServiceState::Failed);
    let err = setup.runtime.call("greeter", "version", b"").unwrap_err();
    assert!(matches!(err, Error::Stopped { .. }), "{err:?}");
    assert!(setup.runtime.service_status("greeter").unwrap().current.is_none());
}

#[test]
fn a_panic_abort_build_is_refused() {
    let err =
        refused(|s| s.copy(Fixture::PanicAbort), |e| matches!(e, Error::PanicAbortBuild { .. }));
    let Error::PanicAbortBuild { service, version, .. } = err else { unreachable!() };
    assert_eq!((service.as_str(), version.to_string()), ("greeter", "1.7.0".to_owned()));
}
