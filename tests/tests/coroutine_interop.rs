//! Coroutines and other executors: foreign (non-Deferred) futures awaited
//! inside `ensure_deferred` (`futures::channel::oneshot`, a future that
//! wakes itself), `from_future`, `run_wakeups`, and Deferreds awaited from
//! tokio (current-thread runtime, `LocalSet`) and from
//! `futures::executor::LocalPool`.
//!
//! Twisted behaviours these carry over: B102, B103 and P-10 (what an await
//! does to the awaited Deferred, in any executor), B69/E16 (an awaited
//! failure counts as handled), B105/E26 (a foreign awaitable that needs no
//! waiting passes straight through), B106/B107 (`from_future(..).await`
//! sees the `CancelledError` at that await), B140 (a Deferred consumed by
//! another event loop). Cancelling a coroutine suspended on a foreign
//! future drops it (its destructors run) and fails its Deferred with
//! `CancelledError`: the port's documented choice, Twisted having no such
//! case (it cannot await a foreign future at all, E26).

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures::channel::oneshot;
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use twisted_deferred::{
    AssertionError, CancelledError, Deferred, Failure, State, capture_unhandled_errors,
    ensure_deferred, fail, from_future, run_wakeups, succeed,
};

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

fn note(log: &Log<String>, entry: impl Into<String>) {
    log.borrow_mut().push(entry.into());
}

fn entries(log: &Log<String>) -> Vec<String> {
    log.borrow().clone()
}

fn failure_of<T: Clone + fmt::Debug + 'static>(d: &Deferred<T>) -> Failure {
    match d.result() {
        State::Failure(f) => f,
        other => panic!("expected a failure, found {other:?}"),
    }
}

/// True when `d` holds Python's `None` (what an await link leaves behind).
fn holds_none<T: 'static>(d: &Deferred<T>) -> bool {
    matches!(d.as_any().result(), State::Value(v) if v.is_none())
}

#[derive(Debug, Clone, PartialEq)]
struct SampleError(&'static str);

impl fmt::Display for SampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Error for SampleError {}

/// Notes `"<name> dropped"` when dropped: Python's `finally` block run by
/// `coroutine.close()`.
struct DropGuard {
    log: Log<String>,
    name: &'static str,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        note(&self.log, format!("{} dropped", self.name));
    }
}

fn guard(log: &Log<String>, name: &'static str) -> DropGuard {
    DropGuard {
        log: log.clone(),
        name,
    }
}

/// A coroutine doubling what it receives on `rx`, logging as it goes.
fn doubler(rx: oneshot::Receiver<u8>, log: &Log<String>) -> Deferred<u8> {
    let log = log.clone();
    ensure_deferred(async move {
        note(&log, "awaiting");
        let v = rx.await.map_err(Failure::new)?;
        note(&log, format!("resumed with {v}"));
        Ok::<_, Failure>(v * 2)
    })
}

// ---------------------------------------------------------------------------
// Foreign futures inside ensure_deferred
// ---------------------------------------------------------------------------

/// A oneshot completed on the coroutine's own thread wakes it, and it
/// resumes at once, inside `send()`.
// Twisted: B103 (resumed synchronously inside whatever completes what it awaits)
#[test]
fn oneshot_completed_on_the_same_thread_resumes_the_coroutine_inside_send() {
    let log = new_log();
    let (tx, rx) = oneshot::channel::<u8>();
    let d = doubler(rx, &log);
    assert!(!d.called());
    assert_eq!(entries(&log), ["awaiting"]);

    note(&log, "before send");
    tx.send(21).unwrap();
    note(&log, "after send");
    assert_eq!(
        entries(&log),
        ["awaiting", "before send", "resumed with 21", "after send"]
    );
    assert_eq!(d.result().value(), Some(42));
    assert_eq!(run_wakeups(), 0);
}

