//! [`ServiceHandle`]: the cheap, cloneable way to call a service, which never goes stale.

use std::sync::Arc;

use semver::Version;

use crate::Error;
use crate::generation::GenerationId;
use crate::runtime::Slot;

/// A handle to one service, resolved by name once.
///
/// It holds the service's slot, not a generation: every call reads the generation serving at
/// that moment, so a handle taken before a swap or a rollback calls the new build after it. A
/// call that is running when a swap happens finishes in the build it started in.
///
/// Cloning is one reference-count increment.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    slot: Arc<Slot>,
}

impl ServiceHandle {
    pub(crate) fn new(slot: Arc<Slot>) -> Self {
        ServiceHandle { slot }
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.slot.name
    }

    /// Calls `method` with `input`, appending the answer to `output`.
    ///
    /// On error, `output` is left as it was, and the error names the service and the version
    /// that failed. A panic inside the plugin is caught there and comes back as
    /// [`Error::PluginPanicked`]; the service keeps serving.
    #[inline]
    pub fn call(&self, method: &str, input: &[u8], output: &mut Vec<u8>) -> Result<(), Error> {
        // The guard keeps this publication (and so its generation) alive until the call returns.
        let lease = self.slot.current.load();
        lease.call(method, input, output)
    }

    /// Calls `method` with `input` and returns the answer in a new vector.
    pub fn call_to_vec(&self, method: &str, input: &[u8]) -> Result<Vec<u8>, Error> {
        let mut output = Vec::new();
        self.call(method, input, &mut output)?;
        Ok(output)
    }

    /// The plugin version serving now.
    pub fn version(&self) -> Version {
        self.slot
            .current
            .load()
            .generation()
            .info()
            .plugin_version
            .clone()
    }

    /// The generation serving now.
    pub fn generation(&self) -> GenerationId {
        self.slot.current.load().generation().id()
    }
}
