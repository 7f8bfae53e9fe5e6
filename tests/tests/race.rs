//! `race`: the first success wins and the others are cancelled (in index
//! order, each once, before the race fires), every input's result is
//! consumed, all-failed races fail with `FailureGroup` ordered by index,
//! cancelling the race, the empty race, inputs that fired before the call,
//! cancellers that succeed or fail, and a Deferred waiting on a race.
//!
//! Twisted behaviours covered: B91-B98 (catalogue section 2.12), pitfall
//! P-16, experiment E10 (7-12). `RaceTests` uses hypothesis over 0-3
//! Deferreds before and after the winner; the loops below run every case.

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::{
    AnyValue, CancelledError, Deferred, Failure, FailureGroup, State, capture_unhandled_errors,
    fail, race, succeed,
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

python_errors!(
    GenericError,
    ValueError,
    KeyError,
    OSError,
    ZeroDivisionError
);

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

/// Twisted's `_setupRaceState`: `n` Deferreds and how many times each was
/// cancelled.
fn setup_race_state<T: 'static>(n: usize) -> (Rc<Vec<Cell<u32>>>, Vec<Deferred<T>>) {
    let cancelled: Rc<Vec<Cell<u32>>> = Rc::new((0..n).map(|_| Cell::new(0)).collect());
    let ds = (0..n)
        .map(|i| {
            let state = cancelled.clone();
            Deferred::with_canceller(move |_d: &Deferred<T>| state[i].set(state[i].get() + 1))
        })
        .collect();
    (cancelled, ds)
}

fn counts(state: &[Cell<u32>]) -> Vec<u32> {
    state.iter().map(Cell::get).collect()
}

/// A Deferred whose canceller appends `name` to `log`.
fn logging_deferred<T: 'static>(log: &Log<String>, name: &str) -> Deferred<T> {
    let log = log.clone();
    let name = name.to_owned();
    Deferred::with_canceller(move |_d: &Deferred<T>| log.borrow_mut().push(name.clone()))
}

/// The failures of the `FailureGroup` the race failed with.
fn group_failures<T: Clone + 'static>(r: &Deferred<T>) -> Vec<Failure> {
    r.result()
        .failure()
        .expect("the race should have failed")
        .downcast_ref::<FailureGroup>()
        .expect("the failure should be a FailureGroup")
        .failures
        .clone()
}

fn short_names(failures: &[Failure]) -> Vec<&'static str> {
    failures.iter().map(Failure::short_type_name).collect()
}

/// Python's `None`: what race leaves as every input's result.
fn holds_none<T: 'static>(d: &Deferred<T>) -> bool {
    matches!(d.cast::<()>().result(), State::Value(()))
}

/// Handles a failure so that it is not reported.
fn handled<T: 'static>(d: &Deferred<T>) {
    d.cast::<AnyValue>().add_errback(|_| Ok(AnyValue::none()));
}

// ---------------------------------------------------------------------------
// Success

// Twisted: RaceTests.test_success (every case of beforeWinner, afterWinner in 0..=3)
#[test]
fn the_first_success_wins_and_every_other_input_is_cancelled_once() {
    for before in 0..=3 {
        for after in 0..=3 {
            let (cancelled, ds) = setup_race_state::<Rc<&str>>(before + 1 + after);
            let race_result = race(ds.clone());
            let expected = Rc::new("expected");
            ds[before].callback(expected.clone()).unwrap();
            let (index, value) = race_result
                .result()
                .value()
                .expect("the race should have succeeded");
            assert_eq!(index, before);
            assert!(Rc::ptr_eq(&value, &expected));
            let mut expected_cancelled = vec![1; before];
            expected_cancelled.push(0);
            expected_cancelled.extend(vec![1; after]);
            assert_eq!(counts(&cancelled), expected_cancelled, "{before}/{after}");
        }
    }
}

/// The losers are cancelled in index order, then the race fires; every
/// input, the winner included, holds `None` afterwards.
// Twisted: experiment E10-7 ("cancellations: [('cancel', 0), ('cancel', 2)] | losers: ['None', 'None', 'None']"); pitfall P-16; own experiment (4 inputs: cancel 0, 1, 3, then the race fires)
#[test]
fn losers_are_cancelled_in_index_order_before_the_race_fires() {
    let order = new_log();
    let ds: Vec<Deferred<&str>> = (0..4)
        .map(|i| logging_deferred(&order, &format!("cancel {i}")))
        .collect();
    let r = race(ds.clone());
    let log = order.clone();
    r.add_callback(move |res: (usize, &str)| {
        log.borrow_mut().push(format!("race fired {res:?}"));
        Ok(res)
    });
    let ((), reports) = capture_unhandled_errors(|| ds[2].callback("w").unwrap());
    assert_eq!(
        *order.borrow(),
        ["cancel 0", "cancel 1", "cancel 3", "race fired (2, \"w\")"]
    );
    assert_eq!(r.result().value(), Some((2, "w")));
    assert!(ds.iter().all(holds_none));
    assert!(reports.is_empty(), "{reports:?}");
}

