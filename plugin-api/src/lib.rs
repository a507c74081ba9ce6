//! The contract a graft plugin is built against.
//!
//! A graft host loads services from cdylib plugins and replaces them while it keeps serving. This
//! crate is everything a plugin author needs: the [`Service`] trait, the [`export_service!`]
//! macro that turns a `Service` into the plugin's C ABI, and the ABI itself in [`abi`].
//!
//! # Writing a plugin
//! 1. Create a library crate and make it a cdylib, depending on this crate only:
//!    ```toml
//!    [lib]
//!    crate-type = ["cdylib"]
//!
//!    [dependencies]
//!    # Not on crates.io yet: depend on the repository (or a checkout, by path).
//!    graft-plugin-api = { git = "<graft's repository URL>", tag = "..." }
//!    # graft-plugin-api = { path = "../graft/plugin-api" }
//!    ```
//!    Keep the default `panic = "unwind"`: the host refuses a plugin built with
//!    `panic = "abort"`, whose first panic would take the host process down.
//! 2. Define the service's interface as a trait marked [`macro@interface`] (in a crate of its
//!    own, which the host depends on too). Types in it derive serde's `Serialize` and
//!    `Deserialize`.
//! 3. Write a type holding your service's state, implement [`Service`] for it (`create` builds
//!    it, `health` says whether it can serve) and the interface's trait. Calls arrive on many
//!    threads at once, so the type is `Send + Sync`. A method's `Err` is the service's answer;
//!    a panic is a failure, which the host counts against a new build and rolls a build back
//!    when it fails too often. Export it with [`export_service!`], naming the service, the
//!    plugin's version and the trait. Bump the interface's minor version when you add a method
//!    and its major version when you change or remove one: the host checks every method
//!    against the build it replaces and refuses a version number that lies.
//!
//!    A service can instead implement [`Service::call`] by hand (bytes in, bytes out) and
//!    export it with `interface: "name" @ "version"`: then say "no" to a caller with a refusal
//!    ([`Error::not_found`], [`Error::invalid_input`], [`Error::unknown_method`],
//!    [`Error::refused`]) and report a failure with [`Error::new`].
//! 4. If the plugin starts threads, stop and join them when the service is dropped: the host
//!    destroys an instance once it leaves service (on a thread of the host's, never one of
//!    yours), and a thread left running keeps executing a retired build's code and holding its
//!    resources for the rest of the process. The host never unmaps a plugin library, because
//!    its `std` leaves thread-exit work on the host's threads.
//! 5. Log through the [`Host`] handed to `create`, not through a global logger: the plugin has
//!    its own copy of every global, invisible to the host.
//! 6. Reach other services only through the [`Host`]: with a typed client
//!    ([`Host::client`]) or [`Host::call`], by name, and declare them in
//!    `export_service!`'s `dependencies` with a requirement on their interface version. The
//!    host resolves the name on every call (never keep another service's answer as a handle to
//!    it), starts this service only once its dependencies run, and waits a bounded time for one
//!    that is starting or paused. Pass a failed call on with `?`: the caller at the top then
//!    learns which service and version failed, and through which chain of calls.
//! 7. Build it with `cargo build --release` and hand the `.so` to the host. The descriptor
//!    records whether the build was optimised, and the host's status shows a debug build as one.
//!
//! # Example
//! A complete plugin. Its interface is a trait marked [`macro@interface`], which would live in a
//! crate of its own that the host depends on too (here, inline):
//! ```
//! use graft_plugin_api::{Error, Host, Service, export_service, interface};
//!
//! #[interface(name = "greeter", version = "1.0.0")]
//! pub trait Greet {
//!     /// A greeting for `name`.
//!     fn greet(&self, name: &str) -> String;
//! }
//!
//! pub struct Greeter {
//!     host: Host,
//! }
//!
//! impl Service for Greeter {
//!     fn create(host: Host) -> Result<Self, Error> {
//!         host.info("greeter ready");
//!         Ok(Greeter { host })
//!     }
//! }
//!
//! impl Greet for Greeter {
//!     fn greet(&self, name: &str) -> String {
//!         self.host.debug("greeting");
//!         format!("hello, {name}")
//!     }
//! }
//!
//! export_service!(Greeter, name: "greeter", version: "1.0.0", interface: Greet);
//! # fn main() {}
//! ```
//!
//! The host calls it through the generated `GreetClient` (`runtime.client::<GreetClient<_>>(
//! "greeter")`), with the trait's signatures; the arguments and the answer cross the ABI
//! encoded as [`typed`] describes. A service can also implement [`Service::call`] by hand,
//! reading and writing bytes itself, and export it with `interface: "name" @ "version"`.
//!
//! # What crosses the boundary
//! Only the C types of [`abi`]: integers, pointers with lengths, function pointers and
//! `#[repr(C)]` structs. The host owns every output buffer and the plugin writes into it
//! through a callback, so no allocation is freed by the side that did not make it. Every entry
//! point the macro generates catches panics and reports them as an error with the panic's
//! message.
//!
//! Changing anything in [`abi`] is a boundary change, listed in the CHANGELOG. An addition is an
//! optional field appended and signalled by size (the growth rule in [`abi`]); only a breaking
//! change moves [`abi::ABI_VERSION`].
#![deny(missing_docs)]

