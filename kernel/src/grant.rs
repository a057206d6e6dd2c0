//! Grant tables, version 1 (`xen/common/grant_table.c`; the ABI is in
//! `tessera_ipc::grant_table`): the portable core of `grant_table_op`.
//!
//! The one idea: the granter owns its entries and may rewrite them at any
//! moment; the hypervisor owns the *pins*. While any mapping or copy holds a
//! pin on an entry, the entry's `GTF_reading` (and for a writable pin
//! `GTF_writing`) bit stays set, and Linux's revoke is a compare-exchange that
//! refuses while either bit is set. So a grant can be revoked only once
//! nothing maps or copies it any more.
//!
//! State is split the way Xen splits it:
//! - the granter's entries, in guest memory, reached only through the
//!   [`GrantEntries`] trait (atomics in the kernel, arrays in tests);
//! - [`ActiveGrants`], one per granter: pin counts per ref, and the grantee
//!   and frame captured at the first pin;
//! - [`MapTrack`], one per grantee: handle -> (granter, ref, `host_addr`).
//!
//! Nothing here touches page tables, locks or the policy: the kernel does
//! those around each call, as each function's documentation says. Every
//! function validates before it changes anything, so an error leaves no pin,
//! no handle and no flag behind.

#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering};

use crate::addr::{GuestVa, Ipa, PAGE_SIZE};
use crate::evtchn::DomId;
use tessera_ipc::errno::Errno;
use tessera_ipc::event_channel::DOMID_SELF;
use tessera_ipc::grant_table::{
    gntcopy, gntmap, gtf, join_header, split_header, GntSt, GnttabCmd, GnttabCopy,
    GnttabGetVersion, GnttabMapGrantRef, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable,
    GnttabUnmapGrantRef, GrantHandle, GrantRef, ENTRIES_PER_FRAME_V1, GRANT_TABLE_VERSION,
    INVALID_GRANT_HANDLE,
};
use tessera_ipc::platform::{EXT_REGION_BASE, EXT_REGION_SIZE, GNTTAB_BASE, GNTTAB_SIZE};

/// Grant-table frames per domain (`max_nr_frames` in `query_size`).
pub const NR_GRANT_FRAMES: u32 = 8;
/// Grant refs per domain: 512 v1 entries per frame.
pub const NR_GRANT_ENTRIES: usize = (NR_GRANT_FRAMES * ENTRIES_PER_FRAME_V1) as usize;
/// Mappings one grantee may hold at a time.
pub const MAX_MAPTRACK: usize = 256;
/// Ops handled per pass of a batched sub-command; the rest are done by
/// re-executing the hypercall (see [`Batch::continuation`]).
pub const MAX_BATCH: u32 = 64;
/// Compare-exchange attempts on a guest-writable entry before giving up, as
/// in Xen: a granter rewriting its entry faster than we can update it must
/// not livelock the hypervisor.
pub const MAX_CAS_ATTEMPTS: u32 = 5;
/// Domain ids from here up are special (`DOMID_SELF`, `DOMID_IO`, ...).
const DOMID_FIRST_RESERVED: u16 = DOMID_SELF;
/// What `setup_table` reports for a frame the guest has not placed.
pub const INVALID_GFN: u64 = u64::MAX;

// ---------------------------------------------------------------------------
// The granter's entries
// ---------------------------------------------------------------------------

/// The granter's table, as it sits in memory the granting guest writes
/// concurrently. Entry `r` is a 32-bit header word (`flags | domid << 16`,
/// see [`join_header`]) followed by the 32-bit `frame`.
///
/// The core calls these only with `r < nr_entries()`; an implementation must
/// still not panic for any `r`. All hypervisor writes to headers happen under
/// the granter's [`ActiveGrants`] (the `&mut` the core takes), so the only
/// concurrent writer is the guest.
pub trait GrantEntries {
    /// Number of entries that exist (refs `0..nr_entries()`).
    fn nr_entries(&self) -> u32;
    /// Atomically load entry `r`'s header, with acquire ordering.
    fn load_header(&self, r: GrantRef) -> u32;
    /// Atomically replace entry `r`'s header with `new` if it still holds
    /// `current` (acquire-release); otherwise return the value found.
    fn compare_exchange_header(&self, r: GrantRef, current: u32, new: u32) -> Result<(), u32>;
    /// Load entry `r`'s `frame`. Called after a successful header update.
    fn load_frame(&self, r: GrantRef) -> u32;
    /// Atomically clear `flags` bits in entry `r`'s flags (release ordering:
    /// what the hypervisor did to the page is visible before the bit drops).
    fn clear_flags(&self, r: GrantRef, flags: u16);
}

/// [`GrantEntries`] over words of shared memory: word `2r` is entry `r`'s
/// header and word `2r + 1` its frame (the little-endian v1 layout). The
/// kernel builds the slice over the domain's grant frames; tests and the fuzz
/// target over a `Vec`.
pub struct AtomicEntries<'a> {
    words: &'a [AtomicU32],
}

impl<'a> AtomicEntries<'a> {
    /// Wraps `words`, holding `words.len() / 2` entries.
    pub fn new(words: &'a [AtomicU32]) -> Self {
        Self { words }
    }

    fn header(&self, r: GrantRef) -> Option<&AtomicU32> {
        self.words.get(usize::try_from(r).ok()?.checked_mul(2)?)
    }

    fn frame(&self, r: GrantRef) -> Option<&AtomicU32> {
        self.words
            .get(usize::try_from(r).ok()?.checked_mul(2)?.checked_add(1)?)
    }
}

impl GrantEntries for AtomicEntries<'_> {
    fn nr_entries(&self) -> u32 {
        u32::try_from(self.words.len() / 2).unwrap_or(u32::MAX)
    }
    fn load_header(&self, r: GrantRef) -> u32 {
        self.header(r).map_or(0, |w| w.load(Ordering::Acquire))
    }
    fn compare_exchange_header(&self, r: GrantRef, current: u32, new: u32) -> Result<(), u32> {
        match self.header(r) {
            Some(w) => w
                .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
                .map(|_| ()),
            None => Err(0),
        }
    }
    fn load_frame(&self, r: GrantRef) -> u32 {
        self.frame(r).map_or(0, |w| w.load(Ordering::Acquire))
    }
    fn clear_flags(&self, r: GrantRef, flags: u16) {
        if let Some(w) = self.header(r) {
            w.fetch_and(!u32::from(flags), Ordering::Release);
        }
    }
}

// ---------------------------------------------------------------------------
// Pins
// ---------------------------------------------------------------------------

/// How a pin uses the granted page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-only mapping, or the source of a copy: sets `GTF_reading`.
    Read,
    /// Writable mapping, or the destination of a copy: sets `GTF_reading`
    /// and `GTF_writing`, and needs an entry without `GTF_readonly`.
    Write,
}

/// Pins held on one entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    /// Read-only pins.
    pub readers: u8,
    /// Writable pins.
    pub writers: u8,
}

impl Pins {
    const NONE: Pins = Pins {
        readers: 0,
        writers: 0,
    };

    /// Whether nothing holds the entry.
    pub const fn is_zero(self) -> bool {
        self.readers == 0 && self.writers == 0
    }

    fn add(self, access: Access) -> Option<Pins> {
        Some(match access {
            Access::Read => Pins {
                readers: self.readers.checked_add(1)?,
                ..self
            },
            Access::Write => Pins {
                writers: self.writers.checked_add(1)?,
                ..self
            },
        })
    }

