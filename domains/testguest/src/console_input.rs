//! `test=console-input`: a line typed on the board's console reaches this
//! guest through the PL011 its device model emulates, by interrupts all the
//! way (the kernel's UART receive interrupt, `VIRQ_CONSOLE_INPUT` on the
//! device model, the emulated UART's receive interrupt here).
//!
//! The one idea: the guest behaves as a shell on a serial line would. It
//! writes a prompt with no line end and waits for its receive interrupt;
//! the harness types only once it sees the prompt, so the prompt must
//! reach the console with no input to push it out. The interrupt handler
//! echoes each byte as it drains the FIFO; the line is longer than the
//! FIFO, so the device model must refill it as the guest reads. Then the
//! guest idles for `IDLE_MS` touching nothing the device model serves, and
//! says so through the UART: the device model, run with `report-sleep`,
//! reports how long it slept, which shows that nothing woke it meanwhile.
//! Output goes through the UART only (the same domain's `console_io` lines
//! would not be ordered with it).

use crate::check::TestResult;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use tessera_ipc::platform::{PL011_BASE, PL011_INTID, VTIMER_INTID};
use tessera_rt::{cpu, gic, timer};

/// PL011 registers and bits (Arm DDI 0183, 3.2 and 3.3).
const DR: u64 = 0x00;
const FR: u64 = 0x18;
const LCR_H: u64 = 0x2c;
const CR: u64 = 0x30;
const IMSC: u64 = 0x38;
const ICR: u64 = 0x44;
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
const LCR_H_FEN: u32 = 1 << 4;
const LCR_H_WLEN8: u32 = 0b11 << 5;
const CR_UARTEN: u32 = 1 << 0;
const CR_TXE: u32 = 1 << 8;
const CR_RXE: u32 = 1 << 9;
/// Receive and receive-timeout interrupts.
const INT_RX: u32 = (1 << 4) | (1 << 6);

/// How long the harness has to type the line (it types as soon as it sees
/// the prompt; this is for a slow, busy machine).
const TYPE_WITHIN_MS: u64 = 120_000;
/// The idle stretch; the device model must sleep through at least a
/// second of it (it goes to sleep a little after the guest does).
const IDLE_MS: u64 = 1_500;
/// How long the guest gives its device model to register before touching
/// the UART (an access nobody serves yet would stop the domain). It is
/// ready within 20 ms of virtual time under `-icount` (see
/// `bench::SERVER_GRACE_MS`); without it the counter is the host's clock,
/// and two loaded QEMUs on a small CI machine can take ten times that.
const SERVER_GRACE_MS: u64 = 500;
/// Longest line kept.
const LINE_MAX: usize = 200;

/// The line typed so far: only the interrupt handler writes it, and the
/// test reads it once `DONE` is set.
static LINE: [AtomicU8; LINE_MAX] = [const { AtomicU8::new(0) }; LINE_MAX];
static LEN: AtomicUsize = AtomicUsize::new(0);
/// The line ended (Enter was pressed).
static DONE: AtomicBool = AtomicBool::new(false);
/// Bytes beyond `LINE_MAX`, dropped.
static OVERLONG: AtomicUsize = AtomicUsize::new(0);

fn read(reg: u64) -> u32 {
    // SAFETY: PL011_BASE is the UART frame of the platform map, mapped
    // Device-nGnRE; every register used here is 32 bits wide.
    unsafe { core::ptr::read_volatile((PL011_BASE + reg) as *const u32) }
}

fn write(reg: u64, value: u32) {
    // SAFETY: as in `read`.
    unsafe { core::ptr::write_volatile((PL011_BASE + reg) as *mut u32, value) }
}

/// Transmit `bytes`, `\n` as CR LF as a terminal wants it.
fn send(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            send(b"\r");
        }
        while read(FR) & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        write(DR, u32::from(b));
    }
}

struct Uart;

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        send(s.as_bytes());
        Ok(())
    }
}

/// The receive interrupt: drain the FIFO (which also clears the
/// interrupt), echoing each byte, until Enter.
fn on_uart(_intid: u32) {
    while read(FR) & FR_RXFE == 0 {
        let b = (read(DR) & 0xff) as u8;
        if DONE.load(Ordering::Relaxed) {
            continue;
        }
        if b == b'\r' || b == b'\n' {
            send(b"\n");
            DONE.store(true, Ordering::Release);
            continue;
        }
        send(&[b]);
        let len = LEN.load(Ordering::Relaxed);
        match LINE.get(len) {
            Some(slot) => {
                slot.store(b, Ordering::Relaxed);
                LEN.store(len + 1, Ordering::Relaxed);
            }
            None => {
                OVERLONG.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn on_timer(_intid: u32) {
    timer::disable();
}

/// Sleep (WFI) until `done()` or `ms` of counter time have passed; whether
/// `done()` held. The timer ends the last WFI.
fn sleep_until(ms: u64, done: impl Fn() -> bool) -> bool {
    let end = timer::now() + timer::ticks_for_us(timer::frequency(), ms * 1000);
    loop {
        cpu::irq_disable();
        if done() || timer::now() >= end {
            cpu::irq_enable();
            return done();
        }
        timer::arm_at(end);
        // With IRQs masked a pending interrupt still ends the WFI; it is
        // taken as soon as they are unmasked.
        cpu::wfi();
        cpu::irq_enable();
    }
}

pub fn run() -> TestResult {
    gic::init_distributor();
    gic::init_cpu();
    gic::set_handler(VTIMER_INTID, on_timer);
    gic::enable_private(VTIMER_INTID);
    gic::set_handler(PL011_INTID, on_uart);
    gic::enable_spi(PL011_INTID);
    cpu::irq_enable();
    sleep_until(SERVER_GRACE_MS, || false);
    write(CR, 0);
    write(LCR_H, LCR_H_WLEN8 | LCR_H_FEN);
    write(ICR, 0x7ff);
    write(IMSC, INT_RX);
    write(CR, CR_UARTEN | CR_TXE | CR_RXE);

    send(b"type> ");
    ensure!(
        sleep_until(TYPE_WITHIN_MS, || DONE.load(Ordering::Acquire)),
        "no line typed within {TYPE_WITHIN_MS} ms ({} bytes so far)",
        LEN.load(Ordering::Relaxed)
    );
    let len = LEN.load(Ordering::Relaxed);
    let _ = core::fmt::Write::write_fmt(&mut Uart, format_args!("read {len} bytes: "));
    for b in LINE.iter().take(len) {
        send(&[b.load(Ordering::Relaxed)]);
    }
    send(b"\n");
    ensure!(len > 0, "an empty line");
    let overlong = OVERLONG.load(Ordering::Relaxed);
    ensure!(overlong == 0, "the line was {overlong} bytes too long");

    // The line above leaves when this vCPU waits; then nothing here
    // touches the UART until the idle stretch is over.
    sleep_until(IDLE_MS, || false);
    let _ = core::fmt::Write::write_fmt(&mut Uart, format_args!("idled {IDLE_MS} ms\n"));
    // A read the device model answers itself (not from a shadow): it has
    // taken the line above by the time the answer comes, so the domain
    // does not stop with it still posted.
    let _ = read(IMSC);
    Ok(())
}
