//! The unified image's module table is parsed before anything else is
//! trusted: any bytes must parse to a table or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_ipc::image::ModuleKind;
use tessera_kernel::image::{ModuleTable, VerifyModules};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(table) = ModuleTable::parse(bytes) {
        let _ = table.verify_at_boot();
        let _ = table.first(ModuleKind::SystemDtb);
        for m in table.modules() {
            let _ = table.chunk_ok_with(&m, 0, tessera_kernel::image::sha256_compress_soft);
            let _ = m.chunks_covering(0, m.data.len() as u64);
        }
    }
});
