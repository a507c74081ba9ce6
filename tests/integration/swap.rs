//! Load, call, swap and roll back one service.

use graft_tests::Fixture;

use super::{Setup, greeting};

#[test]
fn swap_changes_the_answers_and_rollback_restores_them_without_the_disk() {
    let setup = Setup::new();
    let v1_0 = setup.copy(Fixture::Greeter1_0);
    let v1_1 = setup.copy(Fixture::Greeter1_1);

    let loaded = setup.runtime.load_and_start(&v1_0).unwrap();
    assert_eq!(loaded.service, "greeter");
    let first = setup.runtime.service_status("greeter").unwrap().current.unwrap().id;
    let greeter = setup.runtime.handle("greeter").unwrap();
    assert_eq!(greeter.call_to_vec("greet", b"ada").unwrap(), greeting("ada", "1.0.0"));
    let staged_1_0 = setup.runtime.service_status("greeter").unwrap().current.unwrap().staged;

    let swap = setup.runtime.swap("greeter", &v1_1).unwrap();
    assert_eq!((swap.from.to_string(), swap.to.to_string()), ("1.0.0".into(), "1.1.0".into()));
    assert_eq!(greeter.call_to_vec("greet", b"ada").unwrap(), greeting("ada", "1.1.0"));
    let status = setup.runtime.service_status("greeter").unwrap();
    assert_eq!(status.current.as_ref().unwrap().id, swap.generation);
    assert_eq!(status.history.len(), 1);
    assert_eq!(status.history[0].id, first);

    // The rollback target is the generation already in memory: with its source file gone, a
    // rollback that went back to the disk would fail.
    std::fs::remove_file(&v1_0).unwrap();
    let rollback = setup.runtime.rollback("greeter").unwrap();
    assert_eq!(greeter.call_to_vec("greet", b"ada").unwrap(), greeting("ada", "1.0.0"));
    assert_eq!(rollback.generation, first, "rollback must republish, not reload");
    let status = setup.runtime.service_status("greeter").unwrap();
    let current = status.current.as_ref().unwrap();
    assert_eq!((current.id, &current.staged), (first, &staged_1_0));
    assert_eq!(status.history[0].id, swap.generation, "the rolled-back build stays loaded");

    // A second rollback undoes the first, again without the disk.
    std::fs::remove_file(&v1_1).unwrap();
    setup.runtime.rollback("greeter").unwrap();
    assert_eq!(greeter.call_to_vec("greet", b"ada").unwrap(), greeting("ada", "1.1.0"));
}

#[test]
fn a_handle_taken_before_a_swap_calls_the_new_build_after_it() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let early = setup.runtime.handle("greeter").unwrap();
    let clone = early.clone();
    setup.runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
    assert_eq!(early.version().unwrap().to_string(), "1.1.0");
    assert_eq!(clone.call_to_vec("version", b"").unwrap(), b"1.1.0");
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.1.0");
}

#[test]
fn rollback_without_history_is_a_typed_error() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let err = setup.runtime.rollback("greeter").unwrap_err();
    assert!(
        matches!(err, graft_runtime::Error::NoRollbackTarget { ref service } if service == "greeter")
    );
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.0.0");

    let err = setup.runtime.rollback("nobody").unwrap_err();
    assert!(matches!(err, graft_runtime::Error::UnknownService { .. }));
}

#[test]
fn loading_a_service_twice_is_refused_and_leaves_no_staged_copy() {
    let setup = Setup::new();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    let err = setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_1)).unwrap_err();
    assert!(
        matches!(err, graft_runtime::Error::AlreadyLoaded { ref service, .. } if service == "greeter")
    );
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.0.0");
    assert_eq!(setup.staged_files(), 1);
}

#[test]
fn history_depth_bounds_the_generations_kept_loaded() {
    let setup = Setup::with(graft_runtime::Runtime::builder().history_depth(2));
    let v1_0 = setup.copy(Fixture::Greeter1_0);
    let v1_1 = setup.copy(Fixture::Greeter1_1);
    setup.runtime.load_and_start(&v1_0).unwrap();
    let mut retired = Vec::new();
    for path in [&v1_1, &v1_0, &v1_1, &v1_0] {
        retired.push(setup.runtime.swap("greeter", path).unwrap().previous);
    }
    let status = setup.runtime.service_status("greeter").unwrap();
    assert_eq!(status.history.len(), 2);
    // The two oldest generations fell out of the history and, with no call running, retire.
    for watch in &retired[..2] {
        watch.wait_retired(super::PATIENCE).unwrap();
    }
    for watch in &retired[2..] {
        assert!(!watch.is_retired());
    }
    assert_eq!(setup.staged_files(), 3);
}

/// Regression: staged names restarted at 1 per runtime, so a second runtime sharing the staging
/// directory overwrote the first one's mapped copy and the process crashed.
#[test]
fn two_runtimes_sharing_a_staging_directory_do_not_overwrite_each_other() {
    let setup = Setup::new();
    let other =
        graft_runtime::Runtime::builder().staging_dir(setup.runtime.staging_dir()).build().unwrap();
    setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    other.load_and_start(setup.copy(Fixture::Greeter1_1)).unwrap();
    let first = setup.runtime.service_status("greeter").unwrap().current.unwrap().staged;
    let second = other.service_status("greeter").unwrap().current.unwrap().staged;
    assert_ne!(first, second);
    assert_eq!(setup.runtime.call("greeter", "version", b"").unwrap(), b"1.0.0");
    assert_eq!(other.call("greeter", "version", b"").unwrap(), b"1.1.0");
    assert_eq!(setup.staged_files(), 2);
}
