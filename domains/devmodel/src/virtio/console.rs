//! virtio-console (virtio 1.2 §5.3), port 0 only: no MULTIPORT, no SIZE,
//! no EMERG_WRITE, so queue 0 is receiveq and queue 1 is transmitq and the
//! configuration space is never read by Linux.
//!
//! The one idea: transmit never waits. Linux's hvc path busy-waits for
//! each transmit buffer to come back (`__send_to_port`), so every TX chain
//! is completed at once; bytes go to a fixed ring the shell drains with
//! `take_output`, and bytes that do not fit are dropped and counted.
//! Receive is driven by the shell: `push_input` fills buffers the guest
//! posted and says how many bytes it took, so the shell keeps the rest.

use super::mmio::VirtioMmio;
use super::queue::Queue;
use super::{device_id, read_config_image, Device, DeviceError};
use crate::guest_mem::GuestMemory;

pub const RECEIVEQ: u16 = 0;
pub const TRANSMITQ: u16 = 1;
/// Entries per queue offered to the driver.
pub const QUEUE_SIZE: u16 = 64;
/// `struct virtio_console_config`: cols, rows, max_nr_ports, emerg_wr.
const CONFIG_LEN: usize = 12;

/// A console whose guest output waits in an `OUT`-byte ring.
pub struct Console<const OUT: usize = 4096> {
    output: [u8; OUT],
    /// Index of the oldest byte in `output`.
    start: usize,
    len: usize,
    dropped: u64,
}

impl<const OUT: usize> Default for Console<OUT> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const OUT: usize> Console<OUT> {
    /// A console with an empty output ring (`Console::<4096>::new()`, or
    /// `let c: Console = Console::new();` for the default size).
    pub const fn new() -> Self {
        const { assert!(OUT > 0, "the output ring needs room") };
        Console {
            output: [0; OUT],
            start: 0,
            len: 0,
            dropped: 0,
        }
    }

    /// Move guest output into `out`, oldest first; returns the count.
    pub fn take_output(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        for (i, slot) in out.iter_mut().take(n).enumerate() {
            *slot = self
                .output
                .get((self.start + i) % OUT)
                .copied()
                .unwrap_or(0);
        }
        if n > 0 {
            self.start = (self.start + n) % OUT;
            self.len -= n;
        }
        n
    }

    /// Bytes waiting for `take_output`.
    pub fn pending_output(&self) -> usize {
        self.len
    }

    /// Guest output bytes lost because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn transmit(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<(), DeviceError> {
        for _ in 0..queue.batch_limit() {
            let Some(chain) = queue.pop(mem)? else {
                break;
            };
            let total = chain.readable_len();
            let mut offset = 0u64;
            while offset < total && self.len < OUT {
                let mut chunk = [0u8; 64];
                let room = (OUT - self.len).min(chunk.len());
                let buf = chunk.get_mut(..room).unwrap_or(&mut []);
                let n = chain.read_at(mem, offset, buf)?;
                if n == 0 {
                    break;
                }
                for &byte in buf.iter().take(n) {
                    if let Some(slot) = self.output.get_mut((self.start + self.len) % OUT) {
                        *slot = byte;
                    }
                    self.len += 1;
                }
                offset += n as u64;
            }
            self.dropped += total - offset;
            queue.add_used(mem, chain.head(), 0)?;
        }
        Ok(())
    }

    /// Fill posted receive buffers with `bytes`; returns how many were
    /// taken. Each buffer is returned as soon as it holds something.
    pub fn receive(
        &mut self,
        queues: &mut [Queue],
        bytes: &[u8],
        mem: &mut dyn GuestMemory,
    ) -> Result<usize, DeviceError> {
        let Some(queue) = queues.get_mut(usize::from(RECEIVEQ)) else {
            return Ok(0);
        };
        let mut taken = 0usize;
        for _ in 0..queue.batch_limit() {
            if taken == bytes.len() {
                break;
            }
            let Some(chain) = queue.pop(mem)? else {
                break;
            };
            let rest = bytes.get(taken..).unwrap_or(&[]);
            let n = chain.write_at(mem, 0, rest)?;
            // `n` is bounded by the chain's writable length, below 2^32.
            queue.add_used(mem, chain.head(), n as u32)?;
            taken += n;
        }
        Ok(taken)
    }
}

impl<const OUT: usize> Device for Console<OUT> {
    fn device_id(&self) -> u32 {
        device_id::CONSOLE
    }

    fn device_features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_image(&[0; CONFIG_LEN], offset, data);
    }

    fn notify(
        &mut self,
        queue: u16,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<(), DeviceError> {
        // Receive buffers wait for `push_input`; nothing to do for them.
        match queues.get_mut(usize::from(queue)) {
            Some(q) if queue == TRANSMITQ => self.transmit(q, mem),
            _ => Ok(()),
        }
    }

    fn reset(&mut self) {
        // Output already taken from the guest stays for the shell.
    }
}

impl<const OUT: usize> VirtioMmio<Console<OUT>> {
    /// Offer console input to the guest; returns how many bytes it took
    /// (0 before DRIVER_OK, when no buffer is posted, or on a ring error,
    /// which latches DEVICE_NEEDS_RESET). Check `irq_level` afterwards.
    pub fn push_input(&mut self, bytes: &[u8], mem: &mut dyn GuestMemory) -> usize {
        self.run(mem, |console, queues, mem| {
            console.receive(queues, bytes, mem)
        })
        .unwrap_or(0)
    }

    /// Drain guest output into `out`; returns the count.
    pub fn take_output(&mut self, out: &mut [u8]) -> usize {
        self.device_mut().take_output(out)
    }

    /// Guest output waiting for `take_output`.
    pub fn pending_output(&self) -> usize {
        self.device().pending_output()
    }
}
