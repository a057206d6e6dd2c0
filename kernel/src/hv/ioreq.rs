//! IOREQ: a device-model domain serves another domain's MMIO (the protocol
//! is in `tessera_ipc::ioreq`).
//!
//! The one idea: the kernel decodes a trapped access only as far as the
//! syndrome describes it, posts it to the server's slot for the vCPU, and
//! blocks the vCPU. The server answers in the slot and calls `Complete`,
//! which only kicks the vCPU's own pCPU; that pCPU, in its scheduler, reads
//! the answer back and writes the register. So a vCPU's registers are still
//! touched by its owner alone, and a server that never answers stalls only
//! the vCPUs it serves.
//!
//! What a server may do is checked twice: the policy (`ioreq` and `mmu` on
//! the served domain), and the registration (only the registered server of a
//! domain may add ranges, map its RAM, complete its requests or drive its
//! interrupt lines). A domain that names its device model may be registered
//! for by that domain alone, and does not run until it says `Ready`
//! (`control::Hold`).
//!
//! A device model its builder restarts (`CREATE_RESTARTS`) leaves the
//! domains it served *orphaned* when it stops (`tessera_kernel::serving`):
//! they keep running, an access to one of its devices blocks the vCPU
//! instead of faulting, and an access that was waiting on the dead
//! server's slot waits on. When the next domain with its id registers a
//! domain again and says `Ready`, every waiting access is posted to it.

use super::{domains, grant, index_of, kick_owner, mac, vcpu, Domain, OwnerState, MAX_DOMAINS};
use crate::arch::aarch64::guest::VcpuFrame;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use tessera_ipc::errno::Errno;
use tessera_ipc::ioreq::{
    FAST_CONSUMED_OFFSET, FAST_POSTED_OFFSET, FAST_PRODUCED_OFFSET, FAST_SHADOWS_OFFSET,
    FLAGS_OFFSET, FLAG_DIR_READ, IOREQ_TYPE_COPY, MAP_WINDOW_BASE, MAP_WINDOW_SIZE, MAX_RANGES,
    POSTED_ENTRIES, SHADOW_ENTRIES, SHADOW_VALID, SLOTS_PER_PAGE, SLOT_SIZE, STATE_IOREQ_NONE,
    STATE_IOREQ_READY, STATE_IORESP_READY, VIRQ_CONSOLE_INPUT, VIRQ_IOREQ,
};
use tessera_ipc::platform;
use tessera_kernel::control::SlotState;
use tessera_kernel::esr::AccessSyndrome;
use tessera_kernel::hypercall::IoreqCall;
use tessera_kernel::serving::{on_server_stop, ServerLoss, Serving};
use tessera_policy::{IoreqPerm, MmuPerm};

/// Who serves one domain's MMIO.
struct Server {
    /// The server's domain index.
    server: usize,
    /// Host address of the slot page (in the server's RAM).
    page_pa: u64,
    /// Registered ranges.
    ranges: heapless::Vec<Range, MAX_RANGES>,
    /// Host address of the domain's `FastPage` (in the server's RAM).
    fast_pa: Option<u64>,
    /// Posted writes produced so far: the kernel's own count, never read
    /// back from the shared page.
    produced: u32,
    /// Where the served domain's RAM is mapped in the server, once it is.
    mapped_at: Option<u64>,
}

/// One registered MMIO range.
#[derive(Clone, Copy)]
struct Range {
    base: u64,
    size: u64,
    /// Writes of at most 4 bytes go to the posted ring.
    posted: bool,
    /// Reads look at the fast page's shadows first.
    shadowed: bool,
}

/// Each domain's server, by served-domain index.
static SERVERS: [crate::arch::aarch64::Lock<Option<Server>>; MAX_DOMAINS] =
    [const { crate::arch::aarch64::Lock::new(None) }; MAX_DOMAINS];

/// Per server domain: its builder restarts it (`CREATE_RESTARTS`).
static RESTARTS: [AtomicBool; MAX_DOMAINS] = [const { AtomicBool::new(false) }; MAX_DOMAINS];

/// Per served domain: its serving epoch and whether it waits for its
/// device model's next generation. Changed under its `SERVERS` lock.
static SERVING: [Serving; MAX_DOMAINS] = [const { Serving::new() }; MAX_DOMAINS];

