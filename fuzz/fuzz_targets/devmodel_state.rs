//! A device model's persistent state region is written by its previous
//! generation, which may have died half-way or been buggy: any bytes must
//! decode to a clean error or to a state that encodes back to the same
//! record, and restoring any decoded state into devices must not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_devmodel::guest_mem::SliceMemory;
use tessera_devmodel::persist::{
    decode_header, decode_record, encode_record, latest, DISK_OFFSET, RECORD_SIZE,
};
use tessera_devmodel::pl011::Pl011;
use tessera_devmodel::virtio::mmio::VirtioMmio;
use tessera_devmodel::virtio::rng::{CountingEntropy, Rng};

fuzz_target!(|data: &[u8]| {
    let mut region = vec![0u8; DISK_OFFSET];
    let n = data.len().min(region.len());
    region[..n].copy_from_slice(&data[..n]);
    let _ = decode_header(&region);
    let (a, b) = region.split_at(RECORD_SIZE);
    let _ = latest(a, &b[..RECORD_SIZE]);
    let Ok(Some((seq, state))) = decode_record(a) else {
        return;
    };
    let mut again = [0u8; RECORD_SIZE];
    encode_record(&state, seq, &mut again).expect("a decoded state encodes");
    assert_eq!(decode_record(&again), Ok(Some((seq, state.clone()))));
    let mut ram = vec![0u8; 64 * 1024];
    let mut mem = SliceMemory {
        base: 0x4000_0000,
        bytes: &mut ram,
    };
    for t in state.virtio.iter().flatten() {
        let mut dev = VirtioMmio::new(Rng::new(CountingEntropy::default()));
        let _ = dev.restore(t, &mut mem);
    }
    if let Some(u) = &state.pl011 {
        let _ = Pl011::new().restore(u);
    }
});
