//! The split virtqueue (virtio 1.2 §2.7), device side: descriptor table,
//! available ring and used ring, all read and written through
//! [`GuestMemory`].
//!
//! The one idea: a descriptor chain is walked once, checked in full and
//! copied into a bounded [`Chain`] snapshot before a device looks at it.
//! The guest can rewrite its descriptor table while we work, so nothing is
//! re-read from the table afterwards; the walk is bounded by the queue size
//! (loops), by [`MAX_CHAIN`] (our "reasonable limit", §2.7.4.1) and by the
//! indirect table length, and every buffer is probed against guest RAM.
//! Data accesses still go through `GuestMemory`, which rejects anything
//! outside RAM, so the snapshot is an early check, not the only one. Any
//! failure is a [`QueueError`], which the transport turns into
//! DEVICE_NEEDS_RESET.

use crate::guest_mem::{GuestMemory, OutOfRange};
use crate::persist::QueueState;

/// The most descriptors (direct plus indirect) one chain may have. The
/// block device advertises `seg_max = MAX_CHAIN - 2` so Linux never builds
/// a longer one.
pub const MAX_CHAIN: usize = 64;
/// The largest queue size the split ring allows (§2.7).
pub const MAX_QUEUE_SIZE: u16 = 32768;

const DESC_SIZE: u64 = 16;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// What was wrong with a queue or one of its chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The queue is not enabled (QueueReady is 0).
    NotReady,
    /// QueueNum was 0, above QueueNumMax, or not a power of two.
    BadSize(u32),
    /// A ring part is not aligned as §2.7 requires (16/2/4 bytes).
    Misaligned(u64),
    /// A ring part's end does not fit in 64 bits.
    AddressOverflow(u64),
    /// `avail.idx` is more than the queue size ahead of what we consumed.
    AvailIdxAhead { avail_idx: u16, next_avail: u16 },
    /// A ring entry or `next` field names a descriptor outside its table.
    DescIndexOutOfRange(u32),
    /// The chain visits more descriptors than its table has (a loop).
    ChainLoop,
    /// The chain is longer than [`MAX_CHAIN`].
    ChainTooLong,
    /// The chain's buffers add up to more than 2^32 bytes (§2.7.5.2).
    ChainTooLarge,
    /// A device-readable descriptor follows a device-writable one (§2.7.4.2).
    ReadableAfterWritable,
    /// INDIRECT used although VIRTIO_F_INDIRECT_DESC was not negotiated.
    IndirectNotNegotiated,
    /// INDIRECT together with NEXT, or inside an indirect table (§2.7.5.3.1).
    IndirectMisused,
    /// An indirect table length that is zero or not a multiple of 16.
    IndirectBadLength(u32),
    /// A ring part or buffer is (partly) outside guest RAM.
    Memory(OutOfRange),
}

impl From<OutOfRange> for QueueError {
    fn from(e: OutOfRange) -> Self {
        QueueError::Memory(e)
    }
}

/// One checked buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

impl Buffer {
    const EMPTY: Buffer = Buffer {
        addr: 0,
        len: 0,
        writable: false,
    };
}

/// A checked snapshot of one descriptor chain: device-readable buffers
/// first, then device-writable ones, each wholly inside guest RAM when it
/// was walked.
#[derive(Clone, Debug)]
pub struct Chain {
    head: u16,
    buffers: [Buffer; MAX_CHAIN],
    count: usize,
    readable_len: u64,
    writable_len: u64,
}

impl Chain {
    fn new(head: u16) -> Self {
        Chain {
            head,
            buffers: [Buffer::EMPTY; MAX_CHAIN],
            count: 0,
            readable_len: 0,
            writable_len: 0,
        }
    }

    /// The head descriptor index, which goes back in the used ring.
    pub fn head(&self) -> u16 {
        self.head
    }

    /// Total bytes of the device-readable buffers.
    pub fn readable_len(&self) -> u64 {
        self.readable_len
    }

    /// Total bytes of the device-writable buffers.
    pub fn writable_len(&self) -> u64 {
        self.writable_len
    }

    /// The buffers, in chain order.
    pub fn buffers(&self) -> &[Buffer] {
        self.buffers.get(..self.count).unwrap_or(&[])
    }

