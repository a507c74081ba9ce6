//! The fixture catalog: builds the example and fixture plugins of `plugins/` once and says where
//! their libraries are.
//!
//! The integration tests, the benchmarks and the demo all need the plugins as `.so` files, and a
//! plain `cargo test` does not produce a cdylib's library. The first call to [`path`] in a
//! process runs `cargo build --profile plugin` for every fixture (and `--profile plugin-abort`
//! for the one that must be built with `panic = "abort"`, `--profile plugin-debug` for the one
//! that must be built without optimisations), into a target directory of its own
//! (`<target>/graft-plugins`) so that it never waits on the lock of the outer cargo command that
//! is running the tests. Cargo makes a rebuild of unchanged plugins a no-op.
//!
//! Tests that modify or delete a plugin file work on a copy ([`copy_to`]), never on the built
//! library itself.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// One plugin of the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fixture {
    /// greeter 1.0.0, interface greeter 1.0.0.
    Greeter1_0,
    /// greeter 1.1.0, interface greeter 1.1.0: compatible with 1.0.
    Greeter1_1,
    /// greeter 2.0.0, interface greeter 2.0.0: incompatible with 1.x.
    Greeter2_0,
    /// A compatible greeter (1.2.0) whose construction fails.
    CreateFails,
    /// A compatible greeter (1.3.0) whose health check fails.
    HealthFails,
    /// A greeter whose descriptor has the wrong magic number.
    BadMagic,
    /// A greeter whose descriptor has an ABI version the host does not speak.
    BadAbi,
    /// A shared library without the entry symbol.
    NoEntry,
    /// A compatible greeter (1.7.0) built with `panic = "abort"`.
    PanicAbort,
    /// A compatible greeter (1.8.0) that passes its first health check and fails every later one.
    Sickly,
    /// A compatible greeter (1.9.0) whose `greet` panics on every fourth call.
    Flaky,
    /// The worker template (1.0.0): loaded under many names, relays calls.
    Worker,
    /// A worker whose construction waits at the `rendezvous` service for its wave.
    GatedWorker,
    /// A service (`crashy`) whose construction always panics.
    Crashy,
    /// The `rendezvous` service.
    Rendezvous,
    /// The `threads` service 1.0.0: plugin code using `std`'s threads on host threads.
    Threads1_0,
    /// The `threads` service 1.1.0.
    Threads1_1,
    /// The `slowhealth` service, whose first periodic health check waits for the test.
    SlowHealth,
    /// A compatible greeter (1.10.0, interface 1.0.5) that depends on `rendezvous`.
    GreeterNeedsRendezvous,
    /// A compatible greeter (1.10.0) whose descriptor ends before its last field, as a plugin
    /// built before that field was appended.
    DescriptorShort,
    /// A compatible greeter (1.11.0) whose descriptor carries a field appended after the host's
    /// layout.
    DescriptorExtended,
    /// A greeter (1.12.0) whose descriptor is smaller than the minimum of its ABI version.
    DescriptorTiny,
    /// A compatible greeter (1.13.0) built without optimisations (the `plugin-debug` profile).
    GreeterDebug,
    /// The stateful `counter` 1.0.0: state format 1, reads later formats by their prefix.
    Counter1_0,
    /// The stateful `counter` 1.1.0: state format 2, migrates format 1.
    Counter1_1,
    /// A `counter` (0.9.0, state format 1) that refuses every later format.
    CounterStrict,
    /// A `counter` (1.2.0, format 2) whose handover steps fail on request (method `fault`).
    CounterFaulty1,
    /// The same (1.3.0).
    CounterFaulty2,
    /// A `counter` (2.0.0) whose descriptor has the 0.3 layout, before the state entry points:
    /// stateless to the host.
    CounterAbi2,
    /// The stateful `kv` 1.0.0, interface kv 1.0.0: state format 1, reads format 2.
    Kv1_0,
    /// The stateful `kv` 1.1.0, interface kv 1.1.0 (adds `writes`): state format 2, the entries
    /// with their write counts; migrates format 1.
    Kv1_1,
    /// The typed key-value service 2.0.0 (interface kv 2.0.0, stateful, typed state).
    Kv2_0,
    /// The typed key-value service 2.1.0 (interface kv 2.1.0: adds `keys`).
    Kv2_1,
    /// A typed kv build (2.2.0) claiming interface 2.2.0 that removed `delete`.
    KvRemoves,
    /// A typed kv build (2.2.1) claiming interface 2.2.0 whose `put` takes a `&str` value.
    KvRetyped,
    /// A typed kv build (2.1.1) claiming interface 2.1.1 (a patch) that adds `clear`.
    KvPatchAdds,
    /// The typed hello-world service 1.0.0.
    Hello1_0,
    /// The typed hello-world service 1.1.0: counts visits in `kv` through its typed client.
    Hello1_1,
}

