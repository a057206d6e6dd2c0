//! Event channels in the running system: `event_channel_op`, the
//! `shared_info` and `vcpu_info` placement calls (`memory_op`
//! add_to_physmap, `vcpu_op` register_vcpu_info), `hvm_op` parameters, and
//! the static channels of the system description.
//!
//! The port state machine is portable (`tessera_kernel::evtchn`); this file
//! supplies its bitmaps (the guest's own `shared_info` page, reached with
//! atomics because the guest changes it concurrently), the locks, the policy
//! checks and the upcall interrupt.
//!
//! `shared_info` is a page of the domain's own RAM, chosen by the guest with
//! add_to_physmap: the kernel zeroes it and uses it from then on, so the
//! guest sees exactly Xen's semantics while the kernel never maps a page of
//! its own into a guest. Events raised before the page exists are kept in a
//! shadow bitmap and land on the page when it is placed.
//!
//! Locking: one spin lock per domain's port table. An operation that changes
//! two tables (bind, close) takes both in domain-index order; a send locks
//! the sender's table to find the peer, lets go, and then re-validates under
//! the receiver's lock that the receiver's port still names the sender's
//! port, so a racing close can never deliver to the wrong port. The virtual
//! GIC lock is only taken after the table lock is dropped.

use super::console::log;
use super::trap::{copy_from_guest, copy_to_guest};
use super::{domain_id, domains, index_of, kick_owner, mac, vcpu, Domain, MAX_DOMAINS};
use crate::addr::PAGE_SIZE;
use crate::arch::aarch64::{Lock, LockGuard};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use tessera_ipc::errno::Errno;
use tessera_ipc::event_channel::{
    shared_info, vcpu_info, EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi,
    EvtchnBindVcpu, EvtchnBindVirq, EvtchnCmd, EvtchnPort, EvtchnReset, EvtchnStatus,
    EvtchnStatusKind, DOMID_SELF,
};
use tessera_ipc::memory::{
    AddToPhysmap, HvmCmd, HvmParam, MapSpace, MemoryCmd, RegisterVcpuInfo, VcpuCmd, HVM_NR_PARAMS,
};
use tessera_ipc::platform::{self, MAX_VCPUS_PER_DOMAIN};
use tessera_kernel::evtchn::{self, EventBits, PortState, PortTable, SendTarget, MAX_PORTS};
use tessera_policy::{Class, EventPerm, MmuPerm, Sid};
use zerocopy::{FromBytes, Immutable, IntoBytes};

const SHADOW_WORDS: usize = MAX_PORTS / 64;

/// A domain's event-channel state.
pub struct DomainEvents {
    ports: PortTable,
    /// Host address of the guest page that is `shared_info`, once placed.
    shared_info: Option<u64>,
    /// Host address of each vCPU's registered `vcpu_info`.
    vcpu_info: [Option<u64>; MAX_VCPUS_PER_DOMAIN],
    /// Pending bits raised before `shared_info` was placed.
    shadow: [u64; SHADOW_WORDS],
    /// Each bound port's security label (see `mac::channel_label`); a send
    /// on the port is checked against it.
    labels: [Option<Sid>; MAX_PORTS],
}

impl DomainEvents {
    const fn new() -> Self {
        Self {
            ports: PortTable::new(0),
            shared_info: None,
            vcpu_info: [None; MAX_VCPUS_PER_DOMAIN],
            shadow: [0; SHADOW_WORDS],
            labels: [None; MAX_PORTS],
        }
    }

    fn label(&mut self, port: u32, sid: Sid) {
        if let Some(l) = self.labels.get_mut(port as usize) {
            *l = Some(sid);
        }
    }

    /// Forget everything the guest placed (reboot), keeping no ports.
    fn reset(&mut self, nr_vcpus: u32) {
        self.ports.reset(nr_vcpus);
        self.shared_info = None;
        self.vcpu_info = [None; MAX_VCPUS_PER_DOMAIN];
        self.shadow = [0; SHADOW_WORDS];
        self.labels = [None; MAX_PORTS];
    }

