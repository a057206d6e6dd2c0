//! virtio-net (virtio 1.2 §5.1) with one receive and one transmit queue,
//! a MAC address in the configuration space, link always up, and no
//! offloads, control queue or mergeable receive buffers.
//!
//! The one idea: frames cross as whole Ethernet frames with the 12-byte
//! `virtio_net_hdr_v1` (VERSION_1) stripped on transmit and prepended on
//! receive. Transmit is back-pressured, not lossy: a notification moves
//! frames into a small outbox only while it has room, and
//! [`VirtioMmio::pop_tx_frame`] takes one out and resumes the ring. Without
//! MRG_RXBUF each received frame needs one buffer holding header and frame
//! (§5.1.6.3.1; Linux posts 12 + 1518 bytes), and `num_buffers` is 1
//! (§5.1.6.4.1).

use super::mmio::VirtioMmio;
use super::queue::Queue;
use super::{device_id, read_config_image, Device, DeviceError};
use crate::guest_mem::GuestMemory;

pub const RECEIVEQ: u16 = 0;
pub const TRANSMITQ: u16 = 1;
/// Entries per queue offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// `struct virtio_net_hdr_v1` (§5.1.6).
pub const HDR_LEN: usize = 12;
/// The largest frame carried: 1514 bytes plus an 802.1Q tag (Linux's
/// GOOD_PACKET_LEN), no FCS.
pub const MAX_FRAME: usize = 1518;
/// Destination, source and EtherType.
pub const MIN_FRAME: usize = 14;
/// Frames the outbox holds.
pub const OUTBOX: usize = 8;

/// Device feature bits (§5.1.3).
pub mod feature {
    pub const MAC: u64 = 1 << 5;
    pub const STATUS: u64 = 1 << 16;
}

const STATUS_LINK_UP: u16 = 1;
const NUM_BUFFERS_AT: usize = 10;

/// Why a frame was not delivered to the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxError {
    /// The device is not running (no DRIVER_OK yet, or it needs a reset).
    NotReady,
    /// The guest has no receive buffer posted; try again later or drop.
    NoBuffer,
    /// The posted buffer was too small for header and frame; the buffer
    /// went back empty and the frame is dropped.
    BufferTooSmall,
    /// Not an Ethernet frame of 14 to [`MAX_FRAME`] bytes.
    BadFrame,
}

/// The network device.
pub struct Net {
    mac: [u8; 6],
    outbox: [[u8; MAX_FRAME]; OUTBOX],
    lengths: [usize; OUTBOX],
    /// Index of the oldest frame in `outbox`.
    first: usize,
    queued: usize,
    tx_dropped: u64,
}

impl Net {
    pub const fn new(mac: [u8; 6]) -> Self {
        Net {
            mac,
            outbox: [[0; MAX_FRAME]; OUTBOX],
            lengths: [0; OUTBOX],
            first: 0,
            queued: 0,
            tx_dropped: 0,
        }
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Transmitted chains that held no valid frame (dropped, but returned).
    pub fn tx_dropped(&self) -> u64 {
        self.tx_dropped
    }

    /// Frames waiting in the outbox.
    pub fn pending_tx_frames(&self) -> usize {
        self.queued
    }

    /// Take the oldest transmitted frame into `out` (which should hold
    /// [`MAX_FRAME`] bytes; a shorter `out` gets the frame's start). Returns
    /// the bytes copied.
    pub fn pop_tx_frame(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.queued == 0 {
            return None;
        }
        let slot = self.first;
        let len = self.lengths.get(slot).copied().unwrap_or(0);
        let frame = self
            .outbox
            .get(slot)
            .and_then(|f| f.get(..len))
            .unwrap_or(&[]);
        let n = frame.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), frame.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.first = (self.first + 1) % OUTBOX;
        self.queued -= 1;
        Some(n)
    }

