//! The EL1 virtual timer (CNTV_*), which the hypervisor context-switches per
//! vCPU and which raises PPI `VTIMER_INTID` when it fires.
//!
//! The one idea: the timer condition is level-triggered, so a handler must
//! mask or disable the timer before completing the interrupt or it fires again
//! at once (Arm ARM D11.2.4).

/// Counter ticks in `us` microseconds at `freq` Hz, rounded up so a deadline
/// is never early.
pub fn ticks_for_us(freq: u64, us: u64) -> u64 {
    (u128::from(freq) * u128::from(us)).div_ceil(1_000_000) as u64
}

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub use machine::*;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod machine {
    use aarch64_cpu::asm::barrier;
    use aarch64_cpu::registers::{
        Readable, Writeable, CNTFRQ_EL0, CNTVCT_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0, CNTV_TVAL_EL0,
    };

    /// Counter frequency in Hz.
    pub fn frequency() -> u64 {
        CNTFRQ_EL0.get()
    }

    /// The virtual count, ordered after every earlier instruction (the isb
    /// stops the read from being speculated early, Arm ARM D11.2.2).
    pub fn now() -> u64 {
        barrier::isb(barrier::SY);
        CNTVCT_EL0.get()
    }

    /// Arms the timer `ticks` from now, unmasked; returns the compare value it
    /// will fire at.
    pub fn arm_after(ticks: u64) -> u64 {
        CNTV_TVAL_EL0.set(ticks.min(i32::MAX as u64));
        CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
        barrier::isb(barrier::SY);
        CNTV_CVAL_EL0.get()
    }

    /// Arms the timer to fire when the count reaches `deadline`.
    pub fn arm_at(deadline: u64) {
        CNTV_CVAL_EL0.set(deadline);
        CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
        barrier::isb(barrier::SY);
    }

    /// Stops the timer; its interrupt line drops.
    pub fn disable() {
        CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::CLEAR + CNTV_CTL_EL0::IMASK::SET);
        barrier::isb(barrier::SY);
    }

    /// The compare value last programmed.
    pub fn deadline() -> u64 {
        CNTV_CVAL_EL0.get()
    }

    /// Whether the timer condition is met (ISTATUS).
    pub fn fired() -> bool {
        CNTV_CTL_EL0.is_set(CNTV_CTL_EL0::ISTATUS)
    }

    /// Busy-waits `us` microseconds.
    pub fn delay_us(us: u64) {
        let end = now() + super::ticks_for_us(frequency(), us);
        while now() < end {
            core::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_up() {
        assert_eq!(ticks_for_us(62_500_000, 1000), 62_500);
        assert_eq!(ticks_for_us(1_000_000, 1), 1);
        assert_eq!(ticks_for_us(3, 1), 1);
        assert_eq!(ticks_for_us(24_000_000, 20_000), 480_000);
        assert_eq!(ticks_for_us(u64::MAX, 1_000_000), u64::MAX);
    }
}
