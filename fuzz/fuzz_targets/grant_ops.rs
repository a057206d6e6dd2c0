//! Grant-table ops against a granter that writes whatever it likes: guest
//! op structures, entry contents and races on the compare-exchange all come
//! from fuzz input. Whatever happens, every pin held releases cleanly (no
//! underflow), the pin counts equal what the two grantees hold, and on
//! entries the granter has not scribbled over, `GTF_reading`/`GTF_writing`
//! mirror the pins exactly.
#![no_main]
use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use tessera_ipc::errno::Errno;
use tessera_ipc::grant_table::{
    gntcopy, gntmap, gtf, join_header, split_header, GntSt, GnttabCmd, GnttabCopy, GnttabCopyPtr,
    GnttabMapGrantRef, GnttabUnmapGrantRef, GrantRef,
};
use tessera_ipc::platform::EXT_REGION_BASE;
use tessera_kernel::addr::PAGE_SIZE;
use tessera_kernel::grant::{
    self, Access, ActiveGrants, AtomicEntries, Batch, CopyPin, CopyRequest, CopySide, GrantEntries,
    GrantFrames, MapRequest, MapTrack, UnmapRequest,
};

type Fuzz<T> = libfuzzer_sys::arbitrary::Result<T>;

const GRANTER: u16 = 1;
const GRANTEES: [u16; 2] = [2, 3];
/// Refs in the granter's table; refs up to `REFS + 3` are tried too.
const REFS: usize = 16;
const OUR_BITS: u32 = (gtf::READING | gtf::WRITING) as u32;

/// The granter's entries, with a scripted guest write just before each of
/// the hypervisor's first compare-exchanges (the guest wins those races).
struct Racing<'a> {
    inner: AtomicEntries<'a>,
    words: &'a [AtomicU32],
    script: [Option<u32>; 2],
    step: Cell<usize>,
}

