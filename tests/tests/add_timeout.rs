//! `Deferred::add_timeout` and `Deferred::add_timeout_with`: Twisted's
//! `Deferred.addTimeout(timeout, clock, onTimeoutCancel=None)`, on the
//! deterministic `twisted_reactor::Clock`.
//!
//! Twisted behaviours covered: B120 to B127 (catalogue section 2.14), P-13,
//! experiment E14 (1 to 11), E22-F and every test of Twisted's
//! `DeferredAddTimeoutTests`. Cases the catalogue does not spell out are
//! checked by experiment against Twisted 26.10.0 (the Python output is
//! quoted next to each such test).

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::time::{DelayedCall, ReactorTime, TimedCall};
use twisted_deferred::{CancelledError, Deferred, Failure, State, TimeoutError, fail, succeed};
use twisted_reactor::{Clock, defer_later};

/// Python's `ValueError("...")`, an error a test can recognise.
#[derive(Debug, Clone, PartialEq)]
struct ValueError(&'static str);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueError({})", self.0)
    }
}

impl Error for ValueError {}

/// Python's `KeyError("...")`.
#[derive(Debug, Clone, PartialEq)]
struct KeyError(&'static str);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyError({})", self.0)
    }
}

impl Error for KeyError {}

/// The timeout `d` failed with, if it holds a `TimeoutError`
/// (Twisted's `TimeoutError(timeout, "Deferred")` carries it as `args[0]`).
fn timed_out_after<T: Clone + 'static>(d: &Deferred<T>) -> Option<Option<f64>> {
    match d.result() {
        State::Failure(f) => f.downcast_ref::<TimeoutError>().map(|e| e.timeout),
        _ => None,
    }
}

/// True when `d` holds a `CancelledError` failure.
fn holds_cancelled<T: Clone + 'static>(d: &Deferred<T>) -> bool {
    matches!(d.result(), State::Failure(f) if f.check::<CancelledError>())
}

/// Handles whatever failure `d` holds, so that dropping it reports nothing.
fn handle<T: 'static>(d: &Deferred<T>) {
    d.cast::<()>().add_errback(|_| Ok(()));
}

/// Twisted's `_overrideFunc`: an `onTimeoutCancel` returning `"OVERRIDDEN"`.
fn override_func(
    _result: Result<&'static str, Failure>,
    _timeout: f64,
) -> Result<&'static str, Failure> {
    Ok("OVERRIDDEN")
}

/// An `onTimeoutCancel` that counts its calls and otherwise behaves as
/// `_overrideFunc`.
fn counting_override(
    calls: &Rc<Cell<u32>>,
) -> impl FnOnce(Result<&'static str, Failure>, f64) -> Result<&'static str, Failure> + 'static {
    let calls = calls.clone();
    move |_result, _timeout| {
        calls.set(calls.get() + 1);
        Ok("OVERRIDDEN")
    }
}

/// A Deferred with a canceller that records each time it runs and does
/// nothing else (so a `CancelledError` follows).
fn recorded_cancel<T: 'static>(cancels: &Rc<Cell<u32>>) -> Deferred<T> {
    let cancels = cancels.clone();
    Deferred::with_canceller(move |_d: &Deferred<T>| cancels.set(cancels.get() + 1))
}

/// A `ReactorTime` that schedules on a `Clock` and keeps every `DelayedCall`
/// handed out, so that a test can look at a timer after it left the clock.
struct Recording {
    clock: Clock,
    scheduled: RefCell<Vec<(f64, DelayedCall)>>,
}

impl ReactorTime for Recording {
    fn seconds(&self) -> f64 {
        self.clock.seconds()
    }

    fn call_later(&self, delay: f64, f: TimedCall) -> DelayedCall {
        let call = ReactorTime::call_later(&self.clock, delay, f);
        self.scheduled.borrow_mut().push((delay, call.clone()));
        call
    }
}

// ---------------------------------------------------------------------------
// B120: the timer and the chain
// ---------------------------------------------------------------------------

// Twisted: DeferredAddTimeoutTests.test_timeoutChainable
#[test]
fn add_timeout_returns_the_same_deferred_so_it_can_be_chained() {
    let clock = Clock::new();
    let d: Deferred<()> = Deferred::new();
    let returned = d.add_timeout(5.0, &clock);
    assert!(returned.ptr_eq(&d));
    let d = returned.add_callback(|()| Ok("done"));
    d.cast::<()>().callback(()).unwrap();
    assert!(matches!(d.result(), State::Value("done")));
}

// Twisted: experiment E14 (1: "returns self: True | delayed calls: 1 | at t= 10.0",
// "t=9.999: unfired", "t=10: FAIL TimeoutError(10, 'Deferred')")
#[test]
fn add_timeout_schedules_one_delayed_call_due_after_the_timeout() {
    let clock = Clock::new();
    let d: Deferred<i32> = Deferred::new();
    d.add_timeout(10.0, &clock);
    let calls = clock.get_delayed_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].get_time(), 10.0);
    assert!(calls[0].active());
    clock.advance(9.999).unwrap();
    assert!(!d.called());
    assert_eq!(clock.delayed_call_count(), 1);
    clock.advance(0.001).unwrap();
    assert_eq!(timed_out_after(&d), Some(Some(10.0)));
    assert!(!calls[0].active());
    assert_eq!(clock.delayed_call_count(), 0);
    handle(&d);
}

