//! Checked reading of untrusted device-tree blobs, shared by the
//! system-description parser (`config`) and the kernel's host-DT parser
//! (`tessera_kernel::hostdt`).
//!
//! The one idea: `open` first walks the whole blob once and proves the
//! grammar (header bounds, token grammar, string termination and UTF-8,
//! properties before subnodes, bounded depth, 4-byte `#*-cells`); after
//! that a [`Node`] is just an offset into the structure block, and reading
//! walks the tokens in place, comparing property names as bytes. Every read
//! still goes through `get`, so even a blob that changed after the check
//! (it cannot: it is borrowed) would give `None`, never a panic.
//!
//! Why not the `fdt` crate (0.1.5), which this replaced: it trusts its
//! input (indexes, `unwrap`s, unbounded alias chains, mis-walked
//! `FDT_NOP`), and it re-parses and UTF-8-checks every property name on
//! every look, which made the kernel's two boot-time parses cost about
//! 0.8 M instructions (docs/02, "Boot cost").

use core::fmt;

use crate::fdt_writer::{
    FDT_BEGIN_NODE, FDT_END, FDT_END_NODE, FDT_HEADER_SIZE, FDT_MAGIC, FDT_NOP, FDT_PROP,
    FDT_VERSION,
};

/// Deepest node nesting accepted (the root is depth 1). `fdt` keeps a
/// 64-entry parent stack; real trees stay under ten.
pub const MAX_DEPTH: usize = 16;

/// A blob `open` checked: its structure and strings blocks and its
/// memory-reservation map.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
    /// From the reservation map's first entry to the end of the blob.
    reservations: &'a [u8],
}

/// A node of a checked blob: where its body (first token after its name)
/// starts in the structure block.
#[derive(Clone, Copy, Debug)]
pub struct Node<'b, 'a> {
    fdt: &'b Fdt<'a>,
    /// The name's bytes (checked UTF-8 by `open`), without the NUL.
    name: &'a [u8],
    body: usize,
}

/// A property of a node: its name (as the strings block holds it, without
/// the NUL) and its value.
#[derive(Clone, Copy, Debug)]
pub struct Property<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Fdt<'a> {
    fn token(&self, at: usize) -> Option<u32> {
        be32(self.structs, at)
    }

    /// The node whose `FDT_BEGIN_NODE` token is at `at`.
    fn node_at<'b>(&'b self, at: usize) -> Option<Node<'b, 'a>> {
        if self.token(at)? != FDT_BEGIN_NODE {
            return None;
        }
        let rest = self.structs.get(at + 4..)?;
        let len = rest.iter().position(|b| *b == 0)?;
        Some(Node {
            fdt: self,
            name: rest.get(..len)?,
            body: at + 4 + align4(len + 1),
        })
    }

    /// The property at `at` (an `FDT_PROP` token) and the offset after it.
    fn property_at(&self, at: usize) -> Option<(Property<'a>, usize)> {
        if self.token(at)? != FDT_PROP {
            return None;
        }
        let len = self.token(at + 4)? as usize;
        let name_off = self.token(at + 8)? as usize;
        let value = self.structs.get(at + 12..(at + 12).checked_add(len)?)?;
        let rest = self.strings.get(name_off..)?;
        let name = rest.get(..rest.iter().position(|b| *b == 0)?)?;
        Some((Property { name, value }, align4(at + 12 + len)))
    }

    /// The offset just after the `FDT_END_NODE` closing the node whose body
    /// starts at `at`.
    fn skip_node(&self, mut at: usize) -> Option<usize> {
        let mut depth = 1usize;
        loop {
            match self.token(at)? {
                FDT_PROP => {
                    let len = self.token(at + 4)? as usize;
                    let end = (at + 12)
                        .checked_add(len)
                        .filter(|end| *end <= self.structs.len())?;
                    at = align4(end);
                }
                FDT_BEGIN_NODE => {
                    let rest = self.structs.get(at + 4..)?;
                    let len = rest.iter().position(|b| *b == 0)?;
                    at += 4 + align4(len + 1);
                    depth += 1;
                }
                FDT_END_NODE => {
                    at += 4;
                    depth -= 1;
                    if depth == 0 {
                        return Some(at);
                    }
                }
                _ => return None,
            }
        }
    }

    /// Every node, depth first from the root.
    pub fn all_nodes<'b>(&'b self) -> impl Iterator<Item = Node<'b, 'a>> + 'b {
        let mut at = Some(0usize);
        core::iter::from_fn(move || loop {
            let here = at?;
            match self.token(here) {
                Some(FDT_BEGIN_NODE) => {
                    let node = self.node_at(here)?;
                    at = Some(node.body);
                    return Some(node);
                }
                Some(FDT_PROP) => at = self.property_at(here).map(|(_, next)| next),
                Some(FDT_END_NODE) => at = Some(here + 4),
                _ => at = None,
            }
        })
    }

    /// The memory-reservation map's `(address, size)` entries.
    pub fn memory_reservations(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        let map = self.reservations;
        let mut at = 0usize;
        core::iter::from_fn(move || {
            let entry = (be64(map, at)?, be64(map, at + 8)?);
            at += 16;
            (entry != (0, 0)).then_some(entry)
        })
    }
}

