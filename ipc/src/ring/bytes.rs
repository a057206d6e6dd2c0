//! Byte rings carrying length-prefixed records.
//!
//! The one idea: a unit is a byte and a record is a 4-byte little-endian
//! length followed by that many payload bytes, with no padding, so a record
//! (even its length word) may wrap past the end of the data area; every copy
//! is split at the wrap. The producer publishes a whole record with one index
//! update, so the consumer never sees half a record; a length that claims
//! more than was published is the producer lying, and is reported as
//! [`RingError::BadRecord`] before anything is copied.
//!
//! Records rather than a raw stream, because framing is what every user
//! (postcard control messages in [`super::msg`]) needs, and a framed reader
//! can reject a truncated message instead of waiting for bytes forever.

use super::index::{ConsumerIndex, ProducerIndex};
use super::layout::DATA_OFF;
use super::{Notify, RingError, SharedMem};

/// Size of the length word in front of every record.
pub const RECORD_HEADER: usize = 4;

/// Splits `len` bytes starting at ring position `index` into the part up to
/// the end of the data area and the part that wraps to its start.
fn split(index: u32, capacity: u32, len: usize) -> (usize, usize) {
    let pos = (index & (capacity - 1)) as usize;
    let first = len.min(capacity as usize - pos);
    (DATA_OFF + pos, first)
}

/// A byte ring must hold a length word and at least one payload byte; a
/// smaller one could only ever report `Full`.
fn check_capacity(capacity: u32, len: usize) -> Result<(), RingError> {
    if capacity as usize > RECORD_HEADER {
        Ok(())
    } else {
        Err(RingError::RegionTooSmall { len })
    }
}

fn copy_in<M: SharedMem>(mem: &M, index: u32, capacity: u32, data: &[u8]) {
    let (off, first) = split(index, capacity, data.len());
    let (head, tail) = data.split_at(first);
    mem.write(off, head);
    mem.write(DATA_OFF, tail);
}

fn copy_out<M: SharedMem>(mem: &M, index: u32, capacity: u32, buf: &mut [u8]) {
    let (off, first) = split(index, capacity, buf.len());
    let (head, tail) = buf.split_at_mut(first);
    mem.read(off, head);
    mem.read(DATA_OFF, tail);
}

/// The producing side of a byte ring.
pub struct ByteProducer<M> {
    index: ProducerIndex<M>,
}

impl<M: SharedMem> ByteProducer<M> {
    /// Attaches to a ring initialised with [`super::layout::init`].
    pub fn attach(mem: M) -> Result<Self, RingError> {
        let index = ProducerIndex::attach(mem, 1)?;
        check_capacity(index.capacity, index.mem.len())?;
        Ok(Self { index })
    }

    /// Size of the data area in bytes.
    pub fn capacity(&self) -> u32 {
        self.index.capacity
    }

    /// Largest payload a single record can carry in this ring.
    pub fn max_record(&self) -> usize {
        (self.index.capacity as usize).saturating_sub(RECORD_HEADER)
    }

    /// Queues one record. `Err(Full)` means the consumer has been asked to
    /// notify us once enough space is free; retry then.
    pub fn push(&mut self, record: &[u8]) -> Result<Notify, RingError> {
        let too_large = RingError::TooLarge {
            len: record.len(),
            capacity: self.max_record(),
        };
        if record.len() > self.max_record() {
            return Err(too_large);
        }
        // Fits in u32: bounded by the capacity, itself at most 2^31.
        let len = u32::try_from(record.len()).map_err(|_| too_large)?;
        let total = len + RECORD_HEADER as u32;
        self.index.reserve(total)?;
        let (mem, capacity, prod) = (&self.index.mem, self.index.capacity, self.index.prod);
        copy_in(mem, prod, capacity, &len.to_le_bytes());
        copy_in(
            mem,
            prod.wrapping_add(RECORD_HEADER as u32),
            capacity,
            record,
        );
        Ok(self.index.publish(total))
    }
}

/// One record taken off a byte ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Payload bytes written to the front of the caller's buffer.
    pub len: usize,
    /// Whether the producer, waiting for space, must be notified.
    pub notify: Notify,
}

/// The consuming side of a byte ring.
pub struct ByteConsumer<M> {
    index: ConsumerIndex<M>,
}

impl<M: SharedMem> ByteConsumer<M> {
    /// Attaches to a ring initialised with [`super::layout::init`].
    pub fn attach(mem: M) -> Result<Self, RingError> {
        let index = ConsumerIndex::attach(mem, 1)?;
        check_capacity(index.capacity, index.mem.len())?;
        Ok(Self { index })
    }

    /// Bytes published and not yet consumed, without arming a notification:
    /// for a consumer that polls briefly before it sleeps.
    pub fn pending(&self) -> Result<u32, RingError> {
        self.index.available_unarmed()
    }

    /// Size of the data area in bytes.
    pub fn capacity(&self) -> u32 {
        self.index.capacity
    }

    /// Takes the next record into the front of `out`. `Ok(None)` means the
    /// ring is empty and the producer will notify us on its next push. A
    /// record longer than `out` stays queued and is reported as
    /// `BufferTooSmall` with its length.
    pub fn pop(&mut self, out: &mut [u8]) -> Result<Option<Received>, RingError> {
        let available = self.index.available()?;
        if available == 0 {
            return Ok(None);
        }
        let (mem, capacity, cons) = (&self.index.mem, self.index.capacity, self.index.cons);
        // The producer publishes whole records, so a published length word
        // must be complete and its payload must lie within what was published.
        let bad = |len| RingError::BadRecord { len, available };
        if available < RECORD_HEADER as u32 {
            return Err(bad(0));
        }
        let mut word = [0u8; RECORD_HEADER];
        copy_out(mem, cons, capacity, &mut word);
        let len = u32::from_le_bytes(word);
        if len > available - RECORD_HEADER as u32 {
            return Err(bad(len));
        }
        let payload = out
            .get_mut(..len as usize)
            .ok_or(RingError::BufferTooSmall {
                needed: len as usize,
            })?;
        copy_out(
            mem,
            cons.wrapping_add(RECORD_HEADER as u32),
            capacity,
            payload,
        );
        let notify = self.index.release(len + RECORD_HEADER as u32);
        Ok(Some(Received {
            len: len as usize,
            notify,
        }))
    }
}
