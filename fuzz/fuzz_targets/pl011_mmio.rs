//! The emulated PL011 sees every guest access to its window and every byte
//! the shell offers: any sequence of reads, writes (any offset, any size),
//! input and output draining must not panic, and the registers must stay
//! consistent with each other and with the interrupt line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_devmodel::pl011::{fr, int, reg, Pl011, OUTPUT_CAPACITY};

fuzz_target!(|ops: Vec<(u8, u16, u8, u64)>| {
    let mut uart = Pl011::new();
    for (kind, offset, size, value) in ops {
        // Mostly the window and just past it; sometimes the far end of the
        // address space.
        let offset = if kind & 0x80 != 0 {
            u64::MAX - u64::from(offset)
        } else {
            u64::from(offset)
        };
        match kind % 4 {
            0 => {
                let _ = uart.read(offset, size);
            }
            1 => uart.write(offset, size, value),
            2 => {
                let bytes = value.to_le_bytes();
                let offered = bytes.get(..usize::from(size % 9)).unwrap_or(&[]);
                let room = uart.input_room();
                let taken = uart.push_input(offered);
                assert!(taken <= offered.len() && taken <= room);
            }
            _ => {
                let mut out = [0u8; 64];
                let len = usize::from(size % 65);
                let taken = uart.take_output(&mut out[..len]);
                assert!(taken <= len);
            }
        }

        let flags = uart.read(reg::FR, 4);
        let ris = uart.read(reg::RIS, 4);
        let mis = uart.read(reg::MIS, 4);
        let imsc = uart.read(reg::IMSC, 4);
        assert_eq!(mis, ris & imsc);
        assert_eq!(uart.irq_level(), mis != 0);
        assert_eq!(ris & !u64::from(int::ALL), 0);
        // Transmission is instant: never full, never busy, always empty.
        assert_eq!(flags & u64::from(fr::TXFF | fr::BUSY), 0);
        assert_ne!(flags & u64::from(fr::TXFE), 0);
        // An empty receive FIFO has no receive interrupt pending.
        if flags & u64::from(fr::RXFE) != 0 {
            assert_eq!(ris & u64::from(int::RX | int::RT), 0);
        }
        assert!(uart.pending_output() <= OUTPUT_CAPACITY);
    }
});
