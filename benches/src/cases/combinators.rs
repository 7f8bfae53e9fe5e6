//! `gather_results` and `DeferredList` over 1k..1M inputs: the inputs are
//! made untimed; timed is building the combinator and firing every input
//! (each `callback()` fires one input); everything is dropped untimed.

use std::hint::black_box;
use std::rc::Rc;
use std::task::Poll;

use futures::future::{join_all, ready};
use tokio::sync::oneshot;
use twisted_deferred::{Deferred, DeferredList, gather_results, succeed};

use super::{SIZES, heavy};
use crate::floor::{GatherFloor, GatherInput};
use crate::{Group, Role, Row, batched, poll_once, poll_ready};

pub(super) fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for n in SIZES {
        rows.push(
            Row::new(
                format!("gather/{n}"),
                format!("gather_results of {n} (per input)"),
                Group::Combinators,
            )
            .elements(n)
            .heavy(heavy(n))
            .scaling("gather", n)
            .notes("inputs made untimed; closest: `join_all` over tokio oneshot receivers, polled, then every sender sends, polled again; floor: inputs that write straight into the result vector (`floor::GatherFloor`)")
            .case("deferred", Role::Ours, move |iters| {
                batched(iters, || unfired(n), |inputs| {
                    let g = gather_results(inputs.iter().cloned(), false);
                    fire_all(&inputs);
                    assert!(g.called());
                    (inputs, g)
                })
            })
            .case("tokio_oneshot_join_all", Role::Closest, move |iters| {
                batched(iters, || channels(n), join_oneshots)
            })
            .case("futures_join_all_ready", Role::Equivalent, move |iters| {
                batched(
                    iters,
                    || (0..n).map(ready).collect::<Vec<_>>(),
                    |futs| poll_ready(join_all(futs)),
                )
            })
            .case("deferred_fired_before", Role::Variant, move |iters| {
                batched(iters, || fired(n), |inputs| {
                    let g = gather_results(inputs.iter().cloned(), false);
                    assert!(g.called());
                    (inputs, g)
                })
            })
            .case("floor_linked_slots", Role::Floor, move |iters| {
                batched(iters, || floor_inputs(n), floor_gather)
            }),
        );
    }
    for n in std::iter::once(1_000).chain(SIZES) {
        let mut row = Row::new(
            format!("deferred_list/{n}"),
            format!("DeferredList of {n} (per input)"),
            Group::Combinators,
        )
        .elements(n)
        .heavy(heavy(n))
        .notes("as gather, with `DeferredList` (results as `(success, value)` pairs); closest: `join_all` over tokio oneshot receivers; floor: `floor::GatherFloor`");
        if n >= 10_000 {
            row = row.scaling("deferred_list", n);
        }
        rows.push(
            row.case("deferred", Role::Ours, move |iters| {
                batched(
                    iters,
                    || unfired(n),
                    |inputs| {
                        let dl = DeferredList::new(inputs.iter().cloned());
                        fire_all(&inputs);
                        assert!(dl.called());
                        (inputs, dl)
                    },
                )
            })
            .case("tokio_oneshot_join_all", Role::Closest, move |iters| {
                batched(iters, || channels(n), join_oneshots)
            })
            .case("deferred_fired_before", Role::Variant, move |iters| {
                batched(
                    iters,
                    || fired(n),
                    |inputs| {
                        let dl = DeferredList::new(inputs.iter().cloned());
                        assert!(dl.called());
                        (inputs, dl)
                    },
                )
            })
            .case("floor_linked_slots", Role::Floor, move |iters| {
                batched(iters, || floor_inputs(n), floor_gather)
            }),
        );
    }
    rows
}

fn unfired(n: u64) -> Vec<Deferred<u64>> {
    (0..n).map(|_| Deferred::new()).collect()
}

fn fired(n: u64) -> Vec<Deferred<u64>> {
    (0..n).map(succeed).collect()
}

fn fire_all(inputs: &[Deferred<u64>]) {
    for (i, d) in inputs.iter().enumerate() {
        d.callback(black_box(i as u64)).unwrap();
    }
}

type Channels = (Vec<oneshot::Sender<u64>>, Vec<oneshot::Receiver<u64>>);

fn channels(n: u64) -> Channels {
    (0..n).map(|_| oneshot::channel()).unzip()
}

fn join_oneshots((txs, rxs): Channels) -> Vec<Result<u64, oneshot::error::RecvError>> {
    let mut fut = Box::pin(join_all(rxs));
    assert!(poll_once(fut.as_mut()).is_pending());
    for (i, tx) in txs.into_iter().enumerate() {
        let _ = tx.send(black_box(i as u64));
    }
    match poll_once(fut.as_mut()) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("every input was sent"),
    }
}

fn floor_inputs(n: u64) -> Vec<Rc<GatherInput>> {
    (0..n).map(|_| Rc::new(GatherInput::default())).collect()
}

fn floor_gather(inputs: Vec<Rc<GatherInput>>) -> (Vec<Rc<GatherInput>>, Rc<GatherFloor>) {
    let g = GatherFloor::new(&inputs);
    for (i, input) in inputs.iter().enumerate() {
        input.fire(black_box(i as u64));
    }
    assert!(g.done());
    (inputs, g)
}
