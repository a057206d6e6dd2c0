//! virtio-blk (virtio 1.2 §5.2): one request queue over a
//! [`BlockBackend`]; requests IN, OUT, FLUSH and GET_ID, anything else
//! VIRTIO_BLK_S_UNSUPP.
//!
//! The one idea: a request is positions in a chain, not descriptors. The
//! 16-byte header is the first 16 device-readable bytes, OUT data the
//! readable bytes after it, the status the last device-writable byte and
//! IN data the writable bytes before it, however the driver split them
//! (§2.7.4.1: no assumptions about framing). Driver mistakes a status can
//! describe (a range beyond capacity, a length that is not whole sectors)
//! get VIRTIO_BLK_S_IOERR; a request with no header or no status byte
//! cannot be answered at all and is a [`DeviceError`]. Data moves through
//! a one-sector bounce buffer, so nothing is allocated.

use super::queue::{Chain, Queue, MAX_CHAIN};
use super::{device_id, read_config_image, Device, DeviceError};
use crate::guest_mem::GuestMemory;

pub const REQUESTQ: u16 = 0;
/// Entries in the request queue offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// The protocol's unit (§5.2.4: capacity is in 512-byte sectors).
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID string (§5.2.6).
pub const ID_BYTES: usize = 20;
const HEADER_LEN: u64 = 16;

/// Device feature bits (§5.2.3).
pub mod feature {
    pub const SEG_MAX: u64 = 1 << 2;
    pub const BLK_SIZE: u64 = 1 << 6;
    pub const FLUSH: u64 = 1 << 9;
}

/// Request types (§5.2.6).
pub mod request {
    pub const IN: u32 = 0;
    pub const OUT: u32 = 1;
    pub const FLUSH: u32 = 4;
    pub const GET_ID: u32 = 8;
}

/// Request status values (§5.2.6).
pub mod status {
    pub const OK: u8 = 0;
    pub const IOERR: u8 = 1;
    pub const UNSUPP: u8 = 2;
}

/// The backend failed a read, write or flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendError;

/// Storage addressed in bytes.
pub trait BlockBackend {
    /// Size in bytes; the device offers the whole sectors of it.
    fn size_bytes(&self) -> u64;
    /// Fill `buf` from `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError>;
    /// Store `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError>;
    /// Make earlier writes durable.
    fn flush(&mut self) -> Result<(), BackendError>;
}

/// A disk held in memory (a RAM disk, or a module the shell was given).
pub struct MemDisk<'a> {
    bytes: &'a mut [u8],
}

impl<'a> MemDisk<'a> {
    pub fn new(bytes: &'a mut [u8]) -> Self {
        MemDisk { bytes }
    }

    pub fn bytes(&self) -> &[u8] {
        self.bytes
    }

    fn range(&self, offset: u64, len: usize) -> Result<core::ops::Range<usize>, BackendError> {
        let start = usize::try_from(offset).map_err(|_| BackendError)?;
        let end = start.checked_add(len).ok_or(BackendError)?;
        if end > self.bytes.len() {
            return Err(BackendError);
        }
        Ok(start..end)
    }
}

