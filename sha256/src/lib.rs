//! SHA-256 for the kernel and the domains: FIPS 180-4 padding around a
//! block function the caller chooses, the `sha2` crate's block function in
//! software, and (on aarch64) the block function on the CPU's SHA-256
//! instructions (FEAT_SHA256: SHA256H, SHA256H2, SHA256SU0, SHA256SU1; Arm
//! ARM C7.2).
//!
//! The one idea: under `-icount` every instruction is boot time, and a
//! 64-byte block costs about 90 instructions on the SHA-256 instructions
//! against about 2000 in software. The kernel checks the image's modules
//! with them and domB its measurements; each caller decides when the
//! vector registers are free to use (the kernel at EL2 must save a guest's
//! and untrap FP/SIMD; a domain at EL1 owns its own).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

use sha2::digest::generic_array::GenericArray;

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
pub const SHA256_INIT: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// SHA-256's block function in software (the `sha2` crate's): folds every
/// whole 64-byte block of `blocks` into `state`.
pub fn sha256_compress_soft(state: &mut [u32; 8], blocks: &[u8]) {
    for block in blocks.chunks_exact(64) {
        sha2::compress256(
            state,
            core::slice::from_ref(GenericArray::from_slice(block)),
        );
    }
}

/// SHA-256 of `data`, with `compress` folding whole 64-byte blocks (it is
/// only ever given a multiple of 64 bytes, never zero). The bulk of `data`
/// goes to `compress` in place; only the padded tail is copied.
pub fn sha256_with(mut compress: impl FnMut(&mut [u32; 8], &[u8]), data: &[u8]) -> [u8; 32] {
    let mut state = SHA256_INIT;
    let whole = data.len() - data.len() % 64;
    let (body, rest) = data.split_at(whole);
    if !body.is_empty() {
        compress(&mut state, body);
    }
    // The tail, 0x80, zeros, and the length in bits (big-endian) in the
    // last 8 bytes: one block, or two when the tail leaves no room.
    let mut tail = [0u8; 128];
    let used = if rest.len() < 56 { 64 } else { 128 };
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let bits = (data.len() as u64).wrapping_mul(8);
    tail[used - 8..used].copy_from_slice(&bits.to_be_bytes());
    compress(&mut state, &tail[..used]);
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(target_arch = "aarch64")]
pub mod arm;

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn padding_matches_the_sha2_crate_at_every_boundary() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 300] {
            let want: [u8; 32] = Sha256::digest(&data[..len]).into();
            assert_eq!(
                sha256_with(sha256_compress_soft, &data[..len]),
                want,
                "length {len}"
            );
        }
    }
}
