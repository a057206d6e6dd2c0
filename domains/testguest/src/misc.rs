//! Single-CPU tests: `concurrent`, `idregs`, and the ones that end the domain
//! on purpose (`isolation-attacker`, `crash`, `reboot`).

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
