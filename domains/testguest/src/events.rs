//! Event-channel tests.
//!
//! - `test=evtchn-local domid=<n>`: one domain exercises every
//!   `event_channel_op` sub-command on its own ports (IPI, VIRQ, loopback
//!   interdomain), `shared_info` placement, `vcpu_info` registration,
//!   masking, and every error path (bad ports, bad pointers, unknown
//!   sub-commands).
//! - `test=evtchn-offer peer=<id> port=<p>` and `test=evtchn-deny peer=<id>
//!   peer_port=<p>`: the policy. The offering domain (a domain builder,
//!   `domB_t`) opens an unbound port for the guest, which the default policy
//!   lets it create; the guest (`domU_t`) may not bind to it (`-EACCES`, and
//!   the kernel logs the denial), and cannot send on ports it does not own
//!   (`-EINVAL`).
//!
//! The one idea: the upcall handler only counts deliveries per port; the
//! test body raises events and compares the counts with what the 2-level
//! protocol promises, with deadlines on the virtual counter so a missing
//! upcall is a FAIL line, not a hang.

use crate::check::{wait_until, TestResult};
use core::sync::atomic::{AtomicU32, Ordering};
use tessera_ipc::event_channel::{EvtchnCmd, DOMID_SELF};
use tessera_ipc::hypercall::Op;
use tessera_ipc::memory::{HvmCmd, HvmParam, MapSpace, MemoryCmd, VcpuCmd, HVM_NR_PARAMS};
use tessera_rt::bootargs::BootArgs;
use tessera_rt::events::{self, SharedInfo, SharedPage, VcpuInfo};
use tessera_rt::hypercall::hypercall;
use tessera_rt::xen::{self, PortState};
use tessera_rt::{cpu, gic, println, timer};

/// Ports the kernel offers per domain (1..=1023 usable).
const MAX_PORTS: u32 = 1024;
const WAIT_MS: u64 = 5000;
/// How long an event that must *not* arrive is given to show up anyway.
const QUIET_US: u64 = 2000;
/// Addresses that are never guest RAM (as in `test=hypercalls`).
const BAD_POINTERS: [u64; 2] = [0x1_0000_0000, 0xffff_ffff_ffff_f000];
/// Sub-command numbers that `event_channel_op` does not offer: bind_pirq,
/// expand_array, and one far outside Xen's range.
const UNKNOWN_EVTCHN_CMDS: [u64; 3] = [2, 12, 99];
/// VIRQ_DEBUG, an ordinary per-vCPU VIRQ nothing else uses.
const VIRQ_DEBUG: u32 = 1;
/// Xen's NR_VIRQS: the first VIRQ number that does not exist.
const NR_VIRQS: u32 = 24;
/// HVM parameters a domain without PV console or xenstore has unset:
/// STORE_PFN, STORE_EVTCHN, CONSOLE_PFN, CONSOLE_EVTCHN.
const UNSET_HVM_PARAMS: [u32; 4] = [1, 2, 17, 18];
/// A page-aligned guest frame with no RAM behind it (inside the windows
/// below RAM), for placement requests that must be refused.
const NOT_RAM_GFN: u64 = 0x2000_0000 >> 12;

static SHARED_INFO_PAGE: SharedPage = SharedPage::new();
static VCPU_INFO_PAGE: SharedPage = SharedPage::new();
/// Where vCPU 0's `vcpu_info` goes: not at the start of the page, so an
/// offset the kernel ignores would show.
const VCPU_INFO_OFFSET: usize = 128;

/// Deliveries per port, counted by the upcall handler.
static DELIVERED: [AtomicU32; MAX_PORTS as usize] =
    [const { AtomicU32::new(0) }; MAX_PORTS as usize];
/// Deliveries of ports outside 1..1024, which must never happen.
static STRAY: AtomicU32 = AtomicU32::new(0);

fn on_port(port: u32) {
    match DELIVERED.get(port as usize) {
        Some(count) if port != 0 => {
            count.fetch_add(1, Ordering::AcqRel);
        }
        _ => {
            STRAY.fetch_add(1, Ordering::AcqRel);
        }
    }
}

