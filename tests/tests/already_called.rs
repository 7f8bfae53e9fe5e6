//! `AlreadyCalledError`: a second `callback()` / `errback()` fails at once
//! and leaves the Deferred as it was.
//!
//! Twisted behaviours covered: B60, B61 (catalogue section 2.7); B62 and B63
//! (debug mode) have no counterpart in the port, see the report.

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::{AlreadyCalledError, Deferred, Failure, capture_unhandled_errors};

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

#[derive(Debug, Clone, PartialEq)]
struct RuntimeError;

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("runtime")
    }
}

impl Error for RuntimeError {}

/// A Deferred with one `addCallbacks` link that logs what runs.
fn logged(log: &Log<String>) -> Deferred<&'static str> {
    let d: Deferred<&'static str> = Deferred::new();
    let (l1, l2) = (log.clone(), log.clone());
    d.add_callbacks(
        move |s: &'static str| {
            l1.borrow_mut().push(format!("callback {s}"));
            Ok(s)
        },
        move |f: Failure| {
            l2.borrow_mut()
                .push(format!("errback {}", f.short_type_name()));
            Err(f)
        },
    );
    d
}

fn is_already_called(r: Result<(), Failure>) -> bool {
    r.is_err_and(|f| f.check::<AlreadyCalledError>())
}

// Twisted: AlreadyCalledTests.testAlreadyCalled_CC
#[test]
fn a_second_callback_after_callback_fails_with_already_called() {
    let log: Log<String> = new_log();
    let d = logged(&log);
    d.callback("hello").unwrap();
    assert!(is_already_called(d.callback("twice")));
    assert_eq!(*log.borrow(), ["callback hello"]);
    assert_eq!(d.result().value(), Some("hello"));
}

// Twisted: AlreadyCalledTests.testAlreadyCalled_CE
#[test]
fn an_errback_after_callback_fails_with_already_called() {
    let log: Log<String> = new_log();
    let d = logged(&log);
    d.callback("hello").unwrap();
    assert!(is_already_called(d.errback(RuntimeError)));
    assert_eq!(*log.borrow(), ["callback hello"]);
    assert_eq!(d.result().value(), Some("hello"));
}

// Twisted: AlreadyCalledTests.testAlreadyCalled_EE
#[test]
fn a_second_errback_after_errback_fails_with_already_called() {
    let log: Log<String> = new_log();
    let ((), reports) = capture_unhandled_errors(|| {
        let d = logged(&log);
        d.errback(RuntimeError).unwrap();
        let first = d.result().failure().unwrap();
        assert!(is_already_called(d.errback(RuntimeError)));
        assert!(Failure::ptr_eq(&d.result().failure().unwrap(), &first));
        d.add_errback(|_f| Ok(""));
    });
    assert_eq!(*log.borrow(), ["errback RuntimeError"]);
    assert!(reports.is_empty());
}

// Twisted: AlreadyCalledTests.testAlreadyCalled_EC
#[test]
fn a_callback_after_errback_fails_with_already_called() {
    let log: Log<String> = new_log();
    let ((), reports) = capture_unhandled_errors(|| {
        let d = logged(&log);
        d.errback(RuntimeError).unwrap();
        assert!(is_already_called(d.callback("twice")));
        assert!(d.result().failure().unwrap().check::<RuntimeError>());
        d.add_errback(|_f| Ok(""));
    });
    assert_eq!(*log.borrow(), ["errback RuntimeError"]);
    assert!(reports.is_empty());
}

/// Without debugging the error carries nothing: it equals a fresh
/// `AlreadyCalledError`.
// Twisted: AlreadyCalledTests.testNoDebugging
#[test]
fn the_already_called_error_carries_no_arguments() {
    let d: Deferred<i32> = Deferred::new();
    d.callback(1).unwrap();
    let f = d.callback(2).unwrap_err();
    assert_eq!(
        f.downcast_ref::<AlreadyCalledError>(),
        Some(&AlreadyCalledError::new())
    );
    assert_eq!(f.short_type_name(), "AlreadyCalledError");
}

/// The refused fire is an error returned to its caller, not a failure in
/// the chain: later links still see the original value.
// Twisted: AlreadyCalledTests.testAlreadyCalled_CC (the Deferred is unaffected)
#[test]
fn a_refused_fire_does_not_touch_the_chain() {
    let log: Log<i32> = new_log();
    let d: Deferred<i32> = Deferred::new();
    d.callback(1).unwrap();
    assert!(is_already_called(d.callback(2)));
    let l = log.clone();
    d.add_callback(move |x: i32| {
        l.borrow_mut().push(x);
        Ok(x)
    });
    assert_eq!(*log.borrow(), [1]);
}

/// Paused or waiting makes no difference: a fired Deferred refuses.
// Twisted: AlreadyCalledTests.testAlreadyCalled_CC (B60: any second fire)
#[test]
fn a_paused_or_waiting_deferred_also_refuses_a_second_fire() {
    let paused: Deferred<i32> = Deferred::new();
    paused.pause();
    paused.callback(1).unwrap();
    assert!(is_already_called(paused.callback(2)));
    paused.unpause();
    assert_eq!(paused.result().value(), Some(1));

    let inner: Deferred<i32> = Deferred::new();
    let waiting: Deferred<i32> = Deferred::new();
    let i = inner.clone();
    waiting.add_callback(move |_x: i32| i);
    waiting.callback(0).unwrap();
    assert!(waiting.is_waiting());
    assert!(is_already_called(waiting.callback(5)));
    inner.callback(9).unwrap();
    assert_eq!(waiting.result().value(), Some(9));
}

/// `succeed` and `fail` give Deferreds that have fired.
// Twisted: DeferredTests.test_succeedMatchesManualSuccess (B60 applies to succeed/fail)
#[test]
fn succeed_and_fail_results_refuse_a_fire() {
    let ok = twisted_deferred::succeed(1);
    assert!(is_already_called(ok.callback(2)));
    let ((), reports) = capture_unhandled_errors(|| {
        let bad = twisted_deferred::fail::<i32>(RuntimeError);
        assert!(is_already_called(bad.errback(RuntimeError)));
        bad.add_errback(|_f| Ok(0));
    });
    assert!(reports.is_empty());
}
