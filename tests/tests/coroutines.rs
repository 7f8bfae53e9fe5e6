//! Coroutines on Deferreds: `ensure_deferred` / `Deferred::from_coroutine`
//! and `.await` on a Deferred, driven without an executor.
//!
//! Twisted behaviours covered (catalogue section 2.13): B101, B102, B103,
//! B104 (with E27 in the dynamic mode), B105 (plain `async fn` nesting is
//! delegation), B106, B107, B108, B109, B110, B111, B112, B113 (the part a
//! Rust coroutine can reach: self-cancel after a suspension), B69 (await of a
//! failed Deferred marks it handled), with pitfalls P-10, P-11, P-12 and
//! experiments E11, E12, E16, E25, E27, and Twisted's
//! `assert self._debugInfo is not None` in `Deferred.__iter__` (awaiting a
//! failed Deferred that never finished a run holding its failure).
//!
//! Foreign (non-Deferred) futures and other executors are in
//! `coroutine_interop.rs`.
//!
//! One test is `#[ignore]`d: a typed coroutine awaiting a Deferred from
//! inside that Deferred's own callback, where the port cannot give Twisted's
//! outcome (a typed callback owns its input while it runs); the dynamic-mode
//! twin passes.
//!
//! Not covered here: B99/B100 (`NotACoroutineError`: the Rust signature only
//! accepts futures), B114 (context variables: no Rust equivalent), B115 (the
//! `__await__` iterator protocol).

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use twisted_deferred::{
    AnyValue, AssertionError, CancelledError, Deferred, Failure,
    InternalInlineCallbacksCancelledError, Outcome, PanicError, ResultTypeError, State,
    capture_unhandled_errors, ensure_deferred, fail, succeed, succeed_with_failure,
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

/// The failure `d` holds; panics with what it holds instead.
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

/// True when `d`'s current result is a Deferred (Twisted: `isinstance(d.result, Deferred)`).
fn holds_deferred<T: Clone + 'static>(d: &Deferred<T>) -> bool {
    matches!(d.result(), State::Waiting(_))
}

macro_rules! message_errors {
    ($($name:ident),* $(,)?) => {$(
        #[derive(Debug, Clone, PartialEq)]
        struct $name(&'static str);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }

        impl Error for $name {}
    )*};
}

message_errors!(
    KeyError,
    ValueError,
    SampleError,
    UntranslatedError,
    TranslatedError,
    CancellerError,
);

/// `test_inlinecb.DontFail`: an error carrying the value to recover with.
#[derive(Debug, Clone, PartialEq)]
struct DontFail(i64);

impl fmt::Display for DontFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "don't fail: {}", self.0)
    }
}

impl Error for DontFail {}

/// Panics with `message`; typed as returning a value so that code after a
/// call is not flagged as unreachable.
fn explode(message: &'static str) -> i32 {
    panic!("{message}")
}

// ---------------------------------------------------------------------------
// Synchronous start (B101)
// ---------------------------------------------------------------------------

/// The body runs inside `ensure_deferred` up to the first await on a
/// Deferred without a result; awaiting an already-fired Deferred does not
/// suspend. The rest runs inside the `callback()` that fires the awaited
/// Deferred, which holds `None` afterwards.
// Twisted: experiment E11 (1); AwaitTests.test_basic
#[test]
fn body_runs_synchronously_until_it_awaits_an_unfired_deferred() {
    let log = new_log();
    let inner: Deferred<i32> = Deferred::new();
    let d = {
        let (log, inner) = (log.clone(), inner.clone());
        ensure_deferred(async move {
            note(&log, "started");
            let x = succeed("ready").await?;
            note(&log, format!("got {x}"));
            let y = inner.await?;
            note(&log, format!("resumed with {y}"));
            Ok::<_, Failure>(y * 2)
        })
    };
    note(&log, "ensure_deferred returned");
    assert_eq!(
        entries(&log),
        ["started", "got ready", "ensure_deferred returned"]
    );
    assert!(!d.called());
    assert!(d.result().is_pending());
    assert!(inner.result().is_pending());

    inner.callback(21).unwrap();
    note(&log, "callback returned");
    assert_eq!(
        entries(&log),
        [
            "started",
            "got ready",
            "ensure_deferred returned",
            "resumed with 21",
            "callback returned"
        ]
    );
    assert_eq!(d.result().value(), Some(42));
    assert!(holds_none(&inner));
}

async fn run2() -> Result<&'static str, Failure> {
    succeed("foo").await
}

async fn run() -> Result<&'static str, Failure> {
    succeed("bar").await?;
    run2().await
}

/// A coroutine that never awaits an unfired Deferred has finished when
/// `ensure_deferred` (or `Deferred::from_coroutine`) returns.
// Twisted: AwaitTests.test_basic, AwaitTests.test_basicEnsureDeferred, AwaitTests.test_deferredFromCoroutine
#[test]
fn coroutine_that_never_suspends_returns_an_already_fired_deferred() {
    let d = ensure_deferred(async { succeed("foo").await });
    assert!(d.called());
    assert_eq!(d.paused(), 0);
    assert!(!d.is_waiting());
    assert_eq!(d.result().value(), Some("foo"));

    let d = Deferred::from_coroutine(run());
    assert!(d.called());
    assert_eq!(d.result().value(), Some("foo"));
}

/// An error returned before the first await fails the Deferred;
/// `ensure_deferred` itself returns normally.
// Twisted: experiment E25 (2)
#[test]
fn error_before_the_first_await_is_captured_in_the_deferred() {
    let log = new_log();
    let l = log.clone();
    let d: Deferred<i32> = ensure_deferred(async move {
        note(&l, "body");
        Err(Failure::new(ValueError("before any await")))
    });
    note(&log, "ensure_deferred returned");
    assert_eq!(entries(&log), ["body", "ensure_deferred returned"]);
    assert!(d.called());
    let f = failure_of(&d);
    assert!(f.check::<ValueError>());
    assert_eq!(f.message(), "before any await");
    d.add_errback(|_| Ok(0));
}

/// An error raised after an await that did not suspend fails the Deferred
/// with that very error.
// Twisted: AwaitTests.test_exception
#[test]
fn error_after_an_await_fails_the_deferred() {
    let d: Deferred<()> = ensure_deferred(async {
        succeed("foo").await?;
        Err(Failure::new(ValueError("Oh no!")))
    });
    let f = failure_of(&d);
    assert_eq!(f.downcast_ref::<ValueError>(), Some(&ValueError("Oh no!")));
    d.add_errback(|_| Ok(()));
}

/// A panic before the first await becomes a `PanicError` failure of the
/// coroutine's Deferred; nothing unwinds out of `ensure_deferred`.
// Twisted: experiment E25 (2) (an exception raised before any await is captured)
#[test]
fn panic_before_the_first_await_becomes_a_panic_error_failure() {
    let d = ensure_deferred(async {
        let v = explode("before any await");
        Ok::<_, Failure>(v)
    });
    assert!(d.called());
    let f = failure_of(&d);
    assert_eq!(
        f.downcast_ref::<PanicError>().map(|p| p.message.as_str()),
        Some("before any await")
    );
    d.add_errback(|_| Ok(0));
}

// ---------------------------------------------------------------------------
// Resumption inside callback() (B103)
// ---------------------------------------------------------------------------

