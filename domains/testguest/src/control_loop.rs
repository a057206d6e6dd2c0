//! `test=control-loop period_us=<P>`: a safety partition's periodic task.
//! Every P µs (default 1000) it wakes on its virtual timer, runs one fixed
//! step of a fixed-point PI controller against a simulated plant, and once
//! a second of counter time (every `1000000 / P` deadlines) prints
//!
//! ```text
//! SAFETY cycles=<n> period_us=<P> jitter_max_us=<m> jitter_p99_us=<q> missed=<k> worst_us=<w>
//! ```
//!
//! where `m` and `q` are the latest and the 99th-percentile wake-up of that
//! second, in µs after the deadline; `k` counts the periods missed so far
//! (woken after the next deadline had passed) and `w` is the latest wake-up
//! so far. It never stops, so it is not a `TestResult`.
//!
//! The one idea: everything is measured on the virtual counter against a
//! fixed grid of deadlines (`jitter::next_deadline`), so the numbers are
//! what the partition itself feels of the hypervisor and its neighbours,
//! and a late cycle never hides the next one's lateness.

use crate::jitter::{next_deadline, ticks_to_us, Window};
use core::sync::atomic::{AtomicU32, Ordering};
use tessera_ipc::hypercall::ShutdownReason;
use tessera_ipc::platform::VTIMER_INTID;
use tessera_rt::bootargs::BootArgs;
use tessera_rt::console::print_result;
use tessera_rt::{cpu, gic, println, timer};

/// The period without `period_us=`.
const DEFAULT_PERIOD_US: u64 = 1000;
/// Shortest period: below this a wake-up and its report cost a large part
/// of the period even under `-icount`.
const MIN_PERIOD_US: u64 = 100;
/// Longest period: one report a second needs at least one cycle a second.
const MAX_PERIOD_US: u64 = 1_000_000;
/// Controller steps per cycle: the fixed work.
const STEPS_PER_CYCLE: u32 = 32;

static WAKE_UPS: AtomicU32 = AtomicU32::new(0);

/// The timer is level-triggered: silence it before the EOI.
fn on_timer(_intid: u32) {
    timer::disable();
    WAKE_UPS.fetch_add(1, Ordering::AcqRel);
}

/// A first-order plant (`y += (u - y) / 8`) under a PI controller with a
/// fixed set-point, in 16.16 fixed point: fixed work each step, no floats.
struct Plant {
    y: i64,
    integral: i64,
}

impl Plant {
    const SETPOINT: i64 = 1000 << 16;

    fn step(&mut self) {
        let error = Self::SETPOINT - self.y;
        self.integral = (self.integral + error / 16).clamp(-(1 << 40), 1 << 40);
        let u = error / 2 + self.integral / 4;
        self.y += (u - self.y) / 8;
    }
}

pub fn run() -> ! {
    let args = BootArgs::new(tessera_rt::bootargs());
    let period_us = args.number("period_us").unwrap_or(DEFAULT_PERIOD_US);
    if !(MIN_PERIOD_US..=MAX_PERIOD_US).contains(&period_us) {
        println!("control-loop: period_us={period_us} is not in {MIN_PERIOD_US}..={MAX_PERIOD_US}");
        print_result("control-loop", Err("bad period_us"));
        tessera_rt::exit(ShutdownReason::Crash)
    }
    gic::init_distributor();
    gic::init_cpu();
    gic::set_handler(VTIMER_INTID, on_timer);
    gic::enable_private(VTIMER_INTID);
    cpu::irq_enable();

    let freq = timer::frequency();
    let period = timer::ticks_for_us(freq, period_us);
    let per_report = (1_000_000 / period_us).max(1);
    let mut window = Window::new();
    let mut plant = Plant { y: 0, integral: 0 };
    let (mut cycles, mut missed, mut worst_us) = (0u64, 0u64, 0u64);
    // Reports go out on the grid too: every `per_report` deadlines, run or
    // missed, so a stall delays a report but does not stretch the second.
    let mut report_at = per_report;
    let mut deadline = timer::now().saturating_add(period);
    let mut seen = WAKE_UPS.load(Ordering::Acquire);
    timer::arm_at(deadline);
    loop {
        cpu::wait_until(|| WAKE_UPS.load(Ordering::Acquire) != seen);
        let now = timer::now();
        let late_us = ticks_to_us(now.saturating_sub(deadline), freq);
        window.record(late_us);
        worst_us = worst_us.max(late_us);
        // The next release is armed before the work, as a real-time task
        // does: an overrun (work or report past the next deadline) then
        // shows as that cycle's lateness, and the grid never drifts.
        let (next, skipped) = next_deadline(deadline, now, period);
        deadline = next;
        missed += skipped;
        seen = WAKE_UPS.load(Ordering::Acquire);
        timer::arm_at(deadline);
        for _ in 0..STEPS_PER_CYCLE {
            plant.step();
        }
        // Keep the work from being optimised away.
        core::hint::black_box(&plant);
        cycles += 1;
        if cycles + missed >= report_at {
            report_at = (cycles + missed).saturating_add(per_report);
            println!(
                "SAFETY cycles={cycles} period_us={period_us} jitter_max_us={} jitter_p99_us={} \
                 missed={missed} worst_us={worst_us}",
                window.max_us(),
                window.percentile_us(99)
            );
            window.clear();
        }
    }
}
