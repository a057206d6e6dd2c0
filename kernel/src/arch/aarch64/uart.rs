//! The kernel's own console: a polled PL011 (Arm PL011 TRM, DR at 0x0, FR
//! at 0x18 with RXFE = bit 4 and TXFF = bit 5). Its base comes from the host
//! DTB.

use core::sync::atomic::{AtomicU64, Ordering};

static BASE: AtomicU64 = AtomicU64::new(0);

/// Use the PL011 at `base` (identity-mapped as device memory).
pub fn init(base: u64) {
    BASE.store(base, Ordering::Relaxed);
}

/// Write bytes, blocking while the FIFO is full. Dropped before `init`.
pub fn write_bytes(bytes: &[u8]) {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    for &b in bytes {
        // SAFETY: `base` is the PL011 found in the host DTB and mapped as
        // device memory by the EL2 MMU setup; FR and DR are 32-bit registers.
        unsafe {
            while core::ptr::read_volatile((base + 0x18) as *const u32) & (1 << 5) != 0 {}
            core::ptr::write_volatile(base as *mut u32, u32::from(b));
        }
    }
}

/// One received byte, if the receive FIFO holds one.
pub fn read_byte() -> Option<u8> {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return None;
    }
    // SAFETY: as in `write_bytes`; reading DR pops one byte of the FIFO.
    unsafe {
        if core::ptr::read_volatile((base + 0x18) as *const u32) & (1 << 4) != 0 {
            return None;
        }
        Some(core::ptr::read_volatile(base as *const u32) as u8)
    }
}
