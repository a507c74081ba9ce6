//! The graft demo: greeter 1.0 serves several caller threads, is swapped to 1.1 under load, the
//! incompatible 2.0 build is refused, a rollback brings 1.0 back, then it is restarted, paused
//! and resumed, and 1.1 is released again as a canary taking 10% of the calls until its calls
//! promote it, all without a failed call. Then a stateful counter is incremented by several
//! threads while it is swapped and rolled back between builds whose state formats differ, and
//! not one increment is lost. Last, typed services: a key-value store and a hello service whose
//! interfaces are Rust traits are called through their generated clients while the store is
//! swapped, and a build that claims a compatible version but removed a method is refused.
//!
//! Run it with `cargo run --release -p graft-runtime --example demo`. It builds the greeter
//! plugins first (through the fixture catalog of `graft-tests`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use graft_runtime::{CanaryPolicy, EventKind, Runtime, ServiceHandle, SwapStrategy};
use graft_tests::Fixture;

const CALLERS: usize = 4;

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    v1_0: u64,
    v1_1: u64,
    other: u64,
    errors: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_target(false).compact().init();

    println!("building the greeter plugins ...");
    let plugins = tempfile::tempdir()?;
    let v1_0 = graft_tests::copy_to(Fixture::Greeter1_0, plugins.path(), "greeter-1.0.so")?;
    let v1_1 = graft_tests::copy_to(Fixture::Greeter1_1, plugins.path(), "greeter-1.1.so")?;
    let v2_0 = graft_tests::copy_to(Fixture::Greeter2_0, plugins.path(), "greeter-2.0.so")?;

    let runtime = Runtime::new()?;
    let loaded = runtime.load_and_start(&v1_0)?;
    println!("loaded greeter {} in {:?}", loaded.info.plugin_version, loaded.took);
    let greeter = runtime.handle("greeter")?;

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|n| {
            let (greeter, stop) = (greeter.clone(), Arc::clone(&stop));
            thread::spawn(move || call_until(&greeter, &stop, &format!("caller-{n}")))
        })
        .collect();
    println!("{CALLERS} caller threads are calling greeter without pause");

    thread::sleep(Duration::from_millis(300));
    let swap = runtime.swap("greeter", &v1_1)?;
    println!("swapped greeter {} -> {} in {:?}", swap.from, swap.to, swap.took);
    swap.previous.wait_drained(Duration::from_secs(5))?;
    println!("greeter {} drained: no call runs in it any more", swap.from);

    thread::sleep(Duration::from_millis(300));
    match runtime.swap("greeter", &v2_0) {
        Ok(report) => {
            return Err(format!("greeter {} was accepted; it must be refused", report.to).into());
        }
        Err(error) => println!("refused greeter 2.0.0: {error}"),
    }

    thread::sleep(Duration::from_millis(300));
    let rollback = runtime.rollback("greeter")?;
    println!("rolled greeter back {} -> {} in {:?}", rollback.from, rollback.to, rollback.took);

    thread::sleep(Duration::from_millis(300));
    let restart = runtime.restart("greeter")?;
    println!(
        "restarted greeter {} (a new instance, generation {}) in {:?}",
        restart.to, restart.generation, restart.took
    );

    thread::sleep(Duration::from_millis(300));
    runtime.pause("greeter")?;
    println!("paused greeter: calls wait");
    thread::sleep(Duration::from_millis(100));
    runtime.resume("greeter")?;
    println!("resumed greeter: the waiting calls proceed");

    thread::sleep(Duration::from_millis(300));
    let events = runtime.subscribe();
    let policy = CanaryPolicy { calls: 2_000, ..CanaryPolicy::with_weight(0.1) };
    let canary = runtime.swap_with("greeter", &v1_1, SwapStrategy::Canary(policy))?;
    println!("released greeter {} as a canary taking 10% of the calls", canary.to);
    let promoted = loop {
        let event = events.recv_timeout(Duration::from_secs(30))?;
        match event.kind {
            EventKind::CanaryPromoted { .. } => break event,
            EventKind::CanaryAborted { reason, .. } => {
                return Err(format!("the canary was aborted: {reason}").into());
            }
            _ => {}
        }
    };
    println!("its calls promoted greeter {}: it now takes every call", promoted.version);

    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let mut total = Tally::default();
    for caller in callers {
        let tally = caller.join().map_err(|_| "a caller thread panicked")?;
        total.v1_0 += tally.v1_0;
        total.v1_1 += tally.v1_1;
        total.other += tally.other;
        total.errors += tally.errors;
    }

    let status = runtime.service_status("greeter")?;
    println!();
    println!("summary");
    println!("  calls answered by greeter 1.0.0: {}", total.v1_0);
    println!("  calls answered by greeter 1.1.0: {}", total.v1_1);
    println!("  unexpected answers:              {}", total.other);
    println!("  errors:                          {}", total.errors);
    println!("  swap 1.0.0 -> 1.1.0 took         {:?}", swap.took);
    println!("  rollback 1.1.0 -> 1.0.0 took     {:?}", rollback.took);
    let current = status.current.as_ref().ok_or("greeter has no serving instance")?;
    println!("  restart took                     {:?}", restart.took);
    println!(
        "  serving greeter {} (generation {}), rollback target {}",
        current.version,
        current.id,
        status
            .history
            .first()
            .map_or("none".to_owned(), |g| format!("{} (generation {})", g.version, g.id))
    );
    if total.errors > 0 || total.other > 0 || total.v1_0 == 0 || total.v1_1 == 0 {
        return Err("the demo saw failed or unexpected calls".into());
    }
    println!();
    stateful(&runtime, plugins.path())?;
    println!();
    typed(&runtime, plugins.path())
}

