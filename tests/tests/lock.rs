//! `DeferredLock`: acquire/release, FIFO hand-off inside `release()`,
//! cancelling waiting and held acquires, `run`, and `async with` (the
//! guard).
//!
//! Twisted behaviours covered: B132, B133, B134, B135 (catalogue section
//! 2.16), pitfall P-23, experiment E15 (parts 1 and 2) and the assertion text
//! of section 3.2. Cases marked "experiment" were checked against Twisted
//! 26.10.0 by hand; the Python run is quoted next to each.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use twisted_deferred::{
    AlreadyCalledError, AssertionError, CancelledError, ConcurrencyPrimitive, Deferred,
    DeferredLock, Failure, PanicError, RecursionError, State, capture_unhandled_errors,
    ensure_deferred,
};

type Log = Rc<RefCell<Vec<String>>>;

fn new_log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

fn push(log: &Log, entry: impl Into<String>) {
    log.borrow_mut().push(entry.into());
}

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// `lock.acquire().addCallback(lambda _: log.append(name))`.
fn acquire_logged(lock: &DeferredLock, log: &Log, name: &'static str) -> Deferred<()> {
    let log = log.clone();
    lock.acquire().add_callback(move |_: DeferredLock| {
        push(&log, name);
        Ok(())
    })
}

fn is_cancelled<T: Clone + 'static>(d: &Deferred<T>) -> bool {
    matches!(d.result(), State::Failure(f) if f.check::<CancelledError>())
}

/// Handles a Deferred's failure, so that dropping it reports nothing.
fn consume<T: 'static>(d: &Deferred<T>) {
    d.as_any()
        .add_errback(|_| Ok(twisted_deferred::AnyValue::new(())));
}

// Twisted: OtherPrimitivesTests.testLock (first acquire); experiment E15 part 1
// ("d1 result is lock: True")
#[test]
fn acquire_on_a_free_lock_fires_at_once_with_the_lock() {
    let lock = DeferredLock::new();
    assert!(!lock.locked());
    let d = lock.acquire();
    assert!(d.called());
    assert!(lock.locked());
    assert_eq!(lock.waiting(), 0);
    let held = d.result().value().expect("fired with the lock");
    assert!(held.ptr_eq(&lock), "d.result is lock");
}

// Twisted: OtherPrimitivesTests.testLock; experiment E15 part 1
// ("1 lock: DeferredLock unfired unfired | locked: True | waiting: 2")
#[test]
fn acquires_on_a_held_lock_wait_unfired_in_a_list() {
    let lock = DeferredLock::new();
    let d1 = lock.acquire();
    let d2 = lock.acquire();
    let d3 = lock.acquire();
    assert!(d1.called());
    assert!(!d2.called());
    assert!(!d3.called());
    assert!(lock.locked());
    assert_eq!(lock.waiting(), 2);
}

// Twisted: B132 (FIFO wait list); OtherPrimitivesTests.testLock
#[test]
fn release_hands_the_lock_to_waiters_first_come_first_served() {
    let lock = DeferredLock::new();
    let log = new_log();
    lock.acquire();
    let waiters: Vec<Deferred<()>> = ["a", "b", "c"]
        .into_iter()
        .map(|name| acquire_logged(&lock, &log, name))
        .collect();
    assert_eq!(lock.waiting(), 3);
    for (i, expected) in ["a", "b", "c"].into_iter().enumerate() {
        lock.release().unwrap();
        assert_eq!(entries(&log).last().map(String::as_str), Some(expected));
        assert_eq!(log.borrow().len(), i + 1);
        assert!(waiters[i].called());
        assert!(lock.locked(), "handed over: still locked");
        assert_eq!(lock.waiting(), 2 - i);
    }
    lock.release().unwrap();
    assert!(!lock.locked());
}

