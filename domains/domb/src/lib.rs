//! domB's logic: the boot domain that builds every other domain from the
//! system device tree through policy-checked control hypercalls, then stays
//! resident to carry out each domain's `on-crash` action.
//!
//! The one idea: everything domB *decides* lives here, as plain functions
//! over small input structs, so it is tested on the host; everything domB
//! *does* (hypercalls, copying modules, printing) belongs to the EL1 shell,
//! `src/main.rs`.
//!
//! - [`hyperlaunch`] reads the system description (`tessera-sysdesc`):
//!   which domains domB builds and in which order, their links, each one's
//!   `CreateDomain` (device model, pins), guest device tree and `on-crash`
//!   policy, and what it refuses.
//! - [`modules`] reads the image's module table, which the kernel maps
//!   read-only into domB (docs/02, "Hyperlaunch").
//! - [`layout`] places a domain's payloads and device tree in its RAM
//!   exactly as the kernel's dom0less loader does.
//! - [`plan`] turns the boot-ordered domain list into the ordered build
//!   steps domB issues (create, memory, payloads, guest DTB, lent regions,
//!   links, store introduction, measurement, unpause).
//! - [`measure`] hashes each domain's payloads, generated DTB and security
//!   label with SHA-256 into a TCG crypto-agile event log, computes the PCR
//!   values the log implies, replays a log, and formats the boot line.
//! - [`supervisor`] is the `on-crash` state machine: stop, restart with
//!   back-off and a restart budget, or reboot the system, and a reboot a
//!   domain asks for (at once, in place); it also says which peers must
//!   hear that a domain restarted.
//!
//! # How the EL1 shell uses it
//! `src/main.rs`, built for `aarch64-unknown-none` on `tessera-rt` as
//! `domains/devmodel` is:
//! 1. finds the module table through its DT's initrd range, parses the
//!    system description from it and checks it with
//!    [`hyperlaunch::Hyperlaunch::new`];
//! 2. validates the plan with [`plan::Plan::new`], then builds each domain,
//!    paused, with [`plan::Plan::try_for_each_build_step`] and, once all are
//!    built, starts each with [`plan::Plan::try_for_each_start_step`] (a
//!    rebuild does both for one domain), turning each [`plan::Step`] into a
//!    control hypercall (`CreateDomain` from
//!    [`hyperlaunch::create_request`]); a domain whose build fails is
//!    destroyed and the rest go on;
//! 3. on `Step::Measure`, records the domain's payload digests (from the
//!    module table) and hashes its DTB and label into a
//!    [`measure::EventLog`], and prints [`measure::BootLine`];
//! 4. registers every built domain with a [`supervisor::Supervisor`] and
//!    links the ends of every link, then sleeps until `VIRQ_DOM_EXC` (a
//!    domain stopped) or the timer set to
//!    [`supervisor::Supervisor::next_deadline`], feeds the matching
//!    [`supervisor::Event`], and carries out the actions. A `Rebuild`
//!    destroys the old domain and walks the rebuild steps again; a
//!    `ResetInPlace` (a domain that asked to reboot) walks
//!    [`plan::Plan::try_for_each_reboot_step`], whose first step has the
//!    kernel reset the domain in place (`ResetDomain`), and falls back to a
//!    rebuild if that fails; binding a static channel to a running peer is
//!    what tells that peer (the kernel raises its port).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod hyperlaunch;
pub mod layout;
pub mod measure;
pub mod modules;
pub mod plan;
pub mod supervisor;

/// A domain's identifier as the kernel and Xen-compatible guests see it
/// (Xen's `domid_t`, 16 bits); domB's logic only compares and prints it.
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
