//! Guest (EL1) state: the vCPU frame, and moving EL1 system registers,
//! FP/SIMD, the virtual timer and the virtual GIC interface in and out of
//! the hardware on a world switch; plus the EL2 controls that confine a
//! guest (HCR_EL2, VTCR_EL2, CPTR_EL2, CNTHCTL_EL2).

use super::gic::{self, NR_LRS};
use super::{isb, read_sysreg, write_sysreg};

/// A vCPU's complete state. The first 31 words are x0..x30 at the offsets
/// the trap entry code in `boot.rs` uses; do not reorder.
#[repr(C, align(16))]
pub struct VcpuFrame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub el1: El1State,
    pub fp: FpState,
    pub timer: TimerState,
    pub vgic: VgicCpuState,
    /// This vCPU's global index and its pCPU, fixed at build time, so the
    /// trap path finds its bookkeeping without searching.
    pub id: u32,
    pub pcpu: u32,
}
const _: () = assert!(core::mem::offset_of!(VcpuFrame, x) == 0);
const _: () = assert!(core::mem::offset_of!(VcpuFrame, elr) == 248);

/// EL1 system registers a guest owns.
#[repr(C)]
#[derive(Default)]
pub struct El1State {
    pub sctlr: u64,
    pub ttbr0: u64,
    pub ttbr1: u64,
    pub tcr: u64,
    pub mair: u64,
    pub amair: u64,
    pub vbar: u64,
    pub contextidr: u64,
    pub tpidr_el1: u64,
    pub tpidr_el0: u64,
    pub tpidrro_el0: u64,
    pub sp_el0: u64,
    pub sp_el1: u64,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    pub esr_el1: u64,
    pub far_el1: u64,
    pub afsr0: u64,
    pub afsr1: u64,
    pub par: u64,
    pub cpacr: u64,
    pub cntkctl: u64,
    pub csselr: u64,
    pub mdscr: u64,
    pub vmpidr: u64,
}

/// FP/SIMD registers.
#[repr(C, align(16))]
pub struct FpState {
    pub q: [u128; 32],
    pub fpsr: u64,
    pub fpcr: u64,
}

/// The virtual timer (CNTV_*), saved while the vCPU is not on a pCPU.
#[repr(C)]
#[derive(Default)]
pub struct TimerState {
    pub ctl: u64,
    pub cval: u64,
}

/// The virtual CPU interface state of the GIC.
#[repr(C)]
#[derive(Default)]
pub struct VgicCpuState {
    pub lr: [u64; NR_LRS],
    pub vmcr: u64,
    pub ap0r0: u64,
    pub ap1r0: u64,
}

/// SCTLR_EL1 at reset: RES1 bits, MMU and caches off.
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;
/// SPSR for a guest entering at EL1h with DAIF masked.
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

impl VcpuFrame {
    /// A powered-off vCPU.
    pub const fn new() -> Self {
        Self {
            x: [0; 31],
            elr: 0,
            spsr: 0,
            el1: El1State {
                sctlr: SCTLR_EL1_RESET,
                ttbr0: 0,
                ttbr1: 0,
                tcr: 0,
                mair: 0,
                amair: 0,
                vbar: 0,
                contextidr: 0,
                tpidr_el1: 0,
                tpidr_el0: 0,
                tpidrro_el0: 0,
                sp_el0: 0,
                sp_el1: 0,
                elr_el1: 0,
                spsr_el1: 0,
                esr_el1: 0,
                far_el1: 0,
                afsr0: 0,
                afsr1: 0,
                par: 0,
                cpacr: 0,
                cntkctl: 0,
                csselr: 0,
                mdscr: 0,
                vmpidr: 0,
            },
            fp: FpState {
                q: [0; 32],
                fpsr: 0,
                fpcr: 0,
            },
            timer: TimerState { ctl: 0, cval: 0 },
            vgic: VgicCpuState {
                lr: [0; NR_LRS],
                vmcr: 0,
                ap0r0: 0,
                ap1r0: 0,
            },
            id: 0,
            pcpu: 0,
        }
    }

