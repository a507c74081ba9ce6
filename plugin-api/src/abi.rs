//! The C ABI between a graft host and a plugin: the only types that cross the boundary.
//!
//! Everything here is `#[repr(C)]` and made of integers, pointers with lengths and function
//! pointers. A plugin exports one symbol, [`ENTRY_SYMBOL`], of type [`EntryFn`]; it returns a
//! pointer to a [`PluginDescriptor`] whose first field is a [`PluginHeader`]. The host reads the
//! header alone first and refuses the plugin unless the magic number, the ABI version and the
//! descriptor's size are what it expects; only then does it read the rest.
//!
//! # Ownership rules
//! - Strings in the descriptor ([`RawStr`]) point at `'static` data inside the plugin; the host
//!   copies them into owned values as soon as it reads the descriptor.
//! - Results and error messages are written into host-owned buffers through a [`WriteSink`]
//!   callback. No allocation made on one side is freed on the other.
//! - The instance pointer returned by `create` is owned by the plugin and is freed only by the
//!   plugin's `destroy`.
//!
//! # How this ABI grows
//! [`ABI_VERSION`] names a *breaking* layout: it moves only when a field changes meaning, moves,
//! or becomes required. Everything else is an *addition*: a field appended at the end of
//! [`PluginDescriptor`] or [`HostApi`], signalled by the size each side writes
//! ([`PluginHeader::descriptor_size`], [`HostApi::size`]), never by a new ABI version. Every
//! appended field is optional: its all-zero value (0, null, `None`) means "not provided", and a
//! reader that does not find it behaves as it did before the field existed. An addition that a
//! reader cannot do without is a breaking change and bumps [`ABI_VERSION`].
//!
//! Who checks what:
//! - **The host reads the descriptor.** It reads the [`PluginHeader`] alone and refuses the
//!   plugin unless the magic number is [`MAGIC`], `abi_version` equals its own [`ABI_VERSION`]
//!   and `descriptor_size` is at least [`MIN_DESCRIPTOR_SIZE`] (the fields ABI 2 launched with).
//!   It then copies `min(descriptor_size, size_of::<PluginDescriptor>())` bytes into a zeroed
//!   `PluginDescriptor`: fields an older plugin does not have read as "not provided", and bytes a
//!   newer plugin appended past what this host knows are never read.
//! - **The plugin reads the host table.** Before it uses a field of [`HostApi`], the plugin side
//!   ([`crate::Host`]) checks that the field's offset plus its size lies within
//!   [`HostApi::size`] ([`HostApi::provides`]); a field past it is treated as "not provided",
//!   feature by feature, so a newer plugin runs on an older host with what that host offers.
//! - **Statuses grow the same way.** A status added later is returned only to a host that says it
//!   understands it ([`HostApi::max_status`]); an older host is given the closest status it knows.
//!
//! The all-zero bit pattern is a valid value of every type in this module that can grow
//! (integers 0, raw pointers null, `Option<fn>` `None`): that is what lets the host start from a
//! zeroed structure. Keep it true for every field appended.
//!
//! History: ABI 2 appended the service's dependencies to [`PluginDescriptor`] and
//! [`HostApi::call_service`] (ABI 1 had no size rule for them, hence the bump).
//! `graft-plugin-api` 0.3 appended [`PluginDescriptor::build_profile`], [`HostApi::max_status`]
//! and [`STATUS_REFUSED`] within ABI 2; 0.4 appended the state handoff,
//! [`PluginDescriptor::state_format`], [`PluginDescriptor::export_state`] and
//! [`PluginDescriptor::import_state`]. Each step is listed in the CHANGELOG.

use std::ffi::c_void;

/// The magic number that opens every descriptor: the bytes `GRAFTPLG` read as a little-endian
/// `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"GRAFTPLG");

/// The version of this ABI. The host refuses a plugin whose header carries another one.
///
/// It moves only for a breaking change; additions are appended and signalled by size (see the
/// module documentation).
pub const ABI_VERSION: u32 = 2;

