//! `defer_later`: Twisted's `task.deferLater`, on the deterministic
//! `Clock`.
//!
//! Twisted behaviours covered: B129 (catalogue section 2.15) and the
//! `deferLater` part of experiment E14 (13), plus what follows from
//! Twisted's construction (`Deferred(canceller)`, `addCallback(cb)`,
//! `clock.callLater(delay, d.callback, None)`), each checked by experiment
//! against Twisted 26.10.0.

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::time::ReactorTime;
use twisted_deferred::{AlreadyCalledError, CancelledError, Deferred, Failure, PanicError, State};
use twisted_reactor::{Clock, defer_later};

#[derive(Debug, Clone, PartialEq)]
struct TestException;

impl fmt::Display for TestException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TestException")
    }
}

impl Error for TestException {}

// Twisted: task: DeferLaterTests.test_callback
#[test]
fn fires_with_what_the_function_returns_after_the_delay() {
    let clock = Clock::new();
    let results = Rc::new(RefCell::new(Vec::new()));
    let r = results.clone();
    let d = defer_later(&clock, 3.0, move || {
        r.borrow_mut().push(("foo", "bar"));
        Ok("flag")
    });
    clock.advance(2.0).unwrap();
    assert!(results.borrow().is_empty());
    assert!(!d.called());
    clock.advance(1.0).unwrap();
    assert_eq!(*results.borrow(), [("foo", "bar")]);
    assert_eq!(d.result().value(), Some("flag"));
}

// Twisted: experiment E14 (13: "deferLater: 3")
#[test]
fn the_function_runs_with_its_captured_arguments() {
    let clock = Clock::new();
    let (a, b) = (1, 2);
    // deferLater(c, 3, lambda a, b=0: a + b, 1, b=2)
    let d = defer_later(&clock, 3.0, move || Ok(a + b));
    clock.advance(3.0).unwrap();
    assert_eq!(d.result().value(), Some(3));
}

// Twisted: task: DeferLaterTests.test_errback
#[test]
fn fails_when_the_function_fails() {
    let clock = Clock::new();
    let d = defer_later(&clock, 1.0, || Err::<(), _>(Failure::new(TestException)));
    clock.advance(1.0).unwrap();
    let f = d.result().failure().unwrap();
    assert!(f.check::<TestException>());
    d.add_errback(|_| Ok(()));
}

// Twisted: task: DeferLaterTests.test_errback (an exception raised by the
// callable; a Rust panic is that exception)
#[test]
fn a_panicking_function_gives_a_panic_error_failure_not_a_failed_advance() {
    let clock = Clock::new();
    let d = defer_later(&clock, 1.0, || -> Result<i32, Failure> {
        panic!("in deferLater")
    });
    clock.advance(1.0).unwrap();
    let f = d.result().failure().unwrap();
    assert!(f.check::<PanicError>());
    assert_eq!(f.message(), "in deferLater");
    d.add_errback(|_| Ok(0));
}

// Twisted: task: DeferLaterTests.test_cancel; experiment E14 (13:
// "deferLater cancelled: FAIL CancelledError() | delayed calls left: 0 |
// function called: []")
#[test]
fn cancelling_before_the_delay_removes_the_call_and_never_calls_the_function() {
    let clock = Clock::new();
    let called = Rc::new(Cell::new(false));
    let c = called.clone();
    let d = defer_later(&clock, 1.0, move || {
        c.set(true);
        Ok(())
    });
    assert_eq!(clock.delayed_call_count(), 1);
    d.cancel().unwrap();
    assert!(clock.get_delayed_calls().is_empty());
    assert!(d.result().failure().unwrap().check::<CancelledError>());
    clock.advance(10.0).unwrap();
    assert!(!called.get());
    d.add_errback(|_| Ok(()));
}

// Twisted: task: DeferLaterTests.test_noCallback; experiment E14 (13:
// "deferLater no callable: None")
#[test]
fn without_a_function_it_fires_with_none() {
    let clock = Clock::new();
    let d = defer_later(&clock, 2.0, || Ok(()));
    assert!(d.result().is_pending());
    clock.advance(2.0).unwrap();
    assert!(matches!(d.result(), State::Value(())));
}

