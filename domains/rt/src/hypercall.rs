//! Xen-style hypercalls: `hvc #0xEA1`, op in x16, arguments in x0..x5,
//! result in x0 (`tessera_ipc::hypercall`).
//!
//! The one idea: pointers are passed as guest virtual addresses, which equal
//! IPAs because the runtime runs with an identity map, so a reference can be
//! handed to the hypervisor as it is. The raw call is `unsafe` because the
//! hypervisor may write through any pointer argument; the typed wrappers
//! pass only references they own.

use core::arch::asm;
use tessera_ipc::hypercall::{
    ConsoleIoCmd, Op, SchedCmd, SchedShutdown, ShutdownReason, XenFeatureInfo, XenVersionCmd,
    HVC_IMM_HYPERCALL,
};

/// Issues hypercall `op` and returns x0. x1..x5 and x16 are treated as
/// clobbered, as Xen allows.
///
/// # Safety
/// Every argument the op interprets as a pointer must be valid for the reads
/// and writes the op makes, or lie outside memory this program uses (the
/// negative tests pass addresses outside RAM on purpose).
pub unsafe fn hypercall(op: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> u64 {
    let ret;
    // SAFETY: the caller guarantees the pointer arguments; the hvc itself
    // only transfers control to the hypervisor and back.
    unsafe {
        asm!(
            "hvc #{imm}",
            imm = const HVC_IMM_HYPERCALL,
            inout("x0") a0 => ret,
            inout("x1") a1 => _,
            inout("x2") a2 => _,
            inout("x3") a3 => _,
            inout("x4") a4 => _,
            inout("x5") a5 => _,
            inout("x16") op => _,
            options(nostack),
        );
    }
    ret
}

/// `xen_version` for the sub-commands that take no buffer (VERSION,
/// PAGESIZE).
pub fn xen_version(cmd: XenVersionCmd) -> u64 {
    // SAFETY: a null argument; these sub-commands do not dereference it.
    unsafe { hypercall(Op::XenVersion as u64, cmd as u64, 0, 0, 0, 0, 0) }
}

/// `XENVER_extraversion` into a 16-byte buffer.
pub fn xen_extraversion(buf: &mut [u8; 16]) -> u64 {
    // SAFETY: the buffer is owned, writable and exactly the size Xen writes.
    unsafe {
        hypercall(
            Op::XenVersion as u64,
            XenVersionCmd::ExtraVersion as u64,
            buf.as_mut_ptr() as u64,
            0,
            0,
            0,
            0,
        )
    }
}

/// `XENVER_get_features`; `info.submap_idx` selects the submap.
pub fn xen_get_features(info: &mut XenFeatureInfo) -> u64 {
    // SAFETY: `info` is an owned, writable `xen_feature_info`.
    unsafe {
        hypercall(
            Op::XenVersion as u64,
            XenVersionCmd::GetFeatures as u64,
            info as *mut XenFeatureInfo as u64,
            0,
            0,
            0,
            0,
        )
    }
}

/// `CONSOLEIO_write`; Xen returns 0 on success.
pub fn console_write(bytes: &[u8]) -> u64 {
    // SAFETY: the hypervisor only reads `bytes.len()` bytes of the slice.
    unsafe {
        hypercall(
            Op::ConsoleIo as u64,
            ConsoleIoCmd::Write as u64,
            bytes.len() as u64,
            bytes.as_ptr() as u64,
            0,
            0,
            0,
        )
    }
}

/// `CONSOLEIO_read`; returns the number of bytes read.
pub fn console_read(buf: &mut [u8]) -> u64 {
    // SAFETY: the hypervisor writes at most `buf.len()` bytes into it.
    unsafe {
        hypercall(
            Op::ConsoleIo as u64,
            ConsoleIoCmd::Read as u64,
            buf.len() as u64,
            buf.as_mut_ptr() as u64,
            0,
            0,
            0,
        )
    }
}

fn sched_op(cmd: SchedCmd, arg: u64) -> u64 {
    // SAFETY: only `sched_shutdown` passes a pointer, to an owned struct.
    unsafe { hypercall(Op::SchedOp as u64, cmd as u64, arg, 0, 0, 0, 0) }
}

/// `SCHEDOP_yield`: give up the pCPU to another runnable vCPU.
pub fn sched_yield() -> u64 {
    sched_op(SchedCmd::Yield, 0)
}

/// `SCHEDOP_block`: sleep until an interrupt is pending for this vCPU.
pub fn sched_block() -> u64 {
    sched_op(SchedCmd::Block, 0)
}

/// `SCHEDOP_shutdown`; returns only on error.
pub fn sched_shutdown(reason: ShutdownReason) -> u64 {
    let arg = SchedShutdown {
        reason: (reason as u32).into(),
    };
    sched_op(SchedCmd::Shutdown, &arg as *const SchedShutdown as u64)
}
