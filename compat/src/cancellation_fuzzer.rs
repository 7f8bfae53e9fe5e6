//! A cancellation fuzzer: finds, in any code, the bugs Synapse's
//! "Cancellation" document lists (Synapse itself can only look for them
//! endpoint by endpoint).
//!
//! [`fuzz_cancellation`] takes a function that starts the code under test
//! (a coroutine, with the Deferreds and the clock it needs, made afresh on
//! each call) and returns the Deferred its caller would wait on. It runs it
//! once without cancelling, driving it to the end, to find its *suspension
//! points*: the moments when it waits and nothing is left to run. Then it
//! runs it again once per point, cancels that Deferred at that point, drives
//! everything to the end, and judges what happened against the document's
//! rules:
//!
//! | [`Rule`] | section of the document | what the fuzzer sees |
//! |---|---|---|
//! | [`CancelledErrorSwallowed`](Rule::CancelledErrorSwallowed) | CancelledErrors | the Deferred did not end in `CancelledError` (it returned normally, failed otherwise, or waits on); with awaits observed: the `CancelledError` came out of an await and the coroutine went on |
//! | [`FirstErrorNotUnwrapped`](Rule::FirstErrorNotUnwrapped) | defer.gatherResults | `FirstError(CancelledError)` came out of the await, or out of the Deferred |
//! | [`SharedDeferredCancelled`](Rule::SharedDeferredCancelled) | Creation of Deferreds | the awaited Deferred is awaited by another coroutine too, or a [bystander](FuzzRun::bystander) ended differently (or was released by the cancel) |
//! | [`CancelNotPropagated`](Rule::CancelNotPropagated) | Mechanics | an awaited Deferred had no result after `cancel()` returned, and no [`stop_cancellation`](crate::stop_cancellation) or [`delay_cancellation`](crate::delay_cancellation) protected it |
//! | [`LoggingContextReusedAfterFinish`](Rule::LoggingContextReusedAfterFinish) | Uncancelled processing | "Re-starting finished log context …" (or a stop without a start) reported after the cancel |
//! | [`LoggingContextMisused`](Rule::LoggingContextMisused) | Uncancelled processing | any other logging-context misuse reported after the cancel |
//! | [`LoggingContextLeftCurrent`](Rule::LoggingContextLeftCurrent) | Uncancelled processing | `cancel()` returned, or the run ended, with a logging context current |
//! | [`UnhandledError`](Rule::UnhandledError) | (Twisted) | a failure reported as "Unhandled error in Deferred", or raised out of a timer |
//! | [`NeverFinished`](Rule::NeverFinished) | (Synapse's endpoint harness) | the Deferred never got a result after the cancel |
//!
//! Reports and outcomes are compared with the run without cancellation:
//! only what the cancel changed is held against a point (what happens
//! without it is listed in the report's [`Baseline`]).
//!
//! ```
//! use twisted_compat::cancellation_fuzzer::{fuzz_cancellation, Rule};
//! use twisted_compat::Failure;
//! use twisted_deferred::ensure_deferred;
//! use twisted_reactor::{defer_later, Clock};
//!
//! let report = fuzz_cancellation(|run| {
//!     let clock = Clock::new();
//!     run.clock(&clock);                      // time passes when nothing else can run
//!     ensure_deferred(async move {
//!         // try: await clock.sleep(1)  except Exception: pass
//!         let _ = defer_later(&clock, 1.0, || Ok::<_, Failure>(())).await;
//!         Ok::<_, Failure>("200")
//!     })
//! });
//! assert_eq!(report.points.len(), 1);         // one suspension point
//! assert_eq!(report.broken_rules(), [Rule::CancelledErrorSwallowed]);
//! ```
//!
//! # Seeing the awaits
//!
//! To name the `.await` a point is at, the fuzzer needs to see which
//! Deferred each coroutine suspends on, where, and what comes out of the
//! await. The core's coroutine driver reports this for every coroutine and
//! every `.await` on a Deferred to a [`CoroutineObserver`]
//! ([`twisted_deferred::set_coroutine_observer`]); the fuzzer installs its
//! recorder there for the length of a run. Awaits on futures that are not
//! Deferreds are not seen: the fuzzer still finds the points (as the
//! moments between driver steps) and judges every rule from what it can
//! see from outside (the Deferred's outcome, the bystanders',
//! logging-context and unhandled-error reports), but cannot name such an
//! await, tell a `FirstError` swallowed by a catch-all from a swallowed
//! `CancelledError`, nor check that the cancel reached what was awaited.
//! [`observed`] and [`observed_coroutine`] are the plain `.await` and
//! [`ensure_deferred`], kept for code that names its awaits explicitly.
//!
//! # Driving
//!
//! Between points, the fuzzer takes one *step*: calls due on the
//! [clock](FuzzRun::clock) now (`advance(0)`), else the next of the
//! [steps](FuzzRun::step) given, else the clock advanced to its next call.
//! It stops when none is left (or after [`FuzzOptions::max_steps`]). A
//! point is a moment between two steps (or after the start) at which the
//! Deferred has no result. Suspensions that begin and end within one step
//! cannot be cancelled at: the report lists them
//! ([`FuzzReport::passed_through`]).
//!
//! # Harnesses
//!
//! A Synapse-style endpoint harness
//! ([`make_request_with_cancellation_test`](crate::http::make_request_with_cancellation_test))
//! is a thin use of the fuzzer: its start function sends the request on a
//! fake channel to the site (one site and clock for every run, as Synapse
//! reuses them between attempts) and returns a Deferred of the response
//! with 499 turned into `CancelledError`; it registers the clock with
//! [`FuzzRun::clock`], disconnects the client with [`FuzzRun::cancel_with`],
//! and marks the request's logging context finished once it has answered,
//! with [`FuzzRun::after_each_step`]. The document's
//! examples do the same with their stand-in for the HTTP layer
//! (`compat/examples/common/mod.rs`, `start_request`).
//!
//! Each run starts with the sentinel logging context current and
//! background-process numbering reset, and tears down whatever it leaves
//! alive (with [`Tracker`]; see [`FuzzOptions::collect_garbage`]) so that
//! abandoned failures are reported inside it. Debugging
//! ([`twisted_deferred::debug::set_debugging`]) is on while the fuzzer runs,
//! for the creation locations of awaited Deferreds.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::rc::Rc;
use std::sync::Mutex;

use twisted_deferred::tracking::Tracker;
use twisted_deferred::{
    AnyValue, CancelledError, Deferred, DeferredFuture, Failure, FirstError, debug,
    ensure_deferred, set_unhandled_error_hook,
};
use twisted_reactor::Clock;

use crate::background_process::clear_background_process_counts;
use crate::logcontext::{
    LogcontextError, SENTINEL_CONTEXT, current_context, set_current_context,
    set_logcontext_error_hook,
};

// ---------------------------------------------------------------------------
// The report

/// A place in the source: an `.await`, or where a Deferred was created.
/// Paths are shown as the compiler saw them, with `dir/..` collapsed.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::SourceLocation;
/// let here = SourceLocation::from(std::panic::Location::caller());
/// assert!(here.file.ends_with(".rs"));
/// assert_eq!(here.to_string(), format!("{}:{}:{}", here.file, here.line, here.column));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceLocation {
    /// The source file.
    pub file: String,
    /// The line, from 1.
    pub line: u32,
    /// The column, from 1.
    pub column: u32,
}

impl From<&Location<'_>> for SourceLocation {
    fn from(location: &Location<'_>) -> SourceLocation {
        SourceLocation {
            file: normalize_path(location.file()),
            line: location.line(),
            column: location.column(),
        }
    }
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// `a/b/../c` → `a/c` (the paths of files included with `#[path]`).
fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            ".." if parts.last().is_some_and(|p| *p != ".." && !p.is_empty()) => {
                parts.pop();
            }
            "." => {}
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

/// A rule of Synapse's "Cancellation" document (and of the endpoint
/// harness Synapse tests with), as the fuzzer checks it.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::Rule;
/// assert_eq!(Rule::CancelledErrorSwallowed.to_string(), "CancelledError swallowed");
/// assert_eq!(Rule::CancelledErrorSwallowed.section(), "CancelledErrors");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// "CancelledErrors": a `try`/`except Exception` around an await caught
    /// the `CancelledError` and the code carried on, so the request did not
    /// end in `CancelledError` (Synapse answers 200 or 500, not 499).
    CancelledErrorSwallowed,
    /// "defer.gatherResults": the cancel came out of a gather as
    /// `FirstError(CancelledError)`, which `except CancelledError` does not
    /// match; `.addErrback(unwrapFirstError)` was missing.
    FirstErrorNotUnwrapped,
    /// "Creation of Deferreds": a Deferred shared between waiters was
    /// cancelled by one of them, which the others noticed.
    SharedDeferredCancelled,
    /// "Mechanics": `cancel()` did not reach a Deferred being awaited, which
    /// no `stop_cancellation`/`delay_cancellation` protected: its work goes
    /// on unseen.
    CancelNotPropagated,
    /// "Uncancelled processing": work the cancelled request started went on
    /// in its logging context after the request finished it ("Re-starting
    /// finished log context").
    LoggingContextReusedAfterFinish,
    /// Another logging-context misuse, reported after the cancel
    /// ("Expected logging context … was lost", …).
    LoggingContextMisused,
    /// A logging context was left current: `cancel()` returned, or the run
    /// ended, with something else than the sentinel current.
    LoggingContextLeftCurrent,
    /// A failure nobody handled ("Unhandled error in Deferred"), or one
    /// raised out of a timer or a step, that the run without cancellation
    /// does not leave.
    UnhandledError,
    /// The Deferred never got a result after the cancel (Synapse's harness:
    /// "Request appears to be stuck").
    NeverFinished,
}

