//! Benchmarks: `bench=null_hypercall`, `bench=vcpu_switch` and
//! `bench=mmio_roundtrip` here, and the two-domain `bench=evtchn_pingpong`
//! and `bench=ring_burst` in `ipc_bench`; each prints `BENCHRESULT <name> ops=<N> ticks=<T>` (plus
//! `hypercalls=<H>` where that is part of the figure) for `cargo xtask
//! bench`.
//!
//! The one idea: the measured loop is the same few instructions natively and
//! under Tessera, and only the trapping instruction differs: `hvc #0xEA1`
//! under the hypervisor, `svc #0` natively with a vector table whose SVC
//! handler is a bare `eret`. Under `-icount shift=4` the counter ticks once
//! per instruction, so ticks per op is instructions per op and the ratio of
//! the two runs is the hypervisor's trap overhead.

use crate::check::{reason, wait_until};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tessera_ipc::hypercall::{
    Op, SchedCmd, ShutdownReason, XenVersionCmd, HVC_IMM_HYPERCALL, XEN_VERSION_MAJOR,
    XEN_VERSION_MINOR,
};
use tessera_ipc::platform::VIRTIO_MMIO_BASE;
use tessera_rt::console::print_result;
use tessera_rt::text::Ratio;
use tessera_rt::{cpu, println, timer};

const NULL_HYPERCALL_OPS: u64 = 100_000;
const YIELDS_PER_VCPU: u64 = 10_000;
const MMIO_READS: u64 = 10_000;
/// How long the guest gives its device model to register before the first
/// access (an access nobody serves yet would stop the domain). Under
/// `-icount` the device model is ready within 20 ms of virtual time on
/// one pCPU or two; this leaves it more than twice that.
const SERVER_GRACE_MS: u64 = 50;
/// virtio-mmio MagicValue ("virt", little-endian), at offset 0 of a slot.
const VIRTIO_MAGIC: u32 = 0x7472_6976;

/// Traps `n` times (n > 0) with `op` in x16 and `cmd` reloaded into x0 each
/// time (x0 carries the result back); returns the last x0. The loop body is
/// `mov x0; trap; subs; b.ne`, so loop overhead is three instructions.
fn trap_loop(native: bool, op: u64, cmd: u64, n: u64) -> u64 {
    let last;
    if native {
        // SAFETY: the caller installed the fast vectors on this CPU, so
        // `svc #0` returns at once with every register intact.
        unsafe {
            core::arch::asm!(
                "2:",
                "mov x0, {cmd}",
                "svc #0",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                n = inout(reg) n => _,
                cmd = in(reg) cmd,
                in("x16") op,
                out("x0") last,
                options(nostack),
            );
        }
    } else {
        // SAFETY: the ops used here take no pointer arguments; x1..x5 are
        // declared clobbered as Xen allows, x16 is reloaded only once
        // because the hypervisor preserves it (checked by the caller through
        // the last result).
        unsafe {
            core::arch::asm!(
                "2:",
                "mov x0, {cmd}",
                "hvc #{imm}",
                "subs {n}, {n}, #1",
                "b.ne 2b",
                imm = const HVC_IMM_HYPERCALL,
                n = inout(reg) n => _,
                cmd = in(reg) cmd,
                in("x16") op,
                out("x0") last,
                out("x1") _, out("x2") _, out("x3") _, out("x4") _, out("x5") _,
                options(nostack),
            );
        }
    }
    last
}

fn report(name: &str, ops: u64, ticks: u64) {
    println!("BENCHRESULT {name} ops={ops} ticks={ticks}");
    println!(
        "bench {name}: {} ticks/op, counter at {} Hz",
        Ratio {
            num: ticks,
            den: ops
        },
        timer::frequency()
    );
}

pub fn run(name: &'static str) -> ! {
    tessera_rt::set_current_test(name);
    let simple =
        |outcome: Result<(), &'static str>| outcome.map_err(|why| reason(format_args!("{why}")));
    let outcome = match name {
        "null_hypercall" => simple(null_hypercall()),
        "vcpu_switch" => simple(vcpu_switch()),
        "mmio_roundtrip" => simple(mmio_roundtrip()),
        "evtchn_pingpong" => crate::ipc_bench::evtchn_pingpong(),
        "ring_burst" => crate::ipc_bench::ring_burst(),
        _ => simple(Err("unknown benchmark")),
    };
    match outcome {
        Ok(()) => tessera_rt::exit(ShutdownReason::Poweroff),
        Err(why) => {
            print_result(name, Err(why.as_str()));
            tessera_rt::exit(ShutdownReason::Crash)
        }
    }
}