/// The smallest [`PluginHeader::descriptor_size`] a host of this ABI version accepts: the header
/// and every field ABI 2 launched with, up to and including
/// [`PluginDescriptor::dependencies_len`]. Fields after it were appended later and are optional.
pub const MIN_DESCRIPTOR_SIZE: usize =
    std::mem::offset_of!(PluginDescriptor, dependencies_len) + std::mem::size_of::<usize>();

/// The name of the symbol every plugin exports, NUL-terminated for `dlsym`.
pub const ENTRY_SYMBOL: &[u8] = b"graft_plugin_entry\0";

/// The version of `graft-plugin-api` itself, recorded in every descriptor built with it.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

/// [`PluginDescriptor::build_flags`] bit: the plugin was built with `panic = "unwind"`.
///
/// A plugin without it was built with `panic = "abort"`: its first panic would abort the whole
/// host process, so the host refuses to load it.
pub const BUILD_PANIC_UNWIND: u64 = 1 << 0;

/// [`PluginDescriptor::build_profile`]: the plugin did not say how it was built (a plugin built
/// before the field existed, or a hand-made descriptor).
pub const BUILD_PROFILE_UNKNOWN: u32 = 0;
/// [`PluginDescriptor::build_profile`]: an optimised build (`debug_assertions` off, as in
/// `cargo build --release`).
pub const BUILD_PROFILE_OPTIMISED: u32 = 1;
/// [`PluginDescriptor::build_profile`]: a debug build (`debug_assertions` on, as in a plain
/// `cargo build`): typically many times slower, and rarely what an operator meant to deploy.
pub const BUILD_PROFILE_DEBUG: u32 = 2;

/// Status returned by every entry point: success.
pub const STATUS_OK: i32 = 0;
/// Status: the service failed (an internal error); its message was written to the error sink.
pub const STATUS_ERROR: i32 = 1;
/// Status: the plugin's code panicked; the panic message was written to the error sink.
pub const STATUS_PANIC: i32 = 2;
/// Status: a call to another service failed, and this is that failure passed on. The error
/// sink holds a [`crate::provenance`] record naming the failing service and the chain of calls.
/// [`HostApi::call_service`] returns it for every failure; a plugin returns it when it passes such
/// a failure on (`?` on a [`crate::CallError`] does).
pub const STATUS_DEPENDENCY: i32 = 3;
/// Status: the service answered "no" on purpose: the call asked for something it does not have
/// or does not accept (not found, invalid input, an unknown method). The caller's problem, not a
/// failure of the service: the host does not count it against the build. The message was
/// written to the error sink.
///
/// Added in `graft-plugin-api` 0.3 within ABI 2: a plugin returns it only to a host whose
/// [`HostApi::max_status`] includes it, and [`STATUS_ERROR`] to an older host.
pub const STATUS_REFUSED: i32 = 4;

/// Log levels passed to [`HostApi::log`], from most to least severe.
pub mod log_level {
    /// An error.
    pub const ERROR: u32 = 1;
    /// A warning.
    pub const WARN: u32 = 2;
    /// Information.
    pub const INFO: u32 = 3;
    /// Debugging detail.
    pub const DEBUG: u32 = 4;
    /// Tracing detail.
    pub const TRACE: u32 = 5;
}

/// The signature of the exported entry symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginDescriptor;

/// Creates an instance.
///
/// On [`STATUS_OK`] the plugin has stored a non-null instance pointer in `*instance_out`.
/// Otherwise it has written a message to `error` and stored nothing. `host` is null or valid for
/// the rest of the process (see [`HostApi`]).
pub type CreateFn = unsafe extern "C" fn(
    host: *const HostApi,
    instance_out: *mut *mut c_void,
    error: *const WriteSink,
) -> i32;

