//! Unhandled errors: a failure left at the end of a Deferred's chain is
//! reported when the Deferred goes away, unless a later errback handled it
//! or a chained Deferred took it over; the hook that receives reports.
//!
//! Twisted behaviours covered: B64, B65 (the failure reported; the log text
//! is not observable here, see the report), B66, B67, B68, B72's report
//! (catalogue section 2.8), with pitfall P-17 and experiment E16. B69
//! (`await`) belongs to the coroutine API, not this crate.

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::{
    CancelledError, Deferred, Failure, capture_unhandled_errors, fail, set_unhandled_error_hook,
    succeed_with_failure,
};

#[derive(Debug, Clone, PartialEq)]
struct ZeroDivisionError;

impl fmt::Display for ZeroDivisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("division by zero")
    }
}

impl Error for ZeroDivisionError {}

#[derive(Debug, Clone, PartialEq)]
struct GenericError(&'static str);

impl fmt::Display for GenericError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Error for GenericError {}

fn divide(a: i32, b: i32) -> Result<i32, ZeroDivisionError> {
    a.checked_div(b).ok_or(ZeroDivisionError)
}

// Twisted: LogTests.test_errorLog
#[test]
fn a_failure_left_at_the_end_of_the_chain_is_reported_when_dropped() {
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<i32> = Deferred::new();
        d.add_callback(|x: i32| Ok(divide(x, 0)?));
        d.callback(1).unwrap();
    });
    assert_eq!(reports.len(), 1);
    assert!(reports[0].check::<ZeroDivisionError>());
}

// Twisted: LogTests.test_errorLogWithInnerFrameRef
#[test]
fn a_failed_deferred_going_out_of_scope_in_a_function_is_reported() {
    fn sub_error_log() {
        let d: Deferred<i32> = Deferred::new();
        d.add_callback(|x: i32| Ok(divide(x, 0)?));
        d.callback(1).unwrap();
    }
    let ((), reports) = capture_unhandled_errors(sub_error_log);
    assert_eq!(reports.len(), 1);
    assert!(reports[0].check::<ZeroDivisionError>());
}

/// The report happens when the last handle goes, not before.
// Twisted: experiment E16 ("still referenced -> 0 event(s)", "after del -> 2 event(s)")
#[test]
fn a_failed_deferred_still_referenced_reports_nothing() {
    let seen: Rc<RefCell<Vec<String>>> = Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    let previous = set_unhandled_error_hook(Some(Box::new(move |f: &Failure| {
        sink.borrow_mut().push(f.message())
    })));
    let d: Deferred<i32> = Deferred::new();
    d.add_callback(|x: i32| Ok(divide(x, 0)?));
    d.callback(1).unwrap();
    let other_handle = d.clone();
    assert!(seen.borrow().is_empty(), "still referenced");
    drop(d);
    assert!(seen.borrow().is_empty(), "one handle left");
    drop(other_handle);
    assert_eq!(*seen.borrow(), ["division by zero"], "after the last drop");
    set_unhandled_error_hook(previous);
}

/// The hook receives the very Failure the Deferred held.
// Twisted: LogTests.test_errorLogNoRepr (the failure event carries the Failure)
#[test]
fn the_report_carries_the_failure_itself() {
    let original = Failure::new(GenericError("no traceback here"));
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<()> = Deferred::new();
        d.errback(original.clone()).unwrap();
    });
    assert_eq!(reports.len(), 1);
    assert!(Failure::ptr_eq(&reports[0], &original));
}

// Twisted: experiment E16 ("handled by a later errback -> 0 event(s)")
#[test]
fn a_failure_handled_by_a_later_errback_is_not_reported() {
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<i32> = Deferred::new();
        d.add_callback(|x: i32| Ok(divide(x, 0)?));
        d.callback(1).unwrap();
        d.add_errback(|_f: Failure| Ok(0));
    });
    assert!(reports.is_empty());
}

