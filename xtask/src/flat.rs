//! ELF → flat binary, the way `objcopy -O binary` does it: each `PT_LOAD`
//! segment's file bytes land at its physical address minus the lowest one.
//!
//! The kernel also needs its *memory* footprint (BSS and boot stacks
//! included), because the module table must start beyond it or the kernel
//! would zero its own modules. The linker script exports that end as
//! `__kernel_end`; without it we fall back to the highest `vaddr + memsz`.

use crate::error::{io, Error};
use object::elf::PT_LOAD;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ObjectSymbol};
use std::path::Path;

/// The symbol the kernel's linker script defines at the end of its footprint.
pub const KERNEL_END_SYMBOL: &str = "__kernel_end";

/// A flattened executable.
#[derive(Debug)]
pub struct FlatBinary {
    /// Segment bytes, laid out from the lowest physical address.
    pub bytes: Vec<u8>,
    /// Bytes from the load base to the end of the memory footprint; at least
    /// `bytes.len()`.
    pub footprint: u64,
}

/// Reads and flattens the ELF file at `path`.
pub fn flatten_file(path: &Path) -> Result<FlatBinary, Error> {
    let data = std::fs::read(path).map_err(io(path))?;
    flatten(&data).map_err(|reason| Error::Elf {
        path: path.to_path_buf(),
        reason,
    })
}

/// Flattens a 64-bit ELF image held in memory.
pub fn flatten(data: &[u8]) -> Result<FlatBinary, String> {
    let elf = ElfFile64::<Endianness>::parse(data).map_err(|e| e.to_string())?;
    let endian = elf.endian();
    let loads: Vec<_> = elf
        .elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD && ph.p_memsz(endian) > 0)
        .collect();
    let base_paddr = loads
        .iter()
        .map(|ph| ph.p_paddr(endian))
        .min()
        .ok_or("no PT_LOAD segments")?;
    let base_vaddr = loads
        .iter()
        .map(|ph| ph.p_vaddr(endian))
        .min()
        .ok_or("no PT_LOAD segments")?;

    let mut bytes = Vec::new();
    for ph in &loads {
        let file_bytes = ph
            .data(endian, data)
            .map_err(|()| "segment data lies outside the file")?;
        if file_bytes.is_empty() {
            continue;
        }
        let start = usize::try_from(ph.p_paddr(endian) - base_paddr).map_err(|e| e.to_string())?;
        let end = start + file_bytes.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(file_bytes);
    }

    let memory_end = match elf.symbol_by_name(KERNEL_END_SYMBOL) {
        Some(symbol) => symbol.address(),
        None => loads
            .iter()
            .map(|ph| ph.p_vaddr(endian) + ph.p_memsz(endian))
            .max()
            .unwrap_or(base_vaddr),
    };
    let footprint = memory_end
        .checked_sub(base_vaddr)
        .ok_or_else(|| {
            format!(
                "{KERNEL_END_SYMBOL} ({memory_end:#x}) lies below the image base ({base_vaddr:#x})"
            )
        })?
        .max(bytes.len() as u64);
    Ok(FlatBinary { bytes, footprint })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a minimal little-endian ELF64 with the given (paddr, vaddr,
    /// file bytes, memsz) load segments; no sections, so no symbols.
    fn elf_with_segments(segments: &[(u64, u64, &[u8], u64)]) -> Vec<u8> {
        const EHDR: usize = 64;
        const PHDR: usize = 56;
        let mut out = vec![0u8; EHDR + PHDR * segments.len()];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little-endian
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
        out[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes());
        out[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes());
        out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, (paddr, vaddr, bytes, memsz)) in segments.iter().enumerate() {
            let offset = out.len() as u64;
            out.extend_from_slice(bytes);
            let ph = &mut out[EHDR + i * PHDR..EHDR + (i + 1) * PHDR];
            ph[0..4].copy_from_slice(&PT_LOAD.0.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[16..24].copy_from_slice(&vaddr.to_le_bytes());
            ph[24..32].copy_from_slice(&paddr.to_le_bytes());
            ph[32..40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        }
        out
    }

    #[test]
    fn segments_land_at_their_physical_offsets_and_bss_counts_in_the_footprint() {
        let elf = elf_with_segments(&[
            (0x4008_0000, 0x4008_0000, b"code", 4),
            (0x4008_1000, 0x4008_1000, b"data", 0x3000),
        ]);
        let flat = flatten(&elf).unwrap();
        assert_eq!(flat.bytes.len(), 0x1004);
        assert_eq!(&flat.bytes[..4], b"code");
        assert!(flat.bytes[4..0x1000].iter().all(|&b| b == 0));
        assert_eq!(&flat.bytes[0x1000..], b"data");
        assert_eq!(flat.footprint, 0x4000);
    }

    #[test]
    fn not_an_elf_is_an_error() {
        assert!(flatten(b"definitely not an ELF file").is_err());
    }

    #[test]
    fn an_elf_without_load_segments_is_an_error() {
        let err = flatten(&elf_with_segments(&[])).unwrap_err();
        assert!(err.contains("PT_LOAD"), "{err}");
    }
}