/// A oneshot completed from another thread: the coroutine does not resume
/// on that thread; it resumes when its own thread calls `run_wakeups()`,
/// which reports one resumption (and none on the next call).
// Twisted: B103 (the coroutine runs on its reactor thread; here `run_wakeups` is that loop's turn)
#[test]
fn oneshot_completed_from_another_thread_resumes_on_run_wakeups() {
    let log = new_log();
    let (tx, rx) = oneshot::channel::<u8>();
    let d = doubler(rx, &log);
    std::thread::spawn(move || tx.send(21).unwrap())
        .join()
        .unwrap();
    assert!(!d.called());
    assert_eq!(entries(&log), ["awaiting"]);

    assert_eq!(run_wakeups(), 1);
    assert_eq!(entries(&log), ["awaiting", "resumed with 21"]);
    assert_eq!(d.result().value(), Some(42));
    assert_eq!(run_wakeups(), 0);
}

/// A foreign future that wakes itself while being polled (a `yield_now`)
/// is polled again at once: the coroutine finishes inside
/// `ensure_deferred`.
// Twisted: experiment E26 (2) (`await asyncio.sleep(0)` passes straight through); B105
#[test]
fn foreign_future_that_wakes_itself_during_poll_passes_straight_through() {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                Poll::Ready(())
            } else {
                self.0 = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
    let d = ensure_deferred(async {
        YieldNow(false).await;
        YieldNow(false).await;
        Ok::<_, Failure>("sleep(0) passes straight through")
    });
    assert!(d.called());
    assert_eq!(d.result().value(), Some("sleep(0) passes straight through"));
    assert_eq!(run_wakeups(), 0);
}

/// A waker kept by a foreign future outlives its coroutine: waking it later
/// resumes nothing, not even a newer coroutine that took over the finished
/// one's place in the thread's waker registry.
// The port's own: Python has no wakers
#[test]
fn waker_of_a_finished_coroutine_wakes_no_other_coroutine() {
    /// Pending until its flag is set; counts its polls; keeps the waker.
    struct Gate {
        open: Rc<RefCell<bool>>,
        polls: Rc<RefCell<u32>>,
        kept: Rc<RefCell<Option<std::task::Waker>>>,
    }
    impl Future for Gate {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            *self.polls.borrow_mut() += 1;
            *self.kept.borrow_mut() = Some(cx.waker().clone());
            if *self.open.borrow() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }
    let gate = |open: &Rc<RefCell<bool>>, polls: &Rc<RefCell<u32>>, kept| Gate {
        open: open.clone(),
        polls: polls.clone(),
        kept,
    };
    let (open_a, polls_a, kept_a) = (
        Rc::new(RefCell::new(false)),
        Rc::new(RefCell::new(0)),
        Rc::new(RefCell::new(None)),
    );
    let a = ensure_deferred(gate(&open_a, &polls_a, kept_a.clone()).map_ok());
    *open_a.borrow_mut() = true;
    let stale = kept_a
        .borrow()
        .clone()
        .expect("the first poll kept a waker");
    stale.wake_by_ref();
    assert_eq!(
        a.result().value(),
        Some(()),
        "woken, the first coroutine finished"
    );
    drop(a);

    let (open_b, polls_b, kept_b) = (
        Rc::new(RefCell::new(false)),
        Rc::new(RefCell::new(0)),
        Rc::new(RefCell::new(None)),
    );
    let b = ensure_deferred(gate(&open_b, &polls_b, kept_b).map_ok());
    assert_eq!(*polls_b.borrow(), 1);
    stale.wake_by_ref();
    stale.wake();
    assert_eq!(
        *polls_b.borrow(),
        1,
        "a stale waker polled another coroutine"
    );
    assert!(!b.called());
    *open_b.borrow_mut() = true;
    b.cancel().unwrap();
    assert!(failure_of(&b).check::<CancelledError>());
}

/// Turns a `Gate`-like future into the `Result` `ensure_deferred` takes.
trait MapOk: Future<Output = ()> + Sized {
    fn map_ok(self) -> impl Future<Output = Result<(), Failure>> {
        async move {
            self.await;
            Ok(())
        }
    }
}