impl<'b, 'a> Node<'b, 'a> {
    /// The name with its unit address (`uart@1000`); empty for the root.
    /// Made a `str` only when asked for: most walks compare names as bytes.
    pub fn name(&self) -> &'a str {
        // `open` proved every node name UTF-8.
        core::str::from_utf8(self.name).unwrap_or_default()
    }

    /// Whether the node is called `wanted`, or has that base name (the
    /// part before `@`) when `wanted` has no unit address.
    pub fn is_named(&self, wanted: &str) -> bool {
        let wanted = wanted.as_bytes();
        self.name == wanted
            || (!wanted.contains(&b'@') && self.name.split(|b| *b == b'@').next() == Some(wanted))
    }

    /// The node's properties, in blob order.
    pub fn properties(&self) -> impl Iterator<Item = Property<'a>> + 'b {
        let fdt = self.fdt;
        let mut at = self.body;
        core::iter::from_fn(move || {
            let (p, next) = fdt.property_at(at)?;
            at = next;
            Some(p)
        })
    }

    /// The value of property `name`. Names are compared in place in the
    /// strings block, first byte first, without looking for each one's end:
    /// this is the lookup every parse repeats most.
    pub fn property(&self, name: &str) -> Option<&'a [u8]> {
        let fdt = self.fdt;
        let want = name.as_bytes();
        let first = *want.first()?;
        let mut at = self.body;
        while fdt.token(at)? == FDT_PROP {
            let len = fdt.token(at + 4)? as usize;
            let off = fdt.token(at + 8)? as usize;
            let end = (at + 12)
                .checked_add(len)
                .filter(|end| *end <= fdt.structs.len())?;
            if fdt.strings.get(off) == Some(&first)
                && fdt.strings.get(off..off.checked_add(want.len())?) == Some(want)
                && fdt.strings.get(off + want.len()) == Some(&0)
            {
                return fdt.structs.get(at + 12..end);
            }
            at = align4(end);
        }
        None
    }

    /// The node's direct subnodes, in blob order.
    pub fn children(&self) -> impl Iterator<Item = Node<'b, 'a>> + 'b {
        let fdt = self.fdt;
        let mut at = Some(self.body);
        core::iter::from_fn(move || loop {
            let here = at?;
            match fdt.token(here) {
                Some(FDT_PROP) => at = fdt.property_at(here).map(|(_, next)| next),
                Some(FDT_BEGIN_NODE) => {
                    let child = fdt.node_at(here)?;
                    at = fdt.skip_node(child.body);
                    return Some(child);
                }
                _ => at = None,
            }
        })
    }
}

/// Why a blob is not a well-formed FDT these readers accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtbFormatError {
    /// Shorter than the 40-byte header.
    TooShort { len: usize },
    /// The first word is not `0xd00dfeed`.
    BadMagic { found: u32 },
    /// The header's `totalsize` is smaller than a header or larger than the
    /// buffer holding the blob.
    BadTotalSize { total: usize, available: usize },
    /// Older than v17, or not readable by a v17 reader.
    UnsupportedVersion { version: u32, last_compatible: u32 },
    /// A block's offset or size lies outside `totalsize`, or is misaligned.
    BlockOutOfBounds { block: &'static str },
    /// The memory-reservation map has no terminating zero entry.
    ReservationMapUnterminated,
    /// The structure block ends before the `FDT_END` token.
    Truncated,
    /// An unknown token, or a known one where the grammar forbids it.
    UnexpectedToken { offset: usize, token: u32 },
    /// `FDT_NOP` tokens are rejected: `fdt` 0.1.5 mis-walks them.
    NopToken { offset: usize },
    /// A node name without a terminating NUL, not UTF-8, or a root name that
    /// is not empty.
    BadNodeName { offset: usize },
    /// A property's value runs past the structure block.
    PropertyOutOfBounds { offset: usize },
    /// A property's name offset is outside the strings block, or the name is
    /// unterminated or not UTF-8.
    BadPropertyName { offset: usize },
    /// A property after the node's first subnode.
    PropertyAfterSubnode { offset: usize },
    /// A `#address-cells`, `#size-cells` or `#interrupt-cells` value that is
    /// not exactly one cell.
    BadCellsProperty { offset: usize },
    /// Nodes nest deeper than `MAX_DEPTH`.
    TooDeep { offset: usize },
}

