//! Guest traps: hypercalls, PSCI, trapped system registers, stage-2 aborts
//! and physical interrupts. Each handler decodes first (portable code in
//! the library), then acts, then asks the scheduler which vCPU to resume.
//! Nothing here may panic on guest input: every lookup is checked and a bad
//! request becomes an error code, an injected exception or a stopped domain.

use super::console::log;
use super::*;
use crate::arch::aarch64::{read_sysreg, write_sysreg};
use tessera_ipc::errno::Errno;
use tessera_ipc::hypercall::{
    self as hc, SchedShutdown, ShutdownReason, XenFeatureInfo, XenVersionCmd, HVC_IMM_HYPERCALL,
    HVC_IMM_SMCCC,
};
use tessera_ipc::psci::{self, AffinityState, Status};
use tessera_kernel::esr::{self, DataAbort, SysReg, SysRegAccess, Trap};
use tessera_kernel::hypercall::{self as dec, Call, IoreqCall, PsciCall};
use tessera_kernel::idregs;
use tessera_kernel::power::{PowerOnError, PowerState};
use tessera_policy::{ConsolePerm, DomainPerm};
use zerocopy::IntoBytes;

/// What the trapped vCPU does next.
enum Next {
    Resume,
    Yield,
    Block,
    /// The vCPU is off or its domain stopped.
    Leave,
}

/// Sync exception from a guest. Leaf hypercalls that read no state and
/// change none are answered here without entering the general path; the
/// rest goes to `handle_sync`.
#[unsafe(no_mangle)]
extern "C" fn handle_guest_sync(frame: *mut VcpuFrame) -> *mut VcpuFrame {
    let esr = read_sysreg!("esr_el2");
    if esr >> 26 == 0x16 && esr & 0xffff == u64::from(HVC_IMM_HYPERCALL) {
        // SAFETY: the trap entry passes the trapped vCPU's own frame, which
        // only this pCPU touches.
        let f = unsafe { &mut *frame };
        if let Some(ret) = dec::leaf_result(f.x[16], f.x[0]) {
            f.x[0] = ret;
            if can_resume_directly(f) {
                return frame;
            }
            return finish_slow(frame, Next::Resume);
        }
        // SCHEDOP_yield takes no arguments: straight to the scheduler.
        if dec::is_sched_yield(f.x[16], f.x[0]) {
            f.x[0] = 0;
            return finish_slow(frame, Next::Yield);
        }
    }
    handle_sync(frame, esr)
}

#[inline(never)]
fn finish_slow(frame: *mut VcpuFrame, next: Next) -> *mut VcpuFrame {
    match vcpu_of_frame(frame) {
        Some(v) => finish(v, next),
        None => arch::halt(),
    }
}

#[inline(never)]
fn handle_sync(frame: *mut VcpuFrame, esr: u64) -> *mut VcpuFrame {
    let Some(v) = vcpu_of_frame(frame) else {
        arch::halt()
    };
    // SAFETY: trap entry runs on the pCPU that owns the trapped vCPU.
    let (f, _) = unsafe { owned(v) };
    let next = match esr::decode(esr) {
        Trap::Hvc {
            imm: HVC_IMM_HYPERCALL,
        } => hypercall(v, f),
        Trap::Hvc { imm: HVC_IMM_SMCCC } => psci_call(v, f),
        Trap::Hvc { .. } => {
            f.x[0] = Status::NotSupported.to_ret();
            Next::Resume
        }
        Trap::Smc { .. } => {
            advance_pc(esr);
            psci_call(v, f)
        }
        Trap::FpAccess => {
            take_fp(f.pcpu as usize, v);
            Next::Resume
        }
        Trap::Wfx { wfe } => {
            advance_pc(esr);
            if wfe {
                Next::Yield
            } else {
                // What the guest waits for may be the effect of its posted
                // writes: its device model must hear of them now.
                if let Some(s) = vcpu(v) {
                    ioreq::announce_posted(s.domain.load(Ordering::Relaxed));
                }
                Next::Block
            }
        }
        Trap::SysReg(a) => {
            sysreg(v, f, a, esr);
            Next::Resume
        }
        Trap::DataAbort(d) => data_abort(v, f, d, esr),
        Trap::InstructionAbort => fault(v, esr),
        Trap::Other(_) => {
            // SVE, SME, pointer authentication and anything else the guest
            // was told it does not have: an Undefined Instruction for it.
            guest::inject_undef(f, 1 << 25);
            Next::Resume
        }
    };
    finish(v, next)
}

