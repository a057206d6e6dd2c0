//! `test=pingpong role=ping|pong port=<p> shm=<base> shm_size=<n> count=<n>`:
//! two domains on two pCPUs talk over a static shared-memory region holding
//! two byte rings (requests ping→pong, replies pong→ping) and one static
//! event channel. Ping sends `count` messages of varied length and content
//! (empty ones and ones as long as the buffers included), up to `WINDOW`
//! ahead of the replies, so both rings fill up and both sides wait for
//! space as well as for data; pong checks each request and echoes it; ping
//! checks every byte of every reply. Both print `TEST pingpong PASS`.
//!
//! The one idea: one event channel serves both rings, so an event means only
//! "look again". Each side loops: make whatever progress the rings allow,
//! send an event whenever the ring says the peer asked for one, and wait for
//! an event only after a pass that made no progress (the ring calls that
//! returned empty or full have then armed the peer's notification, so the
//! wait cannot miss it).
//!
//! Region layout: requests at 0, replies at `RING_BYTES`, then a control
//! page whose first word ping sets to 1 when it has checked every reply, so
//! pong stays up (and its port bound) until ping no longer needs it.

use crate::check::{Reason, TestResult};
use crate::link::{self, Link};
use tessera_ipc::ring::{layout, ByteConsumer, ByteProducer, Notify, RingError};
use tessera_rt::bootargs::BootArgs;
use tessera_rt::println;
use tessera_rt::shm::SharedRegion;

const RING_BYTES: usize = 0x4000;
const REQUESTS: usize = 0;
const REPLIES: usize = RING_BYTES;
const CONTROL: usize = 2 * RING_BYTES;
const DONE: usize = CONTROL;
const REGION_BYTES: usize = CONTROL + 0x1000;
/// Largest message (and the size of each side's buffer).
const MAX_MESSAGE: usize = 2048;
/// Messages ping may have outstanding.
const WINDOW: u64 = 40;
/// Longest a side waits for the other before failing.
const WAIT_MS: u64 = 10_000;

/// Length of message `i`: mostly spread over 0..1500, with every 50th empty
/// and every 61st as long as the buffer.
fn message_len(i: u64) -> usize {
    match i {
        _ if i.is_multiple_of(50) => 0,
        _ if i % 61 == 1 => MAX_MESSAGE,
        _ => ((i * 131 + 7) % 1500) as usize,
    }
}

fn message_byte(i: u64, j: usize) -> u8 {
    let x = (i as u32).wrapping_mul(0x9e37_79b9) ^ (j as u32).wrapping_mul(0x85eb_ca6b);
    (x ^ x >> 15 ^ x >> 7) as u8
}

/// Writes message `i` into `buf` and returns it.
fn message(i: u64, buf: &mut [u8; MAX_MESSAGE]) -> &[u8] {
    let len = message_len(i);
    for (j, b) in buf[..len].iter_mut().enumerate() {
        *b = message_byte(i, j);
    }
    &buf[..len]
}

fn check_message(who: &str, i: u64, data: &[u8]) -> Result<(), Reason> {
    let want = message_len(i);
    ensure!(
        data.len() == want,
        "{who}: message {i} has {} bytes, expected {want}",
        data.len()
    );
    if let Some(j) = (0..want).find(|&j| data[j] != message_byte(i, j)) {
        fail!(
            "{who}: message {i} byte {j} is {:#04x}, expected {:#04x}",
            data[j],
            message_byte(i, j)
        );
    }
    Ok(())
}

fn ring(region: &SharedRegion, off: usize) -> Result<SharedRegion, Reason> {
    match region.sub(off, RING_BYTES) {
        Some(r) => Ok(r),
        None => fail!("ring at {off:#x} does not fit the region"),
    }
}

/// Sends the event a ring operation asked for; counts it.
fn notify_if(link: &Link, notify: Notify, sent: &mut u64) -> Result<(), Reason> {
    if notify.is_needed() {
        link.notify()?;
        *sent += 1;
    }
    Ok(())
}

pub fn run() -> TestResult {
    let args = BootArgs::new(tessera_rt::bootargs());
    let count = args.number("count").unwrap_or(0);
    ensure!(count > 0, "bootargs need count=<messages>");
    let region = link::region(&args, REGION_BYTES)?;
    let link = link::connect(&args)?;
    match args.value("role") {
        Some("ping") => ping(&link, &region, count),
        Some("pong") => pong(&link, &region, count),
        other => fail!("role must be ping or pong, not {other:?}"),
    }
}

