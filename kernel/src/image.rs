//! Reading the unified image's module table (layout in `tessera_ipc::image`).
//!
//! The table sits in memory the kernel was loaded with, right after its own
//! footprint. Nothing in it is trusted: every entry is bounds-checked against
//! the table, and no byte of a module is used before a SHA-256 vouches for it.
//!
//! Two kinds of check, so that boot does not hash tens of MiB before the
//! first domain runs (docs/02, "Lazy RAM"):
//! - at boot, every module's list of chunk digests against its
//!   `chunks_sha256`, and the whole of every module that is read in place
//!   (the system description, the policy, partial device trees);
//! - each 64 KiB chunk of a payload (kernels, ramdisks, disks) the first
//!   time its bytes are copied into a domain ([`VerifyModules::chunk_ok_with`]).
//!
//! The digest is FIPS 180-4 padding around a block function the caller
//! chooses, so the boot path can use the CPU's SHA-256 instructions (the
//! modules are tens of MiB) while the host tests check the padding against
//! the `sha2` crate.

#[cfg(test)]
use sha2::{Digest, Sha256};
pub use tessera_ipc::image::{Module, ModuleKind, ModuleTable, TableError};
pub use tessera_sha256::{sha256_compress_soft, sha256_with};

/// Why the image was refused at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The table itself is malformed.
    Table(TableError),
    /// Entry `n` failed its checksum.
    Corrupt(usize),
    /// Entry `n`'s list of chunk digests failed its checksum.
    CorruptChunkList(usize),
}

impl From<TableError> for ImageError {
    fn from(e: TableError) -> Self {
        Self::Table(e)
    }
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Table(e) => write!(f, "{e}"),
            Self::Corrupt(n) => write!(f, "module entry {n} fails its SHA-256 check"),
            Self::CorruptChunkList(n) => {
                write!(
                    f,
                    "module entry {n}'s chunk digests fail their SHA-256 check"
                )
            }
        }
    }
}

/// Whether the kernel or domB reads a module of `kind` where it lies (so
/// it is checked whole at boot), rather than copying it into a domain
/// (checked chunk by chunk as it is copied).
pub fn read_in_place(kind: ModuleKind) -> bool {
    matches!(
        kind,
        ModuleKind::SystemDtb | ModuleKind::Policy | ModuleKind::DeviceTree
    )
}

/// What the kernel adds to the shared table reader: the checks, and the
/// boot log's wording of a refusal.
pub trait VerifyModules<'a> {
    /// [`Self::verify_at_boot_with`] in software.
    fn verify_at_boot(&self) -> Result<(), ImageError> {
        self.verify_at_boot_with(sha256_compress_soft)
    }

    /// The boot-time checks, with `compress` as SHA-256's block function
    /// (see [`sha256_with`]): every module's chunk digest list, and every
    /// module [`read_in_place`] whole.
    fn verify_at_boot_with(
        &self,
        compress: impl FnMut(&mut [u32; 8], &[u8]),
    ) -> Result<(), ImageError>;

    /// Whether chunk `i` of `module` matches its digest (false for a chunk
    /// it does not have).
    fn chunk_ok_with(
        &self,
        module: &Module<'_>,
        i: u64,
        compress: impl FnMut(&mut [u32; 8], &[u8]),
    ) -> bool;

    /// `error` as the boot log says it, naming the module a checksum
    /// failure is about: `module entry 2 "testguest" fails its SHA-256
    /// check`.
    fn describe(&self, error: ImageError) -> DescribedError<'a>;
}

impl<'a> VerifyModules<'a> for ModuleTable<'a> {
    fn verify_at_boot_with(
        &self,
        mut compress: impl FnMut(&mut [u32; 8], &[u8]),
    ) -> Result<(), ImageError> {
        for n in 0..self.len() {
            // `parse` checked every entry, so `get` cannot fail here.
            let m = self.get(n).ok_or(TableError::BadEntry(n))?;
            if sha256_with(&mut compress, m.chunk_digests.as_flattened()) != m.chunks_sha256 {
                return Err(ImageError::CorruptChunkList(n));
            }
            if read_in_place(m.kind) && sha256_with(&mut compress, m.data) != m.sha256 {
                return Err(ImageError::Corrupt(n));
            }
        }
        Ok(())
    }

    fn chunk_ok_with(
        &self,
        module: &Module<'_>,
        i: u64,
        compress: impl FnMut(&mut [u32; 8], &[u8]),
    ) -> bool {
        let want = usize::try_from(i)
            .ok()
            .and_then(|i| module.chunk_digests.get(i));
        match (module.chunk(i), want) {
            (Some(bytes), Some(want)) => sha256_with(compress, bytes) == *want,
            _ => false,
        }
    }

    fn describe(&self, error: ImageError) -> DescribedError<'a> {
        let name = match error {
            ImageError::Corrupt(n) | ImageError::CorruptChunkList(n) => self.get(n).map(|m| m.name),
            ImageError::Table(_) => None,
        };
        DescribedError { error, name }
    }
}

