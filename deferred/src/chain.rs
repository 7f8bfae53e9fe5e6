//! The callback chain: the untyped state of one Deferred and the loop that
//! runs its callbacks, Twisted's `Deferred._runCallbacks`.
//!
//! Everything here works on erased results; [`Deferred<T>`](crate::Deferred)
//! is a typed view over an [`Inner`]. The loop is iterative: when a callback
//! returns an unfired Deferred, the outer Deferred appends a *continuation*
//! link to it and stops; when that inner Deferred later reaches the
//! continuation, the outer one is pushed on an explicit stack and resumed in
//! the same loop, so a chain of a million waiting Deferreds resolves at a
//! constant stack depth.
//!
//! The state machine follows `twisted/internet/defer.py` line for line (see
//! the references in each function); the places where Rust forces a choice
//! are documented on [`Slot::Lent`].

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use smallvec::SmallVec;

use crate::erased::{ErasedValue, SmallFnOnce};
use crate::errors::{AlreadyCalledError, CancelledError, RecursionError};
use crate::failure::Failure;
use crate::unhandled;

/// How deeply runs of callbacks may nest (a callback firing a Deferred whose
/// callback fires another, …) before `callback()`/`errback()` refuse with
/// [`RecursionError`](crate::RecursionError). Python stops at its recursion
/// limit; Rust would overflow its stack instead, so the limit keeps a
/// default 2 MiB thread safe even in unoptimised builds (a level costs about
/// 2.5 KiB of stack there, 0.8 KiB optimised, plus the callbacks' own frames);
/// 300 is also about where Python's recursion limit stops `chainDeferred`. Chaining by
/// *returning* Deferreds does not nest and is unaffected.
pub const MAX_NESTING: u32 = 300;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Counts one level of nested callback runs while alive.
struct DepthGuard;

impl DepthGuard {
    #[inline]
    fn enter() -> DepthGuard {
        DEPTH.with(|d| d.set(d.get() + 1));
        DepthGuard
    }
}

impl Drop for DepthGuard {
    #[inline]
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// A Deferred's current result: Python's `result` attribute.
pub(crate) enum Slot {
    /// Not fired yet (Python: the attribute does not exist).
    Empty,
    /// A value (Python's `None` is `()`).
    Value(ErasedValue),
    /// A failure: the errback half of the next link runs.
    Failure(Failure),
    /// Another Deferred: the one this Deferred waits on (chained), or, rarely,
    /// a Deferred given as a plain value.
    Deferred(Rc<Inner>),
    /// The value was moved into the callback that is running now.
    ///
    /// Python passes the result by reference and keeps it in `result` while
    /// the callback runs; a typed Rust callback takes its input by value, so
    /// for that moment the Deferred holds nothing. Code that looks at a
    /// Deferred in the middle of one of its own callbacks sees the difference:
    /// a callback of another Deferred that returns this one waits for it
    /// (where Twisted would take the value the running callback received),
    /// and `Debug` shows the value as in use. Values handled as
    /// [`AnyValue`](crate::AnyValue) are cloned instead and keep Twisted's
    /// behaviour exactly.
    Lent,
}

impl Slot {
    /// Python's `None`, left behind by a Deferred that handed its result on.
    #[inline]
    pub(crate) fn none() -> Slot {
        Slot::Value(ErasedValue::new_shareable(()))
    }
}

/// One entry of the callback list.
pub(crate) enum Link {
    /// A (callback, errback) pair, erased into one closure that receives the
    /// current result, runs the matching half and returns the new result
    /// (a returned [`Slot::Deferred`] means the callback returned a
    /// Deferred: chain to it or take its result).
    Call(SmallFnOnce<Slot, Slot>),
    /// Twisted's `_CONTINUE` marker: hand the result to this waiting Deferred.
    Continue(Rc<Inner>),
    /// A link already consumed (a hole at the front of the queue).
    Done,
}

/// The callback list: a FIFO that keeps its first links inline, so a
/// Deferred with a couple of callbacks needs a single allocation.
#[derive(Default)]
pub(crate) struct Links {
    items: SmallVec<[Link; 4]>,
    head: usize,
}

impl Links {
    #[inline]
    fn push_back(&mut self, link: Link) {
        self.items.push(link);
    }

