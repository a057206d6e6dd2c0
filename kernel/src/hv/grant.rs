//! Grant tables in the running system: `grant_table_op` (hypercall 20),
//! `XENMAPSPACE_grant_table` placement, and what a stopping domain leaves
//! behind (docs/03-event-channels-and-sharing.md, "Grant tables").
//!
//! The one idea: the portable core (`tessera_kernel::grant`) decides, this
//! file supplies the memory, the locks, the policy and the stage-2 work
//! around each of its calls. A domain's 8 grant-table frames are host pages
//! the kernel set aside at boot, which the guest places in its grant window;
//! the kernel reads and updates the entries there with atomics only, because
//! the guest writes them at any moment. A granted page is mapped into the
//! grantee's stage 2 only after its pin is taken, and the pin is dropped
//! only after the mapping is gone and the TLBs invalidated.
//!
//! Per domain, each behind its own spin lock: `ActiveGrants` (its pins, as
//! a granter), `MapTrack` (its mappings, as a grantee), `GrantFrames` (where
//! it placed its frames) and the stage-2 edit lock with the table pages it
//! may add. Lock order: grantee `MapTrack` → granter `ActiveGrants` → one
//! stage-2 lock; `GrantFrames` → its own stage-2 lock. Unmap, copy and
//! teardown never hold two grant locks at once.

use super::console::log;
use super::trap::{copy_from_guest, copy_to_guest};
use super::{domain_id, domains, index_of, mac, spin_wait_us, Domain, MAX_DOMAINS};
use crate::addr::{PhysAddr, BLOCK_2M, PAGE_SIZE};
use crate::arch::aarch64::guest;
use crate::arch::aarch64::mmu::{self, TableReserve};
use crate::arch::aarch64::Lock;
use crate::pagetable::{Attrs, MapError, MemType, PageTable, Stage2};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tessera_ipc::errno::Errno;
use tessera_ipc::grant_table::{
    GntSt, GnttabCmd, GnttabCopy, GnttabGetVersion, GnttabMapGrantRef, GnttabQuerySize,
    GnttabSetVersion, GnttabSetupTable, GnttabUnmapGrantRef, GrantHandle,
};
use tessera_kernel::evtchn::DomId;
use tessera_kernel::grant::{
    self as core_grant, Access, ActiveGrants, AtomicEntries, Batch, CopyPin, CopyRequest, CopySide,
    GrantFrames, MapRequest, MapTrack, Mapping, Placement, UnmapRequest, NR_GRANT_FRAMES,
};
use tessera_policy::{Class, GrantPerm, Sid};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Bytes of one domain's grant-table frames.
const FRAME_BYTES: u64 = NR_GRANT_FRAMES as u64 * PAGE_SIZE;
/// Table pages a domain may add to its stage 2 after boot: enough for a
/// level-2 table over the windows below RAM and a level-3 table for each of
/// 23 distinct 2 MiB areas holding grant frames or grant mappings.
const TABLE_PAGES: u64 = 24;
/// One domain's share of the grant block: its frames, then its table pages.
const PER_DOMAIN: u64 = FRAME_BYTES + TABLE_PAGES * PAGE_SIZE;
const _: () = assert!(PER_DOMAIN * MAX_DOMAINS as u64 <= BLOCK_2M);
/// 32-bit words in one domain's frames (two per v1 entry).
const FRAME_WORDS: usize = (FRAME_BYTES / 4) as usize;
/// How long a stopping granter waits for copies in flight to drop their
/// pins, in 10 µs steps (a copy moves at most one page).
const IDLE_WAIT_STEPS: u32 = 1000;

/// Host address of the 2 MiB block holding every domain's grant frames and
/// table pages; 0 until boot reserves it.
static BLOCK: AtomicU64 = AtomicU64::new(0);

