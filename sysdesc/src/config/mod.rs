//! The system description: which domains an image boots, parsed from the
//! compiled `system.dts` (Xen's dom0less binding under `/chosen`, plus the
//! `tessera,module` extension naming an entry of the image's module table).
//!
//! A module node without `tessera,module` names its payload the way Xen's
//! dom0less trees (and ImageBuilder, which writes them) do: by `reg`, the
//! address a boot loader put it at. Tessera loads nothing from there (every
//! payload is in the unified image); the address only identifies the
//! module, which is packed under the name `reg@<address>`
//! ([`ModuleSpec::load_address`]) and which `cargo xtask build` finds in
//! the image's `modules.map`.
//!
//! The one idea: everything is validated here, once, into plain bounded
//! values. Code downstream (domain building, the image packer) works from a
//! `SystemConfig` that is already known good, and a bad description fails
//! with an error naming the node and the property, e.g.
//! `/chosen/domU1: property "cpus": 9 vCPUs requested, at most 8 allowed`.
//!
//! Static links between domains (Xen's `xen,evtchn-v1` event channels and
//! `xen,domain-shared-memory-v1` regions) are parsed in `links`, after every
//! domain is known, because a link names nodes in two domains.
//!
//! The hyperlaunch properties (`domid`, `functions`, `boot-order`,
//! `on-crash`, `tessera,pcpus`...) that a boot domain needs to build the
//! others are parsed in `hyperlaunch`, which also computes the boot order.
//!
//! Which device model serves a domain, and with which virtio devices, has
//! two spellings that mean the same: `tessera,device-model` with
//! `tessera,virtio`, or hyperlaunch's one `tessera,devices` (the server,
//! then the kinds). Both become the same `device_model` and `virtio`, so
//! nothing downstream knows which one a description used.

// A `ConfigError` carries the paths it names by value (up to two), so it
// outlives the blob; it is built once, at boot, on the failure path only.
#![allow(clippy::result_large_err)]

mod hyperlaunch;
mod links;

use core::fmt;

use crate::dtb::{
    self, is_compatible, prop, string_value, u32_value, u64_value, DtbFormatError, Node, NodePath,
};
use tessera_ipc::platform::MAX_VCPUS_PER_DOMAIN;

use crate::guest_dt::{GuestShm, ServedDomain};
pub use hyperlaunch::{
    BootCycle, CycleStep, Function, Functions, OnCrash, StartsBefore, MAX_PCPUS,
};

/// Most domains one system description may declare.
pub const MAX_DOMAINS: usize = 16;
/// Longest domain name (the node name without its unit address).
pub const MAX_DOMAIN_NAME: usize = 32;
/// Longest module-table entry name.
pub const MAX_MODULE_NAME: usize = 48;
/// Longest kernel command line.
pub const MAX_BOOTARGS: usize = 256;
/// Longest security label.
pub const MAX_SECURITY_LABEL: usize = 64;
/// The label of a domain that names none. Copied from
/// `tessera_policy::DEFAULT_DOMAIN_LABEL`: this crate, like the kernel's
/// boot path, needs no part of the policy engine (xtask's tests check the
/// two agree).
pub const DEFAULT_SECURITY_LABEL: &str = "system_u:system_r:domU_t";
/// `xen,static-mem` ranges are mapped with 2 MiB stage-2 blocks.
pub const STATIC_MEM_ALIGN: u64 = 2 << 20;
/// Domain memory is given in KiB and must be a whole number of 4 KiB pages.
const PAGE_KIB: u64 = 4;

const MAX_VCPUS: u32 = MAX_VCPUS_PER_DOMAIN as u32;

/// Most static event channels (pairs of `xen,evtchn-v1` nodes) in one
/// system description.
pub const MAX_STATIC_EVTCHNS: usize = 64;
/// Most distinct static shared-memory regions (`xen,shm-id` values).
pub const MAX_SHM: usize = 16;
/// Most domains sharing one region. Kept small: a `SystemConfig` lives on
/// the boot stack.
pub const MAX_SHM_USERS: usize = 4;
/// `xen,shm-id` is at most this many bytes including its NUL, as Xen's
/// `MAX_SHM_ID_LENGTH`; so at most 15 characters.
pub const MAX_SHM_ID: usize = 16;
/// Shared-memory addresses and sizes are whole 4 KiB pages.
pub const SHM_ALIGN: u64 = 4096;
/// Guest-physical addresses at or above this are outside the stage-2
/// input range (39 bits: a level-1 start with 4 KiB granules).
pub const STAGE2_IPA_LIMIT: u64 = 1 << 39;

// Property names, as they appear in errors.
const P_COMPATIBLE: &str = "compatible";
const P_MEMORY: &str = "memory";
const P_CPUS: &str = "cpus";
const P_MODULE: &str = "tessera,module";
const P_REG: &str = "reg";
const P_BOOTARGS: &str = "bootargs";
const P_LABEL: &str = "xen,security-label";
const P_STATIC_MEM: &str = "xen,static-mem";
const P_STATIC_ADDR_CELLS: &str = "#xen,static-mem-address-cells";
const P_STATIC_SIZE_CELLS: &str = "#xen,static-mem-size-cells";
const P_VPL011: &str = "vpl011";
const P_XEN_ENHANCED: &str = "xen,enhanced";
const P_POLICY_MODE: &str = "tessera,policy-mode";
const P_DEVICE_MODEL: &str = "tessera,device-model";
const P_VIRTIO: &str = "tessera,virtio";
const P_DEVICES: &str = "tessera,devices";

/// Most virtio-mmio devices one domain may have.
pub const MAX_VIRTIO: usize = 8;

/// A virtio device a device model offers a guest (`tessera,virtio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum VirtioKind {
    Net = 1,
    Blk = 2,
    Console = 3,
    Rng = 4,
}

impl VirtioKind {
    /// Parse one `tessera,virtio` entry.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "net" => Some(Self::Net),
            "blk" => Some(Self::Blk),
            "console" => Some(Self::Console),
            "rng" => Some(Self::Rng),
            _ => None,
        }
    }

    /// The name used in device trees.
    pub fn name(self) -> &'static str {
        match self {
            Self::Net => "net",
            Self::Blk => "blk",
            Self::Console => "console",
            Self::Rng => "rng",
        }
    }
}

/// The validated system description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemConfig {
    /// In device-tree order. The kernel's dom0less builder builds them in
    /// this order; a boot domain starts them in `boot_order()`.
    pub domains: heapless::Vec<DomainConfig, MAX_DOMAINS>,
    /// Static event channels, each listed once (see `StaticEvtchn`).
    pub evtchns: heapless::Vec<StaticEvtchn, MAX_STATIC_EVTCHNS>,
    /// Static shared-memory regions, one per `xen,shm-id`, in order of
    /// first use.
    pub shm: heapless::Vec<SharedMem, MAX_SHM>,
    /// `/chosen` `tessera,policy-mode`: `"enforcing"` (the default) or
    /// `"permissive"` (denials are logged, not enforced).
    pub policy_enforcing: bool,
}

