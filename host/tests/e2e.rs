//! End-to-end tests: graft-host runs as a child process on a temporary plugin and state
//! directory, and is driven through its HTTP API, through the `graft` CLI, and with signals.
//!
//! The CLI is another package's binary, which cargo does not build for this package's tests:
//! it is built once per run into a target directory of its own (`<target>/graft-cli`), the way
//! the fixture catalog builds the plugins, so that the build never waits on the lock of the
//! cargo command running these tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use graft_tests::Fixture;
use serde_json::{Value, json};

/// How long anything a test waits for may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn the_cli_swaps_rolls_back_restarts_and_commits_and_readiness_follows_the_services() {
    let host = Host::start(&["--optional", "worker"], &[], |plugins| {
        copy(Fixture::Greeter1_0, plugins, "libgreeter_v1_0.so");
        copy(Fixture::Worker, plugins, "libworker.so");
        std::fs::create_dir(plugins.join("staged")).unwrap();
        copy(Fixture::Greeter1_1, &plugins.join("staged"), "libgreeter_v1_1.so");
    });
    host.wait_until_running(&["greeter", "worker"]);

    let greeter = host.service("greeter");
    assert_eq!(greeter["version"], "1.0.0");
    assert_eq!(greeter["interface"], "greeter");
    assert_eq!(greeter["history"], json!([]));
    assert_eq!(greeter["healthy"], true);
    let first = greeter["current"]["generation"].as_u64().unwrap();
    assert_eq!(greeter["current"]["version"], "1.0.0");

    let swap = host.graft_json(&["swap", "greeter", "staged/libgreeter_v1_1.so"]);
    assert_eq!((swap["from"].as_str(), swap["to"].as_str()), (Some("1.0.0"), Some("1.1.0")));
    let greeter = host.service("greeter");
    assert_eq!(greeter["version"], "1.1.0");
    assert_eq!(greeter["history"][0]["version"], "1.0.0");
    assert_eq!(greeter["history"][0]["generation"].as_u64(), Some(first));

    let call = host.graft(&["call", "greeter", "greet", "ada"]);
    assert_eq!(stdout(&call), "hello, ada from greeter 1.1.0");

    host.graft_json(&["rollback", "greeter"]);
    let greeter = host.service("greeter");
    assert_eq!(greeter["version"], "1.0.0");
    assert_eq!(greeter["current"]["generation"].as_u64(), Some(first));
    assert_eq!(greeter["history"][0]["version"], "1.1.0");

    host.graft_json(&["restart", "greeter"]);
    let greeter = host.service("greeter");
    assert_eq!(greeter["version"], "1.0.0");
    let restarted = greeter["current"]["generation"].as_u64().unwrap();
    assert!(restarted > first, "a restart makes a new generation: {greeter}");

    host.graft_json(&["swap", "greeter", "staged/libgreeter_v1_1.so"]);
    assert_eq!(host.service("greeter")["committed"]["version"], "1.0.0");
    host.graft_json(&["commit", "greeter"]);
    assert_eq!(host.service("greeter")["committed"]["version"], "1.1.0");

    host.graft_json(&["pause", "greeter"]);
    assert_eq!(host.service("greeter")["state"], "paused");
    host.graft_json(&["resume", "greeter"]);
    assert_eq!(host.service("greeter")["state"], "running");

    let one = host.graft_json(&["status", "greeter"]);
    assert_eq!((one["name"].as_str(), one["version"].as_str()), (Some("greeter"), Some("1.1.0")));

    // The table for people names each service and its version.
    let table = stdout(&host.graft(&["status"]));
    assert!(table.starts_with("SERVICE"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("greeter") && l.contains("1.1.0")), "{table}");

    // Readiness: an optional service may stop, a required one may not.
    assert_eq!(host.get("/readyz"), (200, json!({ "ready": true })));
    host.graft_json(&["stop", "worker"]);
    assert_eq!(host.get("/readyz").0, 200);
    let stop = host.graft_json(&["stop", "greeter"]);
    assert_eq!(stop["drained"], true);
    assert_eq!(host.service("greeter")["state"], "stopped");
    let (status, body) = host.get("/readyz");
    assert_eq!((status, &body["not_running"]), (503, &json!(["greeter"])), "{body}");
    host.graft_json(&["start", "greeter"]);
    assert_eq!(host.get("/readyz"), (200, json!({ "ready": true })));

    // An operation the runtime refuses is exit code 1 with the host's error.
    let refused = host.graft(&["--json", "swap", "greeter", "staged/libgreeter_v1_1.so"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let error: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "same_version", "{error}");

    let metrics = host.text("/metrics");
    assert!(metrics.contains("graft_service_up{service=\"greeter\",version=\"1.1.0\"} 1"));
    assert!(metrics.contains("graft_service_up{service=\"worker\",version=\"1.0.0\"} 0"));
    assert!(metrics.contains("graft_load_budget_free{resource=\"pthread_keys\"}"));
    host.shut_down();
}

