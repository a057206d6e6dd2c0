//! `tessera-rt`: the runtime every deprivileged Tessera domain links against.
//!
//! The one idea: a domain is a bare-metal EL1 program that boots by the arm64
//! Linux protocol, runs with an identity map (so guest virtual addresses and
//! IPAs coincide and can be handed to hypercalls as they are), and talks to the
//! hypervisor only through `hvc`. The same binary also runs natively on QEMU
//! `virt` (bootargs word `native`), where the console is the PL011 and PSCI is
//! QEMU's own, to produce benchmark baselines.
//!
//! Only the portable helpers (`bootargs`, `text`, the GIC/timer encodings,
//! the event-channel protocol over shared pages and the shared-region ring
//! memory) build on the host; everything that touches the machine is gated
//! on the bare-metal target.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod bootargs;
pub mod events;
pub mod gic;
pub mod grant;
pub mod ioreq_pages;
pub mod shm;
pub mod text;
pub mod timer;
pub mod xen;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod boot;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod console;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod control;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod cpu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod hypercall;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod ioreq;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod psci;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod vectors;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use boot::{bootargs, cpu_count, exit, is_native, set_current_test};
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use vectors::{install_fast_svc_vectors, install_vectors};

/// Most CPUs the runtime brings up: one boot stack each.
pub const MAX_CPUS: usize = tessera_ipc::platform::MAX_VCPUS_PER_DOMAIN;
/// Size of each CPU's stack.
pub const STACK_SIZE: usize = 64 * 1024;

/// Declares the guest's entry point: `fn(dtb: usize) -> !`, called on the boot
/// CPU once the runtime has set up stacks, vectors, FP and the MMU.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        pub fn __tessera_guest_main(dtb: usize) -> ! {
            let main: fn(usize) -> ! = $main;
            main(dtb)
        }
    };
}
