//! Turning a file into a checked, loaded plugin: validate, stage, `dlopen`, read the descriptor.
//!
//! This is the only module that calls `libloading`. It hands out [`Plugin`], which owns the
//! library together with the function pointers taken from it, so that no pointer into the
//! library can outlive the handle that keeps it mapped.
//!
//! Order of work for [`Loader::load`] (see [`file`] and [`elf`] for the details):
//! 1. open the source once, without blocking (`O_NONBLOCK | O_NOCTTY | O_CLOEXEC`), and refuse
//!    anything that `fstat` does not call a regular file ([`Error::NotAFile`]): a FIFO, a device
//!    or a directory never blocks the loader, and a path renamed between a check and the open
//!    cannot slip a FIFO in;
//! 2. from that descriptor, refuse a file larger than the maximum plugin size
//!    ([`Error::TooLarge`]) before reading any of it;
//! 3. take a read lease (Linux): it is refused while any process has the file open for writing
//!    ([`Error::Incomplete`]: try again later); where leases are not available (neither owner
//!    nor `CAP_LEASE`) the loader goes on without one; then refuse a file whose ELF header or
//!    loadable segments do not fit, before anything is copied;
//! 4. copy it, bounded by the size `fstat` gave and hashing (SHA-256) on the way, to a unique
//!    path in the staging directory (`dlopen` hands back the library it already has for a path
//!    or inode it has seen, so a rebuilt file at the same path would give the old code back; a
//!    copy, unlike a hard link, is also safe from a later in-place write to the source file,
//!    which would rewrite code that is mapped and running); a file that grew, shrank or changed
//!    during the copy is [`Error::Incomplete`];
//! 5. check the staged copy deeply ([`elf::check_dynamic`]): the dynamic segment, the dynamic
//!    symbol and string tables and the entry symbol, all inside the file, so that a half-written
//!    or zero-filled library is refused before its initialisers run;
//! 6. `dlopen` it with `RTLD_NOW | RTLD_LOCAL`, look up the entry symbol, read and check the
//!    header, then the rest of the descriptor.
//!
//! Any failure removes the staged copy, and every error names the file the caller gave, never
//! the staged copy.
//!
//! What these checks cannot catch: a well-formed library whose code is wrong or malicious. Its
//! initialisers run at `dlopen`, before the descriptor can be read: loading a file is trusting
//! it. Where no lease can be taken, a writer that keeps the file open but idle, with its final
//! size and a whole dynamic section already written, is not told apart from a finished build.

mod descriptor;
pub(crate) mod elf;
pub(crate) mod file;
pub(crate) mod retained;
pub(crate) mod staging;

pub use descriptor::BuildProfile;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use graft_plugin_api::abi::{
    CallFn, CallMethodFn, CreateFn, DestroyFn, ENTRY_SYMBOL, EntryFn, ExportStateFn, HealthFn,
    ImportStateFn,
};
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use semver::Version;

use crate::{Dependency, Error};
use file::{Source, elf_error};

/// The default maximum size of a plugin file: 512 MiB, far above any real plugin (a few MiB),
/// far below what would fill a staging disk by mistake.
pub const DEFAULT_MAX_PLUGIN_SIZE: u64 = 512 * 1024 * 1024;

/// What a plugin declares about itself, copied out of its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The service it implements.
    pub service: String,
    /// Its own version.
    pub plugin_version: Version,
    /// The interface it implements.
    pub interface: String,
    /// That interface's version.
    pub interface_version: Version,
    /// The `graft-plugin-api` version it was built with.
    pub api_version: Version,
    /// Whether it was built optimised or as a debug build; `None` when its descriptor does not
    /// say (built with `graft-plugin-api` before 0.3).
    pub build_profile: Option<BuildProfile>,
    /// The format version of the state it exports, if it is stateful (its descriptor has the
    /// state entry points, `graft-plugin-api` 0.4 and later); `None` for a stateless build.
    pub state_format: Option<u32>,
    /// The methods of the typed interface it implements, if it describes them (a build
    /// exported with a typed interface, `graft-plugin-api` 0.5 and later); `None` for an
    /// untyped build.
    pub methods: Option<std::sync::Arc<[crate::MethodInfo]>>,
    /// The file it was loaded from.
    pub source: PathBuf,
    /// The staged copy that is mapped.
    pub staged: PathBuf,
}