/// Calls `method` with `input`; the result is written to `output`, an error message to `error`.
///
/// May be called from many threads at once on the same instance.
pub type CallFn = unsafe extern "C" fn(
    instance: *mut c_void,
    method: RawStr,
    input: RawBytes,
    output: *const WriteSink,
    error: *const WriteSink,
) -> i32;

/// Calls the method whose stable id is `method` (a typed interface's; see
/// [`PluginDescriptor::call_method`]) with the encoded arguments `input`; the encoded answer is
/// written to `output`, an error message to `error`. The statuses are those of [`CallFn`].
///
/// May be called from many threads at once on the same instance.
pub type CallMethodFn = unsafe extern "C" fn(
    instance: *mut c_void,
    method: u32,
    input: RawBytes,
    output: *const WriteSink,
    error: *const WriteSink,
) -> i32;

/// Runs the instance's health check; a failure's message is written to `error`.
pub type HealthFn = unsafe extern "C" fn(instance: *mut c_void, error: *const WriteSink) -> i32;

/// Destroys an instance. The host calls it once, after the last call into the instance returned.
/// The plugin must have stopped every thread it started before it returns.
pub type DestroyFn = unsafe extern "C" fn(instance: *mut c_void, error: *const WriteSink) -> i32;

/// Writes an instance's state to `state` (appended in `graft-plugin-api` 0.4; see
/// [`PluginDescriptor::export_state`]). The host calls it only while no call and no health check
/// runs in the instance, and holds new calls back until it has handed the state on.
pub type ExportStateFn = unsafe extern "C" fn(
    instance: *mut c_void,
    state: *const WriteSink,
    error: *const WriteSink,
) -> i32;

/// Creates an instance from `state`, exported by a build of the same service in state format
/// `format` (appended in `graft-plugin-api` 0.4; see [`PluginDescriptor::import_state`]).
///
/// As [`CreateFn`] otherwise. [`STATUS_REFUSED`] means that this build does not read `format`
/// (a newer format than its own, typically); any other failure is [`STATUS_ERROR`] or
/// [`STATUS_PANIC`]. `state` is valid for the call only.
pub type ImportStateFn = unsafe extern "C" fn(
    host: *const HostApi,
    format: u32,
    state: RawBytes,
    instance_out: *mut *mut c_void,
    error: *const WriteSink,
) -> i32;

/// The host's sink for bytes: `write(ctx, data, len)` appends `len` bytes and returns 0, or a
/// non-zero value when the host could not take them (out of memory).
pub type WriteFn = unsafe extern "C" fn(ctx: *mut c_void, data: *const u8, len: usize) -> i32;

/// Writes one log line on the host's side: `log(ctx, level, message, len)`.
pub type LogFn =
    unsafe extern "C" fn(ctx: *const c_void, level: u32, message: *const u8, len: usize);

/// Calls `method` of another service, by name, through the host: the answer is written to
/// `output`; on failure the status is [`STATUS_DEPENDENCY`] and a provenance record is written
/// to `error`. The host resolves the name on every call, so a plugin never holds a stale
/// instance of a service that was restarted or swapped.
pub type CallServiceFn = unsafe extern "C" fn(
    ctx: *const c_void,
    service: RawStr,
    method: RawStr,
    input: RawBytes,
    output: *const WriteSink,
    error: *const WriteSink,
) -> i32;

/// The fixed header that opens every descriptor. The host reads these fields, and only these,
/// before it has checked them.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginHeader {
    /// Always [`MAGIC`].
    pub magic: u64,
    /// The [`ABI_VERSION`] the plugin was built with.
    pub abi_version: u32,
    /// `size_of::<PluginDescriptor>()` as the plugin saw it, header included.
    pub descriptor_size: u32,
}

/// A borrowed UTF-8 string: a pointer and a length, no terminator.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawStr {
    /// The first byte; dangling (never null) when `len` is 0.
    pub ptr: *const u8,
    /// The length in bytes.
    pub len: usize,
}

