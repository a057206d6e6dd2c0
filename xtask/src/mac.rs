//! The build-time MAC check: before an image is packed, every security label
//! its system description gives a domain must be a context the image's
//! policy defines, and every static link between two domains must be one the
//! policy allows (docs/04-policy.md, "Building an image").
//!
//! The one idea: the check asks the compiled policy the same questions the
//! kernel's access vector cache asks when it sets the links up at boot, so an
//! image that builds never loses a link to a policy denial. A missing
//! permission is reported as the `allow` rule that would grant it.

use std::fmt;
use tessera_policy::{split_context, EventPerm, GrantPerm, IoreqPerm, MmuPerm, Perm, Policy};
use tessera_sysdesc::config::{
    DomainConfig, EvtchnEnd, Function, SharedMem, StaticEvtchn, SystemConfig,
};

/// The context the kernel checks console access against; it refuses to
/// boot a policy without it (`kernel/src/hv/mac.rs`).
pub const CONSOLE_CONTEXT: &str = "system_u:system_r:console_t";

/// One domain as a message names it: `d<id> "<name>"`, with the id the
/// description gives it (`domid`, else device-tree order from 1, which is
/// how the kernel numbers domains).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRef {
    /// Position in `SystemConfig::domains`.
    pub index: usize,
    /// `DomainConfig::domid`.
    pub domid: u16,
    /// The domain's node name.
    pub name: String,
}

impl DomainRef {
    pub fn new(index: usize, domain: &DomainConfig) -> DomainRef {
        DomainRef {
            index,
            domid: domain.domid,
            name: domain.name.as_str().into(),
        }
    }
}

impl fmt::Display for DomainRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{} \"{}\"", self.domid, self.name)
    }
}

/// An `allow` rule the policy lacks, written as policy source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingRule {
    /// The source type.
    pub source: String,
    /// The target type.
    pub target: String,
    /// The permissions it would have to grant, all of one class, never
    /// empty.
    pub perms: Vec<Perm>,
}

impl fmt::Display for MissingRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = self.perms.first().map_or("?", |p| p.class().name());
        write!(f, "allow {} {}:{class} ", self.source, self.target)?;
        match self.perms.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                f.write_str("{")?;
                for perm in many {
                    write!(f, " {perm}")?;
                }
                f.write_str(" }")
            }
        }
    }
}

/// Rules as one message: `allow …; allow …`.
struct Rules<'r>(&'r [MissingRule]);

impl fmt::Display for Rules<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rule) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{rule}")?;
        }
        Ok(())
    }
}

/// Why a label is not a context of the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelProblem {
    /// Not three non-empty names separated by `:`.
    Malformed,
    /// The policy declares no such user.
    UnknownUser(String),
    /// The policy declares no such role.
    UnknownRole(String),
    /// The policy declares no such type.
    UnknownType(String),
}

impl fmt::Display for LabelProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelProblem::Malformed => f.write_str("it is not of the form user:role:type"),
            LabelProblem::UnknownUser(name) => write!(f, "the policy declares no user \"{name}\""),
            LabelProblem::UnknownRole(name) => write!(f, "the policy declares no role \"{name}\""),
            LabelProblem::UnknownType(name) => write!(f, "the policy declares no type \"{name}\""),
        }
    }
}