impl fmt::Display for DtbFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len } => {
                write!(f, "{len} bytes is too short for an FDT header")
            }
            Self::BadMagic { found } => {
                write!(f, "bad FDT magic {found:#010x} (expected 0xd00dfeed)")
            }
            Self::BadTotalSize { total, available } => write!(
                f,
                "header totalsize {total} is invalid for a {available}-byte buffer"
            ),
            Self::UnsupportedVersion {
                version,
                last_compatible,
            } => write!(
                f,
                "FDT version {version} (last compatible {last_compatible}) is not supported; need v17"
            ),
            Self::BlockOutOfBounds { block } => {
                write!(f, "{block} block lies outside the blob or is misaligned")
            }
            Self::ReservationMapUnterminated => {
                f.write_str("memory reservation map has no terminating entry")
            }
            Self::Truncated => f.write_str("structure block ends before FDT_END"),
            Self::UnexpectedToken { offset, token } => {
                write!(f, "unexpected token {token:#x} at offset {offset:#x}")
            }
            Self::NopToken { offset } => {
                write!(f, "FDT_NOP at offset {offset:#x} is not supported")
            }
            Self::BadNodeName { offset } => write!(f, "bad node name at offset {offset:#x}"),
            Self::PropertyOutOfBounds { offset } => {
                write!(f, "property at offset {offset:#x} runs past the structure block")
            }
            Self::BadPropertyName { offset } => {
                write!(f, "property at offset {offset:#x} has a bad name offset")
            }
            Self::PropertyAfterSubnode { offset } => {
                write!(f, "property at offset {offset:#x} follows a subnode")
            }
            Self::BadCellsProperty { offset } => {
                write!(f, "#*-cells property at offset {offset:#x} is not one cell")
            }
            Self::TooDeep { offset } => write!(
                f,
                "node at offset {offset:#x} nests deeper than {MAX_DEPTH} levels"
            ),
        }
    }
}

/// Reads `totalsize` from an FDT header after checking the magic, so a
/// caller holding only a pointer can bound the blob before parsing it.
pub fn total_size(header: &[u8]) -> Option<usize> {
    if be32(header, 0)? != FDT_MAGIC {
        return None;
    }
    let total = be32(header, 4)? as usize;
    (total >= FDT_HEADER_SIZE).then_some(total)
}

/// Checks `dtb` completely, then opens it for reading. Bytes after
/// `totalsize` are ignored.
pub fn open(dtb: &[u8]) -> Result<Fdt<'_>, DtbFormatError> {
    let blob = check_header(dtb)?;
    let Layout {
        struct_block,
        strings_block,
        reservations,
    } = check_structure(blob)?;
    let block = |r: core::ops::Range<usize>| {
        blob.get(r)
            .ok_or(DtbFormatError::BlockOutOfBounds { block: "structure" })
    };
    Ok(Fdt {
        structs: block(struct_block)?,
        strings: block(strings_block)?,
        reservations: blob.get(reservations..).unwrap_or_default(),
    })
}

/// The root node of a checked blob.
pub fn root<'b, 'a>(fdt: &'b Fdt<'a>) -> Option<Node<'b, 'a>> {
    fdt.node_at(0)
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

fn be64(bytes: &[u8], at: usize) -> Option<u64> {
    let word = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(word.try_into().ok()?))
}

/// Header fields, as byte offsets into the blob.
struct Layout {
    struct_block: core::ops::Range<usize>,
    strings_block: core::ops::Range<usize>,
    reservations: usize,
}

/// Validates the header and returns the blob cut to `totalsize`.
fn check_header(dtb: &[u8]) -> Result<&[u8], DtbFormatError> {
    if dtb.len() < FDT_HEADER_SIZE {
        return Err(DtbFormatError::TooShort { len: dtb.len() });
    }
    let word = |i: usize| be32(dtb, i * 4).unwrap_or(0);
    if word(0) != FDT_MAGIC {
        return Err(DtbFormatError::BadMagic { found: word(0) });
    }
    let total = word(1) as usize;
    if total < FDT_HEADER_SIZE || total > dtb.len() {
        return Err(DtbFormatError::BadTotalSize {
            total,
            available: dtb.len(),
        });
    }
    let (version, last_compatible) = (word(5), word(6));
    if version < FDT_VERSION || last_compatible > FDT_VERSION {
        return Err(DtbFormatError::UnsupportedVersion {
            version,
            last_compatible,
        });
    }
    let blob = dtb.get(..total).ok_or(DtbFormatError::Truncated)?;
    Ok(blob)
}

fn layout(blob: &[u8]) -> Result<Layout, DtbFormatError> {
    let total = blob.len();
    let word = |i: usize| be32(blob, i * 4).unwrap_or(0) as usize;
    let block = |off: usize, size: usize, align: usize, name| {
        off.checked_add(size)
            .filter(|end| *end <= total && off >= FDT_HEADER_SIZE && off.is_multiple_of(align))
            .map(|end| off..end)
            .ok_or(DtbFormatError::BlockOutOfBounds { block: name })
    };
    let struct_block = block(word(2), word(9), 4, "structure")?;
    let strings_block = block(word(3), word(8), 1, "strings")?;
    // The reservation map runs to its zero entry; it must end inside the blob.
    let rsv = word(4);
    if rsv < FDT_HEADER_SIZE || !rsv.is_multiple_of(8) {
        return Err(DtbFormatError::BlockOutOfBounds {
            block: "memory reservation",
        });
    }
    let mut at = rsv;
    loop {
        let (base, size) = be64(blob, at)
            .zip(be64(blob, at + 8))
            .ok_or(DtbFormatError::ReservationMapUnterminated)?;
        if base == 0 && size == 0 {
            break;
        }
        at += 16;
    }
    Ok(Layout {
        struct_block,
        strings_block,
        reservations: rsv,
    })
}