impl Rule {
    /// Every rule, in the order reports list them.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::Rule;
    /// assert_eq!(Rule::ALL.len(), 9);
    /// ```
    pub const ALL: [Rule; 9] = [
        Rule::CancelledErrorSwallowed,
        Rule::FirstErrorNotUnwrapped,
        Rule::SharedDeferredCancelled,
        Rule::CancelNotPropagated,
        Rule::LoggingContextReusedAfterFinish,
        Rule::LoggingContextMisused,
        Rule::LoggingContextLeftCurrent,
        Rule::UnhandledError,
        Rule::NeverFinished,
    ];

    /// The rule's name, in the document's words.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::Rule;
    /// assert_eq!(Rule::FirstErrorNotUnwrapped.name(), "FirstError not unwrapped");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Rule::CancelledErrorSwallowed => "CancelledError swallowed",
            Rule::FirstErrorNotUnwrapped => "FirstError not unwrapped",
            Rule::SharedDeferredCancelled => "shared Deferred cancelled",
            Rule::CancelNotPropagated => "awaited Deferred never saw the cancel",
            Rule::LoggingContextReusedAfterFinish => {
                "uncancelled processing: logging context re-used after finish"
            }
            Rule::LoggingContextMisused => "logging context misused",
            Rule::LoggingContextLeftCurrent => "logging context left current",
            Rule::UnhandledError => "unhandled error left behind",
            Rule::NeverFinished => "never finished after the cancel",
        }
    }

    /// The section of Synapse's "Cancellation" document (or the tool) the
    /// rule comes from.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::Rule;
    /// assert_eq!(Rule::SharedDeferredCancelled.section(), "Creation of Deferreds");
    /// ```
    pub fn section(self) -> &'static str {
        match self {
            Rule::CancelledErrorSwallowed => "CancelledErrors",
            Rule::FirstErrorNotUnwrapped => "defer.gatherResults",
            Rule::SharedDeferredCancelled => "Creation of Deferreds",
            Rule::CancelNotPropagated => "Mechanics",
            Rule::LoggingContextReusedAfterFinish
            | Rule::LoggingContextMisused
            | Rule::LoggingContextLeftCurrent => "Uncancelled processing",
            Rule::UnhandledError => "Twisted: Unhandled error in Deferred",
            Rule::NeverFinished => "Synapse's make_request_with_cancellation_test",
        }
    }

    /// What the document says to do instead.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::Rule;
    /// assert!(Rule::FirstErrorNotUnwrapped.advice().contains("unwrap_first_error"));
    /// ```
    pub fn advice(self) -> &'static str {
        match self {
            Rule::CancelledErrorSwallowed => {
                "re-raise CancelledError before any catch-all (or catch only the errors you expect)"
            }
            Rule::FirstErrorNotUnwrapped => {
                "add `.add_errback(unwrap_first_error)` to the gathered Deferred"
            }
            Rule::SharedDeferredCancelled => {
                "give each waiter its own Deferred, or wrap the shared one with stop_cancellation for each waiter"
            }
            Rule::CancelNotPropagated => {
                "return the coroutine's own Deferred (or protect the work on purpose with stop_cancellation/delay_cancellation)"
            }
            Rule::LoggingContextReusedAfterFinish => {
                "wait for the work with delay_cancellation, or run it with run_as_background_process"
            }
            Rule::LoggingContextMisused | Rule::LoggingContextLeftCurrent => {
                "follow the logging-context rules: make_deferred_yieldable before awaiting, run_in_background for work not awaited"
            }
            Rule::UnhandledError => {
                "consume the failures of the Deferreds you cancel or abandon (consumeErrors=True, an errback)"
            }
            Rule::NeverFinished => {
                "make sure every Deferred the code waits on after the cancel is fired"
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule broken at one point: where, and what happened.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::{Rule, Violation};
/// let v = Violation { rule: Rule::NeverFinished, location: None, detail: "it waits".into() };
/// assert!(v.to_string().starts_with("never finished after the cancel"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub rule: Rule,
    /// The `.await` it is about, when the awaits were observed.
    pub location: Option<SourceLocation>,
    /// What happened, in a sentence or two.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (\"{}\")", self.rule, self.rule.section())?;
        if let Some(location) = &self.location {
            write!(f, " at {location}")?;
        }
        write!(f, ": {}; {}", self.detail, self.rule.advice())
    }
}

/// How a Deferred ended.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::Ending;
/// assert_eq!(Ending::Cancelled.to_string(), "CancelledError");
/// assert!(Ending::Completed("200".into()).to_string().contains("200"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It failed with `CancelledError` (Synapse: 499).
    Cancelled,
    /// It failed with `FirstError(CancelledError)`.
    FirstErrorCancelled,
    /// It failed with another failure (described).
    Failed(String),
    /// It got a value (its `Debug`).
    Completed(String),
    /// It has no result.
    Pending,
}

impl Ending {
    fn of(outcome: &Result<AnyValue, Failure>) -> Ending {
        match outcome {
            Ok(value) => Ending::Completed(describe_value(value)),
            Err(failure) => match classify(failure) {
                Resumed::Cancelled => Ending::Cancelled,
                Resumed::FirstErrorCancelled => Ending::FirstErrorCancelled,
                _ => Ending::Failed(failure.to_string()),
            },
        }
    }

    /// The same kind of ending (values and messages aside).
    fn same_kind(&self, other: &Ending) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Cancelled => f.write_str("CancelledError"),
            Ending::FirstErrorCancelled => f.write_str("FirstError(CancelledError)"),
            Ending::Failed(failure) => write!(f, "failed with {failure}"),
            Ending::Completed(value) => write!(f, "completed normally with {value}"),
            Ending::Pending => f.write_str("no result"),
        }
    }
}

/// A value as `Debug` shows it, for the common types a typed Deferred
/// holds (an erased typed value only shows its type).
fn describe_value(value: &AnyValue) -> String {
    macro_rules! try_types {
        ($($t:ty),*) => {
            $(if let Some(v) = value.downcast_ref::<$t>() {
                return format!("{v:?}");
            })*
        };
    }
    try_types!(String, &'static str, (), bool, char, f32, f64);
    try_types!(i8, i16, i32, i64, i128, isize);
    try_types!(u8, u16, u32, u64, u128, usize);
    format!("{value:?}")
}

/// What protects a Deferred from `cancel()`.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::Protection;
/// assert_eq!(Protection::StopCancellation.to_string(), "stop_cancellation");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protection {
    /// A [`stop_cancellation`](crate::stop_cancellation) wrapper.
    StopCancellation,
    /// A [`delay_cancellation`](crate::delay_cancellation) wrapper.
    DelayCancellation,
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protection::StopCancellation => "stop_cancellation",
            Protection::DelayCancellation => "delay_cancellation",
        })
    }
}

/// An `.await` a coroutine is suspended at.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
/// use twisted_compat::cancellation_fuzzer::{observed, observed_coroutine};
/// use twisted_compat::{Deferred, Failure};
///
/// let report = fuzz_cancellation(|_run| {
///     let d: Deferred<()> = Deferred::new();
///     observed_coroutine(async move { observed(d).await?; Ok::<_, Failure>(()) })
/// });
/// let site = &report.points[0].awaiting[0];
/// assert_eq!(site.location.line, line!() - 3);  // the `observed(d).await`
/// assert_eq!(site.awaited_created_at.as_ref().unwrap().line, line!() - 5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwaitSite {
    /// The `.await`.
    pub location: SourceLocation,
    /// Where the awaited Deferred was created (with debugging on).
    pub awaited_created_at: Option<SourceLocation>,
    /// Set when the awaited Deferred is a `stop_cancellation` or
    /// `delay_cancellation` wrapper.
    pub protection: Option<Protection>,
    /// Where the coroutine was started.
    pub coroutine_started_at: Option<SourceLocation>,
}

impl fmt::Display for AwaitSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.location)?;
        match (&self.protection, &self.awaited_created_at) {
            (Some(p), Some(c)) => write!(f, " (awaiting a {p} wrapper created at {c})"),
            (Some(p), None) => write!(f, " (awaiting a {p} wrapper)"),
            (None, Some(c)) => write!(f, " (awaiting a Deferred created at {c})"),
            (None, None) => Ok(()),
        }
    }
}

/// One suspension point and the verdicts of the run cancelled there.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::{fuzz_cancellation, Ending};
/// use twisted_compat::{Deferred, Failure};
/// use twisted_deferred::ensure_deferred;
///
/// let report = fuzz_cancellation(|_run| {
///     let d: Deferred<()> = Deferred::new();
///     ensure_deferred(async move { d.await?; Ok::<_, Failure>(()) })
/// });
/// let point = &report.points[0];
/// assert_eq!((point.index, point.steps, point.after.as_str()), (0, 0, "start"));
/// assert_eq!(point.ending, Ending::Cancelled);
/// assert!(point.reached && point.violations.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct CancellationPoint {
    /// Its number, from 0.
    pub index: usize,
    /// How many driver steps ran before it.
    pub steps: usize,
    /// The step it follows (`"start"` for the first point).
    pub after: String,
    /// Where the coroutine is suspended (empty when awaits are not
    /// observed).
    pub awaiting: Vec<AwaitSite>,
    /// False when the run cancelled here did not reach this point (the code
    /// does not behave the same on each run).
    pub reached: bool,
    /// How the Deferred ended in the run cancelled here.
    pub ending: Ending,
    /// The rules broken.
    pub violations: Vec<Violation>,
}