/// IRQ (or FIQ) while a guest ran.
#[unsafe(no_mangle)]
extern "C" fn handle_guest_irq(frame: *mut VcpuFrame) -> *mut VcpuFrame {
    let Some(v) = vcpu_of_frame(frame) else {
        arch::halt()
    };
    let p = vcpu(v).map(|s| s.pcpu.load(Ordering::Relaxed)).unwrap_or(0);
    drain_irqs(p);
    // SAFETY: we are pCPU `p`.
    let expired = unsafe { pcpu_inner(p) }.slice_expired;
    finish(v, if expired { Next::Yield } else { Next::Resume })
}

/// SError from a guest: the domain is stopped.
#[unsafe(no_mangle)]
extern "C" fn handle_guest_serror(frame: *mut VcpuFrame) -> *mut VcpuFrame {
    let Some(v) = vcpu_of_frame(frame) else {
        arch::halt()
    };
    let esr = read_sysreg!("esr_el2");
    let next = fault(v, esr);
    finish(v, next)
}

/// An exception taken from EL2 itself: a kernel bug. Log it and stop this pCPU.
#[unsafe(no_mangle)]
extern "C" fn kernel_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    log!(
        "kernel exception {} ESR {:#x} ELR {:#x} FAR {:#x}; pcpu halted",
        kind,
        esr,
        elr,
        far
    );
    arch::halt()
}

fn advance_pc(esr: u64) {
    write_sysreg!(
        "elr_el2",
        read_sysreg!("elr_el2") + esr::instruction_len(esr)
    );
}

/// Decide which vCPU the exit path resumes.
fn finish(v: usize, next: Next) -> *mut VcpuFrame {
    let slot = vcpu(v);
    let p = slot.map_or(0, |s| s.pcpu.load(Ordering::Relaxed));
    let alive =
        || slot.is_some_and(|s| s.power.is_on() && s.domain().is_some_and(|d| d.is_running()));
    match next {
        Next::Resume if alive() => {
            // Fast path: the same vCPU goes on.
            // SAFETY: we are pCPU `p`.
            if unsafe { pcpu_inner(p) }.slice_expired {
                return reschedule(p);
            }
            flush_lrs(v);
            // SAFETY: owner pCPU.
            unsafe { owned(v) }.0 as *mut VcpuFrame
        }
        // The scheduler only picks runnable vCPUs, so a yield needs no
        // liveness check of its own. A vCPU that is not coming back keeps
        // its timer in the hardware only until another vCPU is loaded; if it
        // fires meanwhile, `drain_irqs` masks it.
        Next::Yield => reschedule(p),
        Next::Block if alive() => {
            // SAFETY: owner pCPU.
            unsafe { owned(v) }.1.blocked = true;
            // The guest may have finished with list registers since it last
            // trapped, and an edge that arrived while one of them held its
            // interrupt is latched in the model, not pending anywhere the
            // wake-up checks look (`runnable`). Retiring and refilling now
            // puts it back in a list register, where it ends the block.
            flush_lrs(v);
            // Its timer stays in the hardware while it stays loaded; a
            // switch to another vCPU saves it (`switch_to`).
            reschedule(p)
        }
        Next::Resume | Next::Block | Next::Leave => {
            stash_timer(p, v);
            reschedule(p)
        }
    }
}

fn reschedule(p: usize) -> *mut VcpuFrame {
    let next = pick_or_idle(p);
    switch_to(p, next) as *mut VcpuFrame
}

