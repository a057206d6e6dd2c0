//! The kernel log and the guests' console lines, on one UART.
//!
//! Kernel lines start with `tessera: `. Guest output from `console_io` is
//! buffered per domain until a newline and printed as `(<domain>) <line>`,
//! so lines from different domains and pCPUs never interleave mid-line.

use crate::arch::aarch64::uart;
use core::fmt::{self, Write};

static LOCK: spin::Mutex<()> = spin::Mutex::new(());

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
