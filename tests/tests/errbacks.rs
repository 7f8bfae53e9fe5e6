//! Errbacks and Failure conversion: errors and panics in links become
//! failures, returned failures switch to the error path, errbacks recover,
//! and pass-through halves leave results alone.
//!
//! Twisted behaviours covered: B14, B15, B16, B17, B18, B20 (catalogue
//! section 2.2), with pitfalls P-18 and P-24 and experiments E02 and E19.

use std::cell::RefCell;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::{AnyValue, Deferred, Failure, PanicError, capture_unhandled_errors};

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
struct ZeroDivisionError;

impl fmt::Display for ZeroDivisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("division by zero")
    }
}

impl Error for ZeroDivisionError {}

#[derive(Debug, Clone, PartialEq)]
struct KeyError;

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("key")
    }
}

impl Error for KeyError {}

fn divide(a: i32, b: i32) -> Result<i32, ZeroDivisionError> {
    a.checked_div(b).ok_or(ZeroDivisionError)
}

/// Raising in a callback (`?` here) makes a new failure for the next errback.
// Twisted: DeferredTests.testCallbackErrors (first half)
#[test]
fn an_error_raised_in_a_callback_goes_to_the_next_errback() {
    let errors: Log<Failure> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let e = errors.clone();
    d.add_callback(|x: i32| Ok(divide(x, 0)?))
        .add_errback(move |f: Failure| {
            e.borrow_mut().push(f);
            Ok(0)
        });
    d.callback(1).unwrap();
    assert_eq!(errors.borrow().len(), 1);
    assert!(errors.borrow()[0].check::<ZeroDivisionError>());
}

/// Nothing raised in a link reaches the caller of `callback()`; links after
/// the failing one take their errback half.
// Twisted: pitfall P-18 (everything raised in a link is captured)
#[test]
fn an_error_in_a_link_never_reaches_the_caller_of_callback() {
    let log: Log<String> = new_log();
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<i32> = Deferred::new();
        let (l1, l2) = (log.clone(), log.clone());
        d.add_callback(|_x: i32| -> Result<i32, Failure> { Err(GenericError("raised").into()) })
            .add_callback(move |x: i32| {
                l1.borrow_mut().push(format!("skipped {x}"));
                Ok(x)
            })
            .add_both(move |r: Result<i32, Failure>| {
                l2.borrow_mut()
                    .push(format!("both {}", r.as_ref().unwrap_err().message()));
                r
            });
        assert!(d.callback(1).is_ok());
        assert!(d.result().failure().unwrap().check::<GenericError>());
    });
    assert_eq!(*log.borrow(), ["both raised"]);
    assert_eq!(reports.len(), 1, "the failure was left unhandled");
}

/// A panic is Rust's uncatchable-looking exception; it is captured like any
/// Python `BaseException` and the chain continues on the errback path.
// Twisted: pitfall P-18 (KeyboardInterrupt captured) and DeferredTests.testCallbackErrors
#[test]
fn a_panicking_callback_becomes_a_panic_error_failure() {
    let errors: Log<Failure> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let e = errors.clone();
    d.add_callback(|_x: i32| -> Result<i32, Failure> { panic!("interrupted") })
        .add_errback(move |f: Failure| {
            e.borrow_mut().push(f);
            Ok(7)
        });
    assert!(d.callback(1).is_ok());
    let f = errors.borrow()[0].clone();
    assert!(f.check::<PanicError>());
    assert_eq!(f.message(), "interrupted");
    assert_eq!(d.result().value(), Some(7));
}

// Twisted: pitfall P-18 (an errback raising is captured too)
#[test]
fn a_panicking_errback_replaces_the_failure_with_a_panic_error() {
    let d: Deferred<i32> = Deferred::new();
    let seen: Log<String> = new_log();
    let s = seen.clone();
    d.add_errback(|_f: Failure| -> Result<i32, Failure> { panic!("errback broke: {}", 42) })
        .add_errback(move |f: Failure| {
            s.borrow_mut()
                .push(format!("{} {}", f.short_type_name(), f.message()));
            Ok(0)
        });
    d.errback(GenericError("original")).unwrap();
    assert_eq!(*seen.borrow(), ["PanicError errback broke: 42"]);
}

