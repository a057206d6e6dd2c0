//! Entry points and exception vectors.
//!
//! `_start` carries an arm64 Linux `Image` header so QEMU's `-kernel` (or any
//! Linux-capable loader) enters at EL2 with x0 = host DTB. Each pCPU has a
//! 256 KiB EL2 stack (boot builds the system on pCPU 0's stack, whose
//! largest frame, `boot_with`, is about 92 KiB). While a guest runs, TPIDR_EL2 points at its vCPU's
//! register frame: a trap stores the caller-saved registers straight into
//! that frame, and the callee-saved x19..x28 are only moved when the handler
//! returns a *different* frame (a vCPU switch), because the Rust handler
//! preserves them per AAPCS64. That keeps a null hypercall short.

use core::arch::global_asm;

/// Bytes of EL2 stack per pCPU (must match link.ld).
pub const STACK_SIZE: u64 = 0x40000;
/// Most pCPUs the kernel drives (must match link.ld).
pub const MAX_PCPUS: usize = 8;

global_asm!(
    r#"
.section .text.head, "ax"
.global _start
_start:
    b       primary_entry
    .word   0
    .quad   0x200000            // text_offset: RAM base + 2 MiB
    .quad   0x1000000           // image_size placeholder; xtask patches in the whole image
    .quad   0xa                 // little-endian, 4 KiB pages, placed at 2 MiB-aligned base
    .quad   0, 0, 0
    .word   0x644d5241          // "ARM\x64"
    .word   0

primary_entry:
    mov     x19, x0
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    park
    adr     x1, _start
    ldr     x2, =_start
    cmp     x1, x2
    b.ne    park                // loaded somewhere we were not linked for
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  mov     x0, #0
    bl      set_stack_and_vectors
    mov     x0, x19
    bl      kernel_main
    b       park

.global secondary_entry
secondary_entry:
    // x0 = pCPU index, passed as the PSCI context id.
    mov     x19, x0
    bl      set_stack_and_vectors
    mov     x0, x19
    bl      secondary_main
    b       park

// x0 = pCPU index; sets SP_EL2 to that pCPU's stack top and VBAR_EL2.
set_stack_and_vectors:
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x0, #1
    mov     x3, #{stack_size}
    madd    x1, x2, x3, x1
    mov     sp, x1
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    isb
    ret

park:
    wfi
    b       park

// Store the caller-saved registers into the frame at TPIDR_EL2.
.macro save_guest_volatile
    str     x18, [sp, #-16]!
    mrs     x18, tpidr_el2
    stp     x0, x1, [x18, #0]
    stp     x2, x3, [x18, #16]
    stp     x4, x5, [x18, #32]
    stp     x6, x7, [x18, #48]
    stp     x8, x9, [x18, #64]
    stp     x10, x11, [x18, #80]
    stp     x12, x13, [x18, #96]
    stp     x14, x15, [x18, #112]
    stp     x16, x17, [x18, #128]
    ldr     x0, [sp], #16
    str     x0, [x18, #144]
    stp     x29, x30, [x18, #232]
    mov     x0, x18
.endm

.macro guest_trap handler
    save_guest_volatile
    bl      \handler
    b       resume_guest
.endm

.macro kernel_fault kind
    mov     x0, #\kind
    mrs     x1, esr_el2
    mrs     x2, elr_el2
    mrs     x3, far_el2
    bl      kernel_exception
    b       park
.endm

.section .text.vectors, "ax"
.balign 2048
el2_vectors:
    // Current EL with SP_EL0: never used.
    .balign 128
    kernel_fault 0
    .balign 128
    kernel_fault 1
    .balign 128
    kernel_fault 2
    .balign 128
    kernel_fault 3
    // Current EL with SP_ELx: a fault in the kernel itself.
    .balign 128
    kernel_fault 0
    .balign 128
    kernel_fault 1
    .balign 128
    kernel_fault 2
    .balign 128
    kernel_fault 3
    // Lower EL, AArch64: guest traps.
    .balign 128
    b       guest_sync_entry
    .balign 128
    guest_trap handle_guest_irq
    .balign 128
    guest_trap handle_guest_irq
    .balign 128
    guest_trap handle_guest_serror
    // Lower EL, AArch32: guests are AArch64-only (HCR_EL2.RW = 1).
    .balign 128
    kernel_fault 4
    .balign 128
    kernel_fault 4
    .balign 128
    kernel_fault 4
    .balign 128
    kernel_fault 4

// Guest sync exceptions. The leaf hypercall xen_version(XENVER_version)
// reads no state and changes none, so it is answered here with two scratch
// registers, before any frame is saved. Resuming at once is always safe:
// anything else pending for this vCPU arrives as a physical IRQ, which traps
// again right after the ERET.
guest_sync_entry:
    stp     x0, x1, [sp, #-16]!
    mrs     x0, esr_el2
    movz    x1, #{hvc_imm}
    movk    x1, #{hvc_esr_hi}, lsl #16
    cmp     x0, x1
    b.ne    1f
    cmp     x16, #{op_xen_version}
    b.ne    1f
    ldr     x0, [sp]
    cbnz    x0, 1f
    movz    x0, #{xen_minor}
    movk    x0, #{xen_major}, lsl #16
    ldr     x1, [sp, #8]
    add     sp, sp, #16
    eret
1:  ldp     x0, x1, [sp], #16
    // A sync trap may read or write any register of the guest (an MRS, an
    // MMIO load's destination, a store's source), so the frame must hold
    // all of them, callee-saved ones included, and all are reloaded after.
    save_guest_volatile
    stp     x19, x20, [x18, #152]
    stp     x21, x22, [x18, #168]
    stp     x23, x24, [x18, #184]
    stp     x25, x26, [x18, #200]
    stp     x27, x28, [x18, #216]
    bl      handle_guest_sync
    msr     tpidr_el2, x0
    b       4f

// x0 = frame to resume. If it is not the frame that trapped, move the
// callee-saved registers (still the old guest's, per AAPCS64) across.
.global resume_guest
resume_guest:
    mrs     x1, tpidr_el2
    cmp     x0, x1
    b.eq    3f
    stp     x19, x20, [x1, #152]
    stp     x21, x22, [x1, #168]
    stp     x23, x24, [x1, #184]
    stp     x25, x26, [x1, #200]
    stp     x27, x28, [x1, #216]
    ldp     x19, x20, [x0, #152]
    ldp     x21, x22, [x0, #168]
    ldp     x23, x24, [x0, #184]
    ldp     x25, x26, [x0, #200]
    ldp     x27, x28, [x0, #216]
    msr     tpidr_el2, x0
3:  mov     x18, x0
    ldp     x0, x1, [x18, #0]
    ldp     x2, x3, [x18, #16]
    ldp     x4, x5, [x18, #32]
    ldp     x6, x7, [x18, #48]
    ldp     x8, x9, [x18, #64]
    ldp     x10, x11, [x18, #80]
    ldp     x12, x13, [x18, #96]
    ldp     x14, x15, [x18, #112]
    ldp     x16, x17, [x18, #128]
    ldp     x29, x30, [x18, #232]
    ldr     x18, [x18, #144]
    eret

// First entry into a guest from the boot path: x0 = frame, x1 = stack top.
// Loads every register from the frame; the boot stack is abandoned.
.global enter_guest_first
enter_guest_first:
    mov     sp, x1
    msr     tpidr_el2, x0
4:  ldp     x19, x20, [x0, #152]
    ldp     x21, x22, [x0, #168]
    ldp     x23, x24, [x0, #184]
    ldp     x25, x26, [x0, #200]
    ldp     x27, x28, [x0, #216]
    b       3b
"#,
    stack_size = const STACK_SIZE,
    hvc_imm = const tessera_ipc::hypercall::HVC_IMM_HYPERCALL,
    // ESR_EL2 of `hvc #0xEA1`: EC 0x16 in bits 31:26, IL in bit 25.
    hvc_esr_hi = const (0x16 << 10) | (1 << 9),
    op_xen_version = const tessera_ipc::hypercall::Op::XenVersion as u64,
    xen_major = const tessera_ipc::hypercall::XEN_VERSION_MAJOR,
    xen_minor = const tessera_ipc::hypercall::XEN_VERSION_MINOR,
);

unsafe extern "C" {
    /// Enter a guest for the first time on this pCPU.
    ///
    /// # Safety
    /// `frame` must be a live vCPU frame owned by this pCPU, with ELR_EL2,
    /// SPSR_EL2 and the guest's EL1 state already loaded; `stack_top` must be
    /// this pCPU's EL2 stack top. Never returns: later traps re-enter Rust
    /// through the vectors.
    pub fn enter_guest_first(frame: *mut u64, stack_top: u64) -> !;
    /// Start of the per-pCPU stacks (link.ld).
    static __stacks_start: u8;
    /// End of the kernel's footprint (link.ld).
    static __kernel_end: u8;
    /// Start of the kernel image (link.ld).
    static __kernel_start: u8;
    /// Secondary pCPU entry point, for firmware CPU_ON.
    pub fn secondary_entry();
}

/// Address of the first byte of the kernel image.
pub fn kernel_start() -> u64 {
    // Taking the address of a linker symbol reads nothing.
    core::ptr::addr_of!(__kernel_start) as u64
}

/// Address just past the kernel's footprint (code, data, BSS, stacks).
pub fn kernel_end() -> u64 {
    core::ptr::addr_of!(__kernel_end) as u64
}

/// The top of pCPU `n`'s EL2 stack.
pub fn stack_top(n: usize) -> u64 {
    let base = core::ptr::addr_of!(__stacks_start) as u64;
    base + (n as u64 + 1) * STACK_SIZE
}
