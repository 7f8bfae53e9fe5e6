//! `DeferredQueue`: `put` handing items to waiting gets inside `put()`,
//! stored items, the `size`/`backlog` limits (`QueueOverflow`,
//! `QueueUnderflow`), and cancelling gets.
//!
//! Twisted behaviours covered: B137, B138 (catalogue section 2.16), pitfall
//! P-23, experiment E15 (part 4) and section 3.2 (`QueueOverflow()`,
//! `QueueUnderflow()`). Cases marked "experiment" were checked against
//! Twisted 26.10.0 by hand; the Python output is quoted next to each.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use twisted_deferred::{
    AlreadyCalledError, AnyValue, CancelledError, Deferred, DeferredQueue, Failure, Outcome,
    QueueOverflow, QueueUnderflow, State, capture_unhandled_errors, ensure_deferred,
};

type Log<T> = Rc<RefCell<Vec<T>>>;

fn new_log<T>() -> Log<T> {
    Rc::new(RefCell::new(Vec::new()))
}

/// `d.addCallback(gotten.append)`.
fn append_to<T: 'static>(log: &Log<T>) -> impl FnOnce(T) -> Result<(), Failure> + 'static {
    let log = log.clone();
    move |v| {
        log.borrow_mut().push(v);
        Ok(())
    }
}

/// Handles a Deferred's failure, so that dropping it reports nothing.
fn consume<T: 'static>(d: &Deferred<T>) {
    d.as_any().add_errback(|_| Ok(AnyValue::new(())));
}

fn is_cancelled<T: Clone + 'static>(d: &Deferred<T>) -> bool {
    matches!(d.result(), State::Failure(f) if f.check::<CancelledError>())
}

// Twisted: OtherPrimitivesTests.testQueue, ported step by step
#[test]
fn test_queue() {
    const N: usize = 2;
    const M: usize = 2;
    let queue: DeferredQueue<usize> = DeferredQueue::with_limits(Some(N), Some(M));

    let gotten = new_log();
    for _ in 0..M {
        queue.get().unwrap().add_callback(append_to(&gotten));
    }
    assert!(queue.get().unwrap_err().check::<QueueUnderflow>());

    for i in 0..M {
        queue.put(i).unwrap();
        assert_eq!(*gotten.borrow(), (0..=i).collect::<Vec<_>>());
    }
    for i in 0..N {
        queue.put(N + i).unwrap();
        assert_eq!(*gotten.borrow(), (0..M).collect::<Vec<_>>());
    }
    assert!(queue.put(0).unwrap_err().check::<QueueOverflow>());

    let gotten = new_log();
    for i in 0..N {
        queue.get().unwrap().add_callback(append_to(&gotten));
        assert_eq!(*gotten.borrow(), (N..=N + i).collect::<Vec<_>>());
    }

    let queue: DeferredQueue<usize> = DeferredQueue::new();
    let gotten = new_log();
    for _ in 0..N {
        queue.get().unwrap().add_callback(append_to(&gotten));
    }
    for i in 0..N {
        queue.put(i).unwrap();
    }
    assert_eq!(*gotten.borrow(), (0..N).collect::<Vec<_>>());

    let queue: DeferredQueue<()> = DeferredQueue::with_limits(Some(0), None);
    assert!(queue.put(()).unwrap_err().check::<QueueOverflow>());

    let queue: DeferredQueue<()> = DeferredQueue::with_limits(None, Some(0));
    assert!(queue.get().unwrap_err().check::<QueueUnderflow>());
}

// Twisted: OtherPrimitivesTests.test_cancelQueueAfterSynchronousGet
#[test]
fn cancel_queue_after_synchronous_get_has_no_effect() {
    let queue: DeferredQueue<()> = DeferredQueue::new();
    let d = queue.get().unwrap();
    let errbacks = Rc::new(Cell::new(0));
    let e = errbacks.clone();
    d.add_errback(move |f: Failure| {
        e.set(e.get() + 1);
        Err(f)
    });
    queue.put(()).unwrap();
    d.cancel().unwrap();
    assert_eq!(errbacks.get(), 0, "Unexpected errback call!");
    assert_eq!(d.result().value(), Some(()));

    // A get served from stored items is already fired: cancel is a no-op too.
    queue.put(()).unwrap();
    let d = queue.get().unwrap();
    d.cancel().unwrap();
    assert_eq!(d.result().value(), Some(()));
}

