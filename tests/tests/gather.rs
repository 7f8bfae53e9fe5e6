//! `gatherResults`: values in input order, the first failure wrapped in
//! `FirstError` (never unwrapped), `consumeErrors`, inputs that fired
//! before the call, cancellation broadcast to every input, a Deferred
//! waiting on a gather, the printed form (it is a `DeferredList`),
//! unhandled-error reports, `FirstError` itself, Synapse's
//! `unwrapFirstError`, and a gather of a million inputs.
//!
//! Twisted behaviours covered: B87-B90 (catalogue sections 2.10, 2.11), the
//! `FirstError` row of section 3.2, pitfall P-15, experiments E10 (1-6) and
//! E22-C. Synapse behaviour 40 (`unwrapFirstError`).

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use integration_tests::support::capture_logs;
use twisted_deferred::{
    CancelledError, Deferred, Failure, FirstError, State, capture_unhandled_errors, fail,
    gather_results, succeed, tracking::Tracker, unwrap_first_error,
};

macro_rules! python_errors {
    ($($name:ident),*) => {$(
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

python_errors!(ValueError, KeyError, RuntimeError, ZeroDivisionError);

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

/// Twisted's `fakeCallbackCanceller`: a canceller that calls back.
fn fake_callback_canceller(d: &Deferred<&'static str>) {
    d.callback("Callback Result").unwrap();
}

/// A Deferred whose canceller appends `name` to `log`.
fn logging_deferred<T: 'static>(log: &Log<String>, name: &'static str) -> Deferred<T> {
    let log = log.clone();
    Deferred::with_canceller(move |_d: &Deferred<T>| log.borrow_mut().push(name.to_owned()))
}

/// The `FirstError` a Deferred failed with.
fn first_error<T: Clone + 'static>(d: &Deferred<T>) -> FirstError {
    d.result()
        .failure()
        .expect("the gather should have failed")
        .downcast_ref::<FirstError>()
        .expect("the failure should be a FirstError")
        .clone()
}

fn hex<T: 'static>(d: &Deferred<T>) -> String {
    format!("{:#x}", d.id())
}

/// Handles a gather's failure so it is not reported.
fn handle<T: 'static>(d: &Deferred<Vec<T>>) {
    d.add_errback(|_| Ok(Vec::new()));
}

// ---------------------------------------------------------------------------
// Capturing what the crate logs (Twisted's `log.failure`), per thread.

// ---------------------------------------------------------------------------
// Results

// Twisted: DeferredTests.test_gatherResults (successful list)
#[test]
fn gather_results_calls_back_with_every_value() {
    let results = new_log();
    let sink = results.clone();
    gather_results([succeed(1), succeed(2)], false).add_callback(move |v| {
        sink.borrow_mut().push(v.clone());
        Ok(v)
    });
    assert_eq!(*results.borrow(), [vec![1, 2]]);
}

// Twisted: experiment E10-2 ("ordered by position: ['A', 'B']")
#[test]
fn values_are_in_input_order_whatever_the_firing_order() {
    let (a, b) = (Deferred::<&str>::new(), Deferred::<&str>::new());
    let g = gather_results([a.clone(), b.clone()], false);
    b.callback("B").unwrap();
    assert!(!g.called());
    a.callback("A").unwrap();
    assert_eq!(g.result().value(), Some(vec!["A", "B"]));
    // The gather's links hand the values on unchanged.
    assert_eq!(a.result().value(), Some("A"));
    assert_eq!(b.result().value(), Some("B"));
}

// Twisted: own experiment ("11 [5] [5]": a callback added to the input after the gather sees its value)
#[test]
fn the_inputs_keep_their_values() {
    let a = Deferred::<i32>::new();
    let g = gather_results([a.clone()], false);
    let seen = new_log();
    let sink = seen.clone();
    a.add_callback(move |v| {
        sink.borrow_mut().push(v);
        Ok(v)
    });
    a.callback(5).unwrap();
    assert_eq!(*seen.borrow(), [5]);
    assert_eq!(g.result().value(), Some(vec![5]));
}

