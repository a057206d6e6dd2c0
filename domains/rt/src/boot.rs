//! Boot: the arm64 `Image` header, the primary and secondary entry points,
//! the identity map, and what the runtime learns from the DTB.
//!
//! The one idea: every CPU runs the same short assembly set-up
//! (`tessera_cpu_setup`: stack, VBAR, FP, MMU) before any Rust code, because
//! Rust needs Normal memory for atomics and unaligned accesses, and with the
//! MMU off all data accesses are Device memory. The MMU set-up is static: a
//! level-1 table of 1 GiB blocks for RAM and a level-2 table of 2 MiB blocks
//! for the first GiB, where the device frames are Device memory and the
//! windows above them (static shared memory, grant and special pages) are
//! Normal memory, shared read-only by every CPU.
//!
//! QEMU's `-kernel` loads an Image with `text_offset` 0 at RAM + 2 MiB (it
//! keeps the bottom of RAM for its own boot stub), while the hypervisor loads
//! it at RAM + 0. The entry code therefore copies the image to its link
//! address first when it finds itself elsewhere; only position-independent
//! instructions run before that.

use crate::text::FixedBuf;
use crate::{console, hypercall, psci, MAX_CPUS, STACK_SIZE};
use core::arch::global_asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, Ordering};
use tessera_ipc::hypercall::ShutdownReason;
use tessera_ipc::image::{Arm64ImageHeader, ARM64_IMAGE_MAGIC};
use tessera_ipc::platform::RAM_BASE;

const _: () = assert!(core::mem::size_of::<Arm64ImageHeader>() == 64);

/// `Arm64ImageHeader::flags`: little-endian (bit 0 clear), 4 KiB pages
/// (bits 1-2 = 1), loadable anywhere in RAM (bit 3) (Linux booting.rst).
const IMAGE_FLAGS: u64 = 1 << 1 | 1 << 3;

const GIB: u64 = 1 << 30;
const _: () = assert!(
    RAM_BASE.is_multiple_of(GIB),
    "RAM must start on a 1 GiB block"
);

/// MAIR_EL1 (Arm ARM D19.2.97): Attr0 = Device-nGnRE, Attr1 = Normal memory,
/// inner and outer write-back, read- and write-allocate.
const MAIR: u64 = 0xff << 8 | 0x04;
const ATTR_DEVICE: u64 = 0;
const ATTR_NORMAL: u64 = 1;

/// TCR_EL1 (Arm ARM D19.2.139): T0SZ = 32 (4 GiB, walks start at level 1),
/// inner/outer write-back walks, inner shareable, 4 KiB granule, TTBR1 walks
/// disabled (EPD1), 32-bit intermediate physical addresses (IPS = 0).
const TCR: u64 = 32 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23;

/// SCTLR_EL1 (Arm ARM D19.2.118): the bits that are RES1 in Armv8.0 (11, 20,
/// 22, 23, 28, 29), plus M (MMU), C (data cache) and I (instruction cache).
/// A (alignment checking) stays clear: Rust relies on unaligned access.
const SCTLR: u64 = 1 << 29 | 1 << 28 | 1 << 23 | 1 << 22 | 1 << 20 | 1 << 11 | 1 << 12 | 1 << 2 | 1;

/// CPACR_EL1.FPEN = 0b11: FP/SIMD does not trap at EL1 or EL0.
const CPACR_FPEN: u64 = 3 << 20;

/// Level-1 block descriptor bits (Arm ARM D8.3): valid block, access flag,
/// attribute index, inner shareable, and execute-never for device memory.
const BLOCK: u64 = 0b01;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 3 << 8;
const PXN_UXN: u64 = 3 << 53;
const fn attr_index(attr: u64) -> u64 {
    attr << 2
}

/// Entries used by the level-1 table with T0SZ = 32.
const L1_ENTRIES: usize = 4;

/// Level-2 block size.
const L2_BLOCK: u64 = 2 << 20;
/// Where the device frames of the platform map end (GIC, PL011, virtio-mmio
/// and, natively, QEMU's other `virt` devices). From here up to RAM the
/// guest sees only memory: static shared-memory regions, the grant-table,
/// special-page and extended-region windows, so it is Normal memory, which
/// lets rings and atomics work there exactly as in RAM.
const DEVICE_WINDOW_END: u64 = 0x1000_0000;
const _: () = assert!(DEVICE_WINDOW_END.is_multiple_of(L2_BLOCK) && DEVICE_WINDOW_END < RAM_BASE);