// Twisted: pitfall P-23; experiment E15 part 2
// (['before release', 'waiter got lock', 'after release'])
#[test]
fn release_runs_the_waiters_callbacks_inside_release() {
    let lock = DeferredLock::new();
    let log = new_log();
    lock.acquire();
    acquire_logged(&lock, &log, "waiter got lock");
    push(&log, "before release");
    lock.release().unwrap();
    push(&log, "after release");
    assert_eq!(
        entries(&log),
        ["before release", "waiter got lock", "after release"]
    );
}

// Twisted: OtherPrimitivesTests.testLock ("lock.release(); assertFalse(lock.locked)");
// experiment E15 part 1 ("release -> locked: False")
#[test]
fn release_without_waiters_unlocks() {
    let lock = DeferredLock::new();
    lock.acquire();
    lock.release().unwrap();
    assert!(!lock.locked());
    assert_eq!(lock.waiting(), 0);
    // Free again: the next acquire fires at once.
    assert!(lock.acquire().called());
}

// Twisted: B132; experiment E15 part 1
// ("release unlocked: AssertionError Tried to release an unlocked lock")
#[test]
fn releasing_an_unlocked_lock_is_an_assertion_error() {
    let lock = DeferredLock::new();
    let err = lock.release().unwrap_err();
    let assertion = err
        .downcast_ref::<AssertionError>()
        .expect("AssertionError");
    assert_eq!(assertion.message, "Tried to release an unlocked lock");
    assert_eq!(err.message(), "Tried to release an unlocked lock");
    assert!(!lock.locked());
    // The same after a lock/unlock round.
    lock.acquire();
    lock.release().unwrap();
    assert!(lock.release().unwrap_err().check::<AssertionError>());
}

// Twisted: OtherPrimitivesTests.testLock, ported step by step
#[test]
fn test_lock() {
    let lock = DeferredLock::new();
    let counter = Rc::new(Cell::new(0));
    let incr = |counter: &Rc<Cell<i32>>| {
        let c = counter.clone();
        move |_: DeferredLock| {
            c.set(c.get() + 1);
            Ok(())
        }
    };

    lock.acquire().add_callback(incr(&counter));
    assert!(lock.locked());
    assert_eq!(counter.get(), 1);

    lock.acquire().add_callback(incr(&counter));
    assert!(lock.locked());
    assert_eq!(counter.get(), 1);

    lock.release().unwrap();
    assert!(lock.locked());
    assert_eq!(counter.get(), 2);

    lock.release().unwrap();
    assert!(!lock.locked());
    assert_eq!(counter.get(), 2);

    // `self.assertRaises(TypeError, lock.run)`: `run` without a function
    // does not compile here.

    // helper(resultValue, returnValue): records resultValue, returns returnValue
    let result: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let control: Deferred<String> = Deferred::new();
    let (r, c) = (result.clone(), control.clone());
    let result_deferred = lock.run(move || {
        *r.borrow_mut() = Some("firstUnique".into());
        c
    });
    assert!(lock.locked());
    assert_eq!(result.borrow().as_deref(), Some("firstUnique"));

    let r = result.clone();
    result_deferred.add_callback(move |v: String| {
        *r.borrow_mut() = Some(v);
        Ok(())
    });

    lock.acquire().add_callback(incr(&counter));
    assert!(lock.locked());
    assert_eq!(counter.get(), 2);

    control.callback("secondUnique".into()).unwrap();
    assert_eq!(result.borrow().as_deref(), Some("secondUnique"));
    assert!(lock.locked());
    assert_eq!(counter.get(), 3);

    // d = lock.acquire().addBoth(helper); d.cancel()
    let seen: Rc<RefCell<Option<Failure>>> = Rc::new(RefCell::new(None));
    let s = seen.clone();
    let d = lock
        .acquire()
        .add_both(move |r: Result<DeferredLock, Failure>| {
            *s.borrow_mut() = r.err();
            Ok(())
        });
    d.cancel().unwrap();
    let failure = seen.borrow().clone().expect("helper got a Failure");
    assert!(failure.check::<CancelledError>());

    lock.release().unwrap();
    assert!(!lock.locked());

    // lock.run(returnsInt) / lock.run(returnsCoroInt): typed results
    let int: Deferred<i32> = lock.run(|| twisted_deferred::succeed(2));
    assert_eq!(int.result().value(), Some(2));
    let coro: Deferred<i32> = lock.run_async(|| async { Ok(1) });
    assert_eq!(coro.result().value(), Some(1));
    assert!(!lock.locked());
}

