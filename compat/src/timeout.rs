//! [`timeout_deferred`]: Synapse's `timeout_deferred`, a timeout that returns
//! a new Deferred and copes with cancellers that fail.

use std::cell::Cell;
use std::rc::Rc;

use twisted_deferred::{CancelledError, Deferred, Failure, TimeoutError};

use crate::clock::Clock;
use crate::logcontext::PreserveLoggingContext;

/// `timeout_deferred(deferred=d, timeout=t, clock=clock)`: a new Deferred
/// that gets `deferred`'s outcome, or fails with `TimeoutError` if it has
/// none `timeout` seconds from now.
///
/// When the timer fires, `deferred` is cancelled (in the sentinel logging
/// context; a canceller that fails is logged and ignored), a
/// `CancelledError` that produces becomes `TimeoutError`, and if the new
/// Deferred has still not fired it fails with `TimeoutError`. Cancelling the
/// new Deferred fails it at once but leaves `deferred` and the timer alone
/// (when the timer fires, `deferred` is cancelled then). `deferred`'s own
/// result is `None` once handed on. The new Deferred fires in the sentinel
/// context: await it through `make_deferred_yieldable`.
///
/// ```
/// use twisted_compat::{timeout_deferred, Clock};
/// use twisted_deferred::{Deferred, TimeoutError};
///
/// let reactor = twisted_reactor::Clock::new();
/// let clock = Clock::new(reactor.clone(), "test");
/// let slow: Deferred<u8> = Deferred::new();
/// let d = timeout_deferred(slow.clone(), 1.5, &clock);   // timeout_deferred(deferred=slow, timeout=1.5, clock=clock)
/// reactor.advance(1.5).unwrap();
/// assert!(d.result().failure().unwrap().check::<TimeoutError>());
/// # d.add_errback(|_| Ok(0));
/// ```
pub fn timeout_deferred<T: Clone + 'static>(
    deferred: Deferred<T>,
    timeout: f64,
    clock: &Clock,
) -> Deferred<T> {
    let new_d: Deferred<T> = Deferred::new();
    let timed_out = Rc::new(Cell::new(false));
    let timeout_error = move || {
        Failure::new(TimeoutError {
            timeout: Some(timeout),
        })
    };

    let (flag, source, target) = (timed_out.clone(), deferred.clone(), new_d.clone());
    let delayed_call = clock.call_later(timeout, move || -> Result<(), Failure> {
        flag.set(true);
        {
            let _sentinel = PreserveLoggingContext::sentinel();
            if let Err(f) = source.cancel() {
                log::error!("Canceller failed during timeout: {f}");
            }
        }
        // The cancel should have errbacked `new_d` through the chain below;
        // if it did not, do it now.
        if !target.called() {
            let _sentinel = PreserveLoggingContext::sentinel();
            let _ = target.errback(timeout_error());
        }
        Ok(())
    });

    // convert_cancelled
    let flag = timed_out.clone();
    deferred.add_errback(move |f: Failure| {
        if flag.get() && f.check::<CancelledError>() {
            Err(timeout_error())
        } else {
            Err(f)
        }
    });
    // cancel_timeout
    deferred.add_passthrough(move || {
        if delayed_call.active() {
            let _ = delayed_call.cancel();
        }
    });
    let (on_value, on_failure) = (new_d.clone(), new_d.clone());
    deferred.add_callbacks(
        move |value: T| {
            if !on_value.called() {
                let _sentinel = PreserveLoggingContext::sentinel();
                let _ = on_value.callback(value);
            }
            Ok(())
        },
        move |failure: Failure| {
            if !on_failure.called() {
                let _sentinel = PreserveLoggingContext::sentinel();
                let _ = on_failure.errback(failure);
            }
            Ok(())
        },
    );
    new_d
}
