//! The no_std loader: validates a policy binary in place and answers lookups
//! from it without copying or allocating.
//!
//! Validation is total and up front (seL4's decode-then-invoke): once
//! [`Policy::load`] returns `Ok`, every index in every table is in range and
//! the tables are sorted, so lookups are plain binary searches that cannot
//! fail halfway.

use core::cmp::Ordering;
use core::fmt;

use zerocopy::FromBytes;

use crate::binary::{
    checksum, is_identifier, rule_key, Header, NameEntry, RuleRecord, TransitionRecord, MAGIC,
    VERSION,
};
use crate::{split_context, Class};

/// Why a policy binary was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// Shorter than the header.
    TooShort {
        /// The binary's length.
        len: usize,
    },
    /// The magic is not `TPOL`.
    BadMagic,
    /// A format version this loader does not read.
    UnsupportedVersion(u16),
    /// A reserved or padding field is not zero.
    ReservedNotZero,
    /// Shorter than its header says: cut off.
    Truncated {
        /// The length the header implies.
        expected: usize,
        /// The binary's length.
        actual: usize,
    },
    /// Longer than its header says: garbage after the last section.
    TrailingBytes {
        /// The length the header implies.
        expected: usize,
        /// The binary's length.
        actual: usize,
    },
    /// The body does not match the header's checksum.
    ChecksumMismatch,
    /// Name `index` (users, roles and types counted together) lies outside
    /// the name bytes or is not an identifier.
    BadName {
        /// Position in the name table.
        index: usize,
    },
    /// Name `index` is not strictly after the previous name of its kind.
    NamesNotSorted {
        /// Position in the name table.
        index: usize,
    },
    /// Rule `index` names a type that does not exist.
    RuleTypeOutOfRange {
        /// Position in the rule table.
        index: usize,
    },
    /// Rule `index` names an undefined class.
    RuleUnknownClass {
        /// Position in the rule table.
        index: usize,
    },
    /// Rule `index` grants nothing, or a bit its class does not define.
    RuleBadPermissions {
        /// Position in the rule table.
        index: usize,
    },
    /// Rule `index` is not strictly after the previous rule.
    RulesNotSorted {
        /// Position in the rule table.
        index: usize,
    },
    /// Transition `index` names a type that does not exist.
    TransitionTypeOutOfRange {
        /// Position in the transition table.
        index: usize,
    },
    /// Transition `index` names an undefined class.
    TransitionUnknownClass {
        /// Position in the transition table.
        index: usize,
    },
    /// Transition `index` is not strictly after the previous transition.
    TransitionsNotSorted {
        /// Position in the transition table.
        index: usize,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::TooShort { len } => write!(f, "policy binary too short ({len} bytes)"),
            LoadError::BadMagic => f.write_str("not a policy binary (bad magic)"),
            LoadError::UnsupportedVersion(v) => write!(f, "unsupported policy version {v}"),
            LoadError::ReservedNotZero => f.write_str("reserved field not zero"),
            LoadError::Truncated { expected, actual } => {
                write!(f, "policy binary truncated: {actual} of {expected} bytes")
            }
            LoadError::TrailingBytes { expected, actual } => {
                write!(f, "policy binary has {} trailing bytes", actual - expected)
            }
            LoadError::ChecksumMismatch => f.write_str("policy binary checksum mismatch"),
            LoadError::BadName { index } => write!(f, "name {index} is malformed"),
            LoadError::NamesNotSorted { index } => write!(f, "name {index} out of order"),
            LoadError::RuleTypeOutOfRange { index } => write!(f, "rule {index}: type out of range"),
            LoadError::RuleUnknownClass { index } => write!(f, "rule {index}: unknown class"),
            LoadError::RuleBadPermissions { index } => {
                write!(f, "rule {index}: undefined or empty permissions")
            }
            LoadError::RulesNotSorted { index } => write!(f, "rule {index} out of order"),
            LoadError::TransitionTypeOutOfRange { index } => {
                write!(f, "transition {index}: type out of range")
            }
            LoadError::TransitionUnknownClass { index } => {
                write!(f, "transition {index}: unknown class")
            }
            LoadError::TransitionsNotSorted { index } => {
                write!(f, "transition {index} out of order")
            }
        }
    }
}

/// A security identifier: a context (`user:role:type`) resolved to numbers
/// in one loaded policy. Cheap to copy and compare; only the type takes part
/// in access decisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sid {
    user: u16,
    role: u16,
    ty: u16,
}

impl Sid {
    /// The type number, the part access decisions are made on.
    #[inline(always)]
    pub const fn type_index(self) -> u16 {
        self.ty
    }
}

