//! The aarch64 EL2 backend: boot, exception vectors, the EL2 MMU, the
//! physical GICv3 and timer, the console UART and firmware PSCI.
//!
//! Each helper that touches a system register or MMIO is small and names the
//! Arm ARM or GIC section it follows; the hypervisor logic lives in `hv/`.

pub mod boot;
pub mod gic;
pub mod guest;
pub mod mmu;
pub mod sha256;
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

/// How the kernel's spin locks wait: YIELD (Arm ARM C6.2.401), the hint
/// that the PE is spinning. On hardware it is as cheap as the ISB that
/// `core::hint::spin_loop` emits; QEMU's single-threaded TCG (which
/// `-icount` uses) hands the host thread to the next vCPU on it, so a pCPU
/// waiting for a lock whose holder QEMU switched away from lets the holder
/// run instead of spinning out its whole time slice.
pub struct YieldRelax;

impl spin::RelaxStrategy for YieldRelax {
    #[inline(always)]
    fn relax() {
        // SAFETY: YIELD is a hint with no architectural effect.
        unsafe { core::arch::asm!("yield", options(nomem, nostack, preserves_flags)) };
    }
}

/// The kernel's spin lock (waits with [`YieldRelax`]).
pub type Lock<T> = spin::mutex::Mutex<T, YieldRelax>;
/// A held [`Lock`].
pub type LockGuard<'a, T> = spin::mutex::MutexGuard<'a, T>;

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

/// Cache line and DC ZVA block size the fast paths below assume; other
/// sizes take the plain loops.
const LINE: u64 = 64;

/// Whether DC ZVA zeroes exactly one 64-byte line here (DCZID_EL0: DZP,
/// bit 4, clear and BS, bits 3:0, = log2 of 16 words) and the smallest data
/// cache line (CTR_EL0.DminLine, bits 19:16) is 64 bytes too.
fn zva_is_one_line() -> bool {
    let dczid = read_sysreg!("dczid_el0");
    let ctr = read_sysreg!("ctr_el0");
    dczid & 0x1f == 4 && (ctr >> 16) & 0xf == 4
}

/// Clean `[start, start + len)` to the point of coherency (DC CVAC, Arm ARM
/// D7.4.10), so a guest that starts with its MMU and caches off reads what
/// the kernel wrote. Ends with a DSB.
///
/// # Safety
/// The range must be RAM, mapped at EL2.
pub unsafe fn clean_to_poc(start: u64, len: u64) {
    let mut a = start & !(LINE - 1);
    let end = start.saturating_add(len);
    // Four lines per iteration while at least four remain.
    while a.saturating_add(4 * LINE) <= end {
        // SAFETY: cache maintenance by VA of RAM the caller names; it has no
        // architectural effect beyond the caches.
        unsafe {
            core::arch::asm!(
                "dc cvac, {a}",
                "add {a}, {a}, #64",
                "dc cvac, {a}",
                "add {a}, {a}, #64",
                "dc cvac, {a}",
                "add {a}, {a}, #64",
                "dc cvac, {a}",
                "add {a}, {a}, #64",
                a = inout(reg) a,
                options(nostack, preserves_flags)
            )
        };
    }
    while a < end {
        // SAFETY: as above.
        unsafe { core::arch::asm!("dc cvac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += LINE;
    }
    dsb_sy();
}

/// Copy `src` to `dst` and clean the copy to the point of coherency: 64
/// bytes per loop of eight load/store-pair instructions (payloads are tens
/// of MiB; the generic `memcpy` moves 8 bytes per loop).
///
/// # Safety
/// `[dst, dst + src.len())` must be RAM the caller owns exclusively, mapped
/// at EL2 as Normal memory, and must not overlap `src`.
pub unsafe fn copy_to_poc(dst: u64, src: &[u8]) {
    let whole = src.len() & !63;
    if whole > 0 {
        // SAFETY: both ranges hold `whole` bytes (the caller's for `dst`, a
        // live slice for `src`) and do not overlap; EL2 does not check
        // alignment (SCTLR_EL2.A is clear), so any addresses work.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldp {a}, {b}, [{s}], #16",
                "ldp {c}, {d}, [{s}], #16",
                "stp {a}, {b}, [{t}], #16",
                "stp {c}, {d}, [{t}], #16",
                "ldp {a}, {b}, [{s}], #16",
                "ldp {c}, {d}, [{s}], #16",
                "stp {a}, {b}, [{t}], #16",
                "stp {c}, {d}, [{t}], #16",
                "subs {n}, {n}, #64",
                "b.ne 2b",
                s = inout(reg) src.as_ptr() => _,
                t = inout(reg) dst => _,
                n = inout(reg) whole => _,
                a = out(reg) _,
                b = out(reg) _,
                c = out(reg) _,
                d = out(reg) _,
                options(nostack)
            )
        };
    }
    let tail = src.get(whole..).unwrap_or_default();
    // SAFETY: the last `tail.len()` bytes of the caller's range; then the
    // whole range is cleaned, which only touches the caches.
    unsafe {
        core::ptr::copy_nonoverlapping(tail.as_ptr(), (dst + whole as u64) as *mut u8, tail.len());
        clean_to_poc(dst, src.len() as u64);
    }
}

/// Zero `[start, start + len)` and clean it to the point of coherency, with
/// DC ZVA (Arm ARM D7.4.12) for whole lines: one instruction per 64 bytes.
///
/// # Safety
/// The range must be RAM the caller owns exclusively, mapped at EL2 as
/// Normal memory (DC ZVA faults on Device memory), with nothing in it that
/// anyone still needs.
pub unsafe fn zero_to_poc(start: u64, len: u64) {
    let end = start.saturating_add(len);
    let (mut a, b) = if zva_is_one_line() {
        let a = start.next_multiple_of(LINE).min(end);
        (a, (end & !(LINE - 1)).max(a))
    } else {
        (end, end)
    };
    // SAFETY: the edges (and everything when DC ZVA does not fit) are plain
    // stores to the caller's range.
    unsafe {
        core::ptr::write_bytes(start as *mut u8, 0, (a - start) as usize);
        core::ptr::write_bytes(b as *mut u8, 0, (end - b) as usize);
    }
    let whole = a;
    while a.saturating_add(4 * LINE) <= b {
        // SAFETY: `a..a + 256` is inside the caller's Normal RAM and
        // line-aligned; DC ZVA writes exactly one 64-byte line each.
        unsafe {
            core::arch::asm!(
                "dc zva, {a}",
                "dc cvac, {a}",
                "add {a}, {a}, #64",
                "dc zva, {a}",
                "dc cvac, {a}",
                "add {a}, {a}, #64",
                "dc zva, {a}",
                "dc cvac, {a}",
                "add {a}, {a}, #64",
                "dc zva, {a}",
                "dc cvac, {a}",
                "add {a}, {a}, #64",
                a = inout(reg) a,
                options(nostack, preserves_flags)
            )
        };
    }
    while a < b {
        // SAFETY: as above, one line.
        unsafe {
            core::arch::asm!("dc zva, {a}", "dc cvac, {a}", a = in(reg) a, options(nostack, preserves_flags))
        };
        a += LINE;
    }
    // SAFETY: the edges (and a range DC ZVA did not cover) are the caller's RAM.
    unsafe {
        clean_to_poc(start, whole - start);
        clean_to_poc(b, end - b);
    }
    dsb_sy();
}

/// Stop this pCPU for good.
pub fn halt() -> ! {
    loop {
        wfi();
    }
}
