//! graft's criterion benchmarks: what a call through the runtime costs next to a bare function
//! pointer call (and whether that grows with the number of services loaded), what a swap and a
//! rollback cost next to the file copy and `dlopen` no swap can avoid, and what starting a
//! dependency graph in parallel waves saves over starting it one service at a time.
//!
//! Every number here is meant to be read against its neighbour, not on its own:
//! - `calls/runtime` ÷ `calls/raw`: the runtime's overhead per call (an `ArcSwap` load, two
//!   sinks, a status check) over calling the plugin's `call` pointer directly. Both call the
//!   greeter's `noop`, which writes nothing, so the plugin's own work is the same tiny constant.
//!   This ratio is the price of hot reload on the call path and should stay a small constant.
//! - `calls/runtime` ÷ `calls/runtime_uncounted`: what the always-on call counters cost (the
//!   same call, not counted). Target: at most 1.10.
//! - `calls/typed_noop` ÷ `calls/runtime`: the typed hello's `ping()` through its generated
//!   `HelloClient` (arguments and answer encoded with postcard, dispatched by method id) over
//!   the string-named `noop` through a handle. `ping` takes and answers nothing, so the ratio
//!   is the typed path's own cost (encoding an empty argument tuple, decoding an empty answer)
//!   net of what dispatching by id saves over matching the method's name. Target: at most 1.
//! - `calls/typed_kv_get` ÷ `calls/direct_kv_get`: `get` of a 16-byte key whose value is 1 KiB
//!   through the typed kv 2.1's `KvClient`, over the same store code (an `RwLock` over a
//!   `BTreeMap`, cloning the value) called as a plain function in the host. What lies above 1
//!   is the whole price of a typed call with a real answer: the call through the runtime, the
//!   encoding of the key and of the 1 KiB answer, the copies of the answer across the ABI and
//!   out of it, and the allocations each of them takes.
//! - `calls/canary_routing` ÷ `calls/runtime`: the same noop through a service releasing a
//!   canary (greeter 1.1) at weight 0.1, never judged: each call draws its route from a
//!   thread-local generator and takes the routing path, and the canary's tenth of the calls
//!   also bump its judging counters. Target: within 20%.
//! - `calls/runtime_contended` ÷ `calls/runtime`: the same call while another thread calls the
//!   same service without pause. Calls share nothing but the published lease, so this should
//!   stay close to 1; a rise means calls started contending on a shared cache line.
//! - `calls/runtime_1000_services` ÷ `calls/runtime`: the same greeter `noop` through a handle,
//!   in a runtime that also runs 999 services loaded from the worker template (1000 in all). A
//!   handle resolves its service once and a call touches only that service's slot, so the call
//!   cost must not grow with the number of loaded services: target within 10%. The same plugin
//!   is called on both sides, so that the ratio measures the runtime alone.
//! - `swap/full` ÷ `swap/baseline_copy_dlopen_dlsym`: a whole swap (stage, ELF checks, `dlopen`,
//!   descriptor checks, version gate, create, health check, publish) over the floor of copying
//!   the file, `dlopen`ing it, looking the entry symbol up and closing it again. What lies above
//!   1 is graft's own work.
//! - `swap/retire`, in absolute microseconds: from the return of a swap (with no history) to the
//!   replaced generation retired: its drain noticed, its instance destroyed on the retire thread,
//!   its library kept mapped and its staged file removed. No caller waits for it; it bounds how
//!   soon a retired build stops costing anything but its mapping.
//! - `swap/rollback`, in absolute nanoseconds: republishing a build still loaded, with no disk
//!   and no `dlopen`. It bounds how fast an operator can back out of a bad swap.
//! - `stateful/swap_pause_1mb` ÷ `stateful/export_import_1mb`: how long a stateful handoff
//!   holds calls back, over the plugin's own work. `swap_pause_1mb` restarts a key-value store
//!   holding 1 MiB (16 values of 64 KiB) through the runtime: calls are held, the running ones
//!   waited for, the state exported, a new instance imported from it and health-checked, and
//!   published. That is the part of a stateful swap during which calls wait (a swap's file work
//!   and `dlopen` happen before calls are held), so this is the pause a swap imposes.
//!   `export_import_1mb` is its floor: the same plugin's export and import entry points called
//!   directly on an instance holding the same 1 MiB (and the imported instance destroyed).
//! - `lifecycle/start_all_parallel` ÷ `lifecycle/start_all_sequential`: `Runtime::start_all` of
//!   50 worker services in a 5-level dependency graph (10 per level, `w0-0` to `w4-9`; each
//!   service of a level depends on two of the level before), so it starts in 5 waves of 10. Each
//!   start checks the dependencies, creates an instance (about 50 µs of set-up work in the
//!   worker) and health-checks it. Parallel runs each wave on `concurrency(2)`, sequential on
//!   `concurrency(1)`; only `start_all` is timed, not building the runtime and loading the 50
//!   copies before it nor dropping the runtime after. Target on 2 cores: below 1 (0.5 would be
//!   perfect scaling); at or above 1, the wave threads cost more than they save.
//!
//! The fixture plugins are built once, by `graft_tests::path`, before anything is timed.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, criterion_group, criterion_main};
use graft_hello_interface::HelloClient;
use graft_kv_interface::{KvClient, KvError};
use graft_plugin_api::abi::{
    ABI_VERSION, CallFn, DestroyFn, ENTRY_SYMBOL, EntryFn, ExportStateFn, HostApi, ImportStateFn,
    MAGIC, RawBytes, RawStr, STATUS_OK, WriteSink,
};
use graft_runtime::{CanaryPolicy, LoadOptions, Runtime, ServiceHandle, SwapStrategy};
use graft_tests::Fixture;
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use semver::VersionReq;
use tempfile::TempDir;

