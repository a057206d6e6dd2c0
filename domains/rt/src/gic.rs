//! The guest side of GICv3: distributor and redistributor set-up, the CPU
//! interface through ICC_* system registers, SGIs, and IRQ dispatch to a
//! per-INTID handler table.
//!
//! The one idea: with affinity routing (ARE) on, SGIs and PPIs are configured
//! in each CPU's own redistributor, never in the distributor, so every CPU that
//! wants an interrupt must call [`init_cpu`] and enable it itself. Register
//! offsets are from the GICv3 Architecture Specification (IHI 0069), §12.

/// Highest SGI INTID.
pub const SGI_LAST: u32 = 15;
/// INTIDs 1020..=1023 are special; an acknowledge returning one means nothing
/// is pending (IHI 0069 §2.2.1).
pub const SPECIAL_INTID_FIRST: u32 = 1020;
/// Priority given to interrupts this runtime enables (any value below the
/// 0xff mask unmasks it).
pub const DEFAULT_PRIORITY: u8 = 0x80;

/// Whom an SGI is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgiTarget {
    /// CPUs sharing Aff3.Aff2.Aff1, chosen by a 16-bit list of Aff0 values
    /// `range * 16 + bit`.
    List {
        aff3: u8,
        aff2: u8,
        aff1: u8,
        range: u8,
        targets: u16,
    },
    /// Every participating CPU except the sender (IRM = 1).
    AllButSelf,
}

impl SgiTarget {
    /// The single CPU with this MPIDR.
    pub fn cpu(mpidr: u64) -> Self {
        let aff0 = (mpidr & 0xff) as u8;
        SgiTarget::List {
            aff3: ((mpidr >> 32) & 0xff) as u8,
            aff2: ((mpidr >> 16) & 0xff) as u8,
            aff1: ((mpidr >> 8) & 0xff) as u8,
            range: aff0 / 16,
            targets: 1 << (aff0 % 16),
        }
    }
}

