//! The host DTB comes from firmware; a malformed one must be refused with an
//! error. NOP compaction runs first, as at boot.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|dtb: &[u8]| {
    let mut copy = dtb.to_vec();
    let _ = tessera_kernel::fdt_nop::strip_nops(&mut copy);
    let _ = tessera_kernel::hostdt::parse_host(&copy);
});
