//! The IOREQ calls a device-model domain makes (`tessera_ipc::ioreq`), and
//! its view of the slot page the kernel posts accesses to.

use crate::hypercall::hypercall;
use crate::xen::{check, HypercallError};
use core::sync::atomic::{AtomicU8, Ordering};
use tessera_ipc::hypercall::Op;
use tessera_ipc::ioreq::{
    IoreqCmd, FLAGS_OFFSET, FLAG_DIR_READ, SLOT_SIZE, STATE_IOREQ_READY, STATE_IORESP_READY,
    WAIT_NOTHING_DONE,
};

type Result<T> = core::result::Result<T, HypercallError>;

fn call(cmd: IoreqCmd, a1: u64, a2: u64, a3: u64) -> Result<u64> {
    // SAFETY: the only pointer arguments (console buffers) are passed by
    // the wrappers below from live slices of the stated length.
    check(unsafe { hypercall(Op::Ioreq as u64, cmd as u64, a1, a2, a3, 0, 0) })
}

/// Become domain `dom`'s server, with its slots in the page at `page_ipa`.
pub fn register(dom: u16, page_ipa: u64) -> Result<()> {
    call(IoreqCmd::Register, dom.into(), page_ipa, 0).map(|_| ())
}

/// Serve domain `dom`'s accesses to `[base, base + size)`.
pub fn map_range(dom: u16, base: u64, size: u64) -> Result<()> {
    call(IoreqCmd::MapRange, dom.into(), base, size).map(|_| ())
}

/// Map domain `dom`'s RAM at `ipa` (in the map window); returns its size.
pub fn map_memory(dom: u16, ipa: u64) -> Result<u64> {
    call(IoreqCmd::MapMemory, dom.into(), ipa, 0)
}

/// vCPU `vcpu`'s slot of domain `dom` is answered.
pub fn complete(dom: u16, vcpu: u32) -> Result<()> {
    call(IoreqCmd::Complete, dom.into(), vcpu.into(), 0).map(|_| ())
}

/// Complete vCPU `done`'s slot of domain `dom`, if one is named, and sleep
/// until a served domain posts a request or an interrupt is pending (see
/// `IoreqCmd::Wait`). Call it with IRQs masked after finding no work, so
/// that an interrupt in between still ends the wait; take them after.
pub fn wait(dom: u16, done: Option<u32>) -> Result<()> {
    let slot = done.map_or(WAIT_NOTHING_DONE, u64::from);
    call(IoreqCmd::Wait, dom.into(), slot, 0).map(|_| ())
}

/// Drive interrupt line `intid` of domain `dom`.
pub fn set_irq_level(dom: u16, intid: u32, level: bool) -> Result<()> {
    call(
        IoreqCmd::SetIrqLevel,
        dom.into(),
        intid.into(),
        level.into(),
    )
    .map(|_| ())
}

/// Print `bytes` as domain `dom`'s console output.
pub fn console_write(dom: u16, bytes: &[u8]) -> Result<()> {
    for chunk in bytes.chunks(tessera_ipc::hypercall::CONSOLE_IO_MAX) {
        call(
            IoreqCmd::ConsoleWrite,
            dom.into(),
            chunk.as_ptr() as u64,
            chunk.len() as u64,
        )?;
    }
    Ok(())
}

/// Keyboard input for domain `dom`, if it has the console focus.
pub fn console_read(dom: u16, buf: &mut [u8]) -> Result<usize> {
    call(
        IoreqCmd::ConsoleRead,
        dom.into(),
        buf.as_mut_ptr() as u64,
        buf.len() as u64,
    )
    .map(|n| n as usize)
}

/// One posted access, as read from its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub addr: u64,
    pub size: u8,
    /// `None` for a read; the value for a write.
    pub write: Option<u64>,
}

/// A page of slots, one per vCPU of a served domain, shared with the kernel.
pub struct SlotPage {
    base: *mut u8,
    slots: usize,
}

impl SlotPage {
    /// # Safety
    /// `base` must be a page of this domain's memory registered with
    /// [`register`] and used for nothing else, and `slots` at most
    /// `SLOTS_PER_PAGE`.
    pub unsafe fn new(base: *mut u8, slots: usize) -> Self {
        Self { base, slots }
    }

    fn flags(&self, vcpu: usize) -> Option<&AtomicU8> {
        if vcpu >= self.slots {
            return None;
        }
        // SAFETY: inside the page (vcpu < slots ≤ SLOTS_PER_PAGE); the flags
        // byte is shared with the kernel and only accessed atomically.
        Some(unsafe { &*(self.base.add(vcpu * SLOT_SIZE + FLAGS_OFFSET) as *const AtomicU8) })
    }

    /// The access posted in vCPU `vcpu`'s slot, if one waits.
    pub fn take(&self, vcpu: usize) -> Option<Access> {
        let flags = self.flags(vcpu)?.load(Ordering::Acquire);
        if flags & 0xf != STATE_IOREQ_READY {
            return None;
        }
        // SAFETY: the slot is inside the page; the kernel wrote these fields
        // before publishing READY (Acquire above).
        let (addr, data, size) = unsafe {
            let s = self.base.add(vcpu * SLOT_SIZE);
            (
                core::ptr::read_volatile(s as *const u64),
                core::ptr::read_volatile(s.add(8) as *const u64),
                core::ptr::read_volatile(s.add(20) as *const u32),
            )
        };
        Some(Access {
            addr,
            size: size.min(8) as u8,
            write: (flags & FLAG_DIR_READ == 0).then_some(data),
        })
    }

    /// Answer vCPU `vcpu`'s access (`data` is ignored for a write).
    pub fn answer(&self, vcpu: usize, data: u64) {
        let Some(flags) = self.flags(vcpu) else {
            return;
        };
        // SAFETY: inside the page; `data` is at offset 8 of the slot.
        unsafe { core::ptr::write_volatile(self.base.add(vcpu * SLOT_SIZE + 8) as *mut u64, data) };
        flags.store(STATE_IORESP_READY, Ordering::Release);
    }

    /// Whether any slot holds a posted access.
    pub fn any_ready(&self) -> bool {
        (0..self.slots).any(|v| {
            self.flags(v)
                .is_some_and(|f| f.load(Ordering::Acquire) & 0xf == STATE_IOREQ_READY)
        })
    }
}