    /// Architectural reset for PSCI CPU_ON / domain start (Arm DEN0022 6.4.3:
    /// MMU off, caches off, EL1h, x0 = context).
    pub fn reset(&mut self, entry: u64, x0: u64, mpidr: u64) {
        let (id, pcpu) = (self.id, self.pcpu);
        *self = Self::new();
        self.id = id;
        self.pcpu = pcpu;
        self.x[0] = x0;
        self.elr = entry;
        self.spsr = SPSR_EL1H_MASKED;
        self.el1.vmpidr = mpidr;
    }
}

impl Default for VcpuFrame {
    fn default() -> Self {
        Self::new()
    }
}

/// Save the EL1 state, FP/SIMD and the virtual CPU interface of the vCPU
/// currently on this pCPU. `lrs_in_use` says whether any list register
/// holds one of its interrupts; if none does they are all empty already.
pub fn save(f: &mut VcpuFrame, lrs_in_use: bool) {
    f.elr = read_sysreg!("elr_el2");
    f.spsr = read_sysreg!("spsr_el2");
    let e = &mut f.el1;
    e.sctlr = read_sysreg!("sctlr_el1");
    e.ttbr0 = read_sysreg!("ttbr0_el1");
    e.ttbr1 = read_sysreg!("ttbr1_el1");
    e.tcr = read_sysreg!("tcr_el1");
    e.mair = read_sysreg!("mair_el1");
    e.amair = read_sysreg!("amair_el1");
    e.vbar = read_sysreg!("vbar_el1");
    e.contextidr = read_sysreg!("contextidr_el1");
    e.tpidr_el1 = read_sysreg!("tpidr_el1");
    e.tpidr_el0 = read_sysreg!("tpidr_el0");
    e.tpidrro_el0 = read_sysreg!("tpidrro_el0");
    e.sp_el0 = read_sysreg!("sp_el0");
    e.sp_el1 = read_sysreg!("sp_el1");
    e.elr_el1 = read_sysreg!("elr_el1");
    e.spsr_el1 = read_sysreg!("spsr_el1");
    e.esr_el1 = read_sysreg!("esr_el1");
    e.far_el1 = read_sysreg!("far_el1");
    e.afsr0 = read_sysreg!("afsr0_el1");
    e.afsr1 = read_sysreg!("afsr1_el1");
    e.par = read_sysreg!("par_el1");
    e.cpacr = read_sysreg!("cpacr_el1");
    e.cntkctl = read_sysreg!("cntkctl_el1");
    e.csselr = read_sysreg!("csselr_el1");
    e.mdscr = read_sysreg!("mdscr_el1");
    save_timer(&mut f.timer);
    let g = &mut f.vgic;
    if lrs_in_use {
        for (n, lr) in g.lr.iter_mut().enumerate() {
            *lr = gic::read_lr(n);
            gic::write_lr(n, 0);
        }
    }
    g.vmcr = read_sysreg!("ich_vmcr_el2");
    g.ap0r0 = read_sysreg!("ich_ap0r0_el2");
    g.ap1r0 = read_sysreg!("ich_ap1r0_el2");
}

