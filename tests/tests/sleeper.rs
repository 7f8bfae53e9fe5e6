//! Synapse's `AwakenableSleeper` (`twisted_compat::sleeper`): behaviours
//! 63 and 64 of `synapse_semantics.md` (2.7). `Clock.sleep`, which it does
//! not use, is tested in `synapse_clock.rs`.
//!
//! Citations: `TAH` is Synapse's `tests/util/test_async_helpers.py`;
//! "experiment" is a check run against Synapse 1.163.2 (the expected values
//! below are what it printed).

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use twisted_compat::{
    AwakenableSleeper, CancelledError, Clock, Deferred, LoggingContext, capture_logcontext_errors,
    current_context,
};
use twisted_deferred::ensure_deferred;
use twisted_reactor::Clock as TestClock;

fn setup() -> (TestClock, Clock, AwakenableSleeper) {
    let reactor = TestClock::new();
    let clock = Clock::new(reactor.clone(), "test");
    let sleeper = AwakenableSleeper::new(&clock);
    (reactor, clock, sleeper)
}

/// `defer.ensureDeferred(sleeper.sleep(name, ms))`.
fn sleep(sleeper: &AwakenableSleeper, name: &'static str, ms: u64) -> Deferred<()> {
    let s = sleeper.clone();
    ensure_deferred(async move { s.sleep(name, ms).await })
}

// Synapse: TAH::AwakenableSleeperTests.test_sleep
#[test]
fn a_sleep_returns_after_its_delay() {
    let (reactor, _clock, sleeper) = setup();
    let d = sleep(&sleeper, "name", 1000);
    reactor.pump(&[0.0]).unwrap();
    assert!(!d.called());
    reactor.advance(0.5).unwrap();
    assert!(!d.called());
    reactor.advance(0.6).unwrap();
    assert_eq!(d.result().value(), Some(()));
}

// Synapse: TAH::AwakenableSleeperTests.test_explicit_wake
#[test]
fn wake_ends_a_sleep_at_once() {
    let (reactor, _clock, sleeper) = setup();
    let d = sleep(&sleeper, "name", 1000);
    reactor.pump(&[0.0]).unwrap();
    assert!(!d.called());
    reactor.advance(0.5).unwrap();
    assert!(!d.called());
    sleeper.wake("name");
    assert_eq!(d.result().value(), Some(()));
    // Its timer was cancelled; advancing past it does nothing.
    assert_eq!(reactor.delayed_call_count(), 0);
    reactor.advance(0.6).unwrap();
}

// Synapse: TAH::AwakenableSleeperTests.test_multiple_sleepers_timeout
#[test]
fn each_sleeper_times_out_on_its_own_delay() {
    let (reactor, _clock, sleeper) = setup();
    let d1 = sleep(&sleeper, "name", 1000);
    reactor.advance(0.6).unwrap();
    assert!(!d1.called());
    let d2 = sleep(&sleeper, "name", 1000);
    reactor.advance(0.6).unwrap();
    assert!(d1.called());
    assert!(!d2.called());
    reactor.advance(0.6).unwrap();
    assert!(d2.called());
}

// Synapse: TAH::AwakenableSleeperTests.test_multiple_sleepers_wake
#[test]
fn wake_ends_every_sleeper_of_that_name() {
    let (reactor, _clock, sleeper) = setup();
    let d1 = sleep(&sleeper, "name", 1000);
    reactor.advance(0.5).unwrap();
    assert!(!d1.called());
    let d2 = sleep(&sleeper, "name", 1000);
    let other = sleep(&sleeper, "other", 1000);
    reactor.advance(0.3).unwrap();
    assert!(!d1.called() && !d2.called());
    sleeper.wake("name");
    assert!(d1.called() && d2.called());
    assert!(!other.called(), "other names sleep on");
    sleeper.wake("unknown");
    assert!(!other.called());
    reactor.advance(1.0).unwrap();
    assert!(other.called());
}

// Synapse: experiment (behaviours 63 and 64)
#[test]
fn a_cancelled_sleeper_fails_at_once_and_its_timer_later_fires_harmlessly() {
    let ((), errors) = capture_logcontext_errors(|| {
        let (reactor, _clock, sleeper) = setup();
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let start = |name: &'static str, who: &'static str, ms: u64| {
            let (s, log, r) = (sleeper.clone(), log.clone(), reactor.clone());
            ensure_deferred(async move {
                let ctx = LoggingContext::new(who, "hs");
                let _scope = ctx.entered();
                match s.sleep(name, ms).await {
                    Ok(()) => {
                        log.borrow_mut().push(format!(
                            "{who} woke {} {}",
                            current_context(),
                            r.seconds()
                        ));
                        Ok(())
                    }
                    Err(f) => {
                        if f.check::<CancelledError>() {
                            log.borrow_mut()
                                .push(format!("{who} CE {}", current_context()));
                        }
                        Err::<(), _>(f)
                    }
                }
            })
        };
        let d1 = start("x", "A", 1000);
        log.borrow_mut().push(format!(
            "after A {} {} {:?}",
            current_context(),
            reactor.delayed_call_count(),
            sleeper
        ));
        let d2 = start("x", "B", 2000);
        d2.cancel().unwrap();
        log.borrow_mut().push(format!(
            "after cancel B {} {}",
            current_context(),
            reactor.delayed_call_count()
        ));
        reactor.advance(0.5).unwrap();
        sleeper.wake("x");
        log.borrow_mut().push(format!(
            "after wake {} {} {:?}",
            current_context(),
            reactor.delayed_call_count(),
            sleeper
        ));
        reactor.advance(2.0).unwrap();
        log.borrow_mut()
            .push(format!("end {}", reactor.delayed_call_count()));
        assert_eq!(
            *log.borrow(),
            [
                "after A sentinel 1 AwakenableSleeper { names: 1, .. }",
                "B CE B",
                "after cancel B sentinel 2",
                "A woke A 0.5",
                "after wake sentinel 1 AwakenableSleeper { names: 0, .. }",
                "end 0",
            ]
        );
        assert_eq!(d1.result().value(), Some(()));
        assert!(d2.result().failure().unwrap().check::<CancelledError>());
        d2.add_errback(|_| Ok(()));
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: code (behaviour 63: a sleep does nothing until awaited)
#[test]
fn a_sleep_future_does_nothing_until_polled_and_cleans_up_when_dropped() {
    let (reactor, _clock, sleeper) = setup();
    let future = sleeper.sleep("name", 1000);
    assert_eq!(reactor.delayed_call_count(), 0);
    assert!(format!("{sleeper:?}").contains("names: 0"));
    let mut future = Box::pin(future);
    let waker = futures::task::noop_waker();
    let polled = future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(&waker));
    assert!(polled.is_pending());
    assert!(format!("{sleeper:?}").contains("names: 1"));
    drop(future);
    assert!(format!("{sleeper:?}").contains("names: 0"));
}