/// An [`ImageError`] with the name of the module it is about, if any; see
/// [`VerifyModules::describe`].
pub struct DescribedError<'a> {
    error: ImageError,
    name: Option<&'a [u8]>,
}

impl core::fmt::Display for DescribedError<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match (self.error, self.name) {
            (ImageError::Corrupt(n), Some(name)) => {
                // The name comes from the image: printed as text only if
                // it is text.
                let name = core::str::from_utf8(name).unwrap_or("<not UTF-8>");
                write!(f, "module entry {n} {name:?} fails its SHA-256 check")
            }
            (ImageError::CorruptChunkList(n), Some(name)) => {
                let name = core::str::from_utf8(name).unwrap_or("<not UTF-8>");
                write!(
                    f,
                    "module entry {n} {name:?}: its chunk digests fail their SHA-256 check"
                )
            }
            (error, _) => write!(f, "{error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ipc::image::{ModuleEntry, ModuleKind, TableHeader};

    /// Builds a table the way xtask does, for tests.
    fn build(mods: &[(ModuleKind, &str, &[u8])]) -> Vec<u8> {
        tessera_ipc::image::pack_table(mods, |b| Sha256::digest(b).into())
    }

    #[test]
    fn finds_and_verifies_modules() {
        let img = build(&[
            (ModuleKind::SystemDtb, "system.dtb", b"dtb"),
            (ModuleKind::Kernel, "guest", b"code"),
        ]);
        let t = ModuleTable::parse(&img).unwrap();
        t.verify_at_boot().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.find(ModuleKind::Kernel, "guest").unwrap().data, b"code");
        assert_eq!(t.first(ModuleKind::SystemDtb).unwrap().name, b"system.dtb");
        assert_eq!(t.find(ModuleKind::Kernel, "other"), None);
        assert_eq!(t.find(ModuleKind::Ramdisk, "guest"), None);
        assert_eq!(t.position("guest"), Some(1));
        assert_eq!(t.position("other"), None);
        assert_eq!(t.get(1).map(|m| m.data), Some(&b"code"[..]));
        assert!(t.get(2).is_none());
    }

