//! `DeferredList`: results in input order, the empty list, the
//! fire-on-one flags, `consumeErrors`, inputs that fired before the list was
//! built, the result list that goes on changing after the list fired,
//! duplicate inputs, cancellation (including cancellers that fail, which are
//! logged rather than raised), a Deferred waiting on a list, the printed
//! form, unhandled-error reports, and a list of a million inputs.
//!
//! Twisted behaviours covered: B76-B86 (catalogue section 2.10), the
//! `DeferredList` rows of section 3.1, pitfalls P-08 (second half) and P-14,
//! experiments E09 and E22 (B, G). B81's "the list delivered is `resultList`
//! itself" is about Python object identity: here the list is a copy, so only
//! its content is checked.

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use integration_tests::support::capture_logs;
use twisted_deferred::{
    AnyValue, CancelledError, Deferred, DeferredList, DeferredListFlags, DeferredListResult,
    Failure, FirstError, State, capture_unhandled_errors, fail, succeed, tracking::Tracker,
};

macro_rules! python_errors {
    ($($name:ident),*) => {$(
        #[derive(Debug, Clone, PartialEq)]
        struct $name(&'static str);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }

        impl Error for $name {}
    )*};
}

python_errors!(GenericError, ValueError, KeyError, RuntimeError);

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

fn flags(
    fire_on_one_callback: bool,
    fire_on_one_errback: bool,
    consume_errors: bool,
) -> DeferredListFlags {
    DeferredListFlags {
        fire_on_one_callback,
        fire_on_one_errback,
        consume_errors,
    }
}

/// Twisted's `fakeCallbackCanceller`: a canceller that calls back.
fn fake_callback_canceller(d: &Deferred<&'static str>) {
    d.callback("Callback Result").unwrap();
}

/// A Deferred whose canceller appends `name` to `log`.
fn logging_deferred<T: 'static>(log: &Log<&'static str>, name: &'static str) -> Deferred<T> {
    let log = log.clone();
    Deferred::with_canceller(move |_d: &Deferred<T>| log.borrow_mut().push(name))
}

/// The list of `(success, result)` pairs a list fired with, failures shown
/// by their type's short name.
fn described<T: Clone>(results: &[Result<T, Failure>]) -> Vec<Result<T, &'static str>> {
    results
        .iter()
        .map(|r| match r {
            Ok(v) => Ok(v.clone()),
            Err(f) => Err(f.short_type_name()),
        })
        .collect()
}

/// Python's `resultList` with failures shown by their type's short name.
fn described_result_list<T: Clone + 'static>(
    dl: &DeferredList<T>,
) -> Vec<Option<Result<T, &'static str>>> {
    dl.result_list()
        .iter()
        .map(|slot| {
            slot.as_ref().map(|r| match r {
                Ok(v) => Ok(v.clone()),
                Err(f) => Err(f.short_type_name()),
            })
        })
        .collect()
}

/// The `(success, result)` list the Deferred fired with (default mode).
fn all_results<T: Clone + fmt::Debug + 'static>(
    d: &Deferred<DeferredListResult<T>>,
) -> Vec<Result<T, Failure>> {
    match d.result() {
        State::Value(DeferredListResult::All(results)) => results,
        other => panic!("expected a list of results, found {other:?}"),
    }
}

/// The `FirstError` the list failed with.
fn first_error<T: Clone + 'static>(d: &Deferred<T>) -> FirstError {
    let failure = d.result().failure().expect("the list should have failed");
    failure
        .downcast_ref::<FirstError>()
        .expect("the failure should be a FirstError")
        .clone()
}

fn hex<T: 'static>(d: &Deferred<T>) -> String {
    format!("{:#x}", d.id())
}

// ---------------------------------------------------------------------------
// Capturing what the crate logs (Twisted's `log.failure`), per thread.

// ---------------------------------------------------------------------------
// Default mode

/// Results are recorded by position, not by firing order; the list's
/// callback half runs (never its errback half), and the failure goes on down
/// the input's own chain.
// Twisted: DeferredTests.testDeferredList; experiment E09-1
#[test]
fn results_are_in_input_order_whatever_the_firing_order() {
    let (defr1, defr2, defr3) = (
        Deferred::<&str>::new(),
        Deferred::<&str>::new(),
        Deferred::<&str>::new(),
    );
    let dl = DeferredList::new([defr1.clone(), defr2.clone(), defr3.clone()]);
    let halves = new_log();
    let (on_cb, on_eb) = (halves.clone(), halves.clone());
    dl.add_callbacks(
        move |r| {
            on_cb.borrow_mut().push("callback");
            Ok(r)
        },
        move |f: Failure| {
            on_eb.borrow_mut().push("errback");
            Err(f)
        },
    );
    let caught = new_log();
    let sink = caught.clone();
    defr3.callback("3").unwrap();
    defr1.callback("1").unwrap();
    assert!(!dl.called());
    assert_eq!(dl.finished_count(), 2);
    assert_eq!(
        described_result_list(&dl),
        [Some(Ok("1")), None, Some(Ok("3"))]
    );
    defr2.add_errback(move |f: Failure| {
        sink.borrow_mut().push(f);
        Ok("caught")
    });
    let error = Failure::new(GenericError("2"));
    defr2.errback(error.clone()).unwrap();
    assert_eq!(*halves.borrow(), ["callback"]);
    let results = all_results(&dl);
    assert_eq!(described(&results), [Ok("1"), Err("GenericError"), Ok("3")]);
    assert!(Failure::ptr_eq(results[1].as_ref().unwrap_err(), &error));
    assert_eq!(results[1].as_ref().unwrap_err().message(), "2");
    // defr2's own errback, added after the list, got the very same failure.
    assert_eq!(caught.borrow().len(), 1);
    assert!(Failure::ptr_eq(&caught.borrow()[0], &error));
    assert_eq!(dl.finished_count(), 3);
}

