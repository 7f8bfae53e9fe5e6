//! Synapse's `Linearizer` (`twisted_compat::linearizer`): behaviours 44–55
//! of `synapse_semantics.md` (2.5).
//!
//! Citations: `TLIN` is Synapse's `tests/util/test_linearizer.py`;
//! "experiment" is a check run against Synapse 1.163.2 (the expected values
//! below are what it printed).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use integration_tests::support::capture_logs;
use twisted_compat::{
    CancelledError, Clock, Deferred, Failure, Linearizer, LoggingContext, PreserveLoggingContext,
    capture_logcontext_errors, current_context, make_deferred_yieldable,
};
use twisted_deferred::ensure_deferred;
use twisted_reactor::Clock as TestClock;

/// The reactor and Synapse's clock on it.
fn clocks() -> (TestClock, Clock) {
    let reactor = TestClock::new();
    let clock = Clock::new(reactor.clone(), "test");
    (reactor, clock)
}

/// Runs every call that is due, including those they schedule (Synapse's
/// `_pump`: `while reactor.getDelayedCalls(): reactor.runUntilCurrent()`).
fn pump(reactor: &TestClock) {
    while reactor.delayed_call_count() > 0 {
        reactor.advance(0.0).unwrap();
    }
}

/// A task that takes the lock, blocks, then completes (`TLIN`'s
/// `_start_task`): the task's Deferred, one fired once it holds the lock,
/// and the Deferred that unblocks it.
struct Task {
    d: Deferred<()>,
    acquired: Deferred<()>,
    unblock: Deferred<()>,
}

fn start_task<K>(linearizer: &Linearizer<K>, key: K) -> Task
where
    K: std::hash::Hash + Eq + Clone + std::fmt::Debug + 'static,
{
    let acquired: Deferred<()> = Deferred::new();
    let unblock: Deferred<()> = Deferred::new();
    let (l, a, u) = (linearizer.clone(), acquired.clone(), unblock.clone());
    // async with linearizer.queue(key): acquired_d.callback(None); await unblock_d
    let d = ensure_deferred(async move {
        let _guard = l.queue(key).await?;
        a.callback(())?;
        u.await?;
        Ok::<_, Failure>(())
    });
    Task {
        d,
        acquired,
        unblock,
    }
}

fn holds_cancelled_error(d: &Deferred<()>) -> bool {
    d.result()
        .failure()
        .is_some_and(|f| f.check::<CancelledError>())
}

/// Fires `d` as a test would from the reactor: in the sentinel context.
fn fire(d: &Deferred<()>) {
    let _sentinel = PreserveLoggingContext::sentinel();
    d.callback(()).unwrap();
}

// Synapse: TLIN::LinearizerTestCase.test_linearizer
#[test]
fn a_task_queues_behind_an_earlier_one_and_goes_once_it_finishes() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let t1 = start_task(&linearizer, "key");
    // 45: no contention, so the body started synchronously.
    assert!(t1.acquired.called());
    let t2 = start_task(&linearizer, "key");
    assert!(!t2.acquired.called());

    fire(&t1.unblock);
    pump(&reactor);
    assert!(t1.d.called());
    assert!(t2.acquired.called());
    fire(&t2.unblock);
    assert_eq!(t2.d.result().value(), Some(()));
}

// Synapse: TLIN::LinearizerTestCase.test_linearizer_is_queued
#[test]
fn is_queued_counts_waiters_not_holders() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let t1 = start_task(&linearizer, "key");
    assert!(t1.acquired.called());
    assert!(!linearizer.is_queued(&"key"));

    let t2 = start_task(&linearizer, "key");
    assert!(!t2.acquired.called());
    assert!(linearizer.is_queued(&"key"));

    fire(&t1.unblock);
    pump(&reactor);
    assert!(t2.acquired.called());
    assert!(!linearizer.is_queued(&"key"));

    fire(&t2.unblock);
    assert!(!linearizer.is_queued(&"key"));
    assert!(!linearizer.is_queued(&"other"));
}

