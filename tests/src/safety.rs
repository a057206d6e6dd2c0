//! The safety partition's report lines (`test=control-loop` in the test
//! guest) and the bounds a system test holds them to.
//!
//! The one idea: the partition measures itself on its virtual counter and
//! prints one line a second; a test only parses those lines and compares
//! them with stated bounds, so what "keeps its period" means is written
//! down once, here, next to its unit tests.

use regex::Regex;

/// One report line, e.g. `(safety) SAFETY cycles=1000 period_us=1000
/// jitter_max_us=9 jitter_p99_us=9 missed=0 worst_us=9`; the groups are
/// the domain and the six numbers.
pub const SAFETY_LINE: &str = r"^\((\S+)\) SAFETY cycles=(\d+) period_us=(\d+) jitter_max_us=(\d+) jitter_p99_us=(\d+) missed=(\d+) worst_us=(\d+)$";

/// What one report says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SafetyReport {
    /// Periods run so far.
    pub cycles: u64,
    pub period_us: u64,
    /// The latest wake-up of the last second, in us after its deadline.
    pub jitter_max_us: u64,
    /// The 99th-percentile wake-up of the last second.
    pub jitter_p99_us: u64,
    /// Deadlines passed before the partition woke for an earlier one, so far.
    pub missed: u64,
    /// The latest wake-up so far.
    pub worst_us: u64,
}

/// Reads a report line of domain `domain`, if `text` is one.
pub fn parse_safety(text: &str, domain: &str) -> Option<SafetyReport> {
    let captures = Regex::new(SAFETY_LINE).ok()?.captures(text)?;
    if captures.get(1)?.as_str() != domain {
        return None;
    }
    let number = |i: usize| captures.get(i)?.as_str().parse::<u64>().ok();
    Some(SafetyReport {
        cycles: number(2)?,
        period_us: number(3)?,
        jitter_max_us: number(4)?,
        jitter_p99_us: number(5)?,
        missed: number(6)?,
        worst_us: number(7)?,
    })
}

/// What a run of reports must stay within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitterBounds {
    /// Every report's `jitter_p99_us` is at most this.
    pub p99_us: u64,
    /// Every report's `jitter_max_us` is at most this.
    pub max_us: u64,
    /// Of all deadlines so far (run or missed), at most this many per
    /// thousand were missed, as of the last report.
    pub missed_per_mille: u64,
}

impl JitterBounds {
    /// Checks `reports` (in the order printed): there is one, the
    /// partition kept running (cycles grow from one to the next), and each
    /// stays within the bounds. The error names the first offending report.
    pub fn check(&self, reports: &[SafetyReport]) -> Result<(), String> {
        let Some(last) = reports.last() else {
            return Err("no SAFETY report".into());
        };
        for (n, pair) in reports.windows(2).enumerate() {
            if let [a, b] = pair {
                if b.cycles <= a.cycles {
                    return Err(format!(
                        "report {}: cycles={} after cycles={}: the loop stopped",
                        n + 2,
                        b.cycles,
                        a.cycles
                    ));
                }
            }
        }
        for (n, r) in reports.iter().enumerate() {
            if r.jitter_p99_us > self.p99_us {
                return Err(format!(
                    "report {}: jitter_p99_us={} exceeds {} us ({r:?})",
                    n + 1,
                    r.jitter_p99_us,
                    self.p99_us
                ));
            }
            if r.jitter_max_us > self.max_us {
                return Err(format!(
                    "report {}: jitter_max_us={} exceeds {} us ({r:?})",
                    n + 1,
                    r.jitter_max_us,
                    self.max_us
                ));
            }
        }
        let deadlines = last.cycles + last.missed;
        if last.missed * 1000 > self.missed_per_mille * deadlines {
            return Err(format!(
                "{} of {deadlines} deadlines missed, more than {} per thousand",
                last.missed, self.missed_per_mille
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "(safety) SAFETY cycles=2000 period_us=1000 jitter_max_us=1195 \
                        jitter_p99_us=19 missed=3 worst_us=1195";

    fn report(cycles: u64, max: u64, p99: u64, missed: u64) -> SafetyReport {
        SafetyReport {
            cycles,
            period_us: 1000,
            jitter_max_us: max,
            jitter_p99_us: p99,
            missed,
            worst_us: max,
        }
    }

    const BOUNDS: JitterBounds = JitterBounds {
        p99_us: 100,
        max_us: 2000,
        missed_per_mille: 10,
    };

    #[test]
    fn a_report_line_is_parsed() {
        assert_eq!(
            parse_safety(LINE, "safety"),
            Some(SafetyReport {
                cycles: 2000,
                period_us: 1000,
                jitter_max_us: 1195,
                jitter_p99_us: 19,
                missed: 3,
                worst_us: 1195
            })
        );
    }

    #[test]
    fn other_lines_are_not_reports() {
        assert_eq!(parse_safety(LINE, "other"), None, "another domain's");
        assert_eq!(parse_safety(&format!("x{LINE}"), "safety"), None);
        assert_eq!(
            parse_safety(&LINE.replace("missed=3", "missed=-3"), "safety"),
            None
        );
        assert_eq!(
            parse_safety(
                &LINE.replace("cycles=2000", "cycles=99999999999999999999"),
                "safety"
            ),
            None,
            "a number that does not fit"
        );
        assert_eq!(
            parse_safety(&LINE.replace(" worst_us=1195", ""), "safety"),
            None
        );
        assert_eq!(
            parse_safety("(safety) TICKER 1 late_max_us=3", "safety"),
            None
        );
    }

    #[test]
    fn reports_within_the_bounds_pass() {
        let run = [
            report(980, 23, 19, 0),
            report(1979, 1195, 19, 1),
            report(2978, 9, 9, 2),
        ];
        assert_eq!(BOUNDS.check(&run), Ok(()));
    }

    #[test]
    fn each_bound_is_enforced_and_named() {
        let p99 = BOUNDS.check(&[report(1000, 2021, 2021, 0)]).unwrap_err();
        assert!(
            p99.contains("report 1: jitter_p99_us=2021 exceeds 100 us"),
            "{p99}"
        );
        let max = BOUNDS
            .check(&[report(1000, 10, 9, 0), report(2000, 2001, 19, 0)])
            .unwrap_err();
        assert!(
            max.contains("report 2: jitter_max_us=2001 exceeds 2000 us"),
            "{max}"
        );
        let missed = BOUNDS.check(&[report(1979, 20, 19, 21)]).unwrap_err();
        assert!(missed.contains("21 of 2000 deadlines missed"), "{missed}");
        assert_eq!(
            BOUNDS.check(&[report(1980, 20, 19, 20)]),
            Ok(()),
            "exactly 1%"
        );
    }

    #[test]
    fn a_loop_that_stopped_or_never_reported_fails() {
        let stalled = BOUNDS
            .check(&[report(1000, 9, 9, 0), report(1000, 9, 9, 0)])
            .unwrap_err();
        assert!(stalled.contains("the loop stopped"), "{stalled}");
        assert_eq!(BOUNDS.check(&[]), Err("no SAFETY report".into()));
    }
}
