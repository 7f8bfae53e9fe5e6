//! Callback chains: Twisted's `benchmarks/test_deferred.py` chain cases,
//! each beside the closest futures/tokio equivalent and a floor (the least
//! work the same job can take: plain boxed closures, no Deferred).

use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use twisted_deferred::{Deferred, Failure, succeed};

fn f(x: i64, a: i64) -> i64 {
    x + a
}

/// Polls a future once with a no-op waker (it is ready by construction).
fn poll_ready<F: std::future::Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("benchmark futures are ready"),
    }
}

fn callback_chains(c: &mut Criterion) {
    let mut g = c.benchmark_group("callback_chain_fires_at_end");
    // Twisted: test_deferred_callback_chain_fires_at_end
    g.bench_function("deferred", |b| {
        b.iter(|| {
            let d: Deferred<i64> = Deferred::new();
            d.add_callback(|x| Ok(f(x, 1)));
            d.add_callback(|x| Ok(f(x, 2)));
            d.add_callback(|x| Ok(f(x, 3)));
            d.add_callback(|x| Ok(f(x, 4)));
            d.callback(black_box(2)).unwrap();
            d
        })
    });
    g.bench_function("deferred_capturing", |b| {
        b.iter(|| {
            let d: Deferred<i64> = Deferred::new();
            for k in 1..=4i64 {
                let k = black_box(k);
                d.add_callback(move |x| Ok(f(x, k)));
            }
            d.callback(black_box(2)).unwrap();
            d
        })
    });
    g.bench_function("tokio_oneshot_map", |b| {
        b.iter(|| {
            let (tx, rx) = tokio::sync::oneshot::channel::<i64>();
            let fut = rx
                .map(|r| f(r.unwrap_or(0), 1))
                .map(|x| f(x, 2))
                .map(|x| f(x, 3))
                .map(|x| f(x, 4));
            let _ = tx.send(black_box(2));
            poll_ready(fut)
        })
    });
    g.bench_function("futures_oneshot_map", |b| {
        b.iter(|| {
            let (tx, rx) = futures::channel::oneshot::channel::<i64>();
            let fut = rx
                .map(|r| f(r.unwrap_or(0), 1))
                .map(|x| f(x, 2))
                .map(|x| f(x, 3))
                .map(|x| f(x, 4));
            let _ = tx.send(black_box(2));
            poll_ready(fut)
        })
    });
    g.bench_function("floor_boxed_closures", |b| {
        b.iter(|| {
            let mut chain: Vec<Box<dyn FnOnce(i64) -> i64>> = Vec::with_capacity(4);
            for k in 1..=4i64 {
                let k = black_box(k);
                chain.push(Box::new(move |x| f(x, k)));
            }
            chain.into_iter().fold(black_box(2), |x, g| g(x))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("callback_chain_fires_at_start");
    // Twisted: test_deferred_callback_chain_fires_at_start
    g.bench_function("deferred", |b| {
        b.iter(|| {
            let d: Deferred<i64> = Deferred::new();
            d.callback(black_box(2)).unwrap();
            d.add_callback(|x| Ok(f(x, 1)));
            d.add_callback(|x| Ok(f(x, 2)));
            d.add_callback(|x| Ok(f(x, 3)));
            d.add_callback(|x| Ok(f(x, 4)));
            d
        })
    });
    g.bench_function("futures_ready_map", |b| {
        b.iter(|| {
            let fut = futures::future::ready(black_box(2i64))
                .map(|x| f(x, 1))
                .map(|x| f(x, 2))
                .map(|x| f(x, 3))
                .map(|x| f(x, 4));
            poll_ready(fut)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("errback_chain");
    // Twisted: test_deferred_errback_chain
    g.bench_function("deferred", |b| {
        b.iter(|| {
            let d = succeed("result");
            let d = d.add_callback(|_| Err::<(), _>(Failure::msg("boom!")));
            let d = d.add_errback(|failure: Failure| {
                failure.trap::<twisted_deferred::MessageError>()?;
                Err(Failure::msg("lesser boom!"))
            });
            d.add_both(|_| Ok(()));
            d
        })
    });
    g.finish();

    let mut g = c.benchmark_group("chained");
    // Twisted: test_deferred_chained_already_fired
    g.bench_function("deferred_already_fired", |b| {
        b.iter(|| {
            let d: Deferred<i64> = Deferred::new();
            let d2: Deferred<i64> = Deferred::new();
            let d3: Deferred<i64> = Deferred::new();
            d2.callback(123).unwrap();
            d3.callback(456).unwrap();
            d.add_callback(move |_| d2);
            d.add_callback(move |_| d3);
            d.callback(123).unwrap();
            d
        })
    });
    // Twisted: test_deferred_chained_not_fired
    g.bench_function("deferred_not_fired", |b| {
        b.iter(|| {
            let d: Deferred<i64> = Deferred::new();
            let d2: Deferred<i64> = Deferred::new();
            let d3: Deferred<i64> = Deferred::new();
            let d4: Deferred<i64> = Deferred::new();
            let d4c = d4.clone();
            d3.add_callback(move |_| d4c);
            d3.callback(123).unwrap();
            let (d2c, d3c) = (d2.clone(), d3.clone());
            d.add_callback(move |_| d2c);
            d.add_callback(move |_| d3c);
            d2.callback(123).unwrap();
            d4.callback(57).unwrap();
            d.callback(7).unwrap();
            d
        })
    });
    // One hop: an outer Deferred waits on an inner one, which then fires.
    g.bench_function("one_hop", |b| {
        b.iter(|| {
            let outer: Deferred<i64> = Deferred::new();
            let inner: Deferred<i64> = Deferred::new();
            let i2 = inner.clone();
            outer.add_callback(move |_| i2);
            outer.callback(0).unwrap();
            inner.callback(black_box(5)).unwrap();
            outer
        })
    });
    g.finish();
}

criterion_group!(benches, callback_chains);
criterion_main!(benches);
