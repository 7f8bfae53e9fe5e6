//! Twisted's `benchmarks/test_deferred.py`, case for case, each beside the
//! closest futures/tokio code and a floor.

use std::cell::Cell;
use std::error::Error;
use std::fmt;
use std::hint::black_box;
use std::rc::Rc;
use std::task::Poll;

use futures::FutureExt;
use futures::future::ready;
use tokio::sync::oneshot;
use twisted_deferred::{Deferred, Failure, MessageError, ensure_deferred, succeed};

use crate::floor::{Mini, Next, SlotFuture};
use crate::{Group, Role, Row, poll_once, poll_ready};

/// Twisted's `f(x, a)`: the callback of the chain cases.
#[inline(never)]
pub fn add(x: i64, a: i64) -> i64 {
    x + a
}

pub(super) fn rows() -> Vec<Row> {
    vec![
        Row::new(
            "await_fired_1000",
            "await of 1,000 fired Deferreds (test_deferred_await)",
            Group::Twisted,
        )
        .twisted()
        .notes("closest: an async block awaiting 1,000 fresh tokio oneshots, each sent before it is awaited; floor: 1,000 `Rc` slots awaited")
        .simple("deferred", Role::Ours, await_fired_deferred)
        .simple("tokio_oneshot", Role::Closest, await_fired_tokio)
        .simple("futures_oneshot", Role::Equivalent, await_fired_futures)
        .simple("floor_rc_slots", Role::Floor, await_fired_floor),
        Row::new(
            "await_unfired_20",
            "await of 20 unfired Deferreds (test_deferred_await_unfired)",
            Group::Twisted,
        )
        .twisted()
        .notes("closest: 20 tokio oneshots awaited in turn by a boxed async block, polled after each send; floor: `Rc` slots, polled after each store")
        .simple("deferred", Role::Ours, await_unfired_deferred)
        .simple("tokio_oneshot", Role::Closest, await_unfired_tokio)
        .simple("futures_oneshot", Role::Equivalent, await_unfired_futures)
        .simple("floor_rc_slots", Role::Floor, await_unfired_floor),
        Row::new(
            "chain_fires_at_start",
            "4 callbacks, fires at start (test_deferred_callback_chain_fires_at_start)",
            Group::Twisted,
        )
        .twisted()
        .notes("closest: `ready(2).map(f)` ×4 (composed at compile time); floor: one `Rc` result, 4 boxed closures called as added")
        .simple("deferred", Role::Ours, fires_at_start_deferred)
        .simple("futures_ready_map", Role::Closest, fires_at_start_ready_map)
        .simple(
            "futures_ready_map_boxed",
            Role::Equivalent,
            fires_at_start_ready_map_boxed,
        )
        .simple("floor_boxed_closures", Role::Floor, fires_at_start_floor),
        Row::new(
            "chain_fires_at_end",
            "4 callbacks, fires at end (test_deferred_callback_chain_fires_at_end)",
            Group::Twisted,
        )
        .twisted()
        .notes("closest: a tokio oneshot `.map(f)` ×4, sent, polled; floor: a `Vec` of 4 boxed closures folded")
        .simple("deferred", Role::Ours, fires_at_end_deferred)
        .simple("tokio_oneshot_map", Role::Closest, fires_at_end_tokio)
        .simple("futures_oneshot_map", Role::Equivalent, fires_at_end_futures)
        .simple(
            "tokio_oneshot_map_boxed",
            Role::Equivalent,
            fires_at_end_tokio_boxed,
        )
        .simple("deferred_capturing", Role::Variant, fires_at_end_capturing)
        .simple("floor_boxed_closures", Role::Floor, fires_at_end_floor),
        Row::new(
            "errback_chain",
            "errback chain (test_deferred_errback_chain)",
            Group::Twisted,
        )
        .twisted()
        .notes("closest: `ready(Ok(..)).map(..)` ×3 over `Result<_, Box<dyn Error>>`, errors downcast to trap; floor: 3 boxed closures over the same `Result`, errors of one allocation")
        .simple("deferred", Role::Ours, errback_deferred)
        .simple("futures_ready_map", Role::Closest, errback_ready_map)
        .simple("floor_boxed_closures", Role::Floor, errback_floor),
        Row::new(
            "chained_already_fired",
            "chained, already fired (test_deferred_chained_already_fired)",
            Group::Twisted,
        )
        .twisted()
        .notes("closest: tokio oneshots, `rx.then(|_| rx2).then(|_| rx3)`; floor: a minimal chainable result (`floor::Mini`)")
        .simple("deferred", Role::Ours, chained_already_deferred)
        .simple("tokio_oneshot_then", Role::Closest, chained_already_tokio)
        .simple("floor_mini", Role::Floor, chained_already_floor),
        Row::new(
            "chained_not_fired",
            "chained, not fired (test_deferred_chained_not_fired)",
            Group::Twisted,
        )
        .twisted()
        .notes("closest: tokio oneshots, `rx.then(|_| rx2).then(|_| rx3.then(|_| rx4))`; floor: `floor::Mini`")
        .simple("deferred", Role::Ours, chained_not_deferred)
        .simple("tokio_oneshot_then", Role::Closest, chained_not_tokio)
        .simple("floor_mini", Role::Floor, chained_not_floor),
    ]
}

