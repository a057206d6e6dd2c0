//! The loader: a valid binary loads; every truncation, every trailing byte,
//! every damaged field and every structural lie is refused with its own
//! error; random damage never panics. Inputs are built by the compiler and
//! then edited through the layout types, not written as byte soup.

use proptest::prelude::*;
use tessera_policy::binary::{seal, Header, NameEntry, RuleRecord, TransitionRecord};
use tessera_policy::compile::compile;
use tessera_policy::{Avc, EventPerm, LoadError, Mode, Policy};
use zerocopy::little_endian::{U16, U32};
use zerocopy::FromBytes;

const SRC: &str = "user system_u; role system_r;
    attribute svc;
    type a_t; type b_t, svc; type c_t, svc;
    allow a_t svc:event { bind send };
    allow a_t self:grant setup;
    allow b_t a_t:console write;
    type_transition a_t b_t:event c_t;
    type_transition a_t c_t:event b_t;";

fn valid() -> Vec<u8> {
    compile(SRC).unwrap()
}

const HEADER: usize = size_of::<Header>();
const NAMES: usize = 2 + 3; // users + roles + types

fn rules_at() -> usize {
    HEADER + NAMES * size_of::<NameEntry>()
}

fn transitions_at(bin: &[u8]) -> usize {
    let h = Header::read_from_prefix(bin).unwrap().0;
    rules_at() + h.rule_count.get() as usize * size_of::<RuleRecord>()
}

fn header(bin: &mut [u8]) -> &mut Header {
    Header::mut_from_prefix(bin).unwrap().0
}

fn rule(bin: &mut [u8], i: usize) -> &mut RuleRecord {
    let at = rules_at() + i * size_of::<RuleRecord>();
    RuleRecord::mut_from_prefix(&mut bin[at..]).unwrap().0
}

fn transition(bin: &mut [u8], i: usize) -> &mut TransitionRecord {
    let at = transitions_at(bin) + i * size_of::<TransitionRecord>();
    TransitionRecord::mut_from_prefix(&mut bin[at..]).unwrap().0
}

fn name(bin: &mut [u8], i: usize) -> &mut NameEntry {
    NameEntry::mut_from_prefix(&mut bin[HEADER + i * size_of::<NameEntry>()..])
        .unwrap()
        .0
}

/// Applies `edit` to a valid binary, reseals it so the structural check
/// (not the checksum) is what must catch the edit, and loads it.
fn load_edited(edit: impl FnOnce(&mut Vec<u8>)) -> Result<(), LoadError> {
    let mut bin = valid();
    edit(&mut bin);
    seal(&mut bin);
    Policy::load(&bin).map(|_| ())
}

#[test]
fn a_valid_binary_loads() {
    let bin = valid();
    let p = Policy::load(&bin).unwrap();
    assert_eq!(p.type_count(), 3);
    assert_eq!(p.rule_count(), 4);
    assert_eq!(p.type_name(0), Some("a_t"));
    assert_eq!(p.type_name(3), None);
    assert_eq!(
        p.sid_of("system_u:system_r:c_t").map(|s| s.type_index()),
        Some(2)
    );
    assert_eq!(p.sid_of("system_u:system_r:d_t"), None);
    assert_eq!(p.sid_of("nobody:system_r:a_t"), None);
    assert_eq!(p.sid_of("system_u:nobody_r:a_t"), None);
    assert_eq!(p.sid_of("system_u:system_r"), None);
    assert_eq!(p.user_index("system_u"), Some(0));
    assert_eq!(p.role_index("system_r"), Some(0));
    assert_eq!(p.type_index("b_t"), Some(1));
    assert_eq!(p.user_index("system_r"), None);
    assert_eq!(p.role_index("system_u"), None);
    assert_eq!(p.type_index("system_u"), None);
}

