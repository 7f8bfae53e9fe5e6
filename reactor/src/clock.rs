//! [`Clock`]: a deterministic implementation of
//! [`ReactorTime`], Twisted's `twisted.internet.task.Clock`, with the
//! `DelayedCall`s it hands out (`twisted.internet.base.DelayedCall`).
//!
//! Time only moves when [`Clock::advance`] is called, so code that schedules
//! calls can be tested step by step.
//!
//! # Order, exactly as Twisted's
//!
//! `task.Clock` keeps its calls in a list that it *stable-sorts by due time*
//! after every `callLater` and before running each due call in `advance`.
//! So calls due at the same time run in the order they were scheduled. A
//! `reset()`/`delay()` only changes the call's time; the call keeps its place
//! in the list until the next sort, which moves it among the calls due at its
//! new time *according to that place*: a call moved to a later time goes
//! after the calls already due then, a call moved to an earlier time goes
//! before them.
//!
//! ```
//! use twisted_reactor::Clock;
//! use std::{cell::RefCell, rc::Rc};
//!
//! let (clock, log) = (Clock::new(), Rc::new(RefCell::new(Vec::new())));
//! let l = log.clone();
//! let a = clock.call_later(1.0, move || l.borrow_mut().push("a"));   // a = c.callLater(1, log.append, "a")
//! let l = log.clone();
//! clock.call_later(2.0, move || l.borrow_mut().push("b"));           // c.callLater(2, log.append, "b")
//! a.reset(2.0).unwrap();                                             // a.reset(2): comes from earlier,
//! clock.advance(2.0).unwrap();                                       // so it stays before b
//! assert_eq!(*log.borrow(), ["a", "b"]);
//! ```
//!
//! # Scale
//!
//! Calls live in a 4-ary min-heap keyed by (due time, rank), where the rank
//! reproduces the list order above; cancelled and moved calls leave stale
//! entries that are skipped when they surface and swept when they outnumber
//! the live ones. Scheduling, cancelling and running a call are O(log n),
//! also with millions of calls pending.
//!
//! # Memory
//!
//! A [`DelayedCall`] does not keep its clock alive, and dropping the last
//! [`Clock`] handle drops the functions of the calls still pending (they
//! can never run). A pending call whose function holds a `Clock` handle
//! keeps that clock alive, which is a reference cycle: run or cancel such
//! calls before abandoning the clock.

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::{Rc, Weak};

use twisted_deferred::Failure;

use crate::heap::{TimerHeap, time_key};
use twisted_deferred::time::{
    DelayedCall, DelayedCallError, DelayedCallImpl, ReactorTime, TimedCall,
};

/// What a function scheduled on a [`Clock`] may return: nothing, or a
/// `Result` whose failure is raised out of [`Clock::advance`] (as an
/// exception raised by a Python function scheduled with `callLater` comes
/// out of `Clock.advance()`).
///
/// ```
/// use twisted_reactor::Clock;
/// use twisted_deferred::Failure;
///
/// let clock = Clock::new();
/// clock.call_later(1.0, || {});                                   // c.callLater(1, lambda: None)
/// clock.call_later(1.0, || Err::<(), _>(Failure::msg("raised")));  // c.callLater(1, raiser)
/// assert_eq!(clock.advance(1.0).unwrap_err().message(), "raised");
/// ```
pub trait TimedResult {
    /// The function's outcome: `()` is `Ok(())` (a Python function
    /// returning `None`).
    ///
    /// ```
    /// use twisted_reactor::TimedResult;
    /// assert!(().into_result().is_ok());                              // return None
    /// ```
    fn into_result(self) -> Result<(), Failure>;
}

impl TimedResult for () {
    #[inline]
    fn into_result(self) -> Result<(), Failure> {
        Ok(())
    }
}

impl TimedResult for Result<(), Failure> {
    #[inline]
    fn into_result(self) -> Result<(), Failure> {
        self
    }
}