/// Builds one lock per domain index, each around `make(domain id)`. Domain
/// ids are indices + 1.
macro_rules! per_domain {
    ($make:path) => {{
        let mut all = [const { Lock::new($make(0)) }; MAX_DOMAINS];
        let mut i = 0;
        while i < MAX_DOMAINS {
            all[i] = Lock::new($make((i + 1) as DomId));
            i += 1;
        }
        all
    }};
}

/// Each domain's pins, as a granter.
static ACTIVE: [Lock<ActiveGrants>; MAX_DOMAINS] = per_domain!(ActiveGrants::new);
/// Each domain's mappings, as a grantee.
static MAPTRACK: [Lock<MapTrack>; MAX_DOMAINS] = per_domain!(MapTrack::new);
/// Where each domain placed its grant-table frames.
static FRAMES: [Lock<GrantFrames>; MAX_DOMAINS] =
    [const { Lock::new(GrantFrames::new()) }; MAX_DOMAINS];
/// Each domain's stage-2 edit lock, holding the table pages it may add.
/// Held around every change to a live stage 2 and its TLB invalidation.
static STAGE2: [Lock<TableReserve>; MAX_DOMAINS] =
    [const { Lock::new(TableReserve::empty()) }; MAX_DOMAINS];

/// Boot: set aside the grant block at `base` (2 MiB of host RAM just
/// allocated for it; before any domain is built).
pub(super) fn reserve(base: u64) {
    // SAFETY: the block was just allocated for grant tables alone and is
    // identity-mapped RAM; no domain runs yet. (DC ZVA: a byte loop here
    // cost half a million instructions of boot.)
    unsafe { crate::arch::aarch64::zero_to_poc(base, BLOCK_2M) };
    BLOCK.store(base, Ordering::Release);
}

/// Build: domain `di` gets its share of the block (zeroed by `reserve`, and
/// by `domain_stopped` for a slot's earlier domain; the table pages are
/// zeroed as they are handed out).
pub(super) fn init_domain(di: usize) {
    let (Some(lock), Some(tables)) = (STAGE2.get(di), share(di).map(|s| s + FRAME_BYTES)) else {
        return;
    };
    // SAFETY: these pages are domain `di`'s part of the grant block, which
    // `reserve` set aside and nothing else uses.
    *lock.lock() = unsafe { TableReserve::new(PhysAddr(tables), TABLE_PAGES) };
}

/// Host address of domain `di`'s share of the block.
fn share(di: usize) -> Option<u64> {
    let base = BLOCK.load(Ordering::Acquire);
    (base != 0 && di < MAX_DOMAINS).then(|| base + di as u64 * PER_DOMAIN)
}

/// Host address of grant-table frame `idx` of domain `di`.
fn frame_pa(di: usize, idx: u64) -> Option<u64> {
    (idx < u64::from(NR_GRANT_FRAMES)).then_some(share(di)? + idx * PAGE_SIZE)
}

/// Domain `di`'s entries, as the core reads them.
fn entries_of(di: usize) -> AtomicEntries<'static> {
    AtomicEntries::new(frame_words(di))
}

/// Domain `di`'s grant frames as words (empty before boot reserved them).
fn frame_words(di: usize) -> &'static [AtomicU32] {
    let Some(base) = share(di) else {
        return &[];
    };
    // SAFETY: `base` starts `FRAME_BYTES` of host RAM (page-aligned, so
    // 4-byte aligned) reserved at boot for this domain's frames and never
    // freed; `AtomicU32` has `u32`'s layout. The kernel reaches these words
    // only through this atomic view; the guest writes them through its
    // stage 2, which is the concurrency the atomics are for.
    unsafe { core::slice::from_raw_parts(base as *const AtomicU32, FRAME_WORDS) }
}

/// A stage-2 view of domain `d`'s live table; edit it only under its
/// `STAGE2` lock.
fn stage2_of(d: &Domain) -> PageTable<Stage2> {
    PageTable::from_root(PhysAddr(d.s2_root), 1, mmu::VA_BITS)
}

