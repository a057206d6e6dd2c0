//! A translation-table builder for the 4 KiB granule, shared by the EL2
//! stage-1 identity map and every domain's stage-2.
//!
//! The walk is format-agnostic: a [`PteFormat`] says how a table, block or
//! page descriptor is encoded, and a [`TableMemory`] supplies zeroed table
//! pages and reads/writes descriptors. The kernel passes identity-mapped host
//! memory; host tests pass a fake backed by a `Vec`. Mappings use the largest
//! block (1 GiB, then 2 MiB) that alignment and length allow.

use crate::addr::{PhysAddr, BLOCK_1G, BLOCK_2M, PAGE_SIZE};

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    /// Normal, write-back, inner shareable.
    Normal,
    /// Device-nGnRE.
    Device,
}

/// Attributes of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub mem: MemType,
    pub writable: bool,
    pub executable: bool,
}

impl Attrs {
    /// Read-write-execute normal memory (guest RAM, kernel image).
    pub const RAM: Attrs = Attrs {
        mem: MemType::Normal,
        writable: true,
        executable: true,
    };
    /// Read-only, never-execute normal memory (the image's modules as the
    /// boot domain sees them).
    pub const READ_ONLY: Attrs = Attrs {
        mem: MemType::Normal,
        writable: false,
        executable: false,
    };
    /// Read-write, never-execute device memory.
    pub const DEVICE: Attrs = Attrs {
        mem: MemType::Device,
        writable: true,
        executable: false,
    };
}

/// How descriptors are encoded for one translation regime.
pub trait PteFormat {
    /// A level-0..2 descriptor pointing at the next-level table.
    fn table(next: PhysAddr) -> u64;
    /// A block (level 1 or 2) or page (level 3) descriptor.
    fn leaf(out: PhysAddr, level: u8, attrs: Attrs) -> u64;
    /// Decode a leaf back into its attributes, for tests and for lookups.
    fn leaf_attrs(desc: u64) -> Attrs;
}

/// Backing store for table pages.
pub trait TableMemory {
    /// A zeroed, 4 KiB-aligned page for a table, or `None` when exhausted.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
    /// Read the descriptor at `addr`.
    fn read(&self, addr: PhysAddr) -> u64;
    /// Write the descriptor at `addr`.
    fn write(&mut self, addr: PhysAddr, desc: u64);
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Address or size not 4 KiB aligned, or the range wraps.
    Misaligned,
    /// The input address lies beyond what the table covers.
    OutOfRange,
    /// Part of the range is already mapped.
    AlreadyMapped,
    /// No memory for another table page.
    NoMemory,
}

/// Why a page could not be unmapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapError {
    /// The address is not 4 KiB aligned.
    Misaligned,
    /// The input address lies beyond what the table covers.
    OutOfRange,
    /// Nothing maps the address.
    NotMapped,
    /// A 1 GiB or 2 MiB block maps the address; only pages are removed.
    Block,
}

const DESC_VALID: u64 = 1;
const DESC_TABLE: u64 = 0b11;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Bytes covered by one entry at `level` (1 GiB, 2 MiB or 4 KiB).
const fn level_size(level: u8) -> u64 {
    match level {
        0 => BLOCK_1G * 512,
        1 => BLOCK_1G,
        2 => BLOCK_2M,
        _ => PAGE_SIZE,
    }
}

/// A translation table rooted at one page, starting at `start_level`
/// (covering `input_bits` bits of input address).
pub struct PageTable<F: PteFormat> {
    root: PhysAddr,
    start_level: u8,
    input_bits: u8,
    _format: core::marker::PhantomData<F>,
}

impl<F: PteFormat> PageTable<F> {
    /// A new, empty table. `input_bits` must be covered by one page at
    /// `start_level` (e.g. 39 bits from level 1).
    pub fn new(
        mem: &mut impl TableMemory,
        start_level: u8,
        input_bits: u8,
    ) -> Result<Self, MapError> {
        let root = mem.alloc_table().ok_or(MapError::NoMemory)?;
        Ok(Self {
            root,
            start_level,
            input_bits,
            _format: core::marker::PhantomData,
        })
    }