#[repr(C, align(4096))]
struct PageTable([u64; 512]);

/// Identity map of RAM_BASE..4 GiB as Normal write-back. Entry 0 (the first
/// GiB) is a table descriptor for `BOOT_L2`, which only the primary entry
/// code can write (a `static`'s address is not a constant), before the MMU
/// is on; Rust code never touches this table.
static mut BOOT_L1: PageTable = {
    let mut table = [0u64; 512];
    let mut i = 0;
    while i < L1_ENTRIES {
        let base = i as u64 * GIB;
        if base >= RAM_BASE {
            table[i] = base | BLOCK | AF | SH_INNER | attr_index(ATTR_NORMAL);
        }
        i += 1;
    }
    PageTable(table)
};
const _: () = assert!(RAM_BASE == GIB, "BOOT_L2 maps exactly the GiB below RAM");

/// The first GiB in 2 MiB blocks: Device below `DEVICE_WINDOW_END`, Normal
/// write-back (never executable) above it.
static BOOT_L2: PageTable = {
    let mut table = [0u64; 512];
    let mut i = 0;
    while i < 512 {
        let base = i as u64 * L2_BLOCK;
        table[i] = if base < DEVICE_WINDOW_END {
            base | BLOCK | AF | attr_index(ATTR_DEVICE) | PXN_UXN
        } else {
            base | BLOCK | AF | SH_INNER | attr_index(ATTR_NORMAL) | PXN_UXN
        };
        i += 1;
    }
    PageTable(table)
};

/// Table descriptor bits (Arm ARM D8.3.1): valid, table.
const TABLE: u64 = 0b11;

#[repr(C, align(16))]
struct Stacks([[u8; STACK_SIZE]; MAX_CPUS]);

/// One stack per CPU, in BSS; only assembly touches it (through `sym`).
static mut STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       tessera_primary_entry       // code0
    .long   0                           // code1
    .quad   0                           // text_offset
    .quad   __image_size                // image_size, from link.ld
    .quad   {flags}
    .quad   0, 0, 0                     // res2..res4
    .long   {magic}
    .long   0                           // res5

    .section .text.boot, "ax"
tessera_primary_entry:
    mov     x19, x0
    adr     x1, _start
    ldr     x2, =_start
    cmp     x1, x2
    // Loaded where it was linked: the BSS is untouched RAM, which Tessera
    // hands out zeroed (docs/02, "Lazy RAM"), so it is not zeroed again;
    // zeroing megabytes here would also make the kernel fill every block
    // of it at once.
    b.eq    .Lzeroed
    ldr     x3, =__load_end
.Lcopy:
    ldp     x4, x5, [x1], #16
    stp     x4, x5, [x2], #16
    cmp     x2, x3
    b.lo    .Lcopy
    dsb     ish
    ic      iallu
    dsb     ish
    isb
    ldr     x1, =.Lrelocated
    br      x1
.Lrelocated:
    ldr     x1, =__bss_start
    ldr     x2, =__bss_end
.Lzero:
    cmp     x1, x2
    b.hs    .Lzeroed
    stp     xzr, xzr, [x1], #16
    b       .Lzero
.Lzeroed:
    ldr     x1, ={l1}
    ldr     x2, ={l2}
    orr     x2, x2, #{table}
    str     x2, [x1]
    dsb     ish
    mov     x0, #0
    bl      tessera_cpu_setup
    mov     x0, x19
    bl      {primary_main}
    b       tessera_park

    .global tessera_secondary_entry
tessera_secondary_entry:
    cmp     x0, #{max_cpus}
    b.hs    tessera_park
    mov     x19, x0
    bl      tessera_cpu_setup
    mov     x0, x19
    bl      {secondary_main}
    .global tessera_park
tessera_park:
    wfe
    b       tessera_park

// x0 = CPU index. Uses no stack; clobbers x1, x2.
tessera_cpu_setup:
    msr     spsel, #1
    ldr     x1, ={stacks}
    mov     x2, #{stack_size}
    madd    x1, x2, x0, x1
    add     x1, x1, x2
    mov     sp, x1
    msr     tpidr_el1, x0
    ldr     x1, ={vectors}
    msr     vbar_el1, x1
    mov     x1, #{cpacr}
    msr     cpacr_el1, x1
    ldr     x1, ={mair}
    msr     mair_el1, x1
    ldr     x1, ={tcr}
    msr     tcr_el1, x1
    ldr     x1, ={l1}
    msr     ttbr0_el1, x1
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    ldr     x1, ={sctlr}
    msr     sctlr_el1, x1
    isb
    ret
    .ltorg
