//! What tests share: the result type, `ensure!`, and bounded waits.
//!
//! The one idea: every wait has a deadline on the virtual counter, so a
//! hypervisor bug turns into a FAIL line naming what never happened instead
//! of a silent hang.

use tessera_rt::text::FixedBuf;
use tessera_rt::timer;

/// Why a test failed; one line.
pub type Reason = FixedBuf<200>;
pub type TestResult = Result<(), Reason>;

pub fn reason(args: core::fmt::Arguments<'_>) -> Reason {
    let mut r = Reason::new();
    let _ = core::fmt::Write::write_fmt(&mut r, args);
    r
}

/// Fails the test with a formatted reason unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::check::reason(format_args!($($fmt)+)));
        }
    };
}

/// Fails the test with a formatted reason.
macro_rules! fail {
    ($($fmt:tt)+) => {
        return Err($crate::check::reason(format_args!($($fmt)+)))
    };
}

/// Spins until `done()` or `timeout_ms` of counter time pass; returns
/// whether `done()` became true.
pub fn wait_until(timeout_ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = timer::now() + timer::ticks_for_us(timer::frequency(), timeout_ms * 1000);
    loop {
        if done() {
            return true;
        }
        if timer::now() > end {
            return done();
        }
        core::hint::spin_loop();
    }
}

/// Decodes a hypercall return for messages: the errno name or the value.
pub struct Ret(pub u64);

impl core::fmt::Display for Ret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match tessera_ipc::errno::Errno::from_ret(self.0) {
            Some(e) => write!(f, "-{:?}({})", e, e as u32),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

/// A PSCI status for messages.
pub struct Psci(pub i64);

impl core::fmt::Display for Psci {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match tessera_ipc::psci::Status::try_from(self.0 as u64) {
            Ok(s) => write!(f, "{s:?}"),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

/// Unwraps a hypercall result, or fails the test naming the call and the
/// error.
macro_rules! ok {
    ($call:expr, $($what:tt)+) => {
        match $call {
            Ok(value) => value,
            Err(e) => fail!("{}: {:?}", format_args!($($what)+), e),
        }
    };
}

/// Fails the test unless a hypercall failed with exactly `-$errno`.
macro_rules! expect_errno {
    ($call:expr, $errno:ident, $($what:tt)+) => {
        match $call {
            Err(e) if e.is(tessera_ipc::errno::Errno::$errno) => {}
            Err(e) => fail!(
                "{}: expected -{:?}, got {}",
                format_args!($($what)+),
                tessera_ipc::errno::Errno::$errno,
                e
            ),
            Ok(v) => fail!(
                "{}: expected -{:?}, got success ({:?})",
                format_args!($($what)+),
                tessera_ipc::errno::Errno::$errno,
                v
            ),
        }
    };
}

/// Fails the test unless raw x0 is exactly `-$errno`.
macro_rules! expect_ret {
    ($ret:expr, $errno:ident, $($what:tt)+) => {
        let ret: u64 = $ret;
        if ret != tessera_ipc::errno::Errno::$errno.to_ret() {
            fail!(
                "{}: expected -{:?}, got {}",
                format_args!($($what)+),
                tessera_ipc::errno::Errno::$errno,
                $crate::check::Ret(ret)
            );
        }
    };
}
