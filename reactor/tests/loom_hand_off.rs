//! The `call_from_thread` hand-off under the `loom` model checker: every
//! interleaving of senders and the reactor thread (up to loom's preemption
//! bound) is run against the real hand-off code, with its mutex swapped for
//! loom's (see `reactor/src/sync.rs`) and the poller's notifier modelled by
//! loom's sticky `unpark` (a notification wakes the current or the next
//! `park`, as `polling::Poller::notify` wakes the current or next `wait`).
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" cargo test -p twisted-reactor --release --test loom_hand_off
//! ```
//!
//! Twisted's own tests of this (`ThreadTestsBuilder.test_callFromThread`,
//! `test_wakerOverflow`) run real threads a few times; these check every
//! schedule: no call is lost, none runs twice, a sender's calls run in its
//! order, the loop never sleeps through a queued call, and once the reactor
//! closes the queue every call is either run or refused.

#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use twisted_reactor::loom_hand_off::{HandOff, Notify};

/// `poller.notify()`, modelled.
struct Unpark(thread::Thread);

impl Notify for Unpark {
    fn notify(&self) {
        self.0.unpark();
    }
}

/// (sender, sequence number) of one call.
type Call = (usize, usize);

/// The reactor loop, reduced to its hand-off: take the batch, run it, and
/// sleep until notified when nothing more is expected yet.
fn reactor_loop(hand_off: &HandOff<Call, Unpark>, expected: usize) -> Vec<Call> {
    let mut ran = Vec::new();
    let mut batch = Vec::new();
    loop {
        hand_off.take(&mut batch);
        ran.append(&mut batch);
        if ran.len() == expected {
            return ran;
        }
        // doIteration(): sleeps until a sender's notify. A lost wake-up
        // leaves every thread blocked, which loom reports as a deadlock.
        thread::park();
    }
}

fn check_order(ran: &[Call], senders: usize, per_sender: usize) {
    for s in 0..senders {
        let mine: Vec<usize> = ran.iter().filter(|c| c.0 == s).map(|c| c.1).collect();
        assert_eq!(mine, (0..per_sender).collect::<Vec<_>>(), "sender {s}");
    }
}

// Twisted: test_threads: ThreadTestsBuilder.test_callFromThread
#[test]
fn calls_from_two_threads_all_run_once_in_each_senders_order() {
    loom::model(|| {
        let hand_off = Arc::new(HandOff::new(Unpark(thread::current())));
        let senders: Vec<_> = (0..2)
            .map(|s| {
                let hand_off = hand_off.clone();
                thread::spawn(move || {
                    for i in 0..2 {
                        assert!(hand_off.push((s, i)).is_ok());
                    }
                })
            })
            .collect();
        let ran = reactor_loop(&hand_off, 4);
        for sender in senders {
            sender.join().unwrap();
        }
        check_order(&ran, 2, 2);
    });
}

// Twisted: test_threads: ThreadTestsBuilder.test_wakerOverflow (many wake-ups
// coalesced into few must still wake the loop)
#[test]
fn a_call_pushed_while_the_loop_runs_its_batch_wakes_the_next_sleep() {
    loom::model(|| {
        let hand_off = Arc::new(HandOff::new(Unpark(thread::current())));
        let sender = {
            let hand_off = hand_off.clone();
            thread::spawn(move || {
                assert!(hand_off.push((0, 0)).is_ok());
                thread::yield_now();
                assert!(hand_off.push((0, 1)).is_ok());
                assert!(hand_off.push((0, 2)).is_ok());
            })
        };
        let ran = reactor_loop(&hand_off, 3);
        sender.join().unwrap();
        check_order(&ran, 1, 3);
    });
}

/// Stop racing senders: the reactor closes the queue (as `run` does when
/// it returns after `stop`) while two threads send. Every call is run
/// exactly once or refused to its sender; none is lost.
#[test]
fn closing_while_threads_send_loses_nothing() {
    loom::model(|| {
        let hand_off = Arc::new(HandOff::new(Unpark(thread::current())));
        let refused = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..2)
            .map(|s| {
                let (hand_off, refused) = (hand_off.clone(), refused.clone());
                thread::spawn(move || {
                    for i in 0..2 {
                        if hand_off.push((s, i)).is_err() {
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        // One iteration of the loop, then shutdown: the last batch is what
        // `close` hands back.
        let mut ran = Vec::new();
        hand_off.take(&mut ran);
        ran.extend(hand_off.close());
        for sender in senders {
            sender.join().unwrap();
        }
        let refused = refused.load(Ordering::SeqCst);
        assert_eq!(ran.len() + refused, 4, "ran {ran:?}, refused {refused}");
        // Each sender's accepted calls are a prefix of its calls, in order.
        for s in 0..2 {
            let mine: Vec<usize> = ran.iter().filter(|c| c.0 == s).map(|c| c.1).collect();
            assert_eq!(mine, (0..mine.len()).collect::<Vec<_>>());
        }
        assert!(hand_off.push((9, 9)).is_err());
    });
}
