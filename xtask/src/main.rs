//! `cargo xtask`: build, check, run, test, bench and fuzz Tessera.
//!
//! This file is only the command line; the logic lives in the library
//! (`lib.rs`) where it is unit-tested. Every subcommand that needs QEMU or
//! dtc first runs `scripts/setup.sh` if either is missing, so a fresh
//! machine needs nothing but rustup.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;
use tessera_system_tests::{Qemu, QemuConfig};
use xtask::error::Error;
use xtask::system::{
    build_and_write, flatten_artefacts, load_description, testguest_bin, Artefacts,
};
use xtask::tools::{cargo, ensure_setup, run, QEMU};
use xtask::{images_dir, repo_root};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  build [IMAGE_DIR]            build target/images/<name>/tessera.img (default images/qemu-virt)
  check [IMAGE_DIR] [--cpus N] [--ram SIZE]
                               validate without booting (memory, pCPU pins, policy links and
                               unused rules, modules, boot order), one line per finding, for a
                               board of N pCPUs and SIZE RAM (default: what `run` gives QEMU,
                               1G and 2 pCPUs or more if the image's pins need them); writes
                               target/images/<name>/system.dot (and .svg)
  run [IMAGE_DIR] [--smp N] [--cpu CPU] [-- QEMU_ARGS...]
                               build, then boot under QEMU (serial on this terminal; Ctrl-A X
                               quits); -smp is 2, or what the image's tessera,pcpus need
  test                         host unit tests, every image's system tests under QEMU, then
                               the Debian Linux tests (natively on QEMU)
  bench [NAME...]              instruction counts per operation, under Tessera and native
                               (all benchmarks, or the ones named)
  payloads [--refetch]         fetch Debian's arm64 kernel and busybox with apt (cached, checksummed)
                               and build target/payloads/linux/{Image,initramfs.cpio}
  fuzz <TARGET> [ARGS...]      cargo fuzz run TARGET in fuzz/";

const DEFAULT_IMAGE: &str = "images/qemu-virt";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => build(&args[1..]),
        Some("check") => check(&args[1..]),
        Some("run") => run_qemu(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("payloads") => payloads(&args[1..]),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(Error::Usage(format!(
            "unknown command `{other}`\n\n{USAGE}"
        ))),
        None => Err(Error::Usage(USAGE.into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// An image directory as the user named it: relative to the current
/// directory if it exists there, else to the repository root.
fn image_dir(arg: Option<&str>) -> Result<PathBuf, Error> {
    let arg = arg.unwrap_or(DEFAULT_IMAGE);
    let candidates = [PathBuf::from(arg), repo_root().join(arg)];
    candidates
        .into_iter()
        .find(|dir| dir.join("system.dts").is_file())
        .ok_or_else(|| {
            Error::Usage(format!(
                "`{arg}` is not an image directory (no system.dts in it)"
            ))
        })
}

/// Builds the kernel and payloads, then flattens them.
fn build_artefacts() -> Result<Artefacts, Error> {
    xtask::tools::build_binaries()?;
    flatten_artefacts()
}

fn build_one(dir: &Path, artefacts: &Artefacts) -> Result<PathBuf, Error> {
    let out = build_and_write(dir, artefacts)?;
    println!(
        "xtask: built {}",
        out.strip_prefix(repo_root()).unwrap_or(&out).display()
    );
    Ok(out)
}

fn build(args: &[String]) -> Result<(), Error> {
    if args.len() > 1 {
        return Err(Error::Usage(format!(
            "build takes at most one image directory\n\n{USAGE}"
        )));
    }
    let dir = image_dir(args.first().map(String::as_str))?;
    ensure_setup()?;
    // A bad description fails in a second, before the slower cargo builds.
    load_description(&dir)?;
    build_one(&dir, &build_artefacts()?).map(drop)
}

/// QEMU's `-m` for `mib` MiB: `1G` rather than `1024M` when it divides.
fn memory_arg(mib: u64) -> String {
    if mib.is_multiple_of(1024) {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

fn check(args: &[String]) -> Result<(), Error> {
    let (mut cpus, mut ram) = (None, None);
    let mut image = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--cpus" => {
                cpus = it
                    .next()
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| *n > 0)
                    .map(Some)
                    .ok_or_else(|| Error::Usage("--cpus needs a positive number".into()))?
            }
            "--ram" => {
                ram = it
                    .next()
                    .and_then(|r| xtask::check::parse_ram(r))
                    .map(Some)
                    .ok_or_else(|| Error::Usage("--ram needs a size such as 1G or 512M".into()))?
            }
            flag if flag.starts_with('-') => {
                return Err(Error::Usage(format!("unknown option `{flag}`\n\n{USAGE}")))
            }
            dir if image.is_none() => image = Some(dir.to_owned()),
            extra => {
                return Err(Error::Usage(format!(
                    "unexpected argument `{extra}`\n\n{USAGE}"
                )))
            }
        }
    }
    let dir = image_dir(image.as_deref())?;
    ensure_setup()?;
    // By default, the board `run` would boot this image on.
    let mut board = xtask::check::Board::for_image_dir(&dir);
    board.cpus = cpus.unwrap_or(board.cpus);
    board.ram = ram.unwrap_or(board.ram);
    let report = xtask::check::check_image(&dir, &board);
    for finding in &report.findings {
        println!("{finding}");
    }
    let shown = dir
        .strip_prefix(repo_root())
        .unwrap_or(&dir)
        .display()
        .to_string();
    if let Some(dot) = &report.dot {
        let out = xtask::system::image_output(&dir);
        let out_dir = out.parent().unwrap_or(&out);
        for written in xtask::check::write_picture(dot, out_dir)? {
            println!(
                "xtask: wrote {}",
                written
                    .strip_prefix(repo_root())
                    .unwrap_or(&written)
                    .display()
            );
        }
    }
    println!(
        "xtask check: {shown}: {} error(s), {} warning(s) for {} pCPUs and {} RAM",
        report.errors(),
        report.warnings(),
        board.cpus,
        memory_arg(board.ram >> 20)
    );
    if report.errors() == 0 {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "{shown} has {} error(s)",
            report.errors()
        )))
    }
}