/// Domain `di`, just created, is a device model its builder restarts (or
/// not).
pub fn set_restarts(di: usize, restarts: bool) {
    if let Some(r) = RESTARTS.get(di) {
        r.store(restarts, Ordering::Release);
    }
}

/// An access posted to a server and not yet answered: the owner's record of
/// what to do with the answer (never taken from the shared slot), and of
/// the access itself, to post it again if its server changes.
#[derive(Clone, Copy, Debug)]
pub struct PendingIo {
    /// The slot it waits on, or `PARKED` while it waits for a server.
    slot_pa: u64,
    /// The served domain's serving record, and its ticket when the access
    /// was posted there (a direct reference: the owner checks it on every
    /// wake-up).
    serving: &'static Serving,
    ticket: u32,
    acc: AccessSyndrome,
    read: bool,
    di: usize,
    idx: usize,
    ipa: u64,
    write: Option<u64>,
}

/// The served domain `dom` named by server `si`, which must not be itself.
fn served(si: usize, dom: u16) -> Result<(usize, &'static Domain), Errno> {
    let ti = index_of(dom).ok_or(Errno::Esrch)?;
    if ti == si {
        return Err(Errno::Einval);
    }
    Ok((ti, domains().get(ti).ok_or(Errno::Esrch)?))
}

/// Run `f` on domain `ti`'s server record if `si` is that server.
fn as_server<R>(si: usize, ti: usize, f: impl FnOnce(&mut Server) -> R) -> Result<R, Errno> {
    let mut s = SERVERS.get(ti).ok_or(Errno::Esrch)?.lock();
    match s.as_mut() {
        Some(srv) if srv.server == si => Ok(f(srv)),
        _ => Err(Errno::Eperm),
    }
}

/// Whether `[base, base + size)` is device space the server may claim:
/// below the Xen windows and RAM, clear of the virtual GIC.
fn claimable(d: &Domain, base: u64, size: u64) -> bool {
    let end = base + size;
    let gicr_end = platform::GICR_BASE + platform::GICR_STRIDE * d.nr_vcpus as u64;
    let overlaps = |s: u64, e: u64| base < e && s < end;
    end <= platform::GNTTAB_BASE
        && !overlaps(
            platform::GICD_BASE,
            platform::GICD_BASE + platform::GICD_SIZE,
        )
        && !overlaps(platform::GICR_BASE, gicr_end)
}

