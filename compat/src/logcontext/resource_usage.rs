//! Resource accounting for logging contexts: Synapse's
//! `ContextResourceUsage` and the thread CPU clock it is fed from (see
//! [`get_thread_resource_usage`] for the clock chosen on each platform).

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};

/// The resources a logging context used: Synapse's `ContextResourceUsage`.
///
/// A plain value: [`LoggingContext::get_resource_usage`](super::LoggingContext::get_resource_usage)
/// returns a copy, and `+`, `-`, `+=`, `-=` work field by field, as in
/// Python. Counts are signed, since a difference may be negative. `Display`
/// gives Python's `repr`.
///
/// ```
/// use twisted_compat::ContextResourceUsage;
///
/// let mut a = ContextResourceUsage::new();        // a = ContextResourceUsage()
/// a.ru_utime = 1.5;                               // a.ru_utime = 1.5
/// a.db_txn_count = 3;                             // a.db_txn_count = 3
/// let b = ContextResourceUsage::from(&a);         // b = ContextResourceUsage(copy_from=a)
/// let sum = a + b;                                // a + b
/// assert_eq!((sum.ru_utime, sum.db_txn_count), (3.0, 6));
/// assert_eq!((b - sum).db_txn_count, -3);         // b - sum
/// assert!(sum.to_string().starts_with("<ContextResourceUsage ru_stime='0.0', ru_utime='3.0'"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ContextResourceUsage {
    /// `ru_utime`: user CPU time, in seconds.
    pub ru_utime: f64,
    /// `ru_stime`: system CPU time, in seconds.
    pub ru_stime: f64,
    /// `db_txn_count`: database transactions done.
    pub db_txn_count: i64,
    /// `db_txn_duration_sec`: time spent in database transactions, not
    /// counting the wait for a connection, in seconds.
    pub db_txn_duration_sec: f64,
    /// `db_sched_duration_sec`: time spent waiting for a database
    /// connection, in seconds.
    pub db_sched_duration_sec: f64,
    /// `evt_db_fetch_count`: events requested from the database.
    pub evt_db_fetch_count: i64,
}

impl ContextResourceUsage {
    /// `ContextResourceUsage()`: every field zero.
    ///
    /// ```
    /// use twisted_compat::ContextResourceUsage;
    /// let u = ContextResourceUsage::new();            // ContextResourceUsage()
    /// assert_eq!(u, ContextResourceUsage::default());
    /// assert_eq!((u.ru_utime, u.db_txn_count), (0.0, 0));
    /// ```
    pub fn new() -> ContextResourceUsage {
        ContextResourceUsage::default()
    }

    /// `usage.copy()`: an independent copy (the type is `Copy`, so this is
    /// `*self`; it exists for line-by-line ports).
    ///
    /// ```
    /// use twisted_compat::ContextResourceUsage;
    /// let mut a = ContextResourceUsage::new();
    /// let b = a.copy();                               // b = a.copy()
    /// a.db_txn_count += 1;
    /// assert_eq!(b.db_txn_count, 0);
    /// ```
    pub fn copy(&self) -> ContextResourceUsage {
        *self
    }

    /// `usage.reset()`: every field back to zero.
    ///
    /// ```
    /// use twisted_compat::ContextResourceUsage;
    /// let mut u = ContextResourceUsage { ru_stime: 2.0, ..Default::default() };
    /// u.reset();                                      // u.reset()
    /// assert_eq!(u, ContextResourceUsage::new());
    /// ```
    pub fn reset(&mut self) {
        *self = ContextResourceUsage::default();
    }
}

impl From<&ContextResourceUsage> for ContextResourceUsage {
    /// `ContextResourceUsage(copy_from=other)`.
    fn from(other: &ContextResourceUsage) -> Self {
        *other
    }
}

impl AddAssign for ContextResourceUsage {
    /// `self += other`.
    fn add_assign(&mut self, other: ContextResourceUsage) {
        self.ru_utime += other.ru_utime;
        self.ru_stime += other.ru_stime;
        self.db_txn_count = self.db_txn_count.wrapping_add(other.db_txn_count);
        self.db_txn_duration_sec += other.db_txn_duration_sec;
        self.db_sched_duration_sec += other.db_sched_duration_sec;
        self.evt_db_fetch_count = self
            .evt_db_fetch_count
            .wrapping_add(other.evt_db_fetch_count);
    }
}

