//! The emulated PL011 UART (ARM PrimeCell UART r1p5, DDI 0183G) a guest
//! uses as its serial console: Linux's `amba-pl011` driver binds to it by
//! its PrimeCell IDs and runs it with transmit and receive interrupts.
//!
//! The one idea: the device has no clock, so "time passes" between two
//! guest accesses. A byte written to DR is on the wire before the guest's
//! next access (it goes to an output ring the shell drains a line at a
//! time), so the transmit FIFO is always empty and never full. A byte
//! the shell pushes sits in the receive FIFO, and because no further byte
//! follows in the same push, the line is idle and the receive timeout has
//! expired by the guest's next look. Interrupt status bits are set and
//! cleared by the events the TRM names (FIFO crossing its trigger level,
//! FIFO drained, ICR), never recomputed from levels, so ICR and masking
//! behave as on hardware.
//!
//! Accesses are decoded as a 32-bit APB peripheral sees them: 8-, 16- and
//! 32-bit accesses at naturally aligned offsets address a byte lane of a
//! 32-bit register; anything else (8-byte, unaligned, odd sizes, outside
//! the 4 KiB window) reads as zero and ignores writes. Everything a guest
//! or the shell can call is total: no indexing, no overflow, no panic.
#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::persist::{PersistError, Pl011State};

#[cfg(test)]
mod tests;

/// Size of the register window (the DT `reg` size must be this, because
/// the AMBA bus reads the IDs at the window's last 32 bytes).
pub const WINDOW_SIZE: u64 = 0x1000;

/// Depth of each FIFO while LCR_H.FEN is set. r1p5 (PeriphID2 revision 3)
/// doubled the FIFOs to 32 entries, and Linux derives its FIFO size from
/// that revision (`get_fifosize_arm`: rev < 3 ? 16 : 32), so the depth and
/// the ID must agree.
pub const FIFO_DEPTH: usize = 32;

/// Bytes the guest may transmit before the shell drains them; beyond this
/// they are dropped (and counted) rather than stalling the guest.
pub const OUTPUT_CAPACITY: usize = 4096;
/// Pending output that is worth forwarding even without a line end: the
/// longest line the kernel's console prints as one.
pub const OUTPUT_LINE: usize = 256;

/// Register offsets (DDI 0183G, 3.2 "Summary of registers").
pub mod reg {
    pub const DR: u64 = 0x000;
    /// UARTRSR on read, UARTECR on write.
    pub const RSR_ECR: u64 = 0x004;
    pub const FR: u64 = 0x018;
    pub const ILPR: u64 = 0x020;
    pub const IBRD: u64 = 0x024;
    pub const FBRD: u64 = 0x028;
    pub const LCR_H: u64 = 0x02c;
    pub const CR: u64 = 0x030;
    pub const IFLS: u64 = 0x034;
    pub const IMSC: u64 = 0x038;
    pub const RIS: u64 = 0x03c;
    pub const MIS: u64 = 0x040;
    pub const ICR: u64 = 0x044;
    pub const DMACR: u64 = 0x048;
    /// UARTPeriphID0; PeriphID1..3 and PCellID0..3 follow, one per word.
    pub const PERIPH_ID0: u64 = 0xfe0;
    /// UARTPCellID3, the last register of the window.
    pub const PCELL_ID3: u64 = 0xffc;
}

/// UARTFR bits.
pub mod fr {
    pub const CTS: u32 = 1 << 0;
    pub const DSR: u32 = 1 << 1;
    pub const DCD: u32 = 1 << 2;
    pub const BUSY: u32 = 1 << 3;
    pub const RXFE: u32 = 1 << 4;
    pub const TXFF: u32 = 1 << 5;
    pub const RXFF: u32 = 1 << 6;
    pub const TXFE: u32 = 1 << 7;
    pub const RI: u32 = 1 << 8;
}

