//! A virtio device reads descriptor tables and rings the guest wrote: any
//! contents, queue sizes and ring placements in a small guest RAM, with the
//! guest rewriting memory between kicks, must never panic or touch memory
//! outside the guest, and a device that is not live (before DRIVER_OK, or
//! after DEVICE_NEEDS_RESET) must not touch guest memory at all.
#![no_main]
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tessera_devmodel::guest_mem::{GuestMemory, SliceMemory};
use tessera_devmodel::virtio::blk::{Blk, MemDisk};
use tessera_devmodel::virtio::console::Console;
use tessera_devmodel::virtio::mmio::{reg, status, VirtioMmio};
use tessera_devmodel::virtio::net::{Net, MAX_FRAME};
use tessera_devmodel::virtio::rng::{CountingEntropy, Rng};
use tessera_devmodel::virtio::{feature, Device};

const BASE: u64 = 0x4000_0000;
const RAM: usize = 0x2000;
const GUARD: usize = 64;
const GUARD_BYTE: u8 = 0xa5;

fn write32<D: Device>(dev: &mut VirtioMmio<D>, m: &mut dyn GuestMemory, offset: u64, v: u32) {
    dev.write(offset, 4, u64::from(v), m);
}

fn add_status<D: Device>(dev: &mut VirtioMmio<D>, m: &mut dyn GuestMemory, bits: u8) {
    let s = dev.read(reg::STATUS, 4, m) as u8;
    write32(dev, m, reg::STATUS, u32::from(s | bits));
}

/// Where the driver put a queue: descriptor table, available ring, size.
#[derive(Clone, Copy, Default)]
struct Placed {
    desc: u64,
    avail: u64,
    size: u16,
}

/// Linux's probe, with fuzz-chosen features, queue sizes and ring places
/// (not always aligned, not always inside RAM).
fn probe<D: Device>(
    dev: &mut VirtioMmio<D>,
    m: &mut dyn GuestMemory,
    u: &mut Unstructured,
    placed: &mut [Placed; 2],
) -> Result<()> {
    write32(dev, m, reg::STATUS, 0);
    add_status(dev, m, status::ACKNOWLEDGE);
    add_status(dev, m, status::DRIVER);
    let features = dev.offered_features() & (u.arbitrary::<u64>()? | feature::VERSION_1);
    write32(dev, m, reg::DRIVER_FEATURES_SEL, 1);
    write32(dev, m, reg::DRIVER_FEATURES, (features >> 32) as u32);
    write32(dev, m, reg::DRIVER_FEATURES_SEL, 0);
    write32(dev, m, reg::DRIVER_FEATURES, features as u32);
    add_status(dev, m, status::FEATURES_OK);
    for (queue, place) in placed.iter_mut().enumerate() {
        write32(dev, m, reg::QUEUE_SEL, queue as u32);
        place.size = 1 << u.int_in_range(0..=5)?;
        write32(dev, m, reg::QUEUE_NUM, u32::from(place.size));
        let mut addrs = [0u64; 3];
        for (addr, low) in addrs.iter_mut().zip([
            reg::QUEUE_DESC_LOW,
            reg::QUEUE_DRIVER_LOW,
            reg::QUEUE_DEVICE_LOW,
        ]) {
            let a = BASE - 16 + u.int_in_range(0..=RAM as u64)?;
            *addr = if u.ratio(7, 8)? { a & !15 } else { a };
            write32(dev, m, low, *addr as u32);
            write32(dev, m, low + 4, (*addr >> 32) as u32);
        }
        place.desc = addrs[0];
        place.avail = addrs[1];
        write32(dev, m, reg::QUEUE_READY, 1);
    }
    add_status(dev, m, status::DRIVER_OK);
    Ok(())
}

/// One shell-side action for the device under test.
type Shell<D> = fn(&mut VirtioMmio<D>, &mut dyn GuestMemory, &[u8]);

