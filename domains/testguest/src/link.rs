//! What the two-domain tests and benchmarks share: the static link the image
//! gives a domain (an event-channel port and a shared-memory region, named
//! in bootargs as `port=<p> shm=<guest base> shm_size=<bytes>`), and this
//! domain's event set-up.
//!
//! The one idea: the image's `system.dts` is the single source of the link
//! (the kernel binds the port and maps the region before the domain runs),
//! and bootargs only repeat its numbers to the guest, so the guest needs no
//! device-tree parsing. A region is accepted only below RAM, where it cannot
//! alias anything of this program's.

use crate::check::{wait_until, Reason};
use tessera_ipc::platform::RAM_BASE;
use tessera_rt::bootargs::BootArgs;
use tessera_rt::events::{self, SharedPage};
use tessera_rt::shm::SharedRegion;
use tessera_rt::{cpu, gic};

static SHARED_INFO_PAGE: SharedPage = SharedPage::new();
static VCPU_INFO_PAGE: SharedPage = SharedPage::new();

/// Our end of the static event channel.
pub struct Link {
    pub port: u32,
}

/// Reads the port from bootargs and sets up events on this (the boot) CPU:
/// `shared_info`, vCPU 0's `vcpu_info`, the upcall, IRQs on.
pub fn connect(args: &BootArgs<'_>) -> Result<Link, Reason> {
    let Some(port) = args.number("port").and_then(|p| u32::try_from(p).ok()) else {
        fail!("bootargs need port=<our end of the static event channel>");
    };
    gic::init_distributor();
    gic::init_cpu();
    ok!(
        events::map_shared_info(&SHARED_INFO_PAGE),
        "add_to_physmap(shared_info)"
    );
    ok!(
        events::register_vcpu_info(0, &VCPU_INFO_PAGE, 0),
        "register_vcpu_info(vcpu 0)"
    );
    events::enable_upcall();
    cpu::irq_enable();
    Ok(Link { port })
}

/// The shared region named by bootargs, which must hold `min_size` bytes.
pub fn region(args: &BootArgs<'_>, min_size: usize) -> Result<SharedRegion, Reason> {
    let (Some(base), Some(size)) = (args.number("shm"), args.number("shm_size")) else {
        fail!("bootargs need shm=<guest base> shm_size=<bytes>");
    };
    let end = base.saturating_add(size);
    ensure!(
        end <= RAM_BASE && size >= min_size as u64,
        "shared region {base:#x}+{size:#x} must lie below RAM and hold {min_size:#x} bytes"
    );
    // SAFETY: the region lies wholly below guest RAM (checked above), so no
    // Rust object of this program is there; the image maps it for this
    // domain before it starts (a wrong address only faults at stage 2).
    match unsafe { SharedRegion::new(base as usize, size as usize) } {
        Some(region) => Ok(region),
        None => fail!("shared region base {base:#x} is not 8-byte aligned"),
    }
}

impl Link {
    /// Sends an event to the peer.
    pub fn notify(&self) -> Result<(), Reason> {
        ok!(
            tessera_rt::xen::send(self.port),
            "send on port {}",
            self.port
        );
        Ok(())
    }

    /// Waits (spinning, IRQs on) up to `ms` for an event from the peer and
    /// consumes it.
    pub fn wait(&self, ms: u64) -> bool {
        wait_until(ms, || events::take(self.port))
    }
}
