//! Static links between domains, from Xen's dom0less bindings
//! (`docs/misc/arm/device-tree/booting.txt`, "Static Event Channel" and
//! "Static Shared Memory"):
//!
//! - a `xen,evtchn-v1` child of a domain node holds
//!   `xen,evtchn = <local-port &peer>`, where `peer` is the phandle of the
//!   matching node in another domain, which must name this one back;
//! - a `xen,domain-shared-memory-v1` child holds `xen,shm-id`, an optional
//!   `role` and `xen,shared-mem = <[host-base] guest-base size>` in the
//!   domain node's `#address-cells`/`#size-cells`. Both forms are accepted,
//!   as in current Xen: with the host base the region is fixed host memory;
//!   without it the builder allocates it. Nodes with one `xen,shm-id` are
//!   one region.
//!
//! The one idea: a link is validated from both ends before it is kept, and
//! nothing is stored per node while parsing. Nodes are found again by
//! walking the blob (a few thousand nodes at most), so the boot stack holds
//! only the result, and an error can still name both nodes it concerns.
//!
//! Deliberately stricter than Xen: `xen,evtchn` must be exactly two cells
//! (Xen ignores extra ones), and every node of one `xen,shm-id` must give
//! the same host base or none (Xen's answer depends on node order).

use tessera_ipc::platform::{
    EXT_REGION_BASE, EXT_REGION_SIZE, GICD_BASE, GICD_SIZE, GICR_BASE, GICR_STRIDE, GNTTAB_BASE,
    GNTTAB_SIZE, MAGIC_BASE, MAGIC_SIZE, MAX_VCPUS_PER_DOMAIN, PL011_BASE, PL011_SIZE, RAM_BASE,
    VIRTIO_MMIO_BASE, VIRTIO_MMIO_STRIDE,
};

use super::{
    error, ConfigError, ConfigErrorKind, DomainConfig, EvtchnEnd, MemRange, SharedMem, ShmUser,
    StaticEvtchn, MAX_SHM, MAX_SHM_ID, MAX_STATIC_EVTCHNS, SHM_ALIGN, STAGE2_IPA_LIMIT,
};
use crate::dtb::{self, is_compatible, prop, string_value, u32_value, Cells, Node, NodePath};
use tessera_ipc::event_channel::MAX_PORTS;

const COMPAT_EVTCHN: &str = "xen,evtchn-v1";
const COMPAT_SHM: &str = "xen,domain-shared-memory-v1";
const P_EVTCHN: &str = "xen,evtchn";
const P_PHANDLE: &str = "phandle";
const P_LINUX_PHANDLE: &str = "linux,phandle";
const P_SHM_ID: &str = "xen,shm-id";
const P_ROLE: &str = "role";
const P_SHARED_MEM: &str = "xen,shared-mem";

/// virtio-mmio slots on QEMU `virt` (`NUM_VIRTIO_TRANSPORTS`); the window
/// the device model may serve.
const VIRTIO_MMIO_SLOTS: u64 = 32;

/// The parsed domains and their nodes, index for index.
pub(super) struct Domains<'x, 'b, 'a> {
    pub nodes: &'x [Node<'b, 'a>],
    pub paths: &'x [NodePath],
    pub configs: &'x [DomainConfig],
}

impl<'b, 'a> Domains<'_, 'b, 'a> {
    fn child_path(&self, domain: usize, name: &str) -> NodePath {
        self.paths
            .get(domain)
            .map(|p| p.child(name))
            .unwrap_or_default()
    }

    fn domain_path(&self, domain: usize) -> NodePath {
        self.paths.get(domain).cloned().unwrap_or_default()
    }

    /// Every child of domain `domain` compatible with `compat`, in order.
    fn children_of(
        &self,
        domain: usize,
        compat: &'static str,
    ) -> impl Iterator<Item = Node<'b, 'a>> + '_ {
        self.nodes
            .get(domain)
            .into_iter()
            .flat_map(move |n| n.children().filter(move |c| is_compatible(c, compat)))
    }
}

// ---------------------------------------------------------------------------
// Event channels

