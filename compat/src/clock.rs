//! [`Clock`]: Synapse's `synapse.util.clock.Clock`, the wrapper through which
//! Synapse code schedules calls on a reactor (real or Twisted's test
//! `Clock`), running each in its own `call_later` logging context.

use std::future::Future;
use std::rc::Rc;

use twisted_deferred::time::{DelayedCall, ReactorTime};
use twisted_deferred::{AssertionError, Deferred, Failure, Outcome};
use twisted_reactor::{LoopingCall, LoopingCallError};

use crate::logcontext::{
    IntoDeferred, LoggingContext, PreserveLoggingContext, current_context, run_in_background,
};

/// Synapse's `Clock`: wraps anything that keeps time ([`ReactorTime`]: the
/// reactor, or `twisted_reactor::Clock` in tests).
///
/// ```
/// use std::{cell::Cell, rc::Rc};
/// use twisted_compat::Clock;
/// use twisted_reactor::Clock as TestClock;
///
/// let reactor = TestClock::new();
/// let clock = Clock::new(reactor.clone(), "example.com");     // Clock(reactor, server_name)
/// let ran = Rc::new(Cell::new(false));
/// let r = ran.clone();
/// clock.call_later(1.5, move || { r.set(true); Ok(()) });       // clock.call_later(1.5, f)
/// reactor.advance(1.5).unwrap();
/// assert!(ran.get());
/// ```
#[derive(Clone)]
pub struct Clock {
    reactor: Rc<dyn ReactorTime>,
    server_name: Rc<str>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("server_name", &self.server_name)
            .field("time", &self.time())
            .finish()
    }
}

impl Clock {
    /// `Clock(reactor, server_name)`.
    pub fn new(reactor: impl ReactorTime + 'static, server_name: &str) -> Clock {
        Clock {
            reactor: Rc::new(reactor),
            server_name: server_name.into(),
        }
    }

    /// `time()`: the reactor's time, in seconds.
    pub fn time(&self) -> f64 {
        self.reactor.seconds()
    }

    /// `time_msec()`: the reactor's time, in whole milliseconds.
    pub fn time_msec(&self) -> i64 {
        (self.reactor.seconds() * 1000.0) as i64
    }

    /// `call_later(delay, f)`: runs `f` `delay` seconds from now, as Synapse
    /// does: the call must start in the sentinel context (Synapse asserts
    /// it: otherwise the call fails with `AssertionError`), and runs in a
    /// fresh `call_later` logging context through `run_in_background`, so a
    /// failure of `f` becomes a failed Deferred nobody holds (reported as
    /// unhandled), not an error of the reactor.
    pub fn call_later<T, M, F, R>(&self, delay: f64, f: F) -> DelayedCall
    where
        T: 'static,
        F: FnOnce() -> R + 'static,
        R: IntoDeferred<T, M> + 'static,
    {
        let server_name = self.server_name.clone();
        self.reactor.call_later(
            delay,
            Box::new(move || {
                if !current_context().is_sentinel() {
                    return Err(Failure::new(AssertionError {
                        message: "Expected `call_later` callback from the reactor to start with the sentinel logcontext",
                    }));
                }
                let _context =
                    PreserveLoggingContext::new(LoggingContext::new("call_later", &*server_name));
                let _background: Deferred<T> = run_in_background(f);
                Ok(())
            }),
        )
    }

    /// The wrapped reactor.
    pub fn reactor(&self) -> &dyn ReactorTime {
        &*self.reactor
    }
}

impl ReactorTime for Clock {
    fn seconds(&self) -> f64 {
        self.reactor.seconds()
    }

    fn call_later(&self, delay: f64, f: twisted_deferred::time::TimedCall) -> DelayedCall {
        Clock::call_later(self, delay, f)
    }
}

