//! FLASK-style mandatory access control for Tessera.
//!
//! Three parts, one idea: the policy is decided on the host and only looked
//! up at run time.
//! - [`compile`] (host, feature `std`) turns TE source into a binary;
//! - [`Policy::load`] (no_std, no allocation) validates that binary in place;
//! - [`Avc`] answers "may this SID do this to that SID?" from a small cache in
//!   front of a binary search of the policy's rule table.
//!
//! The language is specified in `docs/04-policy.md`, the binary in
//! [`binary`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

#[cfg(feature = "std")]
extern crate alloc;

mod avc;
pub mod binary;
mod class;
#[cfg(feature = "std")]
pub mod compile;
mod load;

pub use avc::{AuditLine, Avc, Decision, Denial, Mode, AVC_SLOTS};
pub use class::{
    Class, ConsolePerm, DomainPerm, EventPerm, GrantPerm, IoreqPerm, MmuPerm, Perm, ResourcePerm,
    StorePerm, UnknownClass, UnknownPerm, VtpmPerm,
};
pub use load::{Context, LoadError, Policy, Sid};

impl core::error::Error for LoadError {}

/// The label every domain gets when its device-tree node names none.
pub const DEFAULT_DOMAIN_LABEL: &str = "system_u:system_r:domU_t";

/// Split a `user:role:type` security context into its three parts.
pub fn split_context(ctx: &str) -> Option<(&str, &str, &str)> {
    let mut parts = ctx.split(':');
    let (user, role, ty) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [user, role, ty].iter().any(|p| p.is_empty()) {
        return None;
    }
    Some((user, role, ty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_split_into_three_non_empty_parts() {
        assert_eq!(
            split_context(DEFAULT_DOMAIN_LABEL),
            Some(("system_u", "system_r", "domU_t"))
        );
        assert_eq!(split_context("a:b"), None);
        assert_eq!(split_context("a::c"), None);
        assert_eq!(split_context("a:b:c:d"), None);
    }
}
