//! Chaining: a callback or errback returns a Deferred, and the outer
//! Deferred takes its result at once or waits for it; `chainDeferred`.
//!
//! Twisted behaviours covered: B28, B29, B30, B31, B32, B33, B34, B35, B36,
//! B38, B39, B40, B41, B42 (catalogue section 2.4), with pitfalls P-04, P-05,
//! P-21 and experiments E04, E05, E22 (I, J), E25. B37 (constant stack depth)
//! and the deep-chain part of B38 are covered by `chain_depth.rs`.

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::{Deferred, Failure, State, capture_unhandled_errors, fail, succeed};

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

#[derive(Debug, Clone, PartialEq)]
struct KeyError;

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("k")
    }
}

impl Error for KeyError {}

/// Logs what a callback receives and passes it on.
fn recorder<T: fmt::Debug + 'static>(
    log: &Log<String>,
    label: &'static str,
) -> impl FnOnce(T) -> Result<T, Failure> + 'static {
    let log = log.clone();
    move |v: T| {
        log.borrow_mut().push(format!("{label} {v:?}"));
        Ok(v)
    }
}

// Twisted: DeferredTests.test_callbackReturnsDeferred
#[test]
fn the_next_callback_waits_for_a_returned_deferred() {
    let log: Log<String> = new_log();
    let d1: Deferred<i32> = Deferred::new();
    let d2: Deferred<i32> = Deferred::new();
    d2.pause();
    let r = d2.clone();
    d1.add_callback(move |_x: i32| r)
        .add_callback(recorder(&log, "got"));
    d1.callback(1).unwrap();
    assert!(log.borrow().is_empty(), "should not have been called yet");
    d2.callback(2).unwrap();
    assert!(
        log.borrow().is_empty(),
        "still should not have been called yet"
    );
    d2.unpause();
    assert_eq!(*log.borrow(), ["got 2"]);
}

/// A returned Deferred that already has a result hands it over at once and
/// keeps None.
// Twisted: DeferredTests.test_synchronousImplicitChain
#[test]
fn a_fired_deferred_returned_from_a_callback_hands_over_its_result_at_once() {
    let result = Rc::new("object");
    let first = succeed(result.clone());
    let second: Deferred<()> = Deferred::new();
    let f = first.clone();
    let second = second.add_callback(move |()| f);
    second.cast::<()>().callback(()).unwrap();
    let first_results: Log<()> = new_log();
    let fr = first_results.clone();
    first.cast::<()>().add_callback(move |r: ()| {
        fr.borrow_mut().push(r);
        Ok(())
    });
    assert_eq!(first_results.borrow().len(), 1, "first's callback got None");
    let got = second.result().value().unwrap();
    assert!(Rc::ptr_eq(&got, &result));
    assert!(!second.is_waiting());
    assert_eq!(second.paused(), 0);
}

/// Taking over a failed Deferred's failure clears its unhandled-error
/// record: only the Deferred that took it can report it.
// Twisted: DeferredTests.test_synchronousImplicitErrorChain and LogTests.test_chainedErrorCleanup
#[test]
fn a_failed_deferred_returned_from_a_callback_hands_over_its_failure() {
    let ((), reports) = capture_unhandled_errors(|| {
        let first = fail::<()>(GenericError("First Deferred's Failure"));
        let second: Deferred<()> = Deferred::new();
        let f = first.clone();
        second.add_callback(move |()| f);
        second.callback(()).unwrap();
        let got: Log<()> = new_log();
        let g = got.clone();
        first.add_callback(move |r: ()| {
            g.borrow_mut().push(r);
            Ok(())
        });
        assert_eq!(got.borrow().len(), 1, "first now holds None");
        let failure = second.result().failure().unwrap();
        assert!(failure.check::<GenericError>());
        second.add_errback(|_f| Ok(()));
    });
    assert!(reports.is_empty(), "nothing is reported: {reports:?}");
}

