//! [`LoopingCall`]: Twisted's `twisted.internet.task.LoopingCall`, a
//! function called repeatedly on interval boundaries.
//!
//! ```
//! use twisted_reactor::{Clock, LoopingCall};
//! let clock = Clock::new();
//! let lc = LoopingCall::new(clock.clone(), || Ok(()));            // lc = LoopingCall(f); lc.clock = c
//! let d = lc.start(1.0, true).unwrap();                           // d = lc.start(1)
//! clock.advance(1.0).unwrap();
//! lc.stop().unwrap();                                             // lc.stop()
//! assert!(d.called());
//! ```

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::rc::{Rc, Weak};

use twisted_deferred::time::{DelayedCall, ReactorTime};
use twisted_deferred::{
    AnyValue, AssertionError, Deferred, Failure, Outcome, fail, maybe_deferred,
};

/// Misuse of a [`LoopingCall`]: the exceptions Twisted raises, with their
/// messages (its `AssertionError`s and its `ValueError`).
///
/// ```
/// use twisted_reactor::{Clock, LoopingCall, LoopingCallError};
/// let lc = LoopingCall::new(Clock::new(), || Ok(()));
/// let err = lc.start(-1.0, true).unwrap_err();                     // lc.start(-1) raises ValueError
/// assert_eq!(err, LoopingCallError::NegativeInterval);
/// assert_eq!(err.to_string(), "interval must be >= 0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopingCallError {
    /// `start()` while running: "Tried to start an already running
    /// LoopingCall."
    AlreadyRunning,
    /// `stop()` while not running: "Tried to stop a LoopingCall that was
    /// not running."
    StopNotRunning,
    /// `reset()` while not running: "Tried to reset a LoopingCall that was
    /// not running."
    ResetNotRunning,
    /// `start()` with an interval below 0 (Python's `ValueError`), or `NaN`
    /// (which Python lets through, to schedule calls at `nan`): "interval
    /// must be >= 0".
    NegativeInterval,
    /// The function was called again while it was running (it restarted its
    /// own loop with `now = true`). Python would recurse; a Rust `FnMut`
    /// cannot, so that call fails with this error and the loop's Deferred
    /// errbacks.
    Reentrant,
}

impl fmt::Display for LoopingCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoopingCallError::AlreadyRunning => "Tried to start an already running LoopingCall.",
            LoopingCallError::StopNotRunning => "Tried to stop a LoopingCall that was not running.",
            LoopingCallError::ResetNotRunning => {
                "Tried to reset a LoopingCall that was not running."
            }
            LoopingCallError::NegativeInterval => "interval must be >= 0",
            LoopingCallError::Reentrant => {
                "the LoopingCall's function was called while it was running"
            }
        })
    }
}

impl Error for LoopingCallError {}

type Body = Box<dyn FnMut() -> Deferred<AnyValue>>;

/// Calls a function every `interval` seconds: Twisted's `LoopingCall`.
///
/// Calls happen on the boundaries `start time + k × interval`; when the
/// clock jumps past several, the missed ones are skipped, not replayed
/// (use [`with_count`](LoopingCall::with_count) to learn how many). While a
/// Deferred returned by the function is pending, no further call happens;
/// the next one is scheduled from the time it fires. A failure (returned,
/// or a panic, or a failed Deferred) stops the loop and errbacks the
/// Deferred [`start`](LoopingCall::start) returned; [`stop`](LoopingCall::stop)
/// fires it with the `LoopingCall`.
///
/// `LoopingCall` is a handle: clones share the loop. While the loop is
/// running, its scheduled call holds the loop (as Twisted's reactor holds
/// the bound method), so a running loop whose handles are all dropped keeps
/// running as long as its clock lives; `stop()` loops you abandon.
///
/// ```
/// use twisted_reactor::{Clock, LoopingCall};
/// use std::{cell::RefCell, rc::Rc};
///
/// let clock = Clock::new();
/// let calls = Rc::new(RefCell::new(Vec::new()));
/// let (c, k) = (clock.clone(), calls.clone());
/// // lc = LoopingCall(lambda: calls.append(c.seconds())); lc.clock = c
/// let lc = LoopingCall::new(clock.clone(), move || {
///     k.borrow_mut().push(c.seconds());
///     Ok(())
/// });
/// let d = lc.start(2.0, true).unwrap();                           // d = lc.start(2)
/// clock.pump(&[2.0, 2.0, 5.0]).unwrap();                          // c.advance(2); c.advance(2); c.advance(5)
/// assert_eq!(*calls.borrow(), [0.0, 2.0, 4.0, 9.0]);              // 6 and 8 skipped
/// lc.stop().unwrap();                                             // lc.stop()
/// assert!(d.result().value().unwrap().ptr_eq(&lc));               // d.result is lc
/// ```
#[derive(Clone)]
pub struct LoopingCall {
    inner: Rc<LoopInner>,
}

