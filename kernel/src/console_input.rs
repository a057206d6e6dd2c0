//! Keyboard input on the kernel's console UART, handed out as it arrives.
//!
//! The one idea: each byte goes, when the receive interrupt takes it, to
//! the domain that has the focus at that moment, into that domain's own
//! bounded queue (Xen hands serial input to the focused console the same
//! way). So Ctrl-T never gives what was typed at one domain to another,
//! and a domain that does not read its input (its device model is not
//! running yet, say) cannot hold the keyboard: its queue fills, later
//! bytes for it are dropped and counted, and Ctrl-T still moves the
//! focus. Nothing here blocks or allocates; a full queue drops the
//! newest bytes, never older ones, so what a device model reads is
//! always a prefix of what was typed.

use heapless::Deque;

/// Ctrl-T: moves the focus to the next domain with an emulated UART.
pub const FOCUS_KEY: u8 = 0x14;

/// Bytes typed at one domain that wait for its device model: a pasted
/// line or two, far more than anyone types between two reads.
pub const QUEUE_BYTES: usize = 256;

/// A set of domain indices (below 64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainSet(u64);

impl DomainSet {
    fn insert(&mut self, di: usize) {
        if di < 64 {
            self.0 |= 1 << di;
        }
    }

    pub fn contains(&self, di: usize) -> bool {
        di < 64 && self.0 & (1 << di) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The members, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |&di| self.contains(di))
    }
}

/// One domain's unread input.
struct Queue {
    bytes: Deque<u8, QUEUE_BYTES>,
    /// Bytes dropped because the queue was full, since boot.
    dropped: u64,
    /// Dropping since the domain last read: reported once, not per byte.
    overflowing: bool,
}

impl Queue {
    const fn new() -> Self {
        Queue {
            bytes: Deque::new(),
            dropped: 0,
            overflowing: false,
        }
    }
}

/// What one batch of received bytes did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Domains that have new bytes to read: their device models are told.
    pub fed: DomainSet,
    /// Domains whose queue was full and that started dropping input in
    /// this batch (it had room since it last dropped).
    pub overflowed: DomainSet,
    /// The focus key moved the focus (to `Keyboard::focus`).
    pub focus_moved: bool,
    /// Bytes typed while no domain had the focus: dropped.
    pub unowned: usize,
}

/// The focus and every domain's queue, for `D` domain slots (at most 64).
pub struct Keyboard<const D: usize> {
    focus: Option<usize>,
    queues: [Queue; D],
}

impl<const D: usize> Default for Keyboard<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const D: usize> Keyboard<D> {
    const FITS: () = assert!(D <= 64, "DomainSet holds 64 domains");

    pub const fn new() -> Self {
        let () = Self::FITS;
        Keyboard {
            focus: None,
            queues: [const { Queue::new() }; D],
        }
    }

    /// The domain that typed bytes go to.
    pub fn focus(&self) -> Option<usize> {
        self.focus
    }

    /// Give the keyboard to `di` (`None`: to nobody); an index beyond the
    /// slots counts as nobody.
    pub fn set_focus(&mut self, di: Option<usize>) {
        self.focus = di.filter(|&i| i < D);
    }