/// A `xen,evtchn-v1` node: its domain and its position among that domain's
/// evtchn nodes, which together identify it.
#[derive(Clone, Copy)]
struct EvtchnNode<'b, 'a> {
    domain: usize,
    ordinal: usize,
    node: Node<'b, 'a>,
}

impl EvtchnNode<'_, '_> {
    fn same_node(&self, other: &Self) -> bool {
        self.domain == other.domain && self.ordinal == other.ordinal
    }
}

fn evtchn_nodes<'x, 'b, 'a>(
    domains: &'x Domains<'x, 'b, 'a>,
) -> impl Iterator<Item = EvtchnNode<'b, 'a>> + 'x {
    (0..domains.nodes.len()).flat_map(move |domain| {
        domains
            .children_of(domain, COMPAT_EVTCHN)
            .enumerate()
            .map(move |(ordinal, node)| EvtchnNode {
                domain,
                ordinal,
                node,
            })
    })
}

/// `xen,evtchn` as (local port, peer phandle), with the port checked.
fn read_evtchn(node: &Node<'_, '_>, path: &NodePath) -> Result<(u32, u32), ConfigError> {
    let fail = |kind| error(path, Some(P_EVTCHN), kind);
    let value = prop(node, P_EVTCHN).ok_or_else(|| fail(ConfigErrorKind::EvtchnMissing))?;
    let bad_length = || fail(ConfigErrorKind::EvtchnBadLength { len: value.len() });
    if value.len() != 8 {
        return Err(bad_length());
    }
    let port = dtb::cells_value(value, 0, 1).ok_or_else(bad_length)? as u32;
    let peer = dtb::cells_value(value, 4, 1).ok_or_else(bad_length)? as u32;
    if port == 0 || port as usize >= MAX_PORTS {
        return Err(fail(ConfigErrorKind::EvtchnPortOutOfRange { port }));
    }
    Ok((port, peer))
}

/// The node's phandle, if it has a well-formed one. `phandle` wins over
/// the legacy `linux,phandle`, as in Linux and Xen.
fn phandle(node: &Node<'_, '_>, path: &NodePath) -> Result<Option<u32>, ConfigError> {
    for name in [P_PHANDLE, P_LINUX_PHANDLE] {
        if let Some(value) = prop(node, name) {
            return u32_value(value)
                .map(Some)
                .ok_or_else(|| error(path, Some(name), ConfigErrorKind::EvtchnBadPhandle));
        }
    }
    Ok(None)
}

/// The first evtchn node with phandle `wanted`. A malformed phandle matches
/// nothing; that node reports it when its own turn comes.
fn find_by_phandle<'b, 'a>(
    domains: &Domains<'_, 'b, 'a>,
    wanted: u32,
) -> Option<EvtchnNode<'b, 'a>> {
    evtchn_nodes(domains).find(|e| {
        phandle(&e.node, &NodePath::default())
            .ok()
            .flatten()
            .is_some_and(|p| p == wanted)
    })
}

