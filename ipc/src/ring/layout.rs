//! The shared header of every ring, and where things sit in the region.
//!
//! The one idea: each index lives alone on its own 64-byte cache line, so the
//! producer's writes (`prod`, `cons_event`) and the consumer's writes (`cons`,
//! `prod_event`) never share a line and never bounce it between CPUs.
//!
//! ```text
//! offset  field        written by  meaning
//! 0x000   prod         producer    free-running count of units produced
//! 0x040   cons         consumer    free-running count of units consumed
//! 0x080   prod_event   consumer    "notify me when prod passes this"
//! 0x0c0   cons_event   producer    "notify me when cons passes this"
//! 0x100   data         producer    capacity units, capacity a power of two
//! ```
//!
//! A unit is a slot for a slot ring and a byte for a byte ring. Indices are
//! `u32` and wrap at 2^32; a unit lives at `index & (capacity - 1)`. The
//! capacity is not stored in shared memory (the peer could lie about it): both
//! sides derive it from the size of the region they agreed on, as the largest
//! power of two that fits after the header.
//!
//! Ordering: the producer writes data, `fence_release`, publishes `prod`; the
//! consumer loads `prod`, `fence_acquire`, reads data, `fence_release`,
//! publishes `cons`. Each side then does `fence_full` before reading the
//! peer's event index (see [`super::need_event`]).

use core::mem::{offset_of, size_of};
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::{RingError, SharedMem};

/// Size of the cache line each index gets to itself.
pub const CACHE_LINE: usize = 64;

/// One index, padded to a full cache line.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IndexLine {
    pub value: U32,
    pub _pad: [u8; CACHE_LINE - 4],
}
const _: () = assert!(size_of::<IndexLine>() == CACHE_LINE);

/// The ring header at the start of the region; the data area follows it.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RingHeader {
    /// Units produced so far (written only by the producer).
    pub prod: IndexLine,
    /// Units consumed so far (written only by the consumer).
    pub cons: IndexLine,
    /// The consumer wants a notification once `prod` moves past this.
    pub prod_event: IndexLine,
    /// The producer wants a notification once `cons` moves past this.
    pub cons_event: IndexLine,
}
const _: () = assert!(size_of::<RingHeader>() == 4 * CACHE_LINE);

/// Byte offset of the producer index.
pub const PROD_OFF: usize = offset_of!(RingHeader, prod) + offset_of!(IndexLine, value);
/// Byte offset of the consumer index.
pub const CONS_OFF: usize = offset_of!(RingHeader, cons) + offset_of!(IndexLine, value);
/// Byte offset of the producer event index.
pub const PROD_EVENT_OFF: usize = offset_of!(RingHeader, prod_event) + offset_of!(IndexLine, value);
/// Byte offset of the consumer event index.
pub const CONS_EVENT_OFF: usize = offset_of!(RingHeader, cons_event) + offset_of!(IndexLine, value);
/// Byte offset of the data area.
pub const DATA_OFF: usize = size_of::<RingHeader>();
/// Size of the pages rings are shared in.
pub const PAGE_SIZE: usize = 4096;

const _: () = assert!(PROD_OFF == 0 && CONS_OFF == 64 && PROD_EVENT_OFF == 128);
const _: () = assert!(CONS_EVENT_OFF == 192 && DATA_OFF == 256);

/// The number of `unit`-byte units a region of `len` bytes holds: the largest
/// power of two that fits after the header, capped at 2^31 so that
/// `prod - cons <= capacity` is meaningful in `u32` arithmetic.
pub fn capacity_for(len: usize, unit: usize) -> Result<u32, RingError> {
    let units = len
        .checked_sub(DATA_OFF)
        .and_then(|data| data.checked_div(unit))
        .unwrap_or(0)
        .min(1 << 31);
    if units == 0 {
        return Err(RingError::RegionTooSmall { len });
    }
    let pow2 = 1usize << (usize::BITS - 1 - units.leading_zeros());
    u32::try_from(pow2).map_err(|_| RingError::RegionTooSmall { len })
}

/// Resets the header of a ring whose indices start at `start` (0 in
/// production; tests start near `u32::MAX` to exercise the wrap). Done once
/// by whoever sets the region up, before either side attaches.
///
/// The consumer is armed to hear about the first unit; the producer's event
/// is set just behind it because nobody is waiting for space yet.
pub fn init<M: SharedMem>(mem: &M, start: u32) -> Result<(), RingError> {
    if mem.len() < DATA_OFF {
        return Err(RingError::RegionTooSmall { len: mem.len() });
    }
    mem.write(0, RingHeader::new_zeroed().as_bytes());
    mem.store_u32(PROD_OFF, start);
    mem.store_u32(CONS_OFF, start);
    mem.store_u32(PROD_EVENT_OFF, start);
    mem.store_u32(CONS_EVENT_OFF, start.wrapping_sub(1));
    mem.fence_release();
    Ok(())
}
