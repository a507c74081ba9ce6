//! Turning a file into a checked, loaded plugin: validate, stage, `dlopen`, read the descriptor.
//!
//! This is the only module that calls `libloading`. It hands out [`Plugin`], which owns the
//! library together with the function pointers taken from it, so that no pointer into the
//! library can outlive the handle that keeps it mapped.
//!
//! Order of work for [`Loader::load`]:
//! 1. refuse anything that is not a regular file;
//! 2. copy it to a unique path in the staging directory (`dlopen` hands back the library it
//!    already has for a path or inode it has seen, so a rebuilt file at the same path would give
//!    the old code back; a copy, unlike a hard link, is also safe from a later in-place write to
//!    the source file, which would rewrite code that is mapped and running);
//! 3. check the staged copy's ELF headers ([`elf`]) so that a bad file is refused before its
//!    initialisers run;
//! 4. `dlopen` it with `RTLD_NOW | RTLD_LOCAL`, look up the entry symbol, read and check the
//!    header, then the rest of the descriptor.
//!
//! Any failure removes the staged copy.

mod descriptor;
pub(crate) mod elf;
pub(crate) mod retained;

pub use descriptor::BuildProfile;

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use graft_plugin_api::abi::{CallFn, CreateFn, DestroyFn, ENTRY_SYMBOL, EntryFn, HealthFn};
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use semver::Version;

use crate::{Dependency, Error};
use elf::ElfProblem;

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
}

/// A loaded, checked plugin library.
///
/// Invariant: `entry` points into `library`; both live and die together here, and the library
/// is closed only when this value is dropped. Whoever copies a function pointer out of `entry`
/// must keep this `Plugin` (through the `Generation` that owns it) alive for as long as it may
/// call it.
#[derive(Debug)]
pub(crate) struct Plugin {
    info: PluginInfo,
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
}

impl Drop for Plugin {
    fn drop(&mut self) {
        // Never closed: a retired library stays mapped (see `crate::retire`), and its staged
        // file is removed.
        if let Some(library) = self.library.take() {
            let info = &self.info;
            retained::keep(
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
}

impl Loader {
    pub fn new(staging: PathBuf) -> Self {
        Loader { staging }
    }

    /// Stages, checks and opens the plugin at `source`.
    pub fn load(&self, source: &Path) -> Result<Plugin, Error> {
        let metadata = std::fs::metadata(source)
            .map_err(|e| io_error("reading the metadata of", source, e))?;
        if !metadata.is_file() {
            return Err(Error::NotAFile { path: source.to_path_buf() });
        }
        let staged = self.stage(source)?;
        match open_staged(source, &staged) {
            Ok(plugin) => Ok(plugin),
            Err(error) => {
                remove_staged(&staged);
                Err(error)
            }
        }
    }

    /// Copies `source` to a new file in the staging directory.
    ///
    /// The name is unique within the process (a process-wide counter), and the file is created
    /// with `O_EXCL`, so a name taken by another runtime or process sharing the directory (or
    /// left over from an earlier process with the same pid) is skipped, never overwritten: an
    /// overwrite would rewrite a library that may be mapped.
    fn stage(&self, source: &Path) -> Result<PathBuf, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let stem = source.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
        let mut input = File::open(source).map_err(|e| io_error("opening", source, e))?;
        let (staged, mut output) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let staged = self.staging.join(format!("{stem}.{}.{n}.so", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&staged) {
                Ok(file) => break (staged, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_error("creating a staged copy", &staged, e)),
            }
        };
        if let Err(e) = std::io::copy(&mut input, &mut output) {
            remove_staged(&staged);
            return Err(io_error("staging", source, e));
        }
        Ok(staged)
    }
}

fn open_staged(source: &Path, staged: &Path) -> Result<Plugin, Error> {
    check_elf(staged, source)?;
    crate::budget::check_load(source)?;
    // Loading runs the library's initialisers, which can do anything: loading a file is trusting
    // it (the contract documented on `Runtime::load`).
    // SAFETY: a private staged copy that passed the ELF checks above, trusted by that contract.
    let library = unsafe { Library::open(Some(staged), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| Error::Open { path: source.to_path_buf(), source: e })?;
    match read_library(&library, source, staged) {
        Ok((info, dependencies, entry)) => {
            Ok(Plugin { info, dependencies, entry, library: Some(library) })
        }
        Err(error) => {
            // Its initialisers ran, and may have left thread-exit work pointing into it: a
            // refused library is kept mapped like a retired one, never closed.
            let unknown = semver::Version::new(0, 0, 0);
            retained::keep(library, "(refused)", &unknown, source, staged);
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
    let entry = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL) }.map_err(|e| {
        Error::MissingSymbol { path: source.to_path_buf(), symbol: "graft_plugin_entry", source: e }
    })?;
    // SAFETY: `entry` is the plugin's entry point, which takes nothing and returns a pointer; it
    // is called while `library` is open.
    let descriptor = unsafe { entry() };
    // SAFETY: `descriptor` came from the entry point of `library`, which stays open for as long
    // as the returned references are used (they are copied into owned values).
    unsafe { descriptor::read(descriptor, source, staged) }
}

/// Checks the staged copy's ELF headers; errors name the source file the operator gave.
fn check_elf(staged: &Path, source: &Path) -> Result<(), Error> {
    let mut file = File::open(staged).map_err(|e| io_error("opening", staged, e))?;
    let size = file.metadata().map_err(|e| io_error("reading the metadata of", staged, e))?.len();
    let mut prefix = Vec::with_capacity(elf::HEADER_LEN);
    file.by_ref()
        .take(elf::HEADER_LEN as u64)
        .read_to_end(&mut prefix)
        .map_err(|e| io_error("reading", staged, e))?;
    let to_error = |problem: ElfProblem| match problem {
        ElfProblem::NotElf => Error::NotElf { path: source.to_path_buf() },
        ElfProblem::Wrong(reason) => Error::WrongElf { path: source.to_path_buf(), reason },
        ElfProblem::Truncated { needed } => {
            Error::Truncated { path: source.to_path_buf(), needed, size }
        }
    };
    let headers = elf::check_header(&prefix, size).map_err(to_error)?;
    let mut table = vec![0u8; headers.len() as usize];
    file.read_exact_at(&mut table, headers.offset).map_err(|e| io_error("reading", staged, e))?;
    elf::check_segments(&table, size).map_err(to_error)
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io { action, path: path.to_path_buf(), source }
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
