//! Memory shared with another domain (a static `xen,domain-shared-memory-v1`
//! region, later a grant mapping), as a `tessera_ipc::ring::SharedMem`.
//!
//! The one idea: the peer may write any byte of the region at any moment,
//! so Rust never holds a reference into it. Every access is a volatile load
//! or store through a raw pointer, bounds-checked against the region (an
//! out-of-range access reads 0 and writes nothing: a ring bug, never a stray
//! access), with data copied in naturally aligned 64-bit pieces so a copy
//! never needs the unaligned accesses that Device memory would fault on.
//! Ordering is the ring's business: it calls the fences.

use core::ptr::NonNull;
use core::sync::atomic::{fence, Ordering};
use tessera_ipc::ring::SharedMem;

/// A mapped shared region.
#[derive(Debug)]
pub struct SharedRegion {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a `SharedRegion` is an address range whose every access is a
// volatile access made with the peer in mind; using it from another CPU of
// this domain is no different from the peer using it.
unsafe impl Send for SharedRegion {}
// SAFETY: as for `Send`.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// The region of `len` bytes at address `base`; `None` if `base` is null
    /// or not 8-byte aligned.
    ///
    /// # Safety
    /// `base..base + len` must stay mapped (as normal or device memory) for
    /// the rest of the program and must not be reached by Rust code except
    /// through `SharedRegion`s.
    pub unsafe fn new(base: usize, len: usize) -> Option<Self> {
        if !base.is_multiple_of(8) || base.checked_add(len).is_none() {
            return None;
        }
        let base = NonNull::new(base as *mut u8)?;
        Some(Self { base, len })
    }

    /// Address of the first byte.
    pub fn base(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// The part `off..off + len`, which must lie inside the region and start
    /// 8-byte aligned (so that rings can be placed side by side).
    pub fn sub(&self, off: usize, len: usize) -> Option<SharedRegion> {
        let end = off.checked_add(len)?;
        if end > self.len || !off.is_multiple_of(8) {
            return None;
        }
        // SAFETY: `off + len <= self.len`, so the result is inside this
        // region, which `new`'s caller vouched for.
        let base = unsafe { self.base.add(off) };
        Some(SharedRegion { base, len })
    }

    fn in_bounds(&self, off: usize, len: usize, align: usize) -> bool {
        off.is_multiple_of(align) && off.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// Pointer to byte `off`, after the caller checked `in_bounds`.
    fn at(&self, off: usize) -> *mut u8 {
        self.base.as_ptr().wrapping_add(off)
    }

    /// Single-copy-atomic load of the `u64` at `off` (8-aligned); 0 out of
    /// range. For control words next to the rings.
    pub fn load_u64(&self, off: usize) -> u64 {
        if !self.in_bounds(off, 8, 8) {
            return 0;
        }
        // SAFETY: in bounds and 8-aligned inside the region `new` vouched for.
        u64::from_le(unsafe { self.at(off).cast::<u64>().read_volatile() })
    }

    /// Single-copy-atomic store of `v` at `off` (8-aligned); ignored out of
    /// range.
    pub fn store_u64(&self, off: usize, v: u64) {
        if self.in_bounds(off, 8, 8) {
            // SAFETY: as for `load_u64`.
            unsafe { self.at(off).cast::<u64>().write_volatile(v.to_le()) }
        }
    }

    fn load_u8(&self, off: usize) -> u8 {
        // SAFETY: every caller checked `off` against the region.
        unsafe { self.at(off).read_volatile() }
    }

    fn store_u8(&self, off: usize, v: u8) {
        // SAFETY: every caller checked `off` against the region.
        unsafe { self.at(off).write_volatile(v) }
    }
}

/// Splits a copy of `len` bytes at region offset `off` into a head of single
/// bytes up to 8-byte alignment, whole aligned words, and a tail of bytes:
/// returns (head bytes, words).
fn pieces(off: usize, len: usize) -> (usize, usize) {
    let head = ((8 - off % 8) % 8).min(len);
    (head, (len - head) / 8)
}

impl SharedMem for SharedRegion {
    fn len(&self) -> usize {
        self.len
    }

    fn load_u32(&self, off: usize) -> u32 {
        if !self.in_bounds(off, 4, 4) {
            return 0;
        }
        // SAFETY: in bounds and 4-aligned inside the region.
        u32::from_le(unsafe { self.at(off).cast::<u32>().read_volatile() })
    }

    fn store_u32(&self, off: usize, v: u32) {
        if self.in_bounds(off, 4, 4) {
            // SAFETY: in bounds and 4-aligned inside the region.
            unsafe { self.at(off).cast::<u32>().write_volatile(v.to_le()) }
        }
    }

    fn read(&self, off: usize, buf: &mut [u8]) {
        if !self.in_bounds(off, buf.len(), 1) {
            buf.fill(0);
            return;
        }
        let (head, words) = pieces(off, buf.len());
        let (head_buf, rest) = buf.split_at_mut(head);
        for (i, b) in head_buf.iter_mut().enumerate() {
            *b = self.load_u8(off + i);
        }
        let mut pos = off + head;
        let mut chunks = rest.chunks_exact_mut(8);
        for chunk in chunks.by_ref().take(words) {
            chunk.copy_from_slice(&self.load_u64(pos).to_le_bytes());
            pos += 8;
        }
        for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
            *b = self.load_u8(pos + i);
        }
    }

    fn write(&self, off: usize, data: &[u8]) {
        if !self.in_bounds(off, data.len(), 1) {
            return;
        }
        let (head, words) = pieces(off, data.len());
        let (head_data, rest) = data.split_at(head);
        for (i, &b) in head_data.iter().enumerate() {
            self.store_u8(off + i, b);
        }
        let mut pos = off + head;
        let mut chunks = rest.chunks_exact(8);
        for chunk in chunks.by_ref().take(words) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.store_u64(pos, u64::from_le_bytes(word));
            pos += 8;
        }
        for (i, &b) in chunks.remainder().iter().enumerate() {
            self.store_u8(pos + i, b);
        }
    }

