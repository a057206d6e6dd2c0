//! `avc_hit`: instructions per cached policy check, measured on the host.
//!
//! Run `cargo run --release -p tessera-policy --example avc_bench`. The
//! program re-runs itself under `valgrind --tool=callgrind`, counting only
//! inside `avc_hit_loop` (10 M cached checks over the default policy), and
//! prints `BENCH name=avc_hit tessera=<instructions per check> native=- ratio=-`.
//! The figure includes the loop's own overhead (a few instructions), so it
//! is an upper bound on the check itself. Instruction counts, not time, so
//! the figure is the same on any x86-64 host and under load.

use std::hint::black_box;
use std::process::{Command, ExitCode};

use tessera_policy::compile::compile;
use tessera_policy::{Avc, EventPerm, GrantPerm, Mode, Perm, Policy, Sid, StorePerm};

const CHECKS: u64 = 10_000_000;
const INNER: &str = "--inner";

/// The measured region: `CHECKS` checks cycling through four cached
/// (source, target, permission) triples, so nothing can be hoisted.
#[inline(never)]
fn avc_hit_loop(avc: &mut Avc<'_>, triples: &[(Sid, Sid, Perm); 4], checks: u64) -> u64 {
    let mut allowed = 0;
    for i in 0..checks {
        let (s, t, p) = triples[(i & 3) as usize];
        allowed += avc.check(s, t, p).is_allowed() as u64;
    }
    allowed
}

fn run_checks() -> ExitCode {
    let bin = match compile(include_str!("../default.te")) {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("{}", e.in_file("policy/default.te"));
            return ExitCode::FAILURE;
        }
    };
    let Ok(policy) = Policy::load(&bin) else {
        eprintln!("avc_bench: the default policy does not load");
        return ExitCode::FAILURE;
    };
    let mut avc = Avc::new(policy, Mode::Enforcing);
    let sid = |ty: &str| avc.sid_of(&format!("system_u:system_r:{ty}"));
    let (Some(u), Some(s), Some(v)) = (sid("domU_t"), sid("xenstore_t"), sid("vtpm_t")) else {
        eprintln!("avc_bench: the default policy lacks domU_t, xenstore_t or vtpm_t");
        return ExitCode::FAILURE;
    };
    let triples: [(Sid, Sid, Perm); 4] = [
        (u, s, EventPerm::Send.into()),
        (s, u, EventPerm::Send.into()),
        (u, s, StorePerm::Read.into()),
        (v, u, GrantPerm::MapRead.into()),
    ];
    // Warm the cache outside the measured region.
    avc_hit_loop(&mut avc, &triples, 4);
    let allowed = avc_hit_loop(&mut avc, black_box(&triples), black_box(CHECKS));
    if allowed != CHECKS || avc.misses() != 4 {
        eprintln!(
            "avc_bench: expected {CHECKS} cached allows, got {allowed} with {} misses",
            avc.misses()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(INNER) {
        return run_checks();
    }
    let Ok(me) = std::env::current_exe() else {
        eprintln!("avc_bench: cannot find my own executable");
        return ExitCode::FAILURE;
    };
    let out = std::env::temp_dir().join(format!("avc_hit.{}.callgrind", std::process::id()));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--toggle-collect=*avc_hit_loop*")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--quiet")
        .arg(&me)
        .arg(INNER)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("avc_bench: the measured run failed ({s})");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("avc_bench: cannot run valgrind ({e}); install it to measure instructions");
            println!("BENCH name=avc_hit tessera=- native=- ratio=-");
            return ExitCode::FAILURE;
        }
    }
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    // callgrind writes "summary: <Ir>" (and "totals:" in older versions)
    // for the collected region only.
    let total = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    let Some(total) = total else {
        eprintln!("avc_bench: no instruction total in callgrind's output");
        return ExitCode::FAILURE;
    };
    // The warm-up call's few instructions are inside the collected region
    // too; they round away at 10 M checks.
    let per_check = total as f64 / CHECKS as f64;
    println!("BENCH name=avc_hit tessera={per_check:.1} native=- ratio=-");
    ExitCode::SUCCESS
}