impl CancellationPoint {
    /// True when no rule was broken here (and the point was reached).
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
    /// use twisted_compat::{Deferred, Failure};
    /// use twisted_deferred::ensure_deferred;
    /// let report = fuzz_cancellation(|_run| {
    ///     let d: Deferred<()> = Deferred::new();
    ///     ensure_deferred(async move { d.await?; Ok::<_, Failure>(()) })
    /// });
    /// assert!(report.points[0].is_safe());
    /// ```
    pub fn is_safe(&self) -> bool {
        self.reached && self.violations.is_empty()
    }

    /// True when a violation of `rule` was found here.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::{fuzz_cancellation, Rule};
    /// use twisted_compat::{Deferred, Failure};
    /// use twisted_deferred::ensure_deferred;
    /// let report = fuzz_cancellation(|_run| {
    ///     let d: Deferred<()> = Deferred::new();
    ///     ensure_deferred(async move { let _ = d.await; Ok::<_, Failure>(()) })
    /// });
    /// assert!(report.points[0].broke(Rule::CancelledErrorSwallowed));
    /// ```
    pub fn broke(&self, rule: Rule) -> bool {
        self.violations.iter().any(|v| v.rule == rule)
    }
}

/// The run without cancellation.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::{fuzz_cancellation, Ending};
/// use twisted_compat::{succeed, Failure};
/// use twisted_deferred::ensure_deferred;
/// let report = fuzz_cancellation(|_run| ensure_deferred(async { Ok::<_, Failure>(1) }));
/// assert_eq!(report.baseline.ending, Ending::Completed("1".into()));
/// assert!(report.points.is_empty());                 // it never waited
/// # let _ = succeed(0);
/// ```
#[derive(Debug, Clone)]
pub struct Baseline {
    /// How the Deferred ended.
    pub ending: Ending,
    /// How many driver steps ran.
    pub steps: usize,
    /// What went wrong without any cancel: logging-context misuse,
    /// unhandled errors, a context left current. Not held against the
    /// points.
    pub problems: Vec<String>,
}

/// What the fuzzer found: every suspension point with its verdicts.
///
/// `Display` gives a readable account (what [`assert_cancellation_safe`]
/// prints when it fails).
///
/// ```
/// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
/// use twisted_compat::{Deferred, Failure};
/// use twisted_deferred::ensure_deferred;
///
/// let report = fuzz_cancellation(|_run| {
///     let d: Deferred<()> = Deferred::new();
///     ensure_deferred(async move { let _ = d.await; Ok::<_, Failure>(()) })
/// });
/// assert!(!report.is_safe());
/// assert!(report.to_string().contains("CancelledError swallowed"));
/// ```
#[derive(Debug, Clone)]
pub struct FuzzReport {
    /// The suspension points, each with the run cancelled there.
    pub points: Vec<CancellationPoint>,
    /// The run without cancellation.
    pub baseline: Baseline,
    /// True when the coroutine's awaits were observed (the points name
    /// their `.await`).
    pub awaits_observed: bool,
    /// Suspensions of the coroutine that began and ended within one driver
    /// step, where the fuzzer had no moment to cancel.
    pub passed_through: Vec<AwaitSite>,
    /// True when a run stopped at [`FuzzOptions::max_steps`].
    pub step_limit_hit: bool,
}

impl FuzzReport {
    /// True when every point was reached and broke no rule.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
    /// use twisted_compat::{Deferred, Failure};
    /// use twisted_deferred::ensure_deferred;
    /// let report = fuzz_cancellation(|_run| {
    ///     let d: Deferred<()> = Deferred::new();
    ///     ensure_deferred(async move { d.await?; Ok::<_, Failure>(()) })
    /// });
    /// assert!(report.is_safe());
    /// ```
    pub fn is_safe(&self) -> bool {
        self.points.iter().all(CancellationPoint::is_safe)
    }

    /// Every violation, with its point.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::{fuzz_cancellation, Rule};
    /// use twisted_compat::{Deferred, Failure};
    /// use twisted_deferred::ensure_deferred;
    /// let report = fuzz_cancellation(|_run| {
    ///     let d: Deferred<()> = Deferred::new();
    ///     ensure_deferred(async move { let _ = d.await; Ok::<_, Failure>(()) })
    /// });
    /// let (point, violation) = report.violations().next().unwrap();
    /// assert_eq!((point.index, violation.rule), (0, Rule::CancelledErrorSwallowed));
    /// ```
    pub fn violations(&self) -> impl Iterator<Item = (&CancellationPoint, &Violation)> {
        self.points
            .iter()
            .flat_map(|p| p.violations.iter().map(move |v| (p, v)))
    }

    /// The rules broken at any point, each once, in [`Rule::ALL`] order.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
    /// use twisted_compat::{Deferred, Failure};
    /// use twisted_deferred::ensure_deferred;
    /// let report = fuzz_cancellation(|_run| {
    ///     let d: Deferred<()> = Deferred::new();
    ///     ensure_deferred(async move { d.await?; Ok::<_, Failure>(()) })
    /// });
    /// assert!(report.broken_rules().is_empty());
    /// ```
    pub fn broken_rules(&self) -> Vec<Rule> {
        Rule::ALL
            .into_iter()
            .filter(|r| self.violations().any(|(_, v)| v.rule == *r))
            .collect()
    }
}

impl fmt::Display for FuzzReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unsafe_points = self.points.iter().filter(|p| !p.is_safe()).count();
        writeln!(
            f,
            "cancellation fuzzer: {} suspension point{}, {}",
            self.points.len(),
            if self.points.len() == 1 { "" } else { "s" },
            if unsafe_points == 0 {
                "all cancellation-safe".to_owned()
            } else {
                format!("{unsafe_points} unsafe")
            }
        )?;
        writeln!(
            f,
            "  without cancellation: {} after {} step{}",
            self.baseline.ending,
            self.baseline.steps,
            if self.baseline.steps == 1 { "" } else { "s" }
        )?;
        for problem in &self.baseline.problems {
            writeln!(f, "    (without cancellation too: {problem})")?;
        }
        if !self.awaits_observed {
            writeln!(
                f,
                "  (awaits not observed: points are the moments between driver steps)"
            )?;
        }
        for point in &self.points {
            write!(f, "  point {}, after {}", point.index, point.after)?;
            match point.awaiting.as_slice() {
                [] => writeln!(f)?,
                sites => {
                    let sites: Vec<String> = sites.iter().map(ToString::to_string).collect();
                    writeln!(f, ": suspended at {}", sites.join(" and "))?
                }
            }
            if !point.reached {
                writeln!(
                    f,
                    "    not reached when run again: the code does not behave the same on each run"
                )?;
                continue;
            }
            writeln!(f, "    cancelled there: {}", point.ending)?;
            for v in &point.violations {
                writeln!(f, "    ✗ {v}")?;
            }
        }
        for site in &self.passed_through {
            writeln!(
                f,
                "  (suspended at {site} within one step: no moment to cancel there)"
            )?;
        }
        if self.step_limit_hit {
            writeln!(
                f,
                "  (a run stopped at the step limit: something re-arms itself forever?)"
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Options and the per-run context

/// How the fuzzer runs.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::{fuzz_cancellation_with, FuzzOptions};
/// use twisted_compat::Failure;
/// use twisted_deferred::ensure_deferred;
/// let options = FuzzOptions::new().max_steps(50).collect_garbage(false);
/// let report = fuzz_cancellation_with(&options, |_run| ensure_deferred(async { Ok::<_, Failure>(()) }));
/// assert!(report.is_safe());
/// ```
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    max_steps: usize,
    debugging: bool,
    collect_garbage: bool,
}

impl Default for FuzzOptions {
    fn default() -> FuzzOptions {
        FuzzOptions {
            max_steps: 1000,
            debugging: true,
            collect_garbage: true,
        }
    }
}

impl FuzzOptions {
    /// The defaults: at most 1000 steps per run, debugging on, garbage
    /// collected after each run.
    ///
    /// ```
    /// let options = twisted_compat::cancellation_fuzzer::FuzzOptions::new();
    /// # let _ = options;
    /// ```
    pub fn new() -> FuzzOptions {
        FuzzOptions::default()
    }

    /// Stops driving a run after `n` steps (a `LoopingCall` never runs out
    /// of them).
    ///
    /// ```
    /// let options = twisted_compat::cancellation_fuzzer::FuzzOptions::new().max_steps(10);
    /// # let _ = options;
    /// ```
    pub fn max_steps(mut self, n: usize) -> FuzzOptions {
        self.max_steps = n;
        self
    }

    /// Turns Deferred debugging on while the fuzzer runs (the default), for
    /// the creation locations of awaited Deferreds. Debugging is
    /// process-wide; the fuzzer turns it back off when the last fuzzer
    /// running ends.
    ///
    /// ```
    /// let options = twisted_compat::cancellation_fuzzer::FuzzOptions::new().debugging(false);
    /// # let _ = options;
    /// ```
    pub fn debugging(mut self, on: bool) -> FuzzOptions {
        self.debugging = on;
        self
    }

    /// Frees, after each run, the Deferreds it created that are still alive
    /// (with a [`Tracker`], as Python's garbage collector would), so that
    /// their unhandled failures are reported inside the run (the default).
    /// This replaces any `Tracker` active on the thread.
    ///
    /// ```
    /// let options = twisted_compat::cancellation_fuzzer::FuzzOptions::new().collect_garbage(false);
    /// # let _ = options;
    /// ```
    pub fn collect_garbage(mut self, on: bool) -> FuzzOptions {
        self.collect_garbage = on;
        self
    }
}

type StepFn = Box<dyn FnOnce() -> Result<(), Failure>>;

/// One run's context, handed to the function that starts the code under
/// test: how to drive it, whom else to watch, how to cancel it.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
/// use twisted_compat::{Deferred, Failure};
/// use twisted_deferred::ensure_deferred;
///
/// let report = fuzz_cancellation(|run| {
///     let page: Deferred<u32> = Deferred::new();
///     let p = page.clone();
///     run.step("the page arrives", move || p.callback(7));   // how it completes
///     ensure_deferred(async move { Ok::<_, Failure>(page.await? + 1) })
/// });
/// assert_eq!(report.points[0].after, "start");
/// assert!(report.is_safe());
/// ```
pub struct FuzzRun {
    cancel_at: Option<usize>,
    clock: Option<Clock>,
    steps: VecDeque<(String, StepFn)>,
    bystanders: Vec<Bystander>,
    cancel_with: Option<StepFn>,
    at_end: Vec<Box<dyn FnOnce()>>,
    after_each_step: Vec<Box<dyn FnMut()>>,
    moment: Rc<Cell<Moment>>,
}

impl fmt::Debug for FuzzRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FuzzRun")
            .field("cancel_at", &self.cancel_at)
            .field("steps_left", &self.steps.len())
            .field("bystanders", &self.bystanders.len())
            .finish()
    }
}

