//! Combinators over many Deferreds: `gather_results` and `DeferredList` at
//! 10k, 100k and 1M inputs, fired before the combinator is built (every
//! input is handled inside the constructor) and after (each `callback()`
//! fires one input), plus a `DeferredList` of 1,000; beside
//! `futures::future::join_all` over ready futures of the same sizes.
//!
//! Timed: building the combinator and firing its inputs. Not timed: making
//! the inputs and dropping everything afterwards. Inputs fired beforehand
//! are made once and reused (they keep their value: the combinators' links
//! hand it back), so those cases time the combinator alone.

use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::future::{join_all, ready};
use twisted_deferred::{Deferred, DeferredList, gather_results, succeed};

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];

/// Polls a future once with a no-op waker (it is ready by construction).
fn poll_ready<F: std::future::Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("benchmark futures are ready"),
    }
}

fn fired_inputs(n: usize) -> Vec<Deferred<u64>> {
    (0..n as u64).map(succeed).collect()
}

fn unfired_inputs(n: usize) -> Vec<Deferred<u64>> {
    (0..n).map(|_| Deferred::new()).collect()
}

fn fire_all(inputs: &[Deferred<u64>]) {
    for (i, d) in inputs.iter().enumerate() {
        d.callback(black_box(i as u64)).unwrap();
    }
}

fn ready_futures(n: usize) -> Vec<futures::future::Ready<u64>> {
    (0..n as u64).map(ready).collect()
}

/// Criterion settings for a size: fewer samples for the big ones.
fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, n: usize) {
    g.throughput(Throughput::Elements(n as u64));
    if n >= 100_000 {
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(if n >= 1_000_000 { 15 } else { 5 }));
    } else {
        g.sample_size(50);
        g.measurement_time(Duration::from_secs(3));
    }
}

/// One input set per iteration for the big sizes (a batch of them would
/// not fit in memory); Criterion's small batches otherwise.
fn batch(n: usize) -> BatchSize {
    if n >= 100_000 {
        BatchSize::PerIteration
    } else {
        BatchSize::SmallInput
    }
}

fn gather(c: &mut Criterion) {
    let mut g = c.benchmark_group("gather_results");
    for n in SIZES {
        configure(&mut g, n);
        let fired = fired_inputs(n);
        g.bench_with_input(BenchmarkId::new("fired_before", n), &fired, |b, fired| {
            b.iter_with_large_drop(|| {
                let d = gather_results(fired.iter().cloned(), false);
                debug_assert!(d.called());
                d
            })
        });
        drop(fired);
        g.bench_function(BenchmarkId::new("fired_after", n), |b| {
            b.iter_batched(
                || unfired_inputs(n),
                |inputs| {
                    let d = gather_results(inputs.iter().cloned(), false);
                    fire_all(&inputs);
                    debug_assert!(d.called());
                    (inputs, d)
                },
                batch(n),
            )
        });
        g.bench_function(BenchmarkId::new("futures_join_all_ready", n), |b| {
            b.iter_batched(
                || ready_futures(n),
                |futs| poll_ready(join_all(futs)),
                batch(n),
            )
        });
    }
    g.finish();
}

fn deferred_list(c: &mut Criterion) {
    let mut g = c.benchmark_group("deferred_list");
    for n in std::iter::once(1_000).chain(SIZES) {
        configure(&mut g, n);
        let fired = fired_inputs(n);
        g.bench_with_input(BenchmarkId::new("fired_before", n), &fired, |b, fired| {
            b.iter_with_large_drop(|| {
                let dl = DeferredList::new(fired.iter().cloned());
                debug_assert!(dl.called());
                dl
            })
        });
        drop(fired);
        g.bench_function(BenchmarkId::new("fired_after", n), |b| {
            b.iter_batched(
                || unfired_inputs(n),
                |inputs| {
                    let dl = DeferredList::new(inputs.iter().cloned());
                    fire_all(&inputs);
                    debug_assert!(dl.called());
                    (inputs, dl)
                },
                batch(n),
            )
        });
        g.bench_function(BenchmarkId::new("futures_join_all_ready", n), |b| {
            b.iter_batched(
                || ready_futures(n),
                |futs| poll_ready(join_all(futs)),
                batch(n),
            )
        });
    }
    g.finish();
}

criterion_group!(benches, gather, deferred_list);
criterion_main!(benches);