/// Map one host page at `ipa` in domain `di`'s stage 2: normal memory,
/// never executable.
fn map_into(di: usize, ipa: u64, pa: u64, writable: bool) -> Result<(), MapError> {
    let (Some(d), Some(lock)) = (domains().get(di), STAGE2.get(di)) else {
        return Err(MapError::OutOfRange);
    };
    let attrs = Attrs {
        mem: MemType::Normal,
        writable,
        executable: false,
    };
    let mut tables = lock.lock();
    stage2_of(d).map_page(&mut *tables, ipa, PhysAddr(pa), attrs)?;
    guest::stage2_publish();
    Ok(())
}

/// Map `size` bytes of host RAM at `pa` to `ipa` in domain `di`'s live
/// stage 2 (blocks where aligned), read-write, never executable: a device
/// model's view of a domain it serves.
pub(super) fn map_range_into(di: usize, ipa: u64, pa: u64, size: u64) -> Result<(), MapError> {
    let attrs = Attrs {
        mem: MemType::Normal,
        writable: true,
        executable: false,
    };
    map_range_with(di, ipa, pa, size, attrs)
}

/// Map `size` bytes of domain `di`'s own RAM, at host `pa`, to `ipa` in its
/// live stage 2 as RAM (a block it touched first, `hv::lazy`).
pub(super) fn map_ram_into(di: usize, ipa: u64, pa: u64, size: u64) -> Result<(), MapError> {
    map_range_with(di, ipa, pa, size, Attrs::RAM)
}

fn map_range_with(di: usize, ipa: u64, pa: u64, size: u64, attrs: Attrs) -> Result<(), MapError> {
    let (Some(d), Some(lock)) = (domains().get(di), STAGE2.get(di)) else {
        return Err(MapError::OutOfRange);
    };
    let mut tables = lock.lock();
    stage2_of(d).map(&mut *tables, ipa, PhysAddr(pa), size, attrs)?;
    guest::stage2_publish();
    Ok(())
}

/// Remove every mapping in `[ipa, ipa + size)` from domain `di`'s live
/// stage 2 (a device model's view of a domain that is destroyed, a shared
/// region whose owner is) and invalidate the domain's TLB entries. Returns
/// only once no PE can reach the memory through it.
pub(super) fn unmap_range_from(di: usize, ipa: u64, size: u64) {
    let (Some(d), Some(lock)) = (domains().get(di), STAGE2.get(di)) else {
        return;
    };
    let mut tables = lock.lock();
    // Ranges are unmapped as they were mapped, so no block is split.
    let _ = stage2_of(d).unmap(&mut *tables, ipa, size);
    guest::flush_stage2_all(d.s2_root, d.id);
}

/// Remove the page at `ipa` from domain `di`'s stage 2 and invalidate every
/// TLB entry for it. Returns only once no PE can reach the page through it.
fn unmap_from(di: usize, ipa: u64) {
    let (Some(d), Some(lock)) = (domains().get(di), STAGE2.get(di)) else {
        return;
    };
    let mut tables = lock.lock();
    if stage2_of(d).unmap_page(&mut *tables, ipa).is_ok() {
        guest::flush_stage2_page(d.s2_root, d.id, ipa);
    }
}

fn read_arg<T: FromBytes + IntoBytes>(d: &Domain, va: u64) -> Result<T, Errno> {
    let mut v = T::new_zeroed();
    copy_from_guest(d, va, v.as_mut_bytes())?;
    Ok(v)
}

fn write_arg<T: IntoBytes + Immutable>(d: &Domain, va: u64, v: &T) -> Result<(), Errno> {
    copy_to_guest(d, va, v.as_bytes())
}

fn status_of(r: Result<(), GntSt>) -> zerocopy::little_endian::I16 {
    r.err().unwrap_or(GntSt::Okay).raw().into()
}

/// The calling vCPU's context.
struct Caller {
    /// pCPU, for the policy cache.
    p: usize,
    di: usize,
    d: &'static Domain,
}

impl Caller {
    fn id(&self) -> DomId {
        domain_id(self.di)
    }

