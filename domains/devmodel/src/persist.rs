//! The device model's persistent state region: what a new generation of
//! the device model needs to take over its predecessor's devices, kept in
//! memory that outlives it (a shared-memory region its builder owns and
//! lends again to each generation, in the manner of vhost-user's inflight
//! region).
//!
//! The one idea: the region is untrusted input. A previous generation may
//! have died half-way through writing it, or have been buggy, so every
//! record is written twice (two copies, alternating, each with a sequence
//! number and a checksum), and [`decode_record`] checks every field it
//! returns; what it accepts is then checked again against the device and
//! the guest's memory by the `restore` methods of the transport
//! ([`VirtioMmio::restore`](crate::virtio::mmio::VirtioMmio::restore)), the
//! queue and the UART. A corrupt region is an error, never a panic.
//!
//! What is kept is only what a guest *configured*: the virtio-mmio
//! registers (status, features, queue sizes, addresses and readiness,
//! interrupt status) and the PL011's registers and receive FIFO. Ring
//! positions are not kept: the used ring's `idx`, in the guest's memory,
//! says how many requests were completed, and every request after it is
//! served again (virtio-blk reads and writes are idempotent; virtio-rng
//! just fills the buffer again).
//!
//! Layout (all integers little-endian, each field after the previous one):
//! - at 0, the header: magic `TSRDMST1`, version, the number of starts,
//!   the bytes of disk kept in the region, a checksum;
//! - at [`RECORDS_OFFSET`], [`MAX_RECORDS`] pairs of [`RECORD_SIZE`]-byte
//!   records, one pair per served domain in the order the device model
//!   serves them;
//! - at [`DISK_OFFSET`], the virtio-blk disks, if the region has room.
#![forbid(unsafe_code)]

use crate::virtio::mmio::MAX_QUEUES;
use core::fmt;

/// `xen,shm-id` of the region in the device model's system-description
/// node.
pub const REGION_ID: &str = "devmodel-state";
/// The header's first bytes.
pub const MAGIC: [u8; 8] = *b"TSRDMST1";
/// The layout version this code writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of one record copy.
pub const RECORD_SIZE: usize = 1024;
/// Served domains with a record (the device model's own limit).
pub const MAX_RECORDS: usize = 8;
/// Where the records start.
pub const RECORDS_OFFSET: usize = 4096;
/// Where the disks start: past every record, page aligned.
pub const DISK_OFFSET: usize = 64 * 1024;
/// virtio-mmio slots one record keeps.
pub const MAX_SLOTS: usize = 8;
/// PL011 receive FIFO bytes one record keeps.
pub const RX_BYTES: usize = 32;

const _: () = assert!(RECORDS_OFFSET + 2 * MAX_RECORDS * RECORD_SIZE <= DISK_OFFSET);
const HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 8;

/// Why the region (or part of it) cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistError {
    /// The region is smaller than the header and records need.
    RegionTooSmall(usize),
    /// The header is neither blank nor ours.
    BadMagic,
    /// Written by another layout version.
    Version(u32),
    /// A header or record checksum does not match its bytes.
    Checksum,
    /// A record field is out of range; names the field.
    Field(&'static str),
    /// A record is for another domain than the one served in its place.
    WrongDomain { want: u16, found: u16 },
    /// The record's devices are not the ones served now.
    DevicesDiffer,
    /// A restored device refused the state; names what.
    Refused(&'static str),
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::RegionTooSmall(n) => {
                write!(f, "region of {n} bytes is below the {DISK_OFFSET} needed")
            }
            PersistError::BadMagic => f.write_str("not a device-model state region"),
            PersistError::Version(v) => write!(f, "layout version {v}, not {VERSION}"),
            PersistError::Checksum => f.write_str("checksum mismatch"),
            PersistError::Field(what) => write!(f, "{what} out of range"),
            PersistError::WrongDomain { want, found } => {
                write!(f, "record is for d{found}, not d{want}")
            }
            PersistError::DevicesDiffer => f.write_str("devices differ from the record's"),
            PersistError::Refused(what) => write!(f, "{what} refused the saved state"),
        }
    }
}

