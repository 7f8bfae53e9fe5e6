//! Synapse's background processes:
//! `synapse.metrics.background_process_metrics.run_as_background_process`.
//!
//! A background process is work started on its own, not for a request: it
//! runs in a fresh logging context of its own, named after what it does,
//! and whatever it raises is logged and swallowed.
//!
//! Synapse keeps metrics per process description and server (starts,
//! in-flight count, CPU and database usage), brought up to date when a
//! process ends and, for the processes that ran since the last scrape, on
//! each scrape: [`collect_background_process_metrics`] returns them
//! (without a Prometheus registry). `HomeServer`'s tracking of processes
//! for shutdown is not part of this module.
//!
//! ```
//! use twisted_compat::{current_context, run_as_background_process, Failure};
//!
//! // run_as_background_process("prune", "example.com", prune)
//! let d = run_as_background_process("prune", "example.com", || async {
//!     assert_eq!(current_context().to_string(), "prune-0");
//!     Ok::<_, Failure>(Some(7))
//! });
//! assert_eq!(d.result().value(), Some(Some(7)));
//! assert!(current_context().is_sentinel());
//! ```

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use twisted_deferred::{AnyValue, Deferred, Failure, ensure_deferred};

use crate::logcontext::{ContextResourceUsage, LoggingContext, PreserveLoggingContext};

thread_local! {
    /// Synapse's `_background_process_counts`: instances started so far,
    /// per description.
    static COUNTS: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
    /// The metrics, per (description, server name).
    static METRICS: RefCell<BTreeMap<(String, String), BackgroundProcessMetrics>> =
        const { RefCell::new(BTreeMap::new()) };
    /// Synapse's `_background_processes_active_since_last_scrape`, by
    /// context identity.
    static ACTIVE: RefCell<HashMap<usize, LoggingContext>> = RefCell::new(HashMap::new());
}

/// The metrics of the background processes of one description and server:
/// Synapse's `synapse_background_process_*` series for one
/// `(name, server_name)` label pair.
///
/// CPU and database figures are counters: each update adds what the
/// process's context used since the last one, a negative difference
/// counting as 0 (Synapse ignores negative CPU differences; Prometheus
/// would refuse a negative increment of the others).
///
/// ```
/// use twisted_compat::{collect_background_process_metrics, run_as_background_process, Failure};
///
/// run_as_background_process("report", "hs", || async { Ok::<_, Failure>(()) });
/// let all = collect_background_process_metrics();     // REGISTRY.collect()
/// let report = all.iter().find(|m| m.name == "report").unwrap();
/// assert_eq!((report.start_count, report.in_flight), (1, 0));
/// assert!(report.ru_utime_seconds >= 0.0);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackgroundProcessMetrics {
    /// The `name` label: the process description.
    pub name: String,
    /// The `server_name` label.
    pub server_name: String,
    /// `synapse_background_process_start_count`.
    pub start_count: u64,
    /// `synapse_background_process_in_flight_count` (a gauge).
    pub in_flight: i64,
    /// `synapse_background_process_ru_utime_seconds`.
    pub ru_utime_seconds: f64,
    /// `synapse_background_process_ru_stime_seconds`.
    pub ru_stime_seconds: f64,
    /// `synapse_background_process_db_txn_count`.
    pub db_txn_count: i64,
    /// `synapse_background_process_db_txn_duration_seconds`.
    pub db_txn_duration_seconds: f64,
    /// `synapse_background_process_db_sched_duration_seconds`.
    pub db_sched_duration_seconds: f64,
}

/// Changes the metrics of `(desc, server_name)`, creating them if needed.
fn with_metrics(desc: &str, server_name: &str, update: impl FnOnce(&mut BackgroundProcessMetrics)) {
    let _ = METRICS.try_with(|metrics| {
        if let Ok(mut metrics) = metrics.try_borrow_mut() {
            let entry = metrics
                .entry((desc.to_owned(), server_name.to_owned()))
                .or_insert_with(|| BackgroundProcessMetrics {
                    name: desc.to_owned(),
                    server_name: server_name.to_owned(),
                    ..BackgroundProcessMetrics::default()
                });
            update(entry);
        }
    });
}

