//! Domain RAM filled on first touch: what a 2 MiB block of a domain's RAM
//! must hold when it is first used.
//!
//! The one idea: assigning RAM and copying a module into it cost nothing at
//! build time. The kernel only records *what* each block should hold (the
//! [`Payloads`] copied into the domain, zeros everywhere else) and leaves
//! the block out of the domain's stage 2. The first access to the block, by
//! the guest, its device model or the kernel on its behalf, fills it
//! (zeroing the gaps, copying and checking the payload bytes) and maps it.
//! So a domain starts in a few thousand instructions whatever its size, and
//! RAM it never touches is never scrubbed, copied or hashed (docs/02, "Lazy
//! RAM").
//!
//! This module is the portable arithmetic: which payload pieces and which
//! zero gaps make up a block. Filling and mapping is `hv::lazy`.

use crate::addr::BLOCK_2M;

/// The unit of filling and mapping.
pub const BLOCK: u64 = BLOCK_2M;
/// Most module copies one domain's RAM can record (a kernel, a ramdisk, a
/// disk, with room for a builder's extras).
pub const MAX_PAYLOADS: usize = 8;
/// Blocks tracked per domain: the first 8 GiB of its RAM. Blocks beyond
/// are filled and mapped when the RAM is assigned.
pub const TRACKED_BLOCKS: u64 = 4096;

/// Bytes of one module to be copied into a domain's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payload {
    /// Offset in the domain's RAM.
    pub at: u64,
    /// Index of the module in the image's table.
    pub module: usize,
    /// Offset in the module.
    pub from: u64,
    /// Bytes.
    pub len: u64,
}

impl Payload {
    pub fn end(&self) -> u64 {
        self.at + self.len
    }

    /// The part of it that lands in `[start, end)` of the RAM, if any.
    pub fn clip(&self, start: u64, end: u64) -> Option<Payload> {
        let lo = self.at.max(start);
        let hi = self.end().min(end);
        (lo < hi).then(|| Payload {
            at: lo,
            module: self.module,
            from: self.from + (lo - self.at),
            len: hi - lo,
        })
    }
}

/// Why a payload cannot be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// Empty, or not inside the RAM.
    OutOfRange,
    /// [`MAX_PAYLOADS`] are recorded already.
    Full,
}

/// The module copies recorded for one domain's RAM, in the order they were
/// made: a later one overwrites an earlier one where they overlap, as the
/// copies would have.
#[derive(Clone, Debug, Default)]
pub struct Payloads {
    list: heapless::Vec<Payload, MAX_PAYLOADS>,
}

/// The parts of a block no payload covers, in address order.
pub type Gaps = heapless::Vec<(u64, u64), { MAX_PAYLOADS + 1 }>;

impl Payloads {
    pub const fn new() -> Self {
        Self {
            list: heapless::Vec::new(),
        }
    }

    /// Forget every payload (the domain is reloaded or gone).
    pub fn clear(&mut self) {
        self.list.clear();
    }

    /// Record `p` for a RAM of `ram_size` bytes. Validates first: nothing
    /// changes on an error.
    pub fn add(&mut self, p: Payload, ram_size: u64) -> Result<(), PayloadError> {
        let end = p.at.checked_add(p.len).ok_or(PayloadError::OutOfRange)?;
        if p.len == 0 || end > ram_size {
            return Err(PayloadError::OutOfRange);
        }
        self.list.push(p).map_err(|_| PayloadError::Full)
    }

    /// The recorded payloads clipped to `[start, end)`, oldest first: copied
    /// in this order, they give the bytes the copies would have.
    pub fn pieces(&self, start: u64, end: u64) -> impl Iterator<Item = Payload> + '_ {
        self.list.iter().filter_map(move |p| p.clip(start, end))
    }

    /// The parts of `[start, end)` that no payload covers: what filling the
    /// block zeroes.
    pub fn gaps(&self, start: u64, end: u64) -> Gaps {
        let mut covered: heapless::Vec<(u64, u64), MAX_PAYLOADS> = heapless::Vec::new();
        for p in self.pieces(start, end) {
            // Cannot overflow: there are at most MAX_PAYLOADS pieces.
            let _ = covered.push((p.at, p.end()));
        }
        covered.sort_unstable();
        let mut gaps = Gaps::new();
        let mut at = start;
        for (lo, hi) in covered {
            if lo > at {
                let _ = gaps.push((at, lo));
            }
            at = at.max(hi);
        }
        if at < end {
            let _ = gaps.push((at, end));
        }
        gaps
    }
}