    /// What a grant-table operation on domain `ti` is checked against: the
    /// caller's own-table label for itself, else that domain.
    fn table_label(&self, ti: usize, target: &Domain) -> Sid {
        if ti == self.di {
            mac::own_label(self.d.sid, Class::Grant)
        } else {
            target.sid
        }
    }

    /// The domain a `dom` field names (`DOMID_SELF` is the caller).
    fn target(&self, dom: u16) -> Option<(usize, &'static Domain)> {
        let id = core_grant::target_domain(dom, self.id())?;
        let i = index_of(id)?;
        Some((i, domains().get(i)?))
    }
}

/// What the trap handler does after one pass of `grant_table_op`.
pub enum Outcome {
    /// The whole batch is done: x0 = 0.
    Done,
    /// Elements remain: the `hvc` is re-executed with x1 = `uop` (the next
    /// element) and x2 = `count` (how many are left), x0 and x16 unchanged.
    Continue { uop: u64, count: u64 },
}

/// `grant_table_op(cmd, uop, count)` from domain `di` on pCPU `p`: at most
/// `MAX_BATCH` elements per pass, each copied in, acted on and its status
/// copied out. A fault on an element's address ends the call with `-EFAULT`
/// (the elements before it stay done).
pub fn grant_table_op(
    p: usize,
    di: usize,
    cmd: u64,
    uop: u64,
    count: u32,
) -> Result<Outcome, Errno> {
    let cmd = GnttabCmd::try_from(cmd).map_err(|_| Errno::Enosys)?;
    let batch = Batch::decode(cmd, uop, u64::from(count))?;
    let d = domains().get(di).ok_or(Errno::Esrch)?;
    let me = Caller { p, di, d };
    for i in 0..batch.this_pass() {
        let va = batch.elem(i).ok_or(Errno::Efault)?.raw();
        match cmd {
            GnttabCmd::MapGrantRef => {
                let mut op: GnttabMapGrantRef = read_arg(d, va)?;
                let result = map_one(&me, &op);
                core_grant::write_map_status(&mut op, result);
                write_arg(d, va, &op)?;
            }
            GnttabCmd::UnmapGrantRef => {
                let mut op: GnttabUnmapGrantRef = read_arg(d, va)?;
                op.status = status_of(unmap_one(&me, &op));
                write_arg(d, va, &op)?;
            }
            GnttabCmd::Copy => {
                let mut op: GnttabCopy = read_arg(d, va)?;
                op.status = status_of(copy_one(&me, &op));
                write_arg(d, va, &op)?;
            }
            GnttabCmd::SetupTable => {
                let mut op: GnttabSetupTable = read_arg(d, va)?;
                op.status = status_of(setup_table(&me, &op));
                write_arg(d, va, &op)?;
            }
            GnttabCmd::QuerySize => {
                let mut op: GnttabQuerySize = read_arg(d, va)?;
                if let Err(st) = query_size(&me, &mut op) {
                    op.status = st.raw().into();
                }
                write_arg(d, va, &op)?;
            }
            GnttabCmd::SetVersion => {
                let mut op: GnttabSetVersion = read_arg(d, va)?;
                let result = core_grant::set_version(&mut op);
                write_arg(d, va, &op)?;
                return result.map(|()| Outcome::Done);
            }
            GnttabCmd::GetVersion => {
                let mut op: GnttabGetVersion = read_arg(d, va)?;
                let (ti, target) = me.target(op.dom.get()).ok_or(Errno::Esrch)?;
                mac::check(p, d.sid, me.table_label(ti, target), GrantPerm::Query)?;
                core_grant::get_version(&mut op);
                write_arg(d, va, &op)?;
            }
        }
    }
    Ok(match batch.continuation()? {
        Some((uop, count)) => Outcome::Continue { uop, count },
        None => Outcome::Done,
    })
}

