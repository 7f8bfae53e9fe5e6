//! The error types a Deferred produces or that Twisted's API names:
//! `CancelledError`, `AlreadyCalledError`, `TimeoutError`, `FirstError`, plus
//! the Rust-specific ones (a panic, a result of the wrong type, a run nested
//! too deeply).
//!
//! Twisted's `str()` of most of these is empty; their `Display` here follows
//! Rust conventions (a short lower-case sentence) instead, so that a logged
//! error says something. [`Failure::message`](crate::Failure::message)
//! therefore differs from Python's `getErrorMessage()` for these types.

use std::error::Error;
use std::fmt;

use crate::failure::Failure;

/// The failure of a cancelled Deferred: `twisted.internet.defer.CancelledError`.
///
/// ```
/// use twisted_deferred::{CancelledError, Deferred};
/// let d: Deferred<i32> = Deferred::new();
/// d.cancel().unwrap();                                   // d.cancel()
/// assert!(d.result().failure().unwrap().check::<CancelledError>());
/// # d.add_errback(|_| Ok(0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CancelledError;

impl fmt::Display for CancelledError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deferred was cancelled")
    }
}
impl Error for CancelledError {}

/// A second `callback()`/`errback()` on the same Deferred:
/// `twisted.internet.defer.AlreadyCalledError`.
///
/// ```
/// use twisted_deferred::{AlreadyCalledError, Deferred};
/// let d = Deferred::new();
/// d.callback(1).unwrap();
/// let err = d.callback(2).unwrap_err();                  // raises AlreadyCalledError
/// assert!(err.check::<AlreadyCalledError>());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlreadyCalledError {
    debug: Option<crate::debug::DebugInfo>,
}

impl AlreadyCalledError {
    /// A new `AlreadyCalledError`.
    pub fn new() -> Self {
        AlreadyCalledError { debug: None }
    }

    /// One carrying where the Deferred was created and first fired (with
    /// debugging on, as Twisted's message carries both stacks).
    pub fn with_debug_info(info: crate::debug::DebugInfo) -> Self {
        AlreadyCalledError { debug: Some(info) }
    }

    /// Where the Deferred was created and first fired, if recorded.
    pub fn debug_info(&self) -> Option<&crate::debug::DebugInfo> {
        self.debug.as_ref()
    }
}

impl fmt::Display for AlreadyCalledError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deferred has already been called")?;
        match &self.debug {
            Some(info) if !info.is_empty() => write!(f, "\n{info}"),
            _ => Ok(()),
        }
    }
}
impl Error for AlreadyCalledError {}

/// A timeout expired: `twisted.internet.defer.TimeoutError`.
///
/// `Deferred.addTimeout` raises it with the timeout in seconds (Twisted's
/// `TimeoutError(timeout, "Deferred")`), and so does Synapse's
/// `timeout_deferred` (whose message reads "Timed out after 1.5s").
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeoutError {
    /// The timeout that expired, in seconds, when known.
    pub timeout: Option<f64>,
}

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.timeout {
            Some(t) => write!(f, "deferred timed out after {t} seconds"),
            None => f.write_str("deferred timed out"),
        }
    }
}
impl Error for TimeoutError {}

/// The first failure among several Deferreds (`gatherResults`,
/// `DeferredList(fireOnOneErrback=True)`): `twisted.internet.defer.FirstError`,
/// with Python's `index` and `subFailure`.
///
/// Two `FirstError`s are equal when their indexes are equal and they wrap the
/// same failure object, as in Twisted.
#[derive(Clone)]
pub struct FirstError {
    /// The position of the failed Deferred in the input list.
    pub index: usize,
    /// The failure it produced (the very same object).
    pub failure: Failure,
}

impl FirstError {
    /// Wraps `failure` from input `index`.
    pub fn new(failure: Failure, index: usize) -> Self {
        FirstError { index, failure }
    }
}

impl PartialEq for FirstError {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && Failure::ptr_eq(&self.failure, &other.failure)
    }
}

impl fmt::Debug for FirstError {
    /// Twisted's `repr`: `FirstError[#index, repr(the wrapped error)]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FirstError[#{}, {:?}]", self.index, self.failure.error())
    }
}

impl fmt::Display for FirstError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FirstError[#{}, {}]", self.index, self.failure)
    }
}

impl Error for FirstError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(self.failure.error())
    }
}

/// A callback, errback or canceller panicked. Python turns any exception
/// raised in a callback into a failure; a Rust panic is caught the same way
/// and becomes this error, carrying the panic message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanicError {
    /// The panic message (`"Box<dyn Any>"` when the payload was not a string).
    pub message: String,
}

impl fmt::Display for PanicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl Error for PanicError {}

/// A typed callback met a result of another type. In Python the callback
/// would be called anyway and fail with `TypeError`; here it is not called
/// and the chain continues with this failure.
///
/// It happens when several typed handles of one Deferred disagree (see
/// [`Deferred::cast`](crate::Deferred::cast)), or after a Deferred handed its
/// result to a Deferred waiting on it and holds Python's `None` (`()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultTypeError {
    /// The type the callback takes.
    pub expected: &'static str,
    /// The type of the result it was given.
    pub found: &'static str,
}

impl fmt::Display for ResultTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "callback takes {} but the result is {}",
            self.expected, self.found
        )
    }
}
impl Error for ResultTypeError {}

/// Callbacks firing Deferreds whose callbacks fire further Deferreds nested
/// deeper than [`MAX_NESTING`](crate::MAX_NESTING) runs. Python raises
/// `RecursionError` in that situation (typically after ~330 links of
/// `chainDeferred`); Rust would overflow its stack and abort, so the `fire`
/// that would go too deep fails with this error instead and the Deferred stays
/// unfired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecursionError;

impl fmt::Display for RecursionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("maximum nesting depth of Deferred callbacks exceeded")
    }
}
impl Error for RecursionError {}

/// A plain message used as an error ([`Failure::msg`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError(pub String);

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl Error for MessageError {}

/// Twisted's internal `assert` statements fail in a few corner cases (a
/// coroutine cancelled before it first suspended; awaiting a Deferred that
/// failed in the callback run still going on); Python raises
/// `AssertionError`, and so does this port, at the same places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionError {
    /// What Twisted asserted.
    pub message: &'static str,
}

impl AssertionError {
    /// An assertion that failed, described by `message`.
    pub fn new(message: &'static str) -> Self {
        AssertionError { message }
    }
}

impl fmt::Display for AssertionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}
impl Error for AssertionError {}

/// The error a coroutine's Deferred is errbacked with, internally, when it is
/// cancelled (Twisted's `_InternalInlineCallbacksCancelledError`). Its
/// first errback turns it into waiting on the coroutine's eventual outcome,
/// so user code sees it only on a coroutine Deferred cancelled while paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalInlineCallbacksCancelledError;

impl fmt::Display for InternalInlineCallbacksCancelledError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("coroutine cancelled (internal)")
    }
}
impl Error for InternalInlineCallbacksCancelledError {}