impl RawStr {
    /// Borrows `s`. The result is valid for as long as `s` is.
    pub const fn new(s: &str) -> Self {
        RawStr { ptr: s.as_ptr(), len: s.len() }
    }

    /// Reads the string back.
    ///
    /// # Safety
    /// `ptr` must point at `len` initialised bytes that stay valid and unchanged for `'a`.
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the caller guarantees `ptr` points at `len` bytes valid for 'a; the pointer is
        // non-null (checked above) and `u8` has no alignment requirement.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Borrowed bytes: a pointer and a length.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawBytes {
    /// The first byte; may be dangling or null when `len` is 0.
    pub ptr: *const u8,
    /// The length in bytes.
    pub len: usize,
}

impl RawBytes {
    /// Borrows `bytes`. The result is valid for as long as `bytes` is.
    pub const fn new(bytes: &[u8]) -> Self {
        RawBytes { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    /// Reads the bytes back.
    ///
    /// # Safety
    /// `ptr` must point at `len` initialised bytes that stay valid and unchanged for `'a`.
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            return &[];
        }
        // SAFETY: as in `RawStr::as_bytes`: the caller vouches for `len` valid bytes at a
        // non-null pointer.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A host-owned buffer the plugin appends to through [`WriteSink::write`].
#[repr(C)]
#[derive(Debug)]
pub struct WriteSink {
    /// Opaque to the plugin; passed back to `write`.
    pub ctx: *mut c_void,
    /// Appends bytes to the buffer behind `ctx`.
    pub write: WriteFn,
}

impl WriteSink {
    /// A sink that appends to `buffer`, for whichever side owns the buffer. The sink holds a raw
    /// pointer to `buffer`: use it only while `buffer` is neither moved, dropped nor otherwise
    /// used, that is, for the duration of the call it is passed to.
    #[inline]
    pub fn for_vec(buffer: &mut Vec<u8>) -> WriteSink {
        WriteSink { ctx: (buffer as *mut Vec<u8>).cast::<c_void>(), write: append_to_vec }
    }
}

/// `WriteFn` of [`WriteSink::for_vec`]: appends, or returns 1 if the vector cannot grow. It
/// never panics: a panic cannot cross `extern "C"`.
///
/// # Safety
/// `ctx` must be the `*mut Vec<u8>` of a sink from [`WriteSink::for_vec`] whose buffer is not
/// otherwise used during the call; `data` must point at `len` readable bytes when `len` is not 0.
unsafe extern "C" fn append_to_vec(ctx: *mut c_void, data: *const u8, len: usize) -> i32 {
    if len == 0 {
        return 0;
    }
    if data.is_null() {
        return 1;
    }
    // SAFETY: `ctx` is the exclusive borrow taken by `for_vec` (this function's contract).
    let buffer = unsafe { &mut *ctx.cast::<Vec<u8>>() };
    if buffer.try_reserve(len).is_err() {
        return 1;
    }
    // SAFETY: `data` is non-null (checked) and points at `len` readable bytes (the contract).
    buffer.extend_from_slice(unsafe { std::slice::from_raw_parts(data, len) });
    0
}

/// Services the host offers a plugin, passed to `create`.
///
/// The host keeps the table valid and unchanged for the rest of the process, not only until
/// `destroy`: a plugin may keep it anywhere (a static, a thread-local whose destructor runs late),
/// so no earlier moment would be safe to free it.
///
/// Only `size` bytes of it exist: a plugin must check that a field lies within `size` before it
/// reads it ([`HostApi::provides`]), since an older host passes a shorter table. Fields appended
/// after ABI 2 launched are optional, and their all-zero value means "not provided".
#[repr(C)]
#[derive(Debug)]
pub struct HostApi {
    /// `size_of::<HostApi>()` as the host saw it.
    pub size: usize,
    /// Opaque to the plugin; passed back to every callback.
    pub ctx: *const c_void,
    /// The name the instance serves under (since ABI version 2). It differs from the
    /// descriptor's name when the host loads one build as several services.
    pub service: RawStr,
    /// The plugin version of the instance (since ABI version 2).
    pub version: RawStr,
    /// Writes a log line into the host's `tracing`, tagged with the service and its version.
    pub log: LogFn,
    /// Calls another service by name (since ABI version 2).
    pub call_service: CallServiceFn,
    /// The highest status this host understands (appended in `graft-plugin-api` 0.3). A host
    /// that does not provide it understands statuses up to [`STATUS_DEPENDENCY`].
    pub max_status: i32,
}

impl HostApi {
    /// Whether a table of `self.size` bytes holds the field at `offset` of `len` bytes: the
    /// per-field check a plugin makes before it reads a field, so that it never reads past the
    /// end of an older host's shorter table.
    ///
    /// `offset` and `len` come from `std::mem::offset_of!(HostApi, field)` and
    /// `std::mem::size_of` of the field's type.
    pub const fn provides(&self, offset: usize, len: usize) -> bool {
        match offset.checked_add(len) {
            Some(end) => end <= self.size,
            None => false,
        }
    }
}

/// A service this plugin depends on, with a semver requirement on that service's interface.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DependencySpec {
    /// The service's name.
    pub service: RawStr,
    /// A semver requirement on its interface version, e.g. `^1.2`.
    pub requirement: RawStr,
}

// SAFETY: both strings point at `'static`, immutable data.
unsafe impl Sync for DependencySpec {}

impl DependencySpec {
    /// A dependency on `service`, requiring its interface version to match `requirement`.
    pub const fn new(service: &'static str, requirement: &'static str) -> Self {
        DependencySpec { service: RawStr::new(service), requirement: RawStr::new(requirement) }
    }
}

/// One method of a typed interface, as its description in the descriptor gives it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// The method's name.
    pub name: RawStr,
    /// Its signature, normalised: `fn(parameter types) -> return type`, as written in the
    /// trait, without parameter names or whitespace between punctuation.
    pub signature: RawStr,
    /// The 64-bit FNV-1a hash of `signature`.
    pub fingerprint: u64,
    /// Its stable id: the 32-bit FNV-1a hash of its name.
    pub id: u32,
}