    fn push(
        &mut self,
        mem: &dyn GuestMemory,
        addr: u64,
        len: u32,
        flags: u16,
    ) -> Result<(), QueueError> {
        let writable = flags & DESC_F_WRITE != 0;
        if !writable && self.writable_len > 0 {
            return Err(QueueError::ReadableAfterWritable);
        }
        let slot = self
            .buffers
            .get_mut(self.count)
            .ok_or(QueueError::ChainTooLong)?;
        if len > 0 {
            let last = addr
                .checked_add(u64::from(len) - 1)
                .ok_or(QueueError::AddressOverflow(addr))?;
            let mut probe = [0u8; 1];
            mem.read(addr, &mut probe)?;
            mem.read(last, &mut probe)?;
        }
        let total = if writable {
            &mut self.writable_len
        } else {
            &mut self.readable_len
        };
        *total += u64::from(len);
        if self.readable_len + self.writable_len > u64::from(u32::MAX) {
            return Err(QueueError::ChainTooLarge);
        }
        *slot = Buffer {
            addr,
            len,
            writable,
        };
        self.count += 1;
        Ok(())
    }

    /// Copy device-readable bytes starting `offset` bytes into the readable
    /// part; returns how many were copied (short at the end of the part).
    pub fn read_at(
        &self,
        mem: &dyn GuestMemory,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, QueueError> {
        let mut skip = offset;
        let mut done = 0usize;
        for b in self.buffers().iter().filter(|b| !b.writable) {
            if done == buf.len() {
                break;
            }
            let len = u64::from(b.len);
            if skip >= len {
                skip -= len;
                continue;
            }
            let rest = buf.get_mut(done..).unwrap_or(&mut []);
            let n = usize::try_from(len - skip)
                .unwrap_or(usize::MAX)
                .min(rest.len());
            let dst = rest.get_mut(..n).unwrap_or(&mut []);
            // `addr + skip` cannot overflow: the whole buffer was checked.
            mem.read(b.addr + skip, dst)?;
            done += n;
            skip = 0;
        }
        Ok(done)
    }

    /// Copy `data` into the device-writable part starting `offset` bytes
    /// in; returns how many bytes fitted.
    pub fn write_at(
        &self,
        mem: &mut dyn GuestMemory,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, QueueError> {
        let mut skip = offset;
        let mut done = 0usize;
        for b in self.buffers().iter().filter(|b| b.writable) {
            if done == data.len() {
                break;
            }
            let len = u64::from(b.len);
            if skip >= len {
                skip -= len;
                continue;
            }
            let rest = data.get(done..).unwrap_or(&[]);
            let n = usize::try_from(len - skip)
                .unwrap_or(usize::MAX)
                .min(rest.len());
            let src = rest.get(..n).unwrap_or(&[]);
            mem.write(b.addr + skip, src)?;
            done += n;
            skip = 0;
        }
        Ok(done)
    }
}

/// One split virtqueue: the transport's registers for it plus the device's
/// private ring positions.
#[derive(Clone, Debug)]
pub struct Queue {
    max_size: u16,
    size: u16,
    ready: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
    /// Next available-ring slot to consume (the device's `last_avail_idx`).
    next_avail: u16,
    /// Our copy of `used.idx`; only the device writes it.
    next_used: u16,
    /// `next_used` when the driver was last considered for a notification.
    signalled_used: u16,
    event_idx: bool,
    indirect: bool,
}

impl Queue {
    /// A queue the device can offer with up to `max_size` entries (0: the
    /// queue is not available). `max_size` is clamped to a power of two no
    /// larger than [`MAX_QUEUE_SIZE`].
    pub const fn new(max_size: u16) -> Self {
        let max_size = if max_size == 0 {
            0
        } else if max_size > MAX_QUEUE_SIZE {
            MAX_QUEUE_SIZE
        } else if max_size.is_power_of_two() {
            max_size
        } else {
            1 << (15 - max_size.leading_zeros())
        };
        Queue {
            max_size,
            size: max_size,
            ready: false,
            desc_table: 0,
            avail_ring: 0,
            used_ring: 0,
            next_avail: 0,
            next_used: 0,
            signalled_used: 0,
            event_idx: false,
            indirect: false,
        }
    }

    /// Back to the state after a device reset.
    pub fn reset(&mut self) {
        *self = Queue::new(self.max_size);
    }

    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// How many chains a device takes from this queue per call: a ring's
    /// worth several times over, so a legitimate driver refilling while we
    /// work is served, yet a guest cannot keep the device model busy
    /// forever.
    pub fn batch_limit(&self) -> usize {
        4 * usize::from(self.size)
    }

    /// The driver's QueueNum. §2.7: the split queue size is a power of two;
    /// §4.2.2.2: it is at most QueueNumMax.
    pub fn set_size(&mut self, size: u32) -> Result<(), QueueError> {
        match u16::try_from(size) {
            Ok(s) if s != 0 && s <= self.max_size && s.is_power_of_two() => {
                self.size = s;
                Ok(())
            }
            _ => Err(QueueError::BadSize(size)),
        }
    }

    pub fn set_desc_table(&mut self, addr: u64) {
        self.desc_table = addr;
    }

    pub fn set_avail_ring(&mut self, addr: u64) {
        self.avail_ring = addr;
    }

    pub fn set_used_ring(&mut self, addr: u64) {
        self.used_ring = addr;
    }

    pub fn desc_table(&self) -> u64 {
        self.desc_table
    }

    pub fn avail_ring(&self) -> u64 {
        self.avail_ring
    }

    pub fn used_ring(&self) -> u64 {
        self.used_ring
    }

    /// Which negotiated ring features apply.
    pub fn set_ring_features(&mut self, event_idx: bool, indirect: bool) {
        self.event_idx = event_idx;
        self.indirect = indirect;
    }

    /// QueueReady written 1: check the three ring parts (alignment per
    /// §2.7, no address overflow, inside guest RAM) and start from a fresh
    /// ring, as the driver zeroed it (§4.2.3.2).
    pub fn enable(&mut self, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        if self.max_size == 0 {
            return Err(QueueError::BadSize(0));
        }
        let n = u64::from(self.size);
        // Descriptor table 16*n, available ring 6+2n, used ring 6+8n bytes.
        let parts = [
            (self.desc_table, 16, DESC_SIZE * n),
            (self.avail_ring, 2, 6 + 2 * n),
            (self.used_ring, 4, 6 + 8 * n),
        ];
        for (addr, align, len) in parts {
            if addr % align != 0 {
                return Err(QueueError::Misaligned(addr));
            }
            let last = addr
                .checked_add(len - 1)
                .ok_or(QueueError::AddressOverflow(addr))?;
            let mut probe = [0u8; 1];
            mem.read(addr, &mut probe)?;
            mem.read(last, &mut probe)?;
        }
        self.next_avail = 0;
        self.next_used = 0;
        self.signalled_used = 0;
        self.ready = true;
        Ok(())
    }

    /// QueueReady written 0.
    pub fn disable(&mut self) {
        self.ready = false;
    }

    /// The configuration the driver gave this queue, for the persistent
    /// state region.
    pub fn snapshot(&self) -> QueueState {
        QueueState {
            size: self.size,
            ready: self.ready,
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
        }
    }

    /// Take over a queue a previous device-model generation served, from
    /// its saved configuration (untrusted: checked as the driver's own
    /// writes are) and the rings in guest memory. The used ring's `idx`
    /// says how many chains were completed; every chain after it is
    /// served again, so one that was taken but not completed is not lost.
    /// Refused: a size QueueNum would refuse, a ready queue whose rings
    /// `enable` would refuse, or an `avail.idx` more than a queue ahead of
    /// `used.idx`.
    pub fn restore(&mut self, st: &QueueState, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        let mut q = Queue::new(self.max_size);
        if st.size != q.max_size {
            q.set_size(u32::from(st.size))?;
        }
        q.desc_table = st.desc_table;
        q.avail_ring = st.avail_ring;
        q.used_ring = st.used_ring;
        if st.ready {
            q.enable(mem)?;
            let used = Self::read_u16(mem, q.used_ring + 2)?;
            q.next_used = used;
            q.next_avail = used;
            q.signalled_used = used;
            q.avail_idx(mem)?;
        }
        *self = q;
        Ok(())
    }

    // Ring field addresses. `enable` checked that each whole part fits, so
    // these sums cannot overflow while the queue is ready.
    fn avail_idx_addr(&self) -> u64 {
        self.avail_ring + 2
    }

    fn avail_slot_addr(&self, slot: u16) -> u64 {
        self.avail_ring + 4 + 2 * u64::from(slot % self.size)
    }

    fn used_event_addr(&self) -> u64 {
        self.avail_ring + 4 + 2 * u64::from(self.size)
    }

    fn used_slot_addr(&self, slot: u16) -> u64 {
        self.used_ring + 4 + 8 * u64::from(slot % self.size)
    }

    fn avail_event_addr(&self) -> u64 {
        self.used_ring + 4 + 8 * u64::from(self.size)
    }

    fn read_u16(mem: &dyn GuestMemory, gpa: u64) -> Result<u16, QueueError> {
        let mut b = [0u8; 2];
        mem.read(gpa, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// `avail.idx`, refusing one more than a queue size ahead of us: the
    /// driver can never have more chains outstanding than descriptors.
    fn avail_idx(&self, mem: &dyn GuestMemory) -> Result<u16, QueueError> {
        let avail_idx = Self::read_u16(mem, self.avail_idx_addr())?;
        if avail_idx.wrapping_sub(self.next_avail) > self.size {
            return Err(QueueError::AvailIdxAhead {
                avail_idx,
                next_avail: self.next_avail,
            });
        }
        Ok(avail_idx)
    }

    /// Whether the driver has made a chain available that we have not
    /// taken yet.
    pub fn has_available(&self, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        if !self.ready {
            return Ok(false);
        }
        Ok(self.avail_idx(mem)? != self.next_avail)
    }

    /// Take the next available chain, checked and copied. `None` when the
    /// ring is empty (or the queue is not ready).
    pub fn pop(&mut self, mem: &mut dyn GuestMemory) -> Result<Option<Chain>, QueueError> {
        if !self.ready {
            return Ok(None);
        }
        let mut avail_idx = self.avail_idx(mem)?;
        if avail_idx == self.next_avail {
            if !self.event_idx {
                return Ok(None);
            }
            // Ask for a notification on the next chain, then look once more
            // so a chain added meanwhile is not left waiting (§2.7.10).
            mem.write(self.avail_event_addr(), &avail_idx.to_le_bytes())?;
            avail_idx = self.avail_idx(mem)?;
            if avail_idx == self.next_avail {
                return Ok(None);
            }
        }
        let head = Self::read_u16(mem, self.avail_slot_addr(self.next_avail))?;
        let chain = self.walk(mem, head)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        if self.event_idx {
            mem.write(self.avail_event_addr(), &avail_idx.to_le_bytes())?;
        }
        Ok(Some(chain))
    }

    fn read_desc(mem: &dyn GuestMemory, gpa: u64) -> Result<(u64, u32, u16, u16), QueueError> {
        let mut d = [0u8; 16];
        mem.read(gpa, &mut d)?;
        let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, f0, f1, n0, n1] = d;
        Ok((
            u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            u32::from_le_bytes([l0, l1, l2, l3]),
            u16::from_le_bytes([f0, f1]),
            u16::from_le_bytes([n0, n1]),
        ))
    }

    fn walk(&self, mem: &dyn GuestMemory, head: u16) -> Result<Chain, QueueError> {
        let mut chain = Chain::new(head);
        let mut index = head;
        let mut visited: u32 = 0;
        loop {
            if index >= self.size {
                return Err(QueueError::DescIndexOutOfRange(u32::from(index)));
            }
            visited += 1;
            if visited > u32::from(self.size) {
                return Err(QueueError::ChainLoop);
            }
            let at = self.desc_table + DESC_SIZE * u64::from(index);
            let (addr, len, flags, next) = Self::read_desc(mem, at)?;
            if flags & DESC_F_INDIRECT != 0 {
                if !self.indirect {
                    return Err(QueueError::IndirectNotNegotiated);
                }
                if flags & DESC_F_NEXT != 0 {
                    return Err(QueueError::IndirectMisused);
                }
                Self::walk_indirect(mem, addr, len, &mut chain)?;
                break;
            }
            chain.push(mem, addr, len, flags)?;
            if flags & DESC_F_NEXT == 0 {
                break;
            }
            index = next;
        }
        Ok(chain)
    }

    /// The table a descriptor with INDIRECT points at (§2.7.5.3): its own
    /// index space `0..len/16`, no further INDIRECT, the WRITE flag of the
    /// pointing descriptor ignored.
    fn walk_indirect(
        mem: &dyn GuestMemory,
        table: u64,
        len: u32,
        chain: &mut Chain,
    ) -> Result<(), QueueError> {
        if len == 0 || !len.is_multiple_of(DESC_SIZE as u32) {
            return Err(QueueError::IndirectBadLength(len));
        }
        table
            .checked_add(u64::from(len) - 1)
            .ok_or(QueueError::AddressOverflow(table))?;
        let entries = len / DESC_SIZE as u32;
        let mut index: u32 = 0;
        let mut visited: u32 = 0;
        loop {
            if index >= entries {
                return Err(QueueError::DescIndexOutOfRange(index));
            }
            visited += 1;
            if visited > entries {
                return Err(QueueError::ChainLoop);
            }
            let (addr, blen, flags, next) =
                Self::read_desc(mem, table + DESC_SIZE * u64::from(index))?;
            if flags & DESC_F_INDIRECT != 0 {
                return Err(QueueError::IndirectMisused);
            }
            chain.push(mem, addr, blen, flags)?;
            if flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            index = u32::from(next);
        }
    }

    /// Return a chain to the driver: the used element first, then
    /// `used.idx` (§2.7.8.1: `len` is set before the index moves).
    pub fn add_used(
        &mut self,
        mem: &mut dyn GuestMemory,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        let mut elem = [0u8; 8];
        let (id, written) = elem.split_at_mut(4);
        id.copy_from_slice(&u32::from(head).to_le_bytes());
        written.copy_from_slice(&len.to_le_bytes());
        mem.write(self.used_slot_addr(self.next_used), &elem)?;
        let next = self.next_used.wrapping_add(1);
        mem.write(self.used_ring + 2, &next.to_le_bytes())?;
        self.next_used = next;
        Ok(())
    }

    /// Whether the chains used since the last call deserve a used buffer
    /// notification: `avail.flags` NO_INTERRUPT without EVENT_IDX, and
    /// `used_event` with it (§2.7.7.2; the check is Linux's
    /// `vring_need_event`). The shell's `GuestMemory` keeps the `used.idx`
    /// write ahead of this read.
    pub fn needs_notification(&mut self, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        if !self.ready || self.next_used == self.signalled_used {
            return Ok(false);
        }
        let old = self.signalled_used;
        let new = self.next_used;
        self.signalled_used = new;
        if self.event_idx {
            let used_event = Self::read_u16(mem, self.used_event_addr())?;
            Ok(new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old))
        } else {
            let flags = Self::read_u16(mem, self.avail_ring)?;
            Ok(flags & AVAIL_F_NO_INTERRUPT == 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_mem::SliceMemory;
    use crate::virtio::driver_model::{Desc, Ring, RAM_BASE};

    /// A fresh (zeroed) ring at RAM_BASE + 0x1000, enabled.
    fn setup(ram: &mut [u8], size: u16) -> (Queue, Ring) {
        let footprint = Ring::footprint(size) as usize;
        ram[0x1000..0x1000 + footprint].fill(0);
        let ring = Ring::new(size, RAM_BASE + 0x1000);
        let mut q = Queue::new(size);
        q.set_size(u32::from(size)).unwrap();
        q.set_desc_table(ring.desc);
        q.set_avail_ring(ring.avail);
        q.set_used_ring(ring.used);
        let mem = SliceMemory {
            base: RAM_BASE,
            bytes: ram,
        };
        q.enable(&mem).unwrap();
        (q, ring)
    }

    fn mem(ram: &mut [u8]) -> SliceMemory<'_> {
        SliceMemory {
            base: RAM_BASE,
            bytes: ram,
        }
    }

    #[test]
    fn queue_max_size_is_clamped_to_a_power_of_two() {
        assert_eq!(Queue::new(100).max_size(), 64);
        assert_eq!(Queue::new(256).max_size(), 256);
        assert_eq!(Queue::new(u16::MAX).max_size(), 32768);
        assert_eq!(Queue::new(0).max_size(), 0);
    }

    #[test]
    fn size_must_be_a_power_of_two_within_the_maximum() {
        let mut q = Queue::new(256);
        assert_eq!(q.set_size(0), Err(QueueError::BadSize(0)));
        assert_eq!(q.set_size(3), Err(QueueError::BadSize(3)));
        assert_eq!(q.set_size(512), Err(QueueError::BadSize(512)));
        assert_eq!(q.set_size(1 << 20), Err(QueueError::BadSize(1 << 20)));
        assert_eq!(q.set_size(128), Ok(()));
        assert_eq!(q.size(), 128);
    }

    #[test]
    fn enable_checks_alignment_and_ram() {
        let mut ram = vec![0u8; 0x4000];
        let m = mem(&mut ram);
        let mut q = Queue::new(16);
        q.set_desc_table(RAM_BASE + 8);
        q.set_avail_ring(RAM_BASE + 0x800);
        q.set_used_ring(RAM_BASE + 0xc00);
        assert_eq!(q.enable(&m), Err(QueueError::Misaligned(RAM_BASE + 8)));
        q.set_desc_table(RAM_BASE + 0x3ff0);
        assert!(matches!(q.enable(&m), Err(QueueError::Memory(_))));
        q.set_desc_table(!15u64);
        assert!(matches!(q.enable(&m), Err(QueueError::AddressOverflow(_))));
        q.set_desc_table(RAM_BASE);
        assert_eq!(q.enable(&m), Ok(()));
        assert!(q.is_ready());
    }

    #[test]
    fn a_chain_is_split_into_readable_then_writable_buffers() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 8);
        let mut m = mem(&mut ram);
        m.write(RAM_BASE + 0x8000, b"hello world").unwrap();
        ring.add_chain(
            &mut m,
            &[
                Desc::read(RAM_BASE + 0x8000, 5),
                Desc::read(RAM_BASE + 0x8005, 6),
                Desc::write(RAM_BASE + 0x9000, 4),
            ],
        );
        let chain = q.pop(&mut m).unwrap().unwrap();
        assert_eq!(chain.readable_len(), 11);
        assert_eq!(chain.writable_len(), 4);
        let mut buf = [0u8; 8];
        assert_eq!(chain.read_at(&m, 3, &mut buf).unwrap(), 8);
        assert_eq!(&buf, b"lo world");
        assert_eq!(chain.write_at(&mut m, 1, b"xyzw").unwrap(), 3);
        let mut out = [0u8; 4];
        m.read(RAM_BASE + 0x9000, &mut out).unwrap();
        assert_eq!(&out, b"\0xyz");
        q.add_used(&mut m, chain.head(), 4).unwrap();
        assert_eq!(ring.used_idx(&m), 1);
        assert_eq!(ring.used_elem(&m, 0), (u32::from(chain.head()), 4));
        assert!(q.pop(&mut m).unwrap().is_none());
    }

    #[test]
    fn loops_and_bad_indexes_are_rejected() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 4);
        let mut m = mem(&mut ram);
        // 0 -> 1 -> 0 -> ...
        ring.write_desc(&mut m, 0, RAM_BASE + 0x8000, 4, DESC_F_NEXT, 1);
        ring.write_desc(&mut m, 1, RAM_BASE + 0x8000, 4, DESC_F_NEXT, 0);
        ring.publish(&mut m, &[0]);
        assert_eq!(q.pop(&mut m).unwrap_err(), QueueError::ChainLoop);

        let (mut q, ring) = setup(m.bytes, 4);
        let mut m = mem(m.bytes);
        ring.write_desc(&mut m, 0, RAM_BASE + 0x8000, 4, DESC_F_NEXT, 9);
        ring.publish(&mut m, &[0]);
        assert_eq!(
            q.pop(&mut m).unwrap_err(),
            QueueError::DescIndexOutOfRange(9)
        );

        let (mut q, ring) = setup(m.bytes, 4);
        let mut m = mem(m.bytes);
        ring.publish(&mut m, &[7]);
        assert_eq!(
            q.pop(&mut m).unwrap_err(),
            QueueError::DescIndexOutOfRange(7)
        );
    }