/// Load a vCPU's state into this pCPU (the inverse of [`save`]); the list
/// registers are empty on entry and only written if the vCPU has any in use.
pub fn restore(f: &VcpuFrame, lrs_in_use: bool) {
    write_sysreg!("elr_el2", f.elr);
    write_sysreg!("spsr_el2", f.spsr);
    let e = &f.el1;
    write_sysreg!("sctlr_el1", e.sctlr);
    write_sysreg!("ttbr0_el1", e.ttbr0);
    write_sysreg!("ttbr1_el1", e.ttbr1);
    write_sysreg!("tcr_el1", e.tcr);
    write_sysreg!("mair_el1", e.mair);
    write_sysreg!("amair_el1", e.amair);
    write_sysreg!("vbar_el1", e.vbar);
    write_sysreg!("contextidr_el1", e.contextidr);
    write_sysreg!("tpidr_el1", e.tpidr_el1);
    write_sysreg!("tpidr_el0", e.tpidr_el0);
    write_sysreg!("tpidrro_el0", e.tpidrro_el0);
    write_sysreg!("sp_el0", e.sp_el0);
    write_sysreg!("sp_el1", e.sp_el1);
    write_sysreg!("elr_el1", e.elr_el1);
    write_sysreg!("spsr_el1", e.spsr_el1);
    write_sysreg!("esr_el1", e.esr_el1);
    write_sysreg!("far_el1", e.far_el1);
    write_sysreg!("afsr0_el1", e.afsr0);
    write_sysreg!("afsr1_el1", e.afsr1);
    write_sysreg!("par_el1", e.par);
    write_sysreg!("cpacr_el1", e.cpacr);
    write_sysreg!("cntkctl_el1", e.cntkctl);
    write_sysreg!("csselr_el1", e.csselr);
    write_sysreg!("mdscr_el1", e.mdscr);
    write_sysreg!("vmpidr_el2", e.vmpidr);
    restore_timer(&f.timer);
    let g = &f.vgic;
    if lrs_in_use {
        for (n, &lr) in g.lr.iter().enumerate() {
            gic::write_lr(n, lr);
        }
    }
    write_sysreg!("ich_vmcr_el2", g.vmcr);
    write_sysreg!("ich_ap0r0_el2", g.ap0r0);
    write_sysreg!("ich_ap1r0_el2", g.ap1r0);
    isb();
}

/// Save the virtual timer and stop it, so it cannot fire for a vCPU that is
/// not running.
pub fn save_timer(t: &mut TimerState) {
    t.ctl = read_sysreg!("cntv_ctl_el0");
    t.cval = read_sysreg!("cntv_cval_el0");
    write_sysreg!("cntv_ctl_el0", 0);
}

/// Load a saved virtual timer.
pub fn restore_timer(t: &TimerState) {
    write_sysreg!("cntv_cval_el0", t.cval);
    write_sysreg!("cntv_ctl_el0", t.ctl);
}

/// Mask the running vCPU's virtual timer output (CNTV_CTL.IMASK) after its
/// interrupt has been taken, so the level-triggered line drops until the
/// guest reprograms the timer, as Xen does.
pub fn mask_vtimer() {
    write_sysreg!("cntv_ctl_el0", read_sysreg!("cntv_ctl_el0") | 0b10);
}

/// Save the FP/SIMD registers. FP state moves lazily: a vCPU's registers
/// stay in the hardware until another vCPU on the same pCPU uses FP.
pub fn save_fp(fp: &mut FpState) {
    let p = fp.q.as_mut_ptr();
    // SAFETY: `p` points at 32 aligned u128 slots; the stores write exactly
    // those 512 bytes. EL2 code is built soft-float, so the registers hold
    // the guest's values.
    unsafe {
        core::arch::asm!(
            ".arch_extension fp",
            "stp q0, q1, [{p}, #0]", "stp q2, q3, [{p}, #32]", "stp q4, q5, [{p}, #64]", "stp q6, q7, [{p}, #96]",
            "stp q8, q9, [{p}, #128]", "stp q10, q11, [{p}, #160]", "stp q12, q13, [{p}, #192]", "stp q14, q15, [{p}, #224]",
            "stp q16, q17, [{p}, #256]", "stp q18, q19, [{p}, #288]", "stp q20, q21, [{p}, #320]", "stp q22, q23, [{p}, #352]",
            "stp q24, q25, [{p}, #384]", "stp q26, q27, [{p}, #416]", "stp q28, q29, [{p}, #448]", "stp q30, q31, [{p}, #480]",
            p = in(reg) p, options(nostack),
        );
    }
    fp.fpsr = read_sysreg!("S3_3_C4_C4_1");
    fp.fpcr = read_sysreg!("S3_3_C4_C4_0");
}