// Twisted: OtherPrimitivesTests.test_cancelLockAfterAcquired
#[test]
fn cancel_lock_after_acquired_has_no_effect() {
    let lock = DeferredLock::new();
    let d = lock.acquire();
    let errbacks = Rc::new(Cell::new(0));
    let e = errbacks.clone();
    d.add_errback(move |f: Failure| {
        e.set(e.get() + 1);
        Err(f)
    });
    d.cancel().unwrap();
    assert_eq!(errbacks.get(), 0, "Unexpected errback call!");
    assert!(d.result().value().unwrap().ptr_eq(&lock));
    assert!(lock.locked(), "still held");
}

// Twisted: OtherPrimitivesTests.test_cancelLockBeforeAcquired; experiment
// E15 part 1 ("cancel waiting d2: FAIL CancelledError | waiting: 1")
#[test]
fn cancel_lock_before_acquired_fails_with_cancelled_error() {
    let lock = DeferredLock::new();
    lock.acquire();
    let d = lock.acquire();
    assert_eq!(lock.waiting(), 1);
    d.cancel().unwrap();
    // assertImmediateFailure(d, CancelledError)
    let failures = Rc::new(RefCell::new(Vec::new()));
    let (sink, lk) = (failures.clone(), lock.clone());
    d.add_errback(move |f: Failure| {
        sink.borrow_mut().push(f);
        Ok(lk)
    });
    assert_eq!(failures.borrow().len(), 1);
    assert!(failures.borrow()[0].check::<CancelledError>());
    assert_eq!(lock.waiting(), 0, "removed from the wait list");
    assert!(lock.locked(), "the holder still holds it");
}

// Twisted: B133; experiment E15 part 1 ("cancel waiting d2 ... release -> d3:
// DeferredLock | still locked (handed over): True")
#[test]
fn a_cancelled_waiter_is_never_handed_the_lock() {
    let lock = DeferredLock::new();
    let log = new_log();
    let d1 = lock.acquire();
    let d2 = acquire_logged(&lock, &log, "d2");
    let d3 = acquire_logged(&lock, &log, "d3");
    d2.cancel().unwrap();
    assert!(is_cancelled(&d2));
    assert_eq!(lock.waiting(), 1);
    consume(&d2);
    d1.cancel().unwrap();
    assert!(
        d1.result().value().is_some(),
        "cancel acquired d1 (no effect)"
    );
    lock.release().unwrap();
    assert_eq!(entries(&log), ["d3"]);
    assert!(d3.called());
    assert!(lock.locked());
    lock.release().unwrap();
    assert!(!lock.locked());
    assert_eq!(entries(&log), ["d3"], "d2 never got it");
}

// Twisted: B132 (FIFO); experiment: an acquire made by a waiter's callback
// queues behind those already waiting (['a'] 2, then ['a', 'b'], then
// ['a', 'b', 'a2'])
#[test]
fn an_acquire_from_a_waiters_callback_queues_behind_earlier_waiters() {
    let lock = DeferredLock::new();
    let log = new_log();
    lock.acquire();
    let (l, lk) = (log.clone(), lock.clone());
    lock.acquire().add_callback(move |_: DeferredLock| {
        push(&l, "a");
        acquire_logged(&lk, &l, "a2");
        Ok(())
    });
    acquire_logged(&lock, &log, "b");
    lock.release().unwrap();
    assert_eq!(entries(&log), ["a"]);
    assert_eq!(lock.waiting(), 2);
    lock.release().unwrap();
    assert_eq!(entries(&log), ["a", "b"]);
    lock.release().unwrap();
    assert_eq!(entries(&log), ["a", "b", "a2"]);
    assert!(lock.locked());
    assert_eq!(lock.waiting(), 0);
}