impl SubAssign for ContextResourceUsage {
    /// `self -= other`.
    fn sub_assign(&mut self, other: ContextResourceUsage) {
        self.ru_utime -= other.ru_utime;
        self.ru_stime -= other.ru_stime;
        self.db_txn_count = self.db_txn_count.wrapping_sub(other.db_txn_count);
        self.db_txn_duration_sec -= other.db_txn_duration_sec;
        self.db_sched_duration_sec -= other.db_sched_duration_sec;
        self.evt_db_fetch_count = self
            .evt_db_fetch_count
            .wrapping_sub(other.evt_db_fetch_count);
    }
}

impl Add for ContextResourceUsage {
    type Output = ContextResourceUsage;

    /// `self + other`.
    fn add(mut self, other: ContextResourceUsage) -> ContextResourceUsage {
        self += other;
        self
    }
}

impl Sub for ContextResourceUsage {
    type Output = ContextResourceUsage;

    /// `self - other`.
    fn sub(mut self, other: ContextResourceUsage) -> ContextResourceUsage {
        self -= other;
        self
    }
}

impl fmt::Display for ContextResourceUsage {
    /// `repr(usage)`, as Synapse prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<ContextResourceUsage ru_stime='{}', ru_utime='{}', db_txn_count='{}', \
             db_txn_duration_sec='{}', db_sched_duration_sec='{}', evt_db_fetch_count='{}'>",
            PyFloat(self.ru_stime),
            PyFloat(self.ru_utime),
            self.db_txn_count,
            PyFloat(self.db_txn_duration_sec),
            PyFloat(self.db_sched_duration_sec),
            self.evt_db_fetch_count,
        )
    }
}

/// A float printed as Python's `repr` prints it: shortest round-trip
/// digits, `.0` on whole numbers, exponent form below `1e-4` and from
/// `1e16`.
struct PyFloat(f64);

impl fmt::Display for PyFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            return f.write_str("nan");
        }
        if v.is_infinite() {
            return f.write_str(if v > 0.0 { "inf" } else { "-inf" });
        }
        let sci = format!("{v:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        if v == 0.0 || (-4..16).contains(&exp) {
            let plain = format!("{v}");
            if plain.contains('.') {
                f.write_str(&plain)
            } else {
                write!(f, "{plain}.0")
            }
        } else {
            let sign = if exp < 0 { '-' } else { '+' };
            write!(f, "{mantissa}e{sign}{:02}", exp.unsigned_abs())
        }
    }
}

/// A thread's CPU time so far, in seconds: the `rusage` Synapse passes to
/// `start(rusage)` and `stop(rusage)` (its `(ru_utime, ru_stime)` pair).
///
/// ```
/// use twisted_compat::{get_thread_resource_usage, ThreadCpuUsage};
/// let before = get_thread_resource_usage().unwrap();   // rusage = get_thread_resource_usage()
/// let after = get_thread_resource_usage().unwrap();
/// assert!(after.ru_utime >= before.ru_utime && after.ru_stime >= before.ru_stime);
/// let made = ThreadCpuUsage { ru_utime: 1.0, ru_stime: 0.5 };   // (1.0, 0.5)
/// assert_eq!(made.total(), 1.5);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThreadCpuUsage {
    /// User CPU time, in seconds.
    pub ru_utime: f64,
    /// System CPU time, in seconds.
    pub ru_stime: f64,
}

impl ThreadCpuUsage {
    /// User plus system time.
    ///
    /// ```
    /// use twisted_compat::ThreadCpuUsage;
    /// let u = ThreadCpuUsage { ru_utime: 0.25, ru_stime: 0.5 };
    /// assert_eq!(u.total(), 0.75);                    // ru.ru_utime + ru.ru_stime
    /// ```
    pub fn total(&self) -> f64 {
        self.ru_utime + self.ru_stime
    }
}

/// `get_thread_resource_usage()`: the CPU time the calling thread has used
/// so far, or `None` where the platform cannot tell.
///
/// # The clock
///
/// Synapse reads the calling thread's CPU time with
/// `getrusage(RUSAGE_THREAD)` at every context switch and keeps user and
/// system time apart (`ru_utime`, `ru_stime`, one metric each). So does this
/// function where the platform has `RUSAGE_THREAD` (Linux, FreeBSD,
/// OpenBSD): it is the only per-thread clock that keeps the split Synapse
/// reports. `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` is finer (nanoseconds
/// against microseconds) but gives only the total; Linux derives the split
/// `getrusage` returns from that same precise total and keeps each part
/// monotonic, so nothing is lost that Synapse's metrics could show.
///
/// Where there is no `RUSAGE_THREAD` but a thread CPU clock exists (macOS,
/// iOS, Android), the total from `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` is
/// reported as user time and system time stays 0. Elsewhere this returns
/// `None` and, as in Synapse on such platforms, no CPU time is accounted
/// (and `start`/`stop` keep no state, so they report nothing either).
///
/// ```
/// use twisted_compat::get_thread_resource_usage;
/// let start = get_thread_resource_usage().unwrap();    // rusage = get_thread_resource_usage()
/// let mut x = 0u64;
/// while get_thread_resource_usage().unwrap().total() - start.total() < 0.002 {
///     x = std::hint::black_box(x.wrapping_add(1));     // burn CPU
/// }
/// assert!(get_thread_resource_usage().unwrap().total() > start.total());
/// ```
pub fn get_thread_resource_usage() -> Option<ThreadCpuUsage> {
    clock::thread_cpu_usage()
}