/// Even when every input fails, the list calls back with the failures.
// Twisted: experiment E09-1 (a DeferredList never errbacks in default mode)
#[test]
fn a_list_whose_inputs_all_fail_still_calls_back() {
    let (a, b) = (Deferred::<i32>::new(), Deferred::<i32>::new());
    let dl = DeferredList::with_flags([a.clone(), b.clone()], flags(false, false, true));
    b.errback(KeyError("b")).unwrap();
    a.errback(ValueError("a")).unwrap();
    assert_eq!(
        described(&all_results(&dl)),
        [Err("ValueError"), Err("KeyError")]
    );
}

// Twisted: DeferredTests.testEmptyDeferredList (dl1); DeferredListEmptyTests.testDeferredListEmpty
#[test]
fn an_empty_list_calls_back_at_once_with_an_empty_list() {
    let dl = DeferredList::<i32>::new([]);
    assert!(dl.called());
    let seen = new_log();
    let sink = seen.clone();
    dl.add_callback(move |r| {
        sink.borrow_mut().push(r.clone());
        Ok(r)
    });
    assert_eq!(*seen.borrow(), [DeferredListResult::All(vec![])]);
    assert_eq!(dl.finished_count(), 0);
    assert!(dl.result_list().is_empty());
}

// Twisted: DeferredTests.testEmptyDeferredList (dl2); pitfall P-14
#[test]
fn an_empty_list_with_fire_on_one_callback_never_fires() {
    let dl = DeferredList::<i32>::with_flags([], flags(true, false, false));
    let seen = new_log();
    let sink = seen.clone();
    dl.add_callback(move |r| {
        sink.borrow_mut().push(r.clone());
        Ok(r)
    });
    assert!(!dl.called());
    assert!(seen.borrow().is_empty());
    // Cancelling it cancels its (no) inputs and leaves it unfired, as
    // Python's `DeferredList([], fireOnOneCallback=True).cancel()` does.
    dl.cancel().unwrap();
    assert!(!dl.called());
    assert!(dl.result().is_pending());
}

// Twisted: experiment E09-3 ("empty+fireOnOneErrback: []")
#[test]
fn an_empty_list_with_fire_on_one_errback_calls_back_with_an_empty_list() {
    let dl = DeferredList::<i32>::with_flags([], flags(false, true, true));
    assert_eq!(dl.result().value(), Some(DeferredListResult::All(vec![])));
}

/// Inputs that fired before the list was built are counted while it is
/// being built, so the list has fired when the constructor returns.
// Twisted: DeferredTests.testDeferredListWithAlreadyFiredDeferreds
#[test]
fn inputs_fired_before_the_list_are_counted_in_the_constructor() {
    let (d1, d2) = (Deferred::<i32>::new(), Deferred::<i32>::new());
    let bang = Failure::new(GenericError("Bang"));
    d1.errback(bang.clone()).unwrap();
    d2.callback(2).unwrap();
    let dl = DeferredList::new([d1.clone(), d2.clone()]);
    assert!(dl.called());
    let results = all_results(&dl);
    assert_eq!(described(&results), [Err("GenericError"), Ok(2)]);
    assert!(Failure::ptr_eq(results[0].as_ref().unwrap_err(), &bang));
    d1.add_errback(|_| Ok(0));
}

// Twisted: DeferredTests.testDeferredListFireOnOneErrorWithAlreadyFiredDeferreds
#[test]
fn fire_on_one_errback_with_an_input_failed_beforehand_fails_in_the_constructor() {
    let (d1, d2) = (Deferred::<()>::new(), Deferred::<()>::new());
    let bang = Failure::new(GenericError("Bang"));
    d1.errback(bang.clone()).unwrap();
    let dl = DeferredList::with_flags([d1.clone(), d2.clone()], flags(false, true, false));
    assert!(dl.called());
    let seen = new_log();
    let sink = seen.clone();
    dl.add_errback(move |f: Failure| {
        sink.borrow_mut().push(f.clone());
        Err(f)
    });
    assert_eq!(seen.borrow().len(), 1);
    let fe = first_error(&dl);
    assert_eq!(fe.index, 0);
    assert!(Failure::ptr_eq(&fe.failure, &bang));
    dl.add_errback(|_| Ok(DeferredListResult::All(vec![])));
    d1.add_errback(|_| Ok(()));
    d2.callback(()).unwrap();
}

/// With `fireOnOneCallback`, an input that already succeeded fires the list
/// inside the constructor, and the list still attaches to the later inputs.
// Twisted: experiment E09-7 ("fired inside constructor: (1, 0) | b still gets a DL callback attached: 1")
#[test]
fn fire_on_one_callback_may_fire_in_the_constructor_and_still_watches_later_inputs() {
    let b = Deferred::<i32>::new();
    let dl = DeferredList::with_flags([succeed(1), b.clone()], flags(true, false, false));
    assert_eq!(dl.result().value(), Some(DeferredListResult::First(1, 0)));
    assert_eq!(dl.finished_count(), 1);
    assert_eq!(described_result_list(&dl), [Some(Ok(1)), None]);
    b.callback(2).unwrap();
    assert_eq!(dl.finished_count(), 2);
    assert_eq!(described_result_list(&dl), [Some(Ok(1)), Some(Ok(2))]);
    assert_eq!(dl.result().value(), Some(DeferredListResult::First(1, 0)));
    // The list's link passed the value on: b still holds it.
    assert_eq!(b.result().value(), Some(2));
}

/// The list is one more link on each input: callbacks added before it
/// change what it records, callbacks added after it see what it handed on.
// Twisted: DeferredList docstring ("DeferredList is not special"); own experiment ("[(True, 40)] [40]")
#[test]
fn callbacks_added_before_the_list_change_what_it_records() {
    let b = Deferred::<i32>::new();
    b.add_callback(|x| Ok(x * 10));
    let dl = DeferredList::new([b.clone()]);
    let seen = new_log();
    let sink = seen.clone();
    b.add_callback(move |r| {
        sink.borrow_mut().push(r);
        Ok(r)
    });
    b.callback(4).unwrap();
    assert_eq!(
        dl.result().value(),
        Some(DeferredListResult::All(vec![Ok(40)]))
    );
    assert_eq!(*seen.borrow(), [40]);
}