// Twisted: experiment E10-3 ("empty: []"); catalogue B88
#[test]
fn an_empty_gather_calls_back_at_once_with_an_empty_list() {
    let g = gather_results(Vec::<Deferred<i32>>::new(), false);
    assert_eq!(g.result().value(), Some(vec![]));
}

// Twisted: DeferredTests.test_gatherResults (failing list); experiment E10-4
#[test]
fn a_failure_is_delivered_wrapped_in_first_error() {
    let error = Failure::new(ValueError("vb"));
    let dl = [succeed(1), fail(error.clone())];
    let errors = new_log();
    let sink = errors.clone();
    gather_results(dl.clone(), false).add_errback(move |f: Failure| {
        sink.borrow_mut().push(f);
        Ok(vec![])
    });
    assert_eq!(errors.borrow().len(), 1);
    let failure = errors.borrow()[0].clone();
    // Not unwrapped: the failure's error is the FirstError.
    assert!(failure.check::<FirstError>());
    assert!(!failure.check::<ValueError>());
    let fe = failure.downcast_ref::<FirstError>().unwrap();
    assert_eq!(fe.index, 1);
    assert!(Failure::ptr_eq(&fe.failure, &error));
    assert_eq!(fe.failure.downcast_ref(), Some(&ValueError("vb")));
    // Without consumeErrors the input keeps its failure.
    assert!(Failure::ptr_eq(&dl[1].result().failure().unwrap(), &error));
    dl[1].add_errback(|_| Ok(1));
}

/// Once failed, the gather ignores what the other inputs do.
// Twisted: experiment E10-4 ("a.callback('late a')  # ignored by g")
#[test]
fn a_late_success_after_the_failure_is_ignored() {
    let (a, b) = (Deferred::<&str>::new(), Deferred::<&str>::new());
    let g = gather_results([a.clone(), b.clone()], false);
    let error = Failure::new(ValueError("vb"));
    b.errback(error.clone()).unwrap();
    let before = g.result().failure().unwrap();
    let fe = first_error(&g);
    assert_eq!(fe.index, 1);
    assert!(Failure::ptr_eq(&fe.failure, &error));
    assert!(Failure::ptr_eq(&b.result().failure().unwrap(), &error));
    a.callback("late a").unwrap();
    assert!(Failure::ptr_eq(&g.result().failure().unwrap(), &before));
    assert_eq!(a.result().value(), Some("late a"));
    handle(&g);
    b.add_errback(|_| Ok(""));
}

/// An input that failed before the call fails the gather inside it.
// Twisted: experiment E22-C ("C: FAIL FirstError 1")
#[test]
fn an_input_failed_beforehand_fails_the_gather_at_once() {
    let error = Failure::new(KeyError("k"));
    let bad = fail::<i32>(error.clone());
    let pending = Deferred::<i32>::new();
    let g = gather_results([pending.clone(), bad.clone()], false);
    let fe = first_error(&g);
    assert_eq!(fe.index, 1);
    assert!(Failure::ptr_eq(&fe.failure, &error));
    handle(&g);
    bad.add_errback(|_| Ok(0));
    pending.callback(0).unwrap();
}