/// A stage-2 abort nothing else claimed: the first touch of a block of RAM
/// (its own, or a served domain's through its device-model window), which
/// is filled and retried; else stop the domain, with one log line. Reached
/// only off the MMIO paths, so they pay nothing for it.
fn fault(v: usize, esr: u64) -> Next {
    let hpfar = read_sysreg!("hpfar_el2");
    let far = read_sysreg!("far_el2");
    let ipa = ((hpfar >> 4) << 12) | (far & 0xfff);
    if let Some(slot) = vcpu(v).filter(|_| esr::is_translation_abort(esr)) {
        let di = slot.domain.load(Ordering::Relaxed);
        if let lazy::Fault::Filled = lazy::on_fault(di, ipa) {
            return Next::Resume;
        }
    }
    if let Some(d) = domain_of(v) {
        log!(
            "d{} {}: stage-2 fault at IPA {:#x} ESR {:#x}; domain stopped",
            d.id,
            d.name,
            ipa,
            esr
        );
        if let Some(slot) = vcpu(v) {
            stop_domain(slot.domain.load(Ordering::Relaxed), StopReason::Fault);
        }
    }
    Next::Leave
}

fn set_reg(f: &mut VcpuFrame, r: u8, val: u64) {
    if let Some(x) = f.x.get_mut(usize::from(r)) {
        *x = val;
    }
}

fn get_reg(f: &VcpuFrame, r: u8) -> u64 {
    f.x.get(usize::from(r)).copied().unwrap_or(0)
}

fn data_abort(v: usize, f: &mut VcpuFrame, d: DataAbort, esr: u64) -> Next {
    let hpfar = read_sysreg!("hpfar_el2");
    let far = read_sysreg!("far_el2");
    let ipa = ((hpfar >> 4) << 12) | (far & 0xfff);
    let Some(dom) = domain_of(v) else {
        return Next::Leave;
    };
    let Some((frame_kind, off)) = Vgic::decode_for(dom.nr_vcpus, ipa) else {
        return device_access(v, f, d, ipa, esr);
    };
    let Some(acc) = d.syndrome else {
        log!(
            "d{} {}: GIC access at IPA {:#x} without syndrome (ESR {:#x})",
            dom.id,
            dom.name,
            ipa,
            esr
        );
        return fault(v, esr);
    };
    // An access to another vCPU's redistributor is allowed (Linux reads
    // every GICR_TYPER to find its own); the model bounds the index.
    let mut vgic = dom.vgic.lock();
    if d.write {
        let raw = get_reg(f, acc.reg);
        let val = if acc.size == 8 {
            raw
        } else {
            raw & ((1u64 << (acc.size * 8)) - 1)
        };
        let targets = vgic.mmio_write(frame_kind, off, acc.size, val).unwrap_or(0);
        drop(vgic);
        notify_targets(dom, targets);
    } else {
        let val = vgic.mmio_read(frame_kind, off, acc.size).unwrap_or(0);
        drop(vgic);
        set_reg(f, acc.reg, ioreq::load_value(acc, val));
    }
    advance_pc(esr);
    Next::Resume
}

/// A data abort outside RAM and the GIC: an MMIO access for the domain's
/// device model, if one registered the address. Anything else (no server,
/// or no syndrome to say what the instruction does) stops the domain: the
/// kernel does not decode instructions and does not guess.
fn device_access(v: usize, f: &mut VcpuFrame, d: DataAbort, ipa: u64, esr: u64) -> Next {
    let (Some(slot), Some(acc)) = (vcpu(v), d.syndrome) else {
        return fault(v, esr);
    };
    let di = slot.domain.load(Ordering::Relaxed);
    let idx = slot.index.load(Ordering::Relaxed);
    let write = d.write.then(|| {
        let raw = get_reg(f, acc.reg);
        if acc.size == 8 {
            raw
        } else {
            raw & ((1u64 << (acc.size * 8)) - 1)
        }
    });
    // SAFETY: trap entry runs on the owner pCPU; only the frame is borrowed.
    let own = unsafe { owner_state(v) };
    match ioreq::post(di, idx, ipa, acc, write, own) {
        ioreq::Outcome::Unclaimed => fault(v, esr),
        ioreq::Outcome::Waiting => {
            // The PC moves past the access now; the answer only fills a
            // register.
            advance_pc(esr);
            Next::Block
        }
        ioreq::Outcome::Done(read) => {
            if let Some(raw) = read {
                set_reg(f, acc.reg, ioreq::load_value(acc, raw));
            }
            advance_pc(esr);
            Next::Resume
        }
    }
}

