//! End-to-end tests: a driver doing what Linux 6.1 does (probe sequence,
//! rings, kicks, interrupt acks) against each device through the MMIO
//! transport, then real traffic, then a driver that breaks the rules.
//! Every test checks the guard bytes around guest RAM at the end.

use super::blk::{self, Blk, MemDisk};
use super::console::Console;
use super::driver_model::{
    ack_interrupt, add_status, kick, probe, read32, write32, Desc, GuardedRam, Ring, Setup, F_NEXT,
    RAM_BASE,
};
use super::mmio::{interrupt, reg, status, VirtioMmio};
use super::net::{self, Net, RxError};
use super::queue::QueueError;
use super::rng::{CountingEntropy, Rng};
use super::switch::Switch;
use super::{feature, Device, DeviceError};
use crate::guest_mem::GuestMemory;

const RAM: usize = 1 << 20;
const RINGS: u64 = RAM_BASE + 0x1000;
const DATA: u64 = RAM_BASE + 0x80000;
const ALL: u64 = u64::MAX;

fn start<D: Device>(device: D, ram: &mut GuardedRam) -> (VirtioMmio<D>, Setup) {
    let mut dev = VirtioMmio::new(device);
    let setup = probe(&mut dev, &mut ram.mem(), ALL, RINGS).expect("probe");
    (dev, setup)
}

fn read_bytes(m: &dyn GuestMemory, gpa: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    m.read(gpa, &mut v).unwrap();
    v
}

fn needs_reset<D: Device>(dev: &VirtioMmio<D>) -> bool {
    dev.status() & status::DEVICE_NEEDS_RESET != 0
}

const LIVE: u8 = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

// ---- transport -----------------------------------------------------------

#[test]
fn linux_probe_negotiates_every_device() {
    let mut ram = GuardedRam::new(RAM);
    let mut disk = vec![0u8; 4096];

    let (c, s) = start(Console::<64>::new(), &mut ram);
    assert_eq!((c.status(), s.rings.len()), (LIVE, 2));
    assert_eq!(c.device().device_id(), 3);
    let want = feature::VERSION_1 | feature::RING_EVENT_IDX | feature::RING_INDIRECT_DESC;
    assert_eq!(s.features, want);

    let (r, s) = start(Rng::new(CountingEntropy::default()), &mut ram);
    assert_eq!((r.status(), s.rings.len(), s.features), (LIVE, 1, want));

    let (b, s) = start(Blk::new(MemDisk::new(&mut disk), b"disk"), &mut ram);
    assert_eq!((b.status(), s.rings.len()), (LIVE, 1));
    let blk_features = blk::feature::SEG_MAX | blk::feature::BLK_SIZE | blk::feature::FLUSH;
    assert_eq!(s.features, want | blk_features);
    assert_eq!(b.negotiated_features(), want | blk_features);

    let (n, s) = start(Net::new([2, 0, 0, 0, 0, 1]), &mut ram);
    assert_eq!((n.status(), s.rings.len()), (LIVE, 2));
    assert_eq!(s.features, want | net::feature::MAC | net::feature::STATUS);
    assert!(ram.guards_intact());
}

