//! The real reactor's core: `run`/`stop`/`crash`, `callWhenRunning`, system
//! event triggers, restart errors, and `callLater` on real time.
//!
//! Ported from Twisted's `internet/test/test_core.py`
//! (`SystemEventTestsBuilder`) and `test/test_internet.py`
//! (`SystemEventTests`, `TimeTests`, `DelayedTests`); each test names the
//! one it mirrors. Every run has a watchdog that crashes the reactor after a
//! generous delay, so a broken reactor fails a test instead of hanging it;
//! no test asserts a duration, only orders and outcomes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use integration_tests::support::{Log, capture_logs, new_log};
use twisted_deferred::time::{DelayedCallError, ReactorTime};
use twisted_deferred::{Deferred, Failure, TimeoutError, ensure_deferred};
use twisted_reactor::error::{InvalidDelayError, ReactorNotRunning, TriggerNotFound};
use twisted_reactor::{LoopingCall, Phase, Reactor, RunError, defer_later};

/// Generous: only a broken reactor gets anywhere near it.
const WATCHDOG: f64 = 60.0;

/// `self.runReactor(reactor)`: runs it, failing the test if the watchdog
/// had to end the run.
fn run(reactor: &Reactor) {
    let timed_out = Rc::new(Cell::new(false));
    let (r, flag) = (reactor.clone(), timed_out.clone());
    let watchdog = reactor
        .call_later(WATCHDOG, move || {
            flag.set(true);
            r.crash();
        })
        .unwrap();
    reactor.run().unwrap();
    assert!(!timed_out.get(), "the reactor did not stop by itself");
    if watchdog.active() {
        watchdog.cancel().unwrap();
    }
}

fn push<T: 'static>(log: &Log<T>, item: T) -> impl FnOnce() + 'static {
    let log = log.clone();
    move || log.borrow_mut().push(item)
}

/// `reactor.stop`, as a function to schedule or trigger.
fn stopper(reactor: &Reactor) -> impl FnOnce() -> Result<(), Failure> + 'static {
    let r = reactor.clone();
    move || r.stop().map_err(Failure::from)
}

// Twisted: test_core: SystemEventTestsBuilder.test_stopWhenNotStarted
#[test]
fn stop_when_not_started_fails_with_reactor_not_running() {
    let reactor = Reactor::new().unwrap();
    assert_eq!(reactor.stop(), Err(ReactorNotRunning));
}

// Twisted: test_core: SystemEventTestsBuilder.test_stopWhenAlreadyStopped
#[test]
fn stop_after_the_reactor_stopped_fails_with_reactor_not_running() {
    let reactor = Reactor::new().unwrap();
    reactor.call_when_running(stopper(&reactor));
    run(&reactor);
    assert_eq!(reactor.stop(), Err(ReactorNotRunning));
}

#[test]
fn stop_twice_while_running_fails_the_second_time() {
    let reactor = Reactor::new().unwrap();
    let outcomes = new_log();
    let (r, log) = (reactor.clone(), outcomes.clone());
    reactor.call_when_running(move || {
        log.borrow_mut().push(r.stop().is_ok());
        log.borrow_mut().push(r.stop().is_ok());
    });
    run(&reactor);
    assert_eq!(*outcomes.borrow(), [true, false]);
}

// Twisted: test_core: SystemEventTestsBuilder.test_callWhenRunningOrder
#[test]
fn call_when_running_functions_run_in_the_order_given() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    reactor.call_when_running(push(&events, "first"));
    reactor.call_when_running(push(&events, "second"));
    reactor.call_when_running(stopper(&reactor));
    run(&reactor);
    assert_eq!(*events.borrow(), ["first", "second"]);
}

#[test]
fn call_when_running_on_a_running_reactor_runs_at_once() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let (r, log) = (reactor.clone(), events.clone());
    reactor.call_when_running(move || {
        let id = r.call_when_running(push(&log, "inner"));
        assert!(id.is_none());
        log.borrow_mut().push("after inner");
        r.stop()
    });
    run(&reactor);
    assert_eq!(*events.borrow(), ["inner", "after inner"]);
}