struct LoopInner {
    /// `f`, wrapped in `maybeDeferred`.
    body: RefCell<Body>,
    /// The function's name, for `Debug` (`repr`).
    name: &'static str,
    clock: Rc<dyn ReactorTime>,
    /// `call`: the scheduled next call, if any.
    call: RefCell<Option<DelayedCall>>,
    running: Cell<bool>,
    /// `_deferred`: what `start()` returned, until it fires.
    deferred: RefCell<Option<Deferred<LoopingCall>>>,
    interval: Cell<Option<f64>>,
    /// `_runAtStart`.
    run_at_start: Cell<bool>,
    starttime: Cell<Option<f64>>,
    /// `_realLastTime` (`withCount`).
    real_last_time: Cell<Option<f64>>,
}

/// Python's float `%`: the result has the sign of the divisor.
fn py_mod(x: f64, y: f64) -> f64 {
    let m = x % y;
    if m != 0.0 {
        if (y < 0.0) != (m < 0.0) { m + y } else { m }
    } else {
        0.0_f64.copysign(y)
    }
}

impl LoopingCall {
    /// `LoopingCall(f)` with `lc.clock = clock`. `f` returns what a callback
    /// returns: `Ok(v)` (the value is ignored), `Err(failure)` or a
    /// [`Failure`] (stops the loop), or a [`Deferred`] to wait for.
    ///
    /// ```
    /// use twisted_reactor::{Clock, LoopingCall};
    /// let lc = LoopingCall::new(Clock::new(), || Ok(()));            // lc = LoopingCall(lambda: None)
    /// assert!(!lc.running());
    /// assert_eq!(lc.interval(), None);
    /// ```
    pub fn new<C, F, R, U>(clock: C, mut f: F) -> LoopingCall
    where
        C: ReactorTime + 'static,
        F: FnMut() -> R + 'static,
        R: Into<Outcome<U>>,
        U: 'static,
    {
        let name = std::any::type_name::<F>();
        let body: Body = Box::new(move || maybe_deferred::<U, R>(&mut f).as_any());
        LoopingCall::with_body(Rc::new(clock), name, |_| body)
    }

    /// `LoopingCall.withCount(f)`: `f` receives the number of intervals
    /// that elapsed since it was last called (1 normally, more when calls
    /// were skipped; always 1 with an interval of 0). A call in which no
    /// interval boundary was crossed does not call `f` at all.
    ///
    /// ```
    /// use twisted_reactor::{Clock, LoopingCall};
    /// use std::{cell::RefCell, rc::Rc};
    ///
    /// let clock = Clock::new();
    /// let counts = Rc::new(RefCell::new(Vec::new()));
    /// let k = counts.clone();
    /// // lc = LoopingCall.withCount(counts.append); lc.clock = c
    /// let lc = LoopingCall::with_count(clock.clone(), move |n| {
    ///     k.borrow_mut().push(n);
    ///     Ok(())
    /// });
    /// lc.start(0.5, true).unwrap();                                   // lc.start(0.5)
    /// clock.advance(0.51).unwrap();
    /// clock.advance(1.51).unwrap();                                   // two calls skipped
    /// assert_eq!(*counts.borrow(), [1, 1, 3]);
    /// lc.stop().unwrap();
    /// ```
    pub fn with_count<C, F, R, U>(clock: C, mut f: F) -> LoopingCall
    where
        C: ReactorTime + 'static,
        F: FnMut(u64) -> R + 'static,
        R: Into<Outcome<U>>,
        U: 'static,
    {
        let name = std::any::type_name::<F>();
        LoopingCall::with_body(Rc::new(clock), name, move |me: Weak<LoopInner>| {
            Box::new(move || {
                let Some(me) = me.upgrade() else {
                    return fail(AssertionError {
                        message: "LoopingCall called after it was dropped",
                    });
                };
                match me.count() {
                    Ok(Some(count)) => maybe_deferred::<U, R>(|| f(count)).as_any(),
                    Ok(None) => twisted_deferred::succeed(AnyValue::new(())),
                    Err(failure) => fail(failure),
                }
            })
        })
    }

