//! From the system description to what domB builds: which domains, in
//! which order, with which links, each domain's device tree and its
//! `on-crash` policy.
//!
//! The one idea: domB builds every domain of the description except
//! itself, in `SystemConfig::boot_order()`, and each must come out as the
//! kernel's dom0less builder would have made it, so an image boots the same
//! in either mode: a device model's DT lists the domains it serves
//! (`/tessera-ioreq`, from `SystemConfig::served_by`, as the kernel writes
//! it), and each served domain is created naming its device model, so the
//! kernel lets only that one serve it and holds it until it is served
//! ([`create_request`]). What domB cannot reproduce yet is refused here,
//! before a single domain is created, with a sentence naming the domain
//! ([`Unsupported`]):
//! - a shared-memory region at a fixed host address (the three-value
//!   `xen,shared-mem`): domB keeps every region in its own RAM and lends it
//!   to each user (`ShareMemory` with itself as the owner), so the host
//!   address is the kernel's choice;
//! - a static link to the boot domain itself.
//!
//! Plan indices (the order domB builds in) and description indices (tree
//! order, what `SystemConfig` links name) differ: [`Hyperlaunch::order`]
//! maps one to the other.

use crate::layout::Layout;
use crate::plan::{DomainSpec, LinkKind, LinkSpec, MAX_LINKS};
use crate::supervisor::{OnCrash, RestartPolicy, Time};
use crate::PayloadKind;
use core::fmt;
use tessera_ipc::control::{
    CreateDomain, CREATE_RESTARTS, CREATE_VPL011, LABEL_LEN, MAX_PINS, NAME_LEN,
};
use tessera_ipc::errno::Errno;
use tessera_sysdesc::config::{self, DomainConfig, Function, SystemConfig, MAX_DOMAINS, MAX_SHM};
use tessera_sysdesc::fdt_writer::DtWriteError;
use tessera_sysdesc::guest_dt::{self, GuestDtParams, XenGuestNodes};

/// A domain name, as errors carry it.
pub type Name = heapless::String<{ config::MAX_DOMAIN_NAME }>;

/// The wait before restarting a crashed domain whose description gives
/// none (`tessera,restart-backoff-ms`).
pub const DEFAULT_BACKOFF_MS: u32 = 100;
/// The back-off doubles with each crash in a row up to this many times the
/// first wait.
pub const BACKOFF_CAP_FACTOR: u64 = 32;
/// A domain that ran this long before crashing starts over at the first
/// wait.
pub const STABLE_AFTER_MS: u64 = 10_000;
/// At most this many restarts in [`RESTART_WINDOW_MS`]; the next crash
/// leaves the domain stopped.
pub const MAX_RESTARTS: u32 = 5;
pub const RESTART_WINDOW_MS: u64 = 60_000;

const KERNEL_ONLY: &[PayloadKind] = &[PayloadKind::Kernel];
const KERNEL_AND_RAMDISK: &[PayloadKind] = &[PayloadKind::Kernel, PayloadKind::Ramdisk];

/// What domB cannot build (yet): the image is refused as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// No domain has `functions = "boot"`.
    NoBootDomain,
    /// Region `region` gives a host address.
    FixedSharedMemory {
        region: heapless::String<{ config::MAX_SHM_ID }>,
    },
    /// The boot domain is an end of a static link.
    LinkToBootDomain { domain: Name },
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::NoBootDomain => f.write_str("no domain has functions = \"boot\""),
            Unsupported::FixedSharedMemory { region } => write!(
                f,
                "shared memory {region:?}: a fixed host address is not supported in hyperlaunch \
                 mode (domB places every region in its own RAM); use the two-value \
                 xen,shared-mem"
            ),
            Unsupported::LinkToBootDomain { domain } => write!(
                f,
                "{domain:?}: the boot domain cannot be an end of a static link"
            ),
        }
    }
}

