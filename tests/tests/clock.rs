//! `Clock` and its `DelayedCall`s: Twisted's `task.Clock` and
//! `base.DelayedCall`, driven by hand.
//!
//! Twisted behaviours covered: B128 (catalogue section 2.15), pitfall P-20,
//! the clock part of experiment E14 (12), the `AlreadyCancelled` /
//! `AlreadyCalled` texts of section 3, FORMAT.md's "Times" (IEEE-754 time,
//! due order, a raising timer stopping `advance` with the due ones left
//! scheduled), and the list order `task.Clock` gives calls moved by
//! `reset()`/`delay()` (checked by experiment against Twisted 26.10.0; the
//! expected orders below are what it printed).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use twisted_deferred::time::{DelayedCall, DelayedCallError, ReactorTime, TimedCall};
use twisted_deferred::{Failure, PanicError};
use twisted_reactor::{Clock, InvalidTimeError};

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

/// `log.append(name)`, as a function to schedule.
fn append(log: &Log<&'static str>, name: &'static str) -> impl FnOnce() + 'static {
    let log = log.clone();
    move || log.borrow_mut().push(name)
}

/// `lambda: log.append((name, clock.seconds()))`.
fn logtime(
    clock: &Clock,
    log: &Log<(&'static str, f64)>,
    name: &'static str,
) -> impl FnOnce() + 'static {
    let (clock, log) = (clock.clone(), log.clone());
    move || log.borrow_mut().push((name, clock.seconds()))
}

fn times(calls: &[DelayedCall]) -> Vec<f64> {
    calls.iter().map(DelayedCall::get_time).collect()
}

// Twisted: task: ClockTests.testSeconds
#[test]
fn time_starts_at_zero() {
    let clock = Clock::new();
    assert_eq!(clock.seconds(), 0.0);
    assert_eq!(Clock::default().seconds(), 0.0);
}

// Twisted: task: ClockTests.testCallLater
#[test]
fn call_later_returns_an_active_call_due_at_now_plus_delay() {
    let clock = Clock::new();
    let call = clock.call_later(1.0, || {});
    assert_eq!(call.get_time(), 1.0);
    assert!(call.active());
    clock.advance(0.5).unwrap();
    let later = clock.call_later(1.0, || {});
    assert_eq!(later.get_time(), 1.5);
}

// Twisted: task: ClockTests.testCallLaterCancelled
#[test]
fn a_cancelled_call_is_inactive_and_never_runs() {
    let clock = Clock::new();
    let log = new_log();
    let call = clock.call_later(1.0, append(&log, "x"));
    call.cancel().unwrap();
    assert!(!call.active());
    clock.advance(10.0).unwrap();
    assert!(log.borrow().is_empty());
    assert!(clock.get_delayed_calls().is_empty());
}

// Twisted: task: ClockTests.test_callLaterOrdering
#[test]
fn each_call_later_returns_a_distinct_call() {
    let clock = Clock::new();
    let call1 = clock.call_later(10.0, || {});
    let call2 = clock.call_later(1.0, || {});
    call2.cancel().unwrap();
    assert!(call1.active());
    assert!(!call2.active());
}

// Twisted: task: ClockTests.testAdvance
#[test]
fn advance_runs_a_call_once_its_time_is_reached() {
    let clock = Clock::new();
    let log = new_log();
    let call = clock.call_later(2.0, append(&log, "ran"));
    clock.advance(1.0).unwrap();
    assert!(log.borrow().is_empty());
    assert!(call.active());
    clock.advance(1.0).unwrap();
    assert_eq!(*log.borrow(), ["ran"]);
    assert!(!call.active());
    assert_eq!(clock.seconds(), 2.0);
}

// Twisted: task: ClockTests.testAdvanceCancel
#[test]
fn a_running_call_is_already_called_inside_itself() {
    let clock = Clock::new();
    let slot: Rc<RefCell<Option<DelayedCall>>> = Rc::new(RefCell::new(None));
    let seen = new_log();
    let (s, k) = (slot.clone(), seen.clone());
    let call = clock.call_later(1.0, move || {
        let me = s.borrow().clone().unwrap();
        k.borrow_mut()
            .push((me.cancel(), me.reset(1.0), me.delay(1.0), me.active()));
    });
    *slot.borrow_mut() = Some(call);
    clock.advance(1.0).unwrap();
    let called = Err(DelayedCallError::AlreadyCalled);
    assert_eq!(*seen.borrow(), [(called, called, called, false)]);
    slot.borrow_mut().take();
}

// Twisted: task: ClockTests.testCallLaterCancelled; experiment E14 (12)
#[test]
fn cancel_twice_is_already_cancelled_and_after_running_already_called() {
    let clock = Clock::new();
    let call = clock.call_later(1.0, || {});
    call.cancel().unwrap();
    let err = call.cancel().unwrap_err();
    assert_eq!(err, DelayedCallError::AlreadyCancelled);
    assert_eq!(
        err.to_string(),
        "Tried to cancel an already-cancelled event."
    );
    assert_eq!(call.reset(1.0), Err(DelayedCallError::AlreadyCancelled));
    assert_eq!(call.delay(1.0), Err(DelayedCallError::AlreadyCancelled));

    let call = clock.call_later(1.0, || {});
    clock.advance(1.0).unwrap();
    let err = call.cancel().unwrap_err();
    assert_eq!(err, DelayedCallError::AlreadyCalled);
    assert_eq!(err.to_string(), "Tried to cancel an already-called event.");
    assert_eq!(call.reset(1.0), Err(DelayedCallError::AlreadyCalled));
    assert_eq!(call.delay(1.0), Err(DelayedCallError::AlreadyCalled));
    assert!(!call.active());
}

