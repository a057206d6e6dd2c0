//! The aarch64 EL2 backend: boot, exception vectors, the EL2 MMU, the
//! physical GICv3 and timer, the console UART and firmware PSCI.
//!
//! Each helper that touches a system register or MMIO is small and names the
//! Arm ARM or GIC section it follows; the hypervisor logic lives in `hv/`.

pub mod boot;
pub mod gic;
pub mod guest;
pub mod mmu;
pub mod uart;

/// Read a system register by name.
macro_rules! read_sysreg {
    ($reg:expr) => {{
        let v: u64;
        // SAFETY: reading a system register has no memory effects; every
        // register named at a call site is accessible at EL2.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}
/// Write a system register by name.
macro_rules! write_sysreg {
    ($reg:expr, $val:expr) => {{
        let v: u64 = $val;
        // SAFETY: call sites write EL2-owned or saved/restored guest state;
        // each documents why the value is valid for that register.
        unsafe { core::arch::asm!(concat!("msr ", $reg, ", {}"), in(reg) v, options(nostack, preserves_flags)) };
    }};
}
pub(crate) use read_sysreg;
pub(crate) use write_sysreg;

/// Instruction synchronization barrier (Arm ARM B2.3.12).
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier has no operands and cannot fault.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
}

/// Full-system data synchronization barrier.
#[inline(always)]
pub fn dsb_sy() {
    // SAFETY: a barrier has no operands and cannot fault.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Inner-shareable data synchronization barrier.
#[inline(always)]
pub fn dsb_ish() {
    // SAFETY: a barrier has no operands and cannot fault.
    unsafe { core::arch::asm!("dsb ish", options(nostack, preserves_flags)) };
}

/// Wait for an interrupt (wakes on a pending IRQ even while masked at EL2).
#[inline(always)]
pub fn wfi() {
    // SAFETY: WFI only suspends the PE until an event.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack, preserves_flags)) };
}

/// This pCPU's MPIDR affinity fields (Aff3..Aff0).
pub fn mpidr() -> u64 {
    read_sysreg!("mpidr_el1") & 0xff_00ff_ffff
}

/// The physical counter.
pub fn counter() -> u64 {
    isb();
    read_sysreg!("cntpct_el0")
}

/// Counter frequency in Hz.
pub fn counter_freq() -> u64 {
    read_sysreg!("cntfrq_el0")
}

/// Call firmware PSCI over SMC or HVC (SMCCC, Arm DEN0028).
pub fn firmware_call(smc: bool, fid: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let mut x0 = fid;
    if smc {
        // SAFETY: SMCCC calls clobber only x0..x17 per the SMCCC 1.1 rules we declare.
        unsafe {
            core::arch::asm!("smc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _,
                out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _)
        };
    } else {
        // SAFETY: as above, over HVC.
        unsafe {
            core::arch::asm!("hvc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _,
                out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _)
        };
    }
    x0
}

/// Stop this pCPU for good.
pub fn halt() -> ! {
    loop {
        wfi();
    }
}
