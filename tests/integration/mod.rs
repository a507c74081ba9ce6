//! The integration-test modules and the helpers they share.

mod abi;
mod canary;
mod defects;
mod dependencies;
mod drain;
mod events;
mod files;
mod handoff_stress;
mod history;
mod kv;
mod lifecycle;
mod metrics;
mod panics;
mod refusals;
mod retire;
mod rollback_gates;
mod state;
mod stress;
mod supervision;
mod swap;
mod typed;
mod typed_payloads;
mod watch;

use std::path::{Path, PathBuf};

use graft_runtime::{Runtime, RuntimeBuilder};
use graft_tests::Fixture;
use tempfile::TempDir;

/// A test's private directory with a runtime staging into it.
pub struct Setup {
    pub dir: TempDir,
    pub runtime: Runtime,
}

impl Setup {
    pub fn new() -> Setup {
        Setup::with(Runtime::builder())
    }

    pub fn with(builder: RuntimeBuilder) -> Setup {
        let dir = tempfile::tempdir().expect("temporary directory");
        let runtime = builder.staging_dir(dir.path().join("staging")).build().expect("runtime");
        Setup { dir, runtime }
    }

    /// Copies `fixture`'s library into this test's directory.
    pub fn copy(&self, fixture: Fixture) -> PathBuf {
        graft_tests::copy_to(fixture, self.dir.path(), &fixture.file_name()).expect("fixture")
    }

    /// Loads `fixture` (a worker template) as service `name`, depending on `dependencies`.
    pub fn load_as(&self, fixture: Fixture, name: &str, dependencies: &[&str]) {
        let mut options = graft_runtime::LoadOptions::default().name(name);
        for dependency in dependencies {
            options = options.depends_on(*dependency, semver::VersionReq::parse("^1").unwrap());
        }
        let path = graft_tests::path(fixture).expect("fixture");
        self.runtime.load_with(path, options).expect("load");
    }

    /// The staged copies in the staging directory (its lock files are not counted).
    pub fn staged_files(&self) -> usize {
        std::fs::read_dir(self.runtime.staging_dir())
            .expect("staging directory")
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "so")))
            .count()
    }
}

/// What greeter `version` answers to `greet` with input `name`.
pub fn greeting(name: &str, version: &str) -> Vec<u8> {
    format!("hello, {name} from greeter {version}").into_bytes()
}

/// Whether `path` is mapped into this process, according to /proc/self/maps.
pub fn mapped(path: &Path) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let needle = path.to_str().expect("utf-8 path");
    maps.lines().any(|line| line.contains(needle))
}

/// A generous bound for waits that should finish at once; only a broken runtime reaches it.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// The first event that `pick` accepts, waiting at most [`PATIENCE`].
pub fn wait_for(
    events: &graft_runtime::EventReceiver,
    pick: impl Fn(&graft_runtime::Event) -> bool,
) -> graft_runtime::Event {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match events.recv_deadline(deadline) {
            Ok(event) if pick(&event) => return event,
            Ok(_) => continue,
            Err(e) => panic!("no such event within {PATIENCE:?}: {e}"),
        }
    }
}

/// A probation window that fails at the first failed call and otherwise stays open a minute.
pub fn strict_probation() -> graft_runtime::ProbationPolicy {
    graft_runtime::ProbationPolicy {
        calls: 1000,
        duration: std::time::Duration::from_secs(60),
        max_failures: 0,
        max_failure_rate: 1.0,
        min_calls: u64::MAX,
    }
}
