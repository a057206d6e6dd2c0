//! Hypercall, PSCI and syndrome decoding see raw guest registers: any value
//! must decode to a call or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_kernel::{esr, hypercall};

fuzz_target!(|regs: [u64; 8]| {
    let args = [regs[0], regs[1], regs[2], regs[3], regs[4], regs[5]];
    let _ = hypercall::decode(regs[6], &args);
    let _ = hypercall::decode_psci(&[regs[0], regs[1], regs[2], regs[3]]);
    let _ = hypercall::leaf_result(regs[6], regs[0]);
    let _ = esr::decode(regs[7]);
});
