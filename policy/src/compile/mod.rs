//! The host-side policy compiler: TE source to the binary of
//! [`crate::binary`].
//!
//! Attributes exist only here. They are expanded into one rule per
//! (source type, target type, class), so the loader and the AVC never see
//! them and a lookup is a single binary search.

mod error;
mod parse;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use zerocopy::little_endian::{U16, U32};
use zerocopy::IntoBytes;

pub use error::{CompileError, ErrorKind, Span};
use parse::{Name, Statement, SELF};

use crate::binary::{
    self, Header, NameEntry, RuleRecord, TransitionRecord, MAGIC, MAX_NAMES, VERSION,
};
use crate::{Class, Perm};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Type,
    Attribute,
}

/// Names seen so far, with what they are and where they were declared.
#[derive(Default)]
struct Symbols<'s> {
    names: BTreeMap<&'s str, Kind>,
    users: BTreeSet<&'s str>,
    roles: BTreeSet<&'s str>,
}

fn error(span: Span, kind: ErrorKind) -> CompileError {
    CompileError { span, kind }
}

impl<'s> Symbols<'s> {
    fn declare(&mut self, name: Name<'s>, kind: Kind) -> Result<(), CompileError> {
        match self.names.insert(name.text, kind) {
            None => Ok(()),
            Some(previous) if previous == kind => Err(error(
                name.span,
                ErrorKind::Duplicate {
                    kind: if kind == Kind::Type {
                        "type"
                    } else {
                        "attribute"
                    },
                    name: name.text.to_string(),
                },
            )),
            Some(_) => Err(error(
                name.span,
                ErrorKind::TypeAttributeClash(name.text.to_string()),
            )),
        }
    }
}

fn declare_once<'s>(
    set: &mut BTreeSet<&'s str>,
    name: Name<'s>,
    kind: &'static str,
) -> Result<(), CompileError> {
    if set.insert(name.text) {
        Ok(())
    } else {
        Err(error(
            name.span,
            ErrorKind::Duplicate {
                kind,
                name: name.text.to_string(),
            },
        ))
    }
}

/// A resolved source or target.
enum Subject {
    Types(Vec<u16>),
    /// `self`: the target is each source type in turn.
    SameAsSource,
}

struct Resolver<'s> {
    types: BTreeMap<&'s str, u16>,
    attributes: BTreeMap<&'s str, BTreeSet<u16>>,
}

impl<'s> Resolver<'s> {
    fn subject(&self, name: Name<'s>) -> Result<Subject, CompileError> {
        if name.text == SELF {
            return Ok(Subject::SameAsSource);
        }
        if let Some(&t) = self.types.get(name.text) {
            return Ok(Subject::Types(alloc::vec![t]));
        }
        match self.attributes.get(name.text) {
            Some(members) => Ok(Subject::Types(members.iter().copied().collect())),
            None => Err(error(
                name.span,
                ErrorKind::UnknownType(name.text.to_string()),
            )),
        }
    }

    /// Every (source, target) pair a statement names.
    fn pairs(&self, source: Name<'s>, target: Name<'s>) -> Result<Vec<(u16, u16)>, CompileError> {
        let Subject::Types(sources) = self.subject(source)? else {
            // The parser already refuses `self` as a source.
            return Err(error(source.span, ErrorKind::SelfAsSource));
        };
        Ok(match self.subject(target)? {
            Subject::SameAsSource => sources.iter().map(|&s| (s, s)).collect(),
            Subject::Types(targets) => sources
                .iter()
                .flat_map(|&s| targets.iter().map(move |&t| (s, t)))
                .collect(),
        })
    }
}

fn class_of(name: Name<'_>) -> Result<Class, CompileError> {
    Class::from_name(name.text)
        .ok_or_else(|| error(name.span, ErrorKind::UnknownClass(name.text.to_string())))
}

