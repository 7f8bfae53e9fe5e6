//! The reactor's timed calls: Twisted's `ReactorBase.callLater`,
//! `_pendingTimedCalls` / `_newTimedCalls` and the `DelayedCall`s it hands
//! out, on real (monotonic) time.
//!
//! Calls wait in the same 4-ary heap as the [`Clock`](crate::Clock)'s,
//! keyed by (due time, scheduling order), so calls due at the same time run
//! in the order they were scheduled (Twisted's `heapq` leaves that order
//! unspecified; this is one of the orders it allows). `cancel`, `reset` and
//! `delay` leave a stale entry behind that is skipped when it surfaces and
//! swept once stale entries outnumber live ones, as Twisted sweeps after 50
//! cancellations: scheduling, cancelling and running a call stay O(log n)
//! with a million calls pending.
//!
//! As in Twisted, a call scheduled (or moved) while the reactor is running
//! its due calls waits for the next iteration even if it is already due:
//! a zero-delay call that reschedules itself cannot starve I/O.
//!
//! ```
//! use std::{cell::RefCell, rc::Rc};
//! use twisted_reactor::Reactor;
//!
//! let reactor = Reactor::new().unwrap();
//! let log = Rc::new(RefCell::new(Vec::new()));
//! let (l, r) = (log.clone(), reactor.clone());
//! // reactor.callLater(0, lambda: reactor.callLater(0, log.append, "next"))
//! reactor.call_later(0.0, move || {
//!     r.call_later(0.0, move || l.borrow_mut().push("next")).unwrap();
//! }).unwrap();
//! reactor.iterate(0.0).unwrap();
//! assert!(log.borrow().is_empty());                                 // not in the same iteration
//! reactor.iterate(0.0).unwrap();
//! assert_eq!(*log.borrow(), ["next"]);
//! ```

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Instant;

use twisted_deferred::time::{DelayedCall, DelayedCallError, DelayedCallImpl, TimedCall};

use crate::heap::{Entry, TimerHeap, time_key};

/// The reactor's notion of time: monotonic, counted from the wall-clock
/// time when the reactor was made, so `seconds()` looks like Python's
/// `time.time()` but never goes backwards.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimeSource {
    epoch: Instant,
    wall_at_epoch: f64,
}