    #[inline]
    fn pop_front(&mut self) -> Option<Link> {
        let slot = self.items.get_mut(self.head)?;
        let link = std::mem::replace(slot, Link::Done);
        self.head += 1;
        if self.head == self.items.len() {
            self.items.clear();
            self.head = 0;
        }
        Some(link)
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.head == self.items.len()
    }
}

/// A canceller: `Deferred(canceller)`.
pub(crate) type CancelFn = dyn Fn(&Rc<Inner>) -> Result<(), Failure>;

/// The shared state of one Deferred.
pub(crate) struct Inner {
    /// `called`: fired once, never reset.
    called: Cell<bool>,
    /// `_runningCallbacks`: a link of this Deferred is executing.
    running: Cell<bool>,
    /// `_suppressAlreadyCalled`: swallow one fire after a cancel without
    /// canceller.
    suppress: Cell<bool>,
    /// `paused`: user pauses plus one while waiting on a chained Deferred.
    /// Signed, as in Python: an unbalanced `unpause` makes it negative,
    /// which also counts as paused.
    paused: Cell<i32>,
    /// `result`.
    pub(crate) slot: RefCell<Slot>,
    /// `_callbacks`.
    links: RefCell<Links>,
    /// `_canceller`, dropped when the Deferred fires.
    canceller: Cell<Option<Rc<CancelFn>>>,
    /// Replaces `cancel()` entirely (a subclass overriding it, like
    /// `DeferredList`).
    cancel_override: Cell<Option<Rc<CancelFn>>>,
    /// `_chainedTo`: what `Debug` reports as "waiting on". Weak, unlike
    /// Python's: the Deferred waited on is kept alive by the result slot
    /// when chaining implicitly, and for `chainDeferred` a strong reference
    /// back to the source would make a cycle with the source's forwarding
    /// link that only a garbage collector could free.
    chained_to: Cell<Option<Weak<Inner>>>,
    /// `_debugInfo.failResult`: reported if still set when dropped.
    unhandled: Cell<Option<Failure>>,
}

impl Inner {
    /// `Deferred(canceller)`.
    pub(crate) fn new(canceller: Option<Rc<CancelFn>>) -> Rc<Inner> {
        Rc::new(Inner {
            called: Cell::new(false),
            running: Cell::new(false),
            suppress: Cell::new(false),
            paused: Cell::new(0),
            slot: RefCell::new(Slot::Empty),
            links: RefCell::new(Links::default()),
            canceller: Cell::new(canceller),
            cancel_override: Cell::new(None),
            chained_to: Cell::new(None),
            unhandled: Cell::new(None),
        })
    }

    /// `succeed(result)`: the state of a fired Deferred, set directly, with
    /// no run (so a failure stored this way is never reported).
    pub(crate) fn new_fired(result: Slot) -> Rc<Inner> {
        let inner = Inner::new(None);
        inner.called.set(true);
        *inner.slot.borrow_mut() = result;
        inner
    }

    #[inline]
    pub(crate) fn called(&self) -> bool {
        self.called.get()
    }

    #[inline]
    pub(crate) fn paused(&self) -> i32 {
        self.paused.get()
    }

    /// Replaces the result, dropping the old one outside the borrow.
    #[inline(always)]
    pub(crate) fn set_slot(&self, slot: Slot) {
        let old = self.slot.replace(slot);
        drop(old);
    }

    /// The Deferred this one is waiting on (`_chainedTo`).
    pub(crate) fn chained_to(&self) -> Option<Rc<Inner>> {
        let c = self.chained_to.take();
        let strong = c.as_ref().and_then(Weak::upgrade);
        self.chained_to.set(c);
        strong
    }