// Twisted: B132; experiment: waiters releasing from their callbacks pass the
// lock along inside the first release (['a', 'b', 'c'] True 0)
#[test]
fn waiters_releasing_in_their_callbacks_pass_the_lock_along_in_one_release() {
    let lock = DeferredLock::new();
    let log = new_log();
    lock.acquire();
    for name in ["a", "b"] {
        let l = log.clone();
        lock.acquire().add_callback(move |held: DeferredLock| {
            push(&l, name);
            held.release()
        });
    }
    acquire_logged(&lock, &log, "c");
    lock.release().unwrap();
    assert_eq!(entries(&log), ["a", "b", "c"]);
    assert!(lock.locked(), "c holds it");
    assert_eq!(lock.waiting(), 0);
}

// Twisted: B132 + B45; experiment: a paused waiter is fired (and holds the
// lock) but its callbacks wait for unpause (8 True [] True / 8b ['w'])
#[test]
fn a_paused_waiter_gets_the_lock_but_its_callbacks_wait_for_unpause() {
    let lock = DeferredLock::new();
    let log = new_log();
    lock.acquire();
    let w = lock.acquire();
    w.pause();
    let l = log.clone();
    w.add_callback(move |_: DeferredLock| {
        push(&l, "w");
        Ok(())
    });
    lock.release().unwrap();
    assert!(w.called());
    assert!(entries(&log).is_empty());
    assert!(lock.locked());
    w.unpause();
    assert_eq!(entries(&log), ["w"]);
}

// Twisted: B132 (`d.callback(self)` raises); experiment: a waiter fired by
// hand makes release() raise AlreadyCalledError, the lock stays locked and
// the next waiter is not served (1 release -> AlreadyCalledError | locked
// True | waiting 1)
#[test]
fn release_to_a_waiter_fired_by_hand_raises_already_called_error() {
    let lock = DeferredLock::new();
    lock.acquire();
    let w = lock.acquire();
    let w2 = lock.acquire();
    w.callback(DeferredLock::new()).unwrap(); // some other value, by hand
    let err = lock.release().unwrap_err();
    assert!(err.check::<AlreadyCalledError>());
    assert!(lock.locked());
    assert_eq!(lock.waiting(), 1);
    assert!(!w2.called());
    lock.release().unwrap();
    assert!(w2.result().value().unwrap().ptr_eq(&lock));
    assert!(lock.locked());
}

/// Calls `f` from callbacks nested as deep as Deferreds allow, where firing
/// one more Deferred is refused with `RecursionError`.
fn at_max_nesting(f: Rc<dyn Fn()>) {
    let d: Deferred<()> = Deferred::new();
    let inner = f.clone();
    d.add_callback(move |()| {
        at_max_nesting(inner);
        Ok(())
    });
    if d.callback(()).is_err() {
        f();
    }
}

