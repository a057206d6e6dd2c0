//! Host-test model of a guest driver: the register sequence Linux 6.1's
//! virtio core and `virtio_mmio.c` perform, and a builder for split rings
//! in guest RAM, so tests read as driver actions rather than byte soup.
//!
//! Guest RAM sits between two guard regions filled with a pattern; tests
//! check the guards afterwards, so a device that wrote outside the guest
//! would be caught even though `SliceMemory` already refuses it.

use super::mmio::{reg, status, VirtioMmio};
use super::Device;
use crate::guest_mem::{GuestMemory, SliceMemory};
use core::cell::Cell;

pub const RAM_BASE: u64 = 0x4000_0000;
const GUARD: usize = 4096;
const GUARD_BYTE: u8 = 0xa5;

/// Guest RAM with guard bytes on both sides.
pub struct GuardedRam {
    buf: Vec<u8>,
}

impl GuardedRam {
    pub fn new(size: usize) -> Self {
        let mut buf = vec![GUARD_BYTE; size + 2 * GUARD];
        buf[GUARD..GUARD + size].fill(0);
        GuardedRam { buf }
    }

    pub fn mem(&mut self) -> SliceMemory<'_> {
        let len = self.buf.len();
        SliceMemory {
            base: RAM_BASE,
            bytes: &mut self.buf[GUARD..len - GUARD],
        }
    }

    pub fn guards_intact(&self) -> bool {
        let len = self.buf.len();
        self.buf[..GUARD].iter().all(|&b| b == GUARD_BYTE)
            && self.buf[len - GUARD..].iter().all(|&b| b == GUARD_BYTE)
    }
}

/// One buffer of a chain the driver builds.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

impl Desc {
    pub fn read(addr: u64, len: u32) -> Self {
        Desc {
            addr,
            len,
            write: false,
        }
    }

    pub fn write(addr: u64, len: u32) -> Self {
        Desc {
            addr,
            len,
            write: true,
        }
    }
}

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

/// A split ring the driver owns in guest RAM.
pub struct Ring {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_free: Cell<u16>,
}

impl Ring {
    /// A ring laid out from `base` (16-byte aligned): table, avail, used.
    pub fn new(size: u16, base: u64) -> Self {
        let n = u64::from(size);
        let avail = base + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        Ring {
            size,
            desc: base,
            avail,
            used,
            next_free: Cell::new(0),
        }
    }

    /// Bytes from `base` to the end of the used ring, rounded to 16.
    pub fn footprint(size: u16) -> u64 {
        let r = Ring::new(size, 0);
        (r.used + 6 + 8 * u64::from(size) + 15) & !15
    }