    fn sub(self, access: Access) -> Option<Pins> {
        Some(match access {
            Access::Read => Pins {
                readers: self.readers.checked_sub(1)?,
                ..self
            },
            Access::Write => Pins {
                writers: self.writers.checked_sub(1)?,
                ..self
            },
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct ActiveEntry {
    pins: Pins,
    /// The grantee and frame captured at the first pin; meaningful only
    /// while pinned. Later pins reuse them, so every user of one pinned
    /// entry sees the same frame even if the granter rewrites `frame`.
    grantee: DomId,
    frame: u32,
}

const IDLE: ActiveEntry = ActiveEntry {
    pins: Pins::NONE,
    grantee: 0,
    frame: 0,
};

/// One granter's pins (Xen's active grant table). 8 bytes per ref.
pub struct ActiveGrants {
    owner: DomId,
    entries: [ActiveEntry; NR_GRANT_ENTRIES],
}

impl ActiveGrants {
    /// No pins, for the table of domain `owner`.
    pub const fn new(owner: DomId) -> Self {
        Self {
            owner,
            entries: [IDLE; NR_GRANT_ENTRIES],
        }
    }

    /// The granting domain.
    pub fn owner(&self) -> DomId {
        self.owner
    }

    /// Pins held on `r` (none for a ref out of range).
    pub fn pins(&self, r: GrantRef) -> Pins {
        self.entry(r).map_or(Pins::NONE, |e| e.pins)
    }

    /// Whether no ref is pinned (so the table may be torn down or reset).
    pub fn is_idle(&self) -> bool {
        self.entries.iter().all(|e| e.pins.is_zero())
    }

    /// Forget every pin, without touching the guest's entries. Only for a
    /// granter being destroyed, once no grantee maps or copies from it (see
    /// [`MapTrack::take_from`]).
    pub fn reset(&mut self) {
        self.entries = [IDLE; NR_GRANT_ENTRIES];
    }

    fn entry(&self, r: GrantRef) -> Option<&ActiveEntry> {
        self.entries.get(usize::try_from(r).ok()?)
    }

    fn entry_mut(&mut self, r: GrantRef) -> Option<&mut ActiveEntry> {
        self.entries.get_mut(usize::try_from(r).ok()?)
    }
}

/// Set `GTF_reading` (and `GTF_writing`) on entry `r` with a bounded
/// compare-exchange loop, re-validating what the granter wrote on each try.
fn set_status(
    entries: &impl GrantEntries,
    r: GrantRef,
    grantee: DomId,
    access: Access,
    for_map: bool,
) -> Result<(), GntSt> {
    let need = match access {
        Access::Read => gtf::READING,
        Access::Write => gtf::READING | gtf::WRITING,
    };
    // A sub-page grant may be copied but never mapped, as in Xen.
    let type_mask = if for_map {
        gtf::TYPE_MASK | gtf::SUB_PAGE
    } else {
        gtf::TYPE_MASK
    };
    let mut current = entries.load_header(r);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (flags, domid) = split_header(current);
        if flags & type_mask != gtf::PERMIT_ACCESS || domid != grantee {
            return Err(GntSt::GeneralError);
        }
        if access == Access::Write && flags & gtf::READONLY != 0 {
            return Err(GntSt::GeneralError);
        }
        let new = join_header(flags | need, domid);
        if new == current {
            return Ok(());
        }
        match entries.compare_exchange_header(r, current, new) {
            Ok(()) => return Ok(()),
            Err(found) => current = found,
        }
    }
    Err(GntSt::GeneralError)
}

/// Take one pin on `r` for `grantee`: everything is checked first, then the
/// entry's flags are set, then the pin is counted. Returns the granted GFN.
fn pin(
    active: &mut ActiveGrants,
    entries: &impl GrantEntries,
    r: GrantRef,
    grantee: DomId,
    access: Access,
    for_map: bool,
) -> Result<u32, GntSt> {
    if r >= entries.nr_entries() {
        return Err(GntSt::BadGntref);
    }
    let act = *active.entry(r).ok_or(GntSt::BadGntref)?;
    let first = act.pins.is_zero();
    if !first && act.grantee != grantee {
        return Err(GntSt::GeneralError);
    }
    let pins = act.pins.add(access).ok_or(GntSt::GeneralError)?;
    set_status(entries, r, grantee, access, for_map)?;
    // The granter wrote `frame` before publishing the flags we just
    // validated; the acquire on the header orders this load after it.
    let frame = if first {
        entries.load_frame(r)
    } else {
        act.frame
    };
    let slot = active.entry_mut(r).ok_or(GntSt::BadGntref)?;
    *slot = ActiveEntry {
        pins,
        grantee,
        frame,
    };
    Ok(frame)
}

/// Drop one pin; when the last writer goes clear `GTF_writing`, and when
/// the last pin goes clear both bits. A pin that is not held is refused
/// without changing anything.
fn unpin(
    active: &mut ActiveGrants,
    entries: &impl GrantEntries,
    r: GrantRef,
    grantee: DomId,
    access: Access,
) -> Result<(), GntSt> {
    let slot = active.entry_mut(r).ok_or(GntSt::GeneralError)?;
    if slot.pins.is_zero() || slot.grantee != grantee {
        return Err(GntSt::GeneralError);
    }
    let pins = slot.pins.sub(access).ok_or(GntSt::GeneralError)?;
    slot.pins = pins;
    let clear = if pins.is_zero() {
        gtf::READING | gtf::WRITING
    } else if access == Access::Write && pins.writers == 0 {
        gtf::WRITING
    } else {
        0
    };
    if clear != 0 && r < entries.nr_entries() {
        entries.clear_flags(r, clear);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Maptrack
// ---------------------------------------------------------------------------

/// One mapping a grantee holds, as recorded in its [`MapTrack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapEntry {
    granter: DomId,
    gref: GrantRef,
    host_addr: Ipa,
    readonly: bool,
    gfn: u32,
}

impl MapEntry {
    /// The granting domain.
    pub fn granter(&self) -> DomId {
        self.granter
    }
    /// The ref in the granter's table.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }
    /// Where the page is mapped in the grantee's guest-physical space.
    pub fn host_addr(&self) -> Ipa {
        self.host_addr
    }
    /// Whether the mapping is read-only.
    pub fn readonly(&self) -> bool {
        self.readonly
    }
    /// The granted frame, a GFN in the granter's space.
    pub fn gfn(&self) -> u32 {
        self.gfn
    }
    fn access(&self) -> Access {
        if self.readonly {
            Access::Read
        } else {
            Access::Write
        }
    }
}

/// A mapping removed from a [`MapTrack`] whose pin is still held: the
/// kernel unmaps `host_addr` from the grantee's stage 2, invalidates the
/// TLBs, and only then passes this to [`release_mapping`]. Not `Clone`, so a
/// pin is released at most once.
#[must_use = "the granter's pin stays held until this goes to release_mapping"]
#[derive(Debug, PartialEq, Eq)]
pub struct Mapping {
    grantee: DomId,
    entry: MapEntry,
}

impl core::ops::Deref for Mapping {
    type Target = MapEntry;
    fn deref(&self) -> &MapEntry {
        &self.entry
    }
}

/// One grantee's mappings. The handle of a mapping is its slot index.
pub struct MapTrack {
    owner: DomId,
    slots: [Option<MapEntry>; MAX_MAPTRACK],
    used: usize,
    /// Where the next free-slot search starts, so a just-freed handle is not
    /// handed out again at once (a stale handle then misses, as in Xen).
    cursor: usize,
}

impl MapTrack {
    /// No mappings, for grantee `owner`.
    pub const fn new(owner: DomId) -> Self {
        Self {
            owner,
            slots: [None; MAX_MAPTRACK],
            used: 0,
            cursor: 0,
        }
    }

    /// The grantee.
    pub fn owner(&self) -> DomId {
        self.owner
    }

    /// Number of live mappings.
    pub fn len(&self) -> usize {
        self.used
    }

    /// Whether there are no mappings.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The mapping behind `handle`, if any.
    pub fn get(&self, handle: GrantHandle) -> Option<MapEntry> {
        *self.slots.get(usize::try_from(handle).ok()?)?
    }

    /// Every live mapping with its handle.
    pub fn iter(&self) -> impl Iterator<Item = (GrantHandle, MapEntry)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|e| (i as GrantHandle, e)))
    }

    fn free_slot(&self) -> Option<usize> {
        (0..MAX_MAPTRACK)
            .map(|i| (self.cursor + i) % MAX_MAPTRACK)
            .find(|&i| matches!(self.slots.get(i), Some(None)))
    }

    fn maps_at(&self, host_addr: Ipa) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|e| e.host_addr == host_addr)
    }

    fn remove(&mut self, i: usize) -> Option<Mapping> {
        let entry = self.slots.get_mut(i)?.take()?;
        self.used -= 1;
        Some(Mapping {
            grantee: self.owner,
            entry,
        })
    }

    /// `unmap_grant_ref`, first half: remove the mapping `handle` if it is
    /// mapped at `host_addr`. The pin stays held until [`release_mapping`].
    /// `BadHandle` for an unknown handle, `GeneralError` when `host_addr`
    /// does not match; either way nothing changes.
    pub fn take(&mut self, handle: GrantHandle, host_addr: Ipa) -> Result<Mapping, GntSt> {
        let i = usize::try_from(handle).map_err(|_| GntSt::BadHandle)?;
        let entry = self
            .slots
            .get(i)
            .copied()
            .flatten()
            .ok_or(GntSt::BadHandle)?;
        if entry.host_addr != host_addr {
            return Err(GntSt::GeneralError);
        }
        self.remove(i).ok_or(GntSt::BadHandle)
    }

    /// Remove any one mapping: for tearing the grantee down.
    pub fn take_any(&mut self) -> Option<Mapping> {
        let i = self.slots.iter().position(Option::is_some)?;
        self.remove(i)
    }

    /// Remove any one mapping of `granter`'s pages: for tearing the granter
    /// down while this grantee lives.
    pub fn take_from(&mut self, granter: DomId) -> Option<Mapping> {
        let i = self
            .slots
            .iter()
            .position(|s| s.is_some_and(|e| e.granter == granter))?;
        self.remove(i)
    }
}

// ---------------------------------------------------------------------------
// map_grant_ref
// ---------------------------------------------------------------------------

/// Where grantees may ask for a mapping: the extended region named in their
/// device tree, which holds no RAM.
pub const MAP_WINDOW: core::ops::Range<u64> = EXT_REGION_BASE..EXT_REGION_BASE + EXT_REGION_SIZE;

/// A checked `map_grant_ref` element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRequest {
    /// The granting domain (not yet looked up: `BadDomain` if it is absent).
    pub granter: DomId,
    pub gref: GrantRef,
    /// Page-aligned and inside [`MAP_WINDOW`].
    pub host_addr: Ipa,
    pub readonly: bool,
}

impl MapRequest {
    /// Check the guest's fields, as Xen orders it: no host mapping asked
    /// for is `BadGntref`; device, application or PTE mappings (or unknown
    /// bits) are `GeneralError`; a reserved domid is `BadDomain`; a
    /// `host_addr` that is unaligned or outside the window is `BadVirtAddr`.
    pub fn decode(op: &GnttabMapGrantRef) -> Result<Self, GntSt> {
        let flags = op.flags.get();
        if flags & (gntmap::HOST_MAP | gntmap::DEVICE_MAP) == 0 {
            return Err(GntSt::BadGntref);
        }
        if flags & !gntmap::SUPPORTED != 0 {
            return Err(GntSt::GeneralError);
        }
        let granter = op.dom.get();
        if granter >= DOMID_FIRST_RESERVED {
            return Err(GntSt::BadDomain);
        }
        let host_addr = Ipa(op.host_addr.get());
        if !host_addr.is_aligned(PAGE_SIZE) || !MAP_WINDOW.contains(&host_addr.raw()) {
            return Err(GntSt::BadVirtAddr);
        }
        Ok(Self {
            granter,
            gref: op.gref.get(),
            host_addr,
            readonly: flags & gntmap::READONLY != 0,
        })
    }
}

/// `map_grant_ref` for one element, on behalf of `track`'s owner.
///
/// Checks (nothing changes when one fails): `active` belongs to
/// `req.granter`; a free handle (`NoSpace`); `host_addr` not already used
/// (`BadVirtAddr`); the ref exists (`BadGntref`); the entry permits access to
/// the grantee, is not sub-page, is writable if a writable mapping is asked
/// for, is not pinned by another domain and stays stable through the
/// compare-exchange (`GeneralError`). Then the flags are set, the pin
/// counted, and `install` called with the granted GFN.
///
/// `install` is the kernel's part: translate the GFN through the granter's
/// stage 2 (its own RAM only, `BadPage` otherwise), map that page at
/// `req.host_addr` in the grantee's stage 2 (read-only if `req.readonly`,
/// never executable). If it fails, the pin and flags are rolled back and its
/// status returned; if it succeeds, the mapping is recorded and its handle
/// returned with `install`'s value.
///
/// Locking: the caller holds the grantee's `MapTrack` lock, then the
/// granter's `ActiveGrants` lock (always in that order). Inside `install` it
/// may take one stage-2 lock at a time, never two at once (another CPU may be
/// mapping the other way round).
pub fn map<E: GrantEntries, R>(
    track: &mut MapTrack,
    active: &mut ActiveGrants,
    entries: &E,
    req: &MapRequest,
    install: impl FnOnce(u32) -> Result<R, GntSt>,
) -> Result<(GrantHandle, R), GntSt> {
    if active.owner() != req.granter {
        return Err(GntSt::GeneralError);
    }
    let slot = track.free_slot().ok_or(GntSt::NoSpace)?;
    if track.maps_at(req.host_addr) {
        return Err(GntSt::BadVirtAddr);
    }
    let access = if req.readonly {
        Access::Read
    } else {
        Access::Write
    };
    let grantee = track.owner();
    let gfn = pin(active, entries, req.gref, grantee, access, true)?;
    let value = match install(gfn) {
        Ok(v) => v,
        Err(status) => {
            // Cannot fail: the pin was taken just above under the same borrow.
            let _ = unpin(active, entries, req.gref, grantee, access);
            return Err(status);
        }
    };
    let record = track.slots.get_mut(slot).ok_or(GntSt::NoSpace)?;
    *record = Some(MapEntry {
        granter: req.granter,
        gref: req.gref,
        host_addr: req.host_addr,
        readonly: req.readonly,
        gfn,
    });
    track.used += 1;
    track.cursor = (slot + 1) % MAX_MAPTRACK;
    Ok((slot as GrantHandle, value))
}

