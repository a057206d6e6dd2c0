//! vCPU power state for PSCI, shared between pCPUs.
//!
//! CPU_ON may race: several vCPUs on different pCPUs can ask to start the
//! same target at once. The OFF→ON transition is one compare-exchange, so
//! exactly one caller wins and every other caller, then and later, sees
//! ALREADY_ON. The winner then posts the entry point; the pCPU that owns
//! the target picks the request up the next time it schedules.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

const OFF: u8 = 0;
const ON: u8 = 1;
const STOPPED: u8 = 2;

/// Power state and pending start request of one vCPU.
pub struct VcpuPower {
    state: AtomicU8,
    /// Set (Release) once `entry`/`context` are valid; taken by the owner.
    start_pending: AtomicU8,
    entry: AtomicU64,
    context: AtomicU64,
}

/// Why CPU_ON was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOnError {
    /// The vCPU is already on (or its start is pending).
    AlreadyOn,
    /// The domain has been stopped; its vCPUs stay down.
    Stopped,
}

impl VcpuPower {
    /// A vCPU that is off.
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(OFF),
            start_pending: AtomicU8::new(0),
            entry: AtomicU64::new(0),
            context: AtomicU64::new(0),
        }
    }

    /// PSCI CPU_ON: turn the vCPU on at `entry` with x0 = `context`.
    pub fn power_on(&self, entry: u64, context: u64) -> Result<(), PowerOnError> {
        match self
            .state
            .compare_exchange(OFF, ON, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.entry.store(entry, Ordering::Relaxed);
                self.context.store(context, Ordering::Relaxed);
                self.start_pending.store(1, Ordering::Release);
                Ok(())
            }
            Err(STOPPED) => Err(PowerOnError::Stopped),
            Err(_) => Err(PowerOnError::AlreadyOn),
        }
    }

    /// Take a posted start request: `(entry, context)`, once.
    pub fn take_start(&self) -> Option<(u64, u64)> {
        if self.start_pending.swap(0, Ordering::Acquire) == 1 {
            Some((
                self.entry.load(Ordering::Relaxed),
                self.context.load(Ordering::Relaxed),
            ))
        } else {
            None
        }
    }

    /// PSCI CPU_OFF by the vCPU itself (or a domain reset).
    pub fn power_off(&self) {
        self.start_pending.store(0, Ordering::Release);
        let _ = self
            .state
            .compare_exchange(ON, OFF, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The domain is stopped: refuse every later CPU_ON.
    pub fn stop(&self) {
        self.start_pending.store(0, Ordering::Release);
        self.state.store(STOPPED, Ordering::Release);
    }

    /// Back to OFF after a domain reboot.
    pub fn reset(&self) {
        self.start_pending.store(0, Ordering::Release);
        self.state.store(OFF, Ordering::Release);
    }

    /// Whether the vCPU is on (for AFFINITY_INFO and the scheduler).
    pub fn is_on(&self) -> bool {
        self.state.load(Ordering::Acquire) == ON
    }
}

impl Default for VcpuPower {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn second_power_on_is_already_on_every_time() {
        let p = VcpuPower::new();
        assert_eq!(p.power_on(0x4000_0000, 1), Ok(()));
        for _ in 0..100 {
            assert_eq!(p.power_on(0x4000_0000, 2), Err(PowerOnError::AlreadyOn));
        }
        assert_eq!(p.take_start(), Some((0x4000_0000, 1)));
        assert_eq!(p.take_start(), None);
        p.power_off();
        assert!(!p.is_on());
        assert_eq!(p.power_on(0x4000_1000, 3), Ok(()));
        assert_eq!(p.take_start(), Some((0x4000_1000, 3)));
    }

    #[test]
    fn racing_power_on_has_one_winner() {
        for _ in 0..200 {
            let p = Arc::new(VcpuPower::new());
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let (p, b) = (p.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        b.wait();
                        p.power_on(0x4000_0000 + i, i)
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
            assert!(results
                .iter()
                .all(|r| matches!(r, Ok(()) | Err(PowerOnError::AlreadyOn))));
            let (entry, ctx) = p.take_start().unwrap();
            assert_eq!(
                entry - 0x4000_0000,
                ctx,
                "entry and context come from the same winner"
            );
        }
    }

    #[test]
    fn stopped_vcpus_stay_down() {
        let p = VcpuPower::new();
        p.stop();
        assert_eq!(p.power_on(0, 0), Err(PowerOnError::Stopped));
        p.reset();
        assert_eq!(p.power_on(0, 0), Ok(()));
    }
}