#[test]
fn header_registers_and_unknown_offsets() {
    let mut ram = GuardedRam::new(RAM);
    let mut m = ram.mem();
    let mut dev = VirtioMmio::new(Rng::new(CountingEntropy::default()));
    assert_eq!(read32(&mut dev, &m, reg::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(read32(&mut dev, &m, reg::VERSION), 2);
    assert_eq!(read32(&mut dev, &m, reg::DEVICE_ID), 4);
    assert_eq!(
        read32(&mut dev, &m, reg::VENDOR_ID),
        u32::from_le_bytes(*b"TSRA")
    );
    for shm in [
        reg::SHM_LEN_LOW,
        reg::SHM_LEN_HIGH,
        reg::SHM_BASE_LOW,
        reg::SHM_BASE_HIGH,
    ] {
        assert_eq!(
            read32(&mut dev, &m, shm),
            u32::MAX,
            "no shared memory region"
        );
    }
    for unknown in [0x018, 0x028, 0x03c, 0x040, 0x0c0, 0x0f8] {
        assert_eq!(read32(&mut dev, &m, unknown), 0);
    }
    // Write-only registers read 0.
    for wo in [
        reg::QUEUE_SEL,
        reg::QUEUE_NUM,
        reg::QUEUE_NOTIFY,
        reg::INTERRUPT_ACK,
    ] {
        write32(&mut dev, &mut m, wo, 0x55);
        assert_eq!(read32(&mut dev, &m, wo), 0);
    }
    // Control registers take 32-bit aligned accesses only.
    assert_eq!(dev.read(reg::MAGIC_VALUE, 2, &m), 0);
    assert_eq!(dev.read(reg::MAGIC_VALUE, 8, &m), 0);
    assert_eq!(dev.read(reg::MAGIC_VALUE + 1, 4, &m), 0);
    dev.write(reg::STATUS, 1, 1, &mut m);
    dev.write(reg::STATUS + 2, 4, 1, &mut m);
    assert_eq!(dev.status(), 0);
    // Beyond the window, and silly sizes, neither panic nor answer.
    for (offset, size) in [
        (0x200, 4),
        (0x1fe, 4),
        (u64::MAX, 8),
        (0x100, 0),
        (0x100, 3),
        (0x100, 16),
    ] {
        assert_eq!(dev.read(offset, size, &m), 0);
        dev.write(offset, size, u64::MAX, &mut m);
    }
    assert!(ram.guards_intact());
}

#[test]
fn writes_to_read_only_registers_are_ignored() {
    let mut ram = GuardedRam::new(RAM);
    let mac = [2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
    let (mut dev, _) = start(Net::new(mac), &mut ram);
    let mut m = ram.mem();
    let before: Vec<u32> = (0..0x100)
        .step_by(4)
        .map(|o| read32(&mut dev, &m, o))
        .collect();
    for ro in [
        reg::MAGIC_VALUE,
        reg::VERSION,
        reg::DEVICE_ID,
        reg::VENDOR_ID,
        reg::DEVICE_FEATURES,
        reg::QUEUE_NUM_MAX,
        reg::INTERRUPT_STATUS,
        reg::SHM_LEN_LOW,
        reg::CONFIG_GENERATION,
    ] {
        write32(&mut dev, &mut m, ro, 0xdead_beef);
    }
    let after: Vec<u32> = (0..0x100)
        .step_by(4)
        .map(|o| read32(&mut dev, &m, o))
        .collect();
    assert_eq!(before, after);
    // The configuration space is read-only too (VERSION_1 net: §5.1.4).
    dev.write(reg::CONFIG, 4, 0xffff_ffff, &mut m);
    let got: Vec<u8> = (0..6)
        .map(|i| dev.read(reg::CONFIG + i, 1, &m) as u8)
        .collect();
    assert_eq!(got, mac);
    assert_eq!(dev.read(reg::CONFIG + 6, 2, &m), 1, "link up");
    assert_eq!(
        dev.read(reg::CONFIG, 8, &m),
        u64::from_le_bytes([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 1, 0])
    );
    assert_eq!(
        dev.read(reg::CONFIG + 0xfc, 4, &m),
        0,
        "past the config image"
    );
    assert!(ram.guards_intact());
}

#[test]
fn feature_negotiation_needs_version_1_and_offered_bits_only() {
    let mut ram = GuardedRam::new(RAM);
    let mut dev = VirtioMmio::new(Rng::new(CountingEntropy::default()));
    assert_eq!(
        probe(&mut dev, &mut ram.mem(), !feature::VERSION_1, RINGS).err(),
        Some("device refused features")
    );
    assert_eq!(dev.status() & status::FEATURES_OK, 0);
    assert_ne!(dev.status() & status::FAILED, 0);

    let mut m = ram.mem();
    let negotiate = |dev: &mut VirtioMmio<_>, m: &mut dyn GuestMemory, sel: u32, word: u32| {
        write32(dev, m, reg::STATUS, 0);
        add_status(dev, m, status::ACKNOWLEDGE | status::DRIVER);
        write32(dev, m, reg::DRIVER_FEATURES_SEL, 1);
        write32(dev, m, reg::DRIVER_FEATURES, 1); // VERSION_1
        write32(dev, m, reg::DRIVER_FEATURES_SEL, sel);
        write32(dev, m, reg::DRIVER_FEATURES, word);
        add_status(dev, m, status::FEATURES_OK);
        read32(dev, m, reg::STATUS) as u8 & status::FEATURES_OK != 0
    };
    assert!(negotiate(&mut dev, &mut m, 0, 0));
    assert!(
        !negotiate(&mut dev, &mut m, 0, 1 << 5),
        "bit 5 not offered by rng"
    );
    assert!(!negotiate(&mut dev, &mut m, 2, 1), "bit 64 does not exist");
    // Features are fixed once FEATURES_OK is set.
    assert!(negotiate(&mut dev, &mut m, 0, 0));
    write32(&mut dev, &mut m, reg::DRIVER_FEATURES_SEL, 1);
    write32(&mut dev, &mut m, reg::DRIVER_FEATURES, 0);
    add_status(&mut dev, &mut m, status::DRIVER_OK);
    assert_eq!(dev.negotiated_features(), feature::VERSION_1);
    assert!(dev.is_live());
    // Feature words beyond 1 read 0.
    write32(&mut dev, &mut m, reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(read32(&mut dev, &m, reg::DEVICE_FEATURES), 0);
    assert!(ram.guards_intact());
}

#[test]
fn status_state_machine() {
    let mut ram = GuardedRam::new(RAM);
    let mut m = ram.mem();
    let mut dev = VirtioMmio::new(Rng::new(CountingEntropy::default()));
    // FEATURES_OK before ACKNOWLEDGE|DRIVER, DRIVER_OK before FEATURES_OK.
    write32(&mut dev, &mut m, reg::DRIVER_FEATURES_SEL, 1);
    write32(&mut dev, &mut m, reg::DRIVER_FEATURES, 1);
    write32(
        &mut dev,
        &mut m,
        reg::STATUS,
        u32::from(status::FEATURES_OK),
    );
    assert_eq!(dev.status(), 0);
    write32(
        &mut dev,
        &mut m,
        reg::STATUS,
        u32::from(status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK),
    );
    assert_eq!(dev.status(), status::ACKNOWLEDGE | status::DRIVER);
    // The driver cannot set DEVICE_NEEDS_RESET, nor clear bits, nor use
    // undefined bits.
    add_status(&mut dev, &mut m, status::DEVICE_NEEDS_RESET);
    assert_eq!(dev.status(), status::ACKNOWLEDGE | status::DRIVER);
    write32(
        &mut dev,
        &mut m,
        reg::STATUS,
        u32::from(status::ACKNOWLEDGE),
    );
    assert_eq!(dev.status(), status::ACKNOWLEDGE | status::DRIVER);
    write32(&mut dev, &mut m, reg::STATUS, 0x103);
    assert_eq!(dev.status(), status::ACKNOWLEDGE | status::DRIVER);
    add_status(&mut dev, &mut m, status::FEATURES_OK | status::DRIVER_OK);
    assert_eq!(dev.status(), LIVE);
    add_status(&mut dev, &mut m, status::FAILED);
    assert!(!dev.is_live());
    write32(&mut dev, &mut m, reg::STATUS, 0);
    assert_eq!(dev.status(), 0);
    assert!(ram.guards_intact());
}

#[test]
fn reset_clears_status_interrupts_and_queues() {
    let mut ram = GuardedRam::new(RAM);
    let (mut dev, setup) = start(Rng::new(CountingEntropy::default()), &mut ram);
    let mut m = ram.mem();
    setup.rings[0].add_chain(&mut m, &[Desc::write(DATA, 8)]);
    kick(&mut dev, &mut m, 0);
    assert!(dev.irq_level());
    write32(&mut dev, &mut m, reg::STATUS, 0);
    assert_eq!(dev.status(), 0);
    assert!(!dev.irq_level());
    assert_eq!(dev.negotiated_features(), 0);
    write32(&mut dev, &mut m, reg::QUEUE_SEL, 0);
    assert_eq!(read32(&mut dev, &m, reg::QUEUE_READY), 0);
    // And the device comes back with a fresh probe.
    let mut m = ram.mem();
    m.bytes[0x1000..0x10000].fill(0);
    let setup = probe(&mut dev, &mut m, ALL, RINGS).unwrap();
    setup.rings[0].add_chain(&mut m, &[Desc::write(DATA, 8)]);
    kick(&mut dev, &mut m, 0);
    assert_eq!(setup.rings[0].used_idx(&m), 1);
    assert!(ram.guards_intact());
}

/// Drive a device to just before QueueNum, for queue-register tests.
fn to_queue_setup<D: Device>(dev: &mut VirtioMmio<D>, m: &mut dyn GuestMemory) {
    write32(dev, m, reg::STATUS, 0);
    add_status(dev, m, status::ACKNOWLEDGE | status::DRIVER);
    write32(dev, m, reg::DRIVER_FEATURES_SEL, 1);
    write32(dev, m, reg::DRIVER_FEATURES, 1);
    add_status(dev, m, status::FEATURES_OK);
    write32(dev, m, reg::QUEUE_SEL, 0);
}

#[test]
fn queue_size_not_a_power_of_two_or_too_big_needs_reset() {
    let mut ram = GuardedRam::new(RAM);
    let mut m = ram.mem();
    for bad in [0u32, 100, 512, 0x1_0000, u32::MAX] {
        let mut dev = VirtioMmio::new(blk_device());
        to_queue_setup(&mut dev, &mut m);
        write32(&mut dev, &mut m, reg::QUEUE_NUM, bad);
        assert!(needs_reset(&dev), "QueueNum {bad}");
        assert_eq!(
            dev.last_error(),
            Some(DeviceError::Queue(QueueError::BadSize(bad)))
        );
        // Not yet DRIVER_OK: no configuration change interrupt.
        assert!(!dev.irq_level());
        // And the device stays unusable until reset.
        add_status(&mut dev, &mut m, status::DRIVER_OK);
        assert!(!dev.is_live());
    }
    assert!(ram.guards_intact());
}

fn blk_device() -> Blk<MemDisk<'static>> {
    Blk::new(
        MemDisk::new(Box::leak(vec![0u8; 8192].into_boxed_slice())),
        b"x",
    )
}

#[test]
fn unusable_ring_addresses_need_reset() {
    let mut ram = GuardedRam::new(RAM);
    let mut m = ram.mem();
    for (desc, avail, used) in [
        (RAM_BASE + 8, RAM_BASE + 0x1000, RAM_BASE + 0x2000), // misaligned table
        (RAM_BASE, RAM_BASE + 0x1001, RAM_BASE + 0x2000),     // misaligned avail
        (RAM_BASE, RAM_BASE + 0x1000, RAM_BASE + 0x2002),     // misaligned used
        (RAM_BASE - 0x1000, RAM_BASE + 0x1000, RAM_BASE + 0x2000), // below RAM
        (RAM_BASE, RAM_BASE + 0x1000, RAM_BASE + RAM as u64 - 8), // runs off RAM
        (!15u64, RAM_BASE + 0x1000, RAM_BASE + 0x2000),       // wraps
    ] {
        let mut dev = VirtioMmio::new(blk_device());
        to_queue_setup(&mut dev, &mut m);
        write32(&mut dev, &mut m, reg::QUEUE_NUM, 256);
        for (low, addr) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_DRIVER_LOW, avail),
            (reg::QUEUE_DEVICE_LOW, used),
        ] {
            write32(&mut dev, &mut m, low, addr as u32);
            write32(&mut dev, &mut m, low + 4, (addr >> 32) as u32);
        }
        write32(&mut dev, &mut m, reg::QUEUE_READY, 1);
        assert_eq!(
            read32(&mut dev, &m, reg::QUEUE_READY),
            0,
            "{desc:#x} {avail:#x} {used:#x}"
        );
        assert!(needs_reset(&dev));
    }
    assert!(ram.guards_intact());
}

#[test]
fn queue_registers_are_locked_while_ready() {
    let mut ram = GuardedRam::new(RAM);
    let (mut dev, setup) = start(Rng::new(CountingEntropy::default()), &mut ram);
    let mut m = ram.mem();
    write32(&mut dev, &mut m, reg::QUEUE_SEL, 0);
    write32(&mut dev, &mut m, reg::QUEUE_NUM, 3);
    write32(&mut dev, &mut m, reg::QUEUE_DESC_LOW, 0x1234);
    write32(&mut dev, &mut m, reg::QUEUE_DEVICE_HIGH, 0xffff_ffff);
    assert!(!needs_reset(&dev), "QueueNum ignored while ready");
    // The ring still works where it was.
    setup.rings[0].add_chain(&mut m, &[Desc::write(DATA, 4)]);
    kick(&mut dev, &mut m, 0);
    assert_eq!(setup.rings[0].used_idx(&m), 1);
    // Selecting a queue the device does not have reads as absent.
    write32(&mut dev, &mut m, reg::QUEUE_SEL, 1);
    assert_eq!(read32(&mut dev, &m, reg::QUEUE_NUM_MAX), 0);
    assert_eq!(read32(&mut dev, &m, reg::QUEUE_READY), 0);
    write32(&mut dev, &mut m, reg::QUEUE_READY, 1);
    write32(&mut dev, &mut m, reg::QUEUE_SEL, u32::MAX);
    write32(&mut dev, &mut m, reg::QUEUE_NUM, 4);
    assert!(!needs_reset(&dev));
    assert!(ram.guards_intact());
}

#[test]
fn notifications_before_driver_ok_are_ignored() {
    let mut ram = GuardedRam::new(RAM);
    let mut dev = VirtioMmio::new(Rng::new(CountingEntropy::default()));
    let mut m = ram.mem();
    to_queue_setup(&mut dev, &mut m);
    let ring = Ring::new(64, RINGS);
    write32(&mut dev, &mut m, reg::QUEUE_NUM, 64);
    for (low, addr) in [
        (reg::QUEUE_DESC_LOW, ring.desc),
        (reg::QUEUE_DRIVER_LOW, ring.avail),
        (reg::QUEUE_DEVICE_LOW, ring.used),
    ] {
        write32(&mut dev, &mut m, low, addr as u32);
        write32(&mut dev, &mut m, low + 4, (addr >> 32) as u32);
    }
    write32(&mut dev, &mut m, reg::QUEUE_READY, 1);
    ring.add_chain(&mut m, &[Desc::write(DATA, 16)]);
    kick(&mut dev, &mut m, 0);
    assert_eq!(ring.used_idx(&m), 0, "no buffer consumed before DRIVER_OK");
    assert_eq!(read_bytes(&m, DATA, 16), [0; 16]);
    assert!(!dev.irq_level());
    // DRIVER_OK serves what was already made available.
    add_status(&mut dev, &mut m, status::DRIVER_OK);
    assert_eq!(ring.used_idx(&m), 1);
    assert!(dev.irq_level());
    assert!(ram.guards_intact());
}

#[test]
fn notify_of_a_missing_queue_is_ignored() {
    let mut ram = GuardedRam::new(RAM);
    let (mut dev, _) = start(Rng::new(CountingEntropy::default()), &mut ram);
    let mut m = ram.mem();
    for q in [1, 2, 0xffff, 0x1_0000, u32::MAX] {
        kick(&mut dev, &mut m, q);
    }
    assert_eq!(dev.status(), LIVE);
    assert!(!dev.irq_level());
    assert!(ram.guards_intact());
}

// ---- console ---------------------------------------------------------------

#[test]
fn console_transmit_and_receive() {
    let mut ram = GuardedRam::new(RAM);
    let (mut dev, setup) = start(Console::<64>::new(), &mut ram);
    let (rx, tx) = (&setup.rings[0], &setup.rings[1]);
    let mut m = ram.mem();

    m.write(DATA, b"hello, ").unwrap();
    m.write(DATA + 0x100, b"world\n").unwrap();
    tx.add_chain(&mut m, &[Desc::read(DATA, 7)]);
    tx.add_chain(&mut m, &[Desc::read(DATA + 0x100, 6)]);
    kick(&mut dev, &mut m, 1);
    assert_eq!(tx.used_idx(&m), 2);
    assert!(dev.irq_level());
    assert_eq!(ack_interrupt(&mut dev, &mut m), interrupt::USED_BUFFER);
    assert!(!dev.irq_level());
    let mut out = [0u8; 32];
    let n = dev.take_output(&mut out);
    assert_eq!(&out[..n], b"hello, world\n");
    assert_eq!(dev.take_output(&mut out), 0);

    // Input before any buffer is posted is not taken.
    assert_eq!(dev.push_input(b"early", &mut m), 0);
    rx.add_chain(&mut m, &[Desc::write(DATA + 0x1000, 4)]);
    rx.add_chain(
        &mut m,
        &[Desc::write(DATA + 0x2000, 2), Desc::write(DATA + 0x3000, 2)],
    );
    kick(&mut dev, &mut m, 0);
    assert_eq!(rx.used_idx(&m), 0, "receive buffers wait for input");
    assert_eq!(dev.push_input(b"abcdefghij", &mut m), 8);
    assert_eq!(read_bytes(&m, DATA + 0x1000, 4), b"abcd");
    assert_eq!(read_bytes(&m, DATA + 0x2000, 2), b"ef");
    assert_eq!(read_bytes(&m, DATA + 0x3000, 2), b"gh");
    assert_eq!(rx.used_idx(&m), 2);
    assert_eq!(rx.used_elem(&m, 0).1, 4);
    assert_eq!(rx.used_elem(&m, 1).1, 4);
    assert!(dev.irq_level());
    // A short input leaves the buffer partly filled and says so.
    rx.add_chain(&mut m, &[Desc::write(DATA + 0x1000, 64)]);
    assert_eq!(dev.push_input(b"ij", &mut m), 2);
    assert_eq!(rx.used_elem(&m, 2).1, 2);
    assert!(ram.guards_intact());
}

#[test]
fn console_output_overflow_is_dropped_and_counted() {
    let mut ram = GuardedRam::new(RAM);
    let (mut dev, setup) = start(Console::<16>::new(), &mut ram);
    let mut m = ram.mem();
    m.write(DATA, &[b'x'; 40]).unwrap();
    setup.rings[1].add_chain(&mut m, &[Desc::read(DATA, 40)]);
    kick(&mut dev, &mut m, 1);
    assert_eq!(setup.rings[1].used_idx(&m), 1, "completed even so");
    assert_eq!(dev.device().pending_output(), 16);
    assert_eq!(dev.device().dropped(), 24);
    let mut out = [0u8; 10];
    assert_eq!(dev.take_output(&mut out), 10);
    assert_eq!(dev.device().pending_output(), 6);
    assert!(ram.guards_intact());
}

// ---- rng -----------------------------------------------------------------

#[test]
fn rng_fills_writable_buffers() {
    let mut ram = GuardedRam::new(RAM);
    let (mut dev, setup) = start(Rng::new(CountingEntropy::default()), &mut ram);
    let q = &setup.rings[0];
    let mut m = ram.mem();
    q.add_chain(
        &mut m,
        &[Desc::write(DATA, 10), Desc::write(DATA + 0x100, 6)],
    );
    q.add_chain(&mut m, &[Desc::write(DATA + 0x1000, 5000)]);
    kick(&mut dev, &mut m, 0);
    assert_eq!(q.used_idx(&m), 2);
    assert_eq!(q.used_elem(&m, 0), (0, 16));
    assert_eq!(read_bytes(&m, DATA, 10), (0..10).collect::<Vec<u8>>());
    assert_eq!(
        read_bytes(&m, DATA + 0x100, 6),
        (10..16).collect::<Vec<u8>>()
    );
    assert_eq!(q.used_elem(&m, 1).1, 4096, "capped at MAX_FILL");
    assert_eq!(read_bytes(&m, DATA + 0x1000 + 4096, 4), [0; 4]);
    assert!(dev.irq_level());
    assert!(ram.guards_intact());
}

// ---- blk -----------------------------------------------------------------

fn blk_header(kind: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    h
}

const HDR: u64 = DATA;
const STATUS: u64 = DATA + 0x40;
const BUF: u64 = DATA + 0x1000;

#[test]
fn blk_write_read_flush_get_id() {
    let mut ram = GuardedRam::new(RAM);
    let mut disk = vec![0u8; 64 * 512];
    let (mut dev, setup) = start(
        Blk::new(MemDisk::new(&mut disk), b"tessera-disk-0"),
        &mut ram,
    );
    let q = &setup.rings[0];
    let mut m = ram.mem();
    assert_eq!(dev.read(reg::CONFIG, 8, &m), 64, "capacity in sectors");
    assert_eq!(dev.read(reg::CONFIG + 0x0c, 4, &m), 62, "seg_max");
    assert_eq!(dev.read(reg::CONFIG + 0x14, 4, &m), 512, "blk_size");

    // Linux's layout: header | data | status. Two sectors at sector 3.
    let data: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    m.write(HDR, &blk_header(blk::request::OUT, 3)).unwrap();
    m.write(BUF, &data).unwrap();
    m.write(STATUS, &[0xff]).unwrap();
    q.add_chain(
        &mut m,
        &[
            Desc::read(HDR, 16),
            Desc::read(BUF, 1024),
            Desc::write(STATUS, 1),
        ],
    );
    kick(&mut dev, &mut m, 0);
    assert_eq!(read_bytes(&m, STATUS, 1), [blk::status::OK]);
    assert_eq!(q.used_elem(&m, 0).1, 1);

    // Read back with the header split over two descriptors, the data over
    // three, and the status sharing the last data descriptor.
    m.write(HDR, &blk_header(blk::request::IN, 3)).unwrap();
    q.add_chain(
        &mut m,
        &[
            Desc::read(HDR, 5),
            Desc::read(HDR + 5, 11),
            Desc::write(BUF + 0x1000, 100),
            Desc::write(BUF + 0x2000, 900),
            Desc::write(BUF + 0x3000, 25),
        ],
    );
    kick(&mut dev, &mut m, 0);
    let mut back = read_bytes(&m, BUF + 0x1000, 100);
    back.extend(read_bytes(&m, BUF + 0x2000, 900));
    back.extend(read_bytes(&m, BUF + 0x3000, 24));
    assert_eq!(back, data);
    assert_eq!(read_bytes(&m, BUF + 0x3000 + 24, 1), [blk::status::OK]);
    assert_eq!(q.used_elem(&m, 1).1, 1025);

    // The same read through an indirect table.
    m.write(STATUS, &[0xff]).unwrap();
    q.add_indirect_chain(
        &mut m,
        DATA + 0x8000,
        &[
            Desc::read(HDR, 16),
            Desc::write(BUF + 0x4000, 1024),
            Desc::write(STATUS, 1),
        ],
    );
    kick(&mut dev, &mut m, 0);
    assert_eq!(read_bytes(&m, BUF + 0x4000, 1024), data);
    assert_eq!(read_bytes(&m, STATUS, 1), [blk::status::OK]);

    m.write(HDR, &blk_header(blk::request::FLUSH, 0)).unwrap();
    m.write(STATUS, &[0xff]).unwrap();
    q.add_chain(&mut m, &[Desc::read(HDR, 16), Desc::write(STATUS, 1)]);
    kick(&mut dev, &mut m, 0);
    assert_eq!(read_bytes(&m, STATUS, 1), [blk::status::OK]);

    m.write(HDR, &blk_header(blk::request::GET_ID, 0)).unwrap();
    m.write(BUF, &[0xee; 20]).unwrap();
    q.add_chain(
        &mut m,
        &[
            Desc::read(HDR, 16),
            Desc::write(BUF, 20),
            Desc::write(STATUS, 1),
        ],
    );
    kick(&mut dev, &mut m, 0);
    assert_eq!(read_bytes(&m, BUF, 20), b"tessera-disk-0\0\0\0\0\0\0");
    assert_eq!(read_bytes(&m, STATUS, 1), [blk::status::OK]);
    assert_eq!(q.used_idx(&m), 5);
    assert!(dev.irq_level());
    assert!(!needs_reset(&dev));
    assert_eq!(&disk[3 * 512..5 * 512], &data[..]);
    assert!(disk[..3 * 512]
        .iter()
        .chain(&disk[5 * 512..])
        .all(|&b| b == 0));
    assert!(ram.guards_intact());
}

#[test]
fn blk_errors_are_reported_in_the_status_byte() {
    let mut ram = GuardedRam::new(RAM);
    let mut disk = vec![0u8; 8 * 512 + 100]; // the tail is not a whole sector
    let (mut dev, setup) = start(Blk::new(MemDisk::new(&mut disk), b""), &mut ram);
    let q = &setup.rings[0];
    let mut m = ram.mem();
    assert_eq!(dev.read(reg::CONFIG, 8, &m), 8);
    let cases: [(u32, u64, u32, bool, u8); 8] = [
        (blk::request::IN, 8, 512, true, blk::status::IOERR), // at capacity
        (blk::request::IN, 7, 1024, true, blk::status::IOERR), // runs past it
        (blk::request::OUT, 8, 512, false, blk::status::IOERR),
        (blk::request::OUT, u64::MAX, 512, false, blk::status::IOERR), // overflows
        (blk::request::IN, 0, 100, true, blk::status::IOERR),          // not whole sectors
        (blk::request::OUT, 0, 513, false, blk::status::IOERR),
        (11, 0, 16, false, blk::status::UNSUPP), // DISCARD: not offered
        (0xdead, 0, 0, false, blk::status::UNSUPP),
    ];
    for (i, (kind, sector, len, into_guest, want)) in cases.into_iter().enumerate() {
        m.write(HDR, &blk_header(kind, sector)).unwrap();
        m.write(STATUS, &[0xff]).unwrap();
        let data = if into_guest {
            Desc::write(BUF, len)
        } else {
            Desc::read(BUF, len)
        };
        if len == 0 {
            q.add_chain(&mut m, &[Desc::read(HDR, 16), Desc::write(STATUS, 1)]);
        } else {
            q.add_chain(&mut m, &[Desc::read(HDR, 16), data, Desc::write(STATUS, 1)]);
        }
        kick(&mut dev, &mut m, 0);
        assert_eq!(read_bytes(&m, STATUS, 1), [want], "case {i}");
    }
    assert_eq!(q.used_idx(&m), cases.len() as u16);
    assert!(!needs_reset(&dev));
    assert!(disk.iter().all(|&b| b == 0), "nothing was written");
    assert!(ram.guards_intact());
}

#[test]
fn blk_requests_without_header_or_status_need_reset() {
    for descs in [
        [Desc::read(HDR, 15), Desc::write(STATUS, 1)], // short header
        [Desc::read(HDR, 16), Desc::read(BUF, 512)],   // no status byte
    ] {
        let mut ram = GuardedRam::new(RAM);
        let (mut dev, setup) = start(blk_device(), &mut ram);
        let mut m = ram.mem();
        m.write(HDR, &blk_header(blk::request::OUT, 0)).unwrap();
        setup.rings[0].add_chain(&mut m, &descs);
        kick(&mut dev, &mut m, 0);
        assert!(needs_reset(&dev));
        assert_eq!(ack_interrupt(&mut dev, &mut m), interrupt::CONFIG_CHANGE);
        assert_eq!(setup.rings[0].used_idx(&m), 0);
        assert!(ram.guards_intact());
    }
}

// ---- net -----------------------------------------------------------------

const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0xb];

