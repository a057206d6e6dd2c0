//! Host tests of the PL011: Linux's `amba-pl011` sequences (probe,
//! startup, console write, interrupt handler) replayed against the model,
//! then the edges: FIFO full, FEN off, ICR, read-only registers and every
//! access size at every offset.
// Test code indexes its own fixed vectors and counts small loops; the
// deny list in the parent guards the device, not the tests.
#![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use super::*;

const UART011_FR_MODEM: u32 = fr::CTS | fr::DSR | fr::DCD;
const WLEN_8: u64 = 0x60;

fn read32(uart: &mut Pl011, offset: u64) -> u32 {
    uart.read(offset, 4) as u32
}

/// Linux's `pl011_read`/`pl011_write` for the ARM vendor use 16-bit
/// accesses (UPIO_MEM).
fn readw(uart: &mut Pl011, offset: u64) -> u32 {
    uart.read(offset, 2) as u32
}

fn writew(uart: &mut Pl011, offset: u64, value: u32) {
    uart.write(offset, 2, u64::from(value));
}

fn drain_output(uart: &mut Pl011) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 64];
    loop {
        let n = uart.take_output(&mut chunk);
        if n == 0 {
            return all;
        }
        all.extend_from_slice(&chunk[..n]);
    }
}

/// What the AMBA bus does before binding a driver: read the eight ID
/// words at the end of the window with 32-bit reads, keep the low byte of
/// each.
fn amba_ids(uart: &mut Pl011) -> (u32, u32) {
    let mut pid = 0;
    let mut cid = 0;
    for i in 0..4u64 {
        pid |= (read32(uart, 0xfe0 + 4 * i) & 0xff) << (8 * i);
        cid |= (read32(uart, 0xff0 + 4 * i) & 0xff) << (8 * i);
    }
    (pid, cid)
}

/// The driver side of the tests: the register traffic of `amba-pl011`
/// from probe to an open tty, keeping the driver's cached mask as it does.
struct LinuxDriver {
    im: u32,
    fifosize: usize,
}

impl LinuxDriver {
    /// Probe (`pl011_probe` + `pl011_register_port`), console setup at
    /// 115200 8n1 (`pl011_set_termios`), then `pl011_startup`.
    fn probe_and_open(uart: &mut Pl011) -> Self {
        let (pid, cid) = amba_ids(uart);
        assert_eq!(cid, 0xb105_f00d, "AMBA PrimeCell signature");
        assert_eq!(pid & 0x000f_ffff, 0x0004_1011, "amba-pl011 id table entry");
        let rev = (pid >> 20) & 0xf;
        let fifosize = if rev < 3 { 16 } else { 32 };

        // pl011_register_port: mask and clear everything.
        writew(uart, reg::IMSC, 0);
        writew(uart, reg::ICR, 0xffff);

        // pl011_console_get_options only trusts the registers if UARTEN.
        assert_eq!(readw(uart, reg::CR) & cr::UARTEN, 0);

        // pl011_set_termios with a 24 MHz clock: quot = 24e6 * 4 / 115200.
        let quot: u32 = 833;
        writew(uart, reg::FBRD, quot & 0x3f);
        writew(uart, reg::IBRD, quot >> 6);
        writew(uart, reg::LCR_H, (WLEN_8 as u32) | lcr_h::FEN);
        let old_cr = readw(uart, reg::CR) & !(0x8000 | 0x4000);
        writew(uart, reg::CR, old_cr);

        // pl011_startup -> pl011_hwinit.
        writew(
            uart,
            reg::ICR,
            int::OE | int::BE | int::PE | int::FE | int::RT | int::RX,
        );
        let im = readw(uart, reg::IMSC);
        writew(uart, reg::IMSC, int::RT | int::RX);
        // pl011_allocate_irq, then the vendor IFLS (RX4_8 | TX4_8).
        writew(uart, reg::IMSC, im);
        writew(uart, reg::IFLS, 0x12);
        let mut cr_value = readw(uart, reg::CR) & (0x0800 | 0x0400);
        cr_value |= cr::UARTEN | cr::RXE | cr::TXE;
        writew(uart, reg::CR, cr_value);
        let _old_status = readw(uart, reg::FR) & UART011_FR_MODEM;

        // pl011_enable_interrupts: clear RX interrupts, drain, unmask.
        writew(uart, reg::ICR, int::RT | int::RX);
        for _ in 0..fifosize * 2 {
            if readw(uart, reg::FR) & fr::RXFE != 0 {
                break;
            }
            readw(uart, reg::DR);
        }
        let im = int::RT | int::RX;
        writew(uart, reg::IMSC, im);
        Self { im, fifosize }
    }