// Twisted: experiment (c = Clock(); c.advance(100); d.addTimeout(2.5, c):
// "due: 102.5")
#[test]
fn the_timer_is_due_timeout_seconds_after_the_clocks_current_time() {
    let clock = Clock::new();
    clock.advance(100.0).unwrap();
    let d: Deferred<i32> = Deferred::new();
    d.add_timeout(2.5, &clock);
    let calls = clock.get_delayed_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].get_time(), 102.5);
    d.callback(1).unwrap();
}

// Twisted: experiment (d.addTimeout(0, c): "unfired 1", after c.advance(0):
// "FAIL TimeoutError(0, 'Deferred')")
#[test]
fn a_zero_timeout_fires_at_the_next_advance_not_at_once() {
    let clock = Clock::new();
    let d: Deferred<i32> = Deferred::new();
    d.add_timeout(0.0, &clock);
    assert!(!d.called());
    assert_eq!(clock.delayed_call_count(), 1);
    clock.advance(0.0).unwrap();
    assert_eq!(timed_out_after(&d), Some(Some(0.0)));
    handle(&d);
}

// ---------------------------------------------------------------------------
// B125: a result before the timeout
// ---------------------------------------------------------------------------

/// `test_successResultBeforeTimeout`'s scenario, with or without a custom
/// `onTimeoutCancel`.
fn success_before_timeout(custom: Option<&Rc<Cell<u32>>>) {
    let clock = Clock::new();
    let d: Deferred<&'static str> = Deferred::new();
    match custom {
        Some(calls) => d.add_timeout_with(10.0, &clock, counting_override(calls)),
        None => d.add_timeout(10.0, &clock),
    };
    // Added after addTimeout: if d were timed out, the cancel would reach
    // the inner Deferred through the wait.
    let inner_cancels = Rc::new(Cell::new(0));
    let inner: Deferred<()> = recorded_cancel(&inner_cancels);
    let callbacked = Rc::new(RefCell::new(None));
    let (seen, waited) = (callbacked.clone(), inner.clone());
    d.add_callback(move |results: &'static str| {
        *seen.borrow_mut() = Some(results);
        waited
    });
    d.callback("results").unwrap();
    assert_eq!(*callbacked.borrow(), Some("results"));
    assert_eq!(clock.delayed_call_count(), 0);
    clock.advance(15.0).unwrap();
    assert!(!inner.called());
    assert_eq!(inner_cancels.get(), 0);
    assert!(d.is_waiting());
    inner.callback(()).unwrap();
}

// Twisted: DeferredAddTimeoutTests.test_successResultBeforeTimeout
#[test]
fn a_success_before_the_timeout_is_delivered_and_nothing_is_cancelled_later() {
    success_before_timeout(None);
}

// Twisted: DeferredAddTimeoutTests.test_successResultBeforeTimeoutCustom
#[test]
fn a_success_before_the_timeout_is_delivered_and_the_custom_function_is_not_called() {
    let calls = Rc::new(Cell::new(0));
    success_before_timeout(Some(&calls));
    assert_eq!(calls.get(), 0);
}

/// `test_failureBeforeTimeout`'s scenario, with or without a custom
/// `onTimeoutCancel`.
fn failure_before_timeout(custom: Option<&Rc<Cell<u32>>>) {
    let clock = Clock::new();
    let d: Deferred<&'static str> = Deferred::new();
    match custom {
        Some(calls) => d.add_timeout_with(10.0, &clock, counting_override(calls)),
        None => d.add_timeout(10.0, &clock),
    };
    let inner_cancels = Rc::new(Cell::new(0));
    let inner: Deferred<&'static str> = recorded_cancel(&inner_cancels);
    let errbacked: Rc<RefCell<Option<Failure>>> = Rc::new(RefCell::new(None));
    let (seen, waited) = (errbacked.clone(), inner.clone());
    d.add_errback(move |f: Failure| {
        *seen.borrow_mut() = Some(f);
        waited
    });
    let error = Failure::new(ValueError("fail"));
    d.errback(error.clone()).unwrap();
    let seen = errbacked
        .borrow_mut()
        .take()
        .expect("the errback ran at once");
    assert!(Failure::ptr_eq(&seen, &error));
    assert_eq!(clock.delayed_call_count(), 0);
    clock.advance(15.0).unwrap();
    assert!(!inner.called());
    assert_eq!(inner_cancels.get(), 0);
    inner.callback("x").unwrap();
}

// Twisted: DeferredAddTimeoutTests.test_failureBeforeTimeout
#[test]
fn a_failure_before_the_timeout_is_delivered_and_nothing_is_cancelled_later() {
    failure_before_timeout(None);
}

// Twisted: DeferredAddTimeoutTests.test_failureBeforeTimeoutCustom
#[test]
fn a_failure_before_the_timeout_is_delivered_and_the_custom_function_is_not_called() {
    let calls = Rc::new(Cell::new(0));
    failure_before_timeout(Some(&calls));
    assert_eq!(calls.get(), 0);
}

