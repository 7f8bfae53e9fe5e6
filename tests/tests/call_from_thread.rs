//! `callFromThread`: calls handed to the reactor from other threads, and
//! futures and coroutines woken from other threads.
//!
//! Mirrors Twisted's `test/test_internet.py` `CallFromThreadTests` and
//! `CallFromThreadStopsAndWakeUpTests`, and
//! `internet/test/test_threads.py` `ThreadTestsBuilder.test_callFromThread`,
//! plus the load test of the issue: four threads sending a million calls in
//! total while the loop runs and stops, with nothing lost.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use integration_tests::support::capture_logs;
use twisted_deferred::{CancelledError, Deferred, Failure, PanicError, ensure_deferred};
use twisted_reactor::error::ReactorGone;
use twisted_reactor::{Phase, Reactor};

const WATCHDOG: f64 = 120.0;

/// Runs the reactor, failing the test if a generous watchdog had to end it.
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

const SENDERS: usize = 4;
const CALLS_PER_SENDER: u64 = 250_000;

/// What the calls record on the reactor thread: how many ran, and whether
/// each sender's calls arrived in order, none twice.
struct Tally {
    ran: AtomicU64,
    next: Vec<AtomicU64>,
    out_of_order: AtomicBool,
    on_reactor_thread: AtomicBool,
}

impl Tally {
    fn new() -> Arc<Tally> {
        Arc::new(Tally {
            ran: AtomicU64::new(0),
            next: (0..SENDERS).map(|_| AtomicU64::new(0)).collect(),
            out_of_order: AtomicBool::new(false),
            on_reactor_thread: AtomicBool::new(true),
        })
    }

