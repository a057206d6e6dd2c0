//! IOREQ: how a device-model domain serves another domain's MMIO.
//!
//! The one idea: the kernel never emulates a device. A stage-2 data abort in
//! a range a device model registered becomes an `IoreqSlot` in a page the
//! device model owns, one slot per vCPU of the served domain, and a VIRQ on
//! the device model. The device model answers in the slot and calls
//! `IoreqCmd::Complete`; the kernel then copies the data to the faulting
//! register and lets the vCPU go on. The slot layout is Xen's `ioreq_t`
//! (`xen/include/public/hvm/ioreq.h`), so the protocol reads as Xen's.
//!
//! The device model is not trusted: the kernel reads back only `data` and
//! `state`, truncates `data` to the access size, and decides which register
//! it goes to from its own record of the fault.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

crate::abi_enum! {
    /// IOREQ sub-command, in x0. Arguments in x1.. as listed.
    pub enum IoreqCmd: u64 {
        /// x1 = served domain id, x2 = IPA of a page of the caller's own
        /// RAM that will hold one `IoreqSlot` per vCPU of the served
        /// domain, x3 = IPA of another page of its RAM for the domain's
        /// `FastPage`, or 0 for none. Becomes that domain's server
        /// (`ioreq:register`). A domain that names its device model may be
        /// registered for by that domain only (`-EPERM`).
        Register = 0,
        /// x1 = domain id, x2 = base IPA, x3 = size, x4 = `RANGE_*` flags:
        /// send the served domain's accesses in this range to the caller
        /// (`ioreq:register`).
        MapRange = 1,
        /// x1 = domain id, x2 = IPA in the caller's `MAP_WINDOW`: map all of
        /// the served domain's RAM there, read-write (`ioreq:map`, and
        /// `mmu { map_read map_write }`), so devices can do DMA. Returns the
        /// RAM size in bytes.
        MapMemory = 2,
        /// x1 = domain id, x2 = vCPU index: its slot is answered
        /// (`ioreq:complete`).
        Complete = 3,
        /// x1 = domain id, x2 = INTID of an SPI, x3 = 0 or 1: drive that
        /// interrupt line of the served domain low or high (a line the
        /// guest configured edge-triggered latches on the rising edge).
        /// Only the domain's server may (`ioreq:complete`).
        SetIrqLevel = 4,
        /// x1 = domain id, x2 = buffer, x3 = length (at most
        /// `CONSOLE_IO_MAX`): console output of the served domain's
        /// emulated UART, printed as that domain's (`ioreq:complete`).
        ConsoleWrite = 5,
        /// x1 = domain id, x2 = buffer, x3 = length (at most
        /// `CONSOLE_IO_MAX`): take keyboard input typed at the served
        /// domain (while it had the console focus), oldest first. Returns
        /// the bytes read, 0 when there are none; `VIRQ_CONSOLE_INPUT`
        /// says when there are more (`ioreq:complete`).
        ConsoleRead = 6,
        /// x1 = domain id, x2 = vCPU index or `WAIT_NOTHING_DONE`: complete
        /// that slot (as `Complete`, same checks), then block the caller
        /// until a domain it serves posts a request or an interrupt is
        /// pending for it. While a server waits here a posted request wakes
        /// it directly, with no `VIRQ_IOREQ` and no upcall, so one call
        /// answers a request and sleeps until the next. Returns 0; check
        /// the slots after it returns, as after any wake-up.
        Wait = 7,
        /// x1 = domain id: the caller, its registered server, has set up
        /// everything it serves of that domain (ranges, memory, fast page)
        /// and will answer its accesses. A domain that names a device model
        /// (`CreateDomain::device_model`, or `tessera,device-model` in a
        /// dom0less image) runs none of its vCPUs before this, however
        /// often it is unpaused; the first `Ready` starts a domain that was
        /// unpaused meanwhile, and a later one changes nothing. Only the
        /// registered server may (`-EPERM`), with `ioreq:register`.
        Ready = 8,
    }
}

/// `IoreqCmd::Wait` with no slot to complete.
pub const WAIT_NOTHING_DONE: u64 = u64::MAX;

/// `MapRange` flag: the range's writes of at most 4 bytes are posted (see
/// [`FastPage`]) instead of blocking the vCPU. Needs a fast page.
pub const RANGE_POSTED_WRITES: u64 = 1;
/// `MapRange` flag: reads of the range are looked up in the fast page's
/// shadows first (see [`FastPage`]). Needs a fast page.
pub const RANGE_SHADOWED_READS: u64 = 2;
/// Every `MapRange` flag the kernel knows; any other bit is refused.
pub const RANGE_FLAGS: u64 = RANGE_POSTED_WRITES | RANGE_SHADOWED_READS;

