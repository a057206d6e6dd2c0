//! Hypercall numbers and argument structures.
//!
//! A hypercall is `hvc #0xEA1` with the op in x16, arguments in x0..x5 and the
//! result in x0, exactly as Xen does it on Arm (`xen/include/public/arch-arm.h`).
//! `hvc #0` is reserved for SMCCC calls (PSCI). Ops below `TESSERA_OP_BASE`
//! carry Xen's numbers (`xen/include/public/xen.h`); Tessera-native control ops
//! live at and above it. Pointer arguments are guest virtual addresses, as in Xen.

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The HVC immediate that marks a Xen-style hypercall.
pub const HVC_IMM_HYPERCALL: u16 = 0xEA1;
/// The HVC immediate for SMCCC (PSCI) calls.
pub const HVC_IMM_SMCCC: u16 = 0;
/// First Tessera-native op number.
pub const TESSERA_OP_BASE: u64 = 0x1000;

crate::abi_enum! {
    /// Top-level hypercall op, read from x16.
    pub enum Op: u64 {
        MemoryOp = 12,
        XenVersion = 17,
        ConsoleIo = 18,
        GrantTableOp = 20,
        VcpuOp = 24,
        SchedOp = 29,
        EventChannelOp = 32,
        HvmOp = 34,
        /// Tessera-native: IOREQ server control (`crate::ioreq`).
        Ioreq = 0x1001,
        /// Tessera-native: domain control (`crate::control`).
        Control = 0x1002,
    }
}

crate::abi_enum! {
    /// `xen_version` sub-commands (`xen/include/public/version.h`).
    pub enum XenVersionCmd: u64 {
        Version = 0,
        ExtraVersion = 1,
        Capabilities = 3,
        GetFeatures = 6,
        PageSize = 7,
    }
}

/// The version we present: Xen 4.17, so Linux's Xen drivers accept us.
pub const XEN_VERSION_MAJOR: u64 = 4;
/// Minor half of the presented Xen version.
pub const XEN_VERSION_MINOR: u64 = 17;
/// `XENVER_extraversion` string; the buffer is 16 bytes.
pub const XEN_EXTRAVERSION: &[u8; 16] = b"-tessera\0\0\0\0\0\0\0\0";
/// `XENVER_capabilities` string; the buffer is 1024 bytes, we write only this.
pub const XEN_CAPABILITIES: &[u8] = b"xen-3.0-aarch64 \0";

/// `xen_feature_info` for `XENVER_get_features`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XenFeatureInfo {
    pub submap_idx: U32,
    pub submap: U32,
}
const _: () = assert!(core::mem::size_of::<XenFeatureInfo>() == 8);

/// `XENFEAT_auto_translated_physmap` (`xen/include/public/features.h`):
/// guests use guest-physical frame numbers everywhere (always true on Arm;
/// without it Linux takes a grant-mapping path that does not work on Arm).
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
/// `XENFEAT_not_direct_mapped`: guest-physical is not host-physical, so
/// Linux keeps swiotlb-xen off.
pub const XENFEAT_NOT_DIRECT_MAPPED: u32 = 16;
/// Submap 0 of `XENVER_get_features`: the features Tessera offers.
pub const XEN_FEATURES_SUBMAP0: u32 =
    (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP) | (1 << XENFEAT_NOT_DIRECT_MAPPED);

crate::abi_enum! {
    /// `console_io` commands.
    pub enum ConsoleIoCmd: u64 {
        Write = 0,
        Read = 1,
    }
}

/// Longest `console_io` write accepted in one call; longer requests are
/// truncated to this and the count written is returned, as Xen does.
pub const CONSOLE_IO_MAX: usize = 1024;

crate::abi_enum! {
    /// `sched_op` commands (`xen/include/public/sched.h`).
    pub enum SchedCmd: u64 {
        Yield = 0,
        Block = 1,
        Shutdown = 2,
    }
}

crate::abi_enum! {
    /// `sched_shutdown.reason`.
    pub enum ShutdownReason: u32 {
        Poweroff = 0,
        Reboot = 1,
        Suspend = 2,
        Crash = 3,
        Watchdog = 4,
    }
}

/// Argument of `SCHEDOP_shutdown`, passed by pointer.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SchedShutdown {
    pub reason: U32,
}
const _: () = assert!(core::mem::size_of::<SchedShutdown>() == 4);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_numbers_are_errors() {
        assert_eq!(Op::try_from(0), Err(0));
        assert_eq!(
            Op::try_from(TESSERA_OP_BASE + 0xfff),
            Err(TESSERA_OP_BASE + 0xfff)
        );
        assert_eq!(Op::try_from(17), Ok(Op::XenVersion));
        assert_eq!(SchedCmd::try_from(99), Err(99));
        assert_eq!(ShutdownReason::try_from(3), Ok(ShutdownReason::Crash));
    }
}