/// What domB builds, worked out from the description once.
#[derive(Clone, Debug)]
pub struct Hyperlaunch {
    /// The boot domain's description index.
    pub boot: usize,
    /// Description indices in the order domB builds them (plan index k is
    /// description domain `order[k]`), without the boot domain.
    pub order: heapless::Vec<usize, MAX_DOMAINS>,
    /// The static event channels as plan links, each serving end first in
    /// boot order.
    pub links: heapless::Vec<LinkSpec, MAX_LINKS>,
    /// For each of `links`, its index in `SystemConfig::evtchns`.
    pub link_evtchn: heapless::Vec<usize, MAX_LINKS>,
    /// Per plan index: the regions (indices into `SystemConfig::shm`) domB
    /// lends to that domain.
    regions: [heapless::Vec<usize, MAX_SHM>; MAX_DOMAINS],
}

impl Hyperlaunch {
    /// Works out the build of `cfg`, whose domains start in `boot_order`
    /// (`SystemConfig::boot_order()`), or says what domB cannot build.
    pub fn new(cfg: &SystemConfig, boot_order: &[usize]) -> Result<Self, Unsupported> {
        let boot = boot_domain(cfg).ok_or(Unsupported::NoBootDomain)?;
        check_supported(cfg, boot)?;
        let order: heapless::Vec<usize, MAX_DOMAINS> = boot_order
            .iter()
            .copied()
            .filter(|&i| i != boot && i < cfg.domains.len())
            .collect();
        let plan_index = |ci: usize| order.iter().position(|&o| o == ci);
        let mut links = heapless::Vec::new();
        let mut link_evtchn = heapless::Vec::new();
        for (n, c) in cfg.evtchns.iter().enumerate() {
            let (Some(a), Some(b)) = (plan_index(c.a.domain), plan_index(c.b.domain)) else {
                continue;
            };
            // Both vectors hold MAX_STATIC_EVTCHNS == MAX_LINKS entries.
            let _ = links.push(LinkSpec {
                kind: LinkKind::EventChannel,
                service: a.min(b),
                client: a.max(b),
            });
            let _ = link_evtchn.push(n);
        }
        let mut regions: [heapless::Vec<usize, MAX_SHM>; MAX_DOMAINS] = Default::default();
        for (k, &ci) in order.iter().enumerate() {
            for (r, region) in cfg.shm.iter().enumerate() {
                if region.users.iter().any(|u| u.domain == ci) {
                    if let Some(list) = regions.get_mut(k) {
                        let _ = list.push(r);
                    }
                }
            }
        }
        Ok(Self {
            boot,
            order,
            links,
            link_evtchn,
            regions,
        })
    }

    /// The plan's input: one spec per domain, in build order.
    pub fn specs<'a>(
        &'a self,
        cfg: &'a SystemConfig,
    ) -> heapless::Vec<DomainSpec<'a>, MAX_DOMAINS> {
        self.order
            .iter()
            .enumerate()
            .filter_map(|(k, &ci)| {
                let dc = cfg.domains.get(ci)?;
                Some(DomainSpec {
                    name: dc.name.as_str(),
                    label: dc.security_label.as_str(),
                    memory_bytes: dc.memory_bytes,
                    payloads: if dc.ramdisk.is_some() {
                        KERNEL_AND_RAMDISK
                    } else {
                        KERNEL_ONLY
                    },
                    is_store: dc.functions.contains(Function::Xenstore),
                    uses_store: dc.xenstore,
                    regions: self.regions.get(k).map_or(&[], |r| r.as_slice()),
                })
            })
            .collect()
    }

    /// Plan index `k`'s description entry.
    pub fn domain<'a>(&self, cfg: &'a SystemConfig, k: usize) -> Option<&'a DomainConfig> {
        cfg.domains.get(*self.order.get(k)?)
    }

    /// Pairs of plan indices that share a link (an event channel or a
    /// region), for the supervisor's peers.
    pub fn peers<'a>(&'a self, cfg: &'a SystemConfig) -> impl Iterator<Item = (usize, usize)> + 'a {
        let channels = self.links.iter().map(|l| (l.service, l.client));
        let plan_index = move |ci: usize| self.order.iter().position(|&o| o == ci);
        let shared = cfg.shm.iter().flat_map(move |region| {
            region.users.iter().enumerate().flat_map(move |(i, x)| {
                region
                    .users
                    .iter()
                    .skip(i + 1)
                    .filter_map(move |y| Some((plan_index(x.domain)?, plan_index(y.domain)?)))
            })
        });
        channels.chain(shared)
    }
}

