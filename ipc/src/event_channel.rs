//! `event_channel_op` (hypercall 32): sub-commands, argument structures and
//! the 2-level `shared_info`/`vcpu_info` layout, as in Xen's
//! `xen/include/public/event_channel.h` and `xen.h` (arm64, little-endian).
//!
//! Every structure is passed by guest pointer in x1; the kernel copies it in,
//! acts, and copies the OUT fields back. Layouts are asserted at compile time.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The 2-level ABI's port space (64 words of 64 bits).
pub const NR_2L_PORTS: u32 = 4096;
/// Ports per domain in Tessera: 0 (reserved, never bound) to
/// `MAX_PORTS - 1`. The 2-level ABI allows `NR_2L_PORTS`; Tessera's port
/// tables are static, so they are sized for what partitions use. A guest
/// sees this as the end of its port space (a higher port is `-EINVAL`), and
/// a system description's static ports must lie below it.
pub const MAX_PORTS: usize = 1024;
const _: () = assert!(MAX_PORTS <= NR_2L_PORTS as usize);
/// `DOMID_SELF`: "the calling domain" wherever a domid is expected.
pub const DOMID_SELF: u16 = 0x7FF0;

crate::abi_enum! {
    /// `event_channel_op` sub-command, read from x0.
    pub enum EvtchnCmd: u64 {
        BindInterdomain = 0,
        BindVirq = 1,
        Close = 3,
        Send = 4,
        Status = 5,
        AllocUnbound = 6,
        BindIpi = 7,
        BindVcpu = 8,
        Unmask = 9,
        Reset = 10,
        /// FIFO ABI set-up: not offered, so Linux falls back to 2-level.
        InitControl = 11,
    }
}

crate::abi_enum! {
    /// `evtchn_status.status`.
    pub enum EvtchnStatusKind: u32 {
        Closed = 0,
        Unbound = 1,
        Interdomain = 2,
        Pirq = 3,
        Virq = 4,
        Ipi = 5,
    }
}

/// `EVTCHNOP_alloc_unbound`: IN `dom`, `remote_dom`; OUT `port`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnAllocUnbound {
    pub dom: U16,
    pub remote_dom: U16,
    pub port: U32,
}

/// `EVTCHNOP_bind_interdomain`: IN `remote_dom`, `remote_port`; OUT `local_port`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindInterdomain {
    pub remote_dom: U16,
    pub _pad: U16,
    pub remote_port: U32,
    pub local_port: U32,
}

/// `EVTCHNOP_bind_virq`: IN `virq`, `vcpu`; OUT `port`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindVirq {
    pub virq: U32,
    pub vcpu: U32,
    pub port: U32,
}

/// `EVTCHNOP_bind_ipi`: IN `vcpu`; OUT `port`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindIpi {
    pub vcpu: U32,
    pub port: U32,
}

/// `EVTCHNOP_send`, `EVTCHNOP_close` and `EVTCHNOP_unmask`: IN `port`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnPort {
    pub port: U32,
}

/// `EVTCHNOP_bind_vcpu`: IN `port`, `vcpu`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnBindVcpu {
    pub port: U32,
    pub vcpu: U32,
}

/// `EVTCHNOP_status`: IN `dom`, `port`; OUT the rest. `u0`/`u1` hold the
/// union: unbound `{dom}`, interdomain `{dom, port}`, virq `{virq}`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnStatus {
    pub dom: U16,
    pub _pad: U16,
    pub port: U32,
    pub status: U32,
    pub vcpu: U32,
    pub u0: U32,
    pub u1: U32,
}

/// `EVTCHNOP_reset`: IN `dom`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct EvtchnReset {
    pub dom: U16,
}

const _: () = {
    assert!(core::mem::size_of::<EvtchnAllocUnbound>() == 8);
    assert!(core::mem::size_of::<EvtchnBindInterdomain>() == 12);
    assert!(core::mem::size_of::<EvtchnBindVirq>() == 12);
    assert!(core::mem::size_of::<EvtchnBindIpi>() == 8);
    assert!(core::mem::size_of::<EvtchnPort>() == 4);
    assert!(core::mem::size_of::<EvtchnBindVcpu>() == 8);
    assert!(core::mem::size_of::<EvtchnStatus>() == 24);
};

/// Byte offsets inside `shared_info` (1088 bytes on arm64).
pub mod shared_info {
    /// `vcpu_info[0]`: vCPU 0's until it registers its own.
    pub const VCPU_INFO0: usize = 0;
    /// `evtchn_pending[64]`, one bit per port.
    pub const EVTCHN_PENDING: usize = 48;
    /// `evtchn_mask[64]`, one bit per port.
    pub const EVTCHN_MASK: usize = 560;
    /// `wc_version`.
    pub const WC_VERSION: usize = 1072;
    /// Size of the structure.
    pub const SIZE: usize = 1088;
}

/// Byte offsets inside `vcpu_info` (48 bytes on arm64).
pub mod vcpu_info {
    /// `evtchn_upcall_pending`, a byte.
    pub const UPCALL_PENDING: usize = 0;
    /// `evtchn_pending_sel`, one bit per 64-port word.
    pub const PENDING_SEL: usize = 8;
    /// `vcpu_time_info`.
    pub const TIME: usize = 16;
    /// Size of the structure.
    pub const SIZE: usize = 48;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_unknown_ones_fail() {
        for &c in EvtchnCmd::ALL {
            assert_eq!(EvtchnCmd::try_from(c as u64), Ok(c));
        }
        assert_eq!(EvtchnCmd::try_from(2), Err(2), "bind_pirq is not offered");
        assert_eq!(EvtchnCmd::try_from(12), Err(12));
    }

    #[test]
    fn layouts_match_xen() {
        let s = EvtchnBindInterdomain {
            remote_dom: 3.into(),
            remote_port: 7.into(),
            local_port: 9.into(),
            ..Default::default()
        };
        let b = s.as_bytes();
        assert_eq!(&b[0..2], &[3, 0]);
        assert_eq!(&b[4..8], &[7, 0, 0, 0]);
        assert_eq!(&b[8..12], &[9, 0, 0, 0]);
        assert_eq!(shared_info::EVTCHN_MASK - shared_info::EVTCHN_PENDING, 512);
        assert_eq!(vcpu_info::SIZE, 48);
    }
}