/// The clock was asked to move to a time that is not a number (`NaN`):
/// advancing by `NaN`, or by `-inf` from `+inf`. Twisted would set its time
/// to `nan`, after which no call ever runs again; here the clock refuses and
/// keeps its time.
///
/// ```
/// use twisted_reactor::{Clock, InvalidTimeError};
/// let clock = Clock::new();
/// let err = clock.advance(f64::NAN).unwrap_err();                 // c.advance(float("nan"))
/// assert!(err.check::<InvalidTimeError>());
/// assert_eq!(clock.seconds(), 0.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvalidTimeError {
    /// The clock's time when it was asked.
    pub now: f64,
    /// The time it was asked to move to.
    pub requested: f64,
}

impl fmt::Display for InvalidTimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot move the clock from {} to {}: time must be a number",
            self.now, self.requested
        )
    }
}

impl Error for InvalidTimeError {}

/// A deterministic [`ReactorTime`]: Twisted's `task.Clock`.
///
/// `Clock` is a cheap handle (one reference count); clones share the same
/// clock. It belongs to one thread, like Twisted's reactor.
///
/// ```
/// use twisted_reactor::Clock;
/// use std::{cell::RefCell, rc::Rc};
///
/// let clock = Clock::new();                                      // c = Clock()
/// let log = Rc::new(RefCell::new(Vec::new()));
/// let l = log.clone();
/// let call = clock.call_later(2.0, move || l.borrow_mut().push("ran"));  // c.callLater(2, ...)
/// clock.advance(1.0).unwrap();                                   // c.advance(1)
/// assert!(log.borrow().is_empty());
/// clock.advance(1.0).unwrap();                                   // c.advance(1)
/// assert_eq!(*log.borrow(), ["ran"]);
/// assert!(!call.active());
/// ```
#[derive(Clone)]
pub struct Clock {
    inner: Rc<ClockInner>,
}

/// The clock's state. Calls point at it weakly (`queue`) and at its time
/// strongly (`now`), so that a `DelayedCall` can always `reset()` relative to
/// the clock's time, as Python's, which holds `clock.seconds`, can.
struct ClockInner {
    now: Rc<Cell<f64>>,
    queue: Rc<Queue>,
}

struct Queue {
    heap: RefCell<TimerHeap<Rc<CallState>>>,
    /// Calls whose time changed since the last sort (`reset`/`delay`).
    moved: RefCell<Vec<Rc<CallState>>>,
    /// Next rank after every existing one (new calls, calls moved later).
    next_after: Cell<u64>,
    /// Next rank before every existing one (calls moved earlier).
    next_before: Cell<u64>,
    /// Pending calls.
    live: Cell<usize>,
    /// Heap entries of calls no longer pending at that place.
    stale: Cell<usize>,
}

/// A heap entry: a call at its place in Twisted's list, as of the sort
/// that put it there (rank = its position among the calls due then).
type Entry = crate::heap::Entry<Rc<CallState>>;

/// The entry is current while its call is pending and still has this rank.
#[inline]
fn is_current(entry: &Entry) -> bool {
    entry.call.status.get() == Status::Pending && entry.call.rank.get() == entry.rank
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending,
    Called,
    Cancelled,
}

/// One scheduled call: Twisted's `DelayedCall` attributes.
struct CallState {
    /// `time`.
    time: Cell<f64>,
    /// `delayed_time`; `getTime()` is `time + delayed_time`.
    delayed: Cell<f64>,
    /// Its place in the list as of the last sort: due time then…
    place_time: Cell<f64>,
    /// …rank among the calls due then.
    rank: Cell<u64>,
    status: Cell<Status>,
    /// Listed in `Queue::moved`.
    moved: Cell<bool>,
    func: RefCell<Option<TimedCall>>,
    now: Rc<Cell<f64>>,
    queue: Weak<Queue>,
    /// Itself, to list itself in `Queue::moved`.
    me: Weak<CallState>,
}