impl<F: Future<Output = ()>> MapOk for F {}

/// Cancelling a coroutine suspended on a foreign future drops it, inside
/// `cancel()` (a guard inside it runs its destructor; the code after the
/// await never runs), and fails its Deferred with `CancelledError`; the
/// dropped receiver shows as cancelled to the sender.
// Twisted: B106 (cancel while suspended); the drop is the port's documented choice for foreign futures
#[test]
fn cancel_while_awaiting_a_foreign_future_drops_the_coroutine() {
    let log = new_log();
    let (tx, rx) = oneshot::channel::<u8>();
    let l = log.clone();
    let d = ensure_deferred(async move {
        let _guard = guard(&l, "coroutine guard");
        let v = rx.await.map_err(Failure::new)?;
        note(&l, "after the await");
        Ok::<_, Failure>(v)
    });
    assert!(!d.called());

    note(&log, "cancel");
    d.cancel().unwrap();
    note(&log, "cancel returned");
    assert_eq!(
        entries(&log),
        ["cancel", "coroutine guard dropped", "cancel returned"]
    );
    assert!(failure_of(&d).check::<CancelledError>());
    assert!(!d.is_waiting());
    assert!(tx.is_canceled());
    assert_eq!(tx.send(5), Err(5));
    assert_eq!(entries(&log).len(), 3);
    assert_eq!(run_wakeups(), 0);
    d.add_errback(|_| Ok(0));
}

/// `from_future(fut).await`: the foreign future becomes a Deferred of its
/// own, so cancelling the coroutine cancels that Deferred (dropping the
/// future), and the coroutine sees `CancelledError` at that await, catches
/// it and returns normally.
// Twisted: CancellationTests.test_ErrorToSuccessTranslationStackedCoro (the awaited coroutine Deferred is cancelled, the awaiting one recovers); B106, B107
#[test]
fn from_future_await_sees_cancelled_error_at_that_await() {
    let log = new_log();
    let (tx, rx) = oneshot::channel::<u8>();
    let l = log.clone();
    let d = ensure_deferred(async move {
        let gl = l.clone();
        let fut = from_future(async move {
            let _guard = guard(&gl, "inner future guard");
            rx.await.map_err(Failure::new)
        });
        match fut.await {
            Err(f) if f.check::<CancelledError>() => {
                note(&l, "coroutine saw CancelledError at the await");
                Ok::<_, Failure>("recovered")
            }
            Err(f) => Err(f),
            Ok(_) => Ok("value"),
        }
    });
    assert!(!d.called());

    note(&log, "cancel");
    d.cancel().unwrap();
    note(&log, "cancel returned");
    assert_eq!(
        entries(&log),
        [
            "cancel",
            "inner future guard dropped",
            "coroutine saw CancelledError at the await",
            "cancel returned"
        ]
    );
    assert_eq!(d.result().value(), Some("recovered"));
    assert!(!d.is_waiting());
    assert!(tx.is_canceled());
}

/// `from_future` completes like any Deferred when its future does: the
/// awaiting coroutine resumes inside `send()`.
// Twisted: DeferredFutureAdapterTests.test_fromFuture (B141), delivered synchronously here
#[test]
fn from_future_delivers_the_future_output_to_the_awaiting_coroutine() {
    let log = new_log();
    let (tx, rx) = oneshot::channel::<u8>();
    let l = log.clone();
    let d = ensure_deferred(async move {
        let v = from_future(async move { rx.await.map_err(Failure::new) }).await?;
        note(&l, format!("resumed with {v}"));
        Ok::<_, Failure>(v + 1)
    });
    note(&log, "before send");
    tx.send(41).unwrap();
    note(&log, "after send");
    assert_eq!(
        entries(&log),
        ["before send", "resumed with 41", "after send"]
    );
    assert_eq!(d.result().value(), Some(42));
}

