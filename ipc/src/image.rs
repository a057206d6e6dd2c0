//! The unified image: `tessera.img` is the kernel's flat binary (with an arm64
//! Linux `Image` header, so firmware and QEMU `-kernel` load it and pass the
//! host DTB in x0), followed by a module table holding every payload the
//! system needs, each with its SHA-256 and the SHA-256 of every 64 KiB
//! chunk of it.
//!
//! The chunk digests are what let the kernel start domains without first
//! hashing tens of MiB (docs/02, "Lazy RAM"): it checks each module's list
//! of chunk digests at boot (a few KiB, against `chunks_sha256`), and each
//! chunk the first time it copies bytes of it into a domain, as dm-verity
//! checks a block on first read. `sha256` is the digest of the whole module,
//! what `sha256sum` prints and what domB measures; the packer derives both
//! from the same bytes.
//!
//! The table starts at the first 64 KiB boundary at or after the end of the
//! kernel's memory footprint (code, data, BSS and boot stacks), which the
//! kernel learns from its linker script. Offsets in the table are relative to
//! the table's own start, so the image can be loaded anywhere.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Alignment of the module table and of every module within the image.
pub const MODULE_ALIGN: u64 = 0x1_0000;
/// Magic at the start of the module table.
pub const TABLE_MAGIC: [u8; 8] = *b"TSRAMODS";
/// Version of the table layout; bump on any change.
pub const TABLE_VERSION: u32 = 2;
/// Longest module name, NUL padded.
pub const NAME_LEN: usize = 48;
/// Bytes of a module covered by one chunk digest (the last chunk may be
/// shorter). Modules start on [`MODULE_ALIGN`], so chunk `i` of a module
/// is also chunk `offset / CHUNK_SIZE + i` of the table.
pub const CHUNK_SIZE: u64 = MODULE_ALIGN;
/// Bytes of one SHA-256 digest.
pub const DIGEST_LEN: usize = 32;

/// Module table header, followed by `count` [`ModuleEntry`] records, then
/// the modules' chunk digest lists, then (each on [`MODULE_ALIGN`]) the
/// modules.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct TableHeader {
    pub magic: [u8; 8],
    pub version: U32,
    pub count: U32,
    /// Bytes from the table start to the end of the last module.
    pub total_size: U64,
}
const _: () = assert!(core::mem::size_of::<TableHeader>() == 24);

crate::abi_enum! {
    /// What a module is for.
    pub enum ModuleKind: u32 {
        /// The system description (compiled `system.dts`).
        SystemDtb = 1,
        /// A domain's kernel or bare-metal payload.
        Kernel = 2,
        /// A domain's initial ramdisk.
        Ramdisk = 3,
        /// A partial device tree for a domain (`multiboot,device-tree`).
        DeviceTree = 4,
        /// The compiled access-control policy.
        Policy = 5,
        /// A disk image served by the device model.
        Disk = 6,
    }
}

/// One module.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ModuleEntry {
    /// A [`ModuleKind`] value.
    pub kind: U32,
    pub _pad: U32,
    /// Offset from the table start; a multiple of [`MODULE_ALIGN`].
    pub offset: U64,
    pub size: U64,
    /// SHA-256 of the whole module.
    pub sha256: [u8; 32],
    /// The name the system description uses for it, NUL padded.
    pub name: [u8; NAME_LEN],
    /// Offset from the table start of its chunk digests: one SHA-256 per
    /// [`CHUNK_SIZE`] bytes of the module, `size.div_ceil(CHUNK_SIZE)` of
    /// them.
    pub chunks_offset: U64,
    /// SHA-256 of that list of digests, as stored.
    pub chunks_sha256: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<ModuleEntry>() == 144);

impl ModuleEntry {
    /// The name without its NUL padding.
    pub fn name_bytes(&self) -> &[u8] {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        &self.name[..end]
    }
}

/// The arm64 Linux `Image` header (Documentation/arch/arm64/booting.rst).
/// The kernel and bare-metal payloads carry it so that one loading path
/// serves Linux and our own binaries alike.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Arm64ImageHeader {
    pub code0: U32,
    pub code1: U32,
    pub text_offset: U64,
    pub image_size: U64,
    pub flags: U64,
    pub res2: U64,
    pub res3: U64,
    pub res4: U64,
    pub magic: U32,
    pub res5: U32,
}
const _: () = assert!(core::mem::size_of::<Arm64ImageHeader>() == 64);

