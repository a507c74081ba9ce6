//! Typed interfaces on the host side: the method descriptions builds declare, the interfaces
//! the host's clients were compiled against, and the per-method compatibility rules checked at
//! every load, swap and rollback.
//!
//! Two checks, both against the actual descriptions, so that a version number cannot lie:
//! - **a client's needs** ([`check_client`]): every method of the interface a host's client
//!   was compiled with must be in the build, with the same signature;
//! - **the semver rules between two builds** ([`check_bump`]): between the build serving and
//!   the one replacing it, a patch bump (or the same version) changes no method, a minor bump
//!   only adds methods, and only a major bump (a minor bump below 1.0.0) may change or remove
//!   one.

use std::sync::Arc;

use graft_plugin_api::typed::{Interface, Transport};
use semver::Version;

use crate::Error;
use crate::handle::ServiceHandle;
use crate::loader::PluginInfo;

/// One method of a typed interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MethodInfo {
    /// Its name.
    pub name: String,
    /// Its stable id (the FNV-1a hash of its name).
    pub id: u32,
    /// The FNV-1a hash of its signature.
    pub fingerprint: u64,
    /// Its signature, normalised: `fn(parameter types)->return type`.
    pub signature: String,
}

/// A typed interface as a host's client was compiled against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// The interface's name.
    pub name: String,
    /// Its version.
    pub version: Version,
    /// Its methods.
    pub methods: Vec<MethodInfo>,
}

impl InterfaceInfo {
    /// The description of interface `I` (`dyn Trait` of a trait marked
    /// `#[graft_plugin_api::interface]`).
    pub fn of<I: ?Sized + Interface>() -> Result<InterfaceInfo, Error> {
        let version = Version::parse(I::VERSION).map_err(|e| Error::InvalidInterface {
            interface: I::NAME.to_owned(),
            reason: format!("`{}` is not a semver version: {e}", I::VERSION),
        })?;
        let methods = I::METHODS
            .iter()
            .map(|m| MethodInfo {
                // SAFETY: an `Interface`'s specs point at `'static` string literals.
                name: String::from_utf8_lossy(unsafe { m.name.as_bytes() }).into_owned(),
                id: m.id,
                fingerprint: m.fingerprint,
                // SAFETY: as above.
                signature: String::from_utf8_lossy(unsafe { m.signature.as_bytes() }).into_owned(),
            })
            .collect();
        Ok(InterfaceInfo { name: I::NAME.to_owned(), version, methods })
    }
}

