//! Interrupt tests: `test=timer`, `test=sgi`, `test=heartbeat`, and the
//! endless `test=ticker` partition.
//!
//! The one idea: handlers only count and silence their source (the timer is
//! level-triggered, so its handler disables it before the EOI); the test body
//! checks the counts against deadlines on the virtual counter.

use crate::check::{wait_until, TestResult};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use tessera_ipc::platform::VTIMER_INTID;
use tessera_rt::gic::{self, SgiTarget};
use tessera_rt::{cpu, println, timer, MAX_CPUS};

const TIMER_SHOTS: u32 = 20;
const TIMER_PERIOD_US: u64 = 1000;
const HEARTBEATS: u32 = 40;
const HEARTBEAT_PERIOD_US: u64 = 20_000;
const TICKER_PERIOD_US: u64 = 1_000_000;
const TEST_SGI: u32 = 1;
const WAIT_MS: u64 = 5000;

static TIMER_FIRED: AtomicU32 = AtomicU32::new(0);
static TIMER_EARLY: AtomicU32 = AtomicU32::new(0);

fn on_timer(_intid: u32) {
    if timer::now() < timer::deadline() || !timer::fired() {
        TIMER_EARLY.fetch_add(1, Ordering::AcqRel);
    }
    timer::disable();
    TIMER_FIRED.fetch_add(1, Ordering::AcqRel);
}

fn setup_boot_cpu_irqs() {
    gic::init_distributor();
    gic::init_cpu();
}

pub fn timer() -> TestResult {
    setup_boot_cpu_irqs();
    gic::set_handler(VTIMER_INTID, on_timer);
    gic::enable_private(VTIMER_INTID);
    cpu::irq_enable();
    let freq = timer::frequency();
    ensure!(freq != 0, "CNTFRQ_EL0 is 0");
    let period = timer::ticks_for_us(freq, TIMER_PERIOD_US);
    let start = timer::now();
    for shot in 1..=TIMER_SHOTS {
        timer::arm_after(period);
        ensure!(
            wait_until(WAIT_MS, || TIMER_FIRED.load(Ordering::Acquire) >= shot),
            "shot {shot}: no timer interrupt within {WAIT_MS} ms"
        );
    }
    let elapsed = timer::now() - start;
    cpu::irq_disable();
    let (fired, early) = (
        TIMER_FIRED.load(Ordering::Acquire),
        TIMER_EARLY.load(Ordering::Acquire),
    );
    println!("timer: {fired} interrupts at {freq} Hz in {elapsed} ticks ({period} ticks each)");
    ensure!(
        fired == TIMER_SHOTS,
        "{fired} interrupts for {TIMER_SHOTS} shots"
    );
    ensure!(
        early == 0,
        "{early} interrupts arrived before their deadline"
    );
    ensure!(
        elapsed >= u64::from(TIMER_SHOTS) * period,
        "20 shots took only {elapsed} ticks"
    );
    Ok(())
}

static SGI_COUNTS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static SGI_READY: AtomicU32 = AtomicU32::new(0);
static SGI_DONE: AtomicBool = AtomicBool::new(false);

fn on_sgi(_intid: u32) {
    if let Some(count) = SGI_COUNTS.get(cpu::index()) {
        count.fetch_add(1, Ordering::AcqRel);
    }
}

fn sgi_receiver(_cpu: usize) {
    gic::init_cpu();
    gic::enable_private(TEST_SGI);
    cpu::irq_enable();
    SGI_READY.fetch_add(1, Ordering::AcqRel);
    cpu::wait_until(|| SGI_DONE.load(Ordering::Acquire));
}

fn counts_are(cpus: usize, expected: impl Fn(usize) -> u32) -> bool {
    (0..cpus).all(|c| SGI_COUNTS[c].load(Ordering::Acquire) == expected(c))
}

fn count(c: usize) -> u32 {
    SGI_COUNTS[c].load(Ordering::Acquire)
}

