//! Reading a plugin's descriptor: the header first, then, once the header is checked, the rest,
//! copied into owned values before the library could be closed.
//!
//! The descriptor grows by appending optional fields (the rule in `graft_plugin_api::abi`): a
//! descriptor of any size from [`MIN_DESCRIPTOR_SIZE`] up is read by copying the bytes it has,
//! and no more than this host knows, over a zeroed `PluginDescriptor`, so a field an older
//! plugin lacks reads as "not provided" and one a newer plugin appended is ignored.

use std::fmt;
use std::mem::{MaybeUninit, offset_of};
use std::path::Path;

use graft_plugin_api::abi::{
    ABI_VERSION, BUILD_PANIC_UNWIND, BUILD_PROFILE_DEBUG, BUILD_PROFILE_OPTIMISED,
    BUILD_PROFILE_UNKNOWN, CallMethodFn, ImportStateFn, MAGIC, MIN_DESCRIPTOR_SIZE, MethodSpec,
    PluginDescriptor, PluginHeader, RawStr,
};
use semver::{Version, VersionReq};

use super::{EntryPoints, PluginInfo, StateEntryPoints};
use crate::{Dependency, Error};

/// The longest string the runtime accepts in a descriptor.
const MAX_DESCRIPTOR_STR: usize = 1024;

/// How a plugin says it was built ([`PluginInfo::build_profile`](super::PluginInfo)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildProfile {
    /// An optimised build (`debug_assertions` off, as `cargo build --release` makes).
    Optimised,
    /// A debug build (`debug_assertions` on, as a plain `cargo build` makes): usually many
    /// times slower than an optimised one, and rarely meant for serving.
    Debug,
    /// A value this host does not know, from a newer `graft-plugin-api`.
    Other(u32),
}

impl BuildProfile {
    /// The profile a descriptor declares; `None` when it does not say (a plugin built before
    /// the field existed).
    pub(crate) fn from_raw(raw: u32) -> Option<BuildProfile> {
        match raw {
            BUILD_PROFILE_UNKNOWN => None,
            BUILD_PROFILE_OPTIMISED => Some(BuildProfile::Optimised),
            BUILD_PROFILE_DEBUG => Some(BuildProfile::Debug),
            other => Some(BuildProfile::Other(other)),
        }
    }
}

impl fmt::Display for BuildProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildProfile::Optimised => f.write_str("optimised"),
            BuildProfile::Debug => f.write_str("debug (not optimised)"),
            BuildProfile::Other(raw) => write!(f, "unknown build profile {raw}"),
        }
    }
}