/// `map_grant_ref` for one element: decode, policy (`map_read`, and
/// `map_write` first for a writable mapping, as Xen's FLASK asks both), then
/// the core's checks under grantee `MapTrack` → granter `ActiveGrants`, with
/// the stage-2 work in its `install` step.
fn map_one(me: &Caller, op: &GnttabMapGrantRef) -> Result<GrantHandle, GntSt> {
    let req = MapRequest::decode(op)?;
    let gi = index_of(req.granter).ok_or(GntSt::BadDomain)?;
    let granter = domains().get(gi).ok_or(GntSt::BadDomain)?;
    let denied = |perm| mac::check(me.p, me.d.sid, granter.sid, perm).is_err();
    if (!req.readonly && denied(GrantPerm::MapWrite)) || denied(GrantPerm::MapRead) {
        return Err(GntSt::PermissionDenied);
    }
    let (Some(track), Some(active)) = (MAPTRACK.get(me.di), ACTIVE.get(gi)) else {
        return Err(GntSt::BadDomain);
    };
    let mut track = track.lock();
    // A stopping domain's teardown has taken (or will take) this lock after
    // marking it stopped: no mapping may appear behind it.
    if !me.d.is_running() {
        return Err(GntSt::GeneralError);
    }
    let mut active = active.lock();
    if !granter.is_running() {
        return Err(GntSt::BadDomain);
    }
    let install = |gfn: u32| {
        let ipa = u64::from(gfn) * PAGE_SIZE;
        let pa = granter.ram_pa_of(ipa, PAGE_SIZE).ok_or(GntSt::BadPage)?;
        map_into(me.di, req.host_addr.raw(), pa, !req.readonly).map_err(|e| match e {
            MapError::AlreadyMapped => GntSt::BadVirtAddr,
            _ => GntSt::GeneralError,
        })
    };
    core_grant::map(&mut track, &mut active, &entries_of(gi), &req, install).map(|(h, ())| h)
}

/// Drop a mapping's pin in its granter's table, once the page is
/// unreachable.
fn release(mapping: Mapping) {
    let Some(gi) = index_of(mapping.granter()) else {
        return;
    };
    if let Some(active) = ACTIVE.get(gi) {
        // Cannot fail for a mapping taken from a maptrack: the pin it
        // recorded is held until this call.
        let _ = core_grant::release_mapping(&mut active.lock(), &entries_of(gi), mapping);
    }
}

/// `unmap_grant_ref` for one element: policy (`unmap` towards the granter)
/// and `take` under the caller's `MapTrack`; then, with no grant lock held,
/// the stage-2 unmap and invalidation; then the pin drops.
fn unmap_one(me: &Caller, op: &GnttabUnmapGrantRef) -> Result<(), GntSt> {
    let req = UnmapRequest::decode(op)?;
    let track = MAPTRACK.get(me.di).ok_or(GntSt::BadHandle)?;
    let mapping = {
        let mut track = track.lock();
        let entry = track.get(req.handle).ok_or(GntSt::BadHandle)?;
        if let Some(granter) = index_of(entry.granter()).and_then(|gi| domains().get(gi)) {
            mac::check(me.p, me.d.sid, granter.sid, GrantPerm::Unmap)
                .map_err(|_| GntSt::PermissionDenied)?;
        }
        track.take(req.handle, req.host_addr)?
    };
    unmap_from(me.di, mapping.host_addr().raw());
    release(mapping);
    Ok(())
}

/// One side of a copy, ready: where its bytes are, and the pin that keeps a
/// granted page alive until the copy is done.
struct CopyEnd {
    pa: u64,
    pin: Option<(usize, CopyPin)>,
}

fn unpin(end: CopyEnd) {
    if let Some((gi, pin)) = end.pin {
        if let Some(active) = ACTIVE.get(gi) {
            let _ = core_grant::unpin_copy(&mut active.lock(), &entries_of(gi), pin);
        }
    }
}

