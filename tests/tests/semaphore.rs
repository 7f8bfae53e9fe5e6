//! `DeferredSemaphore`: tokens and limit, FIFO hand-off inside `release()`,
//! cancelling waiting and held acquires, `run`, `async with`, and the errors
//! (invalid token count, over-release).
//!
//! Twisted behaviours covered: B134, B135, B136 (catalogue section 2.16),
//! experiment E15 (part 3) and the message texts of section 3.2. Cases
//! marked "experiment" were checked against Twisted 26.10.0 by hand; the
//! Python output is quoted next to each.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use twisted_deferred::{
    AlreadyCalledError, AnyValue, AssertionError, CancelledError, Deferred, DeferredSemaphore,
    Failure, InvalidTokensError, State, capture_unhandled_errors, ensure_deferred,
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

fn semaphore(tokens: usize) -> DeferredSemaphore {
    DeferredSemaphore::new(tokens).expect("tokens >= 1")
}

/// Handles a Deferred's failure, so that dropping it reports nothing.
fn consume<T: 'static>(d: &Deferred<T>) {
    d.as_any().add_errback(|_| Ok(AnyValue::new(())));
}

fn is_cancelled<T: Clone + 'static>(d: &Deferred<T>) -> bool {
    matches!(d.result(), State::Failure(f) if f.check::<CancelledError>())
}

/// `self._incr`: counts calls, whatever the result.
fn incr<T>(counter: &Rc<Cell<usize>>) -> impl FnOnce(T) -> Result<(), Failure> + 'static {
    let c = counter.clone();
    move |_| {
        c.set(c.get() + 1);
        Ok(())
    }
}

// Twisted: OtherPrimitivesTests.testSemaphore, ported step by step
#[test]
fn test_semaphore() {
    const N: usize = 13;
    let sem = semaphore(N);
    let counter = Rc::new(Cell::new(0usize));

    // resultDeferred = sem.run(helper, arg=uniqueObject)
    let control: Deferred<()> = Deferred::new();
    let helper_arg: Rc<RefCell<Option<&str>>> = Rc::new(RefCell::new(None));
    let (h, c) = (helper_arg.clone(), control.clone());
    let result_deferred = sem.run(move || {
        *h.borrow_mut() = Some("uniqueObject");
        c
    });
    let results: Rc<RefCell<Vec<()>>> = Rc::new(RefCell::new(Vec::new()));
    let r = results.clone();
    result_deferred
        .add_callback(move |v: ()| {
            r.borrow_mut().push(v);
            Ok(())
        })
        .add_callback(incr(&counter));
    assert!(results.borrow().is_empty());
    assert_eq!(*helper_arg.borrow(), Some("uniqueObject"));
    control.callback(()).unwrap();
    assert_eq!(results.borrow_mut().pop(), Some(()));
    assert_eq!(counter.get(), 1);

    counter.set(0);
    for i in 1..=N {
        sem.acquire().add_callback(incr(&counter));
        assert_eq!(counter.get(), i);
    }

    // d = sem.acquire().addCallbacks(fail, succeed); d.cancel()
    let success = Rc::new(RefCell::new(Vec::new()));
    let (s1, s2) = (success.clone(), success.clone());
    let d = sem.acquire().add_callbacks(
        move |_| {
            s1.borrow_mut().push(false);
            Ok(())
        },
        move |_| {
            s2.borrow_mut().push(true);
            Ok(())
        },
    );
    d.cancel().unwrap();
    assert_eq!(*success.borrow(), [true]);

    sem.acquire().add_callback(incr(&counter));
    assert_eq!(counter.get(), N);

    sem.release().unwrap();
    assert_eq!(counter.get(), N + 1);

    for _ in 1..=N {
        sem.release().unwrap();
        assert_eq!(counter.get(), N + 1);
    }
    assert_eq!(sem.tokens(), N);
}

// Twisted: OtherPrimitivesTests.test_semaphoreInvalidTokens; experiment E15
// part 3 ("DeferredSemaphore(0): DeferredSemaphore requires tokens >= 1")
#[test]
fn semaphore_with_fewer_than_one_token_is_an_error() {
    let err = DeferredSemaphore::new(0).unwrap_err();
    assert!(err.check::<InvalidTokensError>());
    assert_eq!(err.message(), "DeferredSemaphore requires tokens >= 1");
    assert!(DeferredSemaphore::new(1).is_ok());
}

// Twisted: OtherPrimitivesTests.test_cancelSemaphoreAfterAcquired
#[test]
fn cancel_semaphore_after_acquired_has_no_effect() {
    let sem = semaphore(1);
    let d = sem.acquire();
    let errbacks = Rc::new(Cell::new(0));
    let e = errbacks.clone();
    d.add_errback(move |f: Failure| {
        e.set(e.get() + 1);
        Err(f)
    });
    d.cancel().unwrap();
    assert_eq!(errbacks.get(), 0, "Unexpected errback call!");
    assert!(d.result().value().unwrap().ptr_eq(&sem));
    assert_eq!(sem.tokens(), 0, "the token is still taken");
}

