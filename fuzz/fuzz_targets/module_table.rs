//! The unified image's module table is parsed before anything else is
//! trusted: any bytes must parse to a table or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_ipc::image::ModuleKind;
use tessera_kernel::image::{ModuleTable, VerifyModules};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(table) = ModuleTable::parse(bytes) {
        let _ = table.verify_all();
        let _ = table.first(ModuleKind::SystemDtb);
    }
});
