//! The ring consumer reads memory its peer controls: with the whole header
//! and data area taken from fuzz input, every pop must return a record, an
//! empty ring or a typed error, and never touch memory outside the region.
#![no_main]
use core::sync::atomic::AtomicU32;
use libfuzzer_sys::fuzz_target;
use tessera_ipc::ring::layout::{CONS_OFF, DATA_OFF};
use tessera_ipc::ring::{recv_msg, AtomicMem, ByteConsumer, SharedMem, SlotConsumer};

/// A small data area, so that masked offsets and wraps are hit often.
const REGION: usize = DATA_OFF + 256;

/// Any postcard-decodable shape will do; this one has variants, varints and
/// a fixed array.
#[derive(serde::Deserialize)]
#[allow(dead_code)] // Decoded only to exercise the decoder; never inspected.
enum Control {
    Ping(u32),
    Name([u8; 8]),
    Map { gfn: u64, writable: bool },
}

fuzz_target!(|input: &[u8]| {
    let (cons, rest) = input.split_at(input.len().min(4));
    let mut start = [0u8; 4];
    start[..cons.len()].copy_from_slice(cons);
    let words: Vec<AtomicU32> = (0..REGION / 4)
        .map(|i| {
            let mut w = [0u8; 4];
            for (j, b) in w.iter_mut().enumerate() {
                *b = rest.get(i * 4 + j).copied().unwrap_or(0);
            }
            AtomicU32::new(u32::from_le_bytes(w))
        })
        .collect();
    let mem = AtomicMem::new(&words);
    // Our own index is private state, not peer input: start it anywhere.
    mem.store_u32(CONS_OFF, u32::from_le_bytes(start));

    let mut bytes = ByteConsumer::attach(&mem).expect("region holds a ring");
    let mut out = [0u8; 96];
    for _ in 0..16 {
        if !matches!(bytes.pop(&mut out), Ok(Some(_))) {
            break;
        }
    }
    let mut msgs = ByteConsumer::attach(&mem).expect("region holds a ring");
    for _ in 0..16 {
        if !matches!(recv_msg::<_, Control>(&mut msgs, &mut out), Ok(Some(_))) {
            break;
        }
    }
    let mut slots = SlotConsumer::<_, 24>::attach(&mem).expect("region holds a ring");
    let mut slot = [0u8; 24];
    for _ in 0..16 {
        if !matches!(slots.pop(&mut slot), Ok(Some(_))) {
            break;
        }
    }
    assert_eq!(
        mem.violations(),
        0,
        "the consumer strayed outside the region"
    );
});