/// A fired but paused input is not processed in the constructor: its link
/// waits for `unpause()`.
// Twisted: catalogue B76 with a paused input (own experiment: "False [None, (True, 2)] 1", then "[(True, 1), (True, 2)]")
#[test]
fn a_paused_fired_input_is_recorded_only_when_unpaused() {
    let a = succeed(1);
    a.pause();
    let dl = DeferredList::new([a.clone(), succeed(2)]);
    assert!(!dl.called());
    assert_eq!(described_result_list(&dl), [None, Some(Ok(2))]);
    assert_eq!(dl.finished_count(), 1);
    a.unpause();
    assert_eq!(
        dl.result().value(),
        Some(DeferredListResult::All(vec![Ok(1), Ok(2)]))
    );
}

// ---------------------------------------------------------------------------
// fireOnOneCallback / fireOnOneErrback

// Twisted: experiment E09-4; pitfall P-14
#[test]
fn failures_do_not_trigger_fire_on_one_callback() {
    let (a, b) = (Deferred::<&str>::new(), Deferred::<&str>::new());
    let dl = DeferredList::with_flags([a.clone(), b.clone()], flags(true, false, false));
    let first = Failure::new(KeyError("first a fails"));
    a.errback(first.clone()).unwrap();
    assert!(!dl.called());
    assert_eq!(dl.finished_count(), 1);
    b.callback("B!").unwrap();
    assert_eq!(
        dl.result().value(),
        Some(DeferredListResult::First("B!", 1))
    );
    assert_eq!(
        described_result_list(&dl),
        [Some(Err("KeyError")), Some(Ok("B!"))]
    );
    // Without consumeErrors, a keeps its failure.
    assert!(Failure::ptr_eq(&a.result().failure().unwrap(), &first));
    assert_eq!(b.result().value(), Some("B!"));
    a.add_errback(|_| Ok(""));
}

/// With `fireOnOneCallback` and no success, the list fires normally once
/// every input has: with the full list, on the callback path.
// Twisted: experiment E09-5; pitfall P-14 ("failure does not trigger fireOnOneCallback")
#[test]
fn fire_on_one_callback_with_every_input_failing_fires_with_the_full_list() {
    let (a, b) = (Deferred::<()>::new(), Deferred::<()>::new());
    let dl = DeferredList::with_flags([a.clone(), b.clone()], flags(true, false, true));
    a.errback(KeyError("a")).unwrap();
    assert!(!dl.called());
    b.errback(KeyError("b")).unwrap();
    assert_eq!(
        described(&all_results(&dl)),
        [Err("KeyError"), Err("KeyError")]
    );
    assert!(matches!(a.result(), State::Value(())));
    assert!(matches!(b.result(), State::Value(())));
}

/// The failure a `fireOnOneErrback` list fails with is a `FirstError`
/// wrapping the input's very failure object, with the input's index.
// Twisted: DeferredTests.testDeferredListFireOnOneError; experiment E09-6
#[test]
fn fire_on_one_errback_fails_with_first_error_wrapping_the_same_failure() {
    let (defr1, defr2, defr3) = (
        Deferred::<&str>::new(),
        Deferred::<&str>::new(),
        Deferred::<&str>::new(),
    );
    let dl = DeferredList::with_flags(
        [defr1.clone(), defr2.clone(), defr3.clone()],
        flags(false, true, false),
    );
    let result = new_log();
    let sink = result.clone();
    dl.add_errback(move |f: Failure| {
        sink.borrow_mut().push(f.clone());
        Err(f)
    });
    let caught = new_log();
    let catch = caught.clone();
    defr2.add_errback(move |f: Failure| {
        catch.borrow_mut().push(f);
        Ok("caught")
    });
    defr1.callback("1").unwrap();
    assert!(result.borrow().is_empty());
    let error = Failure::new(GenericError("from def2"));
    defr2.errback(error.clone()).unwrap();
    assert_eq!(result.borrow().len(), 1);
    let failure = result.borrow()[0].clone();
    assert!(failure.check::<FirstError>());
    let fe = failure.downcast_ref::<FirstError>().unwrap();
    assert_eq!(fe.index, 1);
    assert!(Failure::ptr_eq(&fe.failure, &error));
    assert_eq!(
        fe.failure.downcast_ref::<GenericError>(),
        Some(&GenericError("from def2"))
    );
    // The input's own errback, added after the list, got the same object.
    assert!(Failure::ptr_eq(&caught.borrow()[0], &error));
    assert_eq!(defr2.result().value(), Some("caught"));
    dl.add_errback(|_| Ok(DeferredListResult::All(vec![])));
    defr3.callback("3").unwrap();
}

// Twisted: experiment E09-8 ("both flags, first failure -> FAIL FirstError")
#[test]
fn with_both_flags_a_first_failure_decides() {
    let (a, b) = (Deferred::<&str>::new(), Deferred::<&str>::new());
    let dl = DeferredList::with_flags([a.clone(), b.clone()], flags(true, true, false));
    let error = Failure::new(ValueError("v"));
    a.errback(error.clone()).unwrap();
    let fe = first_error(&dl);
    assert_eq!(fe.index, 0);
    assert!(Failure::ptr_eq(&fe.failure, &error));
    b.callback("late").unwrap();
    // Still the FirstError: a success after firing changes only resultList.
    assert_eq!(first_error(&dl).index, 0);
    assert_eq!(
        described_result_list(&dl),
        [Some(Err("ValueError")), Some(Ok("late"))]
    );
    dl.add_errback(|_| Ok(DeferredListResult::All(vec![])));
    a.add_errback(|_| Ok(""));
}

// Twisted: experiment E09-8, the other order (own experiment: `('x', 1)`, then a's failure stays on a)
#[test]
fn with_both_flags_a_first_success_decides() {
    let (a, b) = (Deferred::<&str>::new(), Deferred::<&str>::new());
    let dl = DeferredList::with_flags([a.clone(), b.clone()], flags(true, true, false));
    b.callback("x").unwrap();
    let error = Failure::new(ValueError("after"));
    a.errback(error.clone()).unwrap();
    assert_eq!(dl.result().value(), Some(DeferredListResult::First("x", 1)));
    assert_eq!(dl.finished_count(), 2);
    assert!(Failure::ptr_eq(&a.result().failure().unwrap(), &error));
    a.add_errback(|_| Ok(""));
}