/// The IOREQ control hypercall from domain `si` on pCPU `p`.
pub fn ioreq_op(p: usize, si: usize, call: IoreqCall) -> Result<u64, Errno> {
    let me = domains().get(si).ok_or(Errno::Esrch)?;
    match call {
        IoreqCall::Register { dom, page, fast } => {
            let (ti, target) = served(si, dom)?;
            tessera_kernel::control::may_serve(target.device_model, si)?;
            mac::check(p, me.sid, target.sid, IoreqPerm::Register)?;
            if target.nr_vcpus > SLOTS_PER_PAGE {
                return Err(Errno::Einval);
            }
            let page_pa = me.ram_pa_of(page, 4096).ok_or(Errno::Efault)?;
            let fast_pa = match fast {
                Some(ipa) => Some(me.ram_pa_of(ipa, 4096).ok_or(Errno::Efault)?),
                None => None,
            };
            let mut s = SERVERS.get(ti).ok_or(Errno::Esrch)?.lock();
            let mapped_at = match s.as_ref() {
                // A server that is still running keeps its domain.
                Some(old)
                    if old.server != si
                        && domains().get(old.server).is_some_and(|d| d.is_running()) =>
                {
                    return Err(Errno::Eexist)
                }
                // Re-registering (a restarted server) starts with no ranges;
                // its own mapping of the domain's RAM is still in place.
                Some(old) if old.server == si => old.mapped_at,
                _ => None,
            };
            *s = Some(Server {
                server: si,
                page_pa,
                ranges: heapless::Vec::new(),
                mapped_at,
                fast_pa,
                produced: 0,
            });
            if let Some(pa) = fast_pa {
                // SAFETY: `pa` is a page of the caller's RAM (`ram_pa_of`
                // above), identity-mapped and allocated to it for the
                // kernel's life; the counter is read by the server only.
                unsafe { shared_u32(pa + FAST_PRODUCED_OFFSET as u64) }.store(0, Ordering::Release);
            }
            Ok(0)
        }
        IoreqCall::MapRange {
            dom,
            base,
            size,
            posted,
            shadowed,
        } => {
            let (ti, target) = served(si, dom)?;
            mac::check(p, me.sid, target.sid, IoreqPerm::Register)?;
            if !claimable(target, base, size) {
                return Err(Errno::Einval);
            }
            as_server(si, ti, |srv| {
                let end = base + size;
                if srv
                    .ranges
                    .iter()
                    .any(|r| base < r.base + r.size && r.base < end)
                {
                    return Err(Errno::Eexist);
                }
                if (posted || shadowed) && srv.fast_pa.is_none() {
                    return Err(Errno::Einval);
                }
                srv.ranges
                    .push(Range {
                        base,
                        size,
                        posted,
                        shadowed,
                    })
                    .map_err(|_| Errno::Enospc)
            })??;
            Ok(0)
        }
        IoreqCall::MapMemory { dom, ipa } => {
            let (ti, target) = served(si, dom)?;
            mac::check(p, me.sid, target.sid, IoreqPerm::Map)?;
            mac::check(p, me.sid, target.sid, MmuPerm::MapRead)?;
            mac::check(p, me.sid, target.sid, MmuPerm::MapWrite)?;
            let size = target.ram_size().next_multiple_of(4096);
            let end = ipa.checked_add(size).ok_or(Errno::Einval)?;
            if ipa < MAP_WINDOW_BASE || end > MAP_WINDOW_BASE + MAP_WINDOW_SIZE {
                return Err(Errno::Einval);
            }
            as_server(si, ti, |srv| match srv.mapped_at {
                Some(at) if at == ipa => Ok(()),
                Some(_) => Err(Errno::Eexist),
                // Nothing is mapped yet: each block of the domain's RAM
                // is filled and mapped here on the server's first touch
                // (`lazy::on_fault`), the domain's own or not.
                None => {
                    srv.mapped_at = Some(ipa);
                    Ok(())
                }
            })??;
            Ok(size)
        }
        IoreqCall::Complete { dom, vcpu: idx } => {
            complete(p, si, me, dom, idx)?;
            Ok(0)
        }
        IoreqCall::Ready { dom } => {
            let (ti, target) = served(si, dom)?;
            mac::check(p, me.sid, target.sid, IoreqPerm::Register)?;
            as_server(si, ti, |_| ())?;
            super::control::device_model_ready(ti, si)?;
            adopt(si, ti, target);
            Ok(0)
        }
        // The console calls need the caller's memory, and `Wait` blocks the
        // caller: `trap.rs` does them (with `console_target` and `wait`).
        IoreqCall::ConsoleWrite { .. } | IoreqCall::ConsoleRead { .. } | IoreqCall::Wait { .. } => {
            Err(Errno::Einval)
        }
        IoreqCall::SetIrqLevel { dom, intid, level } => {
            let (ti, target) = served(si, dom)?;
            mac::check(p, me.sid, target.sid, IoreqPerm::Complete)?;
            as_server(si, ti, |_| ())?;
            if intid >= 32 + platform::VGIC_NR_SPIS {
                return Err(Errno::Einval);
            }
            let to = target.vgic.lock().set_level(0, intid, level);
            if let Some(idx) = to {
                let v = target.first_vcpu + idx;
                if let Some(s) = vcpu(v) {
                    s.irq_hint.store(true, Ordering::Release);
                }
                kick_owner(v);
            }
            Ok(0)
        }
    }
}

/// Server `si` answered vCPU `idx`'s slot of domain `dom`: let that vCPU's
/// pCPU finish the access.
fn complete(p: usize, si: usize, me: &Domain, dom: u16, idx: usize) -> Result<(), Errno> {
    let (ti, target) = served(si, dom)?;
    mac::check(p, me.sid, target.sid, IoreqPerm::Complete)?;
    as_server(si, ti, |_| ())?;
    if idx >= target.nr_vcpus {
        return Err(Errno::Einval);
    }
    kick_owner(target.first_vcpu + idx);
    Ok(())
}

/// Per server domain: 1 + the vCPU waiting in `IoreqCmd::Wait`, 0 for none.
static WAITER: [AtomicUsize; MAX_DOMAINS] = [const { AtomicUsize::new(0) }; MAX_DOMAINS];