async fn run_one(sections: Log<String>, d: Deferred<i32>) -> Result<&'static str, Failure> {
    note(&sections, "2");
    d.await?;
    note(&sections, "3");
    Ok("Yay!")
}

async fn run_two_deep(
    sections: Log<String>,
    d1: Deferred<i32>,
    d2: Deferred<i32>,
) -> Result<&'static str, Failure> {
    note(&sections, "1");
    let result = run_one(sections.clone(), d1).await?;
    note(&sections, "4");
    d2.await?;
    note(&sections, "5");
    Ok(result)
}

/// The coroutine resumes on the stack of the `callback()` that fires the
/// awaited Deferred: markers pushed just before and just after `callback()`
/// bracket everything the coroutine does until its next suspension,
/// including what an `async fn` it awaits does.
// Twisted: AwaitTests.test_twoDeep, StackedInlineCallbacksTests.test_nonCalledDeferredSingleYieldCoro
#[test]
fn resumption_runs_inside_the_callback_that_fires_the_awaited_deferred() {
    let sections = new_log();
    let (d1, d2) = (Deferred::<i32>::new(), Deferred::<i32>::new());
    let d = ensure_deferred(run_two_deep(sections.clone(), d1.clone(), d2.clone()));
    assert_eq!(entries(&sections), ["1", "2"]);

    note(&sections, "before d1.callback");
    d1.callback(2).unwrap();
    note(&sections, "after d1.callback");
    assert_eq!(
        entries(&sections),
        [
            "1",
            "2",
            "before d1.callback",
            "3",
            "4",
            "after d1.callback"
        ]
    );
    assert!(!d.called());

    note(&sections, "before d2.callback");
    d2.callback(1).unwrap();
    note(&sections, "after d2.callback");
    assert_eq!(
        entries(&sections)[6..],
        ["before d2.callback", "5", "after d2.callback"]
    );
    assert_eq!(d.result().value(), Some("Yay!"));
}

/// An error the resumed coroutine returns goes to its Deferred: the
/// `callback()` that resumed it returns `Ok`.
// Twisted: experiment E25 (3); AwaitTests.test_exception
#[test]
fn error_after_resumption_goes_to_the_coroutine_deferred_not_out_of_callback() {
    let inner: Deferred<i32> = Deferred::new();
    let i = inner.clone();
    let d: Deferred<()> = ensure_deferred(async move {
        i.await?;
        Err(Failure::new(KeyError("after resume")))
    });
    assert!(inner.callback(1).is_ok());
    let f = failure_of(&d);
    assert_eq!(
        f.downcast_ref::<KeyError>(),
        Some(&KeyError("after resume"))
    );
    assert!(holds_none(&inner));
    d.add_errback(|_| Ok(()));
}

/// A panic in the resumed coroutine becomes a `PanicError` failure of its
/// Deferred; `callback()` returns `Ok` and the awaited Deferred goes on.
// Twisted: experiment E25 (3) (raised after resumption: to D, not to the caller of callback())
#[test]
fn panic_after_resumption_becomes_a_panic_error_failure_of_the_coroutine_deferred() {
    let inner: Deferred<i32> = Deferred::new();
    let i = inner.clone();
    let d = ensure_deferred(async move {
        let x = i.await?;
        let v = if x == 1 {
            explode("panicked after resume")
        } else {
            x
        };
        Ok::<_, Failure>(v)
    });
    let after = new_log();
    let a = after.clone();
    inner.cast::<()>().add_both(move |r: Result<(), Failure>| {
        note(&a, format!("next link saw ok={}", r.is_ok()));
        r
    });
    assert!(inner.callback(1).is_ok());
    let f = failure_of(&d);
    assert_eq!(
        f.downcast_ref::<PanicError>().map(|p| p.message.as_str()),
        Some("panicked after resume")
    );
    assert_eq!(entries(&after), ["next link saw ok=true"]);
    assert!(holds_none(&inner));
    d.add_errback(|_| Ok(0));
}

