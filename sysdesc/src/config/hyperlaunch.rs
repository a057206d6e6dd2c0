//! The hyperlaunch properties of a domain node: what a boot domain (domB)
//! needs to build the other domains itself, and what the system does when
//! one of them crashes.
//!
//! | property                     | value                                      | default          |
//! |------------------------------|--------------------------------------------|------------------|
//! | `domid`                      | `<N>`, 1..=`MAX_DOMAINS`; 0 = automatic    | lowest free id   |
//! | `functions`                  | `"boot"`, `"xenstore"`, `"device-model"`, `"console"`, `"vtpm"` | none |
//! | `capabilities`               | `<mask>`, Xen's `DOMAIN_CAPS_*`: 1 << 2 xenstore, 1 << 3 device model | 0 |
//! | `boot-order`                 | `<N>`, a rank: lower starts first          | 0                |
//! | `on-crash`                   | `"stop"`, `"restart"` or `"reboot"`        | `"stop"`         |
//! | `tessera,restart-backoff-ms` | `<N>` ms before a restart (`on-crash = "restart"` only) | the builder's choice |
//! | `tessera,pcpus`              | `<a b ...>`: vCPU i runs on pCPU `a`, `b`… | not pinned       |
//! | `tessera,devices`            | `"<device model>", "<virtio kind>", ...`   | not served       |
//!
//! `tessera,devices` is parsed in the parent module, beside its other
//! spelling (`tessera,device-model` with `tessera,virtio`), which it means
//! exactly.
//!
//! The one idea: the boot order is a topological order of "must start
//! before" edges, some written (`boot-order` ranks) and some derived from
//! what the description already says (a device model before the domains it
//! serves, the boot domain before everything, the xenstore domain before
//! every domain introduced to it). Written and derived edges are one graph,
//! so a rank that contradicts a dependency is reported as the cycle it
//! makes, naming every domain in it.
//!
//! Where these differ from Xen: Xen's hyperlaunch draft
//! (`docs/designs/launch/hyperlaunch-devicetree.rst`) writes `functions` as
//! a bitmask cell (`FUNCTION_BOOT` = 1, `FUNCTION_CONSOLE` = 4,
//! `FUNCTION_XENSTORE` = 1 << 30); Tessera writes the names, so a
//! description reads without a table, and a numeric value is an error rather
//! than a guess. Xen's dom0less `capabilities` cell (`DOMAIN_CAPS_*` in
//! Xen's `public/bootfdt.h`) is read too, as the functions it names:
//! `DOMAIN_CAPS_XENSTORE` (1 << 2) is `"xenstore"`, and
//! `DOMAIN_CAPS_DEVICE_MODEL` (1 << 3) `"device-model"`. `DOMAIN_CAPS_CONTROL`
//! and `DOMAIN_CAPS_HARDWARE` are refused with an error that says why: a
//! static partitioning has no control or hardware domain (the boot domain
//! builds, device-model domains emulate). A domain may carry both
//! properties; it has the functions of both. Xen's `domid = <0>` means "the next free id", and so it
//! does here. Xen gives every domain an id below `DOMID_FIRST_RESERVED`;
//! Tessera's builders index fixed tables by id, so ids stop at
//! `MAX_DOMAINS`.

use core::fmt;

use super::{
    error, ConfigError, ConfigErrorKind, DomainConfig, SystemConfig, MAX_DOMAINS, MAX_DOMAIN_NAME,
};
use crate::dtb::{prop, string_value, u32_value, Node, NodePath};
use tessera_ipc::platform::MAX_VCPUS_PER_DOMAIN;

pub(super) const P_DOMID: &str = "domid";
pub(super) const P_FUNCTIONS: &str = "functions";
pub(super) const P_CAPABILITIES: &str = "capabilities";
pub(super) const P_BOOT_ORDER: &str = "boot-order";
pub(super) const P_ON_CRASH: &str = "on-crash";
pub(super) const P_RESTART_BACKOFF: &str = "tessera,restart-backoff-ms";
pub(super) const P_PCPUS: &str = "tessera,pcpus";

/// pCPU numbers in `tessera,pcpus` are below this: positions among the host
/// DT's `cpu` nodes, checked against the real board when it is known
/// (`cargo xtask check --cpus`, the builder at boot).
pub const MAX_PCPUS: u32 = 64;

/// A role a domain plays in the system (`functions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Function {
    /// The boot domain (domB): builds every other domain. At most one.
    Boot = 1 << 0,
    /// The configuration store (xenstored). At most one.
    Xenstore = 1 << 1,
    /// An IOREQ server emulating other domains' devices. A domain another
    /// names as its device model (`tessera,device-model`, or first in
    /// `tessera,devices`) has this role whether or not it lists it.
    DeviceModel = 1 << 2,
    /// The console service. At most one.
    Console = 1 << 3,
    /// A virtual TPM service.
    Vtpm = 1 << 4,
}