/// A callback that *returns* a Failure switches to the error path with that
/// very Failure.
// Twisted: DeferredTests.test_callbackMaybeReturnsFailure and testCallbackErrors (second half)
#[test]
fn a_callback_returning_a_failure_passes_that_same_failure_on() {
    let rte = Failure::new(GenericError("runtime"));
    let d: Deferred<i32> = Deferred::new();
    d.callback(6).unwrap();
    let (r1, r2) = (rte.clone(), rte.clone());
    let calls: Log<i32> = new_log();
    let (c1, c2) = (calls.clone(), calls.clone());
    let end = d
        .add_callback(move |x: i32| -> Failure {
            c1.borrow_mut().push(x);
            r1
        })
        .add_callback(move |x: i32| -> Failure {
            c2.borrow_mut().push(x);
            r2
        });
    assert_eq!(*calls.borrow(), [6], "the second callback was skipped");
    let got = end.result().failure().unwrap();
    assert!(Failure::ptr_eq(&got, &rte));
    end.add_errback(|_f| Ok(0));
}

// Twisted: DeferredTests.test_callbackMaybeReturnsFailure (success half)
#[test]
fn a_callback_that_may_fail_returns_its_value_when_it_does_not() {
    let d: Deferred<i32> = Deferred::new();
    d.callback(6).unwrap();
    let should_fail = false;
    let d = d.add_callback(move |x: i32| -> Result<i32, Failure> {
        if should_fail {
            Err(GenericError("no").into())
        } else {
            Ok(x + 1)
        }
    });
    assert_eq!(d.result().value(), Some(7));
}

/// An errback returning a value switches back to the callback path.
// Twisted: DeferredTests.testDeferredList (its `catch` errback) and experiment E02
#[test]
fn an_errback_returning_a_value_recovers() {
    let log: Log<String> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let (l1, l2) = (log.clone(), log.clone());
    d.add_errback(move |f: Failure| {
        l1.borrow_mut().push(format!("eb {}", f.message()));
        Ok(42)
    })
    .add_callbacks(
        move |x: i32| {
            l2.borrow_mut().push(format!("cb {x}"));
            Ok(x)
        },
        |f: Failure| Err(f),
    );
    d.errback(GenericError("bad")).unwrap();
    assert_eq!(*log.borrow(), ["eb bad", "cb 42"]);
    assert_eq!(d.result().value(), Some(42));
}

/// An errback that returns nothing (Python's implicit `None`) recovers with
/// `None`, which is `()` here.
// Twisted: experiment E02 ("eb2" returns None, "cb5" receives None)
#[test]
fn an_errback_returning_nothing_recovers_with_none() {
    let seen: Log<()> = new_log();
    let d: Deferred<()> = Deferred::new();
    let s = seen.clone();
    d.add_errback(|_f: Failure| Ok(()))
        .add_callback(move |r: ()| {
            s.borrow_mut().push(r);
            Ok(())
        });
    d.errback(GenericError("x")).unwrap();
    assert_eq!(seen.borrow().len(), 1);
    assert!(d.result().value().is_some());
}

/// An errback returning the failure it received keeps that object flowing.
// Twisted: experiment E19 ("returning a Failure passes the same object on")
#[test]
fn an_errback_returning_its_failure_keeps_the_same_object() {
    let original = Failure::new(GenericError("v"));
    let seen: Log<Failure> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let (s1, s2) = (seen.clone(), seen.clone());
    d.add_errback(move |f: Failure| -> Failure {
        s1.borrow_mut().push(f.clone());
        f
    })
    .add_errback(move |f: Failure| {
        s2.borrow_mut().push(f);
        Ok(0)
    });
    d.errback(original.clone()).unwrap();
    let seen = seen.borrow();
    assert!(Failure::ptr_eq(&seen[0], &original));
    assert!(Failure::ptr_eq(&seen[1], &original));
}

