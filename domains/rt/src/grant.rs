//! Grant tables, guest side: the v1 entries in this domain's placed grant
//! frames, and typed `grant_table_op` wrappers
//! (docs/03-event-channels-and-sharing.md, "Grant tables").
//!
//! The one idea: while another domain maps or copies one of our entries,
//! the hypervisor keeps `GTF_reading` (and `GTF_writing`) set in it, and
//! changes the entry's 32-bit header word (`flags | domid << 16`) with
//! compare-exchange. So this side touches a header only atomically, as
//! Linux does: granting writes the frame first and publishes the header with
//! a release store; ending access is a compare-exchange that refuses while
//! either bit is set, so a page is never reused while someone still maps it.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};
use tessera_ipc::event_channel::DOMID_SELF;
use tessera_ipc::grant_table::{
    gntcopy, gntmap, gtf, join_header, split_header, GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef,
    GnttabUnmapGrantRef, GrantHandle, GrantRef, ENTRIES_PER_FRAME_V1,
};

/// Bytes of one grant-table frame.
pub const FRAME_SIZE: usize = 4096;

/// Why [`GrantTable::end_access`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndAccessError {
    /// The ref is outside the table.
    BadRef,
    /// Another domain still maps or copies the page (the flags found).
    InUse(u16),
}

/// The v1 entries of this domain's grant frames, placed contiguously at
/// `base` with `XENMEM_add_to_physmap(XENMAPSPACE_grant_table)`.
#[derive(Debug)]
pub struct GrantTable {
    base: NonNull<u8>,
    entries: u32,
}

// SAFETY: every access to the entries is atomic (headers) or a single
// aligned 32-bit atomic store/load (frames), as with another CPU's view.
unsafe impl Send for GrantTable {}
// SAFETY: as for `Send`.
unsafe impl Sync for GrantTable {}

impl GrantTable {
    /// The `nr_frames` frames at `base`; `None` if `base` is null or not
    /// page-aligned.
    ///
    /// # Safety
    /// `base..base + nr_frames * 4 KiB` must stay mapped (normal memory) for
    /// the rest of the program and be reached only through `GrantTable`s.
    pub unsafe fn new(base: usize, nr_frames: u32) -> Option<Self> {
        if !base.is_multiple_of(FRAME_SIZE) {
            return None;
        }
        let base = NonNull::new(base as *mut u8)?;
        Some(Self {
            base,
            entries: nr_frames.checked_mul(ENTRIES_PER_FRAME_V1)?,
        })
    }

    /// Refs `0..nr_entries()` exist.
    pub fn nr_entries(&self) -> u32 {
        self.entries
    }

    /// Word `i` of entry `gref` (0: header, 1: frame).
    fn word(&self, gref: GrantRef, i: usize) -> Option<&AtomicU32> {
        if gref >= self.entries {
            return None;
        }
        let off = gref as usize * 8 + i * 4;
        // SAFETY: `off` lies inside the frames `new`'s caller vouched for,
        // 4-byte aligned; every access to these words is atomic.
        Some(unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off).cast::<u32>()) })
    }

    /// Grants `domid` access to our frame `gfn` through `gref`
    /// (`gnttab_grant_foreign_access_ref`): the frame first, then the header
    /// with release ordering, so the hypervisor never sees a valid entry
    /// with a stale frame. Returns `false` for a ref outside the table.
    pub fn grant_access(&self, gref: GrantRef, domid: u16, gfn: u32, readonly: bool) -> bool {
        let (Some(header), Some(frame)) = (self.word(gref, 0), self.word(gref, 1)) else {
            return false;
        };
        frame.store(gfn, Ordering::Relaxed);
        let flags = gtf::PERMIT_ACCESS | if readonly { gtf::READONLY } else { 0 };
        header.store(join_header(flags, domid), Ordering::Release);
        true
    }

    /// Entry `gref`'s flags as they are now.
    pub fn flags(&self, gref: GrantRef) -> Option<u16> {
        Some(split_header(self.word(gref, 0)?.load(Ordering::Acquire)).0)
    }

    /// Ends access through `gref` (Linux's
    /// `gnttab_end_foreign_access_ref_v1`): clears the flags unless the
    /// hypervisor has the entry marked in use.
    pub fn end_access(&self, gref: GrantRef) -> Result<(), EndAccessError> {
        let header = self.word(gref, 0).ok_or(EndAccessError::BadRef)?;
        let mut current = header.load(Ordering::Acquire);
        loop {
            let (flags, domid) = split_header(current);
            if flags & (gtf::READING | gtf::WRITING) != 0 {
                return Err(EndAccessError::InUse(flags));
            }
            match header.compare_exchange(
                current,
                join_header(0, domid),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(found) => current = found,
            }
        }
    }
}

