//! A host for the file tests: scenarios that crashed or hung a host when a plugin file was not
//! what it seemed, run in a process of their own so that a crash or a hang fails the test that
//! spawned it instead of taking the test run down. Each prints `ok: ...` and exits 0 when the
//! host came through.
//!
//! Every scenario runs as `files_host <scenario> <dir> <greeter-1.0> <greeter-1.1>`, in an empty
//! directory of its own:
//!
//! - `deep`: loads greeter 1.1 with its dynamic segment, the tail from there on, or its dynamic
//!   symbol table zero-filled. (The old loader crashed in `dlopen` with SIGSEGV.)
//! - `writer`: loads, and swaps to, greeter 1.1 while it is being written: sized first, then in
//!   chunks. (The old loader took the half file, whose headers fit, as whole.)
//! - `flip`: swaps to a path that flips between a build and a FIFO while another thread rolls
//!   back. (The old loader's `stat` then blocking `open` hung `swap` for ever.)
//! - `watch-writer`: greeter 1.0 is written in place in a watched directory. (The old watcher
//!   refused the empty file as not ELF, then loaded the sized half file.)
//! - `watch-flip`: a watched path that serves greeter 1.0 flips between greeter 1.1 and a FIFO,
//!   then stays on 1.1. (The old watcher's `stat` then blocking `open` hung its thread for ever,
//!   and so the drop of the `Watcher`, which joins it.)

use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use graft_runtime::{Error, Runtime, WatchEvent};

const PATIENCE: Duration = Duration::from_secs(20);
/// How many times a round of `watch-flip` puts the FIFO, then the build, at the watched path.
const FLIPS: usize = 2000;
/// The most rounds `watch-flip` flips for before the watcher has refused the FIFO.
const FLIP_ROUNDS: usize = 50;

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    match run() {
        Ok(message) => {
            println!("ok: {message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("failed: {error}");
            ExitCode::from(2)
        }
    }
}

type Outcome = Result<String, Box<dyn std::error::Error>>;

fn run() -> Outcome {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [scenario, dir, g10, g11] = args.as_slice() else {
        return Err("usage: files_host deep|writer|flip|watch-writer|watch-flip <dir> \
                    <greeter-1.0> <greeter-1.1>"
            .into());
    };
    let (dir, g10, g11) = (Path::new(dir), Path::new(g10), Path::new(g11));
    match scenario.as_str() {
        "deep" => deep(dir, g11),
        "writer" => writer(dir, g10, g11),
        "flip" => flip(dir, g10, g11),
        "watch-writer" => watch_writer(dir, g10),
        "watch-flip" => watch_flip(dir, g10, g11),
        other => Err(format!("unknown scenario {other}").into()),
    }
}

fn deep(dir: &Path, g11: &Path) -> Outcome {
    let runtime = runtime_in(dir)?;
    let whole = std::fs::read(g11)?;
    let (offset, len) = elf::dynamic(&whole);
    let symtab = elf::file_offset(&whole, elf::dyn_value(&whole, elf::DT_SYMTAB).unwrap());
    let strtab = elf::file_offset(&whole, elf::dyn_value(&whole, elf::DT_STRTAB).unwrap());
    assert!(strtab > symtab, "the dynamic symbol table precedes its strings");
    let cases: [(&str, std::ops::Range<usize>); 3] = [
        ("dynamic", offset..offset + len),
        ("tail", offset..whole.len()),
        ("dynsym", symtab..strtab),
    ];
    for (name, zeroed) in cases {
        let mut bytes = whole.clone();
        bytes[zeroed].fill(0);
        let path = dir.join(format!("{name}.so"));
        std::fs::write(&path, &bytes)?;
        let err = runtime.load(&path).unwrap_err();
        assert!(
            matches!(&err, Error::MalformedElf { path: p, .. } if *p == path)
                || matches!(&err, Error::MissingSymbol { source: None, path: p, .. } if *p == path),
            "{name}: {err:?}"
        );
        println!("{name}: {err}");
    }
    assert_eq!(staged(&runtime)?, 0);
    Ok("every zero-filled build was refused before dlopen, and nothing stayed staged".to_owned())
}