// Twisted: DeferredTests.test_gatherResultsWithConsumeErrors; experiment E10-5
#[test]
fn consume_errors_replaces_the_inputs_failure_with_none() {
    let dgood = succeed(1);
    let oh_noes = Failure::new(RuntimeError("oh noes"));
    let dbad = fail::<i32>(oh_noes.clone());
    let d = gather_results([dgood.clone(), dbad.clone()], true);
    let unconsumed = new_log();
    let sink = unconsumed.clone();
    let dbad_none = dbad.cast::<()>();
    dbad_none.add_errback(move |f: Failure| {
        sink.borrow_mut().push(f);
        Ok(())
    });
    let gathered = new_log();
    let sink = gathered.clone();
    d.add_errback(move |f: Failure| {
        sink.borrow_mut().push(f);
        Ok(vec![])
    });
    assert_eq!((unconsumed.borrow().len(), gathered.borrow().len()), (0, 1));
    let fe = gathered.borrow()[0]
        .downcast_ref::<FirstError>()
        .unwrap()
        .clone();
    assert!(fe.failure.check::<RuntimeError>());
    assert!(Failure::ptr_eq(&fe.failure, &oh_noes));
    assert!(matches!(dbad_none.result(), State::Value(())));
}

// ---------------------------------------------------------------------------
// Printed form: a gather is a DeferredList

// Twisted: experiment E10-1 ("gatherResults returns a DeferredList"); section 3.1
#[test]
fn a_gather_prints_as_a_deferred_list() {
    let pending = Deferred::<i32>::new();
    let g = gather_results([succeed(1), pending.clone()], false);
    assert_eq!(format!("{g:?}"), format!("<DeferredList at {}>", hex(&g)));
    pending.callback(2).unwrap();
    assert_eq!(
        format!("{g:?}"),
        format!("<DeferredList at {} current result: [1, 2]>", hex(&g))
    );
}

// Twisted: section 3.1 ("empty DeferredList"); own experiment (repr(gatherResults([])) = "<DeferredList at 0x… current result: []>")
#[test]
fn an_empty_gather_prints_as_an_empty_deferred_list() {
    let g = gather_results(Vec::<Deferred<i32>>::new(), false);
    assert_eq!(
        format!("{g:?}"),
        format!("<DeferredList at {} current result: []>", hex(&g))
    );
}

// ---------------------------------------------------------------------------
// Cancellation

/// Cancelling the gather cancels every input, in order; the first
/// CancelledError fails the gather mid-loop, and the loop goes on.
// Twisted: DeferredTests.test_cancelGatherResults; experiment E10-6; pitfall P-15 (own experiment: ['a', ('g errback', 0), 'b'])
#[test]
fn cancelling_a_gather_cancels_every_input() {
    let order = new_log();
    let one: Deferred<()> = logging_deferred(&order, "one canceller");
    let two: Deferred<()> = logging_deferred(&order, "two canceller");
    let result = gather_results([one.clone(), two.clone()], false);
    let log = order.clone();
    result.add_errback(move |f: Failure| {
        let index = f.downcast_ref::<FirstError>().map(|fe| fe.index);
        log.borrow_mut().push(format!("gather errback {index:?}"));
        Err(f)
    });
    result.cancel().unwrap();
    assert_eq!(
        *order.borrow(),
        ["one canceller", "gather errback Some(0)", "two canceller"]
    );
    let one_failure = one.result().failure().unwrap();
    assert!(one_failure.check::<CancelledError>());
    assert!(two.result().failure().unwrap().check::<CancelledError>());
    let fe = first_error(&result);
    assert_eq!(fe.index, 0);
    assert!(fe.failure.check::<CancelledError>());
    assert!(Failure::ptr_eq(&fe.failure, &one_failure));
    handle(&result);
    one.add_errback(|_| Ok(()));
    two.add_errback(|_| Ok(()));
}

// Twisted: DeferredTests.test_cancelGatherResultsWithAllDeferredsCallback; catalogue B90
#[test]
fn cancel_succeeds_when_every_canceller_calls_back() {
    let one = Deferred::with_canceller(fake_callback_canceller);
    let two = Deferred::with_canceller(fake_callback_canceller);
    let result = gather_results([one, two], false);
    result.cancel().unwrap();
    assert_eq!(
        result.result().value(),
        Some(vec!["Callback Result", "Callback Result"])
    );
}

