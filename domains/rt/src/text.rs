//! Fixed-capacity text buffers, ratio formatting and the result-line format.
//!
//! Test harnesses grep the serial log for exactly `TEST <name> PASS` or
//! `TEST <name> FAIL <reason>`, so that format is produced in one place and a
//! reason can never break it across lines.

use core::fmt;

/// A byte buffer that implements `fmt::Write`, dropping what does not fit.
pub struct FixedBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> FixedBuf<N> {
    pub const fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
            truncated: false,
        }
    }

    /// Appends as many bytes as fit and returns how many were taken. May split
    /// a UTF-8 sequence; `as_str` then stops before it.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> usize {
        let take = bytes.len().min(N - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&bytes[..take]);
        self.len += take;
        if take < bytes.len() {
            self.truncated = true;
        }
        take
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The longest valid UTF-8 prefix of the contents.
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(self.as_bytes()) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == N
    }

    /// Whether anything was dropped since the last `clear`.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }
}

impl<const N: usize> Default for FixedBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for FixedBuf<N> {
    /// Keeps whole characters only, so the contents stay valid UTF-8.
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.push_bytes(&s.as_bytes()[..take]);
        if take < s.len() {
            self.truncated = true;
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Display for FixedBuf<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for FixedBuf<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// `num / den` printed with two decimals, rounded half up, in integer
/// arithmetic (benchmarks report ticks per operation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ratio {
    pub num: u64,
    pub den: u64,
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 0 {
            return f.write_str("inf");
        }
        let scaled = (u128::from(self.num) * 100 + u128::from(self.den) / 2) / u128::from(self.den);
        write!(f, "{}.{:02}", scaled / 100, scaled % 100)
    }
}

/// The prefix every result line starts with; progress lines must not.
pub const RESULT_PREFIX: &str = "TEST ";

/// Writes `TEST <name> PASS` or `TEST <name> FAIL <reason>` (no newline).
/// Control characters in the reason become spaces so the line stays one line,
/// and an empty reason becomes `unspecified` so FAIL always carries one.
pub fn write_result_line(
    out: &mut impl fmt::Write,
    name: &str,
    outcome: Result<(), &str>,
) -> fmt::Result {
    out.write_str(RESULT_PREFIX)?;
    out.write_str(name)?;
    match outcome {
        Ok(()) => out.write_str(" PASS"),
        Err(reason) => {
            out.write_str(" FAIL ")?;
            let reason = reason.trim();
            if reason.is_empty() {
                return out.write_str("unspecified");
            }
            for c in reason.chars() {
                out.write_char(if c.is_control() { ' ' } else { c })?;
            }
            Ok(())
        }
    }
}

/// Whether a progress line would be mistaken for a result line.
pub fn looks_like_result_line(line: &str) -> bool {
    line.starts_with(RESULT_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn fixed_buf_truncates_on_char_boundary() {
        let mut b = FixedBuf::<5>::new();
        write!(b, "ab").unwrap();
        assert!(!b.truncated());
        write!(b, "cé€").unwrap();
        assert_eq!(b.as_str(), "abcé");
        assert!(b.truncated());
        assert_eq!(b.len(), 5);
        assert!(b.is_full());
        b.clear();
        assert!(b.is_empty() && !b.truncated());
    }

    #[test]
    fn push_bytes_reports_what_fit() {
        let mut b = FixedBuf::<4>::new();
        assert_eq!(b.push_bytes(b"xyz"), 3);
        assert_eq!(b.push_bytes("é!".as_bytes()), 1);
        assert_eq!(b.as_bytes(), &[b'x', b'y', b'z', 0xc3]);
        assert_eq!(b.as_str(), "xyz");
        assert_eq!(b.push_bytes(b"q"), 0);
    }

    #[test]
    fn numbers_format_through_core() {
        let mut b = FixedBuf::<64>::new();
        write!(
            b,
            "{} {:#x} {:#018x} {}",
            u64::MAX,
            0xea1u16,
            1u64 << 32,
            -38i64
        )
        .unwrap();
        assert_eq!(
            b.as_str(),
            "18446744073709551615 0xea1 0x0000000100000000 -38"
        );
    }

    #[test]
    fn ratio_rounds_to_two_decimals() {
        let show = |num, den| {
            let mut b = FixedBuf::<32>::new();
            write!(b, "{}", Ratio { num, den }).unwrap();
            b
        };
        assert_eq!(show(500_000, 100_000).as_str(), "5.00");
        assert_eq!(show(1, 3).as_str(), "0.33");
        assert_eq!(show(2, 3).as_str(), "0.67");
        assert_eq!(show(12_345_678, 100_000).as_str(), "123.46");
        assert_eq!(show(u64::MAX, 1).as_str(), "18446744073709551615.00");
        assert_eq!(show(7, 0).as_str(), "inf");
    }

    #[test]
    fn result_lines() {
        let line = |name, outcome| {
            let mut b = FixedBuf::<128>::new();
            write_result_line(&mut b, name, outcome).unwrap();
            b
        };
        assert_eq!(line("psci", Ok(())).as_str(), "TEST psci PASS");
        assert_eq!(
            line("hypercalls", Err("version 0x1 != 0x40011")).as_str(),
            "TEST hypercalls FAIL version 0x1 != 0x40011"
        );
        assert_eq!(line("t", Err("a\nb\rc")).as_str(), "TEST t FAIL a b c");
        assert_eq!(line("t", Err("  ")).as_str(), "TEST t FAIL unspecified");
        assert!(looks_like_result_line(line("x", Ok(())).as_str()));
        assert!(!looks_like_result_line("HEARTBEAT 1"));
        assert!(!looks_like_result_line("TESTING"));
    }
}