/// One domain under `/chosen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// The node name without its unit address, e.g. `domU1`.
    pub name: heapless::String<MAX_DOMAIN_NAME>,
    /// Guest RAM in bytes, a whole number of 4 KiB pages.
    pub memory_bytes: u64,
    /// 1..=`MAX_VCPUS_PER_DOMAIN`.
    pub vcpus: u32,
    pub kernel: ModuleSpec,
    pub ramdisk: Option<ModuleSpec>,
    /// From the kernel module node; empty if absent.
    pub bootargs: heapless::String<MAX_BOOTARGS>,
    /// `user:role:type`.
    pub security_label: heapless::String<MAX_SECURITY_LABEL>,
    /// Host-physical memory this domain must be given, if fixed.
    pub static_mem: Option<MemRange>,
    /// Whether the domain gets an emulated PL011 (from its device model).
    pub vpl011: bool,
    /// `vpl011` was asked for, but no device model says who emulates it: a
    /// tree written for Xen, whose hypervisor emulates the PL011 itself
    /// (ImageBuilder sets `vpl011` on every domain). Tessera's kernel
    /// emulates no device, so such a domain gets no PL011 (`vpl011`
    /// is false) and its console is the hypervisor console (`console_io`);
    /// `cargo xtask build` and `check` warn.
    pub vpl011_unserved: bool,
    /// `tessera,device-model = "<domain name>"` (or the first entry of
    /// `tessera,devices`): the domain (index) whose IOREQ server emulates
    /// this one's devices.
    pub device_model: Option<usize>,
    /// `tessera,virtio` (or the entries of `tessera,devices` after the
    /// first): the virtio-mmio devices, in slot order.
    pub virtio: heapless::Vec<VirtioKind, MAX_VIRTIO>,
    /// `xen,enhanced` is present and not `"disabled"`: the domain gets the
    /// Xen `/hypervisor` node (grant table, event-channel PPI) in its DT.
    pub xen_enhanced: bool,
    /// The domain is introduced to xenstored: `xen,enhanced` is empty or
    /// `"enabled"` (not `"no-xenstore"`).
    pub xenstore: bool,
    /// `domid`, 1..=`MAX_DOMAINS`, unique; without one, the lowest id no
    /// other domain has, in device-tree order (so device-tree order from 1
    /// when no domain names one). The kernel's dom0less builder still
    /// numbers domains in tree order; a boot domain honours this.
    pub domid: u16,
    /// `functions`: the roles this domain plays, plus `DeviceModel` if
    /// another domain names it as its device model.
    pub functions: Functions,
    /// `boot-order`: a rank, lower starts first; 0 when absent.
    pub boot_order: u32,
    /// `on-crash`: what happens when the domain crashes.
    pub on_crash: OnCrash,
    /// `tessera,restart-backoff-ms`: the wait before a restart (only with
    /// `on-crash = "restart"`); `None` leaves it to the builder.
    pub restart_backoff_ms: Option<u32>,
    /// `tessera,pcpus`: vCPU i runs on pCPU `pcpus[i]` (vCPUs beyond the
    /// list share the pins in turn); empty means not pinned. No duplicates,
    /// at most `vcpus` entries, each below `MAX_PCPUS`.
    pub pcpus: heapless::Vec<u32, MAX_VCPUS_PER_DOMAIN>,
}

/// One end of a static event channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvtchnEnd {
    /// Index into `SystemConfig::domains`.
    pub domain: usize,
    /// The local port, 1..`tessera_ipc::event_channel::MAX_PORTS`.
    pub port: u32,
}

/// A static interdomain event channel, from two `xen,evtchn-v1` nodes that
/// name each other. `a.domain < b.domain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticEvtchn {
    pub a: EvtchnEnd,
    pub b: EvtchnEnd,
}

/// A static shared-memory region: every `xen,domain-shared-memory-v1` node
/// with one `xen,shm-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMem {
    /// `xen,shm-id`, 1..=15 bytes.
    pub id: heapless::String<MAX_SHM_ID>,
    /// Bytes, a non-zero multiple of 4 KiB.
    pub size: u64,
    /// Host-physical base when the description fixes it (the three-value
    /// `xen,shared-mem` form); `None` lets the builder allocate it.
    pub host_base: Option<u64>,
    /// The domains mapping it, in device-tree order.
    pub users: heapless::Vec<ShmUser, MAX_SHM_USERS>,
}

/// One domain's mapping of a shared-memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmUser {
    /// Index into `SystemConfig::domains`.
    pub domain: usize,
    /// Guest-physical base, 4 KiB aligned, clear of the domain's RAM, the
    /// platform devices, the Xen windows and its other regions.
    pub guest_base: u64,
    /// `role = "owner"`. A region with no owner belongs to the hypervisor
    /// (Xen's `DOMID_IO`) and every user borrows it.
    pub owner: bool,
}

/// A payload, named by its entry in the unified image's module table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSpec {
    pub name: heapless::String<MAX_MODULE_NAME>,
}

/// The module-table name of a module a node names only by `reg` is this
/// prefix and the address in lower-case hex: `reg@0x42e00000`.
pub const REG_MODULE_PREFIX: &str = "reg@0x";

impl ModuleSpec {
    /// The module named by `reg` at this address, as [`REG_MODULE_PREFIX`]
    /// spells it.
    pub fn from_load_address(address: u64) -> Self {
        let mut name = heapless::String::new();
        // "reg@0x" and at most 16 hex digits always fit in MAX_MODULE_NAME.
        let _ = fmt::Write::write_fmt(&mut name, format_args!("{REG_MODULE_PREFIX}{address:x}"));
        ModuleSpec { name }
    }

    /// The `reg` address this module was named by, if it was (a
    /// `tessera,module` name is never read as one, whatever it says).
    pub fn load_address(&self) -> Option<u64> {
        load_address_of(&self.name)
    }
}

/// The `reg` address in a module name made by
/// [`ModuleSpec::from_load_address`], if `name` is one.
pub fn load_address_of(name: &str) -> Option<u64> {
    let hex = name.strip_prefix(REG_MODULE_PREFIX)?;
    let canonical = !hex.is_empty()
        && hex.len() <= 16
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && (hex == "0" || !hex.starts_with('0'));
    canonical
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// A range of physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemRange {
    pub base: u64,
    pub size: u64,
}

impl MemRange {
    /// One past the last byte, or `None` if the range wraps.
    pub fn end(&self) -> Option<u64> {
        self.base.checked_add(self.size)
    }

    /// Whether the two ranges share a byte. Wrapping ranges are treated as
    /// running to the top of the address space.
    pub fn overlaps(&self, other: &MemRange) -> bool {
        let end = |r: &MemRange| r.end().unwrap_or(u64::MAX);
        self.size != 0 && other.size != 0 && self.base < end(other) && other.base < end(self)
    }
}

impl SystemConfig {
    /// Every kernel and ramdisk module name, domain by domain (a name shared
    /// by two domains appears twice). The image packer checks each exists.
    pub fn module_names(&self) -> impl Iterator<Item = &str> {
        self.domains.iter().flat_map(|d| {
            core::iter::once(d.kernel.name.as_str())
                .chain(d.ramdisk.iter().map(|r| r.name.as_str()))
        })
    }

    /// The static event channels of domain `domain`, as (local, remote).
    pub fn evtchns_of(&self, domain: usize) -> impl Iterator<Item = (EvtchnEnd, EvtchnEnd)> + '_ {
        self.evtchns.iter().filter_map(move |c| {
            if c.a.domain == domain {
                Some((c.a, c.b))
            } else if c.b.domain == domain {
                Some((c.b, c.a))
            } else {
                None
            }
        })
    }

    /// The shared-memory regions domain `domain` maps, with its mapping.
    pub fn shm_of(&self, domain: usize) -> impl Iterator<Item = (&SharedMem, &ShmUser)> {
        self.shm
            .iter()
            .filter_map(move |s| s.users.iter().find(|u| u.domain == domain).map(|u| (s, u)))
    }

    /// The domains device model `server` serves (those naming it as their
    /// device model, in either spelling), in tree order, as its guest DT
    /// lists them under `/tessera-ioreq` (`guest_dt::XenGuestNodes::served`).
    /// `domid` says which id each domain (by index) has: its index + 1 in
    /// the kernel's dom0less build, its `domid` when a boot domain builds
    /// it.
    /// The kernel and domB both write the device model's DT from this, so
    /// the device model sees the same nodes in either mode.
    pub fn served_by(
        &self,
        server: usize,
        domid: impl Fn(usize) -> u16,
    ) -> heapless::Vec<ServedDomain<'_>, MAX_DOMAINS> {
        let mut out = heapless::Vec::new();
        for (i, d) in self.domains.iter().enumerate() {
            if d.device_model == Some(server) {
                // At most one entry per domain, so at most `MAX_DOMAINS`.
                let _ = out.push(ServedDomain {
                    domid: domid(i),
                    name: d.name.as_str(),
                    vcpus: d.vcpus,
                    ram_size: d.memory_bytes,
                    vpl011: d.vpl011,
                    virtio: d.virtio.as_slice(),
                });
            }
        }
        out
    }

    /// What domain `domain`'s guest DT says about its shared memory
    /// (`guest_dt::XenGuestNodes::shm`).
    pub fn guest_shm(&self, domain: usize) -> heapless::Vec<GuestShm<'_>, MAX_SHM> {
        let mut out = heapless::Vec::new();
        for (s, u) in self.shm_of(domain) {
            // At most one mapping per region, so at most `MAX_SHM`.
            let _ = out.push(GuestShm {
                id: s.id.as_str(),
                guest_base: u.guest_base,
                size: s.size,
            });
        }
        out
    }
}