// Twisted: own experiment ("14 FAIL FirstError[1,CancelledError] 'cb' FAIL CancelledError")
#[test]
fn cancel_fails_with_the_first_input_that_did_fail() {
    let one = Deferred::with_canceller(fake_callback_canceller);
    let two = Deferred::<&str>::new();
    let g = gather_results([one.clone(), two.clone()], false);
    g.cancel().unwrap();
    let fe = first_error(&g);
    assert_eq!(fe.index, 1);
    assert!(Failure::ptr_eq(
        &fe.failure,
        &two.result().failure().unwrap()
    ));
    assert_eq!(one.result().value(), Some("Callback Result"));
    handle(&g);
    two.add_errback(|_| Ok(""));
}

/// A canceller that fails is logged, not raised, and the remaining inputs
/// are still cancelled.
// Twisted: DeferredTests.test_cancelDeferredListWithException, through gatherResults (own experiment: "3 gather cancel raising: ['a', 'b'] FAIL FirstError[1,CancelledError] unfired FAIL CancelledError", one logged event)
#[test]
fn a_failing_canceller_is_logged_and_the_other_inputs_are_still_cancelled() {
    let order = new_log();
    let log = order.clone();
    let a = Deferred::with_canceller(move |_d: &Deferred<i32>| -> Result<(), Failure> {
        log.borrow_mut().push("a".to_owned());
        Err(Failure::new(ZeroDivisionError("division by zero")))
    });
    let b: Deferred<i32> = logging_deferred(&order, "b");
    let g = gather_results([a.clone(), b.clone()], false);
    let (cancelled, logged) = capture_logs(|| g.cancel());
    assert!(cancelled.is_ok());
    assert_eq!(*order.borrow(), ["a", "b"]);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].0, log::Level::Error);
    assert!(
        logged[0]
            .1
            .starts_with("Exception raised from user supplied canceller"),
        "{logged:?}"
    );
    assert!(logged[0].1.contains("division by zero"), "{logged:?}");
    assert!(a.result().is_pending());
    assert!(b.result().failure().unwrap().check::<CancelledError>());
    assert_eq!(first_error(&g).index, 1);
    handle(&g);
    b.add_errback(|_| Ok(0));
    a.callback(0).unwrap();
}

// Twisted: DeferredTests.test_cancelFiredOnOneErrbackDeferredList, through gatherResults; catalogue B85
#[test]
fn cancelling_a_failed_gather_does_nothing() {
    let order = new_log();
    let one = Deferred::<()>::new();
    let two: Deferred<()> = logging_deferred(&order, "two");
    let g = gather_results([one.clone(), two.clone()], false);
    one.errback(ValueError("first")).unwrap();
    g.cancel().unwrap();
    assert!(order.borrow().is_empty());
    assert!(two.result().is_pending());
    assert_eq!(first_error(&g).index, 0);
    handle(&g);
    one.add_errback(|_| Ok(()));
    two.callback(()).unwrap();
}

/// The gather's own `cancel()` does nothing once it fired, even while it
/// waits on a Deferred a callback returned.
// Twisted: DeferredList.cancel ("if not self.called"); own experiment ("2b []")
#[test]
fn cancelling_a_fired_gather_waiting_on_a_deferred_is_not_forwarded() {
    let order = new_log();
    let x: Deferred<i32> = logging_deferred(&order, "x canceller");
    let g = gather_results([succeed(1)], false);
    let inner = x.clone();
    let waiting = g.add_callback(move |_| inner);
    assert!(waiting.is_waiting());
    waiting.cancel().unwrap();
    assert!(order.borrow().is_empty());
    assert!(x.result().is_pending());
    x.callback(7).unwrap();
    assert_eq!(waiting.result().value(), Some(7));
}

