//! Scheduling calls in time: Twisted's `IReactorTime` and `IDelayedCall`.
//!
//! The core only defines the interface, so that time-based helpers
//! ([`Deferred::add_timeout`](crate::Deferred::add_timeout), and Synapse's
//! helpers in `twisted-compat`) run on any implementation: the deterministic
//! `Clock` for tests and the real reactor, both in `twisted-reactor`.

use std::error::Error;
use std::fmt;
use std::rc::Rc;

use crate::failure::Failure;

/// A call scheduled in time. It may fail, as a Python function may raise:
/// the failure then comes out of whatever ran it (`Clock.advance()`, or the
/// reactor, which logs it).
pub type TimedCall = Box<dyn FnOnce() -> Result<(), Failure>>;

/// Twisted's `IReactorTime`: what knows the time and runs calls later.
pub trait ReactorTime {
    /// `seconds()`: the current time, in seconds.
    fn seconds(&self) -> f64;

    /// `callLater(delay, f)`: runs `f` once, `delay` seconds from now.
    fn call_later(&self, delay: f64, f: TimedCall) -> DelayedCall;
}

impl<R: ReactorTime + ?Sized> ReactorTime for Rc<R> {
    fn seconds(&self) -> f64 {
        (**self).seconds()
    }

    fn call_later(&self, delay: f64, f: TimedCall) -> DelayedCall {
        (**self).call_later(delay, f)
    }
}

impl<R: ReactorTime + ?Sized> ReactorTime for &R {
    fn seconds(&self) -> f64 {
        (**self).seconds()
    }

    fn call_later(&self, delay: f64, f: TimedCall) -> DelayedCall {
        (**self).call_later(delay, f)
    }
}

/// What an implementation of [`ReactorTime`] provides for one scheduled call
/// (Twisted's `IDelayedCall`); users hold a [`DelayedCall`].
pub trait DelayedCallImpl {
    /// `getTime()`: when the call is due.
    fn get_time(&self) -> f64;
    /// `cancel()`.
    fn cancel(&self) -> Result<(), DelayedCallError>;
    /// `reset(secondsFromNow)`.
    fn reset(&self, seconds_from_now: f64) -> Result<(), DelayedCallError>;
    /// `delay(secondsLater)`.
    fn delay(&self, seconds_later: f64) -> Result<(), DelayedCallError>;
    /// `active()`: neither called nor cancelled.
    fn active(&self) -> bool;
}

/// A call scheduled by [`ReactorTime::call_later`]: Twisted's
/// `DelayedCall`. Cloning gives another handle to the same call.
#[derive(Clone)]
pub struct DelayedCall(Rc<dyn DelayedCallImpl>);

impl DelayedCall {
    /// Wraps an implementation's call.
    pub fn new(imp: Rc<dyn DelayedCallImpl>) -> Self {
        DelayedCall(imp)
    }

    /// `getTime()`: when the call is due, in seconds.
    pub fn get_time(&self) -> f64 {
        self.0.get_time()
    }

    /// `cancel()`: the call will not run. Fails with
    /// [`DelayedCallError::AlreadyCancelled`] or
    /// [`DelayedCallError::AlreadyCalled`] when it is no longer active.
    pub fn cancel(&self) -> Result<(), DelayedCallError> {
        self.0.cancel()
    }

    /// `reset(secondsFromNow)`: reschedules the call to that many seconds
    /// from now.
    pub fn reset(&self, seconds_from_now: f64) -> Result<(), DelayedCallError> {
        self.0.reset(seconds_from_now)
    }

    /// `delay(secondsLater)`: postpones the call by that many seconds.
    pub fn delay(&self, seconds_later: f64) -> Result<(), DelayedCallError> {
        self.0.delay(seconds_later)
    }

    /// `active()`: the call has neither run nor been cancelled.
    pub fn active(&self) -> bool {
        self.0.active()
    }

    /// True when both handles are the same call (Python's `is`).
    pub fn ptr_eq(&self, other: &DelayedCall) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for DelayedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedCall")
            .field("time", &self.get_time())
            .field("active", &self.active())
            .finish()
    }
}

/// Misuse of a [`DelayedCall`]: Twisted's `AlreadyCancelled` and
/// `AlreadyCalled` (`twisted.internet.error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayedCallError {
    /// "Tried to cancel an already-cancelled event."
    AlreadyCancelled,
    /// "Tried to cancel an already-called event."
    AlreadyCalled,
}

impl fmt::Display for DelayedCallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DelayedCallError::AlreadyCancelled => {
                f.write_str("Tried to cancel an already-cancelled event.")
            }
            DelayedCallError::AlreadyCalled => {
                f.write_str("Tried to cancel an already-called event.")
            }
        }
    }
}

impl Error for DelayedCallError {}
