//! One `cancel()` through 10 nested coroutines that await an unfired
//! Deferred: each level its own `ensure_deferred` (10 coroutines in
//! Twisted's sense, each with its Deferred), or plain nested `async` blocks
//! in one `ensure_deferred`. Setup (building and suspending the stacks, in
//! batches of 1,000) is untimed; the cancels are timed; the stacks are
//! dropped untimed.

use std::cell::Cell;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use futures::future::{AbortHandle, Abortable, Aborted, LocalBoxFuture};
use tokio::sync::oneshot;
use twisted_deferred::{CancelledError, Deferred, Failure, ensure_deferred};

use crate::{Group, Role, Row, poll_once, timed};

const NESTED: u32 = 10;
const BATCH: u64 = 1000;

pub(super) fn rows() -> Vec<Row> {
    vec![
        Row::new(
            "cancel_nested_coroutines",
            "one cancel through 10 nested coroutines (each an ensure_deferred)",
            Group::Coroutines,
        )
        .notes("closest: 10 nested boxed futures in `Abortable`: abort, poll, drop; floor: a cancel walking 10 linked nodes down and back up")
        .case("deferred", Role::Ours, |iters| {
            batches(iters, wrapped_stack, |outer| outer.cancel().unwrap())
        })
        .case("futures_abortable_boxed", Role::Closest, |iters| {
            batches(iters, || abortable(boxed_level(NESTED - 1, channel())), abort)
        })
        .case("floor_nodes", Role::Floor, |iters| {
            batches(iters, || Node::chain(NESTED), |n| n.cancel())
        }),
        Row::new(
            "cancel_nested_async_fns",
            "one cancel through 10 nested async fns (one ensure_deferred)",
            Group::Coroutines,
        )
        .notes("closest: the same 10 nested async blocks in `Abortable`: abort, poll, drop; floor: as above")
        .case("deferred", Role::Ours, |iters| {
            batches(iters, plain_stack, |outer| outer.cancel().unwrap())
        })
        .case("futures_abortable", Role::Closest, |iters| {
            batches(
                iters,
                || {
                    let (tx, rx) = channel();
                    abortable((tx, nested(async move { rx.await.unwrap_or(0) })))
                },
                abort,
            )
        })
        .case("floor_nodes", Role::Floor, |iters| {
            batches(iters, || Node::chain(NESTED), |n| n.cancel())
        }),
    ]
}

/// Sets up batches of stacks untimed, times `op` on each.
fn batches<S, R>(iters: u64, mut setup: impl FnMut() -> S, op: impl Fn(&mut S) -> R) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    let mut stacks: Vec<S> = Vec::with_capacity(BATCH as usize);
    while left > 0 {
        let k = left.min(BATCH);
        stacks.extend((0..k).map(|_| setup()));
        let (t, ()) = timed(|| {
            for s in stacks.iter_mut() {
                std::hint::black_box(op(s));
            }
        });
        total += t;
        stacks.clear();
        left -= k;
    }
    total
}

fn swallow_cancel(outer: &Deferred<i64>) {
    outer.add_errback(|f: Failure| {
        f.trap::<CancelledError>()?;
        Ok(-1)
    });
}

fn level(k: u32, inner: Deferred<i64>) -> Deferred<i64> {
    ensure_deferred(async move {
        if k == 0 {
            inner.await
        } else {
            level(k - 1, inner).await
        }
    })
}

fn wrapped_stack() -> Deferred<i64> {
    let outer = level(NESTED - 1, Deferred::new());
    swallow_cancel(&outer);
    outer
}

/// Ten nested `async` blocks around `$fut`.
macro_rules! nest {
    ($fut:expr;) => { $fut };
    ($fut:expr; $head:tt $($rest:tt)*) => { async move { nest!($fut; $($rest)*).await } };
}

/// `fut` (itself an async block) inside 9 more: 10 nested async fns.
async fn nested<F: Future>(fut: F) -> F::Output {
    nest!(fut; 1 2 3 4 5 6 7 8).await
}

fn plain_stack() -> Deferred<i64> {
    let inner: Deferred<i64> = Deferred::new();
    let outer = ensure_deferred(nested(async move { inner.into_future().await }));
    swallow_cancel(&outer);
    outer
}

fn channel() -> (oneshot::Sender<i64>, oneshot::Receiver<i64>) {
    oneshot::channel()
}

fn boxed_level(
    k: u32,
    (tx, rx): (oneshot::Sender<i64>, oneshot::Receiver<i64>),
) -> (oneshot::Sender<i64>, LocalBoxFuture<'static, i64>) {
    fn inner(k: u32, rx: oneshot::Receiver<i64>) -> LocalBoxFuture<'static, i64> {
        Box::pin(async move {
            if k == 0 {
                rx.await.unwrap_or(0)
            } else {
                inner(k - 1, rx).await
            }
        })
    }
    (tx, inner(k, rx))
}

type Stack<F> = (
    oneshot::Sender<i64>,
    AbortHandle,
    Option<Pin<Box<Abortable<F>>>>,
);

/// Suspends `fut` inside `Abortable` (the sender keeps it waiting).
fn abortable<F: Future>((tx, fut): (oneshot::Sender<i64>, F)) -> Stack<F> {
    let (handle, registration) = AbortHandle::new_pair();
    let mut fut = Box::pin(Abortable::new(fut, registration));
    assert!(poll_once(fut.as_mut()).is_pending());
    (tx, handle, Some(fut))
}

/// Aborts, polls to the `Aborted` outcome, drops the futures.
fn abort<F: Future>((_, handle, fut): &mut Stack<F>) -> bool {
    handle.abort();
    let mut fut = fut.take().expect("aborted once");
    let aborted = matches!(
        poll_once(fut.as_mut()),
        std::task::Poll::Ready(Err(Aborted))
    );
    drop(fut);
    aborted
}

/// The floor: a chain of nodes; a cancel walks down to the innermost and
/// marks every level on the way back up.
struct Node {
    inner: Option<Rc<Node>>,
    cancelled: Cell<bool>,
}

impl Node {
    fn chain(levels: u32) -> Rc<Node> {
        let mut node = Rc::new(Node {
            inner: None,
            cancelled: Cell::new(false),
        });
        for _ in 1..levels {
            node = Rc::new(Node {
                inner: Some(node),
                cancelled: Cell::new(false),
            });
        }
        node
    }

    fn cancel(&self) {
        if let Some(inner) = &self.inner {
            inner.cancel();
        }
        self.cancelled.set(true);
    }
}
