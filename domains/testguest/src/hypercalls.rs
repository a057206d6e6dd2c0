//! `test=hypercalls`: the Xen-compatible hypercall subset, including the
//! error paths (unknown numbers, bad pointers, bad arguments).
//!
//! The one idea: every "unknown" number used here is first checked to be
//! absent from the ABI enums, so the test cannot silently start probing a
//! real op when the ABI grows.

use crate::check::{Ret, TestResult};
use tessera_ipc::errno::Errno;
use tessera_ipc::hypercall::{
    ConsoleIoCmd, Op, SchedCmd, SchedShutdown, XenFeatureInfo, XenVersionCmd, TESSERA_OP_BASE,
    XEN_EXTRAVERSION, XEN_VERSION_MAJOR, XEN_VERSION_MINOR,
};
use tessera_ipc::platform::VTIMER_INTID;
use tessera_rt::hypercall::{self as hc, hypercall};
use tessera_rt::{cpu, gic, println, timer};

/// The guest's page size (4 KiB granule), which XENVER_pagesize reports.
const PAGE_SIZE: u64 = 4096;
/// A number that is not a sub-command of any op exercised here.
const UNKNOWN_CMD: u64 = 99;
/// Addresses that are never guest RAM: above the 4 GiB IPA space, and the
/// top page of the 64-bit address space (which also wraps with a length).
const BAD_POINTERS: [u64; 2] = [0x1_0000_0000, 0xffff_ffff_ffff_f000];
/// A shutdown reason that is not a `ShutdownReason`.
const BAD_SHUTDOWN_REASON: u32 = 99;

/// Raw call with a pointer the hypervisor must refuse or ignore.
fn raw(op: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    // SAFETY: pointer arguments here are outside RAM (the hypervisor must
    // fail them with -EFAULT) or unused by the op; nothing of ours is written.
    unsafe { hypercall(op, a0, a1, a2, 0, 0, 0) }
}

pub fn run() -> TestResult {
    ensure!(
        XenVersionCmd::try_from(UNKNOWN_CMD).is_err(),
        "99 became a xen_version cmd"
    );
    ensure!(
        ConsoleIoCmd::try_from(UNKNOWN_CMD).is_err(),
        "99 became a console_io cmd"
    );
    ensure!(
        SchedCmd::try_from(UNKNOWN_CMD).is_err(),
        "99 became a sched_op cmd"
    );

    let version = hc::xen_version(XenVersionCmd::Version);
    let want = XEN_VERSION_MAJOR << 16 | XEN_VERSION_MINOR;
    ensure!(
        version == want,
        "xen_version VERSION {} != {want:#x}",
        Ret(version)
    );
    println!(
        "hypercalls: xen_version {}.{}",
        version >> 16,
        version & 0xffff
    );

    let mut extra = [0xa5u8; 16];
    let ret = hc::xen_extraversion(&mut extra);
    ensure!(ret == 0, "EXTRAVERSION returned {}", Ret(ret));
    ensure!(
        &extra == XEN_EXTRAVERSION,
        "EXTRAVERSION wrote {extra:02x?}"
    );

    let sentinel = 0xdead_beef;
    let mut features = XenFeatureInfo {
        submap_idx: 0.into(),
        submap: sentinel.into(),
    };
    let ret = hc::xen_get_features(&mut features);
    ensure!(ret == 0, "GET_FEATURES returned {}", Ret(ret));
    ensure!(
        features.submap.get() != sentinel,
        "GET_FEATURES did not write the submap"
    );
    println!(
        "hypercalls: features submap 0 = {:#x}",
        features.submap.get()
    );

    let page = hc::xen_version(XenVersionCmd::PageSize);
    ensure!(page == PAGE_SIZE, "PAGESIZE {}", Ret(page));

    let ret = raw(Op::XenVersion as u64, UNKNOWN_CMD, 0, 0);
    ensure!(
        ret == Errno::Enosys.to_ret(),
        "xen_version cmd 99: {}",
        Ret(ret)
    );

    for op in [999, TESSERA_OP_BASE + 0xfff] {
        ensure!(Op::try_from(op).is_err(), "op {op:#x} is defined");
        let ret = raw(op, 0, 0, 0);
        ensure!(
            ret == Errno::Enosys.to_ret(),
            "unknown op {op:#x}: {}",
            Ret(ret)
        );
    }

    let ret = hc::console_write(b"hypercalls: console_io write reaches the console\n");
    ensure!(ret == 0, "console_io write returned {}", Ret(ret));

    for ptr in BAD_POINTERS {
        let ret = raw(Op::ConsoleIo as u64, ConsoleIoCmd::Write as u64, 16, ptr);
        ensure!(
            ret == Errno::Efault.to_ret(),
            "console_io write from {ptr:#x}: {}",
            Ret(ret)
        );
    }

    let msg = b"never printed\n";
    let ret = raw(
        Op::ConsoleIo as u64,
        UNKNOWN_CMD,
        msg.len() as u64,
        msg.as_ptr() as u64,
    );
    ensure!(
        ret == Errno::Enosys.to_ret(),
        "console_io cmd 99: {}",
        Ret(ret)
    );

    let mut input = [0u8; 16];
    let ret = hc::console_read(&mut input);
    ensure!(
        ret == 0,
        "console_io read returned {} (expected no input)",
        Ret(ret)
    );

    let ret = hc::sched_yield();
    ensure!(ret == 0, "sched_op yield returned {}", Ret(ret));

    block_until_timer()?;

    let ret = raw(Op::SchedOp as u64, UNKNOWN_CMD, 0, 0);
    ensure!(
        ret == Errno::Enosys.to_ret(),
        "sched_op cmd 99: {}",
        Ret(ret)
    );

    for ptr in BAD_POINTERS {
        let ret = raw(Op::SchedOp as u64, SchedCmd::Shutdown as u64, ptr, 0);
        ensure!(
            ret == Errno::Efault.to_ret(),
            "shutdown with pointer {ptr:#x}: {}",
            Ret(ret)
        );
    }

    let bad = SchedShutdown {
        reason: BAD_SHUTDOWN_REASON.into(),
    };
    let ret = raw(
        Op::SchedOp as u64,
        SchedCmd::Shutdown as u64,
        &bad as *const _ as u64,
        0,
    );
    ensure!(
        ret == Errno::Einval.to_ret(),
        "shutdown reason 99: {}",
        Ret(ret)
    );

    Ok(())
}

/// SCHEDOP_block with IRQs masked in PSTATE and the virtual timer armed 1 ms
/// ahead: the vCPU must sleep until the timer interrupt is pending, then
/// return 0. The interrupt is enabled in the GIC so it counts as pending.
fn block_until_timer() -> TestResult {
    gic::init_distributor();
    gic::init_cpu();
    gic::set_handler(VTIMER_INTID, |_| timer::disable());
    gic::enable_private(VTIMER_INTID);
    cpu::irq_disable();
    let deadline = timer::arm_after(timer::ticks_for_us(timer::frequency(), 1000));
    let ret = hc::sched_block();
    let woke = timer::now();
    let fired = timer::fired();
    timer::disable();
    cpu::irq_enable();
    ensure!(ret == 0, "sched_op block returned {}", Ret(ret));
    ensure!(
        fired && woke >= deadline,
        "sched_op block returned before the timer fired (now {woke:#x}, deadline {deadline:#x})"
    );
    Ok(())
}
