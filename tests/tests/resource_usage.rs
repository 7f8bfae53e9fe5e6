//! Resource accounting of logging contexts (`twisted_compat::logcontext`):
//! `ContextResourceUsage`, the thread CPU clock, CPU time accounted from
//! `start` to `stop`, the database counters, crediting ancestors, and the
//! misuse around them.
//!
//! Synapse behaviours covered: section 2.8, item 87 (and the accounting
//! side of items 69, 70, 74, 75 and 86). CPU time is asserted by bounds
//! (positive, monotonic, at least what the test burned, never counted
//! twice), never as exact durations; exact values come only from snapshots
//! given explicitly to `start_with`/`stop_with`.
//!
//! Each test runs on its own thread, so it starts in the sentinel context.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use integration_tests::support::capture_logs;
use twisted_compat::{
    ContextResourceUsage, LoggingContext, ObservableDeferred, PreserveLoggingContext,
    SENTINEL_CONTEXT, ThreadCpuUsage, capture_logcontext_errors, current_context,
    get_thread_resource_usage, make_deferred_yieldable, nested_logging_context,
    set_current_context, yieldable_gather_results,
};
use twisted_deferred::{Deferred, Failure, ensure_deferred};

const HS: &str = "test.server";

fn ctx(name: &str) -> LoggingContext {
    LoggingContext::new(name, HS)
}

fn child(name: &str, parent: &LoggingContext) -> LoggingContext {
    LoggingContext::builder(name, HS)
        .parent_context(parent)
        .build()
}

fn cpu(u: &ContextResourceUsage) -> f64 {
    u.ru_utime + u.ru_stime
}

fn thread_cpu() -> f64 {
    get_thread_resource_usage()
        .expect("this platform has a thread CPU clock")
        .total()
}

/// Burns at least `seconds` of this thread's CPU time; returns how much it
/// burned, by the thread's clock.
fn burn(seconds: f64) -> f64 {
    let start = thread_cpu();
    let mut x = 0u64;
    loop {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let used = thread_cpu() - start;
        if used >= seconds {
            return used;
        }
    }
}

fn rusage(ru_utime: f64, ru_stime: f64) -> Option<ThreadCpuUsage> {
    Some(ThreadCpuUsage { ru_utime, ru_stime })
}

/// Floating-point slack for sums of clock differences (the clock itself
/// has microsecond resolution).
const EPS: f64 = 1e-9;

// ---------------------------------------------------------------------------
// ContextResourceUsage
// ---------------------------------------------------------------------------

// Synapse: semantics 1 (inventory: ContextResourceUsage fields); Exp (repr)
#[test]
fn a_new_usage_is_all_zero_and_prints_as_synapses_repr() {
    let u = ContextResourceUsage::new();
    assert_eq!(u, ContextResourceUsage::default());
    assert_eq!(
        u.to_string(),
        "<ContextResourceUsage ru_stime='0.0', ru_utime='0.0', db_txn_count='0', \
         db_txn_duration_sec='0.0', db_sched_duration_sec='0.0', evt_db_fetch_count='0'>"
    );
    let mut v = u;
    v.ru_utime = 1.5;
    v.db_txn_count = 3;
    v.db_sched_duration_sec = 1e-5;
    assert_eq!(
        v.to_string(),
        "<ContextResourceUsage ru_stime='0.0', ru_utime='1.5', db_txn_count='3', \
         db_txn_duration_sec='0.0', db_sched_duration_sec='1e-05', evt_db_fetch_count='0'>"
    );
}

// Synapse: semantics 1 (`+ - += -=`); Exp (u + v, u - v, v - w)
#[test]
fn usages_add_and_subtract_field_by_field() {
    let u = ContextResourceUsage {
        ru_utime: 1.5,
        ru_stime: 0.25,
        db_txn_count: 3,
        db_txn_duration_sec: 0.5,
        db_sched_duration_sec: 0.125,
        evt_db_fetch_count: 2,
    };
    let w = u + u;
    assert_eq!(
        w,
        ContextResourceUsage {
            ru_utime: 3.0,
            ru_stime: 0.5,
            db_txn_count: 6,
            db_txn_duration_sec: 1.0,
            db_sched_duration_sec: 0.25,
            evt_db_fetch_count: 4,
        }
    );
    assert_eq!(u - u, ContextResourceUsage::new());
    let negative = u - w;
    assert_eq!((negative.ru_utime, negative.db_txn_count), (-1.5, -3));
    let mut acc = ContextResourceUsage::new();
    acc += u;
    acc += u;
    assert_eq!(acc, w);
    acc -= u;
    assert_eq!(acc, u);
}