/// Reads and checks the descriptor: the header first, and the rest only once the header is
/// known to be graft's and of this ABI version.
///
/// # Safety
/// `raw` must be what the entry point of a library returned, and that library must stay open
/// during the call.
pub(super) unsafe fn read(
    raw: *const PluginDescriptor,
    source: &Path,
    staged: &Path,
) -> Result<(PluginInfo, Vec<Dependency>, EntryPoints), Error> {
    let invalid = |field: &'static str, reason: String| Error::InvalidDescriptor {
        path: source.to_path_buf(),
        field,
        reason,
    };
    if raw.is_null() {
        return Err(invalid("descriptor", "the entry point returned a null pointer".to_owned()));
    }
    // The header is read as a value, so its pointer must be aligned; a misaligned one is not a
    // descriptor the export macro made.
    if !raw.is_aligned() {
        return Err(invalid("descriptor", format!("misaligned pointer {raw:p}")));
    }
    // SAFETY: `raw` is non-null and aligned, and every graft descriptor starts with a
    // `PluginHeader`; only the header is read until its fields are checked.
    let header = unsafe { raw.cast::<PluginHeader>().read() };
    if header.magic != MAGIC {
        return Err(Error::BadMagic { path: source.to_path_buf(), found: header.magic });
    }
    if header.abi_version != ABI_VERSION {
        return Err(Error::AbiMismatch {
            path: source.to_path_buf(),
            expected: ABI_VERSION,
            found: header.abi_version,
        });
    }
    let size = header.descriptor_size as usize;
    if size < MIN_DESCRIPTOR_SIZE {
        return Err(Error::DescriptorTooSmall {
            path: source.to_path_buf(),
            size: header.descriptor_size,
            minimum: MIN_DESCRIPTOR_SIZE as u32,
        });
    }
    // SAFETY: the header says this is a graft descriptor of our ABI version with `size` bytes,
    // in static data of the open library (this function's contract); `copy_prefix` reads no
    // more of them than `PluginDescriptor` has.
    let descriptor = unsafe { copy_prefix(raw, size) };
    let descriptor = &descriptor;
    // SAFETY: the strings of a checked descriptor point at static data inside the library,
    // which the caller keeps open during this call; each is copied into an owned value.
    let (service, plugin_version, interface, interface_version, api_version) = unsafe {
        (
            text(descriptor.service_name, "service_name", source)?,
            version(descriptor.plugin_version, "plugin_version", source)?,
            text(descriptor.interface_name, "interface_name", source)?,
            version(descriptor.interface_version, "interface_version", source)?,
            version(descriptor.api_version, "api_version", source)?,
        )
    };
    if service.is_empty() {
        return Err(invalid("service_name", "empty".to_owned()));
    }
    if descriptor.build_flags & BUILD_PANIC_UNWIND == 0 {
        return Err(Error::PanicAbortBuild {
            path: source.to_path_buf(),
            service,
            version: plugin_version,
        });
    }
    let missing = |field: &'static str| invalid(field, "null entry point".to_owned());
    let entry = EntryPoints {
        create: descriptor.create.ok_or_else(|| missing("create"))?,
        call: descriptor.call.ok_or_else(|| missing("call"))?,
        health: descriptor.health.ok_or_else(|| missing("health"))?,
        destroy: descriptor.destroy.ok_or_else(|| missing("destroy"))?,
        state: state_entry_points(descriptor, size).map_err(|r| invalid("import_state", r))?,
        call_method: None,
    };
    // SAFETY: the descriptor is checked and the library open (this function's contract).
    let dependencies = unsafe { read_dependencies(descriptor, source) }?;
    // SAFETY: as above.
    let (call_method, methods) = unsafe { read_methods(descriptor, size, source) }?;
    let entry = EntryPoints { call_method, ..entry };
    let info = PluginInfo {
        service,
        plugin_version,
        interface,
        interface_version,
        api_version,
        build_profile: if covers(
            size,
            offset_of!(PluginDescriptor, build_profile),
            size_of::<u32>(),
        ) {
            BuildProfile::from_raw(descriptor.build_profile)
        } else {
            None
        },
        state_format: entry.state.map(|_| descriptor.state_format),
        methods,
        source: source.to_path_buf(),
        staged: staged.to_path_buf(),
    };
    Ok((info, dependencies, entry))
}

/// The state handoff entry points, if the descriptor is long enough to hold them and declares
/// both; one without the other is an invalid descriptor.
fn state_entry_points(
    descriptor: &PluginDescriptor,
    size: usize,
) -> Result<Option<StateEntryPoints>, String> {
    let end = offset_of!(PluginDescriptor, import_state) + size_of::<Option<ImportStateFn>>();
    if size < end {
        return Ok(None);
    }
    match (descriptor.export_state, descriptor.import_state) {
        (Some(export), Some(import)) => Ok(Some(StateEntryPoints { export, import })),
        (None, None) => Ok(None),
        _ => Err("declares only one of `export_state` and `import_state`".to_owned()),
    }
}

/// Whether a descriptor of `size` bytes holds all of the field at `offset` of `len` bytes: an
/// appended field is used only then, never from a size that ends inside it (which the copy below
/// would have filled half with the plugin's bytes and half with zeros).
fn covers(size: usize, offset: usize, len: usize) -> bool {
    offset.checked_add(len).is_some_and(|end| end <= size)
}

/// The descriptor at `raw`, `size` bytes long by its header, as this host's `PluginDescriptor`:
/// the first `min(size, size_of::<PluginDescriptor>())` bytes copied over a zeroed one.
///
/// Fields the plugin's descriptor does not have keep their all-zero value, which means "not
/// provided" (the invariant on `PluginDescriptor`); bytes past what this host knows are not read.
///
/// # Safety
/// `raw` must point at a descriptor of `size` readable bytes laid out as `PluginDescriptor`'s
/// prefix (what a checked header of this ABI version promises), and `size` must be at least
/// `MIN_DESCRIPTOR_SIZE`.
unsafe fn copy_prefix(raw: *const PluginDescriptor, size: usize) -> PluginDescriptor {
    let len = size.min(std::mem::size_of::<PluginDescriptor>());
    let mut descriptor = MaybeUninit::<PluginDescriptor>::zeroed();
    // SAFETY: `raw` is readable for `size >= len` bytes (the caller's contract), the destination
    // is a local of `size_of::<PluginDescriptor>() >= len` bytes, and the two cannot overlap.
    // Copying bytes has no alignment requirement.
    unsafe {
        std::ptr::copy_nonoverlapping(raw.cast::<u8>(), descriptor.as_mut_ptr().cast::<u8>(), len)
    };
    // Any initialised bit pattern is valid for the fields' types (integers, raw pointers,
    // `RawStr`s, `Option`s of function pointers), and zero is valid for every field (the
    // invariant on `PluginDescriptor`); padding need not be initialised.
    // SAFETY: each field within the first `len` bytes holds the plugin's value of this layout's
    // type (the caller's contract); each past them is zero.
    unsafe { descriptor.assume_init() }
}

