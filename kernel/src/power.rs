//! vCPU power state for PSCI, shared between pCPUs.
//!
//! CPU_ON may race: several vCPUs on different pCPUs can ask to start the
//! same target at once. Leaving OFF is one compare-exchange, so exactly one
//! caller wins and every other caller, then and later, sees ON_PENDING or
//! ALREADY_ON. The winner posts the entry point and marks the start
//! pending; only the pCPU that owns the target moves it from pending to ON,
//! after it has reset the vCPU's registers. So the scheduler, which runs
//! only vCPUs that are ON, can never enter a vCPU whose start it has not yet
//! applied (it once did, and entered a fresh vCPU at PC 0).

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

const OFF: u8 = 0;
const ON: u8 = 1;
const STOPPED: u8 = 2;
/// Won by a CPU_ON caller that is still writing the entry point.
const CLAIMED: u8 = 3;
/// Entry point posted; waiting for the owner pCPU to apply it.
const STARTING: u8 = 4;

/// Power state and pending start request of one vCPU.
pub struct VcpuPower {
    state: AtomicU8,
    entry: AtomicU64,
    context: AtomicU64,
}

/// Why CPU_ON was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerOnError {
    /// The vCPU is already on.
    AlreadyOn,
    /// An earlier CPU_ON for it has not taken effect yet.
    OnPending,
    /// The domain has been stopped; its vCPUs stay down.
    Stopped,
}

/// What AFFINITY_INFO reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerState {
    Off,
    OnPending,
    On,
}

impl VcpuPower {
    /// A vCPU that is off.
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(OFF),
            entry: AtomicU64::new(0),
            context: AtomicU64::new(0),
        }
    }

    /// PSCI CPU_ON: turn the vCPU on at `entry` with x0 = `context`.
    pub fn power_on(&self, entry: u64, context: u64) -> Result<(), PowerOnError> {
        match self
            .state
            .compare_exchange(OFF, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.entry.store(entry, Ordering::Relaxed);
                self.context.store(context, Ordering::Relaxed);
                // A stop or reset in between wins: the request is dropped.
                match self.state.compare_exchange(
                    CLAIMED,
                    STARTING,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => Ok(()),
                    Err(_) => Err(PowerOnError::Stopped),
                }
            }
            Err(STOPPED) => Err(PowerOnError::Stopped),
            Err(ON) => Err(PowerOnError::AlreadyOn),
            Err(_) => Err(PowerOnError::OnPending),
        }
    }

    /// Owner pCPU only: take a posted start request, `(entry, context)`,
    /// once. The vCPU counts as ON from here; the caller must reset its
    /// registers before it next schedules.
    pub fn take_start(&self) -> Option<(u64, u64)> {
        self.state
            .compare_exchange(STARTING, ON, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| {
                (
                    self.entry.load(Ordering::Relaxed),
                    self.context.load(Ordering::Relaxed),
                )
            })
    }

    /// PSCI CPU_OFF by the vCPU itself.
    pub fn power_off(&self) {
        let _ = self
            .state
            .compare_exchange(ON, OFF, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The domain is stopped: refuse every later CPU_ON.
    pub fn stop(&self) {
        self.state.store(STOPPED, Ordering::Release);
    }

    /// Whether the stop of its domain has reached it (`stop`), and no
    /// reset since.
    pub fn is_stopped(&self) -> bool {
        self.state.load(Ordering::Acquire) == STOPPED
    }

    /// Back to OFF after a domain reboot.
    pub fn reset(&self) {
        self.state.store(OFF, Ordering::Release);
    }

    /// Whether the vCPU may be scheduled: ON, with its start applied.
    pub fn is_on(&self) -> bool {
        self.state.load(Ordering::Acquire) == ON
    }

    /// The state as AFFINITY_INFO reports it.
    pub fn affinity(&self) -> PowerState {
        match self.state.load(Ordering::Acquire) {
            ON => PowerState::On,
            CLAIMED | STARTING => PowerState::OnPending,
            _ => PowerState::Off,
        }
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
        assert!(!p.is_on(), "not schedulable before the owner applies it");
        assert_eq!(p.affinity(), PowerState::OnPending);
        assert_eq!(p.power_on(0x4000_0000, 2), Err(PowerOnError::OnPending));
        assert_eq!(p.take_start(), Some((0x4000_0000, 1)));
        assert!(p.is_on());
        assert_eq!(p.affinity(), PowerState::On);
        for _ in 0..100 {
            assert_eq!(p.power_on(0x4000_0000, 2), Err(PowerOnError::AlreadyOn));
        }
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
                .all(|r| matches!(r, Ok(()) | Err(PowerOnError::OnPending))));
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
        assert!(!p.is_stopped());
        p.stop();
        assert!(p.is_stopped());
        p.power_off();
        assert!(p.is_stopped(), "CPU_OFF does not undo a stop");
        assert_eq!(p.power_on(0, 0), Err(PowerOnError::Stopped));
        assert_eq!(p.take_start(), None);
        p.reset();
        assert!(!p.is_stopped());
        assert_eq!(p.power_on(0, 0), Ok(()));
        p.stop();
        assert_eq!(p.take_start(), None, "a stop drops a pending start");
        assert!(!p.is_on());
    }
}
