//! The floors' building blocks: the least machinery each job needs, with
//! none of a Deferred's generality (no failures, no type erasure of
//! results, no pause, no cancel, no re-entrancy rules, no debug info).
//!
//! * [`Mini`]: a shared result plus a queue of boxed callbacks on `i64`,
//!   where a callback may hand back another `Mini` to wait for; resolved by
//!   an iterative loop, as a Deferred is. The floor of chaining.
//! * [`SlotFuture`]: a shared slot awaited as a future: the floor of
//!   awaiting a result holder.
//! * [`GatherFloor`]: inputs that each know where to deliver their value:
//!   the floor of `gather_results`/`DeferredList`.
//! * [`TimerHeap`]: a binary heap of (due time, sequence) with a slab of
//!   boxed calls and lazy cancellation: the floor of a timer queue. It reads
//!   the clock where `callLater` and the reactor must (a call is due `delay`
//!   seconds from now; due calls are those at or before now) and runs calls
//!   due at the same time in scheduling order, as the reactor does.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

/// What a [`Mini`] callback hands on: a value, or a `Mini` to wait for.
#[derive(Debug)]
pub enum Next {
    /// Go on with this value.
    Value(i64),
    /// Wait for this one's result.
    Wait(Mini),
}

type MiniCallback = Box<dyn FnOnce(i64) -> Next>;

/// A minimal chainable result: see the module docs.
#[derive(Clone)]
pub struct Mini(Rc<MiniInner>);

struct MiniInner {
    result: Cell<Option<i64>>,
    waiting: Cell<bool>,
    callbacks: RefCell<VecDeque<MiniCallback>>,
    waiter: RefCell<Option<Mini>>,
}

impl std::fmt::Debug for Mini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mini")
            .field("result", &self.0.result.get())
            .field("waiting", &self.0.waiting.get())
            .finish_non_exhaustive()
    }
}

impl Default for Mini {
    fn default() -> Self {
        Mini::new()
    }
}

impl Mini {
    /// No result, no callbacks.
    pub fn new() -> Mini {
        Mini(Rc::new(MiniInner {
            result: Cell::new(None),
            waiting: Cell::new(false),
            callbacks: RefCell::new(VecDeque::new()),
            waiter: RefCell::new(None),
        }))
    }

    /// The result, once every callback ran.
    pub fn result(&self) -> Option<i64> {
        if self.0.waiting.get() {
            None
        } else {
            self.0.result.get()
        }
    }

    /// Adds a callback; runs it at once if the result is there.
    pub fn add(&self, f: impl FnOnce(i64) -> Next + 'static) {
        self.0.callbacks.borrow_mut().push_back(Box::new(f));
        if self.result().is_some() {
            run(self.clone());
        }
    }

    /// Sets the result and runs the callbacks.
    pub fn fire(&self, v: i64) {
        self.0.result.set(Some(v));
        run(self.clone());
    }
}

fn run(mut current: Mini) {
    loop {
        let mut v = current.0.result.get().expect("a result to run on");
        loop {
            let next = current.0.callbacks.borrow_mut().pop_front();
            let Some(callback) = next else { break };
            match callback(v) {
                Next::Value(x) => v = x,
                Next::Wait(inner) => match inner.result() {
                    Some(x) => v = x,
                    None => {
                        current.0.waiting.set(true);
                        *inner.0.waiter.borrow_mut() = Some(current);
                        return;
                    }
                },
            }
        }
        current.0.result.set(Some(v));
        current.0.waiting.set(false);
        let waiter = current.0.waiter.borrow_mut().take();
        match waiter {
            Some(outer) => {
                outer.0.result.set(Some(v));
                current = outer;
            }
            None => return,
        }
    }
}

/// A shared slot awaited as a future: ready with the value once it is
/// there (taken), pending before.
pub struct SlotFuture<T>(pub Rc<Cell<Option<T>>>);

impl<T> std::fmt::Debug for SlotFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotFuture")
    }
}

impl<T> Future for SlotFuture<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<T> {
        match self.0.take() {
            Some(v) => Poll::Ready(v),
            None => Poll::Pending,
        }
    }
}

/// The floor of a combinator over many inputs: each input holds a link
/// (the shared state and its index) and writes its value straight into the
/// results when fired.
#[derive(Debug)]
pub struct GatherFloor {
    results: RefCell<Vec<u64>>,
    remaining: Cell<usize>,
}

