//! A minimal flattened-device-tree (FDT v17) writer into a caller-supplied
//! buffer, with no allocation.
//!
//! The one idea: the structure block grows up from the front of the buffer
//! while the (deduplicated) strings block grows down from the back, so
//! neither size has to be known in advance. A property records its name as a
//! distance from the buffer's end; `finish` moves the strings block down to
//! sit right after the structure block and rewrites those distances into
//! real offsets. Any request that does not fit returns `BufferTooSmall`;
//! nothing here panics.
//!
//! It builds the guest DTB (`guest_dt`) and, in tests, every device-tree
//! input the parsers are fed (CONVENTIONS rule 10).

use core::fmt;

/// `0xd00dfeed`, the first word of every FDT.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Structure-block token: start of a node, followed by its NUL-terminated name.
pub const FDT_BEGIN_NODE: u32 = 1;
/// Structure-block token: end of a node.
pub const FDT_END_NODE: u32 = 2;
/// Structure-block token: a property (`len`, `nameoff`, value).
pub const FDT_PROP: u32 = 3;
/// Structure-block token: no operation (left behind by in-place editors).
pub const FDT_NOP: u32 = 4;
/// Structure-block token: end of the structure block.
pub const FDT_END: u32 = 9;
/// Size of the v17 header: ten big-endian words.
pub const FDT_HEADER_SIZE: usize = 40;
/// The version this writer emits (and the oldest the readers accept).
pub const FDT_VERSION: u32 = 17;
/// v17 blobs are readable by v16 readers.
const FDT_LAST_COMP_VERSION: u32 = 16;

/// Why a tree could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtWriteError {
    /// The buffer cannot hold the tree; `capacity` is its length.
    BufferTooSmall { capacity: usize },
    /// A memory reservation was added after the first node.
    ReservationAfterNodes,
    /// A property was added outside any node, or after the node's first child
    /// (the FDT format requires properties before subnodes).
    MisplacedProperty,
    /// `end_node` without a matching `begin_node`.
    NoOpenNode,
    /// A second root node, or a child before the root.
    MisplacedNode,
    /// `finish` while nodes are still open, or before any node.
    Unbalanced,
    /// A node or property name contains NUL or `/`, or a non-root node name is
    /// empty, or a string value contains NUL.
    InvalidName,
    /// The tree would exceed the 4 GiB the 32-bit header fields can describe.
    TooLarge,
    /// The caller asked for something the tree cannot describe (used by
    /// generators built on the writer, e.g. zero vCPUs for a guest DT).
    InvalidParameter(&'static str),
}

impl fmt::Display for DtWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall { capacity } => {
                write!(f, "device tree does not fit in a {capacity}-byte buffer")
            }
            Self::ReservationAfterNodes => {
                f.write_str("memory reservations must precede the first node")
            }
            Self::MisplacedProperty => {
                f.write_str("property outside a node or after the node's first child")
            }
            Self::NoOpenNode => f.write_str("end_node without an open node"),
            Self::MisplacedNode => f.write_str("a tree has exactly one root node"),
            Self::Unbalanced => f.write_str("tree finished with nodes still open or no root"),
            Self::InvalidName => {
                f.write_str("empty name, NUL or '/' in a name, or NUL inside a string value")
            }
            Self::TooLarge => f.write_str("device tree larger than 4 GiB"),
            Self::InvalidParameter(what) => write!(f, "invalid parameter: {what}"),
        }
    }
}

/// Where the writer is in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Header reserved; memory reservations may still be added.
    Reservations,
    /// Inside the root or one of its descendants.
    Nodes,
    /// The root node has been closed.
    Closed,
}

/// Builds one FDT in a borrowed buffer. Call `begin_node("")` for the root,
/// then properties and child nodes, `end_node` for each, and `finish`.
pub struct FdtWriter<'b> {
    buf: &'b mut [u8],
    /// End of the structure data written so far (the struct block starts
    /// right after the reservation map).
    cursor: usize,
    /// Start of the strings region at the back of the buffer.
    strings_start: usize,
    /// Start of the structure block; fixed once the first node begins.
    struct_start: usize,
    depth: usize,
    /// Whether the innermost open node already has a child.
    has_child: bool,
    phase: Phase,
}