// Twisted: task: ClockTests.testCallLaterDelayed
#[test]
fn delay_postpones_a_call() {
    let clock = Clock::new();
    let log = new_log();
    let call = clock.call_later(1.0, append(&log, "ran"));
    call.delay(1.0).unwrap();
    assert_eq!(call.get_time(), 2.0);
    clock.advance(1.5).unwrap();
    assert!(log.borrow().is_empty());
    clock.advance(1.0).unwrap();
    assert_eq!(*log.borrow(), ["ran"]);
}

// Twisted: task: ClockTests.testCallLaterResetLater
#[test]
fn reset_moves_a_call_later_counting_from_now() {
    let clock = Clock::new();
    let log = new_log();
    let call = clock.call_later(2.0, append(&log, "ran"));
    clock.advance(1.0).unwrap();
    call.reset(3.0).unwrap();
    assert_eq!(call.get_time(), 4.0);
    clock.advance(2.0).unwrap();
    assert!(log.borrow().is_empty());
    clock.advance(1.0).unwrap();
    assert_eq!(*log.borrow(), ["ran"]);
}

// Twisted: task: ClockTests.testCallLaterResetSooner
#[test]
fn reset_moves_a_call_sooner() {
    let clock = Clock::new();
    let log = new_log();
    let call = clock.call_later(4.0, append(&log, "ran"));
    call.reset(3.0).unwrap();
    assert_eq!(call.get_time(), 3.0);
    clock.advance(3.0).unwrap();
    assert_eq!(*log.borrow(), ["ran"]);
}

// Twisted: DelayedCall.delay (base.py: a negative total delay is folded into `time`)
#[test]
fn a_negative_delay_moves_a_call_earlier() {
    let clock = Clock::new();
    let log = new_log();
    let call = clock.call_later(5.0, append(&log, "ran"));
    call.delay(2.0).unwrap();
    assert_eq!(call.get_time(), 7.0);
    call.delay(-4.0).unwrap();
    assert_eq!(call.get_time(), 3.0);
    clock.advance(3.0).unwrap();
    assert_eq!(*log.borrow(), ["ran"]);
}

// Twisted: task: ClockTests.test_getDelayedCalls
#[test]
fn get_delayed_calls_lists_the_pending_calls() {
    let clock = Clock::new();
    let call2 = clock.call_later(2.0, || {});
    let call1 = clock.call_later(1.0, || {});
    let calls = clock.get_delayed_calls();
    assert_eq!(times(&calls), [1.0, 2.0]);
    assert_eq!(clock.delayed_call_count(), 2);
    calls[0].cancel().unwrap();
    assert!(!call1.active());
    assert!(call2.active());
    assert_eq!(times(&clock.get_delayed_calls()), [2.0]);
    clock.advance(2.0).unwrap();
    assert_eq!(clock.delayed_call_count(), 0);
}

// Twisted: task: ClockTests.test_getDelayedCallsEmpty
#[test]
fn get_delayed_calls_is_empty_on_a_new_clock() {
    let clock = Clock::new();
    assert!(clock.get_delayed_calls().is_empty());
    assert_eq!(clock.delayed_call_count(), 0);
}

// Twisted: task: ClockTests.test_providesIReactorTime
#[test]
fn clock_is_a_reactor_time() {
    let clock = Clock::new();
    let time: &dyn ReactorTime = &clock;
    let ran = Rc::new(Cell::new(false));
    let r = ran.clone();
    let f: TimedCall = Box::new(move || {
        r.set(true);
        Ok(())
    });
    let call = time.call_later(1.0, f);
    assert_eq!(call.get_time(), 1.0);
    clock.advance(1.0).unwrap();
    assert!(ran.get());
    assert_eq!(time.seconds(), 1.0);
    // Rc<Clock> too, through the core's blanket implementation.
    let shared: Rc<dyn ReactorTime> = Rc::new(clock.clone());
    shared.call_later(0.0, Box::new(|| Ok(())));
    assert_eq!(clock.delayed_call_count(), 1);
}

// Twisted: task: ClockTests.test_callLaterKeepsCallsOrdered
#[test]
fn a_call_reset_later_runs_after_a_call_scheduled_before_its_new_time() {
    let clock = Clock::new();
    let result = new_log();
    let call_a = clock.call_later(1.0, logtime(&clock, &result, "a"));
    call_a.reset(3.0).unwrap();
    clock.call_later(2.0, logtime(&clock, &result, "b"));
    clock.pump(&[1.0; 3]).unwrap();
    assert_eq!(*result.borrow(), [("b", 2.0), ("a", 3.0)]);
}

// Twisted: task: ClockTests.test_callLaterResetKeepsCallsOrdered
#[test]
fn a_call_reset_past_another_runs_after_it() {
    let clock = Clock::new();
    let result = new_log();
    let call_a = clock.call_later(1.0, logtime(&clock, &result, "a"));
    clock.call_later(2.0, logtime(&clock, &result, "b"));
    call_a.reset(3.0).unwrap();
    clock.pump(&[1.0; 3]).unwrap();
    assert_eq!(*result.borrow(), [("b", 2.0), ("a", 3.0)]);
}