    fn record(&self, sender: usize, seq: u64, reactor_thread: thread::ThreadId) {
        if thread::current().id() != reactor_thread {
            self.on_reactor_thread.store(false, Ordering::Relaxed);
        }
        if self.next[sender].load(Ordering::Relaxed) != seq {
            self.out_of_order.store(true, Ordering::Relaxed);
        }
        self.next[sender].store(seq + 1, Ordering::Relaxed);
        self.ran.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts the senders; each returns how many of its calls were refused.
fn start_senders(
    reactor: &Reactor,
    tally: &Arc<Tally>,
    start: &Arc<Barrier>,
) -> Vec<thread::JoinHandle<u64>> {
    let reactor_thread = thread::current().id();
    (0..SENDERS)
        .map(|sender| {
            let (handle, tally, start) = (reactor.handle(), tally.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                let mut refused = 0;
                for seq in 0..CALLS_PER_SENDER {
                    let tally = tally.clone();
                    let sent =
                        handle.call_from_thread(move |_| tally.record(sender, seq, reactor_thread));
                    if sent.is_err() {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect()
}

// The load test: 4 threads x 250,000 calls while the loop runs and
// is stopped. A before-shutdown trigger waits (through a Deferred) for the
// senders to finish, so every call runs, on the reactor thread, once, in
// each sender's order.
#[test]
fn four_threads_send_a_million_calls_and_all_run_while_the_loop_runs_and_stops() {
    let reactor = Reactor::new().unwrap();
    let tally = Tally::new();
    let start = Arc::new(Barrier::new(SENDERS + 1));
    let senders = start_senders(&reactor, &tally, &start);
    let senders_done = Arc::new(AtomicUsize::new(0));

    // Stop as soon as a tenth of the calls ran: the senders are mid-flight.
    let (r, t) = (reactor.clone(), tally.clone());
    reactor.call_when_running(move || {
        start.wait();
        fn poll_then_stop(r: Reactor, t: Arc<Tally>) {
            if t.ran.load(Ordering::Relaxed) >= CALLS_PER_SENDER * SENDERS as u64 / 10 {
                r.stop().unwrap();
            } else {
                let r2 = r.clone();
                r.call_later(0.0, move || poll_then_stop(r2, t)).unwrap();
            }
        }
        poll_then_stop(r, t);
    });
    // Shutdown waits until every sender has finished sending: the joiner
    // thread completes a future the reactor turned into a Deferred.
    let (all_sent, sent_signal) = futures::channel::oneshot::channel::<()>();
    let r = reactor.clone();
    reactor.add_system_event_trigger(Phase::Before, "shutdown", move || {
        r.defer_future(async move { sent_signal.await.map_err(Failure::new) })
    });
    let done = senders_done.clone();
    let joiner = thread::spawn(move || {
        let refused: u64 = senders.into_iter().map(|s| s.join().unwrap()).sum();
        done.store(SENDERS, Ordering::SeqCst);
        all_sent.send(()).unwrap();
        refused
    });
    run(&reactor);
    let refused = joiner.join().unwrap();
    assert_eq!(senders_done.load(Ordering::SeqCst), SENDERS);
    assert_eq!(refused, 0);
    assert_eq!(
        tally.ran.load(Ordering::SeqCst),
        CALLS_PER_SENDER * SENDERS as u64
    );
    assert!(
        !tally.out_of_order.load(Ordering::SeqCst),
        "a sender's calls ran out of order or twice"
    );
    assert!(tally.on_reactor_thread.load(Ordering::SeqCst));
}

// The same load, stopped without waiting for the senders: once `run`
// returns, later calls are refused to their senders; every call either ran
// exactly once or was refused, none silently dropped.
#[test]
fn four_threads_sending_while_the_reactor_stops_for_good_lose_nothing() {
    let reactor = Reactor::new().unwrap();
    let tally = Tally::new();
    let start = Arc::new(Barrier::new(SENDERS + 1));
    let senders = start_senders(&reactor, &tally, &start);
    let (r, t) = (reactor.clone(), tally.clone());
    reactor.call_when_running(move || {
        start.wait();
        fn poll_then_stop(r: Reactor, t: Arc<Tally>) {
            if t.ran.load(Ordering::Relaxed) >= 10_000 {
                r.stop().unwrap();
            } else {
                let r2 = r.clone();
                r.call_later(0.0, move || poll_then_stop(r2, t)).unwrap();
            }
        }
        poll_then_stop(r, t);
    });
    run(&reactor);
    let refused: u64 = senders.into_iter().map(|s| s.join().unwrap()).sum();
    let ran = tally.ran.load(Ordering::SeqCst);
    assert_eq!(ran + refused, CALLS_PER_SENDER * SENDERS as u64);
    assert!(!tally.out_of_order.load(Ordering::SeqCst));
    assert!(reactor.handle().is_closed());
}

#[test]
fn only_the_handle_and_the_thread_pool_cross_threads() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<twisted_reactor::ReactorHandle>();
    send_and_sync::<twisted_reactor::ThreadPool>();
    // `Reactor` itself is `Rc`-based and single-threaded (not `Send`): see
    // the compile_fail example in the reactor module's docs.
}

// Twisted: test_internet: CallFromThreadTests.test_threadsAreRunInScheduledOrder
#[test]
fn calls_from_one_thread_run_in_the_order_they_were_made() {
    let reactor = Reactor::new().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let handle = reactor.handle();
    let o = order.clone();
    thread::spawn(move || {
        for i in 0..5 {
            let o = o.clone();
            handle
                .call_from_thread(move |_| o.lock().unwrap().push(i))
                .unwrap();
        }
        handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
    })
    .join()
    .unwrap();
    run(&reactor);
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4]);
}

// Twisted: test_internet: CallFromThreadTests.test_scheduledThreadsNotRunUntilReactorRuns
#[test]
fn calls_queued_before_run_wait_for_it() {
    let reactor = Reactor::new().unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    reactor
        .handle()
        .call_from_thread(move |_| r.store(true, Ordering::SeqCst))
        .unwrap();
    assert!(!ran.load(Ordering::SeqCst));
    reactor.call_when_running({
        let r = reactor.clone();
        move || r.stop()
    });
    run(&reactor);
    assert!(ran.load(Ordering::SeqCst));
}

// Twisted: test_internet: CallFromThreadStopsAndWakeUpTests.test_wakeUp
#[test]
fn a_call_from_another_thread_wakes_a_sleeping_loop() {
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let sender = thread::spawn(move || {
        thread::sleep(std::time::Duration::from_millis(50));
        handle
            .call_from_thread(move |_| r.store(true, Ordering::SeqCst))
            .unwrap();
    });
    // Nothing is scheduled: this sleeps until woken (60 s at most).
    let before = reactor.seconds();
    reactor.iterate(60.0).unwrap();
    assert!(reactor.seconds() - before < 60.0, "the loop was not woken");
    sender.join().unwrap();
    // The woken loop runs the call at the start of its next iteration (or
    // ran it already, if it arrived before that iteration started: the
    // wake-up is sticky, so the wait above returned at once then).
    reactor.iterate(0.0).unwrap();
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn a_call_from_the_reactor_thread_itself_runs_on_the_next_iteration() {
    let reactor = Reactor::new().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let handle = reactor.handle();
    let o = order.clone();
    reactor.call_when_running(move || {
        let o2 = o.clone();
        handle
            .call_from_thread(move |r| {
                o2.lock().unwrap().push("from thread");
                r.stop().unwrap();
            })
            .unwrap();
        o.lock().unwrap().push("after call_from_thread");
    });
    run(&reactor);
    assert_eq!(
        *order.lock().unwrap(),
        ["after call_from_thread", "from thread"]
    );
}

#[test]
fn a_panicking_call_is_logged_and_the_next_ones_run() {
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    handle
        .call_from_thread(|_| panic!("thread call panicked"))
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    handle
        .call_from_thread(move |reactor| {
            r.store(true, Ordering::SeqCst);
            reactor.stop().unwrap();
        })
        .unwrap();
    let ((), logs) = capture_logs(|| run(&reactor));
    assert!(ran.load(Ordering::SeqCst));
    assert!(
        logs.iter().any(|(_, m)| m.contains("thread call panicked")),
        "{logs:?}"
    );
}

#[test]
fn calls_after_the_reactor_stopped_for_good_are_refused() {
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    reactor.call_when_running({
        let r = reactor.clone();
        move || r.stop()
    });
    run(&reactor);
    assert!(handle.is_closed());
    let refused = thread::spawn(move || handle.call_from_thread(|_| {}))
        .join()
        .unwrap();
    assert_eq!(refused, Err(ReactorGone));
}

#[test]
fn calls_after_the_reactor_was_dropped_are_refused() {
    let reactor = Reactor::new().unwrap();
    let handle = reactor.handle();
    drop(reactor);
    assert_eq!(handle.call_from_thread(|_| {}), Err(ReactorGone));
}

// Twisted: test_core: test_runAfterCrash, for thread calls
#[test]
fn calls_queued_while_crashed_run_when_it_runs_again() {
    let reactor = Reactor::new().unwrap();
    reactor.call_when_running({
        let r = reactor.clone();
        move || r.crash()
    });
    run(&reactor);
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let handle = reactor.handle();
    thread::spawn(move || {
        handle
            .call_from_thread(move |reactor| {
                r.store(true, Ordering::SeqCst);
                reactor.stop().unwrap();
            })
            .unwrap()
    })
    .join()
    .unwrap();
    run(&reactor);
    assert!(ran.load(Ordering::SeqCst));
}

// A coroutine awaiting a foreign future (not a Deferred) woken from another
// thread resumes on the reactor thread: the loop runs the core's
// `run_wakeups()` every iteration.
#[test]
fn a_coroutine_awaiting_a_future_woken_from_another_thread_resumes_on_the_reactor_thread() {
    let reactor = Reactor::new().unwrap();
    let reactor_thread = thread::current().id();
    let (tx, rx) = futures::channel::oneshot::channel::<u32>();
    let r = reactor.clone();
    let d = ensure_deferred(async move {
        let v = rx.await.map_err(Failure::new)?;
        let resumed_on = thread::current().id();
        r.stop().map_err(Failure::new)?;
        Ok::<_, Failure>((v, resumed_on))
    });
    let sender = thread::spawn(move || {
        thread::sleep(std::time::Duration::from_millis(20));
        tx.send(7).unwrap();
    });
    run(&reactor);
    sender.join().unwrap();
    assert_eq!(d.result().value(), Some((7, reactor_thread)));
}

// `Reactor::defer_future`: a task spawned on another runtime, on another
// thread; its result fires the Deferred on the reactor thread.
#[test]
fn defer_future_fires_on_the_reactor_thread_with_a_result_from_another_runtime() {
    let reactor = Reactor::new().unwrap();
    let reactor_thread = thread::current().id();
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    // The first poll happens inside `defer_future`, before the other thread
    // exists: the answer always arrives through the waker, on the loop
    // (had it been ready at once, the callback would run before `run()`).
    let d = reactor.defer_future(async move { rx.await.map_err(Failure::new) });
    let other = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let answer = tokio::spawn(async { "forty-two".to_string() })
                .await
                .unwrap();
            tx.send(answer).unwrap();
        });
    });
    let r = reactor.clone();
    let fired_on = d.add_callback(move |v: String| {
        r.stop().map_err(Failure::new)?;
        Ok((v, thread::current().id()))
    });
    run(&reactor);
    other.join().unwrap();
    assert_eq!(
        fired_on.result().value(),
        Some(("forty-two".to_string(), reactor_thread))
    );
}

#[test]
fn cancelling_a_defer_future_deferred_drops_the_future() {
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let reactor = Reactor::new().unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = Dropped(dropped.clone());
    let d: Deferred<()> = reactor.defer_future(async move {
        let _guard = guard;
        std::future::pending::<Result<(), Failure>>().await
    });
    d.cancel().unwrap();
    assert!(dropped.load(Ordering::SeqCst));
    assert!(d.result().failure().unwrap().check::<CancelledError>());
    d.add_errback(|_| Ok(()));
}

#[test]
fn a_panicking_future_fails_its_deferred() {
    let reactor = Reactor::new().unwrap();
    let d: Deferred<()> = reactor.defer_future(async {
        if true {
            panic!("future panicked");
        }
        Ok::<(), Failure>(())
    });
    let f = d.result().failure().unwrap();
    assert!(f.check::<PanicError>());
    assert_eq!(f.message(), "future panicked");
    d.add_errback(|_| Ok(()));
}
