//! Single-producer, single-consumer rings in shared pages: the transport every
//! service domain talks over.
//!
//! The one idea: each side trusts only its own index. The producer keeps its
//! producer index privately and only *publishes* it; the consumer does the same
//! with the consumer index. Whatever the peer writes into the shared header is
//! validated (`prod - cons <= capacity`, record lengths within what was
//! published) before it steers a single access, and every data offset is
//! masked by the power-of-two capacity, so a hostile peer can cause an error
//! but never an out-of-bounds access.
//!
//! Layout and memory ordering are in [`layout`]; the flavours are
//! [`slot`] (fixed-size slots) and [`bytes`] (length-prefixed records, with
//! postcard messages on top in [`msg`]). Memory is reached only through the
//! [`SharedMem`] trait, so the kernel and domains back a ring with volatile
//! accesses to a mapped page and host tests with atomics ([`mem::AtomicMem`]).
//!
//! Notification suppression follows virtio's event index: each side writes
//! the index at which it wants to be woken, and the other side signals only
//! when an update moves its index across that point ([`need_event`]). A busy
//! ring therefore costs no notification per message.

pub mod bytes;
mod index;
pub mod layout;
pub mod mem;
pub mod msg;
pub mod slot;

pub use bytes::{ByteConsumer, ByteProducer};
pub use layout::RingHeader;
pub use mem::AtomicMem;
pub use msg::{recv_msg, send_msg, MsgError};
pub use slot::{SlotConsumer, SlotProducer};

/// The memory a ring lives in, implemented by whoever maps it.
///
/// The ring calls these only with `off + len <= self.len()` and 4-byte
/// aligned offsets for the `u32` accessors; it never forms a reference into
/// the shared memory, because the peer may change it at any moment.
pub trait SharedMem {
    /// Size of the region in bytes.
    fn len(&self) -> usize;
    /// Whether the region is empty (never true for a usable ring).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Single-copy-atomic load of the little-endian `u32` at `off`.
    fn load_u32(&self, off: usize) -> u32;
    /// Single-copy-atomic store of `v` as a little-endian `u32` at `off`.
    fn store_u32(&self, off: usize, v: u32);
    /// Copies `buf.len()` bytes starting at `off` out of the region.
    fn read(&self, off: usize, buf: &mut [u8]);
    /// Copies `data` into the region starting at `off`.
    fn write(&self, off: usize, data: &[u8]);
    /// Orders earlier loads before later loads and stores (`dmb ishld`).
    fn fence_acquire(&self);
    /// Orders earlier loads and stores before later stores (`dmb ish`).
    fn fence_release(&self);
    /// Orders earlier stores before later loads (`dmb ish`). The event-index
    /// handshake needs it: "publish my index, then read your event" must not
    /// be reordered, or both sides can decide the other is awake.
    fn fence_full(&self);
}

impl<T: SharedMem + ?Sized> SharedMem for &T {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn load_u32(&self, off: usize) -> u32 {
        (**self).load_u32(off)
    }
    fn store_u32(&self, off: usize, v: u32) {
        (**self).store_u32(off, v)
    }
    fn read(&self, off: usize, buf: &mut [u8]) {
        (**self).read(off, buf)
    }
    fn write(&self, off: usize, data: &[u8]) {
        (**self).write(off, data)
    }
    fn fence_acquire(&self) {
        (**self).fence_acquire()
    }
    fn fence_release(&self) {
        (**self).fence_release()
    }
    fn fence_full(&self) {
        (**self).fence_full()
    }
}

/// Everything that can go wrong on a ring. Errors caused by the peer
/// (`PeerIndex`, `BadRecord`) mean the peer broke the protocol; the caller
/// should stop using the ring and report the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The region cannot hold the header and at least one slot or byte.
    RegionTooSmall { len: usize },
    /// The peer's published index is impossible: more than `capacity` ahead.
    PeerIndex { prod: u32, cons: u32 },
    /// A record header claims more bytes than the producer published.
    BadRecord { len: u32, available: u32 },
    /// No room now; the peer has been asked to notify us when there is.
    Full,
    /// The record can never fit in this ring.
    TooLarge { len: usize, capacity: usize },
    /// The caller's buffer is smaller than the next record, which stays queued.
    BufferTooSmall { needed: usize },
}

/// Whether the peer must be sent a notification (an event-channel send).
#[must_use = "a needed notification that is not sent can stall the peer"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// The peer asked to be woken at an index this update crossed.
    Peer,
    /// The peer is still busy with the ring; stay quiet.
    None,
}

impl Notify {
    /// True when a notification must be sent.
    pub fn is_needed(self) -> bool {
        self == Notify::Peer
    }
}

/// virtio's `vring_need_event`: moving an index from `old` to `new` crosses
/// the peer's requested `event` iff `event` lies in `[old, new)`, computed in
/// wrapping arithmetic so it works across the 2^32 wrap.
pub fn need_event(event: u32, new: u32, old: u32) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests;
