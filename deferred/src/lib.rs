//! Twisted's `Deferred`, faithfully, in Rust.
//!
//! This crate reproduces `twisted.internet.defer.Deferred`: a result that
//! arrives later, with a chain of callbacks and errbacks run on it, chaining
//! when a callback returns another Deferred, `pause`/`unpause`, cancellation
//! with canceller hooks, [`Failure`], and the report of failures nobody
//! handled. Behaviour is Twisted's, down to the order callbacks run in when
//! they re-enter the Deferreds they belong to; a conformance suite runs
//! scenarios through this crate and through real Twisted and compares the
//! traces.
//!
//! ```
//! use twisted_deferred::{CancelledError, Deferred, Failure};
//!
//! // d = Deferred(canceller=lambda d: print("cancelled"))
//! let d: Deferred<i32> = Deferred::with_canceller(|_d: &Deferred<i32>| println!("cancelled"));
//! // d.addCallback(lambda x: x + 1)
//! let d2 = d.add_callback(|x| Ok(x + 1));
//! // d.addErrback(lambda f: f.trap(CancelledError) and -1)
//! d2.add_errback(|f: Failure| {
//!     f.trap::<CancelledError>()?;
//!     Ok(-1)
//! });
//! d.cancel().unwrap();                              // d.cancel()
//! assert_eq!(d2.result().value(), Some(-1));
//! ```
//!
//! # Design
//!
//! * **One untyped chain, typed handles.** A Deferred's result changes type
//!   as callbacks run, so the chain stores it erased (inline when it is three
//!   words or less; no allocation for integers, strings, `Rc`s…).
//!   [`Deferred<T>`] is a typed handle on it; `add_callback` returns a handle
//!   typed with the callback's output, and [`Deferred::cast`] re-types a
//!   handle for literal ports of Python code. [`AnyValue`] is the fully
//!   dynamic mode.
//! * **Iterative chaining.** Returning a Deferred from a callback makes the
//!   outer one wait without recursion, exactly as Twisted's explicit stack
//!   does: a million-deep chain fires at constant stack depth.
//! * **Moves, and clones where Python shares.** See [`Deferred`], "Values and
//!   sharing".
//! * **Single-threaded**, like Twisted: `Deferred` is neither `Send` nor
//!   `Sync`.
//! * **Panics are failures.** A panicking callback produces a
//!   [`PanicError`] failure and the chain continues; nothing panics out of
//!   this crate's API.
//! * **Memory.** Deferreds are reference counted. A Deferred waiting on
//!   another and the one it waits on point at each other until the inner one
//!   fires (the inner one must keep the outer alive to deliver its result,
//!   and the outer one keeps the inner alive to forward `cancel()`), and so
//!   do the two ends of `chain_deferred`. When the last handle to such a
//!   group goes away, a small collector notices that only their own links
//!   keep them alive and frees them, reporting their unhandled failures as
//!   Python's garbage collector would. Cycles through other objects (a
//!   callback capturing its own Deferred, a suspended coroutine holding the
//!   Deferreds it awaits, a `DeferredList` whose input never fires) stay
//!   alive until they fire; fire or cancel Deferreds you abandon, or, in
//!   tests, free them with [`tracking::Tracker`].
//!
//! # Map from Twisted
//!
//! | Twisted | here |
//! |---|---|
//! | `Deferred()`, `Deferred(canceller)` | [`Deferred::new`], [`Deferred::with_canceller`] |
//! | `d.callback(v)`, `d.errback(f)` | [`Deferred::callback`], [`Deferred::errback`] |
//! | `d.addCallback(f)` / `addErrback` / `addBoth` / `addCallbacks` | [`Deferred::add_callback`], [`Deferred::add_errback`], [`Deferred::add_both`], [`Deferred::add_callbacks`] |
//! | `d.chainDeferred(d2)` | [`Deferred::chain_deferred`] |
//! | `d.pause()`, `d.unpause()`, `d.cancel()` | [`Deferred::pause`], [`Deferred::unpause`], [`Deferred::cancel`] |
//! | `d.called`, `d.paused`, `d.result` | [`Deferred::called`], [`Deferred::paused`], [`Deferred::result`] |
//! | `succeed`, `fail`, `maybeDeferred`, `execute`, `passthru` | [`succeed`], [`fail`], [`maybe_deferred`], [`execute`], [`passthru`] |
//! | `Failure`, `f.check`, `f.trap`, `f.getErrorMessage()` | [`Failure`], [`Failure::check`], [`Failure::trap`], [`Failure::message`] |
//! | `CancelledError`, `AlreadyCalledError`, `TimeoutError`, `FirstError` | [`CancelledError`], [`AlreadyCalledError`], [`TimeoutError`], [`FirstError`] |
//! | raising in a callback | returning `Err(failure)` (or `?`), or panicking |
//! | "Unhandled error in Deferred" | [`set_unhandled_error_hook`], the `log` facade |
//! | `ensureDeferred(coro)`, `Deferred.fromCoroutine`, `await d` | [`ensure_deferred`], [`Deferred::from_coroutine`], `d.await` |
//! | `Deferred.fromFuture` | [`from_future`] |
//! | `DeferredList`, `gatherResults`, `race`, `FailureGroup` | [`DeferredList`], [`gather_results`], [`race`], [`FailureGroup`] |
//! | `d.addTimeout(t, clock)` | [`Deferred::add_timeout`] (any [`time::ReactorTime`]) |
//! | `DeferredLock`, `DeferredSemaphore`, `DeferredQueue` | [`DeferredLock`], [`DeferredSemaphore`], [`DeferredQueue`] |
//! | `setDebugging(True)` | [`debug::set_debugging`] |
//! | `gc.collect()` (for tests) | [`tracking::Tracker`] |