    /// A view of a table built earlier by [`PageTable::new`], to edit it
    /// after boot (a live domain's stage 2). `start_level` and `input_bits`
    /// must be the ones it was built with; the caller serializes every edit
    /// of one table (the kernel holds the domain's stage-2 lock).
    pub fn from_root(root: PhysAddr, start_level: u8, input_bits: u8) -> Self {
        Self {
            root,
            start_level,
            input_bits,
            _format: core::marker::PhantomData,
        }
    }

    /// The root table's address, for TTBR/VTTBR.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    fn limit(&self) -> u64 {
        1u64 << self.input_bits
    }

    /// Map `[input, input+size)` to `[out, out+size)` with `attrs`.
    /// Validates the whole range before writing anything, so a failed call
    /// leaves the table unchanged except for empty intermediate tables.
    pub fn map(
        &mut self,
        mem: &mut impl TableMemory,
        input: u64,
        out: PhysAddr,
        size: u64,
        attrs: Attrs,
    ) -> Result<(), MapError> {
        let end = input.checked_add(size).ok_or(MapError::Misaligned)?;
        out.checked_add(size).ok_or(MapError::Misaligned)?;
        if !input.is_multiple_of(PAGE_SIZE)
            || !out.raw().is_multiple_of(PAGE_SIZE)
            || !size.is_multiple_of(PAGE_SIZE)
            || size == 0
        {
            return Err(MapError::Misaligned);
        }
        if end > self.limit() {
            return Err(MapError::OutOfRange);
        }
        let mut va = input;
        while va < end {
            va = self.end_of_hole(mem, va).ok_or(MapError::AlreadyMapped)?;
        }
        let mut va = input;
        while va < end {
            let pa = out.raw() + (va - input);
            let remaining = end - va;
            let mut level = self.start_level.max(1);
            while level < 3 {
                let sz = level_size(level);
                if va.is_multiple_of(sz)
                    && pa.is_multiple_of(sz)
                    && remaining >= sz
                    && self.subtree_empty(mem, va, level)
                {
                    break;
                }
                level += 1;
            }
            self.install(mem, va, PhysAddr(pa), level, attrs)?;
            va += level_size(level);
        }
        Ok(())
    }

    /// Map the single 4 KiB page at `input` to `out` (a grant mapping).
    pub fn map_page(
        &mut self,
        mem: &mut impl TableMemory,
        input: u64,
        out: PhysAddr,
        attrs: Attrs,
    ) -> Result<(), MapError> {
        self.map(mem, input, out, PAGE_SIZE, attrs)
    }

    /// Remove the level-3 page that maps `input` and return the output
    /// address it mapped. A block mapping is refused rather than split, and
    /// intermediate tables stay in place (they are reused by the next map).
    ///
    /// The descriptor is cleared and nothing else: the caller must then
    /// invalidate the TLBs that may cache it (for a stage 2, `TLBI IPAS2E1IS`
    /// for the page and `TLBI VMALLE1IS` for the VMID, each after a
    /// `DSB ISHST` and followed by `DSB ISH`) before reusing the page.
    pub fn unmap_page(
        &mut self,
        mem: &mut impl TableMemory,
        input: u64,
    ) -> Result<PhysAddr, UnmapError> {
        if !input.is_multiple_of(PAGE_SIZE) {
            return Err(UnmapError::Misaligned);
        }
        if input >= self.limit() {
            return Err(UnmapError::OutOfRange);
        }
        let mut table = self.root;
        let mut level = self.start_level;
        loop {
            let slot = PhysAddr(table.raw() + index(input, level) * 8);
            let desc = mem.read(slot);
            if desc & DESC_VALID == 0 {
                return Err(UnmapError::NotMapped);
            }
            if level == 3 {
                mem.write(slot, 0);
                return Ok(PhysAddr(desc & ADDR_MASK));
            }
            if desc & DESC_TABLE != DESC_TABLE {
                return Err(UnmapError::Block);
            }
            table = PhysAddr(desc & ADDR_MASK);
            level += 1;
        }
    }

    /// Remove every mapping in `[input, input + size)`, blocks and pages
    /// alike; holes are skipped. A block that the range covers only in part
    /// is refused before anything changes, and intermediate tables stay in
    /// place. The caller invalidates the TLBs afterwards, as for
    /// [`Self::unmap_page`] (for a whole range, all of the VMID's entries).
    pub fn unmap(
        &mut self,
        mem: &mut impl TableMemory,
        input: u64,
        size: u64,
    ) -> Result<(), UnmapError> {
        let end = input.checked_add(size).ok_or(UnmapError::OutOfRange)?;
        if !input.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err(UnmapError::Misaligned);
        }
        if end > self.limit() {
            return Err(UnmapError::OutOfRange);
        }
        for clear in [false, true] {
            let mut va = input;
            while va < end {
                va = match self.leaf_slot(mem, va) {
                    Err(hole_end) => hole_end,
                    Ok((slot, level)) => {
                        let sz = level_size(level);
                        if !va.is_multiple_of(sz) || va + sz > end {
                            return Err(UnmapError::Block);
                        }
                        if clear {
                            mem.write(slot, 0);
                        }
                        va + sz
                    }
                };
            }
        }
        Ok(())
    }

    /// The descriptor slot and level of the leaf that maps `va`, or the end
    /// of the hole that covers it.
    fn leaf_slot(&self, mem: &impl TableMemory, va: u64) -> Result<(PhysAddr, u8), u64> {
        let mut table = self.root;
        let mut level = self.start_level;
        loop {
            let slot = PhysAddr(table.raw() + index(va, level) * 8);
            let desc = mem.read(slot);
            if desc & DESC_VALID == 0 {
                let sz = level_size(level);
                return Err((va & !(sz - 1)) + sz);
            }
            if level == 3 || desc & DESC_TABLE != DESC_TABLE {
                return Ok((slot, level));
            }
            table = PhysAddr(desc & ADDR_MASK);
            level += 1;
        }
    }

    /// If `va` is unmapped, the end of the empty entry that covers it (so a
    /// range check skips whole empty subtrees); `None` if `va` is mapped.
    fn end_of_hole(&self, mem: &impl TableMemory, va: u64) -> Option<u64> {
        let mut table = self.root;
        let mut level = self.start_level;
        loop {
            let desc = mem.read(PhysAddr(table.raw() + index(va, level) * 8));
            if desc & DESC_VALID == 0 {
                let sz = level_size(level);
                return Some((va & !(sz - 1)) + sz);
            }
            if level == 3 || desc & DESC_TABLE != DESC_TABLE {
                return None;
            }
            table = PhysAddr(desc & ADDR_MASK);
            level += 1;
        }
    }

    /// Whether no descriptor exists for the entry covering `va` at `level`.
    fn subtree_empty(&self, mem: &impl TableMemory, va: u64, level: u8) -> bool {
        let mut table = self.root;
        let mut l = self.start_level;
        loop {
            let slot = PhysAddr(table.raw() + index(va, l) * 8);
            let desc = mem.read(slot);
            if desc & DESC_VALID == 0 {
                return true;
            }
            if l == level {
                return false;
            }
            if l == 3 || desc & DESC_TABLE != DESC_TABLE {
                return false;
            }
            table = PhysAddr(desc & ADDR_MASK);
            l += 1;
        }
    }

    fn install(
        &mut self,
        mem: &mut impl TableMemory,
        va: u64,
        pa: PhysAddr,
        level: u8,
        attrs: Attrs,
    ) -> Result<(), MapError> {
        let mut table = self.root;
        let mut l = self.start_level;
        while l < level {
            let slot = PhysAddr(table.raw() + index(va, l) * 8);
            let desc = mem.read(slot);
            table = if desc & DESC_VALID == 0 {
                let next = mem.alloc_table().ok_or(MapError::NoMemory)?;
                mem.write(slot, F::table(next));
                next
            } else if desc & DESC_TABLE == DESC_TABLE {
                PhysAddr(desc & ADDR_MASK)
            } else {
                return Err(MapError::AlreadyMapped);
            };
            l += 1;
        }
        let slot = PhysAddr(table.raw() + index(va, level) * 8);
        mem.write(slot, F::leaf(pa, level, attrs));
        Ok(())
    }

    /// Translate `va`: the output address and attributes, and the level of
    /// the leaf that maps it.
    pub fn lookup(&self, mem: &impl TableMemory, va: u64) -> Option<(PhysAddr, Attrs, u8)> {
        if va >= self.limit() {
            return None;
        }
        let mut table = self.root;
        let mut level = self.start_level;
        loop {
            let desc = mem.read(PhysAddr(table.raw() + index(va, level) * 8));
            if desc & DESC_VALID == 0 {
                return None;
            }
            let is_table = level < 3 && desc & DESC_TABLE == DESC_TABLE;
            if !is_table {
                let sz = level_size(level);
                let pa = (desc & ADDR_MASK & !(sz - 1)) | (va & (sz - 1));
                return Some((PhysAddr(pa), F::leaf_attrs(desc), level));
            }
            table = PhysAddr(desc & ADDR_MASK);
            level += 1;
        }
    }
}