// The `#[interface]` attribute names this crate `::graft_plugin_api`, here too.
#[allow(unused_extern_crates)]
extern crate self as graft_plugin_api;

pub mod abi;
mod depth;
pub mod provenance;
mod service;
mod shim;
pub mod typed;

pub use graft_macros::interface;
pub use typed::{Client, ClientError, Remote, Transport};

pub use service::{
    CallError, Error, ErrorKind, Host, Level, Output, OutputFull, Service, Stateful,
};

/// Exports a [`Service`] as this plugin's entry point.
///
/// ```text
/// export_service!(Type, name: "kv", version: "2.1.0", interface: Kv);
/// export_service!(Type, name: "kv", version: "2.1.0", interface: Kv, stateful);
/// export_service!(Type, name: "service", version: "1.2.3", interface: "iface" @ "1.0.0");
/// export_service!(Type, name: "front", version: "1.0.0", interface: "front" @ "1.0.0",
///                 dependencies: ["cache" @ "^1.2", "store" @ "^2"]);
/// export_service!(Type, name: "counter", version: "2.0.0", interface: "counter" @ "1.0.0",
///                 stateful);
/// ```
///
/// - `name`: the service's name; callers address it by this name.
/// - `version`: this build's own semver version (`env!("CARGO_PKG_VERSION")` is a good choice).
/// - `interface`: the trait of a typed interface ([`macro@interface`]), whose name, version and
///   methods it exports, and whose generated glue answers calls; or, for a service that
///   implements [`Service::call`] by hand, the interface's name and semver version.
/// - `dependencies` (optional): the services this one calls through [`Host::call`], each with a
///   semver requirement on its interface version. The host starts a service only once these
///   run at a satisfying version, and refuses to swap one of them to a build that would break
///   the requirement.
/// - `stateful` (optional, last): the type implements [`Stateful`], and its state is handed
///   from build to build on every swap and rollback.
///
/// The macro defines the `graft_plugin_entry` symbol and a static descriptor, so it may appear
/// once per plugin.
#[macro_export]
macro_rules! export_service {
    (
        $service:ty,
        name: $name:expr,
        version: $version:expr,
        interface: $iface:literal @ $iface_version:expr
        $(, dependencies: [$($dep:literal @ $requirement:literal),* $(,)?])?,
        stateful
        $(,)?
    ) => {
        $crate::__graft_export!(
            $service, $name, $version, $iface, $iface_version,
            [$($($dep @ $requirement),*)?],
            .with_state::<$service>()
        );
    };
    (
        $service:ty,
        name: $name:expr,
        version: $version:expr,
        interface: $iface:literal @ $iface_version:expr
        $(, dependencies: [$($dep:literal @ $requirement:literal),* $(,)?])?
        $(,)?
    ) => {
        $crate::__graft_export!(
            $service, $name, $version, $iface, $iface_version,
            [$($($dep @ $requirement),*)?],
        );
    };
    (
        $service:ty,
        name: $name:expr,
        version: $version:expr,
        interface: $iface:path
        $(, dependencies: [$($dep:literal @ $requirement:literal),* $(,)?])?,
        stateful
        $(,)?
    ) => {
        $crate::__graft_export!(
            $service, $name, $version,
            <dyn $iface as $crate::typed::Interface>::NAME,
            <dyn $iface as $crate::typed::Interface>::VERSION,
            [$($($dep @ $requirement),*)?],
            .with_interface::<$service, dyn $iface>()
            .with_state::<$service>()
        );
    };
    (
        $service:ty,
        name: $name:expr,
        version: $version:expr,
        interface: $iface:path
        $(, dependencies: [$($dep:literal @ $requirement:literal),* $(,)?])?
        $(,)?
    ) => {
        $crate::__graft_export!(
            $service, $name, $version,
            <dyn $iface as $crate::typed::Interface>::NAME,
            <dyn $iface as $crate::typed::Interface>::VERSION,
            [$($($dep @ $requirement),*)?],
            .with_interface::<$service, dyn $iface>()
        );
    };
}

