//! The kernel log and the guests' console lines, on one UART.
//!
//! Kernel lines start with `tessera: `. Guest output is buffered per domain
//! until a newline and printed as `(<domain>) <line>`, so lines from
//! different domains and pCPUs never interleave mid-line; the domain with
//! the keyboard also sees its partial line (prompt and echo) at once. The
//! line logic is portable (`tessera_kernel::console_lines`).
//!
//! Keyboard input arrives on the UART's receive interrupt: `take_input`
//! drains the FIFO into the queue of the domain with the focus (portable:
//! `tessera_kernel::console_input`) and raises `VIRQ_CONSOLE_INPUT` on the
//! device model that serves it, which reads it with IOREQ `ConsoleRead`.

use super::{domains, ioreq, next_with_uart, MAX_DOMAINS};
use crate::arch::aarch64::Lock;
use crate::arch::aarch64::{gic, uart};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use tessera_kernel::console_input::Keyboard;
pub use tessera_kernel::console_lines::LineBuffer;
use tessera_kernel::console_lines::{Sink, Terminal};

/// The UART, and who owns its open line.
static LOCK: Lock<Terminal> = Lock::new(Terminal::new());

/// The focus and what was typed at each domain. Taken by the receive
/// interrupt and by `ConsoleRead`, never together with `LOCK`.
static KEYBOARD: Lock<Keyboard<MAX_DOMAINS>> = Lock::new(Keyboard::new());

/// The UART's receive interrupt (0: none, so no keyboard input).
static INPUT_INTID: AtomicU32 = AtomicU32::new(0);

struct Uart;
impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        uart::write_bytes(s.as_bytes());
        Ok(())
    }
}
impl Sink for Uart {
    fn write(&mut self, bytes: &[u8]) {
        uart::write_bytes(bytes);
    }
}

/// Print one kernel log line.
pub fn log_line(args: fmt::Arguments<'_>) {
    let mut term = LOCK.lock();
    term.close(&mut Uart);
    let _ = Uart.write_str("tessera: ");
    let _ = Uart.write_fmt(args);
    let _ = Uart.write_str("\n");
    drop(term);
    drain_stashes();
}

/// Domains (bit = domain index) whose console bytes wait in their stash
/// because the terminal was busy when they wrote (`guest_output`).
static STASHED: AtomicU64 = AtomicU64::new(0);
const _: () = assert!(MAX_DOMAINS <= 64, "STASHED has one bit per domain");

/// Print what other domains stashed while the terminal was busy. Never
/// waits: a domain whose buffer or the terminal is in use now keeps its
/// bit, and its stash goes out with its next write or the next drain.
fn drain_stashes() {
    let mut stashed = STASHED.swap(0, Ordering::AcqRel);
    while stashed != 0 {
        let di = stashed.trailing_zeros() as usize;
        let bit = 1u64 << di;
        stashed &= !bit;
        let printed = domains().get(di).is_some_and(|d| {
            let Some(mut buf) = d.console.try_lock() else {
                return false;
            };
            let Some(mut term) = LOCK.try_lock() else {
                return false;
            };
            if buf.has_stash() {
                buf.push(&mut term, &mut Uart, di, &d.name, &[], focus() == di);
            }
            true
        });
        if !printed {
            STASHED.fetch_or(bit, Ordering::AcqRel);
        }
    }
}

/// The domain index that receives keyboard input (`usize::MAX`: none):
/// `KEYBOARD`'s focus, mirrored so that console output can ask without
/// taking its lock.
static FOCUS: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Give keyboard input to domain index `di`.
pub fn set_focus(di: usize) {
    let mut kb = KEYBOARD.lock();
    kb.set_focus(Some(di));
    FOCUS.store(kb.focus().unwrap_or(usize::MAX), Ordering::Relaxed);
}

/// The domain index that receives keyboard input.
pub fn focus() -> usize {
    FOCUS.load(Ordering::Relaxed)
}

