//! Synapse's `defer_to_thread` / `defer_to_threadpool`
//! (`twisted_compat::defer_to_thread`): the function runs on a worker in a
//! child of the caller's context, whose usage is credited to the caller;
//! the Deferred follows the logcontext rules, warns from the sentinel, and
//! has no canceller.
//!
//! Synapse behaviours covered: section 2.8, item 88 (and item 87 across
//! threads). Synapse has no test of its own for these (Code); the
//! counterparts of Twisted's `deferToThreadPool` tests live in
//! `threadpool.rs`.
//!
//! Each test runs on its own thread, starts in the sentinel context and
//! runs a reactor of its own.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;

use integration_tests::support::capture_logs;
use twisted_compat::{
    ContextRequest, LoggingContext, SENTINEL_SERVER_NAME, capture_logcontext_errors,
    current_context, defer_to_thread, defer_to_threadpool, get_thread_resource_usage,
};
use twisted_deferred::{CancelledError, Deferred, Failure, PanicError, ensure_deferred};
use twisted_reactor::error::ThreadPoolStopped;
use twisted_reactor::{Reactor, ThreadPool};

const HS: &str = "test.server";
const WATCHDOG: f64 = 60.0;

fn ctx(name: &str) -> LoggingContext {
    LoggingContext::new(name, HS)
}

fn cpu_of(c: &LoggingContext) -> f64 {
    let u = c.get_resource_usage();
    u.ru_utime + u.ru_stime
}

/// Burns at least `seconds` of this thread's CPU time; returns how much, by
/// the thread's clock.
fn burn(seconds: f64) -> f64 {
    let start = get_thread_resource_usage().unwrap().total();
    loop {
        std::hint::black_box(0u64);
        let used = get_thread_resource_usage().unwrap().total() - start;
        if used >= seconds {
            return used;
        }
    }
}

/// Runs the reactor until `stop` is called (or the watchdog fires).
fn run(reactor: &Reactor) {
    let timed_out = Rc::new(Cell::new(false));
    let (r, flag) = (reactor.clone(), timed_out.clone());
    reactor
        .call_later(WATCHDOG, move || {
            flag.set(true);
            r.crash();
        })
        .unwrap();
    reactor.run().unwrap();
    assert!(!timed_out.get(), "the reactor did not stop by itself");
}

/// Stops the reactor once `d` fired, passing its result on.
fn stop_when_fired<T: 'static>(reactor: &Reactor, d: &Deferred<T>) -> Deferred<T> {
    let r = reactor.clone();
    d.add_both(move |outcome: Result<T, Failure>| {
        r.stop().unwrap();
        outcome
    })
}

/// What the function saw of its context on the worker.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    name: String,
    server_name: String,
    request_id: Option<String>,
    has_parent: bool,
    on_reactor_thread: bool,
}

fn seen_here(reactor_thread: thread::ThreadId) -> Seen {
    let current = current_context();
    Seen {
        name: current.name().to_owned(),
        server_name: current.server_name().to_owned(),
        request_id: current.request().map(|r| r.request_id.clone()),
        has_parent: current
            .context()
            .is_some_and(|c| c.parent_context().is_some()),
        on_reactor_thread: thread::current().id() == reactor_thread,
    }
}

// Synapse: semantics 2.8 #88 (Code: f runs on a worker in a new ctx with the caller's name, the caller as parent)
#[test]
fn the_function_runs_on_a_worker_in_a_context_named_after_the_callers() {
    let reactor = Reactor::new().unwrap();
    let me = thread::current().id();
    let request = ContextRequest {
        request_id: "GET-7".into(),
        method: "GET".into(),
        ..ContextRequest::default()
    };
    let caller = LoggingContext::builder("GET-7", "example.com")
        .request(request)
        .build();
    let (r, c) = (reactor.clone(), caller.clone());
    let d = ensure_deferred(async move {
        let _scope = c.entered();
        let seen = defer_to_thread(&r, move || Ok::<_, io::Error>(seen_here(me))).await?;
        Ok::<_, Failure>(seen)
    });
    let d = stop_when_fired(&reactor, &d);
    run(&reactor);
    assert_eq!(
        d.result().value(),
        Some(Seen {
            name: "GET-7".into(),
            server_name: "example.com".into(),
            request_id: Some("GET-7".into()),
            // The parent stays on the reactor thread: usage is credited to
            // it from there.
            has_parent: false,
            on_reactor_thread: false,
        })
    );
}