    /// Hand out `bytes`, as the UART received them. The focus key is not
    /// input: it moves the focus to `next(current)`, and the bytes after
    /// it go to the new owner.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        mut next: impl FnMut(Option<usize>) -> Option<usize>,
    ) -> Received {
        let mut out = Received::default();
        for &b in bytes {
            if b == FOCUS_KEY {
                let to = next(self.focus);
                self.set_focus(to);
                out.focus_moved = true;
                continue;
            }
            let Some(di) = self.focus else {
                out.unowned += 1;
                continue;
            };
            let Some(q) = self.queues.get_mut(di) else {
                out.unowned += 1;
                continue;
            };
            if q.bytes.push_back(b).is_ok() {
                out.fed.insert(di);
            } else {
                q.dropped = q.dropped.saturating_add(1);
                if !q.overflowing {
                    q.overflowing = true;
                    out.overflowed.insert(di);
                }
            }
        }
        out
    }

    /// Copy domain `di`'s oldest unread bytes into `out`, leaving them
    /// queued; how many. With `consume` this lets a reader check where the
    /// bytes go before it takes them.
    pub fn peek(&self, di: usize, out: &mut [u8]) -> usize {
        let Some(q) = self.queues.get(di) else {
            return 0;
        };
        let mut n = 0;
        for (slot, &b) in out.iter_mut().zip(q.bytes.iter()) {
            *slot = b;
            n += 1;
        }
        n
    }

    /// Drop domain `di`'s `n` oldest unread bytes (what `peek` returned;
    /// bytes received since are behind them and stay).
    pub fn consume(&mut self, di: usize, n: usize) {
        let Some(q) = self.queues.get_mut(di) else {
            return;
        };
        for _ in 0..n {
            if q.bytes.pop_front().is_none() {
                break;
            }
        }
        if n > 0 {
            q.overflowing = false;
        }
    }

    /// Move domain `di`'s oldest unread bytes into `out`; how many.
    pub fn read(&mut self, di: usize, out: &mut [u8]) -> usize {
        let n = self.peek(di, out);
        self.consume(di, n);
        n
    }

    /// Unread bytes for domain `di`.
    pub fn pending(&self, di: usize) -> usize {
        self.queues.get(di).map_or(0, |q| q.bytes.len())
    }

    /// Bytes for domain `di` dropped because its queue was full.
    pub fn dropped(&self, di: usize) -> u64 {
        self.queues.get(di).map_or(0, |q| q.dropped)
    }

    /// Slot `di` now holds another domain: what was typed at the old one
    /// is not for it.
    pub fn forget(&mut self, di: usize) {
        if let Some(q) = self.queues.get_mut(di) {
            *q = Queue::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Domains 0 and 2 have a UART; 1 and 3 do not.
    fn next_uart(cur: Option<usize>) -> Option<usize> {
        match cur {
            Some(0) => Some(2),
            _ => Some(0),
        }
    }

    fn read_all(k: &mut Keyboard<4>, di: usize) -> Vec<u8> {
        let mut buf = [0u8; 1024];
        let n = k.read(di, &mut buf);
        buf[..n].to_vec()
    }

    #[test]
    fn bytes_go_to_the_focus_and_are_read_in_order() {
        let mut k = Keyboard::<4>::new();
        k.set_focus(Some(0));
        let r = k.receive(b"ls\r", next_uart);
        assert!(r.fed.contains(0));
        assert_eq!(r.fed.iter().collect::<Vec<_>>(), vec![0]);
        assert!(!r.focus_moved);
        assert_eq!(k.pending(0), 3);
        let mut two = [0u8; 2];
        assert_eq!(k.read(0, &mut two), 2);
        assert_eq!(&two, b"ls");
        assert_eq!(read_all(&mut k, 0), b"\r");
        assert_eq!(read_all(&mut k, 0), b"");
    }

    #[test]
    fn the_focus_key_splits_a_batch_between_owners() {
        let mut k = Keyboard::<4>::new();
        k.set_focus(Some(0));
        let r = k.receive(b"ab\x14cd", next_uart);
        assert!(r.focus_moved);
        assert_eq!(k.focus(), Some(2));
        assert_eq!(r.fed.iter().collect::<Vec<_>>(), vec![0, 2]);
        // What was typed at 0 stays 0's, even after it lost the focus.
        assert_eq!(read_all(&mut k, 2), b"cd");
        assert_eq!(read_all(&mut k, 0), b"ab");
        // The key itself is never input; a second press goes back.
        let r = k.receive(b"\x14", next_uart);
        assert!(r.focus_moved && r.fed.is_empty());
        assert_eq!(k.focus(), Some(0));
    }

    #[test]
    fn a_full_queue_drops_the_newest_bytes_and_reports_once() {
        let mut k = Keyboard::<4>::new();
        k.set_focus(Some(2));
        let typed: Vec<u8> = (0..QUEUE_BYTES + 10)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let r = k.receive(&typed, next_uart);
        assert!(r.fed.contains(2) && r.overflowed.contains(2));
        assert_eq!(k.dropped(2), 10);
        assert_eq!(k.pending(2), QUEUE_BYTES);
        // Still full: counted again, but not reported again.
        let r = k.receive(b"xyz", next_uart);
        assert!(r.fed.is_empty() && r.overflowed.is_empty());
        assert_eq!(k.dropped(2), 13);
        // The oldest bytes survive: a prefix of what was typed.
        assert_eq!(read_all(&mut k, 2), typed[..QUEUE_BYTES].to_vec());
        // Once read, it has room and would report a new overflow.
        let r = k.receive(b"q", next_uart);
        assert!(r.fed.contains(2) && r.overflowed.is_empty());
        assert_eq!(read_all(&mut k, 2), b"q");
    }

    #[test]
    fn a_domain_that_never_reads_does_not_keep_the_keyboard() {
        let mut k = Keyboard::<4>::new();
        k.set_focus(Some(0));
        let flood = vec![b'x'; QUEUE_BYTES * 2];
        k.receive(&flood, next_uart);
        let r = k.receive(b"\x14hi", next_uart);
        assert!(r.focus_moved);
        assert_eq!(read_all(&mut k, 2), b"hi");
    }

    #[test]
    fn no_focus_drops_input_but_the_focus_key_still_works() {
        let mut k = Keyboard::<4>::new();
        let r = k.receive(b"abc", next_uart);
        assert_eq!(r.unowned, 3);
        assert!(r.fed.is_empty());
        // No domain with a UART at all: the key leaves nobody focused.
        let r = k.receive(b"\x14d", |_| None);
        assert!(r.focus_moved);
        assert_eq!((k.focus(), r.unowned), (None, 1));
        k.set_focus(Some(7)); // beyond the slots: nobody
        assert_eq!(k.focus(), None);
    }

    #[test]
    fn peek_then_consume_keeps_bytes_that_arrived_between() {
        let mut k = Keyboard::<4>::new();
        k.set_focus(Some(0));
        k.receive(b"abc", next_uart);
        let mut buf = [0u8; 8];
        assert_eq!(k.peek(0, &mut buf), 3);
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(k.pending(0), 3, "a peek takes nothing");
        k.receive(b"de", next_uart);
        k.consume(0, 3);
        assert_eq!(read_all(&mut k, 0), b"de");
        k.consume(0, 5); // more than there is: nothing breaks
        k.consume(9, 1);
        assert_eq!(k.peek(9, &mut buf), 0);
    }

    #[test]
    fn a_reused_slot_starts_with_no_input() {
        let mut k = Keyboard::<4>::new();
        k.set_focus(Some(0));
        k.receive(b"old", next_uart);
        k.forget(0);
        assert_eq!(k.pending(0), 0);
        assert_eq!(read_all(&mut k, 0), b"");
        assert_eq!(read_all(&mut k, 9), b"");
        assert_eq!(k.dropped(9), 0);
    }

    #[test]
    fn domain_sets_ignore_indices_beyond_64() {
        let mut s = DomainSet::default();
        s.insert(64);
        s.insert(63);
        assert!(!s.contains(64) && s.contains(63));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![63]);
    }
}