/// The ICC_SGI1R_EL1 value that sends SGI `intid` (only its low 4 bits are
/// used) to `target` (IHI 0069 §12.11.12).
pub fn sgi1r_value(intid: u32, target: SgiTarget) -> u64 {
    let intid = u64::from(intid & 0xf) << 24;
    match target {
        SgiTarget::AllButSelf => intid | 1 << 40,
        SgiTarget::List {
            aff3,
            aff2,
            aff1,
            range,
            targets,
        } => {
            intid
                | u64::from(targets)
                | u64::from(aff1) << 16
                | u64::from(aff2) << 32
                | u64::from(range & 0xf) << 44
                | u64::from(aff3) << 48
        }
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use machine::*;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod machine {
    use super::{sgi1r_value, SgiTarget, DEFAULT_PRIORITY, SPECIAL_INTID_FIRST};
    use core::arch::asm;
    use core::sync::atomic::{AtomicPtr, Ordering};
    use tessera_ipc::platform::{GICD_BASE, GICR_BASE, GICR_STRIDE, VGIC_NR_SPIS};

    const GICD_CTLR: u64 = 0x0;
    const GICD_CTLR_RWP: u32 = 1 << 31;
    const GICD_CTLR_ARE_NS: u32 = 1 << 4;
    /// EnableGrp1A in the Non-secure view, EnableGrp1 in the single-security
    /// view: Linux sets both bits 1 and 0 so either view enables Group 1.
    const GICD_CTLR_ENABLE_G1A: u32 = 1 << 1;
    const GICD_CTLR_ENABLE_G1: u32 = 1 << 0;

    const GICR_WAKER: u64 = 0x14;
    const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
    /// The SGI_base frame follows the RD_base frame of each redistributor.
    const GICR_SGI_FRAME: u64 = 0x1_0000;
    const GICR_IGROUPR0: u64 = GICR_SGI_FRAME + 0x80;
    const GICR_ISENABLER0: u64 = GICR_SGI_FRAME + 0x100;
    const GICR_ICENABLER0: u64 = GICR_SGI_FRAME + 0x180;
    const GICR_IPRIORITYR: u64 = GICR_SGI_FRAME + 0x400;

    const GICD_IGROUPR: u64 = 0x80;
    const GICD_ISENABLER: u64 = 0x100;
    const GICD_IPRIORITYR: u64 = 0x400;
    const GICD_ICFGR: u64 = 0xc00;
    const GICD_IROUTER: u64 = 0x6000;

    /// ICC_SRE_EL1.SRE: use system registers, not the memory-mapped GICC.
    const ICC_SRE_SRE: u64 = 1;
    /// Lowest priority mask: every priority below 0xff is signalled.
    const ICC_PMR_UNMASK_ALL: u64 = 0xff;

    /// Number of INTIDs with a handler slot: SGIs, PPIs and the vGIC's SPIs.
    const NR_HANDLERS: usize = 32 + VGIC_NR_SPIS as usize;

    /// A handler receives the INTID it was registered for.
    pub type IrqHandler = fn(intid: u32);

    static HANDLERS: [AtomicPtr<()>; NR_HANDLERS] =
        [const { AtomicPtr::new(core::ptr::null_mut()) }; NR_HANDLERS];

    fn mmio_read(addr: u64) -> u32 {
        // SAFETY: only called with addresses inside the GIC frames of the
        // platform map, which the identity map marks Device-nGnRE.
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    }

    fn mmio_write(addr: u64, value: u32) {
        // SAFETY: as for `mmio_read`.
        unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
    }

    fn redistributor(cpu: usize) -> u64 {
        GICR_BASE + cpu as u64 * GICR_STRIDE
    }

    /// Enables affinity routing and Group 1 in the distributor. Call once, on
    /// the boot CPU, before any CPU enables interrupts.
    pub fn init_distributor() {
        mmio_write(
            GICD_BASE + GICD_CTLR,
            GICD_CTLR_ARE_NS | GICD_CTLR_ENABLE_G1A | GICD_CTLR_ENABLE_G1,
        );
        while mmio_read(GICD_BASE + GICD_CTLR) & GICD_CTLR_RWP != 0 {
            core::hint::spin_loop();
        }
    }

    /// Wakes this CPU's redistributor, puts its SGIs and PPIs in Group 1 and
    /// enables the CPU interface. Interrupts stay masked in PSTATE.
    pub fn init_cpu() {
        let rd = redistributor(crate::cpu::index());
        let waker = mmio_read(rd + GICR_WAKER);
        mmio_write(rd + GICR_WAKER, waker & !GICR_WAKER_PROCESSOR_SLEEP);
        while mmio_read(rd + GICR_WAKER) & GICR_WAKER_CHILDREN_ASLEEP != 0 {
            core::hint::spin_loop();
        }
        mmio_write(rd + GICR_IGROUPR0, u32::MAX);
        // SAFETY: ICC_SRE_EL1, ICC_PMR_EL1 and ICC_IGRPEN1_EL1 are the GICv3
        // CPU interface of this CPU (IHI 0069 §12.2); setting them affects
        // only interrupt delivery, which is still masked by PSTATE.I.
        unsafe {
            asm!(
                "mrs {t}, icc_sre_el1",
                "orr {t}, {t}, {sre}",
                "msr icc_sre_el1, {t}",
                "isb",
                "msr icc_pmr_el1, {pmr}",
                "msr icc_igrpen1_el1, {one}",
                "isb",
                t = out(reg) _,
                sre = in(reg) ICC_SRE_SRE,
                pmr = in(reg) ICC_PMR_UNMASK_ALL,
                one = in(reg) 1u64,
                options(nostack),
            );
        }
    }

    /// Enables SGI or PPI `intid` (< 32) on this CPU at the default priority.
    pub fn enable_private(intid: u32) {
        if intid >= 32 {
            return;
        }
        let rd = redistributor(crate::cpu::index());
        let prio_reg = rd + GICR_IPRIORITYR + u64::from(intid & !3);
        let shift = (intid & 3) * 8;
        let prio = mmio_read(prio_reg) & !(0xff << shift);
        mmio_write(prio_reg, prio | u32::from(DEFAULT_PRIORITY) << shift);
        mmio_write(rd + GICR_ISENABLER0, 1 << intid);
    }

    /// Enables SPI `intid` (32 and up), level-sensitive, in Group 1 at the
    /// default priority, routed to this CPU (IHI 0069 12.9: GICD_IGROUPR,
    /// GICD_IPRIORITYR, GICD_ICFGR, GICD_IROUTER, GICD_ISENABLER). Ignored
    /// for INTIDs the vGIC does not implement.
    pub fn enable_spi(intid: u32) {
        if !(32..32 + VGIC_NR_SPIS).contains(&intid) {
            return;
        }
        let word = u64::from(intid / 32) * 4;
        let bit = 1u32 << (intid % 32);
        let group = GICD_BASE + GICD_IGROUPR + word;
        mmio_write(group, mmio_read(group) | bit);
        let prio_reg = GICD_BASE + GICD_IPRIORITYR + u64::from(intid & !3);
        let shift = (intid & 3) * 8;
        let prio = mmio_read(prio_reg) & !(0xff << shift);
        mmio_write(prio_reg, prio | u32::from(DEFAULT_PRIORITY) << shift);
        // Int_config, bit 1 of each 2-bit field: 0 is level-sensitive.
        let cfg = GICD_BASE + GICD_ICFGR + u64::from(intid / 16) * 4;
        mmio_write(cfg, mmio_read(cfg) & !(0b10 << ((intid % 16) * 2)));
        // The affinity fields sit in IROUTER where MPIDR has them; routing
        // mode 0 (bit 31) names this one CPU.
        let mpidr: u64;
        // SAFETY: reading MPIDR_EL1 has no side effect.
        unsafe { asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
        let route = GICD_BASE + GICD_IROUTER + u64::from(intid) * 8;
        mmio_write(route, (mpidr & 0xff_ffff) as u32);
        mmio_write(route + 4, ((mpidr >> 32) & 0xff) as u32);
        mmio_write(GICD_BASE + GICD_ISENABLER + word, bit);
    }

    /// Disables SGI or PPI `intid` (< 32) on this CPU.
    pub fn disable_private(intid: u32) {
        if intid < 32 {
            let rd = redistributor(crate::cpu::index());
            mmio_write(rd + GICR_ICENABLER0, 1 << intid);
        }
    }

    /// Registers the handler for `intid` (shared by all CPUs). Ignored for
    /// INTIDs the vGIC does not implement.
    pub fn set_handler(intid: u32, handler: IrqHandler) {
        if let Some(slot) = HANDLERS.get(intid as usize) {
            slot.store(handler as *mut (), Ordering::Release);
        }
    }

    /// Sends SGI `intid` (0..=15).
    pub fn send_sgi(intid: u32, target: SgiTarget) {
        let value = sgi1r_value(intid, target);
        // SAFETY: writing ICC_SGI1R_EL1 only generates an SGI; the dsb makes
        // prior stores visible to the receiver first (IHI 0069 §12.11.12).
        unsafe {
            asm!("dsb ishst", "msr icc_sgi1r_el1, {v}", "isb", v = in(reg) value, options(nostack));
        }
    }

    fn acknowledge() -> u32 {
        let iar: u64;
        // SAFETY: reading ICC_IAR1_EL1 acknowledges the highest-priority
        // pending Group 1 interrupt, which the caller then completes.
        unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nostack)) };
        (iar & 0xff_ffff) as u32
    }

    fn end_of_interrupt(intid: u32) {
        // SAFETY: EOIR1 with an INTID acknowledged on this CPU drops its
        // priority and deactivates it (EOImode is 0).
        unsafe { asm!("msr icc_eoir1_el1, {}", in(reg) u64::from(intid), options(nostack)) };
    }

    /// Called from the IRQ vector: acknowledges, dispatches and completes
    /// every pending interrupt. An INTID without a handler is completed and
    /// otherwise ignored.
    pub(crate) fn handle_irq() {
        loop {
            let intid = acknowledge();
            if intid >= SPECIAL_INTID_FIRST {
                return;
            }
            let handler = HANDLERS
                .get(intid as usize)
                .map(|slot| slot.load(Ordering::Acquire))
                .unwrap_or(core::ptr::null_mut());
            if !handler.is_null() {
                // SAFETY: the slot only ever holds null or an `IrqHandler`
                // stored by `set_handler`.
                let handler: IrqHandler = unsafe { core::mem::transmute(handler) };
                handler(intid);
            }
            end_of_interrupt(intid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgi_to_one_cpu() {
        let t = SgiTarget::cpu(tessera_ipc::platform::vcpu_mpidr(3));
        assert_eq!(
            t,
            SgiTarget::List {
                aff3: 0,
                aff2: 0,
                aff1: 0,
                range: 0,
                targets: 1 << 3
            }
        );
        assert_eq!(sgi1r_value(1, t), 1 << 24 | 1 << 3);
    }

    #[test]
    fn sgi_range_and_affinity_fields() {
        let t = SgiTarget::cpu(0x07_0000_0000 | 0x05_0000 | 0x0600 | 17);
        assert_eq!(
            sgi1r_value(15, t),
            15 << 24 | 1 << 1 | 6 << 16 | 5 << 32 | 1 << 44 | 7 << 48
        );
    }

    #[test]
    fn broadcast_sets_irm_only() {
        assert_eq!(sgi1r_value(1, SgiTarget::AllButSelf), 1 << 40 | 1 << 24);
        assert_eq!(sgi1r_value(0x11, SgiTarget::AllButSelf), 1 << 40 | 1 << 24);
    }
}
