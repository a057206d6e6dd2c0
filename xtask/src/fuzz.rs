//! `cargo xtask fuzz`: run the `cargo fuzz` targets in `fuzz/` with a time
//! budget, installing what cargo-fuzz needs on first use.
//!
//! The one idea: a new user types one command and gets a bounded fuzzing
//! run. cargo-fuzz builds with sanitizers, which need a nightly compiler,
//! so the run is `cargo +nightly fuzz run`; the nightly toolchain and the
//! `cargo-fuzz` binary are installed (with a message saying so) when missing.
//! The fuzz crate itself stays buildable on the pinned stable toolchain with
//! a plain `cargo build` in `fuzz/`.

use crate::error::{io, Error};
use crate::tools::{cargo, describe, find_program, output, run};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The toolchain cargo-fuzz builds with (`-Zsanitizer` is nightly-only).
pub const TOOLCHAIN: &str = "nightly";
/// Time budget of a run that names none, in seconds.
pub const DEFAULT_SECONDS: u64 = 300;
/// Time budget of `--smoke`, in seconds: enough to build confidence that a
/// target starts, runs and finds nothing trivial.
pub const SMOKE_SECONDS: u64 = 20;
/// The target name that means "every target, one after another".
pub const ALL: &str = "all";

/// `cargo xtask fuzz --help`.
pub const USAGE: &str =
    "usage: cargo xtask fuzz <TARGET|all> [OPTIONS] [CARGO_FUZZ_ARGS...] [-- LIBFUZZER_ARGS...]
       cargo xtask fuzz --list

Runs `cargo +nightly fuzz run TARGET` in fuzz/, for a bounded time. The nightly
toolchain and cargo-fuzz are installed on first use.

options:
  --smoke         run for 20 s (per target with `all`)
  --time SECS     run for SECS seconds (default 300; 0 means until stopped or a crash)
  --list          list the fuzz targets

Other arguments go to `cargo fuzz run` (e.g. a corpus directory, `--release`);
arguments after `--` go to libFuzzer (e.g. `-runs=1000`, `-jobs=4`). A
`-max_total_time=` given there overrides --time/--smoke.";

/// A parsed `cargo xtask fuzz` command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Print the targets.
    List,
    /// Print the usage.
    Help,
    /// Run targets.
    Run(Options),
}

/// What to run and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// A target name, or [`ALL`].
    pub target: String,
    /// The time budget in seconds; 0 means none.
    pub seconds: u64,
    /// Passed to `cargo fuzz run` after the target.
    pub cargo_fuzz_args: Vec<String>,
    /// Passed to libFuzzer, after `--`.
    pub libfuzzer_args: Vec<String>,
}

fn usage(message: &str) -> Error {
    Error::Usage(format!("{message}\n\n{USAGE}"))
}

/// Parses the arguments after `cargo xtask fuzz`.
pub fn parse_args(args: &[String]) -> Result<Request, Error> {
    let (ours, libfuzzer) = match args.iter().position(|a| a == "--") {
        Some(split) => (&args[..split], &args[split + 1..]),
        None => (args, &[][..]),
    };
    let mut target = None;
    let mut seconds = None;
    let mut cargo_fuzz_args = Vec::new();
    let mut it = ours.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" | "help" if target.is_none() => return Ok(Request::Help),
            "--list" | "list" if target.is_none() => return Ok(Request::List),
            "--smoke" => seconds = Some(SMOKE_SECONDS),
            "--time" => {
                let value = it
                    .next()
                    .ok_or_else(|| usage("--time needs a number of seconds"))?;
                let parsed = value.parse::<u64>().map_err(|_| {
                    usage(&format!("--time needs a number of seconds, not `{value}`"))
                })?;
                seconds = Some(parsed);
            }
            name if target.is_none() && !name.starts_with('-') => target = Some(name.to_owned()),
            other => cargo_fuzz_args.push(other.to_owned()),
        }
    }
    let target = target.ok_or_else(|| usage("fuzz needs a target name"))?;
    Ok(Request::Run(Options {
        target,
        seconds: seconds.unwrap_or(DEFAULT_SECONDS),
        cargo_fuzz_args,
        libfuzzer_args: libfuzzer.to_vec(),
    }))
}

