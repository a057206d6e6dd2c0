//! Console output: `print!`/`println!` through `console_io` under Tessera, or
//! straight to the PL011 in native mode.
//!
//! The one idea: a whole `print!` is formatted into one buffer under a spin
//! lock (with IRQs masked, so an interrupt handler on the same CPU cannot
//! deadlock on it) and leaves in a single `console_io` write, so lines from
//! different CPUs never interleave and the hypervisor's per-domain prefix
//! lands at line starts.

use crate::text::{write_result_line, FixedBuf};
use core::fmt::{self, Write};
use tessera_ipc::hypercall::CONSOLE_IO_MAX;
use tessera_ipc::platform::PL011_BASE;

type Buffer = FixedBuf<CONSOLE_IO_MAX>;

static OUT: spin::Mutex<Buffer> = spin::Mutex::new(Buffer::new());

/// PL011 data register and flag register (PL011 TRM §3.3).
const PL011_DR: u64 = 0x00;
const PL011_FR: u64 = 0x18;
const PL011_FR_TXFF: u32 = 1 << 5;

fn pl011_write(bytes: &[u8]) {
    let put = |b: u8| {
        // SAFETY: PL011_BASE is the UART frame of the platform map, mapped
        // Device-nGnRE; FR is read-only and DR takes one byte per write.
        unsafe {
            while core::ptr::read_volatile((PL011_BASE + PL011_FR) as *const u32) & PL011_FR_TXFF
                != 0
            {
                core::hint::spin_loop();
            }
            core::ptr::write_volatile((PL011_BASE + PL011_DR) as *mut u32, u32::from(b));
        }
    };
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

fn emit(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if crate::is_native() {
        pl011_write(bytes);
    } else {
        crate::hypercall::console_write(bytes);
    }
}

/// Formats into the shared buffer, sending it whenever it fills.
struct Sink<'a>(&'a mut Buffer);

impl Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        loop {
            let taken = self.0.push_bytes(rest);
            rest = &rest[taken..];
            if rest.is_empty() {
                return Ok(());
            }
            emit(self.0.as_bytes());
            self.0.clear();
        }
    }
}

fn print_locked(buf: &mut Buffer, args: fmt::Arguments<'_>, newline: bool) {
    let mut sink = Sink(buf);
    let _ = sink.write_fmt(args);
    if newline {
        let _ = sink.write_str("\n");
    }
    emit(sink.0.as_bytes());
    sink.0.clear();
}

fn with_console(f: impl FnOnce(&mut Buffer)) {
    let irqs = crate::cpu::irq_save();
    f(&mut OUT.lock());
    crate::cpu::irq_restore(irqs);
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    with_console(|buf| print_locked(buf, args, false));
}

#[doc(hidden)]
pub fn _print_line(args: fmt::Arguments<'_>) {
    with_console(|buf| print_locked(buf, args, true));
}

/// Prints the test's one result line (`TEST <name> PASS|FAIL <reason>`).
pub fn print_result(name: &str, outcome: Result<(), &str>) {
    let mut line = FixedBuf::<512>::new();
    let _ = write_result_line(&mut line, name, outcome);
    _print_line(format_args!("{line}"));
}

/// Prints a line even if another CPU holds the console lock (it may have
/// died holding it): waits a while, then takes the lock by force. Only for
/// fatal paths, after which nothing else prints.
pub fn force_line(args: fmt::Arguments<'_>) {
    crate::cpu::irq_disable();
    for _ in 0..10_000_000 {
        if let Some(mut buf) = OUT.try_lock() {
            print_locked(&mut buf, args, true);
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the holder has not released the lock in ~10M spins, so it is
    // stuck or dead; this is the last output before the domain crashes.
    unsafe { OUT.force_unlock() };
    if let Some(mut buf) = OUT.try_lock() {
        print_locked(&mut buf, args, true);
    }
}

/// `print_result` for fatal paths; see [`force_line`].
pub fn force_result(name: &str, outcome: Result<(), &str>) {
    let mut line = FixedBuf::<512>::new();
    let _ = write_result_line(&mut line, name, outcome);
    force_line(format_args!("{line}"));
}

/// Prints to the domain console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the domain console, in one console write.
#[macro_export]
macro_rules! println {
    () => { $crate::console::_print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::_print_line(format_args!($($arg)*)) };
}