/// `Arm64ImageHeader::magic`: "ARM\x64".
pub const ARM64_IMAGE_MAGIC: u32 = 0x644d_5241;

/// Why bytes are not a usable module table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Shorter than its header, its entries or its stated size.
    Truncated,
    /// The magic is not [`TABLE_MAGIC`].
    BadMagic,
    /// A table version this reader does not understand.
    BadVersion(u32),
    /// Entry `n` points outside the table, is not aligned to
    /// [`MODULE_ALIGN`], or has an unknown kind.
    BadEntry(usize),
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => write!(f, "module table truncated"),
            Self::BadMagic => write!(f, "no module table (bad magic)"),
            Self::BadVersion(v) => write!(f, "module table version {v} not supported"),
            Self::BadEntry(n) => write!(
                f,
                "module entry {n} is out of bounds, misaligned or of unknown kind"
            ),
        }
    }
}

/// One module of a checked table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module<'a> {
    /// Its index in the table (what domain-control calls name it by).
    pub index: usize,
    pub kind: ModuleKind,
    pub name: &'a [u8],
    pub data: &'a [u8],
    /// The SHA-256 the table records for the whole module.
    pub sha256: [u8; 32],
    /// One SHA-256 per [`CHUNK_SIZE`] bytes of `data`.
    pub chunk_digests: &'a [[u8; DIGEST_LEN]],
    /// The SHA-256 the table records for `chunk_digests`.
    pub chunks_sha256: [u8; 32],
    /// Its first chunk's index in the whole table (see [`CHUNK_SIZE`]).
    pub first_chunk: u64,
}

impl<'a> Module<'a> {
    /// Chunk `i` of the module's bytes, if it has that many.
    pub fn chunk(&self, i: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(i.checked_mul(CHUNK_SIZE)?).ok()?;
        let end = start
            .saturating_add(CHUNK_SIZE as usize)
            .min(self.data.len());
        self.data.get(start..end).filter(|c| !c.is_empty())
    }

    /// The chunks `[first, last]` that hold bytes `[offset, offset + len)`
    /// of the module (`None` when `len` is 0 or the range runs past it).
    pub fn chunks_covering(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        let end = offset.checked_add(len)?;
        if len == 0 || end > self.data.len() as u64 {
            return None;
        }
        Some((offset / CHUNK_SIZE, (end - 1) / CHUNK_SIZE))
    }
}

/// A module table whose header and every entry's bounds and kind have been
/// checked: the one reader, shared by the kernel (which then verifies the
/// checksums) and the boot domain (which reads the table the kernel lends
/// it). Nothing in the bytes is trusted before `parse` accepts them.
#[derive(Clone, Copy, Debug)]
pub struct ModuleTable<'a> {
    bytes: &'a [u8],
    entries: &'a [ModuleEntry],
}

