//! The printed form of a Deferred (Python's `repr` / `str`): unfired, with
//! a result, waiting on another Deferred.
//!
//! Twisted behaviour covered: B144 (catalogue section 2.19 and section 3.1),
//! with experiments E18 and E25. Results print with Rust's `Debug` where
//! Python uses `repr` (`"orange"` for `'orange'`, `()` for `None`).

use std::error::Error;
use std::fmt;

use twisted_deferred::{AnyValue, Deferred, Failure, fail, succeed};

#[derive(Debug, Clone, PartialEq)]
struct ValueError(&'static str);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Error for ValueError {}

fn hex<T: 'static>(d: &Deferred<T>) -> String {
    format!("{:#x}", d.id())
}

// Twisted: DeferredTests.test_repr
#[test]
fn an_unfired_deferred_shows_its_address_only() {
    let d: Deferred<()> = Deferred::new();
    assert_eq!(format!("{d:?}"), format!("<Deferred at {}>", hex(&d)));
}

/// The address is lower-case hex, `0x`-prefixed, without padding.
// Twisted: section 3.1 (`0x{id:x}`)
#[test]
fn the_address_is_lower_case_hex_without_padding() {
    let d: Deferred<()> = Deferred::new();
    let text = format!("{d:?}");
    let addr = text
        .strip_prefix("<Deferred at 0x")
        .and_then(|s| s.strip_suffix('>'))
        .unwrap();
    assert_eq!(usize::from_str_radix(addr, 16).unwrap(), d.id());
    assert!(!addr.starts_with('0'));
    assert!(
        addr.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    );
}

/// `str(d) == repr(d)`.
// Twisted: experiment E18 (1: "str==repr: True")
#[test]
fn display_and_debug_are_the_same() {
    let unfired: Deferred<i32> = Deferred::new();
    assert_eq!(unfired.to_string(), format!("{unfired:?}"));
    let fired = succeed(5);
    assert_eq!(fired.to_string(), format!("{fired:?}"));
}

// Twisted: DeferredTests.test_reprWithResult
#[test]
fn a_fired_deferred_shows_its_current_result() {
    let d: Deferred<&str> = Deferred::new();
    d.callback("orange").unwrap();
    assert_eq!(
        format!("{d:?}"),
        format!("<Deferred at {} current result: \"orange\">", hex(&d))
    );
}

/// `None` is `()`.
// Twisted: experiment E18 (3)
#[test]
fn a_none_result_shows_as_unit() {
    let d = succeed(());
    assert_eq!(
        format!("{d:?}"),
        format!("<Deferred at {} current result: ()>", hex(&d))
    );
}

/// A failure result shows the failure's own form; once handled, `None`.
// Twisted: experiment E18 (4 and 4b)
#[test]
fn a_failed_deferred_shows_its_failure_then_none_once_handled() {
    let d = fail::<()>(ValueError("bad"));
    assert_eq!(
        format!("{d:?}"),
        format!(
            "<Deferred at {} current result: <Failure repr::ValueError: bad>>",
            hex(&d)
        )
    );
    d.add_errback(|_f: Failure| Ok(()));
    assert_eq!(
        format!("{d:?}"),
        format!("<Deferred at {} current result: ()>", hex(&d))
    );
}

/// The target of `chainDeferred` shows what it waits on.
// Twisted: DeferredTests.test_reprWithChaining and experiment E18 (5)
#[test]
fn the_target_of_chain_deferred_shows_it_is_waiting() {
    let a: Deferred<()> = Deferred::new();
    let b: Deferred<()> = Deferred::new();
    b.chain_deferred(&a);
    assert_eq!(
        format!("{a:?}"),
        format!(
            "<Deferred at {} waiting on Deferred at {}>",
            hex(&a),
            hex(&b)
        )
    );
    b.callback(()).unwrap();
}