// --- await of 1,000 fired Deferreds -------------------------------------------

fn await_fired_deferred() -> Deferred<()> {
    let d = ensure_deferred(async {
        for x in 0..1000i64 {
            black_box(succeed(black_box(x)).await?);
        }
        Ok(())
    });
    debug_assert!(d.called());
    d
}

fn await_fired_tokio() {
    poll_ready(Box::pin(async {
        for x in 0..1000i64 {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(black_box(x));
            black_box(rx.await.unwrap_or(0));
        }
    }))
}

fn await_fired_futures() {
    poll_ready(Box::pin(async {
        for x in 0..1000i64 {
            let (tx, rx) = futures::channel::oneshot::channel();
            let _ = tx.send(black_box(x));
            black_box(rx.await.unwrap_or(0));
        }
    }))
}

fn await_fired_floor() {
    poll_ready(Box::pin(async {
        for x in 0..1000i64 {
            let slot = Rc::new(Cell::new(Some(black_box(x))));
            black_box(SlotFuture(slot).await);
        }
    }))
}

// --- await of 20 unfired Deferreds ----------------------------------------------

fn await_unfired_deferred() -> Deferred<i64> {
    let ds: Rc<[Deferred<i64>]> = (0..20).map(|_| Deferred::new()).collect();
    let waiting = ds.clone();
    let result = ensure_deferred(async move {
        let mut total = 0;
        for d in waiting.iter() {
            total += d.clone().await?;
        }
        Ok(total)
    });
    for (i, d) in ds.iter().enumerate() {
        d.callback(i as i64).unwrap();
    }
    debug_assert_eq!(result.result().value(), Some(190));
    result
}

fn await_unfired_tokio() -> Option<i64> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..20).map(|_| oneshot::channel::<i64>()).unzip();
    let mut fut = Box::pin(async move {
        let mut total = 0;
        for rx in rxs {
            total += rx.await.unwrap_or(0);
        }
        total
    });
    let _ = poll_once(fut.as_mut());
    let mut out = None;
    for (i, tx) in txs.into_iter().enumerate() {
        let _ = tx.send(i as i64);
        if let Poll::Ready(v) = poll_once(fut.as_mut()) {
            out = Some(v);
        }
    }
    debug_assert_eq!(out, Some(190));
    out
}

fn await_unfired_futures() -> Option<i64> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..20)
        .map(|_| futures::channel::oneshot::channel::<i64>())
        .unzip();
    let mut fut = Box::pin(async move {
        let mut total = 0;
        for rx in rxs {
            total += rx.await.unwrap_or(0);
        }
        total
    });
    let _ = poll_once(fut.as_mut());
    let mut out = None;
    for (i, tx) in txs.into_iter().enumerate() {
        let _ = tx.send(i as i64);
        if let Poll::Ready(v) = poll_once(fut.as_mut()) {
            out = Some(v);
        }
    }
    debug_assert_eq!(out, Some(190));
    out
}

fn await_unfired_floor() -> Option<i64> {
    let slots: Rc<[Rc<Cell<Option<i64>>>]> = (0..20).map(|_| Rc::new(Cell::new(None))).collect();
    let waiting = slots.clone();
    let mut fut = Box::pin(async move {
        let mut total = 0;
        for slot in waiting.iter() {
            total += SlotFuture(slot.clone()).await;
        }
        total
    });
    let _ = poll_once(fut.as_mut());
    let mut out = None;
    for (i, slot) in slots.iter().enumerate() {
        slot.set(Some(i as i64));
        if let Poll::Ready(v) = poll_once(fut.as_mut()) {
            out = Some(v);
        }
    }
    debug_assert_eq!(out, Some(190));
    out
}

