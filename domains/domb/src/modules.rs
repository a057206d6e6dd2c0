//! The image's module table as the boot domain sees it: mapped read-only
//! in its module window, which its device tree names as its initrd
//! (docs/02-boot-and-images.md, "Hyperlaunch").
//!
//! The one idea: the kernel verified every module's SHA-256 before it
//! started domB, so the table is trusted and its digests are what domB
//! measures a payload with, without hashing tens of MiB again; domB still
//! bounds-checks the table before using any of it (a bad window is an
//! error, never a panic). The bytes are what domB reads (the system
//! description, a payload's arm64 `Image` header); copying a payload into
//! a domain is the kernel's `CopyModule`, by the index found here.

pub use tessera_ipc::image::{Module, ModuleTable, TableError};

#[cfg(test)]
use tessera_ipc::image::ModuleKind;

/// Builds a table the way `cargo xtask build` packs one, for tests.
#[cfg(test)]
pub(crate) fn build_table(modules: &[(ModuleKind, &str, &[u8])]) -> Vec<u8> {
    tessera_ipc::image::pack_table(modules, |b| crate::measure::Sha256Digest::of(b).0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Sha256Digest;

    fn sample() -> Vec<u8> {
        build_table(&[
            (ModuleKind::SystemDtb, "system.dtb", b"dtb bytes"),
            (ModuleKind::Policy, "policy", b"policy"),
            (ModuleKind::Kernel, "testguest", b"kernel image"),
            (ModuleKind::Ramdisk, "testguest", b"a ramdisk"),
        ])
    }

    #[test]
    fn modules_are_found_by_kind_and_name() {
        let bytes = sample();
        let table = ModuleTable::parse(&bytes).unwrap();
        assert_eq!(table.len(), 4);
        let kernel = table.find(ModuleKind::Kernel, "testguest").unwrap();
        assert_eq!((kernel.index, kernel.data), (2, b"kernel image".as_slice()));
        assert_eq!(
            Sha256Digest(kernel.sha256),
            Sha256Digest::of(b"kernel image")
        );
        let ramdisk = table.find(ModuleKind::Ramdisk, "testguest").unwrap();
        assert_eq!((ramdisk.index, ramdisk.data), (3, b"a ramdisk".as_slice()));
        assert_eq!(
            table.first(ModuleKind::SystemDtb).map(|m| m.data),
            Some(b"dtb bytes".as_slice())
        );
        assert_eq!(table.find(ModuleKind::Kernel, "devmodel"), None);
        assert_eq!(table.find(ModuleKind::Disk, "testguest"), None);
        assert_eq!(table.get(4), None);
    }

    #[test]
    fn a_table_running_past_its_window_is_refused() {
        let bytes = sample();
        for cut in [0, 10, 24, 24 + E, bytes.len() - 1] {
            assert_eq!(
                ModuleTable::parse(&bytes[..cut]).err(),
                Some(TableError::Truncated),
                "cut at {cut}"
            );
        }
        // Trailing bytes (the rest of the window's last page) are fine.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xAA; 100]);
        assert!(ModuleTable::parse(&longer).is_ok());
    }

    /// Bytes of one table entry.
    const E: usize = core::mem::size_of::<tessera_ipc::image::ModuleEntry>();

    #[test]
    fn chunk_digest_lists_must_lie_in_the_table_and_modules_on_64k() {
        let bytes = sample();
        let table = ModuleTable::parse(&bytes).unwrap();
        let m = table.get(1).unwrap();
        assert_eq!(m.chunk_digests.len(), m.data.len().div_ceil(0x1_0000));
        assert_eq!(m.chunk(0), Some(m.data));
        assert_eq!(m.chunk(1), None);
        assert_eq!(m.chunks_covering(0, m.data.len() as u64), Some((0, 0)));
        assert_eq!(m.chunks_covering(0, 0), None);
        assert_eq!(m.chunks_covering(1, m.data.len() as u64), None);
        // Entry 0's chunk list (at 24 + 104, after the name) moved past the table.
        let mut list_past_end = sample();
        list_past_end[24 + 104..24 + 112].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            ModuleTable::parse(&list_past_end).err(),
            Some(TableError::BadEntry(0))
        );
        // Entry 1's offset (at 24 + E + 8) moved off its 64 KiB boundary.
        let mut misaligned = sample();
        misaligned[24 + E + 8] = 0x40;
        assert_eq!(
            ModuleTable::parse(&misaligned).err(),
            Some(TableError::BadEntry(1))
        );
    }

    #[test]
    fn bad_headers_and_entries_are_refused() {
        let mut bad_magic = sample();
        bad_magic[0] ^= 1;
        assert_eq!(
            ModuleTable::parse(&bad_magic).err(),
            Some(TableError::BadMagic)
        );
        let mut bad_version = sample();
        bad_version[8] = 9;
        assert_eq!(
            ModuleTable::parse(&bad_version).err(),
            Some(TableError::BadVersion(9))
        );
        // Entry 1's size (at 24 + E + 16) made to run past the table.
        let mut past_end = sample();
        past_end[24 + E + 16..24 + E + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            ModuleTable::parse(&past_end).err(),
            Some(TableError::BadEntry(1))
        );
        // Entry 2's kind (at 24 + 2 * E) made unknown.
        let mut bad_kind = sample();
        bad_kind[24 + 2 * E] = 0x77;
        assert_eq!(
            ModuleTable::parse(&bad_kind).err(),
            Some(TableError::BadEntry(2))
        );
        for e in [
            TableError::Truncated,
            TableError::BadMagic,
            TableError::BadVersion(2),
            TableError::BadEntry(3),
        ] {
            assert!(!e.to_string().is_empty());
        }
    }
}