// Synapse: semantics 1 (`copy()`, `reset()`, `ContextResourceUsage(copy_from=)`); Exp
#[test]
fn copies_are_independent_and_reset_zeroes_every_field() {
    let mut u = ContextResourceUsage {
        ru_stime: 2.0,
        evt_db_fetch_count: 5,
        ..Default::default()
    };
    let copy = u.copy();
    let copied_from = ContextResourceUsage::from(&u);
    u.evt_db_fetch_count += 1;
    assert_eq!(copy.evt_db_fetch_count, 5);
    assert_eq!(copied_from, copy);
    u.reset();
    assert_eq!(u, ContextResourceUsage::new());
}

// ---------------------------------------------------------------------------
// The thread CPU clock
// ---------------------------------------------------------------------------

// Synapse: semantics 2.8 #69 (Code: the thread CPU snapshot, getrusage(RUSAGE_THREAD))
#[test]
fn the_thread_cpu_clock_is_monotonic_and_advances_when_burning() {
    let mut last = get_thread_resource_usage().unwrap();
    for _ in 0..5 {
        burn(0.001);
        let now = get_thread_resource_usage().unwrap();
        assert!(now.ru_utime >= last.ru_utime, "{now:?} < {last:?}");
        assert!(now.ru_stime >= last.ru_stime, "{now:?} < {last:?}");
        assert!(now.total() > last.total());
        last = now;
    }
}

// Synapse: semantics 2.8 #69 (Code: the clock is per thread)
#[test]
fn the_thread_cpu_clock_counts_only_the_calling_thread() {
    let before = thread_cpu();
    let other = std::thread::spawn(|| burn(0.02)).join().unwrap();
    assert!(other >= 0.02);
    // The other thread's 20 ms are not this thread's.
    assert!(thread_cpu() - before < 0.02);
}

// ---------------------------------------------------------------------------
// CPU time accounted from start to stop
// ---------------------------------------------------------------------------

// Synapse: semantics 2.8 #87 (Exp: CPU accrues from the snapshot at start to the one at stop)
#[test]
fn a_context_accounts_the_cpu_time_it_ran() {
    let c = ctx("req");
    let burned = {
        let _scope = c.entered();
        burn(0.01)
    };
    let used = c.get_resource_usage();
    assert!(cpu(&used) + EPS >= burned, "{used} < {burned}");
    assert!(used.ru_utime > 0.0);
    // Finished: it accrues nothing more.
    burn(0.005);
    assert_eq!(c.get_resource_usage(), used);
}

// Synapse: semantics 2.8 #87 (Exp: for every period the ctx is current)
#[test]
fn a_context_accrues_nothing_while_another_is_current() {
    let c = ctx("req");
    let _scope = c.entered();
    burn(0.002);
    let frozen = {
        let _preserve = PreserveLoggingContext::sentinel();
        let frozen = c.get_resource_usage();
        burn(0.01);
        assert_eq!(c.get_resource_usage(), frozen, "stopped: no current period");
        frozen
    };
    // Current again: the new period adds to what it had.
    burn(0.002);
    assert!(cpu(&c.get_resource_usage()) > cpu(&frozen));
}

// Synapse: semantics 2.8 #87 (Exp: get_resource_usage includes the current period)
#[test]
fn get_resource_usage_includes_the_period_running_now_and_grows() {
    let c = ctx("req");
    let _scope = c.entered();
    let mut last = cpu(&c.get_resource_usage());
    for _ in 0..3 {
        burn(0.002);
        let now = cpu(&c.get_resource_usage());
        assert!(now > last, "{now} <= {last}");
        last = now;
    }
}

// Synapse: semantics 2.8 #87 (get_resource_usage returns a *copy*)
#[test]
fn get_resource_usage_returns_a_copy() {
    let c = ctx("req");
    let mut copy = c.get_resource_usage();
    copy.db_txn_count = 99;
    copy.ru_utime = 99.0;
    assert_eq!((copy.db_txn_count, copy.ru_utime), (99, 99.0));
    assert_eq!(c.get_resource_usage(), ContextResourceUsage::new());
}