/// The `[[bin]]` names of a cargo-fuzz manifest, in file order.
pub fn targets_in_manifest(manifest: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        if !in_bin {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() == "name" {
            let name = value.trim().trim_matches('"');
            if !name.is_empty() {
                targets.push(name.to_owned());
            }
        }
    }
    targets
}

/// The fuzz crate's directory.
pub fn fuzz_dir() -> PathBuf {
    crate::repo_root().join("fuzz")
}

/// The targets `fuzz/Cargo.toml` declares.
pub fn targets(dir: &Path) -> Result<Vec<String>, Error> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(io(&manifest))?;
    Ok(targets_in_manifest(&text))
}

/// The `cargo fuzz run` command line for one target: libFuzzer gets the
/// time budget unless its own arguments already set one.
pub fn command(target: &str, options: &Options, dir: &Path) -> Command {
    // The rustup proxy, not `$CARGO`: only the proxy understands `+nightly`.
    let mut command = Command::new("cargo");
    command
        .current_dir(dir)
        // Set by the cargo that runs xtask; they would pin the nested cargo
        // to the stable toolchain and this workspace.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_MANIFEST_PATH")
        .arg(format!("+{TOOLCHAIN}"))
        .args(["fuzz", "run", target])
        .args(&options.cargo_fuzz_args)
        .arg("--");
    let budget_given = options
        .libfuzzer_args
        .iter()
        .any(|a| a.starts_with("-max_total_time="));
    if options.seconds > 0 && !budget_given {
        command.arg(format!("-max_total_time={}", options.seconds));
    }
    command.args(&options.libfuzzer_args);
    command
}

/// Whether rustup has a `nightly` toolchain for this host.
fn have_nightly() -> Result<bool, Error> {
    let out = output(Command::new("rustup").args(["toolchain", "list"]))?;
    let list = String::from_utf8_lossy(&out.stdout);
    Ok(out.status.success()
        && list
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .any(|name| name == TOOLCHAIN || name.starts_with(&format!("{TOOLCHAIN}-"))))
}

/// Whether cargo would find a `cargo fuzz` subcommand: `cargo-fuzz` on
/// `PATH` or in `$CARGO_HOME/bin`.
fn have_cargo_fuzz() -> bool {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    find_program("cargo-fuzz").is_some()
        || cargo_home.is_some_and(|home| home.join("bin").join("cargo-fuzz").is_file())
}

/// Installs the nightly toolchain and cargo-fuzz if either is missing.
pub fn ensure_tools() -> Result<(), Error> {
    if find_program("rustup").is_none() {
        return Err(Error::Failed(
            "cargo xtask fuzz needs rustup (https://rustup.rs) to get a nightly toolchain".into(),
        ));
    }
    if !have_nightly()? {
        let mut install = Command::new("rustup");
        install.args(["toolchain", "install", TOOLCHAIN, "--profile", "minimal"]);
        println!(
            "xtask: fuzzing needs a {TOOLCHAIN} toolchain (cargo-fuzz builds with sanitizers); \
             installing it: {}",
            describe(&install)
        );
        run(&mut install)?;
    }
    if !have_cargo_fuzz() {
        let mut install = cargo(["install", "cargo-fuzz", "--locked"]);
        println!(
            "xtask: cargo-fuzz is not installed; installing it once (a minute or two): {}",
            describe(&install)
        );
        run(&mut install)?;
    }
    Ok(())
}