fn eth(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(payload);
    f
}

/// Linux's TX: the header pushed in front of the frame, one descriptor.
fn send(ring: &Ring, m: &mut dyn GuestMemory, at: u64, frame: &[u8]) {
    m.write(at, &[0u8; net::HDR_LEN]).unwrap();
    m.write(at + net::HDR_LEN as u64, frame).unwrap();
    ring.add_chain(m, &[Desc::read(at, (net::HDR_LEN + frame.len()) as u32)]);
}

/// Linux's small receive buffers: header + GOOD_PACKET_LEN.
fn post_rx(ring: &Ring, m: &mut dyn GuestMemory, at: u64) {
    ring.add_chain(m, &[Desc::write(at, (net::HDR_LEN + 1518) as u32)]);
}

/// What a guest received in used slot `slot` of `ring`, whose buffers are
/// at `base + 0x800 * slot`.
fn received(ring: &Ring, m: &dyn GuestMemory, slot: u16, base: u64) -> Vec<u8> {
    let (_, len) = ring.used_elem(m, slot);
    let at = base + 0x800 * u64::from(slot);
    let hdr = read_bytes(m, at, net::HDR_LEN);
    assert_eq!(
        hdr,
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        "num_buffers 1, no offloads"
    );
    read_bytes(m, at + net::HDR_LEN as u64, len as usize - net::HDR_LEN)
}

