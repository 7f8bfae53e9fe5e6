//! `twisted_compat::timeout_deferred`: Synapse's
//! `synapse.util.async_helpers.timeout_deferred(deferred=, timeout=, clock=)`,
//! on Synapse's `Clock` wrapping the deterministic `twisted_reactor::Clock`.
//!
//! Synapse behaviours covered: section 2.3, items 24 to 30, the
//! `TimeoutDeferredTest` tests of `tests/util/test_async_helpers.py` (TAH),
//! and cases checked by experiment against Synapse 1.163.2 on Twisted
//! 26.10.0 (the Python output is quoted next to each such test). Item 31
//! (`cancel_on_shutdown`) has no counterpart: the Rust `Clock` keeps no
//! shutdown registry and `timeout_deferred` takes no such argument.
//!
//! Synapse's `TimeoutError("Timed out after %gs" % timeout)` carries the
//! timeout in its message; here it is `TimeoutError { timeout: Some(t) }`.
//!
//! Each test runs on its own thread, so it starts in the sentinel logging
//! context, as Synapse's test base class requires.

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use integration_tests::support::{Log, capture_logs, new_log};
use twisted_compat::{
    Clock, LoggingContext, PreserveLoggingContext, SENTINEL_CONTEXT, capture_logcontext_errors,
    current_context, make_deferred_yieldable, timeout_deferred,
};
use twisted_deferred::{
    AssertionError, CancelledError, Deferred, Failure, State, TimeoutError,
    capture_unhandled_errors, ensure_deferred,
};
use twisted_reactor::{Clock as TestClock, defer_later};

const HS: &str = "test_server";

/// Python's `ValueError("...")`.
#[derive(Debug, Clone, PartialEq)]
struct ValueError(&'static str);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueError({})", self.0)
    }
}

impl Error for ValueError {}

/// `self.reactor, self.clock = get_clock()`: Twisted's test `Clock` and
/// Synapse's `Clock` wrapping it.
fn get_clock() -> (TestClock, Clock) {
    let reactor = TestClock::new();
    let clock = Clock::new(reactor.clone(), HS);
    (reactor, clock)
}

/// The timeout `d` failed with, if it holds a `TimeoutError`.
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

/// True when `d` handed its result on and holds Python's `None`.
fn consumed<T: 'static>(d: &Deferred<T>) -> bool {
    matches!(d.cast::<()>().result(), State::Value(()))
}

/// Handles whatever failure `d` holds, so that dropping it reports nothing.
fn handle<T: 'static>(d: &Deferred<T>) {
    d.cast::<()>().add_errback(|_| Ok(()));
}

/// A Deferred whose canceller records each time it runs, with the logging
/// context current then, and does nothing else.
fn recorded_cancel<T: 'static>(cancels: &Log<String>) -> Deferred<T> {
    let cancels = cancels.clone();
    Deferred::with_canceller(move |_d: &Deferred<T>| {
        cancels.borrow_mut().push(current_context().to_string())
    })
}

/// A link recording the context the chain reaches it in.
fn record_context<T: 'static>(d: &Deferred<T>, seen: &Log<String>) {
    let seen = seen.clone();
    d.add_passthrough(move || seen.borrow_mut().push(current_context().to_string()));
}

// ---------------------------------------------------------------------------
// 24. A new Deferred and a timer
// ---------------------------------------------------------------------------

// Synapse: semantics 2.3 #24 (Exp: "new: True pending: 1 at 1.5", "at 1.4999: unfired unfired")
#[test]
fn returns_a_new_deferred_and_schedules_one_timer() {
    let (reactor, clock) = get_clock();
    let src: Deferred<&'static str> = Deferred::new();
    let d = timeout_deferred(src.clone(), 1.5, &clock);
    assert!(!d.ptr_eq(&src));
    let calls = reactor.get_delayed_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].get_time(), 1.5);
    reactor.advance(1.4999).unwrap();
    assert!(!d.called());
    assert!(!src.called());
    assert_eq!(reactor.delayed_call_count(), 1);
    src.callback("v").unwrap();
}