/// `cargo xtask fuzz ARGS...`.
pub fn main(args: &[String]) -> Result<(), Error> {
    let dir = fuzz_dir();
    let request = parse_args(args)?;
    let known = targets(&dir)?;
    let options = match request {
        Request::Help => {
            println!("{USAGE}");
            return Ok(());
        }
        Request::List => {
            for target in &known {
                println!("{target}");
            }
            return Ok(());
        }
        Request::Run(options) => options,
    };
    let chosen: Vec<&str> = if options.target == ALL {
        known.iter().map(String::as_str).collect()
    } else if known.contains(&options.target) {
        vec![options.target.as_str()]
    } else {
        return Err(Error::Usage(format!(
            "no fuzz target `{}`; the targets are: {}, or `{ALL}`",
            options.target,
            known.join(", ")
        )));
    };

    ensure_tools()?;
    let mut failed = Vec::new();
    for target in chosen {
        let mut command = command(target, &options, &dir);
        let budget = match options.seconds {
            0 => "until stopped".to_string(),
            s => format!("for {s} s"),
        };
        println!("xtask: fuzzing {target} {budget}: {}", describe(&command));
        if let Err(error) = run(&mut command) {
            eprintln!("error: {error}");
            failed.push(target);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "fuzzing failed for {}; crash inputs are kept in fuzz/artifacts/<target>/",
            failed.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn run_options(line: &str) -> Options {
        match parse_args(&args(line)).unwrap() {
            Request::Run(options) => options,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn command_line(options: &Options) -> String {
        describe(&command(&options.target, options, Path::new("/fuzz")))
    }

    #[test]
    fn a_bare_target_runs_for_the_default_budget() {
        let options = run_options("policy_loader");
        assert_eq!(
            options,
            Options {
                target: "policy_loader".into(),
                seconds: DEFAULT_SECONDS,
                cargo_fuzz_args: vec![],
                libfuzzer_args: vec![],
            }
        );
        assert_eq!(
            command_line(&options),
            "cargo +nightly fuzz run policy_loader -- -max_total_time=300"
        );
    }

    #[test]
    fn smoke_and_time_set_the_budget_and_zero_means_none() {
        assert_eq!(run_options("x --smoke").seconds, SMOKE_SECONDS);
        assert_eq!(run_options("--smoke x").seconds, SMOKE_SECONDS);
        assert_eq!(run_options("x --time 7").seconds, 7);
        assert_eq!(
            command_line(&run_options("x --time 0")),
            "cargo +nightly fuzz run x --"
        );
    }

    #[test]
    fn other_arguments_pass_through_to_cargo_fuzz_and_libfuzzer() {
        let options = run_options("system_dt corpus/extra --release -- -runs=100 -jobs=2");
        assert_eq!(
            command_line(&options),
            "cargo +nightly fuzz run system_dt corpus/extra --release -- -max_total_time=300 \
             -runs=100 -jobs=2"
        );
        // libFuzzer's own budget wins over ours.
        let options = run_options("x --smoke -- -max_total_time=5");
        assert_eq!(
            command_line(&options),
            "cargo +nightly fuzz run x -- -max_total_time=5"
        );
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for line in ["", "--smoke", "x --time", "x --time soon", "-- -runs=1"] {
            let err = parse_args(&args(line)).unwrap_err();
            assert!(matches!(err, Error::Usage(_)), "{line:?}: {err}");
        }
        assert_eq!(parse_args(&args("--list")).unwrap(), Request::List);
        assert_eq!(parse_args(&args("--help")).unwrap(), Request::Help);
    }

    #[test]
    fn targets_are_the_manifests_bin_names() {
        let manifest = r#"
[package]
name = "tessera-fuzz"

[dependencies]
name = "not a target"

[[bin]]
name = "hypercall_decode"
path = "fuzz_targets/hypercall_decode.rs"

[[bin]]
path = "fuzz_targets/vgic_mmio.rs"
name   =   "vgic_mmio"
"#;
        assert_eq!(
            targets_in_manifest(manifest),
            ["hypercall_decode", "vgic_mmio"]
        );
    }

    #[test]
    fn the_repositorys_targets_include_the_policy_loader() {
        let targets = targets(&fuzz_dir()).unwrap();
        assert!(targets.iter().any(|t| t == "policy_loader"), "{targets:?}");
        assert!(targets.len() >= 7, "{targets:?}");
    }
}