/// The most dependencies a descriptor may declare.
const MAX_DEPENDENCIES: usize = 256;

/// Copies and parses a checked descriptor's dependency list.
///
/// # Safety
/// `descriptor` must be a checked descriptor of this ABI version whose library is open.
unsafe fn read_dependencies(
    descriptor: &PluginDescriptor,
    source: &Path,
) -> Result<Vec<Dependency>, Error> {
    let invalid = |reason: String| Error::InvalidDescriptor {
        path: source.to_path_buf(),
        field: "dependencies",
        reason,
    };
    let len = descriptor.dependencies_len;
    if len == 0 {
        return Ok(Vec::new());
    }
    if len > MAX_DEPENDENCIES {
        return Err(invalid(format!("{len} entries, at most {MAX_DEPENDENCIES}")));
    }
    let specs = descriptor.dependencies;
    if specs.is_null() || !specs.is_aligned() {
        return Err(invalid(format!("bad pointer {specs:p} for {len} entries")));
    }
    // SAFETY: non-null, aligned, and the plugin declares `len` specs there, in static data of the
    // open library (the caller's contract).
    let specs = unsafe { std::slice::from_raw_parts(specs, len) };
    let mut dependencies = Vec::with_capacity(len);
    for spec in specs {
        // SAFETY: the strings of a checked descriptor point at static data of the open library.
        let (service, requirement) = unsafe {
            (
                text(spec.service, "dependencies.service", source)?,
                text(spec.requirement, "dependencies.requirement", source)?,
            )
        };
        let requirement = VersionReq::parse(&requirement).map_err(|e| {
            invalid(format!("`{requirement}` (for `{service}`) is not a semver requirement: {e}"))
        })?;
        if service.is_empty() {
            return Err(invalid("a dependency with an empty name".to_owned()));
        }
        dependencies.push(Dependency { service, requirement });
    }
    Ok(dependencies)
}

/// The most methods a typed interface may describe.
const MAX_METHODS: usize = 1024;

/// The typed entry point and the method descriptions of a checked descriptor, if it is long
/// enough to hold them and declares them. The entry without descriptions (or the reverse), a
/// method whose id or fingerprint is not the hash of its name or signature, and two methods
/// with one id are invalid descriptors.
///
/// # Safety
/// `descriptor` must be a checked descriptor of this ABI version, `size` bytes long by its
/// header, whose library is open.
#[allow(clippy::type_complexity)]
unsafe fn read_methods(
    descriptor: &PluginDescriptor,
    size: usize,
    source: &Path,
) -> Result<(Option<CallMethodFn>, Option<std::sync::Arc<[crate::MethodInfo]>>), Error> {
    let invalid = |reason: String| Error::InvalidDescriptor {
        path: source.to_path_buf(),
        field: "methods",
        reason,
    };
    if !covers(size, offset_of!(PluginDescriptor, methods_len), size_of::<usize>()) {
        return Ok((None, None));
    }
    let (entry, specs, len) = (descriptor.call_method, descriptor.methods, descriptor.methods_len);
    let Some(entry) = entry else {
        if len != 0 || !specs.is_null() {
            return Err(invalid("methods described without the `call_method` entry".to_owned()));
        }
        return Ok((None, None));
    };
    if len > MAX_METHODS {
        return Err(invalid(format!("{len} entries, at most {MAX_METHODS}")));
    }
    let specs: &[MethodSpec] = if len == 0 {
        &[]
    } else {
        if specs.is_null() || !specs.is_aligned() {
            return Err(invalid(format!("bad pointer {specs:p} for {len} entries")));
        }
        // SAFETY: non-null, aligned, and the plugin declares `len` specs there, in static data
        // of the open library (the caller's contract).
        unsafe { std::slice::from_raw_parts(specs, len) }
    };
    let mut methods: Vec<crate::MethodInfo> = Vec::with_capacity(len);
    for spec in specs {
        // SAFETY: the strings of a checked descriptor point at static data of the open library.
        let (name, signature) = unsafe {
            (
                text(spec.name, "methods.name", source)?,
                text(spec.signature, "methods.signature", source)?,
            )
        };
        if name.is_empty() {
            return Err(invalid("a method with an empty name".to_owned()));
        }
        if spec.id != graft_plugin_api::typed::fnv1a_32(name.as_bytes())
            || spec.fingerprint != graft_plugin_api::typed::fnv1a_64(signature.as_bytes())
        {
            return Err(invalid(format!(
                "method `{name}`: its id or fingerprint is not the hash of its name or signature"
            )));
        }
        if let Some(other) = methods.iter().find(|m| m.id == spec.id) {
            return Err(invalid(format!("methods `{}` and `{name}` share one id", other.name)));
        }
        methods.push(crate::MethodInfo {
            name,
            id: spec.id,
            fingerprint: spec.fingerprint,
            signature,
        });
    }
    Ok((Some(entry), Some(methods.into())))
}