/// After the list fired, its links on the other inputs stay: their results
/// are still recorded and counted.
// Twisted: pitfall P-14 ("resultList still updated after firing"); experiment E09-9
#[test]
fn the_result_list_keeps_changing_after_the_list_fired() {
    let (x, y) = (Deferred::<&str>::new(), Deferred::<&str>::new());
    let dl = DeferredList::with_flags([x.clone(), y.clone()], flags(false, true, true));
    x.errback(KeyError("x")).unwrap();
    assert!(dl.called());
    assert_eq!(dl.finished_count(), 1);
    assert_eq!(described_result_list(&dl), [Some(Err("KeyError")), None]);
    y.callback("late").unwrap();
    assert_eq!(dl.finished_count(), 2);
    assert_eq!(
        described_result_list(&dl),
        [Some(Err("KeyError")), Some(Ok("late"))]
    );
    assert_eq!(first_error(&dl).index, 0);
    dl.add_errback(|_| Ok(DeferredListResult::All(vec![])));
}

// ---------------------------------------------------------------------------
// consumeErrors

// Twisted: DeferredTests.testDeferredListDontConsumeErrors; experiment E09-1 ("b after DL saw it: ValueError")
#[test]
fn without_consume_errors_the_failure_goes_on_down_the_inputs_chain() {
    let d1 = Deferred::<()>::new();
    let dl = DeferredList::new([d1.clone()]);
    let error_trap = new_log();
    let trap = error_trap.clone();
    d1.add_errback(move |f: Failure| {
        trap.borrow_mut().push(f);
        Ok(())
    });
    let result_lists = new_log();
    let sink = result_lists.clone();
    dl.add_callback(move |r| {
        sink.borrow_mut().push(r.clone());
        Ok(r)
    });
    let bang = Failure::new(GenericError("Bang"));
    d1.errback(bang.clone()).unwrap();
    assert_eq!(error_trap.borrow().len(), 1);
    assert!(Failure::ptr_eq(&error_trap.borrow()[0], &bang));
    assert_eq!(error_trap.borrow()[0].message(), "Bang");
    assert_eq!(result_lists.borrow().len(), 1);
    let DeferredListResult::All(first) = &result_lists.borrow()[0] else {
        panic!("expected a list of results");
    };
    assert_eq!(first.len(), 1);
    assert!(Failure::ptr_eq(first[0].as_ref().unwrap_err(), &bang));
}

// Twisted: DeferredTests.testDeferredListConsumeErrors; experiment E09-2
#[test]
fn consume_errors_replaces_the_inputs_failure_with_none() {
    let d1 = Deferred::<()>::new();
    let dl = DeferredList::with_flags([d1.clone()], flags(false, false, true));
    let error_trap = new_log();
    let trap = error_trap.clone();
    let after = new_log();
    let seen_after = after.clone();
    d1.add_callbacks(
        move |v: ()| {
            seen_after.borrow_mut().push(v);
            Ok(())
        },
        move |f: Failure| {
            trap.borrow_mut().push(f);
            Ok(())
        },
    );
    let result_lists = new_log();
    let sink = result_lists.clone();
    dl.add_callback(move |r| {
        sink.borrow_mut().push(r.clone());
        Ok(r)
    });
    let bang = Failure::new(GenericError("Bang"));
    d1.errback(bang.clone()).unwrap();
    assert!(error_trap.borrow().is_empty());
    assert_eq!(*after.borrow(), [()]);
    assert_eq!(result_lists.borrow().len(), 1);
    let DeferredListResult::All(first) = &result_lists.borrow()[0] else {
        panic!("expected a list of results");
    };
    assert!(Failure::ptr_eq(first[0].as_ref().unwrap_err(), &bang));
    assert_eq!(first[0].as_ref().unwrap_err().message(), "Bang");
}

/// `consumeErrors` does not prevent `fireOnOneErrback`; the input holds
/// `None` afterwards and the FirstError still wraps its failure.
// Twisted: catalogue B82 ("consumeErrors does not affect fireOnOneErrback"); DeferredList docstring
#[test]
fn consume_errors_does_not_stop_fire_on_one_errback() {
    let (a, b) = (Deferred::<()>::new(), Deferred::<()>::new());
    let dl = DeferredList::with_flags([a.clone(), b.clone()], flags(false, true, true));
    let error = Failure::new(RuntimeError("oh noes"));
    b.errback(error.clone()).unwrap();
    let fe = first_error(&dl);
    assert_eq!(fe.index, 1);
    assert!(Failure::ptr_eq(&fe.failure, &error));
    assert!(matches!(b.result(), State::Value(())));
    dl.add_errback(|_| Ok(DeferredListResult::All(vec![])));
    a.callback(()).unwrap();
}

/// The same Deferred twice: each slot sees what the previous link left.
// Twisted: experiment E22-B ("duplicate success: [(True, 1), (True, 1)]")
#[test]
fn a_deferred_listed_twice_succeeding_is_recorded_twice() {
    let d = Deferred::<i32>::new();
    let dl = DeferredList::new([d.clone(), d.clone()]);
    d.callback(1).unwrap();
    assert_eq!(
        dl.result().value(),
        Some(DeferredListResult::All(vec![Ok(1), Ok(1)]))
    );
    assert_eq!(d.result().value(), Some(1));
}

// Twisted: experiment E22-B ("duplicate failure + consumeErrors: [(False, ValueError), (True, None)]")
#[test]
fn a_deferred_listed_twice_with_consume_errors_shows_the_failure_then_none() {
    let d = Deferred::<AnyValue>::new();
    let dl = DeferredList::with_flags([d.clone(), d.clone()], flags(false, false, true));
    let error = Failure::new(ValueError("v"));
    d.errback(error.clone()).unwrap();
    let results = all_results(&dl);
    assert_eq!(results.len(), 2);
    assert!(Failure::ptr_eq(results[0].as_ref().unwrap_err(), &error));
    assert!(results[1].as_ref().unwrap().is_none());
    assert!(d.result().value().unwrap().is_none());
}

