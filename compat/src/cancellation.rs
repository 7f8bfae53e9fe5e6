//! Synapse's `stop_cancellation` and `delay_cancellation`
//! (`synapse.util.async_helpers`): wrappers that keep a `cancel()` from
//! reaching the Deferred (or coroutine) they protect.
//!
//! Both return a new Deferred that the source is chained to
//! (`source.chainDeferred(wrapper)`): the source's value or failure reaches
//! the wrapper, and the source itself is left holding Python's `None`
//! (`()`), so a failure forwarded this way is reported by the wrapper alone.
//!
//! | Synapse | here |
//! |---|---|
//! | `stop_cancellation(d)` | [`stop_cancellation`] |
//! | `delay_cancellation(d)` (a Deferred) | [`delay_cancellation`] |
//! | `delay_cancellation(coro)` (a coroutine, started with `ensureDeferred`) | [`delay_cancellation_coroutine`] |
//!
//! Synapse's `delay_cancellation` also returns any other awaitable unchanged
//! (it assumes such things are already complete, like `DoneAwaitable`); a
//! Rust caller simply awaits those directly.

use std::future::Future;

use twisted_deferred::{AnyValue, CancelledError, Deferred, Failure, ensure_deferred};

use crate::cancellation_fuzzer::{Protection, note_protection};
use crate::logcontext::PreserveLoggingContext;

/// Synapse's `stop_cancellation(deferred)`: a new Deferred with `deferred`'s
/// outcome that `cancel()` cannot get past.
///
/// Cancelling the wrapper fails it with [`CancelledError`] at once; the
/// source is not cancelled, keeps running, and its eventual result (value
/// or failure) is silently dropped. Chaining hands the source's result on,
/// so when several wrappers share one source only the first gets its value
/// and the others get `()` (fine for a `Deferred<()>`, the only way Synapse
/// uses it). The wrapper does not follow the logging-context rules: wrap it
/// in `make_deferred_yieldable` before awaiting.
///
/// ```
/// use std::{cell::Cell, rc::Rc};
/// use twisted_compat::{CancelledError, Deferred, stop_cancellation};
///
/// let cancelled = Rc::new(Cell::new(false));
/// let flag = cancelled.clone();
/// let source: Deferred<i32> = Deferred::with_canceller(move |_d: &Deferred<i32>| flag.set(true));
/// let wrapper = stop_cancellation(&source);   // wrapper = stop_cancellation(source)
/// wrapper.cancel().unwrap();                  // wrapper.cancel()
/// assert!(wrapper.result().failure().unwrap().check::<CancelledError>());
/// assert!(!cancelled.get() && !source.called()); // the source keeps running
/// source.callback(1).unwrap();                // its result goes nowhere
/// # wrapper.add_errback(|_| Ok(0));
/// ```
#[track_caller]
pub fn stop_cancellation<T: 'static>(deferred: &Deferred<T>) -> Deferred<T> {
    // new_deferred = Deferred(); deferred.chainDeferred(new_deferred)
    let new_deferred: Deferred<T> = Deferred::new();
    deferred.chain_deferred(&new_deferred);
    note_protection(&new_deferred, Protection::StopCancellation);
    new_deferred
}

/// Synapse's `delay_cancellation(deferred)` for a Deferred: like
/// [`stop_cancellation`], but a cancelled wrapper fails with
/// [`CancelledError`] only once the source has resolved.
///
/// * Cancelled before the source resolves, the wrapper shows no result
///   (Twisted's mechanics: it is paused and errbacked with the
///   `CancelledError`, so `called()` is true and `paused()` is 1); the source
///   is not cancelled. When the source resolves, with a value or a failure,
///   the wrapper delivers the `CancelledError` and never the source's
///   outcome, which is consumed.
/// * A second `cancel()` does nothing; a `cancel()` after the source has
///   resolved does nothing either.
/// * If the source itself fails with a `CancelledError`, the wrapper gets
///   that very failure.
///
/// As in Twisted, the source's result reaches the (already fired) wrapper as
/// an `AlreadyCalledError` in the source's chain, which a hook added to the
/// source on cancel turns into `()` while it releases the wrapper: callbacks
/// added to the source between the wrapping and the cancel see that
/// `AlreadyCalledError`.
///
/// As in Synapse, the paused wrapper is errbacked inside
/// `PreserveLoggingContext()` (nothing runs there, but leaving the block
/// brings the caller's context back, with the usual checks). The wrapper
/// follows the logging-context rules exactly when the source does.
///
/// ```
/// use twisted_compat::{CancelledError, Deferred, delay_cancellation};
///
/// let source: Deferred<i32> = Deferred::new();
/// let wrapper = delay_cancellation(&source);  // wrapper = delay_cancellation(source)
/// wrapper.cancel().unwrap();
/// assert!(wrapper.called() && wrapper.paused() == 1); // nothing to see yet
/// source.callback(1).unwrap();                // the source resolves...
/// assert_eq!(wrapper.paused(), 0);            // ...and the CancelledError comes out
/// assert!(wrapper.result().failure().unwrap().check::<CancelledError>());
/// # wrapper.add_errback(|_| Ok(0));
/// ```
#[track_caller]
pub fn delay_cancellation<T: 'static>(deferred: &Deferred<T>) -> Deferred<T> {
    let source = deferred.clone();
    // def handle_cancel(new_deferred): ...
    let new_deferred: Deferred<T> = Deferred::with_canceller(move |new_deferred: &Deferred<T>| {
        // Pause first, so that the CancelledError goes nowhere yet.
        new_deferred.pause();
        {
            // with PreserveLoggingContext(): new_deferred.errback(...)
            let _preserve = PreserveLoggingContext::sentinel();
            // A Deferred being cancelled has not fired, so this cannot fail.
            let _ = new_deferred.errback(Failure::new(CancelledError));
        }
        // deferred.addBoth(lambda _: new_deferred.unpause())
        let to_release = new_deferred.clone();
        // The hook takes whatever the source holds then (usually that
        // AlreadyCalledError), so it is added dynamically typed.
        source
            .as_any()
            .add_both(move |_: Result<AnyValue, Failure>| {
                to_release.unpause();
                Ok(AnyValue::none())
            });
    });
    deferred.chain_deferred(&new_deferred);
    note_protection(&new_deferred, Protection::DelayCancellation);
    new_deferred
}

/// Synapse's `delay_cancellation(coro)` for a coroutine: starts `future`
/// with [`ensure_deferred`] (it runs at once, up to its first suspension)
/// and protects the Deferred that gives, as [`delay_cancellation`] does.
/// Cancelling the wrapper does not cancel the coroutine.
///
/// ```
/// use twisted_compat::{CancelledError, Deferred, Failure, delay_cancellation_coroutine};
///
/// let page: Deferred<String> = Deferred::new();
/// let p = page.clone();
/// // d = delay_cancellation(fetch())  with  async def fetch(): return len(await page)
/// let d = delay_cancellation_coroutine(async move { Ok::<_, Failure>(p.await?.len()) });
/// d.cancel().unwrap();
/// assert!(!page.called());                    // the coroutine still waits
/// page.callback("hello".into()).unwrap();     // it finishes; then the CancelledError
/// assert!(d.result().failure().unwrap().check::<CancelledError>());
/// # d.add_errback(|_| Ok(0));
/// ```
#[track_caller]
pub fn delay_cancellation_coroutine<T, F>(future: F) -> Deferred<T>
where
    T: 'static,
    F: Future<Output = Result<T, Failure>> + 'static,
{
    delay_cancellation(&ensure_deferred(future))
}
