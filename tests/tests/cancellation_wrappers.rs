//! Synapse's `stop_cancellation` and `delay_cancellation`
//! (`twisted_compat::cancellation`): behaviours 13–23 of
//! `synapse_semantics.md` (2.2). Behaviour 16 (stop_cancellation ignores
//! logging contexts) and 22 (delay_cancellation follows them when the source
//! does) belong to the logging-context tests; the part of 22 that does not
//! involve contexts (the delayed CancelledError arrives inside the source's
//! callback run) is tested here.
//!
//! Citations: `TAH` is Synapse's `tests/util/test_async_helpers.py`
//! (`CancellationWrapperTests_0_stop_cancellation` /
//! `CancellationWrapperTests_1_delay_cancellation` are its parameterized
//! classes); "experiment (item N)" is a check run against Synapse 1.163.2.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use twisted_compat::{
    AlreadyCalledError, CancelledError, Deferred, Failure, delay_cancellation,
    delay_cancellation_coroutine, stop_cancellation,
};
use twisted_deferred::{AnyValue, State, capture_unhandled_errors, ensure_deferred, succeed};

/// The two wrappers, for the tests they share (Synapse's
/// `CancellationWrapperTests`, parameterized the same way).
type Wrapper = fn(&Deferred<String>) -> Deferred<String>;

const WRAPPERS: [(&str, Wrapper); 2] = [
    ("stop_cancellation", stop_cancellation::<String>),
    ("delay_cancellation", delay_cancellation::<String>),
];

/// True when `d` holds a `CancelledError` failure.
fn holds_cancelled_error<T: Clone + 'static>(d: &Deferred<T>) -> bool {
    d.result()
        .failure()
        .is_some_and(|f| f.check::<CancelledError>())
}

/// Handles whatever failure `d` holds, so that dropping it reports nothing.
fn handle<T: 'static>(d: &Deferred<T>) {
    d.cast::<()>().add_errback(|_| Ok(()));
}

/// A Deferred whose canceller records that it ran.
fn cancellable() -> (Deferred<String>, Rc<Cell<bool>>) {
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let d = Deferred::with_canceller(move |_d: &Deferred<String>| r.set(true));
    (d, ran)
}

/// A flag set once a callback added to `d` has run (Twisted's
/// `assertNoResult` adds such a callback).
fn has_result<T: 'static>(d: &Deferred<T>) -> Rc<Cell<bool>> {
    let seen = Rc::new(Cell::new(false));
    let s = seen.clone();
    d.cast::<AnyValue>()
        .add_both(move |r: Result<AnyValue, Failure>| {
            s.set(true);
            r
        });
    seen
}

