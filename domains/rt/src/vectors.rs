//! EL1 exception vectors.
//!
//! The one idea: the only exception a domain expects is IRQ, so every other
//! vector is fatal (print ESR/ELR/FAR and the current test's FAIL line, then
//! crash). A second table, used only by the native null-hypercall baseline,
//! answers `svc #0` with a bare `eret`, the shortest possible trap round trip
//! to compare the hypervisor's `hvc` path against.

use core::arch::global_asm;

extern "C" {
    /// The normal vector table (2 KiB aligned).
    pub(crate) fn tessera_vectors();
    /// The table whose current-EL synchronous vector is a bare `eret`.
    fn tessera_fast_svc_vectors();
}

macro_rules! vector_table {
    ($name:literal, $sync_spx:literal) => {
        concat!(
            "    .section .text.vectors, \"ax\"\n",
            "    .balign 2048\n",
            "    .global ",
            $name,
            "\n",
            $name,
            ":\n",
            "    .balign 0x80\n    mov x0, #0\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #1\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #2\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #3\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n",
            $sync_spx,
            "\n",
            "    .balign 0x80\n    b tessera_irq_entry\n",
            "    .balign 0x80\n    mov x0, #6\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #7\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #8\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #9\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #10\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #11\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #12\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #13\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #14\n    b tessera_fatal_entry\n",
            "    .balign 0x80\n    mov x0, #15\n    b tessera_fatal_entry\n",
        )
    };
}

global_asm!(vector_table!(
    "tessera_vectors",
    "    mov x0, #4\n    b tessera_fatal_entry"
));
global_asm!(vector_table!("tessera_fast_svc_vectors", "    eret"));

