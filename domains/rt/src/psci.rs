//! PSCI 1.1 calls over the SMCCC `hvc #0` conduit (Arm DEN0022).
//!
//! The one idea: the conduit is `hvc` both under Tessera and natively on
//! QEMU `virt` without EL2 (its DTB says `method = "hvc"`), so one
//! implementation serves both modes. Results are PSCI status values as `i64`
//! (compare with `tessera_ipc::psci::Status as i64`).

use core::arch::asm;
use tessera_ipc::hypercall::HVC_IMM_SMCCC;
use tessera_ipc::psci::Function;

/// A raw SMCCC call with up to three arguments. x4..x17 are treated as
/// clobbered, as SMCCC 1.0 allows.
///
/// # Safety
/// The call must not start code that breaks this program's invariants (CPU_ON
/// runs the given entry point on another CPU).
pub unsafe fn smccc(function: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret;
    // SAFETY: the caller vouches for the function's effects; the hvc itself
    // only traps to the hypervisor (or QEMU's PSCI) and back.
    unsafe {
        asm!(
            "hvc #{imm}",
            imm = const HVC_IMM_SMCCC,
            inout("x0") function => ret,
            inout("x1") a1 => _,
            inout("x2") a2 => _,
            inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    ret
}

fn call(function: Function, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: every function routed through here only queries state or acts
    // on the calling CPU or the whole system; CPU_ON goes through `cpu_on`.
    unsafe { smccc(function as u64, a1, a2, a3) as i64 }
}

/// PSCI_VERSION: major in bits 31:16, minor in 15:0.
pub fn version() -> u64 {
    call(Function::Version, 0, 0, 0) as u64
}

/// PSCI_FEATURES for a raw function id (so unimplemented ids can be asked).
pub fn features(function_id: u64) -> i64 {
    call(Function::Features, function_id, 0, 0)
}

/// MIGRATE_INFO_TYPE.
pub fn migrate_info_type() -> i64 {
    call(Function::MigrateInfoType, 0, 0, 0)
}

/// AFFINITY_INFO at level 0 for the CPU with PSCI target value `target`.
pub fn affinity_info(target: u64) -> i64 {
    call(Function::AffinityInfo64, target, 0, 0)
}

/// CPU_ON (64-bit).
///
/// # Safety
/// `entry` must be code that can start a CPU from reset state with
/// `context_id` in x0 without breaking this program's invariants (the
/// runtime's `cpu::secondary_entry_address()`), or an address the callee is
/// expected to refuse.
pub unsafe fn cpu_on(target: u64, entry: u64, context_id: u64) -> i64 {
    // SAFETY: the caller vouches for `entry`.
    unsafe { smccc(Function::CpuOn64 as u64, target, entry, context_id) as i64 }
}

/// CPU_OFF; returns only on failure, with the status.
pub fn cpu_off() -> i64 {
    call(Function::CpuOff, 0, 0, 0)
}

/// SYSTEM_OFF; if it returns, the CPU is parked.
pub fn system_off() -> ! {
    call(Function::SystemOff, 0, 0, 0);
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// SYSTEM_RESET; if it returns, the CPU is parked.
pub fn system_reset() -> ! {
    call(Function::SystemReset, 0, 0, 0);
    loop {
        aarch64_cpu::asm::wfi();
    }
}