/// The typed part: a key-value store and a hello service defined as Rust traits
/// (`graft-kv-interface`, `graft-hello-interface`), called through their generated clients
/// while the store is swapped to a build that adds a method; a build whose version claims a
/// compatible update but removed a method is refused, naming it.
fn typed(runtime: &Runtime, plugins: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use graft_hello_interface::HelloClient;
    use graft_kv_interface::KvClient;

    let kv_2_0 = graft_tests::copy_to(Fixture::Kv2_0, plugins, "kv-2.0.so")?;
    let kv_2_1 = graft_tests::copy_to(Fixture::Kv2_1, plugins, "kv-2.1.so")?;
    let lying = graft_tests::copy_to(Fixture::KvRemoves, plugins, "kv-2.2-lying.so")?;
    let hello = graft_tests::copy_to(Fixture::Hello1_1, plugins, "hello-1.1.so")?;
    runtime.load_and_start(&kv_2_0)?;
    runtime.load_and_start(&hello)?;
    let hello: HelloClient<ServiceHandle> = runtime.client("hello")?;
    println!("typed: {}", hello.greet("ada")?);

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..CALLERS)
        .map(|n| {
            let kv = KvClient::new(runtime.handle("kv")?);
            let stop = Arc::clone(&stop);
            Ok(thread::spawn(move || {
                let key = format!("writer-{n}");
                let (mut written, mut errors) = (0u64, 0u64);
                while !stop.load(Ordering::Acquire) {
                    match kv.put(&key, &(written + 1).to_le_bytes()) {
                        Ok(()) => written += 1,
                        Err(_) => errors += 1,
                    }
                }
                (key, written, errors)
            }))
        })
        .collect::<Result<_, graft_runtime::Error>>()?;
    println!("{CALLERS} threads write their own keys into kv 2.0.0 through its typed client");
    thread::sleep(Duration::from_millis(200));
    let swap = runtime.swap("kv", &kv_2_1)?;
    println!(
        "swapped kv {} -> {} (interface 2.1 adds `keys`) in {:?}",
        swap.from, swap.to, swap.took
    );
    thread::sleep(Duration::from_millis(200));
    match runtime.swap("kv", &lying) {
        Ok(_) => return Err("kv 2.2.0 removed `delete` and was accepted".into()),
        Err(error) => println!("refused kv 2.2.0: {error}"),
    }
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Release);
    let kv: KvClient<ServiceHandle> = runtime.client("kv")?;
    let mut errors = 0;
    for writer in writers {
        let (key, written, failed) = writer.join().map_err(|_| "a writer thread panicked")?;
        let stored = kv.get(&key)?.ok_or("a writer's key is missing")?;
        let stored = u64::from_le_bytes(stored.try_into().map_err(|_| "a malformed value")?);
        if stored != written {
            return Err(format!("{key}: {written} writes, the store holds {stored}").into());
        }
        errors += failed;
    }
    println!("typed: {}", hello.greet("ada")?);
    println!("  keys after the swap:             {:?}", kv.keys()?);
    println!("  errors:                          {errors}");
    if errors > 0 {
        return Err("typed calls failed".into());
    }
    Ok(())
}

