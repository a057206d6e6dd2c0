//! The IOREQ calls a device-model domain makes (`tessera_ipc::ioreq`); its
//! views of the pages it shares with the kernel are in `ioreq_pages`.

use crate::hypercall::hypercall;
use crate::xen::{check, HypercallError};
use tessera_ipc::hypercall::Op;
use tessera_ipc::ioreq::{IoreqCmd, WAIT_NOTHING_DONE};

pub use crate::ioreq_pages::{Access, FastView, SlotPage};

type Result<T> = core::result::Result<T, HypercallError>;

fn call(cmd: IoreqCmd, a1: u64, a2: u64, a3: u64) -> Result<u64> {
    call4(cmd, a1, a2, a3, 0)
}

fn call4(cmd: IoreqCmd, a1: u64, a2: u64, a3: u64, a4: u64) -> Result<u64> {
    // SAFETY: the only pointer arguments (console buffers) are passed by
    // the wrappers below from live slices of the stated length.
    check(unsafe { hypercall(Op::Ioreq as u64, cmd as u64, a1, a2, a3, a4, 0) })
}

/// Become domain `dom`'s server, with its slots in the page at `page_ipa`
/// and its `FastPage` at `fast_ipa` (0: none).
pub fn register(dom: u16, page_ipa: u64, fast_ipa: u64) -> Result<()> {
    call4(IoreqCmd::Register, dom.into(), page_ipa, fast_ipa, 0).map(|_| ())
}

/// Serve domain `dom`'s accesses to `[base, base + size)`, with the
/// `RANGE_*` `flags`.
pub fn map_range(dom: u16, base: u64, size: u64, flags: u64) -> Result<()> {
    call4(IoreqCmd::MapRange, dom.into(), base, size, flags).map(|_| ())
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

/// Say that everything domain `dom` needs of us is registered: a domain
/// that names us as its device model runs only after this.
pub fn ready(dom: u16) -> Result<()> {
    call(IoreqCmd::Ready, dom.into(), 0, 0).map(|_| ())
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

/// Keyboard input typed at domain `dom` (while it had the console focus),
/// oldest first; 0 bytes when there is none. `VIRQ_CONSOLE_INPUT` says when
/// there is more.
pub fn console_read(dom: u16, buf: &mut [u8]) -> Result<usize> {
    call(
        IoreqCmd::ConsoleRead,
        dom.into(),
        buf.as_mut_ptr() as u64,
        buf.len() as u64,
    )
    .map(|n| n as usize)
}
