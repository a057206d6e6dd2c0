//! Typed wrappers for the Xen ops a PV-aware domain needs beyond the basics:
//! `event_channel_op` (32), `memory_op` (12) `XENMEM_add_to_physmap`,
//! `vcpu_op` (24) `VCPUOP_register_vcpu_info` and `hvm_op` (34)
//! `HVMOP_get_param` (docs/03-event-channels-and-sharing.md).
//!
//! The one idea: every wrapper builds the Xen structure on its own stack,
//! passes a pointer to it (guest virtual = IPA under the runtime's identity
//! map) and turns x0 into a `Result`, so callers never see a raw return value
//! or a structure the hypervisor may still be writing. Tests that must pass
//! bad pointers or unknown numbers use `hypercall::hypercall` directly.

use core::fmt;
use tessera_ipc::errno::Errno;
use tessera_ipc::event_channel::{EvtchnStatus, EvtchnStatusKind};

/// A failed hypercall: a known Xen errno, or a return value outside the ABI
/// (which is itself a hypervisor bug worth reporting as such).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallError {
    Errno(Errno),
    /// Negative, but not an errno the ABI defines.
    Unknown(i64),
}

impl HypercallError {
    /// The error a raw x0 carries, if it is negative.
    pub fn from_ret(ret: u64) -> Option<Self> {
        let signed = ret as i64;
        if signed >= 0 {
            return None;
        }
        Some(match Errno::from_ret(ret) {
            Some(e) => HypercallError::Errno(e),
            None => HypercallError::Unknown(signed),
        })
    }

    /// The raw x0 value, for comparisons and messages.
    pub fn to_ret(self) -> u64 {
        match self {
            HypercallError::Errno(e) => e.to_ret(),
            HypercallError::Unknown(v) => v as u64,
        }
    }

    /// Whether this is exactly `errno`.
    pub fn is(self, errno: Errno) -> bool {
        self == HypercallError::Errno(errno)
    }
}

impl From<Errno> for HypercallError {
    fn from(e: Errno) -> Self {
        HypercallError::Errno(e)
    }
}

impl fmt::Display for HypercallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HypercallError::Errno(e) => write!(f, "-{:?}({})", e, *e as u32),
            HypercallError::Unknown(v) => write!(f, "{v} (not an ABI errno)"),
        }
    }
}

/// x0 as a result: non-negative values are success.
pub fn check(ret: u64) -> Result<u64, HypercallError> {
    match HypercallError::from_ret(ret) {
        Some(e) => Err(e),
        None => Ok(ret),
    }
}

/// What `EVTCHNOP_status` says a port is connected to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    Closed,
    /// Waiting for domain `remote` to bind.
    Unbound {
        remote: u16,
    },
    /// Connected to `port` of domain `remote`.
    Interdomain {
        remote: u16,
        port: u32,
    },
    Pirq {
        pirq: u32,
    },
    Virq {
        virq: u32,
    },
    Ipi,
}

/// A decoded `evtchn_status`: the state and the vCPU the port notifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortStatus {
    pub state: PortState,
    pub vcpu: u32,
}