// Twisted: OtherPrimitivesTests.test_cancelSemaphoreBeforeAcquired;
// experiment E15 part 3 ("cancel waiting: FAIL CancelledError | waiting: 0")
#[test]
fn cancel_semaphore_before_acquired_fails_with_cancelled_error() {
    let sem = semaphore(1);
    sem.acquire();
    let d = sem.acquire();
    assert_eq!(sem.waiting(), 1);
    d.cancel().unwrap();
    // assertImmediateFailure(d, CancelledError)
    let failures = Rc::new(RefCell::new(Vec::new()));
    let (sink, s) = (failures.clone(), sem.clone());
    d.add_errback(move |f: Failure| {
        sink.borrow_mut().push(f);
        Ok(s)
    });
    assert_eq!(failures.borrow().len(), 1);
    assert!(failures.borrow()[0].check::<CancelledError>());
    assert_eq!(sem.waiting(), 0);
    assert_eq!(sem.tokens(), 0);
}

// Twisted: B136; experiment E15 part 3 ("3 semaphore: DeferredSemaphore
// DeferredSemaphore unfired | tokens: 0 | limit: 2")
#[test]
fn acquire_takes_free_tokens_then_waits() {
    let sem = semaphore(2);
    assert_eq!((sem.tokens(), sem.limit(), sem.waiting()), (2, 2, 0));
    let (a, b, c) = (sem.acquire(), sem.acquire(), sem.acquire());
    assert!(a.result().value().unwrap().ptr_eq(&sem));
    assert!(b.result().value().unwrap().ptr_eq(&sem));
    assert!(!c.called());
    assert_eq!((sem.tokens(), sem.limit(), sem.waiting()), (0, 2, 1));
}

// Twisted: B136 (FIFO, hand-off inside release); experiment: the released
// token goes straight to the waiter, so tokens stay 0 (7 True 0 0)
#[test]
fn release_hands_the_token_to_the_first_waiter_inside_release() {
    let sem = semaphore(1);
    let log = new_log();
    sem.acquire();
    for name in ["w1", "w2"] {
        let l = log.clone();
        sem.acquire().add_callback(move |_| {
            push(&l, format!("{name} got a token"));
            Ok(())
        });
    }
    push(&log, "before release");
    sem.release().unwrap();
    push(&log, "after release");
    assert_eq!(
        entries(&log),
        ["before release", "w1 got a token", "after release"]
    );
    assert_eq!((sem.tokens(), sem.waiting()), (0, 1));
    sem.release().unwrap();
    assert_eq!(entries(&log).last().unwrap(), "w2 got a token");
    assert_eq!((sem.tokens(), sem.waiting()), (0, 0));
    sem.release().unwrap();
    assert_eq!(sem.tokens(), 1);
}

// Twisted: B136; experiment E15 part 3
// ("over-release: Someone released me too many times: too many tokens!")
#[test]
fn releasing_more_than_acquired_is_an_assertion_error() {
    let sem = semaphore(2);
    let c = {
        sem.acquire();
        sem.acquire();
        sem.acquire()
    };
    c.cancel().unwrap();
    consume(&c);
    sem.release().unwrap();
    sem.release().unwrap();
    let err = sem.release().unwrap_err();
    let assertion = err
        .downcast_ref::<AssertionError>()
        .expect("AssertionError");
    assert_eq!(
        assertion.message,
        "Someone released me too many times: too many tokens!"
    );
    assert_eq!(sem.tokens(), 2, "unchanged");
    // Never acquired at all.
    assert!(
        semaphore(1)
            .release()
            .unwrap_err()
            .check::<AssertionError>()
    );
}

// Twisted: B133/B136 (a cancelled waiter is never served)
#[test]
fn a_cancelled_waiter_is_never_handed_a_token() {
    let sem = semaphore(1);
    let log = new_log();
    sem.acquire();
    let waiters: Vec<Deferred<()>> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let l = log.clone();
            sem.acquire().add_callback(move |_| {
                push(&l, name);
                Ok(())
            })
        })
        .collect();
    waiters[1].cancel().unwrap();
    assert!(is_cancelled(&waiters[1]));
    consume(&waiters[1]);
    assert_eq!(sem.waiting(), 2);
    sem.release().unwrap();
    sem.release().unwrap();
    assert_eq!(entries(&log), ["a", "c"]);
    assert_eq!(sem.waiting(), 0);
}