// Twisted: task.deferLater (the delayed call is `d.callback`: fired by other
// means first, it raises AlreadyCalledError out of advance; Twisted 26.10.0
// printed "AlreadyCalledError 5")
#[test]
fn firing_it_by_hand_first_makes_the_delayed_callback_fail_out_of_advance() {
    let clock = Clock::new();
    let d = defer_later(&clock, 1.0, || Ok(5));
    d.cast::<()>().callback(()).unwrap(); // d.callback(None): cb runs now
    assert_eq!(d.result().value(), Some(5));
    let err = clock.advance(1.0).unwrap_err();
    assert!(err.check::<AlreadyCalledError>());
    assert_eq!(d.result().value(), Some(5));
}

// Twisted: Deferred.cancel on a fired Deferred does nothing (Twisted
// 26.10.0 printed 5)
#[test]
fn cancelling_after_it_fired_changes_nothing() {
    let clock = Clock::new();
    let d = defer_later(&clock, 1.0, || Ok(5));
    clock.advance(1.0).unwrap();
    d.cancel().unwrap();
    assert_eq!(d.result().value(), Some(5));
}

// Twisted: task.deferLater + B5 (a callable returning a Deferred: the
// result waits for it; Twisted 26.10.0 printed "True True" then 7)
#[test]
fn a_function_returning_a_deferred_makes_it_wait_for_that_deferred() {
    let clock = Clock::new();
    let inner: Deferred<i32> = Deferred::new();
    let i = inner.clone();
    let d = defer_later(&clock, 1.0, move || i);
    clock.advance(1.0).unwrap();
    assert!(d.called());
    assert!(d.is_waiting());
    assert!(matches!(d.result(), State::Waiting(w) if w.ptr_eq(&inner)));
    inner.callback(7).unwrap();
    assert_eq!(d.result().value(), Some(7));
}

// Twisted: Deferred.cancel forwarding to the Deferred waited on (B5), after
// the delay
#[test]
fn cancelling_while_waiting_on_the_functions_deferred_cancels_that_one() {
    let clock = Clock::new();
    let cancelled = Rc::new(Cell::new(false));
    let c = cancelled.clone();
    let inner: Deferred<i32> = Deferred::with_canceller(move |_d: &Deferred<i32>| c.set(true));
    let i = inner.clone();
    let d = defer_later(&clock, 1.0, move || i);
    clock.advance(1.0).unwrap();
    d.cancel().unwrap();
    assert!(cancelled.get());
    assert!(d.result().failure().unwrap().check::<CancelledError>());
    d.add_errback(|_| Ok(0));
}

// Twisted: task.deferLater(clock, ...) takes any IReactorTime
#[test]
fn it_runs_on_any_reactor_time() {
    let clock = Clock::new();
    let time: Rc<dyn ReactorTime> = Rc::new(clock.clone());
    let d = defer_later(&*time, 0.5, || Ok("through dyn ReactorTime"));
    let e = defer_later(&time, 0.5, || Ok("through Rc"));
    clock.advance(0.5).unwrap();
    assert_eq!(d.result().value(), Some("through dyn ReactorTime"));
    assert_eq!(e.result().value(), Some("through Rc"));
}

// Twisted: task.Clock.callLater with delay 0 or below (a zero or negative
// deferLater fires at the next advance, not at once)
#[test]
fn a_zero_or_negative_delay_fires_at_the_next_advance() {
    let clock = Clock::new();
    let d = defer_later(&clock, 0.0, || Ok(0));
    let e = defer_later(&clock, -1.0, || Ok(-1));
    assert!(!d.called() && !e.called());
    clock.advance(0.0).unwrap();
    assert_eq!(d.result().value(), Some(0));
    assert_eq!(e.result().value(), Some(-1));
}

// Twisted: B128 + B129 (deferLaters due at the same time fire in the order
// they were made)
#[test]
fn defer_laters_due_together_fire_in_the_order_they_were_made() {
    let clock = Clock::new();
    let log = Rc::new(RefCell::new(Vec::new()));
    for i in 0..5 {
        let l = log.clone();
        defer_later(&clock, 1.0, move || Ok(i)).add_callback(move |v| {
            l.borrow_mut().push(v);
            Ok(())
        });
    }
    clock.advance(1.0).unwrap();
    assert_eq!(*log.borrow(), [0, 1, 2, 3, 4]);
}
