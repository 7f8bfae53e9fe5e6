//! Deferreds that have their result at once: `succeed`, `fail`,
//! `maybe_deferred`, `execute`, and the identity `passthru`.
//!
//! Twisted behaviours covered: B71, B72, B73, B74 (catalogue section 2.9),
//! `passthru` (section 1.2), with experiment E20. The coroutine cases of B73
//! belong to the coroutine API, not this crate.

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::{
    Deferred, Failure, PanicError, State, capture_unhandled_errors, execute, fail, maybe_deferred,
    passthru, succeed, succeed_with_failure,
};

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

#[derive(Debug, Clone, PartialEq)]
struct GenericError(&'static str);

impl fmt::Display for GenericError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Error for GenericError {}

/// Records what `addCallbacks(results.append, errors.append)` would.
fn outcomes<T: 'static>(d: &Deferred<T>) -> (Log<T>, Log<Failure>) {
    let results: Log<T> = new_log();
    let errors: Log<Failure> = new_log();
    let (r, e) = (results.clone(), errors.clone());
    d.add_callbacks(
        move |v: T| {
            r.borrow_mut().push(v);
            Ok(())
        },
        move |f: Failure| {
            e.borrow_mut().push(f);
            Ok(())
        },
    );
    (results, errors)
}

// Twisted: DeferredTests.testImmediateSuccess
#[test]
fn callbacks_on_a_succeed_result_run_at_once() {
    let l: Log<&str> = new_log();
    let d = succeed("success");
    let l2 = l.clone();
    d.add_callback(move |s: &str| {
        l2.borrow_mut().push(s);
        Ok(())
    });
    assert_eq!(*l.borrow(), ["success"]);
}

/// `succeed(x)` is in the same state as `Deferred()` + `callback(x)`.
// Twisted: DeferredTests.test_succeedMatchesManualSuccess
#[test]
fn succeed_matches_a_manual_callback() {
    let d: Deferred<&str> = Deferred::new();
    d.callback("success").unwrap();
    let d2 = succeed("success");
    assert_eq!(d.called(), d2.called());
    assert_eq!(d.paused(), d2.paused());
    assert_eq!(d.is_waiting(), d2.is_waiting());
    assert_eq!(d.result().value(), d2.result().value());
    let repr =
        |d: &Deferred<&'static str>| format!("{d:?}").replace(&format!("{:#x}", d.id()), "0xID");
    assert_eq!(repr(&d), repr(&d2));
    assert_eq!(repr(&d2), "<Deferred at 0xID current result: \"success\">");
}

// Twisted: DeferredTests.testImmediateFailure
#[test]
fn errbacks_on_a_fail_result_run_at_once() {
    let d = fail::<()>(GenericError("fail"));
    let (results, errors) = outcomes(&d);
    assert!(results.borrow().is_empty());
    assert_eq!(errors.borrow().len(), 1);
    assert_eq!(errors.borrow()[0].message(), "fail");
}

/// `fail(x)` behaves as `Deferred()` + `errback(x)`: it is called, holds
/// the failure, and reports it if dropped unhandled.
// Twisted: DeferredTests.testImmediateFailure and pitfall P-17
#[test]
fn fail_matches_a_manual_errback() {
    let original = Failure::new(GenericError("x"));
    let ((), reports) = capture_unhandled_errors(|| {
        let d = fail::<i32>(original.clone());
        assert!(d.called());
        assert_eq!(d.paused(), 0);
        assert!(Failure::ptr_eq(&d.result().failure().unwrap(), &original));
    });
    assert_eq!(reports.len(), 1);
    assert!(Failure::ptr_eq(&reports[0], &original));
}

/// `succeed` with a failure holds it and delivers it to errbacks at once.
// Twisted: pitfall P-17 (succeed(Failure)) and experiment E16
#[test]
fn succeed_with_a_failure_delivers_it_to_errbacks() {
    let original = Failure::new(GenericError("stored"));
    let d = succeed_with_failure::<i32>(original.clone());
    assert!(d.called());
    let (results, errors) = outcomes(&d);
    assert!(results.borrow().is_empty());
    assert!(Failure::ptr_eq(&errors.borrow()[0], &original));
}

// Twisted: DeferredTests.test_maybeDeferredSync
#[test]
fn maybe_deferred_wraps_a_returned_value() {
    let result = Rc::new("object");
    let r = result.clone();
    let d = maybe_deferred(move || Ok(r));
    let (results, errors) = outcomes(&d);
    assert!(errors.borrow().is_empty());
    assert_eq!(results.borrow().len(), 1);
    assert!(Rc::ptr_eq(&results.borrow()[0], &result));
}

/// Python passes extra arguments; a Rust closure captures them.
// Twisted: DeferredTests.test_maybeDeferredSyncWithArgs
#[test]
fn maybe_deferred_calls_the_function_with_what_it_captured() {
    let plus_five = |x: i32| x + 5;
    let d = maybe_deferred(move || Ok(plus_five(10)));
    let (results, errors) = outcomes(&d);
    assert!(errors.borrow().is_empty());
    assert_eq!(*results.borrow(), [15]);
}

/// The function runs synchronously, inside `maybe_deferred`.
// Twisted: DeferredTests.test_maybeDeferredSync (B73: called synchronously)
#[test]
fn maybe_deferred_calls_the_function_at_once() {
    let log: Log<&str> = new_log();
    let l = log.clone();
    log.borrow_mut().push("before");
    let d = maybe_deferred(move || {
        l.borrow_mut().push("called");
        Ok(1)
    });
    log.borrow_mut().push("after");
    assert_eq!(*log.borrow(), ["before", "called", "after"]);
    assert_eq!(d.result().value(), Some(1));
}

