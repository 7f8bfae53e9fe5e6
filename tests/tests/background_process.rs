//! Synapse's background processes (`twisted_compat::run_as_background_process`):
//! the instance's own context, its name and numbering, what the caller sees,
//! failures and cancellation swallowed, and the context the returned
//! Deferred fires in.
//!
//! Synapse behaviours covered: section 2.9, items 91, 92 (the context has no
//! parent; the metrics: starts, in flight, CPU and database usage, updated
//! on scrape and exit), 93 and 94, and the misuse reported when a process's
//! context is lost or brought back after the process ended. Item 95
//! (`HomeServer.run_as_background_process` and shutdown) has no counterpart
//! here.
//!
//! Each test runs on its own thread, which starts in the sentinel context
//! with no process counted yet and no metrics.

use std::cell::RefCell;
use std::rc::Rc;

use integration_tests::support::capture_logs;
use twisted_compat::background_process::background_process_logging_context;
use twisted_compat::{
    BackgroundProcessMetrics, LogcontextError, LoggingContext, PreserveLoggingContext,
    SENTINEL_CONTEXT, ThreadCpuUsage, capture_logcontext_errors, clear_background_process_counts,
    collect_background_process_metrics, current_context, get_thread_resource_usage,
    make_deferred_yieldable, run_as_background_process, run_in_background, set_current_context,
};
use twisted_deferred::{AnyValue, Deferred, Failure, ensure_deferred, succeed};

const HS: &str = "test.server";

fn current() -> String {
    current_context().to_string()
}