/// The method every call benchmark calls: the greeter and the worker answer it with nothing.
const NOOP: &str = "noop";

/// The key `calls/typed_kv_get` and `calls/direct_kv_get` read: 16 bytes.
const KV_KEY: &str = "benchmark-key-16";
/// The size of its value: 1 KiB.
const KV_VALUE_LEN: usize = 1024;
const _: () = assert!(KV_KEY.len() == 16);

/// How many services `calls/runtime_1000_services` runs: the greeter and workers named `s1`
/// to `s999`.
const CROWD: usize = 1000;

/// The levels of the `lifecycle` dependency graph: `start_all` starts it in this many waves.
const LEVELS: usize = 5;
/// The services of each level, `w<level>-0` to `w<level>-9`.
const PER_LEVEL: usize = 10;
/// How many services of the level before each service of a level above 0 depends on.
const DEPENDENCIES: usize = 2;

criterion_group! {
    name = benches;
    // Modest settings: the whole suite measures for well under a minute on two cores.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = calls, swap, stateful, lifecycle, watch
}
criterion_main!(benches);

/// `calls/raw`, `calls/runtime`, `calls/typed_noop`, `calls/typed_kv_get`,
/// `calls/direct_kv_get`, `calls/canary_routing`, `calls/runtime_contended` and
/// `calls/runtime_1000_services`.
fn calls(c: &mut Criterion) {
    let dir = temp_dir();
    let copy = graft_tests::copy_to(Fixture::Greeter1_0, dir.path(), "raw-greeter.so")
        .expect("copying greeter 1.0 for the raw baseline");
    let raw = RawPlugin::open(&copy, "greeter");

    let runtime = Runtime::builder().build().expect("building a runtime");
    runtime.load_and_start(fixture(Fixture::Greeter1_0)).expect("loading greeter 1.0");
    let handle = runtime.handle("greeter").expect("a handle to greeter");
    assert_eq!(handle.call_to_vec(NOOP, &[]).expect("a noop call"), b"");

    let mut group = c.benchmark_group("calls");

    group.bench_function("raw", |b| {
        let mut output = Vec::new();
        let mut error = Vec::new();
        b.iter(|| {
            let output_sink = WriteSink::for_vec(&mut output);
            let error_sink = WriteSink::for_vec(&mut error);
            // SAFETY: `raw.call` and `raw.instance` are live until `raw` drops (`RawPlugin`'s
            // invariant); method and input are `'static`; the sinks borrow untouched vectors.
            unsafe {
                (raw.call)(
                    raw.instance,
                    RawStr::new(NOOP),
                    RawBytes::new(&[]),
                    &output_sink,
                    &error_sink,
                )
            }
        });
        assert!(output.is_empty() && error.is_empty(), "noop wrote something");
    });

    group.bench_function("runtime", |b| {
        let mut output = Vec::new();
        b.iter(|| handle.call(NOOP, &[], &mut output).is_ok());
        assert!(output.is_empty(), "noop wrote something");
    });

    // The same call, not counted in the service's metrics: the baseline of what counting adds.
    group.bench_function("runtime_uncounted", |b| {
        let mut output = Vec::new();
        b.iter(|| handle.call_uncounted(NOOP, &[], &mut output).is_ok());
        assert!(output.is_empty(), "noop wrote something");
    });

    typed_calls(&mut group);

    // The same noop through a service releasing a canary at 10%: every call draws its route
    // (thread-local), and the canary's calls also count for its judging.
    let canary = Runtime::builder().build().expect("building a runtime");
    canary.load_and_start(fixture(Fixture::Greeter1_0)).expect("loading greeter 1.0");
    let never = CanaryPolicy {
        weight: 0.1,
        calls: u64::MAX,
        max_failures: u64::MAX,
        max_failure_rate: f64::NAN,
        min_calls: u64::MAX,
    };
    canary
        .swap_with("greeter", fixture(Fixture::Greeter1_1), SwapStrategy::Canary(never))
        .expect("releasing greeter 1.1 as a canary");
    let canary_handle = canary.handle("greeter").expect("a handle to greeter");
    group.bench_function("canary_routing", |b| {
        let mut output = Vec::new();
        b.iter(|| canary_handle.call(NOOP, &[], &mut output).is_ok());
        assert!(output.is_empty(), "noop wrote something");
    });
    let status = canary.service_status("greeter").expect("status");
    eprintln!(
        "calls/canary_routing: the canary answered {} calls",
        status.canary.map_or(0, |c| c.calls)
    );
    drop(canary);

    let contender = Contender::start(handle.clone());
    group.bench_function("runtime_contended", |b| {
        let mut output = Vec::new();
        b.iter(|| handle.call(NOOP, &[], &mut output).is_ok());
        assert!(output.is_empty(), "noop wrote something");
    });
    let contending_calls = contender.stop();
    eprintln!("calls/runtime_contended: the contending thread made {contending_calls} calls");

    // Built only now, so that the benchmarks above run beside one service, and configured like
    // the greeter's runtime, so that the number of services is the only difference.
    let crowd = Runtime::builder().build().expect("building a runtime");
    let worker = fixture(Fixture::Worker);
    let loading = Instant::now();
    crowd.load(fixture(Fixture::Greeter1_0)).expect("loading greeter 1.0");
    for index in 1..CROWD {
        let name = format!("s{index}");
        if let Err(error) = crowd.load_with(&worker, LoadOptions::default().name(name.as_str())) {
            panic!("loading the worker as {name} ({index} of {CROWD} already loaded): {error}");
        }
    }
    let loaded = loading.elapsed();
    let report = crowd.start_all().expect("starting the 1000 workers");
    assert!(report.succeeded(), "{report}");
    eprintln!(
        "calls/runtime_1000_services: loaded {CROWD} workers in {loaded:?}, started them in {:?}",
        loading.elapsed() - loaded
    );
    let crowd_handle = crowd.handle("greeter").expect("a handle to the greeter");
    assert_eq!(crowd_handle.call_to_vec(NOOP, &[]).expect("a noop call"), b"");

    group.bench_function("runtime_1000_services", |b| {
        let mut output = Vec::new();
        b.iter(|| crowd_handle.call(NOOP, &[], &mut output).is_ok());
        assert!(output.is_empty(), "noop wrote something");
    });

    group.finish();
    drop(crowd);
    drop(raw);
}

