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
//! logging contexts, with runnable examples (`compat/examples/`).

#![warn(missing_docs)]

pub mod background_process;
pub mod cancellation;
pub mod clock;
pub mod event;
pub mod gather;
pub mod guide;
pub mod linearizer;
pub mod logcontext;
pub mod observable;
pub mod response_cache;
pub mod rwlock;
pub mod sleeper;
pub mod timeout;

pub use background_process::{
    NoneValue, clear_background_process_counts, run_as_background_process,
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
    ContextRequest, EnteredContext, IntoDeferred, LogcontextError, LogcontextErrorHook,
    LoggingContext, LoggingContextBuilder, LoggingContextOrSentinel, PreserveLoggingContext,
    ReturnsDeferred, ReturnsFuture, ReturnsResult, SENTINEL_CONTEXT, SENTINEL_SERVER_NAME,
    capture_logcontext_errors, current_context, logcontext_error, make_deferred_yieldable,
    nested_logging_context, run_coroutine_in_background, run_in_background, set_current_context,
    set_logcontext_error_hook,
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