fn run_qemu(args: &[String]) -> Result<(), Error> {
    let (ours, qemu_args) = match args.iter().position(|a| a == "--") {
        Some(split) => (&args[..split], &args[split + 1..]),
        None => (args, &[][..]),
    };
    let mut smp = None;
    let mut cpu = "cortex-a72".to_string();
    let mut image = None;
    let mut it = ours.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smp" => {
                smp = Some(
                    it.next()
                        .ok_or_else(|| Error::Usage("--smp needs a number".into()))?
                        .clone(),
                )
            }
            "--cpu" => {
                cpu = it
                    .next()
                    .ok_or_else(|| Error::Usage("--cpu needs a CPU model".into()))?
                    .clone()
            }
            flag if flag.starts_with('-') => {
                return Err(Error::Usage(format!("unknown option `{flag}`\n\n{USAGE}")))
            }
            dir if image.is_none() => image = Some(dir.to_owned()),
            extra => {
                return Err(Error::Usage(format!(
                    "unexpected argument `{extra}`\n\n{USAGE}"
                )))
            }
        }
    }
    if let Some(smp) = smp
        .as_ref()
        .filter(|s| s.parse::<u32>().map_or(true, |n| n == 0))
    {
        return Err(Error::Usage(format!(
            "--smp needs a positive number, not `{smp}`"
        )));
    }
    let dir = image_dir(image.as_deref())?;
    // By default, 2 pCPUs or as many as the image's tessera,pcpus need.
    let smp = smp.unwrap_or_else(|| xtask::check::Board::for_image_dir(&dir).cpus.to_string());
    ensure_setup()?;
    load_description(&dir)?;
    let img = build_one(&dir, &build_artefacts()?)?;

    let mut command = Command::new(QEMU);
    command
        .args([
            "-machine",
            "virt,virtualization=on,gic-version=3",
            "-cpu",
            &cpu,
            "-smp",
            &smp,
            "-m",
            &memory_arg(xtask::tools::RUN_MEMORY_MIB),
        ])
        .args(["-nographic", "-kernel"])
        .arg(&img)
        .args(qemu_args);
    println!(
        "xtask: {} (Ctrl-A X quits)",
        xtask::tools::describe(&command)
    );
    // exec: QEMU takes over this terminal (and its signals) directly.
    let source = command.exec();
    Err(Error::Spawn {
        program: QEMU.into(),
        source,
    })
}

