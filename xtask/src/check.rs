//! `cargo xtask check <image>`: everything that can be known about an image
//! without booting it, one finding per line, and a picture of its
//! partitions and links.
//!
//! The one idea: a finding is about the image as it would boot on a stated
//! board (`Board`: pCPUs and RAM, by default what `cargo xtask run` gives
//! QEMU for this image), computed from the same `SystemConfig` the kernel and domB parse and
//! the same policy questions the kernel asks. The checks, each a function
//! with its own negative tests:
//!
//! - **description**: dtc and the parser accept it (a parse error, which
//!   includes overlapping `xen,static-mem` and shared-memory host ranges, is
//!   the one finding that stops the other checks);
//! - **module**: every module resolves as `cargo xtask build` would resolve
//!   it, without building or fetching anything;
//! - **policy**: every label is a context and every link is allowed
//!   (`mac::check_system`), and no `allow` rule between two different domain
//!   types of this image is left unused by its links (`unused_rules`);
//! - **memory**: fixed host ranges lie in board RAM and do not overlap, each
//!   domain has the 4 MiB the kernel needs, and everything the kernel
//!   allocates fits in board RAM;
//! - **pcpus**: pins name pCPUs the board has, no pCPU is pinned twice, a
//!   pinned domain has a pin for every vCPU, and pinned domains (which own
//!   their pCPUs) leave a pCPU for the unpinned ones;
//! - **boot order**: `SystemConfig::boot_order` finds no cycle;
//! - **console** (warning only): a domain asks for `vpl011` with no device
//!   model to emulate it, as a tree written for Xen does; it boots with no
//!   PL011.
//!
//! What counts as an unused rule, exactly: an `allow S T:C` statement is
//! considered only through the (s, t) type pairs it expands to where s and t
//! differ and each is the type of a domain of this image. Rules with no such
//! pair are never reported: `self` rules, rules on objects such as
//! `console_t` or `local_event_t` (the kernel needs those at run time without
//! any link), and rules on types no domain of this image has. A considered
//! rule is used when one of its pairs, in class C, is needed by a link
//! ([`Link::needs`]): a static event channel (`event`, both ways), a static
//! shared-memory region (`grant`, between every two users, and in a
//! hyperlaunch image between the boot domain, which lends it from its own
//! RAM, and each user), a device model
//! (`ioreq` and `mmu` from server to guest; with `xen,enhanced`, also
//! `event` and `grant` both ways for PV back ends), a service a domain uses
//! through `functions` (xenstore: `store`, `event`, `grant`; vTPM: `vtpm`,
//! `event`, `grant`; console: `event`, `grant`), and the boot domain, which
//! builds and controls every other domain (every class). Permissions within
//! a class are not compared: which ones a link exercises depends on what the
//! domains do at run time. An unused rule is an error in an image's own
//! `policy.te` and a warning in the shared default policy, which is written
//! for many images.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_policy::compile::{allow_rules, AllowRule};
use tessera_policy::{split_context, Class, Policy};
use tessera_sysdesc::config::{
    parse_system, DomainConfig, Function, MemRange, SystemConfig, STATIC_MEM_ALIGN,
};

use crate::error::{io, Error};
use crate::mac::{check_system, DomainRef};
use crate::system::{
    compile_policy, module_source, modules_of, policy_source, unserved_vpl011, POLICY_SOURCE,
};
use crate::tools::{compile_dts, find_program, output};

/// Host RAM starts here on QEMU `virt`, the board images boot on.
pub const BOARD_RAM_BASE: u64 = 0x4000_0000;
/// The kernel gives a domain RAM in 2 MiB blocks.
const BLOCK: u64 = 2 << 20;
/// The kernel refuses a domain with less RAM: the top 2 MiB hold its DT.
pub const MIN_DOMAIN_RAM: u64 = 2 * BLOCK;
/// The grant tables of every domain share one 2 MiB block.
const GRANT_BLOCK: u64 = BLOCK;
/// Graphviz, for `system.svg` when it is installed.
pub const DOT: &str = "dot";

/// The board an image is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Board {
    /// Physical CPUs (QEMU `-smp`).
    pub cpus: u32,
    /// Bytes of RAM from `BOARD_RAM_BASE` (QEMU `-m`).
    pub ram: u64,
}

impl Board {
    /// What `cargo xtask run` boots an image without pins on: `-smp 2 -m 1G`.
    pub const RUN: Board = Board {
        cpus: crate::tools::RUN_SMP,
        ram: crate::tools::RUN_MEMORY_MIB << 20,
    };

    /// What `cargo xtask run` boots `config` on: [`Board::RUN`] with at
    /// least the pCPUs its pins need ([`pcpus_needed`]), so an image that
    /// pins a partition to pCPU 2 gets `-smp 3`.
    pub fn for_image(config: &SystemConfig) -> Board {
        Board {
            cpus: Board::RUN.cpus.max(pcpus_needed(config)),
            ..Board::RUN
        }
    }

    /// [`Board::for_image`] for `<image_dir>/system.dts`, or [`Board::RUN`]
    /// when it does not compile or parse (the build or check says why).
    pub fn for_image_dir(image_dir: &Path) -> Board {
        compile_dts(&image_dir.join("system.dts"))
            .ok()
            .and_then(|dtb| parse_system(&dtb).ok())
            .map_or(Board::RUN, |config| Board::for_image(&config))
    }
}

/// The fewest pCPUs on which `config`'s pins can be honoured as the kernel
/// places vCPUs (`tessera_kernel::placement`): every pinned pCPU, and one
/// more if pinned domains would own them all while some domain is not
/// pinned. 1 for an image without pins.
pub fn pcpus_needed(config: &SystemConfig) -> u32 {
    let pins: BTreeSet<u32> = config
        .domains
        .iter()
        .flat_map(|d| d.pcpus.iter().copied())
        .collect();
    let Some(&highest) = pins.last() else {
        return 1;
    };
    let unpinned = config.domains.iter().any(|d| d.pcpus.is_empty());
    let all_owned = pins.len() as u64 == u64::from(highest) + 1;
    highest + 1 + u32::from(unpinned && all_owned)
}

/// A `--ram` size: `<N>G` or `<N>M`, N > 0.
pub fn parse_ram(text: &str) -> Option<u64> {
    let (number, shift) = if let Some(n) = text.strip_suffix('G') {
        (n, 30)
    } else {
        (text.strip_suffix('M')?, 20)
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_mul(1 << shift))
}

/// How bad a finding is: only errors fail the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong with an image, printed as one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// Which check: `description`, `module`, `policy`, `memory`, `pcpus`,
    /// `boot order`.
    pub check: &'static str,
    pub message: String,
}

impl Finding {
    fn error(check: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Error,
            check,
            message: message.into(),
        }
    }

    fn warning(check: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Warning,
            check,
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        // One line, whatever the message holds (dtc's output has several).
        let message = self.message.trim_end().replace('\n', " | ");
        write!(f, "{severity}: {}: {message}", self.check)
    }
}

/// What `check_image` found, and the picture of the system when the
/// description could be parsed.
#[derive(Debug)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// `system.dot`, in Graphviz's language.
    pub dot: Option<String>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// Checks `<image_dir>/system.dts` and its policy and modules for `board`.