/// A Deferred that fails after the coroutine awaited it throws its failure
/// in at the await; the awaited Deferred is left holding `None` (so it is
/// never reported), and the coroutine's Deferred fails with it.
// Twisted: AwaitTests.test_asyncDeferredFailureTraceback; B103
#[test]
fn awaited_deferred_failing_later_raises_at_the_await_and_is_consumed() {
    let ((), reports) = capture_unhandled_errors(|| {
        let it: Deferred<()> = Deferred::new();
        let seen = new_log();
        let (i, s) = (it.clone(), seen.clone());
        let d: Deferred<()> = ensure_deferred(async move {
            let r = i.await;
            note(
                &s,
                format!("await gave {:?}", r.as_ref().map_err(Failure::message)),
            );
            r
        });
        assert!(d.result().is_pending());
        it.errback(SampleError("sample")).unwrap();
        assert_eq!(entries(&seen), [r#"await gave Err("sample")"#]);
        assert!(failure_of(&d).check::<SampleError>());
        assert!(holds_none(&it));
        drop(it);
        drop(d);
    });
    // Only the coroutine's Deferred reports: the awaited one was consumed.
    assert_eq!(reports.len(), 1);
    assert!(reports[0].check::<SampleError>());
}

// ---------------------------------------------------------------------------
// What `.await` does to the awaited Deferred (B102, B103, P-10)
// ---------------------------------------------------------------------------

/// Awaiting an already-fired Deferred leaves its result in place; awaiting
/// one that had to be waited for consumes it (`None` afterwards).
// Twisted: pitfall P-10; experiment E11 (2)
#[test]
fn await_leaves_a_fired_result_in_place_and_consumes_one_it_waited_for() {
    let pending: Deferred<&str> = Deferred::new();
    let ready = succeed("r");
    let d = {
        let (pending, ready) = (pending.clone(), ready.clone());
        ensure_deferred(async move { Ok::<_, Failure>((ready.await?, pending.await?)) })
    };
    assert!(!d.called());
    assert_eq!(ready.result().value(), Some("r"));
    pending.callback("p").unwrap();
    assert_eq!(d.result().value(), Some(("r", "p")));
    assert_eq!(ready.result().value(), Some("r"));
    assert!(holds_none(&pending));
}

/// Awaiting a Deferred that already failed gives the failure as `Err`
/// without touching the Deferred's result, and the failure counts as
/// handled: dropping that Deferred reports nothing (without the await, it
/// would).
// Twisted: AwaitTests.test_reraise; experiment E16 ("awaited failed Deferred"); B69
#[test]
fn await_of_a_failed_deferred_raises_and_marks_the_failure_handled() {
    let ((), reports) = capture_unhandled_errors(|| {
        let bad: Deferred<i32> = fail(KeyError("k"));
        let b = bad.clone();
        let d = ensure_deferred(async move {
            match b.await {
                Err(f) if f.check::<KeyError>() => Ok::<_, Failure>("handled"),
                other => Ok(if other.is_ok() {
                    "value"
                } else {
                    "other error"
                }),
            }
        });
        assert_eq!(d.result().value(), Some("handled"));
        // The failure is still the awaited Deferred's result.
        assert_eq!(
            failure_of(&bad).downcast_ref::<KeyError>(),
            Some(&KeyError("k"))
        );
        drop(bad);
        drop(d);
    });
    assert!(reports.is_empty(), "{reports:?}");

    // The control: the same Deferred, not awaited, is reported.
    let ((), reports) = capture_unhandled_errors(|| drop(fail::<i32>(KeyError("k"))));
    assert_eq!(reports.len(), 1);
    assert!(reports[0].check::<KeyError>());
}

/// A paused Deferred that has a result is not usable: the await suspends
/// and resumes on `unpause()`, consuming the result.
// Twisted: experiment E11 (15)
#[test]
fn await_of_a_paused_deferred_with_a_result_suspends_until_unpause() {
    let p = succeed("p");
    p.pause();
    let q = p.clone();
    let d = ensure_deferred(async move { q.await });
    assert!(!d.called());
    assert_eq!(p.result().value(), Some("p"));
    p.unpause();
    assert_eq!(d.result().value(), Some("p"));
    assert!(holds_none(&p));
}

/// A Deferred waiting on another is not usable: the await suspends until
/// the inner Deferred fires, then gets the final result.
// Twisted: AwaitTests.test_chained; experiment E11 (14)
#[test]
fn await_of_a_waiting_deferred_suspends_until_the_inner_one_fires() {
    let outer: Deferred<()> = Deferred::new();
    let inner: Deferred<&str> = Deferred::new();
    let i = inner.clone();
    let chained = outer.add_callback(move |()| Outcome::Deferred(i));
    outer.callback(()).unwrap();
    assert!(outer.is_waiting());
    assert_eq!(outer.paused(), 1);

    let c = chained.clone();
    let d = ensure_deferred(async move { c.await });
    assert!(!d.called());
    inner.callback("bye").unwrap();
    assert_eq!(d.result().value(), Some("bye"));
    assert!(holds_none(&chained));
}

/// Two coroutines awaiting one unfired Deferred: the first await link gets
/// the value and leaves `None`, which is what the second one receives.
/// While the first coroutine runs, the Deferred still shows the value (its
/// link has not returned yet). Dynamic mode, as in Python.
// Twisted: B103 (the link returns None), checked by experiment (two awaiters of one Deferred)
#[test]
fn second_awaiter_of_one_deferred_receives_the_none_the_first_left() {
    let d: Deferred = Deferred::new();
    let log = new_log();
    let waiter = |n: u8| {
        let (d, log) = (d.clone(), log.clone());
        ensure_deferred(async move {
            let v = d.clone().await?;
            let during = d.result().value().map(|r| format!("{r:?}"));
            note(&log, format!("{n}: got {v:?}, d.result {during:?}"));
            Ok::<_, Failure>(v)
        })
    };
    let (d1, d2) = (waiter(1), waiter(2));
    d.callback(AnyValue::new(5i64)).unwrap();
    assert_eq!(
        entries(&log),
        [
            r#"1: got 5, d.result Some("5")"#,
            r#"2: got (), d.result Some("()")"#
        ]
    );
    assert_eq!(
        d1.result()
            .value()
            .and_then(|v| v.downcast_ref::<i64>().copied()),
        Some(5)
    );
    assert!(holds_none(&d2));
    assert!(holds_none(&d));
}

// ---------------------------------------------------------------------------
// Twisted's `assert self._debugInfo is not None` in Deferred.__iter__
// ---------------------------------------------------------------------------

/// `succeed(aFailure)` stores the failure without a run, so it has no debug
/// record: awaiting it raises `AssertionError`, and the failure stays.
// Twisted: Deferred.__iter__ (assert self._debugInfo is not None); B68; checked by experiment
#[test]
fn await_of_succeed_with_failure_raises_assertion_error() {
    let ((), reports) = capture_unhandled_errors(|| {
        let stored: Deferred<i32> = succeed_with_failure(ValueError("stored"));
        let s = stored.clone();
        let d = ensure_deferred(async move {
            match s.await {
                Err(f) => Ok::<_, Failure>(f.short_type_name()),
                Ok(_) => Ok("value"),
            }
        });
        assert_eq!(d.result().value(), Some("AssertionError"));
        assert!(failure_of(&stored).check::<ValueError>());
    });
    assert!(reports.is_empty(), "{reports:?}");
}

/// Re-awaiting a Deferred inside the resumption its own errback run caused:
/// the first await raises its failure, the second (same run, still holding
/// the failure, no debug record yet) raises `AssertionError`.
// Twisted: Deferred.__iter__ (assert self._debugInfo is not None); checked by experiment
#[test]
fn reawait_inside_the_errback_run_that_resumed_the_coroutine_raises_assertion_error() {
    let d: Deferred<i32> = Deferred::new();
    let log = new_log();
    let (dd, l) = (d.clone(), log.clone());
    let co = ensure_deferred(async move {
        if let Err(f) = dd.clone().await {
            note(&l, format!("first await {}", f.short_type_name()));
        }
        if let Err(f) = dd.await {
            let assertion = f.downcast_ref::<AssertionError>().is_some();
            note(
                &l,
                format!(
                    "second await {} (AssertionError: {assertion})",
                    f.short_type_name()
                ),
            );
        }
        Ok::<_, Failure>("b done")
    });
    d.errback(KeyError("k")).unwrap();
    assert_eq!(
        entries(&log),
        [
            "first await KeyError",
            "second await AssertionError (AssertionError: true)"
        ]
    );
    assert_eq!(co.result().value(), Some("b done"));
    assert!(holds_none(&d));
}

/// A coroutine started inside a Deferred's errback and awaiting that
/// Deferred: during the first run holding the failure there is no debug
/// record (`AssertionError`); once a run finished on it (`fail()`), the
/// await raises the failure itself.
// Twisted: Deferred.__iter__ (assert self._debugInfo is not None); checked by experiment
#[test]
fn await_from_inside_the_deferreds_own_errback_depends_on_a_finished_failing_run() {
    fn await_self_in_errback(d: &Deferred<i32>, log: &Log<String>) {
        let (dd, log) = (d.clone(), log.clone());
        d.add_errback(move |f: Failure| {
            note(&log, format!("errback saw {}", f.short_type_name()));
            let l = log.clone();
            let co = ensure_deferred(async move {
                if let Err(e) = dd.await {
                    note(&l, format!("await raised {}", e.short_type_name()));
                }
                Ok::<_, Failure>("c")
            });
            note(&log, format!("coroutine result {:?}", co.result().value()));
            Err::<i32, _>(f)
        });
    }

    // Fired inside the run: no finished failing run yet.
    let log = new_log();
    let d: Deferred<i32> = Deferred::new();
    await_self_in_errback(&d, &log);
    d.errback(KeyError("k")).unwrap();
    assert_eq!(
        entries(&log),
        [
            "errback saw KeyError",
            "await raised AssertionError",
            r#"coroutine result Some("c")"#
        ]
    );
    d.add_errback(|_| Ok(0));

    // `fail()` ran (and finished) a run holding the failure.
    let log = new_log();
    let d: Deferred<i32> = fail(KeyError("k"));
    await_self_in_errback(&d, &log);
    assert_eq!(
        entries(&log),
        [
            "errback saw KeyError",
            "await raised KeyError",
            r#"coroutine result Some("c")"#
        ]
    );
    d.add_errback(|_| Ok(0));
}

// ---------------------------------------------------------------------------
// Completion (B104, E27)
// ---------------------------------------------------------------------------

/// A coroutine returning a Deferred does not chain: the Deferred is its
/// Deferred's plain result (not waiting, not paused, even after the
/// returned one fires), a callback receives it, and a coroutine awaiting the
/// coroutine's Deferred gets that Deferred object. Dynamic mode; a typed
/// `Deferred<Deferred<i32>>` holds its Deferred as an ordinary value.
// Twisted: experiment E27; B104; pitfall P-06
#[test]
fn coroutine_returning_a_deferred_does_not_chain() {
    let inner: Deferred = Deferred::new();
    let i = inner.clone();
    let d: Deferred = ensure_deferred(async move { Ok::<_, Failure>(AnyValue::new(i)) });
    assert!(d.called());
    assert!(!d.is_waiting());
    assert_eq!(d.paused(), 0);
    assert!(matches!(d.result(), State::Waiting(x) if x.ptr_eq(&inner)));

    let (dd, ii) = (d.clone(), inner.clone());
    let awaiter = ensure_deferred(async move {
        let x = dd.await?;
        Ok::<_, Failure>(x.downcast_ref::<Deferred>().map(|x| x.ptr_eq(&ii)))
    });
    assert_eq!(awaiter.result().value(), Some(Some(true)));

    inner.callback(AnyValue::new(3i64)).unwrap();
    assert!(matches!(d.result(), State::Waiting(x) if x.ptr_eq(&inner)));
    assert!(!d.is_waiting());

    let got = new_log();
    let (g, ii) = (got.clone(), inner.clone());
    d.add_callback(move |r: AnyValue| {
        let same = r.downcast_ref::<Deferred>().is_some_and(|x| x.ptr_eq(&ii));
        note(&g, format!("callback got the returned Deferred: {same}"));
        Ok(AnyValue::new("x"))
    });
    assert_eq!(entries(&got), ["callback got the returned Deferred: true"]);

    // Typed: the Deferred is an ordinary value.
    let typed_inner: Deferred<i32> = Deferred::new();
    let t = typed_inner.clone();
    let typed = ensure_deferred(async move { Ok::<_, Failure>(t) });
    assert!(!typed.is_waiting());
    assert!(matches!(typed.result(), State::Value(x) if x.ptr_eq(&typed_inner)));
}

/// A failed coroutine Deferred nobody handles is reported once when it is
/// dropped; one whose failure is handled is not.
// Twisted: experiment E16 (unhandled failure, Deferred dropped); B104
#[test]
fn failed_coroutine_deferred_dropped_unhandled_is_reported_once() {
    let ((), reports) = capture_unhandled_errors(|| {
        let gate: Deferred<()> = Deferred::new();
        let g = gate.clone();
        let d: Deferred<()> = ensure_deferred(async move {
            g.await?;
            Err(Failure::new(ValueError("lost")))
        });
        gate.callback(()).unwrap();
        assert!(failure_of(&d).check::<ValueError>());
        drop(d);
    });
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].message(), "lost");

    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<()> = ensure_deferred(async { Err(Failure::new(ValueError("handled"))) });
        d.add_errback(|_| Ok(()));
        drop(d);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

// ---------------------------------------------------------------------------
// Cancellation (B106 – B113, P-11, P-12)
// ---------------------------------------------------------------------------

/// `cancel()` on the coroutine's Deferred cancels the Deferred it awaits
/// (running its canceller), the `CancelledError` comes out of the `.await`
/// as `Err`, and the coroutine's Deferred fails with it, all inside
/// `cancel()`. The awaited Deferred holds `None` afterwards.
// Twisted: experiment E11 (3); CancellationTests.test_CascadeCancellingOnCancelNotStacked, CancellationTests.test_ErrbackCancelledErrorOnCancel
#[test]
fn cancel_reaches_the_awaited_deferred_and_comes_out_of_the_await() {
    let log = new_log();
    let l = log.clone();
    let inner: Deferred<i32> =
        Deferred::with_canceller(move |_: &Deferred<i32>| note(&l, "inner canceller"));
    let (i, l) = (inner.clone(), log.clone());
    let d = ensure_deferred(async move {
        match i.await {
            Ok(v) => Ok(v),
            Err(f) => {
                note(&l, format!("coroutine saw {}", f.short_type_name()));
                Err(f)
            }
        }
    });
    let l = log.clone();
    d.add_errback(move |f: Failure| {
        note(&l, format!("D errback saw {}", f.short_type_name()));
        Ok(-1)
    });
    note(&log, "cancel");
    d.cancel().unwrap();
    note(&log, "cancel returned");
    assert_eq!(
        entries(&log),
        [
            "cancel",
            "inner canceller",
            "coroutine saw CancelledError",
            "D errback saw CancelledError",
            "cancel returned"
        ]
    );
    assert_eq!(d.result().value(), Some(-1));
    assert!(holds_none(&inner));
}

/// Without a canceller, the awaited Deferred fails with `CancelledError`,
/// which `?` propagates out of the coroutine: the code after the await
/// never runs and the coroutine's Deferred fails with it.
// Twisted: CancellationTests.test_ErrbackCancelledErrorOnCancel; B107
#[test]
fn cancelled_error_propagates_with_the_question_mark_operator() {
    let log = new_log();
    let inner: Deferred<i32> = Deferred::new();
    let (i, l) = (inner.clone(), log.clone());
    let d = ensure_deferred(async move {
        let v = i.await?;
        note(&l, "after the await");
        Ok::<_, Failure>(v)
    });
    d.cancel().unwrap();
    assert!(entries(&log).is_empty());
    assert!(failure_of(&d).check::<CancelledError>());
    assert!(holds_none(&inner));
    // A cancelled Deferred without canceller swallows the producer's fire.
    assert!(inner.callback(3).is_ok());
    assert!(entries(&log).is_empty());
    d.add_errback(|_| Ok(0));
}

/// How the coroutine reaches the Deferred that gets cancelled:
/// `test_inlinecb.CancellationTests`' three stackings.
#[derive(Debug, Clone, Copy)]
enum Stacking {
    /// The coroutine awaits the child itself.
    NotStacked,
    /// Through a plain nested `async fn` (delegation, like `await coro()`).
    NestedAsyncFn,
    /// Through a nested coroutine with its own Deferred (Twisted's stacked
    /// cases, where the nested function has its own cancellable Deferred).
    NestedEnsureDeferred,
}

fn variants() -> Vec<(Stacking, bool)> {
    [
        Stacking::NotStacked,
        Stacking::NestedAsyncFn,
        Stacking::NestedEnsureDeferred,
    ]
    .into_iter()
    .flat_map(|s| [(s, false), (s, true)])
    .collect()
}

async fn await_child(child: Deferred<i64>) -> Result<i64, Failure> {
    child.await
}

/// `CancellationTests.sampleInlineCB`: awaits `first` (if any), then the
/// child as `stacking` says; translates `UntranslatedError` into
/// `TranslatedError` and recovers from `DontFail(v)` with `v - 2`; returns
/// the value plus one.
async fn sample(
    stacking: Stacking,
    child: Deferred<i64>,
    first: Option<Deferred<i64>>,
) -> Result<i64, Failure> {
    if let Some(first) = first {
        first.await?;
    }
    let awaited = match stacking {
        Stacking::NotStacked => child.await,
        Stacking::NestedAsyncFn => await_child(child).await,
        Stacking::NestedEnsureDeferred => ensure_deferred(await_child(child)).await,
    };
    let x = match awaited {
        Ok(x) => x,
        Err(f) if f.check::<UntranslatedError>() => {
            return Err(Failure::new(TranslatedError("translated")));
        }
        Err(f) => match f.downcast_ref::<DontFail>() {
            Some(DontFail(v)) => v - 2,
            None => return Err(f),
        },
    };
    Ok(x + 1)
}

/// Starts `sample`; with `on_second`, moves it past a first await so that
/// the cancel meets its second one.
fn start_sample(stacking: Stacking, on_second: bool, child: &Deferred<i64>) -> Deferred<i64> {
    let first = on_second.then(Deferred::<i64>::new);
    let d = ensure_deferred(sample(stacking, child.clone(), first.clone()));
    if let Some(first) = first {
        assert!(!d.called(), "{stacking:?}: suspended on the first Deferred");
        first.callback(1).unwrap();
    }
    assert!(!d.called(), "{stacking:?}: suspended on the child");
    d
}

/// The child Deferred's own errback sees `CancelledError`, whatever the
/// stacking, on the first or the second await.
// Twisted: CancellationTests.test_CascadeCancellingOnCancelNotStacked, test_CascadeCancellingOnCancelStackedInlineCb, test_CascadeCancellingOnCancelStackedInlineCbOnSecondDeferred, test_CascadeCancellingOnCancelStackedCoro, test_CascadeCancellingOnCancelStackedCoroOnSecondDeferred; B111
#[test]
fn cancel_cascades_to_the_awaited_deferred_through_every_stacking() {
    for (stacking, on_second) in variants() {
        let child_saw = new_log();
        let child: Deferred<i64> = Deferred::new();
        let seen = child_saw.clone();
        child.add_errback(move |f: Failure| {
            seen.borrow_mut().push(f.check::<CancelledError>());
            Err::<i64, _>(f)
        });
        let d = start_sample(stacking, on_second, &child);
        d.add_errback(|_| Ok(0));
        d.cancel().unwrap();
        assert_eq!(
            *child_saw.borrow(),
            [true],
            "{stacking:?} on_second={on_second}"
        );
        assert_eq!(d.result().value(), Some(0), "{stacking:?} {on_second}");
        assert!(holds_none(&child), "{stacking:?} on_second={on_second}");
    }
}

/// The coroutine's Deferred fails with the `CancelledError` of the awaited
/// one, whatever the stacking.
// Twisted: CancellationTests.test_ErrbackCancelledErrorOnCancel, test_ErrbackCancelledErrorOnCancelStackedInlineCb, test_ErrbackCancelledErrorOnCancelStackedInlineCbOnSecondDeferred, test_ErrbackCancelledErrorOnCancelStackedCoro, test_ErrbackCancelledErrorOnCancelStackedCoroOnSecondDeferred
#[test]
fn cancelled_error_of_the_awaited_deferred_fails_the_coroutine_deferred() {
    for (stacking, on_second) in variants() {
        let child: Deferred<i64> = Deferred::new();
        let d = start_sample(stacking, on_second, &child);
        d.cancel().unwrap();
        assert!(
            failure_of(&d).check::<CancelledError>(),
            "{stacking:?} on_second={on_second}"
        );
        assert!(!d.is_waiting());
        d.add_errback(|_| Ok(0));
    }
}

/// The awaited Deferred's canceller errbacks with its own error: that is
/// what the await raises; the coroutine translates it into another error,
/// which fails its Deferred.
// Twisted: CancellationTests.test_ErrorToErrorTranslation, test_ErrorToErrorTranslationStackedInlineCb, test_ErrorToErrorTranslationStackedInlineCbOnSecondDeferred, test_ErrorToErrorTranslationStackedCoro, test_ErrorToErrorTranslationStackedCoroOnSecondDeferred; B107
#[test]
fn canceller_errback_with_its_own_error_is_what_the_await_raises() {
    for (stacking, on_second) in variants() {
        let child: Deferred<i64> = Deferred::with_canceller(|it: &Deferred<i64>| {
            it.errback(UntranslatedError("untranslated"))
        });
        let d = start_sample(stacking, on_second, &child);
        d.cancel().unwrap();
        assert_eq!(
            failure_of(&d).downcast_ref::<TranslatedError>(),
            Some(&TranslatedError("translated")),
            "{stacking:?} on_second={on_second}"
        );
        d.add_errback(|_| Ok(0));
    }
}

/// The canceller errbacks with an error the coroutine recovers from: the
/// coroutine's Deferred succeeds, and its user callback gets the value.
// Twisted: CancellationTests.test_ErrorToSuccessTranslation, test_ErrorToSuccessTranslationStackedInlineCb, test_ErrorToSuccessTranslationStackedInlineCbOnSecondDeferred, test_ErrorToSuccessTranslationStackedCoro, test_ErrorToSuccessTranslationStackedCoroOnSecondDeferred; B108
#[test]
fn coroutine_recovering_from_the_cancellation_error_makes_the_deferred_succeed() {
    for (stacking, on_second) in variants() {
        let child: Deferred<i64> =
            Deferred::with_canceller(|it: &Deferred<i64>| it.errback(DontFail(4321)));
        let d = start_sample(stacking, on_second, &child);
        let results = new_log();
        let r = results.clone();
        d.add_callback(move |v: i64| {
            r.borrow_mut().push(v);
            Ok(v)
        });
        d.cancel().unwrap();
        assert_eq!(
            *results.borrow(),
            [4320],
            "{stacking:?} on_second={on_second}"
        );
        assert_eq!(d.result().value(), Some(4320));
    }
}

/// When the awaited Deferred's cancellation does not deliver at once (its
/// errback returns another unfired Deferred), the coroutine's Deferred is
/// `called()` and waiting but its user callbacks do not run until that
/// completes.
// Twisted: CancellationTests.test_AsynchronousCancellation, test_AsynchronousCancellationStackedInlineCb, test_AsynchronousCancellationStackedInlineCbOnSecondDeferred, test_AsynchronousCancellationStackedCoro, test_AsynchronousCancellationStackedCoroOnSecondDeferred; B110
#[test]
fn cancellation_is_asynchronous_when_the_awaited_deferred_waits_on_another() {
    for (stacking, on_second) in variants() {
        let more: Deferred<i64> = Deferred::new();
        let child: Deferred<i64> = Deferred::new();
        let m = more.clone();
        child.add_errback(move |f: Failure| match f.trap::<CancelledError>() {
            Ok(_) => Outcome::Deferred(m),
            Err(f) => Outcome::Failure(f),
        });
        let d = start_sample(stacking, on_second, &child);
        let seen = new_log();
        let s = seen.clone();
        d.add_both(move |r: Result<i64, Failure>| {
            s.borrow_mut().push(r.as_ref().ok().copied());
            r
        });
        d.cancel().unwrap();
        let what = format!("{stacking:?} on_second={on_second}");
        assert!(d.called(), "{what}");
        assert!(d.is_waiting(), "{what}");
        assert_eq!(d.paused(), 1, "{what}");
        assert!(holds_deferred(&d), "{what}");
        assert!(seen.borrow().is_empty(), "{what}");

        more.callback(6543).unwrap();
        assert_eq!(*seen.borrow(), [Some(6544)], "{what}");
        assert_eq!(d.result().value(), Some(6544), "{what}");
        assert!(!d.is_waiting(), "{what}");
    }
}

/// The coroutine catches the `CancelledError` and returns: its Deferred
/// succeeds with that value.
// Twisted: experiment E11 (4); B108
#[test]
fn coroutine_catching_the_cancellation_and_returning_makes_the_deferred_succeed() {
    let inner: Deferred<i32> = Deferred::new();
    let i = inner.clone();
    let d = ensure_deferred(async move {
        match i.await {
            Err(f) if f.check::<CancelledError>() => Ok::<_, Failure>("swallowed"),
            Err(f) => Err(f),
            Ok(_) => Ok("value"),
        }
    });
    d.cancel().unwrap();
    assert_eq!(d.result().value(), Some("swallowed"));
    assert!(!d.is_waiting());
    assert_eq!(d.paused(), 0);
}

/// The canceller calls the awaited Deferred back with a value: the
/// coroutine resumes normally with it.
// Twisted: experiment E11 (6); B107
#[test]
fn canceller_calling_back_with_a_value_resumes_the_coroutine_normally() {
    let inner: Deferred<&str> =
        Deferred::with_canceller(|d: &Deferred<&str>| d.callback("substitute"));
    let i = inner.clone();
    let d = ensure_deferred(async move { Ok::<_, Failure>(("coroutine got", i.await?)) });
    d.cancel().unwrap();
    assert_eq!(d.result().value(), Some(("coroutine got", "substitute")));
}

/// The canceller errbacks with its own error, which the coroutine catches.
// Twisted: experiment E11 (7); B107
#[test]
fn canceller_errback_with_its_own_error_can_be_caught_by_the_coroutine() {
    let inner: Deferred<i32> =
        Deferred::with_canceller(|d: &Deferred<i32>| d.errback(KeyError("own")));
    let i = inner.clone();
    let d = ensure_deferred(async move {
        match i.await {
            Err(f) => match f.downcast_ref::<KeyError>() {
                Some(e) => Ok::<_, Failure>(format!("caught KeyError {e}")),
                None => Err(f),
            },
            Ok(v) => Ok(format!("value {v}")),
        }
    });
    d.cancel().unwrap();
    assert_eq!(d.result().value().as_deref(), Some("caught KeyError own"));
}

/// The coroutine catches the `CancelledError` and awaits something else:
/// its Deferred is already `called()`, paused once and waiting (on the
/// internal Deferred) with its user callbacks held back, until the coroutine
/// finishes.
// Twisted: experiment E12; pitfall P-11; B108
#[test]
fn coroutine_catching_the_cancellation_and_awaiting_again_leaves_the_deferred_waiting() {
    let (first, second) = (Deferred::<&str>::new(), Deferred::<&str>::new());
    let seen = new_log();
    let (f1, f2, s) = (first.clone(), second.clone(), seen.clone());
    let d = ensure_deferred(async move {
        if let Err(f) = f1.await
            && f.check::<CancelledError>()
        {
            note(&s, "caught");
        }
        f2.await
    });
    let s = seen.clone();
    d.add_both(move |r: Result<&str, Failure>| {
        note(&s, format!("user callback saw {:?}", r.as_ref().ok()));
        r
    });
    assert!(!d.called());
    d.cancel().unwrap();
    assert!(d.called());
    assert_eq!(d.paused(), 1);
    assert!(d.is_waiting());
    assert!(holds_deferred(&d));
    assert_eq!(entries(&seen), ["caught"]);
    assert!(holds_none(&first));
    assert!(second.result().is_pending());

    second.callback("done").unwrap();
    assert_eq!(
        entries(&seen),
        ["caught", r#"user callback saw Some("done")"#]
    );
    assert_eq!(d.result().value(), Some("done"));
    assert!(!d.is_waiting());
    assert_eq!(d.paused(), 0);
}

/// A second `cancel()` is forwarded to the next await: the first cancel
/// reached only the first Deferred (which the coroutine swallowed), the
/// second reaches the second one, and the coroutine's Deferred fails.
// Twisted: CancellationTests.test_inlineCallbacksCancelCaptured; pitfall P-11; B109
#[test]
fn second_cancel_reaches_the_next_await() {
    let calls1: Log<usize> = new_log();
    let calls2: Log<usize> = new_log();
    let (c1, c2) = (calls1.clone(), calls2.clone());
    let d1: Deferred<()> = Deferred::with_canceller(move |d: &Deferred<()>| {
        c1.borrow_mut().push(d.id());
    });
    let d2: Deferred<()> = Deferred::with_canceller(move |d: &Deferred<()>| {
        c2.borrow_mut().push(d.id());
    });
    let (a, b) = (d1.clone(), d2.clone());
    let func_d = ensure_deferred(async move {
        let _ = a.await;
        b.await
    });
    assert!(d1.result().is_pending());
    assert!(d2.result().is_pending());
    assert!(func_d.result().is_pending());
    assert!(calls1.borrow().is_empty());
    assert!(calls2.borrow().is_empty());

    func_d.cancel().unwrap();
    assert_eq!(*calls1.borrow(), [d1.id()]);
    assert!(calls2.borrow().is_empty());
    assert!(func_d.is_waiting());
    assert!(holds_deferred(&func_d));

    func_d.cancel().unwrap();
    assert!(failure_of(&func_d).check::<CancelledError>());
    assert_eq!(*calls2.borrow(), [d2.id()]);
    assert_eq!(*calls1.borrow(), [d1.id()]);
    assert!(!func_d.is_waiting());
    func_d.add_errback(|_| Ok(()));
}

/// `cancel()` after the coroutine finished does nothing, to a value or to
/// a failure.
// Twisted: experiment E11 (8); B112
#[test]
fn cancel_after_the_coroutine_finished_is_a_no_op() {
    let d = ensure_deferred(async { Ok::<_, Failure>(1) });
    d.cancel().unwrap();
    assert_eq!(d.result().value(), Some(1));
    assert!(!d.is_waiting());

    let gate: Deferred<()> = Deferred::new();
    let g = gate.clone();
    let d: Deferred<i32> = ensure_deferred(async move {
        g.await?;
        Err(Failure::new(ValueError("v")))
    });
    gate.callback(()).unwrap();
    let before = failure_of(&d);
    d.cancel().unwrap();
    assert!(Failure::ptr_eq(&before, &failure_of(&d)));
    d.add_errback(|_| Ok(0));
}

/// The coroutine cancels its own Deferred while running, after a
/// suspension: the cancel reaches the already-fired Deferred it last
/// awaited (nothing happens), its Deferred waits on the internal one, and
/// the coroutine's eventual result arrives there as usual.
// Twisted: pitfall P-12; experiment E11 (10); B113
#[test]
fn self_cancel_after_a_suspension_is_effectively_ignored() {
    // P-12 exactly: cancel, then return.
    let gate: Deferred<()> = Deferred::new();
    let me: Rc<RefCell<Option<Deferred<&str>>>> = Rc::new(RefCell::new(None));
    let (g, m) = (gate.clone(), me.clone());
    let d = ensure_deferred(async move {
        g.await?;
        let own = m
            .borrow()
            .clone()
            .expect("filled after ensure_deferred returned");
        own.cancel()?;
        Ok::<_, Failure>("completed anyway")
    });
    *me.borrow_mut() = Some(d.clone());
    gate.callback(()).unwrap();
    assert_eq!(d.result().value(), Some("completed anyway"));
    assert!(!d.is_waiting());
    assert!(holds_none(&gate));
    me.borrow_mut().take();

    // With an await after the self-cancel: the Deferred waits meanwhile.
    let (gate, next) = (Deferred::<()>::new(), Deferred::<()>::new());
    let me: Rc<RefCell<Option<Deferred<&str>>>> = Rc::new(RefCell::new(None));
    let log = new_log();
    let (g, n, m, l) = (gate.clone(), next.clone(), me.clone(), log.clone());
    let d = ensure_deferred(async move {
        g.await?;
        let own = m
            .borrow()
            .clone()
            .expect("filled after ensure_deferred returned");
        own.cancel()?;
        note(
            &l,
            format!("called={} waiting={}", own.called(), own.is_waiting()),
        );
        n.await?;
        Ok::<_, Failure>("completed anyway")
    });
    *me.borrow_mut() = Some(d.clone());
    gate.callback(()).unwrap();
    assert_eq!(entries(&log), ["called=true waiting=true"]);
    assert!(d.is_waiting());
    assert!(next.result().is_pending());
    next.callback(()).unwrap();
    assert_eq!(d.result().value(), Some("completed anyway"));
    assert!(!d.is_waiting());
    me.borrow_mut().take();
}

/// Cancelling a paused coroutine Deferred: the canceller errbacks it with
/// the internal error, but the handler in front of its links cannot run
/// while paused, so that internal error is its visible result and the
/// awaited Deferred is not cancelled yet. `unpause()` runs the handler,
/// which cancels the awaited Deferred; the user link added earlier sees the
/// `CancelledError`, never the internal error.
// Twisted: _addCancelCallbackToDeferred / _handleCancelInlineCallbacks, checked by experiment (paused coroutine Deferred cancelled); B106
#[test]
fn cancelling_a_paused_coroutine_deferred_shows_the_internal_error_until_unpause() {
    let log = new_log();
    let l = log.clone();
    let first: Deferred<i32> =
        Deferred::with_canceller(move |_: &Deferred<i32>| note(&l, "first canceller"));
    let (f, l) = (first.clone(), log.clone());
    let d = ensure_deferred(async move {
        match f.await {
            Err(e) if e.check::<CancelledError>() => {
                note(&l, "caught");
                Err(e)
            }
            other => other,
        }
    });
    // A user link added before the cancel: the handler goes in front of it.
    let l = log.clone();
    d.add_both(move |r: Result<i32, Failure>| {
        let saw = r.as_ref().map_err(Failure::short_type_name).err();
        note(&l, format!("user link saw {saw:?}"));
        Ok::<_, Failure>(0)
    });
    d.pause();
    d.cancel().unwrap();
    assert!(d.called());
    assert_eq!(d.paused(), 1);
    assert!(failure_of(&d).check::<InternalInlineCallbacksCancelledError>());
    assert!(entries(&log).is_empty());
    assert!(first.result().is_pending());

    d.unpause();
    assert_eq!(
        entries(&log),
        [
            "first canceller",
            "caught",
            r#"user link saw Some("CancelledError")"#
        ]
    );
    assert_eq!(d.result().value(), Some(0));
    assert_eq!(d.paused(), 0);
    assert!(!d.is_waiting());
}

/// The awaited Deferred's canceller fails: the internal handler raises it,
/// so the coroutine's Deferred fails with it (`cancel()` itself returns
/// `Ok`), the awaited Deferred stays unfired and the coroutine suspended;
/// when the awaited Deferred fires later, the coroutine resumes and runs to
/// completion, but its Deferred keeps the canceller's failure.
// Twisted: _handleCancelInlineCallbacks (awaited.cancel() raising), pitfall P-08, checked by experiment
#[test]
fn failing_canceller_of_the_awaited_deferred_fails_the_coroutine_deferred() {
    let awaited: Deferred<i32> = Deferred::with_canceller(|_: &Deferred<i32>| {
        Err(Failure::new(CancellerError("canceller")))
    });
    let log = new_log();
    let (a, l) = (awaited.clone(), log.clone());
    let d = ensure_deferred(async move {
        let v = a.await?;
        note(&l, format!("resumed with {v}"));
        Ok::<_, Failure>(v)
    });
    assert!(d.cancel().is_ok());
    assert!(failure_of(&d).check::<CancellerError>());
    assert!(!d.is_waiting());
    assert!(awaited.result().is_pending());

    awaited.callback(7).unwrap();
    assert_eq!(entries(&log), ["resumed with 7"]);
    assert!(failure_of(&d).check::<CancellerError>());
    d.add_errback(|_| Ok(0));
}

// ---------------------------------------------------------------------------
// Nesting (B105, B111)
// ---------------------------------------------------------------------------

async fn inner_layer(leaf: Deferred<i32>, log: Log<String>) -> Result<i32, Failure> {
    match leaf.await {
        Err(f) if f.check::<CancelledError>() => {
            note(&log, "inner saw CancelledError");
            Err(f)
        }
        other => other,
    }
}

/// Nested coroutines with their own Deferreds: cancelling the outer one
/// cancels the inner one, which cancels the leaf; the error rises through
/// both, all inside `cancel()`. The inner coroutine's Deferred is consumed
/// by the outer await.
// Twisted: CancellationTests.test_CascadeCancellingOnCancelStackedCoro; experiment E11 (9); B111
#[test]
fn cancel_reaches_the_leaf_through_nested_coroutine_deferreds_in_order() {
    let log = new_log();
    let l = log.clone();
    let leaf: Deferred<i32> =
        Deferred::with_canceller(move |_: &Deferred<i32>| note(&l, "leaf canceller"));
    let inner_d: Rc<RefCell<Option<Deferred<i32>>>> = Rc::new(RefCell::new(None));
    let (lf, l, slot) = (leaf.clone(), log.clone(), inner_d.clone());
    let d = ensure_deferred(async move {
        let inner = ensure_deferred(inner_layer(lf, l.clone()));
        *slot.borrow_mut() = Some(inner.clone());
        match inner.await {
            Err(f) if f.check::<CancelledError>() => {
                note(&l, "outer saw CancelledError");
                Err(f)
            }
            other => other,
        }
    });
    let l = log.clone();
    d.add_errback(move |f: Failure| {
        note(&l, format!("D errback {}", f.short_type_name()));
        Ok(0)
    });
    note(&log, "cancel");
    d.cancel().unwrap();
    note(&log, "cancel returned");
    assert_eq!(
        entries(&log),
        [
            "cancel",
            "leaf canceller",
            "inner saw CancelledError",
            "outer saw CancelledError",
            "D errback CancelledError",
            "cancel returned"
        ]
    );
    let inner = inner_d.borrow_mut().take().unwrap();
    assert!(holds_none(&inner));
    assert!(holds_none(&leaf));
    assert_eq!(d.result().value(), Some(0));
}

/// Through a plain nested `async fn` (delegation, no Deferred in between),
/// the outer function catches the leaf's `CancelledError`.
// Twisted: experiment E11 (9); B105, B111
#[test]
fn cancel_reaches_the_leaf_through_a_nested_async_fn() {
    let canceller_runs = Rc::new(Cell::new(0));
    let c = canceller_runs.clone();
    let leaf: Deferred<&str> = Deferred::with_canceller(move |_: &Deferred<&str>| {
        c.set(c.get() + 1);
    });
    async fn inner_co(leaf: Deferred<&'static str>) -> Result<&'static str, Failure> {
        leaf.await
    }
    let lf = leaf.clone();
    let d = ensure_deferred(async move {
        match inner_co(lf).await {
            Err(f) if f.check::<CancelledError>() => Ok::<_, Failure>("outer caught"),
            other => other,
        }
    });
    d.cancel().unwrap();
    assert_eq!(canceller_runs.get(), 1);
    assert_eq!(d.result().value(), Some("outer caught"));
}

type Nested = Pin<Box<dyn Future<Output = Result<u32, Failure>>>>;

/// `depth` nested `async fn` frames, each awaiting the next; the innermost
/// awaits `leaf`. Each frame that sees an error records its depth.
fn nested(depth: u32, leaf: Deferred<u32>, saw_error: Log<u32>) -> Nested {
    Box::pin(async move {
        if depth == 0 {
            return leaf.await;
        }
        let r = nested(depth - 1, leaf, saw_error.clone()).await;
        if r.is_err() {
            saw_error.borrow_mut().push(depth);
        }
        r.map(|v| v + 1)
    })
}

/// 1,000 nested `async fn` frames (each awaiting the next, the innermost
/// awaiting one Deferred) cancel in one `cancel()` call on an ordinary test
/// thread, and the `CancelledError` rises through every frame to the
/// outermost. The same depth also resumes with a value.
// Twisted: CancellationTests.test_CascadeCancellingOnCancelStackedCoro (at depth); B111
#[test]
fn cancel_through_a_thousand_nested_async_fns_reaches_the_outermost_frame() {
    const FRAMES: u32 = 1000;
    let canceller_runs = Rc::new(Cell::new(0));
    let c = canceller_runs.clone();
    let leaf: Deferred<u32> = Deferred::with_canceller(move |_: &Deferred<u32>| {
        c.set(c.get() + 1);
    });
    let saw_error = new_log();
    let outermost = new_log();
    let (lf, s, o) = (leaf.clone(), saw_error.clone(), outermost.clone());
    // The outermost frame plus 999 nested ones: 1,000 `async` frames.
    let d = ensure_deferred(async move {
        let r = nested(FRAMES - 2, lf, s).await;
        if let Err(f) = &r {
            note(&o, format!("outermost saw {}", f.short_type_name()));
        }
        r
    });
    assert!(!d.called());
    d.cancel().unwrap();
    assert_eq!(canceller_runs.get(), 1);
    assert_eq!(entries(&outermost), ["outermost saw CancelledError"]);
    assert_eq!(*saw_error.borrow(), (1..FRAMES - 1).collect::<Vec<_>>());
    assert!(failure_of(&d).check::<CancelledError>());
    assert!(holds_none(&leaf));
    d.add_errback(|_| Ok(0));

    // Resumed with a value through the same depth.
    let leaf: Deferred<u32> = Deferred::new();
    let lf = leaf.clone();
    let d = ensure_deferred(nested(FRAMES - 1, lf, new_log()));
    leaf.callback(1).unwrap();
    assert_eq!(d.result().value(), Some(FRAMES));
}

/// A `ResultTypeError`, not a crash, when a typed await meets the `None`
/// an earlier await link left (the second awaiter of one typed Deferred).
/// Twisted has no typed handles: there the second awaiter gets `None` (see
/// `second_awaiter_of_one_deferred_receives_the_none_the_first_left`).
// Twisted: B103 (the link returns None); the typed-handle rule of this port
#[test]
fn second_typed_awaiter_of_one_deferred_gets_a_result_type_error() {
    let d: Deferred<i32> = Deferred::new();
    let (a, b) = (d.clone(), d.clone());
    let first = ensure_deferred(async move { a.await });
    let second = ensure_deferred(async move {
        match b.await {
            Err(f) if f.check::<ResultTypeError>() => Ok::<_, Failure>(-1),
            other => other,
        }
    });
    d.callback(5).unwrap();
    assert_eq!(first.result().value(), Some(5));
    assert_eq!(second.result().value(), Some(-1));
}

/// A coroutine started inside a Deferred's own callback and awaiting that
/// Deferred: the Deferred is fired, not paused, and (Python sharing the
/// object) still holds the callback's input, so the await returns that
/// input at once; the callback's return value then becomes the result,
/// untouched by the await. Dynamic mode, where values are shared.
// Twisted: B102 (await of a fired Deferred: no suspension, result untouched); experiment E28 (a running callback's input is the Deferred's result); checked by experiment
#[test]
fn await_inside_the_deferreds_own_callback_gets_the_callbacks_input() {
    let d: Deferred = Deferred::new();
    let got = new_log();
    let (dd, g) = (d.clone(), got.clone());
    d.add_callback(move |_input: AnyValue| {
        let co = ensure_deferred(async move { dd.await });
        note(
            &g,
            format!("coroutine inside the callback: {:?}", co.result()),
        );
        Ok(AnyValue::new("cb-return"))
    });
    d.callback(AnyValue::new("input")).unwrap();
    assert_eq!(
        entries(&got),
        [r#"coroutine inside the callback: Value("input")"#]
    );
    assert_eq!(
        d.result()
            .value()
            .and_then(|v| v.downcast_ref::<&str>().copied()),
        Some("cb-return")
    );
}

/// The same with typed handles shows the documented difference of typed
/// callbacks (see `State::InUse`): the callback owns its input while it
/// runs, so the await finds no result and suspends, and its link then takes
/// the callback's return value, leaving `None` (`()`) in the Deferred.
/// Twisted gives the coroutine the callback's input at once and keeps
/// `"cb-return"` (the dynamic-mode test above reproduces that exactly).
// Twisted: B102; experiment E28 (the difference is documented on `Slot::Lent`)
#[test]
fn typed_await_inside_the_deferreds_own_callback_waits_for_the_callbacks_return() {
    let d: Deferred<&str> = Deferred::new();
    let got = new_log();
    let (dd, g) = (d.clone(), got.clone());
    let co_cell = std::rc::Rc::new(std::cell::RefCell::new(None));
    let co_out = co_cell.clone();
    d.add_callback(move |_input: &str| {
        let co = ensure_deferred(async move { dd.await });
        note(
            &g,
            format!("coroutine inside the callback: {:?}", co.result()),
        );
        *co_out.borrow_mut() = Some(co);
        Ok("cb-return")
    });
    d.callback("input").unwrap();
    assert_eq!(entries(&got), ["coroutine inside the callback: Pending"]);
    let co = co_cell.borrow_mut().take().unwrap();
    assert_eq!(co.result().value(), Some("cb-return"));
    assert!(matches!(d.result(), State::OtherType("()")));
}
