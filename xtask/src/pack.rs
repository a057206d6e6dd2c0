//! The unified-image packer (layout: `tessera_ipc::image`) and the matching
//! reader, which the tests use to prove a round trip and `xtask` uses to
//! print what went into an image.
//!
//! The one idea: the table goes after the kernel's whole *memory* footprint,
//! not just its file bytes, and the Image header's `image_size` is patched to
//! the full file length, so QEMU puts the host DTB beyond every module.

use crate::error::Error;
use sha2::{Digest, Sha256};
use tessera_ipc::image::{
    pack_table, Arm64ImageHeader, ModuleEntry, ModuleKind, TableHeader, ARM64_IMAGE_MAGIC,
    CHUNK_SIZE, DIGEST_LEN, MODULE_ALIGN, NAME_LEN, TABLE_MAGIC, TABLE_VERSION,
};
#[cfg(test)]
use zerocopy::little_endian::{U32, U64};
use zerocopy::FromBytes;
#[cfg(test)]
use zerocopy::IntoBytes;

/// One payload to place in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub kind: ModuleKind,
    pub data: Vec<u8>,
}

/// A module as read back from an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedModule {
    pub name: String,
    pub kind: ModuleKind,
    /// Offset from the table start.
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Offset of `Arm64ImageHeader::image_size` in the kernel binary.
const IMAGE_SIZE_OFFSET: usize = core::mem::offset_of!(Arm64ImageHeader, image_size);

fn align_up(value: u64) -> u64 {
    value.div_ceil(MODULE_ALIGN) * MODULE_ALIGN
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).expect("image offsets fit in usize on a 64-bit host")
}

/// Where the module table starts for a kernel of this memory footprint.
pub fn table_offset(kernel_footprint: u64) -> u64 {
    align_up(kernel_footprint)
}

/// Packs `kernel` (a flat binary with an arm64 Image header, whose memory
/// footprint is `kernel_footprint` bytes) and `modules` into one image.
/// The caller's `modules` order is kept; module names must be unique.
pub fn pack(kernel: &[u8], kernel_footprint: u64, modules: &[Module]) -> Result<Vec<u8>, Error> {
    let header = Arm64ImageHeader::read_from_prefix(kernel)
        .map(|(header, _)| header)
        .map_err(|_| {
            Error::Pack("the kernel binary is shorter than an arm64 Image header".into())
        })?;
    if header.magic.get() != ARM64_IMAGE_MAGIC {
        return Err(Error::Pack(
            "the kernel binary lacks the arm64 Image header magic (\"ARM\\x64\" at offset 56)"
                .into(),
        ));
    }
    for (i, module) in modules.iter().enumerate() {
        if module.name.is_empty() || module.name.len() > NAME_LEN || module.name.contains('\0') {
            return Err(Error::BadModule {
                name: module.name.clone(),
                reason: format!("a module name must be 1 to {NAME_LEN} bytes with no NUL"),
            });
        }
        if modules[..i]
            .iter()
            .any(|earlier| earlier.name == module.name)
        {
            return Err(Error::BadModule {
                name: module.name.clone(),
                reason: "listed twice".into(),
            });
        }
    }

    let table_start = table_offset(kernel_footprint.max(kernel.len() as u64));
    let listed: Vec<(ModuleKind, &str, &[u8])> = modules
        .iter()
        .map(|m| (m.kind, m.name.as_str(), m.data.as_slice()))
        .collect();
    let table = pack_table(&listed, |bytes| Sha256::digest(bytes).into());
    let mut image = vec![0u8; to_usize(table_start)];
    image[..kernel.len()].copy_from_slice(kernel);
    image.extend_from_slice(&table);
    let image_size = image.len() as u64;
    image[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8].copy_from_slice(&image_size.to_le_bytes());
    Ok(image)
}

/// Why an image could not be read back.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    Truncated(&'static str),
    BadMagic,
    BadVersion(u32),
    BadKind { index: usize, raw: u32 },
    Misaligned { index: usize, offset: u64 },
    ChecksumMismatch { index: usize },
}

