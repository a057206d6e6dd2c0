//! Build script of every bare-metal domain crate (testguest, devmodel):
//! links the bare-metal build with the runtime's linker script, at the guest
//! RAM base taken from the ABI crate (so the number is defined only there).
//! Host builds (tests, clippy) get no linker arguments.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=../rt/guest-build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let script = manifest.join("../rt/link.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!(
        "cargo:rustc-link-arg-bins=--defsym=__tessera_ram_base={:#x}",
        tessera_ipc::platform::RAM_BASE
    );
}
