//! Domain-control tests: a test guest acting as the domain builder.
//!
//! - `test=domctl-build domid=<n>` (a `domB_t` builder): creates a domain,
//!   gives it memory, loads the `testguest` module and a DTB it writes
//!   itself, wires a static event channel and a shared page to a service
//!   domain it also creates, starts the domain, waits for it to power off,
//!   and destroys everything, then pauses, resumes and destroys a running
//!   ticker domain, then resets a domain that asked to reboot in place
//!   and starts it again; on the way, every call is also made wrong
//!   (bad arguments, memory that is not free or is the kernel's, a module
//!   that does not fit, links the policy forbids) and must fail with its
//!   own error code.
//! - `test=built peer=<id> port=<p> shm=<ipa>`: what the built domain runs:
//!   its port `p` is bound to port `p` of domain `peer`, and the page at
//!   `shm` holds what the builder wrote into the service's RAM.
//! - `test=domctl-deny domid=<n>`: a builder whose policy lacks
//!   `domain create` is refused (`-EACCES`, and the kernel logs it).
//!
//! The one idea: the builder owns the whole life of what it builds, so the
//! test ends only when every domain it made is gone again (reaped: its id
//! answers `-ESRCH`), proving the slot and memory come back.

use crate::check::{wait_until, Reason, TestResult};
use tessera_ipc::control::{ControlCmd, DomainState, ExitReason};
use tessera_ipc::event_channel::DOMID_SELF;
use tessera_ipc::image::ModuleKind;
use tessera_ipc::platform::RAM_BASE;
use tessera_rt::bootargs::BootArgs;
use tessera_rt::control as ctl;
use tessera_rt::println;
use tessera_rt::text::FixedBuf;
use tessera_rt::xen::{self, HypercallError, PortState};

const GUEST: &str = "system_u:system_r:domU_t";
const SERVICE: &str = "system_u:system_r:devmodel_t";
const MIB: u64 = 1 << 20;
/// The built domain's RAM, and where its DTB goes (2 MiB below the top, as
/// the kernel places one).
const CHILD_RAM: u64 = 16 * MIB;
const DTB_IPA: u64 = RAM_BASE + CHILD_RAM - 2 * MIB;
/// Where the shared page appears in the built domain.
const SHM_IPA: u64 = 0x2000_0000;
/// What the builder writes into the shared page.
const SHM_MARK: &[u8; 12] = b"tessera-shm\0";
/// The static port on both ends of the built domain's channel.
const PORT: u32 = 3;
/// Where the kernel's image is (its link address): never a domain's RAM.
const KERNEL_PA: u64 = 0x4020_0000;
/// Far outside any RAM.
const BAD_POINTER: u64 = 0x1_0000_0000;
const WAIT_MS: u64 = 20_000;

/// Fails unless `r` is exactly `-errno`.
fn refused<T: core::fmt::Debug>(
    r: Result<T, HypercallError>,
    errno: tessera_ipc::errno::Errno,
    what: &str,
) -> TestResult {
    match r {
        Err(e) if e.is(errno) => Ok(()),
        Err(e) => fail!("{what}: expected -{errno:?}, got {e}"),
        Ok(v) => fail!("{what}: expected -{errno:?}, got success ({v:?})"),
    }
}

/// Waits until domain `dom` is gone (destroyed and reaped).
fn wait_gone(dom: u16) -> TestResult {
    let mut last = None;
    let gone = wait_until(WAIT_MS, || {
        last = Some(ctl::domain_info(dom).map(|i| i.state));
        matches!(last, Some(Err(e)) if e.is(tessera_ipc::errno::Errno::Esrch))
    });
    ensure!(gone, "d{dom} was not reaped after destroy: {last:?}");
    Ok(())
}

fn state_of(dom: u16) -> Result<DomainState, Reason> {
    let info = ok!(ctl::domain_info(dom), "getdomaininfo(d{dom})");
    match DomainState::try_from(u64::from(info.state)) {
        Ok(s) => Ok(s),
        Err(v) => fail!("d{dom}: state {v} is not in the ABI"),
    }
}

