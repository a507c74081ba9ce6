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

/// The state directory.
#[derive(Debug)]
pub(crate) struct Store {
    archive: PathBuf,
    manifests: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let store = Store { archive: dir.join("archive"), manifests: dir.join("manifests") };
        for sub in [&store.archive, &store.manifests] {
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
        let temporary = self.manifests.join(format!(".{}.json.tmp", manifest.service));
        let text = serde_json::to_vec_pretty(manifest)
            .map_err(|e| Error::Manifest { path: path.clone(), reason: e.to_string() })?;
        {
            let mut file = File::create(&temporary).map_err(|e| io("writing", &temporary, e))?;
            file.write_all(&text).map_err(|e| io("writing", &temporary, e))?;
            fault::point(&format!("{operation}/manifest:written"));
            file.sync_all().map_err(|e| io("syncing", &temporary, e))?;
        }
        fault::point(&format!("{operation}/manifest:synced"));
        std::fs::rename(&temporary, &path).map_err(|e| io("renaming", &path, e))?;
        fault::point(&format!("{operation}/manifest:renamed"));
        File::open(&self.manifests)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io("syncing", &self.manifests, e))?;
        self.prune(manifest);
        Ok(())
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