/// Mark the vCPUs in `mask` (domain-local indices) as having new interrupts
/// and kick their pCPUs.
fn notify_targets(d: &Domain, mask: u32) {
    for i in 0..d.nr_vcpus {
        if mask & (1 << i) != 0 {
            let v = d.first_vcpu + i;
            if let Some(s) = vcpu(v) {
                s.irq_hint.store(true, Ordering::Release);
                kick_owner(v);
            }
        }
    }
}

fn sysreg(v: usize, f: &mut VcpuFrame, a: SysRegAccess, esr: u64) {
    if a.reg == SysReg::ICC_SGI1R_EL1
        || a.reg == SysReg::ICC_ASGI1R_EL1
        || a.reg == SysReg::ICC_SGI0R_EL1
    {
        if !a.read {
            if let (Some(d), Some(slot)) = (domain_of(v), vcpu(v)) {
                let val = get_reg(f, a.rt);
                let idx = slot.index.load(Ordering::Relaxed);
                let targets = {
                    let mut g = d.vgic.lock();
                    if a.reg == SysReg::ICC_SGI0R_EL1 {
                        g.write_sgi0r(idx, val)
                    } else {
                        g.write_sgi1r(idx, val)
                    }
                };
                notify_targets(d, targets);
            }
        } else {
            set_reg(f, a.rt, 0);
        }
        advance_pc(esr);
        return;
    }
    if a.reg.is_feature_id() {
        if a.read {
            set_reg(f, a.rt, idregs::sanitize(a.reg, read_id_reg(a.reg)));
        }
        advance_pc(esr);
        return;
    }
    // Anything else trapped is a register the guest was not given.
    guest::inject_undef(f, 1 << 25);
}

/// Read a feature-ID register by encoding (op0=3, op1=0, CRn=0, CRm=1..7).
fn read_id_reg(r: SysReg) -> u64 {
    macro_rules! id_regs {
        ($($crm:literal, $op2:literal);* $(;)?) => {
            match (r.crm, r.op2) {
                $(($crm, $op2) => read_sysreg!(concat!("S3_0_C0_C", stringify!($crm), "_", stringify!($op2))),)*
                _ => 0,
            }
        };
    }
    id_regs!(
        1,0; 1,1; 1,2; 1,3; 1,4; 1,5; 1,6; 1,7;
        2,0; 2,1; 2,2; 2,3; 2,4; 2,5; 2,6; 2,7;
        3,0; 3,1; 3,2; 3,3; 3,4; 3,5; 3,6; 3,7;
        4,0; 4,1; 4,2; 4,3; 4,4; 4,5; 4,6; 4,7;
        5,0; 5,1; 5,2; 5,3; 5,4; 5,5; 5,6; 5,7;
        6,0; 6,1; 6,2; 6,3; 6,4; 6,5; 6,6; 6,7;
        7,0; 7,1; 7,2; 7,3; 7,4; 7,5; 7,6; 7,7;
    )
}

