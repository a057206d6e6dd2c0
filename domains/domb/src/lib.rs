//! domB's logic: the boot domain that builds every other domain from the
//! system device tree through policy-checked control hypercalls, then stays
//! resident to carry out each domain's `on-crash` action.
//!
//! The one idea: everything domB *decides* lives here, as plain functions
//! over small input structs, so it is tested on the host; everything domB
//! *does* (hypercalls, copying modules, printing) belongs to the EL1 shell.
//! This crate depends on neither the system-description parser nor the
//! control-hypercall ABI, which are being written alongside it.
//!
//! - [`plan`] turns the boot-ordered domain list into the ordered build
//!   steps domB issues (create, memory, payloads, guest DTB, links, store
//!   introduction, measurement, unpause).
//! - [`measure`] hashes each domain's payloads, generated DTB and security
//!   label with SHA-256 into a TCG crypto-agile event log, computes the PCR
//!   values the log implies, replays a log, and formats the boot line.
//! - [`supervisor`] is the `on-crash` state machine: stop, restart with
//!   back-off and a restart budget, or reboot the system; it also says which
//!   peers must hear that a domain restarted.
//!
//! # How the EL1 shell will use it (not written yet)
//! `src/main.rs`, built for `aarch64-unknown-none` on `tessera-rt` exactly as
//! `domains/devmodel` is (`build = "../rt/guest-build.rs"` and a `[[bin]]`
//! with `test = false`), will:
//! 1. read the system description (the `sysdesc` crate) and convert each
//!    domain and link into [`plan::DomainSpec`] / [`plan::LinkSpec`];
//! 2. validate them with [`plan::Plan::new`], then walk
//!    [`plan::Plan::try_for_each_step`], turning each [`plan::Step`] into a
//!    control hypercall and stopping at the first failure;
//! 3. on `Step::Measure`, feed the domain's bytes through a
//!    [`measure::EventLog`] kept in a static buffer, print
//!    [`measure::BootLine`], and hand the log to the domain's vTPM;
//! 4. register every domain with a [`supervisor::Supervisor`] in boot order
//!    and [`supervisor::Supervisor::link`] the ends of every link, then loop:
//!    wait for a crash VIRQ or the timer set to
//!    [`supervisor::Supervisor::next_deadline`], feed the matching
//!    [`supervisor::Event`], and carry out the returned actions. A
//!    `Rebuild` walks [`plan::Plan::try_for_each_rebuild_step`] with a fresh
//!    event log, then tells each listed peer that its peer restarted.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod measure;
pub mod plan;
pub mod supervisor;

/// A domain's identifier as the kernel and Xen-compatible guests see it
/// (Xen's `domid_t`, 16 bits).
///
/// It lives here until the control-hypercall ABI in `ipc/` defines the
/// shared type; domB's logic only compares and prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);

impl core::fmt::Display for DomainId {
    /// The form every Tessera log line uses: `d<id>`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "d{}", self.0)
    }
}

/// A payload module domB copies into a domain before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// The kernel or bare-metal image (`multiboot,kernel`).
    Kernel,
    /// The initial ramdisk (`multiboot,ramdisk`).
    Ramdisk,
    /// A partial device tree merged into the guest DTB
    /// (`multiboot,device-tree`).
    PartialDtb,
}

impl PayloadKind {
    /// The name used in event logs and boot lines.
    pub const fn name(self) -> &'static str {
        match self {
            PayloadKind::Kernel => "kernel",
            PayloadKind::Ramdisk => "ramdisk",
            PayloadKind::PartialDtb => "partial-dtb",
        }
    }
}
