//! The virtual GICv3 of one domain: a pure register model, no hardware access.
//!
//! The one idea: this model owns the state of every virtual interrupt
//! (group, enable, pending, priority, routing), and a hardware list register
//! (ICH_LR<n>_EL2) is only a *loan*. When the kernel copies an interrupt into
//! an LR (`mark_in_lr`) the model clears its pending bit and marks the
//! interrupt "in flight", so it is never handed out twice; when the LR goes
//! invalid (`lr_retired`) the loan ends and anything that became pending in
//! the meantime is deliverable again. The guest's CPU interface (ICV_*) is
//! virtualised by hardware and is not modelled here.
//!
//! The model presents a GIC with a single Security state, as KVM does:
//! GICD_CTLR.DS reads as one, so IGROUPR<n> is writable and Group 0 and
//! Group 1 are enabled by GICD_CTLR.EnableGrp0/EnableGrp1, while IGRPMODR<n>
//! and NSACR are RAZ/WI (IHI 0069, GICD_IGRPMODR<n>, GICD_NSACR<n>).
//! Affinity routing is always on (ARE RAO/WI), so the GICD copies of the
//! SGI/PPI registers are RAZ/WI and the guest programs them through its
//! redistributor. Every interrupt resets to Group 1 so that a guest which
//! only sets EnableGrp1 works, as under KVM.
//!
//! Nothing here panics on guest input: vCPU indices, INTIDs and offsets are
//! checked and turned into `VgicError`, and all state is fixed-size.
#![forbid(unsafe_code)]

mod lr;
mod mmio;
#[cfg(test)]
mod tests;

pub use lr::{LrState, LR_EOI};

use crate::addr::Ipa;
use tessera_ipc::platform::{self, MAX_VCPUS_PER_DOMAIN, VGIC_NR_SPIS};

/// INTIDs 0..16 are SGIs.
pub const NR_SGIS: u32 = 16;
/// INTIDs 0..32 are private to a vCPU (SGIs and PPIs) and live in its
/// redistributor.
pub const NR_PRIVATE: u32 = 32;
/// One past the highest INTID the model implements.
pub const NR_INTIDS: u32 = NR_PRIVATE + VGIC_NR_SPIS;
/// Priority bits the model keeps: the top five, matching the minimum
/// ICH_VTR_EL2.PRIbits a virtual CPU interface offers, so what the guest
/// reads back from IPRIORITYR is what the hardware will honour.
pub const PRIORITY_MASK: u8 = 0xF8;

const NR_SPIS: usize = VGIC_NR_SPIS as usize;
/// SPIs are kept in banks of 32, one per IGROUPR/ISENABLER/... word.
const SPI_WORDS: usize = NR_SPIS / 32;

const _: () = assert!(VGIC_NR_SPIS > 0 && VGIC_NR_SPIS.is_multiple_of(32) && VGIC_NR_SPIS <= 988);
const _: () = assert!(MAX_VCPUS_PER_DOMAIN > 0 && MAX_VCPUS_PER_DOMAIN <= 16);

/// GICD_CTLR.EnableGrp0 (DS == 1 layout).
const CTLR_ENABLE_GRP0: u32 = 1 << 0;
/// GICD_CTLR.EnableGrp1 (DS == 1 layout; the same bit Linux calls EnableGrp1A).
const CTLR_ENABLE_GRP1: u32 = 1 << 1;

/// GICD_IROUTER<n>.Interrupt_Routing_Mode: 1 = any participating PE.
const IROUTER_IRM: u64 = 1 << 31;
/// GICD_IROUTER<n> bits the model stores: IRM and Aff2..Aff0. Aff3 is RES0
/// because GICD_TYPER.A3V is zero (every vCPU has Aff3 == 0).
const IROUTER_WRITABLE: u64 = IROUTER_IRM | 0x00FF_FFFF;

