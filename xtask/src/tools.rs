//! Running the programs xtask depends on: cargo, dtc, QEMU and the setup
//! script. Every failure says which command failed and how, so a red CI log
//! needs no guessing.

use crate::error::Error;
use crate::repo_root;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The QEMU binary every image boots in.
pub const QEMU: &str = "qemu-system-aarch64";
/// The device-tree compiler.
pub const DTC: &str = "dtc";
/// pCPUs `cargo xtask run` gives QEMU (`-smp`) unless told otherwise, and so
/// the board `cargo xtask check` assumes.
pub const RUN_SMP: u32 = 2;
/// RAM `cargo xtask run` gives QEMU (`-m`), in MiB.
pub const RUN_MEMORY_MIB: u64 = 1024;

/// The target the EL2 kernel is built for (no FP/SIMD at EL2).
pub const KERNEL_TARGET: &str = "aarch64-unknown-none-softfloat";
/// The target guest payloads are built for.
pub const GUEST_TARGET: &str = "aarch64-unknown-none";

/// Finds `program` on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A printable form of a command line, for error messages.
pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `command` with inherited stdio and fails unless it exits 0.
pub fn run(command: &mut Command) -> Result<(), Error> {
    let status = command.status().map_err(|source| Error::Spawn {
        program: command.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: describe(command),
            status: status.to_string(),
        })
    }
}

/// Runs `command` capturing its output; a spawn failure is an error, a
/// non-zero exit is left to the caller.
pub fn output(command: &mut Command) -> Result<Output, Error> {
    command.output().map_err(|source| Error::Spawn {
        program: command.get_program().to_string_lossy().into_owned(),
        source,
    })
}

/// `cargo`, the same one that runs xtask, started in the workspace root.
pub fn cargo<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(repo_root()).args(args);
    command
}

/// Installs QEMU and dtc through `scripts/setup.sh` when either is missing.
pub fn ensure_setup() -> Result<(), Error> {
    let missing: Vec<&str> = [QEMU, DTC]
        .into_iter()
        .filter(|p| find_program(p).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "xtask: {} not found; running scripts/setup.sh",
        missing.join(" and ")
    );
    let root = repo_root();
    run(Command::new("bash")
        .arg(root.join("scripts").join("setup.sh"))
        .current_dir(&root))
}

/// Where cargo puts a release binary for `target`.
pub fn release_binary(target: &str, name: &str) -> PathBuf {
    repo_root()
        .join("target")
        .join(target)
        .join("release")
        .join(name)
}

/// Builds the kernel and the guest payloads for the board.
pub fn build_binaries() -> Result<(), Error> {
    run(&mut cargo([
        "build",
        "--release",
        "-p",
        "tessera-kernel",
        "--target",
        KERNEL_TARGET,
    ]))?;
    run(&mut cargo([
        "build",
        "--release",
        "-p",
        "tessera-testguest",
        "-p",
        "tessera-devmodel",
        "-p",
        "tessera-domb",
        "--target",
        GUEST_TARGET,
    ]))
}

/// Compiles a device-tree source with dtc, returning dtc's message on failure.
pub fn compile_dts(path: &Path) -> Result<Vec<u8>, Error> {
    let out = output(
        Command::new(DTC)
            .args(["-I", "dts", "-O", "dtb", "-q"])
            .arg(path),
    )?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(Error::Dtc {
            path: path.to_path_buf(),
            message: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}
