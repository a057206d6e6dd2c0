//! The `on-crash` supervisor: what domB does when a domain it built dies.
//!
//! The one idea: this is a pure state machine over an abstract clock. The
//! shell feeds it [`Event`]s (a crash report, or a tick of a monotonic
//! counter it reads itself) and carries out the [`Action`]s it returns;
//! nothing in here reads a clock, sleeps or calls the kernel, so every
//! timing rule is tested on the host.
//!
//! Each domain has one policy ([`OnCrash`]):
//! - `Stop`: leave it stopped.
//! - `Reboot`: restart the whole system.
//! - `Restart`: rebuild it with the next generation number, after a delay
//!   that doubles with each crash in a row (from `base_delay`, capped at
//!   `max_delay`) and falls back to `base_delay` once the domain has run for
//!   `stable_after` before crashing. A domain that would restart more than
//!   `max_restarts` times in any `window` is left stopped instead, with a
//!   reason that says so: a crash loop must not consume the system.
//!
//! Domains that share links are peers. When a domain is rebuilt or left
//! stopped, the action lists its running peers, so the shell can tell each
//! that its peer restarted (or is gone) and it sees an explicit error
//! instead of waiting forever on a dead ring.
//!
//! Everything is bounded: [`MAX_DOMAINS`] domains, [`MAX_RESTART_BUDGET`]
//! remembered restarts each, and at most one action per domain per event.

use crate::DomainId;
use core::fmt;

/// Domains one supervisor tracks (the boot domain's own limit).
pub const MAX_DOMAINS: usize = 16;
/// The largest `max_restarts` a policy may set: the supervisor remembers
/// this many restart times per domain to enforce the window.
pub const MAX_RESTART_BUDGET: usize = 8;

// Peer sets are one bit per table slot.
const _: () = assert!(MAX_DOMAINS <= u16::BITS as usize);

/// A reading of the monotonic clock the shell uses, in its own unit
/// (counter ticks or nanoseconds); only differences and order matter.
pub type Time = u64;

/// A domain's generation: 0 for the build at boot, one more per restart.
pub type Generation = u32;

/// A domain's `on-crash` action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCrash {
    Stop,
    Restart(RestartPolicy),
    Reboot,
}

/// How a `Restart` domain is restarted. Times are in [`Time`] units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The delay before the first restart after a stable run (may be 0).
    pub base_delay: Time,
    /// The delay never grows past this.
    pub max_delay: Time,
    /// A domain that ran at least this long before crashing is considered
    /// healthy again: its next delay is `base_delay`.
    pub stable_after: Time,
    /// At most this many restarts in any `window`; the crash after that
    /// leaves the domain stopped. 1 to [`MAX_RESTART_BUDGET`].
    pub max_restarts: u32,
    pub window: Time,
}

impl RestartPolicy {
    /// Checks the policy is one the supervisor can carry out.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.max_delay < self.base_delay {
            return Err(PolicyError::MaxDelayBelowBase);
        }
        if self.max_restarts == 0 {
            return Err(PolicyError::NoRestarts);
        }
        if self.max_restarts as usize > MAX_RESTART_BUDGET {
            return Err(PolicyError::RestartBudgetTooLarge);
        }
        if self.window == 0 {
            return Err(PolicyError::EmptyWindow);
        }
        Ok(())
    }

    /// The delay before the restart that follows `consecutive` earlier
    /// crashes in a row: `base_delay × 2^consecutive`, capped.
    fn delay(&self, consecutive: u32) -> Time {
        let factor = 1u64.checked_shl(consecutive).unwrap_or(u64::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Why a [`RestartPolicy`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// `max_delay` is below `base_delay`.
    MaxDelayBelowBase,
    /// `max_restarts` is 0: that is `OnCrash::Stop`, say so.
    NoRestarts,
    /// `max_restarts` exceeds [`MAX_RESTART_BUDGET`].
    RestartBudgetTooLarge,
    /// `window` is 0, so no restart would ever count against the budget.
    EmptyWindow,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyError::MaxDelayBelowBase => "max delay is below the base delay",
            PolicyError::NoRestarts => "restart policy allows no restart (use stop)",
            PolicyError::RestartBudgetTooLarge => {
                "more restarts per window than the supervisor tracks"
            }
            PolicyError::EmptyWindow => "restart window is empty",
        })
    }
}

/// What the shell reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `domain` crashed (the kernel stopped it) at `now`.
    Crashed { domain: DomainId, now: Time },
    /// `domain` asked to be rebooted (PSCI SYSTEM_RESET or a reboot
    /// shutdown) at `now`. It boots again at once, in place, with the next
    /// generation ([`Action::ResetInPlace`]), whatever its `on-crash` says,
    /// as a dom0less kernel reboots one: a reboot is not a crash, so it
    /// neither backs off nor counts against the restart budget.
    RebootRequested { domain: DomainId, now: Time },
    /// The clock reads `now`; restarts that are due happen.
    Tick { now: Time },
}