/// A `map_grant_ref` element: map `gref` of domain `dom` at `host_addr`.
pub fn map_request(dom: u16, gref: GrantRef, host_addr: u64, readonly: bool) -> GnttabMapGrantRef {
    let flags = gntmap::HOST_MAP | if readonly { gntmap::READONLY } else { 0 };
    GnttabMapGrantRef {
        host_addr: host_addr.into(),
        flags: flags.into(),
        gref: gref.into(),
        dom: dom.into(),
        ..Default::default()
    }
}

/// An `unmap_grant_ref` element.
pub fn unmap_request(host_addr: u64, handle: GrantHandle) -> GnttabUnmapGrantRef {
    GnttabUnmapGrantRef {
        host_addr: host_addr.into(),
        handle: handle.into(),
        ..Default::default()
    }
}

/// One side of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyEnd {
    /// `gref` of domain `dom`'s table.
    Gref { dom: u16, gref: GrantRef },
    /// Our own frame `gfn`.
    Frame { gfn: u64 },
}

impl CopyEnd {
    fn ptr(self, offset: u16) -> (GnttabCopyPtr, bool) {
        match self {
            CopyEnd::Gref { dom, gref } => (
                GnttabCopyPtr {
                    u: u64::from(gref).into(),
                    domid: dom.into(),
                    offset: offset.into(),
                    ..Default::default()
                },
                true,
            ),
            CopyEnd::Frame { gfn } => (
                GnttabCopyPtr {
                    u: gfn.into(),
                    domid: DOMID_SELF.into(),
                    offset: offset.into(),
                    ..Default::default()
                },
                false,
            ),
        }
    }
}