impl GrantEntries for Racing<'_> {
    fn nr_entries(&self) -> u32 {
        self.inner.nr_entries()
    }
    fn load_header(&self, r: GrantRef) -> u32 {
        self.inner.load_header(r)
    }
    fn compare_exchange_header(&self, r: GrantRef, current: u32, new: u32) -> Result<(), u32> {
        let step = self.step.get();
        self.step.set(step + 1);
        if let (Some(Some(v)), Some(w)) = (self.script.get(step), self.words.get(2 * r as usize)) {
            w.store(*v, Ordering::Release);
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

struct World {
    words: Vec<AtomicU32>,
    active: Box<ActiveGrants>,
    tracks: [Box<MapTrack>; 2],
    copies: Vec<CopyPin>,
    /// Refs whose in-use bits the granter may have overwritten since they
    /// were last released to idle: their flags are not ours to check.
    scribbled: [bool; REFS],
    frames: GrantFrames,
}

impl World {
    fn flags(&self, r: usize) -> u16 {
        split_header(self.words[2 * r].load(Ordering::Relaxed)).0
    }

    /// Read-only and writable users of `r`: mappings plus copy pins.
    fn users(&self, r: usize) -> (usize, usize) {
        let maps = self
            .tracks
            .iter()
            .flat_map(|t| t.iter())
            .map(|(_, m)| (m.gref(), m.readonly()));
        let copies = self
            .copies
            .iter()
            .map(|c| (c.gref(), c.access() == Access::Read));
        let (mut readers, mut writers) = (0, 0);
        for (_, ro) in maps.chain(copies).filter(|&(g, _)| g as usize == r) {
            if ro {
                readers += 1;
            } else {
                writers += 1;
            }
        }
        (readers, writers)
    }

    fn check(&self) {
        for r in 0..REFS {
            let p = self.active.pins(r as u32);
            assert_eq!(
                (usize::from(p.readers), usize::from(p.writers)),
                self.users(r),
                "ref {r}"
            );
            if !self.scribbled[r] {
                let f = self.flags(r);
                assert_eq!(f & gtf::READING != 0, !p.is_zero(), "ref {r} flags {f:#x}");
                assert_eq!(f & gtf::WRITING != 0, p.writers > 0, "ref {r} flags {f:#x}");
            }
        }
    }

    /// After one of our releases: if `r` went idle we cleared both bits.
    fn settle(&mut self, r: GrantRef) {
        if self.active.pins(r).is_zero() {
            if let Some(s) = self.scribbled.get_mut(r as usize) {
                *s = false;
            }
        }
    }

    fn release_mapping(&mut self, m: grant::Mapping) {
        let r = m.gref();
        let entries = AtomicEntries::new(&self.words);
        grant::release_mapping(&mut self.active, &entries, m).expect("a taken mapping releases");
        self.settle(r);
    }

    fn release_copy(&mut self, p: CopyPin) {
        let r = p.gref();
        let entries = AtomicEntries::new(&self.words);
        grant::unpin_copy(&mut self.active, &entries, p).expect("a held copy pin releases");
        self.settle(r);
    }
}

fn a_ref(u: &mut Unstructured) -> Fuzz<u32> {
    u.int_in_range(0..=REFS as u32 + 3)
}

fn map_op(u: &mut Unstructured, w: &mut World, racing: bool) -> Fuzz<()> {
    let t = usize::from(u.arbitrary::<bool>()?);
    let flags = if u.ratio(1, 8)? {
        u.arbitrary::<u32>()?
    } else if u.arbitrary()? {
        gntmap::HOST_MAP | gntmap::READONLY
    } else {
        gntmap::HOST_MAP
    };
    let dom = if u.ratio(1, 16)? {
        u.arbitrary()?
    } else {
        GRANTER
    };
    let host_addr = if u.ratio(1, 16)? {
        u.arbitrary()?
    } else {
        EXT_REGION_BASE + u64::from(u.int_in_range(0..=31u8)?) * PAGE_SIZE
    };
    let op = GnttabMapGrantRef {
        host_addr: host_addr.into(),
        flags: flags.into(),
        gref: a_ref(u)?.into(),
        dom: dom.into(),
        ..Default::default()
    };
    let install_fails = u.ratio(1, 8)?;
    let script = if racing {
        [Some(u.arbitrary()?), u.arbitrary()?]
    } else {
        [None, None]
    };
    let Ok(req) = MapRequest::decode(&op) else {
        return Ok(());
    };
    if req.granter != GRANTER {
        return Ok(());
    }
    if racing {
        if let Some(s) = w.scribbled.get_mut(req.gref as usize) {
            *s = true;
        }
    }
    let entries = Racing {
        inner: AtomicEntries::new(&w.words),
        words: &w.words,
        script,
        step: Cell::new(0),
    };
    let before = w.active.pins(req.gref);
    let res = grant::map(&mut w.tracks[t], &mut w.active, &entries, &req, |gfn| {
        if install_fails {
            Err(GntSt::BadPage)
        } else {
            Ok(gfn)
        }
    });
    let mut out = op;
    grant::write_map_status(&mut out, res.map(|(h, _)| h));
    match res {
        Ok((h, _)) => {
            assert!(!install_fails);
            assert_eq!(
                w.tracks[t].get(h).map(|m| m.host_addr()),
                Some(req.host_addr)
            );
            assert_eq!(out.status.get(), 0);
        }
        Err(s) => {
            assert_eq!(
                w.active.pins(req.gref),
                before,
                "a failed map leaves no pin"
            );
            assert_eq!(GntSt::from_i16(out.status.get()), Some(s));
            assert_ne!(s, GntSt::Okay);
        }
    }
    Ok(())
}

fn unmap_op(u: &mut Unstructured, w: &mut World) -> Fuzz<()> {
    let t = usize::from(u.arbitrary::<bool>()?);
    let live: Vec<_> = w.tracks[t].iter().collect();
    let (handle, host_addr) = if !live.is_empty() && !u.ratio(1, 8)? {
        let (h, m) = live[u.choose_index(live.len())?];
        (h, m.host_addr().raw())
    } else {
        (u.arbitrary()?, u.arbitrary()?)
    };
    let op = GnttabUnmapGrantRef {
        host_addr: host_addr.into(),
        dev_bus_addr: (if u.ratio(1, 16)? {
            u.arbitrary()?
        } else {
            0u64
        })
        .into(),
        handle: handle.into(),
        ..Default::default()
    };
    let Ok(req) = UnmapRequest::decode(&op) else {
        return Ok(());
    };
    let len = w.tracks[t].len();
    match w.tracks[t].take(req.handle, req.host_addr) {
        Ok(m) => w.release_mapping(m),
        Err(_) => assert_eq!(w.tracks[t].len(), len, "a failed unmap removes nothing"),
    }
    Ok(())
}

fn copy_ptr(u: &mut Unstructured, steer: bool) -> Fuzz<GnttabCopyPtr> {
    Ok(GnttabCopyPtr {
        u: (if steer {
            u64::from(a_ref(u)?)
        } else {
            u.arbitrary()?
        })
        .into(),
        domid: (if steer { GRANTER } else { u.arbitrary()? }).into(),
        offset: (if steer {
            u.int_in_range(0..=4096u16)?
        } else {
            u.arbitrary()?
        })
        .into(),
        ..Default::default()
    })
}

fn copy_op(u: &mut Unstructured, w: &mut World) -> Fuzz<()> {
    let t = usize::from(u.arbitrary::<bool>()?);
    let caller = GRANTEES[t];
    // Steer most ops at the granter's small table.
    let steer = u.ratio(3, 4)?;
    let op = GnttabCopy {
        source: copy_ptr(u, steer)?,
        dest: copy_ptr(u, steer)?,
        len: (if steer {
            u.int_in_range(0..=4096u16)?
        } else {
            u.arbitrary()?
        })
        .into(),
        flags: (if steer {
            u.int_in_range(0..=gntcopy::SOURCE_GREF | gntcopy::DEST_GREF)?
        } else {
            u.arbitrary()?
        })
        .into(),
        ..Default::default()
    };
    let Ok(req) = CopyRequest::decode(&op, caller) else {
        return Ok(());
    };
    let mut pins = Vec::new();
    for (side, access) in [(req.source, Access::Read), (req.dest, Access::Write)] {
        let CopySide::Gref {
            granter: GRANTER,
            gref,
        } = side
        else {
            continue;
        };
        let entries = AtomicEntries::new(&w.words);
        let before = w.active.pins(gref);
        match grant::pin_for_copy(&mut w.active, &entries, gref, caller, access) {
            Ok(p) => pins.push(p),
            Err(_) => {
                assert_eq!(w.active.pins(gref), before, "a failed pin changes nothing");
                // As the kernel does: a failed side releases the other.
                for p in pins.drain(..) {
                    w.release_copy(p);
                }
                return Ok(());
            }
        }
    }
    w.copies.extend(pins);
    Ok(())
}

fn uncopy_op(u: &mut Unstructured, w: &mut World) -> Fuzz<()> {
    if !w.copies.is_empty() {
        let p = w.copies.swap_remove(u.choose_index(w.copies.len())?);
        w.release_copy(p);
    }
    Ok(())
}

fn guest_write(u: &mut Unstructured, w: &mut World) -> Fuzz<()> {
    // Rewriting an entry in use is the interesting case.
    let pinned: Vec<usize> = (0..REFS)
        .filter(|&r| !w.active.pins(r as u32).is_zero())
        .collect();
    let r = if !pinned.is_empty() && u.arbitrary()? {
        pinned[u.choose_index(pinned.len())?]
    } else {
        u.choose_index(REFS)?
    };
    let keep_our_bits = !u.ratio(1, 4)?;
    let header = if u.ratio(3, 4)? {
        // A plausible rewrite: re-granted, made read-only, revoked, retyped.
        let kind = if u.ratio(2, 3)? {
            gtf::PERMIT_ACCESS
        } else {
            u.int_in_range(0..=3u16)?
        };
        let ro = if u.arbitrary()? { gtf::READONLY } else { 0 };
        let sub = if u.ratio(1, 8)? { gtf::SUB_PAGE } else { 0 };
        let flags = kind | ro | sub;
        let domid = match u.int_in_range(0..=3u8)? {
            0 => GRANTER,
            1 => GRANTEES[0],
            2 => GRANTEES[1],
            _ => u.arbitrary()?,
        };
        join_header(flags, domid)
    } else {
        u.arbitrary()?
    };
    w.words[2 * r + 1].store(u.arbitrary()?, Ordering::Relaxed);
    let old = w.words[2 * r].load(Ordering::Relaxed);
    let new = if keep_our_bits {
        (header & !OUR_BITS) | (old & OUR_BITS)
    } else {
        w.scribbled[r] = true;
        header
    };
    w.words[2 * r].store(new, Ordering::Release);
    Ok(())
}

fn teardown_op(u: &mut Unstructured, w: &mut World) -> Fuzz<()> {
    let t = usize::from(u.arbitrary::<bool>()?);
    while let Some(m) = w.tracks[t].take_any() {
        w.release_mapping(m);
    }
    Ok(())
}

fn decoders_op(u: &mut Unstructured, w: &mut World) -> Fuzz<()> {
    let cmd = GnttabCmd::ALL[u.choose_index(GnttabCmd::ALL.len())?];
    if let Ok(b) = Batch::decode(cmd, u.arbitrary()?, u.arbitrary()?) {
        assert!(b.this_pass() <= grant::MAX_BATCH);
        let _ = b.elem(u.arbitrary()?);
        if let Ok(Some((_, rest))) = b.continuation() {
            assert_eq!(rest, u64::from(b.count - b.this_pass()));
        }
    }
    let idx: u64 = if u.arbitrary()? {
        u.int_in_range(0..=9)?
    } else {
        u.arbitrary()?
    };
    let gpfn: u64 = u.arbitrary()?;
    let fail: bool = u.arbitrary()?;
    let before: Vec<_> = (0..grant::NR_GRANT_FRAMES)
        .map(|i| w.frames.gfn(i))
        .collect();
    let res = w.frames.place(
        idx,
        gpfn,
        |_| if fail { Err(Errno::Enomem) } else { Ok(()) },
    );
    if res.is_err() {
        let after: Vec<_> = (0..grant::NR_GRANT_FRAMES)
            .map(|i| w.frames.gfn(i))
            .collect();
        assert_eq!(before, after, "a refused placement changes nothing");
    }
    if let Ok(list) = w.frames.setup_table(u.arbitrary()?) {
        assert!(list.count() <= grant::NR_GRANT_FRAMES as usize);
    }
    Ok(())
}

fn setup(u: &mut Unstructured) -> Fuzz<World> {
    let w = World {
        words: (0..2 * REFS).map(|_| AtomicU32::new(0)).collect(),
        active: Box::new(ActiveGrants::new(GRANTER)),
        tracks: [
            Box::new(MapTrack::new(GRANTEES[0])),
            Box::new(MapTrack::new(GRANTEES[1])),
        ],
        copies: Vec::new(),
        scribbled: [false; REFS],
        frames: GrantFrames::new(),
    };
    // The initial table is the granter's choice, minus the in-use bits:
    // nothing is pinned yet.
    for r in 0..REFS {
        let header = if u.ratio(3, 4)? {
            let ro = if u.arbitrary()? { gtf::READONLY } else { 0 };
            join_header(
                gtf::PERMIT_ACCESS | ro,
                GRANTEES[usize::from(u.arbitrary::<bool>()?)],
            )
        } else {
            u.arbitrary()?
        };
        w.words[2 * r].store(header & !OUR_BITS, Ordering::Relaxed);
        w.words[2 * r + 1].store(u.arbitrary()?, Ordering::Relaxed);
    }
    Ok(w)
}

fn step(u: &mut Unstructured, w: &mut World) -> Fuzz<()> {
    match u.int_in_range(0..=9u8)? {
        0..=2 => map_op(u, w, false),
        3 => map_op(u, w, true),
        4 => unmap_op(u, w),
        5 => copy_op(u, w),
        6 => uncopy_op(u, w),
        7 => guest_write(u, w),
        8 => teardown_op(u, w),
        _ => decoders_op(u, w),
    }
}

/// Release everything still held: nothing may fail or be left pinned.
fn finish(w: &mut World) {
    for p in core::mem::take(&mut w.copies) {
        w.release_copy(p);
    }
    for t in 0..w.tracks.len() {
        while let Some(m) = w.tracks[t].take_any() {
            w.release_mapping(m);
        }
    }
    assert!(w.active.is_idle());
    for r in 0..REFS {
        if !w.scribbled[r] {
            assert_eq!(
                w.flags(r) & (gtf::READING | gtf::WRITING),
                0,
                "ref {r} left marked in use"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut w) = setup(&mut u) else {
        return;
    };
    for _ in 0..512 {
        // An op cut short by the end of the input has changed nothing yet.
        if u.is_empty() || step(&mut u, &mut w).is_err() {
            break;
        }
        w.check();
    }
    finish(&mut w);
});