pub(super) fn parse_evtchns(
    domains: &Domains<'_, '_, '_>,
) -> Result<heapless::Vec<StaticEvtchn, MAX_STATIC_EVTCHNS>, ConfigError> {
    // Each channel takes two nodes. Bounding the count first also bounds
    // the pairwise searches below.
    if let Some(e) = evtchn_nodes(domains).nth(2 * MAX_STATIC_EVTCHNS) {
        let path = domains.child_path(e.domain, e.node.name());
        return Err(error(&path, None, ConfigErrorKind::TooManyEvtchns));
    }

    let mut channels = heapless::Vec::new();
    for e in evtchn_nodes(domains) {
        let path = domains.child_path(e.domain, e.node.name());
        let (port, peer_phandle) = read_evtchn(&e.node, &path)?;
        let own_phandle = phandle(&e.node, &path)?;

        // Earlier siblings were read successfully on their own turn.
        let same_port = evtchn_nodes(domains)
            .take_while(|s| !s.same_node(&e))
            .filter(|s| s.domain == e.domain)
            .find(|s| read_evtchn(&s.node, &NodePath::default()).is_ok_and(|(p, _)| p == port));
        if let Some(s) = same_port {
            let other = domains.child_path(s.domain, s.node.name());
            return Err(error(
                &path,
                Some(P_EVTCHN),
                ConfigErrorKind::EvtchnDuplicatePort { port, other },
            ));
        }

        let peer = find_by_phandle(domains, peer_phandle).ok_or_else(|| {
            error(
                &path,
                Some(P_EVTCHN),
                ConfigErrorKind::EvtchnPeerNotFound {
                    phandle: peer_phandle,
                },
            )
        })?;
        let peer_path = domains.child_path(peer.domain, peer.node.name());
        if peer.domain == e.domain {
            return Err(error(
                &path,
                Some(P_EVTCHN),
                ConfigErrorKind::EvtchnPeerSameDomain { peer: peer_path },
            ));
        }
        let (peer_port, back) = read_evtchn(&peer.node, &peer_path)?;
        let points_back = own_phandle.is_some()
            && find_by_phandle(domains, back).is_some_and(|b| b.same_node(&e));
        if !points_back {
            return Err(error(
                &path,
                Some(P_EVTCHN),
                ConfigErrorKind::EvtchnNotReciprocal { peer: peer_path },
            ));
        }

        // Both ends check the pair; the end in the earlier domain keeps it.
        if e.domain < peer.domain {
            let channel = StaticEvtchn {
                a: EvtchnEnd {
                    domain: e.domain,
                    port,
                },
                b: EvtchnEnd {
                    domain: peer.domain,
                    port: peer_port,
                },
            };
            channels
                .push(channel)
                .map_err(|_| error(&path, None, ConfigErrorKind::TooManyEvtchns))?;
        }
    }
    Ok(channels)
}

// ---------------------------------------------------------------------------
// Shared memory

/// One `xen,domain-shared-memory-v1` node, checked on its own.
struct ShmNode {
    id: heapless::String<MAX_SHM_ID>,
    owner: bool,
    host_base: Option<u64>,
    guest_base: u64,
    size: u64,
}

fn read_shm_id(
    node: &Node<'_, '_>,
    path: &NodePath,
) -> Result<heapless::String<MAX_SHM_ID>, ConfigError> {
    let fail = |kind| error(path, Some(P_SHM_ID), kind);
    let value = prop(node, P_SHM_ID).ok_or_else(|| fail(ConfigErrorKind::ShmIdMissing))?;
    let text = string_value(value).ok_or_else(|| fail(ConfigErrorKind::ShmIdNotString))?;
    if text.is_empty() {
        return Err(fail(ConfigErrorKind::ShmIdEmpty));
    }
    // One byte of Xen's limit is the NUL.
    if text.len() >= MAX_SHM_ID {
        return Err(fail(ConfigErrorKind::ShmIdTooLong { len: text.len() }));
    }
    heapless::String::try_from(text)
        .map_err(|_| fail(ConfigErrorKind::ShmIdTooLong { len: text.len() }))
}