fn delivered(port: u32) -> u32 {
    DELIVERED
        .get(port as usize)
        .map_or(0, |c| c.load(Ordering::Acquire))
}

/// GIC up, upcall handler in place and enabled, IRQs unmasked.
fn enable_upcalls() {
    gic::init_distributor();
    gic::init_cpu();
    events::set_handler(Some(on_port));
    events::enable_upcall();
    cpu::irq_enable();
}

/// Waits until `port` has been delivered `count` times in all.
fn wait_delivered(port: u32, count: u32) -> bool {
    wait_until(WAIT_MS, || delivered(port) >= count)
}

/// `event_channel_op` with a raw argument (bad pointers, unknown commands).
fn raw_evtchn(cmd: u64, arg: u64) -> u64 {
    // SAFETY: the argument is either outside RAM (the hypervisor must fail
    // it with -EFAULT) or ignored by an unknown sub-command; nothing of ours
    // is written.
    unsafe { hypercall(Op::EventChannelOp as u64, cmd, arg, 0, 0, 0, 0) }
}

fn raw_op(op: Op, cmd: u64, a1: u64, a2: u64) -> u64 {
    // SAFETY: as for `raw_evtchn`.
    unsafe { hypercall(op as u64, cmd, a1, a2, 0, 0, 0) }
}

/// The domain id the image gives this domain (its position under
/// `/chosen`), from bootargs `domid=<n>`.
fn own_domid(args: &BootArgs<'_>) -> Result<u16, crate::check::Reason> {
    match args.number("domid").map(u16::try_from) {
        Some(Ok(id)) => Ok(id),
        _ => fail!("bootargs need domid=<this domain's id>"),
    }
}

/// `test=evtchn-local`.
pub fn local() -> TestResult {
    let args = BootArgs::new(tessera_rt::bootargs());
    let domid = own_domid(&args)?;
    let step = |what: &str| println!("evtchn-local: {what}");
    errors_before_setup()?;
    step("bad pointers, unknown sub-commands and refused placements rejected");
    let (shared, vcpu) = placement_and_early_events()?;
    step("shared_info placed, vcpu_info registered");
    enable_upcalls();
    let ipi = ipi_delivery(&vcpu)?;
    step("early event and IPIs delivered");
    let (a, b) = loopback(domid)?;
    step("loopback channel works both ways");
    masking(&shared, ipi)?;
    step("masking and unmask behave");
    let virq = statuses_and_binding(ipi, b)?;
    closing(domid, ipi, a, b)?;
    bad_ports()?;
    step("status, binding, close and bad ports behave");
    reset_clears_everything(virq, a)?;
    let stray = STRAY.load(Ordering::Acquire);
    ensure!(stray == 0, "{stray} upcalls named a port outside 1..1023");
    println!(
        "evtchn-local: {} upcall interrupts, ports ipi={ipi} loopback={a}<->{b} virq={virq}",
        events::upcalls()
    );
    Ok(())
}