/// The description index of the boot domain, if there is one.
pub fn boot_domain(cfg: &SystemConfig) -> Option<usize> {
    cfg.domains
        .iter()
        .position(|d| d.functions.contains(Function::Boot))
}

fn check_supported(cfg: &SystemConfig, boot: usize) -> Result<(), Unsupported> {
    let name = |i: usize| {
        cfg.domains
            .get(i)
            .map_or_else(Name::new, |d| d.name.clone())
    };
    for region in &cfg.shm {
        if region.host_base.is_some() {
            return Err(Unsupported::FixedSharedMemory {
                region: region.id.clone(),
            });
        }
        if let Some(u) = region.users.iter().find(|u| u.domain == boot) {
            return Err(Unsupported::LinkToBootDomain {
                domain: name(u.domain),
            });
        }
    }
    if cfg.evtchns_of(boot).next().is_some() {
        return Err(Unsupported::LinkToBootDomain { domain: name(boot) });
    }
    Ok(())
}

/// What domB does when `dc` crashes, with times in counter ticks
/// (`ticks_per_ms` of them a millisecond).
pub fn on_crash(dc: &DomainConfig, ticks_per_ms: u64) -> OnCrash {
    let ms = |ms: u64| -> Time { ms.saturating_mul(ticks_per_ms) };
    match dc.on_crash {
        config::OnCrash::Stop => OnCrash::Stop,
        config::OnCrash::Reboot => OnCrash::Reboot,
        config::OnCrash::Restart => {
            let base = ms(u64::from(
                dc.restart_backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS),
            ));
            OnCrash::Restart(RestartPolicy {
                base_delay: base,
                max_delay: base.saturating_mul(BACKOFF_CAP_FACTOR),
                stable_after: ms(STABLE_AFTER_MS),
                max_restarts: MAX_RESTARTS,
                window: ms(RESTART_WINDOW_MS),
            })
        }
    }
}

/// The id domB builds description domain `i` with: its `domid`.
fn domid_of(cfg: &SystemConfig, i: usize) -> u16 {
    cfg.domains.get(i).map_or(0, |d| d.domid)
}

/// Why `CreateDomain` cannot carry description domain `ci` as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateError {
    /// No such domain.
    NoDomain,
    /// Its name or label does not fit the ABI's field.
    TooLong(&'static str),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::NoDomain => f.write_str("no such domain in the description"),
            CreateError::TooLong(what) => write!(f, "its {what} is too long for CreateDomain"),
        }
    }
}