// Rust's nesting limit, standing in for Python's recursion limit: a
// hand-off made too deep still hands the lock over (the waiter's Deferred
// holds the lock, its callbacks wait for the next trigger, as when Python's
// RecursionError strikes inside `callback`), and `release()` raises it.
#[test]
fn a_hand_off_made_too_deep_hands_over_and_raises_recursion_error() {
    let lock = DeferredLock::new();
    lock.acquire();
    let w = lock.acquire();
    let ran = Rc::new(RefCell::new(false));
    let r = ran.clone();
    w.add_callback(move |l: DeferredLock| {
        *r.borrow_mut() = true;
        Ok(l)
    });
    let outcome: Rc<RefCell<Option<Result<(), Failure>>>> = Rc::new(RefCell::new(None));
    let (o, l) = (outcome.clone(), lock.clone());
    at_max_nesting(Rc::new(move || {
        if o.borrow().is_none() {
            *o.borrow_mut() = Some(l.release());
        }
    }));
    let err = outcome.borrow_mut().take().unwrap().unwrap_err();
    assert!(err.check::<RecursionError>());
    assert!(w.called(), "the waiter was handed the lock");
    assert!(!*ran.borrow(), "its callbacks did not run yet");
    assert!(lock.locked());
    assert_eq!(lock.waiting(), 0);
    w.add_callback(|l: DeferredLock| Ok(l));
    assert!(*ran.borrow(), "the next trigger runs them");
    lock.release().unwrap();
    assert!(!lock.locked());
}

// Twisted: B134; experiment: run(f) calls f at once on a free lock and
// releases before returning (['f runs', 'after run'] 5 False)
#[test]
fn run_on_a_free_lock_calls_f_at_once_and_releases() {
    let lock = DeferredLock::new();
    let log = new_log();
    let (l, lk) = (log.clone(), lock.clone());
    let r = lock.run(move || {
        push(&l, format!("f runs, locked={}", lk.locked()));
        Ok(5)
    });
    push(&log, "after run");
    assert_eq!(entries(&log), ["f runs, locked=true", "after run"]);
    assert_eq!(r.result().value(), Some(5));
    assert!(!lock.locked());
}

// Twisted: B134; experiment E15 part 1
// ("run(raising f): FAIL ZeroDivisionError | locked after: False")
#[test]
fn run_releases_when_f_fails() {
    let lock = DeferredLock::new();
    let r = lock.run(|| Err::<i32, _>(Failure::msg("division by zero")));
    let f = r.result().failure().expect("failed");
    assert_eq!(f.message(), "division by zero");
    assert!(!lock.locked());
    consume(&r);
}

// Twisted: B134 (an exception raised by f); the Rust form is a panic
#[test]
fn run_releases_when_f_panics() {
    let lock = DeferredLock::new();
    let r: Deferred<i32> = lock.run(|| -> Result<i32, Failure> { panic!("f blew up") });
    let f = r.result().failure().expect("failed");
    assert!(f.check::<PanicError>());
    assert_eq!(f.message(), "f blew up");
    assert!(!lock.locked());
    consume(&r);
}

// Twisted: B134; experiment E15 part 1 ("run(f returning unfired Deferred):
// locked = True / after it fires: 'v' | locked = False")
#[test]
fn run_holds_the_lock_until_the_deferred_f_returned_fires() {
    let lock = DeferredLock::new();
    let ctl: Deferred<&str> = Deferred::new();
    let c = ctl.clone();
    let r = lock.run(move || c);
    assert!(lock.locked());
    assert!(r.called() && r.is_waiting(), "waiting on ctl");
    ctl.callback("v").unwrap();
    assert_eq!(r.result().value(), Some("v"));
    assert!(!lock.locked());
}

// Twisted: B134; experiment E15 part 1 ("run(async f): 'coro result' | locked: False")
#[test]
fn run_async_runs_a_coroutine_under_the_lock() {
    let lock = DeferredLock::new();
    let r = lock.run_async(|| async { Ok::<_, Failure>("coro result") });
    assert_eq!(r.result().value(), Some("coro result"));
    assert!(!lock.locked());

    // A coroutine that suspends keeps the lock until it finishes.
    let gate: Deferred<i32> = Deferred::new();
    let (g, lk) = (gate.clone(), lock.clone());
    let r = lock.run_async(move || async move {
        let v = g.await?;
        Ok::<_, Failure>((v, lk.locked()))
    });
    assert!(lock.locked());
    gate.callback(3).unwrap();
    assert_eq!(r.result().value(), Some((3, true)));
    assert!(!lock.locked());
}

