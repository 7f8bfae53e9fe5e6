//! `cancel()`: with and without a canceller, the swallowed late fire,
//! cancellers that fire, fail or panic, cancelling fired, paused and waiting
//! Deferreds, and forwarding to the Deferred waited on.
//!
//! Twisted behaviours covered: B48, B49, B50, B51, B52, B53, B54, B55, B56,
//! B57, B58 (the type, not the message; see the report), and the
//! cancel-forwarding part of B5 (catalogue section 2.6), with pitfalls P-07,
//! P-08, P-09, P-22 and experiments E01, E07, E22 (D, E).

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use twisted_deferred::{
    AlreadyCalledError, AnyValue, CancelledError, Deferred, Failure, PanicError, RecursionError,
    State, capture_unhandled_errors, succeed,
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

/// What `DeferredCancellerTests` records: the last callback value and the
/// last errback failure of one `addCallbacks` link.
#[derive(Default)]
struct Results {
    callback: RefCell<Option<String>>,
    errback: RefCell<Option<Failure>>,
}

impl Results {
    fn attach(self: &Rc<Self>, d: &Deferred<String>) {
        let (c, e) = (self.clone(), self.clone());
        d.add_callbacks(
            move |s: String| {
                *c.callback.borrow_mut() = Some(s.clone());
                Ok(s)
            },
            move |f: Failure| {
                *e.errback.borrow_mut() = Some(f);
                Ok(String::new())
            },
        );
    }

    fn errback(&self) -> Failure {
        self.errback.borrow().clone().expect("the errback ran")
    }
}

fn counting_canceller(count: &Rc<Cell<u32>>) -> impl Fn(&Deferred<String>) + 'static {
    let count = count.clone();
    move |_d: &Deferred<String>| count.set(count.get() + 1)
}

/// No canceller: `cancel()` errbacks with `CancelledError`, running the
/// errbacks inside the `cancel()` call.
// Twisted: DeferredCancellerTests.test_noCanceller
#[test]
fn cancelling_without_a_canceller_fails_with_cancelled_error() {
    let results = Rc::new(Results::default());
    let d: Deferred<String> = Deferred::new();
    results.attach(&d);
    d.cancel().unwrap();
    assert!(results.errback().check::<CancelledError>());
    assert_eq!(
        results.errback().downcast_ref::<CancelledError>(),
        Some(&CancelledError)
    );
    assert!(results.callback.borrow().is_none());
    assert!(d.called());
}

// Twisted: DeferredCancellerTests.test_noCanceller (errbacks run inside cancel())
#[test]
fn errbacks_of_a_cancelled_deferred_run_inside_cancel() {
    let log: Log<&str> = new_log();
    let d: Deferred<()> = Deferred::new();
    let l = log.clone();
    d.add_errback(move |_f: Failure| {
        l.borrow_mut().push("errback");
        Ok(())
    });
    log.borrow_mut().push("cancel starts");
    d.cancel().unwrap();
    log.borrow_mut().push("cancel returned");
    assert_eq!(
        *log.borrow(),
        ["cancel starts", "errback", "cancel returned"]
    );
}

/// Without a canceller, exactly one late `callback()` is swallowed; the next
/// fire of either kind raises.
// Twisted: DeferredCancellerTests.test_raisesAfterCancelAndCallback and pitfall P-07
#[test]
fn one_late_callback_is_swallowed_after_a_cancel_without_canceller() {
    let results = Rc::new(Results::default());
    let d: Deferred<String> = Deferred::new();
    results.attach(&d);
    d.cancel().unwrap();
    assert!(d.callback("late".into()).is_ok(), "swallowed");
    let again = d.callback("late2".into()).unwrap_err();
    assert!(again.check::<AlreadyCalledError>());
    assert!(
        d.errback(GenericError("x"))
            .unwrap_err()
            .check::<AlreadyCalledError>()
    );
    assert!(results.callback.borrow().is_none());
    assert!(results.errback().check::<CancelledError>());
}