impl Function {
    /// Every function, in the order `Functions` lists them.
    pub const ALL: [Function; 5] = [
        Function::Boot,
        Function::Xenstore,
        Function::DeviceModel,
        Function::Console,
        Function::Vtpm,
    ];

    /// Parses one `functions` entry.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The name used in device trees.
    pub fn name(self) -> &'static str {
        match self {
            Self::Boot => "boot",
            Self::Xenstore => "xenstore",
            Self::DeviceModel => "device-model",
            Self::Console => "console",
            Self::Vtpm => "vtpm",
        }
    }

    /// Whether a system may have only one domain with this function: one
    /// builder, one store and one console, as in Xen.
    pub fn is_unique(self) -> bool {
        matches!(self, Self::Boot | Self::Xenstore | Self::Console)
    }
}

/// A set of [`Function`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Functions(u8);

impl Functions {
    /// No function: an ordinary guest.
    pub const NONE: Self = Self(0);

    pub fn contains(self, function: Function) -> bool {
        self.0 & function as u8 != 0
    }

    pub fn insert(&mut self, function: Function) {
        self.0 |= function as u8;
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The functions of either set.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The functions in the set, in `Function::ALL` order.
    pub fn iter(self) -> impl Iterator<Item = Function> {
        Function::ALL.into_iter().filter(move |f| self.contains(*f))
    }
}

/// What happens when a domain crashes (`on-crash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCrash {
    /// The domain stays stopped; the others run on.
    #[default]
    Stop,
    /// The domain is built again from its description.
    Restart,
    /// The whole system resets.
    Reboot,
}

impl OnCrash {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "stop" => Some(Self::Stop),
            "restart" => Some(Self::Restart),
            "reboot" => Some(Self::Reboot),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Reboot => "reboot",
        }
    }
}

/// The hyperlaunch properties of one domain node, as parsed.
pub(super) struct Hyperlaunch {
    /// `domid`, or `None` for automatic (absent or 0).
    pub domid: Option<u16>,
    pub functions: Functions,
    pub boot_order: u32,
    pub on_crash: OnCrash,
    pub restart_backoff_ms: Option<u32>,
    pub pcpus: heapless::Vec<u32, MAX_VCPUS_PER_DOMAIN>,
}

/// Reads every hyperlaunch property of one domain node; `vcpus` is its
/// already-validated `cpus`.
pub(super) fn parse(
    node: &Node<'_, '_>,
    path: &NodePath,
    vcpus: u32,
) -> Result<Hyperlaunch, ConfigError> {
    let on_crash = parse_on_crash(node, path)?;
    Ok(Hyperlaunch {
        domid: parse_domid(node, path)?,
        functions: parse_functions(node, path)?.union(parse_capabilities(node, path)?),
        boot_order: parse_boot_order(node, path)?,
        on_crash,
        restart_backoff_ms: parse_restart_backoff(node, path, on_crash)?,
        pcpus: parse_pcpus(node, path, vcpus)?,
    })
}

fn parse_domid(node: &Node<'_, '_>, path: &NodePath) -> Result<Option<u16>, ConfigError> {
    let fail = |kind| error(path, Some(P_DOMID), kind);
    let Some(value) = prop(node, P_DOMID) else {
        return Ok(None);
    };
    let domid = u32_value(value)
        .ok_or_else(|| fail(ConfigErrorKind::DomidBadLength { len: value.len() }))?;
    match domid {
        0 => Ok(None),
        n if n as usize <= MAX_DOMAINS => Ok(Some(n as u16)),
        n => Err(fail(ConfigErrorKind::DomidOutOfRange { domid: n })),
    }
}

fn parse_functions(node: &Node<'_, '_>, path: &NodePath) -> Result<Functions, ConfigError> {
    let mut functions = Functions::NONE;
    let Some(value) = prop(node, P_FUNCTIONS) else {
        return Ok(functions);
    };
    let fail = |kind| error(path, Some(P_FUNCTIONS), kind);
    // A well-formed, non-empty string list of known names; anything else
    // (Xen's bitmask cell included) is refused rather than half-read.
    let body = value
        .strip_suffix(&[0])
        .ok_or_else(|| fail(ConfigErrorKind::FunctionUnknown))?;
    for raw in body.split(|b| *b == 0) {
        let function = core::str::from_utf8(raw)
            .ok()
            .and_then(Function::from_name)
            .ok_or_else(|| fail(ConfigErrorKind::FunctionUnknown))?;
        if functions.contains(function) {
            return Err(fail(ConfigErrorKind::FunctionDuplicate {
                name: function.name(),
            }));
        }
        functions.insert(function);
    }
    Ok(functions)
}