/// Declarations (pass 1) and attribute membership (pass 2): the symbols
/// and the resolver that rules are expanded with.
fn declare<'s>(statements: &[Statement<'s>]) -> Result<(Symbols<'s>, Resolver<'s>), CompileError> {
    // Pass 1: declarations, so rules may name types declared further down.
    let mut symbols = Symbols::default();
    for statement in statements {
        match statement {
            Statement::Type { name, .. } => symbols.declare(*name, Kind::Type)?,
            Statement::Attribute(name) => symbols.declare(*name, Kind::Attribute)?,
            Statement::User(name) => declare_once(&mut symbols.users, *name, "user")?,
            Statement::Role(name) => declare_once(&mut symbols.roles, *name, "role")?,
            Statement::Allow { .. } | Statement::Transition { .. } => {}
        }
    }

    // Types are numbered in name order: the loader's binary search by name
    // then finds a type's number as its position.
    let mut resolver = Resolver {
        types: BTreeMap::new(),
        attributes: BTreeMap::new(),
    };
    for (name, kind) in &symbols.names {
        match kind {
            Kind::Type => {
                let index = resolver.types.len();
                let number = u16::try_from(index).ok().filter(|_| index < MAX_NAMES);
                // Report an overflow at the declaration that caused it.
                let number = number.ok_or_else(|| {
                    error(
                        declaration_span(statements, name),
                        ErrorKind::TooMany("type"),
                    )
                })?;
                resolver.types.insert(name, number);
            }
            Kind::Attribute => {
                resolver.attributes.insert(name, BTreeSet::new());
            }
        }
    }
    for (set, what) in [(&symbols.users, "user"), (&symbols.roles, "role")] {
        if set.len() > MAX_NAMES {
            let span = declaration_span(
                statements,
                set.iter().nth(MAX_NAMES).copied().unwrap_or_default(),
            );
            return Err(error(span, ErrorKind::TooMany(what)));
        }
    }

    // Pass 2: attribute membership.
    for statement in statements {
        if let Statement::Type { name, attributes } = statement {
            let ty = resolver.types.get(name.text).copied().unwrap_or_default();
            for attribute in attributes {
                match resolver.attributes.get_mut(attribute.text) {
                    Some(members) => {
                        members.insert(ty);
                    }
                    None if symbols.names.contains_key(attribute.text) => {
                        return Err(error(
                            attribute.span,
                            ErrorKind::NotAnAttribute(attribute.text.to_string()),
                        ))
                    }
                    None => {
                        return Err(error(
                            attribute.span,
                            ErrorKind::UnknownType(attribute.text.to_string()),
                        ))
                    }
                }
            }
        }
    }

    Ok((symbols, resolver))
}

