//! Synapse's background processes:
//! `synapse.metrics.background_process_metrics.run_as_background_process`.
//!
//! A background process is work started on its own, not for a request: it
//! runs in a fresh logging context of its own, named after what it does,
//! and whatever it raises is logged and swallowed.
//!
//! Synapse also keeps Prometheus metrics per process description (starts,
//! in-flight count, CPU and database usage); they are not part of this
//! module, which has no metrics registry. Neither is `HomeServer`'s tracking
//! of processes for shutdown.
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

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use twisted_deferred::{AnyValue, Deferred, Failure, ensure_deferred};

use crate::logcontext::{LoggingContext, PreserveLoggingContext};

thread_local! {
    /// Synapse's `_background_process_counts`: instances started so far,
    /// per description.
    static COUNTS: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
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
///   previous context: it is created and entered inside a
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
        let context = LoggingContext::new(format!("{desc}-{instance}"), server_name);
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
        drop(scope);
        Ok::<_, Failure>(outcome)
    });
    preserve.exit();
    d
}