/// Bad pointers, unknown sub-commands, refused placements and unset HVM
/// parameters, before anything is set up (so none of them can have changed
/// state that the rest of the test relies on).
fn errors_before_setup() -> TestResult {
    for ptr in BAD_POINTERS {
        for cmd in [EvtchnCmd::Send, EvtchnCmd::AllocUnbound, EvtchnCmd::Status] {
            expect_ret!(
                raw_evtchn(cmd as u64, ptr),
                Efault,
                "{cmd:?} with pointer {ptr:#x}"
            );
        }
        expect_ret!(
            raw_op(Op::MemoryOp, MemoryCmd::AddToPhysmap as u64, ptr, 0),
            Efault,
            "add_to_physmap with pointer {ptr:#x}"
        );
        expect_ret!(
            raw_op(Op::VcpuOp, VcpuCmd::RegisterVcpuInfo as u64, 0, ptr),
            Efault,
            "register_vcpu_info with pointer {ptr:#x}"
        );
        expect_ret!(
            raw_op(Op::HvmOp, HvmCmd::GetParam as u64, ptr, 0),
            Efault,
            "get_param with pointer {ptr:#x}"
        );
    }
    let mut scratch = [0u64; 4];
    for cmd in UNKNOWN_EVTCHN_CMDS {
        ensure!(
            EvtchnCmd::try_from(cmd).is_err(),
            "{cmd} became an event_channel_op sub-command"
        );
        expect_ret!(
            raw_evtchn(cmd, scratch.as_mut_ptr() as u64),
            Enosys,
            "event_channel_op sub-command {cmd}"
        );
    }
    // The FIFO ABI is not offered, so Linux falls back to 2-level.
    expect_ret!(
        raw_evtchn(EvtchnCmd::InitControl as u64, scratch.as_mut_ptr() as u64),
        Enosys,
        "EVTCHNOP_init_control"
    );
    // memory_op 1 (decrease_reservation), vcpu_op 0 (initialise) and
    // hvm_op 7: real Xen numbers Tessera does not offer.
    expect_ret!(
        raw_op(Op::MemoryOp, 1, scratch.as_mut_ptr() as u64, 0),
        Enosys,
        "memory_op 1"
    );
    expect_ret!(
        raw_op(Op::VcpuOp, 0, 0, scratch.as_mut_ptr() as u64),
        Enosys,
        "vcpu_op 0"
    );
    expect_ret!(
        raw_op(Op::HvmOp, 7, scratch.as_mut_ptr() as u64, 0),
        Enosys,
        "hvm_op 7"
    );

    for index in UNSET_HVM_PARAMS {
        let value = ok!(xen::hvm_get_param(index), "HVMOP_get_param({index})");
        ensure!(
            value == 0,
            "HVM parameter {index} is {value:#x}, expected unset (0)"
        );
    }
    let mut param = HvmParam {
        domid: DOMID_SELF.into(),
        index: HVM_NR_PARAMS.into(),
        ..Default::default()
    };
    let ret = raw_op(
        Op::HvmOp,
        HvmCmd::GetParam as u64,
        &mut param as *mut _ as u64,
        0,
    );
    ensure!(
        (ret as i64) < 0,
        "HVMOP_get_param({HVM_NR_PARAMS}), past the last parameter, returned {}",
        crate::check::Ret(ret)
    );
    param.index = 2.into();
    param.value = 7.into();
    expect_ret!(
        raw_op(
            Op::HvmOp,
            HvmCmd::SetParam as u64,
            &mut param as *mut _ as u64,
            0
        ),
        Eperm,
        "HVMOP_set_param(2)"
    );

    expect_errno!(
        xen::add_to_physmap(MapSpace::SharedInfo, 0, NOT_RAM_GFN),
        Einval,
        "shared_info placed outside RAM"
    );
    let gfn = VCPU_INFO_PAGE.gfn();
    for (what, gfn, offset) in [
        ("misaligned", gfn, 4),
        ("crossing its page", gfn, 4096 - 40),
        ("outside RAM", NOT_RAM_GFN, 0),
    ] {
        let result = xen::register_vcpu_info(0, gfn, offset);
        ensure!(
            result.is_err(),
            "register_vcpu_info {what} (gfn {gfn:#x} offset {offset}) succeeded"
        );
    }
    Ok(())
}