/// `test=domctl-build`.
pub fn build() -> TestResult {
    let args = BootArgs::new(tessera_rt::bootargs());
    let me = match args.number("domid").map(u16::try_from) {
        Some(Ok(id)) => id,
        _ => fail!("bootargs need domid=<this domain's id>"),
    };
    let step = |what: &str| println!("domctl: {what}");
    use tessera_ipc::errno::Errno::*;

    // The call itself.
    ensure!(
        ControlCmd::try_from(99).is_err(),
        "99 became a control command"
    );
    // SAFETY: no pointer argument: an unknown sub-command reads none.
    let ret = unsafe { ctl::raw(99, 0, 0, 0, 0) };
    expect_ret!(ret, Enosys, "unknown control sub-command");
    // SAFETY: the pointer is outside RAM; the kernel must refuse it.
    let ret = unsafe { ctl::raw(ControlCmd::CreateDomain as u64, BAD_POINTER, 0, 0, 0) };
    expect_ret!(ret, Efault, "create with a pointer outside RAM");
    refused(ctl::create("c", GUEST, 0), Einval, "create with 0 vCPUs")?;
    refused(ctl::create("c", GUEST, 9), Einval, "create with 9 vCPUs")?;
    refused(ctl::create("", GUEST, 1), Einval, "create with no name")?;
    refused(
        ctl::create("a b", GUEST, 1),
        Einval,
        "create with a space in the name",
    )?;
    refused(
        ctl::create("c", "system_u:system_r:nosuch_t", 1),
        Einval,
        "create with a label the policy does not define",
    )?;
    // Its device model must exist; a UART needs one; a pin must name a
    // pCPU of the board that no other domain's vCPU is on (this builder,
    // the first vCPU placed, is on pCPU 0).
    let mut req = ctl::create_request("c", GUEST, 1);
    req.device_model = 15.into();
    refused(
        ctl::create_with(&req),
        Esrch,
        "create naming a device model that does not exist",
    )?;
    let mut req = ctl::create_request("c", GUEST, 1);
    req.flags = tessera_ipc::control::CREATE_VPL011.into();
    refused(
        ctl::create_with(&req),
        Einval,
        "create with a UART but no device model",
    )?;
    let mut req = ctl::create_request("c", GUEST, 1);
    req.nr_pcpus = 1.into();
    req.pcpus[0] = 63;
    refused(
        ctl::create_with(&req),
        Enxio,
        "create pinned to a pCPU the board lacks",
    )?;
    req.pcpus[0] = 0;
    refused(
        ctl::create_with(&req),
        Ebusy,
        "create pinned to the builder's pCPU",
    )?;
    refused(ctl::domain_info(0), Esrch, "getdomaininfo(d0)")?;
    refused(ctl::domain_info(99), Esrch, "getdomaininfo(d99)")?;
    ensure!(
        state_of(me)? == DomainState::Running,
        "this builder is not running?"
    );
    refused(ctl::destroy(me), Einval, "destroy self")?;
    refused(ctl::pause(me), Einval, "pause self")?;
    step("bad calls refused");

    let child = ok!(ctl::create("child", GUEST, 1), "create child");
    let info = ok!(ctl::domain_info(child), "getdomaininfo(child)");
    ensure!(
        state_of(child)? == DomainState::Created
            && info.ram_size.get() == 0
            && info.vcpus.get() == 1
            && info.name.starts_with(b"child\0"),
        "a new domain is created, with no memory: {info:?}"
    );
    refused(
        ctl::unpause(child),
        Einval,
        "unpause a domain with no memory",
    )?;
    refused(
        ctl::set_vcpu_context(child, 0, RAM_BASE, 0),
        Einval,
        "vCPU context of a domain with no memory",
    )?;
    refused(
        ctl::copy_module(child, 0, RAM_BASE),
        Einval,
        "copy into no memory",
    )?;
    refused(ctl::pause(child), Einval, "pause a created domain")?;
    refused(
        ctl::reset_domain(child),
        Einval,
        "reset a domain being built",
    )?;

    // Memory: only free RAM, never the kernel's.
    refused(
        ctl::assign_memory(child, CHILD_RAM, Some(0)),
        Einval,
        "host 0, not RAM",
    )?;
    refused(
        ctl::assign_memory(child, CHILD_RAM, Some(KERNEL_PA)),
        Eperm,
        "the kernel's own memory",
    )?;
    refused(
        ctl::assign_memory(child, 3 * MIB, None),
        Einval,
        "3 MiB, not whole blocks",
    )?;
    ok!(ctl::assign_memory(child, CHILD_RAM, None), "assign memory");
    refused(
        ctl::assign_memory(child, CHILD_RAM, None),
        Eexist,
        "assign memory twice",
    )?;
    let info = ok!(ctl::domain_info(child), "getdomaininfo(child)");
    let host = info.ram_host_base.get();
    ensure!(
        info.ram_size.get() == CHILD_RAM && host != 0,
        "memory not reported: {info:?}"
    );
    let other = ok!(ctl::create("child2", GUEST, 1), "create child2");
    refused(
        ctl::assign_memory(other, 4 * MIB, Some(host)),
        Ebusy,
        "the first domain's memory for another",
    )?;
    ok!(ctl::destroy(other), "destroy child2");
    wait_gone(other)?;
    step("memory checked: not RAM, the kernel's, taken, twice");

    // A service domain whose page the child shares, with a channel to it.
    let svc = ok!(ctl::create("svc", SERVICE, 1), "create svc");
    ok!(ctl::assign_memory(svc, 4 * MIB, None), "assign svc memory");
    ok!(
        ctl::copy_to_domain(svc, SHM_MARK, RAM_BASE + 0x1000),
        "write svc's page"
    );
    ok!(
        ctl::share(svc, child, RAM_BASE + 0x1000, SHM_IPA, 0x1000),
        "share svc's page with child"
    );
    refused(
        ctl::share(svc, child, RAM_BASE + 0x1000, SHM_IPA, 0x1000),
        Eexist,
        "share at an address already mapped",
    )?;
    refused(
        ctl::share(svc, child, RAM_BASE + 4 * MIB, SHM_IPA + 0x1000, 0x1000),
        Einval,
        "share beyond the owner's RAM",
    )?;
    refused(
        ctl::share(svc, child, RAM_BASE, 0x0900_0000, 0x1000),
        Einval,
        "share outside the shared-memory window",
    )?;
    refused(
        ctl::share(me, child, RAM_BASE, SHM_IPA + 0x1000, 0x1000),
        Eacces,
        "share the builder's memory with a guest",
    )?;
    ok!(
        ctl::bind_evtchn(child, PORT, svc, PORT),
        "bind child <-> svc"
    );
    ok!(
        ctl::bind_evtchn(child, PORT, svc, PORT),
        "bind the same link again"
    );
    refused(
        ctl::bind_evtchn(child, PORT, svc, PORT + 1),
        Eexist,
        "a bound port",
    )?;
    refused(ctl::bind_evtchn(child, 0, svc, PORT + 1), Einval, "port 0")?;
    refused(
        ctl::bind_evtchn(child, PORT + 1, me, PORT + 1),
        Eacces,
        "guest to builder",
    )?;
    step("shared page and event channel wired");

    // The payload and its DTB.
    let module = ok!(ctl::module_by_name(child, "testguest"), "module testguest");
    ensure!(
        module.kind.get() == ModuleKind::Kernel as u32 && module.size.get() > 0,
        "module testguest: {module:?}"
    );
    let index = module.index.get();
    let again = ok!(ctl::module_info(child, index), "module {index}");
    ensure!(
        again.name == module.name,
        "module {index} by index is another"
    );
    refused(ctl::module_info(child, 999), Enoent, "module 999")?;
    refused(
        ctl::module_by_name(child, "nosuch"),
        Enoent,
        "module nosuch",
    )?;
    refused(
        ctl::copy_module(child, 999, RAM_BASE),
        Enoent,
        "copy module 999",
    )?;
    refused(
        ctl::copy_module(child, index, RAM_BASE + CHILD_RAM - 0x1000),
        Einval,
        "a module that does not fit",
    )?;
    let copied = ok!(ctl::copy_module(child, index, RAM_BASE), "copy testguest");
    ensure!(
        copied == module.size.get(),
        "copied {copied} of {:?}",
        module.size
    );
    let mut bootargs = FixedBuf::<96>::new();
    let _ = core::fmt::Write::write_fmt(
        &mut bootargs,
        format_args!("test=built peer={svc} port={PORT} shm={SHM_IPA:#x}"),
    );
    let mut dtb = [0u8; 1024];
    let Some(len) = mini_dtb(&mut dtb, bootargs.as_str(), CHILD_RAM) else {
        fail!("the DTB does not fit its buffer");
    };
    ok!(
        ctl::copy_to_domain(child, &dtb[..len], DTB_IPA),
        "copy the DTB"
    );
    // SAFETY: the source is outside RAM; the kernel must refuse it.
    let ret = unsafe {
        ctl::raw(
            ControlCmd::CopyToDomain as u64,
            child.into(),
            BAD_POINTER,
            DTB_IPA,
            16,
        )
    };
    expect_ret!(ret, Efault, "copy from a pointer outside RAM");
    refused(
        ctl::copy_to_domain(child, &dtb[..len], RAM_BASE + CHILD_RAM),
        Einval,
        "copy past the end of its RAM",
    )?;
    refused(
        ctl::set_vcpu_context(child, 1, RAM_BASE, 0),
        Einval,
        "vCPU 1 of 1",
    )?;
    refused(
        ctl::set_vcpu_context(child, 0, RAM_BASE + CHILD_RAM, 0),
        Einval,
        "entry outside its RAM",
    )?;
    ok!(
        ctl::set_vcpu_context(child, 0, RAM_BASE, DTB_IPA),
        "vCPU context"
    );
    step("testguest and its DTB loaded");

    ok!(ctl::unpause(child), "unpause child");
    refused(ctl::unpause(child), Einval, "unpause a started domain")?;
    refused(ctl::reset_domain(child), Einval, "reset a running domain")?;
    refused(
        ctl::assign_memory(child, CHILD_RAM, None),
        Ebusy,
        "memory for a started domain",
    )?;
    refused(
        ctl::copy_module(child, index, RAM_BASE),
        Ebusy,
        "load a started domain",
    )?;
    let mut state = Ok(DomainState::Running);
    let stopped = wait_until(WAIT_MS, || {
        state = state_of(child);
        !matches!(state, Ok(DomainState::Running))
    });
    ensure!(stopped, "child still running after {WAIT_MS} ms");
    let info = ok!(ctl::domain_info(child), "getdomaininfo(child)");
    ensure!(
        info.state == DomainState::Stopped as u8 && info.exit_reason == ExitReason::Poweroff as u8,
        "child did not power off: {info:?}"
    );
    step("child ran and powered off");
    refused(
        ctl::reset_domain(child),
        Einval,
        "reset a domain that powered off (not a reboot)",
    )?;
    refused(ctl::reset_domain(me), Einval, "reset self")?;
    refused(ctl::reset_domain(99), Esrch, "reset d99")?;
    refused(ctl::reset_domain(0), Esrch, "reset d0")?;

    ok!(ctl::destroy(child), "destroy child");
    ok!(ctl::destroy(svc), "destroy svc");
    wait_gone(child)?;
    wait_gone(svc)?;
    // The slot, its vCPU and 16 MiB come back: build in it again.
    let next = ok!(ctl::create("again", GUEST, 1), "create again");
    ensure!(
        next == child,
        "the freed slot d{child} is not reused (got d{next})"
    );
    ok!(
        ctl::assign_memory(next, CHILD_RAM, Some(host)),
        "the freed memory again"
    );
    ok!(ctl::destroy(next), "destroy again");
    wait_gone(next)?;
    step("destroyed domains are reaped and their slot and memory reused");
    pause_and_destroy_a_running_domain(index)?;
    step("a running domain paused, resumed and destroyed");
    reset_a_domain_that_reboots(index)?;
    step("a domain that asked to reboot reset in place and started again");
    Ok(())
}