impl<'b> FdtWriter<'b> {
    /// Starts a tree in `buf`, reserving room for the header.
    pub fn new(buf: &'b mut [u8]) -> Result<Self, DtWriteError> {
        let capacity = buf.len();
        if capacity < FDT_HEADER_SIZE {
            return Err(DtWriteError::BufferTooSmall { capacity });
        }
        Ok(Self {
            buf,
            cursor: FDT_HEADER_SIZE,
            strings_start: capacity,
            struct_start: FDT_HEADER_SIZE,
            depth: 0,
            has_child: false,
            phase: Phase::Reservations,
        })
    }

    /// Adds a `/memreserve/` entry. Only allowed before the root node.
    pub fn add_reservation(&mut self, base: u64, size: u64) -> Result<(), DtWriteError> {
        if self.phase != Phase::Reservations {
            return Err(DtWriteError::ReservationAfterNodes);
        }
        self.append_u64(base)?;
        self.append_u64(size)
    }

    /// Opens a node. The first call must be the root, whose name is `""`.
    pub fn begin_node(&mut self, name: &str) -> Result<(), DtWriteError> {
        match self.phase {
            Phase::Reservations => {
                if !name.is_empty() {
                    return Err(DtWriteError::MisplacedNode);
                }
                // Terminating all-zero entry of the reservation map.
                self.append_u64(0)?;
                self.append_u64(0)?;
                self.struct_start = self.cursor;
                self.phase = Phase::Nodes;
            }
            Phase::Nodes => {
                if name.is_empty() || name.contains('/') {
                    return Err(DtWriteError::InvalidName);
                }
            }
            Phase::Closed => return Err(DtWriteError::MisplacedNode),
        }
        if name.contains('\0') {
            return Err(DtWriteError::InvalidName);
        }
        self.append_u32(FDT_BEGIN_NODE)?;
        self.append_padded(&[name.as_bytes(), &[0]])?;
        self.depth += 1;
        self.has_child = false;
        Ok(())
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) -> Result<(), DtWriteError> {
        if self.phase != Phase::Nodes || self.depth == 0 {
            return Err(DtWriteError::NoOpenNode);
        }
        self.append_u32(FDT_END_NODE)?;
        self.depth -= 1;
        // The node we return to now has (at least) this child.
        self.has_child = true;
        if self.depth == 0 {
            self.phase = Phase::Closed;
        }
        Ok(())
    }

    /// Adds a property with a raw value.
    pub fn property(&mut self, name: &str, value: &[u8]) -> Result<(), DtWriteError> {
        self.property_parts(name, &[value])
    }

    /// Adds a property with no value (a flag such as `interrupt-controller`).
    pub fn property_empty(&mut self, name: &str) -> Result<(), DtWriteError> {
        self.property_parts(name, &[])
    }

    /// Adds a one-cell property.
    pub fn property_u32(&mut self, name: &str, value: u32) -> Result<(), DtWriteError> {
        self.property_parts(name, &[&value.to_be_bytes()])
    }

    /// Adds a two-cell (64-bit) property.
    pub fn property_u64(&mut self, name: &str, value: u64) -> Result<(), DtWriteError> {
        self.property_parts(name, &[&value.to_be_bytes()])
    }

    /// Adds a property made of 32-bit cells, e.g. `interrupts`.
    pub fn property_cells(&mut self, name: &str, cells: &[u32]) -> Result<(), DtWriteError> {
        self.begin_property(name, cells.len().checked_mul(4))?;
        for cell in cells {
            self.append_u32(*cell)?;
        }
        self.pad_to_word()
    }

    /// Adds a property made of 64-bit (two-cell) values, e.g. a `reg` with
    /// `#address-cells = #size-cells = 2`.
    pub fn property_u64s(&mut self, name: &str, values: &[u64]) -> Result<(), DtWriteError> {
        self.begin_property(name, values.len().checked_mul(8))?;
        for value in values {
            self.append_u64(*value)?;
        }
        Ok(())
    }

    /// Adds a NUL-terminated string property.
    pub fn property_string(&mut self, name: &str, value: &str) -> Result<(), DtWriteError> {
        if value.contains('\0') {
            return Err(DtWriteError::InvalidName);
        }
        self.property_parts(name, &[value.as_bytes(), &[0]])
    }

