//! Synapse's `ResponseCache` (`twisted_compat::response_cache`):
//! behaviours 110–114 of `synapse_semantics.md` (2.11).
//!
//! Citations: `TRC` is Synapse's `tests/util/caches/test_response_cache.py`
//! (its `delayed_return` is `@cancellable`, and the `wrapped` functions that
//! copy it with `@wraps` are too: here `.cancellable()` on the `wrap` call);
//! "experiment" is a check run against Synapse 1.163.2 (the expected values
//! below are what it printed).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;

use twisted_compat::{
    CancelledError, Clock, Deferred, Failure, LogcontextError, LoggingContext, ResponseCache,
    ResponseCacheContext, capture_logcontext_errors, current_context,
};
use twisted_deferred::{capture_unhandled_errors, ensure_deferred};
use twisted_reactor::Clock as TestClock;

type Cache = ResponseCache<i32, String>;

struct Harness {
    reactor: TestClock,
    clock: Clock,
}

impl Harness {
    /// `setUp`: `self.reactor, self.clock = get_clock()`.
    fn new() -> Self {
        let reactor = TestClock::new();
        let clock = Clock::new(reactor.clone(), "test_server");
        Harness { reactor, clock }
    }

    /// `with_cache(name, ms)`.
    fn with_cache(&self, name: &str, ms: u64) -> Cache {
        ResponseCache::new(&self.clock, name, "test_server", Some(ms as f64 / 1000.0))
    }

    /// `@cancellable async def delayed_return(o, duration=1s)`: sleeps, then
    /// returns `o`. (Cancellability goes on the `wrap` call.)
    fn delayed_return(&self, o: &str) -> impl Future<Output = Result<String, Failure>> + 'static {
        delayed(&self.clock, o, 1.0)
    }
}

fn delayed(
    clock: &Clock,
    o: &str,
    seconds: f64,
) -> impl Future<Output = Result<String, Failure>> + 'static {
    let (clock, o) = (clock.clone(), o.to_owned());
    async move {
        clock.sleep(seconds).await?;
        Ok(o)
    }
}

/// `async def instant_return(o): return o`.
fn instant_return(o: &str) -> impl Future<Output = Result<String, Failure>> + 'static {
    let o = o.to_owned();
    async move { Ok(o) }
}

/// What the `wrapped` functions of `TRC` record: `completed` (set in their
/// `finally`) and `cancelled` (set when `delayed_return` raised
/// `CancelledError`).
#[derive(Default)]
struct Tracker {
    completed: Cell<bool>,
    cancelled: Cell<bool>,
}

/// `async def wrapped(o): try: return await self.delayed_return(o) except
/// CancelledError: cancelled = True; raise finally: completed = True`,
/// optionally raising `expected_error` after the sleep
/// (`test_cache_cancel_then_error`).
fn wrapped(
    h: &Harness,
    tracker: &Rc<Tracker>,
    o: &str,
    then_fail: bool,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<String, Failure>>>> + 'static {
    let (delayed, tracker) = (h.delayed_return(o), tracker.clone());
    move || {
        Box::pin(async move {
            let r = delayed.await;
            if r.as_ref().is_err_and(|f| f.check::<CancelledError>()) {
                tracker.cancelled.set(true);
            }
            tracker.completed.set(true);
            let r = r?;
            if then_fail {
                return Err(Failure::msg("oh no"));
            }
            Ok(r)
        })
    }
}

/// A callback that must not be called (`Mock(spec=())`).
fn unexpected(called: &Rc<Cell<bool>>) -> impl FnOnce() -> Deferred<String> + 'static {
    let called = called.clone();
    move || {
        called.set(true);
        Deferred::new()
    }
}

fn value(d: &Deferred<String>) -> Option<String> {
    d.result().value()
}

fn holds<E: std::error::Error + 'static>(d: &Deferred<String>) -> bool {
    d.result().failure().is_some_and(|f| f.check::<E>())
}