    fn vcpu_info_of(&self, vcpu: u32) -> Option<u64> {
        match self.vcpu_info.get(vcpu as usize).copied().flatten() {
            Some(pa) => Some(pa),
            // Before registering, vCPU 0's vcpu_info is in shared_info.
            None if vcpu == 0 => self
                .shared_info
                .map(|si| si + shared_info::VCPU_INFO0 as u64),
            None => None,
        }
    }
}

static EVENTS: [Lock<DomainEvents>; MAX_DOMAINS] =
    [const { Lock::new(DomainEvents::new()) }; MAX_DOMAINS];

/// An atomic view of a guest word.
///
/// # Safety
/// `pa` must be 8-byte aligned and lie in RAM of a domain, identity-mapped
/// at EL2 (callers pass only addresses checked with `Domain::ram_pa_of`).
unsafe fn word(pa: u64) -> &'static AtomicU64 {
    // SAFETY: per the contract; atomics are the right tool for memory the
    // guest changes concurrently, and domain RAM is never unmapped.
    unsafe { &*(pa as *const AtomicU64) }
}

/// # Safety
/// As for [`word`], without the alignment requirement.
unsafe fn byte(pa: u64) -> &'static AtomicU8 {
    // SAFETY: per the contract.
    unsafe { &*(pa as *const AtomicU8) }
}

/// The 2-level bitmaps of one domain, wherever they currently are.
struct GuestBits<'a>(&'a mut DomainEvents);

impl GuestBits<'_> {
    fn locate(port: u32) -> (u64, u64) {
        (u64::from(port / 64) * 8, 1u64 << (port % 64))
    }

    /// The `shared_info` word at byte `field + off`, once the page is placed.
    fn si_word(&self, field: usize, off: u64) -> Option<&'static AtomicU64> {
        let si = self.0.shared_info?;
        // SAFETY: `shared_info` was checked to be a whole page of this
        // domain's RAM when placed; the bitmaps' `off` < 512 keeps the word
        // inside it, 8-aligned.
        Some(unsafe { word(si + field as u64 + off) })
    }
}

