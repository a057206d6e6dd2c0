//! The persisted state's decoder against good, torn and hostile bytes, and
//! a device taken over by a "new generation" from it.

use super::*;
use crate::pl011::{self, Pl011};
use crate::virtio::driver_model::{kick, probe, Desc, GuardedRam, RAM_BASE};
use crate::virtio::mmio::{interrupt, status, VirtioMmio};
use crate::virtio::rng::{CountingEntropy, Rng};

fn sample() -> DomainState {
    let mut virtio = heapless::Vec::new();
    let t = TransportState {
        device_id: 4,
        status: 0x0f,
        negotiated: 1 << 32,
        driver_features: 1 << 32,
        interrupt_status: 1,
        queues: [
            QueueState {
                size: 64,
                ready: true,
                desc_table: 0x4000_1000,
                avail_ring: 0x4000_2000,
                used_ring: 0x4000_3000,
            },
            QueueState::default(),
        ],
        ..TransportState::default()
    };
    virtio.push(Some(t)).unwrap();
    virtio.push(None).unwrap();
    DomainState {
        domid: 3,
        pl011: Some(Pl011State {
            cr: 0x301,
            imsc: 0x50,
            rx: heapless::Vec::from_slice(b"ab").unwrap(),
            ..Pl011State::default()
        }),
        virtio,
    }
}

#[test]
fn a_record_round_trips() {
    let mut buf = [0u8; RECORD_SIZE];
    encode_record(&sample(), 7, &mut buf).unwrap();
    assert_eq!(decode_record(&buf), Ok(Some((7, sample()))));
    let blank = [0u8; RECORD_SIZE];
    assert_eq!(decode_record(&blank), Ok(None), "never written");
}

#[test]
fn a_header_round_trips_and_a_blank_region_is_blank() {
    let mut region = vec![0u8; DISK_OFFSET + 4096];
    assert_eq!(decode_header(&region), Ok(None));
    let h = Header {
        starts: 2,
        disk_bytes: 4096,
    };
    encode_header(&h, &mut region).unwrap();
    assert_eq!(decode_header(&region), Ok(Some(h)));
}

#[test]
fn a_bad_header_is_named() {
    let mut region = vec![0u8; DISK_OFFSET];
    assert_eq!(
        decode_header(&region[..100]),
        Err(PersistError::RegionTooSmall(100))
    );
    region[0] = 1;
    assert_eq!(decode_header(&region), Err(PersistError::BadMagic));
    let h = Header {
        starts: 1,
        disk_bytes: 0,
    };
    encode_header(&h, &mut region).unwrap();
    region[12] ^= 1;
    assert_eq!(decode_header(&region), Err(PersistError::Checksum));
    encode_header(&h, &mut region).unwrap();
    region[8] = 9;
    assert_eq!(decode_header(&region), Err(PersistError::Version(9)));
    let too_big = Header {
        starts: 1,
        disk_bytes: 1,
    };
    encode_header(&too_big, &mut region).unwrap();
    assert_eq!(
        decode_header(&region),
        Err(PersistError::Field("disk bytes")),
        "no room for a disk in a region this size"
    );
}

#[test]
fn a_flipped_bit_anywhere_is_a_checksum_error_never_a_wrong_state() {
    let mut good = [0u8; RECORD_SIZE];
    encode_record(&sample(), 1, &mut good).unwrap();
    for byte in 8..RECORD_SIZE {
        let mut bad = good;
        bad[byte] ^= 0x10;
        assert!(decode_record(&bad).is_err(), "byte {byte}");
    }
}

/// A record with a field set by hand, its checksum made right again, as a
/// buggy (not torn) writer would leave it.
fn resealed(mut rec: [u8; RECORD_SIZE], at: usize, v: u8) -> [u8; RECORD_SIZE] {
    rec[at] = v;
    let sum = checksum(&rec[16..]);
    rec[8..16].copy_from_slice(&sum.to_le_bytes());
    rec
}

