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

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

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

/// A served domain's serving epoch and orphan flag.
#[derive(Debug)]
pub struct Serving {
    epoch: AtomicU32,
    orphaned: AtomicBool,
}

impl Default for Serving {
    fn default() -> Self {
        Self::new()
    }
}

impl Serving {
    pub const fn new() -> Self {
        Self {
            epoch: AtomicU32::new(0),
            orphaned: AtomicBool::new(false),
        }
    }

    /// The ticket of an access posted now.
    pub fn ticket(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether an access posted with `ticket` still waits on the slot it
    /// was posted to (the domain's server has not changed since).
    pub fn holds(&self, ticket: u32) -> bool {
        self.epoch.load(Ordering::Acquire) == ticket
    }

    /// Whether the domain waits for its device model's next generation.
    pub fn is_orphaned(&self) -> bool {
        self.orphaned.load(Ordering::Acquire)
    }

    /// Its server stopped and will be restarted: every ticket is void, and
    /// accesses wait.
    pub fn orphan(&self) {
        self.orphaned.store(true, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// A new server is ready for it: accesses go to that server again, and
    /// those that waited are posted to it (their tickets are void). Whether
    /// it had been orphaned.
    pub fn adopt(&self) -> bool {
        let was = self.orphaned.swap(false, Ordering::AcqRel);
        if was {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        was
    }

    /// The domain is gone (destroyed): nothing of it waits any more.
    pub fn forget(&self) {
        self.orphaned.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
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
            epoch: AtomicU32::new(u32::MAX),
            orphaned: AtomicBool::new(false),
        };
        let t = s.ticket();
        s.orphan();
        assert_eq!(s.ticket(), 0);
        assert!(!s.holds(t));
    }
}