fn index(va: u64, level: u8) -> u64 {
    let shift = 12 + 9 * (3 - u64::from(level));
    (va >> shift) & 0x1ff
}

/// Stage-2 descriptors (Arm ARM D8.3, "Stage 2 attributes").
pub struct Stage2;

impl PteFormat for Stage2 {
    fn table(next: PhysAddr) -> u64 {
        (next.raw() & ADDR_MASK) | DESC_TABLE
    }
    fn leaf(out: PhysAddr, level: u8, attrs: Attrs) -> u64 {
        let kind = if level == 3 { 0b11 } else { 0b01 };
        // MemAttr[5:2]: 0b1111 = Normal inner/outer write-back; 0b0001 = Device-nGnRE.
        let memattr = match attrs.mem {
            MemType::Normal => 0b1111 << 2,
            MemType::Device => 0b0001 << 2,
        };
        // S2AP[7:6]: 01 read-only, 11 read-write.
        let s2ap = if attrs.writable { 0b11 << 6 } else { 0b01 << 6 };
        let sh = 0b11 << 8;
        let af = 1 << 10;
        let xn = if attrs.executable { 0 } else { 0b10 << 53 };
        (out.raw() & ADDR_MASK) | kind | memattr | s2ap | sh | af | xn
    }
    fn leaf_attrs(desc: u64) -> Attrs {
        Attrs {
            mem: if (desc >> 2) & 0xf == 0b1111 {
                MemType::Normal
            } else {
                MemType::Device
            },
            writable: (desc >> 6) & 0b11 == 0b11,
            executable: (desc >> 53) & 0b11 == 0,
        }
    }
}