/// Why an access or call was refused. The kernel turns an MMIO error into
/// "read as zero / write ignored" (or a logged fault); nothing is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VgicError {
    /// The offset lies outside the frame.
    BadOffset,
    /// The access size is not 1, 2, 4 or 8, or is a width the register does
    /// not support (e.g. a byte access to GICD_CTLR).
    BadSize,
    /// The offset is not a multiple of the access size.
    Misaligned,
    /// The vCPU index is not below the domain's vCPU count.
    BadVcpu,
    /// The INTID is not implemented.
    BadIntid,
}

/// Which GIC frame an access hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The distributor (GICD), 64 KiB.
    Dist,
    /// The redistributor of `vcpu`: RD_base at offset 0, SGI_base at 0x10000.
    Redist {
        /// Index of the vCPU that owns this redistributor.
        vcpu: usize,
    },
}

/// The per-interrupt flags of 32 consecutive INTIDs, one bit each, laid out
/// exactly like the IGROUPR/ISENABLER/ISPENDR words that expose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bank {
    /// IGROUPR: 1 = Group 1.
    group1: u32,
    /// ISENABLER/ICENABLER.
    enabled: u32,
    /// Latched pending state: edges, ISPENDR writes, `inject`.
    latch: u32,
    /// Input line level, from `set_level`; makes level-sensitive interrupts
    /// pending for as long as it is high.
    level: u32,
    /// ICFGR Int_config[1]: 1 = edge-triggered.
    edge: u32,
    /// Active state set by ISACTIVER. The active state of an interrupt the
    /// guest acknowledged lives in its LR instead (`lr_active`).
    active: u32,
    /// Held by a list register.
    in_lr: u32,
    /// LR state last reported by the kernel (`mark_in_lr`/`lr_sync`), only
    /// used so ISPENDR/ISACTIVER reads show what the guest's LR holds.
    lr_pending: u32,
    lr_active: u32,
}

impl Bank {
    const fn reset(edge: u32) -> Self {
        Self {
            group1: u32::MAX,
            enabled: 0,
            latch: 0,
            level: 0,
            edge,
            active: 0,
            in_lr: 0,
            lr_pending: 0,
            lr_active: 0,
        }
    }

    /// The model's own pending state: a level-sensitive interrupt is pending
    /// while its line is asserted or while it is latched (IHI 0069,
    /// "Interrupt handling state machine").
    fn pending(&self) -> u32 {
        self.latch | (self.level & !self.edge)
    }

    /// Pending as the guest sees it through ISPENDR: includes interrupts
    /// whose LR is still pending.
    fn pending_view(&self) -> u32 {
        self.pending() | (self.in_lr & self.lr_pending)
    }

    /// Active as the guest sees it through ISACTIVER.
    fn active_view(&self) -> u32 {
        self.active | (self.in_lr & self.lr_active)
    }

    /// Interrupts that may go into a list register now. An active interrupt
    /// is not forwarded again until it is deactivated, and one that is
    /// already in an LR must not be put in a second one (IHI 0069,
    /// ICH_LR<n>_EL2: two LRs with the same vINTID are UNPREDICTABLE).
    fn deliverable(&self, ctlr: u32) -> u32 {
        let mut groups = 0;
        if ctlr & CTLR_ENABLE_GRP1 != 0 {
            groups |= self.group1;
        }
        if ctlr & CTLR_ENABLE_GRP0 != 0 {
            groups |= !self.group1;
        }
        self.pending() & self.enabled & groups & !self.in_lr & !self.active
    }
}

/// State private to one vCPU: its SGIs and PPIs and its redistributor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VcpuState {
    private: Bank,
    priority: [u8; NR_PRIVATE as usize],
    /// GICR_WAKER.ProcessorSleep; ChildrenAsleep always follows it at once.
    processor_sleep: bool,
}