// Twisted: DeferredCancellerTests.test_raisesAfterCancelAndErrback
#[test]
fn one_late_errback_is_swallowed_after_a_cancel_without_canceller() {
    let results = Rc::new(Results::default());
    let d: Deferred<String> = Deferred::new();
    results.attach(&d);
    d.cancel().unwrap();
    assert!(d.errback(GenericError("late")).is_ok(), "swallowed");
    assert!(
        d.callback("x".into())
            .unwrap_err()
            .check::<AlreadyCalledError>()
    );
    assert!(
        d.errback(GenericError("x"))
            .unwrap_err()
            .check::<AlreadyCalledError>()
    );
    assert!(results.errback().check::<CancelledError>());
}

/// The swallowed fire leaves the CancelledError result in place.
// Twisted: experiment E07 (1: "result still: FAIL CancelledError")
#[test]
fn the_swallowed_fire_does_not_change_the_result() {
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<&str> = Deferred::new();
        d.cancel().unwrap();
        d.callback("late").unwrap();
        assert!(d.result().failure().unwrap().check::<CancelledError>());
        d.add_errback(|_f| Ok(""));
    });
    assert!(reports.is_empty());
}

// Twisted: DeferredCancellerTests.test_noCancellerMultipleCancel
#[test]
fn cancelling_twice_without_a_canceller_changes_nothing() {
    let results = Rc::new(Results::default());
    let d: Deferred<String> = Deferred::new();
    results.attach(&d);
    d.cancel().unwrap();
    let current = results.errback();
    assert!(current.check::<CancelledError>());
    d.cancel().unwrap();
    assert!(Failure::ptr_eq(&current, &results.errback()));
}

// Twisted: DeferredCancellerTests.test_noCancellerMultipleCancelsAfterCancelAndCallback
#[test]
fn cancels_after_the_swallowed_callback_change_nothing() {
    let results = Rc::new(Results::default());
    let d: Deferred<String> = Deferred::new();
    results.attach(&d);
    d.cancel().unwrap();
    let current = results.errback();
    d.callback("ignored".into()).unwrap();
    d.cancel().unwrap();
    assert!(Failure::ptr_eq(&current, &results.errback()));
    assert!(results.callback.borrow().is_none());
}

// Twisted: DeferredCancellerTests.test_noCancellerMultipleCancelsAfterCancelAndErrback
#[test]
fn cancels_after_the_swallowed_errback_change_nothing() {
    let results = Rc::new(Results::default());
    let d: Deferred<String> = Deferred::new();
    results.attach(&d);
    d.cancel().unwrap();
    let current = results.errback();
    d.errback(GenericError("ignored")).unwrap();
    assert!(results.errback().check::<CancelledError>());
    d.cancel().unwrap();
    assert!(Failure::ptr_eq(&current, &results.errback()));
}

/// A second cancel does not arm the suppression again: after two cancels,
/// one late fire is swallowed and the next raises.
// Twisted: experiment E07 (1b)
#[test]
fn a_second_cancel_does_not_swallow_a_second_late_fire() {
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<()> = Deferred::new();
        d.cancel().unwrap();
        d.cancel().unwrap();
        assert!(d.errback(GenericError("late")).is_ok());
        assert!(
            d.errback(GenericError("next"))
                .unwrap_err()
                .check::<AlreadyCalledError>()
        );
        d.add_errback(|_f| Ok(()));
    });
    assert!(reports.is_empty());
}

/// A canceller runs once, gets the Deferred itself, and a CancelledError
/// follows; later fires are not swallowed.
// Twisted: DeferredCancellerTests.test_simpleCanceller
#[test]
fn a_canceller_runs_then_cancelled_error_follows_and_late_fires_raise() {
    let count = Rc::new(Cell::new(0));
    let results = Rc::new(Results::default());
    let d = Deferred::with_canceller(counting_canceller(&count));
    results.attach(&d);
    d.cancel().unwrap();
    assert_eq!(count.get(), 1);
    assert!(results.errback().check::<CancelledError>());
    assert!(
        d.callback("x".into())
            .unwrap_err()
            .check::<AlreadyCalledError>()
    );
    assert!(
        d.errback(GenericError("x"))
            .unwrap_err()
            .check::<AlreadyCalledError>()
    );
}

// Twisted: DeferredCancellerTests.test_cancellerArg
#[test]
fn the_canceller_receives_the_deferred_being_cancelled() {
    let seen: Log<usize> = new_log();
    let s = seen.clone();
    let d = Deferred::with_canceller(move |d: &Deferred<String>| {
        s.borrow_mut().push(d.id());
    });
    let results = Rc::new(Results::default());
    results.attach(&d);
    d.cancel().unwrap();
    assert_eq!(*seen.borrow(), [d.id()]);
}

