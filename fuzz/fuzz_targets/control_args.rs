//! The domain-control call's guest input: its registers and the structures
//! a builder passes by pointer (`CreateDomain`, `ModuleInfo`,
//! `ShareMemory`), and the host RAM map a builder's memory requests reach.
//! Any bytes must decode to a checked value or an error, never a panic, and
//! a claim the map grants must lie in RAM and overlap nothing it held.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_ipc::control::{CreateDomain, ModuleInfo, ShareMemory, MEMORY_ALIGN};
use tessera_kernel::control;
use tessera_kernel::ram::RamMap;
use zerocopy::FromBytes;

const RAM: (u64, u64) = (0x4000_0000, 1 << 30);
const KERNEL: (u64, u64) = (0x4020_0000, 0x4300_0000);

fuzz_target!(|data: &[u8]| {
    let word = |i: usize| {
        data.get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let regs = [word(0), word(1), word(2), word(3), word(4), word(5)];
    let _ = control::decode(&regs);
    if let Ok((raw, _)) = CreateDomain::read_from_prefix(data) {
        let _ = control::parse_create(&raw);
    }
    if let Ok((raw, _)) = ModuleInfo::read_from_prefix(data) {
        let _ = control::parse_module_query(&raw);
    }
    if let Ok((raw, _)) = ShareMemory::read_from_prefix(data) {
        if let Ok(spec) = control::parse_share(&raw) {
            let _ = control::ram_offset(regs[0], spec.owner_ipa, spec.size);
        }
    }
    let Ok(mut map) = RamMap::new(&[RAM], &[KERNEL]) else {
        return;
    };
    let _ = map.alloc(regs[2]);
    if let Ok(pa) = map.claim(regs[3], regs[4], MEMORY_ALIGN) {
        assert!(pa >= RAM.0 && pa + regs[4] <= RAM.0 + RAM.1);
        assert!(pa + regs[4] <= KERNEL.0 || pa >= KERNEL.1);
        assert!(map.free(pa, regs[4]).is_ok());
    }
});