/// Waits until domain `dom` stops, and checks it stopped to reboot.
fn wait_reboot(dom: u16) -> TestResult {
    let stopped = wait_until(WAIT_MS, || {
        matches!(state_of(dom), Ok(DomainState::Stopped) | Err(_))
    });
    ensure!(stopped, "d{dom} did not stop after {WAIT_MS} ms");
    let info = ok!(ctl::domain_info(dom), "getdomaininfo(rebooter)");
    ensure!(
        info.exit_reason == ExitReason::Reboot as u8,
        "d{dom} did not stop to reboot: {info:?}"
    );
    Ok(())
}

/// A domain that asks to reboot (`test=reboot`, at once) is reset in place
/// (`ResetDomain`): it is *created* again with the same RAM and the next
/// generation, loaded and started again, and reboots again; then it is
/// destroyed.
fn reset_a_domain_that_reboots(module: u32) -> TestResult {
    use tessera_ipc::errno::Errno::*;
    let dom = ok!(ctl::create("rebooter", GUEST, 1), "create rebooter");
    ok!(ctl::assign_memory(dom, CHILD_RAM, None), "rebooter memory");
    let mut dtb = [0u8; 1024];
    let Some(len) = mini_dtb(&mut dtb, "test=reboot", CHILD_RAM) else {
        fail!("the DTB does not fit its buffer");
    };
    let load = |what: &str| -> TestResult {
        ok!(ctl::copy_module(dom, module, RAM_BASE), "load rebooter");
        ok!(
            ctl::copy_to_domain(dom, &dtb[..len], DTB_IPA),
            "rebooter DTB"
        );
        ok!(
            ctl::set_vcpu_context(dom, 0, RAM_BASE, DTB_IPA),
            "rebooter context"
        );
        ok!(ctl::unpause(dom), "start rebooter");
        println!("domctl: rebooter started ({what})");
        Ok(())
    };
    load("first boot")?;
    wait_reboot(dom)?;
    let before = ok!(ctl::domain_info(dom), "getdomaininfo(rebooter)");
    ok!(ctl::reset_domain(dom), "reset the rebooter in place");
    let after = ok!(ctl::domain_info(dom), "getdomaininfo(rebooter)");
    ensure!(
        after.state == DomainState::Created as u8
            && after.exit_reason == ExitReason::None as u8
            && after.generation.get() == before.generation.get() + 1
            && after.ram_host_base.get() == before.ram_host_base.get()
            && after.ram_size.get() == CHILD_RAM,
        "after the reset: {after:?} (before: {before:?})"
    );
    refused(ctl::reset_domain(dom), Einval, "reset it twice")?;
    refused(
        ctl::assign_memory(dom, CHILD_RAM, None),
        Eexist,
        "memory for a reset domain (it kept its own)",
    )?;
    refused(ctl::unpause(dom), Einval, "start it with no vCPU context")?;
    load("after the reset")?;
    wait_reboot(dom)?;
    ok!(ctl::destroy(dom), "destroy the rebooter");
    wait_gone(dom)
}

