//! Hypercall decoding: guest registers in, a checked [`Call`] out.
//!
//! This is the seL4-style "decode" half. It looks only at register values:
//! op numbers and sub-commands become enums (an unknown number is `-ENOSYS`),
//! and pointer arguments become typed [`GuestVa`]s. Whether a pointer is
//! backed by the caller's memory is checked later, when the value is copied
//! in, so decoding never touches guest memory and cannot fault.

use crate::addr::GuestVa;
use tessera_ipc::errno::Errno;
use tessera_ipc::event_channel::EvtchnCmd;
use tessera_ipc::hypercall::{ConsoleIoCmd, Op, SchedCmd, XenVersionCmd, CONSOLE_IO_MAX};
use tessera_ipc::ioreq::{
    IoreqCmd, RANGE_FLAGS, RANGE_POSTED_WRITES, RANGE_SHADOWED_READS, SLOTS_PER_PAGE,
    WAIT_NOTHING_DONE,
};
use tessera_ipc::memory::{HvmCmd, MemoryCmd, VcpuCmd};
use tessera_ipc::psci::Function;

/// A decoded Xen-style hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    XenVersion {
        cmd: XenVersionCmd,
        arg: GuestVa,
    },
    ConsoleWrite {
        buf: GuestVa,
        len: usize,
    },
    ConsoleRead {
        buf: GuestVa,
        len: usize,
    },
    SchedYield,
    SchedBlock,
    SchedShutdown {
        arg: GuestVa,
    },
    EventChannel {
        cmd: EvtchnCmd,
        arg: GuestVa,
    },
    Memory {
        cmd: MemoryCmd,
        arg: GuestVa,
    },
    Vcpu {
        cmd: VcpuCmd,
        vcpu: u32,
        arg: GuestVa,
    },
    Hvm {
        cmd: HvmCmd,
        arg: GuestVa,
    },
    /// `grant_table_op`: `count` structures at `arg`.
    GrantTable {
        cmd: u64,
        arg: GuestVa,
        count: u32,
    },
    /// A Tessera-native IOREQ control call.
    Ioreq(IoreqCall),
    /// A Tessera-native domain-control call (`crate::control`).
    Control(crate::control::ControlCall),
}

/// An IOREQ control call with its register arguments range-checked (the
/// kernel still checks them against the domains and the policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoreqCall {
    /// `fast`: the page for the domain's `FastPage`, if any.
    Register {
        dom: u16,
        page: u64,
        fast: Option<u64>,
    },
    /// `posted`: the range's small writes are posted (`RANGE_POSTED_WRITES`).
    MapRange {
        dom: u16,
        base: u64,
        size: u64,
        posted: bool,
        /// Reads look at the fast page's shadows (`RANGE_SHADOWED_READS`).
        shadowed: bool,
    },
    MapMemory {
        dom: u16,
        ipa: u64,
    },
    Complete {
        dom: u16,
        vcpu: usize,
    },
    SetIrqLevel {
        dom: u16,
        intid: u32,
        level: bool,
    },
    ConsoleWrite {
        dom: u16,
        buf: GuestVa,
        len: usize,
    },
    ConsoleRead {
        dom: u16,
        buf: GuestVa,
        len: usize,
    },
    /// Complete `vcpu`'s slot of `dom` if there is one, then wait.
    Wait {
        dom: u16,
        vcpu: Option<usize>,
    },
    /// The caller serves `dom` from now on: a held domain may start.
    Ready {
        dom: u16,
    },
}

/// Largest MMIO range one `MapRange` may claim.
pub const IOREQ_MAX_RANGE: u64 = 1 << 30;
/// `MapMemory` places RAM on 2 MiB boundaries (block mappings).
pub const IOREQ_MAP_ALIGN: u64 = 2 << 20;