pub fn check_image(image_dir: &Path, board: &Board) -> Report {
    let dts = image_dir.join("system.dts");
    let stop = |message: String| Report {
        findings: vec![Finding::error("description", message)],
        dot: None,
    };
    let dtb = match compile_dts(&dts) {
        Ok(dtb) => dtb,
        Err(e) => return stop(e.to_string()),
    };
    let config = match parse_system(&dtb) {
        Ok(config) => config,
        Err(e) => return stop(format!("{}: {e}", dts.display())),
    };
    let mut findings = check_modules(&config, image_dir);
    let policy = policy_source(image_dir);
    let own_policy = policy == image_dir.join(POLICY_SOURCE);
    findings.extend(check_policy_file(&config, &policy, own_policy));
    findings.extend(check_memory(&config, board));
    findings.extend(check_pcpus(&config, board));
    findings.extend(check_boot_order(&config));
    findings.extend(
        unserved_vpl011(&config)
            .into_iter()
            .map(|w| Finding::warning("console", w)),
    );
    Report {
        findings,
        dot: Some(system_dot(&config, &domain_types(&config))),
    }
}

/// Every module name resolves, and no name is used two ways.
pub fn check_modules(config: &SystemConfig, image_dir: &Path) -> Vec<Finding> {
    if let Err(e) = modules_of(config) {
        return vec![Finding::error("module", e.to_string())];
    }
    let mut findings = Vec::new();
    let mut seen = BTreeSet::new();
    for name in config.module_names() {
        if !seen.insert(name) {
            continue;
        }
        if let Err(e) = module_source(name, image_dir) {
            findings.push(Finding::error("module", e.to_string()));
        }
    }
    findings
}

/// Compiles the policy at `path` and checks `config` against it.
fn check_policy_file(config: &SystemConfig, path: &Path, own_policy: bool) -> Vec<Finding> {
    let source = match std::fs::read_to_string(path).map_err(io(path)) {
        Ok(source) => source,
        Err(e) => return vec![Finding::error("policy", e.to_string())],
    };
    let binary = match compile_policy(path) {
        Ok(binary) => binary,
        Err(e) => return vec![Finding::error("policy", e.to_string())],
    };
    let Ok(policy) = Policy::load(&binary) else {
        return vec![Finding::error(
            "policy",
            format!(
                "the policy compiled from {} does not load; this is a compiler bug",
                path.display()
            ),
        )];
    };
    let rules = match allow_rules(&source) {
        Ok(rules) => rules,
        Err(e) => {
            return vec![Finding::error(
                "policy",
                e.in_file(&path.display().to_string()).to_string(),
            )]
        }
    };
    // Name the shared default policy as the repository does, not by where
    // this checkout happens to be.
    let shown = path.strip_prefix(crate::repo_root()).unwrap_or(path);
    check_policy(config, &policy, &rules, shown, own_policy)
}

/// The policy findings for `config`: what `cargo xtask build` refuses (a
/// denied link only warns in a permissive image, as there), then rules no
/// link uses.
pub fn check_policy(
    config: &SystemConfig,
    policy: &Policy<'_>,
    rules: &[AllowRule],
    path: &Path,
    own_policy: bool,
) -> Vec<Finding> {
    let mut findings: Vec<Finding> = check_system(config, policy)
        .into_iter()
        .map(|v| {
            let message = format!("{v} (policy {})", path.display());
            if v.is_link() && !config.policy_enforcing {
                Finding::warning(
                    "policy",
                    format!("{message}; permissive image: allowed and logged"),
                )
            } else {
                Finding::error("policy", message)
            }
        })
        .collect();
    let types = domain_types(config);
    for unused in unused_rules(config, &types, rules) {
        let message = format!(
            "{}:{}: `{}` is used by no link of this image (it grants {})",
            path.display(),
            unused.rule.span.line,
            unused.rule,
            unused
                .pairs
                .iter()
                .map(|(s, t)| format!("{s} -> {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        findings.push(if own_policy {
            Finding::error("policy", message)
        } else {
            Finding::warning(
                "policy",
                format!("{message}; the shared default policy serves many images"),
            )
        });
    }
    findings
}

/// Each domain's policy type, from its label (`None` for a malformed one,
/// which the label check reports).
pub fn domain_types(config: &SystemConfig) -> Vec<Option<String>> {
    config
        .domains
        .iter()
        .map(|d| split_context(&d.security_label).map(|(_, _, ty)| ty.to_string()))
        .collect()
}

/// A relationship between two domains that the policy must allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// A static event channel (`xen,evtchn-v1`).
    EventChannel {
        a: usize,
        a_port: u32,
        b: usize,
        b_port: u32,
    },
    /// A static shared-memory region, between two of its users.
    SharedMemory { id: String, a: usize, b: usize },
    /// `tessera,device-model`: `server` emulates `guest`'s devices.
    DeviceModel { server: usize, guest: usize },
    /// `client` uses the service domain `service` (xenstore, vTPM, console).
    Service {
        function: Function,
        service: usize,
        client: usize,
    },
    /// The boot domain builds and controls `domain`.
    Builds { boot: usize, domain: usize },
}

impl Link {
    /// Every (source domain, target domain, class) the link needs allowed.
    pub fn needs(&self, config: &SystemConfig) -> Vec<(usize, usize, Class)> {
        let both = |a: usize, b: usize, class: Class| [(a, b, class), (b, a, class)];
        match *self {
            Link::EventChannel { a, b, .. } => both(a, b, Class::Event).to_vec(),
            Link::SharedMemory { a, b, .. } => both(a, b, Class::Grant).to_vec(),
            Link::DeviceModel { server, guest } => {
                let mut needs = vec![(server, guest, Class::Ioreq), (server, guest, Class::Mmu)];
                // A Xen PV guest's front ends talk to back ends in its
                // device model over event channels and grants.
                if config.domains.get(guest).is_some_and(|d| d.xen_enhanced) {
                    needs.extend(both(server, guest, Class::Event));
                    needs.extend(both(server, guest, Class::Grant));
                }
                needs
            }
            Link::Service {
                function,
                service,
                client,
            } => {
                let mut needs = Vec::new();
                match function {
                    Function::Xenstore => needs.push((client, service, Class::Store)),
                    Function::Vtpm => needs.push((client, service, Class::Vtpm)),
                    _ => {}
                }
                needs.extend(both(client, service, Class::Event));
                needs.extend(both(client, service, Class::Grant));
                needs
            }
            Link::Builds { boot, domain } => Class::ALL
                .iter()
                .map(|&class| (boot, domain, class))
                .collect(),
        }
    }

    /// The two domains it joins, the one that acts first.
    pub fn ends(&self) -> (usize, usize) {
        match *self {
            Link::EventChannel { a, b, .. } | Link::SharedMemory { a, b, .. } => (a, b),
            Link::DeviceModel { server, guest } => (server, guest),
            Link::Service {
                service, client, ..
            } => (service, client),
            Link::Builds { boot, domain } => (boot, domain),
        }
    }
}

