//! Where a domain's payloads and device tree go in its RAM.
//!
//! The one idea: these are the kernel's dom0less rules
//! (`kernel/src/hv/mod.rs`, `build_domain` and `load_domain`), repeated
//! here so that a domain domB builds sees exactly the memory, entry point
//! and device tree the kernel would have given it: the kernel at
//! `RAM_BASE + text_offset` (from its arm64 `Image` header; a payload
//! without one loads at offset 0), the device tree 2 MiB below the top of
//! RAM, and the initrd just below the device tree, its start rounded down
//! to a page. A change to one side must be made to the other.

use core::fmt;
use tessera_ipc::control::MEMORY_ALIGN;
use tessera_ipc::image::{Arm64ImageHeader, ARM64_IMAGE_MAGIC};
use tessera_ipc::platform::RAM_BASE;
use zerocopy::FromBytes;

/// The guest DTB's place: this far below the top of guest RAM, which is
/// also the most room it has.
pub const DTB_RESERVE: u64 = 2 << 20;
/// The least RAM a domain may have: the DTB's reserve and as much again.
pub const MIN_MEMORY: u64 = 2 * DTB_RESERVE;
const PAGE: u64 = 4096;

/// Where everything of one domain goes, as IPAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// RAM as the domain's device tree describes it (its `memory`).
    pub ram_bytes: u64,
    /// RAM to ask `AssignMemory` for: `ram_bytes` rounded up to whole
    /// 2 MiB blocks (the rest is mapped but not described, as the kernel
    /// maps a dom0less domain's last partial block).
    pub assign_bytes: u64,
    /// Where the kernel payload is copied; also vCPU 0's entry point.
    pub kernel: u64,
    /// The initrd's range, if the domain has one.
    pub initrd: Option<(u64, u64)>,
    /// Where the device tree goes; x0 at entry.
    pub dtb: u64,
}

/// Why a domain's payloads do not fit its RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Less than [`MIN_MEMORY`].
    TooLittleMemory { bytes: u64 },
    /// The kernel (with its BSS, per its header) and the initrd do not
    /// fit below the device tree.
    DoesNotFit { needed: u64, room: u64 },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::TooLittleMemory { bytes } => write!(
                f,
                "memory must be at least {} MiB, not {bytes:#x} bytes",
                MIN_MEMORY >> 20
            ),
            LayoutError::DoesNotFit { needed, room } => write!(
                f,
                "kernel and initrd need {needed:#x} bytes below the device tree, which leaves {room:#x}"
            ),
        }
    }
}

/// A kernel payload's load offset and memory footprint from its arm64
/// `Image` header, or (0, 0) when it has none.
pub fn image_placement(kernel: &[u8]) -> (u64, u64) {
    match Arm64ImageHeader::read_from_prefix(kernel) {
        Ok((h, _)) if h.magic.get() == ARM64_IMAGE_MAGIC => {
            (h.text_offset.get(), h.image_size.get())
        }
        _ => (0, 0),
    }
}