/// A system description that cannot be booted: where, and why.
pub type ConfigError = dtb::DtError<ConfigErrorKind>;

/// What is wrong. Each check has its own variant.
// `BootOrderCycle` names up to `MAX_DOMAINS` domains by value, so the error
// outlives the description; an error is built once, on a failure path, and
// there is no allocator to box it with.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// Not a well-formed device-tree blob.
    Malformed(DtbFormatError),
    /// There is no `/chosen` node.
    NoChosen,
    /// `/chosen` has no child compatible with `xen,domain`.
    NoDomains,
    /// More than `MAX_DOMAINS` domains.
    TooManyDomains,
    /// Two domain nodes have the same name once unit addresses are dropped.
    DuplicateDomainName {
        other: NodePath,
    },
    /// The domain name is longer than `MAX_DOMAIN_NAME`.
    NameTooLong {
        len: usize,
    },
    /// The domain name is empty.
    NameEmpty,
    MemoryMissing,
    /// `memory` is not two cells.
    MemoryBadLength {
        len: usize,
    },
    MemoryZero,
    /// `memory` (KiB) is not a multiple of 4 KiB.
    MemoryNotPageMultiple {
        kib: u64,
    },
    /// `memory` in bytes does not fit in 64 bits.
    MemoryTooLarge {
        kib: u64,
    },
    VcpusMissing,
    /// `cpus` is not one cell.
    VcpusBadLength {
        len: usize,
    },
    VcpusZero,
    TooManyVcpus {
        requested: u32,
    },
    /// No child compatible with `multiboot,kernel`.
    MissingKernel,
    /// A second `multiboot,kernel` module; `other` is the first.
    DuplicateKernel {
        other: NodePath,
    },
    /// A second `multiboot,ramdisk` module; `other` is the first.
    DuplicateRamdisk {
        other: NodePath,
    },
    ModuleNameMissing,
    /// A module's `reg` (read when it has no `tessera,module`) is not one
    /// `<address size>` pair in the domain node's cells.
    ModuleRegBadLength {
        len: usize,
        address_cells: u32,
        size_cells: u32,
    },
    /// The domain node's `#address-cells` / `#size-cells` are not 1 or 2,
    /// so a module's `reg` cannot be read.
    ModuleRegCells {
        address_cells: u32,
        size_cells: u32,
    },
    /// A module's `reg` gives it no bytes.
    ModuleRegEmpty {
        address: u64,
    },
    /// `tessera,module` is not a single NUL-terminated UTF-8 string.
    ModuleNameNotString,
    ModuleNameEmpty,
    ModuleNameTooLong {
        len: usize,
    },
    /// `bootargs` is not a single NUL-terminated UTF-8 string.
    BootargsNotString,
    BootargsTooLong {
        len: usize,
    },
    /// `xen,security-label` is not a single NUL-terminated UTF-8 string.
    SecurityLabelNotString,
    SecurityLabelTooLong {
        len: usize,
    },
    /// Not three non-empty `:`-separated parts.
    SecurityLabelMalformed,
    /// A `#xen,static-mem-*-cells` property that is not one cell of 1 or 2.
    StaticMemCellsInvalid,
    /// `xen,static-mem` is not exactly one `<address size>` pair.
    StaticMemBadLength {
        len: usize,
        expected: usize,
    },
    /// The static range's size differs from `memory`.
    StaticMemSizeMismatch {
        size: u64,
        memory_bytes: u64,
    },
    /// Base or size not 2 MiB aligned.
    StaticMemMisaligned {
        base: u64,
        size: u64,
    },
    /// The range runs past the top of the address space.
    StaticMemOverflow {
        base: u64,
        size: u64,
    },
    /// Overlaps the static range of the domain at `other`.
    StaticMemOverlap {
        other: NodePath,
    },
    /// `xen,enhanced` is not empty, `"enabled"`, `"no-xenstore"` or
    /// `"disabled"`.
    XenEnhancedInvalid,
    /// `tessera,device-model` is not a string.
    DeviceModelInvalid,
    /// `tessera,device-model` (or `tessera,devices`) names no domain.
    DeviceModelNotFound {
        name: heapless::String<MAX_DOMAIN_NAME>,
    },
    /// `tessera,device-model` (or `tessera,devices`) names the domain itself.
    DeviceModelIsItself,
    /// A `tessera,virtio` entry is not one of net, blk, console, rng.
    VirtioUnknown,
    /// More than `MAX_VIRTIO` `tessera,virtio` entries.
    VirtioTooMany,
    /// `tessera,virtio` devices but no device model. (A lone `vpl011` is
    /// accepted: see `DomainConfig::vpl011_unserved`.)
    DevicesWithoutDeviceModel,
    /// `tessera,devices` beside `other` (`tessera,device-model` or
    /// `tessera,virtio`): two spellings of one thing, which could disagree.
    DevicesBesideOtherSpelling {
        other: &'static str,
    },
    /// `tessera,devices` is empty, or its first entry (the device-model
    /// domain) is empty or not UTF-8.
    DevicesNoDeviceModel,
    /// `tessera,devices` is not a list of NUL-terminated strings.
    DevicesNotStrings,
    /// Entry `entry` (1-based; the device model is entry 1) of
    /// `tessera,devices` is empty.
    DevicesKindEmpty {
        entry: usize,
    },
    /// Entry `entry` of `tessera,devices` is not one of net, blk, console,
    /// rng.
    DevicesKindUnknown {
        entry: usize,
    },
    /// More than `MAX_VIRTIO` kinds after the device model.
    DevicesTooManyKinds,
    /// `/chosen` `tessera,policy-mode` is not `"enforcing"` or `"permissive"`.
    PolicyModeInvalid,

    /// `domid` is not one cell.
    DomidBadLength {
        len: usize,
    },
    /// `domid` is above `MAX_DOMAINS`.
    DomidOutOfRange {
        domid: u32,
    },
    /// Another domain, at `other`, asks for the same `domid`.
    DuplicateDomid {
        domid: u32,
        other: NodePath,
    },
    /// `functions` is not a list of known function names.
    FunctionUnknown,
    /// `capabilities` is not one cell.
    CapabilitiesBadLength {
        len: usize,
    },
    /// `capabilities` asks for a Xen capability Tessera has no domain for
    /// (`DOMAIN_CAPS_CONTROL`, `DOMAIN_CAPS_HARDWARE`).
    CapabilityUnsupported {
        name: &'static str,
    },
    /// `capabilities` has bits no Xen capability defines.
    CapabilitiesUnknown {
        bits: u32,
    },
    /// `functions` names one function twice.
    FunctionDuplicate {
        name: &'static str,
    },
    /// A second domain with a function only one may have.
    FunctionNotUnique {
        name: &'static str,
        other: NodePath,
    },
    /// `boot-order` is not one cell.
    BootOrderBadLength {
        len: usize,
    },
    /// The boot order has a cycle (from `SystemConfig::boot_order`).
    BootOrderCycle(BootCycle),
    /// `on-crash` is not `"stop"`, `"restart"` or `"reboot"`.
    OnCrashInvalid,
    /// `tessera,restart-backoff-ms` is not one cell.
    RestartBackoffBadLength {
        len: usize,
    },
    /// `tessera,restart-backoff-ms` without `on-crash = "restart"`.
    RestartBackoffWithoutRestart {
        on_crash: &'static str,
    },
    /// `tessera,pcpus` is empty or not whole cells.
    PcpusBadLength {
        len: usize,
    },
    /// `tessera,pcpus` lists more pCPUs than the domain has vCPUs.
    PcpusMoreThanVcpus {
        count: usize,
        vcpus: u32,
    },
    /// A pCPU number at or above `MAX_PCPUS`.
    PcpuOutOfRange {
        pcpu: u32,
    },
    /// `tessera,pcpus` lists one pCPU twice.
    PcpuDuplicate {
        pcpu: u32,
    },

    /// `xen,evtchn` is absent from a `xen,evtchn-v1` node.
    EvtchnMissing,
    /// `xen,evtchn` is not exactly `<local-port peer-phandle>`.
    EvtchnBadLength {
        len: usize,
    },
    /// The local port is 0 (reserved) or beyond the port table.
    EvtchnPortOutOfRange {
        port: u32,
    },
    /// The same local port is already used by `other` in this domain.
    EvtchnDuplicatePort {
        port: u32,
        other: NodePath,
    },
    /// `phandle` (or `linux,phandle`) is not one cell.
    EvtchnBadPhandle,
    /// No `xen,evtchn-v1` node in any domain has this phandle.
    EvtchnPeerNotFound {
        phandle: u32,
    },
    /// The peer node is in the same domain.
    EvtchnPeerSameDomain {
        peer: NodePath,
    },
    /// The peer's `xen,evtchn` does not name this node back.
    EvtchnNotReciprocal {
        peer: NodePath,
    },
    /// More than `MAX_STATIC_EVTCHNS` channels.
    TooManyEvtchns,

    /// `xen,shm-id` is absent.
    ShmIdMissing,
    /// `xen,shm-id` is not a single NUL-terminated UTF-8 string.
    ShmIdNotString,
    ShmIdEmpty,
    /// Longer than `MAX_SHM_ID - 1` bytes.
    ShmIdTooLong {
        len: usize,
    },
    /// `role` is not `"owner"` or `"borrower"`.
    ShmRoleInvalid,
    /// `xen,shared-mem` is absent.
    ShmMissing,
    /// The domain node's `#address-cells`/`#size-cells` are not 1 or 2.
    ShmCellsUnsupported {
        address: u32,
        size: u32,
    },
    /// `xen,shared-mem` is neither `<host guest size>` nor `<guest size>`.
    ShmBadLength {
        len: usize,
        with_host: usize,
        without_host: usize,
    },
    ShmSizeZero,
    /// An address or the size is not a multiple of 4 KiB.
    ShmMisaligned {
        what: &'static str,
        value: u64,
    },
    /// The host range wraps the address space.
    ShmHostOverflow {
        base: u64,
        size: u64,
    },
    /// The guest range wraps or reaches `STAGE2_IPA_LIMIT`.
    ShmGuestOutOfRange {
        base: u64,
        size: u64,
    },
    /// The guest range overlaps the domain's RAM or a fixed platform window.
    ShmGuestOverlapsWindow {
        window: &'static str,
        base: u64,
        size: u64,
    },
    /// The guest range overlaps this domain's region at `other`.
    ShmGuestOverlap {
        other: NodePath,
    },
    /// This domain already maps the same `xen,shm-id` at `other`.
    ShmDuplicateId {
        other: NodePath,
    },
    /// `other` gives the same `xen,shm-id` a different size.
    ShmSizeMismatch {
        size: u64,
        expected: u64,
        other: NodePath,
    },
    /// `other` gives the same `xen,shm-id` a different (or no) host base.
    ShmHostBaseMismatch {
        other: NodePath,
    },
    /// `other` is already the region's owner.
    ShmMultipleOwners {
        other: NodePath,
    },
    /// The host range overlaps another region's, or a domain's static
    /// memory, at `other`.
    ShmHostOverlap {
        other: NodePath,
    },
    /// More than `MAX_SHM` distinct regions.
    TooManyShm,
    /// More than `MAX_SHM_USERS` domains map the region.
    TooManyShmUsers,
}