/// `IoreqCmd::Wait` from vCPU `v` of server `si`: complete `vcpu`'s slot of
/// `dom` if one is named, then record `v` as the waiter. The caller blocks
/// `v` after this returns Ok; a request posted from now on wakes it through
/// `Vcpu::ioreq_wake`, and one posted before raised `VIRQ_IOREQ`, whose
/// pending upcall ends the block at once, so no request is missed.
pub fn wait(p: usize, si: usize, v: usize, dom: u16, vcpu: Option<usize>) -> Result<(), Errno> {
    let me = domains().get(si).ok_or(Errno::Esrch)?;
    if let Some(idx) = vcpu {
        complete(p, si, me, dom, idx)?;
    }
    WAITER
        .get(si)
        .ok_or(Errno::Esrch)?
        .store(v + 1, Ordering::Release);
    Ok(())
}

/// The served domain (index and domain) whose console server `si` may
/// write or read.
pub fn console_target(p: usize, si: usize, dom: u16) -> Result<(usize, &'static Domain), Errno> {
    let me = domains().get(si).ok_or(Errno::Esrch)?;
    let (ti, target) = served(si, dom)?;
    mac::check(p, me.sid, target.sid, IoreqPerm::Complete)?;
    as_server(si, ti, |_| ())?;
    Ok((ti, target))
}

/// The slot byte that holds the state, as an atomic.
fn flags_of(slot_pa: u64) -> &'static AtomicU8 {
    // SAFETY: `slot_pa` is a slot inside a page of the server's RAM that
    // `ram_pa_of` validated at registration: identity-mapped host RAM that
    // stays allocated to that domain for the kernel's life. The byte is
    // shared with the server, so it is only ever accessed atomically.
    unsafe { &*((slot_pa + FLAGS_OFFSET as u64) as *const AtomicU8) }
}

/// What became of a trapped access.
pub enum Outcome {
    /// No server claims the address.
    Unclaimed,
    /// Posted to the server's slot: the vCPU waits for the answer.
    Waiting,
    /// Done without the server: a posted write (`None`) or a read answered
    /// from a shadow (its raw value).
    Done(Option<u64>),
}

/// Per served domain: posted writes are in its ring that its server was not
/// told of (they are announced when a vCPU of the domain waits for an
/// interrupt, or when the ring fills up).
static UNANNOUNCED: [AtomicBool; MAX_DOMAINS] = [const { AtomicBool::new(false) }; MAX_DOMAINS];

/// Record whether domain `di` has posted writes its server was not told of.
fn set_unannounced(di: usize, unannounced: bool) {
    if let Some(u) = UNANNOUNCED.get(di) {
        u.store(unannounced, Ordering::Release);
    }
}

/// A trapped access by the vCPU with index `idx` in domain `di` at `ipa`:
/// answer it from the domain's fast page if its server allows that, or post
/// it to the server's slot for the vCPU.
pub fn post(
    di: usize,
    idx: usize,
    ipa: u64,
    acc: AccessSyndrome,
    write: Option<u64>,
    own: &mut OwnerState,
) -> Outcome {
    let (server, slot_pa, serving, ticket) = {
        let Some(mut s) = SERVERS.get(di).map(|s| s.lock()) else {
            return Outcome::Unclaimed;
        };
        let Some(serving) = SERVING.get(di) else {
            return Outcome::Unclaimed;
        };
        let ticket = serving.ticket();
        if Serving::waits(ticket) {
            drop(s);
            return park(di, idx, ipa, acc, write, own, serving);
        }
        let Some(srv) = s.as_mut() else {
            return Outcome::Unclaimed;
        };
        let Some(range) = srv
            .ranges
            .iter()
            .find(|r| ipa >= r.base && ipa - r.base < r.size)
            .copied()
        else {
            return Outcome::Unclaimed;
        };
        match (srv.fast_pa, write) {
            (Some(fast), None) if range.shadowed && acc.size <= 4 => {
                if let Some(v) = shadow_read(fast, ipa) {
                    return Outcome::Done(Some(v));
                }
            }
            (Some(fast), Some(val)) if range.posted && acc.size <= 4 => {
                if let Some(fill) = push_posted(fast, &mut srv.produced, ipa, val, acc.size) {
                    let server = srv.server;
                    drop(s);
                    if fill >= POSTED_ENTRIES as u32 / 2 {
                        set_unannounced(di, false);
                        wake_server(server);
                    } else {
                        set_unannounced(di, true);
                    }
                    return Outcome::Done(None);
                }
            }
            _ => {}
        }
        // The slot path wakes the server, which drains the posted writes
        // first: that announces them too.
        set_unannounced(di, false);
        (
            srv.server,
            srv.page_pa + (idx * SLOT_SIZE) as u64,
            serving,
            ticket,
        )
    };
    write_slot(slot_pa, ipa, acc, write);
    own.pending_io = Some(PendingIo {
        slot_pa,
        serving,
        ticket,
        acc,
        read: write.is_none(),
        di,
        idx,
        ipa,
        write,
    });
    wake_server(server);
    Outcome::Waiting
}

