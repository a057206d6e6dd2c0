//! The guest platform: what every domain sees, fixed so that a binary built
//! for QEMU's `virt` machine runs unchanged under Tessera (DESIGN.md, "What a
//! guest sees"). Addresses are intermediate physical addresses (IPAs).

/// Guest RAM starts here.
pub const RAM_BASE: u64 = 0x4000_0000;
/// GICv3 distributor frame.
pub const GICD_BASE: u64 = 0x0800_0000;
/// Size of the distributor frame.
pub const GICD_SIZE: u64 = 0x1_0000;
/// First GICv3 redistributor; one per vCPU, `GICR_STRIDE` apart.
pub const GICR_BASE: u64 = 0x080A_0000;
/// Each redistributor is an RD_base frame and an SGI_base frame of 64 KiB.
pub const GICR_STRIDE: u64 = 0x2_0000;
/// Emulated PL011 UART.
pub const PL011_BASE: u64 = 0x0900_0000;
/// Size of the PL011 frame.
pub const PL011_SIZE: u64 = 0x1000;
/// First virtio-mmio slot.
pub const VIRTIO_MMIO_BASE: u64 = 0x0a00_0000;
/// Distance between virtio-mmio slots.
pub const VIRTIO_MMIO_STRIDE: u64 = 0x200;
/// The PL011's interrupt: SPI 1 (INTID 33), as on QEMU `virt`.
pub const PL011_INTID: u32 = 32 + 1;
/// Slot `n`'s interrupt is SPI 16 + n (INTID 48 + n), as on QEMU `virt`.
pub const VIRTIO_MMIO_INTID_BASE: u32 = 32 + 16;

/// The grant-table window: `XENMAPSPACE_grant_table` frames are placed
/// here (the guest DT's hypervisor node `reg[0]`, as in Xen's layout).
pub const GNTTAB_BASE: u64 = 0x3800_0000;
/// Size of the grant-table window.
pub const GNTTAB_SIZE: u64 = 0x0100_0000;
/// Special pages (PV console, xenstore ring), as in Xen's layout.
pub const MAGIC_BASE: u64 = 0x3900_0000;
/// Size of the special-page window.
pub const MAGIC_SIZE: u64 = 0x0100_0000;
/// The extended region: free guest-physical space where a domain maps
/// pages granted to it (`map_grant_ref` `host_addr`). Named in the guest DT
/// as the hypervisor node's `reg[1]`.
pub const EXT_REGION_BASE: u64 = 0x3A00_0000;
/// Size of the extended region.
pub const EXT_REGION_SIZE: u64 = 0x0600_0000;

/// The boot domain's module window (hyperlaunch): the image's module
/// table, read-only, at this base plus the table's offset within its
/// 2 MiB block (so it maps with 2 MiB blocks). Its guest DT's
/// `linux,initrd-start`/`-end` give the exact range. It ends at 4 GiB,
/// where a runtime with a 32-bit identity map stops, so the boot domain's
/// RAM must end at or below this base.
pub const BOOT_MODULES_BASE: u64 = 0xC000_0000;
/// Size of the boot domain's module window.
pub const BOOT_MODULES_SIZE: u64 = 0x4000_0000;
const _: () = assert!(BOOT_MODULES_BASE > RAM_BASE && BOOT_MODULES_BASE.is_multiple_of(2 << 20));

/// Most vCPUs one domain may have.
pub const MAX_VCPUS_PER_DOMAIN: usize = 8;
/// Number of SPIs the virtual distributor implements (INTIDs 32..32+N).
pub const VGIC_NR_SPIS: u32 = 64;

/// Virtual timer interrupt (PPI 27, INTID 27).
pub const VTIMER_INTID: u32 = 27;
/// Event-channel upcall interrupt (PPI 31, INTID 31), named in the guest DT.
pub const EVTCHN_UPCALL_INTID: u32 = 31;
/// Timer frequency is the host's; guests read CNTFRQ_EL0 directly.
/// The guest's MPIDR for vCPU `n` is `n` in Aff0 (plus the RES1 bit 31).
pub const fn vcpu_mpidr(n: u32) -> u64 {
    (1 << 31) | n as u64
}