impl fmt::Display for ConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed device tree: {e}"),
            Self::NoChosen => f.write_str("no /chosen node"),
            Self::NoDomains => f.write_str("no child node compatible with \"xen,domain\""),
            Self::TooManyDomains => write!(f, "more than {MAX_DOMAINS} domains"),
            Self::DuplicateDomainName { other } => {
                write!(f, "domain name already used by {other}")
            }
            Self::NameTooLong { len } => write!(
                f,
                "domain name is {len} bytes, at most {MAX_DOMAIN_NAME} allowed"
            ),
            Self::NameEmpty => f.write_str("domain name is empty"),
            Self::MemoryMissing => f.write_str("missing (guest RAM in KiB)"),
            Self::MemoryBadLength { len } => {
                write!(f, "{len} bytes, expected a 64-bit value (2 cells)")
            }
            Self::MemoryZero => f.write_str("zero KiB of RAM"),
            Self::MemoryNotPageMultiple { kib } => {
                write!(f, "{kib} KiB is not a multiple of 4 KiB")
            }
            Self::MemoryTooLarge { kib } => write!(f, "{kib} KiB does not fit in 64 bits"),
            Self::VcpusMissing => f.write_str("missing (number of vCPUs)"),
            Self::VcpusBadLength { len } => write!(f, "{len} bytes, expected one cell"),
            Self::VcpusZero => f.write_str("0 vCPUs requested, at least 1 needed"),
            Self::TooManyVcpus { requested } => write!(
                f,
                "{requested} vCPUs requested, at most {MAX_VCPUS} allowed"
            ),
            Self::MissingKernel => {
                f.write_str("no module node compatible with \"multiboot,kernel\"")
            }
            Self::DuplicateKernel { other } => {
                write!(f, "second \"multiboot,kernel\" module (first is {other})")
            }
            Self::DuplicateRamdisk { other } => {
                write!(f, "second \"multiboot,ramdisk\" module (first is {other})")
            }
            Self::ModuleNameMissing => f.write_str(
                "missing (module-table entry name); or give the module a reg, as Xen's \
                 dom0less trees do, and map its address to a file in modules.map",
            ),
            Self::ModuleRegBadLength {
                len,
                address_cells,
                size_cells,
            } => write!(
                f,
                "{len} bytes, expected one <address size> pair of {} bytes (the domain node \
                 has #address-cells = {address_cells}, #size-cells = {size_cells})",
                (address_cells + size_cells) * 4
            ),
            Self::ModuleRegCells {
                address_cells,
                size_cells,
            } => write!(
                f,
                "the domain node has #address-cells = {address_cells}, #size-cells = \
                 {size_cells}; a module's reg needs 1 or 2 of each"
            ),
            Self::ModuleRegEmpty { address } => {
                write!(f, "the module at {address:#x} has size 0")
            }
            Self::ModuleNameNotString => f.write_str("not a NUL-terminated UTF-8 string"),
            Self::ModuleNameEmpty => f.write_str("empty module name"),
            Self::ModuleNameTooLong { len } => write!(
                f,
                "module name is {len} bytes, at most {MAX_MODULE_NAME} allowed"
            ),
            Self::BootargsNotString => f.write_str("not a NUL-terminated UTF-8 string"),
            Self::BootargsTooLong { len } => write!(
                f,
                "command line is {len} bytes, at most {MAX_BOOTARGS} allowed"
            ),
            Self::SecurityLabelNotString => f.write_str("not a NUL-terminated UTF-8 string"),
            Self::SecurityLabelTooLong { len } => write!(
                f,
                "label is {len} bytes, at most {MAX_SECURITY_LABEL} allowed"
            ),
            Self::SecurityLabelMalformed => {
                f.write_str("expected \"user:role:type\" with three non-empty parts")
            }
            Self::StaticMemCellsInvalid => f.write_str("expected one cell holding 1 or 2"),
            Self::StaticMemBadLength { len, expected } => write!(
                f,
                "{len} bytes, expected one <address size> pair of {expected} bytes"
            ),
            Self::StaticMemSizeMismatch { size, memory_bytes } => write!(
                f,
                "size {size:#x} differs from \"memory\" ({memory_bytes:#x} bytes)"
            ),
            Self::StaticMemMisaligned { base, size } => {
                write!(f, "range {base:#x}+{size:#x} is not 2 MiB aligned")
            }
            Self::StaticMemOverflow { base, size } => {
                write!(f, "range {base:#x}+{size:#x} wraps the address space")
            }
            Self::StaticMemOverlap { other } => {
                write!(f, "overlaps the static memory of {other}")
            }
            Self::XenEnhancedInvalid => f.write_str(
                "expected empty, \"enabled\", \"no-xenstore\" or \"disabled\"",
            ),
            Self::DeviceModelInvalid => f.write_str("expected the name of a domain"),
            Self::DeviceModelNotFound { name } => {
                write!(f, "no other domain is named {name:?}")
            }
            Self::DeviceModelIsItself => f.write_str(
                "names this domain itself; a domain cannot be its own device model",
            ),
            Self::VirtioUnknown => {
                f.write_str("expected a list of \"net\", \"blk\", \"console\", \"rng\"")
            }
            Self::VirtioTooMany => write!(f, "more than {MAX_VIRTIO} devices"),
            Self::DevicesWithoutDeviceModel => f.write_str(
                "virtio devices need a device model: add tessera,device-model = \"<domain>\" \
                 (or give both as tessera,devices = \"<domain>\", \"<kind>\", ...)",
            ),
            Self::DevicesBesideOtherSpelling { other } => write!(
                f,
                "the node also has {other}: tessera,devices says the same as \
                 tessera,device-model and tessera,virtio together; give one spelling"
            ),
            Self::DevicesNoDeviceModel => f.write_str(
                "expected \"<device-model domain>\", \"<kind>\", ...: the first entry must name \
                 the domain that serves this one",
            ),
            Self::DevicesNotStrings => f.write_str("not a list of NUL-terminated strings"),
            Self::DevicesKindEmpty { entry } => write!(
                f,
                "entry {entry} is empty; after the device-model domain, expected \"net\", \
                 \"blk\", \"console\" or \"rng\""
            ),
            Self::DevicesKindUnknown { entry } => write!(
                f,
                "entry {entry} is not a virtio kind; after the device-model domain, expected \
                 \"net\", \"blk\", \"console\" or \"rng\""
            ),
            Self::DevicesTooManyKinds => write!(
                f,
                "more than {MAX_VIRTIO} virtio kinds after the device-model domain"
            ),
            Self::PolicyModeInvalid => f.write_str("expected \"enforcing\" or \"permissive\""),
            Self::DomidBadLength { len } => write!(f, "{len} bytes, expected one cell"),
            Self::DomidOutOfRange { domid } => write!(
                f,
                "domain id {domid} is outside 1..={MAX_DOMAINS} (0 means the next free id)"
            ),
            Self::DuplicateDomid { domid, other } => {
                write!(f, "domain id {domid} is already taken by {other}")
            }
            Self::FunctionUnknown => f.write_str(
                "expected a list of \"boot\", \"xenstore\", \"device-model\", \"console\", \"vtpm\"",
            ),
            Self::FunctionDuplicate { name } => write!(f, "{name:?} is listed twice"),
            Self::CapabilitiesBadLength { len } => write!(f, "{len} bytes, expected one cell"),
            Self::CapabilityUnsupported { name } => write!(
                f,
                "{name} is not supported: Tessera has no control or hardware domain \
                 (domB builds the partitions, with functions = \"boot\"; devices are \
                 emulated by device-model domains)"
            ),
            Self::CapabilitiesUnknown { bits } => write!(
                f,
                "unknown capability bits {bits:#x} (known: 1 << 2 xenstore, 1 << 3 device model)"
            ),
            Self::FunctionNotUnique { name, other } => {
                write!(f, "{other} is already the {name:?} domain; there can be only one")
            }
            Self::BootOrderBadLength { len } => write!(f, "{len} bytes, expected one cell"),
            Self::BootOrderCycle(cycle) => write!(f, "the boot order has a cycle: {cycle}"),
            Self::OnCrashInvalid => {
                f.write_str("expected \"stop\", \"restart\" or \"reboot\"")
            }
            Self::RestartBackoffBadLength { len } => {
                write!(f, "{len} bytes, expected one cell (milliseconds)")
            }
            Self::RestartBackoffWithoutRestart { on_crash } => write!(
                f,
                "only meaningful with on-crash = \"restart\" (this domain's is {on_crash:?})"
            ),
            Self::PcpusBadLength { len } => {
                write!(f, "{len} bytes, expected one or more cells (pCPU numbers)")
            }
            Self::PcpusMoreThanVcpus { count, vcpus } => {
                write!(f, "{count} pCPUs listed for {vcpus} vCPUs")
            }
            Self::PcpuOutOfRange { pcpu } => {
                write!(f, "pCPU {pcpu} is not below {MAX_PCPUS}")
            }
            Self::PcpuDuplicate { pcpu } => write!(f, "pCPU {pcpu} is listed twice"),
            Self::EvtchnMissing => f.write_str("missing (<local-port peer-phandle>)"),
            Self::EvtchnBadLength { len } => write!(
                f,
                "{len} bytes, expected <local-port peer-phandle> (2 cells)"
            ),
            Self::EvtchnPortOutOfRange { port } => write!(
                f,
                "port {port} is outside 1..{}",
                tessera_ipc::event_channel::MAX_PORTS
            ),
            Self::EvtchnDuplicatePort { port, other } => {
                write!(f, "port {port} is already used by {other}")
            }
            Self::EvtchnBadPhandle => f.write_str("expected one cell"),
            Self::EvtchnPeerNotFound { phandle } => write!(
                f,
                "no \"xen,evtchn-v1\" node in a domain has phandle {phandle:#x}"
            ),
            Self::EvtchnPeerSameDomain { peer } => {
                write!(f, "peer {peer} is in the same domain")
            }
            Self::EvtchnNotReciprocal { peer } => {
                write!(f, "peer {peer} does not name this node back")
            }
            Self::TooManyEvtchns => write!(
                f,
                "more than {MAX_STATIC_EVTCHNS} static event channels"
            ),
            Self::ShmIdMissing => f.write_str("missing (shared-memory region name)"),
            Self::ShmIdNotString => f.write_str("not a NUL-terminated UTF-8 string"),
            Self::ShmIdEmpty => f.write_str("empty region name"),
            Self::ShmIdTooLong { len } => write!(
                f,
                "region name is {len} bytes, at most {} allowed",
                MAX_SHM_ID - 1
            ),
            Self::ShmRoleInvalid => f.write_str("expected \"owner\" or \"borrower\""),
            Self::ShmMissing => f.write_str("missing (<[host-base] guest-base size>)"),
            Self::ShmCellsUnsupported { address, size } => write!(
                f,
                "the domain's #address-cells = {address} / #size-cells = {size}; each must be 1 or 2"
            ),
            Self::ShmBadLength {
                len,
                with_host,
                without_host,
            } => write!(
                f,
                "{len} bytes, expected <host-base guest-base size> ({with_host} bytes) \
                 or <guest-base size> ({without_host} bytes)"
            ),
            Self::ShmSizeZero => f.write_str("size is zero"),
            Self::ShmMisaligned { what, value } => {
                write!(f, "{what} {value:#x} is not 4 KiB aligned")
            }
            Self::ShmHostOverflow { base, size } => {
                write!(f, "host range {base:#x}+{size:#x} wraps the address space")
            }
            Self::ShmGuestOutOfRange { base, size } => write!(
                f,
                "guest range {base:#x}+{size:#x} is not below {STAGE2_IPA_LIMIT:#x}"
            ),
            Self::ShmGuestOverlapsWindow { window, base, size } => {
                write!(f, "guest range {base:#x}+{size:#x} overlaps the {window}")
            }
            Self::ShmGuestOverlap { other } => {
                write!(f, "guest range overlaps this domain's region {other}")
            }
            Self::ShmDuplicateId { other } => {
                write!(f, "this domain already maps the region at {other}")
            }
            Self::ShmSizeMismatch {
                size,
                expected,
                other,
            } => write!(f, "size {size:#x} differs from {expected:#x} given by {other}"),
            Self::ShmHostBaseMismatch { other } => {
                write!(f, "host base differs from the one given by {other}")
            }
            Self::ShmMultipleOwners { other } => {
                write!(f, "second owner (the first is {other})")
            }
            Self::ShmHostOverlap { other } => write!(f, "host range overlaps {other}"),
            Self::TooManyShm => write!(f, "more than {MAX_SHM} shared-memory regions"),
            Self::TooManyShmUsers => write!(
                f,
                "more than {MAX_SHM_USERS} domains map this region"
            ),
        }
    }
}

