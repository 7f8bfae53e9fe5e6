//! Timers at scale: the cost of one `call_later` (schedule), one
//! `DelayedCall.cancel()` and one due call run (fire) with 10k, 100k and 1M
//! other calls pending far in the future, on the real reactor (ours), on the
//! deterministic `Clock` (a variant) and on a plain binary heap (the floor).
//!
//! One population per size is shared by that size's three rows (built on
//! first use, untimed). Operations are timed in batches of 1,000; untimed
//! work between batches restores the population (cancelling what a schedule
//! batch added, scheduling what a cancel batch removed), as Twisted's
//! reactor does in the Python version. Every call carries a small closure
//! (an `Rc` counter it increments).

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::rc::Rc;
use std::time::Duration;

use twisted_deferred::time::DelayedCall;
use twisted_reactor::{Clock, Reactor};

use super::SIZES;
use crate::floor::{TimerHeap, TimerId};
use crate::{Group, Rng, Role, Row, timed};

/// Pending calls are due between `FAR` and `2 * FAR` seconds from now.
const FAR: f64 = 1000.0;
const BATCH: u64 = 1000;

#[derive(Clone, Copy)]
enum Op {
    Schedule,
    Cancel,
    Fire,
}

pub(super) fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for n in SIZES {
        let reactor: Rc<RefCell<Option<Bed<Reactor>>>> = Rc::default();
        let clock: Rc<RefCell<Option<Bed<Clock>>>> = Rc::default();
        let floor: Rc<RefCell<Option<Bed<RefCell<TimerHeap>>>>> = Rc::default();
        for (op, name, what) in [
            (Op::Schedule, "schedule", "call_later (schedule)"),
            (Op::Cancel, "cancel", "DelayedCall.cancel()"),
            (Op::Fire, "fire", "a due call run"),
        ] {
            let (r, c, f) = (reactor.clone(), clock.clone(), floor.clone());
            rows.push(
                Row::new(
                    format!("timers_{name}/{n}"),
                    format!("timers: {what}, {n} pending"),
                    Group::Timers,
                )
                .scaling(
                    match op {
                        Op::Schedule => "timers_schedule",
                        Op::Cancel => "timers_cancel",
                        Op::Fire => "timers_fire",
                    },
                    n,
                )
                .notes("ours: the real reactor (`Reactor::call_later`; fire = `iterate(0)` running 1,000 due calls); no futures/tokio equivalent measured (tokio's timers need its runtime); floor: `BinaryHeap` of (time, sequence, slot) with boxed calls in a slab, lazy cancellation, reading the clock to schedule and to run due calls as the reactor must")
                .case("reactor", Role::Ours, move |iters| {
                    with_bed(&r, n, |bed| bed.op(op, iters))
                })
                .case("clock", Role::Variant, move |iters| {
                    with_bed(&c, n, |bed| bed.op(op, iters))
                })
                .case("floor_binary_heap", Role::Floor, move |iters| {
                    with_bed(&f, n, |bed| bed.op(op, iters))
                }),
            );
        }
    }
    rows
}

fn with_bed<Q: Queue>(
    bed: &RefCell<Option<Bed<Q>>>,
    n: u64,
    f: impl FnOnce(&mut Bed<Q>) -> Duration,
) -> Duration {
    let mut bed = bed.borrow_mut();
    f(bed.get_or_insert_with(|| Bed::new(n)))
}

/// A timer queue under test.
trait Queue {
    type Handle;
    fn make() -> Self;
    fn schedule(&self, delay: f64, f: impl FnOnce() + 'static) -> Self::Handle;
    fn cancel(&self, handle: &Self::Handle);
    fn run_due(&self);
}

impl Queue for Reactor {
    type Handle = DelayedCall;
    fn make() -> Self {
        Reactor::new().expect("a poller")
    }
    fn schedule(&self, delay: f64, f: impl FnOnce() + 'static) -> DelayedCall {
        self.call_later(delay, f).expect("a valid delay")
    }
    fn cancel(&self, handle: &DelayedCall) {
        black_box(handle.cancel()).expect("a pending call");
    }
    fn run_due(&self) {
        self.iterate(0.0).expect("an iteration");
    }
}

impl Queue for Clock {
    type Handle = DelayedCall;
    fn make() -> Self {
        Clock::new()
    }
    fn schedule(&self, delay: f64, f: impl FnOnce() + 'static) -> DelayedCall {
        self.call_later(delay, f)
    }
    fn cancel(&self, handle: &DelayedCall) {
        black_box(handle.cancel()).expect("a pending call");
    }
    fn run_due(&self) {
        self.advance(0.0).expect("due calls run");
    }
}

impl Queue for RefCell<TimerHeap> {
    type Handle = TimerId;
    fn make() -> Self {
        RefCell::new(TimerHeap::new())
    }
    fn schedule(&self, delay: f64, f: impl FnOnce() + 'static) -> TimerId {
        self.borrow_mut().schedule(delay, f)
    }
    fn cancel(&self, handle: &TimerId) {
        self.borrow_mut().cancel(*handle);
    }
    fn run_due(&self) {
        self.borrow_mut().run_due();
    }
}

struct Bed<Q: Queue> {
    queue: Q,
    rng: Rng,
    counter: Rc<Cell<u64>>,
    batch: Vec<Q::Handle>,
}

fn counting_call(counter: &Rc<Cell<u64>>) -> impl FnOnce() + 'static {
    let counter = counter.clone();
    move || counter.set(counter.get() + 1)
}

impl<Q: Queue> Bed<Q> {
    fn new(n: u64) -> Bed<Q> {
        let mut bed = Bed {
            queue: Q::make(),
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            counter: Rc::new(Cell::new(0)),
            batch: Vec::with_capacity(BATCH as usize),
        };
        for _ in 0..n {
            let delay = bed.far();
            // dropping the handle leaves the call pending
            let _ = bed.queue.schedule(delay, counting_call(&bed.counter));
        }
        bed
    }

    fn far(&mut self) -> f64 {
        FAR + self.rng.unit() * FAR
    }

    fn op(&mut self, op: Op, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let k = left.min(BATCH);
            total += match op {
                Op::Schedule => self.schedule_batch(k),
                Op::Cancel => self.cancel_batch(k),
                Op::Fire => self.fire_batch(k),
            };
            left -= k;
        }
        total
    }

    fn schedule_batch(&mut self, k: u64) -> Duration {
        let delays: Vec<f64> = (0..k).map(|_| self.far()).collect();
        let (queue, counter, batch) = (&self.queue, &self.counter, &mut self.batch);
        let (t, ()) = timed(|| {
            for &delay in &delays {
                batch.push(queue.schedule(black_box(delay), counting_call(counter)));
            }
        });
        for call in self.batch.drain(..) {
            self.queue.cancel(&call);
        }
        t
    }

    fn cancel_batch(&mut self, k: u64) -> Duration {
        for _ in 0..k {
            let delay = self.far();
            let call = self.queue.schedule(delay, counting_call(&self.counter));
            self.batch.push(call);
        }
        let (queue, batch) = (&self.queue, &self.batch);
        let (t, ()) = timed(|| {
            for call in batch {
                queue.cancel(call);
            }
        });
        self.batch.clear();
        t
    }

    fn fire_batch(&mut self, k: u64) -> Duration {
        for _ in 0..k {
            let _ = self.queue.schedule(0.0, counting_call(&self.counter));
        }
        let before = self.counter.get();
        let (t, ()) = timed(|| self.queue.run_due());
        assert_eq!(self.counter.get() - before, k, "every due call ran");
        t
    }
}