/// Sleeps for `ms` of counter time.
fn sleep_ms(ms: u64) {
    let _ = wait_until(ms, || false);
}

/// A ticker (a partition that never stops) is paused for longer than a
/// tick, resumed (the harness sees it tick again, reporting the tick the
/// pause delayed) and destroyed while it runs.
fn pause_and_destroy_a_running_domain(module: u32) -> TestResult {
    use tessera_ipc::errno::Errno::*;
    let ticker = ok!(ctl::create("ticker", GUEST, 1), "create ticker");
    ok!(ctl::assign_memory(ticker, CHILD_RAM, None), "ticker memory");
    ok!(ctl::copy_module(ticker, module, RAM_BASE), "load ticker");
    let mut dtb = [0u8; 1024];
    let Some(len) = mini_dtb(&mut dtb, "test=ticker", CHILD_RAM) else {
        fail!("the DTB does not fit its buffer");
    };
    ok!(
        ctl::copy_to_domain(ticker, &dtb[..len], DTB_IPA),
        "ticker DTB"
    );
    ok!(
        ctl::set_vcpu_context(ticker, 0, RAM_BASE, DTB_IPA),
        "ticker context"
    );
    ok!(ctl::unpause(ticker), "start ticker");
    sleep_ms(1500);
    ok!(ctl::pause(ticker), "pause ticker");
    ensure!(
        state_of(ticker)? == DomainState::Paused,
        "ticker not paused"
    );
    refused(ctl::pause(ticker), Einval, "pause a paused domain")?;
    // Longer than a tick: the tick due meanwhile comes late, which the
    // ticker reports.
    sleep_ms(1500);
    ok!(ctl::unpause(ticker), "resume ticker");
    ensure!(
        state_of(ticker)? == DomainState::Running,
        "ticker not running"
    );
    sleep_ms(2500);
    ok!(ctl::destroy(ticker), "destroy the running ticker");
    let info = ok!(ctl::domain_info(ticker), "getdomaininfo(ticker)");
    ensure!(
        info.exit_reason == ExitReason::Destroyed as u8,
        "destroyed ticker: {info:?}"
    );
    wait_gone(ticker)
}

