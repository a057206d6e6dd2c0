//! `test=timeslice`: every vCPU spins on its own counter and never yields or
//! waits, so with more vCPUs than pCPUs only the hypervisor's preemption can
//! let all of them make progress. Each spinner also keeps its own pattern in
//! a SIMD register the whole time, so a world switch that loses or mixes up
//! FP/SIMD state between vCPUs sharing a pCPU is caught.

use crate::check::TestResult;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tessera_rt::{cpu, println, timer, MAX_CPUS};

/// Increments each vCPU must reach.
const THRESHOLD: u64 = 100_000;
const TIMEOUT_US: u64 = 30_000_000;

/// One counter per cache line, so spinners do not slow each other down.
#[repr(align(64))]
struct Counter(AtomicU64);

static COUNTERS: [Counter; MAX_CPUS] = [const { Counter(AtomicU64::new(0)) }; MAX_CPUS];
static STOP: AtomicBool = AtomicBool::new(false);
/// Set by a spinner whose SIMD register no longer holds its pattern.
static FP_CORRUPT: AtomicU64 = AtomicU64::new(0);

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
fn spin(cpu: usize) {
    let counter = COUNTERS[cpu % MAX_CPUS].0.as_ptr();
    let pattern = 0x0101_0101_0101_0101u64.wrapping_mul(cpu as u64 + 1) ^ 0x5a5a_0000_f00d_0000;
    let corrupt: u64;
    // SAFETY: one asm block owns v20 for the whole loop, so only the
    // hypervisor could change it; `counter` is this vCPU's own counter (only
    // it writes it) and `STOP` is a static flag read with plain loads.
    unsafe {
        core::arch::asm!(
            "dup v20.2d, {pat}",
            "mov {bad}, #0",
            "2:",
            "ldrb {t:w}, [{stop}]",
            "cbnz {t:w}, 4f",
            "ldr {t}, [{ctr}]",
            "add {t}, {t}, #1",
            "str {t}, [{ctr}]",
            "mov {u}, v20.d[0]",
            "cmp {u}, {pat}",
            "b.ne 3f",
            "mov {u}, v20.d[1]",
            "cmp {u}, {pat}",
            "b.eq 2b",
            "3:",
            "mov {bad}, #1",
            "4:",
            pat = in(reg) pattern,
            stop = in(reg) STOP.as_ptr(),
            ctr = in(reg) counter,
            t = out(reg) _,
            u = out(reg) _,
            bad = out(reg) corrupt,
            out("v20") _,
            options(nostack),
        );
    }
    if corrupt != 0 {
        FP_CORRUPT.store(cpu as u64 + 1, Ordering::Release);
    }
}

#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
fn spin(_cpu: usize) {}

fn count(c: usize) -> u64 {
    COUNTERS[c].0.load(Ordering::Relaxed)
}

pub fn timeslice() -> TestResult {
    let cpus = tessera_rt::cpu_count();
    for c in 1..cpus {
        let status = cpu::start(c, spin);
        ensure!(status == 0, "CPU_ON(vCPU{c}) = {status}");
    }
    let start = timer::now();
    let limit = start + timer::ticks_for_us(timer::frequency(), TIMEOUT_US);
    loop {
        COUNTERS[0].0.fetch_add(1, Ordering::Relaxed);
        let bad = FP_CORRUPT.load(Ordering::Acquire);
        if bad != 0 {
            STOP.store(true, Ordering::Relaxed);
            fail!(
                "vCPU{} lost its SIMD register contents across a switch",
                bad - 1
            );
        }
        if (0..cpus).all(|c| count(c) >= THRESHOLD) {
            break;
        }
        if timer::now() > limit {
            STOP.store(true, Ordering::Relaxed);
            let slow = (0..cpus).find(|&c| count(c) < THRESHOLD).unwrap_or(0);
            fail!(
                "vCPU{slow} reached only {} of {THRESHOLD} increments in 30 s",
                count(slow)
            );
        }
    }
    let elapsed = timer::now() - start;
    STOP.store(true, Ordering::Relaxed);
    for c in 0..cpus {
        println!("timeslice: vCPU{c} counted {}", count(c));
    }
    println!("timeslice: {cpus} vCPUs passed {THRESHOLD} in {elapsed} ticks");
    Ok(())
}