// Synapse: semantics 2.3 #24, #29 (Exp: "value fwd: 'v' src: None pending: 0")
#[test]
fn a_value_before_the_timeout_is_forwarded_and_the_timer_cancelled() {
    let (reactor, clock) = get_clock();
    let src: Deferred<&'static str> = Deferred::new();
    let d = timeout_deferred(src.clone(), 1.5, &clock);
    let timer = reactor.get_delayed_calls().remove(0);
    src.callback("v").unwrap();
    assert!(matches!(d.result(), State::Value("v")));
    assert!(consumed(&src));
    assert!(!timer.active());
    assert_eq!(reactor.delayed_call_count(), 0);
    reactor.advance(10.0).unwrap();
    assert!(matches!(d.result(), State::Value("v")));
}

// Synapse: semantics 2.3 #24, #29 (Exp: "failure fwd: FAIL ValueError('x',) True src: None pending: 0")
#[test]
fn a_failure_before_the_timeout_is_forwarded_as_the_same_failure_and_the_timer_cancelled() {
    let (reactor, clock) = get_clock();
    let src: Deferred<i32> = Deferred::new();
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    let error = Failure::new(ValueError("x"));
    src.errback(error.clone()).unwrap();
    let forwarded = d.result().failure().expect("forwarded");
    assert!(Failure::ptr_eq(&forwarded, &error));
    assert!(consumed(&src));
    assert_eq!(reactor.delayed_call_count(), 0);
    handle(&d);
}

