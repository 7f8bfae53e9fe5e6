//! Synapse's `ObservableDeferred` and `observe_deferred`
//! (`twisted_compat::observable`): behaviours 1–11 and 66 of
//! `synapse_semantics.md` (2.1 and 2.7). Behaviour 12 (no logging-context
//! handling) has nothing to test beyond "observers run where the origin
//! fires", which every test here relies on.
//!
//! Citations: `TAH` is Synapse's `tests/util/test_async_helpers.py`;
//! "experiment (item N)" is a check run against Synapse 1.163.2.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Once;

use twisted_compat::{
    AbstractObservableDeferred, AlreadyCalledError, CancelledError, Deferred, Failure,
    NoResultError, ObservableDeferred, observe_deferred,
};
use twisted_deferred::{AnyValue, capture_unhandled_errors};

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

/// A callback that records `(tag, value)` and passes the value on.
fn record(
    log: &Log<(&'static str, i32)>,
    tag: &'static str,
) -> impl FnOnce(i32) -> Result<i32, Failure> + 'static {
    let log = log.clone();
    move |v| {
        log.borrow_mut().push((tag, v));
        Ok(v)
    }
}

/// True when `d` holds a `CancelledError` failure.
fn holds_cancelled_error<T: Clone + 'static>(d: &Deferred<T>) -> bool {
    d.result()
        .failure()
        .is_some_and(|f| f.check::<CancelledError>())
}

/// Handles whatever failure `d` holds, so that dropping it reports nothing.
fn handle<T: 'static>(d: &Deferred<T>) {
    d.cast::<()>().add_errback(|_| Ok(()));
}

// ---------------------------------------------------------------------------
// Capturing what the crate logs, per thread (Synapse's `logger.exception`).

struct ThreadLogger;

thread_local! {
    static LOGGED: RefCell<Option<Vec<(log::Level, String)>>> = const { RefCell::new(None) };
}

impl log::Log for ThreadLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let _ = LOGGED.try_with(|l| {
            if let Some(records) = l.borrow_mut().as_mut() {
                records.push((record.level(), record.args().to_string()));
            }
        });
    }

    fn flush(&self) {}
}

static LOGGER: ThreadLogger = ThreadLogger;

fn capture_logs<R>(f: impl FnOnce() -> R) -> (R, Vec<(log::Level, String)>) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&LOGGER).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
    LOGGED.with(|l| *l.borrow_mut() = Some(Vec::new()));
    let result = f();
    let records = LOGGED.with(|l| l.borrow_mut().take()).unwrap_or_default();
    (result, records)
}

// ---------------------------------------------------------------------------
// 1. Constructor hooks

// Synapse: experiment (item 1)
#[test]
fn constructor_hooks_run_before_callbacks_added_to_the_origin_later() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let observer = od.observe();
    let seen = Rc::new(Cell::new(None));
    let (s, o, od2) = (seen.clone(), observer.clone(), od.clone());
    origin.add_callback(move |v: i32| {
        // By now the observable has recorded the value and notified.
        s.set(Some((v, o.called(), od2.has_called())));
        Ok(v + 1)
    });
    origin.callback(7).unwrap();
    assert_eq!(seen.get(), Some((7, true, true)));
    assert_eq!(observer.result().value(), Some(7));
    assert_eq!(origin.result().value(), Some(8));
}

// Synapse: experiment (item 1)
#[test]
fn callbacks_added_before_the_constructor_decide_what_observers_see() {
    let origin: Deferred<i32> = Deferred::new();
    let origin = origin.add_callback(|v: i32| Ok(v * 10));
    let od = ObservableDeferred::new(origin.clone(), false);
    let observer = od.observe();
    origin.callback(4).unwrap();
    assert_eq!(observer.result().value(), Some(40));
    assert_eq!(od.get_result().unwrap().ok(), Some(40));
}

// ---------------------------------------------------------------------------
// 2. observe() before resolution

// Synapse: TAH::ObservableDeferredTest.test_succeed
#[test]
fn observe_before_resolution_returns_a_new_pending_deferred_each_time() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let (a, b) = (od.observe(), od.observe());
    assert!(!a.ptr_eq(&b));
    assert!(!a.ptr_eq(&origin) && !b.ptr_eq(&origin));
    assert!(!a.called() && !b.called());
    let observers = od.observers();
    assert_eq!(observers.len(), 2);
    assert!(observers[0].ptr_eq(&a) && observers[1].ptr_eq(&b));
}