// Twisted: OtherPrimitivesTests.test_cancelQueueAfterGet
#[test]
fn cancel_queue_after_get_fails_with_cancelled_error_and_forgets_the_get() {
    let queue: DeferredQueue<()> = DeferredQueue::new();
    let d = queue.get().unwrap();
    d.cancel().unwrap();
    // assertImmediateFailure(d, CancelledError)
    let failures = new_log();
    let sink = failures.clone();
    d.add_errback(move |f: Failure| {
        sink.borrow_mut().push(f);
        Ok(())
    });
    assert_eq!(failures.borrow().len(), 1);
    assert!(failures.borrow()[0].check::<CancelledError>());

    // cb: "If the deferred is still linked with the deferred queue, it will
    // fail with an AlreadyCalledError"
    let q = queue.clone();
    let d = d.add_callback(move |()| -> Outcome<()> {
        if let Err(f) = q.put(()) {
            return f.into();
        }
        match q.get() {
            // queue.get().addCallback(self.assertIs, None): the type says None
            Ok(g) => g.add_callback(|(): ()| Ok(())).into(),
            Err(f) => f.into(),
        }
    });
    let done = new_log();
    d.add_both(append_to(&done));
    assert_eq!(done.borrow().len(), 1);
    assert!(done.borrow()[0].is_ok(), "{:?}", done.borrow()[0]);
    assert_eq!(queue.pending_len(), 0);
    assert_eq!(queue.waiting(), 0);
}

// Twisted: B137; experiment E15 part 4, step by step
// ("4 queue get on empty: unfired" ... "get with pending item: 'y'")
#[test]
fn queue_with_size_and_backlog_limits() {
    let q = DeferredQueue::with_limits(Some(1), Some(1));
    let g1 = q.get().unwrap();
    assert!(!g1.called());
    let err = q.get().unwrap_err();
    assert!(err.check::<QueueUnderflow>(), "second get over backlog");
    q.put("x").unwrap();
    assert_eq!(
        g1.result().value(),
        Some("x"),
        "put hands directly to waiter"
    );
    assert!(q.pending().is_empty());
    q.put("y").unwrap();
    assert!(
        q.put("z").unwrap_err().check::<QueueOverflow>(),
        "put over size"
    );
    assert_eq!(q.pending(), ["y"]);
    let g2 = q.get().unwrap();
    assert_eq!(g2.result().value(), Some("y"), "get with pending item");
    assert!(q.pending().is_empty());
}

// Twisted: pitfall P-23 ([('getter runs inside put()', 1), 'put returned'])
#[test]
fn put_runs_the_getters_callbacks_inside_put() {
    let q = DeferredQueue::new();
    let log: Log<String> = new_log();
    let l = log.clone();
    q.get().unwrap().add_callback(move |v: i32| {
        l.borrow_mut().push(format!("getter runs inside put() {v}"));
        Ok(())
    });
    log.borrow_mut().push("put start".into());
    q.put(1).unwrap();
    log.borrow_mut().push("put returned".into());
    assert_eq!(
        *log.borrow(),
        ["put start", "getter runs inside put() 1", "put returned"]
    );
}

// Twisted: B137 (the oldest waiting get; the oldest stored item)
#[test]
fn gets_and_items_are_served_first_come_first_served() {
    let q = DeferredQueue::new();
    let gotten: Log<(char, i32)> = new_log();
    for name in ['a', 'b', 'c'] {
        let g = gotten.clone();
        q.get().unwrap().add_callback(move |v: i32| {
            g.borrow_mut().push((name, v));
            Ok(())
        });
    }
    assert_eq!(q.waiting(), 3);
    for v in 1..=3 {
        q.put(v).unwrap();
    }
    assert_eq!(*gotten.borrow(), [('a', 1), ('b', 2), ('c', 3)]);
    assert_eq!(q.waiting(), 0);

    for v in 4..=6 {
        q.put(v).unwrap();
    }
    assert_eq!(q.pending(), [4, 5, 6]);
    let got: Vec<Option<i32>> = (0..3).map(|_| q.get().unwrap().result().value()).collect();
    assert_eq!(got, [Some(4), Some(5), Some(6)]);
    assert_eq!(q.pending_len(), 0);
}