/// Pin and translate one side of a copy. A ref side needs `copy` towards
/// its granter and a page of the granter's own RAM; a frame side must be
/// the caller's own RAM.
fn copy_end(me: &Caller, side: CopySide, access: Access) -> Result<CopyEnd, GntSt> {
    match side {
        CopySide::Frame { gfn } => {
            let ipa = gfn.checked_mul(PAGE_SIZE).ok_or(GntSt::BadPage)?;
            let pa = me.d.ram_pa_of(ipa, PAGE_SIZE).ok_or(GntSt::BadPage)?;
            Ok(CopyEnd { pa, pin: None })
        }
        CopySide::Gref { granter, gref } => {
            let gi = index_of(granter).ok_or(GntSt::BadDomain)?;
            let g = domains().get(gi).ok_or(GntSt::BadDomain)?;
            mac::check(me.p, me.d.sid, g.sid, GrantPerm::Copy)
                .map_err(|_| GntSt::PermissionDenied)?;
            let active = ACTIVE.get(gi).ok_or(GntSt::BadDomain)?;
            let pin = {
                let mut active = active.lock();
                if !g.is_running() {
                    return Err(GntSt::BadDomain);
                }
                core_grant::pin_for_copy(&mut active, &entries_of(gi), gref, me.id(), access)?
            };
            let ipa = u64::from(pin.gfn()) * PAGE_SIZE;
            let end = CopyEnd {
                pa: 0,
                pin: Some((gi, pin)),
            };
            match g.ram_pa_of(ipa, PAGE_SIZE) {
                Some(pa) => Ok(CopyEnd { pa, ..end }),
                None => {
                    unpin(end);
                    Err(GntSt::BadPage)
                }
            }
        }
    }
}

/// `gnttab_copy` for one element: pin both sides (one lock at a time),
/// copy with no lock held, unpin both.
fn copy_one(me: &Caller, op: &GnttabCopy) -> Result<(), GntSt> {
    let req = CopyRequest::decode(op, me.id())?;
    let source = copy_end(me, req.source, Access::Read)?;
    let dest = match copy_end(me, req.dest, Access::Write) {
        Ok(d) => d,
        Err(st) => {
            unpin(source);
            return Err(st);
        }
    };
    let from = source.pa + u64::from(req.source_offset);
    let to = dest.pa + u64::from(req.dest_offset);
    // SAFETY: both ranges lie inside one page of domain RAM (offset + len
    // <= 4 KiB was checked by `CopyRequest::decode`, the pages by
    // `copy_end`), identity-mapped at EL2 and kept from reuse by the pins.
    // Guests may write either page meanwhile, so these are byte copies that
    // never form a reference; the ranges may overlap (same page).
    unsafe { core::ptr::copy(from as *const u8, to as *mut u8, usize::from(req.len)) };
    unpin(source);
    unpin(dest);
    Ok(())
}

/// `setup_table` for one element: the GFNs of the target's placed frames
/// go to `frame_list` (a fault there is `GNTST_bad_virt_addr`, as in Xen).
fn setup_table(me: &Caller, op: &GnttabSetupTable) -> Result<(), GntSt> {
    let (ti, target) = me.target(op.dom.get()).ok_or(GntSt::BadDomain)?;
    mac::check(me.p, me.d.sid, me.table_label(ti, target), GrantPerm::Setup)
        .map_err(|_| GntSt::PermissionDenied)?;
    let mut gfns = [0u64; NR_GRANT_FRAMES as usize];
    let mut n = 0;
    {
        let frames = FRAMES.get(ti).ok_or(GntSt::BadDomain)?.lock();
        for (slot, gfn) in gfns.iter_mut().zip(frames.setup_table(op.nr_frames.get())?) {
            *slot = gfn;
            n += 1;
        }
    }
    for (i, gfn) in gfns.iter().take(n).enumerate() {
        let va = op
            .frame_list
            .get()
            .checked_add(i as u64 * 8)
            .ok_or(GntSt::BadVirtAddr)?;
        copy_to_guest(me.d, va, &gfn.to_le_bytes()).map_err(|_| GntSt::BadVirtAddr)?;
    }
    Ok(())
}