/// Xen's `DOMAIN_CAPS_*` bits (`public/bootfdt.h`), and what each is here.
const CAPABILITIES: [(u32, Result<Function, &str>); 4] = [
    (1 << 0, Err("DOMAIN_CAPS_CONTROL")),
    (1 << 1, Err("DOMAIN_CAPS_HARDWARE")),
    (1 << 2, Ok(Function::Xenstore)),
    (1 << 3, Ok(Function::DeviceModel)),
];

/// Xen's dom0less `capabilities` cell, as the functions it names.
fn parse_capabilities(node: &Node<'_, '_>, path: &NodePath) -> Result<Functions, ConfigError> {
    let mut functions = Functions::NONE;
    let Some(value) = prop(node, P_CAPABILITIES) else {
        return Ok(functions);
    };
    let fail = |kind| error(path, Some(P_CAPABILITIES), kind);
    let mask = u32_value(value)
        .ok_or_else(|| fail(ConfigErrorKind::CapabilitiesBadLength { len: value.len() }))?;
    let known = CAPABILITIES.iter().fold(0, |m, (bit, _)| m | bit);
    if mask & !known != 0 {
        return Err(fail(ConfigErrorKind::CapabilitiesUnknown {
            bits: mask & !known,
        }));
    }
    for (bit, meaning) in CAPABILITIES {
        if mask & bit == 0 {
            continue;
        }
        match meaning {
            Ok(function) => functions.insert(function),
            Err(name) => return Err(fail(ConfigErrorKind::CapabilityUnsupported { name })),
        }
    }
    Ok(functions)
}

fn parse_boot_order(node: &Node<'_, '_>, path: &NodePath) -> Result<u32, ConfigError> {
    match prop(node, P_BOOT_ORDER) {
        None => Ok(0),
        Some(value) => u32_value(value).ok_or_else(|| {
            error(
                path,
                Some(P_BOOT_ORDER),
                ConfigErrorKind::BootOrderBadLength { len: value.len() },
            )
        }),
    }
}

fn parse_on_crash(node: &Node<'_, '_>, path: &NodePath) -> Result<OnCrash, ConfigError> {
    match prop(node, P_ON_CRASH) {
        None => Ok(OnCrash::default()),
        Some(value) => string_value(value)
            .and_then(OnCrash::from_name)
            .ok_or_else(|| error(path, Some(P_ON_CRASH), ConfigErrorKind::OnCrashInvalid)),
    }
}

fn parse_restart_backoff(
    node: &Node<'_, '_>,
    path: &NodePath,
    on_crash: OnCrash,
) -> Result<Option<u32>, ConfigError> {
    let Some(value) = prop(node, P_RESTART_BACKOFF) else {
        return Ok(None);
    };
    let fail = |kind| error(path, Some(P_RESTART_BACKOFF), kind);
    let ms = u32_value(value)
        .ok_or_else(|| fail(ConfigErrorKind::RestartBackoffBadLength { len: value.len() }))?;
    // A back-off that can never apply is a mistake in the description, most
    // likely a forgotten `on-crash = "restart"`.
    if on_crash != OnCrash::Restart {
        return Err(fail(ConfigErrorKind::RestartBackoffWithoutRestart {
            on_crash: on_crash.name(),
        }));
    }
    Ok(Some(ms))
}

fn parse_pcpus(
    node: &Node<'_, '_>,
    path: &NodePath,
    vcpus: u32,
) -> Result<heapless::Vec<u32, MAX_VCPUS_PER_DOMAIN>, ConfigError> {
    let mut pins = heapless::Vec::new();
    let Some(value) = prop(node, P_PCPUS) else {
        return Ok(pins);
    };
    let fail = |kind| error(path, Some(P_PCPUS), kind);
    if value.is_empty() || !value.len().is_multiple_of(4) {
        return Err(fail(ConfigErrorKind::PcpusBadLength { len: value.len() }));
    }
    let count = value.len() / 4;
    // Fewer pins than vCPUs is allowed (the extra vCPUs share the pins, and
    // `cargo xtask check` reports the over-commitment); more can never be
    // used, so it is a mistake.
    if count > vcpus as usize {
        return Err(fail(ConfigErrorKind::PcpusMoreThanVcpus { count, vcpus }));
    }
    for cell in value.chunks_exact(4) {
        let pcpu = u32_value(cell)
            .ok_or_else(|| fail(ConfigErrorKind::PcpusBadLength { len: value.len() }))?;
        if pcpu >= MAX_PCPUS {
            return Err(fail(ConfigErrorKind::PcpuOutOfRange { pcpu }));
        }
        // Two vCPUs of one domain on one pCPU defeat the point of pinning.
        if pins.contains(&pcpu) {
            return Err(fail(ConfigErrorKind::PcpuDuplicate { pcpu }));
        }
        pins.push(pcpu)
            .map_err(|_| fail(ConfigErrorKind::PcpusMoreThanVcpus { count, vcpus }))?;
    }
    Ok(pins)
}