// Twisted: test_core: SystemEventTestsBuilder.test_runningForStartupEvents
#[test]
fn reactor_is_running_in_during_and_after_startup_but_not_before() {
    let reactor = Reactor::new().unwrap();
    let state = new_log();
    for phase in [Phase::Before, Phase::During, Phase::After] {
        let (r, log) = (reactor.clone(), state.clone());
        reactor.add_system_event_trigger(phase, "startup", move || {
            log.borrow_mut().push((phase, r.running()))
        });
    }
    reactor.call_when_running(stopper(&reactor));
    assert!(state.borrow().is_empty());
    run(&reactor);
    assert_eq!(
        *state.borrow(),
        [
            (Phase::Before, false),
            (Phase::During, true),
            (Phase::After, true)
        ]
    );
    assert!(!reactor.running());
}

// Twisted: test_core: SystemEventTestsBuilder.test_stopShutDownEvents
#[test]
fn stop_fires_all_three_shutdown_phases_before_run_returns() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    reactor.add_system_event_trigger(Phase::Before, "shutdown", push(&events, "before"));
    reactor.add_system_event_trigger(Phase::During, "shutdown", push(&events, "during"));
    reactor.add_system_event_trigger(Phase::After, "shutdown", push(&events, "after"));
    reactor.call_when_running(stopper(&reactor));
    run(&reactor);
    assert_eq!(*events.borrow(), ["before", "during", "after"]);
}

// Twisted: test_core: SystemEventTestsBuilder.test_shutdownFiresTriggersAsynchronously
#[test]
fn shutdown_triggers_run_after_stop_returns_not_inside_it() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    reactor.add_system_event_trigger(Phase::Before, "shutdown", push(&events, "before shutdown"));
    let (r, log) = (reactor.clone(), events.clone());
    reactor.call_when_running(move || {
        r.stop().unwrap();
        log.borrow_mut().push("stopped");
    });
    assert!(events.borrow().is_empty());
    run(&reactor);
    assert_eq!(*events.borrow(), ["stopped", "before shutdown"]);
}

// Twisted: test_core: SystemEventTestsBuilder.test_multipleRun
#[test]
fn run_inside_the_running_reactor_fails_with_already_running() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let (r, log) = (reactor.clone(), events.clone());
    reactor.call_when_running(move || {
        assert!(matches!(r.run(), Err(RunError::AlreadyRunning(_))));
        assert!(matches!(r.iterate(0.0), Err(RunError::AlreadyRunning(_))));
        log.borrow_mut().push("tested");
    });
    reactor.call_when_running(stopper(&reactor));
    run(&reactor);
    assert_eq!(*events.borrow(), ["tested"]);
}

// Twisted: test_core: SystemEventTestsBuilder.test_runWithAsynchronousBeforeStartupTrigger
#[test]
fn a_before_startup_trigger_returning_a_deferred_holds_startup_until_it_fires() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let (r, log) = (reactor.clone(), events.clone());
    reactor.add_system_event_trigger(Phase::Before, "startup", move || {
        log.borrow_mut().push("trigger");
        let d: Deferred<()> = Deferred::new();
        let (r2, log2) = (r.clone(), log.clone());
        d.add_callback(move |()| {
            log2.borrow_mut().push("callback");
            r2.stop().map_err(Failure::from)
        });
        let fire = d.clone();
        r.call_later(0.0, move || fire.callback(())).unwrap();
        d
    });
    let log = events.clone();
    let r = reactor.clone();
    reactor.call_when_running(move || {
        log.borrow_mut()
            .push(if r.running() { "running" } else { "?" })
    });
    run(&reactor);
    assert_eq!(*events.borrow(), ["trigger", "callback", "running"]);
}

