//! One QEMU instance and its serial console.
//!
//! Two reader threads (stdout = the serial console, stderr = QEMU's own
//! complaints) feed timestamped lines into a channel; the test thread pulls
//! them on demand, so every wait has a deadline and nothing polls. The
//! console's unfinished last line (a prompt waiting for input) is sent
//! too, each time it grows, for `expect_partial`.

use regex::Regex;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-aarch64";
/// The machine every Tessera image boots on.
pub const TESSERA_MACHINE: &str = "virt,virtualization=on,gic-version=3";
/// How many trailing lines a failure message quotes.
const TAIL_LINES: usize = 40;

/// Escapes `text` so it matches literally inside a pattern.
pub fn lit(text: &str) -> String {
    regex::escape(text)
}

/// A failed expectation, with the console tail for context.
#[derive(Debug)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// A failure with a plain message.
    pub fn new(message: impl Into<String>) -> Self {
        Failure(message.into())
    }
}

/// One console line and when it arrived, relative to QEMU's start.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Duration,
    pub text: String,
    /// True for QEMU's own stderr rather than the guest-visible console.
    pub from_stderr: bool,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = if self.from_stderr {
            " qemu-stderr:"
        } else {
            ""
        };
        write!(f, "[{:8.3}]{source} {}", self.at.as_secs_f64(), self.text)
    }
}

/// How to start QEMU.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The emulator; [`QEMU`] except in the harness's own tests.
    pub program: PathBuf,
    pub kernel: PathBuf,
    pub machine: String,
    pub cpu: String,
    pub smp: u32,
    pub memory: String,
    /// Extra arguments, appended last.
    pub extra: Vec<String>,
    /// Where to copy the console log, if anywhere.
    pub log: Option<PathBuf>,
    /// Hard limit for the whole run: every wait ends by then.
    pub deadline: Duration,
}

impl QemuConfig {
    /// Tessera's standard board: virt with EL2 and GICv3, Cortex-A72, 1 GiB.
    pub fn tessera(image: impl Into<PathBuf>) -> Self {
        QemuConfig {
            program: QEMU.into(),
            kernel: image.into(),
            machine: TESSERA_MACHINE.into(),
            cpu: "cortex-a72".into(),
            smp: 2,
            memory: "1G".into(),
            extra: Vec::new(),
            log: None,
            deadline: Duration::from_secs(60),
        }
    }

    pub fn smp(mut self, smp: u32) -> Self {
        self.smp = smp;
        self
    }

    pub fn cpu(mut self, cpu: &str) -> Self {
        self.cpu = cpu.into();
        self
    }

    pub fn machine(mut self, machine: &str) -> Self {
        self.machine = machine.into();
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The full command line.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(["-machine", &self.machine, "-cpu", &self.cpu])
            .args(["-smp", &self.smp.to_string(), "-m", &self.memory])
            .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
            .arg("-kernel")
            .arg(&self.kernel)
            .args(&self.extra);
        command
    }
}

enum Event {
    Line(Line),
    /// The stream's unfinished line, as it stands now.
    Partial(Line),
    Closed,
}

/// A running QEMU; killed when dropped.
pub struct Qemu {
    child: Child,
    events: Receiver<Event>,
    lines: Vec<Line>,
    /// The console's unfinished last line, if it has one.
    partial: Option<Line>,
    cursor: usize,
    open_streams: usize,
    forbidden: Vec<(Regex, String)>,
    started: Instant,
    deadline: Instant,
    log: Option<File>,
    command: String,
}

fn compile(pattern: &str) -> Result<Regex, Failure> {
    Regex::new(pattern).map_err(|e| Failure(format!("bad pattern /{pattern}/: {e}")))
}

