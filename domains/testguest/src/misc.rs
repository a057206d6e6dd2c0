//! Single-CPU tests: `concurrent`, `idregs`, `uart-first`, `ioreq-rogue`,
//! and the ones that end the domain on purpose (`isolation-attacker`,
//! `crash`, `reboot`).

use crate::check::TestResult;
use core::hint::black_box;
use tessera_ipc::hypercall::ShutdownReason;
use tessera_rt::{println, psci};

const CONCURRENT_ITERATIONS: u64 = 2_000_000;
const PROGRESS_EVERY: u64 = 500_000;

/// One step of a mixed integer/FP workload; FP state is included so a
/// hypervisor that loses FP registers across switches breaks the checksum.
fn step(state: (u64, f64), i: u64) -> (u64, f64) {
    let (x, f) = state;
    let x = (x ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
    let f = f * 0.999_999 + (x >> 40) as f64;
    (x, f)
}

fn workload(report: bool) -> (u64, f64) {
    let mut state = (1u64, 0.0f64);
    for i in 1..=CONCURRENT_ITERATIONS {
        state = step(black_box(state), i);
        if report && i % PROGRESS_EVERY == 0 {
            println!("concurrent: {i} iterations, checksum {:#018x}", state.0);
        }
    }
    state
}

/// `test=concurrent`: CPU-bound work, run twice; both runs must agree.
pub fn concurrent() -> TestResult {
    let first = workload(true);
    let second = workload(false);
    ensure!(
        first.0 == second.0 && first.1.to_bits() == second.1.to_bits(),
        "runs disagree: {:#x}/{} vs {:#x}/{}",
        first.0,
        first.1,
        second.0,
        second.1
    );
    Ok(())
}

fn field(value: u64, lsb: u32) -> u64 {
    (value >> lsb) & 0xf
}

/// Reads ID_AA64ISAR2_EL1 by encoding (assemblers for Armv8.0 do not know
/// the name).
fn id_aa64isar2() -> u64 {
    let v;
    // SAFETY: reading an ID register has no side effects; on cores without
    // it the encoding is in the RAZ ID space.
    unsafe { core::arch::asm!("mrs {}, S3_0_C0_C6_2", out(reg) v, options(nomem, nostack)) };
    v
}

/// Reads ID_AA64ZFR0_EL1 by encoding.
fn id_aa64zfr0() -> u64 {
    let v;
    // SAFETY: as for `id_aa64isar2`.
    unsafe { core::arch::asm!("mrs {}, S3_0_C0_C4_4", out(reg) v, options(nomem, nostack)) };
    v
}

/// `test=idregs`: SVE, SME, MTE and pointer authentication are hidden.
pub fn idregs() -> TestResult {
    use aarch64_cpu::registers::{Readable, ID_AA64ISAR1_EL1, ID_AA64PFR0_EL1, ID_AA64PFR1_EL1};
    let pfr0 = ID_AA64PFR0_EL1.get();
    let pfr1 = ID_AA64PFR1_EL1.get();
    let isar1 = ID_AA64ISAR1_EL1.get();
    let isar2 = id_aa64isar2();
    let zfr0 = id_aa64zfr0();
    println!("idregs: ID_AA64PFR0_EL1  = {pfr0:#018x}");
    println!("idregs: ID_AA64PFR1_EL1  = {pfr1:#018x}");
    println!("idregs: ID_AA64ISAR1_EL1 = {isar1:#018x}");
    println!("idregs: ID_AA64ISAR2_EL1 = {isar2:#018x}");
    println!("idregs: ID_AA64ZFR0_EL1  = {zfr0:#018x}");
    let visible = [
        ("ID_AA64PFR0_EL1.SVE", field(pfr0, 32)),
        ("ID_AA64PFR1_EL1.MTE", field(pfr1, 8)),
        ("ID_AA64PFR1_EL1.SME", field(pfr1, 24)),
        ("ID_AA64ISAR1_EL1.APA", field(isar1, 4)),
        ("ID_AA64ISAR1_EL1.API", field(isar1, 8)),
        ("ID_AA64ISAR1_EL1.GPA", field(isar1, 24)),
        ("ID_AA64ISAR1_EL1.GPI", field(isar1, 28)),
        ("ID_AA64ISAR2_EL1.GPA3", field(isar2, 8)),
        ("ID_AA64ISAR2_EL1.APA3", field(isar2, 12)),
        ("ID_AA64ZFR0_EL1", zfr0),
    ];
    for (name, value) in visible {
        ensure!(value == 0, "{name} = {value:#x}, must be hidden");
    }
    Ok(())
}

/// An IPA outside every domain's RAM and outside the emulated frames.
const OUTSIDE_RAM: u64 = 0x8000_0000;

/// `test=isolation-attacker`: reads outside its RAM; the hypervisor must
/// stop the domain, so the FAIL line below must never appear.
pub fn isolation_attacker() -> ! {
    println!("ATTACK");
    // SAFETY: deliberately reads an address that is not ours; the identity
    // map covers it, so only stage 2 can (and must) stop the read.
    let value = unsafe { core::ptr::read_volatile(OUTSIDE_RAM as *const u64) };
    println!("isolation-attacker: read {value:#x} at {OUTSIDE_RAM:#x}");
    tessera_rt::console::print_result("isolation-attacker", Err("read returned"));
    tessera_rt::exit(ShutdownReason::Crash)
}

/// `test=crash`: shuts down with reason crash, which is the expected outcome.
pub fn crash() -> ! {
    println!("crash: shutting down with reason crash on purpose");
    tessera_rt::exit(ShutdownReason::Crash)
}

/// `test=reboot`: asks for a system reset; under Tessera only this domain
/// restarts.
pub fn reboot() -> ! {
    println!("REBOOT-START");
    psci::system_reset()
}

/// PL011 data register (PL011 TRM §3.3), in the emulated UART's frame.
const PL011_DR: u64 = tessera_ipc::platform::PL011_BASE;

/// `test=uart-first`: before anything else (no hypercall, no register
/// read), writes its lines to the PL011 its device model emulates, then
/// reads the data register back. A guest that touches its UART before the
/// device model has registered it would be stopped at the first write
/// ("stage-2 fault"), so the lines appearing (printed by the device model
/// as this domain's) show the kernel held it until its device model was
/// ready. The read takes the request path, so the device model applies
/// every write before it answers and the lines are out before poweroff.
pub fn uart_first() -> ! {
    for &b in b"uart-first: these lines went to the PL011 first\nTEST uart-first PASS\n" {
        // SAFETY: DR is the data register of the platform's PL011 frame,
        // mapped Device-nGnRE by the runtime; a write sends one byte.
        unsafe { core::ptr::write_volatile(PL011_DR as *mut u32, u32::from(b)) };
    }
    // SAFETY: as above; a read of DR takes a byte from the receive FIFO,
    // which is empty (the value is not used).
    let _ = unsafe { core::ptr::read_volatile(PL011_DR as *const u32) };
    tessera_rt::exit(ShutdownReason::Poweroff)
}

/// A page of our RAM to offer as a slot page.
static ROGUE_PAGE: tessera_rt::events::SharedPage = tessera_rt::events::SharedPage::new();

/// `test=ioreq-rogue dom=<id>`: a domain the policy lets serve guests
/// (`devmodel_t`), but not the one domain `dom` names as its device model,
/// tries to serve it: `Register`, `Ready` and `MapRange` must all be
/// `-EPERM`, whatever the policy allows.
pub fn ioreq_rogue() -> TestResult {
    use tessera_ipc::errno::Errno::Eperm;
    use tessera_rt::ioreq;
    let args = tessera_rt::bootargs::BootArgs::new(tessera_rt::bootargs());
    let Some(dom) = args.number("dom").and_then(|d| u16::try_from(d).ok()) else {
        fail!("bootargs need dom=<the served domain's id>")
    };
    let page = ROGUE_PAGE.gfn() << 12;
    let refused = |what: &str, r: Result<(), tessera_rt::xen::HypercallError>| match r {
        Err(e) if e.is(Eperm) => Ok(()),
        Err(e) => Err(crate::check::reason(format_args!(
            "{what} for d{dom}: expected -EPERM, got {e}"
        ))),
        Ok(()) => Err(crate::check::reason(format_args!(
            "{what} for d{dom}: expected -EPERM, got success"
        ))),
    };
    refused("register", ioreq::register(dom, page, 0))?;
    refused("ready", ioreq::ready(dom))?;
    refused(
        "map range",
        ioreq::map_range(dom, tessera_ipc::platform::PL011_BASE, 0x1000, 0),
    )?;
    println!("ioreq-rogue: d{dom} refused us: register, ready and map range are -EPERM");
    Ok(())
}

/// `test=virtio-notify count=<n>`: notify queue 0 of virtio-mmio slot 0
/// `n` times (each write waits for the device model's answer), then pass.
/// The device-model restart tests kill its device model part-way
/// (`crash-after`): the guest must neither fault nor see an error, only
/// wait, until its device model is back or it is destroyed.
pub fn virtio_notify() -> TestResult {
    /// QueueNotify's offset in a virtio-mmio window (virtio 1.2 §4.2.2).
    const QUEUE_NOTIFY: u64 = 0x050;
    let args = tessera_rt::bootargs::BootArgs::new(tessera_rt::bootargs());
    let count = args.number("count").unwrap_or(10);
    let notify = tessera_ipc::platform::VIRTIO_MMIO_BASE + QUEUE_NOTIFY;
    for n in 0..count {
        // SAFETY: slot 0's QueueNotify, in the virtio-mmio window the
        // runtime maps as Device memory; the device model serves the write
        // (queue 0 of whatever device is there; an empty ring does nothing).
        unsafe { core::ptr::write_volatile(notify as *mut u32, 0) };
        if (n + 1) % 1000 == 0 {
            println!("virtio-notify: {} notifications answered", n + 1);
        }
    }
    println!("virtio-notify: {count} notifications answered");
    Ok(())
}
