//! Packing and unpacking ICH_LR<n>_EL2, the list registers through which the
//! kernel hands virtual interrupts to the hardware virtual CPU interface
//! (IHI 0069, ICH_LR<n>_EL2). Pure bit arithmetic, so the layout is tested
//! on the host and the kernel never writes these shifts by hand.

use super::Vgic;

/// ICH_LR<n>_EL2.vINTID, bits [31:0].
const LR_VINTID_MASK: u64 = 0xFFFF_FFFF;
/// ICH_LR<n>_EL2.EOI, bit [41] (only when HW == 0): ask for a maintenance
/// interrupt when the guest deactivates the interrupt. The model does not set
/// it; a kernel that wants to resample level-sensitive interrupts promptly
/// can OR it in and handle the maintenance interrupt (ICH_EISR_EL2).
pub const LR_EOI: u64 = 1 << 41;
/// ICH_LR<n>_EL2.Priority, bits [55:48].
const LR_PRIORITY_SHIFT: u32 = 48;
/// ICH_LR<n>_EL2.Group, bit [60]: 1 = Group 1.
const LR_GROUP1: u64 = 1 << 60;
/// ICH_LR<n>_EL2.HW, bit [61]: 0 = purely virtual, no physical deactivation.
const LR_HW: u64 = 1 << 61;
/// ICH_LR<n>_EL2.State, bits [63:62].
const LR_STATE_SHIFT: u32 = 62;

/// ICH_LR<n>_EL2.State.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrState {
    /// 0b00: the LR is free.
    Invalid,
    /// 0b01: waiting for the guest to acknowledge it.
    Pending,
    /// 0b10: acknowledged, not yet deactivated.
    Active,
    /// 0b11: acknowledged and triggered again.
    PendingActive,
}

impl LrState {
    const fn bits(self) -> u64 {
        match self {
            LrState::Invalid => 0b00,
            LrState::Pending => 0b01,
            LrState::Active => 0b10,
            LrState::PendingActive => 0b11,
        }
    }
}

/// A pending, HW = 0 list register for `intid` in the given group.
pub(super) const fn lr_value_with_group(intid: u32, priority: u8, group1: bool) -> u64 {
    let group = if group1 { LR_GROUP1 } else { 0 };
    (LrState::Pending.bits() << LR_STATE_SHIFT)
        | group
        | ((priority as u64) << LR_PRIORITY_SHIFT)
        | (intid as u64 & LR_VINTID_MASK)
}

/// `lr` with its State field replaced.
pub(super) const fn with_state(lr: u64, state: LrState) -> u64 {
    (lr & !(0b11 << LR_STATE_SHIFT)) | (state.bits() << LR_STATE_SHIFT)
}

impl Vgic {
    /// The ICH_LR<n>_EL2 value for a virtual, Group 1, pending interrupt:
    /// State = pending, HW = 0, Group = 1, `priority`, vINTID = `intid`.
    pub const fn lr_value(intid: u32, priority: u8) -> u64 {
        lr_value_with_group(intid, priority, true)
    }

    /// Decode an ICH_LR<n>_EL2 value back into `(vINTID, state)`. The HW,
    /// Group and priority fields are ignored.
    pub const fn lr_decode(lr: u64) -> (u32, LrState) {
        let state = match (lr >> LR_STATE_SHIFT) & 0b11 {
            0b00 => LrState::Invalid,
            0b01 => LrState::Pending,
            0b10 => LrState::Active,
            _ => LrState::PendingActive,
        };
        ((lr & LR_VINTID_MASK) as u32, state)
    }

    /// Whether an LR value has HW = 1 (a physical interrupt is linked). The
    /// model never builds one; the kernel can use this to refuse to retire
    /// LRs it did not create.
    pub const fn lr_is_hw(lr: u64) -> bool {
        lr & LR_HW != 0
    }
}
