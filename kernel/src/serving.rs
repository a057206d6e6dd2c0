//! Whether a served domain's device accesses go to a server, wait for one,
//! or fault: the part of a device model's restart the kernel keeps per
//! served domain.
//!
//! The one idea: an access posted to a server carries a *ticket*, the
//! served domain's serving epoch when it was posted. The epoch moves every
//! time the domain loses its server or gains a new one, so the vCPU that
//! waits on the answer learns, with one load, that its slot (in the old
//! server's RAM, which may be freed) must not be read any more: the access
//! is posted again to whichever server the domain has now, or waits for
//! one. While the domain is *orphaned* (its device model stopped and its
//! builder restarts it, `CREATE_RESTARTS`), a new access waits too instead
//! of faulting.
//!
//! Lock-free on the read side (the owner pCPU's scheduler checks a ticket
//! on every wake-up of a waiting vCPU); the changes happen under the
//! served domain's server lock in `hv::ioreq`, which orders them against
//! posting.

use core::sync::atomic::{AtomicU32, Ordering};

/// What becomes of the domains a device model served when it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerLoss {
    /// Its builder restarts it: they keep running, and their device
    /// accesses wait for its next generation.
    Wait,
    /// It is not coming back on its own: its registration stays as it was
    /// (it may still be reloaded in place by the kernel), and its
    /// destruction stops them.
    Keep,
}

/// The decision for a stopping device model, from its `CREATE_RESTARTS`.
pub fn on_server_stop(restarts: bool) -> ServerLoss {
    if restarts {
        ServerLoss::Wait
    } else {
        ServerLoss::Keep
    }
}

/// A served domain's serving epoch and orphan flag, in one word so that
/// posting an access reads both with one load: bit 0 is the orphan flag,
/// the bits above it the epoch (so every change adds 2).
#[derive(Debug)]
pub struct Serving {
    word: AtomicU32,
}

/// The orphan flag's bit in a ticket.
const ORPHANED: u32 = 1;
/// One epoch step.
const EPOCH_STEP: u32 = 2;

impl Default for Serving {
    fn default() -> Self {
        Self::new()
    }
}

impl Serving {
    pub const fn new() -> Self {
        Self {
            word: AtomicU32::new(0),
        }
    }

    /// The ticket of an access posted now. It says, too, whether the
    /// domain is orphaned then (`waits`).
    pub fn ticket(&self) -> u32 {
        self.word.load(Ordering::Acquire)
    }

    /// Whether the domain was orphaned when `ticket` was taken: an access
    /// posted then waits for a server instead of going to a slot.
    pub const fn waits(ticket: u32) -> bool {
        ticket & ORPHANED != 0
    }

    /// Whether an access posted with `ticket` still waits on the slot it
    /// was posted to (the domain's server has not changed since).
    pub fn holds(&self, ticket: u32) -> bool {
        self.word.load(Ordering::Acquire) == ticket
    }

    /// Whether the domain waits for its device model's next generation.
    pub fn is_orphaned(&self) -> bool {
        Self::waits(self.ticket())
    }

    /// Its server stopped and will be restarted: every ticket is void, and
    /// accesses wait.
    pub fn orphan(&self) {
        self.change(|w| w.wrapping_add(EPOCH_STEP) | ORPHANED);
    }

    /// A new server is ready for it: accesses go to that server again, and
    /// those that waited are posted to it (their tickets are void). Whether
    /// it had been orphaned.
    pub fn adopt(&self) -> bool {
        let was = self.change(|w| {
            if Self::waits(w) {
                (w & !ORPHANED).wrapping_add(EPOCH_STEP)
            } else {
                w
            }
        });
        Self::waits(was)
    }

    /// The domain is gone (destroyed): nothing of it waits any more.
    pub fn forget(&self) {
        self.change(|w| (w & !ORPHANED).wrapping_add(EPOCH_STEP));
    }

    /// Apply `f` to the word atomically; the word before.
    fn change(&self, f: impl Fn(u32) -> u32) -> u32 {
        let mut old = self.word.load(Ordering::Acquire);
        loop {
            match self
                .word
                .compare_exchange_weak(old, f(old), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(was) => return was,
                Err(now) => old = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_restarted_server_leaves_its_domains_waiting() {
        assert_eq!(on_server_stop(true), ServerLoss::Wait);
        assert_eq!(on_server_stop(false), ServerLoss::Keep);
    }

    #[test]
    fn a_ticket_holds_until_the_server_changes() {
        let s = Serving::new();
        let t = s.ticket();
        assert!(s.holds(t));
        assert!(!s.is_orphaned());
        s.orphan();
        assert!(s.is_orphaned());
        assert!(!s.holds(t), "the old server's slot must not be read");
        let waiting = s.ticket();
        assert!(Serving::waits(waiting), "an access posted now waits");
        assert!(!Serving::waits(t));
        assert!(s.adopt(), "it was orphaned");
        assert!(!s.is_orphaned());
        assert!(!s.holds(waiting), "a waiting access is posted again");
        let new = s.ticket();
        assert!(s.holds(new));
    }

    #[test]
    fn adopting_a_domain_that_was_not_orphaned_changes_nothing() {
        let s = Serving::new();
        let t = s.ticket();
        assert!(!s.adopt());
        assert!(s.holds(t), "a first Ready voids no posted access");
    }

    #[test]
    fn forgetting_voids_every_ticket_and_the_orphan_flag() {
        let s = Serving::new();
        s.orphan();
        let t = s.ticket();
        s.forget();
        assert!(!s.is_orphaned());
        assert!(!s.holds(t));
    }

    #[test]
    fn the_epoch_wraps_without_panicking() {
        let s = Serving {
            word: AtomicU32::new(u32::MAX - 1),
        };
        let t = s.ticket();
        s.orphan();
        assert_eq!(s.ticket(), ORPHANED, "the epoch wrapped to 0");
        assert!(!s.holds(t));
        assert!(s.is_orphaned());
        assert!(s.adopt());
        assert_eq!(s.ticket(), EPOCH_STEP);
    }
}
