//! Lexer and parser for the TE dialect: source text to a list of statements
//! whose names still carry their positions, so the resolver can point at the
//! exact token that is wrong.
//!
//! Grammar (whitespace and `#` or `//` comments to end of line are ignored):
//!
//! ```text
//! policy     = { statement }
//! statement  = "type" NAME { "," NAME } ";"
//!            | "attribute" NAME ";"
//!            | "user" NAME ";"
//!            | "role" NAME ";"
//!            | "allow" NAME NAME ":" NAME perms ";"
//!            | "type_transition" NAME NAME ":" NAME NAME ";"
//! perms      = NAME | "{" NAME { NAME } "}"
//! NAME       = [A-Za-z_][A-Za-z0-9_]*   (not a keyword; "self" only as a target)
//! ```

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use super::error::{CompileError, ErrorKind, Span};
use crate::binary::MAX_NAME_LEN;

/// Words that start statements and so cannot be names.
const KEYWORDS: &[&str] = &[
    "type",
    "attribute",
    "user",
    "role",
    "allow",
    "type_transition",
];

/// The reserved target meaning "the source type itself".
pub const SELF: &str = "self";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'s> {
    Word(&'s str),
    Punct(char),
    End,
}

impl Token<'_> {
    fn describe(&self) -> String {
        match self {
            Token::Word(w) => format!("\"{w}\""),
            Token::Punct(c) => format!("'{c}'"),
            Token::End => "end of input".to_string(),
        }
    }
}

/// A name and where it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Name<'s> {
    pub text: &'s str,
    pub span: Span,
}