// ---------------------------------------------------------------------------
// 3. Origin success

// Synapse: TAH::ObservableDeferredTest.test_succeed
#[test]
fn success_reaches_every_observer_in_registration_order() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let (observer1, observer2) = (od.observe(), od.observe());
    assert!(!observer1.called() && !observer2.called());
    // check the first observer is called first
    let o2 = observer2.clone();
    let first = Rc::new(Cell::new(None));
    let f = first.clone();
    observer1.add_both(move |r: Result<i32, Failure>| {
        f.set(Some(o2.called()));
        r
    });
    let log = new_log();
    observer1.add_callback(record(&log, "observer1"));
    observer2.add_callback(record(&log, "observer2"));
    origin.callback(123).unwrap();
    assert_eq!(first.get(), Some(false), "observer 2 was called first");
    assert_eq!(*log.borrow(), [("observer1", 123), ("observer2", 123)]);
}

// Synapse: experiment (item 3)
#[test]
fn the_origin_chain_carries_on_with_the_value_unchanged() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let observer = od.observe();
    observer.add_callback(|v: i32| Ok(v + 1));
    let log = new_log();
    origin.add_callback(record(&log, "origin"));
    origin.callback(5).unwrap();
    assert_eq!(*log.borrow(), [("origin", 5)]);
    assert_eq!(origin.result().value(), Some(5));
    assert_eq!(observer.result().value(), Some(6));
}

// Synapse: experiment (item 3)
#[test]
fn the_observer_list_is_detached_before_anyone_is_notified() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let first = od.observe();
    let second = od.observe();
    let during = Rc::new(RefCell::new(None));
    let (d, od2) = (during.clone(), od.clone());
    first.add_callback(move |v: i32| {
        // Observers added during notification get a fired Deferred.
        let late = od2.observe();
        *d.borrow_mut() = Some((
            od2.observers().len(),
            od2.has_observers(),
            od2.has_called(),
            late.result().value(),
        ));
        Ok(v)
    });
    origin.callback(9).unwrap();
    assert_eq!(*during.borrow(), Some((0, false, true, Some(9))));
    assert_eq!(second.result().value(), Some(9));
}

// Synapse: experiment (item 3)
#[test]
fn observers_are_notified_synchronously_inside_the_origin_callback() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let observer = od.observe();
    let log = new_log();
    observer.add_callback(record(&log, "observer"));
    origin.callback(1).unwrap();
    // Fired before callback() returned.
    assert_eq!(*log.borrow(), [("observer", 1)]);
}

// ---------------------------------------------------------------------------
// 4. Origin failure

// Synapse: TAH::ObservableDeferredTest.test_failure
#[test]
fn failure_reaches_every_observer_as_the_same_failure_object() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), true);
    let (observer1, observer2) = (od.observe(), od.observe());
    let o2 = observer2.clone();
    let first = Rc::new(Cell::new(None));
    let f = first.clone();
    observer1.add_both(move |r: Result<i32, Failure>| {
        f.set(Some(o2.called()));
        r
    });
    let results: Log<Failure> = new_log();
    for observer in [&observer1, &observer2] {
        let r = results.clone();
        observer.add_errback(move |f: Failure| {
            r.borrow_mut().push(f);
            Ok(0)
        });
    }
    let gah = Failure::msg("gah!");
    origin.errback(gah.clone()).unwrap();
    assert_eq!(first.get(), Some(false));
    let results = results.borrow();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].message(), "gah!");
    assert!(Failure::ptr_eq(&results[0], &gah));
    assert!(Failure::ptr_eq(&results[1], &gah));
}

