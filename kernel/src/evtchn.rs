//! Event channels with Xen's 2-level semantics (`xen/common/event_channel.c`,
//! `event_2l.c`; the `shared_info`/`vcpu_info` layouts are in the Xen PV notes).
//!
//! A domain has a table of ports. A port is free, unbound (waiting for a
//! named peer), bound to a port of another domain, to a VIRQ, or to an IPI,
//! and notifies one of its domain's vCPUs. Delivery is the 2-level protocol
//! on the guest's `shared_info`: set the port's pending bit; if the port is
//! unmasked and its selector bit in the vCPU's `vcpu_info` goes 0→1, raise
//! `evtchn_upcall_pending`, and only when *that* goes 0→1 inject the upcall
//! interrupt. The bitmaps live in guest memory, so they are reached through
//! the [`EventBits`] trait; this module never touches memory itself.

use tessera_ipc::errno::Errno;

/// Ports per domain (an ABI fact, so it lives in `tessera_ipc`).
pub use tessera_ipc::event_channel::MAX_PORTS;
/// Number of VIRQs a port may bind (Xen's NR_VIRQS).
pub const NR_VIRQS: u32 = 24;
/// A domain id.
pub type DomId = u16;

/// What a port is connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    /// Not allocated. Port 0 stays free forever, as in Xen.
    Free,
    /// Allocated, waiting for `remote` to bind to it.
    Unbound { remote: DomId },
    /// Connected to `remote_port` of `remote`.
    Interdomain { remote: DomId, remote_port: u32 },
    /// Raised by the hypervisor for virtual IRQ `virq`.
    Virq { virq: u32 },
    /// An IPI between the domain's own vCPUs.
    Ipi,
}

/// One port: its connection and the vCPU it notifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub state: PortState,
    pub vcpu: u32,
}

const FREE: Port = Port {
    state: PortState::Free,
    vcpu: 0,
};

/// A domain's ports.
pub struct PortTable {
    ports: [Port; MAX_PORTS],
    nr_vcpus: u32,
}

/// Where a send goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendTarget {
    /// Mark `port` pending in the sender's own domain (IPI, VIRQ, loopback).
    Local { port: u32, vcpu: u32 },
    /// Mark `port` pending in domain `dom`; the caller looks up the vCPU there.
    Remote { dom: DomId, port: u32 },
}

impl PortTable {
    /// An empty table for a domain with `nr_vcpus` vCPUs.
    pub const fn new(nr_vcpus: u32) -> Self {
        Self {
            ports: [FREE; MAX_PORTS],
            nr_vcpus,
        }
    }

    /// Empty the table in place (the table is large; it is never moved)
    /// for a domain with `nr_vcpus` vCPUs.
    pub fn reset(&mut self, nr_vcpus: u32) {
        self.ports = [FREE; MAX_PORTS];
        self.nr_vcpus = nr_vcpus;
    }

    /// Bind a port chosen by the system description (`xen,evtchn-v1`) to
    /// `remote_port` of `remote`, before the domain runs. The port must be
    /// free and a real port (not 0).
    pub fn install_static(
        &mut self,
        port: u32,
        remote: DomId,
        remote_port: u32,
    ) -> Result<(), Errno> {
        if port == 0 || remote_port == 0 || remote_port as usize >= MAX_PORTS {
            return Err(Errno::Einval);
        }
        let p = self.get_mut(port)?;
        if p.state != PortState::Free {
            return Err(Errno::Eexist);
        }
        *p = Port {
            state: PortState::Interdomain {
                remote,
                remote_port,
            },
            vcpu: 0,
        };
        Ok(())
    }