fn forward<R: Read + Send + 'static>(
    stream: R,
    from_stderr: bool,
    started: Instant,
    events: Sender<Event>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        let text = |raw: &[u8]| {
            // Serial output is bytes, not guaranteed UTF-8; keep going.
            String::from_utf8_lossy(raw)
                .trim_end_matches(['\r', '\n'])
                .to_owned()
        };
        loop {
            let (taken, complete) = match reader.fill_buf() {
                Ok([]) | Err(_) => break,
                Ok(chunk) => match chunk.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        raw.extend_from_slice(&chunk[..=end]);
                        (end + 1, true)
                    }
                    None => {
                        raw.extend_from_slice(chunk);
                        (chunk.len(), false)
                    }
                },
            };
            reader.consume(taken);
            let line = Line {
                at: started.elapsed(),
                text: text(&raw),
                from_stderr,
            };
            let event = if complete {
                raw.clear();
                Event::Line(line)
            } else {
                Event::Partial(line)
            };
            if events.send(event).is_err() {
                return;
            }
        }
        // The stream ended mid-line: that is its last line.
        if !raw.is_empty() {
            let line = Line {
                at: started.elapsed(),
                text: text(&raw),
                from_stderr,
            };
            let _ = events.send(Event::Line(line));
        }
        let _ = events.send(Event::Closed);
    });
}

impl Qemu {
    /// Starts QEMU. Every line containing "panic" fails the run.
    pub fn spawn(config: &QemuConfig) -> Result<Qemu, Failure> {
        if !config.kernel.is_file() {
            return Err(Failure(format!(
                "image {} does not exist; build it with `cargo xtask build`",
                config.kernel.display()
            )));
        }
        let mut command = config.command();
        let described = describe(&command);
        let started = Instant::now();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure(format!("cannot start `{described}`: {e}")))?;
        let (sender, events) = channel();
        if let Some(stdout) = child.stdout.take() {
            forward(stdout, false, started, sender.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            forward(stderr, true, started, sender);
        }
        let log = match &config.log {
            Some(path) => {
                if let Some(parent) = path.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let mut file = File::create(path)
                    .map_err(|e| Failure(format!("cannot create log {}: {e}", path.display())))?;
                let _ = writeln!(file, "$ {described}");
                Some(file)
            }
            None => None,
        };
        let mut qemu = Qemu {
            child,
            events,
            lines: Vec::new(),
            partial: None,
            cursor: 0,
            open_streams: 2,
            forbidden: Vec::new(),
            started,
            deadline: started + config.deadline,
            log,
            command: described,
        };
        qemu.forbid("(?i)panic", "a line mentions a panic")?;
        Ok(qemu)
    }

    /// Fails the run as soon as a line matching `pattern` appears (or has
    /// appeared already).
    pub fn forbid(&mut self, pattern: &str, why: &str) -> Result<(), Failure> {
        let regex = compile(pattern)?;
        if let Some(line) = self.lines.iter().find(|l| regex.is_match(&l.text)) {
            return Err(self.failure(&format!("forbidden line ({why}): {line}")));
        }
        self.forbidden.push((regex, why.into()));
        Ok(())
    }

    /// Everything read so far.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The QEMU command line, for messages.
    pub fn command_line(&self) -> &str {
        &self.command
    }

    /// Waits for one new line; `Ok(false)` at the deadline or once QEMU has
    /// closed both streams.
    fn pull(&mut self, until: Instant) -> Result<bool, Failure> {
        loop {
            if self.open_streams == 0 {
                return Ok(false);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(false);
            }
            match self.events.recv_timeout(until - now) {
                Ok(Event::Partial(line)) => {
                    if !line.from_stderr {
                        self.partial = Some(line);
                    }
                    return Ok(true);
                }
                Ok(Event::Line(line)) => {
                    if !line.from_stderr {
                        self.partial = None;
                    }
                    if let Some(log) = &mut self.log {
                        let _ = writeln!(log, "{line}");
                    }
                    let hit = self
                        .forbidden
                        .iter()
                        .find(|(re, _)| re.is_match(&line.text))
                        .map(|(_, why)| why.clone());
                    self.lines.push(line);
                    if let Some(why) = hit {
                        let line = self
                            .lines
                            .last()
                            .map(ToString::to_string)
                            .unwrap_or_default();
                        return Err(self.failure(&format!("forbidden line ({why}): {line}")));
                    }
                    return Ok(true);
                }
                Ok(Event::Closed) => self.open_streams -= 1,
                Err(RecvTimeoutError::Timeout) => return Ok(false),
                Err(RecvTimeoutError::Disconnected) => self.open_streams = 0,
            }
        }
    }