/// Synapse's `Clock.sleep` and `Clock.looping_call` / `looping_call_now`.
impl Clock {
    /// `await clock.sleep(duration)`: resumes `seconds` seconds from now, in
    /// the caller's logging context.
    ///
    /// As in Synapse, the wait happens inside a [`PreserveLoggingContext`]
    /// block: the sentinel is current while the caller waits, the timer is
    /// scheduled on the reactor directly (not through
    /// [`call_later`](Clock::call_later): no `call_later` context), and the
    /// caller's context comes back when the timer fires. Nothing happens
    /// until the future is first polled, as a Python coroutine does nothing
    /// until awaited.
    ///
    /// Cancelling the coroutine that awaits it fails the await with
    /// `CancelledError` at once; the timer stays scheduled and its wake-up is
    /// then ignored (Synapse's `_try_wakeup_deferred`).
    ///
    /// ```
    /// use twisted_compat::{Clock, Failure, current_context, LoggingContext};
    /// use twisted_deferred::ensure_deferred;
    ///
    /// let reactor = twisted_reactor::Clock::new();
    /// let clock = Clock::new(reactor.clone(), "hs");
    /// let ctx = LoggingContext::new("req", "hs");
    /// let (c, inside) = (clock.clone(), ctx.clone());
    /// let d = ensure_deferred(async move {
    ///     let _scope = inside.entered();                 // with LoggingContext(...):
    ///     c.sleep(1.5).await?;                           //     await clock.sleep(Duration(seconds=1.5))
    ///     assert_eq!(current_context(), inside);         //     back in the caller's context
    ///     Ok::<_, Failure>(())
    /// });
    /// assert!(current_context().is_sentinel());          // sentinel while it waits
    /// reactor.advance(1.5).unwrap();
    /// assert!(d.called());
    /// ```
    pub fn sleep(&self, seconds: f64) -> impl Future<Output = Result<(), Failure>> + 'static {
        let reactor = self.reactor.clone();
        async move {
            let d: Deferred<()> = Deferred::new();
            // with context.PreserveLoggingContext(): callLater(...); await d
            let _preserve = PreserveLoggingContext::sentinel();
            let wake = d.clone();
            let _call = reactor.call_later(
                seconds,
                Box::new(move || {
                    // _try_wakeup_deferred: the sleeper may have been
                    // cancelled meanwhile.
                    let _ = wake.callback(());
                    Ok(())
                }),
            );
            d.await
        }
    }

    /// `clock.looping_call(f, duration)`: calls `f` every `interval`
    /// seconds, the first time one interval from now (Twisted's
    /// `LoopingCall` on the wrapped reactor, started with `now=False`).
    ///
    /// Each call must start in the sentinel context (Synapse asserts it:
    /// otherwise the loop dies with `AssertionError`) and runs `f` through
    /// [`run_in_background`] inside a fresh `looping_call` logging context,
    /// so the reactor is back in the sentinel afterwards. `f` returns what
    /// [`run_in_background`]'s function does (a Deferred, a future, or a
    /// `Result`); while what it returned is pending, no further call
    /// happens. The loop is started in the sentinel context, and a loop
    /// that dies is logged ("Looping call died").
    ///
    /// Fails with [`LoopingCallError::NegativeInterval`] for an interval
    /// below 0 (Python raises `ValueError`). Synapse's tracking of looping
    /// calls for `shutdown()` is not part of this wrapper.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use twisted_compat::{Clock, Failure, current_context};
    ///
    /// let reactor = twisted_reactor::Clock::new();
    /// let clock = Clock::new(reactor.clone(), "hs");
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let s = seen.clone();
    /// // clock.looping_call(f, Duration(seconds=2))
    /// let call = clock
    ///     .looping_call(move || { s.borrow_mut().push(current_context().to_string()); Ok::<_, Failure>(()) }, 2.0)
    ///     .unwrap();
    /// reactor.pump(&[2.0, 2.0]).unwrap();
    /// assert_eq!(*seen.borrow(), ["looping_call", "looping_call"]);
    /// assert!(current_context().is_sentinel());
    /// call.stop().unwrap();
    /// ```
    pub fn looping_call<T, M, F, R>(
        &self,
        f: F,
        interval: f64,
    ) -> Result<LoopingCall, LoopingCallError>
    where
        T: 'static,
        F: FnMut() -> R + 'static,
        R: IntoDeferred<T, M>,
    {
        self.looping_call_common(f, interval, false)
    }

    /// `clock.looping_call_now(f, duration)`: [`looping_call`](Clock::looping_call),
    /// but the first call happens now, inside this call (in the sentinel
    /// context, which is current meanwhile), in a context named
    /// `looping_call` as well.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// use twisted_compat::{Clock, Failure};
    ///
    /// let reactor = twisted_reactor::Clock::new();
    /// let clock = Clock::new(reactor.clone(), "hs");
    /// let n = Rc::new(Cell::new(0));
    /// let k = n.clone();
    /// // clock.looping_call_now(f, Duration(seconds=1))
    /// let call = clock.looping_call_now(move || { k.set(k.get() + 1); Ok::<_, Failure>(()) }, 1.0).unwrap();
    /// assert_eq!(n.get(), 1);                             // called at once
    /// reactor.advance(1.0).unwrap();
    /// assert_eq!(n.get(), 2);
    /// call.stop().unwrap();
    /// ```
    pub fn looping_call_now<T, M, F, R>(
        &self,
        f: F,
        interval: f64,
    ) -> Result<LoopingCall, LoopingCallError>
    where
        T: 'static,
        F: FnMut() -> R + 'static,
        R: IntoDeferred<T, M>,
    {
        self.looping_call_common(f, interval, true)
    }

    fn looping_call_common<T, M, F, R>(
        &self,
        mut f: F,
        interval: f64,
        now: bool,
    ) -> Result<LoopingCall, LoopingCallError>
    where
        T: 'static,
        F: FnMut() -> R + 'static,
        R: IntoDeferred<T, M>,
    {
        let server_name = self.server_name.clone();
        let wrapped_f = move || -> Outcome<T> {
            if !current_context().is_sentinel() {
                return Outcome::Failure(Failure::new(AssertionError {
                    message: "Expected `looping_call` callback from the reactor to start with the sentinel logcontext",
                }));
            }
            let _context =
                PreserveLoggingContext::new(LoggingContext::new("looping_call", &*server_name));
            Outcome::Deferred(run_in_background(&mut f))
        };
        let call = LoopingCall::new(RawReactor(self.reactor.clone()), wrapped_f);
        let started = {
            let _sentinel = PreserveLoggingContext::sentinel();
            call.start(interval, now)
        }?;
        started.add_errback(|failure: Failure| {
            log::error!("Looping call died: {failure}");
            Err(failure)
        });
        Ok(call)
    }
}

/// The wrapped reactor itself, for the `LoopingCall`s Synapse schedules on
/// it directly.
struct RawReactor(Rc<dyn ReactorTime>);

impl ReactorTime for RawReactor {
    fn seconds(&self) -> f64 {
        self.0.seconds()
    }

    fn call_later(&self, delay: f64, f: twisted_deferred::time::TimedCall) -> DelayedCall {
        self.0.call_later(delay, f)
    }
}