/// `calls/typed_noop`, `calls/typed_kv_get` and `calls/direct_kv_get`.
///
/// Each typed service runs alone in a runtime configured like the greeter's, as `calls/runtime`
/// does; the runtimes are dropped before the next benchmarks of the group.
fn typed_calls(group: &mut BenchmarkGroup<'_, WallTime>) {
    let hello_runtime = Runtime::builder().build().expect("building a runtime");
    hello_runtime.load_and_start(fixture(Fixture::Hello1_0)).expect("loading hello 1.0");
    let hello = hello_runtime.client::<HelloClient<_>>("hello").expect("a typed client of hello");
    hello.ping().expect("a ping");
    group.bench_function("typed_noop", |b| {
        b.iter(|| hello.ping().is_ok());
    });
    drop(hello);
    drop(hello_runtime);

    let value: Vec<u8> = (0..KV_VALUE_LEN).map(|i| i as u8).collect();

    let kv_runtime = Runtime::builder().build().expect("building a runtime");
    kv_runtime.load_and_start(fixture(Fixture::Kv2_1)).expect("loading kv 2.1");
    let kv = kv_runtime.client::<KvClient<_>>("kv").expect("a typed client of kv");
    kv.put(KV_KEY, &value).expect("a put");
    assert_eq!(kv.get(KV_KEY).expect("a get").as_ref(), Some(&value));
    group.bench_function("typed_kv_get", |b| {
        b.iter(|| kv.get(black_box(KV_KEY)));
    });
    drop(kv);
    drop(kv_runtime);

    let direct = DirectKv::default();
    direct.put_value(KV_KEY, &value).expect("a put");
    assert_eq!(direct.get_value(KV_KEY).expect("a get").as_ref(), Some(&value));
    group.bench_function("direct_kv_get", |b| {
        b.iter(|| black_box(&direct).get_value(black_box(KV_KEY)));
    });
}

