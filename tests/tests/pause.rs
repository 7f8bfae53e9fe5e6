//! `pause()` / `unpause()`: the signed pause counter, links held back while
//! it is non-zero, the run on returning to exactly zero, and the pause a
//! waiting Deferred holds.
//!
//! Twisted behaviours covered: B43, B44, B45, B46, B47 (catalogue section
//! 2.5), with pitfall P-03 and experiments E04 (a)(e) and E06.

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::{Deferred, Failure, capture_unhandled_errors, fail};

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

#[derive(Debug, Clone, PartialEq)]
struct GenericError(&'static str);

impl fmt::Display for GenericError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Error for GenericError {}

fn push<T: 'static>(log: &Log<T>) -> impl FnOnce(T) -> Result<(), Failure> + 'static {
    let log = log.clone();
    move |v: T| {
        log.borrow_mut().push(v);
        Ok(())
    }
}

/// Pauses nest: n pauses need n unpauses before anything runs.
// Twisted: experiment E06 ("pause counts nest")
#[test]
fn pauses_nest_and_need_as_many_unpauses() {
    let out: Log<i32> = new_log();
    let d: Deferred<i32> = Deferred::new();
    d.add_callback(push(&out));
    d.pause();
    d.pause();
    d.callback(1).unwrap();
    assert!(out.borrow().is_empty());
    assert_eq!(d.paused(), 2);
    assert!(d.called());
    d.unpause();
    assert!(out.borrow().is_empty());
    assert_eq!(d.paused(), 1);
    d.unpause();
    assert_eq!(*out.borrow(), [1]);
    assert_eq!(d.paused(), 0);
}

/// Links added while paused accumulate and run, in order, synchronously
/// inside the `unpause()` that brings the count to 0.
// Twisted: DeferredTests.testPausedFailure (success form) and experiment E03 (d)
#[test]
fn links_added_while_paused_run_inside_the_final_unpause() {
    let log: Log<String> = new_log();
    let d: Deferred<&str> = Deferred::new();
    d.callback("v").unwrap();
    d.pause();
    for name in ["first", "second"] {
        let l = log.clone();
        d.add_callback(move |v: &str| {
            l.borrow_mut().push(format!("{name} {v}"));
            Ok(v)
        });
    }
    assert!(log.borrow().is_empty());
    log.borrow_mut().push("unpause starts".into());
    d.unpause();
    log.borrow_mut().push("unpause returned".into());
    assert_eq!(
        *log.borrow(),
        ["unpause starts", "first v", "second v", "unpause returned"]
    );
}

/// On an unfired Deferred, `unpause()` only adjusts the counter.
// Twisted: DeferredTests.testUnpauseBeforeCallback
#[test]
fn unpause_before_firing_only_adjusts_the_counter() {
    let out: Log<&str> = new_log();
    let d: Deferred<&str> = Deferred::new();
    d.pause();
    d.add_callback(push(&out));
    d.unpause();
    assert_eq!(d.paused(), 0);
    assert!(!d.called());
    assert!(out.borrow().is_empty());
    d.callback("later").unwrap();
    assert_eq!(*out.borrow(), ["later"]);
}

/// An `unpause()` without a matching `pause()` drives the count negative;
/// that counts as paused. A `pause()` bringing it back to 0 runs nothing;
/// the next add-method call does.
// Twisted: pitfall P-03 and experiment E06
#[test]
fn an_unbalanced_unpause_silently_wedges_the_deferred() {
    let log: Log<String> = new_log();
    let d: Deferred<&str> = Deferred::new();
    d.unpause();
    assert_eq!(d.paused(), -1);
    let l = log.clone();
    d.add_callback(move |v: &str| {
        l.borrow_mut().push(v.to_string());
        Ok(())
    });
    d.callback("x").unwrap();
    assert!(log.borrow().is_empty(), "-1 counts as paused");
    d.pause();
    assert_eq!(d.paused(), 0);
    assert!(log.borrow().is_empty(), "pause() never runs the chain");
    let l = log.clone();
    d.cast::<()>().add_callback(move |r: ()| {
        l.borrow_mut().push(format!("trigger {r:?}"));
        Ok(())
    });
    assert_eq!(*log.borrow(), ["x", "trigger ()"]);
}

/// After an unbalanced unpause, another `unpause()` reaching exactly 0 runs
/// the chain too.
// Twisted: pitfall P-03 (checked in Python: pause, pause, unpause runs)
#[test]
fn an_unpause_returning_the_count_to_zero_runs_the_chain() {
    let log: Log<&str> = new_log();
    let d: Deferred<&str> = Deferred::new();
    d.unpause();
    d.add_callback(push(&log));
    d.callback("x").unwrap();
    d.pause();
    assert!(log.borrow().is_empty());
    d.pause();
    assert_eq!(d.paused(), 1);
    d.unpause();
    assert_eq!(*log.borrow(), ["x"]);
    assert_eq!(d.paused(), 0);
}

/// A waiting Deferred holds one pause; user pauses add to it, and the
/// hand-off removes exactly one.
// Twisted: experiment E04 (a)(e)
#[test]
fn chaining_and_user_pauses_share_one_counter() {
    let out: Log<&str> = new_log();
    let outer: Deferred<()> = Deferred::new();
    let inner: Deferred<&str> = Deferred::new();
    let i = inner.clone();
    let outer = outer.add_callback(move |()| i);
    outer.cast::<()>().callback(()).unwrap();
    assert_eq!(outer.paused(), 1, "waiting counts as one pause");
    outer.pause();
    assert_eq!(outer.paused(), 2);
    outer.add_callback(push(&out));
    inner.callback("v").unwrap();
    assert_eq!(outer.paused(), 1, "the hand-off removed exactly one");
    assert!(out.borrow().is_empty());
    outer.unpause();
    assert_eq!(outer.paused(), 0);
    assert_eq!(*out.borrow(), ["v"]);
}

/// A failure held by a paused Deferred is not delivered until unpaused;
/// errbacks added meanwhile wait.
// Twisted: DeferredTests.testPausedFailure and experiment E06
#[test]
fn a_paused_failure_is_not_delivered_until_unpaused() {
    let got: Log<Failure> = new_log();
    let d = fail::<()>(GenericError("fail"));
    d.pause();
    let g = got.clone();
    d.add_errback(move |f: Failure| {
        g.borrow_mut().push(f);
        Ok(())
    });
    assert!(got.borrow().is_empty());
    d.unpause();
    assert_eq!(got.borrow().len(), 1);
    assert_eq!(got.borrow()[0].message(), "fail");
}

/// Pausing before firing: the fire stores the result, runs nothing, and
/// `called` is already true.
// Twisted: experiment E06 ("paused twice, fired")
#[test]
fn a_deferred_paused_before_firing_stores_the_result_and_runs_nothing() {
    let out: Log<i32> = new_log();
    let d: Deferred<i32> = Deferred::new();
    d.add_callback(|x: i32| Ok(x + 1)).add_callback(push(&out));
    d.pause();
    d.callback(1).unwrap();
    assert!(d.called());
    assert!(out.borrow().is_empty());
    assert_eq!(d.cast::<i32>().result().value(), Some(1));
    d.unpause();
    assert_eq!(*out.borrow(), [2]);
}

/// A Deferred that fails while paused has run nothing, so dropping it
/// reports nothing; the failure is only recorded once the chain has run.
// Twisted: pitfall P-17 / experiment E16 (record set at the end of a run; checked in Python)
#[test]
fn a_failure_stored_while_paused_is_only_recorded_after_unpause() {
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<()> = Deferred::new();
        d.pause();
        d.errback(GenericError("p")).unwrap();
        drop(d);
    });
    assert!(reports.is_empty(), "Twisted reports nothing here");

    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<()> = Deferred::new();
        d.pause();
        d.errback(GenericError("p")).unwrap();
        d.unpause();
        drop(d);
    });
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].message(), "p");

    let ((), reports) = capture_unhandled_errors(|| {
        let d = fail::<()>(GenericError("q"));
        d.pause();
        drop(d);
    });
    assert_eq!(reports.len(), 1, "fail() had already run its chain");
}
