//! `tessera-devmodel`: the device-model domain, an IOREQ server.
//!
//! The one idea: this file is only plumbing. At start it reads the domains
//! it serves from its DT (`/tessera-ioreq`, written by the kernel from the
//! system description), registers a slot page and the device ranges for
//! each, and maps each one's RAM into its map window. Then it loops: take
//! every posted access, hand it to the device at that address (the device
//! logic is the host-tested library), answer it, forward console output, and
//! drive interrupt lines; sleep on the IOREQ VIRQ when there is nothing to do.
//!
//! On the host this is an empty program, so the workspace builds and lints.
#![cfg_attr(all(target_arch = "aarch64", target_os = "none"), no_std, no_main)]
#![forbid(unsafe_op_in_unsafe_fn)]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod shell {
    use core::sync::atomic::{AtomicBool, Ordering};
    use tessera_devmodel::pl011::Pl011;
    use tessera_ipc::hypercall::ShutdownReason;
    use tessera_ipc::ioreq::{MAP_WINDOW_BASE, SLOTS_PER_PAGE, VIRQ_IOREQ};
    use tessera_ipc::platform::VTIMER_INTID;
    use tessera_ipc::platform::{PL011_BASE, PL011_INTID, PL011_SIZE};
    use tessera_rt::events::{self, SharedPage};
    use tessera_rt::ioreq::{self, Access, SlotPage};
    use tessera_rt::{cpu, gic, println, timer, xen};

    /// Most domains one device model serves.
    const MAX_SERVED: usize = 8;
    /// Each served domain's RAM gets 1 GiB of the map window.
    const WINDOW_STRIDE: u64 = 1 << 30;

    static SHARED_INFO_PAGE: SharedPage = SharedPage::new();
    static VCPU_INFO_PAGE: SharedPage = SharedPage::new();
    static SLOT_PAGES: [SharedPage; MAX_SERVED] = [const { SharedPage::new() }; MAX_SERVED];
    /// Set by the upcall handler: look at the slots again.
    static KICKED: AtomicBool = AtomicBool::new(false);
    /// Set by the timer: poll the console for keyboard input.
    static TICK: AtomicBool = AtomicBool::new(false);
    /// How often keyboard input is polled while idle (the kernel's console
    /// is a polled UART).
    const INPUT_POLL_US: u64 = 20_000;

    /// One served domain, as the DT describes it.
    struct Served {
        domid: u16,
        vcpus: usize,
        slots: SlotPage,
        pl011: Option<Pl011>,
        pl011_irq: bool,
    }

    impl Served {
        /// Run one access against the device at its address; a read's value.
        fn access(&mut self, a: Access) -> u64 {
            let size = a.size;
            if let Some(uart) = self.pl011.as_mut() {
                if a.addr >= PL011_BASE && a.addr - PL011_BASE < PL011_SIZE {
                    let off = a.addr - PL011_BASE;
                    return match a.write {
                        Some(v) => {
                            uart.write(off, size, v);
                            0
                        }
                        None => uart.read(off, size),
                    };
                }
            }
            // Registered but unknown (cannot happen: ranges come from the
            // same DT): reads as zero, writes ignored.
            0
        }

        /// Forward console output and drive interrupt lines.
        fn after_access(&mut self) {
            if let Some(uart) = self.pl011.as_mut() {
                let mut buf = [0u8; 256];
                loop {
                    let n = uart.take_output(&mut buf);
                    if n == 0 {
                        break;
                    }
                    let _ = ioreq::console_write(self.domid, &buf[..n]);
                }
                let level = uart.irq_level();
                if level != self.pl011_irq {
                    self.pl011_irq = level;
                    let _ = ioreq::set_irq_level(self.domid, PL011_INTID, level);
                }
            }
        }

        /// Move keyboard input (if this domain has the focus) into the UART.
        fn poll_input(&mut self) {
            let Some(uart) = self.pl011.as_mut() else {
                return;
            };
            let room = uart.input_room().min(64);
            if room == 0 {
                return;
            }
            let mut buf = [0u8; 64];
            if let Ok(n) = ioreq::console_read(self.domid, &mut buf[..room]) {
                if n > 0 {
                    uart.push_input(&buf[..n.min(room)]);
                    self.after_access();
                }
            }
        }

        /// Serve every posted access; whether there was one.
        fn serve(&mut self) -> bool {
            let mut any = false;
            for v in 0..self.vcpus {
                if let Some(a) = self.slots.take(v) {
                    let data = self.access(a);
                    self.after_access();
                    self.slots.answer(v, data);
                    let _ = ioreq::complete(self.domid, v as u32);
                    any = true;
                }
            }
            any
        }
    }

    fn on_event(_port: u32) {
        KICKED.store(true, Ordering::Release);
    }

    fn on_timer(_intid: u32) {
        timer::disable();
        TICK.store(true, Ordering::Release);
    }

    /// Reads `/tessera-ioreq` and sets up each served domain.
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
        for node in root.children() {
            let k = served.len();
            let prop_u32 = |name| node.property(name).and_then(|p| p.as_usize()).unwrap_or(0);
            let domid = prop_u32("tessera,domid") as u16;
            let vcpus = prop_u32("tessera,vcpus").min(SLOTS_PER_PAGE);
            let Some(page) = SLOT_PAGES.get(k) else {
                println!("devmodel: more than {MAX_SERVED} domains to serve; ignoring the rest");
                break;
            };
            let name = node
                .property("tessera,name")
                .and_then(|p| p.as_str())
                .unwrap_or("?");
            if let Err(e) = ioreq::register(domid, page.gfn() << 12) {
                println!("devmodel: cannot serve d{domid} {name}: register: {e}");
                continue;
            }
            let window = MAP_WINDOW_BASE + k as u64 * WINDOW_STRIDE;
            match ioreq::map_memory(domid, window) {
                Ok(size) => println!(
                    "devmodel: serving d{domid} {name}: {vcpus} vCPUs, {} MiB RAM at {window:#x}",
                    size >> 20
                ),
                Err(e) => println!("devmodel: d{domid} {name}: cannot map its RAM: {e}"),
            }
            let pl011 = node.property("tessera,vpl011").is_some();
            if pl011 {
                if let Err(e) = ioreq::map_range(domid, PL011_BASE, PL011_SIZE) {
                    println!("devmodel: d{domid} {name}: PL011 range: {e}");
                }
            }
            // SAFETY: the page is ours alone, registered just above, and
            // `vcpus` is capped at SLOTS_PER_PAGE.
            let slots = unsafe { SlotPage::new(page.as_ptr().as_ptr(), vcpus) };
            let _ = served.push(Served {
                domid,
                vcpus,
                slots,
                pl011: pl011.then(Pl011::new),
                pl011_irq: false,
            });
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
        gic::set_handler(VTIMER_INTID, on_timer);
        gic::enable_private(VTIMER_INTID);
        cpu::irq_enable();
        let poll = timer::ticks_for_us(timer::frequency(), INPUT_POLL_US);
        let mut served = heapless::Vec::new();
        setup(dtb, &mut served);
        println!(
            "devmodel: ready, {} domains, event port {port}",
            served.len()
        );
        timer::arm_after(poll);
        loop {
            KICKED.store(false, Ordering::Release);
            let mut any = false;
            for s in served.iter_mut() {
                any |= s.serve();
            }
            if TICK.swap(false, Ordering::AcqRel) {
                for s in served.iter_mut() {
                    s.poll_input();
                }
                timer::arm_after(poll);
            }
            if !any {
                events::block_until(|| {
                    KICKED.load(Ordering::Acquire)
                        || TICK.load(Ordering::Acquire)
                        || served.iter().any(|s| s.slots.any_ready())
                });
            }
        }
    }

    tessera_rt::entry!(main);
}

#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
fn main() {}