    fn fence_acquire(&self) {
        fence(Ordering::Acquire);
    }

    fn fence_release(&self) {
        fence(Ordering::Release);
    }

    fn fence_full(&self) {
        fence(Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;
    use tessera_ipc::ring::{layout, ByteConsumer, ByteProducer, SlotConsumer, SlotProducer};

    /// A leaked, 8-aligned buffer standing in for a mapped region.
    fn region(bytes: usize) -> SharedRegion {
        let words: &'static mut [u64] = Vec::leak(vec![0u64; bytes / 8]);
        // SAFETY: the buffer is leaked (lives forever) and only reached
        // through the region from here on.
        unsafe { SharedRegion::new(words.as_mut_ptr() as usize, bytes) }.unwrap()
    }

    #[test]
    fn constructor_and_sub_check_alignment_and_bounds() {
        // SAFETY: never accessed; only the checks run.
        unsafe {
            assert!(SharedRegion::new(0, 16).is_none());
            assert!(SharedRegion::new(4, 16).is_none());
            assert!(SharedRegion::new(usize::MAX & !7, 16).is_none());
        }
        let r = region(4096);
        assert_eq!(r.sub(1024, 3072).map(|s| s.len()), Some(3072));
        assert!(r.sub(1024, 3073).is_none());
        assert!(r.sub(4, 8).is_none());
        assert!(r.sub(usize::MAX, 2).is_none());
        assert_eq!(r.sub(8, 0).map(|s| s.base()), Some(r.base() + 8));
    }

    #[test]
    fn copies_are_exact_at_every_offset_and_length() {
        let r = region(256);
        let pattern: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for off in 0..24 {
            for len in 0..40 {
                r.write(0, &[0xee; 128]);
                r.write(off, &pattern[..len]);
                let mut all = [0u8; 128];
                r.read(0, &mut all);
                assert!(all[..off].iter().all(|&b| b == 0xee), "{off} {len}");
                assert_eq!(&all[off..off + len], &pattern[..len], "{off} {len}");
                assert!(all[off + len..].iter().all(|&b| b == 0xee), "{off} {len}");
                let mut back = vec![0u8; len];
                r.read(off, &mut back);
                assert_eq!(back, &pattern[..len]);
            }
        }
    }

    #[test]
    fn out_of_range_accesses_do_nothing() {
        let r = region(64);
        r.store_u32(60, 7);
        assert_eq!(r.load_u32(60), 7);
        r.store_u32(62, 1);
        r.store_u32(64, 1);
        assert_eq!(r.load_u32(64), 0);
        assert_eq!(r.load_u32(62), 0, "misaligned");
        r.store_u64(56, u64::MAX);
        assert_eq!(r.load_u64(56), u64::MAX);
        assert_eq!(r.load_u64(60), 0);
        let mut buf = [1u8; 8];
        r.read(60, &mut buf);
        assert_eq!(buf, [0; 8], "a read past the end returns zeros");
        r.write(usize::MAX, &[1]);
        r.write(63, &[9, 9]);
        assert_eq!(r.load_u64(56), u64::MAX, "a write past the end is dropped");
    }

    #[test]
    fn rings_run_over_a_region() {
        let r = region(3 * 4096);
        let (slots, bytes) = (r.sub(0, 4096).unwrap(), r.sub(4096, 8192).unwrap());
        layout::init(&slots, u32::MAX - 10).unwrap();
        layout::init(&bytes, u32::MAX - 100).unwrap();
        let mut tx = SlotProducer::<_, 64>::attach(&slots).unwrap();
        let mut rx = SlotConsumer::<_, 64>::attach(&slots).unwrap();
        let mut btx = ByteProducer::attach(&bytes).unwrap();
        let mut brx = ByteConsumer::attach(&bytes).unwrap();
        let mut out = [0u8; 64];
        let mut rec = [0u8; 300];
        for i in 0..500u32 {
            let msg = [i as u8; 64];
            let _ = tx.push(&msg).unwrap();
            assert!(rx.pop(&mut out).unwrap().is_some());
            assert_eq!(out, msg);
            let len = (i as usize * 7) % 300;
            let data: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            let _ = btx.push(&data).unwrap();
            let got = brx.pop(&mut rec).unwrap().unwrap();
            assert_eq!(&rec[..got.len], &data[..]);
        }
    }
}
