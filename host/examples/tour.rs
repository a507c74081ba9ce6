//! The operator's tour: graft-host runs the example plugins while a load loop calls the greeter
//! over the admin API, `graft` (the CLI) swaps it to 1.1 and rolls it back ten times, `/metrics`
//! is read and its counts checked against the calls the loop made, and a SIGTERM stops the host,
//! which drains and exits 0.
//!
//! Run it with `cargo run --release -p graft-host --example tour`. It builds `graft-host`, `graft`
//! and the plugins through the fixture catalog (`graft_tests::host_binaries`), into a target
//! directory of their own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use graft_tests::Fixture;

type Failure = Box<dyn std::error::Error>;

const SWAPS: usize = 10;

fn main() -> Result<(), Failure> {
    println!("building graft-host, graft and the example plugins ...");
    let bin = graft_tests::host_binaries()?;
    let dir = tempfile::tempdir()?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(plugins.join("staged"))?;
    graft_tests::copy_to(Fixture::Greeter1_0, &plugins, "libgreeter_v1_0.so")?;
    graft_tests::copy_to(Fixture::Greeter1_1, &plugins.join("staged"), "libgreeter_v1_1.so")?;
    graft_tests::copy_to(Fixture::Counter1_0, &plugins, "libcounter_v1_0.so")?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let address = format!("127.0.0.1:{port}");
    println!("$ graft-host --plugins {} --listen {address}", plugins.display());
    let mut host = Command::new(bin.join("graft-host"))
        .args(["--plugins", &plugins.to_string_lossy()])
        .args(["--state", &dir.path().join("state").to_string_lossy()])
        .args(["--listen", &address])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let graft = |args: &[&str]| -> Result<String, Failure> {
        let output =
            Command::new(bin.join("graft")).args(args).env("GRAFT_ADDR", &address).output()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(format!(
                "graft {args:?}: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        Ok(text)
    };
    let started = Instant::now();
    while !matches!(http(&address, "GET", "/readyz", ""), Ok((200, _))) {
        if started.elapsed() > Duration::from_secs(60) || host.try_wait()?.is_some() {
            let _ = host.kill();
            return Err("graft-host did not become ready".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("$ graft status\n{}", graft(&["status"])?);

    let stop = AtomicBool::new(false);
    let (made, failed) = std::thread::scope(|scope| -> Result<(u64, u64), Failure> {
        let looping = scope.spawn(|| {
            let (mut made, mut failed) = (0u64, 0u64);
            let call = r#"{"method":"greet","input":"ada"}"#;
            while !stop.load(Ordering::Acquire) {
                made += 1;
                match http(&address, "POST", "/v1/services/greeter/call", call) {
                    Ok((200, _)) => {}
                    _ => failed += 1,
                }
            }
            (made, failed)
        });
        println!("a load loop calls greeter over the admin API without pause");
        std::thread::sleep(Duration::from_millis(200));
        for round in 0..SWAPS {
            let swapped = graft(&["swap", "greeter", "staged/libgreeter_v1_1.so"])?;
            let rolled = graft(&["rollback", "greeter"])?;
            if round == 0 {
                println!("$ graft swap greeter staged/libgreeter_v1_1.so\n{swapped}");
                println!("$ graft rollback greeter\n{rolled}");
            }
        }
        println!("... {SWAPS} swaps and {SWAPS} rollbacks with the CLI under the loop");
        stop.store(true, Ordering::Release);
        looping.join().map_err(|_| "the load loop panicked".into())
    })?;

    let (_, metrics) = http(&address, "GET", "/metrics", "")?;
    println!("$ curl {address}/metrics | grep greeter");
    let mut counted = 0u64;
    for line in metrics.lines().filter(|l| !l.starts_with('#') && l.contains("greeter")) {
        if line.starts_with("graft_calls_total")
            || line.starts_with("graft_swaps_total")
            || line.starts_with("graft_rollbacks_total")
        {
            println!("  {line}");
        }
        if line.starts_with("graft_calls_total") {
            counted += line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    println!();
    println!("summary");
    println!("  calls made by the loop:          {made}");
    println!("  calls counted in /metrics:       {counted}");
    println!("  failed calls:                    {failed}");

    println!("$ kill -TERM graft-host");
    // SAFETY: `kill` with a valid pid and signal number has no memory effects.
    let sent = unsafe { libc::kill(host.id() as libc::pid_t, libc::SIGTERM) };
    if sent != 0 {
        let _ = host.kill();
        return Err("could not signal graft-host".into());
    }
    let exit = host.wait()?;
    println!("  graft-host exited with {exit} after draining every service");
    if failed > 0 || counted != made || !exit.success() {
        return Err("the tour saw failed calls, miscounted calls or an unclean exit".into());
    }
    Ok(())
}

/// One HTTP/1.1 request on a connection of its own: the status and the body.
fn http(address: &str, method: &str, target: &str, body: &str) -> Result<(u16, String), Failure> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("no status line")?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_owned()))
}