fn set_active(context: &LoggingContext, active: bool) {
    let _ = ACTIVE.try_with(|set| {
        if let Ok(mut set) = set.try_borrow_mut() {
            if active {
                set.insert(context.identity(), context.clone());
            } else {
                set.remove(&context.identity());
            }
        }
    });
}

/// Brings the metrics up to date with the processes that ran since the last
/// call and returns every series, ordered by description then server name:
/// what a scrape of Synapse's metrics reads (`_Collector.collect`, plus the
/// start and in-flight series). Processes that did not run since are not
/// looked at; one that ended was brought up to date then.
///
/// Like the contexts they account, the metrics belong to the thread the
/// processes run on (the reactor's): this returns those of the calling
/// thread.
///
/// ```
/// use twisted_compat::{collect_background_process_metrics, current_context, run_as_background_process, Deferred, Failure};
///
/// let pending: Deferred<()> = Deferred::new();
/// let p = pending.clone();
/// run_as_background_process("wait", "hs", move || async move {
///     current_context().add_database_transaction(0.5).unwrap();
///     p.await
/// });
/// // REGISTRY.collect() while it waits
/// let wait = collect_background_process_metrics().into_iter().find(|m| m.name == "wait").unwrap();
/// assert_eq!((wait.in_flight, wait.db_txn_count, wait.db_txn_duration_seconds), (1, 1, 0.5));
/// ```
pub fn collect_background_process_metrics() -> Vec<BackgroundProcessMetrics> {
    let active = ACTIVE
        .try_with(|set| set.try_borrow_mut().map(|mut s| std::mem::take(&mut *s)))
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    for context in active.into_values() {
        if let Some(slot) = context.background_slot() {
            slot.update_metrics(&context);
        }
    }
    METRICS
        .try_with(|metrics| {
            metrics
                .try_borrow()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// Forgets every background process metric on this thread (a test
/// harness's reset; Synapse's registry lives as long as the process).
///
/// ```
/// use twisted_compat::{clear_background_process_metrics, collect_background_process_metrics, run_as_background_process, Failure};
/// run_as_background_process("job", "hs", || async { Ok::<_, Failure>(()) });
/// clear_background_process_metrics();
/// assert!(collect_background_process_metrics().iter().all(|m| m.name != "job"));
/// ```
pub fn clear_background_process_metrics() {
    let _ = METRICS.try_with(|metrics| {
        if let Ok(mut metrics) = metrics.try_borrow_mut() {
            metrics.clear();
        }
    });
    let _ = ACTIVE.try_with(|set| {
        if let Ok(mut set) = set.try_borrow_mut() {
            set.clear();
        }
    });
}

/// Synapse's `_BackgroundProcess`: what a background process's context
/// reports its usage as.
struct ProcessRecord {
    desc: String,
    server_name: String,
    /// `_reported_stats`: the usage reported last.
    reported: Cell<Option<ContextResourceUsage>>,
}

/// The part of a background process's context that Synapse's
/// `BackgroundProcessLoggingContext` adds: its `_proc`, dropped when the
/// context exits.
pub(crate) struct ProcessSlot {
    record: RefCell<Option<ProcessRecord>>,
}

impl fmt::Debug for ProcessSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ended = self.record.try_borrow().is_ok_and(|r| r.is_none());
        f.debug_struct("ProcessSlot")
            .field("ended", &ended)
            .finish()
    }
}

impl ProcessSlot {
    fn new(desc: &str, server_name: &str) -> ProcessSlot {
        ProcessSlot {
            record: RefCell::new(Some(ProcessRecord {
                desc: desc.to_owned(),
                server_name: server_name.to_owned(),
                reported: Cell::new(None),
            })),
        }
    }

    /// `BackgroundProcessLoggingContext.start`, after `LoggingContext.start`.
    pub(crate) fn started(&self, context: &LoggingContext) {
        let has_record = self.record.try_borrow().is_ok_and(|r| r.is_some());
        if has_record {
            set_active(context, true);
        } else {
            log::error!(
                target: "synapse.metrics.background_process_metrics",
                "Background process re-entered without a proc: {}",
                context.name()
            );
        }
    }

    /// `BackgroundProcessLoggingContext.__exit__`, after
    /// `LoggingContext.__exit__`.
    pub(crate) fn exited(&self, context: &LoggingContext) {
        let record = self.record.try_borrow_mut().ok().and_then(|mut r| r.take());
        match record {
            Some(record) => {
                set_active(context, false);
                record.update_metrics(context.get_resource_usage());
            }
            None => log::error!(
                target: "synapse.metrics.background_process_metrics",
                "Background process exited without a proc: {}",
                context.name()
            ),
        }
    }

    /// `_BackgroundProcess.update_metrics()`, if the process has not ended.
    fn update_metrics(&self, context: &LoggingContext) {
        let usage = context.get_resource_usage();
        if let Ok(record) = self.record.try_borrow()
            && let Some(record) = &*record
        {
            record.update_metrics(usage);
        }
    }
}

impl ProcessRecord {
    /// `_BackgroundProcess.update_metrics()`: adds what the context used
    /// since the last report.
    fn update_metrics(&self, new_stats: ContextResourceUsage) {
        let diff = match self.reported.get() {
            None => new_stats,
            Some(reported) => new_stats - reported,
        };
        self.reported.set(Some(new_stats));
        with_metrics(&self.desc, &self.server_name, |m| {
            m.ru_utime_seconds += diff.ru_utime.max(0.0);
            m.ru_stime_seconds += diff.ru_stime.max(0.0);
            m.db_txn_count += diff.db_txn_count.max(0);
            m.db_txn_duration_seconds += diff.db_txn_duration_sec.max(0.0);
            m.db_sched_duration_seconds += diff.db_sched_duration_sec.max(0.0);
        });
    }
}

/// `BackgroundProcessLoggingContext(name=name, server_name=server_name,
/// instance_id=instance_id)`: a context named `"<name>-<instance_id>"`,
/// without parent, whose usage counts for the metrics of `name`
/// ([`collect_background_process_metrics`]) while it runs and when it
/// exits. [`run_as_background_process`] makes one per process.
///
/// Beyond a plain context's checks, starting it again after it exited logs
/// "Background process re-entered without a proc: `<name>`" at error level,
/// and so does exiting it twice ("… exited without a proc …").
///
/// ```
/// use twisted_compat::background_process::background_process_logging_context;
/// use twisted_compat::current_context;
///
/// // with BackgroundProcessLoggingContext(name="replication", server_name="hs", instance_id="a1b2"):
/// let ctx = background_process_logging_context("replication", "hs", "a1b2");
/// let scope = ctx.entered();
/// assert_eq!(current_context().to_string(), "replication-a1b2");
/// drop(scope);
/// ```
pub fn background_process_logging_context(
    name: &str,
    server_name: &str,
    instance_id: impl fmt::Display,
) -> LoggingContext {
    LoggingContext::builder(format!("{name}-{instance_id}"), server_name)
        .background(ProcessSlot::new(name, server_name))
        .build()
}

/// The instance number of the next process described `desc`, counted.
fn next_instance(desc: &str) -> u64 {
    COUNTS
        .try_with(|counts| match counts.try_borrow_mut() {
            Ok(mut counts) => {
                let n = counts.entry(desc.to_owned()).or_insert(0);
                let this = *n;
                *n += 1;
                this
            }
            Err(_) => 0,
        })
        .unwrap_or(0)
}

/// Forgets how many background processes of each description have started
/// on this thread, so that the next of each is numbered 0 again: what a
/// test harness does between tests (Synapse's driver clears
/// `_background_process_counts`).
///
/// ```
/// use twisted_compat::{clear_background_process_counts, current_context, run_as_background_process, Failure};
/// let name = || async { Ok::<_, Failure>(Some(current_context().to_string())) };
/// assert_eq!(run_as_background_process("job", "hs", name).result().value(), Some(Some("job-0".into())));
/// clear_background_process_counts();                 // _background_process_counts.clear()
/// assert_eq!(run_as_background_process("job", "hs", name).result().value(), Some(Some("job-0".into())));
/// ```
pub fn clear_background_process_counts() {
    let _ = COUNTS.try_with(|counts| {
        if let Ok(mut counts) = counts.try_borrow_mut() {
            counts.clear();
        }
    });
}

/// A future whose panics become failures, so that a background process
/// swallows them as it swallows every other failure.
struct CatchUnwind<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, Failure>>>>,
}