/// EL2 stage-1 descriptors (single-range regime). `AttrIndx` 0 is Normal
/// write-back and 1 is Device-nGnRE, matching the MAIR_EL2 the kernel sets.
pub struct El2Stage1;

/// MAIR_EL2 value matching [`El2Stage1`]'s attribute indices.
pub const MAIR_EL2: u64 = 0xff | (0x04 << 8);

impl PteFormat for El2Stage1 {
    fn table(next: PhysAddr) -> u64 {
        (next.raw() & ADDR_MASK) | DESC_TABLE
    }
    fn leaf(out: PhysAddr, level: u8, attrs: Attrs) -> u64 {
        let kind = if level == 3 { 0b11 } else { 0b01 };
        let attr_idx = match attrs.mem {
            MemType::Normal => 0 << 2,
            MemType::Device => 1 << 2,
        };
        // AP[7:6]: 00 read-write, 10 read-only (EL2 has no EL0 half).
        let ap = if attrs.writable { 0 } else { 0b10 << 6 };
        let sh = if attrs.mem == MemType::Normal {
            0b11 << 8
        } else {
            0
        };
        let af = 1 << 10;
        let xn = if attrs.executable { 0 } else { 1 << 54 };
        (out.raw() & ADDR_MASK) | kind | attr_idx | ap | sh | af | xn
    }
    fn leaf_attrs(desc: u64) -> Attrs {
        Attrs {
            mem: if (desc >> 2) & 0b111 == 0 {
                MemType::Normal
            } else {
                MemType::Device
            },
            writable: (desc >> 6) & 0b11 == 0,
            executable: desc & (1 << 54) == 0,
        }
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! Fake physical memory for host tests: table pages live in a `Vec`.
    use super::*;
    use std::collections::HashMap;

    pub struct FakeMemory {
        pub next: u64,
        pub limit: u64,
        pub words: HashMap<u64, u64>,
        pub tables: usize,
    }

    impl FakeMemory {
        pub fn new(pages: u64) -> Self {
            Self {
                next: 0x1000_0000,
                limit: 0x1000_0000 + pages * PAGE_SIZE,
                words: HashMap::new(),
                tables: 0,
            }
        }
    }

    impl TableMemory for FakeMemory {
        fn alloc_table(&mut self) -> Option<PhysAddr> {
            if self.next >= self.limit {
                return None;
            }
            let pa = self.next;
            self.next += PAGE_SIZE;
            self.tables += 1;
            Some(PhysAddr(pa))
        }
        fn read(&self, addr: PhysAddr) -> u64 {
            self.words.get(&addr.raw()).copied().unwrap_or(0)
        }
        fn write(&mut self, addr: PhysAddr, desc: u64) {
            assert_eq!(addr.raw() % 8, 0);
            assert!(
                addr.raw() >= 0x1000_0000 && addr.raw() < self.limit,
                "write outside table pages"
            );
            self.words.insert(addr.raw(), desc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeMemory;
    use super::*;

    fn stage2(mem: &mut FakeMemory) -> PageTable<Stage2> {
        PageTable::new(mem, 1, 39).unwrap()
    }

    #[test]
    fn aligned_ram_uses_2m_blocks() {
        let mut mem = FakeMemory::new(16);
        let mut pt = stage2(&mut mem);
        pt.map(
            &mut mem,
            0x4000_0000,
            PhysAddr(0x8020_0000),
            0x40_0000,
            Attrs::RAM,
        )
        .unwrap();
        let (pa, attrs, level) = pt.lookup(&mem, 0x4012_3456).unwrap();
        assert_eq!(pa, PhysAddr(0x8032_3456));
        assert_eq!(level, 2);
        assert_eq!(attrs, Attrs::RAM);
        // Root + one level-2 table: no level-3 tables were needed.
        assert_eq!(mem.tables, 2);
        assert!(pt.lookup(&mem, 0x4040_0000).is_none());
        assert!(pt.lookup(&mem, 0x3fff_f000).is_none());
    }

    #[test]
    fn gigabyte_aligned_uses_1g_block() {
        let mut mem = FakeMemory::new(4);
        let mut pt = stage2(&mut mem);
        pt.map(
            &mut mem,
            0x4000_0000,
            PhysAddr(0x4000_0000),
            BLOCK_1G,
            Attrs::RAM,
        )
        .unwrap();
        assert_eq!(pt.lookup(&mem, 0x7fff_ffff).unwrap().2, 1);
        assert_eq!(mem.tables, 1);
    }

    #[test]
    fn misaligned_output_falls_back_to_pages() {
        let mut mem = FakeMemory::new(16);
        let mut pt = stage2(&mut mem);
        pt.map(
            &mut mem,
            0x4000_0000,
            PhysAddr(0x8000_1000),
            0x20_0000,
            Attrs::RAM,
        )
        .unwrap();
        let (pa, _, level) = pt.lookup(&mem, 0x401f_f008).unwrap();
        assert_eq!(level, 3);
        assert_eq!(pa, PhysAddr(0x8020_0008));
    }

    #[test]
    fn device_pages_are_not_executable() {
        let mut mem = FakeMemory::new(16);
        let mut pt = stage2(&mut mem);
        pt.map(
            &mut mem,
            0x0900_0000,
            PhysAddr(0x0900_0000),
            0x1000,
            Attrs::DEVICE,
        )
        .unwrap();
        let (_, attrs, _) = pt.lookup(&mem, 0x0900_0ff8).unwrap();
        assert_eq!(attrs, Attrs::DEVICE);
    }

    #[test]
    fn rejects_bad_ranges_without_changing_the_table() {
        let mut mem = FakeMemory::new(16);
        let mut pt = stage2(&mut mem);
        assert_eq!(
            pt.map(&mut mem, 0x4000_0800, PhysAddr(0), 0x1000, Attrs::RAM),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            pt.map(&mut mem, 0x4000_0000, PhysAddr(0), 0, Attrs::RAM),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            pt.map(&mut mem, !0xfff, PhysAddr(0), 0x2000, Attrs::RAM),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            pt.map(&mut mem, 1 << 39, PhysAddr(0), 0x1000, Attrs::RAM),
            Err(MapError::OutOfRange)
        );
        pt.map(
            &mut mem,
            0x4000_0000,
            PhysAddr(0x8000_0000),
            0x20_0000,
            Attrs::RAM,
        )
        .unwrap();
        assert_eq!(
            pt.map(
                &mut mem,
                0x401f_f000,
                PhysAddr(0x9000_0000),
                0x2000,
                Attrs::RAM
            ),
            Err(MapError::AlreadyMapped)
        );
        assert!(
            pt.lookup(&mem, 0x4020_0000).is_none(),
            "a failed map must not leave a partial mapping"
        );
    }

    #[test]
    fn runs_out_of_table_memory_cleanly() {
        let mut mem = FakeMemory::new(2);
        let mut pt = stage2(&mut mem);
        assert_eq!(
            pt.map(
                &mut mem,
                0x4000_0000,
                PhysAddr(0x8000_0000),
                0x1000,
                Attrs::RAM
            ),
            Err(MapError::NoMemory)
        );
    }

    #[test]
    fn unmap_page_removes_one_page_and_returns_its_output() {
        let mut mem = FakeMemory::new(16);
        let mut pt = stage2(&mut mem);
        let ro = Attrs {
            writable: false,
            executable: false,
            ..Attrs::RAM
        };
        pt.map_page(&mut mem, 0x3a00_1000, PhysAddr(0x8765_4000), ro)
            .unwrap();
        pt.map_page(&mut mem, 0x3a00_2000, PhysAddr(0x8000_0000), Attrs::RAM)
            .unwrap();
        assert_eq!(
            pt.lookup(&mem, 0x3a00_1008),
            Some((PhysAddr(0x8765_4008), ro, 3))
        );
        let tables = mem.tables;
        assert_eq!(
            pt.unmap_page(&mut mem, 0x3a00_1000),
            Ok(PhysAddr(0x8765_4000))
        );
        assert!(pt.lookup(&mem, 0x3a00_1000).is_none());
        assert_eq!(
            pt.lookup(&mem, 0x3a00_2000).map(|m| m.0),
            Some(PhysAddr(0x8000_0000)),
            "the neighbour stays mapped"
        );
        assert_eq!(mem.tables, tables, "intermediate tables are kept");
        assert_eq!(
            pt.unmap_page(&mut mem, 0x3a00_1000),
            Err(UnmapError::NotMapped),
            "a second unmap finds nothing"
        );
        // The hole can be filled again without new tables.
        pt.map_page(&mut mem, 0x3a00_1000, PhysAddr(0x9000_0000), Attrs::RAM)
            .unwrap();
        assert_eq!(
            pt.lookup(&mem, 0x3a00_1000).map(|m| m.0),
            Some(PhysAddr(0x9000_0000))
        );
        assert_eq!(mem.tables, tables);
    }

    #[test]
    fn unmap_page_refuses_blocks_holes_and_bad_addresses() {
        let mut mem = FakeMemory::new(16);
        let mut pt = stage2(&mut mem);
        pt.map(
            &mut mem,
            0x4000_0000,
            PhysAddr(0x8000_0000),
            BLOCK_2M,
            Attrs::RAM,
        )
        .unwrap();
        pt.map(
            &mut mem,
            0x8000_0000,
            PhysAddr(0x8000_0000),
            BLOCK_1G,
            Attrs::RAM,
        )
        .unwrap();
        assert_eq!(pt.unmap_page(&mut mem, 0x4000_1000), Err(UnmapError::Block));
        assert_eq!(pt.unmap_page(&mut mem, 0x8000_0000), Err(UnmapError::Block));
        assert_eq!(pt.lookup(&mem, 0x4000_1000).unwrap().2, 2, "block intact");
        // Unmapped at level 1 (empty root slot), level 2 and level 3.
        assert_eq!(
            pt.unmap_page(&mut mem, 0x1_0000_0000),
            Err(UnmapError::NotMapped)
        );
        assert_eq!(
            pt.unmap_page(&mut mem, 0x4020_0000),
            Err(UnmapError::NotMapped)
        );
        pt.map_page(&mut mem, 0x3a00_0000, PhysAddr(0x9000_0000), Attrs::RAM)
            .unwrap();
        assert_eq!(
            pt.unmap_page(&mut mem, 0x3a00_3000),
            Err(UnmapError::NotMapped)
        );
        assert_eq!(
            pt.unmap_page(&mut mem, 0x3a00_0800),
            Err(UnmapError::Misaligned)
        );
        assert_eq!(
            pt.unmap_page(&mut mem, 1 << 39),
            Err(UnmapError::OutOfRange)
        );
        assert_eq!(pt.unmap_page(&mut mem, !0xfff), Err(UnmapError::OutOfRange));
    }

    #[test]
    fn unmap_removes_blocks_and_pages_in_a_range() {
        let mut mem = FakeMemory::new(16);
        let mut pt = stage2(&mut mem);
        // 2 MiB block, then 2 pages (misaligned output), a hole, a 1 GiB block.
        pt.map(
            &mut mem,
            0x4000_0000,
            PhysAddr(0x8000_0000),
            BLOCK_2M,
            Attrs::RAM,
        )
        .unwrap();
        pt.map(
            &mut mem,
            0x4020_0000,
            PhysAddr(0x9000_1000),
            0x2000,
            Attrs::RAM,
        )
        .unwrap();
        pt.map(
            &mut mem,
            0x8000_0000,
            PhysAddr(0xc000_0000),
            BLOCK_1G,
            Attrs::RAM,
        )
        .unwrap();
        let tables = mem.tables;
        assert_eq!(
            pt.unmap(&mut mem, 0x4000_0000, 0x4040_0000 - 0x4000_0000),
            Ok(())
        );
        assert!(pt.lookup(&mem, 0x4000_0000).is_none());
        assert!(pt.lookup(&mem, 0x4020_1000).is_none());
        assert!(pt.lookup(&mem, 0x8000_0000).is_some(), "outside the range");
        assert_eq!(pt.unmap(&mut mem, 0x8000_0000, BLOCK_1G), Ok(()));
        assert!(pt.lookup(&mem, 0x8000_0000).is_none());
        assert_eq!(mem.tables, tables, "intermediate tables are kept");
        assert_eq!(
            pt.unmap(&mut mem, 0x4000_0000, BLOCK_2M),
            Ok(()),
            "holes only"
        );
        // The freed range maps again, as blocks.
        pt.map(
            &mut mem,
            0x4000_0000,
            PhysAddr(0x8000_0000),
            BLOCK_2M,
            Attrs::RAM,
        )
        .unwrap();
        assert_eq!(pt.lookup(&mem, 0x4000_0000).unwrap().2, 2);
    }

    #[test]
    fn unmap_refuses_part_of_a_block_and_bad_ranges() {
        let mut mem = FakeMemory::new(16);
        let mut pt = stage2(&mut mem);
        pt.map(
            &mut mem,
            0x4000_0000,
            PhysAddr(0x8000_0000),
            2 * BLOCK_2M,
            Attrs::RAM,
        )
        .unwrap();
        assert_eq!(
            pt.unmap(&mut mem, 0x4000_0000, BLOCK_2M + PAGE_SIZE),
            Err(UnmapError::Block),
            "the second block only in part"
        );
        assert!(pt.lookup(&mem, 0x4000_0000).is_some(), "nothing changed");
        assert_eq!(
            pt.unmap(&mut mem, 0x4000_1000, BLOCK_2M),
            Err(UnmapError::Block)
        );
        assert_eq!(
            pt.unmap(&mut mem, 0x4000_0800, 4096),
            Err(UnmapError::Misaligned)
        );
        assert_eq!(
            pt.unmap(&mut mem, 0x4000_0000, 100),
            Err(UnmapError::Misaligned)
        );
        assert_eq!(
            pt.unmap(&mut mem, 1 << 39, 4096),
            Err(UnmapError::OutOfRange)
        );
        assert_eq!(
            pt.unmap(&mut mem, !0xfff, 0x2000),
            Err(UnmapError::OutOfRange)
        );
    }

    #[test]
    fn a_view_from_the_root_edits_the_same_table() {
        let mut mem = FakeMemory::new(16);
        let mut built = stage2(&mut mem);
        built
            .map(
                &mut mem,
                0x4000_0000,
                PhysAddr(0x8000_0000),
                BLOCK_2M,
                Attrs::RAM,
            )
            .unwrap();
        let mut live: PageTable<Stage2> = PageTable::from_root(built.root(), 1, 39);
        let grant = Attrs {
            writable: false,
            executable: false,
            ..Attrs::RAM
        };
        live.map_page(&mut mem, 0x3a00_0000, PhysAddr(0x8123_4000), grant)
            .unwrap();
        assert_eq!(
            built.lookup(&mem, 0x3a00_0010),
            Some((PhysAddr(0x8123_4010), grant, 3)),
            "the original sees the page mapped through the view"
        );
        assert_eq!(
            live.lookup(&mem, 0x4000_1000).map(|m| m.0),
            Some(PhysAddr(0x8000_1000)),
            "the view sees what was mapped at build"
        );
        assert_eq!(
            live.map_page(&mut mem, 0x4000_1000, PhysAddr(0x9000_0000), grant),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(
            live.unmap_page(&mut mem, 0x3a00_0000),
            Ok(PhysAddr(0x8123_4000))
        );
        assert!(built.lookup(&mem, 0x3a00_0000).is_none());
    }

    #[test]
    fn el2_stage1_round_trips_attributes() {
        let mut mem = FakeMemory::new(16);
        let mut pt: PageTable<El2Stage1> = PageTable::new(&mut mem, 1, 39).unwrap();
        pt.map(
            &mut mem,
            0x0800_0000,
            PhysAddr(0x0800_0000),
            0x1_0000,
            Attrs::DEVICE,
        )
        .unwrap();
        pt.map(
            &mut mem,
            0x4000_0000,
            PhysAddr(0x4000_0000),
            0x4000_0000,
            Attrs::RAM,
        )
        .unwrap();
        assert_eq!(pt.lookup(&mem, 0x0800_1000).unwrap().1, Attrs::DEVICE);
        assert_eq!(pt.lookup(&mem, 0x4800_0000).unwrap().1, Attrs::RAM);
    }
}