    /// Adds a string-list property (`"a", "b"` → `a\0b\0`).
    pub fn property_strings(&mut self, name: &str, values: &[&str]) -> Result<(), DtWriteError> {
        let mut len = 0usize;
        for value in values {
            if value.contains('\0') {
                return Err(DtWriteError::InvalidName);
            }
            len = len
                .checked_add(value.len())
                .and_then(|l| l.checked_add(1))
                .ok_or(DtWriteError::TooLarge)?;
        }
        self.begin_property(name, Some(len))?;
        for value in values {
            self.append_bytes(value.as_bytes())?;
            self.append_bytes(&[0])?;
        }
        self.pad_to_word()
    }

    /// Completes the tree and returns its total size in bytes; the blob is
    /// `buf[..size]`.
    pub fn finish(mut self) -> Result<usize, DtWriteError> {
        if self.phase != Phase::Closed {
            return Err(DtWriteError::Unbalanced);
        }
        self.append_u32(FDT_END)?;
        let struct_end = self.cursor;
        let strings_len = self.buf.len() - self.strings_start;
        self.rewrite_name_offsets(strings_len)?;
        self.buf
            .copy_within(self.strings_start..self.buf.len(), struct_end);
        let total = struct_end + strings_len;
        let header = [
            FDT_MAGIC,
            to_u32(total)?,
            to_u32(self.struct_start)?,
            to_u32(struct_end)?,
            to_u32(FDT_HEADER_SIZE)?,
            FDT_VERSION,
            FDT_LAST_COMP_VERSION,
            0, // boot_cpuid_phys
            to_u32(strings_len)?,
            to_u32(struct_end - self.struct_start)?,
        ];
        for (i, word) in header.iter().enumerate() {
            self.write_u32_at(i * 4, *word)?;
        }
        Ok(total)
    }

    fn property_parts(&mut self, name: &str, parts: &[&[u8]]) -> Result<(), DtWriteError> {
        let len = parts
            .iter()
            .try_fold(0usize, |acc, p| acc.checked_add(p.len()));
        self.begin_property(name, len)?;
        for part in parts {
            self.append_bytes(part)?;
        }
        self.pad_to_word()
    }

    /// Writes the property header; the caller appends `len` value bytes and
    /// pads. The name offset is stored as a distance from the buffer end
    /// until `finish` knows where the strings block lands.
    fn begin_property(&mut self, name: &str, len: Option<usize>) -> Result<(), DtWriteError> {
        if self.phase != Phase::Nodes || self.has_child {
            return Err(DtWriteError::MisplacedProperty);
        }
        if name.is_empty() || name.contains('\0') || name.contains('/') {
            return Err(DtWriteError::InvalidName);
        }
        let len = to_u32(len.ok_or(DtWriteError::TooLarge)?)?;
        let distance_from_end = self.intern(name)?;
        self.append_u32(FDT_PROP)?;
        self.append_u32(len)?;
        self.append_u32(to_u32(distance_from_end)?)
    }

    /// Finds `name` in the strings region or adds it; returns its start as a
    /// distance from the end of the buffer.
    fn intern(&mut self, name: &str) -> Result<usize, DtWriteError> {
        let end = self.buf.len();
        let region = self.buf.get(self.strings_start..).unwrap_or_default();
        let mut start = self.strings_start;
        for existing in region.split(|b| *b == 0) {
            if existing == name.as_bytes() && start < end {
                return Ok(end - start);
            }
            start += existing.len() + 1;
        }
        let needed = name.len() + 1;
        let new_start = self
            .strings_start
            .checked_sub(needed)
            .filter(|s| *s >= self.cursor)
            .ok_or(self.too_small())?;
        let too_small = self.too_small();
        let slot = self
            .buf
            .get_mut(new_start..self.strings_start)
            .ok_or(too_small)?;
        let (text, nul) = slot.split_at_mut(name.len());
        text.copy_from_slice(name.as_bytes());
        nul.fill(0);
        self.strings_start = new_start;
        Ok(end - new_start)
    }

