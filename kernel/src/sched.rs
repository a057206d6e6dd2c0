//! Per-pCPU round-robin scheduling.
//!
//! vCPUs are placed on pCPUs once, at domain build time (`placement`: a
//! pinned domain on the pCPUs it owns, the others spread over the rest).
//! Each pCPU then only ever runs its own vCPUs, so a vCPU's register state
//! is touched by one pCPU alone and no lock guards it. Time-slicing is round
//! robin among the runnable ones.

/// Most vCPUs one pCPU can host.
pub const MAX_VCPUS_PER_PCPU: usize = 32;

/// The vCPUs of one pCPU, by global vCPU index, and whose turn it is.
pub struct RunQueue {
    vcpus: heapless::Vec<usize, MAX_VCPUS_PER_PCPU>,
    /// Position in `vcpus` of the vCPU that ran last.
    cursor: usize,
}

impl RunQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        Self {
            vcpus: heapless::Vec::new(),
            cursor: 0,
        }
    }

    /// Add a vCPU; `Err` when the pCPU is full.
    pub fn add(&mut self, vcpu: usize) -> Result<(), usize> {
        self.vcpus.push(vcpu)
    }

    /// Take a vCPU out (its domain is gone); `false` if it is not here. The
    /// round robin goes on with the vCPU that followed it.
    pub fn remove(&mut self, vcpu: usize) -> bool {
        let Some(pos) = self.vcpus.iter().position(|&v| v == vcpu) else {
            return false;
        };
        self.vcpus.remove(pos);
        let n = self.vcpus.len();
        self.cursor = if n == 0 {
            0
        } else if pos <= self.cursor {
            // The one after the removed vCPU (or after the cursor) is next.
            (self.cursor + n - 1) % n
        } else {
            self.cursor.min(n - 1)
        };
        true
    }

    /// How many vCPUs live here.
    pub fn len(&self) -> usize {
        self.vcpus.len()
    }

    /// Whether no vCPU lives here.
    pub fn is_empty(&self) -> bool {
        self.vcpus.is_empty()
    }

    /// The vCPUs that live here.
    pub fn vcpus(&self) -> &[usize] {
        &self.vcpus
    }

    /// The next runnable vCPU after the one that ran last, wrapping around
    /// and ending with the last one itself; `None` if none can run.
    pub fn pick_next(&mut self, runnable: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.vcpus.len();
        for step in 1..=n {
            let pos = (self.cursor + step) % n;
            if let Some(&v) = self.vcpus.get(pos) {
                if runnable(v) {
                    self.cursor = pos;
                    return Some(v);
                }
            }
        }
        None
    }
}

impl Default for RunQueue {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_skips_blocked_and_wraps() {
        let mut q = RunQueue::new();
        for v in [10, 11, 12] {
            q.add(v).unwrap();
        }
        let all = |_| true;
        assert_eq!(q.pick_next(all), Some(11));
        assert_eq!(q.pick_next(all), Some(12));
        assert_eq!(q.pick_next(all), Some(10));
        assert_eq!(q.pick_next(|v| v != 11), Some(12));
        assert_eq!(
            q.pick_next(|v| v == 12),
            Some(12),
            "the only runnable vCPU keeps running"
        );
        assert_eq!(q.pick_next(|_| false), None);
    }

    #[test]
    fn removal_keeps_the_turn_order() {
        let mut q = RunQueue::new();
        for v in [10, 11, 12, 13] {
            q.add(v).unwrap();
        }
        let all = |_| true;
        assert_eq!(q.pick_next(all), Some(11));
        assert!(q.remove(11), "the one that ran last");
        assert_eq!(q.pick_next(all), Some(12), "its successor is next");
        assert!(q.remove(10), "one before the cursor");
        assert_eq!(q.pick_next(all), Some(13));
        assert!(q.remove(12), "before the cursor again (13 ran last)");
        assert_eq!(q.vcpus(), [13]);
        assert_eq!(q.pick_next(all), Some(13));
        assert!(!q.remove(99), "not here");
        assert!(q.remove(13));
        assert!(q.is_empty());
        assert_eq!(q.pick_next(all), None);
        q.add(20).unwrap();
        assert_eq!(q.pick_next(all), Some(20));
    }

    #[test]
    fn full_queue_is_an_error() {
        let mut q = RunQueue::new();
        for v in 0..MAX_VCPUS_PER_PCPU {
            q.add(v).unwrap();
        }
        assert_eq!(q.add(99), Err(99));
        let mut empty = RunQueue::new();
        assert_eq!(empty.pick_next(|_| true), None);
    }
}
