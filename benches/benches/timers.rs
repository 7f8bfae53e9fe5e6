//! The deterministic `Clock`'s timer queue at scale: the cost of one
//! `call_later` (schedule), one `DelayedCall.cancel()` and one call run by
//! `advance` (fire), with 10k, 100k and 1M calls pending.
//!
//! Each measurement keeps the number of pending calls steady: calls are
//! scheduled at random times over a 1000-second horizon; between timed
//! batches of 1000 operations, untimed work restores the population
//! (cancelling what a schedule batch added, adding what a cancel or fire
//! batch removed). Every call carries a small closure (an `Rc` counter it
//! increments), as real calls capture something.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use twisted_deferred::time::DelayedCall;
use twisted_reactor::Clock;

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
const HORIZON: f64 = 1000.0;
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

/// A clock with `n` calls pending at random times in `[now, now + HORIZON)`;
/// their due times (as ordered bits, all positive) in a min-heap mirror.
fn populated(
    n: usize,
    rng: &mut Rng,
    counter: &Rc<Cell<u64>>,
) -> (Clock, BinaryHeap<Reverse<u64>>) {
    let clock = Clock::new();
    let mut due = BinaryHeap::with_capacity(n + BATCH as usize);
    for _ in 0..n {
        let delay = rng.unit() * HORIZON;
        let call = clock.call_later(delay, counting_call(counter));
        due.push(Reverse(call.get_time().to_bits()));
    }
    (clock, due)
}

fn timers(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock_timers");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(4));
    let counter = Rc::new(Cell::new(0u64));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    for n in SIZES {
        // Twisted: Clock.callLater with n calls pending
        let (clock, _) = populated(n, &mut rng, &counter);
        let mut batch: Vec<DelayedCall> = Vec::with_capacity(BATCH as usize);
        g.bench_function(BenchmarkId::new("schedule", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(BATCH);
                    let delays: Vec<f64> = (0..k).map(|_| rng.unit() * HORIZON).collect();
                    let start = Instant::now();
                    for &delay in &delays {
                        batch.push(clock.call_later(black_box(delay), counting_call(&counter)));
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
        drop(clock);

        // Twisted: DelayedCall.cancel with n calls pending
        let (clock, _) = populated(n, &mut rng, &counter);
        g.bench_function(BenchmarkId::new("cancel", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(BATCH);
                    for _ in 0..k {
                        let delay = rng.unit() * HORIZON;
                        batch.push(clock.call_later(delay, counting_call(&counter)));
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
        drop(clock);

        // Twisted: Clock.advance running the earliest calls, n pending
        let (clock, mut due) = populated(n, &mut rng, &counter);
        g.bench_function(BenchmarkId::new("fire", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let k = left.min(BATCH);
                    // the time of the k-th earliest call: advancing to it
                    // runs exactly k calls
                    let mut kth = 0;
                    for _ in 0..k {
                        kth = due.pop().map(|Reverse(t)| t).unwrap_or(0);
                    }
                    let (now, target) = (clock.seconds(), f64::from_bits(kth));
                    let mut amount = target - now;
                    while now + amount < target {
                        amount = amount.next_up();
                    }
                    let start = Instant::now();
                    clock.advance(black_box(amount)).unwrap();
                    total += start.elapsed();
                    for _ in 0..k {
                        let delay = rng.unit() * HORIZON;
                        let call = clock.call_later(delay, counting_call(&counter));
                        due.push(Reverse(call.get_time().to_bits()));
                    }
                    left -= k;
                }
                total
            })
        });
        drop(clock);
    }
    g.finish();
}

criterion_group!(benches, timers);
criterion_main!(benches);
