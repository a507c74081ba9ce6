//! The checks a file must pass before `dlopen` runs its initialisers, as pure functions over
//! bytes.
//!
//! Two levels:
//! - [`check_header`] and [`check_segments`] run on the *source* before anything is copied:
//!   an ELF shared object for this machine whose headers and loadable segments all lie inside
//!   the file. They read a few hundred bytes and are written by hand (a dozen fixed-offset
//!   fields; the policy, what to refuse, is the runtime's own).
//! - [`check_dynamic`] runs on the private *staged copy* (which nothing else can change) and
//!   walks what the dynamic loader itself will read, parsed with the `object` crate: the dynamic
//!   segment lies in the file and is terminated, the dynamic symbol and string tables it points
//!   at lie in the file, and the entry symbol is in that table, defined, a function in an
//!   executable segment. "The headers lie inside the file" is not "the file is complete": a
//!   writer that sets the final size first leaves a zero-filled tail that passes the first level
//!   and crashed `dlopen`; a zero-filled dynamic segment or symbol table fails the second.
//!
//! Neither level can tell a whole, well-formed library from a malicious one: loading a file
//! still runs its initialisers, so loading is trusting it.

use object::ReadRef;

/// What is wrong with a file, in the terms of the ELF format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ElfProblem {
    /// The file does not start with `\x7fELF`.
    NotElf,
    /// The file is ELF but not loadable here; the reason says why.
    Wrong(String),
    /// The file ends before `needed` bytes.
    Truncated { needed: u64 },
    /// The dynamic linking structures are missing or malformed; the reason says which.
    Malformed(String),
    /// The dynamic symbol table is whole but does not define the entry symbol.
    NoEntry,
}

/// The size of a 64-bit ELF file header.
pub(crate) const HEADER_LEN: usize = 64;

const PROGRAM_HEADER_LEN: u64 = 56;
const SECTION_HEADER_LEN: u64 = 64;
const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const PN_XNUM: u16 = 0xffff;

/// Where the program headers are, as read from a valid file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProgramHeaders {
    /// Their offset in the file.
    pub offset: u64,
    /// How many there are.
    pub count: u16,
}

impl ProgramHeaders {
    /// Their total length in bytes.
    pub fn len(self) -> u64 {
        u64::from(self.count) * PROGRAM_HEADER_LEN
    }
}

/// Checks the file header (`prefix` holds the file's first bytes, at most [`HEADER_LEN`]) of a
/// file of `file_size` bytes, and returns where the program headers are.
pub(crate) fn check_header(prefix: &[u8], file_size: u64) -> Result<ProgramHeaders, ElfProblem> {
    let magic = b"\x7fELF";
    let start = &prefix[..prefix.len().min(4)];
    if start != &magic[..start.len()] {
        return Err(ElfProblem::NotElf);
    }
    if prefix.len() < 4 {
        // Empty, or the start of the magic number: a file being written, not a wrong one.
        return Err(ElfProblem::Truncated { needed: HEADER_LEN as u64 });
    }
    if prefix.len() < HEADER_LEN {
        return Err(ElfProblem::Truncated { needed: HEADER_LEN as u64 });
    }
    if prefix[4] != 2 || !cfg!(target_pointer_width = "64") {
        return Err(ElfProblem::Wrong(format!(
            "ELF class {} (this host loads 64-bit objects only)",
            prefix[4]
        )));
    }
    if prefix[5] != 1 || !cfg!(target_endian = "little") {
        return Err(ElfProblem::Wrong(format!(
            "ELF data encoding {} (this host loads little-endian objects only)",
            prefix[5]
        )));
    }
    if prefix[6] != 1 {
        return Err(ElfProblem::Wrong(format!(
            "ELF identification version {}, expected 1",
            prefix[6]
        )));
    }
    let e_type = u16_at(prefix, 16);
    if e_type != ET_DYN {
        return Err(ElfProblem::Wrong(format!("ELF type {e_type}, not a shared object (3)")));
    }
    let machine = u16_at(prefix, 18);
    if machine != HOST_MACHINE {
        return Err(ElfProblem::Wrong(format!(
            "built for ELF machine {machine}, this host is {HOST_MACHINE}"
        )));
    }
    let phoff = u64_at(prefix, 32);
    let shoff = u64_at(prefix, 40);
    let phentsize = u16_at(prefix, 54);
    let phnum = u16_at(prefix, 56);
    let shentsize = u16_at(prefix, 58);
    let shnum = u16_at(prefix, 60);
    if phnum == 0 {
        return Err(ElfProblem::Wrong("no program headers".to_owned()));
    }
    if phnum == PN_XNUM {
        // The real count is then in section header 0; no linker emits that for a plugin.
        return Err(ElfProblem::Wrong(
            "extended program header count (PN_XNUM) is not supported".to_owned(),
        ));
    }
    if u64::from(phentsize) != PROGRAM_HEADER_LEN {
        return Err(ElfProblem::Wrong(format!("program header size {phentsize}, expected 56")));
    }
    if shnum != 0 && u64::from(shentsize) != SECTION_HEADER_LEN {
        return Err(ElfProblem::Wrong(format!("section header size {shentsize}, expected 64")));
    }
    let headers = ProgramHeaders { offset: phoff, count: phnum };
    within(file_size, phoff, headers.len())?;
    within(file_size, shoff, u64::from(shnum) * SECTION_HEADER_LEN)?;
    Ok(headers)
}