/// An unfired Deferred returned from a callback: the outer records it as the
/// one it waits on, pauses itself once, and holds it as its result.
// Twisted: DeferredTests.test_chainDeferredRecordsImplicitChain
#[test]
fn returning_an_unfired_deferred_makes_the_outer_wait_on_it() {
    let a: Deferred<()> = Deferred::new();
    let b: Deferred<()> = Deferred::new();
    let b1 = b.clone();
    a.add_callback(move |()| b1);
    a.callback(()).unwrap();
    assert!(a.is_waiting());
    assert_eq!(a.paused(), 1);
    assert!(matches!(a.result(), State::Waiting(ref w) if w.ptr_eq(&b)));
    assert_eq!(
        format!("{a:?}"),
        format!(
            "<Deferred at {:#x} waiting on Deferred at {:#x}>",
            a.id(),
            b.id()
        )
    );
    b.callback(()).unwrap();
    assert!(!a.is_waiting());
    assert_eq!(a.paused(), 0);
}

// Twisted: DeferredTests.test_asynchronousImplicitChain
#[test]
fn the_outer_continues_when_the_inner_fires_and_the_inner_keeps_none() {
    let first: Deferred<Rc<&str>> = Deferred::new();
    let second: Deferred<()> = Deferred::new();
    let f = first.clone();
    let second = second.add_callback(move |()| f);
    second.cast::<()>().callback(()).unwrap();
    let first_result: Log<()> = new_log();
    let fr = first_result.clone();
    first.cast::<()>().add_callback(move |r: ()| {
        fr.borrow_mut().push(r);
        Ok(())
    });
    let second_result: Log<Rc<&str>> = new_log();
    let sr = second_result.clone();
    second.add_callback(move |r: Rc<&str>| {
        sr.borrow_mut().push(r);
        Ok(())
    });
    assert!(first_result.borrow().is_empty());
    assert!(second_result.borrow().is_empty());
    let result = Rc::new("object");
    first.callback(result.clone()).unwrap();
    assert_eq!(first_result.borrow().len(), 1);
    assert_eq!(second_result.borrow().len(), 1);
    assert!(Rc::ptr_eq(&second_result.borrow()[0], &result));
}

// Twisted: DeferredTests.test_asynchronousImplicitErrorChain
#[test]
fn the_outer_receives_the_inner_failure_and_the_inner_keeps_none() {
    let ((), reports) = capture_unhandled_errors(|| {
        let first: Deferred<()> = Deferred::new();
        let second: Deferred<()> = Deferred::new();
        let f = first.clone();
        second.add_callback(move |()| f);
        second.callback(()).unwrap();
        let second_error: Log<Failure> = new_log();
        let se = second_error.clone();
        second.add_errback(move |f: Failure| {
            se.borrow_mut().push(f);
            Ok(())
        });
        let first_result: Log<()> = new_log();
        let fr = first_result.clone();
        first.add_callback(move |r: ()| {
            fr.borrow_mut().push(r);
            Ok(())
        });
        let second_result: Log<()> = new_log();
        let sr = second_result.clone();
        second.add_callback(move |r: ()| {
            sr.borrow_mut().push(r);
            Ok(())
        });
        assert!(first_result.borrow().is_empty());
        assert!(second_result.borrow().is_empty());
        first
            .errback(GenericError("First Deferred's Failure"))
            .unwrap();
        assert!(second_error.borrow()[0].check::<GenericError>());
        assert_eq!(first_result.borrow().len(), 1);
        assert_eq!(second_result.borrow().len(), 1);
    });
    assert!(reports.is_empty());
}

/// Inner links added before the outer attached run first and transform the
/// value the outer receives; those added after run last and see None.
// Twisted: pitfall P-04 and experiment E04 (a)
#[test]
fn inner_links_before_the_hand_off_shape_the_value_and_later_ones_see_none() {
    let log: Log<String> = new_log();
    let outer: Deferred<&str> = Deferred::new();
    let inner: Deferred<&str> = Deferred::new();
    let l = log.clone();
    inner.add_callback(move |r: &str| {
        l.borrow_mut().push(format!("inner-1 {r}"));
        Ok("i1")
    });
    let i = inner.clone();
    let o = outer.add_callback(move |_r: &str| i);
    let l = log.clone();
    o.add_callback(move |r: &str| {
        l.borrow_mut().push(format!("outer-2 {r}"));
        Ok("a2")
    });
    outer.callback("o").unwrap();
    assert_eq!(outer.paused(), 1);
    assert!(outer.is_waiting());
    let l = log.clone();
    inner.cast::<()>().add_callback(move |r: ()| {
        l.borrow_mut().push(format!("inner-late {r:?}"));
        Ok(())
    });
    inner.callback("i0").unwrap();
    assert_eq!(*log.borrow(), ["inner-1 i0", "outer-2 i1", "inner-late ()"]);
    assert!(matches!(inner.cast::<()>().result(), State::Value(())));
    assert_eq!(outer.result().value(), Some("a2"));
    assert_eq!(outer.paused(), 0);
}