/// Something in the system description the policy does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The policy lacks a context the kernel itself needs.
    KernelContext(&'static str),
    /// A domain's `xen,security-label` is not a context of the policy.
    UnknownLabel {
        /// The domain.
        domain: DomainRef,
        /// Its label as written.
        label: String,
        /// What the policy lacks.
        problem: LabelProblem,
    },
    /// A static event channel whose ends may not bind to each other.
    EventChannel {
        /// One end: its domain and local port.
        a: (DomainRef, u32),
        /// The other end.
        b: (DomainRef, u32),
        /// The rules that would allow it.
        missing: Vec<MissingRule>,
    },
    /// A static shared-memory region two of whose users may not map each
    /// other's memory.
    SharedMemory {
        /// `xen,shm-id`.
        id: String,
        /// The pair of users, in device-tree order.
        users: (DomainRef, DomainRef),
        /// The rules that would allow it.
        missing: Vec<MissingRule>,
    },
    /// In a hyperlaunch image: a region the boot domain may not lend, from
    /// its own RAM, to one of its users (the kernel checks `ShareMemory`
    /// with the boot domain as the owner).
    LentMemory {
        /// `xen,shm-id`.
        id: String,
        /// The boot domain.
        boot: DomainRef,
        /// The user.
        user: DomainRef,
        /// The rules that would allow it.
        missing: Vec<MissingRule>,
    },
    /// A device model that may not serve the domain naming it.
    DeviceModel {
        /// The served domain.
        guest: DomainRef,
        /// Its `tessera,device-model`.
        server: DomainRef,
        /// The rules that would allow it.
        missing: Vec<MissingRule>,
    },
}

impl Violation {
    /// Whether this is a link the kernel checks (and, in a permissive image,
    /// logs and sets up anyway), as opposed to a label it cannot resolve.
    pub fn is_link(&self) -> bool {
        matches!(
            self,
            Violation::EventChannel { .. }
                | Violation::SharedMemory { .. }
                | Violation::LentMemory { .. }
                | Violation::DeviceModel { .. }
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::KernelContext(context) => write!(
                f,
                "the policy has no context {context}, which the kernel needs to boot"
            ),
            Violation::UnknownLabel {
                domain,
                label,
                problem,
            } => write!(
                f,
                "domain {domain}: security label \"{label}\" is not a context of the policy: {problem}"
            ),
            Violation::EventChannel { a, b, missing } => write!(
                f,
                "static event channel {} port {} <-> {} port {} is not allowed by policy: missing {}",
                a.0,
                a.1,
                b.0,
                b.1,
                Rules(missing)
            ),
            Violation::SharedMemory { id, users, missing } => write!(
                f,
                "static shared memory \"{id}\" between {} and {} is not allowed by policy: missing {}",
                users.0,
                users.1,
                Rules(missing)
            ),
            Violation::LentMemory {
                id,
                boot,
                user,
                missing,
            } => write!(
                f,
                "static shared memory \"{id}\", which the boot domain {boot} lends to {user}, \
                 is not allowed by policy: missing {}",
                Rules(missing)
            ),
            Violation::DeviceModel {
                guest,
                server,
                missing,
            } => write!(
                f,
                "device model {server} may not serve {guest}: missing {}",
                Rules(missing)
            ),
        }
    }
}

/// Why `label` is not a context of `policy`, if it is not.
fn label_problem(policy: &Policy<'_>, label: &str) -> Option<LabelProblem> {
    let Some((user, role, ty)) = split_context(label) else {
        return Some(LabelProblem::Malformed);
    };
    if policy.user_index(user).is_none() {
        Some(LabelProblem::UnknownUser(user.into()))
    } else if policy.role_index(role).is_none() {
        Some(LabelProblem::UnknownRole(role.into()))
    } else if policy.type_index(ty).is_none() {
        Some(LabelProblem::UnknownType(ty.into()))
    } else {
        None
    }
}

/// The permissions each end of a static event channel needs on the other:
/// the kernel binds both ends at boot, each on behalf of its own domain.
pub fn event_channel_perms() -> [Perm; 1] {
    [EventPerm::Bind.into()]
}

/// The permissions each user of a static shared-memory region needs on
/// every other user: the kernel maps the region into each user read-write.
pub fn shared_memory_perms() -> [Perm; 2] {
    [GrantPerm::MapRead.into(), GrantPerm::MapWrite.into()]
}

/// What a boot domain needs on itself to lend its own memory.
pub fn lender_perms() -> [Perm; 2] {
    [MmuPerm::MapRead.into(), MmuPerm::MapWrite.into()]
}