impl CallState {
    #[inline]
    fn due(&self) -> f64 {
        self.time.get() + self.delayed.get()
    }

    fn check_active(&self) -> Result<(), DelayedCallError> {
        match self.status.get() {
            Status::Pending => Ok(()),
            Status::Cancelled => Err(DelayedCallError::AlreadyCancelled),
            Status::Called => Err(DelayedCallError::AlreadyCalled),
        }
    }

    /// Records that the due time may have changed; the next sort moves it.
    fn note_moved(&self) {
        if self.moved.get() {
            return;
        }
        if let (Some(queue), Some(me)) = (self.queue.upgrade(), self.me.upgrade()) {
            self.moved.set(true);
            queue.moved.borrow_mut().push(me);
        }
    }
}

impl DelayedCallImpl for CallState {
    fn get_time(&self) -> f64 {
        self.due()
    }

    fn cancel(&self) -> Result<(), DelayedCallError> {
        self.check_active()?;
        self.status.set(Status::Cancelled);
        if let Some(queue) = self.queue.upgrade() {
            queue.live.set(queue.live.get().saturating_sub(1));
            queue.stale.set(queue.stale.get() + 1);
            queue.maybe_sweep();
        }
        // `del self.func`: drop it outside any borrow, it may run user code.
        let func = self.func.borrow_mut().take();
        drop(func);
        Ok(())
    }

    fn reset(&self, seconds_from_now: f64) -> Result<(), DelayedCallError> {
        self.check_active()?;
        let new_time = self.now.get() + seconds_from_now;
        if new_time < self.time.get() {
            self.delayed.set(0.0);
            self.time.set(new_time);
        } else {
            self.delayed.set(new_time - self.time.get());
        }
        self.note_moved();
        Ok(())
    }

    fn delay(&self, seconds_later: f64) -> Result<(), DelayedCallError> {
        self.check_active()?;
        self.delayed.set(self.delayed.get() + seconds_later);
        if self.delayed.get() < 0.0 {
            self.time.set(self.time.get() + self.delayed.get());
            self.delayed.set(0.0);
        }
        self.note_moved();
        Ok(())
    }

    fn active(&self) -> bool {
        self.status.get() == Status::Pending
    }
}

impl Queue {
    fn new() -> Queue {
        Queue {
            heap: RefCell::new(TimerHeap::default()),
            moved: RefCell::new(Vec::new()),
            next_after: Cell::new(1 << 63),
            next_before: Cell::new((1 << 63) - 1),
            live: Cell::new(0),
            stale: Cell::new(0),
        }
    }

    fn take_after_rank(&self) -> u64 {
        let r = self.next_after.get();
        self.next_after.set(r + 1);
        r
    }

    fn take_before_rank(&self) -> u64 {
        let r = self.next_before.get();
        self.next_before.set(r - 1);
        r
    }

    fn push(&self, call: Rc<CallState>, time: f64, rank: u64) {
        call.place_time.set(time);
        call.rank.set(rank);
        let time = time_key(time);
        self.heap.borrow_mut().push(Entry { time, rank, call });
    }

    /// `_sortCalls()`: gives every call whose due time changed since the
    /// last sort the place Python's stable sort gives it. Among the calls
    /// due at its new time, a call coming from an earlier place goes before
    /// those already there, one coming from a later place after them; calls
    /// arriving together keep the order of their former places.
    fn sort(&self) {
        if self.moved.borrow().is_empty() {
            return;
        }
        let mut moved = std::mem::take(&mut *self.moved.borrow_mut());
        moved.retain(|call| {
            call.moved.set(false);
            call.status.get() == Status::Pending
                && time_key(call.due()) != time_key(call.place_time.get())
        });
        moved.sort_by_key(|call| {
            (
                time_key(call.due()),
                time_key(call.place_time.get()),
                call.rank.get(),
            )
        });
        let (earlier, later): (Vec<_>, Vec<_>) = moved
            .into_iter()
            .partition(|call| time_key(call.place_time.get()) < time_key(call.due()));
        for call in later {
            let rank = self.take_after_rank();
            let due = call.due();
            self.push(call, due, rank);
            self.stale.set(self.stale.get() + 1);
        }
        for call in earlier.into_iter().rev() {
            let rank = self.take_before_rank();
            let due = call.due();
            self.push(call, due, rank);
            self.stale.set(self.stale.get() + 1);
        }
        self.maybe_sweep();
    }

