//! `grant_table_op` (hypercall 20), version 1: sub-commands, argument
//! structures, the shared `grant_entry_v1` and the flag and status numbers,
//! as in Xen's `xen/include/public/grant_table.h` (arm64, little-endian).
//!
//! On Arm a `XEN_GUEST_HANDLE` is 64 bits wide and 8-byte aligned, and
//! `xen_pfn_t` is a `u64`; that is why `gnttab_setup_table` and
//! `gnttab_copy` carry padding an x86 reader would not expect. The padding
//! is written out as `_pad` fields and every layout is asserted below.
//!
//! Every sub-command takes a guest pointer to an array of these structures
//! in x1 and a count in x2; the kernel copies each element in, acts, and
//! copies the OUT fields back, so a status is reported per element.

use zerocopy::little_endian::{I16, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `grant_entry_v1`s in one 4 KiB grant-table frame.
pub const ENTRIES_PER_FRAME_V1: u32 = 512;
/// Refs 0..8 are reserved for the toolstack (0 console, 1 xenstore).
pub const NR_RESERVED_ENTRIES: u32 = 8;
/// The only grant-table version offered.
pub const GRANT_TABLE_VERSION: u32 = 1;
/// A grant reference: an index into the granter's table.
pub type GrantRef = u32;
/// A maptrack handle returned by `map_grant_ref`.
pub type GrantHandle = u32;
/// What a guest uses for "no handle" (Linux's `INVALID_GRANT_HANDLE`).
pub const INVALID_GRANT_HANDLE: GrantHandle = !0;

crate::abi_enum! {
    /// `grant_table_op` sub-command, read from x0.
    pub enum GnttabCmd: u64 {
        MapGrantRef = 0,
        UnmapGrantRef = 1,
        SetupTable = 2,
        Copy = 5,
        QuerySize = 6,
        SetVersion = 8,
        GetVersion = 10,
    }
}

crate::abi_enum! {
    /// `GNTST_*`: the per-element status the kernel writes back. Every
    /// error is negative.
    pub enum GntSt: i16 {
        Okay = 0,
        GeneralError = -1,
        BadDomain = -2,
        BadGntref = -3,
        BadHandle = -4,
        BadVirtAddr = -5,
        BadDevAddr = -6,
        NoDeviceSpace = -7,
        PermissionDenied = -8,
        BadPage = -9,
        BadCopyArg = -10,
        AddressTooBig = -11,
        Eagain = -12,
        NoSpace = -13,
    }
}

impl GntSt {
    /// Decode a status as read from a structure's `status` field.
    pub fn from_i16(raw: i16) -> Option<Self> {
        // `abi_enum!` compares the sign-extended value.
        Self::try_from(i64::from(raw) as u64).ok()
    }
}

/// `GTF_*` bits of `grant_entry_v1.flags`.
pub mod gtf {
    /// Type: the entry grants nothing.
    pub const INVALID: u16 = 0;
    /// Type: `domid` may map or copy `frame`.
    pub const PERMIT_ACCESS: u16 = 1;
    /// Type: page transfer (not offered).
    pub const ACCEPT_TRANSFER: u16 = 2;
    /// Type: transitive grant (v2 only; not offered).
    pub const TRANSITIVE: u16 = 3;
    /// Mask of the type field.
    pub const TYPE_MASK: u16 = 3;
    /// Granter: the grantee may only read.
    pub const READONLY: u16 = 1 << 2;
    /// Hypervisor: the entry is mapped or copied for reading.
    pub const READING: u16 = 1 << 3;
    /// Hypervisor: the entry is mapped or copied for writing.
    pub const WRITING: u16 = 1 << 4;
    /// x86 cache attributes; ignored on Arm.
    pub const PWT: u16 = 1 << 5;
    /// x86 cache attributes; ignored on Arm.
    pub const PCD: u16 = 1 << 6;
    /// x86 cache attributes; ignored on Arm.
    pub const PAT: u16 = 1 << 7;
    /// Only part of the page is granted: such an entry may be copied, never mapped.
    pub const SUB_PAGE: u16 = 1 << 8;
}

/// `GNTMAP_*` bits of `gnttab_map_grant_ref.flags`.
pub mod gntmap {
    /// A mapping for I/O devices: not supported (no IOMMU is exposed).
    pub const DEVICE_MAP: u32 = 1 << 0;
    /// A mapping at `host_addr` in the caller's guest-physical space.
    pub const HOST_MAP: u32 = 1 << 1;
    /// The mapping is read-only.
    pub const READONLY: u32 = 1 << 2;
    /// x86 PV only: not supported.
    pub const APPLICATION_MAP: u32 = 1 << 3;
    /// x86 PV only (`host_addr` names a PTE): not supported.
    pub const CONTAINS_PTE: u32 = 1 << 4;
    /// The bits Tessera accepts.
    pub const SUPPORTED: u32 = HOST_MAP | READONLY;
}

/// `GNTCOPY_*` bits of `gnttab_copy.flags`.
pub mod gntcopy {
    /// `source.u` is a grant ref in `source.domid`'s table, not a frame.
    pub const SOURCE_GREF: u16 = 1 << 0;
    /// `dest.u` is a grant ref in `dest.domid`'s table, not a frame.
    pub const DEST_GREF: u16 = 1 << 1;
    /// x86 PV hint; accepted and ignored.
    pub const CAN_FAIL: u16 = 1 << 2;
    /// The bits Tessera accepts.
    pub const SUPPORTED: u16 = SOURCE_GREF | DEST_GREF | CAN_FAIL;
}

/// `grant_entry_v1`: one entry of a granter's table, in memory the granter
/// writes at any time. `flags` and `domid` form one 32-bit word that the
/// hypervisor updates only with compare-exchange.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GrantEntryV1 {
    pub flags: U16,
    pub domid: U16,
    /// The granted guest frame number (GFN) in the granter's space.
    pub frame: U32,
}

