//! Benchmarks between two domains on two pCPUs, over a static event channel
//! (and, for `ring_burst`, a static shared region):
//!
//! - `bench=evtchn_pingpong role=ping|pong port=<p> rounds=<n>`: ping sends
//!   an event and sleeps until pong's answer; pong sleeps until ping's event
//!   and answers. Ping reports ticks per round trip.
//! - `bench=ring_burst role=producer|consumer port=<p> shm=<base>
//!   shm_size=<n> count=<n>`: the producer pushes `count` 64-byte messages
//!   into a slot ring with event-index notification suppression; the
//!   consumer checks each one. The producer reports ticks per message and,
//!   as `hypercalls=`, every hypercall either side made to move the data
//!   (event sends and `SCHEDOP_block`s).
//!
//! Under `-icount shift=4,sleep=off` the counter ticks once per instruction
//! executed on either pCPU, and a pCPU whose vCPU sleeps executes nothing, so
//! ticks are the instructions both domains and the kernel spent.
//!
//! The consumer's sleeping policy (the one idea of `ring_burst`): when it
//! finds the ring empty it keeps polling the producer index, without arming
//! `prod_event`, for `poll` counter ticks (bootargs `poll=`, default
//! `POLL_TICKS`); only if the ring stays empty does it arm (`pop` returning
//! `None`) and block. A producer that is still producing refills the ring
//! within that window, so the consumer sleeps (and the producer pays a send
//! to wake it) only when the producer really paused: at the end, or while it
//! waits for space, which the consumer announces once per half ring. A full
//! ring makes the producer block the same way, so the steady state costs
//! about four hypercalls (two sends, two blocks) per ring of messages.
//!
//! What the measurement can and cannot show: with `-icount` QEMU runs the
//! pCPUs one at a time (round robin), so while the consumer polls, the
//! producer is not running and polling can never find new data; the figure
//! is then set by the full-ring cycle (about 4 hypercalls per 128 messages,
//! 0.03 per message, with or without polling) and each poll only adds its
//! ticks (measured: 229, 237, 260, 385 instructions per message for 0, 1000,
//! 4000, 20000 ticks). On hardware, where both sides run at once, a consumer
//! that slept the moment it caught up would sleep after almost every message
//! (two hypercalls each); the default poll, 1000 ticks (16 us at 62.5 MHz),
//! covers many producer messages and costs 1000 instructions per sleep here.

use crate::check::{reason, wait_until, Reason};
use crate::link::{self, Link};
use tessera_ipc::ring::{layout, RingError, SlotConsumer, SlotProducer};
use tessera_rt::bootargs::BootArgs;
use tessera_rt::events;
use tessera_rt::shm::SharedRegion;
use tessera_rt::{println, timer};

/// Longest the set-up handshakes wait before the run fails.
const SETUP_WAIT_MS: u64 = 20_000;
const DEFAULT_ROUNDS: u64 = 10_000;

/// `ring_burst`: message size, ring size (128 slots) and control words.
const MSG: usize = 64;
const RING_BYTES: usize = 0x4000;
const CONTROL: usize = RING_BYTES;
const READY: usize = CONTROL;
const DONE: usize = CONTROL + 8;
const CONSUMER_SENDS: usize = CONTROL + 16;
const CONSUMER_BLOCKS: usize = CONTROL + 24;
const CONSUMER_SLEEPS: usize = CONTROL + 32;
const CONSUMER_POLL: usize = CONTROL + 40;
const REGION_BYTES: usize = CONTROL + 0x1000;
/// How long the consumer polls an empty ring before it sleeps, unless
/// bootargs say `poll=<ticks>`.
const POLL_TICKS: u64 = 1000;

fn role<'a>(args: &BootArgs<'a>) -> &'a str {
    args.value("role").unwrap_or("")
}

/// Sends on the link, counting the hypercall.
fn send(link: &Link, sends: &mut u64) -> Result<(), Reason> {
    link.notify()?;
    *sends += 1;
    Ok(())
}

pub fn evtchn_pingpong() -> Result<(), Reason> {
    let args = BootArgs::new(tessera_rt::bootargs());
    let rounds = args.number("rounds").unwrap_or(DEFAULT_ROUNDS);
    let link = link::connect(&args)?;
    let port = link.port;
    match role(&args) {
        "ping" => {
            ensure!(
                link.wait(SETUP_WAIT_MS),
                "evtchn_pingpong: pong never said it was ready"
            );
            let (mut sends, mut blocks) = (0, 0);
            let start = timer::now();
            for _ in 0..rounds {
                send(&link, &mut sends)?;
                blocks += events::block_until(|| events::take(port));
            }
            let ticks = timer::now() - start;
            println!(
                "BENCHRESULT evtchn_pingpong ops={rounds} ticks={ticks} hypercalls={}",
                sends + blocks
            );
            println!("evtchn_pingpong: ping made {sends} sends and {blocks} blocks");
            Ok(())
        }
        "pong" => {
            let (mut sends, mut blocks) = (0, 0);
            send(&link, &mut sends)?;
            for _ in 0..rounds {
                blocks += events::block_until(|| events::take(port));
                send(&link, &mut sends)?;
            }
            println!("evtchn_pingpong: pong answered {rounds} events ({blocks} blocks)");
            Ok(())
        }
        other => fail!("evtchn_pingpong: role must be ping or pong, not {other:?}"),
    }
}

