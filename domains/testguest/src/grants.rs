//! `test=grants role=granter|guest|peer`: grant tables between three
//! domains (docs/03-event-channels-and-sharing.md, "Grant tables").
//!
//! - The granter (`granter=` is its own id, `guest=<id>`; a service, so the
//!   default policy lets the guest map and copy its grants) places its grant
//!   frames, checks placement errors and moves, and grants pages of its RAM
//!   to the guest: writable, read-only, one to another domain, one whose
//!   frame is not RAM, one for copies, and one the guest keeps mapped when
//!   it powers off.
//! - The guest (`granter=<id> peer=<id>`) checks every error path, maps the
//!   pages into its extended region, reads and writes them, maps a batch
//!   long enough to need a continuation, unmaps, copies both ways through a
//!   ref, grants a page of its own for the granter to copy into, and is
//!   refused (policy) maps and copies from the peer, another guest.
//! - The peer (`guest=<id>`) grants the guest a page that the policy still
//!   forbids it to map.
//! - `role=restart-granter guest=<id>` and `role=restart-guest granter=<id>`:
//!   the granter reboots while the guest maps its page. The restarted
//!   granter finds its frames unplaced and zeroed, and can place them where
//!   they were; the guest's old handle is gone (`GNTST_bad_handle`) and its
//!   address free for a new mapping of the new incarnation's page.
//!
//! The one idea: the two sides move in lock step through a mailbox in a
//! static shared page (`shm=`): each writes its own stage word and waits,
//! with a deadline, for the other's. Between steps the granter looks at
//! what only it can see: the `GTF_reading`/`GTF_writing` bits the kernel
//! keeps in its entries, whether a Linux-style revoke succeeds, and the
//! bytes the guest wrote into its pages.

use crate::check::{wait_until, Reason, TestResult};
use tessera_ipc::event_channel::DOMID_SELF;
use tessera_ipc::grant_table::{
    gtf, GntSt, GnttabCmd, GnttabCopy, GnttabGetVersion, GnttabMapGrantRef, GnttabQuerySize,
    GnttabSetVersion, GnttabSetupTable, GnttabUnmapGrantRef, GrantHandle, INVALID_GRANT_HANDLE,
};
use tessera_ipc::hypercall::Op;
use tessera_ipc::platform::{EXT_REGION_BASE, GNTTAB_BASE, GNTTAB_SIZE};
use tessera_ipc::ring::SharedMem;
use tessera_rt::bootargs::BootArgs;
use tessera_rt::events::SharedPage;
use tessera_rt::grant::{
    self as gnt, copy_request, map_request, unmap_request, CopyEnd, EndAccessError, GrantTable,
};
use tessera_rt::hypercall::hypercall;
use tessera_rt::println;
use tessera_rt::shm::SharedRegion;

const PAGE: u64 = 4096;
const WAIT_MS: u64 = 10_000;
/// `setup_table`'s answer for a frame not placed.
const INVALID_GFN: u64 = u64::MAX;
/// Frames a domain may have (`max_nr_frames`).
const MAX_FRAMES: u32 = 8;

// Mailbox words (byte offsets in the shared page).
const GRANTER_STAGE: usize = 0x00;
const GUEST_STAGE: usize = 0x08;
/// The guest's ref granting the granter its page E.
const GUEST_REF: usize = 0x10;

/// How often the restart granter has booted (the mailbox outlives its RAM).
const GRANTER_BOOTS: usize = 0x18;

// Granter stages.
const GRANTS_READY: u64 = 1;
const SAW_MAPPINGS: u64 = 2;
const COPIED_TO_GUEST: u64 = 3;
/// The restart granter's second incarnation granted its page again.
const REGRANTED: u64 = 10;
// Guest stages.
const MAPPED: u64 = 1;
const UNMAPPED: u64 = 2;
const COPIED: u64 = 3;
const DONE: u64 = 4;

// The granter's refs (the first 8 are reserved for the toolstack).
const REF_RW: u32 = 8;
const REF_RO: u32 = 9;
const REF_OTHER: u32 = 10;
const REF_NOT_RAM: u32 = 11;
const REF_COPY: u32 = 12;
const REF_KEEP: u32 = 13;
/// The ref the peer and the guest grant on their side.
const REF_OWN: u32 = 8;

// Where the guest maps.
const AT_RW: u64 = EXT_REGION_BASE;
const AT_RO: u64 = EXT_REGION_BASE + PAGE;
const AT_KEEP: u64 = EXT_REGION_BASE + 2 * PAGE;
const AT_BATCH: u64 = EXT_REGION_BASE + 0x10_0000;
/// Elements in the batched map: more than the kernel does per pass (64).
const BATCH: usize = 70;