impl Fixture {
    /// Every fixture, in the order they are built.
    pub const ALL: [Fixture; 38] = [
        Fixture::Greeter1_0,
        Fixture::Greeter1_1,
        Fixture::Greeter2_0,
        Fixture::CreateFails,
        Fixture::HealthFails,
        Fixture::BadMagic,
        Fixture::BadAbi,
        Fixture::NoEntry,
        Fixture::PanicAbort,
        Fixture::Sickly,
        Fixture::Flaky,
        Fixture::Worker,
        Fixture::GatedWorker,
        Fixture::Crashy,
        Fixture::Rendezvous,
        Fixture::Threads1_0,
        Fixture::Threads1_1,
        Fixture::SlowHealth,
        Fixture::GreeterNeedsRendezvous,
        Fixture::DescriptorShort,
        Fixture::DescriptorExtended,
        Fixture::DescriptorTiny,
        Fixture::GreeterDebug,
        Fixture::Counter1_0,
        Fixture::Counter1_1,
        Fixture::CounterStrict,
        Fixture::CounterFaulty1,
        Fixture::CounterFaulty2,
        Fixture::CounterAbi2,
        Fixture::Kv1_0,
        Fixture::Kv1_1,
        Fixture::Kv2_0,
        Fixture::Kv2_1,
        Fixture::KvRemoves,
        Fixture::KvRetyped,
        Fixture::KvPatchAdds,
        Fixture::Hello1_0,
        Fixture::Hello1_1,
    ];