/// Binds an IPI and raises it before `shared_info` exists; the event must
/// be held and land on the page when it is placed. Then registers vCPU 0's
/// `vcpu_info` (which must carry the event over with every selector bit set
/// and an upcall raised) and refuses a second registration.
fn placement_and_early_events() -> Result<(SharedInfo, VcpuInfo), crate::check::Reason> {
    let early = ok!(xen::bind_ipi(0), "bind_ipi before shared_info");
    ok!(xen::send(early), "send on port {early} before shared_info");
    // IRQs are still masked: nothing is consumed behind the test's back.
    let shared = ok!(
        events::map_shared_info(&SHARED_INFO_PAGE),
        "add_to_physmap(shared_info)"
    );
    ensure!(
        shared.is_pending(early),
        "port {early}, raised before shared_info was placed, is not pending in it"
    );
    ensure!(
        (0..events::BITMAP_WORDS).all(|w| shared.mask_word(w) == 0),
        "a fresh shared_info has masked ports"
    );
    let vcpu = ok!(
        events::register_vcpu_info(0, &VCPU_INFO_PAGE, VCPU_INFO_OFFSET),
        "register_vcpu_info(vcpu 0)"
    );
    ensure!(
        vcpu.pending_sel() == u64::MAX && vcpu.upcall_pending(),
        "after register_vcpu_info: pending_sel {:#x}, upcall_pending {} (expected all ones, set)",
        vcpu.pending_sel(),
        vcpu.upcall_pending()
    );
    expect_errno!(
        xen::register_vcpu_info(0, VCPU_INFO_PAGE.gfn(), 0),
        Ebusy,
        "second register_vcpu_info"
    );
    // The upcall raised by the registration delivers the early event once
    // IRQs are unmasked; `ipi_delivery` checks it after enabling them.
    EARLY_PORT.store(early, Ordering::Release);
    Ok((shared, vcpu))
}

static EARLY_PORT: AtomicU32 = AtomicU32::new(0);

/// An IPI to ourselves: one send, exactly one delivery, of that port.
fn ipi_delivery(vcpu: &VcpuInfo) -> Result<u32, crate::check::Reason> {
    let early = EARLY_PORT.load(Ordering::Acquire);
    ensure!(
        wait_delivered(early, 1),
        "port {early}, raised before shared_info, never arrived after register_vcpu_info"
    );
    ok!(xen::close(early), "close({early})");

    let ipi = ok!(xen::bind_ipi(0), "bind_ipi(vcpu 0)");
    ensure!(
        (1..MAX_PORTS).contains(&ipi),
        "bind_ipi gave port {ipi}, outside 1..1023"
    );
    // Port numbers are reused (the early port was just closed), so counts
    // are compared with what the port had before.
    let base = delivered(ipi);
    let before = events::upcalls();
    ok!(xen::send(ipi), "send(ipi {ipi})");
    ensure!(
        wait_delivered(ipi, base + 1),
        "no upcall for IPI port {ipi}"
    );
    timer::delay_us(QUIET_US);
    ensure!(
        delivered(ipi) == base + 1,
        "IPI port {ipi} delivered {} times for one send",
        delivered(ipi) - base
    );
    ensure!(
        events::upcalls() > before,
        "IPI delivered without an upcall interrupt"
    );
    ensure!(
        !vcpu.upcall_pending() && vcpu.pending_sel() == 0,
        "vcpu_info not drained after the upcall"
    );
    for round in 2..=5 {
        ok!(xen::send(ipi), "send(ipi {ipi}) #{round}");
        ensure!(
            wait_delivered(ipi, base + round),
            "IPI send #{round} not delivered"
        );
    }
    Ok(ipi)
}

/// alloc_unbound(DOMID_SELF) and bind_interdomain to it: a loopback channel,
/// each end notifying the other.
fn loopback(domid: u16) -> Result<(u32, u32), crate::check::Reason> {
    let a = ok!(
        xen::alloc_unbound(DOMID_SELF, DOMID_SELF),
        "alloc_unbound(self, self)"
    );
    let st = ok!(xen::status(DOMID_SELF, a), "status({a})");
    ensure!(
        st.state == PortState::Unbound { remote: domid },
        "status of unbound port {a}: {:?}, expected Unbound from d{domid} (DOMID_SELF resolved)",
        st.state
    );
    let b = ok!(
        xen::bind_interdomain(domid, a),
        "bind_interdomain(d{domid}, {a})"
    );
    ensure!(
        b != a,
        "bind_interdomain returned the remote port {a} itself"
    );
    for (port, other) in [(a, b), (b, a)] {
        let st = ok!(xen::status(domid, port), "status(d{domid}, {port})");
        ensure!(
            st.state
                == PortState::Interdomain {
                    remote: domid,
                    port: other
                }
                && st.vcpu == 0,
            "status of loopback port {port}: {:?} on vcpu {}, expected Interdomain to d{domid} port {other} on vcpu 0",
            st.state,
            st.vcpu
        );
    }
    expect_errno!(
        xen::bind_interdomain(DOMID_SELF, a),
        Einval,
        "second bind to port {a}"
    );
    for (from, to) in [(a, b), (b, a)] {
        let (before_to, before_from) = (delivered(to), delivered(from));
        ok!(xen::send(from), "send on loopback port {from}");
        ensure!(
            wait_delivered(to, before_to + 1),
            "send on {from} not delivered on {to}"
        );
        timer::delay_us(QUIET_US);
        ensure!(
            delivered(from) == before_from && delivered(to) == before_to + 1,
            "send on {from}: {from} delivered {}x, {to} {}x (expected 0, 1 more)",
            delivered(from) - before_from,
            delivered(to) - before_to
        );
    }
    Ok((a, b))
}

