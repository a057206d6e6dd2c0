//! virtio devices offered over the virtio-mmio version 2 transport: the
//! transport ([`mmio`]), the split virtqueue it drives ([`queue`]), the
//! devices behind it ([`console`], [`rng`], [`blk`], [`net`]) and the L2
//! [`switch`] joining net devices.
//!
//! The one idea: the transport owns a [`Device`] and its queues, and every
//! guest-controlled number (register values, ring indexes, descriptor
//! addresses and lengths) is checked before it is used. A device either
//! completes a request correctly or returns a [`DeviceError`], which the
//! transport turns into DEVICE_NEEDS_RESET plus a configuration-change
//! interrupt (virtio 1.2 §2.1.2) — never a panic, and never an access
//! outside guest RAM, since RAM is only reached through
//! [`GuestMemory`](crate::guest_mem::GuestMemory).
//!
//! References: virtio 1.2 (§2 "Basic Facilities", §2.7 "Split Virtqueues",
//! §4.2 "Virtio Over MMIO", §5 device types) and Linux 6.1's
//! `drivers/virtio/virtio_mmio.c`, whose behaviour the tests model.
#![forbid(unsafe_code)]

pub mod blk;
pub mod console;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
pub mod switch;

#[cfg(test)]
pub(crate) mod driver_model;
#[cfg(test)]
mod tests;

use crate::guest_mem::GuestMemory;
use queue::{Queue, QueueError};

/// Feature bits shared by every device (virtio 1.2 §6 "Reserved Feature
/// Bits"). Device-type bits are 0..=23 and live with their device.
pub mod feature {
    /// The driver may use indirect descriptor tables (§2.7.5.3).
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event`/`avail_event` notification suppression (§2.7.7, §2.7.10).
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// The modern (non-legacy) interface; mandatory for virtio-mmio v2.
    pub const VERSION_1: u64 = 1 << 32;
    /// The bits a device may define itself (§6: "0 to 23").
    pub const DEVICE_SPECIFIC: u64 = (1 << 24) - 1;
}

/// Device IDs (virtio 1.2 §5).
pub mod device_id {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const CONSOLE: u32 = 3;
    pub const ENTROPY: u32 = 4;
}

/// Why a device gave up on a request: the transport answers every one of
/// these with DEVICE_NEEDS_RESET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The ring or a descriptor chain was malformed.
    Queue(QueueError),
    /// A request's device-readable part is shorter than its header.
    ShortHeader,
    /// A request has no device-writable byte to put its status in.
    NoStatusByte,
}

impl From<QueueError> for DeviceError {
    fn from(e: QueueError) -> Self {
        DeviceError::Queue(e)
    }
}

/// A virtio device type as the transport sees it. The transport owns the
/// queues and hands them to the device on each notification, so a device is
/// plain data plus request handling.
pub trait Device {
    /// The virtio device ID (§5).
    fn device_id(&self) -> u32;
    /// Device-type feature bits offered (bits 0..=23; others are masked off;
    /// the transport adds VERSION_1 and the ring features).
    fn device_features(&self) -> u64;
    /// The maximum size of each queue; the slice length is the number of
    /// queues (at most [`mmio::MAX_QUEUES`]).
    fn queue_max_sizes(&self) -> &[u16];
    /// Fill `data` from the device configuration space at `offset`; bytes
    /// past the end of the space read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver write to the configuration space. Every device here has a
    /// read-only configuration, so the default ignores it.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver made buffers available on `queue` (an index below
    /// `queue_max_sizes().len()`; the transport only calls this for a ready
    /// queue after DRIVER_OK).
    fn notify(
        &mut self,
        queue: u16,
        queues: &mut [Queue],
        mem: &mut dyn GuestMemory,
    ) -> Result<(), DeviceError>;
    /// A device reset (status written to 0).
    fn reset(&mut self);
}

/// Copy `data.len()` bytes of a configuration image starting at `offset`,
/// reading zero past its end (and for offsets that overflow).
pub(crate) fn read_config_image(image: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = offset
            .checked_add(i as u64)
            .and_then(|o| usize::try_from(o).ok())
            .and_then(|o| image.get(o))
            .copied()
            .unwrap_or(0);
    }
}