/// Implicit chaining: waiting while the inner is unfired, then the result;
/// the inner shows `None` after the hand-off.
// Twisted: experiment E18 (6 and 6b)
#[test]
fn an_implicitly_chained_deferred_shows_waiting_then_its_result() {
    let x: Deferred<()> = Deferred::new();
    let y: Deferred<i32> = Deferred::new();
    let y1 = y.clone();
    let x = x.add_callback(move |()| y1);
    x.cast::<()>().callback(()).unwrap();
    assert_eq!(
        format!("{x:?}"),
        format!(
            "<Deferred at {} waiting on Deferred at {}>",
            hex(&x),
            hex(&y)
        )
    );
    y.callback(1).unwrap();
    assert_eq!(
        format!("{x:?}"),
        format!("<Deferred at {} current result: 1>", hex(&x))
    );
    assert_eq!(
        format!("{:?}", y.cast::<()>()),
        format!("<Deferred at {} current result: ()>", hex(&y))
    );
}

/// "Waiting" takes precedence over "current result".
// Twisted: experiment E25 (1) and section 3.1 (precedence)
#[test]
fn waiting_takes_precedence_over_the_current_result() {
    let a: Deferred<()> = Deferred::new();
    let b: Deferred<&str> = Deferred::new();
    let b1 = b.clone();
    let a = a.add_callback(move |()| b1);
    a.cast::<()>().callback(()).unwrap();
    a.pause();
    b.callback("b").unwrap();
    assert_eq!(a.result().value(), Some("b"));
    assert_eq!(
        format!("{a:?}"),
        format!(
            "<Deferred at {} waiting on Deferred at {}>",
            hex(&a),
            hex(&b)
        )
    );
    a.unpause();
    assert_eq!(
        format!("{a:?}"),
        format!("<Deferred at {} current result: \"b\">", hex(&a))
    );
}

/// A Deferred waiting on itself names itself.
// Twisted: experiment E03 (f: "<Deferred at 0xSELF waiting on Deferred at 0xSELF>")
#[test]
fn a_deferred_waiting_on_itself_names_itself() {
    let d: Deferred<&str> = Deferred::new();
    let me = d.clone();
    d.add_callback(move |_r: &str| me);
    d.callback("x").unwrap();
    assert_eq!(
        format!("{d:?}"),
        format!(
            "<Deferred at {} waiting on Deferred at {}>",
            hex(&d),
            hex(&d)
        )
    );
}

/// A Deferred held as a plain result prints as its own repr.
// Twisted: experiment E01 ("repr shows:  result: <Deferred a")
#[test]
fn a_deferred_held_as_the_result_prints_its_own_repr() {
    let a: Deferred<Deferred<i32>> = Deferred::new();
    let b: Deferred<i32> = Deferred::new();
    a.callback(b.clone()).unwrap();
    assert_eq!(
        format!("{a:?}"),
        format!(
            "<Deferred at {} current result: <Deferred at {}>>",
            hex(&a),
            hex(&b)
        )
    );
    b.callback(7).unwrap();
    assert_eq!(
        format!("{a:?}"),
        format!(
            "<Deferred at {} current result: <Deferred at {} current result: 7>>",
            hex(&a),
            hex(&b)
        )
    );
}

/// The dynamically typed mode prints the value itself.
// Twisted: DeferredTests.test_reprWithResult (dynamic mode)
#[test]
fn a_dynamic_result_prints_as_the_value_it_holds() {
    let d: Deferred = Deferred::new();
    d.callback(AnyValue::new(String::from("orange"))).unwrap();
    assert_eq!(
        format!("{d:?}"),
        format!("<Deferred at {} current result: \"orange\">", hex(&d))
    );
    let n: Deferred = succeed(AnyValue::none());
    assert_eq!(
        format!("{n:?}"),
        format!("<Deferred at {} current result: ()>", hex(&n))
    );
}

/// Any handle prints the Deferred the same way, whatever type it expects,
/// as long as the value can be printed.
// Twisted: DeferredTests.test_reprWithResult (one object, one repr)
#[test]
fn every_handle_of_a_deferred_prints_the_same() {
    let d = succeed(AnyValue::new(42_i64));
    let typed = d.cast::<i64>();
    let other = d.cast::<String>();
    let expected = format!("<Deferred at {} current result: 42>", hex(&d));
    assert_eq!(format!("{d:?}"), expected);
    assert_eq!(format!("{typed:?}"), expected);
    assert_eq!(format!("{other:?}"), expected);
}
