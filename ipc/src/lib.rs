//! The Tessera ABI, defined once.
//!
//! Everything a guest, a service domain, the kernel or a host tool must agree
//! on lives here: hypercall and PSCI numbers, error codes, wire structures and
//! the unified-image layout. Numbers are enums with an exhaustive `TryFrom`, so
//! an unknown value is an error and never silently becomes zero.
//! The protocol itself is written down in `docs/01-hypercall-abi.md`.
#![no_std]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod control;
pub mod errno;
pub mod event_channel;
pub mod grant_table;
pub mod hypercall;
pub mod image;
pub mod ioreq;
pub mod memory;
pub mod platform;
pub mod psci;
pub mod ring;

/// Declares a `#[repr(u64)]`-style enum of ABI numbers with an exhaustive
/// `TryFrom<u64>` so that an unknown number is an error, never a default.
#[macro_export]
macro_rules! abi_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident : $repr:ty { $($(#[$vmeta:meta])* $variant:ident = $value:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr($repr)]
        $vis enum $name { $($(#[$vmeta])* $variant = $value),+ }

        impl TryFrom<u64> for $name {
            type Error = u64;
            fn try_from(raw: u64) -> Result<Self, u64> {
                $(if raw == Self::$variant as $repr as u64 { return Ok(Self::$variant); })+
                Err(raw)
            }
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$(Self::$variant),+];
            /// The raw ABI number.
            pub const fn raw(self) -> $repr { self as $repr }
        }
    };
}
