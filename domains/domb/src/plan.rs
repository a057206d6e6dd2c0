//! The build plan: the ordered control steps domB issues to build every
//! domain of the system description, and to rebuild one after a crash.
//!
//! The one idea: ordering is decided here, once, from small input structs,
//! so the shell only translates each [`Step`] into a hypercall. The input
//! is already in boot order (the system-description parser sorts it); the
//! plan checks that order is one it can honour and refuses it otherwise,
//! before a single step is issued.
//!
//! Each domain, in boot order, gets (DESIGN.md, "Boot flow"):
//! 1. `Create` with its security label;
//! 2. `AssignMemory`, then `CopyModule` for each payload in the order given;
//! 3. `SetGuestDtb`;
//! 4. `MapRegion` for each shared-memory region the builder holds for it
//!    (in order; these need no other domain), then `BindEvtchn` /
//!    `ShareMemory` for each link whose other end already exists, so every
//!    link is made exactly once, after both of its ends are created and
//!    before the later one (the client) runs;
//! 5. `IntroduceToStore` if it uses the store and the store is running;
//! 6. `Measure`;
//! 7. `Unpause`.
//!
//! At boot steps 1-6 (the *build*) come first for every domain, in boot
//! order, and only then step 7 (the *start*) for every domain, in boot
//! order: when a service starts, every domain it serves exists already, so
//! a device model can register for all of its domains at once (the kernel
//! holds each served domain until its device model says it is ready). A
//! rebuild after a crash builds and starts the one domain. A reboot the
//! domain asked for is done in place: `Reset` instead of `Create` and
//! `AssignMemory`, then only what a boot undoes (payloads, DTB, static
//! channels, store introduction, measurement) and the start; its memory
//! and what is mapped into it stay.
//!
//! Every link names a service end and a client end, and the service must
//! come first in boot order, so services are unpaused before their
//! clients. The store (xenstored) is unpaused before it can take
//! introductions: a domain that uses the store but was built while the
//! store was not running is introduced right after the store's `Unpause`
//! (as Xen's dom0less late xenstore initialisation does); the store is
//! never introduced to itself.
//!
//! Domains and links are named by their index in the caller's slices.

use crate::PayloadKind;
use core::fmt;

/// Domains in one system description (domB's supervisor limit).
pub const MAX_DOMAINS: usize = crate::supervisor::MAX_DOMAINS;
/// Links in one system description.
pub const MAX_LINKS: usize = 64;

/// Where another domain stands while one is built or started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Not built: not yet, its build failed, or it stopped and is gone.
    Absent,
    /// Built and still paused: its links can be made, it does not run.
    Built,
    /// Started.
    Running,
}

/// What domB needs to know to build one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainSpec<'a> {
    /// The node name, for messages; unique in the description.
    pub name: &'a str,
    /// Its security context, e.g. `system_u:system_r:domU_t`.
    pub label: &'a str,
    /// Bytes of guest RAM.
    pub memory_bytes: u64,
    /// Payload modules, copied in this order; exactly one kernel, at most
    /// one of each other kind.
    pub payloads: &'a [PayloadKind],
    /// This domain is the configuration store (xenstored).
    pub is_store: bool,
    /// This domain is introduced to the store (it has a xenstore page).
    pub uses_store: bool,
    /// Shared-memory regions the builder keeps in its own RAM and lends
    /// to this domain (indices into the caller's region list), mapped in
    /// this order. A region several domains use is how two domains share
    /// memory when neither owns it (Xen's regions with no `owner` role).
    pub regions: &'a [usize],
}

/// What a link carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A static interdomain event channel.
    EventChannel,
    /// A static shared-memory region of `bytes`.
    SharedMemory { bytes: u64 },
}

/// A static link between two domains, by index into the domain list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkSpec {
    pub kind: LinkKind,
    /// The end that serves: it must precede `client` in boot order.
    pub service: usize,
    pub client: usize,
}

/// One control step. `domain`, `store`, `service` and `client` are indices
/// into the domain list, `link` into the link list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Create {
        domain: usize,
        label: &'a str,
    },
    AssignMemory {
        domain: usize,
        bytes: u64,
    },
    CopyModule {
        domain: usize,
        kind: PayloadKind,
    },
    SetGuestDtb {
        domain: usize,
    },
    MapRegion {
        domain: usize,
        region: usize,
    },
    BindEvtchn {
        link: usize,
        service: usize,
        client: usize,
    },
    ShareMemory {
        link: usize,
        service: usize,
        client: usize,
        bytes: u64,
    },
    IntroduceToStore {
        domain: usize,
        store: usize,
    },
    Measure {
        domain: usize,
    },
    Unpause {
        domain: usize,
    },
    /// Take the domain, stopped because it asked to reboot, back to built
    /// and not yet run, in place (`ResetDomain`): it keeps its memory, the
    /// regions and memory shared with it, and its device model.
    Reset {
        domain: usize,
    },
}