/// Without consumeErrors the first link hands the failure on, so the second
/// slot records the very same object and the Deferred keeps it.
// Twisted: experiment E22-B, without consumeErrors (own experiment: "same obj: True True")
#[test]
fn a_deferred_listed_twice_failing_records_the_same_failure_twice() {
    let d = Deferred::<i32>::new();
    let dl = DeferredList::new([d.clone(), d.clone()]);
    let error = Failure::new(ValueError("v"));
    d.errback(error.clone()).unwrap();
    let results = all_results(&dl);
    assert_eq!(results.len(), 2);
    assert!(Failure::ptr_eq(results[0].as_ref().unwrap_err(), &error));
    assert!(Failure::ptr_eq(results[1].as_ref().unwrap_err(), &error));
    assert!(Failure::ptr_eq(&d.result().failure().unwrap(), &error));
    d.add_errback(|_| Ok(0));
}

// ---------------------------------------------------------------------------
// Cancellation

// Twisted: DeferredTests.test_cancelDeferredList; experiment E09-12
#[test]
fn cancelling_an_unfired_list_cancels_every_input() {
    let (one, two) = (Deferred::<()>::new(), Deferred::<()>::new());
    let dl = DeferredList::new([one.clone(), two.clone()]);
    let ((), reports) = capture_unhandled_errors(|| {
        dl.cancel().unwrap();
    });
    assert!(reports.is_empty());
    assert!(one.result().failure().unwrap().check::<CancelledError>());
    assert!(two.result().failure().unwrap().check::<CancelledError>());
    // The list itself is not errbacked: it calls back with what the
    // cancelled inputs produced.
    let results = all_results(&dl);
    assert_eq!(
        described(&results),
        [Err("CancelledError"), Err("CancelledError")]
    );
    assert!(Failure::ptr_eq(
        results[0].as_ref().unwrap_err(),
        &one.result().failure().unwrap()
    ));
    one.add_errback(|_| Ok(()));
    two.add_errback(|_| Ok(()));
}

// Twisted: experiment E09-10 ("cancel order: ['a', 'b']")
#[test]
fn cancelling_a_list_cancels_its_inputs_in_list_order() {
    let order = new_log();
    let inputs: Vec<Deferred<i32>> = ["first", "second", "third"]
        .into_iter()
        .map(|name| logging_deferred(&order, name))
        .collect();
    let dl = DeferredList::with_flags(inputs.clone(), flags(false, false, true));
    dl.cancel().unwrap();
    assert_eq!(*order.borrow(), ["first", "second", "third"]);
    assert_eq!(
        described(&all_results(&dl)),
        [
            Err("CancelledError"),
            Err("CancelledError"),
            Err("CancelledError")
        ]
    );
}

// Twisted: DeferredTests.test_cancelDeferredListCallback
#[test]
fn cancel_calls_back_with_what_the_cancellers_produced() {
    let one = Deferred::with_canceller(fake_callback_canceller);
    let two = Deferred::<&str>::new();
    let dl = DeferredList::new([one.clone(), two.clone()]);
    dl.cancel().unwrap();
    assert!(two.result().failure().unwrap().check::<CancelledError>());
    let results = all_results(&dl);
    assert_eq!(
        described(&results),
        [Ok("Callback Result"), Err("CancelledError")]
    );
    two.add_errback(|_| Ok(""));
}

/// Cancelling a `fireOnOneCallback` list whose inputs fail with
/// CancelledError: every input is cancelled and, since none succeeded, the
/// list fires with the full list.
// Twisted: DeferredTests.test_cancelDeferredListWithFireOnOneCallback
#[test]
fn cancel_with_fire_on_one_callback_cancels_every_input() {
    let (one, two) = (Deferred::<()>::new(), Deferred::<()>::new());
    let dl = DeferredList::with_flags([one.clone(), two.clone()], flags(true, false, false));
    dl.cancel().unwrap();
    assert!(one.result().failure().unwrap().check::<CancelledError>());
    assert!(two.result().failure().unwrap().check::<CancelledError>());
    assert_eq!(
        described(&all_results(&dl)),
        [Err("CancelledError"), Err("CancelledError")]
    );
    one.add_errback(|_| Ok(()));
    two.add_errback(|_| Ok(()));
}

/// The loop goes on after the list fired mid-loop: the second input is
/// still cancelled.
// Twisted: DeferredTests.test_cancelDeferredListWithFireOnOneCallbackAndDeferredCallback
#[test]
fn cancel_with_fire_on_one_callback_fires_with_a_canceller_that_called_back() {
    let one = Deferred::with_canceller(fake_callback_canceller);
    let two = Deferred::<&str>::new();
    let dl = DeferredList::with_flags([one.clone(), two.clone()], flags(true, false, false));
    dl.cancel().unwrap();
    assert!(two.result().failure().unwrap().check::<CancelledError>());
    assert_eq!(
        dl.result().value(),
        Some(DeferredListResult::First("Callback Result", 0))
    );
    two.add_errback(|_| Ok(""));
}

/// The first cancelled input fails the list mid-loop, before the next
/// input is cancelled; the FirstError wraps that input's failure.
// Twisted: DeferredTests.test_cancelDeferredListWithFireOnOneErrback; catalogue B84 (own experiment: ['one canceller', ('dl errback', 0, True), 'two canceller'])
#[test]
fn cancel_with_fire_on_one_errback_fails_with_the_first_cancelled_input() {
    let order: Log<String> = new_log();
    let (o1, o2, o3) = (order.clone(), order.clone(), order.clone());
    let one = Deferred::with_canceller(move |_d: &Deferred<()>| {
        o1.borrow_mut().push("one canceller".into())
    });
    let two = Deferred::with_canceller(move |_d: &Deferred<()>| {
        o2.borrow_mut().push("two canceller".into())
    });
    let dl = DeferredList::with_flags([one.clone(), two.clone()], flags(false, true, false));
    dl.add_errback(move |f: Failure| {
        let index = f.downcast_ref::<FirstError>().map(|fe| fe.index);
        o3.borrow_mut().push(format!("list errback {index:?}"));
        Err(f)
    });
    dl.cancel().unwrap();
    assert_eq!(
        *order.borrow(),
        ["one canceller", "list errback Some(0)", "two canceller"]
    );
    let one_failure = one.result().failure().unwrap();
    assert!(one_failure.check::<CancelledError>());
    assert!(two.result().failure().unwrap().check::<CancelledError>());
    let fe = first_error(&dl);
    assert_eq!(fe.index, 0);
    assert!(fe.failure.check::<CancelledError>());
    assert!(Failure::ptr_eq(&fe.failure, &one_failure));
    dl.add_errback(|_| Ok(DeferredListResult::All(vec![])));
    one.add_errback(|_| Ok(()));
    two.add_errback(|_| Ok(()));
}