    /// Drops stale entries once they are a third of the heap (amortised
    /// O(1) per cancel or move).
    fn maybe_sweep(&self) {
        let stale = self.stale.get();
        if stale > 64
            && stale * 2 > self.live.get()
            && let Ok(mut heap) = self.heap.try_borrow_mut()
        {
            heap.retain(is_current);
            self.stale.set(0);
        }
    }

    /// The earliest pending call, if it is due at `now`: taken off the
    /// schedule and marked called (`call.called = 1`), its function taken.
    fn pop_due(&self, now: f64) -> Option<(Rc<CallState>, Option<TimedCall>)> {
        self.sort();
        let mut heap = self.heap.borrow_mut();
        loop {
            let top = heap.peek()?;
            if !is_current(top) {
                heap.pop();
                self.stale.set(self.stale.get().saturating_sub(1));
                continue;
            }
            // `now` is never NaN, so a NaN time (the greatest key) is never due.
            if top.time > time_key(now) {
                return None;
            }
            let entry = heap.pop()?;
            let call = entry.call;
            call.status.set(Status::Called);
            self.live.set(self.live.get().saturating_sub(1));
            let func = call.func.borrow_mut().take();
            return Some((call, func));
        }
    }
}

impl Drop for ClockInner {
    /// Nothing can run the pending calls any more: drop their functions,
    /// which breaks the cycles a call holding its own `DelayedCall` (through
    /// a Deferred's canceller, a `LoopingCall`…) would otherwise form.
    fn drop(&mut self) {
        let entries = std::mem::take(&mut *self.queue.heap.borrow_mut());
        let funcs: Vec<_> = entries
            .into_vec()
            .into_iter()
            .filter(is_current)
            .filter_map(|e| e.call.func.borrow_mut().take())
            .collect();
        drop(funcs);
        let moved = std::mem::take(&mut *self.queue.moved.borrow_mut());
        drop(moved);
    }
}

impl Clock {
    /// `Clock()`: a clock at time `0.0` with nothing scheduled.
    ///
    /// ```
    /// let clock = twisted_reactor::Clock::new();                     // c = Clock()
    /// assert_eq!(clock.seconds(), 0.0);                              // c.seconds() == 0
    /// assert!(clock.get_delayed_calls().is_empty());                 // c.getDelayedCalls() == []
    /// ```
    pub fn new() -> Clock {
        Clock {
            inner: Rc::new(ClockInner {
                now: Rc::new(Cell::new(0.0)),
                queue: Rc::new(Queue::new()),
            }),
        }
    }

    /// `seconds()`: the clock's current time (`rightNow`).
    ///
    /// ```
    /// let clock = twisted_reactor::Clock::new();
    /// clock.advance(1.5).unwrap();                                   // c.advance(1.5)
    /// assert_eq!(clock.seconds(), 1.5);                              // c.seconds()
    /// ```
    pub fn seconds(&self) -> f64 {
        self.inner.now.get()
    }

    /// `c.rightNow = t`: sets the time without running anything (Python
    /// tests assign the attribute). Fails on `NaN`.
    ///
    /// ```
    /// let clock = twisted_reactor::Clock::new();
    /// clock.set_right_now(100.0).unwrap();                           // c.rightNow = 100.0
    /// assert_eq!(clock.seconds(), 100.0);
    /// assert!(clock.set_right_now(f64::NAN).is_err());
    /// ```
    pub fn set_right_now(&self, t: f64) -> Result<(), InvalidTimeError> {
        if t.is_nan() {
            return Err(InvalidTimeError {
                now: self.seconds(),
                requested: t,
            });
        }
        self.inner.now.set(t);
        Ok(())
    }

