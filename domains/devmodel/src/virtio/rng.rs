//! virtio-rng, the entropy device (virtio 1.2 §5.4): one request queue
//! whose device-writable buffers the device fills with random bytes.
//!
//! The one idea: the device does not know where randomness comes from; the
//! shell supplies an [`EntropySource`]. [`ChaCha20Rng`] is a small portable
//! generator for shells without a hardware source: it is NOT a hardware
//! entropy source, and what it produces is exactly as unpredictable as its
//! seed (a seed taken from a counter is guessable). Each buffer gets at
//! most [`MAX_FILL`] bytes, which §5.4.6.1 allows ("MAY use less than the
//! entire buffer"), so a guest cannot make one request cost gigabytes.

use super::queue::Queue;
use super::{device_id, Device, DeviceError};
use crate::guest_mem::GuestMemory;

pub const REQUESTQ: u16 = 0;
/// Entries in the request queue offered to the driver.
pub const QUEUE_SIZE: u16 = 64;
/// The most bytes one buffer receives.
pub const MAX_FILL: u64 = 4096;

/// Where random bytes come from.
pub trait EntropySource {
    /// Fill `buf` completely.
    fn fill(&mut self, buf: &mut [u8]);
}

/// The entropy device.
pub struct Rng<E: EntropySource> {
    source: E,
}

impl<E: EntropySource> Rng<E> {
    pub const fn new(source: E) -> Self {
        Rng { source }
    }

    pub fn source_mut(&mut self) -> &mut E {
        &mut self.source
    }

    fn serve(&mut self, queue: &mut Queue, mem: &mut dyn GuestMemory) -> Result<(), DeviceError> {
        for _ in 0..queue.batch_limit() {
            let Some(chain) = queue.pop(mem)? else {
                break;
            };
            let want = chain.writable_len().min(MAX_FILL);
            let mut offset = 0u64;
            while offset < want {
                let mut chunk = [0u8; 64];
                let n = usize::try_from(want - offset).map_or(chunk.len(), |r| r.min(chunk.len()));
                let buf = chunk.get_mut(..n).unwrap_or(&mut []);
                self.source.fill(buf);
                let written = chain.write_at(mem, offset, buf)?;
                if written == 0 {
                    break;
                }
                offset += written as u64;
            }
            // `want` is at most MAX_FILL.
            queue.add_used(mem, chain.head(), want as u32)?;
        }
        Ok(())
    }
}

impl<E: EntropySource> Device for Rng<E> {
    fn device_id(&self) -> u32 {
        device_id::ENTROPY
    }

    fn device_features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // No configuration space (§5.4.4).
        data.fill(0);
    }

    fn notify(
        &mut self,
        queue: u16,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<(), DeviceError> {
        match queues.get_mut(usize::from(queue)) {
            Some(q) if queue == REQUESTQ => self.serve(q, mem),
            _ => Ok(()),
        }
    }

    fn reset(&mut self) {}
}

/// A deterministic source for tests and fuzzing: 0, 1, 2, ... wrapping.
#[derive(Clone, Debug, Default)]
pub struct CountingEntropy {
    next: u8,
}

impl EntropySource for CountingEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next;
            self.next = self.next.wrapping_add(1);
        }
    }
}

/// The ChaCha20 stream (RFC 8439 block function, 64-bit block counter,
/// zero nonce) used as a generator. Not a hardware entropy source: its
/// output is only as unpredictable as the seed given to
/// [`from_seed`](Self::from_seed).
#[derive(Clone)]
pub struct ChaCha20Rng {
    key: [u32; 8],
    counter: u64,
    block: [u8; 64],
    used: usize,
}

impl ChaCha20Rng {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let mut key = [0u32; 8];
        for (word, bytes) in key.iter_mut().zip(seed.chunks_exact(4)) {
            let mut b = [0u8; 4];
            b.copy_from_slice(bytes);
            *word = u32::from_le_bytes(b);
        }
        ChaCha20Rng {
            key,
            counter: 0,
            block: [0; 64],
            used: 64,
        }
    }

    fn refill(&mut self) {
        let counter = self.counter;
        self.block = chacha20_block(&self.key, counter as u32, [(counter >> 32) as u32, 0, 0]);
        self.counter = counter.wrapping_add(1);
        self.used = 0;
    }
}

