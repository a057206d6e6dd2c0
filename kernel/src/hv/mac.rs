//! Mandatory access control: the policy module from the image, one access
//! vector cache per pCPU, and the audit line.
//!
//! Every path that creates, binds, maps, sends or controls calls [`check`]
//! before it acts. A pCPU's cache is touched only by that pCPU, so a hit is
//! a plain table probe with no lock and no atomic (policy/src/avc.rs). The
//! policy is read-only after boot, so the caches never need a shootdown.

use super::boot;
use super::console::log;
use core::cell::UnsafeCell;
use tessera_policy::{Avc, Decision, Mode, Perm, Policy, Sid};

/// Why the policy could not be installed.
#[derive(Debug)]
pub enum MacError {
    /// The binary did not validate.
    Load(tessera_policy::LoadError),
    /// A context the kernel itself needs is not in the policy.
    MissingContext(&'static str),
}

impl core::fmt::Display for MacError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MacError::Load(e) => write!(f, "{e}"),
            MacError::MissingContext(c) => write!(f, "the policy has no context {c}"),
        }
    }
}

/// The hypervisor console as an object of `console` checks.
const CONSOLE_CONTEXT: &str = "system_u:system_r:console_t";

struct PerPcpu(UnsafeCell<Option<Avc<'static>>>);
// SAFETY: slot `p` is only touched by pCPU `p` (see `avc_of`), and all slots
// are written once on the boot pCPU before any other pCPU starts.
unsafe impl Sync for PerPcpu {}

static AVCS: [PerPcpu; boot::MAX_PCPUS] =
    [const { PerPcpu(UnsafeCell::new(None)) }; boot::MAX_PCPUS];
static POLICY: spin::Once<(Policy<'static>, Sid)> = spin::Once::new();

/// Load `binary` and give every pCPU a cache over it. Boot pCPU only,
/// before secondaries start.
pub fn install(binary: &'static [u8], enforcing: bool) -> Result<(), MacError> {
    let policy = Policy::load(binary).map_err(MacError::Load)?;
    let console = policy
        .sid_of(CONSOLE_CONTEXT)
        .ok_or(MacError::MissingContext(CONSOLE_CONTEXT))?;
    let mode = if enforcing {
        Mode::Enforcing
    } else {
        Mode::Permissive
    };
    for slot in &AVCS {
        // SAFETY: boot pCPU, before any other pCPU runs (contract above).
        unsafe { *slot.0.get() = Some(Avc::new(policy, mode)) };
    }
    POLICY.call_once(|| (policy, console));
    Ok(())
}

/// The SID of a domain's label, if the policy knows it.
pub fn sid_of(label: &str) -> Option<Sid> {
    POLICY.get().and_then(|(p, _)| p.sid_of(label))
}

/// The label of a domain's objects of `class` that concern only itself (its
/// own grant table, its IPIs): `type_transition T self:<class>` if the
/// policy has one, else the domain's label. Checking own-object operations
/// against this label, and operations on *another* domain against that
/// domain, means a rule on a type shared by several domains never lets them
/// reach each other.
pub fn own_label(sid: Sid, class: tessera_policy::Class) -> Sid {
    transition(sid, sid, class).unwrap_or(sid)
}

fn transition(source: Sid, target: Sid, class: tessera_policy::Class) -> Option<Sid> {
    POLICY
        .get()
        .and_then(|(p, _)| p.transition(source, target, class))
}

/// The label of a new event channel that `source` opens towards `target`:
/// the `type_transition source target:event` type if the policy has one,
/// else the target's own label. Sends are checked against it.
pub fn channel_label(source: Sid, target: Sid) -> Sid {
    transition(source, target, tessera_policy::Class::Event).unwrap_or(target)
}

/// The hypervisor console's SID.
pub fn console_sid() -> Option<Sid> {
    POLICY.get().map(|(_, c)| *c)
}

/// May `source` do `perm` to `target`? `Ok` to proceed; a denial is logged
/// here (also in permissive mode) and, when enforcing, is `Err(EACCES)`.
///
/// The common case, a cached vector that allows, is inline; everything
/// else (a miss, a denial, the audit line) is out of line in `check_rest`.
#[inline]
pub fn check(
    p: usize,
    source: Sid,
    target: Sid,
    perm: impl Into<Perm>,
) -> Result<(), tessera_ipc::errno::Errno> {
    let perm = perm.into();
    if let Some(slot) = AVCS.get(p) {
        // SAFETY: only pCPU `p` uses slot `p`; the shared reference ends
        // with this statement, before `check_rest` takes a unique one.
        let hit = unsafe { &*slot.0.get() }
            .as_ref()
            .is_some_and(|avc| avc.cached_allow(source, target, perm));
        if hit {
            return Ok(());
        }
    }
    check_rest(p, source, target, perm)
}

/// [`check`] past a cached allow: fill the cache, decide, audit.
#[cold]
#[inline(never)]
fn check_rest(
    p: usize,
    source: Sid,
    target: Sid,
    perm: Perm,
) -> Result<(), tessera_ipc::errno::Errno> {
    let Some(slot) = AVCS.get(p) else {
        return Err(tessera_ipc::errno::Errno::Eacces);
    };
    // SAFETY: only pCPU `p` uses slot `p`; no reference to it outlives this call.
    let Some(avc) = (unsafe { &mut *slot.0.get() }).as_mut() else {
        // No policy installed: nothing is allowed.
        return Err(tessera_ipc::errno::Errno::Eacces);
    };
    match avc.check(source, target, perm) {
        Decision::Allow => Ok(()),
        Decision::AllowPermissive(d) => {
            log!("{}", avc.audit(d));
            Ok(())
        }
        Decision::Deny(d) => {
            log!("{}", avc.audit(d));
            Err(tessera_ipc::errno::Errno::Eacces)
        }
    }
}

/// [`check`] from the boot pCPU, before secondaries run (static links).
pub fn check_at_boot(source: Sid, target: Sid, perm: impl Into<Perm>) -> bool {
    check(0, source, target, perm).is_ok()
}
