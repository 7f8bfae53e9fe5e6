//! The real reactor: its timers at scale and the `call_from_thread`
//! hand-off's throughput.
//!
//! * `reactor_timers/{schedule,cancel,fire}/N`: the cost of one
//!   `Reactor::call_later` on real time, one `DelayedCall.cancel()`, and one
//!   due call run by the loop (`iterate(0)` running a batch of 1000 due
//!   calls), with N = 10k, 100k, 1M other calls pending far in the future.
//!   Between timed batches of 1000 operations, untimed work restores the
//!   population, as in `timers.rs` (the `Clock`'s version of this bench).
//! * `call_from_thread/{1,4}_senders`: calls per second through
//!   `ReactorHandle::call_from_thread` while the loop runs them: 100,000
//!   calls in total from one thread or four, timed from the first send until
//!   the loop has run the last.

use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use twisted_deferred::time::DelayedCall;
use twisted_reactor::Reactor;

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
/// Pending calls are due between 1000 and 2000 seconds from now: never
/// during the benchmark.
const FAR: f64 = 1000.0;
const BATCH: u64 = 1000;

/// xorshift64*: deterministic random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn counting_call(counter: &Rc<Cell<u64>>) -> impl FnOnce() + 'static {
    let counter = counter.clone();
    move || counter.set(counter.get() + 1)
}

fn populated(n: usize, rng: &mut Rng, counter: &Rc<Cell<u64>>) -> Reactor {
    let reactor = Reactor::new().expect("a poller");
    for _ in 0..n {
        let delay = FAR + rng.unit() * FAR;
        reactor
            .call_later(delay, counting_call(counter))
            .expect("a valid delay");
    }
    reactor
}

fn timers(c: &mut Criterion) {
    let mut g = c.benchmark_group("reactor_timers");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(4));
    let counter = Rc::new(Cell::new(0u64));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    for n in SIZES {
        // Twisted: reactor.callLater with n calls pending
        let reactor = populated(n, &mut rng, &counter);
        let mut batch: Vec<DelayedCall> = Vec::with_capacity(BATCH as usize);
        g.bench_function(BenchmarkId::new("schedule", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(BATCH);
                    let delays: Vec<f64> = (0..k).map(|_| FAR + rng.unit() * FAR).collect();
                    let start = Instant::now();
                    for &delay in &delays {
                        batch.push(
                            reactor
                                .call_later(black_box(delay), counting_call(&counter))
                                .expect("a valid delay"),
                        );
                    }
                    total += start.elapsed();
                    for call in batch.drain(..) {
                        let _ = call.cancel();
                    }
                    left -= k;
                }
                total
            })
        });
        drop(reactor);

        // Twisted: DelayedCall.cancel with n calls pending
        let reactor = populated(n, &mut rng, &counter);
        g.bench_function(BenchmarkId::new("cancel", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(BATCH);
                    for _ in 0..k {
                        let delay = FAR + rng.unit() * FAR;
                        batch.push(
                            reactor
                                .call_later(delay, counting_call(&counter))
                                .expect("a valid delay"),
                        );
                    }
                    let start = Instant::now();
                    for call in &batch {
                        let _ = black_box(call.cancel());
                    }
                    total += start.elapsed();
                    batch.clear();
                    left -= k;
                }
                total
            })
        });
        drop(reactor);

        // Twisted: runUntilCurrent running due calls, n pending
        let reactor = populated(n, &mut rng, &counter);
        g.bench_function(BenchmarkId::new("fire", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(BATCH);
                    for _ in 0..k {
                        reactor
                            .call_later(0.0, counting_call(&counter))
                            .expect("a valid delay");
                    }
                    let before = counter.get();
                    let start = Instant::now();
                    reactor.iterate(0.0).expect("an iteration");
                    total += start.elapsed();
                    assert_eq!(counter.get() - before, k, "every due call ran");
                    left -= k;
                }
                total
            })
        });
        drop(reactor);
    }
    g.finish();
}

/// Runs `total` calls sent by `senders` threads through the loop; returns
/// the time from the first send to the last call run.
fn hand_off_round(reactor: &Reactor, senders: usize, total: u64) -> Duration {
    let ran = Arc::new(AtomicU64::new(0));
    let per_sender = total / senders as u64;
    let start = Instant::now();
    let threads: Vec<_> = (0..senders)
        .map(|_| {
            let (handle, ran) = (reactor.handle(), ran.clone());
            std::thread::spawn(move || {
                for _ in 0..per_sender {
                    let ran = ran.clone();
                    let sent = handle.call_from_thread(move |reactor| {
                        if ran.fetch_add(1, Ordering::Relaxed) + 1 == total {
                            reactor.crash();
                        }
                    });
                    assert!(sent.is_ok());
                }
            })
        })
        .collect();
    reactor.run().expect("the reactor runs");
    let elapsed = start.elapsed();
    for t in threads {
        t.join().expect("a sender");
    }
    assert_eq!(ran.load(Ordering::SeqCst), total);
    elapsed
}

fn call_from_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("call_from_thread");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));
    const CALLS: u64 = 100_000;
    g.throughput(Throughput::Elements(CALLS));
    let reactor = Reactor::new().expect("a poller");
    for senders in [1usize, 4] {
        // Twisted: reactor.callFromThread from `senders` threads
        g.bench_function(BenchmarkId::new("senders", senders), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| hand_off_round(&reactor, senders, CALLS))
                    .sum()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, timers, call_from_thread);
criterion_main!(benches);