// Twisted: experiment E14 (2: "fired before timeout: 'fast' | pending delayed calls: 0")
#[test]
fn a_value_before_the_timeout_passes_unchanged_and_removes_the_timer() {
    let clock = Clock::new();
    let d: Deferred<&str> = Deferred::new();
    d.add_timeout(10.0, &clock);
    d.callback("fast").unwrap();
    assert!(matches!(d.result(), State::Value("fast")));
    assert_eq!(clock.delayed_call_count(), 0);
    clock.advance(20.0).unwrap();
    assert!(matches!(d.result(), State::Value("fast")));
}

// Twisted: experiment (d.addTimeout(10, c); dc = c.getDelayedCalls()[0];
// d.callback(1): "active: False")
#[test]
fn the_timers_delayed_call_is_cancelled_when_the_result_arrives() {
    let clock = Clock::new();
    let d: Deferred<i32> = Deferred::new();
    d.add_timeout(10.0, &clock);
    let timer = clock.get_delayed_calls().remove(0);
    assert!(timer.active());
    d.callback(1).unwrap();
    assert!(!timer.active());
    // Cancelled, not run: cancelling it again is refused.
    assert!(timer.cancel().is_err());
}

// Twisted: DeferredAddTimeoutTests.test_cancelBeforeTimeout; experiment E14
// (7: "manual cancel before timeout stays CancelledError: FAIL CancelledError() | pending: 0")
#[test]
fn a_manual_cancel_before_the_timeout_stays_a_cancelled_error() {
    let clock = Clock::new();
    let d: Deferred<()> = Deferred::new();
    d.add_timeout(10.0, &clock);
    let inner_cancels = Rc::new(Cell::new(0));
    let inner: Deferred<()> = recorded_cancel(&inner_cancels);
    let cancelled: Rc<RefCell<Option<Failure>>> = Rc::new(RefCell::new(None));
    let (seen, waited) = (cancelled.clone(), inner.clone());
    d.add_errback(move |f: Failure| {
        *seen.borrow_mut() = Some(f);
        waited
    });
    d.cancel().unwrap();
    let seen = cancelled
        .borrow_mut()
        .take()
        .expect("the errback ran at once");
    assert!(seen.check::<CancelledError>());
    assert_eq!(clock.delayed_call_count(), 0);
    clock.advance(15.0).unwrap();
    assert!(!inner.called());
    assert_eq!(inner_cancels.get(), 0);
    inner.callback(()).unwrap();
}

// Twisted: DeferredAddTimeoutTests.test_cancelBeforeTimeoutCustom
#[test]
fn a_manual_cancel_before_the_timeout_skips_the_custom_function() {
    let clock = Clock::new();
    let calls = Rc::new(Cell::new(0));
    let d: Deferred<&'static str> = Deferred::new();
    d.add_timeout_with(10.0, &clock, counting_override(&calls));
    let inner_cancels = Rc::new(Cell::new(0));
    let inner: Deferred<&'static str> = recorded_cancel(&inner_cancels);
    let cancelled: Rc<RefCell<Option<Failure>>> = Rc::new(RefCell::new(None));
    let (seen, waited) = (cancelled.clone(), inner.clone());
    d.add_errback(move |f: Failure| {
        *seen.borrow_mut() = Some(f);
        waited
    });
    d.cancel().unwrap();
    let seen = cancelled
        .borrow_mut()
        .take()
        .expect("the errback ran at once");
    assert!(seen.check::<CancelledError>());
    clock.advance(15.0).unwrap();
    assert!(!inner.called());
    assert_eq!(inner_cancels.get(), 0);
    assert_eq!(calls.get(), 0);
    inner.callback("x").unwrap();
}

// Twisted: experiment (Deferred(lambda x: seen.append("c")); addTimeout(5);
// d.cancel(); c.advance(10): "FAIL CancelledError() ['c']")
#[test]
fn a_manual_cancel_runs_the_canceller_once_and_the_timeout_never_cancels_again() {
    let clock = Clock::new();
    let cancels = Rc::new(Cell::new(0));
    let d: Deferred<i32> = recorded_cancel(&cancels);
    d.add_timeout(5.0, &clock);
    d.cancel().unwrap();
    clock.advance(10.0).unwrap();
    assert_eq!(cancels.get(), 1);
    assert!(holds_cancelled(&d));
    handle(&d);
}

// ---------------------------------------------------------------------------
// B121, B122: timing out, default translation
// ---------------------------------------------------------------------------

// Twisted: DeferredAddTimeoutTests.test_timedOut
#[test]
fn timing_out_fails_the_deferred_with_timeout_error() {
    let clock = Clock::new();
    let d: Deferred<()> = Deferred::new();
    d.add_timeout(10.0, &clock);
    assert!(!d.called());
    clock.advance(15.0).unwrap();
    let failure = d.result().failure().expect("timed out");
    assert!(failure.check::<TimeoutError>());
    assert!(!failure.check::<CancelledError>());
    assert_eq!(
        failure.downcast_ref::<TimeoutError>(),
        Some(&TimeoutError {
            timeout: Some(10.0)
        })
    );
    handle(&d);
}