/// The running peers to tell about a domain's restart or stop.
pub type Peers = heapless::Vec<DomainId, MAX_DOMAINS>;

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Destroy what is left of `domain` and build it again as `generation`,
    /// then tell each of `notify_peers` that its peer restarted.
    Rebuild {
        domain: DomainId,
        generation: Generation,
        notify_peers: Peers,
    },
    /// Boot `domain` again in place as `generation` (it asked to reboot):
    /// reset it, keeping its memory, shared regions and device model, load
    /// it again and start it, then tell each of `notify_peers` that its
    /// peer restarted. If it cannot be reset, the shell rebuilds it as for
    /// [`Action::Rebuild`].
    ResetInPlace {
        domain: DomainId,
        generation: Generation,
        notify_peers: Peers,
    },
    /// Leave `domain` stopped for good, print `reason`, and tell each of
    /// `notify_peers` that its peer is gone.
    LeaveStopped {
        domain: DomainId,
        reason: StopReason,
        notify_peers: Peers,
    },
    /// Restart the whole system because `crashed` asked for it.
    RebootSystem { crashed: DomainId },
}

/// The actions one event causes: at most one per domain.
pub type Actions = heapless::Vec<Action, MAX_DOMAINS>;

/// Why a domain stays stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Its `on-crash` action is `stop`.
    Policy,
    /// It crashed again after `restarts` restarts within `window`.
    RestartBudgetExhausted { restarts: u32, window: Time },
    /// Its generation number would wrap, which would let a peer mistake the
    /// new domain for an old one.
    GenerationsExhausted,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Policy => f.write_str("on-crash is stop"),
            StopReason::RestartBudgetExhausted { restarts, window } => {
                write!(
                    f,
                    "crashed again after {restarts} restarts within {window} ticks"
                )
            }
            StopReason::GenerationsExhausted => f.write_str("generation number exhausted"),
        }
    }
}

/// Where a domain stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Built (or rebuilt) at `since` and not known to have crashed.
    Running { since: Time },
    /// Crashed; it is rebuilt at the first event at or after `due`.
    RestartPending { due: Time },
    /// Stopped for good.
    Stopped(StopReason),
}

/// Why the supervisor refused a call. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SupervisorError {
    /// [`MAX_DOMAINS`] domains are already registered.
    TableFull,
    AlreadyRegistered(DomainId),
    UnknownDomain(DomainId),
    /// A domain cannot be its own peer.
    SelfLink(DomainId),
    BadPolicy {
        domain: DomainId,
        error: PolicyError,
    },
    /// The clock read `now`, before the `last` reading it was given.
    TimeWentBackwards {
        last: Time,
        now: Time,
    },
    /// A crash was reported for a domain that is not running: a duplicate
    /// or stale report.
    NotRunning(DomainId),
}

impl fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SupervisorError::TableFull => write!(f, "more than {MAX_DOMAINS} domains"),
            SupervisorError::AlreadyRegistered(d) => write!(f, "{d} registered twice"),
            SupervisorError::UnknownDomain(d) => write!(f, "{d} is not supervised"),
            SupervisorError::SelfLink(d) => write!(f, "{d} linked to itself"),
            SupervisorError::BadPolicy { domain, error } => write!(f, "{domain}: {error}"),
            SupervisorError::TimeWentBackwards { last, now } => {
                write!(f, "clock went backwards from {last} to {now}")
            }
            SupervisorError::NotRunning(d) => {
                write!(f, "crash reported for {d}, which is not running")
            }
        }
    }
}

/// One supervised domain.
#[derive(Clone, Debug)]
struct Supervised {
    id: DomainId,
    on_crash: OnCrash,
    generation: Generation,
    status: Status,
    /// Crashes in a row without a stable run: the back-off exponent.
    consecutive_crashes: u32,
    /// The most recent restart decisions, as a ring; `recorded` of them are
    /// valid and `next` is where the next one goes.
    recent_restarts: [Time; MAX_RESTART_BUDGET],
    recorded: usize,
    next: usize,
    /// One bit per table slot.
    peers: u16,
}

impl Supervised {
    fn restarts_within(&self, window: Time, now: Time) -> u32 {
        self.recent_restarts
            .iter()
            .take(self.recorded)
            .filter(|&&at| now.saturating_sub(at) < window)
            .count() as u32
    }

