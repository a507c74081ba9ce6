//! The typed interfaces the host's clients were compiled against, remembered per service, and
//! the checks of every build that would serve one of them.

use std::sync::Arc;

use super::{Shared, Slot};
use crate::loader::PluginInfo;
use crate::typed::check_client;
use crate::{Error, InterfaceInfo};

impl Shared {
    /// Checks the build `slot` runs (or will start), and its canary if one is released,
    /// against `interface`, and remembers the interface for the service. Both under the
    /// service's lock, so that no swap slips in between.
    pub(super) fn require_interface(
        &self,
        slot: &Slot,
        interface: InterfaceInfo,
    ) -> Result<(), Error> {
        let control = slot.control.lock();
        check_client(&slot.name, &interface, control.plugin.info())?;
        if let Some(canary) = &control.canary {
            check_client(&slot.name, &interface, canary.plugin.info())?;
        }
        self.remember_interface(&slot.name, interface);
        Ok(())
    }

    /// Remembers `interface` for `service` (once).
    pub(super) fn remember_interface(&self, service: &str, interface: InterfaceInfo) {
        let mut interfaces = self.interfaces.write();
        let known = interfaces.entry(service.to_owned()).or_default();
        if !known.iter().any(|k| **k == interface) {
            known.push(Arc::new(interface));
        }
    }

    /// Checks `build` against every interface remembered for `service`.
    pub(super) fn check_interfaces(&self, service: &str, build: &PluginInfo) -> Result<(), Error> {
        let interfaces = self.interfaces.read().get(service).cloned().unwrap_or_default();
        interfaces.iter().try_for_each(|interface| check_client(service, interface, build))
    }
}
