//! `tessera-devmodel`: the device-model domain, an IOREQ server.
//!
//! The one idea: this file is only plumbing. At start it reads the domains
//! it serves from its DT (`/tessera-ioreq`, written from the system
//! description by the kernel, or by domB in a hyperlaunch image), registers
//! a slot page and the device ranges for each, maps each one's RAM into its
//! map window, and tells the kernel it is ready to serve it (a served
//! domain does not run before that). Then it loops: take
//! every posted access, hand it to the device at that address (the device
//! logic is the host-tested library), answer it, forward console output, and
//! drive interrupt lines; sleep on the IOREQ VIRQ when there is nothing to do.
//! Nothing wakes it but work: keyboard input comes with its own VIRQ
//! (`VIRQ_CONSOLE_INPUT`), and a partial line of UART output (a prompt, an
//! echo) is forwarded just before it sleeps, so no timer is ever armed.
//!
//! Bootargs `report-sleep`: after a sleep of a second or more, print
//! `devmodel: woke after <ms> ms asleep` (tests use it to show that an
//! idle device model is not woken periodically).
//!
//! Restarts: with a shared-memory region `xen,shm-id = "devmodel-state"`
//! (its builder's memory, lent again to each generation), the devices'
//! registers are saved there before every answer that follows a change
//! (`tessera_devmodel::persist`), and the disks live there too; a new
//! generation finds them, checks them and takes the devices over, so the
//! guests it serves keep their devices across its crash. Bootargs
//! `crash-after=<N>` makes the device model crash on purpose when a guest
//! notifies a virtio queue for the N-th time, before answering it (the
//! tests of that; a guest cannot reach it): only the first generation on a
//! state region, every generation without one.
//!
//! On the host this is an empty program, so the workspace builds and lints.
#![cfg_attr(all(target_arch = "aarch64", target_os = "none"), no_std, no_main)]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod shell {
    use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
    use tessera_devmodel::guest_mem::{GuestMemory, OutOfRange};
    use tessera_devmodel::persist::{self, DomainState, Header, PersistError};
    use tessera_devmodel::pl011::Pl011;
    use tessera_devmodel::virtio::blk::{Blk, MemDisk, SECTOR_SIZE};
    use tessera_devmodel::virtio::console::Console;
    use tessera_devmodel::virtio::mmio::VirtioMmio;
    use tessera_devmodel::virtio::net::{Net, MAX_FRAME};
    use tessera_devmodel::virtio::rng::{ChaCha20Rng, Rng};
    use tessera_devmodel::virtio::switch::{Switch, MAX_PORTS};
    use tessera_ipc::hypercall::ShutdownReason;
    use tessera_ipc::ioreq::{
        MAP_WINDOW_BASE, RANGE_POSTED_WRITES, RANGE_SHADOWED_READS, SLOTS_PER_PAGE,
        VIRQ_CONSOLE_INPUT, VIRQ_IOREQ,
    };
    use tessera_ipc::platform::{
        PL011_BASE, PL011_INTID, PL011_SIZE, RAM_BASE, VIRTIO_MMIO_BASE, VIRTIO_MMIO_INTID_BASE,
        VIRTIO_MMIO_STRIDE,
    };
    use tessera_rt::bootargs::BootArgs;
    use tessera_rt::events::{self, SharedPage};
    use tessera_rt::ioreq::{self, Access, FastView, SlotPage};
    use tessera_rt::{cpu, gic, println, timer, xen};

    /// Most domains one device model serves.
    const MAX_SERVED: usize = 8;
    /// Each served domain's RAM gets 1 GiB of the map window.
    const WINDOW_STRIDE: u64 = 1 << 30;

    static SHARED_INFO_PAGE: SharedPage = SharedPage::new();
    static VCPU_INFO_PAGE: SharedPage = SharedPage::new();
    static SLOT_PAGES: [SharedPage; MAX_SERVED] = [const { SharedPage::new() }; MAX_SERVED];
    static FAST_PAGES: [SharedPage; MAX_SERVED] = [const { SharedPage::new() }; MAX_SERVED];
    /// Set by the upcall handler: look at the slots again.
    static KICKED: AtomicBool = AtomicBool::new(false);
    /// Set by the upcall handler: keyboard input was typed at a domain we
    /// serve (`VIRQ_CONSOLE_INPUT` fired).
    static INPUT: AtomicBool = AtomicBool::new(false);
    /// What to do before or around the next sleep, beyond sleeping
    /// (`BEFORE_SLEEP_*`): one byte, so the loop tests it once.
    static BEFORE_SLEEP: AtomicU8 = AtomicU8::new(0);
    /// Some served UART holds output short of a line end (a prompt, an
    /// echo), to forward before sleeping.
    const BEFORE_SLEEP_FLUSH: u8 = 1;
    /// Bootargs `report-sleep`: report long sleeps.
    const BEFORE_SLEEP_REPORT: u8 = 2;
    /// The event port `VIRQ_CONSOLE_INPUT` is bound to (0: none).
    static INPUT_PORT: AtomicU32 = AtomicU32::new(0);
    /// A sleep at least this long is reported under `report-sleep`.
    const REPORTED_SLEEP_US: u64 = 1_000_000;

    /// A served domain's RAM, through the window the kernel mapped it at.
    struct Window {
        base: *mut u8,
        size: u64,
    }

    impl Window {
        fn offset(&self, gpa: u64, len: usize) -> Result<usize, OutOfRange> {
            let bad = OutOfRange { gpa, len };
            let off = gpa.checked_sub(RAM_BASE).ok_or(bad)?;
            let end = off.checked_add(len as u64).ok_or(bad)?;
            if end > self.size {
                return Err(bad);
            }
            Ok(off as usize)
        }
    }

    impl GuestMemory for Window {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
            let off = self.offset(gpa, buf.len())?;
            // SAFETY: `off + len` is inside the served domain's RAM, mapped
            // at `base` by the kernel for as long as we run; the guest may
            // change it concurrently, so bytes are copied, never referenced.
            unsafe {
                core::ptr::copy_nonoverlapping(self.base.add(off), buf.as_mut_ptr(), buf.len())
            };
            Ok(())
        }

        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
            let off = self.offset(gpa, data.len())?;
            // SAFETY: as in `read`.
            unsafe {
                core::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(off), data.len())
            };
            Ok(())
        }
    }

    /// One virtio-mmio slot's device. Variants differ in size (a console
    /// keeps a 4 KiB output ring); there is no heap to box them, and the
    /// slots live in a static, so the padding costs no stack.
    #[allow(clippy::large_enum_variant)]
    enum Virtio {
        Console(VirtioMmio<Console<4096>>),
        Rng(VirtioMmio<Rng<ChaCha20Rng>>),
        Blk(VirtioMmio<Blk<MemDisk<'static>>>),
        Net(VirtioMmio<Net>),
    }

    /// Runs `$body` with `$d` bound to whichever transport `$dev` holds
    /// (the transports differ only in their device type).
    macro_rules! each_transport {
        ($dev:expr, $d:ident => $body:expr) => {
            match $dev {
                Virtio::Console($d) => $body,
                Virtio::Rng($d) => $body,
                Virtio::Blk($d) => $body,
                Virtio::Net($d) => $body,
            }
        };
    }

    impl Virtio {
        fn snapshot(&self) -> persist::TransportState {
            each_transport!(self, d => d.snapshot())
        }
        fn restore(
            &mut self,
            st: &persist::TransportState,
            mem: &mut Window,
        ) -> Result<(), PersistError> {
            each_transport!(self, d => d.restore(st, mem))
        }
        fn read(&self, off: u64, size: u8, mem: &Window) -> u64 {
            each_transport!(self, d => d.read(off, size, mem))
        }
        fn write(&mut self, off: u64, size: u8, v: u64, mem: &mut Window) {
            each_transport!(self, d => d.write(off, size, v, mem))
        }
        fn irq_level(&self) -> bool {
            each_transport!(self, d => d.irq_level())
        }
    }

    /// Every served domain, with its devices (too big for the stack: each
    /// UART and console keeps KiBs of buffers).
    static SERVED: spin::Mutex<heapless::Vec<Served, MAX_SERVED>> =
        spin::Mutex::new(heapless::Vec::new());

    // SAFETY: the raw pointers in a `Served` (its slot page and RAM window)
    // point at memory mapped into this domain for its whole life, and only
    // the boot vCPU's main loop (never an interrupt handler) uses them.
    unsafe impl Send for Served {}

    /// Print everything `take` drains as domain `domid`'s console output.
    fn forward_output(domid: u16, mut take: impl FnMut(&mut [u8]) -> usize) {
        let mut buf = [0u8; 256];
        loop {
            let n = take(&mut buf);
            if n == 0 {
                return;
            }
            let _ = ioreq::console_write(domid, &buf[..n.min(buf.len())]);
        }
    }

    /// Let the vCPU whose answered access was held go on.
    fn complete_held(held: Option<(u16, u32)>) {
        if let Some((domid, v)) = held {
            let _ = ioreq::complete(domid, v);
        }
    }

    /// Tell the kernel when interrupt line `intid` of `domid` changes level.
    fn drive_line(domid: u16, intid: u32, now: bool, last: &mut bool) {
        if now != *last {
            *last = now;
            let _ = ioreq::set_irq_level(domid, intid, now);
        }
    }

    /// Move keyboard input the kernel holds for `domid` into its UART, as
    /// much as the receive FIFO has room for. `waiting` stays set if the
    /// FIFO filled up (there may be more), so the guest's next access to
    /// the UART, which may have made room, reads again; until then the
    /// bytes wait in the kernel, not in a timer.
    fn pull_input(domid: u16, uart: &mut Pl011, waiting: &mut bool) {
        let room = uart.input_room().min(64);
        if room == 0 {
            return;
        }
        let mut buf = [0u8; 64];
        match ioreq::console_read(domid, &mut buf[..room]) {
            Ok(n) => {
                uart.push_input(buf.get(..n.min(room)).unwrap_or(&[]));
                *waiting = n >= room;
            }
            Err(_) => *waiting = false,
        }
    }

    /// Which device an access reached.
    #[derive(Clone, Copy)]
    enum Touched {
        Uart,
        Virtio(usize),
        Nothing,
    }

    /// One served domain, as the DT describes it.
    struct Served {
        domid: u16,
        name: heapless::String<32>,
        vcpus: usize,
        slots: SlotPage,
        /// Posted writes to apply and the UART's flag register shadow.
        fast: FastView,
        pl011: Option<Pl011>,
        pl011_irq: bool,
        /// The kernel may hold keyboard input for this domain that its
        /// UART had no room for: read more when the guest makes room.
        input_waiting: bool,
        mem: Window,
        /// Slot n: its device (None: a kind this shell does not offer yet)
        /// and its interrupt line's level.
        virtio: heapless::Vec<(Option<Virtio>, bool), 8>,
        /// Every range and its memory registered: it may start.
        ready: bool,
        /// Its record in the state region (its index among the served).
        record: usize,
        /// Device state changed since it was last saved.
        dirty: bool,
    }

    impl Served {
        /// Slot `n`'s net device, with the memory it moves frames in.
        fn net(&mut self, n: usize) -> Option<(&mut VirtioMmio<Net>, &mut Window)> {
            match self.virtio.get_mut(n) {
                Some((Some(Virtio::Net(d)), _)) => Some((d, &mut self.mem)),
                _ => None,
            }
        }

        /// Run one access against the device at its address: a read's
        /// value, and which device it reached.
        fn access(&mut self, a: Access) -> (u64, Touched) {
            let size = a.size;
            if let Some(uart) = self.pl011.as_mut() {
                if a.addr >= PL011_BASE && a.addr - PL011_BASE < PL011_SIZE {
                    let off = a.addr - PL011_BASE;
                    let data = match a.write {
                        Some(v) => {
                            uart.write(off, size, v);
                            0
                        }
                        None => uart.read(off, size),
                    };
                    return (data, Touched::Uart);
                }
            }
            if a.addr >= VIRTIO_MMIO_BASE {
                let n = ((a.addr - VIRTIO_MMIO_BASE) / VIRTIO_MMIO_STRIDE) as usize;
                let off = (a.addr - VIRTIO_MMIO_BASE) % VIRTIO_MMIO_STRIDE;
                if let Some((Some(dev), _)) = self.virtio.get_mut(n) {
                    return match a.write {
                        Some(v) => {
                            dev.write(off, size, v, &mut self.mem);
                            (0, Touched::Virtio(n))
                        }
                        // A virtio-mmio read changes nothing (`read` takes
                        // `&self`): no output or interrupt line to update.
                        None => (dev.read(off, size, &self.mem), Touched::Nothing),
                    };
                }
            }
            // Registered but not emulated here: reads as zero, writes are
            // ignored (a virtio slot then reads MagicValue 0 and Linux
            // skips it).
            (0, Touched::Nothing)
        }

        /// Forward console output and drive interrupt lines of the device
        /// an access reached (only its state can have changed). Inlined so
        /// that an access that changed nothing costs only this test.
        #[inline(always)]
        fn after_access(&mut self, touched: Touched) {
            if !matches!(touched, Touched::Nothing) {
                self.after_change(touched);
            }
        }

        #[inline(never)]
        fn after_change(&mut self, touched: Touched) {
            self.dirty = true;
            let domid = self.domid;
            if let Touched::Virtio(n) = touched {
                if let Some((Some(dev), level)) = self.virtio.get_mut(n) {
                    if let Virtio::Console(c) = dev {
                        if c.pending_output() > 0 {
                            forward_output(domid, |buf| c.take_output(buf));
                        }
                    }
                    drive_line(
                        domid,
                        VIRTIO_MMIO_INTID_BASE + n as u32,
                        dev.irq_level(),
                        level,
                    );
                }
                return;
            }
            if let Some(uart) = self.pl011.as_mut() {
                if self.input_waiting {
                    pull_input(domid, uart, &mut self.input_waiting);
                }
                // FR is read before every byte sent or received: the kernel
                // answers it from this shadow. It never depends on posted
                // writes (transmission is instant here), only on the
                // receive FIFO, which changes only here.
                self.fast.set_shadow(
                    0,
                    PL011_BASE + tessera_devmodel::pl011::reg::FR,
                    u64::from(uart.flag_register()),
                );
                // A line at a time, not a console write per byte; a partial
                // line (a prompt, echo) goes out when we are about to sleep
                // (`flush_partial_output`), with everything the guest added
                // to it meanwhile.
                if uart.output_line_ready() {
                    forward_output(domid, |buf| uart.take_output(buf));
                }
                if uart.pending_output() > 0 {
                    BEFORE_SLEEP.fetch_or(BEFORE_SLEEP_FLUSH, Ordering::Relaxed);
                }
                drive_line(domid, PL011_INTID, uart.irq_level(), &mut self.pl011_irq);
            }
        }

        /// `VIRQ_CONSOLE_INPUT` fired: take what was typed at this domain
        /// (the kernel queues it per domain; one event may stand for any
        /// number of bytes, or for another domain's).
        fn input_arrived(&mut self) {
            if self.pl011.is_some() {
                self.input_waiting = true;
                self.after_change(Touched::Uart);
            }
        }

        /// Forward UART output that is not a whole line yet: the guest is
        /// waiting for input after it (a shell prompt, the echo of a key),
        /// and nothing else would send it.
        fn flush_partial_output(&mut self) {
            if let Some(uart) = self.pl011.as_mut() {
                if uart.pending_output() > 0 {
                    forward_output(self.domid, |buf| uart.take_output(buf));
                }
            }
        }

        /// Save the devices' state in the state region, if there is one
        /// and it changed: before any answer that follows the change goes
        /// back, so a guest never sees a change its device model's next
        /// generation would not know of.
        #[inline(always)]
        fn save_if_dirty(&mut self) {
            if self.dirty && EXTRAS.load(Ordering::Relaxed) & EXTRA_PERSIST != 0 {
                self.save();
            }
        }

        #[inline(never)]
        fn save(&mut self) {
            self.dirty = false;
            let mut state = DomainState {
                domid: self.domid,
                pl011: self.pl011.as_ref().map(Pl011::snapshot),
                virtio: heapless::Vec::new(),
            };
            for (dev, _) in self.virtio.iter() {
                let _ = state.virtio.push(dev.as_ref().map(Virtio::snapshot));
            }
            if let Some(region) = STATE.lock().as_mut() {
                if let Err(e) = region.save(self.record, &state) {
                    println!(
                        "devmodel: d{} {}: cannot save its state: {e}",
                        self.domid, self.name
                    );
                }
            }
        }

        /// Take the devices over from the state a previous generation
        /// saved; each is checked before anything changes, and a domain
        /// whose record does not fit keeps fresh devices.
        fn restore(&mut self, saved: &DomainState) -> Result<usize, PersistError> {
            if saved.domid != self.domid {
                return Err(PersistError::WrongDomain {
                    want: self.domid,
                    found: saved.domid,
                });
            }
            let same_slots = saved.virtio.len() == self.virtio.len()
                && saved
                    .virtio
                    .iter()
                    .zip(self.virtio.iter())
                    .all(|(s, (d, _))| s.is_some() == d.is_some());
            if saved.pl011.is_some() != self.pl011.is_some() || !same_slots {
                return Err(PersistError::DevicesDiffer);
            }
            let mut restored = 0;
            if let (Some(uart), Some(st)) = (self.pl011.as_mut(), saved.pl011.as_ref()) {
                uart.restore(st)?;
                restored += 1;
            }
            for ((dev, _), st) in self.virtio.iter_mut().zip(saved.virtio.iter()) {
                if let (Some(dev), Some(st)) = (dev.as_mut(), st.as_ref()) {
                    dev.restore(st, &mut self.mem)?;
                    restored += 1;
                }
            }
            Ok(restored)
        }

        /// Restore the devices from this domain's record, saying how it
        /// went; a record that does not fit leaves them fresh.
        fn take_over(&mut self, starts: u32) {
            let loaded = STATE.lock().as_mut().map(|r| r.load(self.record));
            let (domid, name) = (self.domid, self.name.clone());
            match loaded {
                Some(Ok(Some(saved))) => match self.restore(&saved) {
                    Ok(n) => println!(
                        "devmodel: d{domid} {name}: {n} devices taken over from generation {}",
                        starts.saturating_sub(1)
                    ),
                    Err(e) => println!(
                        "devmodel: d{domid} {name}: cannot take its devices over: {e}; they start afresh"
                    ),
                },
                Some(Ok(None)) => println!("devmodel: d{domid} {name}: no saved state; devices start afresh"),
                Some(Err(e)) => println!(
                    "devmodel: d{domid} {name}: saved state unusable: {e}; devices start afresh"
                ),
                None => {}
            }
        }

        /// Tell the kernel every interrupt line's level, whatever it was
        /// told before (a previous generation may have left one high).
        fn resync_lines(&mut self) {
            let domid = self.domid;
            for (n, (dev, level)) in self.virtio.iter_mut().enumerate() {
                *level = dev.as_ref().is_some_and(Virtio::irq_level);
                let _ = ioreq::set_irq_level(domid, VIRTIO_MMIO_INTID_BASE + n as u32, *level);
            }
            if let Some(uart) = self.pl011.as_ref() {
                self.pl011_irq = uart.irq_level();
                let _ = ioreq::set_irq_level(domid, PL011_INTID, self.pl011_irq);
                self.fast.set_shadow(
                    0,
                    PL011_BASE + tessera_devmodel::pl011::reg::FR,
                    u64::from(uart.flag_register()),
                );
            }
        }

        /// Serve every posted access; whether there was one. The last one
        /// answered is left in `held` for `ioreq::wait` to complete (with
        /// one call instead of two); an earlier held one is completed first.
        ///
        /// `EXTRAS_ON`: whether any `EXTRA_*` is set (`extras`); the plain
        /// loop is compiled without their tests.
        fn serve<const EXTRAS_ON: bool>(
            &mut self,
            held: &mut Option<(u16, u32)>,
            extras: u8,
        ) -> bool {
            let mut any = false;
            // Posted writes come before any later access of the domain.
            while let Some(a) = self.fast.next_posted() {
                let (_, touched) = self.access(a);
                self.after_access(touched);
                any = true;
            }
            for v in 0..self.vcpus {
                if let Some(a) = self.slots.take(v) {
                    if EXTRAS_ON && extras & EXTRA_CRASH != 0 {
                        crash_if_due(&a);
                    }
                    let (data, touched) = self.access(a);
                    self.after_access(touched);
                    self.slots.answer(v, data);
                    if EXTRAS_ON && extras & EXTRA_PERSIST != 0 {
                        self.save_if_dirty();
                    }
                    complete_held(held.replace((self.domid, v as u32)));
                    any = true;
                }
            }
            if EXTRAS_ON && extras & EXTRA_PERSIST != 0 {
                self.save_if_dirty();
            }
            any
        }
    }

    /// What serving does beyond serving (`EXTRA_*`): one byte, so the
    /// loop tests it once.
    static EXTRAS: AtomicU8 = AtomicU8::new(0);
    /// Device state is saved (there is a state region).
    const EXTRA_PERSIST: u8 = 1;
    /// Bootargs `crash-after` is armed.
    const EXTRA_CRASH: u8 = 2;
    /// The state region's records, once found.
    static STATE: spin::Mutex<Option<StateRegion>> = spin::Mutex::new(None);
    /// Bootargs `crash-after=<N>` (0: never); with a state region, for its
    /// first generation only.
    static CRASH_AFTER: AtomicU32 = AtomicU32::new(0);
    /// QueueNotify writes served so far.
    static NOTIFIES: AtomicU32 = AtomicU32::new(0);

    /// Crash on purpose if `a` is the `crash-after`-th QueueNotify.
    #[cold]
    #[inline(never)]
    fn crash_if_due(a: &Access) {
        let notify = a.write.is_some()
            && a.addr >= VIRTIO_MMIO_BASE
            && (a.addr - VIRTIO_MMIO_BASE) % VIRTIO_MMIO_STRIDE
                == tessera_devmodel::virtio::mmio::reg::QUEUE_NOTIFY;
        if !notify {
            return;
        }
        let n = NOTIFIES.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= CRASH_AFTER.load(Ordering::Relaxed) {
            println!("devmodel: crash-after={n}: crashing on purpose, with a request unanswered");
            tessera_rt::exit(ShutdownReason::Crash)
        }
    }

    /// The records part of the state region, and where each served
    /// domain's next record copy goes.
    struct StateRegion {
        records: &'static mut [u8],
        /// By record: the sequence number of the newest copy, and which
        /// copy the next save overwrites (the older one).
        seq: [u64; MAX_SERVED],
        next_copy: [usize; MAX_SERVED],
    }

    impl StateRegion {
        fn save(&mut self, k: usize, state: &DomainState) -> Result<(), PersistError> {
            let (Some(seq), Some(copy)) = (self.seq.get_mut(k), self.next_copy.get_mut(k)) else {
                return Err(PersistError::Field("record"));
            };
            let range = persist::record_range(k, *copy).ok_or(PersistError::Field("record"))?;
            let out = self
                .records
                .get_mut(range)
                .ok_or(PersistError::RegionTooSmall(0))?;
            let next = seq.wrapping_add(1).max(1);
            persist::encode_record(state, next, out)?;
            *seq = next;
            *copy ^= 1;
            Ok(())
        }

        /// The newest intact record `k`, and set up the next save after it.
        fn load(&mut self, k: usize) -> Result<Option<DomainState>, PersistError> {
            let pair = |copy| persist::record_range(k, copy).and_then(|r| self.records.get(r));
            let (Some(a), Some(b)) = (pair(0), pair(1)) else {
                return Err(PersistError::Field("record"));
            };
            let found = persist::latest(a, b)?;
            let (copy, seq, state) = match found {
                Some(f) => f,
                None => return Ok(None),
            };
            if let (Some(s), Some(c)) = (self.seq.get_mut(k), self.next_copy.get_mut(k)) {
                *s = seq;
                *c = copy ^ 1;
            }
            Ok(Some(state))
        }
    }

    /// This domain's state region, from its DT: the
    /// `/reserved-memory/xen-shmem@...` node whose `xen,id` is
    /// `persist::REGION_ID`, in the share window and at least the records'
    /// size.
    fn find_state_region(fdt: &fdt::Fdt) -> Option<&'static mut [u8]> {
        let node = fdt
            .find_node("/reserved-memory")?
            .children()
            .find(|n| n.property("xen,id").and_then(|p| p.as_str()) == Some(persist::REGION_ID))?;
        let reg = node.property("reg")?.value;
        let word = |i: usize| -> Option<u64> {
            let b: [u8; 8] = reg.get(i * 8..i * 8 + 8)?.try_into().ok()?;
            Some(u64::from_be_bytes(b))
        };
        let (base, size) = (word(0)?, word(1)?);
        let window = tessera_ipc::control::SHARE_WINDOW_BASE
            ..tessera_ipc::control::SHARE_WINDOW_BASE + tessera_ipc::control::SHARE_WINDOW_SIZE;
        let end = base.checked_add(size)?;
        if !window.contains(&base) || end > window.end || (size as usize) < persist::DISK_OFFSET {
            println!(
                "devmodel: the state region {base:#x}+{size:#x} is unusable; not saving state"
            );
            return None;
        }
        // SAFETY: the region is a shared-memory region our builder lent us
        // (it is in our DT, in the share window, which our identity map
        // covers as Normal memory); only its owner, who never touches it
        // after zeroing it at boot, and we map it, and this is the one
        // reference this program makes to it.
        Some(unsafe { core::slice::from_raw_parts_mut(base as *mut u8, size as usize) })
    }

    /// Start saving state in `region`: its header (`None` if it was blank or
    /// unusable, which is said and cleared) and the part past the records,
    /// where the disks go.
    fn take_state_region(region: &'static mut [u8]) -> (Option<Header>, &'static mut [u8]) {
        let header = match persist::decode_header(region) {
            Ok(h) => h,
            Err(e) => {
                println!("devmodel: state region: {e}; starting afresh");
                region.fill(0);
                None
            }
        };
        let (records, disk_area) = region.split_at_mut(persist::DISK_OFFSET);
        *STATE.lock() = Some(StateRegion {
            records,
            seq: [0; MAX_SERVED],
            next_copy: [0; MAX_SERVED],
        });
        EXTRAS.fetch_or(EXTRA_PERSIST, Ordering::Relaxed);
        (header, disk_area)
    }

    /// A PRNG for virtio-rng, seeded from the counter at start-up. Not a
    /// hardware entropy source: it is as unpredictable as its seed.
    fn seeded_rng(slot: usize) -> ChaCha20Rng {
        let mut seed = [0u8; 32];
        for (i, chunk) in seed.chunks_mut(8).enumerate() {
            let t = timer::now().rotate_left(i as u32 * 13) ^ (slot as u64) << 56;
            chunk.copy_from_slice(&t.to_le_bytes());
            timer::delay_us(7);
        }
        ChaCha20Rng::from_seed(seed)
    }

    /// The disks: this domain's own initrd (its `multiboot,ramdisk` module,
    /// a disk image carried in the system image), cut into equal whole-
    /// sector shares, one per virtio-blk slot in the order the slots are
    /// served. Writes land in our RAM, so they outlive a served domain's
    /// reboot (not the whole system's).
    struct DiskStore {
        rest: &'static mut [u8],
        share: usize,
    }

    /// Our initrd (`/chosen`'s range, checked to lie inside our RAM as
    /// `/memory` describes it): the disks' first contents.
    fn initrd(fdt: &fdt::Fdt) -> Option<&'static mut [u8]> {
        let chosen = fdt.find_node("/chosen")?;
        let prop = |name| chosen.property(name).and_then(|p| p.as_usize());
        let (start, end) = (prop("linux,initrd-start")?, prop("linux,initrd-end")?);
        let ram = fdt.memory().regions().next()?;
        let ram_start = ram.starting_address as usize;
        let ram_end = ram_start.checked_add(ram.size?)?;
        if start < ram_start || end > ram_end || end <= start {
            println!("devmodel: the disk store {start:#x}..{end:#x} is not in our RAM");
            return None;
        }
        // SAFETY: the kernel placed the initrd in our RAM (checked above)
        // clear of our image, stack and DTB, and nothing else in this
        // program refers to it; it is handed out once, here.
        Some(unsafe { core::slice::from_raw_parts_mut(start as *mut u8, end - start) })
    }

    impl DiskStore {
        /// The store for `disks` devices over `rest`.
        fn over(rest: &'static mut [u8], disks: usize) -> Option<DiskStore> {
            let sector = SECTOR_SIZE as usize;
            let share = (rest.len() / disks.max(1)) & !(sector - 1);
            if share == 0 {
                println!("devmodel: the disk store is too small for {disks} disks");
                return None;
            }
            println!(
                "devmodel: disk store of {} KiB: {disks} disks of {} KiB",
                rest.len() >> 10,
                share >> 10
            );
            Some(DiskStore { rest, share })
        }

        /// The next disk's bytes.
        fn take(&mut self) -> Option<&'static mut [u8]> {
            if self.rest.len() < self.share {
                return None;
            }
            let rest = core::mem::take(&mut self.rest);
            let (disk, rest) = rest.split_at_mut(self.share);
            self.rest = rest;
            Some(disk)
        }
    }

    /// A served domain's virtio kinds, as `tessera,virtio` lists them.
    fn virtio_kinds<'a>(node: &fdt::node::FdtNode<'_, 'a>) -> impl Iterator<Item = &'a [u8]> {
        let kinds = node
            .property("tessera,virtio")
            .map(|p| p.value)
            .unwrap_or(&[]);
        let kinds = kinds.strip_suffix(&[0]).unwrap_or(kinds);
        kinds.split(|b| *b == 0).filter(|k| !k.is_empty())
    }

    /// A locally administered MAC for domain `domid`'s net device:
    /// 02:54:53:52 ("TSR"), then the domain ID.
    fn mac_for(domid: u16) -> [u8; 6] {
        let [hi, lo] = domid.to_be_bytes();
        [0x02, 0x54, 0x53, 0x52, hi, lo]
    }

    /// The learning switch joining every served net device; port `n` is
    /// `ports[n]`, a (served domain, virtio slot) pair.
    struct Network {
        switch: Switch<MAX_PORTS>,
        ports: heapless::Vec<(usize, usize), MAX_PORTS>,
        /// The frame in transit, kept here so a pump need not zero one.
        frame: [u8; MAX_FRAME],
    }

    impl Network {
        fn new(served: &[Served]) -> Network {
            let mut ports = heapless::Vec::new();
            for (si, s) in served.iter().enumerate() {
                for (n, (dev, _)) in s.virtio.iter().enumerate() {
                    if let Some(Virtio::Net(_)) = dev {
                        if ports.push((si, n)).is_err() {
                            println!(
                                "devmodel: d{} {}: net slot {n} is beyond the switch's {MAX_PORTS} ports",
                                s.domid, s.name
                            );
                        }
                    }
                }
            }
            Network {
                switch: Switch::new(),
                ports,
                frame: [0; MAX_FRAME],
            }
        }

        /// Move every frame a guest transmitted to where the switch sends
        /// it. A frame no receive buffer is posted for is dropped, as on a
        /// wire; each port gives up at most `BURST` frames per call so one
        /// chatty guest cannot starve the others.
        ///
        /// Inline: it runs after every served access, and with no net
        /// device (no port) it is one test.
        #[inline(always)]
        fn pump(&mut self, served: &mut [Served]) {
            if self.ports.is_empty() {
                return;
            }
            self.pump_ports(served);
        }

        fn pump_ports(&mut self, served: &mut [Served]) {
            const BURST: usize = 32;
            let frame = &mut self.frame;
            for (port, &(si, slot)) in self.ports.iter().enumerate() {
                for _ in 0..BURST {
                    let Some(src) = served.get_mut(si) else { break };
                    let Some(n) = src
                        .net(slot)
                        .and_then(|(dev, mem)| dev.pop_tx_frame(frame, mem))
                    else {
                        break;
                    };
                    src.after_access(Touched::Virtio(slot));
                    let Some(frame) = frame.get(..n) else { break };
                    for to in self.switch.forward(port, frame).iter() {
                        let Some(&(di, dslot)) = self.ports.get(to) else {
                            continue;
                        };
                        if let Some(dst) = served.get_mut(di) {
                            if let Some((dev, mem)) = dst.net(dslot) {
                                let _ = dev.deliver(frame, mem);
                            }
                            dst.after_access(Touched::Virtio(dslot));
                        }
                    }
                }
            }
        }
    }

    fn on_event(port: u32) {
        if port == INPUT_PORT.load(Ordering::Relaxed) {
            INPUT.store(true, Ordering::Release);
        } else {
            KICKED.store(true, Ordering::Release);
        }
    }

    /// Reads `/tessera-ioreq` and sets up each served domain; then says
    /// `Ready` for each one whose ranges and memory all registered (one
    /// that failed stays held by the kernel, with a line saying why).
    fn setup(dtb: usize, served: &mut heapless::Vec<Served, MAX_SERVED>) {
        // SAFETY: by the boot protocol x0 holds the address of our DTB,
        // placed in RAM by the kernel and never overwritten.
        let Ok(fdt) = (unsafe { fdt::Fdt::from_ptr(dtb as *const u8) }) else {
            println!("devmodel: no device tree");
            tessera_rt::exit(ShutdownReason::Crash)
        };
        let Some(root) = fdt.find_node("/tessera-ioreq") else {
            println!("devmodel: /tessera-ioreq is missing: this domain serves no one");
            return;
        };
        let disks = root
            .children()
            .map(|node| virtio_kinds(&node).filter(|k| *k == b"blk").count())
            .sum::<usize>();
        let region = find_state_region(&fdt);
        let (restoring, disk_area) = match region {
            Some(r) => {
                let (h, disk_area) = take_state_region(r);
                (h, Some(disk_area))
            }
            None => (None, None),
        };
        let starts = restoring.map_or(0, |h| h.starts);
        let crash_after = BootArgs::new(tessera_rt::bootargs()).number("crash-after");
        match crash_after {
            Some(_) if EXTRAS.load(Ordering::Relaxed) & EXTRA_PERSIST != 0 && starts > 0 => {
                println!("devmodel: generation {starts} on this state region: crash-after is for the first only");
            }
            Some(n) => {
                CRASH_AFTER.store(n.clamp(1, u64::from(u32::MAX)) as u32, Ordering::Relaxed);
                EXTRAS.fetch_or(EXTRA_CRASH, Ordering::Relaxed);
            }
            None => {}
        }
        let mut disk_bytes = 0;
        let mut store = if disks > 0 {
            match (initrd(&fdt), disk_area) {
                (Some(src), Some(area)) if area.len() >= src.len() => {
                    let len = src.len();
                    let (kept, _) = area.split_at_mut(len);
                    if restoring.is_some_and(|h| h.disk_bytes == len as u64) {
                        println!(
                            "devmodel: disks kept in the state region ({} KiB)",
                            len >> 10
                        );
                    } else {
                        kept.copy_from_slice(src);
                        println!(
                            "devmodel: disks copied into the state region ({} KiB)",
                            len >> 10
                        );
                    }
                    disk_bytes = len as u64;
                    DiskStore::over(kept, disks)
                }
                (Some(src), area) => {
                    if area.is_some() {
                        println!(
                            "devmodel: the state region has no room for the disks ({} KiB): they do not survive a restart",
                            src.len() >> 10
                        );
                    }
                    DiskStore::over(src, disks)
                }
                (None, _) => None,
            }
        } else {
            None
        };
        if let Some(r) = STATE.lock().as_mut() {
            let header = Header {
                starts: starts.saturating_add(1),
                disk_bytes,
            };
            if let Err(e) = persist::encode_header(&header, r.records) {
                println!("devmodel: state region: {e}");
            }
        }
        if disks > 0 && store.is_none() {
            println!(
                "devmodel: {disks} virtio-blk devices but no disk store (give this domain a multiboot,ramdisk module)"
            );
        }
        for node in root.children() {
            let k = served.len();
            let prop_u32 = |name| node.property(name).and_then(|p| p.as_usize()).unwrap_or(0);
            let domid = prop_u32("tessera,domid") as u16;
            let vcpus = prop_u32("tessera,vcpus").min(SLOTS_PER_PAGE);
            let (Some(page), Some(fast_page)) = (SLOT_PAGES.get(k), FAST_PAGES.get(k)) else {
                println!("devmodel: more than {MAX_SERVED} domains to serve; ignoring the rest");
                break;
            };
            let name = node
                .property("tessera,name")
                .and_then(|p| p.as_str())
                .unwrap_or("?");
            if let Err(e) = ioreq::register(domid, page.gfn() << 12, fast_page.gfn() << 12) {
                println!("devmodel: cannot serve d{domid} {name}: register: {e}");
                continue;
            }
            // Everything below must register for the domain to be started.
            let mut complete = true;
            let window = MAP_WINDOW_BASE + k as u64 * WINDOW_STRIDE;
            let ram = match ioreq::map_memory(domid, window) {
                Ok(size) => {
                    println!(
                        "devmodel: serving d{domid} {name}: {vcpus} vCPUs, {} MiB RAM at {window:#x}",
                        size >> 20
                    );
                    size.min(WINDOW_STRIDE)
                }
                Err(e) => {
                    println!("devmodel: d{domid} {name}: cannot map its RAM: {e}");
                    complete = false;
                    0
                }
            };
            let pl011 = node.property("tessera,vpl011").is_some();
            if pl011 {
                // Its writes are posted: the kernel queues them and the
                // guest goes on (see `after_access` for the FR shadow).
                if let Err(e) = ioreq::map_range(
                    domid,
                    PL011_BASE,
                    PL011_SIZE,
                    RANGE_POSTED_WRITES | RANGE_SHADOWED_READS,
                ) {
                    println!("devmodel: d{domid} {name}: PL011 range: {e}");
                    complete = false;
                }
            }
            // SAFETY: the page is ours alone, registered just above, and
            // `vcpus` is capped at SLOTS_PER_PAGE.
            let slots = unsafe { SlotPage::new(page.as_ptr().as_ptr(), vcpus) };
            // SAFETY: registered just above as this domain's fast page, and
            // ours alone.
            let fast = unsafe { FastView::new(fast_page.as_ptr().as_ptr()) };
            let _ = served.push(Served {
                domid,
                name: heapless::String::try_from(name).unwrap_or_default(),
                vcpus,
                slots,
                fast,
                pl011: pl011.then(Pl011::new),
                pl011_irq: false,
                // Input may have been typed before we registered.
                input_waiting: true,
                mem: Window {
                    base: window as *mut u8,
                    size: ram,
                },
                virtio: heapless::Vec::new(),
                ready: true,
                record: k,
                dirty: true,
            });
            // Devices go straight into the static list, one at a time: all
            // of them together would not fit on the stack.
            let Some(this) = served.last_mut() else {
                continue;
            };
            for (n, kind) in virtio_kinds(&node).enumerate() {
                let base = VIRTIO_MMIO_BASE + n as u64 * VIRTIO_MMIO_STRIDE;
                if let Err(e) = ioreq::map_range(domid, base, VIRTIO_MMIO_STRIDE, 0) {
                    println!("devmodel: d{domid} {name}: virtio slot {n}: {e}");
                    complete = false;
                }
                // Each device is built in its slot: built aside and moved
                // in, the net device's 12 KiB of frame buffers were copied
                // several times over, byte by byte (unaligned), about
                // 0.3 M instructions of the guests' start.
                if this.virtio.push((None, false)).is_err() {
                    continue;
                }
                let Some((slot, _)) = this.virtio.last_mut() else {
                    continue;
                };
                match kind {
                    b"console" => {
                        *slot = Some(Virtio::Console(VirtioMmio::new(Console::<4096>::new())))
                    }
                    b"rng" => *slot = Some(Virtio::Rng(VirtioMmio::new(Rng::new(seeded_rng(n))))),
                    b"blk" => match store.as_mut().and_then(DiskStore::take) {
                        Some(disk) => {
                            *slot = Some(Virtio::Blk(VirtioMmio::new(Blk::new(
                                MemDisk::new(disk),
                                name.as_bytes(),
                            ))))
                        }
                        None => {
                            println!("devmodel: d{domid} {name}: virtio slot {n}: no disk for it");
                        }
                    },
                    b"net" => *slot = Some(Virtio::Net(VirtioMmio::new(Net::new(mac_for(domid))))),
                    _ => {
                        println!("devmodel: d{domid} {name}: virtio slot {n} is not emulated yet");
                    }
                }
            }
            if restoring.is_some() {
                this.take_over(starts);
            }
            this.resync_lines();
            this.save_if_dirty();
            if !complete {
                println!("devmodel: d{domid} {name}: not ready (see above); it stays held");
                this.ready = false;
            }
        }
        for s in served.iter().filter(|s| s.ready) {
            if let Err(e) = ioreq::ready(s.domid) {
                println!("devmodel: d{} {}: ready: {e}", s.domid, s.name);
            }
        }
    }

    /// Sleep until there is work: in `ioreq::wait`, completing the held
    /// answer in the same call if there is one.
    #[inline(always)]
    fn sleep(served: &[Served], held: Option<(u16, u32)>) {
        if let Some((domid, v)) = held {
            if ioreq::wait(domid, Some(v)).is_err() {
                // Not for us to hold up: complete it the plain way.
                complete_held(Some((domid, v)));
            }
        } else if let Some(s) = served.first() {
            let _ = ioreq::wait(s.domid, None);
        } else {
            let _ = tessera_rt::hypercall::sched_block();
        }
    }

    /// `sleep`, after forwarding partial lines of UART output, and
    /// reporting a sleep of `REPORTED_SLEEP_US` or more under bootargs
    /// `report-sleep` (`BEFORE_SLEEP`). Out of line, so the plain path
    /// keeps its registers.
    #[cold]
    #[inline(never)]
    fn sleep_after_extras(served: &mut [Served], mut held: Option<(u16, u32)>) {
        let extras = BEFORE_SLEEP.fetch_and(!BEFORE_SLEEP_FLUSH, Ordering::Relaxed);
        if extras & BEFORE_SLEEP_FLUSH != 0 {
            // The vCPU whose answer is held goes on first: it need not
            // wait for console output (one more call, only when flushing).
            complete_held(held.take());
            for s in served.iter_mut() {
                s.flush_partial_output();
            }
        }
        if extras & BEFORE_SLEEP_REPORT == 0 {
            sleep(served, held);
            return;
        }
        let from = timer::now();
        sleep(served, held);
        let asleep = timer::now().wrapping_sub(from);
        let freq = timer::frequency();
        if asleep >= timer::ticks_for_us(freq, REPORTED_SLEEP_US) {
            let ms = asleep / (freq / 1000).max(1);
            println!("devmodel: woke after {ms} ms asleep");
        }
    }

    fn main(dtb: usize) -> ! {
        gic::init_distributor();
        gic::init_cpu();
        if let Err(e) = events::map_shared_info(&SHARED_INFO_PAGE) {
            println!("devmodel: shared_info: {e}");
            tessera_rt::exit(ShutdownReason::Crash)
        }
        if let Err(e) = events::register_vcpu_info(0, &VCPU_INFO_PAGE, 0) {
            println!("devmodel: vcpu_info: {e}");
            tessera_rt::exit(ShutdownReason::Crash)
        }
        events::set_handler(Some(on_event));
        events::enable_upcall();
        let port = match xen::bind_virq(VIRQ_IOREQ, 0) {
            Ok(p) => p,
            Err(e) => {
                println!("devmodel: bind VIRQ_IOREQ: {e}");
                tessera_rt::exit(ShutdownReason::Crash)
            }
        };
        match xen::bind_virq(VIRQ_CONSOLE_INPUT, 0) {
            Ok(p) => INPUT_PORT.store(p, Ordering::Relaxed),
            // Everything but keyboard input still works.
            Err(e) => println!("devmodel: bind VIRQ_CONSOLE_INPUT: {e}"),
        }
        cpu::irq_enable();
        if BootArgs::new(tessera_rt::bootargs()).has_flag("report-sleep") {
            BEFORE_SLEEP.fetch_or(BEFORE_SLEEP_REPORT, Ordering::Relaxed);
        }
        let mut served = SERVED.lock();
        setup(dtb, &mut served);
        println!(
            "devmodel: ready, {} domains, event port {port}",
            served.len()
        );
        let network = Network::new(&served);
        // Set by `setup` only: the loop without extras is compiled apart.
        match EXTRAS.load(Ordering::Relaxed) {
            0 => serve_forever::<false>(&mut served, network, 0),
            extras => serve_forever::<true>(&mut served, network, extras),
        }
    }

    /// Serve every domain, sleeping when there is nothing to do.
    /// `EXTRAS_ON`: as in `Served::serve`.
    fn serve_forever<const EXTRAS_ON: bool>(
        served: &mut heapless::Vec<Served, MAX_SERVED>,
        mut network: Network,
        extras: u8,
    ) -> ! {
        // An answered access not yet completed: `ioreq::wait` completes it
        // and sleeps in one call.
        let mut held = None;
        loop {
            KICKED.store(false, Ordering::Release);
            let mut any = false;
            for s in served.iter_mut() {
                any |= s.serve::<EXTRAS_ON>(&mut held, extras);
            }
            if any {
                network.pump(served);
            }
            if INPUT.swap(false, Ordering::AcqRel) {
                for s in served.iter_mut() {
                    s.input_arrived();
                }
            }
            // Frames moved and input taken change device state too: it is
            // saved before the held answer goes back.
            if EXTRAS_ON && extras & EXTRA_PERSIST != 0 {
                for s in served.iter_mut() {
                    s.save_if_dirty();
                }
            }
            // No second pass to see whether serving is done: the check
            // below looks at the same slots and rings, and loops back here
            // if anything arrived meanwhile.
            //
            // With IRQs masked an interrupt that arrives after the check
            // still ends the wait; it is taken once they are unmasked.
            cpu::irq_disable();
            let work = KICKED.load(Ordering::Acquire)
                || INPUT.load(Ordering::Acquire)
                || served
                    .iter()
                    .any(|s| s.slots.any_ready() || s.fast.pending());
            if work {
                // Not to be held up behind the new work.
                complete_held(held.take());
            } else if BEFORE_SLEEP.load(Ordering::Relaxed) != 0 {
                sleep_after_extras(served, held.take());
            } else {
                sleep(served, held.take());
            }
            cpu::irq_enable();
        }
    }

    tessera_rt::entry!(main);
}

#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
fn main() {}
