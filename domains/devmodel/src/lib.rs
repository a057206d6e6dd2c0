//! The device model's logic: the emulated devices an IOREQ server offers a
//! guest, written against small traits (guest memory, MMIO accesses) so
//! every device is tested on the host. `main.rs` is the thin EL1 shell that
//! feeds it ioreqs from the kernel.
#![cfg_attr(not(test), no_std)]

pub mod guest_mem;
pub mod persist;
pub mod pl011;
pub mod virtio;