/// An access of an orphaned domain: it waits, with no slot, until a new
/// server is ready for the domain (`try_finish` posts it then).
#[cold]
fn park(
    di: usize,
    idx: usize,
    ipa: u64,
    acc: AccessSyndrome,
    write: Option<u64>,
    own: &mut OwnerState,
    serving: &'static Serving,
) -> Outcome {
    own.pending_io = Some(PendingIo {
        slot_pa: PARKED,
        serving,
        ticket: serving.ticket(),
        acc,
        read: write.is_none(),
        di,
        idx,
        ipa,
        write,
    });
    Outcome::Waiting
}

/// `PendingIo::slot_pa` of an access that waits for a server: no slot is
/// there (slots are 32-byte aligned).
const PARKED: u64 = u64::MAX;

/// Fill the slot at `slot_pa` with an access and publish it (state READY).
fn write_slot(slot_pa: u64, ipa: u64, acc: AccessSyndrome, write: Option<u64>) {
    // Word by word: the slot is 32-byte aligned (a page plus `idx * 32`),
    // and stores through a byte pointer would be split into 30 byte stores.
    let count_size = 1u64 | u64::from(acc.size) << 32;
    // SAFETY: as in `flags_of`; the words before `flags` are plain data the
    // server reads only after it sees READY, which is published below with
    // Release ordering. `slot_pa` is 32-byte aligned, so each store is
    // aligned.
    unsafe {
        let words = slot_pa as *mut u64;
        core::ptr::write_volatile(words, ipa);
        core::ptr::write_volatile(words.add(1), write.unwrap_or(0));
        core::ptr::write_volatile(words.add(2), count_size);
        core::ptr::write_volatile((slot_pa + 24) as *mut u32, 0);
        core::ptr::write_volatile((slot_pa + 28) as *mut u16, 0);
        core::ptr::write_volatile((slot_pa + 31) as *mut u8, IOREQ_TYPE_COPY);
    }
    let dir = if write.is_none() { FLAG_DIR_READ } else { 0 };
    flags_of(slot_pa).store(STATE_IOREQ_READY | dir, Ordering::Release);
}

/// Post `io` again, to the server its domain has now: its slot was in a
/// server that stopped. While the domain has no server ready for it, it
/// stays parked.
#[cold]
#[inline(never)]
fn repost(own: &mut OwnerState) {
    let Some(io) = own.pending_io else { return };
    let Some(s) = SERVERS.get(io.di) else {
        return;
    };
    let s = s.lock();
    let ticket = io.serving.ticket();
    let target = match s.as_ref() {
        Some(srv) if !Serving::waits(ticket) && io.idx < SLOTS_PER_PAGE => {
            Some((srv.server, srv.page_pa + (io.idx * SLOT_SIZE) as u64))
        }
        _ => None,
    };
    let Some((server, slot_pa)) = target else {
        own.pending_io = Some(PendingIo {
            slot_pa: PARKED,
            ticket,
            ..io
        });
        return;
    };
    // Under the lock: the server cannot stop (and its page be freed)
    // before the access is in its slot.
    write_slot(slot_pa, io.ipa, io.acc, io.write);
    drop(s);
    own.pending_io = Some(PendingIo {
        slot_pa,
        ticket,
        ..io
    });
    wake_server(server);
}