// Twisted: OtherPrimitivesTests.testLock (run on a held lock waits);
// B134 ("waits for acquire(), then calls f")
#[test]
fn run_on_a_held_lock_calls_f_only_once_the_lock_is_handed_over() {
    let lock = DeferredLock::new();
    let log = new_log();
    lock.acquire();
    let l = log.clone();
    let r = lock.run(move || {
        push(&l, "f");
        Ok(1)
    });
    assert!(entries(&log).is_empty());
    assert_eq!(lock.waiting(), 1);
    push(&log, "release");
    lock.release().unwrap();
    assert_eq!(entries(&log), ["release", "f"]);
    assert_eq!(r.result().value(), Some(1));
    assert!(!lock.locked(), "released after f");
}

// Twisted: B133 + B134; experiment: the Deferred run() returns is the waiting
// acquire itself; cancelling it withdraws the request and f never runs
// (3 FAIL CancelledError [] 0 / 3b False)
#[test]
fn cancelling_a_waiting_run_withdraws_it_without_calling_f() {
    let lock = DeferredLock::new();
    let called = Rc::new(Cell::new(false));
    lock.acquire();
    let c = called.clone();
    let r = lock.run(move || {
        c.set(true);
        Ok(())
    });
    assert_eq!(lock.waiting(), 1);
    r.cancel().unwrap();
    assert!(is_cancelled(&r));
    assert!(!called.get());
    assert_eq!(lock.waiting(), 0);
    consume(&r);
    lock.release().unwrap();
    assert!(!lock.locked());
}

// Twisted: B134 + B55 (cancel forwarded to the waited-on Deferred);
// experiment: cancelling run() while f's Deferred is pending cancels that
// Deferred and releases (3c FAIL CancelledError None False)
#[test]
fn cancelling_run_while_f_is_pending_cancels_fs_deferred_and_releases() {
    let lock = DeferredLock::new();
    let ctl: Deferred<i32> = Deferred::new();
    let c = ctl.clone();
    let r = lock.run(move || c);
    assert!(lock.locked());
    r.cancel().unwrap();
    assert!(is_cancelled(&r));
    assert_eq!(
        ctl.cast::<()>().result().value(),
        Some(()),
        "ctl holds None"
    );
    assert!(!lock.locked());
    consume(&r);
}

// Twisted: B134 (`_releaseAndReturn` raising); experiment: f releasing the
// lock itself makes run's release fail
// (2 FAIL AssertionError Tried to release an unlocked lock False)
#[test]
fn run_whose_f_released_the_lock_fails_with_the_assertion() {
    let lock = DeferredLock::new();
    let lk = lock.clone();
    let r = lock.run(move || lk.release());
    let f = r.result().failure().expect("failed");
    assert!(f.check::<AssertionError>());
    assert_eq!(f.message(), "Tried to release an unlocked lock");
    assert!(!lock.locked());
    consume(&r);
}

// Twisted: CoroutineContextVarsTests.test_asyncWithLock
#[test]
fn async_with_lock() {
    let lock = DeferredLock::new();
    let l = lock.clone();
    let test = ensure_deferred(async move {
        let inner = {
            let _guard = l.acquire_guard().await?; // async with lock:
            assert!(l.locked());
            let d = l.acquire();
            let d = d.add_callback(|held: DeferredLock| held.release());
            assert!(l.locked());
            assert!(!d.called());
            d
        };
        assert!(inner.called());
        inner.await?;
        assert!(!l.locked());
        Ok::<_, Failure>("done")
    });
    assert_eq!(test.result().value(), Some("done"));
    assert!(!lock.locked());
}

// Twisted: CoroutineContextVarsTests.test_asyncWithLockException
#[test]
fn async_with_lock_exception() {
    let lock = DeferredLock::new();
    let l = lock.clone();
    let test = ensure_deferred(async move {
        let _guard = l.acquire_guard().await?;
        assert!(l.locked());
        Err::<(), _>(Failure::msg("some specific exception"))
    });
    let f = test.result().failure().expect("the exception propagates");
    assert_eq!(f.message(), "some specific exception");
    assert!(!lock.locked());
    consume(&test);
}