fn read_shm(node: &Node<'_, '_>, path: &NodePath, cells: Cells) -> Result<ShmNode, ConfigError> {
    let id = read_shm_id(node, path)?;
    let owner = match prop(node, P_ROLE).map(string_value) {
        None | Some(Some("borrower")) => false,
        Some(Some("owner")) => true,
        Some(_) => return Err(error(path, Some(P_ROLE), ConfigErrorKind::ShmRoleInvalid)),
    };

    let fail = |kind| error(path, Some(P_SHARED_MEM), kind);
    let value = prop(node, P_SHARED_MEM).ok_or_else(|| fail(ConfigErrorKind::ShmMissing))?;
    if !(1..=2).contains(&cells.address) || !(1..=2).contains(&cells.size) {
        return Err(fail(ConfigErrorKind::ShmCellsUnsupported {
            address: cells.address,
            size: cells.size,
        }));
    }
    let addr_bytes = cells.address as usize * 4;
    let size_bytes = cells.size as usize * 4;
    let with_host = 2 * addr_bytes + size_bytes;
    let without_host = addr_bytes + size_bytes;
    let bad_length = || {
        fail(ConfigErrorKind::ShmBadLength {
            len: value.len(),
            with_host,
            without_host,
        })
    };
    let (host_base, guest_at) = if value.len() == with_host {
        let host = dtb::cells_value(value, 0, cells.address).ok_or_else(bad_length)?;
        (Some(host), addr_bytes)
    } else if value.len() == without_host {
        (None, 0)
    } else {
        return Err(bad_length());
    };
    let guest_base = dtb::cells_value(value, guest_at, cells.address).ok_or_else(bad_length)?;
    let size = dtb::cells_value(value, guest_at + addr_bytes, cells.size).ok_or_else(bad_length)?;

    if size == 0 {
        return Err(fail(ConfigErrorKind::ShmSizeZero));
    }
    let misaligned = [
        ("host address", host_base.unwrap_or(0)),
        ("guest address", guest_base),
        ("size", size),
    ]
    .into_iter()
    .find(|(_, v)| !v.is_multiple_of(SHM_ALIGN));
    if let Some((what, value)) = misaligned {
        return Err(fail(ConfigErrorKind::ShmMisaligned { what, value }));
    }
    if let Some(base) = host_base {
        if base.checked_add(size).is_none() {
            return Err(fail(ConfigErrorKind::ShmHostOverflow { base, size }));
        }
    }
    let in_range = guest_base
        .checked_add(size)
        .is_some_and(|end| end <= STAGE2_IPA_LIMIT);
    if !in_range {
        return Err(fail(ConfigErrorKind::ShmGuestOutOfRange {
            base: guest_base,
            size,
        }));
    }
    Ok(ShmNode {
        id,
        owner,
        host_base,
        guest_base,
        size,
    })
}

/// Guest-physical windows a region must stay clear of, besides RAM. The
/// redistributor window is the largest any domain can have.
const FIXED_WINDOWS: [(&str, u64, u64); 7] = [
    ("GIC distributor", GICD_BASE, GICD_SIZE),
    (
        "GIC redistributors",
        GICR_BASE,
        MAX_VCPUS_PER_DOMAIN as u64 * GICR_STRIDE,
    ),
    ("PL011", PL011_BASE, PL011_SIZE),
    (
        "virtio-mmio window",
        VIRTIO_MMIO_BASE,
        VIRTIO_MMIO_SLOTS * VIRTIO_MMIO_STRIDE,
    ),
    ("grant-table window", GNTTAB_BASE, GNTTAB_SIZE),
    ("special-page window", MAGIC_BASE, MAGIC_SIZE),
    ("extended region", EXT_REGION_BASE, EXT_REGION_SIZE),
];

fn check_guest_windows(
    s: &ShmNode,
    domain: &DomainConfig,
    path: &NodePath,
) -> Result<(), ConfigError> {
    let range = MemRange {
        base: s.guest_base,
        size: s.size,
    };
    let ram = ("guest RAM", RAM_BASE, domain.memory_bytes);
    let clash = core::iter::once(ram)
        .chain(FIXED_WINDOWS)
        .find(|(_, base, size)| {
            range.overlaps(&MemRange {
                base: *base,
                size: *size,
            })
        });
    match clash {
        Some((window, _, _)) => Err(error(
            path,
            Some(P_SHARED_MEM),
            ConfigErrorKind::ShmGuestOverlapsWindow {
                window,
                base: s.guest_base,
                size: s.size,
            },
        )),
        None => Ok(()),
    }
}

/// The first node of domain `domain` that uses region `id` (for errors).
fn shm_node_path(domains: &Domains<'_, '_, '_>, domain: usize, id: &str) -> NodePath {
    domains
        .children_of(domain, COMPAT_SHM)
        .find(|n| prop(n, P_SHM_ID).and_then(string_value) == Some(id))
        .map(|n| domains.child_path(domain, n.name()))
        .unwrap_or_else(|| domains.domain_path(domain))
}

