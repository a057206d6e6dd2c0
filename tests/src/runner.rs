//! The system-test runner behind `cargo test -p tessera-system-tests`:
//! filters, runs at most two QEMUs at once (CI has two cores), prints one
//! line per test and a summary, and saves every console log.
//!
//! Images come from `TESSERA_IMAGES` (set by `cargo xtask test`). Without it
//! the tests are skipped with a message, so a plain `cargo test --workspace`
//! passes before any image is built.

use crate::qemu::{on_path, Failure, Qemu, QemuConfig, QEMU};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Environment variable naming the directory of built images.
pub const IMAGES_ENV: &str = "TESSERA_IMAGES";
/// Environment variable overriding how many QEMUs run at once.
pub const JOBS_ENV: &str = "TESSERA_TEST_JOBS";

/// One system test.
pub struct SystemTest {
    pub name: &'static str,
    /// Hard limit for the whole test, QEMU included.
    pub timeout: Duration,
    pub run: fn(&Context) -> Result<(), Failure>,
}

/// What a running test may use.
pub struct Context {
    pub name: &'static str,
    pub images: PathBuf,
    pub logs: PathBuf,
    pub deadline: Duration,
    boots: AtomicUsize,
}

impl Context {
    /// `<images>/<image>/tessera.img`.
    pub fn image(&self, image: &str) -> PathBuf {
        self.images.join(image).join("tessera.img")
    }

    /// Scratch space for this test.
    pub fn scratch(&self) -> PathBuf {
        self.logs.join(self.name)
    }

    /// Tessera's standard QEMU set-up for `image`, logging to
    /// `<logs>/<test>[-n].log` and bounded by the test's deadline.
    pub fn config(&self, image: &str, smp: u32) -> QemuConfig {
        let boot = self.boots.fetch_add(1, Ordering::Relaxed);
        let log = match boot {
            0 => format!("{}.log", self.name),
            n => format!("{}-{n}.log", self.name),
        };
        QemuConfig::tessera(self.image(image))
            .smp(smp)
            .log(self.logs.join(log))
            .deadline(self.deadline)
    }

    /// Boots `config`; a guest `TEST … FAIL` line fails the test at once.
    pub fn boot(&self, config: &QemuConfig) -> Result<Qemu, Failure> {
        let mut qemu = Qemu::spawn(config)?;
        qemu.forbid(r"TEST \S+ FAIL", "a guest test failed")?;
        Ok(qemu)
    }
}

/// How one test ended.
struct Outcome {
    name: &'static str,
    result: Result<(), Failure>,
}

struct Options {
    filters: Vec<String>,
    exact: bool,
    list: bool,
    jobs: usize,
}

fn parse_args() -> Options {
    let mut options = Options {
        filters: Vec::new(),
        exact: false,
        list: false,
        jobs: std::env::var(JOBS_ENV)
            .ok()
            .and_then(|j| j.parse().ok())
            .unwrap_or(2),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => options.list = true,
            "--exact" => options.exact = true,
            "--test-threads" => {
                if let Some(n) = args.next().and_then(|n| n.parse().ok()) {
                    options.jobs = n;
                }
            }
            // libtest flags cargo may pass (--nocapture, --quiet, ...) do not
            // apply to this runner.
            flag if flag.starts_with('-') => {
                if let Some(n) = flag
                    .strip_prefix("--test-threads=")
                    .and_then(|n| n.parse().ok())
                {
                    options.jobs = n;
                }
            }
            filter => options.filters.push(filter.to_owned()),
        }
    }
    options.jobs = options.jobs.max(1);
    options
}

fn selected(options: &Options, name: &str) -> bool {
    options.filters.is_empty()
        || options.filters.iter().any(|f| {
            if options.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        })
}

/// Runs `tests` as the main function of a `harness = false` test binary.
pub fn run_main(tests: &[SystemTest]) -> ExitCode {
    let options = parse_args();
    let tests: Vec<&SystemTest> = tests
        .iter()
        .filter(|t| selected(&options, t.name))
        .collect();
    if options.list {
        for test in &tests {
            println!("{}: test", test.name);
        }
        return ExitCode::SUCCESS;
    }
    let Some(images) = std::env::var_os(IMAGES_ENV).map(PathBuf::from) else {
        println!(
            "system tests skipped: {IMAGES_ENV} is not set, so no images are built; \
             `cargo xtask test` builds them and runs these tests"
        );
        return ExitCode::SUCCESS;
    };
    if !images.is_dir() {
        // cargo runs tests from the package directory, so a relative path
        // given from the workspace root lands here.
        println!(
            "system tests FAILED: {IMAGES_ENV}={} is not a directory (from {}); give an absolute path",
            images.display(),
            std::env::current_dir().unwrap_or_default().display()
        );
        return ExitCode::FAILURE;
    }
    if !on_path(QEMU) {
        println!("system tests FAILED: {QEMU} is not installed (run scripts/setup.sh)");
        return ExitCode::FAILURE;
    }
    let logs = images
        .parent()
        .unwrap_or(Path::new("."))
        .join("system-tests");
    println!(
        "running {} system tests, {} at a time; console logs in {}",
        tests.len(),
        options.jobs,
        logs.display()
    );

    let queue = Mutex::new(tests.iter().copied());
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.min(tests.len().max(1)) {
            scope.spawn(|| loop {
                let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                let Some(test) = next else { break };
                let context = Context {
                    name: test.name,
                    images: images.clone(),
                    logs: logs.clone(),
                    deadline: test.timeout,
                    boots: AtomicUsize::new(0),
                };
                let begin = Instant::now();
                let result = (test.run)(&context);
                let elapsed = begin.elapsed();
                match &result {
                    Ok(()) => println!("test {} ... ok ({:.1}s)", test.name, elapsed.as_secs_f64()),
                    Err(failure) => println!(
                        "test {} ... FAILED ({:.1}s)\n{failure}\n",
                        test.name,
                        elapsed.as_secs_f64()
                    ),
                }
                if let Ok(mut results) = results.lock() {
                    results.push(Outcome {
                        name: test.name,
                        result,
                    });
                }
            });
        }
    });

    let results = results.into_inner().unwrap_or_default();
    let failed: Vec<&str> = results
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.name)
        .collect();
    println!(
        "\nsystem tests: {} passed, {} failed in {:.1}s{}",
        results.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (failed: {})", failed.join(", "))
        }
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