// Twisted: RaceTests.test_resultFromCancel; experiment E10-12 ("race result: (0, 'w') | loser result: None")
#[test]
fn a_loser_whose_canceller_calls_back_is_ignored() {
    let winner = Deferred::<Rc<&str>>::new();
    let loser = Deferred::with_canceller(|d: &Deferred<Rc<&str>>| {
        d.callback(Rc::new("loser's canceller value")).unwrap()
    });
    let expected = Rc::new("expected");
    let race_result = race([winner.clone(), loser.clone()]);
    winner.callback(expected.clone()).unwrap();
    let (index, value) = race_result.result().value().unwrap();
    assert_eq!(index, 0);
    assert!(Rc::ptr_eq(&value, &expected));
    assert!(holds_none(&loser));
    assert!(holds_none(&winner));
}

/// A loser that ignores cancellation and fires later: its result goes
/// nowhere, and nothing is reported.
// Twisted: RaceTests.test_resultAfterCancel (every case of beforeWinner, afterWinner in 0..=3)
#[test]
fn a_result_after_cancellation_goes_nowhere() {
    for before in 0..=3 {
        for after in 0..=3 {
            let ((), reports) = capture_unhandled_errors(|| {
                let ds: Vec<Deferred<()>> =
                    (0..before + 2 + after).map(|_| Deferred::new()).collect();
                let race_result = race(ds.clone());
                ds[before].callback(()).unwrap();
                // Cancelled without a canceller: this late fire is swallowed.
                ds[before + 1].callback(()).unwrap();
                assert_eq!(race_result.result().value(), Some((before, ())));
                drop((ds, race_result));
            });
            assert!(reports.is_empty(), "{before}/{after}: {reports:?}");
        }
    }
}

/// An input that already succeeded wins during `race()` itself: the inputs
/// before it (already watched) and after it (not yet watched) are cancelled
/// before `race()` returns.
// Twisted: experiment E10-11 ("late input canceller ran", "(0, 'early') | late: None"); own experiment (['p', 'late', 'race returned'] (1, 'early') None None)
#[test]
fn an_input_that_already_succeeded_wins_during_the_call() {
    let order = new_log();
    let p: Deferred<&str> = logging_deferred(&order, "p");
    let late: Deferred<&str> = logging_deferred(&order, "late");
    let early = succeed("early");
    let r = race([p.clone(), early.clone(), late.clone()]);
    order.borrow_mut().push("race returned".to_owned());
    assert_eq!(*order.borrow(), ["p", "late", "race returned"]);
    assert_eq!(r.result().value(), Some((1, "early")));
    assert!(holds_none(&p));
    assert!(holds_none(&early));
    assert!(holds_none(&late));
}

// Twisted: experiment E10-11 with the winner first
#[test]
fn a_first_input_that_already_succeeded_wins() {
    let order = new_log();
    let late: Deferred<&str> = logging_deferred(&order, "late input canceller ran");
    let r = race([succeed("early"), late.clone()]);
    assert_eq!(*order.borrow(), ["late input canceller ran"]);
    assert_eq!(r.result().value(), Some((0, "early")));
    assert!(holds_none(&late));
}

// ---------------------------------------------------------------------------
// Failure

/// Every input fails: the race fails with a FailureGroup of their failures
/// (the very objects), and nothing is cancelled.
// Twisted: RaceTests.test_failure (every case of beforeWinner, afterWinner in 0..=3)
#[test]
fn when_every_input_fails_the_race_fails_with_a_failure_group() {
    for before in 0..=3 {
        for after in 0..=3 {
            let n = before + 1 + after;
            let (cancelled, ds) = setup_race_state::<()>(n);
            let failure = Failure::new(GenericError("The test demands failures."));
            let race_result = race(ds.clone());
            for d in &ds {
                d.errback(failure.clone()).unwrap();
            }
            let failures = group_failures(&race_result);
            assert_eq!(failures.len(), n);
            assert!(failures.iter().all(|f| Failure::ptr_eq(f, &failure)));
            assert_eq!(counts(&cancelled), vec![0; n]);
            handled(&race_result);
        }
    }
}

