//! Object classes and their permissions, numbered once.
//!
//! The numbers here are the policy binary's vocabulary: a class number and a
//! permission bit mean the same thing to the compiler, the loader and the
//! kernel. They mirror Xen's FLASK access vectors where the concept maps, and
//! they never change meaning; new permissions take new bits.

use core::fmt;

/// A class number or permission name the policy does not define.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownClass(pub u16);

/// A permission bit outside its class's defined set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownPerm {
    /// The class the bit was looked up in.
    pub class: Class,
    /// The undefined bit number.
    pub bit: u8,
}

/// Declares `Class`, one permission enum per class, and the tables that map
/// between numbers and names, from a single list so they cannot drift apart.
macro_rules! classes {
    ($(
        $(#[$cmeta:meta])*
        $class:ident = $cnum:literal, $cname:literal, $perm_ty:ident {
            $( $(#[$pmeta:meta])* $perm:ident = $bit:literal, $pname:literal; )+
        }
    )+) => {
        /// An object class: the kind of thing an access is made to.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Class {
            $( $(#[$cmeta])* $class = $cnum, )+
        }

        impl Class {
            /// Every class, in number order.
            pub const ALL: &'static [Class] = &[$(Class::$class),+];

            /// The class's name in policy source and audit lines.
            pub const fn name(self) -> &'static str {
                match self { $(Class::$class => $cname,)+ }
            }

            /// The mask of permission bits this class defines; the loader
            /// rejects a rule granting any bit outside it.
            pub const fn defined_bits(self) -> u32 {
                match self { $(Class::$class => 0 $(| (1u32 << $bit))+,)+ }
            }

            /// Looks a class up by its source-language name.
            pub fn from_name(name: &str) -> Option<Class> {
                match name { $($cname => Some(Class::$class),)+ _ => None }
            }

            /// The name of permission `bit` in this class, if defined.
            pub fn perm_name(self, bit: u8) -> Option<&'static str> {
                Perm::from_bit(self, bit).ok().map(Perm::name)
            }
        }

        impl TryFrom<u16> for Class {
            type Error = UnknownClass;
            fn try_from(raw: u16) -> Result<Self, UnknownClass> {
                match raw { $($cnum => Ok(Class::$class),)+ _ => Err(UnknownClass(raw)) }
            }
        }

        impl fmt::Display for Class {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        $(
            #[doc = concat!("Permissions of class `", $cname, "`.")]
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
            #[repr(u8)]
            pub enum $perm_ty {
                $( $(#[$pmeta])* $perm = $bit, )+
            }

            impl $perm_ty {
                /// The permission's name in policy source and audit lines.
                pub const fn name(self) -> &'static str {
                    match self { $($perm_ty::$perm => $pname,)+ }
                }
            }

            impl TryFrom<u8> for $perm_ty {
                type Error = UnknownPerm;
                fn try_from(bit: u8) -> Result<Self, UnknownPerm> {
                    match bit {
                        $($bit => Ok($perm_ty::$perm),)+
                        _ => Err(UnknownPerm { class: Class::$class, bit }),
                    }
                }
            }

            impl From<$perm_ty> for Perm {
                fn from(p: $perm_ty) -> Perm {
                    Perm { class: Class::$class, bit: p as u8 }
                }
            }
        )+

        impl Perm {
            /// The permission named `name` in `class`, as the compiler sees it.
            pub fn from_name(class: Class, name: &str) -> Option<Perm> {
                match class {
                    $(Class::$class => match name {
                        $($pname => Some(Perm::from($perm_ty::$perm)),)+
                        _ => None,
                    },)+
                }
            }

            /// The permission with number `bit` in `class`.
            pub fn from_bit(class: Class, bit: u8) -> Result<Perm, UnknownPerm> {
                match class {
                    $(Class::$class => $perm_ty::try_from(bit).map(Perm::from),)+
                }
            }

            /// The permission's name in policy source and audit lines.
            pub fn name(self) -> &'static str {
                match self.class {
                    $(Class::$class => match $perm_ty::try_from(self.bit) {
                        Ok(p) => p.name(),
                        // Unreachable by construction: a `Perm` is only built
                        // from a defined bit. A name is still owed, not a panic.
                        Err(_) => "?",
                    },)+
                }
            }
        }
    };
}

classes! {
    /// Domain control: building, running and stopping domains.
    Domain = 0, "domain", DomainPerm {
        Create = 0, "create";
        Destroy = 1, "destroy";
        Pause = 2, "pause";
        Unpause = 3, "unpause";
        SetVcpuContext = 4, "setvcpucontext";
        GetDomainInfo = 5, "getdomaininfo";
        Shutdown = 6, "shutdown";
        /// Take a domain that asked to reboot back to built-but-not-run,
        /// in place (`ResetDomain`).
        Reset = 7, "reset";
    }
    /// Event channels.
    Event = 1, "event", EventPerm {
        Create = 0, "create";
        Bind = 1, "bind";
        Send = 2, "send";
        Status = 3, "status";
        Reset = 4, "reset";
    }
    /// Grant tables.
    Grant = 2, "grant", GrantPerm {
        Setup = 0, "setup";
        MapRead = 1, "map_read";
        MapWrite = 2, "map_write";
        Unmap = 3, "unmap";
        Copy = 4, "copy";
        Query = 5, "query";
    }
    /// Memory mapping of another domain's pages and the physmap.
    Mmu = 3, "mmu", MmuPerm {
        MapRead = 0, "map_read";
        MapWrite = 1, "map_write";
        Physmap = 2, "physmap";
        MemoryMap = 3, "memorymap";
    }
    /// Hardware resources: MMIO, interrupts.
    Resource = 4, "resource", ResourcePerm {
        AddIomem = 0, "add_iomem";
        AddIrq = 1, "add_irq";
        Use = 2, "use";
    }
    /// I/O request servers (device models).
    Ioreq = 5, "ioreq", IoreqPerm {
        Register = 0, "register";
        Map = 1, "map";
        Complete = 2, "complete";
    }
    /// The hypervisor console.
    Console = 6, "console", ConsolePerm {
        Write = 0, "write";
        Read = 1, "read";
    }
    /// The configuration store (xenstore), enforced by the store domain.
    Store = 7, "store", StorePerm {
        Read = 0, "read";
        Write = 1, "write";
        Watch = 2, "watch";
        Introduce = 3, "introduce";
    }
    /// Virtual TPMs, enforced by the vTPM domain.
    Vtpm = 8, "vtpm", VtpmPerm {
        Create = 0, "create";
        Destroy = 1, "destroy";
        Connect = 2, "connect";
        Command = 3, "command";
    }
}

/// One permission of one class. Built only from a class's own permission
/// enum, so a permission can never be checked against the wrong class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    class: Class,
    bit: u8,
}

impl Perm {
    /// The class this permission belongs to.
    #[inline(always)]
    pub const fn class(self) -> Class {
        self.class
    }

    /// The permission's bit number within its class (0..32).
    #[inline(always)]
    pub const fn bit(self) -> u8 {
        self.bit
    }

    /// The permission as a one-bit access vector.
    #[inline(always)]
    pub const fn mask(self) -> u32 {
        // Bits are literals below 32 in the table above; the `& 31` keeps
        // the shift defined without a branch on the AVC's hot path.
        1u32 << (self.bit & 31)
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_numbers_round_trip_and_unknown_is_an_error() {
        for &c in Class::ALL {
            assert_eq!(Class::try_from(c as u16), Ok(c));
            assert_eq!(Class::from_name(c.name()), Some(c));
        }
        assert_eq!(Class::try_from(9), Err(UnknownClass(9)));
        assert_eq!(Class::try_from(u16::MAX), Err(UnknownClass(u16::MAX)));
        assert_eq!(Class::from_name("evnt"), None);
    }

    #[test]
    fn perm_bits_round_trip_within_their_class() {
        for &c in Class::ALL {
            for bit in 0..32u8 {
                let defined = c.defined_bits() & (1 << bit) != 0;
                match Perm::from_bit(c, bit) {
                    Ok(p) => {
                        assert!(defined);
                        assert_eq!(p.class(), c);
                        assert_eq!(p.mask(), 1 << bit);
                        assert_eq!(Perm::from_name(c, p.name()), Some(p));
                    }
                    Err(e) => {
                        assert!(!defined);
                        assert_eq!(e, UnknownPerm { class: c, bit });
                    }
                }
            }
        }
        assert_eq!(
            EventPerm::try_from(5),
            Err(UnknownPerm {
                class: Class::Event,
                bit: 5
            })
        );
        assert_eq!(Perm::from_name(Class::Event, "sned"), None);
        assert_eq!(Perm::from(EventPerm::Send).to_string(), "send");
    }
}
