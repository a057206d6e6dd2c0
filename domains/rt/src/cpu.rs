//! CPU identity, bring-up of secondary CPUs, and interrupt masking.
//!
//! The one idea: a CPU's index is the PSCI `context_id` it was started with,
//! kept in TPIDR_EL1 by the entry code, and equals Aff0 of its MPIDR
//! (`platform::vcpu_mpidr`). Secondary CPUs run a per-CPU entry function
//! registered before CPU_ON; when it returns the CPU turns itself off.

use crate::{psci, MAX_CPUS};
use core::sync::atomic::{AtomicPtr, Ordering};
use tessera_ipc::platform::vcpu_mpidr;

/// MPIDR affinity fields (Aff3 at 39:32, Aff2..Aff0 at 23:0). PSCI target
/// arguments carry only these; bit 31 of the MPIDR register (RES1) is not
/// part of the affinity (Arm DEN0022 §5.1.4, Linux passes the same value).
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// A secondary CPU's work; receives the CPU index.
pub type CpuEntry = fn(cpu: usize);

static ENTRIES: [AtomicPtr<()>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

extern "C" {
    fn tessera_secondary_entry();
}

/// This CPU's index.
pub fn index() -> usize {
    let tpidr: u64;
    // SAFETY: reading TPIDR_EL1, which only the entry code writes.
    unsafe { core::arch::asm!("mrs {}, tpidr_el1", out(reg) tpidr, options(nomem, nostack)) };
    tpidr as usize
}

/// The PSCI target value (affinity fields of the MPIDR) of CPU `cpu`.
pub fn psci_target(cpu: usize) -> u64 {
    vcpu_mpidr(cpu as u32) & MPIDR_AFFINITY_MASK
}

/// The full MPIDR of CPU `cpu`, as used for SGI targeting.
pub fn mpidr(cpu: usize) -> u64 {
    vcpu_mpidr(cpu as u32)
}

/// The entry point to pass to PSCI CPU_ON (with context_id = CPU index).
pub fn secondary_entry_address() -> u64 {
    tessera_secondary_entry as *const () as u64
}

/// Registers what CPU `cpu` runs the next time it is powered on through
/// [`secondary_entry_address`] (by [`start`] or a raw `psci::cpu_on`).
pub fn set_entry(cpu: usize, entry: CpuEntry) {
    if let Some(slot) = ENTRIES.get(cpu) {
        slot.store(entry as *mut (), Ordering::Release);
    }
}

/// Registers `entry` for CPU `cpu` and powers it on. Returns the PSCI status
/// (`Status::AlreadyOn` if it is running; its registered entry is then
/// replaced but not re-run).
pub fn start(cpu: usize, entry: CpuEntry) -> i64 {
    if cpu >= MAX_CPUS {
        return tessera_ipc::psci::Status::InvalidParameters as i64;
    }
    set_entry(cpu, entry);
    // SAFETY: the entry is the runtime's own secondary entry, which sets up
    // a CPU from scratch, and the context id is the index it will use.
    unsafe { psci::cpu_on(psci_target(cpu), secondary_entry_address(), cpu as u64) }
}

pub(crate) fn run_secondary(cpu: usize) -> ! {
    let entry = ENTRIES
        .get(cpu)
        .map_or(core::ptr::null_mut(), |e| e.load(Ordering::Acquire));
    if !entry.is_null() {
        // SAFETY: `start` only stores `CpuEntry` values in this table.
        let entry: CpuEntry = unsafe { core::mem::transmute(entry) };
        entry(cpu);
    }
    psci::cpu_off();
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// Unmasks IRQs (PSTATE.I) on this CPU.
pub fn irq_enable() {
    // SAFETY: unmasking IRQs is sound once VBAR points at our vectors, which
    // the entry code guarantees.
    unsafe { core::arch::asm!("msr daifclr, #2", options(nostack)) };
}

/// Masks IRQs on this CPU.
pub fn irq_disable() {
    // SAFETY: masking IRQs only delays interrupt delivery.
    unsafe { core::arch::asm!("msr daifset, #2", options(nostack)) };
}

/// Masks IRQs and returns whether they were unmasked before.
pub fn irq_save() -> bool {
    let daif: u64;
    // SAFETY: reading DAIF and masking IRQs only delays interrupt delivery.
    unsafe { core::arch::asm!("mrs {}, daif", "msr daifset, #2", out(reg) daif, options(nostack)) };
    daif & (1 << 7) == 0
}

/// Unmasks IRQs again if `irq_save` found them unmasked.
pub fn irq_restore(was_enabled: bool) {
    if was_enabled {
        irq_enable();
    }
}

/// Waits for an interrupt (returns even with IRQs masked in PSTATE).
pub fn wfi() {
    aarch64_cpu::asm::wfi();
}

/// Sleeps until `done()` holds, where only an interrupt handler can make
/// it hold. The check and the WFI run with IRQs masked: checked unmasked,
/// an interrupt taken between the check and the WFI would leave the CPU
/// asleep with its wake-up already spent (a timer whose handler disables
/// it never fires again). A masked interrupt still ends the WFI, and is
/// taken as soon as IRQs are unmasked, before the next check.
pub fn wait_until(mut done: impl FnMut() -> bool) {
    let was_enabled = irq_save();
    while !done() {
        wfi();
        // SAFETY: an IRQ window, as `irq_enable` then `irq_disable`; the
        // ISB makes sure a pending interrupt is taken inside it.
        unsafe {
            core::arch::asm!(
                "msr daifclr, #2",
                "isb",
                "msr daifset, #2",
                options(nostack)
            )
        };
    }
    irq_restore(was_enabled);
}
