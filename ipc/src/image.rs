//! The unified image: `tessera.img` is the kernel's flat binary (with an arm64
//! Linux `Image` header, so firmware and QEMU `-kernel` load it and pass the
//! host DTB in x0), followed by a module table holding every payload the
//! system needs, each with its SHA-256.
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
pub const TABLE_VERSION: u32 = 1;
/// Longest module name, NUL padded.
pub const NAME_LEN: usize = 48;

/// Module table header, followed by `count` [`ModuleEntry`] records.
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
    pub sha256: [u8; 32],
    /// The name the system description uses for it, NUL padded.
    pub name: [u8; NAME_LEN],
}
const _: () = assert!(core::mem::size_of::<ModuleEntry>() == 104);

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
    /// Entry `n` points outside the table or has an unknown kind.
    BadEntry(usize),
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Truncated => write!(f, "module table truncated"),
            Self::BadMagic => write!(f, "no module table (bad magic)"),
            Self::BadVersion(v) => write!(f, "module table version {v} not supported"),
            Self::BadEntry(n) => write!(f, "module entry {n} is out of bounds or of unknown kind"),
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
    /// The SHA-256 the table records for it (checked by the kernel at boot).
    pub sha256: [u8; 32],
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
        Some(Module {
            index: n,
            kind,
            name: e.name_bytes(),
            data,
            sha256: e.sha256,
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