    /// Walks the structure block written so far (it is our own output, so
    /// well-formed) and turns each property's distance-from-end into an
    /// offset into a strings block of `strings_len` bytes.
    fn rewrite_name_offsets(&mut self, strings_len: usize) -> Result<(), DtWriteError> {
        let mut pos = self.struct_start;
        loop {
            match self.read_u32_at(pos)? {
                FDT_BEGIN_NODE => {
                    let name = self.buf.get(pos + 4..).ok_or(DtWriteError::Unbalanced)?;
                    let name_len = name
                        .iter()
                        .position(|b| *b == 0)
                        .ok_or(DtWriteError::Unbalanced)?;
                    pos += 4 + align4(name_len + 1);
                }
                FDT_PROP => {
                    let len = self.read_u32_at(pos + 4)? as usize;
                    let distance = self.read_u32_at(pos + 8)? as usize;
                    let offset = strings_len
                        .checked_sub(distance)
                        .ok_or(DtWriteError::Unbalanced)?;
                    self.write_u32_at(pos + 8, to_u32(offset)?)?;
                    pos += 12 + align4(len);
                }
                FDT_END_NODE | FDT_NOP => pos += 4,
                FDT_END => return Ok(()),
                _ => return Err(DtWriteError::Unbalanced),
            }
        }
    }

    fn too_small(&self) -> DtWriteError {
        DtWriteError::BufferTooSmall {
            capacity: self.buf.len(),
        }
    }

    fn append_bytes(&mut self, bytes: &[u8]) -> Result<(), DtWriteError> {
        let end = self
            .cursor
            .checked_add(bytes.len())
            .filter(|e| *e <= self.strings_start)
            .ok_or(self.too_small())?;
        let too_small = self.too_small();
        let dst = self.buf.get_mut(self.cursor..end).ok_or(too_small)?;
        dst.copy_from_slice(bytes);
        self.cursor = end;
        Ok(())
    }

    fn append_padded(&mut self, parts: &[&[u8]]) -> Result<(), DtWriteError> {
        for part in parts {
            self.append_bytes(part)?;
        }
        self.pad_to_word()
    }

    fn pad_to_word(&mut self) -> Result<(), DtWriteError> {
        let pad = align4(self.cursor) - self.cursor;
        self.append_bytes(&[0; 3][..pad])
    }

    fn append_u32(&mut self, value: u32) -> Result<(), DtWriteError> {
        self.append_bytes(&value.to_be_bytes())
    }

    fn append_u64(&mut self, value: u64) -> Result<(), DtWriteError> {
        self.append_bytes(&value.to_be_bytes())
    }

    fn read_u32_at(&self, pos: usize) -> Result<u32, DtWriteError> {
        let bytes = self
            .buf
            .get(pos..pos.saturating_add(4))
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or(DtWriteError::Unbalanced)?;
        Ok(u32::from_be_bytes(bytes))
    }

