//! History on disk: which build of each service is current and which is committed (known good),
//! kept in the runtime's state directory so that a restarted host comes back on the committed
//! one, in the manner of Erlang's release_handler (permanent versus current).
//!
//! Layout of the state directory:
//! - `archive/<service>-<hash>.so`: the builds, named by the SHA-256 of their content, linked
//!   from the private staged copy (which nothing ever writes to) or copied where a link fails;
//! - `manifests/<service>.json`: the manifest, rewritten atomically (a temporary file, fsync,
//!   rename, fsync of the directory), so that a crash at any point leaves either the old or the
//!   new manifest, whole.
//!
//! Archived builds that neither the current nor the committed entry names are removed after
//! each manifest update. An archived build and the archive directory are synced before the
//! manifest that names it is written, so that after a power loss no manifest names a build that
//! never reached the disk. Temporary files a killed writer left (`.*.tmp` in `archive/` and
//! `manifests/`) are removed when the store is opened.
//!
//! The hash of a build is the one the loader computed while staging it (the staged copy is
//! private and never written to), so archiving does not read the build again to hash it.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::fault;

/// One build of a service, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The plugin version.
    pub version: String,
    /// The SHA-256 of the library, in hex.
    pub hash: String,
    /// The archived copy's file name, in the state directory's `archive/`.
    pub file: String,
}

/// A service's manifest: the build it runs now, and the last one committed as known good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The service.
    pub service: String,
    /// The build serving when the manifest was last written (a swap writes it; a rollback,
    /// which must not touch the disk, does not).
    pub current: ManifestEntry,
    /// The build a restarted host comes back on.
    pub committed: ManifestEntry,
}

/// A stateful service's state as the store keeps it: what an instance exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavedState {
    /// The state format version the plugin chose.
    pub format: u32,
    /// The plugin version that exported it.
    pub version: String,
    /// The state.
    pub bytes: Vec<u8>,
}

/// The first bytes of a state file (`states/<service>.state`), followed by the format (u32),
/// the exporting version's length (u32) and text, the state's length (u64) and bytes, all
/// little-endian, and the SHA-256 of everything before it.
const STATE_MAGIC: &[u8; 8] = b"graftst1";