#[derive(Debug)]
struct ValueError(&'static str);

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ValueError {}

// ---------------------------------------------------------------------------
// 13. Common wrapping

// Synapse: TAH::CancellationWrapperTests_0_stop_cancellation.test_succeed,
// TAH::CancellationWrapperTests_1_delay_cancellation.test_succeed
#[test]
fn the_wrapper_receives_the_source_value() {
    for (name, wrap) in WRAPPERS {
        let deferred: Deferred<String> = Deferred::new();
        let wrapper = wrap(&deferred);
        assert!(!wrapper.ptr_eq(&deferred), "{name}");
        deferred.callback("success".into()).unwrap();
        assert!(wrapper.called(), "{name}");
        assert_eq!(
            wrapper.result().value().as_deref(),
            Some("success"),
            "{name}"
        );
        // Chaining consumed the source's value.
        assert_eq!(deferred.cast::<()>().result().value(), Some(()), "{name}");
    }
}

// Synapse: TAH::CancellationWrapperTests_0_stop_cancellation.test_failure,
// TAH::CancellationWrapperTests_1_delay_cancellation.test_failure
#[test]
fn the_wrapper_receives_the_source_failure_and_the_source_keeps_none() {
    for (name, wrap) in WRAPPERS {
        let ((), reports) = capture_unhandled_errors(|| {
            let deferred: Deferred<String> = Deferred::new();
            let wrapper = wrap(&deferred);
            deferred.errback(ValueError("abc")).unwrap();
            assert!(wrapper.called(), "{name}");
            assert!(
                wrapper.result().failure().unwrap().check::<ValueError>(),
                "{name}"
            );
            assert_eq!(
                deferred.cast::<()>().result().value(),
                Some(()),
                "`Failure` was not consumed"
            );
        });
        // Reported once, by the wrapper; the source's failure was consumed.
        assert_eq!(reports.len(), 1, "{name}");
        assert!(reports[0].check::<ValueError>(), "{name}");
    }
}

// Synapse: experiment (item 13)
#[test]
fn wrapping_a_fired_source_forwards_at_once() {
    for (name, wrap) in WRAPPERS {
        let deferred = succeed("early".to_owned());
        let wrapper = wrap(&deferred);
        assert_eq!(wrapper.result().value().as_deref(), Some("early"), "{name}");
        // Cancelling after the source fired does nothing (items 14, 21).
        wrapper.cancel().unwrap();
        assert_eq!(wrapper.result().value().as_deref(), Some("early"), "{name}");
        assert_eq!(wrapper.paused(), 0, "{name}");
    }
}

// ---------------------------------------------------------------------------
// 14, 15. stop_cancellation

// Synapse: TAH::StopCancellationTests.test_cancellation
#[test]
fn stop_cancellation_fails_the_wrapper_at_once_and_leaves_the_source_running() {
    let ((), reports) = capture_unhandled_errors(|| {
        let (deferred, cancelled) = cancellable();
        let wrapper = stop_cancellation(&deferred);
        wrapper.cancel().unwrap();
        assert!(wrapper.called());
        assert!(holds_cancelled_error(&wrapper));
        assert!(
            !deferred.called(),
            "Original `Deferred` was unexpectedly cancelled"
        );
        assert!(!cancelled.get());
        // Now make the original fail: the failure is consumed, silently.
        deferred.errback(ValueError("abc")).unwrap();
        assert_eq!(
            deferred.cast::<()>().result().value(),
            Some(()),
            "`Failure` was not consumed"
        );
        assert!(holds_cancelled_error(&wrapper));
        handle(&wrapper);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

// Synapse: experiment (item 14)
#[test]
fn stop_cancellation_drops_a_late_source_value() {
    let deferred: Deferred<String> = Deferred::new();
    let wrapper = stop_cancellation(&deferred);
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    deferred
        .cast::<()>()
        .add_both(move |r: Result<(), Failure>| {
            l.borrow_mut().push(r.is_ok());
            r
        });
    wrapper.cancel().unwrap();
    deferred.callback("late".into()).unwrap();
    // The wrapper swallowed the callback (no canceller: Twisted's one-shot
    // suppression); the source's chain goes on with None.
    assert_eq!(*log.borrow(), [true]);
    assert!(holds_cancelled_error(&wrapper));
    handle(&wrapper);
}

// Synapse: experiment (item 15)
#[test]
fn stop_cancellation_on_a_shared_source_gives_the_value_to_the_first_wrapper_only() {
    let source: Deferred<String> = Deferred::new();
    let w1 = stop_cancellation(&source);
    let w2 = stop_cancellation(&source);
    source.callback("value".into()).unwrap();
    assert_eq!(w1.result().value().as_deref(), Some("value"));
    assert_eq!(w2.cast::<()>().result().value(), Some(()));
    assert_eq!(source.cast::<()>().result().value(), Some(()));
}

// Synapse: experiment (item 15), the ReadWriteLock use: a Deferred<()>
#[test]
fn stop_cancellation_on_a_shared_unit_source_lets_each_waiter_cancel_alone() {
    let ((), reports) = capture_unhandled_errors(|| {
        let source: Deferred<()> = Deferred::new();
        let waiters: Vec<Deferred<()>> = (0..3).map(|_| stop_cancellation(&source)).collect();
        waiters[1].cancel().unwrap();
        assert!(!source.called());
        assert!(!waiters[0].called() && !waiters[2].called());
        source.callback(()).unwrap();
        assert_eq!(waiters[0].result().value(), Some(()));
        assert!(holds_cancelled_error(&waiters[1]));
        assert_eq!(waiters[2].result().value(), Some(()));
        handle(&waiters[1]);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

// ---------------------------------------------------------------------------
// 17. delay_cancellation input types

// Synapse: experiment (item 17)
#[test]
fn delay_cancellation_of_a_deferred_wraps_that_deferred() {
    let source: Deferred<String> = Deferred::new();
    let wrapper = delay_cancellation(&source);
    assert!(!wrapper.ptr_eq(&source));
    assert!(!wrapper.called());
    source.callback("x".into()).unwrap();
    assert_eq!(wrapper.result().value().as_deref(), Some("x"));
}

// Synapse: experiment (item 17)
#[test]
fn delay_cancellation_of_a_coroutine_starts_it_at_once() {
    let started = Rc::new(Cell::new(false));
    let s = started.clone();
    let blocking: Deferred<i32> = Deferred::new();
    let b = blocking.clone();
    let wrapper = delay_cancellation_coroutine(async move {
        s.set(true);
        Ok::<_, Failure>(b.await? + 1)
    });
    assert!(started.get(), "the coroutine did not start synchronously");
    assert!(!wrapper.called());
    blocking.callback(1).unwrap();
    assert_eq!(wrapper.result().value(), Some(2));
}

// Synapse: experiment (item 17)
#[test]
fn delay_cancellation_of_a_coroutine_that_finishes_at_once_is_fired() {
    let wrapper = delay_cancellation_coroutine(async { Ok::<_, Failure>(5) });
    assert_eq!(wrapper.result().value(), Some(5));
}

// ---------------------------------------------------------------------------
// 18. delay_cancellation, wrapper cancelled before the source resolves

// Synapse: TAH::DelayCancellationTests.test_deferred_cancellation
#[test]
fn delay_cancellation_waits_for_the_source_before_failing() {
    let ((), reports) = capture_unhandled_errors(|| {
        let (deferred, cancelled) = cancellable();
        let wrapper = delay_cancellation(&deferred);
        wrapper.cancel().unwrap();
        let fired = has_result(&wrapper);
        assert!(!fired.get(), "the wrapper has a result already");
        assert!(
            !deferred.called(),
            "Original `Deferred` was unexpectedly cancelled"
        );
        assert!(!cancelled.get());
        // Now make the original fail: its failure is consumed.
        deferred.errback(ValueError("abc")).unwrap();
        assert_eq!(
            deferred.cast::<()>().result().value(),
            Some(()),
            "`Failure` was not consumed"
        );
        assert!(fired.get());
        // Not the source's ValueError: a CancelledError.
        assert!(holds_cancelled_error(&wrapper));
        handle(&wrapper);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

// Synapse: experiment (item 18)
#[test]
fn delay_cancellation_delivers_cancelled_error_even_when_the_source_succeeds() {
    let deferred: Deferred<String> = Deferred::new();
    let wrapper = delay_cancellation(&deferred);
    wrapper.cancel().unwrap();
    deferred.callback("never seen".into()).unwrap();
    assert!(holds_cancelled_error(&wrapper));
    assert_eq!(deferred.cast::<()>().result().value(), Some(()));
    handle(&wrapper);
}

// Synapse: TAH::DelayCancellationTests.test_coroutine_cancellation
#[test]
fn delay_cancellation_of_a_coroutine_does_not_cancel_it() {
    let ((), reports) = capture_unhandled_errors(|| {
        let blocking: Deferred<()> = Deferred::new();
        let completion: Deferred<()> = Deferred::new();
        let (b, c) = (blocking.clone(), completion.clone());
        let wrapper = delay_cancellation_coroutine(async move {
            b.await?;
            c.callback(())?;
            // The coroutine's failure must be consumed.
            Err::<(), Failure>(Failure::new(ValueError("abc")))
        });
        wrapper.cancel().unwrap();
        let fired = has_result(&wrapper);
        assert!(!fired.get());
        assert!(!blocking.called(), "Cancellation was propagated too deep");
        assert!(!completion.called());
        // Unblock the task.
        blocking.callback(()).unwrap();
        assert!(completion.called());
        assert!(fired.get());
        assert!(holds_cancelled_error(&wrapper));
        handle(&wrapper);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

// Synapse: experiment (items 18, 22): the CancelledError comes out while the
// source is firing, inside its callback run
#[test]
fn a_coroutine_awaiting_a_cancelled_delayed_wrapper_resumes_when_the_source_fires() {
    let blocking: Deferred<i32> = Deferred::new();
    let wrapper = delay_cancellation(&blocking);
    let w = wrapper.clone();
    let caught = Rc::new(Cell::new(false));
    let c = caught.clone();
    let outer: Deferred<&str> = ensure_deferred(async move {
        match w.await {
            Ok(_) => Ok("not cancelled"),
            Err(f) => {
                c.set(f.check::<CancelledError>());
                Ok("caught")
            }
        }
    });
    outer.cancel().unwrap();
    // Twisted: the coroutine's Deferred now waits on a fresh one, and the
    // coroutine is still suspended on the (delayed) wrapper.
    assert!(matches!(outer.result(), State::Waiting(_)));
    assert!(!caught.get());
    let resumed_inside = Rc::new(Cell::new(false));
    let (r, c2) = (resumed_inside.clone(), caught.clone());
    // A callback of the source added after the cancel runs after the
    // wrapper's release: the coroutine has resumed by then.
    blocking
        .cast::<()>()
        .add_both(move |_: Result<(), Failure>| {
            r.set(c2.get());
            Ok(())
        });
    blocking.callback(1).unwrap();
    assert!(resumed_inside.get());
    assert!(caught.get());
    assert_eq!(outer.result().value(), Some("caught"));
}

// ---------------------------------------------------------------------------
// 19, 20, 21

// Synapse: TAH::DelayCancellationTests.test_suppresses_second_cancellation
#[test]
fn a_second_cancel_of_a_delayed_wrapper_does_nothing() {
    let ((), reports) = capture_unhandled_errors(|| {
        let (deferred, cancelled) = cancellable();
        let wrapper = delay_cancellation(&deferred);
        wrapper.cancel().unwrap();
        wrapper.cancel().unwrap();
        assert_eq!(wrapper.paused(), 1);
        let fired = has_result(&wrapper);
        assert!(!fired.get());
        assert!(
            !deferred.called(),
            "Original `Deferred` was unexpectedly cancelled"
        );
        assert!(!cancelled.get());
        deferred.errback(ValueError("abc")).unwrap();
        assert_eq!(
            deferred.cast::<()>().result().value(),
            Some(()),
            "`Failure` was not consumed"
        );
        assert!(fired.get());
        assert!(holds_cancelled_error(&wrapper));
        handle(&wrapper);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

// Synapse: TAH::DelayCancellationTests.test_propagates_cancelled_error
#[test]
fn a_cancelled_error_of_the_source_reaches_the_wrapper_as_the_same_failure() {
    let deferred: Deferred<String> = Deferred::new();
    let wrapper = delay_cancellation(&deferred);
    let cancelled_error = Failure::new(CancelledError);
    deferred.errback(cancelled_error.clone()).unwrap();
    assert!(wrapper.called());
    assert!(Failure::ptr_eq(
        &cancelled_error,
        &wrapper.result().failure().unwrap()
    ));
    handle(&wrapper);
}

// Synapse: experiment (item 20): the source cancelled by someone else
#[test]
fn cancelling_the_source_itself_fails_the_wrapper_at_once() {
    let (deferred, cancelled) = cancellable();
    let wrapper = delay_cancellation(&deferred);
    deferred.cancel().unwrap();
    assert!(cancelled.get());
    assert!(holds_cancelled_error(&wrapper));
    assert_eq!(wrapper.paused(), 0);
    handle(&wrapper);
}

// Synapse: experiment (item 21)
#[test]
fn cancelling_a_delayed_wrapper_after_the_source_fired_does_nothing() {
    let ((), reports) = capture_unhandled_errors(|| {
        let deferred: Deferred<String> = Deferred::new();
        let wrapper = delay_cancellation(&deferred);
        deferred.callback("kept".into()).unwrap();
        wrapper.cancel().unwrap();
        assert_eq!(wrapper.result().value().as_deref(), Some("kept"));
        assert_eq!(wrapper.paused(), 0);

        let failing: Deferred<String> = Deferred::new();
        let w2 = delay_cancellation(&failing);
        failing.errback(ValueError("kept too")).unwrap();
        w2.cancel().unwrap();
        assert!(w2.result().failure().unwrap().check::<ValueError>());
        handle(&w2);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

// ---------------------------------------------------------------------------
// 23. Twisted mechanics of delay_cancellation

// Synapse: experiment (item 23)
#[test]
fn a_cancelled_delayed_wrapper_is_called_and_paused_until_the_source_fires() {
    let deferred: Deferred<String> = Deferred::new();
    let wrapper = delay_cancellation(&deferred);
    assert!(!wrapper.called());
    wrapper.cancel().unwrap();
    assert!(wrapper.called());
    assert_eq!(wrapper.paused(), 1);
    // Its result is already the CancelledError, held back by the pause.
    assert!(holds_cancelled_error(&wrapper));
    deferred.callback("x".into()).unwrap();
    assert_eq!(wrapper.paused(), 0);
    assert!(holds_cancelled_error(&wrapper));
    handle(&wrapper);
}

// Synapse: experiment (item 23)
#[test]
fn source_callbacks_between_wrapping_and_cancel_see_the_swallowed_already_called_error() {
    let ((), reports) = capture_unhandled_errors(|| {
        let deferred: Deferred<String> = Deferred::new();
        let wrapper = delay_cancellation(&deferred);
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        // Added before the cancel: runs before the unpause hook.
        deferred.cast::<()>().add_errback(move |f: Failure| {
            s.borrow_mut()
                .push(format!("before: {}", f.check::<AlreadyCalledError>()));
            Err(f)
        });
        wrapper.cancel().unwrap();
        let s = seen.clone();
        // Added after the cancel: runs after it, on None.
        deferred
            .cast::<()>()
            .add_both(move |r: Result<(), Failure>| {
                s.borrow_mut().push(format!("after: {}", r.is_ok()));
                r
            });
        deferred.callback("x".into()).unwrap();
        assert_eq!(*seen.borrow(), ["before: true", "after: true"]);
        assert_eq!(deferred.cast::<()>().result().value(), Some(()));
        handle(&wrapper);
    });
    // The AlreadyCalledError was swallowed by the unpause hook.
    assert!(reports.is_empty(), "{reports:?}");
}

// Synapse: experiment (item 23)
#[test]
fn a_delayed_wrapper_of_a_paused_source_is_released_on_unpause() {
    let deferred: Deferred<String> = Deferred::new();
    let wrapper = delay_cancellation(&deferred);
    deferred.pause();
    deferred.callback("held".into()).unwrap();
    assert!(!wrapper.called());
    wrapper.cancel().unwrap();
    assert!(wrapper.called());
    assert_eq!(wrapper.paused(), 1);
    deferred.unpause();
    assert_eq!(wrapper.paused(), 0);
    assert!(holds_cancelled_error(&wrapper));
    assert_eq!(deferred.cast::<()>().result().value(), Some(()));
    handle(&wrapper);
}

// Synapse: experiment (item 23); typed port: the hook takes a result of any type
#[test]
fn a_delayed_wrapper_is_released_whatever_the_source_holds_then() {
    let deferred: Deferred<i32> = Deferred::new();
    let wrapper = delay_cancellation(&deferred);
    // A callback between wrapping and cancel turns the AlreadyCalledError
    // into a value of another type.
    deferred.cast::<()>().add_errback(|_| Ok(()));
    let deferred = deferred
        .cast::<()>()
        .add_callback(|()| Ok(String::from("other type")));
    wrapper.cancel().unwrap();
    deferred.cast::<i32>().callback(1).unwrap();
    assert_eq!(wrapper.paused(), 0);
    assert!(holds_cancelled_error(&wrapper));
    handle(&wrapper);
}