/// Load the FP/SIMD registers.
pub fn restore_fp(fp: &FpState) {
    let p = fp.q.as_ptr();
    // SAFETY: `p` points at 32 aligned u128 slots, read exactly once each.
    unsafe {
        core::arch::asm!(
            ".arch_extension fp",
            "ldp q0, q1, [{p}, #0]", "ldp q2, q3, [{p}, #32]", "ldp q4, q5, [{p}, #64]", "ldp q6, q7, [{p}, #96]",
            "ldp q8, q9, [{p}, #128]", "ldp q10, q11, [{p}, #160]", "ldp q12, q13, [{p}, #192]", "ldp q14, q15, [{p}, #224]",
            "ldp q16, q17, [{p}, #256]", "ldp q18, q19, [{p}, #288]", "ldp q20, q21, [{p}, #320]", "ldp q22, q23, [{p}, #352]",
            "ldp q24, q25, [{p}, #384]", "ldp q26, q27, [{p}, #416]", "ldp q28, q29, [{p}, #448]", "ldp q30, q31, [{p}, #480]",
            p = in(reg) p, options(nostack, readonly),
        );
    }
    write_sysreg!("S3_3_C4_C4_1", fp.fpsr);
    write_sysreg!("S3_3_C4_C4_0", fp.fpcr);
}

const CPTR_EL2_BASE: u64 = 0x33ff;
const CPTR_TFP: u64 = 1 << 10;

/// Trap (or stop trapping) the running guest's FP/SIMD use (CPTR_EL2.TFP).
pub fn trap_fp(on: bool) {
    write_sysreg!(
        "cptr_el2",
        if on {
            CPTR_EL2_BASE | CPTR_TFP
        } else {
            CPTR_EL2_BASE
        }
    );
    isb();
}

/// Per-pCPU EL2 controls for running guests (Arm ARM D17.2.48 HCR_EL2).
pub fn init_el2_controls() {
    // VM | SWIO | FMO | IMO | AMO | FB | TWI | TSC | TID3 | RW. PAuth (API/APK)
    // and MTE (ATA) stay clear so their use traps or is undefined.
    let hcr = 1
        | (1 << 1)
        | (1 << 3)
        | (1 << 4)
        | (1 << 5)
        | (1 << 9)
        | (1 << 13)
        | (1 << 19)
        | (1 << 18)
        | (1 << 31);
    write_sysreg!("hcr_el2", hcr);
    // CPTR_EL2 (nVHE): RES1 bits 13:12 and 9:0, TZ (SVE) and TSM (SME)
    // trap; TFP starts set so the first FP use loads the vCPU's registers.
    write_sysreg!("cptr_el2", CPTR_EL2_BASE | CPTR_TFP);
    // Guests read the physical counter; the physical timer is the kernel's.
    write_sysreg!("cnthctl_el2", 1);
    write_sysreg!("cntvoff_el2", 0);
    // VTCR_EL2: T0SZ = 25 (39-bit IPA), SL0 = 1 (start at level 1), inner/
    // outer write-back, inner shareable, 4 KiB granule, PS capped at 40 bits.
    let vtcr = 25
        | (1 << 6)
        | (1 << 8)
        | (1 << 10)
        | (3 << 12)
        | (super::mmu::pa_size_code() << 16)
        | (1 << 31);
    write_sysreg!("vtcr_el2", vtcr);
    write_sysreg!("mdcr_el2", read_sysreg!("mdcr_el2") & 0x1f);
    isb();
}

/// Switch stage 2 to a domain's table (VTTBR_EL2: VMID in bits 55:48).
pub fn load_stage2(root: u64, vmid: u16) {
    write_sysreg!("vttbr_el2", root | (u64::from(vmid) << 48));
    isb();
}

/// Make stage-2 descriptors just written (an invalid entry made valid)
/// visible to the table walkers before the guest runs again: a DSB completes
/// the stores for the walker, and no TLB caches an invalid entry (Arm ARM,
/// "Translation table walks" and "TLB maintenance" in the VMSAv8-64 chapter).
pub fn stage2_publish() {
    super::dsb_ish();
    isb();
}