// Synapse: experiment (item 4)
#[test]
fn consume_errors_leaves_none_on_the_origin() {
    let ((), reports) = capture_unhandled_errors(|| {
        let origin: Deferred<i32> = Deferred::new();
        let od = ObservableDeferred::new(origin.clone(), true);
        let observer = od.observe();
        origin.errback(Failure::msg("consumed")).unwrap();
        assert_eq!(origin.cast::<()>().result().value(), Some(()));
        assert_eq!(
            observer.result().failure().map(|f| f.message()),
            Some("consumed".to_owned())
        );
        handle(&observer);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

// Synapse: experiment (item 4)
#[test]
fn without_consume_errors_the_origin_keeps_the_failure() {
    let ((), reports) = capture_unhandled_errors(|| {
        let origin: Deferred<i32> = Deferred::new();
        let od = ObservableDeferred::new(origin.clone(), false);
        let observer = od.observe();
        let f = Failure::msg("kept");
        origin.errback(f.clone()).unwrap();
        assert!(Failure::ptr_eq(&origin.result().failure().unwrap(), &f));
        handle(&observer);
    });
    // The origin's chain ends on the failure: reported once, by the origin.
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].message(), "kept");
}

// ---------------------------------------------------------------------------
// 5. Observers are isolated

// Synapse: experiment (item 5)
#[test]
fn a_failure_in_an_observer_callback_stays_in_that_observer() {
    let ((), reports) = capture_unhandled_errors(|| {
        let origin: Deferred<i32> = Deferred::new();
        let od = ObservableDeferred::new(origin.clone(), false);
        let (a, b) = (od.observe(), od.observe());
        a.add_callback(|_: i32| -> Result<i32, Failure> { Err(Failure::msg("a broke")) });
        let c = od.observe();
        c.add_callback(|_: i32| -> Result<i32, Failure> { panic!("c panicked") });
        origin.callback(2).unwrap();
        assert_eq!(a.result().failure().unwrap().message(), "a broke");
        assert_eq!(b.result().value(), Some(2));
        assert_eq!(c.result().failure().unwrap().message(), "c panicked");
        assert_eq!(origin.result().value(), Some(2));
        assert!(od.has_succeeded());
    });
    let mut messages: Vec<String> = reports.iter().map(Failure::message).collect();
    messages.sort();
    assert_eq!(messages, ["a broke", "c panicked"]);
}

// Synapse: experiment (item 5); FORMAT.md `observe`
#[test]
fn an_observer_fired_by_hand_is_skipped_and_the_error_logged() {
    let (((), reports), logs) = capture_logs(|| {
        capture_unhandled_errors(|| {
            let origin: Deferred<&str> = Deferred::new();
            let od = ObservableDeferred::new(origin.clone(), false);
            let (a, b) = (od.observe(), od.observe());
            a.callback("mine").unwrap();
            // The AlreadyCalledError of a.callback is logged, not raised.
            assert!(origin.callback("theirs").is_ok());
            assert_eq!(a.result().value(), Some("mine"));
            assert_eq!(b.result().value(), Some("theirs"));
            assert_eq!(origin.result().value(), Some("theirs"));
        })
    });
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].0, log::Level::Error);
    assert!(
        logs[0].1.contains("threw an exception on .callback"),
        "{}",
        logs[0].1
    );
    assert!(logs[0].1.contains("ignoring"), "{}", logs[0].1);
}

// Synapse: experiment (item 5)
#[test]
fn an_observer_errbacked_by_hand_is_skipped_on_failure_too() {
    let (((), reports), logs) = capture_logs(|| {
        capture_unhandled_errors(|| {
            let origin: Deferred<i32> = Deferred::new();
            let od = ObservableDeferred::new(origin.clone(), true);
            let (a, b) = (od.observe(), od.observe());
            a.errback(Failure::msg("by hand")).unwrap();
            origin.errback(Failure::msg("origin")).unwrap();
            assert_eq!(a.result().failure().unwrap().message(), "by hand");
            assert_eq!(b.result().failure().unwrap().message(), "origin");
            handle(&a);
            handle(&b);
        })
    });
    assert!(reports.is_empty(), "{reports:?}");
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert!(
        logs[0].1.contains("threw an exception on .errback"),
        "{}",
        logs[0].1
    );
}

// Synapse: experiment (item 5)
#[test]
fn an_observer_cancelled_during_notification_gets_cancelled_error_and_is_skipped() {
    let (((), reports), logs) = capture_logs(|| {
        capture_unhandled_errors(|| {
            let origin: Deferred<i32> = Deferred::new();
            let od = ObservableDeferred::new(origin.clone(), false);
            let (a, b, c) = (od.observe(), od.observe(), od.observe());
            let c2 = c.clone();
            a.add_callback(move |v: i32| {
                // The list is detached: the canceller finds a result and
                // leaves; then the cancel errbacks c.
                c2.cancel()?;
                Ok(v)
            });
            origin.callback(5).unwrap();
            assert_eq!(a.result().value(), Some(5));
            assert_eq!(b.result().value(), Some(5));
            assert!(holds_cancelled_error(&c));
            handle(&c);
        })
    });
    assert!(reports.is_empty(), "{reports:?}");
    // c's delivery raised AlreadyCalledError (it has a canceller, so nothing
    // swallows the late callback): logged.
    assert_eq!(logs.len(), 1, "{logs:?}");
}