// --- 4 callbacks, fires at start ---------------------------------------------------

fn fires_at_start_deferred() -> Deferred<i64> {
    let d: Deferred<i64> = Deferred::new();
    d.callback(black_box(2)).unwrap();
    d.add_callback(|x| Ok(add(x, 1)));
    d.add_callback(|x| Ok(add(x, 2)));
    d.add_callback(|x| Ok(add(x, 3)));
    d.add_callback(|x| Ok(add(x, 4)));
    d
}

fn fires_at_start_ready_map() -> i64 {
    poll_ready(
        ready(black_box(2i64))
            .map(|x| add(x, 1))
            .map(|x| add(x, 2))
            .map(|x| add(x, 3))
            .map(|x| add(x, 4)),
    )
}

fn fires_at_start_ready_map_boxed() -> i64 {
    let fut = ready(black_box(2i64)).boxed_local();
    let fut = fut.map(|x| add(x, 1)).boxed_local();
    let fut = fut.map(|x| add(x, 2)).boxed_local();
    let fut = fut.map(|x| add(x, 3)).boxed_local();
    let fut = fut.map(|x| add(x, 4)).boxed_local();
    poll_ready(fut)
}

type IntCallback = Box<dyn FnOnce(i64) -> i64>;

fn fires_at_start_floor() -> Rc<Cell<i64>> {
    let result = Rc::new(Cell::new(black_box(2)));
    for callback in [
        Box::new(|x| add(x, 1)) as IntCallback,
        Box::new(|x| add(x, 2)),
        Box::new(|x| add(x, 3)),
        Box::new(|x| add(x, 4)),
    ] {
        result.set(black_box(callback)(result.get()));
    }
    result
}

// --- 4 callbacks, fires at end ---------------------------------------------------

fn fires_at_end_deferred() -> Deferred<i64> {
    let d: Deferred<i64> = Deferred::new();
    d.add_callback(|x| Ok(add(x, 1)));
    d.add_callback(|x| Ok(add(x, 2)));
    d.add_callback(|x| Ok(add(x, 3)));
    d.add_callback(|x| Ok(add(x, 4)));
    d.callback(black_box(2)).unwrap();
    d
}

fn fires_at_end_capturing() -> Deferred<i64> {
    let d: Deferred<i64> = Deferred::new();
    for k in 1..=4i64 {
        let k = black_box(k);
        d.add_callback(move |x| Ok(add(x, k)));
    }
    d.callback(black_box(2)).unwrap();
    d
}

fn fires_at_end_tokio() -> i64 {
    let (tx, rx) = oneshot::channel::<i64>();
    let fut = rx
        .map(|r| add(r.unwrap_or(0), 1))
        .map(|x| add(x, 2))
        .map(|x| add(x, 3))
        .map(|x| add(x, 4));
    let _ = tx.send(black_box(2));
    poll_ready(fut)
}

fn fires_at_end_futures() -> i64 {
    let (tx, rx) = futures::channel::oneshot::channel::<i64>();
    let fut = rx
        .map(|r| add(r.unwrap_or(0), 1))
        .map(|x| add(x, 2))
        .map(|x| add(x, 3))
        .map(|x| add(x, 4));
    let _ = tx.send(black_box(2));
    poll_ready(fut)
}

fn fires_at_end_tokio_boxed() -> i64 {
    let (tx, rx) = oneshot::channel::<i64>();
    let fut = rx.map(|r| add(r.unwrap_or(0), 1)).boxed_local();
    let fut = fut.map(|x| add(x, 2)).boxed_local();
    let fut = fut.map(|x| add(x, 3)).boxed_local();
    let fut = fut.map(|x| add(x, 4)).boxed_local();
    let _ = tx.send(black_box(2));
    poll_ready(fut)
}

fn fires_at_end_floor() -> i64 {
    let chain: Vec<IntCallback> = vec![
        Box::new(|x| add(x, 1)),
        Box::new(|x| add(x, 2)),
        Box::new(|x| add(x, 3)),
        Box::new(|x| add(x, 4)),
    ];
    black_box(chain)
        .into_iter()
        .fold(black_box(2), |x, callback| callback(x))
}

// --- errback chain -----------------------------------------------------------------

/// The error of the futures and floor versions of the errback chain.
#[derive(Debug)]
struct Boom<M>(M);

impl<M: fmt::Display> fmt::Display for Boom<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<M: fmt::Display + fmt::Debug> Error for Boom<M> {}

