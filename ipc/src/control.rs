//! Domain control: how a builder domain (domB) creates, loads, wires,
//! starts and stops other domains (`Op::Control`, Tessera-native).
//!
//! The one idea: a domain is built by a short sequence of small calls, each
//! checked by the policy against the domain it acts on, and the kernel keeps
//! every decision that protects it: the builder names a size (or a host
//! range) but the kernel picks and checks the memory; the builder names a
//! module of the image but the kernel copies it, within the domain's RAM.
//! The same calls are what the kernel itself does for a dom0less image.
//!
//! A new domain starts *created*: paused, with no memory and no vCPU
//! context. The usual order is `CreateDomain`, `AssignMemory`,
//! `CopyModule` / `CopyToDomain` (payload, initrd, the guest DTB the
//! builder generated), `BindEvtchn` / `ShareMemory`, `SetVcpuContext`
//! (entry point, x0 = the DTB), `Unpause`. The rules are in
//! `docs/01-hypercall-abi.md`, "Domain control".

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

crate::abi_enum! {
    /// Domain-control sub-command, in x0. Arguments in x1.. as listed; a
    /// domain is named by its id (`d<id>` in the kernel log).
    pub enum ControlCmd: u64 {
        /// x1 → [`CreateDomain`]. Returns the new domain's id (the one it
        /// asked for, or the lowest free one). The domain starts created
        /// (paused, no memory), with its device model and its pins (if it
        /// names them) fixed for its life. `domain create` towards the new
        /// domain's label.
        CreateDomain = 0,
        /// x1 = domain, x2 = bytes (a multiple of [`MEMORY_ALIGN`]), x3 = a
        /// host physical base ([`MEMORY_ANYWHERE`] for any free RAM): the
        /// domain's RAM at `platform::RAM_BASE`, zeroed. Once per domain,
        /// before it first runs. `domain create`.
        AssignMemory = 1,
        /// x1 = domain being built, x2 → [`ModuleInfo`]: look a module of the
        /// image up by index (empty name) or by name. `domain create`.
        ModuleInfo = 2,
        /// x1 = domain, x2 = module index, x3 = IPA: copy the whole module
        /// there; the range must lie in the domain's RAM. Returns the bytes
        /// copied. `mmu map_write`.
        CopyModule = 3,
        /// x1 = domain, x2 = source (the caller's virtual address), x3 = IPA,
        /// x4 = length (at most [`COPY_MAX`]): copy the caller's bytes into
        /// the domain's RAM (its generated DTB, say). `mmu map_write`.
        CopyToDomain = 4,
        /// x1 = domain, x2 = vCPU index, x3 = entry PC (4-aligned, in its
        /// RAM), x4 = x0 at entry (the guest DTB's IPA). The vCPU enters at
        /// EL1h with the MMU off, as PSCI CPU_ON starts one; vCPU 0 needs a
        /// context before `Unpause`. Only before the domain first runs.
        /// `domain setvcpucontext`.
        SetVcpuContext = 5,
        /// x1 = domain: start it (first time) or let it run again. A domain
        /// with a device model starts only once that device model has
        /// said it serves it (`IoreqCmd::Ready`); until then the first
        /// `Unpause` succeeds and the kernel holds its vCPUs.
        /// `domain unpause`.
        Unpause = 6,
        /// x1 = domain: stop scheduling its vCPUs. `domain pause`.
        Pause = 7,
        /// x1 = domain: stop it, close its channels and grants, and give its
        /// memory back once scrubbed. The id is free again afterwards.
        /// `domain destroy`.
        Destroy = 8,
        /// x1 = domain, x2 → [`DomainInfo`], written. `domain getdomaininfo`.
        GetDomainInfo = 9,
        /// x1 = domain A, x2 = port in A, x3 = domain B, x4 = port in B: bind
        /// a static event channel between them, as `xen,evtchn-v1` does.
        /// `event create` on both, and each `event bind` on the other.
        BindEvtchn = 10,
        /// x1 → [`ShareMemory`]: map part of one domain's RAM into another
        /// domain's address space, as `xen,domain-shared-memory-v1` does.
        /// `mmu { map_read map_write }` on the owner, and `grant { map_read
        /// map_write }` each way between owner and user.
        ShareMemory = 11,
        /// x1 = domain, stopped because it asked to reboot (`exit_reason`
        /// Reboot): take it back, in place, to *created* (built, not yet
        /// run) for its next boot. Same id, vCPUs and pins, RAM (its
        /// content kept), stage 2 with the regions shared into it, and
        /// device model (registration and readiness); vCPU state, contexts,
        /// virtual GIC and timers start afresh, its event channels and
        /// grants are gone (closed when it stopped), and `generation` goes
        /// up by one. The builder then loads it again (`CopyModule`,
        /// `CopyToDomain`, `SetVcpuContext`, `BindEvtchn`) and unpauses it.
        /// `domain reset`.
        ResetDomain = 12,
    }
}