/// A load loop of HTTP calls runs while the CLI swaps and rolls back 20 times: no call fails,
/// and the counts `/metrics` shows per version add up to exactly the calls the loop made.
#[test]
fn calls_over_http_survive_20_swaps_and_rollbacks_and_metrics_count_each_one() {
    let host = Host::start(&[], &[], |plugins| {
        copy(Fixture::Greeter1_0, plugins, "libgreeter_v1_0.so");
        std::fs::create_dir(plugins.join("staged")).unwrap();
        copy(Fixture::Greeter1_1, &plugins.join("staged"), "libgreeter_v1_1.so");
    });
    host.wait_until_running(&["greeter"]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (made, failed) = std::thread::scope(|scope| {
        let looping = scope.spawn(|| {
            let (mut made, mut failed) = (0u64, Vec::new());
            let call = body(json!({ "method": "greet", "input": "load" }));
            loop {
                let last = stop.load(std::sync::atomic::Ordering::Acquire);
                let reply = host.request("POST", "/v1/services/greeter/call", &[], &call);
                made += 1;
                if reply.status != 200 {
                    failed.push(format!("{} {}", reply.status, reply.body));
                }
                if last {
                    return (made, failed);
                }
            }
        });
        for _ in 0..20 {
            host.graft_json(&["swap", "greeter", "staged/libgreeter_v1_1.so"]);
            host.graft_json(&["rollback", "greeter"]);
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        looping.join().unwrap()
    });
    assert!(failed.is_empty(), "{} of {made} calls failed, the first: {}", failed.len(), failed[0]);
    let metrics = host.text("/metrics");
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("graft_calls_total{service=\"greeter\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, made, "every call counted once:\n{metrics}");
    assert!(metrics.contains("graft_swaps_total{service=\"greeter\"} 20"), "{metrics}");
    assert!(
        metrics.contains("graft_rollbacks_total{service=\"greeter\",kind=\"manual\"} 20"),
        "{metrics}"
    );
    assert!(metrics.contains("graft_swap_duration_seconds_count{service=\"greeter\"} 20"));
    host.shut_down();
}

/// A stateful service's state survives a restart of the host: SIGTERM saves it, the next host
/// on the same state directory restores it.
#[test]
fn a_stateful_services_state_comes_back_after_the_host_restarts() {
    let host = Host::start(&[], &[], |plugins| {
        copy(Fixture::Counter1_0, plugins, "libcounter_v1_0.so");
    });
    host.wait_until_running(&["counter"]);
    let increment = body(json!({ "method": "increment", "input": "" }));
    for n in 1..=5 {
        let reply = host.request("POST", "/v1/services/counter/call", &[], &increment);
        assert_eq!((reply.status, reply.json()["output"].clone()), (200, json!(n.to_string())));
    }
    host.signal(libc::SIGTERM);
    let (exit, dir) = host.exit_keeping_dir();
    assert_eq!(exit.code(), Some(0));
    let host = Host::start_in(dir, "127.0.0.1", &[], &[], |_| {});
    host.wait_until_running(&["counter"]);
    let get = body(json!({ "method": "get", "input": "" }));
    let reply = host.request("POST", "/v1/services/counter/call", &[], &get);
    assert_eq!(reply.json()["output"], "5", "{}\n{}", reply.body, host.log());
    host.shut_down();
}

#[test]
fn every_bad_request_gets_its_json_error_and_the_host_keeps_serving() {
    let host = Host::start(&[], &[], |plugins| {
        copy(Fixture::Greeter1_0, plugins, "libgreeter_v1_0.so");
        let staged = plugins.join("staged");
        std::fs::create_dir(&staged).unwrap();
        // A build outside the plugin directory, and a link to it from inside.
        let outside = plugins.parent().unwrap().join("outside");
        std::fs::create_dir(&outside).unwrap();
        copy(Fixture::Greeter1_1, &outside, "libgreeter_v1_1.so");
        std::os::unix::fs::symlink(outside.join("libgreeter_v1_1.so"), staged.join("link.so"))
            .unwrap();
    });
    host.wait_until_running(&["greeter"]);
    let outside = host.dir.path().join("outside/libgreeter_v1_1.so");

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("GET", "/v1/services/nosuch", vec![], 404, "unknown_service"),
        ("POST", "/v1/services/nosuch/restart", vec![], 404, "unknown_service"),
        ("GET", "/nowhere", vec![], 404, "unknown_route"),
        ("POST", "/v1/services/greeter/explode", vec![], 404, "unknown_route"),
        ("GET", "/v1/services/greeter/stop", vec![], 405, "method_not_allowed"),
        ("DELETE", "/v1/services", vec![], 405, "method_not_allowed"),
        ("POST", "/healthz", vec![], 405, "method_not_allowed"),
        (
            "POST",
            "/v1/services/greeter/swap",
            body(json!({"file": "../outside/libgreeter_v1_1.so"})),
            400,
            "bad_path",
        ),
        (
            "POST",
            "/v1/services/greeter/swap",
            body(json!({"file": "staged/link.so"})),
            400,
            "outside_plugin_dir",
        ),
        (
            "POST",
            "/v1/services/greeter/swap",
            body(json!({"file": outside})),
            400,
            "outside_plugin_dir",
        ),
        ("POST", "/v1/services/greeter/swap", body(json!({"file": "staged"})), 400, "not_a_file"),
        (
            "POST",
            "/v1/services/greeter/swap",
            body(json!({"file": "libnone.so"})),
            400,
            "file_not_found",
        ),
        ("POST", "/v1/services/greeter/swap", b"{\"file\": ".to_vec(), 400, "malformed_body"),
        ("POST", "/v1/services/greeter/swap", vec![], 400, "malformed_body"),
        (
            "POST",
            "/v1/services/greeter/swap",
            body(json!({"file": "x.so", "force": true})),
            400,
            "malformed_body",
        ),
        (
            "POST",
            "/v1/services/greeter/call",
            body(json!({"method": "greet", "input": "a", "input_base64": "YQ=="})),
            400,
            "malformed_body",
        ),
        (
            "POST",
            "/v1/services/greeter/call",
            body(json!({"method": "greet", "input_base64": "***"})),
            400,
            "malformed_body",
        ),
        ("POST", "/v1/services/greeter/call", body(json!({"method": "nosuch"})), 422, "refused"),
        ("POST", "/v1/services/greeter/call", body(json!({"method": "fail"})), 502, "call_failed"),
        (
            "POST",
            "/v1/services/greeter/call",
            body(json!({"method": "panic"})),
            502,
            "plugin_panicked",
        ),
        ("POST", "/v1/services/greeter/rollback", vec![], 409, "no_rollback_target"),
    ];
    for (method, path, payload, status, kind) in cases {
        let response = host.request(method, path, &[], &payload);
        assert_eq!(response.status, status, "{method} {path}: {}", response.body);
        let error = response.json();
        assert_eq!(error["error"]["kind"], kind, "{method} {path}: {error}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
        if status == 405 {
            assert!(response.header("allow").is_some(), "{method} {path}: no Allow header");
        }
    }

    // A body declared larger than the bound is refused before it is read.
    let huge = host.raw(
        "POST /v1/services/greeter/call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(huge.status, 413, "{}", huge.body);
    assert_eq!(huge.json()["error"]["kind"], "body_too_large");

    // Too many headers: refused by the HTTP layer itself (431, without a JSON body).
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for n in 0..80 {
        head.push_str(&format!("X-Filler-{n}: {n}\r\n"));
    }
    head.push_str("\r\n");
    assert_eq!(host.raw(&head).status, 431);

    // Garbage instead of HTTP.
    let _ = host.raw("\u{1}\u{2}\u{3} not http\r\n\r\n");

    // The call that worked before still works, and nothing changed.
    let call = host.request(
        "POST",
        "/v1/services/greeter/call",
        &[],
        &body(json!({"method": "greet", "input_base64": "YWRh"})),
    );
    assert_eq!(call.status, 200, "{}", call.body);
    assert_eq!(call.json()["output"], "hello, ada from greeter 1.0.0");
    assert_eq!(host.get("/healthz"), (200, json!({ "status": "alive" })));
    let greeter = host.service("greeter");
    assert_eq!(
        (greeter["version"].as_str(), greeter["state"].as_str()),
        (Some("1.0.0"), Some("running"))
    );
    host.shut_down();
}

#[test]
fn a_listener_off_loopback_needs_a_token_and_every_request_must_carry_it() {
    // Without a token the host refuses to start, and says why.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_graft-host"))
        .args([
            "--plugins",
            &path(&dir.path().join("plugins")),
            "--state",
            &path(&dir.path().join("state")),
        ])
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .env_remove("GRAFT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--token-file"),
        "{stderr}"
    );

    // With one, it serves on every interface; the test talks to it on loopback only.
    let host = Host::start_on("0.0.0.0", &[], &[], |plugins| {
        copy(Fixture::Greeter1_0, plugins, "libgreeter_v1_0.so");
        let token = plugins.parent().unwrap().join("token");
        std::fs::write(&token, "s3cret-token\n").unwrap();
    });
    let token_file = path(&host.dir.path().join("token"));
    let services = "/v1/services";
    for authorization in
        [None, Some("Bearer wrong"), Some("Bearer s3cret-token-and-more"), Some("s3cret-token")]
    {
        let headers: Vec<(&str, &str)> =
            authorization.map(|a| ("Authorization", a)).into_iter().collect();
        for path in [services, "/healthz", "/v1/services/greeter/stop"] {
            let method = if path.ends_with("stop") { "POST" } else { "GET" };
            let response = host.request(method, path, &headers, &[]);
            assert_eq!(response.status, 401, "{authorization:?} {path}");
            assert_eq!(response.json()["error"]["kind"], "unauthorized");
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        }
    }
    let allowed = host.request("GET", services, &[("Authorization", "Bearer s3cret-token")], &[]);
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    host.wait_until_running(&["greeter"]);
    // The refused stop did not happen.
    assert_eq!(host.service("greeter")["state"], "running");

    // The CLI: without the token it is refused (exit 1), with it it works.
    let without = host.graft_command(&["status"]).env_remove("GRAFT_TOKEN").output().unwrap();
    assert_eq!(without.status.code(), Some(1), "{without:?}");
    assert!(String::from_utf8_lossy(&without.stderr).contains("unauthorized"));
    let with = host.graft(&["--token-file", &token_file, "status", "--json"]);
    assert_eq!(with.status.code(), Some(0), "{with:?}");
    let from_env =
        host.graft_command(&["status"]).env("GRAFT_TOKEN", "s3cret-token").output().unwrap();
    assert_eq!(from_env.status.code(), Some(0), "{from_env:?}");
    host.shut_down();
}

#[test]
fn sigterm_lets_a_slow_call_finish_tells_systemd_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut messages = Notifications { socket: notify, seen: Vec::new() };
    let mut host = Host::start_in(
        dir,
        "127.0.0.1",
        &[],
        &[("NOTIFY_SOCKET", path(&notify_path)), ("WATCHDOG_USEC", "200000".to_owned())],
        |plugins| copy(Fixture::Greeter1_0, plugins, "libgreeter_v1_0.so"),
    );
    messages.wait_for("READY=1");
    assert_eq!(host.service("greeter")["state"], "running", "READY=1 comes after the plugins");
    // Pings at half of WATCHDOG_USEC (100 ms).
    messages.wait_for("WATCHDOG=1");

    // SIGHUP: a reload, bracketed for systemd.
    host.signal(libc::SIGHUP);
    messages.wait_for("RELOADING=1");
    messages.wait_for("READY=1");
    assert_eq!(host.service("greeter")["version"], "1.0.0");

    // A call that stays in the plugin until the test lets it go.
    let block_path = host.dir.path().join("block.sock");
    let block = UnixListener::bind(&block_path).unwrap();
    let address = host.address.clone();
    let input = path(&block_path);
    let caller = std::thread::spawn(move || {
        request(
            &address,
            "POST",
            "/v1/services/greeter/call",
            &[],
            &body(json!({"method": "block", "input": input})),
        )
    });
    block.set_nonblocking(true).unwrap();
    let mut held = eventually("the blocking call to reach the plugin", || match block.accept() {
        Ok((stream, _)) => Some(stream),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("accepting the plugin's connection: {e}"),
    });
    held.set_nonblocking(false).unwrap();
    let mut version = [0u8; 5];
    held.read_exact(&mut version).unwrap();
    assert_eq!(&version, b"1.0.0");

    host.signal(libc::SIGTERM);
    messages.wait_for("STOPPING=1");
    // Shutting down, and still serving its API while the stop waits for the call.
    let (status, readiness) = host.get("/readyz");
    assert_eq!((status, &readiness["stopping"]), (503, &json!(true)), "{readiness}");
    assert!(host.try_status().is_none(), "the host exited with a call in flight");

    held.write_all(b"x").unwrap();
    let answer = caller.join().unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["output"], "released from greeter 1.0.0");
    let (exit, log) = host.log_after_exit();
    assert_eq!(exit.code(), Some(0), "{log}");
}

#[test]
fn a_build_dropped_into_the_directory_is_swapped_in_and_graft_watch_shows_it() {
    let host =
        Host::start(&[], &[], |plugins| copy(Fixture::Greeter1_0, plugins, "libgreeter_v1_0.so"));
    host.wait_until_running(&["greeter"]);

    let mut watch =
        host.graft_command(&["watch", "--json"]).stdout(Stdio::piped()).spawn().unwrap();
    let (lines, events) = std::sync::mpsc::channel::<Value>();
    let stdout = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(serde_json::from_str(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    let next = |what: &str, wanted: &dyn Fn(&Value) -> bool| loop {
        let event = events.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("no {what} event"));
        if wanted(&event) {
            return event;
        }
    };
    // Restarts until one shows on the stream: from then on, it is live.
    eventually("the event stream to be live", || {
        host.graft_json(&["restart", "greeter"]);
        let deadline = Instant::now() + Duration::from_millis(200);
        std::iter::from_fn(|| {
            events.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()
        })
        .any(|e| e["event"] == "restarted")
        .then_some(())
    });

    // A finished build renamed into the directory, as a build tool would.
    let plugins = host.dir.path().join("plugins");
    copy(Fixture::Greeter1_1, &plugins, ".libgreeter_v1_1.so.tmp");
    std::fs::rename(plugins.join(".libgreeter_v1_1.so.tmp"), plugins.join("libgreeter_v1_1.so"))
        .unwrap();
    let swapped = next("swap", &|e| e["event"] == "swapped" && e["source"] == "runtime");
    assert_eq!(
        (swapped["service"].as_str(), swapped["version"].as_str()),
        (Some("greeter"), Some("1.1.0"))
    );
    assert_eq!(swapped["from"], "1.0.0");
    let seen = next("watcher swap", &|e| e["event"] == "swapped" && e["source"] == "watcher");
    assert!(seen["path"].as_str().is_some_and(|p| p.ends_with("libgreeter_v1_1.so")), "{seen}");
    assert_eq!(host.service("greeter")["version"], "1.1.0");

    watch.kill().unwrap();
    watch.wait().unwrap();
    reader.join().unwrap();
    host.shut_down();
}

#[test]
fn without_watching_sighup_brings_the_directory_into_service_between_reloading_and_ready() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let mut messages =
        Notifications { socket: UnixDatagram::bind(&notify_path).unwrap(), seen: Vec::new() };
    let host = Host::start_in(
        dir,
        "127.0.0.1",
        &["--no-watch"],
        &[("NOTIFY_SOCKET", path(&notify_path))],
        |plugins| copy(Fixture::Greeter1_0, plugins, "libgreeter_v1_0.so"),
    );
    messages.wait_for("READY=1");
    assert_eq!(host.service("greeter")["version"], "1.0.0");

    let plugins = host.dir.path().join("plugins");
    copy(Fixture::Greeter1_1, &plugins, ".libgreeter_v1_1.so.tmp");
    std::fs::rename(plugins.join(".libgreeter_v1_1.so.tmp"), plugins.join("libgreeter_v1_1.so"))
        .unwrap();
    // Nothing watches: the new build waits for the reload.
    assert_eq!(host.service("greeter")["version"], "1.0.0");

    host.signal(libc::SIGHUP);
    messages.wait_for("RELOADING=1");
    messages.wait_for("READY=1");
    // READY=1 comes once the reload's pass is done.
    let greeter = host.service("greeter");
    assert_eq!(greeter["version"], "1.1.0", "{greeter}");
    assert_eq!(greeter["history"][0]["version"], "1.0.0");
    host.shut_down();
}

// ---------------------------------------------------------------------------------------------
// The host as a child process.

struct Host {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl Host {
    /// A host on loopback over a plugin directory that `setup` fills (it gets the plugin
    /// directory; the temporary directory is its parent), waited for until /healthz answers.
    fn start(args: &[&str], envs: &[(&str, String)], setup: impl FnOnce(&Path)) -> Host {
        Host::start_on("127.0.0.1", args, envs, setup)
    }

    fn start_on(
        ip: &str,
        args: &[&str],
        envs: &[(&str, String)],
        setup: impl FnOnce(&Path),
    ) -> Host {
        Host::start_in(tempfile::tempdir().unwrap(), ip, args, envs, setup)
    }

    fn start_in(
        mut dir: tempfile::TempDir,
        ip: &str,
        args: &[&str],
        envs: &[(&str, String)],
        setup: impl FnOnce(&Path),
    ) -> Host {
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        setup(&plugins);
        let token = dir.path().join("token");
        // A port another process takes between the probe and the bind fails the start: try
        // again with another.
        for _ in 0..5 {
            let port = free_port();
            let mut command = Command::new(env!("CARGO_BIN_EXE_graft-host"));
            command
                .args(["--plugins", &path(&plugins), "--state", &path(&dir.path().join("state"))])
                .args(["--listen", &format!("{ip}:{port}")])
                .args(args)
                .env("RUST_LOG", "info,graft_host=debug")
                .env_remove("GRAFT_TOKEN")
                .env_remove("NOTIFY_SOCKET")
                .env_remove("WATCHDOG_USEC")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("host.log")).unwrap());
            if token.exists() {
                command.args(["--token-file", &path(&token)]);
            }
            for (key, value) in envs {
                command.env(key, value);
            }
            let child = command.spawn().unwrap();
            let mut host = Host { child, address: format!("127.0.0.1:{port}"), dir };
            let up = eventually("graft-host to answer /healthz or exit", || {
                if host.try_status().is_some() {
                    return Some(false);
                }
                host.healthy().then_some(true)
            });
            if up {
                return host;
            }
            let log = host.log();
            assert!(log.contains("cannot listen"), "graft-host exited at start:\n{log}");
            dir = std::mem::replace(&mut host.dir, tempfile::tempdir().unwrap());
        }
        panic!("no free port after five tries");
    }

    /// Whether /healthz answers 200 now.
    fn healthy(&self) -> bool {
        if TcpStream::connect(&self.address).is_err() {
            return false;
        }
        self.get_with_token("/healthz").0 == 200
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is this test's own child,
        // which has not been waited for (`Host` owns it), so the pid cannot have been reused.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// SIGTERM, then the exit code must be 0.
    fn shut_down(self) {
        self.signal(libc::SIGTERM);
        let log = self.log_after_exit();
        assert!(log.0.success(), "graft-host exited with {}:\n{}", log.0, log.1);
    }

    /// Waits for the host to exit; its exit status and its directory (kept for another host).
    fn exit_keeping_dir(mut self) -> (ExitStatus, tempfile::TempDir) {
        let status = self.child.wait().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }

    fn log_after_exit(mut self) -> (ExitStatus, String) {
        let status = eventually("graft-host to exit", || self.try_status());
        (status, self.log())
    }

    fn wait_until_running(&self, services: &[&str]) {
        eventually("the services to run", || {
            let (status, list) = self.get_with_token("/v1/services");
            let running = status == 200
                && services.iter().all(|name| {
                    list.as_array().is_some_and(|all| {
                        all.iter().any(|s| s["name"] == *name && s["state"] == "running")
                    })
                });
            running.then_some(())
        });
    }

    fn token_header(&self) -> Vec<(&'static str, String)> {
        match std::fs::read_to_string(self.dir.path().join("token")) {
            Ok(token) => vec![("Authorization", format!("Bearer {}", token.trim()))],
            Err(_) => Vec::new(),
        }
    }

    fn request(&self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        request(&self.address, method, target, headers, body)
    }

    fn get_with_token(&self, target: &str) -> (u16, Value) {
        let headers = self.token_header();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = self.request("GET", target, &headers, &[]);
        (reply.status, reply.json())
    }

    fn get(&self, target: &str) -> (u16, Value) {
        self.get_with_token(target)
    }

    fn text(&self, target: &str) -> String {
        let reply = self.request("GET", target, &[], &[]);
        assert_eq!(reply.status, 200, "{target}: {}", reply.body);
        reply.body
    }

    fn raw(&self, text: &str) -> Reply {
        exchange(&self.address, text.as_bytes())
    }

    /// The service `name` as `graft status --json` lists it.
    fn service(&self, name: &str) -> Value {
        let output = self.graft(&["status", "--json"]);
        assert_eq!(output.status.code(), Some(0), "graft status: {output:?}");
        let all: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
        let one = all.iter().find(|s| s["name"] == name);
        one.unwrap_or_else(|| panic!("no {name} in {all:?}")).clone()
    }

    fn graft_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(graft());
        command.args(args).env("GRAFT_ADDR", &self.address).stdin(Stdio::null());
        if let Ok(token) = std::fs::read_to_string(self.dir.path().join("token")) {
            command.env("GRAFT_TOKEN", token.trim());
        } else {
            command.env_remove("GRAFT_TOKEN");
        }
        command
    }

    fn graft(&self, args: &[&str]) -> Output {
        self.graft_command(args).output().unwrap()
    }

    /// `graft --json ARGS`, which must succeed; its answer.
    fn graft_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.graft(&all);
        assert_eq!(output.status.code(), Some(0), "graft {args:?}: {output:?}\n{}", self.log());
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- graft-host log ---\n{}", self.log());
        }
    }
}