// Copy geometry.
const COPY_LEN: u16 = 100;
const COPY_FROM: u16 = 16;
const COPY_AT: u16 = 32;

static PAGE_RW: SharedPage = SharedPage::new();
static PAGE_RO: SharedPage = SharedPage::new();
static PAGE_OTHER: SharedPage = SharedPage::new();
static PAGE_COPY: SharedPage = SharedPage::new();
static PAGE_KEEP: SharedPage = SharedPage::new();
static PAGE_PEER: SharedPage = SharedPage::new();
static OWN_SRC: SharedPage = SharedPage::new();
static OWN_DST: SharedPage = SharedPage::new();
/// The guest's page granted to the granter.
static PAGE_E: SharedPage = SharedPage::new();

/// The byte pattern `seed` puts at offset `i`.
fn pattern(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(seed)
}

/// A 4 KiB page as a `SharedRegion` (a `SharedPage` of ours or a mapping).
fn page_at(addr: u64) -> Result<SharedRegion, Reason> {
    // SAFETY: every caller passes one of this program's `SharedPage`s
    // (reached only through regions) or a page of the extended region the
    // kernel mapped for us; both stay mapped while the region is used.
    match unsafe { SharedRegion::new(addr as usize, PAGE as usize) } {
        Some(r) => Ok(r),
        None => fail!("page at {addr:#x} is not usable"),
    }
}

fn region_of(page: &'static SharedPage) -> Result<SharedRegion, Reason> {
    page_at(page.as_ptr().as_ptr() as u64)
}

fn fill(r: &SharedRegion, seed: u8) {
    let mut buf = [0u8; PAGE as usize];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, i);
    }
    r.write(0, &buf);
}

/// Fails unless `len` bytes at `off` of `r` follow `seed` from `from`.
fn expect_pattern(
    what: &str,
    r: &SharedRegion,
    off: usize,
    len: usize,
    seed: u8,
    from: usize,
) -> TestResult {
    let mut buf = [0u8; PAGE as usize];
    r.read(off, &mut buf[..len]);
    if let Some(i) = (0..len).find(|&i| buf[i] != pattern(seed, from + i)) {
        fail!(
            "{what}: byte {} is {:#04x}, expected {:#04x}",
            off + i,
            buf[i],
            pattern(seed, from + i)
        );
    }
    Ok(())
}

fn status(raw: i16) -> Option<GntSt> {
    GntSt::from_i16(raw)
}

/// Fails unless a single-element call returned 0 with status `want`.
macro_rules! expect_status {
    ($op:expr, $want:ident, $($what:tt)+) => {{
        let mut op = $op;
        ok!(gnt::op1(&mut op), $($what)+);
        let got = status(op.status.get());
        ensure!(
            got == Some(GntSt::$want),
            "{}: status {:?}, expected {:?}",
            format_args!($($what)+),
            got,
            GntSt::$want
        );
        op
    }};
}

pub fn run() -> TestResult {
    let args = BootArgs::new(tessera_rt::bootargs());
    match args.value("role") {
        Some("granter") => granter(&args),
        Some("guest") => guest(&args),
        Some("peer") => peer(&args),
        Some("restart-granter") => restart_granter(&args),
        Some("restart-guest") => restart_guest(&args),
        other => fail!(
            "role must be granter, guest, peer, restart-granter or restart-guest, not {other:?}"
        ),
    }
}

fn domid(args: &BootArgs<'_>, key: &str) -> Result<u16, Reason> {
    match args.number(key).and_then(|n| u16::try_from(n).ok()) {
        Some(id) => Ok(id),
        None => fail!("bootargs need {key}=<domain id>"),
    }
}

fn mailbox(args: &BootArgs<'_>) -> Result<SharedRegion, Reason> {
    crate::link::region(args, PAGE as usize)
}

fn wait_stage(mb: &SharedRegion, word: usize, at_least: u64, what: &str) -> TestResult {
    ensure!(
        wait_until(WAIT_MS, || mb.load_u64(word) >= at_least),
        "the other side never reached {what} (stage word {:#x} is {})",
        word,
        mb.load_u64(word)
    );
    Ok(())
}

/// The table this domain places at the start of its grant window.
fn own_table() -> Result<GrantTable, Reason> {
    ok!(
        gnt::place_frame(0, GNTTAB_BASE / PAGE),
        "place grant frame 0"
    );
    // SAFETY: frame 0 was just placed at GNTTAB_BASE (normal memory in the
    // runtime's map) and is reached only through this table.
    match unsafe { GrantTable::new(GNTTAB_BASE as usize, 1) } {
        Some(t) => Ok(t),
        None => fail!("grant window not usable"),
    }
}