pub(super) fn parse_shm(
    domains: &Domains<'_, '_, '_>,
) -> Result<heapless::Vec<SharedMem, MAX_SHM>, ConfigError> {
    let mut regions = heapless::Vec::<SharedMem, MAX_SHM>::new();
    for (d, (node, config)) in domains.nodes.iter().zip(domains.configs).enumerate() {
        let cells = Cells::of(node);
        for child in domains.children_of(d, COMPAT_SHM) {
            let path = domains.child_path(d, child.name());
            let s = read_shm(&child, &path, cells)?;
            check_guest_windows(&s, config, &path)?;
            check_against_own_regions(domains, &regions, d, &s, &path)?;

            let fail = |kind| error(&path, Some(P_SHARED_MEM), kind);
            let user = ShmUser {
                domain: d,
                guest_base: s.guest_base,
                owner: s.owner,
            };
            if let Some(region) = regions.iter_mut().find(|r| r.id == s.id) {
                let first = || {
                    let first_user = region.users.first().map_or(d, |u| u.domain);
                    shm_node_path(domains, first_user, &s.id)
                };
                if region.size != s.size {
                    return Err(fail(ConfigErrorKind::ShmSizeMismatch {
                        size: s.size,
                        expected: region.size,
                        other: first(),
                    }));
                }
                if region.host_base != s.host_base {
                    return Err(fail(ConfigErrorKind::ShmHostBaseMismatch {
                        other: first(),
                    }));
                }
                if let Some(owner) = region.users.iter().find(|u| u.owner && s.owner) {
                    let other = shm_node_path(domains, owner.domain, &s.id);
                    return Err(error(
                        &path,
                        Some(P_ROLE),
                        ConfigErrorKind::ShmMultipleOwners { other },
                    ));
                }
                region
                    .users
                    .push(user)
                    .map_err(|_| error(&path, None, ConfigErrorKind::TooManyShmUsers))?;
            } else {
                check_host_range(domains, &regions, &s, &path)?;
                let mut users = heapless::Vec::new();
                // A new vector has room for one.
                let _ = users.push(user);
                let region = SharedMem {
                    id: s.id,
                    size: s.size,
                    host_base: s.host_base,
                    users,
                };
                regions
                    .push(region)
                    .map_err(|_| error(&path, None, ConfigErrorKind::TooManyShm))?;
            }
        }
    }
    Ok(regions)
}

/// A domain maps each region once, and its regions do not overlap.
fn check_against_own_regions(
    domains: &Domains<'_, '_, '_>,
    regions: &[SharedMem],
    domain: usize,
    s: &ShmNode,
    path: &NodePath,
) -> Result<(), ConfigError> {
    let range = MemRange {
        base: s.guest_base,
        size: s.size,
    };
    for region in regions {
        let Some(mine) = region.users.iter().find(|u| u.domain == domain) else {
            continue;
        };
        let other = || shm_node_path(domains, domain, &region.id);
        if region.id == s.id {
            return Err(error(
                path,
                Some(P_SHM_ID),
                ConfigErrorKind::ShmDuplicateId { other: other() },
            ));
        }
        let theirs = MemRange {
            base: mine.guest_base,
            size: region.size,
        };
        if range.overlaps(&theirs) {
            return Err(error(
                path,
                Some(P_SHARED_MEM),
                ConfigErrorKind::ShmGuestOverlap { other: other() },
            ));
        }
    }
    Ok(())
}

/// A new region's fixed host range is clear of every other region's and of
/// every domain's static memory.
fn check_host_range(
    domains: &Domains<'_, '_, '_>,
    regions: &[SharedMem],
    s: &ShmNode,
    path: &NodePath,
) -> Result<(), ConfigError> {
    let Some(base) = s.host_base else {
        return Ok(());
    };
    let range = MemRange { base, size: s.size };
    let fail = |other| {
        error(
            path,
            Some(P_SHARED_MEM),
            ConfigErrorKind::ShmHostOverlap { other },
        )
    };
    for region in regions {
        let Some(other_base) = region.host_base else {
            continue;
        };
        let theirs = MemRange {
            base: other_base,
            size: region.size,
        };
        if range.overlaps(&theirs) {
            let first = region.users.first().map_or(0, |u| u.domain);
            return Err(fail(shm_node_path(domains, first, &region.id)));
        }
    }
    let static_clash = domains
        .configs
        .iter()
        .position(|c| c.static_mem.is_some_and(|m| m.overlaps(&range)));
    if let Some(j) = static_clash {
        return Err(fail(domains.domain_path(j)));
    }
    Ok(())
}
