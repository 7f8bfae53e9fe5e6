//! The reactor's timed calls: Twisted's `ReactorBase.callLater`,
//! `_pendingTimedCalls` / `_newTimedCalls` and the `DelayedCall`s it hands
//! out, on real (monotonic) time.
//!
//! Calls wait in the same 4-ary heap as the [`Clock`](crate::Clock)'s,
//! keyed by (due time, scheduling order), so calls due at the same time run
//! in the order they were scheduled (Twisted's `heapq` leaves that order
//! unspecified; this is one of the orders it allows). The heap holds no
//! pointers: each entry names the slot of a table where the queue keeps its
//! pending calls, and the table records the rank of each call's current
//! entry. `cancel`, `reset` and `delay` therefore leave behind a stale entry
//! that the table alone identifies (a cancelled call gives its slot up at
//! once); stale entries are skipped when they surface and swept, by one pass
//! over the heap and the table, once they outnumber live ones, as Twisted
//! sweeps once cancellations pass half its heap: scheduling, cancelling and
//! running a call stay O(log n) with a million calls pending.
//!
//! A call and its function share one allocation, the one its
//! [`DelayedCall`] handles point to, so scheduling a closure allocates once.
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

use twisted_deferred::Failure;
use twisted_deferred::time::{DelayedCall, DelayedCallError, DelayedCallImpl};

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

/// What every scheduled call keeps besides its function.
struct CallState {
    /// When it is due.
    time: Cell<f64>,
    /// Its slot in the queue's table, for as long as it is pending.
    slot: u32,
    status: Cell<Status>,
    queue: Weak<QueueInner>,
    source: TimeSource,
}

/// One scheduled call: its state and its function in one allocation.
struct TimerCall<F> {
    state: CallState,
    /// `None` once run, cancelled or released.
    func: Cell<Option<F>>,
}

/// A scheduled call as the queue sees it, whatever its function's type.
trait Timed: DelayedCallImpl {
    fn state(&self) -> &CallState;
    /// Takes the function and runs it; nothing if it was released.
    fn run(&self) -> Result<(), Failure>;
    /// Drops the function (`del self.func`).
    fn release(&self);
}

impl<F: FnOnce() -> Result<(), Failure> + 'static> Timed for TimerCall<F> {
    #[inline]
    fn state(&self) -> &CallState {
        &self.state
    }

    fn run(&self) -> Result<(), Failure> {
        match self.func.take() {
            Some(func) => func(),
            None => Ok(()),
        }
    }

    fn release(&self) {
        drop(self.func.take());
    }
}

/// A slot of the table that holds no call (no entry has this rank).
const FREE: u64 = u64::MAX;

/// An entry names a slot of [`Table`].
type TimerEntry = Entry<u32>;

/// The queue's data, borrowed as one.
#[derive(Default)]
struct Table {
    heap: TimerHeap<u32>,
    /// Entries made while due calls run (Twisted's `_newTimedCalls`).
    incoming: Vec<TimerEntry>,
    /// Per slot, the rank of its call's current entry, or [`FREE`]; kept
    /// apart from `calls` so that telling stale entries from current ones
    /// reads 8 bytes a slot.
    ranks: Vec<u64>,
    /// Per slot, the pending call, or `None` when the slot is free.
    calls: Vec<Option<Rc<dyn Timed>>>,
    /// Free slots.
    free: Vec<u32>,
}

impl Table {
    #[inline]
    fn is_current(&self, entry: &TimerEntry) -> bool {
        self.ranks[entry.call as usize] == entry.rank
    }

    /// A free slot, found or made.
    fn take_slot(&mut self) -> u32 {
        if let Some(slot) = self.free.pop() {
            return slot;
        }
        let slot = u32::try_from(self.ranks.len()).expect("fewer than 2^32 pending calls");
        self.ranks.push(FREE);
        self.calls.push(None);
        slot
    }

    /// Empties a slot, which makes every entry naming it stale.
    fn free_slot(&mut self, slot: u32) -> Option<Rc<dyn Timed>> {
        let i = slot as usize;
        self.ranks[i] = FREE;
        self.free.push(slot);
        self.calls[i].take()
    }

    /// The call in `slot` if `entry` is current.
    fn call(&self, entry: &TimerEntry) -> Option<&Rc<dyn Timed>> {
        if self.is_current(entry) {
            self.calls[entry.call as usize].as_ref()
        } else {
            None
        }
    }
}

