//! History on disk: committed versus current, and what a restarted host comes back on.

use std::path::Path;
use std::process::Command;

use graft_runtime::{Error, Runtime};
use graft_tests::Fixture;

use super::{Setup, greeting};

#[test]
fn a_restarted_host_comes_back_on_the_committed_build_not_the_one_on_probation() {
    let setup = Setup::new();
    let state = setup.dir.path().join("state");
    let v1_0 = setup.copy(Fixture::Greeter1_0);
    let v1_1 = setup.copy(Fixture::Greeter1_1);
    {
        let runtime = Runtime::builder().state_dir(&state).build().unwrap();
        runtime.load_and_start(&v1_0).unwrap();
        runtime.swap("greeter", &v1_1).unwrap();
        let manifest = runtime.manifest("greeter").unwrap().unwrap();
        assert_eq!(
            (manifest.current.version.as_str(), manifest.committed.version.as_str()),
            ("1.1.0", "1.0.0")
        );
        // The host dies here, 1.1 never committed.
    }
    // The source files are gone: the state directory has its own copies.
    std::fs::remove_file(&v1_0).unwrap();
    std::fs::remove_file(&v1_1).unwrap();
    {
        let runtime = Runtime::builder().state_dir(&state).build().unwrap();
        runtime.restore().unwrap();
        assert_eq!(runtime.call("greeter", "greet", b"h").unwrap(), greeting("h", "1.0.0"));
        let manifest = runtime.manifest("greeter").unwrap().unwrap();
        assert_eq!(manifest.current, manifest.committed, "it came back on the committed build");

        runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
        runtime.commit("greeter").unwrap();
    }
    let runtime = Runtime::builder().state_dir(&state).build().unwrap();
    runtime.restore().unwrap();
    assert_eq!(runtime.call("greeter", "greet", b"h").unwrap(), greeting("h", "1.1.0"));
    // Archived builds that no manifest entry names are removed.
    let archived = std::fs::read_dir(state.join("archive")).unwrap().count();
    assert_eq!(archived, 1, "only the committed (and current) build stays archived");
}

#[test]
fn commit_after_probation_is_a_policy_and_commit_needs_a_state_directory() {
    let setup = Setup::new();
    let err = {
        setup.runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
        setup.runtime.commit("greeter").unwrap_err()
    };
    assert!(matches!(err, Error::NoStateDir), "{err:?}");

    let state = setup.dir.path().join("state");
    let runtime = Runtime::builder()
        .state_dir(&state)
        .commit_after_probation(true)
        .health_interval(None)
        .probation(graft_runtime::ProbationPolicy { calls: 10, ..Default::default() })
        .build()
        .unwrap();
    let events = runtime.subscribe();
    runtime.load_and_start(setup.copy(Fixture::Greeter1_0)).unwrap();
    runtime.swap("greeter", setup.copy(Fixture::Greeter1_1)).unwrap();
    for _ in 0..10 {
        runtime.call("greeter", "greet", b"p").unwrap();
    }
    // The tenth call closes the window; the supervisor then passes it and commits.
    let deadline = std::time::Instant::now() + super::PATIENCE;
    while !events
        .try_iter()
        .any(|e| matches!(e.kind, graft_runtime::EventKind::ProbationPassed { .. }))
    {
        assert!(std::time::Instant::now() < deadline, "the probation never passed");
        std::thread::yield_now();
    }
    let manifest = runtime.manifest("greeter").unwrap().unwrap();
    assert_eq!(manifest.committed.version, "1.1.0");
}

/// Runs the crash host once; `kill_at` names the kill point it must abort at.
fn host(state: &Path, args: &[&str], kill_at: Option<&str>) -> Result<String, String> {
    let mut command = Command::new(graft_tests::crash_host().unwrap());
    command.arg(state).args(args);
    match kill_at {
        Some(point) => command.env("GRAFT_KILL_AT", point),
        None => command.env_remove("GRAFT_KILL_AT"),
    };
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{:?}: {}", output.status, String::from_utf8_lossy(&output.stderr)))
    }
}

#[test]
fn a_host_killed_at_any_step_of_a_swap_or_a_commit_restarts_on_the_last_committed_build() {
    let setup = Setup::new();
    let state = setup.dir.path().join("state");
    let v1_0 = setup.copy(Fixture::Greeter1_0);
    let v1_1 = setup.copy(Fixture::Greeter1_1);
    let (v1_0, v1_1) = (v1_0.to_str().unwrap(), v1_1.to_str().unwrap());
    assert_eq!(host(&state, &["serve", v1_0], None).unwrap(), "serving 1.0.0");

    let restart_serves = |expected: &str| {
        assert_eq!(host(&state, &["serve"], None).unwrap(), format!("serving {expected}"));
        let manifest = std::fs::read(state.join("manifests").join("greeter.json")).unwrap();
        let manifest: serde_json_check::Manifest = serde_json_check::parse(&manifest);
        assert_eq!(manifest.committed_version, expected, "the manifest parses and names it");
    };

    // Killed at each step of a swap: the swap was never committed, so 1.0 comes back.
    for point in [
        "swap/created",
        "swap/published",
        "swap/manifest:written",
        "swap/manifest:synced",
        "swap/manifest:renamed",
    ] {
        let killed = host(&state, &["swap", v1_1], Some(point));
        assert!(killed.is_err(), "the host was not killed at {point}: {killed:?}");
        restart_serves("1.0.0");
    }
    // A completed but uncommitted swap also comes back on 1.0.
    assert_eq!(host(&state, &["swap", v1_1], None).unwrap(), "serving 1.1.0");
    restart_serves("1.0.0");

    // Killed during a commit: before the new manifest is renamed into place, the old one (1.0
    // committed) is what a restart finds; from the rename on, the new one (1.1).
    for (point, committed) in [
        ("commit/start", "1.0.0"),
        ("commit/manifest:written", "1.0.0"),
        ("commit/manifest:synced", "1.0.0"),
        ("commit/manifest:renamed", "1.1.0"),
    ] {
        let killed = host(&state, &["swap-commit", v1_1], Some(point));
        assert!(killed.is_err(), "the host was not killed at {point}: {killed:?}");
        restart_serves(committed);
        if committed == "1.1.0" {
            break;
        }
    }
}

/// Reads the committed version out of a manifest without the test depending on its schema
/// beyond the field names the runtime documents.
mod serde_json_check {
    pub struct Manifest {
        pub committed_version: String,
    }

    pub fn parse(bytes: &[u8]) -> Manifest {
        let manifest: graft_runtime::Manifest =
            serde_json::from_slice(bytes).expect("the manifest parses");
        Manifest { committed_version: manifest.committed.version }
    }
}