fn messages(errors: &[LogcontextError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

fn new_log() -> Rc<RefCell<Vec<String>>> {
    Rc::new(RefCell::new(Vec::new()))
}

// Synapse: semantics 2.9 #91 (Exp); golden logcontext/bgprocess_names_and_contexts
#[test]
fn a_process_runs_at_once_in_a_fresh_context_named_after_its_description() {
    let seen = new_log();
    let ((), errors) = capture_logcontext_errors(|| {
        let s = seen.clone();
        let d = run_as_background_process("job", HS, move || async move {
            s.borrow_mut().push(current());
            Ok::<_, Failure>(Some(1))
        });
        assert_eq!(d.result().value(), Some(Some(1)));
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["job-0"]);
    assert!(current_context().is_sentinel());
}

// Synapse: semantics 2.9 #91 (Exp: n counts per description, from 0)
#[test]
fn instances_are_numbered_per_description_from_zero() {
    let names = new_log();
    let start = |desc: &'static str| {
        let n = names.clone();
        run_as_background_process(desc, HS, move || async move {
            n.borrow_mut().push(current());
            Ok::<_, Failure>(())
        });
    };
    start("a");
    start("b");
    start("a");
    start("a");
    start("b");
    assert_eq!(*names.borrow(), ["a-0", "b-0", "a-1", "a-2", "b-1"]);
    clear_background_process_counts();
    start("a");
    assert_eq!(names.borrow().last().map(String::as_str), Some("a-0"));
}

// Synapse: semantics 2.9 #91 (Exp: the previous context is the sentinel; the caller's is unchanged)
#[test]
fn the_callers_context_is_unchanged_and_not_the_processs_previous_context() {
    let req = LoggingContext::new("req", HS);
    let _scope = req.entered();
    let contexts = Rc::new(RefCell::new(Vec::new()));
    let c = contexts.clone();
    let ((), errors) = capture_logcontext_errors(|| {
        run_as_background_process("job", HS, move || async move {
            c.borrow_mut().push(current_context());
            Ok::<_, Failure>(())
        });
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(current_context(), req);
    let contexts = contexts.borrow();
    let own = contexts[0].context().expect("a real context");
    assert_eq!(own.name(), "job-0");
    assert!(own.previous_context().is_sentinel());
    assert_eq!(own.server_name(), HS);
    assert!(own.finished(), "exited when the process ended");
}

// Synapse: semantics 2.9 #92 (Code: the background context has no parent)
#[test]
fn the_process_context_has_no_parent_and_no_request() {
    let req = LoggingContext::new("req", HS);
    let _scope = req.entered();
    let own = Rc::new(RefCell::new(None));
    let o = own.clone();
    run_as_background_process("job", HS, move || async move {
        *o.borrow_mut() = current_context().context().cloned();
        Ok::<_, Failure>(())
    });
    let own = own.borrow().clone().expect("ran in a context");
    assert!(own.parent_context().is_none());
    assert!(own.request().is_none());
}

// Synapse: cancellation.md E-OK; golden logcontext/bgprocess_suspends_in_its_context
#[test]
fn a_suspended_process_keeps_its_context_and_resumes_in_the_firers() {
    let x: Deferred<i32> = Deferred::new();
    let seen = new_log();
    let req = LoggingContext::new("req", HS);
    let _scope = req.entered();
    let (x2, s) = (x.clone(), seen.clone());
    let (d, errors) = capture_logcontext_errors(|| {
        run_as_background_process("job", HS, move || async move {
            s.borrow_mut().push(current());
            let v = x2.await?;
            s.borrow_mut().push(current());
            Ok::<_, Failure>(Some(v))
        })
    });
    // It suspended with its own context current: the PreserveLoggingContext
    // block around it expected the sentinel.
    assert_eq!(
        messages(&errors),
        ["Expected logging context sentinel but found job-0"]
    );
    assert_eq!(current_context(), req);
    assert!(!d.called());
    let ((), errors) = capture_logcontext_errors(|| {
        let _outside = twisted_compat::PreserveLoggingContext::sentinel();
        x.callback(4).unwrap();
        assert!(current_context().is_sentinel());
    });
    // Resumed in the sentinel (the firer's context), so its exit found it lost.
    assert_eq!(
        messages(&errors),
        ["Expected logging context job-0 was lost"]
    );
    assert_eq!(*seen.borrow(), ["job-0", "sentinel"]);
    assert_eq!(d.result().value(), Some(Some(4)));
}

// Synapse: semantics 2.9 #91, #94 (a process that follows the rules is clean)
#[test]
fn a_process_following_the_rules_reports_nothing_and_fires_in_the_sentinel() {
    let x: Deferred<i32> = Deferred::new();
    let seen = new_log();
    let req = LoggingContext::new("req", HS);
    let _scope = req.entered();
    let (x2, s) = (x.clone(), seen.clone());
    let ((), errors) = capture_logcontext_errors(|| {
        let d = run_as_background_process("job", HS, move || async move {
            let v = make_deferred_yieldable(x2).await?;
            s.borrow_mut().push(current());
            Ok::<_, Failure>(Some(v))
        });
        let s = seen.clone();
        d.add_callback(move |v| {
            s.borrow_mut().push(current());
            Ok(v)
        });
        assert_eq!(current_context(), req);
        let _outside = twisted_compat::PreserveLoggingContext::sentinel();
        x.callback(5).unwrap();
        assert_eq!(d.result().value(), Some(Some(5)));
    });
    assert!(errors.is_empty(), "{errors:?}");
    // It resumed in its own context; the returned Deferred fired after that
    // context exited, in the sentinel.
    assert_eq!(*seen.borrow(), ["job-0", "sentinel"]);
}

// Synapse: semantics 2.9 #93 (Exp); golden logcontext/bgprocess_swallows_failures
#[test]
fn a_failure_is_swallowed_and_the_deferred_succeeds_with_none() {
    let d = run_as_background_process("fails", HS, || async {
        Err::<Option<i32>, _>(Failure::msg("lost"))
    });
    assert_eq!(d.result().value(), Some(None));
    let d: Deferred<AnyValue> = run_as_background_process("fails", HS, || async {
        Err::<AnyValue, _>(Failure::msg("lost"))
    });
    assert!(d.result().value().unwrap().is_none(), "Python's None");
    let d = run_as_background_process("fails", HS, || async { Err::<(), _>(Failure::msg("x")) });
    assert_eq!(d.result().value(), Some(()));
}

// Synapse: semantics 2.9 #93 (Exp: a panic is Rust's raise)
#[test]
fn a_panic_is_swallowed_and_the_context_still_exits() {
    let own = Rc::new(RefCell::new(None));
    let o = own.clone();
    let d = run_as_background_process("panics", HS, move || async move {
        *o.borrow_mut() = current_context().context().cloned();
        if o.borrow().is_some() {
            panic!("boom");
        }
        Ok::<_, Failure>(Some(1))
    });
    assert_eq!(d.result().value(), Some(None));
    assert!(own.borrow().as_ref().unwrap().finished());
    assert!(current_context().is_sentinel());
    // Panicking before returning a future is swallowed too.
    let d = run_as_background_process("panics", HS, || -> Deferred<Option<i32>> {
        panic!("in the function itself")
    });
    assert_eq!(d.result().value(), Some(None));
}

// Synapse: semantics 2.9 #93 (Exp: cancelling gives success(None), not CancelledError)
#[test]
fn cancelling_a_process_gives_none_not_cancelled_error() {
    let y: Deferred<Option<i32>> = Deferred::new();
    let thrown = new_log();
    let (y2, t) = (y.clone(), thrown.clone());
    let d = run_as_background_process("waits", HS, move || async move {
        match y2.await {
            Err(f) => {
                t.borrow_mut().push(f.message());
                Err(f)
            }
            ok => ok,
        }
    });
    assert!(!d.called());
    let ((), errors) = capture_logcontext_errors(|| d.cancel().unwrap());
    assert_eq!(thrown.borrow().len(), 1, "CancelledError reached the await");
    assert_eq!(d.result().value(), Some(None));
    assert!(y.called());
    // Cancelled from the sentinel: the process resumed there and found its
    // context lost when it exited.
    assert_eq!(
        messages(&errors),
        ["Expected logging context waits-0 was lost"]
    );
}

// Synapse: semantics 2.9 #91 (func may return a Deferred, awaited by the process)
#[test]
fn a_function_returning_a_deferred_is_awaited() {
    let d = run_as_background_process("deferred", HS, || succeed(Some("value")));
    assert_eq!(d.result().value(), Some(Some("value")));
    let pending: Deferred<Option<i32>> = Deferred::new();
    let p = pending.clone();
    let d = run_as_background_process("deferred", HS, move || p);
    assert!(!d.called());
    pending.callback(Some(2)).unwrap();
    assert_eq!(d.result().value(), Some(Some(2)));
}

// Synapse: semantics 2.9 #94 (Code: await the returned Deferred through make_deferred_yieldable)
#[test]
fn awaiting_the_process_through_make_deferred_yieldable_keeps_the_callers_context() {
    let x: Deferred<i32> = Deferred::new();
    let seen = new_log();
    let (x2, s) = (x.clone(), seen.clone());
    let ((), errors) = capture_logcontext_errors(|| {
        let outer = ensure_deferred(async move {
            let req = LoggingContext::new("req", HS);
            let _scope = req.entered();
            let d = run_as_background_process("job", HS, move || async move {
                let v = make_deferred_yieldable(x2).await?;
                Ok::<_, Failure>(Some(v))
            });
            let v = make_deferred_yieldable(d).await?;
            s.borrow_mut().push(current());
            Ok::<_, Failure>(v)
        });
        x.callback(6).unwrap();
        assert_eq!(outer.result().value(), Some(Some(6)));
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(*seen.borrow(), ["req"]);
    assert!(current_context().is_sentinel());
}

// ---------------------------------------------------------------------------
// Misuse around a process's context
// ---------------------------------------------------------------------------

// Synapse: semantics 2.8 #73, 2.9 #91 (Exp: the process's context found lost when the process ends)
#[test]
fn a_process_ending_with_another_context_current_reports_its_context_lost() {
    let req = LoggingContext::new("req", HS);
    let _scope = req.entered();
    let ((), errors) = capture_logcontext_errors(|| {
        run_as_background_process("job", HS, || async {
            set_current_context(SENTINEL_CONTEXT);
            Ok::<_, Failure>(())
        });
    });
    assert_eq!(
        messages(&errors),
        ["Expected logging context job-0 was lost"]
    );
    assert_eq!(current_context(), req);
}

// Synapse: semantics 2.8 #82, 2.9 #91 (Exp: "Background process re-entered without a proc")
#[test]
fn work_resuming_after_its_process_ended_restarts_the_finished_context() {
    let later: Deferred<()> = Deferred::new();
    let seen = new_log();
    let (l, s) = (later.clone(), seen.clone());
    let d = run_as_background_process("job", HS, move || async move {
        // Fire-and-forget work, in the process's own context.
        run_in_background(move || async move {
            make_deferred_yieldable(l).await?;
            s.borrow_mut().push(current());
            Ok::<_, Failure>(())
        });
        Ok::<_, Failure>(())
    });
    assert_eq!(d.result().value(), Some(()));
    let (((), errors), logs) = capture_logs(|| {
        capture_logcontext_errors(|| {
            let _outside = PreserveLoggingContext::sentinel();
            later.callback(()).unwrap();
        })
    });
    assert_eq!(
        *seen.borrow(),
        ["job-0"],
        "resumed in the ended process's context"
    );
    assert_eq!(
        messages(&errors),
        [
            "Re-starting finished log context job-0",
            "Called stop on logcontext job-0 without recording a start rusage",
        ]
    );
    assert_eq!(
        logs,
        [(
            log::Level::Error,
            "Background process re-entered without a proc: job-0".to_string()
        )]
    );
    assert!(current_context().is_sentinel());
}

// Synapse: BackgroundProcessLoggingContext.__exit__ (Exp: "Background process exited without a proc")
#[test]
fn exiting_a_process_context_twice_logs_it() {
    let ctx = background_process_logging_context("job", HS, 0);
    drop(ctx.entered());
    let (((), errors), logs) = capture_logs(|| {
        capture_logcontext_errors(|| {
            let _preserve = PreserveLoggingContext::new(&ctx);
            ctx.exit();
        })
    });
    assert_eq!(
        messages(&errors),
        [
            "Re-starting finished log context job-0",
            "Called stop on logcontext job-0 without recording a start rusage",
            "Expected logging context job-0 was lost",
        ]
    );
    assert_eq!(
        logs,
        [
            (
                log::Level::Error,
                "Background process re-entered without a proc: job-0".to_string()
            ),
            (
                log::Level::Error,
                "Background process exited without a proc: job-0".to_string()
            ),
        ]
    );
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

fn metrics_of(desc: &str) -> BackgroundProcessMetrics {
    collect_background_process_metrics()
        .into_iter()
        .find(|m| m.name == desc && m.server_name == HS)
        .unwrap_or_else(|| panic!("no metrics for {desc}"))
}

fn burn(seconds: f64) {
    let start = get_thread_resource_usage().unwrap().total();
    while get_thread_resource_usage().unwrap().total() - start < seconds {
        std::hint::black_box(0u64);
    }
}

// Synapse: semantics 2.9 #92 (Code: start counter, in-flight gauge, CPU and DB counters per desc and server)
#[test]
fn a_process_records_its_usage_in_its_descriptions_metrics() {
    for _ in 0..2 {
        run_as_background_process("job", HS, || async {
            current_context().add_database_transaction(0.5)?;
            current_context().add_database_scheduled(0.25)?;
            burn(0.002);
            Ok::<_, Failure>(())
        });
    }
    let m = metrics_of("job");
    assert_eq!((m.start_count, m.in_flight), (2, 0));
    assert_eq!(
        (
            m.db_txn_count,
            m.db_txn_duration_seconds,
            m.db_sched_duration_seconds
        ),
        (2, 1.0, 0.5)
    );
    assert!(
        m.ru_utime_seconds + m.ru_stime_seconds >= 0.004 - 1e-9,
        "{m:?}"
    );
    // Another description has its own series.
    run_as_background_process("other", "elsewhere", || async { Ok::<_, Failure>(()) });
    assert_eq!(metrics_of("job").start_count, 2);
    let other = collect_background_process_metrics()
        .into_iter()
        .find(|m| m.name == "other")
        .unwrap();
    assert_eq!(
        (other.server_name.as_str(), other.start_count),
        ("elsewhere", 1)
    );
}

// Synapse: semantics 2.9 #93 (Exp: the in-flight gauge is always decremented)
#[test]
fn a_process_is_in_flight_until_its_work_ends_even_when_it_fails() {
    let x: Deferred<()> = Deferred::new();
    let x2 = x.clone();
    let d = run_as_background_process("waits", HS, move || async move {
        x2.await?;
        Err::<(), _>(Failure::msg("then fails"))
    });
    assert_eq!(metrics_of("waits").in_flight, 1);
    let ((), _errors) = capture_logcontext_errors(|| x.callback(()).unwrap());
    assert_eq!(d.result().value(), Some(()));
    let m = metrics_of("waits");
    assert_eq!((m.start_count, m.in_flight), (1, 0));
}

// Synapse: semantics 2.9 #92 (Code: metrics of the processes active since the last scrape are updated on each scrape)
#[test]
fn a_scrape_brings_a_running_process_up_to_date_and_the_exit_adds_only_the_rest() {
    let x: Deferred<()> = Deferred::new();
    let x2 = x.clone();
    run_as_background_process("long", HS, move || async move {
        current_context().add_database_transaction(0.5)?;
        make_deferred_yieldable(x2).await?;
        current_context().add_database_transaction(0.25)?;
        Ok::<_, Failure>(())
    });
    let first = metrics_of("long");
    assert_eq!(
        (first.db_txn_count, first.db_txn_duration_seconds),
        (1, 0.5)
    );
    // A second scrape: nothing ran since, nothing is added.
    assert_eq!(metrics_of("long"), first);
    let _outside = PreserveLoggingContext::sentinel();
    x.callback(()).unwrap();
    let last = metrics_of("long");
    assert_eq!((last.db_txn_count, last.db_txn_duration_seconds), (2, 0.75));
    assert!(last.ru_utime_seconds >= first.ru_utime_seconds);
}

// Synapse: TBGM::TestBackgroundProcessMetrics.test_update_metrics_with_negative_time_diff
#[test]
fn negative_cpu_differences_are_ignored() {
    burn(0.005);
    let scraped = Rc::new(RefCell::new(None));
    let sc = scraped.clone();
    let (((), errors), logs) = capture_logs(|| {
        capture_logcontext_errors(|| {
            run_as_background_process("skewed", HS, move || async move {
                let ctx = current_context().context().cloned().unwrap();
                // Pretend the current period started at time 0: a scrape now
                // takes all of this thread's CPU time as the process's.
                ctx.stop_with(get_thread_resource_usage());
                ctx.start_with(Some(ThreadCpuUsage::default()));
                *sc.borrow_mut() = Some(metrics_of("skewed"));
                // The period then ends at time 0: the context's own usage
                // stays below what the scrape reported.
                ctx.stop_with(Some(ThreadCpuUsage::default()));
                ctx.start_with(get_thread_resource_usage());
                Ok::<_, Failure>(())
            });
        })
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert!(logs.is_empty(), "{logs:?}");
    let scraped = scraped.borrow().clone().unwrap();
    assert!(scraped.ru_utime_seconds + scraped.ru_stime_seconds >= 0.005 - 1e-9);
    // At the exit the difference was negative: it counted as nothing.
    let after = metrics_of("skewed");
    assert_eq!(
        (after.ru_utime_seconds, after.ru_stime_seconds),
        (scraped.ru_utime_seconds, scraped.ru_stime_seconds)
    );
    assert_eq!(after.in_flight, 0);
}
