//! What graft adds per HTTP call of its admin API: `http/call_roundtrip` (a call of a no-op
//! method through `POST /v1/services/greeter/call`) beside `http/healthz` (a bare request to
//! the same server), both over one kept-alive loopback connection to a `graft-host` child.
//!
//! Run with `cargo bench -p graft-benches --bench http`. It builds `graft-host` through the
//! fixture catalog (`graft_tests::host_binaries`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use graft_tests::Fixture;

/// A graft-host child serving the greeter, killed on drop.
struct Host {
    child: Child,
    _dir: tempfile::TempDir,
    address: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Host {
    let dir = tempfile::tempdir().expect("temporary directory");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugin directory");
    graft_tests::copy_to(Fixture::Greeter1_0, &plugins, "libgreeter_v1_0.so").expect("fixture");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let address = format!("127.0.0.1:{port}");
    let binaries = graft_tests::host_binaries().expect("building graft-host");
    let child = Command::new(binaries.join("graft-host"))
        .args(["--plugins", &plugins.to_string_lossy()])
        .args(["--state", &dir.path().join("state").to_string_lossy()])
        .args(["--listen", &address])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("graft-host");
    let host = Host { child, _dir: dir, address };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut connection) = Connection::open(&host.address)
            && connection.exchange("POST", "/v1/services/greeter/call", br#"{"method":"noop"}"#)
                == 200
        {
            return host;
        }
        assert!(Instant::now() < deadline, "graft-host did not serve the greeter in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One kept-alive HTTP/1.1 connection.
struct Connection {
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

impl Connection {
    fn open(address: &str) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream),
            request: Vec::new(),
            line: String::new(),
            body: Vec::new(),
        })
    }

    /// Sends one request and reads its answer; the status code.
    fn exchange(&mut self, method: &str, target: &str, body: &[u8]) -> u16 {
        self.request.clear();
        let _ = write!(
            self.request,
            "{method} {target} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        self.request.extend_from_slice(body);
        if self.reader.get_mut().write_all(&self.request).is_err() {
            return 0;
        }
        self.line.clear();
        if self.reader.read_line(&mut self.line).is_err() {
            return 0;
        }
        let status = self.line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0usize;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line).unwrap_or(0) == 0 {
                return 0;
            }
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        self.body.resize(length, 0);
        if self.reader.read_exact(&mut self.body).is_err() {
            return 0;
        }
        status
    }
}

fn http(c: &mut Criterion) {
    let host = start();
    let mut connection = Connection::open(&host.address).expect("a connection");
    let mut group = c.benchmark_group("http");
    group.bench_function("healthz", |b| {
        b.iter(|| assert_eq!(connection.exchange("GET", "/healthz", b""), 200));
    });
    group.bench_function("call_roundtrip", |b| {
        b.iter(|| {
            let status =
                connection.exchange("POST", "/v1/services/greeter/call", br#"{"method":"noop"}"#);
            assert_eq!(status, 200);
        });
    });
    group.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