/// Bytes `[start, end)` of a RAM of `ram_size` bytes that block `block`
/// covers (the last block may be short); `None` past the end.
pub fn block_range(block: u64, ram_size: u64) -> Option<(u64, u64)> {
    let start = block.checked_mul(BLOCK)?;
    (start < ram_size).then(|| (start, (start + BLOCK).min(ram_size)))
}

/// The blocks `[first, last]` that bytes `[off, off + len)` touch (`len`
/// of 0 touches the block of `off`).
pub fn blocks_of(off: u64, len: u64) -> (u64, u64) {
    let last = off.saturating_add(len.max(1) - 1);
    (off / BLOCK, last / BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn payload(at: u64, module: usize, from: u64, len: u64) -> Payload {
        Payload {
            at,
            module,
            from,
            len,
        }
    }

    #[test]
    fn a_block_with_no_payload_is_one_gap() {
        let p = Payloads::new();
        assert_eq!(p.gaps(0, BLOCK).as_slice(), &[(0, BLOCK)]);
        assert_eq!(p.pieces(0, BLOCK).count(), 0);
    }

    #[test]
    fn pieces_are_clipped_to_the_block_with_their_module_offset() {
        let mut p = Payloads::new();
        // A 4.5 MiB kernel at 1 MiB: blocks 0, 1, 2 hold parts of it.
        p.add(payload(MIB, 3, 0, 9 * MIB / 2), 64 * MIB).unwrap();
        let b1: Vec<_> = p.pieces(BLOCK, 2 * BLOCK).collect();
        assert_eq!(b1, [payload(BLOCK, 3, BLOCK - MIB, BLOCK)]);
        assert!(p.gaps(BLOCK, 2 * BLOCK).is_empty());
        let b2: Vec<_> = p.pieces(2 * BLOCK, 3 * BLOCK).collect();
        assert_eq!(b2, [payload(2 * BLOCK, 3, 2 * BLOCK - MIB, 3 * MIB / 2)]);
        assert_eq!(
            p.gaps(2 * BLOCK, 3 * BLOCK).as_slice(),
            &[(11 * MIB / 2, 3 * BLOCK)]
        );
        assert_eq!(p.gaps(0, BLOCK).as_slice(), &[(0, MIB)]);
        assert_eq!(p.pieces(3 * BLOCK, 4 * BLOCK).count(), 0);
    }

    #[test]
    fn overlapping_payloads_keep_their_order_and_gaps_merge() {
        let mut p = Payloads::new();
        p.add(payload(0x1000, 1, 0, 0x3000), BLOCK).unwrap();
        p.add(payload(0x2000, 2, 0x10, 0x3000), BLOCK).unwrap();
        p.add(payload(0x9000, 1, 0, 0x1000), BLOCK).unwrap();
        let order: Vec<_> = p.pieces(0, BLOCK).map(|x| x.module).collect();
        assert_eq!(order, [1, 2, 1], "the later copy wins where they overlap");
        assert_eq!(
            p.gaps(0, BLOCK).as_slice(),
            &[(0, 0x1000), (0x5000, 0x9000), (0xa000, BLOCK)]
        );
    }

    #[test]
    fn bad_payloads_are_refused_and_change_nothing() {
        let mut p = Payloads::new();
        let ram = 4 * MIB;
        assert_eq!(
            p.add(payload(0, 0, 0, 0), ram),
            Err(PayloadError::OutOfRange)
        );
        assert_eq!(
            p.add(payload(ram, 0, 0, 1), ram),
            Err(PayloadError::OutOfRange)
        );
        assert_eq!(
            p.add(payload(u64::MAX, 0, 0, 2), ram),
            Err(PayloadError::OutOfRange)
        );
        for i in 0..MAX_PAYLOADS {
            p.add(payload(i as u64, 0, 0, 1), ram).unwrap();
        }
        assert_eq!(p.add(payload(0, 0, 0, 1), ram), Err(PayloadError::Full));
        assert_eq!(p.pieces(0, ram).count(), MAX_PAYLOADS);
        p.clear();
        assert_eq!(p.pieces(0, ram).count(), 0);
    }

    #[test]
    fn blocks_and_their_ranges() {
        assert_eq!(block_range(0, 3 * MIB), Some((0, BLOCK)));
        assert_eq!(block_range(1, 3 * MIB), Some((BLOCK, 3 * MIB)));
        assert_eq!(block_range(2, 3 * MIB), None);
        assert_eq!(block_range(u64::MAX, 3 * MIB), None);
        assert_eq!(blocks_of(0, 0), (0, 0));
        assert_eq!(blocks_of(BLOCK - 1, 2), (0, 1));
        assert_eq!(blocks_of(BLOCK, BLOCK), (1, 1));
        assert_eq!(
            blocks_of(u64::MAX - 1, 10),
            (u64::MAX / BLOCK, u64::MAX / BLOCK)
        );
    }
}