// ---------------------------------------------------------------------------
// 6, 7. Cancelling an observer

// Synapse: TAH::ObservableDeferredTest.test_cancellation_observer
#[test]
fn cancelling_an_observer_before_resolution_fails_it_alone() {
    let origin_cancelled = Rc::new(Cell::new(false));
    let oc = origin_cancelled.clone();
    let origin: Deferred<i32> = Deferred::with_canceller(move |_d: &Deferred<i32>| oc.set(true));
    let od = ObservableDeferred::new(origin.clone(), true);
    let (observer1, observer2, observer3) = (od.observe(), od.observe(), od.observe());
    assert!(!observer1.called() && !observer2.called() && !observer3.called());

    observer2.cancel().unwrap();
    assert!(!observer1.called());
    assert!(holds_cancelled_error(&observer2));
    assert!(!observer3.called());
    assert!(!origin.called() && !origin_cancelled.get());
    let left = od.observers();
    assert_eq!(left.len(), 2);
    assert!(left[0].ptr_eq(&observer1) && left[1].ptr_eq(&observer3));

    // other observers resolve as normal
    origin.callback(123).unwrap();
    assert_eq!(observer1.result().value(), Some(123));
    assert_eq!(observer3.result().value(), Some(123));
    assert!(holds_cancelled_error(&observer2));
    // additional observers resolve as normal
    let observer4 = od.observe();
    assert_eq!(observer4.result().value(), Some(123));
    handle(&observer2);
}

// Synapse: experiment (item 7)
#[test]
fn cancelling_an_observer_after_resolution_does_nothing() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let early = od.observe();
    origin.callback(3).unwrap();
    let late = od.observe();
    early.cancel().unwrap();
    late.cancel().unwrap();
    assert_eq!(early.result().value(), Some(3));
    assert_eq!(late.result().value(), Some(3));
    assert_eq!(origin.result().value(), Some(3));
}

// Synapse: experiment (item 6)
#[test]
fn cancelling_every_observer_empties_the_list() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let observers: Vec<Deferred<i32>> = (0..5).map(|_| od.observe()).collect();
    for (i, o) in observers.iter().enumerate().rev() {
        o.cancel().unwrap();
        assert_eq!(od.observers().len(), i);
        handle(o);
    }
    assert!(!od.has_observers());
    origin.callback(1).unwrap();
    assert!(observers.iter().all(|o| o.result().value().is_none()));
}

// ---------------------------------------------------------------------------
// 8. Cancelling the origin

// Synapse: TAH::ObservableDeferredTest.test_cancellation_observee
#[test]
fn cancelling_the_origin_fails_every_pending_observer() {
    let ((), reports) = capture_unhandled_errors(|| {
        let origin: Deferred<i32> = Deferred::new();
        let od = ObservableDeferred::new(origin.clone(), true);
        let (a, b) = (od.observe(), od.observe());
        origin.cancel().unwrap();
        assert!(holds_cancelled_error(&a));
        assert!(holds_cancelled_error(&b));
        assert!(od.has_called());
        assert!(!od.has_succeeded());
        assert!(
            od.get_result()
                .unwrap()
                .unwrap_err()
                .check::<CancelledError>()
        );
        // consumeErrors: the origin's own result is None.
        assert_eq!(origin.cast::<()>().result().value(), Some(()));
    });
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|f| f.check::<CancelledError>()));
}

// Synapse: experiment (item 8, delegation)
#[test]
fn cancelling_through_the_observable_cancels_the_origin() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let a = od.observe();
    od.cancel().unwrap(); // od.cancel(), delegated
    assert!(origin.called());
    assert!(holds_cancelled_error(&origin));
    assert!(holds_cancelled_error(&a));
    assert!(!od.has_succeeded());
    handle(&a);
    handle(&origin);
}

// ---------------------------------------------------------------------------
// 9. observe() after resolution

