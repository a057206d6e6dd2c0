//! The system description: which domains an image boots, parsed from the
//! compiled `system.dts` (Xen's dom0less binding under `/chosen`, plus the
//! `tessera,module` extension naming an entry of the image's module table).
//!
//! The one idea: everything is validated here, once, into plain bounded
//! values. Code downstream (domain building, the image packer) works from a
//! `SystemConfig` that is already known good, and a bad description fails
//! with an error naming the node and the property, e.g.
//! `/chosen/domU1: property "cpus": 9 vCPUs requested, at most 8 allowed`.

// A `ConfigError` carries the paths it names by value (up to two), so it
// outlives the blob; it is built once, at boot, on the failure path only.
#![allow(clippy::result_large_err)]

pub mod dtb;

use core::fmt;

use dtb::{
    is_compatible, prop, string_value, u32_value, u64_value, DtbFormatError, Node, NodePath,
};
use tessera_ipc::platform::MAX_VCPUS_PER_DOMAIN;

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
/// `tessera_policy::DEFAULT_DOMAIN_LABEL`; the kernel does not depend on the
/// policy crate.
pub const DEFAULT_SECURITY_LABEL: &str = "system_u:system_r:domU_t";
/// `xen,static-mem` ranges are mapped with 2 MiB stage-2 blocks.
pub const STATIC_MEM_ALIGN: u64 = 2 << 20;
/// Domain memory is given in KiB and must be a whole number of 4 KiB pages.
const PAGE_KIB: u64 = 4;

const MAX_VCPUS: u32 = MAX_VCPUS_PER_DOMAIN as u32;

// Property names, as they appear in errors.
const P_COMPATIBLE: &str = "compatible";
const P_MEMORY: &str = "memory";
const P_CPUS: &str = "cpus";
const P_MODULE: &str = "tessera,module";
const P_BOOTARGS: &str = "bootargs";
const P_LABEL: &str = "xen,security-label";
const P_STATIC_MEM: &str = "xen,static-mem";
const P_STATIC_ADDR_CELLS: &str = "#xen,static-mem-address-cells";
const P_STATIC_SIZE_CELLS: &str = "#xen,static-mem-size-cells";
const P_VPL011: &str = "vpl011";

/// The validated system description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemConfig {
    /// In device-tree order, which is the boot order.
    pub domains: heapless::Vec<DomainConfig, MAX_DOMAINS>,
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
    /// Whether the domain gets an emulated PL011.
    pub vpl011: bool,
}

/// A payload, named by its entry in the unified image's module table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSpec {
    pub name: heapless::String<MAX_MODULE_NAME>,
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
}

/// A system description that cannot be booted: where, and why.
pub type ConfigError = dtb::DtError<ConfigErrorKind>;

/// What is wrong. Each check has its own variant.
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
            Self::ModuleNameMissing => f.write_str("missing (module-table entry name)"),
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

    let mut domains = heapless::Vec::<DomainConfig, MAX_DOMAINS>::new();
    let mut paths = heapless::Vec::<NodePath, MAX_DOMAINS>::new();
    for node in chosen.node.children() {
        if !is_compatible(&node, "xen,domain") {
            continue;
        }
        let path = chosen.path.child(node.name);
        if domains.is_full() {
            return Err(error(&path, None, ConfigErrorKind::TooManyDomains));
        }
        let domain = parse_domain(&node, &path)?;
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
    }
    if domains.is_empty() {
        return Err(error(&chosen.path, None, ConfigErrorKind::NoDomains));
    }
    Ok(SystemConfig { domains })
}

fn parse_domain(node: &Node<'_, '_>, path: &NodePath) -> Result<DomainConfig, ConfigError> {
    let base = dtb::base_name(node.name);
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

    Ok(DomainConfig {
        name,
        memory_bytes,
        vcpus,
        kernel: modules.kernel,
        ramdisk: modules.ramdisk,
        bootargs: modules.bootargs,
        security_label,
        static_mem,
        vpl011: prop(node, P_VPL011).is_some(),
    })
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
    let mut kernel: Option<(ModuleSpec, NodePath)> = None;
    let mut ramdisk: Option<(ModuleSpec, NodePath)> = None;
    let mut bootargs = heapless::String::new();
    for child in node.children() {
        let child_path = path.child(child.name);
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
            kernel = Some((parse_module_name(&child, &child_path)?, child_path));
        } else if is_compatible(&child, "multiboot,ramdisk") {
            if let Some((_, other)) = &ramdisk {
                let other = other.clone();
                return Err(error(
                    &child_path,
                    Some(P_COMPATIBLE),
                    ConfigErrorKind::DuplicateRamdisk { other },
                ));
            }
            ramdisk = Some((parse_module_name(&child, &child_path)?, child_path));
        }
    }
    let (kernel, _) = kernel.ok_or_else(|| error(path, None, ConfigErrorKind::MissingKernel))?;
    Ok(Modules {
        kernel,
        ramdisk: ramdisk.map(|(spec, _)| spec),
        bootargs,
    })
}

fn parse_module_name(node: &Node<'_, '_>, path: &NodePath) -> Result<ModuleSpec, ConfigError> {
    let fail = |kind| error(path, Some(P_MODULE), kind);
    let value = prop(node, P_MODULE).ok_or_else(|| fail(ConfigErrorKind::ModuleNameMissing))?;
    let text = string_value(value).ok_or_else(|| fail(ConfigErrorKind::ModuleNameNotString))?;
    if text.is_empty() {
        return Err(fail(ConfigErrorKind::ModuleNameEmpty));
    }
    let name = heapless::String::try_from(text)
        .map_err(|_| fail(ConfigErrorKind::ModuleNameTooLong { len: text.len() }))?;
    Ok(ModuleSpec { name })
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
