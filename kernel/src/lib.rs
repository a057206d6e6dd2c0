//! The portable half of the Tessera EL2 kernel.
//!
//! Everything here builds for the host and is unit-tested there: stage-2
//! tables over fake memory, the scheduler and vCPU placement, hypercall
//! decoding, PSCI state, the virtual GIC's register model and the host-DT
//! parser. The system
//! description (parser, validation, guest DTs) is its own crate,
//! `tessera-sysdesc`, shared with domB and xtask.
//! Arch code (`arch/`) sits behind small traits; only the aarch64 binary
//! (`main.rs`) links the real backend.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod addr;
pub mod console_input;
pub mod console_lines;
pub mod control;
pub mod esr;
pub mod evtchn;
pub mod fdt_nop;
pub mod grant;
pub mod hostdt;
pub mod hypercall;
pub mod idregs;
pub mod image;
pub mod lazy_ram;
pub mod pagetable;
pub mod placement;
pub mod power;
pub mod ram;
pub mod sched;
pub mod serving;
pub mod vgic;