struct QueueInner {
    table: RefCell<Table>,
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

/// A due call taken off the queue, marked called, for the reactor to run.
pub(crate) struct DueCall(Rc<dyn Timed>);

impl DueCall {
    /// Runs the call's function (nothing if it was released).
    pub(crate) fn run(&self) -> Result<(), Failure> {
        self.0.run()
    }
}

impl QueueInner {
    /// Gives the call in `slot` a new entry at `time`, making its old one
    /// (if any) stale.
    fn enqueue(&self, table: &mut Table, slot: u32, time: f64) {
        let rank = self.next_rank.get();
        self.next_rank.set(rank + 1);
        table.ranks[slot as usize] = rank;
        let entry = Entry {
            time: time_key(time),
            rank,
            call: slot,
        };
        if self.running.get() {
            table.incoming.push(entry);
        } else {
            table.heap.push(entry);
        }
    }

    /// `_insertNewDelayedCalls()`.
    fn flush_incoming(&self, table: &mut Table) {
        if self.running.get() || table.incoming.is_empty() {
            return;
        }
        let incoming = std::mem::take(&mut table.incoming);
        for entry in &incoming {
            if table.is_current(entry) {
                table.heap.push(*entry);
            } else {
                self.stale.set(self.stale.get().saturating_sub(1));
            }
        }
        // keep the buffer for the next run
        table.incoming = incoming;
        table.incoming.clear();
    }

    fn note_stale(&self) {
        self.stale.set(self.stale.get() + 1);
        self.maybe_sweep();
    }

    /// Drops stale entries once they outnumber the live ones (amortised
    /// O(1) per cancel or move). Reads only the heap and the table's ranks.
    fn maybe_sweep(&self) {
        let stale = self.stale.get();
        if stale > 64
            && stale > self.live.get()
            && !self.running.get()
            && let Ok(mut table) = self.table.try_borrow_mut()
        {
            let table = &mut *table;
            for entry in table.incoming.drain(..) {
                table.heap.push(entry);
            }
            let ranks = &table.ranks;
            table.heap.retain(|e| ranks[e.call as usize] == e.rank);
            self.stale.set(0);
        }
    }
}

impl CallState {
    fn check_active(&self) -> Result<(), DelayedCallError> {
        match self.status.get() {
            Status::Pending => Ok(()),
            Status::Cancelled => Err(DelayedCallError::AlreadyCancelled),
            Status::Called => Err(DelayedCallError::AlreadyCalled),
        }
    }

    fn move_to(&self, time: f64) {
        self.time.set(time);
        if let Some(queue) = self.queue.upgrade() {
            queue.enqueue(&mut queue.table.borrow_mut(), self.slot, time);
            queue.note_stale();
        }
    }

    /// Marks the call cancelled and gives its slot up; returns the queue's
    /// reference to the call, to be dropped by the caller.
    fn cancel(&self) -> Result<Option<Rc<dyn Timed>>, DelayedCallError> {
        self.check_active()?;
        self.status.set(Status::Cancelled);
        let Some(queue) = self.queue.upgrade() else {
            return Ok(None);
        };
        let call = queue.table.borrow_mut().free_slot(self.slot);
        queue.live.set(queue.live.get().saturating_sub(1));
        queue.note_stale();
        Ok(call)
    }
}

impl<F: FnOnce() -> Result<(), Failure> + 'static> DelayedCallImpl for TimerCall<F> {
    fn get_time(&self) -> f64 {
        self.state.time.get()
    }

    fn cancel(&self) -> Result<(), DelayedCallError> {
        let queued = self.state.cancel()?;
        // `del self.func`, outside any borrow: dropping it may run user code.
        drop(self.func.take());
        drop(queued);
        Ok(())
    }

    fn reset(&self, seconds_from_now: f64) -> Result<(), DelayedCallError> {
        self.state.check_active()?;
        self.state
            .move_to(self.state.source.now() + seconds_from_now);
        Ok(())
    }

    fn delay(&self, seconds_later: f64) -> Result<(), DelayedCallError> {
        self.state.check_active()?;
        self.state.move_to(self.state.time.get() + seconds_later);
        Ok(())
    }