// Synapse: semantics 2.3 #24, #29, #30 (Exp: succeed("already") inside LoggingContext "one":
// "ctx after: one", "'already' src: None pending: 0")
#[test]
fn an_already_fired_input_is_forwarded_at_once_and_leaves_no_timer() {
    let (reactor, clock) = get_clock();
    let one = LoggingContext::new("one", HS);
    let src = twisted_deferred::succeed("already");
    let (d, errors) = capture_logcontext_errors(|| {
        let _scope = one.entered();
        let d = timeout_deferred(src.clone(), 1.0, &clock);
        assert_eq!(current_context(), one);
        d
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert!(matches!(d.result(), State::Value("already")));
    assert!(consumed(&src));
    assert_eq!(reactor.delayed_call_count(), 0);
}

// Synapse: semantics 2.3 #24, #29 (Exp: fail(ValueError("x")): "FAIL ValueError('x',) True src: None
// pending: 0")
#[test]
fn an_already_failed_input_is_forwarded_at_once_and_leaves_no_timer() {
    let (reactor, clock) = get_clock();
    let error = Failure::new(ValueError("x"));
    let src = twisted_deferred::fail::<i32>(error.clone());
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    let forwarded = d.result().failure().expect("forwarded at once");
    assert!(Failure::ptr_eq(&forwarded, &error));
    assert!(consumed(&src));
    assert_eq!(reactor.delayed_call_count(), 0);
    handle(&d);
}

// ---------------------------------------------------------------------------
// 25. When the timer fires
// ---------------------------------------------------------------------------

// Synapse: TAH::TimeoutDeferredTest.test_times_out
#[test]
fn times_out() {
    let (reactor, clock) = get_clock();
    let cancelled = Rc::new(Cell::new(false));
    let c = cancelled.clone();
    let non_completing_d: Deferred<()> =
        Deferred::with_canceller(move |_d: &Deferred<()>| c.set(true));
    let timing_out_d = timeout_deferred(non_completing_d.clone(), 1.0, &clock);
    assert!(!timing_out_d.called());
    assert!(!cancelled.get(), "deferred was cancelled prematurely");
    reactor.pump(&[1.0]).unwrap();
    assert!(cancelled.get(), "deferred was not cancelled by timeout");
    assert_eq!(timed_out_after(&timing_out_d), Some(Some(1.0)));
    assert!(consumed(&non_completing_d));
    assert_eq!(reactor.delayed_call_count(), 0);
    handle(&timing_out_d);
}

// Synapse: semantics 2.3 #25 (Exp: "msg: FAIL TimeoutError('Timed out after 0.5s',)")
#[test]
fn the_timeout_error_carries_the_timeout() {
    let (reactor, clock) = get_clock();
    let src: Deferred<i32> = Deferred::new();
    let d = timeout_deferred(src, 0.5, &clock);
    reactor.advance(0.5).unwrap();
    let failure = d.result().failure().expect("timed out");
    assert_eq!(
        failure.downcast_ref::<TimeoutError>(),
        Some(&TimeoutError { timeout: Some(0.5) })
    );
    assert!(!failure.check::<CancelledError>());
    handle(&d);
}

// Synapse: semantics 2.3 #25 (Exp: "0.5: unfired []", "1: FAIL TimeoutError('Timed out after 1s',)
// [('canceller', 'sentinel')] src: None pending: 0")
#[test]
fn the_input_is_cancelled_once_when_the_timer_fires_in_the_sentinel_context() {
    let (reactor, clock) = get_clock();
    let cancels = new_log();
    let src: Deferred<i32> = recorded_cancel(&cancels);
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    let ((), errors) = capture_logcontext_errors(|| {
        reactor.advance(0.5).unwrap();
        assert!(!d.called());
        assert!(cancels.borrow().is_empty());
        reactor.advance(0.5).unwrap();
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*cancels.borrow(), ["sentinel"]);
    assert_eq!(timed_out_after(&d), Some(Some(1.0)));
    assert!(consumed(&src));
    reactor.advance(10.0).unwrap();
    assert_eq!(cancels.borrow().len(), 1);
    handle(&d);
}

// Synapse: TAH::TimeoutDeferredTest.test_times_out_when_canceller_throws; semantics 2.3 #25
// (Exp: "LOG ERROR synapse.util.async_helpers: Canceller failed during timeout", "advance ok",
// "d: FAIL TimeoutError('Timed out after 1s',) src: unfired")
#[test]
fn times_out_when_canceller_throws() {
    let (reactor, clock) = get_clock();
    let non_completing_d: Deferred<()> = Deferred::with_canceller(|_d: &Deferred<()>| {
        Err(Failure::msg("can't cancel this deferred"))
    });
    let timing_out_d = timeout_deferred(non_completing_d.clone(), 1.0, &clock);
    assert!(!timing_out_d.called());
    let (pumped, logs) = capture_logs(|| reactor.pump(&[1.0]));
    assert!(
        pumped.is_ok(),
        "the canceller's failure must not escape: {pumped:?}"
    );
    assert_eq!(timed_out_after(&timing_out_d), Some(Some(1.0)));
    assert!(!non_completing_d.called());
    let errors: Vec<&String> = logs
        .iter()
        .filter(|(level, _)| *level == log::Level::Error)
        .map(|(_, message)| message)
        .collect();
    assert_eq!(errors.len(), 1, "{logs:?}");
    assert!(
        errors[0].starts_with("Canceller failed during timeout"),
        "{logs:?}"
    );
    handle(&timing_out_d);
    non_completing_d.callback(()).unwrap();
}

// Synapse: semantics 2.3 #25, #29 (Exp: "after late callback: d: FAIL TimeoutError('Timed out
// after 1s',) src: None")
#[test]
fn after_a_throwing_canceller_a_late_result_of_the_input_is_consumed_and_ignored() {
    let (reactor, clock) = get_clock();
    let src: Deferred<&'static str> =
        Deferred::with_canceller(|_d: &Deferred<&'static str>| Err(Failure::msg("no")));
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    let (pumped, _logs) = capture_logs(|| reactor.advance(1.0));
    assert!(pumped.is_ok());
    src.callback("late").unwrap();
    assert_eq!(timed_out_after(&d), Some(Some(1.0)));
    assert!(consumed(&src));
    handle(&d);
}

// Synapse: semantics 2.3 #25 ("If the new Deferred *still* has not fired"; Exp with a paused
// input: "d: FAIL TimeoutError('Timed out after 1s',) src called: True", "after unpause src: None")
#[test]
fn a_paused_input_gets_the_new_deferred_timed_out_directly() {
    let (reactor, clock) = get_clock();
    let src: Deferred<i32> = Deferred::new();
    src.pause();
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    reactor.advance(1.0).unwrap();
    assert_eq!(timed_out_after(&d), Some(Some(1.0)));
    assert!(src.called());
    src.unpause();
    assert!(consumed(&src));
    assert_eq!(timed_out_after(&d), Some(Some(1.0)));
    handle(&d);
}

// Synapse: semantics 2.3 #25 (Exp: input waiting on a chained Deferred: "inner cancelled",
// "d: FAIL TimeoutError('Timed out after 1s',) src: None inner: None")
#[test]
fn the_cancel_reaches_a_deferred_the_input_is_waiting_on() {
    let (reactor, clock) = get_clock();
    let cancels = new_log();
    let inner: Deferred<i32> = recorded_cancel(&cancels);
    let src: Deferred<()> = Deferred::new();
    let waited = inner.clone();
    let src = src.add_callback(move |()| waited);
    src.cast::<()>().callback(()).unwrap();
    assert!(src.is_waiting());
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    reactor.advance(1.0).unwrap();
    assert_eq!(*cancels.borrow(), ["sentinel"]);
    assert_eq!(timed_out_after(&d), Some(Some(1.0)));
    assert!(consumed(&src));
    assert!(consumed(&inner));
    handle(&d);
}

// ---------------------------------------------------------------------------
// 26. The input's canceller wins
// ---------------------------------------------------------------------------

// Synapse: semantics 2.3 #26 (Exp: "value: 'cancelled-ok' src: None")
#[test]
fn a_canceller_value_wins_over_the_timeout() {
    let (reactor, clock) = get_clock();
    let src = Deferred::with_canceller(|x: &Deferred<&'static str>| x.callback("cancelled-ok"));
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    reactor.advance(1.0).unwrap();
    assert!(matches!(d.result(), State::Value("cancelled-ok")));
    assert!(consumed(&src));
    assert_eq!(reactor.delayed_call_count(), 0);
}

// Synapse: semantics 2.3 #26 (Exp: "failure: FAIL KeyError('k',) True")
#[test]
fn a_canceller_failure_other_than_cancelled_error_wins_over_the_timeout() {
    let (reactor, clock) = get_clock();
    let error = Failure::new(ValueError("k"));
    let raised = error.clone();
    let src = Deferred::with_canceller(move |x: &Deferred<i32>| x.errback(raised.clone()));
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    reactor.advance(1.0).unwrap();
    let failure = d.result().failure().expect("the canceller's failure");
    assert!(Failure::ptr_eq(&failure, &error));
    assert!(consumed(&src));
    handle(&d);
}

// Synapse: semantics 2.3 #25 (Exp: "CE from canceller: FAIL TimeoutError('Timed out after 1s',)")
#[test]
fn a_cancelled_error_from_the_canceller_itself_becomes_timeout_error() {
    let (reactor, clock) = get_clock();
    let src = Deferred::with_canceller(|x: &Deferred<i32>| x.errback(CancelledError));
    let d = timeout_deferred(src, 1.0, &clock);
    reactor.advance(1.0).unwrap();
    assert_eq!(timed_out_after(&d), Some(Some(1.0)));
    handle(&d);
}

// ---------------------------------------------------------------------------
// 27, 28. Cancellation by others
// ---------------------------------------------------------------------------

// Synapse: semantics 2.3 #27 (Exp: "d: FAIL CancelledError() pending: 0",
// "after 2s: FAIL CancelledError()")
#[test]
fn an_input_cancelled_by_someone_else_gives_cancelled_error_and_stops_the_timer() {
    let (reactor, clock) = get_clock();
    let src: Deferred<i32> = Deferred::new();
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    src.cancel().unwrap();
    assert!(holds_cancelled(&d));
    assert_eq!(timed_out_after(&d), None);
    assert_eq!(reactor.delayed_call_count(), 0);
    reactor.advance(2.0).unwrap();
    assert!(holds_cancelled(&d));
    assert!(consumed(&src));
    handle(&d);
}

// Synapse: semantics 2.3 #28 (Exp: "d: FAIL CancelledError() src: unfired canceller: [] pending: 1",
// "after timer: d: FAIL CancelledError() src: None canceller: ['cancelled'] pending: 0")
#[test]
fn cancelling_the_returned_deferred_leaves_the_input_and_the_timer_alone() {
    let (reactor, clock) = get_clock();
    let cancels = new_log();
    let src: Deferred<i32> = recorded_cancel(&cancels);
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    d.cancel().unwrap();
    assert!(holds_cancelled(&d));
    assert!(!src.called());
    assert!(cancels.borrow().is_empty());
    assert_eq!(reactor.delayed_call_count(), 1);
    reactor.advance(1.0).unwrap();
    assert_eq!(cancels.borrow().len(), 1);
    assert!(holds_cancelled(&d));
    assert!(consumed(&src));
    assert_eq!(reactor.delayed_call_count(), 0);
    handle(&d);
}

// Synapse: semantics 2.3 #28, #29 (Exp: "cancel then src fires: d: FAIL CancelledError() src: None
// pending: 0")
#[test]
fn after_the_returned_deferred_is_cancelled_the_inputs_result_is_consumed_and_ignored() {
    let (reactor, clock) = get_clock();
    let src: Deferred<i32> = Deferred::new();
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    d.cancel().unwrap();
    src.callback(5).unwrap();
    assert!(holds_cancelled(&d));
    assert!(consumed(&src));
    assert_eq!(reactor.delayed_call_count(), 0);
    handle(&d);
}

// ---------------------------------------------------------------------------
// 29. The input's result is consumed
// ---------------------------------------------------------------------------

// Synapse: semantics 2.3 #29 (Exp: "src: None" once forwarded; a consumed failure is not
// reported by the input)
#[test]
fn a_forwarded_failure_is_reported_only_by_the_new_deferred() {
    let (_reactor, clock) = get_clock();
    let error = Failure::new(ValueError("lost"));
    let ((), reports) = capture_unhandled_errors(|| {
        let src: Deferred<i32> = Deferred::new();
        let d = timeout_deferred(src.clone(), 1.0, &clock);
        src.errback(error.clone()).unwrap();
        assert!(consumed(&src));
        drop(src);
        drop(d);
    });
    assert_eq!(reports.len(), 1);
    assert!(Failure::ptr_eq(&reports[0], &error));

    let ((), reports) = capture_unhandled_errors(|| {
        let src: Deferred<i32> = Deferred::new();
        let d = timeout_deferred(src.clone(), 1.0, &clock);
        src.errback(ValueError("handled")).unwrap();
        handle(&d);
        drop(src);
        drop(d);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

// ---------------------------------------------------------------------------
// 30. Logging contexts
// ---------------------------------------------------------------------------

// Synapse: semantics 2.3 #30 (Exp: "after call: one", "after src fired: one ['sentinel'] 3")
#[test]
fn the_new_deferred_fires_in_the_sentinel_context_and_the_callers_context_is_unchanged() {
    let (_reactor, clock) = get_clock();
    let seen = new_log();
    let one = LoggingContext::new("one", HS);
    let ((), errors) = capture_logcontext_errors(|| {
        let _scope = one.entered();
        let src: Deferred<i32> = Deferred::new();
        let d = timeout_deferred(src.clone(), 1.0, &clock);
        assert_eq!(current_context(), one);
        record_context(&d, &seen);
        src.callback(3).unwrap();
        assert_eq!(current_context(), one);
        assert!(matches!(d.result(), State::Value(3)));
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["sentinel"]);
    assert_eq!(current_context(), SENTINEL_CONTEXT);
}

// Synapse: semantics 2.3 #30 (Exp: "on timeout: [('src-errback', 'sentinel'), ('new_d', 'sentinel')]
// now: sentinel")
#[test]
fn on_timeout_the_inputs_links_and_the_new_deferred_run_in_the_sentinel_context() {
    let (reactor, clock) = get_clock();
    let seen = new_log();
    let src: Deferred<i32> = Deferred::new();
    let s = seen.clone();
    src.add_passthrough(move || s.borrow_mut().push(format!("src: {}", current_context())));
    let d = timeout_deferred(src, 1.0, &clock);
    let s = seen.clone();
    d.add_passthrough(move || s.borrow_mut().push(format!("new_d: {}", current_context())));
    let ((), errors) = capture_logcontext_errors(|| reactor.advance(1.0).unwrap());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["src: sentinel", "new_d: sentinel"]);
    assert_eq!(current_context(), SENTINEL_CONTEXT);
    assert_eq!(timed_out_after(&d), Some(Some(1.0)));
    handle(&d);
}

// Synapse: TAH::TimeoutDeferredTest.test_logcontext_is_preserved_on_timeout_cancellation
#[test]
fn logcontext_is_preserved_on_timeout_cancellation() {
    let (reactor, clock) = get_clock();
    let ((), errors) = capture_logcontext_errors(|| {
        assert_eq!(current_context(), SENTINEL_CONTEXT);
        let was_cancelled = Rc::new(Cell::new(false));
        let w = was_cancelled.clone();
        let incomplete_d: Deferred<()> = Deferred::new();
        incomplete_d.add_errback(move |f: Failure| {
            if f.check::<CancelledError>() {
                w.set(true);
            }
            Err::<(), _>(f)
        });
        {
            let context_one = LoggingContext::new("one", HS);
            let _scope = context_one.entered();
            let timing_out_d = timeout_deferred(incomplete_d.clone(), 1.0, &clock);
            assert!(!timing_out_d.called());
            assert_eq!(current_context(), context_one);
            {
                let _preserve = PreserveLoggingContext::sentinel();
                reactor.pump(&[1.0]).unwrap();
            }
            assert!(was_cancelled.get(), "incomplete deferred was not cancelled");
            assert_eq!(timed_out_after(&timing_out_d), Some(Some(1.0)));
            assert_eq!(current_context(), context_one);
            handle(&timing_out_d);
        }
        assert_eq!(current_context(), SENTINEL_CONTEXT);
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: TAH::TimeoutDeferredTest.test_logcontext_is_not_lost_when_awaiting_on_timeout_cancellation;
// semantics 2.3 #30 (Exp: "[('after call', 'competing'), ('suspended', 'sentinel'),
// ('caught', 'competing'), ('after pump', 'sentinel')] FAIL TimeoutError('Timed out after 1s',) errs []")
#[test]
fn logcontext_is_not_lost_when_awaiting_on_timeout_cancellation() {
    let (reactor, clock) = get_clock();
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        assert_eq!(current_context(), SENTINEL_CONTEXT);
        let incomplete_d: Deferred<()> = Deferred::new();
        let (s, clock, incomplete) = (seen.clone(), clock.clone(), incomplete_d.clone());
        let d: Deferred<()> = ensure_deferred(async move {
            let competing = LoggingContext::new("competing", HS);
            let _scope = competing.entered();
            let timing_out_d = timeout_deferred(incomplete, 1.0, &clock);
            s.borrow_mut().push(format!(
                "after call: {} called={}",
                current_context(),
                timing_out_d.called()
            ));
            let outcome = make_deferred_yieldable(timing_out_d).await;
            let timeout = outcome
                .as_ref()
                .err()
                .and_then(|f| f.downcast_ref::<TimeoutError>())
                .map(|e| e.timeout);
            s.borrow_mut().push(format!(
                "resumed: {} timeout={timeout:?}",
                current_context()
            ));
            outcome
        });
        seen.borrow_mut()
            .push(format!("suspended: {}", current_context()));
        reactor.pump(&[1.0]).unwrap();
        seen.borrow_mut()
            .push(format!("after pump: {}", current_context()));
        assert_eq!(timed_out_after(&d), Some(Some(1.0)));
        assert_eq!(current_context(), SENTINEL_CONTEXT);
        handle(&d);
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        *seen.borrow(),
        [
            "after call: competing called=false",
            "suspended: sentinel",
            "resumed: competing timeout=Some(Some(1.0))",
            "after pump: sentinel",
        ]
    );
}

// Synapse: semantics 2.3 #30 (Exp: awaited through make_deferred_yieldable, the input fired:
// "[('suspended', 'sentinel'), ('ok', 'competing'), ('after fire', 'sentinel')] ok pending 0 errs []")
#[test]
fn a_value_awaited_through_make_deferred_yieldable_resumes_in_the_callers_context() {
    let (reactor, clock) = get_clock();
    let seen = new_log();
    let src: Deferred<&'static str> = Deferred::new();
    let ((), errors) = capture_logcontext_errors(|| {
        let (s, clock, input) = (seen.clone(), clock.clone(), src.clone());
        let d: Deferred<&'static str> = ensure_deferred(async move {
            let competing = LoggingContext::new("competing", HS);
            let _scope = competing.entered();
            let v = make_deferred_yieldable(timeout_deferred(input, 1.0, &clock)).await?;
            s.borrow_mut().push(format!("{v}: {}", current_context()));
            Ok(v)
        });
        seen.borrow_mut()
            .push(format!("suspended: {}", current_context()));
        src.callback("ok").unwrap();
        seen.borrow_mut()
            .push(format!("after fire: {}", current_context()));
        assert!(matches!(d.result(), State::Value("ok")));
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        *seen.borrow(),
        [
            "suspended: sentinel",
            "ok: competing",
            "after fire: sentinel"
        ]
    );
    assert_eq!(reactor.delayed_call_count(), 0);
}

// Synapse: semantics 2.3 #30 (Exp: the input fired by a producer in its own context:
// "[('ok2', 'competing'), ('producer after fire', 'producer')] ok2 []")
#[test]
fn a_producer_firing_the_input_keeps_its_own_context() {
    let (_reactor, clock) = get_clock();
    let seen = new_log();
    let src: Deferred<&'static str> = Deferred::new();
    let ((), errors) = capture_logcontext_errors(|| {
        let (s, clock, input) = (seen.clone(), clock.clone(), src.clone());
        let d: Deferred<&'static str> = ensure_deferred(async move {
            let competing = LoggingContext::new("competing", HS);
            let _scope = competing.entered();
            let v = make_deferred_yieldable(timeout_deferred(input, 1.0, &clock)).await?;
            s.borrow_mut().push(format!("{v}: {}", current_context()));
            Ok(v)
        });
        {
            let producer = LoggingContext::new("producer", HS);
            let _scope = producer.entered();
            src.callback("ok2").unwrap();
            seen.borrow_mut()
                .push(format!("producer after fire: {}", current_context()));
        }
        assert!(matches!(d.result(), State::Value("ok2")));
        assert_eq!(current_context(), SENTINEL_CONTEXT);
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        *seen.borrow(),
        ["ok2: competing", "producer after fire: producer"]
    );
}

// Synapse: semantics 2.3 #30 and Synapse's Clock.call_later assertion (Exp: advancing inside
// LoggingContext "x": "AssertionError Expected `call_later` callback from the reactor to start
// wit...", "unfired unfired []")
#[test]
fn the_timer_refuses_to_run_outside_the_sentinel_context() {
    let (reactor, clock) = get_clock();
    let src: Deferred<i32> = Deferred::new();
    let d = timeout_deferred(src.clone(), 1.0, &clock);
    let (advanced, errors) = capture_logcontext_errors(|| {
        let x = LoggingContext::new("x", HS);
        let _scope = x.entered();
        reactor.advance(1.0)
    });
    assert!(errors.is_empty(), "{errors:?}");
    let failure = advanced.expect_err("Synapse's Clock asserts the sentinel context");
    assert!(failure.check::<AssertionError>());
    assert!(!d.called());
    assert!(!src.called());
    src.callback(1).unwrap();
    assert!(matches!(d.result(), State::Value(1)));
}

// ---------------------------------------------------------------------------
// With deferLater
// ---------------------------------------------------------------------------

// Synapse: semantics 2.3 #25 (Exp: deferLater(r, 10) with timeout 5: "pending: [5.0, 10.0]",
// "FAIL TimeoutError('Timed out after 5s',) pending 0")
#[test]
fn a_defer_later_slower_than_the_timeout_is_cancelled() {
    let (reactor, clock) = get_clock();
    let called = Rc::new(Cell::new(false));
    let c = called.clone();
    let src = defer_later(&reactor, 10.0, move || {
        c.set(true);
        Ok("late")
    });
    let d = timeout_deferred(src, 5.0, &clock);
    let due: Vec<f64> = reactor
        .get_delayed_calls()
        .iter()
        .map(|call| call.get_time())
        .collect();
    assert_eq!(due, [5.0, 10.0]);
    reactor.advance(5.0).unwrap();
    assert_eq!(timed_out_after(&d), Some(Some(5.0)));
    assert_eq!(reactor.delayed_call_count(), 0);
    reactor.advance(10.0).unwrap();
    assert!(!called.get());
    handle(&d);
}

// Synapse: semantics 2.3 #24 (Exp: deferLater(r, 2) with timeout 5: "'early' pending 0")
#[test]
fn a_defer_later_faster_than_the_timeout_is_forwarded() {
    let (reactor, clock) = get_clock();
    let src = defer_later(&reactor, 2.0, || Ok("early"));
    let d = timeout_deferred(src, 5.0, &clock);
    reactor.advance(2.0).unwrap();
    assert!(matches!(d.result(), State::Value("early")));
    assert_eq!(reactor.delayed_call_count(), 0);
}
