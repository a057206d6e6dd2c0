//! The kernel log and the guests' console lines, on one UART.
//!
//! Kernel lines start with `tessera: `. Guest output from `console_io` is
//! buffered per domain until a newline and printed as `(<domain>) <line>`,
//! so lines from different domains and pCPUs never interleave mid-line.

use crate::arch::aarch64::uart;
use crate::arch::aarch64::Lock;
use core::fmt::{self, Write};

static LOCK: Lock<()> = Lock::new(());

struct Uart;
impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        uart::write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Print one kernel log line.
pub fn log_line(args: fmt::Arguments<'_>) {
    let _guard = LOCK.lock();
    let _ = Uart.write_str("tessera: ");
    let _ = Uart.write_fmt(args);
    let _ = Uart.write_str("\n");
}

/// Ctrl-T: move keyboard input to the next domain with an emulated UART.
pub const FOCUS_KEY: u8 = 0x14;

/// The domain index that receives keyboard input (`usize::MAX`: none).
static FOCUS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(usize::MAX);

/// Set the domain index that receives keyboard input.
pub fn set_focus(di: usize) {
    FOCUS.store(di, core::sync::atomic::Ordering::Relaxed);
}

/// The domain index that receives keyboard input.
pub fn focus() -> usize {
    FOCUS.load(core::sync::atomic::Ordering::Relaxed)
}

/// Take typed bytes for domain `di` into `out` if it has the focus. The
/// focus key is consumed and moves the focus with `next(current)`; reading
/// stops there so the rest goes to the new owner.
pub fn read_input(di: usize, out: &mut [u8], next: impl Fn(usize) -> usize) -> usize {
    let _guard = LOCK.lock();
    let mut n = 0;
    while n < out.len() && focus() == di {
        let Some(b) = uart::read_byte() else { break };
        if b == FOCUS_KEY {
            set_focus(next(di));
            break;
        }
        out[n] = b;
        n += 1;
    }
    n
}

/// Print one guest console line with its domain prefix.
pub fn guest_line(domain: &str, line: &[u8]) {
    let _guard = LOCK.lock();
    uart::write_bytes(b"(");
    uart::write_bytes(domain.as_bytes());
    uart::write_bytes(b") ");
    uart::write_bytes(line);
    uart::write_bytes(b"\n");
}

/// `log!("...")`: a formatted kernel log line.
macro_rules! log {
    ($($arg:tt)*) => { $crate::hv::console::log_line(format_args!($($arg)*)) };
}
pub(crate) use log;

/// A domain's partial console line.
pub struct LineBuffer {
    buf: heapless::Vec<u8, 256>,
}

impl LineBuffer {
    pub const fn new() -> Self {
        Self {
            buf: heapless::Vec::new(),
        }
    }

    /// Append guest bytes, printing every completed (or overlong) line.
    pub fn push(&mut self, domain: &str, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                guest_line(domain, &self.buf);
                self.buf.clear();
                continue;
            }
            if b == b'\r' {
                continue;
            }
            // Non-printable bytes are shown as '.', so a guest cannot send
            // terminal escape sequences to the operator's console.
            let b = if b == b'\t' || (0x20..0x7f).contains(&b) {
                b
            } else {
                b'.'
            };
            if self.buf.push(b).is_err() {
                guest_line(domain, &self.buf);
                self.buf.clear();
                let _ = self.buf.push(b);
            }
        }
    }
}