/// Every link of `config`: static event channels, shared memory (every
/// pair of users, and the boot domain with each user, since it lends the
/// region), device models, services used through `functions`, and what the
/// boot domain builds.
pub fn links(config: &SystemConfig) -> Vec<Link> {
    let mut links = Vec::new();
    for c in &config.evtchns {
        links.push(Link::EventChannel {
            a: c.a.domain,
            a_port: c.a.port,
            b: c.b.domain,
            b_port: c.b.port,
        });
    }
    let boot = config
        .domains
        .iter()
        .position(|d| d.functions.contains(Function::Boot));
    for region in &config.shm {
        for (i, x) in region.users.iter().enumerate() {
            for y in region.users.iter().skip(i + 1) {
                links.push(Link::SharedMemory {
                    id: region.id.to_string(),
                    a: x.domain,
                    b: y.domain,
                });
            }
            if let Some(boot) = boot.filter(|&b| b != x.domain) {
                links.push(Link::SharedMemory {
                    id: region.id.to_string(),
                    a: boot,
                    b: x.domain,
                });
            }
        }
    }
    for (guest, d) in config.domains.iter().enumerate() {
        if let Some(server) = d.device_model {
            links.push(Link::DeviceModel { server, guest });
        }
    }
    for (service, s) in config.domains.iter().enumerate() {
        for function in [Function::Xenstore, Function::Vtpm, Function::Console] {
            if !s.functions.contains(function) {
                continue;
            }
            for (client, d) in config.domains.iter().enumerate() {
                if client != service && uses_service(d, function) {
                    links.push(Link::Service {
                        function,
                        service,
                        client,
                    });
                }
            }
        }
        if s.functions.contains(Function::Boot) {
            for domain in (0..config.domains.len()).filter(|&d| d != service) {
                links.push(Link::Builds {
                    boot: service,
                    domain,
                });
            }
        }
    }
    links
}

/// Whether domain `d` uses the service domain with `function`: xenstore if
/// it is introduced to it, the console if it has Xen PV interfaces
/// (`hvc_xen`), a vTPM if it is an ordinary guest (no property says which
/// guests have one yet, so every guest may).
fn uses_service(d: &DomainConfig, function: Function) -> bool {
    match function {
        Function::Xenstore => d.xenstore,
        Function::Console => d.xen_enhanced,
        Function::Vtpm => d.functions.is_empty(),
        Function::Boot | Function::DeviceModel => false,
    }
}

/// An `allow` statement no link of the image uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnusedRule<'r> {
    pub rule: &'r AllowRule,
    /// The considered (source type, target type) pairs, none of them used.
    pub pairs: Vec<(String, String)>,
}

/// The rules among `rules` that grant something between two different
/// domain types of this image and that no link needs (see the module note
/// for exactly what counts).
pub fn unused_rules<'r>(
    config: &SystemConfig,
    types: &[Option<String>],
    rules: &'r [AllowRule],
) -> Vec<UnusedRule<'r>> {
    let present: BTreeSet<&str> = types.iter().flatten().map(String::as_str).collect();
    let mut used: BTreeSet<(&str, &str, Class)> = BTreeSet::new();
    for link in links(config) {
        for (s, t, class) in link.needs(config) {
            if let (Some(Some(s)), Some(Some(t))) = (types.get(s), types.get(t)) {
                used.insert((s.as_str(), t.as_str(), class));
            }
        }
    }
    rules
        .iter()
        .filter_map(|rule| {
            let considered: Vec<(String, String)> = rule
                .pairs
                .iter()
                .filter(|(s, t)| {
                    s != t && present.contains(s.as_str()) && present.contains(t.as_str())
                })
                .cloned()
                .collect();
            let is_used = considered
                .iter()
                .any(|(s, t)| used.contains(&(s.as_str(), t.as_str(), rule.class)));
            (!considered.is_empty() && !is_used).then_some(UnusedRule {
                rule,
                pairs: considered,
            })
        })
        .collect()
}

fn mib(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes:#x} bytes")
    }
}

fn range(r: &MemRange) -> String {
    format!("{:#x}..{:#x}", r.base, r.base.saturating_add(r.size))
}

/// Fixed host ranges, each domain's minimum, and the total against the
/// board's RAM.
pub fn check_memory(config: &SystemConfig, board: &Board) -> Vec<Finding> {
    let mut findings = Vec::new();
    let board_ram = MemRange {
        base: BOARD_RAM_BASE,
        size: board.ram,
    };
    let domain_ref = |i: usize| {
        config
            .domains
            .get(i)
            .map(|d| DomainRef::new(i, d).to_string())
    };
    // Every range the description fixes in host memory, and whose it is.
    let mut fixed: Vec<(String, MemRange)> = Vec::new();
    for (i, d) in config.domains.iter().enumerate() {
        if let Some(r) = d.static_mem {
            fixed.push((
                format!("xen,static-mem of {}", domain_ref(i).unwrap_or_default()),
                r,
            ));
        }
    }
    for s in &config.shm {
        if let Some(base) = s.host_base {
            fixed.push((
                format!("shared memory {:?}", s.id.as_str()),
                MemRange { base, size: s.size },
            ));
        }
    }
    for (what, r) in &fixed {
        let inside =
            r.base >= board_ram.base && r.end().is_some_and(|end| Some(end) <= board_ram.end());
        if !inside {
            findings.push(Finding::error(
                "memory",
                format!(
                    "{what} ({}) is not inside the board's RAM {} (--ram {})",
                    range(r),
                    range(&board_ram),
                    mib(board.ram)
                ),
            ));
        }
    }
    // The parser refuses these overlaps already; checked again here so the
    // check does not depend on where the parser draws its lines.
    for (i, (a, ra)) in fixed.iter().enumerate() {
        for (b, rb) in fixed.iter().skip(i + 1) {
            if ra.overlaps(rb) {
                findings.push(Finding::error(
                    "memory",
                    format!("{a} ({}) overlaps {b} ({})", range(ra), range(rb)),
                ));
            }
        }
    }
    for (i, d) in config.domains.iter().enumerate() {
        if d.memory_bytes < MIN_DOMAIN_RAM {
            findings.push(Finding::error(
                "memory",
                format!(
                    "{} has {} of RAM; the kernel needs at least {} (the top 2 MiB hold its device tree)",
                    domain_ref(i).unwrap_or_default(),
                    mib(d.memory_bytes),
                    mib(MIN_DOMAIN_RAM)
                ),
            ));
        }
    }
    let domains: u64 = config
        .domains
        .iter()
        .map(|d| d.memory_bytes.next_multiple_of(STATIC_MEM_ALIGN))
        .sum();
    let shared: u64 = config
        .shm
        .iter()
        .map(|s| s.size.next_multiple_of(BLOCK))
        .sum();
    let total = domains + shared + GRANT_BLOCK;
    if total > board.ram {
        findings.push(Finding::error(
            "memory",
            format!(
                "the domains need {} of host RAM ({} of domain RAM in 2 MiB blocks, {} of shared \
                 memory, {} of grant tables), more than the board's {} (--ram), before the \
                 hypervisor and its image",
                mib(total),
                mib(domains),
                mib(shared),
                mib(GRANT_BLOCK),
                mib(board.ram)
            ),
        ));
    }
    findings
}