/// UARTCR bits.
pub mod cr {
    pub const UARTEN: u32 = 1 << 0;
    pub const LBE: u32 = 1 << 7;
    pub const TXE: u32 = 1 << 8;
    pub const RXE: u32 = 1 << 9;
    /// Bits 15:7 and 2:0; bits 6:3 are reserved in the PL011.
    pub const IMPLEMENTED: u32 = 0xff87;
    pub const RESET: u32 = TXE | RXE;
}

/// UARTLCR_H bits.
pub mod lcr_h {
    pub const FEN: u32 = 1 << 4;
    pub const IMPLEMENTED: u32 = 0xff;
}

/// UARTIFLS fields: each selects a trigger level in eighths of the FIFO.
pub mod ifls {
    pub const TX_SHIFT: u32 = 0;
    pub const RX_SHIFT: u32 = 3;
    pub const FIELD: u32 = 0x7;
    pub const IMPLEMENTED: u32 = 0x3f;
    /// Both triggers at half full.
    pub const RESET: u32 = 0x12;
}

/// Interrupt bits, shared by UARTIMSC, UARTRIS, UARTMIS and UARTICR.
pub mod int {
    pub const RIM: u32 = 1 << 0;
    pub const CTSM: u32 = 1 << 1;
    pub const DCDM: u32 = 1 << 2;
    pub const DSRM: u32 = 1 << 3;
    pub const RX: u32 = 1 << 4;
    pub const TX: u32 = 1 << 5;
    pub const RT: u32 = 1 << 6;
    pub const FE: u32 = 1 << 7;
    pub const PE: u32 = 1 << 8;
    pub const BE: u32 = 1 << 9;
    pub const OE: u32 = 1 << 10;
    pub const ALL: u32 = 0x7ff;
}

/// UARTPeriphID0..3 then UARTPCellID0..3, the low byte of each word from
/// 0xFE0: part 0x011, designer 0x41 (ARM), revision 3 (r1p5), and the
/// PrimeCell signature 0xB105F00D the AMBA bus checks before matching the
/// peripheral ID against `amba-pl011`'s table (0x00041011, mask 0xfffff).
const ID_BYTES: [u8; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

const ILPR_IMPLEMENTED: u32 = 0xff;
const IBRD_IMPLEMENTED: u32 = 0xffff;
const FBRD_IMPLEMENTED: u32 = 0x3f;
const DMACR_IMPLEMENTED: u32 = 0x7;

/// Modem inputs as the guest sees them: a virtual line whose far end is
/// always present and ready, so CTS, DSR and DCD are asserted and never
/// change (no modem interrupts), and RI is not.
const MODEM_INPUTS: u32 = fr::CTS | fr::DSR | fr::DCD;

/// A bounded byte FIFO over an array.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ring<const N: usize> {
    bytes: [u8; N],
    /// Index of the oldest byte; always below `N` (or 0 when `N` is 0).
    head: usize,
    /// Bytes held; never above `N`.
    len: usize,
}