/// Proves the structure block's grammar; returns the layout it checked.
fn check_structure(blob: &[u8]) -> Result<Layout, DtbFormatError> {
    let checked = layout(blob)?;
    let base = checked.struct_block.start;
    let block = blob
        .get(checked.struct_block.clone())
        .ok_or(DtbFormatError::Truncated)?;
    let strings = blob
        .get(checked.strings_block.clone())
        .ok_or(DtbFormatError::BlockOutOfBounds { block: "strings" })?;

    let mut pos = 0usize;
    let mut depth = 0usize;
    let mut root_seen = false;
    // Whether the innermost open node has had a subnode yet.
    let mut has_subnode = false;
    loop {
        let offset = base + pos;
        let token = be32(block, pos).ok_or(DtbFormatError::Truncated)?;
        pos += 4;
        match token {
            FDT_BEGIN_NODE => {
                if root_seen && depth == 0 {
                    return Err(DtbFormatError::UnexpectedToken { offset, token });
                }
                let rest = block.get(pos..).ok_or(DtbFormatError::Truncated)?;
                let name_len = rest
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or(DtbFormatError::BadNodeName { offset })?;
                let name = rest
                    .get(..name_len)
                    .and_then(|n| core::str::from_utf8(n).ok())
                    .ok_or(DtbFormatError::BadNodeName { offset })?;
                if depth == 0 && !name.is_empty() {
                    return Err(DtbFormatError::BadNodeName { offset });
                }
                pos += align4(name_len + 1);
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(DtbFormatError::TooDeep { offset });
                }
                root_seen = true;
                has_subnode = false;
            }
            FDT_END_NODE => {
                if depth == 0 {
                    return Err(DtbFormatError::UnexpectedToken { offset, token });
                }
                depth -= 1;
                has_subnode = true;
            }
            FDT_PROP => {
                if depth == 0 {
                    return Err(DtbFormatError::UnexpectedToken { offset, token });
                }
                if has_subnode {
                    return Err(DtbFormatError::PropertyAfterSubnode { offset });
                }
                let len = be32(block, pos).ok_or(DtbFormatError::Truncated)? as usize;
                let name_off = be32(block, pos + 4).ok_or(DtbFormatError::Truncated)? as usize;
                pos += 8;
                let value_end = pos
                    .checked_add(len)
                    .filter(|end| *end <= block.len())
                    .ok_or(DtbFormatError::PropertyOutOfBounds { offset })?;
                let name = strings
                    .get(name_off..)
                    .and_then(|s| s.get(..s.iter().position(|b| *b == 0)?))
                    .and_then(|n| core::str::from_utf8(n).ok())
                    .ok_or(DtbFormatError::BadPropertyName { offset })?;
                if matches!(name, "#address-cells" | "#size-cells" | "#interrupt-cells") && len != 4
                {
                    return Err(DtbFormatError::BadCellsProperty { offset });
                }
                pos = align4(value_end);
            }
            FDT_NOP => return Err(DtbFormatError::NopToken { offset }),
            FDT_END => {
                if !root_seen || depth != 0 {
                    return Err(DtbFormatError::UnexpectedToken { offset, token });
                }
                return Ok(checked);
            }
            _ => return Err(DtbFormatError::UnexpectedToken { offset, token }),
        }
        if pos > block.len() {
            return Err(DtbFormatError::Truncated);
        }
    }
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Capacity of a node path kept for error messages.
pub const PATH_CAPACITY: usize = 96;

/// A node's full path (`/chosen/domU1`), for error messages. Too-long paths
/// are cut short and end in `...`; a path never fails to build.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct NodePath(heapless::String<PATH_CAPACITY>);

impl NodePath {
    /// The root, `/`.
    pub fn root() -> Self {
        Self::new("/")
    }

    /// An absolute path given as text.
    pub fn new(path: &str) -> Self {
        let mut p = Self::default();
        p.push(path);
        p
    }

    /// The path of `name` under `self`.
    pub fn child(&self, name: &str) -> Self {
        let mut p = self.clone();
        if p.0.as_str() != "/" {
            p.push("/");
        }
        p.push(name);
        p
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    fn push(&mut self, text: &str) {
        for c in text.chars() {
            if self.0.len() + c.len_utf8() > PATH_CAPACITY - 3 {
                // Room for the marker was kept back, so this cannot fail.
                let _ = self.0.push_str("...");
                return;
            }
            let _ = self.0.push(c);
        }
    }
}

impl fmt::Display for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for NodePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// `#address-cells` and `#size-cells` a node sets for its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cells {
    pub address: u32,
    pub size: u32,
}

impl Cells {
    /// The devicetree specification's defaults when a node sets none.
    pub const DEFAULT: Cells = Cells {
        address: 2,
        size: 1,
    };

    /// The cell sizes `node` sets for its children (defaults where absent).
    /// The structure check guarantees each is one cell long.
    pub fn of(node: &Node<'_, '_>) -> Cells {
        let mut cells = Cells::DEFAULT;
        if let Some(v) = prop(node, "#address-cells").and_then(u32_value) {
            cells.address = v;
        }
        if let Some(v) = prop(node, "#size-cells").and_then(u32_value) {
            cells.size = v;
        }
        cells
    }
}

