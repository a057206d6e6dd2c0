//! Reading the unified image's module table (layout in `tessera_ipc::image`).
//!
//! The table sits in memory the kernel was loaded with, right after its own
//! footprint. Nothing in it is trusted: every entry is bounds-checked against
//! the table, and a module's SHA-256 is verified before the kernel uses it.
//!
//! The digest is FIPS 180-4 padding around a block function the caller
//! chooses, so the boot path can use the CPU's SHA-256 instructions (the
//! modules are tens of MiB) while the host tests check the padding against
//! the `sha2` crate.

use sha2::digest::generic_array::GenericArray;
#[cfg(test)]
use sha2::{Digest, Sha256};
use tessera_ipc::image::{ModuleEntry, ModuleKind, TableHeader, TABLE_MAGIC, TABLE_VERSION};
use zerocopy::FromBytes;

/// Why the module table or a module was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Fewer bytes than a header.
    Truncated,
    /// The magic is not `TSRAMODS`.
    BadMagic,
    /// A table version this kernel does not understand.
    BadVersion(u32),
    /// Entry `n` points outside the table or has an unknown kind.
    BadEntry(usize),
    /// Entry `n` failed its checksum.
    Corrupt(usize),
    /// No module with the requested name.
    Missing,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => write!(f, "module table truncated"),
            Self::BadMagic => write!(f, "no module table (bad magic)"),
            Self::BadVersion(v) => write!(f, "module table version {v} not supported"),
            Self::BadEntry(n) => write!(f, "module entry {n} is out of bounds or of unknown kind"),
            Self::Corrupt(n) => write!(f, "module entry {n} fails its SHA-256 check"),
            Self::Missing => write!(f, "module not found"),
        }
    }
}

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_INIT: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// SHA-256's block function in software (the `sha2` crate's): folds every
/// whole 64-byte block of `blocks` into `state`.
pub fn sha256_compress_soft(state: &mut [u32; 8], blocks: &[u8]) {
    for block in blocks.chunks_exact(64) {
        sha2::compress256(
            state,
            core::slice::from_ref(GenericArray::from_slice(block)),
        );
    }
}

/// SHA-256 of `data`, with `compress` folding whole 64-byte blocks (it is
/// only ever given a multiple of 64 bytes, never zero). The bulk of `data`
/// goes to `compress` in place; only the padded tail is copied.
pub fn sha256_with(mut compress: impl FnMut(&mut [u32; 8], &[u8]), data: &[u8]) -> [u8; 32] {
    let mut state = SHA256_INIT;
    let whole = data.len() - data.len() % 64;
    let (body, rest) = data.split_at(whole);
    if !body.is_empty() {
        compress(&mut state, body);
    }
    // The tail, 0x80, zeros, and the length in bits (big-endian) in the
    // last 8 bytes: one block, or two when the tail leaves no room.
    let mut tail = [0u8; 128];
    let used = if rest.len() < 56 { 64 } else { 128 };
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let bits = (data.len() as u64).wrapping_mul(8);
    tail[used - 8..used].copy_from_slice(&bits.to_be_bytes());
    compress(&mut state, &tail[..used]);
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// A validated module: its kind, name and bytes.
#[derive(Clone, Copy, Debug)]
pub struct Module<'a> {
    pub kind: ModuleKind,
    pub name: &'a [u8],
    pub data: &'a [u8],
}

/// A module table whose header and entry bounds have been checked.
#[derive(Clone, Copy)]
pub struct ModuleTable<'a> {
    bytes: &'a [u8],
    entries: &'a [ModuleEntry],
}

