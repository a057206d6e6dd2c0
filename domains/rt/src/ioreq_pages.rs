//! The pages a device-model domain shares with the kernel for each domain
//! it serves (`tessera_ipc::ioreq`): the slot page, one posted access per
//! vCPU, and the fast page, the posted-write ring and register shadows.
//! Portable, so the protocol is tested on the host against the layout.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use tessera_ipc::ioreq::{
    FAST_CONSUMED_OFFSET, FAST_POSTED_OFFSET, FAST_PRODUCED_OFFSET, FAST_SHADOWS_OFFSET,
    FLAGS_OFFSET, FLAG_DIR_READ, POSTED_ENTRIES, SHADOW_ENTRIES, SHADOW_VALID, SLOT_SIZE,
    STATE_IOREQ_READY, STATE_IORESP_READY,
};

/// One posted access, as read from its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub addr: u64,
    pub size: u8,
    /// `None` for a read; the value for a write.
    pub write: Option<u64>,
}

/// A page of slots, one per vCPU of a served domain, shared with the kernel.
pub struct SlotPage {
    base: *mut u8,
    slots: usize,
}

impl SlotPage {
    /// # Safety
    /// `base` must be a page of this domain's memory registered with
    /// [`register`] and used for nothing else, and `slots` at most
    /// `SLOTS_PER_PAGE`.
    pub unsafe fn new(base: *mut u8, slots: usize) -> Self {
        Self { base, slots }
    }

    fn flags(&self, vcpu: usize) -> Option<&AtomicU8> {
        if vcpu >= self.slots {
            return None;
        }
        // SAFETY: inside the page (vcpu < slots ≤ SLOTS_PER_PAGE); the flags
        // byte is shared with the kernel and only accessed atomically.
        Some(unsafe { &*(self.base.add(vcpu * SLOT_SIZE + FLAGS_OFFSET) as *const AtomicU8) })
    }

    /// The access posted in vCPU `vcpu`'s slot, if one waits.
    pub fn take(&self, vcpu: usize) -> Option<Access> {
        let flags = self.flags(vcpu)?.load(Ordering::Acquire);
        if flags & 0xf != STATE_IOREQ_READY {
            return None;
        }
        // SAFETY: the slot is inside the page; the kernel wrote these fields
        // before publishing READY (Acquire above).
        let (addr, data, size) = unsafe {
            let s = self.base.add(vcpu * SLOT_SIZE);
            (
                core::ptr::read_volatile(s as *const u64),
                core::ptr::read_volatile(s.add(8) as *const u64),
                core::ptr::read_volatile(s.add(20) as *const u32),
            )
        };
        Some(Access {
            addr,
            size: size.min(8) as u8,
            write: (flags & FLAG_DIR_READ == 0).then_some(data),
        })
    }

    /// Answer vCPU `vcpu`'s access (`data` is ignored for a write).
    pub fn answer(&self, vcpu: usize, data: u64) {
        let Some(flags) = self.flags(vcpu) else {
            return;
        };
        // SAFETY: inside the page; `data` is at offset 8 of the slot.
        unsafe { core::ptr::write_volatile(self.base.add(vcpu * SLOT_SIZE + 8) as *mut u64, data) };
        flags.store(STATE_IORESP_READY, Ordering::Release);
    }

    /// Whether any slot holds a posted access.
    pub fn any_ready(&self) -> bool {
        (0..self.slots).any(|v| {
            self.flags(v)
                .is_some_and(|f| f.load(Ordering::Acquire) & 0xf == STATE_IOREQ_READY)
        })
    }
}

/// This side of a served domain's `FastPage` (`tessera_ipc::ioreq`): the
/// posted writes to apply, and the register shadows to keep current.
pub struct FastView {
    base: *mut u8,
    /// Posted writes applied so far (ours).
    consumed: u32,
    /// `consumed` as last published to the kernel.
    published: u32,
}

impl FastView {
    /// # Safety
    /// `base` must be a page of this domain's memory registered with
    /// [`register`] as the fast page, and used for nothing else.
    pub unsafe fn new(base: *mut u8) -> Self {
        Self {
            base,
            consumed: 0,
            published: 0,
        }
    }

    fn word32(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: the callers pass 4-aligned offsets inside the page; the
        // word is shared with the kernel and only accessed atomically.
        unsafe { &*(self.base.add(offset) as *const AtomicU32) }
    }

    fn word64(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: as in `word32`, 8-aligned.
        unsafe { &*(self.base.add(offset) as *const AtomicU64) }
    }

    /// Whether posted writes wait to be applied.
    pub fn pending(&self) -> bool {
        self.word32(FAST_PRODUCED_OFFSET).load(Ordering::Acquire) != self.consumed
    }