/// Checks that every loadable segment described by `table` (the program headers) lies inside a
/// file of `file_size` bytes.
pub(crate) fn check_segments(table: &[u8], file_size: u64) -> Result<(), ElfProblem> {
    for entry in table.chunks_exact(PROGRAM_HEADER_LEN as usize) {
        if u32_at(entry, 0) == PT_LOAD {
            within(file_size, u64_at(entry, 8), u64_at(entry, 32))?;
        }
    }
    Ok(())
}

/// Checks what `dlopen` will read of the library in `data` (see the module docs): the dynamic
/// segment, the dynamic symbol and string tables, and the entry symbol [`ENTRY_NAME`].
pub(crate) fn check_dynamic<'data, R: ReadRef<'data>>(data: R) -> Result<(), ElfProblem> {
    use object::elf::{self as e, FileHeader64};
    use object::read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _, Sym as _};
    type Header = FileHeader64<object::Endianness>;

    let size = data.len().map_err(|()| malformed("the file's size cannot be read"))?;
    let header = Header::parse(data).map_err(|error| malformed(format!("file header: {error}")))?;
    let endian = header.endian().map_err(|error| malformed(format!("file header: {error}")))?;
    let segments = header
        .program_headers(endian, data)
        .map_err(|error| malformed(format!("program headers: {error}")))?;
    let loads: Vec<Load> = segments
        .iter()
        .filter(|p| p.p_type(endian) == e::PT_LOAD)
        .map(|p| Load {
            vaddr: p.p_vaddr(endian),
            offset: p.p_offset(endian),
            len: p.p_filesz(endian),
            executable: p.p_flags(endian) & e::PF_X != 0,
        })
        .collect();
    for load in &loads {
        within(size, load.offset, load.len)?;
    }
    let mut dynamic = segments.iter().filter(|p| p.p_type(endian) == e::PT_DYNAMIC);
    let (Some(segment), None) = (dynamic.next(), dynamic.next()) else {
        return Err(malformed("not exactly one dynamic segment (PT_DYNAMIC)"));
    };
    within(size, segment.p_offset(endian), segment.p_filesz(endian))?;
    let entries = segment
        .dynamic(endian, data)
        .map_err(|error| malformed(format!("dynamic segment: {error}")))?
        .unwrap_or_default();

    let (mut symtab, mut strtab, mut strsz, mut syment, mut hash, mut gnu_hash) =
        (None, None, None, None, None, None);
    let mut terminated = false;
    for entry in entries {
        let value = entry.d_val(endian);
        match u32::try_from(entry.d_tag(endian)).unwrap_or(u32::MAX) {
            e::DT_NULL => {
                terminated = true;
                break;
            }
            e::DT_SYMTAB => symtab = Some(value),
            e::DT_STRTAB => strtab = Some(value),
            e::DT_STRSZ => strsz = Some(value),
            e::DT_SYMENT => syment = Some(value),
            e::DT_HASH => hash = Some(value),
            e::DT_GNU_HASH => gnu_hash = Some(value),
            _ => {}
        }
    }
    if !terminated {
        return Err(malformed("the dynamic segment is not terminated by DT_NULL"));
    }
    let missing = |tag: &str| {
        malformed(format!("the dynamic segment has no {tag} (zero-filled or cut short?)"))
    };
    let symtab = symtab.ok_or_else(|| missing("DT_SYMTAB"))?;
    let strtab = strtab.ok_or_else(|| missing("DT_STRTAB"))?;
    let strsz = strsz.ok_or_else(|| missing("DT_STRSZ"))?;
    let symbol_size = std::mem::size_of::<e::Sym64<object::Endianness>>() as u64;
    if syment != Some(symbol_size) {
        return Err(malformed(format!("DT_SYMENT is {syment:?}, expected {symbol_size}")));
    }
    let symtab_at = file_offset(&loads, symtab, "DT_SYMTAB")?;
    let strtab_at = file_offset(&loads, strtab, "DT_STRTAB")?;
    within(size, strtab_at, strsz)?;

    // The symbol count is not in the dynamic segment: the dynamic loader learns it from the
    // hash table, and so does this check.
    let count = match (gnu_hash, hash) {
        (Some(address), _) => {
            let table = segment_rest(data, &loads, address, "DT_GNU_HASH")?;
            object::read::elf::GnuHashTable::<Header>::parse(endian, table)
                .map_err(|error| malformed(format!("GNU hash table: {error}")))?
                .symbol_table_length(endian)
                .ok_or_else(|| malformed("the GNU hash table is empty or invalid"))?
        }
        (None, Some(address)) => {
            let table = segment_rest(data, &loads, address, "DT_HASH")?;
            object::read::elf::HashTable::<Header>::parse(endian, table)
                .map_err(|error| malformed(format!("hash table: {error}")))?
                .symbol_table_length()
        }
        (None, None) => return Err(missing("hash table (DT_HASH or DT_GNU_HASH)")),
    };
    within(size, symtab_at, u64::from(count) * symbol_size)?;
    let symbols: &[e::Sym64<object::Endianness>] = data
        .read_slice_at(symtab_at, count as usize)
        .map_err(|()| malformed("the dynamic symbol table lies outside the file"))?;
    // Read once: through a `ReadCache`, looking each name up in the file costs a read apiece.
    let strings = data
        .read_bytes_at(strtab_at, strsz)
        .map_err(|()| malformed("the dynamic string table lies outside the file"))?;
    let strings = object::StringTable::new(strings, 0, strsz);
    let entry = symbols
        .iter()
        .find(|symbol| symbol.name(endian, strings).is_ok_and(|name| name == ENTRY_NAME))
        .ok_or(ElfProblem::NoEntry)?;
    if entry.st_shndx(endian) == e::SHN_UNDEF || entry.st_type() != e::STT_FUNC {
        return Err(malformed(format!(
            "`{}` is not a defined function",
            String::from_utf8_lossy(ENTRY_NAME)
        )));
    }
    let value = entry.st_value(endian);
    if !loads.iter().any(|l| l.executable && l.contains(value)) {
        return Err(malformed(format!(
            "`{}` does not point into an executable segment",
            String::from_utf8_lossy(ENTRY_NAME)
        )));
    }
    Ok(())
}