/// Entries in a fast page's posted-write ring.
pub const POSTED_ENTRIES: usize = 128;
/// Registers a fast page can shadow.
pub const SHADOW_ENTRIES: usize = 8;
/// Bit 63 of `ReadShadow::key`: the entry is in use.
pub const SHADOW_VALID: u64 = 1 << 63;

/// A posted write: what the guest stored, where.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct PostedWrite {
    pub addr: U64,
    pub data: U32,
    /// 1, 2 or 4.
    pub size: u8,
    pub pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<PostedWrite>() == 16);

/// A register the kernel answers reads of without asking the server.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ReadShadow {
    /// `SHADOW_VALID | address`: a read of at most 4 bytes at exactly this
    /// address gets `value`, truncated to the access size.
    pub key: U64,
    pub value: U64,
}

/// The two fast paths of a served domain's device registers, in a page of
/// the server's RAM (`Register`, x3). Both exist so that a chatty device
/// (a UART the guest polls and feeds a byte at a time) costs a trap into
/// the kernel per access instead of a round trip through the server.
///
/// - **Posted writes.** A write in a `RANGE_POSTED_WRITES` range goes into
///   `posted[produced % POSTED_ENTRIES]` and the vCPU goes on at once, as a
///   write posted on a bus would. The kernel advances `produced`; the server
///   applies entries in order and advances `consumed`. The server must
///   drain the ring before it serves any slot of the domain, so a later
///   read observes every earlier write. The kernel wakes the server when
///   the ring is half full and when a vCPU of the domain waits for an
///   interrupt (WFI); otherwise the server drains at its next wake-up.
///   When the ring is full, the write takes the slot path (the server
///   drains first).
/// - **Read shadows.** A read in a `RANGE_SHADOWED_READS` range that
///   matches a valid `shadows` entry is answered with its value. The server promises, by publishing the
///   entry, that reading the register has no side effect and that its
///   value does not depend on posted writes still in the ring. The kernel
///   reads `key`, `value`, `key` and uses the value only if the key did not
///   change; the server updates a value with one 8-byte store, and clears
///   a key before it changes what the key names.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct FastPage {
    /// Posted writes the kernel has produced (wrapping).
    pub produced: U32,
    pub pad0: [u8; 60],
    /// Posted writes the server has applied (wrapping).
    pub consumed: U32,
    pub pad1: [u8; 60],
    pub shadows: [ReadShadow; SHADOW_ENTRIES],
    pub posted: [PostedWrite; POSTED_ENTRIES],
    pub tail: [u8; 4096 - 256 - 16 * POSTED_ENTRIES],
}
const _: () = assert!(core::mem::size_of::<FastPage>() == 4096);
/// Byte offset of `FastPage::produced`.
pub const FAST_PRODUCED_OFFSET: usize = 0;
/// Byte offset of `FastPage::consumed`.
pub const FAST_CONSUMED_OFFSET: usize = 64;
/// Byte offset of `FastPage::shadows`.
pub const FAST_SHADOWS_OFFSET: usize = 128;
/// Byte offset of `FastPage::posted`.
pub const FAST_POSTED_OFFSET: usize = 256;
const _: () = assert!(core::mem::offset_of!(FastPage, produced) == FAST_PRODUCED_OFFSET);
const _: () = assert!(core::mem::offset_of!(FastPage, consumed) == FAST_CONSUMED_OFFSET);
const _: () = assert!(core::mem::offset_of!(FastPage, shadows) == FAST_SHADOWS_OFFSET);
const _: () = assert!(core::mem::offset_of!(FastPage, posted) == FAST_POSTED_OFFSET);

/// The VIRQ the kernel raises on a device model when a slot becomes
/// `STATE_IOREQ_READY` (Xen's `VIRQ_ARCH_0`, free on Arm).
pub const VIRQ_IOREQ: u32 = 16;

/// The VIRQ the kernel raises on a device model when keyboard input was
/// typed at a domain it serves (Xen's `VIRQ_ARCH_1`, free on Arm; Xen's
/// own `VIRQ_CONSOLE` means console_io input for dom0, which is not this).
/// The input waits in the kernel until `ConsoleRead` takes it, so one
/// raise may stand for many bytes, and a server that binds late loses
/// nothing: it reads once after it registers.
pub const VIRQ_CONSOLE_INPUT: u32 = 17;