    /// `callLater(delay, f)`: runs `f` once, when the clock reaches
    /// `seconds() + delay`. `f` returns nothing, or a `Result` whose failure
    /// comes out of the [`advance`](Clock::advance) that runs it (see
    /// [`TimedResult`]); a panic in `f` does too, as a
    /// [`PanicError`](twisted_deferred::PanicError).
    ///
    /// As in Twisted's `Clock`, any delay is accepted: a negative one makes
    /// the call due at once (it runs at the next `advance`, `advance(0)`
    /// included); an infinite one, never unless the clock reaches infinity.
    /// A `NaN` delay gives a call that never comes due (its time is `NaN`;
    /// Python's list sort gives no consistent order for it).
    ///
    /// ```
    /// use twisted_reactor::Clock;
    /// use std::{cell::Cell, rc::Rc};
    ///
    /// let clock = Clock::new();
    /// let ran = Rc::new(Cell::new(false));
    /// let r = ran.clone();
    /// let call = clock.call_later(1.0, move || r.set(true));          // call = c.callLater(1, f)
    /// assert_eq!(call.get_time(), 1.0);                               // call.getTime() == 1
    /// clock.advance(1.0).unwrap();
    /// assert!(ran.get());
    /// ```
    pub fn call_later<F, R>(&self, delay: f64, f: F) -> DelayedCall
    where
        F: FnOnce() -> R + 'static,
        R: TimedResult,
    {
        self.schedule(delay, Box::new(move || f().into_result()))
    }

    fn schedule(&self, delay: f64, func: TimedCall) -> DelayedCall {
        let queue = &self.inner.queue;
        // The new call goes at the end of the list, then the list is sorted.
        queue.sort();
        let time = self.seconds() + delay;
        let call = Rc::new_cyclic(|me| CallState {
            time: Cell::new(time),
            delayed: Cell::new(0.0),
            place_time: Cell::new(time),
            rank: Cell::new(0),
            status: Cell::new(Status::Pending),
            moved: Cell::new(false),
            func: RefCell::new(Some(func)),
            now: self.inner.now.clone(),
            queue: Rc::downgrade(queue),
            me: me.clone(),
        });
        let rank = queue.take_after_rank();
        queue.push(call.clone(), time, rank);
        queue.live.set(queue.live.get() + 1);
        DelayedCall::new(call)
    }

    /// `advance(amount)`: moves the clock forward by `amount` seconds, then
    /// runs, one at a time, every call due by the new time: the earliest
    /// first, calls due at the same time in the order they were scheduled
    /// (see the [module docs](crate::clock) for `reset`/`delay`). Calls
    /// scheduled meanwhile that are already due run in this same `advance`.
    ///
    /// If a call fails (returns `Err` or panics), `advance` stops and
    /// returns that failure, as Python's raises the exception; the time
    /// stays moved, and the calls that were due but have not run stay
    /// scheduled for the next `advance`. A negative `amount` moves the clock
    /// back, as in Twisted. A `NaN` result is refused with
    /// [`InvalidTimeError`] and nothing runs.
    ///
    /// ```
    /// use twisted_reactor::Clock;
    /// use std::{cell::RefCell, rc::Rc};
    ///
    /// let clock = Clock::new();
    /// let log = Rc::new(RefCell::new(Vec::new()));
    /// let (l, c) = (log.clone(), clock.clone());
    /// // c.callLater(1, lambda: c.callLater(0, log.append, "zero-delay"))
    /// clock.call_later(1.0, move || {
    ///     c.call_later(0.0, move || l.borrow_mut().push("zero-delay"));
    /// });
    /// clock.advance(2.0).unwrap();                                    // c.advance(2)
    /// assert_eq!(*log.borrow(), ["zero-delay"]);
    /// ```
    pub fn advance(&self, amount: f64) -> Result<(), Failure> {
        let now = self.seconds() + amount;
        if now.is_nan() {
            return Err(Failure::new(InvalidTimeError {
                now: self.seconds(),
                requested: now,
            }));
        }
        self.inner.now.set(now);
        loop {
            let Some((call, func)) = self.inner.queue.pop_due(self.seconds()) else {
                return Ok(());
            };
            let outcome = match func {
                Some(func) => match catch_unwind(AssertUnwindSafe(func)) {
                    Ok(outcome) => outcome,
                    Err(panic) => Err(Failure::from_panic(panic)),
                },
                None => Ok(()),
            };
            drop(call);
            outcome?;
        }
    }