// Twisted: DeferredAddTimeoutTests.test_timedOut (the canceller runs: B121)
#[test]
fn timing_out_runs_the_deferreds_canceller_once() {
    let clock = Clock::new();
    let cancels = Rc::new(Cell::new(0));
    let d: Deferred<i32> = recorded_cancel(&cancels);
    d.add_timeout(10.0, &clock);
    clock.advance(9.0).unwrap();
    assert_eq!(cancels.get(), 0);
    clock.advance(1.0).unwrap();
    assert_eq!(cancels.get(), 1);
    assert_eq!(timed_out_after(&d), Some(Some(10.0)));
    clock.advance(100.0).unwrap();
    assert_eq!(cancels.get(), 1);
    handle(&d);
}

// Twisted: DeferredAddTimeoutTests.test_timedOutProvidedCancelSuccess;
// experiment E14 (5: "canceller callbacks -> default translation leaves success")
#[test]
fn a_canceller_that_succeeds_wins_over_the_timeout() {
    let clock = Clock::new();
    let d = Deferred::with_canceller(|c: &Deferred<&str>| c.callback("I was cancelled!"));
    d.add_timeout(10.0, &clock);
    assert!(!d.called());
    clock.advance(15.0).unwrap();
    assert!(matches!(d.result(), State::Value("I was cancelled!")));
}

// Twisted: DeferredAddTimeoutTests.test_timedOutProvidedCancelFailure;
// experiment E14 (6: "canceller errbacks KeyError -> not translated")
#[test]
fn a_canceller_failure_other_than_cancelled_error_passes_unchanged() {
    let clock = Clock::new();
    let error = Failure::new(ValueError("what!"));
    let raised = error.clone();
    let d = Deferred::with_canceller(move |c: &Deferred<()>| c.errback(raised.clone()));
    d.add_timeout(10.0, &clock);
    assert!(!d.called());
    clock.advance(15.0).unwrap();
    let failure = d.result().failure().expect("the canceller failed it");
    assert!(Failure::ptr_eq(&failure, &error));
    assert!(!failure.check::<TimeoutError>());
    handle(&d);
}

// Twisted: experiment (Deferred(lambda x: x.errback(CancelledError("mine")));
// addTimeout(5); advance(5): "FAIL TimeoutError(5, 'Deferred')")
#[test]
fn a_cancelled_error_from_the_canceller_itself_becomes_timeout_error() {
    let clock = Clock::new();
    let d = Deferred::with_canceller(|c: &Deferred<i32>| c.errback(CancelledError));
    d.add_timeout(5.0, &clock);
    clock.advance(5.0).unwrap();
    assert_eq!(timed_out_after(&d), Some(Some(5.0)));
    handle(&d);
}

// Twisted: experiment (d.addTimeout(1, c); d.addErrback(record); c.advance(1):
// "['TimeoutError'] None")
#[test]
fn a_link_added_after_add_timeout_sees_the_timeout_error() {
    let clock = Clock::new();
    let d: Deferred<()> = Deferred::new();
    d.add_timeout(1.0, &clock);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    d.add_errback(move |f: Failure| {
        s.borrow_mut()
            .push((f.check::<TimeoutError>(), f.check::<CancelledError>()));
        Ok(())
    });
    clock.advance(1.0).unwrap();
    assert_eq!(*seen.borrow(), [(true, false)]);
    assert!(matches!(d.result(), State::Value(())));
}

// Twisted: experiment (d.addTimeout(1, c); d.pause(); c.advance(1): called True,
// result "FAIL CancelledError()", pending 0; after d.unpause():
// "FAIL TimeoutError(1, 'Deferred')")
#[test]
fn a_paused_deferred_timed_out_is_translated_when_unpaused() {
    let clock = Clock::new();
    let d: Deferred<i32> = Deferred::new();
    d.add_timeout(1.0, &clock);
    d.pause();
    clock.advance(1.0).unwrap();
    assert!(d.called());
    assert!(holds_cancelled(&d));
    assert_eq!(clock.delayed_call_count(), 0);
    d.unpause();
    assert_eq!(timed_out_after(&d), Some(Some(1.0)));
    handle(&d);
}

// ---------------------------------------------------------------------------
// B123: custom onTimeoutCancel
// ---------------------------------------------------------------------------

// Twisted: DeferredAddTimeoutTests.test_timedOutCustom
#[test]
fn a_custom_on_timeout_cancel_result_replaces_the_timeout() {
    let clock = Clock::new();
    let d: Deferred<&'static str> = Deferred::new();
    d.add_timeout_with(10.0, &clock, override_func);
    assert!(!d.called());
    clock.advance(15.0).unwrap();
    assert!(matches!(d.result(), State::Value("OVERRIDDEN")));
}

// Twisted: experiment E14 (4: "custom onTimeoutCancel: ('custom', 'Failure', 5)");
// experiment ("[('Failure', 'CancelledError', 5)]")
#[test]
fn the_custom_function_receives_the_cancelled_failure_and_the_timeout() {
    let clock = Clock::new();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let d: Deferred<String> = Deferred::new();
    d.add_timeout_with(
        5.0,
        &clock,
        move |result: Result<String, Failure>, timeout| {
            let cancelled = result.as_ref().err().map(Failure::check::<CancelledError>);
            s.borrow_mut().push((cancelled, timeout));
            Ok::<_, Failure>(format!("custom {timeout}"))
        },
    );
    clock.advance(5.0).unwrap();
    assert_eq!(*seen.borrow(), [(Some(true), 5.0)]);
    assert_eq!(d.result().value().as_deref(), Some("custom 5"));
}