/// Pins against the board's pCPUs and against each other.
pub fn check_pcpus(config: &SystemConfig, board: &Board) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut owner: Vec<Option<usize>> = Vec::new();
    for (i, d) in config.domains.iter().enumerate() {
        if d.pcpus.is_empty() {
            continue;
        }
        let me = DomainRef::new(i, d);
        if d.pcpus.len() < d.vcpus as usize {
            findings.push(Finding::error(
                "pcpus",
                format!(
                    "{me} has {} vCPUs but tessera,pcpus pins only {}: vCPUs would share a pCPU",
                    d.vcpus,
                    d.pcpus.len()
                ),
            ));
        }
        for &pcpu in &d.pcpus {
            if pcpu >= board.cpus {
                findings.push(Finding::error(
                    "pcpus",
                    format!(
                        "{me} is pinned to pCPU {pcpu}, but the board has {} pCPUs (--cpus)",
                        board.cpus
                    ),
                ));
                continue;
            }
            let slot = pcpu as usize;
            if owner.len() <= slot {
                owner.resize(slot + 1, None);
            }
            match owner.get(slot).copied().flatten() {
                Some(other) => {
                    let other = config
                        .domains
                        .get(other)
                        .map(|o| DomainRef::new(other, o).to_string())
                        .unwrap_or_default();
                    findings.push(Finding::error(
                        "pcpus",
                        format!("{other} and {me} are both pinned to pCPU {pcpu}"),
                    ));
                }
                None => {
                    if let Some(o) = owner.get_mut(slot) {
                        *o = Some(i);
                    }
                }
            }
        }
    }
    // A pinned domain owns its pCPUs: the kernel places no other vCPU there
    // and refuses an image that leaves an unpinned domain nowhere to run.
    let owned = owner.iter().filter(|o| o.is_some()).count();
    let unpinned = config.domains.iter().position(|d| d.pcpus.is_empty());
    if let (Some(i), true) = (unpinned, owned as u64 >= u64::from(board.cpus)) {
        if let Some(d) = config.domains.get(i) {
            findings.push(Finding::error(
                "pcpus",
                format!(
                    "{} is not pinned, but pinned domains own all {} pCPUs: none is left for it",
                    DomainRef::new(i, d),
                    board.cpus
                ),
            ));
        }
    }
    findings
}

/// A cycle in the boot order.
pub fn check_boot_order(config: &SystemConfig) -> Vec<Finding> {
    match config.boot_order() {
        Ok(_) => Vec::new(),
        Err(e) => vec![Finding::error("boot order", e.to_string())],
    }
}

/// Escapes `text` for a double-quoted Graphviz string.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The system as a Graphviz digraph: one box per domain (name, id, type,
/// RAM, vCPUs and pins, functions) and one edge per link.
pub fn system_dot(config: &SystemConfig, types: &[Option<String>]) -> String {
    let mut dot = String::from(
        "digraph system {\n    rankdir=LR;\n    node [shape=box, style=rounded, fontname=\"Helvetica\"];\n    edge [fontname=\"Helvetica\", fontsize=10];\n",
    );
    let id = |i: usize| {
        config
            .domains
            .get(i)
            .map_or_else(|| format!("x{i}"), |d| format!("d{}", d.domid))
    };
    for (i, d) in config.domains.iter().enumerate() {
        let mut label = format!(
            "{}\nd{} {}\n{}, {} vCPU{}",
            d.name,
            d.domid,
            types.get(i).cloned().flatten().unwrap_or_default(),
            mib(d.memory_bytes),
            d.vcpus,
            if d.vcpus == 1 { "" } else { "s" }
        );
        if !d.pcpus.is_empty() {
            let pins: Vec<String> = d.pcpus.iter().map(u32::to_string).collect();
            label.push_str(&format!(" on pCPU {}", pins.join(",")));
        }
        if !d.functions.is_empty() {
            let names: Vec<&str> = d.functions.iter().map(Function::name).collect();
            label.push_str(&format!("\n[{}]", names.join(", ")));
        }
        dot.push_str(&format!("    {} [label={}];\n", id(i), quoted(&label)));
    }
    for link in links(config) {
        let (from, to) = link.ends();
        let attributes = match &link {
            Link::EventChannel { a_port, b_port, .. } => {
                format!(
                    "label={}, dir=both",
                    quoted(&format!("evtchn {a_port}:{b_port}"))
                )
            }
            Link::SharedMemory { id, .. } => {
                format!(
                    "label={}, dir=both, style=dashed",
                    quoted(&format!("shm {id}"))
                )
            }
            Link::DeviceModel { guest, .. } => {
                let mut devices: Vec<&str> = Vec::new();
                if let Some(g) = config.domains.get(*guest) {
                    if g.vpl011 {
                        devices.push("pl011");
                    }
                    devices.extend(g.virtio.iter().map(|v| v.name()));
                }
                format!(
                    "label={}, penwidth=2",
                    quoted(&format!("device model\n{}", devices.join(" ")))
                )
            }
            Link::Service { function, .. } => {
                format!("label={}, style=dotted", quoted(function.name()))
            }
            Link::Builds { .. } => "label=\"builds\", color=gray, fontcolor=gray".to_string(),
        };
        dot.push_str(&format!("    {} -> {} [{attributes}];\n", id(from), id(to)));
    }
    dot.push_str("}\n");
    dot
}