fn gfn32(page: &'static SharedPage) -> u32 {
    page.gfn() as u32
}

fn query_size(dom: u16) -> Result<GnttabQuerySize, Reason> {
    let q = expect_status!(
        GnttabQuerySize {
            dom: dom.into(),
            ..Default::default()
        },
        Okay,
        "query_size(d{dom})"
    );
    Ok(q)
}

/// `setup_table(self, n)`: the GFNs reported for our first `n` frames.
fn setup_table(n: u32) -> Result<[u64; MAX_FRAMES as usize], Reason> {
    let mut list = [0xdead_beefu64; MAX_FRAMES as usize];
    expect_status!(
        GnttabSetupTable {
            dom: DOMID_SELF.into(),
            nr_frames: n.into(),
            frame_list: (list.as_mut_ptr() as u64).into(),
            ..Default::default()
        },
        Okay,
        "setup_table(self, {n})"
    );
    Ok(list)
}

// ---------------------------------------------------------------------------
// Granter
// ---------------------------------------------------------------------------

fn granter(args: &BootArgs<'_>) -> TestResult {
    let guest = domid(args, "guest")?;
    let other = domid(args, "other")?;
    let mb = mailbox(args)?;
    place_frames()?;
    // SAFETY: frame 0 sits at GNTTAB_BASE (placed above).
    let Some(table) = (unsafe { GrantTable::new(GNTTAB_BASE as usize, 1) }) else {
        fail!("grant window not usable");
    };
    for (page, seed) in [
        (&PAGE_RW, 1),
        (&PAGE_RO, 2),
        (&PAGE_COPY, 3),
        (&PAGE_KEEP, 4),
    ] {
        fill(&region_of(page)?, seed);
    }
    for (gref, to, page, readonly) in [
        (REF_RW, guest, gfn32(&PAGE_RW), false),
        (REF_RO, guest, gfn32(&PAGE_RO), true),
        (REF_OTHER, other, gfn32(&PAGE_OTHER), false),
        (REF_NOT_RAM, guest, (GNTTAB_BASE / PAGE) as u32, false),
        (REF_COPY, guest, gfn32(&PAGE_COPY), false),
        (REF_KEEP, guest, gfn32(&PAGE_KEEP), true),
    ] {
        ensure!(
            table.grant_access(gref, to, page, readonly),
            "grant ref {gref}"
        );
    }
    mb.store_u64(GRANTER_STAGE, GRANTS_READY);
    println!("grants: granter placed its frames and granted refs {REF_RW}..={REF_KEEP}");

    wait_stage(&mb, GUEST_STAGE, MAPPED, "mapped")?;
    let flags = |gref| table.flags(gref).unwrap_or(0);
    let in_use = gtf::READING | gtf::WRITING;
    ensure!(
        flags(REF_RW) == gtf::PERMIT_ACCESS | in_use,
        "writable mapping: flags {:#x}, expected reading|writing",
        flags(REF_RW)
    );
    ensure!(
        flags(REF_RO) == gtf::PERMIT_ACCESS | gtf::READONLY | gtf::READING,
        "read-only mapping: flags {:#x}, expected readonly|reading",
        flags(REF_RO)
    );
    ensure!(
        flags(REF_OTHER) & in_use == 0 && flags(REF_NOT_RAM) & in_use == 0,
        "refused maps left flags behind: {:#x} {:#x}",
        flags(REF_OTHER),
        flags(REF_NOT_RAM)
    );
    for gref in [REF_RW, REF_RO] {
        ensure!(
            matches!(table.end_access(gref), Err(EndAccessError::InUse(_))),
            "revoking ref {gref} succeeded while the guest maps it"
        );
    }
    expect_pattern(
        "page the guest wrote",
        &region_of(&PAGE_RW)?,
        0,
        PAGE as usize,
        0x5a,
        0,
    )?;
    mb.store_u64(GRANTER_STAGE, SAW_MAPPINGS);

    wait_stage(&mb, GUEST_STAGE, UNMAPPED, "unmapped")?;
    for gref in [REF_RW, REF_RO] {
        ensure!(
            flags(gref) & in_use == 0,
            "ref {gref} still has flags {:#x} after the unmap",
            flags(gref)
        );
        ok!(table.end_access(gref), "revoke ref {gref} after the unmap");
    }

    wait_stage(&mb, GUEST_STAGE, COPIED, "copied")?;
    let copy_page = region_of(&PAGE_COPY)?;
    expect_pattern(
        "bytes the guest copied in",
        &copy_page,
        COPY_AT.into(),
        COPY_LEN.into(),
        7,
        COPY_FROM.into(),
    )?;
    expect_pattern("bytes around the copy", &copy_page, 0, COPY_AT.into(), 3, 0)?;
    ensure!(
        flags(REF_COPY) & in_use == 0,
        "copies left flags {:#x}",
        flags(REF_COPY)
    );
    // Now the other way: into the page the guest granted us.
    let own = region_of(&OWN_SRC)?;
    fill(&own, 9);
    let guest_ref = mb.load_u64(GUEST_REF) as u32;
    expect_status!(
        copy_request(
            CopyEnd::Frame { gfn: OWN_SRC.gfn() },
            0,
            CopyEnd::Gref {
                dom: guest,
                gref: guest_ref
            },
            0,
            PAGE as u16 - 1,
        ),
        Okay,
        "copy into the guest's ref {guest_ref}"
    );
    expect_status!(
        copy_request(
            CopyEnd::Frame { gfn: OWN_SRC.gfn() },
            0,
            CopyEnd::Gref {
                dom: guest,
                gref: guest_ref + 1
            },
            0,
            1,
        ),
        GeneralError,
        "copy into a ref the guest did not grant"
    );
    mb.store_u64(GRANTER_STAGE, COPIED_TO_GUEST);

    wait_stage(&mb, GUEST_STAGE, DONE, "done")?;
    // The guest powers off still mapping REF_KEEP: its teardown drops the
    // pin, and then the ref can be revoked.
    ensure!(
        wait_until(WAIT_MS, || flags(REF_KEEP) & in_use == 0),
        "the guest's teardown never released ref {REF_KEEP} (flags {:#x})",
        flags(REF_KEEP)
    );
    ok!(
        table.end_access(REF_KEEP),
        "revoke ref {REF_KEEP} after the guest stopped"
    );
    println!("grants: granter saw pins come and go, revoked every ref");
    Ok(())
}