fn error(node: &NodePath, property: Option<&'static str>, kind: ConfigErrorKind) -> ConfigError {
    ConfigError::new(node, property, kind)
}

/// Parses and validates a compiled system description.
pub fn parse_system(dtb_bytes: &[u8]) -> Result<SystemConfig, ConfigError> {
    let fdt = dtb::open(dtb_bytes).map_err(|e| ConfigError {
        node: NodePath::default(),
        property: None,
        kind: ConfigErrorKind::Malformed(e),
    })?;
    let chosen = dtb::lookup(&fdt, "/chosen")
        .ok_or_else(|| error(&NodePath::root(), None, ConfigErrorKind::NoChosen))?;

    let policy_enforcing = parse_policy_mode(&chosen.node, &chosen.path)?;

    let mut domains = heapless::Vec::<DomainConfig, MAX_DOMAINS>::new();
    let mut paths = heapless::Vec::<NodePath, MAX_DOMAINS>::new();
    let mut nodes = heapless::Vec::<Node<'_, '_>, MAX_DOMAINS>::new();
    let mut requested_domids = heapless::Vec::<Option<u16>, MAX_DOMAINS>::new();
    let mut requested_device_models =
        heapless::Vec::<Option<DeviceModelName<'_>>, MAX_DOMAINS>::new();
    for node in chosen.node.children() {
        if !is_compatible(&node, "xen,domain") {
            continue;
        }
        let path = chosen.path.child(node.name());
        if domains.is_full() {
            return Err(error(&path, None, ConfigErrorKind::TooManyDomains));
        }
        let (domain, requested) = parse_domain(&node, &path)?;
        hyperlaunch::check_unique_functions(&domain, &path, &domains, &paths)?;
        if let Some(other) = domains
            .iter()
            .zip(paths.iter())
            .find(|(d, _)| d.name == domain.name)
            .map(|(_, p)| p.clone())
        {
            return Err(error(
                &path,
                None,
                ConfigErrorKind::DuplicateDomainName { other },
            ));
        }
        if let Some(range) = &domain.static_mem {
            let clash = domains
                .iter()
                .zip(paths.iter())
                .find(|(d, _)| d.static_mem.is_some_and(|r| r.overlaps(range)));
            if let Some((_, other)) = clash {
                return Err(error(
                    &path,
                    Some(P_STATIC_MEM),
                    ConfigErrorKind::StaticMemOverlap {
                        other: other.clone(),
                    },
                ));
            }
        }
        // Both have room: `is_full` was checked above.
        domains
            .push(domain)
            .map_err(|_| error(&path, None, ConfigErrorKind::TooManyDomains))?;
        paths
            .push(path.clone())
            .map_err(|_| error(&path, None, ConfigErrorKind::TooManyDomains))?;
        nodes
            .push(node)
            .map_err(|_| error(&path, None, ConfigErrorKind::TooManyDomains))?;
        requested_domids
            .push(requested.domid)
            .map_err(|_| error(&path, None, ConfigErrorKind::TooManyDomains))?;
        requested_device_models
            .push(requested.device_model)
            .map_err(|_| error(&path, None, ConfigErrorKind::TooManyDomains))?;
    }
    if domains.is_empty() {
        return Err(error(&chosen.path, None, ConfigErrorKind::NoDomains));
    }
    hyperlaunch::assign_domids(&requested_domids, &paths, &mut domains)?;
    resolve_device_models(&requested_device_models, &paths, &mut domains)?;
    let linked = links::Domains {
        nodes: &nodes,
        paths: &paths,
        configs: &domains,
    };
    let evtchns = links::parse_evtchns(&linked)?;
    let shm = links::parse_shm(&linked)?;
    Ok(SystemConfig {
        domains,
        evtchns,
        shm,
        policy_enforcing,
    })
}