/// Domain RAM is assigned in 2 MiB blocks (stage-2 block mappings).
pub const MEMORY_ALIGN: u64 = 2 << 20;
/// `AssignMemory` x3: let the kernel choose free RAM.
pub const MEMORY_ANYWHERE: u64 = u64::MAX;
/// Most bytes one `CopyToDomain` moves.
pub const COPY_MAX: u64 = 1 << 20;
/// Longest domain name, NUL padded.
pub const NAME_LEN: usize = 32;
/// Longest security context, NUL padded.
pub const LABEL_LEN: usize = 64;
/// Longest module name, NUL padded (as in the module table).
pub const MODULE_NAME_LEN: usize = crate::image::NAME_LEN;
/// The highest domain id (the kernel has this many domain slots).
pub const MAX_DOMID: u16 = 16;
/// Xen's `VIRQ_DOM_EXC`: the kernel raises it on the boot domain (the one
/// with `functions = "boot"`, in a hyperlaunch image) whenever another
/// domain stops, so the builder learns of a crash without polling; it then
/// asks `GetDomainInfo` which domain stopped and why.
pub const VIRQ_DOM_EXC: u32 = 3;

/// Argument of `CreateDomain`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CreateDomain {
    /// 1..=`platform::MAX_VCPUS_PER_DOMAIN`.
    pub vcpus: U32,
    /// The id it must have (a system description's `domid`, kept across a
    /// rebuild so static channels find it again), 1..=[`MAX_DOMID`]; 0
    /// takes the lowest free one. A taken id is `-EEXIST`, one whose last
    /// domain is still being reaped `-EBUSY`.
    pub domid: U16,
    /// `CREATE_*` bits; any other bit is `-EINVAL`.
    pub flags: U16,
    /// Its name in the log and in `(<name>)` console lines: printable
    /// ASCII, NUL padded, not empty.
    pub name: [u8; NAME_LEN],
    /// Its security context (`user:role:type`), NUL padded; it must be a
    /// context of the policy.
    pub label: [u8; LABEL_LEN],
    /// The id of the domain that serves its MMIO (its IOREQ server, the
    /// description's `tessera,device-model`), or 0 for none. That domain
    /// must exist already (`-ESRCH`) and not be the new domain itself
    /// (`-EINVAL`); no other domain may register as its server, and the
    /// domain does not run before its server says `IoreqCmd::Ready`.
    pub device_model: U16,
    /// How many entries of `pcpus` are used: 0 (not pinned) up to `vcpus`.
    pub nr_pcpus: U16,
    pub _pad: U32,
    /// `tessera,pcpus`: vCPU i runs on pCPU `pcpus[i % nr_pcpus]`, which the
    /// domain owns while it lives (no other domain's vCPU is placed there).
    /// Each below 64, none twice (`-EINVAL`); a pCPU the board lacks is
    /// `-ENXIO`, one another domain's vCPU runs on `-EBUSY`. Unused
    /// entries are 0.
    pub pcpus: [u8; MAX_PINS],
}
const _: () = assert!(core::mem::size_of::<CreateDomain>() == 120);

/// `CreateDomain::flags`: its device model emulates a PL011 for it
/// (`vpl011`), so keyboard input may go to it (the console focus). Needs a
/// `device_model`.
pub const CREATE_VPL011: u16 = 1;
/// `CreateDomain::flags`: the new domain is a device model its builder
/// restarts when it stops (`on-crash = "restart"`). When it stops, the
/// domains it serves are not stopped: their device accesses wait (the vCPU
/// blocks) until the next domain with its id registers them again and says
/// `IoreqCmd::Ready`, and are then delivered to it (docs/01, "A device
/// model restarts"). Without it, a device model's destruction stops the
/// domains it served.
pub const CREATE_RESTARTS: u16 = 2;
/// Every `CreateDomain` flag the kernel knows.
pub const CREATE_FLAGS: u16 = CREATE_VPL011 | CREATE_RESTARTS;
/// Most pins one `CreateDomain` carries: one per vCPU.
pub const MAX_PINS: usize = crate::platform::MAX_VCPUS_PER_DOMAIN;
/// pCPU numbers a pin may name are below this.
pub const MAX_PCPU_NUMBER: u8 = 64;

/// In and out argument of `ModuleInfo`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ModuleInfo {
    /// In: the index to look up when `name` is empty. Out: the index.
    pub index: U32,
    /// Out: an `image::ModuleKind` value.
    pub kind: U32,
    /// Out: the module's size in bytes.
    pub size: U64,
    /// In: a name to look up (NUL padded), or empty. Out: the name.
    pub name: [u8; MODULE_NAME_LEN],
}
const _: () = assert!(core::mem::size_of::<ModuleInfo>() == 64);

