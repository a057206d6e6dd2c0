//! Timing statistics for the periodic control loop (`test=control-loop`):
//! how late each wake-up came after its deadline, in microseconds of the
//! virtual counter, summed up per reporting window as a maximum and a 99th
//! percentile; and how the loop keeps its deadlines on a fixed grid.
//!
//! The one idea: a fixed histogram with one bucket per microsecond (the
//! last bucket catching everything later) gives an exact p99 at 1 µs
//! resolution with constant work per sample and no allocation. Deadlines
//! stay on the grid `start + k * period`: a late wake-up never shifts the
//! ones after it, and one later than a whole period skips the deadlines it
//! missed (counting them) instead of firing a burst to catch up.
//!
//! Pure arithmetic, so it builds and is tested on the host too.

/// Histogram buckets: 0..=`BUCKETS - 2` µs one each, then "later".
pub const BUCKETS: usize = 2048;

/// Lateness samples of one reporting window.
pub struct Window {
    hist: [u32; BUCKETS],
    samples: u32,
    max_us: u64,
}

impl Window {
    /// An empty window.
    pub const fn new() -> Self {
        Self {
            hist: [0; BUCKETS],
            samples: 0,
            max_us: 0,
        }
    }

    /// Counts one wake-up that came `late_us` µs after its deadline.
    pub fn record(&mut self, late_us: u64) {
        let bucket = usize::try_from(late_us).map_or(BUCKETS - 1, |b| b.min(BUCKETS - 1));
        if let Some(count) = self.hist.get_mut(bucket) {
            *count = count.saturating_add(1);
        }
        self.samples = self.samples.saturating_add(1);
        self.max_us = self.max_us.max(late_us);
    }

    /// The latest wake-up, in µs after its deadline (0 when empty).
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The smallest `v` such that at least `pct`% of the wake-ups came at
    /// most `v` µs late (0 when empty). In the "later" bucket that is the
    /// window's maximum, an upper bound.
    pub fn percentile_us(&self, pct: u32) -> u64 {
        let pct = u64::from(pct.min(100));
        // Samples that must be at or below the answer, rounded up.
        let need = (u64::from(self.samples) * pct).div_ceil(100).max(1);
        let mut seen = 0u64;
        for (us, &count) in self.hist.iter().enumerate() {
            seen += u64::from(count);
            if seen >= need {
                return if us == BUCKETS - 1 {
                    self.max_us
                } else {
                    us as u64
                };
            }
        }
        0
    }

    /// Empties the window for the next one.
    pub fn clear(&mut self) {
        self.hist = [0; BUCKETS];
        self.samples = 0;
        self.max_us = 0;
    }
}

impl Default for Window {
    fn default() -> Self {
        Self::new()
    }
}

/// `ticks` of a counter running at `freq` Hz, in whole microseconds
/// (rounded down; 0 for a zero frequency).
pub fn ticks_to_us(ticks: u64, freq: u64) -> u64 {
    if freq == 0 {
        return 0;
    }
    (u128::from(ticks) * 1_000_000 / u128::from(freq)) as u64
}

/// After waking at `now` for `deadline`, with deadlines every `period`
/// ticks: the next deadline still ahead of `now`, and how many deadlines
/// between the two had already passed (missed periods).
pub fn next_deadline(deadline: u64, now: u64, period: u64) -> (u64, u64) {
    let period = period.max(1);
    let next = deadline.saturating_add(period);
    if now < next {
        return (next, 0);
    }
    let missed = (now - deadline) / period;
    (
        deadline.saturating_add(period.saturating_mul(missed + 1)),
        missed,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_window_reports_zero() {
        let w = Window::new();
        assert_eq!((w.samples, w.max_us(), w.percentile_us(99)), (0, 0, 0));
    }

    #[test]
    fn p99_is_the_value_99_percent_of_wake_ups_stay_within() {
        let mut w = Window::new();
        for _ in 0..990 {
            w.record(3);
        }
        for late in 0..10 {
            w.record(100 + late);
        }
        assert_eq!(w.samples, 1000);
        assert_eq!(w.max_us(), 109);
        assert_eq!(w.percentile_us(99), 3, "990 of 1000 at 3 us");
        assert_eq!(w.percentile_us(100), 109);
        w.record(500);
        // 991 of 1001 is just under 99%: the answer moves to the next sample.
        assert_eq!(w.percentile_us(99), 100);
        assert_eq!(w.percentile_us(0), 3, "the smallest sample");
    }

    #[test]
    fn wake_ups_beyond_the_histogram_report_the_maximum() {
        let mut w = Window::new();
        w.record(5);
        w.record(1_000_000);
        assert_eq!(w.percentile_us(99), 1_000_000);
        assert_eq!(w.max_us(), 1_000_000);
        w.record(u64::MAX);
        assert_eq!(w.max_us(), u64::MAX);
        w.clear();
        assert_eq!((w.samples, w.max_us(), w.percentile_us(50)), (0, 0, 0));
    }

    #[test]
    fn ticks_become_whole_microseconds() {
        assert_eq!(ticks_to_us(62_500, 62_500_000), 1000);
        assert_eq!(ticks_to_us(62, 62_500_000), 0);
        assert_eq!(ticks_to_us(63, 62_500_000), 1);
        // The product is taken in 128 bits: a large count does not overflow.
        assert_eq!(ticks_to_us(u64::MAX, 1_000_000), u64::MAX);
        assert_eq!(ticks_to_us(5, 0), 0);
    }

    #[test]
    fn deadlines_stay_on_the_grid() {
        assert_eq!(next_deadline(1000, 1000, 100), (1100, 0), "on time");
        assert_eq!(next_deadline(1000, 1099, 100), (1100, 0), "late, in time");
        assert_eq!(
            next_deadline(1000, 1100, 100),
            (1200, 1),
            "the next one passed"
        );
        assert_eq!(next_deadline(1000, 1350, 100), (1400, 3));
        assert_eq!(next_deadline(0, 5, 0), (6, 5), "a zero period counts as 1");
        assert_eq!(next_deadline(u64::MAX - 1, u64::MAX, 10), (u64::MAX, 0));
    }
}
