//! The build-time MAC check: before an image is packed, every security label
//! its system description gives a domain must be a context the image's
//! policy defines, and every static link between two domains must be one the
//! policy allows.
//!
//! The one idea: the check asks the compiled policy the same questions the
//! kernel's access vector cache asks when it sets the links up at boot, so an
//! image that builds never fails its own boot on a policy denial. A missing
//! permission is reported as the `allow` rule that would grant it.

use std::fmt;
use tessera_kernel::config::{DomainConfig, SystemConfig};
use tessera_policy::{split_context, Policy};

/// One domain as a message names it: `d<id> "<name>"`. Domain ids count
/// from 1 in device-tree order, as the kernel numbers them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRef {
    /// Position in `SystemConfig::domains`.
    pub index: usize,
    /// The domain's node name.
    pub name: String,
}

impl DomainRef {
    fn new(index: usize, domain: &DomainConfig) -> DomainRef {
        DomainRef {
            index,
            name: domain.name.as_str().into(),
        }
    }
}

impl fmt::Display for DomainRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{} \"{}\"", self.index + 1, self.name)
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
    /// A domain's `xen,security-label` is not a context of the policy.
    UnknownLabel {
        /// The domain.
        domain: DomainRef,
        /// Its label as written.
        label: String,
        /// What the policy lacks.
        problem: LabelProblem,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::UnknownLabel {
                domain,
                label,
                problem,
            } => write!(
                f,
                "domain {domain}: security label \"{label}\" is not a context of the policy: {problem}"
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

/// Checks `config` against `policy` and returns everything it does not
/// allow, in description order; empty means the image may be packed.
pub fn check_system(config: &SystemConfig, policy: &Policy<'_>) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (index, domain) in config.domains.iter().enumerate() {
        let label = domain.security_label.as_str();
        if let Some(problem) = label_problem(policy, label) {
            violations.push(Violation::UnknownLabel {
                domain: DomainRef::new(index, domain),
                label: label.into(),
                problem,
            });
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_kernel::config::{parse_system, DEFAULT_SECURITY_LABEL};
    use tessera_kernel::fdt_writer::FdtWriter;
    use tessera_policy::compile::compile;

    const POLICY: &str = "
        user system_u; role system_r;
        attribute guest; attribute service;
        type domU_t, guest;
        type devmodel_t, service;
        type xenstore_t, service;
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

    /// A system description with one domain per `(name, label)`, built as
    /// a blob and read by the kernel's own parser, so the config is exactly
    /// what the build checks. An empty label leaves the property out.
    fn system(domains: &[(&str, &str)]) -> SystemConfig {
        let mut buf = vec![0u8; 16 * 1024];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.begin_node("chosen").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        for (name, label) in domains {
            w.begin_node(name).unwrap();
            w.property_strings("compatible", &["xen,domain"]).unwrap();
            w.property_cells("memory", &[0, 0x4000]).unwrap();
            w.property_u32("cpus", 1).unwrap();
            if !label.is_empty() {
                w.property_string("xen,security-label", label).unwrap();
            }
            w.begin_node("module@0").unwrap();
            w.property_strings("compatible", &["multiboot,kernel", "multiboot,module"])
                .unwrap();
            w.property_string("tessera,module", "testguest").unwrap();
            w.end_node().unwrap();
            w.end_node().unwrap();
        }
        w.end_node().unwrap();
        w.end_node().unwrap();
        let len = w.finish().unwrap();
        parse_system(&buf[..len]).unwrap()
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
        // The kernel's parser refuses these first; the check still copes.
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
}