impl EntropySource for ChaCha20Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used >= self.block.len() {
                self.refill();
            }
            *b = self.block.get(self.used).copied().unwrap_or(0);
            self.used += 1;
        }
    }
}

/// One ChaCha20 block (RFC 8439 §2.3): constants, key, 32-bit counter,
/// 96-bit nonce; 20 rounds; the input added back.
fn chacha20_block(key: &[u32; 8], counter: u32, nonce: [u32; 3]) -> [u8; 64] {
    let [k0, k1, k2, k3, k4, k5, k6, k7] = *key;
    let [n0, n1, n2] = nonce;
    let input: [u32; 16] = [
        0x6170_7865,
        0x3320_646e,
        0x7962_2d32,
        0x6b20_6574,
        k0,
        k1,
        k2,
        k3,
        k4,
        k5,
        k6,
        k7,
        counter,
        n0,
        n1,
        n2,
    ];
    let mut x = input;
    fn quarter(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
        let (mut va, mut vb, mut vc, mut vd) = (x[a], x[b], x[c], x[d]);
        va = va.wrapping_add(vb);
        vd = (vd ^ va).rotate_left(16);
        vc = vc.wrapping_add(vd);
        vb = (vb ^ vc).rotate_left(12);
        va = va.wrapping_add(vb);
        vd = (vd ^ va).rotate_left(8);
        vc = vc.wrapping_add(vd);
        vb = (vb ^ vc).rotate_left(7);
        x[a] = va;
        x[b] = vb;
        x[c] = vc;
        x[d] = vd;
    }
    for _ in 0..10 {
        quarter(&mut x, 0, 4, 8, 12);
        quarter(&mut x, 1, 5, 9, 13);
        quarter(&mut x, 2, 6, 10, 14);
        quarter(&mut x, 3, 7, 11, 15);
        quarter(&mut x, 0, 5, 10, 15);
        quarter(&mut x, 1, 6, 11, 12);
        quarter(&mut x, 2, 7, 8, 13);
        quarter(&mut x, 3, 4, 9, 14);
    }
    let mut out = [0u8; 64];
    for ((chunk, word), inp) in out.chunks_exact_mut(4).zip(x).zip(input) {
        chunk.copy_from_slice(&word.wrapping_add(inp).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chacha20_block_matches_rfc8439_2_3_2() {
        let mut key = [0u32; 8];
        for (i, w) in key.iter_mut().enumerate() {
            let b = (4 * i) as u8;
            *w = u32::from_le_bytes([b, b + 1, b + 2, b + 3]);
        }
        let out = chacha20_block(&key, 1, [0x0900_0000, 0x4a00_0000, 0]);
        let want: [u8; 64] = [
            0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20,
            0x71, 0xc4, 0xc7, 0xd1, 0xf4, 0xc7, 0x33, 0xc0, 0x68, 0x03, 0x04, 0x22, 0xaa, 0x9a,
            0xc3, 0xd4, 0x6c, 0x4e, 0xd2, 0x82, 0x64, 0x46, 0x07, 0x9f, 0xaa, 0x09, 0x14, 0xc2,
            0xd7, 0x05, 0xd9, 0x8b, 0x02, 0xa2, 0xb5, 0x12, 0x9c, 0xd1, 0xde, 0x16, 0x4e, 0xb9,
            0xcb, 0xd0, 0x83, 0xe8, 0xa2, 0x50, 0x3c, 0x4e,
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn chacha20_rng_streams_across_blocks() {
        let mut a = ChaCha20Rng::from_seed([7; 32]);
        let mut b = ChaCha20Rng::from_seed([7; 32]);
        let mut whole = [0u8; 150];
        a.fill(&mut whole);
        let mut parts = [0u8; 150];
        let (x, y) = parts.split_at_mut(33);
        b.fill(x);
        b.fill(y);
        assert_eq!(whole, parts);
        assert_ne!(whole.get(..64), whole.get(64..128));
        let mut other = ChaCha20Rng::from_seed([8; 32]);
        let mut o = [0u8; 150];
        other.fill(&mut o);
        assert_ne!(whole, o);
    }

    #[test]
    fn counting_entropy_counts() {
        let mut c = CountingEntropy::default();
        let mut b = [0u8; 4];
        c.fill(&mut b);
        c.fill(&mut b);
        assert_eq!(b, [4, 5, 6, 7]);
    }
}