/// Compiles TE source to a policy binary. The first error stops compilation.
pub fn compile(src: &str) -> Result<Vec<u8>, CompileError> {
    let statements = parse::parse(src)?;
    let (symbols, resolver) = declare(&statements)?;

    // Pass 3: rules and transitions, expanded to types.
    let mut rules: BTreeMap<(u16, u16, u16), u32> = BTreeMap::new();
    let mut transitions: BTreeMap<(u16, u16, u16), (u16, &str)> = BTreeMap::new();
    for statement in &statements {
        match statement {
            Statement::Allow {
                source,
                target,
                class,
                perms,
            } => {
                let class_id = class_of(*class)?;
                let mut allowed = 0u32;
                for perm in perms {
                    let p = Perm::from_name(class_id, perm.text).ok_or_else(|| {
                        error(
                            perm.span,
                            ErrorKind::UnknownPerm {
                                perm: perm.text.to_string(),
                                class: class_id.name(),
                            },
                        )
                    })?;
                    allowed |= p.mask();
                }
                for (s, t) in resolver.pairs(*source, *target)? {
                    *rules.entry((s, t, class_id as u16)).or_default() |= allowed;
                }
            }
            Statement::Transition {
                source,
                target,
                class,
                new_type,
            } => {
                let class_id = class_of(*class)?;
                let new = match resolver.types.get(new_type.text) {
                    Some(&t) => t,
                    None if resolver.attributes.contains_key(new_type.text) => {
                        return Err(error(
                            new_type.span,
                            ErrorKind::TransitionToAttribute(new_type.text.to_string()),
                        ))
                    }
                    None => {
                        return Err(error(
                            new_type.span,
                            ErrorKind::UnknownType(new_type.text.to_string()),
                        ))
                    }
                };
                for (s, t) in resolver.pairs(*source, *target)? {
                    match transitions.insert((s, t, class_id as u16), (new, new_type.text)) {
                        Some((earlier, earlier_name)) if earlier != new => {
                            let name_of = |ty: u16| {
                                resolver
                                    .types
                                    .iter()
                                    .find(|(_, &n)| n == ty)
                                    .map_or("?", |(k, _)| *k)
                            };
                            return Err(error(
                                new_type.span,
                                ErrorKind::ConflictingTransition {
                                    source: name_of(s).to_string(),
                                    target: name_of(t).to_string(),
                                    class: class_id.name(),
                                    earlier: earlier_name.to_string(),
                                },
                            ));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    // A rule whose permission set expands to nothing cannot exist (perm lists
    // are non-empty), but attributes with no members produce no pairs at all,
    // which is fine: an empty attribute grants nothing.
    Ok(emit(&symbols, &resolver, &rules, &transitions))
}

/// One `allow` statement as written, with the (source, target) type pairs
/// it expands to. For host tools that reason about rules rather than ask
/// for decisions, e.g. `cargo xtask check` finding rules no link uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    /// Where the statement starts.
    pub span: Span,
    /// The source and target as written (types, attributes or `self`).
    pub source: String,
    pub target: String,
    pub class: Class,
    /// The permissions as written, in order.
    pub perms: Vec<String>,
    /// Every (source type, target type) the statement grants, by type name,
    /// in the compiler's order. Empty when an attribute has no members.
    pub pairs: Vec<(String, String)>,
}

impl core::fmt::Display for AllowRule {
    /// The rule as policy source: `allow s t:class { p q }`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "allow {} {}:{} ",
            self.source,
            self.target,
            self.class.name()
        )?;
        match self.perms.as_slice() {
            [one] => write!(f, "{one}"),
            many => write!(f, "{{ {} }}", many.join(" ")),
        }
    }
}

/// Every `allow` statement of `src`, in source order. `src` must compile:
/// the first compile error is returned as `compile` would return it.
pub fn allow_rules(src: &str) -> Result<Vec<AllowRule>, CompileError> {
    compile(src)?;
    let statements = parse::parse(src)?;
    let (_, resolver) = declare(&statements)?;
    let name_of: BTreeMap<u16, &str> = resolver.types.iter().map(|(n, t)| (*t, *n)).collect();
    let type_name = |t: u16| name_of.get(&t).copied().unwrap_or("?").to_string();
    let mut rules = Vec::new();
    for statement in &statements {
        let Statement::Allow {
            source,
            target,
            class,
            perms,
        } = statement
        else {
            continue;
        };
        rules.push(AllowRule {
            span: source.span,
            source: source.text.to_string(),
            target: target.text.to_string(),
            class: class_of(*class)?,
            perms: perms.iter().map(|p| p.text.to_string()).collect(),
            pairs: resolver
                .pairs(*source, *target)?
                .into_iter()
                .map(|(s, t)| (type_name(s), type_name(t)))
                .collect(),
        });
    }
    Ok(rules)
}

/// Where `name` was first declared, for errors about declarations as a whole.
fn declaration_span(statements: &[Statement<'_>], name: &str) -> Span {
    statements
        .iter()
        .find_map(|s| match s {
            Statement::Type { name: n, .. }
            | Statement::Attribute(n)
            | Statement::User(n)
            | Statement::Role(n)
                if n.text == name =>
            {
                Some(n.span)
            }
            _ => None,
        })
        .unwrap_or(Span { line: 1, column: 1 })
}

fn emit(
    symbols: &Symbols<'_>,
    resolver: &Resolver<'_>,
    rules: &BTreeMap<(u16, u16, u16), u32>,
    transitions: &BTreeMap<(u16, u16, u16), (u16, &str)>,
) -> Vec<u8> {
    let mut strings = Vec::new();
    let mut names = Vec::new();
    // BTree iteration is in byte order, the order the loader requires.
    let all = symbols
        .users
        .iter()
        .chain(symbols.roles.iter())
        .chain(resolver.types.keys());
    for name in all {
        names.push(NameEntry {
            offset: U32::new(strings.len() as u32),
            len: U16::new(name.len() as u16),
            _pad: U16::ZERO,
        });
        strings.extend_from_slice(name.as_bytes());
    }
    // BTreeMap order on (source, target, class) is the binary's key order.
    let rule_records: Vec<RuleRecord> = rules
        .iter()
        .filter(|(_, &allowed)| allowed != 0)
        .map(|(&(s, t, c), &allowed)| RuleRecord {
            source: U16::new(s),
            target: U16::new(t),
            class: U16::new(c),
            _pad: U16::ZERO,
            allowed: U32::new(allowed),
        })
        .collect();
    let transition_records: Vec<TransitionRecord> = transitions
        .iter()
        .map(|(&(s, t, c), &(new, _))| TransitionRecord {
            source: U16::new(s),
            target: U16::new(t),
            class: U16::new(c),
            new_type: U16::new(new),
        })
        .collect();

    let header = Header {
        magic: MAGIC,
        version: U16::new(VERSION),
        _reserved: U16::ZERO,
        user_count: U16::new(symbols.users.len() as u16),
        role_count: U16::new(symbols.roles.len() as u16),
        type_count: U16::new(resolver.types.len() as u16),
        _pad: U16::ZERO,
        rule_count: U32::new(rule_records.len() as u32),
        transition_count: U32::new(transition_records.len() as u32),
        strings_len: U32::new(strings.len() as u32),
        checksum: U32::ZERO,
    };
    let mut out = Vec::new();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(names.as_bytes());
    out.extend_from_slice(rule_records.as_bytes());
    out.extend_from_slice(transition_records.as_bytes());
    out.extend_from_slice(&strings);
    binary::seal(&mut out);
    out
}