/// The record follows the result after every run: recovered, then failing
/// again, the latest failure is the one reported.
// Twisted: experiment E16 and the "further traps" note (candidate re-evaluated every run; checked in Python)
#[test]
fn the_record_is_re_evaluated_at_the_end_of_every_run() {
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<i32> = Deferred::new();
        d.errback(GenericError("1")).unwrap();
        d.add_errback(|_f: Failure| Ok(1));
        d.add_callback(|x: i32| Ok(divide(x, 0)?));
    });
    assert_eq!(reports.len(), 1);
    assert!(reports[0].check::<ZeroDivisionError>());

    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<i32> = Deferred::new();
        d.errback(GenericError("1")).unwrap();
        d.add_errback(|_f: Failure| Ok(1));
    });
    assert!(reports.is_empty(), "recovered: nothing to report");
}

/// A failure taken over by returning its Deferred from a callback is not
/// reported by the Deferred that gave it up.
// Twisted: LogTests.test_chainedErrorCleanup
#[test]
fn a_failure_taken_over_by_chaining_is_not_reported_by_the_giver() {
    let errors: Rc<RefCell<Vec<Failure>>> = Rc::new(RefCell::new(Vec::new()));
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<()> = Deferred::new();
        d.add_callback(|()| fail::<()>(GenericError("zoop")));
        d.callback(()).unwrap();
        let (e, r) = (errors.clone(), Rc::new(RefCell::new(0)));
        let r2 = r.clone();
        d.add_callbacks(
            move |()| {
                *r2.borrow_mut() += 1;
                Ok(())
            },
            move |f: Failure| {
                e.borrow_mut().push(f);
                Ok(())
            },
        );
        assert_eq!(*r.borrow(), 0);
    });
    assert_eq!(errors.borrow().len(), 1);
    assert!(errors.borrow()[0].check::<GenericError>());
    assert!(reports.is_empty());
}

/// A failed Deferred whose errback chains it to another (never fired) one
/// holds a Deferred, not a failure: nothing is reported.
// Twisted: LogTests.test_errorClearedByChaining
#[test]
fn a_failure_cleared_by_an_errback_returning_a_deferred_is_not_reported() {
    let ((), reports) = capture_unhandled_errors(|| {
        let bad = fail::<()>(GenericError("oh no"));
        let good: Deferred<()> = Deferred::new();
        let g = good.clone();
        bad.add_errback(move |_f: Failure| g);
        drop(bad);
        // Let the pair go (Python's garbage collector would free both; here
        // firing `good` releases them).
        good.callback(()).unwrap();
        drop(good);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

/// After an asynchronous hand-off only the final holder can report.
// Twisted: DeferredTests.test_asynchronousImplicitErrorChain (unhandled part) and experiment E16 ("chained failure handled on outer")
#[test]
fn a_handed_over_failure_handled_on_the_outer_is_not_reported() {
    let ((), reports) = capture_unhandled_errors(|| {
        let inner = fail::<()>(GenericError("zoop"));
        let outer: Deferred<()> = Deferred::new();
        let i = inner.clone();
        outer.add_callback(move |()| i);
        outer.callback(()).unwrap();
        outer.add_errback(|_f: Failure| Ok(()));
        drop(inner);
        drop(outer);
    });
    assert!(reports.is_empty());
}

/// `succeed(aFailure)` stores the failure without running a chain: never
/// reported, whereas a fired failure is.
// Twisted: pitfall P-17 and experiment E16 ("succeed(Failure) then dropped -> 0", "callback(Failure) then dropped -> 2")
#[test]
fn a_failure_stored_by_succeed_is_never_reported() {
    let ((), reports) = capture_unhandled_errors(|| {
        let d = succeed_with_failure::<i32>(GenericError("stored by succeed()"));
        assert!(d.result().failure().is_some());
        drop(d);
    });
    assert!(reports.is_empty());

    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<i32> = Deferred::new();
        d.errback(GenericError("via errback()")).unwrap();
        drop(d);
    });
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].message(), "via errback()");
}

