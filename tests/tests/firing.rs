//! Firing and the callback chain: a new Deferred's state, `callback` /
//! `errback`, the four add-methods, the order links run in, and what a
//! Deferred holds afterwards.
//!
//! Twisted behaviours covered: B1, B2, B3 (the forms that exist in Rust), B5,
//! B6, B7, B8, B9, B10, B11, B13 (catalogue section 2.1), with pitfall P-06
//! and experiments E01, E02, E22-A.

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::{Deferred, Failure, State, capture_unhandled_errors, succeed};

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

// Twisted: experiment E22 (A) and DeferredTests.test_repr
#[test]
fn a_new_deferred_is_unfired_unpaused_and_holds_nothing() {
    let d: Deferred<i32> = Deferred::new();
    assert!(!d.called());
    assert_eq!(d.paused(), 0);
    assert!(d.result().is_pending());
    assert!(!d.is_waiting());
    assert_eq!(format!("{d:?}"), format!("<Deferred at {:#x}>", d.id()));
}

// Twisted: DeferredTests.testCallbackWithoutArgs
#[test]
fn callback_stores_the_value_and_runs_the_chain_before_returning() {
    let log: Log<String> = new_log();
    let d: Deferred<String> = Deferred::new();
    let (l1, l2) = (log.clone(), log.clone());
    d.add_callbacks(
        move |s: String| {
            l1.borrow_mut().push(format!("callback {s}"));
            Ok(s)
        },
        move |f: Failure| {
            l2.borrow_mut().push(format!("errback {}", f.message()));
            Err(f)
        },
    );
    log.borrow_mut().push("firing".into());
    d.callback("hello".into()).unwrap();
    log.borrow_mut().push("callback() returned".into());
    assert_eq!(
        *log.borrow(),
        ["firing", "callback hello", "callback() returned"]
    );
    assert!(d.called());
    assert_eq!(d.result().value().as_deref(), Some("hello"));
}

// Twisted: AlreadyCalledTests.testAlreadyCalled_EE (first errback half only)
#[test]
fn errback_runs_only_the_errback_half_of_the_first_link() {
    let log: Log<String> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let (l1, l2) = (log.clone(), log.clone());
    d.add_callbacks(
        move |x: i32| {
            l1.borrow_mut().push(format!("callback {x}"));
            Ok(x)
        },
        move |f: Failure| {
            l2.borrow_mut().push(format!("errback {}", f.message()));
            Ok(-1)
        },
    );
    d.errback(GenericError("oops")).unwrap();
    assert_eq!(*log.borrow(), ["errback oops"]);
    assert!(d.called());
    assert_eq!(d.result().value(), Some(-1));
}

/// The canceller captures a token and the Deferred itself (a reference
/// cycle, as in Twisted's test); firing drops the canceller, so the token is
/// freed at once and the Deferred is freed with its last handle.
// Twisted: DeferredTests.test_canceller_circular_reference_callback
#[test]
fn firing_drops_the_canceller_and_the_cycle_through_it() {
    let token = Rc::new(());
    let token_alive = Rc::downgrade(&token);
    let slot: Rc<RefCell<Option<Deferred<Rc<()>>>>> = Rc::new(RefCell::new(None));
    let in_canceller = slot.clone();
    let d = Deferred::with_canceller(move |_d: &Deferred<Rc<()>>| {
        let _keep = (&token, &in_canceller);
    });
    *slot.borrow_mut() = Some(d.clone());

    let value = Rc::new(());
    let value_alive = Rc::downgrade(&value);
    d.callback(value).unwrap();
    assert!(token_alive.upgrade().is_none(), "the canceller was dropped");

    drop(d);
    drop(slot);
    assert!(
        value_alive.upgrade().is_none(),
        "the Deferred (and the result it held) was freed"
    );
}

// Twisted: DeferredTests.test_canceller_circular_reference_errback
#[test]
fn failing_drops_the_canceller_and_the_cycle_through_it() {
    let token = Rc::new(());
    let token_alive = Rc::downgrade(&token);
    let ((), reports) = capture_unhandled_errors(|| {
        let slot: Rc<RefCell<Option<Deferred<i32>>>> = Rc::new(RefCell::new(None));
        let in_canceller = slot.clone();
        let d = Deferred::with_canceller(move |_d: &Deferred<i32>| {
            let _keep = (&token, &in_canceller);
        });
        *slot.borrow_mut() = Some(d.clone());
        d.errback(GenericError("The test demands failures."))
            .unwrap();
        assert!(token_alive.upgrade().is_none(), "the canceller was dropped");
        drop(d);
        drop(slot);
    });
    // The Deferred was freed: its unhandled failure was reported.
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].message(), "The test demands failures.");
}