/// Checks that no two domains claim one unique function (`boot`,
/// `xenstore`, `console`); `earlier` are the domains before `domain`.
pub(super) fn check_unique_functions(
    domain: &DomainConfig,
    path: &NodePath,
    earlier: &[DomainConfig],
    earlier_paths: &[NodePath],
) -> Result<(), ConfigError> {
    for function in domain.functions.iter().filter(|f| f.is_unique()) {
        let clash = earlier
            .iter()
            .zip(earlier_paths)
            .find(|(d, _)| d.functions.contains(function));
        if let Some((_, other)) = clash {
            return Err(error(
                path,
                Some(P_FUNCTIONS),
                ConfigErrorKind::FunctionNotUnique {
                    name: function.name(),
                    other: other.clone(),
                },
            ));
        }
    }
    Ok(())
}

/// Gives every domain its id: explicit `domid`s first (each unique), then
/// every other domain, in device-tree order, the lowest id still free. With
/// no `domid` anywhere that is device-tree order from 1, as before.
pub(super) fn assign_domids(
    requested: &[Option<u16>],
    paths: &[NodePath],
    domains: &mut [DomainConfig],
) -> Result<(), ConfigError> {
    let mut taken = [false; MAX_DOMAINS + 1];
    let mut owner: [usize; MAX_DOMAINS + 1] = [0; MAX_DOMAINS + 1];
    for (i, (wanted, path)) in requested.iter().zip(paths).enumerate() {
        let Some(id) = *wanted else { continue };
        let slot = usize::from(id);
        match taken.get(slot) {
            Some(true) => {
                let other = owner
                    .get(slot)
                    .and_then(|o| paths.get(*o))
                    .cloned()
                    .unwrap_or_default();
                return Err(error(
                    path,
                    Some(P_DOMID),
                    ConfigErrorKind::DuplicateDomid {
                        domid: u32::from(id),
                        other,
                    },
                ));
            }
            Some(false) => {
                if let (Some(t), Some(o)) = (taken.get_mut(slot), owner.get_mut(slot)) {
                    (*t, *o) = (true, i);
                }
            }
            // `parse_domid` keeps ids within 1..=MAX_DOMAINS.
            None => {
                return Err(error(
                    path,
                    Some(P_DOMID),
                    ConfigErrorKind::DomidOutOfRange {
                        domid: u32::from(id),
                    },
                ))
            }
        }
    }
    for (i, domain) in domains.iter_mut().enumerate() {
        domain.domid = match requested.get(i).copied().flatten() {
            Some(id) => id,
            None => {
                // There are at most MAX_DOMAINS domains, so an id is free.
                let free = (1..=MAX_DOMAINS)
                    .find(|&id| taken.get(id) == Some(&false))
                    .unwrap_or(0);
                if let Some(t) = taken.get_mut(free) {
                    *t = true;
                }
                free as u16
            }
        };
    }
    Ok(())
}

/// Why one domain must start before another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartsBefore {
    /// Written: its `boot-order` rank is lower.
    Rank { before: u32, after: u32 },
    /// Derived: it is the other's device model (`tessera,device-model`, or
    /// first in `tessera,devices`).
    DeviceModel,
    /// Derived: it is the boot domain, which builds the other.
    BootDomain,
    /// Derived: it is the xenstore domain the other is introduced to.
    Xenstore,
}

impl fmt::Display for StartsBefore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rank { before, after } => write!(f, "boot-order {before} < {after}"),
            Self::DeviceModel => f.write_str("its device model"),
            Self::BootDomain => f.write_str("the boot domain"),
            Self::Xenstore => f.write_str("its xenstore domain"),
        }
    }
}

/// One domain of a boot-order cycle and why it must start before the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleStep {
    pub domain: heapless::String<MAX_DOMAIN_NAME>,
    pub before_next: StartsBefore,
}

/// The domains of a boot-order cycle, each before the next and the last
/// before the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootCycle(pub heapless::Vec<CycleStep, MAX_DOMAINS>);

