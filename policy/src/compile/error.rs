//! Compiler errors: where (line and column, 1-based, columns in characters)
//! and what was wrong, phrased as what was expected.

use alloc::string::String;
use core::fmt;

/// A position in the policy source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub column: u32,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A character that starts no token.
    UnexpectedChar(char),
    /// The grammar wanted one thing and found another. `found` is the
    /// offending token as written, or "end of input".
    Expected {
        /// What would have been accepted.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// A statement keyword where a name belongs.
    KeywordAsName(String),
    /// A name longer than the binary format holds.
    NameTooLong(String),
    /// A name declared twice with the same kind.
    Duplicate {
        /// "type", "attribute", "user" or "role".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A name declared as both a type and an attribute.
    TypeAttributeClash(String),
    /// More names of one kind than the format numbers.
    TooMany(&'static str),
    /// A source or target that is neither a type nor an attribute.
    UnknownType(String),
    /// A `type` declaration lists something that is not an attribute.
    NotAnAttribute(String),
    /// `type_transition` to an attribute rather than a type.
    TransitionToAttribute(String),
    /// `self` as a source: it only means something as a target.
    SelfAsSource,
    /// A class name the policy does not define.
    UnknownClass(String),
    /// A permission name its class does not define.
    UnknownPerm {
        /// The permission as written.
        perm: String,
        /// The class it was looked up in.
        class: &'static str,
    },
    /// Two `type_transition`s for the same (source, target, class) that
    /// name different new types.
    ConflictingTransition {
        /// The source type.
        source: String,
        /// The target type.
        target: String,
        /// The class.
        class: &'static str,
        /// The new type the earlier statement chose.
        earlier: String,
    },
}

/// A compile error: where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    /// Where the offending token starts.
    pub span: Span,
    /// What was wrong.
    pub kind: ErrorKind,
}

impl CompileError {
    /// The error prefixed with a file name: `policy.te:4:17: ...`.
    pub fn in_file<'e>(&'e self, file: &'e str) -> impl fmt::Display + 'e {
        InFile { file, error: self }
    }
}

struct InFile<'e> {
    file: &'e str,
    error: &'e CompileError,
}

impl fmt::Display for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.error)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::UnexpectedChar(c) => write!(f, "unexpected character {c:?}"),
            ErrorKind::Expected { expected, found } => write!(f, "expected {expected}, found {found}"),
            ErrorKind::KeywordAsName(k) => write!(f, "\"{k}\" is a keyword, expected a name"),
            ErrorKind::NameTooLong(n) => write!(f, "name \"{n}\" is longer than 255 bytes"),
            ErrorKind::Duplicate { kind, name } => write!(f, "{kind} \"{name}\" is already declared"),
            ErrorKind::TypeAttributeClash(n) => {
                write!(f, "\"{n}\" is declared both as a type and as an attribute")
            }
            ErrorKind::TooMany(kind) => write!(f, "too many {kind}s (at most 65535)"),
            ErrorKind::UnknownType(n) => write!(f, "unknown type or attribute \"{n}\""),
            ErrorKind::NotAnAttribute(n) => write!(f, "expected an attribute, \"{n}\" is not one"),
            ErrorKind::TransitionToAttribute(n) => {
                write!(f, "expected a type as the new type, \"{n}\" is an attribute")
            }
            ErrorKind::SelfAsSource => f.write_str("\"self\" is only valid as a target"),
            ErrorKind::UnknownClass(c) => write!(f, "unknown class \"{c}\""),
            ErrorKind::UnknownPerm { perm, class } => {
                write!(f, "unknown permission \"{perm}\" for class {class}")
            }
            ErrorKind::ConflictingTransition { source, target, class, earlier } => write!(
                f,
                "conflicting type_transition for {source} {target}:{class}, an earlier one chose \"{earlier}\""
            ),
        }
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.span.line, self.span.column, self.kind)
    }
}

impl core::error::Error for CompileError {}