/// The canceller runs before the CancelledError is delivered.
// Twisted: DeferredCancellerTests.test_simpleCanceller (order of events)
#[test]
fn the_canceller_runs_before_the_errbacks() {
    let log: Log<&str> = new_log();
    let l = log.clone();
    let d = Deferred::with_canceller(move |_d: &Deferred<()>| {
        l.borrow_mut().push("canceller");
    });
    let l = log.clone();
    d.add_errback(move |f: Failure| {
        l.borrow_mut().push(if f.check::<CancelledError>() {
            "errback CancelledError"
        } else {
            "errback other"
        });
        Ok(())
    });
    d.cancel().unwrap();
    assert_eq!(*log.borrow(), ["canceller", "errback CancelledError"]);
}

// Twisted: DeferredCancellerTests.test_cancellerMultipleCancel
#[test]
fn a_canceller_runs_only_once_over_several_cancels() {
    let count = Rc::new(Cell::new(0));
    let results = Rc::new(Results::default());
    let d = Deferred::with_canceller(counting_canceller(&count));
    results.attach(&d);
    d.cancel().unwrap();
    let current = results.errback();
    assert!(current.check::<CancelledError>());
    d.cancel().unwrap();
    assert!(Failure::ptr_eq(&current, &results.errback()));
    assert_eq!(count.get(), 1);
}

// Twisted: DeferredCancellerTests.test_cancellerThatErrbacks
#[test]
fn a_canceller_that_errbacks_decides_the_failure() {
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let d = Deferred::with_canceller(move |d: &Deferred<String>| {
        c.set(c.get() + 1);
        d.errback(GenericError("from canceller")).unwrap();
    });
    let results = Rc::new(Results::default());
    results.attach(&d);
    d.cancel().unwrap();
    assert_eq!(count.get(), 1);
    assert!(results.errback().check::<GenericError>());
}

// Twisted: DeferredCancellerTests.test_cancellerThatCallbacks
#[test]
fn a_canceller_that_callbacks_decides_the_value() {
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let d = Deferred::with_canceller(move |d: &Deferred<String>| {
        c.set(c.get() + 1);
        d.callback("hello!".into()).unwrap();
    });
    let results = Rc::new(Results::default());
    results.attach(&d);
    d.cancel().unwrap();
    assert_eq!(count.get(), 1);
    assert_eq!(results.callback.borrow().as_deref(), Some("hello!"));
    assert!(results.errback.borrow().is_none());
}

/// A canceller that raises: the error comes out of `cancel()` and the
/// Deferred stays unfired; the next cancel calls the canceller again, and
/// the producer can still fire it normally.
// Twisted: pitfall P-08 and experiment E07 (5)
#[test]
fn a_failing_canceller_makes_cancel_fail_and_leaves_the_deferred_unfired() {
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let d = Deferred::with_canceller(move |_d: &Deferred<i32>| -> Result<(), Failure> {
        c.set(c.get() + 1);
        Err(GenericError("division by zero").into())
    });
    let err = d.cancel().unwrap_err();
    assert!(err.check::<GenericError>());
    assert!(!d.called());
    assert!(d.cancel().is_err());
    assert_eq!(count.get(), 2, "still armed, called again");
    d.callback(1).unwrap();
    assert_eq!(d.result().value(), Some(1));
}

// Twisted: pitfall P-08 (a raising canceller; a panic is Rust's raise)
#[test]
fn a_panicking_canceller_makes_cancel_fail_with_a_panic_error() {
    let d = Deferred::with_canceller(|_d: &Deferred<i32>| -> () { panic!("canceller broke") });
    let err = d.cancel().unwrap_err();
    assert!(err.check::<PanicError>());
    assert_eq!(err.message(), "canceller broke");
    assert!(!d.called());
}