// Twisted: DeferredAddTimeoutTests.test_providedCancelCalledBeforeTimeoutCustom
#[test]
fn the_custom_function_handles_a_canceller_that_fails() {
    let clock = Clock::new();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let d = Deferred::with_canceller(|c: &Deferred<&'static str>| c.errback(ValueError("what!")));
    d.add_timeout_with(
        10.0,
        &clock,
        move |result: Result<&'static str, Failure>, _| {
            s.borrow_mut().push(
                result
                    .err()
                    .and_then(|f| f.downcast_ref::<ValueError>().cloned()),
            );
            Ok::<_, Failure>("OVERRIDDEN")
        },
    );
    assert!(!d.called());
    clock.advance(15.0).unwrap();
    assert_eq!(*seen.borrow(), [Some(ValueError("what!"))]);
    assert!(matches!(d.result(), State::Value("OVERRIDDEN")));
}

// Twisted: experiment (Deferred(lambda x: x.callback("cv"));
// onTimeoutCancel=lambda r, t: ...: "seen: [('cv', 5)] 'replaced'")
#[test]
fn the_custom_function_receives_a_value_a_canceller_produced() {
    let clock = Clock::new();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let d = Deferred::with_canceller(|c: &Deferred<&'static str>| c.callback("cv"));
    d.add_timeout_with(
        5.0,
        &clock,
        move |result: Result<&'static str, Failure>, t| {
            s.borrow_mut().push((result.ok(), t));
            Ok::<_, Failure>("replaced")
        },
    );
    clock.advance(5.0).unwrap();
    assert_eq!(*seen.borrow(), [(Some("cv"), 5.0)]);
    assert!(matches!(d.result(), State::Value("replaced")));
}

// Twisted: experiment (onTimeoutCancel raising KeyError("custom-raise"):
// "raising custom: FAIL KeyError('custom-raise',)")
#[test]
fn a_custom_function_that_fails_replaces_the_result_with_its_failure() {
    let clock = Clock::new();
    let d: Deferred<i32> = Deferred::new();
    d.add_timeout_with(5.0, &clock, |_r: Result<i32, Failure>, _t| {
        Err::<i32, _>(Failure::new(KeyError("custom-raise")))
    });
    clock.advance(5.0).unwrap();
    let failure = d.result().failure().expect("the custom function failed");
    assert_eq!(
        failure.downcast_ref::<KeyError>(),
        Some(&KeyError("custom-raise"))
    );
    assert!(!failure.check::<TimeoutError>());
    assert!(!failure.check::<CancelledError>());
    handle(&d);
}

