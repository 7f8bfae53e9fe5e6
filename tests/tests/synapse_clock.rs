//! Synapse's `Clock.sleep`, `Clock.looping_call` and `Clock.looping_call_now`
//! (`twisted_compat::Clock`): behaviours 67 and 68 of
//! `synapse_semantics.md` (2.7). `Clock.call_later` is tested with the
//! other logging-context behaviours.
//!
//! Citations: `TLC` is Synapse's `tests/util/test_logcontext.py`;
//! "experiment" is a check run against Synapse 1.163.2.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use integration_tests::support::capture_logs;
use twisted_compat::{
    CancelledError, Clock, Deferred, Failure, LoggingContext, capture_logcontext_errors,
    current_context,
};
use twisted_deferred::{AssertionError, capture_unhandled_errors, ensure_deferred};
use twisted_reactor::{Clock as TestClock, LoopingCallError};

fn clocks() -> (TestClock, Clock) {
    let reactor = TestClock::new();
    let clock = Clock::new(reactor.clone(), "test_server");
    (reactor, clock)
}

// Synapse: TLC::LoggingContextTestCase.test_sleep (behaviour 67)
#[test]
fn clock_sleep_waits_in_the_sentinel_and_resumes_in_the_callers_context() {
    let ((), errors) = capture_logcontext_errors(|| {
        let reactor = TestClock::new();
        let clock = Clock::new(reactor.clone(), "test");
        let seen: Rc<RefCell<Vec<String>>> = Rc::default();
        let (c, s) = (clock.clone(), seen.clone());
        let d = ensure_deferred(async move {
            let ctx = LoggingContext::new("one", "test");
            let _scope = ctx.entered();
            c.sleep(0.0).await?;
            s.borrow_mut().push(current_context().to_string());
            Ok::<_, Failure>(())
        });
        assert!(current_context().is_sentinel());
        assert!(!d.called(), "even a zero sleep goes through the reactor");
        reactor.advance(0.0).unwrap();
        assert_eq!(*seen.borrow(), ["one"]);
        assert!(d.called());
        assert!(current_context().is_sentinel());
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: experiment (behaviour 67: cancelling a sleep)
#[test]
fn a_cancelled_clock_sleep_fails_at_once_and_its_wake_up_is_ignored() {
    let reactor = TestClock::new();
    let clock = Clock::new(reactor.clone(), "test");
    let c = clock.clone();
    let d = ensure_deferred(async move { c.sleep(5.0).await });
    assert_eq!(reactor.delayed_call_count(), 1);
    d.cancel().unwrap();
    assert!(d.result().failure().unwrap().check::<CancelledError>());
    assert_eq!(reactor.delayed_call_count(), 1, "the timer stays scheduled");
    reactor.advance(5.0).unwrap();
    assert_eq!(reactor.delayed_call_count(), 0);
    d.add_errback(|_| Ok(()));
}

/// `TLC`'s `competing_callback`: checks it starts in `looping_call`, sleeps
/// in a context of its own, and is back in `looping_call` afterwards.
fn competing_callback(
    clock: &Clock,
    seen: &Rc<RefCell<Vec<String>>>,
) -> impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Failure>>>> + 'static
{
    let (clock, seen) = (clock.clone(), seen.clone());
    move || {
        let (clock, seen) = (clock.clone(), seen.clone());
        Box::pin(async move {
            seen.borrow_mut()
                .push(format!("start {}", current_context()));
            {
                let competing = LoggingContext::new("competing", "test_server");
                let _scope = competing.entered();
                clock.sleep(0.0).await?;
                seen.borrow_mut()
                    .push(format!("after sleep {}", current_context()));
            }
            seen.borrow_mut().push(format!("end {}", current_context()));
            Ok(())
        })
    }
}

// Synapse: TLC::LoggingContextTestCase.test_looping_call (with a 1 s
// interval: an interval of 0 on a deterministic clock would run forever)
#[test]
fn looping_call_runs_each_call_in_a_looping_call_context_and_leaves_the_sentinel() {
    let ((), errors) = capture_logcontext_errors(|| {
        let (reactor, clock) = clocks();
        let seen: Rc<RefCell<Vec<String>>> = Rc::default();
        let call = {
            let foo = LoggingContext::new("foo", "test_server");
            let _scope = foo.entered();
            let call = clock
                .looping_call(competing_callback(&clock, &seen), 1.0)
                .unwrap();
            assert_eq!(current_context(), foo, "the caller keeps its context");
            assert!(
                seen.borrow().is_empty(),
                "the first call is one interval away"
            );
            call
        };
        assert!(current_context().is_sentinel());
        reactor.advance(1.0).unwrap();
        assert!(
            current_context().is_sentinel(),
            "nothing leaked into the reactor"
        );
        reactor.advance(0.0).unwrap();
        assert_eq!(
            *seen.borrow(),
            [
                "start looping_call",
                "after sleep competing",
                "end looping_call"
            ]
        );
        assert!(current_context().is_sentinel());
        call.stop().unwrap();
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: TLC::LoggingContextTestCase.test_looping_call_now
#[test]
fn looping_call_now_makes_the_first_call_at_once_in_a_looping_call_context() {
    let ((), errors) = capture_logcontext_errors(|| {
        let (reactor, clock) = clocks();
        let seen: Rc<RefCell<Vec<String>>> = Rc::default();
        let call = {
            let foo = LoggingContext::new("foo", "test_server");
            let _scope = foo.entered();
            let call = clock
                .looping_call_now(competing_callback(&clock, &seen), 1.0)
                .unwrap();
            assert_eq!(*seen.borrow(), ["start looping_call"], "called at once");
            assert_eq!(current_context(), foo, "the caller keeps its context");
            call
        };
        reactor.advance(0.0).unwrap();
        assert_eq!(
            *seen.borrow(),
            [
                "start looping_call",
                "after sleep competing",
                "end looping_call"
            ]
        );
        assert!(current_context().is_sentinel());
        call.stop().unwrap();
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: code (`LoopingCall` waits for the awaitable `f` returned)
#[test]
fn a_pending_call_holds_back_the_next_one() {
    let (reactor, clock) = clocks();
    let calls = Rc::new(Cell::new(0));
    let gate: Rc<RefCell<Option<Deferred<()>>>> = Rc::default();
    let (n, g) = (calls.clone(), gate.clone());
    let call = clock
        .looping_call(
            move || {
                n.set(n.get() + 1);
                let d: Deferred<()> = Deferred::new();
                *g.borrow_mut() = Some(d.clone());
                d
            },
            1.0,
        )
        .unwrap();
    reactor.advance(1.0).unwrap();
    assert_eq!(calls.get(), 1);
    reactor.advance(5.0).unwrap();
    assert_eq!(calls.get(), 1, "the first call's Deferred is pending");
    let pending = gate.borrow_mut().take().unwrap();
    pending.callback(()).unwrap();
    reactor.advance(1.0).unwrap();
    assert_eq!(calls.get(), 2);
    call.stop().unwrap();
    let last = gate.borrow_mut().take().unwrap();
    last.callback(()).unwrap();
}

// Synapse: code (the assertion that the reactor calls in the sentinel
// context; a failed loop is logged as "Looping call died")
#[test]
fn a_looping_call_run_from_a_leaked_context_dies_with_an_assertion_error() {
    let (((), unhandled), logs) = capture_logs(|| {
        capture_unhandled_errors(|| {
            let (reactor, clock) = clocks();
            let calls = Rc::new(Cell::new(0));
            let n = calls.clone();
            let call = clock
                .looping_call(
                    move || {
                        n.set(n.get() + 1);
                        Ok::<_, Failure>(())
                    },
                    1.0,
                )
                .unwrap();
            {
                let leaked = LoggingContext::new("leaked", "test_server");
                let _scope = leaked.entered();
                reactor.advance(1.0).unwrap();
            }
            assert_eq!(calls.get(), 0, "the function never ran");
            assert!(!call.running(), "the loop died");
            reactor.advance(5.0).unwrap();
            assert_eq!(calls.get(), 0);
        })
    });
    assert!(
        logs.iter()
            .any(|(level, m)| *level == log::Level::Error && m.starts_with("Looping call died"))
    );
    assert_eq!(unhandled.len(), 1, "{unhandled:?}");
    assert!(unhandled[0].check::<AssertionError>());
}

// Synapse: code (Python's `LoopingCall.start` raises ValueError)
#[test]
fn a_negative_interval_is_refused() {
    let (reactor, clock) = clocks();
    let err = clock
        .looping_call(|| Ok::<_, Failure>(()), -1.0)
        .unwrap_err();
    assert_eq!(err, LoopingCallError::NegativeInterval);
    assert_eq!(reactor.delayed_call_count(), 0);
}
