//! Kinds of address, kept apart by type (Hafnium's `paddr_t`/`ipaddr_t`).
//!
//! A `PhysAddr` is a host physical address; the EL2 kernel identity-maps RAM,
//! so it is also the kernel's virtual address for that memory. An `Ipa` is a
//! guest's intermediate physical address and is meaningless until a domain's
//! stage-2 translates it. A `GuestVa` is a guest virtual address, which only
//! the guest's own stage-1 can turn into an `Ipa`.

use core::fmt;

macro_rules! address_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            pub const fn raw(self) -> u64 {
                self.0
            }
            /// `self + off`, or `None` on overflow.
            pub const fn checked_add(self, off: u64) -> Option<Self> {
                match self.0.checked_add(off) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
            /// Round down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }
    };
}

address_type!(
    /// A host physical address.
    PhysAddr
);
address_type!(
    /// A guest intermediate physical address.
    Ipa
);
address_type!(
    /// A guest virtual address, as passed in hypercall pointer arguments.
    GuestVa
);

/// 4 KiB, the translation granule.
pub const PAGE_SIZE: u64 = 0x1000;
/// 2 MiB, a level-2 block.
pub const BLOCK_2M: u64 = 0x20_0000;
/// 1 GiB, a level-1 block.
pub const BLOCK_1G: u64 = 0x4000_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_helpers() {
        assert!(Ipa(0x4000_0000).is_aligned(BLOCK_2M));
        assert!(!Ipa(0x4000_1000).is_aligned(BLOCK_2M));
        assert_eq!(
            PhysAddr(0x4020_1234).align_down(PAGE_SIZE),
            PhysAddr(0x4020_1000)
        );
        assert_eq!(Ipa(u64::MAX).checked_add(1), None);
        assert_eq!(format!("{:?}", Ipa(0x10)), "Ipa(0x10)");
    }
}
