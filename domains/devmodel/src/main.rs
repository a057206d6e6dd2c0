//! `tessera-devmodel`: the device-model domain, an IOREQ server. On the host
//! this is an empty program, so the workspace builds and lints.
#![cfg_attr(all(target_arch = "aarch64", target_os = "none"), no_std, no_main)]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
fn main() {}