// Twisted: DeferredTests.test_canceller_circular_reference_non_final
#[test]
fn firing_drops_the_canceller_even_when_the_chain_then_waits() {
    let token = Rc::new(());
    let token_alive = Rc::downgrade(&token);
    let d = Deferred::with_canceller(move |_d: &Deferred<i32>| {
        let _keep = &token;
    });
    let inner: Deferred<i32> = Deferred::new();
    let returned = inner.clone();
    d.add_callback(move |_x: i32| returned);
    d.callback(0).unwrap();
    assert!(d.is_waiting());
    assert!(token_alive.upgrade().is_none(), "the canceller was dropped");
    inner.callback(1).unwrap();
    assert_eq!(d.result().value(), Some(1));
}

/// `errback(exception)` wraps the error in a new Failure.
// Twisted: experiment E02 ("errback(exception) wraps")
#[test]
fn errback_wraps_an_error_in_a_failure() {
    let d: Deferred<i32> = Deferred::new();
    let seen: Log<Failure> = new_log();
    let s = seen.clone();
    d.add_errback(move |f: Failure| {
        s.borrow_mut().push(f);
        Ok(0)
    });
    d.errback(GenericError("boom")).unwrap();
    let f = seen.borrow()[0].clone();
    assert!(f.check::<GenericError>());
    assert_eq!(
        f.downcast_ref::<GenericError>(),
        Some(&GenericError("boom"))
    );
    assert_eq!(f.message(), "boom");
    assert_eq!(f.short_type_name(), "GenericError");
}

/// `errback(aFailure)` uses that very Failure.
// Twisted: experiment E19 ("first errback got the original Failure: True")
#[test]
fn errback_with_a_failure_hands_that_same_failure_to_the_errback() {
    let original = Failure::new(GenericError("v"));
    let d: Deferred<i32> = Deferred::new();
    let seen: Log<Failure> = new_log();
    let s = seen.clone();
    d.add_errback(move |f: Failure| {
        s.borrow_mut().push(f);
        Ok(0)
    });
    d.errback(original.clone()).unwrap();
    assert!(Failure::ptr_eq(&seen.borrow()[0], &original));
}

/// `callback(aDeferred)` does not chain: the Deferred is an ordinary value,
/// handed to the first callback.
// Twisted: pitfall P-06 and experiment E01
#[test]
fn a_deferred_given_to_callback_is_a_plain_value_not_a_chain() {
    let a: Deferred<Deferred<i32>> = Deferred::new();
    let b: Deferred<i32> = Deferred::new();
    let seen: Log<bool> = new_log();
    let (s, b2) = (seen.clone(), b.clone());
    a.add_callback(move |r: Deferred<i32>| {
        s.borrow_mut().push(r.ptr_eq(&b2));
        Ok(())
    });
    a.callback(b.clone()).unwrap();
    assert_eq!(*seen.borrow(), [true], "the callback received b itself");
    assert!(!a.is_waiting());
    assert_eq!(a.paused(), 0);
    b.callback(5).unwrap();
    assert!(matches!(a.cast::<()>().result(), State::Value(())));
    assert_eq!(b.result().value(), Some(5), "nothing took b's result");
}

/// With no callbacks, a Deferred fired with another Deferred simply holds
/// it, even after that one fires; a callback added later receives it.
// Twisted: experiment E01
#[test]
fn a_deferred_fired_with_a_deferred_keeps_holding_it() {
    let a: Deferred<Deferred<i32>> = Deferred::new();
    let b: Deferred<i32> = Deferred::new();
    a.callback(b.clone()).unwrap();
    assert!(matches!(a.result(), State::Value(ref held) if held.ptr_eq(&b)));
    b.callback(7).unwrap();
    assert!(matches!(a.result(), State::Value(ref held) if held.ptr_eq(&b)));
    let got: Log<i32> = new_log();
    let g = got.clone();
    a.add_callback(move |held: Deferred<i32>| {
        g.borrow_mut().push(held.result().value().unwrap());
        Ok(())
    });
    assert_eq!(*got.borrow(), [7]);
}

/// A first callback that returns the Deferred it was handed does chain.
// Twisted: experiment E01 ("c waiting on d: True 1")
#[test]
fn returning_the_deferred_a_callback_was_handed_chains_to_it() {
    let c: Deferred<Deferred<i32>> = Deferred::new();
    let d: Deferred<i32> = Deferred::new();
    let c = c.add_callback(|r: Deferred<i32>| r);
    c.cast::<Deferred<i32>>().callback(d.clone()).unwrap();
    assert!(c.is_waiting());
    assert_eq!(c.paused(), 1);
    assert!(matches!(c.result(), State::Waiting(ref w) if w.ptr_eq(&d)));
    d.callback(9).unwrap();
    assert_eq!(c.result().value(), Some(9));
    assert_eq!(c.paused(), 0);
}