// Twisted: test_core: SystemEventTestsBuilder.test_iterate
#[test]
fn iterate_runs_what_is_due_without_waiting_for_later_calls() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let later = reactor.call_later(5.0, push(&events, "later")).unwrap();
    reactor.call_later(0.0, push(&events, "now")).unwrap();
    reactor.iterate(0.0).unwrap();
    assert_eq!(*events.borrow(), ["now"]);
    assert!(later.active());
    later.cancel().unwrap();
}

// Twisted: test_core: SystemEventTestsBuilder.test_crash
#[test]
fn crash_ends_the_loop_without_shutdown_triggers() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    reactor.add_system_event_trigger(Phase::Before, "shutdown", push(&events, "before shutdown"));
    let r = reactor.clone();
    reactor.call_when_running(move || {
        let r2 = r.clone();
        r.call_later(0.0, move || r2.crash()).unwrap();
    });
    run(&reactor);
    assert!(!reactor.running());
    assert!(events.borrow().is_empty(), "shutdown triggers ran");
}

// Twisted: test_core: SystemEventTestsBuilder.test_runAfterCrash
#[test]
fn run_after_crash_starts_the_reactor_again() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let (r, log) = (reactor.clone(), events.clone());
    reactor.call_when_running(move || {
        log.borrow_mut().push("crash".to_string());
        r.crash();
    });
    run(&reactor);
    let (r, log) = (reactor.clone(), events.clone());
    reactor.call_when_running(move || {
        log.borrow_mut()
            .push(format!("stop, running={}", r.running()));
        r.stop()
    });
    run(&reactor);
    assert_eq!(*events.borrow(), ["crash", "stop, running=true"]);
}

// Twisted: test_core: SystemEventTestsBuilder.test_runAfterStop
#[test]
fn run_after_stop_fails_with_not_restartable_even_from_a_shutdown_trigger() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    reactor.call_when_running(stopper(&reactor));
    let (r, log) = (reactor.clone(), events.clone());
    reactor.add_system_event_trigger(Phase::After, "shutdown", move || {
        assert!(matches!(r.run(), Err(RunError::NotRestartable(_))));
        log.borrow_mut().push("tested");
    });
    run(&reactor);
    assert_eq!(*events.borrow(), ["tested"]);
    assert!(matches!(reactor.run(), Err(RunError::NotRestartable(_))));
}

// Twisted: test_internet: SystemEventTests.test_beforeReturnsDeferred (with
// the shutdown event: "a trigger returning a Deferred delays shutdown")
#[test]
fn a_before_shutdown_deferred_delays_shutdown_until_it_fires() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let (r, log) = (reactor.clone(), events.clone());
    reactor.add_system_event_trigger(Phase::Before, "shutdown", move || {
        log.borrow_mut().push("before");
        let d: Deferred<()> = Deferred::new();
        let (fire, log2) = (d.clone(), log.clone());
        // Fires a few iterations later, from a timer: the loop keeps running.
        r.call_later(0.05, move || {
            log2.borrow_mut().push("deferred fires");
            fire.callback(())
        })
        .unwrap();
        d
    });
    reactor.add_system_event_trigger(Phase::During, "shutdown", push(&events, "during"));
    reactor.add_system_event_trigger(Phase::After, "shutdown", push(&events, "after"));
    reactor.call_when_running(stopper(&reactor));
    run(&reactor);
    assert_eq!(
        *events.borrow(),
        ["before", "deferred fires", "during", "after"]
    );
}

// Twisted: test_internet: SystemEventTests.test_multipleBeforeReturnDeferred
#[test]
fn every_before_deferred_is_waited_for() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let gates: Vec<Deferred<()>> = (0..2).map(|_| Deferred::new()).collect();
    for gate in &gates {
        let gate = gate.clone();
        reactor.add_system_event_trigger(Phase::Before, "test", move || gate);
    }
    reactor.add_system_event_trigger(Phase::During, "test", push(&events, "during"));
    reactor.fire_system_event("test");
    assert!(events.borrow().is_empty());
    gates[0].callback(()).unwrap();
    assert!(events.borrow().is_empty());
    gates[1].callback(()).unwrap();
    assert_eq!(*events.borrow(), ["during"]);
}