// Twisted: task: ClockTests.test_callLaterResetInsideCallKeepsCallsOrdered
#[test]
fn a_reset_inside_a_running_call_keeps_calls_ordered() {
    let clock = Clock::new();
    let result = new_log();
    let call_b = clock.call_later(2.0, logtime(&clock, &result, "b"));
    clock.call_later(1.0, move || call_b.reset(3.0).unwrap());
    clock.call_later(3.0, logtime(&clock, &result, "c"));
    clock.pump(&[0.5; 10]).unwrap();
    assert_eq!(*result.borrow(), [("c", 3.0), ("b", 4.0)]);
}

// Twisted: pitfall P-20 (its program and output, line for line)
#[test]
fn advance_moves_time_first_then_runs_due_calls_in_order_including_new_ones() {
    let clock = Clock::new();
    let log: Log<String> = new_log();
    let push = |log: &Log<String>, s: &str| {
        let (log, s) = (log.clone(), s.to_string());
        move || log.borrow_mut().push(s)
    };
    clock.call_later(2.0, push(&log, "a@2"));
    clock.call_later(1.0, push(&log, "b@1"));
    clock.call_later(2.0, push(&log, "c@2"));
    let (c, l) = (clock.clone(), log.clone());
    clock.call_later(1.0, move || {
        l.borrow_mut()
            .push(format!("('b2 sees now =', {:?})", c.seconds()));
        c.call_later(0.0, push(&l, "0-delay"));
    });
    clock.advance(2.0).unwrap();
    assert_eq!(
        *log.borrow(),
        ["b@1", "('b2 sees now =', 2.0)", "a@2", "c@2", "0-delay"]
    );
    assert_eq!(clock.seconds(), 2.0);
}

// Twisted: experiment E14 (12: "clock order")
#[test]
fn a_zero_delay_call_scheduled_during_advance_runs_in_that_advance() {
    let clock = Clock::new();
    let log = new_log();
    clock.call_later(2.0, append(&log, "a@2"));
    clock.call_later(1.0, append(&log, "b@1"));
    clock.call_later(2.0, append(&log, "c@2"));
    let (c, l) = (clock.clone(), log.clone());
    clock.call_later(1.0, move || {
        c.call_later(0.0, append(&l, "zero-delay scheduled during advance"));
    });
    clock.advance(2.0).unwrap();
    assert_eq!(
        *log.borrow(),
        ["b@1", "a@2", "c@2", "zero-delay scheduled during advance"]
    );
}

// Twisted: FORMAT.md "Times" and B128 (a call scheduled during advance is
// relative to the new time; if that is not due yet, it waits)
#[test]
fn a_call_scheduled_during_advance_counts_from_the_new_time_and_waits() {
    let clock = Clock::new();
    let log = new_log();
    let (c, l) = (clock.clone(), log.clone());
    clock.call_later(1.0, move || {
        c.call_later(1.5, append(&l, "at 3.5"));
    });
    clock.advance(2.0).unwrap();
    assert!(log.borrow().is_empty());
    assert_eq!(times(&clock.get_delayed_calls()), [3.5]);
    clock.advance(1.0).unwrap();
    assert!(log.borrow().is_empty());
    clock.advance(0.5).unwrap();
    assert_eq!(*log.borrow(), ["at 3.5"]);
}

// Twisted: task: ClockTests.test_callLaterKeepsCallsOrdered (equal due times
// keep insertion order)
#[test]
fn calls_due_at_the_same_time_run_in_the_order_they_were_scheduled() {
    let clock = Clock::new();
    let log = new_log();
    let order: Vec<usize> = (0..50).collect();
    for &i in &order {
        let l = log.clone();
        // all due at 1.0, scheduled at different times
        clock.call_later(1.0 - clock.seconds(), move || l.borrow_mut().push(i));
        if i % 10 == 9 {
            clock.advance(0.0).unwrap();
        }
    }
    clock.advance(1.0).unwrap();
    assert_eq!(*log.borrow(), order);
}