/// The raw value of `node`'s property `name`, if present.
pub fn prop<'a>(node: &Node<'_, 'a>, name: &str) -> Option<&'a [u8]> {
    node.property(name)
}

/// A one-cell value; `None` unless exactly four bytes.
pub fn u32_value(value: &[u8]) -> Option<u32> {
    (value.len() == 4).then(|| be32(value, 0)).flatten()
}

/// A two-cell value; `None` unless exactly eight bytes.
pub fn u64_value(value: &[u8]) -> Option<u64> {
    (value.len() == 8).then(|| be64(value, 0)).flatten()
}

/// A number of `cells` (1 or 2) big-endian cells starting at byte `at`.
pub fn cells_value(value: &[u8], at: usize, cells: u32) -> Option<u64> {
    match cells {
        1 => be32(value, at).map(u64::from),
        2 => be64(value, at),
        _ => None,
    }
}

/// A string property: UTF-8 with exactly one NUL, at the end.
pub fn string_value(value: &[u8]) -> Option<&str> {
    let (last, text) = value.split_last()?;
    if *last != 0 || text.contains(&0) {
        return None;
    }
    core::str::from_utf8(text).ok()
}

/// The entries of a string-list property; a malformed list yields fewer.
pub fn string_list(value: &[u8]) -> impl Iterator<Item = &str> {
    let body = value.strip_suffix(&[0]).unwrap_or(value);
    body.split(|b| *b == 0)
        .filter(move |_| !value.is_empty())
        .filter_map(|s| core::str::from_utf8(s).ok())
}

/// Whether `node`'s `compatible` list contains `wanted`.
pub fn is_compatible(node: &Node<'_, '_>, wanted: &str) -> bool {
    prop(node, "compatible").is_some_and(|v| string_list(v).any(|c| c == wanted))
}

/// A node name without its unit address (`cpu@1` → `cpu`).
pub fn base_name(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// Why a `reg`-style property could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegError {
    /// The parent's cell sizes are not ones these readers decode (address
    /// 1..=2 cells, size 0..=2 cells).
    UnsupportedCells(Cells),
    /// The length is not a whole number of entries.
    BadLength { len: usize, entry: usize },
}

impl fmt::Display for RegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedCells(c) => write!(
                f,
                "unsupported #address-cells = {} / #size-cells = {}",
                c.address, c.size
            ),
            Self::BadLength { len, entry } => write!(
                f,
                "{len} bytes is not a whole number of {entry}-byte entries"
            ),
        }
    }
}

/// Decodes `(address, size)` pairs with the given cell sizes; with zero size
/// cells every size is 0.
pub fn reg_entries(
    value: &[u8],
    cells: Cells,
) -> Result<impl Iterator<Item = (u64, u64)> + '_, RegError> {
    if !(1..=2).contains(&cells.address) || cells.size > 2 {
        return Err(RegError::UnsupportedCells(cells));
    }
    let addr_bytes = cells.address as usize * 4;
    let entry = addr_bytes + cells.size as usize * 4;
    if !value.len().is_multiple_of(entry) {
        return Err(RegError::BadLength {
            len: value.len(),
            entry,
        });
    }
    Ok(value.chunks_exact(entry).filter_map(move |chunk| {
        let address = cells_value(chunk, 0, cells.address)?;
        let size = match cells.size {
            0 => 0,
            n => cells_value(chunk, addr_bytes, n)?,
        };
        Some((address, size))
    }))
}

/// A node found by path, with what is needed to decode its `reg`.
pub struct Located<'b, 'a> {
    pub node: Node<'b, 'a>,
    pub path: NodePath,
    /// The cell sizes its parent sets.
    pub parent_cells: Cells,
}

/// Finds the node at an absolute `path`, walking from the root. A component
/// without a unit address matches the first child with that base name, as
/// in Linux's `of_find_node_by_path`.
pub fn lookup<'b, 'a>(fdt: &'b Fdt<'a>, path: &str) -> Option<Located<'b, 'a>> {
    let mut node = root(fdt)?;
    let mut parent_cells = Cells::DEFAULT;
    let mut found_path = NodePath::root();
    if !path.starts_with('/') {
        return None;
    }
    for component in path.split('/').filter(|c| !c.is_empty()) {
        let cells = Cells::of(&node);
        let child = node.children().find(|c| c.is_named(component))?;
        found_path = found_path.child(child.name());
        parent_cells = cells;
        node = child;
    }
    Some(Located {
        node,
        path: found_path,
        parent_cells,
    })
}

/// Depth-first search for the first node satisfying `pred`.
pub fn find_first<'b, 'a>(
    fdt: &'b Fdt<'a>,
    pred: &dyn Fn(&Node<'b, 'a>) -> bool,
) -> Option<Located<'b, 'a>> {
    let [found] = find_firsts::<1>(fdt, &|n| pred(n).then_some(0));
    found
}