/// Fill the OUT fields of a `map_grant_ref` element. `dev_bus_addr` is 0:
/// there is no device mapping, and host addresses are not revealed.
pub fn write_map_status(op: &mut GnttabMapGrantRef, result: Result<GrantHandle, GntSt>) {
    let (status, handle) = match result {
        Ok(h) => (GntSt::Okay, h),
        Err(s) => (s, INVALID_GRANT_HANDLE),
    };
    op.status = status.raw().into();
    op.handle = handle.into();
    op.dev_bus_addr = 0.into();
}

// ---------------------------------------------------------------------------
// unmap_grant_ref and teardown
// ---------------------------------------------------------------------------

/// A checked `unmap_grant_ref` element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmapRequest {
    pub handle: GrantHandle,
    pub host_addr: Ipa,
}

impl UnmapRequest {
    /// A device address is meaningless without device mappings: it must be
    /// 0 (`BadDevAddr` otherwise).
    pub fn decode(op: &GnttabUnmapGrantRef) -> Result<Self, GntSt> {
        if op.dev_bus_addr.get() != 0 {
            return Err(GntSt::BadDevAddr);
        }
        Ok(Self {
            handle: op.handle.get(),
            host_addr: Ipa(op.host_addr.get()),
        })
    }
}

/// `unmap_grant_ref`, second half (and the last step of every teardown):
/// drop the pin `mapping` held, clearing `GTF_writing` with the last writer
/// and `GTF_reading` with the last pin.
///
/// Call it only after the grantee's stage-2 entry for `host_addr` is gone and
/// the TLBs are invalidated (`DSB ISHST; TLBI IPAS2E1IS; DSB ISH; TLBI
/// VMALLE1IS; DSB ISH`), since clearing the flags lets the granter revoke and
/// reuse the page. One invalidation may cover a whole batch. The caller
/// holds the granter's `ActiveGrants` lock (and no `MapTrack` lock needs to be
/// held). `GeneralError` if `active` is not the mapping's granter or holds no
/// such pin; nothing changes then.
pub fn release_mapping(
    active: &mut ActiveGrants,
    entries: &impl GrantEntries,
    mapping: Mapping,
) -> Result<(), GntSt> {
    if active.owner() != mapping.granter {
        return Err(GntSt::GeneralError);
    }
    unpin(
        active,
        entries,
        mapping.gref,
        mapping.grantee,
        mapping.access(),
    )
}

// ---------------------------------------------------------------------------
// copy
// ---------------------------------------------------------------------------

/// One side of a checked copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopySide {
    /// A ref in `granter`'s table (the caller itself if it said `DOMID_SELF`).
    Gref { granter: DomId, gref: GrantRef },
    /// A frame of the caller's own RAM.
    Frame { gfn: u64 },
}

/// A checked `gnttab_copy` element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyRequest {
    pub source: CopySide,
    pub source_offset: u16,
    pub dest: CopySide,
    pub dest_offset: u16,
    pub len: u16,
}

fn copy_side(
    ptr: &tessera_ipc::grant_table::GnttabCopyPtr,
    is_gref: bool,
    caller: DomId,
) -> Result<CopySide, GntSt> {
    let domid = ptr.domid.get();
    if !is_gref {
        // Only the caller's own frames may be named directly, as in Xen.
        return if domid == DOMID_SELF {
            Ok(CopySide::Frame { gfn: ptr.gmfn() })
        } else {
            Err(GntSt::PermissionDenied)
        };
    }
    let granter = match domid {
        DOMID_SELF => caller,
        d if d >= DOMID_FIRST_RESERVED => return Err(GntSt::BadDomain),
        d => d,
    };
    Ok(CopySide::Gref {
        granter,
        gref: ptr.gref(),
    })
}

impl CopyRequest {
    /// Check the guest's fields: unknown flag bits are `GeneralError`; a
    /// frame side naming another domain is `PermissionDenied`; a reserved
    /// domid on a ref side is `BadDomain`; a range crossing the end of its
    /// page is `BadCopyArg`.
    pub fn decode(op: &GnttabCopy, caller: DomId) -> Result<Self, GntSt> {
        let flags = op.flags.get();
        if flags & !gntcopy::SUPPORTED != 0 {
            return Err(GntSt::GeneralError);
        }
        let source = copy_side(&op.source, flags & gntcopy::SOURCE_GREF != 0, caller)?;
        let dest = copy_side(&op.dest, flags & gntcopy::DEST_GREF != 0, caller)?;
        let len = op.len.get();
        let source_offset = op.source.offset.get();
        let dest_offset = op.dest.offset.get();
        let fits = |off: u16| u64::from(off) + u64::from(len) <= PAGE_SIZE;
        if !fits(source_offset) || !fits(dest_offset) {
            return Err(GntSt::BadCopyArg);
        }
        Ok(Self {
            source,
            source_offset,
            dest,
            dest_offset,
            len,
        })
    }
}

/// A pin taken for one side of a copy: the guard the kernel holds while it
/// copies, then hands to [`unpin_copy`]. Not `Clone`, so it is released once.
#[must_use = "the granter's pin stays held until this goes to unpin_copy"]
#[derive(Debug, PartialEq, Eq)]
pub struct CopyPin {
    granter: DomId,
    grantee: DomId,
    gref: GrantRef,
    access: Access,
    gfn: u32,
}

impl CopyPin {
    /// The granted frame, a GFN in the granter's space.
    pub fn gfn(&self) -> u32 {
        self.gfn
    }
    /// The granting domain.
    pub fn granter(&self) -> DomId {
        self.granter
    }
    /// The pinned ref.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }
    /// Whether this is the source (`Read`) or destination (`Write`) pin.
    pub fn access(&self) -> Access {
        self.access
    }
}

/// Pin `gref` of `active`'s owner for a copy by `caller`: `Read` for the
/// source, `Write` for the destination. The checks and statuses are those of
/// [`map`], except that a sub-page entry is accepted.
///
/// The kernel holds the granter's `ActiveGrants` lock only for this call and
/// for [`unpin_copy`], not while copying: the pin keeps the grant alive. It
/// translates [`CopyPin::gfn`] through the granter's stage 2 (own RAM only;
/// on failure it unpins and reports `BadPage`), copies, and then unpins.
pub fn pin_for_copy(
    active: &mut ActiveGrants,
    entries: &impl GrantEntries,
    gref: GrantRef,
    caller: DomId,
    access: Access,
) -> Result<CopyPin, GntSt> {
    let gfn = pin(active, entries, gref, caller, access, false)?;
    Ok(CopyPin {
        granter: active.owner(),
        grantee: caller,
        gref,
        access,
        gfn,
    })
}

/// Release a copy pin once the bytes are copied (the release ordering of
/// [`GrantEntries::clear_flags`] publishes them before `GTF_writing` drops).
/// `GeneralError` if `active` is not the pin's granter.
pub fn unpin_copy(
    active: &mut ActiveGrants,
    entries: &impl GrantEntries,
    pin: CopyPin,
) -> Result<(), GntSt> {
    if active.owner() != pin.granter {
        return Err(GntSt::GeneralError);
    }
    unpin(active, entries, pin.gref, pin.grantee, pin.access)
}

// ---------------------------------------------------------------------------
// Grant frames, setup_table, query_size, versions
// ---------------------------------------------------------------------------

/// What placing a grant frame asks of the stage 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Already there: nothing to do (Linux re-places its frames on resume).
    Unchanged,
    /// Map the frame at the new GFN.
    New,
    /// Unmap the frame from `old_gfn` (and invalidate TLBs), then map it at
    /// the new GFN: a frame lives at one place only, as in Xen on Arm.
    Moved { old_gfn: u64 },
}

/// Where a domain has placed its grant frames (`XENMAPSPACE_grant_table`).
pub struct GrantFrames {
    gfns: [Option<u64>; NR_GRANT_FRAMES as usize],
}

impl Default for GrantFrames {
    fn default() -> Self {
        Self::new()
    }
}

impl GrantFrames {
    /// No frame placed.
    pub const fn new() -> Self {
        Self {
            gfns: [None; NR_GRANT_FRAMES as usize],
        }
    }

    /// The GFN frame `idx` is placed at.
    pub fn gfn(&self, idx: u32) -> Option<u64> {
        *self.gfns.get(usize::try_from(idx).ok()?)?
    }

    /// `nr_frames` as Xen counts it: one past the highest frame placed.
    pub fn nr_frames(&self) -> u32 {
        self.gfns
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i as u32 + 1)
    }

    /// `XENMEM_add_to_physmap(XENMAPSPACE_grant_table, idx, gpfn)`. `idx`
    /// must name one of the [`NR_GRANT_FRAMES`] v1 frames (status frames,
    /// bit 31, are v2 only) and `gpfn` a page of the grant window no other
    /// frame uses; otherwise `-EINVAL` and nothing changes. Then `apply` does
    /// the stage-2 work for the [`Placement`]; only if it succeeds is the new
    /// place recorded. The caller holds the domain's `GrantFrames` lock.
    pub fn place(
        &mut self,
        idx: u64,
        gpfn: u64,
        apply: impl FnOnce(Placement) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        let i = usize::try_from(idx)
            .ok()
            .filter(|&i| i < self.gfns.len())
            .ok_or(Errno::Einval)?;
        let in_window = gpfn
            .checked_mul(PAGE_SIZE)
            .is_some_and(|a| (GNTTAB_BASE..GNTTAB_BASE + GNTTAB_SIZE).contains(&a));
        if !in_window {
            return Err(Errno::Einval);
        }
        let taken_by_other = self
            .gfns
            .iter()
            .enumerate()
            .any(|(j, g)| j != i && *g == Some(gpfn));
        if taken_by_other {
            return Err(Errno::Einval);
        }
        let old = self.gfns.get(i).copied().flatten();
        let placement = match old {
            Some(g) if g == gpfn => Placement::Unchanged,
            Some(old_gfn) => Placement::Moved { old_gfn },
            None => Placement::New,
        };
        apply(placement)?;
        if let Some(slot) = self.gfns.get_mut(i) {
            *slot = Some(gpfn);
        }
        Ok(())
    }

    /// `GNTTABOP_query_size` for this domain: fills the OUT fields.
    pub fn query_size(&self, op: &mut GnttabQuerySize) {
        op.nr_frames = self.nr_frames().into();
        op.max_nr_frames = NR_GRANT_FRAMES.into();
        op.status = GntSt::Okay.raw().into();
    }

    /// `GNTTABOP_setup_table`: the GFNs to write to `frame_list`, one per
    /// frame asked for ([`INVALID_GFN`] for a frame not placed; on Arm a
    /// guest places frames itself). More than [`NR_GRANT_FRAMES`] is
    /// `GeneralError`, as in Xen.
    pub fn setup_table(&self, nr_frames: u32) -> Result<impl Iterator<Item = u64> + '_, GntSt> {
        if nr_frames > NR_GRANT_FRAMES {
            return Err(GntSt::GeneralError);
        }
        Ok(self
            .gfns
            .iter()
            .take(nr_frames as usize)
            .map(|g| g.unwrap_or(INVALID_GFN)))
    }
}

/// The domain a `dom` field names: `DOMID_SELF` is the caller; other
/// reserved ids name no domain. Whether the domain exists and whether the
/// caller may ask about it (policy) is the kernel's check.
pub fn target_domain(dom: u16, caller: DomId) -> Option<DomId> {
    match dom {
        DOMID_SELF => Some(caller),
        d if d >= DOMID_FIRST_RESERVED => None,
        d => Some(d),
    }
}

