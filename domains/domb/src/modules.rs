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
use crate::measure::Sha256Digest;
#[cfg(test)]
use tessera_ipc::image::{ModuleEntry, ModuleKind, TableHeader, TABLE_MAGIC, TABLE_VERSION};

/// Builds a table the way `cargo xtask build` packs one, for tests.
#[cfg(test)]
pub(crate) fn build_table(modules: &[(ModuleKind, &str, &[u8])]) -> Vec<u8> {
    use tessera_ipc::image::NAME_LEN;
    use zerocopy::IntoBytes;
    let head = core::mem::size_of::<TableHeader>() + modules.len() * size_of::<ModuleEntry>();
    let mut offset = head.next_multiple_of(64);
    let mut entries = Vec::new();
    let mut placed = Vec::new();
    for (kind, name, data) in modules {
        let mut padded = [0u8; NAME_LEN];
        padded[..name.len()].copy_from_slice(name.as_bytes());
        entries.push(ModuleEntry {
            kind: (*kind as u32).into(),
            _pad: 0.into(),
            offset: (offset as u64).into(),
            size: (data.len() as u64).into(),
            sha256: Sha256Digest::of(data).0,
            name: padded,
        });
        placed.push((offset, *data));
        offset = (offset + data.len()).next_multiple_of(64);
    }
    let header = TableHeader {
        magic: TABLE_MAGIC,
        version: TABLE_VERSION.into(),
        count: (modules.len() as u32).into(),
        total_size: (offset as u64).into(),
    };
    let mut out = vec![0u8; offset];
    out[..24].copy_from_slice(header.as_bytes());
    for (i, e) in entries.iter().enumerate() {
        let at = 24 + i * size_of::<ModuleEntry>();
        out[at..at + size_of::<ModuleEntry>()].copy_from_slice(e.as_bytes());
    }
    for (at, data) in placed {
        out[at..at + data.len()].copy_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for cut in [0, 10, 24, 24 + 104, bytes.len() - 1] {
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
        // Entry 1's size (at 24 + 104 + 16) made to run past the table.
        let mut past_end = sample();
        past_end[24 + 104 + 16..24 + 104 + 24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            ModuleTable::parse(&past_end).err(),
            Some(TableError::BadEntry(1))
        );
        // Entry 2's kind (at 24 + 2 * 104) made unknown.
        let mut bad_kind = sample();
        bad_kind[24 + 2 * 104] = 0x77;
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