/// The FailureGroup lists failures by input index, not by failure time; the
/// inputs' failures are consumed.
// Twisted: experiment E10-8 ("two of three failed: unfired", "order by index: ['ValueError', 'OSError', 'KeyError']", inputs None)
#[test]
fn the_failure_group_is_ordered_by_index_not_by_time() {
    let ds: Vec<Deferred<i32>> = (0..3).map(|_| Deferred::new()).collect();
    let r = race(ds.clone());
    let (k2, v0, o1) = (
        Failure::new(KeyError("k2")),
        Failure::new(ValueError("v0")),
        Failure::new(OSError("o1")),
    );
    let ((), reports) = capture_unhandled_errors(|| {
        ds[2].errback(k2.clone()).unwrap();
        ds[0].errback(v0.clone()).unwrap();
        assert!(!r.called());
        ds[1].errback(o1.clone()).unwrap();
    });
    let failures = group_failures(&r);
    assert_eq!(
        short_names(&failures),
        ["ValueError", "OSError", "KeyError"]
    );
    assert!(Failure::ptr_eq(&failures[0], &v0));
    assert!(Failure::ptr_eq(&failures[1], &o1));
    assert!(Failure::ptr_eq(&failures[2], &k2));
    assert!(ds.iter().all(holds_none));
    assert!(reports.is_empty(), "{reports:?}");
    // The race's own failure, left unhandled, is reported when it goes.
    let ((), reports) = capture_unhandled_errors(|| drop(r));
    assert_eq!(reports.len(), 1);
    assert!(reports[0].check::<FailureGroup>());
}

/// Failed inputs given to `race` are consumed; the one that succeeded
/// later still wins.
// Twisted: catalogue B94/B95 (a failure does not decide; failures consumed)
#[test]
fn failures_before_a_success_do_not_decide() {
    let bad = fail::<i32>(ValueError("first"));
    let good = Deferred::<i32>::new();
    let ((), reports) = capture_unhandled_errors(|| {
        let r = race([bad.clone(), good.clone()]);
        assert!(!r.called());
        good.callback(3).unwrap();
        assert_eq!(r.result().value(), Some((1, 3)));
    });
    assert!(holds_none(&bad));
    assert!(holds_none(&good));
    assert!(reports.is_empty(), "{reports:?}");
}

// ---------------------------------------------------------------------------
// Cancellation

/// Cancelling the race cancels every input; they fail with CancelledError
/// and the race fails with a FailureGroup of those, not a CancelledError.
// Twisted: RaceTests.test_cancel (numDeferreds in 1..=3); experiment E10-9; pitfall P-16
#[test]
fn cancelling_the_race_cancels_every_input() {
    for n in 1..=3 {
        let (cancelled, ds) = setup_race_state::<i32>(n);
        let race_result = race(ds.clone());
        race_result.cancel().unwrap();
        assert_eq!(counts(&cancelled), vec![1; n]);
        let failures = group_failures(&race_result);
        assert_eq!(short_names(&failures), vec!["CancelledError"; n]);
        assert!(ds.iter().all(holds_none));
        handled(&race_result);
    }
}

/// `race([])` never fires; cancelling it gives a plain CancelledError.
// Twisted: experiment E10-10 ("empty race: unfired", "cancel empty race: FAIL CancelledError"); pitfall P-16
#[test]
fn an_empty_race_never_fires_and_cancelling_it_gives_cancelled_error() {
    let r = race(Vec::<Deferred<i32>>::new());
    assert!(!r.called());
    assert_eq!(format!("{r:?}"), format!("<Deferred at {:#x}>", r.id()));
    r.cancel().unwrap();
    let failure = r.result().failure().unwrap();
    assert!(failure.check::<CancelledError>());
    handled(&r);
}

// Twisted: own experiment ("12 [0, 1] (0, 1)": cancelling a race that fired does nothing)
#[test]
fn cancelling_a_race_that_fired_does_nothing() {
    let (cancelled, ds) = setup_race_state::<i32>(2);
    let r = race(ds.clone());
    ds[0].callback(1).unwrap();
    assert_eq!(counts(&cancelled), [0, 1]);
    r.cancel().unwrap();
    assert_eq!(counts(&cancelled), [0, 1]);
    assert_eq!(r.result().value(), Some((0, 1)));
}

