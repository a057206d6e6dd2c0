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
static NEXT_FRAME: spin::Mutex<usize> = spin::Mutex::new(0);

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