#![warn(missing_docs)]

mod chain;
mod coroutine;
pub mod debug;
mod deferred;
mod erased;
mod errors;
mod failure;
mod immediate;
mod list;
mod lock;
mod queue;
mod race;
mod semaphore;
pub mod time;
mod timeout;
pub mod tracking;
mod unhandled;
mod value;

pub use chain::MAX_NESTING;
pub use coroutine::{
    CoroutineId, CoroutineObserver, DeferredFuture, WakeNotifier, ensure_deferred, from_future,
    run_wakeups, set_coroutine_observer, set_remote_wake_notifier,
};
pub use deferred::{CancelResult, Deferred, Outcome, State};
pub use errors::{
    AlreadyCalledError, AssertionError, CancelledError, FirstError,
    InternalInlineCallbacksCancelledError, MessageError, PanicError, RecursionError,
    ResultTypeError, TimeoutError,
};
pub use failure::Failure;
pub use immediate::{execute, fail, maybe_deferred, passthru, succeed, succeed_with_failure};
pub use list::{
    DeferredList, DeferredListFlags, DeferredListResult, gather_results, unwrap_first_error,
};
pub use lock::{ConcurrencyPrimitive, DeferredLock, Guard, GuardFuture};
pub use queue::{DeferredQueue, QueueOverflow, QueueUnderflow};
pub use race::{FailureGroup, race};
pub use semaphore::{DeferredSemaphore, InvalidTokensError};
pub use unhandled::{UnhandledErrorHook, capture_unhandled_errors, set_unhandled_error_hook};
pub use value::AnyValue;

/// Converts `a` into a `B` when `A` and `B` are the same type; gives `a`
/// back otherwise. Compiles to nothing.
#[inline]
pub(crate) fn cast<A: 'static, B: 'static>(a: A) -> Result<B, A> {
    use std::any::Any;
    let mut slot = Some(a);
    if let Some(b) = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<B>>()
        .and_then(Option::take)
    {
        return Ok(b);
    }
    match slot {
        Some(a) => Err(a),
        None => unreachable!("the value was moved only when the types matched"),
    }
}