/// The middle Deferred is itself waiting on a third one: its own callbacks
/// run after the third fires and before the outer gets the result.
// Twisted: DeferredTests.test_innerCallbacksPreserved
#[test]
fn a_returned_deferred_that_is_itself_waiting_runs_its_callbacks_first() {
    let results: Log<String> = new_log();
    let failures: Log<Failure> = new_log();
    let inner: Deferred<String> = Deferred::new();
    let outer = succeed("outer".to_string());
    let (r, fl, i) = (results.clone(), failures.clone(), inner.clone());
    outer.add_callback(move |result: String| {
        r.borrow_mut().push(format!("start-of-cb {result}"));
        let d = succeed("inner".to_string());
        let (r1, r2) = (r.clone(), r.clone());
        d.add_callback(move |_result: String| {
            r1.borrow_mut().push("firstCallback inner".into());
            i
        })
        .add_callback(move |result: String| {
            r2.borrow_mut().push(format!("secondCallback {result}"));
            Ok(result.repeat(2))
        })
        .add_errback(move |f: Failure| -> Failure {
            fl.borrow_mut().push(f.clone());
            f
        });
        d
    });
    inner.callback("orange".into()).unwrap();
    let r = results.clone();
    outer.add_callback(move |s: String| {
        r.borrow_mut().push(s);
        Ok(())
    });
    assert!(failures.borrow().is_empty());
    assert_eq!(
        *results.borrow(),
        [
            "start-of-cb outer",
            "firstCallback inner",
            "secondCallback orange",
            "orangeorange",
        ]
    );
}

/// The continuation link appended to the returned Deferred need not be its
/// first link: it runs after the links that were already queued there.
// Twisted: DeferredTests.test_continueCallbackNotFirst
#[test]
fn the_continuation_need_not_be_the_first_link_of_the_returned_deferred() {
    let results: Log<String> = new_log();
    let a: Deferred<String> = Deferred::new();
    let (r, a1) = (results.clone(), a.clone());
    let outer = succeed("outer".to_string()).add_callback(move |result: String| {
        r.borrow_mut().push(format!("cb {result}"));
        let d: Deferred<()> = Deferred::new();
        let (r1, r2) = (r.clone(), r.clone());
        let returner = d
            .add_callback(move |result: ()| {
                r1.borrow_mut().push(format!("firstCallback {result:?}"));
                a1.add_callback(|s: String| Ok(vec![s]))
            })
            .add_callback(move |result: Vec<String>| {
                r2.borrow_mut().push(format!("secondCallback {result:?}"));
                Ok(())
            });
        d.callback(()).unwrap();
        returner
    });
    assert_eq!(*results.borrow(), ["cb outer", "firstCallback ()"]);
    assert!(outer.is_waiting());
    a.callback("withers".into()).unwrap();
    assert_eq!(
        *results.borrow(),
        [
            "cb outer",
            "firstCallback ()",
            "secondCallback [\"withers\"]",
        ]
    );
    assert!(!outer.is_waiting());
}