fn writer(dir: &Path, g10: &Path, g11: &Path) -> Outcome {
    let runtime = runtime_in(dir)?;
    std::fs::copy(g10, dir.join("first.so"))?;
    runtime.load_and_start(dir.join("first.so"))?;
    let whole = std::fs::read(g11)?;
    let path = dir.join("next.so");
    let (go, next_step) = mpsc::channel::<()>();
    let (stepped, steps) = mpsc::channel::<()>();
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(&path).unwrap();
            file.set_len(whole.len() as u64).unwrap();
            stepped.send(()).unwrap();
            for chunk in whole.chunks(whole.len() / 4 + 1) {
                next_step.recv().unwrap();
                file.write_all(chunk).unwrap();
                file.flush().unwrap();
                stepped.send(()).unwrap();
            }
            next_step.recv().unwrap();
            drop(file);
            stepped.send(()).unwrap();
        })
    };
    // Sized, then each chunk written, the last one included: still open, so still incomplete.
    for _ in 0..5 {
        steps.recv_timeout(PATIENCE)?;
        let err = runtime.load(&path).unwrap_err();
        assert!(matches!(&err, Error::Incomplete { path: p, .. } if *p == path), "{err:?}");
        let err = runtime.swap("greeter", &path).unwrap_err();
        assert!(matches!(err, Error::Incomplete { .. }), "{err:?}");
        assert_eq!(runtime.call("greeter", "version", b"")?, b"1.0.0");
        assert_eq!(staged(&runtime)?, 1, "nothing of the half file stays staged");
        go.send(())?;
    }
    steps.recv_timeout(PATIENCE)?;
    writer.join().map_err(|_| "the writer panicked")?;
    runtime.swap("greeter", &path)?;
    assert_eq!(runtime.call("greeter", "version", b"")?, b"1.1.0");
    Ok("the file was refused as incomplete until whole and closed, then swapped in".to_owned())
}