/// Copies a descriptor string, refusing null pointers, absurd lengths and invalid UTF-8.
///
/// # Safety
/// A non-null `raw.ptr` must point at `raw.len` bytes that are valid during the call.
unsafe fn text(raw: RawStr, field: &'static str, source: &Path) -> Result<String, Error> {
    let invalid =
        |reason: String| Error::InvalidDescriptor { path: source.to_path_buf(), field, reason };
    if raw.len > MAX_DESCRIPTOR_STR {
        return Err(invalid(format!("{} bytes long, at most {MAX_DESCRIPTOR_STR}", raw.len)));
    }
    if raw.ptr.is_null() && raw.len > 0 {
        return Err(invalid("null pointer".to_owned()));
    }
    // SAFETY: non-null (checked) and, by the caller's contract, valid for `len` bytes.
    let bytes = unsafe { raw.as_bytes() };
    std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| invalid(format!("not UTF-8: {e}")))
}

/// Copies and parses a descriptor's semver string.
///
/// # Safety
/// As for [`text`].
unsafe fn version(raw: RawStr, field: &'static str, source: &Path) -> Result<Version, Error> {
    // SAFETY: the caller's contract is `text`'s.
    let s = unsafe { text(raw, field, source) }?;
    Version::parse(&s).map_err(|e| Error::InvalidDescriptor {
        path: source.to_path_buf(),
        field,
        reason: format!("`{s}` is not a semver version: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use graft_plugin_api::abi::{BUILD_PROFILE_DEBUG, PluginHeader};

    use super::*;

    /// A descriptor with nothing but a header and `build_profile` set, as plain data.
    fn sample(size: usize) -> PluginDescriptor {
        // SAFETY: all-zero bytes are a valid `PluginDescriptor` (the invariant on the struct).
        let mut descriptor = unsafe { MaybeUninit::<PluginDescriptor>::zeroed().assume_init() };
        descriptor.header =
            PluginHeader { magic: MAGIC, abi_version: ABI_VERSION, descriptor_size: size as u32 };
        descriptor.dependencies_len = 7;
        descriptor.build_profile = BUILD_PROFILE_DEBUG;
        descriptor
    }

    #[test]
    fn a_shorter_descriptor_reads_its_missing_fields_as_zero() {
        let size = offset_of!(PluginDescriptor, build_profile);
        let plugin = sample(size);
        // SAFETY: `plugin` is a whole descriptor, so its first `size` bytes are readable.
        let copy = unsafe { copy_prefix(&plugin, size) };
        assert_eq!((copy.dependencies_len, copy.build_profile), (7, BUILD_PROFILE_UNKNOWN));
        assert_eq!(copy.header, plugin.header);
    }

    #[test]
    fn a_longer_descriptor_is_read_up_to_what_this_host_knows() {
        #[repr(C)]
        struct Newer {
            base: PluginDescriptor,
            appended: [u64; 4],
        }
        let size = std::mem::size_of::<Newer>();
        let plugin = Newer { base: sample(size), appended: [u64::MAX; 4] };
        assert_eq!(plugin.appended[0], u64::MAX);
        // SAFETY: `plugin` is `size` readable bytes that open with a descriptor.
        let copy = unsafe { copy_prefix(&plugin.base, size) };
        assert_eq!((copy.dependencies_len, copy.build_profile), (7, BUILD_PROFILE_DEBUG));
    }

    #[test]
    fn a_field_is_used_only_when_the_size_covers_all_of_it() {
        let at = offset_of!(PluginDescriptor, build_profile);
        assert!(covers(at + 4, at, 4));
        assert!(!covers(at + 3, at, 4));
        assert!(!covers(at, at, 4));
        assert!(!covers(usize::MAX, usize::MAX, 4), "no overflow");
    }
}