/// Invalidate what any PE's TLB holds for `ipa` in the stage 2 with root
/// `root` and VMID `vmid`, after its descriptor was cleared: by IPA for the
/// stage-2 entry, then all stage-1 entries of the VMID, which may hold the
/// combined translation (Arm ARM, VMSAv8-64 "TLB maintenance": the sequence
/// for changing a stage 2 entry).
/// TLBI acts on the VMID in VTTBR_EL2, so another domain's table is loaded
/// for the duration and the current one put back.
pub fn flush_stage2_page(root: u64, vmid: u16, ipa: u64) {
    with_vmid(root, vmid, || {
        // SAFETY: TLB maintenance only drops cached translations; the
        // barriers order it after the cleared descriptor and before
        // anything that relies on the page being unreachable.
        unsafe {
            core::arch::asm!(
                "dsb ishst",
                "tlbi ipas2e1is, {page}",
                "dsb ish",
                "tlbi vmalle1is",
                "dsb ish",
                "isb",
                page = in(reg) ipa >> 12,
                options(nostack),
            )
        };
    });
}

/// Invalidate everything any PE's TLB holds for VMID `vmid` (stage 1 and
/// stage 2, `TLBI VMALLS12E1IS`), after a whole range of the stage 2 with
/// root `root` was cleared, or before the VMID is given to a new domain
/// (Arm ARM, VMSAv8-64 "TLB maintenance"). As in [`flush_stage2_page`], the
/// VMID is loaded for the duration.
pub fn flush_stage2_all(root: u64, vmid: u16) {
    with_vmid(root, vmid, || {
        // SAFETY: TLB maintenance only drops cached translations; the
        // barriers order it after the cleared descriptors and before
        // anything that relies on them being gone.
        unsafe {
            core::arch::asm!(
                "dsb ishst",
                "tlbi vmalls12e1is",
                "dsb ish",
                "isb",
                options(nostack),
            )
        };
    });
}

/// Run `f` (TLB maintenance, which acts on the VMID in VTTBR_EL2) with the
/// stage 2 `root`/`vmid` loaded, then put the current one back.
fn with_vmid(root: u64, vmid: u16, f: impl FnOnce()) {
    let want = root | (u64::from(vmid) << 48);
    let current = read_sysreg!("vttbr_el2");
    if current != want {
        write_sysreg!("vttbr_el2", want);
        isb();
    }
    f();
    if current != want {
        write_sysreg!("vttbr_el2", current);
        isb();
    }
}

/// Translate a guest virtual address with the guest's own stage 1
/// (AT S1E1R; Arm ARM C5.5). Returns the IPA, or `None` if the guest's
/// tables do not map it. PAR_EL1 is guest state, so it is preserved.
pub fn guest_va_to_ipa(va: u64) -> Option<u64> {
    let saved = read_sysreg!("par_el1");
    // SAFETY: AT only performs a translation and writes PAR_EL1, which is
    // restored below.
    unsafe { core::arch::asm!("at s1e1r, {}", in(reg) va, options(nostack)) };
    isb();
    let par = read_sysreg!("par_el1");
    write_sysreg!("par_el1", saved);
    if par & 1 != 0 {
        return None;
    }
    Some((par & 0x0000_ffff_ffff_f000) | (va & 0xfff))
}

/// Make the running vCPU take an Undefined Instruction exception at EL1 on
/// its next entry (Arm ARM D1.10: the exception is taken to VBAR_EL1 +
/// 0x200 from EL1h, or + 0x400 from EL0).
pub fn inject_undef(frame: &mut VcpuFrame, esr_il: u64) {
    let pc = read_sysreg!("elr_el2");
    let spsr = read_sysreg!("spsr_el2");
    write_sysreg!("elr_el1", pc);
    write_sysreg!("spsr_el1", spsr);
    write_sysreg!("esr_el1", esr_il);
    let from_el0 = spsr & 0b1111 == 0;
    let offset = if from_el0 { 0x400 } else { 0x200 };
    let vbar = read_sysreg!("vbar_el1");
    write_sysreg!("elr_el2", vbar + offset);
    write_sysreg!("spsr_el2", SPSR_EL1H_MASKED);
    frame.elr = vbar + offset;
}