    #[test]
    fn the_block_function_sees_whole_blocks_only() {
        let data = [0x5au8; 200];
        let mut sizes = Vec::new();
        let digest = sha256_with(
            |state, blocks| {
                sizes.push(blocks.len());
                sha256_compress_soft(state, blocks)
            },
            &data,
        );
        assert_eq!(sizes, [192, 64], "the body in place, then one padded block");
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(data)));
    }

    #[test]
    fn refuses_a_corrupt_module_read_in_place_at_boot() {
        let mut img = build(&[(ModuleKind::Policy, "policy", b"code")]);
        let last = img.iter().rposition(|&b| b == b'e').unwrap();
        img[last] = b'E';
        let table = ModuleTable::parse(&img).unwrap();
        assert_eq!(table.verify_at_boot(), Err(ImageError::Corrupt(0)));
        assert_eq!(
            table.describe(ImageError::Corrupt(0)).to_string(),
            "module entry 0 \"policy\" fails its SHA-256 check"
        );
    }

    #[test]
    fn a_corrupt_payload_passes_boot_but_not_its_chunk_check() {
        let big: Vec<u8> = (0..0x2_8000u32).map(|i| (i * 13) as u8).collect();
        let mut img = build(&[(ModuleKind::Kernel, "guest", &big)]);
        let table = ModuleTable::parse(&img).unwrap();
        let m = table.get(0).unwrap();
        assert_eq!(m.chunk_digests.len(), 3);
        for i in 0..3 {
            assert!(
                table.chunk_ok_with(&m, i, sha256_compress_soft),
                "chunk {i}"
            );
        }
        assert!(
            !table.chunk_ok_with(&m, 3, sha256_compress_soft),
            "no such chunk"
        );
        // One byte of chunk 1 flipped: boot passes (payloads are checked
        // as they are copied), chunk 1 fails, 0 and 2 still pass.
        let at = img.len() - big.len() + 0x1_0000 + 5;
        img[at] ^= 0x40;
        let table = ModuleTable::parse(&img).unwrap();
        table.verify_at_boot().unwrap();
        let m = table.get(0).unwrap();
        assert!(table.chunk_ok_with(&m, 0, sha256_compress_soft));
        assert!(!table.chunk_ok_with(&m, 1, sha256_compress_soft));
        assert!(table.chunk_ok_with(&m, 2, sha256_compress_soft));
    }

    #[test]
    fn refuses_a_corrupt_chunk_digest_list_at_boot() {
        let mut img = build(&[
            (ModuleKind::SystemDtb, "system.dtb", b"dt"),
            (ModuleKind::Kernel, "guest", b"code"),
        ]);
        // Entry 1's list: the first byte of its one digest.
        let entry = core::mem::size_of::<TableHeader>() + core::mem::size_of::<ModuleEntry>();
        let list_at = u64::from_le_bytes(
            img[entry + core::mem::offset_of!(ModuleEntry, chunks_offset)..][..8]
                .try_into()
                .unwrap(),
        ) as usize;
        img[list_at] ^= 1;
        let table = ModuleTable::parse(&img).unwrap();
        assert_eq!(table.verify_at_boot(), Err(ImageError::CorruptChunkList(1)));
        assert_eq!(
            table.describe(ImageError::CorruptChunkList(1)).to_string(),
            "module entry 1 \"guest\": its chunk digests fail their SHA-256 check"
        );
        assert_eq!(
            ImageError::CorruptChunkList(4).to_string(),
            "module entry 4's chunk digests fail their SHA-256 check"
        );
    }

    #[test]
    fn a_failure_is_described_with_the_module_name_when_there_is_one() {
        let mut img = build(&[
            (ModuleKind::SystemDtb, "system.dtb", b"dt"),
            (ModuleKind::Kernel, "badname", b"code"),
        ]);
        // Entry 1's name, made not UTF-8.
        let name_at = core::mem::size_of::<TableHeader>()
            + core::mem::size_of::<ModuleEntry>()
            + core::mem::offset_of!(ModuleEntry, name);
        img[name_at + 3] = 0xff;
        let table = ModuleTable::parse(&img).unwrap();
        assert_eq!(
            table.describe(ImageError::Corrupt(1)).to_string(),
            "module entry 1 \"<not UTF-8>\" fails its SHA-256 check"
        );
        assert_eq!(
            table.describe(ImageError::Corrupt(0)).to_string(),
            "module entry 0 \"system.dtb\" fails its SHA-256 check"
        );
        // No such entry, or an error about no one module: as it is.
        assert_eq!(
            table.describe(ImageError::Corrupt(7)).to_string(),
            "module entry 7 fails its SHA-256 check"
        );
        assert_eq!(
            table
                .describe(ImageError::Table(TableError::BadMagic))
                .to_string(),
            "no module table (bad magic)"
        );
    }

    #[test]
    fn refuses_bad_headers_and_entries() {
        let img = build(&[(ModuleKind::Kernel, "guest", b"code")]);
        assert_eq!(
            ModuleTable::parse(&img[..10]).err(),
            Some(TableError::Truncated)
        );
        let mut bad = img.clone();
        bad[0] = b'X';
        assert_eq!(ModuleTable::parse(&bad).err(), Some(TableError::BadMagic));
        let mut bad = img.clone();
        bad[8] = 9;
        assert_eq!(
            ModuleTable::parse(&bad).err(),
            Some(TableError::BadVersion(9))
        );
        let mut bad = img.clone();
        bad[24 + 16] = 0xff; // size of entry 0 now runs past the end
        assert_eq!(
            ModuleTable::parse(&bad).err(),
            Some(TableError::BadEntry(0))
        );
        let mut bad = img.clone();
        bad[24] = 77; // unknown kind
        assert_eq!(
            ModuleTable::parse(&bad).err(),
            Some(TableError::BadEntry(0))
        );
        let mut bad = img.clone();
        bad[13] = 200; // count far beyond the bytes present
        assert_eq!(ModuleTable::parse(&bad).err(), Some(TableError::Truncated));
        assert_eq!(
            ModuleTable::parse(&img[..img.len() - 1]).err(),
            Some(TableError::Truncated)
        );
    }
}