// SAFETY: both strings point at `'static`, immutable data.
unsafe impl Sync for MethodSpec {}

impl MethodSpec {
    /// The method `name` with signature `signature`; its id and fingerprint are derived.
    pub const fn new(name: &'static str, signature: &'static str) -> Self {
        MethodSpec {
            name: RawStr::new(name),
            signature: RawStr::new(signature),
            fingerprint: crate::typed::fnv1a_64(signature.as_bytes()),
            id: crate::typed::fnv1a_32(name.as_bytes()),
        }
    }
}

/// Everything the host knows about a plugin: identity, versions, build facts and entry points.
///
/// The `Option`s around the entry points are there so that the host can check a hand-made
/// descriptor for null pointers instead of trusting it; the export macro fills every one.
///
/// Invariant: all-zero bytes are a valid value of this struct (every field is an integer, a
/// raw pointer, a [`RawStr`] or an `Option` of a function pointer), and they mean "not
/// provided". The host reads a descriptor shorter than its own by copying the bytes that exist
/// over a zeroed one, so every field appended later must keep this true.
#[repr(C)]
#[derive(Debug)]
pub struct PluginDescriptor {
    /// Checked before anything else.
    pub header: PluginHeader,
    /// The service this plugin implements, e.g. `greeter`. Callers address it by this name.
    pub service_name: RawStr,
    /// This build's own version (semver), e.g. `1.1.0`.
    pub plugin_version: RawStr,
    /// The name of the interface the service implements, e.g. `greeter`.
    pub interface_name: RawStr,
    /// The semver version of that interface, checked against the host's requirement.
    pub interface_version: RawStr,
    /// The version of `graft-plugin-api` the plugin was built with ([`API_VERSION`]).
    pub api_version: RawStr,
    /// Facts about the build, as bits: see [`BUILD_PANIC_UNWIND`].
    pub build_flags: u64,
    /// Creates an instance.
    pub create: Option<CreateFn>,
    /// Calls a method on an instance.
    pub call: Option<CallFn>,
    /// Checks an instance's health.
    pub health: Option<HealthFn>,
    /// Destroys an instance.
    pub destroy: Option<DestroyFn>,
    /// The services this one depends on (since ABI version 2): `dependencies_len` specs.
    pub dependencies: *const DependencySpec,
    /// How many dependencies there are. The last field ABI 2 launched with
    /// ([`MIN_DESCRIPTOR_SIZE`] ends here); the fields below were appended later and are
    /// optional.
    pub dependencies_len: usize,
    /// How the plugin was built (appended in `graft-plugin-api` 0.3): [`BUILD_PROFILE_OPTIMISED`],
    /// [`BUILD_PROFILE_DEBUG`], or [`BUILD_PROFILE_UNKNOWN`] (0, also what a host reads from a
    /// plugin built before the field existed). The export macro sets it from
    /// `cfg!(debug_assertions)` in the plugin crate.
    pub build_profile: u32,
    /// The format version of the state this build exports (appended in `graft-plugin-api` 0.4;
    /// meaningful only with the two entry points below).
    pub state_format: u32,
    /// Exports an instance's state (appended in `graft-plugin-api` 0.4). A service is
    /// **stateful** when both this and [`PluginDescriptor::import_state`] are present; a host
    /// treats a descriptor without them (an older plugin's, or a stateless one) as stateless.
    pub export_state: Option<ExportStateFn>,
    /// Creates an instance from another instance's exported state (appended in
    /// `graft-plugin-api` 0.4).
    pub import_state: Option<ImportStateFn>,
    /// Calls a method by its stable id (appended in `graft-plugin-api` 0.5): present for a
    /// service exported with a typed interface, whose methods are described below.
    pub call_method: Option<CallMethodFn>,
    /// The methods of the typed interface the service implements (appended in
    /// `graft-plugin-api` 0.5): `methods_len` specs; null (and 0) for an untyped service.
    pub methods: *const MethodSpec,
    /// How many methods there are.
    pub methods_len: usize,
}

