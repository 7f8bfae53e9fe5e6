//! [`Failure`]: an error travelling down a Deferred's errback chain, Twisted's
//! `twisted.python.failure.Failure`.
//!
//! A `Failure` wraps any error value (anything implementing
//! [`std::error::Error`]). It is reference counted, so handing the same
//! failure to several errbacks, a `DeferredList` and an unhandled-error
//! report shares one object, as Python shares one `Failure` instance. It costs
//! one allocation, like a `Box<dyn Error>`; a backtrace is captured only when
//! asked for ([`Failure::with_backtrace`]).

use std::any::Any;
use std::backtrace::Backtrace;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use crate::errors::{MessageError, PanicError};

/// An error held by a Deferred: Twisted's `Failure`.
///
/// Build one from any error with [`Failure::new`] or `.into()`; `?` converts
/// errors into failures inside callbacks. Inspect it with
/// [`check`](Failure::check) / [`trap`](Failure::trap) (Python's
/// `f.check(E)` / `f.trap(E)`), [`downcast_ref`](Failure::downcast_ref),
/// [`message`](Failure::message) (`getErrorMessage()`) and
/// [`type_name`](Failure::type_name).
///
/// Rust has no exception hierarchy: `check::<E>()` matches the exact type
/// `E`, where Python's `check` also matches subclasses.
///
/// ```
/// use twisted_deferred::{CancelledError, Failure};
///
/// // f = Failure(CancelledError())
/// let f = Failure::new(CancelledError);
/// assert!(f.check::<CancelledError>());                   // f.check(CancelledError)
/// assert!(f.trap::<std::fmt::Error>().is_err());          // f.trap(OtherError) re-raises
/// assert_eq!(f.short_type_name(), "CancelledError");
/// ```
#[derive(Clone)]
pub struct Failure(Rc<Repr<dyn Error + 'static>>);

struct Repr<E: ?Sized> {
    type_name: &'static str,
    backtrace: Option<Box<Backtrace>>,
    error: E,
}

impl Failure {
    /// Wraps an error: `Failure(exc)`.
    ///
    /// ```
    /// use twisted_deferred::Failure;
    /// let f = Failure::new(std::fmt::Error);
    /// assert_eq!(f.type_name(), "core::fmt::Error");
    /// ```
    pub fn new<E: Error + 'static>(error: E) -> Failure {
        Failure(Rc::new(Repr {
            type_name: std::any::type_name::<E>(),
            backtrace: None,
            error,
        }))
    }

    /// Wraps an error and records a backtrace of the current stack (Python
    /// failures always carry a traceback; here it is opt-in because capturing
    /// one costs microseconds).
    pub fn with_backtrace<E: Error + 'static>(error: E) -> Failure {
        Failure(Rc::new(Repr {
            type_name: std::any::type_name::<E>(),
            backtrace: Some(Box::new(Backtrace::force_capture())),
            error,
        }))
    }

    /// A failure carrying only a message (Python code often raises a bare
    /// `Exception("message")`).
    ///
    /// ```
    /// let f = twisted_deferred::Failure::msg("boom!");
    /// assert_eq!(f.message(), "boom!");
    /// ```
    pub fn msg(message: impl Into<String>) -> Failure {
        Failure::new(MessageError(message.into()))
    }

    /// The failure a caught panic becomes: a [`PanicError`] carrying the
    /// panic message.
    pub fn from_panic(payload: Box<dyn Any + Send>) -> Failure {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "Box<dyn Any>".to_owned()
        };
        Failure::new(PanicError { message })
    }

    /// True when the wrapped error is an `E`: `f.check(E)`.
    pub fn check<E: Error + 'static>(&self) -> bool {
        self.0.error.is::<E>()
    }

    /// Returns the error if it is an `E`, otherwise the failure itself, so
    /// that `f.trap::<E>()?` in an errback re-raises anything else, exactly as
    /// `f.trap(E)` does.
    ///
    /// ```
    /// use twisted_deferred::{CancelledError, Deferred, Failure};
    /// let d: Deferred<i32> = Deferred::new();
    /// // d.addErrback(lambda f: f.trap(CancelledError) and 0)
    /// d.add_errback(|f: Failure| {
    ///     f.trap::<CancelledError>()?;
    ///     Ok(0)
    /// });
    /// d.cancel().unwrap();
    /// assert_eq!(d.result().value(), Some(0));
    /// ```
    pub fn trap<E: Error + 'static>(&self) -> Result<&E, Failure> {
        self.downcast_ref::<E>().ok_or_else(|| self.clone())
    }

    /// Borrows the wrapped error as an `E`.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.0.error.downcast_ref::<E>()
    }

    /// The wrapped error.
    pub fn error(&self) -> &(dyn Error + 'static) {
        &self.0.error
    }

    /// The error's message (its `Display`): `getErrorMessage()`.
    pub fn message(&self) -> String {
        self.0.error.to_string()
    }

    /// The full type name of the wrapped error (`qual(f.type)`), for example
    /// `twisted_deferred::errors::CancelledError`.
    pub fn type_name(&self) -> &'static str {
        self.0.type_name
    }

    /// The last path segment of [`type_name`](Failure::type_name)
    /// (`f.type.__name__`), generic arguments kept.
    pub fn short_type_name(&self) -> &'static str {
        short_name(self.0.type_name)
    }

    /// The backtrace recorded by [`Failure::with_backtrace`], if any.
    pub fn backtrace(&self) -> Option<&Backtrace> {
        self.0.backtrace.as_deref()
    }

    /// True when both handles are the same failure object (Python's `is`).
    pub fn ptr_eq(a: &Failure, b: &Failure) -> bool {
        Rc::ptr_eq(&a.0, &b.0)
    }
}

/// The part of a Rust type path after the last `::` that is outside any
/// generic arguments.
pub(crate) fn short_name(full: &'static str) -> &'static str {
    let head_end = full.find('<').unwrap_or(full.len());
    match full[..head_end].rfind("::") {
        Some(i) => &full[i + 2..],
        None => full,
    }
}

impl<E: Error + 'static> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure::new(error)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = self.message();
        if message.is_empty() {
            f.write_str(self.short_type_name())
        } else {
            write!(f, "{}: {}", self.short_type_name(), message)
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Failure {}: {}>", self.type_name(), self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::CancelledError;

    #[test]
    fn short_names_ignore_generic_paths() {
        assert_eq!(short_name("a::b::C"), "C");
        assert_eq!(short_name("C"), "C");
        assert_eq!(short_name("a::W<b::X>"), "W<b::X>");
    }

    #[test]
    fn panics_keep_their_message() {
        let f = Failure::from_panic(Box::new("bad thing"));
        assert_eq!(f.message(), "bad thing");
        let f = Failure::from_panic(Box::new(String::from("formatted 3")));
        assert_eq!(f.message(), "formatted 3");
        assert!(f.check::<PanicError>());
    }

    #[test]
    fn clones_are_the_same_failure() {
        let f = Failure::new(CancelledError);
        let g = f.clone();
        assert!(Failure::ptr_eq(&f, &g));
        assert!(!Failure::ptr_eq(&f, &Failure::new(CancelledError)));
        assert!(f.backtrace().is_none());
        assert!(
            Failure::with_backtrace(CancelledError)
                .backtrace()
                .is_some()
        );
    }
}