/// Tell server `server` there is work: directly if it waits in `Wait`,
/// else through its event channel.
fn wake_server(server: usize) {
    let waiter = WAITER
        .get(server)
        .map_or(0, |w| w.swap(0, Ordering::AcqRel));
    match waiter.checked_sub(1).and_then(|w| vcpu(w).map(|s| (w, s))) {
        Some((w, s)) => {
            s.ioreq_wake.store(true, Ordering::Release);
            kick_owner(w);
        }
        None => super::events::raise_virq(server, VIRQ_IOREQ, 0),
    }
}

/// Keyboard input was typed at domain `di`: tell its server, if it has
/// one (until it registers, the input waits in the kernel's queue).
pub fn console_input(di: usize) {
    let server = SERVERS
        .get(di)
        .and_then(|s| s.lock().as_ref().map(|srv| srv.server));
    if let Some(server) = server {
        super::events::raise_virq(server, VIRQ_CONSOLE_INPUT, 0);
    }
}

/// A vCPU of domain `di` waits for an interrupt: posted writes its server
/// was not told of are announced now (the guest may be waiting for their
/// effect, a UART's transmit interrupt say).
pub fn announce_posted(di: usize) {
    if !UNANNOUNCED
        .get(di)
        .is_some_and(|u| u.swap(false, Ordering::AcqRel))
    {
        return;
    }
    let server = SERVERS
        .get(di)
        .and_then(|s| s.lock().as_ref().map(|srv| srv.server));
    if let Some(server) = server {
        wake_server(server);
    }
}

/// A u32 of a fast page, shared with its server.
///
/// # Safety
/// `pa` must be 4-byte aligned inside a fast page `Register` validated.
unsafe fn shared_u32(pa: u64) -> &'static AtomicU32 {
    // SAFETY: by the caller's promise the word is in the server's RAM,
    // identity-mapped and allocated to it for the kernel's life; it is
    // shared, so only accessed atomically.
    unsafe { &*(pa as *const AtomicU32) }
}

/// A u64 of a fast page, shared with its server.
///
/// # Safety
/// As for [`shared_u32`], 8-byte aligned.
unsafe fn shared_u64(pa: u64) -> &'static AtomicU64 {
    // SAFETY: as in `shared_u32`.
    unsafe { &*(pa as *const AtomicU64) }
}

/// The value of the shadow for a read at `ipa`, if the fast page at `fast`
/// has a valid one that stayed put while it was read.
fn shadow_read(fast: u64, ipa: u64) -> Option<u64> {
    let want = SHADOW_VALID | ipa;
    (0..SHADOW_ENTRIES as u64).find_map(|i| {
        let at = fast + FAST_SHADOWS_OFFSET as u64 + i * 16;
        // SAFETY: entries are 16-byte aligned inside the fast page.
        let (key, value) = unsafe { (shared_u64(at), shared_u64(at + 8)) };
        if key.load(Ordering::Acquire) != want {
            return None;
        }
        let v = value.load(Ordering::Acquire);
        (key.load(Ordering::Acquire) == want).then_some(v)
    })
}

/// Append a posted write to the ring of the fast page at `fast`; the fill
/// after it, or `None` when the ring is full (or the server's count of
/// consumed entries makes no sense).
fn push_posted(fast: u64, produced: &mut u32, ipa: u64, val: u64, size: u8) -> Option<u32> {
    // SAFETY: the counters are 4-byte aligned inside the fast page.
    let consumed =
        unsafe { shared_u32(fast + FAST_CONSUMED_OFFSET as u64) }.load(Ordering::Acquire);
    let fill = produced.wrapping_sub(consumed);
    if fill >= POSTED_ENTRIES as u32 {
        return None;
    }
    let at = fast + FAST_POSTED_OFFSET as u64 + u64::from(*produced % POSTED_ENTRIES as u32) * 16;
    // SAFETY: the entry is 16-byte aligned inside the fast page; the server
    // reads it only after it sees `produced` move past it (Release below).
    unsafe {
        shared_u64(at).store(ipa, Ordering::Relaxed);
        shared_u64(at + 8).store(
            (val & 0xffff_ffff) | u64::from(size) << 32,
            Ordering::Relaxed,
        );
    }
    *produced = produced.wrapping_add(1);
    // SAFETY: as above.
    unsafe { shared_u32(fast + FAST_PRODUCED_OFFSET as u64) }.store(*produced, Ordering::Release);
    Some(fill + 1)
}

