//! [`defer_later()`]: Twisted's `twisted.internet.task.deferLater`, a
//! Deferred that fires with a function's outcome after a delay.
//!
//! ```
//! use twisted_reactor::{defer_later, Clock};
//! let clock = Clock::new();
//! let d = defer_later(&clock, 1.0, || Ok(()));                    // d = deferLater(c, 1)
//! clock.advance(1.0).unwrap();
//! assert!(d.called());
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use twisted_deferred::time::{DelayedCall, ReactorTime};
use twisted_deferred::{Deferred, Failure, Outcome};

/// `deferLater(clock, delay, f)`: a Deferred that, `delay` seconds from
/// now, fires with what `f` returns: a value (`Ok(v)`), a failure (`Err(f)`,
/// a returned [`Failure`], or a panic), or another Deferred to wait for.
/// Python's `deferLater(clock, delay)` without a callable is
/// `defer_later(clock, delay, || Ok(()))`.
///
/// It is built as Twisted builds it: a `Deferred(canceller)` with `f` as its
/// callback, fired by `clock.callLater(delay, d.callback, None)`. So
/// cancelling it before the delay cancels the delayed call, `f` is never
/// called, and the Deferred fails with
/// [`CancelledError`](twisted_deferred::CancelledError); and if the Deferred
/// was fired by other means before the delay, the delayed call's
/// `callback()` fails with
/// [`AlreadyCalledError`](twisted_deferred::AlreadyCalledError), which comes
/// out of the clock's `advance`.
///
/// ```
/// use twisted_reactor::{defer_later, Clock};
///
/// let clock = Clock::new();
/// let d = defer_later(&clock, 3.0, || Ok(1 + 2));                 // d = deferLater(c, 3, lambda: 1 + 2)
/// clock.advance(2.0).unwrap();
/// assert!(!d.called());
/// clock.advance(1.0).unwrap();                                    // c.advance(3)
/// assert_eq!(d.result().value(), Some(3));
/// ```
///
/// Cancelling:
///
/// ```
/// use twisted_deferred::{CancelledError, Failure};
/// use twisted_reactor::{defer_later, Clock};
///
/// let clock = Clock::new();
/// let d = defer_later(&clock, 1.0, || -> Result<(), Failure> { unreachable!() });
/// d.cancel().unwrap();                                            // d.cancel()
/// assert_eq!(clock.delayed_call_count(), 0);                      // c.getDelayedCalls() == []
/// assert!(d.result().failure().unwrap().check::<CancelledError>());
/// # d.add_errback(|_| Ok(()));
/// ```
pub fn defer_later<C, T, F, R>(clock: &C, delay: f64, f: F) -> Deferred<T>
where
    C: ReactorTime + ?Sized,
    T: 'static,
    F: FnOnce() -> R + 'static,
    R: Into<Outcome<T>>,
{
    let delayed_call: Rc<RefCell<Option<DelayedCall>>> = Rc::new(RefCell::new(None));
    let for_canceller = delayed_call.clone();
    // def deferLaterCancel(deferred): delayedCall.cancel()
    let d: Deferred<()> = Deferred::with_canceller(move |_d: &Deferred<()>| {
        let call = for_canceller.borrow().clone();
        match call {
            Some(call) => call.cancel().map_err(Failure::new),
            None => Ok(()),
        }
    });
    // d.addCallback(cb), cb calling the callable
    let result = d.add_callback(move |()| f());
    // delayedCall = clock.callLater(delay, d.callback, None)
    let call = clock.call_later(delay, Box::new(move || d.callback(())));
    *delayed_call.borrow_mut() = Some(call);
    result
}
