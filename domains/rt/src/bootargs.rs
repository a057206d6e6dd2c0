//! Parsing of `/chosen/bootargs`, which selects what a test guest does.
//!
//! Bootargs are whitespace-separated words; a word is either a flag (`native`)
//! or `key=value` (`test=psci`, `bench=null_hypercall`). Matching is on whole
//! words, so `nativex` is not `native` and `xtest=a` is not `test=a`; the first
//! occurrence of a key wins.

/// A borrowed bootargs string.
#[derive(Clone, Copy, Debug)]
pub struct BootArgs<'a>(&'a str);

/// What the command line asks the guest to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode<'a> {
    Test(&'a str),
    Bench(&'a str),
    /// Neither key, or an empty value.
    Unspecified,
}

/// Word that selects native mode (no hypervisor underneath).
pub const NATIVE_FLAG: &str = "native";

impl<'a> BootArgs<'a> {
    pub const fn new(args: &'a str) -> Self {
        Self(args)
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }

    pub fn words(&self) -> impl Iterator<Item = &'a str> {
        self.0.split_ascii_whitespace()
    }

    /// Whether the bare word `flag` is present.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.words().any(|w| w == flag)
    }

    /// The value of the first `key=value` word with this key.
    pub fn value(&self, key: &str) -> Option<&'a str> {
        self.words().find_map(|w| {
            let (k, v) = w.split_once('=')?;
            (k == key).then_some(v)
        })
    }

    /// The value of `key` as a number: decimal, or hexadecimal after `0x`.
    /// `None` when the key is absent or the value is not a number.
    pub fn number(&self, key: &str) -> Option<u64> {
        parse_number(self.value(key)?)
    }

    pub fn is_native(&self) -> bool {
        self.has_flag(NATIVE_FLAG)
    }

    /// `test=` takes precedence over `bench=`; empty values do not count.
    pub fn mode(&self) -> Mode<'a> {
        match (self.value("test"), self.value("bench")) {
            (Some(t), _) if !t.is_empty() => Mode::Test(t),
            (_, Some(b)) if !b.is_empty() => Mode::Bench(b),
            _ => Mode::Unspecified,
        }
    }
}

/// Parses `123` or `0x7b` (also `0X7B`); underscores are not accepted.
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_bench() {
        let a = BootArgs::new("native bench=null_hypercall");
        assert!(a.is_native());
        assert_eq!(a.mode(), Mode::Bench("null_hypercall"));
    }

    #[test]
    fn test_selection_and_whitespace() {
        let a = BootArgs::new("  console=hvc0\ttest=psci \n");
        assert!(!a.is_native());
        assert_eq!(a.mode(), Mode::Test("psci"));
        assert_eq!(a.value("console"), Some("hvc0"));
    }

    #[test]
    fn whole_words_only() {
        let a = BootArgs::new("nativex xtest=a test_=b mode=native");
        assert!(!a.is_native());
        assert_eq!(a.value("test"), None);
        assert_eq!(a.mode(), Mode::Unspecified);
    }

    #[test]
    fn first_key_wins_and_empty_values_do_not_count() {
        assert_eq!(BootArgs::new("test=a test=b").mode(), Mode::Test("a"));
        assert_eq!(
            BootArgs::new("test= bench=vcpu_switch").mode(),
            Mode::Bench("vcpu_switch")
        );
        assert_eq!(BootArgs::new("bench=x test=y").mode(), Mode::Test("y"));
        assert_eq!(BootArgs::new("").mode(), Mode::Unspecified);
        assert_eq!(BootArgs::new("test=a=b").value("test"), Some("a=b"));
    }

    #[test]
    fn numbers_in_decimal_and_hex() {
        let a =
            BootArgs::new("port=5 shm=0x20000000 big=0XFFFFFFFFFFFFFFFF bad=0x neg=-1 x=1_0 h=0xg");
        assert_eq!(a.number("port"), Some(5));
        assert_eq!(a.number("shm"), Some(0x2000_0000));
        assert_eq!(a.number("big"), Some(u64::MAX));
        for key in ["bad", "neg", "x", "h", "missing"] {
            assert_eq!(a.number(key), None, "{key}");
        }
        assert_eq!(parse_number("18446744073709551616"), None, "overflow");
        assert_eq!(parse_number("0x10000000000000000"), None, "overflow");
        assert_eq!(parse_number("+1"), None);
        assert_eq!(parse_number(""), None);
        assert_eq!(parse_number("007"), Some(7));
    }
}