/// The `CreateDomain` that makes description domain `ci`: its name,
/// label, vCPUs and `domid`; the id of its device model
/// (`tessera,device-model`, or first in `tessera,devices`), which the
/// kernel then lets alone serve it and waits for before it runs it
/// (with `CREATE_VPL011` when that device model emulates its PL011, so
/// the console focus finds it); its `tessera,pcpus`; and, for a device
/// model that serves a domain and whose `on-crash` is `"restart"`,
/// `CREATE_RESTARTS`, so the kernel keeps the domains it serves waiting for
/// its next generation when it crashes, instead of stopping them.
pub fn create_request(cfg: &SystemConfig, ci: usize) -> Result<CreateDomain, CreateError> {
    use zerocopy::FromZeros;
    let dc = cfg.domains.get(ci).ok_or(CreateError::NoDomain)?;
    let mut req = CreateDomain::new_zeroed();
    req.vcpus = dc.vcpus.into();
    req.domid = dc.domid.into();
    let fill = |field: &mut [u8], text: &str, what| {
        field
            .get_mut(..text.len())
            .ok_or(CreateError::TooLong(what))?
            .copy_from_slice(text.as_bytes());
        Ok(())
    };
    fill(&mut req.name[..NAME_LEN], &dc.name, "name")?;
    fill(
        &mut req.label[..LABEL_LEN],
        &dc.security_label,
        "security label",
    )?;
    let mut flags = 0;
    if let Some(server) = dc.device_model {
        req.device_model = domid_of(cfg, server).into();
        if dc.vpl011 {
            flags |= CREATE_VPL011;
        }
    }
    if restarts_with_clients(cfg, ci) {
        flags |= CREATE_RESTARTS;
    }
    req.flags = flags.into();
    let pins = req
        .pcpus
        .get_mut(..dc.pcpus.len())
        .ok_or(CreateError::TooLong("pin list"))?;
    for (dst, &pin) in pins.iter_mut().zip(&dc.pcpus) {
        // The parser keeps every pin below 64.
        *dst = u8::try_from(pin).map_err(|_| CreateError::TooLong("pin list"))?;
    }
    req.nr_pcpus = (dc.pcpus.len().min(MAX_PINS) as u16).into();
    Ok(req)
}

/// Whether description domain `ci` is a device model that serves a domain
/// and is restarted when it crashes: the domains it serves then wait for
/// its next generation.
pub fn restarts_with_clients(cfg: &SystemConfig, ci: usize) -> bool {
    let restarts = cfg
        .domains
        .get(ci)
        .is_some_and(|d| d.on_crash == config::OnCrash::Restart);
    restarts && cfg.domains.iter().any(|d| d.device_model == Some(ci))
}

/// The description domains device model `ci` serves.
pub fn clients_of(cfg: &SystemConfig, ci: usize) -> impl Iterator<Item = usize> + '_ {
    cfg.domains
        .iter()
        .enumerate()
        .filter(move |(_, d)| d.device_model == Some(ci))
        .map(|(i, _)| i)
}

/// Why the kernel refused a pinned domain's `CreateDomain`, as a sentence
/// naming its pins: `None` when the error is not about them.
pub fn pin_refusal(dc: &DomainConfig, error: Errno) -> Option<PinRefusal<'_>> {
    let why = match error {
        Errno::Enxio => "the board has no such pCPU",
        Errno::Ebusy => "another domain's vCPU runs on one of them",
        _ => return None,
    };
    (!dc.pcpus.is_empty()).then_some(PinRefusal {
        pins: &dc.pcpus,
        why,
    })
}

/// See [`pin_refusal`]: `tessera,pcpus = <1 3> cannot be honoured: ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinRefusal<'a> {
    pins: &'a [u32],
    why: &'static str,
}

impl fmt::Display for PinRefusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tessera,pcpus = <")?;
        for (n, pin) in self.pins.iter().enumerate() {
            if n > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{pin}")?;
        }
        write!(f, "> cannot be honoured: {}", self.why)
    }
}