    pub fn write_desc_at(
        m: &mut dyn GuestMemory,
        gpa: u64,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&next.to_le_bytes());
        m.write(gpa, &d).unwrap();
    }

    pub fn write_desc(
        &self,
        m: &mut dyn GuestMemory,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        Self::write_desc_at(m, self.desc + 16 * u64::from(index), addr, len, flags, next);
    }

    fn read_u16(m: &dyn GuestMemory, gpa: u64) -> u16 {
        let mut b = [0u8; 2];
        m.read(gpa, &mut b).unwrap();
        u16::from_le_bytes(b)
    }

    fn write_u16(m: &mut dyn GuestMemory, gpa: u64, v: u16) {
        m.write(gpa, &v.to_le_bytes()).unwrap();
    }

    pub fn avail_idx(&self, m: &dyn GuestMemory) -> u16 {
        Self::read_u16(m, self.avail + 2)
    }

    pub fn set_avail_idx(&self, m: &mut dyn GuestMemory, idx: u16) {
        Self::write_u16(m, self.avail + 2, idx);
    }

    pub fn set_avail_flags(&self, m: &mut dyn GuestMemory, flags: u16) {
        Self::write_u16(m, self.avail, flags);
    }

    pub fn set_used_event(&self, m: &mut dyn GuestMemory, v: u16) {
        Self::write_u16(m, self.avail + 4 + 2 * u64::from(self.size), v);
    }

    pub fn avail_event(&self, m: &dyn GuestMemory) -> u16 {
        Self::read_u16(m, self.used + 4 + 8 * u64::from(self.size))
    }

    /// Put `heads` in the available ring and bump `avail.idx`.
    pub fn publish(&self, m: &mut dyn GuestMemory, heads: &[u16]) {
        let idx = self.avail_idx(m);
        for (i, &h) in heads.iter().enumerate() {
            let slot = idx.wrapping_add(i as u16) % self.size;
            Self::write_u16(m, self.avail + 4 + 2 * u64::from(slot), h);
        }
        self.set_avail_idx(m, idx.wrapping_add(heads.len() as u16));
    }

    /// Write `descs` as a NEXT-linked chain in free table slots (handed
    /// out round-robin) without publishing it; returns the head.
    pub fn write_chain(&self, m: &mut dyn GuestMemory, descs: &[Desc]) -> u16 {
        let first = self.next_free.get();
        for (i, d) in descs.iter().enumerate() {
            let index = first.wrapping_add(i as u16) % self.size;
            let last = i + 1 == descs.len();
            let next = index.wrapping_add(1) % self.size;
            let flags = if d.write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.write_desc(m, index, d.addr, d.len, flags, if last { 0 } else { next });
        }
        self.next_free
            .set(first.wrapping_add(descs.len() as u16) % self.size);
        first % self.size
    }

    /// Write and publish a chain; returns its head.
    pub fn add_chain(&self, m: &mut dyn GuestMemory, descs: &[Desc]) -> u16 {
        let head = self.write_chain(m, descs);
        self.publish(m, &[head]);
        head
    }

    /// Write `descs` as an indirect table at `table` and publish one
    /// descriptor pointing at it; returns the head.
    pub fn add_indirect_chain(&self, m: &mut dyn GuestMemory, table: u64, descs: &[Desc]) -> u16 {
        for (i, d) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let flags = if d.write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            Self::write_desc_at(
                m,
                table + 16 * i as u64,
                d.addr,
                d.len,
                flags,
                if last { 0 } else { i as u16 + 1 },
            );
        }
        let head = self.next_free.get();
        self.write_desc(m, head, table, 16 * descs.len() as u32, F_INDIRECT, 0);
        self.next_free.set(head.wrapping_add(1) % self.size);
        self.publish(m, &[head]);
        head
    }

    pub fn used_idx(&self, m: &dyn GuestMemory) -> u16 {
        Self::read_u16(m, self.used + 2)
    }

    /// `(id, len)` of used ring slot `slot`.
    pub fn used_elem(&self, m: &dyn GuestMemory, slot: u16) -> (u32, u32) {
        let mut e = [0u8; 8];
        m.read(self.used + 4 + 8 * u64::from(slot % self.size), &mut e)
            .unwrap();
        (
            u32::from_le_bytes(e[..4].try_into().unwrap()),
            u32::from_le_bytes(e[4..].try_into().unwrap()),
        )
    }
}

pub fn read32<D: Device>(dev: &mut VirtioMmio<D>, m: &dyn GuestMemory, offset: u64) -> u32 {
    dev.read(offset, 4, m) as u32
}

pub fn write32<D: Device>(dev: &mut VirtioMmio<D>, m: &mut dyn GuestMemory, offset: u64, v: u32) {
    dev.write(offset, 4, u64::from(v), m);
}

/// Linux's `virtio_add_status`: read, or in, write.
pub fn add_status<D: Device>(dev: &mut VirtioMmio<D>, m: &mut dyn GuestMemory, bits: u8) {
    let s = read32(dev, m, reg::STATUS) as u8;
    write32(dev, m, reg::STATUS, u32::from(s | bits));
}

