//! Re-entrancy: callbacks that add links to, fire, cancel, pause or unpause
//! the Deferred they run on (or others) while its chain is running.
//!
//! Twisted behaviours covered: B21, B22, B23, B24, B25, B26, B27 (catalogue
//! section 2.3), the re-entrant case of B29, pitfalls P-01, P-02 and P-09,
//! experiments E03, E28 and E29.

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::{AlreadyCalledError, AnyValue, Deferred, Failure, State};

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

// Twisted: DeferredTests.test_reentrantRunCallbacks
#[test]
fn a_callback_added_during_the_run_goes_to_the_end_of_the_queue() {
    let called: Log<i32> = new_log();
    let d: Deferred<()> = Deferred::new();
    let (c1, c2, d1) = (called.clone(), called.clone(), d.clone());
    d.add_callback(move |()| {
        c1.borrow_mut().push(1);
        let c3 = c1.clone();
        d1.add_callback(move |()| {
            c3.borrow_mut().push(3);
            Ok(())
        });
        Ok(())
    });
    d.add_callback(move |()| {
        c2.borrow_mut().push(2);
        Ok(())
    });
    d.callback(()).unwrap();
    assert_eq!(*called.borrow(), [1, 2, 3]);
}

// Twisted: DeferredTests.test_nonReentrantCallbacks
#[test]
fn a_callback_added_during_the_run_does_not_run_inside_the_adding_call() {
    let called: Log<i32> = new_log();
    let inside: Log<Vec<i32>> = new_log();
    let d: Deferred<()> = Deferred::new();
    let (c1, i1, d1) = (called.clone(), inside.clone(), d.clone());
    d.add_callback(move |()| {
        c1.borrow_mut().push(1);
        let c2 = c1.clone();
        d1.add_callback(move |()| {
            c2.borrow_mut().push(2);
            Ok(())
        });
        i1.borrow_mut().push(c1.borrow().clone());
        Ok(())
    });
    d.callback(()).unwrap();
    assert_eq!(*inside.borrow(), [vec![1]]);
    assert_eq!(*called.borrow(), [1, 2]);
}

// Twisted: pitfall P-01
#[test]
fn links_added_by_a_running_callback_run_after_those_already_queued() {
    let log: Log<&str> = new_log();
    let d: Deferred<()> = Deferred::new();
    let (l1, l2, d1) = (log.clone(), log.clone(), d.clone());
    d.add_callback(move |()| {
        let l = l1.clone();
        d1.add_callback(move |()| {
            l.borrow_mut().push("added during first");
            Ok(())
        });
        l1.borrow_mut().push("first returns");
        Ok(())
    });
    d.add_callback(move |()| {
        l2.borrow_mut().push("second");
        Ok(())
    });
    d.callback(()).unwrap();
    assert_eq!(
        *log.borrow(),
        ["first returns", "second", "added during first"]
    );
}

// Twisted: DeferredTests.test_reentrantRunCallbacksWithFailure
#[test]
fn a_reentrantly_added_callback_that_fails_gives_the_deferred_that_failure() {
    let d: Deferred<()> = Deferred::new();
    let d1 = d.clone();
    d.add_callback(move |()| {
        d1.add_callback(|()| -> Result<(), Failure> {
            Err(GenericError("callback raised exception").into())
        });
        Ok(())
    });
    d.callback(()).unwrap();
    let f = d.result().failure().expect("the Deferred failed");
    assert_eq!(
        f.downcast_ref::<GenericError>(),
        Some(&GenericError("callback raised exception"))
    );
    d.add_errback(|_f| Ok(()));
}

/// `unpause()` bringing the count back to 0 inside a running callback does
/// not start a nested run: the running loop picks the new links up, in
/// order, after the current callback returns.
// Twisted: DeferredTests.test_nonReentrantCallbacks (the guard also covers unpause; checked in Python)
#[test]
fn unpause_inside_a_running_callback_does_not_start_a_nested_run() {
    let log: Log<&str> = new_log();
    let d: Deferred<()> = Deferred::new();
    let (l1, l2, d1) = (log.clone(), log.clone(), d.clone());
    d.add_callback(move |()| {
        d1.pause();
        let l = l1.clone();
        d1.add_callback(move |()| {
            l.borrow_mut().push("added");
            Ok(())
        });
        d1.unpause();
        l1.borrow_mut().push("cb1 end");
        Ok(())
    });
    d.add_callback(move |()| {
        l2.borrow_mut().push("cb2");
        Ok(())
    });
    d.callback(()).unwrap();
    assert_eq!(*log.borrow(), ["cb1 end", "cb2", "added"]);
    assert_eq!(d.paused(), 0);
}

