//! A host for the crash-consistency tests: it restores the services of a state directory, does
//! one operation on `greeter`, and prints the version serving. Built with the `fault-injection`
//! feature, it aborts at the kill point named by `GRAFT_KILL_AT`.
//!
//! `crash_host <state-dir> serve [<plugin>]`: restore; load and start `plugin` if nothing was
//! restored. `crash_host <state-dir> swap <plugin>`: restore, then swap. `crash_host <state-dir>
//! swap-commit <plugin>`: restore, swap, commit.

use std::process::ExitCode;

use graft_runtime::Runtime;

fn main() -> ExitCode {
    match run() {
        Ok(version) => {
            println!("serving {version}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("crash_host: {error}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<String, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [state, command, rest @ ..] = args.as_slice() else {
        return Err("usage: crash_host <state-dir> serve|swap|swap-commit [<plugin>]".into());
    };
    let runtime = Runtime::builder().state_dir(state).health_interval(None).build()?;
    runtime.restore()?;
    match (command.as_str(), rest) {
        ("serve", [plugin]) if runtime.handle("greeter").is_err() => {
            runtime.load_and_start(plugin)?;
        }
        ("serve", _) => {}
        ("swap", [plugin]) => {
            runtime.swap("greeter", plugin)?;
        }
        ("swap-commit", [plugin]) => {
            runtime.swap("greeter", plugin)?;
            runtime.commit("greeter")?;
        }
        _ => return Err(format!("unknown command {command} {rest:?}").into()),
    }
    let version = runtime.call("greeter", "version", b"")?;
    Ok(String::from_utf8(version)?)
}