// Synapse: semantics 2.8 #69 (Code: one CPU snapshot shared by stop and start)
#[test]
fn no_cpu_time_is_counted_twice_across_switches() {
    let a = ctx("a");
    let b = ctx("b");
    let start = thread_cpu();
    let ((), errors) = capture_logcontext_errors(|| {
        for _ in 0..20 {
            set_current_context(&a);
            burn(0.0005);
            set_current_context(&b);
            burn(0.0005);
        }
        set_current_context(SENTINEL_CONTEXT);
    });
    let elapsed = thread_cpu() - start;
    assert!(errors.is_empty(), "{errors:?}");
    let (ua, ub) = (cpu(&a.get_resource_usage()), cpu(&b.get_resource_usage()));
    assert!(ua >= 0.01 - EPS && ub >= 0.01 - EPS, "{ua} {ub}");
    assert!(ua + ub <= elapsed + EPS, "{ua} + {ub} > {elapsed}");
}

// Synapse: semantics 2.8 #87 (Exp: CPU deltas added to every ancestor when recorded)
#[test]
fn cpu_time_is_credited_to_every_ancestor_when_the_child_stops() {
    let grandparent = ctx("req");
    let parent = child("req-a", &grandparent);
    let kid = child("req-a-b", &parent);
    let burned = {
        let _scope = kid.entered();
        let burned = burn(0.01);
        // The ancestors are not running: nothing reached them yet.
        assert_eq!(cpu(&parent.get_resource_usage()), 0.0);
        burned
    };
    // The stop at the exit credited them at once.
    let own = cpu(&kid.get_resource_usage());
    assert!(own + EPS >= burned);
    for ancestor in [&parent, &grandparent] {
        let theirs = cpu(&ancestor.get_resource_usage());
        assert!((theirs - own).abs() < EPS, "{theirs} != {own}");
    }
}

// Synapse: TLC::LoggingContextTestCase.test_nested_logging_context ("CPU/db usage stats will be added to the parent context's")
#[test]
fn a_nested_logging_context_credits_its_parent() {
    let parent = ctx("req");
    let _scope = parent.entered();
    let nested = nested_logging_context("db");
    {
        let _inner = nested.entered();
        burn(0.005);
        nested.add_database_transaction(0.25).unwrap();
    }
    let (n, p) = (nested.get_resource_usage(), parent.get_resource_usage());
    assert_eq!((p.db_txn_count, p.db_txn_duration_sec), (1, 0.25));
    assert!(
        cpu(&p) + EPS >= cpu(&n),
        "the parent runs on: it has at least the child's time"
    );
}

// Synapse: semantics 2.8 #87 (Exp: add_cputime adds to the ctx and its parents, as given)
#[test]
fn add_cputime_adds_as_given_to_the_context_and_its_ancestors() {
    let parent = ctx("p");
    let kid = child("ch", &parent);
    kid.add_cputime(1.0, 2.0);
    kid.add_cputime(-1.0, 0.0);
    for c in [&kid, &parent] {
        let u = c.get_resource_usage();
        assert_eq!((u.ru_utime, u.ru_stime), (0.0, 2.0));
    }
}

// Synapse: semantics 2.8 #87 (Exp: start (1,1), stop (3,1.5) gives (2, 0.5), also on the parent)
#[test]
fn start_and_stop_with_snapshots_account_the_difference() {
    let parent = ctx("p");
    let kid = child("ch", &parent);
    let ((), errors) = capture_logcontext_errors(|| {
        kid.start_with(rusage(1.0, 1.0));
        assert_eq!(kid.get_resource_usage().db_txn_count, 0);
        kid.stop_with(rusage(3.0, 1.5));
    });
    assert!(errors.is_empty(), "{errors:?}");
    for c in [&kid, &parent] {
        let u = c.get_resource_usage();
        assert_eq!((u.ru_utime, u.ru_stime), (2.0, 0.5));
    }
}

// Synapse: semantics 2.8 #87 ("utime/stime went backwards!" logged, counted as 0)
#[test]
fn cpu_going_backwards_is_logged_and_counted_as_zero() {
    let parent = ctx("p");
    let kid = child("q", &parent);
    let (((), errors), logs) = capture_logs(|| {
        capture_logcontext_errors(|| {
            kid.start_with(rusage(5.0, 5.0));
            kid.stop_with(rusage(4.0, 6.0));
        })
    });
    assert!(
        errors.is_empty(),
        "a log line, not a misuse report: {errors:?}"
    );
    assert_eq!(
        logs,
        [(
            log::Level::Error,
            "utime went backwards! 4.000000 < 5.000000".to_string()
        )]
    );
    for c in [&kid, &parent] {
        let u = c.get_resource_usage();
        assert_eq!((u.ru_utime, u.ru_stime), (0.0, 1.0));
    }
    let ((), logs) = capture_logs(|| {
        kid.start_with(rusage(5.0, 5.0));
        kid.stop_with(rusage(6.0, 4.5));
    });
    assert_eq!(
        logs,
        [(
            log::Level::Error,
            "stime went backwards! 4.500000 < 5.000000".to_string()
        )]
    );
    assert_eq!(kid.get_resource_usage().ru_utime, 1.0);
}