// Synapse: TLIN::LinearizerTestCase.test_lots_of_queued_things
#[test]
fn lots_of_fast_things_queued_behind_a_slow_one_neither_recurse_nor_lose_their_contexts() {
    let ((), errors) = capture_logcontext_errors(|| {
        let (reactor, clock) = clocks();
        let linearizer = Linearizer::new("test", &clock);
        let wrong_context = Rc::new(Cell::new(0));

        // async def func(i): with LoggingContext("func(%s)" % i) as lc:
        //     async with linearizer.queue(key): assert current_context() == lc
        //     assert current_context() == lc
        let func = |i: u32| {
            let (l, wrong) = (linearizer.clone(), wrong_context.clone());
            ensure_deferred(async move {
                let lc = LoggingContext::new(format!("func({i})"), "test");
                let _scope = lc.entered();
                {
                    let _guard = l.queue("").await?;
                    if current_context() != lc {
                        wrong.set(wrong.get() + 1);
                    }
                }
                if current_context() != lc {
                    wrong.set(wrong.get() + 1);
                }
                Ok::<_, Failure>(())
            })
        };

        let slow = start_task(&linearizer, "");
        let queued: Vec<Deferred<()>> = (1..100).map(func).collect();
        let d = func(1000);
        assert!(current_context().is_sentinel());
        fire(&slow.unblock);
        pump(&reactor);
        assert_eq!(d.result().value(), Some(()));
        assert!(queued.iter().all(|q| q.result().value() == Some(())));
        assert_eq!(wrong_context.get(), 0);
        assert!(current_context().is_sentinel());
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: TLIN::LinearizerTestCase.test_multiple_entries
#[test]
fn with_max_count_that_many_hold_at_once_and_any_release_wakes_the_oldest_waiter() {
    let (reactor, clock) = clocks();
    let limiter = Linearizer::with_max_count("test", &clock, 3);
    let t1 = start_task(&limiter, 0);
    let t2 = start_task(&limiter, 0);
    let t3 = start_task(&limiter, 0);
    assert!(t1.acquired.called() && t2.acquired.called() && t3.acquired.called());
    let t4 = start_task(&limiter, 0);
    let t5 = start_task(&limiter, 0);
    assert!(!t4.acquired.called() && !t5.acquired.called());

    // The first holder finishes: the fourth task (the oldest waiter) goes.
    fire(&t1.unblock);
    pump(&reactor);
    assert!(t4.acquired.called());
    assert!(!t5.acquired.called());

    // The third finishes: the fifth goes.
    fire(&t3.unblock);
    pump(&reactor);
    assert!(t5.acquired.called());

    for t in [&t2, &t4, &t5] {
        fire(&t.unblock);
    }
    pump(&reactor);

    // The next task does not wait.
    let t6 = start_task(&limiter, 0);
    assert!(t6.acquired.called());
    fire(&t6.unblock);
    for t in [t1, t2, t3, t4, t5, t6] {
        assert_eq!(t.d.result().value(), Some(()));
    }
}

// Synapse: TLIN::LinearizerTestCase.test_multiple_entries (keys are
// independent: behaviour 44)
#[test]
fn independent_keys_do_not_interact() {
    let (_reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let a = start_task(&linearizer, "a");
    let b = start_task(&linearizer, "b");
    assert!(a.acquired.called() && b.acquired.called());
    assert!(!linearizer.is_queued(&"a") && !linearizer.is_queued(&"b"));
    fire(&a.unblock);
    fire(&b.unblock);
}

// Synapse: TLIN::LinearizerTestCase.test_cancellation
#[test]
fn a_waiter_cancelled_while_queued_leaves_the_queue_and_the_others_carry_on() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let t1 = start_task(&linearizer, "key");
    assert!(t1.acquired.called());
    let t2 = start_task(&linearizer, "key");
    assert!(!t2.acquired.called());
    let t3 = start_task(&linearizer, "key");
    assert!(!t3.acquired.called());

    // Cancel the waiting second task.
    t2.d.cancel().unwrap();
    assert!(t2.d.called());
    assert!(holds_cancelled_error(&t2.d));
    assert!(linearizer.is_queued(&"key"), "the third task still waits");

    fire(&t1.unblock);
    pump(&reactor);
    assert_eq!(t1.d.result().value(), Some(()));
    assert!(
        t3.acquired.called(),
        "Third task did not get the lock after the second task was cancelled"
    );
    assert!(!t2.acquired.called());
    fire(&t3.unblock);
    assert_eq!(t3.d.result().value(), Some(()));
    t2.d.add_errback(|_| Ok(()));
}

// Synapse: TLIN::LinearizerTestCase.test_cancellation_during_sleep
#[test]
fn a_waiter_cancelled_during_its_post_wake_sleep_gives_the_lock_to_the_next() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let t1 = start_task(&linearizer, "key");
    let t2 = start_task(&linearizer, "key");
    let t3 = start_task(&linearizer, "key");
    assert!(t1.acquired.called() && !t2.acquired.called() && !t3.acquired.called());

    // The first task finishes; the second is woken and sleeps, holding the
    // lock; cancel it there.
    fire(&t1.unblock);
    assert_eq!(t1.d.result().value(), Some(()));
    assert_eq!(reactor.delayed_call_count(), 1, "the second task sleeps");
    assert!(linearizer.is_queued(&"key"), "the third task waits");
    t2.d.cancel().unwrap();
    pump(&reactor);

    assert!(t2.d.called());
    assert!(holds_cancelled_error(&t2.d));
    assert!(!t2.acquired.called());
    assert!(
        t3.acquired.called(),
        "Third task did not get the lock after the second task was cancelled"
    );
    fire(&t3.unblock);
    assert_eq!(t3.d.result().value(), Some(()));
    t2.d.add_errback(|_| Ok(()));
}

// Synapse: experiment (behaviour 51; no upstream test)
#[test]
fn a_holder_cancelled_in_its_body_releases_and_the_next_waiter_goes_ahead() {
    let ((), errors) = capture_logcontext_errors(|| {
        let (reactor, clock) = clocks();
        let linearizer = Linearizer::with_max_count("test", &clock, 2);
        type Entries = Vec<(usize, &'static str, String)>;
        let log: Rc<RefCell<Entries>> = Rc::default();
        let blocks: Vec<Deferred<()>> = (0..5).map(|_| Deferred::new()).collect();
        // with LoggingContext(f"T{i}"): try: async with queue: log; await block
        //     log out; except CancelledError: log CE; raise
        let tasks: Vec<Deferred<()>> = (0..5)
            .map(|i| {
                let (l, log, block) = (linearizer.clone(), log.clone(), blocks[i].clone());
                ensure_deferred(async move {
                    let ctx = LoggingContext::new(format!("T{i}"), "test");
                    let _scope = ctx.entered();
                    let body = async {
                        {
                            let _guard = l.queue("k").await?;
                            log.borrow_mut()
                                .push((i, "in", current_context().to_string()));
                            make_deferred_yieldable(block).await?;
                        }
                        log.borrow_mut()
                            .push((i, "out", current_context().to_string()));
                        Ok::<_, Failure>(())
                    };
                    let outcome = body.await;
                    if outcome.as_ref().is_err_and(|f| f.check::<CancelledError>()) {
                        log.borrow_mut()
                            .push((i, "CE", current_context().to_string()));
                    }
                    outcome
                })
            })
            .collect();
        assert!(linearizer.is_queued(&"k"));

        // Cancel holder 1 in its body: it releases, task 2 is woken.
        tasks[1].cancel().unwrap();
        assert_eq!(reactor.delayed_call_count(), 1, "task 2's zero sleep");
        pump(&reactor);
        // Cancel waiter 3; then holder 0 finishes, waking 4, cancelled in
        // its zero sleep.
        tasks[3].cancel().unwrap();
        fire(&blocks[0]);
        tasks[4].cancel().unwrap();
        pump(&reactor);
        fire(&blocks[2]);

        let expected: Vec<(usize, &str, String)> = vec![
            (0, "in", "T0".into()),
            (1, "in", "T1".into()),
            (1, "CE", "T1".into()),
            (2, "in", "T2".into()),
            (3, "CE", "T3".into()),
            (0, "out", "T0".into()),
            (4, "CE", "T4".into()),
            (2, "out", "T2".into()),
        ];
        assert_eq!(*log.borrow(), expected);
        assert!(tasks.iter().all(|t| t.called()));
        assert!(!linearizer.is_queued(&"k"));
        assert!(format!("{linearizer:?}").contains("keys: 0"));
        for t in &tasks {
            t.add_errback(|_| Ok(()));
        }
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: TLIN::LinearizerTestCase.test_linearizer (unblocking pumps the
// reactor: behaviour 48)
#[test]
fn a_woken_waiter_starts_its_body_only_after_one_trip_through_the_reactor() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let t1 = start_task(&linearizer, "key");
    let t2 = start_task(&linearizer, "key");
    fire(&t1.unblock);
    assert!(!t2.acquired.called(), "the body waits for the zero sleep");
    assert_eq!(reactor.delayed_call_count(), 1);
    assert_eq!(reactor.get_delayed_calls()[0].get_time(), 0.0);
    reactor.advance(0.0).unwrap();
    assert!(t2.acquired.called());
    fire(&t2.unblock);
}

// Synapse: experiment (behaviour 47)
#[test]
fn the_hand_off_is_atomic_and_a_newcomer_queues_behind_the_woken_waiter() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let t1 = start_task(&linearizer, "key");
    let t2 = start_task(&linearizer, "key");
    fire(&t1.unblock);
    // t2 holds the lock (asleep); a newcomer must wait, not jump in.
    let t3 = start_task(&linearizer, "key");
    assert!(!t3.acquired.called());
    assert!(linearizer.is_queued(&"key"));
    pump(&reactor);
    assert!(t2.acquired.called() && !t3.acquired.called());
    fire(&t2.unblock);
    pump(&reactor);
    assert!(t3.acquired.called());
    fire(&t3.unblock);
}

// Synapse: experiment (behaviours 46 and 55)
#[test]
fn waiters_wait_in_the_sentinel_context_and_their_bodies_run_in_their_own() {
    let ((), errors) = capture_logcontext_errors(|| {
        let (reactor, clock) = clocks();
        let linearizer = Linearizer::new("test", &clock);
        let seen: Rc<RefCell<Vec<String>>> = Rc::default();
        let unblock: Deferred<()> = Deferred::new();

        let start = |name: &'static str, block: Option<Deferred<()>>| {
            let (l, seen) = (linearizer.clone(), seen.clone());
            ensure_deferred(async move {
                let ctx = LoggingContext::new(name, "test");
                let _scope = ctx.entered();
                {
                    let _guard = l.queue("k").await?;
                    seen.borrow_mut()
                        .push(format!("{name} in {}", current_context()));
                    if let Some(block) = block {
                        make_deferred_yieldable(block).await?;
                    }
                }
                seen.borrow_mut()
                    .push(format!("{name} out {}", current_context()));
                Ok::<_, Failure>(())
            })
        };
        let a = start("A", Some(unblock.clone()));
        assert!(current_context().is_sentinel());
        let b = start("B", None);
        assert!(current_context().is_sentinel(), "B waits in the sentinel");
        fire(&unblock);
        assert!(current_context().is_sentinel());
        pump(&reactor);
        assert_eq!(*seen.borrow(), ["A in A", "A out A", "B in B", "B out B"]);
        assert!(a.called() && b.called());
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: experiment (behaviour 49: the log lines)
#[test]
fn a_cancelled_wait_is_logged() {
    let (t2, logs) = capture_logs(|| {
        let (_reactor, clock) = clocks();
        let linearizer = Linearizer::new("lin", &clock);
        let t1 = start_task(&linearizer, "key");
        let t2 = start_task(&linearizer, "key");
        t2.d.cancel().unwrap();
        fire(&t1.unblock);
        t2
    });
    t2.d.add_errback(|_| Ok(()));
    assert!(logs.iter().any(|(level, m)| *level == log::Level::Info
        && m.starts_with("defer <Deferred at ")
        && m.contains("got err")));
    assert!(logs.iter().any(|(level, m)| *level == log::Level::Debug
        && m == "Cancelling wait for linearizer lock \"lin\" for key \"key\""));
    assert!(!logs.iter().any(|(level, _)| *level == log::Level::Warn));
}

#[derive(Debug)]
struct BodyError;

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body failed")
    }
}

impl std::error::Error for BodyError {}

// Synapse: code (behaviour 52)
#[test]
fn a_failing_body_releases_the_lock_and_its_failure_propagates() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let gate: Deferred<()> = Deferred::new();
    let (l, g) = (linearizer.clone(), gate.clone());
    let failing = ensure_deferred(async move {
        let _guard = l.queue("key").await?;
        g.await?;
        Err::<(), _>(Failure::new(BodyError))
    });
    let next = start_task(&linearizer, "key");
    fire(&gate);
    assert!(failing.result().failure().unwrap().check::<BodyError>());
    pump(&reactor);
    assert!(next.acquired.called());
    fire(&next.unblock);
    failing.add_errback(|_| Ok(()));
}

// Synapse: experiment (behaviour 54)
#[test]
fn a_keys_state_goes_once_its_last_holder_releases_with_nobody_waiting() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let t1 = start_task(&linearizer, "key");
    let t2 = start_task(&linearizer, "key");
    assert!(format!("{linearizer:?}").contains("keys: 1"));
    fire(&t1.unblock);
    pump(&reactor);
    assert!(format!("{linearizer:?}").contains("keys: 1"), "t2 holds it");
    fire(&t2.unblock);
    assert!(format!("{linearizer:?}").contains("keys: 0"));
}

/// Polls a future once with a waker that does nothing, as a foreign
/// executor that never comes back would.
fn poll_once<F: Future>(f: &mut Pin<Box<F>>) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    f.as_mut().poll(&mut Context::from_waker(&waker))
}

// Rust-specific: a queued `queue(key)` future that is dropped (Python's
// coroutines always resume; a Rust future may be dropped instead).
#[test]
fn a_queue_future_dropped_while_waiting_leaves_the_queue() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let t1 = start_task(&linearizer, "key");
    let mut waiting = Box::pin(linearizer.queue("key"));
    assert!(poll_once(&mut waiting).is_pending());
    assert!(linearizer.is_queued(&"key"));
    drop(waiting);
    assert!(!linearizer.is_queued(&"key"));
    let t2 = start_task(&linearizer, "key");
    fire(&t1.unblock);
    pump(&reactor);
    assert!(t2.acquired.called());
    fire(&t2.unblock);
    assert!(format!("{linearizer:?}").contains("keys: 0"));
}

// Rust-specific: a waiter handed the lock but dropped before it resumed
// passes the lock on instead of keeping it forever.
#[test]
fn a_woken_queue_future_dropped_before_it_resumes_hands_the_lock_on() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let t1 = start_task(&linearizer, "key");
    let mut woken = Box::pin(linearizer.queue("key"));
    assert!(poll_once(&mut woken).is_pending());
    let t3 = start_task(&linearizer, "key");
    fire(&t1.unblock);
    // The release handed the lock to `woken`, whose (foreign) waker does
    // nothing: it still holds the lock, unaware.
    assert!(!t3.acquired.called());
    drop(woken);
    pump(&reactor);
    assert!(t3.acquired.called());
    fire(&t3.unblock);
    assert!(format!("{linearizer:?}").contains("keys: 0"));
}