    fn remember_restart(&mut self, now: Time) {
        if let Some(slot) = self.recent_restarts.get_mut(self.next) {
            *slot = now;
        }
        self.next = (self.next + 1) % MAX_RESTART_BUDGET;
        self.recorded = (self.recorded + 1).min(MAX_RESTART_BUDGET);
    }
}

/// The supervisor of every domain domB built.
#[derive(Clone, Debug, Default)]
pub struct Supervisor {
    domains: heapless::Vec<Supervised, MAX_DOMAINS>,
    last_now: Time,
    rebooting: bool,
}

impl Supervisor {
    /// An empty supervisor; `const` so the shell can keep it in a static.
    pub const fn new() -> Self {
        Self {
            domains: heapless::Vec::new(),
            last_now: 0,
            rebooting: false,
        }
    }

    /// Starts supervising `id`, built (generation 0) and running since
    /// `now`. Register domains in boot order: restarts that fall due
    /// together are rebuilt in registration order, services first.
    pub fn add_domain(
        &mut self,
        id: DomainId,
        on_crash: OnCrash,
        now: Time,
    ) -> Result<(), SupervisorError> {
        self.check_clock(now)?;
        if self.slot(id).is_some() {
            return Err(SupervisorError::AlreadyRegistered(id));
        }
        if let OnCrash::Restart(policy) = on_crash {
            policy
                .validate()
                .map_err(|error| SupervisorError::BadPolicy { domain: id, error })?;
        }
        let domain = Supervised {
            id,
            on_crash,
            generation: 0,
            status: Status::Running { since: now },
            consecutive_crashes: 0,
            recent_restarts: [0; MAX_RESTART_BUDGET],
            recorded: 0,
            next: 0,
            peers: 0,
        };
        self.domains
            .push(domain)
            .map_err(|_| SupervisorError::TableFull)?;
        self.last_now = now;
        Ok(())
    }

    /// Records that `a` and `b` share a link (an event channel or shared
    /// memory), so each hears of the other's restart. Linking twice is
    /// harmless.
    pub fn link(&mut self, a: DomainId, b: DomainId) -> Result<(), SupervisorError> {
        if a == b {
            return Err(SupervisorError::SelfLink(a));
        }
        let slot_a = self.slot(a).ok_or(SupervisorError::UnknownDomain(a))?;
        let slot_b = self.slot(b).ok_or(SupervisorError::UnknownDomain(b))?;
        if let Some(domain) = self.domains.get_mut(slot_a) {
            domain.peers |= slot_bit(slot_b);
        }
        if let Some(domain) = self.domains.get_mut(slot_b) {
            domain.peers |= slot_bit(slot_a);
        }
        Ok(())
    }

    /// Feeds one event and returns what to do, in order. A refused event
    /// changes nothing. Once a reboot has been asked for, events are
    /// accepted and ignored: the system is going down.
    pub fn handle(&mut self, event: Event) -> Result<Actions, SupervisorError> {
        let now = match event {
            Event::Crashed { now, .. }
            | Event::RebootRequested { now, .. }
            | Event::Tick { now } => now,
        };
        self.check_clock(now)?;
        let crashed = match event {
            Event::Crashed { domain, .. } | Event::RebootRequested { domain, .. } => {
                let slot = self
                    .slot(domain)
                    .ok_or(SupervisorError::UnknownDomain(domain))?;
                let running = self
                    .domains
                    .get(slot)
                    .is_some_and(|d| matches!(d.status, Status::Running { .. }));
                if !running && !self.rebooting {
                    return Err(SupervisorError::NotRunning(domain));
                }
                Some(slot)
            }
            Event::Tick { .. } => None,
        };

        self.last_now = now;
        let mut actions = Actions::new();
        if self.rebooting {
            return Ok(actions);
        }
        if let (Some(slot), Event::RebootRequested { .. }) = (crashed, event) {
            if let Some(action) = self.reboot_now(slot, now) {
                let _ = actions.push(action);
            }
        } else if let Some(slot) = crashed {
            if let Some(action) = self.on_crash(slot, now) {
                // One action per domain per event: Actions holds them all.
                let _ = actions.push(action);
            }
        }
        if !self.rebooting {
            self.rebuild_due(now, &mut actions);
        }
        Ok(actions)
    }

    /// The earliest time a pending restart falls due: when the shell should
    /// next send a `Tick`.
    pub fn next_deadline(&self) -> Option<Time> {
        self.domains
            .iter()
            .filter_map(|d| match d.status {
                Status::RestartPending { due } => Some(due),
                _ => None,
            })
            .min()
    }

    /// Where `domain` stands.
    pub fn status(&self, domain: DomainId) -> Option<Status> {
        Some(self.get(domain)?.status)
    }