#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd"))]
mod clock {
    use super::ThreadCpuUsage;

    fn seconds(tv: libc::timeval) -> f64 {
        tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
    }

    pub(super) fn thread_cpu_usage() -> Option<ThreadCpuUsage> {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `usage` is a writable, properly aligned `rusage` that
        // outlives the call; `getrusage` only writes into it, and fills all
        // of it when it returns 0. It was zeroed first, and an all-zero
        // `rusage` (plain integers) is a valid value, so `assume_init` is
        // sound whatever `getrusage` did.
        let usage = unsafe {
            if libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) != 0 {
                return None;
            }
            usage.assume_init()
        };
        Some(ThreadCpuUsage {
            ru_utime: seconds(usage.ru_utime),
            ru_stime: seconds(usage.ru_stime),
        })
    }
}

#[cfg(any(target_os = "macos", target_os = "ios", target_os = "android"))]
mod clock {
    use super::ThreadCpuUsage;

    pub(super) fn thread_cpu_usage() -> Option<ThreadCpuUsage> {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid, writable `timespec` that outlives the
        // call; `clock_gettime` only writes into it.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
            return None;
        }
        Some(ThreadCpuUsage {
            ru_utime: now.tv_sec as f64 + now.tv_nsec as f64 / 1e9,
            ru_stime: 0.0,
        })
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "macos",
    target_os = "ios",
    target_os = "android"
)))]
mod clock {
    use super::ThreadCpuUsage;

    pub(super) fn thread_cpu_usage() -> Option<ThreadCpuUsage> {
        None
    }
}

/// The CPU time used between two snapshots of one thread: Synapse's
/// `_get_cputime`. A part that went backwards is logged at error level
/// ("utime went backwards! …") and counted as 0.
pub(super) fn cputime_delta(start: ThreadCpuUsage, current: ThreadCpuUsage) -> (f64, f64) {
    let mut utime = current.ru_utime - start.ru_utime;
    let mut stime = current.ru_stime - start.ru_stime;
    if utime < 0.0 {
        log::error!(
            target: "synapse.logging.context",
            "utime went backwards! {:.6} < {:.6}",
            current.ru_utime,
            start.ru_utime
        );
        utime = 0.0;
    }
    if stime < 0.0 {
        log::error!(
            target: "synapse.logging.context",
            "stime went backwards! {:.6} < {:.6}",
            current.ru_stime,
            start.ru_stime
        );
        stime = 0.0;
    }
    (utime, stime)
}

/// A negative duration given to
/// [`add_database_transaction`](super::LoggingContext::add_database_transaction)
/// or [`add_database_scheduled`](super::LoggingContext::add_database_scheduled):
/// Synapse's `ValueError`. `Display` gives Synapse's message. Nothing was
/// recorded.
///
/// ```
/// use twisted_compat::LoggingContext;
/// let ctx = LoggingContext::new("req", "hs");
/// let e = ctx.add_database_transaction(-1.0).unwrap_err();   // raises ValueError
/// assert_eq!(e.to_string(), "DB txn time can only be zero or non-negative");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvalidDurationError {
    /// What the duration measured: `"DB txn"` or `"DB scheduling"`.
    pub what: &'static str,
    /// The duration given, in seconds.
    pub duration_sec: f64,
}

impl fmt::Display for InvalidDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} time can only be zero or non-negative", self.what)
    }
}

impl std::error::Error for InvalidDurationError {}

#[cfg(test)]
mod tests {
    use super::PyFloat;

    #[test]
    fn floats_print_as_python_repr_prints_them() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.5, "1.5"),
            (3.0, "3.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (123456789012345.0, "123456789012345.0"),
            (-2.5e-7, "-2.5e-07"),
        ];
        for (v, want) in cases {
            assert_eq!(PyFloat(v).to_string(), want, "{v:e}");
        }
    }
}