/// The typed kv's store (`plugins/shared/typed_kv.rs`), as a plain Rust type in the host: the
/// floor of `calls/typed_kv_get`. `get_value` and `put_value` are copied from there.
#[derive(Debug, Default)]
struct DirectKv {
    entries: RwLock<BTreeMap<String, Vec<u8>>>,
}

impl DirectKv {
    fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let entries = self.entries.read().map_err(|_| KvError::KeyTooLong)?;
        Ok(entries.get(key).cloned())
    }

    fn put_value(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        if key.len() > 256 {
            return Err(KvError::KeyTooLong);
        }
        let mut entries = self.entries.write().map_err(|_| KvError::KeyTooLong)?;
        entries.insert(key.to_owned(), value.to_vec());
        Ok(())
    }
}

/// `swap/baseline_copy_dlopen_dlsym`, `swap/full`, `swap/retire` and `swap/rollback`.
fn swap(c: &mut Criterion) {
    let v1_0 = fixture(Fixture::Greeter1_0);
    let v1_1 = fixture(Fixture::Greeter1_1);
    let dir = temp_dir();

    let mut group = c.benchmark_group("swap");
    // A swap takes a `dlopen`: far fewer iterations fit in the measurement time than for a call.
    group.sample_size(30);

    // Counts across every sample and the warm-up: `dlopen` hands back the library it already has
    // for a path or inode, so each copy needs a name of its own.
    let mut copies = 0u64;
    group.bench_function("baseline_copy_dlopen_dlsym", |b| {
        b.iter(|| {
            copies += 1;
            let copy = dir.path().join(format!("baseline.{copies}.so"));
            std::fs::copy(&v1_0, &copy).expect("copying the greeter");
            // SAFETY: loading runs the library's initialisers; this is the greeter built from this
            // workspace, the same file the runtime loads below, which we trust.
            let library = unsafe { Library::open(Some(&copy), RTLD_NOW | RTLD_LOCAL) }
                .expect("dlopen of the greeter");
            // SAFETY: the ABI gives the entry symbol the type `EntryFn`, and the greeter is built
            // against that ABI; the symbol is only read, never called, and it borrows `library`,
            // so it cannot outlive the close below.
            let entry = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL) }
                .expect("the greeter exports the entry symbol");
            black_box(*entry);
            library.close().expect("dlclose of the greeter");
            std::fs::remove_file(&copy).expect("removing the copy");
        });
    });

    let runtime = Runtime::builder().build().expect("building a runtime");
    runtime.load_and_start(&v1_0).expect("loading greeter 1.0");
    // The gate refuses a swap to the version already serving, so the swaps alternate.
    let targets = [&v1_1, &v1_0];
    let mut swaps = 0usize;
    group.bench_function("full", |b| {
        b.iter(|| {
            let target = targets[swaps % targets.len()];
            swaps += 1;
            runtime.swap("greeter", target).expect("swapping greeter")
        });
    });
    drop(runtime);

    let runtime = Runtime::builder().history_depth(0).build().expect("building a runtime");
    runtime.load_and_start(&v1_0).expect("loading greeter 1.0");
    // Its own count: this runtime starts on 1.0 whatever `full` ended on.
    let mut retire_swaps = 0usize;
    group.bench_function("retire", |b| {
        b.iter_custom(|iterations| {
            let mut retiring = Duration::ZERO;
            for _ in 0..iterations {
                let target = targets[retire_swaps % targets.len()];
                retire_swaps += 1;
                let report = runtime.swap("greeter", target).expect("swapping greeter");
                let start = Instant::now();
                report.previous.wait_retired(Duration::from_secs(20)).expect("retiring");
                retiring += start.elapsed();
            }
            retiring
        });
    });
    drop(runtime);

    let runtime = Runtime::builder().build().expect("building a runtime");
    runtime.load_and_start(&v1_0).expect("loading greeter 1.0");
    runtime.swap("greeter", &v1_1).expect("swapping greeter to 1.1");
    // Each rollback makes the build it replaces the next rollback target, so these toggle
    // between the two loaded builds without touching the disk.
    group.bench_function("rollback", |b| {
        b.iter(|| runtime.rollback("greeter").expect("rolling greeter back"));
    });
    drop(runtime);

    group.finish();
}