/// A context's three names, borrowed from the policy; displays as
/// `user:role:type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context<'a> {
    /// The user name.
    pub user: &'a str,
    /// The role name.
    pub role: &'a str,
    /// The type name.
    pub ty: &'a str,
}

impl fmt::Display for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.user, self.role, self.ty)
    }
}

/// A validated policy, borrowing the binary it was loaded from.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    users: &'a [NameEntry],
    roles: &'a [NameEntry],
    types: &'a [NameEntry],
    rules: &'a [RuleRecord],
    transitions: &'a [TransitionRecord],
    strings: &'a [u8],
}

/// Splits `n` records of `T` off the front of `bytes`. Lengths were checked
/// against the header before this is called, so failure means a logic error;
/// it is still reported as truncation rather than a panic.
fn take<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable + Sized>(
    bytes: &[u8],
    n: usize,
    expected: usize,
) -> Result<(&[T], &[u8]), LoadError> {
    <[T]>::ref_from_prefix_with_elems(bytes, n).map_err(|_| LoadError::Truncated {
        expected,
        actual: bytes.len(),
    })
}

impl<'a> Policy<'a> {
    /// Validates `bytes` completely and returns a view of it.
    pub fn load(bytes: &'a [u8]) -> Result<Policy<'a>, LoadError> {
        let (header, body) =
            Header::ref_from_prefix(bytes).map_err(|_| LoadError::TooShort { len: bytes.len() })?;
        if header.magic != MAGIC {
            return Err(LoadError::BadMagic);
        }
        if header.version.get() != VERSION {
            return Err(LoadError::UnsupportedVersion(header.version.get()));
        }
        if header._reserved.get() != 0 || header._pad.get() != 0 {
            return Err(LoadError::ReservedNotZero);
        }

        let (users, roles, types) = (
            header.user_count.get() as usize,
            header.role_count.get() as usize,
            header.type_count.get() as usize,
        );
        let names = users + roles + types;
        let rules = header.rule_count.get() as usize;
        let transitions = header.transition_count.get() as usize;
        let strings_len = header.strings_len.get() as usize;
        // Checked arithmetic: on a 32-bit host a hostile header could
        // overflow the sum and make a short binary look long enough.
        let expected = [
            names.checked_mul(size_of::<NameEntry>()),
            rules.checked_mul(size_of::<RuleRecord>()),
            transitions.checked_mul(size_of::<TransitionRecord>()),
            Some(strings_len),
        ]
        .iter()
        .try_fold(size_of::<Header>(), |acc, part| acc.checked_add((*part)?))
        .unwrap_or(usize::MAX);
        match bytes.len().cmp(&expected) {
            Ordering::Less => {
                return Err(LoadError::Truncated {
                    expected,
                    actual: bytes.len(),
                });
            }
            Ordering::Greater => {
                return Err(LoadError::TrailingBytes {
                    expected,
                    actual: bytes.len(),
                });
            }
            Ordering::Equal => {}
        }
        if checksum(body) != header.checksum.get() {
            return Err(LoadError::ChecksumMismatch);
        }

        let (name_table, rest) = take::<NameEntry>(body, names, expected)?;
        let (rule_table, rest) = take::<RuleRecord>(rest, rules, expected)?;
        let (transition_table, strings) = take::<TransitionRecord>(rest, transitions, expected)?;
        let (user_names, rest) = name_table
            .split_at_checked(users)
            .ok_or(LoadError::BadName { index: 0 })?;
        let (role_names, type_names) = rest
            .split_at_checked(roles)
            .ok_or(LoadError::BadName { index: users })?;

        let policy = Policy {
            users: user_names,
            roles: role_names,
            types: type_names,
            rules: rule_table,
            transitions: transition_table,
            strings,
        };
        policy.validate_names()?;
        policy.validate_rules()?;
        policy.validate_transitions()?;
        Ok(policy)
    }

    fn validate_names(&self) -> Result<(), LoadError> {
        let mut index = 0;
        for group in [self.users, self.roles, self.types] {
            let mut previous: Option<&[u8]> = None;
            for entry in group {
                let name = self.name_bytes(entry).ok_or(LoadError::BadName { index })?;
                if entry._pad.get() != 0 || !is_identifier(name) {
                    return Err(LoadError::BadName { index });
                }
                if previous.is_some_and(|p| p >= name) {
                    return Err(LoadError::NamesNotSorted { index });
                }
                previous = Some(name);
                index += 1;
            }
        }
        Ok(())
    }

    fn validate_rules(&self) -> Result<(), LoadError> {
        let mut previous = None;
        for (index, rule) in self.rules.iter().enumerate() {
            if !self.is_type(rule.source.get()) || !self.is_type(rule.target.get()) {
                return Err(LoadError::RuleTypeOutOfRange { index });
            }
            let class = Class::try_from(rule.class.get())
                .map_err(|_| LoadError::RuleUnknownClass { index })?;
            let allowed = rule.allowed.get();
            if rule._pad.get() != 0 || allowed == 0 || allowed & !class.defined_bits() != 0 {
                return Err(LoadError::RuleBadPermissions { index });
            }
            if previous.is_some_and(|p| p >= rule.key()) {
                return Err(LoadError::RulesNotSorted { index });
            }
            previous = Some(rule.key());
        }
        Ok(())
    }

    fn validate_transitions(&self) -> Result<(), LoadError> {
        let mut previous = None;
        for (index, t) in self.transitions.iter().enumerate() {
            if ![t.source, t.target, t.new_type]
                .iter()
                .all(|ty| self.is_type(ty.get()))
            {
                return Err(LoadError::TransitionTypeOutOfRange { index });
            }
            Class::try_from(t.class.get())
                .map_err(|_| LoadError::TransitionUnknownClass { index })?;
            if previous.is_some_and(|p| p >= t.key()) {
                return Err(LoadError::TransitionsNotSorted { index });
            }
            previous = Some(t.key());
        }
        Ok(())
    }

    fn is_type(&self, ty: u16) -> bool {
        (ty as usize) < self.types.len()
    }

    fn name_bytes(&self, entry: &NameEntry) -> Option<&'a [u8]> {
        let start = entry.offset.get() as usize;
        self.strings
            .get(start..start.checked_add(entry.len.get() as usize)?)
    }