/// The `graft` binary, built once per run.
fn graft() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let host = Path::new(env!("CARGO_BIN_EXE_graft-host"));
        // <target>/<profile>/graft-host
        let target = host.parent().and_then(Path::parent).unwrap().join("graft-cli");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .current_dir(graft_tests::workspace_root())
            .args(["build", "--quiet", "-p", "graft-cli", "--target-dir"])
            .arg(&target)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "building graft: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        target.join("debug").join("graft")
    })
}

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 client: one request per connection, so each case controls its bytes.

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn request(
    address: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut bytes =
        format!("{method} {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        bytes.push_str(&format!("{name}: {value}\r\n"));
    }
    bytes.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = bytes.into_bytes();
    bytes.extend_from_slice(body);
    exchange(address, &bytes)
}

fn exchange(address: &str, bytes: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    // The server may close while bytes are still unsent (a refused head): what it answered is
    // what was read before.
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status =
        lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply { status, headers, body: body.to_owned() }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// What graft-host told its service manager, datagram by datagram.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    /// Waits for a datagram with the line `wanted` after those already looked at.
    fn wait_for(&mut self, wanted: &str) {
        let deadline = Instant::now() + PATIENCE;
        let mut buffer = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {wanted} from graft-host; got {:?}", self.seen);
            self.socket.set_read_timeout(Some(left)).unwrap();
            let Ok(size) = self.socket.recv(&mut buffer) else { continue };
            let message = String::from_utf8_lossy(&buffer[..size]).into_owned();
            let found = message.lines().any(|line| line == wanted);
            self.seen.push(message);
            if found {
                return;
            }
        }
    }
}

fn copy(fixture: Fixture, dir: &Path, name: &str) {
    graft_tests::copy_to(fixture, dir, name).unwrap();
}

fn body(value: Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn path(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

fn stdout(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it gives a value; fails the test after [`PATIENCE`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