// Rust-specific: the guard is the `async with` block; `release()` ends it
// early, and a guard dropped with its coroutine releases too.
#[test]
fn releasing_the_guard_early_lets_the_next_waiter_in() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let gate: Deferred<()> = Deferred::new();
    let (l, g) = (linearizer.clone(), gate.clone());
    let released_early = ensure_deferred(async move {
        let guard = l.queue("key").await?;
        assert_eq!(*guard.key(), "key");
        guard.release();
        g.await?;
        Ok::<_, Failure>(())
    });
    let t2 = start_task(&linearizer, "key");
    pump(&reactor);
    assert!(t2.acquired.called(), "the first released before its wait");
    fire(&t2.unblock);
    fire(&gate);
    assert!(released_early.called());
}

// Synapse: TLIN::LinearizerTestCase.test_lots_of_queued_things (the same,
// a hundred times over: the zero sleep bounds the stack however many wait)
#[test]
fn ten_thousand_synchronously_finishing_waiters_run_at_constant_stack_depth() {
    let (reactor, clock) = clocks();
    let linearizer = Linearizer::new("test", &clock);
    let done = Rc::new(Cell::new(0u32));
    let slow = start_task(&linearizer, 0u8);
    for _ in 0..10_000 {
        let (l, done) = (linearizer.clone(), done.clone());
        ensure_deferred(async move {
            let _guard = l.queue(0u8).await?;
            done.set(done.get() + 1);
            Ok::<_, Failure>(())
        });
    }
    fire(&slow.unblock);
    pump(&reactor);
    assert_eq!(done.get(), 10_000);
    assert!(format!("{linearizer:?}").contains("keys: 0"));
}
