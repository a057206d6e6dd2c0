//! Host RAM handed out to domains, in 2 MiB blocks.
//!
//! The one idea: the map knows three kinds of range, and only one of them
//! can be given back. *Reserved* ranges (the kernel, the unified image, the
//! host DTB, firmware's reserved memory) are set at boot and never handed
//! out; *allocated* ranges belong to a domain, a shared region or the grant
//! tables until freed; everything else in the host's RAM regions is free. A
//! fixed claim (`xen,static-mem`, or a builder's `AssignMemory` with a host
//! base) must lie wholly in free RAM, so a builder can never be given memory
//! that is the kernel's or another domain's.
//!
//! Allocation is first fit from where the last one ended, wrapping around,
//! so a boot that never frees gets the same placement as a bump allocator.

use crate::addr::BLOCK_2M;

/// Most RAM regions the host may describe.
pub const MAX_REGIONS: usize = 8;
/// Most ranges the map tracks, reserved and allocated together.
pub const MAX_RANGES: usize = 64;

/// Why RAM could not be given out or back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RamError {
    /// The range is not inside one RAM region of the host, or is empty,
    /// misaligned or wraps.
    NotRam,
    /// Part of it is reserved (the kernel, the image, firmware).
    Reserved,
    /// Part of it is already allocated.
    InUse,
    /// No free range is large enough, or the map is full.
    NoSpace,
    /// A free that does not match one allocated range exactly.
    NotAllocated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: u64,
    end: u64,
    reserved: bool,
}

/// The host's RAM and what of it is taken.
#[derive(Clone, Debug)]
pub struct RamMap {
    regions: heapless::Vec<(u64, u64), MAX_REGIONS>,
    taken: heapless::Vec<Range, MAX_RANGES>,
    next: u64,
}

impl RamMap {
    /// The RAM `regions` (base, size), with `reserved` ranges (start, end)
    /// that are never handed out. Extra regions or reserved ranges beyond
    /// the map's capacity are an error: silently dropping one could hand
    /// out the kernel.
    pub fn new(regions: &[(u64, u64)], reserved: &[(u64, u64)]) -> Result<Self, RamError> {
        let mut map = Self {
            regions: heapless::Vec::new(),
            taken: heapless::Vec::new(),
            next: 0,
        };
        for &r in regions {
            map.regions.push(r).map_err(|_| RamError::NoSpace)?;
        }
        for &(start, end) in reserved {
            if end > start {
                map.taken
                    .push(Range {
                        start,
                        end,
                        reserved: true,
                    })
                    .map_err(|_| RamError::NoSpace)?;
            }
        }
        Ok(map)
    }

    fn in_ram(&self, start: u64, end: u64) -> bool {
        self.regions
            .iter()
            .any(|&(b, l)| start >= b && b.checked_add(l).is_some_and(|e| end <= e))
    }

    fn overlap(&self, start: u64, end: u64) -> Option<&Range> {
        self.taken.iter().find(|r| start < r.end && r.start < end)
    }

    /// `size` bytes (rounded up to 2 MiB), 2 MiB aligned, from free RAM.
    pub fn alloc(&mut self, size: u64) -> Result<u64, RamError> {
        let size = size
            .checked_next_multiple_of(BLOCK_2M)
            .filter(|&s| s > 0)
            .ok_or(RamError::NotRam)?;
        if self.taken.is_full() {
            return Err(RamError::NoSpace);
        }
        // From the hint to the end of RAM, then from the start.
        for floor in [self.next, 0] {
            for i in 0..self.regions.len() {
                let Some(&(base, len)) = self.regions.get(i) else {
                    continue;
                };
                let Some(region_end) = base.checked_add(len) else {
                    continue;
                };
                let Some(mut start) = base.max(floor).checked_next_multiple_of(BLOCK_2M) else {
                    continue;
                };
                while let Some(end) = start.checked_add(size).filter(|&e| e <= region_end) {
                    match self.overlap(start, end) {
                        None => {
                            self.take(start, end)?;
                            self.next = end;
                            return Ok(start);
                        }
                        // Skip past the range in the way, to the next block.
                        Some(r) => {
                            let Some(s) = r.end.checked_next_multiple_of(BLOCK_2M) else {
                                break;
                            };
                            start = s;
                        }
                    }
                }
            }
        }
        Err(RamError::NoSpace)
    }