    fn with_body(
        clock: Rc<dyn ReactorTime>,
        name: &'static str,
        body: impl FnOnce(Weak<LoopInner>) -> Body,
    ) -> LoopingCall {
        let inner = Rc::new_cyclic(|me| LoopInner {
            body: RefCell::new(body(me.clone())),
            name,
            clock,
            call: RefCell::new(None),
            running: Cell::new(false),
            deferred: RefCell::new(None),
            interval: Cell::new(None),
            run_at_start: Cell::new(false),
            starttime: Cell::new(None),
            real_last_time: Cell::new(None),
        });
        LoopingCall { inner }
    }

    /// `start(interval, now)`: calls the function now (`now = true`) or
    /// after one interval, then on every interval boundary measured from
    /// now. Returns the Deferred that fires with this `LoopingCall` when
    /// [`stop`](LoopingCall::stop) is called, or fails with the first
    /// failure of the function (the loop then stops). With `now = true` the
    /// first call happens inside `start`, so the Deferred may already have
    /// fired when it is returned.
    ///
    /// Fails with [`LoopingCallError::AlreadyRunning`] if running (checked
    /// first, as Twisted's assertion is) and with
    /// [`LoopingCallError::NegativeInterval`] if `interval` is below 0 or
    /// `NaN`.
    ///
    /// ```
    /// use twisted_reactor::{Clock, LoopingCall, LoopingCallError};
    /// use std::{cell::Cell, rc::Rc};
    ///
    /// let clock = Clock::new();
    /// let n = Rc::new(Cell::new(0));
    /// let k = n.clone();
    /// let lc = LoopingCall::new(clock.clone(), move || { k.set(k.get() + 1); Ok(()) });
    /// lc.start(1.0, false).unwrap();                                  // lc.start(1, now=False)
    /// assert_eq!(n.get(), 0);
    /// assert_eq!(lc.start(1.0, false).unwrap_err(), LoopingCallError::AlreadyRunning);
    /// clock.advance(1.0).unwrap();
    /// assert_eq!(n.get(), 1);
    /// lc.stop().unwrap();
    /// ```
    pub fn start(
        &self,
        interval: f64,
        now: bool,
    ) -> Result<Deferred<LoopingCall>, LoopingCallError> {
        let inner = &self.inner;
        if inner.running.get() {
            return Err(LoopingCallError::AlreadyRunning);
        }
        if interval.is_nan() || interval < 0.0 {
            return Err(LoopingCallError::NegativeInterval);
        }
        inner.running.set(true);
        let deferred = Deferred::new();
        let previous = inner.deferred.replace(Some(deferred.clone()));
        drop(previous);
        let starttime = inner.clock.seconds();
        inner.starttime.set(Some(starttime));
        inner.interval.set(Some(interval));
        inner.run_at_start.set(now);
        if now {
            LoopInner::run(inner);
        } else {
            LoopInner::schedule_from(inner, starttime);
        }
        Ok(deferred)
    }

