//! Typed handles over one untyped Deferred: `cast`, `as_any`, results of
//! another type (`ResultTypeError`, `State::OtherType`), the dynamically
//! typed mode (`AnyValue`), panics becoming `PanicError` failures, `Outcome`,
//! and the documented `State::InUse` divergence: a typed callback owns its
//! input while it runs, where Python (and the `AnyValue` mode) leaves it in
//! place.
//!
//! Twisted behaviours covered: the Rust forms of B4, B5, B8, B13, B14, B29
//! (re-entrant steal) and B38 (`None` left behind), with experiments E01,
//! E02 and E28.

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::{
    AnyValue, Deferred, Failure, Outcome, PanicError, ResultTypeError, State, succeed,
};

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

#[derive(Debug, Clone, PartialEq)]
struct KeyError;

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("k")
    }
}

impl Error for KeyError {}

fn state_name<T: fmt::Debug>(s: State<T>) -> String {
    match s {
        State::Pending => "Pending".into(),
        State::Waiting(_) => "Waiting".into(),
        State::Value(v) => format!("Value({v:?})"),
        State::Failure(f) => format!("Failure({})", f.short_type_name()),
        State::InUse => "InUse".into(),
        State::OtherType(t) => format!("OtherType({t})"),
        _ => "unknown".into(),
    }
}

/// `cast` gives another handle to the same Deferred.
// Twisted: experiment E14-1 (add-methods return the same object; one Deferred)
#[test]
fn cast_re_types_a_handle_to_the_same_deferred() {
    let d: Deferred<i32> = Deferred::new();
    let s = d.cast::<String>();
    let a = d.as_any();
    assert!(s.ptr_eq(&d));
    assert!(a.ptr_eq(&d));
    assert_eq!(s.id(), d.id());
    d.callback(3).unwrap();
    assert!(s.called());
    assert_eq!(d.result().value(), Some(3));
}

/// Python changes a result's type along the chain while keeping one
/// variable; `cast` ports that line by line.
// Twisted: experiment E02 (a result changes type as links run)
#[test]
fn a_ported_chain_keeps_one_variable_through_cast() {
    let d: Deferred<i32> = Deferred::new();
    d.add_callback(|x: i32| Ok(x.to_string()));
    d.cast::<String>().add_callback(|s: String| Ok(s.len()));
    d.callback(1234).unwrap();
    assert_eq!(d.cast::<usize>().result().value(), Some(4));
}

/// A typed callback that meets a result of another type is not called; the
/// chain continues with a `ResultTypeError` naming both types.
// Twisted: experiment E02 (a callback given the wrong type fails with TypeError, as P-18's non-callable does)
#[test]
fn a_typed_callback_meeting_another_type_fails_with_result_type_error() {
    let called: Log<String> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let c = called.clone();
    d.cast::<String>().add_callback(move |s: String| {
        c.borrow_mut().push(s);
        Ok(())
    });
    d.callback(5).unwrap();
    assert!(called.borrow().is_empty());
    let f = d.cast::<()>().result().failure().unwrap();
    assert_eq!(
        f.downcast_ref::<ResultTypeError>(),
        Some(&ResultTypeError {
            expected: "alloc::string::String",
            found: "i32",
        })
    );
    d.cast::<()>().add_errback(|_f| Ok(()));
}

/// A handle of another type sees `OtherType`, naming the value's type.
// Twisted: DeferredTests.test_succeedMatchesManualSuccess (the result is one object whatever the handle)
#[test]
fn a_handle_of_another_type_reports_the_type_it_found() {
    let d = succeed(7_u8);
    assert!(matches!(
        d.cast::<String>().result(),
        State::OtherType("u8")
    ));
    assert_eq!(d.result().value(), Some(7));
}

/// After handing its result to a waiting Deferred, a Deferred holds
/// Python's `None`: `()`. A callback still typed with the old type meets
/// `()`.
// Twisted: DeferredTests.test_synchronousImplicitChain (the inner's result becomes None)
#[test]
fn after_a_hand_off_the_giver_holds_unit() {
    let inner = succeed(5_i32);
    let outer: Deferred<()> = Deferred::new();
    let i = inner.clone();
    let outer = outer.add_callback(move |()| i);
    outer.cast::<()>().callback(()).unwrap();
    assert_eq!(outer.result().value(), Some(5));
    assert!(matches!(inner.result(), State::OtherType("()")));
    assert!(matches!(inner.cast::<()>().result(), State::Value(())));
    inner.add_callback(|x: i32| Ok(x + 1));
    let f = inner.cast::<()>().result().failure().unwrap();
    assert_eq!(f.downcast_ref::<ResultTypeError>().unwrap().found, "()");
    inner.cast::<()>().add_errback(|_f| Ok(()));
}