    /// Claim the fixed range `[start, start + size)`; it must be free RAM.
    /// `align` is the alignment both ends must have.
    pub fn claim(&mut self, start: u64, size: u64, align: u64) -> Result<u64, RamError> {
        let end = start.checked_add(size).ok_or(RamError::NotRam)?;
        let aligned = align > 0 && start.is_multiple_of(align) && size.is_multiple_of(align);
        if size == 0 || !aligned || !self.in_ram(start, end) {
            return Err(RamError::NotRam);
        }
        match self.overlap(start, end) {
            Some(r) if r.reserved => Err(RamError::Reserved),
            Some(_) => Err(RamError::InUse),
            None => {
                self.take(start, end)?;
                Ok(start)
            }
        }
    }

    fn take(&mut self, start: u64, end: u64) -> Result<(), RamError> {
        self.taken
            .push(Range {
                start,
                end,
                reserved: false,
            })
            .map_err(|_| RamError::NoSpace)
    }

    /// Give back the allocated range `[start, start + size)` exactly as it
    /// was allocated (the caller has scrubbed it). `size` is rounded up to
    /// 2 MiB for a range `alloc` rounded.
    pub fn free(&mut self, start: u64, size: u64) -> Result<(), RamError> {
        let pos = self
            .taken
            .iter()
            .position(|r| {
                !r.reserved
                    && r.start == start
                    && (Some(r.end) == start.checked_add(size)
                        || size
                            .checked_next_multiple_of(BLOCK_2M)
                            .and_then(|s| start.checked_add(s))
                            == Some(r.end))
            })
            .ok_or(RamError::NotAllocated)?;
        self.taken.swap_remove(pos);
        Ok(())
    }