/// The guard is per Deferred: a callback that fires another Deferred runs
/// that one's chain on the spot, nested inside itself.
// Twisted: experiment E03 (e)
#[test]
fn firing_another_deferred_from_a_callback_runs_its_chain_at_once() {
    let log: Log<&str> = new_log();
    let a: Deferred<()> = Deferred::new();
    let b: Deferred<()> = Deferred::new();
    let (l1, l2, b1) = (log.clone(), log.clone(), b.clone());
    b.add_callback(move |()| {
        l1.borrow_mut().push("b callback");
        Ok(())
    });
    a.add_callback(move |()| {
        l2.borrow_mut().push("a callback starts");
        b1.callback(()).unwrap();
        l2.borrow_mut().push("a callback ends");
        Ok(())
    });
    a.callback(()).unwrap();
    assert_eq!(
        *log.borrow(),
        ["a callback starts", "b callback", "a callback ends"]
    );
}

/// A waits on B. When B fires, the walk runs A's callback; that callback
/// adds a link to B, and B (not marked running) runs its remaining links
/// right there, inside A's callback, with result None.
// Twisted: experiment E29
#[test]
fn a_callback_of_the_outer_adding_to_the_inner_runs_the_inner_nested() {
    let log: Log<String> = new_log();
    let a: Deferred<()> = Deferred::new();
    let b: Deferred<&str> = Deferred::new();
    let b1 = b.clone();
    let a = a.add_callback(move |()| b1);
    a.cast::<()>().callback(()).unwrap();
    let l = log.clone();
    b.cast::<()>().add_callback(move |r: ()| {
        l.borrow_mut().push(format!("B trailing {r:?}"));
        Ok(())
    });
    let (l, b2) = (log.clone(), b.clone());
    a.add_callback(move |r: &str| {
        l.borrow_mut().push(format!("A callback start {r}"));
        let l2 = l.clone();
        b2.cast::<()>().add_callback(move |x: ()| {
            l2.borrow_mut()
                .push(format!("B added from A's callback {x:?}"));
            Ok(())
        });
        l.borrow_mut().push("A callback end".into());
        Ok(())
    });
    b.callback("b").unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "A callback start b",
            "B trailing ()",
            "B added from A's callback ()",
            "A callback end",
        ]
    );
}

/// Firing a Deferred from one of its own callbacks raises
/// `AlreadyCalledError` inside that callback; uncaught, it becomes the
/// result.
// Twisted: experiment E03 (b)
#[test]
fn firing_a_deferred_from_its_own_callback_fails_with_already_called() {
    let d: Deferred<&str> = Deferred::new();
    let d1 = d.clone();
    let refired: Log<bool> = new_log();
    let r = refired.clone();
    let out = d.add_callback(move |_r: &str| -> Result<(), Failure> {
        let attempt = d1.callback("again");
        r.borrow_mut().push(attempt.is_err());
        attempt?;
        Ok(())
    });
    d.callback("first").unwrap();
    assert_eq!(*refired.borrow(), [true]);
    let f = out
        .result()
        .failure()
        .expect("the refire's error is the result");
    assert!(f.check::<AlreadyCalledError>());
    out.add_errback(|_f| Ok(()));
}

/// Cancelling a Deferred from one of its own callbacks does nothing: it has
/// fired and its result is not a Deferred; the canceller is not called.
// Twisted: pitfall P-09 and experiment E03 (c)
#[test]
fn cancelling_a_deferred_from_its_own_callback_does_nothing() {
    let calls: Log<&str> = new_log();
    let c = calls.clone();
    let d = Deferred::with_canceller(move |_d: &Deferred<String>| {
        c.borrow_mut().push("canceller ran");
    });
    let d1 = d.clone();
    let out: Log<String> = new_log();
    let o = out.clone();
    d.add_callback(move |r: String| {
        d1.cancel().unwrap();
        Ok(r + "!")
    })
    .add_callback(move |r: String| {
        o.borrow_mut().push(r.clone());
        Ok(r)
    });
    d.callback("value".into()).unwrap();
    assert_eq!(*out.borrow(), ["value!"]);
    assert!(calls.borrow().is_empty());
    assert_eq!(d.result().value().as_deref(), Some("value!"));
}