    /// `stop()`: no further call happens. If a call is scheduled, it is
    /// cancelled and the Deferred `start` returned fires with this
    /// `LoopingCall`; if the function's Deferred is pending, that Deferred
    /// fires it when it fires.
    ///
    /// Fails with a [`LoopingCallError::StopNotRunning`] failure when not
    /// running, or with the [`AlreadyCalledError`](twisted_deferred::AlreadyCalledError)
    /// of that `callback()` if the Deferred was fired by other means.
    ///
    /// ```
    /// use twisted_reactor::{Clock, LoopingCall, LoopingCallError};
    /// let clock = Clock::new();
    /// let lc = LoopingCall::new(clock.clone(), || Ok(()));
    /// let d = lc.start(10.0, false).unwrap();                         // d = lc.start(10, now=False)
    /// lc.stop().unwrap();                                             // lc.stop()
    /// assert!(d.called());
    /// assert_eq!(clock.delayed_call_count(), 0);                      // not c.calls
    /// let err = lc.stop().unwrap_err();                               // raises AssertionError
    /// assert_eq!(err.downcast_ref(), Some(&LoopingCallError::StopNotRunning));
    /// ```
    pub fn stop(&self) -> Result<(), Failure> {
        let inner = &self.inner;
        if !inner.running.get() {
            return Err(Failure::new(LoopingCallError::StopNotRunning));
        }
        inner.running.set(false);
        let call = inner.call.borrow_mut().take();
        if let Some(call) = call {
            call.cancel().map_err(Failure::new)?;
            drop(call);
            let d = inner.deferred.borrow_mut().take();
            match d {
                Some(d) => d.callback(self.clone())?,
                None => return Err(Failure::new(AssertionError { message: "" })),
            }
        }
        Ok(())
    }

    /// `reset()`: skips the next call and restarts the intervals from now
    /// (no effect while the function's Deferred is pending). Fails with
    /// [`LoopingCallError::ResetNotRunning`] when not running.
    ///
    /// ```
    /// use twisted_reactor::{Clock, LoopingCall};
    /// use std::{cell::Cell, rc::Rc};
    ///
    /// let clock = Clock::new();
    /// let n = Rc::new(Cell::new(0));
    /// let k = n.clone();
    /// let lc = LoopingCall::new(clock.clone(), move || { k.set(k.get() + 1); Ok(()) });
    /// lc.start(2.0, false).unwrap();                                  // lc.start(2, now=False)
    /// clock.advance(1.0).unwrap();
    /// lc.reset().unwrap();                                            // lc.reset()
    /// clock.advance(1.0).unwrap();
    /// assert_eq!(n.get(), 0);                                         // would have run at 2
    /// clock.advance(1.0).unwrap();
    /// assert_eq!(n.get(), 1);                                         // runs at 1 + 2
    /// lc.stop().unwrap();
    /// ```
    pub fn reset(&self) -> Result<(), LoopingCallError> {
        let inner = &self.inner;
        if !inner.running.get() {
            return Err(LoopingCallError::ResetNotRunning);
        }
        let call = inner.call.borrow_mut().take();
        if let Some(call) = call {
            // The scheduled call is pending (a call clears it before running).
            let _ = call.cancel();
            drop(call);
            let now = inner.clock.seconds();
            inner.starttime.set(Some(now));
            LoopInner::schedule_from(inner, now);
        }
        Ok(())
    }

    /// `running`: true from `start()` until `stop()` or a failure.
    ///
    /// ```
    /// use twisted_reactor::{Clock, LoopingCall};
    /// let lc = LoopingCall::new(Clock::new(), || Ok(()));
    /// lc.start(1.0, true).unwrap();
    /// assert!(lc.running());                                          // lc.running
    /// lc.stop().unwrap();
    /// assert!(!lc.running());
    /// ```
    pub fn running(&self) -> bool {
        self.inner.running.get()
    }

    /// `interval`: the interval given to the latest `start()` or
    /// [`set_interval`](LoopingCall::set_interval), `None` before.
    ///
    /// ```
    /// use twisted_reactor::{Clock, LoopingCall};
    /// let lc = LoopingCall::new(Clock::new(), || Ok(()));
    /// lc.start(0.5, false).unwrap();
    /// assert_eq!(lc.interval(), Some(0.5));                           // lc.interval
    /// lc.stop().unwrap();
    /// ```
    pub fn interval(&self) -> Option<f64> {
        self.inner.interval.get()
    }

    /// `lc.interval = interval`: takes effect when the next call is
    /// scheduled (the one already scheduled keeps its time). Unchecked, as
    /// the Python attribute is.
    ///
    /// ```
    /// use twisted_reactor::{Clock, LoopingCall};
    /// let clock = Clock::new();
    /// let lc = LoopingCall::new(clock.clone(), || Ok(()));
    /// lc.start(1.0, false).unwrap();
    /// lc.set_interval(3.0);                                           // lc.interval = 3
    /// clock.advance(1.0).unwrap();                                    // runs; next at 3
    /// assert_eq!(clock.get_delayed_calls()[0].get_time(), 3.0);
    /// lc.stop().unwrap();
    /// ```
    pub fn set_interval(&self, interval: f64) {
        self.inner.interval.set(Some(interval));
    }