    /// `domain`'s current generation.
    pub fn generation(&self, domain: DomainId) -> Option<Generation> {
        Some(self.get(domain)?.generation)
    }

    /// Every domain linked to `domain`, running or not, in registration
    /// order.
    pub fn peers_of(&self, domain: DomainId) -> Result<Peers, SupervisorError> {
        let supervised = self
            .get(domain)
            .ok_or(SupervisorError::UnknownDomain(domain))?;
        Ok(self.peers_matching(supervised.peers, |_| true))
    }

    fn check_clock(&self, now: Time) -> Result<(), SupervisorError> {
        if now < self.last_now {
            return Err(SupervisorError::TimeWentBackwards {
                last: self.last_now,
                now,
            });
        }
        Ok(())
    }

    fn slot(&self, id: DomainId) -> Option<usize> {
        self.domains.iter().position(|d| d.id == id)
    }

    fn get(&self, id: DomainId) -> Option<&Supervised> {
        self.domains.iter().find(|d| d.id == id)
    }

    fn peers_matching(&self, mask: u16, wanted: impl Fn(&Supervised) -> bool) -> Peers {
        self.domains
            .iter()
            .enumerate()
            .filter(|(slot, d)| mask & slot_bit(*slot) != 0 && wanted(d))
            .map(|(_, d)| d.id)
            .collect()
    }

    fn running_peers(&self, slot: usize) -> Peers {
        let mask = self.domains.get(slot).map_or(0, |d| d.peers);
        self.peers_matching(mask, |d| matches!(d.status, Status::Running { .. }))
    }

    /// Applies `on-crash` to the running domain in `slot`.
    fn on_crash(&mut self, slot: usize, now: Time) -> Option<Action> {
        let domain = self.domains.get_mut(slot)?;
        let id = domain.id;
        let policy = match domain.on_crash {
            OnCrash::Stop => return self.leave_stopped(slot, StopReason::Policy),
            OnCrash::Reboot => {
                self.rebooting = true;
                return Some(Action::RebootSystem { crashed: id });
            }
            OnCrash::Restart(policy) => policy,
        };
        let since = match domain.status {
            Status::Running { since } => since,
            _ => return None,
        };
        if now.saturating_sub(since) >= policy.stable_after {
            domain.consecutive_crashes = 0;
        }
        let restarts = domain.restarts_within(policy.window, now);
        if restarts >= policy.max_restarts {
            let reason = StopReason::RestartBudgetExhausted {
                restarts,
                window: policy.window,
            };
            return self.leave_stopped(slot, reason);
        }
        if domain.generation.checked_add(1).is_none() {
            return self.leave_stopped(slot, StopReason::GenerationsExhausted);
        }
        let delay = policy.delay(domain.consecutive_crashes);
        domain.consecutive_crashes = domain.consecutive_crashes.saturating_add(1);
        domain.remember_restart(now);
        domain.status = Status::RestartPending {
            due: now.saturating_add(delay),
        };
        None
    }

    fn leave_stopped(&mut self, slot: usize, reason: StopReason) -> Option<Action> {
        let domain = self.domains.get_mut(slot)?;
        domain.status = Status::Stopped(reason);
        let id = domain.id;
        Some(Action::LeaveStopped {
            domain: id,
            reason,
            notify_peers: self.running_peers(slot),
        })
    }

    /// Boots the running domain in `slot` again at once, in place (a
    /// reboot it asked for), with the next generation.
    fn reboot_now(&mut self, slot: usize, now: Time) -> Option<Action> {
        let domain = self.domains.get_mut(slot)?;
        let Some(generation) = domain.generation.checked_add(1) else {
            return self.leave_stopped(slot, StopReason::GenerationsExhausted);
        };
        domain.generation = generation;
        domain.status = Status::Running { since: now };
        let id = domain.id;
        Some(Action::ResetInPlace {
            domain: id,
            generation,
            notify_peers: self.running_peers(slot),
        })
    }

    /// Rebuilds, in registration order, every domain whose restart is due.
    fn rebuild_due(&mut self, now: Time, actions: &mut Actions) {
        for slot in 0..self.domains.len() {
            let Some(domain) = self.domains.get_mut(slot) else {
                continue;
            };
            let due = matches!(domain.status, Status::RestartPending { due } if due <= now);
            if !due {
                continue;
            }
            let action = match domain.generation.checked_add(1) {
                Some(generation) => {
                    domain.generation = generation;
                    domain.status = Status::Running { since: now };
                    Some(Action::Rebuild {
                        domain: domain.id,
                        generation,
                        // Peers that are themselves pending or stopped
                        // get fresh links when (if) they are rebuilt.
                        notify_peers: self.running_peers(slot),
                    })
                }
                // The crash already checked for this; kept so a wrap can
                // never happen whatever the path.
                None => self.leave_stopped(slot, StopReason::GenerationsExhausted),
            };
            if let Some(action) = action {
                // One action per domain per event: Actions holds them all.
                let _ = actions.push(action);
            }
        }
    }
}

