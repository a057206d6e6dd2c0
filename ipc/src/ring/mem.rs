//! [`AtomicMem`]: a [`SharedMem`] over a slice of `AtomicU32`, for host tests,
//! fuzzing, and rings between threads of one address space.
//!
//! The one idea: every byte access goes through a relaxed atomic on the word
//! that holds it, and the fences map to `core::sync::atomic::fence`, so two
//! threads sharing a ring never race in the Rust memory model and the ring's
//! own fences are what orders data against indices. An access outside the
//! region is not a panic: it is counted in [`AtomicMem::violations`], so tests
//! and fuzzers can assert that the ring never strayed.

use core::sync::atomic::{fence, AtomicU32, Ordering};

use super::SharedMem;

/// Shared memory backed by atomics. Words hold bytes in little-endian order,
/// matching what a guest sees in a mapped page.
pub struct AtomicMem<'a> {
    words: &'a [AtomicU32],
    violations: AtomicU32,
}

impl<'a> AtomicMem<'a> {
    /// Wraps `words`, a region of `4 * words.len()` bytes.
    pub fn new(words: &'a [AtomicU32]) -> Self {
        Self {
            words,
            violations: AtomicU32::new(0),
        }
    }

    /// Number of out-of-bounds or misaligned accesses made so far; a correct
    /// ring makes none, whatever is in the memory.
    pub fn violations(&self) -> u32 {
        self.violations.load(Ordering::Relaxed)
    }

    fn violation(&self) {
        self.violations.fetch_add(1, Ordering::Relaxed);
    }

    fn word(&self, off: usize) -> Option<&AtomicU32> {
        self.words.get(off / 4)
    }

    fn in_bounds(&self, off: usize, len: usize) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.len())
    }

    fn read_byte(&self, off: usize) -> u8 {
        let word = self.word(off).map_or(0, |w| w.load(Ordering::Relaxed));
        word.to_le_bytes()[off % 4]
    }

    fn write_byte(&self, off: usize, byte: u8) {
        // Only one side writes any given byte, so a load-modify-store of the
        // word loses no update.
        if let Some(w) = self.word(off) {
            let mut bytes = w.load(Ordering::Relaxed).to_le_bytes();
            bytes[off % 4] = byte;
            w.store(u32::from_le_bytes(bytes), Ordering::Relaxed);
        }
    }
}

impl SharedMem for AtomicMem<'_> {
    fn len(&self) -> usize {
        self.words.len() * 4
    }

    fn load_u32(&self, off: usize) -> u32 {
        if !off.is_multiple_of(4) || !self.in_bounds(off, 4) {
            self.violation();
            return 0;
        }
        self.word(off).map_or(0, |w| w.load(Ordering::Relaxed))
    }

    fn store_u32(&self, off: usize, v: u32) {
        if !off.is_multiple_of(4) || !self.in_bounds(off, 4) {
            self.violation();
            return;
        }
        if let Some(w) = self.word(off) {
            w.store(v, Ordering::Relaxed);
        }
    }

    fn read(&self, off: usize, buf: &mut [u8]) {
        if !self.in_bounds(off, buf.len()) {
            self.violation();
            buf.fill(0);
            return;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.read_byte(off + i);
        }
    }

    fn write(&self, off: usize, data: &[u8]) {
        if !self.in_bounds(off, data.len()) {
            self.violation();
            return;
        }
        for (i, &b) in data.iter().enumerate() {
            self.write_byte(off + i, b);
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