impl<'a> ModuleTable<'a> {
    /// Parse and bounds-check the table at the start of `bytes` (which may
    /// extend past the table's end). Checksums are verified by [`Self::verify_all`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ImageError> {
        let (header, rest) =
            TableHeader::read_from_prefix(bytes).map_err(|_| ImageError::Truncated)?;
        if header.magic != TABLE_MAGIC {
            return Err(ImageError::BadMagic);
        }
        if header.version.get() != TABLE_VERSION {
            return Err(ImageError::BadVersion(header.version.get()));
        }
        let total = usize::try_from(header.total_size.get()).map_err(|_| ImageError::Truncated)?;
        let bytes = bytes.get(..total).ok_or(ImageError::Truncated)?;
        let count = header.count.get() as usize;
        let (entries, _) = <[ModuleEntry]>::ref_from_prefix_with_elems(rest, count)
            .map_err(|_| ImageError::Truncated)?;
        for (n, e) in entries.iter().enumerate() {
            let start = usize::try_from(e.offset.get()).map_err(|_| ImageError::BadEntry(n))?;
            let len = usize::try_from(e.size.get()).map_err(|_| ImageError::BadEntry(n))?;
            let end = start.checked_add(len).ok_or(ImageError::BadEntry(n))?;
            if end > bytes.len() || ModuleKind::try_from(u64::from(e.kind.get())).is_err() {
                return Err(ImageError::BadEntry(n));
            }
        }
        Ok(Self { bytes, entries })
    }

    /// Number of modules.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The whole table's size in bytes, modules included.
    pub fn total_size(&self) -> usize {
        self.bytes.len()
    }

    /// Module `n`, if the table has that many.
    pub fn get(&self, n: usize) -> Option<Module<'a>> {
        self.module(n)
    }

    /// The index of the first module named `name`, of any kind.
    pub fn position(&self, name: &str) -> Option<usize> {
        (0..self.entries.len()).find(|&n| self.module(n).is_some_and(|m| m.name == name.as_bytes()))
    }

    fn module(&self, n: usize) -> Option<Module<'a>> {
        let e = self.entries.get(n)?;
        let start = usize::try_from(e.offset.get()).ok()?;
        let len = usize::try_from(e.size.get()).ok()?;
        let data = self.bytes.get(start..start.checked_add(len)?)?;
        let kind = ModuleKind::try_from(u64::from(e.kind.get())).ok()?;
        Some(Module {
            kind,
            name: e.name_bytes(),
            data,
        })
    }

    /// Verify every module's SHA-256. Done once at boot, before any module is used.
    pub fn verify_all(&self) -> Result<(), ImageError> {
        self.verify_all_with(sha256_compress_soft)
    }

    /// [`Self::verify_all`] with `compress` as SHA-256's block function
    /// (see [`sha256_with`]).
    pub fn verify_all_with(
        &self,
        mut compress: impl FnMut(&mut [u32; 8], &[u8]),
    ) -> Result<(), ImageError> {
        for (n, e) in self.entries.iter().enumerate() {
            let m = self.module(n).ok_or(ImageError::BadEntry(n))?;
            if sha256_with(&mut compress, m.data) != e.sha256 {
                return Err(ImageError::Corrupt(n));
            }
        }
        Ok(())
    }

    /// The first module of `kind` named `name`.
    pub fn find(&self, kind: ModuleKind, name: &str) -> Result<Module<'a>, ImageError> {
        (0..self.entries.len())
            .filter_map(|n| self.module(n))
            .find(|m| m.kind == kind && m.name == name.as_bytes())
            .ok_or(ImageError::Missing)
    }

    /// The first module of `kind`, whatever its name.
    pub fn first(&self, kind: ModuleKind) -> Result<Module<'a>, ImageError> {
        (0..self.entries.len())
            .filter_map(|n| self.module(n))
            .find(|m| m.kind == kind)
            .ok_or(ImageError::Missing)
    }

    /// `error` as the boot log says it, naming the module a checksum
    /// failure is about (its name is in the entry, which was bounds-checked
    /// when the table was parsed): `module entry 2 "testguest" fails its
    /// SHA-256 check`.
    pub fn describe(&self, error: ImageError) -> DescribedError<'a> {
        let name = match error {
            ImageError::Corrupt(n) => self.entries.get(n).map(ModuleEntry::name_bytes),
            _ => None,
        };
        DescribedError { error, name }
    }
}