    /// Move transmit chains into the outbox while it has room.
    pub fn transmit(
        &mut self,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<(), DeviceError> {
        let Some(queue) = queues.get_mut(usize::from(TRANSMITQ)) else {
            return Ok(());
        };
        for _ in 0..queue.batch_limit() {
            if self.queued == OUTBOX {
                break;
            }
            let Some(chain) = queue.pop(mem)? else {
                break;
            };
            let frame_len = chain.readable_len().saturating_sub(HDR_LEN as u64);
            let slot = (self.first + self.queued) % OUTBOX;
            match (usize::try_from(frame_len), self.outbox.get_mut(slot)) {
                (Ok(len), Some(buf))
                    if chain.readable_len() >= HDR_LEN as u64
                        && (MIN_FRAME..=MAX_FRAME).contains(&len) =>
                {
                    let frame = buf.get_mut(..len).unwrap_or(&mut []);
                    chain.read_at(mem, HDR_LEN as u64, frame)?;
                    if let Some(l) = self.lengths.get_mut(slot) {
                        *l = len;
                    }
                    self.queued += 1;
                }
                _ => self.tx_dropped += 1,
            }
            // Transmit buffers are only read: the used length is 0.
            queue.add_used(mem, chain.head(), 0)?;
        }
        Ok(())
    }

    /// Put one frame into the next posted receive buffer.
    pub fn receive(
        &mut self,
        queues: &mut [Queue],
        frame: &[u8],
        mem: &mut dyn GuestMemory,
    ) -> Result<Result<(), RxError>, DeviceError> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            return Ok(Err(RxError::BadFrame));
        }
        let Some(queue) = queues.get_mut(usize::from(RECEIVEQ)) else {
            return Ok(Err(RxError::NoBuffer));
        };
        let Some(chain) = queue.pop(mem)? else {
            return Ok(Err(RxError::NoBuffer));
        };
        if chain.writable_len() < (HDR_LEN + frame.len()) as u64 {
            queue.add_used(mem, chain.head(), 0)?;
            return Ok(Err(RxError::BufferTooSmall));
        }
        // No offloads: flags, gso_type, hdr_len, gso_size, csum_* all 0.
        let mut header = [0u8; HDR_LEN];
        if let Some(n) = header.get_mut(NUM_BUFFERS_AT..) {
            n.copy_from_slice(&1u16.to_le_bytes());
        }
        chain.write_at(mem, 0, &header)?;
        chain.write_at(mem, HDR_LEN as u64, frame)?;
        queue.add_used(mem, chain.head(), (HDR_LEN + frame.len()) as u32)?;
        Ok(Ok(()))
    }

    fn config(&self) -> [u8; 8] {
        let [m0, m1, m2, m3, m4, m5] = self.mac;
        let [s0, s1] = STATUS_LINK_UP.to_le_bytes();
        [m0, m1, m2, m3, m4, m5, s0, s1]
    }
}

impl Device for Net {
    fn device_id(&self) -> u32 {
        device_id::NET
    }

    fn device_features(&self) -> u64 {
        feature::MAC | feature::STATUS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_image(&self.config(), offset, data);
    }

    fn notify(
        &mut self,
        queue: u16,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<(), DeviceError> {
        // Receive buffers wait for `deliver`.
        if queue == TRANSMITQ {
            self.transmit(queues, mem)
        } else {
            Ok(())
        }
    }

    fn reset(&mut self) {
        // Frames in the outbox were already completed to the guest; they
        // stay for the shell to forward.
    }
}

impl VirtioMmio<Net> {
    /// Deliver one frame to the guest. Check `irq_level` afterwards.
    pub fn deliver(&mut self, frame: &[u8], mem: &mut dyn GuestMemory) -> Result<(), RxError> {
        self.run(mem, |net, queues, mem| net.receive(queues, frame, mem))
            .unwrap_or(Err(RxError::NotReady))
    }

    /// Take the oldest frame the guest transmitted into `out` (which should
    /// hold [`MAX_FRAME`] bytes), then pull more from the transmit ring
    /// into the freed room. Check `irq_level` afterwards.
    pub fn pop_tx_frame(&mut self, out: &mut [u8], mem: &mut dyn GuestMemory) -> Option<usize> {
        let n = self.device_mut().pop_tx_frame(out)?;
        self.run(mem, |net, queues, mem| net.transmit(queues, mem));
        Some(n)
    }
}