#[test]
fn net_frames_cross_a_learning_switch_both_ways() {
    let mut ram_a = GuardedRam::new(RAM);
    let mut ram_b = GuardedRam::new(RAM);
    let (mut a, sa) = start(Net::new(MAC_A), &mut ram_a);
    let (mut b, sb) = start(Net::new(MAC_B), &mut ram_b);
    let mut ma = ram_a.mem();
    let mut mb = ram_b.mem();
    const RX: u64 = DATA + 0x10000;
    for i in 0..4 {
        post_rx(&sa.rings[0], &mut ma, RX + 0x800 * i);
        post_rx(&sb.rings[0], &mut mb, RX + 0x800 * i);
    }
    kick(&mut a, &mut ma, 0);
    kick(&mut b, &mut mb, 0);
    let mut switch = Switch::<2>::new();
    let mut frame = [0u8; net::MAX_FRAME];

    // The shell's loop: after an access, forward everything a port sent.
    fn pump(
        switch: &mut Switch<2>,
        frame: &mut [u8; net::MAX_FRAME],
        ports: [(&mut VirtioMmio<Net>, &mut dyn GuestMemory); 2],
    ) -> Vec<(usize, Vec<usize>)> {
        let [(a, ma), (b, mb)] = ports;
        let mut log = Vec::new();
        for src in 0..2 {
            loop {
                let n = if src == 0 {
                    a.pop_tx_frame(frame, ma)
                } else {
                    b.pop_tx_frame(frame, mb)
                };
                let Some(n) = n else { break };
                let dests = switch.forward(src, &frame[..n]);
                for d in dests.iter() {
                    let r = if d == 0 {
                        a.deliver(&frame[..n], ma)
                    } else {
                        b.deliver(&frame[..n], mb)
                    };
                    assert_eq!(r, Ok(()));
                }
                log.push((src, dests.iter().collect()));
            }
        }
        log
    }

    // A broadcasts (an ARP request): flooded to B.
    let arp = eth([0xff; 6], MAC_A, b"who-has B");
    send(&sa.rings[1], &mut ma, DATA, &arp);
    kick(&mut a, &mut ma, 1);
    assert_eq!(sa.rings[1].used_idx(&ma), 1);
    assert_eq!(
        pump(
            &mut switch,
            &mut frame,
            [(&mut a, &mut ma), (&mut b, &mut mb)]
        ),
        [(0, vec![1])]
    );
    assert_eq!(received(&sb.rings[0], &mb, 0, RX), arp);
    assert!(b.irq_level());

    // B answers A by unicast: A was learned on port 0.
    let reply = eth(MAC_A, MAC_B, b"B is-at 52:54:00:00:00:0b");
    send(&sb.rings[1], &mut mb, DATA, &reply);
    kick(&mut b, &mut mb, 1);
    assert_eq!(
        pump(
            &mut switch,
            &mut frame,
            [(&mut a, &mut ma), (&mut b, &mut mb)]
        ),
        [(1, vec![0])]
    );
    assert_eq!(received(&sa.rings[0], &ma, 0, RX), reply);
    assert_eq!(switch.lookup(MAC_B), Some(1));

    // Now A to B is unicast too, with a full-size frame.
    let big = eth(MAC_B, MAC_A, &[0x5a; 1500]);
    assert_eq!(big.len(), 1514);
    send(&sa.rings[1], &mut ma, DATA + 0x1000, &big);
    kick(&mut a, &mut ma, 1);
    assert_eq!(
        pump(
            &mut switch,
            &mut frame,
            [(&mut a, &mut ma), (&mut b, &mut mb)]
        ),
        [(0, vec![1])]
    );
    assert_eq!(received(&sb.rings[0], &mb, 1, RX), big);
    assert_eq!(sb.rings[0].used_elem(&mb, 1).1, 12 + 1514);
    assert!(!needs_reset(&a) && !needs_reset(&b));
    assert!(ram_a.guards_intact() && ram_b.guards_intact());
}