/// `fail()` is a fired Deferred: dropped unhandled, it reports.
// Twisted: DeferredTests.testImmediateFailure and pitfall P-17
#[test]
fn a_dropped_fail_result_is_reported() {
    let ((), reports) = capture_unhandled_errors(|| {
        drop(fail::<i32>(GenericError("lost")));
    });
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].message(), "lost");
}

/// A cancelled Deferred nobody handled reports its CancelledError.
// Twisted: experiment E16 (any failure left at the end; checked in Python with cancel())
#[test]
fn an_unhandled_cancellation_is_reported() {
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<i32> = Deferred::new();
        d.cancel().unwrap();
    });
    assert_eq!(reports.len(), 1);
    assert!(reports[0].check::<CancelledError>());
}

/// Several failed Deferreds report in the order they go away.
// Twisted: experiment E16 (one report per dropped Deferred)
#[test]
fn reports_arrive_in_drop_order() {
    let ((), reports) = capture_unhandled_errors(|| {
        let first = fail::<()>(GenericError("first"));
        let second = fail::<()>(GenericError("second"));
        drop(second);
        drop(first);
    });
    let messages: Vec<String> = reports.iter().map(Failure::message).collect();
    assert_eq!(messages, ["second", "first"]);
}

/// The hook is per thread; setting one returns the previous one, and
/// `capture_unhandled_errors` restores whatever was installed.
// Twisted: LogTests (observers added and removed around each test)
#[test]
fn the_hook_can_be_replaced_and_restored() {
    let seen: Rc<RefCell<Vec<String>>> = Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    let before = set_unhandled_error_hook(Some(Box::new(move |f: &Failure| {
        sink.borrow_mut()
            .push(format!("outer hook: {}", f.message()))
    })));
    assert!(before.is_none());
    let ((), captured) = capture_unhandled_errors(|| drop(fail::<()>(GenericError("inside"))));
    assert_eq!(captured.len(), 1);
    drop(fail::<()>(GenericError("outside")));
    assert_eq!(*seen.borrow(), ["outer hook: outside"]);
    let mine = set_unhandled_error_hook(before);
    assert!(mine.is_some());
}

/// The failure arrives at the inner Deferred after the outer started
/// waiting: the inner one hands it over and never reports it; the outer
/// reports it when dropped.
// Twisted: LogTests.test_chainedErrorCleanup (asynchronous variant, checked in Python: 1 report, by the outer)
#[test]
fn only_the_final_holder_reports_a_failure_handed_over_later() {
    let (outer, reports) = capture_unhandled_errors(|| {
        let inner: Deferred<()> = Deferred::new();
        let outer: Deferred<()> = Deferred::new();
        let i = inner.clone();
        outer.add_callback(move |()| i);
        outer.callback(()).unwrap();
        inner.errback(GenericError("h")).unwrap();
        drop(inner);
        outer
    });
    assert!(reports.is_empty(), "the inner one does not report");
    assert!(outer.result().failure().is_some());
    let ((), reports) = capture_unhandled_errors(|| drop(outer));
    assert_eq!(reports.len(), 1, "the outer one does");
    assert_eq!(reports[0].message(), "h");
}

/// `chainDeferred` hands the failure to the target and keeps None: only the
/// target reports.
// Twisted: experiment E16 with chainDeferred (checked in Python: source 0 reports, target 1)
#[test]
fn a_failure_forwarded_by_chain_deferred_is_reported_by_the_target_only() {
    let (b, reports) = capture_unhandled_errors(|| {
        let a: Deferred<()> = Deferred::new();
        let b: Deferred<()> = Deferred::new();
        a.chain_deferred(&b);
        a.errback(GenericError("z")).unwrap();
        drop(a);
        b
    });
    assert!(reports.is_empty(), "the source does not report");
    let ((), reports) = capture_unhandled_errors(|| drop(b));
    assert_eq!(reports.len(), 1, "the target does");
    assert_eq!(reports[0].message(), "z");
}