impl GrantEntryV1 {
    /// The `flags | domid << 16` word, as a little-endian 32-bit load sees it.
    pub fn header(&self) -> u32 {
        u32::from(self.flags.get()) | (u32::from(self.domid.get()) << 16)
    }
}

/// Split a `flags`/`domid` header word into `(flags, domid)`.
pub const fn split_header(word: u32) -> (u16, u16) {
    (word as u16, (word >> 16) as u16)
}

/// Join `flags` and `domid` into a header word.
pub const fn join_header(flags: u16, domid: u16) -> u32 {
    flags as u32 | ((domid as u32) << 16)
}

/// `GNTTABOP_map_grant_ref`: IN `host_addr`, `flags`, `ref`, `dom`;
/// OUT `status`, `handle`, `dev_bus_addr`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabMapGrantRef {
    /// Where the caller wants the frame, in its guest-physical space.
    pub host_addr: U64,
    pub flags: U32,
    pub gref: U32,
    pub dom: U16,
    pub status: I16,
    pub handle: U32,
    pub dev_bus_addr: U64,
}

/// `GNTTABOP_unmap_grant_ref`: IN `host_addr`, `dev_bus_addr`, `handle`;
/// OUT `status`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabUnmapGrantRef {
    pub host_addr: U64,
    pub dev_bus_addr: U64,
    pub handle: U32,
    pub status: I16,
    pub _pad: U16,
}

/// `GNTTABOP_setup_table`: IN `dom`, `nr_frames`, `frame_list` (a guest
/// pointer to `nr_frames` u64 GFNs); OUT `status` and the list.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabSetupTable {
    pub dom: U16,
    pub _pad0: U16,
    pub nr_frames: U32,
    pub status: I16,
    pub _pad1: [u8; 6],
    pub frame_list: U64,
}

/// `GNTTABOP_query_size`: IN `dom`; OUT `nr_frames`, `max_nr_frames`, `status`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabQuerySize {
    pub dom: U16,
    pub _pad0: U16,
    pub nr_frames: U32,
    pub max_nr_frames: U32,
    pub status: I16,
    pub _pad1: U16,
}

/// One side of a `gnttab_copy`. `u` is Xen's union of a grant ref (its low
/// 32 bits, little-endian) and a GFN (`xen_pfn_t`, all 64 bits); the
/// `GNTCOPY_*_gref` flag says which.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabCopyPtr {
    pub u: U64,
    pub domid: U16,
    pub offset: U16,
    pub _pad: U32,
}

impl GnttabCopyPtr {
    /// `u.ref`: the union read as a grant reference.
    pub fn gref(&self) -> GrantRef {
        self.u.get() as u32
    }
    /// `u.gmfn`: the union read as a guest frame number.
    pub fn gmfn(&self) -> u64 {
        self.u.get()
    }
}

/// `GNTTABOP_copy`: IN `source`, `dest`, `len`, `flags`; OUT `status`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabCopy {
    pub source: GnttabCopyPtr,
    pub dest: GnttabCopyPtr,
    pub len: U16,
    pub flags: U16,
    pub status: I16,
    pub _pad: U16,
}