/// `test=built`: run by the domain `test=domctl-build` builds.
pub fn built() -> TestResult {
    let args = BootArgs::new(tessera_rt::bootargs());
    let (Some(peer), Some(port), Some(shm)) =
        (args.number("peer"), args.number("port"), args.number("shm"))
    else {
        fail!("bootargs need peer=<domid> port=<port> shm=<ipa>");
    };
    let (peer, port) = (peer as u16, port as u32);
    let st = ok!(xen::status(DOMID_SELF, port), "status({port})");
    ensure!(
        st.state == PortState::Interdomain { remote: peer, port },
        "port {port}: {:?}, expected bound to d{peer} port {port}",
        st.state
    );
    let mut seen = [0u8; SHM_MARK.len()];
    for (i, b) in seen.iter_mut().enumerate() {
        // SAFETY: the builder shared a page at `shm`, which the runtime's
        // identity map covers as Normal memory; a read has no side effect.
        *b = unsafe { core::ptr::read_volatile((shm as usize + i) as *const u8) };
    }
    ensure!(&seen == SHM_MARK, "shared page holds {seen:?}");
    println!("built: channel to d{peer} and shared page are in place");
    Ok(())
}

/// `test=domctl-deny`: the image's policy gives this builder no
/// `domain create`.
pub fn deny() -> TestResult {
    use tessera_ipc::errno::Errno::*;
    let args = BootArgs::new(tessera_rt::bootargs());
    let me = match args.number("domid").map(u16::try_from) {
        Some(Ok(id)) => id,
        _ => fail!("bootargs need domid=<this domain's id>"),
    };
    refused(
        ctl::create("child", GUEST, 1),
        Eacces,
        "create without domain create",
    )?;
    refused(
        ctl::domain_info(me + 1),
        Esrch,
        "the domain was not created",
    )?;
    refused(ctl::destroy(me), Einval, "destroy self")?;
    Ok(())
}

