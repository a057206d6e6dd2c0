//! The kernel's own console: a PL011 (Arm PL011 TRM, DDI 0183: DR at 0x0,
//! FR at 0x18 with RXFE = bit 4 and TXFF = bit 5, IMSC at 0x38, ICR at
//! 0x44). Its base comes from the host DTB. Output is polled; input comes
//! on the receive and receive-timeout interrupts, whose handler drains the
//! receive FIFO with `read_byte`.

use core::sync::atomic::{AtomicU64, Ordering};

static BASE: AtomicU64 = AtomicU64::new(0);

/// UARTIMSC: interrupt mask set/clear (TRM 3.3.12).
const IMSC: u64 = 0x38;
/// UARTICR: interrupt clear (TRM 3.3.15).
const ICR: u64 = 0x44;
/// Receive (RXIM) and receive-timeout (RTIM) interrupt bits, in IMSC and
/// ICR alike. The timeout one fires for bytes below the FIFO's trigger
/// level, so a single keystroke is not left waiting for more.
const RX_INTERRUPTS: u32 = (1 << 4) | (1 << 6);

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

/// Unmask the receive and receive-timeout interrupts, leaving the others
/// (and the line settings firmware chose) as they are.
pub fn enable_rx_interrupts() {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    // SAFETY: as in `write_bytes`; IMSC and ICR are 32-bit registers, and
    // only the two receive bits change.
    unsafe {
        core::ptr::write_volatile((base + ICR) as *mut u32, RX_INTERRUPTS);
        let mask = core::ptr::read_volatile((base + IMSC) as *const u32);
        core::ptr::write_volatile((base + IMSC) as *mut u32, mask | RX_INTERRUPTS);
    }
}

/// Clear the receive interrupts; call it before draining the FIFO, never
/// after (a byte that arrived between the last read and the clear would
/// wait, unannounced, for the next one). Draining to empty clears them on
/// its own; this covers a receive timeout the hardware latched meanwhile.
pub fn clear_rx_interrupts() {
    let base = BASE.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    // SAFETY: as in `write_bytes`; writing ICR only clears interrupt bits.
    unsafe { core::ptr::write_volatile((base + ICR) as *mut u32, RX_INTERRUPTS) };
}