// Synapse: semantics 2.8 #88 (Code: the returned Deferred obeys the ctx rules, via make_deferred_yieldable)
#[test]
fn the_deferred_follows_the_logcontext_rules() {
    let reactor = Reactor::new().unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let ((), errors) = capture_logcontext_errors(|| {
        let (r, s) = (reactor.clone(), seen.clone());
        let d = ensure_deferred(async move {
            let caller = ctx("req");
            let _scope = caller.entered();
            let pending = defer_to_thread(&r, || Ok::<_, io::Error>(1));
            // Incomplete: the sentinel is current until it fires.
            s.borrow_mut().push(current_context().to_string());
            let v = pending.await?;
            // Fired: the caller's context is back.
            s.borrow_mut().push(current_context().to_string());
            Ok::<_, Failure>(v)
        });
        let s = seen.clone();
        let d = d.add_both(move |outcome| {
            s.borrow_mut().push(current_context().to_string());
            outcome
        });
        let d = stop_when_fired(&reactor, &d);
        run(&reactor);
        assert_eq!(d.result().value(), Some(1));
    });
    // ... and the reactor runs on in the sentinel.
    assert_eq!(*seen.borrow(), ["sentinel", "req", "sentinel"]);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(current_context().is_sentinel());
}

// Synapse: semantics 2.8 #87, #88 (Code: CPU used in the thread is credited upward)
#[test]
fn cpu_burned_on_the_worker_is_credited_to_the_caller_and_its_ancestors() {
    let reactor = Reactor::new().unwrap();
    let grandparent = ctx("req");
    let parent = LoggingContext::builder("req-db", HS)
        .parent_context(&grandparent)
        .build();
    let (r, p) = (reactor.clone(), parent.clone());
    let before = cpu_of(&grandparent);
    let d = ensure_deferred(async move {
        let _scope = p.entered();
        let burned = defer_to_thread(&r, || Ok::<_, io::Error>(burn(0.02))).await?;
        Ok::<_, Failure>(burned)
    });
    let d = stop_when_fired(&reactor, &d);
    run(&reactor);
    let burned = d.result().value().unwrap();
    assert!(burned >= 0.02);
    // The worker's 20 ms went to the caller and its parent (the reactor
    // thread's own time adds to that, never takes from it).
    assert!(
        cpu_of(&parent) + 1e-9 >= burned,
        "{} < {burned}",
        cpu_of(&parent)
    );
    assert!(cpu_of(&grandparent) - before + 1e-9 >= burned);
}

// Synapse: semantics 2.8 #87, #88 (database usage recorded in the thread's ctx reaches the caller's)
#[test]
fn database_usage_recorded_on_the_worker_is_credited_to_the_caller() {
    let reactor = Reactor::new().unwrap();
    let caller = ctx("req");
    let (r, c) = (reactor.clone(), caller.clone());
    let d = ensure_deferred(async move {
        let _scope = c.entered();
        defer_to_thread(&r, || {
            current_context()
                .add_database_scheduled(0.125)
                .map_err(io::Error::other)?;
            // A nested context on the worker credits the worker's context.
            let txn = twisted_compat::nested_logging_context("txn");
            let _txn = txn.entered();
            txn.add_database_transaction(0.5)
                .map_err(io::Error::other)?;
            txn.record_event_fetch(3);
            Ok::<_, io::Error>(())
        })
        .await?;
        // Already credited when the Deferred fires.
        let u = c.get_resource_usage();
        Ok::<_, Failure>((
            u.db_txn_count,
            u.db_txn_duration_sec,
            u.db_sched_duration_sec,
            u.evt_db_fetch_count,
        ))
    });
    let d = stop_when_fired(&reactor, &d);
    run(&reactor);
    assert_eq!(d.result().value(), Some((1, 0.5, 0.125, 3)));
    assert_eq!(caller.get_resource_usage().db_txn_count, 1);
}

