//! The check a file must pass before `dlopen` runs its initialisers: an ELF shared object for
//! this machine whose headers and loadable segments all lie inside the file.
//!
//! This catches a file that is not a library at all, one built for another machine, and one
//! that is truncated or still being written, without running any of its code. It reads a few
//! hundred bytes, not the file. It is written by hand rather than with an ELF crate because it
//! needs a dozen fixed-offset fields, and the policy (what to refuse) is the runtime's own.

/// What is wrong with a file, in the terms of the ELF format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ElfProblem {
    /// The file does not start with `\x7fELF`.
    NotElf,
    /// The file is ELF but not loadable here; the reason says why.
    Wrong(String),
    /// The file ends before `needed` bytes.
    Truncated { needed: u64 },
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
    if prefix.len() < 4 || prefix[..4] != *b"\x7fELF" {
        return Err(ElfProblem::NotElf);
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
        assert_eq!(check_header(b"", 0), Err(ElfProblem::NotElf));
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
