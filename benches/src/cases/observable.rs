//! Synapse's `ObservableDeferred` with 1,000 observers: make the origin and
//! the observable, request 1,000 observers, fire the origin (every observer
//! gets the value); dropped untimed.

use std::cell::Cell;
use std::hint::black_box;
use std::pin::Pin;
use std::rc::Rc;

use futures::FutureExt;
use tokio::sync::oneshot;
use twisted_compat::ObservableDeferred;
use twisted_deferred::Deferred;

use crate::{Group, Role, Row, batched, poll_once};

const OBSERVERS: usize = 1000;

pub(super) fn rows() -> Vec<Row> {
    vec![
        Row::new(
            "observable/1000",
            "ObservableDeferred, 1,000 observers (per observer)",
            Group::Observable,
        )
        .elements(OBSERVERS as u64)
        .notes("closest: a tokio oneshot receiver made `Shared`, 1,000 clones polled (registered), sent, each polled again; floor: 1,000 `Rc` slots written in turn")
        .case("deferred", Role::Ours, |iters| batched(iters, || (), |()| observe_deferred()))
        .case("futures_shared", Role::Closest, |iters| batched(iters, || (), |()| observe_shared()))
        .case("floor_rc_slots", Role::Floor, |iters| batched(iters, || (), |()| observe_floor())),
    ]
}

fn observe_deferred() -> (ObservableDeferred<i64>, Vec<Deferred<i64>>) {
    let origin: Deferred<i64> = Deferred::new();
    let od = ObservableDeferred::new(origin.clone(), false);
    let observers: Vec<Deferred<i64>> = (0..OBSERVERS).map(|_| od.observe()).collect();
    origin.callback(black_box(7)).unwrap();
    assert_eq!(observers[OBSERVERS - 1].result().value(), Some(7));
    (od, observers)
}

type SharedRx = futures::future::Shared<oneshot::Receiver<i64>>;

fn observe_shared() -> Vec<SharedRx> {
    let (tx, rx) = oneshot::channel::<i64>();
    let shared = rx.shared();
    let mut observers: Vec<SharedRx> = (0..OBSERVERS).map(|_| shared.clone()).collect();
    for o in observers.iter_mut() {
        assert!(poll_once(Pin::new(o)).is_pending());
    }
    let _ = tx.send(black_box(7));
    let mut last = None;
    for o in observers.iter_mut() {
        if let std::task::Poll::Ready(v) = poll_once(Pin::new(o)) {
            last = v.ok();
        }
    }
    assert_eq!(last, Some(7));
    observers
}

fn observe_floor() -> Vec<Rc<Cell<Option<i64>>>> {
    let observers: Vec<Rc<Cell<Option<i64>>>> =
        (0..OBSERVERS).map(|_| Rc::new(Cell::new(None))).collect();
    let v = black_box(7);
    for o in &observers {
        o.set(Some(v));
    }
    observers
}
