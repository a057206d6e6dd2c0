//! Restart tests, for a hyperlaunch image whose boot domain rebuilds a
//! crashed domain (`on-crash = "restart"`):
//!
//! - `test=restart-crasher port=<p> shm=<base> shm_size=<n>`: counts its
//!   runs in the first word of the shared region (which the boot domain
//!   lends, so it outlives a crash). The first run tells its peer it is up
//!   (one event), waits until the peer has seen it, and crashes on purpose;
//!   a later run sends nothing, so its peer can only learn of it from the
//!   kernel, and passes once the peer has seen it bound again.
//! - `test=restart-peer port=<p> shm=<base> shm_size=<n>`: the crasher's
//!   peer, started first. It sees the first run's event, then its port go
//!   back to unbound when the crasher is destroyed, then an event on the
//!   same port once the rebuilt crasher is bound to it again: the "peer
//!   restarted" signal (docs/03). It passes once the new run has counted
//!   itself.
//!
//! The one idea: the peer never hangs on a dead channel; every wait is
//! bounded and names what never happened.

use crate::check::{wait_until, Reason, TestResult};
use crate::link;
use tessera_ipc::event_channel::DOMID_SELF;
use tessera_ipc::hypercall::ShutdownReason;
use tessera_rt::bootargs::BootArgs;
use tessera_rt::println;
use tessera_rt::xen::{self, PortState};

/// Where the crasher counts its runs.
const RUNS: usize = 0;
/// Where the peer says it has seen the first run (1), then the rebuilt
/// crasher bound to its port again (2).
const SEEN: usize = 8;
const REGION_BYTES: usize = 0x1000;
/// Longest the peer waits for each step (the restart back-off included).
const WAIT_MS: u64 = 10_000;

/// `test=restart-crasher`.
pub fn crasher() -> TestResult {
    let args = BootArgs::new(tessera_rt::bootargs());
    let region = link::region(&args, REGION_BYTES)?;
    let link = link::connect(&args)?;
    let run = region.load_u64(RUNS) + 1;
    region.store_u64(RUNS, run);
    println!("restart: run {run}");
    if run == 1 {
        link.notify()?;
        ensure!(
            wait_until(WAIT_MS, || region.load_u64(SEEN) == 1),
            "the peer never saw the first run"
        );
        println!("restart: crashing on purpose");
        tessera_rt::exit(ShutdownReason::Crash)
    }
    // Powering off closes the channel: not before the peer has seen it
    // bound again, or it would find the port unbound once more.
    ensure!(
        wait_until(WAIT_MS, || region.load_u64(SEEN) == 2),
        "the peer never saw the rebuilt crasher"
    );
    Ok(())
}

fn port_state(port: u32) -> Result<PortState, Reason> {
    Ok(ok!(xen::status(DOMID_SELF, port), "status({port})").state)
}

/// `test=restart-peer`.
pub fn peer() -> TestResult {
    let args = BootArgs::new(tessera_rt::bootargs());
    let region = link::region(&args, REGION_BYTES)?;
    let link = link::connect(&args)?;
    let port = link.port;
    ensure!(link.wait(WAIT_MS), "no event from the crasher's first run");
    ensure!(
        region.load_u64(RUNS) == 1,
        "the crasher's first run counted {} runs",
        region.load_u64(RUNS)
    );
    let PortState::Interdomain {
        remote,
        port: remote_port,
    } = port_state(port)?
    else {
        fail!("port {port} is not bound after the crasher's event");
    };
    println!("restart-peer: d{remote} is up (its port {remote_port})");
    region.store_u64(SEEN, 1);

    let mut last = None;
    let unbound = wait_until(WAIT_MS, || {
        last = xen::status(DOMID_SELF, port).ok().map(|s| s.state);
        last == Some(PortState::Unbound { remote })
    });
    ensure!(
        unbound,
        "port {port} never went back to waiting for d{remote}: {last:?}"
    );
    println!("restart-peer: d{remote} is gone; port {port} waits for it");

    ensure!(
        link.wait(WAIT_MS),
        "no event on port {port} after d{remote} went away: the peer hangs"
    );
    let again = port_state(port)?;
    ensure!(
        again
            == PortState::Interdomain {
                remote,
                port: remote_port
            },
        "after the peer-restarted event port {port} is {again:?}"
    );
    println!("restart-peer: peer restarted: port {port} is bound to d{remote} again");
    region.store_u64(SEEN, 2);

    ensure!(
        wait_until(WAIT_MS, || region.load_u64(RUNS) == 2),
        "the rebuilt crasher never ran (runs = {})",
        region.load_u64(RUNS)
    );
    Ok(())
}