// Twisted: DeferredCancellerTests.test_cancelAfterCallback
#[test]
fn cancelling_after_callback_does_nothing() {
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let d = Deferred::with_canceller(move |d: &Deferred<String>| {
        c.set(c.get() + 1);
        let _ = d.errback(GenericError("canceller"));
    });
    let results = Rc::new(Results::default());
    results.attach(&d);
    d.callback("biff!".into()).unwrap();
    d.cancel().unwrap();
    assert_eq!(count.get(), 0);
    assert!(results.errback.borrow().is_none());
    assert_eq!(results.callback.borrow().as_deref(), Some("biff!"));
    assert_eq!(d.result().value().as_deref(), Some("biff!"));
}

// Twisted: DeferredCancellerTests.test_cancelAfterErrback
#[test]
fn cancelling_after_errback_does_nothing() {
    let count = Rc::new(Cell::new(0));
    let c = count.clone();
    let d = Deferred::with_canceller(move |d: &Deferred<String>| {
        c.set(c.get() + 1);
        let _ = d.errback(GenericError("canceller"));
    });
    let results = Rc::new(Results::default());
    results.attach(&d);
    d.errback(GenericError("generic")).unwrap();
    d.cancel().unwrap();
    assert_eq!(count.get(), 0);
    assert_eq!(
        results.errback().downcast_ref::<GenericError>(),
        Some(&GenericError("generic"))
    );
    assert!(results.callback.borrow().is_none());
}

/// A fired but paused Deferred holding a plain value: cancel is a no-op.
// Twisted: experiment E07 (8)
#[test]
fn cancelling_a_fired_paused_deferred_does_nothing() {
    let d = succeed(1);
    d.pause();
    d.cancel().unwrap();
    assert_eq!(d.result().value(), Some(1));
    assert_eq!(d.paused(), 1);
}

/// A Deferred waiting on another forwards `cancel()` to it; its own
/// canceller (dropped at fire time) is not called.
// Twisted: DeferredCancellerTests.test_cancelNestedDeferred
#[test]
fn cancelling_a_waiting_deferred_cancels_the_one_it_waits_on() {
    let count = Rc::new(Cell::new(0));
    let outer_calls = Rc::new(Cell::new(0));
    let b = Deferred::with_canceller(counting_canceller(&count));
    let oc = outer_calls.clone();
    let a = Deferred::with_canceller(move |_d: &Deferred<String>| oc.set(oc.get() + 1));
    a.callback(String::new()).unwrap();
    let b1 = b.clone();
    a.add_callback(move |_s: String| b1);
    a.cancel().unwrap();
    let results = Rc::new(Results::default());
    results.attach(&a);
    assert_eq!(count.get(), 1, "b's canceller ran");
    assert_eq!(outer_calls.get(), 0, "a's canceller did not");
    assert!(results.errback().check::<CancelledError>());
}

/// The inner one's CancelledError travels to the outer; the inner keeps
/// None.
// Twisted: pitfall P-09 and experiment E07 (7)
#[test]
fn a_forwarded_cancel_hands_the_inner_cancellation_to_the_outer() {
    let calls: Log<&str> = new_log();
    let c = calls.clone();
    let inner = Deferred::with_canceller(move |_d: &Deferred<()>| {
        c.borrow_mut().push("inner canceller");
    });
    let c = calls.clone();
    let outer = Deferred::with_canceller(move |_d: &Deferred<()>| {
        c.borrow_mut().push("outer canceller");
    });
    let i = inner.clone();
    outer.add_callback(move |()| i);
    outer.callback(()).unwrap();
    outer.cancel().unwrap();
    assert_eq!(*calls.borrow(), ["inner canceller"]);
    assert!(matches!(inner.result(), State::Value(())));
    assert!(outer.result().failure().unwrap().check::<CancelledError>());
    assert!(!outer.is_waiting());
    outer.add_errback(|_f| Ok(()));
}

/// Forwarding goes through several levels: a waits on b waits on c.
// Twisted: experiment E07 (7b)
#[test]
fn a_cancel_is_forwarded_through_several_levels() {
    let c: Deferred<()> = Deferred::new();
    let b: Deferred<()> = Deferred::new();
    let a: Deferred<()> = Deferred::new();
    let c1 = c.clone();
    b.add_callback(move |()| c1);
    b.callback(()).unwrap();
    let b1 = b.clone();
    a.add_callback(move |()| b1);
    a.callback(()).unwrap();
    a.cancel().unwrap();
    assert!(matches!(c.result(), State::Value(())));
    assert!(matches!(b.result(), State::Value(())));
    assert!(a.result().failure().unwrap().check::<CancelledError>());
    a.add_errback(|_f| Ok(()));
}