    fn until(&self, timeout: Duration) -> Instant {
        (Instant::now() + timeout).min(self.deadline)
    }

    /// Waits until `found` returns `Some` over the log, pulling lines.
    fn wait_until<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut found: impl FnMut(&[Line]) -> Option<T>,
    ) -> Result<T, Failure> {
        let until = self.until(timeout);
        loop {
            if let Some(value) = found(&self.lines) {
                return Ok(value);
            }
            if !self.pull(until)? {
                if let Some(value) = found(&self.lines) {
                    return Ok(value);
                }
                let why = if self.open_streams == 0 {
                    "QEMU exited".to_string()
                } else {
                    format!(
                        "timed out after {:.1}s",
                        self.started.elapsed().as_secs_f64()
                    )
                };
                return Err(self.failure(&format!("{why} while waiting for {what}")));
            }
        }
    }

    /// Waits for the next line after the cursor matching `pattern` and moves
    /// the cursor past it.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<Line, Failure> {
        let regex = compile(pattern)?;
        let from = self.cursor;
        let index = self.wait_until(timeout, &format!("/{pattern}/"), |lines| {
            lines
                .iter()
                .skip(from)
                .position(|l| !l.from_stderr && regex.is_match(&l.text))
                .map(|i| from + i)
        })?;
        self.cursor = index + 1;
        Ok(self.lines[index].clone())
    }

    /// Waits until every pattern has matched a line after the cursor, in
    /// any order; moves the cursor past the last of them.
    pub fn expect_all(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Line>, Failure> {
        let regexes = patterns
            .iter()
            .map(|p| compile(p))
            .collect::<Result<Vec<_>, _>>()?;
        let from = self.cursor;
        let what = format!(
            "all of {}",
            patterns
                .iter()
                .map(|p| format!("/{p}/"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let indices = self.wait_until(timeout, &what, |lines| {
            regexes
                .iter()
                .map(|re| {
                    lines
                        .iter()
                        .skip(from)
                        .position(|l| !l.from_stderr && re.is_match(&l.text))
                        .map(|i| from + i)
                })
                .collect::<Option<Vec<usize>>>()
        })?;
        self.cursor = indices.iter().max().map_or(self.cursor, |&i| i + 1);
        Ok(indices.iter().map(|&i| self.lines[i].clone()).collect())
    }

    /// Waits for `count` lines after the cursor matching `pattern`; moves the
    /// cursor past the last.
    pub fn expect_count(
        &mut self,
        pattern: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Line>, Failure> {
        let regex = compile(pattern)?;
        let from = self.cursor;
        let indices = self.wait_until(
            timeout,
            &format!("{count} lines matching /{pattern}/"),
            |lines| {
                let hits: Vec<usize> = lines
                    .iter()
                    .enumerate()
                    .skip(from)
                    .filter(|(_, l)| !l.from_stderr && regex.is_match(&l.text))
                    .map(|(i, _)| i)
                    .take(count)
                    .collect();
                (hits.len() == count).then_some(hits)
            },
        )?;
        self.cursor = indices.last().map_or(self.cursor, |&i| i + 1);
        Ok(indices.iter().map(|&i| self.lines[i].clone()).collect())
    }

    /// Waits until the console's unfinished last line (text with no line
    /// end after it yet, such as a prompt) matches `pattern`; returns it.
    /// The cursor does not move: the line, once finished, is still ahead.
    pub fn expect_partial(&mut self, pattern: &str, timeout: Duration) -> Result<Line, Failure> {
        let regex = compile(pattern)?;
        let until = self.until(timeout);
        loop {
            if let Some(line) = self.partial.as_ref().filter(|l| regex.is_match(&l.text)) {
                return Ok(line.clone());
            }
            if !self.pull(until)? {
                let why = if self.open_streams == 0 {
                    "QEMU exited".to_string()
                } else {
                    format!(
                        "timed out after {:.1}s",
                        self.started.elapsed().as_secs_f64()
                    )
                };
                let now = match &self.partial {
                    Some(line) => format!("it is {:?}", line.text),
                    None => "there is none".to_string(),
                };
                return Err(self.failure(&format!(
                    "{why} while waiting for an unfinished line /{pattern}/ ({now})"
                )));
            }
        }
    }

    /// Waits for a line matching `pattern` anywhere in the log, without
    /// moving the cursor.
    pub fn wait_seen(&mut self, pattern: &str, timeout: Duration) -> Result<Line, Failure> {
        let regex = compile(pattern)?;
        let index = self.wait_until(timeout, &format!("/{pattern}/"), |lines| {
            lines
                .iter()
                .position(|l| !l.from_stderr && regex.is_match(&l.text))
        })?;
        Ok(self.lines[index].clone())
    }

    /// Waits for QEMU to exit by itself (the kernel powered the board off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Failure> {
        let until = self.until(timeout);
        while self.pull(until)? {}
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => return Err(self.failure("QEMU did not exit by itself")),
                Err(e) => return Err(self.failure(&format!("cannot wait for QEMU: {e}"))),
            }
        }
    }

    /// Keeps reading for `duration` (to give a forbidden line time to show),
    /// then checks the whole log again.
    pub fn settle(&mut self, duration: Duration) -> Result<(), Failure> {
        let until = self.until(duration);
        while self.pull(until)? {}
        Ok(())
    }

    /// Fails if any line matches `pattern`.
    pub fn assert_absent(&self, pattern: &str, why: &str) -> Result<(), Failure> {
        let regex = compile(pattern)?;
        match self.lines.iter().find(|l| regex.is_match(&l.text)) {
            Some(line) => Err(self.failure(&format!("unexpected line ({why}): {line}"))),
            None => Ok(()),
        }
    }

    /// A failure message with the console tail attached.
    pub fn failure(&self, message: &str) -> Failure {
        let skip = self.lines.len().saturating_sub(TAIL_LINES);
        let mut text = format!(
            "{message}\n  command: {}\n  last {} lines:",
            self.command,
            self.lines.len() - skip
        );
        for line in &self.lines[skip..] {
            text.push_str("\n    ");
            text.push_str(&line.to_string());
        }
        Failure(text)
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        // Kill even if QEMU already exited: harmless, and it reaps the child.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// `true` if `program` is on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| Path::new(&dir).join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    //! The harness against a stand-in emulator: a shell script that ignores
    //! QEMU's arguments and prints a scripted console, so these tests run on
    //! any host, QEMU or not.
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const WAIT: Duration = Duration::from_secs(10);

    fn fake_qemu(script: &str) -> QemuConfig {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("tessera-harness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join(format!("qemu-{}.sh", NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&program, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Any existing file will do as the "image".
        let mut config = QemuConfig::tessera(&program).deadline(WAIT);
        config.program = program;
        config
    }

    fn boot(script: &str) -> Qemu {
        Qemu::spawn(&fake_qemu(script)).unwrap()
    }

    #[test]
    fn expectations_consume_lines_in_order() {
        let mut qemu = boot("echo 'tessera: boot'; echo '(a) one'; echo '(a) two'; echo '(b) one'");
        let line = qemu.expect(r"\(a\) one", WAIT).unwrap();
        assert_eq!(line.text, "(a) one");
        qemu.expect(r"\(b\) one", WAIT).unwrap();
        // `(a) two` came before the cursor: it is not found again.
        assert!(qemu
            .expect(r"\(a\) two", Duration::from_millis(300))
            .is_err());
        // ...but `wait_seen` looks at the whole log.
        qemu.wait_seen(r"\(a\) two", WAIT).unwrap();
    }

    #[test]
    fn expect_all_takes_any_order_and_expect_count_counts() {
        let mut qemu = boot("echo B; echo HB; echo A; echo HB; echo HB; sleep 5");
        let lines = qemu.expect_all(&["^A$", "^B$"], WAIT).unwrap();
        assert_eq!((lines[0].text.as_str(), lines[1].text.as_str()), ("A", "B"));
        // The cursor is past A, so only two HBs remain.
        assert!(qemu
            .expect_count("^HB$", 3, Duration::from_millis(500))
            .is_err());
        assert_eq!(qemu.lines().len(), 5);
    }

    #[test]
    fn a_panic_line_fails_the_wait() {
        let mut qemu = boot("echo 'tessera: kernel panicked at foo.rs:1'; echo done; sleep 5");
        let failure = qemu.expect("^done$", WAIT).unwrap_err();
        assert!(failure.0.contains("panic"), "{failure}");
    }

    #[test]
    fn forbidden_lines_fail_even_if_already_seen() {
        let mut qemu = boot("echo '(x) TEST t FAIL bad'; echo done; sleep 5");
        qemu.expect("^done$", WAIT).unwrap();
        assert!(qemu
            .forbid("TEST \\S+ FAIL", "a guest test failed")
            .is_err());
    }

    #[test]
    fn a_timeout_quotes_the_console_tail() {
        let mut qemu = boot("echo 'last words'; sleep 5");
        let failure = qemu
            .expect("never", Duration::from_millis(300))
            .unwrap_err();
        assert!(failure.0.contains("timed out"), "{failure}");
        assert!(failure.0.contains("last words"), "{failure}");
    }

    #[test]
    fn exit_is_noticed_and_reported() {
        let mut qemu = boot("echo bye; exit 3");
        let failure = qemu.expect("never", WAIT).unwrap_err();
        assert!(failure.0.contains("QEMU exited"), "{failure}");
        let status = qemu.wait_exit(WAIT).unwrap();
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn a_hung_emulator_is_killed_on_drop() {
        let qemu = boot("exec sleep 60");
        let pid = qemu.child.id();
        let started = Instant::now();
        drop(qemu);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the emulator outlived its handle"
        );
    }

    #[test]
    fn stderr_lines_are_kept_but_never_match_console_expectations() {
        let mut qemu = boot("echo 'qemu: warning' >&2; echo console; sleep 5");
        qemu.expect("^console$", WAIT).unwrap();
        assert!(qemu.expect("warning", Duration::from_millis(300)).is_err());
        assert!(qemu
            .lines()
            .iter()
            .any(|l| l.from_stderr && l.text == "qemu: warning"));
    }

    #[test]
    fn an_unfinished_line_is_seen_and_then_finished() {
        let mut qemu =
            boot("echo first; printf 'type> '; sleep 1; printf 'ab'; sleep 1; echo c; sleep 5");
        qemu.expect("^first$", WAIT).unwrap();
        let prompt = qemu.expect_partial("^type> $", WAIT).unwrap();
        assert_eq!(prompt.text, "type> ");
        qemu.expect_partial("^type> ab$", WAIT).unwrap();
        // Finished, it is an ordinary line (and no longer unfinished).
        qemu.expect("^type> abc$", WAIT).unwrap();
        assert!(qemu
            .expect_partial("type", Duration::from_millis(300))
            .is_err());
    }

    #[test]
    fn a_missing_image_is_reported_before_starting() {
        let failure = Qemu::spawn(&QemuConfig::tessera("/nonexistent/tessera.img"))
            .err()
            .unwrap();
        assert!(failure.0.contains("cargo xtask build"), "{failure}");
    }

    #[test]
    fn the_command_line_is_tesseras_board() {
        let command = describe(
            &QemuConfig::tessera("t.img")
                .smp(4)
                .cpu("max")
                .args(["-s"])
                .command(),
        );
        assert_eq!(
            command,
            "qemu-system-aarch64 -machine virt,virtualization=on,gic-version=3 -cpu max -smp 4 -m 1G \
             -display none -serial stdio -monitor none -kernel t.img -s"
        );
    }
}