/// Links added to the outer Deferred while it waits run after the hand-off,
/// in order.
// Twisted: DeferredTests.test_callbackOrderPreserved
#[test]
fn callbacks_added_after_the_returning_one_run_after_the_inner_chain() {
    let results: Log<String> = new_log();
    let a: Deferred<String> = Deferred::new();
    let outer: Deferred<String> = Deferred::new();
    let (r, a1) = (results.clone(), a.clone());
    let waiting = outer.add_callback(move |result: String| {
        r.borrow_mut().push(format!("cb {result}"));
        let d: Deferred<()> = Deferred::new();
        let (r1, r2) = (r.clone(), r.clone());
        let returner = d
            .add_callback(move |result: ()| {
                r1.borrow_mut().push(format!("firstCallback {result:?}"));
                a1.add_callback(|s: String| Ok(vec![s]))
            })
            .add_callback(move |result: Vec<String>| {
                r2.borrow_mut().push(format!("secondCallback {result:?}"));
                Ok(())
            });
        d.callback(()).unwrap();
        returner
    });
    let r = results.clone();
    waiting.add_callback(move |()| {
        r.borrow_mut().push("final".into());
        Ok(())
    });
    outer.callback("outer".into()).unwrap();
    assert_eq!(*results.borrow(), ["cb outer", "firstCallback ()"]);
    a.callback("withers".into()).unwrap();
    assert_eq!(
        *results.borrow(),
        [
            "cb outer",
            "firstCallback ()",
            "secondCallback [\"withers\"]",
            "final",
        ]
    );
}

/// Links added to a Deferred that waits are queued behind the wait.
// Twisted: experiment E22 (I)
#[test]
fn callbacks_added_to_a_waiting_deferred_wait_for_the_hand_off() {
    let order: Log<String> = new_log();
    let a: Deferred<()> = Deferred::new();
    let b: Deferred<&str> = Deferred::new();
    let b1 = b.clone();
    let a = a.add_callback(move |()| b1);
    a.cast::<()>().callback(()).unwrap();
    a.add_callback(recorder(&order, "a-cb"));
    assert!(order.borrow().is_empty());
    b.callback("B").unwrap();
    assert_eq!(*order.borrow(), ["a-cb \"B\""]);
}

// Twisted: DeferredTests.test_errbackReturnsDeferred
#[test]
fn an_errback_returning_a_deferred_makes_the_chain_wait_for_it() {
    let results: Log<String> = new_log();
    let d: Deferred<String> = Deferred::new();
    let d2: Deferred<String> = Deferred::new();
    let r = d2.clone();
    d.add_errback(move |_f: Failure| r)
        .add_callback(recorder(&results, "sync"));
    d.errback(GenericError("v")).unwrap();
    assert!(d.is_waiting(), "no result yet");
    assert!(results.borrow().is_empty());
    d2.callback("result".into()).unwrap();
    assert_eq!(*results.borrow(), ["sync \"result\""]);
}

/// The errback's Deferred fails: the outer continues on the errback path.
// Twisted: experiment E22 (J)
#[test]
fn an_errback_returning_a_deferred_that_fails_keeps_failing() {
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<()> = Deferred::new();
        let inner: Deferred<()> = Deferred::new();
        let i = inner.clone();
        d.add_errback(move |_f: Failure| i);
        d.errback(GenericError("v")).unwrap();
        inner.errback(KeyError).unwrap();
        let f = d.result().failure().unwrap();
        assert!(f.check::<KeyError>());
        d.add_errback(|_f| Ok(()));
    });
    assert!(reports.is_empty());
}

// Twisted: DeferredTests.test_doubleAsynchronousImplicitChaining
#[test]
fn chaining_is_transitive() {
    let third_result: Log<String> = new_log();
    let first: Deferred<&str> = Deferred::new();
    let second: Deferred<()> = Deferred::new();
    let f = first.clone();
    let second_waits = second.add_callback(move |()| f);
    let third: Deferred<()> = Deferred::new();
    let s = second_waits.clone();
    third
        .add_callback(move |()| s)
        .add_callback(recorder(&third_result, "third"));
    second.callback(()).unwrap();
    third.callback(()).unwrap();
    assert!(third_result.borrow().is_empty());
    first.callback("result").unwrap();
    assert_eq!(*third_result.borrow(), ["third \"result\""]);
}