/// A domain whose label the policy knows: its type, by number and name.
#[derive(Clone, Copy)]
struct Typed<'p> {
    number: u16,
    name: &'p str,
}

/// The permissions among `perms` that `source` lacks on `target`, as the
/// rule that would grant them; `None` if the policy allows them all.
/// `perms` are all of one class.
fn missing(
    policy: &Policy<'_>,
    source: Typed<'_>,
    target: Typed<'_>,
    perms: &[Perm],
) -> Option<MissingRule> {
    let class = perms.first()?.class();
    let allowed = policy.allowed(source.number, target.number, class);
    let lacking: Vec<Perm> = perms
        .iter()
        .copied()
        .filter(|p| allowed & p.mask() == 0)
        .collect();
    (!lacking.is_empty()).then(|| MissingRule {
        source: source.name.into(),
        target: target.name.into(),
        perms: lacking,
    })
}

/// What both directions between `x` and `y` lack, each rule once (two
/// domains of one type need a single rule).
fn missing_both_ways(
    policy: &Policy<'_>,
    x: Typed<'_>,
    y: Typed<'_>,
    perms: &[Perm],
) -> Vec<MissingRule> {
    let mut rules: Vec<MissingRule> = Vec::new();
    for rule in [missing(policy, x, y, perms), missing(policy, y, x, perms)]
        .into_iter()
        .flatten()
    {
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    rules
}

/// What a device model needs on each domain it serves: registering ranges,
/// mapping its RAM for DMA, and answering its requests.
pub fn device_model_perms() -> ([Perm; 3], [Perm; 2]) {
    (
        [
            IoreqPerm::Register.into(),
            IoreqPerm::Map.into(),
            IoreqPerm::Complete.into(),
        ],
        [MmuPerm::MapRead.into(), MmuPerm::MapWrite.into()],
    )
}

/// Checks `config` against `policy` and returns everything it does not
/// allow, in description order: labels, then event channels, then shared
/// memory. Empty means the image may be packed.
pub fn check_system(config: &SystemConfig, policy: &Policy<'_>) -> Vec<Violation> {
    let mut violations = Vec::new();
    if policy.sid_of(CONSOLE_CONTEXT).is_none() {
        violations.push(Violation::KernelContext(CONSOLE_CONTEXT));
    }
    // Per domain, its type if its label is known; an unknown label is
    // reported once here, and links touching that domain are not checked.
    let mut types: Vec<Option<Typed<'_>>> = Vec::new();
    for (index, domain) in config.domains.iter().enumerate() {
        let label = domain.security_label.as_str();
        match label_problem(policy, label) {
            Some(problem) => {
                violations.push(Violation::UnknownLabel {
                    domain: DomainRef::new(index, domain),
                    label: label.into(),
                    problem,
                });
                types.push(None);
            }
            None => types.push(split_context(label).and_then(|(_, _, name)| {
                // Look the name up in the policy so it borrows from there.
                let number = policy.type_index(name)?;
                Some(Typed {
                    number,
                    name: policy.type_name(number)?,
                })
            })),
        }
    }
    let typed = |domain: usize| types.get(domain).copied().flatten();
    let domain_ref = |domain: usize| {
        config
            .domains
            .get(domain)
            .map(|d| DomainRef::new(domain, d))
    };

    for &StaticEvtchn { a, b } in &config.evtchns {
        let (Some(ta), Some(tb)) = (typed(a.domain), typed(b.domain)) else {
            continue;
        };
        let missing = missing_both_ways(policy, ta, tb, &event_channel_perms());
        let end = |e: EvtchnEnd| domain_ref(e.domain).map(|d| (d, e.port));
        if let (false, Some(a), Some(b)) = (missing.is_empty(), end(a), end(b)) {
            violations.push(Violation::EventChannel { a, b, missing });
        }
    }

    for SharedMem { id, users, .. } in &config.shm {
        for (i, x) in users.iter().enumerate() {
            for y in users.iter().skip(i + 1).filter(|y| y.domain != x.domain) {
                let (Some(tx), Some(ty)) = (typed(x.domain), typed(y.domain)) else {
                    continue;
                };
                let missing = missing_both_ways(policy, tx, ty, &shared_memory_perms());
                if let (false, Some(dx), Some(dy)) = (
                    missing.is_empty(),
                    domain_ref(x.domain),
                    domain_ref(y.domain),
                ) {
                    violations.push(Violation::SharedMemory {
                        id: id.as_str().into(),
                        users: (dx, dy),
                        missing,
                    });
                }
            }
        }
    }

    // A hyperlaunch image's regions live in the boot domain's RAM: it
    // maps its own memory into each user, which needs both ways between
    // them what users need between each other.
    let boot = config
        .domains
        .iter()
        .position(|d| d.functions.contains(Function::Boot));
    if let Some((b, tb)) = boot.and_then(|b| Some((b, typed(b)?))) {
        for SharedMem { id, users, .. } in &config.shm {
            for user in users.iter().filter(|u| u.domain != b) {
                let Some(tu) = typed(user.domain) else {
                    continue;
                };
                let mut missing: Vec<MissingRule> = missing(policy, tb, tb, &lender_perms())
                    .into_iter()
                    .collect();
                missing.extend(missing_both_ways(policy, tb, tu, &shared_memory_perms()));
                if let (false, Some(boot), Some(user)) =
                    (missing.is_empty(), domain_ref(b), domain_ref(user.domain))
                {
                    violations.push(Violation::LentMemory {
                        id: id.as_str().into(),
                        boot,
                        user,
                        missing,
                    });
                }
            }
        }
    }

    for (guest, domain) in config.domains.iter().enumerate() {
        let Some(server) = domain.device_model else {
            continue;
        };
        let (Some(tg), Some(ts)) = (typed(guest), typed(server)) else {
            continue;
        };
        let (ioreq, mmu) = device_model_perms();
        let missing: Vec<MissingRule> = [
            missing(policy, ts, tg, &ioreq),
            missing(policy, ts, tg, &mmu),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let (false, Some(g), Some(s)) =
            (missing.is_empty(), domain_ref(guest), domain_ref(server))
        {
            violations.push(Violation::DeviceModel {
                guest: g,
                server: s,
                missing,
            });
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_policy::compile::compile;
    use tessera_sysdesc::config::{parse_system, DEFAULT_SECURITY_LABEL};
    use tessera_sysdesc::fdt_writer::FdtWriter;

    const POLICY: &str = "
        user system_u; role system_r;
        attribute guest; attribute service;
        type domU_t, guest;
        type devmodel_t, service;
        type xenstore_t, service;
        type console_t;
        allow guest service:event { bind send };
        allow service guest:event bind;
        allow devmodel_t guest:grant { map_read map_write };
        allow guest devmodel_t:grant map_read;
    ";

    fn policy_binary(src: &str) -> Vec<u8> {
        compile(src).map_err(|e| e.to_string()).unwrap()
    }

    fn ctx(ty: &str) -> String {
        format!("system_u:system_r:{ty}")
    }

    /// A static event channel in a test system: (domain, port) at each end.
    type Channel = ((usize, u32), (usize, u32));
    /// A static shared-memory region in a test system: its id and users.
    type Region<'a> = (&'a str, &'a [usize]);

    /// A system description with one domain per `(name, label)` and the
    /// given links, built as a blob in Xen's dom0less bindings and read by
    /// the parser the kernel runs (`tessera_sysdesc`), so the config is exactly what the build
    /// checks. An empty label leaves the property out.
    fn system_with(
        domains: &[(&str, &str)],
        channels: &[Channel],
        regions: &[Region<'_>],
    ) -> SystemConfig {
        system_built_by(None, domains, channels, regions)
    }

    /// As `system_with`, with domain `boot` (if any) the boot domain.
    fn system_built_by(
        boot: Option<usize>,
        domains: &[(&str, &str)],
        channels: &[Channel],
        regions: &[Region<'_>],
    ) -> SystemConfig {
        let mut buf = vec![0u8; 64 * 1024];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.begin_node("chosen").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        for (index, (name, label)) in domains.iter().enumerate() {
            w.begin_node(name).unwrap();
            w.property_strings("compatible", &["xen,domain"]).unwrap();
            w.property_u32("#address-cells", 1).unwrap();
            w.property_u32("#size-cells", 1).unwrap();
            w.property_cells("memory", &[0, 0x4000]).unwrap();
            w.property_u32("cpus", 1).unwrap();
            if !label.is_empty() {
                w.property_string("xen,security-label", label).unwrap();
            }
            if boot == Some(index) {
                w.property_string("functions", "boot").unwrap();
            }
            w.begin_node("module@0").unwrap();
            w.property_strings("compatible", &["multiboot,kernel", "multiboot,module"])
                .unwrap();
            w.property_string("tessera,module", "testguest").unwrap();
            w.end_node().unwrap();
            // Channel k's ends have phandles 2k+1 (a) and 2k+2 (b).
            for (k, ((da, pa), (db, pb))) in channels.iter().enumerate() {
                let k = k as u32;
                for (domain, port, me, peer) in [
                    (*da, *pa, 2 * k + 1, 2 * k + 2),
                    (*db, *pb, 2 * k + 2, 2 * k + 1),
                ] {
                    if domain == index {
                        w.begin_node(&format!("evtchn@{port}")).unwrap();
                        w.property_strings("compatible", &["xen,evtchn-v1"])
                            .unwrap();
                        w.property_u32("phandle", me).unwrap();
                        w.property_cells("xen,evtchn", &[port, peer]).unwrap();
                        w.end_node().unwrap();
                    }
                }
            }
            for (r, (id, users)) in regions.iter().enumerate() {
                if let Some(position) = users.iter().position(|&u| u == index) {
                    let guest_base = 0x2000_0000 + r as u32 * 0x10_0000;
                    w.begin_node(&format!("shm@{guest_base:x}")).unwrap();
                    w.property_strings("compatible", &["xen,domain-shared-memory-v1"])
                        .unwrap();
                    w.property_string("xen,shm-id", id).unwrap();
                    w.property_string("role", if position == 0 { "owner" } else { "borrower" })
                        .unwrap();
                    w.property_cells("xen,shared-mem", &[guest_base, 0x1_0000])
                        .unwrap();
                    w.end_node().unwrap();
                }
            }
            w.end_node().unwrap();
        }
        w.end_node().unwrap();
        w.end_node().unwrap();
        let len = w.finish().unwrap();
        parse_system(&buf[..len]).unwrap()
    }

    fn system(domains: &[(&str, &str)]) -> SystemConfig {
        system_with(domains, &[], &[])
    }

    fn messages(config: &SystemConfig, src: &str) -> Vec<String> {
        let binary = policy_binary(src);
        let policy = Policy::load(&binary).unwrap();
        check_system(config, &policy)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_parsers_default_label_is_the_policys() {
        // tessera-sysdesc keeps its own copy so that it needs no policy code.
        assert_eq!(DEFAULT_SECURITY_LABEL, tessera_policy::DEFAULT_DOMAIN_LABEL);
    }

    #[test]
    fn known_labels_and_the_default_label_pass() {
        let config = system(&[
            ("guest", ""),
            ("guest2", DEFAULT_SECURITY_LABEL),
            ("dm", &ctx("devmodel_t")),
            ("store", &ctx("xenstore_t")),
        ]);
        assert_eq!(messages(&config, POLICY), Vec::<String>::new());
    }

    #[test]
    fn an_unknown_label_names_the_domain_the_label_and_the_missing_name() {
        let config = system(&[
            ("ping", &ctx("domU_t")),
            ("pong", &ctx("pong_t")),
            ("x", "staff_u:system_r:domU_t"),
            ("y", "system_u:staff_r:domU_t"),
        ]);
        assert_eq!(
            messages(&config, POLICY),
            [
                "domain d2 \"pong\": security label \"system_u:system_r:pong_t\" is not a \
                 context of the policy: the policy declares no type \"pong_t\"",
                "domain d3 \"x\": security label \"staff_u:system_r:domU_t\" is not a \
                 context of the policy: the policy declares no user \"staff_u\"",
                "domain d4 \"y\": security label \"system_u:staff_r:domU_t\" is not a \
                 context of the policy: the policy declares no role \"staff_r\"",
            ]
        );
    }

    #[test]
    fn a_policy_without_the_console_context_cannot_boot() {
        let config = system(&[("guest", "")]);
        assert_eq!(
            messages(&config, &POLICY.replace("type console_t;", "")),
            ["the policy has no context system_u:system_r:console_t, which the kernel needs to boot"]
        );
    }

    #[test]
    fn an_attribute_is_not_a_label() {
        let config = system(&[("g", &ctx("guest"))]);
        assert_eq!(
            messages(&config, POLICY),
            [
                "domain d1 \"g\": security label \"system_u:system_r:guest\" is not a context \
              of the policy: the policy declares no type \"guest\""
            ]
        );
    }

    #[test]
    fn a_malformed_label_is_reported_not_a_panic() {
        // The system-description parser refuses these first; the check still copes.
        let binary = policy_binary(POLICY);
        let policy = Policy::load(&binary).unwrap();
        for label in ["domU_t", "a:b", "a::c", "a:b:c:d", ""] {
            assert_eq!(
                label_problem(&policy, label),
                Some(LabelProblem::Malformed),
                "{label:?}"
            );
        }
        assert_eq!(label_problem(&policy, &ctx("domU_t")), None);
        assert_eq!(
            LabelProblem::Malformed.to_string(),
            "it is not of the form user:role:type"
        );
    }

    #[test]
    fn the_links_in_a_test_system_are_what_the_parser_read() {
        let config = system_with(
            &[("a", ""), ("b", ""), ("c", "")],
            &[((0, 10), (1, 11))],
            &[("ring", &[0, 2])],
        );
        assert_eq!(config.evtchns.len(), 1);
        assert_eq!(
            (config.evtchns[0].a.domain, config.evtchns[0].a.port),
            (0, 10)
        );
        assert_eq!(
            (config.evtchns[0].b.domain, config.evtchns[0].b.port),
            (1, 11)
        );
        assert_eq!(config.shm.len(), 1);
        let users: Vec<usize> = config.shm[0].users.iter().map(|u| u.domain).collect();
        assert_eq!(users, [0, 2]);
    }

    #[test]
    fn a_channel_allowed_both_ways_passes() {
        let config = system_with(
            &[("ping", &ctx("domU_t")), ("pong", &ctx("devmodel_t"))],
            &[((0, 10), (1, 11))],
            &[],
        );
        assert_eq!(messages(&config, POLICY), Vec::<String>::new());
    }

    #[test]
    fn a_channel_missing_one_direction_names_both_ends_and_the_rule() {
        let config = system_with(
            &[("ping", &ctx("domU_t")), ("pong", &ctx("devmodel_t"))],
            &[((0, 10), (1, 11))],
            &[],
        );
        let policy = POLICY.replace("allow guest service:event { bind send };", "");
        assert_eq!(
            messages(&config, &policy),
            [
                "static event channel d1 \"ping\" port 10 <-> d2 \"pong\" port 11 is not allowed \
              by policy: missing allow domU_t devmodel_t:event bind"
            ]
        );
        // `send` alone is not enough: the kernel binds, so `bind` is what counts.
        let policy = POLICY.replace(
            "allow service guest:event bind;",
            "allow service guest:event send;",
        );
        assert_eq!(
            messages(&config, &policy),
            [
                "static event channel d1 \"ping\" port 10 <-> d2 \"pong\" port 11 is not allowed \
              by policy: missing allow devmodel_t domU_t:event bind"
            ]
        );
    }

    #[test]
    fn a_channel_missing_both_directions_lists_each_rule_once() {
        let config = system_with(
            &[
                ("g1", &ctx("domU_t")),
                ("g2", &ctx("domU_t")),
                ("s", &ctx("xenstore_t")),
                ("d", &ctx("devmodel_t")),
            ],
            &[((0, 1), (1, 2)), ((2, 3), (3, 4))],
            &[],
        );
        assert_eq!(
            messages(&config, POLICY),
            [
                "static event channel d1 \"g1\" port 1 <-> d2 \"g2\" port 2 is not allowed by \
                 policy: missing allow domU_t domU_t:event bind",
                "static event channel d3 \"s\" port 3 <-> d4 \"d\" port 4 is not allowed by \
                 policy: missing allow xenstore_t devmodel_t:event bind; allow devmodel_t \
                 xenstore_t:event bind",
            ]
        );
    }

    #[test]
    fn a_boot_domain_needs_the_right_to_lend_each_region_to_each_user() {
        let domains = [
            ("domb", ctx("domB_t")),
            ("guest", ctx("domU_t")),
            ("dm", ctx("devmodel_t")),
        ];
        let domains: Vec<(&str, &str)> = domains.iter().map(|(n, l)| (*n, l.as_str())).collect();
        let config = system_built_by(Some(0), &domains, &[], &[("ring", &[1, 2])]);
        let policy = format!("{POLICY} type domB_t;");
        assert_eq!(
            messages(&config, &policy),
            [
                "static shared memory \"ring\" between d2 \"guest\" and d3 \"dm\" is not \
                 allowed by policy: missing allow domU_t devmodel_t:grant map_write",
                "static shared memory \"ring\", which the boot domain d1 \"domb\" lends to \
                 d2 \"guest\", is not allowed by policy: missing allow domB_t domB_t:mmu { \
                 map_read map_write }; allow domB_t domU_t:grant { map_read map_write }; allow \
                 domU_t domB_t:grant { map_read map_write }",
                "static shared memory \"ring\", which the boot domain d1 \"domb\" lends to \
                 d3 \"dm\", is not allowed by policy: missing allow domB_t domB_t:mmu { \
                 map_read map_write }; allow domB_t devmodel_t:grant { map_read map_write }; \
                 allow devmodel_t domB_t:grant { map_read map_write }",
            ]
        );
        let lending = format!(
            "{policy}
            allow guest devmodel_t:grant map_write;
            allow domB_t self:mmu {{ map_read map_write }};
            allow domB_t {{ guest service }}:grant {{ map_read map_write }};"
        );
        // The policy language has no target sets: one rule each.
        let lending = lending.replace(
            "allow domB_t { guest service }:grant { map_read map_write };",
            "allow domB_t guest:grant { map_read map_write };
            allow domB_t service:grant { map_read map_write };
            allow guest domB_t:grant { map_read map_write };
            allow service domB_t:grant { map_read map_write };",
        );
        assert_eq!(messages(&config, &lending), Vec::<String>::new());
        // Without a boot domain the kernel places the region: no lending.
        let dom0less = system_with(&domains, &[], &[("ring", &[1, 2])]);
        assert_eq!(
            messages(
                &dom0less,
                &format!("{policy} allow guest devmodel_t:grant map_write;")
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn shared_memory_needs_map_read_and_map_write_between_every_pair_of_users() {
        let config = system_with(
            &[
                ("guest", &ctx("domU_t")),
                ("dm", &ctx("devmodel_t")),
                ("store", &ctx("xenstore_t")),
            ],
            &[],
            &[("ring", &[0, 1, 2])],
        );
        assert_eq!(
            messages(&config, POLICY),
            [
                "static shared memory \"ring\" between d1 \"guest\" and d2 \"dm\" is not allowed \
                 by policy: missing allow domU_t devmodel_t:grant map_write",
                "static shared memory \"ring\" between d1 \"guest\" and d3 \"store\" is not \
                 allowed by policy: missing allow domU_t xenstore_t:grant { map_read map_write }; \
                 allow xenstore_t domU_t:grant { map_read map_write }",
                "static shared memory \"ring\" between d2 \"dm\" and d3 \"store\" is not allowed \
                 by policy: missing allow devmodel_t xenstore_t:grant { map_read map_write }; \
                 allow xenstore_t devmodel_t:grant { map_read map_write }",
            ]
        );
        let two_users = system_with(
            &[("guest", &ctx("domU_t")), ("dm", &ctx("devmodel_t"))],
            &[],
            &[("ring", &[0, 1])],
        );
        let granted = format!("{POLICY} allow guest devmodel_t:grant map_write;");
        assert_eq!(messages(&two_users, &granted), Vec::<String>::new());
    }

    #[test]
    fn links_of_a_domain_with_an_unknown_label_are_not_reported_again() {
        let config = system_with(
            &[("ping", &ctx("domU_t")), ("pong", &ctx("pong_t"))],
            &[((0, 10), (1, 11))],
            &[("ring", &[0, 1])],
        );
        assert_eq!(
            messages(&config, POLICY),
            [
                "domain d2 \"pong\": security label \"system_u:system_r:pong_t\" is not a context \
              of the policy: the policy declares no type \"pong_t\""
            ]
        );
        let binary = policy_binary(POLICY);
        let policy = Policy::load(&binary).unwrap();
        assert!(check_system(&config, &policy).iter().all(|v| !v.is_link()));
    }

    #[test]
    fn missing_rules_read_as_policy_source_that_grants_them() {
        let read_write = MissingRule {
            source: "a_t".into(),
            target: "b_t".into(),
            perms: shared_memory_perms().to_vec(),
        };
        assert_eq!(
            read_write.to_string(),
            "allow a_t b_t:grant { map_read map_write }"
        );
        let bind = MissingRule {
            perms: event_channel_perms().to_vec(),
            ..read_write.clone()
        };
        assert_eq!(bind.to_string(), "allow a_t b_t:event bind");

        let src = format!("user u; role r; type a_t; type b_t; {read_write}; {bind};");
        let binary = policy_binary(&src);
        let policy = Policy::load(&binary).unwrap();
        let typed = |name: &'static str| Typed {
            number: policy.type_index(name).unwrap(),
            name,
        };
        let (a, b) = (typed("a_t"), typed("b_t"));
        assert_eq!(missing(&policy, a, b, &shared_memory_perms()), None);
        assert_eq!(missing(&policy, a, b, &event_channel_perms()), None);
        assert_eq!(
            missing(&policy, b, a, &shared_memory_perms()).map(|m| m.to_string()),
            Some("allow b_t a_t:grant { map_read map_write }".into())
        );
    }

    #[test]
    fn a_device_model_needs_ioreq_and_mmu_rights_on_what_it_serves() {
        let mut config = system(&[("dm", &ctx("devmodel_t")), ("guest", &ctx("domU_t"))]);
        config.domains[1].device_model = Some(0);
        let none = messages(&config, POLICY);
        assert_eq!(
            none,
            [
                "device model d1 \"dm\" may not serve d2 \"guest\": missing allow devmodel_t \
              domU_t:ioreq { register map complete }; allow devmodel_t domU_t:mmu { map_read \
              map_write }"
            ]
        );
        let granted = format!(
            "{POLICY} allow devmodel_t guest:ioreq {{ register map complete }}; \
             allow devmodel_t guest:mmu {{ map_read map_write }};"
        );
        assert!(messages(&config, &granted).is_empty());
    }
}
