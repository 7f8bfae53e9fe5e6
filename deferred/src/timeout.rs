//! [`Deferred::add_timeout`]: Twisted's `Deferred.addTimeout`.

use std::cell::Cell;
use std::rc::Rc;

use crate::chain::{self, Slot};
use crate::deferred::{Deferred, Outcome, value_as};
use crate::errors::{CancelledError, TimeoutError};
use crate::failure::Failure;
use crate::time::ReactorTime;

impl<T: 'static> Deferred<T> {
    /// `d.addTimeout(timeout, clock)`: cancels this Deferred if it has no
    /// result `timeout` seconds from now. A `CancelledError` produced by
    /// that cancel becomes `TimeoutError(timeout)`; any other outcome (a
    /// canceller's own failure or value) passes unchanged. Only links added
    /// before `add_timeout` are covered: a Deferred they return is cancelled
    /// by the timeout, one returned later is not. A canceller that fails when
    /// the timeout fires makes the clock's `advance()` fail.
    ///
    /// ```
    /// use twisted_deferred::{Deferred, Failure, TimeoutError};
    /// use twisted_deferred::time::{DelayedCall, ReactorTime, TimedCall};
    /// # use std::{cell::RefCell, rc::Rc};
    /// # #[derive(Default)] struct Manual(RefCell<Vec<TimedCall>>);
    /// # struct Noop; impl twisted_deferred::time::DelayedCallImpl for Noop {
    /// #   fn get_time(&self) -> f64 { 0.0 } fn cancel(&self) -> Result<(), twisted_deferred::time::DelayedCallError> { Ok(()) }
    /// #   fn reset(&self, _: f64) -> Result<(), twisted_deferred::time::DelayedCallError> { Ok(()) }
    /// #   fn delay(&self, _: f64) -> Result<(), twisted_deferred::time::DelayedCallError> { Ok(()) } fn active(&self) -> bool { true } }
    /// # impl ReactorTime for Manual { fn seconds(&self) -> f64 { 0.0 }
    /// #   fn call_later(&self, _d: f64, f: TimedCall) -> DelayedCall { self.0.borrow_mut().push(f); DelayedCall::new(Rc::new(Noop)) } }
    /// let clock = Manual::default();              // any ReactorTime, e.g. twisted_reactor::Clock
    /// let d: Deferred<i32> = Deferred::new();
    /// d.add_timeout(5.0, &clock);                 // d.addTimeout(5, clock)
    /// let fire = clock.0.borrow_mut().pop().unwrap();
    /// fire().unwrap();                            // the 5 seconds pass
    /// assert!(d.result().failure().unwrap().check::<TimeoutError>());
    /// # d.add_errback(|_| Ok(0));
    /// ```
    pub fn add_timeout<R: ReactorTime + ?Sized>(&self, timeout: f64, clock: &R) -> Deferred<T> {
        self.add_timeout_impl(timeout, clock, None)
    }

    /// `d.addTimeout(timeout, clock, onTimeoutCancel)`: as
    /// [`add_timeout`](Deferred::add_timeout), but when the timeout fired,
    /// `on_timeout_cancel(result, timeout)` replaces whatever result the
    /// cancel produced.
    pub fn add_timeout_with<R, F, O>(
        &self,
        timeout: f64,
        clock: &R,
        on_timeout_cancel: F,
    ) -> Deferred<T>
    where
        R: ReactorTime + ?Sized,
        F: FnOnce(Result<T, Failure>, f64) -> O + 'static,
        O: Into<Outcome<T>>,
    {
        let custom = move |result: Slot| -> Slot {
            let input = match result {
                Slot::Failure(f) => Err(f),
                other => match value_as::<T>(other) {
                    Ok(v) => Ok(v),
                    Err(f) => return Slot::Failure(f),
                },
            };
            crate::deferred::run_guarded(move || on_timeout_cancel(input, timeout).into())
        };
        self.add_timeout_impl(timeout, clock, Some(Box::new(custom)))
    }

    fn add_timeout_impl<R: ReactorTime + ?Sized>(
        &self,
        timeout: f64,
        clock: &R,
        custom: Option<Box<dyn FnOnce(Slot) -> Slot>>,
    ) -> Deferred<T> {
        let timed_out = Rc::new(Cell::new(false));
        let (flag, me) = (timed_out.clone(), self.clone());
        let call = clock.call_later(
            timeout,
            Box::new(move || {
                flag.set(true);
                me.cancel()
            }),
        );
        // convertCancelled
        chain::add_call(self.inner(), move |result: Slot| {
            if !timed_out.get() {
                return result;
            }
            match custom {
                Some(custom) => custom(result),
                None => match result {
                    Slot::Failure(f) if f.check::<CancelledError>() => {
                        Slot::Failure(Failure::new(TimeoutError {
                            timeout: Some(timeout),
                        }))
                    }
                    other => other,
                },
            }
        });
        // cancelTimeout
        chain::add_call(self.inner(), move |result: Slot| {
            if call.active() {
                let _ = call.cancel();
            }
            result
        });
        self.clone()
    }
}
