//! Synapse's `yieldable_gather_results`, its `_delaying_cancellation`
//! variant, and the tuple-form `gather_results`
//! (`twisted_compat::gather`): behaviours 32–38 of `synapse_semantics.md`
//! (2.4). `concurrently_execute` has its own file.
//!
//! Citations: `TAH` is Synapse's `tests/util/test_async_helpers.py`,
//! `TEVW` its `tests/storage/databases/main/test_events_worker.py`;
//! "experiment" is a check run against Synapse 1.163.2 (the expected
//! values below are what it printed).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use twisted_compat::gather::gather_results;
use twisted_compat::{
    CancelledError, Deferred, Failure, FirstError, LogcontextError, LoggingContext,
    PreserveLoggingContext, capture_logcontext_errors, current_context, make_deferred_yieldable,
    yieldable_gather_results, yieldable_gather_results_delaying_cancellation,
};
use twisted_deferred::{capture_unhandled_errors, ensure_deferred, fail, succeed};

type Log = Rc<RefCell<Vec<String>>>;

#[derive(Debug)]
struct ValueError(&'static str);

impl std::fmt::Display for ValueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ValueError {}

/// What a failure is, for the logs: `CancelledError` or `ValueError`.
fn kind(f: &Failure) -> &'static str {
    if f.check::<CancelledError>() {
        "CancelledError"
    } else if f.check::<ValueError>() {
        "ValueError"
    } else {
        "other"
    }
}

/// The experiments' child: logs its start, waits for its block through
/// `make_deferred_yieldable`, logs how that went, returns `i * 10`.
fn child(
    log: &Log,
    blocks: &HashMap<i32, Deferred<i32>>,
) -> impl FnMut(i32) -> Deferred<i32> + 'static {
    let (log, blocks) = (log.clone(), blocks.clone());
    move |i: i32| {
        let (log, block) = (log.clone(), blocks[&i].clone());
        ensure_deferred(async move {
            log.borrow_mut()
                .push(format!("start {i} {}", current_context()));
            match make_deferred_yieldable(block).await {
                Ok(_) => {
                    log.borrow_mut()
                        .push(format!("child done {i} {}", current_context()));
                    Ok(i * 10)
                }
                Err(f) => {
                    log.borrow_mut().push(format!(
                        "child err {i} {} {}",
                        kind(&f),
                        current_context()
                    ));
                    Err(f)
                }
            }
        })
    }
}

fn blocks(n: i32) -> HashMap<i32, Deferred<i32>> {
    (0..n).map(|i| (i, Deferred::new())).collect()
}

/// Fires `d` from the sentinel context, as the reactor would.
fn fire<T: 'static>(d: &Deferred<T>, v: T) {
    let _sentinel = PreserveLoggingContext::sentinel();
    d.callback(v).unwrap();
}

fn fail_with<T: 'static>(d: &Deferred<T>, f: Failure) {
    let _sentinel = PreserveLoggingContext::sentinel();
    d.errback(f).unwrap();
}