impl<const N: usize> Ring<N> {
    const fn new() -> Self {
        Self {
            bytes: [0; N],
            head: 0,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `index` steps past `head`, wrapped into the array (`index <= N`).
    fn slot(&self, index: usize) -> usize {
        let at = self.head.wrapping_add(index);
        if at >= N {
            at.wrapping_sub(N)
        } else {
            at
        }
    }

    /// Appends `byte`; false (and nothing stored) when full.
    fn push(&mut self, byte: u8) -> bool {
        if self.len >= N {
            return false;
        }
        let slot = self.slot(self.len);
        match self.bytes.get_mut(slot) {
            Some(cell) => {
                *cell = byte;
                self.len = self.len.wrapping_add(1);
                true
            }
            None => false,
        }
    }

    fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.bytes.get(self.head).copied()?;
        self.head = self.slot(1);
        self.len = self.len.wrapping_sub(1);
        Some(byte)
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

/// One decoded register access: which 32-bit register, and which of its
/// byte lanes.
#[derive(Clone, Copy, Debug)]
struct Access {
    /// Offset of the 32-bit register.
    word: u64,
    /// Bit position of the access within the register (0, 8, 16 or 24).
    shift: u32,
    /// The access's bits, unshifted (0xff, 0xffff or 0xffff_ffff).
    width_mask: u32,
}

impl Access {
    /// `None` for anything a 32-bit APB peripheral does not decode: sizes
    /// other than 1, 2 and 4 (8-byte accesses included), misaligned
    /// offsets and offsets outside the window.
    fn decode(offset: u64, size: u8) -> Option<Self> {
        let width_mask = match size {
            1 => 0xff,
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => return None,
        };
        if offset >= WINDOW_SIZE || offset.checked_rem(u64::from(size)) != Some(0) {
            return None;
        }
        let lane = offset & 3;
        Some(Self {
            word: offset & !3,
            // `lane` is at most 3, so the shift is at most 24.
            shift: (lane as u32).wrapping_mul(8),
            width_mask,
        })
    }

    /// The register bits this access covers.
    fn lanes(self) -> u32 {
        self.width_mask.wrapping_shl(self.shift)
    }

    /// `value` placed at this access's lanes.
    fn place(self, value: u64) -> u32 {
        // Truncation intended: a bus access carries at most 32 bits.
        ((value as u32) & self.width_mask).wrapping_shl(self.shift)
    }

    /// This access's part of a full register value, at bit 0.
    fn extract(self, register: u32) -> u64 {
        u64::from(register.wrapping_shr(self.shift) & self.width_mask)
    }

    /// Whether the access covers bit 0 of the register: only such an
    /// access moves DR's FIFOs.
    fn touches_low_byte(self) -> bool {
        self.shift == 0
    }
}

/// `old` with the bits under `lanes` replaced by `data`, limited to the
/// register's `implemented` bits.
fn merge(old: u32, data: u32, lanes: u32, implemented: u32) -> u32 {
    ((old & !lanes) | (data & lanes)) & implemented
}

/// A trigger level in eighths for an IFLS field. The reserved encodings
/// 0b101..0b111 act as the reset value, half full.
fn trigger_eighths(field: u32) -> usize {
    match field {
        0 => 1,
        1 => 2,
        2 => 4,
        3 => 6,
        4 => 7,
        _ => 4,
    }
}

/// The emulated PL011: its registers, receive FIFO and output ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pl011 {
    rx: Ring<FIFO_DEPTH>,
    output: Ring<OUTPUT_CAPACITY>,
    /// Line ends (`\n`) in `output`.
    output_lines: usize,
    output_dropped: u64,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
    /// Raw interrupt status (UARTRIS), changed only by events.
    ris: u32,
}

impl Default for Pl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl Pl011 {
    /// A UART in its reset state: disabled (CR = TXE | RXE), FIFOs off,
    /// all interrupts masked and none pending.
    pub const fn new() -> Self {
        Self {
            rx: Ring::new(),
            output: Ring::new(),
            output_lines: 0,
            output_dropped: 0,
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: cr::RESET,
            ifls: ifls::RESET,
            imsc: 0,
            dmacr: 0,
            ris: 0,
        }
    }

    /// A guest read of `size` bytes at `offset` in the register window.
    /// Only a read covering the low byte of DR has a side effect: it takes
    /// the oldest received byte.
    pub fn read(&mut self, offset: u64, size: u8) -> u64 {
        let Some(access) = Access::decode(offset, size) else {
            return 0;
        };
        let register = match access.word {
            reg::DR if access.touches_low_byte() => self.receive_from_fifo(),
            word => self.register(word),
        };
        access.extract(register)
    }

    /// A guest write of `size` bytes of `value` at `offset`. A write to
    /// part of a register changes only that part. Writes to read-only and
    /// reserved registers are ignored.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        let Some(access) = Access::decode(offset, size) else {
            return;
        };
        let data = access.place(value);
        let lanes = access.lanes();
        match access.word {
            // Truncation intended: DR's data field is bits 7:0.
            reg::DR if access.touches_low_byte() => self.transmit(data as u8),
            // ECR clears the receive error flags; none is ever raised (the
            // virtual line has no framing, parity, break or overrun).
            reg::RSR_ECR => {}
            reg::ILPR => self.ilpr = merge(self.ilpr, data, lanes, ILPR_IMPLEMENTED),
            reg::IBRD => self.ibrd = merge(self.ibrd, data, lanes, IBRD_IMPLEMENTED),
            reg::FBRD => self.fbrd = merge(self.fbrd, data, lanes, FBRD_IMPLEMENTED),
            reg::LCR_H => self.write_lcr_h(merge(self.lcr_h, data, lanes, lcr_h::IMPLEMENTED)),
            reg::CR => self.cr = merge(self.cr, data, lanes, cr::IMPLEMENTED),
            reg::IFLS => self.ifls = merge(self.ifls, data, lanes, ifls::IMPLEMENTED),
            reg::IMSC => self.imsc = merge(self.imsc, data, lanes, int::ALL),
            reg::ICR => self.ris &= !(data & int::ALL),
            reg::DMACR => self.dmacr = merge(self.dmacr, data, lanes, DMACR_IMPLEMENTED),
            // FR, RIS, MIS and the ID registers are read-only, DR's upper
            // bits are the read-only error flags, and everything else in
            // the window is reserved.
            _ => {}
        }
    }