/// The entry points of a loaded plugin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EntryPoints {
    pub create: CreateFn,
    pub call: CallFn,
    pub health: HealthFn,
    pub destroy: DestroyFn,
    /// The state handoff of a stateful build.
    pub state: Option<StateEntryPoints>,
    /// Calls by method id, for a typed build.
    pub call_method: Option<CallMethodFn>,
}

/// The entry points that hand a stateful service's state from one instance to the next.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StateEntryPoints {
    pub export: ExportStateFn,
    pub import: ImportStateFn,
}

/// A loaded, checked plugin library.
///
/// Invariant: `entry` points into `library`; both live and die together here, and the library
/// is released only when this value is dropped, through `retained` (which unmaps it only when
/// that is provably safe). Whoever copies a function pointer out of `entry`
/// must keep this `Plugin` (through the `Generation` that owns it) alive for as long as it may
/// call it.
#[derive(Debug)]
pub(crate) struct Plugin {
    info: PluginInfo,
    /// The SHA-256 of the staged copy (hex), computed the first time it is asked for: hashing
    /// costs about as much as the rest of a swap, and only the state directory and the watcher's
    /// comparison of two builds of one version need it.
    sha256: std::sync::OnceLock<String>,

    dependencies: Vec<Dependency>,
    entry: EntryPoints,
    library: Option<Library>,
}

impl Plugin {
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The dependencies its descriptor declares.
    pub fn dependencies(&self) -> &[Dependency] {
        &self.dependencies
    }

    pub fn entry(&self) -> EntryPoints {
        self.entry
    }

    /// The SHA-256 of the library, in hex, hashed from the staged copy (private, never written
    /// to) on the first call. Empty if the staged copy cannot be read (it is removed only when
    /// the library leaves service).
    pub fn sha256(&self) -> &str {
        self.sha256.get_or_init(|| match file::hash_file(&self.info.staged) {
            Ok(hash) => hash,
            Err(error) => {
                tracing::warn!(path = %self.info.staged.display(), %error, "hashing a staged plugin failed");
                String::new()
            }
        })
    }

    /// The SHA-256 of the library, if it was computed already.
    pub fn known_sha256(&self) -> Option<&str> {
        self.sha256.get().map(String::as_str).filter(|hash| !hash.is_empty())
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        // Unmapped only if provably safe, otherwise kept mapped for good (see `retained`); its
        // staged file is removed either way.
        if let Some(library) = self.library.take() {
            let info = &self.info;
            retained::release(
                library,
                &info.service,
                &info.plugin_version,
                &info.source,
                &info.staged,
            );
        }
    }
}

/// Loads plugins from files, staging each under a unique path.
#[derive(Debug)]
pub(crate) struct Loader {
    staging: PathBuf,
    max_size: u64,
}

impl Loader {
    pub fn new(staging: PathBuf) -> Self {
        Loader { staging, max_size: DEFAULT_MAX_PLUGIN_SIZE }
    }

    /// Refuses files larger than `max_size` bytes.
    pub fn with_max_size(mut self, max_size: u64) -> Self {
        self.max_size = max_size;
        self
    }

    /// Opens, checks, stages and loads the plugin at `source` (see the module docs).
    pub fn load(&self, source: &Path) -> Result<Plugin, Error> {
        self.load_opened(&Source::open(source)?)
    }