/// `query_size` for one element.
fn query_size(me: &Caller, op: &mut GnttabQuerySize) -> Result<(), GntSt> {
    let (ti, target) = me.target(op.dom.get()).ok_or(GntSt::BadDomain)?;
    mac::check(me.p, me.d.sid, me.table_label(ti, target), GrantPerm::Query)
        .map_err(|_| GntSt::PermissionDenied)?;
    FRAMES
        .get(ti)
        .ok_or(GntSt::BadDomain)?
        .lock()
        .query_size(op);
    Ok(())
}

/// `XENMEM_add_to_physmap(XENMAPSPACE_grant_table, idx, gpfn)` from domain
/// `di` for itself: frame `idx` appears at `gpfn` in its grant window,
/// writable, never executable. A frame that moves is mapped at its new
/// place before it leaves the old one, so a failure changes nothing.
pub fn add_to_physmap(p: usize, di: usize, idx: u64, gpfn: u64) -> Result<(), Errno> {
    let d = domains().get(di).ok_or(Errno::Esrch)?;
    mac::check(
        p,
        d.sid,
        mac::own_label(d.sid, Class::Grant),
        GrantPerm::Setup,
    )?;
    let mut frames = FRAMES.get(di).ok_or(Errno::Esrch)?.lock();
    if !d.is_running() {
        return Err(Errno::Einval);
    }
    frames.place(idx, gpfn, |placement| {
        let pa = frame_pa(di, idx).ok_or(Errno::Einval)?;
        let ipa = gpfn.checked_mul(PAGE_SIZE).ok_or(Errno::Einval)?;
        let map = || {
            map_into(di, ipa, pa, true).map_err(|e| match e {
                MapError::NoMemory => Errno::Enomem,
                _ => Errno::Einval,
            })
        };
        match placement {
            Placement::Unchanged => Ok(()),
            Placement::New => map(),
            Placement::Moved { old_gfn } => {
                map()?;
                unmap_from(di, old_gfn * PAGE_SIZE);
                Ok(())
            }
        }
    })
}

/// Domain `di` stopped (or is about to be reloaded); its vCPUs are stopped.
/// As a grantee its mappings go; as a granter every other domain's
/// mappings of its pages go, copies in flight finish, and its pins are
/// forgotten; its frames leave its stage 2 and are zeroed. Only then may
/// its memory be reloaded. A grantee that later unmaps such a handle gets
/// `GNTST_bad_handle`, and touching the address is a stage-2 fault.
pub fn domain_stopped(di: usize) {
    let Some(track) = MAPTRACK.get(di) else {
        return;
    };
    let me = domain_id(di);
    // As grantee. The guard is dropped at the end of each `let`.
    loop {
        let taken = track.lock().take_any();
        let Some(mapping) = taken else { break };
        unmap_from(di, mapping.host_addr().raw());
        release(mapping);
    }
    // As granter.
    for (oi, other) in MAPTRACK.iter().enumerate().take(domains().len()) {
        loop {
            let taken = other.lock().take_from(me);
            let Some(mapping) = taken else { break };
            unmap_from(oi, mapping.host_addr().raw());
            release(mapping);
        }
    }
    let Some(active) = ACTIVE.get(di) else {
        return;
    };
    let mut steps = 0;
    while !active.lock().is_idle() && steps < IDLE_WAIT_STEPS {
        spin_wait_us(10);
        steps += 1;
    }
    if steps == IDLE_WAIT_STEPS {
        log!("d{}: grant copies still pinned at teardown; dropped", me);
    }
    {
        let mut active = active.lock();
        active.reset();
        for w in frame_words(di) {
            w.store(0, Ordering::Release);
        }
    }
    if let Some(frames) = FRAMES.get(di) {
        let mut frames = frames.lock();
        for idx in 0..NR_GRANT_FRAMES {
            if let Some(gfn) = frames.gfn(idx) {
                unmap_from(di, gfn * PAGE_SIZE);
            }
        }
        *frames = GrantFrames::new();
    }
}