/// Frame placement: errors, a move, and what `setup_table`/`query_size`
/// report. Leaves frame 0 at GNTTAB_BASE and frame 1 two pages above.
fn place_frames() -> TestResult {
    let base = GNTTAB_BASE / PAGE;
    let q = query_size(DOMID_SELF)?;
    ensure!(
        q.nr_frames.get() == 0 && q.max_nr_frames.get() == MAX_FRAMES,
        "query_size before placing: {} of {}",
        q.nr_frames.get(),
        q.max_nr_frames.get()
    );
    let list = setup_table(1)?;
    ensure!(
        list[0] == INVALID_GFN,
        "setup_table reports unplaced frame 0 at {:#x}",
        list[0]
    );
    expect_status!(
        GnttabSetupTable {
            dom: DOMID_SELF.into(),
            nr_frames: (MAX_FRAMES + 1).into(),
            ..Default::default()
        },
        GeneralError,
        "setup_table(self, 9)"
    );
    expect_errno!(
        gnt::place_frame(u64::from(MAX_FRAMES), base),
        Einval,
        "place frame 8"
    );
    expect_errno!(
        gnt::place_frame(0, OWN_SRC.gfn()),
        Einval,
        "place frame 0 over RAM"
    );
    expect_errno!(
        gnt::place_frame(0, (GNTTAB_BASE + GNTTAB_SIZE) / PAGE),
        Einval,
        "place frame 0 past the grant window"
    );
    ok!(gnt::place_frame(0, base), "place frame 0");
    ok!(gnt::place_frame(0, base), "place frame 0 again, same place");
    expect_errno!(
        gnt::place_frame(1, base),
        Einval,
        "place frame 1 on frame 0"
    );
    ok!(gnt::place_frame(1, base + 1), "place frame 1");
    let marker = page_at(GNTTAB_BASE + PAGE)?;
    // The last entry of frame 1 (ref 1023): nothing uses it.
    marker.store_u64(PAGE as usize - 8, 0x6772_616e_7473);
    ok!(gnt::place_frame(1, base + 2), "move frame 1");
    let moved = page_at(GNTTAB_BASE + 2 * PAGE)?;
    ensure!(
        moved.load_u64(PAGE as usize - 8) == 0x6772_616e_7473,
        "frame 1 lost its contents when it moved"
    );
    moved.store_u64(PAGE as usize - 8, 0);
    let list = setup_table(3)?;
    ensure!(
        list[..3] == [base, base + 2, INVALID_GFN],
        "setup_table after the move: {:#x?}",
        &list[..3]
    );
    let q = query_size(DOMID_SELF)?;
    ensure!(
        q.nr_frames.get() == 2,
        "query_size: {} frames, expected 2",
        q.nr_frames.get()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Guest
// ---------------------------------------------------------------------------

fn map(dom: u16, gref: u32, at: u64, readonly: bool) -> Result<GrantHandle, Reason> {
    let op = expect_status!(
        map_request(dom, gref, at, readonly),
        Okay,
        "map d{dom} ref {gref} at {at:#x}"
    );
    Ok(op.handle.get())
}

fn unmap(at: u64, handle: GrantHandle) -> TestResult {
    expect_status!(
        unmap_request(at, handle),
        Okay,
        "unmap handle {handle} at {at:#x}"
    );
    Ok(())
}

fn guest(args: &BootArgs<'_>) -> TestResult {
    let granter = domid(args, "granter")?;
    let peer = domid(args, "peer")?;
    let mb = mailbox(args)?;
    call_errors(granter)?;
    wait_stage(&mb, GRANTER_STAGE, GRANTS_READY, "grants ready")?;
    map_errors(granter, peer)?;

    let rw = map(granter, REF_RW, AT_RW, false)?;
    let ro = map(granter, REF_RO, AT_RO, true)?;
    expect_status!(
        map_request(granter, REF_RO, AT_RO, true),
        BadVirtAddr,
        "map again where something is mapped"
    );
    let (rw_page, ro_page) = (page_at(AT_RW)?, page_at(AT_RO)?);
    expect_pattern("writable mapping", &rw_page, 0, PAGE as usize, 1, 0)?;
    expect_pattern("read-only mapping", &ro_page, 0, PAGE as usize, 2, 0)?;
    fill(&rw_page, 0x5a);
    batch(granter)?;
    mb.store_u64(GUEST_STAGE, MAPPED);

    wait_stage(&mb, GRANTER_STAGE, SAW_MAPPINGS, "the granter's checks")?;
    expect_status!(
        unmap_request(AT_RW, 4096),
        BadHandle,
        "unmap an unknown handle"
    );
    expect_status!(
        unmap_request(AT_RW, INVALID_GRANT_HANDLE),
        BadHandle,
        "unmap INVALID_GRANT_HANDLE"
    );
    expect_status!(
        unmap_request(AT_RO, rw),
        GeneralError,
        "unmap at the wrong address"
    );
    let mut with_dev = unmap_request(AT_RW, rw);
    with_dev.dev_bus_addr = 0x1000.into();
    expect_status!(with_dev, BadDevAddr, "unmap with a device address");
    unmap(AT_RW, rw)?;
    unmap(AT_RO, ro)?;
    expect_status!(
        unmap_request(AT_RW, rw),
        BadHandle,
        "unmap the same handle twice"
    );
    mb.store_u64(GUEST_STAGE, UNMAPPED);

    copies(granter, peer)?;
    let own = own_table()?;
    ensure!(
        own.grant_access(REF_OWN, granter, gfn32(&PAGE_E), false),
        "grant our page to the granter"
    );
    mb.store_u64(GUEST_REF, u64::from(REF_OWN));
    mb.store_u64(GUEST_STAGE, COPIED);

    wait_stage(&mb, GRANTER_STAGE, COPIED_TO_GUEST, "the granter's copy")?;
    let e = region_of(&PAGE_E)?;
    expect_pattern(
        "bytes the granter copied in",
        &e,
        0,
        PAGE as usize - 1,
        9,
        0,
    )?;
    ensure!(
        own.flags(REF_OWN).unwrap_or(0) & (gtf::READING | gtf::WRITING) == 0,
        "the granter's copy left flags on our ref"
    );
    ok!(own.end_access(REF_OWN), "revoke our ref after the copy");

    // Kept mapped on purpose: powering off must release it.
    map(granter, REF_KEEP, AT_KEEP, true)?;
    expect_pattern("the page kept mapped", &page_at(AT_KEEP)?, 0, 64, 4, 0)?;
    mb.store_u64(GUEST_STAGE, DONE);
    println!(
        "grants: guest mapped, wrote, unmapped and copied; powering off with ref {REF_KEEP} mapped"
    );
    Ok(())
}

/// Raw `grant_table_op` for calls the typed wrapper cannot make.
fn raw_op(cmd: u64, uop: u64, count: u64) -> u64 {
    // SAFETY: every pointer passed is either null, outside RAM, or an
    // owned, writable structure (see each call).
    unsafe { hypercall(Op::GrantTableOp as u64, cmd, uop, count, 0, 0, 0) }
}

/// Whole-call errors and the version sub-commands.
fn call_errors(granter: u16) -> TestResult {
    for cmd in [3u64, 4, 7, 9, 11, 99] {
        expect_ret!(
            raw_op(cmd, 0, 0),
            Enosys,
            "grant_table_op sub-command {cmd}"
        );
    }
    let mut one = GnttabMapGrantRef::default();
    let ptr = &mut one as *mut GnttabMapGrantRef as u64;
    expect_ret!(
        raw_op(GnttabCmd::MapGrantRef as u64, ptr, 1 << 31),
        Einval,
        "map with a count above INT_MAX"
    );
    expect_ret!(
        raw_op(GnttabCmd::QuerySize as u64, ptr, 2),
        Einval,
        "query_size with two elements"
    );
    for bad in [0x1000u64, 0x1_0000_0000, u64::MAX - 8] {
        expect_ret!(
            raw_op(GnttabCmd::MapGrantRef as u64, bad, 1),
            Efault,
            "map from {bad:#x}"
        );
    }
    ensure!(
        raw_op(GnttabCmd::MapGrantRef as u64, 0x1000, 0) == 0,
        "an empty batch must succeed without reading"
    );
    let mut v = GnttabSetVersion { version: 1.into() };
    ok!(gnt::op1(&mut v), "set_version(1)");
    let mut v = GnttabSetVersion { version: 2.into() };
    expect_errno!(gnt::op1(&mut v), Enosys, "set_version(2)");
    ensure!(
        v.version.get() == 1,
        "set_version(2) reports version {}",
        v.version.get()
    );
    let mut g = GnttabGetVersion {
        dom: DOMID_SELF.into(),
        ..Default::default()
    };
    ok!(gnt::op1(&mut g), "get_version(self)");
    ensure!(g.version.get() == 1, "get_version: {}", g.version.get());
    let mut g = GnttabGetVersion {
        dom: 99.into(),
        ..Default::default()
    };
    expect_errno!(gnt::op1(&mut g), Esrch, "get_version(d99)");
    // Looking at the granter's table is not ours to do (policy).
    expect_status!(
        GnttabQuerySize {
            dom: granter.into(),
            ..Default::default()
        },
        PermissionDenied,
        "query_size(d{granter})"
    );
    expect_status!(
        GnttabQuerySize {
            dom: 99.into(),
            ..Default::default()
        },
        BadDomain,
        "query_size(d99)"
    );
    Ok(())
}

/// Every `map_grant_ref` refusal; none may leave a mapping behind.
fn map_errors(granter: u16, peer: u16) -> TestResult {
    expect_status!(
        map_request(granter, REF_OTHER, AT_RW, false),
        GeneralError,
        "map a ref granted to another domain"
    );
    expect_status!(
        map_request(granter, REF_RO, AT_RW, false),
        GeneralError,
        "map a read-only grant writable"
    );
    expect_status!(
        map_request(granter, REF_NOT_RAM, AT_RW, false),
        BadPage,
        "map a grant of a frame that is not the granter's RAM"
    );
    expect_status!(
        map_request(granter, 512, AT_RW, false),
        GeneralError,
        "map an empty entry"
    );
    expect_status!(
        map_request(granter, 8 * 512, AT_RW, false),
        BadGntref,
        "map a ref past the table"
    );
    expect_status!(
        map_request(granter, REF_RW, OWN_DST.gfn() * PAGE, false),
        BadVirtAddr,
        "map over our RAM"
    );
    expect_status!(
        map_request(granter, REF_RW, AT_RW + 8, false),
        BadVirtAddr,
        "map at an unaligned address"
    );
    let mut no_host = map_request(granter, REF_RW, AT_RW, false);
    no_host.flags = 0.into();
    expect_status!(no_host, BadGntref, "map without GNTMAP_host_map");
    expect_status!(
        map_request(99, REF_RW, AT_RW, false),
        BadDomain,
        "map from a domain that does not exist"
    );
    expect_status!(
        map_request(DOMID_SELF + 1, REF_RW, AT_RW, false),
        BadDomain,
        "map from a reserved domain id"
    );
    // Guest to guest: the policy refuses before the entry is even read.
    expect_status!(
        map_request(peer, REF_OWN, AT_RW, false),
        PermissionDenied,
        "map the peer's grant"
    );
    expect_status!(
        map_request(peer, REF_OWN, AT_RW, true),
        PermissionDenied,
        "map the peer's grant read-only"
    );
    Ok(())
}

/// A batch of `BATCH` read-only maps of one ref and its unmaps: more than
/// one pass each, so the kernel re-executes the call (a continuation).
fn batch(granter: u16) -> TestResult {
    let mut maps = [GnttabMapGrantRef::default(); BATCH];
    for (i, m) in maps.iter_mut().enumerate() {
        *m = map_request(granter, REF_RO, AT_BATCH + i as u64 * PAGE, true);
        m.status = 1.into();
    }
    ok!(gnt::op(&mut maps), "batch of {BATCH} maps");
    for (i, m) in maps.iter().enumerate() {
        ensure!(
            status(m.status.get()) == Some(GntSt::Okay),
            "batch map {i}: status {:?}",
            status(m.status.get())
        );
    }
    expect_pattern(
        "last page of the batch",
        &page_at(AT_BATCH + (BATCH as u64 - 1) * PAGE)?,
        0,
        256,
        2,
        0,
    )?;
    let mut unmaps = [GnttabUnmapGrantRef::default(); BATCH];
    for (u, m) in unmaps.iter_mut().zip(&maps) {
        *u = unmap_request(m.host_addr.get(), m.handle.get());
        u.status = 1.into();
    }
    ok!(gnt::op(&mut unmaps), "batch of {BATCH} unmaps");
    for (i, u) in unmaps.iter().enumerate() {
        ensure!(
            status(u.status.get()) == Some(GntSt::Okay),
            "batch unmap {i}: status {:?}",
            status(u.status.get())
        );
    }
    Ok(())
}

/// Copies through the granter's ref, both ways, and their refusals.
fn copies(granter: u16, peer: u16) -> TestResult {
    let src = region_of(&OWN_SRC)?;
    fill(&src, 7);
    let via = CopyEnd::Gref {
        dom: granter,
        gref: REF_COPY,
    };
    let (from, to) = (
        CopyEnd::Frame { gfn: OWN_SRC.gfn() },
        CopyEnd::Frame { gfn: OWN_DST.gfn() },
    );
    expect_status!(
        copy_request(from, COPY_FROM, via, COPY_AT, COPY_LEN),
        Okay,
        "copy into ref {REF_COPY}"
    );
    expect_status!(
        copy_request(via, COPY_AT, to, 0, COPY_LEN),
        Okay,
        "copy out of ref {REF_COPY}"
    );
    expect_pattern(
        "bytes copied back",
        &region_of(&OWN_DST)?,
        0,
        COPY_LEN.into(),
        7,
        COPY_FROM.into(),
    )?;
    let mut batch = [
        copy_request(from, 0, to, 0, 8),
        copy_request(from, 4000, via, 0, 100),
        copy_request(via, 0, to, 0, 8),
    ];
    ok!(gnt::op(&mut batch), "a batch of three copies");
    let got: [Option<GntSt>; 3] = [
        status(batch[0].status.get()),
        status(batch[1].status.get()),
        status(batch[2].status.get()),
    ];
    ensure!(
        got == [
            Some(GntSt::Okay),
            Some(GntSt::BadCopyArg),
            Some(GntSt::Okay)
        ],
        "batch of copies: statuses {got:?}"
    );
    let refusals: [(GnttabCopy, GntSt, &str); 6] = [
        (copy_request(via, 0, to, 0, 0), GntSt::Okay, "an empty copy"),
        (
            copy_request(
                CopyEnd::Gref {
                    dom: granter,
                    gref: REF_KEEP,
                },
                0,
                to,
                0,
                8,
            ),
            GntSt::Okay,
            "a copy out of a read-only grant",
        ),
        (
            copy_request(
                from,
                0,
                CopyEnd::Gref {
                    dom: granter,
                    gref: REF_KEEP,
                },
                0,
                8,
            ),
            GntSt::GeneralError,
            "a copy into a read-only grant",
        ),
        (
            copy_request(
                CopyEnd::Gref {
                    dom: granter,
                    gref: REF_OTHER,
                },
                0,
                to,
                0,
                8,
            ),
            GntSt::GeneralError,
            "a copy from a ref granted to another domain",
        ),
        (
            copy_request(
                CopyEnd::Gref {
                    dom: peer,
                    gref: REF_OWN,
                },
                0,
                to,
                0,
                8,
            ),
            GntSt::PermissionDenied,
            "a copy from the peer (policy)",
        ),
        (
            copy_request(
                from,
                0,
                CopyEnd::Frame {
                    gfn: (GNTTAB_BASE / PAGE) + 100,
                },
                0,
                8,
            ),
            GntSt::BadPage,
            "a copy into a frame that is not our RAM",
        ),
    ];
    for (op, want, what) in refusals {
        let mut op = op;
        ok!(gnt::op1(&mut op), "{what}");
        ensure!(
            status(op.status.get()) == Some(want),
            "{what}: status {:?}, expected {want:?}",
            status(op.status.get())
        );
    }
    let mut foreign = copy_request(from, 0, to, 0, 8);
    foreign.dest.domid = granter.into();
    expect_status!(
        foreign,
        PermissionDenied,
        "a copy naming another domain's frame"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Peer
// ---------------------------------------------------------------------------

fn peer(args: &BootArgs<'_>) -> TestResult {
    let guest = domid(args, "guest")?;
    let table = own_table()?;
    ensure!(
        table.grant_access(REF_OWN, guest, gfn32(&PAGE_PEER), false),
        "grant our page to the guest"
    );
    println!("grants: peer granted ref {REF_OWN} to d{guest}, which the policy forbids it to use");
    Ok(())
}

// ---------------------------------------------------------------------------
// Restart
// ---------------------------------------------------------------------------

fn restart_granter(args: &BootArgs<'_>) -> TestResult {
    let guest = domid(args, "guest")?;
    let mb = mailbox(args)?;
    let boots = mb.load_u64(GRANTER_BOOTS);
    mb.store_u64(GRANTER_BOOTS, boots + 1);
    let base = GNTTAB_BASE / PAGE;
    if boots == 0 {
        ok!(gnt::place_frame(0, base), "place frame 0");
        ok!(gnt::place_frame(1, base + 1), "place frame 1");
        // SAFETY: frame 0 was just placed at GNTTAB_BASE.
        let Some(table) = (unsafe { GrantTable::new(GNTTAB_BASE as usize, 1) }) else {
            fail!("grant window not usable");
        };
        fill(&region_of(&PAGE_RW)?, 1);
        ensure!(
            table.grant_access(REF_RW, guest, gfn32(&PAGE_RW), false),
            "grant ref {REF_RW}"
        );
        mb.store_u64(GRANTER_STAGE, GRANTS_READY);
        wait_stage(&mb, GUEST_STAGE, MAPPED, "mapped")?;
        println!("grants: granter rebooting while the guest maps ref {REF_RW}");
        tessera_rt::exit(tessera_ipc::hypercall::ShutdownReason::Reboot);
    }
    let q = query_size(DOMID_SELF)?;
    ensure!(
        q.nr_frames.get() == 0,
        "after the restart {} frames are placed",
        q.nr_frames.get()
    );
    let list = setup_table(2)?;
    ensure!(
        list[..2] == [INVALID_GFN, INVALID_GFN],
        "after the restart setup_table reports {:#x?}",
        &list[..2]
    );
    ok!(
        gnt::place_frame(0, base),
        "place frame 0 where it was before the restart"
    );
    ok!(
        gnt::place_frame(1, base + 1),
        "place frame 1 where it was before the restart"
    );
    // SAFETY: frame 0 was just placed at GNTTAB_BASE.
    let Some(table) = (unsafe { GrantTable::new(GNTTAB_BASE as usize, 1) }) else {
        fail!("grant window not usable");
    };
    ensure!(
        table.flags(REF_RW) == Some(0),
        "ref {REF_RW} survived the restart (flags {:#x?})",
        table.flags(REF_RW)
    );
    fill(&region_of(&PAGE_RW)?, 2);
    ensure!(
        table.grant_access(REF_RW, guest, gfn32(&PAGE_RW), false),
        "grant ref {REF_RW} again"
    );
    mb.store_u64(GRANTER_STAGE, REGRANTED);
    wait_stage(&mb, GUEST_STAGE, DONE, "done")?;
    ensure!(
        table.flags(REF_RW).unwrap_or(0) & (gtf::READING | gtf::WRITING) == 0,
        "the guest's unmap left flags {:#x?}",
        table.flags(REF_RW)
    );
    ok!(table.end_access(REF_RW), "revoke ref {REF_RW}");
    println!("grants: restarted granter found fresh frames and granted again");
    Ok(())
}

fn restart_guest(args: &BootArgs<'_>) -> TestResult {
    let granter = domid(args, "granter")?;
    let mb = mailbox(args)?;
    wait_stage(&mb, GRANTER_STAGE, GRANTS_READY, "grants ready")?;
    let old = map(granter, REF_RW, AT_RW, false)?;
    expect_pattern(
        "the first incarnation's page",
        &page_at(AT_RW)?,
        0,
        PAGE as usize,
        1,
        0,
    )?;
    mb.store_u64(GUEST_STAGE, MAPPED);
    // Nothing touches AT_RW from here until it is mapped again: the
    // granter's teardown unmaps it, and an access would be a stage-2 fault.
    wait_stage(&mb, GRANTER_STAGE, REGRANTED, "the granter's restart")?;
    expect_status!(
        unmap_request(AT_RW, old),
        BadHandle,
        "unmap the handle the restart took"
    );
    let new = map(granter, REF_RW, AT_RW, false)?;
    expect_pattern(
        "the new incarnation's page",
        &page_at(AT_RW)?,
        0,
        PAGE as usize,
        2,
        0,
    )?;
    unmap(AT_RW, new)?;
    mb.store_u64(GUEST_STAGE, DONE);
    println!("grants: guest lost its mapping to the granter's restart and mapped again");
    Ok(())
}
