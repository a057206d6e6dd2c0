//! The EL2 translation regime: an identity map of RAM (normal memory) and
//! of the few devices the kernel drives (GIC, UART), built with the portable
//! table builder over a static pool of table pages. Stage-2 tables for
//! domains come from the same pool.

use super::{dsb_ish, isb, read_sysreg, write_sysreg};
use crate::addr::{PhysAddr, PAGE_SIZE};
use crate::pagetable::{Attrs, El2Stage1, MapError, PageTable, TableMemory, MAIR_EL2};
use core::cell::UnsafeCell;

/// Input-address bits for both EL2 stage 1 and stage 2: 39 bits, one
/// level-1 table of 512 × 1 GiB.
pub const VA_BITS: u8 = 39;
const POOL_PAGES: usize = 256;

#[repr(C, align(4096))]
struct Pool(UnsafeCell<[[u64; 512]; POOL_PAGES]>);
// SAFETY: the pool is handed out by `Frames`, which is only used under the
// hypervisor's build lock (boot and domain build on one pCPU at a time).
unsafe impl Sync for Pool {}
static POOL: Pool = Pool(UnsafeCell::new([[0; 512]; POOL_PAGES]));
static NEXT_FRAME: super::Lock<usize> = super::Lock::new(0);

/// Table pages from the static pool, accessed through the identity map.
pub struct Frames;

impl TableMemory for Frames {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let mut next = NEXT_FRAME.lock();
        if *next >= POOL_PAGES {
            return None;
        }
        let addr = POOL.0.get() as u64 + (*next as u64) * PAGE_SIZE;
        *next += 1;
        // The pool is in zeroed BSS and each page is handed out once.
        Some(PhysAddr(addr))
    }
    fn read(&self, addr: PhysAddr) -> u64 {
        // SAFETY: table addresses only ever come from `alloc_table`, inside
        // the static pool, and are 8-byte aligned by the walker.
        unsafe { core::ptr::read_volatile(addr.raw() as *const u64) }
    }
    fn write(&mut self, addr: PhysAddr, desc: u64) {
        // SAFETY: as for `read`; descriptors are single 64-bit stores, as the
        // table walker requires (Arm ARM D8.2.1 single-copy atomicity).
        unsafe { core::ptr::write_volatile(addr.raw() as *mut u64, desc) }
    }
}

/// Table pages one domain may add to its stage 2 after boot (grant mappings
/// and grant-table frames), from host RAM set aside for it at boot, so that
/// nothing a guest does draws on the shared pool. Pages are never returned:
/// an emptied table stays in place and is reused by the next mapping there.
///
/// Descriptors are read and written by address, like [`Frames`] does, for
/// tables from either source: the walk starts at a root built from the pool.
pub struct TableReserve {
    next: u64,
    end: u64,
}

impl TableReserve {
    /// No pages: every allocation fails.
    pub const fn empty() -> Self {
        Self { next: 0, end: 0 }
    }

    /// The `pages` pages at `base`.
    ///
    /// # Safety
    /// `base..base + pages * 4 KiB` must be page-aligned host RAM,
    /// identity-mapped at EL2, that nothing but this reserve uses, for the
    /// rest of the kernel's life.
    pub unsafe fn new(base: PhysAddr, pages: u64) -> Self {
        Self {
            next: base.raw(),
            end: base.raw() + pages * PAGE_SIZE,
        }
    }
}

impl TableMemory for TableReserve {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        if self.next >= self.end {
            return None;
        }
        let page = self.next;
        self.next += PAGE_SIZE;
        // SAFETY: `page` is one whole page of the reserve (see `new`), handed
        // out once, so nothing else refers to it.
        unsafe { core::ptr::write_bytes(page as *mut u8, 0, PAGE_SIZE as usize) };
        // The zeroes must be visible to the table walker before any
        // descriptor that points at this page (Arm ARM, VMSAv8-64
        // "Translation table walks": walks are not ordered with plain stores).
        dsb_ish();
        Some(PhysAddr(page))
    }
    fn read(&self, addr: PhysAddr) -> u64 {
        // SAFETY: the walker only passes 8-aligned addresses inside tables of
        // a stage 2, which live in the static pool or in a reserve: RAM,
        // identity-mapped, holding nothing but descriptors.
        unsafe { core::ptr::read_volatile(addr.raw() as *const u64) }
    }
    fn write(&mut self, addr: PhysAddr, desc: u64) {
        // SAFETY: as for `read`; a single 64-bit store, as the walker
        // requires (Arm ARM D8.2.1 single-copy atomicity).
        unsafe { core::ptr::write_volatile(addr.raw() as *mut u64, desc) }
    }
}

/// Physical-address size code for TCR_EL2.PS / VTCR_EL2.PS, capped at 40 bits.
pub fn pa_size_code() -> u64 {
    (read_sysreg!("id_aa64mmfr0_el1") & 0xf).min(0b010)
}

/// Build the identity map of `ram` (normal) and `devices` (device memory).
pub fn build_el2_map(ram: &[(u64, u64)], devices: &[(u64, u64)]) -> Result<PhysAddr, MapError> {
    let mut mem = Frames;
    let mut pt: PageTable<El2Stage1> = PageTable::new(&mut mem, 1, VA_BITS)?;
    for &(base, size) in ram {
        pt.map(&mut mem, base, PhysAddr(base), size, Attrs::RAM)?;
    }
    for &(base, size) in devices {
        let start = base & !(PAGE_SIZE - 1);
        let end = (base + size).next_multiple_of(PAGE_SIZE);
        pt.map(&mut mem, start, PhysAddr(start), end - start, Attrs::DEVICE)?;
    }
    Ok(pt.root())
}

/// Turn the EL2 MMU on with `root` (Arm ARM D8.2, TCR_EL2 and SCTLR_EL2).
pub fn enable(root: PhysAddr) {
    write_sysreg!("mair_el2", MAIR_EL2);
    // T0SZ = 64 - 39; inner/outer write-back, inner shareable; 4 KiB granule.
    let tcr = (64 - u64::from(VA_BITS))
        | (1 << 8)
        | (1 << 10)
        | (3 << 12)
        | (pa_size_code() << 16)
        | (1 << 23)
        | (1 << 31);
    write_sysreg!("tcr_el2", tcr);
    write_sysreg!("ttbr0_el2", root.raw());
    dsb_ish();
    // SAFETY: invalidating EL2 TLB entries before the MMU comes on only
    // drops stale translations.
    unsafe { core::arch::asm!("tlbi alle2", "dsb ish", options(nostack)) };
    isb();
    // RES1 bits | M | C | SA | I | WXN off.
    let sctlr = 0x30c5_0830 | 1 | (1 << 2) | (1 << 3) | (1 << 12);
    write_sysreg!("sctlr_el2", sctlr);
    isb();
}