impl<'a> ModuleTable<'a> {
    /// Checks the table at the start of `bytes`, which may run past its end.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, TableError> {
        let (header, rest) =
            TableHeader::read_from_prefix(bytes).map_err(|_| TableError::Truncated)?;
        if header.magic != TABLE_MAGIC {
            return Err(TableError::BadMagic);
        }
        if header.version.get() != TABLE_VERSION {
            return Err(TableError::BadVersion(header.version.get()));
        }
        let total = usize::try_from(header.total_size.get()).map_err(|_| TableError::Truncated)?;
        let bytes = bytes.get(..total).ok_or(TableError::Truncated)?;
        let count = usize::try_from(header.count.get()).map_err(|_| TableError::Truncated)?;
        let (entries, _) = <[ModuleEntry]>::ref_from_prefix_with_elems(rest, count)
            .map_err(|_| TableError::Truncated)?;
        let table = Self { bytes, entries };
        for n in 0..entries.len() {
            table.get(n).ok_or(TableError::BadEntry(n))?;
        }
        Ok(table)
    }

    /// Number of modules.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no module.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The whole table's size in bytes, modules included.
    pub fn total_size(&self) -> usize {
        self.bytes.len()
    }

    /// Module `n`, if the table has that many.
    pub fn get(&self, n: usize) -> Option<Module<'a>> {
        let e = self.entries.get(n)?;
        let start = usize::try_from(e.offset.get()).ok()?;
        let len = usize::try_from(e.size.get()).ok()?;
        let data = self.bytes.get(start..start.checked_add(len)?)?;
        let kind = ModuleKind::try_from(u64::from(e.kind.get())).ok()?;
        if e.offset.get() % MODULE_ALIGN != 0 {
            return None;
        }
        let count = (data.len() as u64).div_ceil(CHUNK_SIZE);
        let list_at = usize::try_from(e.chunks_offset.get()).ok()?;
        let list_len = usize::try_from(count.checked_mul(DIGEST_LEN as u64)?).ok()?;
        let list = self.bytes.get(list_at..list_at.checked_add(list_len)?)?;
        let (chunk_digests, _) =
            <[[u8; DIGEST_LEN]]>::ref_from_prefix_with_elems(list, count as usize).ok()?;
        Some(Module {
            index: n,
            kind,
            name: e.name_bytes(),
            data,
            sha256: e.sha256,
            chunk_digests,
            chunks_sha256: e.chunks_sha256,
            first_chunk: e.offset.get() / CHUNK_SIZE,
        })
    }

    /// Every module, in table order.
    pub fn modules(&self) -> impl Iterator<Item = Module<'a>> + '_ {
        (0..self.len()).filter_map(|n| self.get(n))
    }

    /// The index of the first module named `name`, of any kind.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.modules()
            .find(|m| m.name == name.as_bytes())
            .map(|m| m.index)
    }

    /// The first module of `kind` named `name`.
    pub fn find(&self, kind: ModuleKind, name: &str) -> Option<Module<'a>> {
        self.modules()
            .find(|m| m.kind == kind && m.name == name.as_bytes())
    }

    /// The first module of `kind`, whatever its name.
    pub fn first(&self, kind: ModuleKind) -> Option<Module<'a>> {
        self.modules().find(|m| m.kind == kind)
    }
}

/// The module table for `modules` (kind, name, bytes), laid out as the
/// kernel reads it, with `digest` as SHA-256: the one writer, used by
/// `cargo xtask build` and by every test that needs a table. Offsets are
/// relative to the table's start; names must be 1 to [`NAME_LEN`] bytes.
#[cfg(feature = "alloc")]
pub fn pack_table(
    modules: &[(ModuleKind, &str, &[u8])],
    digest: impl Fn(&[u8]) -> [u8; DIGEST_LEN],
) -> alloc::vec::Vec<u8> {
    use alloc::vec::Vec;
    let head =
        core::mem::size_of::<TableHeader>() + modules.len() * core::mem::size_of::<ModuleEntry>();
    let lists: Vec<Vec<u8>> = modules
        .iter()
        .map(|(_, _, data)| data.chunks(CHUNK_SIZE as usize).flat_map(&digest).collect())
        .collect();
    let mut at = head as u64;
    let mut list_at = Vec::with_capacity(modules.len());
    for list in &lists {
        list_at.push(at);
        at += list.len() as u64;
    }
    let mut entries = Vec::with_capacity(modules.len());
    let mut end = at;
    for (((kind, name, data), list), &chunks_offset) in modules.iter().zip(&lists).zip(&list_at) {
        let offset = end.next_multiple_of(MODULE_ALIGN);
        let mut padded = [0u8; NAME_LEN];
        let n = name.len().min(NAME_LEN);
        padded[..n].copy_from_slice(&name.as_bytes()[..n]);
        entries.push(ModuleEntry {
            kind: U32::new(*kind as u32),
            _pad: U32::new(0),
            offset: U64::new(offset),
            size: U64::new(data.len() as u64),
            sha256: digest(data),
            name: padded,
            chunks_offset: U64::new(chunks_offset),
            chunks_sha256: digest(list),
        });
        end = offset + data.len() as u64;
    }
    let header = TableHeader {
        magic: TABLE_MAGIC,
        version: U32::new(TABLE_VERSION),
        count: U32::new(modules.len() as u32),
        total_size: U64::new(end),
    };
    let mut out = Vec::with_capacity(end as usize);
    out.extend_from_slice(header.as_bytes());
    for e in &entries {
        out.extend_from_slice(e.as_bytes());
    }
    for list in &lists {
        out.extend_from_slice(list);
    }
    for ((_, _, data), e) in modules.iter().zip(&entries) {
        out.resize(e.offset.get() as usize, 0);
        out.extend_from_slice(data);
    }
    out
}