/// One statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Statement<'s> {
    Type {
        name: Name<'s>,
        attributes: Vec<Name<'s>>,
    },
    Attribute(Name<'s>),
    User(Name<'s>),
    Role(Name<'s>),
    Allow {
        source: Name<'s>,
        target: Name<'s>,
        class: Name<'s>,
        perms: Vec<Name<'s>>,
    },
    Transition {
        source: Name<'s>,
        target: Name<'s>,
        class: Name<'s>,
        new_type: Name<'s>,
    },
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
    line: u32,
    column: u32,
}

impl<'s> Lexer<'s> {
    fn span(&self) -> Span {
        Span {
            line: self.line,
            column: self.column,
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_trivia(&mut self) {
        loop {
            match self.peek_char() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => self.skip_line(),
                Some('/')
                    if self
                        .src
                        .get(self.pos..)
                        .is_some_and(|r| r.starts_with("//")) =>
                {
                    self.skip_line()
                }
                _ => return,
            }
        }
    }

    fn skip_line(&mut self) {
        while self.peek_char().is_some_and(|c| c != '\n') {
            self.bump();
        }
    }

    fn next(&mut self) -> Result<(Token<'s>, Span), CompileError> {
        self.skip_trivia();
        let span = self.span();
        let start = self.pos;
        match self.peek_char() {
            None => Ok((Token::End, span)),
            Some(c @ (';' | ',' | ':' | '{' | '}')) => {
                self.bump();
                Ok((Token::Punct(c), span))
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                while self
                    .peek_char()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.bump();
                }
                let word = self.src.get(start..self.pos).unwrap_or_default();
                if word.len() > MAX_NAME_LEN {
                    return Err(CompileError {
                        span,
                        kind: ErrorKind::NameTooLong(word.to_string()),
                    });
                }
                Ok((Token::Word(word), span))
            }
            Some(c) => Err(CompileError {
                span,
                kind: ErrorKind::UnexpectedChar(c),
            }),
        }
    }
}

struct Parser<'s> {
    lexer: Lexer<'s>,
}

impl<'s> Parser<'s> {
    fn expected(span: Span, expected: &'static str, found: Token<'_>) -> CompileError {
        CompileError {
            span,
            kind: ErrorKind::Expected {
                expected,
                found: found.describe(),
            },
        }
    }

    /// A name; `allow_self` admits the reserved target `self`.
    fn name(&mut self, what: &'static str, allow_self: bool) -> Result<Name<'s>, CompileError> {
        match self.lexer.next()? {
            (Token::Word(w), span) if KEYWORDS.contains(&w) => Err(CompileError {
                span,
                kind: ErrorKind::KeywordAsName(w.to_string()),
            }),
            (Token::Word(SELF), span) if !allow_self => Err(CompileError {
                span,
                kind: ErrorKind::SelfAsSource,
            }),
            (Token::Word(text), span) => Ok(Name { text, span }),
            (other, span) => Err(Self::expected(span, what, other)),
        }
    }

    fn punct(&mut self, c: char, what: &'static str) -> Result<(), CompileError> {
        match self.lexer.next()? {
            (Token::Punct(p), _) if p == c => Ok(()),
            (other, span) => Err(Self::expected(span, what, other)),
        }
    }

    fn statement(&mut self) -> Result<Option<Statement<'s>>, CompileError> {
        let (keyword, span) = self.lexer.next()?;
        let statement = match keyword {
            Token::End => return Ok(None),
            Token::Word("type") => {
                let name = self.name("a type name", false)?;
                let mut attributes = Vec::new();
                loop {
                    match self.lexer.next()? {
                        (Token::Punct(';'), _) => break,
                        (Token::Punct(','), _) => {
                            attributes.push(self.name("an attribute name", false)?)
                        }
                        (other, span) => return Err(Self::expected(span, "',' or ';'", other)),
                    }
                }
                return Ok(Some(Statement::Type { name, attributes }));
            }
            Token::Word("attribute") => {
                Statement::Attribute(self.name("an attribute name", false)?)
            }
            Token::Word("user") => Statement::User(self.name("a user name", false)?),
            Token::Word("role") => Statement::Role(self.name("a role name", false)?),
            Token::Word("allow") => {
                let source = self.name("a source type or attribute", false)?;
                let target = self.name("a target type, attribute or self", true)?;
                self.punct(':', "':' before the class")?;
                let class = self.name("a class name", false)?;
                let perms = self.perms()?;
                Statement::Allow {
                    source,
                    target,
                    class,
                    perms,
                }
            }
            Token::Word("type_transition") => {
                let source = self.name("a source type or attribute", false)?;
                let target = self.name("a target type, attribute or self", true)?;
                self.punct(':', "':' before the class")?;
                let class = self.name("a class name", false)?;
                let new_type = self.name("the new type", false)?;
                Statement::Transition {
                    source,
                    target,
                    class,
                    new_type,
                }
            }
            other => {
                return Err(Self::expected(
                    span,
                    "a statement (type, attribute, user, role, allow or type_transition)",
                    other,
                ))
            }
        };
        self.punct(';', "';'")?;
        Ok(Some(statement))
    }

    fn perms(&mut self) -> Result<Vec<Name<'s>>, CompileError> {
        match self.lexer.next()? {
            (Token::Punct('{'), _) => {
                let mut perms = alloc::vec![self.name("a permission name", false)?];
                loop {
                    match self.lexer.next()? {
                        (Token::Punct('}'), _) => return Ok(perms),
                        (Token::Word(text), span) if !KEYWORDS.contains(&text) && text != SELF => {
                            perms.push(Name { text, span })
                        }
                        (other, span) => {
                            return Err(Self::expected(span, "a permission name or '}'", other))
                        }
                    }
                }
            }
            (Token::Word(text), span) if !KEYWORDS.contains(&text) && text != SELF => {
                Ok(alloc::vec![Name { text, span }])
            }
            (other, span) => Err(Self::expected(span, "a permission name or '{'", other)),
        }
    }
}

/// Parses a whole policy source.
pub fn parse(src: &str) -> Result<Vec<Statement<'_>>, CompileError> {
    let mut parser = Parser {
        lexer: Lexer {
            src,
            pos: 0,
            line: 1,
            column: 1,
        },
    };
    let mut statements = Vec::new();
    while let Some(s) = parser.statement()? {
        statements.push(s);
    }
    Ok(statements)
}