#[test]
fn every_truncation_is_rejected() {
    let bin = valid();
    for len in 0..bin.len() {
        let e = Policy::load(&bin[..len]).unwrap_err();
        if len < HEADER {
            assert_eq!(e, LoadError::TooShort { len });
        } else {
            assert_eq!(
                e,
                LoadError::Truncated {
                    expected: bin.len(),
                    actual: len
                }
            );
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bin = valid();
    let expected = bin.len();
    bin.push(0);
    assert_eq!(
        Policy::load(&bin).unwrap_err(),
        LoadError::TrailingBytes {
            expected,
            actual: expected + 1
        }
    );
}

#[test]
fn header_fields_are_checked() {
    let mut bin = valid();
    bin[0] = b'X';
    assert_eq!(Policy::load(&bin).unwrap_err(), LoadError::BadMagic);
    assert_eq!(
        load_edited(|b| header(b).version = U16::new(2)),
        Err(LoadError::UnsupportedVersion(2))
    );
    assert_eq!(
        load_edited(|b| header(b)._reserved = U16::new(1)),
        Err(LoadError::ReservedNotZero)
    );
    assert_eq!(
        load_edited(|b| header(b)._pad = U16::new(1)),
        Err(LoadError::ReservedNotZero)
    );
}

#[test]
fn counts_that_lie_about_the_length_are_rejected() {
    let len = valid().len();
    let e = load_edited(|b| header(b).rule_count = U32::new(u32::MAX)).unwrap_err();
    assert!(
        matches!(e, LoadError::Truncated { actual, .. } if actual == len),
        "{e:?}"
    );
    let e = load_edited(|b| header(b).strings_len = U32::new(0)).unwrap_err();
    assert!(matches!(e, LoadError::TrailingBytes { .. }), "{e:?}");
}

#[test]
fn a_damaged_body_fails_the_checksum() {
    let mut bin = valid();
    let last = bin.len() - 1;
    bin[last] ^= 1;
    assert_eq!(Policy::load(&bin).unwrap_err(), LoadError::ChecksumMismatch);
}

#[test]
fn names_are_checked() {
    assert_eq!(
        load_edited(|b| name(b, 0).offset = U32::new(10_000)),
        Err(LoadError::BadName { index: 0 })
    );
    assert_eq!(
        load_edited(|b| name(b, 4).len = U16::new(0)),
        Err(LoadError::BadName { index: 4 })
    );
    assert_eq!(
        load_edited(|b| name(b, 1)._pad = U16::new(1)),
        Err(LoadError::BadName { index: 1 })
    );
    // Point type 1 ("b_t") at the bytes of type 0 ("a_t"): a duplicate.
    assert_eq!(
        load_edited(|b| {
            let first = name(b, 2).offset;
            name(b, 3).offset = first;
        }),
        Err(LoadError::NamesNotSorted { index: 3 })
    );
    // A name that is not an identifier.
    assert_eq!(
        load_edited(|b| {
            let last = b.len() - 1;
            b[last] = b':';
        }),
        Err(LoadError::BadName { index: 4 })
    );
}

#[test]
fn rules_are_checked() {
    assert_eq!(
        load_edited(|b| rule(b, 0).source = U16::new(3)),
        Err(LoadError::RuleTypeOutOfRange { index: 0 })
    );
    assert_eq!(
        load_edited(|b| rule(b, 1).target = U16::new(99)),
        Err(LoadError::RuleTypeOutOfRange { index: 1 })
    );
    assert_eq!(
        load_edited(|b| rule(b, 0).class = U16::new(9)),
        Err(LoadError::RuleUnknownClass { index: 0 })
    );
    assert_eq!(
        load_edited(|b| rule(b, 0).allowed = U32::new(0)),
        Err(LoadError::RuleBadPermissions { index: 0 })
    );
    assert_eq!(
        load_edited(|b| rule(b, 0).allowed = U32::new(1 << 31)),
        Err(LoadError::RuleBadPermissions { index: 0 })
    );
    assert_eq!(
        load_edited(|b| rule(b, 0)._pad = U16::new(1)),
        Err(LoadError::RuleBadPermissions { index: 0 })
    );
    assert_eq!(
        load_edited(|b| {
            let second = *rule(b, 1);
            *rule(b, 0) = second;
        }),
        Err(LoadError::RulesNotSorted { index: 1 })
    );
}

#[test]
fn transitions_are_checked() {
    assert_eq!(
        load_edited(|b| transition(b, 0).new_type = U16::new(3)),
        Err(LoadError::TransitionTypeOutOfRange { index: 0 })
    );
    assert_eq!(
        load_edited(|b| transition(b, 1).source = U16::new(7)),
        Err(LoadError::TransitionTypeOutOfRange { index: 1 })
    );
    assert_eq!(
        load_edited(|b| transition(b, 0).class = U16::new(100)),
        Err(LoadError::TransitionUnknownClass { index: 0 })
    );
    assert_eq!(
        load_edited(|b| {
            let first = *transition(b, 0);
            *transition(b, 1) = first;
        }),
        Err(LoadError::TransitionsNotSorted { index: 1 })
    );
}

#[test]
fn load_errors_display() {
    assert_eq!(
        LoadError::Truncated {
            expected: 10,
            actual: 4
        }
        .to_string(),
        "policy binary truncated: 4 of 10 bytes"
    );
    assert_eq!(
        LoadError::TrailingBytes {
            expected: 10,
            actual: 14
        }
        .to_string(),
        "policy binary has 4 trailing bytes"
    );
}

/// Whatever the bytes, loading and then using the policy does not panic.
fn exercise(bin: &[u8]) {
    if let Ok(p) = Policy::load(bin) {
        let mut avc = Avc::new(p, Mode::Enforcing);
        for ty in ["a_t", "b_t", "c_t"] {
            if let Some(sid) = avc.sid_of(&format!("system_u:system_r:{ty}")) {
                let d = avc.check(sid, sid, EventPerm::Send.into());
                if let Some(denial) = d.denial() {
                    let _ = avc.audit(denial).to_string();
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_corruption_never_panics(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8), reseal in any::<bool>()) {
        let mut bin = valid();
        for (at, byte) in edits {
            let len = bin.len();
            bin[at % len] = byte;
        }
        if reseal {
            seal(&mut bin);
        }
        exercise(&bin);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bin = bytes;
        seal(&mut bin);
        exercise(&bin);
    }
}
