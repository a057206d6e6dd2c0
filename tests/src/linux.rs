//! Debian arm64 Linux on QEMU: where the payloads are, the native board
//! they boot on, the lines their initramfs prints, and typing on the
//! serial console.
//!
//! The one idea: the initramfs (`tests/src/initramfs/init`, packed by
//! `cargo xtask`) speaks a tiny line protocol: one
//! `TESSERA-LINUX-INIT nproc=<n> cntvct=<count> cntfrq=<hz>` marker, then
//! either `TESSERA-LINUX-TEST <name> PASS|FAIL <reason>` and a power-off,
//! or a shell. Native runs here and, later, runs under Tessera read the
//! same lines, so only the QEMU configuration differs.

use crate::qemu::{Failure, Qemu, QemuConfig};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Environment variable naming the directory that holds [`IMAGE_FILE`] and
/// [`INITRAMFS_FILE`] (set by `cargo xtask test` to `target/payloads/linux`).
pub const PAYLOADS_ENV: &str = "TESSERA_LINUX";
/// The uncompressed arm64 kernel `Image`.
pub const IMAGE_FILE: &str = "Image";
/// The uncompressed newc initramfs.
pub const INITRAMFS_FILE: &str = "initramfs.cpio";

/// The board Linux boots on natively: QEMU's virt with GICv3, no EL2.
pub const NATIVE_MACHINE: &str = "virt,gic-version=3";
/// Guest RAM for native runs.
pub const NATIVE_MEMORY: &str = "512M";
/// What every Linux command line starts with.
pub const BASE_APPEND: &str = "console=ttyAMA0";

/// The init marker; the groups are nproc, CNTVCT_EL0 and CNTFRQ_EL0.
pub const MARKER: &str = r"TESSERA-LINUX-INIT nproc=(\d+) cntvct=(\d+) cntfrq=(\d+)";

/// The kernel and initramfs of one payload directory.
#[derive(Clone, Debug)]
pub struct LinuxPayloads {
    pub image: PathBuf,
    pub initramfs: PathBuf,
}