/// The state `stateful` benchmarks hand over: 16 keys of 64 KiB, 1 MiB in all.
fn fill_one_mib(put: impl Fn(&[u8])) {
    for key in 0..16u8 {
        let mut input = format!("key-{key:02}\0").into_bytes();
        input.extend(std::iter::repeat_n(key, 64 * 1024));
        put(&input);
    }
}

/// `stateful/export_import_1mb` and `stateful/swap_pause_1mb`.
fn stateful(c: &mut Criterion) {
    let dir = temp_dir();
    let mut group = c.benchmark_group("stateful");
    group.sample_size(30);

    let copy = graft_tests::copy_to(Fixture::Kv1_0, dir.path(), "raw-kv.so")
        .expect("copying kv 1.0 for the raw baseline");
    let raw = RawPlugin::open(&copy, "kv");
    fill_one_mib(|input| {
        raw.call("put", input);
    });
    let mut state = Vec::new();
    group.bench_function("export_import_1mb", |b| {
        b.iter_custom(|iterations| {
            let mut handing = Duration::ZERO;
            for _ in 0..iterations {
                let start = Instant::now();
                let format = raw.export(&mut state);
                raw.import_and_destroy(format, &state);
                handing += start.elapsed();
            }
            handing
        });
        // Checked only when the benchmark ran: a filter that skips it leaves `state` empty.
        assert!(state.len() > 1 << 20, "the state holds 1 MiB");
    });
    drop(raw);

    let runtime = Runtime::builder().build().expect("building a runtime");
    runtime.load_and_start(fixture(Fixture::Kv1_0)).expect("loading kv 1.0");
    let kv = runtime.handle("kv").expect("a handle to kv");
    fill_one_mib(|input| {
        kv.call_to_vec("put", input).expect("a put");
    });
    group.bench_function("swap_pause_1mb", |b| {
        b.iter(|| runtime.restart("kv").expect("restarting kv"));
    });
    assert_eq!(kv.call_to_vec("len", b"").expect("len"), b"16");
    drop(runtime);
    group.finish();
}

/// `lifecycle/start_all_parallel` and `lifecycle/start_all_sequential`.
fn lifecycle(c: &mut Criterion) {
    let worker = fixture(Fixture::Worker);
    // Every runtime of the group stages its copies here; each removes its own when dropped.
    let staging = temp_dir();

    let mut group = c.benchmark_group("lifecycle");
    // An iteration loads 50 libraries before the timed `start_all` and unloads them after: few
    // iterations fit, and each takes long enough for every sample to hold the same count.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(4));

    for (id, concurrency) in [("start_all_parallel", 2), ("start_all_sequential", 1)] {
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let runtime = load_graph(&worker, staging.path(), concurrency);
                    let began = Instant::now();
                    let report = runtime.start_all();
                    timed += began.elapsed();
                    let report = report.expect("starting the dependency graph");
                    assert!(report.succeeded(), "{report}");
                    assert_eq!(report.waves.len(), LEVELS, "the graph did not start in waves");
                    drop(runtime);
                }
                timed
            });
        });
    }

    group.finish();
}