/// The header of a region that holds state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// How many generations of the device model started on this region
    /// before (0: the region was blank).
    pub starts: u32,
    /// Bytes of virtio-blk disk at [`DISK_OFFSET`] that hold the disks'
    /// contents (0: none kept yet).
    pub disk_bytes: u64,
}

/// One virtqueue's configuration, as the driver set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

/// One virtio-mmio transport's registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportState {
    pub device_id: u32,
    pub status: u8,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub driver_features_beyond_64: bool,
    pub negotiated: u64,
    pub queue_sel: u32,
    pub interrupt_status: u32,
    pub queues: [QueueState; MAX_QUEUES],
}

/// The PL011's registers and receive FIFO.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pl011State {
    pub ilpr: u32,
    pub ibrd: u32,
    pub fbrd: u32,
    pub lcr_h: u32,
    pub cr: u32,
    pub ifls: u32,
    pub imsc: u32,
    pub dmacr: u32,
    pub ris: u32,
    pub rx: heapless::Vec<u8, RX_BYTES>,
}

/// Everything kept of one served domain's devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainState {
    pub domid: u16,
    pub pl011: Option<Pl011State>,
    /// By virtio slot; `None` for a slot with no device.
    pub virtio: heapless::Vec<Option<TransportState>, MAX_SLOTS>,
}

/// FNV-1a, 64 bits: enough to tell a torn or scribbled record.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Writes fields one after another; running out of room is an error.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), PersistError> {
        let end = self
            .at
            .checked_add(b.len())
            .ok_or(PersistError::Field("record size"))?;
        self.out
            .get_mut(self.at..end)
            .ok_or(PersistError::Field("record size"))?
            .copy_from_slice(b);
        self.at = end;
        Ok(())
    }
    fn u8(&mut self, v: u8) -> Result<(), PersistError> {
        self.bytes(&[v])
    }
    fn u16(&mut self, v: u16) -> Result<(), PersistError> {
        self.bytes(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> Result<(), PersistError> {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<(), PersistError> {
        self.bytes(&v.to_le_bytes())
    }
}

/// Reads fields one after another; running out of bytes is an error.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PersistError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(PersistError::Field("record size"))?;
        let b = self
            .bytes
            .get(self.at..end)
            .ok_or(PersistError::Field("record size"))?;
        self.at = end;
        Ok(b)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], PersistError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, PersistError> {
        Ok(u8::from_le_bytes(self.array()?))
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, PersistError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(PersistError::Field(what)),
        }
    }
    fn u16(&mut self) -> Result<u16, PersistError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, PersistError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, PersistError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

/// The region's header: `None` when the region is blank (all zero, as its
/// builder hands it out at boot), the header when it is ours and intact.
pub fn decode_header(region: &[u8]) -> Result<Option<Header>, PersistError> {
    if region.len() < DISK_OFFSET {
        return Err(PersistError::RegionTooSmall(region.len()));
    }
    let head = region
        .get(..HEADER_BYTES)
        .ok_or(PersistError::RegionTooSmall(region.len()))?;
    if head.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let mut r = Reader { bytes: head, at: 0 };
    if r.array::<8>()? != MAGIC {
        return Err(PersistError::BadMagic);
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(PersistError::Version(version));
    }
    let starts = r.u32()?;
    let disk_bytes = r.u64()?;
    let sum = r.u64()?;
    if sum != checksum(head.get(..HEADER_BYTES - 8).unwrap_or_default()) {
        return Err(PersistError::Checksum);
    }
    let room = (region.len() - DISK_OFFSET) as u64;
    if disk_bytes > room {
        return Err(PersistError::Field("disk bytes"));
    }
    Ok(Some(Header { starts, disk_bytes }))
}