/// A masked port collects sends as one pending bit and raises no upcall;
/// EVTCHNOP_unmask clears the mask and delivers it.
fn masking(shared: &SharedInfo, port: u32) -> TestResult {
    let before = delivered(port);
    shared.mask(port);
    for n in 1..=3 {
        ok!(xen::send(port), "send #{n} on masked port {port}");
    }
    timer::delay_us(QUIET_US);
    ensure!(
        delivered(port) == before,
        "masked port {port} delivered an upcall"
    );
    ensure!(
        shared.is_pending(port),
        "send on masked port {port} did not set its pending bit"
    );
    ok!(xen::unmask(port), "unmask({port})");
    ensure!(
        wait_delivered(port, before + 1),
        "unmask of pending port {port} raised no upcall"
    );
    ensure!(
        !shared.is_masked(port),
        "EVTCHNOP_unmask left port {port} masked"
    );
    timer::delay_us(QUIET_US);
    ensure!(
        delivered(port) == before + 1,
        "three sends while masked became {} deliveries, expected one",
        delivered(port) - before
    );
    // Unmasking a port that is not pending raises nothing.
    ok!(xen::unmask(port), "unmask({port}) again");
    timer::delay_us(QUIET_US);
    ensure!(
        delivered(port) == before + 1,
        "unmask of an idle port delivered it"
    );
    Ok(())
}

/// Status of every kind of port, VIRQ binding rules and bind_vcpu.
fn statuses_and_binding(ipi: u32, b: u32) -> Result<u32, crate::check::Reason> {
    let st = ok!(xen::status(DOMID_SELF, ipi), "status(ipi {ipi})");
    ensure!(
        st.state == PortState::Ipi && st.vcpu == 0,
        "status of IPI port {ipi}: {:?} on vcpu {}",
        st.state,
        st.vcpu
    );
    let virq = ok!(xen::bind_virq(VIRQ_DEBUG, 0), "bind_virq(DEBUG, vcpu 0)");
    let st = ok!(xen::status(DOMID_SELF, virq), "status(virq port {virq})");
    ensure!(
        st.state == PortState::Virq { virq: VIRQ_DEBUG } && st.vcpu == 0,
        "status of VIRQ port {virq}: {:?} on vcpu {}",
        st.state,
        st.vcpu
    );
    expect_errno!(
        xen::bind_virq(VIRQ_DEBUG, 0),
        Eexist,
        "binding VIRQ_DEBUG twice on vcpu 0"
    );
    for bad in [NR_VIRQS, u32::MAX] {
        expect_errno!(xen::bind_virq(bad, 0), Einval, "bind_virq({bad})");
    }
    // This domain has one vCPU.
    expect_errno!(xen::bind_ipi(1), Enoent, "bind_ipi(vcpu 1)");
    expect_errno!(xen::bind_virq(VIRQ_DEBUG, 1), Enoent, "bind_virq(vcpu 1)");

    let free = MAX_PORTS - 1;
    let st = ok!(xen::status(DOMID_SELF, free), "status(free port {free})");
    ensure!(
        st.state == PortState::Closed,
        "status of never-used port {free}: {:?}",
        st.state
    );
    // Another domain's ports are not ours to inspect; domain 9 does not exist.
    expect_errno!(xen::status(9, 1), Esrch, "status in missing domain 9");
    expect_errno!(
        xen::alloc_unbound(9, DOMID_SELF),
        Esrch,
        "alloc_unbound in missing domain 9"
    );

    ok!(xen::bind_vcpu(b, 0), "bind_vcpu(interdomain {b}, vcpu 0)");
    expect_errno!(
        xen::bind_vcpu(b, 1),
        Enoent,
        "bind_vcpu({b}, missing vcpu 1)"
    );
    expect_errno!(xen::bind_vcpu(ipi, 0), Einval, "bind_vcpu(IPI {ipi})");
    Ok(virq)
}

