//! `ThreadPool`, `deferToThread`, `deferToThreadPool` and the reactor's own
//! pool.
//!
//! Mirrors Twisted's `test/test_threadpool.py` (`ThreadPoolTests`,
//! `MemoryBackedTests`), `test/test_threads.py` (`DeferToThreadPoolTests`)
//! and `internet/test/test_threads.py` (`ThreadTestsBuilder`).

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use twisted_deferred::{CancelledError, Deferred, Failure, PanicError};
use twisted_reactor::error::{PoolSizeError, ThreadPoolStopped};
use twisted_reactor::{Reactor, ThreadPool, defer_to_thread, defer_to_threadpool};

const WATCHDOG: f64 = 60.0;

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

// Twisted: test_threads: DeferToThreadPoolTests.test_deferredResult
#[test]
fn defer_to_thread_fires_with_the_result_on_the_reactor_thread() {
    let reactor = Reactor::new().unwrap();
    let reactor_thread = thread::current().id();
    let d = defer_to_thread(&reactor, || {
        Ok::<_, io::Error>((thread::current().id(), 3 + 4))
    });
    let d = d
        .add_callback(move |(worker, v)| Ok((worker != reactor_thread, v, thread::current().id())));
    let d = stop_when_fired(&reactor, &d);
    run(&reactor);
    assert_eq!(d.result().value(), Some((true, 7, reactor_thread)));
}

// Twisted: test_threads: DeferToThreadPoolTests.test_deferredFailure
#[test]
fn defer_to_thread_fails_with_the_functions_error_on_the_reactor_thread() {
    let reactor = Reactor::new().unwrap();
    let reactor_thread = thread::current().id();
    let d: Deferred<u8> = defer_to_thread(&reactor, || {
        Err(io::Error::new(io::ErrorKind::NotFound, "no such thing"))
    });
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    let d = d.add_errback(move |f: Failure| {
        s.set(Some(thread::current().id()));
        Err(f)
    });
    let d = stop_when_fired(&reactor, &d);
    run(&reactor);
    let f = d.result().failure().unwrap();
    assert_eq!(
        f.downcast_ref::<io::Error>().unwrap().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(f.message(), "no such thing");
    assert_eq!(seen.get(), Some(reactor_thread));
    d.add_errback(|_| Ok(0));
}

#[test]
fn a_panic_in_the_thread_fails_the_deferred_with_panic_error() {
    let reactor = Reactor::new().unwrap();
    let d: Deferred<()> = defer_to_thread(&reactor, || -> Result<(), io::Error> {
        panic!("worker panicked")
    });
    let d = stop_when_fired(&reactor, &d);
    run(&reactor);
    let f = d.result().failure().unwrap();
    assert!(f.check::<PanicError>());
    assert_eq!(f.message(), "worker panicked");
    d.add_errback(|_| Ok(()));
}

#[test]
fn many_defer_to_thread_calls_each_fire_with_their_own_result() {
    let reactor = Reactor::new().unwrap();
    let ds: Vec<Deferred<u64>> = (0..200u64)
        .map(|i| defer_to_thread(&reactor, move || Ok::<_, io::Error>(i * i)))
        .collect();
    let all = twisted_deferred::gather_results(ds.clone(), false);
    let all = stop_when_fired(&reactor, &all);
    run(&reactor);
    let values = all.result().value().unwrap();
    assert_eq!(values, (0..200u64).map(|i| i * i).collect::<Vec<_>>());
}

// Twisted: test_threads: ThreadTestsBuilder.test_getThreadPool,
// test_stopThreadPool
#[test]
fn the_reactor_pool_starts_with_the_reactor_and_stops_at_shutdown() {
    let reactor = Reactor::new().unwrap();
    let pool = reactor.get_thread_pool();
    assert!(!pool.started());
    assert_eq!((pool.min(), pool.max()), (0, 10));
    let (r, p) = (reactor.clone(), pool.clone());
    let seen = Rc::new(Cell::new(false));
    let s = seen.clone();
    reactor.call_when_running(move || {
        s.set(p.started());
        r.stop()
    });
    run(&reactor);
    assert!(seen.get());
    assert!(!pool.started());
    assert_eq!(pool.workers(), 0);
}

// Twisted: test_threads: ThreadTestsBuilder.test_stopThreadPoolWhenStartedAfterReactorRan
#[test]
fn a_pool_first_used_while_running_starts_at_once_and_stops_at_shutdown() {
    let reactor = Reactor::new().unwrap();
    let pools = Rc::new(std::cell::RefCell::new(None));
    let (r, p) = (reactor.clone(), pools.clone());
    reactor.call_when_running(move || {
        let pool = r.get_thread_pool();
        assert!(pool.started());
        *p.borrow_mut() = Some(pool);
        r.stop()
    });
    run(&reactor);
    assert!(!pools.borrow().as_ref().unwrap().started());
}

// Twisted: test_threads: ThreadTestsBuilder.test_suggestThreadPoolSize
#[test]
fn suggest_thread_pool_size_sets_the_maximum() {
    let reactor = Reactor::new().unwrap();
    reactor.suggest_thread_pool_size(2);
    assert_eq!(reactor.get_thread_pool().max(), 2);
}

// Twisted: test_threadpool: ThreadPoolTests.test_callInThread (and the pool
// size: no more than `max` workers run at once)
#[test]
fn no_more_than_max_workers_run_at_once() {
    let pool = ThreadPool::new(0, 2, "bounded").unwrap();
    pool.start();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    for _ in 0..8 {
        let (running, peak, tx) = (running.clone(), peak.clone(), tx.clone());
        pool.call_in_thread(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(20));
            running.fetch_sub(1, Ordering::SeqCst);
            tx.send(()).unwrap();
        })
        .unwrap();
    }
    for _ in 0..8 {
        rx.recv_timeout(Duration::from_secs(60)).unwrap();
    }
    assert!(pool.workers() <= 2);
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    pool.stop();
}