// The IRQ frame holds every register the AAPCS64 lets a callee clobber:
// x0-x18, x29, x30, all of q0-q31 (the handler is hard-float Rust) and
// FPCR/FPSR. ELR/SPSR need no saving: handlers run with IRQs masked.
global_asm!(
    r#"
    .section .text.vectors, "ax"
    .global tessera_irq_entry
tessera_irq_entry:
    sub     sp, sp, #0x2c0
    stp     x0, x1, [sp, #0x00]
    stp     x2, x3, [sp, #0x10]
    stp     x4, x5, [sp, #0x20]
    stp     x6, x7, [sp, #0x30]
    stp     x8, x9, [sp, #0x40]
    stp     x10, x11, [sp, #0x50]
    stp     x12, x13, [sp, #0x60]
    stp     x14, x15, [sp, #0x70]
    stp     x16, x17, [sp, #0x80]
    stp     x18, x29, [sp, #0x90]
    str     x30, [sp, #0xa0]
    mrs     x0, fpcr
    mrs     x1, fpsr
    stp     x0, x1, [sp, #0xb0]
    stp     q0, q1, [sp, #0xc0]
    stp     q2, q3, [sp, #0xe0]
    stp     q4, q5, [sp, #0x100]
    stp     q6, q7, [sp, #0x120]
    stp     q8, q9, [sp, #0x140]
    stp     q10, q11, [sp, #0x160]
    stp     q12, q13, [sp, #0x180]
    stp     q14, q15, [sp, #0x1a0]
    stp     q16, q17, [sp, #0x1c0]
    stp     q18, q19, [sp, #0x1e0]
    stp     q20, q21, [sp, #0x200]
    stp     q22, q23, [sp, #0x220]
    stp     q24, q25, [sp, #0x240]
    stp     q26, q27, [sp, #0x260]
    stp     q28, q29, [sp, #0x280]
    stp     q30, q31, [sp, #0x2a0]
    bl      {irq}
    ldp     q0, q1, [sp, #0xc0]
    ldp     q2, q3, [sp, #0xe0]
    ldp     q4, q5, [sp, #0x100]
    ldp     q6, q7, [sp, #0x120]
    ldp     q8, q9, [sp, #0x140]
    ldp     q10, q11, [sp, #0x160]
    ldp     q12, q13, [sp, #0x180]
    ldp     q14, q15, [sp, #0x1a0]
    ldp     q16, q17, [sp, #0x1c0]
    ldp     q18, q19, [sp, #0x1e0]
    ldp     q20, q21, [sp, #0x200]
    ldp     q22, q23, [sp, #0x220]
    ldp     q24, q25, [sp, #0x240]
    ldp     q26, q27, [sp, #0x260]
    ldp     q28, q29, [sp, #0x280]
    ldp     q30, q31, [sp, #0x2a0]
    ldp     x0, x1, [sp, #0xb0]
    msr     fpcr, x0
    msr     fpsr, x1
    ldp     x0, x1, [sp, #0x00]
    ldp     x2, x3, [sp, #0x10]
    ldp     x4, x5, [sp, #0x20]
    ldp     x6, x7, [sp, #0x30]
    ldp     x8, x9, [sp, #0x40]
    ldp     x10, x11, [sp, #0x50]
    ldp     x12, x13, [sp, #0x60]
    ldp     x14, x15, [sp, #0x70]
    ldp     x16, x17, [sp, #0x80]
    ldp     x18, x29, [sp, #0x90]
    ldr     x30, [sp, #0xa0]
    add     sp, sp, #0x2c0
    eret

// x0 = vector index. Never returns, so nothing is saved.
    .global tessera_fatal_entry
tessera_fatal_entry:
    mrs     x1, esr_el1
    mrs     x2, elr_el1
    mrs     x3, far_el1
    bl      {fatal}
    b       tessera_park
"#,
    irq = sym irq_from_vector,
    fatal = sym fatal_from_vector,
);

extern "C" fn irq_from_vector() {
    crate::gic::handle_irq();
}

const VECTOR_NAMES: [&str; 16] = [
    "sync/sp0",
    "irq/sp0",
    "fiq/sp0",
    "serror/sp0",
    "sync",
    "irq",
    "fiq",
    "serror",
    "sync/lower64",
    "irq/lower64",
    "fiq/lower64",
    "serror/lower64",
    "sync/lower32",
    "irq/lower32",
    "fiq/lower32",
    "serror/lower32",
];

static IN_FATAL: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

extern "C" fn fatal_from_vector(kind: usize, esr: u64, elr: u64, far: u64) -> ! {
    // A fault while reporting a fault (say the console itself traps) must not
    // recurse: the second one just parks the CPU.
    if IN_FATAL.swap(true, core::sync::atomic::Ordering::AcqRel) {
        loop {
            aarch64_cpu::asm::wfe();
        }
    }
    let name = VECTOR_NAMES.get(kind).copied().unwrap_or("?");
    crate::console::force_line(format_args!(
        "EXCEPTION {} on cpu {}: ESR={:#x} ELR={:#x} FAR={:#x}",
        name,
        crate::cpu::index(),
        esr,
        elr,
        far
    ));
    crate::boot::fail_and_crash(format_args!(
        "exception {name} ESR={esr:#x} ELR={elr:#x} FAR={far:#x}"
    ))
}

fn set_vbar(table: unsafe extern "C" fn()) {
    // SAFETY: both tables are complete, 2 KiB aligned vector tables in this
    // image; switching between them changes only how exceptions are handled.
    unsafe {
        core::arch::asm!("msr vbar_el1, {}", "isb", in(reg) table as usize, options(nostack));
    }
}

/// Restores the normal vectors on this CPU.
pub fn install_vectors() {
    set_vbar(tessera_vectors);
}

/// Installs, on this CPU, the table whose `svc` handler is a bare `eret`.
/// Any other synchronous exception then returns without being reported, so
/// use it only around a benchmark loop.
pub fn install_fast_svc_vectors() {
    set_vbar(tessera_fast_svc_vectors);
}
