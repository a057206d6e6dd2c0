//! The kernel log and the guests' console lines, on one UART.
//!
//! Kernel lines start with `tessera: `. Guest output is buffered per domain
//! until a newline and printed as `(<domain>) <line>`, so lines from
//! different domains and pCPUs never interleave mid-line; the domain with
//! the keyboard also sees its partial line (prompt and echo) at once. The
//! line logic is portable (`tessera_kernel::console_lines`).

use crate::arch::aarch64::uart;
use crate::arch::aarch64::Lock;
use core::fmt::{self, Write};
pub use tessera_kernel::console_lines::LineBuffer;
use tessera_kernel::console_lines::{Sink, Terminal};

/// The UART, and who owns its open line.
static LOCK: Lock<Terminal> = Lock::new(Terminal::new());

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
    let _term = LOCK.lock();
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

/// Domain `di`'s console output (its `LineBuffer` is `buf`).
pub fn guest_output(buf: &mut LineBuffer, di: usize, name: &str, bytes: &[u8]) {
    let mut term = LOCK.lock();
    buf.push(&mut term, &mut Uart, di, name, bytes, focus() == di);
}

/// `log!("...")`: a formatted kernel log line.
macro_rules! log {
    ($($arg:tt)*) => { $crate::hv::console::log_line(format_args!($($arg)*)) };
}
pub(crate) use log;