fn parse_policy_mode(chosen: &Node<'_, '_>, path: &NodePath) -> Result<bool, ConfigError> {
    match prop(chosen, P_POLICY_MODE).map(string_value) {
        None => Ok(true),
        Some(Some("enforcing")) => Ok(true),
        Some(Some("permissive")) => Ok(false),
        Some(_) => Err(error(
            path,
            Some(P_POLICY_MODE),
            ConfigErrorKind::PolicyModeInvalid,
        )),
    }
}

/// What a domain node asks for that can only be settled once every domain
/// is known: its `domid` (ids are given out in tree order) and its device
/// model (which may come later in the tree).
struct DomainRequests<'dtb> {
    domid: Option<u16>,
    device_model: Option<DeviceModelName<'dtb>>,
}

/// A device-model domain as a served domain names it, and the property
/// that named it (for the error if it names no other domain).
#[derive(Clone, Copy)]
struct DeviceModelName<'dtb> {
    name: &'dtb str,
    property: &'static str,
}

/// What a domain node says about its emulated devices, in either spelling.
struct Devices<'dtb> {
    device_model: Option<DeviceModelName<'dtb>>,
    virtio: heapless::Vec<VirtioKind, MAX_VIRTIO>,
}

/// One domain node, and what it asks for of the others.
fn parse_domain<'dtb>(
    node: &Node<'_, 'dtb>,
    path: &NodePath,
) -> Result<(DomainConfig, DomainRequests<'dtb>), ConfigError> {
    let base = dtb::base_name(node.name());
    if base.is_empty() {
        return Err(error(path, None, ConfigErrorKind::NameEmpty));
    }
    let name = heapless::String::try_from(base)
        .map_err(|_| error(path, None, ConfigErrorKind::NameTooLong { len: base.len() }))?;

    let memory_bytes = parse_memory(node, path)?;
    let vcpus = parse_vcpus(node, path)?;
    let modules = parse_modules(node, path)?;
    let security_label = parse_security_label(node, path)?;
    let static_mem = parse_static_mem(node, path, memory_bytes)?;
    let (xen_enhanced, xenstore) = parse_xen_enhanced(node, path)?;
    let launch = hyperlaunch::parse(node, path, vcpus)?;
    let devices = parse_devices(node, path)?;

    let domain = DomainConfig {
        name,
        memory_bytes,
        vcpus,
        kernel: modules.kernel,
        ramdisk: modules.ramdisk,
        bootargs: modules.bootargs,
        security_label,
        static_mem,
        vpl011: prop(node, P_VPL011).is_some(),
        vpl011_unserved: false,
        device_model: None,
        virtio: devices.virtio,
        xen_enhanced,
        xenstore,
        domid: 0,
        functions: launch.functions,
        boot_order: launch.boot_order,
        on_crash: launch.on_crash,
        restart_backoff_ms: launch.restart_backoff_ms,
        pcpus: launch.pcpus,
    };
    let requests = DomainRequests {
        domid: launch.domid,
        device_model: devices.device_model,
    };
    Ok((domain, requests))
}