// Twisted: B135 (`__aexit__` calls release(), whose AssertionError escapes);
// experiment: async with lock: lock.release() fails the coroutine with
// AssertionError: Tried to release an unlocked lock
#[test]
fn async_with_block_releasing_by_hand_fails_at_exit() {
    let lock = DeferredLock::new();
    let l = lock.clone();
    let test = ensure_deferred(async move {
        let guard = l.acquire_guard().await?;
        l.release()?;
        guard.release() // __aexit__
    });
    let f = test.result().failure().expect("__aexit__ raised");
    assert_eq!(f.message(), "Tried to release an unlocked lock");
    assert!(!lock.locked());
    consume(&test);

    // Dropped instead of released: the failed release is only logged.
    let l = lock.clone();
    let ((), reports) = capture_unhandled_errors(|| {
        let test = ensure_deferred(async move {
            let _guard = l.acquire_guard().await?;
            l.release()
        });
        assert!(test.result().value().is_some());
    });
    assert!(reports.is_empty());
    assert!(!lock.locked());
}

// Twisted: B135 + B133; experiment: a coroutine cancelled while `async with`
// waits for the lock withdraws its acquire (waiting 1 / after cancel 0
// CancelledError)
#[test]
fn cancelling_a_coroutine_waiting_in_async_with_withdraws_its_acquire() {
    let lock = DeferredLock::new();
    let log = new_log();
    lock.acquire();
    let (l, lk) = (log.clone(), lock.clone());
    let ((), reports) = capture_unhandled_errors(|| {
        let body = ensure_deferred(async move {
            let _guard = lk.acquire_guard().await?;
            push(&l, "in");
            Ok::<_, Failure>(())
        });
        assert_eq!(lock.waiting(), 1);
        body.cancel().unwrap();
        assert_eq!(lock.waiting(), 0);
        assert!(is_cancelled(&body));
        consume(&body);
    });
    assert!(reports.is_empty());
    lock.release().unwrap();
    assert!(!lock.locked());
    assert!(entries(&log).is_empty(), "the block never ran");
}

// Twisted: B135 with waiters: entering the block waits its turn, leaving it
// hands the lock to the next coroutine inside the release
#[test]
fn async_with_blocks_run_one_at_a_time_in_arrival_order() {
    let lock = DeferredLock::new();
    let log = new_log();
    let gates: Vec<Deferred<()>> = (0..3).map(|_| Deferred::new()).collect();
    let bodies: Vec<Deferred<()>> = (0..3)
        .map(|i| {
            let (l, lk, gate) = (log.clone(), lock.clone(), gates[i].clone());
            ensure_deferred(async move {
                let _guard = lk.acquire_guard().await?;
                push(&l, format!("enter {i}"));
                gate.await?;
                push(&l, format!("leave {i}"));
                Ok::<_, Failure>(())
            })
        })
        .collect();
    assert_eq!(entries(&log), ["enter 0"]);
    assert_eq!(lock.waiting(), 2);
    gates[2].callback(()).unwrap(); // 2 is not in yet: nothing happens
    assert_eq!(entries(&log), ["enter 0"]);
    gates[0].callback(()).unwrap();
    assert_eq!(entries(&log), ["enter 0", "leave 0", "enter 1"]);
    gates[1].callback(()).unwrap();
    assert_eq!(
        entries(&log),
        [
            "enter 0", "leave 0", "enter 1", "leave 1", "enter 2", "leave 2"
        ]
    );
    assert!(bodies.iter().all(|b| b.result().value().is_some()));
    assert!(!lock.locked());
}

fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