    /// Loads the file `file` was opened on (by [`Source::open`]), so that a caller that looked
    /// at the file first loads exactly what it looked at.
    pub(crate) fn load_opened(&self, file: &Source) -> Result<Plugin, Error> {
        let source = file.path();
        file.check_size(self.max_size)?;
        // The lease before the header check: a file being written is incomplete, not "not ELF".
        let staged = {
            let _lease = file.lease()?;
            file.check(self.max_size)?;
            self.stage(file, source)?
        };
        match open_staged(source, &staged, file.identity().size) {
            Ok((info, dependencies, entry, library)) => {
                let sha256 = std::sync::OnceLock::new();
                Ok(Plugin { info, sha256, dependencies, entry, library: Some(library) })
            }
            Err(error) => {
                remove_staged(&staged);
                Err(error)
            }
        }
    }

    /// Copies `file` to a new file in the staging directory; returns its path.
    ///
    /// The name is unique within the process (a process-wide counter), and the file is created
    /// with `O_EXCL`, so a name taken by another runtime or process sharing the directory (or
    /// left over from an earlier process with the same pid) is skipped, never overwritten: an
    /// overwrite would rewrite a library that may be mapped.
    fn stage(&self, file: &Source, source: &Path) -> Result<PathBuf, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let stem = source.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
        let (staged, mut output) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let staged = self.staging.join(format!("{stem}.{}.{n}.so", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&staged) {
                Ok(output) => break (staged, output),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(file::io_error("creating a staged copy", &staged, e)),
            }
        };
        match file.copy_to(&mut output) {
            Ok(()) => Ok(staged),
            Err(error) => {
                remove_staged(&staged);
                Err(error)
            }
        }
    }
}

type Opened = (PluginInfo, Vec<Dependency>, EntryPoints, Library);

fn open_staged(source: &Path, staged: &Path, size: u64) -> Result<Opened, Error> {
    check_staged(staged, source, size)?;
    crate::budget::check_load(source)?;
    // Loading runs the library's initialisers, which can do anything: loading a file is trusting
    // it (the contract documented on `Runtime::load`).
    // SAFETY: a private staged copy that passed the ELF checks above, trusted by that contract.
    let library = unsafe { Library::open(Some(staged), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| Error::Open { path: source.to_path_buf(), source: e })?;
    match read_library(&library, source, staged) {
        Ok((info, dependencies, entry)) => Ok((info, dependencies, entry, library)),
        Err(error) => {
            // Its initialisers ran, and may have left thread-exit work pointing into it: a
            // refused library goes through the same proof as a retired one.
            let unknown = semver::Version::new(0, 0, 0);
            retained::release(library, "(refused)", &unknown, source, staged);
            Err(error)
        }
    }
}

/// Finds the entry symbol of an open library and reads its descriptor.
fn read_library(
    library: &Library,
    source: &Path,
    staged: &Path,
) -> Result<(PluginInfo, Vec<Dependency>, EntryPoints), Error> {
    // SAFETY: `EntryFn` is the type the ABI gives the entry symbol; a library that exports the
    // name with another type breaks the ABI, which loading it trusts it not to.
    let entry =
        unsafe { library.get::<EntryFn>(ENTRY_SYMBOL) }.map_err(|e| Error::MissingSymbol {
            path: source.to_path_buf(),
            symbol: "graft_plugin_entry",
            source: Some(e),
        })?;
    // SAFETY: `entry` is the plugin's entry point, which takes nothing and returns a pointer; it
    // is called while `library` is open.
    let descriptor = unsafe { entry() };
    // SAFETY: `descriptor` came from the entry point of `library`, which stays open for as long
    // as the returned references are used (they are copied into owned values).
    unsafe { descriptor::read(descriptor, source, staged) }
}

/// Checks the staged copy's dynamic linking structures; errors name the source file.
fn check_staged(staged: &Path, source: &Path, size: u64) -> Result<(), Error> {
    let file = File::open(staged).map_err(|e| file::io_error("opening", source, e))?;
    let cache = object::ReadCache::new(file);
    elf::check_dynamic(&cache).map_err(|problem| elf_error(source, size, problem))
}

pub(crate) fn remove_staged(staged: &Path) {
    match std::fs::remove_file(staged) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %staged.display(), %error, "removing a staged plugin failed")
        }
    }
}