/// Callbacks added to the middle Deferred after the chain was built run
/// once the last one fires.
// Twisted: DeferredTests.test_resultOfDeferredResultOfDeferredOfFiredDeferredCalled
#[test]
fn callbacks_added_to_the_middle_of_a_chain_run_when_the_last_fires() {
    let first: Deferred<()> = Deferred::new();
    let second: Deferred<()> = Deferred::new();
    let third: Deferred<()> = Deferred::new();
    let s = second.clone();
    first.add_callback(move |()| s);
    let t = third.clone();
    second.add_callback(move |()| t);
    second.callback(()).unwrap();
    first.callback(()).unwrap();
    third.callback(()).unwrap();
    let results: Log<()> = new_log();
    let r = results.clone();
    second.add_callback(move |x: ()| {
        r.borrow_mut().push(x);
        Ok(())
    });
    assert_eq!(results.borrow().len(), 1);
}

// Twisted: DeferredTests.test_nestedAsynchronousChainedDeferreds
#[test]
fn an_inner_deferred_firing_later_resumes_the_outer_chain() {
    let results: Log<String> = new_log();
    let inner: Deferred<String> = Deferred::new();
    let (r, i) = (results.clone(), inner.clone());
    let outer = succeed("outer".to_string())
        .add_callback(move |result: String| {
            r.borrow_mut().push(format!("start-of-cb {result}"));
            let d = succeed("inner".to_string());
            let (r1, r2) = (r.clone(), r.clone());
            d.add_callback(move |_x: String| {
                r1.borrow_mut().push("firstCallback inner".into());
                i
            })
            .add_callback(move |result: String| {
                r2.borrow_mut().push(format!("secondCallback {result}"));
                Ok(result.repeat(2))
            })
        })
        .add_callback(recorder(&results, "final"));
    assert_eq!(
        *results.borrow(),
        ["start-of-cb outer", "firstCallback inner"]
    );
    inner.callback("orange".into()).unwrap();
    assert_eq!(
        *results.borrow(),
        [
            "start-of-cb outer",
            "firstCallback inner",
            "secondCallback orange",
            "final \"orangeorange\"",
        ]
    );
    assert_eq!(outer.result().value().as_deref(), Some("orangeorange"));
}

// Twisted: DeferredTests.test_nestedAsynchronousChainedDeferredsWithExtraCallbacks
#[test]
fn a_returned_deferred_with_its_own_transforming_callback_shapes_the_result() {
    let results: Log<String> = new_log();
    let inner: Deferred<String> = Deferred::new();
    let (r, i) = (results.clone(), inner.clone());
    let outer = succeed("outer".to_string());
    outer
        .add_callback(move |result: String| {
            r.borrow_mut().push(format!("start-of-cb {result}"));
            let d = succeed("inner".to_string());
            let (r1, r2) = (r.clone(), r.clone());
            d.add_callback(move |result: String| {
                r1.borrow_mut().push(format!("firstCallback {result}"));
                i.add_callback(|result: String| Ok(vec![result]))
            })
            .add_callback(move |result: Vec<String>| {
                r2.borrow_mut().push(format!("secondCallback {result:?}"));
                Ok([result.clone(), result].concat())
            })
        })
        .add_callback(recorder(&results, "final"));
    assert_eq!(
        *results.borrow(),
        ["start-of-cb outer", "firstCallback inner"]
    );
    inner.callback("withers".into()).unwrap();
    assert_eq!(
        *results.borrow(),
        [
            "start-of-cb outer",
            "firstCallback inner",
            "secondCallback [\"withers\"]",
            "final [\"withers\", \"withers\"]",
        ]
    );
}

// Twisted: DeferredTests.test_chainDeferredRecordsExplicitChain
#[test]
fn chain_deferred_marks_the_target_as_waiting_on_the_source() {
    let a: Deferred<()> = Deferred::new();
    let b: Deferred<()> = Deferred::new();
    b.chain_deferred(&a);
    assert!(a.is_waiting());
    assert!(!b.is_waiting());
    assert_eq!(
        format!("{a:?}"),
        format!(
            "<Deferred at {:#x} waiting on Deferred at {:#x}>",
            a.id(),
            b.id()
        )
    );
    assert!(!a.called());
    b.callback(()).unwrap();
}

// Twisted: DeferredTests.test_explicitChainClearedWhenResolved
#[test]
fn chain_deferred_stops_waiting_once_the_source_fires() {
    let a: Deferred<()> = Deferred::new();
    let b: Deferred<()> = Deferred::new();
    b.chain_deferred(&a);
    b.callback(()).unwrap();
    assert!(!a.is_waiting());
    assert!(a.called());
}