/// The same after `chainDeferred`: the source keeps `()`.
// Twisted: DeferredTests.test_chainDeferredRecordsExplicitChain (B38: the source's result is None)
#[test]
fn after_chain_deferred_the_source_holds_unit() {
    let src: Deferred<i32> = Deferred::new();
    let tgt: Deferred<i32> = Deferred::new();
    let after = src.chain_deferred(&tgt);
    src.callback(1).unwrap();
    assert!(matches!(after.result(), State::Value(())));
    assert!(matches!(src.result(), State::OtherType("()")));
}

/// The dynamically typed mode: each callback takes and returns any value.
// Twisted: experiment E02 (dynamic results)
#[test]
fn dynamic_callbacks_change_the_result_type_freely() {
    let d: Deferred = Deferred::new();
    d.add_callback(|v: AnyValue| Ok(AnyValue::new(v.downcast_ref::<i64>().unwrap().to_string())));
    d.add_callback(|v: AnyValue| Ok(AnyValue::new(v.downcast_ref::<String>().unwrap().len())));
    d.callback(AnyValue::new(1234_i64)).unwrap();
    let v = d.result().value().unwrap();
    assert_eq!(v.downcast_ref::<usize>(), Some(&4));
    assert_eq!(d.cast::<usize>().result().value(), Some(4));
}

/// Values stored through `AnyValue` are found by typed handles and typed
/// callbacks, and typed values by dynamic callbacks.
// Twisted: experiment E02 (one result, whatever handles it)
#[test]
fn typed_and_dynamic_handles_see_the_same_values() {
    let d: Deferred = Deferred::new();
    d.callback(AnyValue::new(5_i32)).unwrap();
    assert_eq!(d.cast::<i32>().result().value(), Some(5));
    let e = d.cast::<i32>().add_callback(|x: i32| Ok(x * 2));
    assert_eq!(e.result().value(), Some(10));

    let typed: Deferred<i32> = Deferred::new();
    let seen: Log<i32> = new_log();
    let s = seen.clone();
    typed.as_any().add_callback(move |v: AnyValue| {
        s.borrow_mut().push(*v.downcast_ref::<i32>().unwrap());
        Ok(v)
    });
    typed.callback(3).unwrap();
    assert_eq!(*seen.borrow(), [3]);
}

/// A value that is neither `Clone` nor `Debug` can travel in the dynamic
/// mode (`AnyValue::opaque`); clones share it, and it prints as its type.
// Twisted: experiment E28 (results are shared objects in Python)
#[test]
fn opaque_dynamic_values_are_shared_not_copied() {
    struct Handle(u32);
    let d: Deferred = Deferred::new();
    d.callback(AnyValue::opaque(Handle(7))).unwrap();
    let held = d.result().value().unwrap();
    assert_eq!(held.downcast_ref::<Handle>().unwrap().0, 7);
    assert!(format!("{d:?}").contains("Handle"));
    let held = held
        .downcast::<Handle>()
        .err()
        .expect("shared with the Deferred");
    drop(held);
}

/// `Rc` makes a typed value shared as Python shares objects: the result
/// seen and the value given are one object.
// Twisted: DeferredTests.test_synchronousImplicitChain (identity of the result object)
#[test]
fn rc_values_are_shared_through_the_chain() {
    let value = Rc::new(String::from("object"));
    let d = succeed(value.clone());
    let got = d.result().value().unwrap();
    assert!(Rc::ptr_eq(&got, &value));
    let seen: Log<Rc<String>> = new_log();
    let s = seen.clone();
    d.add_callback(move |v: Rc<String>| {
        s.borrow_mut().push(v.clone());
        Ok(v)
    });
    assert!(Rc::ptr_eq(&seen.borrow()[0], &value));
}

/// Dynamic mode: the result stays in place while a callback runs, as in
/// Python.
// Twisted: experiment E28 (the result is visible during the callback)
#[test]
fn a_dynamic_result_stays_visible_while_its_callback_runs() {
    let seen: Log<String> = new_log();
    let d: Deferred = Deferred::new();
    let (s, d1) = (seen.clone(), d.clone());
    d.add_callback(move |v: AnyValue| {
        s.borrow_mut().push(state_name(d1.result()));
        Ok(v)
    });
    d.callback(AnyValue::new(String::from("x"))).unwrap();
    assert_eq!(*seen.borrow(), ["Value(\"x\")"]);
}