// Twisted: B134; experiment: run() keeps at most `limit` functions running,
// starting the others first come, first served as tokens come back
// ([('start', 0), ('start', 1)] 0 3 ... [0, 1, 2, 3, 4] 2)
#[test]
fn run_limits_concurrency_and_starts_waiters_in_order() {
    let sem = semaphore(2);
    let log = new_log();
    let controls: Vec<Deferred<usize>> = (0..5).map(|_| Deferred::new()).collect();
    let runs: Vec<Deferred<usize>> = (0..5)
        .map(|i| {
            let (l, c) = (log.clone(), controls[i].clone());
            sem.run(move || {
                push(&l, format!("start {i}"));
                c
            })
        })
        .collect();
    assert_eq!(entries(&log), ["start 0", "start 1"]);
    assert_eq!((sem.tokens(), sem.waiting()), (0, 3));
    controls[1].callback(1).unwrap();
    assert_eq!(entries(&log), ["start 0", "start 1", "start 2"]);
    controls[0].callback(0).unwrap();
    assert_eq!(entries(&log), ["start 0", "start 1", "start 2", "start 3"]);
    assert_eq!((sem.tokens(), sem.waiting()), (0, 1));
    for (i, c) in controls.iter().enumerate().skip(2) {
        c.callback(i).unwrap();
    }
    let results: Vec<Option<usize>> = runs.iter().map(|r| r.result().value()).collect();
    assert_eq!(results, [Some(0), Some(1), Some(2), Some(3), Some(4)]);
    assert_eq!(sem.tokens(), 2);
}

// Twisted: B134; experiment: a failing function gives its token back
// (10 FAIL ZeroDivisionError division by zero 2)
#[test]
fn run_releases_when_f_fails() {
    let sem = semaphore(2);
    let r = sem.run(|| Err::<(), _>(Failure::msg("division by zero")));
    assert_eq!(r.result().failure().unwrap().message(), "division by zero");
    assert_eq!(sem.tokens(), 2);
    consume(&r);
}

// Twisted: B134 (a coroutine function is run through maybeDeferred)
#[test]
fn run_async_holds_a_token_while_the_coroutine_runs() {
    let sem = semaphore(1);
    let gate: Deferred<&str> = Deferred::new();
    let (g, s) = (gate.clone(), sem.clone());
    let r = sem.run_async(move || async move {
        let v = g.await?;
        Ok::<_, Failure>((v, s.tokens()))
    });
    assert_eq!(sem.tokens(), 0);
    gate.callback("done").unwrap();
    assert_eq!(r.result().value(), Some(("done", 0)));
    assert_eq!(sem.tokens(), 1);
}

// Twisted: B136; experiment: a waiter fired by hand makes release() raise
// AlreadyCalledError and its token is lost (1 AlreadyCalledError 0 1 /
// 1b True 0 0)
#[test]
fn release_to_a_waiter_fired_by_hand_raises_already_called_error() {
    let sem = semaphore(1);
    sem.acquire();
    let w = sem.acquire();
    let w2 = sem.acquire();
    w.callback(semaphore(5)).unwrap();
    let err = sem.release().unwrap_err();
    assert!(err.check::<AlreadyCalledError>());
    assert_eq!((sem.tokens(), sem.waiting()), (0, 1));
    sem.release().unwrap();
    assert!(w2.called());
    assert_eq!((sem.tokens(), sem.waiting()), (0, 0));
}

// Twisted: CoroutineContextVarsTests.test_asyncWithSemaphore
#[test]
fn async_with_semaphore() {
    let sem = semaphore(3);
    let s = sem.clone();
    let test = ensure_deferred(async move {
        {
            let _outer = s.acquire_guard().await?; // async with sem:
            assert_eq!(s.tokens(), 2);
            let (d1, d2) = {
                let _inner = s.acquire_guard().await?; // async with sem:
                assert_eq!(s.tokens(), 1);
                let d1 = s.acquire();
                let d2 = s.acquire();
                assert_eq!(s.tokens(), 0);
                assert!(d1.called());
                assert!(!d2.called());
                (d1, d2)
            };
            assert_eq!(s.tokens(), 0);
            assert!(d2.called());
            let d1 = d1.add_callback(|held: DeferredSemaphore| held.release());
            let d2 = d2.add_callback(|held: DeferredSemaphore| held.release());
            d1.await?;
            d2.await?;
            assert_eq!(s.tokens(), 2);
        }
        assert_eq!(s.tokens(), 3);
        Ok::<_, Failure>("done")
    });
    assert_eq!(test.result().value(), Some("done"));
}

// Twisted: B135 + B136; a coroutine cancelled while `async with sem:` waits
// withdraws its acquire
#[test]
fn cancelling_a_coroutine_waiting_in_async_with_withdraws_its_acquire() {
    let sem = semaphore(1);
    sem.acquire();
    let s = sem.clone();
    let ((), reports) = capture_unhandled_errors(|| {
        let body = ensure_deferred(async move {
            let _g = s.acquire_guard().await?;
            Ok::<_, Failure>(())
        });
        assert_eq!(sem.waiting(), 1);
        body.cancel().unwrap();
        assert!(is_cancelled(&body));
        consume(&body);
    });
    assert!(reports.is_empty());
    assert_eq!(sem.waiting(), 0);
    sem.release().unwrap();
    assert_eq!(sem.tokens(), 1);
}

// Rust-specific: Debug shows the counters
#[test]
fn debug_shows_tokens_limit_and_waiters() {
    let sem = semaphore(2);
    sem.acquire();
    assert_eq!(
        format!("{sem:?}"),
        "DeferredSemaphore { tokens: 1, limit: 2, waiting: 0 }"
    );
}