    /// The next posted write to apply, in order; `None` once all are,
    /// which also tells the kernel their room is free again.
    pub fn next_posted(&mut self) -> Option<Access> {
        let produced = self.word32(FAST_PRODUCED_OFFSET).load(Ordering::Acquire);
        if self.consumed == produced {
            if self.published != self.consumed {
                self.word32(FAST_CONSUMED_OFFSET)
                    .store(self.consumed, Ordering::Release);
                self.published = self.consumed;
            }
            return None;
        }
        let at = FAST_POSTED_OFFSET + (self.consumed as usize % POSTED_ENTRIES) * 16;
        let addr = self.word64(at).load(Ordering::Relaxed);
        let word = self.word64(at + 8).load(Ordering::Relaxed);
        self.consumed = self.consumed.wrapping_add(1);
        Some(Access {
            addr,
            size: ((word >> 32) as u8).min(4),
            write: Some(word & 0xffff_ffff),
        })
    }

    /// Publish shadow `index`: reads of at most 4 bytes at `addr` get
    /// `value` from the kernel (see `FastPage` for what that promises).
    pub fn set_shadow(&self, index: usize, addr: u64, value: u64) {
        if index >= SHADOW_ENTRIES {
            return;
        }
        let at = FAST_SHADOWS_OFFSET + index * 16;
        let key = SHADOW_VALID | addr;
        if self.word64(at).load(Ordering::Relaxed) == key {
            self.word64(at + 8).store(value, Ordering::Release);
            return;
        }
        self.word64(at).store(0, Ordering::Release);
        self.word64(at + 8).store(value, Ordering::Release);
        self.word64(at).store(key, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ipc::ioreq::FastPage;
    use zerocopy::FromZeros;

    /// The kernel's side of the ring, as the ABI describes it.
    fn produce(page: &mut FastPage, produced: &mut u32, addr: u64, data: u32, size: u8) {
        let e = &mut page.posted[*produced as usize % POSTED_ENTRIES];
        e.addr = addr.into();
        e.data = data.into();
        e.size = size;
        *produced = produced.wrapping_add(1);
        page.produced = (*produced).into();
    }

    #[test]
    fn posted_writes_come_out_in_order_and_free_their_room() {
        let mut page = Box::new(FastPage::new_zeroed());
        let base = (&mut *page as *mut FastPage).cast::<u8>();
        // SAFETY: the page outlives the view and is used only through it
        // and `produce` below, never at the same time.
        let mut view = unsafe { FastView::new(base) };
        assert!(!view.pending());
        assert_eq!(view.next_posted(), None);
        let mut produced = u32::MAX - 2; // wraps on the way
        page.produced = produced.into();
        page.consumed = produced.into();
        view.consumed = produced;
        view.published = produced;
        for (i, byte) in b"hi!\n".iter().enumerate() {
            produce(
                &mut page,
                &mut produced,
                0x0900_0000,
                u32::from(*byte),
                1 + i as u8 % 2,
            );
        }
        assert!(view.pending());
        let got: Vec<Access> = core::iter::from_fn(|| view.next_posted()).collect();
        let want: Vec<Access> = b"hi!\n"
            .iter()
            .enumerate()
            .map(|(i, b)| Access {
                addr: 0x0900_0000,
                size: 1 + i as u8 % 2,
                write: Some(u64::from(*b)),
            })
            .collect();
        assert_eq!(got, want);
        assert!(!view.pending());
        assert_eq!(page.consumed.get(), produced, "the room is given back");
    }

    #[test]
    fn a_posted_size_is_capped_at_four_bytes() {
        let mut page = Box::new(FastPage::new_zeroed());
        let base = (&mut *page as *mut FastPage).cast::<u8>();
        // SAFETY: as above.
        let mut view = unsafe { FastView::new(base) };
        let mut produced = 0;
        produce(&mut page, &mut produced, 0x0900_0030, 7, 200);
        assert_eq!(view.next_posted().map(|a| a.size), Some(4));
    }

    #[test]
    fn shadows_publish_a_key_and_update_only_the_value() {
        let mut page = Box::new(FastPage::new_zeroed());
        let base = (&mut *page as *mut FastPage).cast::<u8>();
        // SAFETY: as above.
        let view = unsafe { FastView::new(base) };
        view.set_shadow(0, 0x0900_0018, 0x90);
        view.set_shadow(0, 0x0900_0018, 0x80);
        view.set_shadow(SHADOW_ENTRIES, 0x0900_0000, 1); // ignored
        assert_eq!(page.shadows[0].key.get(), SHADOW_VALID | 0x0900_0018);
        assert_eq!(page.shadows[0].value.get(), 0x80);
        assert!(page.shadows[1..].iter().all(|s| s.key.get() == 0));
    }
}