    fn write_u32_at(&mut self, pos: usize, value: u32) -> Result<(), DtWriteError> {
        let too_small = self.too_small();
        self.buf
            .get_mut(pos..pos.saturating_add(4))
            .ok_or(too_small)?
            .copy_from_slice(&value.to_be_bytes());
        Ok(())
    }
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn to_u32(n: usize) -> Result<u32, DtWriteError> {
    u32::try_from(n).map_err(|_| DtWriteError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(buf: &mut [u8]) -> Result<usize, DtWriteError> {
        let mut w = FdtWriter::new(buf)?;
        w.add_reservation(0x4800_0000, 0x1000)?;
        w.begin_node("")?;
        w.property_u32("#address-cells", 2)?;
        w.property_u32("#size-cells", 2)?;
        w.property_strings("compatible", &["linux,dummy-virt", "tessera,test"])?;
        w.begin_node("memory@40000000")?;
        w.property_string("device_type", "memory")?;
        w.property_u64s("reg", &[0x4000_0000, 0x1000_0000])?;
        w.end_node()?;
        w.begin_node("chosen")?;
        w.property_string("bootargs", "console=ttyAMA0")?;
        w.property_u64("linux,initrd-start", 0x4800_0000)?;
        w.property_cells("cells", &[1, 2, 3])?;
        w.property_empty("flag")?;
        w.property("raw", &[0xaa, 0xbb, 0xcc])?;
        w.property_string("compatible", "dup")?;
        w.end_node()?;
        w.end_node()?;
        w.finish()
    }

    #[test]
    fn round_trips_through_the_fdt_crate() {
        let mut buf = [0u8; 1024];
        let size = sample(&mut buf).unwrap();
        let fdt = fdt::Fdt::new(&buf[..size]).unwrap();
        assert_eq!(fdt.total_size(), size);
        let root = fdt.find_node("/").unwrap();
        let compat: Vec<_> = root.compatible().unwrap().all().collect();
        assert_eq!(compat, ["linux,dummy-virt", "tessera,test"]);
        let mem = fdt.find_node("/memory@40000000").unwrap();
        let reg = mem.reg().unwrap().next().unwrap();
        assert_eq!(reg.starting_address as usize, 0x4000_0000);
        assert_eq!(reg.size, Some(0x1000_0000));
        let chosen = fdt.find_node("/chosen").unwrap();
        assert_eq!(
            chosen.property("bootargs").unwrap().as_str(),
            Some("console=ttyAMA0")
        );
        assert_eq!(
            chosen.property("linux,initrd-start").unwrap().as_usize(),
            Some(0x4800_0000)
        );
        assert_eq!(
            chosen.property("cells").unwrap().value,
            &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        assert!(chosen.property("flag").unwrap().value.is_empty());
        assert_eq!(chosen.property("raw").unwrap().value, &[0xaa, 0xbb, 0xcc]);
        assert_eq!(chosen.property("compatible").unwrap().as_str(), Some("dup"));
        let rsv: Vec<_> = fdt
            .memory_reservations()
            .map(|r| (r.address() as usize, r.size()))
            .collect();
        assert_eq!(rsv, [(0x4800_0000, 0x1000)]);
    }

    #[test]
    fn property_names_are_deduplicated() {
        let mut buf = [0u8; 1024];
        let size = sample(&mut buf).unwrap();
        let fdt = fdt::Fdt::new(&buf[..size]).unwrap();
        let compat = fdt.strings().filter(|s| *s == "compatible").count();
        assert_eq!(compat, 1);
    }

    #[test]
    fn header_describes_the_blocks() {
        let mut buf = [0u8; 1024];
        let size = sample(&mut buf).unwrap();
        let word = |i: usize| u32::from_be_bytes(buf[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(word(0), FDT_MAGIC);
        assert_eq!(word(1) as usize, size);
        assert_eq!(word(4) as usize, FDT_HEADER_SIZE);
        assert_eq!(word(5), 17);
        assert_eq!(word(2) % 4, 0, "structure block is word aligned");
        assert_eq!(word(2) as usize + word(9) as usize, word(3) as usize);
        assert_eq!(word(3) as usize + word(8) as usize, size);
    }

    #[test]
    fn every_short_buffer_is_an_error_not_a_panic() {
        let mut big = [0u8; 1024];
        let size = sample(&mut big).unwrap();
        for len in 0..size {
            let mut buf = vec![0u8; len];
            assert_eq!(
                sample(&mut buf),
                Err(DtWriteError::BufferTooSmall { capacity: len }),
                "len {len}"
            );
        }
        let mut exact = vec![0u8; size];
        assert_eq!(sample(&mut exact), Ok(size));
        assert_eq!(&exact[..], &big[..size]);
    }

    #[test]
    fn misuse_is_reported() {
        let mut buf = [0u8; 256];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        assert_eq!(w.property_u32("x", 1), Err(DtWriteError::MisplacedProperty));
        assert_eq!(w.end_node(), Err(DtWriteError::NoOpenNode));
        assert_eq!(w.begin_node("notroot"), Err(DtWriteError::MisplacedNode));
        w.begin_node("").unwrap();
        assert_eq!(
            w.add_reservation(0, 1),
            Err(DtWriteError::ReservationAfterNodes)
        );
        assert_eq!(w.begin_node(""), Err(DtWriteError::InvalidName));
        assert_eq!(w.begin_node("a/b"), Err(DtWriteError::InvalidName));
        assert_eq!(w.property_u32("", 1), Err(DtWriteError::InvalidName));
        assert_eq!(
            w.property_string("s", "a\0b"),
            Err(DtWriteError::InvalidName)
        );
        w.begin_node("child").unwrap();
        w.end_node().unwrap();
        assert_eq!(
            w.property_u32("late", 1),
            Err(DtWriteError::MisplacedProperty)
        );
        w.end_node().unwrap();
        assert_eq!(
            w.begin_node("second-root"),
            Err(DtWriteError::MisplacedNode)
        );
        assert!(w.finish().is_ok());

        let mut buf = [0u8; 256];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        assert_eq!(w.finish(), Err(DtWriteError::Unbalanced));
    }
}
