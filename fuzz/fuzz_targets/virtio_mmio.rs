//! The virtio-mmio transport sees every guest access to a device's window:
//! any sequence of reads and writes (any offset, any size, any value) must
//! not panic, and the registers must stay consistent with each other and
//! with the interrupt line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_devmodel::guest_mem::{GuestMemory, SliceMemory};
use tessera_devmodel::virtio::blk::{Blk, MemDisk};
use tessera_devmodel::virtio::console::Console;
use tessera_devmodel::virtio::mmio::{reg, status, VirtioMmio, MAGIC, VERSION};
use tessera_devmodel::virtio::net::Net;
use tessera_devmodel::virtio::rng::{CountingEntropy, Rng};
use tessera_devmodel::virtio::{feature, Device};

const BASE: u64 = 0x4000_0000;
const RAM: usize = 0x1000;

/// Registers a driver actually uses, so the state machine gets exercised
/// more often than a uniform offset would manage.
const USEFUL: [u64; 12] = [
    reg::STATUS,
    reg::DEVICE_FEATURES_SEL,
    reg::DRIVER_FEATURES,
    reg::DRIVER_FEATURES_SEL,
    reg::QUEUE_SEL,
    reg::QUEUE_NUM,
    reg::QUEUE_READY,
    reg::QUEUE_NOTIFY,
    reg::QUEUE_DESC_LOW,
    reg::QUEUE_DRIVER_LOW,
    reg::QUEUE_DEVICE_LOW,
    reg::INTERRUPT_ACK,
];

fn check<D: Device>(dev: &mut VirtioMmio<D>, m: &dyn GuestMemory) {
    assert_eq!(dev.irq_level(), dev.interrupt_status() != 0);
    assert_eq!(dev.read(reg::STATUS, 4, m), u64::from(dev.status()));
    assert_eq!(dev.read(reg::MAGIC_VALUE, 4, m), u64::from(MAGIC));
    assert_eq!(dev.read(reg::VERSION, 4, m), u64::from(VERSION));
    if dev.status() & status::DRIVER_OK != 0 {
        assert_ne!(dev.status() & status::FEATURES_OK, 0);
    }
    if dev.status() & status::FEATURES_OK != 0 {
        let negotiated = dev.negotiated_features();
        assert_ne!(negotiated & feature::VERSION_1, 0);
        assert_eq!(negotiated & !dev.offered_features(), 0);
    }
}

fn drive<D: Device>(mut dev: VirtioMmio<D>, ops: &[(u8, u16, u8, u64)]) {
    let mut ram = vec![0u8; RAM];
    let mut m = SliceMemory {
        base: BASE,
        bytes: &mut ram,
    };
    for &(kind, offset, size, value) in ops {
        let offset = match kind >> 6 {
            0 => USEFUL[usize::from(offset) % USEFUL.len()],
            1 => u64::from(offset),
            2 => u64::from(offset % 0x220),
            _ => u64::MAX - u64::from(offset),
        };
        // Ring addresses sometimes land in RAM.
        let value = if kind & 0x20 != 0 {
            BASE + value % RAM as u64
        } else {
            value
        };
        if kind & 1 == 0 {
            dev.write(offset, size, value, &mut m);
        } else {
            let _ = dev.read(offset, size, &m);
        }
        check(&mut dev, &m);
        if offset == reg::STATUS && size == 4 && value as u32 == 0 && kind & 1 == 0 {
            assert_eq!(dev.status(), 0);
            assert!(!dev.irq_level());
        }
    }
}

fuzz_target!(|input: (u8, Vec<(u8, u16, u8, u64)>)| {
    let (device, ops) = input;
    match device % 4 {
        0 => drive(VirtioMmio::new(Rng::new(CountingEntropy::default())), &ops),
        1 => drive(VirtioMmio::new(Console::<64>::new()), &ops),
        2 => {
            let mut disk = vec![0u8; 4 * 512];
            drive(
                VirtioMmio::new(Blk::new(MemDisk::new(&mut disk), b"fuzz")),
                &ops,
            );
        }
        _ => drive(VirtioMmio::new(Net::new([2, 0, 0, 0, 0, 1])), &ops),
    }
});
