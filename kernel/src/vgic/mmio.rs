//! Trapped MMIO accesses to the distributor (GICD) and redistributor (GICR)
//! frames, decoded against the GICv3 register map (IHI 0069, chapter 12).
//!
//! The one idea: validate first, then act. `decode_*` turns (frame, offset,
//! size) into a `Reg`, doing every range, width and alignment check; reading
//! or writing a `Reg` cannot fail. Reserved and unimplemented offsets decode
//! to `Reg::Raz` (read-as-zero, write-ignored) because Linux and firmware
//! probe around; only impossible accesses (bad size, misaligned, outside the
//! frame, a width the register does not have) are errors.

use super::{
    affinity_of, newly_deliverable, Bank, BankSel, Frame, Vgic, VgicError, CTLR_ENABLE_GRP0,
    CTLR_ENABLE_GRP1, IROUTER_WRITABLE, NR_INTIDS, NR_PRIVATE, NR_SPIS, PRIORITY_MASK, SPI_WORDS,
};
use tessera_ipc::platform::GICD_SIZE;

/// The SGI_base frame follows RD_base inside a redistributor.
const REDIST_SGI_BASE: u64 = 0x1_0000;
/// RD_base + SGI_base.
const REDIST_FRAME_SIZE: u64 = 0x2_0000;

/// GICD_CTLR.ARE (DS == 1 layout; ARE_NS in the Non-secure view): affinity
/// routing, always on.
const CTLR_ARE: u32 = 1 << 4;
/// GICD_CTLR.DS: the GIC has a single Security state.
const CTLR_DS: u32 = 1 << 6;

/// GICD_TYPER: ITLinesNumber[4:0] = INTIDs / 32 - 1; IDbits[23:19] = 9 (ten
/// INTID bits, enough for SPIs up to 1019; no LPIs so no more are needed, as
/// KVM reports). LPIS, MBIS, SecurityExtn, A3V, RSS, ESPI are all zero;
/// No1N is zero because IRM = 1 routing is supported.
const GICD_TYPER: u32 = (NR_INTIDS / 32 - 1) | (9 << 19);
/// GICD_IIDR/GICR_IIDR: ProductID 'T' [31:24], Variant and Revision 0,
/// Implementer 0x43B in JEP106 form, as KVM reports; chosen to match none of
/// Linux's erratum quirks.
const IIDR: u32 = (0x54 << 24) | 0x43B;
/// GICR_TYPER.Last: this is the final redistributor of the region.
const GICR_TYPER_LAST: u64 = 1 << 4;
/// GICR_WAKER.ProcessorSleep.
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
/// GICR_WAKER.ChildrenAsleep.
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// GICR_ICFGR0: SGIs are edge-triggered and not configurable.
const ICFGR_ALL_EDGE: u32 = 0xAAAA_AAAA;

/// One of the seven one-bit-per-interrupt register arrays, in address order
/// from offset 0x080, 0x80 bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BitReg {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

/// Where IPRIORITYR bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrioSel {
    Private(usize),
    Spi,
}

/// A decoded, fully validated register access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reg {
    /// Reserved, unimplemented, or RAZ/WI in this configuration.
    Raz,
    /// A constant; writes are ignored.
    ReadOnly(u32),
    GicdCtlr,
    /// A word of IGROUPR/ISENABLER/.../ICACTIVER.
    Bits {
        kind: BitReg,
        bank: BankSel,
    },
    /// IPRIORITYR bytes from index `first` (byte or word access).
    Priority {
        prio: PrioSel,
        first: usize,
    },
    /// ICFGR word `half` (0: INTIDs 0..16 of the bank, 1: 16..32).
    Config {
        bank: BankSel,
        half: u32,
    },
    /// GICD_IROUTER<32 + spi>, whole or the 32-bit half at `shift`.
    Irouter {
        spi: usize,
        shift: u32,
    },
    /// GICR_TYPER, whole or the 32-bit half at `shift`.
    RedistTyper {
        vcpu: usize,
        shift: u32,
    },
    Waker {
        vcpu: usize,
    },
}

impl Vgic {
    /// Emulate a read of `size` bytes at `offset` in `frame`.
    pub fn mmio_read(&mut self, frame: Frame, offset: u64, size: u8) -> Result<u64, VgicError> {
        let reg = self.decode_access(frame, offset, size)?;
        Ok(self.read_reg(reg, size) & size_mask(size))
    }

