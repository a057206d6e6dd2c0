//! `tessera-domb`: the boot domain of a hyperlaunch image.
//!
//! The one idea: this file is only plumbing. The kernel built and started
//! this domain alone; it finds the image's module table in its module
//! window (its DT's initrd range, docs/02 "Hyperlaunch"), parses the system
//! description from it, and builds every other domain in boot order
//! through the control hypercalls, printing each one's measurement, then
//! starts them all in boot order (a device model's clients exist when it
//! starts; the kernel holds each client until it is served). Then it
//! stays resident as the supervisor: it sleeps until the kernel raises
//! `VIRQ_DOM_EXC` (a domain stopped) or a restart falls due, asks
//! `GetDomainInfo` what happened, and carries out `on-crash`. Every
//! decision (what to build, where things go, when to restart) is the
//! host-tested library's.
//!
//! On the host this is an empty program, so the workspace builds and lints.
#![cfg_attr(all(target_arch = "aarch64", target_os = "none"), no_std, no_main)]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod shell {
    use core::fmt;
    use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use tessera_domb::hyperlaunch::{self, Hyperlaunch};
    use tessera_domb::layout::{self, Layout, LayoutError};
    use tessera_domb::measure::{
        BootLine, Component, EventLog, MeasureError, Sha256Digest, DOMAIN_LOG_SIZE,
    };
    use tessera_domb::modules::{Module, ModuleTable};
    use tessera_domb::plan::{Plan, Stage, Step};
    use tessera_domb::supervisor::{self, Action, Event, Status, Supervisor};
    use tessera_domb::{DomainId, PayloadKind};
    use tessera_ipc::control::{DomainState, ExitReason, VIRQ_DOM_EXC};
    use tessera_ipc::errno::Errno;
    use tessera_ipc::hypercall::ShutdownReason;
    use tessera_ipc::image::ModuleKind;
    use tessera_ipc::platform::{BOOT_MODULES_BASE, BOOT_MODULES_SIZE, VTIMER_INTID};
    use tessera_rt::control as ctl;
    use tessera_rt::events::{self, SharedPage};
    use tessera_rt::xen::{self, HypercallError};
    use tessera_rt::{cpu, gic, println, psci, timer};
    use tessera_sysdesc::config::{parse_system, DomainConfig, SystemConfig, MAX_DOMAINS};
    use tessera_sysdesc::fdt_writer::DtWriteError;

    /// Room for one generated guest DTB.
    const DTB_MAX: usize = 64 * 1024;
    /// How long a rebuild waits for the kernel to reap the domain it
    /// replaces (every pCPU must pass a scheduling point first).
    const REAP_WAIT_MS: u64 = 2_000;
    const PAGE: usize = 4096;

    static SHARED_INFO_PAGE: SharedPage = SharedPage::new();
    static VCPU_INFO_PAGE: SharedPage = SharedPage::new();
    /// The port `VIRQ_DOM_EXC` is bound to (`u32::MAX` before).
    static DOM_EXC_PORT: AtomicU32 = AtomicU32::new(u32::MAX);
    /// A domain stopped since the supervisor last looked.
    static DOM_EXC: AtomicBool = AtomicBool::new(false);
    /// The restart timer fired.
    static TIMER_FIRED: AtomicBool = AtomicBool::new(false);
    static CONFIG: spin::Once<SystemConfig> = spin::Once::new();
    static HYPERLAUNCH: spin::Once<Hyperlaunch> = spin::Once::new();
    /// The guest DTB being built (too big for the stack).
    static GUEST_DTB: spin::Mutex<[u8; DTB_MAX]> = spin::Mutex::new([0; DTB_MAX]);

    extern "C" {
        /// The end of this program's image, BSS and stacks (`rt/link.ld`).
        static __image_end: u8;
    }

    fn on_event(port: u32) {
        if port == DOM_EXC_PORT.load(Ordering::Relaxed) {
            DOM_EXC.store(true, Ordering::Release);
        }
    }

    fn on_timer(_intid: u32) {
        timer::disable();
        TIMER_FIRED.store(true, Ordering::Release);
    }

    /// Stops domB with a reason; the kernel logs the crash.
    fn fail(args: fmt::Arguments<'_>) -> ! {
        println!("domb: {args}; stopping");
        tessera_rt::exit(ShutdownReason::Crash)
    }

    /// Why one domain could not be built.
    enum Failure {
        Call(&'static str, HypercallError),
        /// `CreateDomain` refused its `tessera,pcpus`.
        Pins(hyperlaunch::PinRefusal<'static>, HypercallError),
        Request(hyperlaunch::CreateError),
        Module(&'static str, &'static str),
        Layout(LayoutError),
        Dtb(DtWriteError),
        Measure(MeasureError),
        Unexpected(&'static str),
    }

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Failure::Call(what, e) => write!(f, "{what}: {e}"),
                Failure::Pins(why, e) => write!(f, "create: {why} ({e})"),
                Failure::Request(e) => write!(f, "create: {e}"),
                Failure::Module(what, why) => write!(f, "{what}: {why}"),
                Failure::Layout(e) => write!(f, "layout: {e}"),
                Failure::Dtb(e) => write!(f, "guest DTB: {e}"),
                Failure::Measure(e) => write!(f, "measure: {e}"),
                Failure::Unexpected(what) => write!(f, "unexpected step {what}"),
            }
        }
    }

    /// `r`, with the step that failed named.
    fn call<T>(what: &'static str, r: Result<T, HypercallError>) -> Result<T, Failure> {
        r.map_err(|e| Failure::Call(what, e))
    }

    /// Where a domain built by domB stands, as domB last saw it.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Life {
        /// Not built (or its build failed).
        Absent,
        /// Built and paused, at boot, until every domain is built.
        Built,
        Running,
        /// Shut down on its own (poweroff), or left stopped.
        Done,
        /// Crashed and waiting for its restart.
        Crashed,
    }

    /// A domain's payloads as the module table holds them.
    struct Payloads {
        kernel: Module<'static>,
        ramdisk: Option<Module<'static>>,
    }

    /// Everything domB builds with, and what it has built.
    struct Builder {
        cfg: &'static SystemConfig,
        hl: &'static Hyperlaunch,
        table: ModuleTable<'static>,
        /// domB's own id: the owner of every lent region.
        me: u16,
        /// Where each region of `cfg.shm` lies in domB's RAM.
        regions: [u64; tessera_sysdesc::config::MAX_SHM],
        /// By plan index.
        life: [Life; MAX_DOMAINS],
        ticks_per_ms: u64,
    }

    impl Builder {
        fn domain(&self, k: usize) -> Option<&'static DomainConfig> {
            self.hl.domain(self.cfg, k)
        }

        /// The plan index of domain `id`.
        fn index_of(&self, id: DomainId) -> Option<usize> {
            (0..self.hl.order.len()).find(|&k| self.domain(k).is_some_and(|d| d.domid == id.0))
        }

        fn payloads(&self, dc: &DomainConfig) -> Result<Payloads, Failure> {
            let kernel = self
                .table
                .find(ModuleKind::Kernel, &dc.kernel.name)
                .ok_or(Failure::Module("kernel", "not in the image's module table"))?;
            let ramdisk = match &dc.ramdisk {
                Some(r) => Some(self.table.find(ModuleKind::Ramdisk, &r.name).ok_or(
                    Failure::Module("ramdisk", "not in the image's module table"),
                )?),
                None => None,
            };
            Ok(Payloads { kernel, ramdisk })
        }

        /// Where plan domain `other` stands, for the plan.
        fn stage(&self, other: usize) -> Stage {
            match self.life.get(other) {
                Some(Life::Built) => Stage::Built,
                Some(Life::Running) => Stage::Running,
                _ => Stage::Absent,
            }
        }

        /// Domain `dc`'s payloads and where they go in its RAM: what both a
        /// build and a reboot in place load.
        fn payloads_and_layout(
            &self,
            dc: &DomainConfig,
        ) -> Result<(Payloads, layout::Layout), Failure> {
            let payloads = self.payloads(dc)?;
            let layout = layout::layout(
                dc.memory_bytes,
                payloads.kernel.data,
                payloads.ramdisk.map(|r| r.data.len() as u64),
            )
            .map_err(Failure::Layout)?;
            Ok((payloads, layout))
        }

        /// Builds plan domain `k`, and starts it too if `start`:
        /// everything is checked first (payloads, layout), then the plan's
        /// steps are issued; on a failure what was made is destroyed again.
        fn build(&mut self, plan: &Plan<'_>, k: usize, start: bool) -> Result<(), Failure> {
            let Some(dc) = self.domain(k) else {
                return Err(Failure::Unexpected("no such domain"));
            };
            let (payloads, layout) = self.payloads_and_layout(dc)?;
            let stages = core::array::from_fn::<Stage, MAX_DOMAINS, _>(|i| self.stage(i));
            let stage = |other: usize| stages.get(other).copied().unwrap_or(Stage::Absent);
            let mut log_buf = [0u8; DOMAIN_LOG_SIZE];
            let mut target = Target {
                k,
                dc,
                payloads,
                layout,
                dtb_len: 0,
                created: false,
                log: EventLog::new(&mut log_buf).map_err(Failure::Measure)?,
            };
            let mut built =
                plan.try_for_each_build_step(k, stage, |step| self.issue(&mut target, step));
            if start && built.is_ok() {
                built =
                    plan.try_for_each_start_step(k, stage, |step| self.issue(&mut target, step));
            }
            if built.is_err() && target.created {
                let _ = ctl::destroy(dc.domid);
            }
            built
        }

        /// Boots plan domain `k` again in place after it asked to reboot:
        /// the kernel resets it (same id, memory, shared regions and device
        /// model), then its payloads, DTB and vCPU context are loaded again,
        /// its channels to running domains bound again, it is measured and
        /// started. On a failure the caller rebuilds it from scratch.
        fn reboot(&mut self, plan: &Plan<'_>, k: usize) -> Result<(), Failure> {
            let Some(dc) = self.domain(k) else {
                return Err(Failure::Unexpected("no such domain"));
            };
            let (payloads, layout) = self.payloads_and_layout(dc)?;
            let stages = core::array::from_fn::<Stage, MAX_DOMAINS, _>(|i| self.stage(i));
            let running = |other: usize| stages.get(other) == Some(&Stage::Running);
            let mut log_buf = [0u8; DOMAIN_LOG_SIZE];
            let mut target = Target {
                k,
                dc,
                payloads,
                layout,
                dtb_len: 0,
                created: false,
                log: EventLog::new(&mut log_buf).map_err(Failure::Measure)?,
            };
            plan.try_for_each_reboot_step(k, running, |step| self.issue(&mut target, step))
        }

        /// Starts plan domain `k`, built earlier (at boot, once every
        /// domain is built); on a failure it is destroyed.
        fn start(&mut self, plan: &Plan<'_>, k: usize) -> Result<(), Failure> {
            let stages = core::array::from_fn::<Stage, MAX_DOMAINS, _>(|i| self.stage(i));
            let stage = |other: usize| stages.get(other).copied().unwrap_or(Stage::Absent);
            let started = plan.try_for_each_start_step(k, stage, |step| match step {
                Step::Unpause { .. } | Step::IntroduceToStore { .. } => self.issue_start(k, step),
                _ => Err(Failure::Unexpected("a build step in a start")),
            });
            if started.is_err() {
                if let Some(dc) = self.domain(k) {
                    let _ = ctl::destroy(dc.domid);
                }
            }
            started
        }

        /// A start step for plan domain `k`.
        fn issue_start(&self, k: usize, step: Step<'_>) -> Result<(), Failure> {
            match step {
                Step::Unpause { .. } => {
                    let dc = self
                        .domain(k)
                        .ok_or(Failure::Unexpected("no such domain"))?;
                    call("unpause", ctl::unpause(dc.domid))
                }
                Step::IntroduceToStore { domain, .. } => {
                    if let Some(dc) = self.domain(domain) {
                        println!(
                            "domb: d{} {}: introduction to xenstored is not implemented yet; skipped",
                            dc.domid, dc.name
                        );
                    }
                    Ok(())
                }
                _ => Err(Failure::Unexpected("a build step in a start")),
            }
        }

        /// One control step for `t`.
        fn issue(&mut self, t: &mut Target<'_>, step: Step<'_>) -> Result<(), Failure> {
            let id = t.dc.domid;
            match step {
                Step::Create { .. } => {
                    let ci = self.hl.order.get(t.k).copied().unwrap_or(usize::MAX);
                    let req =
                        hyperlaunch::create_request(self.cfg, ci).map_err(Failure::Request)?;
                    // A rebuild asks for the id (and the pins) of a domain
                    // the kernel may still be reaping: wait for it, briefly.
                    let start = timer::now();
                    let limit = REAP_WAIT_MS * self.ticks_per_ms;
                    loop {
                        match ctl::create_with(&req) {
                            Err(e)
                                if e.is(Errno::Ebusy)
                                    && timer::now().saturating_sub(start) < limit =>
                            {
                                timer::delay_us(1_000);
                            }
                            Err(HypercallError::Errno(errno)) => {
                                let e = HypercallError::Errno(errno);
                                return Err(match hyperlaunch::pin_refusal(t.dc, errno) {
                                    Some(why) => Failure::Pins(why, e),
                                    None => Failure::Call("create", e),
                                });
                            }
                            r => break call("create", r).map(|_| ())?,
                        }
                    }
                    t.created = true;
                }
                Step::AssignMemory { .. } => {
                    let host = t.dc.static_mem.map(|m| m.base);
                    call(
                        "assign memory",
                        ctl::assign_memory(id, t.layout.assign_bytes, host),
                    )?;
                }
                Step::CopyModule { kind, .. } => {
                    let (module, ipa) = match kind {
                        PayloadKind::Kernel => (t.payloads.kernel, t.layout.kernel),
                        PayloadKind::Ramdisk => match (t.payloads.ramdisk, t.layout.initrd) {
                            (Some(r), Some((start, _))) => (r, start),
                            _ => return Err(Failure::Unexpected("ramdisk")),
                        },
                        PayloadKind::PartialDtb => return Err(Failure::Unexpected("partial-dtb")),
                    };
                    // The kernel's view of the table must be ours.
                    let info = call("module info", ctl::module_info(id, module.index as u32))?;
                    let same = info.kind.get() == module.kind as u32
                        && info.size.get() == module.data.len() as u64
                        && info.name.starts_with(module.name);
                    if !same {
                        return Err(Failure::Module(
                            kind.name(),
                            "the kernel's module table disagrees with the window",
                        ));
                    }
                    let copied = call(
                        "copy module",
                        ctl::copy_module(id, module.index as u32, ipa),
                    )?;
                    if copied != module.data.len() as u64 {
                        return Err(Failure::Module(kind.name(), "copied short"));
                    }
                }
                Step::SetGuestDtb { .. } => {
                    let ci = self.hl.order.get(t.k).copied().unwrap_or(usize::MAX);
                    let mut dtb = GUEST_DTB.lock();
                    let len = hyperlaunch::write_guest_dt(self.cfg, ci, &t.layout, &mut dtb[..])
                        .map_err(Failure::Dtb)?;
                    let bytes = dtb.get(..len).ok_or(Failure::Unexpected("DTB length"))?;
                    call(
                        "copy guest DTB",
                        ctl::copy_to_domain(id, bytes, t.layout.dtb),
                    )?;
                    t.dtb_len = len;
                    // x0 is the DTB, so vCPU 0's context comes with it.
                    call(
                        "set vCPU context",
                        ctl::set_vcpu_context(id, 0, t.layout.kernel, t.layout.dtb),
                    )?;
                }
                Step::MapRegion { region, .. } => {
                    let shm = self
                        .cfg
                        .shm
                        .get(region)
                        .ok_or(Failure::Unexpected("region"))?;
                    let ci = self.hl.order.get(t.k).copied().unwrap_or(usize::MAX);
                    let user = shm
                        .users
                        .iter()
                        .find(|u| u.domain == ci)
                        .ok_or(Failure::Unexpected("region user"))?;
                    let at = self.regions.get(region).copied().unwrap_or(0);
                    call(
                        "share memory",
                        ctl::share(self.me, id, at, user.guest_base, shm.size),
                    )?;
                }
                Step::BindEvtchn { link, .. } => {
                    let c = self
                        .hl
                        .link_evtchn
                        .get(link)
                        .and_then(|&n| self.cfg.evtchns.get(n))
                        .ok_or(Failure::Unexpected("channel"))?;
                    let domid = |i: usize| self.cfg.domains.get(i).map_or(0, |d| d.domid);
                    call(
                        "bind event channel",
                        ctl::bind_evtchn(domid(c.a.domain), c.a.port, domid(c.b.domain), c.b.port),
                    )?;
                }
                Step::ShareMemory { .. } => return Err(Failure::Unexpected("share memory")),
                Step::Reset { .. } => {
                    // -EBUSY: its stop is still under way on another pCPU
                    // (another domain's stop woke us): wait for it, briefly.
                    let start = timer::now();
                    let limit = REAP_WAIT_MS * self.ticks_per_ms;
                    loop {
                        match ctl::reset_domain(id) {
                            Err(e)
                                if e.is(Errno::Ebusy)
                                    && timer::now().saturating_sub(start) < limit =>
                            {
                                timer::delay_us(1_000);
                            }
                            r => break call("reset in place", r)?,
                        }
                    }
                    t.created = true;
                }
                Step::Measure { .. } => self.measure(t)?,
                Step::Unpause { .. } | Step::IntroduceToStore { .. } => {
                    self.issue_start(t.k, step)?
                }
            }
            Ok(())
        }

        /// Records what `t` was given in its event log and prints the boot
        /// line. Payload digests are the module table's, which the kernel
        /// verified at boot; the DTB and label are hashed here.
        fn measure(&self, t: &mut Target<'_>) -> Result<(), Failure> {
            let kernel = Component::Payload(PayloadKind::Kernel);
            t.log
                .record(kernel, Sha256Digest(t.payloads.kernel.sha256))
                .map_err(Failure::Measure)?;
            if let Some(r) = t.payloads.ramdisk {
                let ramdisk = Component::Payload(PayloadKind::Ramdisk);
                t.log
                    .record(ramdisk, Sha256Digest(r.sha256))
                    .map_err(Failure::Measure)?;
            }
            let dtb = GUEST_DTB.lock();
            let bytes = dtb.get(..t.dtb_len).unwrap_or_default();
            t.log
                .measure(Component::GuestDtb, bytes)
                .map_err(Failure::Measure)?;
            drop(dtb);
            t.log
                .measure(Component::Label, t.dc.security_label.as_bytes())
                .map_err(Failure::Measure)?;
            // The log goes to the domain's vTPM once there is one.
            println!(
                "{}",
                BootLine {
                    domain: DomainId(t.dc.domid),
                    name: &t.dc.name,
                    measurements: t.log.measurements(),
                }
            );
            Ok(())
        }

        /// Builds plan domain `k` (and starts it if `start`) and says how
        /// it went.
        fn build_and_report(&mut self, plan: &Plan<'_>, k: usize, start: bool) -> bool {
            let Some(dc) = self.domain(k) else {
                return false;
            };
            let (result, done) = match self.build(plan, k, start) {
                Ok(()) if start => (Ok(()), Life::Running),
                Ok(()) => (Ok(()), Life::Built),
                Err(e) => (Err(e), Life::Absent),
            };
            if let Err(e) = &result {
                println!("domb: cannot build d{} {}: {e}", dc.domid, dc.name);
            }
            if let Some(l) = self.life.get_mut(k) {
                *l = done;
            }
            result.is_ok()
        }

        /// Starts plan domain `k`, built at boot, and says if it failed.
        fn start_and_report(&mut self, plan: &Plan<'_>, k: usize) -> bool {
            let Some(dc) = self.domain(k) else {
                return false;
            };
            let result = self.start(plan, k);
            if let Err(e) = &result {
                println!("domb: cannot start d{} {}: {e}", dc.domid, dc.name);
            }
            if let Some(l) = self.life.get_mut(k) {
                *l = if result.is_ok() {
                    Life::Running
                } else {
                    Life::Absent
                };
            }
            result.is_ok()
        }
    }

    /// The domain being built.
    struct Target<'a> {
        k: usize,
        dc: &'static DomainConfig,
        payloads: Payloads,
        layout: Layout,
        dtb_len: usize,
        created: bool,
        log: EventLog<'a>,
    }

    /// The module table in our module window, which our DT names as the
    /// initrd.
    fn module_window(dtb: usize) -> &'static [u8] {
        // SAFETY: the kernel passes our DTB's address in x0; it lies in our
        // RAM, 2 MiB below the top, and nothing writes it. The header bounds
        // the blob before anything else is read.
        let fdt = match unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
            Ok(f) => f,
            Err(e) => fail(format_args!("our device tree: {e:?}")),
        };
        let chosen = fdt.find_node("/chosen");
        let prop = |name| {
            chosen
                .and_then(|c| c.property(name))
                .and_then(|p| p.as_usize())
        };
        let (Some(start), Some(end)) = (prop("linux,initrd-start"), prop("linux,initrd-end"))
        else {
            fail(format_args!(
                "our device tree names no module window (linux,initrd-start/-end): \
                 is this image hyperlaunch (functions = \"boot\")?"
            ))
        };
        let window_end = BOOT_MODULES_BASE + BOOT_MODULES_SIZE;
        if (start as u64) < BOOT_MODULES_BASE || end as u64 > window_end || end <= start {
            fail(format_args!(
                "the module window {start:#x}..{end:#x} is not in {BOOT_MODULES_BASE:#x}..{window_end:#x}"
            ));
        }
        // SAFETY: the kernel mapped `[start, end)` read-only for this
        // domain's whole life (checked above to be the module window, which
        // our identity map covers as Normal memory) and never changes it;
        // nothing in this program writes there.
        unsafe { core::slice::from_raw_parts(start as *const u8, end - start) }
    }

    /// Places every shared-memory region of `cfg` in our free RAM, between
    /// our image and our DTB, zeroed; their addresses, by region.
    fn place_regions(cfg: &SystemConfig, dtb: usize) -> [u64; tessera_sysdesc::config::MAX_SHM] {
        let mut at = [0u64; tessera_sysdesc::config::MAX_SHM];
        let image_end = core::ptr::addr_of!(__image_end) as usize;
        let mut next = image_end.next_multiple_of(PAGE);
        for (r, region) in cfg.shm.iter().enumerate() {
            let size = region.size as usize;
            let end = next.saturating_add(size);
            if end > dtb {
                fail(format_args!(
                    "shared memory {:?} ({size:#x} bytes) does not fit in our RAM \
                     ({:#x} bytes free): give the boot domain more memory",
                    region.id.as_str(),
                    dtb.saturating_sub(next)
                ));
            }
            // SAFETY: `[next, end)` is our RAM past our image, BSS and
            // stacks and below our DTB; no Rust object lives there and each
            // region gets its own range.
            unsafe { core::ptr::write_bytes(next as *mut u8, 0, size) };
            if let Some(slot) = at.get_mut(r) {
                *slot = next as u64;
            }
            next = end.next_multiple_of(PAGE);
        }
        at
    }

    /// Events: `shared_info`, the upcall, `VIRQ_DOM_EXC` and the timer.
    fn setup_events() {
        gic::init_distributor();
        gic::init_cpu();
        if let Err(e) = events::map_shared_info(&SHARED_INFO_PAGE) {
            fail(format_args!("shared_info: {e}"));
        }
        if let Err(e) = events::register_vcpu_info(0, &VCPU_INFO_PAGE, 0) {
            fail(format_args!("vcpu_info: {e}"));
        }
        events::set_handler(Some(on_event));
        events::enable_upcall();
        match xen::bind_virq(VIRQ_DOM_EXC, 0) {
            Ok(port) => DOM_EXC_PORT.store(port, Ordering::Release),
            Err(e) => fail(format_args!("bind VIRQ_DOM_EXC: {e}")),
        }
        gic::set_handler(VTIMER_INTID, on_timer);
        gic::enable_private(VTIMER_INTID);
        cpu::irq_enable();
    }

    /// SHA-256's block function on the CPU's SHA-256 instructions.
    fn sha256_blocks_hw(state: &mut [u32; 8], blocks: &[u8]) {
        // SAFETY: installed only once `has_sha256` said the CPU has them;
        // the runtime enabled FP/SIMD at EL1 before `main`, and the vector
        // registers it overwrites are caller-saved (AAPCS64).
        unsafe { tessera_sha256::arm::compress_blocks(state, blocks) }
    }

    fn main(dtb: usize) -> ! {
        if tessera_sha256::arm::has_sha256() {
            tessera_domb::measure::use_block_function(sha256_blocks_hw);
        }
        let table = match ModuleTable::parse(module_window(dtb)) {
            Ok(t) => t,
            Err(e) => fail(format_args!("module window: {e}")),
        };
        let Some(system) = table.first(ModuleKind::SystemDtb) else {
            fail(format_args!("the image has no system description"))
        };
        let cfg = match parse_system(system.data) {
            Ok(c) => CONFIG.call_once(|| c),
            Err(e) => fail(format_args!("system description: {e}")),
        };
        let order = match cfg.boot_order() {
            Ok(o) => o,
            Err(e) => fail(format_args!("system description: {e}")),
        };
        let hl = match Hyperlaunch::new(cfg, &order) {
            Ok(h) => HYPERLAUNCH.call_once(|| h),
            Err(e) => fail(format_args!("cannot build this image: {e}")),
        };
        let specs = hl.specs(cfg);
        let plan = match Plan::new(&specs, &hl.links) {
            Ok(p) => p,
            Err(e) => fail(format_args!("cannot build this image: {e}")),
        };
        let me = cfg.domains.get(hl.boot).map_or(0, |d| d.domid);
        let regions = place_regions(cfg, dtb);
        setup_events();
        let ticks_per_ms = (timer::frequency() / 1000).max(1);
        println!(
            "domb: d{me}: building {} domains in boot order",
            hl.order.len()
        );
        let mut b = Builder {
            cfg,
            hl,
            table,
            me,
            regions,
            life: [Life::Absent; MAX_DOMAINS],
            ticks_per_ms,
        };
        // Every domain first, paused; then every one that built starts,
        // in boot order.
        for k in 0..hl.order.len() {
            b.build_and_report(&plan, k, false);
        }
        let mut built = 0;
        for k in 0..hl.order.len() {
            if b.life.get(k) == Some(&Life::Built) && b.start_and_report(&plan, k) {
                built += 1;
            }
        }
        println!(
            "domb: built {built} of {} domains; supervising",
            hl.order.len()
        );
        supervise(&mut b, &plan)
    }

    /// The supervisor's table: every built domain, in boot order, and the
    /// pairs that share a link.
    fn supervisor_for(b: &Builder) -> Supervisor {
        let mut sup = Supervisor::new();
        let now = timer::now();
        for k in 0..b.hl.order.len() {
            let (Some(dc), Some(Life::Running)) = (b.domain(k), b.life.get(k)) else {
                continue;
            };
            let policy = hyperlaunch::on_crash(dc, b.ticks_per_ms);
            if let Err(e) = sup.add_domain(DomainId(dc.domid), policy, now) {
                println!("domb: d{} {}: not supervised: {e}", dc.domid, dc.name);
            }
        }
        for (x, y) in b.hl.peers(b.cfg) {
            if let (Some(a), Some(c)) = (b.domain(x), b.domain(y)) {
                // A failed domain is not in the table: no peer to tell.
                let _ = sup.link(DomainId(a.domid), DomainId(c.domid));
            }
        }
        sup
    }

    fn supervise(b: &mut Builder, plan: &Plan<'_>) -> ! {
        let mut sup = supervisor_for(b);
        loop {
            let pending = (0..b.hl.order.len()).any(|k| {
                b.life.get(k) == Some(&Life::Running) || b.life.get(k) == Some(&Life::Crashed)
            });
            if !pending {
                println!("domb: no domain left to supervise; powering off");
                tessera_rt::exit(ShutdownReason::Poweroff)
            }
            match sup.next_deadline() {
                Some(at) => timer::arm_at(at),
                None => timer::disable(),
            }
            events::block_until(|| {
                DOM_EXC.load(Ordering::Acquire) || TIMER_FIRED.load(Ordering::Acquire)
            });
            let mut actions = supervisor::Actions::new();
            if DOM_EXC.swap(false, Ordering::AcqRel) {
                look_at_stopped(b, &mut sup, &mut actions);
            }
            if TIMER_FIRED.swap(false, Ordering::AcqRel) {
                handle(&mut sup, Event::Tick { now: timer::now() }, &mut actions);
            }
            for action in actions {
                carry_out(b, plan, action);
            }
        }
    }

    /// Feeds `event` to the supervisor and queues what it asks for (at
    /// most one action per domain, so they always fit).
    fn handle(sup: &mut Supervisor, event: Event, actions: &mut supervisor::Actions) {
        match sup.handle(event) {
            Ok(more) => {
                for action in more {
                    let _ = actions.push(action);
                }
            }
            Err(e) => println!("domb: supervisor: {e}"),
        }
    }

    /// After `VIRQ_DOM_EXC`: which running domains stopped, and why.
    fn look_at_stopped(b: &mut Builder, sup: &mut Supervisor, actions: &mut supervisor::Actions) {
        for k in 0..b.hl.order.len() {
            let (Some(dc), Some(Life::Running)) = (b.domain(k), b.life.get(k).copied()) else {
                continue;
            };
            let id = DomainId(dc.domid);
            let mark_done = |b: &mut Builder| {
                if let Some(l) = b.life.get_mut(k) {
                    *l = Life::Done;
                }
            };
            let info = match ctl::domain_info(dc.domid) {
                Ok(info) => info,
                Err(e) => {
                    // Only domB destroys what it built: a domain it cannot
                    // see any more is not coming back.
                    println!("domb: d{} {}: gone ({e})", dc.domid, dc.name);
                    mark_done(b);
                    continue;
                }
            };
            if DomainState::try_from(u64::from(info.state)) != Ok(DomainState::Stopped) {
                continue;
            }
            let now = timer::now();
            let event = match ExitReason::try_from(u64::from(info.exit_reason)) {
                Ok(ExitReason::Poweroff) => {
                    println!("domb: d{} {}: powered off", dc.domid, dc.name);
                    mark_done(b);
                    continue;
                }
                Ok(ExitReason::Reboot) => {
                    println!("domb: d{} {}: asked to reboot", dc.domid, dc.name);
                    Event::RebootRequested { domain: id, now }
                }
                Ok(ExitReason::Crash) | Ok(ExitReason::Fault) => {
                    println!("domb: d{} {}: crashed", dc.domid, dc.name);
                    Event::Crashed { domain: id, now }
                }
                other => {
                    println!(
                        "domb: d{} {}: stopped ({other:?}); left stopped",
                        dc.domid, dc.name
                    );
                    mark_done(b);
                    continue;
                }
            };
            handle(sup, event, actions);
            let life = match sup.status(id) {
                Some(Status::RestartPending { due }) => {
                    let ms = due.saturating_sub(now) / b.ticks_per_ms;
                    println!(
                        "domb: d{} {}: restart in {ms} ms (on-crash = \"restart\")",
                        dc.domid, dc.name
                    );
                    // Gone now, so its peers see their channels close and
                    // the kernel can reap it before the rebuild.
                    let _ = ctl::destroy(dc.domid);
                    Life::Crashed
                }
                // A reboot is reset in place (or rebuilt) by the action
                // that follows.
                _ => Life::Crashed,
            };
            if let Some(l) = b.life.get_mut(k) {
                *l = life;
            }
        }
    }

    /// Plan domain `k` will not run again: if it is a device model, it is
    /// destroyed, and so is every running domain it served, which would
    /// otherwise wait for it for good (their device accesses block while
    /// a device model that restarts is away). Said per domain.
    fn abandon_clients(b: &mut Builder, k: usize) {
        let Some(dc) = b.domain(k) else { return };
        let Some(ci) = b.hl.order.get(k).copied() else {
            return;
        };
        let mut clients = hyperlaunch::clients_of(b.cfg, ci).peekable();
        if clients.peek().is_none() {
            return;
        }
        let _ = ctl::destroy(dc.domid);
        for client in clients {
            let Some(ck) = b.hl.order.iter().position(|&i| i == client) else {
                continue;
            };
            let (Some(cc), Some(Life::Running)) = (b.domain(ck), b.life.get(ck).copied()) else {
                continue;
            };
            let _ = ctl::destroy(cc.domid);
            println!(
                "domb: d{} {}: its device model d{} {} is not coming back; destroyed",
                cc.domid, cc.name, dc.domid, dc.name
            );
            if let Some(l) = b.life.get_mut(ck) {
                *l = Life::Done;
            }
        }
    }

    /// Destroys what is left of plan domain `k` (after a crash, or a
    /// reboot that could not be done in place) and builds and starts it
    /// again as `generation`.
    fn rebuild(
        b: &mut Builder,
        plan: &Plan<'_>,
        k: usize,
        generation: u32,
        notify_peers: &supervisor::Peers,
    ) {
        let Some(dc) = b.domain(k) else { return };
        let _ = ctl::destroy(dc.domid);
        if let Some(l) = b.life.get_mut(k) {
            *l = Life::Absent;
        }
        if b.build_and_report(plan, k, true) {
            println!(
                "domb: d{} {}: rebuilt as generation {generation}",
                dc.domid, dc.name
            );
            tell_peers(dc, notify_peers);
        } else {
            abandon_clients(b, k);
        }
    }

    /// Its static channels to `dc` were bound again just now, which
    /// raised each running peer's port: say so.
    fn tell_peers(dc: &DomainConfig, notify_peers: &supervisor::Peers) {
        for peer in notify_peers {
            println!(
                "domb: {peer}: told that its peer d{} {} restarted",
                dc.domid, dc.name
            );
        }
    }

    fn carry_out(b: &mut Builder, plan: &Plan<'_>, action: Action) {
        match action {
            Action::Rebuild {
                domain,
                generation,
                notify_peers,
            } => {
                if let Some(k) = b.index_of(domain) {
                    rebuild(b, plan, k, generation, &notify_peers);
                }
            }
            Action::ResetInPlace {
                domain,
                generation,
                notify_peers,
            } => {
                let Some(k) = b.index_of(domain) else { return };
                let Some(dc) = b.domain(k) else { return };
                match b.reboot(plan, k) {
                    Ok(()) => {
                        if let Some(l) = b.life.get_mut(k) {
                            *l = Life::Running;
                        }
                        println!(
                            "domb: d{} {}: rebooted in place as generation {generation}",
                            dc.domid, dc.name
                        );
                        tell_peers(dc, &notify_peers);
                    }
                    // A kernel or policy without `ResetDomain`, say: the
                    // domain is built afresh instead (a device model does
                    // not serve that one; the kernel holds it).
                    Err(e) => {
                        println!(
                            "domb: d{} {}: cannot reboot in place: {e}; rebuilding it",
                            dc.domid, dc.name
                        );
                        rebuild(b, plan, k, generation, &notify_peers);
                    }
                }
            }
            Action::LeaveStopped {
                domain,
                reason,
                notify_peers,
            } => {
                let Some(k) = b.index_of(domain) else { return };
                let Some(dc) = b.domain(k) else { return };
                if let Some(l) = b.life.get_mut(k) {
                    *l = Life::Done;
                }
                println!("domb: d{} {}: left stopped: {reason}", dc.domid, dc.name);
                abandon_clients(b, k);
                for peer in notify_peers {
                    // Its channels to the stopped domain are closed
                    // already: a send there fails instead of hanging.
                    println!("domb: {peer}: its peer d{} {} is gone", dc.domid, dc.name);
                }
            }
            Action::RebootSystem { crashed } => {
                let name = b
                    .index_of(crashed)
                    .and_then(|k| b.domain(k))
                    .map_or("?", |d| d.name.as_str());
                println!("domb: {crashed} {name}: on-crash = \"reboot\": resetting the system");
                psci::system_reset()
            }
        }
    }

    tessera_rt::entry!(main);
}

#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
fn main() {}
