//! Opening a plugin file without ever blocking, and copying it out bounded, hashed and only
//! when no one is writing it.
//!
//! The source is opened once, `O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC` (a FIFO or a
//! device at the path would block a plain `open` for ever, or make it the controlling
//! terminal), and everything after that works on that one descriptor: `fstat` (no race between
//! a `stat` of the path and the `open`), the size limit, the ELF header check, the copy and the
//! hash. Nothing is copied before the size and the header have been checked.
//!
//! On Linux, a read lease ([`Source::lease`]) tells whether any process has the file open for
//! writing: the kernel refuses the lease with `EAGAIN` exactly then (the loader asks again
//! for about 60 ms first, since a process that forks holds its open descriptors until its
//! child's `exec`, without writing through them). While the lease is held, a
//! writer's `open` waits (for at most the copy) instead of changing the file under the copy.
//! A lease needs the caller to own the file or to hold `CAP_LEASE`; where the kernel refuses it
//! for that reason (`EACCES`, `EPERM`) or does not offer leases (`EINVAL`, `ENOLCK`), the
//! loader goes on without it, relying on the other checks: the size and times before and after
//! the copy, the bounded copy, and the deep ELF check of the staged copy.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::elf::{self, ElfProblem};
use crate::Error;

/// What identifies one state of a file: another inode renamed in, or any write, changes it,
/// even a same-size build with a copied modification time (`cp -p`, reproducible builds), whose
/// change time still moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Identity {
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub modified: (i64, i64),
    pub changed: (i64, i64),
}

impl Identity {
    pub fn of(metadata: &Metadata) -> Identity {
        Identity {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// A plugin file, opened once.
#[derive(Debug)]
pub(crate) struct Source {
    file: File,
    path: PathBuf,
    identity: Identity,
}

impl Source {
    /// Opens `path` without blocking and refuses anything that is not a regular file.
    pub fn open(path: &Path) -> Result<Source, Error> {
        // std opens with O_CLOEXEC already.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|e| io_error("opening", path, e))?;
        let metadata = file.metadata().map_err(|e| io_error("reading the metadata of", path, e))?;
        let kind = metadata.file_type();
        if !kind.is_file() {
            return Err(Error::NotAFile { path: path.to_path_buf(), kind: kind_name(&kind) });
        }
        let fd = file.as_raw_fd();
        // SAFETY: `fd` is an open descriptor owned by `file`, alive for the call; F_GETFL takes
        // no argument.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // Reads of a regular file never block anyway; clearing the flag keeps them plain.
        // SAFETY: as above; F_SETFL takes an int of flags.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(io_error("opening", path, std::io::Error::last_os_error()));
        }
        Ok(Source { file, path: path.to_path_buf(), identity: Identity::of(&metadata) })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's state when it was opened.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// Checks the size against `limit`, reading nothing.
    pub fn check_size(&self, limit: u64) -> Result<(), Error> {
        let size = self.identity.size;
        if size > limit {
            return Err(Error::TooLarge { path: self.path.clone(), size, limit });
        }
        Ok(())
    }

    /// Checks the size against `limit`, then the ELF header and loadable segments, reading only
    /// the headers from the descriptor.
    pub fn check(&self, limit: u64) -> Result<(), Error> {
        self.check_size(limit)?;
        let size = self.identity.size;
        let prefix_len = elf::HEADER_LEN.min(usize::try_from(size).unwrap_or(usize::MAX));
        let mut prefix = vec![0u8; prefix_len];
        self.file.read_exact_at(&mut prefix, 0).map_err(|e| self.io("reading", e))?;
        let headers =
            elf::check_header(&prefix, size).map_err(|p| elf_error(&self.path, size, p))?;
        let len = usize::try_from(headers.len()).unwrap_or(usize::MAX);
        let mut table = vec![0u8; len];
        self.file.read_exact_at(&mut table, headers.offset).map_err(|e| self.io("reading", e))?;
        elf::check_segments(&table, size).map_err(|p| elf_error(&self.path, size, p))
    }

    /// Takes a read lease on the file: refused with [`Error::Incomplete`] if any process has it
    /// open for writing. `None` where leases are not available (see the module docs).
    pub fn lease(&self) -> Result<Option<Lease<'_>>, Error> {
        Lease::take(self)
    }

    /// Copies the file into `output`, never more than the size it had when opened. A file that
    /// grew, shrank or changed during the copy is [`Error::Incomplete`].
    pub fn copy_to(&self, output: &mut File) -> Result<(), Error> {
        let size = self.identity.size;
        // One byte past the size tells a file that grew. `io::copy` from a `Take<&File>` to a
        // `File` copies in the kernel (`copy_file_range`), without a trip through a buffer.
        let mut input = (&self.file).take(size.saturating_add(1));
        let copied = std::io::copy(&mut input, output).map_err(|e| self.io("staging", e))?;
        if copied > size {
            return Err(self.incomplete("it grew while it was copied"));
        }
        if copied < size {
            return Err(self.incomplete("it shrank while it was copied"));
        }
        let after = self.file.metadata().map_err(|e| self.io("reading the metadata of", e))?;
        // The content's state only: a link or rename elsewhere moves the change time, not the
        // content.
        let after = Identity::of(&after);
        if (after.size, after.modified) != (self.identity.size, self.identity.modified) {
            return Err(self.incomplete("it changed while it was copied"));
        }
        Ok(())
    }

    /// The SHA-256 of the file's content, reading at most `limit` bytes: `None` for a larger
    /// file or one that cannot be read.
    pub fn hash(&self, limit: u64) -> Option<[u8; 32]> {
        if self.identity.size > limit {
            return None;
        }
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        let mut at = 0u64;
        while at < self.identity.size {
            let n = self.file.read_at(&mut buffer, at).ok()?;
            if n == 0 {
                break;
            }
            let n = n.min(usize::try_from(self.identity.size - at).unwrap_or(usize::MAX));
            hasher.update(&buffer[..n]);
            at += n as u64;
        }
        Some(hasher.finalize().into())
    }

    /// Whether the file is as it was when opened (same size, times and inode).
    pub fn unchanged(&self) -> bool {
        self.file.metadata().is_ok_and(|m| Identity::of(&m) == self.identity)
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> Error {
        io_error(action, &self.path, source)
    }

    fn incomplete(&self, reason: &str) -> Error {
        Error::Incomplete { path: self.path.clone(), reason: reason.to_owned() }
    }
}

/// A read lease on a [`Source`], released on drop.
#[derive(Debug)]
pub(crate) struct Lease<'a> {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    source: &'a Source,
}

impl<'a> Lease<'a> {
    #[cfg(target_os = "linux")]
    fn take(source: &'a Source) -> Result<Option<Lease<'a>>, Error> {
        let fd = source.file.as_raw_fd();
        // A lease break (a writer opening the file while the lease is held) signals the lease
        // holder, by default with SIGIO, whose default action ends the process. Ask for SIGURG
        // instead (ignored by default) for the instant between taking the lease and clearing
        // the owner below, after which no signal is sent at all: the writer simply waits until
        // the lease is released after the copy.
        // SAFETY: `fd` is an open descriptor owned by `source.file`; F_SETSIG takes an int.
        unsafe { libc::fcntl(fd, F_SETSIG, libc::SIGURG) };
        // A writable descriptor can be open for an instant without anyone writing: a process
        // that forks while it has the file open (to write it, a moment earlier) holds a copy
        // until its child's `exec` closes it. So a refusal is retried a few times, over about
        // 60 ms in all, before the file is called incomplete.
        let mut pause = LEASE_RETRY_FIRST;
        // SAFETY: as above; F_SETLEASE takes an int lease type, and `fd` was opened read-only.
        while unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) } < 0 {
            let error = std::io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EAGAIN) if pause <= LEASE_RETRY_LAST => {
                    std::thread::sleep(pause);
                    pause *= 2;
                    continue;
                }
                Some(libc::EAGAIN) => {
                    Err(source.incomplete("another process has it open for writing"))
                }
                // Not the owner and no CAP_LEASE, or no lease support: the other checks remain.
                Some(libc::EACCES | libc::EPERM | libc::EINVAL | libc::ENOLCK) => {
                    tracing::debug!(path = %source.path.display(), %error, "no read lease; relying on the other completeness checks");
                    Ok(None)
                }
                _ => Err(source.io("taking a read lease on", error)),
            };
        }
        // SAFETY: as above; an owner of 0 means no process is signalled.
        unsafe { libc::fcntl(fd, libc::F_SETOWN, 0) };
        Ok(Some(Lease { source }))
    }

    #[cfg(not(target_os = "linux"))]
    fn take(_source: &'a Source) -> Result<Option<Lease<'a>>, Error> {
        Ok(None)
    }
}