    /// Emulate a write of the low `size` bytes of `value` at `offset` in
    /// `frame`. Returns a bitmask of vCPUs that now have a deliverable
    /// interrupt they did not have before, so the kernel can kick them.
    pub fn mmio_write(
        &mut self,
        frame: Frame,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Result<u32, VgicError> {
        let reg = self.decode_access(frame, offset, size)?;
        let before = self.deliverable_snapshot();
        self.write_reg(reg, size, value & size_mask(size));
        Ok(newly_deliverable(&before, &self.deliverable_snapshot()))
    }

    fn decode_access(&self, frame: Frame, offset: u64, size: u8) -> Result<Reg, VgicError> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(VgicError::BadSize);
        }
        if !offset.is_multiple_of(u64::from(size)) {
            return Err(VgicError::Misaligned);
        }
        match frame {
            Frame::Dist => {
                // Aligned and the frame size is a multiple of 8, so the
                // whole access fits if its first byte does.
                if offset >= GICD_SIZE {
                    return Err(VgicError::BadOffset);
                }
                decode_dist(offset, size)
            }
            Frame::Redist { vcpu } => {
                if vcpu >= self.nr_vcpus {
                    return Err(VgicError::BadVcpu);
                }
                if offset >= REDIST_FRAME_SIZE {
                    return Err(VgicError::BadOffset);
                }
                decode_redist(vcpu, offset, size)
            }
        }
    }

    fn read_reg(&self, reg: Reg, size: u8) -> u64 {
        match reg {
            Reg::Raz => 0,
            Reg::ReadOnly(v) => u64::from(v),
            Reg::GicdCtlr => u64::from(self.ctlr | CTLR_ARE | CTLR_DS),
            Reg::Bits { kind, bank } => {
                let Some(b) = self.bank(bank) else { return 0 };
                u64::from(match kind {
                    BitReg::Group => b.group1,
                    BitReg::SetEnable | BitReg::ClearEnable => b.enabled,
                    BitReg::SetPending | BitReg::ClearPending => b.pending_view(),
                    BitReg::SetActive | BitReg::ClearActive => b.active_view(),
                })
            }
            Reg::Priority { prio, first } => {
                let Some(table) = self.priority_table(prio) else {
                    return 0;
                };
                let mut v = 0;
                for k in 0..usize::from(size) {
                    let byte = first.checked_add(k).and_then(|i| table.get(i)).copied();
                    v |= u64::from(byte.unwrap_or(0)) << (8 * k);
                }
                v
            }
            Reg::Config { bank, half } => {
                let Some(b) = self.bank(bank) else { return 0 };
                let edge = b.edge >> (16 * half);
                let mut v = 0u64;
                for k in 0..16 {
                    if edge & (1 << k) != 0 {
                        v |= 0b10 << (2 * k);
                    }
                }
                v
            }
            Reg::Irouter { spi, shift } => self.spi_route.get(spi).map_or(0, |r| r >> shift),
            Reg::RedistTyper { vcpu, shift } => self.gicr_typer(vcpu) >> shift,
            Reg::Waker { vcpu } => {
                let asleep = self.vcpu(vcpu).is_some_and(|v| v.processor_sleep);
                // ChildrenAsleep follows ProcessorSleep at once: there is no
                // interface to quiesce, so the handshake completes instantly.
                u64::from(if asleep {
                    WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP
                } else {
                    0
                })
            }
        }
    }

    fn write_reg(&mut self, reg: Reg, size: u8, value: u64) {
        match reg {
            Reg::Raz | Reg::ReadOnly(_) | Reg::RedistTyper { .. } => {}
            Reg::GicdCtlr => {
                // Only the group enables are writable; ARE and DS are RAO/WI
                // and RWP reads zero because every write takes effect at once.
                self.ctlr = (value as u32) & (CTLR_ENABLE_GRP0 | CTLR_ENABLE_GRP1);
            }
            Reg::Bits { kind, bank } => {
                if let Some(b) = self.bank_mut(bank) {
                    write_bits(b, kind, value as u32);
                }
            }
            Reg::Priority { prio, first } => {
                let Some(table) = self.priority_table_mut(prio) else {
                    return;
                };
                for k in 0..usize::from(size) {
                    if let Some(p) = first.checked_add(k).and_then(|i| table.get_mut(i)) {
                        *p = (value >> (8 * k)) as u8 & PRIORITY_MASK;
                    }
                }
            }
            Reg::Config { bank, half } => {
                // Only Int_config[1] (edge/level) exists; Int_config[0] is RES0.
                let mut edge = 0u32;
                for k in 0..16 {
                    if value & (0b10 << (2 * k)) != 0 {
                        edge |= 1 << k;
                    }
                }
                let sgis_fixed = matches!(bank, BankSel::Private(_)) && half == 0;
                let writable = if sgis_fixed {
                    0
                } else {
                    0xFFFFu32 << (16 * half)
                };
                if let Some(b) = self.bank_mut(bank) {
                    b.edge = (b.edge & !writable) | ((edge << (16 * half)) & writable);
                }
            }
            Reg::Irouter { spi, shift } => {
                if let Some(route) = self.spi_route.get_mut(spi) {
                    *route = merge_half(*route, value, shift, size) & IROUTER_WRITABLE;
                }
            }
            Reg::Waker { vcpu } => {
                if let Some(v) = self.vcpu_mut(vcpu) {
                    v.processor_sleep = value as u32 & WAKER_PROCESSOR_SLEEP != 0;
                }
            }
        }
    }

    fn priority_table(&self, prio: PrioSel) -> Option<&[u8]> {
        match prio {
            PrioSel::Private(v) => self.vcpu(v).map(|s| &s.priority[..]),
            PrioSel::Spi => Some(&self.spi_priority[..]),
        }
    }

    fn priority_table_mut(&mut self, prio: PrioSel) -> Option<&mut [u8]> {
        match prio {
            PrioSel::Private(v) => self.vcpu_mut(v).map(|s| &mut s.priority[..]),
            PrioSel::Spi => Some(&mut self.spi_priority[..]),
        }
    }

    /// GICR_TYPER: Affinity_Value[63:32] from the vCPU's MPIDR,
    /// Processor_Number[23:8], Last[4] on the final redistributor; PLPIS,
    /// VLPIS, DirectLPI and PPInum (16 PPIs) are zero.
    fn gicr_typer(&self, vcpu: usize) -> u64 {
        let last = if vcpu + 1 == self.nr_vcpus {
            GICR_TYPER_LAST
        } else {
            0
        };
        (u64::from(affinity_of(vcpu)) << 32) | ((vcpu as u64 & 0xFFFF) << 8) | last
    }
}

