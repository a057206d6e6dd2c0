//! Building a deliberately broken host device tree for the `bad-host-dtb`
//! test: dump the DTB QEMU would pass, delete one property the kernel needs,
//! and recompile.
//!
//! The deletion uses dtc's own `&{/path} { /delete-property/ name; };` so the
//! edit is exact, with no text surgery on the decompiled source.

use crate::qemu::{Failure, QemuConfig, QEMU};
use std::path::Path;
use std::process::Command;

fn run(command: &mut Command, what: &str) -> Result<Vec<u8>, Failure> {
    let out = command
        .output()
        .map_err(|e| Failure(format!("{what}: cannot start: {e}")))?;
    if !out.status.success() {
        return Err(Failure(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    Ok(out.stdout)
}

/// Writes to `out` the DTB QEMU generates for `config`'s machine, CPU, SMP
/// and memory, with `property` deleted from node `node`.
pub fn broken_host_dtb(
    config: &QemuConfig,
    node: &str,
    property: &str,
    out: &Path,
) -> Result<(), Failure> {
    let dir = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure(format!("cannot create {}: {e}", dir.display())))?;
    let dumped = dir.join("qemu-host.dtb");
    run(
        Command::new(QEMU)
            .arg("-machine")
            .arg(format!("{},dumpdtb={}", config.machine, dumped.display()))
            .args([
                "-cpu",
                &config.cpu,
                "-smp",
                &config.smp.to_string(),
                "-m",
                &config.memory,
            ])
            .args(["-display", "none", "-monitor", "none", "-serial", "none"]),
        "dumping QEMU's DTB",
    )?;
    let source = run(
        Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts", "-q"])
            .arg(&dumped),
        "decompiling it",
    )?;
    let mut source = String::from_utf8_lossy(&source).into_owned();
    source.push_str(&format!(
        "\n&{{{node}}} {{\n\t/delete-property/ {property};\n}};\n"
    ));
    let edited = dir.join("broken.dts");
    std::fs::write(&edited, source)
        .map_err(|e| Failure(format!("cannot write {}: {e}", edited.display())))?;
    let dtb = run(
        Command::new("dtc")
            .args(["-I", "dts", "-O", "dtb", "-q"])
            .arg(&edited),
        "recompiling it",
    )?;
    std::fs::write(out, dtb).map_err(|e| Failure(format!("cannot write {}: {e}", out.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::on_path;

    /// Needs QEMU and dtc (CI installs them first); skipped without them.
    #[test]
    fn the_property_is_gone_and_everything_else_stays() {
        if !on_path(QEMU) || !on_path("dtc") {
            eprintln!("skipped: QEMU or dtc is not installed (run scripts/setup.sh)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("tessera-hostdtb-{}", std::process::id()));
        let out = dir.join("broken.dtb");
        broken_host_dtb(&QemuConfig::tessera("unused.img"), "/psci", "method", &out).unwrap();
        let text = run(
            Command::new("dtc")
                .args(["-I", "dtb", "-O", "dts", "-q"])
                .arg(&out),
            "decompiling",
        )
        .unwrap();
        let text = String::from_utf8_lossy(&text);
        let psci = text
            .split("psci {")
            .nth(1)
            .and_then(|rest| rest.split("};").next())
            .unwrap();
        assert!(psci.contains("compatible"), "{psci}");
        assert!(!psci.contains("method"), "{psci}");
        assert!(
            text.contains("intc@8000000"),
            "the rest of the tree survives"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