/// The stateful part: a counter incremented without pause while its state is handed from build
/// to build.
fn stateful(
    runtime: &Runtime,
    plugins: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let v1_0 = graft_tests::copy_to(Fixture::Counter1_0, plugins, "counter-1.0.so")?;
    let v1_1 = graft_tests::copy_to(Fixture::Counter1_1, plugins, "counter-1.1.so")?;
    runtime.load_and_start(&v1_0)?;
    let counter = runtime.handle("counter")?;
    let stop = Arc::new(AtomicBool::new(false));
    let incrementers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (counter, stop) = (counter.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                let (mut issued, mut errors) = (0u64, 0u64);
                while !stop.load(Ordering::Acquire) {
                    issued += 1;
                    if counter.call_to_vec("increment", b"").is_err() {
                        errors += 1;
                    }
                }
                (issued, errors)
            })
        })
        .collect();
    println!("{CALLERS} threads increment counter 1.0.0 (state format 1) without pause");
    let (mut swaps, mut rollbacks) = (Vec::new(), Vec::new());
    for round in 0..50 {
        thread::sleep(Duration::from_millis(10));
        if round % 2 == 0 {
            swaps.push(runtime.swap("counter", &v1_1)?.took);
        } else {
            rollbacks.push(runtime.rollback("counter")?.took);
        }
    }
    println!(
        "swapped counter 1.0.0 -> 1.1.0 (migrating format 1 to 2) and rolled it back, 50 times"
    );
    stop.store(true, Ordering::Release);
    let (mut issued, mut errors) = (0, 0);
    for thread in incrementers {
        let (i, e) = thread.join().map_err(|_| "an incrementing thread panicked")?;
        issued += i;
        errors += e;
    }
    let count: u64 = String::from_utf8(counter.call_to_vec("get", b"")?)?.parse()?;
    swaps.sort();
    rollbacks.sort();
    println!("  increments issued:               {issued}");
    println!("  count after 50 handovers:        {count}");
    println!("  errors:                          {errors}");
    // A swap's time includes its file work and `dlopen`, done before calls are held.
    println!("  median stateful swap took        {:?}", swaps[swaps.len() / 2]);
    println!("  median stateful rollback took    {:?}", rollbacks[rollbacks.len() / 2]);
    if count != issued || errors > 0 {
        return Err("the counter lost increments or calls failed".into());
    }
    Ok(())
}

fn call_until(greeter: &ServiceHandle, stop: &AtomicBool, name: &str) -> Tally {
    let expect_1_0 = format!("hello, {name} from greeter 1.0.0").into_bytes();
    let expect_1_1 = format!("hello, {name} from greeter 1.1.0").into_bytes();
    let mut tally = Tally::default();
    let mut answer = Vec::new();
    while !stop.load(Ordering::Acquire) {
        answer.clear();
        match greeter.call("greet", name.as_bytes(), &mut answer) {
            Ok(()) if answer == expect_1_0 => tally.v1_0 += 1,
            Ok(()) if answer == expect_1_1 => tally.v1_1 += 1,
            Ok(()) => tally.other += 1,
            Err(error) => {
                tracing::error!(%error, "call failed");
                tally.errors += 1;
            }
        }
    }
    tally
}
