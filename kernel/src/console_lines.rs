//! Guest console output on the one shared UART: whole lines with a domain
//! prefix, except for the domain that has the keyboard.
//!
//! The one idea: every domain's output is buffered until its newline and
//! printed as `(<domain>) <line>`, so lines from different domains never
//! interleave mid-line. The focused domain (the one keyboard input goes
//! to) is interactive: its partial line (a shell prompt, the echo of what
//! is being typed) is shown at once, and the terminal line stays *open*
//! for it, so later bytes continue it. Anything else that prints first
//! closes the open line with a newline; the owner's next output then
//! starts a fresh prefixed line repeating the whole partial line, so no
//! byte is lost and no line mixes two sources.
//!
//! Guests cannot drive the operator's terminal: escape sequences (ESC and
//! CSI sequences, such as a shell's cursor queries and colours) are
//! dropped, other control bytes are shown as '.', and a backspace takes
//! the last byte off the line (and off the screen, if it is shown).

/// Where console bytes go (the UART; a buffer in tests).
pub trait Sink {
    fn write(&mut self, bytes: &[u8]);
}

/// Longest line kept; longer lines are split.
pub const LINE_MAX: usize = 256;

/// Bytes a domain may write while the terminal is busy before the rest is
/// dropped (`LineBuffer::stash`): a few lines.
pub const STASH_MAX: usize = 1024;

/// Which domain owns the terminal's open (unterminated) line, and how many
/// bytes of its partial line are already shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Terminal {
    open: Option<(usize, usize)>,
}

impl Terminal {
    pub const fn new() -> Self {
        Terminal { open: None }
    }

    /// Before a line from another source (a kernel log line): close the
    /// open line, if any.
    pub fn close(&mut self, sink: &mut impl Sink) {
        if self.open.take().is_some() {
            sink.write(b"\n");
        }
    }

    /// What of `line` (domain `di`'s) is already shown on the open line.
    fn shown(&self, di: usize, line: &[u8]) -> Option<usize> {
        match self.open {
            Some((owner, n)) if owner == di && n <= line.len() => Some(n),
            _ => None,
        }
    }

    /// Write the part of `line` not yet shown, with the prefix if the line
    /// is not already open for `di`.
    fn show(&mut self, sink: &mut impl Sink, di: usize, name: &str, line: &[u8]) {
        match self.shown(di, line) {
            Some(n) => sink.write(line.get(n..).unwrap_or(&[])),
            None => {
                self.close(sink);
                sink.write(b"(");
                sink.write(name.as_bytes());
                sink.write(b") ");
                sink.write(line);
            }
        }
    }

    /// Domain `di`'s completed line.
    pub fn line(&mut self, sink: &mut impl Sink, di: usize, name: &str, line: &[u8]) {
        self.show(sink, di, name, line);
        sink.write(b"\n");
        self.open = None;
    }

    /// Domain `di`'s partial line lost its last bytes and is now `len`
    /// long: take them off the screen if they are on the open line.
    fn erase_to(&mut self, sink: &mut impl Sink, di: usize, len: usize) {
        if let Some((owner, n)) = self.open.as_mut() {
            if *owner == di {
                while *n > len {
                    sink.write(b"\x08 \x08");
                    *n -= 1;
                }
            }
        }
    }

    /// Domain `di`'s partial line, shown now (the interactive domain).
    pub fn partial(&mut self, sink: &mut impl Sink, di: usize, name: &str, line: &[u8]) {
        if line.is_empty() {
            return;
        }
        self.show(sink, di, name, line);
        self.open = Some((di, line.len()));
    }
}

/// Where a byte stream is in an escape sequence.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Started,
    /// After ESC '[': parameters until a final byte (0x40..=0x7e).
    Csi,
}

/// A domain's partial console line, and what it wrote while the terminal
/// was busy.
///
/// Why the stash: a domain's console write must never wait for another
/// pCPU's use of the terminal. A partition pinned to its own pCPU (a
/// control loop) would otherwise be delayed by whatever another partition
/// prints: an interference channel between partitions. So a writer that
/// finds the terminal busy stashes its bytes and goes on; they are printed,
/// in order, before its next bytes or when the terminal's holder drains
/// the stashes on its way out.
pub struct LineBuffer {
    buf: heapless::Vec<u8, LINE_MAX>,
    escape: Escape,
    stash: heapless::Vec<u8, STASH_MAX>,
    /// Bytes that did not fit in the stash, since it was last printed.
    dropped: usize,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    pub const fn new() -> Self {
        Self {
            buf: heapless::Vec::new(),
            escape: Escape::None,
            stash: heapless::Vec::new(),
            dropped: 0,
        }
    }

