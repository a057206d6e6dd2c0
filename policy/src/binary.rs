//! The policy binary's layout, shared by the compiler that writes it and the
//! loader that validates it.
//!
//! Every table is a run of fixed-size little-endian records, so the loader
//! reads them in place (zerocopy, no allocation) and the AVC binary-searches
//! the rule table directly in the image. Layout, in order, with no padding
//! between sections and nothing after the last:
//!
//! ```text
//! Header                                    32 bytes
//! NameEntry  × (users + roles + types)       8 bytes each
//! RuleRecord × rule_count                   12 bytes each, strictly sorted by (source, target, class)
//! TransitionRecord × transition_count        8 bytes each, strictly sorted by (source, target, class)
//! name bytes                                strings_len bytes, ASCII identifiers
//! ```
//!
//! Names are grouped users, then roles, then types; each group is strictly
//! ascending, so a name's index within its group is its number and lookup by
//! name is a binary search. `checksum` is FNV-1a over everything after the
//! header: integrity against a damaged image, not authenticity (the image's
//! own signature covers that).

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `b"TPOL"`: identifies a Tessera policy binary.
pub const MAGIC: [u8; 4] = *b"TPOL";
/// The only format version this crate reads and writes.
pub const VERSION: u16 = 1;
/// The most names of one kind (users, roles or types) a policy can hold:
/// they are numbered with a `u16`.
pub const MAX_NAMES: usize = u16::MAX as usize;
/// The longest name, in bytes; long enough for any sensible identifier and
/// small enough for a `u16` length.
pub const MAX_NAME_LEN: usize = 255;

/// The fixed header at offset 0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// [`VERSION`].
    pub version: U16,
    /// Must be zero; a future version may give it meaning.
    pub _reserved: U16,
    /// Number of user names.
    pub user_count: U16,
    /// Number of role names.
    pub role_count: U16,
    /// Number of type names.
    pub type_count: U16,
    /// Must be zero.
    pub _pad: U16,
    /// Number of [`RuleRecord`]s.
    pub rule_count: U32,
    /// Number of [`TransitionRecord`]s.
    pub transition_count: U32,
    /// Length of the name bytes at the end.
    pub strings_len: U32,
    /// [`checksum`] of everything after the header.
    pub checksum: U32,
}
const _: () = assert!(size_of::<Header>() == 32);

/// Where one name sits in the name bytes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NameEntry {
    /// Byte offset into the name bytes.
    pub offset: U32,
    /// Length in bytes, 1..=[`MAX_NAME_LEN`].
    pub len: U16,
    /// Must be zero.
    pub _pad: U16,
}
const _: () = assert!(size_of::<NameEntry>() == 8);

/// The permissions `source` has on `target` in `class`, attributes already
/// expanded by the compiler.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RuleRecord {
    /// Source type number.
    pub source: U16,
    /// Target type number.
    pub target: U16,
    /// [`crate::Class`] number.
    pub class: U16,
    /// Must be zero.
    pub _pad: U16,
    /// Allowed permission bits; non-zero and within the class's defined bits.
    pub allowed: U32,
}
const _: () = assert!(size_of::<RuleRecord>() == 12);

impl RuleRecord {
    /// The sort key; the table is strictly ascending in it.
    #[inline(always)]
    pub fn key(&self) -> u64 {
        rule_key(self.source.get(), self.target.get(), self.class.get())
    }
}

/// The type a new object of `class` gets when `source` creates it toward
/// `target`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct TransitionRecord {
    /// Source type number.
    pub source: U16,
    /// Target type number.
    pub target: U16,
    /// [`crate::Class`] number.
    pub class: U16,
    /// The new object's type number.
    pub new_type: U16,
}
const _: () = assert!(size_of::<TransitionRecord>() == 8);

impl TransitionRecord {
    /// The sort key; the table is strictly ascending in it.
    #[inline(always)]
    pub fn key(&self) -> u64 {
        rule_key(self.source.get(), self.target.get(), self.class.get())
    }
}

/// Packs (source, target, class) into one integer whose order is the tables'
/// sort order.
#[inline(always)]
pub const fn rule_key(source: u16, target: u16, class: u16) -> u64 {
    ((source as u64) << 32) | ((target as u64) << 16) | class as u64
}

/// FNV-1a, 32-bit: tiny, no tables, and enough to catch a damaged image.
pub fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// Recomputes and stores the checksum of a binary whose body was edited.
/// The compiler uses it, and so can tests and fuzzers that want to reach the
/// structural checks behind the checksum. A buffer shorter than the header is
/// left alone.
pub fn seal(binary: &mut [u8]) {
    let Ok((header, body)) = Header::mut_from_prefix(binary) else {
        return;
    };
    header.checksum = U32::new(checksum(body));
}

/// Whether `name` is a policy identifier: an ASCII letter or `_`, then
/// letters, digits or `_`, at most [`MAX_NAME_LEN`] bytes.
pub fn is_identifier(name: &[u8]) -> bool {
    match name.split_first() {
        Some((first, rest)) => {
            name.len() <= MAX_NAME_LEN
                && (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
        None => false,
    }
}