/// The entry symbol's name, without the terminating NUL the ABI constant carries.
pub(crate) const ENTRY_NAME: &[u8] = b"graft_plugin_entry";

/// A loadable segment: where its file bytes are mapped.
struct Load {
    vaddr: u64,
    offset: u64,
    len: u64,
    executable: bool,
}

impl Load {
    fn contains(&self, address: u64) -> bool {
        address >= self.vaddr && address - self.vaddr < self.len
    }
}

/// The file offset of the virtual `address`, which must lie in a loadable segment's file bytes.
fn file_offset(loads: &[Load], address: u64, what: &str) -> Result<u64, ElfProblem> {
    loads
        .iter()
        .find(|l| l.contains(address))
        .map(|l| l.offset + (address - l.vaddr))
        .ok_or_else(|| malformed(format!("{what} ({address:#x}) is not in a loaded segment")))
}

/// The bytes from `address` to the end of the loadable segment that holds it.
fn segment_rest<'data, R: ReadRef<'data>>(
    data: R,
    loads: &[Load],
    address: u64,
    what: &str,
) -> Result<&'data [u8], ElfProblem> {
    let load = loads
        .iter()
        .find(|l| l.contains(address))
        .ok_or_else(|| malformed(format!("{what} ({address:#x}) is not in a loaded segment")))?;
    let at = load.offset + (address - load.vaddr);
    let len = load.len - (address - load.vaddr);
    data.read_bytes_at(at, len).map_err(|()| malformed(format!("{what} lies outside the file")))
}