impl VcpuState {
    /// SGIs are always edge-triggered (GICR_ICFGR0 reads 0xAAAA_AAAA); PPIs
    /// reset to level-sensitive.
    const RESET: Self = Self {
        private: Bank::reset(0x0000_FFFF),
        priority: [0; NR_PRIVATE as usize],
        processor_sleep: true,
    };
}

/// Where an INTID's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BankSel {
    /// SGIs/PPIs of a vCPU.
    Private(usize),
    /// SPI bank `n` (INTIDs 32 + 32n ..).
    Spi(usize),
}

/// Per vCPU: bit `i` of word 0 is private INTID `i`, bit `i` of word `1 + n`
/// is SPI `32 + 32n + i` routed to that vCPU.
type DeliverableSnapshot = [[u32; 1 + SPI_WORDS]; MAX_VCPUS_PER_DOMAIN];

/// The virtual GICv3 of one domain: distributor, one redistributor per vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vgic {
    nr_vcpus: usize,
    /// GICD_CTLR group enables; the other bits are fixed.
    ctlr: u32,
    vcpus: [VcpuState; MAX_VCPUS_PER_DOMAIN],
    spis: [Bank; SPI_WORDS],
    spi_priority: [u8; NR_SPIS],
    /// GICD_IROUTER<n>, masked to `IROUTER_WRITABLE`.
    spi_route: [u64; NR_SPIS],
}

impl Vgic {
    /// A GIC in its reset state for `nr_vcpus` vCPUs, clamped to
    /// 1..=MAX_VCPUS_PER_DOMAIN. Use `try_new` to reject a bad count instead.
    pub const fn new(nr_vcpus: usize) -> Self {
        let nr_vcpus = if nr_vcpus == 0 {
            1
        } else if nr_vcpus > MAX_VCPUS_PER_DOMAIN {
            MAX_VCPUS_PER_DOMAIN
        } else {
            nr_vcpus
        };
        Self {
            nr_vcpus,
            ctlr: 0,
            vcpus: [VcpuState::RESET; MAX_VCPUS_PER_DOMAIN],
            spis: [Bank::reset(0); SPI_WORDS],
            spi_priority: [0; NR_SPIS],
            spi_route: [0; NR_SPIS],
        }
    }

    /// Like `new`, but a count of zero or above MAX_VCPUS_PER_DOMAIN is an
    /// error rather than clamped.
    pub const fn try_new(nr_vcpus: usize) -> Result<Self, VgicError> {
        if nr_vcpus == 0 || nr_vcpus > MAX_VCPUS_PER_DOMAIN {
            return Err(VgicError::BadVcpu);
        }
        Ok(Self::new(nr_vcpus))
    }

    /// The number of vCPUs (and redistributors) this GIC serves.
    pub const fn nr_vcpus(&self) -> usize {
        self.nr_vcpus
    }

    /// Decode an IPA inside the GIC frames: `Some((frame, offset))`, or
    /// `None` if it is not a GIC address. Only the redistributors of
    /// existing vCPUs count; the ones beyond are not GIC addresses.
    pub fn decode(&self, ipa: u64) -> Option<(Frame, u64)> {
        Self::decode_for(self.nr_vcpus, ipa)
    }

    /// `decode` for a GIC of `nr_vcpus` vCPUs, without the model: the frames
    /// depend on nothing else, so a trap can tell a GIC access from another
    /// device's before it takes the lock that guards the model.
    pub fn decode_for(nr_vcpus: usize, ipa: u64) -> Option<(Frame, u64)> {
        if let Some(off) = ipa.checked_sub(platform::GICD_BASE) {
            if off < platform::GICD_SIZE {
                return Some((Frame::Dist, off));
            }
        }
        let off = ipa.checked_sub(platform::GICR_BASE)?;
        let vcpu = usize::try_from(off / platform::GICR_STRIDE).ok()?;
        if vcpu >= nr_vcpus {
            return None;
        }
        Some((Frame::Redist { vcpu }, off % platform::GICR_STRIDE))
    }

