//! What a guest sees of the CPU's feature-ID registers.
//!
//! HCR_EL2.TID3 traps every read of the ID space; the kernel reads the real
//! register and clears the fields of features it does not virtualize (SVE,
//! SME, MTE, pointer authentication, AMU, MPAM, SPE, trace, nested EL2/EL3),
//! so a guest on `-cpu max` never tries to use them. Field positions: Arm ARM
//! D17.2 (ID_AA64PFR0_EL1 and friends).

use crate::esr::SysReg;

/// Clear `bits`-wide fields at the given shifts.
const fn clear(value: u64, fields: &[u32]) -> u64 {
    let mut v = value;
    let mut i = 0;
    while i < fields.len() {
        v &= !(0xf << fields[i]);
        i += 1;
    }
    v
}

/// The value the guest reads for ID register `reg`, given the hardware value.
pub fn sanitize(reg: SysReg, hw: u64) -> u64 {
    match (reg.crm, reg.op2) {
        // ID_AA64PFR0_EL1: EL2, EL3, SVE, SEL2, MPAM, AMU, RME.
        (4, 0) => clear(hw, &[8, 12, 32, 36, 40, 44, 52]),
        // ID_AA64PFR1_EL1: keep only BT and SSBS.
        (4, 1) => hw & 0xff,
        // ID_AA64ZFR0_EL1 (SVE), ID_AA64SMFR0_EL1 (SME).
        (4, 4) | (4, 5) => 0,
        // ID_AA64DFR0_EL1: TraceVer, PMSVer (SPE), TraceFilt, TraceBuffer, BRBE.
        (5, 0) => clear(hw, &[4, 32, 40, 44, 52]),
        // ID_AA64ISAR1_EL1: APA, API, GPA, GPI (pointer authentication).
        (6, 1) => clear(hw, &[4, 8, 24, 28]),
        // ID_AA64ISAR2_EL1: GPA3, APA3.
        (6, 2) => clear(hw, &[8, 12]),
        _ => hw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(crm: u8, op2: u8) -> SysReg {
        SysReg {
            op0: 3,
            op1: 0,
            crn: 0,
            crm,
            op2,
        }
    }

    #[test]
    fn hides_unvirtualized_features() {
        let all = u64::MAX;
        let pfr0 = sanitize(id(4, 0), all);
        assert_eq!((pfr0 >> 32) & 0xf, 0, "SVE");
        assert_eq!((pfr0 >> 8) & 0xf, 0, "EL2");
        assert_eq!(pfr0 & 0xff, 0xff, "EL0/EL1 stay");
        let pfr1 = sanitize(id(4, 1), all);
        assert_eq!((pfr1 >> 8) & 0xf, 0, "MTE");
        assert_eq!((pfr1 >> 24) & 0xf, 0, "SME");
        let isar1 = sanitize(id(6, 1), all);
        for shift in [4, 8, 24, 28] {
            assert_eq!((isar1 >> shift) & 0xf, 0, "PAuth field at {shift}");
        }
        assert_eq!(isar1 & 0xf, 0xf, "DPB stays");
        assert_eq!(sanitize(id(6, 2), all) & (0xff << 8), 0);
        assert_eq!(sanitize(id(4, 4), all), 0);
        assert_eq!(sanitize(id(7, 0), 0x1234), 0x1234, "MMFR0 passes through");
    }
}