/// The state directory.
#[derive(Debug)]
pub(crate) struct Store {
    archive: PathBuf,
    manifests: PathBuf,
    states: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let store = Store {
            archive: dir.join("archive"),
            manifests: dir.join("manifests"),
            states: dir.join("states"),
        };
        for sub in [&store.archive, &store.manifests, &store.states] {
            std::fs::create_dir_all(sub).map_err(|e| io("creating the state directory", sub, e))?;
            remove_temporaries(sub);
        }
        Ok(store)
    }

    /// The archived copy of an entry.
    pub fn archived(&self, entry: &ManifestEntry) -> PathBuf {
        self.archive.join(&entry.file)
    }

    /// Archives the staged copy of a build of `service`, whose SHA-256 (hex) is `hash`, and
    /// returns its entry. The build and the directory are on disk when this returns.
    pub fn archive(
        &self,
        service: &str,
        version: &str,
        staged: &Path,
        hash: &str,
    ) -> Result<ManifestEntry, Error> {
        let hash = hash.to_owned();
        let file = format!("{service}-{}.so", &hash[..16]);
        let target = self.archive.join(&file);
        if !target.exists() {
            let temporary = self.archive.join(format!(".{file}.{}.tmp", std::process::id()));
            let _ = std::fs::remove_file(&temporary);
            // The staged copy is private and never written to, so sharing its inode is safe.
            if std::fs::hard_link(staged, &temporary).is_err() {
                std::fs::copy(staged, &temporary).map_err(|e| io("archiving", staged, e))?;
            }
            File::open(&temporary)
                .and_then(|f| f.sync_all())
                .map_err(|e| io("syncing", &temporary, e))?;
            std::fs::rename(&temporary, &target).map_err(|e| io("archiving", &target, e))?;
            File::open(&self.archive)
                .and_then(|dir| dir.sync_all())
                .map_err(|e| io("syncing", &self.archive, e))?;
        }
        Ok(ManifestEntry { version: version.to_owned(), hash, file })
    }

    /// Every manifest in the store, sorted by service.
    pub fn manifests(&self) -> Result<Vec<Manifest>, Error> {
        let entries = std::fs::read_dir(&self.manifests)
            .map_err(|e| io("reading the manifests in", &self.manifests, e))?;
        let mut manifests = Vec::new();
        for entry in entries {
            let path =
                entry.map_err(|e| io("reading the manifests in", &self.manifests, e))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                manifests.push(read_manifest(&path)?);
            }
        }
        manifests.sort_by(|a, b| a.service.cmp(&b.service));
        Ok(manifests)
    }

    /// The manifest of `service`, if it has one.
    pub fn manifest(&self, service: &str) -> Result<Option<Manifest>, Error> {
        let path = self.manifest_path(service);
        if !path.exists() {
            return Ok(None);
        }
        read_manifest(&path).map(Some)
    }

    /// Writes `manifest` atomically, then removes the archived builds it no longer names.
    /// `operation` names the kill points (`<operation>/manifest:written`, ...).
    pub fn write(&self, manifest: &Manifest, operation: &str) -> Result<(), Error> {
        let path = self.manifest_path(&manifest.service);
        let text = serde_json::to_vec_pretty(manifest)
            .map_err(|e| Error::Manifest { path: path.clone(), reason: e.to_string() })?;
        write_atomically(&self.manifests, &path, &text, &format!("{operation}/manifest"))?;
        self.prune(manifest);
        Ok(())
    }

    /// Writes the state of `service` atomically, as the manifests are written.
    pub fn write_state(&self, service: &str, state: &SavedState) -> Result<(), Error> {
        let mut bytes = Vec::with_capacity(state.bytes.len() + 64);
        bytes.extend_from_slice(STATE_MAGIC);
        bytes.extend_from_slice(&state.format.to_le_bytes());
        bytes.extend_from_slice(&(state.version.len() as u32).to_le_bytes());
        bytes.extend_from_slice(state.version.as_bytes());
        bytes.extend_from_slice(&(state.bytes.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&state.bytes);
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&bytes);
        bytes.extend_from_slice(&digest);
        write_atomically(&self.states, &self.state_path(service), &bytes, "state")
    }

    /// The state last saved for `service`, if any. A file that is not a whole state file
    /// (truncated, altered, not one at all) is [`Error::StateFile`].
    pub fn read_state(&self, service: &str) -> Result<Option<SavedState>, Error> {
        let path = self.state_path(service);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io("reading", &path, error)),
        };
        let bad = |reason: &str| Error::StateFile {
            service: service.to_owned(),
            path: path.clone(),
            reason: reason.to_owned(),
        };
        parse_state(&bytes).map(Some).map_err(bad)
    }

    fn state_path(&self, service: &str) -> PathBuf {
        self.states.join(format!("{service}.state"))
    }

    /// Removes the archived builds of `manifest`'s service that it does not name.
    fn prune(&self, manifest: &Manifest) {
        let Ok(entries) = std::fs::read_dir(&self.archive) else { return };
        let prefix = format!("{}-", manifest.service);
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            // A name is `<service>-<16 hex digits>.so`: check the shape, so that a service
            // whose name extends this one's (`a` and `a-b`) is not mistaken for it.
            let Some(rest) = name.strip_prefix(&prefix) else { continue };
            let is_ours = rest.len() == 19 && rest.ends_with(".so");
            if is_ours && name != manifest.current.file && name != manifest.committed.file {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn manifest_path(&self, service: &str) -> PathBuf {
        self.manifests.join(format!("{service}.json"))
    }
}

/// Writes `bytes` to `path` (in `dir`) atomically: a temporary file, fsync, rename, fsync of
/// the directory; a crash at any point leaves the old file or the new one, whole. `points`
/// names the kill points (`<points>:written`, `:synced`, `:renamed`).
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8], points: &str) -> Result<(), Error> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp"));
    {
        let mut file = File::create(&temporary).map_err(|e| io("writing", &temporary, e))?;
        file.write_all(bytes).map_err(|e| io("writing", &temporary, e))?;
        fault::point(&format!("{points}:written"));
        file.sync_all().map_err(|e| io("syncing", &temporary, e))?;
    }
    fault::point(&format!("{points}:synced"));
    std::fs::rename(&temporary, path).map_err(|e| io("renaming", path, e))?;
    fault::point(&format!("{points}:renamed"));
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(|e| io("syncing", dir, e))
}

/// Parses a state file (see [`STATE_MAGIC`]), checking its digest and every length.
fn parse_state(bytes: &[u8]) -> Result<SavedState, &'static str> {
    const DIGEST: usize = 32;
    if bytes.len() < STATE_MAGIC.len() + DIGEST || !bytes.starts_with(STATE_MAGIC) {
        return Err("not a graft state file");
    }
    let (body, digest) = bytes.split_at(bytes.len() - DIGEST);
    if <sha2::Sha256 as sha2::Digest>::digest(body).as_slice() != digest {
        return Err("its checksum does not match: the file is truncated or altered");
    }
    let mut rest = &body[STATE_MAGIC.len()..];
    let mut take = |n: usize| -> Result<&[u8], &'static str> {
        if rest.len() < n {
            return Err("it ends early");
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let format = u32_at(take(4)?);
    let version_len = u32_at(take(4)?) as usize;
    let version =
        std::str::from_utf8(take(version_len)?).map_err(|_| "its version is not UTF-8")?.to_owned();
    let length: [u8; 8] = take(8)?.try_into().map_err(|_| "it ends early")?;
    let length =
        usize::try_from(u64::from_le_bytes(length)).map_err(|_| "its length is too large")?;
    let state = take(length)?.to_vec();
    if !rest.is_empty() {
        return Err("it has bytes after the state");
    }
    Ok(SavedState { format, version, bytes: state })
}

fn read_manifest(path: &Path) -> Result<Manifest, Error> {
    let mut text = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut text))
        .map_err(|e| io("reading", path, e))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::Manifest { path: path.to_path_buf(), reason: e.to_string() })
}

/// Removes the temporary files (`.<name>.tmp`) a writer killed mid-way left in `dir`. Only
/// one process uses a state directory at a time (the host that owns it).
fn remove_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::debug!(path = %entry.path().display(), "removed a leftover temporary file")
                }
                Err(error) => {
                    tracing::warn!(path = %entry.path().display(), %error, "removing a leftover temporary file failed")
                }
            }
        }
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io { action, path: path.to_path_buf(), source }
}