/// One depth-first walk finding, for each of `N` kinds of node, the first
/// node `classify` says is of that kind (`Some(k)`, `k < N`). A host DT is
/// walked once instead of once per device looked for: the `fdt` crate
/// parses a node's properties on every look, and boot time counts.
pub fn find_firsts<'b, 'a, const N: usize>(
    fdt: &'b Fdt<'a>,
    classify: &dyn Fn(&Node<'b, 'a>) -> Option<usize>,
) -> [Option<Located<'b, 'a>>; N] {
    let mut found = [const { None }; N];
    if let Some(root) = root(fdt) {
        let mut names = [&[][..]; MAX_DEPTH];
        firsts_below(root, &mut names, 0, classify, &mut found);
    }
    found
}

/// The walk below `node`, whose path is `names[..depth]` (the root's
/// children are at depth 0). A path is built only for a node found.
fn firsts_below<'b, 'a, const N: usize>(
    node: Node<'b, 'a>,
    names: &mut [&'a [u8]; MAX_DEPTH],
    depth: usize,
    classify: &dyn Fn(&Node<'b, 'a>) -> Option<usize>,
    found: &mut [Option<Located<'b, 'a>>; N],
) {
    // Read only for a node with a match below it: two more property scans
    // per node would double the walk.
    let mut cells = None;
    for child in node.children() {
        if found.iter().all(Option::is_some) {
            return;
        }
        let Some(slot) = names.get_mut(depth) else {
            return;
        };
        *slot = child.name;
        if let Some(slot) = classify(&child).and_then(|k| found.get_mut(k)) {
            if slot.is_none() {
                let mut path = NodePath::root();
                for name in names.iter().take(depth + 1) {
                    path = path.child(core::str::from_utf8(name).unwrap_or_default());
                }
                *slot = Some(Located {
                    node: child,
                    path,
                    parent_cells: *cells.get_or_insert_with(|| Cells::of(&node)),
                });
            }
        }
        firsts_below(child, names, depth + 1, classify, found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdt_writer::FdtWriter;

    fn small_tree(buf: &mut [u8]) -> usize {
        let mut w = FdtWriter::new(buf).unwrap();
        w.add_reservation(0x1000, 0x2000).unwrap();
        w.begin_node("").unwrap();
        w.property_u32("#address-cells", 2).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        w.begin_node("soc").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_u32("#size-cells", 1).unwrap();
        w.begin_node("uart@1000").unwrap();
        w.property_strings("compatible", &["a,b", "c,d"]).unwrap();
        w.property_cells("reg", &[0x1000, 0x100]).unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn opens_a_good_blob_and_finds_nodes() {
        let mut buf = [0u8; 512];
        let n = small_tree(&mut buf);
        let fdt = open(&buf[..n]).unwrap();
        let uart = lookup(&fdt, "/soc/uart").unwrap();
        assert_eq!(uart.path.as_str(), "/soc/uart@1000");
        assert_eq!(
            uart.parent_cells,
            Cells {
                address: 1,
                size: 1
            }
        );
        let reg: Vec<_> = reg_entries(prop(&uart.node, "reg").unwrap(), uart.parent_cells)
            .unwrap()
            .collect();
        assert_eq!(reg, [(0x1000, 0x100)]);
        let found = find_first(&fdt, &|n| is_compatible(n, "c,d")).unwrap();
        assert_eq!(found.path.as_str(), "/soc/uart@1000");
        assert!(lookup(&fdt, "/soc/missing").is_none());
        assert!(lookup(&fdt, "soc").is_none());
        assert_eq!(total_size(&buf), Some(n));
    }

    #[test]
    fn walks_nodes_properties_and_reservations_in_place() {
        let mut buf = [0u8; 1024];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.add_reservation(0x1000, 0x2000).unwrap();
        w.add_reservation(0x8000, 0x10).unwrap();
        w.begin_node("").unwrap();
        w.property_u32("#address-cells", 1).unwrap();
        w.property_string("model", "m").unwrap();
        w.begin_node("a").unwrap();
        w.property_u32("x", 1).unwrap();
        w.begin_node("deep").unwrap();
        w.begin_node("deeper").unwrap();
        w.property_u32("x", 9).unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        w.begin_node("b@2").unwrap();
        w.property_string("model", "bee").unwrap();
        w.property_cells("empty", &[]).unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        let n = w.finish().unwrap();
        let fdt = open(&buf[..n]).unwrap();
        let root = root(&fdt).unwrap();
        assert_eq!(root.name(), "");
        // Children skip whole subtrees, and only direct subnodes count.
        let names: Vec<_> = root.children().map(|c| c.name()).collect();
        assert_eq!(names, ["a", "b@2"]);
        let all: Vec<_> = fdt.all_nodes().map(|c| c.name()).collect();
        assert_eq!(all, ["", "a", "deep", "deeper", "b@2"]);
        let b = lookup(&fdt, "/b").unwrap().node;
        assert_eq!(prop(&b, "model").and_then(string_value), Some("bee"));
        assert_eq!(prop(&b, "empty"), Some(&[][..]));
        // A name is matched whole: neither a prefix nor an extension.
        assert_eq!(prop(&b, "mode"), None);
        assert_eq!(prop(&b, "models"), None);
        assert_eq!(prop(&b, ""), None);
        assert!(b.is_named("b") && b.is_named("b@2") && !b.is_named("b@3"));
        assert!(!b.is_named("b@") && !b.is_named("") && !b.is_named("bb"));
        let props: Vec<_> = root.properties().map(|p| p.name).collect();
        assert_eq!(props, [&b"#address-cells"[..], b"model"]);
        assert!(b.children().next().is_none());
        let deeper = lookup(&fdt, "/a/deep/deeper").unwrap();
        assert_eq!(prop(&deeper.node, "x").and_then(u32_value), Some(9));
        let rsv: Vec<_> = fdt.memory_reservations().collect();
        assert_eq!(rsv, [(0x1000, 0x2000), (0x8000, 0x10)]);
    }

    /// Our reader and the `fdt` crate see the same tree in a blob both
    /// accept.
    #[test]
    fn agrees_with_an_independent_reader() {
        let mut buf = [0u8; 512];
        let n = small_tree(&mut buf);
        let ours = open(&buf[..n]).unwrap();
        let theirs = fdt::Fdt::new(&buf[..n]).unwrap();
        let a: Vec<_> = ours
            .all_nodes()
            .map(|node| {
                let props: Vec<_> = node
                    .properties()
                    .map(|p| (p.name.to_vec(), p.value.to_vec()))
                    .collect();
                (node.name().to_string(), props)
            })
            .collect();
        let b: Vec<_> = theirs
            .all_nodes()
            .map(|node| {
                let props: Vec<_> = node
                    .properties()
                    .map(|p| (p.name.as_bytes().to_vec(), p.value.to_vec()))
                    .collect();
                (node.name.trim_start_matches('/').to_string(), props)
            })
            .collect();
        assert_eq!(a, b);
    }

    /// Flips/overwrites bytes of a good blob and checks the error.
    fn corrupt(at: usize, bytes: &[u8]) -> Result<(), DtbFormatError> {
        let mut buf = [0u8; 512];
        let n = small_tree(&mut buf);
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        open(&buf[..n]).map(|_| ())
    }

    fn header_word(i: usize) -> u32 {
        let mut buf = [0u8; 512];
        small_tree(&mut buf);
        u32::from_be_bytes(buf[i * 4..i * 4 + 4].try_into().unwrap())
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            open(&[0u8; 10]).err(),
            Some(DtbFormatError::TooShort { len: 10 })
        );
        assert!(matches!(
            corrupt(0, &[0, 0, 0, 0]),
            Err(DtbFormatError::BadMagic { found: 0 })
        ));
        assert!(matches!(
            corrupt(4, &0xffffu32.to_be_bytes()),
            Err(DtbFormatError::BadTotalSize { .. })
        ));
        assert!(matches!(
            corrupt(20, &16u32.to_be_bytes()),
            Err(DtbFormatError::UnsupportedVersion { version: 16, .. })
        ));
        assert_eq!(
            corrupt(8, &0x1_0000u32.to_be_bytes()),
            Err(DtbFormatError::BlockOutOfBounds { block: "structure" })
        );
        assert_eq!(
            corrupt(12, &0x1_0000u32.to_be_bytes()),
            Err(DtbFormatError::BlockOutOfBounds { block: "strings" })
        );
        // Make the reservation map's terminator non-zero all the way.
        let strings = header_word(3) as usize;
        let mut buf = [0u8; 512];
        let n = small_tree(&mut buf);
        buf[16..20].copy_from_slice(&((strings - 8) as u32).to_be_bytes());
        buf[strings - 8..strings].fill(0xff);
        assert_eq!(
            open(&buf[..n]).err(),
            Some(DtbFormatError::ReservationMapUnterminated)
        );
        assert_eq!(total_size(&[0xd0, 0x0d, 0xfe, 0xed, 0, 0, 0, 8]), None);
        assert_eq!(total_size(&[0xd0, 0x0d]), None);
    }

    #[test]
    fn structure_errors() {
        let s = header_word(2) as usize;
        // Root: BEGIN_NODE "" (8 bytes), then PROP #address-cells at s + 8.
        assert!(matches!(
            corrupt(s, &FDT_NOP.to_be_bytes()),
            Err(DtbFormatError::NopToken { .. })
        ));
        assert!(matches!(
            corrupt(s, &9u32.to_be_bytes()),
            Err(DtbFormatError::UnexpectedToken { token: 9, .. })
        ));
        assert!(matches!(
            corrupt(s + 4, b"x"),
            Err(DtbFormatError::BadNodeName { .. })
        ));
        assert!(matches!(
            corrupt(s + 12, &0xffffu32.to_be_bytes()),
            Err(DtbFormatError::PropertyOutOfBounds { .. })
        ));
        assert!(matches!(
            corrupt(s + 16, &0xffffu32.to_be_bytes()),
            Err(DtbFormatError::BadPropertyName { .. })
        ));
        assert!(matches!(
            corrupt(s + 12, &0u32.to_be_bytes()),
            Err(DtbFormatError::BadCellsProperty { .. })
        ));
        // Drop FDT_END by shrinking the structure block.
        let size = header_word(9);
        assert_eq!(
            corrupt(36, &(size - 4).to_be_bytes()),
            Err(DtbFormatError::Truncated)
        );
    }

    #[test]
    fn grammar_errors_built_by_hand() {
        // A property after a subnode cannot be produced by the writer, so
        // swap a subnode and a property in a blob it wrote.
        let mut buf = [0u8; 256];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        w.begin_node("a").unwrap();
        w.property_u32("p", 1).unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        let n = w.finish().unwrap();
        let s = u32::from_be_bytes(buf[8..12].try_into().unwrap()) as usize;
        // Layout: root BEGIN (8) | a BEGIN (8) | PROP (16) | END_NODE | END_NODE | END.
        // Turn "a" into a property-less node followed by the root's property:
        // root BEGIN | a BEGIN | END_NODE | PROP ... is what we want.
        let prop: [u8; 16] = buf[s + 16..s + 32].try_into().unwrap();
        buf[s + 16..s + 20].copy_from_slice(&FDT_END_NODE.to_be_bytes());
        buf[s + 20..s + 36].copy_from_slice(&prop);
        assert!(matches!(
            open(&buf[..n]),
            Err(DtbFormatError::PropertyAfterSubnode { .. })
        ));

        let mut buf = [0u8; 1024];
        let mut w = FdtWriter::new(&mut buf).unwrap();
        w.begin_node("").unwrap();
        for _ in 0..MAX_DEPTH {
            w.begin_node("n").unwrap();
        }
        for _ in 0..=MAX_DEPTH {
            w.end_node().unwrap();
        }
        let n = w.finish().unwrap();
        assert!(matches!(
            open(&buf[..n]),
            Err(DtbFormatError::TooDeep { .. })
        ));
    }

    #[test]
    fn no_truncation_or_corruption_panics() {
        let mut good = [0u8; 512];
        let n = small_tree(&mut good);
        for cut in 0..n {
            let mut buf = good;
            buf[4..8].copy_from_slice(&(cut as u32).to_be_bytes());
            let _ = open(&buf[..n]);
            let _ = open(&good[..cut]);
        }
        for at in 0..n {
            for byte in [0x00, 0x01, 0x03, 0x04, 0x7f, 0xff] {
                let mut buf = good;
                buf[at] = byte;
                if let Ok(fdt) = open(&buf[..n]) {
                    // Exercise the reading paths on whatever survived.
                    let _ = find_first(&fdt, &|n| is_compatible(n, "x"));
                    for node in fdt.all_nodes() {
                        for p in node.properties() {
                            let _ = (p.name, string_value(p.value));
                        }
                        let _ = node.children().count();
                    }
                    let _ = fdt.memory_reservations().count();
                }
            }
        }
    }

    #[test]
    fn value_decoders() {
        assert_eq!(string_value(b"abc\0"), Some("abc"));
        assert_eq!(string_value(b"abc"), None);
        assert_eq!(string_value(b"a\0b\0"), None);
        assert_eq!(string_value(b""), None);
        assert_eq!(string_value(b"\xff\0"), None);
        assert_eq!(string_list(b"a\0b\0").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(string_list(b"").count(), 0);
        assert_eq!(u32_value(&[0, 0, 0, 7]), Some(7));
        assert_eq!(u32_value(&[0, 0, 7]), None);
        assert_eq!(u64_value(&[0, 0, 0, 1, 0, 0, 0, 2]), Some(0x1_0000_0002));
        assert_eq!(
            reg_entries(
                &[0; 12],
                Cells {
                    address: 2,
                    size: 2
                }
            )
            .err(),
            Some(RegError::BadLength { len: 12, entry: 16 })
        );
        assert_eq!(
            reg_entries(
                &[0; 12],
                Cells {
                    address: 3,
                    size: 0
                }
            )
            .err(),
            Some(RegError::UnsupportedCells(Cells {
                address: 3,
                size: 0
            }))
        );
        let long = "x".repeat(200);
        let p = NodePath::root().child(&long);
        assert!(p.as_str().ends_with("...") && p.as_str().len() <= PATH_CAPACITY);
    }
}

/// An error found in a device tree: the node and property to blame, and what
/// is wrong (`K`, one enum per kind of tree). It prints as
/// `/chosen/domU1: property "cpus": <what>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtError<K> {
    /// The offending node's path; empty when the blob itself is malformed.
    pub node: NodePath,
    /// The offending property, when one is to blame.
    pub property: Option<&'static str>,
    pub kind: K,
}

impl<K> DtError<K> {
    /// An error at `node` (and `property`, if one is to blame).
    pub fn new(node: &NodePath, property: Option<&'static str>, kind: K) -> Self {
        Self {
            node: node.clone(),
            property,
            kind,
        }
    }
}

impl<K: fmt::Display> fmt::Display for DtError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.node.as_str().is_empty() {
            write!(f, "{}: ", self.node)?;
        }
        if let Some(property) = self.property {
            write!(f, "property \"{property}\": ")?;
        }
        write!(f, "{}", self.kind)
    }
}