fn decode_ioreq(args: &[u64; 6]) -> Result<IoreqCall, Errno> {
    let cmd = IoreqCmd::try_from(args[0]).map_err(|_| Errno::Enosys)?;
    let dom = u16::try_from(args[1]).map_err(|_| Errno::Einval)?;
    match cmd {
        IoreqCmd::Register
            if args[2].is_multiple_of(4096)
                && args[3].is_multiple_of(4096)
                && args[3] != args[2] =>
        {
            Ok(IoreqCall::Register {
                dom,
                page: args[2],
                fast: (args[3] != 0).then_some(args[3]),
            })
        }
        IoreqCmd::MapRange
            if args[3] > 0
                && args[3] <= IOREQ_MAX_RANGE
                && args[2].checked_add(args[3]).is_some()
                && args[4] & !RANGE_FLAGS == 0 =>
        {
            Ok(IoreqCall::MapRange {
                dom,
                base: args[2],
                size: args[3],
                posted: args[4] & RANGE_POSTED_WRITES != 0,
                shadowed: args[4] & RANGE_SHADOWED_READS != 0,
            })
        }
        IoreqCmd::MapMemory if args[2].is_multiple_of(IOREQ_MAP_ALIGN) => {
            Ok(IoreqCall::MapMemory { dom, ipa: args[2] })
        }
        IoreqCmd::Complete if args[2] < SLOTS_PER_PAGE as u64 => Ok(IoreqCall::Complete {
            dom,
            vcpu: args[2] as usize,
        }),
        IoreqCmd::Wait if args[2] == WAIT_NOTHING_DONE => Ok(IoreqCall::Wait { dom, vcpu: None }),
        IoreqCmd::Wait if args[2] < SLOTS_PER_PAGE as u64 => Ok(IoreqCall::Wait {
            dom,
            vcpu: Some(args[2] as usize),
        }),
        IoreqCmd::SetIrqLevel if (32..1020).contains(&args[2]) && args[3] <= 1 => {
            Ok(IoreqCall::SetIrqLevel {
                dom,
                intid: args[2] as u32,
                level: args[3] == 1,
            })
        }
        IoreqCmd::ConsoleWrite => Ok(IoreqCall::ConsoleWrite {
            dom,
            buf: GuestVa(args[2]),
            len: args[3].min(CONSOLE_IO_MAX as u64) as usize,
        }),
        IoreqCmd::Ready => Ok(IoreqCall::Ready { dom }),
        IoreqCmd::ConsoleRead => Ok(IoreqCall::ConsoleRead {
            dom,
            buf: GuestVa(args[2]),
            len: args[3].min(CONSOLE_IO_MAX as u64) as usize,
        }),
        _ => Err(Errno::Einval),
    }
}

/// Decode `op` (x16) and `args` (x0..x5).
pub fn decode(op: u64, args: &[u64; 6]) -> Result<Call, Errno> {
    let op = Op::try_from(op).map_err(|_| Errno::Enosys)?;
    match op {
        Op::XenVersion => {
            let cmd = XenVersionCmd::try_from(args[0]).map_err(|_| Errno::Enosys)?;
            Ok(Call::XenVersion {
                cmd,
                arg: GuestVa(args[1]),
            })
        }
        Op::ConsoleIo => {
            let cmd = ConsoleIoCmd::try_from(args[0]).map_err(|_| Errno::Enosys)?;
            // Xen passes the count as an int; clamp instead of failing, and
            // report how much was taken.
            let len = usize::try_from(args[1] & 0xffff_ffff)
                .unwrap_or(CONSOLE_IO_MAX)
                .min(CONSOLE_IO_MAX);
            let buf = GuestVa(args[2]);
            Ok(match cmd {
                ConsoleIoCmd::Write => Call::ConsoleWrite { buf, len },
                ConsoleIoCmd::Read => Call::ConsoleRead { buf, len },
            })
        }
        Op::SchedOp => match SchedCmd::try_from(args[0]).map_err(|_| Errno::Enosys)? {
            SchedCmd::Yield => Ok(Call::SchedYield),
            SchedCmd::Block => Ok(Call::SchedBlock),
            SchedCmd::Shutdown => Ok(Call::SchedShutdown {
                arg: GuestVa(args[1]),
            }),
        },
        Op::EventChannelOp => Ok(Call::EventChannel {
            cmd: EvtchnCmd::try_from(args[0]).map_err(|_| Errno::Enosys)?,
            arg: GuestVa(args[1]),
        }),
        Op::MemoryOp => Ok(Call::Memory {
            // Xen keeps extent-order bits above the command in x0.
            cmd: MemoryCmd::try_from(args[0] & 0xf).map_err(|_| Errno::Enosys)?,
            arg: GuestVa(args[1]),
        }),
        Op::VcpuOp => Ok(Call::Vcpu {
            cmd: VcpuCmd::try_from(args[0]).map_err(|_| Errno::Enosys)?,
            vcpu: u32::try_from(args[1]).map_err(|_| Errno::Einval)?,
            arg: GuestVa(args[2]),
        }),
        Op::HvmOp => Ok(Call::Hvm {
            cmd: HvmCmd::try_from(args[0]).map_err(|_| Errno::Enosys)?,
            arg: GuestVa(args[1]),
        }),
        Op::GrantTableOp => Ok(Call::GrantTable {
            cmd: args[0],
            arg: GuestVa(args[1]),
            count: u32::try_from(args[2]).map_err(|_| Errno::Einval)?,
        }),
        Op::Ioreq => decode_ioreq(args).map(Call::Ioreq),
        Op::Control => crate::control::decode(args).map(Call::Control),
    }
}