#[test]
fn out_of_range_fields_are_refused_even_with_a_good_checksum() {
    let mut good = [0u8; RECORD_SIZE];
    encode_record(&sample(), 1, &mut good).unwrap();
    // Body: domid (2), pl011 present (1), slots (1), 9 registers, rx len.
    assert_eq!(
        decode_record(&resealed(good, 18, 2)),
        Err(PersistError::Field("pl011 present"))
    );
    assert_eq!(
        decode_record(&resealed(good, 19, 9)),
        Err(PersistError::Field("virtio slots"))
    );
    assert_eq!(
        decode_record(&resealed(good, 20 + 36, 33)),
        Err(PersistError::Field("rx length"))
    );
    let slot0 = 20 + 36 + 1 + RX_BYTES;
    assert_eq!(
        decode_record(&resealed(good, slot0, 7)),
        Err(PersistError::Field("slot present"))
    );
    // Slot 2 is past the record's count of 2 and must be absent.
    let transport = 4 + 1 + 4 + 4 + 8 + 1 + 8 + 4 + 4 + 2 * (2 + 1 + 24);
    assert_eq!(
        decode_record(&resealed(good, slot0 + 2 * (1 + transport), 1)),
        Err(PersistError::Field("slot past the count"))
    );
    let mut zero_seq = good;
    zero_seq[..8].fill(0);
    assert_eq!(
        decode_record(&zero_seq),
        Err(PersistError::Field("sequence"))
    );
}

#[test]
fn the_newer_intact_copy_wins_and_a_torn_one_is_passed_over() {
    let mut a = [0u8; RECORD_SIZE];
    let mut b = [0u8; RECORD_SIZE];
    let mut newer = sample();
    newer.domid = 4;
    encode_record(&sample(), 5, &mut a).unwrap();
    encode_record(&newer, 6, &mut b).unwrap();
    assert_eq!(latest(&a, &b), Ok(Some((1, 6, newer.clone()))));
    b[500] ^= 0xff; // torn while being written
    assert_eq!(latest(&a, &b), Ok(Some((0, 5, sample()))));
    a[600] ^= 0xff;
    assert_eq!(latest(&a, &b), Err(PersistError::Checksum));
    let blank = [0u8; RECORD_SIZE];
    assert_eq!(latest(&blank, &blank), Ok(None));
}

#[test]
fn record_ranges_stay_below_the_disks() {
    assert_eq!(
        record_range(0, 0),
        Some(RECORDS_OFFSET..RECORDS_OFFSET + RECORD_SIZE)
    );
    let last = record_range(MAX_RECORDS - 1, 1).unwrap();
    assert!(last.end <= DISK_OFFSET);
    assert_eq!(record_range(MAX_RECORDS, 0), None);
    assert_eq!(record_range(0, 2), None);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut x = 0x1234_5678_9abc_def0u64;
    let mut buf = [0u8; RECORD_SIZE];
    for round in 0..2000 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        if round % 2 == 0 {
            // Keep the checksum right so the field checks are reached.
            let sum = checksum(&buf[16..]);
            buf[8..16].copy_from_slice(&sum.to_le_bytes());
        }
        let _ = decode_record(&buf);
        let _ = decode_header(&buf);
    }
}

const RINGS: u64 = RAM_BASE + 0x1000;
const DATA: u64 = RAM_BASE + 0x80000;