/// A runtime running each wave on `concurrency` threads, without periodic health checks, holding
/// the `lifecycle` graph: the worker loaded as `w<level>-<index>` for every level and index, each
/// service of a level above 0 depending on `DEPENDENCIES` consecutive services (wrapping around)
/// of the level before. Nothing is started.
fn load_graph(worker: &Path, staging: &Path, concurrency: usize) -> Runtime {
    let runtime = Runtime::builder()
        .concurrency(concurrency)
        .health_interval(None)
        .staging_dir(staging)
        .build()
        .expect("building a runtime");
    let requirement = VersionReq::parse("^1").expect("a valid version requirement");
    for level in 0..LEVELS {
        for index in 0..PER_LEVEL {
            let mut options = LoadOptions::default().name(format!("w{level}-{index}"));
            if level > 0 {
                for offset in 0..DEPENDENCIES {
                    let dependency = format!("w{}-{}", level - 1, (index + offset) % PER_LEVEL);
                    options = options.depends_on(dependency, requirement.clone());
                }
            }
            if let Err(error) = runtime.load_with(worker, options) {
                panic!("loading the worker as w{level}-{index}: {error}");
            }
        }
    }
    runtime
}

/// A greeter 1.0 instance made by hand from its library, with no runtime in between.
///
/// Invariant: `instance` was made by the `create` of `library` with `host`, and `call` and
/// `destroy` are that library's entry points. `Drop` destroys the instance once, then closes
/// `library`; `host` is dropped after both.
struct RawPlugin {
    instance: *mut c_void,
    call: CallFn,
    destroy: DestroyFn,
    /// A stateful plugin's export and import entry points, and its state format.
    state: Option<(ExportStateFn, ImportStateFn, u32)>,
    library: Option<Library>,
    /// The instance holds a pointer to it until it is destroyed; imports get it too.
    host: Box<HostApi>,
}

impl RawPlugin {
    /// Opens the plugin library at `path` (a greeter or a key-value store built from this
    /// workspace), serving as `service`, and creates an instance.
    fn open(path: &Path, service: &'static str) -> RawPlugin {
        // SAFETY: loading runs the library's initialisers; `path` is a copy of the greeter built
        // from this workspace, which we trust as the runtime trusts the files it loads.
        let library = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
            .expect("dlopen of the greeter");
        // SAFETY: the ABI gives the entry symbol the type `EntryFn`, and the greeter is built
        // against that ABI.
        let entry = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL) }
            .expect("the greeter exports the entry symbol");
        // SAFETY: the entry point takes nothing and returns a pointer; `library` is open.
        let descriptor = unsafe { entry() };
        assert!(!descriptor.is_null(), "the entry point returned null");
        // The greeter's descriptor is a `static` built by `export_service!` against this
        // workspace's plugin-api (magic and ABI version are asserted below); only function
        // pointers are copied out of it, and they are kept next to `library`.
        // SAFETY: a complete, aligned `PluginDescriptor`, alive while `library` is open.
        let descriptor = unsafe { &*descriptor };
        assert_eq!(descriptor.header.magic, MAGIC);
        assert_eq!(descriptor.header.abi_version, ABI_VERSION);
        let create = descriptor.create.expect("the greeter has a create entry point");
        let call = descriptor.call.expect("the greeter has a call entry point");
        let destroy = descriptor.destroy.expect("the greeter has a destroy entry point");

        // Boxed so that its address, which the instance keeps, does not move with `RawPlugin`.
        let host = Box::new(HostApi {
            size: std::mem::size_of::<HostApi>(),
            ctx: std::ptr::null(),
            service: RawStr::new(service),
            version: RawStr::new("1.0.0"),
            log: ignore_log,
            call_service: refuse_calls,
            // Not provided: the raw baseline takes every error as a failure.
            max_status: 0,
        });
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut message = Vec::new();
        let error = WriteSink::for_vec(&mut message);
        // SAFETY: `create` comes from the open `library`; the host table is boxed and kept in the
        // returned value until after the instance is destroyed; `instance` is valid for a write
        // and the sink borrows `message`, which nothing else touches during the call.
        let status = unsafe { create(&*host, &mut instance, &error) };
        assert_eq!(status, STATUS_OK, "create failed: {}", String::from_utf8_lossy(&message));
        assert!(!instance.is_null(), "create returned no instance");
        let state = match (descriptor.export_state, descriptor.import_state) {
            (Some(export), Some(import)) => Some((export, import, descriptor.state_format)),
            _ => None,
        };
        RawPlugin { instance, call, destroy, state, library: Some(library), host }
    }

    /// Calls `method` with `input` and returns the answer; panics on any failure.
    fn call(&self, method: &str, input: &[u8]) -> Vec<u8> {
        let (mut output, mut message) = (Vec::new(), Vec::new());
        let status = {
            let (output_sink, error_sink) =
                (WriteSink::for_vec(&mut output), WriteSink::for_vec(&mut message));
            // SAFETY: `call` and `instance` are live until `self` drops (the type's invariant);
            // method and input are valid for the call; the sinks borrow untouched vectors.
            unsafe {
                (self.call)(
                    self.instance,
                    RawStr::new(method),
                    RawBytes::new(input),
                    &output_sink,
                    &error_sink,
                )
            }
        };
        assert_eq!(status, STATUS_OK, "{method} failed: {}", String::from_utf8_lossy(&message));
        output
    }

    /// Exports the instance's state into `state` (cleared first) and returns its format.
    fn export(&self, state: &mut Vec<u8>) -> u32 {
        let (export, _, format) = self.state.expect("a stateful plugin");
        state.clear();
        let mut message = Vec::new();
        let status = {
            let (state_sink, error_sink) =
                (WriteSink::for_vec(state), WriteSink::for_vec(&mut message));
            // SAFETY: `export` comes from the open library and `instance` is live (the type's
            // invariant); no call runs in it (`&self` on one thread); the sinks borrow vectors
            // nothing else touches during the call.
            unsafe { export(self.instance, &state_sink, &error_sink) }
        };
        assert_eq!(status, STATUS_OK, "export failed: {}", String::from_utf8_lossy(&message));
        format
    }

    /// Creates a second instance from `state` of `format`, and destroys it again.
    fn import_and_destroy(&self, format: u32, state: &[u8]) {
        let (_, import, _) = self.state.expect("a stateful plugin");
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut message = Vec::new();
        let error = WriteSink::for_vec(&mut message);
        let (host, state) = (&*self.host, RawBytes::new(state));
        // SAFETY: `import` comes from the open library; the host table lives as long as `self`,
        // beyond the instance destroyed below; `state` and the out pointer are valid for the
        // call, and the sink borrows `message` alone.
        let status = unsafe { import(host, format, state, &mut instance, &error) };
        assert_eq!(status, STATUS_OK, "import failed: {}", String::from_utf8_lossy(&message));
        black_box(instance);
        // SAFETY: `instance` was just created by this library and is destroyed once, here, with
        // no call running in it.
        let status = unsafe { (self.destroy)(instance, &error) };
        assert_eq!(status, STATUS_OK, "destroy failed");
    }
}