// Twisted: DeferredTests.test_cancelDeferredListWithFireOnOneErrbackAllDeferredsCallback
#[test]
fn cancel_with_fire_on_one_errback_succeeds_when_every_canceller_calls_back() {
    let one = Deferred::with_canceller(fake_callback_canceller);
    let two = Deferred::with_canceller(fake_callback_canceller);
    let dl = DeferredList::with_flags([one.clone(), two.clone()], flags(false, true, false));
    dl.cancel().unwrap();
    assert_eq!(
        dl.result().value(),
        Some(DeferredListResult::All(vec![
            Ok("Callback Result"),
            Ok("Callback Result")
        ]))
    );
}

/// The list cancels the Deferreds it was built with; growing the caller's
/// collection afterwards changes nothing.
// Twisted: DeferredTests.test_cancelDeferredListWithOriginalDeferreds
#[test]
fn cancel_reaches_only_the_deferreds_given_at_construction() {
    let (one, two) = (Deferred::<()>::new(), Deferred::<()>::new());
    let mut argument_list = vec![one.clone(), two.clone()];
    let dl = DeferredList::new(argument_list.clone());
    let three = Deferred::<()>::new();
    argument_list.push(three.clone());
    dl.cancel().unwrap();
    assert!(one.result().failure().unwrap().check::<CancelledError>());
    assert!(two.result().failure().unwrap().check::<CancelledError>());
    assert!(three.result().is_pending());
    assert_eq!(argument_list.len(), 3);
    one.add_errback(|_| Ok(()));
    two.add_errback(|_| Ok(()));
}

/// A canceller that fails does not make `DeferredList.cancel()` fail: the
/// failure is logged ("Exception raised from user supplied canceller") and
/// the loop goes on. The input whose canceller failed stays unfired, so the
/// list does too.
// Twisted: DeferredTests.test_cancelDeferredListWithException; pitfall P-08; experiment E09-10, E09-13
#[test]
fn a_failing_canceller_is_logged_not_raised_and_the_loop_goes_on() {
    let one = Deferred::with_canceller(|_d: &Deferred<()>| -> Result<(), Failure> {
        Err(Failure::new(RuntimeError("test")))
    });
    let two = Deferred::<()>::new();
    let dl = DeferredList::new([one.clone(), two.clone()]);
    let (cancelled, logged) = capture_logs(|| dl.cancel());
    assert!(cancelled.is_ok());
    assert!(two.result().failure().unwrap().check::<CancelledError>());
    assert_eq!(logged.len(), 1, "{logged:?}");
    let (level, text) = &logged[0];
    assert_eq!(*level, log::Level::Error);
    assert!(
        text.starts_with("Exception raised from user supplied canceller"),
        "{text}"
    );
    assert!(text.contains("RuntimeError"), "{text}");
    assert!(text.contains("test"), "{text}");
    assert!(one.result().is_pending());
    assert!(!dl.called());
    assert_eq!(
        described_result_list(&dl),
        [None, Some(Err("CancelledError"))]
    );
    two.add_errback(|_| Ok(()));
    one.callback(()).unwrap();
}

/// A panicking canceller is Rust's raising canceller: logged the same way.
// Twisted: DeferredTests.test_cancelDeferredListWithException (the canceller raises)
#[test]
fn a_panicking_canceller_is_logged_and_the_loop_goes_on() {
    let one = Deferred::with_canceller(|_d: &Deferred<()>| -> () { panic!("canceller blew up") });
    let two = Deferred::<()>::new();
    let dl = DeferredList::new([one.clone(), two.clone()]);
    let (cancelled, logged) = capture_logs(|| dl.cancel());
    assert!(cancelled.is_ok());
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        logged[0]
            .1
            .starts_with("Exception raised from user supplied canceller"),
        "{logged:?}"
    );
    assert!(logged[0].1.contains("canceller blew up"), "{logged:?}");
    assert!(one.result().is_pending());
    assert!(two.result().failure().unwrap().check::<CancelledError>());
    assert!(!dl.called());
    two.add_errback(|_| Ok(()));
    one.callback(()).unwrap();
}

// Twisted: DeferredTests.test_cancelFiredOnOneCallbackDeferredList; experiment E09-11
#[test]
fn cancelling_a_list_fired_by_fire_on_one_callback_does_nothing() {
    let order = new_log();
    let one = Deferred::<()>::new();
    let two: Deferred<()> = logging_deferred(&order, "two");
    let dl = DeferredList::with_flags([one.clone(), two.clone()], flags(true, false, false));
    one.callback(()).unwrap();
    dl.cancel().unwrap();
    assert!(two.result().is_pending());
    assert!(order.borrow().is_empty());
    assert_eq!(dl.result().value(), Some(DeferredListResult::First((), 0)));
    two.callback(()).unwrap();
}

// Twisted: DeferredTests.test_cancelFiredOnOneErrbackDeferredList
#[test]
fn cancelling_a_list_fired_by_fire_on_one_errback_does_nothing() {
    let order = new_log();
    let one = Deferred::<()>::new();
    let two: Deferred<()> = logging_deferred(&order, "two");
    let dl = DeferredList::with_flags([one.clone(), two.clone()], flags(false, true, false));
    one.errback(GenericError("test")).unwrap();
    dl.cancel().unwrap();
    assert!(two.result().is_pending());
    assert!(order.borrow().is_empty());
    assert!(one.result().failure().unwrap().check::<GenericError>());
    assert_eq!(first_error(&dl).index, 0);
    dl.add_errback(|_| Ok(DeferredListResult::All(vec![])));
    one.add_errback(|_| Ok(()));
    two.callback(()).unwrap();
}