    /// Every port connected to another domain: (port, remote, remote port).
    pub fn interdomain_ports(&self) -> impl Iterator<Item = (u32, DomId, u32)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(n, p)| match p.state {
                PortState::Interdomain {
                    remote,
                    remote_port,
                } => Some((n as u32, remote, remote_port)),
                _ => None,
            })
    }

    /// Free `port` whatever it is bound to, without touching a peer (the
    /// caller has already told the peer, see [`PortTable::interdomain_ports`]).
    pub fn free(&mut self, port: u32) {
        if let Ok(p) = self.get_mut(port) {
            *p = FREE;
        }
    }

    /// The port, if it exists (allocated or not).
    pub fn get(&self, port: u32) -> Option<&Port> {
        self.ports.get(port as usize)
    }

    fn get_mut(&mut self, port: u32) -> Result<&mut Port, Errno> {
        self.ports.get_mut(port as usize).ok_or(Errno::Einval)
    }

    fn check_vcpu(&self, vcpu: u32) -> Result<(), Errno> {
        if vcpu < self.nr_vcpus {
            Ok(())
        } else {
            Err(Errno::Enoent)
        }
    }

    fn alloc(&mut self, state: PortState, vcpu: u32) -> Result<u32, Errno> {
        // Port 0 is never handed out: Linux treats 0 as "no port".
        let n = self
            .ports
            .iter()
            .skip(1)
            .position(|p| p.state == PortState::Free)
            .ok_or(Errno::Enospc)?
            + 1;
        let slot = self.ports.get_mut(n).ok_or(Errno::Enospc)?;
        *slot = Port { state, vcpu };
        Ok(n as u32)
    }

    /// EVTCHNOP_alloc_unbound: a port that `remote` may later bind to.
    pub fn alloc_unbound(&mut self, remote: DomId) -> Result<u32, Errno> {
        self.alloc(PortState::Unbound { remote }, 0)
    }

    /// EVTCHNOP_bind_virq: one port per (VIRQ, vCPU).
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, Errno> {
        if virq >= NR_VIRQS {
            return Err(Errno::Einval);
        }
        self.check_vcpu(vcpu)?;
        if self
            .ports
            .iter()
            .any(|p| p.state == PortState::Virq { virq } && p.vcpu == vcpu)
        {
            return Err(Errno::Eexist);
        }
        self.alloc(PortState::Virq { virq }, vcpu)
    }

    /// The port bound to `virq` on `vcpu`, for raising it.
    pub fn virq_port(&self, virq: u32, vcpu: u32) -> Option<u32> {
        self.ports
            .iter()
            .position(|p| p.state == PortState::Virq { virq } && p.vcpu == vcpu)
            .map(|n| n as u32)
    }

    /// EVTCHNOP_bind_ipi.
    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<u32, Errno> {
        self.check_vcpu(vcpu)?;
        self.alloc(PortState::Ipi, vcpu)
    }

    /// EVTCHNOP_bind_vcpu: notify another vCPU. Only VIRQs of global kind
    /// and interdomain/unbound ports may move, as in Xen; IPIs may not.
    pub fn bind_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), Errno> {
        self.check_vcpu(vcpu)?;
        let p = self.get_mut(port)?;
        match p.state {
            PortState::Free => Err(Errno::Einval),
            PortState::Ipi | PortState::Virq { .. } => Err(Errno::Einval),
            PortState::Unbound { .. } | PortState::Interdomain { .. } => {
                p.vcpu = vcpu;
                Ok(())
            }
        }
    }

    /// EVTCHNOP_status.
    pub fn status(&self, port: u32) -> Result<Port, Errno> {
        self.get(port).copied().ok_or(Errno::Einval)
    }

    /// EVTCHNOP_send: where the notification goes. Unbound or free ports
    /// cannot send (Xen returns -EINVAL for unbound; a free port is invalid).
    pub fn send(&self, own: DomId, port: u32) -> Result<SendTarget, Errno> {
        let p = self.get(port).ok_or(Errno::Einval)?;
        match p.state {
            PortState::Interdomain {
                remote,
                remote_port,
            } if remote == own => {
                let vcpu = self.get(remote_port).map(|r| r.vcpu).ok_or(Errno::Einval)?;
                Ok(SendTarget::Local {
                    port: remote_port,
                    vcpu,
                })
            }
            PortState::Interdomain {
                remote,
                remote_port,
            } => Ok(SendTarget::Remote {
                dom: remote,
                port: remote_port,
            }),
            PortState::Ipi => Ok(SendTarget::Local { port, vcpu: p.vcpu }),
            // A guest cannot raise its own VIRQs; sending on one is a no-op, as in Xen.
            PortState::Virq { .. } => Err(Errno::Einval),
            PortState::Unbound { .. } | PortState::Free => Err(Errno::Einval),
        }
    }

    /// Close a port. Returns the remote end that must go back to unbound
    /// (`Unbound { remote: own }`) in the peer's table.
    pub fn close(&mut self, own: DomId, port: u32) -> Result<Option<(DomId, u32)>, Errno> {
        if port == 0 {
            return Err(Errno::Einval);
        }
        let p = self.get_mut(port)?;
        let peer = match p.state {
            PortState::Free => return Err(Errno::Einval),
            PortState::Interdomain {
                remote,
                remote_port,
            } => Some((remote, remote_port)),
            _ => None,
        };
        *p = FREE;
        if let Some((remote, remote_port)) = peer {
            if remote == own {
                // Loopback: both ends are ours.
                if let Ok(r) = self.get_mut(remote_port) {
                    r.state = PortState::Unbound { remote: own };
                }
                return Ok(None);
            }
        }
        Ok(peer)
    }

    /// The peer closed its end of `port`: go back to waiting for it.
    pub fn peer_closed(&mut self, port: u32, peer: DomId) {
        if let Ok(p) = self.get_mut(port) {
            if matches!(p.state, PortState::Interdomain { remote, .. } if remote == peer) {
                p.state = PortState::Unbound { remote: peer };
            }
        }
    }

    /// Check that `remote_port` here is unbound and waiting for `binder`.
    pub fn check_bindable(&self, remote_port: u32, binder: DomId) -> Result<(), Errno> {
        match self.get(remote_port).map(|p| p.state) {
            Some(PortState::Unbound { remote }) if remote == binder => Ok(()),
            _ => Err(Errno::Einval),
        }
    }

    /// Complete a bind on the remote side (after `check_bindable`).
    pub fn connect(&mut self, port: u32, remote: DomId, remote_port: u32) -> Result<(), Errno> {
        let p = self.get_mut(port)?;
        p.state = PortState::Interdomain {
            remote,
            remote_port,
        };
        Ok(())
    }

    /// Allocate the local end of a bind to (`remote`, `remote_port`).
    pub fn alloc_connected(&mut self, remote: DomId, remote_port: u32) -> Result<u32, Errno> {
        self.alloc(
            PortState::Interdomain {
                remote,
                remote_port,
            },
            0,
        )
    }
}