impl fmt::Display for BootCycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps = &self.0;
        for (i, step) in steps.iter().enumerate() {
            let next = steps
                .get(i + 1)
                .or(steps.first())
                .map_or("?", |s| &s.domain);
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "{:?} before {next:?} ({})",
                step.domain.as_str(),
                step.before_next
            )?;
        }
        Ok(())
    }
}

impl SystemConfig {
    /// Why domain `a` must start before domain `b`, if it must. Dependencies
    /// are named before ranks: they say more.
    pub fn starts_before(&self, a: usize, b: usize) -> Option<StartsBefore> {
        let (da, db) = (self.domains.get(a)?, self.domains.get(b)?);
        if a == b {
            return None;
        }
        if db.device_model == Some(a) {
            Some(StartsBefore::DeviceModel)
        } else if da.functions.contains(Function::Boot) {
            Some(StartsBefore::BootDomain)
        } else if da.functions.contains(Function::Xenstore) && db.xenstore {
            Some(StartsBefore::Xenstore)
        } else if da.boot_order < db.boot_order {
            Some(StartsBefore::Rank {
                before: da.boot_order,
                after: db.boot_order,
            })
        } else {
            None
        }
    }

    /// The order to start the domains in, as indices into `domains`: lowest
    /// `boot-order` first, a domain after everything it depends on, ties in
    /// device-tree order. A cycle is an error at its first domain (in tree
    /// order) naming every domain in it.
    pub fn boot_order(&self) -> Result<heapless::Vec<usize, MAX_DOMAINS>, ConfigError> {
        let n = self.domains.len();
        let mut started = [false; MAX_DOMAINS];
        let mut order = heapless::Vec::<usize, MAX_DOMAINS>::new();
        let waiting = |started: &[bool; MAX_DOMAINS], i: usize| {
            (0..n).any(|j| !started[j] && self.starts_before(j, i).is_some())
        };
        while order.len() < n {
            // Among the domains nothing unstarted must precede, the lowest
            // rank, then the first in the tree.
            let next = (0..n)
                .filter(|&i| !started[i] && !waiting(&started, i))
                .min_by_key(|&i| (self.domains.get(i).map_or(0, |d| d.boot_order), i));
            let Some(next) = next else {
                return Err(self.cycle_error(&started));
            };
            started[next] = true;
            // At most n pushes into a Vec of capacity MAX_DOMAINS >= n.
            let _ = order.push(next);
        }
        Ok(order)
    }

    /// The error for a stuck sort: every unstarted domain has an unstarted
    /// predecessor, so walking predecessors from any of them must revisit
    /// one, and the walk between the two visits is a cycle.
    fn cycle_error(&self, started: &[bool; MAX_DOMAINS]) -> ConfigError {
        let n = self.domains.len();
        let first = (0..n).find(|&i| !started[i]).unwrap_or(0);
        let mut walk = heapless::Vec::<usize, { MAX_DOMAINS + 1 }>::new();
        let mut at = first;
        while !walk.contains(&at) {
            let _ = walk.push(at);
            match (0..n).find(|&j| !started[j] && self.starts_before(j, at).is_some()) {
                Some(pred) => at = pred,
                None => break,
            }
        }
        // `walk` runs backwards along the edges; the cycle is its tail from
        // the revisited domain. Forwards, each step is before the next.
        let from = walk.iter().position(|&d| d == at).unwrap_or(0);
        let mut cycle: heapless::Vec<usize, MAX_DOMAINS> =
            walk.iter().skip(from).rev().copied().collect();
        // Start the report at the cycle's first domain in tree order.
        if let Some(lowest) = cycle
            .iter()
            .enumerate()
            .min_by_key(|(_, &d)| d)
            .map(|(k, _)| k)
        {
            cycle.rotate_left(lowest);
        }
        let mut steps = heapless::Vec::new();
        for (k, &d) in cycle.iter().enumerate() {
            let next = cycle.get(k + 1).or(cycle.first()).copied().unwrap_or(d);
            let (Some(domain), Some(before_next)) =
                (self.domains.get(d), self.starts_before(d, next))
            else {
                continue;
            };
            let _ = steps.push(CycleStep {
                domain: domain.name.clone(),
                before_next,
            });
        }
        let name = cycle
            .first()
            .and_then(|&d| self.domains.get(d))
            .map_or("", |d| d.name.as_str());
        error(
            &NodePath::new("/chosen").child(name),
            Some(P_BOOT_ORDER),
            ConfigErrorKind::BootOrderCycle(BootCycle(steps)),
        )
    }
}