    /// Marks this Deferred as waiting on `other` (`d._chainedTo = self` in
    /// `chainDeferred`).
    pub(crate) fn set_chained_to(&self, other: &Rc<Inner>) {
        drop(self.chained_to.replace(Some(Rc::downgrade(other))));
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(failure) = self.unhandled.get_mut().take() {
            unhandled::report(failure);
        }
    }
}

/// `callback(result)` / `errback(failure)`: Twisted's `_startRunCallbacks`.
pub(crate) fn fire(this: &Rc<Inner>, result: Slot) -> Result<(), Failure> {
    if this.called.get() {
        if this.suppress.get() {
            // A cancel without canceller arranged to eat this one.
            this.suppress.set(false);
            return Ok(());
        }
        return Err(Failure::new(AlreadyCalledError::new()));
    }
    if DEPTH.with(Cell::get) >= MAX_NESTING {
        return Err(Failure::new(RecursionError));
    }
    this.called.set(true);
    // The canceller is never needed again; dropping it breaks cycles.
    drop(this.canceller.take());
    this.set_slot(result);
    run_callbacks(this);
    Ok(())
}

/// `pause()`.
#[inline]
pub(crate) fn pause(this: &Rc<Inner>) {
    this.paused.set(this.paused.get() + 1);
}

/// `unpause()`: runs the pending links when the count returns to exactly 0.
pub(crate) fn unpause(this: &Rc<Inner>) {
    let paused = this.paused.get() - 1;
    this.paused.set(paused);
    if paused == 0 && this.called.get() {
        run_callbacks(this);
    }
}

/// `cancel()`, including forwarding to the Deferred being waited on (done in
/// a loop, which is what Python's tail call `self.result.cancel()` amounts
/// to, so forwarding through any depth of chain uses no stack).
pub(crate) fn cancel(this: &Rc<Inner>) -> Result<(), Failure> {
    let mut current = this.clone();
    loop {
        let overridden = current.cancel_override.take();
        current.cancel_override.set(overridden.clone());
        if let Some(f) = overridden {
            return f(&current);
        }
        if !current.called.get() {
            let canceller = current.canceller.take();
            current.canceller.set(canceller.clone());
            match canceller {
                Some(canceller) => canceller(&current)?,
                // Arrange to eat the fire that the producer will eventually
                // make, since nothing told it to stop.
                None => current.suppress.set(true),
            }
            if !current.called.get() {
                fire(&current, Slot::Failure(Failure::new(CancelledError)))?;
            }
            return Ok(());
        }
        let next = match &*current.slot.borrow() {
            Slot::Deferred(waited_on) => waited_on.clone(),
            _ => return Ok(()),
        };
        current = next;
    }
}

/// Appends a link and, if the Deferred has fired, runs the chain
/// (`addCallbacks`).
pub(crate) fn add_link(this: &Rc<Inner>, link: Link) {
    this.links.borrow_mut().push_back(link);
    if this.called.get() {
        run_callbacks(this);
    }
}

/// `addCallbacks` for a link given as a closure. When the Deferred has fired
/// and nothing is queued, paused or running, the closure runs at once without
/// being erased; otherwise it is queued like any link. Both paths do exactly
/// what appending and running would do.
#[inline]
pub(crate) fn add_call<F>(this: &Rc<Inner>, f: F)
where
    F: FnOnce(Slot) -> Slot + 'static,
{
    if this.called.get()
        && this.paused.get() == 0
        && !this.running.get()
        && this.links.borrow().is_empty()
    {
        let _depth = DepthGuard::enter();
        drop(this.chained_to.take());
        let input = take_input(this);
        this.running.set(true);
        let output = f(input);
        this.running.set(false);
        match apply(this, output) {
            Flow::Next if !this.links.borrow().is_empty() => run_loop(this.clone(), true),
            _ => finish(this),
        }
    } else {
        add_link(this, Link::Call(SmallFnOnce::new(f)));
    }
}

/// The input of the next link: the current result, moved out (the
/// Deferred holds [`Slot::Lent`] meanwhile), or a copy when one is cheap
/// (failures, Deferreds, values stored as shareable), in which case the
/// Deferred keeps it while the callback runs, as Python does.
#[inline(always)]
fn take_input(cur: &Inner) -> Slot {
    let mut slot = cur.slot.borrow_mut();
    let copy = match &*slot {
        Slot::Value(v) if v.is_shareable() => v.try_clone().map(Slot::Value),
        Slot::Value(_) => None,
        Slot::Failure(f) => Some(Slot::Failure(f.clone())),
        Slot::Deferred(d) => Some(Slot::Deferred(d.clone())),
        Slot::Empty | Slot::Lent => None,
    };
    match copy {
        Some(copy) => copy,
        None => std::mem::replace(&mut *slot, Slot::Lent),
    }
}

/// The Deferreds a propagation walk has left, to resume once the ones
/// waiting on them are done.
type Stack = SmallVec<[Rc<Inner>; 4]>;

/// `_runCallbacks`.
fn run_callbacks(this: &Rc<Inner>) {
    if this.running.get() {
        // Already running further up the stack; that loop will pick up
        // whatever was added.
        return;
    }
    let _depth = DepthGuard::enter();
    run_loop(this.clone(), false);
}

enum Flow {
    Next,
    Chained,
}

/// The body of `_runCallbacks`, starting with `first`. With `resume`,
/// `first` is in the middle of its links already (its pause check and
/// `_chainedTo` reset were done by the caller).
///
/// Twisted keeps every Deferred of a propagation walk on an explicit list;
/// here the one being processed is `current` and only those below it are
/// on the stack.
fn run_loop(first: Rc<Inner>, mut resume: bool) {
    let mut stack: Stack = SmallVec::new();
    let mut current = first;
    loop {
        if resume {
            resume = false;
        } else {
            if current.paused.get() != 0 {
                // This Deferred cannot produce a result now; everything
                // further up the stack keeps waiting (B40).
                return;
            }
            drop(current.chained_to.take());
        }
        let mut waiter = None;
        loop {
            let link = current.links.borrow_mut().pop_front();
            let Some(link) = link else { break };
            match link {
                Link::Call(f) => {
                    let input = take_input(&current);
                    current.running.set(true);
                    let output = f.call(input);
                    current.running.set(false);
                    if let Flow::Chained = apply(&current, output) {
                        break;
                    }
                }
                Link::Continue(w) => {
                    // Hand our result to the Deferred waiting on us and keep
                    // Python's `None` ourselves.
                    let result = current.slot.replace(Slot::none());
                    drop(current.unhandled.take());
                    let old = w.slot.replace(result);
                    w.paused.set(w.paused.get() - 1);
                    drop(old);
                    waiter = Some(w);
                    break;
                }
                Link::Done => {}
            }
        }
        match waiter {
            Some(w) => {
                // Run the waiter's links now; come back to `current` after.
                stack.push(std::mem::replace(&mut current, w));
            }
            None => {
                finish(&current);
                match stack.pop() {
                    Some(below) => current = below,
                    None => return,
                }
            }
        }
    }
}

/// The end of processing a Deferred in a run: update its unhandled-error
/// record (set to a failure result, cleared otherwise).
#[inline(always)]
fn finish(current: &Inner) {
    let failure = match &*current.slot.borrow() {
        Slot::Failure(f) => Some(f.clone()),
        _ => None,
    };
    drop(current.unhandled.replace(failure));
}

/// Stores what a link produced; for a returned Deferred, takes its result if
/// it has one available, else starts waiting on it.
#[inline(always)]
fn apply(current: &Rc<Inner>, output: Slot) -> Flow {
    let Slot::Deferred(returned) = output else {
        current.set_slot(output);
        return Flow::Next;
    };
    if Rc::ptr_eq(&returned, current) {
        log::warn!(
            "Callback returned the Deferred it was attached to; this breaks the \
             callback chain and the Deferred will wait on itself forever."
        );
    }
    current.set_slot(Slot::Deferred(returned.clone()));
    let available = returned.called.get()
        && returned.paused.get() == 0
        && matches!(*returned.slot.borrow(), Slot::Value(_) | Slot::Failure(_));
    if available {
        // Take its result; it keeps `None` (B29).
        let result = returned.slot.replace(Slot::none());
        drop(returned.unhandled.take());
        current.set_slot(result);
        Flow::Next
    } else {
        // Wait for it (B30).
        current.paused.set(current.paused.get() + 1);
        current.set_chained_to(&returned);
        returned
            .links
            .borrow_mut()
            .push_back(Link::Continue(current.clone()));
        Flow::Chained
    }
}