fn no_result(d: &Deferred<String>) -> bool {
    d.result().value().is_none() && d.result().failure().is_none()
}

fn handle(d: &Deferred<String>) {
    d.add_errback(|_| Ok(String::new()));
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_hit
#[test]
fn a_cached_result_is_returned_without_calling_the_function() {
    let h = Harness::new();
    let cache = h.with_cache("keeping_cache", 9001);
    let wrap_d = ensure_deferred(cache.wrap(0, || instant_return("howdy")));
    assert_eq!(
        value(&wrap_d).as_deref(),
        Some("howdy"),
        "initial wrap result should be the same"
    );

    let called = Rc::new(Cell::new(false));
    let wrap2_d = ensure_deferred(cache.wrap(0, unexpected(&called)));
    assert!(!called.get());
    assert_eq!(
        value(&wrap2_d).as_deref(),
        Some("howdy"),
        "cache should still have the result"
    );
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_miss
#[test]
fn without_a_timeout_a_result_is_not_kept() {
    let h = Harness::new();
    let cache = h.with_cache("trashing_cache", 0);
    let wrap_d = ensure_deferred(cache.wrap(0, || instant_return("howdy")));
    assert_eq!(value(&wrap_d).as_deref(), Some("howdy"));
    assert!(
        cache.keys().is_empty(),
        "cache should not have the result now"
    );
    assert_eq!(
        h.reactor.delayed_call_count(),
        0,
        "no prune loop without a timeout"
    );
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_expire
#[test]
fn a_kept_result_expires_after_the_timeout() {
    let h = Harness::new();
    let cache = h.with_cache("short_cache", 1000);
    let wrap_d = ensure_deferred(cache.wrap(0, || instant_return("howdy")));
    assert_eq!(value(&wrap_d).as_deref(), Some("howdy"));

    let called = Rc::new(Cell::new(false));
    let wrap2_d = ensure_deferred(cache.wrap(0, unexpected(&called)));
    assert!(!called.get());
    assert_eq!(
        value(&wrap2_d).as_deref(),
        Some("howdy"),
        "cache should still have the result"
    );

    h.reactor.pump(&[2.0]).unwrap();
    assert!(
        cache.keys().is_empty(),
        "cache should not have the result now"
    );
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_wait_hit
#[test]
fn a_pending_computation_delivers_its_result_when_done() {
    let h = Harness::new();
    let cache = h.with_cache("neutral_cache", 0);
    let delayed = h.delayed_return("howdy");
    let wrap_d = ensure_deferred(cache.wrap(0, move || delayed).cancellable());
    assert!(no_result(&wrap_d));
    h.reactor.pump(&[2.0]).unwrap();
    assert_eq!(value(&wrap_d).as_deref(), Some("howdy"));
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_wait_expire
#[test]
fn a_result_is_kept_for_the_timeout_after_it_completes() {
    let h = Harness::new();
    let cache = h.with_cache("medium_cache", 3000);
    let delayed = h.delayed_return("howdy");
    let wrap_d = ensure_deferred(cache.wrap(0, move || delayed).cancellable());
    assert!(no_result(&wrap_d));

    // Stop at 1 s for the computation, then one more second.
    h.reactor.pump(&[1.0, 1.0]).unwrap();
    assert_eq!(value(&wrap_d).as_deref(), Some("howdy"));

    let called = Rc::new(Cell::new(false));
    let wrap2_d = ensure_deferred(cache.wrap(0, unexpected(&called)));
    assert!(!called.get());
    assert_eq!(
        value(&wrap2_d).as_deref(),
        Some("howdy"),
        "cache should still have the result"
    );

    // 1 + 1 + 2 > 1 + 3: the eviction timer has run.
    h.reactor.pump(&[2.0]).unwrap();
    assert!(
        cache.keys().is_empty(),
        "cache should not have the result now"
    );
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_context_nocache (both
// parameterizations)
#[test]
fn a_callback_clearing_should_cache_is_shared_while_running_but_not_kept() {
    for should_cache in [true, false] {
        let h = Harness::new();
        let cache = h.with_cache("medium_cache", 3000);
        let call_count = Rc::new(Cell::new(0));
        // async def non_caching(o, cache_context): call_count += 1;
        //     await sleep(1); cache_context.should_cache = should_cache; return o
        let non_caching = |h: &Harness| {
            let (clock, count) = (h.clock.clone(), call_count.clone());
            move |cache_context: ResponseCacheContext<i32>| async move {
                count.set(count.get() + 1);
                clock.sleep(1.0).await?;
                cache_context.set_should_cache(should_cache);
                Ok::<_, Failure>("howdy".to_string())
            }
        };
        let wrap_d = ensure_deferred(cache.wrap_with_cache_context(0, non_caching(&h)));
        assert!(no_result(&wrap_d));
        let wrap2_d = ensure_deferred(cache.wrap_with_cache_context(0, non_caching(&h)));
        assert!(no_result(&wrap2_d));
        assert_eq!(call_count.get(), 1);

        h.reactor.advance(1.0).unwrap();
        assert_eq!(value(&wrap_d).as_deref(), Some("howdy"));
        assert_eq!(value(&wrap2_d).as_deref(), Some("howdy"));

        if should_cache {
            let called = Rc::new(Cell::new(false));
            let wrap3_d = ensure_deferred(cache.wrap(0, unexpected(&called)));
            assert!(!called.get());
            assert_eq!(
                value(&wrap3_d).as_deref(),
                Some("howdy"),
                "cache should still have the result"
            );
        } else {
            assert!(
                cache.keys().is_empty(),
                "cache should not have the result now"
            );
        }
    }
}

// Synapse: TRC::ResponseCacheTestCase.test_errors_raised_to_all_waiters
#[test]
fn an_error_reaches_every_waiter() {
    let ((), unhandled) = capture_unhandled_errors(|| {
        let h = Harness::new();
        let cache = h.with_cache("error_cache", 3000);
        let erring = |h: &Harness| {
            let clock = h.clock.clone();
            move || async move {
                clock.sleep(1.0).await?;
                Err::<String, _>(Failure::msg("oh no"))
            }
        };
        let wrap_d = ensure_deferred(cache.wrap(0, erring(&h)));
        assert!(no_result(&wrap_d));
        let wrap2_d = ensure_deferred(cache.wrap(0, erring(&h)));
        assert!(no_result(&wrap2_d));

        h.reactor.advance(1.0).unwrap();
        let (f1, f2) = (
            wrap_d.result().failure().unwrap(),
            wrap2_d.result().failure().unwrap(),
        );
        assert_eq!(f1.message(), "oh no");
        assert!(Failure::ptr_eq(&f1, &f2), "the same failure for everyone");
        assert!(cache.keys().is_empty());
        handle(&wrap_d);
        handle(&wrap2_d);
    });
    // The cache consumed the computation's failure.
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

// Synapse: TRC::ResponseCacheTestCase.test_errors_are_not_cached
#[test]
fn errors_are_not_cached() {
    let h = Harness::new();
    let cache = h.with_cache("error_not_cached", 3000);
    let return_error = Rc::new(Cell::new(true));
    let erring_then_fine = |h: &Harness| {
        let (clock, flag) = (h.clock.clone(), return_error.clone());
        move || async move {
            clock.sleep(1.0).await?;
            if flag.get() {
                flag.set(false);
                return Err(Failure::msg("this is a temporary error!"));
            }
            Ok("fine".to_string())
        }
    };
    let wrap_d = ensure_deferred(cache.wrap(0, erring_then_fine(&h)));
    assert!(no_result(&wrap_d));
    h.reactor.advance(1.0).unwrap();
    assert_eq!(
        wrap_d.result().failure().unwrap().message(),
        "this is a temporary error!"
    );
    handle(&wrap_d);

    let wrap2_d = ensure_deferred(cache.wrap(0, erring_then_fine(&h)));
    h.reactor.advance(1.0).unwrap();
    assert_eq!(
        value(&wrap2_d).as_deref(),
        Some("fine"),
        "should get the fresh result, not the cached error"
    );
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_cancel_first_wait
#[test]
fn the_cancelled_initiator_waits_for_the_computation_then_fails_and_the_result_is_kept() {
    let h = Harness::new();
    let cache = h.with_cache("cancel_cache", 3000);
    let delayed = h.delayed_return("howdy");
    let wrap_d = ensure_deferred(cache.wrap(0, move || delayed).cancellable());

    wrap_d.cancel().unwrap();
    // Ignored for now: the inner function is still running.
    assert!(no_result(&wrap_d));

    h.reactor.advance(2.0).unwrap();
    assert!(holds::<CancelledError>(&wrap_d));

    // Later callers get the result.
    let delayed = h.delayed_return("howdy");
    let wrap_d2 = ensure_deferred(cache.wrap(0, move || delayed).cancellable());
    assert_eq!(value(&wrap_d2).as_deref(), Some("howdy"));
    handle(&wrap_d);
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_cancel_first_wait_expire
#[test]
fn a_computation_nobody_waits_for_is_pruned_and_cancelled_after_the_timeout() {
    let h = Harness::new();
    let cache = h.with_cache("cancel_expire_cache", 300);
    let tracker = Rc::new(Tracker::default());
    let wrap_d = ensure_deferred(
        cache
            .wrap(0, wrapped(&h, &tracker, "howdy", false))
            .cancellable(),
    );

    wrap_d.cancel().unwrap();
    assert!(no_result(&wrap_d));
    assert!(
        !tracker.completed.get(),
        "wrapped function should not have completed yet"
    );

    // Past the entry's expiry, before the function would have returned.
    h.reactor.advance(0.7).unwrap();
    assert!(holds::<CancelledError>(&wrap_d));
    assert!(
        tracker.completed.get(),
        "wrapped function should have completed"
    );
    assert!(
        tracker.cancelled.get(),
        "wrapped function should have been cancelled"
    );
    assert!(cache.keys().is_empty());
    handle(&wrap_d);
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_cancel_first_wait_other_observers
#[test]
fn a_computation_someone_still_waits_for_is_not_pruned() {
    let h = Harness::new();
    let cache = h.with_cache("cancel_other_cache", 300);
    let tracker = Rc::new(Tracker::default());
    let wrap_d1 = ensure_deferred(
        cache
            .wrap(0, wrapped(&h, &tracker, "howdy", false))
            .cancellable(),
    );
    let wrap_d2 = ensure_deferred(
        cache
            .wrap(0, wrapped(&h, &tracker, "howdy", false))
            .cancellable(),
    );

    wrap_d1.cancel().unwrap();
    assert!(no_result(&wrap_d1) && no_result(&wrap_d2));
    assert!(!tracker.completed.get());

    h.reactor.advance(0.7).unwrap();
    assert!(no_result(&wrap_d1) && no_result(&wrap_d2));
    assert!(
        !tracker.completed.get(),
        "wrapped function should not have completed yet"
    );

    h.reactor.advance(2.5).unwrap();
    assert!(
        tracker.completed.get(),
        "wrapped function should have completed"
    );
    assert!(
        !tracker.cancelled.get(),
        "wrapped function should not have been cancelled"
    );
    assert!(holds::<CancelledError>(&wrap_d1));
    assert_eq!(value(&wrap_d2).as_deref(), Some("howdy"));
    handle(&wrap_d1);
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_add_and_cancel
#[test]
fn joining_and_cancelling_repeatedly_keeps_the_entry_alive() {
    let h = Harness::new();
    let cache = h.with_cache("cancel_add_cache", 300);
    let tracker = Rc::new(Tracker::default());
    let mut deferreds = Vec::new();
    for _ in 0..8 {
        let wrap_d = ensure_deferred(
            cache
                .wrap(0, wrapped(&h, &tracker, "howdy", false))
                .cancellable(),
        );
        h.reactor.advance(0.05).unwrap();
        wrap_d.cancel().unwrap();
        deferreds.push(wrap_d);
        assert!(
            !tracker.completed.get(),
            "wrapped function should not have completed yet"
        );
        assert!(
            !tracker.cancelled.get(),
            "wrapped function should not have been cancelled yet"
        );
        h.reactor.advance(0.05).unwrap();
    }
    h.reactor.advance(0.2).unwrap();
    for wrap_d in &deferreds {
        assert!(holds::<CancelledError>(wrap_d));
        handle(wrap_d);
    }
    assert!(
        tracker.completed.get(),
        "wrapped function should have completed"
    );
    assert!(
        !tracker.cancelled.get(),
        "wrapped function should not have been cancelled"
    );

    let wrap_d = ensure_deferred(
        cache
            .wrap(0, wrapped(&h, &tracker, "howdy", false))
            .cancellable(),
    );
    assert_eq!(value(&wrap_d).as_deref(), Some("howdy"));
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_cancel_non_cancellable
#[test]
fn a_non_cancellable_computation_is_never_pruned() {
    let h = Harness::new();
    let cache = h.with_cache("cancel_non_cancellable_cache", 300);
    let tracker = Rc::new(Tracker::default());
    // Not `.cancellable()`: `wrapped` has no @wraps here.
    let wrap_d = ensure_deferred(cache.wrap(0, wrapped(&h, &tracker, "howdy", false)));
    wrap_d.cancel().unwrap();
    assert!(no_result(&wrap_d));
    assert!(!tracker.completed.get());

    h.reactor.advance(2.0).unwrap();
    assert!(holds::<CancelledError>(&wrap_d));
    assert!(!tracker.cancelled.get());
    let wrap_d2 = ensure_deferred(cache.wrap(0, wrapped(&h, &tracker, "howdy", false)));
    assert_eq!(value(&wrap_d2).as_deref(), Some("howdy"));
    handle(&wrap_d);
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_cancel_then_error
#[test]
fn a_cancelled_initiator_gets_cancelled_error_and_the_joiner_the_error() {
    let ((), unhandled) = capture_unhandled_errors(|| {
        let h = Harness::new();
        let cache = h.with_cache("cancel_then_error_cache", 3000);
        let tracker = Rc::new(Tracker::default());
        let wrap_d1 = ensure_deferred(
            cache
                .wrap(0, wrapped(&h, &tracker, "ignored", true))
                .cancellable(),
        );
        let wrap_d2 = ensure_deferred(
            cache
                .wrap(0, wrapped(&h, &tracker, "ignored", true))
                .cancellable(),
        );

        wrap_d1.cancel().unwrap();
        assert!(no_result(&wrap_d1) && no_result(&wrap_d2));
        assert!(!tracker.completed.get());

        h.reactor.advance(2.0).unwrap();
        assert!(
            tracker.completed.get(),
            "wrapped function should have completed"
        );
        assert!(
            !tracker.cancelled.get(),
            "wrapped function should not have been cancelled"
        );
        assert!(holds::<CancelledError>(&wrap_d1));
        assert_eq!(wrap_d2.result().failure().unwrap().message(), "oh no");
        handle(&wrap_d1);
        handle(&wrap_d2);
    });
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

// Synapse: experiment (behaviours 110, 112 and 113: which context each
// caller is in)
#[test]
fn callers_share_one_computation_which_runs_in_the_initiators_context() {
    let ((), errors) = capture_logcontext_errors(|| {
        let h = Harness::new();
        let cache = h.with_cache("c", 3000);
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        // @cancellable async def compute(x): log; await clock.sleep(1); log; return x
        let compute = |x: &'static str| {
            let (clock, log) = (h.clock.clone(), log.clone());
            move || async move {
                log.borrow_mut()
                    .push(format!("compute start {}", current_context()));
                clock.sleep(1.0).await?;
                log.borrow_mut()
                    .push(format!("compute end {}", current_context()));
                Ok::<_, Failure>(x.to_string())
            }
        };
        let caller = |name: &'static str, x: &'static str| {
            let (cache, log, compute) = (cache.clone(), log.clone(), compute(x));
            ensure_deferred(async move {
                let ctx = LoggingContext::new(name, "hs");
                let _scope = ctx.entered();
                match cache.wrap(0, compute).cancellable().await {
                    Ok(v) => {
                        log.borrow_mut()
                            .push(format!("{name} got {v} {}", current_context()));
                        Ok(v)
                    }
                    Err(f) => {
                        if f.check::<CancelledError>() {
                            log.borrow_mut()
                                .push(format!("{name} CE {}", current_context()));
                        }
                        Err(f)
                    }
                }
            })
        };
        let d1 = caller("A", "one");
        log.borrow_mut()
            .push(format!("after A {}", current_context()));
        let d2 = caller("B", "two");
        log.borrow_mut()
            .push(format!("after B {}", current_context()));
        d1.cancel().unwrap();
        log.borrow_mut().push(format!(
            "after cancel A {} {}",
            current_context(),
            d1.called()
        ));
        h.reactor.advance(1.0).unwrap();
        log.borrow_mut().push(format!(
            "after advance {} {} {} {:?}",
            current_context(),
            d1.called(),
            d2.called(),
            cache.keys()
        ));
        let d3 = caller("C", "three");
        log.borrow_mut().push(format!(
            "after C {} {:?}",
            current_context(),
            d3.result().value()
        ));
        h.reactor.advance(3.0).unwrap();
        log.borrow_mut().push(format!("later {:?}", cache.keys()));
        assert_eq!(
            *log.borrow(),
            [
                "compute start A",
                "after A sentinel",
                "after B sentinel",
                "after cancel A sentinel true",
                "compute end A",
                "B got one B",
                "A CE A",
                "after advance sentinel true true [0]",
                "C got one C",
                "after C sentinel Some(\"one\")",
                "later []",
            ]
        );
        handle(&d1);
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: experiment (behaviours 112–114: a joiner's cancellation is
// immediate; pruning cancels the computation from the looping call, and
// Synapse's own logcontext checks complain about that path)
#[test]
fn pruning_from_the_looping_call_cancels_the_computation_with_synapses_logcontext_reports() {
    let ((), errors) = capture_logcontext_errors(|| {
        let h = Harness::new();
        let cache = h.with_cache("c", 300);
        let log: Rc<RefCell<Vec<String>>> = Rc::default();
        let cancelled = Rc::new(Cell::new(false));
        let compute = || {
            let (clock, log, cancelled) = (h.clock.clone(), log.clone(), cancelled.clone());
            move || async move {
                if let Err(f) = clock.sleep(1.0).await {
                    cancelled.set(true);
                    log.borrow_mut()
                        .push(format!("compute CE {}", current_context()));
                    return Err(f);
                }
                Ok::<_, Failure>("v".to_string())
            }
        };
        let caller = |name: &'static str| {
            let (cache, log, compute, reactor) =
                (cache.clone(), log.clone(), compute(), h.reactor.clone());
            ensure_deferred(async move {
                let ctx = LoggingContext::new(name, "hs");
                let _scope = ctx.entered();
                match cache.wrap(0, compute).cancellable().await {
                    Ok(v) => Ok(v),
                    Err(f) => {
                        if f.check::<CancelledError>() {
                            log.borrow_mut().push(format!(
                                "{name} CE {} {}",
                                current_context(),
                                reactor.seconds()
                            ));
                        }
                        Err(f)
                    }
                }
            })
        };
        let d1 = caller("A");
        let d2 = caller("B");
        d2.cancel().unwrap();
        log.borrow_mut().push(format!(
            "after cancel B {} {} {}",
            current_context(),
            d2.called(),
            d1.called()
        ));
        h.reactor.advance(0.2).unwrap();
        d1.cancel().unwrap();
        log.borrow_mut().push(format!(
            "after cancel A {} {}",
            current_context(),
            d1.called()
        ));
        h.reactor.advance(0.2).unwrap();
        log.borrow_mut()
            .push(format!("t=0.4 {:?} {}", cache.keys(), cancelled.get()));
        h.reactor.advance(0.4).unwrap();
        log.borrow_mut()
            .push(format!("t=0.8 {:?} {}", cache.keys(), cancelled.get()));
        assert_eq!(
            *log.borrow(),
            [
                "B CE B 0",
                "after cancel B sentinel true false",
                "after cancel A sentinel true",
                "t=0.4 [0] false",
                "compute CE A",
                "A CE A 0.8",
                "t=0.8 [] true",
            ]
        );
        handle(&d1);
        handle(&d2);
    });
    // Synapse 1.163.2 reports exactly these three (the prune runs the
    // cancelled computation from the `looping_call` context).
    let shown: Vec<String> = errors
        .iter()
        .map(|e| match e {
            LogcontextError::ContextNotMaintained { calling, found } => {
                format!("not maintained {calling} (found {found})")
            }
            other => other.to_string(),
        })
        .collect();
    assert_eq!(
        shown,
        [
            "Expected logging context sentinel but found looping_call",
            "not maintained looping_call (found sentinel)",
            "Expected logging context looping_call was lost",
        ]
    );
}

// Synapse: code (`_get(key).result.observe()`, `unset`, `keys`, `size`)
#[test]
fn get_unset_keys_and_size_look_at_the_entries() {
    let h = Harness::new();
    let cache = h.with_cache("c", 1000);
    assert!(cache.get(&1).is_none());
    let work: Deferred<String> = Deferred::new();
    let w = work.clone();
    let caller = ensure_deferred(cache.wrap(1, move || w));
    ensure_deferred(cache.wrap(2, || instant_return("two")));
    assert_eq!(cache.keys(), [1, 2]);
    assert_eq!((cache.size(), cache.len(), cache.is_empty()), (2, 2, false));
    let observer = cache.get(&1).unwrap();
    assert!(!observer.called());
    // Cancelling an observer from `get` affects nobody else.
    let other = cache.get(&1).unwrap();
    other.cancel().unwrap();
    work.callback("one".into()).unwrap();
    assert_eq!(value(&observer).as_deref(), Some("one"));
    assert_eq!(value(&caller).as_deref(), Some("one"));
    assert_eq!(value(&cache.get(&2).unwrap()).as_deref(), Some("two"));
    cache.unset(&2);
    assert_eq!(cache.keys(), [1]);
    assert!(cache.get(&2).is_none());
    handle(&other);
}

// Synapse: experiment (behaviour 110: a callback raising at once)
#[test]
fn a_callback_failing_at_once_fails_the_caller_and_leaves_nothing_cached() {
    let ((), unhandled) = capture_unhandled_errors(|| {
        let h = Harness::new();
        let cache = h.with_cache("c", 1000);
        let d = ensure_deferred(cache.wrap(0, || async { Err::<String, _>(Failure::msg("sync")) }));
        assert_eq!(d.result().failure().unwrap().message(), "sync");
        assert!(cache.is_empty());
        handle(&d);
    });
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

// Synapse: code (Python's `wrap` is a coroutine: nothing happens until it
// is awaited)
#[test]
fn wrap_does_nothing_until_awaited() {
    let h = Harness::new();
    let cache = h.with_cache("c", 1000);
    let called = Rc::new(Cell::new(false));
    let c = called.clone();
    let wrap = cache.wrap(0, move || {
        c.set(true);
        instant_return("x")
    });
    assert!(!called.get() && cache.is_empty());
    let d = ensure_deferred(wrap);
    assert!(called.get());
    assert_eq!(value(&d).as_deref(), Some("x"));
}
