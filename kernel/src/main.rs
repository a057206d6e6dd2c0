//! The Tessera EL2 kernel binary for aarch64.
//!
//! On the host this file builds to an empty program so the workspace builds
//! and tests everywhere; the kernel proper is only meaningful for
//! `aarch64-unknown-none-softfloat`.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod hv;

#[cfg(target_os = "none")]
use tessera_kernel::{addr, pagetable};

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("tessera-kernel runs at EL2; build it with `cargo xtask build`");
}

/// A kernel bug (never guest input): say where, then stop this pCPU.
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hv::console::log_line(format_args!("kernel panic: {info}"));
    arch::aarch64::halt()
}