/// `chainDeferred` forwards the value; the source is left holding None.
// Twisted: experiment E07-9 and DeferredTests.test_chainDeferredRecordsExplicitChain (B38)
#[test]
fn chain_deferred_forwards_the_value_and_leaves_none_in_the_source() {
    let log: Log<String> = new_log();
    let src: Deferred<i32> = Deferred::new();
    let tgt: Deferred<i32> = Deferred::new();
    tgt.add_callback(recorder(&log, "target"));
    let after = src.chain_deferred(&tgt);
    after.add_callback(|r: ()| Ok(r));
    src.callback(5).unwrap();
    assert_eq!(*log.borrow(), ["target 5"]);
    assert_eq!(tgt.result().value(), Some(5));
    assert!(matches!(after.result(), State::Value(())));
}

/// A failure is forwarded as the same Failure; only the target may report
/// it, the source holds None.
// Twisted: experiment E07-9 (failure path of chainDeferred)
#[test]
fn chain_deferred_forwards_a_failure_and_only_the_target_reports_it() {
    let original = Failure::new(GenericError("z"));
    let (tgt_failure, reports) = capture_unhandled_errors(|| {
        let src: Deferred<i32> = Deferred::new();
        let tgt: Deferred<i32> = Deferred::new();
        src.chain_deferred(&tgt);
        src.errback(original.clone()).unwrap();
        assert!(matches!(src.cast::<()>().result(), State::Value(())));
        drop(src);
        tgt.result().failure()
    });
    assert!(Failure::ptr_eq(&tgt_failure.unwrap(), &original));
    assert_eq!(reports.len(), 1, "reported once, by the target");
    assert!(Failure::ptr_eq(&reports[0], &original));
}

/// An outer that is also user-paused keeps reporting "waiting on" after the
/// inner handed its result over; the record is cleared when it next runs.
// Twisted: experiment E25-1
#[test]
fn a_user_paused_outer_keeps_reporting_waiting_after_the_hand_off() {
    let a: Deferred<()> = Deferred::new();
    let b: Deferred<&str> = Deferred::new();
    let b1 = b.clone();
    let a = a.add_callback(move |()| b1);
    a.cast::<()>().callback(()).unwrap();
    a.pause();
    b.callback("b").unwrap();
    assert_eq!(
        format!("{a:?}"),
        format!(
            "<Deferred at {:#x} waiting on Deferred at {:#x}>",
            a.id(),
            b.id()
        )
    );
    assert!(a.is_waiting());
    assert_eq!(a.result().value(), Some("b"));
    a.unpause();
    assert!(!a.is_waiting());
    assert_eq!(
        format!("{a:?}"),
        format!("<Deferred at {:#x} current result: \"b\">", a.id())
    );
}

/// The hand-off reaches a still-paused outer: the whole run stops there, the
/// inner's trailing links do not run, and unpausing the outer does not
/// resume them; touching the inner does.
// Twisted: pitfall P-05 and experiment E05
#[test]
fn a_user_paused_outer_stops_the_whole_propagation() {
    let log: Log<String> = new_log();
    let outer: Deferred<()> = Deferred::new();
    let inner: Deferred<&str> = Deferred::new();
    let i = inner.clone();
    outer.add_callback(move |()| i);
    outer.callback(()).unwrap();
    outer.pause();
    assert_eq!(outer.paused(), 2);
    let l = log.clone();
    inner.cast::<()>().add_callback(move |r: ()| {
        l.borrow_mut().push(format!("inner-late {r:?}"));
        Ok(())
    });
    inner.callback("i").unwrap();
    assert!(log.borrow().is_empty(), "after inner.callback");
    assert_eq!(outer.paused(), 1);
    outer.unpause();
    assert!(log.borrow().is_empty(), "after outer.unpause");
    assert_eq!(outer.cast::<&str>().result().value(), Some("i"));
    inner.cast::<()>().add_callback(|r: ()| Ok(r));
    assert_eq!(*log.borrow(), ["inner-late ()"], "after touching inner");
}