/// Checks that `build` serves everything a client compiled against `interface` calls: the same
/// interface, and each of its methods with the same signature.
pub(crate) fn check_client(
    service: &str,
    interface: &InterfaceInfo,
    build: &PluginInfo,
) -> Result<(), Error> {
    if build.interface != interface.name {
        return Err(Error::InterfaceMismatch {
            service: service.to_owned(),
            expected: interface.name.clone(),
            found: build.interface.clone(),
        });
    }
    let Some(methods) = &build.methods else {
        return Err(Error::UntypedBuild {
            service: service.to_owned(),
            version: build.plugin_version.clone(),
            interface: interface.name.clone(),
        });
    };
    for needed in &interface.methods {
        let found = methods.iter().find(|m| m.id == needed.id);
        if found.is_none_or(|found| found.fingerprint != needed.fingerprint) {
            return Err(method_error(
                service,
                build,
                needed,
                found,
                format!(
                    "the host's client was compiled against interface `{}` {}, which has it",
                    interface.name, interface.version
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the semver rules between the build serving (`from`) and the one replacing it (`to`),
/// when both describe their methods: whichever is the later version must relate to the earlier
/// one as its version bump allows.
pub(crate) fn check_bump(service: &str, from: &PluginInfo, to: &PluginInfo) -> Result<(), Error> {
    let (Some(_), Some(_)) = (&from.methods, &to.methods) else { return Ok(()) };
    let (earlier, later) = match from.interface_version <= to.interface_version {
        true => (from, to),
        false => (to, from),
    };
    let (old, new) = (&earlier.interface_version, &later.interface_version);
    let (Some(old_methods), Some(new_methods)) = (&earlier.methods, &later.methods) else {
        return Ok(());
    };
    let breaking = old.major != new.major || (old.major == 0 && old.minor != new.minor);
    if breaking {
        return Ok(());
    }
    let additive = old.minor != new.minor || (old.major == 0 && old.patch != new.patch);
    let bump = if additive { "a minor bump" } else { "a patch bump (or the same version)" };
    for method in old_methods.iter() {
        let found = new_methods.iter().find(|m| m.id == method.id);
        if found.is_none_or(|found| found.fingerprint != method.fingerprint) {
            let what = if found.is_some() { "changes" } else { "removes" };
            return Err(method_error(
                service,
                to,
                method,
                found,
                format!(
                    "interface {new} {what} a method of {old}, which {bump} may not: only a major \
                     bump may change or remove a method"
                ),
            ));
        }
    }
    if !additive
        && let Some(added) = new_methods.iter().find(|m| old_methods.iter().all(|o| o.id != m.id))
    {
        return Err(Error::IncompatibleMethod {
            service: service.to_owned(),
            version: Box::new(to.plugin_version.clone()),
            method: added.name.clone(),
            expected: None,
            found: Some(added.signature.as_str().into()),
            reason: format!(
                "interface {new} adds a method to {old}, which {bump} may not: adding a method \
                 needs a minor bump"
            ),
        });
    }
    Ok(())
}

fn method_error(
    service: &str,
    build: &PluginInfo,
    expected: &MethodInfo,
    found: Option<&MethodInfo>,
    reason: String,
) -> Error {
    Error::IncompatibleMethod {
        service: service.to_owned(),
        version: Box::new(build.plugin_version.clone()),
        method: expected.name.clone(),
        expected: Some(expected.signature.as_str().into()),
        found: found.map(|m| m.signature.as_str().into()),
        reason,
    }
}

/// The interfaces the host's clients of each service were compiled against: every load, swap
/// and rollback of the service is checked against each.
pub(crate) type Expected = Vec<Arc<InterfaceInfo>>;

impl Transport for ServiceHandle {
    type Error = Error;

    #[inline]
    fn call_method(
        &self,
        method: graft_plugin_api::typed::Method,
        input: &[u8],
        output: &mut Vec<u8>,
    ) -> Result<(), Error> {
        ServiceHandle::call_method(self, method, input, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn method(name: &str, signature: &str) -> MethodInfo {
        MethodInfo {
            name: name.to_owned(),
            id: graft_plugin_api::typed::fnv1a_32(name.as_bytes()),
            fingerprint: graft_plugin_api::typed::fnv1a_64(signature.as_bytes()),
            signature: signature.to_owned(),
        }
    }

    fn build(interface_version: &str, methods: &[(&str, &str)]) -> PluginInfo {
        PluginInfo {
            service: "kv".to_owned(),
            plugin_version: Version::parse(interface_version).unwrap(),
            interface: "kv".to_owned(),
            interface_version: Version::parse(interface_version).unwrap(),
            api_version: Version::new(0, 5, 0),
            build_profile: None,
            state_format: None,
            methods: Some(methods.iter().map(|(n, s)| method(n, s)).collect()),
            source: PathBuf::from("/plugins/kv.so"),
            staged: PathBuf::from("/staging/kv.so"),
        }
    }

    const GET: (&str, &str) = ("get", "fn(&str)->Option<String>");
    const PUT: (&str, &str) = ("put", "fn(&str,&str)->()");

    fn refused_method(result: Result<(), Error>) -> String {
        match result {
            Err(Error::IncompatibleMethod { method, .. }) => method,
            other => panic!("expected IncompatibleMethod, got {other:?}"),
        }
    }

    #[test]
    fn a_minor_bump_may_add_but_not_remove_or_change() {
        let old = build("1.0.0", &[GET]);
        assert!(check_bump("kv", &old, &build("1.1.0", &[GET, PUT])).is_ok());
        assert_eq!(refused_method(check_bump("kv", &old, &build("1.1.0", &[PUT]))), "get");
        let changed = build("1.1.0", &[("get", "fn(String)->Option<String>")]);
        assert_eq!(refused_method(check_bump("kv", &old, &changed)), "get");
    }

    #[test]
    fn a_patch_bump_or_the_same_version_changes_nothing() {
        let old = build("1.0.0", &[GET]);
        assert!(check_bump("kv", &old, &build("1.0.1", &[GET])).is_ok());
        assert_eq!(refused_method(check_bump("kv", &old, &build("1.0.1", &[GET, PUT]))), "put");
        assert_eq!(refused_method(check_bump("kv", &old, &build("1.0.0", &[GET, PUT]))), "put");
    }

    #[test]
    fn a_major_bump_may_change_anything() {
        let old = build("1.4.0", &[GET, PUT]);
        assert!(check_bump("kv", &old, &build("2.0.0", &[("get", "fn(u64)->()")])).is_ok());
        // Below 1.0.0 a minor bump is the breaking one, and a patch bump the additive one.
        let zero = build("0.3.0", &[GET]);
        assert!(check_bump("kv", &zero, &build("0.4.0", &[PUT])).is_ok());
        assert!(check_bump("kv", &zero, &build("0.3.1", &[GET, PUT])).is_ok());
        assert_eq!(refused_method(check_bump("kv", &zero, &build("0.3.1", &[PUT]))), "get");
    }

    #[test]
    fn a_downgrade_is_judged_as_the_bump_it_undoes() {
        // Swapping 1.1 (get, put) back to a 1.0 that has only `get` is what the bump allowed.
        let newer = build("1.1.0", &[GET, PUT]);
        assert!(check_bump("kv", &newer, &build("1.0.0", &[GET])).is_ok());
        // But a "1.0" whose `get` differs could never have been 1.1's base.
        let other = build("1.0.0", &[("get", "fn(&str)->String")]);
        assert_eq!(refused_method(check_bump("kv", &newer, &other)), "get");
    }

    #[test]
    fn an_untyped_build_is_not_judged_by_methods() {
        let mut untyped = build("1.1.0", &[]);
        untyped.methods = None;
        assert!(check_bump("kv", &build("1.0.0", &[GET]), &untyped).is_ok());
        let client = InterfaceInfo {
            name: "kv".to_owned(),
            version: Version::new(1, 0, 0),
            methods: vec![method(GET.0, GET.1)],
        };
        assert!(matches!(check_client("kv", &client, &untyped), Err(Error::UntypedBuild { .. })));
        assert!(check_client("kv", &client, &build("1.1.0", &[GET, PUT])).is_ok());
        assert_eq!(refused_method(check_client("kv", &client, &build("1.1.0", &[PUT]))), "get");
    }
}