fn null_hypercall() -> Result<(), &'static str> {
    let native = tessera_rt::is_native();
    let (op, cmd) = (Op::XenVersion as u64, XenVersionCmd::Version as u64);
    if native {
        tessera_rt::install_fast_svc_vectors();
    }
    let start = timer::now();
    let last = trap_loop(native, op, cmd, NULL_HYPERCALL_OPS);
    let ticks = timer::now() - start;
    if native {
        tessera_rt::install_vectors();
    } else if last != XEN_VERSION_MAJOR << 16 | XEN_VERSION_MINOR {
        println!("null_hypercall: last result {last:#x}");
        return Err("xen_version VERSION went wrong inside the loop (x16 clobbered?)");
    }
    report("null_hypercall", NULL_HYPERCALL_OPS, ticks);
    Ok(())
}

static PARTNER_READY: AtomicBool = AtomicBool::new(false);
static GO: AtomicBool = AtomicBool::new(false);
static PARTNER_YIELDS: AtomicU64 = AtomicU64::new(0);

fn yield_n(native: bool, n: u64) {
    trap_loop(native, Op::SchedOp as u64, SchedCmd::Yield as u64, n);
}

/// vCPU1: the same yield loop as vCPU0.
fn partner(_cpu: usize) {
    let native = tessera_rt::is_native();
    if native {
        tessera_rt::install_fast_svc_vectors();
    }
    PARTNER_READY.store(true, Ordering::Release);
    while !GO.load(Ordering::Acquire) {
        if !native {
            yield_n(false, 1);
        }
    }
    yield_n(native, YIELDS_PER_VCPU);
    PARTNER_YIELDS.store(YIELDS_PER_VCPU, Ordering::Release);
}

/// With one pCPU every yield switches to the other vCPU. vCPU0 keeps
/// yielding (and counting) until vCPU1 has finished its 10000, so the time
/// covers every switch of both.
fn vcpu_switch() -> Result<(), &'static str> {
    let native = tessera_rt::is_native();
    if cpu::start(1, partner) != 0 {
        return Err("CPU_ON(vCPU1) failed");
    }
    let up = wait_until(10_000, || {
        if !native {
            yield_n(false, 1);
        }
        PARTNER_READY.load(Ordering::Acquire)
    });
    if !up {
        return Err("vCPU1 never came up");
    }
    if native {
        tessera_rt::install_fast_svc_vectors();
    }
    let start = timer::now();
    GO.store(true, Ordering::Release);
    yield_n(native, YIELDS_PER_VCPU);
    let mut extra = 0;
    while PARTNER_YIELDS.load(Ordering::Acquire) == 0 {
        yield_n(native, 1);
        extra += 1;
    }
    let ticks = timer::now() - start;
    if native {
        tessera_rt::install_vectors();
    }
    report("vcpu_switch", 2 * YIELDS_PER_VCPU + extra, ticks);
    Ok(())
}

/// Reads slot 0's MagicValue `n` times (n > 0); returns the last value. The
/// loop body is `ldr; subs; b.ne`: an immediate-offset load, so the abort
/// carries a full syndrome and the hypervisor never decodes the instruction.
fn mmio_read_loop(n: u64) -> u32 {
    let value: u32;
    // SAFETY: VIRTIO_MMIO_BASE is mapped as Device memory by the runtime's
    // identity map; reading a virtio-mmio register has no side effect.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldr {v:w}, [{addr}]",
            "subs {n}, {n}, #1",
            "b.ne 2b",
            v = out(reg) value,
            addr = in(reg) VIRTIO_MMIO_BASE,
            n = inout(reg) n => _,
            options(nostack, readonly),
        );
    }
    value
}

/// A guest read of a virtio-mmio register, served by the device-model
/// domain over IOREQ (natively: by QEMU's own virtio-mmio transport, which
/// costs the guest one instruction). The first read, outside the timing,
/// checks that the register is the device's.
fn mmio_roundtrip() -> Result<(), &'static str> {
    if !tessera_rt::is_native() {
        // Let the device model run meanwhile (it may share our pCPU).
        wait_until(SERVER_GRACE_MS, || {
            yield_n(false, 1);
            false
        });
    }
    let magic = mmio_read_loop(1);
    if magic != VIRTIO_MAGIC {
        println!("mmio_roundtrip: MagicValue {magic:#x}");
        return Err("virtio-mmio slot 0 does not read MagicValue \"virt\"");
    }
    let start = timer::now();
    let last = mmio_read_loop(MMIO_READS);
    let ticks = timer::now() - start;
    if last != VIRTIO_MAGIC {
        return Err("MagicValue changed inside the loop");
    }
    report("mmio_roundtrip", MMIO_READS, ticks);
    Ok(())
}