// Twisted: test_internet: SystemEventTests.test_subsequentBeforeTriggerFiresPriorBeforeDeferred
#[test]
fn a_later_before_trigger_may_fire_an_earlier_ones_deferred() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let first: Deferred<()> = Deferred::new();
    let f = first.clone();
    reactor.add_system_event_trigger(Phase::Before, "test", move || f);
    let f = first.clone();
    reactor.add_system_event_trigger(Phase::Before, "test", move || f.callback(()));
    reactor.add_system_event_trigger(Phase::During, "test", push(&events, "during"));
    reactor.fire_system_event("test");
    assert_eq!(*events.borrow(), ["during"]);
}

// Twisted: test_internet: SystemEventTests.test_removeSystemEventTrigger
#[test]
fn a_removed_trigger_does_not_run() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let first = reactor.add_system_event_trigger(Phase::During, "test", push(&events, "first"));
    reactor.add_system_event_trigger(Phase::During, "test", push(&events, "second"));
    reactor.remove_system_event_trigger(&first).unwrap();
    reactor.fire_system_event("test");
    assert_eq!(*events.borrow(), ["second"]);
}

// Twisted: test_internet: SystemEventTests.test_removeNonExistentSystemEventTrigger,
// ThreePhaseEventTests.test_removeRemovedTrigger
#[test]
fn removing_a_trigger_twice_or_after_it_ran_fails() {
    let reactor = Reactor::new().unwrap();
    let id = reactor.add_system_event_trigger(Phase::During, "test", || {});
    reactor.remove_system_event_trigger(&id).unwrap();
    assert_eq!(
        reactor.remove_system_event_trigger(&id),
        Err(TriggerNotFound)
    );
    let ran = reactor.add_system_event_trigger(Phase::After, "test", || {});
    reactor.fire_system_event("test");
    assert_eq!(
        reactor.remove_system_event_trigger(&ran),
        Err(TriggerNotFound)
    );
}

// Twisted: test_internet: ThreePhaseEventTests.test_finishedBeforeTriggersCleared
// (removing a before trigger that already ran, while the before phase is
// still waiting, only warns)
#[test]
fn removing_a_before_trigger_that_ran_while_the_event_waits_only_warns() {
    let reactor = Reactor::new().unwrap();
    let gate: Deferred<()> = Deferred::new();
    let g = gate.clone();
    let id = reactor.add_system_event_trigger(Phase::Before, "test", move || g);
    reactor.fire_system_event("test");
    let (removed, logs) = capture_logs(|| reactor.remove_system_event_trigger(&id));
    assert_eq!(removed, Ok(()));
    assert!(logs.iter().any(|(level, m)| *level == log::Level::Warn
        && m.contains("already-fired system event triggers")));
    gate.callback(()).unwrap();
}

// Twisted: test_internet: ThreePhaseEventTests.test_beforeTriggerException,
// test_duringTriggerException; test_core: test_shutdownDisconnectsCleanly
#[test]
fn a_failing_trigger_is_logged_and_the_others_still_run() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    reactor.add_system_event_trigger(Phase::Before, "test", || {
        Err::<(), _>(Failure::msg("before broke"))
    });
    reactor.add_system_event_trigger(Phase::Before, "test", push(&events, "before"));
    reactor.add_system_event_trigger(Phase::During, "test", || -> () { panic!("during broke") });
    reactor.add_system_event_trigger(Phase::During, "test", push(&events, "during"));
    reactor.add_system_event_trigger(Phase::After, "test", push(&events, "after"));
    let ((), logs) = capture_logs(|| reactor.fire_system_event("test"));
    assert_eq!(*events.borrow(), ["before", "during", "after"]);
    let errors: Vec<&String> = logs
        .iter()
        .filter(|(level, _)| *level == log::Level::Error)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(errors.len(), 2, "{logs:?}");
    assert!(errors[0].contains("before broke"));
    assert!(errors[1].contains("during broke"));
}