/// Writes `dot` to `<out_dir>/system.dot` and, when Graphviz is on `PATH`,
/// renders `system.svg` beside it. Returns the files written.
pub fn write_picture(dot: &str, out_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let dot_path = out_dir.join("system.dot");
    std::fs::write(&dot_path, dot).map_err(io(&dot_path))?;
    let mut written = vec![dot_path.clone()];
    if find_program(DOT).is_some() {
        let svg = out_dir.join("system.svg");
        let out = output(
            Command::new(DOT)
                .arg("-Tsvg")
                .arg("-o")
                .arg(&svg)
                .arg(&dot_path),
        )?;
        if !out.status.success() {
            return Err(Error::Command {
                command: format!("{DOT} -Tsvg -o {} {}", svg.display(), dot_path.display()),
                status: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        written.push(svg);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::DTC;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tessera_policy::compile::compile;

    /// Tests that need dtc say so and pass when it is missing, as in
    /// `system.rs`.
    fn have_dtc() -> bool {
        let found = find_program(DTC).is_some();
        if !found {
            eprintln!("skipped: dtc is not installed (run scripts/setup.sh)");
        }
        found
    }

    struct TempDir(PathBuf);
    impl TempDir {
        /// A fresh directory: tests run in parallel threads of one process.
        fn new(tag: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("xtask-check-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A domain node: 16 MiB, one vCPU, the test guest, plus `extra`.
    fn domain(name: &str, extra: &str) -> String {
        format!(
            r#"{name} {{
            compatible = "xen,domain";
            #address-cells = <1>; #size-cells = <1>;
            memory = <0x0 0x4000>;
            cpus = <1>;
            {extra}
            module@0 {{
                compatible = "multiboot,kernel", "multiboot,module";
                tessera,module = "testguest";
            }};
        }};"#
        )
    }

    fn dts(chosen: &[String]) -> String {
        format!(
            "/dts-v1/;\n/ {{\n    #address-cells = <2>; #size-cells = <2>;\n    chosen {{\n        \
             #address-cells = <1>; #size-cells = <1>;\n        {}\n    }};\n}};\n",
            chosen.join("\n        ")
        )
    }

    /// Writes an image directory with `system.dts` and, if given, its own
    /// `policy.te`.
    fn image(tag: &str, chosen: &[String], policy: Option<&str>) -> TempDir {
        let dir = TempDir::new(tag);
        std::fs::write(dir.0.join("system.dts"), dts(chosen)).unwrap();
        if let Some(policy) = policy {
            std::fs::write(dir.0.join(POLICY_SOURCE), policy).unwrap();
        }
        dir
    }

    fn parse(chosen: &[String]) -> SystemConfig {
        let dir = image("parse", chosen, None);
        let dtb = compile_dts(&dir.0.join("system.dts")).unwrap();
        parse_system(&dtb).unwrap()
    }

    fn messages(findings: &[Finding]) -> Vec<String> {
        findings.iter().map(ToString::to_string).collect()
    }

    fn label(ty: &str) -> String {
        format!("xen,security-label = \"system_u:system_r:{ty}\";")
    }

    const BASE_POLICY: &str = "user system_u; role system_r;\n\
        attribute domain_type; attribute guest_type;\n\
        type console_t;\n\
        type domU_t, domain_type, guest_type;\n\
        type devmodel_t, domain_type;\n\
        type ring_t, domain_type;\n\
        allow domain_type self:domain shutdown;\n\
        allow domain_type console_t:console write;\n";

    /// The policy findings of `config` under `src`, as its own policy.
    fn policy_messages(config: &SystemConfig, src: &str, own: bool) -> Vec<String> {
        let binary = compile(src).unwrap();
        let policy = Policy::load(&binary).unwrap();
        let rules = allow_rules(src).unwrap();
        messages(&check_policy(
            config,
            &policy,
            &rules,
            Path::new("img/policy.te"),
            own,
        ))
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(parse_ram("1G"), Some(1 << 30));
        assert_eq!(parse_ram("512M"), Some(512 << 20));
        for bad in [
            "",
            "G",
            "0G",
            "1",
            "1g",
            "1.5G",
            "-1M",
            "99999999999G",
            "1GB",
        ] {
            assert_eq!(parse_ram(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_finding_is_one_line() {
        let f = Finding::error("description", "dtc said:\nline 1\nline 2\n");
        assert_eq!(
            f.to_string(),
            "error: description: dtc said: | line 1 | line 2"
        );
        let w = Finding::warning("policy", "x");
        assert_eq!(w.to_string(), "warning: policy: x");
    }

    #[test]
    fn the_default_image_passes() {
        if !have_dtc() {
            return;
        }
        let dir = crate::repo_root().join("images").join("qemu-virt");
        let report = check_image(&dir, &Board::RUN);
        assert_eq!(messages(&report.findings), Vec::<String>::new());
        let dot = report.dot.unwrap();
        // linux1 (d2) says tessera,device-model + tessera,virtio, linux2
        // (d3) tessera,devices: the same edge.
        for guest in ["d2", "d3"] {
            assert!(
                dot.contains(&format!(
                    "d1 -> {guest} [label=\"device model\\npl011 rng console blk net\""
                )),
                "{dot}"
            );
        }
    }

    #[test]
    fn a_dtc_error_or_a_parse_error_stops_the_check() {
        if !have_dtc() {
            return;
        }
        let dir = TempDir::new("syntax");
        std::fs::write(
            dir.0.join("system.dts"),
            "/dts-v1/;\n/ { chosen { oops }; };\n",
        )
        .unwrap();
        let report = check_image(&dir.0, &Board::RUN);
        assert_eq!(report.findings.len(), 1);
        assert!(report.findings[0]
            .to_string()
            .starts_with("error: description: dtc failed"));
        assert!(report.dot.is_none());

        // Overlapping static memory is the parser's to refuse.
        let dir = image(
            "overlap",
            &[
                domain("a", "xen,static-mem = <0x0 0x60000000 0x0 0x1000000>;"),
                domain("b", "xen,static-mem = <0x0 0x60800000 0x0 0x1000000>;"),
            ],
            None,
        );
        let report = check_image(&dir.0, &Board::RUN);
        let found = messages(&report.findings);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].ends_with(
                "/chosen/b: property \"xen,static-mem\": overlaps the static memory of /chosen/a"
            ),
            "{found:?}"
        );
    }

    #[test]
    fn overlapping_fixed_ranges_are_reported_even_past_the_parser() {
        if !have_dtc() {
            return;
        }
        // Build what the parser would refuse, to check the check itself.
        let mut config = parse(&[
            domain("a", "xen,static-mem = <0x0 0x60000000 0x0 0x1000000>;"),
            domain("b", ""),
        ]);
        config.domains[1].static_mem = Some(MemRange {
            base: 0x6080_0000,
            size: 16 << 20,
        });
        assert_eq!(
            messages(&check_memory(&config, &Board::RUN)),
            [
                "error: memory: xen,static-mem of d1 \"a\" (0x60000000..0x61000000) overlaps \
              xen,static-mem of d2 \"b\" (0x60800000..0x61800000)"
            ]
        );
    }

    #[test]
    fn fixed_ranges_must_lie_in_board_ram() {
        if !have_dtc() {
            return;
        }
        let shm = |node: &str, role: &str| {
            format!(
                r#"{node} {{
                compatible = "xen,domain-shared-memory-v1";
                xen,shm-id = "ring";
                role = "{role}";
                xen,shared-mem = <0x60000000 0x20000000 0x200000>;
            }};"#
            )
        };
        let config = parse(&[
            domain(
                "a",
                &format!(
                    "xen,static-mem = <0x0 0x7f000000 0x0 0x1000000>;\n{}",
                    shm("shm@20000000", "owner")
                ),
            ),
            domain("b", &shm("shm@20000000", "borrower")),
        ]);
        assert_eq!(
            messages(&check_memory(&config, &Board::RUN)),
            Vec::<String>::new()
        );
        let small = Board {
            ram: 512 << 20,
            ..Board::RUN
        };
        assert_eq!(
            messages(&check_memory(&config, &small)),
            [
                "error: memory: xen,static-mem of d1 \"a\" (0x7f000000..0x80000000) is not inside \
                 the board's RAM 0x40000000..0x60000000 (--ram 512 MiB)",
                "error: memory: shared memory \"ring\" (0x60000000..0x60200000) is not inside the \
                 board's RAM 0x40000000..0x60000000 (--ram 512 MiB)",
            ]
        );
    }

    #[test]
    fn the_domains_must_fit_in_board_ram_and_each_have_4_mib() {
        if !have_dtc() {
            return;
        }
        let big = |name: &str| {
            domain(name, "").replace("memory = <0x0 0x4000>;", "memory = <0x0 0x40000>;")
        };
        let config = parse(&[big("a"), big("b"), big("c")]);
        // 3 x 256 MiB + the 2 MiB grant block.
        assert_eq!(
            messages(&check_memory(&config, &Board::RUN)),
            Vec::<String>::new()
        );
        let tight = Board {
            ram: 768 << 20,
            ..Board::RUN
        };
        assert_eq!(
            messages(&check_memory(&config, &tight)),
            ["error: memory: the domains need 770 MiB of host RAM (768 MiB of domain RAM in 2 MiB \
              blocks, 0 MiB of shared memory, 2 MiB of grant tables), more than the board's 768 \
              MiB (--ram), before the hypervisor and its image"]
        );
        let config =
            parse(&[domain("tiny", "").replace("memory = <0x0 0x4000>;", "memory = <0x0 0xc00>;")]);
        assert_eq!(
            messages(&check_memory(&config, &Board::RUN)),
            ["error: memory: d1 \"tiny\" has 3 MiB of RAM; the kernel needs at least 4 MiB (the \
              top 2 MiB hold its device tree)"]
        );
    }

    #[test]
    fn pins_are_checked_against_the_board_and_each_other() {
        if !have_dtc() {
            return;
        }
        let two = |name: &str, pins: &str| {
            domain(name, &format!("tessera,pcpus = <{pins}>;"))
                .replace("cpus = <1>;", "cpus = <2>;")
        };
        let good = parse(&[
            two("safety", "2 3"),
            domain("hmi", "tessera,pcpus = <1>;"),
            domain("free", ""),
        ]);
        let four = Board {
            cpus: 4,
            ..Board::RUN
        };
        assert_eq!(messages(&check_pcpus(&good, &four)), Vec::<String>::new());
        assert_eq!(
            messages(&check_pcpus(&good, &Board::RUN)),
            [
                "error: pcpus: d1 \"safety\" is pinned to pCPU 2, but the board has 2 pCPUs (--cpus)",
                "error: pcpus: d1 \"safety\" is pinned to pCPU 3, but the board has 2 pCPUs (--cpus)",
            ]
        );
        let shared = parse(&[two("safety", "0 1"), domain("hmi", "tessera,pcpus = <1>;")]);
        assert_eq!(
            messages(&check_pcpus(&shared, &four)),
            ["error: pcpus: d1 \"safety\" and d2 \"hmi\" are both pinned to pCPU 1"]
        );
        let crowded = parse(&[
            domain("dm", ""),
            domain("a", "tessera,pcpus = <0>;"),
            domain("b", "tessera,pcpus = <1>;"),
        ]);
        assert_eq!(
            messages(&check_pcpus(&crowded, &Board::RUN)),
            ["error: pcpus: d1 \"dm\" is not pinned, but pinned domains own all 2 pCPUs: none is \
              left for it"]
        );
        let three = Board {
            cpus: 3,
            ..Board::RUN
        };
        assert_eq!(
            messages(&check_pcpus(&crowded, &three)),
            Vec::<String>::new()
        );
        let short = parse(&[two("safety", "0")]);
        assert_eq!(
            messages(&check_pcpus(&short, &four)),
            ["error: pcpus: d1 \"safety\" has 2 vCPUs but tessera,pcpus pins only 1: vCPUs would \
              share a pCPU"]
        );
    }

    #[test]
    fn a_vpl011_nobody_emulates_is_a_warning() {
        if !have_dtc() {
            return;
        }
        let xen = parse(&[domain("domU0", "vpl011 = <0x1>;"), domain("other", "")]);
        assert_eq!(
            unserved_vpl011(&xen),
            [
                "d1 \"domU0\" has vpl011 but no tessera,device-model: no PL011 is emulated, its \
              console is the hypervisor console (console_io)"
            ]
        );
        let served = parse(&[
            domain("dm", ""),
            domain("g", "vpl011; tessera,device-model = \"dm\";"),
        ]);
        assert!(unserved_vpl011(&served).is_empty());
    }

    #[test]
    fn run_gives_an_image_the_pcpus_its_pins_need() {
        if !have_dtc() {
            return;
        }
        let none = parse(&[domain("a", ""), domain("b", "")]);
        assert_eq!(pcpus_needed(&none), 1);
        assert_eq!(Board::for_image(&none), Board::RUN);
        // The automotive ECU: safety owns pCPU 2, the others share 0 and 1.
        let ecu = parse(&[
            domain("dm", ""),
            domain("linux", ""),
            domain("safety", "tessera,pcpus = <2>;"),
        ]);
        assert_eq!(pcpus_needed(&ecu), 3);
        assert_eq!(Board::for_image(&ecu).cpus, 3);
        assert_eq!(Board::for_image(&ecu).ram, Board::RUN.ram);
        // Pins on 0 and 1 and an unpinned domain: a third pCPU for it.
        let crowded = parse(&[
            domain("dm", ""),
            domain("a", "tessera,pcpus = <0>;"),
            domain("b", "tessera,pcpus = <1>;"),
        ]);
        assert_eq!(pcpus_needed(&crowded), 3);
        // Every domain pinned: exactly the pins.
        let pinned = parse(&[
            domain("a", "tessera,pcpus = <0>;"),
            domain("b", "tessera,pcpus = <1>;"),
        ]);
        assert_eq!(pcpus_needed(&pinned), 2);
        // A hole below the pins is left for the unpinned domains.
        let hole = parse(&[domain("dm", ""), domain("a", "tessera,pcpus = <3>;")]);
        assert_eq!(pcpus_needed(&hole), 4);
        assert_eq!(Board::for_image_dir(Path::new("/nonexistent")), Board::RUN);
    }

    #[test]
    fn a_boot_order_cycle_is_reported() {
        if !have_dtc() {
            return;
        }
        let config = parse(&[
            domain("dm", "boot-order = <5>;"),
            domain("g", "tessera,device-model = \"dm\"; vpl011;"),
        ]);
        assert_eq!(
            messages(&check_boot_order(&config)),
            ["error: boot order: /chosen/dm: property \"boot-order\": the boot order has a cycle: \
              \"dm\" before \"g\" (its device model), \"g\" before \"dm\" (boot-order 0 < 5)"]
        );
        let config = parse(&[
            domain("dm", ""),
            domain("g", "tessera,device-model = \"dm\";"),
        ]);
        assert!(check_boot_order(&config).is_empty());
        // Hyperlaunch's spelling makes the same dependency.
        let config = parse(&[
            domain("dm", "boot-order = <5>;"),
            domain("g", "tessera,devices = \"dm\"; vpl011;"),
        ]);
        assert_eq!(
            messages(&check_boot_order(&config)),
            ["error: boot order: /chosen/dm: property \"boot-order\": the boot order has a cycle: \
              \"dm\" before \"g\" (its device model), \"g\" before \"dm\" (boot-order 0 < 5)"]
        );
    }

    #[test]
    fn a_missing_module_is_reported_without_building_anything() {
        if !have_dtc() {
            return;
        }
        let dir = TempDir::new("modules");
        std::fs::write(dir.0.join("here.bin"), b"x").unwrap();
        let with_module = |name: &str, module: &str| {
            domain(name, "").replace("\"testguest\"", &format!("\"{module}\""))
        };
        let config = parse(&[
            with_module("a", "here.bin"),
            with_module("b", "nowhere.bin"),
            with_module("c", "blank-disk-0m"),
            with_module("d", "devmodel"),
            with_module("e", "nowhere.bin"),
        ]);
        let found = messages(&check_modules(&config, &dir.0));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("error: module: unknown module `nowhere.bin`"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("error: module: module `blank-disk-0m`: a blank disk"),
            "{found:?}"
        );
    }

    #[test]
    fn a_module_named_like_the_policy_is_reported() {
        if !have_dtc() {
            return;
        }
        let config = parse(&[domain("a", "").replace("\"testguest\"", "\"policy\"")]);
        assert_eq!(
            messages(&check_modules(&config, Path::new("/nonexistent"))),
            [
                "error: module: module `policy`: the name is reserved for the compiled policy; \
              rename the file"
            ]
        );
    }

    #[test]
    fn a_policy_that_does_not_compile_is_one_finding() {
        if !have_dtc() {
            return;
        }
        let broken = format!("{BASE_POLICY}allow domU_t devmodel_t:event bnid;\n");
        let dir = image("broken-policy", &[domain("a", "")], Some(&broken));
        let report = check_image(&dir.0, &Board::RUN);
        assert_eq!(
            messages(&report.findings),
            [format!(
                "error: policy: {}:9:31: unknown permission \"bnid\" for class event",
                dir.0.join(POLICY_SOURCE).display()
            )]
        );
    }

    /// Two guests and a device model, linked as the arguments say.
    fn linked(evtchn: bool, device_model: bool) -> SystemConfig {
        let channel = |me: &str, port: u32, peer: &str| {
            if evtchn {
                format!(
                    "{me}: evtchn@{port} {{ compatible = \"xen,evtchn-v1\"; xen,evtchn = <{port} &{peer}>; }};"
                )
            } else {
                String::new()
            }
        };
        let served = if device_model {
            "tessera,device-model = \"dm\"; vpl011;"
        } else {
            ""
        };
        parse(&[
            domain(
                "dm",
                &format!("{}\n{}", label("devmodel_t"), channel("dm_end", 3, "g_end")),
            ),
            domain("g", &format!("{served}\n{}", channel("g_end", 4, "dm_end"))),
            domain("h", ""),
        ])
    }

    const LINK_RULES: &str = "allow guest_type devmodel_t:event bind;\n\
        allow devmodel_t guest_type:event bind;\n\
        allow devmodel_t guest_type:ioreq { register map complete };\n\
        allow devmodel_t guest_type:mmu { map_read map_write };\n";

    #[test]
    fn every_rule_used_by_a_link_passes() {
        if !have_dtc() {
            return;
        }
        let config = linked(true, true);
        let src = format!("{BASE_POLICY}{LINK_RULES}");
        assert_eq!(policy_messages(&config, &src, true), Vec::<String>::new());
    }

    #[test]
    fn a_link_without_a_rule_is_an_error_or_in_a_permissive_image_a_warning() {
        if !have_dtc() {
            return;
        }
        let mut config = linked(true, true);
        let src = format!("{BASE_POLICY}{LINK_RULES}")
            .replace("allow devmodel_t guest_type:event bind;\n", "");
        let expected =
            "static event channel d1 \"dm\" port 3 <-> d2 \"g\" port 4 is not allowed by \
                        policy: missing allow devmodel_t domU_t:event bind (policy img/policy.te)";
        assert_eq!(
            policy_messages(&config, &src, true),
            [format!("error: policy: {expected}")]
        );
        config.policy_enforcing = false;
        assert_eq!(
            policy_messages(&config, &src, true),
            [format!(
                "warning: policy: {expected}; permissive image: allowed and logged"
            )]
        );
    }

    #[test]
    fn a_rule_no_link_uses_is_an_error_in_an_images_own_policy() {
        if !have_dtc() {
            return;
        }
        // No event channel: the two event rules are unused.
        let config = linked(false, true);
        let src = format!("{BASE_POLICY}{LINK_RULES}");
        let unused = [
            "img/policy.te:9: `allow guest_type devmodel_t:event bind` is used by no link of this \
             image (it grants domU_t -> devmodel_t)",
            "img/policy.te:10: `allow devmodel_t guest_type:event bind` is used by no link of this \
             image (it grants devmodel_t -> domU_t)",
        ];
        assert_eq!(
            policy_messages(&config, &src, true),
            unused.map(|u| format!("error: policy: {u}"))
        );
        // In the shared default policy they are only warnings.
        assert_eq!(
            policy_messages(&config, &src, false),
            unused.map(|u| format!(
                "warning: policy: {u}; the shared default policy serves many images"
            ))
        );
        // Nor device model: the ioreq and mmu rules go unused too.
        let config = linked(false, false);
        let found = policy_messages(&config, &src, true);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(
            found[3].contains("`allow devmodel_t guest_type:mmu { map_read map_write }`"),
            "{found:?}"
        );
    }

    #[test]
    fn self_rules_object_rules_and_absent_types_are_never_unused() {
        if !have_dtc() {
            return;
        }
        let config = linked(false, false);
        let src = format!(
            "{BASE_POLICY}\
             type local_event_t; type_transition domain_type self:event local_event_t;\n\
             allow domain_type local_event_t:event {{ create bind send }};\n\
             allow domain_type self:mmu physmap;\n\
             allow domU_t domU_t:event bind;\n\
             type vtpm_t, domain_type;\n\
             allow guest_type vtpm_t:vtpm command;\n\
             allow ring_t domU_t:grant map_read;\n"
        );
        assert_eq!(policy_messages(&config, &src, true), Vec::<String>::new());
        // An attribute rule is used if any of its pairs is.
        let config = linked(true, false);
        let src = format!("{BASE_POLICY}allow domain_type domain_type:event bind;\n");
        assert_eq!(policy_messages(&config, &src, true), Vec::<String>::new());
    }

    #[test]
    fn service_and_boot_domains_use_their_rules() {
        if !have_dtc() {
            return;
        }
        let config = parse(&[
            domain(
                "domb",
                &format!("{}\nfunctions = \"boot\";", label("domB_t")),
            ),
            domain(
                "store",
                &format!("{}\nfunctions = \"xenstore\";", label("xenstore_t")),
            ),
            domain("pv", "xen,enhanced;"),
            domain("plain", ""),
        ]);
        let src = "user system_u; role system_r;\n\
            attribute domain_type; attribute guest_type;\n\
            type console_t; type domB_t, domain_type; type xenstore_t, domain_type;\n\
            type domU_t, domain_type, guest_type;\n\
            allow domB_t domain_type:domain { create unpause };\n\
            allow domB_t xenstore_t:store introduce;\n\
            allow guest_type xenstore_t:store { read write };\n\
            allow guest_type xenstore_t:event bind;\n\
            allow xenstore_t guest_type:event bind;\n\
            allow xenstore_t guest_type:grant map_read;\n";
        assert_eq!(policy_messages(&config, src, true), Vec::<String>::new());
        let with_vtpm = format!("{src}allow xenstore_t guest_type:vtpm command;\n");
        assert_eq!(
            policy_messages(&config, &with_vtpm, true),
            ["error: policy: img/policy.te:11: `allow xenstore_t guest_type:vtpm command` is used \
              by no link of this image (it grants xenstore_t -> domU_t)"]
        );
    }

    #[test]
    fn a_boot_domain_uses_grant_both_ways_with_the_users_of_a_region_it_lends() {
        if !have_dtc() {
            return;
        }
        let region = |base: &str| {
            format!(
                "shm@{base} {{ compatible = \"xen,domain-shared-memory-v1\"; \
                 xen,shm-id = \"ring\"; xen,shared-mem = <0x{base} 0x1000>; }};"
            )
        };
        let config = parse(&[
            domain(
                "domb",
                &format!("{}\nfunctions = \"boot\";", label("domB_t")),
            ),
            domain("a", &region("20000000")),
            domain("b", &region("30000000")),
        ]);
        let src = "user system_u; role system_r;\n\
            attribute domain_type; attribute guest_type;\n\
            type console_t; type domB_t, domain_type;\n\
            type domU_t, domain_type, guest_type;\n\
            allow domB_t self:mmu { map_read map_write };\n\
            allow domU_t domU_t:grant { map_read map_write };\n\
            allow domB_t guest_type:grant { map_read map_write };\n\
            allow guest_type domB_t:grant { map_read map_write };\n";
        assert_eq!(policy_messages(&config, src, true), Vec::<String>::new());
    }

    #[test]
    fn the_picture_shows_every_domain_and_link() {
        if !have_dtc() {
            return;
        }
        let config = parse(&[
            domain(
                "dm",
                &format!("{}\nfunctions = \"device-model\";", label("devmodel_t")),
            ),
            domain("gx", ""),
        ]);
        let dot = system_dot(&config, &domain_types(&config));
        assert!(dot.starts_with("digraph system {\n"), "{dot}");
        assert!(
            dot.contains("d1 [label=\"dm\\nd1 devmodel_t\\n16 MiB, 1 vCPU\\n[device-model]\"];"),
            "{dot}"
        );
        assert!(
            dot.contains("d2 [label=\"gx\\nd2 domU_t\\n16 MiB, 1 vCPU\"];"),
            "{dot}"
        );
        let linked = linked(true, true);
        let dot = system_dot(&linked, &domain_types(&linked));
        assert!(
            dot.contains("d1 -> d2 [label=\"evtchn 3:4\", dir=both];"),
            "{dot}"
        );
        assert!(
            dot.contains("d1 -> d2 [label=\"device model\\npl011\", penwidth=2];"),
            "{dot}"
        );
        assert_eq!(quoted("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }

    #[test]
    fn the_picture_is_written_and_rendered_when_graphviz_is_there() {
        let dir = TempDir::new("picture");
        let written = write_picture("digraph system {}\n", &dir.0.join("out")).unwrap();
        assert_eq!(written[0], dir.0.join("out").join("system.dot"));
        assert_eq!(
            std::fs::read_to_string(&written[0]).unwrap(),
            "digraph system {}\n"
        );
        assert_eq!(
            written.len(),
            if find_program(DOT).is_some() { 2 } else { 1 }
        );
    }

    /// `tessera,devices` and `tessera,device-model` + `tessera,virtio`
    /// are one thing to `check`: the same links need the same rules, and
    /// the picture labels the device-model edge with the same devices.
    #[test]
    fn tessera_devices_is_checked_like_device_model_and_virtio() {
        if !have_dtc() {
            return;
        }
        // No mmu rule: the device model's link is reported missing one.
        let src = format!("{BASE_POLICY}{LINK_RULES}").replace(
            "allow devmodel_t guest_type:mmu { map_read map_write };\n",
            "",
        );
        // The findings and the picture, with the image's (temporary, so
        // different) directory cut out of the findings.
        let check = |served: &str| {
            let dir = image(
                "devices",
                &[
                    domain("dm", &label("devmodel_t")),
                    domain("g", served),
                    domain("h", ""),
                ],
                Some(&src),
            );
            let report = check_image(&dir.0, &Board::RUN);
            let image_dir = dir.0.display().to_string();
            let findings: Vec<String> = messages(&report.findings)
                .iter()
                .map(|f| f.replace(&image_dir, "<image>"))
                .collect();
            (findings, report.dot)
        };
        let (old_findings, old_dot) =
            check("vpl011; tessera,device-model = \"dm\"; tessera,virtio = \"rng\", \"net\";");
        let (findings, dot) = check("vpl011; tessera,devices = \"dm\", \"rng\", \"net\";");
        assert!(
            findings.iter().any(|f| f.starts_with(
                "error: policy: device model d1 \"dm\" may not serve d2 \"g\": missing allow \
                 devmodel_t domU_t:mmu"
            )),
            "{findings:?}"
        );
        assert_eq!(old_findings, findings);
        assert_eq!(old_dot, dot);
        let dot = dot.unwrap();
        assert!(dot.contains("device model\\npl011 rng net"), "{dot}");
        // Only the server: a PL011, no virtio device.
        let config = parse(&[
            domain("dm", ""),
            domain("g", "vpl011; tessera,devices = \"dm\";"),
        ]);
        assert_eq!(
            links(&config),
            [Link::DeviceModel {
                server: 0,
                guest: 1
            }]
        );
        assert!(unserved_vpl011(&config).is_empty());
    }

    #[test]
    fn a_description_mixing_the_two_spellings_is_refused_by_check() {
        if !have_dtc() {
            return;
        }
        let dir = image(
            "mixed",
            &[
                domain("dm", ""),
                domain(
                    "g",
                    "tessera,devices = \"dm\", \"rng\"; tessera,virtio = \"rng\";",
                ),
            ],
            None,
        );
        let report = check_image(&dir.0, &Board::RUN);
        assert_eq!(report.errors(), 1);
        assert!(
            messages(&report.findings)[0].ends_with(
                "/chosen/g: property \"tessera,devices\": the node also has tessera,virtio: \
                 tessera,devices says the same as tessera,device-model and tessera,virtio \
                 together; give one spelling"
            ),
            "{:?}",
            messages(&report.findings)
        );
        assert!(report.dot.is_none());
    }

    #[test]
    fn an_image_with_its_own_policy_is_checked_end_to_end() {
        if !have_dtc() {
            return;
        }
        let src = format!("{BASE_POLICY}{LINK_RULES}");
        let dir = image(
            "end-to-end",
            &[
                domain("dm", &label("devmodel_t")),
                domain(
                    "g",
                    "tessera,device-model = \"dm\"; vpl011; tessera,pcpus = <1>;",
                ),
                domain("h", "tessera,pcpus = <1>;"),
            ],
            Some(&src),
        );
        let report = check_image(&dir.0, &Board::RUN);
        let policy = dir.0.join(POLICY_SOURCE);
        assert_eq!(
            messages(&report.findings),
            [
                format!(
                    "error: policy: {}:9: `allow guest_type devmodel_t:event bind` is used by no \
                     link of this image (it grants domU_t -> devmodel_t)",
                    policy.display()
                ),
                format!(
                    "error: policy: {}:10: `allow devmodel_t guest_type:event bind` is used by no \
                     link of this image (it grants devmodel_t -> domU_t)",
                    policy.display()
                ),
                "error: pcpus: d2 \"g\" and d3 \"h\" are both pinned to pCPU 1".to_string(),
            ]
        );
        assert_eq!(report.errors(), 3);
        assert_eq!(report.warnings(), 0);
    }
}
