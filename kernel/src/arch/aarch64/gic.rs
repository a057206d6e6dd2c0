//! The physical GICv3 and the hypervisor's view of the virtual CPU
//! interface (GIC architecture spec IHI 0069: distributor 12.9,
//! redistributor 12.10, ICC/ICH system registers 12.2–12.5).
//!
//! The kernel owns the distributor and every redistributor. It uses SGI 0 to
//! kick another pCPU, PPI 26 (EL2 physical timer) for time slices, PPI 25 for
//! list-register maintenance, and takes the guests' virtual timer (PPI 27)
//! to inject it. Its one SPI is the console UART's, routed to one pCPU.

use super::{dsb_sy, isb, read_sysreg, write_sysreg};
use core::sync::atomic::{AtomicU64, Ordering};

/// SGI used to make another pCPU reschedule.
pub const KICK_SGI: u32 = 0;
/// GIC maintenance interrupt.
pub const MAINTENANCE_INTID: u32 = 25;
/// Spurious INTID returned by IAR when nothing is pending.
pub const SPURIOUS: u32 = 1023;
/// Number of list registers this kernel uses (QEMU implements 4).
pub const NR_LRS: usize = 4;

static GICD: AtomicU64 = AtomicU64::new(0);

fn mmio_write32(addr: u64, v: u32) {
    // SAFETY: callers pass addresses inside the GIC frames found in the host
    // DTB and identity-mapped as device memory.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}
fn mmio_read32(addr: u64) -> u32 {
    // SAFETY: as for `mmio_write32`.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}
fn mmio_read64(addr: u64) -> u64 {
    // SAFETY: as for `mmio_write32`; GICR_TYPER is a 64-bit register.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}
fn mmio_write64(addr: u64, v: u64) {
    // SAFETY: as for `mmio_write32`; GICD_IROUTER<n> is a 64-bit register.
    unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
}

/// Enable the distributor with affinity routing (GICD_CTLR.ARE, Group 1).
pub fn init_distributor(gicd: u64) {
    GICD.store(gicd, Ordering::Relaxed);
    // With a single security state (QEMU without EL3): ARE = bit 4,
    // EnableGrp1 = bit 1, EnableGrp0 = bit 0.
    mmio_write32(gicd, (1 << 4) | (1 << 1) | 1);
    while mmio_read32(gicd) & (1 << 31) != 0 {}
}

/// Route SPI `intid` to the pCPU with affinity `mpidr` and enable it,
/// level-sensitive, in Group 1 at the kernel's priority (IHI 0069 12.9:
/// GICD_IGROUPR, GICD_IPRIORITYR, GICD_ICFGR, GICD_IROUTER, GICD_ISENABLER).
/// Fails for an INTID the distributor does not implement (GICD_TYPER).
pub fn route_spi(intid: u32, mpidr: u64) -> Result<(), ()> {
    let gicd = GICD.load(Ordering::Relaxed);
    let lines = mmio_read32(gicd + 0x4) & 0x1f;
    if gicd == 0 || !(32..32 * (lines + 1)).contains(&intid) || intid >= SPURIOUS - 3 {
        return Err(());
    }
    let (word, bit) = (u64::from(intid / 32) * 4, 1u32 << (intid % 32));
    let group = gicd + 0x80 + word;
    mmio_write32(group, mmio_read32(group) | bit);
    let prio = gicd + 0x400 + u64::from(intid & !3);
    let shift = (intid % 4) * 8;
    mmio_write32(
        prio,
        (mmio_read32(prio) & !(0xff << shift)) | (0xa0 << shift),
    );
    // Int_config is bit 1 of each 2-bit field: 0 = level-sensitive.
    let cfg = gicd + 0xc00 + u64::from(intid / 16) * 4;
    mmio_write32(cfg, mmio_read32(cfg) & !(0b10 << ((intid % 16) * 2)));
    // Interrupt_Routing_Mode 0: to the one PE named by Aff3.Aff2.Aff1.Aff0,
    // which sit where MPIDR_EL1 has them.
    mmio_write64(gicd + 0x6000 + u64::from(intid) * 8, mpidr & 0xff_00ff_ffff);
    mmio_write32(gicd + 0x100 + word, bit);
    Ok(())
}

/// Find this pCPU's redistributor in `[gicr, gicr+size)` by affinity, wake
/// it, and enable the private interrupts the kernel uses.
pub fn init_cpu(gicr: u64, size: u64, mpidr: u64) -> Result<(), ()> {
    let aff = ((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff);
    let mut frame = gicr;
    let rd = loop {
        if frame >= gicr + size {
            return Err(());
        }
        let typer = mmio_read64(frame + 0x8);
        if typer >> 32 == aff {
            break frame;
        }
        if typer & (1 << 4) != 0 {
            return Err(());
        }
        frame += 0x2_0000;
    };
    // GICR_WAKER: clear ProcessorSleep, wait for ChildrenAsleep to clear.
    let waker = rd + 0x14;
    mmio_write32(waker, mmio_read32(waker) & !(1 << 1));
    while mmio_read32(waker) & (1 << 2) != 0 {}
    let sgi = rd + 0x1_0000;
    mmio_write32(sgi + 0x80, u32::MAX); // IGROUPR0: all Group 1
    for i in 0..8 {
        mmio_write32(sgi + 0x400 + i * 4, 0xa0a0_a0a0); // IPRIORITYR
    }
    let enable = (1 << KICK_SGI) | (1 << MAINTENANCE_INTID) | (1 << 26) | (1 << 27);
    mmio_write32(sgi + 0x100, enable); // ISENABLER0
                                       // CPU interface: system registers on, EL1 may use them too; unmask all
                                       // priorities; EOI both drops priority and deactivates (EOImode = 0).
    write_sysreg!("icc_sre_el2", read_sysreg!("icc_sre_el2") | 0b1001);
    isb();
    write_sysreg!("icc_pmr_el1", 0xff);
    write_sysreg!("icc_ctlr_el1", 0);
    write_sysreg!("icc_igrpen1_el1", 1);
    // Virtual CPU interface on; the guest's state arrives with its vCPU.
    write_sysreg!("ich_hcr_el2", 1);
    isb();
    Ok(())
}

/// Acknowledge the highest-priority pending physical interrupt.
pub fn ack() -> u32 {
    (read_sysreg!("icc_iar1_el1") & 0xff_ffff) as u32
}

/// End (drop priority and deactivate) a physical interrupt.
pub fn eoi(intid: u32) {
    write_sysreg!("icc_eoir1_el1", u64::from(intid));
}

/// Send the kick SGI to the pCPU with affinity `mpidr` (ICC_SGI1R_EL1 layout).
pub fn kick(mpidr: u64) {
    let aff0 = mpidr & 0xf;
    let aff1 = (mpidr >> 8) & 0xff;
    let aff2 = (mpidr >> 16) & 0xff;
    let aff3 = (mpidr >> 32) & 0xff;
    let rs = (mpidr & 0xff) >> 4;
    let v = (aff3 << 48)
        | (aff2 << 32)
        | (rs << 44)
        | (u64::from(KICK_SGI) << 24)
        | (aff1 << 16)
        | (1 << aff0);
    dsb_sy();
    write_sysreg!("icc_sgi1r_el1", v);
    isb();
}

/// Read list register `n`.
pub fn read_lr(n: usize) -> u64 {
    match n {
        0 => read_sysreg!("ich_lr0_el2"),
        1 => read_sysreg!("ich_lr1_el2"),
        2 => read_sysreg!("ich_lr2_el2"),
        _ => read_sysreg!("ich_lr3_el2"),
    }
}

/// Write list register `n`.
pub fn write_lr(n: usize, v: u64) {
    match n {
        0 => write_sysreg!("ich_lr0_el2", v),
        1 => write_sysreg!("ich_lr1_el2", v),
        2 => write_sysreg!("ich_lr2_el2", v),
        _ => write_sysreg!("ich_lr3_el2", v),
    }
}

/// Bitmap of list registers that hold no interrupt (ICH_ELRSR_EL2).
pub fn empty_lrs() -> u64 {
    read_sysreg!("ich_elrsr_el2")
}

/// Turn the virtual CPU interface off or back on (ICH_HCR_EL2.En). While it
/// is off the loaded vCPU's pending list registers signal no virtual IRQ,
/// which would otherwise end an idle WFI at once: QEMU counts a pending
/// virtual IRQ as a wake-up event at any exception level, so a pCPU whose
/// blocked vCPU left an interrupt pending (the guest had IRQs masked) would
/// spin instead of sleeping. The list registers themselves are untouched.
pub fn set_virtual_cpuif(on: bool) {
    let hcr = read_sysreg!("ich_hcr_el2");
    write_sysreg!("ich_hcr_el2", if on { hcr | 1 } else { hcr & !1 });
    isb();
}

/// Request (or stop requesting) a maintenance interrupt when the list
/// registers run low (ICH_HCR_EL2.UIE), so queued interrupts get delivered.
pub fn set_underflow_irq(on: bool) {
    let hcr = read_sysreg!("ich_hcr_el2");
    let want = if on { hcr | (1 << 1) } else { hcr & !(1 << 1) };
    if want != hcr {
        write_sysreg!("ich_hcr_el2", want);
    }
}