// Twisted: DeferredTests.test_pausedDeferredChained and experiment E04 (e)
#[test]
fn a_paused_outer_does_not_stop_the_inner_from_running_new_callbacks() {
    let first: Deferred<()> = Deferred::new();
    let second: Deferred<()> = Deferred::new();
    let s = second.clone();
    first.add_callback(move |()| s);
    first.callback(()).unwrap();
    first.pause();
    second.callback(()).unwrap();
    let result: Log<()> = new_log();
    let r = result.clone();
    second.add_callback(move |x: ()| {
        r.borrow_mut().push(x);
        Ok(())
    });
    assert_eq!(result.borrow().len(), 1);
    assert_eq!(first.paused(), 1);
}

/// A callback returning the Deferred it is attached to: the Deferred waits
/// on itself forever, paused once, and nothing further runs. (Twisted also
/// emits a DeprecationWarning; the port logs a warning through `log`.)
// Twisted: DeferredTests.test_circularChainWarning and pitfall P-21
#[test]
fn a_callback_returning_its_own_deferred_waits_on_itself_forever() {
    let d: Deferred<&str> = Deferred::new();
    let me = d.clone();
    d.add_callback(move |_r: &str| me);
    d.callback("x").unwrap();
    assert_eq!(d.paused(), 1);
    assert!(d.is_waiting());
    assert_eq!(
        format!("{d:?}"),
        format!(
            "<Deferred at {:#x} waiting on Deferred at {:#x}>",
            d.id(),
            d.id()
        )
    );
    let later: Log<String> = new_log();
    d.add_callback(recorder(&later, "later"));
    assert!(later.borrow().is_empty(), "further callbacks never run");
}

/// A paused Deferred with a result is waited on, not taken over.
// Twisted: DeferredTests.test_chainedPausedDeferredWithResult and experiment E04 (d)
#[test]
fn a_paused_deferred_with_a_result_is_waited_on_not_taken_over() {
    let expected = Rc::new("expected");
    let paused: Deferred<Rc<&str>> = Deferred::new();
    paused.callback(expected.clone()).unwrap();
    paused.pause();
    let chained: Deferred<()> = Deferred::new();
    let p = paused.clone();
    let chained = chained.add_callback(move |()| p);
    chained.cast::<()>().callback(()).unwrap();
    assert!(chained.is_waiting());
    let result: Log<Rc<&str>> = new_log();
    let r = result.clone();
    chained.add_callback(move |x: Rc<&str>| {
        r.borrow_mut().push(x);
        Ok(())
    });
    assert!(result.borrow().is_empty());
    paused.unpause();
    assert_eq!(result.borrow().len(), 1);
    assert!(Rc::ptr_eq(&result.borrow()[0], &expected));
}

/// A failure returned this way is handed to the outer; after the hand-off
/// the outer reports it (once) if nobody handles it, the inner never does.
// Twisted: LogTests.test_chainedErrorCleanup (asynchronous hand-off)
#[test]
fn a_handed_over_failure_is_reported_once_by_the_outer_only() {
    let original = Failure::new(GenericError("h"));
    let ((), reports) = capture_unhandled_errors(|| {
        let inner: Deferred<()> = Deferred::new();
        let outer: Deferred<()> = Deferred::new();
        let i = inner.clone();
        outer.add_callback(move |()| i);
        outer.callback(()).unwrap();
        inner.errback(original.clone()).unwrap();
        drop(inner);
        drop(outer);
    });
    assert_eq!(reports.len(), 1);
    assert!(Failure::ptr_eq(&reports[0], &original));
}

/// An already-failed Deferred returned from a callback: the outer gets the
/// failure at once and the inner keeps None.
// Twisted: experiment E04 (c)
#[test]
fn a_failed_deferred_returned_from_a_callback_moves_its_failure_to_the_outer() {
    let ((), reports) = capture_unhandled_errors(|| {
        let inner = fail::<()>(GenericError("bad"));
        let outer: Deferred<()> = Deferred::new();
        let i = inner.clone();
        outer.add_callback(move |()| i);
        outer.callback(()).unwrap();
        assert!(outer.result().failure().unwrap().check::<GenericError>());
        assert!(matches!(inner.result(), State::Value(())));
        outer.add_errback(|_f| Ok(()));
    });
    assert!(reports.is_empty());
}