/// Typed mode (documented divergence): the running callback owns its
/// input, so the Deferred shows `InUse` meanwhile, in `result()` and in its
/// printed form. Python would show the value.
// Twisted: experiment E28 (Python keeps the result in place; divergence documented on Slot::Lent)
#[test]
fn a_typed_result_is_in_use_while_its_callback_runs() {
    let seen: Log<String> = new_log();
    let d: Deferred<String> = Deferred::new();
    let (s, d1) = (seen.clone(), d.clone());
    d.add_callback(move |v: String| {
        s.borrow_mut().push(state_name(d1.result()));
        s.borrow_mut().push(format!("{d1:?}"));
        Ok(v)
    });
    d.callback("x".into()).unwrap();
    assert_eq!(
        *seen.borrow(),
        [
            "InUse".to_string(),
            format!(
                "<Deferred at {:#x} current result: <in use by a running callback>>",
                d.id()
            ),
        ]
    );
    assert_eq!(d.result().value().as_deref(), Some("x"));
}

/// Unit results are shared, so they stay visible even in typed mode.
// Twisted: experiment E28 (the result is visible during the callback)
#[test]
fn a_unit_result_stays_visible_while_its_callback_runs() {
    let seen: Log<String> = new_log();
    let d: Deferred<()> = Deferred::new();
    let (s, d1) = (seen.clone(), d.clone());
    d.add_callback(move |()| {
        s.borrow_mut().push(state_name(d1.result()));
        Ok(())
    });
    d.callback(()).unwrap();
    assert_eq!(*seen.borrow(), ["Value(())"]);
}

/// Typed mode (documented divergence from E28): X's running callback fires
/// `outer`, whose callback returns X. X's value is owned by the running
/// callback, so outer waits on X instead of taking that value, and gets
/// what X's chain produces later.
// Twisted: experiment E28 (Twisted: outer takes "x-input"; divergence documented on Slot::Lent)
#[test]
fn a_typed_reentrant_outer_waits_instead_of_taking_the_value_in_use() {
    let log: Log<String> = new_log();
    let x: Deferred<String> = Deferred::new();
    let outer: Deferred<()> = Deferred::new();
    let x1 = x.clone();
    let l = log.clone();
    outer
        .add_callback(move |()| x1)
        .add_callback(move |r: String| {
            l.borrow_mut().push(format!("outer got {r}"));
            Ok(())
        });
    let (l, x2, o) = (log.clone(), x.clone(), outer.clone());
    x.add_callback(move |_r: String| {
        o.callback(()).unwrap();
        l.borrow_mut().push(format!(
            "X.result inside its callback {}",
            state_name(x2.result())
        ));
        Ok("x-returned".to_string())
    });
    let l = log.clone();
    x.add_callback(move |r: String| {
        l.borrow_mut().push(format!("X next callback {r}"));
        Ok(r)
    });
    x.callback("x-input".into()).unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "X.result inside its callback InUse",
            "X next callback x-returned",
            "outer got x-returned",
        ]
    );
}

/// Python's `callback(aFailure)` is `errback(aFailure)`. In the dynamic
/// mode a Failure given to `callback()` should take the errback path.
// Twisted: experiment E02 ("callback(Failure) -> [('eb', 'KeyError')]")
#[test]
fn a_failure_given_to_callback_in_dynamic_mode_takes_the_errback_path() {
    let out: Log<String> = new_log();
    let d: Deferred = Deferred::new();
    let (o1, o2) = (out.clone(), out.clone());
    d.add_callbacks(
        move |v: AnyValue| {
            o1.borrow_mut().push(format!("cb {v:?}"));
            Ok(AnyValue::none())
        },
        move |f: Failure| {
            o2.borrow_mut().push(format!("eb {}", f.short_type_name()));
            Ok(AnyValue::none())
        },
    );
    d.callback(AnyValue::new(Failure::new(KeyError))).unwrap();
    assert_eq!(*out.borrow(), ["eb KeyError"]);
}

/// In the dynamic mode a callback that returns the Deferred it was handed
/// (as Python's `lambda r: r`) chains to it.
// Twisted: experiment E01 ("c waiting on d: True 1", "c result after d fired: 9")
#[test]
fn a_dynamic_callback_returning_the_deferred_it_was_handed_chains() {
    let c: Deferred = Deferred::new();
    let d: Deferred = Deferred::new();
    c.add_callback(|r: AnyValue| Ok(r));
    c.callback(AnyValue::new(d.clone())).unwrap();
    assert!(c.is_waiting(), "c waits on d");
    assert_eq!(c.paused(), 1);
    d.callback(AnyValue::new(9_i64)).unwrap();
    assert_eq!(c.cast::<i64>().result().value(), Some(9));
}

