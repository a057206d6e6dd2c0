//! The index protocol shared by both ring flavours, in units (slots or bytes).
//!
//! The one idea: a side's own index is kept here, privately; the peer's index
//! is re-read from shared memory on every operation and accepted only if
//! `prod - cons <= capacity`. Everything the flavours do with data offsets is
//! derived from the *validated* distance, so a lie can only produce an error.

use super::layout::{capacity_for, CONS_EVENT_OFF, CONS_OFF, PROD_EVENT_OFF, PROD_OFF};
use super::{need_event, Notify, RingError, SharedMem};

/// The producer's half of the protocol.
pub(crate) struct ProducerIndex<M> {
    pub(crate) mem: M,
    pub(crate) capacity: u32,
    /// Our producer index; the copy in shared memory is only ever written.
    pub(crate) prod: u32,
}

impl<M: SharedMem> ProducerIndex<M> {
    /// Attaches to an initialised ring, taking the published `prod` as the
    /// starting point (the region's owner initialised it; the peer cannot
    /// have produced anything yet).
    pub(crate) fn attach(mem: M, unit: usize) -> Result<Self, RingError> {
        let capacity = capacity_for(mem.len(), unit)?;
        let prod = mem.load_u32(PROD_OFF);
        Ok(Self {
            mem,
            capacity,
            prod,
        })
    }

    /// Free units, from the consumer's published index, validated.
    fn free(&self) -> Result<u32, RingError> {
        let cons = self.mem.load_u32(CONS_OFF);
        // Pairs with the consumer's release before it published `cons`: its
        // reads of the slots we are about to overwrite are finished.
        self.mem.fence_acquire();
        let used = self.prod.wrapping_sub(cons);
        if used > self.capacity {
            return Err(RingError::PeerIndex {
                prod: self.prod,
                cons,
            });
        }
        Ok(self.capacity - used)
    }

    /// Waits for nothing: returns once `needed` units are free, or arms
    /// `cons_event` and returns `Full`. The re-check after arming closes the
    /// race with a consumer that drained between our check and our arming.
    pub(crate) fn reserve(&mut self, needed: u32) -> Result<(), RingError> {
        let free = self.free()?;
        if free >= needed {
            return Ok(());
        }
        // Ask to be woken once at least half the ring (or this record) is
        // free, so a producer that keeps hitting full is woken once per
        // half ring rather than once per slot.
        let wanted = needed.max(self.capacity / 2).max(1);
        let advance = wanted - free;
        let cons = self.prod.wrapping_sub(self.capacity - free);
        self.mem
            .store_u32(CONS_EVENT_OFF, cons.wrapping_add(advance).wrapping_sub(1));
        self.mem.fence_full();
        if self.free()? >= needed {
            Ok(())
        } else {
            Err(RingError::Full)
        }
    }

    /// Publishes `count` units written since the last publish.
    pub(crate) fn publish(&mut self, count: u32) -> Notify {
        let old = self.prod;
        let new = old.wrapping_add(count);
        // The data must be visible before the index that announces it.
        self.mem.fence_release();
        self.mem.store_u32(PROD_OFF, new);
        self.prod = new;
        // Our index store must be ordered before the event load, or a
        // consumer arming at this moment could be missed by both sides.
        self.mem.fence_full();
        let event = self.mem.load_u32(PROD_EVENT_OFF);
        if need_event(event, new, old) {
            Notify::Peer
        } else {
            Notify::None
        }
    }
}

/// The consumer's half of the protocol.
pub(crate) struct ConsumerIndex<M> {
    pub(crate) mem: M,
    pub(crate) capacity: u32,
    /// Our consumer index; the copy in shared memory is only ever written.
    pub(crate) cons: u32,
}

impl<M: SharedMem> ConsumerIndex<M> {
    /// Attaches to an initialised ring at the published `cons`.
    pub(crate) fn attach(mem: M, unit: usize) -> Result<Self, RingError> {
        let capacity = capacity_for(mem.len(), unit)?;
        let cons = mem.load_u32(CONS_OFF);
        Ok(Self {
            mem,
            capacity,
            cons,
        })
    }

    /// Units published and not yet consumed, validated.
    fn available_now(&self) -> Result<u32, RingError> {
        let prod = self.mem.load_u32(PROD_OFF);
        // Pairs with the producer's release: the data it announced is visible.
        self.mem.fence_acquire();
        let avail = prod.wrapping_sub(self.cons);
        if avail > self.capacity {
            return Err(RingError::PeerIndex {
                prod,
                cons: self.cons,
            });
        }
        Ok(avail)
    }

    /// Units ready to consume. When there are none, re-arms `prod_event` and
    /// checks again, so that `Ok(0)` means "empty, and the producer will
    /// notify us on its next publish": the caller may sleep.
    pub(crate) fn available(&mut self) -> Result<u32, RingError> {
        let avail = self.available_now()?;
        if avail != 0 {
            return Ok(avail);
        }
        self.mem.store_u32(PROD_EVENT_OFF, self.cons);
        self.mem.fence_full();
        self.available_now()
    }

    /// Like [`Self::available`] but without arming: for peeking and for
    /// callers that poll.
    pub(crate) fn available_unarmed(&self) -> Result<u32, RingError> {
        self.available_now()
    }

    /// Releases `count` consumed units back to the producer.
    pub(crate) fn release(&mut self, count: u32) -> Notify {
        let old = self.cons;
        let new = old.wrapping_add(count);
        // Our reads of the data must finish before the producer may reuse it.
        self.mem.fence_release();
        self.mem.store_u32(CONS_OFF, new);
        self.cons = new;
        self.mem.fence_full();
        let event = self.mem.load_u32(CONS_EVENT_OFF);
        if need_event(event, new, old) {
            Notify::Peer
        } else {
            Notify::None
        }
    }
}