/// The answer to a "leaf" hypercall, one whose result is a constant of the
/// ABI (no guest memory, no kernel state), so the trap path can reply
/// without the general decode. `None` for everything else.
#[inline(always)]
pub fn leaf_result(op: u64, arg0: u64) -> Option<u64> {
    const XEN_VERSION: u64 = Op::XenVersion as u64;
    match (op, XenVersionCmd::try_from(arg0)) {
        (XEN_VERSION, Ok(XenVersionCmd::Version)) => Some(
            (tessera_ipc::hypercall::XEN_VERSION_MAJOR << 16)
                | tessera_ipc::hypercall::XEN_VERSION_MINOR,
        ),
        (XEN_VERSION, Ok(XenVersionCmd::PageSize)) => Some(crate::addr::PAGE_SIZE),
        _ => None,
    }
}

/// Whether `op`/`arg0` is `sched_op(SCHEDOP_yield)`, which has no
/// arguments to check and so skips the general decode.
#[inline(always)]
pub fn is_sched_yield(op: u64, arg0: u64) -> bool {
    op == Op::SchedOp as u64 && arg0 == SchedCmd::Yield as u64
}

/// A decoded PSCI / SMCCC call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciCall {
    Version,
    SmcccVersion,
    Features {
        function: u64,
    },
    MigrateInfoType,
    CpuOn {
        target: u64,
        entry: u64,
        context: u64,
    },
    CpuOff,
    AffinityInfo {
        target: u64,
        level: u64,
    },
    SystemOff,
    SystemReset,
}

