//! Synapse's `DeferredEvent` (`twisted_compat::event`): behaviour 65 of
//! `synapse_semantics.md` (2.7). Synapse has no upstream test for it;
//! "experiment" is a check run against Synapse 1.163.2 (the expected
//! values below are what it printed).

use std::cell::RefCell;
use std::rc::Rc;

use twisted_compat::{
    CancelledError, Clock, Deferred, DeferredEvent, LoggingContext, capture_logcontext_errors,
    current_context,
};
use twisted_deferred::ensure_deferred;
use twisted_reactor::Clock as TestClock;

fn setup() -> (TestClock, DeferredEvent) {
    let reactor = TestClock::new();
    let clock = Clock::new(reactor.clone(), "test");
    (reactor, DeferredEvent::new(&clock))
}

/// `defer.ensureDeferred(event.wait(timeout))`.
fn wait(event: &DeferredEvent, timeout: f64) -> Deferred<bool> {
    let e = event.clone();
    ensure_deferred(async move { e.wait(timeout).await })
}

// Synapse: experiment (behaviour 65)
#[test]
fn set_wakes_every_waiter_and_a_timeout_gives_false() {
    let ((), errors) = capture_logcontext_errors(|| {
        let (reactor, event) = setup();
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let waiter = |who: &'static str, timeout: f64| {
            let (e, log) = (event.clone(), log.clone());
            ensure_deferred(async move {
                let ctx = LoggingContext::new(who, "hs");
                let _scope = ctx.entered();
                match e.wait(timeout).await {
                    Ok(res) => {
                        log.borrow_mut()
                            .push(format!("{who} wait -> {res} {}", current_context()));
                        Ok(res)
                    }
                    Err(f) => {
                        if f.check::<CancelledError>() {
                            log.borrow_mut()
                                .push(format!("{who} CE {}", current_context()));
                        }
                        Err(f)
                    }
                }
            })
        };
        let e1 = waiter("E1", 1.0);
        let e2 = waiter("E2", 5.0);
        let e3 = waiter("E3", 5.0);
        assert!(current_context().is_sentinel());
        e3.cancel().unwrap();
        reactor.advance(1.0).unwrap();
        log.borrow_mut()
            .push(format!("after 1s {} {}", event.is_set(), current_context()));
        event.set();
        log.borrow_mut()
            .push(format!("set {} {}", event.is_set(), current_context()));
        let e4 = waiter("E4", 1.0);
        event.clear();
        event.clear();
        let e5 = waiter("E5", 1.0);
        event.set();
        event.set();
        reactor.advance(10.0).unwrap();
        assert_eq!(
            *log.borrow(),
            [
                "E3 CE E3",
                "E1 wait -> false E1",
                "after 1s false sentinel",
                "E2 wait -> true E2",
                "set true sentinel",
                "E4 wait -> true E4",
                "E5 wait -> true E5",
            ]
        );
        assert_eq!(e1.result().value(), Some(false));
        for e in [&e2, &e4, &e5] {
            assert_eq!(e.result().value(), Some(true));
        }
        assert!(e3.result().failure().unwrap().check::<CancelledError>());
        e3.add_errback(|_| Ok(false));
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: experiment (behaviour 65: wait on a set event)
#[test]
fn wait_on_a_set_event_returns_true_at_once() {
    let (reactor, event) = setup();
    event.set();
    let d = wait(&event, 1.0);
    assert_eq!(d.result().value(), Some(true));
    assert_eq!(reactor.delayed_call_count(), 0, "no timer was started");
}

// Synapse: experiment (behaviour 65: set is idempotent, clear acts only on
// a set event)
#[test]
fn set_is_idempotent_and_clear_only_resets_a_set_event() {
    let (reactor, event) = setup();
    assert!(!event.is_set());
    let before = wait(&event, 10.0);
    event.clear();
    assert!(!event.is_set());
    event.set();
    assert_eq!(
        before.result().value(),
        Some(true),
        "clear on an unset event changed nothing"
    );
    event.set();
    assert!(event.is_set());
    event.clear();
    assert!(!event.is_set());
    let after = wait(&event, 2.0);
    assert!(!after.called());
    reactor.advance(2.0).unwrap();
    assert_eq!(after.result().value(), Some(false));
}

// Synapse: experiment (behaviour 65: clear installs a fresh Deferred)
#[test]
fn a_cleared_event_makes_new_waiters_wait_for_the_next_set() {
    let (reactor, event) = setup();
    event.set();
    event.clear();
    let d = wait(&event, 3.0);
    event.set();
    assert_eq!(d.result().value(), Some(true));
    reactor.advance(3.0).unwrap();
    assert_eq!(reactor.delayed_call_count(), 0);
}

// Synapse: experiment (behaviour 65: cancelling wait propagates
// CancelledError; the event is untouched)
#[test]
fn cancelling_a_wait_propagates_cancelled_error() {
    let (reactor, event) = setup();
    let d = wait(&event, 5.0);
    d.cancel().unwrap();
    assert!(d.result().failure().unwrap().check::<CancelledError>());
    assert!(!event.is_set());
    let other = wait(&event, 5.0);
    event.set();
    assert_eq!(other.result().value(), Some(true));
    reactor.advance(5.0).unwrap();
    d.add_errback(|_| Ok(false));
}
