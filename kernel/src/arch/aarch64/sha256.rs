//! SHA-256's block function on the CPU's SHA-256 instructions (FEAT_SHA256:
//! SHA256H, SHA256H2, SHA256SU0, SHA256SU1; Arm ARM C7.2), for verifying
//! the unified image's modules at boot.
//!
//! The one idea: the instructions work on the FP/SIMD registers, which the
//! kernel otherwise never touches (they hold guests' state, switched
//! lazily). [`BootSha256`] therefore exists only at boot, before any guest
//! has run: it untraps FP/SIMD for EL2 while it lives and traps it again
//! when dropped. One 64-byte block costs about a hundred instructions here
//! against about two thousand in software. The block function itself is
//! `tessera_sha256::arm`, shared with domB; this file owns the EL2 side.

use super::{isb, read_sysreg, write_sysreg};
use core::arch::global_asm;

global_asm!(
    r#"
.arch_extension fp
.arch_extension simd

// x0 = 24 * 16 bytes: the registers tessera_sha256_blocks overwrites.
.section .text.tessera_sha256_save, "ax"
.global tessera_sha256_save
.balign 16
tessera_sha256_save:
    st1         {{v0.2d-v3.2d}}, [x0], #64
    st1         {{v4.2d-v7.2d}}, [x0], #64
    st1         {{v16.2d-v19.2d}}, [x0], #64
    st1         {{v20.2d-v23.2d}}, [x0], #64
    st1         {{v24.2d-v27.2d}}, [x0], #64
    st1         {{v28.2d-v31.2d}}, [x0]
    ret

.section .text.tessera_sha256_restore, "ax"
.global tessera_sha256_restore
.balign 16
tessera_sha256_restore:
    ld1         {{v0.2d-v3.2d}}, [x0], #64
    ld1         {{v4.2d-v7.2d}}, [x0], #64
    ld1         {{v16.2d-v19.2d}}, [x0], #64
    ld1         {{v20.2d-v23.2d}}, [x0], #64
    ld1         {{v24.2d-v27.2d}}, [x0], #64
    ld1         {{v28.2d-v31.2d}}, [x0]
    ret

.arch_extension nosimd
.arch_extension nofp
"#
);

unsafe extern "C" {
    /// Stores v0-v7 and v16-v31 to `buf`, then [`tessera_sha256_restore`]
    /// loads them back.
    ///
    /// # Safety
    /// FP/SIMD must not trap at EL2 and `buf` must be writable (readable)
    /// for 384 bytes.
    fn tessera_sha256_save(buf: *mut [u128; SAVED_REGS]);
    fn tessera_sha256_restore(buf: *const [u128; SAVED_REGS]);
}

/// The vector registers `tessera_sha256::arm::compress_blocks` overwrites.
const SAVED_REGS: usize = 24;

/// CPTR_EL2.TFP (Arm ARM D19.2.32): FP/SIMD accesses trap to EL2.
const CPTR_TFP: u64 = 1 << 10;

/// The SHA-256 instructions, usable while this lives (boot only).
pub struct BootSha256 {
    /// CPTR_EL2 as it was, restored on drop.
    saved_cptr: u64,
}

impl BootSha256 {
    /// Untraps FP/SIMD at EL2 if the CPU implements FEAT_SHA256
    /// (ID_AA64ISAR0_EL1.SHA2, bits 15:12, at least 1); `None` otherwise.
    /// Call only at boot, before any guest has run: the vector registers are
    /// then nobody's.
    pub fn at_boot() -> Option<Self> {
        if (read_sysreg!("id_aa64isar0_el1") >> 12) & 0xf == 0 {
            return None;
        }
        let saved_cptr = read_sysreg!("cptr_el2");
        write_sysreg!("cptr_el2", saved_cptr & !CPTR_TFP);
        isb();
        Some(Self { saved_cptr })
    }

    /// Folds every whole 64-byte block of `blocks` into `state`.
    pub fn compress(&self, state: &mut [u32; 8], blocks: &[u8]) {
        // SAFETY: `self` exists only after the feature check and with FP/SIMD
        // untrapped, at boot when no vector register holds guest state.
        unsafe { tessera_sha256::arm::compress_blocks(state, blocks) };
    }
}

impl Drop for BootSha256 {
    fn drop(&mut self) {
        write_sysreg!("cptr_el2", self.saved_cptr);
        isb();
    }
}

/// The SHA-256 instructions while guests run (checking a module's chunks as
/// they are first copied into a domain, `hv::lazy`). The vector registers
/// may then hold a guest's live state (FP/SIMD is switched lazily), so the
/// ones the block function overwrites are saved on creation and restored,
/// with the trap setting, on drop. About 50 instructions of overhead, against
/// thousands saved per 64 KiB chunk.
pub struct RuntimeSha256 {
    saved_cptr: u64,
    regs: [u128; SAVED_REGS],
}

impl RuntimeSha256 {
    /// `None` if the CPU lacks FEAT_SHA256 (then hash in software).
    pub fn new() -> Option<Self> {
        if (read_sysreg!("id_aa64isar0_el1") >> 12) & 0xf == 0 {
            return None;
        }
        let saved_cptr = read_sysreg!("cptr_el2");
        write_sysreg!("cptr_el2", saved_cptr & !CPTR_TFP);
        isb();
        let mut regs = [0u128; SAVED_REGS];
        // SAFETY: FP/SIMD is untrapped just above; `regs` is ours, 384 bytes.
        unsafe { tessera_sha256_save(&mut regs) };
        Some(Self { saved_cptr, regs })
    }

    /// Folds every whole 64-byte block of `blocks` into `state`.
    pub fn compress(&self, state: &mut [u32; 8], blocks: &[u8]) {
        // SAFETY: `self` exists only after the feature check, with FP/SIMD
        // untrapped and the registers it overwrites saved in `self.regs`.
        unsafe { tessera_sha256::arm::compress_blocks(state, blocks) };
    }
}

impl Drop for RuntimeSha256 {
    fn drop(&mut self) {
        // SAFETY: FP/SIMD is still untrapped (restored only below), and
        // `regs` holds what `new` saved.
        unsafe { tessera_sha256_restore(&self.regs) };
        write_sysreg!("cptr_el2", self.saved_cptr);
        isb();
    }
}