    /// The registers and receive FIFO, for the persistent state region
    /// (`crate::persist`). Transmitted output is not kept: it is on the
    /// wire as far as the guest knows.
    pub fn snapshot(&self) -> Pl011State {
        let mut rx = heapless::Vec::new();
        for i in 0..self.rx.len() {
            if let Some(&b) = self.rx.bytes.get(self.rx.slot(i)) {
                let _ = rx.push(b);
            }
        }
        Pl011State {
            ilpr: self.ilpr,
            ibrd: self.ibrd,
            fbrd: self.fbrd,
            lcr_h: self.lcr_h,
            cr: self.cr,
            ifls: self.ifls,
            imsc: self.imsc,
            dmacr: self.dmacr,
            ris: self.ris,
            rx,
        }
    }

    /// Take over the UART from a previous device-model generation: every
    /// register of `st` (untrusted) must hold only bits the register
    /// implements and the receive FIFO no more than its depth, or nothing
    /// changes. The transmit interrupt is raised, as after a transmitted
    /// byte: output the guest posted to the old generation may be lost,
    /// and a driver waiting to refill the FIFO must not wait for good.
    pub fn restore(&mut self, st: &Pl011State) -> Result<(), PersistError> {
        let fits = |v: u32, implemented: u32| v & !implemented == 0;
        if !(fits(st.ilpr, ILPR_IMPLEMENTED)
            && fits(st.ibrd, IBRD_IMPLEMENTED)
            && fits(st.fbrd, FBRD_IMPLEMENTED)
            && fits(st.lcr_h, lcr_h::IMPLEMENTED)
            && fits(st.cr, cr::IMPLEMENTED)
            && fits(st.ifls, ifls::IMPLEMENTED)
            && fits(st.imsc, int::ALL)
            && fits(st.dmacr, DMACR_IMPLEMENTED)
            && fits(st.ris, int::ALL))
        {
            return Err(PersistError::Refused("pl011 register"));
        }
        let mut uart = Pl011::new();
        uart.ilpr = st.ilpr;
        uart.ibrd = st.ibrd;
        uart.fbrd = st.fbrd;
        uart.lcr_h = st.lcr_h;
        uart.cr = st.cr;
        uart.ifls = st.ifls;
        uart.imsc = st.imsc;
        uart.dmacr = st.dmacr;
        uart.ris = st.ris | int::TX;
        if st.rx.len() > uart.fifo_depth() {
            return Err(PersistError::Refused("pl011 receive FIFO"));
        }
        for &b in &st.rx {
            if !uart.rx.push(b) {
                return Err(PersistError::Refused("pl011 receive FIFO"));
            }
        }
        *self = uart;
        Ok(())
    }