/// The expansion of [`export_service!`]: the descriptor, with `$($more)*` applied to it, and the
/// entry symbol.
#[doc(hidden)]
#[macro_export]
macro_rules! __graft_export {
    (
        $service:ty, $name:expr, $version:expr, $iface:expr, $iface_version:expr,
        [$($dep:literal @ $requirement:literal),*],
        $($more:tt)*
    ) => {
        #[doc(hidden)]
        const __GRAFT_PLUGIN_DEPENDENCIES: &[$crate::abi::DependencySpec] =
            &[$($crate::abi::DependencySpec::new($dep, $requirement)),*];

        #[doc(hidden)]
        static __GRAFT_PLUGIN_DESCRIPTOR: $crate::abi::PluginDescriptor =
            $crate::abi::PluginDescriptor::for_service::<$service>(
                $crate::abi::PluginIdentity {
                    service_name: $name,
                    plugin_version: $version,
                    interface_name: $iface,
                    interface_version: $iface_version,
                },
                __GRAFT_PLUGIN_DEPENDENCIES,
                $crate::build_flags!(),
            )
            .with_build_profile($crate::build_profile!())
            $($more)*;

        /// The graft entry point: returns this plugin's descriptor.
        #[unsafe(no_mangle)]
        pub extern "C" fn graft_plugin_entry() -> *const $crate::abi::PluginDescriptor {
            &__GRAFT_PLUGIN_DESCRIPTOR
        }
    };
}

/// The build facts of the crate that expands it, as [`abi::PluginDescriptor::build_flags`] bits.
///
/// It must expand in the plugin crate: `cfg!(panic = ...)` reports the strategy of the crate
/// being compiled.
#[doc(hidden)]
#[macro_export]
macro_rules! build_flags {
    () => {
        if cfg!(panic = "unwind") { $crate::abi::BUILD_PANIC_UNWIND } else { 0 }
    };
}

/// The build profile of the crate that expands it, as [`abi::PluginDescriptor::build_profile`].
///
/// It must expand in the plugin crate: `cfg!(debug_assertions)` reports the settings of the
/// crate being compiled, not of this one.
#[doc(hidden)]
#[macro_export]
macro_rules! build_profile {
    () => {
        if cfg!(debug_assertions) {
            $crate::abi::BUILD_PROFILE_DEBUG
        } else {
            $crate::abi::BUILD_PROFILE_OPTIMISED
        }
    };
}