/// After a foreign await, the coroutine awaits a Deferred: a cancel now
/// reaches that Deferred (Twisted style, `CancelledError` at the await), it
/// does not drop the coroutine, which returns normally.
// Twisted: experiment E11 (4); B106
#[test]
fn cancel_after_a_foreign_await_reaches_the_deferred_awaited_next() {
    let log = new_log();
    let (tx, rx) = oneshot::channel::<u8>();
    let inner: Deferred<u8> = Deferred::new();
    let (i, l) = (inner.clone(), log.clone());
    let d = ensure_deferred(async move {
        let _guard = guard(&l, "coroutine guard");
        let a = rx.await.map_err(Failure::new)?;
        note(&l, format!("got {a}"));
        match i.await {
            Err(f) if f.check::<CancelledError>() => {
                note(&l, "saw CancelledError at the Deferred await");
                Ok::<_, Failure>(a)
            }
            other => other,
        }
    });
    tx.send(1).unwrap();
    assert_eq!(entries(&log), ["got 1"]);
    d.cancel().unwrap();
    assert_eq!(
        entries(&log),
        [
            "got 1",
            "saw CancelledError at the Deferred await",
            "coroutine guard dropped"
        ]
    );
    assert_eq!(d.result().value(), Some(1));
    assert!(holds_none(&inner));
}

/// The coroutine cancels its own Deferred before it ever awaited a
/// Deferred (here: after resuming from a foreign future, the only way a
/// Rust coroutine can hold its own Deferred that early): there is nothing
/// to cancel, the internal handler fails with `AssertionError`, which
/// becomes the Deferred's result, and the coroutine runs on to completion,
/// unobserved.
// Twisted: pitfall P-12 ("before any await: AssertionError"); experiment E11 (10c); B113
#[test]
fn self_cancel_before_awaiting_any_deferred_fails_with_assertion_error() {
    let log = new_log();
    let (tx, rx) = oneshot::channel::<u8>();
    let me: Rc<RefCell<Option<Deferred<&str>>>> = Rc::new(RefCell::new(None));
    let (m, l) = (me.clone(), log.clone());
    let d = ensure_deferred(async move {
        rx.await.map_err(Failure::new)?;
        let own = m
            .borrow()
            .clone()
            .expect("filled after ensure_deferred returned");
        let cancelled = own.cancel();
        note(&l, format!("cancel() returned ok={}", cancelled.is_ok()));
        note(&l, "kept running");
        Ok::<_, Failure>("x")
    });
    *me.borrow_mut() = Some(d.clone());
    tx.send(1).unwrap();
    assert_eq!(entries(&log), ["cancel() returned ok=true", "kept running"]);
    assert!(failure_of(&d).check::<AssertionError>());
    assert!(!d.is_waiting());
    me.borrow_mut().take();
    d.add_errback(|_| Ok(""));
}

// ---------------------------------------------------------------------------
// Deferreds awaited from futures::executor::LocalPool
// ---------------------------------------------------------------------------

type Outcome = Rc<RefCell<Option<Result<i32, String>>>>;

/// Spawns a task awaiting `d` on `pool`, storing what the await gave.
fn spawn_awaiter(pool: &LocalPool, d: &Deferred<i32>) -> Outcome {
    let out: Outcome = Rc::new(RefCell::new(None));
    let (d, o) = (d.clone(), out.clone());
    pool.spawner()
        .spawn_local(async move {
            let r = d.await.map_err(|f| f.message());
            *o.borrow_mut() = Some(r);
        })
        .unwrap();
    out
}