// Synapse: semantics 2.8 #75 (Code, Exp: a second start keeps the first snapshot)
#[test]
fn a_second_start_is_reported_and_keeps_the_first_snapshot() {
    let c = ctx("ch");
    let ((), errors) = capture_logcontext_errors(|| {
        c.start_with(rusage(1.0, 1.0));
        c.start_with(rusage(2.0, 1.0));
        c.stop_with(rusage(2.5, 1.0));
    });
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["Re-starting already-active log context ch"]
    );
    assert_eq!(c.get_resource_usage().ru_utime, 1.5);
}

// Synapse: semantics 2.8 #74, #75 (Exp: a restarted finished ctx is reported and accrues nothing)
#[test]
fn a_finished_context_brought_back_accrues_nothing() {
    let c = ctx("f");
    drop(c.entered());
    let used = c.get_resource_usage();
    let ((), errors) = capture_logcontext_errors(|| {
        set_current_context(&c);
        burn(0.005);
        assert_eq!(
            c.get_resource_usage(),
            used,
            "not running: no current period"
        );
        set_current_context(SENTINEL_CONTEXT);
    });
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "Re-starting finished log context f",
            "Called stop on logcontext f without recording a start rusage",
        ]
    );
    assert_eq!(c.get_resource_usage(), used);
}

// Synapse: semantics 2.8 #75 (Exp: stop without a start snapshot reports and accounts nothing)
#[test]
fn stop_without_a_start_is_reported_and_accounts_nothing() {
    let c = ctx("ch");
    let ((), errors) = capture_logcontext_errors(|| c.stop_with(rusage(4.0, 2.0)));
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["Called stop on logcontext ch without recording a start rusage"]
    );
    assert_eq!(c.get_resource_usage(), ContextResourceUsage::new());
}

// Synapse: semantics 2.8 #75 (Exp: rusage None, a platform without RUSAGE_THREAD)
#[test]
fn without_a_clock_start_and_stop_record_and_report_nothing() {
    let c = ctx("a");
    let ((), errors) = capture_logcontext_errors(|| {
        c.stop_with(None);
        c.start_with(None);
        c.start_with(None);
        c.stop_with(None);
    });
    assert!(errors.is_empty(), "{errors:?}");
    // A snapshot then `stop(None)`: the snapshot is forgotten, nothing is
    // accounted, and a later stop finds no start.
    let ((), errors) = capture_logcontext_errors(|| {
        c.start_with(rusage(1.0, 1.0));
        c.stop_with(None);
        c.stop_with(rusage(2.0, 2.0));
    });
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["Called stop on logcontext a without recording a start rusage"]
    );
    assert_eq!(c.get_resource_usage(), ContextResourceUsage::new());
}

// ---------------------------------------------------------------------------
// Database counters
// ---------------------------------------------------------------------------

// Synapse: TEVW::HaveSeenEventsTestCase.test_simple (ctx.get_resource_usage().db_txn_count); semantics 2.8 #87
#[test]
fn database_transactions_are_counted_on_the_context_and_its_ancestors() {
    let parent = ctx("test");
    let kid = child("test-db", &parent);
    kid.add_database_transaction(0.5).unwrap();
    kid.add_database_transaction(0.0).unwrap();
    parent.add_database_transaction(0.25).unwrap();
    let (k, p) = (kid.get_resource_usage(), parent.get_resource_usage());
    assert_eq!((k.db_txn_count, k.db_txn_duration_sec), (2, 0.5));
    assert_eq!((p.db_txn_count, p.db_txn_duration_sec), (3, 0.75));
    // A second, separate context starts from nothing.
    assert_eq!(ctx("test").get_resource_usage().db_txn_count, 0);
}

// Synapse: semantics 2.8 #87 (add_database_scheduled added to every ancestor)
#[test]
fn database_scheduling_time_is_added_to_the_context_and_its_ancestors() {
    let parent = ctx("p");
    let kid = child("ch", &parent);
    kid.add_database_scheduled(0.25).unwrap();
    for c in [&kid, &parent] {
        let u = c.get_resource_usage();
        assert_eq!((u.db_sched_duration_sec, u.db_txn_count), (0.25, 0));
    }
}