// Twisted: experiment (onTimeoutCancel=lambda r, t: later; advance(5): "waiting";
// later.callback("lv"): "'lv'")
#[test]
fn a_custom_function_may_return_a_deferred_the_chain_waits_on() {
    let clock = Clock::new();
    let later: Deferred<&'static str> = Deferred::new();
    let d: Deferred<&'static str> = Deferred::new();
    let l = later.clone();
    d.add_timeout_with(5.0, &clock, move |_r: Result<&'static str, Failure>, _t| l);
    clock.advance(5.0).unwrap();
    assert!(d.called());
    assert!(d.is_waiting());
    assert!(matches!(d.result(), State::Waiting(_)));
    later.callback("lv").unwrap();
    assert!(matches!(d.result(), State::Value("lv")));
}

// Twisted: experiment ("not timed out custom calls: [] 1",
// "failure custom calls: [] FAIL ValueError('v',)")
#[test]
fn the_custom_function_is_called_only_when_timed_out() {
    let clock = Clock::new();
    let calls = Rc::new(Cell::new(0));
    let ok: Deferred<&'static str> = Deferred::new();
    ok.add_timeout_with(5.0, &clock, counting_override(&calls));
    ok.callback("value").unwrap();
    let failed: Deferred<&'static str> = Deferred::new();
    failed.add_timeout_with(5.0, &clock, counting_override(&calls));
    failed.errback(ValueError("v")).unwrap();
    clock.advance(10.0).unwrap();
    assert_eq!(calls.get(), 0);
    assert!(matches!(ok.result(), State::Value("value")));
    assert_eq!(
        failed
            .result()
            .failure()
            .and_then(|f| f.downcast_ref::<ValueError>().cloned()),
        Some(ValueError("v"))
    );
    handle(&failed);
    let timed: Deferred<&'static str> = Deferred::new();
    timed.add_timeout_with(5.0, &clock, counting_override(&calls));
    clock.advance(5.0).unwrap();
    assert_eq!(calls.get(), 1);
}

// ---------------------------------------------------------------------------
// B124, P-13: links added before and after addTimeout
// ---------------------------------------------------------------------------

// Twisted: DeferredAddTimeoutTests.test_errbackAddedBeforeTimeout;
// experiment E14 (11: "earlier errback saw: ['CancelledError'] | final: FAIL TimeoutError(1, 'Deferred')")
#[test]
fn an_errback_added_before_sees_cancelled_error_which_then_becomes_timeout_error() {
    let clock = Clock::new();
    let d: Deferred<()> = Deferred::new();
    let errbacked: Rc<RefCell<Option<Failure>>> = Rc::new(RefCell::new(None));
    let seen = errbacked.clone();
    d.add_errback(move |f: Failure| {
        *seen.borrow_mut() = Some(f.clone());
        Err::<(), _>(f)
    });
    d.add_timeout(10.0, &clock);
    clock.advance(15.0).unwrap();
    let seen = errbacked.borrow_mut().take().expect("the errback ran");
    assert!(seen.check::<CancelledError>());
    assert_eq!(timed_out_after(&d), Some(Some(10.0)));
    handle(&d);
}

// Twisted: DeferredAddTimeoutTests.test_errbackAddedBeforeTimeoutSuppressesCancellation
#[test]
fn an_errback_added_before_that_suppresses_the_cancel_makes_the_deferred_succeed() {
    let clock = Clock::new();
    let d: Deferred<()> = Deferred::new();
    let errbacked: Rc<RefCell<Option<Failure>>> = Rc::new(RefCell::new(None));
    let seen = errbacked.clone();
    d.add_errback(move |f: Failure| {
        *seen.borrow_mut() = Some(f.clone());
        f.trap::<CancelledError>()?;
        Ok(())
    });
    d.add_timeout(10.0, &clock);
    clock.advance(15.0).unwrap();
    let seen = errbacked.borrow_mut().take().expect("the errback ran");
    assert!(seen.check::<CancelledError>());
    assert!(matches!(d.result(), State::Value(())));
}

// Twisted: DeferredAddTimeoutTests.test_errbackAddedBeforeTimeoutCustom
#[test]
fn an_errback_added_before_passing_the_cancel_on_reaches_the_custom_function() {
    let clock = Clock::new();
    let d: Deferred<&'static str> = Deferred::new();
    let errbacked: Rc<RefCell<Option<Failure>>> = Rc::new(RefCell::new(None));
    let seen = errbacked.clone();
    d.add_errback(move |f: Failure| {
        *seen.borrow_mut() = Some(f.clone());
        Err::<&'static str, _>(f)
    });
    let custom_input = Rc::new(RefCell::new(Vec::new()));
    let ci = custom_input.clone();
    d.add_timeout_with(10.0, &clock, move |r: Result<&'static str, Failure>, t| {
        ci.borrow_mut()
            .push((r.err().map(|f| f.check::<CancelledError>()), t));
        Ok::<_, Failure>("OVERRIDDEN")
    });
    clock.advance(15.0).unwrap();
    let seen = errbacked.borrow_mut().take().expect("the errback ran");
    assert!(seen.check::<CancelledError>());
    assert_eq!(*custom_input.borrow(), [(Some(true), 10.0)]);
    assert!(matches!(d.result(), State::Value("OVERRIDDEN")));
}

// Twisted: DeferredAddTimeoutTests.test_errbackAddedBeforeTimeoutSuppressesCancellationCustom
#[test]
fn an_errback_added_before_that_suppresses_the_cancel_still_gets_the_custom_function() {
    let clock = Clock::new();
    let d: Deferred<&'static str> = Deferred::new();
    let errbacked: Rc<RefCell<Option<Failure>>> = Rc::new(RefCell::new(None));
    let seen = errbacked.clone();
    d.add_errback(move |f: Failure| {
        *seen.borrow_mut() = Some(f);
        Ok("suppressed")
    });
    let custom_input = Rc::new(RefCell::new(Vec::new()));
    let ci = custom_input.clone();
    d.add_timeout_with(10.0, &clock, move |r: Result<&'static str, Failure>, _| {
        ci.borrow_mut().push(r.ok());
        Ok::<_, Failure>("OVERRIDDEN")
    });
    clock.advance(15.0).unwrap();
    let seen = errbacked.borrow_mut().take().expect("the errback ran");
    assert!(seen.check::<CancelledError>());
    assert_eq!(*custom_input.borrow(), [Some("suppressed")]);
    assert!(matches!(d.result(), State::Value("OVERRIDDEN")));
}

// Twisted: DeferredAddTimeoutTests.test_callbackAddedToCancelerBeforeTimeout
#[test]
fn a_callback_added_before_runs_on_a_cancellers_value_and_no_timeout_error_follows() {
    let clock = Clock::new();
    let success = "success";
    let d = Deferred::with_canceller(move |c: &Deferred<&'static str>| c.callback(success));
    let callbacked = Rc::new(RefCell::new(None));
    let seen = callbacked.clone();
    let d = d.add_callback(move |value: &'static str| {
        *seen.borrow_mut() = Some(value);
        Ok(value)
    });
    d.add_timeout(10.0, &clock);
    clock.advance(15.0).unwrap();
    assert_eq!(*callbacked.borrow(), Some(success));
    assert!(matches!(d.result(), State::Value("success")));
}