fn write_bits(b: &mut Bank, kind: BitReg, v: u32) {
    match kind {
        BitReg::Group => b.group1 = v,
        BitReg::SetEnable => b.enabled |= v,
        BitReg::ClearEnable => b.enabled &= !v,
        BitReg::SetPending => b.latch |= v,
        // Clears the latch only: a level-sensitive interrupt whose line is
        // still high stays pending (IHI 0069, GICD_ICPENDR<n>), and one
        // already in an LR stays there (the kernel cannot retract it here).
        BitReg::ClearPending => b.latch &= !v,
        BitReg::SetActive => b.active |= v,
        BitReg::ClearActive => b.active &= !v,
    }
}

fn decode_dist(offset: u64, size: u8) -> Result<Reg, VgicError> {
    match offset {
        0x0000 => word(size, Reg::GicdCtlr),
        0x0004 => word(size, Reg::ReadOnly(GICD_TYPER)),
        0x0008 => word(size, Reg::ReadOnly(IIDR)),
        0x0080..=0x03FF => {
            let (kind, n) = bit_reg(offset);
            // Word 0 (SGIs/PPIs) is RAZ/WI here with affinity routing; it
            // lives in each redistributor.
            let reg = match n.checked_sub(1) {
                Some(w) if w < SPI_WORDS => Reg::Bits {
                    kind,
                    bank: BankSel::Spi(w),
                },
                _ => Reg::Raz,
            };
            word(size, reg)
        }
        0x0400..=0x07FF => {
            let intid = (offset - 0x400) as usize;
            let reg = match intid.checked_sub(NR_PRIVATE as usize) {
                Some(spi) if spi < NR_SPIS => Reg::Priority {
                    prio: PrioSel::Spi,
                    first: spi,
                },
                _ => Reg::Raz,
            };
            byte_or_word(size, reg)
        }
        // GICD_ITARGETSR<n>: RAZ/WI with affinity routing.
        0x0800..=0x0BFF => byte_or_word(size, Reg::Raz),
        0x0C00..=0x0CFF => {
            let n = ((offset - 0xC00) / 4) as usize;
            let reg = match n.checked_sub(2) {
                Some(k) if k / 2 < SPI_WORDS => Reg::Config {
                    bank: BankSel::Spi(k / 2),
                    half: (k % 2) as u32,
                },
                _ => Reg::Raz,
            };
            word(size, reg)
        }
        0x6000..=0x7FFF => {
            let intid = ((offset - 0x6000) / 8) as usize;
            let reg = match intid.checked_sub(NR_PRIVATE as usize) {
                Some(spi) if spi < NR_SPIS => Reg::Irouter {
                    spi,
                    shift: half_shift(offset),
                },
                _ => Reg::Raz,
            };
            dword(size, reg)
        }
        0xFFD0..=0xFFFF => word(size, Reg::ReadOnly(id_register(offset))),
        // GICD_TYPER2, STATUSR, SETSPI/CLRSPI (no MBIS), IGRPMODR and NSACR
        // (RAZ/WI with DS == 1), SGIR and C/SPENDSGIR (legacy only), INMIR,
        // the extended ranges: all RAZ/WI.
        _ => Ok(Reg::Raz),
    }
}