// Twisted: catalogue B86 through gatherResults (own experiment: "6 FirstError 0 CancelledError")
#[test]
fn a_deferred_waiting_on_a_gather_forwards_cancel_to_it() {
    let order = new_log();
    let a: Deferred<i32> = logging_deferred(&order, "a canceller");
    let outer = Deferred::<()>::new();
    let input = a.clone();
    let waiting = outer.add_callback(move |()| gather_results([input], false));
    outer.callback(()).unwrap();
    assert!(waiting.is_waiting());
    waiting.cancel().unwrap();
    assert_eq!(*order.borrow(), ["a canceller"]);
    let fe = first_error(&waiting);
    assert_eq!(fe.index, 0);
    assert!(Failure::ptr_eq(&fe.failure, &a.result().failure().unwrap()));
    handle(&waiting);
    a.add_errback(|_| Ok(0));
}

// ---------------------------------------------------------------------------
// Unhandled errors

/// A failed gather nobody handled reports its FirstError; without
/// consumeErrors the failed input reports its own failure too.
// Twisted: catalogue B89 ("Without consumeErrors the input keeps its failure (and may report it at GC)"); test_gatherResults ("get rid of error")
#[test]
fn an_unhandled_gather_failure_is_reported_with_the_unconsumed_input() {
    let error = Failure::new(ValueError("v"));
    let ((), mut reports) = capture_unhandled_errors(|| {
        let a = fail::<i32>(error.clone());
        let g = gather_results([succeed(1), a], false);
        drop(g);
    });
    assert_eq!(reports.len(), 2, "{reports:?}");
    reports.sort_by_key(|f| f.check::<FirstError>());
    assert!(Failure::ptr_eq(&reports[0], &error));
    let fe = reports[1].downcast_ref::<FirstError>().unwrap();
    assert_eq!(fe.index, 1);
    assert!(Failure::ptr_eq(&fe.failure, &error));
}

// Twisted: DeferredTests.test_gatherResultsWithConsumeErrors (consumeErrors prevents the input's report)
#[test]
fn with_consume_errors_only_the_gather_failure_is_reported() {
    let error = Failure::new(ValueError("v"));
    let ((), reports) = capture_unhandled_errors(|| {
        let a = fail::<i32>(error.clone());
        let g = gather_results([succeed(1), a], true);
        drop(g);
    });
    assert_eq!(reports.len(), 1, "{reports:?}");
    let fe = reports[0].downcast_ref::<FirstError>().unwrap();
    assert!(Failure::ptr_eq(&fe.failure, &error));
}

// Twisted: catalogue B89 + own experiment (gather with a pending input: nothing "before gc", FirstError and ValueError after gc.collect())
#[test]
fn an_abandoned_failed_gather_with_a_pending_input_is_reported_once_collected() {
    let error = Failure::new(ValueError("va"));
    let tracker = Tracker::start();
    let (a, b) = (Deferred::<i32>::new(), Deferred::<i32>::new());
    let g = gather_results([a.clone(), b.clone()], false);
    a.errback(error.clone()).unwrap();
    let ((), before) = capture_unhandled_errors(|| drop((a, b, g)));
    assert!(before.is_empty(), "{before:?}");
    let (_, mut reports) = capture_unhandled_errors(|| tracker.collect());
    assert_eq!(reports.len(), 2, "{reports:?}");
    reports.sort_by_key(|f| f.check::<FirstError>());
    assert!(Failure::ptr_eq(&reports[0], &error));
    assert!(Failure::ptr_eq(
        &reports[1].downcast_ref::<FirstError>().unwrap().failure,
        &error
    ));
}

// ---------------------------------------------------------------------------
// FirstError

// Twisted: FirstErrorTests.test_repr ("FirstError[#3, ValueError('some text')]": the index, then the repr of the wrapped exception)
#[test]
fn first_error_debug_shows_the_index_and_the_wrapped_error() {
    let exc = ValueError("some text");
    let f = Failure::new(exc.clone());
    let error = FirstError::new(f, 3);
    assert_eq!(format!("{error:?}"), format!("FirstError[#3, {exc:?}]"));
}