    fn name(&self, entry: &NameEntry) -> &'a str {
        // Validated ASCII at load, so this never falls back.
        self.name_bytes(entry)
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("?")
    }

    fn find(&self, group: &[NameEntry], name: &str) -> Option<u16> {
        let index = group.binary_search_by(|e| self.name(e).cmp(name)).ok()?;
        u16::try_from(index).ok()
    }

    /// The SID of context `user:role:type`, if all three names are in the
    /// policy.
    pub fn sid_of(&self, context: &str) -> Option<Sid> {
        let (user, role, ty) = split_context(context)?;
        Some(Sid {
            user: self.find(self.users, user)?,
            role: self.find(self.roles, role)?,
            ty: self.find(self.types, ty)?,
        })
    }

    /// The names behind `sid`, or `None` for a SID from another policy.
    pub fn context(&self, sid: Sid) -> Option<Context<'a>> {
        Some(Context {
            user: self.name(self.users.get(sid.user as usize)?),
            role: self.name(self.roles.get(sid.role as usize)?),
            ty: self.name(self.types.get(sid.ty as usize)?),
        })
    }

    /// The number of type `name`.
    pub fn type_index(&self, name: &str) -> Option<u16> {
        self.find(self.types, name)
    }

    /// The number of user `name`.
    pub fn user_index(&self, name: &str) -> Option<u16> {
        self.find(self.users, name)
    }

    /// The number of role `name`.
    pub fn role_index(&self, name: &str) -> Option<u16> {
        self.find(self.roles, name)
    }

    /// The name of type number `index`.
    pub fn type_name(&self, index: u16) -> Option<&'a str> {
        self.types.get(index as usize).map(|e| self.name(e))
    }

    /// Number of types.
    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    /// Number of (source, target, class) rules after attribute expansion.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The access vector `source` has on `target` in `class`: the permission
    /// bits allowed, zero if no rule applies. This is the AVC's slow path.
    pub fn allowed(&self, source: u16, target: u16, class: Class) -> u32 {
        let key = rule_key(source, target, class as u16);
        match self.rules.binary_search_by_key(&key, RuleRecord::key) {
            Ok(i) => self.rules.get(i).map_or(0, |r| r.allowed.get()),
            Err(_) => 0,
        }
    }

    /// The SID a new `class` object created by `source` toward `target`
    /// gets, per `type_transition`: the source's user and role with the new
    /// type. `None` if no transition applies (callers then use their default
    /// labelling, usually the creator's SID).
    pub fn transition(&self, source: Sid, target: Sid, class: Class) -> Option<Sid> {
        let key = rule_key(source.ty, target.ty, class as u16);
        let i = self
            .transitions
            .binary_search_by_key(&key, TransitionRecord::key)
            .ok()?;
        let new_type = self.transitions.get(i)?.new_type.get();
        Some(Sid {
            ty: new_type,
            ..source
        })
    }
}