fn decode_redist(vcpu: usize, offset: u64, size: u8) -> Result<Reg, VgicError> {
    let Some(sgi_offset) = offset.checked_sub(REDIST_SGI_BASE) else {
        return match offset {
            // GICR_CTLR: no LPIs, so EnableLPIs is RES0 and RWP/UWP read 0.
            0x0000 => word(size, Reg::ReadOnly(0)),
            0x0004 => word(size, Reg::ReadOnly(IIDR)),
            0x0008..=0x000F => dword(
                size,
                Reg::RedistTyper {
                    vcpu,
                    shift: half_shift(offset),
                },
            ),
            0x0014 => word(size, Reg::Waker { vcpu }),
            // GICR_PROPBASER/PENDBASER: no LPIs.
            0x0070..=0x007F => dword(size, Reg::Raz),
            0xFFD0..=0xFFFF => word(size, Reg::ReadOnly(id_register(offset))),
            _ => Ok(Reg::Raz),
        };
    };
    match sgi_offset {
        0x0080..=0x03FF => {
            let (kind, n) = bit_reg(sgi_offset);
            // Words beyond 0 are the extended PPI range, not implemented.
            let reg = if n == 0 {
                Reg::Bits {
                    kind,
                    bank: BankSel::Private(vcpu),
                }
            } else {
                Reg::Raz
            };
            word(size, reg)
        }
        0x0400..=0x07FF => {
            let intid = (sgi_offset - 0x400) as usize;
            let reg = if intid < NR_PRIVATE as usize {
                Reg::Priority {
                    prio: PrioSel::Private(vcpu),
                    first: intid,
                }
            } else {
                Reg::Raz
            };
            byte_or_word(size, reg)
        }
        0x0C00 => word(size, Reg::ReadOnly(ICFGR_ALL_EDGE)),
        0x0C04 => word(
            size,
            Reg::Config {
                bank: BankSel::Private(vcpu),
                half: 1,
            },
        ),
        0x0C08..=0x0CFF => word(size, Reg::Raz),
        // GICR_IGRPMODR0 and GICR_NSACR are RAZ/WI with DS == 1.
        _ => Ok(Reg::Raz),
    }
}

/// The array and word index of an offset in 0x080..0x400.
fn bit_reg(offset: u64) -> (BitReg, usize) {
    let kind = match (offset - 0x80) / 0x80 {
        0 => BitReg::Group,
        1 => BitReg::SetEnable,
        2 => BitReg::ClearEnable,
        3 => BitReg::SetPending,
        4 => BitReg::ClearPending,
        5 => BitReg::SetActive,
        _ => BitReg::ClearActive,
    };
    (kind, ((offset % 0x80) / 4) as usize)
}

/// PIDR4..7, PIDR0..3, CIDR0..3 at 0xFFD0..0xFFFC. PIDR2.ArchRev = 3
/// (GICv3) is what Linux checks for both frames; the rest is the standard
/// CoreSight identification with JEP106 code 0x3B, continuation 4.
fn id_register(offset: u64) -> u32 {
    match offset {
        0xFFD0 => 0x04,
        0xFFE0 => 0x54,
        0xFFE4 => 0xB0,
        0xFFE8 => 0x3B,
        0xFFF0 => 0x0D,
        0xFFF4 => 0xF0,
        0xFFF8 => 0x05,
        0xFFFC => 0xB1,
        _ => 0,
    }
}

/// Most 32-bit registers allow only word accesses (IHI 0069, "GIC
/// memory-mapped register access").
fn word(size: u8, reg: Reg) -> Result<Reg, VgicError> {
    if size == 4 {
        Ok(reg)
    } else {
        Err(VgicError::BadSize)
    }
}

/// IPRIORITYR and ITARGETSR are also byte-accessible.
fn byte_or_word(size: u8, reg: Reg) -> Result<Reg, VgicError> {
    if size == 1 || size == 4 {
        Ok(reg)
    } else {
        Err(VgicError::BadSize)
    }
}

/// 64-bit registers may be accessed whole or as two 32-bit halves.
fn dword(size: u8, reg: Reg) -> Result<Reg, VgicError> {
    if size == 4 || size == 8 {
        Ok(reg)
    } else {
        Err(VgicError::BadSize)
    }
}

/// 0 for the low half (or a whole 64-bit access), 32 for the high half.
fn half_shift(offset: u64) -> u32 {
    if offset % 8 == 4 {
        32
    } else {
        0
    }
}

fn merge_half(old: u64, value: u64, shift: u32, size: u8) -> u64 {
    if size == 8 {
        return value;
    }
    let mask = 0xFFFF_FFFFu64 << shift;
    (old & !mask) | ((value << shift) & mask)
}

fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        4 => 0xFFFF_FFFF,
        _ => u64::MAX,
    }
}
