//! Fixed-size slot rings: each unit is one `SLOT`-byte message.
//!
//! The one idea: a slot never straddles the end of the data area (capacity is
//! a power of two number of whole slots), so a slot is always one contiguous
//! copy at `DATA_OFF + (index & mask) * SLOT`.

use super::index::{ConsumerIndex, ProducerIndex};
use super::layout::DATA_OFF;
use super::{Notify, RingError, SharedMem};

/// Byte offset of slot `index` in a ring of `capacity` slots.
fn slot_offset<const SLOT: usize>(index: u32, capacity: u32) -> usize {
    // capacity is a power of two, so the mask keeps the slot in the region
    // whatever value `index` has.
    DATA_OFF + (index & (capacity - 1)) as usize * SLOT
}

/// The producing side of a slot ring.
pub struct SlotProducer<M, const SLOT: usize> {
    index: ProducerIndex<M>,
}

impl<M: SharedMem, const SLOT: usize> SlotProducer<M, SLOT> {
    /// Attaches to a ring initialised with [`super::layout::init`].
    pub fn attach(mem: M) -> Result<Self, RingError> {
        Ok(Self {
            index: ProducerIndex::attach(mem, SLOT)?,
        })
    }

    /// Number of slots in the ring.
    pub fn capacity(&self) -> u32 {
        self.index.capacity
    }

    /// Queues one message. `Err(Full)` means the consumer has been asked to
    /// notify us when half the ring is free; retry then.
    pub fn push(&mut self, slot: &[u8; SLOT]) -> Result<Notify, RingError> {
        self.index.reserve(1)?;
        let off = slot_offset::<SLOT>(self.index.prod, self.index.capacity);
        self.index.mem.write(off, slot);
        Ok(self.index.publish(1))
    }
}

/// The consuming side of a slot ring.
pub struct SlotConsumer<M, const SLOT: usize> {
    index: ConsumerIndex<M>,
}

impl<M: SharedMem, const SLOT: usize> SlotConsumer<M, SLOT> {
    /// Attaches to a ring initialised with [`super::layout::init`].
    pub fn attach(mem: M) -> Result<Self, RingError> {
        Ok(Self {
            index: ConsumerIndex::attach(mem, SLOT)?,
        })
    }

    /// Number of slots in the ring.
    pub fn capacity(&self) -> u32 {
        self.index.capacity
    }

    /// Slots ready now, without arming a notification.
    pub fn pending(&self) -> Result<u32, RingError> {
        self.index.available_unarmed()
    }

    /// Takes the next message into `out`. `Ok(None)` means the ring is empty
    /// and the producer will notify us on its next push, so the caller may
    /// wait for the event; `Ok(Some(notify))` says whether the producer, which
    /// was waiting for space, must be notified.
    pub fn pop(&mut self, out: &mut [u8; SLOT]) -> Result<Option<Notify>, RingError> {
        if self.index.available()? == 0 {
            return Ok(None);
        }
        let off = slot_offset::<SLOT>(self.index.cons, self.index.capacity);
        self.index.mem.read(off, out);
        Ok(Some(self.index.release(1)))
    }
}
