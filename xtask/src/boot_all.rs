//! The `boot_all` benchmark's reading of a boot log: when each domain ran
//! its first instruction, when each Linux guest reached `/init`, and how
//! late the bare-metal partition's timer was meanwhile.
//!
//! The one idea: under `-icount shift=4` QEMU's 62.5 MHz counter ticks once
//! per instruction, so the counter values the kernel and the guests print
//! are instruction counts. The kernel logs each domain's first entry as
//! ticks after its own entry; a Linux init marker carries the guest's
//! counter since QEMU started (the kernel is entered within a few dozen
//! instructions of that, so the two agree to well under a thousand).

use regex::Regex;

/// `tessera: d3 linux1: first instruction 51234567 ticks after kernel entry (819.753 ms)`.
const FIRST_ENTRY: &str =
    r"^tessera: d(\d+) (\S+): first instruction (\d+) ticks after kernel entry ";
/// A Linux guest's init marker, prefixed with its domain by the device
/// model's console.
const INIT_MARKER: &str = r"^\((\S+)\) TESSERA-LINUX-INIT nproc=\d+ cntvct=(\d+) cntfrq=\d+";
/// The bare-metal ticker's once-a-second line (`test=ticker`).
const TICKER: &str = r"^\((\S+)\) TICKER \d+ late_max_us=(\d+)$";

/// A boot as the log tells it, in counter ticks (instructions under
/// `-icount`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootTimeline {
    /// `(domain, ticks after kernel entry)` of each domain's first
    /// instruction, in log order; a restarted domain appears again.
    pub first_entry: Vec<(String, u64)>,
    /// `(domain, counter)` of each Linux init marker.
    pub init: Vec<(String, u64)>,
    /// `(domain, worst lateness in us)` over the ticker lines read.
    pub ticker_late_us: Vec<(String, u64)>,
}

impl BootTimeline {
    /// Reads every line it knows; others are skipped.
    pub fn read<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let first = Regex::new(FIRST_ENTRY).expect("constant pattern");
        let init = Regex::new(INIT_MARKER).expect("constant pattern");
        let ticker = Regex::new(TICKER).expect("constant pattern");
        let mut t = BootTimeline::default();
        for line in lines {
            if let Some(c) = first.captures(line) {
                if let Ok(ticks) = c[3].parse() {
                    t.first_entry.push((c[2].to_string(), ticks));
                }
            } else if let Some(c) = init.captures(line) {
                if let Ok(counter) = c[2].parse() {
                    t.init.push((c[1].to_string(), counter));
                }
            } else if let Some(c) = ticker.captures(line) {
                if let Ok(late) = c[2].parse::<u64>() {
                    match t.ticker_late_us.iter_mut().find(|(d, _)| *d == c[1]) {
                        Some((_, worst)) => *worst = (*worst).max(late),
                        None => t.ticker_late_us.push((c[1].to_string(), late)),
                    }
                }
            }
        }
        t
    }

    /// Whether every domain in `domains` has started and every one in
    /// `linux` has reached its init marker.
    pub fn complete(&self, domains: &[String], linux: &[String]) -> bool {
        domains
            .iter()
            .all(|d| self.first_entry.iter().any(|(n, _)| n == d))
            && linux.iter().all(|d| self.init.iter().any(|(n, _)| n == d))
    }

    /// The domain whose first instruction came last (its first start
    /// only), and when.
    pub fn last_start(&self) -> Option<(&str, u64)> {
        let mut seen: Vec<&str> = Vec::new();
        let mut last: Option<(&str, u64)> = None;
        for (d, ticks) in &self.first_entry {
            if seen.contains(&d.as_str()) {
                continue;
            }
            seen.push(d);
            if last.is_none_or(|(_, t)| *ticks > t) {
                last = Some((d, *ticks));
            }
        }
        last
    }

    /// The Linux guest that reached `/init` last, and when.
    pub fn last_init(&self) -> Option<(&str, u64)> {
        self.init
            .iter()
            .max_by_key(|(_, c)| *c)
            .map(|(d, c)| (d.as_str(), *c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[&str] = &[
        "tessera: EL2 kernel up: 2 pCPUs, 1024 MiB RAM, GICv3 at 0x8000000",
        "tessera: d1 devmodel: first instruction 900000 ticks after kernel entry (14.400 ms)",
        "tessera: d4 ticker: first instruction 950000 ticks after kernel entry (15.200 ms)",
        "(ticker) TICKER 1 late_max_us=12",
        "tessera: d2 linux1: first instruction 52000000 ticks after kernel entry (832.000 ms)",
        "tessera: d3 linux2: first instruction 53000000 ticks after kernel entry (848.000 ms)",
        "(ticker) TICKER 2 late_max_us=340",
        "(linux2) TESSERA-LINUX-INIT nproc=1 cntvct=240000000 cntfrq=62500000",
        "(ticker) TICKER 3 late_max_us=7",
        "(linux1) TESSERA-LINUX-INIT nproc=1 cntvct=250000000 cntfrq=62500000",
        // A restart is a later first instruction of the same domain.
        "tessera: d1 devmodel: first instruction 90000000 ticks after kernel entry (1440.000 ms)",
    ];

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_starts_markers_and_ticker_lateness() {
        let t = BootTimeline::read(LOG.iter().copied());
        assert_eq!(t.first_entry.len(), 5);
        assert_eq!(
            t.last_start(),
            Some(("linux2", 53_000_000)),
            "restarts do not count"
        );
        assert_eq!(t.last_init(), Some(("linux1", 250_000_000)));
        assert_eq!(t.ticker_late_us, vec![("ticker".to_string(), 340)]);
        let all = names(&["devmodel", "linux1", "linux2", "ticker"]);
        assert!(t.complete(&all, &names(&["linux1", "linux2"])));
    }

    #[test]
    fn incomplete_until_every_domain_and_marker_is_seen() {
        let t = BootTimeline::read(LOG[..8].iter().copied());
        let all = names(&["devmodel", "linux1", "linux2", "ticker"]);
        assert!(t.complete(&all, &names(&["linux2"])));
        assert!(
            !t.complete(&all, &names(&["linux1", "linux2"])),
            "linux1 has no marker yet"
        );
        assert!(!t.complete(&names(&["domb"]), &[]), "domb never started");
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let t = BootTimeline::read([
            "tessera: d2 linux1: first instruction lots ticks after kernel entry (x)",
            "tessera: d2 linux1: first instruction 99999999999999999999999 ticks after kernel entry (x)",
            "(linux1) TESSERA-LINUX-INIT nproc=1 cntvct=-5 cntfrq=1",
            "(ticker) TICKER 1 late_max_us=",
            "linux1 TESSERA-LINUX-INIT nproc=1 cntvct=5 cntfrq=1",
        ]);
        assert_eq!(t, BootTimeline::default());
        assert_eq!(t.last_start(), None);
        assert_eq!(t.last_init(), None);
    }
}
