//! `test=timeslice`: every vCPU spins on its own counter and never yields or
//! waits, so with more vCPUs than pCPUs only the hypervisor's preemption can
//! let all of them make progress.

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

fn spin(cpu: usize) {
    let counter = &COUNTERS[cpu % MAX_CPUS].0;
    while !STOP.load(Ordering::Relaxed) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

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