/// The value a load of `acc` puts in its register, from the `raw` bytes the
/// device gave: truncated to the access size, sign-extended if the
/// instruction asks, and cut to 32 bits for a W register.
pub fn load_value(acc: AccessSyndrome, raw: u64) -> u64 {
    let bits = u32::from(acc.size) * 8;
    let mut val = if bits >= 64 {
        raw
    } else {
        raw & ((1u64 << bits) - 1)
    };
    if acc.sign_extend && bits < 64 {
        let shift = 64 - bits;
        val = (((val << shift) as i64) >> shift) as u64;
    }
    if !acc.sixty_four {
        val &= 0xffff_ffff;
    }
    val
}

/// Owner pCPU: if `v`'s posted access is answered, finish it (a read's data
/// goes to its register) and return true; false while it is outstanding.
pub fn try_finish(frame: &mut VcpuFrame, own: &mut OwnerState) -> bool {
    let Some(io) = own.pending_io.as_ref() else {
        return true;
    };
    // A void ticket: the slot was in a server that stopped, whose RAM may
    // be freed by now; it is never read again.
    let slot_pa = io.slot_pa;
    if slot_pa == PARKED || !io.serving.holds(io.ticket) {
        repost(own);
        return false;
    }
    let flags = flags_of(slot_pa);
    if flags.load(Ordering::Acquire) & 0xf != STATE_IORESP_READY {
        return false;
    }
    if io.read {
        // SAFETY: as in `flags_of`; `data` is at offset 8, 8-aligned.
        let raw = unsafe { core::ptr::read_volatile((slot_pa + 8) as *const u64) };
        if let Some(x) = frame.x.get_mut(usize::from(io.acc.reg)) {
            *x = load_value(io.acc, raw);
        }
    }
    flags.store(STATE_IOREQ_NONE, Ordering::Release);
    own.pending_io = None;
    true
}

/// Domain `di` stopped: as a server it serves no one any more (its slot
/// page may be reloaded), and as a served domain its server keeps its
/// registration, so a restarted domain is served again at once. A server
/// its builder restarts leaves the domains it served orphaned instead
/// (`orphan_served`).
pub fn domain_stopped(di: usize) {
    if let Some(w) = WAITER.get(di) {
        w.store(0, Ordering::Release);
    }
    let restarts = RESTARTS.get(di).is_some_and(|r| r.load(Ordering::Acquire));
    if on_server_stop(restarts) == ServerLoss::Wait {
        orphan_served(di);
    }
    for s in SERVERS.iter() {
        let mut s = s.lock();
        if s.as_ref().is_some_and(|srv| srv.server == di) {
            // Keep the record (its mapping stays in place) but drop the
            // ranges: accesses fault until the server registers again.
            if let Some(srv) = s.as_mut() {
                srv.ranges.clear();
                srv.fast_pa = None;
            }
        }
    }
}

/// Server `di`, which its builder restarts, stopped: every domain it served
/// loses its registration (and the server its mapping of that domain's
/// RAM) and waits for the server's next generation. Its vCPUs keep
/// running; those that touch a device wait (`park`, `repost`).
#[cold]
fn orphan_served(di: usize) {
    let server = domains().get(di);
    for (ti, s) in SERVERS.iter().enumerate() {
        let gone = {
            let mut s = s.lock();
            if s.as_ref().is_none_or(|srv| srv.server != di) {
                continue;
            }
            if let Some(serving) = SERVING.get(ti) {
                serving.orphan();
            }
            s.take()
        };
        set_unannounced(ti, false);
        let Some(d) = domains().get(ti) else { continue };
        if let Some(at) = gone.and_then(|srv| srv.mapped_at) {
            grant::unmap_range_from(di, at, d.ram_size().next_multiple_of(4096));
        }
        super::console::log!(
            "d{} {}: its device model d{} {} stopped; its device accesses wait for the next generation",
            d.id,
            d.name,
            server.map_or(0, |s| s.id),
            server.map_or("?", |s| s.name.as_str())
        );
    }
}