impl LinuxPayloads {
    /// The payloads as `cargo xtask` writes them into `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        LinuxPayloads {
            image: dir.join(IMAGE_FILE),
            initramfs: dir.join(INITRAMFS_FILE),
        }
    }

    /// The payloads named by [`PAYLOADS_ENV`], if it is set.
    pub fn from_env() -> Option<Self> {
        std::env::var_os(PAYLOADS_ENV).map(|dir| Self::in_dir(Path::new(&dir)))
    }

    /// Fails, saying how to get them, unless both files exist.
    pub fn check(&self) -> Result<(), Failure> {
        for path in [&self.image, &self.initramfs] {
            if !path.is_file() {
                return Err(Failure(format!(
                    "{} does not exist; `cargo xtask payloads` fetches Debian's kernel and \
                     busybox and builds it",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

/// Linux booted bare on QEMU (no hypervisor): Cortex-A72, 512 MiB, the
/// console on the PL011, `append` after [`BASE_APPEND`]. Devices and
/// `-icount` go in with [`QemuConfig::args`].
pub fn native_config(payloads: &LinuxPayloads, smp: u32, append: &str) -> QemuConfig {
    let mut config = QemuConfig::tessera(&payloads.image)
        .machine(NATIVE_MACHINE)
        .smp(smp)
        .args(["-initrd".into(), payloads.initramfs.display().to_string()])
        .args(["-append".to_string(), format!("{BASE_APPEND} {append}")]);
    config.memory = NATIVE_MEMORY.into();
    config
}

/// What the init marker says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// `nproc` in the guest: online CPUs.
    pub nproc: u32,
    /// CNTVCT_EL0 when `/init` started.
    pub cntvct: u64,
    /// CNTFRQ_EL0, in Hz.
    pub cntfrq: u64,
}

impl Marker {
    /// The virtual counter in seconds; under `-icount` this is virtual time
    /// since QEMU started.
    pub fn seconds(&self) -> f64 {
        if self.cntfrq == 0 {
            return 0.0;
        }
        self.cntvct as f64 / self.cntfrq as f64
    }
}

/// Reads a marker line, if `text` holds one.
pub fn parse_marker(text: &str) -> Option<Marker> {
    let captures = regex::Regex::new(MARKER).ok()?.captures(text)?;
    Some(Marker {
        nproc: captures.get(1)?.as_str().parse().ok()?,
        cntvct: captures.get(2)?.as_str().parse().ok()?,
        cntfrq: captures.get(3)?.as_str().parse().ok()?,
    })
}

/// Waits for the init marker and reads it.
pub fn expect_marker(qemu: &mut Qemu, timeout: Duration) -> Result<Marker, Failure> {
    let line = qemu.expect(MARKER, timeout)?;
    parse_marker(&line.text)
        .ok_or_else(|| qemu.failure(&format!("cannot read the marker `{}`", line.text)))
}

/// The pattern of a passing in-guest test.
pub fn test_pass(name: &str) -> String {
    format!(r"TESSERA-LINUX-TEST {} PASS", regex::escape(name))
}

/// The pattern of a failing in-guest test; forbid it to fail fast.
pub const TEST_FAIL: &str = r"TESSERA-LINUX-TEST \S+ FAIL";

/// Keys typed on the serial console of a QEMU started with [`with_console`].
///
/// The harness starts QEMU with its standard input closed, so the console
/// gets input another way: QEMU runs behind a two-line wrapper that gives
/// it a named pipe as standard input (`-serial stdio` reads it), and this
/// handle holds the pipe open for writing. Opening a FIFO read-write never
/// blocks on Linux, so neither side waits for the other.
pub struct Console {
    input: File,
}

impl Console {
    /// Types `text` and a newline (which a tty and ash's line editing both
    /// take as Enter).
    pub fn type_line(&mut self, text: &str) -> Result<(), Failure> {
        self.input
            .write_all(format!("{text}\n").as_bytes())
            .and_then(|()| self.input.flush())
            .map_err(|e| Failure(format!("cannot type on the console: {e}")))
    }

    /// Types one key with no newline (Ctrl-T, say: `0x14`).
    pub fn type_key(&mut self, key: u8) -> Result<(), Failure> {
        self.input
            .write_all(&[key])
            .and_then(|()| self.input.flush())
            .map_err(|e| Failure(format!("cannot type on the console: {e}")))
    }
}

/// Wraps `config` so the guest's serial console reads what the returned
/// [`Console`] types. The wrapper script and FIFO go into `scratch`.
pub fn with_console(
    mut config: QemuConfig,
    scratch: &Path,
) -> Result<(QemuConfig, Console), Failure> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let failed = |what: &str, e: &dyn std::fmt::Display| Failure(format!("console: {what}: {e}"));
    std::fs::create_dir_all(scratch).map_err(|e| failed(&scratch.display().to_string(), &e))?;
    let id = format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let fifo = scratch.join(format!("console-{id}.fifo"));
    let wrapper = scratch.join(format!("qemu-console-{id}.sh"));
    let _ = std::fs::remove_file(&fifo);
    let status = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .map_err(|e| failed("cannot run mkfifo", &e))?;
    if !status.success() {
        return Err(failed(&format!("mkfifo {}", fifo.display()), &status));
    }
    let input = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .map_err(|e| failed(&fifo.display().to_string(), &e))?;
    let script = format!(
        "#!/bin/sh\n# Gives QEMU the console FIFO as standard input.\nexec {} \"$@\" 0<>{}\n",
        shell_quote(&config.program.display().to_string())?,
        shell_quote(&fifo.display().to_string())?,
    );
    std::fs::write(&wrapper, script).map_err(|e| failed(&wrapper.display().to_string(), &e))?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| failed(&wrapper.display().to_string(), &e))?;
    config.program = wrapper;
    Ok((config, Console { input }))
}

/// `text` in single quotes for sh; paths with a quote are refused rather
/// than escaped.
fn shell_quote(text: &str) -> Result<String, Failure> {
    if text.contains('\'') {
        return Err(Failure(format!("console: cannot quote the path `{text}`")));
    }
    Ok(format!("'{text}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!("tessera-linux-harness-{}", std::process::id()))
    }

    #[test]
    fn the_marker_is_parsed_and_anything_else_is_not() {
        let marker =
            parse_marker("[    1.0] TESSERA-LINUX-INIT nproc=2 cntvct=123456 cntfrq=62500000")
                .unwrap();
        assert_eq!(
            marker,
            Marker {
                nproc: 2,
                cntvct: 123456,
                cntfrq: 62500000
            }
        );
        assert!((marker.seconds() - 0.001_975_296).abs() < 1e-9);
        assert!(parse_marker("TESSERA-LINUX-INIT nproc=2 cntvct= cntfrq=1").is_none());
        assert!(parse_marker("TESSERA-LINUX-INIT nproc=x cntvct=1 cntfrq=1").is_none());
        assert!(
            parse_marker("TESSERA-LINUX-INIT nproc=1 cntvct=99999999999999999999999 cntfrq=1")
                .is_none()
        );
    }

    #[test]
    fn a_zero_frequency_gives_zero_seconds() {
        let marker = Marker {
            nproc: 1,
            cntvct: 5,
            cntfrq: 0,
        };
        assert_eq!(marker.seconds(), 0.0);
    }

    #[test]
    fn native_runs_use_the_plain_virt_board() {
        let payloads = LinuxPayloads::in_dir(Path::new("/p"));
        let config = native_config(&payloads, 2, "tessera.test=rng");
        let command = config.command();
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-machine virt,gic-version=3 -cpu cortex-a72 -smp 2 -m 512M"));
        assert!(joined.contains("-kernel /p/Image -initrd /p/initramfs.cpio"));
        assert!(joined.ends_with("-append console=ttyAMA0 tessera.test=rng"));
    }

    #[test]
    fn missing_payloads_say_how_to_get_them() {
        let failure = LinuxPayloads::in_dir(Path::new("/nonexistent"))
            .check()
            .unwrap_err();
        assert!(failure.0.contains("cargo xtask payloads"), "{failure}");
    }

    #[test]
    fn typed_lines_reach_the_emulator_console() {
        // A stand-in emulator that answers each console line.
        let dir = scratch();
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("echo-qemu.sh");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho ready\nwhile IFS= read -r line; do echo \"got $line\"; done\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut config = QemuConfig::tessera(&fake).deadline(WAIT);
        config.program = fake;
        let (config, mut console) = with_console(config, &dir).unwrap();
        let mut qemu = Qemu::spawn(&config).unwrap();
        qemu.expect("^ready$", WAIT).unwrap();
        console.type_line("echo one").unwrap();
        qemu.expect("^got echo one\r?$", WAIT).unwrap();
        console.type_line("two").unwrap();
        qemu.expect("^got two\r?$", WAIT).unwrap();
    }

    #[test]
    fn paths_with_quotes_are_refused() {
        assert!(shell_quote("/a'b").is_err());
        assert_eq!(shell_quote("/a b").unwrap(), "'/a b'");
    }
}