// Twisted: FirstErrorTests.test_str
#[test]
fn first_error_display_shows_the_index_and_the_wrapped_failure() {
    let f = Failure::new(ValueError("some text"));
    let error = FirstError::new(f.clone(), 5);
    assert_eq!(error.to_string(), format!("FirstError[#5, {f}]"));
}

// Twisted: FirstErrorTests.test_comparison; catalogue B87
#[test]
fn first_errors_are_equal_when_index_and_failure_object_are() {
    let first_failure = Failure::new(ZeroDivisionError("integer division or modulo by zero"));
    let one = FirstError::new(first_failure.clone(), 13);
    let another_one = FirstError::new(first_failure.clone(), 13);
    let second_failure = Failure::new(ValueError("bar"));
    let another = FirstError::new(second_failure, 9);
    assert!(one == another_one);
    assert!(one != another);
    assert!(!(one == another));
    assert!(!(one != another_one));
    // Same failure, another index.
    assert!(one != FirstError::new(first_failure, 9));
}

// ---------------------------------------------------------------------------
// unwrapFirstError (Synapse)

// Synapse: synapse.util.unwrapFirstError (behaviour 40: "returns the sub-failure")
#[test]
fn unwrap_first_error_gives_back_the_wrapped_failure() {
    let (a, b) = (Deferred::<i32>::new(), Deferred::<i32>::new());
    let g = gather_results([a.clone(), b.clone()], true);
    g.add_errback(unwrap_first_error);
    let inner = Failure::new(ValueError("inner"));
    b.errback(inner.clone()).unwrap();
    assert!(Failure::ptr_eq(&g.result().failure().unwrap(), &inner));
    handle(&g);
    a.callback(1).unwrap();
}

/// Anything that is not a FirstError comes out as it went in (Synapse's
/// `trap` re-raises it: the same exception).
// Synapse: synapse.util.unwrapFirstError (behaviour 40: "re-raises anything that is not a FirstError")
#[test]
fn unwrap_first_error_leaves_other_failures_alone() {
    let other = Failure::new(KeyError("not wrapped"));
    let out = unwrap_first_error(other.clone());
    assert_eq!(out.downcast_ref(), Some(&KeyError("not wrapped")));
    assert!(!out.check::<FirstError>());
}

// ---------------------------------------------------------------------------
// Scale

/// A million inputs fired after the gather was built, in reverse order.
/// Runs in a few seconds in a debug build.
// Twisted: catalogue B88 at scale
#[test]
fn a_gather_of_a_million_deferreds_calls_back_with_every_value_in_order() {
    const N: u32 = 1_000_000;
    let inputs: Vec<Deferred<u32>> = (0..N).map(|_| Deferred::new()).collect();
    let g = gather_results(inputs.iter().cloned(), false);
    for (i, d) in inputs.iter().enumerate().rev() {
        d.callback(i as u32 + 7).unwrap();
    }
    let values = g.result().value().expect("the gather should have fired");
    assert_eq!(values.len(), N as usize);
    assert!(values.iter().enumerate().all(|(i, &v)| v == i as u32 + 7));
}

/// A million inputs that fired before the call; the last one fails, so the
/// gather fails inside the call with that index.
// Twisted: catalogue B88/B89 at scale
#[test]
fn a_gather_of_a_million_fired_deferreds_fires_inside_the_call() {
    const N: u32 = 1_000_000;
    let g = gather_results((0..N).map(succeed), false);
    let values = g.result().value().expect("the gather should have fired");
    assert_eq!(values.len(), N as usize);
    assert!(values.iter().enumerate().all(|(i, &v)| v == i as u32));

    let error = Failure::new(ValueError("last"));
    let last = fail::<u32>(error.clone());
    let g = gather_results((0..N - 1).map(succeed).chain([last.clone()]), true);
    let fe = first_error(&g);
    assert_eq!(fe.index, N as usize - 1);
    assert!(Failure::ptr_eq(&fe.failure, &error));
    assert!(matches!(last.cast::<()>().result(), State::Value(())));
    handle(&g);
}