#[test]
fn net_receive_refusals() {
    let mut ram = GuardedRam::new(RAM);
    let (mut dev, s) = start(Net::new(MAC_A), &mut ram);
    let mut m = ram.mem();
    let frame = eth(MAC_A, MAC_B, b"payload");
    assert_eq!(dev.deliver(&frame, &mut m), Err(RxError::NoBuffer));
    s.rings[0].add_chain(&mut m, &[Desc::write(DATA, 20)]);
    assert_eq!(dev.deliver(&frame, &mut m), Err(RxError::BufferTooSmall));
    assert_eq!(s.rings[0].used_elem(&m, 0), (0, 0), "returned empty");
    assert_eq!(dev.deliver(&frame[..13], &mut m), Err(RxError::BadFrame));
    assert_eq!(dev.deliver(&[0u8; 1519], &mut m), Err(RxError::BadFrame));
    write32(&mut dev, &mut m, reg::STATUS, 0);
    assert_eq!(dev.deliver(&frame, &mut m), Err(RxError::NotReady));
    assert!(ram.guards_intact());
}

#[test]
fn net_transmit_is_back_pressured_not_dropped() {
    let mut ram = GuardedRam::new(RAM);
    let (mut dev, s) = start(Net::new(MAC_A), &mut ram);
    let mut m = ram.mem();
    let total = net::OUTBOX + 5;
    for i in 0..total {
        send(
            &s.rings[1],
            &mut m,
            DATA + 0x800 * i as u64,
            &eth(MAC_B, MAC_A, &[i as u8; 50]),
        );
    }
    kick(&mut dev, &mut m, 1);
    assert_eq!(dev.device().pending_tx_frames(), net::OUTBOX);
    assert_eq!(
        s.rings[1].used_idx(&m),
        net::OUTBOX as u16,
        "the rest wait in the ring"
    );
    let mut out = [0u8; net::MAX_FRAME];
    for i in 0..total {
        let n = dev.pop_tx_frame(&mut out, &mut m).expect("frame");
        assert_eq!(&out[..n], &eth(MAC_B, MAC_A, &[i as u8; 50])[..]);
    }
    assert_eq!(dev.pop_tx_frame(&mut out, &mut m), None);
    assert_eq!(s.rings[1].used_idx(&m), total as u16);
    // Runts, giants and header-only chains are returned and counted.
    send(&s.rings[1], &mut m, DATA, &[0u8; 10]);
    send(&s.rings[1], &mut m, DATA + 0x1000, &[0u8; 1519]);
    s.rings[1].add_chain(&mut m, &[Desc::read(DATA, 8)]);
    kick(&mut dev, &mut m, 1);
    assert_eq!(dev.device().tx_dropped(), 3);
    assert_eq!(s.rings[1].used_idx(&m), total as u16 + 3);
    assert!(ram.guards_intact());
}