/// What a driver set up: its rings and the negotiated features.
pub struct Setup {
    pub rings: Vec<Ring>,
    pub features: u64,
}

/// Linux's probe sequence: check the header, reset, ACKNOWLEDGE, DRIVER,
/// features (high word then low), FEATURES_OK and read it back, each queue
/// (QueueReady must read 0, size = QueueNumMax, addresses, QueueReady=1),
/// DRIVER_OK. `want` masks the features the driver accepts; rings are laid
/// out from `ring_base`.
pub fn probe<D: Device>(
    dev: &mut VirtioMmio<D>,
    m: &mut dyn GuestMemory,
    want: u64,
    ring_base: u64,
) -> Result<Setup, &'static str> {
    if read32(dev, m, reg::MAGIC_VALUE) != 0x7472_6976 {
        return Err("magic");
    }
    if read32(dev, m, reg::VERSION) != 2 {
        return Err("version");
    }
    if read32(dev, m, reg::DEVICE_ID) == 0 {
        return Err("placeholder device");
    }
    write32(dev, m, reg::STATUS, 0);
    add_status(dev, m, status::ACKNOWLEDGE);
    add_status(dev, m, status::DRIVER);
    write32(dev, m, reg::DEVICE_FEATURES_SEL, 1);
    let mut offered = u64::from(read32(dev, m, reg::DEVICE_FEATURES)) << 32;
    write32(dev, m, reg::DEVICE_FEATURES_SEL, 0);
    offered |= u64::from(read32(dev, m, reg::DEVICE_FEATURES));
    let features = offered & want;
    write32(dev, m, reg::DRIVER_FEATURES_SEL, 1);
    write32(dev, m, reg::DRIVER_FEATURES, (features >> 32) as u32);
    write32(dev, m, reg::DRIVER_FEATURES_SEL, 0);
    write32(dev, m, reg::DRIVER_FEATURES, features as u32);
    add_status(dev, m, status::FEATURES_OK);
    if read32(dev, m, reg::STATUS) as u8 & status::FEATURES_OK == 0 {
        add_status(dev, m, status::FAILED);
        return Err("device refused features");
    }
    let mut rings = Vec::new();
    let mut base = ring_base;
    for index in 0.. {
        write32(dev, m, reg::QUEUE_SEL, index);
        if read32(dev, m, reg::QUEUE_READY) != 0 {
            return Err("queue already set up");
        }
        let max = read32(dev, m, reg::QUEUE_NUM_MAX);
        if max == 0 {
            break;
        }
        let size = max as u16;
        let ring = Ring::new(size, base);
        base += Ring::footprint(size);
        write32(dev, m, reg::QUEUE_NUM, u32::from(size));
        for (low, addr) in [
            (reg::QUEUE_DESC_LOW, ring.desc),
            (reg::QUEUE_DRIVER_LOW, ring.avail),
            (reg::QUEUE_DEVICE_LOW, ring.used),
        ] {
            write32(dev, m, low, addr as u32);
            write32(dev, m, low + 4, (addr >> 32) as u32);
        }
        write32(dev, m, reg::QUEUE_READY, 1);
        if read32(dev, m, reg::QUEUE_READY) != 1 {
            return Err("queue refused");
        }
        rings.push(ring);
    }
    add_status(dev, m, status::DRIVER_OK);
    Ok(Setup { rings, features })
}

/// Linux's `vm_notify`.
pub fn kick<D: Device>(dev: &mut VirtioMmio<D>, m: &mut dyn GuestMemory, queue: u32) {
    write32(dev, m, reg::QUEUE_NOTIFY, queue);
}

/// Linux's `vm_interrupt` register half: read InterruptStatus, ack it.
pub fn ack_interrupt<D: Device>(dev: &mut VirtioMmio<D>, m: &mut dyn GuestMemory) -> u32 {
    let s = read32(dev, m, reg::INTERRUPT_STATUS);
    write32(dev, m, reg::INTERRUPT_ACK, s);
    s
}