fn errback_deferred() -> Deferred<()> {
    let d = succeed("result");
    let d = d.add_callback(|_| Err::<(), _>(Failure::msg("boom!")));
    let d = d.add_errback(|failure: Failure| {
        failure.trap::<MessageError>()?;
        Err(Failure::msg("lesser boom!"))
    });
    d.add_both(|_| Ok(()))
}

type BoxError = Box<dyn Error>;

fn errback_ready_map() {
    poll_ready(
        ready(Ok::<&str, BoxError>(black_box("result")))
            .map(|r| r.and_then(|_| Err::<(), BoxError>(Box::new(Boom("boom!".to_string())))))
            .map(|r| match r {
                Err(e) if e.is::<Boom<String>>() => {
                    Err::<(), BoxError>(Box::new(Boom("lesser boom!".to_string())))
                }
                other => other,
            })
            .map(|_| ()),
    )
}

type ErrCallback =
    Box<dyn FnOnce(Result<&'static str, BoxError>) -> Result<&'static str, BoxError>>;

fn errback_floor() -> Result<&'static str, BoxError> {
    let chain: Vec<ErrCallback> = vec![
        Box::new(|r| r.and_then(|_| Err(Box::new(Boom("boom!")) as BoxError))),
        Box::new(|r| match r {
            Err(e) if e.is::<Boom<&str>>() => Err(Box::new(Boom("lesser boom!")) as BoxError),
            other => other,
        }),
        Box::new(|_| Ok("")),
    ];
    // failures go down the chain too (to the errbacks): no short cut
    let mut result = Ok(black_box("result"));
    for callback in black_box(chain) {
        result = callback(result);
    }
    result
}

// --- chained, already fired -----------------------------------------------------

fn chained_already_deferred() -> Deferred<i64> {
    let d: Deferred<i64> = Deferred::new();
    let d2: Deferred<i64> = Deferred::new();
    let d3: Deferred<i64> = Deferred::new();
    d2.callback(123).unwrap();
    d3.callback(456).unwrap();
    d.add_callback(move |_| d2);
    d.add_callback(move |_| d3);
    d.callback(123).unwrap();
    debug_assert_eq!(d.result().value(), Some(456));
    d
}

fn chained_already_tokio() -> i64 {
    let (tx, rx) = oneshot::channel::<i64>();
    let (tx2, rx2) = oneshot::channel::<i64>();
    let (tx3, rx3) = oneshot::channel::<i64>();
    let _ = tx2.send(123);
    let _ = tx3.send(456);
    let fut = rx.then(move |_| rx2).then(move |_| rx3);
    let _ = tx.send(123);
    let v = poll_ready(fut).unwrap_or(0);
    debug_assert_eq!(v, 456);
    v
}

fn chained_already_floor() -> Option<i64> {
    let (d, d2, d3) = (Mini::new(), Mini::new(), Mini::new());
    d2.fire(123);
    d3.fire(456);
    d.add(move |_| Next::Wait(d2));
    d.add(move |_| Next::Wait(d3));
    d.fire(123);
    debug_assert_eq!(d.result(), Some(456));
    d.result()
}

// --- chained, not fired -------------------------------------------------------

fn chained_not_deferred() -> Deferred<i64> {
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
    debug_assert_eq!(d.result().value(), Some(57));
    d
}

fn chained_not_tokio() -> i64 {
    let (tx, rx) = oneshot::channel::<i64>();
    let (tx2, rx2) = oneshot::channel::<i64>();
    let (tx3, rx3) = oneshot::channel::<i64>();
    let (tx4, rx4) = oneshot::channel::<i64>();
    let fut3 = rx3.then(move |_| rx4);
    let _ = tx3.send(123);
    let fut = rx.then(move |_| rx2).then(move |_| fut3);
    let _ = tx2.send(123);
    let _ = tx4.send(57);
    let _ = tx.send(7);
    let v = poll_ready(fut).unwrap_or(0);
    debug_assert_eq!(v, 57);
    v
}

fn chained_not_floor() -> Option<i64> {
    let (d, d2, d3, d4) = (Mini::new(), Mini::new(), Mini::new(), Mini::new());
    let d4c = d4.clone();
    d3.add(move |_| Next::Wait(d4c));
    d3.fire(123);
    let (d2c, d3c) = (d2.clone(), d3.clone());
    d.add(move |_| Next::Wait(d2c));
    d.add(move |_| Next::Wait(d3c));
    d2.fire(123);
    d4.fire(57);
    d.fire(7);
    debug_assert_eq!(d.result(), Some(57));
    d.result()
}