#[test]
fn a_new_generation_serves_the_chain_the_old_one_took_but_never_completed() {
    let mut ram = GuardedRam::new(1 << 20);
    let mut old = VirtioMmio::new(Rng::new(CountingEntropy::default()));
    let setup = probe(&mut old, &mut ram.mem(), u64::MAX, RINGS).unwrap();
    let q = &setup.rings[0];
    let mut m = ram.mem();
    q.add_chain(&mut m, &[Desc::write(DATA, 8)]);
    kick(&mut old, &mut m, 0);
    assert_eq!(q.used_idx(&m), 1);
    // The old generation saves its state, then the driver posts a chain
    // the old one dies before completing.
    let mut rec = [0u8; RECORD_SIZE];
    let mut saved = DomainState {
        domid: 2,
        ..DomainState::default()
    };
    saved.virtio.push(Some(old.snapshot())).unwrap();
    encode_record(&saved, 1, &mut rec).unwrap();
    q.add_chain(&mut m, &[Desc::write(DATA + 0x100, 8)]);

    let (_, _, back) = latest(&rec, &[0u8; RECORD_SIZE]).unwrap().unwrap();
    let mut new = VirtioMmio::new(Rng::new(CountingEntropy::default()));
    let t = back.virtio[0].unwrap();
    new.restore(&t, &mut m).unwrap();
    assert_eq!(new.status(), old.status());
    assert_eq!(new.negotiated_features(), old.negotiated_features());
    assert_eq!(q.used_idx(&m), 2, "the pending chain was served");
    assert_ne!(new.interrupt_status() & interrupt::USED_BUFFER, 0);
    // And it goes on serving.
    q.add_chain(&mut m, &[Desc::write(DATA + 0x200, 8)]);
    kick(&mut new, &mut m, 0);
    assert_eq!(q.used_idx(&m), 3);
    assert!(ram.guards_intact());
}

#[test]
fn a_restore_that_does_not_fit_the_device_or_memory_changes_nothing() {
    let mut ram = GuardedRam::new(1 << 20);
    let mut m = ram.mem();
    let mut dev = VirtioMmio::new(Rng::new(CountingEntropy::default()));
    let mut good = VirtioMmio::new(Rng::new(CountingEntropy::default()));
    probe(&mut good, &mut m, u64::MAX, RINGS).unwrap();
    let base = good.snapshot();
    let bad = |f: &dyn Fn(&mut TransportState)| {
        let mut t = base;
        f(&mut t);
        t
    };
    let cases: [(TransportState, PersistError); 7] = [
        (bad(&|t| t.device_id = 2), PersistError::DevicesDiffer),
        (bad(&|t| t.status |= 0x20), PersistError::Refused("status")),
        (
            bad(&|t| t.interrupt_status = 4),
            PersistError::Refused("interrupt status"),
        ),
        (
            bad(&|t| t.negotiated |= 1 << 40),
            PersistError::Refused("features"),
        ),
        (
            bad(&|t| t.status &= !status::FEATURES_OK),
            PersistError::Refused("features"),
        ),
        (
            bad(&|t| t.queues[0].size = 3),
            PersistError::Refused("queue"),
        ),
        (
            bad(&|t| t.queues[0].used_ring = RAM_BASE + (1 << 20) - 8),
            PersistError::Refused("queue"),
        ),
    ];
    for (t, want) in cases {
        assert_eq!(dev.restore(&t, &mut m), Err(want));
        assert_eq!(dev.status(), 0, "nothing changed");
    }
}

#[test]
fn a_uart_comes_back_with_its_registers_and_input() {
    let mut uart = Pl011::new();
    uart.write(pl011::reg::LCR_H, 4, u64::from(pl011::lcr_h::FEN));
    uart.write(pl011::reg::CR, 4, 0x301);
    uart.write(pl011::reg::IMSC, 4, 0x70);
    assert_eq!(uart.push_input(b"hi"), 2);
    let st = uart.snapshot();
    let mut back = Pl011::new();
    back.restore(&st).unwrap();
    assert_eq!(back.read(pl011::reg::DR, 4), u64::from(b'h'));
    assert_eq!(back.read(pl011::reg::DR, 4), u64::from(b'i'));
    assert_eq!(back.read(pl011::reg::CR, 4), 0x301);
    assert!(back.irq_level(), "TX interrupt raised on restore");
    let mut bad = st.clone();
    bad.cr = 0x78;
    assert_eq!(
        back.restore(&bad),
        Err(PersistError::Refused("pl011 register"))
    );
    let mut deep = st;
    deep.lcr_h = 0;
    assert_eq!(
        back.restore(&deep),
        Err(PersistError::Refused("pl011 receive FIFO")),
        "two bytes do not fit without FIFOs"
    );
}
