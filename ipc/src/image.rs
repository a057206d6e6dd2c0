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
