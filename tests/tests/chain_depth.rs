//! Deep chains: chaining by returning Deferreds is iterative (Twisted's
//! explicit stack), so depth costs heap, not stack; nesting by firing
//! Deferreds from callbacks is bounded by `MAX_NESTING` instead of
//! overflowing the stack.
//!
//! These tests run on ordinary `cargo test` threads (2 MiB stacks).

use twisted_deferred::{Deferred, MAX_NESTING, RecursionError, State, capture_unhandled_errors};

const DEPTH: usize = 1_000_000;

/// Each Deferred's callback returns the next one; every outer Deferred fires
/// first and waits, then the innermost fires and its result travels up a
/// million waiting Deferreds.
// Twisted: DeferredTests.test_boundedStackDepth (and pitfall P-19, implicit)
#[test]
fn a_million_waiting_deferreds_resolve_when_the_innermost_fires() {
    let ds: Vec<Deferred<u64>> = (0..DEPTH).map(|_| Deferred::new()).collect();
    for pair in ds.windows(2) {
        let next = pair[1].clone();
        pair[0].add_callback(move |_| next);
    }
    for d in &ds[..DEPTH - 1] {
        d.callback(0).unwrap();
    }
    assert!(ds[0].is_waiting());
    ds[DEPTH - 1].callback(42).unwrap();
    assert_eq!(ds[0].result().value(), Some(42));
    assert!(!ds[0].is_waiting());
    // Every Deferred below handed its result on and holds None.
    assert!(matches!(ds[1].result(), State::OtherType("()")));
}

/// The innermost fires first: each outer Deferred takes the result of the
/// one its callback returns at once (no waiting), a million times over.
// Twisted: DeferredTests.test_synchronousImplicitChain, at depth
#[test]
fn a_million_fired_deferreds_are_taken_over_one_by_one() {
    let ds: Vec<Deferred<u64>> = (0..DEPTH).map(|_| Deferred::new()).collect();
    for pair in ds.windows(2) {
        let next = pair[1].clone();
        pair[0].add_callback(move |_| next);
    }
    for d in ds.iter().rev() {
        d.callback(7).unwrap();
    }
    assert_eq!(ds[0].result().value(), Some(7));
}

/// A chain built from the inside out while the outer Deferreds are already
/// waiting: each callback returns a fresh, unfired Deferred whose own
/// callback will return the next one.
#[test]
fn a_million_hops_added_while_waiting_resolve_in_order() {
    let head: Deferred<u64> = Deferred::new();
    let mut last = head.clone();
    let mut inners = Vec::with_capacity(DEPTH);
    for _ in 0..DEPTH {
        let inner: Deferred<u64> = Deferred::new();
        let returned = inner.clone();
        last = last.add_callback(move |x: u64| {
            let _ = x;
            returned
        });
        inners.push(inner);
    }
    let sum = last.add_callback(|x: u64| Ok(x + 1));
    head.callback(0).unwrap();
    for (i, inner) in inners.iter().enumerate() {
        inner.callback(i as u64).unwrap();
    }
    assert_eq!(sum.result().value(), Some(DEPTH as u64));
}

/// `chainDeferred` nests (each link calls the next Deferred's callback), as
/// in Twisted, where a long explicit chain hits the recursion limit. Here
/// the fire that would nest too deeply fails with `RecursionError`, which
/// becomes the failure of the Deferred whose link attempted it; the tail of
/// the chain never fires, and nothing overflows.
// Twisted: pitfall P-19 (explicit chains overflow) and
// DeferredTests.test_chainDeferredRecordsExplicitChain
#[test]
fn explicit_chains_stop_with_recursion_error_instead_of_overflowing() {
    let n = 20_000;
    let ((), reports) = capture_unhandled_errors(|| {
        let ds: Vec<Deferred<u64>> = (0..n).map(|_| Deferred::new()).collect();
        for pair in ds.windows(2) {
            pair[0].chain_deferred(&pair[1]);
        }
        ds[0].callback(1).unwrap();
        let failed: Vec<usize> = (0..n)
            .filter(|&i| matches!(ds[i].result(), State::Failure(_)))
            .collect();
        assert_eq!(failed.len(), 1, "exactly one link fails");
        let f = ds[failed[0]].cast::<u64>().result().failure().unwrap();
        assert!(f.check::<RecursionError>());
        assert!(failed[0] >= MAX_NESTING as usize - 2);
        assert!(!ds[n - 1].called(), "the tail never fires");
        assert!(ds[1].called());
    });
    assert_eq!(
        reports.len(),
        1,
        "the RecursionError is reported once, unhandled"
    );
}

/// Callbacks that fire other Deferreds from inside callbacks nest; the
/// guard keeps the deepest level well inside a 2 MiB stack.
#[test]
fn nested_firing_from_callbacks_is_bounded() {
    let n = 5_000;
    let ds: Vec<Deferred<u64>> = (0..n).map(|_| Deferred::new()).collect();
    let outcomes = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    for pair in ds.windows(2) {
        let next = pair[1].clone();
        let log = outcomes.clone();
        pair[0].add_callback(move |x: u64| {
            let fired = next.callback(x + 1).is_ok();
            log.borrow_mut().push(fired);
            Ok(x)
        });
    }
    ds[0].callback(0).unwrap();
    let log = outcomes.borrow();
    let fired = log.iter().filter(|ok| **ok).count();
    assert!(
        fired >= MAX_NESTING as usize - 2 && fired < n,
        "fired {fired}"
    );
    // The innermost callback, whose fire was refused, logged first.
    assert_eq!(log.len(), fired + 1);
    assert!(!log[0], "the refused fire stops the nesting");
    // The Deferred fired too deep holds its value, but its callbacks did
    // not run (and so fired nothing further).
    assert!(ds[fired + 1].called());
    assert_eq!(ds[fired + 1].result().value(), Some(fired as u64 + 1));
    assert!(!ds[fired + 2].called());
}