// Rust-specific: a guard future dropped while it waits withdraws its request
// (no Python counterpart: a Python coroutine cannot be dropped mid-await)
#[test]
fn dropping_a_waiting_guard_future_withdraws_its_request() {
    let lock = DeferredLock::new();
    lock.acquire();
    let ((), reports) = capture_unhandled_errors(|| {
        let never_polled = lock.acquire_guard();
        assert_eq!(lock.waiting(), 1);
        drop(never_polled);
        assert_eq!(lock.waiting(), 0);

        let mut polled = Box::pin(lock.acquire_guard());
        assert!(poll_once(polled.as_mut()).is_pending());
        assert_eq!(lock.waiting(), 1);
        drop(polled);
        assert_eq!(lock.waiting(), 0);
    });
    assert!(reports.is_empty(), "nothing reported: {reports:?}");
    lock.release().unwrap();
    assert!(!lock.locked(), "nobody was handed the lock");
}

// Rust-specific: a guard future handed the lock but dropped before it
// delivered the guard releases the lock, so the next waiter gets it
#[test]
fn dropping_a_guard_future_that_was_handed_the_lock_releases_it() {
    let lock = DeferredLock::new();
    let free = lock.acquire_guard();
    assert!(lock.locked(), "acquired when the future was made");
    drop(free);
    assert!(!lock.locked());

    lock.acquire();
    let mut fut = Box::pin(lock.acquire_guard());
    assert!(poll_once(fut.as_mut()).is_pending());
    let next = lock.acquire();
    lock.release().unwrap(); // handed to the future, which is not polled again
    assert!(lock.locked());
    assert!(!next.called());
    drop(fut);
    assert!(next.called(), "the drop released it to the next waiter");
}

// Rust-specific: the guard future under a foreign executor resolves once
// woken and the guard releases on drop
#[test]
fn guard_future_works_without_ensure_deferred() {
    let lock = DeferredLock::new();
    lock.acquire();
    let mut fut = pin!(lock.acquire_guard());
    assert!(poll_once(fut.as_mut()).is_pending());
    lock.release().unwrap();
    let guard = match poll_once(fut.as_mut()) {
        Poll::Ready(Ok(guard)) => guard,
        other => panic!("expected the guard, got {other:?}"),
    };
    assert!(guard.primitive().ptr_eq(&lock));
    assert!(lock.locked());
    // Polling again after completion is an error, not a panic.
    assert!(matches!(poll_once(fut.as_mut()), Poll::Ready(Err(_))));
    drop(guard);
    assert!(!lock.locked());
}

// Twisted: `_ConcurrencyPrimitive` (what run/async with share); a run nested
// in a run of the same lock waits for itself forever, as in Twisted
#[test]
fn generic_code_uses_the_concurrency_primitive_trait() {
    fn run_twice<P: ConcurrencyPrimitive>(p: &P) -> Deferred<i32> {
        let first = p.run(|| Ok(1));
        let q = p.clone();
        first.add_callback(move |x| q.run(move || Ok(x + 1)))
    }
    let lock = DeferredLock::new();
    assert_eq!(run_twice(&lock).result().value(), Some(2));
    assert!(!lock.locked());

    fn nested<P: ConcurrencyPrimitive>(p: &P) -> Deferred<i32> {
        let q = p.clone();
        p.run(move || q.run(|| Ok(2)))
    }
    let d = nested(&lock);
    assert!(
        d.called() && d.is_waiting(),
        "the outer run waits on the inner"
    );
    assert!(lock.locked());
    assert_eq!(lock.waiting(), 1, "the inner run waits for the lock");
    // The deadlock is a reference cycle (lock → waiting acquire → outer run
    // → lock) that only Python's collector would free; cancelling the outer
    // run reaches the waiting acquire and ends it.
    d.cancel().unwrap();
    assert!(is_cancelled(&d));
    assert_eq!(lock.waiting(), 0);
    assert!(
        !lock.locked(),
        "the outer run released the lock as it failed"
    );
    consume(&d);
}