/// `tessera,devices`, or else `tessera,device-model` and `tessera,virtio`.
/// A node with both spellings is refused rather than merged: they could
/// disagree, and neither would be the obvious winner.
fn parse_devices<'dtb>(
    node: &Node<'_, 'dtb>,
    path: &NodePath,
) -> Result<Devices<'dtb>, ConfigError> {
    let Some(value) = prop(node, P_DEVICES) else {
        return Ok(Devices {
            device_model: parse_device_model(node, path)?,
            virtio: parse_virtio(node, path)?,
        });
    };
    if let Some(other) = [P_DEVICE_MODEL, P_VIRTIO]
        .into_iter()
        .find(|p| prop(node, p).is_some())
    {
        return Err(error(
            path,
            Some(P_DEVICES),
            ConfigErrorKind::DevicesBesideOtherSpelling { other },
        ));
    }
    parse_devices_list(value, path)
}

/// `tessera,devices = "<device-model domain>", "<kind>", ...`: the server,
/// then the virtio kinds in slot order (none: it serves only `vpl011`).
fn parse_devices_list<'dtb>(
    value: &'dtb [u8],
    path: &NodePath,
) -> Result<Devices<'dtb>, ConfigError> {
    let fail = |kind| error(path, Some(P_DEVICES), kind);
    if value.is_empty() {
        return Err(fail(ConfigErrorKind::DevicesNoDeviceModel));
    }
    let body = value
        .strip_suffix(&[0])
        .ok_or_else(|| fail(ConfigErrorKind::DevicesNotStrings))?;
    let mut entries = body.split(|b| *b == 0);
    let name = entries
        .next()
        .and_then(|raw| core::str::from_utf8(raw).ok())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| fail(ConfigErrorKind::DevicesNoDeviceModel))?;
    let mut virtio = heapless::Vec::new();
    // Entries are numbered from 1, the device model being entry 1, so the
    // number is the one a reader counts in the source.
    for (entry, raw) in (2..).zip(entries) {
        if raw.is_empty() {
            return Err(fail(ConfigErrorKind::DevicesKindEmpty { entry }));
        }
        let kind = core::str::from_utf8(raw)
            .ok()
            .and_then(VirtioKind::from_name)
            .ok_or_else(|| fail(ConfigErrorKind::DevicesKindUnknown { entry }))?;
        virtio
            .push(kind)
            .map_err(|_| fail(ConfigErrorKind::DevicesTooManyKinds))?;
    }
    Ok(Devices {
        device_model: Some(DeviceModelName {
            name,
            property: P_DEVICES,
        }),
        virtio,
    })
}

/// `tessera,device-model = "<domain name>"`, not yet resolved.
fn parse_device_model<'dtb>(
    node: &Node<'_, 'dtb>,
    path: &NodePath,
) -> Result<Option<DeviceModelName<'dtb>>, ConfigError> {
    let Some(value) = prop(node, P_DEVICE_MODEL) else {
        return Ok(None);
    };
    let name = string_value(value)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            error(
                path,
                Some(P_DEVICE_MODEL),
                ConfigErrorKind::DeviceModelInvalid,
            )
        })?;
    Ok(Some(DeviceModelName {
        name,
        property: P_DEVICE_MODEL,
    }))
}

fn parse_virtio(
    node: &Node<'_, '_>,
    path: &NodePath,
) -> Result<heapless::Vec<VirtioKind, MAX_VIRTIO>, ConfigError> {
    let mut out = heapless::Vec::new();
    let Some(value) = prop(node, P_VIRTIO) else {
        return Ok(out);
    };
    let fail = |kind| error(path, Some(P_VIRTIO), kind);
    // Every entry must be a known name, and the list well-formed (no empty
    // entries, NUL-terminated), or the slot numbering would be a guess.
    let body = value
        .strip_suffix(&[0])
        .ok_or_else(|| fail(ConfigErrorKind::VirtioUnknown))?;
    for raw in body.split(|b| *b == 0) {
        let kind = core::str::from_utf8(raw)
            .ok()
            .and_then(VirtioKind::from_name)
            .ok_or_else(|| fail(ConfigErrorKind::VirtioUnknown))?;
        out.push(kind)
            .map_err(|_| fail(ConfigErrorKind::VirtioTooMany))?;
    }
    Ok(out)
}