// Twisted: DeferredAddTimeoutTests.test_callbackAddedToCancelerBeforeTimeoutCustom
#[test]
fn a_callback_added_before_runs_on_a_cancellers_value_then_the_custom_function() {
    let clock = Clock::new();
    let success = "success";
    let d = Deferred::with_canceller(move |c: &Deferred<&'static str>| c.callback(success));
    let callbacked = Rc::new(RefCell::new(None));
    let seen = callbacked.clone();
    let d = d.add_callback(move |value: &'static str| {
        *seen.borrow_mut() = Some(value);
        Ok(value)
    });
    let calls = Rc::new(Cell::new(0));
    d.add_timeout_with(10.0, &clock, counting_override(&calls));
    clock.advance(15.0).unwrap();
    assert_eq!(*callbacked.borrow(), Some(success));
    assert_eq!(calls.get(), 1);
    assert!(matches!(d.result(), State::Value("OVERRIDDEN")));
}

// Twisted: P-13 ("pending delayed calls: 1", "inner cancelled by the timeout",
// "d: TimeoutError (5, 'Deferred')"); experiment E14 (8: "before timeout: waiting | pending: 1",
// "after timeout: FAIL TimeoutError(5, 'Deferred') | inner: None")
#[test]
fn a_deferred_returned_by_a_link_added_before_is_cancelled_by_the_timeout() {
    let clock = Clock::new();
    let inner_cancels = Rc::new(Cell::new(0));
    let inner: Deferred<i32> = recorded_cancel(&inner_cancels);
    let d: Deferred<()> = Deferred::new();
    let waited = inner.clone();
    let d2 = d.add_callback(move |()| waited);
    d2.add_timeout(5.0, &clock);
    d.callback(()).unwrap();
    assert!(d.is_waiting());
    assert_eq!(clock.delayed_call_count(), 1);
    clock.advance(5.0).unwrap();
    assert_eq!(inner_cancels.get(), 1);
    assert_eq!(timed_out_after(&d2), Some(Some(5.0)));
    // The inner Deferred handed its CancelledError on and holds None.
    assert!(matches!(inner.cast::<()>().result(), State::Value(())));
    assert_eq!(clock.delayed_call_count(), 0);
    handle(&d2);
}

// Twisted: experiment (inner = Deferred(lambda x: x.callback("inner-val")) returned by a
// link added before addTimeout(5); advance(5): "'inner-val' inner: None")
#[test]
fn an_inner_deferred_whose_canceller_succeeds_gives_its_value_to_the_timed_out_deferred() {
    let clock = Clock::new();
    let inner = Deferred::with_canceller(|x: &Deferred<&'static str>| x.callback("inner-val"));
    let d: Deferred<()> = Deferred::new();
    let waited = inner.clone();
    let d2 = d.add_callback(move |()| waited);
    d2.add_timeout(5.0, &clock);
    d.callback(()).unwrap();
    clock.advance(5.0).unwrap();
    assert!(matches!(d2.result(), State::Value("inner-val")));
    assert!(matches!(inner.cast::<()>().result(), State::Value(())));
}

// Twisted: P-13 ("uncovered inner after 10s: called = False | pending = 0");
// experiment E14 (9: "pending timeouts: 0", "inner after 10s: unfired")
#[test]
fn a_deferred_returned_by_a_link_added_after_is_not_covered_by_the_timeout() {
    let clock = Clock::new();
    let inner_cancels = Rc::new(Cell::new(0));
    let inner: Deferred<i32> = recorded_cancel(&inner_cancels);
    let d: Deferred<()> = Deferred::new();
    d.add_timeout(5.0, &clock);
    let waited = inner.clone();
    let d2 = d.add_callback(move |()| waited);
    d.callback(()).unwrap();
    assert_eq!(clock.delayed_call_count(), 0);
    clock.advance(10.0).unwrap();
    assert!(!inner.called());
    assert_eq!(inner_cancels.get(), 0);
    assert!(d2.is_waiting());
    inner.callback(3).unwrap();
    assert!(matches!(d2.result(), State::Value(3)));
}

// ---------------------------------------------------------------------------
// B126: already-fired Deferreds, stacked timeouts
// ---------------------------------------------------------------------------

// Twisted: experiment E14 (3: "addTimeout on fired Deferred: 'already' | pending delayed calls: 0")
#[test]
fn add_timeout_on_a_fired_deferred_schedules_and_cancels_the_timer_at_once() {
    let recording = Recording {
        clock: Clock::new(),
        scheduled: RefCell::new(Vec::new()),
    };
    let d = succeed("already");
    let returned = d.add_timeout(10.0, &recording);
    assert!(returned.ptr_eq(&d));
    assert!(matches!(d.result(), State::Value("already")));
    let scheduled = recording.scheduled.borrow();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].0, 10.0);
    assert!(!scheduled[0].1.active());
    assert_eq!(recording.clock.delayed_call_count(), 0);
    recording.clock.advance(20.0).unwrap();
    assert!(matches!(d.result(), State::Value("already")));
}

// Twisted: experiment (d = fail(ValueError("x")); d.addTimeout(10, c):
// "FAIL ValueError('x',) 0")
#[test]
fn add_timeout_on_a_failed_deferred_leaves_the_failure_and_no_timer() {
    let clock = Clock::new();
    let error = Failure::new(ValueError("x"));
    let d = fail::<i32>(error.clone());
    d.add_timeout(10.0, &clock);
    assert_eq!(clock.delayed_call_count(), 0);
    clock.advance(20.0).unwrap();
    let failure = d.result().failure().expect("still failed");
    assert!(Failure::ptr_eq(&failure, &error));
    handle(&d);
}

