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
}
