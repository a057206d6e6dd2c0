//! Decoding the EL2 syndrome register (ESR_EL2) for traps from a guest.
//!
//! Only the exception classes the kernel acts on are named; everything else
//! is `Other` and handled as a guest error, never as a kernel fault.
//! Field layouts: Arm ARM D17.2.37 "ESR_EL2".

/// Why a guest trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// FP/SIMD use trapped by CPTR_EL2.TFP (lazy FP switching).
    FpAccess,
    /// WFI (or WFE, when `wfe` is set).
    Wfx { wfe: bool },
    /// `hvc #imm` from AArch64.
    Hvc { imm: u16 },
    /// `smc #imm` from AArch64 (trapped by HCR_EL2.TSC).
    Smc { imm: u16 },
    /// MSR/MRS to a trapped system register.
    SysReg(SysRegAccess),
    /// Stage-2 instruction abort.
    InstructionAbort,
    /// Stage-2 data abort.
    DataAbort(DataAbort),
    /// SVE, SME or another trapped feature the guest must not use.
    Other(u8),
}

/// A trapped system-register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    /// The register's encoding (op0, op1, CRn, CRm, op2).
    pub reg: SysReg,
    /// The general-purpose register transferred (31 = xzr).
    pub rt: u8,
    /// A read (MRS) when true, a write (MSR) when false.
    pub read: bool,
}

/// A system-register encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysReg {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
}

impl SysReg {
    /// `ICC_SGI1R_EL1`.
    pub const ICC_SGI1R_EL1: SysReg = SysReg {
        op0: 3,
        op1: 0,
        crn: 12,
        crm: 11,
        op2: 5,
    };
    /// `ICC_ASGI1R_EL1`.
    pub const ICC_ASGI1R_EL1: SysReg = SysReg {
        op0: 3,
        op1: 0,
        crn: 12,
        crm: 11,
        op2: 6,
    };
    /// `ICC_SGI0R_EL1`.
    pub const ICC_SGI0R_EL1: SysReg = SysReg {
        op0: 3,
        op1: 0,
        crn: 12,
        crm: 11,
        op2: 7,
    };

    /// Whether this is in the feature-ID space trapped by HCR_EL2.TID3
    /// (op0=3, op1=0, CRn=0, CRm=1..7).
    pub fn is_feature_id(&self) -> bool {
        self.op0 == 3 && self.op1 == 0 && self.crn == 0 && (1..=7).contains(&self.crm)
    }
}

/// A stage-2 data abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    /// The syndrome describes the access (ISV=1); otherwise the kernel would
    /// have to decode the instruction, which it refuses to do.
    pub syndrome: Option<AccessSyndrome>,
    /// A write when true.
    pub write: bool,
    /// The Data Fault Status Code.
    pub dfsc: u8,
}

/// The access described by a valid data-abort syndrome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessSyndrome {
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// Sign-extend a load.
    pub sign_extend: bool,
    /// The transfer register (31 = xzr).
    pub reg: u8,
    /// Load to a 64-bit register (otherwise a 32-bit one).
    pub sixty_four: bool,
}

/// Exception class of `esr`.
pub const fn exception_class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

/// Decode a syndrome taken from a lower exception level.
pub fn decode(esr: u64) -> Trap {
    let iss = esr & 0x1ff_ffff;
    match exception_class(esr) {
        0x01 => Trap::Wfx { wfe: iss & 1 == 1 },
        0x07 => Trap::FpAccess,
        0x16 => Trap::Hvc {
            imm: (iss & 0xffff) as u16,
        },
        0x17 => Trap::Smc {
            imm: (iss & 0xffff) as u16,
        },
        0x18 => Trap::SysReg(SysRegAccess {
            reg: SysReg {
                op0: ((iss >> 20) & 0b11) as u8,
                op2: ((iss >> 17) & 0b111) as u8,
                op1: ((iss >> 14) & 0b111) as u8,
                crn: ((iss >> 10) & 0xf) as u8,
                crm: ((iss >> 1) & 0xf) as u8,
            },
            rt: ((iss >> 5) & 0x1f) as u8,
            read: iss & 1 == 1,
        }),
        0x20 => Trap::InstructionAbort,
        0x24 => {
            let isv = iss & (1 << 24) != 0;
            Trap::DataAbort(DataAbort {
                syndrome: isv.then(|| AccessSyndrome {
                    size: 1 << ((iss >> 22) & 0b11),
                    sign_extend: iss & (1 << 21) != 0,
                    reg: ((iss >> 16) & 0x1f) as u8,
                    sixty_four: iss & (1 << 15) != 0,
                }),
                write: iss & (1 << 6) != 0,
                dfsc: (iss & 0x3f) as u8,
            })
        }
        ec => Trap::Other(ec),
    }
}