/// One ordering case: calls `A`, `B`(, `C`) scheduled at the given delays,
/// then `setup` moves them; the order they run in on `advance(10)`.
fn run_order(
    delays: &[(&'static str, f64)],
    setup: impl FnOnce(&Clock, &[DelayedCall], &Log<&'static str>),
) -> Vec<&'static str> {
    let clock = Clock::new();
    let log = new_log();
    let calls: Vec<DelayedCall> = delays
        .iter()
        .map(|&(name, delay)| clock.call_later(delay, append(&log, name)))
        .collect();
    setup(&clock, &calls, &log);
    clock.advance(10.0).unwrap();
    log.borrow().clone()
}

/// A program of Clock operations, one a line: `L name delay` (callLater
/// logging `run name now`), `R name secs` (reset), `D name secs` (delay),
/// `C name` (cancel), `G` (the due times of getDelayedCalls(), in list
/// order), `A amount` (advance); ` | op` after an `L` line adds ops the
/// call runs when it runs (nested advances, resets, cancels, new calls).
fn run_program(program: &str) -> Vec<String> {
    struct State {
        clock: Clock,
        calls: RefCell<std::collections::HashMap<String, DelayedCall>>,
        log: RefCell<Vec<String>>,
    }
    fn op(st: &Rc<State>, line: &str, nested: Vec<String>) {
        let p: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| p[i].parse::<f64>().unwrap();
        match p[0] {
            "L" => {
                let (st2, name) = (st.clone(), p[1].to_string());
                let n2 = name.clone();
                let call = st.clock.call_later(num(2), move || {
                    let now = st2.clock.seconds();
                    st2.log.borrow_mut().push(format!("run {n2} {now:?}"));
                    for line in &nested {
                        op(&st2, line, Vec::new());
                    }
                });
                st.calls.borrow_mut().insert(name, call);
            }
            "R" | "D" | "C" => {
                let Some(call) = st.calls.borrow().get(p[1]).cloned() else {
                    st.log.borrow_mut().push("none".into());
                    return;
                };
                let outcome = match p[0] {
                    "R" => call.reset(num(2)),
                    "D" => call.delay(num(2)),
                    _ => call.cancel(),
                };
                let text = match outcome {
                    Ok(()) => format!("ok {:?}", call.get_time()),
                    Err(DelayedCallError::AlreadyCalled) => "AlreadyCalled".into(),
                    Err(DelayedCallError::AlreadyCancelled) => "AlreadyCancelled".into(),
                };
                st.log
                    .borrow_mut()
                    .push(format!("{} {} {text}", p[0], p[1]));
            }
            "G" => {
                let mut text = String::from("G");
                for call in st.clock.get_delayed_calls() {
                    text.push_str(&format!(" {:?}", call.get_time()));
                }
                st.log.borrow_mut().push(text);
            }
            "A" => {
                st.clock.advance(num(1)).unwrap();
                let now = st.clock.seconds();
                st.log.borrow_mut().push(format!("now {now:?}"));
            }
            other => panic!("unknown op {other}"),
        }
    }
    let st = Rc::new(State {
        clock: Clock::new(),
        calls: RefCell::new(Default::default()),
        log: RefCell::new(Vec::new()),
    });
    for line in program.lines() {
        let mut parts = line.split(" | ");
        let first = parts.next().unwrap();
        op(&st, first, parts.map(str::to_string).collect());
    }
    // Calls still pending hold the state: cancel them so nothing leaks.
    for call in st.clock.get_delayed_calls() {
        call.cancel().unwrap();
    }
    st.calls.borrow_mut().clear();
    st.log.borrow().clone()
}

// Twisted: task.Clock (callLater, advance, getDelayedCalls, DelayedCall
// reset/delay/cancel), a random program whose trace Twisted 26.10.0 printed:
// ties, resets and delays between sorts, negative delays, nested and
// negative advances inside calls. (Over 50,000 programs of the same
// generator matched Twisted during development.)
#[test]
fn a_random_program_runs_exactly_as_in_twisted() {
    const PROGRAM: &str = "\
A 1
L c1 0
L c2 0.2 | L c3 0 | C c1 -1
L c4 0.7
L c5 2 | L c6 0.1 | A -0.5
L c7 0
R c2 0.7
L c8 0.5 | A -0.5 | D c7 0.5 | R c1 0
L c9 0.5 | A 0.5 | R c3 2 | D c8 3
L c10 0 | L c11 0.1 | G | D c1 3
L c12 1 | A 0 | D c4 3
A 0.3
A 0.5
A 1
C c8
A 1
L c13 1 | L c14 -1 | D c4 3
R c14 0
G
D c1 -1
L c15 -1 | R c6 0 | D c6 0 | D c13 2
R c1 0.1
L c16 3 | D c9 0.2
L c17 0 | L c18 -1 | R c16 -1 | R c8 2
L c19 0.5 | D c10 0.1 | C c10 1.5
L c20 0.5 | L c21 -1 | R c16 1.5
L c22 2 | C c15 3 | L c23 3
L c24 0.5 | G
L c25 0.5 | D c17 0.2 | A 0
L c26 0.2 | C c9 1 | A 0.5 | A 0
L c27 3
G
A 0
A 0.1
A 1
L c28 0.7 | A 0.5
G
L c29 0.5
C c17
A 0
R c18 0.2
A 1
R c10 0.1
A 1
R c24 0.5
L c30 3 | D c7 1
A 0.1
L c31 1.5 | D c2 0.2 | D c18 1.5 | R c23 0.5
R c21 0.7
D c5 0.2
L c32 1 | R c30 2
L c33 2 | R c24 1.5
C c28
C c4
L c34 1.5
A 0.3
A 0.1
A 1
G
L c35 1 | R c32 0.7 | R c29 0.2
A 10";
    const TWISTED_PRINTED: &str = "\
now 1.0
R c2 ok 1.7
run c1 1.3
run c7 1.3
run c10 1.3
G 1.4000000000000001 1.5 1.5 1.7 1.7 2.0 3.0
D c1 AlreadyCalled
now 1.3
run c11 1.8
run c8 1.8
now 1.3
D c7 AlreadyCalled
R c1 AlreadyCalled
now 1.3
run c9 2.3
run c2 2.8
C c1 AlreadyCalled
run c4 2.8
run c12 2.8
run c3 2.8
now 2.8
D c4 AlreadyCalled
now 2.8
R c3 AlreadyCalled
D c8 AlreadyCalled
now 2.8
C c8 AlreadyCalled
run c5 3.8
now 3.3
now 3.3
none
G 3.9 4.3
D c1 AlreadyCalled
R c1 AlreadyCalled
G 2.3 3.3 3.5 3.8 3.8 3.8 3.8 3.9 4.3 5.3 6.3 6.3
run c15 3.3
R c6 ok 3.3
D c6 ok 3.3
D c13 ok 6.3
run c17 3.3
R c16 ok 2.3
R c8 AlreadyCalled
run c18 3.3
run c16 3.3
D c9 AlreadyCalled
run c6 3.3
now 3.3
now 3.4
run c26 4.4
C c9 AlreadyCalled
run c19 4.9
D c10 AlreadyCalled
C c10 AlreadyCalled
run c20 4.9
R c16 AlreadyCalled
run c24 4.9
G 3.8 3.9000000000000004 5.3 6.3 6.3
run c25 4.9
D c17 AlreadyCalled
run c21 4.9
now 4.9
now 4.9
now 4.9
now 4.9
G 5.3 5.6000000000000005 6.3 6.3
C c17 AlreadyCalled
now 4.9
R c18 AlreadyCalled
run c22 5.9
C c15 AlreadyCalled
run c29 5.9
run c28 5.9
run c13 6.4
D c4 AlreadyCalled
run c14 6.4
run c27 6.4
now 6.4
now 6.4
R c10 AlreadyCalled
now 7.4
R c24 AlreadyCalled
now 7.5
R c21 AlreadyCalled
D c5 AlreadyCalled
C c28 AlreadyCalled
C c4 AlreadyCalled
now 7.8
now 7.8999999999999995
run c32 8.899999999999999
R c30 ok 10.899999999999999
now 8.899999999999999
G 8.9 9.0 9.0 9.5 10.899999999999999
run c23 18.9
run c31 18.9
D c2 AlreadyCalled
D c18 AlreadyCalled
R c23 AlreadyCalled
run c34 18.9
run c33 18.9
R c24 AlreadyCalled
run c35 18.9
R c32 AlreadyCalled
R c29 AlreadyCalled
run c30 18.9
D c7 AlreadyCalled
now 18.9";
    assert_eq!(
        run_program(PROGRAM),
        TWISTED_PRINTED.lines().collect::<Vec<_>>()
    );
}

// Twisted: task.Clock._sortCalls (stable sort after callLater and before
// each call in advance; reset/delay do not sort); expected orders printed
// by Twisted 26.10.0
#[test]
fn a_call_moved_to_a_busy_time_goes_before_or_after_the_calls_there_by_where_it_came_from() {
    // A (due 1) reset to 2: it came from earlier, so it precedes B (due 2).
    let order = run_order(&[("A", 1.0), ("B", 2.0), ("C", 3.0)], |_, k, _| {
        k[0].reset(2.0).unwrap();
    });
    assert_eq!(order, ["A", "B", "C"]);
    // C (due 3) reset to 2: it came from later, so it follows B.
    let order = run_order(&[("A", 1.0), ("B", 2.0), ("C", 3.0)], |_, k, _| {
        k[2].reset(2.0).unwrap();
    });
    assert_eq!(order, ["A", "B", "C"]);
    // Both, between two sorts: they keep the order of their former places.
    let order = run_order(&[("A", 1.0), ("B", 2.0), ("C", 3.0)], |_, k, _| {
        k[2].reset(2.0).unwrap();
        k[0].reset(2.0).unwrap();
    });
    assert_eq!(order, ["A", "B", "C"]);
    // A (due 3) reset to 2, then C scheduled for 2: B, A, C.
    let order = run_order(&[("A", 3.0), ("B", 2.0)], |clock, k, log| {
        k[0].reset(2.0).unwrap();
        clock.call_later(2.0, append(log, "C"));
    });
    assert_eq!(order, ["B", "A", "C"]);
    // A (due 1) reset to 2, then C scheduled for 2: A, B, C.
    let order = run_order(&[("A", 1.0), ("B", 2.0)], |clock, k, log| {
        k[0].reset(2.0).unwrap();
        clock.call_later(2.0, append(log, "C"));
    });
    assert_eq!(order, ["A", "B", "C"]);
    // delay(): A (due 1) delayed to 2 precedes B; A (due 3) delayed by -1 follows B.
    let order = run_order(&[("A", 1.0), ("B", 2.0)], |_, k, _| {
        k[0].delay(1.0).unwrap();
    });
    assert_eq!(order, ["A", "B"]);
    let order = run_order(&[("A", 3.0), ("B", 2.0)], |_, k, _| {
        k[0].delay(-1.0).unwrap();
    });
    assert_eq!(order, ["B", "A"]);
    // A reset to the time it already has keeps its place before B.
    let order = run_order(&[("A", 2.0), ("B", 2.0)], |_, k, _| {
        k[0].reset(2.0).unwrap();
    });
    assert_eq!(order, ["A", "B"]);
    // Moved twice between sorts (1 -> 3 -> 2): only its place at the last
    // sort counts, which was at 1, before B.
    let order = run_order(&[("A", 1.0), ("B", 2.0)], |_, k, _| {
        k[0].reset(3.0).unwrap();
        k[0].reset(2.0).unwrap();
    });
    assert_eq!(order, ["A", "B"]);
    // Moved twice across a sort (1 -> 3, sort, 3 -> 2): now it comes from
    // later, after B.
    let order = run_order(&[("A", 1.0), ("B", 2.0)], |clock, k, _| {
        k[0].reset(3.0).unwrap();
        clock.call_later(5.0, || {}).cancel().unwrap();
        k[0].reset(2.0).unwrap();
    });
    assert_eq!(order, ["B", "A"]);
}

// Twisted: task.Clock.getDelayedCalls returns its list, which reset() does
// not re-sort (Twisted 26.10.0 printed [5.0, 2.0], then [2.0, 3.0, 5.0])
#[test]
fn get_delayed_calls_shows_a_reset_call_at_its_former_place_until_the_next_sort() {
    let clock = Clock::new();
    let a = clock.call_later(1.0, || {});
    clock.call_later(2.0, || {});
    a.reset(5.0).unwrap();
    assert_eq!(times(&clock.get_delayed_calls()), [5.0, 2.0]);
    clock.call_later(3.0, || {});
    assert_eq!(times(&clock.get_delayed_calls()), [2.0, 3.0, 5.0]);
}

// Twisted: task.Clock.callLater accepts any delay (Twisted 26.10.0: a call
// at -1 runs on advance(0), before one due at 1)
#[test]
fn a_negative_delay_is_due_at_once_and_runs_at_the_next_advance() {
    let clock = Clock::new();
    let log = new_log();
    let call = clock.call_later(-1.0, append(&log, "neg"));
    assert_eq!(call.get_time(), -1.0);
    assert!(log.borrow().is_empty());
    clock.advance(0.0).unwrap();
    assert_eq!(*log.borrow(), ["neg"]);

    let clock = Clock::new();
    let log = new_log();
    clock.call_later(1.0, append(&log, "one"));
    clock.call_later(-1.0, append(&log, "neg"));
    clock.advance(1.0).unwrap();
    assert_eq!(*log.borrow(), ["neg", "one"]);
}

// Twisted: task.Clock.advance just adds (Twisted 26.10.0: 5 then -3 gives 2.0)
#[test]
fn a_negative_advance_moves_the_clock_back() {
    let clock = Clock::new();
    clock.advance(5.0).unwrap();
    clock.advance(-3.0).unwrap();
    assert_eq!(clock.seconds(), 2.0);
    let log = new_log();
    clock.advance(-2.0).unwrap();
    clock.call_later(0.5, append(&log, "y"));
    clock.advance(0.0).unwrap();
    assert!(log.borrow().is_empty());
    assert_eq!(clock.seconds(), 0.0);
}

// Twisted: FORMAT.md "Times"; golden clock_float_time_below
#[test]
fn time_is_an_ieee_double_so_point_one_plus_point_seven_is_below_point_eight() {
    let clock = Clock::new();
    let log = new_log();
    clock.call_later(0.8, append(&log, "due_at_0_8"));
    clock.advance(0.1).unwrap();
    clock.advance(0.7).unwrap();
    assert_eq!(clock.seconds(), 0.7999999999999999);
    assert!(log.borrow().is_empty());
    clock.advance(0.000001).unwrap();
    assert_eq!(*log.borrow(), ["due_at_0_8"]);
}

// Twisted: FORMAT.md "Times"; golden clock_float_time_order
#[test]
fn a_call_set_later_but_due_earlier_by_rounding_runs_first() {
    let clock = Clock::new();
    let log = new_log();
    clock.call_later(0.8, append(&log, "set first, due 0.8"));
    clock.advance(0.1).unwrap();
    let b = clock.call_later(0.7, append(&log, "set later, due 0.1 + 0.7"));
    assert_eq!(b.get_time(), 0.7999999999999999);
    clock.advance(1.0).unwrap();
    assert_eq!(
        *log.borrow(),
        ["set later, due 0.1 + 0.7", "set first, due 0.8"]
    );
}

// Twisted: DelayedCall.reset (base.py keeps `time` and adds `delayed_time`;
// Twisted 26.10.0 gives 0.7999999999999998, not 0.1 + 0.7)
#[test]
fn reset_later_keeps_the_original_time_plus_a_delay_exactly_as_twisted_rounds() {
    let clock = Clock::new();
    let call = clock.call_later(0.2, || {});
    clock.set_right_now(0.1).unwrap();
    call.reset(0.7).unwrap();
    assert_eq!(call.get_time(), 0.7999999999999998);
    assert_ne!(call.get_time(), 0.1 + 0.7);
    call.cancel().unwrap();
}

// Twisted: FORMAT.md call_later ("If an effect raises, the advance op raises
// it; timers that were due but not yet run stay scheduled"); golden
// clock_effect_raises_stops_advance; Twisted 26.10.0 printed
// "raised boom [1] 5.0 2" then [1, 3, 4]
#[test]
fn a_failing_call_stops_advance_and_leaves_the_due_calls_scheduled() {
    let clock = Clock::new();
    let log = new_log();
    clock.call_later(1.0, append(&log, "1"));
    let boom = clock.call_later(1.0, || Err::<(), _>(Failure::msg("boom")));
    clock.call_later(1.0, append(&log, "3"));
    clock.call_later(2.0, append(&log, "4"));
    let err = clock.advance(5.0).unwrap_err();
    assert_eq!(err.message(), "boom");
    assert_eq!(*log.borrow(), ["1"]);
    assert_eq!(clock.seconds(), 5.0);
    assert_eq!(clock.delayed_call_count(), 2);
    assert!(!boom.active());
    assert_eq!(boom.cancel(), Err(DelayedCallError::AlreadyCalled));
    clock.advance(0.0).unwrap();
    assert_eq!(*log.borrow(), ["1", "3", "4"]);
}

// Twisted: task.Clock.advance (an exception raised by a call propagates);
// a Rust panic is that exception
#[test]
fn a_panicking_call_becomes_a_panic_error_failure_out_of_advance() {
    let clock = Clock::new();
    let log = new_log();
    clock.call_later(1.0, || -> Result<(), Failure> { panic!("timer panicked") });
    clock.call_later(1.0, append(&log, "after"));
    let err = clock.advance(1.0).unwrap_err();
    assert!(err.check::<PanicError>());
    assert_eq!(err.message(), "timer panicked");
    assert!(log.borrow().is_empty());
    clock.advance(0.0).unwrap();
    assert_eq!(*log.borrow(), ["after"]);
}

// Twisted: task.Clock.advance (a raising call; here through ReactorTime,
// whose TimedCall may fail)
#[test]
fn a_failure_returned_through_reactor_time_comes_out_of_advance() {
    let clock = Clock::new();
    let time: &dyn ReactorTime = &clock;
    time.call_later(1.0, Box::new(|| Err(Failure::msg("from a TimedCall"))));
    let err = clock.advance(3.0).unwrap_err();
    assert_eq!(err.message(), "from a TimedCall");
}

// Twisted: task.Clock.pump
#[test]
fn pump_advances_step_by_step_and_stops_at_the_first_failure() {
    let clock = Clock::new();
    let result = new_log();
    clock.call_later(1.5, logtime(&clock, &result, "a"));
    clock.call_later(2.0, || Err::<(), _>(Failure::msg("stop")));
    clock.call_later(2.5, logtime(&clock, &result, "b"));
    let err = clock.pump(&[1.0, 1.0, 1.0]).unwrap_err();
    assert_eq!(err.message(), "stop");
    assert_eq!(*result.borrow(), [("a", 2.0)]);
    assert_eq!(clock.seconds(), 2.0);
    clock.pump(&[]).unwrap();
    clock.pump(&[1.0]).unwrap();
    assert_eq!(*result.borrow(), [("a", 2.0), ("b", 3.0)]);
}

// Twisted: task: LoopTests.test_callbackTimeSkips (a call advancing its own
// clock)
#[test]
fn a_call_may_advance_the_clock_it_runs_on() {
    let clock = Clock::new();
    let result = new_log();
    let c = clock.clone();
    clock.call_later(1.0, move || c.advance(1.0));
    clock.call_later(1.5, logtime(&clock, &result, "inner"));
    clock.call_later(1.0, logtime(&clock, &result, "outer"));
    clock.advance(1.0).unwrap();
    // The nested advance ran everything due by 2.0, in order.
    assert_eq!(*result.borrow(), [("outer", 2.0), ("inner", 2.0)]);
    assert_eq!(clock.seconds(), 2.0);
}

// Twisted: task.Clock.rightNow (tests assign it)
#[test]
fn setting_right_now_moves_time_without_running_calls() {
    let clock = Clock::new();
    let log = new_log();
    clock.call_later(1.0, append(&log, "due"));
    clock.set_right_now(10.0).unwrap();
    assert_eq!(clock.seconds(), 10.0);
    assert!(log.borrow().is_empty());
    clock.advance(0.0).unwrap();
    assert_eq!(*log.borrow(), ["due"]);
}

// Twisted: none (Python sets the time to nan and never runs a call again;
// here advance refuses)
#[test]
fn advancing_to_a_time_that_is_not_a_number_is_refused() {
    let clock = Clock::new();
    let log = new_log();
    clock.call_later(1.0, append(&log, "x"));
    let err = clock.advance(f64::NAN).unwrap_err();
    let e = err.downcast_ref::<InvalidTimeError>().unwrap();
    assert_eq!(e.now, 0.0);
    assert!(e.requested.is_nan());
    assert_eq!(clock.seconds(), 0.0);
    clock.advance(f64::INFINITY).unwrap();
    assert_eq!(*log.borrow(), ["x"]);
    assert!(clock.advance(f64::NEG_INFINITY).is_err());
    assert_eq!(clock.seconds(), f64::INFINITY);
    assert!(clock.set_right_now(f64::NAN).is_err());
}

// Twisted: none (Python's sort gives a nan-time call no consistent place;
// here it is never due and delays nothing else)
#[test]
fn a_call_at_a_time_that_is_not_a_number_never_runs_and_blocks_nothing() {
    let clock = Clock::new();
    let log = new_log();
    let nan = clock.call_later(f64::NAN, append(&log, "nan"));
    clock.call_later(1.0, append(&log, "a"));
    let b = clock.call_later(2.0, append(&log, "b"));
    b.delay(f64::NAN).unwrap();
    clock.advance(f64::INFINITY).unwrap();
    assert_eq!(*log.borrow(), ["a"]);
    assert!(nan.active());
    assert!(nan.get_time().is_nan());
    assert_eq!(clock.delayed_call_count(), 2);
    nan.cancel().unwrap();
    b.cancel().unwrap();
}

// Twisted: task.Clock with an infinite delay (due only once the clock is
// infinite)
#[test]
fn an_infinite_delay_is_due_only_at_infinity() {
    let clock = Clock::new();
    let log = new_log();
    clock.call_later(f64::INFINITY, append(&log, "inf"));
    clock.advance(1e308).unwrap();
    assert!(log.borrow().is_empty());
    clock.advance(f64::INFINITY).unwrap();
    assert_eq!(*log.borrow(), ["inf"]);
}

// Twisted: DelayedCall.cancel (`del self.func`: a cancelled call lets go of
// its function at once)
#[test]
fn cancel_drops_the_function_at_once() {
    struct Probe(Rc<Cell<bool>>);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let clock = Clock::new();
    let dropped = Rc::new(Cell::new(false));
    let probe = Probe(dropped.clone());
    let call = clock.call_later(1.0, move || drop(probe));
    assert!(!dropped.get());
    call.cancel().unwrap();
    assert!(dropped.get());
}

// Twisted: none (Rust memory: dropping the clock drops the functions that
// can no longer run; their DelayedCalls still answer)
#[test]
fn dropping_the_clock_drops_pending_functions_and_calls_still_answer() {
    let clock = Clock::new();
    let dropped = Rc::new(Cell::new(0));
    struct Probe(Rc<Cell<i32>>);
    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let p1 = Probe(dropped.clone());
    let p2 = Probe(dropped.clone());
    let a = clock.call_later(1.0, move || drop(p1));
    let b = clock.call_later(2.0, move || drop(p2));
    clock.advance(3.0).unwrap();
    assert_eq!(dropped.get(), 2);
    let p3 = Probe(dropped.clone());
    let c = clock.call_later(1.0, move || drop(p3));
    drop(clock);
    assert_eq!(dropped.get(), 3);
    assert!(!a.active() && !b.active());
    assert!(c.active());
    assert_eq!(c.get_time(), 4.0);
    c.reset(1.0).unwrap();
    assert_eq!(c.get_time(), 4.0);
    c.cancel().unwrap();
    assert_eq!(c.cancel(), Err(DelayedCallError::AlreadyCancelled));
}

// Twisted: none (scale: a binary heap with lazy deletion; schedule, cancel
// and fire are O(log n))
#[test]
fn a_million_pending_calls_are_scheduled_cancelled_and_fired_in_order() {
    const N: usize = 1_000_000;
    let started = Instant::now();
    let clock = Clock::new();
    let fired = Rc::new(RefCell::new(Vec::with_capacity(N / 2)));
    let mut calls = Vec::with_capacity(N);
    for i in 0..N {
        let f = fired.clone();
        // due times 0..1000 in a scrambled order, many equal
        let due = ((i * 7919) % 1000) as f64;
        calls.push(clock.call_later(due, move || f.borrow_mut().push(i)));
    }
    assert_eq!(clock.delayed_call_count(), N);
    for call in calls.iter().skip(1).step_by(2) {
        call.cancel().unwrap();
    }
    assert_eq!(clock.delayed_call_count(), N / 2);
    clock.advance(999.0).unwrap();
    assert_eq!(clock.delayed_call_count(), 0);
    let fired = fired.borrow();
    assert_eq!(fired.len(), N / 2);
    // by due time, then in the order scheduled
    let key = |i: usize| ((i * 7919) % 1000, i);
    assert!(fired.windows(2).all(|w| key(w[0]) < key(w[1])));
    assert!(fired.iter().all(|i| i % 2 == 0));
    assert!(calls.iter().all(|c| !c.active()));
    let elapsed = started.elapsed();
    assert!(elapsed.as_secs() < 30, "took {elapsed:?}");
}

// Twisted: none (scale: many resets and delays keep Twisted's order; the
// stale heap entries they leave are swept)
#[test]
fn many_resets_keep_order_and_the_clock_stays_small() {
    let clock = Clock::new();
    let fired = new_log();
    let calls: Vec<DelayedCall> = (0..10_000)
        .map(|i| {
            let f = fired.clone();
            clock.call_later(1.0, move || f.borrow_mut().push(i))
        })
        .collect();
    // Every call moved to 5 and back to 2, with a sort in between each time:
    // each arrives at 2 from later, so they end in the order of the moves.
    for round in 0..3 {
        for call in calls.iter().rev() {
            call.reset(5.0 + round as f64).unwrap();
            clock.call_later(100.0, || {}).cancel().unwrap();
            call.reset(2.0).unwrap();
            clock.call_later(100.0, || {}).cancel().unwrap();
        }
    }
    clock.advance(2.0).unwrap();
    let expected: Vec<usize> = (0..10_000).rev().collect();
    assert_eq!(*fired.borrow(), expected);
}

// Twisted: DelayedCall's IDelayedCall interface through the core's handle
#[test]
fn delayed_call_debug_shows_time_and_activity() {
    let clock = Clock::new();
    let call = clock.call_later(1.5, || {});
    assert_eq!(
        format!("{call:?}"),
        "DelayedCall { time: 1.5, active: true }"
    );
    call.cancel().unwrap();
    assert_eq!(
        format!("{call:?}"),
        "DelayedCall { time: 1.5, active: false }"
    );
    assert_eq!(
        format!("{clock:?}"),
        "Clock { seconds: 0.0, delayed_calls: 0 }"
    );
}