// SAFETY: a descriptor is immutable once built, and every pointer in it points at `'static`
// data (string literals) or at functions, so sharing it between threads cannot race.
unsafe impl Sync for PluginDescriptor {}

/// The identity a plugin declares, gathered by the export macro.
#[derive(Debug, Clone, Copy)]
pub struct PluginIdentity {
    /// The service name.
    pub service_name: &'static str,
    /// The plugin's own version.
    pub plugin_version: &'static str,
    /// The interface name.
    pub interface_name: &'static str,
    /// The interface's semver version.
    pub interface_version: &'static str,
}

impl PluginDescriptor {
    /// Builds the descriptor for service `S` with its `dependencies`, with every entry point
    /// running `S`'s code under `catch_unwind`. `build_flags` must be computed in the plugin
    /// crate itself
    /// ([`crate::export_service!`] does so with `cfg!(panic = "unwind")`).
    pub const fn for_service<S: crate::Service>(
        identity: PluginIdentity,
        dependencies: &'static [DependencySpec],
        build_flags: u64,
    ) -> Self {
        PluginDescriptor {
            header: PluginHeader {
                magic: MAGIC,
                abi_version: ABI_VERSION,
                descriptor_size: std::mem::size_of::<PluginDescriptor>() as u32,
            },
            service_name: RawStr::new(identity.service_name),
            plugin_version: RawStr::new(identity.plugin_version),
            interface_name: RawStr::new(identity.interface_name),
            interface_version: RawStr::new(identity.interface_version),
            api_version: RawStr::new(API_VERSION),
            build_flags,
            create: Some(crate::shim::create::<S>),
            call: Some(crate::shim::call::<S>),
            health: Some(crate::shim::health::<S>),
            destroy: Some(crate::shim::destroy::<S>),
            dependencies: dependencies.as_ptr(),
            dependencies_len: dependencies.len(),
            build_profile: BUILD_PROFILE_UNKNOWN,
            state_format: 0,
            export_state: None,
            import_state: None,
            call_method: None,
            methods: std::ptr::null(),
            methods_len: 0,
        }
    }