/// `addCallbacks(cb, eb)`: one link; the half matching the result runs.
// Twisted: DeferredTests.test_addCallbacksNoneCallbackArgs
#[test]
fn add_callbacks_runs_the_callback_half_on_a_value() {
    let log: Log<String> = new_log();
    let d: Deferred<&str> = Deferred::new();
    let (l1, l2) = (log.clone(), log.clone());
    let d2 = d.add_callbacks(
        move |s: &str| {
            l1.borrow_mut().push(format!("cb {s}"));
            Ok(s.len())
        },
        move |f: Failure| {
            l2.borrow_mut().push(format!("eb {}", f.message()));
            Ok(0)
        },
    );
    d.callback("hello").unwrap();
    assert_eq!(*log.borrow(), ["cb hello"]);
    assert_eq!(d2.result().value(), Some(5));
}

// Twisted: DeferredTests.test_addCallbacksNoneErrbackArgs
#[test]
fn add_callbacks_runs_the_errback_half_on_a_failure() {
    let log: Log<String> = new_log();
    let d: Deferred<&str> = Deferred::new();
    let (l1, l2) = (log.clone(), log.clone());
    let d2 = d.add_callbacks(
        move |s: &str| {
            l1.borrow_mut().push(format!("cb {s}"));
            Ok(s.len())
        },
        move |f: Failure| {
            l2.borrow_mut().push(format!("eb {}", f.message()));
            Ok(0)
        },
    );
    d.errback(GenericError("oopsie")).unwrap();
    assert_eq!(*log.borrow(), ["eb oopsie"]);
    assert_eq!(d2.result().value(), Some(0));
}

/// `addCallback` installs a failure pass-through: a failure skips the
/// callback and reaches the next errback as the very same Failure.
// Twisted: DeferredTests.test_addCallbacksNoneErrback
#[test]
fn add_callback_passes_a_failure_through_untouched() {
    let error = Failure::new(GenericError("oopsie"));
    let called: Log<i32> = new_log();
    let errors: Log<Failure> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let (c, e) = (called.clone(), errors.clone());
    d.add_callback(move |x: i32| {
        c.borrow_mut().push(x);
        Ok(x)
    });
    d.errback(error.clone()).unwrap();
    d.add_errback(move |f: Failure| {
        e.borrow_mut().push(f);
        Ok(0)
    });
    assert!(called.borrow().is_empty());
    assert_eq!(errors.borrow().len(), 1);
    assert!(Failure::ptr_eq(&errors.borrow()[0], &error));
}

/// Each callback receives the previous link's return value.
// Twisted: DeferredTests.testTwoCallbacks
#[test]
fn each_callback_receives_what_the_previous_one_returned() {
    let log: Log<String> = new_log();
    let d: Deferred<&str> = Deferred::new();
    let (l1, l2) = (log.clone(), log.clone());
    let last = d
        .add_callback(move |s: &str| {
            l1.borrow_mut().push(format!("first {s}"));
            Ok(s.to_uppercase())
        })
        .add_callback(move |s: String| {
            l2.borrow_mut().push(format!("second {s}"));
            Ok(s.len())
        });
    d.callback("hello").unwrap();
    assert_eq!(*log.borrow(), ["first hello", "second HELLO"]);
    assert_eq!(last.result().value(), Some(5));
}

/// Extra positional / keyword arguments are Python's; a Rust closure
/// captures them instead, and receives the result first.
// Twisted: DeferredTests.testCallbackWithArgs and testCallbackWithKwArgs
#[test]
fn a_callback_receives_the_result_along_with_what_it_captured() {
    let seen: Log<(String, &str)> = new_log();
    let d: Deferred<String> = Deferred::new();
    let s = seen.clone();
    let world = "world";
    d.add_callback(move |r: String| {
        s.borrow_mut().push((r.clone(), world));
        Ok(r)
    });
    d.callback("hello".into()).unwrap();
    assert_eq!(*seen.borrow(), [("hello".to_string(), "world")]);
}