/// The inner canceller supplies a value: the outer continues with it.
// Twisted: experiment E07 (7c)
#[test]
fn a_forwarded_cancel_whose_canceller_succeeds_continues_the_outer() {
    let inner = Deferred::with_canceller(|d: &Deferred<&str>| {
        d.callback("inner's replacement").unwrap();
    });
    let outer: Deferred<()> = Deferred::new();
    let i = inner.clone();
    let outer = outer.add_callback(move |()| i);
    outer.cast::<()>().callback(()).unwrap();
    outer.cancel().unwrap();
    assert_eq!(outer.result().value(), Some("inner's replacement"));
}

/// The inner canceller raises: the error comes out of the outer's
/// `cancel()`, and both Deferreds stay as they were.
// Twisted: pitfall P-08 with forwarding (checked in Python)
#[test]
fn a_forwarded_cancel_whose_canceller_fails_makes_the_outer_cancel_fail() {
    let inner = Deferred::with_canceller(|_d: &Deferred<()>| -> Result<(), Failure> {
        Err(GenericError("k").into())
    });
    let outer: Deferred<()> = Deferred::new();
    let i = inner.clone();
    outer.add_callback(move |()| i);
    outer.callback(()).unwrap();
    let err = outer.cancel().unwrap_err();
    assert!(err.check::<GenericError>());
    assert!(!inner.called());
    assert!(outer.is_waiting());
    inner.callback(()).unwrap();
    assert!(!outer.is_waiting());
}

/// Cancelling an unfired paused Deferred fires it (called, CancelledError
/// recorded) but its errbacks wait for `unpause()`.
// Twisted: experiment E22 (D)
#[test]
fn cancelling_an_unfired_paused_deferred_delivers_after_unpause() {
    let seen: Log<String> = new_log();
    let d: Deferred<()> = Deferred::new();
    d.pause();
    let s = seen.clone();
    d.add_errback(move |f: Failure| {
        s.borrow_mut().push(f.short_type_name().to_string());
        Ok(())
    });
    d.cancel().unwrap();
    assert!(d.called());
    assert!(seen.borrow().is_empty());
    d.unpause();
    assert_eq!(*seen.borrow(), ["CancelledError"]);
}

/// Same with a canceller that calls back: the value waits for `unpause()`.
// Twisted: experiment E22 (D), canceller variant (checked in Python)
#[test]
fn a_paused_deferred_whose_canceller_calls_back_delivers_after_unpause() {
    let seen: Log<&str> = new_log();
    let d = Deferred::with_canceller(|d: &Deferred<&str>| d.callback("c").unwrap());
    d.pause();
    let s = seen.clone();
    d.add_callback(move |v: &str| {
        s.borrow_mut().push(v);
        Ok(v)
    });
    d.cancel().unwrap();
    assert!(d.called());
    assert!(seen.borrow().is_empty());
    d.unpause();
    assert_eq!(*seen.borrow(), ["c"]);
}

/// A waiting outer that is also user-paused: the cancel is still forwarded,
/// the inner is cancelled, and the outer delivers after `unpause()`.
// Twisted: experiment E07 (7) with a user pause (checked in Python)
#[test]
fn cancelling_a_paused_waiting_deferred_still_cancels_the_inner() {
    let seen: Log<String> = new_log();
    let inner: Deferred<()> = Deferred::new();
    let outer: Deferred<()> = Deferred::new();
    let i = inner.clone();
    outer.add_callback(move |()| i);
    outer.callback(()).unwrap();
    outer.pause();
    let s = seen.clone();
    outer.add_errback(move |f: Failure| {
        s.borrow_mut().push(f.short_type_name().to_string());
        Ok(())
    });
    outer.cancel().unwrap();
    assert!(inner.called());
    assert!(seen.borrow().is_empty());
    assert_eq!(outer.paused(), 1);
    assert!(outer.is_waiting());
    outer.unpause();
    assert_eq!(*seen.borrow(), ["CancelledError"]);
}