    #[test]
    fn buffers_outside_ram_and_wrapping_addresses_are_rejected() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 4);
        let mut m = mem(&mut ram);
        ring.add_chain(&mut m, &[Desc::read(RAM_BASE + 0xfff0, 0x20)]);
        assert!(matches!(q.pop(&mut m), Err(QueueError::Memory(_))));

        let (mut q, ring) = setup(m.bytes, 4);
        let mut m = mem(m.bytes);
        ring.add_chain(&mut m, &[Desc::write(u64::MAX - 2, 8)]);
        assert!(matches!(q.pop(&mut m), Err(QueueError::AddressOverflow(_))));
    }

    #[test]
    fn readable_after_writable_is_rejected() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 4);
        let mut m = mem(&mut ram);
        ring.add_chain(
            &mut m,
            &[
                Desc::write(RAM_BASE + 0x8000, 4),
                Desc::read(RAM_BASE + 0x8100, 4),
            ],
        );
        assert_eq!(
            q.pop(&mut m).unwrap_err(),
            QueueError::ReadableAfterWritable
        );
    }

    #[test]
    fn hostile_avail_idx_is_rejected() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 4);
        let mut m = mem(&mut ram);
        ring.set_avail_idx(&mut m, 5);
        assert_eq!(
            q.pop(&mut m).unwrap_err(),
            QueueError::AvailIdxAhead {
                avail_idx: 5,
                next_avail: 0
            }
        );
        // Exactly a queue size ahead is fine (a full ring).
        ring.set_avail_idx(&mut m, 4);
        assert!(q.has_available(&m).unwrap());
    }

    #[test]
    fn indexes_wrap_at_65536() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 2);
        let mut m = mem(&mut ram);
        q.next_avail = u16::MAX;
        q.next_used = u16::MAX;
        q.signalled_used = u16::MAX;
        ring.write_desc(&mut m, 1, RAM_BASE + 0x8000, 4, 0, 0);
        // Slot 65535 % 2 == 1, slot 0 next.
        let mut slot = [0u8; 2];
        slot.copy_from_slice(&1u16.to_le_bytes());
        m.write(ring.avail + 4 + 2, &slot).unwrap();
        m.write(ring.avail + 4, &slot).unwrap();
        ring.set_avail_idx(&mut m, 1);
        let c = q.pop(&mut m).unwrap().unwrap();
        q.add_used(&mut m, c.head(), 0).unwrap();
        assert_eq!(ring.used_idx(&m), 0);
        assert_eq!(ring.used_elem(&m, 1), (1, 0));
        let c = q.pop(&mut m).unwrap().unwrap();
        q.add_used(&mut m, c.head(), 0).unwrap();
        assert_eq!(ring.used_idx(&m), 1);
        assert_eq!(ring.used_elem(&m, 0), (1, 0));
        assert!(q.pop(&mut m).unwrap().is_none());
    }

    #[test]
    fn indirect_tables_need_the_feature_and_are_validated() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 4);
        let mut m = mem(&mut ram);
        let table = RAM_BASE + 0x6000;
        // Two entries: a readable 3-byte buffer chained to a writable one.
        Ring::write_desc_at(&mut m, table, RAM_BASE + 0x8000, 3, DESC_F_NEXT, 1);
        Ring::write_desc_at(&mut m, table + 16, RAM_BASE + 0x9000, 5, DESC_F_WRITE, 0);
        ring.write_desc(&mut m, 0, table, 32, DESC_F_INDIRECT, 0);
        ring.publish(&mut m, &[0]);
        assert_eq!(
            q.pop(&mut m).unwrap_err(),
            QueueError::IndirectNotNegotiated
        );

        let (mut q, ring) = setup(m.bytes, 4);
        let mut m = mem(m.bytes);
        q.set_ring_features(false, true);
        ring.write_desc(&mut m, 0, table, 32, DESC_F_INDIRECT, 0);
        ring.publish(&mut m, &[0]);
        let c = q.pop(&mut m).unwrap().unwrap();
        assert_eq!((c.readable_len(), c.writable_len()), (3, 5));

        for (len, flags, want) in [
            (0, DESC_F_INDIRECT, QueueError::IndirectBadLength(0)),
            (24, DESC_F_INDIRECT, QueueError::IndirectBadLength(24)),
            (
                32,
                DESC_F_INDIRECT | DESC_F_NEXT,
                QueueError::IndirectMisused,
            ),
        ] {
            let (mut q, ring) = setup(m.bytes, 4);
            m = mem(m.bytes);
            q.set_ring_features(false, true);
            ring.write_desc(&mut m, 0, table, len, flags, 1);
            ring.publish(&mut m, &[0]);
            assert_eq!(q.pop(&mut m).unwrap_err(), want);
        }

        // A loop inside the table, a next past its end, a nested table.
        for (second_flags, second_next, want) in [
            (DESC_F_NEXT, 0, QueueError::ChainLoop),
            (DESC_F_NEXT, 2, QueueError::DescIndexOutOfRange(2)),
            (DESC_F_INDIRECT, 0, QueueError::IndirectMisused),
        ] {
            let (mut q, ring) = setup(m.bytes, 4);
            m = mem(m.bytes);
            q.set_ring_features(false, true);
            Ring::write_desc_at(&mut m, table, RAM_BASE + 0x8000, 3, DESC_F_NEXT, 1);
            Ring::write_desc_at(&mut m, table + 16, table, 32, second_flags, second_next);
            ring.write_desc(&mut m, 0, table, 32, DESC_F_INDIRECT, 0);
            ring.publish(&mut m, &[0]);
            assert_eq!(q.pop(&mut m).unwrap_err(), want);
        }
    }

    #[test]
    fn direct_descriptors_may_precede_an_indirect_one() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 4);
        let mut m = mem(&mut ram);
        q.set_ring_features(false, true);
        let table = RAM_BASE + 0x6000;
        Ring::write_desc_at(&mut m, table, RAM_BASE + 0x9000, 7, DESC_F_WRITE, 0);
        ring.write_desc(&mut m, 2, RAM_BASE + 0x8000, 16, DESC_F_NEXT, 3);
        ring.write_desc(&mut m, 3, table, 16, DESC_F_INDIRECT, 0);
        ring.publish(&mut m, &[2]);
        let c = q.pop(&mut m).unwrap().unwrap();
        assert_eq!(c.head(), 2);
        assert_eq!((c.readable_len(), c.writable_len()), (16, 7));
    }

    #[test]
    fn chains_longer_than_the_limit_are_rejected() {
        let mut ram = vec![0u8; 0x20000];
        let (mut q, ring) = setup(&mut ram, 128);
        let mut m = mem(&mut ram);
        for i in 0..128u16 {
            ring.write_desc(&mut m, i, RAM_BASE + 0x10000, 1, DESC_F_NEXT, i + 1);
        }
        ring.write_desc(&mut m, 127, RAM_BASE + 0x10000, 1, 0, 0);
        ring.publish(&mut m, &[0]);
        assert_eq!(q.pop(&mut m).unwrap_err(), QueueError::ChainTooLong);
    }

    #[test]
    fn chains_over_4gib_are_rejected() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 4);
        let mut m = mem(&mut ram);
        // Zero-length buffers are not probed, so only the sum is at fault.
        ring.add_chain(
            &mut m,
            &[Desc::read(RAM_BASE, 0x10000), Desc::read(RAM_BASE, 0x10000)],
        );
        assert!(q.pop(&mut m).is_ok());
        let big = Desc::read(RAM_BASE, u32::MAX);
        let (mut q, ring) = setup(m.bytes, 4);
        let mut m = SliceMemory {
            base: RAM_BASE,
            bytes: m.bytes,
        };
        ring.add_chain(&mut m, &[Desc::read(RAM_BASE, 1), big]);
        // The big buffer is outside RAM, caught before the sum.
        assert!(matches!(q.pop(&mut m), Err(QueueError::Memory(_))));
    }

    #[test]
    fn notification_follows_flags_without_event_idx() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 4);
        let mut m = mem(&mut ram);
        assert!(!q.needs_notification(&m).unwrap(), "nothing used yet");
        q.add_used(&mut m, 0, 0).unwrap();
        assert!(q.needs_notification(&m).unwrap());
        assert!(!q.needs_notification(&m).unwrap(), "already signalled");
        ring.set_avail_flags(&mut m, AVAIL_F_NO_INTERRUPT);
        q.add_used(&mut m, 0, 0).unwrap();
        assert!(!q.needs_notification(&m).unwrap());
    }

    #[test]
    fn notification_follows_used_event_with_event_idx() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 8);
        let mut m = mem(&mut ram);
        q.set_ring_features(true, false);
        // The driver wants an interrupt once entry 2 is used (idx reaches 3).
        ring.set_used_event(&mut m, 2);
        ring.set_avail_flags(&mut m, AVAIL_F_NO_INTERRUPT); // ignored
        q.add_used(&mut m, 0, 0).unwrap();
        assert!(!q.needs_notification(&m).unwrap());
        q.add_used(&mut m, 0, 0).unwrap();
        assert!(!q.needs_notification(&m).unwrap());
        q.add_used(&mut m, 0, 0).unwrap();
        assert!(q.needs_notification(&m).unwrap());
        // Batches: crossing the event inside a batch still notifies.
        ring.set_used_event(&mut m, 4);
        q.add_used(&mut m, 0, 0).unwrap();
        q.add_used(&mut m, 0, 0).unwrap();
        q.add_used(&mut m, 0, 0).unwrap();
        assert!(q.needs_notification(&m).unwrap());
        // An event already passed does not.
        q.add_used(&mut m, 0, 0).unwrap();
        assert!(!q.needs_notification(&m).unwrap());
    }

    #[test]
    fn avail_event_tracks_what_was_seen_with_event_idx() {
        let mut ram = vec![0u8; 0x10000];
        let (mut q, ring) = setup(&mut ram, 8);
        let mut m = mem(&mut ram);
        q.set_ring_features(true, false);
        ring.add_chain(&mut m, &[Desc::read(RAM_BASE + 0x8000, 4)]);
        ring.add_chain(&mut m, &[Desc::read(RAM_BASE + 0x8000, 4)]);
        assert!(q.pop(&mut m).unwrap().is_some());
        assert_eq!(ring.avail_event(&m), 2);
        assert!(q.pop(&mut m).unwrap().is_some());
        assert!(q.pop(&mut m).unwrap().is_none());
        assert_eq!(ring.avail_event(&m), 2);
    }
}