/// Writes a flattened device tree (v17) with what the runtime reads:
/// `/chosen/bootargs`, one CPU, and the memory node. Returns its length.
fn mini_dtb(out: &mut [u8], bootargs: &str, ram: u64) -> Option<usize> {
    let mut w = DtWriter::new(out);
    w.begin("")?;
    w.prop_u32s("#address-cells", &[2])?;
    w.prop_u32s("#size-cells", &[2])?;
    w.begin("chosen")?;
    w.prop_str("bootargs", bootargs)?;
    w.end()?;
    w.begin("cpus")?;
    w.prop_u32s("#address-cells", &[1])?;
    w.prop_u32s("#size-cells", &[0])?;
    w.begin("cpu@0")?;
    w.prop_str("device_type", "cpu")?;
    w.prop_u32s("reg", &[0])?;
    w.end()?;
    w.end()?;
    w.begin("memory@40000000")?;
    w.prop_str("device_type", "memory")?;
    let (bh, bl) = hi_lo(RAM_BASE);
    let (sh, sl) = hi_lo(ram);
    w.prop_u32s("reg", &[bh, bl, sh, sl])?;
    w.end()?;
    w.end()?;
    w.finish()
}

fn hi_lo(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

/// A device-tree writer over a fixed buffer: the structure block from byte
/// 56 (after the 40-byte header and an empty reservation map), strings kept
/// apart and appended by `finish`.
struct DtWriter<'a> {
    out: &'a mut [u8],
    at: usize,
    strings: [u8; 128],
    strings_len: usize,
}

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_END: u32 = 9;
const HEADER: usize = 40;
const STRUCT_AT: usize = HEADER + 16;