/// A `trap` that does not match re-raises: the next errback gets a failure
/// around the very same error. (Python builds a new `Failure` object around
/// the same exception; a Rust `Failure` has no identity apart from its
/// error, so "same error" is what can be checked.)
// Twisted: pitfall P-24 and DeferredAddTimeoutTests.test_errbackAddedBeforeTimeoutSuppressesCancellation
#[test]
fn a_failed_trap_re_raises_the_same_error() {
    let original = Failure::new(GenericError("v"));
    let seen: Log<Failure> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let (s1, s2) = (seen.clone(), seen.clone());
    d.add_errback(move |f: Failure| {
        s1.borrow_mut().push(f.clone());
        f.trap::<KeyError>()?;
        Ok(1)
    })
    .add_errback(move |f: Failure| {
        s2.borrow_mut().push(f);
        Ok(2)
    });
    d.errback(original.clone()).unwrap();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].check::<GenericError>());
    assert!(std::ptr::addr_eq(
        seen[1].error() as *const dyn Error,
        original.error() as *const dyn Error
    ));
    assert_eq!(d.result().value(), Some(2));
}

/// A `trap` that matches lets the errback recover.
// Twisted: DeferredAddTimeoutTests.test_errbackAddedBeforeTimeoutSuppressesCancellation (trap matching)
#[test]
fn a_matching_trap_lets_the_errback_recover() {
    let d: Deferred<i32> = Deferred::new();
    d.add_errback(|f: Failure| {
        let e = f.trap::<GenericError>()?;
        Ok(e.0.len() as i32)
    });
    d.errback(GenericError("four")).unwrap();
    assert_eq!(d.result().value(), Some(4));
}

/// Raising a Failure (`Err(f)` / `?` on a failure) is the same as raising
/// its error: the next errback sees the same error type and message.
// Twisted: experiment E19 ("raise f.value" and "raise f")
#[test]
fn raising_a_failure_is_raising_its_error() {
    let original = Failure::new(GenericError("v"));
    let seen: Log<Failure> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let s = seen.clone();
    let o = original.clone();
    d.add_callback(move |_x: i32| -> Result<i32, Failure> { Err(o)? })
        .add_errback(move |f: Failure| {
            s.borrow_mut().push(f);
            Ok(0)
        });
    d.callback(1).unwrap();
    let f = seen.borrow()[0].clone();
    assert!(f.check::<GenericError>());
    assert_eq!(f.message(), "v");
    assert!(std::ptr::addr_eq(
        f.error() as *const dyn Error,
        original.error() as *const dyn Error
    ));
}

/// An errback may fail differently: the next errback sees the new error.
// Twisted: experiment E02 (an errback's own raise becomes the failure)
#[test]
fn an_errback_raising_another_error_replaces_the_failure() {
    let seen: Log<String> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let s = seen.clone();
    d.add_errback(|_f: Failure| -> Result<i32, Failure> { Err(KeyError.into()) })
        .add_errback(move |f: Failure| {
            s.borrow_mut().push(f.short_type_name().to_string());
            Ok(0)
        });
    d.errback(GenericError("first")).unwrap();
    assert_eq!(*seen.borrow(), ["KeyError"]);
}

/// Pass-through halves: a value skips errback-only links, unchanged.
// Twisted: experiment E02 ("cb3-skipped"/"cb4-skipped" and the value halves of addErrback)
#[test]
fn a_value_skips_errback_only_links_unchanged() {
    let log: Log<String> = new_log();
    let d: Deferred<String> = Deferred::new();
    let (l1, l2, l3) = (log.clone(), log.clone(), log.clone());
    d.add_errback(move |f: Failure| {
        l1.borrow_mut().push("eb1".into());
        Err(f)
    })
    .add_errback(move |f: Failure| {
        l2.borrow_mut().push("eb2".into());
        Err(f)
    })
    .add_callback(move |s: String| {
        l3.borrow_mut().push(format!("cb {s}"));
        Ok(s)
    });
    d.callback("v".into()).unwrap();
    assert_eq!(*log.borrow(), ["cb v"]);
}