/// Where a device model may map served domains' RAM (`MapMemory`): the
/// guest-physical space above its own RAM, below 4 GiB.
pub const MAP_WINDOW_BASE: u64 = 0x8000_0000;
/// Size of the map window.
pub const MAP_WINDOW_SIZE: u64 = 0x8000_0000;

/// Most MMIO ranges one served domain may have.
pub const MAX_RANGES: usize = 16;

/// Slot states (`ioreq_t.state`, low 4 bits of byte 30).
pub const STATE_IOREQ_NONE: u8 = 0;
/// Posted by the kernel; the device model should serve it.
pub const STATE_IOREQ_READY: u8 = 1;
/// Being served (optional, for the device model's own use).
pub const STATE_IOREQ_INPROCESS: u8 = 2;
/// Answered by the device model; the kernel consumes it.
pub const STATE_IORESP_READY: u8 = 3;

/// `ioreq_t.type`: a memory-mapped access.
pub const IOREQ_TYPE_COPY: u8 = 1;

/// Bit of byte 30 (`flags`): 1 = read (`dir`), after the 4 state bits and
/// `data_is_ptr`.
pub const FLAG_DIR_READ: u8 = 1 << 5;

/// Xen's `ioreq_t`, 32 bytes, one per vCPU at `vcpu * 32` in the page.
/// Byte 30 packs `state:4, data_is_ptr:1, dir:1, df:1, _pad:1` (LSB first).
#[derive(
    Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, PartialEq, Eq,
)]
#[repr(C)]
pub struct IoreqSlot {
    /// Guest-physical address of the access.
    pub addr: U64,
    /// Data written, or (for a read) the answer.
    pub data: U64,
    /// Repetitions; always 1 on Arm.
    pub count: U32,
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: U32,
    /// Unused by Tessera (Xen's per-vCPU event channel); 0.
    pub vp_eport: U32,
    pub pad0: [u8; 2],
    /// `state:4, data_is_ptr:1, dir:1, df:1`.
    pub flags: u8,
    /// `IOREQ_TYPE_COPY`.
    pub kind: u8,
}
const _: () = assert!(core::mem::size_of::<IoreqSlot>() == 32);
const _: () = assert!(core::mem::offset_of!(IoreqSlot, flags) == FLAGS_OFFSET);
// The kernel posts a slot as little-endian words: addr, data, count | size.
const _: () = assert!(core::mem::offset_of!(IoreqSlot, data) == 8);
const _: () = assert!(core::mem::offset_of!(IoreqSlot, count) == 16);
const _: () = assert!(core::mem::offset_of!(IoreqSlot, size) == 20);
const _: () = assert!(core::mem::offset_of!(IoreqSlot, vp_eport) == 24);
const _: () = assert!(core::mem::offset_of!(IoreqSlot, kind) == 31);

/// Byte offset of `flags` (and so of the state) in a slot.
pub const FLAGS_OFFSET: usize = 30;
/// Bytes per slot.
pub const SLOT_SIZE: usize = 32;
/// Slots per 4 KiB page: the most vCPUs a served domain may have.
pub const SLOTS_PER_PAGE: usize = 4096 / SLOT_SIZE;

impl IoreqSlot {
    /// The slot's state.
    pub fn state(&self) -> u8 {
        self.flags & 0xf
    }

    /// Whether the access is a read.
    pub fn is_read(&self) -> bool {
        self.flags & FLAG_DIR_READ != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_layout_is_xens() {
        let s = IoreqSlot {
            addr: 0x0900_0018.into(),
            data: 7.into(),
            count: 1.into(),
            size: 4.into(),
            flags: STATE_IOREQ_READY | FLAG_DIR_READ,
            kind: IOREQ_TYPE_COPY,
            ..Default::default()
        };
        let b = s.as_bytes();
        assert_eq!(&b[0..8], &0x0900_0018u64.to_le_bytes());
        assert_eq!(b[16], 1);
        assert_eq!(b[20], 4);
        assert_eq!(b[30], 0x21);
        assert_eq!(b[31], 1);
        assert_eq!(s.state(), STATE_IOREQ_READY);
        assert!(s.is_read());
        assert_eq!(IoreqCmd::try_from(8), Ok(IoreqCmd::Ready));
        assert_eq!(IoreqCmd::try_from(9), Err(9));
    }
}
