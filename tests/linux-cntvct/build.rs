//! Links `cntvct` as a static Linux executable at an ordinary user address.
//!
//! `aarch64-unknown-none` already links statically with rust-lld and a
//! non-PIC code model; all that is missing is where the program lives in
//! the user address space and that `_start` is the entry point.

fn main() {
    println!("cargo:rustc-link-arg-bins=-Ttext=0x400000");
    println!("cargo:rustc-link-arg-bins=--entry=_start");
    println!("cargo:rustc-link-arg-bins=-znorelro");
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