/// Every image directory that tests use: the deployments in `images/*`
/// (the default image first), then `tests/images/*`.
fn test_image_dirs() -> Result<Vec<PathBuf>, Error> {
    let root = repo_root();
    let image_dirs = |parent: PathBuf| -> Result<Vec<PathBuf>, Error> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&parent)
            .map_err(xtask::error::io(&parent))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|dir| dir.join("system.dts").is_file())
            .collect();
        dirs.sort();
        Ok(dirs)
    };
    let default = root.join(DEFAULT_IMAGE);
    let mut dirs = vec![default.clone()];
    dirs.extend(
        image_dirs(root.join("images"))?
            .into_iter()
            .filter(|dir| *dir != default),
    );
    dirs.extend(image_dirs(root.join("tests").join("images"))?);
    Ok(dirs)
}

fn test(args: &[String]) -> Result<(), Error> {
    if !args.is_empty() {
        return Err(Error::Usage(format!("test takes no arguments\n\n{USAGE}")));
    }
    ensure_setup()?;
    let mut summary: Vec<(&str, Result<String, Error>)> = Vec::new();

    println!("xtask test: [1/4] host unit tests");
    let host = run(&mut cargo([
        "test",
        "--workspace",
        "--exclude",
        "tessera-system-tests",
    ]))
    .map(|()| "ok".into());
    summary.push(("host unit tests", host));

    println!("xtask test: [2/4] building every image");
    let built = build_artefacts().and_then(|artefacts| {
        let dirs = test_image_dirs()?;
        for dir in &dirs {
            build_one(dir, &artefacts)?;
        }
        Ok(format!("ok ({} images)", dirs.len()))
    });
    let images_ok = built.is_ok();
    summary.push(("image build", built));

    println!("xtask test: [3/4] QEMU system tests, two at a time");
    let system = if images_ok {
        run(
            cargo(["test", "-p", "tessera-system-tests", "--test", "system"])
                .env(tessera_system_tests::runner::IMAGES_ENV, images_dir())
                .env(tessera_system_tests::runner::JOBS_ENV, "2"),
        )
        .map(|()| "ok".into())
    } else {
        Err(Error::Failed("not run: the images did not build".into()))
    };
    summary.push(("system tests", system));

    println!("xtask test: [4/4] Debian Linux, natively on QEMU, two at a time");
    let linux = xtask::linux::ensure_payloads().and_then(|_| {
        run(
            cargo(["test", "-p", "tessera-system-tests", "--test", "linux"])
                .env(tessera_system_tests::runner::IMAGES_ENV, images_dir())
                .env(
                    tessera_system_tests::linux::PAYLOADS_ENV,
                    xtask::linux::linux_dir(),
                )
                .env(tessera_system_tests::runner::JOBS_ENV, "2"),
        )
        .map(|()| "ok".into())
    });
    summary.push(("linux tests", linux));

    println!("\nxtask test summary:");
    let mut failed = Vec::new();
    for (stage, result) in &summary {
        match result {
            Ok(status) => println!("  {stage:<16} {status}"),
            Err(error) => {
                println!("  {stage:<16} FAILED: {error}");
                failed.push(*stage);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed(format!("failed: {}", failed.join(", "))))
    }
}

/// One benchmark: a Tessera image, the pCPUs it runs on and, if it has one,
/// the native baseline.
struct Benchmark {
    /// The name `cargo xtask bench` reports.
    name: &'static str,
    /// The name in the guest's `BENCHRESULT` line (one guest benchmark can
    /// be reported for several placements).
    result: &'static str,
    image: &'static str,
    /// QEMU `-smp`: two-domain benchmarks put each domain on its own pCPU.
    smp: u32,
    native: Native,
}

/// The same work without Tessera, in plain QEMU.
enum Native {
    None,
    /// The test guest booted bare, with these bootargs.
    TestGuest(&'static str),
    /// Debian's kernel and the test initramfs booted with `-kernel` on one
    /// CPU, with these extra bootargs and a blank virtio-blk disk of
    /// `disk_mib` MiB (QEMU's own device, backed by a scratch file).
    Linux {
        append: &'static str,
        disk_mib: u64,
    },
}

const BENCHMARKS: &[Benchmark] = &[
    Benchmark {
        name: "null_hypercall",
        result: "null_hypercall",
        image: "bench-null-hypercall",
        smp: 1,
        native: Native::TestGuest("native bench=null_hypercall"),
    },
    Benchmark {
        name: "vcpu_switch",
        result: "vcpu_switch",
        image: "bench-vcpu-switch",
        smp: 1,
        native: Native::None,
    },
    Benchmark {
        name: "evtchn_pingpong",
        result: "evtchn_pingpong",
        image: "bench-evtchn-pingpong",
        smp: 2,
        native: Native::None,
    },
    Benchmark {
        name: "ring_burst",
        result: "ring_burst",
        image: "bench-ring-burst",
        smp: 2,
        native: Native::None,
    },
    Benchmark {
        name: "blk_read",
        result: "blk_read",
        image: "bench-blk-read",
        smp: 2,
        native: Native::Linux {
            append: "quiet tessera.test=blk-read",
            disk_mib: 8,
        },
    },
    // A virtio-mmio register read served by the device-model domain: the
    // guest and the device model each on its own pCPU, then sharing one.
    // Natively QEMU's own virtio-mmio transport answers the same load.
    Benchmark {
        name: "mmio_roundtrip",
        result: "mmio_roundtrip",
        image: "bench-mmio-roundtrip",
        smp: 2,
        native: Native::TestGuest("native bench=mmio_roundtrip"),
    },
    Benchmark {
        name: "mmio_roundtrip_1pcpu",
        result: "mmio_roundtrip",
        image: "bench-mmio-roundtrip",
        smp: 1,
        native: Native::TestGuest("native bench=mmio_roundtrip"),
    },
];

/// The image `linux_boot` boots under Tessera (its Linux domain's RAM is
/// what the native run gets too).
const LINUX_BOOT_IMAGE: &str = "linux-boot";
/// pCPUs (and native CPUs) for `linux_boot`.
const LINUX_BOOT_SMP: u32 = 2;

/// Makes the guest's virtual counter tick once per instruction.
const ICOUNT: [&str; 2] = ["-icount", "shift=4,sleep=off"];
const BENCH_TIMEOUT: Duration = Duration::from_secs(300);

/// What one run measured, per operation.
struct Measurement {
    /// Instructions (counter ticks under icount).
    instructions: f64,
    /// Hypercalls, when the guest counts them (`hypercalls=<H>`).
    hypercalls: Option<f64>,
}

/// Boots `config` and reads the guest's
/// `BENCHRESULT <result> ops=<N> ticks=<T> [hypercalls=<H>]` line.
fn measure(name: &str, result: &str, config: &QemuConfig) -> Result<Measurement, Error> {
    let failed = |e: tessera_system_tests::Failure| Error::Failed(format!("benchmark {name}: {e}"));
    let mut qemu = Qemu::spawn(config).map_err(failed)?;
    let pattern = format!(r"BENCHRESULT {result} ops=(\d+) ticks=(\d+)");
    let line = qemu.expect(&pattern, BENCH_TIMEOUT).map_err(failed)?;
    let number = |key: &str| {
        line.text
            .split_whitespace()
            .find_map(|word| word.strip_prefix(key))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let required = |key: &str| {
        number(key).ok_or_else(|| {
            Error::Failed(format!(
                "benchmark {name}: cannot read `{key}` in `{}`",
                line.text
            ))
        })
    };
    let (ops, ticks) = (required("ops=")?, required("ticks=")?);
    if ops == 0 {
        return Err(Error::Failed(format!(
            "benchmark {name}: zero operations in `{}`",
            line.text
        )));
    }
    Ok(Measurement {
        instructions: ticks as f64 / ops as f64,
        hypercalls: number("hypercalls=").map(|h| h as f64 / ops as f64),
    })
}

/// `avc_hit` is measured on the host by the policy crate's example, under
/// valgrind's callgrind; without valgrind it reports `tessera=-` and says
/// why instead of failing the whole bench.
fn avc_hit() -> Result<(), Error> {
    const VALGRIND: &str = "valgrind";
    if xtask::tools::find_program(VALGRIND).is_none() {
        println!(
            "BENCH name=avc_hit tessera=- native=- ratio=- (not measured: valgrind is not installed)"
        );
        return Ok(());
    }
    let out = xtask::tools::output(&mut cargo([
        "run",
        "--quiet",
        "--release",
        "-p",
        "tessera-policy",
        "--example",
        "avc_bench",
    ]))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout
        .lines()
        .find(|l| l.starts_with("BENCH name=avc_hit "))
    {
        Some(line) if out.status.success() => {
            println!("{line}");
            Ok(())
        }
        _ => Err(Error::Failed(format!(
            "benchmark avc_hit: the policy example failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// The QEMU set-up of `bench`'s native baseline, if it has one.
fn native_config(bench: &Benchmark, logs: &Path) -> Result<Option<QemuConfig>, Error> {
    let log = logs.join(format!("{}-native.log", bench.name));
    let config = match bench.native {
        Native::None => return Ok(None),
        Native::TestGuest(bootargs) => QemuConfig::tessera(testguest_bin())
            .machine("virt,gic-version=3")
            .smp(bench.smp)
            .args(["-append", bootargs]),
        Native::Linux { append, disk_mib } => {
            let payloads = xtask::linux::ensure_payloads()?.for_tests();
            let disk = logs.join(format!("{}-native-disk.raw", bench.name));
            std::fs::create_dir_all(logs).map_err(|e| Error::Io {
                path: logs.to_path_buf(),
                source: e,
            })?;
            // Recreated each run: a blank disk, as in the Tessera image.
            let _ = std::fs::remove_file(&disk);
            std::fs::File::create(&disk)
                .and_then(|f| f.set_len(disk_mib << 20))
                .map_err(|e| Error::Io {
                    path: disk.clone(),
                    source: e,
                })?;
            tessera_system_tests::linux::native_config(&payloads, 1, append).args([
                "-drive".to_string(),
                format!("if=none,id=disk0,format=raw,file={}", disk.display()),
                "-device".to_string(),
                "virtio-blk-device,drive=disk0".to_string(),
            ])
        }
    };
    Ok(Some(config.log(log).deadline(BENCH_TIMEOUT)))
}

/// The benchmarks that are not a `BENCHMARKS` entry.
const OTHER_BENCHMARKS: [&str; 4] = ["linux_boot", "boot_all", "safety_jitter", "avc_hit"];

fn bench(args: &[String]) -> Result<(), Error> {
    let known = |n: &str| OTHER_BENCHMARKS.contains(&n) || BENCHMARKS.iter().any(|b| b.name == n);
    if let Some(bad) = args.iter().find(|a| !known(a)) {
        let mut names: Vec<&str> = BENCHMARKS.iter().map(|b| b.name).collect();
        names.extend(OTHER_BENCHMARKS);
        return Err(Error::Usage(format!(
            "no benchmark named {bad:?}; there are: {}\n\n{USAGE}",
            names.join(" ")
        )));
    }
    // No names: all of them.
    let wanted = |n: &str| args.is_empty() || args.iter().any(|a| a == n);
    ensure_setup()?;
    let artefacts = build_artefacts()?;
    let tests = repo_root().join("tests").join("images");
    let logs = repo_root().join("target").join("bench");
    let mut errors = Vec::new();
    for bench in BENCHMARKS.iter().filter(|b| wanted(b.name)) {
        let image = build_one(&tests.join(bench.image), &artefacts)?;
        let tessera = QemuConfig::tessera(&image)
            .smp(bench.smp)
            .args(ICOUNT)
            .log(logs.join(format!("{}-tessera.log", bench.name)))
            .deadline(BENCH_TIMEOUT);
        let tessera = measure(bench.name, bench.result, &tessera)
            .map_err(|e| errors.push(e))
            .ok();
        let native = native_config(bench, &logs)
            .map_err(|e| errors.push(e))
            .ok()
            .flatten()
            .and_then(|config| {
                measure(bench.name, bench.result, &config.args(ICOUNT))
                    .map_err(|e| errors.push(e))
                    .ok()
            });
        let show = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.1}"));
        let ratio = match (&tessera, &native) {
            (Some(t), Some(n)) if n.instructions > 0.0 => {
                format!("{:.2}", t.instructions / n.instructions)
            }
            _ => "-".into(),
        };
        // Hypercalls per operation only where the guest counts them; the
        // key names the unit of the benchmark (a message for ring_burst).
        let hypercalls = match tessera.as_ref().and_then(|t| t.hypercalls) {
            Some(h) if bench.name == "ring_burst" => format!(" hypercalls_per_msg={h:.4}"),
            Some(h) => format!(" hypercalls_per_op={h:.4}"),
            None => String::new(),
        };
        println!(
            "BENCH name={} tessera={} native={} ratio={ratio}{hypercalls}",
            bench.name,
            show(tessera.as_ref().map(|t| t.instructions)),
            show(native.as_ref().map(|n| n.instructions))
        );
    }
    if wanted("linux_boot") {
        if let Err(e) = linux_boot(&artefacts, &logs) {
            println!("BENCH name=linux_boot tessera=- native=- ratio=- unit=s");
            errors.push(e);
        }
    }
    if wanted("boot_all") {
        if let Err(e) = boot_all(&artefacts, &logs) {
            println!("BENCH name=boot_all tessera=- native=- ratio=- unit=instructions");
            errors.push(e);
        }
    }
    if wanted("safety_jitter") {
        if let Err(e) = safety_jitter(&artefacts, &logs) {
            println!("BENCH name=safety_jitter tessera=- native=- ratio=- unit=us");
            errors.push(e);
        }
    }
    if wanted("avc_hit") {
        if let Err(e) = avc_hit() {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    for error in &errors {
        eprintln!("error: {error}");
    }
    Err(Error::Failed(format!(
        "{} benchmark run(s) failed; console logs in {}",
        errors.len(),
        logs.display()
    )))
}

/// Boots a Tessera image on `smp` pCPUs under `-icount`, its console
/// logged to `log`, with as long as a Linux boot may take.
fn boot_icount(image: &Path, smp: u32, log: &Path) -> Result<Qemu, tessera_system_tests::Failure> {
    let config = QemuConfig::tessera(image)
        .smp(smp)
        .args(ICOUNT)
        .log(log)
        .deadline(xtask::linux::NATIVE_BOOT_TIMEOUT);
    Qemu::spawn(&config)
}

/// `linux_boot`: virtual time (seconds under `-icount`) from QEMU's start
/// to the Debian initramfs's init marker, under Tessera (`linux-boot`: the
/// kernel built by the hypervisor, its console the device model's PL011)
/// and natively (the same kernel and initramfs on plain QEMU with as much
/// RAM as the Tessera domain has).
fn linux_boot(artefacts: &Artefacts, logs: &Path) -> Result<(), Error> {
    let payloads = xtask::linux::ensure_payloads()?;
    let dir = repo_root()
        .join("tests")
        .join("images")
        .join(LINUX_BOOT_IMAGE);
    let memory = linux_domain_memory(&dir)?;
    let image = build_one(&dir, artefacts)?;
    let failed = |e: tessera_system_tests::Failure| {
        Error::Failed(format!("benchmark linux_boot under Tessera: {e}"))
    };
    let mut qemu = boot_icount(&image, LINUX_BOOT_SMP, &logs.join("linux_boot-tessera.log"))
        .map_err(failed)?;
    let tessera =
        tessera_system_tests::linux::expect_marker(&mut qemu, xtask::linux::NATIVE_BOOT_TIMEOUT)
            .map_err(failed)?;
    drop(qemu);
    let native = xtask::linux::native_boot_counter(
        &payloads,
        LINUX_BOOT_SMP,
        &format!("{}M", memory >> 20),
        &logs.join("linux_boot-native.log"),
    )?;
    let ratio = if native.seconds() > 0.0 {
        format!("{:.2}", tessera.seconds() / native.seconds())
    } else {
        "-".into()
    };
    println!(
        "BENCH name=linux_boot tessera={:.3} native={:.3} ratio={ratio} unit=s",
        tessera.seconds(),
        native.seconds()
    );
    Ok(())
}

/// What `boot_all` aims for: every domain of the default image runs its
/// first instruction within this many instructions of kernel entry.
const BOOT_ALL_TARGET: u64 = 5_000_000;

/// `boot_all`: the default image (`images/qemu-virt`) under `-icount`, to
/// the first instruction of every domain and to every Linux guest's init
/// marker, in instructions (counter ticks); also the bare-metal ticker's
/// worst lateness meanwhile, in virtual time (`xtask::boot_all`).
fn boot_all(artefacts: &Artefacts, logs: &Path) -> Result<(), Error> {
    let dir = repo_root().join("images").join("qemu-virt");
    let description = load_description(&dir)?;
    let config = tessera_sysdesc::config::parse_system(&description.dtb)
        .map_err(|e| Error::Failed(format!("{}: {e}", dir.display())))?;
    let domains: Vec<String> = config.domains.iter().map(|d| d.name.to_string()).collect();
    let linux: Vec<String> = config
        .domains
        .iter()
        .filter(|d| d.kernel.name.as_str() == xtask::system::DEBIAN_LINUX_MODULE)
        .map(|d| d.name.to_string())
        .collect();
    let image = build_one(&dir, artefacts)?;
    let failed =
        |e: tessera_system_tests::Failure| Error::Failed(format!("benchmark boot_all: {e}"));
    let mut qemu = boot_icount(&image, 2, &logs.join("boot_all-tessera.log")).map_err(failed)?;
    let mut patterns: Vec<String> = domains
        .iter()
        .map(|d| format!(r"^tessera: d\d+ {}: first instruction ", regex::escape(d)))
        .collect();
    patterns.extend(
        linux
            .iter()
            .map(|d| format!(r"^\({}\) TESSERA-LINUX-INIT ", regex::escape(d))),
    );
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    qemu.expect_all(&patterns, xtask::linux::NATIVE_BOOT_TIMEOUT)
        .map_err(failed)?;
    let timeline =
        xtask::boot_all::BootTimeline::read(qemu.lines().iter().map(|l| l.text.as_str()));
    drop(qemu);
    for (d, ticks) in &timeline.first_entry {
        println!("boot_all: {d}: first instruction {ticks} instructions after kernel entry");
    }
    for (d, counter) in &timeline.init {
        println!("boot_all: {d}: init marker {counter} instructions after QEMU start");
    }
    let (Some((last, ticks)), Some((last_linux, init))) =
        (timeline.last_start(), timeline.last_init())
    else {
        return Err(Error::Failed(
            "benchmark boot_all: the log lacks first-instruction or init lines".into(),
        ));
    };
    println!(
        "BENCH name=boot_all tessera={ticks} native=- ratio=- unit=instructions last={last} \
         target={BOOT_ALL_TARGET} met={}",
        if ticks <= BOOT_ALL_TARGET {
            "yes"
        } else {
            "no"
        }
    );
    println!(
        "BENCH name=boot_all_init tessera={init} native=- ratio=- unit=instructions \
         last={last_linux}"
    );
    for (d, late) in &timeline.ticker_late_us {
        println!(
            "BENCH name=boot_all_ticker_late tessera={late} native=- ratio=- unit=us domain={d}"
        );
    }
    Ok(())
}

/// `safety_jitter`: the automotive ECU's safety partition while its Linux
/// neighbour boots, under `-icount`: the worst once-a-second p99 and max
/// lateness of its control loop, in virtual microseconds, up to two
/// reports after Linux's init marker.
fn safety_jitter(artefacts: &Artefacts, logs: &Path) -> Result<(), Error> {
    use tessera_system_tests::safety::{parse_safety, SAFETY_LINE};
    let dir = repo_root().join("images").join("automotive-ecu");
    let image = build_one(&dir, artefacts)?;
    let failed =
        |e: tessera_system_tests::Failure| Error::Failed(format!("benchmark safety_jitter: {e}"));
    let mut qemu =
        boot_icount(&image, 2, &logs.join("safety_jitter-tessera.log")).map_err(failed)?;
    tessera_system_tests::linux::expect_marker(&mut qemu, xtask::linux::NATIVE_BOOT_TIMEOUT)
        .map_err(failed)?;
    qemu.expect_count(SAFETY_LINE, 2, Duration::from_secs(60))
        .map_err(failed)?;
    let reports: Vec<_> = qemu
        .lines()
        .iter()
        .filter_map(|l| parse_safety(&l.text, "safety"))
        .collect();
    let p99 = reports.iter().map(|r| r.jitter_p99_us).max();
    let max = reports.iter().map(|r| r.jitter_max_us).max();
    let missed = reports.last().map(|r| r.missed);
    match (p99, max, missed) {
        (Some(p99), Some(max), Some(missed)) => {
            println!(
                "BENCH name=safety_jitter tessera={p99} native=- ratio=- unit=us max_us={max} \
                 missed={missed} reports={}",
                reports.len()
            );
            Ok(())
        }
        _ => Err(Error::Failed(
            "benchmark safety_jitter: no SAFETY report".into(),
        )),
    }
}

/// The RAM of the domain in `dir`'s image that boots the Debian kernel.
fn linux_domain_memory(dir: &Path) -> Result<u64, Error> {
    let description = load_description(dir)?;
    let config = tessera_sysdesc::config::parse_system(&description.dtb)
        .map_err(|e| Error::Failed(format!("{}: {e}", dir.display())))?;
    config
        .domains
        .iter()
        .find(|d| d.kernel.name.as_str() == xtask::system::DEBIAN_LINUX_MODULE)
        .map(|d| d.memory_bytes)
        .ok_or_else(|| {
            Error::Failed(format!(
                "{}: no domain boots the `{}` module",
                dir.display(),
                xtask::system::DEBIAN_LINUX_MODULE
            ))
        })
}

/// Fetches (or, with `--refetch`, re-downloads) the Debian packages and
/// builds the Linux payloads.
fn payloads(args: &[String]) -> Result<(), Error> {
    let refetch = match args {
        [] => false,
        [flag] if flag == "--refetch" => true,
        _ => {
            return Err(Error::Usage(format!(
                "payloads takes only --refetch\n\n{USAGE}"
            )))
        }
    };
    let payloads = xtask::linux::prepare(refetch)?;
    println!("xtask: {}", xtask::linux::summary(&payloads));
    Ok(())
}

fn fuzz(args: &[String]) -> Result<(), Error> {
    xtask::fuzz::main(args)
}