impl PortStatus {
    /// Decodes the OUT fields; `None` for a status value outside the ABI.
    /// The union is Xen's: `unbound.dom` and `interdomain.dom` are the low 16
    /// bits of `u0`, `interdomain.port` is `u1`, `pirq`/`virq` are `u0`.
    pub fn decode(raw: &EvtchnStatus) -> Option<Self> {
        let dom = raw.u0.get() as u16;
        let state = match EvtchnStatusKind::try_from(u64::from(raw.status.get())).ok()? {
            EvtchnStatusKind::Closed => PortState::Closed,
            EvtchnStatusKind::Unbound => PortState::Unbound { remote: dom },
            EvtchnStatusKind::Interdomain => PortState::Interdomain {
                remote: dom,
                port: raw.u1.get(),
            },
            EvtchnStatusKind::Pirq => PortState::Pirq { pirq: raw.u0.get() },
            EvtchnStatusKind::Virq => PortState::Virq { virq: raw.u0.get() },
            EvtchnStatusKind::Ipi => PortState::Ipi,
        };
        Some(Self {
            state,
            vcpu: raw.vcpu.get(),
        })
    }
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use machine::*;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod machine {
    use super::{check, HypercallError, PortStatus};
    use crate::hypercall::hypercall;
    use tessera_ipc::event_channel::{
        EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVcpu, EvtchnBindVirq,
        EvtchnCmd, EvtchnPort, EvtchnReset, EvtchnStatus, DOMID_SELF,
    };
    use tessera_ipc::hypercall::Op;
    use tessera_ipc::memory::{
        AddToPhysmap, HvmCmd, HvmParam, MapSpace, MemoryCmd, RegisterVcpuInfo, VcpuCmd,
    };

    type Result<T> = core::result::Result<T, HypercallError>;

    /// `op(cmd, &mut arg)`: the hypervisor reads `arg` and writes its OUT
    /// fields back in place. Only called with the `repr(C)` ABI structures
    /// of `tessera_ipc`, which are valid for any bytes written into them.
    fn with_struct<T>(op: Op, cmd: u64, arg: &mut T) -> Result<u64> {
        // SAFETY: `arg` is an owned, writable value of exactly the Xen
        // structure this sub-command reads and writes; nothing else points
        // at it during the call.
        check(unsafe { hypercall(op as u64, cmd, arg as *mut T as u64, 0, 0, 0, 0) })
    }

    fn evtchn<T>(cmd: EvtchnCmd, arg: &mut T) -> Result<()> {
        with_struct(Op::EventChannelOp, cmd as u64, arg).map(drop)
    }

    /// `EVTCHNOP_alloc_unbound`: a port of `dom` (usually `DOMID_SELF`) that
    /// domain `remote` may bind to.
    pub fn alloc_unbound(dom: u16, remote: u16) -> Result<u32> {
        let mut arg = EvtchnAllocUnbound {
            dom: dom.into(),
            remote_dom: remote.into(),
            ..Default::default()
        };
        evtchn(EvtchnCmd::AllocUnbound, &mut arg)?;
        Ok(arg.port.get())
    }

    /// `EVTCHNOP_bind_interdomain`: connects a new local port to
    /// `remote_port` of `remote`, which must be unbound and waiting for us.
    pub fn bind_interdomain(remote: u16, remote_port: u32) -> Result<u32> {
        let mut arg = EvtchnBindInterdomain {
            remote_dom: remote.into(),
            remote_port: remote_port.into(),
            ..Default::default()
        };
        evtchn(EvtchnCmd::BindInterdomain, &mut arg)?;
        Ok(arg.local_port.get())
    }

    /// `EVTCHNOP_bind_virq`.
    pub fn bind_virq(virq: u32, vcpu: u32) -> Result<u32> {
        let mut arg = EvtchnBindVirq {
            virq: virq.into(),
            vcpu: vcpu.into(),
            ..Default::default()
        };
        evtchn(EvtchnCmd::BindVirq, &mut arg)?;
        Ok(arg.port.get())
    }

    /// `EVTCHNOP_bind_ipi`: a port that notifies our own vCPU `vcpu`.
    pub fn bind_ipi(vcpu: u32) -> Result<u32> {
        let mut arg = EvtchnBindIpi {
            vcpu: vcpu.into(),
            ..Default::default()
        };
        evtchn(EvtchnCmd::BindIpi, &mut arg)?;
        Ok(arg.port.get())
    }

    fn on_port(cmd: EvtchnCmd, port: u32) -> Result<()> {
        let mut arg = EvtchnPort { port: port.into() };
        evtchn(cmd, &mut arg)
    }

    /// `EVTCHNOP_send`: notify the other end of `port`.
    pub fn send(port: u32) -> Result<()> {
        on_port(EvtchnCmd::Send, port)
    }

    /// `EVTCHNOP_close`.
    pub fn close(port: u32) -> Result<()> {
        on_port(EvtchnCmd::Close, port)
    }

    /// `EVTCHNOP_unmask`: clears the mask bit and re-raises the port if it
    /// is pending (clearing the bit in `shared_info` alone would not).
    pub fn unmask(port: u32) -> Result<()> {
        on_port(EvtchnCmd::Unmask, port)
    }

    /// `EVTCHNOP_bind_vcpu`: `port` notifies `vcpu` from now on.
    pub fn bind_vcpu(port: u32, vcpu: u32) -> Result<()> {
        let mut arg = EvtchnBindVcpu {
            port: port.into(),
            vcpu: vcpu.into(),
        };
        evtchn(EvtchnCmd::BindVcpu, &mut arg)
    }

    /// `EVTCHNOP_status` of `port` in domain `dom` (usually `DOMID_SELF`).
    pub fn status(dom: u16, port: u32) -> Result<PortStatus> {
        let mut arg = EvtchnStatus {
            dom: dom.into(),
            port: port.into(),
            ..Default::default()
        };
        evtchn(EvtchnCmd::Status, &mut arg)?;
        // A status value outside the ABI is the hypervisor's bug; report
        // the raw value rather than guess.
        PortStatus::decode(&arg).ok_or(HypercallError::Unknown(i64::from(arg.status.get())))
    }

    /// `EVTCHNOP_reset`: closes every port of `dom`.
    pub fn reset(dom: u16) -> Result<()> {
        let mut arg = EvtchnReset { dom: dom.into() };
        evtchn(EvtchnCmd::Reset, &mut arg)
    }

    /// `XENMEM_add_to_physmap` for the caller (`DOMID_SELF`): object `idx`
    /// of `space` appears at guest frame `gpfn`.
    pub fn add_to_physmap(space: MapSpace, idx: u64, gpfn: u64) -> Result<()> {
        let mut arg = AddToPhysmap {
            domid: DOMID_SELF.into(),
            size: 0.into(),
            space: (space as u32).into(),
            idx: idx.into(),
            gpfn: gpfn.into(),
        };
        with_struct(Op::MemoryOp, MemoryCmd::AddToPhysmap as u64, &mut arg).map(drop)
    }

    /// `VCPUOP_register_vcpu_info`: `vcpu`'s `vcpu_info` lives at byte
    /// `offset` of guest frame `gfn` from now on.
    pub fn register_vcpu_info(vcpu: u32, gfn: u64, offset: u32) -> Result<()> {
        let mut arg = RegisterVcpuInfo {
            mfn: gfn.into(),
            offset: offset.into(),
            rsvd: 0.into(),
        };
        // SAFETY: `arg` is an owned `vcpu_register_vcpu_info`, which the
        // hypervisor only reads; the frame it names is the caller's concern
        // (see `events::register_vcpu_info`).
        check(unsafe {
            hypercall(
                Op::VcpuOp as u64,
                VcpuCmd::RegisterVcpuInfo as u64,
                u64::from(vcpu),
                &mut arg as *mut RegisterVcpuInfo as u64,
                0,
                0,
                0,
            )
        })
        .map(drop)
    }

    /// `HVMOP_get_param` for the caller: 0 for a parameter not set.
    pub fn hvm_get_param(index: u32) -> Result<u64> {
        let mut arg = HvmParam {
            domid: DOMID_SELF.into(),
            index: index.into(),
            ..Default::default()
        };
        with_struct(Op::HvmOp, HvmCmd::GetParam as u64, &mut arg)?;
        Ok(arg.value.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_decode_from_x0() {
        assert_eq!(check(0), Ok(0));
        assert_eq!(check(7), Ok(7));
        assert_eq!(
            check(Errno::Einval.to_ret()),
            Err(HypercallError::Errno(Errno::Einval))
        );
        assert_eq!(check(-4i64 as u64), Err(HypercallError::Unknown(-4)));
        assert!(HypercallError::from(Errno::Eacces).is(Errno::Eacces));
        assert_eq!(
            HypercallError::Errno(Errno::Enosys).to_ret(),
            Errno::Enosys.to_ret()
        );
        assert_eq!(HypercallError::Unknown(-5).to_ret(), -5i64 as u64);
        assert_eq!(
            format!("{}", HypercallError::Errno(Errno::Efault)),
            "-Efault(14)"
        );
    }

    fn raw(status: u32, vcpu: u32, u0: u32, u1: u32) -> EvtchnStatus {
        EvtchnStatus {
            status: status.into(),
            vcpu: vcpu.into(),
            u0: u0.into(),
            u1: u1.into(),
            ..Default::default()
        }
    }

    #[test]
    fn status_decodes_xens_union() {
        let s = |status, u0, u1| PortStatus::decode(&raw(status, 1, u0, u1)).map(|s| s.state);
        assert_eq!(s(0, 0, 0), Some(PortState::Closed));
        // Only the low 16 bits of u0 are the domid (the rest is padding).
        assert_eq!(s(1, 0xdead_0003, 0), Some(PortState::Unbound { remote: 3 }));
        assert_eq!(
            s(2, 4, 17),
            Some(PortState::Interdomain {
                remote: 4,
                port: 17
            })
        );
        assert_eq!(s(3, 9, 0), Some(PortState::Pirq { pirq: 9 }));
        assert_eq!(s(4, 2, 0), Some(PortState::Virq { virq: 2 }));
        assert_eq!(s(5, 0, 0), Some(PortState::Ipi));
        assert_eq!(s(6, 0, 0), None, "status values end at ipi");
        assert_eq!(
            PortStatus::decode(&raw(5, 3, 0, 0)).map(|s| s.vcpu),
            Some(3)
        );
    }
}