// Twisted: experiment E14 (10: "stacked timeouts (5 then 3) after 3s:
// FAIL TimeoutError(3, 'Deferred') | pending: 0")
#[test]
fn stacked_timeouts_the_shorter_one_added_last_wins() {
    let clock = Clock::new();
    let d: Deferred<i32> = Deferred::new();
    d.add_timeout(5.0, &clock);
    d.add_timeout(3.0, &clock);
    assert_eq!(clock.delayed_call_count(), 2);
    clock.advance(3.0).unwrap();
    assert_eq!(timed_out_after(&d), Some(Some(3.0)));
    assert_eq!(clock.delayed_call_count(), 0);
    handle(&d);
}

// Twisted: experiment ("stacked 3 then 5": "FAIL TimeoutError(3, 'Deferred') 0")
#[test]
fn stacked_timeouts_the_shorter_one_added_first_wins() {
    let clock = Clock::new();
    let d: Deferred<i32> = Deferred::new();
    d.add_timeout(3.0, &clock);
    d.add_timeout(5.0, &clock);
    clock.advance(3.0).unwrap();
    assert_eq!(timed_out_after(&d), Some(Some(3.0)));
    assert_eq!(clock.delayed_call_count(), 0);
    handle(&d);
}

// ---------------------------------------------------------------------------
// B127, E22-F: a canceller that fails when the timeout fires
// ---------------------------------------------------------------------------

// Twisted: experiment E22-F ("canceller exception propagated out of clock.advance(); d: unfired");
// experiment ("same: True d: unfired pending 0")
#[test]
fn a_canceller_failure_at_timeout_escapes_advance_and_leaves_the_deferred_unfired() {
    let clock = Clock::new();
    let error = Failure::new(ValueError("division by zero"));
    let raised = error.clone();
    let d = Deferred::with_canceller(move |_d: &Deferred<i32>| Err(raised.clone()));
    d.add_timeout(1.0, &clock);
    let escaped = clock
        .advance(1.0)
        .expect_err("the canceller's failure escapes");
    assert!(Failure::ptr_eq(&escaped, &error));
    assert!(!d.called());
    assert_eq!(clock.delayed_call_count(), 0);
    // The clock moved all the same.
    assert_eq!(clock.seconds(), 1.0);
    d.callback(0).unwrap();
}

// Twisted: experiment ("late callback: 'late'", "later CE errback: FAIL TimeoutError(1, 'Deferred')")
#[test]
fn after_a_canceller_failure_the_deferred_still_counts_as_timed_out() {
    let clock = Clock::new();
    let late =
        Deferred::with_canceller(|_d: &Deferred<&'static str>| Err(Failure::new(ValueError("no"))));
    late.add_timeout(1.0, &clock);
    assert!(clock.advance(1.0).is_err());
    late.callback("late").unwrap();
    assert!(matches!(late.result(), State::Value("late")));

    let clock = Clock::new();
    let cancelled_later =
        Deferred::with_canceller(|_d: &Deferred<&'static str>| Err(Failure::new(ValueError("no"))));
    cancelled_later.add_timeout(1.0, &clock);
    assert!(clock.advance(1.0).is_err());
    cancelled_later.errback(CancelledError).unwrap();
    assert_eq!(timed_out_after(&cancelled_later), Some(Some(1.0)));
    handle(&cancelled_later);
}

// ---------------------------------------------------------------------------
// With deferLater
// ---------------------------------------------------------------------------

// Twisted: experiment (deferLater(c, 10, f).addTimeout(5, c): "pending: [5.0, 10.0]",
// "FAIL TimeoutError(5, 'Deferred') pending: 0 called: []")
#[test]
fn a_defer_later_slower_than_the_timeout_is_cancelled_and_never_calls_its_function() {
    let clock = Clock::new();
    let called = Rc::new(Cell::new(false));
    let c = called.clone();
    let d = defer_later(&clock, 10.0, move || {
        c.set(true);
        Ok("done")
    });
    d.add_timeout(5.0, &clock);
    let due: Vec<f64> = clock
        .get_delayed_calls()
        .iter()
        .map(DelayedCall::get_time)
        .collect();
    assert_eq!(due, [5.0, 10.0]);
    clock.advance(5.0).unwrap();
    assert_eq!(timed_out_after(&d), Some(Some(5.0)));
    assert_eq!(clock.delayed_call_count(), 0);
    clock.advance(10.0).unwrap();
    assert!(!called.get());
    handle(&d);
}

// Twisted: experiment (deferLater(c, 2, f).addTimeout(5, c); advance(2): "'done' pending: 0")
#[test]
fn a_defer_later_faster_than_the_timeout_delivers_its_value_and_removes_the_timer() {
    let clock = Clock::new();
    let d = defer_later(&clock, 2.0, || Ok("done"));
    d.add_timeout(5.0, &clock);
    clock.advance(2.0).unwrap();
    assert!(matches!(d.result(), State::Value("done")));
    assert_eq!(clock.delayed_call_count(), 0);
}