crate::abi_enum! {
    /// `DomainInfo::state`.
    pub enum DomainState: u8 {
        /// Created and not yet run: it is being built.
        Created = 0,
        /// Its vCPUs are scheduled.
        Running = 1,
        /// Paused after it ran.
        Paused = 2,
        /// Shut down, crashed or faulted: see `exit_reason`; destroy it.
        Stopped = 3,
        /// Being destroyed: its memory is scrubbed once no pCPU can still
        /// be using it.
        Dying = 4,
    }
}

crate::abi_enum! {
    /// `DomainInfo::exit_reason`: why a stopped domain stopped.
    pub enum ExitReason: u8 {
        /// It has not stopped.
        None = 0,
        /// `SCHEDOP_shutdown` poweroff or suspend, or PSCI SYSTEM_OFF.
        Poweroff = 1,
        /// A reboot it asked for that the kernel could not do itself (it
        /// has no image of a domain a builder made): its builder resets it
        /// in place (`ResetDomain`) or rebuilds it.
        Reboot = 2,
        /// `SCHEDOP_shutdown` crash or watchdog.
        Crash = 3,
        /// A stage-2 fault or an SError: the kernel stopped it.
        Fault = 4,
        /// Destroyed while it ran.
        Destroyed = 5,
    }
}

/// Output of `GetDomainInfo`.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DomainInfo {
    pub domid: U16,
    /// A [`DomainState`] value.
    pub state: u8,
    /// An [`ExitReason`] value.
    pub exit_reason: u8,
    pub vcpus: U32,
    /// Starts at 0 (the first boot) and counts the restarts the kernel did
    /// itself: its own reboots of a dom0less domain, and `ResetDomain`.
    /// domB numbers its rebuilds and reboots the same way.
    pub generation: U32,
    pub _pad: U32,
    /// Bytes of RAM (0 before `AssignMemory`).
    pub ram_size: U64,
    /// Where its RAM is in host memory (0 before `AssignMemory`).
    pub ram_host_base: U64,
    pub name: [u8; NAME_LEN],
}
const _: () = assert!(core::mem::size_of::<DomainInfo>() == 64);

/// Argument of `ShareMemory`: `size` bytes of `owner`'s RAM at `owner_ipa`
/// appear in `user` at `user_ipa`, read-write, never executable.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ShareMemory {
    pub owner: U16,
    pub user: U16,
    pub _pad: U32,
    /// Page-aligned, inside the owner's RAM.
    pub owner_ipa: U64,
    /// Page-aligned, in the user's shared-memory window
    /// ([`SHARE_WINDOW_BASE`], [`SHARE_WINDOW_SIZE`]).
    pub user_ipa: U64,
    /// A non-zero multiple of 4 KiB.
    pub size: U64,
}
const _: () = assert!(core::mem::size_of::<ShareMemory>() == 32);

/// Where a shared region may appear in its user: the guest-physical space
/// between the device frames and the grant window (as the static
/// `xen,domain-shared-memory-v1` regions do).
pub const SHARE_WINDOW_BASE: u64 = 0x1000_0000;
/// Size of the shared-memory window.
pub const SHARE_WINDOW_SIZE: u64 = crate::platform::GNTTAB_BASE - SHARE_WINDOW_BASE;
const _: () = assert!(SHARE_WINDOW_BASE > crate::platform::VIRTIO_MMIO_BASE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_numbers_are_errors() {
        assert_eq!(ControlCmd::try_from(13), Err(13));
        assert_eq!(ControlCmd::try_from(12), Ok(ControlCmd::ResetDomain));
        assert_eq!(ControlCmd::try_from(0), Ok(ControlCmd::CreateDomain));
        assert_eq!(DomainState::try_from(5), Err(5));
        assert_eq!(ExitReason::try_from(6), Err(6));
        assert_eq!(ExitReason::try_from(3), Ok(ExitReason::Crash));
    }

    #[test]
    fn layouts_have_no_hidden_offsets() {
        assert_eq!(core::mem::offset_of!(CreateDomain, domid), 4);
        assert_eq!(core::mem::offset_of!(CreateDomain, flags), 6);
        assert_eq!(core::mem::offset_of!(CreateDomain, name), 8);
        assert_eq!(core::mem::offset_of!(CreateDomain, label), 40);
        assert_eq!(core::mem::offset_of!(CreateDomain, device_model), 104);
        assert_eq!(core::mem::offset_of!(CreateDomain, nr_pcpus), 106);
        assert_eq!(core::mem::offset_of!(CreateDomain, _pad), 108);
        assert_eq!(core::mem::offset_of!(CreateDomain, pcpus), 112);
        assert_eq!(core::mem::offset_of!(ModuleInfo, name), 16);
        assert_eq!(core::mem::offset_of!(DomainInfo, ram_size), 16);
        assert_eq!(core::mem::offset_of!(DomainInfo, name), 32);
        assert_eq!(core::mem::offset_of!(ShareMemory, size), 24);
    }
}