/// `DeferredList.cancel` replaces `Deferred.cancel`: once the list has
/// fired, it does nothing, even while a callback of the list made it wait on
/// another Deferred (a plain Deferred would forward the cancel there).
// Twisted: DeferredList.cancel ("if not self.called"); own experiment ("2 [] True False")
#[test]
fn cancelling_a_fired_list_waiting_on_a_deferred_is_not_forwarded() {
    let order = new_log();
    let x: Deferred<i32> = logging_deferred(&order, "x canceller");
    let dl = DeferredList::new([succeed(1)]);
    let inner = x.clone();
    dl.add_callback(move |_| inner);
    assert!(dl.is_waiting());
    dl.cancel().unwrap();
    assert!(order.borrow().is_empty());
    assert!(x.result().is_pending());
    x.callback(5).unwrap();
    assert_eq!(dl.cast::<i32>().result().value(), Some(5));
}

/// A Deferred waiting on a DeferredList forwards `cancel()` to the list's
/// own `cancel()`, which cancels the inputs.
// Twisted: experiment E22-G ("outer: [(False, <Failure CancelledError>)] | a: FAIL CancelledError"); catalogue B86
#[test]
fn a_deferred_waiting_on_a_list_forwards_cancel_to_it() {
    let order = new_log();
    let a: Deferred<i32> = logging_deferred(&order, "a canceller");
    let outer = Deferred::<()>::new();
    let input = a.clone();
    let outer = outer.add_callback(move |()| DeferredList::new([input]).into_deferred());
    outer.cast::<()>().callback(()).unwrap();
    assert!(outer.is_waiting());
    outer.cancel().unwrap();
    assert_eq!(*order.borrow(), ["a canceller"]);
    let a_failure = a.result().failure().unwrap();
    assert!(a_failure.check::<CancelledError>());
    let results = all_results(&outer);
    assert_eq!(described(&results), [Err("CancelledError")]);
    assert!(Failure::ptr_eq(
        results[0].as_ref().unwrap_err(),
        &a_failure
    ));
    a.add_errback(|_| Ok(0));
}

// ---------------------------------------------------------------------------
// Printed form

// Twisted: section 3.1 ("empty DeferredList: <DeferredList at 0x… current result: []>")
#[test]
fn an_empty_list_prints_with_an_empty_result() {
    let dl = DeferredList::<i32>::new([]);
    assert_eq!(
        format!("{dl:?}"),
        format!("<DeferredList at {} current result: []>", hex(&dl))
    );
    assert_eq!(dl.to_string(), format!("{dl:?}"));
}

// Twisted: section 3.1 (unfired: `<{ClassName} at 0x{id:x}>`); own experiment ("<DeferredList at 0x7fa4d8093550>")
#[test]
fn an_unfired_list_prints_its_class_name_and_address() {
    let a = Deferred::<i32>::new();
    let dl = DeferredList::new([a.clone()]);
    assert_eq!(format!("{dl:?}"), format!("<DeferredList at {}>", hex(&dl)));
    a.callback(1).unwrap();
    let fired = format!("{dl:?}");
    let prefix = format!("<DeferredList at {} current result: ", hex(&dl));
    assert!(fired.starts_with(&prefix), "{fired}");
    assert!(fired.ends_with('>'), "{fired}");
}

// Twisted: section 3.1 (waiting: `<{ClassName} at 0x… waiting on Deferred at 0x…>`); own experiment
#[test]
fn a_list_waiting_on_a_deferred_prints_the_wait() {
    let x = Deferred::<i32>::new();
    let dl = DeferredList::new([succeed(1)]);
    let inner = x.clone();
    dl.add_callback(move |_| inner);
    assert_eq!(
        format!("{dl:?}"),
        format!(
            "<DeferredList at {} waiting on Deferred at {}>",
            hex(&dl),
            hex(&x)
        )
    );
    x.callback(2).unwrap();
}

// ---------------------------------------------------------------------------
// Unhandled errors

/// Without consumeErrors an input keeps its failure, and reports it when it
/// goes away; the list holds its inputs, as Python's `_deferredList` does.
// Twisted: DeferredList.consumeErrors docstring ("spurious 'Unhandled error in Deferred'"); own experiment ("not consumed: []" while the list lives)
#[test]
fn an_unconsumed_input_failure_is_reported_when_the_input_goes_away() {
    let error = Failure::new(ValueError("unhandled"));
    let a = Deferred::<i32>::new();
    let dl = DeferredList::new([a.clone()]);
    a.errback(error.clone()).unwrap();
    assert!(dl.called());
    let ((), while_listed) = capture_unhandled_errors(|| drop(a));
    assert!(while_listed.is_empty());
    let ((), reports) = capture_unhandled_errors(|| drop(dl));
    assert_eq!(reports.len(), 1);
    assert!(Failure::ptr_eq(&reports[0], &error));
}

// Twisted: DeferredTests.testDeferredListConsumeErrors; own experiment ("consumed: 0")
#[test]
fn consumed_failures_are_not_reported() {
    let ((), reports) = capture_unhandled_errors(|| {
        let a = Deferred::<()>::new();
        let dl = DeferredList::with_flags([a.clone()], flags(false, false, true));
        a.errback(ValueError("consumed")).unwrap();
        drop(a);
        drop(dl);
    });
    assert!(reports.is_empty());
}

/// A `fireOnOneErrback` list nobody handled reports its FirstError, and the
/// unconsumed input reports its own failure.
// Twisted: own experiment ("fired dl: ValueError, FirstError", order set by the garbage collector)
#[test]
fn an_unhandled_first_error_and_the_unconsumed_input_failure_are_both_reported() {
    let error = Failure::new(ValueError("va"));
    let ((), mut reports) = capture_unhandled_errors(|| {
        let (a, b) = (Deferred::<i32>::new(), Deferred::<i32>::new());
        let dl = DeferredList::with_flags([a.clone(), b.clone()], flags(false, true, false));
        a.errback(error.clone()).unwrap();
        b.callback(2).unwrap();
        drop((a, b, dl));
    });
    assert_eq!(reports.len(), 2);
    reports.sort_by_key(|f| f.check::<FirstError>());
    assert!(Failure::ptr_eq(&reports[0], &error));
    let fe = reports[1].downcast_ref::<FirstError>().unwrap();
    assert_eq!(fe.index, 0);
    assert!(Failure::ptr_eq(&fe.failure, &error));
}

