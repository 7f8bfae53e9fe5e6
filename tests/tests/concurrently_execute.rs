//! Synapse's `concurrently_execute` (`twisted_compat::gather`): behaviours
//! 41–43 of `synapse_semantics.md` (2.4).
//!
//! Citations: `TAH` is Synapse's `tests/util/test_async_helpers.py`;
//! "experiment" is a check run against Synapse 1.163.2 (the expected
//! values below are what it printed).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use twisted_compat::{
    CancelledError, Deferred, Failure, LogcontextError, LoggingContext, PreserveLoggingContext,
    capture_logcontext_errors, concurrently_execute, concurrently_execute_delaying_cancellation,
    current_context, make_deferred_yieldable,
};
use twisted_deferred::{capture_unhandled_errors, ensure_deferred, fail};

type Log = Rc<RefCell<Vec<String>>>;

#[derive(Debug)]
struct TestException(&'static str);

impl std::fmt::Display for TestException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TestException {}

fn fire(d: &Deferred<()>) {
    let _sentinel = PreserveLoggingContext::sentinel();
    d.callback(()).unwrap();
}

// Synapse: TAH::ConcurrentlyExecuteTest.test_limits_runners
#[test]
fn no_more_than_limit_run_at_once_and_each_worker_takes_the_next_item() {
    let started = Rc::new(Cell::new(0));
    let waiters: Rc<RefCell<Vec<Deferred<i32>>>> = Rc::default();
    let processed: Rc<RefCell<Vec<i32>>> = Rc::default();
    let (s, w, p) = (started.clone(), waiters.clone(), processed.clone());
    // async def callback(v): started += 1; processed.append(v); await d2
    let callback = move |v: i32| {
        let (s, w, p) = (s.clone(), w.clone(), p.clone());
        async move {
            s.set(s.get() + 1);
            p.borrow_mut().push(v);
            let d2: Deferred<i32> = Deferred::new();
            w.borrow_mut().push(d2.clone());
            d2.await?;
            Ok::<_, Failure>(())
        }
    };
    let d2 = ensure_deferred(concurrently_execute(callback, vec![1, 2, 3, 4, 5], 3));
    assert_eq!(started.get(), 3);
    assert_eq!(waiters.borrow().len(), 3);

    // One finishes, which starts another.
    let one = waiters.borrow_mut().pop().unwrap();
    one.callback(0).unwrap();
    assert_eq!(started.get(), 4);
    assert_eq!(waiters.borrow().len(), 3);
    assert!(!d2.called());

    loop {
        let next = waiters.borrow_mut().pop();
        let Some(next) = next else { break };
        next.callback(0).unwrap();
    }
    assert_eq!(started.get(), 5);
    let mut all = processed.borrow().clone();
    all.sort();
    assert_eq!(all, [1, 2, 3, 4, 5]);
    assert_eq!(d2.result().value(), Some(()));
}

// Synapse: TAH::ConcurrentlyExecuteTest.test_preserves_stacktraces (Rust
// failures carry no traceback: the caller gets the very failure the
// callback raised, not a FirstError)
#[test]
fn the_callers_failure_is_the_one_the_callback_raised() {
    let d1: Deferred<i32> = Deferred::new();
    let raised: Rc<RefCell<Option<Failure>>> = Rc::default();
    let (d, r) = (d1.clone(), raised.clone());
    // async def callback(v): await d1; raise _TestException("bah")
    let callback = move |_v: i32| {
        let (d, r) = (d.clone(), r.clone());
        async move {
            d.await?;
            let f = Failure::new(TestException("bah"));
            *r.borrow_mut() = Some(f.clone());
            Err::<(), _>(f)
        }
    };
    // async def caller(): try: await concurrently_execute(callback, [1], 2)
    //     except _TestException as e: ...
    let caught: Rc<RefCell<Option<Failure>>> = Rc::default();
    let c = caught.clone();
    let caller = ensure_deferred(async move {
        match concurrently_execute(callback, [1], 2).await {
            Err(e) => {
                *c.borrow_mut() = Some(e);
                Ok(())
            }
            Ok(()) => Err(Failure::msg("No exception thrown")),
        }
    });
    d1.callback(0).unwrap();
    assert_eq!(caller.result().value(), Some(()));
    let got = caught.borrow().clone().unwrap();
    assert!(got.check::<TestException>());
    assert!(Failure::ptr_eq(&got, raised.borrow().as_ref().unwrap()));
}

// Synapse: TAH::ConcurrentlyExecuteTest.test_preserves_stacktraces_on_preformed_failure
#[test]
fn a_preformed_failure_reaches_the_caller_as_it_is() {
    let d1: Deferred<i32> = Deferred::new();
    let f = Failure::new(TestException("bah"));
    let (d, preformed) = (d1.clone(), f.clone());
    // async def callback(v): await d1; await defer.fail(f)
    let callback = move |_v: i32| {
        let (d, preformed) = (d.clone(), preformed.clone());
        async move {
            d.await?;
            fail::<()>(preformed).await
        }
    };
    // async def caller(): try: await concurrently_execute(callback, [1], 2)
    //     except _TestException as e: ...
    let caught: Rc<RefCell<Option<Failure>>> = Rc::default();
    let c = caught.clone();
    let caller = ensure_deferred(async move {
        match concurrently_execute(callback, [1], 2).await {
            Err(e) => {
                *c.borrow_mut() = Some(e);
                Ok(())
            }
            Ok(()) => Err(Failure::msg("No exception thrown")),
        }
    });
    d1.callback(0).unwrap();
    assert_eq!(caller.result().value(), Some(()));
    let got = caught.borrow().clone().unwrap();
    assert!(Failure::ptr_eq(&got, &f));
}

// Synapse: experiment (behaviour 41: a synchronous function)
#[test]
fn a_function_returning_plain_values_completes_without_the_reactor_in_one_worker() {
    let log: Log = Rc::default();
    let l = log.clone();
    // def f(v): log.append(v)  (a plain value: no trip through the reactor)
    let d = ensure_deferred(concurrently_execute(
        move |v: i32| {
            l.borrow_mut().push(format!("{v}"));
            Ok::<_, Failure>(v)
        },
        vec![1, 2, 3, 4, 5],
        3,
    ));
    assert_eq!(d.result().value(), Some(()));
    assert_eq!(*log.borrow(), ["1", "2", "3", "4", "5"]);
}

// Synapse: experiment (behaviour 41: `islice(it, limit)` pulls lazily, so a
// worker that finishes its item synchronously takes the next items itself
// and fewer workers start)
#[test]
fn workers_are_started_lazily_and_a_synchronous_worker_takes_the_next_items() {
    let starts: Rc<RefCell<Vec<i32>>> = Rc::default();
    let gate: Deferred<()> = Deferred::new();
    let (s, g) = (starts.clone(), gate.clone());
    // Item 1 blocks; the others finish at once.
    let d = ensure_deferred(concurrently_execute(
        move |v: i32| {
            s.borrow_mut().push(v);
            if v == 1 {
                g.clone()
            } else {
                twisted_deferred::succeed(())
            }
        },
        vec![1, 2, 3, 4],
        3,
    ));
    // Worker 1 blocks on item 1; worker 2 takes 2, then 3 and 4 itself;
    // a third worker finds nothing left. Item 1 is still in flight.
    assert_eq!(*starts.borrow(), [1, 2, 3, 4]);
    assert!(!d.called());
    gate.callback(()).unwrap();
    assert_eq!(d.result().value(), Some(()));
}

// Synapse: experiment (behaviour 42)
#[test]
fn a_failing_worker_fails_the_caller_at_once_while_the_others_use_up_the_items() {
    let ((), unhandled) = capture_unhandled_errors(|| {
        let log: Rc<RefCell<Vec<i32>>> = Rc::default();
        let blocks: Rc<RefCell<BTreeMap<i32, Deferred<()>>>> = Rc::default();
        let (l, b) = (log.clone(), blocks.clone());
        // def g(v): log2.append(v); d = Deferred(); blocks[v] = d; return d
        let d = ensure_deferred(concurrently_execute(
            move |v: i32| {
                l.borrow_mut().push(v);
                let d: Deferred<()> = Deferred::new();
                b.borrow_mut().insert(v, d.clone());
                d
            },
            vec![1, 2, 3, 4, 5, 6],
            2,
        ));
        let block = |v: i32| blocks.borrow()[&v].clone();
        assert_eq!(*log.borrow(), [1, 2]);
        block(1).errback(Failure::new(TestException("x"))).unwrap();
        assert!(d.result().failure().unwrap().check::<TestException>());
        assert_eq!(*log.borrow(), [1, 2]);
        block(2).callback(()).unwrap();
        assert_eq!(*log.borrow(), [1, 2, 3]);
        block(3).callback(()).unwrap();
        block(4).callback(()).unwrap();
        assert_eq!(*log.borrow(), [1, 2, 3, 4, 5]);
        block(5).callback(()).unwrap();
        assert_eq!(*log.borrow(), [1, 2, 3, 4, 5, 6]);
        block(6).callback(()).unwrap();
        d.add_errback(|_| Ok(()));
    });
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

/// The experiment's function: logs its start, waits (through
/// `make_deferred_yieldable`) for a Deferred whose canceller logs.
fn blocking(
    log: &Log,
    blocks: &Rc<RefCell<BTreeMap<i32, Deferred<()>>>>,
) -> impl Fn(i32) -> Deferred<()> + 'static {
    let (log, blocks) = (log.clone(), blocks.clone());
    move |v: i32| {
        log.borrow_mut()
            .push(format!("start {v} {}", current_context()));
        let l = log.clone();
        let d: Deferred<()> = Deferred::with_canceller(move |_: &Deferred<()>| {
            l.borrow_mut().push(format!("cancel {v}"))
        });
        blocks.borrow_mut().insert(v, d.clone());
        make_deferred_yieldable(d)
    }
}

// Synapse: experiment (behaviour 43, default)
#[test]
fn cancelling_the_caller_cancels_the_workers_in_order() {
    let ((), errors) = capture_logcontext_errors(|| {
        let log: Log = Rc::default();
        let blocks: Rc<RefCell<BTreeMap<i32, Deferred<()>>>> = Rc::default();
        let func = blocking(&log, &blocks);
        let l = log.clone();
        let d = ensure_deferred(async move {
            let ctx = LoggingContext::new("C", "hs");
            let _scope = ctx.entered();
            let r = concurrently_execute(func, vec![1, 2, 3, 4], 2).await;
            if let Err(f) = &r {
                let what = if f.check::<CancelledError>() {
                    "CancelledError"
                } else {
                    "other"
                };
                l.borrow_mut()
                    .push(format!("caller {what} {}", current_context()));
            }
            r
        });
        d.cancel().unwrap();
        log.borrow_mut()
            .push(format!("after cancel {} {}", d.called(), current_context()));
        assert_eq!(
            *log.borrow(),
            [
                "start 1 C",
                "start 2 C",
                "cancel 1",
                "caller CancelledError C",
                "cancel 2",
                "after cancel true sentinel",
            ]
        );
        assert!(d.result().failure().unwrap().check::<CancelledError>());
        d.add_errback(|_| Ok(()));
    });
    // The second worker brings the caller's (finished) context back.
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(matches!(errors[0], LogcontextError::RestartFinished { .. }));
    assert!(matches!(
        errors[1],
        LogcontextError::StopWithoutStart { .. }
    ));
}

// Synapse: experiment (behaviour 43, `delay_cancellation=True`)
#[test]
fn with_delayed_cancellation_the_workers_finish_every_item_before_the_cancelled_error() {
    let ((), errors) = capture_logcontext_errors(|| {
        let log: Log = Rc::default();
        let blocks: Rc<RefCell<BTreeMap<i32, Deferred<()>>>> = Rc::default();
        let func = blocking(&log, &blocks);
        let l = log.clone();
        let d = ensure_deferred(async move {
            let ctx = LoggingContext::new("C", "hs");
            let _scope = ctx.entered();
            let r = concurrently_execute_delaying_cancellation(func, vec![1, 2, 3, 4], 2).await;
            if let Err(f) = &r {
                let what = if f.check::<CancelledError>() {
                    "CancelledError"
                } else {
                    "other"
                };
                l.borrow_mut()
                    .push(format!("caller {what} {}", current_context()));
            }
            r
        });
        d.cancel().unwrap();
        log.borrow_mut()
            .push(format!("after cancel {} {}", d.called(), current_context()));
        // Fire what is pending, twice (the first round starts items 3, 4).
        for _ in 0..2 {
            let pending: Vec<Deferred<()>> = blocks.borrow().values().cloned().collect();
            for b in pending.iter().filter(|b| !b.called()) {
                fire(b);
            }
        }
        assert_eq!(
            *log.borrow(),
            [
                "start 1 C",
                "start 2 C",
                "after cancel true sentinel",
                "start 3 C",
                "start 4 C",
                "caller CancelledError C",
            ]
        );
        assert!(d.result().failure().unwrap().check::<CancelledError>());
        d.add_errback(|_| Ok(()));
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: experiment (behaviour 41: return values are discarded; fewer
// items than the limit)
#[test]
fn results_are_discarded_and_an_empty_input_finishes_at_once() {
    let d = ensure_deferred(concurrently_execute(
        |v: String| async move { Ok::<_, Failure>(v.len()) },
        vec!["a".to_string(), "bb".to_string()],
        10,
    ));
    assert_eq!(d.result().value(), Some(()));
    let empty = ensure_deferred(concurrently_execute(
        |_: u8| Ok::<_, Failure>(()),
        Vec::<u8>::new(),
        3,
    ));
    assert_eq!(empty.result().value(), Some(()));
}

// Synapse: experiment (behaviour 41: a function raising at once)
#[test]
fn a_function_raising_at_once_fails_the_caller() {
    let d = ensure_deferred(concurrently_execute(
        |v: u8| {
            if v == 2 {
                Err(Failure::new(TestException("sync")))
            } else {
                Ok(())
            }
        },
        vec![1u8, 2, 3],
        2,
    ));
    let f = d.result().failure().unwrap();
    assert!(f.check::<TestException>());
    d.add_errback(|_| Ok(()));
}