/// Why an input was refused. Indices are into the caller's slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    TooManyDomains(usize),
    TooManyLinks(usize),
    EmptyName {
        domain: usize,
    },
    DuplicateName {
        first: usize,
        second: usize,
    },
    EmptyLabel {
        domain: usize,
    },
    NoMemory {
        domain: usize,
    },
    NoKernel {
        domain: usize,
    },
    DuplicatePayload {
        domain: usize,
        kind: PayloadKind,
    },
    TwoStores {
        first: usize,
        second: usize,
    },
    LinkEndMissing {
        link: usize,
        end: usize,
    },
    SelfLink {
        link: usize,
    },
    /// The service end is not before the client end in boot order, so it
    /// could not be running when its client starts.
    ServiceAfterClient {
        link: usize,
        service: usize,
        client: usize,
    },
    EmptySharedMemory {
        link: usize,
    },
    /// A region is lent to the same domain twice.
    DuplicateRegion {
        domain: usize,
        region: usize,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PlanError::TooManyDomains(n) => write!(f, "{n} domains, at most {MAX_DOMAINS}"),
            PlanError::TooManyLinks(n) => write!(f, "{n} links, at most {MAX_LINKS}"),
            PlanError::EmptyName { domain } => write!(f, "domain {domain} has no name"),
            PlanError::DuplicateName { first, second } => {
                write!(f, "domains {first} and {second} have the same name")
            }
            PlanError::EmptyLabel { domain } => write!(f, "domain {domain} has no security label"),
            PlanError::NoMemory { domain } => write!(f, "domain {domain} has no memory"),
            PlanError::NoKernel { domain } => write!(f, "domain {domain} has no kernel"),
            PlanError::DuplicatePayload { domain, kind } => {
                write!(f, "domain {domain} has two {} payloads", kind.name())
            }
            PlanError::TwoStores { first, second } => {
                write!(f, "domains {first} and {second} are both the store")
            }
            PlanError::LinkEndMissing { link, end } => {
                write!(f, "link {link} names domain {end}, which does not exist")
            }
            PlanError::SelfLink { link } => write!(f, "link {link} joins a domain to itself"),
            PlanError::ServiceAfterClient {
                link,
                service,
                client,
            } => write!(
                f,
                "link {link}: service domain {service} boots after its client domain {client}"
            ),
            PlanError::EmptySharedMemory { link } => write!(f, "link {link} shares no memory"),
            PlanError::DuplicateRegion { domain, region } => {
                write!(f, "domain {domain} maps region {region} twice")
            }
        }
    }
}

/// A validated system: every step it yields can be issued in order.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    domains: &'a [DomainSpec<'a>],
    links: &'a [LinkSpec],
    store: Option<usize>,
}