    /// Whether any part of `[start, end)` is reserved or allocated.
    pub fn is_taken(&self, start: u64, end: u64) -> bool {
        self.overlap(start, end).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const RAM: u64 = 0x4000_0000;

    /// 1 GiB of RAM with the kernel and its image in the first 48 MiB.
    fn map() -> RamMap {
        RamMap::new(&[(RAM, 1024 * MIB)], &[(RAM + 2 * MIB, RAM + 48 * MIB)]).unwrap()
    }

    #[test]
    fn allocations_skip_what_is_taken() {
        let mut m = map();
        assert_eq!(m.alloc(16 * MIB), Ok(RAM + 48 * MIB));
        assert_eq!(m.alloc(MIB), Ok(RAM + 64 * MIB), "rounded to 2 MiB");
        assert_eq!(m.alloc(2 * MIB), Ok(RAM + 66 * MIB));
        assert!(m.is_taken(RAM + 2 * MIB, RAM + 3 * MIB));
    }

    #[test]
    fn the_first_block_below_the_kernel_is_used_after_wrapping() {
        let mut m = map();
        assert_eq!(m.alloc(976 * MIB), Ok(RAM + 48 * MIB));
        assert_eq!(m.alloc(2 * MIB), Ok(RAM), "the 2 MiB below the kernel");
        assert_eq!(m.alloc(2 * MIB), Err(RamError::NoSpace));
    }

    #[test]
    fn freed_ranges_are_reused() {
        let mut m = map();
        let a = m.alloc(16 * MIB).unwrap();
        let b = m.alloc(16 * MIB).unwrap();
        assert_eq!(m.free(a, 16 * MIB), Ok(()));
        assert_eq!(m.free(a, 16 * MIB), Err(RamError::NotAllocated), "twice");
        assert_eq!(m.alloc(976 * MIB - 32 * MIB), Ok(b + 16 * MIB));
        assert_eq!(m.alloc(16 * MIB), Ok(a), "after wrapping, the freed range");
    }

    #[test]
    fn frees_must_match_an_allocation() {
        let mut m = map();
        let a = m.alloc(3 * MIB).unwrap();
        assert_eq!(m.free(a, 2 * MIB), Err(RamError::NotAllocated), "a part");
        assert_eq!(
            m.free(RAM + 2 * MIB, 46 * MIB),
            Err(RamError::NotAllocated),
            "reserved"
        );
        assert_eq!(m.free(a, 3 * MIB), Ok(()), "the size it was asked for");
        let b = m.alloc(4 * MIB).unwrap();
        assert_eq!(m.free(b, 4 * MIB), Ok(()), "the size it was rounded to");
    }

    #[test]
    fn claims_must_be_free_ram() {
        let mut m = map();
        assert_eq!(
            m.claim(RAM + 64 * MIB, 4 * MIB, 2 * MIB),
            Ok(RAM + 64 * MIB)
        );
        assert_eq!(
            m.claim(RAM + 66 * MIB, 4 * MIB, 2 * MIB),
            Err(RamError::InUse),
            "overlaps the first claim"
        );
        assert_eq!(
            m.claim(RAM, 4 * MIB, 2 * MIB),
            Err(RamError::Reserved),
            "overlaps the kernel"
        );
        assert_eq!(
            m.claim(0, 4 * MIB, 2 * MIB),
            Err(RamError::NotRam),
            "below RAM"
        );
        assert_eq!(
            m.claim(RAM + 1022 * MIB, 4 * MIB, 2 * MIB),
            Err(RamError::NotRam),
            "runs past the end of RAM"
        );
        assert_eq!(
            m.claim(RAM + 80 * MIB, MIB, 2 * MIB),
            Err(RamError::NotRam),
            "size"
        );
        assert_eq!(
            m.claim(RAM + 81 * MIB, 2 * MIB, 2 * MIB),
            Err(RamError::NotRam),
            "base"
        );
        assert_eq!(
            m.claim(RAM + 80 * MIB, 0, 2 * MIB),
            Err(RamError::NotRam),
            "empty"
        );
        assert_eq!(
            m.claim(u64::MAX - MIB, 4 * MIB, 2 * MIB),
            Err(RamError::NotRam)
        );
        assert_eq!(m.claim(RAM + 80 * MIB, 4 * MIB, 0), Err(RamError::NotRam));
        assert_eq!(m.claim(RAM + 81 * MIB, 4096, 4096), Ok(RAM + 81 * MIB));
        assert_eq!(m.alloc(2 * MIB), Ok(RAM), "the block below the kernel");
        assert_eq!(m.alloc(14 * MIB), Ok(RAM + 48 * MIB), "past the kernel");
        assert_eq!(m.alloc(4 * MIB), Ok(RAM + 68 * MIB), "past the first claim");
        assert_eq!(m.alloc(8 * MIB), Ok(RAM + 72 * MIB));
        assert_eq!(
            m.alloc(2 * MIB),
            Ok(RAM + 82 * MIB),
            "past the claimed page"
        );
    }

    #[test]
    fn several_regions_and_a_full_map() {
        let mut m = RamMap::new(&[(RAM, 4 * MIB), (0x1_0000_0000, 8 * MIB)], &[]).unwrap();
        assert_eq!(
            m.alloc(6 * MIB),
            Ok(0x1_0000_0000),
            "the first region is too small"
        );
        assert_eq!(m.alloc(4 * MIB), Ok(RAM), "after wrapping");
        assert_eq!(m.alloc(2 * MIB), Ok(0x1_0000_0000 + 6 * MIB));
        assert_eq!(m.alloc(2 * MIB), Err(RamError::NoSpace));
        assert_eq!(m.alloc(0), Err(RamError::NotRam));
        assert_eq!(m.alloc(u64::MAX), Err(RamError::NotRam));

        let many = [(RAM, MIB); MAX_REGIONS + 1];
        assert!(matches!(RamMap::new(&many, &[]), Err(RamError::NoSpace)));
        let mut m = RamMap::new(&[(RAM, 4096 * MIB)], &[]).unwrap();
        for _ in 0..MAX_RANGES {
            m.alloc(2 * MIB).unwrap();
        }
        assert_eq!(
            m.alloc(2 * MIB),
            Err(RamError::NoSpace),
            "no room to record it"
        );
        assert_eq!(
            m.claim(RAM + 1024 * MIB, 2 * MIB, 2 * MIB),
            Err(RamError::NoSpace)
        );
    }
}