/// Reads the module table that starts at `table_start` in `image`, checking
/// magic, version, alignment, bounds and every checksum.
pub fn read_table(image: &[u8], table_start: u64) -> Result<Vec<PackedModule>, ReadError> {
    let table = image
        .get(to_usize(table_start)..)
        .ok_or(ReadError::Truncated("table start"))?;
    let (header, rest) =
        TableHeader::read_from_prefix(table).map_err(|_| ReadError::Truncated("header"))?;
    if header.magic != TABLE_MAGIC {
        return Err(ReadError::BadMagic);
    }
    if header.version.get() != TABLE_VERSION {
        return Err(ReadError::BadVersion(header.version.get()));
    }
    let (entries, _) =
        <[ModuleEntry]>::ref_from_prefix_with_elems(rest, header.count.get() as usize)
            .map_err(|_| ReadError::Truncated("entries"))?;
    let mut modules = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let kind =
            ModuleKind::try_from(u64::from(entry.kind.get())).map_err(|_| ReadError::BadKind {
                index,
                raw: entry.kind.get(),
            })?;
        let offset = entry.offset.get();
        if offset % MODULE_ALIGN != 0 {
            return Err(ReadError::Misaligned { index, offset });
        }
        let data = offset
            .checked_add(entry.size.get())
            .and_then(|end| table.get(to_usize(offset)..to_usize(end)))
            .ok_or(ReadError::Truncated("module data"))?;
        if <[u8; 32]>::from(Sha256::digest(data)) != entry.sha256 {
            return Err(ReadError::ChecksumMismatch { index });
        }
        let list_len = entry.size.get().div_ceil(CHUNK_SIZE) * DIGEST_LEN as u64;
        let list = entry
            .chunks_offset
            .get()
            .checked_add(list_len)
            .and_then(|end| table.get(to_usize(entry.chunks_offset.get())..to_usize(end)))
            .ok_or(ReadError::Truncated("chunk digests"))?;
        let chunks_match = list
            .chunks(DIGEST_LEN)
            .zip(data.chunks(CHUNK_SIZE as usize))
            .all(|(d, c)| d == Sha256::digest(c).as_slice());
        if !chunks_match || <[u8; 32]>::from(Sha256::digest(list)) != entry.chunks_sha256 {
            return Err(ReadError::ChecksumMismatch { index });
        }
        modules.push(PackedModule {
            name: String::from_utf8_lossy(entry.name_bytes()).into_owned(),
            kind,
            offset,
            data: data.to_vec(),
        });
    }
    Ok(modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_kernel(len: usize) -> Vec<u8> {
        let header = Arm64ImageHeader {
            code0: U32::new(0x1400_0010),
            code1: U32::new(0),
            text_offset: U64::new(0),
            image_size: U64::new(0),
            flags: U64::new(0b1010),
            res2: U64::new(0),
            res3: U64::new(0),
            res4: U64::new(0),
            magic: U32::new(ARM64_IMAGE_MAGIC),
            res5: U32::new(0),
        };
        let mut kernel = vec![0xAA; len];
        kernel[..64].copy_from_slice(header.as_bytes());
        kernel
    }

    fn module(name: &str, kind: ModuleKind, data: &[u8]) -> Module {
        Module {
            name: name.into(),
            kind,
            data: data.to_vec(),
        }
    }

    #[test]
    fn round_trip() {
        let kernel = fake_kernel(5000);
        let modules = [
            module("system.dtb", ModuleKind::SystemDtb, b"\xd0\x0d\xfe\xed dtb"),
            module("testguest", ModuleKind::Kernel, &vec![7u8; 70_000]),
            module("initrd", ModuleKind::Ramdisk, b"ramdisk bytes"),
        ];
        // BSS and stacks run past the file bytes: the table must clear them.
        let footprint = 0x2_3456;
        let image = pack(&kernel, footprint, &modules).unwrap();

        let table_start = table_offset(footprint);
        assert_eq!(table_start, 0x3_0000);
        assert_eq!(
            &image[..5000],
            &{
                let mut k = kernel.clone();
                k[IMAGE_SIZE_OFFSET..IMAGE_SIZE_OFFSET + 8]
                    .copy_from_slice(&(image.len() as u64).to_le_bytes());
                k
            }[..]
        );
        assert!(image[5000..table_start as usize].iter().all(|&b| b == 0));

        let read = read_table(&image, table_start).unwrap();
        assert_eq!(read.len(), 3);
        for (packed, original) in read.iter().zip(&modules) {
            assert_eq!(packed.name, original.name);
            assert_eq!(packed.kind, original.kind);
            assert_eq!(packed.data, original.data);
            assert_eq!(packed.offset % MODULE_ALIGN, 0);
        }
        assert_eq!(read[0].offset, MODULE_ALIGN);
        assert_eq!(read[1].offset, 2 * MODULE_ALIGN);
        assert_eq!(
            read[2].offset,
            4 * MODULE_ALIGN,
            "a 70 000-byte module spans two alignment units"
        );

        let (header, _) = TableHeader::read_from_prefix(&image[table_start as usize..]).unwrap();
        assert_eq!(table_start + header.total_size.get(), image.len() as u64);
        let (kernel_header, _) = Arm64ImageHeader::read_from_prefix(&image[..]).unwrap();
        assert_eq!(kernel_header.image_size.get(), image.len() as u64);
    }

    #[test]
    fn table_clears_a_kernel_whose_file_is_longer_than_its_stated_footprint() {
        let image = pack(
            &fake_kernel(0x1_0001),
            0x100,
            &[module("a", ModuleKind::Kernel, b"x")],
        )
        .unwrap();
        assert_eq!(read_table(&image, 0x2_0000).unwrap()[0].data, b"x");
    }

    #[test]
    fn a_corrupted_module_fails_its_checksum() {
        let mut image = pack(
            &fake_kernel(64),
            64,
            &[module("a", ModuleKind::Kernel, b"payload")],
        )
        .unwrap();
        let last = image.len() - 1;
        image[last] ^= 1;
        assert_eq!(
            read_table(&image, MODULE_ALIGN),
            Err(ReadError::ChecksumMismatch { index: 0 })
        );
    }

    #[test]
    fn a_kernel_without_image_header_is_rejected() {
        let err = pack(&[0u8; 128], 128, &[]).unwrap_err();
        assert!(err.to_string().contains("Image header"), "{err}");
    }

    #[test]
    fn bad_names_are_rejected() {
        let long = "n".repeat(NAME_LEN + 1);
        for name in ["", long.as_str(), "nul\0inside"] {
            let err = pack(
                &fake_kernel(64),
                64,
                &[module(name, ModuleKind::Kernel, b"")],
            )
            .unwrap_err();
            assert!(matches!(err, Error::BadModule { .. }), "{name:?}: {err}");
        }
        let twice = [
            module("a", ModuleKind::Kernel, b""),
            module("a", ModuleKind::Ramdisk, b""),
        ];
        assert!(matches!(
            pack(&fake_kernel(64), 64, &twice),
            Err(Error::BadModule { .. })
        ));
    }
}