#[test]
fn a_pool_of_n_runs_n_blocking_calls_at_once() {
    let pool = ThreadPool::new(0, 4, "wide").unwrap();
    pool.start();
    // Four calls that can only finish together: they must all be running.
    let barrier = Arc::new(Barrier::new(4));
    let (tx, rx) = mpsc::channel();
    for _ in 0..4 {
        let (barrier, tx) = (barrier.clone(), tx.clone());
        pool.call_in_thread(move || {
            barrier.wait();
            tx.send(()).unwrap();
        })
        .unwrap();
    }
    for _ in 0..4 {
        rx.recv_timeout(Duration::from_secs(60)).unwrap();
    }
    pool.stop();
}

// Twisted: test_threadpool: ThreadPoolTests.test_start, test_attributes
#[test]
fn start_runs_the_minimum_number_of_workers() {
    let pool = ThreadPool::new(3, 5, "min").unwrap();
    assert_eq!(pool.workers(), 0);
    pool.start();
    assert_eq!(pool.workers(), 3);
    assert!(pool.started());
    pool.stop();
    assert_eq!(pool.workers(), 0);
    assert!(!pool.started());
}

// Twisted: test_threadpool: MemoryBackedTests.test_workBeforeStarting,
// ThreadPoolTests.test_existingWork
#[test]
fn work_queued_before_start_runs_after_start() {
    let pool = ThreadPool::new(0, 2, "early").unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 0..3 {
        let tx = tx.clone();
        pool.call_in_thread(move || tx.send(i).unwrap()).unwrap();
    }
    assert_eq!(pool.queued(), 3);
    assert_eq!(pool.workers(), 0);
    pool.start();
    let mut got: Vec<i32> = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(60)).unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2]);
    pool.stop();
}

#[test]
fn stop_waits_for_the_queued_work_and_refuses_new_work() {
    let pool = ThreadPool::new(0, 1, "drain").unwrap();
    pool.start();
    let done = Arc::new(Mutex::new(Vec::new()));
    for i in 0..5 {
        let done = done.clone();
        pool.call_in_thread(move || {
            thread::sleep(Duration::from_millis(5));
            done.lock().unwrap().push(i);
        })
        .unwrap();
    }
    pool.stop();
    assert_eq!(*done.lock().unwrap(), [0, 1, 2, 3, 4]);
    assert_eq!(pool.call_in_thread(|| {}), Err(ThreadPoolStopped));
    // A stopped pool can start again.
    pool.start();
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread(move || tx.send("again").unwrap())
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), "again");
    pool.stop();
}

