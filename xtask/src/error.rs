//! The one error type of xtask. Each variant carries enough context (a path,
//! a module name, a command line) for the message alone to say what to fix.

use std::fmt;
use std::path::PathBuf;

/// Everything that can stop a build, run or test.
#[derive(Debug)]
pub enum Error {
    /// Reading or writing a file failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A built binary is not an ELF file we can flatten.
    Elf { path: PathBuf, reason: String },
    /// `dtc` rejected a system description; `message` is dtc's own output.
    Dtc { path: PathBuf, message: String },
    /// The system description compiled but the parser the kernel runs
    /// (`tessera_sysdesc::config`) rejects it.
    Config { path: PathBuf, message: String },
    /// The image's `policy.te` does not compile: where (1-based) and why.
    PolicySyntax {
        path: PathBuf,
        line: u32,
        column: u32,
        message: String,
    },
    /// The system description gives a domain a label, or sets up a link,
    /// that the policy does not allow; one line per problem.
    PolicyCheck {
        description: PathBuf,
        policy: PathBuf,
        problems: Vec<String>,
    },
    /// A `tessera,module` name that is neither built-in nor a file in the image.
    UnknownModule { name: String, image: PathBuf },
    /// A module cannot be described by the module table.
    BadModule { name: String, reason: String },
    /// The image cannot be packed (e.g. the kernel lacks its `Image` header).
    Pack(String),
    /// A program could not be started.
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// A program ran and failed.
    Command { command: String, status: String },
    /// Bad command-line usage.
    Usage(String),
    /// Some system tests or benchmarks failed; details were printed already.
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Elf { path, reason } => {
                write!(f, "{}: not a usable ELF: {reason}", path.display())
            }
            Error::Dtc { path, message } => {
                write!(
                    f,
                    "dtc failed to compile {}:\n{}",
                    path.display(),
                    message.trim_end()
                )
            }
            Error::Config { path, message } => write!(f, "{}: {message}", path.display()),
            Error::PolicySyntax {
                path,
                line,
                column,
                message,
            } => write!(f, "{}:{line}:{column}: {message}", path.display()),
            Error::PolicyCheck {
                description,
                policy,
                problems,
            } => {
                for problem in problems {
                    writeln!(f, "{}: {problem}", description.display())?;
                }
                write!(f, "(checked against the policy {})", policy.display())
            }
            Error::UnknownModule { name, image } => write!(
                f,
                "unknown module `{name}`: it is not `testguest` and there is no file {}",
                image.join(name).display()
            ),
            Error::BadModule { name, reason } => write!(f, "module `{name}`: {reason}"),
            Error::Pack(message) => write!(f, "cannot pack the image: {message}"),
            Error::Spawn { program, source } => write!(f, "cannot run `{program}`: {source}"),
            Error::Command { command, status } => write!(f, "`{command}` failed: {status}"),
            Error::Usage(message) => write!(f, "{message}"),
            Error::Failed(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Attaches a path to an I/O error.
pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