/// Whether the trapped instruction was 32 bits (IL=1): the PC advances by 4.
pub const fn instruction_len(esr: u64) -> u64 {
    if esr & (1 << 25) != 0 {
        4
    } else {
        2
    }
}

/// Whether `esr` is an instruction or data abort from a lower EL that is
/// a translation fault (FSC 0b0001LL, any level): the access found no
/// stage-2 mapping, as opposed to a permission, alignment or external
/// fault.
pub fn is_translation_abort(esr: u64) -> bool {
    let ec = (esr >> 26) & 0x3f;
    (ec == 0x20 || ec == 0x24) && esr & 0x3c == 0x04
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_aborts_are_told_from_other_faults() {
        for level in 0..4u64 {
            assert!(is_translation_abort((0x24 << 26) | 0x04 | level));
            assert!(is_translation_abort((0x20 << 26) | 0x04 | level));
        }
        assert!(
            !is_translation_abort((0x24 << 26) | 0x0f),
            "permission fault"
        );
        assert!(
            !is_translation_abort((0x24 << 26) | 0x0b),
            "access flag fault"
        );
        assert!(
            !is_translation_abort((0x24 << 26) | 0x21),
            "alignment fault"
        );
        assert!(
            !is_translation_abort((0x16 << 26) | 0x04),
            "an HVC is no abort"
        );
    }

    #[test]
    fn decodes_hvc_and_smc() {
        assert_eq!(decode(0x5a00_0ea1), Trap::Hvc { imm: 0xea1 });
        assert_eq!(decode(0x5e00_0000), Trap::Smc { imm: 0 });
        assert_eq!(decode(0x0600_0000), Trap::Wfx { wfe: false });
        assert_eq!(decode(0x07 << 26 | 1 << 25), Trap::FpAccess);
    }

    #[test]
    fn decodes_sgi1r_write() {
        // MSR ICC_SGI1R_EL1, x3: op0=3 op2=5 op1=0 CRn=12 Rt=3 CRm=11 dir=0.
        let iss = (3 << 20) | (5 << 17) | (12 << 10) | (3 << 5) | (11 << 1);
        let esr = (0x18u64 << 26) | (1 << 25) | iss;
        match decode(esr) {
            Trap::SysReg(a) => {
                assert_eq!(a.reg, SysReg::ICC_SGI1R_EL1);
                assert_eq!(a.rt, 3);
                assert!(!a.read);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_data_abort_with_and_without_isv() {
        // ISV=1, SAS=2 (word), SRT=5, SF=0, WnR=1, DFSC=translation fault L3.
        let esr = (0x24u64 << 26) | (1 << 25) | (1 << 24) | (2 << 22) | (5 << 16) | (1 << 6) | 0x07;
        let Trap::DataAbort(d) = decode(esr) else {
            panic!()
        };
        assert_eq!(
            d.syndrome,
            Some(AccessSyndrome {
                size: 4,
                sign_extend: false,
                reg: 5,
                sixty_four: false
            })
        );
        assert!(d.write);
        let Trap::DataAbort(d) = decode((0x24u64 << 26) | 0x07) else {
            panic!()
        };
        assert_eq!(d.syndrome, None);
        assert!(!d.write);
    }

    #[test]
    fn unknown_classes_are_other() {
        assert_eq!(decode(0x19 << 26), Trap::Other(0x19));
        assert!(SysReg {
            op0: 3,
            op1: 0,
            crn: 0,
            crm: 4,
            op2: 0
        }
        .is_feature_id());
        assert!(!SysReg {
            op0: 3,
            op1: 0,
            crn: 0,
            crm: 0,
            op2: 5
        }
        .is_feature_id());
    }
}