/// A table slot's bit in a peer set; slots stay below [`MAX_DOMAINS`].
fn slot_bit(slot: usize) -> u16 {
    u32::try_from(slot)
        .ok()
        .and_then(|shift| 1u16.checked_shl(shift))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: DomainId = DomainId(1);
    const B: DomainId = DomainId(2);
    const C: DomainId = DomainId(3);

    fn restart(base: Time, max: Time, stable: Time, restarts: u32, window: Time) -> OnCrash {
        OnCrash::Restart(RestartPolicy {
            base_delay: base,
            max_delay: max,
            stable_after: stable,
            max_restarts: restarts,
            window,
        })
    }

    fn crash(sup: &mut Supervisor, domain: DomainId, now: Time) -> Actions {
        sup.handle(Event::Crashed { domain, now }).unwrap()
    }

    fn tick(sup: &mut Supervisor, now: Time) -> Actions {
        sup.handle(Event::Tick { now }).unwrap()
    }

    fn rebuild(domain: DomainId, generation: Generation, peers: &[DomainId]) -> Action {
        Action::Rebuild {
            domain,
            generation,
            notify_peers: peers.iter().copied().collect(),
        }
    }

    fn reset(domain: DomainId, generation: Generation, peers: &[DomainId]) -> Action {
        Action::ResetInPlace {
            domain,
            generation,
            notify_peers: peers.iter().copied().collect(),
        }
    }

    /// Crashes `domain` and ticks until it is rebuilt; returns the delay.
    fn crash_and_wait(sup: &mut Supervisor, domain: DomainId, now: Time) -> Time {
        let mut actions = crash(sup, domain, now);
        let mut at = now;
        while actions.is_empty() {
            at = sup.next_deadline().expect("a restart is pending");
            actions = tick(sup, at);
        }
        assert!(matches!(actions[0], Action::Rebuild { domain: d, .. } if d == domain));
        at - now
    }

    #[test]
    fn stop_leaves_the_domain_stopped_and_tells_its_peers() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, OnCrash::Stop, 0).unwrap();
        sup.add_domain(B, OnCrash::Stop, 0).unwrap();
        sup.link(A, B).unwrap();
        let actions = crash(&mut sup, A, 5);
        assert_eq!(
            actions.as_slice(),
            &[Action::LeaveStopped {
                domain: A,
                reason: StopReason::Policy,
                notify_peers: [B].into_iter().collect(),
            }]
        );
        assert_eq!(sup.status(A), Some(Status::Stopped(StopReason::Policy)));
        assert_eq!(
            sup.handle(Event::Crashed { domain: A, now: 6 }),
            Err(SupervisorError::NotRunning(A))
        );
        assert!(tick(&mut sup, 1_000).is_empty());
        assert_eq!(sup.generation(A), Some(0));
    }

    #[test]
    fn a_reboot_request_resets_in_place_at_once_whatever_on_crash_says() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, OnCrash::Stop, 0).unwrap();
        sup.add_domain(B, restart(50, 50, 1_000, 1, 1_000), 0)
            .unwrap();
        sup.link(A, B).unwrap();
        let reboot = |sup: &mut Supervisor, domain, now| {
            sup.handle(Event::RebootRequested { domain, now }).unwrap()
        };
        assert_eq!(reboot(&mut sup, A, 5).as_slice(), &[reset(A, 1, &[B])]);
        assert_eq!(sup.status(A), Some(Status::Running { since: 5 }));
        // Not a crash: no back-off, and the budget of one restart is
        // still there for a real crash, which is rebuilt (not reset).
        assert_eq!(reboot(&mut sup, B, 6).as_slice(), &[reset(B, 1, &[A])]);
        assert_eq!(reboot(&mut sup, B, 7).as_slice(), &[reset(B, 2, &[A])]);
        assert!(crash(&mut sup, B, 8).is_empty());
        assert_eq!(tick(&mut sup, 58).as_slice(), &[rebuild(B, 3, &[A])]);
        // A stopped domain cannot ask for anything.
        crash(&mut sup, A, 60);
        assert_eq!(
            sup.handle(Event::RebootRequested { domain: A, now: 61 }),
            Err(SupervisorError::NotRunning(A))
        );
    }

    #[test]
    fn reboot_asks_for_a_system_restart_and_then_ignores_everything() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, OnCrash::Reboot, 0).unwrap();
        sup.add_domain(B, restart(0, 0, 0, 1, 10), 0).unwrap();
        assert_eq!(
            crash(&mut sup, A, 1).as_slice(),
            &[Action::RebootSystem { crashed: A }]
        );
        assert!(crash(&mut sup, B, 2).is_empty());
        assert!(crash(&mut sup, A, 3).is_empty());
        assert!(tick(&mut sup, 100).is_empty());
    }

    #[test]
    fn zero_delay_restart_rebuilds_at_once_with_the_next_generation() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, restart(0, 0, 0, 8, 10), 0).unwrap();
        assert_eq!(crash(&mut sup, A, 3).as_slice(), &[rebuild(A, 1, &[])]);
        assert_eq!(sup.status(A), Some(Status::Running { since: 3 }));
        assert_eq!(crash(&mut sup, A, 4).as_slice(), &[rebuild(A, 2, &[])]);
        assert_eq!(sup.generation(A), Some(2));
    }

    #[test]
    fn restart_waits_for_its_delay() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, restart(100, 1_000, 10_000, 8, 100_000), 0)
            .unwrap();
        assert!(crash(&mut sup, A, 50).is_empty());
        assert_eq!(sup.status(A), Some(Status::RestartPending { due: 150 }));
        assert_eq!(sup.next_deadline(), Some(150));
        assert!(tick(&mut sup, 149).is_empty());
        assert_eq!(tick(&mut sup, 150).as_slice(), &[rebuild(A, 1, &[])]);
        assert_eq!(sup.next_deadline(), None);
        // A late tick still rebuilds, once.
        assert!(crash(&mut sup, A, 200).is_empty());
        assert_eq!(tick(&mut sup, 10_000).as_slice(), &[rebuild(A, 2, &[])]);
        assert!(tick(&mut sup, 10_001).is_empty());
    }

    #[test]
    fn delay_doubles_up_to_the_cap_and_resets_after_a_stable_run() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, restart(10, 80, 1_000, 8, 1), 0).unwrap();
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..6 {
            let delay = crash_and_wait(&mut sup, A, now);
            delays.push(delay);
            now += delay;
        }
        assert_eq!(delays, [10, 20, 40, 80, 80, 80]);
        // Running for `stable_after` earns the base delay back.
        assert_eq!(crash_and_wait(&mut sup, A, now + 1_000), 10);
        let now = now + 1_010;
        assert_eq!(crash_and_wait(&mut sup, A, now + 999), 20);
    }

    #[test]
    fn delay_saturates_instead_of_overflowing() {
        let policy = RestartPolicy {
            base_delay: u64::MAX / 2,
            max_delay: u64::MAX,
            stable_after: 1,
            max_restarts: 1,
            window: 1,
        };
        assert_eq!(policy.delay(0), u64::MAX / 2);
        assert_eq!(policy.delay(2), u64::MAX);
        assert_eq!(policy.delay(200), u64::MAX);
        let mut sup = Supervisor::new();
        sup.add_domain(A, OnCrash::Restart(policy), 0).unwrap();
        assert!(crash(&mut sup, A, u64::MAX - 1).is_empty());
        assert_eq!(
            sup.status(A),
            Some(Status::RestartPending { due: u64::MAX })
        );
    }

    #[test]
    fn crash_loop_exhausts_the_restart_budget() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, restart(0, 0, 1_000, 3, 100), 0).unwrap();
        sup.add_domain(B, OnCrash::Stop, 0).unwrap();
        sup.link(A, B).unwrap();
        for (now, generation) in [(10, 1), (20, 2), (30, 3)] {
            assert_eq!(
                crash(&mut sup, A, now).as_slice(),
                &[rebuild(A, generation, &[B])]
            );
        }
        let stopped = StopReason::RestartBudgetExhausted {
            restarts: 3,
            window: 100,
        };
        assert_eq!(
            crash(&mut sup, A, 40).as_slice(),
            &[Action::LeaveStopped {
                domain: A,
                reason: stopped,
                notify_peers: [B].into_iter().collect(),
            }]
        );
        assert_eq!(sup.status(A), Some(Status::Stopped(stopped)));
        assert_eq!(
            stopped.to_string(),
            "crashed again after 3 restarts within 100 ticks"
        );
    }

    #[test]
    fn restarts_spread_wider_than_the_window_go_on_forever() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, restart(0, 0, 1_000, 2, 100), 0).unwrap();
        for i in 1..=50 {
            // Two restarts 60 apart: never three within any 100.
            let now = i * 60;
            assert_eq!(
                crash(&mut sup, A, now).as_slice(),
                &[rebuild(A, i as u32, &[])]
            );
        }
    }

    #[test]
    fn window_slides() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, restart(0, 0, 1_000, 2, 100), 0).unwrap();
        crash(&mut sup, A, 0);
        crash(&mut sup, A, 90);
        // The restart at 0 has left the window by 100; the one at 90 has not.
        assert_eq!(crash(&mut sup, A, 100).as_slice(), &[rebuild(A, 3, &[])]);
        assert!(matches!(
            crash(&mut sup, A, 150).as_slice(),
            [Action::LeaveStopped { .. }]
        ));
    }

    #[test]
    fn rebuild_tells_only_running_peers() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, restart(10, 10, 1_000, 8, 1_000), 0)
            .unwrap();
        sup.add_domain(B, restart(10, 10, 1_000, 8, 1_000), 0)
            .unwrap();
        sup.add_domain(C, OnCrash::Stop, 0).unwrap();
        sup.link(A, B).unwrap();
        sup.link(A, C).unwrap();
        sup.link(A, B).unwrap();
        assert_eq!(sup.peers_of(A).unwrap().as_slice(), &[B, C]);
        assert_eq!(sup.peers_of(B).unwrap().as_slice(), &[A]);

        crash(&mut sup, C, 1);
        assert!(crash(&mut sup, A, 2).is_empty());
        assert!(crash(&mut sup, B, 5).is_empty());
        // A is due first; B is pending and C stopped, so nobody hears.
        assert_eq!(tick(&mut sup, 12).as_slice(), &[rebuild(A, 1, &[])]);
        // B comes back to a running A, which must learn of it.
        assert_eq!(tick(&mut sup, 15).as_slice(), &[rebuild(B, 1, &[A])]);
    }

    #[test]
    fn simultaneous_restarts_follow_registration_order() {
        let mut sup = Supervisor::new();
        sup.add_domain(C, restart(10, 10, 1_000, 8, 1_000), 0)
            .unwrap();
        sup.add_domain(A, restart(10, 10, 1_000, 8, 1_000), 0)
            .unwrap();
        crash(&mut sup, A, 1);
        crash(&mut sup, C, 5);
        assert_eq!(
            tick(&mut sup, 20).as_slice(),
            &[rebuild(C, 1, &[]), rebuild(A, 1, &[])]
        );
    }

    #[test]
    fn generation_never_wraps() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, restart(0, 0, 0, 8, 10), 0).unwrap();
        sup.domains[0].generation = u32::MAX - 1;
        assert_eq!(
            crash(&mut sup, A, 1).as_slice(),
            &[rebuild(A, u32::MAX, &[])]
        );
        assert!(matches!(
            crash(&mut sup, A, 2).as_slice(),
            [Action::LeaveStopped {
                reason: StopReason::GenerationsExhausted,
                ..
            }]
        ));
    }

    #[test]
    fn bad_registrations_are_refused() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, OnCrash::Stop, 0).unwrap();
        assert_eq!(
            sup.add_domain(A, OnCrash::Stop, 0),
            Err(SupervisorError::AlreadyRegistered(A))
        );
        let cases = [
            (restart(10, 9, 0, 1, 1), PolicyError::MaxDelayBelowBase),
            (restart(0, 0, 0, 0, 1), PolicyError::NoRestarts),
            (restart(0, 0, 0, 9, 1), PolicyError::RestartBudgetTooLarge),
            (restart(0, 0, 0, 1, 0), PolicyError::EmptyWindow),
        ];
        for (policy, error) in cases {
            assert_eq!(
                sup.add_domain(B, policy, 0),
                Err(SupervisorError::BadPolicy { domain: B, error })
            );
        }
        assert_eq!(sup.link(A, A), Err(SupervisorError::SelfLink(A)));
        assert_eq!(sup.link(A, B), Err(SupervisorError::UnknownDomain(B)));
        assert_eq!(sup.link(B, A), Err(SupervisorError::UnknownDomain(B)));
        assert_eq!(sup.peers_of(B), Err(SupervisorError::UnknownDomain(B)));
        for id in 2..=MAX_DOMAINS as u16 {
            sup.add_domain(DomainId(id), OnCrash::Stop, 0).unwrap();
        }
        assert_eq!(
            sup.add_domain(DomainId(99), OnCrash::Stop, 0),
            Err(SupervisorError::TableFull)
        );
    }

    #[test]
    fn refused_events_change_nothing() {
        let mut sup = Supervisor::new();
        sup.add_domain(A, restart(10, 10, 0, 8, 100), 100).unwrap();
        assert_eq!(
            sup.handle(Event::Tick { now: 99 }),
            Err(SupervisorError::TimeWentBackwards { last: 100, now: 99 })
        );
        assert_eq!(
            sup.handle(Event::Crashed { domain: A, now: 50 }),
            Err(SupervisorError::TimeWentBackwards { last: 100, now: 50 })
        );
        assert_eq!(sup.status(A), Some(Status::Running { since: 100 }));
        assert_eq!(
            sup.handle(Event::Crashed {
                domain: B,
                now: 200
            }),
            Err(SupervisorError::UnknownDomain(B))
        );
        assert!(crash(&mut sup, A, 200).is_empty());
        // A second report of the same crash is stale.
        assert_eq!(
            sup.handle(Event::Crashed {
                domain: A,
                now: 201
            }),
            Err(SupervisorError::NotRunning(A))
        );
        assert_eq!(sup.status(A), Some(Status::RestartPending { due: 210 }));
        assert_eq!(
            sup.add_domain(C, OnCrash::Stop, 5),
            Err(SupervisorError::TimeWentBackwards { last: 200, now: 5 })
        );
    }

    #[test]
    fn errors_render() {
        assert_eq!(
            SupervisorError::BadPolicy {
                domain: A,
                error: PolicyError::EmptyWindow
            }
            .to_string(),
            "d1: restart window is empty"
        );
        assert_eq!(
            SupervisorError::NotRunning(B).to_string(),
            "crash reported for d2, which is not running"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Step {
            Crash(usize, Time),
            Tick(Time),
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                (0usize..4, 0u64..50).prop_map(|(d, dt)| Step::Crash(d, dt)),
                (0u64..200).prop_map(Step::Tick),
            ]
        }

        proptest! {
            #[test]
            fn restart_rules_hold_for_any_history(
                base in 0u64..20,
                extra in 0u64..100,
                stable in 0u64..300,
                max_restarts in 1u32..=8,
                window in 1u64..500,
                steps in proptest::collection::vec(step(), 0..200),
            ) {
                let policy = RestartPolicy {
                    base_delay: base,
                    max_delay: base + extra,
                    stable_after: stable,
                    max_restarts,
                    window,
                };
                let ids = [A, B, C, DomainId(4)];
                let mut sup = Supervisor::new();
                for id in ids {
                    sup.add_domain(id, OnCrash::Restart(policy), 0).unwrap();
                }
                sup.link(A, B).unwrap();
                sup.link(B, C).unwrap();
                let mut now = 0;
                let mut crashed_at = [None; 4];
                let mut restarts: [Vec<Time>; 4] = Default::default();
                for step in steps {
                    let result = match step {
                        Step::Crash(d, dt) => {
                            now += dt;
                            let result = sup.handle(Event::Crashed { domain: ids[d], now });
                            if result.is_ok() {
                                crashed_at[d] = Some(now);
                            }
                            result
                        }
                        Step::Tick(dt) => {
                            now += dt;
                            sup.handle(Event::Tick { now })
                        }
                    };
                    let Ok(actions) = result else { continue };
                    for action in actions {
                        match action {
                            Action::Rebuild { domain, generation, notify_peers } => {
                                let d = ids.iter().position(|id| *id == domain).unwrap();
                                let crash = crashed_at[d].take().unwrap();
                                prop_assert!(now >= crash + base, "never before the base delay");
                                restarts[d].push(crash);
                                prop_assert_eq!(generation as usize, restarts[d].len());
                                let in_window = restarts[d].iter().filter(|&&t| crash - t < window).count();
                                prop_assert!(in_window <= max_restarts as usize);
                                for peer in notify_peers {
                                    prop_assert!(sup.peers_of(domain).unwrap().contains(&peer));
                                    let running = matches!(sup.status(peer), Some(Status::Running { .. }));
                                    prop_assert!(running, "only running peers are told");
                                }
                            }
                            Action::LeaveStopped { domain, reason, .. } => {
                                let d = ids.iter().position(|id| *id == domain).unwrap();
                                let budget = matches!(reason, StopReason::RestartBudgetExhausted { .. });
                                prop_assert!(budget, "only the budget stops a restart domain");
                                let crash = crashed_at[d].take().unwrap();
                                let in_window = restarts[d].iter().filter(|&&t| crash - t < window).count();
                                prop_assert_eq!(in_window, max_restarts as usize);
                            }
                            Action::RebootSystem { .. } | Action::ResetInPlace { .. } => {
                                prop_assert!(false, "no domain reboots")
                            }
                        }
                    }
                    if let Some(deadline) = sup.next_deadline() {
                        prop_assert!(deadline > now, "everything due was rebuilt");
                    }
                }
            }
        }
    }
}
