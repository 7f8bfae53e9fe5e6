//! Deferreds that have their result at once: `succeed`, `fail`,
//! `maybeDeferred`, `execute`, and the identity `passthru`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::chain::{Inner, Slot};
use crate::deferred::{Deferred, Outcome, store_slot};
use crate::failure::Failure;

/// `succeed(value)`: a Deferred that has already fired with `value`.
/// Callbacks added to it run at once.
///
/// ```
/// use twisted_deferred::succeed;
/// let d = succeed("orange");                      // d = succeed("orange")
/// assert_eq!(d.result().value(), Some("orange"));
/// ```
#[track_caller]
pub fn succeed<T: 'static>(value: T) -> Deferred<T> {
    Deferred::from_inner(Inner::new_fired(store_slot(value)))
}

/// `succeed(aFailure)`: a Deferred holding a failure without having run
/// its (empty) chain, so, exactly as in Twisted, dropping it unhandled
/// reports nothing. Use [`fail`] for the usual failed Deferred.
#[track_caller]
pub fn succeed_with_failure<T: 'static>(failure: impl Into<Failure>) -> Deferred<T> {
    Deferred::from_inner(Inner::new_fired(Slot::Failure(failure.into())))
}

/// `fail(failure)`: a Deferred on which `errback(failure)` has been called.
/// Dropped without an errback handling it, it reports the failure.
///
/// ```
/// use twisted_deferred::{fail, Failure};
/// let d = fail::<i32>(Failure::msg("no"));        // d = fail(Exception("no"))
/// assert_eq!(d.result().failure().unwrap().message(), "no");
/// d.add_errback(|_| Ok(0));
/// ```
#[track_caller]
pub fn fail<T: 'static>(failure: impl Into<Failure>) -> Deferred<T> {
    let d = Deferred::new();
    // A new Deferred cannot have been called already, and nothing is nested.
    let _ = d.errback(failure);
    d
}

/// `maybeDeferred(f)`: calls `f` now and wraps its outcome in a Deferred: a
/// returned Deferred is returned as it is, a value gives `succeed(value)`,
/// a failure (or a panic) gives a failed Deferred.
///
/// ```
/// use twisted_deferred::{maybe_deferred, Failure};
/// let d = maybe_deferred(|| Ok(3));               // maybeDeferred(lambda: 3)
/// assert_eq!(d.result().value(), Some(3));
/// let e = maybe_deferred::<i32, _>(|| Err(Failure::msg("raised")));
/// assert!(e.result().failure().is_some());
/// # e.add_errback(|_| Ok(0));
/// ```
#[track_caller]
pub fn maybe_deferred<T, R>(f: impl FnOnce() -> R) -> Deferred<T>
where
    T: 'static,
    R: Into<Outcome<T>>,
{
    match catch_unwind(AssertUnwindSafe(|| f().into())) {
        Ok(Outcome::Value(v)) => succeed(v),
        Ok(Outcome::Failure(failure)) => fail(failure),
        Ok(Outcome::Deferred(d)) => d,
        Err(panic) => fail(Failure::from_panic(panic)),
    }
}

/// `execute(f)`: calls `f` now; `succeed` with what it returns, `fail` with
/// what it raises. Unlike [`maybe_deferred`] nothing is special-cased.
#[track_caller]
pub fn execute<T: 'static>(f: impl FnOnce() -> Result<T, Failure>) -> Deferred<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => succeed(v),
        Ok(Err(failure)) => fail(failure),
        Err(panic) => fail(Failure::from_panic(panic)),
    }
}

/// `passthru(arg)`: returns its argument; the pass-through half of
/// `addCallback`/`addErrback`, usable as a callback.
///
/// ```
/// use twisted_deferred::{passthru, succeed};
/// let d = succeed(5).add_callback(|x| Ok(passthru(x)));
/// assert_eq!(d.result().value(), Some(5));
/// ```
pub fn passthru<T>(arg: T) -> T {
    arg
}