/// `addBoth` runs the same function on a value and on a failure.
// Twisted: experiment E02 ("both")
#[test]
fn add_both_runs_the_same_function_on_either_outcome() {
    let log: Log<String> = new_log();
    let describe = |log: Log<String>| {
        move |r: Result<i32, Failure>| {
            log.borrow_mut().push(match &r {
                Ok(v) => format!("value {v}"),
                Err(f) => format!("failure {}", f.message()),
            });
            Ok(r.is_ok())
        }
    };
    let ok: Deferred<i32> = Deferred::new();
    let ok2 = ok.add_both(describe(log.clone()));
    let bad: Deferred<i32> = Deferred::new();
    let bad2 = bad.add_both(describe(log.clone()));
    ok.callback(3).unwrap();
    bad.errback(GenericError("no")).unwrap();
    assert_eq!(*log.borrow(), ["value 3", "failure no"]);
    assert_eq!(ok2.result().value(), Some(true));
    assert_eq!(bad2.result().value(), Some(false), "add_both recovered");
}

/// Every add-method returns (a handle to) the Deferred itself.
// Twisted: experiment E14-1 and DeferredAddTimeoutTests.test_timeoutChainable
#[test]
fn every_add_method_returns_the_same_deferred() {
    let d: Deferred<i32> = Deferred::new();
    let other: Deferred<i32> = Deferred::new();
    assert!(d.add_callback(|x: i32| Ok(x)).ptr_eq(&d));
    assert!(d.add_errback(|f: Failure| Err(f)).ptr_eq(&d));
    assert!(d.add_both(|r: Result<i32, Failure>| r).ptr_eq(&d));
    assert!(
        d.add_callbacks(|x: i32| Ok(x), |f: Failure| Err(f))
            .ptr_eq(&d)
    );
    assert!(d.chain_deferred(&other).ptr_eq(&d));
    d.callback(4).unwrap();
    assert_eq!(other.result().value(), Some(4));
}

/// On a fired Deferred an add-method runs the new link before returning.
// Twisted: DeferredTests.testImmediateSuccess and experiment E02
#[test]
fn a_callback_added_after_firing_runs_before_the_add_returns() {
    let order: Log<&str> = new_log();
    let d = succeed("now");
    let o = order.clone();
    d.add_callback(move |_r: &str| {
        o.borrow_mut().push("inside callback");
        Ok(())
    });
    order.borrow_mut().push("after add_callback returned");
    assert_eq!(
        *order.borrow(),
        ["inside callback", "after add_callback returned"]
    );
}

/// Links run once each, in insertion order; later additions run alone.
// Twisted: DeferredTests.testTwoCallbacks (B11: links are consumed)
#[test]
fn links_run_exactly_once_in_insertion_order() {
    let log: Log<&str> = new_log();
    let d: Deferred<()> = Deferred::new();
    for name in ["one", "two", "three"] {
        let l = log.clone();
        d.add_callback(move |()| {
            l.borrow_mut().push(name);
            Ok(())
        });
    }
    d.callback(()).unwrap();
    assert_eq!(*log.borrow(), ["one", "two", "three"]);
    let l = log.clone();
    d.add_callback(move |()| {
        l.borrow_mut().push("four");
        Ok(())
    });
    assert_eq!(*log.borrow(), ["one", "two", "three", "four"]);
}

/// `called` stays true whatever happens next, and the result is what the
/// last link produced.
// Twisted: DeferredTests.test_succeedMatchesManualSuccess (B13)
#[test]
fn called_never_reverts_and_the_result_is_the_last_links_output() {
    let d: Deferred<i32> = Deferred::new();
    d.errback(GenericError("first")).unwrap();
    assert!(d.called());
    d.add_errback(|_f: Failure| Ok(10));
    assert!(d.called());
    let d = d.add_callback(|x: i32| Ok(x * 2));
    assert!(d.called());
    assert_eq!(d.result().value(), Some(20));
    // There is no way to re-arm it.
    assert!(d.callback(1).is_err());
    assert_eq!(d.result().value(), Some(20));
}

/// A fired Deferred without links holds the value it was fired with.
// Twisted: DeferredTests.test_succeedMatchesManualSuccess
#[test]
fn a_deferred_without_links_holds_the_value_it_was_fired_with() {
    let d: Deferred<&str> = Deferred::new();
    d.callback("success").unwrap();
    assert!(d.called());
    assert!(matches!(d.result(), State::Value("success")));
}

/// A callback's output may be of another type: the chain's result changes
/// type as it goes, as in Python.
// Twisted: experiment E02 (results change as links run)
#[test]
fn a_callback_may_change_the_type_of_the_result() {
    let d: Deferred<i32> = Deferred::new();
    let e = d
        .add_callback(|x: i32| Ok(x.to_string()))
        .add_callback(|s: String| Ok(s.len()));
    d.callback(1234).unwrap();
    assert_eq!(e.result().value(), Some(4));
    assert!(matches!(d.result(), State::OtherType(_)));
}