fn flip(dir: &Path, g10: &Path, g11: &Path) -> Outcome {
    let runtime = Arc::new(runtime_in(dir)?);
    let events = runtime.subscribe();
    std::fs::copy(g10, dir.join("first.so"))?;
    runtime.load_and_start(dir.join("first.so"))?;
    let real = dir.join("real.so");
    std::fs::copy(g11, &real)?;
    let pipe = dir.join("pipe");
    mkfifo(&pipe)?;
    let target = dir.join("flip.so");
    std::fs::hard_link(&real, &target)?;

    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, dir, target) = (Arc::clone(&stop), dir.to_path_buf(), target.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (from, via) in [(&real, ".a"), (&pipe, ".b")] {
                    let _ = std::fs::remove_file(dir.join(via));
                    std::fs::hard_link(from, dir.join(via)).unwrap();
                    std::fs::rename(dir.join(via), &target).unwrap();
                }
            }
        })
    };
    let rollbacks = {
        let (stop, runtime) = (Arc::clone(&stop), Arc::clone(&runtime));
        std::thread::spawn(move || {
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Ok, or a typed "nothing to roll back to": it never waits on a stuck swap.
                let _ = runtime.rollback("greeter");
                done += 1;
            }
            done
        })
    };
    let (mut refused_as_fifo, mut swapped) = (0, 0u32);
    let mut attempts = 0;
    // Until thirty swaps found a regular file: the old loader hung when the path flipped
    // between its `stat` and its `open`.
    while swapped < 30 {
        attempts += 1;
        match runtime.swap("greeter", &target) {
            Ok(_) => swapped += 1,
            Err(Error::NotAFile { kind, .. }) => {
                assert!(kind.contains("FIFO"), "{kind}");
                refused_as_fifo += 1;
            }
            Err(Error::SameVersion { .. }) => swapped += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().map_err(|_| "the flipper panicked")?;
    assert!(rollbacks.join().map_err(|_| "the rollbacks panicked")? > 0);
    // Every staged copy belongs to a build kept for service or rollback, once the builds that
    // left the history are retired: on the runtime's retire thread, each staged copy removed
    // before its `Retired` event is sent.
    let kept = runtime.status().iter().map(|s| 1 + s.history.len()).sum::<usize>();
    loop {
        let copies = staged(&runtime)?;
        if copies == kept {
            break;
        }
        // Any event is a reason to count again; none for so long means a copy leaked.
        if events.recv_timeout(PATIENCE).is_err() {
            return Err(format!("{copies} copies staged for {kept} builds kept").into());
        }
    }
    Ok(format!("{attempts} swaps: {refused_as_fifo} refused as a FIFO, {swapped} found a build"))
}

fn watch_writer(dir: &Path, g10: &Path) -> Outcome {
    let runtime = runtime_in(dir)?;
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    let (_watcher, events) = runtime.watch(&plugins)?;
    let whole = std::fs::read(g10)?;
    let path = plugins.join("greeter.so");
    let mut file = std::fs::File::create(&path)?;
    let event = events.recv_timeout(PATIENCE)?;
    assert!(matches!(&event, WatchEvent::Incomplete { path: p, .. } if *p == path), "{event:?}");
    file.set_len(whole.len() as u64)?;
    for chunk in whole.chunks(whole.len() / 4 + 1) {
        file.write_all(chunk)?;
        file.flush()?;
    }
    drop(file);
    loop {
        match events.recv_timeout(PATIENCE)? {
            WatchEvent::Incomplete { .. } => continue,
            WatchEvent::Started { version, .. } => {
                assert_eq!(version.to_string(), "1.0.0");
                break;
            }
            other => panic!("only `Incomplete` may come before `Started`: {other:?}"),
        }
    }
    assert_eq!(runtime.call("greeter", "version", b"")?, b"1.0.0");
    Ok("the watcher waited for the file being written and loaded it once whole".to_owned())
}

fn watch_flip(dir: &Path, g10: &Path, g11: &Path) -> Outcome {
    let runtime = runtime_in(dir)?;
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    let path = plugins.join("greeter.so");
    std::fs::copy(g10, &path)?;
    let (watcher, events) = runtime.watch(&plugins)?;
    match events.recv_timeout(PATIENCE)? {
        WatchEvent::Started { version, .. } if version.to_string() == "1.0.0" => {}
        other => return Err(format!("expected greeter 1.0.0 to start, got {other:?}").into()),
    }
    // Both live outside the watched directory; each is linked in under a dotfile name (which the
    // watcher skips) and renamed over the path.
    let real = dir.join("real.so");
    std::fs::copy(g11, &real)?;
    let pipe = dir.join("pipe");
    mkfifo(&pipe)?;
    let via = plugins.join(".next");
    // No sleeps: the watcher looks at the path while it flips, between its looks and within
    // them. Rounds until it has refused the FIFO (so it did look mid-flip); the build is the
    // last one in, and stays.
    let mut seen = FlipEvents::default();
    let mut rounds = 0;
    while seen.fifos == 0 {
        if rounds == FLIP_ROUNDS {
            return Err(format!("the FIFO was never refused in {rounds} rounds of flips").into());
        }
        rounds += 1;
        for _ in 0..FLIPS {
            for from in [&pipe, &real] {
                std::fs::hard_link(from, &via)?;
                std::fs::rename(&via, &path)?;
            }
        }
        for event in events.try_iter() {
            seen.judge(event)?;
        }
    }
    // Whatever it saw on the way, the watcher ends up swapping greeter to the build.
    let deadline = Instant::now() + PATIENCE;
    while !seen.swapped {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events.recv_timeout(left).map_err(|_| "greeter 1.1.0 was never swapped in")?;
        seen.judge(event)?;
    }
    assert_eq!(runtime.call("greeter", "version", b"")?, b"1.1.0");
    // Joins the watcher's thread: one stuck opening the FIFO never returns, and the test that
    // spawned this process kills it at its deadline.
    drop(watcher);
    Ok(format!(
        "greeter 1.1.0 serves after {} flips ({} FIFO refusals reported); the watcher stopped",
        rounds * FLIPS,
        seen.fifos
    ))
}

/// What the watcher of `watch-flip` reported while, and after, its path flipped.
#[derive(Default)]
struct FlipEvents {
    /// The refusals of the FIFO.
    fifos: usize,
    /// Whether greeter was swapped from 1.0.0 to 1.1.0.
    swapped: bool,
}

impl FlipEvents {
    /// Takes the next event: on the way, only a refusal of the FIFO, a file changing while it
    /// was looked at, one swap to greeter 1.1.0, then the build found unchanged.
    fn judge(&mut self, event: WatchEvent) -> Result<(), String> {
        match event {
            WatchEvent::Rejected { error, .. } if refuses_a_fifo(&error) => self.fifos += 1,
            WatchEvent::Incomplete { .. } => {}
            WatchEvent::Swapped { from, to, .. }
                if !self.swapped && from.to_string() == "1.0.0" && to.to_string() == "1.1.0" =>
            {
                self.swapped = true;
            }
            WatchEvent::Unchanged { .. } if self.swapped => {}
            other => return Err(format!("unexpected event: {other:?}")),
        }
        Ok(())
    }
}

fn refuses_a_fifo(error: &Error) -> bool {
    matches!(error, Error::NotAFile { kind, .. } if kind.contains("FIFO"))
}

fn runtime_in(dir: &Path) -> Result<Runtime, Error> {
    Runtime::builder().staging_dir(dir.join("staging")).build()
}

/// How many libraries are staged.
fn staged(runtime: &Runtime) -> std::io::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(runtime.staging_dir())? {
        count += usize::from(entry?.path().extension().is_some_and(|x| x == "so"));
    }
    Ok(count)
}

