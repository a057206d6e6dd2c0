//! The virtual GIC's register decoder sees every guest access to the GIC
//! frames: any sequence of accesses, SGIs and injections must not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_kernel::vgic::Vgic;

fuzz_target!(|ops: Vec<(u8, u64, u8, u64)>| {
    let mut gic = Vgic::new(4);
    for (kind, addr, size, value) in ops {
        match kind % 4 {
            0 => {
                if let Some((frame, off)) = gic.decode(addr) {
                    let _ = gic.mmio_read(frame, off, size);
                }
            }
            1 => {
                if let Some((frame, off)) = gic.decode(addr) {
                    let _ = gic.mmio_write(frame, off, size, value);
                }
            }
            2 => {
                let _ = gic.write_sgi1r(size as usize, value);
            }
            _ => {
                let _ = gic.inject(size as usize, value as u32);
                if let Some((intid, _)) = gic.next_deliverable(size as usize) {
                    gic.mark_in_lr(size as usize, intid);
                    gic.lr_retired(size as usize, intid);
                }
            }
        }
    }
});