pub fn sgi() -> TestResult {
    let cpus = tessera_rt::cpu_count();
    setup_boot_cpu_irqs();
    gic::set_handler(TEST_SGI, on_sgi);
    gic::enable_private(TEST_SGI);
    cpu::irq_enable();
    for c in 1..cpus {
        let status = cpu::start(c, sgi_receiver);
        ensure!(status == 0, "CPU_ON(vCPU{c}) = {status}");
    }
    ensure!(
        wait_until(WAIT_MS, || SGI_READY.load(Ordering::Acquire) as usize
            == cpus - 1),
        "only {} of {} secondaries enabled the SGI",
        SGI_READY.load(Ordering::Acquire),
        cpus - 1
    );
    for c in 0..cpus {
        gic::send_sgi(TEST_SGI, SgiTarget::cpu(cpu::mpidr(c)));
        ensure!(
            wait_until(WAIT_MS, || count(c) == 1),
            "vCPU{c} counted {} SGIs after one targeted SGI",
            count(c)
        );
    }
    gic::send_sgi(TEST_SGI, SgiTarget::AllButSelf);
    let expected = |c: usize| if c == 0 { 1 } else { 2 };
    ensure!(
        wait_until(WAIT_MS, || counts_are(cpus, expected)),
        "broadcast SGI not delivered to all others"
    );
    timer::delay_us(10_000);
    for c in 0..cpus {
        ensure!(
            count(c) == expected(c),
            "vCPU{c} counted {} SGIs, expected {}",
            count(c),
            expected(c)
        );
    }
    SGI_DONE.store(true, Ordering::Release);
    println!("sgi: {cpus} vCPUs each got their targeted SGI and the broadcast");
    Ok(())
}

/// Prints `HEARTBEAT <n>` every 20 ms. Waits with WFI and IRQs masked in
/// PSTATE: a pending timer PPI still wakes WFI, and under the hypervisor the
/// trapped WFI lets the pCPU run other domains meanwhile.
pub fn heartbeat() -> TestResult {
    setup_boot_cpu_irqs();
    gic::enable_private(VTIMER_INTID);
    cpu::irq_disable();
    let period = timer::ticks_for_us(timer::frequency(), HEARTBEAT_PERIOD_US);
    let mut deadline = timer::now();
    for n in 1..=HEARTBEATS {
        deadline += period;
        timer::arm_at(deadline);
        let limit = deadline + timer::ticks_for_us(timer::frequency(), WAIT_MS * 1000);
        while !timer::fired() {
            ensure!(timer::now() < limit, "heartbeat {n}: timer never fired");
            cpu::wfi();
        }
        timer::disable();
        println!("HEARTBEAT {n}");
    }
    Ok(())
}

/// `test=ticker`: a bare-metal partition that runs beside the others for
/// good, printing `TICKER <n> late_max_us=<l>` once a second: `l` is the
/// worst lateness of its timer so far, what a real-time partition would
/// feel of its neighbours. It waits with interrupts enabled (the handler
/// silences the timer), as a real-time guest would. It never stops, so it
/// is not a `TestResult`.
pub fn ticker() -> ! {
    setup_boot_cpu_irqs();
    gic::set_handler(VTIMER_INTID, on_timer);
    gic::enable_private(VTIMER_INTID);
    cpu::irq_enable();
    let freq = timer::frequency();
    let period = timer::ticks_for_us(freq, TICKER_PERIOD_US);
    let mut deadline = timer::now();
    let mut late_max = 0u64;
    let mut n = 0u64;
    loop {
        n = n.wrapping_add(1);
        deadline += period;
        let fired = TIMER_FIRED.load(Ordering::Acquire);
        timer::arm_at(deadline);
        cpu::wait_until(|| TIMER_FIRED.load(Ordering::Acquire) != fired);
        let late = timer::now().saturating_sub(deadline);
        late_max = late_max.max(late);
        let late_us = late_max.saturating_mul(1_000_000) / freq.max(1);
        println!("TICKER {n} late_max_us={late_us}");
    }
}