/// A loser's canceller that fails stops the cancel loop; its failure becomes
/// the winner's result and the race does not fire.
// Twisted: race's `succeeded` (d.cancel() raising); own experiment ("4 race loser raises: [0, 1] unfired ['None', 'unfired', 'FAIL ZeroDivisionError', 'unfired']")
#[test]
fn a_failing_loser_canceller_escapes_into_the_winner() {
    let order = new_log();
    let log = order.clone();
    let ds: Vec<Deferred<&str>> = vec![
        logging_deferred(&order, "0"),
        Deferred::with_canceller(move |_d: &Deferred<&str>| -> Result<(), Failure> {
            log.borrow_mut().push("1".to_owned());
            Err(Failure::new(ZeroDivisionError("division by zero")))
        }),
        logging_deferred(&order, "2"),
        logging_deferred(&order, "3"),
    ];
    let r = race(ds.clone());
    ds[2].callback("w").unwrap();
    assert_eq!(*order.borrow(), ["0", "1"]);
    assert!(!r.called());
    assert!(holds_none(&ds[0]));
    assert!(ds[1].result().is_pending());
    assert!(
        ds[2]
            .result()
            .failure()
            .unwrap()
            .check::<ZeroDivisionError>()
    );
    assert!(ds[3].result().is_pending());
    handled(&ds[2]);
    ds[1].callback("x").unwrap();
    ds[3].callback("y").unwrap();
}

/// The race's canceller cancels the inputs in order; a canceller that fails
/// stops it, and `cancel()` raises that failure.
// Twisted: race's `cancel` (no try/except); own experiment ("5 race cancel raised: [0, 1] unfired ['None', 'unfired', 'unfired']")
#[test]
fn cancelling_a_race_whose_input_canceller_fails_raises() {
    let order = new_log();
    let log = order.clone();
    let ds: Vec<Deferred<&str>> = vec![
        logging_deferred(&order, "0"),
        Deferred::with_canceller(move |_d: &Deferred<&str>| -> Result<(), Failure> {
            log.borrow_mut().push("1".to_owned());
            Err(Failure::new(ZeroDivisionError("division by zero")))
        }),
        logging_deferred(&order, "2"),
    ];
    let r = race(ds.clone());
    let raised = r.cancel().unwrap_err();
    assert!(raised.check::<ZeroDivisionError>());
    assert_eq!(*order.borrow(), ["0", "1"]);
    assert!(!r.called());
    assert!(holds_none(&ds[0]));
    assert!(ds[1].result().is_pending());
    assert!(ds[2].result().is_pending());
    ds[1].callback("x").unwrap();
}

// Twisted: catalogue B55/B86 through race (own experiment: "5 FailureGroup ['CancelledError'] None")
#[test]
fn a_deferred_waiting_on_a_race_forwards_cancel_to_it() {
    let order = new_log();
    let a: Deferred<i32> = logging_deferred(&order, "a canceller");
    let outer = Deferred::<()>::new();
    let input = a.clone();
    let waiting = outer.add_callback(move |()| race([input]));
    outer.callback(()).unwrap();
    assert!(waiting.is_waiting());
    waiting.cancel().unwrap();
    assert_eq!(*order.borrow(), ["a canceller"]);
    assert_eq!(short_names(&group_failures(&waiting)), ["CancelledError"]);
    assert!(holds_none(&a));
    handled(&waiting);
}

// ---------------------------------------------------------------------------
// Duplicate inputs

/// The same Deferred twice: the first link consumes the failure, so the
/// second sees `None`, a success, and wins.
// Twisted: own experiment ("6 race dup failure: (1, None) None")
#[test]
fn a_deferred_raced_twice_failing_lets_the_second_slot_win_with_none() {
    let d = Deferred::<AnyValue>::new();
    let r = race([d.clone(), d.clone()]);
    d.errback(ValueError("v")).unwrap();
    let (index, value) = r.result().value().unwrap();
    assert_eq!(index, 1);
    assert!(value.is_none());
    assert!(d.result().value().unwrap().is_none());
}

// Twisted: own experiment ("6b race dup success: (0, 7) None")
#[test]
fn a_deferred_raced_twice_succeeding_wins_at_its_first_index() {
    let d = Deferred::<AnyValue>::new();
    let r = race([d.clone(), d.clone()]);
    d.callback(AnyValue::new(7i64)).unwrap();
    let (index, value) = r.result().value().unwrap();
    assert_eq!(index, 0);
    assert_eq!(value.downcast_ref::<i64>(), Some(&7));
    assert!(d.result().value().unwrap().is_none());
}