/// Returning a Deferred from a dynamic callback (as an `Outcome`) chains.
// Twisted: DeferredTests.test_callbackReturnsDeferred (dynamic mode)
#[test]
fn a_dynamic_callback_returning_a_deferred_chains() {
    let c: Deferred = Deferred::new();
    let d: Deferred = Deferred::new();
    let d1 = d.clone();
    c.add_callback(move |_r: AnyValue| d1);
    c.callback(AnyValue::none()).unwrap();
    assert!(c.is_waiting());
    d.callback(AnyValue::new("done")).unwrap();
    assert_eq!(
        c.result().value().unwrap().downcast_ref::<&str>(),
        Some(&"done")
    );
    assert!(d.result().value().unwrap().is_none());
}

/// Callbacks may build their `Outcome` explicitly.
// Twisted: DeferredTests.testCallbackErrors and test_callbackReturnsDeferred (the three kinds of return)
#[test]
fn an_outcome_can_be_returned_explicitly() {
    let d = succeed(1).add_callback(|x: i32| Outcome::Value(x + 1));
    assert_eq!(d.result().value(), Some(2));

    let f = Failure::new(KeyError);
    let f1 = f.clone();
    let e = succeed(1).add_callback(move |_x: i32| Outcome::<i32>::Failure(f1));
    assert!(Failure::ptr_eq(&e.result().failure().unwrap(), &f));
    e.add_errback(|_f| Ok(0));

    let inner: Deferred<i32> = Deferred::new();
    let i = inner.clone();
    let w = succeed(1).add_callback(move |_x: i32| Outcome::Deferred(i));
    assert!(w.is_waiting());
    inner.callback(5).unwrap();
    assert_eq!(w.result().value(), Some(5));
}

/// A panic never escapes the API: adding a panicking callback to a fired
/// Deferred returns normally and leaves a `PanicError`.
// Twisted: pitfall P-18 (everything raised in a link is captured)
#[test]
fn a_panic_in_a_callback_run_by_add_callback_stays_inside_the_deferred() {
    let d = succeed(1)
        .add_callback(|_x: i32| -> Result<i32, Failure> { std::panic::panic_any(17_u32) });
    let f = d.result().failure().unwrap();
    assert_eq!(
        f.downcast_ref::<PanicError>(),
        Some(&PanicError {
            message: "Box<dyn Any>".into()
        })
    );
    d.add_errback(|_f| Ok(0));
}

// Twisted: pitfall P-18 (addBoth halves are captured too)
#[test]
fn a_panic_in_add_both_becomes_a_panic_error() {
    let d: Deferred<i32> = Deferred::new();
    let e = d.add_both(|_r: Result<i32, Failure>| -> Result<i32, Failure> { panic!("both broke") });
    d.callback(1).unwrap();
    let f = e.result().failure().unwrap();
    assert!(f.check::<PanicError>());
    assert_eq!(f.message(), "both broke");
    e.add_errback(|_f| Ok(0));
}

/// A typed result that cannot be cloned cannot be shown as an `AnyValue`:
/// the dynamic handle reports `OtherType` (documented on `State`).
// Twisted: experiment E28 (Python shares; a plain typed value is owned here)
#[test]
fn a_dynamic_handle_on_a_typed_value_reports_other_type() {
    let d = succeed(5_i32);
    assert!(matches!(d.as_any().result(), State::OtherType("i32")));
    assert_eq!(d.result().value(), Some(5));
}

/// A typed value that went through a dynamically typed callback, which
/// handed it on, can be taken by a typed callback further down.
// Twisted: DeferredTests.testTwoCallbacks (mixing typed and dynamic handles)
#[test]
fn a_typed_value_survives_a_dynamic_pass_through() {
    let d: Deferred<i32> = Deferred::new();
    d.as_any().add_both(|r: Result<AnyValue, Failure>| r);
    let e = d.add_callback(|x: i32| Ok(x + 1));
    d.callback(1).unwrap();
    assert_eq!(e.result().value(), Some(2));
    let s: Deferred<String> = Deferred::new();
    s.as_any().add_callback(|v: AnyValue| Ok(v));
    let t = s.add_callback(|x: String| Ok(x.len()));
    s.callback("four".to_string()).unwrap();
    assert_eq!(t.result().value(), Some(4));
}