    /// `decode` for a typed guest address.
    pub fn decode_ipa(&self, ipa: Ipa) -> Option<(Frame, u64)> {
        self.decode(ipa.raw())
    }

    /// Make `intid` pending, as an edge would. For SGIs/PPIs (0..32) on
    /// `vcpu`; for SPIs `vcpu` is ignored and GICD_IROUTER picks the target.
    /// Returns the target vCPU if the interrupt is now deliverable (enabled,
    /// group enabled, not active, not already in an LR), else `None`. A
    /// trigger while the interrupt is in an LR is remembered and delivered
    /// after `lr_retired`.
    pub fn inject(&mut self, vcpu: usize, intid: u32) -> Option<usize> {
        let (sel, bit) = self.locate(vcpu, intid).ok()?;
        let bank = self.bank_mut(sel)?;
        bank.latch |= bit;
        self.deliverable_target(sel, intid, bit)
    }

    /// Drive the input line of `intid` (for a device or the virtual timer
    /// whose output is a level). A level-sensitive interrupt is pending while
    /// the line is high; an edge-triggered one latches on a rising edge.
    /// Returns the target vCPU if the interrupt is now deliverable. SGIs have
    /// no line and are refused (`None`, no change).
    pub fn set_level(&mut self, vcpu: usize, intid: u32, level: bool) -> Option<usize> {
        if intid < NR_SGIS {
            return None;
        }
        let (sel, bit) = self.locate(vcpu, intid).ok()?;
        let bank = self.bank_mut(sel)?;
        if level {
            if bank.edge & bit != 0 && bank.level & bit == 0 {
                bank.latch |= bit;
            }
            bank.level |= bit;
        } else {
            bank.level &= !bit;
        }
        self.deliverable_target(sel, intid, bit)
    }

    /// Emulate a write of `value` to ICC_SGI1R_EL1 by vCPU `sender`
    /// (IHI 0069, ICC_SGI1R_EL1: TargetList[15:0], Aff1[23:16], INTID[27:24],
    /// Aff2[39:32], IRM[40], RS[47:44], Aff3[55:48]). IRM = 1 targets every
    /// vCPU but the sender. An SGI is only made pending on a target where it
    /// is configured as Group 1 (with DS == 1 a Group 1 request does not set
    /// a Group 0 SGI). Returns the mask of target vCPUs made pending; a bad
    /// `sender` sends nothing.
    pub fn write_sgi1r(&mut self, sender: usize, value: u64) -> u32 {
        self.send_sgi(sender, value, true)
    }

    /// Emulate a write to ICC_SGI0R_EL1: as `write_sgi1r`, for Group 0 SGIs.
    pub fn write_sgi0r(&mut self, sender: usize, value: u64) -> u32 {
        self.send_sgi(sender, value, false)
    }

    fn send_sgi(&mut self, sender: usize, value: u64, group1: bool) -> u32 {
        if sender >= self.nr_vcpus {
            return 0;
        }
        let intid = ((value >> 24) & 0xF) as u32;
        let bit = 1u32 << intid;
        let broadcast = value & (1 << 40) != 0;
        let target_list = value & 0xFFFF;
        let range_selector = (value >> 44) & 0xF;
        let cluster = ((value >> 48) & 0xFF) << 24
            | ((value >> 32) & 0xFF) << 16
            | ((value >> 16) & 0xFF) << 8;
        let mut made_pending = 0;
        for (n, vcpu) in self.vcpus.iter_mut().enumerate().take(self.nr_vcpus) {
            let targeted = if broadcast {
                n != sender
            } else {
                let aff = u64::from(affinity_of(n));
                let aff0 = aff & 0xFF;
                aff & !0xFF == cluster
                    && aff0 >> 4 == range_selector
                    && target_list & (1 << (aff0 & 0xF)) != 0
            };
            let in_group = (vcpu.private.group1 & bit != 0) == group1;
            if targeted && in_group {
                vcpu.private.latch |= bit;
                made_pending |= 1 << n;
            }
        }
        made_pending
    }