    /// `pl011_console_write`: enable, put each byte once TXFF is clear,
    /// wait for BUSY to clear, restore CR.
    fn console_write(&mut self, uart: &mut Pl011, text: &[u8]) {
        let old_cr = readw(uart, reg::CR);
        writew(uart, reg::CR, (old_cr & !0x8000) | cr::UARTEN | cr::TXE);
        for &byte in text {
            let mut spins = 0;
            while readw(uart, reg::FR) & fr::TXFF != 0 {
                spins += 1;
                assert!(spins < 1000, "TXFF stuck");
            }
            writew(uart, reg::DR, u32::from(byte));
        }
        let mut spins = 0;
        while readw(uart, reg::FR) & fr::BUSY != 0 {
            spins += 1;
            assert!(spins < 1000, "BUSY stuck");
        }
        writew(uart, reg::CR, old_cr);
    }

    /// `pl011_start_tx_pio`: `pl011_tx_chars(from_irq = false)` fills the
    /// FIFO until TXFF; TXIM is unmasked only if bytes are left.
    fn start_tx(&mut self, uart: &mut Pl011, xmit: &mut Vec<u8>) {
        if self.tx_chars(uart, xmit, false) {
            self.im |= int::TX;
            writew(uart, reg::IMSC, self.im);
        }
    }

    /// `pl011_tx_chars`: returns whether TX interrupts stay enabled.
    fn tx_chars(&mut self, uart: &mut Pl011, xmit: &mut Vec<u8>, from_irq: bool) -> bool {
        let mut count = self.fifosize >> 1;
        if xmit.is_empty() {
            self.stop_tx(uart);
            return false;
        }
        loop {
            if from_irq {
                if count == 0 {
                    break;
                }
                count -= 1;
            }
            if !from_irq && readw(uart, reg::FR) & fr::TXFF != 0 {
                break;
            }
            let byte = xmit.remove(0);
            writew(uart, reg::DR, u32::from(byte));
            if xmit.is_empty() {
                break;
            }
        }
        if xmit.is_empty() {
            self.stop_tx(uart);
            return false;
        }
        true
    }

    fn stop_tx(&mut self, uart: &mut Pl011) {
        self.im &= !int::TX;
        writew(uart, reg::IMSC, self.im);
    }

    /// `pl011_int`: returns whether the interrupt was ours. Received bytes
    /// go to `rx`, TXIS refills from `xmit`.
    fn isr(&mut self, uart: &mut Pl011, rx: &mut Vec<u8>, xmit: &mut Vec<u8>) -> bool {
        let mut status = readw(uart, reg::RIS) & self.im;
        if status == 0 {
            return false;
        }
        let mut pass_counter = 256;
        loop {
            writew(uart, reg::ICR, status & !(int::TX | int::RT | int::RX));
            if status & (int::RT | int::RX) != 0 {
                // pl011_fifo_to_tty
                for _ in 0..256 {
                    if readw(uart, reg::FR) & fr::RXFE != 0 {
                        break;
                    }
                    let ch = readw(uart, reg::DR);
                    assert_eq!(ch & 0xf00, 0, "no receive error flags");
                    rx.push(ch as u8);
                }
            }
            if status & int::TX != 0 {
                self.tx_chars(uart, xmit, true);
            }
            if pass_counter == 0 {
                break;
            }
            pass_counter -= 1;
            status = readw(uart, reg::RIS) & self.im;
            if status == 0 {
                break;
            }
        }
        true
    }
}

fn opened() -> (Pl011, LinuxDriver) {
    let mut uart = Pl011::new();
    let driver = LinuxDriver::probe_and_open(&mut uart);
    (uart, driver)
}

#[test]
fn reset_state_matches_the_trm() {
    let mut uart = Pl011::new();
    assert_eq!(read32(&mut uart, reg::CR), cr::TXE | cr::RXE);
    assert_eq!(read32(&mut uart, reg::IFLS), 0x12);
    assert_eq!(
        read32(&mut uart, reg::FR),
        fr::TXFE | fr::RXFE | UART011_FR_MODEM
    );
    for offset in [reg::RIS, reg::MIS, reg::IMSC, reg::LCR_H, reg::DMACR] {
        assert_eq!(read32(&mut uart, offset), 0, "offset {offset:#x}");
    }
    assert!(!uart.irq_level());
    assert_eq!(uart, Pl011::default());
}