impl<T> Future for CatchUnwind<T> {
    type Output = Result<T, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.inner.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => Poll::Ready(Err(Failure::from_panic(panic))),
        }
    }
}

/// A result type with a value standing for Python's `None`: what the
/// Deferred of a [`run_as_background_process`] whose work failed holds.
///
/// ```
/// use twisted_compat::NoneValue;
/// use twisted_deferred::AnyValue;
/// assert_eq!(<Option<i32>>::none_value(), None);      // None
/// assert!(AnyValue::none_value().is_none());
/// ```
pub trait NoneValue {
    /// Python's `None` in this type.
    ///
    /// ```
    /// use twisted_compat::NoneValue;
    /// assert_eq!(<Option<u8>>::none_value(), None);   // None
    /// ```
    fn none_value() -> Self;
}

impl NoneValue for () {
    /// `()`.
    fn none_value() -> Self {}
}

impl<T> NoneValue for Option<T> {
    /// `None`.
    fn none_value() -> Self {
        None
    }
}

impl NoneValue for AnyValue {
    /// [`AnyValue::none()`].
    fn none_value() -> Self {
        AnyValue::none()
    }
}

/// `run_as_background_process(desc, server_name, func)`: runs `func` and
/// awaits what it returns (an `async` block, or a Deferred), in a logging
/// context of its own.
///
/// * `func` is called now, and runs until it first suspends, in a fresh
///   context named `"<desc>-<n>"`, `n` counting the processes described
///   `desc` started on this thread (from 0). That context has no parent
///   (nothing it uses is accounted to the caller) and the sentinel as its
///   previous context: it is created
///   ([`background_process_logging_context`]) and entered inside a
///   [`PreserveLoggingContext`] block, so the caller's context is current
///   again when this returns. If the process is still running then, its
///   context is still current at the end of that block, which reports it
///   ("expected sentinel, found `<desc>-<n>`").
/// * When `func`'s work ends, its context is exited (which reports it if it
///   is not current then) and the returned Deferred fires, in the sentinel
///   context, with the work's value, or with Python's `None`
///   ([`NoneValue`]: `None` for an `Option`, `()`, [`AnyValue::none()`]) if
///   the work failed or panicked, `CancelledError` included; the failure is
///   logged at error level.
/// * The process counts in its description's metrics
///   ([`collect_background_process_metrics`]): started, in flight until its
///   work ends, and its context's CPU and database usage.
///
/// The returned Deferred does not follow the logcontext rules: await it
/// through [`make_deferred_yieldable`](crate::make_deferred_yieldable).
/// Cancelling it cancels what the process awaits; the process ends with
/// `None`.
///
/// ```
/// use twisted_compat::{current_context, run_as_background_process, Deferred, Failure, LoggingContext};
///
/// let ctx = LoggingContext::new("req", "example.com");
/// let _scope = ctx.entered();
/// let never: Deferred<Option<i32>> = Deferred::new();
/// let awaited = never.clone();
/// // d = run_as_background_process("fetch", "example.com", fetch)
/// let d = run_as_background_process("fetch", "example.com", move || awaited);
/// assert_eq!(current_context(), ctx);                  // the caller's context is back
/// d.cancel().unwrap();                                 // CancelledError, swallowed
/// assert_eq!(d.result().value(), Some(None));
/// ```
pub fn run_as_background_process<T, F, Fut>(desc: &str, server_name: &str, func: F) -> Deferred<T>
where
    T: NoneValue + 'static,
    F: FnOnce() -> Fut + 'static,
    Fut: IntoFuture<Output = Result<T, Failure>>,
    Fut::IntoFuture: 'static,
{
    let desc = desc.to_owned();
    let server_name = server_name.to_owned();
    let preserve = PreserveLoggingContext::sentinel();
    let d = ensure_deferred(async move {
        let instance = next_instance(&desc);
        with_metrics(&desc, &server_name, |m| {
            m.start_count += 1;
            m.in_flight += 1;
        });
        let context = background_process_logging_context(&desc, &server_name, instance);
        let scope = context.entered();
        let work = CatchUnwind {
            inner: Box::pin(async move { func().await }),
        };
        let outcome = match work.await {
            Ok(value) => value,
            Err(failure) => {
                log::error!("Background process '{desc}' threw an exception: {failure}");
                T::none_value()
            }
        };
        with_metrics(&desc, &server_name, |m| m.in_flight -= 1);
        drop(scope);
        Ok::<_, Failure>(outcome)
    });
    preserve.exit();
    d
}