/// When something happened in a run: after `n` steps, or during the cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    Steps(usize),
    Cancel,
}

struct Bystander {
    name: String,
    ending: Rc<RefCell<Option<(Ending, Moment)>>>,
}

impl FuzzRun {
    fn new(cancel_at: Option<usize>) -> FuzzRun {
        FuzzRun {
            cancel_at,
            clock: None,
            steps: VecDeque::new(),
            bystanders: Vec::new(),
            cancel_with: None,
            at_end: Vec::new(),
            after_each_step: Vec::new(),
            moment: Rc::new(Cell::new(Moment::Steps(0))),
        }
    }

    /// The point this run cancels at: `None` in the run without
    /// cancellation.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
    /// use twisted_compat::{Deferred, Failure};
    /// use twisted_deferred::ensure_deferred;
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let s = seen.clone();
    /// fuzz_cancellation(move |run| {
    ///     s.borrow_mut().push(run.cancel_point());
    ///     let d: Deferred<()> = Deferred::new();
    ///     ensure_deferred(async move { d.await?; Ok::<_, Failure>(()) })
    /// });
    /// assert_eq!(*seen.borrow(), [None, Some(0)]);
    /// ```
    pub fn cancel_point(&self) -> Option<usize> {
        self.cancel_at
    }

    /// Drives this clock: calls due now run first (`advance(0)`), and when
    /// no [step](FuzzRun::step) is left it is advanced to its next call.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
    /// use twisted_compat::Failure;
    /// use twisted_deferred::ensure_deferred;
    /// use twisted_reactor::{defer_later, Clock};
    /// let report = fuzz_cancellation(|run| {
    ///     let clock = Clock::new();
    ///     run.clock(&clock);
    ///     ensure_deferred(async move {
    ///         defer_later(&clock, 1.0, || Ok::<_, Failure>(())).await?;
    ///         defer_later(&clock, 1.0, || Ok::<_, Failure>(())).await?;
    ///         Ok::<_, Failure>(())
    ///     })
    /// });
    /// assert_eq!(report.points.len(), 2);
    /// assert_eq!(report.points[1].after, "clock.advance(1)");
    /// ```
    pub fn clock(&mut self, clock: &Clock) -> &mut FuzzRun {
        self.clock = Some(clock.clone());
        self
    }

    /// Adds a step: something that happens from outside (a reply arrives,
    /// the producer fires a Deferred). Steps run in the order given, one
    /// per driver step, before time passes; an `Err` (or a panic) is
    /// recorded like a failure raised out of a timer.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
    /// use twisted_compat::{Deferred, Failure};
    /// use twisted_deferred::ensure_deferred;
    /// let report = fuzz_cancellation(|run| {
    ///     let (a, b): (Deferred<()>, Deferred<()>) = (Deferred::new(), Deferred::new());
    ///     let (a2, b2) = (a.clone(), b.clone());
    ///     run.step("a fires", move || a2.callback(()))
    ///         .step("b fires", move || b2.callback(()));
    ///     ensure_deferred(async move { a.await?; b.await?; Ok::<_, Failure>(()) })
    /// });
    /// assert_eq!(report.points.len(), 2);
    /// assert_eq!(report.points[1].after, "a fires");
    /// ```
    pub fn step(
        &mut self,
        label: impl Into<String>,
        f: impl FnOnce() -> Result<(), Failure> + 'static,
    ) -> &mut FuzzRun {
        self.steps.push_back((label.into(), Box::new(f)));
        self
    }

    /// Watches another request that must not notice the cancel: if it ends
    /// differently than without the cancel, or is released by the cancel
    /// itself, that is a [`SharedDeferredCancelled`](Rule::SharedDeferredCancelled)
    /// violation. The fuzzer takes its result, as its caller would.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::{fuzz_cancellation, Rule};
    /// use twisted_compat::{Deferred, Failure};
    /// use twisted_deferred::ensure_deferred;
    /// let report = fuzz_cancellation(|run| {
    ///     let room: Deferred<()> = Deferred::new();
    ///     let wait = |room: Deferred<()>| ensure_deferred(async move { room.await?; Ok::<_, Failure>(()) });
    ///     run.bystander("request-1", &wait(room.clone()));
    ///     let r = room.clone();
    ///     run.step("the room is ready", move || r.callback(()));
    ///     wait(room)                                   // request-2, cancelled
    /// });
    /// assert!(report.broken_rules().contains(&Rule::SharedDeferredCancelled));
    /// ```
    pub fn bystander<U: 'static>(
        &mut self,
        name: impl Into<String>,
        deferred: &Deferred<U>,
    ) -> &mut FuzzRun {
        let ending = Rc::new(RefCell::new(None));
        let sink = ending.clone();
        let moment = self.moment.clone();
        deferred
            .as_any()
            .add_both(move |outcome: Result<AnyValue, Failure>| {
                *sink.borrow_mut() = Some((Ending::of(&outcome), moment.get()));
                Ok::<_, Failure>(AnyValue::none())
            });
        self.bystanders.push(Bystander {
            name: name.into(),
            ending,
        });
        self
    }

    /// How to cancel: by default the fuzzer calls `cancel()` on the
    /// Deferred the start function returned; an HTTP harness disconnects
    /// the client instead.
    ///
    /// ```
    /// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
    /// use twisted_compat::{Deferred, Failure};
    /// use twisted_deferred::ensure_deferred;
    /// let report = fuzz_cancellation(|run| {
    ///     let d: Deferred<()> = Deferred::new();
    ///     let request = ensure_deferred(async move { d.await?; Ok::<_, Failure>(()) });
    ///     let connection = request.clone();
    ///     run.cancel_with(move || connection.cancel());   // the client goes away
    ///     request
    /// });
    /// assert!(report.is_safe());
    /// ```
    pub fn cancel_with(
        &mut self,
        f: impl FnOnce() -> Result<(), Failure> + 'static,
    ) -> &mut FuzzRun {
        self.cancel_with = Some(Box::new(f));
        self
    }

    /// Runs `f` when the run is over, before its leftovers are torn down:
    /// clear the caches the code under test keeps between calls.
    ///
    /// ```
    /// use std::cell::RefCell;
    /// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
    /// use twisted_compat::{Deferred, Failure};
    /// use twisted_deferred::ensure_deferred;
    /// thread_local! { static CACHE: RefCell<Option<Deferred<()>>> = const { RefCell::new(None) }; }
    /// fuzz_cancellation(|run| {
    ///     run.at_end(|| {
    ///         CACHE.with(|c| c.borrow_mut().take());
    ///     });
    ///     let d = CACHE.with(|c| c.borrow_mut().get_or_insert_with(Deferred::new).clone());
    ///     ensure_deferred(async move { d.await?; Ok::<_, Failure>(()) })
    /// });
    /// assert!(CACHE.with(|c| c.borrow().is_none()));
    /// ```
    pub fn at_end(&mut self, f: impl FnOnce() + 'static) -> &mut FuzzRun {
        self.at_end.push(Box::new(f));
        self
    }

    /// Runs `f` after the cancel and after every driver step, when none of
    /// the code under test is on the stack: for a harness that looks at (or
    /// marks) what the code left between steps. The endpoint harness marks a
    /// disconnected request's logging context finished there once its
    /// response is out, as Synapse's sets `request.logcontext.finished`
    /// after the disconnect. A panic in `f` is recorded like a failure
    /// raised out of a timer.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// use twisted_compat::cancellation_fuzzer::fuzz_cancellation;
    /// use twisted_compat::{Deferred, Failure};
    /// use twisted_deferred::ensure_deferred;
    /// let seen = Rc::new(Cell::new(0));
    /// let s = seen.clone();
    /// let report = fuzz_cancellation(move |run| {
    ///     let d: Deferred<()> = Deferred::new();
    ///     let fire = d.clone();
    ///     run.step("d fires", move || {
    ///         let _ = fire.callback(());                  // already cancelled: ignored
    ///         Ok(())
    ///     });
    ///     let s = s.clone();
    ///     run.after_each_step(move || s.set(s.get() + 1));
    ///     ensure_deferred(async move { d.await?; Ok::<_, Failure>(()) })
    /// });
    /// assert!(report.is_safe());
    /// // The run without a cancel: after its step; the run cancelled at
    /// // point 0: after the cancel, and after its step.
    /// assert_eq!(seen.get(), 3);
    /// ```
    pub fn after_each_step(&mut self, f: impl FnMut() + 'static) -> &mut FuzzRun {
        self.after_each_step.push(Box::new(f));
        self
    }

    /// Runs the [`after_each_step`](FuzzRun::after_each_step) hooks,
    /// recording those that panicked.
    fn run_after_each_step(&mut self, recorder: &Recorder) {
        for f in &mut self.after_each_step {
            if let Err(failure) = guarded(|| {
                f();
                Ok(())
            }) {
                recorder.push(Event::Raised {
                    what: "after_each_step".to_owned(),
                    message: failure.to_string(),
                });
            }
        }
    }

    /// Takes one driver step; `None` when there is nothing left to do.
    fn drive_one(&mut self) -> Option<(String, Result<(), Failure>)> {
        if let Some(clock) = &self.clock
            && next_call_time(clock).is_some_and(|t| t <= clock.seconds())
        {
            return Some((
                "clock.advance(0)".to_owned(),
                guarded(|| clock.advance(0.0)),
            ));
        }
        if let Some((label, f)) = self.steps.pop_front() {
            return Some((label, guarded(f)));
        }
        let clock = self.clock.as_ref()?;
        let due = next_call_time(clock)?;
        let delta = due - clock.seconds();
        Some((
            format!("clock.advance({delta})"),
            guarded(|| clock.advance(delta)),
        ))
    }
}