fn drive<D: Device>(mut dev: VirtioMmio<D>, u: &mut Unstructured, shell: Shell<D>) -> Result<()> {
    let mut buf = vec![GUARD_BYTE; RAM + 2 * GUARD];
    let ram_len = usize::from(u.arbitrary::<u16>()?).min(RAM).min(u.len());
    buf[GUARD..GUARD + ram_len].copy_from_slice(u.bytes(ram_len)?);
    buf[GUARD + ram_len..GUARD + RAM].fill(0);
    let (before, rest) = buf.split_at_mut(GUARD);
    let (ram, after) = rest.split_at_mut(RAM);
    let mut m = SliceMemory {
        base: BASE,
        bytes: ram,
    };
    let mut placed = [Placed::default(); 2];
    probe(&mut dev, &mut m, u, &mut placed)?;
    while !u.is_empty() {
        let live = dev.is_live();
        let snapshot = m.bytes.to_vec();
        match u.int_in_range(0..=7)? {
            0 | 1 => write32(&mut dev, &mut m, reg::QUEUE_NOTIFY, u.int_in_range(0..=2)?),
            2 => {
                // The guest rewrites part of its memory (rings, tables).
                let at = BASE + u.int_in_range(0..=RAM as u64)?;
                let len = u.int_in_range(0..=32)?;
                let _ = m.write(at, u.bytes(len)?);
                continue;
            }
            3 => {
                let len = u.int_in_range(0..=MAX_FRAME + 2)?;
                let data = u.bytes(len.min(u.len()))?.to_vec();
                shell(&mut dev, &mut m, &data);
            }
            4 => {
                let s = dev.read(reg::INTERRUPT_STATUS, 4, &m);
                dev.write(reg::INTERRUPT_ACK, 4, s, &mut m);
            }
            5 => {
                // A descriptor, mostly plausible: in RAM, small, chained.
                let place = placed[usize::from(u.arbitrary::<bool>()?)];
                let index = u.int_in_range(0..=40u64)?;
                let mut d = [0u8; 16];
                let addr = BASE - 8 + u.int_in_range(0..=RAM as u64 + 8)?;
                d[..8].copy_from_slice(&addr.to_le_bytes());
                d[8..12].copy_from_slice(&u.int_in_range(0..=1600u32)?.to_le_bytes());
                d[12..14].copy_from_slice(&u16::from(u.arbitrary::<u8>()? & 7).to_le_bytes());
                d[14..].copy_from_slice(&u.int_in_range(0..=40u16)?.to_le_bytes());
                let _ = m.write(place.desc.wrapping_add(16 * index), &d);
                continue;
            }
            6 => {
                // Publish a head: ring slot, then avail.idx (sometimes far).
                let place = placed[usize::from(u.arbitrary::<bool>()?)];
                let mut idx = [0u8; 2];
                let _ = m.read(place.avail.wrapping_add(2), &mut idx);
                let idx = u16::from_le_bytes(idx);
                let slot = u64::from(idx % place.size.max(1));
                let head = u.int_in_range(0..=40u16)?;
                let _ = m.write(place.avail.wrapping_add(4 + 2 * slot), &head.to_le_bytes());
                let step = if u.ratio(1, 8)? {
                    u.arbitrary::<u16>()?
                } else {
                    1
                };
                let _ = m.write(
                    place.avail.wrapping_add(2),
                    &idx.wrapping_add(step).to_le_bytes(),
                );
                continue;
            }
            _ => {
                if u.ratio(1, 4)? {
                    write32(&mut dev, &mut m, reg::STATUS, 0);
                } else {
                    probe(&mut dev, &mut m, u, &mut placed)?;
                }
                continue;
            }
        }
        if !live {
            assert_eq!(
                snapshot, m.bytes,
                "a device that is not live touched guest RAM"
            );
        }
        assert_eq!(dev.irq_level(), dev.interrupt_status() != 0);
    }
    assert!(before.iter().chain(after.iter()).all(|&b| b == GUARD_BYTE));
    Ok(())
}

fn run(u: &mut Unstructured) -> Result<()> {
    match u.int_in_range(0..=3)? {
        0 => drive(
            VirtioMmio::new(Rng::new(CountingEntropy::default())),
            u,
            |_, _, _| {},
        ),
        1 => drive(VirtioMmio::new(Console::<256>::new()), u, |dev, m, data| {
            if data.len() % 2 == 0 {
                let taken = dev.push_input(data, m);
                assert!(taken <= data.len());
            } else {
                let mut out = [0u8; 64];
                dev.take_output(&mut out);
            }
        }),
        2 => {
            let mut disk = vec![0u8; 16 * 512];
            let blk = Blk::new(MemDisk::new(&mut disk), b"fuzz");
            drive(VirtioMmio::new(blk), u, |_, _, _| {})
        }
        _ => drive(
            VirtioMmio::new(Net::new([2, 0, 0, 0, 0, 1])),
            u,
            |dev, m, data| {
                if data.len() % 2 == 0 {
                    let _ = dev.deliver(data, m);
                } else {
                    let mut out = [0u8; MAX_FRAME];
                    if let Some(n) = dev.pop_tx_frame(&mut out, m) {
                        assert!((14..=MAX_FRAME).contains(&n));
                    }
                }
            },
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