impl BlockBackend for MemDisk<'_> {
    fn size_bytes(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(self.bytes.get(r).ok_or(BackendError)?);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        let r = self.range(offset, data.len())?;
        self.bytes
            .get_mut(r)
            .ok_or(BackendError)?
            .copy_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The block device.
pub struct Blk<B: BlockBackend> {
    backend: B,
    id: [u8; ID_BYTES],
}

impl<B: BlockBackend> Blk<B> {
    /// `id` is the GET_ID string (NUL-padded; longer ids are cut at 20).
    pub fn new(backend: B, id: &[u8]) -> Self {
        let mut padded = [0u8; ID_BYTES];
        for (d, s) in padded.iter_mut().zip(id) {
            *d = *s;
        }
        Blk {
            backend,
            id: padded,
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Capacity in sectors.
    pub fn capacity(&self) -> u64 {
        self.backend.size_bytes() / SECTOR_SIZE
    }

    /// Whether `len` bytes from `sector` are inside the disk.
    fn in_capacity(&self, sector: u64, len: u64) -> bool {
        sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|start| start.checked_add(len))
            .is_some_and(|end| end <= self.capacity() * SECTOR_SIZE)
    }

    /// Serve one request; returns the used length (bytes written).
    fn handle(&mut self, chain: &Chain, mem: &mut dyn GuestMemory) -> Result<u32, DeviceError> {
        if chain.readable_len() < HEADER_LEN {
            return Err(DeviceError::ShortHeader);
        }
        let Some(status_at) = chain.writable_len().checked_sub(1) else {
            return Err(DeviceError::NoStatusByte);
        };
        let mut header = [0u8; HEADER_LEN as usize];
        chain.read_at(mem, 0, &mut header)?;
        let [t0, t1, t2, t3, _, _, _, _, s0, s1, s2, s3, s4, s5, s6, s7] = header;
        let kind = u32::from_le_bytes([t0, t1, t2, t3]);
        let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
        let (status, written) = match kind {
            request::IN => self.read_request(chain, mem, sector, status_at)?,
            request::OUT => {
                let len = chain.readable_len() - HEADER_LEN;
                (self.write_request(chain, mem, sector, len)?, 0)
            }
            request::FLUSH => match self.backend.flush() {
                Ok(()) => (status::OK, 0),
                Err(BackendError) => (status::IOERR, 0),
            },
            request::GET_ID => {
                let room = usize::try_from(status_at).unwrap_or(usize::MAX);
                let id = self.id.get(..room.min(ID_BYTES)).unwrap_or(&[]);
                (status::OK, chain.write_at(mem, 0, id)? as u64)
            }
            _ => (status::UNSUPP, 0),
        };
        chain.write_at(mem, status_at, &[status])?;
        // `written` is at most the writable length, below 2^32.
        Ok(written as u32 + 1)
    }

    /// VIRTIO_BLK_T_IN: the writable bytes before the status byte.
    fn read_request(
        &mut self,
        chain: &Chain,
        mem: &mut dyn GuestMemory,
        sector: u64,
        len: u64,
    ) -> Result<(u8, u64), DeviceError> {
        if !len.is_multiple_of(SECTOR_SIZE) || !self.in_capacity(sector, len) {
            return Ok((status::IOERR, 0));
        }
        let start = sector * SECTOR_SIZE;
        let mut done = 0u64;
        while done < len {
            let mut bounce = [0u8; SECTOR_SIZE as usize];
            if self.backend.read_at(start + done, &mut bounce).is_err() {
                return Ok((status::IOERR, done));
            }
            chain.write_at(mem, done, &bounce)?;
            done += SECTOR_SIZE;
        }
        Ok((status::OK, len))
    }

    /// VIRTIO_BLK_T_OUT: the readable bytes after the header.
    fn write_request(
        &mut self,
        chain: &Chain,
        mem: &mut dyn GuestMemory,
        sector: u64,
        len: u64,
    ) -> Result<u8, DeviceError> {
        if !len.is_multiple_of(SECTOR_SIZE) || !self.in_capacity(sector, len) {
            return Ok(status::IOERR);
        }
        let start = sector * SECTOR_SIZE;
        let mut done = 0u64;
        while done < len {
            let mut bounce = [0u8; SECTOR_SIZE as usize];
            chain.read_at(mem, HEADER_LEN + done, &mut bounce)?;
            if self.backend.write_at(start + done, &bounce).is_err() {
                return Ok(status::IOERR);
            }
            done += SECTOR_SIZE;
        }
        Ok(status::OK)
    }

    fn serve(&mut self, queue: &mut Queue, mem: &mut dyn GuestMemory) -> Result<(), DeviceError> {
        for _ in 0..queue.batch_limit() {
            let Some(chain) = queue.pop(mem)? else {
                break;
            };
            let used = self.handle(&chain, mem)?;
            queue.add_used(mem, chain.head(), used)?;
        }
        Ok(())
    }

    fn config(&self) -> [u8; 0x3c] {
        let mut c = [0u8; 0x3c];
        let fields: [(usize, &[u8]); 3] = [
            (0x00, &self.capacity().to_le_bytes()),
            // seg_max: data segments per request, leaving header and status.
            (0x0c, &(MAX_CHAIN as u32 - 2).to_le_bytes()),
            (0x14, &(SECTOR_SIZE as u32).to_le_bytes()),
        ];
        for (at, bytes) in fields {
            if let Some(dst) = c.get_mut(at..at + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        c
    }
}

impl<B: BlockBackend> Device for Blk<B> {
    fn device_id(&self) -> u32 {
        device_id::BLOCK
    }

    fn device_features(&self) -> u64 {
        // §5.2.5.2: devices SHOULD offer FLUSH.
        feature::SEG_MAX | feature::BLK_SIZE | feature::FLUSH
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
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
        match queues.get_mut(usize::from(queue)) {
            Some(q) if queue == REQUESTQ => self.serve(q, mem),
            _ => Ok(()),
        }
    }

    fn reset(&mut self) {}
}