/// The time of the clock's next call, if it will ever come due.
fn next_call_time(clock: &Clock) -> Option<f64> {
    clock
        .get_delayed_calls()
        .iter()
        .map(|c| c.get_time())
        .filter(|t| t.is_finite())
        .min_by(f64::total_cmp)
}

/// Runs `f`, turning a panic into a failure.
fn guarded(f: impl FnOnce() -> Result<(), Failure>) -> Result<(), Failure> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| Err(Failure::from_panic(panic)))
}

// ---------------------------------------------------------------------------
// Events: the adapter the core's coroutine hooks plug into

pub use twisted_deferred::{CoroutineId, CoroutineObserver};

/// How an await resumed, or a coroutine finished.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resumed {
    Value,
    Cancelled,
    FirstErrorCancelled,
    Other(String),
}

fn classify(failure: &Failure) -> Resumed {
    if failure.check::<CancelledError>() {
        return Resumed::Cancelled;
    }
    if let Some(first) = failure.downcast_ref::<FirstError>()
        && matches!(
            classify(&first.failure),
            Resumed::Cancelled | Resumed::FirstErrorCancelled
        )
    {
        return Resumed::FirstErrorCancelled;
    }
    Resumed::Other(failure.to_string())
}

fn resumed(outcome: Result<(), &Failure>) -> Resumed {
    match outcome {
        Ok(()) => Resumed::Value,
        Err(f) => classify(f),
    }
}

impl fmt::Display for Resumed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resumed::Value => f.write_str("a value"),
            Resumed::Cancelled => f.write_str("CancelledError"),
            Resumed::FirstErrorCancelled => f.write_str("FirstError(CancelledError)"),
            Resumed::Other(failure) => f.write_str(failure),
        }
    }
}

/// One thing a run recorded, in order.
#[derive(Debug, Clone)]
enum Event {
    Await {
        co: CoroutineId,
        site: AwaitSite,
        suspends: bool,
    },
    Resume {
        co: CoroutineId,
        location: SourceLocation,
        outcome: Resumed,
        /// The logging context current as the coroutine goes on.
        context: String,
    },
    Finish {
        co: CoroutineId,
    },
    Logcontext {
        message: String,
        reused: bool,
        /// The context the report is about.
        context: String,
    },
    Unhandled {
        message: String,
    },
    /// A step raised, or the cancel did.
    Raised {
        what: String,
        message: String,
    },
    /// A driver step ran (the boundary between two moments).
    Step,
    /// The cancel happened.
    Cancel,
    /// The run is over; what follows is the teardown.
    Teardown,
}

/// A coroutine currently suspended on a Deferred.
struct Suspension {
    co: CoroutineId,
    awaited: Deferred<AnyValue>,
    site: AwaitSite,
}

/// Records one run's events. It is the [`CoroutineObserver`] while the
/// run lasts.
#[derive(Default)]
struct Recorder {
    events: RefCell<Vec<Event>>,
    suspended: RefCell<Vec<Suspension>>,
    /// Coroutine → (its Deferred's id, where it was started).
    coroutines: RefCell<HashMap<CoroutineId, (usize, SourceLocation)>>,
    /// `stop_cancellation`/`delay_cancellation` wrappers made in the run.
    protected: RefCell<Vec<(Deferred<AnyValue>, Protection)>>,
}

impl Recorder {
    fn push(&self, event: Event) {
        if let Ok(mut events) = self.events.try_borrow_mut() {
            events.push(event);
        }
    }

    fn protection_of(&self, d: &Deferred<AnyValue>) -> Option<Protection> {
        self.protected
            .borrow()
            .iter()
            .find(|(w, _)| w.ptr_eq(d))
            .map(|(_, p)| *p)
    }

    fn site(
        &self,
        co: CoroutineId,
        awaited: &Deferred<AnyValue>,
        location: &'static Location<'static>,
    ) -> AwaitSite {
        AwaitSite {
            location: location.into(),
            awaited_created_at: creation_location(awaited),
            protection: self.protection_of(awaited),
            coroutine_started_at: self.coroutines.borrow().get(&co).map(|(_, l)| l.clone()),
        }
    }

    /// The coroutine whose Deferred is `d`.
    fn coroutine_of(&self, d: usize) -> Option<CoroutineId> {
        self.coroutines
            .borrow()
            .iter()
            .find(|(_, (id, _))| *id == d)
            .map(|(co, _)| *co)
    }

    /// The suspensions of `co` now: (awaited, site).
    fn suspensions_of(&self, co: CoroutineId) -> Vec<(Deferred<AnyValue>, AwaitSite)> {
        self.suspended
            .borrow()
            .iter()
            .filter(|s| s.co == co)
            .map(|s| (s.awaited.clone(), s.site.clone()))
            .collect()
    }
}

impl CoroutineObserver for Recorder {
    fn on_start(
        &self,
        coroutine: CoroutineId,
        deferred: &Deferred<AnyValue>,
        location: &'static Location<'static>,
    ) {
        self.coroutines
            .borrow_mut()
            .insert(coroutine, (deferred.id(), location.into()));
    }

    fn on_await(
        &self,
        coroutine: CoroutineId,
        awaited: &Deferred<AnyValue>,
        location: &'static Location<'static>,
        suspends: bool,
    ) {
        let site = self.site(coroutine, awaited, location);
        if suspends {
            self.suspended.borrow_mut().push(Suspension {
                co: coroutine,
                awaited: awaited.clone(),
                site: site.clone(),
            });
        }
        self.push(Event::Await {
            co: coroutine,
            site,
            suspends,
        });
    }

    fn on_resume(
        &self,
        coroutine: CoroutineId,
        location: &'static Location<'static>,
        outcome: Result<(), &Failure>,
    ) {
        let location = SourceLocation::from(location);
        let removed: Vec<Suspension> = {
            let mut suspended = self.suspended.borrow_mut();
            let (gone, kept) = std::mem::take(&mut *suspended)
                .into_iter()
                .partition(|s| s.co == coroutine && s.site.location == location);
            *suspended = kept;
            gone
        };
        // Dropped outside the borrow: it may free the Deferred.
        drop(removed);
        self.push(Event::Resume {
            co: coroutine,
            location,
            outcome: resumed(outcome),
            context: current_context().to_string(),
        });
    }

    fn on_finish(&self, coroutine: CoroutineId, _outcome: Result<(), &Failure>) {
        let removed: Vec<Suspension> = {
            let mut suspended = self.suspended.borrow_mut();
            let (gone, kept) = std::mem::take(&mut *suspended)
                .into_iter()
                .partition(|s| s.co == coroutine);
            *suspended = kept;
            gone
        };
        drop(removed);
        self.push(Event::Finish { co: coroutine });
    }
}

/// Where `d` was created (recorded with debugging on).
fn creation_location(d: &Deferred<AnyValue>) -> Option<SourceLocation> {
    d.debug_info()?.creator.map(SourceLocation::from)
}

thread_local! {
    /// The recorder of the run in progress on this thread.
    static ACTIVE: RefCell<Option<Rc<Recorder>>> = const { RefCell::new(None) };
}

fn active() -> Option<Rc<Recorder>> {
    ACTIVE
        .try_with(|a| a.try_borrow().ok().and_then(|a| a.clone()))
        .ok()
        .flatten()
}

/// The observer recording the fuzz run in progress on this thread, if any:
/// where a source of coroutine events (the core's hooks, an executor of
/// your own) reports them.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::{coroutine_observer, fuzz_cancellation};
/// use twisted_compat::Failure;
/// use twisted_deferred::ensure_deferred;
/// assert!(coroutine_observer().is_none());
/// fuzz_cancellation(|_run| {
///     assert!(coroutine_observer().is_some());
///     ensure_deferred(async { Ok::<_, Failure>(()) })
/// });
/// ```
pub fn coroutine_observer() -> Option<Rc<dyn CoroutineObserver>> {
    active().map(|r| r as Rc<dyn CoroutineObserver>)
}

