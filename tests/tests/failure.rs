//! `Failure`: wrapping an error, `check`, `trap`, the message and type
//! names, identity, panics, and the printed forms.
//!
//! Twisted behaviours covered: B142 and B143 (catalogue section 2.18) in
//! their Rust forms, with experiments E18 (12) and E19 and the `repr` of
//! section 3.3.

use std::error::Error;
use std::fmt;

use twisted_deferred::{
    AlreadyCalledError, CancelledError, Deferred, Failure, MessageError, PanicError,
};

#[derive(Debug, Clone, PartialEq)]
struct ValueError(&'static str);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Error for ValueError {}

#[derive(Debug, Clone, PartialEq)]
struct KeyError;

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("'k'")
    }
}

impl Error for KeyError {}

#[derive(Debug)]
struct Silent;

impl fmt::Display for Silent {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

impl Error for Silent {}

/// `Failure(exc)`: the error's type is the failure's type, the error its
/// value.
// Twisted: experiment E19 and DeferredTests.test_errbackWithNoArgs (type/value of a Failure)
#[test]
fn a_failure_wraps_an_error_and_keeps_its_type() {
    let f = Failure::new(ValueError("no tb"));
    assert_eq!(f.downcast_ref::<ValueError>(), Some(&ValueError("no tb")));
    assert!(f.type_name().ends_with("::ValueError"));
    assert!(f.type_name().starts_with("failure::"));
    assert_eq!(f.short_type_name(), "ValueError");
    assert_eq!(f.error().to_string(), "no tb");
}

/// Any error converts into a failure (`.into()`, `?`).
// Twisted: experiment E19 ("raise f.value -> new Failure, same value")
#[test]
fn any_error_converts_into_a_failure() {
    let f: Failure = KeyError.into();
    assert!(f.check::<KeyError>());
    fn raising() -> Result<(), Failure> {
        Err(ValueError("raised"))?;
        Ok(())
    }
    let f = raising().unwrap_err();
    assert!(f.check::<ValueError>());
    assert_eq!(f.message(), "raised");
}

/// `check` is true for the wrapped error's exact type only.
// Twisted: experiment E18 (12: "check: <class 'ValueError'> ... None")
#[test]
fn check_matches_the_wrapped_errors_type() {
    let f = Failure::new(ValueError("no tb"));
    assert!(f.check::<ValueError>());
    assert!(!f.check::<KeyError>());
    assert!(!f.check::<CancelledError>());
}

/// `trap` returns the error when it matches and otherwise gives back the
/// very failure, ready to be re-raised with `?`.
// Twisted: experiment E18 (12: trap) and pitfall P-24
#[test]
fn trap_returns_the_error_or_re_raises_the_failure() {
    let f = Failure::new(ValueError("no tb"));
    assert_eq!(f.trap::<ValueError>().ok(), Some(&ValueError("no tb")));
    let again = f.trap::<KeyError>().unwrap_err();
    assert!(Failure::ptr_eq(&again, &f));
    assert!(again.check::<ValueError>());
}

/// Trapping one of several types: chained checks, as `trap(A, B)`.
// Twisted: experiment E18 (12: "trap(matching) returns: <class 'ValueError'>" for trap(KeyError, ValueError))
#[test]
fn trapping_one_of_several_types_takes_the_first_that_matches() {
    fn trap_either(f: &Failure) -> Result<&'static str, Failure> {
        if f.trap::<KeyError>().is_ok() {
            return Ok("KeyError");
        }
        f.trap::<ValueError>()?;
        Ok("ValueError")
    }
    assert_eq!(
        trap_either(&Failure::new(ValueError("v"))).ok(),
        Some("ValueError")
    );
    assert_eq!(trap_either(&Failure::new(KeyError)).ok(), Some("KeyError"));
    assert!(
        trap_either(&Failure::new(CancelledError))
            .unwrap_err()
            .check::<CancelledError>()
    );
}

/// `getErrorMessage()` is the error's string.
// Twisted: experiment E18 (12: "Failure.getErrorMessage: 'no tb'")
#[test]
fn the_message_is_the_errors_text() {
    assert_eq!(Failure::new(ValueError("no tb")).message(), "no tb");
    assert_eq!(Failure::new(Silent).message(), "");
    assert_eq!(Failure::msg("boom!").message(), "boom!");
}

