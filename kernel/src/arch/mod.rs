//! Architecture backends. Only aarch64 exists; the portable library never
//! depends on this module, so host tests need no fake here.
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod aarch64;

#[cfg(not(target_arch = "aarch64"))]
compile_error!("the Tessera kernel binary supports only aarch64");