// ---- a driver that breaks the rules ---------------------------------------

/// Kick a fresh rng with one hand-made descriptor table and ring, and
/// check the device gave up cleanly.
fn expect_reset_after(build: impl FnOnce(&Ring, &mut dyn GuestMemory), want: QueueError) {
    let mut ram = GuardedRam::new(RAM);
    let (mut dev, s) = start(Rng::new(CountingEntropy::default()), &mut ram);
    let mut m = ram.mem();
    build(&s.rings[0], &mut m);
    kick(&mut dev, &mut m, 0);
    assert!(needs_reset(&dev));
    assert_eq!(dev.last_error(), Some(DeviceError::Queue(want)));
    assert!(!dev.is_live());
    assert_eq!(ack_interrupt(&mut dev, &mut m), interrupt::CONFIG_CHANGE);
    // Further kicks do nothing until the driver resets the device.
    s.rings[0].add_chain(&mut m, &[Desc::write(DATA, 8)]);
    kick(&mut dev, &mut m, 0);
    assert_eq!(s.rings[0].used_idx(&m), 0);
    assert!(!dev.irq_level());
    assert!(ram.guards_intact());
}

#[test]
fn looping_chain_needs_reset() {
    expect_reset_after(
        |r, m| {
            r.write_desc(m, 0, DATA, 4, F_NEXT | 2, 1);
            r.write_desc(m, 1, DATA, 4, F_NEXT | 2, 2);
            r.write_desc(m, 2, DATA, 4, F_NEXT | 2, 0);
            r.publish(m, &[0]);
        },
        QueueError::ChainLoop,
    );
}