// Twisted: DeferredTests.test_maybeDeferredSyncException
#[test]
fn maybe_deferred_turns_a_raised_error_into_a_failed_deferred() {
    let d = maybe_deferred::<i32, _>(|| Err(GenericError("that value is unacceptable").into()));
    let (results, errors) = outcomes(&d);
    assert!(results.borrow().is_empty());
    assert_eq!(errors.borrow().len(), 1);
    assert_eq!(errors.borrow()[0].message(), "that value is unacceptable");
}

// Twisted: DeferredTests.test_maybeDeferredSyncException (a panic is Rust's raise)
#[test]
fn maybe_deferred_turns_a_panic_into_a_failed_deferred() {
    let d = maybe_deferred::<i32, Result<i32, Failure>>(|| panic!("bad input"));
    let (results, errors) = outcomes(&d);
    assert!(results.borrow().is_empty());
    assert!(errors.borrow()[0].check::<PanicError>());
    assert_eq!(errors.borrow()[0].message(), "bad input");
}

/// A returned Failure gives a failed Deferred holding that same Failure.
// Twisted: DeferredTests.test_maybeDeferredSyncFailure
#[test]
fn maybe_deferred_uses_a_returned_failure_as_it_is() {
    let expected = Failure::new(GenericError("10 + 5"));
    let e = expected.clone();
    let d = maybe_deferred::<i32, _>(move || e);
    let (results, errors) = outcomes(&d);
    assert!(results.borrow().is_empty());
    assert_eq!(errors.borrow().len(), 1);
    assert!(Failure::ptr_eq(&errors.borrow()[0], &expected));
}

/// A returned Deferred is returned itself, not wrapped.
// Twisted: DeferredTests.test_maybeDeferredAsync and experiment E20 (1)
#[test]
fn maybe_deferred_returns_a_returned_deferred_itself() {
    let d1: Deferred<&str> = Deferred::new();
    let r = d1.clone();
    let d2 = maybe_deferred(move || r);
    assert!(d2.ptr_eq(&d1));
    d1.callback("Success").unwrap();
    let (results, _errors) = outcomes(&d2);
    assert_eq!(*results.borrow(), ["Success"]);
}

// Twisted: DeferredTests.test_maybeDeferredAsyncError
#[test]
fn maybe_deferred_passes_a_returned_deferreds_failure_through() {
    let d1: Deferred<()> = Deferred::new();
    let r = d1.clone();
    let d2 = maybe_deferred(move || r);
    d1.errback(GenericError("runtime")).unwrap();
    let f = d2.result().failure().unwrap();
    assert!(f.check::<GenericError>());
    d2.add_errback(|_f| Ok(()));
}

/// An already-failed Deferred returned by the function is returned as it
/// is (same object, same failure).
// Twisted: experiment E20 (1) with a failed Deferred
#[test]
fn maybe_deferred_returns_a_failed_deferred_itself() {
    let failed = fail::<i32>(GenericError("f"));
    let r = failed.clone();
    let d = maybe_deferred(move || r);
    assert!(d.ptr_eq(&failed));
    d.add_errback(|_f| Ok(0));
    assert_eq!(failed.result().value(), Some(0));
}

/// `execute` calls now; `succeed` with the value.
// Twisted: experiment E20 (6)
#[test]
fn execute_wraps_the_returned_value() {
    let d = execute(|| Ok(4 * 2));
    assert_eq!(d.result().value(), Some(8));
}

// Twisted: experiment E20 (6c)
#[test]
fn execute_turns_a_raised_error_into_a_failed_deferred() {
    let d = execute::<i32>(|| Err(GenericError("division by zero").into()));
    let (_results, errors) = outcomes(&d);
    assert_eq!(errors.borrow()[0].message(), "division by zero");
}

// Twisted: experiment E20 (6c) (a panic is Rust's raise)
#[test]
fn execute_turns_a_panic_into_a_failed_deferred() {
    let d = execute::<i32>(|| panic!("exploded"));
    let (_results, errors) = outcomes(&d);
    assert!(errors.borrow()[0].check::<PanicError>());
}

/// `execute` special-cases nothing: a returned Deferred becomes the plain
/// result of a `succeed`, not a chain.
// Twisted: experiment E20 (6b)
#[test]
fn execute_keeps_a_returned_deferred_as_a_plain_value() {
    let inner: Deferred<i32> = Deferred::new();
    let r = inner.clone();
    let d = execute(move || Ok(r));
    assert!(!d.ptr_eq(&inner));
    assert!(!d.is_waiting());
    assert!(matches!(d.result(), State::Value(ref held) if held.ptr_eq(&inner)));
    inner.callback(3).unwrap();
    assert!(matches!(d.result(), State::Value(ref held) if held.ptr_eq(&inner)));
}

/// `passthru` is the identity, usable as a callback.
// Twisted: experiment E20 (7)
#[test]
fn passthru_returns_its_argument() {
    assert_eq!(passthru(5), 5);
    let value = Rc::new(1);
    assert!(Rc::ptr_eq(&passthru(value.clone()), &value));
    let d = succeed("kept").add_callback(|x: &str| Ok(passthru(x)));
    assert_eq!(d.result().value(), Some("kept"));
}

/// As an errback, `passthru` keeps the same Failure going.
// Twisted: experiment E20 (7) (`passthru` is the pass-through half of addErrback)
#[test]
fn passthru_as_an_errback_keeps_the_failure() {
    let original = Failure::new(GenericError("f"));
    let d = fail::<i32>(original.clone());
    d.add_errback(|f: Failure| -> Failure { passthru(f) });
    let (_results, errors) = outcomes(&d);
    assert!(Failure::ptr_eq(&errors.borrow()[0], &original));
}