    /// Keep `bytes` to print later (the terminal is busy); what does not
    /// fit is counted and said when the stash is printed.
    pub fn stash(&mut self, bytes: &[u8]) {
        let room = STASH_MAX - self.stash.len();
        let (kept, lost) = bytes.split_at(bytes.len().min(room));
        let _ = self.stash.extend_from_slice(kept);
        self.dropped = self.dropped.saturating_add(lost.len());
    }

    /// Whether bytes wait in the stash.
    pub fn has_stash(&self) -> bool {
        !self.stash.is_empty() || self.dropped != 0
    }

    /// Append domain `di`'s bytes, printing every completed (or overlong)
    /// line; with `interactive`, also what is left of the line.
    pub fn push(
        &mut self,
        term: &mut Terminal,
        sink: &mut impl Sink,
        di: usize,
        name: &str,
        bytes: &[u8],
        interactive: bool,
    ) {
        if self.has_stash() {
            let stash = core::mem::take(&mut self.stash);
            self.feed(term, sink, di, name, &stash);
            let dropped = core::mem::take(&mut self.dropped);
            if dropped != 0 {
                // Said on a line of its own, after the partial line.
                if !self.buf.is_empty() {
                    term.line(sink, di, name, &self.buf);
                    self.buf.clear();
                }
                let mut note = heapless::String::<64>::new();
                let _ = core::fmt::write(
                    &mut note,
                    format_args!("[{dropped} bytes of console output dropped]"),
                );
                term.line(sink, di, name, note.as_bytes());
            }
        }
        self.feed(term, sink, di, name, bytes);
        if interactive {
            term.partial(sink, di, name, &self.buf);
        }
    }