// Twisted: test_internet: ThreePhaseEventTests.test_triggersRunOnce
#[test]
fn triggers_run_once() {
    let reactor = Reactor::new().unwrap();
    let count = Rc::new(Cell::new(0));
    for phase in [Phase::Before, Phase::During, Phase::After] {
        let c = count.clone();
        reactor.add_system_event_trigger(phase, "test", move || c.set(c.get() + 1));
    }
    reactor.fire_system_event("test");
    reactor.fire_system_event("test");
    assert_eq!(count.get(), 3);
}

// Twisted: test_internet: SystemEventTests.test_interactionBetweenDifferentEvents
#[test]
fn events_of_different_types_do_not_interact() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let gate: Deferred<()> = Deferred::new();
    let g = gate.clone();
    reactor.add_system_event_trigger(Phase::Before, "first", move || g);
    reactor.add_system_event_trigger(Phase::During, "first", push(&events, "first during"));
    reactor.add_system_event_trigger(Phase::During, "second", push(&events, "second during"));
    reactor.fire_system_event("first");
    reactor.fire_system_event("second");
    assert_eq!(*events.borrow(), ["second during"]);
    gate.callback(()).unwrap();
    assert_eq!(*events.borrow(), ["second during", "first during"]);
}

// Twisted: test_internet: TimeTests.test_callLater; DelayedTests
#[test]
fn timed_calls_run_in_due_order() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    reactor.call_later(0.06, push(&events, "c")).unwrap();
    reactor.call_later(0.02, push(&events, "a1")).unwrap();
    reactor.call_later(0.04, push(&events, "b")).unwrap();
    reactor.call_later(0.02, push(&events, "a2")).unwrap();
    reactor.call_later(0.0, push(&events, "now")).unwrap();
    reactor.call_later(0.08, stopper(&reactor)).unwrap();
    run(&reactor);
    assert_eq!(*events.borrow(), ["now", "a1", "a2", "b", "c"]);
}

#[test]
fn a_call_runs_no_earlier_than_its_due_time() {
    let reactor = Reactor::new().unwrap();
    let seen = new_log();
    let (r, log) = (reactor.clone(), seen.clone());
    let call = reactor
        .call_later(0.05, move || {
            log.borrow_mut().push(r.seconds());
            r.stop().unwrap();
        })
        .unwrap();
    let due = call.get_time();
    run(&reactor);
    assert!(seen.borrow()[0] >= due);
    assert!(!call.active());
}

// Twisted: test_internet: TimeTests.test_cancelDelayedCall,
// test_cancelCancelledDelayedCall, test_cancelCalledDelayedCallSynchronous,
// test_cancelCalledDelayedCallAsynchronous
#[test]
fn cancel_prevents_the_call_and_misuse_is_reported() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let cancelled = reactor
        .call_later(0.01, push(&events, "cancelled"))
        .unwrap();
    cancelled.cancel().unwrap();
    assert!(!cancelled.active());
    assert_eq!(cancelled.cancel(), Err(DelayedCallError::AlreadyCancelled));

    // Cancelling itself from inside its own call: AlreadyCalled.
    let slot: Rc<RefCell<Option<twisted_deferred::time::DelayedCall>>> = Rc::default();
    let (s, log) = (slot.clone(), events.clone());
    let call = reactor
        .call_later(0.0, move || {
            let me = s.borrow().clone().unwrap();
            log.borrow_mut().push(match me.cancel() {
                Err(DelayedCallError::AlreadyCalled) => "already called",
                _ => "?",
            });
        })
        .unwrap();
    *slot.borrow_mut() = Some(call.clone());
    reactor.call_later(0.03, stopper(&reactor)).unwrap();
    run(&reactor);
    assert_eq!(*events.borrow(), ["already called"]);
    assert_eq!(call.cancel(), Err(DelayedCallError::AlreadyCalled));
    assert_eq!(call.reset(1.0), Err(DelayedCallError::AlreadyCalled));
}

