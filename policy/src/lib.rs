//! FLASK-style mandatory access control for Tessera.
//!
//! This crate is a placeholder in the foundation: it fixes the crate's place
//! in the workspace and the shape of a security context. The engine, the TE
//! language compiler and the access vector cache arrive with issue #3.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

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
