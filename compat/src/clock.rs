//! [`Clock`]: Synapse's `synapse.util.clock.Clock`, the wrapper through which
//! Synapse code schedules calls on a reactor (real or Twisted's test
//! `Clock`), running each in its own `call_later` logging context.

use std::rc::Rc;

use twisted_deferred::time::{DelayedCall, ReactorTime};
use twisted_deferred::{AssertionError, Deferred, Failure};

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
