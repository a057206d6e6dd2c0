//! `tessera-testguest`: one bare-metal EL1 binary holding every in-guest test
//! and benchmark; bootargs `test=<name>` or `bench=<name>` choose one.
//!
//! The one idea: a test prints exactly one line `TEST <name> PASS` or
//! `TEST <name> FAIL <reason>` and then shuts the domain down (poweroff on
//! PASS, crash on FAIL), so the harness needs only the serial log. Progress
//! lines never start with `TEST `. With the bootargs word `native` the same
//! binary runs on bare QEMU (no hypervisor) for baselines.
//!
//! On the host this is an empty program, so the workspace builds and lints;
//! `cargo test -p tessera-testguest` runs the host tests of its pure parts.
#![cfg_attr(all(target_arch = "aarch64", target_os = "none"), no_std, no_main)]
#![forbid(unsafe_op_in_unsafe_fn)]
// A failure reason is a fixed 200-byte buffer because there is no allocator
// to box it; it is returned once, on the path that ends the test.
#![allow(clippy::result_large_err)]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
#[macro_use]
mod check;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod bench;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod console_input;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod control_loop;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod domctl;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod events;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod grants;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod hypercalls;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod interrupts;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod ipc_bench;
// Pure arithmetic: on the host only for its unit tests.
#[cfg(any(test, all(target_arch = "aarch64", target_os = "none")))]
mod jitter;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod link;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod misc;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod pingpong;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod psci;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod restart;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod smp;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod guest {
    use crate::check::TestResult;
    use tessera_ipc::hypercall::ShutdownReason;
    use tessera_rt::bootargs::{BootArgs, Mode};
    use tessera_rt::console::print_result;
    use tessera_rt::println;

    /// How a passing test ends the domain.
    enum OnPass {
        /// `sched_op` shutdown(poweroff) (PSCI SYSTEM_OFF natively).
        Poweroff,
        /// PSCI SYSTEM_OFF, which the `psci` test exercises on purpose.
        PsciSystemOff,
    }

    fn main(_dtb: usize) -> ! {
        let args = BootArgs::new(tessera_rt::bootargs());
        match args.mode() {
            Mode::Test(name) => run_test(name),
            Mode::Bench(name) => crate::bench::run(name),
            Mode::Unspecified => {
                println!(
                    "testguest: bootargs {:?} name no test= or bench=",
                    args.as_str()
                );
                print_result("unspecified", Err("no test= or bench= in bootargs"));
                tessera_rt::exit(ShutdownReason::Crash)
            }
        }
    }

    tessera_rt::entry!(main);

    fn run_test(name: &'static str) -> ! {
        tessera_rt::set_current_test(name);
        let (test, on_pass): (fn() -> TestResult, OnPass) = match name {
            "hypercalls" => (crate::hypercalls::run, OnPass::Poweroff),
            "psci" => (crate::psci::run, OnPass::PsciSystemOff),
            "timer" => (crate::interrupts::timer, OnPass::Poweroff),
            "sgi" => (crate::interrupts::sgi, OnPass::Poweroff),
            "heartbeat" => (crate::interrupts::heartbeat, OnPass::Poweroff),
            "timeslice" => (crate::smp::timeslice, OnPass::Poweroff),
            "concurrent" => (crate::misc::concurrent, OnPass::Poweroff),
            "console-input" => (crate::console_input::run, OnPass::Poweroff),
            "idregs" => (crate::misc::idregs, OnPass::Poweroff),
            "ioreq-rogue" => (crate::misc::ioreq_rogue, OnPass::Poweroff),
            "virtio-notify" => (crate::misc::virtio_notify, OnPass::Poweroff),
            "evtchn-local" => (crate::events::local, OnPass::Poweroff),
            "evtchn-deny" => (crate::events::deny, OnPass::Poweroff),
            "pingpong" => (crate::pingpong::run, OnPass::Poweroff),
            "grants" => (crate::grants::run, OnPass::Poweroff),
            "domctl-build" => (crate::domctl::build, OnPass::Poweroff),
            "domctl-deny" => (crate::domctl::deny, OnPass::Poweroff),
            "built" => (crate::domctl::built, OnPass::Poweroff),
            "restart-crasher" => (crate::restart::crasher, OnPass::Poweroff),
            "restart-peer" => (crate::restart::peer, OnPass::Poweroff),
            "evtchn-offer" => crate::events::offer(),
            "isolation-attacker" => crate::misc::isolation_attacker(),
            "crash" => crate::misc::crash(),
            "uart-first" => crate::misc::uart_first(),
            "reboot" => crate::misc::reboot(),
            "ticker" => crate::interrupts::ticker(),
            "control-loop" => crate::control_loop::run(),
            _ => {
                print_result(name, Err("unknown test"));
                tessera_rt::exit(ShutdownReason::Crash)
            }
        };
        match test() {
            Ok(()) => {
                print_result(name, Ok(()));
                match on_pass {
                    OnPass::Poweroff => tessera_rt::exit(ShutdownReason::Poweroff),
                    OnPass::PsciSystemOff => tessera_rt::psci::system_off(),
                }
            }
            Err(reason) => {
                print_result(name, Err(reason.as_str()));
                tessera_rt::exit(ShutdownReason::Crash)
            }
        }
    }
}

#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
fn main() {}