impl Drop for RawPlugin {
    fn drop(&mut self) {
        let mut message = Vec::new();
        let error = WriteSink::for_vec(&mut message);
        // SAFETY: `&mut self` means no call into the instance is running or can start; it is
        // destroyed once, here, while its library and host table are still alive (the type's
        // invariant).
        let status = unsafe { (self.destroy)(self.instance, &error) };
        if status != STATUS_OK {
            eprintln!("destroying the raw greeter failed: {}", String::from_utf8_lossy(&message));
        }
        if let Some(library) = self.library.take()
            && let Err(error) = library.close()
        {
            eprintln!("closing the raw greeter failed: {error}");
        }
    }
}

/// A thread that calls a service without pause until it is stopped.
///
/// Owns the thread: `stop` (or dropping it, should a benchmark panic) tells it to stop and joins
/// it.
struct Contender {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Contender {
    /// Starts the thread and returns once it is about to make its first call.
    fn start(handle: ServiceHandle) -> Contender {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(Barrier::new(2));
        let thread = std::thread::Builder::new()
            .name("graft-bench-contender".to_owned())
            .spawn({
                let (stop, started) = (Arc::clone(&stop), Arc::clone(&started));
                move || {
                    let mut output = Vec::new();
                    let mut calls = 0u64;
                    started.wait();
                    while !stop.load(Ordering::Relaxed) {
                        handle.call(NOOP, &[], &mut output).expect("a contending noop call");
                        calls += 1;
                    }
                    calls
                }
            })
            .expect("starting the contending thread");
        started.wait();
        Contender { stop, thread: Some(thread) }
    }

    /// Stops and joins the thread; returns how many calls it made.
    fn stop(mut self) -> u64 {
        self.stop_and_join().expect("the contending thread panicked")
    }