/// A task of a `LocalPool` awaits an unfired Deferred, which another task
/// of the pool fires: the waker only schedules the awaiting task, which
/// then gets the value; the Deferred holds `None` afterwards.
// Twisted: DeferredFutureAdapterTests.test_asFuture (B140: delivered to another loop, `None` left); B103
#[test]
fn local_pool_task_gets_the_value_of_a_deferred_fired_after_the_await() {
    let mut pool = LocalPool::new();
    let d: Deferred<i32> = Deferred::new();
    let out = spawn_awaiter(&pool, &d);
    pool.run_until_stalled();
    assert!(out.borrow().is_none());

    let log = new_log();
    let (dd, o, l) = (d.clone(), out.clone(), log.clone());
    pool.spawner()
        .spawn_local(async move {
            dd.callback(7).unwrap();
            note(
                &l,
                format!(
                    "right after callback: awaiter done={}",
                    o.borrow().is_some()
                ),
            );
        })
        .unwrap();
    pool.run_until_stalled();
    assert_eq!(entries(&log), ["right after callback: awaiter done=false"]);
    assert_eq!(*out.borrow(), Some(Ok(7)));
    assert!(holds_none(&d));
}

/// A `LocalPool` task awaiting a Deferred that fails later gets the
/// failure; the Deferred is consumed (holds `None`) and reports nothing.
// Twisted: DeferredFutureAdapterTests.test_asFutureFailure (B140); B103
#[test]
fn local_pool_task_gets_the_failure_of_a_deferred_failing_after_the_await() {
    let ((), reports) = capture_unhandled_errors(|| {
        let mut pool = LocalPool::new();
        let d: Deferred<i32> = Deferred::new();
        let out = spawn_awaiter(&pool, &d);
        pool.run_until_stalled();
        assert!(out.borrow().is_none());
        d.errback(SampleError("later")).unwrap();
        assert!(out.borrow().is_none());
        pool.run_until_stalled();
        assert_eq!(*out.borrow(), Some(Err("later".to_owned())));
        assert!(holds_none(&d));
        drop(d);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

/// A `LocalPool` task awaiting Deferreds fired before the await: the
/// value, and the failure, come at once and stay in place; the awaited
/// failure counts as handled (no report when dropped).
// Twisted: pitfall P-10; experiment E16 (awaited failed Deferred); B102, B69
#[test]
fn local_pool_task_awaiting_already_fired_deferreds_leaves_their_results_in_place() {
    let ((), reports) = capture_unhandled_errors(|| {
        let mut pool = LocalPool::new();
        let ok = succeed(7);
        let bad: Deferred<i32> = fail(SampleError("before"));
        let (got_ok, got_bad) = (spawn_awaiter(&pool, &ok), spawn_awaiter(&pool, &bad));
        pool.run_until_stalled();
        assert_eq!(*got_ok.borrow(), Some(Ok(7)));
        assert_eq!(*got_bad.borrow(), Some(Err("before".to_owned())));
        assert_eq!(ok.result().value(), Some(7));
        assert!(failure_of(&bad).check::<SampleError>());
        drop(bad);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

// ---------------------------------------------------------------------------
// Deferreds awaited from tokio (current-thread runtime, LocalSet)
// ---------------------------------------------------------------------------

fn on_tokio_local_set<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// Yields to the LocalSet until `done()` holds (at most 100 times).
async fn yield_until(done: impl Fn() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the condition never held");
}

/// Runs an awaiting task and a firing task on a tokio `LocalSet`: the
/// waiter suspends, the other task fires `d` with `fire`, then the waiter
/// resumes. Returns what the await gave, with the log of events.
fn tokio_await_fired_later(
    d: &Deferred<i32>,
    fire: impl FnOnce(&Deferred<i32>) + 'static,
) -> (Result<i32, String>, Vec<String>) {
    let log = new_log();
    let (d, l) = (d.clone(), log.clone());
    let got = on_tokio_local_set(async move {
        let (dd, wl) = (d.clone(), l.clone());
        let waiter = tokio::task::spawn_local(async move {
            note(&wl, "awaiting");
            let r = dd.await.map_err(|f| f.message());
            note(&wl, "resumed");
            r
        });
        let waiting = l.clone();
        yield_until(move || entries(&waiting).contains(&"awaiting".to_owned())).await;
        let fl = l.clone();
        tokio::task::spawn_local(async move {
            note(&fl, "firing");
            fire(&d);
            note(&fl, "fired");
        })
        .await
        .unwrap();
        waiter.await.unwrap()
    });
    (got, entries(&log))
}

/// A task on a tokio `LocalSet` awaits an unfired Deferred that another
/// task fires: the waiter resumes after the firing task, with the value;
/// the Deferred holds `None` afterwards.
// Twisted: DeferredFutureAdapterTests.test_asFuture (B140); B103
#[test]
fn tokio_local_task_gets_the_value_of_a_deferred_fired_after_the_await() {
    let d: Deferred<i32> = Deferred::new();
    let (got, log) = tokio_await_fired_later(&d, |d| d.callback(7).unwrap());
    assert_eq!(got, Ok(7));
    assert_eq!(log, ["awaiting", "firing", "fired", "resumed"]);
    assert!(holds_none(&d));
}

/// The same with a failure: the waiter gets it, the Deferred is consumed
/// and reports nothing.
// Twisted: DeferredFutureAdapterTests.test_asFutureFailure (B140); B103
#[test]
fn tokio_local_task_gets_the_failure_of_a_deferred_failing_after_the_await() {
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<i32> = Deferred::new();
        let (got, log) = tokio_await_fired_later(&d, |d| d.errback(SampleError("later")).unwrap());
        assert_eq!(got, Err("later".to_owned()));
        assert_eq!(log, ["awaiting", "firing", "fired", "resumed"]);
        assert!(holds_none(&d));
        drop(d);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

/// Deferreds fired before the await, awaited in a tokio current-thread
/// runtime: the value and the failure come at once and stay in place; the
/// awaited failure counts as handled.
// Twisted: pitfall P-10; experiment E16 (awaited failed Deferred); B102, B69
#[test]
fn tokio_awaiting_already_fired_deferreds_leaves_their_results_in_place() {
    let ((), reports) = capture_unhandled_errors(|| {
        let ok = succeed(7);
        let bad: Deferred<i32> = fail(SampleError("before"));
        let (o, b) = (ok.clone(), bad.clone());
        let (got_ok, got_bad) = on_tokio_local_set(async move {
            let got_ok = o.await.map_err(|f| f.message());
            let got_bad = b.await.map_err(|f| f.message());
            (got_ok, got_bad)
        });
        assert_eq!(got_ok, Ok(7));
        assert_eq!(got_bad, Err("before".to_owned()));
        assert_eq!(ok.result().value(), Some(7));
        assert!(failure_of(&bad).check::<SampleError>());
        drop(bad);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

/// A tokio task awaits a coroutine's Deferred; the coroutine awaits a
/// Deferred that another tokio task fires: the coroutine resumes inside
/// that `callback()`, and the tokio task then gets its result.
// Twisted: AwaitTests.test_twoDeep (a coroutine resumed by whoever fires what it awaits); B103
#[test]
fn tokio_task_awaits_a_coroutine_deferred_resumed_by_another_task() {
    let log = new_log();
    let inner: Deferred<i32> = Deferred::new();
    let (i, l) = (inner.clone(), log.clone());
    let got = on_tokio_local_set(async move {
        let cl = l.clone();
        let co = ensure_deferred(async move {
            let v = i.await?;
            note(&cl, format!("coroutine resumed with {v}"));
            Ok::<_, Failure>(v * 10)
        });
        let c = co.clone();
        let waiter = tokio::task::spawn_local(async move { c.await.map_err(|f| f.message()) });
        tokio::task::yield_now().await;
        let fl = l.clone();
        tokio::task::spawn_local(async move {
            note(&fl, "before callback");
            inner.callback(4).unwrap();
            note(
                &fl,
                format!("after callback: coroutine done={}", co.called()),
            );
        })
        .await
        .unwrap();
        waiter.await.unwrap()
    });
    assert_eq!(got, Ok(40));
    assert_eq!(
        entries(&log),
        [
            "before callback",
            "coroutine resumed with 4",
            "after callback: coroutine done=true"
        ]
    );
}