"#,
    flags = const IMAGE_FLAGS,
    magic = const ARM64_IMAGE_MAGIC,
    max_cpus = const MAX_CPUS,
    stack_size = const STACK_SIZE,
    cpacr = const CPACR_FPEN,
    mair = const MAIR,
    tcr = const TCR,
    sctlr = const SCTLR,
    stacks = sym STACKS,
    l1 = sym BOOT_L1,
    l2 = sym BOOT_L2,
    table = const TABLE,
    vectors = sym crate::vectors::tessera_vectors,
    primary_main = sym primary_main,
    secondary_main = sym secondary_main,
);

struct BootInfo {
    bootargs: &'static str,
    cpus: usize,
}

static BOOT_INFO: spin::Once<BootInfo> = spin::Once::new();
static NATIVE: AtomicBool = AtomicBool::new(false);
static CURRENT_TEST: spin::Once<&'static str> = spin::Once::new();

fn read_dtb(dtb: usize) -> BootInfo {
    let mut info = BootInfo {
        bootargs: "",
        cpus: 1,
    };
    if dtb == 0 {
        return info;
    }
    // SAFETY: by the boot protocol x0 holds the address of a DTB that the
    // loader placed in RAM beyond `image_size` and that nothing overwrites.
    let Ok(fdt) = (unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }) else {
        return info;
    };
    if let Some(args) = fdt
        .find_node("/chosen")
        .and_then(|c| c.property("bootargs"))
    {
        info.bootargs = args.as_str().unwrap_or("");
    }
    if let Some(cpus) = fdt.find_node("/cpus") {
        let count = cpus
            .children()
            .filter(|c| c.name.split('@').next() == Some("cpu"))
            .count();
        info.cpus = count.clamp(1, MAX_CPUS);
    }
    info
}

extern "C" fn primary_main(dtb: usize) -> ! {
    let info = BOOT_INFO.call_once(|| read_dtb(dtb));
    NATIVE.store(
        crate::bootargs::BootArgs::new(info.bootargs).is_native(),
        Ordering::Relaxed,
    );
    extern "Rust" {
        fn __tessera_guest_main(dtb: usize) -> !;
    }
    // SAFETY: `tessera_rt::entry!` defines this symbol with exactly this
    // signature; the runtime is now fully set up for Rust code.
    unsafe { __tessera_guest_main(dtb) }
}

extern "C" fn secondary_main(cpu: usize) -> ! {
    crate::cpu::run_secondary(cpu)
}

/// The `/chosen/bootargs` string, empty when absent.
pub fn bootargs() -> &'static str {
    BOOT_INFO.get().map_or("", |i| i.bootargs)
}

/// Number of CPUs in the DTB `/cpus` node, at most `MAX_CPUS`.
pub fn cpu_count() -> usize {
    BOOT_INFO.get().map_or(1, |i| i.cpus)
}

/// Whether we run on bare QEMU rather than under Tessera.
pub fn is_native() -> bool {
    NATIVE.load(Ordering::Relaxed)
}

/// Names the running test, so a fatal exception can print its FAIL line.
pub fn set_current_test(name: &'static str) {
    CURRENT_TEST.call_once(|| name);
}

pub(crate) fn current_test() -> Option<&'static str> {
    CURRENT_TEST.get().copied()
}

/// Ends the domain: `sched_op` shutdown under Tessera; PSCI SYSTEM_RESET or
/// SYSTEM_OFF natively (QEMU has no notion of a crash reason).
pub fn exit(reason: ShutdownReason) -> ! {
    if is_native() {
        if reason == ShutdownReason::Reboot {
            psci::system_reset();
        }
        psci::system_off();
    }
    hypercall::sched_shutdown(reason);
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// Prints the FAIL line for the current test (or a bare report when no test
/// is named) and crashes the domain. Used by fatal exceptions and panics.
pub(crate) fn fail_and_crash(reason: core::fmt::Arguments<'_>) -> ! {
    let mut why = FixedBuf::<256>::new();
    let _ = why.write_fmt(reason);
    match current_test() {
        Some(name) => console::force_result(name, Err(why.as_str())),
        None => console::force_line(format_args!("FATAL {}", why)),
    }
    exit(ShutdownReason::Crash)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    fail_and_crash(format_args!("panic: {}", info.message()))
}