// Synapse: experiment (behaviour 32); TEVW::EventCacheTestCase.test_dedupe
// uses it
#[test]
fn children_start_in_order_in_the_callers_context_and_results_come_in_input_order() {
    let ((), errors) = capture_logcontext_errors(|| {
        let log: Log = Rc::default();
        let blocks = blocks(3);
        let func = child(&log, &blocks);
        let l = log.clone();
        let d = ensure_deferred(async move {
            let ctx = LoggingContext::new("C", "hs");
            let _scope = ctx.entered();
            let r = yieldable_gather_results(func, [0, 1, 2]).await?;
            l.borrow_mut()
                .push(format!("caller got {r:?} {}", current_context()));
            Ok::<_, Failure>(r)
        });
        log.borrow_mut()
            .push(format!("waiting {}", current_context()));
        fire(&blocks[&2], 0);
        fire(&blocks[&0], 0);
        assert!(!d.called());
        fire(&blocks[&1], 0);
        assert_eq!(d.result().value(), Some(vec![0, 10, 20]));
        assert_eq!(
            *log.borrow(),
            [
                "start 0 C",
                "start 1 C",
                "start 2 C",
                "waiting sentinel",
                "child done 2 C",
                "child done 0 C",
                "child done 1 C",
                "caller got [0, 10, 20] C",
            ]
        );
        assert!(current_context().is_sentinel());
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: experiment (behaviour 32: an empty input)
#[test]
fn an_empty_input_gives_an_empty_list_at_once() {
    let d = ensure_deferred(yieldable_gather_results(
        |_: ()| succeed(1),
        Vec::<()>::new(),
    ));
    assert_eq!(d.result().value(), Some(Vec::<i32>::new()));
}

// Synapse: experiment (behaviour 32: each child runs to its first
// suspension before the next starts; plain values and Deferreds too)
#[test]
fn each_child_runs_to_its_first_suspension_before_the_next_starts() {
    let log: Log = Rc::default();
    let gate: Deferred<()> = Deferred::new();
    let (l, g) = (log.clone(), gate.clone());
    let d = ensure_deferred(yieldable_gather_results(
        move |i: u8| {
            let (l, g) = (l.clone(), g.clone());
            async move {
                l.borrow_mut().push(format!("{i} before"));
                if i == 0 {
                    g.await?;
                }
                l.borrow_mut().push(format!("{i} after"));
                Ok::<_, Failure>(i)
            }
        },
        [0u8, 1, 2],
    ));
    assert_eq!(
        *log.borrow(),
        ["0 before", "1 before", "1 after", "2 before", "2 after"]
    );
    gate.callback(()).unwrap();
    assert_eq!(d.result().value(), Some(vec![0, 1, 2]));
    // A function may also return plain values (a Result) or Deferreds.
    let plain = ensure_deferred(yieldable_gather_results(
        |i: u8| Ok::<_, Failure>(i * 2),
        [1u8, 2],
    ));
    assert_eq!(plain.result().value(), Some(vec![2, 4]));
    let deferreds = ensure_deferred(yieldable_gather_results(succeed, [5u8, 6]));
    assert_eq!(deferreds.result().value(), Some(vec![5, 6]));
}

// Synapse: TAH::ConcurrentlyExecuteTest.test_preserves_stacktraces (the
// unwrapping it relies on) and experiment (behaviour 33)
#[test]
fn the_first_failure_is_unwrapped_and_the_other_children_run_on_in_the_callers_context() {
    let (((), errors), unhandled) = capture_unhandled_errors(|| {
        capture_logcontext_errors(|| {
            let log: Log = Rc::default();
            let blocks = blocks(3);
            let func = child(&log, &blocks);
            let l = log.clone();
            let d = ensure_deferred(async move {
                let ctx = LoggingContext::new("C", "hs");
                let _scope = ctx.entered();
                match yieldable_gather_results(func, [0, 1, 2]).await {
                    Ok(r) => Ok(r),
                    Err(f) => {
                        l.borrow_mut().push(format!(
                            "caller err {} {}",
                            kind(&f),
                            current_context()
                        ));
                        Err(f)
                    }
                }
            });
            let failure = Failure::new(ValueError("x"));
            fail_with(&blocks[&1], failure.clone());
            let got = d.result().failure().unwrap();
            assert!(
                Failure::ptr_eq(&got, &failure),
                "the child's own failure, not a FirstError"
            );
            assert!(!got.check::<FirstError>());
            // The others were not cancelled and go on, in the caller's context.
            assert!(!blocks[&0].called() && !blocks[&2].called());
            fire(&blocks[&0], 0);
            fire(&blocks[&2], 0);
            assert_eq!(
                log.borrow()[3..],
                [
                    "child err 1 ValueError C",
                    "caller err ValueError C",
                    "child done 0 C",
                    "child done 2 C",
                ]
            );
            d.add_errback(|_| Ok(vec![]));
        })
    });
    // The caller left its context before the other children came back to it.
    assert_eq!(errors.len(), 4, "{errors:?}");
    // The child's failure was consumed by the gather, not reported.
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

// Synapse: experiment (behaviour 35)
#[test]
fn cancelling_the_caller_cancels_every_child_and_it_resumes_at_the_first_cancelled_error() {
    let ((), errors) = capture_logcontext_errors(|| {
        let log: Log = Rc::default();
        let blocks = blocks(3);
        let func = child(&log, &blocks);
        let l = log.clone();
        let d = ensure_deferred(async move {
            let ctx = LoggingContext::new("C", "hs");
            let scope = ctx.entered();
            match yieldable_gather_results(func, [0, 1, 2]).await {
                Ok(r) => {
                    l.borrow_mut()
                        .push(format!("caller got {r:?} {}", current_context()));
                    drop(scope);
                    Ok(r)
                }
                Err(f) => {
                    l.borrow_mut()
                        .push(format!("caller {} {}", kind(&f), current_context()));
                    Err(f)
                }
            }
        });
        log.borrow_mut()
            .push(format!("after start {}", current_context()));
        d.cancel().unwrap();
        log.borrow_mut()
            .push(format!("after cancel {}", current_context()));
        assert_eq!(
            *log.borrow(),
            [
                "start 0 C",
                "start 1 C",
                "start 2 C",
                "after start sentinel",
                "child err 0 CancelledError C",
                "caller CancelledError C",
                "child err 1 CancelledError C",
                "child err 2 CancelledError C",
                "after cancel sentinel",
            ]
        );
        assert!(
            d.result()
                .failure()
                .is_some_and(|f| f.check::<CancelledError>())
        );
        d.add_errback(|_| Ok(vec![]));
    });
    // As in Synapse: the later children bring the caller's context back
    // after the caller left it.
    let c = |e: &LogcontextError| match e {
        LogcontextError::RestartFinished { context } => format!("restart {context}"),
        LogcontextError::StopWithoutStart { context } => format!("stop {context}"),
        other => format!("{other}"),
    };
    assert_eq!(
        errors.iter().map(c).collect::<Vec<_>>(),
        ["restart C", "stop C", "restart C", "stop C"]
    );
}

// Synapse: code and experiment (behaviour 36)
#[test]
fn children_that_swallow_the_cancellation_keep_the_caller_waiting_then_it_gets_their_results() {
    let gates: Vec<Deferred<u8>> = (0..2).map(|_| Deferred::new()).collect();
    let later: Deferred<u8> = Deferred::new();
    let (g, l) = (gates.clone(), later.clone());
    // async def child(i): try: return await gates[i]
    //     except CancelledError: return (await later) if i == 0 else 99
    let d = ensure_deferred(yieldable_gather_results(
        move |i: usize| {
            let (gate, later) = (g[i].clone(), l.clone());
            async move {
                match gate.await {
                    Err(f) if f.check::<CancelledError>() => {
                        if i == 0 {
                            later.await
                        } else {
                            Ok(99u8)
                        }
                    }
                    other => other,
                }
            }
        },
        [0usize, 1],
    ));
    d.cancel().unwrap();
    assert!(gates.iter().all(|g| g.called()), "both were cancelled");
    assert!(
        d.result().value().is_none() && d.result().failure().is_none(),
        "the gather has not fired: the caller keeps waiting"
    );
    later.callback(7).unwrap();
    assert_eq!(d.result().value(), Some(vec![7, 99]));
}

// Synapse: experiment (behaviour 37)
#[test]
fn delaying_cancellation_keeps_the_children_running_and_the_caller_gets_cancelled_error_after_all_succeed()
 {
    let ((), errors) = capture_logcontext_errors(|| {
        let log: Log = Rc::default();
        let blocks = blocks(2);
        let func = child(&log, &blocks);
        let d = ensure_deferred(async move {
            let ctx = LoggingContext::new("C", "hs");
            let _scope = ctx.entered();
            let r = yieldable_gather_results_delaying_cancellation(func, [0, 1]).await;
            assert_eq!(current_context(), ctx);
            r
        });
        d.cancel().unwrap();
        assert!(
            !blocks[&0].called() && !blocks[&1].called(),
            "not cancelled"
        );
        assert!(d.result().failure().is_none() && d.result().value().is_none());
        fire(&blocks[&0], 0);
        assert!(d.result().failure().is_none());
        fire(&blocks[&1], 0);
        // It never sees the results.
        assert!(
            d.result()
                .failure()
                .is_some_and(|f| f.check::<CancelledError>())
        );
        d.add_errback(|_| Ok(vec![]));
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: experiment (behaviour 37: the first failure releases the
// caller's CancelledError at once; the child failure is dropped)
#[test]
fn delaying_cancellation_releases_the_cancelled_error_at_the_first_child_failure() {
    let (((), errors), unhandled) = capture_unhandled_errors(|| {
        capture_logcontext_errors(|| {
            let log: Log = Rc::default();
            let blocks = blocks(3);
            let func = child(&log, &blocks);
            let l = log.clone();
            let d = ensure_deferred(async move {
                let ctx = LoggingContext::new("C", "hs");
                let _scope = ctx.entered();
                let r = yieldable_gather_results_delaying_cancellation(func, [0, 1, 2]).await;
                if let Err(f) = &r {
                    l.borrow_mut()
                        .push(format!("caller err {} {}", kind(f), current_context()));
                }
                r
            });
            d.cancel().unwrap();
            log.borrow_mut()
                .push(format!("after cancel {}", current_context()));
            fail_with(&blocks[&1], Failure::new(ValueError("x")));
            log.borrow_mut()
                .push(format!("after b1 err {}", current_context()));
            fire(&blocks[&0], 1);
            fire(&blocks[&2], 1);
            assert_eq!(
                *log.borrow(),
                [
                    "start 0 C",
                    "start 1 C",
                    "start 2 C",
                    "after cancel sentinel",
                    "child err 1 ValueError C",
                    "caller err CancelledError C",
                    "after b1 err sentinel",
                    "child done 0 C",
                    "child done 2 C",
                ]
            );
            d.add_errback(|_| Ok(vec![]));
        })
    });
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(unhandled.is_empty(), "child errors are dropped silently");
}

// Synapse: experiment (behaviour 38)
#[test]
fn tuple_gather_results_fires_with_the_tuple_and_does_not_touch_contexts() {
    let ctx = LoggingContext::new("C", "hs");
    let scope = ctx.entered();
    let (a, b): (Deferred<i32>, Deferred<String>) = (Deferred::new(), Deferred::new());
    let g = gather_results((a.clone(), b.clone()), false);
    assert_eq!(current_context(), ctx, "no context handling");
    b.callback("two".into()).unwrap();
    assert!(!g.called());
    a.callback(1).unwrap();
    assert_eq!(g.result().value(), Some((1, "two".to_string())));
    // The inputs keep their values (the gather shares them).
    assert_eq!(a.result().value(), Some(1));
    assert_eq!(b.result().value().as_deref(), Some("two"));
    drop(scope);

    // Three inputs, already fired.
    let g3 = gather_results((succeed(1u8), succeed('x'), succeed(2.5f64)), false);
    assert_eq!(g3.result().value(), Some((1u8, 'x', 2.5)));
    // Zero.
    assert_eq!(gather_results((), false).result().value(), Some(()));
}

// Synapse: experiment (behaviour 38: FirstError, not unwrapped;
// consumeErrors defaults to False)
#[test]
fn tuple_gather_results_fails_with_first_error_carrying_the_index() {
    let ((), unhandled) = capture_unhandled_errors(|| {
        let (a, b): (Deferred<i32>, Deferred<u8>) = (Deferred::new(), Deferred::new());
        let g = gather_results((a.clone(), b.clone()), false);
        let failure = Failure::new(ValueError("v"));
        b.errback(failure.clone()).unwrap();
        let f = g.result().failure().unwrap();
        let first = f.downcast_ref::<FirstError>().unwrap();
        assert_eq!(first.index, 1);
        assert!(Failure::ptr_eq(&first.failure, &failure));
        // Without consume_errors the input keeps its failure.
        assert!(Failure::ptr_eq(&b.result().failure().unwrap(), &failure));
        g.add_errback(|_| Ok((0, 0)));
        b.add_errback(|_| Ok(0));
        // `a` and the list refer to each other until `a` fires (Python's
        // collector would free the pair); firing it ends the cycle.
        a.callback(0).unwrap();
        // With it, the input's failure becomes None.
        let (c, e): (Deferred<i32>, Deferred<u8>) = (Deferred::new(), Deferred::new());
        let g = gather_results((c.clone(), e.clone()), true);
        e.errback(Failure::new(ValueError("w"))).unwrap();
        assert!(e.result().failure().is_none());
        assert_eq!(e.cast::<()>().result().value(), Some(()));
        g.add_errback(|_| Ok((0, 0)));
        c.callback(0).unwrap();
    });
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

// Synapse: experiment (T8 through behaviour 38: cancelling it cancels every
// input in order)
#[test]
fn cancelling_a_tuple_gather_cancels_every_input_in_order() {
    let order: Log = Rc::default();
    let (o1, o2) = (order.clone(), order.clone());
    let a: Deferred<i32> =
        Deferred::with_canceller(move |_: &Deferred<i32>| o1.borrow_mut().push("a".into()));
    let b: Deferred<&str> =
        Deferred::with_canceller(move |_: &Deferred<&str>| o2.borrow_mut().push("b".into()));
    let g = gather_results((a.clone(), b.clone()), true);
    g.cancel().unwrap();
    assert_eq!(*order.borrow(), ["a", "b"]);
    let f = g.result().failure().unwrap();
    let first = f.downcast_ref::<FirstError>().unwrap();
    assert_eq!(first.index, 0);
    assert!(first.failure.check::<CancelledError>());
    // consume_errors: the inputs hold None.
    assert_eq!(a.cast::<()>().result().value(), Some(()));
    assert_eq!(b.cast::<()>().result().value(), Some(()));
    g.add_errback(|_| Ok((0, "")));
}

// Synapse: experiment (behaviour 33: a child that fails synchronously)
#[test]
fn a_child_failing_at_once_fails_the_gather_at_once() {
    let d = ensure_deferred(yieldable_gather_results(
        |i: u8| {
            if i == 1 {
                fail::<u8>(Failure::new(ValueError("sync")))
            } else {
                succeed(i)
            }
        },
        [0u8, 1, 2],
    ));
    let f = d.result().failure().unwrap();
    assert!(f.check::<ValueError>());
    assert_eq!(f.message(), "sync");
    d.add_errback(|_| Ok(vec![]));
}