// Synapse: TAH::ObservableDeferredTest.test_cancellation_observer ("observer4")
#[test]
fn observe_after_success_returns_a_new_fired_deferred_each_time() {
    let origin: Deferred<String> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    origin.callback("v".to_owned()).unwrap();
    let (x, y) = (od.observe(), od.observe());
    assert!(!x.ptr_eq(&y));
    assert_eq!(x.result().value().as_deref(), Some("v"));
    assert_eq!(y.result().value().as_deref(), Some("v"));
    // Each is independent: a callback on one does not affect the other.
    x.add_callback(|s: String| Ok(s + "!"));
    assert_eq!(x.result().value().as_deref(), Some("v!"));
    assert_eq!(y.result().value().as_deref(), Some("v"));
}

// Synapse: experiment (item 9)
#[test]
fn observe_after_failure_gives_the_same_failure_each_reported_if_unhandled() {
    let f = Failure::msg("stored");
    let ((), reports) = capture_unhandled_errors(|| {
        let origin: Deferred<i32> = Deferred::new();
        let od = ObservableDeferred::new(origin.clone(), true);
        origin.errback(f.clone()).unwrap();
        let (x, y) = (od.observe(), od.observe());
        assert!(!x.ptr_eq(&y));
        assert!(Failure::ptr_eq(&x.result().failure().unwrap(), &f));
        assert!(Failure::ptr_eq(&y.result().failure().unwrap(), &f));
    });
    // Two late observers nobody handled; the origin consumed its own.
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| Failure::ptr_eq(r, &f)));
}

// ---------------------------------------------------------------------------
// 10. Introspection

// Synapse: TAH::ObservableDeferredTest.test_cancellation_observer; experiment (item 10)
#[test]
fn introspection_follows_the_origin() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    assert!(!od.has_observers());
    assert!(!od.has_called());
    assert!(!od.has_succeeded());
    assert_eq!(od.get_result().unwrap_err(), NoResultError);
    let a = od.observe();
    assert!(od.has_observers());
    assert_eq!(od.observers().len(), 1);
    origin.callback(11).unwrap();
    assert!(!od.has_observers());
    assert!(od.observers().is_empty());
    assert!(od.has_called());
    assert!(od.has_succeeded());
    assert_eq!(od.get_result().unwrap().ok(), Some(11));
    assert_eq!(a.result().value(), Some(11));
}

// Synapse: experiment (item 10)
#[test]
fn get_result_before_resolution_raises_in_a_callback() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin, false);
    // `od.get_result()` raising ValueError inside a callback: `?` fails it.
    let d = twisted_deferred::succeed(0).add_callback(move |_: i32| od.get_result()?);
    let f = d.result().failure().unwrap();
    assert!(f.check::<NoResultError>());
    assert_eq!(f.message(), "ObservableDeferred has no result yet");
    handle(&d);
}

// ---------------------------------------------------------------------------
// 11. Attribute delegation

// Synapse: experiment (item 11)
#[test]
fn the_observable_delegates_to_the_origin() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    assert!(od.deferred().ptr_eq(&origin));
    let later = od.add_callback(|v: i32| Ok(v * 2)); // od.addCallback(...)
    assert!(later.ptr_eq(&origin));
    assert!(!od.called());
    let observer = od.observe();
    origin.callback(21).unwrap();
    assert!(od.called()); // od.called
    assert_eq!(od.result().value(), Some(42));
    // The observer got the value before the later callback doubled it.
    assert_eq!(observer.result().value(), Some(21));
}

// Synapse: AbstractObservableDeferred (the consumer interface)
#[test]
fn the_consumer_interface_observes() {
    let origin: Deferred<AnyValue> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let consumer: &dyn AbstractObservableDeferred<AnyValue> = &od;
    let d = consumer.observe();
    assert!(consumer.has_observers());
    origin.callback(AnyValue::new(5u8)).unwrap();
    assert!(!consumer.has_observers());
    assert_eq!(d.result().value().unwrap().downcast_ref::<u8>(), Some(&5));
}

// Synapse: ObservableDeferred.__repr__
#[test]
fn debug_shows_the_result_and_the_origin() {
    let origin: Deferred<i32> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let before = format!("{od:?}");
    assert!(
        before.starts_with("<ObservableDeferred object at 0x"),
        "{before}"
    );
    assert!(
        before.contains("result=None, _deferred=<Deferred at 0x"),
        "{before}"
    );
    origin.callback(3).unwrap();
    let after = format!("{od:?}");
    assert!(after.contains("result=(True, 3)"), "{after}");
    assert!(after.ends_with("current result: 3>>"), "{after}");
}

