//! The block function on the CPU's SHA-256 instructions.

use core::arch::global_asm;

// x0 = state (8 words, a..h), x1 = data, x2 = number of 64-byte blocks
// (at least one). The round constants stay in v16-v31; the state lives in
// v0 (abcd) and v1 (efgh) and is added back from memory after each block;
// v2 holds W+K and v3 a copy of abcd for SHA256H2. Only caller-saved
// vector registers are used (AAPCS64 keeps d8-d15).
global_asm!(
    r#"
.arch_extension fp
.arch_extension simd
.arch_extension sha2

.macro tessera_sha256_quad k, m0, m1, m2, m3, schedule
    add         v2.4s, \m0\().4s, \k\().4s
    .if \schedule
    sha256su0   \m0\().4s, \m1\().4s
    .endif
    mov         v3.16b, v0.16b
    sha256h     q0, q1, v2.4s
    sha256h2    q1, q3, v2.4s
    .if \schedule
    sha256su1   \m0\().4s, \m2\().4s, \m3\().4s
    .endif
.endm

.section .text.tessera_sha256_blocks, "ax"
.global tessera_sha256_blocks
.balign 16
tessera_sha256_blocks:
    adrp        x3, tessera_sha256_k
    add         x3, x3, :lo12:tessera_sha256_k
    ld1         {{v16.4s-v19.4s}}, [x3], #64
    ld1         {{v20.4s-v23.4s}}, [x3], #64
    ld1         {{v24.4s-v27.4s}}, [x3], #64
    ld1         {{v28.4s-v31.4s}}, [x3]
    ld1         {{v0.4s, v1.4s}}, [x0]
1:
    ld1         {{v4.16b-v7.16b}}, [x1], #64
    rev32       v4.16b, v4.16b
    rev32       v5.16b, v5.16b
    rev32       v6.16b, v6.16b
    rev32       v7.16b, v7.16b
    tessera_sha256_quad v16, v4, v5, v6, v7, 1
    tessera_sha256_quad v17, v5, v6, v7, v4, 1
    tessera_sha256_quad v18, v6, v7, v4, v5, 1
    tessera_sha256_quad v19, v7, v4, v5, v6, 1
    tessera_sha256_quad v20, v4, v5, v6, v7, 1
    tessera_sha256_quad v21, v5, v6, v7, v4, 1
    tessera_sha256_quad v22, v6, v7, v4, v5, 1
    tessera_sha256_quad v23, v7, v4, v5, v6, 1
    tessera_sha256_quad v24, v4, v5, v6, v7, 1
    tessera_sha256_quad v25, v5, v6, v7, v4, 1
    tessera_sha256_quad v26, v6, v7, v4, v5, 1
    tessera_sha256_quad v27, v7, v4, v5, v6, 1
    tessera_sha256_quad v28, v4, v5, v6, v7, 0
    tessera_sha256_quad v29, v5, v6, v7, v4, 0
    tessera_sha256_quad v30, v6, v7, v4, v5, 0
    tessera_sha256_quad v31, v7, v4, v5, v6, 0
    ld1         {{v2.4s, v3.4s}}, [x0]
    add         v0.4s, v0.4s, v2.4s
    add         v1.4s, v1.4s, v3.4s
    st1         {{v0.4s, v1.4s}}, [x0]
    subs        x2, x2, #1
    b.ne        1b
    ret

.section .rodata.tessera_sha256_k, "a"
.balign 16
tessera_sha256_k:
    .word 0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5
    .word 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5
    .word 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3
    .word 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174
    .word 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc
    .word 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da
    .word 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7
    .word 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967
    .word 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13
    .word 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85
    .word 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3
    .word 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070
    .word 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5
    .word 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3
    .word 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208
    .word 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2

.arch_extension nosha2
.arch_extension nosimd
.arch_extension nofp
"#
);

unsafe extern "C" {
    /// Folds `blocks` 64-byte blocks at `data` into `state`.
    ///
    /// # Safety
    /// As [`compress_blocks`], and `blocks` at least one.
    fn tessera_sha256_blocks(state: *mut [u32; 8], data: *const u8, blocks: usize);
}

/// Whether the CPU implements FEAT_SHA256 (ID_AA64ISAR0_EL1.SHA2, bits
/// 15:12, at least 1). Readable at EL1 and EL2 (at EL1 a hypervisor may
/// trap and answer it).
pub fn has_sha256() -> bool {
    let isar0: u64;
    // SAFETY: reading an ID register has no side effect.
    unsafe {
        core::arch::asm!("mrs {}, id_aa64isar0_el1", out(reg) isar0, options(nomem, nostack, preserves_flags))
    };
    (isar0 >> 12) & 0xf != 0
}

/// Folds every whole 64-byte block of `blocks` into `state`.
///
/// # Safety
/// The CPU must implement FEAT_SHA256 ([`has_sha256`]) and FP/SIMD must
/// not trap at the current exception level. v0-v7 and v16-v31 are
/// overwritten: caller-saved under AAPCS64, so an ordinary caller loses
/// nothing, but a kernel holding a guest's vector state must save it first.
pub unsafe fn compress_blocks(state: &mut [u32; 8], blocks: &[u8]) {
    let n = blocks.len() / 64;
    if n == 0 {
        return;
    }
    // SAFETY: per the contract; `blocks` holds at least `64 * n` bytes and
    // `state` is an exclusive reference.
    unsafe { tessera_sha256_blocks(state, blocks.as_ptr(), n) };
}
