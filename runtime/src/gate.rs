//! The version gate: the pure rules that decide whether a build may replace the one serving.
//!
//! No I/O here, so every rule is tested directly.

use semver::{Comparator, Op, Version, VersionReq};

use crate::Error;
use crate::loader::PluginInfo;

/// The requirement a service gets when the host names none: `^` the interface version it was
/// first loaded with, so compatible (minor and patch) updates pass and breaking ones do not.
pub(crate) fn default_requirement(first: &Version) -> VersionReq {
    VersionReq {
        comparators: vec![Comparator {
            op: Op::Caret,
            major: first.major,
            minor: Some(first.minor),
            patch: Some(first.patch),
            pre: first.pre.clone(),
        }],
    }
}

/// Checks that `candidate` may be loaded as a new service under `requirement`.
pub(crate) fn check_load(candidate: &PluginInfo, requirement: &VersionReq) -> Result<(), Error> {
    check_interface_version(&candidate.service, candidate, requirement)
}

/// Checks that `candidate` may replace `current` as service `service`: the same service and
/// interface, an interface version that satisfies `requirement`, and another plugin version.
pub(crate) fn check_swap(
    service: &str,
    interface: &str,
    requirement: &VersionReq,
    current: &Version,
    candidate: &PluginInfo,
) -> Result<(), Error> {
    if candidate.service != service {
        return Err(Error::ServiceMismatch {
            expected: service.to_owned(),
            found: candidate.service.clone(),
            path: candidate.source.clone(),
        });
    }
    if candidate.interface != interface {
        return Err(Error::InterfaceMismatch {
            service: service.to_owned(),
            expected: interface.to_owned(),
            found: candidate.interface.clone(),
        });
    }
    check_interface_version(service, candidate, requirement)?;
    if candidate.plugin_version == *current {
        return Err(Error::SameVersion { service: service.to_owned(), version: current.clone() });
    }
    Ok(())
}

fn check_interface_version(
    service: &str,
    candidate: &PluginInfo,
    requirement: &VersionReq,
) -> Result<(), Error> {
    if requirement.matches(&candidate.interface_version) {
        Ok(())
    } else {
        Err(Error::IncompatibleInterface {
            service: service.to_owned(),
            required: Box::new(requirement.clone()),
            found: candidate.interface_version.clone(),
            plugin_version: candidate.plugin_version.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn build(service: &str, interface: &str, interface_version: &str, version: &str) -> PluginInfo {
        PluginInfo {
            service: service.to_owned(),
            plugin_version: Version::parse(version).unwrap(),
            interface: interface.to_owned(),
            interface_version: Version::parse(interface_version).unwrap(),
            api_version: Version::new(0, 1, 0),
            build_profile: None,
            state_format: None,
            methods: None,
            source: PathBuf::from("/plugins/x.so"),
            staged: PathBuf::from("/staging/x.so"),
        }
    }

    fn swap(candidate: &PluginInfo) -> Result<(), Error> {
        let requirement = default_requirement(&Version::new(1, 0, 0));
        check_swap("greeter", "greeter", &requirement, &Version::new(1, 0, 0), candidate)
    }

    #[test]
    fn a_compatible_minor_update_passes() {
        assert!(swap(&build("greeter", "greeter", "1.1.0", "1.1.0")).is_ok());
        assert!(swap(&build("greeter", "greeter", "1.0.7", "1.0.1")).is_ok());
    }

    #[test]
    fn a_major_interface_bump_is_refused_with_both_versions() {
        let err = swap(&build("greeter", "greeter", "2.0.0", "2.0.0")).unwrap_err();
        match err {
            Error::IncompatibleInterface { service, required, found, plugin_version } => {
                assert_eq!(service, "greeter");
                assert_eq!(required.to_string(), "^1.0.0");
                assert_eq!(found, Version::new(2, 0, 0));
                assert_eq!(plugin_version, Version::new(2, 0, 0));
            }
            other => panic!("expected IncompatibleInterface, got {other:?}"),
        }
    }

    #[test]
    fn an_older_interface_than_required_is_refused() {
        let requirement = VersionReq::parse("^1.2.0").unwrap();
        let older = build("greeter", "greeter", "1.1.0", "1.9.0");
        let err = check_swap("greeter", "greeter", &requirement, &Version::new(1, 2, 0), &older);
        assert!(matches!(err, Err(Error::IncompatibleInterface { .. })));
    }

    #[test]
    fn another_service_or_interface_is_refused() {
        assert!(matches!(
            swap(&build("clock", "greeter", "1.1.0", "1.1.0")),
            Err(Error::ServiceMismatch { .. })
        ));
        assert!(matches!(
            swap(&build("greeter", "salute", "1.1.0", "1.1.0")),
            Err(Error::InterfaceMismatch { .. })
        ));
    }

    #[test]
    fn the_version_already_serving_is_refused() {
        assert!(matches!(
            swap(&build("greeter", "greeter", "1.0.0", "1.0.0")),
            Err(Error::SameVersion { .. })
        ));
    }

    #[test]
    fn zero_major_versions_follow_cargo_caret_rules() {
        let requirement = default_requirement(&Version::new(0, 3, 1));
        assert!(requirement.matches(&Version::new(0, 3, 9)));
        assert!(!requirement.matches(&Version::new(0, 4, 0)));
    }

    #[test]
    fn loading_checks_a_host_requirement() {
        let requirement = VersionReq::parse(">=1.1, <2").unwrap();
        assert!(check_load(&build("greeter", "greeter", "1.1.0", "1.1.0"), &requirement).is_ok());
        assert!(check_load(&build("greeter", "greeter", "1.0.0", "1.0.0"), &requirement).is_err());
    }
}