    /// Append `bytes`, printing every completed (or overlong) line.
    fn feed(
        &mut self,
        term: &mut Terminal,
        sink: &mut impl Sink,
        di: usize,
        name: &str,
        bytes: &[u8],
    ) {
        for &b in bytes {
            match (self.escape, b) {
                (Escape::None, 0x1b) => {
                    self.escape = Escape::Started;
                    continue;
                }
                (Escape::Started, b'[') => {
                    self.escape = Escape::Csi;
                    continue;
                }
                (Escape::Started, _) => {
                    self.escape = Escape::None;
                    continue;
                }
                (Escape::Csi, 0x40..=0x7e) => {
                    self.escape = Escape::None;
                    continue;
                }
                (Escape::Csi, _) => continue,
                (Escape::None, _) => {}
            }
            if b == 0x08 {
                if self.buf.pop().is_some() {
                    term.erase_to(sink, di, self.buf.len());
                }
                continue;
            }
            if b == b'\n' {
                term.line(sink, di, name, &self.buf);
                self.buf.clear();
                continue;
            }
            if b == b'\r' {
                continue;
            }
            // Non-printable bytes are shown as '.', so a guest cannot send
            // terminal escape sequences to the operator's console.
            let b = if b == b'\t' || (0x20..0x7f).contains(&b) {
                b
            } else {
                b'.'
            };
            if self.buf.push(b).is_err() {
                term.line(sink, di, name, &self.buf);
                self.buf.clear();
                let _ = self.buf.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Screen(Vec<u8>);
    impl Sink for Screen {
        fn write(&mut self, bytes: &[u8]) {
            self.0.extend_from_slice(bytes);
        }
    }
    impl Screen {
        fn text(&self) -> String {
            String::from_utf8(self.0.clone()).unwrap()
        }
    }

    #[test]
    fn background_domains_print_whole_prefixed_lines() {
        let (mut t, mut s) = (Terminal::new(), Screen::default());
        let (mut a, mut b) = (LineBuffer::new(), LineBuffer::new());
        a.push(&mut t, &mut s, 1, "a", b"hel", false);
        b.push(&mut t, &mut s, 2, "b", b"wor", false);
        assert_eq!(s.text(), "");
        a.push(&mut t, &mut s, 1, "a", b"lo\r\n", false);
        b.push(&mut t, &mut s, 2, "b", b"ld\n", false);
        assert_eq!(s.text(), "(a) hello\n(b) world\n");
    }

    #[test]
    fn the_interactive_domain_shows_its_prompt_and_echo_at_once() {
        let (mut t, mut s) = (Terminal::new(), Screen::default());
        let mut a = LineBuffer::new();
        a.push(&mut t, &mut s, 1, "a", b"~ # ", true);
        assert_eq!(s.text(), "(a) ~ # ");
        a.push(&mut t, &mut s, 1, "a", b"l", true);
        a.push(&mut t, &mut s, 1, "a", b"s\r\n", true);
        assert_eq!(s.text(), "(a) ~ # ls\n");
        a.push(&mut t, &mut s, 1, "a", b"bin\n~ # ", true);
        assert_eq!(s.text(), "(a) ~ # ls\n(a) bin\n(a) ~ # ");
    }

    #[test]
    fn other_output_closes_the_open_line_and_the_owner_repeats_it() {
        let (mut t, mut s) = (Terminal::new(), Screen::default());
        let (mut a, mut b) = (LineBuffer::new(), LineBuffer::new());
        a.push(&mut t, &mut s, 1, "a", b"~ # ", true);
        b.push(&mut t, &mut s, 2, "b", b"tick\n", false);
        t.close(&mut s); // a kernel line would follow; nothing is open now
        a.push(&mut t, &mut s, 1, "a", b"x", true);
        assert_eq!(s.text(), "(a) ~ # \n(b) tick\n(a) ~ # x");
        a.push(&mut t, &mut s, 1, "a", b"\n", true);
        assert_eq!(s.text(), "(a) ~ # \n(b) tick\n(a) ~ # x\n");
    }

    #[test]
    fn stashed_bytes_print_in_order_before_the_next_ones() {
        let (mut t, mut s) = (Terminal::new(), Screen::default());
        let mut a = LineBuffer::new();
        a.push(&mut t, &mut s, 1, "a", b"one ", false);
        a.stash(b"two\nthr");
        assert!(a.has_stash());
        assert_eq!(s.text(), "");
        a.push(&mut t, &mut s, 1, "a", b"ee\n", false);
        assert_eq!(s.text(), "(a) one two\n(a) three\n");
        assert!(!a.has_stash());
        // Draining alone (no new bytes) prints the stash too.
        a.stash(b"four\n");
        a.push(&mut t, &mut s, 1, "a", b"", false);
        assert_eq!(s.text(), "(a) one two\n(a) three\n(a) four\n");
    }

    #[test]
    fn a_full_stash_drops_the_rest_and_says_how_much() {
        let (mut t, mut s) = (Terminal::new(), Screen::default());
        let mut a = LineBuffer::new();
        let line = [b'y'; 99];
        for _ in 0..(STASH_MAX / 100 + 1) {
            a.stash(&line);
            a.stash(b"\n");
        }
        let kept = STASH_MAX;
        let written = (STASH_MAX / 100 + 1) * 100;
        a.stash(b"partial");
        a.push(&mut t, &mut s, 1, "a", b"", false);
        let text = s.text();
        assert!(
            text.ends_with(&format!(
                "[{} bytes of console output dropped]\n",
                written + 7 - kept
            )),
            "{text}"
        );
        assert!(!a.has_stash());
    }

    #[test]
    fn overlong_lines_are_split_and_control_bytes_are_neutralised() {
        let (mut t, mut s) = (Terminal::new(), Screen::default());
        let mut a = LineBuffer::new();
        let long = vec![b'x'; LINE_MAX + 3];
        a.push(&mut t, &mut s, 1, "a", &long, false);
        a.push(&mut t, &mut s, 1, "a", b"\x1b[2J\x07\x00\n", false);
        let want = format!("(a) {}\n(a) xxx..\n", "x".repeat(LINE_MAX));
        assert_eq!(s.text(), want);
    }

    #[test]
    fn escape_sequences_are_dropped_and_backspace_erases() {
        let (mut t, mut s) = (Terminal::new(), Screen::default());
        let mut a = LineBuffer::new();
        a.push(&mut t, &mut s, 1, "a", b"/ # \x1b[6n", true);
        assert_eq!(s.text(), "(a) / # ");
        // Typed and rubbed out within one write: never shown at all.
        a.push(&mut t, &mut s, 1, "a", b"lq\x08", true);
        assert_eq!(s.text(), "(a) / # l");
        // Shown, then rubbed out: erased on the screen.
        a.push(&mut t, &mut s, 1, "a", b"x", true);
        a.push(&mut t, &mut s, 1, "a", b"\x08", true);
        assert_eq!(s.text(), "(a) / # lx\x08 \x08");
        // A sequence split across writes, and a colour around a word.
        a.push(&mut t, &mut s, 1, "a", b"s\x1b[1;", false);
        a.push(&mut t, &mut s, 1, "a", b"34mbin\x1b[0m\n", false);
        assert_eq!(s.text(), "(a) / # lx\x08 \x08sbin\n");
        // Backspace on an empty line, and a background domain's backspace.
        let mut b = LineBuffer::new();
        b.push(&mut t, &mut s, 2, "b", b"\x08ab\x08c\n", false);
        assert!(s.text().ends_with("(b) ac\n"));
    }

    #[test]
    fn losing_the_focus_keeps_the_partial_line_for_later() {
        let (mut t, mut s) = (Terminal::new(), Screen::default());
        let mut a = LineBuffer::new();
        a.push(&mut t, &mut s, 1, "a", b"~ # ", true);
        t.close(&mut s);
        a.push(&mut t, &mut s, 1, "a", b"done\n", false);
        assert_eq!(s.text(), "(a) ~ # \n(a) ~ # done\n");
    }
}