    /// The same descriptor, for a service that implements the typed interface `I` (`dyn
    /// Trait`): calls by name and by id go through the interface's generated glue, and the
    /// interface's methods are described ([`crate::export_service!`] with `interface: Trait`
    /// calls it).
    pub const fn with_interface<S: crate::Service, I: ?Sized + crate::typed::Serve<S>>(
        mut self,
    ) -> Self {
        self.call = Some(crate::shim::call_named::<S, I>);
        self.call_method = Some(crate::shim::call_method::<S, I>);
        self.methods = I::METHODS.as_ptr();
        self.methods_len = I::METHODS.len();
        self
    }

    /// The same descriptor, declaring `S` stateful: its state format and the entry points that
    /// export its state and create an instance from it ([`crate::export_service!`] with
    /// `stateful` calls it).
    pub const fn with_state<S: crate::Stateful>(mut self) -> Self {
        self.state_format = S::STATE_FORMAT;
        self.export_state = Some(crate::shim::export_state::<S>);
        self.import_state = Some(crate::shim::import_state::<S>);
        self
    }

    /// The same descriptor, declaring `profile` as [`PluginDescriptor::build_profile`]. Like
    /// `build_flags`, it must be computed in the plugin crate ([`crate::export_service!`] does so
    /// with `cfg!(debug_assertions)`).
    pub const fn with_build_profile(mut self, profile: u32) -> Self {
        self.build_profile = profile;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimum_descriptor_ends_where_the_appended_fields_begin() {
        assert_eq!(MIN_DESCRIPTOR_SIZE, std::mem::offset_of!(PluginDescriptor, build_profile));
        assert!(MIN_DESCRIPTOR_SIZE < std::mem::size_of::<PluginDescriptor>());
    }

    #[test]
    fn an_all_zero_descriptor_reads_as_nothing_provided() {
        // SAFETY: all-zero bytes are a valid `PluginDescriptor` (the invariant on the struct):
        // integers, raw pointers, `RawStr`s and `Option`s of function pointers.
        let zero = unsafe { std::mem::MaybeUninit::<PluginDescriptor>::zeroed().assume_init() };
        assert!(zero.create.is_none() && zero.destroy.is_none());
        assert!(zero.dependencies.is_null() && zero.service_name.ptr.is_null());
        assert_eq!(zero.build_profile, BUILD_PROFILE_UNKNOWN);
        assert!(zero.export_state.is_none() && zero.import_state.is_none());
        // SAFETY: a null `RawStr` of length 0 reads as empty without touching memory.
        assert_eq!(unsafe { zero.service_name.as_bytes() }, b"");
    }

    #[test]
    fn a_vec_sink_appends_what_is_written_and_refuses_a_null_pointer() {
        let mut buffer = b"ab".to_vec();
        let sink = WriteSink::for_vec(&mut buffer);
        // SAFETY: the sink borrows `buffer`, which nothing else touches until the calls return,
        // and each data pointer is valid for its length.
        unsafe {
            assert_eq!((sink.write)(sink.ctx, b"cd".as_ptr(), 2), 0);
            assert_eq!((sink.write)(sink.ctx, std::ptr::null(), 0), 0);
            assert_eq!((sink.write)(sink.ctx, std::ptr::null(), 3), 1);
        }
        assert_eq!(buffer, b"abcd");
    }
}