/// Word `k` of message `i`.
fn message_word(i: u64, k: usize) -> u64 {
    (i << 8 | k as u64) ^ 0x5a5a_0000_a5a5_0000
}

fn message(i: u64) -> [u8; MSG] {
    let mut m = [0u8; MSG];
    for (k, chunk) in m.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&message_word(i, k).to_le_bytes());
    }
    m
}

fn message_ok(i: u64, m: &[u8; MSG]) -> bool {
    m.chunks_exact(8).enumerate().all(|(k, chunk)| {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        u64::from_le_bytes(w) == message_word(i, k)
    })
}

pub fn ring_burst() -> Result<(), Reason> {
    let args = BootArgs::new(tessera_rt::bootargs());
    let count = args.number("count").unwrap_or(DEFAULT_ROUNDS);
    let region = link::region(&args, REGION_BYTES)?;
    let Some(ring) = region.sub(0, RING_BYTES) else {
        fail!("ring_burst: the ring does not fit the region");
    };
    let link = link::connect(&args)?;
    match role(&args) {
        "producer" => producer(&link, &region, &ring, count),
        "consumer" => {
            let poll = args.number("poll").unwrap_or(POLL_TICKS);
            consumer(&link, &region, &ring, count, poll)
        }
        other => fail!("ring_burst: role must be producer or consumer, not {other:?}"),
    }
}

fn producer(
    link: &Link,
    region: &SharedRegion,
    ring: &SharedRegion,
    count: u64,
) -> Result<(), Reason> {
    let port = link.port;
    ok!(layout::init(ring, 0), "init ring");
    for off in (CONTROL..REGION_BYTES).step_by(8) {
        region.store_u64(off, 0);
    }
    let mut tx = ok!(SlotProducer::<_, MSG>::attach(ring), "attach ring");
    link.notify()?;
    ensure!(
        wait_until(SETUP_WAIT_MS, || region.load_u64(READY) == 1),
        "ring_burst: the consumer never attached"
    );
    let (mut sends, mut blocks, mut full) = (0u64, 0u64, 0u64);
    let start = timer::now();
    for i in 0..count {
        let m = message(i);
        loop {
            match tx.push(&m) {
                Ok(notify) => {
                    if notify.is_needed() {
                        send(link, &mut sends)?;
                    }
                    break;
                }
                Err(RingError::Full) => {
                    full += 1;
                    blocks += events::block_until(|| events::take(port));
                }
                Err(e) => fail!("ring_burst: push {i}: {e:?}"),
            }
        }
    }
    blocks += events::block_until(|| region.load_u64(DONE) == 1);
    let ticks = timer::now() - start;
    let (c_sends, c_blocks, c_sleeps, c_poll) = (
        region.load_u64(CONSUMER_SENDS),
        region.load_u64(CONSUMER_BLOCKS),
        region.load_u64(CONSUMER_SLEEPS),
        region.load_u64(CONSUMER_POLL),
    );
    let hypercalls = sends + blocks + c_sends + c_blocks;
    println!("BENCHRESULT ring_burst ops={count} ticks={ticks} hypercalls={hypercalls}");
    println!(
        "ring_burst: producer {sends} sends, {blocks} blocks, ring full {full} times; \
         consumer {c_sends} sends, {c_blocks} blocks, slept {c_sleeps} times (polls {c_poll} ticks first)"
    );
    Ok(())
}

fn consumer(
    link: &Link,
    region: &SharedRegion,
    ring: &SharedRegion,
    count: u64,
    poll: u64,
) -> Result<(), Reason> {
    let port = link.port;
    ensure!(
        link.wait(SETUP_WAIT_MS),
        "ring_burst: the producer never said the ring was ready"
    );
    let mut rx = ok!(SlotConsumer::<_, MSG>::attach(ring), "attach ring");
    region.store_u64(READY, 1);
    let (mut sends, mut blocks, mut sleeps) = (0u64, 0u64, 0u64);
    let mut out = [0u8; MSG];
    let mut received = 0u64;
    let pending = |rx: &SlotConsumer<&SharedRegion, MSG>| -> Result<u32, Reason> {
        rx.pending()
            .map_err(|e| reason(format_args!("ring_burst: consumer: {e:?}")))
    };
    while received < count {
        if pending(&rx)? == 0 {
            let until = timer::now() + poll;
            while pending(&rx)? == 0 && timer::now() < until {
                core::hint::spin_loop();
            }
        }
        match rx.pop(&mut out) {
            Ok(Some(notify)) => {
                ensure!(
                    message_ok(received, &out),
                    "ring_burst: message {received} arrived damaged"
                );
                received += 1;
                if notify.is_needed() {
                    send(link, &mut sends)?;
                }
            }
            Ok(None) => {
                // Empty after polling, and now armed: sleep until the
                // producer's next push says so.
                sleeps += 1;
                blocks += events::block_until(|| {
                    events::take(port) || rx.pending().map_or(true, |n| n > 0)
                });
            }
            Err(e) => fail!("ring_burst: pop {received}: {e:?}"),
        }
    }
    // The producer is told it is over with one more send, counted too.
    sends += 1;
    region.store_u64(CONSUMER_SENDS, sends);
    region.store_u64(CONSUMER_BLOCKS, blocks);
    region.store_u64(CONSUMER_SLEEPS, sleeps);
    region.store_u64(CONSUMER_POLL, poll);
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    region.store_u64(DONE, 1);
    link.notify()?;
    println!("ring_burst: consumer checked {received} messages");
    Ok(())
}