impl EventBits for GuestBits<'_> {
    fn test_and_set_pending(&mut self, port: u32) -> bool {
        let (off, bit) = Self::locate(port);
        if let Some(w) = self.si_word(shared_info::EVTCHN_PENDING, off) {
            return w.fetch_or(bit, Ordering::AcqRel) & bit != 0;
        }
        let Some(w) = self.0.shadow.get_mut((off / 8) as usize) else {
            return true;
        };
        let was = *w & bit != 0;
        *w |= bit;
        was
    }

    fn is_pending(&self, port: u32) -> bool {
        let (off, bit) = Self::locate(port);
        match self.si_word(shared_info::EVTCHN_PENDING, off) {
            Some(w) => w.load(Ordering::Acquire) & bit != 0,
            None => self
                .0
                .shadow
                .get((off / 8) as usize)
                .is_some_and(|w| w & bit != 0),
        }
    }

    fn is_masked(&self, port: u32) -> bool {
        let (off, bit) = Self::locate(port);
        // Nowhere to raise a selector yet: hold the event in the shadow.
        self.si_word(shared_info::EVTCHN_MASK, off)
            .is_none_or(|w| w.load(Ordering::Acquire) & bit != 0)
    }

    fn clear_mask(&mut self, port: u32) {
        let (off, bit) = Self::locate(port);
        if let Some(w) = self.si_word(shared_info::EVTCHN_MASK, off) {
            w.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    fn test_and_set_selector(&mut self, vcpu: u32, word_index: u32) -> bool {
        let Some(vi) = self.0.vcpu_info_of(vcpu) else {
            // A vCPU without vcpu_info gets no upcall (as in Xen).
            return true;
        };
        let bit = 1u64 << (word_index % 64);
        // SAFETY: vcpu_info addresses are checked (in RAM, 8-aligned, not
        // crossing a page) when registered.
        unsafe { word(vi + vcpu_info::PENDING_SEL as u64) }.fetch_or(bit, Ordering::AcqRel) & bit
            != 0
    }

    fn test_and_set_upcall(&mut self, vcpu: u32) -> bool {
        let Some(vi) = self.0.vcpu_info_of(vcpu) else {
            return true;
        };
        // SAFETY: as in `test_and_set_selector`.
        unsafe { byte(vi + vcpu_info::UPCALL_PENDING as u64) }.swap(1, Ordering::AcqRel) != 0
    }
}

/// Inject the upcall PPI into vCPU `idx` of domain `di`.
fn upcall(di: usize, idx: u32) {
    let Some(d) = domains().get(di) else { return };
    if idx as usize >= d.nr_vcpus {
        return;
    }
    let v = d.first_vcpu + idx as usize;
    d.vgic
        .lock()
        .inject(idx as usize, platform::EVTCHN_UPCALL_INTID);
    if let Some(s) = vcpu(v) {
        s.irq_hint.store(true, Ordering::Release);
    }
    kick_owner(v);
}

/// The domain a guest names: `DOMID_SELF`, its own id, or another one.
fn resolve(own: usize, id: u16) -> Result<usize, Errno> {
    if id == DOMID_SELF {
        return Ok(own);
    }
    index_of(id).ok_or(Errno::Esrch)
}

/// Lock two different domains' tables, in index order.
fn lock_pair(
    a: usize,
    b: usize,
) -> Option<(
    LockGuard<'static, DomainEvents>,
    LockGuard<'static, DomainEvents>,
)> {
    let (ea, eb) = (EVENTS.get(a)?, EVENTS.get(b)?);
    if a == b {
        return None;
    }
    Some(if a < b {
        let ga = ea.lock();
        (ga, eb.lock())
    } else {
        let gb = eb.lock();
        (ea.lock(), gb)
    })
}

fn read_arg<T: FromBytes + IntoBytes>(d: &Domain, va: u64) -> Result<T, Errno> {
    let mut v = T::new_zeroed();
    copy_from_guest(d, va, v.as_mut_bytes())?;
    Ok(v)
}

fn write_arg<T: IntoBytes + Immutable>(d: &Domain, va: u64, v: &T) -> Result<(), Errno> {
    copy_to_guest(d, va, v.as_bytes())
}

/// `event_channel_op` from vCPU `idx` of domain `di`, running on pCPU `p`.
pub fn event_channel_op(p: usize, di: usize, cmd: EvtchnCmd, arg: u64) -> Result<u64, Errno> {
    let d = domains().get(di).ok_or(Errno::Esrch)?;
    let me = domain_id(di);
    match cmd {
        EvtchnCmd::AllocUnbound => {
            let mut a: EvtchnAllocUnbound = read_arg(d, arg)?;
            if resolve(di, a.dom.get())? != di {
                return Err(Errno::Eperm);
            }
            let ri = resolve(di, a.remote_dom.get())?;
            let remote = domains().get(ri).ok_or(Errno::Esrch)?;
            let label = mac::channel_label(d.sid, remote.sid);
            // A channel to another domain needs the right on that domain
            // itself, not only on the channel's label: two domains of one
            // type must not reach each other through a `self` rule.
            if ri != di {
                mac::check(p, d.sid, remote.sid, EventPerm::Create)?;
            }
            mac::check(p, d.sid, label, EventPerm::Create)?;
            let mut ev = EVENTS[di].lock();
            let port = ev.ports.alloc_unbound(domain_id(ri))?;
            ev.label(port, label);
            drop(ev);
            a.port = port.into();
            write_arg(d, arg, &a).map(|()| 0)
        }
        EvtchnCmd::BindInterdomain => {
            let mut b: EvtchnBindInterdomain = read_arg(d, arg)?;
            let ri = resolve(di, b.remote_dom.get())?;
            let remote = domains().get(ri).ok_or(Errno::Esrch)?;
            let label = mac::channel_label(d.sid, remote.sid);
            // Loopback binds one of the domain's own channels: checked
            // against that channel's label (as IPIs and VIRQs are).
            mac::check(
                p,
                d.sid,
                if ri == di { label } else { remote.sid },
                EventPerm::Bind,
            )?;
            let rport = b.remote_port.get();
            let port = if ri == di {
                let mut ev = EVENTS[di].lock();
                let port = evtchn::bind_loopback(&mut ev.ports, me, rport)?;
                ev.label(port, label);
                port
            } else {
                let (mut mine, mut theirs) = lock_pair(di, ri).ok_or(Errno::Esrch)?;
                let port = evtchn::bind_interdomain(
                    &mut mine.ports,
                    me,
                    &mut theirs.ports,
                    domain_id(ri),
                    rport,
                )?;
                mine.label(port, label);
                port
            };
            b.local_port = port.into();
            write_arg(d, arg, &b).map(|()| 0)
        }
        EvtchnCmd::BindVirq => {
            let mut b: EvtchnBindVirq = read_arg(d, arg)?;
            let label = mac::own_label(d.sid, Class::Event);
            mac::check(p, d.sid, label, EventPerm::Create)?;
            let mut ev = EVENTS[di].lock();
            let port = ev.ports.bind_virq(b.virq.get(), b.vcpu.get())?;
            ev.label(port, label);
            drop(ev);
            b.port = port.into();
            write_arg(d, arg, &b).map(|()| 0)
        }
        EvtchnCmd::BindIpi => {
            let mut b: EvtchnBindIpi = read_arg(d, arg)?;
            let label = mac::own_label(d.sid, Class::Event);
            mac::check(p, d.sid, label, EventPerm::Create)?;
            let mut ev = EVENTS[di].lock();
            let port = ev.ports.bind_ipi(b.vcpu.get())?;
            ev.label(port, label);
            drop(ev);
            b.port = port.into();
            write_arg(d, arg, &b).map(|()| 0)
        }
        EvtchnCmd::Send => {
            let s: EvtchnPort = read_arg(d, arg)?;
            send(p, di, s.port.get()).map(|()| 0)
        }
        EvtchnCmd::Close => {
            let c: EvtchnPort = read_arg(d, arg)?;
            close(di, c.port.get()).map(|()| 0)
        }
        EvtchnCmd::Status => {
            let mut s: EvtchnStatus = read_arg(d, arg)?;
            let ti = resolve(di, s.dom.get())?;
            let target = domains().get(ti).ok_or(Errno::Esrch)?;
            // A domain's own ports are its own business (as close and
            // unmask); another domain's need `status` on that domain.
            if ti != di {
                mac::check(p, d.sid, target.sid, EventPerm::Status)?;
            }
            let port = EVENTS[ti].lock().ports.status(s.port.get())?;
            let (kind, u0, u1) = match port.state {
                PortState::Free => (EvtchnStatusKind::Closed, 0, 0),
                PortState::Unbound { remote } => (EvtchnStatusKind::Unbound, u32::from(remote), 0),
                PortState::Interdomain {
                    remote,
                    remote_port,
                } => (
                    EvtchnStatusKind::Interdomain,
                    u32::from(remote),
                    remote_port,
                ),
                PortState::Virq { virq } => (EvtchnStatusKind::Virq, virq, 0),
                PortState::Ipi => (EvtchnStatusKind::Ipi, 0, 0),
            };
            s.status = (kind as u32).into();
            s.vcpu = port.vcpu.into();
            s.u0 = u0.into();
            s.u1 = u1.into();
            write_arg(d, arg, &s).map(|()| 0)
        }
        EvtchnCmd::Unmask => {
            let u: EvtchnPort = read_arg(d, arg)?;
            let port = u.port.get();
            let mut ev = EVENTS[di].lock();
            let vcpu = ev.ports.get(port).ok_or(Errno::Einval)?.vcpu;
            let inject = evtchn::unmask(&mut GuestBits(&mut ev), port, vcpu);
            drop(ev);
            if inject {
                upcall(di, vcpu);
            }
            Ok(0)
        }
        EvtchnCmd::BindVcpu => {
            let b: EvtchnBindVcpu = read_arg(d, arg)?;
            EVENTS[di]
                .lock()
                .ports
                .bind_vcpu(b.port.get(), b.vcpu.get())
                .map(|()| 0)
        }
        EvtchnCmd::Reset => {
            let r: EvtchnReset = read_arg(d, arg)?;
            if resolve(di, r.dom.get())? != di {
                return Err(Errno::Eperm);
            }
            mac::check(
                p,
                d.sid,
                mac::own_label(d.sid, Class::Event),
                EventPerm::Reset,
            )?;
            close_all(di);
            Ok(0)
        }
        // Only the 2-level ABI is offered; Linux falls back to it.
        EvtchnCmd::InitControl => Err(Errno::Enosys),
    }
}

/// Raise `port` of domain `di` (already validated as the receiving end).
fn deliver(ev: &mut DomainEvents, port: u32, vcpu: u32) -> bool {
    evtchn::set_pending(&mut GuestBits(ev), port, vcpu)
}

/// Raise domain `di`'s port bound to `virq` on vCPU `vcpu`, if it bound one
/// (the kernel's own events to a domain, like Xen's VIRQs).
pub fn raise_virq(di: usize, virq: u32, vcpu: u32) {
    let mut ev = EVENTS[di].lock();
    let Some(port) = ev.ports.virq_port(virq, vcpu) else {
        return;
    };
    let inject = deliver(&mut ev, port, vcpu);
    drop(ev);
    if inject && domains().get(di).is_some_and(|d| d.is_running()) {
        upcall(di, vcpu);
    }
}

/// Raise port `port` of domain `di` as its peer's send would: a builder
/// bound it again to a rebuilt peer, and the domain hears so.
pub fn raise_port(di: usize, port: u32) {
    let Some(events) = EVENTS.get(di) else { return };
    let mut ev = events.lock();
    let Some(vcpu) = ev.ports.get(port).map(|p| p.vcpu) else {
        return;
    };
    let inject = deliver(&mut ev, port, vcpu);
    drop(ev);
    if inject && domains().get(di).is_some_and(|d| d.is_running()) {
        upcall(di, vcpu);
    }
}

/// EVTCHNOP_send from domain `di`.
fn send(p: usize, di: usize, port: u32) -> Result<(), Errno> {
    let d = domains().get(di).ok_or(Errno::Esrch)?;
    let me = domain_id(di);
    let (target, label) = {
        let ev = EVENTS[di].lock();
        let target = ev.ports.send(me, port)?;
        (target, ev.labels.get(port as usize).copied().flatten())
    };
    match target {
        SendTarget::Local { port, vcpu } => {
            mac::check(p, d.sid, label.unwrap_or(d.sid), EventPerm::Send)?;
            let inject = deliver(&mut EVENTS[di].lock(), port, vcpu);
            if inject {
                upcall(di, vcpu);
            }
        }
        SendTarget::Remote { dom, port: rport } => {
            let ri = index_of(dom).ok_or(Errno::Einval)?;
            let remote = domains().get(ri).ok_or(Errno::Einval)?;
            mac::check(p, d.sid, label.unwrap_or(remote.sid), EventPerm::Send)?;
            let mut ev = EVENTS[ri].lock();
            // The receiver's table is the authority: its port must still be
            // connected to exactly this port of ours.
            let rp = ev.ports.get(rport).copied().ok_or(Errno::Einval)?;
            if rp.state
                != (PortState::Interdomain {
                    remote: me,
                    remote_port: port,
                })
            {
                return Err(Errno::Einval);
            }
            let inject = deliver(&mut ev, rport, rp.vcpu);
            drop(ev);
            if inject && remote.is_running() {
                upcall(ri, rp.vcpu);
            }
        }
    }
    Ok(())
}

/// EVTCHNOP_close of `port` in domain `di`; the peer's end goes back to
/// unbound, waiting for us, as in Xen.
fn close(di: usize, port: u32) -> Result<(), Errno> {
    let me = domain_id(di);
    loop {
        // The guard must be gone before either arm locks again.
        let state = EVENTS[di].lock().ports.get(port).map(|p| p.state);
        let peer = match state {
            Some(PortState::Interdomain { remote, .. }) if remote != me => remote,
            _ => {
                // Not connected to another domain: one table changes.
                return EVENTS[di].lock().ports.close(me, port).map(|_| ());
            }
        };
        let pi = index_of(peer).ok_or(Errno::Einval)?;
        let (mut mine, mut theirs) = lock_pair(di, pi).ok_or(Errno::Einval)?;
        // Re-validate under both locks; if it changed, start again.
        if !matches!(mine.ports.get(port).map(|p| p.state),
            Some(PortState::Interdomain { remote, .. }) if remote == peer)
        {
            continue;
        }
        if let Some((_, rport)) = mine.ports.close(me, port)? {
            theirs.ports.peer_closed(rport, me);
        }
        return Ok(());
    }
}

/// Close every port of domain `di`, telling peers (EVTCHNOP_reset, and a
/// domain that stops or restarts).
pub fn close_all(di: usize) {
    for port in 1..MAX_PORTS as u32 {
        let live = EVENTS[di]
            .lock()
            .ports
            .get(port)
            .is_some_and(|p| p.state != PortState::Free);
        if live {
            let _ = close(di, port);
            // Ports that cannot be closed normally (never the case for a
            // valid table) are freed outright.
            EVENTS[di].lock().ports.free(port);
        }
    }
}

/// Domain `di` runs again after a pause: an upcall raised while it was
/// paused was left pending in its `vcpu_info` without reaching its virtual
/// GIC (see `send`), so raise it now.
pub fn resume_upcalls(di: usize, nr_vcpus: usize) {
    let Some(ev) = EVENTS.get(di) else { return };
    let mut raise: heapless::Vec<u32, MAX_VCPUS_PER_DOMAIN> = heapless::Vec::new();
    {
        let ev = ev.lock();
        for idx in 0..nr_vcpus.min(MAX_VCPUS_PER_DOMAIN) as u32 {
            let Some(vi) = ev.vcpu_info_of(idx) else {
                continue;
            };
            // SAFETY: a registered or default `vcpu_info` address, checked
            // to be this domain's RAM when placed (as in `GuestBits`).
            let pending =
                unsafe { byte(vi + vcpu_info::UPCALL_PENDING as u64) }.load(Ordering::Acquire);
            if pending != 0 {
                let _ = raise.push(idx);
            }
        }
    }
    for idx in raise {
        upcall(di, idx);
    }
}

/// Domain `di`'s table at build: empty, sized for its vCPUs.
pub fn init_domain(di: usize, nr_vcpus: usize) {
    if let Some(ev) = EVENTS.get(di) {
        ev.lock().reset(nr_vcpus as u32);
    }
}

/// Domain `di` stopped or is restarting: its ports close (peers' ends go
/// back to waiting for it) and what the guest placed is forgotten.
pub fn domain_stopped(di: usize, nr_vcpus: usize) {
    if di >= EVENTS.len() {
        return;
    }
    close_all(di);
    EVENTS[di].lock().reset(nr_vcpus as u32);
}

/// Bind one static channel end pair (`xen,evtchn-v1`) before the domains
/// run, or again after one of them restarts. A peer end that is still
/// waiting for us is reconnected; the result says, per end (a, b), whether
/// it was (its peer came back), as opposed to bound for the first time or
/// already bound.
pub fn install_static(a: usize, pa: u32, b: usize, pb: u32) -> Result<[bool; 2], Errno> {
    let (Some(da), Some(db)) = (domains().get(a), domains().get(b)) else {
        return Err(Errno::Esrch);
    };
    let (la, lb) = (
        mac::channel_label(da.sid, db.sid),
        mac::channel_label(db.sid, da.sid),
    );
    if [pa, pb].iter().any(|&p| p == 0 || p as usize >= MAX_PORTS) {
        return Err(Errno::Einval);
    }
    let (mut ea, mut eb) = lock_pair(a, b).ok_or(Errno::Einval)?;
    let (ia, ib) = (domain_id(a), domain_id(b));
    // Both ends are checked before either changes, so a refused link
    // leaves both tables as they were.
    let mut install = [false; 2];
    let mut reconnected = [false; 2];
    for (n, (ev, port, peer, pport)) in [(&*ea, pa, ib, pb), (&*eb, pb, ia, pa)]
        .into_iter()
        .enumerate()
    {
        install[n] = match ev.ports.get(port).map(|p| p.state) {
            Some(PortState::Free) => true,
            Some(PortState::Unbound { remote }) if remote == peer => {
                reconnected[n] = true;
                true
            }
            Some(PortState::Interdomain {
                remote,
                remote_port,
            }) if remote == peer && remote_port == pport => false,
            _ => return Err(Errno::Eexist),
        };
    }
    for (n, (ev, port, peer, pport)) in [(&mut *ea, pa, ib, pb), (&mut *eb, pb, ia, pa)]
        .into_iter()
        .enumerate()
    {
        if install[n] {
            ev.ports.free(port);
            ev.ports.install_static(port, peer, pport)?;
        }
    }
    ea.label(pa, la);
    eb.label(pb, lb);
    Ok(reconnected)
}

/// `memory_op` from domain `di`.
pub fn memory_op(p: usize, di: usize, cmd: MemoryCmd, arg: u64) -> Result<u64, Errno> {
    let d = domains().get(di).ok_or(Errno::Esrch)?;
    match cmd {
        MemoryCmd::AddToPhysmap => {
            let a: AddToPhysmap = read_arg(d, arg)?;
            if resolve(di, a.domid.get())? != di {
                return Err(Errno::Eperm);
            }
            match MapSpace::try_from(u64::from(a.space.get())) {
                Ok(MapSpace::SharedInfo) => {
                    if a.idx.get() != 0 {
                        return Err(Errno::Einval);
                    }
                    mac::check(p, d.sid, d.sid, MmuPerm::Physmap)?;
                    place_shared_info(di, d, a.gpfn.get())
                }
                Ok(MapSpace::GrantTable) => {
                    super::grant::add_to_physmap(p, di, a.idx.get(), a.gpfn.get())
                }
                Err(_) => Err(Errno::Enosys),
            }
            .map(|()| 0)
        }
    }
}

fn place_shared_info(di: usize, d: &Domain, gpfn: u64) -> Result<(), Errno> {
    let ipa = gpfn.checked_mul(PAGE_SIZE).ok_or(Errno::Einval)?;
    let pa = d.ram_pa_of(ipa, PAGE_SIZE).ok_or(Errno::Einval)?;
    let mut ev = EVENTS[di].lock();
    let old = ev.shared_info;
    // SAFETY: `pa` is a whole page of this domain's RAM (checked above);
    // byte copies, as the guest may be writing to it.
    unsafe {
        match old {
            // Moving it keeps its contents, as a remapped page would.
            Some(from) if from != pa => {
                core::ptr::copy_nonoverlapping(from as *const u8, pa as *mut u8, PAGE_SIZE as usize)
            }
            Some(_) => {}
            None => core::ptr::write_bytes(pa as *mut u8, 0, PAGE_SIZE as usize),
        }
    }
    ev.shared_info = Some(pa);
    if old.is_some() {
        return Ok(());
    }
    // Events raised before the page existed land on it now.
    let shadow = core::mem::replace(&mut ev.shadow, [0; SHADOW_WORDS]);
    let mut raise: heapless::Vec<u32, MAX_VCPUS_PER_DOMAIN> = heapless::Vec::new();
    for (w, bits) in shadow.iter().enumerate() {
        let mut bits = *bits;
        while bits != 0 {
            let port = (w * 64) as u32 + bits.trailing_zeros();
            bits &= bits - 1;
            let vcpu = ev.ports.get(port).map_or(0, |p| p.vcpu);
            if deliver(&mut ev, port, vcpu) && !raise.contains(&vcpu) {
                let _ = raise.push(vcpu);
            }
        }
    }
    drop(ev);
    for vcpu in raise {
        upcall(di, vcpu);
    }
    Ok(())
}

/// `vcpu_op` from domain `di`.
pub fn vcpu_op(p: usize, di: usize, cmd: VcpuCmd, target: u32, arg: u64) -> Result<u64, Errno> {
    let d = domains().get(di).ok_or(Errno::Esrch)?;
    if target as usize >= d.nr_vcpus {
        return Err(Errno::Enoent);
    }
    match cmd {
        VcpuCmd::RegisterVcpuInfo => {
            let r: RegisterVcpuInfo = read_arg(d, arg)?;
            let offset = u64::from(r.offset.get());
            if offset % 8 != 0 || offset + vcpu_info::SIZE as u64 > PAGE_SIZE {
                return Err(Errno::Einval);
            }
            let ipa = r.mfn.get().checked_mul(PAGE_SIZE).ok_or(Errno::Einval)? + offset;
            let pa = d
                .ram_pa_of(ipa, vcpu_info::SIZE as u64)
                .ok_or(Errno::Einval)?;
            mac::check(p, d.sid, d.sid, MmuPerm::Physmap)?;
            let mut ev = EVENTS[di].lock();
            let slot = ev.vcpu_info.get(target as usize).ok_or(Errno::Enoent)?;
            if slot.is_some() {
                return Err(Errno::Ebusy);
            }
            let mut copy = [0u8; vcpu_info::SIZE];
            if let Some(old) = ev.vcpu_info_of(target) {
                // SAFETY: `old` is a checked vcpu_info of this domain.
                unsafe {
                    core::ptr::copy_nonoverlapping(old as *const u8, copy.as_mut_ptr(), copy.len())
                };
            }
            // SAFETY: `pa..pa+48` is this domain's RAM (checked above).
            unsafe { core::ptr::copy_nonoverlapping(copy.as_ptr(), pa as *mut u8, copy.len()) };
            if let Some(s) = ev.vcpu_info.get_mut(target as usize) {
                *s = Some(pa);
            }
            // As Xen does: every selector set, and an upcall, so the guest
            // scans for whatever was pending across the move.
            // SAFETY: just checked, 8-aligned.
            unsafe { word(pa + vcpu_info::PENDING_SEL as u64) }.store(!0, Ordering::Release);
            // SAFETY: as above.
            let was =
                unsafe { byte(pa + vcpu_info::UPCALL_PENDING as u64) }.swap(1, Ordering::AcqRel);
            drop(ev);
            if was == 0 {
                upcall(di, target);
            }
            Ok(0)
        }
        // Steal-time accounting is not offered yet.
        VcpuCmd::RegisterRunstateMemoryArea => Err(Errno::Enosys),
    }
}

/// `hvm_op` from domain `di`: parameters are read-only to guests, and none
/// is set yet, so every defined one reads as 0 (what Linux expects of an
/// absent parameter).
pub fn hvm_op(di: usize, cmd: HvmCmd, arg: u64) -> Result<u64, Errno> {
    let d = domains().get(di).ok_or(Errno::Esrch)?;
    let mut h: HvmParam = read_arg(d, arg)?;
    if resolve(di, h.domid.get())? != di {
        return Err(Errno::Eperm);
    }
    if h.index.get() >= HVM_NR_PARAMS {
        return Err(Errno::Einval);
    }
    match cmd {
        HvmCmd::GetParam => {
            h.value = 0.into();
            write_arg(d, arg, &h).map(|()| 0)
        }
        HvmCmd::SetParam => Err(Errno::Eperm),
    }
}

/// Log a static link that could not be made.
pub fn log_static_failure(a: &Domain, b: &Domain, pa: u32, pb: u32, e: Errno) {
    log!(
        "static event channel d{} {} port {} <-> d{} {} port {}: not bound ({:?})",
        a.id,
        a.name,
        pa,
        b.id,
        b.name,
        pb,
        e
    );
}
