//! `/bin/cntvct`: prints `<CNTVCT_EL0> <CNTFRQ_EL0>` in decimal and exits.
//!
//! The Linux test initramfs puts these numbers on its marker line so the
//! `linux_boot` benchmark can read how much virtual time passed since QEMU
//! started: under `-icount shift=4,sleep=off` the virtual counter follows
//! virtual time from 0, and neither QEMU nor Tessera offsets it.
//!
//! The one idea: no libc. This is a freestanding `aarch64-unknown-none`
//! binary whose `_start` reads the two registers and makes two raw Linux
//! system calls (`write` = 64, `exit` = 93, per the arm64 generic syscall
//! table). Linux lets EL0 read both registers (it sets CNTKCTL_EL1.EL0VCTEN
//! for the vDSO).

#![no_std]
#![no_main]
#![forbid(unsafe_op_in_unsafe_fn)]

use core::arch::asm;

const SYS_WRITE: u64 = 64;
const SYS_EXIT: u64 = 93;
const STDOUT: u64 = 1;

/// `CNTVCT_EL0`, the virtual counter (Arm ARM D23.8.x). The ISB keeps the
/// read from being hoisted above earlier instructions.
fn virtual_count() -> u64 {
    let count: u64;
    // SAFETY: reading CNTVCT_EL0 has no side effects; Linux grants EL0
    // access to it (CNTKCTL_EL1.EL0VCTEN), as the vDSO relies on.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack)) };
    count
}

/// `CNTFRQ_EL0`, the counter frequency in Hz that firmware programmed.
fn counter_frequency() -> u64 {
    let frequency: u64;
    // SAFETY: CNTFRQ_EL0 is readable at EL0 whenever the counter is
    // (CNTKCTL_EL1.EL0VCTEN); reading it has no side effects.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) frequency, options(nomem, nostack)) };
    frequency
}

/// Writes `bytes` to standard output, retrying short writes; gives up on
/// an error (there is nowhere to report it).
fn write_stdout(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let written: i64;
        // SAFETY: write(2) only reads `bytes.len()` bytes from a valid
        // slice; the kernel clobbers nothing but x0.
        unsafe {
            asm!(
                "svc #0",
                in("x8") SYS_WRITE,
                inlateout("x0") STDOUT => written,
                in("x1") bytes.as_ptr(),
                in("x2") bytes.len(),
                options(nostack),
            )
        };
        match usize::try_from(written) {
            Ok(n) if n > 0 && n <= bytes.len() => bytes = &bytes[n..],
            _ => return,
        }
    }
}

fn exit(code: u64) -> ! {
    // SAFETY: exit(2) does not return.
    unsafe { asm!("svc #0", in("x8") SYS_EXIT, in("x0") code, options(noreturn, nostack)) }
}

/// Appends `value` in decimal to `out` at `len`, returning the new length.
fn push_decimal(out: &mut [u8; 48], mut len: usize, mut value: u64) -> usize {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        n += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    while n > 0 {
        n -= 1;
        out[len] = digits[n];
        len += 1;
    }
    len
}

/// The process entry point: Linux jumps here with `sp` set up and nothing
/// else this program needs.
#[no_mangle]
pub extern "C" fn _start() -> ! {
    let count = virtual_count();
    let frequency = counter_frequency();
    // Two 20-digit numbers, a space and a newline fit in 48 bytes.
    let mut line = [0u8; 48];
    let mut len = push_decimal(&mut line, 0, count);
    line[len] = b' ';
    len = push_decimal(&mut line, len + 1, frequency);
    line[len] = b'\n';
    write_stdout(&line[..=len]);
    exit(0)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(1)
}