/// Copy guest memory at virtual address `va` into `out`, page by page,
/// after checking that each page is this domain's RAM.
pub(super) fn copy_from_guest(d: &Domain, va: u64, out: &mut [u8]) -> Result<(), Errno> {
    let mut done = 0usize;
    while done < out.len() {
        let cur = va.checked_add(done as u64).ok_or(Errno::Efault)?;
        let chunk = ((PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize).min(out.len() - done);
        let ipa = guest::guest_va_to_ipa(cur).ok_or(Errno::Efault)?;
        let pa = d.ram_pa_of(ipa, chunk as u64).ok_or(Errno::Efault)?;
        let dst = out.get_mut(done..done + chunk).ok_or(Errno::Efault)?;
        // SAFETY: `pa..pa+chunk` was just checked to be this domain's RAM,
        // identity-mapped at EL2. The guest may change it concurrently, so
        // we copy bytes and never form a reference to guest memory.
        unsafe { core::ptr::copy_nonoverlapping(pa as *const u8, dst.as_mut_ptr(), chunk) };
        done += chunk;
    }
    Ok(())
}

/// Copy `data` to guest virtual address `va`, with the same checks.
pub(super) fn copy_to_guest(d: &Domain, va: u64, data: &[u8]) -> Result<(), Errno> {
    let mut done = 0usize;
    while done < data.len() {
        let cur = va.checked_add(done as u64).ok_or(Errno::Efault)?;
        let chunk = ((PAGE_SIZE - (cur & (PAGE_SIZE - 1))) as usize).min(data.len() - done);
        let ipa = guest::guest_va_to_ipa(cur).ok_or(Errno::Efault)?;
        let pa = d.ram_pa_of(ipa, chunk as u64).ok_or(Errno::Efault)?;
        let src = data.get(done..done + chunk).ok_or(Errno::Efault)?;
        // SAFETY: as in `copy_from_guest`, for writing.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), pa as *mut u8, chunk) };
        done += chunk;
    }
    Ok(())
}

fn hypercall(v: usize, f: &mut VcpuFrame) -> Next {
    let args = [f.x[0], f.x[1], f.x[2], f.x[3], f.x[4], f.x[5]];
    let call = match dec::decode(f.x[16], &args) {
        Ok(c) => c,
        Err(e) => {
            f.x[0] = e.to_ret();
            return Next::Resume;
        }
    };
    let Some(d) = domain_of(v) else {
        return Next::Leave;
    };
    let p = f.pcpu as usize;
    let di = vcpu(v).map_or(usize::MAX, |s| s.domain.load(Ordering::Relaxed));
    let (ret, next) = match call {
        Call::EventChannel { cmd, arg } => (
            events::event_channel_op(p, di, cmd, arg.raw()),
            Next::Resume,
        ),
        Call::Memory { cmd, arg } => (events::memory_op(p, di, cmd, arg.raw()), Next::Resume),
        Call::Vcpu { cmd, vcpu, arg } => {
            (events::vcpu_op(p, di, cmd, vcpu, arg.raw()), Next::Resume)
        }
        Call::Hvm { cmd, arg } => (events::hvm_op(di, cmd, arg.raw()), Next::Resume),
        Call::Ioreq(IoreqCall::ConsoleWrite { dom, buf, len }) => {
            let r = ioreq::console_target(p, di, dom).and_then(|(ti, t)| {
                console_from_guest(d, buf.raw(), len.min(hc::CONSOLE_IO_MAX), ti, t)?;
                Ok(0)
            });
            (r, Next::Resume)
        }
        Call::Ioreq(IoreqCall::ConsoleRead { dom, buf, len }) => {
            let r = ioreq::console_target(p, di, dom).and_then(|(ti, _)| {
                let mut tmp = [0u8; hc::CONSOLE_IO_MAX];
                let dst = &mut tmp[..len.min(hc::CONSOLE_IO_MAX)];
                // Taken only once delivered: a bad buffer loses no input.
                let n = console::peek_input(ti, dst);
                copy_to_guest(d, buf.raw(), &dst[..n])?;
                console::consume_input(ti, n);
                Ok(n as u64)
            });
            (r, Next::Resume)
        }
        Call::Ioreq(IoreqCall::Wait { dom, vcpu }) => match ioreq::wait(p, di, v, dom, vcpu) {
            Ok(()) => (Ok(0), Next::Block),
            Err(e) => (Err(e), Next::Resume),
        },
        Call::Ioreq(call) => (ioreq::ioreq_op(p, di, call), Next::Resume),
        Call::Control(call) => (control::control_op(p, di, call), Next::Resume),
        Call::GrantTable { cmd, arg, count } => {
            match grant::grant_table_op(p, di, cmd, arg.raw(), count) {
                Ok(grant::Outcome::Done) => (Ok(0), Next::Resume),
                Ok(grant::Outcome::Continue { uop, count }) => {
                    continue_hypercall(f, uop, count);
                    // x0 keeps the sub-command for the re-executed call.
                    (Ok(cmd), Next::Resume)
                }
                Err(e) => (Err(e), Next::Resume),
            }
        }
        Call::XenVersion { cmd, arg } => (xen_version(d, cmd, arg.raw()), Next::Resume),
        Call::ConsoleWrite { .. } if console_denied(p, d) => (Err(Errno::Eacces), Next::Resume),
        Call::ConsoleWrite { len, .. } if len > hc::CONSOLE_IO_MAX => return Next::Resume,
        Call::ConsoleWrite { buf, len } => (
            console_from_guest(d, buf.raw(), len, di, d).map(|()| 0),
            Next::Resume,
        ),
        // No console input yet: nothing to read.
        Call::ConsoleRead { .. } => (Ok(0), Next::Resume),
        Call::SchedYield => (Ok(0), Next::Yield),
        Call::SchedBlock => (Ok(0), Next::Block),
        Call::SchedShutdown { .. }
            if mac::check(p, d.sid, d.sid, DomainPerm::Shutdown).is_err() =>
        {
            (Err(Errno::Eacces), Next::Resume)
        }
        Call::SchedShutdown { arg } => {
            let mut raw = SchedShutdown::default();
            match copy_from_guest(d, arg.raw(), raw.as_mut_bytes()) {
                Err(e) => (Err(e), Next::Resume),
                Ok(()) => match ShutdownReason::try_from(u64::from(raw.reason.get())) {
                    Err(_) => (Err(Errno::Einval), Next::Resume),
                    Ok(reason) => {
                        let why = match reason {
                            ShutdownReason::Reboot => StopReason::Reboot,
                            ShutdownReason::Crash | ShutdownReason::Watchdog => StopReason::Crash,
                            ShutdownReason::Poweroff | ShutdownReason::Suspend => {
                                StopReason::Poweroff
                            }
                        };
                        stop_domain(
                            vcpu(v)
                                .map(|s| s.domain.load(Ordering::Relaxed))
                                .unwrap_or(usize::MAX),
                            why,
                        );
                        (Ok(0), Next::Leave)
                    }
                },
            }
        }
    };
    f.x[0] = match ret {
        Ok(val) => val,
        Err(e) => e.to_ret(),
    };
    next
}

/// Append `len` bytes at guest virtual address `va` of domain `d` to the
/// console of domain `ti` (`to`), through a small buffer a chunk at a time
/// (console writes are mostly a character or a line; zeroing a buffer of
/// the largest size for each would cost more than the copy). As with Xen's
/// console_io, a bad page ends the write with `Efault` after the chunks
/// before it.
fn console_from_guest(
    d: &Domain,
    va: u64,
    len: usize,
    ti: usize,
    to: &Domain,
) -> Result<(), Errno> {
    let mut chunk = [0u8; 64];
    let mut done = 0;
    while done < len {
        let part = chunk.get_mut(..(len - done).min(64)).ok_or(Errno::Efault)?;
        copy_from_guest(d, va.checked_add(done as u64).ok_or(Errno::Efault)?, part)?;
        console::guest_output(&mut to.console.lock(), ti, &to.name, part);
        done += part.len();
    }
    Ok(())
}

/// Xen's Arm continuation: the guest re-executes the `hvc` (ELR_EL2 moves
/// back over the 4-byte instruction) with x1 and x2 replaced, so a long
/// batch goes in passes and the vCPU can take interrupts in between.
fn continue_hypercall(f: &mut VcpuFrame, x1: u64, x2: u64) {
    f.x[1] = x1;
    f.x[2] = x2;
    write_sysreg!("elr_el2", read_sysreg!("elr_el2").wrapping_sub(4));
}

/// Whether the policy refuses `d` the console (logged by the check).
fn console_denied(p: usize, d: &Domain) -> bool {
    match mac::console_sid() {
        Some(c) => mac::check(p, d.sid, c, ConsolePerm::Write).is_err(),
        None => true,
    }
}

fn xen_version(d: &Domain, cmd: XenVersionCmd, arg: u64) -> Result<u64, Errno> {
    match cmd {
        XenVersionCmd::Version => Ok((hc::XEN_VERSION_MAJOR << 16) | hc::XEN_VERSION_MINOR),
        XenVersionCmd::ExtraVersion => copy_to_guest(d, arg, hc::XEN_EXTRAVERSION).map(|_| 0),
        XenVersionCmd::Capabilities => copy_to_guest(d, arg, hc::XEN_CAPABILITIES).map(|_| 0),
        XenVersionCmd::PageSize => Ok(PAGE_SIZE),
        XenVersionCmd::GetFeatures => {
            let mut info = XenFeatureInfo::default();
            copy_from_guest(d, arg, info.as_mut_bytes())?;
            // Only submap 0 has features in it.
            let map = if info.submap_idx.get() == 0 {
                hc::XEN_FEATURES_SUBMAP0
            } else {
                0
            };
            info.submap = map.into();
            copy_to_guest(d, arg, info.as_bytes()).map(|_| 0)
        }
    }
}

fn psci_call(v: usize, f: &mut VcpuFrame) -> Next {
    let Some(call) = dec::decode_psci(&[f.x[0], f.x[1], f.x[2], f.x[3]]) else {
        f.x[0] = Status::NotSupported.to_ret();
        return Next::Resume;
    };
    let (Some(d), Some(slot)) = (domain_of(v), vcpu(v)) else {
        return Next::Leave;
    };
    let di = slot.domain.load(Ordering::Relaxed);
    let target_vcpu = |mpidr: u64| -> Option<usize> {
        let idx = (0..d.nr_vcpus)
            .find(|&i| platform::vcpu_mpidr(i as u32) & 0xff_00ff_ffff == mpidr & 0xff_00ff_ffff)?;
        Some(d.first_vcpu + idx)
    };
    let (ret, next) = match call {
        PsciCall::Version => (psci::VERSION_1_1, Next::Resume),
        PsciCall::SmcccVersion => (psci::SMCCC_VERSION_1_1, Next::Resume),
        PsciCall::Features { function } => {
            let known = psci::Function::try_from(function).is_ok();
            (
                if known {
                    0
                } else {
                    Status::NotSupported.to_ret()
                },
                Next::Resume,
            )
        }
        PsciCall::MigrateInfoType => (psci::MIGRATE_INFO_NOT_PRESENT, Next::Resume),
        PsciCall::CpuOn {
            target,
            entry,
            context,
        } => match target_vcpu(target) {
            None => (Status::InvalidParameters.to_ret(), Next::Resume),
            Some(_) if d.ram_offset_of(entry, 4).is_none() || entry % 4 != 0 => {
                (Status::InvalidAddress.to_ret(), Next::Resume)
            }
            Some(t) => match vcpu(t).map(|s| s.power.power_on(entry, context)) {
                Some(Ok(())) => {
                    request_start(t);
                    (Status::Success.to_ret(), Next::Resume)
                }
                Some(Err(PowerOnError::AlreadyOn)) => (Status::AlreadyOn.to_ret(), Next::Resume),
                Some(Err(PowerOnError::OnPending)) => (Status::OnPending.to_ret(), Next::Resume),
                _ => (Status::Denied.to_ret(), Next::Resume),
            },
        },
        PsciCall::CpuOff => {
            slot.power.power_off();
            (Status::Success.to_ret(), Next::Leave)
        }
        PsciCall::AffinityInfo { target, level } => match target_vcpu(target) {
            Some(t) if level == 0 => {
                let state = match vcpu(t).map(|s| s.power.affinity()) {
                    Some(PowerState::On) => AffinityState::On,
                    Some(PowerState::OnPending) => AffinityState::OnPending,
                    _ => AffinityState::Off,
                };
                (state as u64, Next::Resume)
            }
            _ => (Status::InvalidParameters.to_ret(), Next::Resume),
        },
        PsciCall::SystemOff | PsciCall::SystemReset
            if mac::check(
                slot.pcpu.load(Ordering::Relaxed),
                d.sid,
                d.sid,
                DomainPerm::Shutdown,
            )
            .is_err() =>
        {
            (Status::Denied.to_ret(), Next::Resume)
        }
        PsciCall::SystemOff => {
            stop_domain(di, StopReason::Poweroff);
            (0, Next::Leave)
        }
        PsciCall::SystemReset => {
            stop_domain(di, StopReason::Reboot);
            (0, Next::Leave)
        }
    };
    f.x[0] = ret;
    next
}