/// Closing: a closed port cannot send or be closed again; closing one end
/// of a loopback puts the other back to unbound.
fn closing(domid: u16, ipi: u32, a: u32, b: u32) -> TestResult {
    ok!(xen::close(ipi), "close(ipi {ipi})");
    expect_errno!(xen::send(ipi), Einval, "send on closed port {ipi}");
    expect_errno!(xen::close(ipi), Einval, "second close of {ipi}");
    let st = ok!(xen::status(DOMID_SELF, ipi), "status(closed {ipi})");
    ensure!(
        st.state == PortState::Closed,
        "status of closed port {ipi}: {:?}",
        st.state
    );
    ok!(xen::close(b), "close(loopback {b})");
    let st = ok!(
        xen::status(DOMID_SELF, a),
        "status({a}) after its peer closed"
    );
    ensure!(
        st.state == PortState::Unbound { remote: domid },
        "port {a} after its peer {b} closed: {:?}, expected Unbound from d{domid}",
        st.state
    );
    expect_errno!(xen::send(a), Einval, "send on {a} after its peer closed");
    Ok(())
}

/// Port numbers that are never valid: 0 (reserved) and everything from 1024
/// up. (Xen answers `unmask` and `status` of port 0 like any closed port, so
/// those two are only checked out of range.)
fn bad_ports() -> TestResult {
    for port in [0, MAX_PORTS, 4096, u32::MAX] {
        expect_errno!(xen::send(port), Einval, "send({port})");
        expect_errno!(xen::close(port), Einval, "close({port})");
        expect_errno!(xen::bind_vcpu(port, 0), Einval, "bind_vcpu({port})");
        expect_errno!(
            xen::bind_interdomain(DOMID_SELF, port),
            Einval,
            "bind_interdomain(self, {port})"
        );
        if port != 0 {
            expect_errno!(xen::unmask(port), Einval, "unmask({port})");
            expect_errno!(xen::status(DOMID_SELF, port), Einval, "status({port})");
        }
    }
    // A valid number that is free: nothing to bind to or send on.
    let free = MAX_PORTS - 2;
    expect_errno!(xen::send(free), Einval, "send on free port {free}");
    expect_errno!(
        xen::bind_interdomain(DOMID_SELF, free),
        Einval,
        "bind_interdomain to free port {free}"
    );
    Ok(())
}

/// EVTCHNOP_reset closes every port; the table is usable again afterwards.
fn reset_clears_everything(virq: u32, a: u32) -> TestResult {
    ok!(xen::reset(DOMID_SELF), "reset(self)");
    for port in [virq, a] {
        let st = ok!(xen::status(DOMID_SELF, port), "status({port}) after reset");
        ensure!(
            st.state == PortState::Closed,
            "port {port} after reset: {:?}",
            st.state
        );
    }
    expect_errno!(xen::send(a), Einval, "send on {a} after reset");
    let ipi = ok!(xen::bind_ipi(0), "bind_ipi after reset");
    let before = delivered(ipi);
    ok!(xen::send(ipi), "send(ipi {ipi}) after reset");
    ensure!(
        wait_delivered(ipi, before + 1),
        "IPI bound after reset not delivered"
    );
    Ok(())
}