// ---------------------------------------------------------------------------
// Many observers

// Synapse: experiment (items 2, 3, 6): notification is a loop, not a recursion
#[test]
fn a_hundred_thousand_observers_are_notified_in_order_without_recursion() {
    // A small stack: a recursive notification would overflow it.
    let handle = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            const N: usize = 100_000;
            let origin: Deferred<i32> = Deferred::new();
            let od = ObservableDeferred::new(origin.clone(), false);
            let order = Rc::new(RefCell::new(Vec::with_capacity(N)));
            let observers: Vec<Deferred<i32>> = (0..N)
                .map(|i| {
                    let d = od.observe();
                    let order = order.clone();
                    d.add_callback(move |v: i32| {
                        order.borrow_mut().push(i);
                        Ok(v + 1)
                    });
                    d
                })
                .collect();
            // Every third observer is cancelled first (and leaves the list).
            for d in observers.iter().step_by(3) {
                d.cancel().unwrap();
                d.add_errback(|_| Ok(-1));
            }
            assert_eq!(od.observers().len(), N - N.div_ceil(3));
            origin.callback(41).unwrap();
            let order = order.borrow();
            let expected: Vec<usize> = (0..N).filter(|i| i % 3 != 0).collect();
            assert_eq!(*order, expected);
            for (i, d) in observers.iter().enumerate() {
                let want = if i % 3 == 0 { -1 } else { 42 };
                assert_eq!(d.result().value(), Some(want), "observer {i}");
            }
            assert_eq!(origin.result().value(), Some(41));
        })
        .unwrap();
    handle.join().unwrap();
}

// ---------------------------------------------------------------------------
// 66. observe_deferred

// Synapse: experiment (item 66)
#[test]
fn observe_deferred_mirrors_a_value_and_leaves_it_in_place() {
    let d: Deferred<i32> = Deferred::new();
    let mirror = observe_deferred(&d);
    assert!(!mirror.ptr_eq(&d));
    let log = new_log();
    d.add_callback(record(&log, "d"));
    d.callback(6).unwrap();
    assert_eq!(mirror.result().value(), Some(6));
    assert_eq!(d.result().value(), Some(6));
    assert_eq!(*log.borrow(), [("d", 6)]);
}

// Synapse: experiment (item 66)
#[test]
fn observe_deferred_leaves_a_failure_unhandled_on_the_source() {
    let f = Failure::msg("both");
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<i32> = Deferred::new();
        let mirror = observe_deferred(&d);
        d.errback(f.clone()).unwrap();
        assert!(Failure::ptr_eq(&mirror.result().failure().unwrap(), &f));
        assert!(Failure::ptr_eq(&d.result().failure().unwrap(), &f));
    });
    // Reported by the source and by the mirror.
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| Failure::ptr_eq(r, &f)));
}

// Synapse: experiment (item 66)
#[test]
fn cancelling_an_observe_deferred_mirror_does_not_touch_the_source() {
    let ((), reports) = capture_unhandled_errors(|| {
        let cancelled = Rc::new(Cell::new(false));
        let c = cancelled.clone();
        let d: Deferred<i32> = Deferred::with_canceller(move |_d: &Deferred<i32>| c.set(true));
        let mirror = observe_deferred(&d);
        mirror.cancel().unwrap();
        assert!(holds_cancelled_error(&mirror));
        assert!(!cancelled.get() && !d.called());
        // The source's later result is dropped for the mirror.
        d.callback(2).unwrap();
        assert_eq!(d.result().value(), Some(2));
        assert!(holds_cancelled_error(&mirror));
        handle(&mirror);
    });
    assert!(reports.is_empty(), "{reports:?}");
}

// Synapse: experiment (item 66; observe_deferred calls new_deferred.callback)
#[test]
fn observe_deferred_of_a_mirror_fired_by_hand_fails_the_source() {
    let ((), reports) = capture_unhandled_errors(|| {
        let d: Deferred<i32> = Deferred::new();
        let mirror = observe_deferred(&d);
        mirror.callback(1).unwrap();
        d.callback(2).unwrap();
        assert_eq!(mirror.result().value(), Some(1));
        assert!(d.result().failure().unwrap().check::<AlreadyCalledError>());
        handle(&d);
    });
    assert!(reports.is_empty(), "{reports:?}");
}