#[test]
fn ids_identify_an_arm_pl011_r1p5() {
    let mut uart = Pl011::new();
    let bytes: Vec<u32> = (0..8).map(|i| read32(&mut uart, 0xfe0 + 4 * i)).collect();
    assert_eq!(bytes, [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
    let (pid, cid) = amba_ids(&mut uart);
    assert_eq!(pid, 0x0034_1011);
    assert_eq!(cid, 0xb105_f00d);
    // Linux sizes its FIFO from the revision: it must agree with ours.
    assert_eq!(FIFO_DEPTH, if (pid >> 20) & 0xf < 3 { 16 } else { 32 });
}

#[test]
fn linux_startup_leaves_the_uart_enabled_with_rx_interrupts() {
    let (mut uart, driver) = opened();
    assert_eq!(driver.fifosize, FIFO_DEPTH);
    assert_eq!(readw(&mut uart, reg::IBRD), 833 >> 6);
    assert_eq!(readw(&mut uart, reg::FBRD), 833 & 0x3f);
    assert_eq!(readw(&mut uart, reg::LCR_H), (WLEN_8 as u32) | lcr_h::FEN);
    assert_eq!(readw(&mut uart, reg::CR), cr::UARTEN | cr::RXE | cr::TXE);
    assert_eq!(readw(&mut uart, reg::IMSC), int::RT | int::RX);
    assert!(!uart.irq_level());
    assert_eq!(uart.input_room(), FIFO_DEPTH);
}

#[test]
fn console_write_is_sent_in_order_and_never_waits() {
    let (mut uart, mut driver) = opened();
    driver.console_write(&mut uart, b"Debian GNU/Linux 13 tessera ttyAMA0\n");
    assert_eq!(
        drain_output(&mut uart),
        b"Debian GNU/Linux 13 tessera ttyAMA0\n"
    );
    // TXIS is raw-pending but masked: no interrupt.
    assert_ne!(readw(&mut uart, reg::RIS) & int::TX, 0);
    assert!(!uart.irq_level());
}

#[test]
fn tty_output_goes_out_without_needing_the_tx_interrupt() {
    let (mut uart, mut driver) = opened();
    let text: Vec<u8> = (0..200u8).map(|i| b'a' + i % 26).collect();
    let mut xmit = text.clone();
    driver.start_tx(&mut uart, &mut xmit);
    assert!(xmit.is_empty(), "TXFF never stops pl011_tx_chars");
    assert_eq!(driver.im & int::TX, 0, "TXIM left masked");
    assert_eq!(drain_output(&mut uart), text);
    assert!(!uart.irq_level());
}

#[test]
fn tx_interrupt_asserts_at_or_below_the_trigger_and_refills_until_done() {
    let (mut uart, mut driver) = opened();
    // A driver that primes one byte and then waits for TXIS.
    writew(&mut uart, reg::DR, u32::from(b'>'));
    assert_ne!(readw(&mut uart, reg::RIS) & int::TX, 0);
    driver.im |= int::TX;
    writew(&mut uart, reg::IMSC, driver.im);
    assert!(uart.irq_level(), "TXIS pending once unmasked");

    let text: Vec<u8> = (0..100u8).map(|i| b'0' + i % 10).collect();
    let mut xmit = text.clone();
    let mut rx = Vec::new();
    let mut interrupts = 0;
    while uart.irq_level() {
        assert!(driver.isr(&mut uart, &mut rx, &mut xmit));
        interrupts += 1;
        assert!(interrupts < 10, "TX interrupt storm");
    }
    assert!(xmit.is_empty());
    assert_eq!(driver.im & int::TX, 0, "stop_tx masked TXIM");
    let mut expected = vec![b'>'];
    expected.extend_from_slice(&text);
    assert_eq!(drain_output(&mut uart), expected);
}

#[test]
fn one_typed_key_raises_the_receive_timeout() {
    let (mut uart, mut driver) = opened();
    assert_eq!(uart.push_input(b"l"), 1);
    assert_eq!(
        readw(&mut uart, reg::RIS),
        int::RT,
        "below trigger: RTIS only"
    );
    assert_eq!(readw(&mut uart, reg::MIS), int::RT);
    assert!(uart.irq_level());
    assert_eq!(readw(&mut uart, reg::FR) & (fr::RXFE | fr::RXFF), 0);

    let (mut rx, mut xmit) = (Vec::new(), Vec::new());
    assert!(driver.isr(&mut uart, &mut rx, &mut xmit));
    assert_eq!(rx, b"l");
    assert!(!uart.irq_level());
    assert_eq!(readw(&mut uart, reg::RIS), 0);
    assert_ne!(readw(&mut uart, reg::FR) & fr::RXFE, 0);
}

#[test]
fn a_burst_over_the_trigger_raises_rxis_until_read_below_it() {
    let (mut uart, _driver) = opened();
    let trigger = FIFO_DEPTH / 2; // IFLS RX4_8
    assert_eq!(uart.push_input(&[b'x'; 20]), 20);
    assert_eq!(readw(&mut uart, reg::RIS), int::RX | int::RT);

    for _ in 0..20 - trigger {
        readw(&mut uart, reg::DR);
    }
    assert_ne!(
        readw(&mut uart, reg::RIS) & int::RX,
        0,
        "still at the trigger"
    );
    readw(&mut uart, reg::DR);
    assert_eq!(readw(&mut uart, reg::RIS), int::RT, "below the trigger");
    for _ in 0..trigger - 1 {
        readw(&mut uart, reg::DR);
    }
    assert_eq!(readw(&mut uart, reg::RIS), 0, "drained");
    assert!(!uart.irq_level());
}

#[test]
fn rxis_asserts_exactly_at_each_ifls_level() {
    for (field, level) in [(0, 4), (1, 8), (2, 16), (3, 24), (4, 28), (5, 16), (7, 16)] {
        let (mut uart, _driver) = opened();
        writew(&mut uart, reg::IFLS, field << 3);
        writew(&mut uart, reg::ICR, int::ALL);
        for n in 1..=level {
            assert_eq!(uart.push_input(b"k"), 1);
            let rxis = readw(&mut uart, reg::RIS) & int::RX != 0;
            assert_eq!(rxis, n == level, "field {field}, level {n}");
        }
    }
}

#[test]
fn typing_into_a_shell_echoes_every_key() {
    let (mut uart, mut driver) = opened();
    let typed = b"echo hello\r";
    let mut seen = Vec::new();
    let mut xmit = Vec::new();
    let mut pending: &[u8] = typed;
    let mut was_high = false;
    for _ in 0..1000 {
        // The shell: offer input after every access, inject on a rising edge.
        let taken = uart.push_input(&pending[..pending.len().min(1)]);
        pending = &pending[taken..];
        let high = uart.irq_level();
        if high && !was_high {
            let mut rx = Vec::new();
            driver.isr(&mut uart, &mut rx, &mut xmit);
            // The line discipline echoes what it received.
            xmit.extend_from_slice(&rx);
            driver.start_tx(&mut uart, &mut xmit);
            seen.extend_from_slice(&rx);
        }
        was_high = uart.irq_level();
        if pending.is_empty() && !was_high {
            break;
        }
    }
    assert_eq!(seen, typed);
    assert_eq!(drain_output(&mut uart), typed);
}

#[test]
fn a_full_fifo_refuses_input_until_read() {
    let (mut uart, _driver) = opened();
    let input: Vec<u8> = (0..40).collect();
    assert_eq!(uart.push_input(&input), FIFO_DEPTH);
    assert_eq!(uart.input_room(), 0);
    assert_ne!(readw(&mut uart, reg::FR) & fr::RXFF, 0);
    assert_eq!(uart.push_input(&input[FIFO_DEPTH..]), 0);
    assert_eq!(readw(&mut uart, reg::DR), 0);
    assert_eq!(readw(&mut uart, reg::FR) & fr::RXFF, 0);
    assert_eq!(uart.push_input(&input[FIFO_DEPTH..]), 1);
    let mut got = Vec::new();
    while readw(&mut uart, reg::FR) & fr::RXFE == 0 {
        got.push(readw(&mut uart, reg::DR) as u8);
    }
    assert_eq!(
        got,
        (1..=FIFO_DEPTH as u8).collect::<Vec<_>>(),
        "no byte lost or reordered"
    );
}

#[test]
fn without_fen_the_fifo_is_one_byte_deep() {
    let (mut uart, _driver) = opened();
    writew(&mut uart, reg::LCR_H, WLEN_8 as u32);
    assert_eq!(uart.input_room(), 1);
    assert_eq!(uart.push_input(b"ab"), 1);
    assert_eq!(readw(&mut uart, reg::FR) & (fr::RXFF | fr::RXFE), fr::RXFF);
    assert_eq!(
        readw(&mut uart, reg::RIS),
        int::RX | int::RT,
        "holding register full"
    );
    assert_eq!(readw(&mut uart, reg::DR), u32::from(b'a'));
    assert_eq!(readw(&mut uart, reg::RIS), 0, "a single read clears it");
    assert_eq!(uart.push_input(b"b"), 1);
    assert_eq!(readw(&mut uart, reg::DR), u32::from(b'b'));
}

#[test]
fn toggling_fen_flushes_the_receive_fifo() {
    let (mut uart, _driver) = opened();
    uart.push_input(b"stale");
    writew(&mut uart, reg::LCR_H, WLEN_8 as u32);
    assert_ne!(readw(&mut uart, reg::FR) & fr::RXFE, 0);
    assert_eq!(readw(&mut uart, reg::RIS) & (int::RX | int::RT), 0);
    // Rewriting the same FEN keeps the data (Linux's set_termios does it).
    uart.push_input(b"k");
    writew(&mut uart, reg::LCR_H, WLEN_8 as u32 | 0x08);
    assert_eq!(readw(&mut uart, reg::DR), u32::from(b'k'));
}

#[test]
fn icr_clears_only_the_bits_written_and_they_stay_clear() {
    let (mut uart, _driver) = opened();
    writew(&mut uart, reg::DR, u32::from(b'.'));
    uart.push_input(&[b'r'; 17]);
    assert_eq!(readw(&mut uart, reg::RIS), int::TX | int::RX | int::RT);

    writew(&mut uart, reg::ICR, int::RT);
    assert_eq!(readw(&mut uart, reg::RIS), int::TX | int::RX);
    writew(&mut uart, reg::ICR, int::TX | int::RX);
    assert_eq!(readw(&mut uart, reg::RIS), 0);
    assert!(!uart.irq_level());
    // Reading without crossing a level does not re-raise anything.
    readw(&mut uart, reg::DR);
    assert_eq!(readw(&mut uart, reg::RIS), 0);
    // A new arrival restarts the timeout.
    uart.push_input(b"s");
    assert_eq!(readw(&mut uart, reg::RIS), int::RT);
    // A write of 0 clears nothing (the ST CTS workaround writes it).
    writew(&mut uart, reg::ICR, 0);
    assert_eq!(readw(&mut uart, reg::RIS), int::RT);
}

#[test]
fn masking_hides_but_keeps_pending_interrupts() {
    let (mut uart, _driver) = opened();
    uart.push_input(b"z");
    assert!(uart.irq_level());
    // pl011_stop_rx (throttle) then unthrottle.
    writew(&mut uart, reg::IMSC, 0);
    assert!(!uart.irq_level());
    assert_eq!(readw(&mut uart, reg::MIS), 0);
    assert_eq!(readw(&mut uart, reg::RIS), int::RT);
    writew(&mut uart, reg::IMSC, int::RT | int::RX);
    assert!(uart.irq_level());
}

#[test]
fn writes_to_read_only_registers_are_ignored() {
    let (mut uart, _driver) = opened();
    uart.push_input(b"q");
    let offsets: Vec<u64> = [reg::FR, reg::RIS, reg::MIS]
        .into_iter()
        .chain((0..8).map(|i| 0xfe0 + 4 * i))
        .collect();
    let before: Vec<u32> = offsets.iter().map(|&o| read32(&mut uart, o)).collect();
    let state = uart.clone();
    for &offset in &offsets {
        for size in [1, 2, 4] {
            uart.write(offset, size, u64::MAX);
            uart.write(offset, size, 0);
        }
    }
    let after: Vec<u32> = offsets.iter().map(|&o| read32(&mut uart, o)).collect();
    assert_eq!(before, after);
    assert_eq!(uart, state);
}

#[test]
fn receiver_disabled_takes_no_input() {
    let mut uart = Pl011::new();
    assert_eq!(uart.push_input(b"early"), 0, "UARTEN clear at reset");
    writew(&mut uart, reg::CR, cr::UARTEN | cr::TXE);
    assert_eq!(uart.input_room(), 0);
    assert_eq!(uart.push_input(b"early"), 0, "RXE clear");
    writew(&mut uart, reg::CR, cr::UARTEN | cr::TXE | cr::RXE);
    assert_eq!(uart.push_input(b"e"), 1);
    assert_eq!(uart.push_input(b""), 0);
}

#[test]
fn earlycon_bytes_before_enable_are_still_heard() {
    let mut uart = Pl011::new();
    // pl011_putc: TXFF poll, byte write (UPIO_MEM), BUSY poll.
    for &byte in b"earlycon" {
        assert_eq!(read32(&mut uart, reg::FR) & fr::TXFF, 0);
        uart.write(reg::DR, 1, u64::from(byte));
        assert_eq!(read32(&mut uart, reg::FR) & fr::BUSY, 0);
    }
    assert_eq!(drain_output(&mut uart), b"earlycon");
}

#[test]
fn output_overflow_drops_and_counts_but_never_blocks() {
    let mut uart = Pl011::new();
    for i in 0..OUTPUT_CAPACITY + 100 {
        assert_eq!(read32(&mut uart, reg::FR) & (fr::TXFF | fr::BUSY), 0);
        uart.write(reg::DR, 4, i as u64);
    }
    assert_eq!(uart.pending_output(), OUTPUT_CAPACITY);
    assert_eq!(uart.dropped_output(), 100);
    let out = drain_output(&mut uart);
    assert_eq!(out.len(), OUTPUT_CAPACITY);
    assert!(
        out.iter().enumerate().all(|(i, &b)| b == i as u8),
        "oldest kept"
    );
    assert_eq!(uart.take_output(&mut []), 0);
    uart.write(reg::DR, 4, 0x41);
    assert_eq!(drain_output(&mut uart), b"A");
}

#[test]
fn loopback_turns_transmit_into_receive() {
    let (mut uart, _driver) = opened();
    writew(&mut uart, reg::CR, cr::UARTEN | cr::TXE | cr::RXE | cr::LBE);
    writew(&mut uart, reg::DR, u32::from(b'L'));
    assert_eq!(uart.pending_output(), 0);
    assert_eq!(readw(&mut uart, reg::RIS), int::TX | int::RT);
    assert_eq!(readw(&mut uart, reg::DR), u32::from(b'L'));
}

#[test]
fn partial_accesses_address_byte_lanes() {
    let (mut uart, _driver) = opened();
    // A byte write to CR's upper half changes only bits 15:8.
    uart.write(reg::CR + 1, 1, 0x01);
    assert_eq!(read32(&mut uart, reg::CR), cr::UARTEN | cr::TXE);
    assert_eq!(uart.read(reg::CR + 1, 1), 0x01);
    assert_eq!(uart.read(reg::CR, 1), u64::from(cr::UARTEN));
    // Reserved CR bits 6:3 do not stick.
    uart.write(reg::CR, 1, 0xff);
    assert_eq!(uart.read(reg::CR, 1), 0x87);
    // Only an access covering DR's low byte moves the FIFOs.
    uart.write(reg::CR, 2, u64::from(cr::UARTEN | cr::TXE | cr::RXE));
    uart.push_input(b"d");
    uart.write(reg::DR + 1, 1, 0x55);
    uart.write(reg::DR + 2, 2, 0x55);
    assert_eq!(uart.pending_output(), 0);
    assert_eq!(uart.read(reg::DR + 1, 1), 0);
    assert_eq!(uart.read(reg::DR + 2, 2), 0);
    assert_eq!(uart.read(reg::DR, 1), u64::from(b'd'));
    // The ID registers by halfword.
    assert_eq!(uart.read(0xfe8, 2), 0x34);
    assert_eq!(uart.read(0xffc, 1), 0xb1);
    // A write wider than a register's bits keeps the implemented ones.
    uart.write(reg::IMSC, 4, u64::MAX);
    assert_eq!(read32(&mut uart, reg::IMSC), int::ALL);
}

#[test]
fn eight_byte_misaligned_and_odd_accesses_are_raz_wi() {
    let (mut uart, _driver) = opened();
    uart.push_input(b"m");
    let state = uart.clone();
    for (offset, size) in [
        (reg::DR, 8),
        (reg::CR, 8),
        (0xfe0, 8),
        (reg::DR + 1, 2),
        (reg::DR + 2, 4),
        (reg::CR + 3, 2),
        (reg::DR, 0),
        (reg::DR, 3),
        (reg::DR, 16),
        (WINDOW_SIZE, 4),
        (u64::MAX, 1),
        (u64::MAX - 3, 4),
    ] {
        assert_eq!(uart.read(offset, size), 0, "{offset:#x}/{size}");
        uart.write(offset, size, u64::MAX);
    }
    assert_eq!(uart, state, "no access had an effect");
}

#[test]
fn every_size_at_every_offset_is_safe_and_reserved_space_reads_zero() {
    let known = [
        reg::DR,
        reg::RSR_ECR,
        reg::FR,
        reg::ILPR,
        reg::IBRD,
        reg::FBRD,
        reg::LCR_H,
        reg::CR,
        reg::IFLS,
        reg::IMSC,
        reg::RIS,
        reg::MIS,
        reg::ICR,
        reg::DMACR,
    ];
    for value in [0, u64::MAX, 0x5555_5555_5555_5555, 0x1_0000_0010] {
        let (mut uart, _driver) = opened();
        for offset in 0..WINDOW_SIZE + 16 {
            for size in 0..=9u8 {
                uart.write(offset, size, value);
                let read = uart.read(offset, size);
                let word = offset & !3;
                let reserved = !known.contains(&word) && !(0xfe0..=0xffc).contains(&word);
                if reserved || offset >= WINDOW_SIZE {
                    assert_eq!(read, 0, "{offset:#x}/{size}");
                }
                uart.push_input(&[value as u8]);
                let mut sink = [0u8; 3];
                uart.take_output(&mut sink);
            }
        }
    }
}

#[test]
fn state_stays_consistent_under_a_pseudo_random_workload() {
    let mut uart = Pl011::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..200_000 {
        let r = next();
        let offset = (r >> 8) & 0x7f;
        let size = [1u8, 2, 4, 8][(r & 3) as usize];
        match (r >> 4) & 3 {
            0 => {
                uart.read(offset, size);
            }
            1 => uart.write(offset, size, next()),
            2 => {
                let bytes = next().to_le_bytes();
                let n = uart.push_input(&bytes[..(r >> 40) as usize % 9]);
                assert!(n <= 8);
            }
            _ => {
                let mut out = [0u8; 7];
                assert!(uart.take_output(&mut out) <= out.len());
            }
        }
        let fr_value = read32(&mut uart, reg::FR);
        let mis = read32(&mut uart, reg::MIS);
        assert_eq!(uart.irq_level(), mis != 0);
        assert_eq!(
            mis,
            read32(&mut uart, reg::RIS) & read32(&mut uart, reg::IMSC)
        );
        assert_eq!(fr_value & (fr::TXFF | fr::BUSY), 0);
        assert_ne!(fr_value & fr::TXFE, 0);
        assert!(uart.rx.len() <= uart.fifo_depth());
        assert_eq!(fr_value & fr::RXFE != 0, uart.rx.is_empty());
        if uart.rx.is_empty() {
            assert_eq!(
                uart.ris & (int::RT | int::RX),
                0,
                "empty FIFO, no RX interrupt"
            );
        }
        assert!(uart.pending_output() <= OUTPUT_CAPACITY);
    }
}

#[test]
fn output_is_ready_a_line_at_a_time() {
    let mut uart = Pl011::new();
    for &b in b"no line end yet" {
        uart.write(reg::DR, 4, u64::from(b));
    }
    assert!(!uart.output_line_ready(), "a partial line waits");
    uart.write(reg::DR, 4, u64::from(b'\n'));
    assert!(uart.output_line_ready());
    let mut head = [0u8; 4];
    assert_eq!(uart.take_output(&mut head), 4);
    assert!(uart.output_line_ready(), "the line end is still pending");
    assert_eq!(drain_output(&mut uart), b"ine end yet\n");
    assert!(!uart.output_line_ready(), "taking the line end clears it");
    for _ in 0..OUTPUT_LINE - 1 {
        uart.write(reg::DR, 4, u64::from(b'x'));
    }
    assert!(!uart.output_line_ready());
    uart.write(reg::DR, 4, u64::from(b'x'));
    assert!(
        uart.output_line_ready(),
        "a console line's worth goes out too"
    );
}