/// Cancelling the target of `a.chain_deferred(b)` does not cancel `a`; when
/// `a` later fires, its forward into `b` is swallowed (b had no canceller).
// Twisted: pitfall P-22 and experiment E07 (9)
#[test]
fn cancelling_the_target_of_chain_deferred_leaves_the_source_alone() {
    let ((), reports) = capture_unhandled_errors(|| {
        let a_calls = Rc::new(Cell::new(0));
        let ac = a_calls.clone();
        let src = Deferred::with_canceller(move |_d: &Deferred<&str>| ac.set(ac.get() + 1));
        let tgt: Deferred<&str> = Deferred::new();
        src.chain_deferred(&tgt);
        tgt.cancel().unwrap();
        assert!(!src.called());
        assert_eq!(a_calls.get(), 0);
        assert!(tgt.result().failure().unwrap().check::<CancelledError>());
        src.callback("v").unwrap();
        assert!(matches!(src.cast::<()>().result(), State::Value(())));
        assert!(tgt.result().failure().unwrap().check::<CancelledError>());
        tgt.add_errback(|_f| Ok(""));
    });
    assert!(reports.is_empty());
}

/// If the target had a canceller, the forward raises `AlreadyCalledError`,
/// which becomes the source's failure.
// Twisted: pitfall P-22 and experiment E22 (E)
#[test]
fn forwarding_into_a_cancelled_target_with_a_canceller_fails_the_source() {
    let ((), reports) = capture_unhandled_errors(|| {
        let src: Deferred<&str> = Deferred::new();
        let tgt = Deferred::with_canceller(|_d: &Deferred<&str>| {});
        src.chain_deferred(&tgt);
        tgt.cancel().unwrap();
        src.callback("v").unwrap();
        let f = src.cast::<()>().result().failure().unwrap();
        assert!(f.check::<AlreadyCalledError>());
        src.cast::<()>().add_errback(|_f| Ok(()));
        tgt.add_errback(|_f| Ok(""));
    });
    assert!(reports.is_empty());
}

/// In the dynamic mode a Deferred whose result is a Deferred (given to
/// `callback()`, not chained) forwards `cancel()` to it, as Python checks the
/// result's type.
// Twisted: experiment E01 ("x cancelled via y.cancel(): True CancelledError")
#[test]
fn cancel_is_forwarded_to_a_deferred_held_as_the_result() {
    let ((), reports) = capture_unhandled_errors(|| {
        let x: Deferred = Deferred::new();
        let y: Deferred = Deferred::new();
        y.callback(AnyValue::new(x.clone())).unwrap();
        y.cancel().unwrap();
        assert!(x.called(), "x was cancelled through y");
        assert!(x.result().failure().unwrap().check::<CancelledError>());
        assert!(matches!(y.result(), State::Waiting(ref held) if held.ptr_eq(&x)));
        x.add_errback(|_f| Ok(AnyValue::none()));
    });
    assert!(reports.is_empty());
}

/// A documented difference: a *typed* `Deferred<Deferred<i32>>` holds the
/// Deferred given to `callback()` as an ordinary value (Rust cannot tell a
/// generic `T` is a Deferred), so `cancel()` is not forwarded to it. Twisted
/// forwards (E01); the dynamic mode does too (test above).
// Twisted: experiment E01 (the difference is documented on `store_slot`)
#[test]
fn a_typed_deferred_held_as_a_value_is_not_cancelled_through_its_holder() {
    let x: Deferred<i32> = Deferred::new();
    let y: Deferred<Deferred<i32>> = Deferred::new();
    y.callback(x.clone()).unwrap();
    y.cancel().unwrap();
    assert!(!x.called());
    assert!(matches!(y.result(), State::Value(ref held) if held.ptr_eq(&x)));
}

/// A Deferred waiting on itself: Python's `cancel()` recurses into itself
/// and raises `RecursionError`. It must not hang.
// Twisted: pitfall P-21 with cancel (checked in Python: RecursionError)
#[test]
fn cancelling_a_deferred_that_waits_on_itself_fails_instead_of_hanging() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let d: Deferred<&str> = Deferred::new();
        let me = d.clone();
        d.add_callback(move |_r: &str| me);
        d.callback("x").unwrap();
        let outcome = d.cancel();
        let _ = tx.send(outcome.map_err(|f| f.check::<RecursionError>()));
    });
    let outcome = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("cancel() returned");
    assert_eq!(outcome, Err(true), "cancel() raises RecursionError");
}