impl<'a> Plan<'a> {
    /// Checks `domains` (in boot order) and `links`.
    pub fn new(domains: &'a [DomainSpec<'a>], links: &'a [LinkSpec]) -> Result<Self, PlanError> {
        if domains.len() > MAX_DOMAINS {
            return Err(PlanError::TooManyDomains(domains.len()));
        }
        if links.len() > MAX_LINKS {
            return Err(PlanError::TooManyLinks(links.len()));
        }
        let mut store = None;
        for (index, domain) in domains.iter().enumerate() {
            check_domain(index, domain)?;
            if let Some(first) = domains
                .iter()
                .take(index)
                .position(|d| d.name == domain.name)
            {
                return Err(PlanError::DuplicateName {
                    first,
                    second: index,
                });
            }
            if domain.is_store {
                if let Some(first) = store {
                    return Err(PlanError::TwoStores {
                        first,
                        second: index,
                    });
                }
                store = Some(index);
            }
        }
        for (index, link) in links.iter().enumerate() {
            check_link(index, link, domains.len())?;
        }
        Ok(Self {
            domains,
            links,
            store,
        })
    }

    /// Passes every boot step, in order, to `issue`: every domain's build,
    /// then every domain's start; stops at its first error and returns it.
    pub fn try_for_each_step<E>(
        &self,
        mut issue: impl FnMut(Step<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        for index in 0..self.domains.len() {
            // Exactly the domains before this one are built, none runs.
            let stage = |other: usize| {
                if other < index {
                    Stage::Built
                } else {
                    Stage::Absent
                }
            };
            self.build_steps(index, stage, &mut issue)?;
        }
        for index in 0..self.domains.len() {
            let stage = |other: usize| {
                if other < index {
                    Stage::Running
                } else {
                    Stage::Built
                }
            };
            self.start_steps(index, stage, &mut issue)?;
        }
        Ok(())
    }

    /// Passes the steps that build domain `index` (everything but its
    /// start), with `stage(other)` saying where each other domain stands:
    /// links are made to the ones that exist, and it is introduced to the
    /// store if the store runs. An index past the list issues nothing.
    pub fn try_for_each_build_step<E>(
        &self,
        index: usize,
        stage: impl Fn(usize) -> Stage,
        mut issue: impl FnMut(Step<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.build_steps(index, stage, &mut issue)
    }

    /// Passes the steps that start domain `index`, once built: its
    /// `Unpause` and, if it is the store, the introduction of every other
    /// domain that exists and uses it. An index past the list issues
    /// nothing.
    pub fn try_for_each_start_step<E>(
        &self,
        index: usize,
        stage: impl Fn(usize) -> Stage,
        mut issue: impl FnMut(Step<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.start_steps(index, stage, &mut issue)
    }

    /// Passes the steps that rebuild domain `index` after a crash, with
    /// `running(other)` saying which other domains are up (a stopped peer
    /// gets its link when, if ever, it is rebuilt itself): its build, then
    /// its start. A rebuilt store has lost its contents, so every running
    /// domain that uses it is introduced again. An index past the list
    /// issues nothing.
    pub fn try_for_each_rebuild_step<E>(
        &self,
        index: usize,
        running: impl Fn(usize) -> bool,
        mut issue: impl FnMut(Step<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let stage = |other: usize| {
            if other != index && running(other) {
                Stage::Running
            } else {
                Stage::Absent
            }
        };
        self.build_steps(index, stage, &mut issue)?;
        self.start_steps(index, stage, &mut issue)
    }

    /// Passes the steps that boot domain `index` again after it asked to
    /// reboot, in place, with `running(other)` saying which other domains
    /// are up: `Reset` instead of `Create` and `AssignMemory`, then only
    /// what a boot undoes. Its payloads and DTB are loaded again, its
    /// static event channels to running domains (closed when it stopped)
    /// bound again, it is introduced to a running store again and
    /// measured again (a new boot, a new event log); its lent regions and
    /// shared memory stay mapped, so they are not mapped again. Then its
    /// start, as for a rebuild. An index past the list issues nothing.
    pub fn try_for_each_reboot_step<E>(
        &self,
        index: usize,
        running: impl Fn(usize) -> bool,
        mut issue: impl FnMut(Step<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let stage = |other: usize| {
            if other != index && running(other) {
                Stage::Running
            } else {
                Stage::Absent
            }
        };
        self.load_steps(index, &stage, true, &mut issue)?;
        self.start_steps(index, stage, &mut issue)
    }

    fn build_steps<E>(
        &self,
        index: usize,
        stage: impl Fn(usize) -> Stage,
        issue: &mut impl FnMut(Step<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.load_steps(index, &stage, false, issue)
    }

    /// A build (`in_place` false), or the steps after a reset in place,
    /// which keeps the domain's memory and what is mapped into it.
    fn load_steps<E>(
        &self,
        index: usize,
        stage: &impl Fn(usize) -> Stage,
        in_place: bool,
        issue: &mut impl FnMut(Step<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(domain) = self.domains.get(index) else {
            return Ok(());
        };
        let exists = |other: usize| other != index && stage(other) != Stage::Absent;
        if in_place {
            issue(Step::Reset { domain: index })?;
        } else {
            issue(Step::Create {
                domain: index,
                label: domain.label,
            })?;
            issue(Step::AssignMemory {
                domain: index,
                bytes: domain.memory_bytes,
            })?;
        }
        for &kind in domain.payloads {
            issue(Step::CopyModule {
                domain: index,
                kind,
            })?;
        }
        issue(Step::SetGuestDtb { domain: index })?;
        for &region in domain.regions.iter().filter(|_| !in_place) {
            issue(Step::MapRegion {
                domain: index,
                region,
            })?;
        }
        for (link_index, link) in self.links.iter().enumerate() {
            let other = if link.service == index {
                link.client
            } else if link.client == index {
                link.service
            } else {
                continue;
            };
            let kept = in_place && matches!(link.kind, LinkKind::SharedMemory { .. });
            if exists(other) && !kept {
                issue(link_step(link_index, link))?;
            }
        }
        if let Some(store) = self.store {
            if domain.uses_store && store != index && stage(store) == Stage::Running {
                issue(Step::IntroduceToStore {
                    domain: index,
                    store,
                })?;
            }
        }
        issue(Step::Measure { domain: index })
    }

    fn start_steps<E>(
        &self,
        index: usize,
        stage: impl Fn(usize) -> Stage,
        issue: &mut impl FnMut(Step<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        if index >= self.domains.len() {
            return Ok(());
        }
        issue(Step::Unpause { domain: index })?;
        if self.store == Some(index) {
            for (other, spec) in self.domains.iter().enumerate() {
                if spec.uses_store && other != index && stage(other) != Stage::Absent {
                    issue(Step::IntroduceToStore {
                        domain: other,
                        store: index,
                    })?;
                }
            }
        }
        Ok(())
    }
}

fn check_domain(index: usize, domain: &DomainSpec<'_>) -> Result<(), PlanError> {
    if domain.name.is_empty() {
        return Err(PlanError::EmptyName { domain: index });
    }
    if domain.label.is_empty() {
        return Err(PlanError::EmptyLabel { domain: index });
    }
    if domain.memory_bytes == 0 {
        return Err(PlanError::NoMemory { domain: index });
    }
    for (position, kind) in domain.payloads.iter().enumerate() {
        if domain
            .payloads
            .iter()
            .take(position)
            .any(|earlier| earlier == kind)
        {
            return Err(PlanError::DuplicatePayload {
                domain: index,
                kind: *kind,
            });
        }
    }
    if !domain.payloads.contains(&PayloadKind::Kernel) {
        return Err(PlanError::NoKernel { domain: index });
    }
    for (position, &region) in domain.regions.iter().enumerate() {
        if domain.regions.iter().take(position).any(|&r| r == region) {
            return Err(PlanError::DuplicateRegion {
                domain: index,
                region,
            });
        }
    }
    Ok(())
}

fn check_link(index: usize, link: &LinkSpec, domains: usize) -> Result<(), PlanError> {
    for end in [link.service, link.client] {
        if end >= domains {
            return Err(PlanError::LinkEndMissing { link: index, end });
        }
    }
    if link.service == link.client {
        return Err(PlanError::SelfLink { link: index });
    }
    if link.service > link.client {
        return Err(PlanError::ServiceAfterClient {
            link: index,
            service: link.service,
            client: link.client,
        });
    }
    if link.kind == (LinkKind::SharedMemory { bytes: 0 }) {
        return Err(PlanError::EmptySharedMemory { link: index });
    }
    Ok(())
}

fn link_step<'a>(index: usize, link: &LinkSpec) -> Step<'a> {
    match link.kind {
        LinkKind::EventChannel => Step::BindEvtchn {
            link: index,
            service: link.service,
            client: link.client,
        },
        LinkKind::SharedMemory { bytes } => Step::ShareMemory {
            link: index,
            service: link.service,
            client: link.client,
            bytes,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    const KERNEL_ONLY: &[PayloadKind] = &[PayloadKind::Kernel];
    const LINUX: &[PayloadKind] = &[
        PayloadKind::Kernel,
        PayloadKind::Ramdisk,
        PayloadKind::PartialDtb,
    ];

    fn domain(name: &'static str) -> DomainSpec<'static> {
        DomainSpec {
            name,
            label: "system_u:system_r:domU_t",
            memory_bytes: 64 << 20,
            payloads: KERNEL_ONLY,
            is_store: false,
            uses_store: false,
            regions: &[],
        }
    }

    fn evtchn(service: usize, client: usize) -> LinkSpec {
        LinkSpec {
            kind: LinkKind::EventChannel,
            service,
            client,
        }
    }

    fn steps<'a>(plan: &Plan<'a>) -> Vec<Step<'a>> {
        let mut out = Vec::new();
        plan.try_for_each_step(|step| {
            out.push(step);
            Ok::<(), Infallible>(())
        })
        .unwrap();
        out
    }

    fn build_of<'a>(
        plan: &Plan<'a>,
        index: usize,
        stage: impl Fn(usize) -> Stage,
    ) -> Vec<Step<'a>> {
        let mut out = Vec::new();
        plan.try_for_each_build_step(index, stage, |step| {
            out.push(step);
            Ok::<(), Infallible>(())
        })
        .unwrap();
        out
    }

    fn start_of<'a>(
        plan: &Plan<'a>,
        index: usize,
        stage: impl Fn(usize) -> Stage,
    ) -> Vec<Step<'a>> {
        let mut out = Vec::new();
        plan.try_for_each_start_step(index, stage, |step| {
            out.push(step);
            Ok::<(), Infallible>(())
        })
        .unwrap();
        out
    }

    fn rebuild_steps<'a>(plan: &Plan<'a>, index: usize, running: &[bool]) -> Vec<Step<'a>> {
        let mut out = Vec::new();
        plan.try_for_each_rebuild_step(
            index,
            |d| running[d],
            |step| {
                out.push(step);
                Ok::<(), Infallible>(())
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn one_domain_is_built_in_design_order() {
        let domains = [DomainSpec {
            payloads: LINUX,
            ..domain("guest")
        }];
        let plan = Plan::new(&domains, &[]).unwrap();
        assert_eq!(
            steps(&plan),
            [
                Step::Create {
                    domain: 0,
                    label: "system_u:system_r:domU_t"
                },
                Step::AssignMemory {
                    domain: 0,
                    bytes: 64 << 20
                },
                Step::CopyModule {
                    domain: 0,
                    kind: PayloadKind::Kernel
                },
                Step::CopyModule {
                    domain: 0,
                    kind: PayloadKind::Ramdisk
                },
                Step::CopyModule {
                    domain: 0,
                    kind: PayloadKind::PartialDtb
                },
                Step::SetGuestDtb { domain: 0 },
                Step::Measure { domain: 0 },
                Step::Unpause { domain: 0 },
            ]
        );
    }

    #[test]
    fn at_boot_every_domain_is_built_before_the_first_starts() {
        let domains = [domain("devmodel"), domain("guest1"), domain("guest2")];
        let plan = Plan::new(&domains, &[]).unwrap();
        let tail: Vec<_> = steps(&plan).into_iter().rev().take(4).collect();
        assert_eq!(
            tail,
            [
                Step::Unpause { domain: 2 },
                Step::Unpause { domain: 1 },
                Step::Unpause { domain: 0 },
                Step::Measure { domain: 2 },
            ],
            "the starts come last, in boot order"
        );
        check_boot_order(&domains, &[], &steps(&plan));
    }

    #[test]
    fn build_and_start_steps_follow_the_stages_of_the_others() {
        let domains = [
            DomainSpec {
                is_store: true,
                ..domain("xenstored")
            },
            DomainSpec {
                uses_store: true,
                ..domain("a")
            },
            DomainSpec {
                uses_store: true,
                ..domain("b")
            },
        ];
        let links = [evtchn(0, 1), evtchn(1, 2)];
        let plan = Plan::new(&domains, &links).unwrap();
        // b built while the store is built but paused and a is absent:
        // no link to a, no introduction yet.
        let stage = |d: usize| [Stage::Built, Stage::Absent, Stage::Absent][d];
        let build = build_of(&plan, 2, stage);
        assert_eq!(build.last(), Some(&Step::Measure { domain: 2 }));
        assert!(!build
            .iter()
            .any(|s| matches!(s, Step::BindEvtchn { .. } | Step::IntroduceToStore { .. })));
        // a built while the store runs: linked and introduced.
        let stage = |d: usize| [Stage::Running, Stage::Absent, Stage::Built][d];
        let build = build_of(&plan, 1, stage);
        let wiring: Vec<_> = build
            .iter()
            .filter(|s| matches!(s, Step::BindEvtchn { .. } | Step::IntroduceToStore { .. }))
            .collect();
        assert_eq!(
            wiring,
            [
                &Step::BindEvtchn {
                    link: 0,
                    service: 0,
                    client: 1
                },
                &Step::BindEvtchn {
                    link: 1,
                    service: 1,
                    client: 2
                },
                &Step::IntroduceToStore {
                    domain: 1,
                    store: 0
                },
            ]
        );
        // The store's start introduces every domain that exists.
        let stage = |d: usize| [Stage::Built, Stage::Absent, Stage::Built][d];
        let start = start_of(&plan, 0, stage);
        assert_eq!(
            start,
            [
                Step::Unpause { domain: 0 },
                Step::IntroduceToStore {
                    domain: 2,
                    store: 0
                }
            ]
        );
        let start = start_of(&plan, 2, stage);
        assert_eq!(start, [Step::Unpause { domain: 2 }]);
        assert!(start_of(&plan, 3, stage).is_empty());
        assert!(build_of(&plan, 3, stage).is_empty());
    }

    #[test]
    fn store_service_and_guest() {
        let domains = [
            DomainSpec {
                is_store: true,
                ..domain("xenstored")
            },
            DomainSpec {
                uses_store: true,
                ..domain("devmodel")
            },
            DomainSpec {
                uses_store: true,
                ..domain("guest")
            },
        ];
        let links = [
            evtchn(0, 1),
            LinkSpec {
                kind: LinkKind::SharedMemory { bytes: 4096 },
                service: 1,
                client: 2,
            },
            evtchn(0, 2),
        ];
        let plan = Plan::new(&domains, &links).unwrap();
        let all = steps(&plan);
        let guest: Vec<_> = all
            .iter()
            .filter(|s| step_domains(s).contains(&2))
            .copied()
            .collect();
        assert_eq!(
            guest[3..],
            [
                Step::SetGuestDtb { domain: 2 },
                Step::ShareMemory {
                    link: 1,
                    service: 1,
                    client: 2,
                    bytes: 4096
                },
                Step::BindEvtchn {
                    link: 2,
                    service: 0,
                    client: 2
                },
                Step::Measure { domain: 2 },
                // Built while the store was still paused: introduced once
                // it runs, before the guest itself starts.
                Step::IntroduceToStore {
                    domain: 2,
                    store: 0
                },
                Step::Unpause { domain: 2 },
            ]
        );
        check_boot_order(&domains, &links, &all);
    }

    #[test]
    fn domains_before_the_store_are_introduced_once_it_runs() {
        let domains = [
            DomainSpec {
                uses_store: true,
                ..domain("vtpm")
            },
            domain("console"),
            DomainSpec {
                is_store: true,
                uses_store: true,
                ..domain("xenstored")
            },
            DomainSpec {
                uses_store: true,
                ..domain("guest")
            },
        ];
        let plan = Plan::new(&domains, &[]).unwrap();
        let all = steps(&plan);
        let store_unpause = all
            .iter()
            .position(|s| *s == Step::Unpause { domain: 2 })
            .unwrap();
        assert_eq!(
            all[store_unpause + 1],
            Step::IntroduceToStore {
                domain: 0,
                store: 2
            },
            "the early domain, straight after the store runs"
        );
        let intros: Vec<_> = all
            .iter()
            .filter(|s| matches!(s, Step::IntroduceToStore { .. }))
            .collect();
        assert_eq!(
            intros,
            [
                &Step::IntroduceToStore {
                    domain: 0,
                    store: 2
                },
                &Step::IntroduceToStore {
                    domain: 3,
                    store: 2
                },
            ],
            "never the store itself nor a domain without a store page"
        );
        check_boot_order(&domains, &[], &all);
    }

    #[test]
    fn no_store_means_no_introductions() {
        let domains = [
            DomainSpec {
                uses_store: true,
                ..domain("a")
            },
            DomainSpec {
                uses_store: true,
                ..domain("b")
            },
        ];
        let links = [evtchn(0, 1)];
        let plan = Plan::new(&domains, &links).unwrap();
        assert!(!steps(&plan)
            .iter()
            .any(|s| matches!(s, Step::IntroduceToStore { .. })));
    }

    #[test]
    fn the_first_error_stops_the_plan() {
        let domains = [domain("a"), domain("b")];
        let plan = Plan::new(&domains, &[]).unwrap();
        let mut issued = 0;
        let result = plan.try_for_each_step(|step| {
            issued += 1;
            match step {
                Step::CopyModule { domain: 1, .. } => Err("copy failed"),
                _ => Ok(()),
            }
        });
        assert_eq!(result, Err("copy failed"));
        assert_eq!(
            issued,
            5 + 3,
            "domain 0 built, then domain 1 up to the failure; nothing started"
        );
    }

    #[test]
    fn rebuild_rewires_running_peers_only() {
        let domains = [
            DomainSpec {
                is_store: true,
                ..domain("xenstored")
            },
            DomainSpec {
                uses_store: true,
                ..domain("backend")
            },
            DomainSpec {
                uses_store: true,
                ..domain("guest")
            },
        ];
        let links = [evtchn(0, 1), evtchn(1, 2), evtchn(0, 2)];
        let plan = Plan::new(&domains, &links).unwrap();
        // The backend restarts while the guest is stopped.
        let steps = rebuild_steps(&plan, 1, &[true, true, false]);
        let wiring: Vec<_> = steps
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Step::BindEvtchn { .. }
                        | Step::ShareMemory { .. }
                        | Step::IntroduceToStore { .. }
                )
            })
            .collect();
        assert_eq!(
            wiring,
            [
                &Step::BindEvtchn {
                    link: 0,
                    service: 0,
                    client: 1
                },
                &Step::IntroduceToStore {
                    domain: 1,
                    store: 0
                },
            ]
        );
        assert_eq!(steps.last(), Some(&Step::Unpause { domain: 1 }));
        // A rebuilt store reintroduces every running user of it.
        let steps = rebuild_steps(&plan, 0, &[true, true, true]);
        let tail: Vec<_> = steps
            .iter()
            .skip_while(|s| **s != Step::Unpause { domain: 0 })
            .collect();
        assert_eq!(
            tail,
            [
                &Step::Unpause { domain: 0 },
                &Step::IntroduceToStore {
                    domain: 1,
                    store: 0
                },
                &Step::IntroduceToStore {
                    domain: 2,
                    store: 0
                },
            ]
        );
        assert!(rebuild_steps(&plan, 3, &[true, true, true]).is_empty());
    }

    #[test]
    fn lent_regions_are_mapped_after_the_dtb_at_boot_and_on_rebuild() {
        let domains = [
            DomainSpec {
                regions: &[0],
                ..domain("ping")
            },
            DomainSpec {
                regions: &[1, 0],
                ..domain("pong")
            },
        ];
        let links = [evtchn(0, 1)];
        let plan = Plan::new(&domains, &links).unwrap();
        let own: Vec<_> = steps(&plan)
            .into_iter()
            .filter(|s| step_domains(s).contains(&1))
            .skip(3)
            .collect();
        let rebuilt: Vec<_> = rebuild_steps(&plan, 1, &[true, false])
            .into_iter()
            .skip(3)
            .collect();
        let expected = [
            Step::SetGuestDtb { domain: 1 },
            Step::MapRegion {
                domain: 1,
                region: 1,
            },
            Step::MapRegion {
                domain: 1,
                region: 0,
            },
            Step::BindEvtchn {
                link: 0,
                service: 0,
                client: 1,
            },
            Step::Measure { domain: 1 },
            Step::Unpause { domain: 1 },
        ];
        assert_eq!(own, expected);
        assert_eq!(rebuilt, expected);
        // Its region needs no peer: with the peer down it is still mapped.
        let alone = rebuild_steps(&plan, 0, &[false, false]);
        assert!(alone.contains(&Step::MapRegion {
            domain: 0,
            region: 0
        }));
        assert!(!alone.iter().any(|s| matches!(s, Step::BindEvtchn { .. })));
    }

    fn reboot_steps<'a>(plan: &Plan<'a>, index: usize, running: &[bool]) -> Vec<Step<'a>> {
        let mut out = Vec::new();
        plan.try_for_each_reboot_step(
            index,
            |d| running[d],
            |step| {
                out.push(step);
                Ok::<(), Infallible>(())
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn a_reboot_resets_in_place_and_loads_again() {
        let domains = [DomainSpec {
            payloads: LINUX,
            ..domain("guest")
        }];
        let plan = Plan::new(&domains, &[]).unwrap();
        assert_eq!(
            reboot_steps(&plan, 0, &[true]),
            [
                Step::Reset { domain: 0 },
                Step::CopyModule {
                    domain: 0,
                    kind: PayloadKind::Kernel
                },
                Step::CopyModule {
                    domain: 0,
                    kind: PayloadKind::Ramdisk
                },
                Step::CopyModule {
                    domain: 0,
                    kind: PayloadKind::PartialDtb
                },
                Step::SetGuestDtb { domain: 0 },
                Step::Measure { domain: 0 },
                Step::Unpause { domain: 0 },
            ]
        );
        assert!(reboot_steps(&plan, 1, &[true]).is_empty(), "past the list");
    }

    #[test]
    fn a_reboot_keeps_what_is_mapped_and_binds_channels_to_running_peers() {
        let domains = [
            DomainSpec {
                is_store: true,
                ..domain("xenstored")
            },
            DomainSpec {
                uses_store: true,
                regions: &[1, 0],
                ..domain("guest")
            },
            domain("peer"),
        ];
        let links = [
            evtchn(0, 1),
            LinkSpec {
                kind: LinkKind::SharedMemory { bytes: 4096 },
                service: 0,
                client: 1,
            },
            evtchn(1, 2),
        ];
        let plan = Plan::new(&domains, &links).unwrap();
        let steps = reboot_steps(&plan, 1, &[true, true, false]);
        assert!(
            !steps.iter().any(|s| matches!(
                s,
                Step::Create { .. }
                    | Step::AssignMemory { .. }
                    | Step::MapRegion { .. }
                    | Step::ShareMemory { .. }
            )),
            "memory and what is mapped into it stay: {steps:?}"
        );
        let tail: Vec<_> = steps
            .iter()
            .skip_while(|s| **s != Step::SetGuestDtb { domain: 1 })
            .collect();
        assert_eq!(
            tail,
            [
                &Step::SetGuestDtb { domain: 1 },
                &Step::BindEvtchn {
                    link: 0,
                    service: 0,
                    client: 1
                },
                &Step::IntroduceToStore {
                    domain: 1,
                    store: 0
                },
                &Step::Measure { domain: 1 },
                &Step::Unpause { domain: 1 },
            ],
            "the stopped peer gets its channel when it is rebuilt"
        );
        assert_eq!(steps.first(), Some(&Step::Reset { domain: 1 }));
        // A store that reboots introduces every running user again.
        let store = reboot_steps(&plan, 0, &[true, true, true]);
        assert_eq!(
            store.last(),
            Some(&Step::IntroduceToStore {
                domain: 1,
                store: 0
            })
        );
    }

    #[test]
    fn bad_domains_are_refused() {
        let two_kernels = [
            PayloadKind::Kernel,
            PayloadKind::Ramdisk,
            PayloadKind::Kernel,
        ];
        let cases = [
            (
                DomainSpec {
                    name: "",
                    ..domain("x")
                },
                PlanError::EmptyName { domain: 1 },
            ),
            (
                DomainSpec {
                    label: "",
                    ..domain("x")
                },
                PlanError::EmptyLabel { domain: 1 },
            ),
            (
                DomainSpec {
                    memory_bytes: 0,
                    ..domain("x")
                },
                PlanError::NoMemory { domain: 1 },
            ),
            (
                DomainSpec {
                    payloads: &[PayloadKind::Ramdisk],
                    ..domain("x")
                },
                PlanError::NoKernel { domain: 1 },
            ),
            (
                DomainSpec {
                    payloads: &two_kernels,
                    ..domain("x")
                },
                PlanError::DuplicatePayload {
                    domain: 1,
                    kind: PayloadKind::Kernel,
                },
            ),
            (
                domain("a"),
                PlanError::DuplicateName {
                    first: 0,
                    second: 1,
                },
            ),
            (
                DomainSpec {
                    is_store: true,
                    ..domain("x")
                },
                PlanError::TwoStores {
                    first: 0,
                    second: 1,
                },
            ),
            (
                DomainSpec {
                    regions: &[3, 1, 3],
                    ..domain("x")
                },
                PlanError::DuplicateRegion {
                    domain: 1,
                    region: 3,
                },
            ),
        ];
        for (bad, error) in cases {
            let domains = [
                DomainSpec {
                    is_store: true,
                    ..domain("a")
                },
                bad,
            ];
            assert_eq!(Plan::new(&domains, &[]).err(), Some(error));
        }
        let too_many: Vec<_> = (0..=MAX_DOMAINS).map(|_| domain("x")).collect();
        assert_eq!(
            Plan::new(&too_many, &[]).err(),
            Some(PlanError::TooManyDomains(17))
        );
    }

    #[test]
    fn bad_links_are_refused() {
        let domains = [domain("a"), domain("b")];
        let cases = [
            (evtchn(0, 2), PlanError::LinkEndMissing { link: 0, end: 2 }),
            (
                evtchn(usize::MAX, 1),
                PlanError::LinkEndMissing {
                    link: 0,
                    end: usize::MAX,
                },
            ),
            (evtchn(1, 1), PlanError::SelfLink { link: 0 }),
            (
                evtchn(1, 0),
                PlanError::ServiceAfterClient {
                    link: 0,
                    service: 1,
                    client: 0,
                },
            ),
            (
                LinkSpec {
                    kind: LinkKind::SharedMemory { bytes: 0 },
                    service: 0,
                    client: 1,
                },
                PlanError::EmptySharedMemory { link: 0 },
            ),
        ];
        for (link, error) in cases {
            assert_eq!(Plan::new(&domains, &[link]).err(), Some(error));
        }
        let too_many = [evtchn(0, 1); MAX_LINKS + 1];
        assert_eq!(
            Plan::new(&domains, &too_many).err(),
            Some(PlanError::TooManyLinks(65))
        );
        // Two links between the same pair are two channels, both made.
        let links = [evtchn(0, 1), evtchn(0, 1)];
        let plan = Plan::new(&domains, &links).unwrap();
        let binds = steps(&plan)
            .iter()
            .filter(|s| matches!(s, Step::BindEvtchn { .. }))
            .count();
        assert_eq!(binds, 2);
    }

    #[test]
    fn errors_render() {
        let error = PlanError::ServiceAfterClient {
            link: 3,
            service: 2,
            client: 1,
        };
        assert_eq!(
            error.to_string(),
            "link 3: service domain 2 boots after its client domain 1"
        );
    }

    /// The domains a step concerns.
    fn step_domains(step: &Step<'_>) -> Vec<usize> {
        match *step {
            Step::Create { domain, .. }
            | Step::AssignMemory { domain, .. }
            | Step::CopyModule { domain, .. }
            | Step::SetGuestDtb { domain }
            | Step::MapRegion { domain, .. }
            | Step::IntroduceToStore { domain, .. }
            | Step::Measure { domain }
            | Step::Unpause { domain }
            | Step::Reset { domain } => vec![domain],
            Step::BindEvtchn {
                service, client, ..
            }
            | Step::ShareMemory {
                service, client, ..
            } => {
                vec![service, client]
            }
        }
    }

    /// Checks every ordering rule the module promises.
    fn check_boot_order(domains: &[DomainSpec<'_>], links: &[LinkSpec], steps: &[Step<'_>]) {
        let position = |wanted: Step<'_>| steps.iter().position(|s| *s == wanted);
        let only = |wanted: Step<'_>| {
            assert_eq!(
                steps.iter().filter(|s| **s == wanted).count(),
                1,
                "{wanted:?} once"
            );
            position(wanted).unwrap()
        };
        let store = domains.iter().position(|d| d.is_store);
        // Every domain is built before any starts, so a service finds all
        // of its clients when it starts.
        let first_start = steps
            .iter()
            .position(|s| matches!(s, Step::Unpause { .. }))
            .unwrap();
        let last_measure = steps
            .iter()
            .rposition(|s| matches!(s, Step::Measure { .. }))
            .unwrap();
        assert!(last_measure < first_start, "all built, then all started");
        for (index, domain) in domains.iter().enumerate() {
            let create = only(Step::Create {
                domain: index,
                label: domain.label,
            });
            let memory = only(Step::AssignMemory {
                domain: index,
                bytes: domain.memory_bytes,
            });
            let dtb = only(Step::SetGuestDtb { domain: index });
            let measure = only(Step::Measure { domain: index });
            let unpause = only(Step::Unpause { domain: index });
            let first_own = steps
                .iter()
                .position(|s| step_domains(s).contains(&index))
                .unwrap();
            assert_eq!(
                first_own, create,
                "domain {index} is created before anything else"
            );
            assert!(memory < dtb && dtb < measure && measure < unpause);
            let mut last_copy = memory;
            for &kind in domain.payloads {
                let copy = only(Step::CopyModule {
                    domain: index,
                    kind,
                });
                assert!(
                    copy > last_copy,
                    "payloads in the order given, after memory"
                );
                last_copy = copy;
            }
            assert!(last_copy < dtb);
            let mut last_region = dtb;
            for &region in domain.regions {
                let map = only(Step::MapRegion {
                    domain: index,
                    region,
                });
                assert!(
                    map > last_region,
                    "regions in the order given, after the DTB"
                );
                last_region = map;
            }
            assert!(last_region < measure);
            let introduction = steps.iter().position(
                |s| matches!(s, Step::IntroduceToStore { domain, .. } if *domain == index),
            );
            match store {
                Some(store) if domain.uses_store && store != index => {
                    let at = introduction.expect("introduced");
                    assert!(
                        at > only(Step::Unpause { domain: store }),
                        "the store runs first"
                    );
                    assert!(at > create);
                    if store < index {
                        assert!(at < unpause, "introduced before it runs");
                    }
                }
                _ => assert_eq!(introduction, None),
            }
        }
        for (index, link) in links.iter().enumerate() {
            let made: Vec<_> = steps
                .iter()
                .enumerate()
                .filter(|(_, s)| {
                    matches!(s, Step::BindEvtchn { link, .. } | Step::ShareMemory { link, .. } if *link == index)
                })
                .map(|(at, _)| at)
                .collect();
            assert_eq!(made.len(), 1, "link {index} made once");
            let made = made[0];
            for end in [link.service, link.client] {
                let create = position(Step::Create {
                    domain: end,
                    label: domains[end].label,
                })
                .unwrap();
                assert!(create < made, "link {index} after both ends exist");
            }
            assert!(
                made < position(Step::Unpause {
                    domain: link.client
                })
                .unwrap()
            );
            assert!(
                position(Step::Unpause {
                    domain: link.service
                }) < position(Step::Unpause {
                    domain: link.client
                }),
                "service before client"
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const NAMES: [&str; MAX_DOMAINS] = [
            "d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9", "d10", "d11", "d12", "d13",
            "d14", "d15",
        ];
        const REGION_SETS: [&[usize]; 4] = [&[], &[0], &[1, 0], &[2]];
        const PAYLOAD_SETS: [&[PayloadKind]; 4] = [
            &[PayloadKind::Kernel],
            &[PayloadKind::Kernel, PayloadKind::Ramdisk],
            &[PayloadKind::PartialDtb, PayloadKind::Kernel],
            &[
                PayloadKind::Kernel,
                PayloadKind::Ramdisk,
                PayloadKind::PartialDtb,
            ],
        ];

        proptest! {
            #[test]
            fn any_valid_system_is_built_in_order(
                count in 1usize..=MAX_DOMAINS,
                store in proptest::option::of(0usize..MAX_DOMAINS),
                flags in proptest::collection::vec((any::<bool>(), 0usize..4, 1u64..1_000), MAX_DOMAINS),
                raw_links in proptest::collection::vec((0usize..MAX_DOMAINS, 0usize..MAX_DOMAINS, 0u64..3), 0..MAX_LINKS),
            ) {
                let domains: Vec<_> = (0..count)
                    .map(|i| DomainSpec {
                        name: NAMES[i],
                        label: "system_u:system_r:domU_t",
                        memory_bytes: flags[i].2,
                        payloads: PAYLOAD_SETS[flags[i].1],
                        is_store: store == Some(i),
                        uses_store: flags[i].0,
                        regions: REGION_SETS[flags[i].1],
                    })
                    .collect();
                // Turn random pairs into links the plan accepts: the lower
                // index serves.
                let links: Vec<_> = raw_links
                    .iter()
                    .filter_map(|&(a, b, bytes)| {
                        let (a, b) = (a % count, b % count);
                        (a != b).then(|| LinkSpec {
                            kind: if bytes == 0 {
                                LinkKind::EventChannel
                            } else {
                                LinkKind::SharedMemory { bytes: bytes << 12 }
                            },
                            service: a.min(b),
                            client: a.max(b),
                        })
                    })
                    .collect();
                let plan = Plan::new(&domains, &links).unwrap();
                check_boot_order(&domains, &links, &steps(&plan));
            }

            #[test]
            fn a_reversed_link_is_always_refused(a in 0usize..4, b in 0usize..4) {
                prop_assume!(a > b);
                let domains = [domain("a"), domain("b"), domain("c"), domain("d")];
                let refused = matches!(
                    Plan::new(&domains, &[evtchn(a, b)]),
                    Err(PlanError::ServiceAfterClient { .. })
                );
                prop_assert!(refused);
            }
        }
    }
}