fn ping(link: &Link, region: &SharedRegion, count: u64) -> TestResult {
    let (req_mem, rsp_mem) = (ring(region, REQUESTS)?, ring(region, REPLIES)?);
    // Ping owns the region: it lays out both rings before telling pong.
    ok!(layout::init(&req_mem, 0), "init request ring");
    ok!(layout::init(&rsp_mem, 0), "init reply ring");
    region.store_u64(DONE, 0);
    link.notify()?;
    let mut tx = ok!(ByteProducer::attach(&req_mem), "attach request ring");
    let mut rx = ok!(ByteConsumer::attach(&rsp_mem), "attach reply ring");
    ensure!(
        tx.max_record() >= MAX_MESSAGE,
        "a {MAX_MESSAGE}-byte message does not fit the ring"
    );

    let (mut out, mut back) = ([0u8; MAX_MESSAGE], [0u8; MAX_MESSAGE]);
    let (mut sent, mut checked, mut events_sent, mut waits) = (0u64, 0u64, 0u64, 0u64);
    let mut full = 0u64;
    while checked < count {
        let mut progress = false;
        while sent < count && sent - checked < WINDOW {
            match tx.push(message(sent, &mut out)) {
                Ok(notify) => {
                    notify_if(link, notify, &mut events_sent)?;
                    sent += 1;
                    progress = true;
                }
                Err(RingError::Full) => {
                    full += 1;
                    break;
                }
                Err(e) => fail!("ping: push of message {sent}: {e:?}"),
            }
        }
        loop {
            match rx.pop(&mut back) {
                Ok(Some(got)) => {
                    check_message("ping", checked, &back[..got.len])?;
                    notify_if(link, got.notify, &mut events_sent)?;
                    checked += 1;
                    progress = true;
                }
                Ok(None) => break,
                Err(e) => fail!("ping: reply {checked}: {e:?}"),
            }
        }
        if !progress {
            waits += 1;
            ensure!(
                link.wait(WAIT_MS),
                "ping: stalled with {sent} sent and {checked} checked"
            );
        }
    }
    region.store_u64(DONE, 1);
    link.notify()?;
    println!(
        "pingpong: ping checked {checked} replies; {events_sent} events sent, {waits} waits, request ring full {full} times"
    );
    Ok(())
}

fn pong(link: &Link, region: &SharedRegion, count: u64) -> TestResult {
    ensure!(
        link.wait(WAIT_MS),
        "pong: ping never said the rings were ready"
    );
    let (req_mem, rsp_mem) = (ring(region, REQUESTS)?, ring(region, REPLIES)?);
    let mut rx = ok!(ByteConsumer::attach(&req_mem), "attach request ring");
    let mut tx = ok!(ByteProducer::attach(&rsp_mem), "attach reply ring");

    let mut buf = [0u8; MAX_MESSAGE];
    // The request taken but not yet echoed (the reply ring was full).
    let mut held: Option<usize> = None;
    let (mut echoed, mut received, mut events_sent, mut waits) = (0u64, 0u64, 0u64, 0u64);
    let mut full = 0u64;
    while echoed < count {
        let mut progress = false;
        if let Some(len) = held {
            match tx.push(&buf[..len]) {
                Ok(notify) => {
                    notify_if(link, notify, &mut events_sent)?;
                    held = None;
                    echoed += 1;
                    progress = true;
                }
                Err(RingError::Full) => full += 1,
                Err(e) => fail!("pong: echo of message {echoed}: {e:?}"),
            }
        }
        if held.is_none() && received < count {
            match rx.pop(&mut buf) {
                Ok(Some(got)) => {
                    check_message("pong", received, &buf[..got.len])?;
                    notify_if(link, got.notify, &mut events_sent)?;
                    held = Some(got.len);
                    received += 1;
                    progress = true;
                }
                Ok(None) => {}
                Err(e) => fail!("pong: request {received}: {e:?}"),
            }
        }
        if !progress {
            waits += 1;
            ensure!(
                link.wait(WAIT_MS),
                "pong: stalled with {received} received and {echoed} echoed"
            );
        }
    }
    ensure!(
        crate::check::wait_until(WAIT_MS, || region.load_u64(DONE) == 1),
        "pong: ping never reported it checked every reply"
    );
    println!(
        "pingpong: pong echoed {echoed} messages; {events_sent} events sent, {waits} waits, reply ring full {full} times"
    );
    Ok(())
}