    /// `pump(timings)`: `advance` by each amount in turn; stops at the first
    /// failure and returns it.
    ///
    /// ```
    /// use twisted_reactor::Clock;
    /// use std::{cell::RefCell, rc::Rc};
    ///
    /// let clock = Clock::new();
    /// let log = Rc::new(RefCell::new(Vec::new()));
    /// let (l, c) = (log.clone(), clock.clone());
    /// clock.call_later(2.5, move || l.borrow_mut().push(c.seconds()));
    /// clock.pump(&[1.0, 1.0, 1.0]).unwrap();                          // c.pump([1] * 3)
    /// assert_eq!(*log.borrow(), [3.0]);
    /// ```
    pub fn pump(&self, timings: &[f64]) -> Result<(), Failure> {
        timings.iter().try_for_each(|&amount| self.advance(amount))
    }

    /// `getDelayedCalls()`: the pending calls, in the order of Twisted's
    /// list (by due time as of the last sort; a call `reset` since then is
    /// still listed at its former place). O(n log n).
    ///
    /// ```
    /// let clock = twisted_reactor::Clock::new();
    /// let b = clock.call_later(2.0, || {});
    /// let a = clock.call_later(1.0, || {});
    /// let calls = clock.get_delayed_calls();                          // c.getDelayedCalls()
    /// assert_eq!(calls.iter().map(|c| c.get_time()).collect::<Vec<_>>(), [1.0, 2.0]);
    /// b.cancel().unwrap();
    /// assert_eq!(clock.get_delayed_calls().len(), 1);
    /// # drop(a);
    /// ```
    pub fn get_delayed_calls(&self) -> Vec<DelayedCall> {
        let heap = self.inner.queue.heap.borrow();
        let mut current: Vec<&Entry> = heap.iter().filter(|e| is_current(e)).collect();
        current.sort_by_key(|e| (e.time, e.rank));
        current
            .into_iter()
            .map(|e| DelayedCall::new(e.call.clone()))
            .collect()
    }

    /// `len(getDelayedCalls())`, in O(1).
    ///
    /// ```
    /// let clock = twisted_reactor::Clock::new();
    /// let call = clock.call_later(1.0, || {});
    /// assert_eq!(clock.delayed_call_count(), 1);                      // len(c.getDelayedCalls())
    /// call.cancel().unwrap();
    /// assert_eq!(clock.delayed_call_count(), 0);
    /// ```
    pub fn delayed_call_count(&self) -> usize {
        self.inner.queue.live.get()
    }

    /// True when both handles are the same clock (Python's `is`).
    ///
    /// ```
    /// let clock = twisted_reactor::Clock::new();
    /// assert!(clock.ptr_eq(&clock.clone()));                          // c is c
    /// assert!(!clock.ptr_eq(&twisted_reactor::Clock::new()));
    /// ```
    pub fn ptr_eq(&self, other: &Clock) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("seconds", &self.seconds())
            .field("delayed_calls", &self.delayed_call_count())
            .finish()
    }
}

impl ReactorTime for Clock {
    fn seconds(&self) -> f64 {
        Clock::seconds(self)
    }

    fn call_later(&self, delay: f64, f: TimedCall) -> DelayedCall {
        self.schedule(delay, f)
    }
}