/// `test=evtchn-offer`: allocates an unbound port for domain `peer` (which
/// the policy lets this domain do), checks it, reports, then stays up so the
/// port stays open while the peer tries to bind it.
pub fn offer() -> ! {
    let name = "evtchn-offer";
    let outcome = offer_port();
    match outcome {
        Ok(()) => tessera_rt::console::print_result(name, Ok(())),
        Err(why) => {
            tessera_rt::console::print_result(name, Err(why.as_str()));
            tessera_rt::exit(tessera_ipc::hypercall::ShutdownReason::Crash)
        }
    }
    cpu::irq_disable();
    loop {
        cpu::wfi();
    }
}

fn offer_port() -> TestResult {
    let args = BootArgs::new(tessera_rt::bootargs());
    let (Some(peer), Some(want)) = (args.number("peer"), args.number("port")) else {
        fail!("bootargs need peer=<domid> port=<expected port>");
    };
    let peer = peer as u16;
    let port = ok!(
        xen::alloc_unbound(DOMID_SELF, peer),
        "alloc_unbound(self, d{peer})"
    );
    ensure!(
        u64::from(port) == want,
        "alloc_unbound gave port {port}, expected the first port, {want}"
    );
    let st = ok!(xen::status(DOMID_SELF, port), "status({port})");
    ensure!(
        st.state == PortState::Unbound { remote: peer },
        "status of offered port {port}: {:?}",
        st.state
    );
    println!("evtchn-offer: port {port} waits for d{peer}");
    Ok(())
}

/// `test=evtchn-deny`: this guest may not bind to the offered port, may not
/// open a channel towards the offering domain, and cannot send on ports it
/// does not own.
pub fn deny() -> TestResult {
    let args = BootArgs::new(tessera_rt::bootargs());
    let (Some(peer), Some(peer_port)) = (args.number("peer"), args.number("peer_port")) else {
        fail!("bootargs need peer=<domid> peer_port=<port>");
    };
    let (peer, peer_port) = (peer as u16, peer_port as u32);

    // This domain owns no port yet, so every send is on someone else's
    // number or on nothing.
    for port in [peer_port, 1, 2, 100, MAX_PORTS - 1, MAX_PORTS, u32::MAX] {
        expect_errno!(
            xen::send(port),
            Einval,
            "send on port {port}, which is not ours"
        );
    }
    expect_errno!(
        xen::alloc_unbound(DOMID_SELF, peer),
        Eacces,
        "alloc_unbound towards d{peer}, which the policy forbids"
    );

    // The offer may not exist yet (-EINVAL until the peer allocates it); the
    // bind itself must then be refused by the policy.
    let mut last = None;
    let refused = wait_until(10_000, || {
        last = Some(xen::bind_interdomain(peer, peer_port));
        !matches!(last, Some(Err(e)) if e.is(tessera_ipc::errno::Errno::Einval))
    });
    match last {
        Some(Err(e)) if e.is(tessera_ipc::errno::Errno::Eacces) => {}
        Some(Ok(port)) => fail!("bind to d{peer} port {peer_port} succeeded (local port {port})"),
        Some(Err(e)) if refused => {
            fail!("bind to d{peer} port {peer_port}: expected -EACCES, got {e}")
        }
        _ => fail!("d{peer} port {peer_port} never became bindable (still -EINVAL after 10 s)"),
    }
    // The refused bind left nothing behind.
    let st = ok!(xen::status(DOMID_SELF, 1), "status(1)");
    ensure!(
        st.state == PortState::Closed,
        "a refused bind left port 1 as {:?}",
        st.state
    );
    expect_errno!(
        xen::send(peer_port),
        Einval,
        "send on {peer_port} after the refused bind"
    );

    // The denial is about the peer: a channel to ourselves still works.
    let a = ok!(
        xen::alloc_unbound(DOMID_SELF, DOMID_SELF),
        "alloc_unbound(self, self)"
    );
    let b = ok!(
        xen::bind_interdomain(DOMID_SELF, a),
        "bind_interdomain(self, {a})"
    );
    ok!(xen::send(b), "send on own loopback port {b}");
    ok!(xen::close(a), "close({a})");
    ok!(xen::close(b), "close({b})");
    println!("evtchn-deny: bind to d{peer} port {peer_port} refused with -EACCES");
    Ok(())
}