impl TimeSource {
    pub(crate) fn new() -> TimeSource {
        let wall_at_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        TimeSource {
            epoch: Instant::now(),
            wall_at_epoch,
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> f64 {
        self.wall_at_epoch + self.epoch.elapsed().as_secs_f64()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Called,
    Cancelled,
}

/// One scheduled call.
struct TimerCall {
    /// When it is due.
    time: Cell<f64>,
    /// The rank of its current heap entry; older entries are stale.
    rank: Cell<u64>,
    status: Cell<Status>,
    func: RefCell<Option<TimedCall>>,
    queue: Weak<QueueInner>,
    source: TimeSource,
    me: Weak<TimerCall>,
}

type TimerEntry = Entry<Rc<TimerCall>>;

#[inline]
fn is_current(entry: &TimerEntry) -> bool {
    entry.call.status.get() == Status::Pending && entry.call.rank.get() == entry.rank
}

struct QueueInner {
    heap: RefCell<TimerHeap<Rc<TimerCall>>>,
    /// Entries made while due calls run (Twisted's `_newTimedCalls`).
    incoming: RefCell<Vec<TimerEntry>>,
    /// Due calls are being run: new entries go to `incoming`.
    running: Cell<bool>,
    next_rank: Cell<u64>,
    /// Pending calls.
    live: Cell<usize>,
    /// Entries in the heap or `incoming` that are no longer current.
    stale: Cell<usize>,
    source: TimeSource,
}

/// The reactor's pending timed calls.
pub(crate) struct TimerQueue {
    inner: Rc<QueueInner>,
}

impl QueueInner {
    fn enqueue(&self, call: Rc<TimerCall>) {
        let rank = self.next_rank.get();
        self.next_rank.set(rank + 1);
        call.rank.set(rank);
        let entry = Entry {
            time: time_key(call.time.get()),
            rank,
            call,
        };
        if self.running.get() {
            self.incoming.borrow_mut().push(entry);
        } else {
            self.heap.borrow_mut().push(entry);
        }
    }

    /// `_insertNewDelayedCalls()`.
    fn flush_incoming(&self) {
        if self.running.get() || self.incoming.borrow().is_empty() {
            return;
        }
        let incoming = std::mem::take(&mut *self.incoming.borrow_mut());
        let mut heap = self.heap.borrow_mut();
        for entry in incoming {
            if is_current(&entry) {
                heap.push(entry);
            } else {
                self.stale.set(self.stale.get().saturating_sub(1));
            }
        }
    }

    fn note_stale(&self) {
        self.stale.set(self.stale.get() + 1);
        self.maybe_sweep();
    }

    /// Drops stale entries once they outnumber the live ones (amortised
    /// O(1) per cancel or move).
    fn maybe_sweep(&self) {
        let stale = self.stale.get();
        if stale > 64
            && stale > self.live.get()
            && !self.running.get()
            && let Ok(mut heap) = self.heap.try_borrow_mut()
        {
            self.flush_incoming_into(&mut heap);
            heap.retain(is_current);
            self.stale.set(0);
        }
    }

    fn flush_incoming_into(&self, heap: &mut TimerHeap<Rc<TimerCall>>) {
        let incoming = std::mem::take(&mut *self.incoming.borrow_mut());
        for entry in incoming {
            heap.push(entry);
        }
    }
}

impl TimerCall {
    fn check_active(&self) -> Result<(), DelayedCallError> {
        match self.status.get() {
            Status::Pending => Ok(()),
            Status::Cancelled => Err(DelayedCallError::AlreadyCancelled),
            Status::Called => Err(DelayedCallError::AlreadyCalled),
        }
    }

    fn move_to(&self, time: f64) {
        self.time.set(time);
        if let (Some(queue), Some(me)) = (self.queue.upgrade(), self.me.upgrade()) {
            queue.enqueue(me);
            queue.note_stale();
        }
    }
}

impl DelayedCallImpl for TimerCall {
    fn get_time(&self) -> f64 {
        self.time.get()
    }

    fn cancel(&self) -> Result<(), DelayedCallError> {
        self.check_active()?;
        self.status.set(Status::Cancelled);
        if let Some(queue) = self.queue.upgrade() {
            queue.live.set(queue.live.get().saturating_sub(1));
            queue.note_stale();
        }
        // `del self.func`, outside any borrow: dropping it may run user code.
        let func = self.func.borrow_mut().take();
        drop(func);
        Ok(())
    }

    fn reset(&self, seconds_from_now: f64) -> Result<(), DelayedCallError> {
        self.check_active()?;
        self.move_to(self.source.now() + seconds_from_now);
        Ok(())
    }

    fn delay(&self, seconds_later: f64) -> Result<(), DelayedCallError> {
        self.check_active()?;
        self.move_to(self.time.get() + seconds_later);
        Ok(())
    }

    fn active(&self) -> bool {
        self.status.get() == Status::Pending
    }
}

/// Marks the queue as running due calls for as long as it lives, so that a
/// panic unwinding through the loop cannot leave it marked.
pub(crate) struct RunningGuard<'a> {
    queue: &'a TimerQueue,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.queue.inner.running.set(false);
        self.queue.inner.maybe_sweep();
    }
}

impl TimerQueue {
    pub(crate) fn new(source: TimeSource) -> TimerQueue {
        TimerQueue {
            inner: Rc::new(QueueInner {
                heap: RefCell::new(TimerHeap::default()),
                incoming: RefCell::new(Vec::new()),
                running: Cell::new(false),
                next_rank: Cell::new(0),
                live: Cell::new(0),
                stale: Cell::new(0),
                source,
            }),
        }
    }

    /// `callLater(delay, f)`, the delay already checked.
    pub(crate) fn schedule(&self, delay: f64, func: TimedCall) -> DelayedCall {
        let inner = &self.inner;
        let time = inner.source.now() + delay;
        let call = Rc::new_cyclic(|me| TimerCall {
            time: Cell::new(time),
            rank: Cell::new(0),
            status: Cell::new(Status::Pending),
            func: RefCell::new(Some(func)),
            queue: Rc::downgrade(inner),
            source: inner.source,
            me: me.clone(),
        });
        inner.enqueue(call.clone());
        inner.live.set(inner.live.get() + 1);
        DelayedCall::new(call)
    }