    /// The cargo package that builds it.
    pub fn package(self) -> &'static str {
        match self {
            Fixture::Greeter1_0 => "greeter-v1_0",
            Fixture::Greeter1_1 => "greeter-v1_1",
            Fixture::Greeter2_0 => "greeter-v2_0",
            Fixture::CreateFails => "fixture-create-fails",
            Fixture::HealthFails => "fixture-health-fails",
            Fixture::BadMagic => "fixture-bad-magic",
            Fixture::BadAbi => "fixture-bad-abi",
            Fixture::NoEntry => "fixture-no-entry",
            Fixture::PanicAbort => "fixture-panic-abort",
            Fixture::Sickly => "fixture-sickly",
            Fixture::Flaky => "fixture-flaky",
            Fixture::Worker => "worker",
            Fixture::GatedWorker => "fixture-gated-worker",
            Fixture::Crashy => "fixture-crashy",
            Fixture::Rendezvous => "fixture-rendezvous",
            Fixture::Threads1_0 => "fixture-threads-1",
            Fixture::Threads1_1 => "fixture-threads-2",
            Fixture::SlowHealth => "fixture-slow-health",
            Fixture::GreeterNeedsRendezvous => "fixture-greeter-needs",
            Fixture::DescriptorShort => "fixture-descriptor-short",
            Fixture::DescriptorExtended => "fixture-descriptor-extended",
            Fixture::DescriptorTiny => "fixture-descriptor-tiny",
            Fixture::GreeterDebug => "fixture-greeter-debug",
            Fixture::Counter1_0 => "counter-v1_0",
            Fixture::Counter1_1 => "counter-v1_1",
            Fixture::CounterStrict => "fixture-counter-strict",
            Fixture::CounterFaulty1 => "fixture-counter-faulty-1",
            Fixture::CounterFaulty2 => "fixture-counter-faulty-2",
            Fixture::CounterAbi2 => "fixture-counter-abi2",
            Fixture::Kv1_0 => "kv-v1_0",
            Fixture::Kv1_1 => "kv-v1_1",
            Fixture::Kv2_0 => "kv-v2_0",
            Fixture::Kv2_1 => "kv-v2_1",
            Fixture::KvRemoves => "fixture-kv-removes",
            Fixture::KvRetyped => "fixture-kv-retyped",
            Fixture::KvPatchAdds => "fixture-kv-patch-adds",
            Fixture::Hello1_0 => "hello-v1_0",
            Fixture::Hello1_1 => "hello-v1_1",
        }
    }

    /// The plugin version it declares (for the greeters, also part of every answer).
    pub fn version(self) -> &'static str {
        match self {
            Fixture::Greeter1_0 => "1.0.0",
            Fixture::Greeter1_1 => "1.1.0",
            Fixture::Greeter2_0 => "2.0.0",
            Fixture::CreateFails => "1.2.0",
            Fixture::HealthFails => "1.3.0",
            Fixture::BadMagic => "1.4.0",
            Fixture::BadAbi => "1.5.0",
            Fixture::NoEntry => "1.6.0",
            Fixture::PanicAbort => "1.7.0",
            Fixture::Sickly => "1.8.0",
            Fixture::Flaky => "1.9.0",
            Fixture::GreeterNeedsRendezvous => "1.10.0",
            Fixture::DescriptorShort => "1.10.0",
            Fixture::DescriptorExtended => "1.11.0",
            Fixture::DescriptorTiny => "1.12.0",
            Fixture::GreeterDebug => "1.13.0",
            Fixture::CounterStrict => "0.9.0",
            Fixture::Counter1_1 => "1.1.0",
            Fixture::CounterFaulty1 => "1.2.0",
            Fixture::CounterFaulty2 => "1.3.0",
            Fixture::CounterAbi2 => "2.0.0",
            Fixture::Worker
            | Fixture::GatedWorker
            | Fixture::Crashy
            | Fixture::Rendezvous
            | Fixture::SlowHealth
            | Fixture::Threads1_0
            | Fixture::Counter1_0
            | Fixture::Kv1_0 => "1.0.0",
            Fixture::Threads1_1 | Fixture::Kv1_1 | Fixture::Hello1_1 => "1.1.0",
            Fixture::Hello1_0 => "1.0.0",
            Fixture::Kv2_0 => "2.0.0",
            Fixture::Kv2_1 => "2.1.0",
            Fixture::KvRemoves => "2.2.0",
            Fixture::KvRetyped => "2.2.1",
            Fixture::KvPatchAdds => "2.1.1",
        }
    }

    /// The cargo profile it is built with; its output directory has the same name.
    pub fn profile(self) -> &'static str {
        match self {
            Fixture::PanicAbort => "plugin-abort",
            Fixture::GreeterDebug => "plugin-debug",
            _ => "plugin",
        }
    }

    /// The library's file name.
    pub fn file_name(self) -> String {
        format!("lib{}.so", self.package().replace('-', "_"))
    }
}

/// Why the plugins could not be built.
#[derive(Debug, Clone)]
pub struct BuildError(String);

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "building the fixture plugins failed: {}", self.0)
    }
}

impl std::error::Error for BuildError {}

/// The built library of `fixture`, building every fixture first if this process has not yet.
pub fn path(fixture: Fixture) -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    let target = BUILT.get_or_init(build_all).clone()?;
    Ok(target.join(fixture.profile()).join(fixture.file_name()))
}

/// The `crash_host` example of graft-runtime, built with its kill points (the
/// `fault-injection` feature) once per process, into the fixtures' target directory.
pub fn crash_host() -> Result<PathBuf, BuildError> {
    Ok(examples()?.join("crash_host"))
}