/// Records that `wrapper` protects what it wraps from `cancel()`
/// (`stop_cancellation` and `delay_cancellation` call this).
pub(crate) fn note_protection<T: 'static>(wrapper: &Deferred<T>, protection: Protection) {
    if let Some(recorder) = active() {
        recorder
            .protected
            .borrow_mut()
            .push((wrapper.as_any(), protection));
    }
}

// ---------------------------------------------------------------------------
// Naming awaits explicitly

/// `deferred.await`, spelled so that a reader sees the fuzzer's interest
/// in it. The core reports every `.await` on a Deferred to the fuzzer
/// (where, on what, with what outcome), so this is exactly
/// `deferred.into_future()`, with the caller's line as the await's.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::{observed, observed_coroutine};
/// use twisted_compat::{Deferred, Failure};
///
/// let page: Deferred<u32> = Deferred::new();
/// let p = page.clone();
/// let d = observed_coroutine(async move { Ok::<_, Failure>(observed(p).await? * 2) });
/// page.callback(21).unwrap();
/// assert_eq!(d.result().value(), Some(42));
/// ```
#[track_caller]
pub fn observed<T: Clone + 'static>(deferred: Deferred<T>) -> DeferredFuture<T> {
    deferred.into_future()
}

/// [`ensure_deferred`], for code that marks the coroutines it wants
/// fuzzed: the core reports every coroutine to the fuzzer, so this is
/// exactly `ensure_deferred`, with the caller's line as the start.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::observed_coroutine;
/// use twisted_compat::Failure;
/// let d = observed_coroutine(async { Ok::<_, Failure>(3) });
/// assert_eq!(d.result().value(), Some(3));
/// ```
#[track_caller]
pub fn observed_coroutine<T, F>(future: F) -> Deferred<T>
where
    T: 'static,
    F: Future<Output = Result<T, Failure>> + 'static,
{
    ensure_deferred(future)
}

// ---------------------------------------------------------------------------
// One run

/// Debugging switched on by running fuzzers: (how many, the value before).
static DEBUGGING_USERS: Mutex<(usize, bool)> = Mutex::new((0, false));

/// Keeps Deferred debugging on while a fuzzer runs.
struct DebuggingOn;

impl DebuggingOn {
    fn start() -> DebuggingOn {
        let mut users = DEBUGGING_USERS.lock().unwrap_or_else(|e| e.into_inner());
        if users.0 == 0 {
            users.1 = debug::get_debugging();
        }
        users.0 += 1;
        debug::set_debugging(true);
        DebuggingOn
    }
}

impl Drop for DebuggingOn {
    fn drop(&mut self) {
        let mut users = DEBUGGING_USERS.lock().unwrap_or_else(|e| e.into_inner());
        users.0 = users.0.saturating_sub(1);
        if users.0 == 0 {
            debug::set_debugging(users.1);
        }
    }
}

/// The name of the context a misuse report is about.
fn context_of(e: &LogcontextError) -> String {
    match e {
        LogcontextError::RestartFinished { context }
        | LogcontextError::RestartActive { context }
        | LogcontextError::StopWithoutStart { context } => context.to_string(),
        LogcontextError::UnexpectedPrevious { expected, .. }
        | LogcontextError::UnexpectedContext { expected, .. } => expected.to_string(),
        LogcontextError::ContextNotMaintained { calling, .. } => calling.to_string(),
        // Variants added later.
        #[allow(unreachable_patterns)]
        _ => String::new(),
    }
}

/// Installs a run's hooks and takes them down again, even on a panic.
struct Session {
    recorder: Rc<Recorder>,
    previous_recorder: Option<Rc<Recorder>>,
    previous_logcontext_hook: Option<crate::logcontext::LogcontextErrorHook>,
    previous_unhandled_hook: Option<twisted_deferred::UnhandledErrorHook>,
    previous_context: crate::logcontext::LoggingContextOrSentinel,
    restored: bool,
}

impl Session {
    fn start() -> Session {
        let previous_context = set_current_context(SENTINEL_CONTEXT);
        clear_background_process_counts();
        let recorder = Rc::new(Recorder::default());
        let previous_recorder = ACTIVE.with(|a| a.replace(Some(recorder.clone())));
        let sink = recorder.clone();
        let previous_logcontext_hook =
            set_logcontext_error_hook(Some(Rc::new(move |e: &LogcontextError| {
                sink.push(Event::Logcontext {
                    message: e.to_string(),
                    reused: matches!(
                        e,
                        LogcontextError::RestartFinished { .. }
                            | LogcontextError::StopWithoutStart { .. }
                    ),
                    context: context_of(e),
                })
            })));
        let sink = recorder.clone();
        let previous_unhandled_hook =
            set_unhandled_error_hook(Some(Box::new(move |f: &Failure| {
                sink.push(Event::Unhandled {
                    message: f.to_string(),
                })
            })));
        install_core_observer(&recorder);
        Session {
            recorder,
            previous_recorder,
            previous_logcontext_hook,
            previous_unhandled_hook,
            previous_context,
            restored: false,
        }
    }

    fn restore(&mut self) {
        if std::mem::replace(&mut self.restored, true) {
            return;
        }
        // Leaving whatever the run left current is reported to the run.
        set_current_context(SENTINEL_CONTEXT);
        uninstall_core_observer();
        set_unhandled_error_hook(self.previous_unhandled_hook.take());
        set_logcontext_error_hook(self.previous_logcontext_hook.take());
        ACTIVE.with(|a| a.replace(self.previous_recorder.take()));
        set_current_context(std::mem::take(&mut self.previous_context));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.restore();
    }
}

thread_local! {
    /// The core observer installed before the run.
    static PREVIOUS_CORE_OBSERVER: RefCell<Option<Rc<dyn CoroutineObserver>>> =
        const { RefCell::new(None) };
}

fn install_core_observer(recorder: &Rc<Recorder>) {
    let previous = twisted_deferred::set_coroutine_observer(Some(recorder.clone()));
    PREVIOUS_CORE_OBSERVER.with(|p| *p.borrow_mut() = previous);
}

fn uninstall_core_observer() {
    let previous = PREVIOUS_CORE_OBSERVER.with(|p| p.borrow_mut().take());
    twisted_deferred::set_coroutine_observer(previous);
}

/// What one run saw at a point (a moment without a result).
#[derive(Debug, Clone)]
struct PointSeen {
    steps: usize,
    after: String,
    awaiting: Vec<AwaitSite>,
}

/// What the cancel itself did.
#[derive(Debug, Clone)]
struct CancelSeen {
    /// Where in the events the cancel is.
    event: usize,
    /// The context current when `cancel()` returned.
    context_after: String,
    /// Awaited Deferreds still without a result after `cancel()` (not
    /// protected): (site, why).
    not_reached: Vec<AwaitSite>,
    /// The awaited Deferred is awaited by other coroutines too: (site, the
    /// others' sites).
    shared: Vec<(AwaitSite, Vec<AwaitSite>)>,
}

/// Everything one run recorded.
#[derive(Debug)]
struct RunRecord {
    points: Vec<PointSeen>,
    cancel: Option<CancelSeen>,
    ending: Ending,
    bystanders: Vec<(String, Option<(Ending, Moment)>)>,
    steps: usize,
    step_limit_hit: bool,
    end_context: String,
    events: Vec<Event>,
    target: Option<CoroutineId>,
}

impl RunRecord {
    fn logcontext_reports(&self) -> Vec<(usize, &str, bool)> {
        self.events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Event::Logcontext {
                    message, reused, ..
                } => Some((i, message.as_str(), *reused)),
                _ => None,
            })
            .collect()
    }

    /// Unhandled failures and failures raised by steps, as sentences.
    fn failures(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Unhandled { message } => {
                    Some(format!("Unhandled error in Deferred: {message}"))
                }
                Event::Raised { what, message } => Some(format!("{what} raised {message}")),
                _ => None,
            })
            .collect()
    }

    /// The `.await` a logging-context report at event `i` is about: the
    /// one through which a coroutine went on in the context the report
    /// names (the next in the same step: the report was made by a link
    /// that ran just before it; else the last before the report), else
    /// the next resume in the step.
    fn attribute(&self, i: usize) -> Option<SourceLocation> {
        let boundary = |e: &Event| matches!(e, Event::Step | Event::Cancel | Event::Teardown);
        let Event::Logcontext { context, .. } = &self.events[i] else {
            return None;
        };
        let in_context = |e: &Event| match e {
            Event::Resume {
                location,
                context: c,
                ..
            } if c == context => Some(location.clone()),
            _ => None,
        };
        let step_after = || self.events[i + 1..].iter().take_while(|e| !boundary(e));
        step_after()
            .find_map(in_context)
            .or_else(|| self.events[..i].iter().rev().find_map(in_context))
            .or_else(|| {
                step_after().find_map(|e| match e {
                    Event::Resume { location, .. } => Some(location.clone()),
                    _ => None,
                })
            })
    }
}