impl<'a> DtWriter<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Self {
            out,
            at: STRUCT_AT,
            strings: [0; 128],
            strings_len: 0,
        }
    }

    fn bytes(&mut self, b: &[u8]) -> Option<()> {
        self.out
            .get_mut(self.at..self.at + b.len())?
            .copy_from_slice(b);
        self.at += b.len();
        // Pad to 4 bytes.
        while !self.at.is_multiple_of(4) {
            *self.out.get_mut(self.at)? = 0;
            self.at += 1;
        }
        Some(())
    }

    fn word(&mut self, w: u32) -> Option<()> {
        self.bytes(&w.to_be_bytes())
    }

    fn begin(&mut self, name: &str) -> Option<()> {
        self.word(FDT_BEGIN_NODE)?;
        let start = self.at;
        self.out
            .get_mut(start..start + name.len())?
            .copy_from_slice(name.as_bytes());
        self.at += name.len();
        self.bytes(&[0])
    }

    fn end(&mut self) -> Option<()> {
        self.word(FDT_END_NODE)
    }

    fn string(&mut self, name: &str) -> Option<u32> {
        let off = self.strings_len;
        let dst = self.strings.get_mut(off..off + name.len() + 1)?;
        dst[..name.len()].copy_from_slice(name.as_bytes());
        dst[name.len()] = 0;
        self.strings_len += name.len() + 1;
        Some(off as u32)
    }

    fn prop(&mut self, name: &str, value: &[u8]) -> Option<()> {
        let off = self.string(name)?;
        self.word(FDT_PROP)?;
        self.word(value.len() as u32)?;
        self.word(off)?;
        if value.is_empty() {
            return Some(());
        }
        self.bytes(value)
    }

    fn prop_str(&mut self, name: &str, value: &str) -> Option<()> {
        let mut buf = [0u8; 128];
        let v = buf.get_mut(..value.len() + 1)?;
        v[..value.len()].copy_from_slice(value.as_bytes());
        self.prop(name, v)
    }

    fn prop_u32s(&mut self, name: &str, cells: &[u32]) -> Option<()> {
        let mut buf = [0u8; 16];
        for (chunk, c) in buf.chunks_exact_mut(4).zip(cells) {
            chunk.copy_from_slice(&c.to_be_bytes());
        }
        self.prop(name, buf.get(..cells.len() * 4)?)
    }

    /// The END token, the strings, and the header; the total length.
    fn finish(mut self) -> Option<usize> {
        self.word(FDT_END)?;
        let struct_size = self.at - STRUCT_AT;
        let strings_at = self.at;
        let strings_len = self.strings_len;
        let strings = self.strings;
        self.out
            .get_mut(strings_at..strings_at + strings_len)?
            .copy_from_slice(strings.get(..strings_len)?);
        let total = strings_at + strings_len;
        self.out.get_mut(HEADER..STRUCT_AT)?.fill(0);
        let header = [
            FDT_MAGIC,
            total as u32,
            STRUCT_AT as u32,
            strings_at as u32,
            HEADER as u32,
            17,
            16,
            0,
            strings_len as u32,
            struct_size as u32,
        ];
        for (chunk, w) in self.out.get_mut(..HEADER)?.chunks_exact_mut(4).zip(header) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        Some(total)
    }
}