/// Decode a PSCI call from x0..x3. `None` for anything not implemented, which
/// the caller answers with NOT_SUPPORTED.
pub fn decode_psci(regs: &[u64; 4]) -> Option<PsciCall> {
    // SMC32 calls pass 32-bit arguments; the upper halves are ignored.
    let is32 = regs[0] & (1 << 30) == 0;
    let arg = |i: usize| if is32 { regs[i] & 0xffff_ffff } else { regs[i] };
    Some(match Function::try_from(regs[0] & 0xffff_ffff).ok()? {
        Function::Version => PsciCall::Version,
        Function::SmcccVersion => PsciCall::SmcccVersion,
        Function::Features => PsciCall::Features {
            function: arg(1) & 0xffff_ffff,
        },
        Function::MigrateInfoType => PsciCall::MigrateInfoType,
        Function::CpuOn32 | Function::CpuOn64 => PsciCall::CpuOn {
            target: arg(1),
            entry: arg(2),
            context: arg(3),
        },
        Function::CpuOff => PsciCall::CpuOff,
        Function::AffinityInfo32 | Function::AffinityInfo64 => PsciCall::AffinityInfo {
            target: arg(1),
            level: arg(2),
        },
        Function::SystemOff => PsciCall::SystemOff,
        Function::SystemReset => PsciCall::SystemReset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioreq_calls_are_range_checked() {
        let op = Op::Ioreq as u64;
        let call = |a: [u64; 6]| decode(op, &a);
        assert_eq!(
            call([0, 2, 0x4010_0000, 0, 0, 0]),
            Ok(Call::Ioreq(IoreqCall::Register {
                dom: 2,
                page: 0x4010_0000,
                fast: None
            }))
        );
        assert_eq!(
            call([0, 2, 0x4010_0000, 0x4010_1000, 0, 0]),
            Ok(Call::Ioreq(IoreqCall::Register {
                dom: 2,
                page: 0x4010_0000,
                fast: Some(0x4010_1000)
            }))
        );
        assert_eq!(call([0, 2, 0x4010_0008, 0, 0, 0]), Err(Errno::Einval));
        assert_eq!(
            call([0, 2, 0x4010_0000, 0x4010_1008, 0, 0]),
            Err(Errno::Einval),
            "unaligned fast page"
        );
        assert_eq!(
            call([0, 2, 0x4010_0000, 0x4010_0000, 0, 0]),
            Err(Errno::Einval),
            "one page for both"
        );
        assert_eq!(
            call([0, 0x1_0000, 0x4010_0000, 0, 0, 0]),
            Err(Errno::Einval)
        );
        assert_eq!(
            call([1, 2, 0x0900_0000, 0, 0, 0]),
            Err(Errno::Einval),
            "empty range"
        );
        assert_eq!(call([1, 2, u64::MAX, 2, 0, 0]), Err(Errno::Einval), "wraps");
        assert_eq!(
            call([1, 2, 0, IOREQ_MAX_RANGE + 1, 0, 0]),
            Err(Errno::Einval)
        );
        assert!(call([1, 2, 0x0900_0000, 0x1000, 0, 0]).is_ok());
        assert_eq!(
            call([1, 2, 0x0900_0000, 0x1000, RANGE_POSTED_WRITES, 0]),
            Ok(Call::Ioreq(IoreqCall::MapRange {
                dom: 2,
                base: 0x0900_0000,
                size: 0x1000,
                posted: true,
                shadowed: false
            }))
        );
        assert_eq!(
            call([1, 2, 0x0900_0000, 0x1000, 4, 0]),
            Err(Errno::Einval),
            "an unknown range flag"
        );
        assert_eq!(
            call([2, 2, 0x8010_0000, 0, 0, 0]),
            Err(Errno::Einval),
            "unaligned"
        );
        assert!(call([2, 2, 0x8020_0000, 0, 0, 0]).is_ok());
        assert_eq!(
            call([3, 2, SLOTS_PER_PAGE as u64, 0, 0, 0]),
            Err(Errno::Einval)
        );
        assert!(call([3, 2, 1, 0, 0, 0]).is_ok());
        assert_eq!(call([4, 2, 31, 0, 0, 0]), Err(Errno::Einval), "a PPI");
        assert_eq!(call([4, 2, 1020, 0, 0, 0]), Err(Errno::Einval));
        assert!(call([4, 2, 33, 1, 0, 0]).is_ok());
        assert_eq!(
            call([4, 2, 33, 2, 0, 0]),
            Err(Errno::Einval),
            "a level is 0 or 1"
        );
        assert!(
            call([5, 2, 0x4000_0000, 99_999, 0, 0]).is_ok(),
            "length clamped"
        );
        assert_eq!(
            call([7, 2, WAIT_NOTHING_DONE, 0, 0, 0]),
            Ok(Call::Ioreq(IoreqCall::Wait { dom: 2, vcpu: None }))
        );
        assert_eq!(
            call([7, 2, 1, 0, 0, 0]),
            Ok(Call::Ioreq(IoreqCall::Wait {
                dom: 2,
                vcpu: Some(1)
            }))
        );
        assert_eq!(
            call([7, 2, SLOTS_PER_PAGE as u64, 0, 0, 0]),
            Err(Errno::Einval),
            "no such slot"
        );
        assert_eq!(
            call([8, 2, 0, 0, 0, 0]),
            Ok(Call::Ioreq(IoreqCall::Ready { dom: 2 }))
        );
        assert_eq!(
            call([8, 0x1_0000, 0, 0, 0, 0]),
            Err(Errno::Einval),
            "Ready names a 16-bit domain id"
        );
        assert_eq!(call([9, 2, 0, 0, 0, 0]), Err(Errno::Enosys));
    }

    #[test]
    fn decodes_known_calls() {
        assert_eq!(
            decode(17, &[0, 0x1000, 0, 0, 0, 0]),
            Ok(Call::XenVersion {
                cmd: XenVersionCmd::Version,
                arg: GuestVa(0x1000)
            })
        );
        assert_eq!(
            decode(18, &[0, 5, 0x4000_0000, 0, 0, 0]),
            Ok(Call::ConsoleWrite {
                buf: GuestVa(0x4000_0000),
                len: 5
            })
        );
        assert_eq!(decode(29, &[0, 0, 0, 0, 0, 0]), Ok(Call::SchedYield));
        assert_eq!(
            decode(29, &[2, 0x42, 0, 0, 0, 0]),
            Ok(Call::SchedShutdown { arg: GuestVa(0x42) })
        );
    }

    #[test]
    fn unknown_numbers_are_enosys() {
        assert_eq!(decode(999, &[0; 6]), Err(Errno::Enosys));
        assert_eq!(decode(0x1fff, &[0; 6]), Err(Errno::Enosys));
        assert_eq!(decode(17, &[2, 0, 0, 0, 0, 0]), Err(Errno::Enosys));
        assert_eq!(decode(18, &[7, 0, 0, 0, 0, 0]), Err(Errno::Enosys));
        assert_eq!(decode(29, &[99, 0, 0, 0, 0, 0]), Err(Errno::Enosys));
        assert_eq!(decode(32, &[2, 0, 0, 0, 0, 0]), Err(Errno::Enosys));
        assert_eq!(decode(32, &[12, 0, 0, 0, 0, 0]), Err(Errno::Enosys));
        assert_eq!(decode(12, &[1, 0, 0, 0, 0, 0]), Err(Errno::Enosys));
        assert_eq!(decode(24, &[0, 0, 0, 0, 0, 0]), Err(Errno::Enosys));
        assert_eq!(decode(34, &[7, 0, 0, 0, 0, 0]), Err(Errno::Enosys));
        assert_eq!(decode(0x1002, &[99, 0, 0, 0, 0, 0]), Err(Errno::Enosys));
        assert_eq!(
            decode(0x1002, &[8, 2, 0, 0, 0, 0]),
            Ok(Call::Control(crate::control::ControlCall::Destroy {
                dom: 2
            }))
        );
    }

    #[test]
    fn decodes_xen_event_and_memory_calls() {
        assert_eq!(
            decode(32, &[4, 0x4000_1000, 0, 0, 0, 0]),
            Ok(Call::EventChannel {
                cmd: EvtchnCmd::Send,
                arg: GuestVa(0x4000_1000)
            })
        );
        assert_eq!(
            decode(12, &[7, 0x10, 0, 0, 0, 0]),
            Ok(Call::Memory {
                cmd: MemoryCmd::AddToPhysmap,
                arg: GuestVa(0x10)
            })
        );
        assert_eq!(
            decode(24, &[10, 1, 0x20, 0, 0, 0]),
            Ok(Call::Vcpu {
                cmd: VcpuCmd::RegisterVcpuInfo,
                vcpu: 1,
                arg: GuestVa(0x20)
            })
        );
        assert_eq!(
            decode(24, &[10, 1 << 32, 0x20, 0, 0, 0]),
            Err(Errno::Einval)
        );
        assert_eq!(
            decode(20, &[0, 0x30, 2, 0, 0, 0]),
            Ok(Call::GrantTable {
                cmd: 0,
                arg: GuestVa(0x30),
                count: 2
            })
        );
        assert_eq!(
            decode(20, &[0, 0x30, u64::MAX, 0, 0, 0]),
            Err(Errno::Einval)
        );
    }

    #[test]
    fn console_count_is_clamped() {
        assert_eq!(
            decode(18, &[0, u64::MAX, 8, 0, 0, 0]),
            Ok(Call::ConsoleWrite {
                buf: GuestVa(8),
                len: CONSOLE_IO_MAX
            })
        );
    }

    #[test]
    fn leaf_calls_answer_constants_only() {
        assert_eq!(leaf_result(17, 0), Some((4 << 16) | 17));
        assert_eq!(leaf_result(17, 7), Some(4096));
        assert_eq!(leaf_result(17, 1), None, "extraversion writes guest memory");
        assert_eq!(leaf_result(29, 0), None);
        assert_eq!(leaf_result(999, 0), None);
        assert!(is_sched_yield(29, 0));
        assert!(!is_sched_yield(29, 1));
        assert!(!is_sched_yield(17, 0));
    }

    #[test]
    fn decodes_psci() {
        assert_eq!(
            decode_psci(&[0x8400_0000, 0, 0, 0]),
            Some(PsciCall::Version)
        );
        assert_eq!(
            decode_psci(&[0xC400_0003, 1, 0x4000_0000, 7]),
            Some(PsciCall::CpuOn {
                target: 1,
                entry: 0x4000_0000,
                context: 7
            })
        );
        // SMC32 CPU_ON ignores the upper halves.
        assert_eq!(
            decode_psci(&[0x8400_0003, 0xffff_0000_0000_0001, 0x1_4000_0000, 0]),
            Some(PsciCall::CpuOn {
                target: 1,
                entry: 0x4000_0000,
                context: 0
            })
        );
        assert_eq!(decode_psci(&[0x8400_0001, 0, 0, 0]), None);
        assert_eq!(decode_psci(&[0xdead_beef, 0, 0, 0]), None);
    }
}