fn malformed(reason: impl Into<String>) -> ElfProblem {
    ElfProblem::Malformed(reason.into())
}

#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: u16 = 62;
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: u16 = 183;
#[cfg(target_arch = "riscv64")]
const HOST_MACHINE: u16 = 243;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")))]
compile_error!("graft-runtime knows the ELF machine number of x86_64, aarch64 and riscv64 only");

fn within(file_size: u64, offset: u64, len: u64) -> Result<(), ElfProblem> {
    match offset.checked_add(len) {
        Some(end) if end <= file_size => Ok(()),
        Some(end) => Err(ElfProblem::Truncated { needed: end }),
        None => Err(ElfProblem::Wrong(format!("a header points past 2^64 (offset {offset})"))),
    }
}

// The callers pass slices at least `HEADER_LEN` (or one program header) long, and every offset
// below is a constant that fits; `get` keeps a wrong constant from panicking anyway.
fn u16_at(bytes: &[u8], at: usize) -> u16 {
    bytes.get(at..at + 2).and_then(|b| b.try_into().ok()).map_or(0, u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid header: one program header right after it, no sections.
    fn header() -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[16..18].copy_from_slice(&ET_DYN.to_le_bytes());
        h[18..20].copy_from_slice(&HOST_MACHINE.to_le_bytes());
        h[32..40].copy_from_slice(&64u64.to_le_bytes());
        h[54..56].copy_from_slice(&56u16.to_le_bytes());
        h[56..58].copy_from_slice(&1u16.to_le_bytes());
        h[58..60].copy_from_slice(&64u16.to_le_bytes());
        h
    }

    #[test]
    fn accepts_a_header_whose_tables_fit() {
        let headers = check_header(&header(), 120).unwrap();
        assert_eq!(headers, ProgramHeaders { offset: 64, count: 1 });
    }

    #[test]
    fn refuses_text_as_not_elf() {
        assert_eq!(check_header(b"#!/bin/sh\n", 10), Err(ElfProblem::NotElf));
        assert_eq!(check_header(b"#", 1), Err(ElfProblem::NotElf));
    }

    /// Regression: a just-created empty file was refused as "not ELF" by the watcher, before
    /// its writer had written anything.
    #[test]
    fn an_empty_or_barely_started_file_is_truncated_not_wrong() {
        let truncated = Err(ElfProblem::Truncated { needed: HEADER_LEN as u64 });
        assert_eq!(check_header(b"", 0), truncated);
        assert_eq!(check_header(b"\x7fE", 2), truncated);
    }

    #[test]
    fn a_short_header_is_truncated() {
        assert_eq!(check_header(&header()[..20], 20), Err(ElfProblem::Truncated { needed: 64 }));
    }

    #[test]
    fn program_headers_past_the_end_are_truncated() {
        assert_eq!(check_header(&header(), 100), Err(ElfProblem::Truncated { needed: 120 }));
    }

    #[test]
    fn section_headers_past_the_end_are_truncated() {
        let mut h = header();
        h[40..48].copy_from_slice(&1000u64.to_le_bytes());
        h[60..62].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(check_header(&h, 1100), Err(ElfProblem::Truncated { needed: 1128 }));
    }

    #[test]
    fn executables_and_foreign_machines_are_wrong() {
        let mut exec = header();
        exec[16..18].copy_from_slice(&2u16.to_le_bytes());
        assert!(matches!(check_header(&exec, 1000), Err(ElfProblem::Wrong(_))));
        let mut foreign = header();
        foreign[18..20].copy_from_slice(&(HOST_MACHINE + 1).to_le_bytes());
        assert!(matches!(check_header(&foreign, 1000), Err(ElfProblem::Wrong(_))));
        let mut thirty_two = header();
        thirty_two[4] = 1;
        assert!(matches!(check_header(&thirty_two, 1000), Err(ElfProblem::Wrong(_))));
    }

    #[test]
    fn offsets_that_overflow_are_wrong_not_a_panic() {
        let mut h = header();
        h[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(check_header(&h, 1000), Err(ElfProblem::Wrong(_))));
    }

    fn build(fixture: graft_tests::Fixture) -> Vec<u8> {
        std::fs::read(graft_tests::path(fixture).unwrap()).unwrap()
    }

    /// The file offset and length of the dynamic segment of `bytes`.
    fn dynamic_segment(bytes: &[u8]) -> (usize, usize) {
        let phoff = u64_at(bytes, 32) as usize;
        let count = usize::from(u16_at(bytes, 56));
        (0..count)
            .map(|i| &bytes[phoff + i * 56..phoff + (i + 1) * 56])
            .find(|p| u32_at(p, 0) == 2)
            .map(|p| (u64_at(p, 8) as usize, u64_at(p, 32) as usize))
            .unwrap()
    }

    #[test]
    fn a_whole_plugin_passes_the_deep_check() {
        assert_eq!(check_dynamic(build(graft_tests::Fixture::Greeter1_0).as_slice()), Ok(()));
    }

    #[test]
    fn a_library_without_the_entry_symbol_has_no_entry() {
        let bytes = build(graft_tests::Fixture::NoEntry);
        assert_eq!(check_dynamic(bytes.as_slice()), Err(ElfProblem::NoEntry));
    }

    #[test]
    fn a_zero_filled_dynamic_segment_is_malformed() {
        let mut bytes = build(graft_tests::Fixture::Greeter1_0);
        let (offset, len) = dynamic_segment(&bytes);
        bytes[offset..offset + len].fill(0);
        assert!(matches!(check_dynamic(bytes.as_slice()), Err(ElfProblem::Malformed(_))));
    }

    #[test]
    fn a_cut_file_is_refused_not_a_panic() {
        let bytes = build(graft_tests::Fixture::Greeter1_0);
        // Cut inside the loaded part (a cut in the section headers only is the first level's).
        let (dynamic, _) = dynamic_segment(&bytes);
        for len in [0, 4, 64, 200, bytes.len() / 4, dynamic] {
            assert!(check_dynamic(&bytes[..len]).is_err(), "cut at {len}");
        }
    }

    /// Zeroed or scrambled windows anywhere in a real build: the check answers, never panics.
    #[test]
    fn damaged_builds_never_panic_the_deep_check() {
        let whole = build(graft_tests::Fixture::Greeter1_1);
        let mut rng = crate::test_rng::Rng(7);
        for _ in 0..300 {
            let mut bytes = whole.clone();
            let at = rng.index(bytes.len());
            let len = rng.index(4096).min(bytes.len() - at);
            let fill = if rng.chance(50) { 0 } else { rng.next() as u8 };
            bytes[at..at + len].fill(fill);
            let _ = check_dynamic(bytes.as_slice());
        }
        assert!(check_dynamic(&[0u8; 64][..]).is_err());
    }

    #[test]
    fn a_load_segment_past_the_end_is_truncated() {
        let mut entry = vec![0u8; 56];
        entry[..4].copy_from_slice(&PT_LOAD.to_le_bytes());
        entry[8..16].copy_from_slice(&4096u64.to_le_bytes());
        entry[32..40].copy_from_slice(&100u64.to_le_bytes());
        assert_eq!(check_segments(&entry, 4196), Ok(()));
        assert_eq!(check_segments(&entry, 4195), Err(ElfProblem::Truncated { needed: 4196 }));
        // Segments that are not PT_LOAD are not mapped from the file and are not checked.
        entry[..4].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(check_segments(&entry, 10), Ok(()));
    }
}