// Twisted: B137 ("size=0 -> every put without a waiter overflows; backlog=0
// -> every get on an empty queue underflows"); experiment E15 part 4
#[test]
fn zero_size_and_zero_backlog() {
    let q: DeferredQueue<i32> = DeferredQueue::with_limits(Some(0), None);
    assert!(q.put(1).unwrap_err().check::<QueueOverflow>());
    assert_eq!(q.pending_len(), 0);
    // A waiter still gets items: size limits stored items only.
    let g = q.get().unwrap();
    q.put(2).unwrap();
    assert_eq!(g.result().value(), Some(2));

    let q: DeferredQueue<i32> = DeferredQueue::with_limits(None, Some(0));
    assert!(q.get().unwrap_err().check::<QueueUnderflow>());
    assert_eq!(q.waiting(), 0);
    // Stored items are still handed out.
    q.put(3).unwrap();
    assert_eq!(q.get().unwrap().result().value(), Some(3));
}

// Twisted: B138; experiment E15 part 4 ("cancel waiting get: FAIL
// CancelledError | waiting: 0 / later put goes to pending: [1]")
#[test]
fn a_cancelled_get_is_removed_and_a_later_put_is_stored() {
    let q = DeferredQueue::new();
    let g = q.get().unwrap();
    assert_eq!(q.waiting(), 1);
    g.cancel().unwrap();
    assert!(is_cancelled(&g));
    assert_eq!(q.waiting(), 0);
    consume(&g);
    q.put(1).unwrap();
    assert_eq!(q.pending(), [1]);
}

// Twisted: B138 ("or another waiter")
#[test]
fn a_put_after_a_cancelled_get_goes_to_the_next_waiter() {
    let q = DeferredQueue::new();
    let (a, b, c) = (q.get().unwrap(), q.get().unwrap(), q.get().unwrap());
    b.cancel().unwrap();
    assert!(is_cancelled(&b));
    consume(&b);
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert_eq!(a.result().value(), Some(1));
    assert_eq!(c.result().value(), Some(2));
    assert_eq!((q.waiting(), q.pending_len()), (0, 0));
}

// Twisted: B137 + B138; experiment: cancelling a waiting get frees its
// backlog slot (12 None: the next get waits instead of underflowing)
#[test]
fn a_cancelled_get_frees_its_backlog_slot() {
    let q: DeferredQueue<i32> = DeferredQueue::with_limits(None, Some(1));
    let g = q.get().unwrap();
    assert!(q.get().unwrap_err().check::<QueueUnderflow>());
    g.cancel().unwrap();
    consume(&g);
    let g2 = q.get().unwrap();
    assert!(!g2.called());
    q.put(7).unwrap();
    assert_eq!(g2.result().value(), Some(7));
}

// Twisted: B137; experiment: a put from a getter's callback goes to the next
// waiter, inside the outer put ([('g1', 1), ('g2', 11)] [])
#[test]
fn a_put_from_a_getters_callback_serves_the_next_getter() {
    let q = DeferredQueue::new();
    let log: Log<(&str, i32)> = new_log();
    let (l, qq) = (log.clone(), q.clone());
    q.get().unwrap().add_callback(move |v: i32| {
        l.borrow_mut().push(("g1", v));
        qq.put(v + 10)
    });
    let l = log.clone();
    q.get().unwrap().add_callback(move |v: i32| {
        l.borrow_mut().push(("g2", v));
        Ok(())
    });
    q.put(1).unwrap();
    assert_eq!(*log.borrow(), [("g1", 1), ("g2", 11)]);
    assert!(q.pending().is_empty());
}