/// Cancelled inputs hold CancelledError failures of their own, reported
/// unless the list consumes them.
// Twisted: own experiment ("7 logged": two CancelledError reports; "7b consumed logged: []")
#[test]
fn cancelled_inputs_report_their_failures_unless_consumed() {
    let ((), reports) = capture_unhandled_errors(|| {
        let (a, b) = (Deferred::<i32>::new(), Deferred::<i32>::new());
        let dl = DeferredList::new([a.clone(), b.clone()]);
        dl.cancel().unwrap();
        drop((a, b, dl));
    });
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|f| f.check::<CancelledError>()));
    let ((), reports) = capture_unhandled_errors(|| {
        let (a, b) = (Deferred::<i32>::new(), Deferred::<i32>::new());
        let dl = DeferredList::with_flags([a.clone(), b.clone()], flags(false, false, true));
        dl.cancel().unwrap();
        drop((a, b, dl));
    });
    assert!(reports.is_empty());
}

/// A failed list and an input that never fires refer to each other (the
/// input's link holds the list, the list holds its inputs to cancel them),
/// as in Python; Python's cyclic collector frees them and reports the list's
/// FirstError and the input's failure, and so does collecting the tracker.
// Twisted: own experiment ("before gc: 0"; after gc.collect(): FirstError and ValueError reported)
#[test]
fn an_abandoned_failed_list_with_a_pending_input_is_reported_once_collected() {
    let error = Failure::new(ValueError("va"));
    let tracker = Tracker::start();
    let (a, b) = (Deferred::<i32>::new(), Deferred::<i32>::new());
    let dl = DeferredList::with_flags([a.clone(), b.clone()], flags(false, true, false));
    a.errback(error.clone()).unwrap();
    let ((), before) = capture_unhandled_errors(|| drop((a, b, dl)));
    assert!(before.is_empty(), "{before:?}");
    let (alive, mut reports) = capture_unhandled_errors(|| tracker.collect());
    assert_eq!(alive, 3);
    assert_eq!(reports.len(), 2, "{reports:?}");
    reports.sort_by_key(|f| f.check::<FirstError>());
    assert!(Failure::ptr_eq(&reports[0], &error));
    let fe = reports[1].downcast_ref::<FirstError>().unwrap();
    assert!(Failure::ptr_eq(&fe.failure, &error));
}

/// `fail()` inputs: a failure that was already there when the list was
/// built is recorded, and consumed, like any other.
// Twisted: DeferredTests.testDeferredListWithAlreadyFiredDeferreds (with consumeErrors; own experiment: "6 False None")
#[test]
fn a_failed_deferred_from_fail_is_recorded_in_place() {
    let error = Failure::new(KeyError("k"));
    let failed = fail::<i32>(error.clone());
    let dl = DeferredList::with_flags([succeed(1), failed.clone()], flags(false, false, true));
    let results = all_results(&dl);
    assert_eq!(described(&results), [Ok(1), Err("KeyError")]);
    assert!(Failure::ptr_eq(results[1].as_ref().unwrap_err(), &error));
    assert!(matches!(failed.cast::<()>().result(), State::Value(())));
}

/// Lists of results compare values by value and failures by identity, as
/// Python compares `(success, result)` tuples (a `Failure` has no `__eq__`).
// Twisted: own experiment ("[(False, f)] == [(False, f)]: True", "Failure(ValueError()) == Failure(ValueError()): False")
#[test]
fn results_compare_failures_by_identity() {
    let f = Failure::new(ValueError("v"));
    let same: DeferredListResult<i32> = DeferredListResult::All(vec![Ok(1), Err(f.clone())]);
    assert_eq!(same, DeferredListResult::All(vec![Ok(1), Err(f.clone())]));
    assert_ne!(
        same,
        DeferredListResult::All(vec![Ok(1), Err(Failure::new(ValueError("v")))])
    );
    assert_ne!(same, DeferredListResult::All(vec![Ok(2), Err(f.clone())]));
    assert_ne!(same, DeferredListResult::All(vec![Ok(1)]));
    assert_ne!(
        DeferredListResult::First(1, 0),
        DeferredListResult::First(1, 1)
    );
    assert_ne!(
        DeferredListResult::First(1, 0),
        DeferredListResult::All(vec![Ok(1)])
    );
}

// ---------------------------------------------------------------------------
// Scale

/// A million inputs, fired after the list was built, in reverse order;
/// results come back in input order. Runs in a few seconds in a debug build.
// Twisted: catalogue B77 at scale
#[test]
fn a_list_of_a_million_deferreds_fires_with_every_result_in_order() {
    const N: u32 = 1_000_000;
    let inputs: Vec<Deferred<u32>> = (0..N).map(|_| Deferred::new()).collect();
    let dl = DeferredList::new(inputs.iter().cloned());
    for (i, d) in inputs.iter().enumerate().rev() {
        assert!(!dl.called());
        d.callback(i as u32 * 2).unwrap();
    }
    assert_eq!(dl.finished_count(), N as usize);
    let results = all_results(&dl);
    assert_eq!(results.len(), N as usize);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.as_ref().ok(), Some(&(i as u32 * 2)));
    }
    assert_eq!(inputs[N as usize - 1].result().value(), Some((N - 1) * 2));
}

/// A million inputs that fired before the list was built: the list fires
/// inside its constructor.
// Twisted: catalogue B76 at scale
#[test]
fn a_list_of_a_million_fired_deferreds_fires_in_its_constructor() {
    const N: u32 = 1_000_000;
    let dl = DeferredList::with_flags((0..N).map(succeed), flags(false, false, false));
    assert!(dl.called());
    assert_eq!(dl.finished_count(), N as usize);
    let results = all_results(&dl);
    assert_eq!(results.len(), N as usize);
    assert!(
        results
            .iter()
            .enumerate()
            .all(|(i, r)| r.as_ref().ok() == Some(&(i as u32)))
    );
}