    /// Offers received bytes to the guest. Takes as many as the receive
    /// FIFO has room for (32 with FEN, 1 without; none while UARTEN or RXE
    /// is clear) and returns how many; the caller keeps the rest and
    /// offers them again after a later access.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let mut taken: usize = 0;
        for &byte in bytes {
            if !self.receive_into_fifo(byte) {
                break;
            }
            taken = taken.saturating_add(1);
        }
        if taken > 0 {
            self.line_idle();
        }
        taken
    }

    /// How many bytes [`Self::push_input`] would take now.
    pub fn input_room(&self) -> usize {
        if self.receiving() {
            self.fifo_depth().saturating_sub(self.rx.len())
        } else {
            0
        }
    }

    /// Moves transmitted bytes, oldest first, into `out`; returns how many.
    pub fn take_output(&mut self, out: &mut [u8]) -> usize {
        let mut taken: usize = 0;
        for slot in out.iter_mut() {
            let Some(byte) = self.output.pop() else {
                break;
            };
            if byte == b'\n' {
                self.output_lines = self.output_lines.saturating_sub(1);
            }
            *slot = byte;
            taken = taken.saturating_add(1);
        }
        taken
    }

    /// Transmitted bytes waiting for [`Self::take_output`].
    pub fn pending_output(&self) -> usize {
        self.output.len()
    }

    /// Whether the pending output holds a whole line (or [`OUTPUT_LINE`]
    /// bytes): what a console that shows whole lines can use. Forwarding
    /// only then costs the shell one console write per line, not per byte.
    pub fn output_line_ready(&self) -> bool {
        self.output_lines > 0 || self.output.len() >= OUTPUT_LINE
    }

    /// Transmitted bytes dropped because the output ring was full.
    pub fn dropped_output(&self) -> u64 {
        self.output_dropped
    }

    /// The UARTINTR line: high while any unmasked interrupt is pending
    /// (UARTMIS != 0).
    pub fn irq_level(&self) -> bool {
        self.masked_status() != 0
    }

    /// A register's full value, without side effects.
    fn register(&self, word: u64) -> u32 {
        match word {
            reg::FR => self.flags(),
            reg::ILPR => self.ilpr,
            reg::IBRD => self.ibrd,
            reg::FBRD => self.fbrd,
            reg::LCR_H => self.lcr_h,
            reg::CR => self.cr,
            reg::IFLS => self.ifls,
            reg::IMSC => self.imsc,
            reg::RIS => self.ris,
            reg::MIS => self.masked_status(),
            reg::DMACR => self.dmacr,
            reg::PERIPH_ID0..=reg::PCELL_ID3 => Self::id_byte(word),
            // DR's upper bits (the receive error flags) and RSR are always
            // zero; ICR is write-only; the rest is reserved.
            _ => 0,
        }
    }

    fn id_byte(word: u64) -> u32 {
        let index = word.wrapping_sub(reg::PERIPH_ID0) / 4;
        usize::try_from(index)
            .ok()
            .and_then(|i| ID_BYTES.get(i))
            .map_or(0, |&byte| u32::from(byte))
    }

    /// UARTFR as a read would return it (reading it has no side effect).
    pub fn flag_register(&self) -> u32 {
        self.flags()
    }

    fn flags(&self) -> u32 {
        // Transmission completes before the guest's next access: the
        // transmit FIFO is empty, never full, and the UART never busy.
        let mut flags = fr::TXFE | MODEM_INPUTS;
        if self.rx.is_empty() {
            flags |= fr::RXFE;
        }
        if self.rx.len() >= self.fifo_depth() {
            flags |= fr::RXFF;
        }
        flags
    }

    fn masked_status(&self) -> u32 {
        self.ris & self.imsc
    }

    fn fifos_enabled(&self) -> bool {
        self.lcr_h & lcr_h::FEN != 0
    }

    /// With FEN clear each FIFO is a one-byte holding register.
    fn fifo_depth(&self) -> usize {
        if self.fifos_enabled() {
            FIFO_DEPTH
        } else {
            1
        }
    }

    /// The receive FIFO level at which RXIS asserts (`>=`). Without FIFOs
    /// it asserts as soon as the holding register is full.
    fn rx_trigger(&self) -> usize {
        if !self.fifos_enabled() {
            return 1;
        }
        let field = self.ifls.wrapping_shr(ifls::RX_SHIFT) & ifls::FIELD;
        trigger_eighths(field).saturating_mul(FIFO_DEPTH / 8)
    }

    fn receiving(&self) -> bool {
        self.cr & (cr::UARTEN | cr::RXE) == cr::UARTEN | cr::RXE
    }

    /// One byte arriving on the receive line; false when the receiver is
    /// off or the FIFO is full (the byte stays with the caller: the virtual
    /// line has flow control, so no overrun).
    fn receive_into_fifo(&mut self, byte: u8) -> bool {
        if !self.receiving() || self.rx.len() >= self.fifo_depth() || !self.rx.push(byte) {
            return false;
        }
        // RXIS asserts when the level *reaches* the trigger, as on
        // hardware (Linux's pl011_enable_interrupts relies on this edge
        // and drains the FIFO to re-arm it).
        if self.rx.len() == self.rx_trigger() {
            self.ris |= int::RX;
        }
        true
    }

    /// The receive line went idle with data in the FIFO: the 32-bit-period
    /// timeout expires before the guest can look again, so RTIS asserts.
    /// Linux needs it for any byte count below the RX trigger (a single
    /// typed key); the TRM raises it whatever the level.
    fn line_idle(&mut self) {
        if !self.rx.is_empty() {
            self.ris |= int::RT;
        }
    }

    /// A read of DR's low byte: the oldest received byte with its (always
    /// clear) error flags, or 0 when the FIFO is empty.
    fn receive_from_fifo(&mut self) -> u32 {
        let Some(byte) = self.rx.pop() else {
            return 0;
        };
        // RXIS clears once the level falls below the trigger; RTIS once
        // the FIFO is empty.
        if self.rx.len() < self.rx_trigger() {
            self.ris &= !int::RX;
        }
        if self.rx.is_empty() {
            self.ris &= !int::RT;
        }
        u32::from(byte)
    }

    /// A write of DR: the byte is sent at once (or, in loopback, received).
    /// Sending is not gated on UARTEN/TXE, so early boot code that writes
    /// DR before enabling the UART (Linux earlycon) is still heard; on
    /// hardware those bytes would wait in the FIFO until enabled.
    fn transmit(&mut self, byte: u8) {
        // The transmit FIFO is empty again, so at or below any trigger
        // level (and, without FIFOs, the holding register is free): TXIS.
        // Linux's pl011_tx_chars refills on TXIS and masks TXIM once its
        // buffer is empty, so this never storms.
        self.ris |= int::TX;
        if self.cr & cr::LBE != 0 {
            // A full FIFO drops the looped byte, as a hardware overrun
            // would (without recording OE).
            if self.receive_into_fifo(byte) {
                self.line_idle();
            }
            return;
        }
        if !self.output.push(byte) {
            self.output_dropped = self.output_dropped.saturating_add(1);
        } else if byte == b'\n' {
            self.output_lines = self.output_lines.saturating_add(1);
        }
    }

    /// Switching the FIFOs on or off flushes the receive FIFO, so its level
    /// never exceeds the depth; an empty FIFO has no RX interrupts pending.
    fn write_lcr_h(&mut self, value: u32) {
        let toggled = (self.lcr_h ^ value) & lcr_h::FEN != 0;
        self.lcr_h = value;
        if toggled {
            self.rx.clear();
            self.ris &= !(int::RX | int::RT);
        }
    }
}