fn mkfifo(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    if Command::new("mkfifo").arg(path).status()?.success() {
        Ok(())
    } else {
        Err(format!("mkfifo {} failed", path.display()).into())
    }
}

/// Just enough ELF reading to find the tables `deep` zero-fills.
mod elf {
    pub const DT_STRTAB: u64 = 5;
    pub const DT_SYMTAB: u64 = 6;

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    fn segments(b: &[u8]) -> impl Iterator<Item = (u32, usize, u64, usize)> + '_ {
        let phoff = u64_at(b, 32) as usize;
        let phnum = u16::from_le_bytes([b[56], b[57]]) as usize;
        (0..phnum).map(move |i| {
            let p = phoff + i * 56;
            let kind = u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
            (kind, u64_at(b, p + 8) as usize, u64_at(b, p + 16), u64_at(b, p + 32) as usize)
        })
    }

    /// The file offset and length of the dynamic segment.
    pub fn dynamic(b: &[u8]) -> (usize, usize) {
        segments(b).find(|s| s.0 == 2).map(|s| (s.1, s.3)).expect("PT_DYNAMIC")
    }

    pub fn dyn_value(b: &[u8], tag: u64) -> Option<u64> {
        let (offset, len) = dynamic(b);
        (offset..offset + len)
            .step_by(16)
            .map(|at| (u64_at(b, at), u64_at(b, at + 8)))
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v)
    }

    pub fn file_offset(b: &[u8], vaddr: u64) -> usize {
        segments(b)
            .find(|s| s.0 == 1 && vaddr >= s.2 && vaddr < s.2 + s.3 as u64)
            .map(|s| s.1 + (vaddr - s.2) as usize)
            .expect("an address in a PT_LOAD segment")
    }
}