/// Server `si` said `Ready` for domain `ti`: if `ti` was orphaned, the
/// accesses that waited are posted to `si` now.
fn adopt(si: usize, ti: usize, target: &Domain) {
    let was_orphaned = {
        let _s = SERVERS.get(ti).map(|s| s.lock());
        SERVING.get(ti).is_some_and(Serving::adopt)
    };
    if !was_orphaned {
        return;
    }
    let server = domains().get(si);
    super::console::log!(
        "d{} {}: served again by d{} {}; waiting device accesses go to it",
        target.id,
        target.name,
        server.map_or(0, |s| s.id),
        server.map_or("?", |s| s.name.as_str())
    );
    for v in target.first_vcpu..target.first_vcpu + target.nr_vcpus {
        kick_owner(v);
    }
}

/// Which served domain's RAM the window at `ipa` of server `si` shows,
/// and where that window starts.
pub fn window_of(si: usize, ipa: u64) -> Option<(usize, u64)> {
    SERVERS.iter().enumerate().find_map(|(ti, s)| {
        let s = s.lock();
        let at = s.as_ref().filter(|srv| srv.server == si)?.mapped_at?;
        let size = domains().get(ti)?.ram_size();
        (ipa >= at && ipa - at < size).then_some((ti, at))
    })
}

/// Domain `ti`'s RAM starts over (`lazy::reset`): its server's window on
/// the first `size` bytes is unmapped, to be mapped again block by block.
pub fn forget_window(ti: usize, size: u64) {
    let Some(s) = SERVERS.get(ti) else { return };
    let window = s
        .lock()
        .as_ref()
        .and_then(|srv| Some((srv.server, srv.mapped_at?)));
    if let Some((server, at)) = window {
        grant::unmap_range_from(server, at, size);
    }
}

/// Served domain `di`, with `nr_vcpus` vCPUs, is reset in place
/// (`ResetDomain`; it is stopped, so none of its vCPUs posts): its server
/// keeps its registration (ranges, fast page, the mapping of its RAM), but
/// the slots its old vCPUs left are emptied, so the server does not carry
/// out an access of the old boot against the new one. A server that has
/// taken a slot already may still answer it and call `Complete`: the
/// answer waits in the slot, which no vCPU reads (each clears its pending
/// access when it powers on), and the next access posted there overwrites
/// it; `Complete` only kicks a vCPU. Posted writes already in the fast
/// page's ring stay, in order, ahead of the new boot's. Returns the
/// server's domain index, if it has one.
pub fn served_domain_reset(di: usize, nr_vcpus: usize) -> Option<usize> {
    let server = {
        let s = SERVERS.get(di)?.lock();
        let srv = s.as_ref()?;
        for idx in 0..nr_vcpus.min(SLOTS_PER_PAGE) {
            flags_of(srv.page_pa + (idx * SLOT_SIZE) as u64)
                .store(STATE_IOREQ_NONE, Ordering::Release);
        }
        srv.server
    };
    set_unannounced(di, false);
    Some(server)
}

/// Domain `di` is being destroyed (it is stopped, `domain_stopped` ran),
/// and its RAM, `ram_size` bytes, will go to another domain: nothing may
/// still reach it. As a served domain, its server forgets it and loses the
/// mapping of its RAM. As a server, every domain it served is stopped
/// (their vCPUs may be waiting on slots in its RAM, and no one else can
/// answer them) and forgets it.
pub fn domain_destroyed(di: usize, ram_size: u64) {
    if let Some(s) = SERVERS.get(di) {
        let mut s = s.lock();
        if let Some(serving) = SERVING.get(di) {
            serving.forget();
        }
        let old = s.take();
        drop(s);
        if let Some((server, at)) = old.and_then(|srv| Some((srv.server, srv.mapped_at?))) {
            grant::unmap_range_from(server, at, ram_size.next_multiple_of(4096));
        }
    }
    for (ti, s) in SERVERS.iter().enumerate() {
        let was_ours = {
            let mut s = s.lock();
            let ours = s.as_ref().is_some_and(|srv| srv.server == di);
            if ours {
                *s = None;
            }
            ours
        };
        let Some(d) = domains().get(ti).filter(|_| was_ours) else {
            continue;
        };
        if matches!(d.slot_state(), SlotState::Running | SlotState::Paused) {
            super::console::log!("d{} {}: its device model is destroyed", d.id, d.name);
            super::stop_domain(ti, super::StopReason::Crash);
        }
    }
    if let Some(w) = WAITER.get(di) {
        w.store(0, Ordering::Release);
    }
    set_unannounced(di, false);
}