/// EVTCHNOP_bind_interdomain between two different domains, validate then
/// act: nothing changes unless both ends can be connected.
pub fn bind_interdomain(
    local: &mut PortTable,
    local_dom: DomId,
    remote: &mut PortTable,
    remote_dom: DomId,
    remote_port: u32,
) -> Result<u32, Errno> {
    remote.check_bindable(remote_port, local_dom)?;
    let port = local.alloc_connected(remote_dom, remote_port)?;
    remote.connect(remote_port, local_dom, port)?;
    Ok(port)
}

/// EVTCHNOP_bind_interdomain to a port of the caller's own domain.
pub fn bind_loopback(table: &mut PortTable, dom: DomId, remote_port: u32) -> Result<u32, Errno> {
    table.check_bindable(remote_port, dom)?;
    let port = table.alloc_connected(dom, remote_port)?;
    table.connect(remote_port, dom, port)?;
    Ok(port)
}

/// A domain's 2-level event bitmaps (`shared_info`) and per-vCPU
/// `vcpu_info`, wherever they live.
pub trait EventBits {
    /// Set pending bit `port`; returns whether it was already set.
    fn test_and_set_pending(&mut self, port: u32) -> bool;
    /// Whether pending bit `port` is set.
    fn is_pending(&self, port: u32) -> bool;
    /// Whether mask bit `port` is set.
    fn is_masked(&self, port: u32) -> bool;
    /// Clear mask bit `port`.
    fn clear_mask(&mut self, port: u32);
    /// Set selector bit `word` in `vcpu`'s `evtchn_pending_sel`; returns
    /// whether it was already set.
    fn test_and_set_selector(&mut self, vcpu: u32, word: u32) -> bool;
    /// Set `vcpu`'s `evtchn_upcall_pending`; returns whether it was already set.
    fn test_and_set_upcall(&mut self, vcpu: u32) -> bool;
}

/// The selector/upcall step: returns whether the upcall interrupt must be
/// injected into `vcpu` (only on the 0→1 edge of `evtchn_upcall_pending`).
fn raise(bits: &mut impl EventBits, port: u32, vcpu: u32) -> bool {
    if bits.is_masked(port) || bits.test_and_set_selector(vcpu, port / 64) {
        return false;
    }
    !bits.test_and_set_upcall(vcpu)
}

/// Mark `port` pending for `vcpu`. Returns whether to inject the upcall.
pub fn set_pending(bits: &mut impl EventBits, port: u32, vcpu: u32) -> bool {
    if port as usize >= MAX_PORTS || bits.test_and_set_pending(port) {
        return false;
    }
    raise(bits, port, vcpu)
}