    /// True when both handles are the same loop (Python's `is`).
    ///
    /// ```
    /// use twisted_reactor::{Clock, LoopingCall};
    /// let lc = LoopingCall::new(Clock::new(), || Ok(()));
    /// assert!(lc.ptr_eq(&lc.clone()));                                // lc is lc
    /// ```
    pub fn ptr_eq(&self, other: &LoopingCall) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl LoopInner {
    /// `__call__`.
    fn run(me: &Rc<LoopInner>) {
        // self.call = None
        let previous = me.call.borrow_mut().take();
        drop(previous);
        // d = maybeDeferred(self.f, *self.a, **self.kw)
        let d = match me.body.try_borrow_mut() {
            Ok(mut body) => body(),
            Err(_) => fail(LoopingCallError::Reentrant),
        };
        let (for_cb, for_eb) = (me.clone(), me.clone());
        // d.addCallback(cb); d.addErrback(eb)
        d.add_callback(move |_: AnyValue| -> Result<(), Failure> {
            if for_cb.running.get() {
                let now = for_cb.clock.seconds();
                LoopInner::schedule_from(&for_cb, now);
                Ok(())
            } else {
                let d = for_cb.deferred.borrow_mut().take();
                match d {
                    Some(d) => d.callback(LoopingCall { inner: for_cb }),
                    None => Err(Failure::new(AssertionError { message: "" })),
                }
            }
        })
        .add_errback(move |failure: Failure| -> Result<(), Failure> {
            for_eb.running.set(false);
            let d = for_eb.deferred.borrow_mut().take();
            match d {
                Some(d) => d.errback(failure),
                None => Err(Failure::new(AssertionError {
                    message: "'NoneType' object has no attribute 'errback'",
                })),
            }
        });
    }

    /// `_scheduleFrom(when)`.
    fn schedule_from(me: &Rc<LoopInner>, when: f64) {
        let interval = me.interval.get().unwrap_or(0.0);
        let how_long = if interval == 0.0 {
            0.0
        } else {
            let starttime = me.starttime.get().unwrap_or(when);
            let running_for = when - starttime;
            let until_next_interval = interval - py_mod(running_for, interval);
            if when == when + until_next_interval {
                interval
            } else {
                until_next_interval
            }
        };
        let for_call = me.clone();
        let call = me.clock.call_later(
            how_long,
            Box::new(move || {
                LoopInner::run(&for_call);
                Ok(())
            }),
        );
        let previous = me.call.borrow_mut().replace(call);
        drop(previous);
    }

    /// `_intervalOf(t)`.
    fn interval_of(&self, t: f64) -> i64 {
        let elapsed = t - self.starttime.get().unwrap_or(t);
        let interval = self.interval.get().unwrap_or(0.0);
        // int(): truncates toward zero (`as` saturates; NaN gives 0).
        (elapsed / interval) as i64
    }

    /// `withCount`'s counter: the count to call `f` with, if any.
    fn count(&self) -> Result<Option<u64>, Failure> {
        let now = self.clock.seconds();
        if self.interval.get() == Some(0.0) {
            self.real_last_time.set(Some(now));
            return Ok(Some(1));
        }
        let last_time = match self.real_last_time.get() {
            Some(t) => t,
            None => {
                let Some(mut t) = self.starttime.get() else {
                    return Err(Failure::new(AssertionError {
                        message: "LoopingCall called before it was started",
                    }));
                };
                if self.run_at_start.get() {
                    t -= self.interval.get().unwrap_or(0.0);
                }
                t
            }
        };
        let count = self.interval_of(now) - self.interval_of(last_time);
        if count > 0 {
            self.real_last_time.set(Some(now));
            return Ok(Some(count as u64));
        }
        Ok(None)
    }
}

impl fmt::Debug for LoopingCall {
    /// Twisted's `repr`: `LoopingCall<interval>(function)`, the interval
    /// `None` before the first `start`, the function by its Rust type name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.interval.get() {
            Some(i) => write!(f, "LoopingCall<{i:?}>({})", self.inner.name),
            None => write!(f, "LoopingCall<None>({})", self.inner.name),
        }
    }
}