    fn active(&self) -> bool {
        self.state.status.get() == Status::Pending
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
                table: RefCell::new(Table::default()),
                running: Cell::new(false),
                next_rank: Cell::new(0),
                live: Cell::new(0),
                stale: Cell::new(0),
                source,
            }),
        }
    }

    /// `callLater(delay, f)`, the delay already checked.
    pub(crate) fn schedule<F>(&self, delay: f64, func: F) -> DelayedCall
    where
        F: FnOnce() -> Result<(), Failure> + 'static,
    {
        let inner = &self.inner;
        let time = inner.source.now() + delay;
        let mut table = inner.table.borrow_mut();
        let slot = table.take_slot();
        let call = Rc::new(TimerCall {
            state: CallState {
                time: Cell::new(time),
                slot,
                status: Cell::new(Status::Pending),
                queue: Rc::downgrade(inner),
                source: inner.source,
            },
            func: Cell::new(Some(func)),
        });
        table.calls[slot as usize] = Some(call.clone());
        inner.enqueue(&mut table, slot, time);
        drop(table);
        inner.live.set(inner.live.get() + 1);
        DelayedCall::new(call)
    }

    /// Starts running due calls: moves the calls made since into the heap
    /// and sends calls made from now on to the next iteration.
    pub(crate) fn begin_run(&self) -> RunningGuard<'_> {
        self.inner
            .flush_incoming(&mut self.inner.table.borrow_mut());
        self.inner.running.set(true);
        RunningGuard { queue: self }
    }

    /// The earliest pending call if it is due at `now`, marked called
    /// (`call.called = 1`).
    pub(crate) fn pop_due(&self, now: f64) -> Option<DueCall> {
        let inner = &self.inner;
        let now = time_key(now);
        let mut table = inner.table.borrow_mut();
        loop {
            let top = *table.heap.peek()?;
            if !table.is_current(&top) {
                table.heap.pop();
                inner.stale.set(inner.stale.get().saturating_sub(1));
                continue;
            }
            if top.time > now {
                return None;
            }
            table.heap.pop();
            let call = table
                .free_slot(top.call)
                .expect("a current entry's slot holds its call");
            drop(table);
            call.state().status.set(Status::Called);
            inner.live.set(inner.live.get().saturating_sub(1));
            return Some(DueCall(call));
        }
    }

    /// `timeout()`: seconds until the earliest pending call is due (0 if
    /// it is due already), or `None` when nothing is pending.
    pub(crate) fn time_until_next(&self, now: f64) -> Option<f64> {
        let inner = &self.inner;
        let mut table = inner.table.borrow_mut();
        inner.flush_incoming(&mut table);
        loop {
            let top = *table.heap.peek()?;
            let Some(call) = table.call(&top) else {
                table.heap.pop();
                inner.stale.set(inner.stale.get().saturating_sub(1));
                continue;
            };
            let due = call.state().time.get();
            return Some(if due.is_nan() {
                f64::INFINITY
            } else {
                (due - now).max(0.0)
            });
        }
    }

    /// `getDelayedCalls()`, in the order they will run.
    pub(crate) fn delayed_calls(&self) -> Vec<DelayedCall> {
        let table = self.inner.table.borrow();
        let mut current: Vec<(&TimerEntry, &Rc<dyn Timed>)> = table
            .heap
            .iter()
            .chain(table.incoming.iter())
            .filter_map(|e| Some((e, table.call(e)?)))
            .collect();
        current.sort_by_key(|(e, _)| (e.time, e.rank));
        current
            .into_iter()
            .map(|(_, call)| DelayedCall::new(call.clone()))
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
        let table = self.inner.table.borrow();
        table.heap.len() + table.incoming.len()
    }

    /// Drops the functions of every pending call: the reactor stopped for
    /// good and can never run them. Breaks the cycles of calls that hold
    /// the reactor. The calls keep their slots (they are still pending), but
    /// no entry: they are no longer listed or counted, and never run unless
    /// moved.
    pub(crate) fn release_all(&self) {
        let calls: Vec<Rc<dyn Timed>> = {
            let mut table = self.inner.table.borrow_mut();
            table.heap = TimerHeap::default();
            table.incoming = Vec::new();
            table.calls.iter().flatten().cloned().collect()
        };
        self.inner.live.set(0);
        self.inner.stale.set(0);
        for call in &calls {
            call.release();
        }
        drop(calls);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> impl FnOnce() -> Result<(), Failure> + 'static {
        || Ok(())
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
    fn a_reused_slot_does_not_inherit_the_stale_entry() {
        let queue = TimerQueue::new(TimeSource::new());
        let now = queue.inner.source.now();
        let early = queue.schedule(10.0, noop());
        early.cancel().unwrap();
        // takes the slot `early` gave up; `early`'s entry is still in the heap
        let late = queue.schedule(100.0, noop());
        assert_eq!(queue.heap_len(), 2);
        let moved = queue.schedule(200.0, noop());
        moved.reset(5.0).unwrap();
        let listed = queue.delayed_calls();
        assert_eq!(listed.len(), 2);
        assert!(listed[0].ptr_eq(&moved) && listed[1].ptr_eq(&late));
        let _guard = queue.begin_run();
        assert!(queue.pop_due(now + 50.0).is_some());
        assert!(queue.pop_due(now + 50.0).is_none());
        assert!(late.active() && !moved.active());
        assert_eq!(queue.len(), 1);
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