/// `GNTTABOP_set_version`: only version 1 exists. Version 2 is `-ENOSYS`
/// (Xen's answer when v2 is disabled), anything else `-EINVAL`. In every
/// case the version in force is written back to `op`.
pub fn set_version(op: &mut GnttabSetVersion) -> Result<(), Errno> {
    let requested = op.version.get();
    op.version = GRANT_TABLE_VERSION.into();
    match requested {
        GRANT_TABLE_VERSION => Ok(()),
        2 => Err(Errno::Enosys),
        _ => Err(Errno::Einval),
    }
}

/// `GNTTABOP_get_version`, after the kernel has resolved `op.dom`
/// ([`target_domain`]; `-ESRCH` if absent): every table is version 1.
pub fn get_version(op: &mut GnttabGetVersion) {
    op.version = GRANT_TABLE_VERSION.into();
}

// ---------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------

/// A decoded `grant_table_op(cmd, uop, count)`: x0, x1, x2.
///
/// Each element is copied in, handled and its OUT fields copied back on its
/// own, so every element gets its own status. A fault on an element's
/// pointer ends the call with `-EFAULT`, the elements before it done. At most
/// [`MAX_BATCH`] elements are handled per pass; if more remain, the kernel
/// puts [`Batch::continuation`] in x1/x2 and moves ELR back onto the `hvc`
/// (Xen's Arm continuation: the guest re-executes it, and can take
/// interrupts in between), leaving x16 and x0 as they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    pub cmd: GnttabCmd,
    pub uop: GuestVa,
    pub count: u32,
}

impl Batch {
    /// Decode x1/x2 for `cmd`. `count` is a C `unsigned int` that Xen
    /// rejects when negative as an `int`: above `i32::MAX` is `-EINVAL`.
    /// `setup_table` and `query_size` take exactly one element (`-EINVAL`
    /// otherwise); the version sub-commands ignore `count`, as Xen does.
    pub fn decode(cmd: GnttabCmd, uop: u64, count: u64) -> Result<Self, Errno> {
        let count = u32::try_from(count)
            .ok()
            .filter(|&c| c <= i32::MAX as u32)
            .ok_or(Errno::Einval)?;
        let count = match cmd {
            GnttabCmd::SetupTable | GnttabCmd::QuerySize if count != 1 => {
                return Err(Errno::Einval)
            }
            GnttabCmd::SetVersion | GnttabCmd::GetVersion => 1,
            _ => count,
        };
        Ok(Self {
            cmd,
            uop: GuestVa(uop),
            count,
        })
    }

    /// Size of one element in guest memory.
    pub fn elem_size(&self) -> u64 {
        use core::mem::size_of;
        (match self.cmd {
            GnttabCmd::MapGrantRef => size_of::<GnttabMapGrantRef>(),
            GnttabCmd::UnmapGrantRef => size_of::<GnttabUnmapGrantRef>(),
            GnttabCmd::SetupTable => size_of::<GnttabSetupTable>(),
            GnttabCmd::Copy => size_of::<GnttabCopy>(),
            GnttabCmd::QuerySize => size_of::<GnttabQuerySize>(),
            GnttabCmd::SetVersion => size_of::<GnttabSetVersion>(),
            GnttabCmd::GetVersion => size_of::<GnttabGetVersion>(),
        }) as u64
    }

    /// Elements to handle in this pass.
    pub fn this_pass(&self) -> u32 {
        self.count.min(MAX_BATCH)
    }

    /// The guest address of element `i`; `None` if it overflows (`-EFAULT`).
    pub fn elem(&self, i: u32) -> Option<GuestVa> {
        self.uop
            .checked_add(u64::from(i).checked_mul(self.elem_size())?)
    }