// Twisted: test_threadpool: ThreadPoolTests.test_adjustingWhenPoolStopped
#[test]
fn adjusting_a_stopped_pool_changes_bounds_only() {
    let pool = ThreadPool::new(0, 5, "adjust").unwrap();
    pool.adjust_pool_size(2, 3).unwrap();
    assert_eq!((pool.min(), pool.max(), pool.workers()), (2, 3, 0));
    assert_eq!(
        pool.adjust_pool_size(4, 3),
        Err(PoolSizeError { min: 4, max: 3 })
    );
    assert!(ThreadPool::new(2, 1, "bad").is_err());
    pool.start();
    assert_eq!(pool.workers(), 2);
    pool.adjust_pool_size(0, 1).unwrap();
    pool.stop();
    assert_eq!(pool.workers(), 0);
}

// Twisted: test_threadpool: ThreadPoolTests.test_callInThreadWithCallback,
// test_callInThreadException
#[test]
fn call_in_thread_with_callback_reports_values_and_panics_on_the_worker() {
    let pool = ThreadPool::new(0, 1, "callback").unwrap();
    pool.start();
    let (tx, rx) = mpsc::channel();
    let t = tx.clone();
    pool.call_in_thread_with_callback(
        move |r| {
            t.send((r.is_ok(), thread::current().name().map(String::from)))
                .unwrap()
        },
        || 1,
    )
    .unwrap();
    pool.call_in_thread_with_callback(
        move |r: Result<(), _>| tx.send((r.is_ok(), None)).unwrap(),
        || panic!("boom"),
    )
    .unwrap();
    let (ok, name) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(ok);
    assert!(name.unwrap().starts_with("PoolThread-callback-"));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(60)).unwrap(),
        (false, None)
    );
    // A panicking call does not kill the pool.
    let (tx, rx) = mpsc::channel();
    pool.call_in_thread(|| panic!("logged")).unwrap();
    pool.call_in_thread(move || tx.send(()).unwrap()).unwrap();
    rx.recv_timeout(Duration::from_secs(60)).unwrap();
    pool.stop();
}

#[test]
fn defer_to_threadpool_on_a_stopped_pool_fails_at_once() {
    let reactor = Reactor::new().unwrap();
    let pool = ThreadPool::new(0, 1, "stopped").unwrap();
    pool.start();
    pool.stop();
    let d: Deferred<u8> = defer_to_threadpool(&reactor, &pool, || Ok::<_, io::Error>(1));
    assert!(d.result().failure().unwrap().check::<ThreadPoolStopped>());
    d.add_errback(|_| Ok(0));
}

#[test]
fn work_dropped_by_a_pool_stopped_before_it_started_fails_its_deferred() {
    let reactor = Reactor::new().unwrap();
    let pool = ThreadPool::new(0, 1, "never").unwrap();
    let d: Deferred<u8> = defer_to_threadpool(&reactor, &pool, || Ok::<_, io::Error>(1));
    assert!(!d.called());
    pool.stop(); // drops the queued work
    let d = stop_when_fired(&reactor, &d);
    run(&reactor);
    assert!(d.result().failure().unwrap().check::<ThreadPoolStopped>());
    d.add_errback(|_| Ok(0));
}

#[test]
fn cancelling_a_defer_to_thread_deferred_ignores_the_late_result() {
    let reactor = Reactor::new().unwrap();
    let (go, wait) = mpsc::channel::<()>();
    let d: Deferred<u8> = defer_to_thread(&reactor, move || {
        wait.recv().ok();
        Ok::<_, io::Error>(1)
    });
    d.cancel().unwrap();
    assert!(d.result().failure().unwrap().check::<CancelledError>());
    d.add_errback(|_| Ok(0));
    go.send(()).unwrap();
    reactor.call_when_running({
        let r = reactor.clone();
        move || r.stop()
    });
    run(&reactor); // the pool finishes the work at shutdown; its result is swallowed
    assert_eq!(d.result().value(), Some(0));
}

// Results of work still running at shutdown are delivered before `run`
// returns (the pool finishes its work during shutdown).
#[test]
fn results_of_work_finishing_during_shutdown_still_fire() {
    let reactor = Reactor::new().unwrap();
    let d: Deferred<&str> = defer_to_thread(&reactor, || {
        thread::sleep(Duration::from_millis(50));
        Ok::<_, io::Error>("finished")
    });
    reactor.call_when_running({
        let r = reactor.clone();
        move || r.stop()
    });
    run(&reactor);
    assert_eq!(d.result().value(), Some("finished"));
}