    fn stop_and_join(&mut self) -> std::thread::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(Ok(0), JoinHandle::join)
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        // Only reached with the thread still running when a benchmark panicked; that panic is
        // the one to report.
        let _ = self.stop_and_join();
    }
}

/// The built library of `fixture`.
/// `watch/notify_event` and `watch/rename_to_serving`.
///
/// Both time one rename of a finished build over a watched path: the first until `notify`
/// delivers an event for it (the floor any watcher pays), the second until a call is answered
/// by the new build (readiness check, hash, stage, load, checks, create, health, publish).
fn watch(c: &mut Criterion) {
    let mut group = c.benchmark_group("watch");
    group
        .sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(3));
    let builds = [
        std::fs::read(fixture(Fixture::Greeter1_1)).expect("greeter 1.1"),
        std::fs::read(fixture(Fixture::Greeter1_0)).expect("greeter 1.0"),
    ];

    group.bench_function("notify_event", |b| {
        use notify::Watcher as _;
        let dir = temp_dir();
        let (sender, events) = crossbeam_channel::unbounded();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let _ = sender.send(event.map(|e| e.paths).unwrap_or_default());
            })
            .expect("a notify watcher");
        watcher.watch(dir.path(), notify::RecursiveMode::NonRecursive).expect("watching");
        let target = dir.path().join("greeter.so");
        let mut round = 0usize;
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let incoming = dir.path().join(".incoming");
                std::fs::write(&incoming, &builds[round % 2]).expect("writing the build");
                round += 1;
                // Events of the write may still arrive: the one timed is the first that names
                // the renamed path. (Sleeping to drain them would let the CPU idle, and time its
                // wake-up instead of the event.)
                while events.try_recv().is_ok() {}
                let start = Instant::now();
                std::fs::rename(&incoming, &target).expect("renaming");
                loop {
                    let paths =
                        events.recv_timeout(Duration::from_secs(5)).expect("a notify event");
                    if paths.iter().any(|p| p == &target) {
                        break;
                    }
                }
                total += start.elapsed();
            }
            total
        });
    });

    group.bench_function("rename_to_serving", |b| {
        let dir = temp_dir();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).expect("the watched directory");
        let runtime = Runtime::builder()
            .staging_dir(dir.path().join("staging"))
            .probation(graft_runtime::ProbationPolicy::disabled())
            .build()
            .expect("building a runtime");
        let target = plugins.join("greeter.so");
        std::fs::write(&target, &builds[1]).expect("writing greeter 1.0");
        let (_watcher, events) = runtime.watch(&plugins).expect("watching");
        events.recv_timeout(Duration::from_secs(10)).expect("greeter 1.0 started");
        let greeter = runtime.handle("greeter").expect("a handle to the greeter");
        let mut round = 0usize;
        let mut answer = Vec::new();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (bytes, version) = if round.is_multiple_of(2) {
                    (&builds[0], b"1.1.0")
                } else {
                    (&builds[1], b"1.0.0")
                };
                round += 1;
                let incoming = plugins.join(".incoming");
                std::fs::write(&incoming, bytes).expect("writing the build");
                while events.try_recv().is_ok() {}
                let start = Instant::now();
                std::fs::rename(&incoming, &target).expect("renaming");
                let deadline = start + Duration::from_secs(10);
                loop {
                    answer.clear();
                    if greeter.call("version", &[], &mut answer).is_ok() && answer == version {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "the renamed build was not served within 10 s"
                    );
                }
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

fn fixture(fixture: Fixture) -> PathBuf {
    graft_tests::path(fixture).expect("building the fixture plugins")
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new().prefix("graft-bench-").tempdir().expect("creating a temp dir")
}

/// The raw baseline's `call_service`: the greeter's `noop` never calls another service, so any
/// call is refused with a non-OK status.
extern "C" fn refuse_calls(
    _ctx: *const c_void,
    _service: RawStr,
    _method: RawStr,
    _input: RawBytes,
    _output: *const WriteSink,
    _error: *const WriteSink,
) -> i32 {
    graft_plugin_api::abi::STATUS_DEPENDENCY
}

/// `LogFn` that drops every line: the raw baseline has no logging to pay for.
extern "C" fn ignore_log(_ctx: *const c_void, _level: u32, _message: *const u8, _len: usize) {}