/// Writes `header` at the start of `region`.
pub fn encode_header(header: &Header, region: &mut [u8]) -> Result<(), PersistError> {
    if region.len() < DISK_OFFSET {
        return Err(PersistError::RegionTooSmall(region.len()));
    }
    let out = region
        .get_mut(..HEADER_BYTES)
        .ok_or(PersistError::RegionTooSmall(0))?;
    let mut w = Writer { out, at: 0 };
    w.bytes(&MAGIC)?;
    w.u32(VERSION)?;
    w.u32(header.starts)?;
    w.u64(header.disk_bytes)?;
    let sum = checksum(w.out.get(..HEADER_BYTES - 8).unwrap_or_default());
    w.u64(sum)
}

/// The byte range of copy `copy` (0 or 1) of record `k`.
pub fn record_range(k: usize, copy: usize) -> Option<core::ops::Range<usize>> {
    if k >= MAX_RECORDS || copy > 1 {
        return None;
    }
    let start = RECORDS_OFFSET + (2 * k + copy) * RECORD_SIZE;
    Some(start..start + RECORD_SIZE)
}

fn write_queue(w: &mut Writer<'_>, q: &QueueState) -> Result<(), PersistError> {
    w.u16(q.size)?;
    w.u8(u8::from(q.ready))?;
    w.u64(q.desc_table)?;
    w.u64(q.avail_ring)?;
    w.u64(q.used_ring)
}

fn read_queue(r: &mut Reader<'_>) -> Result<QueueState, PersistError> {
    Ok(QueueState {
        size: r.u16()?,
        ready: r.bool("queue ready")?,
        desc_table: r.u64()?,
        avail_ring: r.u64()?,
        used_ring: r.u64()?,
    })
}

fn write_transport(w: &mut Writer<'_>, t: &TransportState) -> Result<(), PersistError> {
    w.u32(t.device_id)?;
    w.u8(t.status)?;
    w.u32(t.device_features_sel)?;
    w.u32(t.driver_features_sel)?;
    w.u64(t.driver_features)?;
    w.u8(u8::from(t.driver_features_beyond_64))?;
    w.u64(t.negotiated)?;
    w.u32(t.queue_sel)?;
    w.u32(t.interrupt_status)?;
    for q in &t.queues {
        write_queue(w, q)?;
    }
    Ok(())
}

fn read_transport(r: &mut Reader<'_>) -> Result<TransportState, PersistError> {
    let mut t = TransportState {
        device_id: r.u32()?,
        status: r.u8()?,
        device_features_sel: r.u32()?,
        driver_features_sel: r.u32()?,
        driver_features: r.u64()?,
        driver_features_beyond_64: r.bool("driver features beyond 64")?,
        negotiated: r.u64()?,
        queue_sel: r.u32()?,
        interrupt_status: r.u32()?,
        queues: [QueueState::default(); MAX_QUEUES],
    };
    for q in t.queues.iter_mut() {
        *q = read_queue(r)?;
    }
    Ok(t)
}

/// Writes `state` as a record with sequence number `seq` (at least 1) into
/// `out` (one [`RECORD_SIZE`] copy).
pub fn encode_record(state: &DomainState, seq: u64, out: &mut [u8]) -> Result<(), PersistError> {
    if seq == 0 {
        return Err(PersistError::Field("sequence"));
    }
    let out = out
        .get_mut(..RECORD_SIZE)
        .ok_or(PersistError::Field("record size"))?;
    out.fill(0);
    let mut w = Writer { out, at: 16 };
    w.u16(state.domid)?;
    w.u8(u8::from(state.pl011.is_some()))?;
    w.u8(state.virtio.len() as u8)?;
    let uart = state.pl011.clone().unwrap_or_default();
    for v in [
        uart.ilpr, uart.ibrd, uart.fbrd, uart.lcr_h, uart.cr, uart.ifls, uart.imsc, uart.dmacr,
        uart.ris,
    ] {
        w.u32(v)?;
    }
    w.u8(uart.rx.len() as u8)?;
    let mut rx = [0u8; RX_BYTES];
    for (d, s) in rx.iter_mut().zip(uart.rx.iter()) {
        *d = *s;
    }
    w.bytes(&rx)?;
    for slot in 0..MAX_SLOTS {
        match state.virtio.get(slot).copied().flatten() {
            Some(t) => {
                w.u8(1)?;
                write_transport(&mut w, &t)?;
            }
            None => {
                w.u8(0)?;
                write_transport(&mut w, &TransportState::default())?;
            }
        }
    }
    let sum = checksum(w.out.get(16..).unwrap_or_default());
    let mut head = Writer { out: w.out, at: 0 };
    head.u64(seq)?;
    head.u64(sum)
}

