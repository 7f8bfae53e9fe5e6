//! The names a porter types: Twisted's `twisted.internet.defer` functions
//! and Synapse's cancellation machinery on top of [`twisted_deferred`]:
//! logging contexts ([`logcontext`], [`background_process`]),
//! [`ObservableDeferred`], [`stop_cancellation`], [`delay_cancellation`],
//! [`timeout_deferred`], Synapse's [`Clock`] wrapper, [`Linearizer`],
//! [`ReadWriteLock`], the gathering helpers ([`gather`]),
//! [`AwakenableSleeper`], [`DeferredEvent`], [`ResponseCache`]. Names and
//! argument order follow Synapse's, so a port reads line for line.
//!
//! [`guide`] walks a Twisted user through Deferreds, cancellation and
//! logging contexts, with runnable examples (`compat/examples/`);
//! [`cancellation_fuzzer`] finds the cancellation bugs the guide describes
//! in any code.

#![warn(missing_docs)]

pub mod background_process;
pub mod cancellable_marker;
pub mod cancellation;
pub mod cancellation_fuzzer;
pub mod clock;
pub mod event;
pub mod gather;
pub mod guide;
pub mod http;
pub mod linearizer;
pub mod logcontext;
pub mod observable;
pub mod response_cache;
pub mod rwlock;
pub mod sleeper;
pub mod timeout;

pub use background_process::{
    BackgroundProcessMetrics, NoneValue, clear_background_process_counts,
    clear_background_process_metrics, collect_background_process_metrics,
    run_as_background_process,
};
pub use cancellable_marker::{
    Cancellable, MaybeCancellable, ReturnsCancellable, is_cancellable, is_function_cancellable,
};
pub use cancellation::{delay_cancellation, delay_cancellation_coroutine, stop_cancellation};
pub use clock::Clock;
pub use event::DeferredEvent;
pub use gather::{
    concurrently_execute, concurrently_execute_delaying_cancellation, yieldable_gather_results,
    yieldable_gather_results_delaying_cancellation,
};
pub use linearizer::{Linearizer, LinearizerGuard};
pub use logcontext::{
    ContextRequest, ContextResourceUsage, EnteredContext, IntoDeferred, InvalidDurationError,
    LogcontextError, LogcontextErrorHook, LoggingContext, LoggingContextBuilder,
    LoggingContextFilter, LoggingContextOrSentinel, PreserveLoggingContext, ReturnsDeferred,
    ReturnsFuture, ReturnsResult, SENTINEL_CONTEXT, SENTINEL_SERVER_NAME, ThreadCpuUsage,
    capture_logcontext_errors, current_context, defer_to_thread, defer_to_threadpool,
    get_thread_resource_usage, logcontext_error, make_deferred_yieldable, nested_logging_context,
    run_coroutine_in_background, run_in_background, set_current_context, set_logcontext_error_hook,
};
pub use observable::{
    AbstractObservableDeferred, NoResultError, ObservableDeferred, observe_deferred,
};
pub use response_cache::{ResponseCache, ResponseCacheContext};
pub use rwlock::{ReadWriteLock, ReadWriteLockGuard};
pub use sleeper::AwakenableSleeper;
pub use timeout::timeout_deferred;

pub use twisted_deferred::{
    AlreadyCalledError, CancelledError, Deferred, Failure, FirstError, TimeoutError, execute, fail,
    maybe_deferred, passthru, succeed,
};

/// Synapse's `@cancellable`: marks an `async fn` as audited for
/// cancellation, so that [`is_function_cancellable`] answers true for it
/// (see [`cancellable_marker`]). The HTTP layer cancels a cancellable
/// handler when its client disconnects; [`ResponseCache`] may cancel a
/// cancellable computation nobody waits for.
///
/// ```
/// use twisted_compat::{cancellable, is_function_cancellable, Deferred, Failure};
///
/// struct Handler;
/// impl Handler {
///     #[cancellable]
///     async fn on_get(&self, wait: Deferred<u32>) -> Result<u32, Failure> {
///         let n = wait.await?;                                  // await wait
///         Ok(n * 2)
///     }
/// }
/// assert!(is_function_cancellable(&Handler::on_get));          // is_function_cancellable(Handler.on_GET)
/// let wait: Deferred<u32> = Deferred::new();
/// let w = wait.clone();
/// let d = twisted_deferred::ensure_deferred(async move { Handler.on_get(w).await });
/// wait.callback(21).unwrap();
/// assert_eq!(d.result().value(), Some(42));
/// ```
///
/// Only an `async fn` can be marked (a compile error otherwise):
///
/// ```compile_fail
/// #[twisted_compat::cancellable]
/// fn not_a_coroutine() -> u32 { 1 }
/// ```
pub use twisted_compat_macros::cancellable;

/// The README's examples, compiled and run as doctests (here, where every
/// crate they use is a dependency).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