/// A `gnttab_copy` element: `len` bytes from `source` at `source_offset` to
/// `dest` at `dest_offset`.
pub fn copy_request(
    source: CopyEnd,
    source_offset: u16,
    dest: CopyEnd,
    dest_offset: u16,
    len: u16,
) -> GnttabCopy {
    let (src, src_gref) = source.ptr(source_offset);
    let (dst, dst_gref) = dest.ptr(dest_offset);
    let mut flags = 0;
    if src_gref {
        flags |= gntcopy::SOURCE_GREF;
    }
    if dst_gref {
        flags |= gntcopy::DEST_GREF;
    }
    GnttabCopy {
        source: src,
        dest: dst,
        len: len.into(),
        flags: flags.into(),
        ..Default::default()
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use machine::*;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod machine {
    use crate::hypercall::hypercall;
    use crate::xen::{self, check, HypercallError};
    use tessera_ipc::grant_table::{
        GnttabCmd, GnttabCopy, GnttabGetVersion, GnttabMapGrantRef, GnttabQuerySize,
        GnttabSetVersion, GnttabSetupTable, GnttabUnmapGrantRef,
    };
    use tessera_ipc::hypercall::Op;
    use tessera_ipc::memory::MapSpace;

    /// An argument structure of `grant_table_op` and the sub-command that
    /// takes an array of it. Implemented only for the `tessera_ipc`
    /// structures below, which are plain bytes (valid for any contents the
    /// hypervisor writes back).
    pub trait GnttabOp: Copy {
        const CMD: GnttabCmd;
    }
    impl GnttabOp for GnttabMapGrantRef {
        const CMD: GnttabCmd = GnttabCmd::MapGrantRef;
    }
    impl GnttabOp for GnttabUnmapGrantRef {
        const CMD: GnttabCmd = GnttabCmd::UnmapGrantRef;
    }
    impl GnttabOp for GnttabSetupTable {
        const CMD: GnttabCmd = GnttabCmd::SetupTable;
    }
    impl GnttabOp for GnttabCopy {
        const CMD: GnttabCmd = GnttabCmd::Copy;
    }
    impl GnttabOp for GnttabQuerySize {
        const CMD: GnttabCmd = GnttabCmd::QuerySize;
    }
    impl GnttabOp for GnttabSetVersion {
        const CMD: GnttabCmd = GnttabCmd::SetVersion;
    }
    impl GnttabOp for GnttabGetVersion {
        const CMD: GnttabCmd = GnttabCmd::GetVersion;
    }

    /// `grant_table_op(T::CMD, ops, ops.len())`: the hypervisor handles
    /// every element and writes its OUT fields (each with its own status)
    /// back in place. `Err` only for the call as a whole (a bad count or
    /// pointer, an unknown sub-command); `setup_table`'s `frame_list` must
    /// point at memory the caller owns.
    pub fn op<T: GnttabOp>(ops: &mut [T]) -> Result<(), HypercallError> {
        // SAFETY: `ops` is an owned, writable array of exactly the structure
        // this sub-command reads and writes, valid for any bytes the
        // hypervisor writes back; nothing else points at it meanwhile.
        check(unsafe {
            hypercall(
                Op::GrantTableOp as u64,
                T::CMD as u64,
                ops.as_mut_ptr() as u64,
                ops.len() as u64,
                0,
                0,
                0,
            )
        })
        .map(drop)
    }

    /// `grant_table_op` on one element.
    pub fn op1<T: GnttabOp>(one: &mut T) -> Result<(), HypercallError> {
        op(core::slice::from_mut(one))
    }

    /// Places grant-table frame `idx` at our guest frame `gfn`, which must
    /// lie in the grant window (`XENMEM_add_to_physmap`, space
    /// `grant_table`).
    pub fn place_frame(idx: u64, gfn: u64) -> Result<(), HypercallError> {
        xen::add_to_physmap(MapSpace::GrantTable, idx, gfn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;
    use tessera_ipc::grant_table::GntSt;

    fn table(frames: u32) -> GrantTable {
        // A leaked, page-aligned buffer standing in for the placed frames.
        let words: &'static mut [u64] = Vec::leak(vec![0u64; frames as usize * 512 + 512]);
        let base = (words.as_mut_ptr() as usize).next_multiple_of(FRAME_SIZE);
        // SAFETY: the buffer is leaked and holds `frames` whole pages from
        // `base`; nothing else reaches it.
        unsafe { GrantTable::new(base, frames) }.unwrap()
    }

    fn raw(t: &GrantTable, gref: u32, i: usize) -> u32 {
        t.word(gref, i).unwrap().load(Ordering::Relaxed)
    }

    #[test]
    fn grant_writes_the_v1_entry() {
        let t = table(1);
        assert_eq!(t.nr_entries(), 512);
        assert!(t.grant_access(8, 2, 0x4_0123, true));
        assert_eq!(
            raw(&t, 8, 0),
            join_header(gtf::PERMIT_ACCESS | gtf::READONLY, 2)
        );
        assert_eq!(raw(&t, 8, 1), 0x4_0123);
        assert_eq!(t.flags(8), Some(gtf::PERMIT_ACCESS | gtf::READONLY));
        assert!(t.grant_access(9, 3, 7, false));
        assert_eq!(t.flags(9), Some(gtf::PERMIT_ACCESS));
        assert!(!t.grant_access(512, 2, 7, false), "past the table");
        assert_eq!(t.flags(512), None);
    }

    #[test]
    fn end_access_refuses_while_the_hypervisor_holds_the_entry() {
        let t = table(1);
        assert!(t.grant_access(8, 2, 0x4_0000, false));
        let header = t.word(8, 0).unwrap();
        header.fetch_or(u32::from(gtf::READING | gtf::WRITING), Ordering::AcqRel);
        assert_eq!(
            t.end_access(8),
            Err(EndAccessError::InUse(
                gtf::PERMIT_ACCESS | gtf::READING | gtf::WRITING
            ))
        );
        header.fetch_and(!u32::from(gtf::WRITING), Ordering::AcqRel);
        assert!(matches!(t.end_access(8), Err(EndAccessError::InUse(_))));
        header.fetch_and(!u32::from(gtf::READING), Ordering::AcqRel);
        assert_eq!(t.end_access(8), Ok(()));
        assert_eq!(t.flags(8), Some(0));
        assert_eq!(raw(&t, 8, 0) >> 16, 2, "the domid stays, as in Linux");
        assert_eq!(t.end_access(4096), Err(EndAccessError::BadRef));
    }

    #[test]
    fn a_table_must_be_page_aligned() {
        // SAFETY: rejected before anything is reached.
        assert!(unsafe { GrantTable::new(0x3800_0008, 1) }.is_none());
        // SAFETY: as above.
        assert!(unsafe { GrantTable::new(0, 1) }.is_none());
    }

    #[test]
    fn request_builders_set_xens_flags() {
        let m = map_request(1, 8, 0x3a00_0000, true);
        assert_eq!(m.flags.get(), gntmap::HOST_MAP | gntmap::READONLY);
        assert_eq!((m.dom.get(), m.gref.get()), (1, 8));
        assert_eq!(m.host_addr.get(), 0x3a00_0000);
        assert_eq!(map_request(1, 8, 0, false).flags.get(), gntmap::HOST_MAP);
        assert_eq!(GntSt::from_i16(m.status.get()), Some(GntSt::Okay));

        let u = unmap_request(0x3a00_1000, 5);
        assert_eq!(
            (u.host_addr.get(), u.handle.get(), u.dev_bus_addr.get()),
            (0x3a00_1000, 5, 0)
        );

        let c = copy_request(
            CopyEnd::Frame { gfn: 0x4_0010 },
            16,
            CopyEnd::Gref { dom: 1, gref: 13 },
            32,
            100,
        );
        assert_eq!(c.flags.get(), gntcopy::DEST_GREF);
        assert_eq!(c.source.gmfn(), 0x4_0010);
        assert_eq!(c.source.domid.get(), DOMID_SELF);
        assert_eq!(c.source.offset.get(), 16);
        assert_eq!((c.dest.gref(), c.dest.domid.get()), (13, 1));
        assert_eq!((c.dest.offset.get(), c.len.get()), (32, 100));
        let back = copy_request(
            CopyEnd::Gref { dom: 1, gref: 13 },
            0,
            CopyEnd::Frame { gfn: 1 },
            0,
            1,
        );
        assert_eq!(back.flags.get(), gntcopy::SOURCE_GREF);
    }
}