/// Resolve every device-model name (`requested[i]` is domain i's) to a
/// domain index, now that all domains are known.
fn resolve_device_models(
    requested: &[Option<DeviceModelName<'_>>],
    paths: &[NodePath],
    domains: &mut [DomainConfig],
) -> Result<(), ConfigError> {
    for (i, (wanted, path)) in requested.iter().zip(paths).enumerate() {
        let server = match wanted {
            None => None,
            Some(wanted) => {
                let fail = |kind| error(path, Some(wanted.property), kind);
                let found = domains
                    .iter()
                    .position(|d| d.name.as_str() == wanted.name)
                    .ok_or_else(|| {
                        fail(ConfigErrorKind::DeviceModelNotFound {
                            name: truncated_name(wanted.name),
                        })
                    })?;
                if found == i {
                    return Err(fail(ConfigErrorKind::DeviceModelIsItself));
                }
                Some(found)
            }
        };
        let d = &mut domains[i];
        if server.is_none() && !d.virtio.is_empty() {
            return Err(error(
                path,
                None,
                ConfigErrorKind::DevicesWithoutDeviceModel,
            ));
        }
        // A lone `vpl011` is how a Xen dom0less tree asks for a console
        // (Xen emulates it): accepted, as no PL011 (see `vpl011_unserved`).
        if server.is_none() && d.vpl011 {
            d.vpl011 = false;
            d.vpl011_unserved = true;
        }
        d.device_model = server;
        if let Some(served_by) = server.and_then(|s| domains.get_mut(s)) {
            served_by.functions.insert(Function::DeviceModel);
        }
    }
    Ok(())
}

/// `name`, cut to at most `MAX_DOMAIN_NAME` bytes at a character boundary
/// (a name that long matches no domain, but the error still shows it).
fn truncated_name(name: &str) -> heapless::String<MAX_DOMAIN_NAME> {
    let mut end = name.len().min(MAX_DOMAIN_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.get(..end)
        .and_then(|cut| heapless::String::try_from(cut).ok())
        .unwrap_or_default()
}

/// `xen,enhanced` as (enhanced, xenstore). Xen's binding: empty or
/// `"enabled"` gives every PV interface, `"no-xenstore"` all but xenstore,
/// `"disabled"` none (the same as leaving the property out).
fn parse_xen_enhanced(node: &Node<'_, '_>, path: &NodePath) -> Result<(bool, bool), ConfigError> {
    let Some(value) = prop(node, P_XEN_ENHANCED) else {
        return Ok((false, false));
    };
    if value.is_empty() {
        return Ok((true, true));
    }
    match string_value(value) {
        Some("enabled") => Ok((true, true)),
        Some("no-xenstore") => Ok((true, false)),
        Some("disabled") => Ok((false, false)),
        _ => Err(error(
            path,
            Some(P_XEN_ENHANCED),
            ConfigErrorKind::XenEnhancedInvalid,
        )),
    }
}

fn parse_memory(node: &Node<'_, '_>, path: &NodePath) -> Result<u64, ConfigError> {
    let fail = |kind| error(path, Some(P_MEMORY), kind);
    let value = prop(node, P_MEMORY).ok_or_else(|| fail(ConfigErrorKind::MemoryMissing))?;
    let kib = u64_value(value)
        .ok_or_else(|| fail(ConfigErrorKind::MemoryBadLength { len: value.len() }))?;
    if kib == 0 {
        return Err(fail(ConfigErrorKind::MemoryZero));
    }
    if !kib.is_multiple_of(PAGE_KIB) {
        return Err(fail(ConfigErrorKind::MemoryNotPageMultiple { kib }));
    }
    kib.checked_mul(1024)
        .ok_or_else(|| fail(ConfigErrorKind::MemoryTooLarge { kib }))
}

fn parse_vcpus(node: &Node<'_, '_>, path: &NodePath) -> Result<u32, ConfigError> {
    let fail = |kind| error(path, Some(P_CPUS), kind);
    let value = prop(node, P_CPUS).ok_or_else(|| fail(ConfigErrorKind::VcpusMissing))?;
    let vcpus = u32_value(value)
        .ok_or_else(|| fail(ConfigErrorKind::VcpusBadLength { len: value.len() }))?;
    match vcpus {
        0 => Err(fail(ConfigErrorKind::VcpusZero)),
        n if n > MAX_VCPUS => Err(fail(ConfigErrorKind::TooManyVcpus { requested: n })),
        n => Ok(n),
    }
}

struct Modules {
    kernel: ModuleSpec,
    ramdisk: Option<ModuleSpec>,
    bootargs: heapless::String<MAX_BOOTARGS>,
}

fn parse_modules(node: &Node<'_, '_>, path: &NodePath) -> Result<Modules, ConfigError> {
    // A module's `reg` is in the cells its domain node sets.
    let cells = dtb::Cells::of(node);
    let mut kernel: Option<(ModuleSpec, NodePath)> = None;
    let mut ramdisk: Option<(ModuleSpec, NodePath)> = None;
    let mut bootargs = heapless::String::new();
    for child in node.children() {
        let child_path = path.child(child.name());
        if is_compatible(&child, "multiboot,kernel") {
            if let Some((_, other)) = &kernel {
                let other = other.clone();
                return Err(error(
                    &child_path,
                    Some(P_COMPATIBLE),
                    ConfigErrorKind::DuplicateKernel { other },
                ));
            }
            bootargs = parse_bootargs(&child, &child_path)?;
            kernel = Some((parse_module_name(&child, &child_path, cells)?, child_path));
        } else if is_compatible(&child, "multiboot,ramdisk") {
            if let Some((_, other)) = &ramdisk {
                let other = other.clone();
                return Err(error(
                    &child_path,
                    Some(P_COMPATIBLE),
                    ConfigErrorKind::DuplicateRamdisk { other },
                ));
            }
            ramdisk = Some((parse_module_name(&child, &child_path, cells)?, child_path));
        }
    }
    let (kernel, _) = kernel.ok_or_else(|| error(path, None, ConfigErrorKind::MissingKernel))?;
    Ok(Modules {
        kernel,
        ramdisk: ramdisk.map(|(spec, _)| spec),
        bootargs,
    })
}

/// The module a module node names: its `tessera,module`, or else the
/// address in its `reg` (read with the domain node's `cells`).
fn parse_module_name(
    node: &Node<'_, '_>,
    path: &NodePath,
    cells: dtb::Cells,
) -> Result<ModuleSpec, ConfigError> {
    let fail = |kind| error(path, Some(P_MODULE), kind);
    let Some(value) = prop(node, P_MODULE) else {
        return match prop(node, P_REG) {
            Some(reg) => parse_module_reg(reg, path, cells),
            None => Err(fail(ConfigErrorKind::ModuleNameMissing)),
        };
    };
    let text = string_value(value).ok_or_else(|| fail(ConfigErrorKind::ModuleNameNotString))?;
    if text.is_empty() {
        return Err(fail(ConfigErrorKind::ModuleNameEmpty));
    }
    let name = heapless::String::try_from(text)
        .map_err(|_| fail(ConfigErrorKind::ModuleNameTooLong { len: text.len() }))?;
    Ok(ModuleSpec { name })
}

/// A module named by `reg = <address size>`: Xen's dom0less form, where a
/// boot loader has put the module at `address`.
fn parse_module_reg(
    reg: &[u8],
    path: &NodePath,
    cells: dtb::Cells,
) -> Result<ModuleSpec, ConfigError> {
    let fail = |kind| error(path, Some(P_REG), kind);
    let (address_cells, size_cells) = (cells.address, cells.size);
    if !(1..=2).contains(&address_cells) || !(1..=2).contains(&size_cells) {
        return Err(fail(ConfigErrorKind::ModuleRegCells {
            address_cells,
            size_cells,
        }));
    }
    let bad_length = || {
        fail(ConfigErrorKind::ModuleRegBadLength {
            len: reg.len(),
            address_cells,
            size_cells,
        })
    };
    if reg.len() != (address_cells + size_cells) as usize * 4 {
        return Err(bad_length());
    }
    let address = dtb::cells_value(reg, 0, address_cells).ok_or_else(bad_length)?;
    let size =
        dtb::cells_value(reg, address_cells as usize * 4, size_cells).ok_or_else(bad_length)?;
    if size == 0 {
        return Err(fail(ConfigErrorKind::ModuleRegEmpty { address }));
    }
    Ok(ModuleSpec::from_load_address(address))
}

fn parse_bootargs(
    node: &Node<'_, '_>,
    path: &NodePath,
) -> Result<heapless::String<MAX_BOOTARGS>, ConfigError> {
    let fail = |kind| error(path, Some(P_BOOTARGS), kind);
    let Some(value) = prop(node, P_BOOTARGS) else {
        return Ok(heapless::String::new());
    };
    let text = string_value(value).ok_or_else(|| fail(ConfigErrorKind::BootargsNotString))?;
    heapless::String::try_from(text)
        .map_err(|_| fail(ConfigErrorKind::BootargsTooLong { len: text.len() }))
}

fn parse_security_label(
    node: &Node<'_, '_>,
    path: &NodePath,
) -> Result<heapless::String<MAX_SECURITY_LABEL>, ConfigError> {
    let fail = |kind| error(path, Some(P_LABEL), kind);
    let text = match prop(node, P_LABEL) {
        None => DEFAULT_SECURITY_LABEL,
        Some(value) => {
            string_value(value).ok_or_else(|| fail(ConfigErrorKind::SecurityLabelNotString))?
        }
    };
    let mut parts = text.split(':');
    let well_formed =
        (0..3).all(|_| parts.next().is_some_and(|p| !p.is_empty())) && parts.next().is_none();
    if !well_formed {
        return Err(fail(ConfigErrorKind::SecurityLabelMalformed));
    }
    heapless::String::try_from(text)
        .map_err(|_| fail(ConfigErrorKind::SecurityLabelTooLong { len: text.len() }))
}

/// Reads one `#xen,static-mem-*-cells` property (default 2).
fn static_mem_cells(
    node: &Node<'_, '_>,
    path: &NodePath,
    name: &'static str,
) -> Result<u32, ConfigError> {
    match prop(node, name) {
        None => Ok(2),
        Some(value) => u32_value(value)
            .filter(|c| (1..=2).contains(c))
            .ok_or_else(|| error(path, Some(name), ConfigErrorKind::StaticMemCellsInvalid)),
    }
}

fn parse_static_mem(
    node: &Node<'_, '_>,
    path: &NodePath,
    memory_bytes: u64,
) -> Result<Option<MemRange>, ConfigError> {
    let Some(value) = prop(node, P_STATIC_MEM) else {
        return Ok(None);
    };
    let address_cells = static_mem_cells(node, path, P_STATIC_ADDR_CELLS)?;
    let size_cells = static_mem_cells(node, path, P_STATIC_SIZE_CELLS)?;
    let fail = |kind| error(path, Some(P_STATIC_MEM), kind);
    let expected = (address_cells + size_cells) as usize * 4;
    let bad_length = || {
        fail(ConfigErrorKind::StaticMemBadLength {
            len: value.len(),
            expected,
        })
    };
    if value.len() != expected {
        return Err(bad_length());
    }
    let base = dtb::cells_value(value, 0, address_cells).ok_or_else(bad_length)?;
    let size =
        dtb::cells_value(value, address_cells as usize * 4, size_cells).ok_or_else(bad_length)?;
    if size != memory_bytes {
        return Err(fail(ConfigErrorKind::StaticMemSizeMismatch {
            size,
            memory_bytes,
        }));
    }
    if !base.is_multiple_of(STATIC_MEM_ALIGN) || !size.is_multiple_of(STATIC_MEM_ALIGN) {
        return Err(fail(ConfigErrorKind::StaticMemMisaligned { base, size }));
    }
    let range = MemRange { base, size };
    if range.end().is_none() {
        return Err(fail(ConfigErrorKind::StaticMemOverflow { base, size }));
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests;