/// Take keyboard input on the UART's interrupt `intid`, routed to the
/// pCPU with affinity `mpidr`. Fails if the GIC has no such SPI.
pub fn enable_input(intid: u32, mpidr: u64) -> Result<(), ()> {
    gic::route_spi(intid, mpidr)?;
    INPUT_INTID.store(intid, Ordering::Relaxed);
    uart::enable_rx_interrupts();
    Ok(())
}

/// The UART's receive interrupt, once `enable_input` set it up (else 0).
pub fn input_intid() -> u32 {
    INPUT_INTID.load(Ordering::Relaxed)
}

/// A physical interrupt the scheduler does not handle itself: the UART's
/// receive interrupt, or one nobody enabled (ignored).
pub fn other_interrupt(intid: u32) {
    if intid == input_intid() && intid != 0 {
        take_input();
    }
}

/// Bytes taken from the receive FIFO per interrupt: more than the FIFO
/// holds. A byte that arrives meanwhile raises the interrupt again.
const INPUT_BATCH: usize = 64;

/// The UART's receive interrupt: hand what it received to the domain with
/// the focus (Ctrl-T moves it to the next domain with an emulated UART),
/// then wake the device model serving each domain that got bytes.
fn take_input() {
    let mut bytes = [0u8; INPUT_BATCH];
    let (received, focus) = {
        let mut kb = KEYBOARD.lock();
        uart::clear_rx_interrupts();
        let mut n = 0;
        for slot in bytes.iter_mut() {
            let Some(b) = uart::read_byte() else { break };
            *slot = b;
            n += 1;
        }
        let r = kb.receive(bytes.get(..n).unwrap_or(&[]), |cur| {
            next_with_uart(cur.unwrap_or(usize::MAX)).or(cur)
        });
        let focus = kb.focus();
        FOCUS.store(focus.unwrap_or(usize::MAX), Ordering::Relaxed);
        (r, focus)
    };
    if received.focus_moved {
        if let Some(d) = focus.and_then(|di| domains().get(di)) {
            log_line(format_args!(
                "console input now goes to d{} {}",
                d.id, d.name
            ));
        }
    }
    for di in received.overflowed.iter() {
        if let Some(d) = domains().get(di) {
            log_line(format_args!(
                "d{} {}: console input is not being read; dropping what is typed at it",
                d.id, d.name
            ));
        }
    }
    for di in received.fed.iter() {
        ioreq::console_input(di);
    }
}

/// Copy what was typed at domain `di` into `out`, leaving it queued; how
/// many bytes. `consume_input` takes them once they are delivered.
pub fn peek_input(di: usize, out: &mut [u8]) -> usize {
    KEYBOARD.lock().peek(di, out)
}

/// Drop the `n` bytes `peek_input` gave for domain `di`.
pub fn consume_input(di: usize, n: usize) {
    KEYBOARD.lock().consume(di, n);
}

/// Slot `di` holds a new domain: input typed at the old one is dropped.
pub fn forget_input(di: usize) {
    KEYBOARD.lock().forget(di);
}

/// Domain `di`'s console output (its `LineBuffer` is `buf`). It never
/// waits for the terminal: if another pCPU is printing, the bytes are
/// stashed (`LineBuffer::stash`) and printed later, in order.
pub fn guest_output(buf: &mut LineBuffer, di: usize, name: &str, bytes: &[u8]) {
    let Some(mut term) = LOCK.try_lock() else {
        buf.stash(bytes);
        if let Some(bit) = 1u64.checked_shl(di as u32) {
            STASHED.fetch_or(bit, Ordering::AcqRel);
        }
        return;
    };
    buf.push(&mut term, &mut Uart, di, name, bytes, focus() == di);
    drop(term);
    // Its own stash went out first, just now.
    if let Some(bit) = 1u64.checked_shl(di as u32) {
        STASHED.fetch_and(!bit, Ordering::AcqRel);
    }
    if STASHED.load(Ordering::Acquire) != 0 {
        drain_stashes();
    }
}

/// `log!("...")`: a formatted kernel log line.
macro_rules! log {
    ($($arg:tt)*) => { $crate::hv::console::log_line(format_args!($($arg)*)) };
}
pub(crate) use log;