    /// Starts running due calls: moves the calls made since into the heap
    /// and sends calls made from now on to the next iteration.
    pub(crate) fn begin_run(&self) -> RunningGuard<'_> {
        self.inner.flush_incoming();
        self.inner.running.set(true);
        RunningGuard { queue: self }
    }

    /// The earliest pending call if it is due at `now`, marked called
    /// (`call.called = 1`), with its function.
    pub(crate) fn pop_due(&self, now: f64) -> Option<TimedCall> {
        let inner = &self.inner;
        loop {
            let mut heap = inner.heap.borrow_mut();
            let top = heap.peek()?;
            if !is_current(top) {
                heap.pop();
                inner.stale.set(inner.stale.get().saturating_sub(1));
                continue;
            }
            if top.time > time_key(now) {
                return None;
            }
            let entry = heap.pop()?;
            drop(heap);
            entry.call.status.set(Status::Called);
            inner.live.set(inner.live.get().saturating_sub(1));
            let func = entry.call.func.borrow_mut().take();
            match func {
                Some(func) => return Some(func),
                None => continue,
            }
        }
    }

    /// `timeout()`: seconds until the earliest pending call is due (0 if
    /// it is due already), or `None` when nothing is pending.
    pub(crate) fn time_until_next(&self, now: f64) -> Option<f64> {
        let inner = &self.inner;
        inner.flush_incoming();
        let mut heap = inner.heap.borrow_mut();
        loop {
            let top = heap.peek()?;
            if !is_current(top) {
                heap.pop();
                inner.stale.set(inner.stale.get().saturating_sub(1));
                continue;
            }
            let due = top.call.time.get();
            return Some(if due.is_nan() {
                f64::INFINITY
            } else {
                (due - now).max(0.0)
            });
        }
    }

    /// `getDelayedCalls()`, in the order they will run.
    pub(crate) fn delayed_calls(&self) -> Vec<DelayedCall> {
        let heap = self.inner.heap.borrow();
        let incoming = self.inner.incoming.borrow();
        let mut current: Vec<&TimerEntry> = heap
            .iter()
            .chain(incoming.iter())
            .filter(|e| is_current(e))
            .collect();
        current.sort_by_key(|e| (e.time, e.rank));
        current
            .into_iter()
            .map(|e| DelayedCall::new(e.call.clone()))
            .collect()
    }

    /// How many calls are pending, in O(1).
    pub(crate) fn len(&self) -> usize {
        self.inner.live.get()
    }

    /// How many entries the heap holds, stale ones included (for tests of
    /// the sweep).
    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.inner.heap.borrow().len() + self.inner.incoming.borrow().len()
    }

    /// Drops the functions of every pending call: the reactor stopped for
    /// good and can never run them. Breaks the cycles of calls that hold
    /// the reactor.
    pub(crate) fn release_all(&self) {
        let heap = std::mem::take(&mut *self.inner.heap.borrow_mut());
        let incoming = std::mem::take(&mut *self.inner.incoming.borrow_mut());
        let funcs: Vec<TimedCall> = heap
            .into_vec()
            .into_iter()
            .chain(incoming)
            .filter(is_current)
            .filter_map(|e| e.call.func.borrow_mut().take())
            .collect();
        self.inner.live.set(0);
        self.inner.stale.set(0);
        drop(funcs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> TimedCall {
        Box::new(|| Ok(()))
    }

    #[test]
    fn cancelled_entries_are_swept() {
        let queue = TimerQueue::new(TimeSource::new());
        let calls: Vec<_> = (0..1000).map(|_| queue.schedule(100.0, noop())).collect();
        for call in &calls[..900] {
            call.cancel().unwrap();
        }
        assert_eq!(queue.len(), 100);
        assert!(queue.heap_len() < 500, "{}", queue.heap_len());
    }

    #[test]
    fn calls_made_while_running_wait_for_the_next_run() {
        let queue = TimerQueue::new(TimeSource::new());
        queue.schedule(0.0, noop());
        let now = queue.inner.source.now();
        let guard = queue.begin_run();
        queue.schedule(0.0, noop());
        assert!(queue.pop_due(now + 1.0).is_some());
        assert!(queue.pop_due(now + 1.0).is_none());
        drop(guard);
        let _guard = queue.begin_run();
        assert!(queue.pop_due(now + 1.0).is_some());
    }
}