/// Writes description domain `ci`'s device tree, for `layout`, into `out`
/// and returns its size: the parameters the kernel's dom0less loader uses
/// (`load_domain`): its RAM, vCPUs, bootargs, initrd, PL011, virtio slots,
/// Xen `/hypervisor` node, shared-memory regions and, for a device model,
/// the domains it serves (by the ids domB gives them, their `domid`s).
pub fn write_guest_dt(
    cfg: &SystemConfig,
    ci: usize,
    layout: &Layout,
    out: &mut [u8],
) -> Result<usize, DtWriteError> {
    let dc = cfg
        .domains
        .get(ci)
        .ok_or(DtWriteError::InvalidParameter("domain"))?;
    let params = GuestDtParams {
        ram_base: tessera_ipc::platform::RAM_BASE,
        ram_size: layout.ram_bytes,
        vcpus: dc.vcpus,
        bootargs: &dc.bootargs,
        initrd: layout.initrd,
        vpl011: dc.vpl011,
        virtio_slots: dc.virtio.len() as u32,
    };
    let shm = cfg.guest_shm(ci);
    let served = cfg.served_by(ci, |j| domid_of(cfg, j));
    let xen = XenGuestNodes {
        hypervisor: dc.xen_enhanced,
        shm: &shm,
        served: &served,
    };
    guest_dt::build_guest_dt_with(&params, &xen, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout;
    use tessera_sysdesc::config::parse_system;
    use tessera_sysdesc::fdt_writer::FdtWriter;

    fn cells(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    /// Properties of a node: (name, value).
    type Props = Vec<(&'static str, Vec<u8>)>;

    /// A domain node: name, extra properties, bootargs and child nodes
    /// (name, compatible, properties).
    struct Node {
        name: &'static str,
        props: Props,
        bootargs: &'static str,
        children: Vec<(&'static str, &'static str, Props)>,
    }

    fn node(name: &'static str, bootargs: &'static str) -> Node {
        Node {
            name,
            props: vec![],
            bootargs,
            children: vec![],
        }
    }

    impl Node {
        fn prop(mut self, name: &'static str, value: Vec<u8>) -> Self {
            self.props.push((name, value));
            self
        }
        fn string(self, name: &'static str, value: &str) -> Self {
            let mut v = value.as_bytes().to_vec();
            v.push(0);
            self.prop(name, v)
        }
        fn evtchn(mut self, phandle: u32, port: u32, peer: u32) -> Self {
            self.children.push((
                "evtchn",
                "xen,evtchn-v1",
                vec![
                    ("phandle", cells(&[phandle])),
                    ("xen,evtchn", cells(&[port, peer])),
                ],
            ));
            self
        }
        fn shm(mut self, id: &str, mem: &[u32]) -> Self {
            let mut id = id.as_bytes().to_vec();
            id.push(0);
            self.children.push((
                "shm",
                "xen,domain-shared-memory-v1",
                vec![("xen,shm-id", id), ("xen,shared-mem", cells(mem))],
            ));
            self
        }
    }

    fn system(nodes: &[Node]) -> SystemConfig {
        let mut buf = vec![0u8; 64 * 1024];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 2).unwrap();
        w.begin_node("chosen").unwrap();
        for n in nodes {
            w.begin_node(n.name).unwrap();
            w.property_strings("compatible", &["xen,domain"]).unwrap();
            w.property_u32("#address-cells", 1).unwrap();
            w.property_u32("#size-cells", 1).unwrap();
            w.property("memory", &cells(&[0, 0x4000])).unwrap();
            w.property_u32("cpus", 1).unwrap();
            for (name, value) in &n.props {
                w.property(name, value).unwrap();
            }
            w.begin_node("module@0").unwrap();
            w.property_strings("compatible", &["multiboot,kernel", "multiboot,module"])
                .unwrap();
            w.property_string("tessera,module", "testguest").unwrap();
            w.property_string("bootargs", n.bootargs).unwrap();
            w.end_node().unwrap();
            for (name, compatible, props) in &n.children {
                w.begin_node(name).unwrap();
                w.property_string("compatible", compatible).unwrap();
                for (p, v) in props {
                    w.property(p, v).unwrap();
                }
                w.end_node().unwrap();
            }
            w.end_node().unwrap();
        }
        w.end_node().unwrap();
        w.end_node().unwrap();
        let n = w.finish().unwrap();
        parse_system(&buf[..n]).unwrap()
    }

    /// domB, then "pong" (boot-order 2) and "ping" (boot-order 1) joined
    /// by a channel and a region.
    fn pingpong() -> SystemConfig {
        system(&[
            node("domb", "").string("functions", "boot"),
            node("pong", "test=pong")
                .prop("boot-order", cells(&[2]))
                .evtchn(2, 9, 1)
                .shm("pp", &[0x3000_0000, 0x10000]),
            node("ping", "test=ping")
                .prop("boot-order", cells(&[1]))
                .evtchn(1, 5, 2)
                .shm("pp", &[0x2000_0000, 0x10000]),
        ])
    }

    #[test]
    fn domains_are_built_in_boot_order_without_the_boot_domain() {
        let cfg = pingpong();
        let h = Hyperlaunch::new(&cfg, &cfg.boot_order().unwrap()).unwrap();
        assert_eq!(h.boot, 0);
        assert_eq!(h.order.as_slice(), &[2, 1], "ping, then pong");
        assert_eq!(
            h.links.as_slice(),
            &[LinkSpec {
                kind: LinkKind::EventChannel,
                service: 0,
                client: 1
            }]
        );
        assert_eq!(h.link_evtchn.as_slice(), &[0]);
        let specs = h.specs(&cfg);
        assert_eq!(specs.len(), 2);
        assert_eq!(
            (specs[0].name, specs[0].memory_bytes, specs[0].regions),
            ("ping", 16 << 20, [0].as_slice())
        );
        assert_eq!(specs[0].label, config::DEFAULT_SECURITY_LABEL);
        assert_eq!(specs[1].payloads, KERNEL_ONLY);
        assert!(crate::plan::Plan::new(&specs, &h.links).is_ok());
        let peers: Vec<_> = h.peers(&cfg).collect();
        assert_eq!(peers, [(0, 1), (1, 0)], "the channel, then the region");
        assert_eq!(h.domain(&cfg, 1).map(|d| d.name.as_str()), Some("pong"));
        assert!(h.domain(&cfg, 2).is_none());
    }

    #[test]
    fn what_domb_cannot_build_is_refused_by_name() {
        let no_boot = system(&[node("a", "")]);
        assert_eq!(
            Hyperlaunch::new(&no_boot, &[0]).err(),
            Some(Unsupported::NoBootDomain)
        );
        let fixed = system(&[
            node("domb", "").string("functions", "boot"),
            node("a", "").shm("r", &[0x7f00_0000, 0x2000_0000, 0x1000]),
        ]);
        let err = Hyperlaunch::new(&fixed, &[0, 1]).unwrap_err();
        assert_eq!(
            err,
            Unsupported::FixedSharedMemory {
                region: "r".try_into().unwrap()
            }
        );
        assert!(err.to_string().contains("two-value"));
        let linked = system(&[
            node("domb", "").string("functions", "boot").evtchn(1, 3, 2),
            node("a", "").evtchn(2, 4, 1),
        ]);
        assert_eq!(
            Hyperlaunch::new(&linked, &[0, 1]).err(),
            Some(Unsupported::LinkToBootDomain {
                domain: "domb".try_into().unwrap()
            })
        );
    }

    /// domB (d5, last in the tree), a device model and two guests it
    /// serves, the second pinned; and an unserved guest. The second names
    /// its device model in hyperlaunch's spelling, `tessera,devices`.
    fn served() -> SystemConfig {
        system(&[
            node("guest1", "")
                .string("tessera,device-model", "dm")
                .prop("vpl011", vec![])
                .string("tessera,virtio", "rng"),
            node("dm", ""),
            node("guest2", "")
                .string("tessera,devices", "dm")
                .prop("tessera,pcpus", cells(&[1])),
            node("plain", ""),
            node("domb", "")
                .string("functions", "boot")
                .prop("domid", cells(&[7])),
        ])
    }

    #[test]
    fn a_device_model_restarted_on_a_crash_keeps_its_domains_waiting() {
        let cfg = system(&[
            node("guest", "").string("tessera,device-model", "dm"),
            node("dm", "").string("on-crash", "restart"),
            node("lonely", "").string("on-crash", "restart"),
            node("domb", "").string("functions", "boot"),
        ]);
        let dm = create_request(&cfg, 1).unwrap();
        assert_eq!(dm.flags.get(), CREATE_RESTARTS);
        assert!(restarts_with_clients(&cfg, 1));
        assert_eq!(
            create_request(&cfg, 2).unwrap().flags.get(),
            0,
            "serves no one"
        );
        assert_eq!(create_request(&cfg, 0).unwrap().flags.get(), 0);
        let stops = served();
        assert!(!restarts_with_clients(&stops, 1), "on-crash is stop");
    }

    #[test]
    fn device_models_are_built_before_what_they_serve() {
        let cfg = served();
        let h = Hyperlaunch::new(&cfg, &cfg.boot_order().unwrap()).unwrap();
        let dm = h.order.iter().position(|&i| i == 1).unwrap();
        for guest in [0, 2] {
            let g = h.order.iter().position(|&i| i == guest).unwrap();
            assert!(dm < g, "the device model first");
        }
    }

    #[test]
    fn a_create_names_the_device_model_and_the_pins() {
        let cfg = served();
        let ids: Vec<u16> = cfg.domains.iter().map(|d| d.domid).collect();
        assert_eq!(ids, [1, 2, 3, 4, 7]);
        let g1 = create_request(&cfg, 0).unwrap();
        assert_eq!(g1.device_model.get(), 2, "dm's domid");
        assert_eq!(g1.flags.get(), CREATE_VPL011, "its PL011 is emulated");
        assert_eq!((g1.nr_pcpus.get(), g1.domid.get()), (0, 1));
        assert_eq!(&g1.name[..7], b"guest1\0");
        assert!(g1
            .label
            .starts_with(config::DEFAULT_SECURITY_LABEL.as_bytes()));
        let g2 = create_request(&cfg, 2).unwrap();
        assert_eq!((g2.device_model.get(), g2.flags.get()), (2, 0));
        assert_eq!(g2.nr_pcpus.get(), 1);
        assert_eq!(g2.pcpus, [1, 0, 0, 0, 0, 0, 0, 0]);
        let dm = create_request(&cfg, 1).unwrap();
        assert_eq!((dm.device_model.get(), dm.flags.get()), (0, 0));
        assert_eq!(clients_of(&cfg, 1).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(clients_of(&cfg, 0).count(), 0);
        assert_eq!(create_request(&cfg, 9).err(), Some(CreateError::NoDomain));
        assert!(CreateError::TooLong("name").to_string().contains("name"));
    }

    #[test]
    fn a_refused_pin_is_explained_with_the_pins() {
        let cfg = served();
        let pinned = &cfg.domains[2];
        assert_eq!(
            pin_refusal(pinned, Errno::Enxio).unwrap().to_string(),
            "tessera,pcpus = <1> cannot be honoured: the board has no such pCPU"
        );
        assert_eq!(
            pin_refusal(pinned, Errno::Ebusy).unwrap().to_string(),
            "tessera,pcpus = <1> cannot be honoured: another domain's vCPU runs on one of them"
        );
        assert_eq!(pin_refusal(pinned, Errno::Eacces), None, "not about pins");
        assert_eq!(pin_refusal(&cfg.domains[0], Errno::Enxio), None, "no pins");
    }

    #[test]
    fn a_device_models_dt_lists_what_it_serves_as_the_kernel_writes_it() {
        let cfg = served();
        let kernel = [0u8; 0x1000];
        let l = layout::layout(16 << 20, &kernel, None).unwrap();
        let mut ours = vec![0u8; 64 * 1024];
        let n = write_guest_dt(&cfg, 1, &l, &mut ours).unwrap();
        // What the kernel's loader passes for a device model: the same
        // helper, with the ids this build gives.
        let served = cfg.served_by(1, |j| cfg.domains[j].domid);
        assert_eq!(served.len(), 2);
        let params = GuestDtParams {
            ram_base: tessera_ipc::platform::RAM_BASE,
            ram_size: 16 << 20,
            vcpus: 1,
            bootargs: "",
            initrd: None,
            vpl011: false,
            virtio_slots: 0,
        };
        let xen = XenGuestNodes {
            hypervisor: false,
            shm: &[],
            served: &served,
        };
        let mut theirs = vec![0u8; 64 * 1024];
        let m = guest_dt::build_guest_dt_with(&params, &xen, &mut theirs).unwrap();
        assert_eq!(ours[..n], theirs[..m]);
        let fdt = fdt::Fdt::new(&ours[..n]).unwrap();
        let node = fdt.find_node("/tessera-ioreq/domain@3").unwrap();
        let name = node.property("tessera,name").and_then(|p| p.as_str());
        assert_eq!(name, Some("guest2"));
        assert!(fdt.find_node("/tessera-ioreq/domain@1").is_some());
        assert!(fdt.find_node("/tessera-ioreq/domain@4").is_none());
        // A guest's own DT has no such node.
        let n = write_guest_dt(&cfg, 0, &l, &mut ours).unwrap();
        let fdt = fdt::Fdt::new(&ours[..n]).unwrap();
        assert!(fdt.find_node("/tessera-ioreq").is_none());
    }

    #[test]
    fn on_crash_becomes_a_supervisor_policy_in_ticks() {
        let cfg = system(&[
            node("a", ""),
            node("b", "")
                .string("on-crash", "restart")
                .prop("tessera,restart-backoff-ms", cells(&[250])),
            node("c", "").string("on-crash", "restart"),
            node("d", "").string("on-crash", "reboot"),
        ]);
        let policy = |i: usize| on_crash(&cfg.domains[i], 1000);
        assert_eq!(policy(0), OnCrash::Stop);
        assert_eq!(policy(3), OnCrash::Reboot);
        let OnCrash::Restart(b) = policy(1) else {
            panic!("b restarts")
        };
        assert_eq!(b.base_delay, 250_000);
        assert_eq!(b.max_delay, 250_000 * BACKOFF_CAP_FACTOR);
        assert!(b.validate().is_ok());
        let OnCrash::Restart(c) = policy(2) else {
            panic!("c restarts")
        };
        assert_eq!(c.base_delay, u64::from(DEFAULT_BACKOFF_MS) * 1000);
        assert_eq!(c.window, RESTART_WINDOW_MS * 1000);
    }

    #[test]
    fn the_guest_dt_is_what_the_kernel_writes_for_the_same_domain() {
        let cfg = pingpong();
        let kernel = [0u8; 0x1000];
        let l = layout::layout(16 << 20, &kernel, None).unwrap();
        let mut ours = vec![0u8; 64 * 1024];
        let n = write_guest_dt(&cfg, 2, &l, &mut ours).unwrap();
        // The kernel's `load_domain` parameters for the same domain.
        let shm = [guest_dt::GuestShm {
            id: "pp",
            guest_base: 0x2000_0000,
            size: 0x10000,
        }];
        let params = GuestDtParams {
            ram_base: tessera_ipc::platform::RAM_BASE,
            ram_size: 16 << 20,
            vcpus: 1,
            bootargs: "test=ping",
            initrd: None,
            vpl011: false,
            virtio_slots: 0,
        };
        let xen = XenGuestNodes {
            hypervisor: false,
            shm: &shm,
            served: &[],
        };
        let mut theirs = vec![0u8; 64 * 1024];
        let m = guest_dt::build_guest_dt_with(&params, &xen, &mut theirs).unwrap();
        assert_eq!(ours[..n], theirs[..m]);
        assert!(write_guest_dt(&cfg, 9, &l, &mut ours).is_err());
    }
}