/// Runs the code once, cancelling at point `cancel_at` (never if `None`).
fn run_once<T: 'static>(
    options: &FuzzOptions,
    start: &mut dyn FnMut(&mut FuzzRun) -> Deferred<T>,
    cancel_at: Option<usize>,
) -> RunRecord {
    let mut session = Session::start();
    let recorder = session.recorder.clone();
    let tracker = options.collect_garbage.then(Tracker::start);
    let mut run = FuzzRun::new(cancel_at);
    let moment = run.moment.clone();

    let target = start(&mut run).as_any();
    let target_id = target.id();
    let first_started = recorder.coroutines.borrow().keys().min().copied();
    let target_co = recorder.coroutine_of(target_id).or(first_started);
    let ending: Rc<RefCell<Option<Ending>>> = Rc::new(RefCell::new(None));
    let sink = ending.clone();
    target.add_both(move |outcome: Result<AnyValue, Failure>| {
        *sink.borrow_mut() = Some(Ending::of(&outcome));
        Ok::<_, Failure>(AnyValue::none())
    });

    let mut points = Vec::new();
    let mut cancel = None;
    let mut steps = 0;
    let mut after = "start".to_owned();
    let mut step_limit_hit = false;
    loop {
        if ending.borrow().is_none() && cancel.is_none() {
            let index = points.len();
            let awaiting: Vec<AwaitSite> = target_co
                .map(|co| recorder.suspensions_of(co))
                .unwrap_or_default()
                .into_iter()
                .map(|(_, site)| site)
                .collect();
            points.push(PointSeen {
                steps,
                after: after.clone(),
                awaiting,
            });
            if cancel_at == Some(index) {
                cancel = Some(cancel_now(&recorder, &mut run, &target, target_co, &moment));
                moment.set(Moment::Steps(steps));
                run.run_after_each_step(&recorder);
            }
        }
        if steps >= options.max_steps {
            step_limit_hit = true;
            break;
        }
        recorder.push(Event::Step);
        let Some((label, outcome)) = run.drive_one() else {
            break;
        };
        steps += 1;
        moment.set(Moment::Steps(steps));
        if let Err(f) = outcome {
            recorder.push(Event::Raised {
                what: label.clone(),
                message: f.to_string(),
            });
        }
        run.run_after_each_step(&recorder);
        after = label;
    }

    let end_context = current_context().to_string();
    let final_ending = ending.borrow().clone().unwrap_or(Ending::Pending);
    let bystanders = run
        .bystanders
        .iter()
        .map(|b| (b.name.clone(), b.ending.borrow().clone()))
        .collect();

    // Teardown: the code's own cleanups, then whatever is left alive.
    recorder.push(Event::Teardown);
    for f in std::mem::take(&mut run.at_end) {
        let _ = catch_unwind(AssertUnwindSafe(f));
    }
    drop(run);
    drop(target);
    let suspended = std::mem::take(&mut *recorder.suspended.borrow_mut());
    drop(suspended);
    let protected = std::mem::take(&mut *recorder.protected.borrow_mut());
    drop(protected);
    if let Some(tracker) = tracker {
        tracker.collect();
    }
    session.restore();
    let events = std::mem::take(&mut *recorder.events.borrow_mut());
    RunRecord {
        points,
        cancel,
        ending: final_ending,
        bystanders,
        steps,
        step_limit_hit,
        end_context,
        events,
        target: target_co,
    }
}

/// Cancels now, and looks at what the cancel did at once.
fn cancel_now(
    recorder: &Recorder,
    run: &mut FuzzRun,
    target: &Deferred<AnyValue>,
    target_co: Option<CoroutineId>,
    moment: &Cell<Moment>,
) -> CancelSeen {
    // Awaited Deferreds the cancel should reach: the coroutine's, and
    // those of the coroutines whose Deferreds it awaits.
    let mut chain: Vec<(Deferred<AnyValue>, AwaitSite)> = Vec::new();
    let mut todo: Vec<CoroutineId> = target_co.into_iter().collect();
    while let Some(co) = todo.pop() {
        for (awaited, site) in recorder.suspensions_of(co) {
            if site.protection.is_none()
                && let Some(inner) = recorder.coroutine_of(awaited.id())
                && !todo.contains(&inner)
                && chain.iter().all(|(d, _)| !d.ptr_eq(&awaited))
            {
                todo.push(inner);
            }
            chain.push((awaited, site));
        }
    }
    let shared = target_co
        .map(|co| {
            let all = recorder.suspended.borrow();
            all.iter()
                .filter(|s| s.co == co && s.site.protection.is_none())
                .filter_map(|mine| {
                    let others: Vec<AwaitSite> = all
                        .iter()
                        .filter(|o| o.co != co && o.awaited.ptr_eq(&mine.awaited))
                        .map(|o| o.site.clone())
                        .collect();
                    (!others.is_empty()).then(|| (mine.site.clone(), others))
                })
                .collect()
        })
        .unwrap_or_default();
    let target_protected = recorder.protection_of(target);

    let event = recorder.events.borrow().len();
    recorder.push(Event::Cancel);
    moment.set(Moment::Cancel);
    let cancelled = match run.cancel_with.take() {
        Some(f) => guarded(f),
        None => guarded(|| target.cancel()),
    };
    if let Err(f) = cancelled {
        recorder.push(Event::Raised {
            what: "cancel()".to_owned(),
            message: f.to_string(),
        });
    }
    let context_after = current_context().to_string();
    // A Deferred that is itself a stop/delay_cancellation wrapper keeps the
    // cancel from the work on purpose.
    let not_reached = if target_protected.is_some() {
        Vec::new()
    } else {
        chain
            .into_iter()
            .filter(|(d, _)| !d.called())
            .map(|(_, site)| site)
            .collect()
    };
    CancelSeen {
        event,
        context_after,
        not_reached,
        shared,
    }
}

// ---------------------------------------------------------------------------
// Judging

/// The positions of what `a` has beyond `b`, as multisets, in `a`'s order.
fn new_in(a: &[&str], b: &[&str]) -> Vec<usize> {
    let mut left: Vec<&str> = b.to_vec();
    let mut fresh = Vec::new();
    for (i, x) in a.iter().enumerate() {
        match left.iter().position(|y| y == x) {
            Some(p) => {
                left.remove(p);
            }
            None => fresh.push(i),
        }
    }
    fresh
}