/// The layout of a domain with `memory_bytes` of RAM, the kernel payload
/// `kernel` and an initrd of `initrd_len` bytes.
pub fn layout(
    memory_bytes: u64,
    kernel: &[u8],
    initrd_len: Option<u64>,
) -> Result<Layout, LayoutError> {
    if memory_bytes < MIN_MEMORY {
        return Err(LayoutError::TooLittleMemory {
            bytes: memory_bytes,
        });
    }
    let (offset, image_size) = image_placement(kernel);
    let dtb_offset = memory_bytes - DTB_RESERVE;
    let kernel_end = offset.saturating_add((kernel.len() as u64).max(image_size));
    let initrd_room = initrd_len.map_or(0, |len| len.saturating_add(PAGE - 1) & !(PAGE - 1));
    let needed = kernel_end.saturating_add(initrd_room);
    if needed > dtb_offset {
        return Err(LayoutError::DoesNotFit {
            needed,
            room: dtb_offset,
        });
    }
    // Below the DTB, its start rounded down to a page: it cannot reach the
    // kernel, since `needed` fits.
    let initrd = initrd_len.map(|len| {
        let start = (dtb_offset - len) & !(PAGE - 1);
        (RAM_BASE + start, RAM_BASE + start + len)
    });
    Ok(Layout {
        ram_bytes: memory_bytes,
        assign_bytes: memory_bytes.saturating_add(MEMORY_ALIGN - 1) & !(MEMORY_ALIGN - 1),
        kernel: RAM_BASE + offset,
        initrd,
        dtb: RAM_BASE + dtb_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    const MIB: u64 = 1 << 20;

    fn image(text_offset: u64, image_size: u64, len: usize) -> Vec<u8> {
        let header = Arm64ImageHeader {
            code0: 0.into(),
            code1: 0.into(),
            text_offset: text_offset.into(),
            image_size: image_size.into(),
            flags: 0.into(),
            res2: 0.into(),
            res3: 0.into(),
            res4: 0.into(),
            magic: ARM64_IMAGE_MAGIC.into(),
            res5: 0.into(),
        };
        let mut bytes = header.as_bytes().to_vec();
        bytes.resize(len, 0);
        bytes
    }

    #[test]
    fn a_bare_metal_guest_is_placed_as_the_kernel_places_it() {
        let kernel = image(0, 0x40000, 0x20000);
        assert_eq!(
            layout(16 * MIB, &kernel, None),
            Ok(Layout {
                ram_bytes: 16 * MIB,
                assign_bytes: 16 * MIB,
                kernel: RAM_BASE,
                initrd: None,
                dtb: RAM_BASE + 14 * MIB,
            })
        );
    }

    #[test]
    fn linux_loads_at_its_text_offset_with_the_initrd_below_the_dtb() {
        let kernel = image(0x20_0000, 30 * MIB, 20 * MIB as usize);
        let l = layout(192 * MIB, &kernel, Some(0x12345)).unwrap();
        assert_eq!(l.kernel, RAM_BASE + 0x20_0000);
        assert_eq!(l.dtb, RAM_BASE + 190 * MIB);
        let start = (190 * MIB - 0x12345) & !0xfff;
        assert_eq!(
            l.initrd,
            Some((RAM_BASE + start, RAM_BASE + start + 0x12345))
        );
    }

    #[test]
    fn a_payload_without_a_header_loads_at_the_bottom() {
        assert_eq!(image_placement(b"no header here"), (0, 0));
        let l = layout(4 * MIB, b"raw", None).unwrap();
        assert_eq!((l.kernel, l.dtb), (RAM_BASE, RAM_BASE + 2 * MIB));
    }

    #[test]
    fn memory_is_assigned_in_whole_blocks_but_described_as_written() {
        let l = layout(5 * MIB, b"raw", None).unwrap();
        assert_eq!((l.ram_bytes, l.assign_bytes), (5 * MIB, 6 * MIB));
        assert_eq!(l.dtb, RAM_BASE + 3 * MIB);
    }

    #[test]
    fn what_does_not_fit_is_refused() {
        assert_eq!(
            layout(4 * MIB - 4096, b"raw", None),
            Err(LayoutError::TooLittleMemory {
                bytes: 4 * MIB - 4096
            })
        );
        // The BSS the header declares counts, not just the file.
        let kernel = image(0, 3 * MIB, 4096);
        assert_eq!(
            layout(4 * MIB, &kernel, None),
            Err(LayoutError::DoesNotFit {
                needed: 3 * MIB,
                room: 2 * MIB
            })
        );
        let kernel = image(0, MIB, 4096);
        assert_eq!(
            layout(4 * MIB, &kernel, Some(MIB + 1)),
            Err(LayoutError::DoesNotFit {
                needed: 2 * MIB + 4096,
                room: 2 * MIB
            })
        );
        assert!(layout(4 * MIB, &kernel, Some(MIB)).is_ok());
        assert!(!LayoutError::TooLittleMemory { bytes: 0 }
            .to_string()
            .is_empty());
    }
}