/// Pass-through halves: a failure skips callback-only links and reaches the
/// first errback as the very same Failure.
// Twisted: DeferredTests.test_addCallbacksNoneErrback
#[test]
fn a_failure_skips_callback_only_links_unchanged() {
    let original = Failure::new(GenericError("e"));
    let log: Log<String> = new_log();
    let got: Log<Failure> = new_log();
    let d: Deferred<i32> = Deferred::new();
    let (l1, l2, g) = (log.clone(), log.clone(), got.clone());
    d.add_callback(move |x: i32| {
        l1.borrow_mut().push("cb1".into());
        Ok(x)
    })
    .add_callback(move |x: i32| {
        l2.borrow_mut().push("cb2".into());
        Ok(x)
    })
    .add_errback(move |f: Failure| {
        g.borrow_mut().push(f);
        Ok(0)
    });
    d.errback(original.clone()).unwrap();
    assert!(log.borrow().is_empty());
    assert!(Failure::ptr_eq(&got.borrow()[0], &original));
}

/// The whole of experiment E02's first chain, in the dynamically typed mode
/// (as the Python code is): raise, skip, recover, return a Failure, skip,
/// recover with None.
// Twisted: experiment E02
#[test]
fn a_chain_switches_between_the_callback_and_errback_paths_as_in_e02() {
    let log: Log<String> = new_log();
    let d: Deferred = Deferred::new();
    let l = log.clone();
    d.add_callback(move |r: AnyValue| {
        let r = *r.downcast_ref::<i32>().unwrap();
        l.borrow_mut().push(format!("cb1 {r}"));
        Ok(AnyValue::new(r + 1))
    });
    let l = log.clone();
    d.add_callback(move |r: AnyValue| -> Result<AnyValue, Failure> {
        let r = *r.downcast_ref::<i32>().unwrap();
        l.borrow_mut().push(format!("cb2 {r}"));
        Ok(AnyValue::new(divide(1, 0)?))
    });
    let l = log.clone();
    d.add_callback(move |r: AnyValue| {
        l.borrow_mut().push(format!("cb3-skipped {r:?}"));
        Ok(r)
    });
    let l = log.clone();
    d.add_errback(move |f: Failure| {
        l.borrow_mut().push(format!("eb1 {}", f.short_type_name()));
        Ok(AnyValue::new("recovered"))
    });
    let l = log.clone();
    d.add_both::<AnyValue, _, _>(move |r: Result<AnyValue, Failure>| -> Failure {
        let v = r.unwrap();
        l.borrow_mut()
            .push(format!("both {}", v.downcast_ref::<&str>().unwrap()));
        Failure::new(GenericError("returned"))
    });
    let l = log.clone();
    d.add_callback(move |r: AnyValue| {
        l.borrow_mut().push(format!("cb4-skipped {r:?}"));
        Ok(r)
    });
    let l = log.clone();
    d.add_errback(move |f: Failure| {
        l.borrow_mut().push(format!("eb2 {}", f.message()));
        Ok(AnyValue::none())
    });
    let l = log.clone();
    d.add_callback(move |r: AnyValue| {
        l.borrow_mut().push(format!("cb5 none={}", r.is_none()));
        Ok(r)
    });
    d.callback(AnyValue::new(1i32)).unwrap();
    assert_eq!(
        *log.borrow(),
        [
            "cb1 1",
            "cb2 2",
            "eb1 ZeroDivisionError",
            "both recovered",
            "eb2 returned",
            "cb5 none=true",
        ]
    );
}