#[test]
fn descriptor_index_out_of_range_needs_reset() {
    expect_reset_after(
        |r, m| r.publish(m, &[64]),
        QueueError::DescIndexOutOfRange(64),
    );
    expect_reset_after(
        |r, m| {
            r.write_desc(m, 0, DATA, 4, F_NEXT | 2, 0xffff);
            r.publish(m, &[0]);
        },
        QueueError::DescIndexOutOfRange(0xffff),
    );
}

#[test]
fn buffer_outside_guest_ram_needs_reset() {
    let end = RAM_BASE + RAM as u64;
    for (addr, len) in [
        (end, 1),
        (end - 4, 8),
        (RAM_BASE - 1, 1),
        (0, 16),
        (u64::MAX, 2),
    ] {
        let mut ram = GuardedRam::new(RAM);
        let (mut dev, s) = start(Rng::new(CountingEntropy::default()), &mut ram);
        let mut m = ram.mem();
        s.rings[0].add_chain(&mut m, &[Desc::write(addr, len)]);
        kick(&mut dev, &mut m, 0);
        assert!(needs_reset(&dev), "{addr:#x}+{len}");
        assert!(ram.guards_intact());
    }
}

#[test]
fn hostile_avail_idx_needs_reset() {
    expect_reset_after(
        |r, m| r.set_avail_idx(m, 65),
        QueueError::AvailIdxAhead {
            avail_idx: 65,
            next_avail: 0,
        },
    );
    expect_reset_after(
        |r, m| r.set_avail_idx(m, 0xffff),
        QueueError::AvailIdxAhead {
            avail_idx: 0xffff,
            next_avail: 0,
        },
    );
}

#[test]
fn indirect_chain_without_negotiation_needs_reset() {
    let mut ram = GuardedRam::new(RAM);
    let mut dev = VirtioMmio::new(Rng::new(CountingEntropy::default()));
    let mut m = ram.mem();
    let s = probe(&mut dev, &mut m, !feature::RING_INDIRECT_DESC, RINGS).unwrap();
    s.rings[0].add_indirect_chain(&mut m, DATA + 0x8000, &[Desc::write(DATA, 8)]);
    kick(&mut dev, &mut m, 0);
    assert_eq!(
        dev.last_error(),
        Some(DeviceError::Queue(QueueError::IndirectNotNegotiated))
    );
    assert!(ram.guards_intact());
}