fn judge(base: &RunRecord, run: &RunRecord, index: usize) -> CancellationPoint {
    let seen = base.points[index].clone();
    let mut point = CancellationPoint {
        index,
        steps: seen.steps,
        after: seen.after.clone(),
        awaiting: seen.awaiting.clone(),
        reached: run.cancel.is_some(),
        ending: run.ending.clone(),
        violations: Vec::new(),
    };
    let Some(cancel) = &run.cancel else {
        return point;
    };
    let mut v: Vec<Violation> = Vec::new();
    let at_point = run
        .points
        .get(index)
        .and_then(|p| p.awaiting.first())
        .map(|s| s.location.clone());

    // Bystanders: did another request notice?
    let mut noticed: Vec<String> = Vec::new();
    for ((name, now), (_, before)) in run.bystanders.iter().zip(&base.bystanders) {
        let now_ending = now
            .as_ref()
            .map(|(e, _)| e.clone())
            .unwrap_or(Ending::Pending);
        let before_ending = before
            .as_ref()
            .map(|(e, _)| e.clone())
            .unwrap_or(Ending::Pending);
        if matches!(now, Some((_, Moment::Cancel))) {
            noticed.push(format!(
                "{name}, waiting too, ended during the cancel with {now_ending} (without the cancel: {before_ending})"
            ));
        } else if !now_ending.same_kind(&before_ending) {
            noticed.push(format!(
                "{name} ended with {now_ending} (without the cancel: {before_ending})"
            ));
        }
    }
    let shared_detail: Vec<String> = cancel
        .shared
        .iter()
        .map(|(mine, others)| {
            let others: Vec<String> = others.iter().map(|o| o.location.to_string()).collect();
            format!(
                "the Deferred awaited at {} is also awaited by {} other coroutine{} (at {}): cancelling this waiter cancelled it for all of them",
                mine.location,
                others.len(),
                if others.len() == 1 { "" } else { "s" },
                others.join(", ")
            )
        })
        .collect();
    let shared = !shared_detail.is_empty() || !noticed.is_empty();
    if shared {
        let mut detail = shared_detail;
        detail.extend(noticed);
        v.push(Violation {
            rule: Rule::SharedDeferredCancelled,
            location: cancel
                .shared
                .first()
                .map(|(s, _)| s.location.clone())
                .or_else(|| at_point.clone()),
            detail: detail.join("; "),
        });
    }

    // The cancelled coroutine's own story after the cancel.
    let after_cancel = &run.events[cancel.event..];
    let mine = |e: &&Event| match e {
        Event::Await { co, .. } | Event::Resume { co, .. } | Event::Finish { co } => {
            Some(*co) == run.target
        }
        _ => false,
    };
    let first_resume = after_cancel.iter().filter(mine).find_map(|e| match e {
        Event::Resume {
            location, outcome, ..
        } => Some((location.clone(), outcome.clone())),
        _ => None,
    });
    let went_on_at = after_cancel
        .iter()
        .filter(mine)
        .skip_while(|e| !matches!(e, Event::Resume { .. }))
        .find_map(|e| match e {
            Event::Await { site, .. } => Some(site.location.clone()),
            _ => None,
        });
    let consequence = match &run.ending {
        Ending::Completed(value) => {
            format!("the coroutine returned normally ({value}): Synapse would answer 200, not 499")
        }
        Ending::Failed(failure) => {
            format!("it failed with {failure} instead: Synapse would answer 500, not 499")
        }
        Ending::Pending => "it never finished".to_owned(),
        Ending::FirstErrorCancelled => {
            "it failed with FirstError(CancelledError): Synapse would answer 500, not 499"
                .to_owned()
        }
        Ending::Cancelled => String::new(),
    };
    let went_on = went_on_at
        .as_ref()
        .map(|l| format!("it went on to await at {l}; "))
        .unwrap_or_default();
    match (&run.ending, &first_resume) {
        (Ending::Cancelled, _) => {}
        (_, Some((location, Resumed::FirstErrorCancelled))) => v.push(Violation {
            rule: Rule::FirstErrorNotUnwrapped,
            location: Some(location.clone()),
            detail: format!(
                "FirstError(CancelledError) came out of the await at {location}, and the cancel was not recognised: {went_on}{consequence}"
            ),
        }),
        (Ending::FirstErrorCancelled, _) => v.push(Violation {
            rule: Rule::FirstErrorNotUnwrapped,
            location: first_resume.as_ref().map(|(l, _)| l.clone()).or(at_point.clone()),
            detail: consequence.clone(),
        }),
        (_, Some((location, Resumed::Cancelled | Resumed::Other(_)))) => {
            let what = first_resume
                .as_ref()
                .map(|(_, o)| o.to_string())
                .unwrap_or_default();
            v.push(Violation {
                rule: Rule::CancelledErrorSwallowed,
                location: Some(location.clone()),
                detail: format!(
                    "{what} came out of the await at {location} and was caught: {went_on}{consequence}"
                ),
            })
        }
        (_, Some((location, Resumed::Value))) if !shared => v.push(Violation {
            rule: Rule::CancelledErrorSwallowed,
            location: Some(location.clone()),
            detail: format!(
                "the await at {location} resumed with a value after the cancel (its canceller gave it one): {went_on}{consequence}"
            ),
        }),
        (_, Some((_, Resumed::Value))) => {}
        (Ending::Pending, None) => v.push(Violation {
            rule: Rule::NeverFinished,
            location: at_point.clone(),
            detail: match &at_point {
                Some(l) => format!("the coroutine is still suspended at {l}, which never resumed"),
                None => "the Deferred never got a result after the cancel".to_owned(),
            },
        }),
        (Ending::Completed(_), None) if shared => {}
        (_, None) => v.push(Violation {
            rule: Rule::CancelledErrorSwallowed,
            location: at_point.clone(),
            detail: consequence.clone(),
        }),
    }

    for site in &cancel.not_reached {
        v.push(Violation {
            rule: Rule::CancelNotPropagated,
            location: Some(site.location.clone()),
            detail: format!(
                "the Deferred awaited at {site} had no result after cancel() returned: its work goes on, unseen"
            ),
        });
    }

    // Logging contexts.
    let base_reports = base.logcontext_reports();
    let run_reports = run.logcontext_reports();
    let before_teardown = |r: &&(usize, &str, bool), record: &RunRecord| {
        !record.events[..r.0]
            .iter()
            .any(|e| matches!(e, Event::Teardown))
    };
    let base_msgs: Vec<&str> = base_reports
        .iter()
        .filter(|r| before_teardown(r, base))
        .map(|r| r.1)
        .collect();
    let run_kept: Vec<&(usize, &str, bool)> = run_reports
        .iter()
        .filter(|r| before_teardown(r, run))
        .collect();
    let run_msgs: Vec<&str> = run_kept.iter().map(|r| r.1).collect();
    for i in new_in(&run_msgs, &base_msgs) {
        let (event, message, reused) = *run_kept[i];
        v.push(Violation {
            rule: if reused {
                Rule::LoggingContextReusedAfterFinish
            } else {
                Rule::LoggingContextMisused
            },
            location: run.attribute(event),
            detail: format!("\"{message}\" reported after the cancel"),
        });
    }
    if cancel.context_after != SENTINEL_CONTEXT.to_string() {
        v.push(Violation {
            rule: Rule::LoggingContextLeftCurrent,
            location: at_point.clone(),
            detail: format!(
                "cancel() returned with the logging context {} current, not its caller's (the sentinel)",
                cancel.context_after
            ),
        });
    }
    if run.end_context != base.end_context {
        v.push(Violation {
            rule: Rule::LoggingContextLeftCurrent,
            location: None,
            detail: format!(
                "the run ended with the logging context {} current (without the cancel: {})",
                run.end_context, base.end_context
            ),
        });
    }

    // Unhandled errors (teardown included: abandoned Deferreds).
    let base_failures = base.failures();
    let run_failures = run.failures();
    let base_f: Vec<&str> = base_failures.iter().map(String::as_str).collect();
    let run_f: Vec<&str> = run_failures.iter().map(String::as_str).collect();
    for i in new_in(&run_f, &base_f) {
        v.push(Violation {
            rule: Rule::UnhandledError,
            location: None,
            detail: run_failures[i].clone(),
        });
    }
    point.violations = v;
    point
}

fn baseline_of(base: &RunRecord) -> Baseline {
    // Reports made while tearing down what never finished are artifacts
    // of the teardown (a dropped coroutine leaves its `with` blocks).
    let teardown = base
        .events
        .iter()
        .position(|e| matches!(e, Event::Teardown))
        .unwrap_or(base.events.len());
    let mut problems: Vec<String> = base
        .logcontext_reports()
        .iter()
        .filter(|r| r.0 < teardown)
        .map(|r| format!("logging context misuse \"{}\"", r.1))
        .collect();
    problems.extend(base.failures());
    if base.end_context != SENTINEL_CONTEXT.to_string() {
        problems.push(format!(
            "the run ends with the logging context {} current",
            base.end_context
        ));
    }
    Baseline {
        ending: base.ending.clone(),
        steps: base.steps,
        problems,
    }
}

// ---------------------------------------------------------------------------
// The entry points

/// Runs `start` once without cancelling and once more per suspension
/// point, cancelling there, with the default [`FuzzOptions`]; see the
/// [module docs](self).
///
/// `start` must build everything afresh on each call (the Deferreds, the
/// clock, the caches it fills; clear thread-local state with
/// [`FuzzRun::at_end`]) and return the Deferred the caller waits on. The
/// fuzzer takes that Deferred's result, as its caller would.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::{fuzz_cancellation, Ending};
/// use twisted_compat::{make_deferred_yieldable, Failure, LoggingContext};
/// use twisted_deferred::ensure_deferred;
/// use twisted_reactor::{defer_later, Clock};
///
/// let report = fuzz_cancellation(|run| {
///     let clock = Clock::new();
///     run.clock(&clock);
///     ensure_deferred(async move {
///         let context = LoggingContext::new("request-1", "example.com");
///         let _scope = context.entered();             // with LoggingContext("request-1"):
///         make_deferred_yieldable(defer_later(&clock, 1.0, || Ok::<_, Failure>(()))).await?;
///         Ok::<_, Failure>(200)
///     })
/// });
/// assert!(report.is_safe(), "{report}");
/// assert_eq!(report.points[0].ending, Ending::Cancelled);
/// ```
pub fn fuzz_cancellation<T: 'static>(start: impl FnMut(&mut FuzzRun) -> Deferred<T>) -> FuzzReport {
    fuzz_cancellation_with(&FuzzOptions::default(), start)
}

/// [`fuzz_cancellation`] with options.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::{fuzz_cancellation_with, FuzzOptions};
/// use twisted_compat::{Deferred, Failure};
/// use twisted_deferred::ensure_deferred;
/// let report = fuzz_cancellation_with(&FuzzOptions::new().debugging(false), |_run| {
///     let d: Deferred<()> = Deferred::new();
///     ensure_deferred(async move { d.await?; Ok::<_, Failure>(()) })
/// });
/// assert!(report.is_safe());
/// ```
pub fn fuzz_cancellation_with<T: 'static>(
    options: &FuzzOptions,
    mut start: impl FnMut(&mut FuzzRun) -> Deferred<T>,
) -> FuzzReport {
    let _debugging = options.debugging.then(DebuggingOn::start);
    let base = run_once(options, &mut start, None);
    let mut step_limit_hit = base.step_limit_hit;
    let mut points = Vec::new();
    for index in 0..base.points.len() {
        let run = run_once(options, &mut start, Some(index));
        step_limit_hit |= run.step_limit_hit;
        points.push(judge(&base, &run, index));
    }
    let awaits_observed = base.target.is_some();
    let at_points: Vec<&SourceLocation> = base
        .points
        .iter()
        .flat_map(|p| p.awaiting.iter().map(|s| &s.location))
        .collect();
    let mut passed_through: Vec<AwaitSite> = Vec::new();
    for event in &base.events {
        if let Event::Await {
            co,
            site,
            suspends: true,
        } = event
            && Some(*co) == base.target
            && !at_points.contains(&&site.location)
            && !passed_through.iter().any(|s| s.location == site.location)
        {
            passed_through.push(site.clone());
        }
    }
    FuzzReport {
        points,
        baseline: baseline_of(&base),
        awaits_observed,
        passed_through,
        step_limit_hit,
    }
}

/// Fuzzes `start` ([`fuzz_cancellation`]) and panics with the report if any
/// point broke a rule: for tests.
///
/// ```
/// use twisted_compat::cancellation_fuzzer::assert_cancellation_safe;
/// use twisted_compat::{Deferred, Failure};
/// use twisted_deferred::ensure_deferred;
///
/// assert_cancellation_safe(|_run| {
///     let d: Deferred<()> = Deferred::new();
///     ensure_deferred(async move { d.await?; Ok::<_, Failure>(()) })
/// });
/// ```
///
/// ```should_panic
/// # use twisted_compat::cancellation_fuzzer::assert_cancellation_safe;
/// # use twisted_compat::{Deferred, Failure};
/// # use twisted_deferred::ensure_deferred;
/// assert_cancellation_safe(|_run| {
///     let d: Deferred<()> = Deferred::new();
///     ensure_deferred(async move { let _ = d.await; Ok::<_, Failure>(()) })  // swallows it
/// });
/// ```
#[track_caller]
pub fn assert_cancellation_safe<T: 'static>(start: impl FnMut(&mut FuzzRun) -> Deferred<T>) {
    let report = fuzz_cancellation(start);
    if !report.is_safe() {
        panic!("not cancellation-safe:\n{report}");
    }
}