// Synapse: TEVW::EventCacheTestCase.test_simple (evt_db_fetch_count); semantics 2.8 #87
#[test]
fn event_fetches_are_counted_on_the_context_and_its_ancestors() {
    let parent = ctx("test");
    let kid = child("test-fetch", &parent);
    kid.record_event_fetch(4);
    // Any count is taken (Exp: record_event_fetch(-2) subtracts).
    kid.record_event_fetch(-2);
    assert_eq!(kid.get_resource_usage().evt_db_fetch_count, 2);
    assert_eq!(parent.get_resource_usage().evt_db_fetch_count, 2);
}

// Synapse: semantics 2.8 #87 (negative DB durations raise ValueError); Exp (messages)
#[test]
fn a_negative_database_duration_is_an_error_and_records_nothing() {
    let parent = ctx("p");
    let kid = child("ch", &parent);
    let e = kid.add_database_transaction(-1.0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "DB txn time can only be zero or non-negative"
    );
    assert_eq!((e.what, e.duration_sec), ("DB txn", -1.0));
    let e = kid.add_database_scheduled(-0.5).unwrap_err();
    assert_eq!(
        e.to_string(),
        "DB scheduling time can only be zero or non-negative"
    );
    for c in [&kid, &parent] {
        assert_eq!(c.get_resource_usage(), ContextResourceUsage::new());
    }
}

// Synapse: semantics 2.8 #70 (the sentinel accepts every accounting call and does nothing)
#[test]
fn the_sentinel_accepts_accounting_calls_and_records_nothing() {
    let ((), errors) = capture_logcontext_errors(|| {
        assert!(SENTINEL_CONTEXT.add_database_transaction(-1.0).is_ok());
        assert!(SENTINEL_CONTEXT.add_database_scheduled(-1.0).is_ok());
        SENTINEL_CONTEXT.record_event_fetch(3);
        SENTINEL_CONTEXT.start_with(rusage(1.0, 1.0));
        SENTINEL_CONTEXT.stop_with(rusage(0.0, 0.0));
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: semantics 2.8 #87 (recording goes to the current ctx through current_context())
#[test]
fn current_context_records_on_the_context_current_now() {
    let c = ctx("req");
    let _scope = c.entered();
    current_context().add_database_transaction(0.5).unwrap();
    current_context().add_database_scheduled(0.125).unwrap();
    current_context().record_event_fetch(1);
    assert!(current_context().add_database_transaction(-1.0).is_err());
    let u = c.get_resource_usage();
    assert_eq!(
        (
            u.db_txn_count,
            u.db_txn_duration_sec,
            u.db_sched_duration_sec,
            u.evt_db_fetch_count
        ),
        (1, 0.5, 0.125, 1)
    );
}

// Synapse: TEVW::EventCacheTestCase.test_dedupe (two lookups of one event fetch it once, counted on the initiator's ctx)
#[test]
fn concurrent_lookups_sharing_one_fetch_count_it_once() {
    // A cache whose lookups join a pending fetch: only the first records it.
    type Pending = Rc<RefCell<HashMap<&'static str, ObservableDeferred<&'static str>>>>;
    let pending: Pending = Rc::default();
    let db: Deferred<&'static str> = Deferred::new();
    let get_event = {
        let (pending, db) = (pending.clone(), db.clone());
        move |id: &'static str| {
            let (pending, db) = (pending.clone(), db.clone());
            async move {
                let observer = {
                    let mut map = pending.borrow_mut();
                    let entry = map.entry(id).or_insert_with(|| {
                        current_context().record_event_fetch(1);
                        ObservableDeferred::new(db.clone(), true)
                    });
                    entry.observe()
                };
                make_deferred_yieldable(observer).await
            }
        }
    };
    let test = ctx("test");
    let t = test.clone();
    let ((), errors) = capture_logcontext_errors(|| {
        let d = ensure_deferred(async move {
            let _scope = t.entered();
            let found = yieldable_gather_results(get_event, ["$ev", "$ev"]).await?;
            assert_eq!(t.get_resource_usage().evt_db_fetch_count, 1);
            Ok::<_, Failure>(found)
        });
        let _outside = PreserveLoggingContext::sentinel();
        db.callback("event").unwrap();
        assert_eq!(d.result().value(), Some(vec!["event", "event"]));
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(test.get_resource_usage().evt_db_fetch_count, 1);
}