// Twisted: test_internet: TimeTests.test_callLaterReset; DelayedTests.test_active
#[test]
fn reset_and_delay_move_a_call() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    let first = reactor.call_later(0.01, push(&events, "first")).unwrap();
    reactor.call_later(0.03, push(&events, "second")).unwrap();
    let third = reactor.call_later(0.05, push(&events, "third")).unwrap();
    first.reset(0.04).unwrap(); // now between second and third
    third.delay(-0.045).unwrap(); // now first of all
    assert!(first.active() && third.active());
    reactor.call_later(0.08, stopper(&reactor)).unwrap();
    run(&reactor);
    assert_eq!(*events.borrow(), ["third", "second", "first"]);
}

#[test]
fn negative_and_nan_delays_are_refused() {
    let reactor = Reactor::new().unwrap();
    assert_eq!(
        reactor.call_later(-1.0, || {}).unwrap_err(),
        InvalidDelayError { delay: -1.0 }
    );
    assert!(reactor.call_later(f64::NAN, || {}).is_err());
    assert_eq!(reactor.delayed_call_count(), 0);
    // Through the trait, which cannot refuse: logged, run with no delay.
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let (call, logs) = capture_logs(|| {
        ReactorTime::call_later(
            &reactor,
            -5.0,
            Box::new(move || {
                r.set(true);
                Ok(())
            }),
        )
    });
    assert!(
        logs.iter()
            .any(|(_, m)| m.contains("-5 is not greater than or equal to 0 seconds"))
    );
    reactor.iterate(0.0).unwrap();
    assert!(ran.get() && !call.active());
}

// Twisted: test_internet: TimeTests.test_getDelayedCalls
#[test]
fn get_delayed_calls_lists_the_pending_calls_in_run_order() {
    let reactor = Reactor::new().unwrap();
    let b = reactor.call_later(20.0, || {}).unwrap();
    let a = reactor.call_later(10.0, || {}).unwrap();
    let c = reactor.call_later(30.0, || {}).unwrap();
    c.cancel().unwrap();
    let calls = reactor.get_delayed_calls();
    assert_eq!(calls.len(), 2);
    assert!(calls[0].ptr_eq(&a) && calls[1].ptr_eq(&b));
    assert_eq!(reactor.delayed_call_count(), 2);
}

#[test]
fn a_failing_timed_call_is_logged_and_the_loop_goes_on() {
    let reactor = Reactor::new().unwrap();
    let events = new_log();
    reactor
        .call_later(0.0, || Err::<(), _>(Failure::msg("timed call broke")))
        .unwrap();
    reactor
        .call_later(0.0, || -> () { panic!("timed call panicked") })
        .unwrap();
    reactor
        .call_later(0.01, push(&events, "still running"))
        .unwrap();
    reactor.call_later(0.02, stopper(&reactor)).unwrap();
    let ((), logs) = capture_logs(|| run(&reactor));
    assert_eq!(*events.borrow(), ["still running"]);
    let messages: Vec<&str> = logs.iter().map(|(_, m)| m.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("timed call broke")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("timed call panicked")),
        "{messages:?}"
    );
}

// Twisted: base.ReactorBase.runUntilCurrent (calls made while due calls run
// wait for `_insertNewDelayedCalls` on the next iteration)
#[test]
fn a_zero_delay_call_rescheduling_itself_does_not_starve_other_work() {
    fn spin(reactor: Reactor, spins: Rc<Cell<u64>>) {
        spins.set(spins.get() + 1);
        let r = reactor.clone();
        reactor.call_later(0.0, move || spin(r, spins)).unwrap();
    }
    let reactor = Reactor::new().unwrap();
    let spins = Rc::new(Cell::new(0u64));
    spin(reactor.clone(), spins.clone());
    // A later timer and a call from another thread still get their turn.
    let handle = reactor.handle();
    reactor
        .call_later(0.02, move || {
            std::thread::spawn(move || {
                handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
            });
        })
        .unwrap();
    run(&reactor);
    assert!(spins.get() > 1);
}