// ---- notification suppression ----------------------------------------------

#[test]
fn event_idx_suppresses_and_requests_notifications() {
    let mut ram = GuardedRam::new(RAM);
    let (mut dev, s) = start(Rng::new(CountingEntropy::default()), &mut ram);
    let q = &s.rings[0];
    let mut m = ram.mem();
    assert_ne!(s.features & feature::RING_EVENT_IDX, 0);
    // used_event = 1: interrupt only once the second buffer is used.
    q.set_used_event(&mut m, 1);
    q.add_chain(&mut m, &[Desc::write(DATA, 4)]);
    kick(&mut dev, &mut m, 0);
    assert!(!dev.irq_level());
    assert_eq!(
        q.avail_event(&m),
        1,
        "device asks to be kicked for the next"
    );
    q.add_chain(&mut m, &[Desc::write(DATA, 4)]);
    kick(&mut dev, &mut m, 0);
    assert!(dev.irq_level());

    // Without EVENT_IDX, avail.flags NO_INTERRUPT suppresses.
    let mut ram = GuardedRam::new(RAM);
    let mut dev = VirtioMmio::new(Rng::new(CountingEntropy::default()));
    let mut m = ram.mem();
    let s = probe(&mut dev, &mut m, !feature::RING_EVENT_IDX, RINGS).unwrap();
    s.rings[0].set_avail_flags(&mut m, 1);
    s.rings[0].add_chain(&mut m, &[Desc::write(DATA, 4)]);
    kick(&mut dev, &mut m, 0);
    assert_eq!(s.rings[0].used_idx(&m), 1);
    assert!(!dev.irq_level());
    assert!(ram.guards_intact());
}

// ---- anything at all ---------------------------------------------------------

/// xorshift64*: a deterministic stream for the random tests.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random register accesses and random ring memory, with sensible values
/// mixed in so the device gets past setup often. Returns how many steps
/// found the device live and how many had a used-buffer interrupt pending,
/// so the test knows the data path was reached.
fn chaos<D: Device>(
    mut dev: VirtioMmio<D>,
    seed: u64,
    steps: usize,
    mut shell: impl FnMut(&mut VirtioMmio<D>, &mut dyn GuestMemory, u64),
) -> (usize, usize) {
    let (mut live, mut used) = (0, 0);
    const SMALL_RAM: usize = 0x4000;
    let mut ram = GuardedRam::new(SMALL_RAM);
    let mut rnd = Random(seed | 1);
    let mut m = ram.mem();
    let interesting = [
        reg::STATUS,
        reg::QUEUE_SEL,
        reg::QUEUE_NUM,
        reg::QUEUE_READY,
        reg::QUEUE_NOTIFY,
        reg::QUEUE_DESC_LOW,
        reg::QUEUE_DRIVER_LOW,
        reg::QUEUE_DEVICE_LOW,
        reg::DRIVER_FEATURES,
        reg::DRIVER_FEATURES_SEL,
        reg::INTERRUPT_ACK,
    ];
    for _ in 0..steps {
        let offset = match rnd.below(4) {
            0 => rnd.below(0x220),
            _ => interesting[rnd.below(interesting.len() as u64) as usize],
        };
        let size: u8 = [4, 4, 4, 1, 2, 8, 0, 3][rnd.below(8) as usize];
        let value = match rnd.below(6) {
            0 => rnd.next(),
            1 => RAM_BASE + rnd.below(SMALL_RAM as u64),
            2 => rnd.below(0x100),
            3 => 1 << rnd.below(9),
            4 => 0xf,
            _ => 1,
        };
        match rnd.below(10) {
            0..=3 => dev.write(offset, size, value, &mut m),
            4..=5 => {
                dev.read(offset, size, &m);
            }
            6..=7 => {
                let at = RAM_BASE + rnd.below(SMALL_RAM as u64);
                let bytes = rnd.next().to_le_bytes();
                let _ = m.write(at, &bytes[..rnd.below(9) as usize]);
            }
            8 => {
                let _ = probe(
                    &mut dev,
                    &mut m,
                    rnd.next() | feature::VERSION_1,
                    RAM_BASE + 0x40 * rnd.below(64),
                );
            }
            _ => shell(&mut dev, &mut m, rnd.next()),
        }
        let _ = dev.irq_level();
        live += usize::from(dev.is_live());
        used += usize::from(dev.interrupt_status() & interrupt::USED_BUFFER != 0);
    }
    assert!(ram.guards_intact());
    (live, used)
}

#[test]
fn random_register_writes_and_rings_never_panic() {
    let mut totals = [(0usize, 0usize); 4];
    let mut add = |i: usize, (live, used): (usize, usize)| {
        totals[i].0 += live;
        totals[i].1 += used;
    };
    for seed in 0..40u64 {
        let rng = VirtioMmio::new(Rng::new(CountingEntropy::default()));
        add(0, chaos(rng, seed, 3000, |_, _, _| {}));
        let console = VirtioMmio::new(Console::<32>::new());
        add(
            1,
            chaos(console, seed, 3000, |d, m, r| {
                let mut out = [0u8; 8];
                if r & 1 == 0 {
                    d.take_output(&mut out);
                } else {
                    d.push_input(&r.to_le_bytes(), m);
                }
            }),
        );
        add(
            2,
            chaos(VirtioMmio::new(blk_device()), seed, 3000, |_, _, _| {}),
        );
        let net = VirtioMmio::new(Net::new(MAC_A));
        add(
            3,
            chaos(net, seed, 3000, |d, m, r| {
                let mut out = [0u8; net::MAX_FRAME];
                if r & 1 == 0 {
                    d.pop_tx_frame(&mut out, m);
                } else {
                    let _ = d.deliver(&eth(MAC_A, MAC_B, &r.to_le_bytes()), m);
                }
            }),
        );
    }
    // Every device got past setup, and all but blk (whose requests random
    // bytes rarely spell; the fuzz target builds them) completed buffers.
    assert!(totals.iter().all(|&(live, _)| live > 1000), "{totals:?}");
    let [rng, console, _, net] = totals;
    assert!(rng.1 > 0 && console.1 > 0 && net.1 > 0, "{totals:?}");
}