/// `pause()` inside a callback does not stop the rest of the current run;
/// links added afterwards wait for `unpause()`.
// Twisted: pitfall P-02 and experiment E03 (d)
#[test]
fn pause_inside_a_callback_does_not_stop_the_current_run() {
    let log: Log<&str> = new_log();
    let d: Deferred<()> = Deferred::new();
    let d1 = d.clone();
    d.add_callback(move |()| {
        d1.pause();
        Ok(())
    });
    let l = log.clone();
    d.add_callback(move |()| {
        l.borrow_mut().push("still runs in this pass");
        Ok(())
    });
    d.callback(()).unwrap();
    let l = log.clone();
    d.add_callback(move |()| {
        l.borrow_mut().push("added later");
        Ok(())
    });
    assert_eq!(*log.borrow(), ["still runs in this pass"]);
    assert_eq!(d.paused(), 1);
    d.unpause();
    assert_eq!(*log.borrow(), ["still runs in this pass", "added later"]);
    assert_eq!(d.paused(), 0);
}

/// A's callback fires B; B's callback adds a link to A. The new A link runs
/// after A's current callback returns, in A's ongoing run, on its result.
// Twisted: experiment E03 (e)
#[test]
fn a_link_added_to_a_running_deferred_from_a_nested_one_runs_after_the_current_callback() {
    let out: Log<String> = new_log();
    let a: Deferred<&str> = Deferred::new();
    let b: Deferred<()> = Deferred::new();
    let (o1, a1) = (out.clone(), a.clone());
    b.add_callback(move |()| {
        let o = o1.clone();
        a1.add_callback(move |x: &str| {
            o.borrow_mut().push(format!("a-late {x}"));
            Ok(x)
        });
        Ok(())
    });
    let (o2, b1) = (out.clone(), b.clone());
    a.add_callback(move |r: &str| {
        b1.callback(()).unwrap();
        o2.borrow_mut().push(format!("a-cb1 {r}"));
        Ok("a1")
    });
    a.callback("start").unwrap();
    assert_eq!(*out.borrow(), ["a-cb1 start", "a-late a1"]);
}

/// X's running callback fires `outer`, whose callback returns X: X has a
/// result and is not paused, so outer takes the value X's running callback
/// was given, X keeps None, and X then continues with what its callback
/// returns. Shown in the dynamically typed mode, which shares values as
/// Python does (typed values: see `typed_handles.rs`).
// Twisted: experiment E28
#[test]
fn a_reentrant_outer_takes_the_value_a_running_callback_of_x_received() {
    let log: Log<String> = new_log();
    let x: Deferred = Deferred::new();
    let outer: Deferred = Deferred::new();
    let x1 = x.clone();
    outer.add_callback(move |_r: AnyValue| x1);
    let l = log.clone();
    outer.add_callback(move |r: AnyValue| {
        l.borrow_mut().push(format!("outer got {r:?}"));
        Ok(AnyValue::none())
    });
    let (l, x2, o) = (log.clone(), x.clone(), outer.clone());
    x.add_callback(move |_r: AnyValue| {
        o.callback(AnyValue::none()).unwrap();
        let seen = match x2.result() {
            State::Value(v) => format!("{v:?}"),
            other => format!("{other:?}"),
        };
        l.borrow_mut()
            .push(format!("X.result inside its callback {seen}"));
        Ok(AnyValue::new("x-returned"))
    });
    let l = log.clone();
    x.add_callback(move |r: AnyValue| {
        l.borrow_mut().push(format!("X next callback {r:?}"));
        Ok(r)
    });
    x.callback(AnyValue::new("x-input")).unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "outer got \"x-input\"",
            "X.result inside its callback ()",
            "X next callback \"x-returned\"",
        ]
    );
    assert!(!outer.is_waiting());
}

/// An errback that adds a link to its own Deferred: appended, run after it.
// Twisted: DeferredTests.test_reentrantRunCallbacks (errback variant)
#[test]
fn an_errback_adding_a_link_to_its_deferred_appends_it() {
    let log: Log<String> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let (l1, l2, d1) = (log.clone(), log.clone(), d.clone());
    d.add_errback(move |f: Failure| {
        let l = l1.clone();
        d1.add_callback(move |x: i32| {
            l.borrow_mut().push(format!("appended {x}"));
            Ok(x)
        });
        l1.borrow_mut().push(format!("eb {}", f.message()));
        Ok(1)
    });
    d.add_callback(move |x: i32| {
        l2.borrow_mut().push(format!("queued {x}"));
        Ok(x + 1)
    });
    d.errback(GenericError("e")).unwrap();
    assert_eq!(*log.borrow(), ["eb e", "queued 1", "appended 2"]);
}