/// One input of a [`GatherFloor`].
#[derive(Default)]
pub struct GatherInput {
    link: Cell<Option<(Rc<GatherFloor>, usize)>>,
}

impl std::fmt::Debug for GatherInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatherInput")
    }
}

impl GatherFloor {
    /// Links every input to a new combinator.
    pub fn new(inputs: &[Rc<GatherInput>]) -> Rc<GatherFloor> {
        let state = Rc::new(GatherFloor {
            results: RefCell::new(vec![0; inputs.len()]),
            remaining: Cell::new(inputs.len()),
        });
        for (i, input) in inputs.iter().enumerate() {
            input.link.set(Some((state.clone(), i)));
        }
        state
    }

    /// True once every input fired.
    pub fn done(&self) -> bool {
        self.remaining.get() == 0
    }

    /// The results, once done.
    pub fn results(&self) -> std::cell::Ref<'_, Vec<u64>> {
        self.results.borrow()
    }
}

impl GatherInput {
    /// Fires this input.
    pub fn fire(&self, v: u64) {
        if let Some((state, i)) = self.link.take() {
            state.results.borrow_mut()[i] = v;
            state.remaining.set(state.remaining.get() - 1);
        }
    }
}

/// The floor of a timer queue: see the module docs.
pub struct TimerHeap {
    /// (due time's bits, sequence, slot).
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    calls: Vec<Option<Box<dyn FnOnce()>>>,
    free: Vec<u32>,
    cancelled: usize,
    sequence: u64,
    start: Instant,
}

impl std::fmt::Debug for TimerHeap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerHeap")
            .field("entries", &self.heap.len())
            .field("cancelled", &self.cancelled)
            .finish_non_exhaustive()
    }
}

impl Default for TimerHeap {
    fn default() -> Self {
        TimerHeap::new()
    }
}

/// A call in a [`TimerHeap`].
#[derive(Debug, Clone, Copy)]
pub struct TimerId(u32);

impl TimerHeap {
    /// Empty.
    pub fn new() -> TimerHeap {
        TimerHeap {
            heap: BinaryHeap::new(),
            calls: Vec::new(),
            free: Vec::new(),
            cancelled: 0,
            sequence: 0,
            start: Instant::now(),
        }
    }

    /// Seconds since this queue was made.
    #[inline]
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Schedules `f` `delay` (non-negative) seconds from now.
    pub fn schedule(&mut self, delay: f64, f: impl FnOnce() + 'static) -> TimerId {
        let time = self.now() + delay;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.calls[slot as usize] = Some(Box::new(f));
                slot
            }
            None => {
                self.calls.push(Some(Box::new(f)));
                (self.calls.len() - 1) as u32
            }
        };
        self.heap
            .push(Reverse((time.to_bits(), self.sequence, slot)));
        self.sequence += 1;
        TimerId(slot)
    }

    /// Cancels a call: drops it now, its heap entry later (all stale
    /// entries at once, when they are half the heap).
    pub fn cancel(&mut self, id: TimerId) {
        if self.calls[id.0 as usize].take().is_some() {
            self.cancelled += 1;
            if self.cancelled > 50 && self.cancelled > self.heap.len() / 2 {
                let calls = &self.calls;
                self.heap
                    .retain(|Reverse((_, _, slot))| calls[*slot as usize].is_some());
                let mut referenced = vec![false; self.calls.len()];
                for Reverse((_, _, slot)) in self.heap.iter() {
                    referenced[*slot as usize] = true;
                }
                self.free.clear();
                self.free
                    .extend((0..self.calls.len() as u32).filter(|s| !referenced[*s as usize]));
                self.cancelled = 0;
            }
        }
    }

    /// Runs every call due now.
    pub fn run_due(&mut self) -> usize {
        let now = self.now();
        let mut ran = 0;
        while let Some(&Reverse((t, _, slot))) = self.heap.peek() {
            if f64::from_bits(t) > now {
                break;
            }
            self.heap.pop();
            match self.calls[slot as usize].take() {
                Some(f) => {
                    self.free.push(slot);
                    f();
                    ran += 1;
                }
                None => {
                    // a cancelled call's stale entry; its slot was freed
                    // only if a sweep ran, so free it now
                    self.cancelled = self.cancelled.saturating_sub(1);
                    self.free.push(slot);
                }
            }
        }
        ran
    }
}