#[test]
fn seconds_never_goes_backwards() {
    let reactor = Reactor::new().unwrap();
    let mut last = reactor.seconds();
    for _ in 0..10_000 {
        let now = reactor.seconds();
        assert!(now >= last);
        last = now;
    }
}

// The time-based helpers run on the reactor as on the Clock (one trait).
#[test]
fn defer_later_add_timeout_and_looping_call_run_on_the_reactor() {
    let reactor = Reactor::new().unwrap();
    let later = defer_later(&reactor, 0.01, || Ok("later"));
    let slow: Deferred<()> = Deferred::new();
    slow.add_timeout(0.02, &reactor);
    let ticks = Rc::new(Cell::new(0));
    let t = ticks.clone();
    let looping = LoopingCall::new(reactor.clone(), move || {
        t.set(t.get() + 1);
        Ok(())
    });
    let finished = looping.start(0.01, true).unwrap();
    let (r, lc) = (reactor.clone(), looping.clone());
    let t = ticks.clone();
    let d = ensure_deferred(async move {
        let _ = defer_later(&r, 0.05, || Ok(())).await;
        while t.get() < 3 {
            defer_later(&r, 0.01, || Ok(())).await?;
        }
        lc.stop()?;
        r.stop().map_err(Failure::new)
    });
    run(&reactor);
    assert_eq!(later.result().value(), Some("later"));
    assert!(slow.result().failure().unwrap().check::<TimeoutError>());
    slow.add_errback(|_| Ok(()));
    assert!(ticks.get() >= 3);
    assert!(finished.called());
    assert!(d.called());
}

#[test]
fn after_a_stop_pending_calls_are_dropped_breaking_reactor_cycles() {
    struct DropFlag(Rc<Cell<bool>>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let reactor = Reactor::new().unwrap();
    let dropped = Rc::new(Cell::new(false));
    let flag = DropFlag(dropped.clone());
    let r = reactor.clone();
    let never = reactor
        .call_later(1000.0, move || {
            let _keep = (&flag, &r);
        })
        .unwrap();
    reactor.call_when_running(stopper(&reactor));
    run(&reactor);
    assert!(dropped.get(), "the pending call still holds the reactor");
    drop(never);
}

#[test]
fn triggers_and_timed_calls_may_fail_with_any_error_type() {
    let reactor = Reactor::new().unwrap();
    // call_when_running(f) where f returns the Result of stop(): a
    // ReactorNotRunning error is logged, not lost.
    let r = reactor.clone();
    reactor.call_when_running(move || r.stop());
    let r = reactor.clone();
    reactor.call_when_running(move || r.stop());
    let ((), logs) = capture_logs(|| run(&reactor));
    assert!(
        logs.iter()
            .any(|(_, m)| m.contains("Can't stop reactor that isn't running.")),
        "{logs:?}"
    );
}

/// A coroutine awaiting a future completed on another thread resumes on the
/// reactor thread as soon as it is woken: the wake wakes the sleeping loop,
/// with no timer pending to keep it awake.
#[test]
fn a_coroutine_woken_from_another_thread_wakes_the_sleeping_loop() {
    let reactor = twisted_reactor::Reactor::new().unwrap();
    let (tx, rx) = futures::channel::oneshot::channel::<u32>();
    let r = reactor.clone();
    let d = twisted_deferred::ensure_deferred(async move {
        let v = rx.await.map_err(twisted_deferred::Failure::new)?;
        let _ = r.stop();
        Ok::<_, twisted_deferred::Failure>(v * 2)
    });
    let sender = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let _ = tx.send(21);
    });
    // A watchdog, only so that a regression fails instead of hanging.
    let handle = reactor.handle();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        let _ = handle.call_from_thread(|r| {
            let _ = r.stop();
        });
    });
    reactor.run().unwrap();
    sender.join().unwrap();
    assert_eq!(
        d.result().value(),
        Some(42),
        "resumed by the wake, not the watchdog"
    );
    drop(watchdog);
}
