//! `call_from_thread` throughput: an iteration is 100,000 calls sent from
//! other threads and run on the loop thread, timed from before the senders
//! start until the loop ran the last call (so that the fixed costs, a
//! thread start and a wake-up, are spread as in a busy program).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use twisted_reactor::Reactor;

use crate::{Group, Role, Row, timed};

/// Calls per iteration.
pub const CALLS: u64 = 100_000;

pub(super) fn rows() -> Vec<Row> {
    vec![
        Row::new(
            "call_from_thread",
            "call_from_thread from 1 thread, run by the loop (per call)",
            Group::Threads,
        )
        .elements(CALLS)
        .notes("closest: a tokio unbounded mpsc channel of boxed closures drained by `recv().await` in a current-thread runtime on the loop thread; floor: a `Mutex<Vec>` of boxed closures swapped out per batch, a `Condvar` signalled only when the loop sleeps")
        .case("reactor", Role::Ours, |iters| reactor_calls(iters * CALLS, 1))
        .case("reactor_4_senders", Role::Variant, |iters| {
            reactor_calls(iters * CALLS, 4)
        })
        .case("tokio_mpsc", Role::Closest, |iters| tokio_calls(iters * CALLS))
        .case("floor_mutex_vec", Role::Floor, |iters| {
            floor_calls(iters * CALLS)
        }),
    ]
}

/// Starts `senders` threads sending `iters` calls in all through `send`.
fn spawn_senders<S: Clone + Send + 'static>(
    iters: u64,
    senders: u64,
    sender: S,
    send: fn(&S),
) -> Vec<JoinHandle<()>> {
    (0..senders)
        .map(|i| {
            let count = iters / senders + u64::from(i < iters % senders);
            let sender = sender.clone();
            std::thread::spawn(move || {
                for _ in 0..count {
                    send(&sender);
                }
            })
        })
        .collect()
}

/// The reactor's calls count here (statics, so that a call captures
/// nothing, as the other versions' calls capture nothing).
static RAN: AtomicU64 = AtomicU64::new(0);
static TOTAL: AtomicU64 = AtomicU64::new(0);

fn reactor_calls(iters: u64, senders: u64) -> Duration {
    let reactor = Reactor::new().expect("a poller");
    RAN.store(0, Ordering::SeqCst);
    TOTAL.store(iters, Ordering::SeqCst);
    let (t, threads) = timed(|| {
        let threads = spawn_senders(iters, senders, reactor.handle(), |handle| {
            handle
                .call_from_thread(|reactor| {
                    if RAN.fetch_add(1, Ordering::Relaxed) + 1 == TOTAL.load(Ordering::Relaxed) {
                        reactor.crash();
                    }
                })
                .expect("a live reactor");
        });
        reactor.run().expect("the reactor runs");
        threads
    });
    for thread in threads {
        thread.join().expect("a sender");
    }
    assert_eq!(RAN.load(Ordering::SeqCst), iters);
    t
}

type Call = Box<dyn FnOnce(&AtomicU64) + Send>;

fn tokio_calls(iters: u64) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Call>();
    let ran = AtomicU64::new(0);
    let (t, threads) = timed(|| {
        let threads = spawn_senders(iters, 1, tx, |tx| {
            let _ = tx.send(Box::new(|ran: &AtomicU64| {
                ran.fetch_add(1, Ordering::Relaxed);
            }));
        });
        runtime.block_on(async {
            while ran.load(Ordering::Relaxed) < iters {
                match rx.recv().await {
                    Some(call) => call(&ran),
                    None => break,
                }
            }
        });
        threads
    });
    for thread in threads {
        thread.join().expect("a sender");
    }
    assert_eq!(ran.load(Ordering::SeqCst), iters);
    t
}

/// The floor's hand-off: a vector behind a mutex, swapped out whole by the
/// loop; a condition variable signalled only when the loop sleeps on it.
#[derive(Default)]
struct HandOff {
    queue: Mutex<Queue>,
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    calls: Vec<Call>,
    sleeping: bool,
}

fn floor_calls(iters: u64) -> Duration {
    let hand_off = Arc::new(HandOff::default());
    let ran = AtomicU64::new(0);
    let (t, threads) = timed(|| {
        let threads = spawn_senders(iters, 1, hand_off.clone(), |h| {
            let mut queue = h.queue.lock().expect("an unpoisoned queue");
            queue.calls.push(Box::new(|ran: &AtomicU64| {
                ran.fetch_add(1, Ordering::Relaxed);
            }));
            if queue.sleeping {
                queue.sleeping = false;
                h.ready.notify_one();
            }
        });
        let mut batch: Vec<Call> = Vec::new();
        while ran.load(Ordering::Relaxed) < iters {
            {
                let mut queue = hand_off.queue.lock().expect("an unpoisoned queue");
                while queue.calls.is_empty() {
                    queue.sleeping = true;
                    queue = hand_off.ready.wait(queue).expect("an unpoisoned queue");
                }
                std::mem::swap(&mut queue.calls, &mut batch);
            }
            for call in batch.drain(..) {
                call(&ran);
            }
        }
        threads
    });
    for thread in threads {
        thread.join().expect("a sender");
    }
    assert_eq!(ran.load(Ordering::SeqCst), iters);
    t
}