    /// Highest-priority (lowest value) deliverable interrupt for `vcpu` that
    /// is not already in a list register, as `(intid, priority)`. Ties go to
    /// the lowest INTID, so the choice is deterministic.
    pub fn next_deliverable(&self, vcpu: usize) -> Option<(u32, u8)> {
        let state = self.vcpu(vcpu)?;
        // The common answer, "nothing", without looking at priorities or
        // routes.
        let private = state.private.deliverable(self.ctlr);
        if private == 0
            && self
                .spis
                .iter()
                .all(|bank| bank.deliverable(self.ctlr) == 0)
        {
            return None;
        }
        let mut best: Option<(u32, u8)> = None;
        let mut consider = |intid: u32, prio: u8| {
            if best.is_none_or(|(_, p)| prio < p) {
                best = Some((intid, prio));
            }
        };
        let mut bits = private;
        while bits != 0 {
            let i = bits.trailing_zeros();
            bits &= bits - 1;
            if let Some(&prio) = state.priority.get(i as usize) {
                consider(i, prio);
            }
        }
        for (word, bank) in self.spis.iter().enumerate() {
            let mut bits = bank.deliverable(self.ctlr);
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let spi = word * 32 + i;
                if self.spi_target(spi) != Some(vcpu) {
                    continue;
                }
                if let Some(&prio) = self.spi_priority.get(spi) {
                    // spi < NR_SPIS <= 988, so the INTID fits a u32.
                    consider(NR_PRIVATE + spi as u32, prio);
                }
            }
        }
        best
    }

    /// `next_deliverable`, packed as the ICH_LR<n>_EL2 value to load
    /// (pending, HW = 0, the interrupt's own group and priority).
    pub fn next_lr_value(&self, vcpu: usize) -> Option<(u32, u64)> {
        let (intid, prio) = self.next_deliverable(vcpu)?;
        let group1 = self.is_group1(vcpu, intid);
        Some((intid, lr::lr_value_with_group(intid, prio, group1)))
    }

    /// Whether `intid` (as seen from `vcpu`) is configured as Group 1.
    /// Unknown INTIDs report Group 1.
    pub fn is_group1(&self, vcpu: usize, intid: u32) -> bool {
        match self.locate(vcpu, intid) {
            Ok((sel, bit)) => self.bank(sel).is_none_or(|b| b.group1 & bit != 0),
            Err(_) => true,
        }
    }

    /// Whether `vcpu` has an interrupt to take; used to wake it from WFI.
    pub fn has_deliverable(&self, vcpu: usize) -> bool {
        self.next_deliverable(vcpu).is_some()
    }

    /// The kernel has put `intid` into a list register of `vcpu` in the
    /// pending state: clear the model's latched pending bit and remember the
    /// interrupt is in flight. Invalid arguments are ignored.
    pub fn mark_in_lr(&mut self, vcpu: usize, intid: u32) {
        if let Some((bank, bit)) = self.bank_for_mut(vcpu, intid) {
            bank.latch &= !bit;
            bank.in_lr |= bit;
            bank.lr_pending |= bit;
            bank.lr_active &= !bit;
        }
    }

    /// The list register holding `intid` became invalid (the guest EOI'd or
    /// deactivated it): forget it. If the interrupt was triggered again while
    /// in flight (or its level is still high) it is deliverable again.
    /// Invalid arguments are ignored.
    pub fn lr_retired(&mut self, vcpu: usize, intid: u32) {
        if let Some((bank, bit)) = self.bank_for_mut(vcpu, intid) {
            bank.in_lr &= !bit;
            bank.lr_pending &= !bit;
            bank.lr_active &= !bit;
        }
    }

    /// `intid`, held by a list register of `vcpu` whose value is `lr`, may
    /// have been triggered again since it went in (the register is read
    /// through `read_lr`, only if so) (`inject` latches such a
    /// trigger, since one vINTID must never be in two LRs). Fold that trigger
    /// into the register: an active one becomes active and pending, so the
    /// hardware delivers it again as soon as the guest deactivates it, with
    /// no exit. Left latched in the model, it would wait for the guest's next
    /// trap, and a guest that does not trap (a busy loop whose only wake-up
    /// is this very timer tick) would never see it. A trigger that finds the
    /// register still pending merges with it, as on hardware.
    ///
    /// Returns the value to write back when it changes. Only latched
    /// triggers fold; a level-sensitive line that stays high is resampled
    /// when the register retires. Invalid arguments change nothing.
    pub fn fold_retrigger(
        &mut self,
        vcpu: usize,
        intid: u32,
        read_lr: impl FnOnce() -> u64,
    ) -> Option<u64> {
        let (bank, bit) = self.bank_for_mut(vcpu, intid)?;
        if bank.latch & bank.in_lr & bit == 0 {
            return None;
        }
        // Read the register only now: the common case has no trigger.
        let lr = read_lr();
        let (held, state) = Self::lr_decode(lr);
        if held != intid {
            return None;
        }
        match state {
            // The register retired under us: the trigger stays latched, and
            // `lr_retired` makes it deliverable.
            LrState::Invalid => None,
            LrState::Pending | LrState::PendingActive => {
                bank.latch &= !bit;
                None
            }
            LrState::Active => {
                bank.latch &= !bit;
                bank.lr_pending |= bit;
                Some(lr::with_state(lr, LrState::PendingActive))
            }
        }
    }

    /// Record the state the kernel read back from the list register holding
    /// `intid` (on exit from the guest), so that ISPENDR/ISACTIVER reads show
    /// it. `LrState::Invalid` is the same as `lr_retired`.
    pub fn lr_sync(&mut self, vcpu: usize, intid: u32, state: LrState) {
        let (pending, active) = match state {
            LrState::Invalid => return self.lr_retired(vcpu, intid),
            LrState::Pending => (true, false),
            LrState::Active => (false, true),
            LrState::PendingActive => (true, true),
        };
        if let Some((bank, bit)) = self.bank_for_mut(vcpu, intid) {
            bank.in_lr |= bit;
            bank.lr_pending = if pending {
                bank.lr_pending | bit
            } else {
                bank.lr_pending & !bit
            };
            bank.lr_active = if active {
                bank.lr_active | bit
            } else {
                bank.lr_active & !bit
            };
        }
    }

    // ---- internals ----------------------------------------------------

    fn vcpu(&self, vcpu: usize) -> Option<&VcpuState> {
        if vcpu < self.nr_vcpus {
            self.vcpus.get(vcpu)
        } else {
            None
        }
    }

    fn vcpu_mut(&mut self, vcpu: usize) -> Option<&mut VcpuState> {
        if vcpu < self.nr_vcpus {
            self.vcpus.get_mut(vcpu)
        } else {
            None
        }
    }

    /// The bank and bit of `intid`. `vcpu` only matters for private INTIDs.
    fn locate(&self, vcpu: usize, intid: u32) -> Result<(BankSel, u32), VgicError> {
        let bit = 1u32 << (intid % 32);
        if intid < NR_PRIVATE {
            if vcpu >= self.nr_vcpus {
                return Err(VgicError::BadVcpu);
            }
            Ok((BankSel::Private(vcpu), bit))
        } else if intid < NR_INTIDS {
            Ok((BankSel::Spi(((intid - NR_PRIVATE) / 32) as usize), bit))
        } else {
            Err(VgicError::BadIntid)
        }
    }

    fn bank(&self, sel: BankSel) -> Option<&Bank> {
        match sel {
            BankSel::Private(v) => self.vcpu(v).map(|s| &s.private),
            BankSel::Spi(w) => self.spis.get(w),
        }
    }

    fn bank_mut(&mut self, sel: BankSel) -> Option<&mut Bank> {
        match sel {
            BankSel::Private(v) => self.vcpu_mut(v).map(|s| &mut s.private),
            BankSel::Spi(w) => self.spis.get_mut(w),
        }
    }

    fn bank_for_mut(&mut self, vcpu: usize, intid: u32) -> Option<(&mut Bank, u32)> {
        let (sel, bit) = self.locate(vcpu, intid).ok()?;
        Some((self.bank_mut(sel)?, bit))
    }

    /// The vCPU that would receive `intid` right now, if it is deliverable.
    fn deliverable_target(&self, sel: BankSel, intid: u32, bit: u32) -> Option<usize> {
        let bank = self.bank(sel)?;
        if bank.deliverable(self.ctlr) & bit == 0 {
            return None;
        }
        match sel {
            BankSel::Private(v) => Some(v),
            BankSel::Spi(_) => self.spi_target(intid.checked_sub(NR_PRIVATE)? as usize),
        }
    }

    /// The vCPU SPI number `spi` (INTID 32 + spi) is routed to. With IRM = 1
    /// the GIC may pick any participating PE; the model picks the lowest
    /// vCPU whose redistributor is awake (GICR_WAKER.ProcessorSleep == 0),
    /// or vCPU 0. With IRM = 0 a route naming no vCPU delivers nowhere.
    fn spi_target(&self, spi: usize) -> Option<usize> {
        let route = *self.spi_route.get(spi)?;
        if route & IROUTER_IRM != 0 {
            let awake = self
                .vcpus
                .iter()
                .take(self.nr_vcpus)
                .position(|v| !v.processor_sleep);
            return Some(awake.unwrap_or(0));
        }
        let aff = (((route >> 32) & 0xFF) << 24 | (route & 0x00FF_FFFF)) as u32;
        (0..self.nr_vcpus).find(|&n| affinity_of(n) == aff)
    }

    /// Everything deliverable, per vCPU; diffed around an MMIO write to find
    /// the vCPUs to kick.
    fn deliverable_snapshot(&self) -> DeliverableSnapshot {
        let mut snap = [[0u32; 1 + SPI_WORDS]; MAX_VCPUS_PER_DOMAIN];
        for (n, row) in snap.iter_mut().enumerate().take(self.nr_vcpus) {
            if let (Some(word), Some(state)) = (row.first_mut(), self.vcpus.get(n)) {
                *word = state.private.deliverable(self.ctlr);
            }
        }
        for (w, bank) in self.spis.iter().enumerate() {
            let mut bits = bank.deliverable(self.ctlr);
            while bits != 0 {
                let i = bits.trailing_zeros();
                bits &= bits - 1;
                let Some(target) = self.spi_target(w * 32 + i as usize) else {
                    continue;
                };
                if let Some(word) = snap.get_mut(target).and_then(|row| row.get_mut(1 + w)) {
                    *word |= 1 << i;
                }
            }
        }
        snap
    }
}

/// vCPUs that gained a deliverable interrupt between two snapshots.
fn newly_deliverable(before: &DeliverableSnapshot, after: &DeliverableSnapshot) -> u32 {
    let mut mask = 0;
    for (n, (b, a)) in before.iter().zip(after.iter()).enumerate() {
        if a.iter().zip(b.iter()).any(|(a, b)| a & !b != 0) {
            mask |= 1 << n;
        }
    }
    mask
}

/// The affinity of vCPU `n` as GICR_TYPER.Affinity_Value and GICD_IROUTER
/// compare it: Aff3 << 24 | Aff2 << 16 | Aff1 << 8 | Aff0.
fn affinity_of(n: usize) -> u32 {
    // n < MAX_VCPUS_PER_DOMAIN <= 16, so the cast is lossless.
    let mpidr = platform::vcpu_mpidr(n as u32);
    (((mpidr >> 32) & 0xFF) << 24 | (mpidr & 0x00FF_FFFF)) as u32
}