/// EVTCHNOP_unmask: clear the mask and, if the port is pending, redo the
/// selector/upcall step (Linux relies on this). Returns whether to inject.
pub fn unmask(bits: &mut impl EventBits, port: u32, vcpu: u32) -> bool {
    if port as usize >= MAX_PORTS {
        return false;
    }
    bits.clear_mask(port);
    bits.is_pending(port) && raise(bits, port, vcpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2-level bitmaps in plain arrays.
    struct Bits {
        pending: [u64; 64],
        mask: [u64; 64],
        sel: [u64; 4],
        upcall: [bool; 4],
    }

    impl Bits {
        fn new() -> Self {
            Self {
                pending: [0; 64],
                mask: [0; 64],
                sel: [0; 4],
                upcall: [false; 4],
            }
        }
    }

    impl EventBits for Bits {
        fn test_and_set_pending(&mut self, port: u32) -> bool {
            let (w, b) = ((port / 64) as usize, port % 64);
            let was = self.pending[w] & (1 << b) != 0;
            self.pending[w] |= 1 << b;
            was
        }
        fn is_pending(&self, port: u32) -> bool {
            self.pending[(port / 64) as usize] & (1 << (port % 64)) != 0
        }
        fn is_masked(&self, port: u32) -> bool {
            self.mask[(port / 64) as usize] & (1 << (port % 64)) != 0
        }
        fn clear_mask(&mut self, port: u32) {
            self.mask[(port / 64) as usize] &= !(1 << (port % 64));
        }
        fn test_and_set_selector(&mut self, vcpu: u32, word: u32) -> bool {
            let was = self.sel[vcpu as usize] & (1 << word) != 0;
            self.sel[vcpu as usize] |= 1 << word;
            was
        }
        fn test_and_set_upcall(&mut self, vcpu: u32) -> bool {
            core::mem::replace(&mut self.upcall[vcpu as usize], true)
        }
    }

    #[test]
    fn interdomain_bind_send_close() {
        let (mut a, mut b) = (PortTable::new(1), PortTable::new(2));
        let pb = b.alloc_unbound(1).unwrap();
        assert_eq!(pb, 1, "port 0 is never allocated");
        // Only the named domain may bind.
        let mut c = PortTable::new(1);
        assert_eq!(
            bind_interdomain(&mut c, 3, &mut b, 2, pb),
            Err(Errno::Einval)
        );
        let pa = bind_interdomain(&mut a, 1, &mut b, 2, pb).unwrap();
        assert_eq!(a.send(1, pa), Ok(SendTarget::Remote { dom: 2, port: pb }));
        assert_eq!(b.send(2, pb), Ok(SendTarget::Remote { dom: 1, port: pa }));
        // A second bind to the same port fails.
        assert_eq!(
            bind_interdomain(&mut c, 1, &mut b, 2, pb),
            Err(Errno::Einval)
        );
        assert_eq!(a.close(1, pa), Ok(Some((2, pb))));
        b.peer_closed(pb, 1);
        assert_eq!(
            b.status(pb).unwrap().state,
            PortState::Unbound { remote: 1 }
        );
        assert_eq!(
            a.send(1, pa),
            Err(Errno::Einval),
            "a closed port cannot send"
        );
        assert_eq!(a.close(1, pa), Err(Errno::Einval));
    }

    #[test]
    fn static_ports_are_installed_once_and_listed_for_teardown() {
        let mut t = PortTable::new(1);
        assert_eq!(t.install_static(10, 2, 11), Ok(()));
        assert_eq!(t.install_static(10, 2, 12), Err(Errno::Eexist));
        assert_eq!(t.install_static(0, 2, 12), Err(Errno::Einval));
        assert_eq!(t.install_static(11, 2, 0), Err(Errno::Einval));
        assert_eq!(t.install_static(MAX_PORTS as u32, 2, 1), Err(Errno::Einval));
        assert_eq!(
            t.install_static(12, 2, MAX_PORTS as u32),
            Err(Errno::Einval)
        );
        assert_eq!(t.send(1, 10), Ok(SendTarget::Remote { dom: 2, port: 11 }));
        let p = t.bind_ipi(0).unwrap();
        assert_eq!(t.interdomain_ports().collect::<Vec<_>>(), vec![(10, 2, 11)]);
        t.free(10);
        assert_eq!(t.send(1, 10), Err(Errno::Einval));
        t.reset(1);
        assert_eq!(t.send(1, p), Err(Errno::Einval), "reset frees every port");
    }

    #[test]
    fn cannot_send_on_ports_not_owned_or_not_bound() {
        let t = PortTable::new(1);
        assert_eq!(t.send(1, 5), Err(Errno::Einval));
        assert_eq!(t.send(1, u32::MAX), Err(Errno::Einval));
        let mut t = PortTable::new(1);
        let p = t.alloc_unbound(2).unwrap();
        assert_eq!(t.send(1, p), Err(Errno::Einval));
    }

    #[test]
    fn loopback_and_ipi_are_local() {
        let mut t = PortTable::new(2);
        let p = t.alloc_unbound(7).unwrap();
        let q = bind_loopback(&mut t, 7, p).unwrap();
        assert_eq!(t.send(7, q), Ok(SendTarget::Local { port: p, vcpu: 0 }));
        assert_eq!(t.close(7, q), Ok(None));
        assert_eq!(t.status(p).unwrap().state, PortState::Unbound { remote: 7 });
        let i = t.bind_ipi(1).unwrap();
        assert_eq!(t.send(7, i), Ok(SendTarget::Local { port: i, vcpu: 1 }));
        assert_eq!(t.bind_ipi(2), Err(Errno::Enoent));
    }

    #[test]
    fn virqs_are_unique_per_vcpu() {
        let mut t = PortTable::new(2);
        let p = t.bind_virq(1, 0).unwrap();
        assert_eq!(t.bind_virq(1, 0), Err(Errno::Eexist));
        let q = t.bind_virq(1, 1).unwrap();
        assert_ne!(p, q);
        assert_eq!(t.virq_port(1, 1), Some(q));
        assert_eq!(t.bind_virq(NR_VIRQS, 0), Err(Errno::Einval));
        assert_eq!(t.send(0, p), Err(Errno::Einval));
    }

    #[test]
    fn bind_vcpu_moves_interdomain_ports_only() {
        let mut t = PortTable::new(2);
        let p = t.alloc_unbound(3).unwrap();
        t.bind_vcpu(p, 1).unwrap();
        assert_eq!(t.status(p).unwrap().vcpu, 1);
        assert_eq!(t.bind_vcpu(p, 2), Err(Errno::Enoent));
        let i = t.bind_ipi(0).unwrap();
        assert_eq!(t.bind_vcpu(i, 1), Err(Errno::Einval));
        assert_eq!(t.bind_vcpu(999, 0), Err(Errno::Einval));
    }

    #[test]
    fn table_fills_up_cleanly() {
        let mut t = PortTable::new(1);
        for _ in 1..MAX_PORTS {
            t.alloc_unbound(2).unwrap();
        }
        assert_eq!(t.alloc_unbound(2), Err(Errno::Enospc));
        t.close(0, 17).unwrap();
        assert_eq!(t.alloc_unbound(2), Ok(17));
    }

    #[test]
    fn two_level_delivery_injects_on_edges_only() {
        let mut bits = Bits::new();
        assert!(set_pending(&mut bits, 70, 1), "first event injects");
        assert!(!set_pending(&mut bits, 70, 1), "already pending");
        assert!(!set_pending(&mut bits, 71, 1), "selector already set");
        assert_eq!(bits.sel[1], 1 << 1);
        // The guest clears its upcall flag and selector, then a new event injects again.
        bits.upcall[1] = false;
        bits.sel[1] = 0;
        bits.pending[1] = 0;
        assert!(set_pending(&mut bits, 65, 1));
        assert!(
            !set_pending(&mut bits, MAX_PORTS as u32, 0),
            "out of range ports are ignored"
        );
    }

    #[test]
    fn masked_ports_stay_pending_until_unmasked() {
        let mut bits = Bits::new();
        bits.mask[0] = 1 << 5;
        assert!(!set_pending(&mut bits, 5, 0));
        assert!(bits.is_pending(5));
        assert_eq!(bits.sel[0], 0);
        assert!(
            unmask(&mut bits, 5, 0),
            "unmask of a pending port raises the upcall"
        );
        assert!(
            !unmask(&mut bits, 6, 0),
            "unmask of an idle port does nothing"
        );
        assert!(!unmask(&mut bits, u32::MAX, 0));
    }
}