/// `GNTTABOP_set_version`: IN the wanted version; OUT the version in force.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabSetVersion {
    pub version: U32,
}

/// `GNTTABOP_get_version`: IN `dom`; OUT `version`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct GnttabGetVersion {
    pub dom: U16,
    pub _pad: U16,
    pub version: U32,
}

const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<GrantEntryV1>() == 8);
    assert!(ENTRIES_PER_FRAME_V1 as usize * size_of::<GrantEntryV1>() == 4096);
    assert!(size_of::<GnttabMapGrantRef>() == 32);
    assert!(size_of::<GnttabUnmapGrantRef>() == 24);
    assert!(size_of::<GnttabSetupTable>() == 24);
    assert!(size_of::<GnttabQuerySize>() == 16);
    assert!(size_of::<GnttabCopyPtr>() == 16);
    assert!(size_of::<GnttabCopy>() == 40);
    assert!(size_of::<GnttabSetVersion>() == 4);
    assert!(size_of::<GnttabGetVersion>() == 8);
    // Little-endian zerocopy integers are byte arrays: the structures may
    // sit at any address in a copy buffer.
    assert!(align_of::<GnttabCopy>() == 1);
};

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn commands_round_trip_and_unknown_ones_fail() {
        for &c in GnttabCmd::ALL {
            assert_eq!(GnttabCmd::try_from(c as u64), Ok(c));
        }
        for unknown in [3, 4, 7, 9, 11, 12, 13, u64::MAX] {
            assert_eq!(GnttabCmd::try_from(unknown), Err(unknown));
        }
    }

    #[test]
    fn statuses_round_trip_and_unknown_ones_fail() {
        for &s in GntSt::ALL {
            assert_eq!(GntSt::from_i16(s.raw()), Some(s));
        }
        assert_eq!(GntSt::Okay.raw(), 0);
        assert_eq!(GntSt::Eagain.raw(), -12);
        assert_eq!(GntSt::NoSpace.raw(), -13);
        assert_eq!(GntSt::from_i16(-14), None);
        assert_eq!(GntSt::from_i16(1), None);
        assert_eq!(GntSt::from_i16(i16::MIN), None);
        assert_eq!(
            GntSt::try_from(0xffff),
            Err(0xffff),
            "only sign-extended values decode"
        );
    }

    #[test]
    fn flag_values_match_xen() {
        assert_eq!(gtf::PERMIT_ACCESS, 1);
        assert_eq!(gtf::TYPE_MASK, 3);
        assert_eq!(gtf::READONLY, 4);
        assert_eq!(gtf::READING, 8);
        assert_eq!(gtf::WRITING, 16);
        assert_eq!(gtf::SUB_PAGE, 256);
        assert_eq!(gntmap::HOST_MAP, 2);
        assert_eq!(gntmap::READONLY, 4);
        assert_eq!(
            gntmap::SUPPORTED
                & (gntmap::DEVICE_MAP | gntmap::APPLICATION_MAP | gntmap::CONTAINS_PTE),
            0
        );
        assert_eq!(gntcopy::SOURCE_GREF, 1);
        assert_eq!(gntcopy::DEST_GREF, 2);
    }

    #[test]
    fn grant_entry_layout() {
        assert_eq!(offset_of!(GrantEntryV1, flags), 0);
        assert_eq!(offset_of!(GrantEntryV1, domid), 2);
        assert_eq!(offset_of!(GrantEntryV1, frame), 4);
        let e = GrantEntryV1 {
            flags: (gtf::PERMIT_ACCESS | gtf::READONLY).into(),
            domid: 3.into(),
            frame: 0x4_0123.into(),
        };
        assert_eq!(e.as_bytes(), &[5, 0, 3, 0, 0x23, 0x01, 0x04, 0]);
        // The header is the first four bytes read as one little-endian word.
        let word = u32::from_le_bytes([5, 0, 3, 0]);
        assert_eq!(e.header(), word);
        assert_eq!(split_header(word), (5, 3));
        assert_eq!(join_header(5, 3), word);
    }

    #[test]
    fn map_and_unmap_layouts() {
        assert_eq!(offset_of!(GnttabMapGrantRef, host_addr), 0);
        assert_eq!(offset_of!(GnttabMapGrantRef, flags), 8);
        assert_eq!(offset_of!(GnttabMapGrantRef, gref), 12);
        assert_eq!(offset_of!(GnttabMapGrantRef, dom), 16);
        assert_eq!(offset_of!(GnttabMapGrantRef, status), 18);
        assert_eq!(offset_of!(GnttabMapGrantRef, handle), 20);
        assert_eq!(offset_of!(GnttabMapGrantRef, dev_bus_addr), 24);
        let m = GnttabMapGrantRef {
            host_addr: 0x3a00_1000.into(),
            flags: (gntmap::HOST_MAP | gntmap::READONLY).into(),
            gref: 9.into(),
            dom: 2.into(),
            status: GntSt::BadHandle.raw().into(),
            handle: 7.into(),
            dev_bus_addr: 0.into(),
        };
        let b = m.as_bytes();
        assert_eq!(&b[0..8], &[0, 0x10, 0, 0x3a, 0, 0, 0, 0]);
        assert_eq!(&b[8..12], &[6, 0, 0, 0]);
        assert_eq!(&b[12..16], &[9, 0, 0, 0]);
        assert_eq!(&b[16..18], &[2, 0]);
        assert_eq!(&b[18..20], &[0xfc, 0xff]);
        assert_eq!(&b[20..24], &[7, 0, 0, 0]);

        assert_eq!(offset_of!(GnttabUnmapGrantRef, host_addr), 0);
        assert_eq!(offset_of!(GnttabUnmapGrantRef, dev_bus_addr), 8);
        assert_eq!(offset_of!(GnttabUnmapGrantRef, handle), 16);
        assert_eq!(offset_of!(GnttabUnmapGrantRef, status), 20);
    }

    #[test]
    fn setup_query_and_version_layouts() {
        assert_eq!(offset_of!(GnttabSetupTable, dom), 0);
        assert_eq!(offset_of!(GnttabSetupTable, nr_frames), 4);
        assert_eq!(offset_of!(GnttabSetupTable, status), 8);
        assert_eq!(
            offset_of!(GnttabSetupTable, frame_list),
            16,
            "guest handles are 8-aligned on Arm"
        );

        assert_eq!(offset_of!(GnttabQuerySize, dom), 0);
        assert_eq!(offset_of!(GnttabQuerySize, nr_frames), 4);
        assert_eq!(offset_of!(GnttabQuerySize, max_nr_frames), 8);
        assert_eq!(offset_of!(GnttabQuerySize, status), 12);

        assert_eq!(offset_of!(GnttabGetVersion, dom), 0);
        assert_eq!(offset_of!(GnttabGetVersion, version), 4);
        assert_eq!(offset_of!(GnttabSetVersion, version), 0);
    }

    #[test]
    fn copy_layout() {
        assert_eq!(offset_of!(GnttabCopyPtr, u), 0);
        assert_eq!(
            offset_of!(GnttabCopyPtr, domid),
            8,
            "xen_pfn_t is 64-bit on Arm"
        );
        assert_eq!(offset_of!(GnttabCopyPtr, offset), 10);
        assert_eq!(offset_of!(GnttabCopy, source), 0);
        assert_eq!(offset_of!(GnttabCopy, dest), 16);
        assert_eq!(offset_of!(GnttabCopy, len), 32);
        assert_eq!(offset_of!(GnttabCopy, flags), 34);
        assert_eq!(offset_of!(GnttabCopy, status), 36);

        let mut raw = [0u8; 40];
        raw[0..4].copy_from_slice(&0x1234u32.to_le_bytes());
        raw[8..10].copy_from_slice(&5u16.to_le_bytes());
        raw[10..12].copy_from_slice(&0x80u16.to_le_bytes());
        raw[16..24].copy_from_slice(&0x4_0000_0001u64.to_le_bytes());
        raw[24..26].copy_from_slice(&0x7ff0u16.to_le_bytes());
        raw[32..34].copy_from_slice(&100u16.to_le_bytes());
        raw[34..36].copy_from_slice(&gntcopy::SOURCE_GREF.to_le_bytes());
        let c = GnttabCopy::read_from_bytes(&raw).unwrap();
        assert_eq!(c.source.gref(), 0x1234);
        assert_eq!(c.source.domid.get(), 5);
        assert_eq!(c.source.offset.get(), 0x80);
        assert_eq!(c.dest.gmfn(), 0x4_0000_0001);
        assert_eq!(c.dest.gref(), 1, "a ref is the union's low word");
        assert_eq!(c.dest.domid.get(), 0x7ff0);
        assert_eq!(c.len.get(), 100);
        assert_eq!(c.flags.get(), gntcopy::SOURCE_GREF);
    }
}
