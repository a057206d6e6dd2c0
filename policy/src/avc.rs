//! The access vector cache: the one call every privileged path makes before
//! it acts.
//!
//! A check is a direct-mapped cache probe keyed on (source type, target type,
//! class). A slot holds the whole access vector for that triple, so one miss
//! serves every permission of the class afterwards. The miss and denial paths
//! are out of line so the hit path stays a handful of instructions.

use core::fmt;

use crate::binary::rule_key;
use crate::{Class, Perm, Policy, Sid};

/// Number of cache slots: a power of two so the slot is a shift of the hash.
/// 128 covers every (source, target, class) a small static system touches.
pub const AVC_SLOTS: usize = 128;

/// Set in every filled slot's key so that an empty slot (key 0) never
/// matches; rule keys use only the low 48 bits.
const VALID: u64 = 1 << 63;

/// Whether denials are enforced or only logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A denial refuses the access.
    Enforcing,
    /// A denial is logged and the access proceeds: for writing a policy.
    Permissive,
}

/// What the policy says about one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Decision {
    /// The policy allows it.
    Allow,
    /// The policy denies it and the AVC is enforcing: refuse with -EACCES
    /// and log the denial.
    Deny(Denial),
    /// The policy denies it but the AVC is permissive: log the denial and
    /// proceed.
    AllowPermissive(Denial),
}

impl Decision {
    /// Whether the caller may proceed.
    #[inline(always)]
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Decision::Deny(_))
    }

    /// The denial to log, if the policy denied the access.
    pub fn denial(&self) -> Option<Denial> {
        match self {
            Decision::Allow => None,
            Decision::Deny(d) | Decision::AllowPermissive(d) => Some(*d),
        }
    }
}

/// A denied access: enough to print the audit line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denial {
    /// Who asked.
    pub source: Sid,
    /// What it asked about.
    pub target: Sid,
    /// What it asked for (the class comes with it).
    pub perm: Perm,
    /// True if the AVC let the access through anyway.
    pub permissive: bool,
}

/// A denial's audit line, with the names looked up in the policy:
/// `avc: denied { send } for source=system_u:system_r:domU_t
/// target=system_u:system_r:xenstore_t class=event`, followed by
/// ` permissive=1` when it was not enforced.
pub struct AuditLine<'p, 'a> {
    policy: &'p Policy<'a>,
    denial: Denial,
}

impl fmt::Display for AuditLine<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.denial;
        write!(f, "avc: denied {{ {} }} for source=", d.perm)?;
        write_context(f, self.policy, d.source)?;
        f.write_str(" target=")?;
        write_context(f, self.policy, d.target)?;
        write!(f, " class={}", d.perm.class())?;
        if d.permissive {
            f.write_str(" permissive=1")?;
        }
        Ok(())
    }
}

fn write_context(f: &mut fmt::Formatter<'_>, policy: &Policy<'_>, sid: Sid) -> fmt::Result {
    match policy.context(sid) {
        Some(ctx) => write!(f, "{ctx}"),
        // A SID from another policy: print what is known rather than fail.
        None => write!(f, "?:?:#{}", sid.type_index()),
    }
}

#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    allowed: u32,
}

const EMPTY: Slot = Slot { key: 0, allowed: 0 };

/// The access vector cache over one loaded policy. Not shared: the kernel
/// keeps one per physical CPU (or behind its lock), so a check needs no
/// atomics.
pub struct Avc<'a> {
    policy: Policy<'a>,
    mode: Mode,
    slots: [Slot; AVC_SLOTS],
    misses: u64,
}

/// The cache key of a check: the rule it needs, marked valid.
#[inline(always)]
fn cache_key(source: Sid, target: Sid, perm: Perm) -> u64 {
    VALID
        | rule_key(
            source.type_index(),
            target.type_index(),
            perm.class() as u16,
        )
}

#[inline(always)]
fn slot_of(key: u64) -> usize {
    // Fibonacci hashing: the top bits of the product mix all key bits.
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - AVC_SLOTS.trailing_zeros())) as usize
}

impl<'a> Avc<'a> {
    /// An empty cache over `policy`.
    pub const fn new(policy: Policy<'a>, mode: Mode) -> Avc<'a> {
        Avc {
            policy,
            mode,
            slots: [EMPTY; AVC_SLOTS],
            misses: 0,
        }
    }

    /// The policy decisions come from.
    pub fn policy(&self) -> &Policy<'a> {
        &self.policy
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Switches between enforcing and permissive. Cached vectors stay valid:
    /// the mode is applied after the lookup.
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Empties the cache.
    pub fn flush(&mut self) {
        self.slots = [EMPTY; AVC_SLOTS];
    }

    /// How many checks missed the cache and searched the policy.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// The SID of a context in this AVC's policy.
    pub fn sid_of(&self, context: &str) -> Option<Sid> {
        self.policy.sid_of(context)
    }

    /// Whether the cache already holds a vector that allows `source` to do
    /// `perm` to `target`. That is the whole of a check that hits and
    /// allows, with nothing to record, so a caller can keep it inline and
    /// send every other case (a miss, a denial) to [`Avc::check`]: false
    /// means only "ask `check`", never "denied".
    #[inline(always)]
    pub fn cached_allow(&self, source: Sid, target: Sid, perm: Perm) -> bool {
        let key = cache_key(source, target, perm);
        self.slots
            .get(slot_of(key))
            .is_some_and(|s| s.key == key && s.allowed & perm.mask() != 0)
    }

    /// May `source` do `perm` to `target`?
    #[inline]
    pub fn check(&mut self, source: Sid, target: Sid, perm: Perm) -> Decision {
        let class = perm.class();
        let key = cache_key(source, target, perm);
        let slot = slot_of(key);
        let allowed = match self.slots.get(slot) {
            Some(s) if s.key == key => s.allowed,
            _ => self.fill(slot, key, source, target, class),
        };
        if allowed & perm.mask() != 0 {
            Decision::Allow
        } else {
            self.deny(source, target, perm)
        }
    }

    #[cold]
    #[inline(never)]
    fn fill(&mut self, slot: usize, key: u64, source: Sid, target: Sid, class: Class) -> u32 {
        self.misses += 1;
        let allowed = self
            .policy
            .allowed(source.type_index(), target.type_index(), class);
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Slot { key, allowed };
        }
        allowed
    }

    #[cold]
    #[inline(never)]
    fn deny(&self, source: Sid, target: Sid, perm: Perm) -> Decision {
        let permissive = self.mode == Mode::Permissive;
        let denial = Denial {
            source,
            target,
            perm,
            permissive,
        };
        if permissive {
            Decision::AllowPermissive(denial)
        } else {
            Decision::Deny(denial)
        }
    }

    /// The audit line for `denial`, names resolved in this AVC's policy.
    pub fn audit(&self, denial: Denial) -> AuditLine<'_, 'a> {
        self.policy.audit(denial)
    }
}

impl<'a> Policy<'a> {
    /// The audit line for `denial`, names resolved in this policy.
    pub fn audit(&self, denial: Denial) -> AuditLine<'_, 'a> {
        AuditLine {
            policy: self,
            denial,
        }
    }
}