// Twisted: B137 (`self.waiting.pop(0).callback(obj)` raises); experiment: a
// waiting get fired by hand makes put() raise AlreadyCalledError and the item
// is lost (4 AlreadyCalledError [] 0)
#[test]
fn put_to_a_get_fired_by_hand_raises_already_called_error() {
    let q = DeferredQueue::new();
    let g = q.get().unwrap();
    g.callback(5).unwrap();
    let err = q.put(1).unwrap_err();
    assert!(err.check::<AlreadyCalledError>());
    assert_eq!((q.pending_len(), q.waiting()), (0, 0));
    assert_eq!(g.result().value(), Some(5));
}

// Twisted: B137 with a Failure as the item (callback(aFailure) is
// errback(aFailure), B4); experiment: the waiting get errbacks; a stored one
// comes out of succeed(aFailure), failed
#[test]
fn a_failure_put_on_the_queue_fails_the_get() {
    let q: DeferredQueue<Failure> = DeferredQueue::new();
    let g = q.get().unwrap();
    q.put(Failure::msg("x")).unwrap();
    assert_eq!(g.result().failure().unwrap().message(), "x");
    consume(&g);

    let ((), reports) = capture_unhandled_errors(|| {
        q.put(Failure::msg("y")).unwrap();
        let g = q.get().unwrap();
        assert!(g.called());
        assert_eq!(g.result().failure().unwrap().message(), "y");
        // succeed(aFailure) never ran its chain: dropping it reports nothing.
    });
    assert!(reports.is_empty());
}

// Twisted: B138 (the canceller holds the queue); Rust-specific: the
// canceller does not keep the queue alive, and a get outliving its queue can
// still be cancelled
#[test]
fn a_get_outliving_its_queue_can_still_be_cancelled() {
    let q: DeferredQueue<i32> = DeferredQueue::new();
    let g = q.get().unwrap();
    drop(q);
    g.cancel().unwrap();
    assert!(is_cancelled(&g));
    consume(&g);
}

// Twisted: B137 with a coroutine consumer (`item = await q.get()` in a loop)
#[test]
fn a_coroutine_consumer_takes_items_as_they_are_put() {
    let q: DeferredQueue<Option<i32>> = DeferredQueue::new();
    let seen: Log<i32> = new_log();
    let (qq, s) = (q.clone(), seen.clone());
    let consumer = ensure_deferred(async move {
        while let Some(v) = qq.get()?.await? {
            s.borrow_mut().push(v);
        }
        Ok::<_, Failure>(s.borrow().len())
    });
    assert_eq!(q.waiting(), 1);
    q.put(Some(1)).unwrap();
    assert_eq!(*seen.borrow(), [1], "consumed inside put()");
    q.put(Some(2)).unwrap();
    q.put(None).unwrap();
    assert_eq!(*seen.borrow(), [1, 2]);
    assert_eq!(consumer.result().value(), Some(2));
    assert_eq!((q.waiting(), q.pending_len()), (0, 0));
}

// Twisted: DeferredQueue's `size`/`backlog` attributes, assigned after
// construction
#[test]
fn limits_can_be_changed_later() {
    let q: DeferredQueue<i32> = DeferredQueue::new();
    q.put(1).unwrap();
    q.set_size(Some(1));
    assert_eq!(q.size(), Some(1));
    assert!(q.put(2).unwrap_err().check::<QueueOverflow>());
    q.set_size(None);
    q.put(2).unwrap();
    assert_eq!(q.pending(), [1, 2]);
    q.set_backlog(Some(0));
    assert_eq!(q.backlog(), Some(0));
    assert_eq!(
        q.get().unwrap().result().value(),
        Some(1),
        "items still come out"
    );
}

// Twisted: section 3.2 (`QueueOverflow()`, `QueueUnderflow()`: no
// arguments); Rust-specific Display texts
#[test]
fn overflow_and_underflow_errors() {
    assert_eq!(QueueOverflow, QueueOverflow);
    let f = Failure::new(QueueOverflow);
    assert_eq!(f.short_type_name(), "QueueOverflow");
    assert_eq!(f.message(), "queue is full");
    let f = Failure::new(QueueUnderflow);
    assert_eq!(f.short_type_name(), "QueueUnderflow");
    assert_eq!(f.message(), "too many gets are waiting on the queue");
}
