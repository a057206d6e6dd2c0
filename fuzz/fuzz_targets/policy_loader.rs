//! The policy binary is read from the image at boot: any bytes must load to
//! a policy or a typed error, and a loaded policy must answer every lookup
//! without panicking. Half the inputs are resealed first so the fuzzer gets
//! past the checksum to the structural checks behind it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tessera_policy::binary::seal;
use tessera_policy::{Avc, Class, Mode, Perm, Policy};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let mut bytes = bytes.to_vec();
    if mode & 1 == 1 {
        seal(&mut bytes);
    }
    let Ok(policy) = Policy::load(&bytes) else {
        return;
    };
    let types = policy.type_count().min(8) as u16;
    let mut avc = Avc::new(policy, Mode::Enforcing);
    for s in 0..types {
        for t in 0..types {
            let (Some(sn), Some(tn)) = (avc.policy().type_name(s), avc.policy().type_name(t))
            else {
                continue;
            };
            // Users and roles may be absent; probe with the first of each.
            let ctx = |ty: &str| std::format!("{}:{}", "system_u:system_r", ty);
            let (Some(ss), Some(ts)) = (avc.sid_of(&ctx(sn)), avc.sid_of(&ctx(tn))) else {
                continue;
            };
            for &class in Class::ALL {
                let _ = avc.policy().transition(ss, ts, class);
                for bit in 0..32 {
                    if let Ok(perm) = Perm::from_bit(class, bit) {
                        if let Some(d) = avc.check(ss, ts, perm).denial() {
                            let _ = std::format!("{}", avc.audit(d));
                        }
                    }
                }
            }
        }
    }
});
