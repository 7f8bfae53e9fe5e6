//! Chains of Deferreds waiting on Deferreds: a chain 10k, 100k and 1M
//! deep, and one hop.

use std::hint::black_box;

use futures::FutureExt;
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use tokio::sync::oneshot;
use twisted_deferred::Deferred;

use super::{SIZES, heavy};
use crate::floor::{Mini, Next};
use crate::{Group, Role, Row, batched, poll_ready};

pub(super) fn rows() -> Vec<Row> {
    let mut rows: Vec<Row> = SIZES
        .iter()
        .map(|&n| {
            Row::new(
                format!("chain_depth/{n}"),
                format!("chain {n} deep: build, fire the innermost (per level)"),
                Group::Chain,
            )
            .elements(n)
            .heavy(heavy(n))
            .scaling("chain_depth", n)
            .notes("each Deferred's callback returns the next one, linked from the innermost out, then the innermost fires; closest: a futures `LocalPool` task per level awaiting the next level's tokio oneshot and sending on its own; floor: `floor::Mini`")
            .case("deferred", Role::Ours, move |iters| {
                batched(iters, || (), |()| depth_deferred(n as usize))
            })
            .case("futures_localpool_tasks", Role::Closest, move |iters| {
                batched(iters, || (), |()| depth_localpool(n as usize))
            })
            .case("floor_mini", Role::Floor, move |iters| {
                batched(iters, || (), |()| depth_floor(n as usize))
            })
        })
        .collect();
    rows.push(
        Row::new(
            "chain_one_hop",
            "one hop: an outer Deferred waits on an inner one, which then fires",
            Group::Chain,
        )
        .notes("closest: `rx.then(|_| rx2)` on tokio oneshots; floor: `floor::Mini`")
        .simple("deferred", Role::Ours, hop_deferred)
        .simple("tokio_oneshot_then", Role::Closest, hop_tokio)
        .simple("floor_mini", Role::Floor, hop_floor),
    );
    rows
}

fn depth_deferred(n: usize) -> Vec<Deferred<i64>> {
    let ds: Vec<Deferred<i64>> = (0..n).map(|_| Deferred::new()).collect();
    for i in (0..n - 1).rev() {
        let next = ds[i + 1].clone();
        ds[i].add_callback(move |_: i64| next);
        ds[i].callback(0).unwrap();
    }
    ds[n - 1].callback(black_box(7)).unwrap();
    assert_eq!(ds[0].result().value(), Some(7));
    ds
}

fn depth_localpool(n: usize) -> (LocalPool, Option<i64>) {
    let mut pool = LocalPool::new();
    let spawner = pool.spawner();
    let (first_tx, first_rx) = oneshot::channel::<i64>();
    let mut tx = first_tx;
    for _ in 0..n - 1 {
        let (next_tx, next_rx) = oneshot::channel::<i64>();
        spawner
            .spawn_local(async move {
                if let Ok(v) = next_rx.await {
                    let _ = tx.send(v);
                }
            })
            .expect("a local pool");
        tx = next_tx;
    }
    pool.run_until_stalled();
    let _ = tx.send(black_box(7));
    pool.run_until_stalled();
    let v = poll_ready(first_rx.map(Result::ok));
    assert_eq!(v, Some(7));
    (pool, v)
}

fn depth_floor(n: usize) -> Vec<Mini> {
    let ms: Vec<Mini> = (0..n).map(|_| Mini::new()).collect();
    for i in (0..n - 1).rev() {
        let next = ms[i + 1].clone();
        ms[i].add(move |_| Next::Wait(next));
        ms[i].fire(0);
    }
    ms[n - 1].fire(black_box(7));
    assert_eq!(ms[0].result(), Some(7));
    ms
}

fn hop_deferred() -> Deferred<i64> {
    let outer: Deferred<i64> = Deferred::new();
    let inner: Deferred<i64> = Deferred::new();
    let i2 = inner.clone();
    outer.add_callback(move |_| i2);
    outer.callback(0).unwrap();
    inner.callback(black_box(5)).unwrap();
    debug_assert_eq!(outer.result().value(), Some(5));
    outer
}

fn hop_tokio() -> i64 {
    let (tx, rx) = oneshot::channel::<i64>();
    let (tx2, rx2) = oneshot::channel::<i64>();
    let fut = rx.then(move |_| rx2);
    let _ = tx.send(0);
    let _ = tx2.send(black_box(5));
    poll_ready(fut).unwrap_or(0)
}

fn hop_floor() -> Option<i64> {
    let (outer, inner) = (Mini::new(), Mini::new());
    let i2 = inner.clone();
    outer.add(move |_| Next::Wait(i2));
    outer.fire(0);
    inner.fire(black_box(5));
    outer.result()
}