#[cfg(target_os = "linux")]
impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned by `self.source.file`, which outlives this borrow.
        unsafe { libc::fcntl(self.source.file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    }
}

/// The first and the last pause before a refused read lease is asked for again.
#[cfg(target_os = "linux")]
const LEASE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(1);
#[cfg(target_os = "linux")]
const LEASE_RETRY_LAST: std::time::Duration = std::time::Duration::from_millis(32);

/// `F_SETSIG` from `<fcntl.h>` (10 on every Linux architecture), which the libc crate does
/// not export.
#[cfg(target_os = "linux")]
const F_SETSIG: libc::c_int = 10;

/// Names what is at a path that is not a regular file.
fn kind_name(kind: &std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Maps an ELF problem of the file at `path` (of `size` bytes) to its error.
pub(crate) fn elf_error(path: &Path, size: u64, problem: ElfProblem) -> Error {
    let path = path.to_path_buf();
    match problem {
        ElfProblem::NotElf => Error::NotElf { path },
        ElfProblem::Wrong(reason) => Error::WrongElf { path, reason },
        ElfProblem::Truncated { needed } => Error::Truncated { path, needed, size },
        ElfProblem::Malformed(reason) => Error::MalformedElf { path, reason },
        ElfProblem::NoEntry => {
            Error::MissingSymbol { path, symbol: "graft_plugin_entry", source: None }
        }
    }
}

pub(crate) fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io { action, path: path.to_path_buf(), source }
}

/// The SHA-256 of the file at `path` (a private staged copy), in hex.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