/// The `retire_host` example of graft-runtime (the retirement scenarios that crashed hosts),
/// built once per process with the other examples.
pub fn retire_host() -> Result<PathBuf, BuildError> {
    Ok(examples()?.join("retire_host"))
}

/// The `files_host` example of graft-runtime (the file scenarios that crashed or hung hosts),
/// built once per process with the other examples.
pub fn files_host() -> Result<PathBuf, BuildError> {
    Ok(examples()?.join("files_host"))
}

/// Builds the runtime's example hosts once per process (one cargo command, the kill points
/// enabled) and returns their directory.
fn examples() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let target = fixture_target(&root);
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let output = Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--quiet", "--profile", "plugin", "-p", "graft-runtime"])
                .args(["--example", "crash_host", "--example", "retire_host"])
                .args(["--example", "files_host"])
                .args(["--features", "fault-injection", "--target-dir"])
                .arg(&target)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .output()
                .map_err(|e| BuildError(format!("running cargo: {e}")))?;
            if !output.status.success() {
                return Err(BuildError(format!(
                    "building the example hosts: {}",
                    String::from_utf8_lossy(&output.stderr)
                )));
            }
            Ok(target.join("plugin").join("examples"))
        })
        .clone()
}

/// Copies the library of `fixture` into `dir` under `name` and returns the copy's path.
pub fn copy_to(fixture: Fixture, dir: &Path, name: &str) -> Result<PathBuf, BuildError> {
    let source = path(fixture)?;
    let target = dir.join(name);
    std::fs::copy(&source, &target).map_err(|e| {
        BuildError(format!("copying {} to {}: {e}", source.display(), target.display()))
    })?;
    Ok(target)
}

/// The directory holding `graft-host` and `graft` (the CLI), built optimised once per process
/// into the fixtures' target directory (never the outer cargo's, whose lock may be held): for
/// the operator's tour and the admin API's benchmark.
pub fn host_binaries() -> Result<PathBuf, BuildError> {
    static BUILT: OnceLock<Result<PathBuf, BuildError>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let target = fixture_target(&root);
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let output = Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--quiet", "--profile", "plugin", "-p", "graft-host"])
                .args(["-p", "graft-cli", "--target-dir"])
                .arg(&target)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .output()
                .map_err(|e| BuildError(format!("running cargo: {e}")))?;
            if !output.status.success() {
                return Err(BuildError(format!(
                    "building graft-host and graft: {}",
                    String::from_utf8_lossy(&output.stderr)
                )));
            }
            Ok(target.join("plugin"))
        })
        .clone()
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn fixture_target(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("graft-plugins")
}

fn build_all() -> Result<PathBuf, BuildError> {
    let root = workspace_root();
    let target = fixture_target(&root);
    // One cargo command per profile; cargo builds the packages of each in parallel.
    for profile in ["plugin", "plugin-abort", "plugin-debug"] {
        let packages = Fixture::ALL.into_iter().filter(|f| f.profile() == profile);
        build(&root, &target, profile, packages)?;
    }
    for fixture in Fixture::ALL {
        let file = target.join(fixture.profile()).join(fixture.file_name());
        if !file.is_file() {
            return Err(BuildError(format!("cargo succeeded but {} is missing", file.display())));
        }
    }
    Ok(target)
}

fn build(
    root: &Path,
    target: &Path,
    profile: &str,
    fixtures: impl Iterator<Item = Fixture>,
) -> Result<(), BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--quiet", "--profile", profile, "--target-dir"])
        .arg(target);
    for fixture in fixtures {
        command.args(["-p", fixture.package()]);
    }
    // The outer cargo may be building with flags meant for the test binary (coverage, sanitizers);
    // the plugins are built the plain way.
    command.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS");
    let output = command.output().map_err(|e| BuildError(format!("running cargo: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BuildError(format!(
            "cargo build --profile {profile} exited with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}