// Synapse: semantics 2.8 #88 (Code: "Calling defer_to_threadpool from sentinel context: metrics will be lost")
#[test]
fn called_from_the_sentinel_it_warns_and_runs_in_a_sentinel_named_context() {
    let reactor = Reactor::new().unwrap();
    let me = thread::current().id();
    let (d, logs) =
        capture_logs(|| defer_to_thread(&reactor, move || Ok::<_, io::Error>(seen_here(me))));
    assert_eq!(
        logs,
        [(
            log::Level::Warn,
            "Calling defer_to_threadpool from sentinel context: metrics will be lost".to_string()
        )]
    );
    let d = stop_when_fired(&reactor, &d);
    run(&reactor);
    let seen = d.result().value().unwrap();
    assert_eq!(
        (
            seen.name.as_str(),
            seen.server_name.as_str(),
            seen.request_id
        ),
        ("sentinel", SENTINEL_SERVER_NAME, None)
    );
    assert!(current_context().is_sentinel());
}

// Synapse: semantics 2.8 #88 (Code: no canceller: CE at once, the thread runs on, its result dropped; T1)
#[test]
fn cancelling_fails_at_once_and_the_threads_usage_is_still_credited() {
    let reactor = Reactor::new().unwrap();
    let caller = ctx("req");
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let ((), errors) = capture_logcontext_errors(|| {
        let (r, c) = (reactor.clone(), caller.clone());
        let d = ensure_deferred(async move {
            let _scope = c.entered();
            let outcome = defer_to_thread(&r, move || {
                let _ = release_rx.recv();
                current_context()
                    .add_database_transaction(0.5)
                    .map_err(io::Error::other)?;
                let _ = done_tx.send(());
                Ok::<_, io::Error>("dropped".to_string())
            })
            .await;
            Ok::<_, Failure>(match outcome {
                Err(f) if f.check::<CancelledError>() => {
                    format!("CancelledError in {}", current_context())
                }
                Err(f) => format!("{f}"),
                Ok(v) => v,
            })
        });
        assert!(!d.called());
        // Cancelled from the sentinel while the thread still runs: at once.
        d.cancel().unwrap();
        assert_eq!(d.result().value().as_deref(), Some("CancelledError in req"));
        assert!(current_context().is_sentinel());
        assert_eq!(caller.get_resource_usage().db_txn_count, 0);
        // Now let the thread finish, and run until its usage came back.
        release_tx.send(()).unwrap();
        let (r, c) = (reactor.clone(), caller.clone());
        reactor.call_when_running(move || {
            let _ = done_rx.recv();
            poll_until(&r, move || c.get_resource_usage().db_txn_count == 1);
        });
        run(&reactor);
        // The result was dropped: d kept its outcome.
        assert_eq!(d.result().value().as_deref(), Some("CancelledError in req"));
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(caller.get_resource_usage().db_txn_count, 1);
}

/// Checks `done` every millisecond, on the reactor, and stops it when true.
fn poll_until(reactor: &Reactor, done: impl Fn() -> bool + 'static) {
    if done() {
        reactor.stop().unwrap();
        return;
    }
    let r = reactor.clone();
    reactor
        .call_later(0.001, move || poll_until(&r, done))
        .unwrap();
}

// Synapse: semantics 2.8 #88 (Code: an exception in f fails the Deferred, in the caller's context)
#[test]
fn the_functions_error_fails_the_deferred_in_the_callers_context() {
    let reactor = Reactor::new().unwrap();
    let (r, c) = (reactor.clone(), ctx("req"));
    let d = ensure_deferred(async move {
        let _scope = c.entered();
        let outcome: Result<u8, Failure> = defer_to_thread(&r, || {
            Err(io::Error::new(io::ErrorKind::NotFound, "no such row"))
        })
        .await;
        let failure = outcome.unwrap_err();
        Ok::<_, Failure>((
            failure.downcast_ref::<io::Error>().map(io::Error::kind),
            current_context().to_string(),
        ))
    });
    let d = stop_when_fired(&reactor, &d);
    run(&reactor);
    assert_eq!(
        d.result().value(),
        Some((Some(io::ErrorKind::NotFound), "req".to_string()))
    );
}

// Synapse: semantics 2.8 #88, #73 (a raising f: the thread's `with LoggingContext` still exits)
#[test]
fn a_panic_fails_the_deferred_and_the_worker_context_still_exits() {
    let reactor = Reactor::new().unwrap();
    let pool = ThreadPool::new(1, 1, "one").unwrap();
    pool.start();
    let (r, p, c) = (reactor.clone(), pool.clone(), ctx("req"));
    let d = ensure_deferred(async move {
        let _scope = c.entered();
        let panicked = defer_to_threadpool(&r, &p, || -> Result<(), io::Error> {
            panic!("in the thread")
        })
        .await
        .unwrap_err()
        .check::<PanicError>();
        // The same worker runs the next call: its context was left (the
        // new one's previous context is the sentinel again).
        let previous_is_sentinel = defer_to_threadpool(&r, &p, || {
            Ok::<_, io::Error>(
                current_context()
                    .context()
                    .is_some_and(|c| c.previous_context().is_sentinel()),
            )
        })
        .await?;
        Ok::<_, Failure>((panicked, previous_is_sentinel))
    });
    let d = stop_when_fired(&reactor, &d);
    run(&reactor);
    pool.stop();
    assert_eq!(d.result().value(), Some((true, true)));
}

// Synapse: semantics 2.8 #88 (defer_to_threadpool uses the pool given)
#[test]
fn defer_to_threadpool_runs_on_the_given_pool() {
    let reactor = Reactor::new().unwrap();
    let pool = ThreadPool::new(0, 2, "db").unwrap();
    pool.start();
    let (r, p, c) = (reactor.clone(), pool.clone(), ctx("req"));
    let d = ensure_deferred(async move {
        let _scope = c.entered();
        let name = defer_to_threadpool(&r, &p, || {
            Ok::<_, io::Error>(thread::current().name().map(str::to_owned))
        })
        .await?;
        Ok::<_, Failure>(name)
    });
    let d = stop_when_fired(&reactor, &d);
    run(&reactor);
    pool.stop();
    let name = d.result().value().flatten().unwrap();
    assert!(name.starts_with("PoolThread-db-"), "{name}");
}

// Synapse: semantics 2.8 #78, #88 (a refused call gives a complete Deferred: the context is left alone)
#[test]
fn a_refused_call_fails_at_once_leaving_the_context_alone() {
    let reactor = Reactor::new().unwrap();
    let pool = ThreadPool::new(0, 1, "gone").unwrap();
    pool.start();
    pool.stop();
    let caller = ctx("req");
    let ((), errors) = capture_logcontext_errors(|| {
        let _scope = caller.entered();
        let d = defer_to_threadpool(&reactor, &pool, || Ok::<_, io::Error>(1));
        assert!(d.called());
        assert_eq!(current_context(), caller);
        let f = d.result().failure().unwrap();
        assert!(f.check::<ThreadPoolStopped>());
        d.add_errback(|_| Ok(0));
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(caller.get_resource_usage().db_txn_count, 0);
}
