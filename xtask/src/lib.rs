//! Host-side build orchestration for Tessera, as a library so that the
//! pieces with real logic (ELF flattening, image packing, system-description
//! checking) are unit-tested on the host; `main.rs` is only the command line.
//!
//! The one idea: every artefact QEMU boots is produced here from sources in
//! the tree, and every failure names the file, node or module at fault.

#![forbid(unsafe_code)]

pub mod boot_all;
pub mod check;
pub mod error;
pub mod flat;
pub mod fuzz;
pub mod linux;
pub mod mac;
pub mod pack;
pub mod system;
pub mod tools;

pub use error::Error;

use std::path::{Path, PathBuf};

/// The workspace root: xtask lives one level below it.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where built images go: `target/images/<name>/tessera.img`.
pub fn images_dir() -> PathBuf {
    repo_root().join("target").join("images")
}