    /// After a full pass, the `(x1, x2)` that make the re-executed `hvc` do
    /// the rest; `None` when this pass finishes the batch, `-EFAULT` if the
    /// next element's address overflows.
    pub fn continuation(&self) -> Result<Option<(u64, u64)>, Errno> {
        let done = self.this_pass();
        let rest = self.count - done;
        if rest == 0 {
            return Ok(None);
        }
        let next = self.elem(done).ok_or(Errno::Efault)?;
        Ok(Some((next.raw(), u64::from(rest))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::vec::Vec;
    use tessera_ipc::grant_table::{GnttabCopyPtr, GrantEntryV1};

    const GRANTER: DomId = 1;
    const GRANTEE: DomId = 2;
    const OTHER: DomId = 3;
    const ADDR: u64 = EXT_REGION_BASE;

    /// A granter's table of `n` entries, all invalid.
    fn table(n: usize) -> Vec<AtomicU32> {
        (0..2 * n).map(|_| AtomicU32::new(0)).collect()
    }

    /// The granter writes entry `r` (frame first, then the header).
    fn grant(words: &[AtomicU32], r: usize, flags: u16, domid: DomId, frame: u32) {
        words[2 * r + 1].store(frame, Ordering::Relaxed);
        words[2 * r].store(join_header(flags, domid), Ordering::Release);
    }

    fn flags(words: &[AtomicU32], r: usize) -> u16 {
        split_header(words[2 * r].load(Ordering::Relaxed)).0
    }

    /// Linux's `gnttab_end_foreign_access_ref_v1`: refuses while the
    /// hypervisor has the entry marked in use.
    fn try_revoke(words: &[AtomicU32], r: usize) -> bool {
        let mut cur = words[2 * r].load(Ordering::Acquire);
        loop {
            let (f, d) = split_header(cur);
            if f & (gtf::READING | gtf::WRITING) != 0 {
                return false;
            }
            match words[2 * r].compare_exchange(
                cur,
                join_header(0, d),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(found) => cur = found,
            }
        }
    }

    fn req(gref: GrantRef, readonly: bool, page: u64) -> MapRequest {
        MapRequest {
            granter: GRANTER,
            gref,
            host_addr: Ipa(ADDR + page * PAGE_SIZE),
            readonly,
        }
    }

    fn installed(gfn: u32) -> Result<u32, GntSt> {
        Ok(gfn)
    }

    struct World {
        words: Vec<AtomicU32>,
        active: Box<ActiveGrants>,
        track: Box<MapTrack>,
    }

    impl World {
        fn new(n: usize) -> Self {
            Self {
                words: table(n),
                active: Box::new(ActiveGrants::new(GRANTER)),
                track: Box::new(MapTrack::new(GRANTEE)),
            }
        }
        fn map(&mut self, r: &MapRequest) -> Result<GrantHandle, GntSt> {
            let entries = AtomicEntries::new(&self.words);
            map(&mut self.track, &mut self.active, &entries, r, installed).map(|(h, _)| h)
        }
        fn unmap(&mut self, handle: GrantHandle, page: u64) -> Result<(), GntSt> {
            let m = self.track.take(handle, Ipa(ADDR + page * PAGE_SIZE))?;
            release_mapping(&mut self.active, &AtomicEntries::new(&self.words), m)
        }
        /// Nothing pinned, nothing mapped, no hypervisor bit in any entry.
        fn assert_clean(&self) {
            assert!(self.active.is_idle());
            assert!(self.track.is_empty());
            for r in 0..self.words.len() / 2 {
                assert_eq!(
                    flags(&self.words, r) & (gtf::READING | gtf::WRITING),
                    0,
                    "ref {r}"
                );
            }
        }
    }

    #[test]
    fn writable_map_pins_until_unmapped() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 0x4_1234);
        let entries = AtomicEntries::new(&w.words);
        let (h, gfn) = map(
            &mut w.track,
            &mut w.active,
            &entries,
            &req(8, false, 0),
            installed,
        )
        .unwrap();
        assert_eq!(gfn, 0x4_1234);
        assert_eq!(
            w.active.pins(8),
            Pins {
                readers: 0,
                writers: 1
            }
        );
        assert_eq!(
            flags(&w.words, 8),
            gtf::PERMIT_ACCESS | gtf::READING | gtf::WRITING
        );
        let e = w.track.get(h).unwrap();
        assert_eq!(
            (e.granter(), e.gref(), e.host_addr(), e.readonly(), e.gfn()),
            (GRANTER, 8, Ipa(ADDR), false, 0x4_1234)
        );
        assert!(!try_revoke(&w.words, 8), "a mapped grant cannot be revoked");
        w.unmap(h, 0).unwrap();
        assert_eq!(flags(&w.words, 8), gtf::PERMIT_ACCESS);
        w.assert_clean();
        assert!(try_revoke(&w.words, 8), "an unmapped grant can be revoked");
        assert_eq!(
            w.map(&req(8, false, 0)),
            Err(GntSt::GeneralError),
            "a revoked grant cannot be mapped"
        );
    }

    #[test]
    fn readers_and_writers_clear_their_own_bits() {
        let mut w = World::new(16);
        grant(&w.words, 9, gtf::PERMIT_ACCESS, GRANTEE, 7);
        let ro = w.map(&req(9, true, 0)).unwrap();
        assert_eq!(flags(&w.words, 9), gtf::PERMIT_ACCESS | gtf::READING);
        let rw = w.map(&req(9, false, 1)).unwrap();
        let ro2 = w.map(&req(9, true, 2)).unwrap();
        assert_eq!(
            w.active.pins(9),
            Pins {
                readers: 2,
                writers: 1
            }
        );
        assert_eq!(
            flags(&w.words, 9),
            gtf::PERMIT_ACCESS | gtf::READING | gtf::WRITING
        );
        w.unmap(rw, 1).unwrap();
        assert_eq!(
            flags(&w.words, 9),
            gtf::PERMIT_ACCESS | gtf::READING,
            "last writer gone"
        );
        assert!(!try_revoke(&w.words, 9));
        w.unmap(ro, 0).unwrap();
        assert_eq!(
            flags(&w.words, 9),
            gtf::PERMIT_ACCESS | gtf::READING,
            "a reader remains"
        );
        w.unmap(ro2, 2).unwrap();
        w.assert_clean();
        assert!(try_revoke(&w.words, 9));
    }

    #[test]
    fn readonly_grant_maps_read_only_only() {
        let mut w = World::new(16);
        grant(&w.words, 10, gtf::PERMIT_ACCESS | gtf::READONLY, GRANTEE, 1);
        assert_eq!(w.map(&req(10, false, 0)), Err(GntSt::GeneralError));
        w.assert_clean();
        let h = w.map(&req(10, true, 0)).unwrap();
        assert_eq!(
            w.map(&req(10, false, 1)),
            Err(GntSt::GeneralError),
            "not even while pinned for reading"
        );
        assert_eq!(
            w.active.pins(10),
            Pins {
                readers: 1,
                writers: 0
            }
        );
        assert_eq!(
            flags(&w.words, 10),
            gtf::PERMIT_ACCESS | gtf::READONLY | gtf::READING
        );
        w.unmap(h, 0).unwrap();
        w.assert_clean();
    }

    #[test]
    fn entries_that_grant_nothing_to_the_caller_are_refused() {
        let mut w = World::new(16);
        let cases = [
            (gtf::INVALID, GRANTEE),
            (gtf::ACCEPT_TRANSFER, GRANTEE),
            (gtf::TRANSITIVE, GRANTEE),
            (gtf::PERMIT_ACCESS | gtf::SUB_PAGE, GRANTEE),
            (gtf::PERMIT_ACCESS, OTHER),
            (gtf::PERMIT_ACCESS, GRANTER),
        ];
        for (i, &(f, d)) in cases.iter().enumerate() {
            grant(&w.words, 8 + i, f, d, 5);
            for ro in [true, false] {
                assert_eq!(
                    w.map(&req(8 + i as u32, ro, 0)),
                    Err(GntSt::GeneralError),
                    "{f:#x} for d{d}"
                );
                assert_eq!(flags(&w.words, 8 + i), f, "the entry is left alone");
            }
        }
        w.assert_clean();
    }

    #[test]
    fn refs_out_of_range_are_bad_gntref() {
        let mut w = World::new(16);
        assert_eq!(w.map(&req(16, true, 0)), Err(GntSt::BadGntref));
        assert_eq!(w.map(&req(u32::MAX, true, 0)), Err(GntSt::BadGntref));
        // A table larger than the kernel tracks: refs past NR_GRANT_ENTRIES
        // are still out of range.
        let mut big = World::new(NR_GRANT_ENTRIES + 2);
        grant(&big.words, NR_GRANT_ENTRIES, gtf::PERMIT_ACCESS, GRANTEE, 1);
        assert_eq!(
            big.map(&req(NR_GRANT_ENTRIES as u32, true, 0)),
            Err(GntSt::BadGntref)
        );
        big.assert_clean();
        w.assert_clean();
    }

    #[test]
    fn a_pinned_entry_stays_with_its_first_grantee() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 0x100);
        let h = w.map(&req(8, true, 0)).unwrap();
        // The granter (against protocol) re-points the pinned entry at OTHER
        // and another frame.
        let f = flags(&w.words, 8);
        grant(&w.words, 8, f, OTHER, 0x200);
        let mut other = MapTrack::new(OTHER);
        let entries = AtomicEntries::new(&w.words);
        assert_eq!(
            map(
                &mut other,
                &mut w.active,
                &entries,
                &req(8, true, 0),
                installed
            ),
            Err(GntSt::GeneralError)
        );
        assert!(other.is_empty());
        // And the first grantee's next map fails too: the entry no longer names it.
        assert_eq!(w.map(&req(8, true, 1)), Err(GntSt::GeneralError));
        assert_eq!(
            w.active.pins(8),
            Pins {
                readers: 1,
                writers: 0
            }
        );
        w.unmap(h, 0).unwrap();
        w.assert_clean();
    }

    #[test]
    fn later_pins_reuse_the_frame_captured_at_the_first() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 0x100);
        let entries = AtomicEntries::new(&w.words);
        let (a, gfn_a) = map(
            &mut w.track,
            &mut w.active,
            &entries,
            &req(8, true, 0),
            installed,
        )
        .unwrap();
        w.words[2 * 8 + 1].store(0x999, Ordering::Relaxed);
        let (b, gfn_b) = map(
            &mut w.track,
            &mut w.active,
            &entries,
            &req(8, false, 1),
            installed,
        )
        .unwrap();
        assert_eq!((gfn_a, gfn_b), (0x100, 0x100));
        w.unmap(a, 0).unwrap();
        w.unmap(b, 1).unwrap();
        w.assert_clean();
        // Once idle, the next first pin reads the frame afresh.
        assert_eq!(
            w.map(&req(8, true, 0))
                .map(|h| w.track.get(h).unwrap().gfn()),
            Ok(0x999)
        );
    }

    #[test]
    fn maptrack_exhaustion_is_no_space() {
        let mut w = World::new(MAX_MAPTRACK + 8);
        for r in 0..MAX_MAPTRACK + 1 {
            grant(&w.words, r, gtf::PERMIT_ACCESS, GRANTEE, r as u32);
        }
        for i in 0..MAX_MAPTRACK {
            w.map(&req(i as u32, i % 2 == 0, i as u64)).unwrap();
        }
        assert_eq!(w.track.len(), MAX_MAPTRACK);
        assert_eq!(
            w.map(&req(MAX_MAPTRACK as u32, true, 1000)),
            Err(GntSt::NoSpace)
        );
        assert_eq!(w.active.pins(MAX_MAPTRACK as u32), Pins::default());
        assert_eq!(flags(&w.words, MAX_MAPTRACK), gtf::PERMIT_ACCESS);
        // Teardown of the grantee releases everything.
        let entries = AtomicEntries::new(&w.words);
        while let Some(m) = w.track.take_any() {
            release_mapping(&mut w.active, &entries, m).unwrap();
        }
        w.assert_clean();
    }

    #[test]
    fn pin_count_overflow_is_refused() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        for i in 0..u8::MAX {
            w.map(&req(8, true, u64::from(i))).unwrap();
        }
        assert_eq!(w.map(&req(8, true, 300)), Err(GntSt::GeneralError));
        assert_eq!(w.active.pins(8).readers, u8::MAX);
        assert_eq!(w.track.len(), usize::from(u8::MAX));
        // A writer still fits: its counter is separate.
        let h = w.map(&req(8, false, 301)).unwrap();
        w.unmap(h, 301).unwrap();
        assert_eq!(flags(&w.words, 8), gtf::PERMIT_ACCESS | gtf::READING);
    }

    #[test]
    fn one_host_address_holds_one_mapping() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        grant(&w.words, 9, gtf::PERMIT_ACCESS, GRANTEE, 2);
        let h = w.map(&req(8, true, 0)).unwrap();
        assert_eq!(w.map(&req(9, true, 0)), Err(GntSt::BadVirtAddr));
        assert_eq!(w.active.pins(9), Pins::default());
        assert_eq!(flags(&w.words, 9), gtf::PERMIT_ACCESS);
        w.unmap(h, 0).unwrap();
        w.assert_clean();
    }

    #[test]
    fn a_failed_install_leaves_no_pin_no_flag_and_no_handle() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        let entries = AtomicEntries::new(&w.words);
        let r = map(
            &mut w.track,
            &mut w.active,
            &entries,
            &req(8, false, 0),
            |_| Err::<(), _>(GntSt::BadPage),
        );
        assert_eq!(r, Err(GntSt::BadPage));
        w.assert_clean();
        // With a reader already holding the entry, a failed writer leaves
        // exactly the reader's state.
        let h = w.map(&req(8, true, 0)).unwrap();
        let entries = AtomicEntries::new(&w.words);
        let r = map(
            &mut w.track,
            &mut w.active,
            &entries,
            &req(8, false, 1),
            |_| Err::<(), _>(GntSt::GeneralError),
        );
        assert_eq!(r, Err(GntSt::GeneralError));
        assert_eq!(
            w.active.pins(8),
            Pins {
                readers: 1,
                writers: 0
            }
        );
        assert_eq!(flags(&w.words, 8), gtf::PERMIT_ACCESS | gtf::READING);
        assert_eq!(w.track.len(), 1);
        w.unmap(h, 0).unwrap();
        w.assert_clean();
    }

    #[test]
    fn the_wrong_granter_table_is_refused() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        let mut wrong = ActiveGrants::new(OTHER);
        let entries = AtomicEntries::new(&w.words);
        assert_eq!(
            map(
                &mut w.track,
                &mut wrong,
                &entries,
                &req(8, true, 0),
                installed
            ),
            Err(GntSt::GeneralError)
        );
        let h = w.map(&req(8, true, 0)).unwrap();
        let m = w.track.take(h, Ipa(ADDR)).unwrap();
        let entries = AtomicEntries::new(&w.words);
        assert_eq!(
            release_mapping(&mut wrong, &entries, m),
            Err(GntSt::GeneralError)
        );
        assert!(wrong.is_idle());
    }

    #[test]
    fn unmap_needs_the_right_handle_and_address() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        let h = w.map(&req(8, false, 3)).unwrap();
        assert_eq!(w.unmap(h + 1, 3), Err(GntSt::BadHandle));
        assert_eq!(w.unmap(MAX_MAPTRACK as u32, 3), Err(GntSt::BadHandle));
        assert_eq!(w.unmap(INVALID_GRANT_HANDLE, 3), Err(GntSt::BadHandle));
        assert_eq!(w.unmap(h, 4), Err(GntSt::GeneralError));
        assert_eq!(w.track.take(h, Ipa(0)).err(), Some(GntSt::GeneralError));
        assert_eq!(
            w.active.pins(8),
            Pins {
                readers: 0,
                writers: 1
            },
            "failed unmaps change nothing"
        );
        w.unmap(h, 3).unwrap();
        assert_eq!(
            w.unmap(h, 3),
            Err(GntSt::BadHandle),
            "a handle is unmapped once"
        );
        w.assert_clean();
    }

    #[test]
    fn freed_handles_are_not_reused_at_once() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        let a = w.map(&req(8, true, 0)).unwrap();
        w.unmap(a, 0).unwrap();
        let b = w.map(&req(8, true, 0)).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            w.unmap(a, 0),
            Err(GntSt::BadHandle),
            "the stale handle misses"
        );
        w.unmap(b, 0).unwrap();
    }

    #[test]
    fn map_decode_checks_every_field() {
        let op = |flags: u32, dom: u16, host_addr: u64| GnttabMapGrantRef {
            host_addr: host_addr.into(),
            flags: flags.into(),
            gref: 77.into(),
            dom: dom.into(),
            ..Default::default()
        };
        let good = op(gntmap::HOST_MAP | gntmap::READONLY, GRANTER, ADDR + 0x5000);
        assert_eq!(
            MapRequest::decode(&good),
            Ok(MapRequest {
                granter: GRANTER,
                gref: 77,
                host_addr: Ipa(ADDR + 0x5000),
                readonly: true
            })
        );
        assert_eq!(
            MapRequest::decode(&op(gntmap::HOST_MAP, GRANTER, ADDR)).map(|r| r.readonly),
            Ok(false)
        );
        let last = ADDR + EXT_REGION_SIZE - PAGE_SIZE;
        assert!(MapRequest::decode(&op(gntmap::HOST_MAP, GRANTER, last)).is_ok());

        let bad = [
            (op(0, GRANTER, ADDR), GntSt::BadGntref),
            (op(gntmap::READONLY, GRANTER, ADDR), GntSt::BadGntref),
            (op(gntmap::DEVICE_MAP, GRANTER, ADDR), GntSt::GeneralError),
            (
                op(gntmap::HOST_MAP | gntmap::DEVICE_MAP, GRANTER, ADDR),
                GntSt::GeneralError,
            ),
            (
                op(gntmap::HOST_MAP | gntmap::APPLICATION_MAP, GRANTER, ADDR),
                GntSt::GeneralError,
            ),
            (
                op(gntmap::HOST_MAP | gntmap::CONTAINS_PTE, GRANTER, ADDR),
                GntSt::GeneralError,
            ),
            (
                op(gntmap::HOST_MAP | 1 << 5, GRANTER, ADDR),
                GntSt::GeneralError,
            ),
            (
                op(gntmap::HOST_MAP | 1 << 31, GRANTER, ADDR),
                GntSt::GeneralError,
            ),
            (op(gntmap::HOST_MAP, DOMID_SELF, ADDR), GntSt::BadDomain),
            (op(gntmap::HOST_MAP, 0x7ff2, ADDR), GntSt::BadDomain),
            (op(gntmap::HOST_MAP, u16::MAX, ADDR), GntSt::BadDomain),
            (op(gntmap::HOST_MAP, GRANTER, ADDR + 8), GntSt::BadVirtAddr),
            (
                op(gntmap::HOST_MAP, GRANTER, ADDR - PAGE_SIZE),
                GntSt::BadVirtAddr,
            ),
            (
                op(gntmap::HOST_MAP, GRANTER, ADDR + EXT_REGION_SIZE),
                GntSt::BadVirtAddr,
            ),
            (
                op(gntmap::HOST_MAP, GRANTER, 0x4000_0000),
                GntSt::BadVirtAddr,
            ),
            (op(gntmap::HOST_MAP, GRANTER, 0), GntSt::BadVirtAddr),
            (op(gntmap::HOST_MAP, GRANTER, !0xfff), GntSt::BadVirtAddr),
        ];
        for (o, status) in bad {
            assert_eq!(MapRequest::decode(&o), Err(status), "{o:?}");
        }
    }

    #[test]
    fn unmap_decode_refuses_device_addresses() {
        let op = GnttabUnmapGrantRef {
            host_addr: ADDR.into(),
            handle: 4.into(),
            ..Default::default()
        };
        assert_eq!(
            UnmapRequest::decode(&op),
            Ok(UnmapRequest {
                handle: 4,
                host_addr: Ipa(ADDR)
            })
        );
        let dev = GnttabUnmapGrantRef {
            dev_bus_addr: 0x1000.into(),
            ..op
        };
        assert_eq!(UnmapRequest::decode(&dev), Err(GntSt::BadDevAddr));
    }

    #[test]
    fn map_status_fills_the_out_fields() {
        let mut op = GnttabMapGrantRef {
            dev_bus_addr: 0x1234.into(),
            ..Default::default()
        };
        write_map_status(&mut op, Ok(5));
        assert_eq!(
            (op.status.get(), op.handle.get(), op.dev_bus_addr.get()),
            (0, 5, 0)
        );
        write_map_status(&mut op, Err(GntSt::NoSpace));
        assert_eq!(
            (op.status.get(), op.handle.get()),
            (-13, INVALID_GRANT_HANDLE)
        );
    }

    // --- A granter racing the hypervisor -------------------------------

    /// Entries whose guest rewrites the header just before each of the
    /// hypervisor's compare-exchanges (as if it won every race).
    struct Racing<'a, F: Fn(u32, u32) -> Option<u32>> {
        inner: AtomicEntries<'a>,
        /// (attempt, header) -> what the guest writes first, if anything.
        meddle: F,
        attempts: Cell<u32>,
    }

    impl<'a, F: Fn(u32, u32) -> Option<u32>> Racing<'a, F> {
        fn new(words: &'a [AtomicU32], meddle: F) -> Self {
            Self {
                inner: AtomicEntries::new(words),
                meddle,
                attempts: Cell::new(0),
            }
        }
    }

    impl<F: Fn(u32, u32) -> Option<u32>> GrantEntries for Racing<'_, F> {
        fn nr_entries(&self) -> u32 {
            self.inner.nr_entries()
        }
        fn load_header(&self, r: GrantRef) -> u32 {
            self.inner.load_header(r)
        }
        fn compare_exchange_header(&self, r: GrantRef, current: u32, new: u32) -> Result<(), u32> {
            let n = self.attempts.get();
            self.attempts.set(n + 1);
            if let Some(v) = (self.meddle)(n, self.inner.load_header(r)) {
                self.inner.words[2 * r as usize].store(v, Ordering::Release);
            }
            self.inner.compare_exchange_header(r, current, new)
        }
        fn load_frame(&self, r: GrantRef) -> u32 {
            self.inner.load_frame(r)
        }
        fn clear_flags(&self, r: GrantRef, flags: u16) {
            self.inner.clear_flags(r, flags)
        }
    }

    fn map_racing<F: Fn(u32, u32) -> Option<u32>>(
        w: &mut World,
        r: &MapRequest,
        meddle: F,
    ) -> (Result<GrantHandle, GntSt>, u32) {
        let entries = Racing::new(&w.words, meddle);
        let res = map(&mut w.track, &mut w.active, &entries, r, installed).map(|(h, _)| h);
        (res, entries.attempts.get())
    }

    #[test]
    fn an_unstable_entry_gives_up_after_bounded_retries() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        // Toggle a harmless bit before every attempt: always valid, never stable.
        let (res, attempts) = map_racing(&mut w, &req(8, false, 0), |_, h| {
            Some(h ^ u32::from(gtf::PWT))
        });
        assert_eq!(res, Err(GntSt::GeneralError));
        assert_eq!(attempts, MAX_CAS_ATTEMPTS);
        w.assert_clean();
    }

    #[test]
    fn a_benign_race_is_retried() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        let (res, attempts) = map_racing(&mut w, &req(8, false, 0), |n, h| {
            (n < 2).then_some(h ^ u32::from(gtf::PCD))
        });
        let h = res.unwrap();
        assert_eq!(attempts, 3);
        assert_eq!(
            flags(&w.words, 8) & (gtf::READING | gtf::WRITING),
            gtf::READING | gtf::WRITING
        );
        w.unmap(h, 0).unwrap();
        w.assert_clean();
    }

    #[test]
    fn each_retry_revalidates_the_entry() {
        let changes: [(u16, DomId); 4] = [
            (gtf::PERMIT_ACCESS, OTHER),                   // re-granted elsewhere
            (gtf::PERMIT_ACCESS | gtf::READONLY, GRANTEE), // made read-only
            (gtf::INVALID, GRANTEE),                       // revoked
            (gtf::ACCEPT_TRANSFER, GRANTEE),               // retyped
        ];
        for (f, d) in changes {
            let mut w = World::new(16);
            grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
            let (res, attempts) = map_racing(&mut w, &req(8, false, 0), |n, _| {
                (n == 0).then_some(join_header(f, d))
            });
            assert_eq!(res, Err(GntSt::GeneralError), "{f:#x} d{d}");
            assert_eq!(
                attempts, 1,
                "refused on re-validation, not by running out of tries"
            );
            w.assert_clean();
            assert_eq!(
                split_header(w.words[16].load(Ordering::Relaxed)),
                (f, d),
                "the guest's write stands"
            );
        }
    }

    #[test]
    fn a_granter_clearing_our_bits_cannot_cause_underflow() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        let a = w.map(&req(8, false, 0)).unwrap();
        // Against protocol, the granter clears the in-use bits and revokes.
        assert!(!try_revoke(&w.words, 8));
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        assert!(try_revoke(&w.words, 8));
        // Our bookkeeping is unaffected; unmap still releases exactly one pin.
        assert_eq!(
            w.active.pins(8),
            Pins {
                readers: 0,
                writers: 1
            }
        );
        w.unmap(a, 0).unwrap();
        assert!(w.active.is_idle());
        assert_eq!(w.unmap(a, 0), Err(GntSt::BadHandle));
    }

    #[test]
    fn a_granter_hammering_its_entry_from_another_cpu() {
        use std::sync::atomic::AtomicBool;
        let words = table(16);
        grant(&words, 8, gtf::PERMIT_ACCESS, GRANTEE, 0x42);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                // The granter flips between valid, read-only, foreign and
                // revoked, keeping whatever bits the hypervisor set.
                let shapes = [
                    join_header(gtf::PERMIT_ACCESS, GRANTEE),
                    join_header(gtf::PERMIT_ACCESS | gtf::READONLY, GRANTEE),
                    join_header(gtf::PERMIT_ACCESS, OTHER),
                    join_header(gtf::INVALID, GRANTEE),
                ];
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let keep = u32::from(gtf::READING | gtf::WRITING);
                    let _ = words[16].fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                        Some((h & keep) | shapes[i % shapes.len()])
                    });
                    i = i.wrapping_add(1);
                }
            });
            let mut active = Box::new(ActiveGrants::new(GRANTER));
            let mut track = Box::new(MapTrack::new(GRANTEE));
            let entries = AtomicEntries::new(&words);
            let mut live: Vec<(GrantHandle, u64)> = Vec::new();
            let (mut ok, mut refused) = (0u32, 0u32);
            for i in 0..20_000u64 {
                if live.len() < 8 && i % 3 != 0 {
                    let page = i % 64;
                    if live.iter().any(|&(_, p)| p == page) {
                        continue;
                    }
                    match map(
                        &mut track,
                        &mut active,
                        &entries,
                        &req(8, i % 2 == 0, page),
                        installed,
                    ) {
                        Ok((h, gfn)) => {
                            assert_eq!(gfn, 0x42);
                            live.push((h, page));
                            ok += 1;
                        }
                        Err(s) => {
                            assert_eq!(s, GntSt::GeneralError);
                            refused += 1;
                        }
                    }
                } else if let Some((h, page)) = live.pop() {
                    let m = track.take(h, Ipa(ADDR + page * PAGE_SIZE)).unwrap();
                    release_mapping(&mut active, &entries, m).unwrap();
                }
                let p = active.pins(8);
                assert_eq!(usize::from(p.readers) + usize::from(p.writers), live.len());
            }
            for (h, page) in live.drain(..) {
                let m = track.take(h, Ipa(ADDR + page * PAGE_SIZE)).unwrap();
                release_mapping(&mut active, &entries, m).unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            assert!(active.is_idle());
            assert!(ok > 0, "some maps won the race ({refused} refused)");
        });
        assert_eq!(flags(&words, 8) & (gtf::READING | gtf::WRITING), 0);
    }

    // --- copy ----------------------------------------------------------

    fn copy_op(flags: u16, src: (u64, u16, u16), dst: (u64, u16, u16), len: u16) -> GnttabCopy {
        let side = |(u, domid, offset): (u64, u16, u16)| GnttabCopyPtr {
            u: u.into(),
            domid: domid.into(),
            offset: offset.into(),
            ..Default::default()
        };
        GnttabCopy {
            source: side(src),
            dest: side(dst),
            len: len.into(),
            flags: flags.into(),
            ..Default::default()
        }
    }

    #[test]
    fn copy_decode_checks_every_field() {
        let both = gntcopy::SOURCE_GREF | gntcopy::DEST_GREF;
        assert_eq!(
            CopyRequest::decode(
                &copy_op(
                    gntcopy::SOURCE_GREF,
                    (0xffff_0000_0009, GRANTER, 16),
                    (0x4_0000, DOMID_SELF, 0),
                    100
                ),
                GRANTEE
            ),
            Ok(CopyRequest {
                source: CopySide::Gref {
                    granter: GRANTER,
                    gref: 9
                },
                source_offset: 16,
                dest: CopySide::Frame { gfn: 0x4_0000 },
                dest_offset: 0,
                len: 100,
            }),
            "a ref is the low word of the union"
        );
        assert_eq!(
            CopyRequest::decode(
                &copy_op(
                    both | gntcopy::CAN_FAIL,
                    (9, DOMID_SELF, 0),
                    (10, OTHER, 0),
                    4096
                ),
                GRANTEE
            )
            .map(|c| (c.source, c.dest)),
            Ok((
                CopySide::Gref {
                    granter: GRANTEE,
                    gref: 9
                },
                CopySide::Gref {
                    granter: OTHER,
                    gref: 10
                }
            )),
            "DOMID_SELF names the caller; a whole page fits"
        );
        assert!(CopyRequest::decode(
            &copy_op(0, (1, DOMID_SELF, 4095), (2, DOMID_SELF, 0), 1),
            GRANTEE
        )
        .is_ok());
        assert!(CopyRequest::decode(
            &copy_op(0, (1, DOMID_SELF, 0), (2, DOMID_SELF, 0), 0),
            GRANTEE
        )
        .is_ok());

        let bad = [
            (
                copy_op(1 << 3, (1, DOMID_SELF, 0), (2, DOMID_SELF, 0), 8),
                GntSt::GeneralError,
            ),
            (
                copy_op(1 << 15, (1, DOMID_SELF, 0), (2, DOMID_SELF, 0), 8),
                GntSt::GeneralError,
            ),
            (
                copy_op(0, (1, GRANTER, 0), (2, DOMID_SELF, 0), 8),
                GntSt::PermissionDenied,
            ),
            (
                copy_op(0, (1, DOMID_SELF, 0), (2, GRANTEE, 0), 8),
                GntSt::PermissionDenied,
            ),
            (
                copy_op(gntcopy::SOURCE_GREF, (1, 0x7ff1, 0), (2, DOMID_SELF, 0), 8),
                GntSt::BadDomain,
            ),
            (
                copy_op(gntcopy::DEST_GREF, (1, DOMID_SELF, 0), (2, u16::MAX, 0), 8),
                GntSt::BadDomain,
            ),
            (
                copy_op(both, (1, GRANTER, 4000), (2, GRANTER, 0), 97),
                GntSt::BadCopyArg,
            ),
            (
                copy_op(both, (1, GRANTER, 0), (2, GRANTER, 4095), 2),
                GntSt::BadCopyArg,
            ),
            (
                copy_op(both, (1, GRANTER, u16::MAX), (2, GRANTER, 0), 1),
                GntSt::BadCopyArg,
            ),
            (
                copy_op(both, (1, GRANTER, 0), (2, GRANTER, 0), 4097),
                GntSt::BadCopyArg,
            ),
            (
                copy_op(both, (1, GRANTER, 0), (2, GRANTER, 0), u16::MAX),
                GntSt::BadCopyArg,
            ),
        ];
        for (o, status) in bad {
            assert_eq!(CopyRequest::decode(&o, GRANTEE), Err(status), "{o:?}");
        }
    }

    #[test]
    fn copy_pins_hold_the_entry_while_copying() {
        let words = table(16);
        grant(&words, 8, gtf::PERMIT_ACCESS | gtf::READONLY, GRANTEE, 0x10);
        grant(&words, 9, gtf::PERMIT_ACCESS, GRANTEE, 0x11);
        grant(
            &words,
            10,
            gtf::PERMIT_ACCESS | gtf::SUB_PAGE,
            GRANTEE,
            0x12,
        );
        let entries = AtomicEntries::new(&words);
        let mut active = ActiveGrants::new(GRANTER);

        let src = pin_for_copy(&mut active, &entries, 8, GRANTEE, Access::Read).unwrap();
        let dst = pin_for_copy(&mut active, &entries, 9, GRANTEE, Access::Write).unwrap();
        assert_eq!((src.gfn(), dst.gfn(), src.granter()), (0x10, 0x11, GRANTER));
        assert_eq!(
            flags(&words, 8),
            gtf::PERMIT_ACCESS | gtf::READONLY | gtf::READING
        );
        assert_eq!(
            flags(&words, 9),
            gtf::PERMIT_ACCESS | gtf::READING | gtf::WRITING
        );
        assert!(
            !try_revoke(&words, 8) && !try_revoke(&words, 9),
            "no revoke mid-copy"
        );
        unpin_copy(&mut active, &entries, src).unwrap();
        unpin_copy(&mut active, &entries, dst).unwrap();
        assert!(active.is_idle());
        assert_eq!(flags(&words, 8), gtf::PERMIT_ACCESS | gtf::READONLY);
        assert_eq!(flags(&words, 9), gtf::PERMIT_ACCESS);

        // A sub-page grant may be copied (never mapped).
        let sub = pin_for_copy(&mut active, &entries, 10, GRANTEE, Access::Read).unwrap();
        unpin_copy(&mut active, &entries, sub).unwrap();

        // Error paths change nothing.
        assert_eq!(
            pin_for_copy(&mut active, &entries, 8, GRANTEE, Access::Write),
            Err(GntSt::GeneralError)
        );
        assert_eq!(
            pin_for_copy(&mut active, &entries, 9, OTHER, Access::Read),
            Err(GntSt::GeneralError)
        );
        assert_eq!(
            pin_for_copy(&mut active, &entries, 3, GRANTEE, Access::Read),
            Err(GntSt::GeneralError)
        );
        assert_eq!(
            pin_for_copy(&mut active, &entries, 16, GRANTEE, Access::Read),
            Err(GntSt::BadGntref)
        );
        assert!(active.is_idle());
        let pin = pin_for_copy(&mut active, &entries, 9, GRANTEE, Access::Read).unwrap();
        let mut wrong = ActiveGrants::new(OTHER);
        assert_eq!(
            unpin_copy(&mut wrong, &entries, pin),
            Err(GntSt::GeneralError)
        );
        for r in 0..16 {
            if r != 9 {
                assert_eq!(flags(&words, r) & (gtf::READING | gtf::WRITING), 0);
            }
        }
    }

    #[test]
    fn copies_and_maps_share_the_pin_counts() {
        let mut w = World::new(16);
        grant(&w.words, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        let h = w.map(&req(8, true, 0)).unwrap();
        let entries = AtomicEntries::new(&w.words);
        let dst = pin_for_copy(&mut w.active, &entries, 8, GRANTEE, Access::Write).unwrap();
        assert_eq!(
            w.active.pins(8),
            Pins {
                readers: 1,
                writers: 1
            }
        );
        w.unmap(h, 0).unwrap();
        assert_eq!(
            flags(&w.words, 8),
            gtf::PERMIT_ACCESS | gtf::READING | gtf::WRITING,
            "the copy still holds it"
        );
        unpin_copy(&mut w.active, &AtomicEntries::new(&w.words), dst).unwrap();
        w.assert_clean();
    }

    // --- teardown ------------------------------------------------------

    #[test]
    fn tearing_down_a_granter_drops_only_its_mappings() {
        let words1 = table(16);
        let words3 = table(16);
        grant(&words1, 8, gtf::PERMIT_ACCESS, GRANTEE, 1);
        grant(&words3, 8, gtf::PERMIT_ACCESS, GRANTEE, 2);
        let (e1, e3) = (AtomicEntries::new(&words1), AtomicEntries::new(&words3));
        let mut a1 = Box::new(ActiveGrants::new(GRANTER));
        let mut a3 = Box::new(ActiveGrants::new(OTHER));
        let mut track = Box::new(MapTrack::new(GRANTEE));
        let from = |granter, page: u64| MapRequest {
            granter,
            ..req(8, false, page)
        };
        for p in 0..3 {
            map(&mut track, &mut a1, &e1, &from(GRANTER, p), installed).unwrap();
            map(&mut track, &mut a3, &e3, &from(OTHER, 10 + p), installed).unwrap();
        }
        assert_eq!(track.len(), 6);
        // Granter 3 dies: its grantees' mappings go (the kernel unmaps each
        // host_addr), then its pins are simply forgotten.
        let mut gone = Vec::new();
        while let Some(m) = track.take_from(OTHER) {
            assert_eq!(m.granter(), OTHER);
            gone.push(m.host_addr());
        }
        gone.sort();
        assert_eq!(
            gone,
            [
                Ipa(ADDR + 10 * PAGE_SIZE),
                Ipa(ADDR + 11 * PAGE_SIZE),
                Ipa(ADDR + 12 * PAGE_SIZE)
            ]
        );
        a3.reset();
        assert!(a3.is_idle());
        assert_eq!(track.len(), 3);
        assert!(track.iter().all(|(_, e)| e.granter() == GRANTER));
        // The grantee dies: every mapping is released into its granter.
        while let Some(m) = track.take_any() {
            release_mapping(&mut a1, &e1, m).unwrap();
        }
        assert!(a1.is_idle() && track.is_empty());
        assert_eq!(flags(&words1, 8), gtf::PERMIT_ACCESS);
    }

    // --- frames, versions, batches --------------------------------------

    const GNT_PFN: u64 = GNTTAB_BASE / PAGE_SIZE;

    #[test]
    fn grant_frames_are_placed_moved_and_listed() {
        let mut f = GrantFrames::new();
        let mut seen = Vec::new();
        let mut record = |p: Placement| -> Result<(), Errno> {
            seen.push(p);
            Ok(())
        };
        assert_eq!(f.nr_frames(), 0);
        f.place(0, GNT_PFN, &mut record).unwrap();
        f.place(0, GNT_PFN, &mut record).unwrap();
        f.place(2, GNT_PFN + 5, &mut record).unwrap();
        f.place(2, GNT_PFN + 6, &mut record).unwrap();
        assert_eq!(
            seen,
            [
                Placement::New,
                Placement::Unchanged,
                Placement::New,
                Placement::Moved {
                    old_gfn: GNT_PFN + 5
                }
            ]
        );
        assert_eq!(
            (f.gfn(0), f.gfn(1), f.gfn(2), f.gfn(99)),
            (Some(GNT_PFN), None, Some(GNT_PFN + 6), None)
        );
        assert_eq!(f.nr_frames(), 3);

        let mut q = GnttabQuerySize::default();
        f.query_size(&mut q);
        assert_eq!(
            (q.nr_frames.get(), q.max_nr_frames.get(), q.status.get()),
            (3, NR_GRANT_FRAMES, 0)
        );
        let list: Vec<u64> = f.setup_table(4).unwrap().collect();
        assert_eq!(list, [GNT_PFN, INVALID_GFN, GNT_PFN + 6, INVALID_GFN]);
        assert_eq!(
            f.setup_table(NR_GRANT_FRAMES).unwrap().count(),
            NR_GRANT_FRAMES as usize
        );
        assert_eq!(
            f.setup_table(NR_GRANT_FRAMES + 1).err(),
            Some(GntSt::GeneralError)
        );
    }

    #[test]
    fn grant_frame_placement_errors_change_nothing() {
        let mut f = GrantFrames::new();
        let calls = Cell::new(0);
        let count = |_: Placement| -> Result<(), Errno> {
            calls.set(calls.get() + 1);
            Ok(())
        };
        f.place(1, GNT_PFN + 1, count).unwrap();
        let end_pfn = (GNTTAB_BASE + GNTTAB_SIZE) / PAGE_SIZE;
        let bad = [
            (u64::from(NR_GRANT_FRAMES), GNT_PFN),
            (1 << 31, GNT_PFN), // a v2 status frame
            (u64::MAX, GNT_PFN),
            (0, GNT_PFN - 1), // below the window
            (0, end_pfn),     // past its end
            (0, 0x4_0000),    // guest RAM
            (0, u64::MAX),    // overflows as an address
            (0, GNT_PFN + 1), // already frame 1's place
        ];
        for (idx, pfn) in bad {
            assert_eq!(
                f.place(idx, pfn, count),
                Err(Errno::Einval),
                "idx {idx:#x} pfn {pfn:#x}"
            );
        }
        assert_eq!(calls.get(), 1, "no stage-2 work for a refused placement");
        assert!(
            f.place(0, end_pfn - 1, count).is_ok(),
            "the window's last page"
        );
        // When the stage-2 work fails, the old place stands.
        assert_eq!(
            f.place(1, GNT_PFN + 9, |_| Err(Errno::Enomem)),
            Err(Errno::Enomem)
        );
        assert_eq!(f.gfn(1), Some(GNT_PFN + 1));
    }

    #[test]
    fn only_version_one_is_offered() {
        let mut op = GnttabSetVersion { version: 1.into() };
        assert_eq!(set_version(&mut op), Ok(()));
        for (v, e) in [
            (2, Errno::Enosys),
            (0, Errno::Einval),
            (3, Errno::Einval),
            (u32::MAX, Errno::Einval),
        ] {
            let mut op = GnttabSetVersion { version: v.into() };
            assert_eq!(set_version(&mut op), Err(e), "version {v}");
            assert_eq!(op.version.get(), 1, "the version in force is reported");
        }
        let mut g = GnttabGetVersion {
            dom: DOMID_SELF.into(),
            ..Default::default()
        };
        get_version(&mut g);
        assert_eq!(g.version.get(), 1);
        assert_eq!(target_domain(DOMID_SELF, 4), Some(4));
        assert_eq!(target_domain(3, 4), Some(3));
        assert_eq!(target_domain(0x7ff1, 4), None);
        assert_eq!(target_domain(u16::MAX, 4), None);
    }

    #[test]
    fn batches_are_bounded_and_continue() {
        let b = Batch::decode(GnttabCmd::MapGrantRef, 0x1000, 100).unwrap();
        assert_eq!((b.this_pass(), b.elem_size()), (MAX_BATCH, 32));
        assert_eq!(b.elem(3), Some(GuestVa(0x1000 + 3 * 32)));
        assert_eq!(b.continuation(), Ok(Some((0x1000 + 64 * 32, 36))));
        let rest = Batch::decode(GnttabCmd::MapGrantRef, 0x1000 + 64 * 32, 36).unwrap();
        assert_eq!((rest.this_pass(), rest.continuation()), (36, Ok(None)));

        let sizes = [
            (GnttabCmd::UnmapGrantRef, 24),
            (GnttabCmd::Copy, 40),
            (GnttabCmd::SetupTable, 24),
            (GnttabCmd::QuerySize, 16),
            (GnttabCmd::SetVersion, 4),
            (GnttabCmd::GetVersion, 8),
        ];
        for (cmd, size) in sizes {
            assert_eq!(
                Batch::decode(cmd, 0, 1).unwrap().elem_size(),
                size,
                "{cmd:?}"
            );
        }
        assert_eq!(Batch::decode(GnttabCmd::Copy, 0, 0).unwrap().this_pass(), 0);
        assert_eq!(
            Batch::decode(GnttabCmd::Copy, 0, 0).unwrap().continuation(),
            Ok(None)
        );
        assert_eq!(
            Batch::decode(GnttabCmd::SetVersion, 0, 0).unwrap().count,
            1,
            "count is ignored"
        );
        assert_eq!(
            Batch::decode(GnttabCmd::GetVersion, 0, 77).unwrap().count,
            1
        );
    }

    #[test]
    fn bad_batch_arguments_are_refused() {
        assert_eq!(
            Batch::decode(GnttabCmd::Copy, 0, 1 << 31),
            Err(Errno::Einval),
            "negative as an int"
        );
        assert_eq!(
            Batch::decode(GnttabCmd::Copy, 0, 1 << 32),
            Err(Errno::Einval)
        );
        assert_eq!(
            Batch::decode(GnttabCmd::Copy, 0, u64::MAX),
            Err(Errno::Einval)
        );
        assert_eq!(
            Batch::decode(GnttabCmd::SetVersion, 0, u64::MAX),
            Err(Errno::Einval)
        );
        for cmd in [GnttabCmd::SetupTable, GnttabCmd::QuerySize] {
            assert_eq!(Batch::decode(cmd, 0, 0), Err(Errno::Einval));
            assert_eq!(Batch::decode(cmd, 0, 2), Err(Errno::Einval));
        }
        let b = Batch::decode(GnttabCmd::Copy, u64::MAX - 100, 65).unwrap();
        assert_eq!(b.elem(0), Some(GuestVa(u64::MAX - 100)));
        assert_eq!(b.elem(3), None);
        assert_eq!(b.continuation(), Err(Errno::Efault));
    }

    #[test]
    fn atomic_entries_tolerate_any_ref() {
        let words = table(2);
        let e = AtomicEntries::new(&words[..3]); // an odd word count: one entry
        assert_eq!(e.nr_entries(), 1);
        assert_eq!(e.load_header(5), 0);
        assert_eq!(e.load_frame(u32::MAX), 0);
        assert_eq!(e.compare_exchange_header(9, 0, 1), Err(0));
        e.clear_flags(u32::MAX, 0xffff);
        let v1 = GrantEntryV1 {
            flags: 0x1234.into(),
            domid: 0x5678.into(),
            frame: 0.into(),
        };
        words[0].store(v1.header(), Ordering::Relaxed);
        assert_eq!(split_header(e.load_header(0)), (0x1234, 0x5678));
    }

    // --- a model of many maps, unmaps, copies and revokes ----------------

    /// xorshift64*: a deterministic stream, so a failure replays.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn pins_and_flags_follow_a_simple_model() {
        const REFS: usize = 12;
        let grantees = [GRANTEE, OTHER];
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let words = table(REFS);
            let entries = AtomicEntries::new(&words);
            let mut active = Box::new(ActiveGrants::new(GRANTER));
            let mut tracks = [
                Box::new(MapTrack::new(GRANTEE)),
                Box::new(MapTrack::new(OTHER)),
            ];
            // Model: per ref, the live (grantee, readonly) users.
            let mut model: Vec<Vec<(DomId, bool)>> = vec![Vec::new(); REFS];
            let mut live: Vec<(usize, GrantHandle, u64, usize)> = Vec::new(); // (track, handle, page, ref)
            let mut copies: Vec<(CopyPin, usize)> = Vec::new();
            let mut next_page = 0u64;
            for _ in 0..2_000 {
                match rng.below(6) {
                    0 => {
                        // The granter (re)grants or revokes an entry, as Linux would.
                        let r = rng.below(REFS as u64) as usize;
                        if try_revoke(&words, r) {
                            assert!(model[r].is_empty(), "revoked ref {r} while in use");
                            if rng.below(3) != 0 {
                                let ro = if rng.below(2) == 0 { gtf::READONLY } else { 0 };
                                let d = grantees[rng.below(2) as usize];
                                grant(&words, r, gtf::PERMIT_ACCESS | ro, d, r as u32 + 100);
                            }
                        } else {
                            assert!(!model[r].is_empty(), "ref {r} refused revoke while idle");
                        }
                    }
                    1 | 2 => {
                        let t = rng.below(2) as usize;
                        let r = rng.below(REFS as u64) as usize;
                        let ro = rng.below(2) == 0;
                        next_page = (next_page + 1) % (EXT_REGION_SIZE / PAGE_SIZE);
                        let rq = req(r as u32, ro, next_page);
                        let (f, d) = split_header(words[2 * r].load(Ordering::Relaxed));
                        let expect_ok = f & gtf::TYPE_MASK == gtf::PERMIT_ACCESS
                            && d == grantees[t]
                            && (ro || f & gtf::READONLY == 0)
                            && model[r].iter().all(|&(g, _)| g == grantees[t]);
                        match map(&mut tracks[t], &mut active, &entries, &rq, installed) {
                            Ok((h, gfn)) => {
                                assert!(expect_ok);
                                assert_eq!(gfn, r as u32 + 100);
                                model[r].push((grantees[t], ro));
                                live.push((t, h, next_page, r));
                            }
                            Err(s) => {
                                assert!(!expect_ok, "{s:?}");
                                assert_eq!(s, GntSt::GeneralError);
                            }
                        }
                    }
                    3 if !live.is_empty() => {
                        let (t, h, page, r) =
                            live.swap_remove(rng.below(live.len() as u64) as usize);
                        let m = tracks[t].take(h, Ipa(ADDR + page * PAGE_SIZE)).unwrap();
                        let ro = m.readonly();
                        release_mapping(&mut active, &entries, m).unwrap();
                        let i = model[r]
                            .iter()
                            .position(|&u| u == (grantees[t], ro))
                            .unwrap();
                        model[r].swap_remove(i);
                    }
                    4 => {
                        let t = rng.below(2) as usize;
                        let r = rng.below(REFS as u64) as usize;
                        let write = rng.below(2) == 0;
                        let access = if write { Access::Write } else { Access::Read };
                        if let Ok(p) =
                            pin_for_copy(&mut active, &entries, r as u32, grantees[t], access)
                        {
                            model[r].push((grantees[t], !write));
                            copies.push((p, r));
                        }
                    }
                    _ if !copies.is_empty() => {
                        let (p, r) = copies.swap_remove(rng.below(copies.len() as u64) as usize);
                        let user = (p.grantee, p.access == Access::Read);
                        unpin_copy(&mut active, &entries, p).unwrap();
                        let i = model[r].iter().position(|&u| u == user).unwrap();
                        model[r].swap_remove(i);
                    }
                    _ => {}
                }
                for (r, users) in model.iter().enumerate() {
                    let readers = users.iter().filter(|u| u.1).count();
                    let writers = users.len() - readers;
                    let p = active.pins(r as u32);
                    assert_eq!(
                        (usize::from(p.readers), usize::from(p.writers)),
                        (readers, writers),
                        "ref {r}"
                    );
                    let f = flags(&words, r);
                    assert_eq!(
                        f & gtf::READING != 0,
                        !users.is_empty(),
                        "seed {seed} ref {r}"
                    );
                    assert_eq!(f & gtf::WRITING != 0, writers > 0, "seed {seed} ref {r}");
                }
                assert_eq!(tracks[0].len() + tracks[1].len(), live.len());
            }
            for (p, _) in copies {
                unpin_copy(&mut active, &entries, p).unwrap();
            }
            for track in tracks.iter_mut() {
                while let Some(m) = track.take_any() {
                    release_mapping(&mut active, &entries, m).unwrap();
                }
            }
            assert!(active.is_idle());
            for r in 0..REFS {
                assert_eq!(flags(&words, r) & (gtf::READING | gtf::WRITING), 0);
            }
        }
    }
}
