//! The system-test harness: boot a Tessera image under QEMU, read the serial
//! console line by line, and check what appears and what never does.
//!
//! The one idea: a test is a script of expectations over a growing log, each
//! bounded by a deadline, and QEMU dies with the [`Qemu`] handle, so no test
//! can hang CI or leave an emulator behind.

#![forbid(unsafe_code)]

pub mod hostdtb;
pub mod image;
pub mod linux;
pub mod qemu;
pub mod runner;
pub mod safety;

pub use qemu::{lit, Failure, Line, Qemu, QemuConfig};
pub use runner::{run_main, Context, SystemTest};
