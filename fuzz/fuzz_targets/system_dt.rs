//! The system description comes from the image builder, but a corrupt image
//! must produce an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|dtb: &[u8]| {
    let _ = tessera_sysdesc::config::parse_system(dtb);
});