/// A bare message is a `MessageError` (Python's `Exception("…")`).
// Twisted: experiment E02 (errback with a bare message)
#[test]
fn a_message_failure_is_a_message_error() {
    let f = Failure::msg("just a string");
    assert!(f.check::<MessageError>());
    assert_eq!(
        f.downcast_ref::<MessageError>(),
        Some(&MessageError("just a string".into()))
    );
}

/// Clones are the same failure object; separately built ones are not.
// Twisted: experiment E19 (failure identity)
#[test]
fn clones_are_the_same_failure() {
    let f = Failure::new(ValueError("v"));
    let g = f.clone();
    assert!(Failure::ptr_eq(&f, &g));
    assert!(!Failure::ptr_eq(&f, &Failure::new(ValueError("v"))));
}

/// Wrapping a failure "again" (into a Failure) gives the same failure.
// Twisted: section 1.6 ("Constructing a Failure from another Failure ... copies the original")
#[test]
fn converting_a_failure_into_a_failure_keeps_it() {
    let f = Failure::new(ValueError("v"));
    fn into_failure(e: impl Into<Failure>) -> Failure {
        e.into()
    }
    let g = into_failure(f.clone());
    assert!(Failure::ptr_eq(&f, &g));
    let d: Deferred<i32> = Deferred::new();
    d.errback(f.clone()).unwrap();
    assert!(Failure::ptr_eq(&d.result().failure().unwrap(), &f));
    d.add_errback(|_f| Ok(0));
}

/// A panic's message becomes the `PanicError`'s message; a payload that is
/// not a string reads "Box<dyn Any>".
// Twisted: pitfall P-18 (everything raised becomes a Failure)
#[test]
fn panics_become_panic_errors_carrying_their_message() {
    let f = Failure::from_panic(Box::new("static message"));
    assert!(f.check::<PanicError>());
    assert_eq!(f.message(), "static message");
    let f = Failure::from_panic(Box::new(format!("formatted {}", 3)));
    assert_eq!(f.message(), "formatted 3");
    let f = Failure::from_panic(Box::new(17_u32));
    assert_eq!(f.message(), "Box<dyn Any>");
    let f = std::panic::catch_unwind(|| panic!("caught {}", "here"))
        .map_err(Failure::from_panic)
        .unwrap_err();
    assert_eq!(
        f.downcast_ref::<PanicError>(),
        Some(&PanicError {
            message: "caught here".into()
        })
    );
}

/// A backtrace is recorded only on request.
// Twisted: section 1.6 (Python failures carry frames; opt-in here)
#[test]
fn a_backtrace_is_recorded_only_when_asked_for() {
    assert!(Failure::new(ValueError("v")).backtrace().is_none());
    let f = Failure::with_backtrace(ValueError("v"));
    assert!(f.backtrace().is_some());
    assert!(f.check::<ValueError>());
}

/// `Debug` is the repr: the full type name and the message.
// Twisted: section 3.3 (`repr(f)` = `<twisted.python.failure.Failure {qual(type)}: {message}>`)
#[test]
fn the_debug_form_names_the_full_type_and_the_message() {
    let f = Failure::new(ValueError("bad"));
    assert_eq!(format!("{f:?}"), "<Failure failure::ValueError: bad>");
    let c = Failure::new(CancelledError);
    assert_eq!(
        format!("{c:?}"),
        format!("<Failure {}: {}>", c.type_name(), c.message())
    );
}

/// `Display` is the short type name and the message (just the type when
/// the message is empty).
// Twisted: section 3.3 (`str(f)` names the type and the value)
#[test]
fn the_display_form_is_the_short_type_and_the_message() {
    assert_eq!(
        Failure::new(ValueError("bad")).to_string(),
        "ValueError: bad"
    );
    assert_eq!(Failure::new(Silent).to_string(), "Silent");
}

/// The error types of the crate are ordinary errors a failure can wrap.
// Twisted: section 3.2 (exception types of the API)
#[test]
fn the_crates_errors_have_their_short_names() {
    assert_eq!(
        Failure::new(CancelledError).short_type_name(),
        "CancelledError"
    );
    assert_eq!(
        Failure::new(AlreadyCalledError::new()).short_type_name(),
        "AlreadyCalledError"
    );
    assert_eq!(
        Failure::new(CancelledError).type_name(),
        "twisted_deferred::errors::CancelledError"
    );
}