/// Reads one record copy: `None` for a copy never written (all zero),
/// else its sequence number and state, every field checked for range
/// (device-specific checks come on restore).
pub fn decode_record(bytes: &[u8]) -> Result<Option<(u64, DomainState)>, PersistError> {
    let bytes = bytes
        .get(..RECORD_SIZE)
        .ok_or(PersistError::Field("record size"))?;
    if bytes.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let mut r = Reader { bytes, at: 0 };
    let seq = r.u64()?;
    let sum = r.u64()?;
    if seq == 0 {
        return Err(PersistError::Field("sequence"));
    }
    if sum != checksum(bytes.get(16..).unwrap_or_default()) {
        return Err(PersistError::Checksum);
    }
    let domid = r.u16()?;
    let has_pl011 = r.bool("pl011 present")?;
    let slots = usize::from(r.u8()?);
    if slots > MAX_SLOTS {
        return Err(PersistError::Field("virtio slots"));
    }
    let mut uart = Pl011State {
        ilpr: r.u32()?,
        ibrd: r.u32()?,
        fbrd: r.u32()?,
        lcr_h: r.u32()?,
        cr: r.u32()?,
        ifls: r.u32()?,
        imsc: r.u32()?,
        dmacr: r.u32()?,
        ris: r.u32()?,
        rx: heapless::Vec::new(),
    };
    let rx_len = usize::from(r.u8()?);
    let rx = r.take(RX_BYTES)?;
    let rx = rx.get(..rx_len).ok_or(PersistError::Field("rx length"))?;
    uart.rx = heapless::Vec::from_slice(rx).map_err(|_| PersistError::Field("rx length"))?;
    let mut virtio = heapless::Vec::new();
    for slot in 0..MAX_SLOTS {
        let present = r.bool("slot present")?;
        let t = read_transport(&mut r)?;
        if slot < slots {
            virtio
                .push(present.then_some(t))
                .map_err(|_| PersistError::Field("virtio slots"))?;
        } else if present {
            return Err(PersistError::Field("slot past the count"));
        }
    }
    Ok(Some((
        seq,
        DomainState {
            domid,
            pl011: has_pl011.then_some(uart),
            virtio,
        },
    )))
}

/// The newer intact copy of a record pair: its copy index, sequence number
/// and state; `None` if neither was written. A copy that fails to decode
/// is passed over if the other is intact (it is the one a crash tore);
/// if both fail, the error of the newer-looking one is returned.
pub fn latest(a: &[u8], b: &[u8]) -> Result<Option<(usize, u64, DomainState)>, PersistError> {
    let ra = decode_record(a);
    let rb = decode_record(b);
    match (ra, rb) {
        (Ok(Some((sa, da))), Ok(Some((sb, db)))) => {
            Ok(Some(if sb > sa { (1, sb, db) } else { (0, sa, da) }))
        }
        (Ok(Some((s, d))), _) => Ok(Some((0, s, d))),
        (_, Ok(Some((s, d)))) => Ok(Some((1, s, d))),
        (Ok(None), Ok(None)) => Ok(None),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests;