/// An [`ImageError`] with the name of the module it is about, if any; see
/// [`ModuleTable::describe`].
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
            (error, _) => write!(f, "{error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ipc::image::NAME_LEN;
    use zerocopy::IntoBytes;

    /// Builds a table the way xtask does, for tests.
    fn build(mods: &[(ModuleKind, &str, &[u8])]) -> Vec<u8> {
        let hdr_len =
            core::mem::size_of::<TableHeader>() + mods.len() * core::mem::size_of::<ModuleEntry>();
        let mut offset = hdr_len.next_multiple_of(16);
        let mut entries = Vec::new();
        let mut body = Vec::new();
        for (kind, name, data) in mods {
            let mut n = [0u8; NAME_LEN];
            n[..name.len()].copy_from_slice(name.as_bytes());
            let sha: [u8; 32] = Sha256::digest(data).into();
            entries.push(ModuleEntry {
                kind: (*kind as u32).into(),
                _pad: 0.into(),
                offset: (offset as u64).into(),
                size: (data.len() as u64).into(),
                sha256: sha,
                name: n,
            });
            body.push((offset, *data));
            offset = (offset + data.len()).next_multiple_of(16);
        }
        let header = TableHeader {
            magic: TABLE_MAGIC,
            version: TABLE_VERSION.into(),
            count: (mods.len() as u32).into(),
            total_size: (offset as u64).into(),
        };
        let mut out = vec![0u8; offset];
        out[..24].copy_from_slice(header.as_bytes());
        for (i, e) in entries.iter().enumerate() {
            let at = 24 + i * 104;
            out[at..at + 104].copy_from_slice(e.as_bytes());
        }
        for (at, data) in body {
            out[at..at + data.len()].copy_from_slice(data);
        }
        out
    }

    #[test]
    fn finds_and_verifies_modules() {
        let img = build(&[
            (ModuleKind::SystemDtb, "system.dtb", b"dtb"),
            (ModuleKind::Kernel, "guest", b"code"),
        ]);
        let t = ModuleTable::parse(&img).unwrap();
        t.verify_all().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.find(ModuleKind::Kernel, "guest").unwrap().data, b"code");
        assert_eq!(t.first(ModuleKind::SystemDtb).unwrap().name, b"system.dtb");
        assert_eq!(
            t.find(ModuleKind::Kernel, "other").unwrap_err(),
            ImageError::Missing
        );
        assert_eq!(
            t.find(ModuleKind::Ramdisk, "guest").unwrap_err(),
            ImageError::Missing
        );
        assert_eq!(t.position("guest"), Some(1));
        assert_eq!(t.position("other"), None);
        assert_eq!(t.get(1).map(|m| m.data), Some(&b"code"[..]));
        assert!(t.get(2).is_none());
    }

    #[test]
    fn padding_matches_the_sha2_crate_at_every_boundary() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 300] {
            let want: [u8; 32] = Sha256::digest(&data[..len]).into();
            assert_eq!(
                sha256_with(sha256_compress_soft, &data[..len]),
                want,
                "length {len}"
            );
        }
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
    fn refuses_corrupt_module() {
        let mut img = build(&[(ModuleKind::Kernel, "guest", b"code")]);
        let last = img.iter().rposition(|&b| b == b'e').unwrap();
        img[last] = b'E';
        let table = ModuleTable::parse(&img).unwrap();
        assert_eq!(table.verify_all(), Err(ImageError::Corrupt(0)));
        assert_eq!(
            table.describe(ImageError::Corrupt(0)).to_string(),
            "module entry 0 \"guest\" fails its SHA-256 check"
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
            table.describe(ImageError::BadMagic).to_string(),
            "no module table (bad magic)"
        );
    }

    #[test]
    fn refuses_bad_headers_and_entries() {
        let img = build(&[(ModuleKind::Kernel, "guest", b"code")]);
        assert_eq!(
            ModuleTable::parse(&img[..10]).err(),
            Some(ImageError::Truncated)
        );
        let mut bad = img.clone();
        bad[0] = b'X';
        assert_eq!(ModuleTable::parse(&bad).err(), Some(ImageError::BadMagic));
        let mut bad = img.clone();
        bad[8] = 9;
        assert_eq!(
            ModuleTable::parse(&bad).err(),
            Some(ImageError::BadVersion(9))
        );
        let mut bad = img.clone();
        bad[24 + 16] = 0xff; // size of entry 0 now runs past the end
        assert_eq!(
            ModuleTable::parse(&bad).err(),
            Some(ImageError::BadEntry(0))
        );
        let mut bad = img.clone();
        bad[24] = 77; // unknown kind
        assert_eq!(
            ModuleTable::parse(&bad).err(),
            Some(ImageError::BadEntry(0))
        );
        let mut bad = img.clone();
        bad[12] = 200; // count far beyond the bytes present
        assert_eq!(ModuleTable::parse(&bad).err(), Some(ImageError::Truncated));
        assert_eq!(
            ModuleTable::parse(&img[..img.len() - 1]).err(),
            Some(ImageError::Truncated)
        );
    }
}
