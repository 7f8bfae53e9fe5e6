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

use crate::debug::{self, DebugInfo};
use crate::erased::{ErasedValue, SmallFnOnce};
use crate::errors::{AlreadyCalledError, CancelledError, RecursionError};
use crate::failure::Failure;
use crate::unhandled;
use std::panic::Location;

/// How deeply runs of callbacks may nest (a callback firing a Deferred whose
/// callback fires another, a canceller cancelling another Deferred, …)
/// before `callback()`/`errback()`/`cancel()` refuse with
/// [`RecursionError`](crate::RecursionError). Python stops at its recursion
/// limit (a `chainDeferred` chain fails after about 330 links); Rust would
/// overflow its stack instead. A level costs about 3.5 KiB of stack in an
/// unoptimised build and 0.7 KiB optimised, plus the callbacks' own frames,
/// so 200 levels stay well inside a default 2 MiB thread. Chaining by
/// *returning* Deferreds does not nest and is unaffected.
pub const MAX_NESTING: u32 = 200;

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Every Deferred created on this thread while tracking is on.
    static TRACKED: RefCell<Option<Vec<Weak<Inner>>>> = const { RefCell::new(None) };
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
    /// `chainDeferred(target)`: the pair `(target.callback, target.errback)`.
    /// Firing the target nests a run, as in Twisted.
    Forward(ForwardTarget),
    /// A link already consumed (a hole at the front of the queue).
    Done,
}

/// The target of a [`Link::Forward`]. Keeps the target's count of
/// forwarding links and the table of their sources (which the cycle
/// collector follows backwards) right, and, when a link is dropped without
/// running (its Deferred was freed), lets the collector look at the target.
pub(crate) struct ForwardTarget {
    target: Option<Rc<Inner>>,
    source: Weak<Inner>,
}

thread_local! {
    /// For each Deferred targeted by `chainDeferred` links, their sources.
    static FORWARD_SOURCES: RefCell<std::collections::HashMap<usize, Vec<Weak<Inner>>>> =
        RefCell::new(std::collections::HashMap::new());
}

impl ForwardTarget {
    fn new(source: &Rc<Inner>, target: Rc<Inner>) -> Self {
        target.forwarded_to.set(target.forwarded_to.get() + 1);
        target.graph_refs.set(target.graph_refs.get() + 1);
        let source = Rc::downgrade(source);
        let _ = FORWARD_SOURCES.try_with(|t| {
            t.borrow_mut()
                .entry(Rc::as_ptr(&target) as usize)
                .or_default()
                .push(source.clone())
        });
        ForwardTarget {
            target: Some(target),
            source,
        }
    }

    /// Unregisters the link; returns the target.
    fn detach(&mut self) -> Option<Rc<Inner>> {
        let target = self.target.take()?;
        target.forwarded_to.set(target.forwarded_to.get() - 1);
        target.graph_refs.set(target.graph_refs.get() - 1);
        let key = Rc::as_ptr(&target) as usize;
        let _ = FORWARD_SOURCES.try_with(|t| {
            let mut table = t.borrow_mut();
            if let Some(sources) = table.get_mut(&key) {
                if let Some(i) = sources.iter().position(|w| w.ptr_eq(&self.source)) {
                    sources.swap_remove(i);
                }
                if sources.is_empty() {
                    table.remove(&key);
                }
            }
        });
        Some(target)
    }

    /// The target, for running the link.
    fn take(mut self) -> Option<Rc<Inner>> {
        self.detach()
    }

    fn get(&self) -> Option<&Rc<Inner>> {
        self.target.as_ref()
    }
}

impl Drop for ForwardTarget {
    fn drop(&mut self) {
        if let Some(target) = self.detach() {
            release(target);
        }
    }
}

/// The live sources of the `chainDeferred` links targeting `target`.
fn forward_sources(target: &Rc<Inner>) -> Vec<Rc<Inner>> {
    if target.forwarded_to.get() == 0 {
        return Vec::new();
    }
    FORWARD_SOURCES
        .try_with(|t| {
            t.borrow()
                .get(&(Rc::as_ptr(target) as usize))
                .map(|v| v.iter().filter_map(Weak::upgrade).collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
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
            // SAFETY: every item is now `Link::Done`, which owns nothing, so
            // forgetting them (rather than running their drop glue one by
            // one, as `clear` does) leaks nothing; length 0 is in bounds.
            unsafe { self.items.set_len(0) };
            self.head = 0;
        }
        Some(link)
    }

    #[inline]
    fn is_empty(&self) -> bool {
        self.head == self.items.len()
    }
}

/// A canceller: `Deferred(canceller)`. Any `Fn(&Rc<Inner>)` closure is one;
/// a type can also be its own canceller (a coroutine is), so that handing it
/// to a Deferred costs a reference count, not an allocation.
pub(crate) trait Cancel {
    /// Runs the canceller on `d`, the Deferred being cancelled.
    fn cancel(self: Rc<Self>, d: &Rc<Inner>) -> Result<(), Failure>;
}

impl<F: Fn(&Rc<Inner>) -> Result<(), Failure>> Cancel for F {
    #[inline]
    fn cancel(self: Rc<Self>, d: &Rc<Inner>) -> Result<(), Failure> {
        (*self)(d)
    }
}

/// A canceller behind a shared pointer.
pub(crate) type CancelFn = dyn Cancel;

/// The shared state of one Deferred.
///
/// Laid out in declaration order (`repr(C)`), hot fields first: what adding
/// a link, firing and finishing touch (flags and counts, the result, the
/// canceller, the unhandled-error record, the head of the link list) sits
/// in the allocation's first cache lines; fields only `DeferredList`,
/// debugging and `Debug` use come last.
#[repr(C)]
pub(crate) struct Inner {
    /// `paused`: user pauses plus one while waiting on a chained Deferred.
    /// Signed, as in Python: an unbalanced `unpause` makes it negative,
    /// which also counts as paused.
    paused: Cell<i32>,
    /// `continuations + waits + forwarded_to`: non-zero exactly when this
    /// Deferred is in the wait graph (one load for the collector's gate).
    graph_refs: Cell<u32>,
    /// How many [`Link::Continue`] entries `links` holds (Deferreds waiting
    /// on this one), for the cycle collector.
    continuations: Cell<u32>,
    /// How many [`Link::Forward`] entries (of any Deferred) target this one.
    forwarded_to: Cell<u32>,
    /// How many [`Link::Forward`] entries `links` holds.
    forwards: Cell<u32>,
    /// `called`: fired once, never reset.
    called: Cell<bool>,
    /// `_runningCallbacks`: a link of this Deferred is executing.
    running: Cell<bool>,
    /// `_suppressAlreadyCalled`: swallow one fire after a cancel without
    /// canceller.
    suppress: Cell<bool>,
    /// This Deferred waits on the Deferred in its slot, which holds a
    /// [`Link::Continue`] back to it.
    waits: Cell<bool>,
    /// Twisted's `_debugInfo is not None`: set once a run ended on a
    /// failure (awaiting a failed Deferred asserts it, see
    /// `take_awaited_failure`).
    has_debug_info: Cell<bool>,
    /// `result`.
    pub(crate) slot: RefCell<Slot>,
    /// `_canceller`, dropped when the Deferred fires.
    canceller: Cell<Option<Rc<CancelFn>>>,
    /// `_chainedTo`: what `Debug` reports as "waiting on". Weak, unlike
    /// Python's: the Deferred waited on is kept alive by the result slot
    /// when chaining implicitly, and for `chainDeferred` a strong reference
    /// back to the source would make a cycle with the source's forwarding
    /// link that only a garbage collector could free.
    chained_to: Cell<Option<Weak<Inner>>>,
    /// `_debugInfo.failResult`: reported if still set when dropped.
    unhandled: Cell<Option<Failure>>,
    /// `_callbacks`.
    links: RefCell<Links>,
    /// Replaces `cancel()` entirely (a subclass overriding it, like
    /// `DeferredList`).
    cancel_override: Cell<Option<Rc<CancelFn>>>,
    /// Where it was created and first fired, recorded while debugging is on
    /// (Twisted's `_debugInfo.creator` / `invoker`).
    debug: Cell<Option<Box<DebugInfo>>>,
    /// The Python class this Deferred is (for `Debug`): `Deferred`,
    /// `DeferredList`.
    class: Cell<&'static str>,
}

impl Inner {
    /// `Deferred(canceller)`.
    #[track_caller]
    pub(crate) fn new(canceller: Option<Rc<CancelFn>>) -> Rc<Inner> {
        Inner::build(canceller, Slot::Empty)
    }

    /// A new Deferred holding `result` unless it is [`Slot::Empty`]
    /// (fired then, as `succeed`/`fail` make them).
    #[track_caller]
    #[inline(always)]
    fn build(canceller: Option<Rc<CancelFn>>, result: Slot) -> Rc<Inner> {
        let called = !matches!(result, Slot::Empty);
        // Allocated first and written in place: `Rc::new(Inner { .. })`
        // builds the 344 bytes on the stack and copies them. (`Rc::new` of
        // an uninitialised value, not `Rc::new_uninit`, whose layout is
        // computed at run time.)
        let mut uninit: Rc<std::mem::MaybeUninit<Inner>> = Rc::new(std::mem::MaybeUninit::uninit());
        let Some(place) = Rc::get_mut(&mut uninit) else {
            unreachable!("a fresh Rc is unique")
        };
        place.write(Inner {
            called: Cell::new(called),
            running: Cell::new(false),
            suppress: Cell::new(false),
            paused: Cell::new(0),
            slot: RefCell::new(result),
            links: RefCell::new(Links::default()),
            canceller: Cell::new(canceller),
            cancel_override: Cell::new(None),
            chained_to: Cell::new(None),
            unhandled: Cell::new(None),
            continuations: Cell::new(0),
            waits: Cell::new(false),
            forwarded_to: Cell::new(0),
            forwards: Cell::new(0),
            graph_refs: Cell::new(0),
            has_debug_info: Cell::new(false),
            class: Cell::new("Deferred"),
            debug: Cell::new(None),
        });
        // SAFETY: `place.write` initialised the whole value just above.
        let inner = unsafe { uninit.assume_init() };
        if debug::debugging() {
            inner.debug.set(Some(Box::new(DebugInfo {
                creator: Some(Location::caller()),
                invoker: None,
            })));
        }
        track(&inner);
        inner
    }

    /// `succeed(result)`: the state of a fired Deferred, set directly, with
    /// no run (so a failure stored this way is never reported).
    #[track_caller]
    pub(crate) fn new_fired(result: Slot) -> Rc<Inner> {
        debug_assert!(!matches!(result, Slot::Empty));
        Inner::build(None, result)
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
    #[inline]
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

    /// What this Deferred recorded while debugging was on.
    pub(crate) fn debug_info(&self) -> Option<DebugInfo> {
        let info = self.debug.take();
        let copy = info.as_deref().copied();
        self.debug.set(info);
        copy
    }

    /// Gives a Deferred made without one its canceller.
    pub(crate) fn set_canceller(&self, f: Rc<CancelFn>) {
        self.canceller.set(Some(f));
    }

    /// Makes `cancel()` call `f` instead of Twisted's default logic (a
    /// subclass overriding `cancel`, like `DeferredList`).
    pub(crate) fn set_cancel_override(&self, f: Rc<CancelFn>) {
        self.cancel_override.set(Some(f));
    }

    /// The Python class name `Debug` shows.
    pub(crate) fn class_name(&self) -> &'static str {
        self.class.get()
    }

    /// Sets the Python class name `Debug` shows.
    pub(crate) fn set_class_name(&self, name: &'static str) {
        self.class.set(name);
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
            let info = self.debug.get_mut().take().map(|b| *b);
            unhandled::report(failure, info);
        }
    }
}

/// `callback(result)` / `errback(failure)`: Twisted's `_startRunCallbacks`.
#[track_caller]
pub(crate) fn fire(this: &Rc<Inner>, result: Slot) -> Result<(), Failure> {
    if this.called.get() {
        if this.suppress.get() {
            // A cancel without canceller arranged to eat this one.
            this.suppress.set(false);
            return Ok(());
        }
        return Err(Failure::new(match this.debug_info() {
            Some(info) if debug::debugging() => AlreadyCalledError::with_debug_info(info),
            _ => AlreadyCalledError::new(),
        }));
    }
    if debug::debugging() {
        let mut info = this.debug.take().unwrap_or_default();
        info.invoker = Some(Location::caller());
        this.debug.set(Some(info));
    }
    this.called.set(true);
    // The canceller is never needed again; dropping it breaks cycles.
    drop(this.canceller.take());
    this.set_slot(result);
    if DEPTH.with(Cell::get) >= MAX_NESTING {
        // Too deep to run the callbacks: as when Python's recursion limit
        // strikes inside `_runCallbacks`, the Deferred has its result but
        // its callbacks wait for the next trigger (an added callback, an
        // unpause), and the caller gets RecursionError.
        return Err(Failure::new(RecursionError));
    }
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
#[track_caller]
pub(crate) fn cancel(this: &Rc<Inner>) -> Result<(), Failure> {
    // Cancellers may cancel other Deferreds, whose cancel may come back
    // here: Python stops such a loop with RecursionError, and so does this.
    if DEPTH.with(Cell::get) >= MAX_NESTING {
        return Err(Failure::new(RecursionError));
    }
    let _depth = DepthGuard::enter();
    let mut current = this.clone();
    let result = cancel_from(&mut current);
    release(current);
    result
}

#[track_caller]
fn cancel_from(current: &mut Rc<Inner>) -> Result<(), Failure> {
    // Waiting Deferreds normally form a chain; one that waits on itself,
    // directly or through others, would forward forever. Brent's cycle
    // check spots that with two pointers; Python runs out of recursion
    // there and raises RecursionError, and so does this.
    let mut checkpoint = current.clone();
    let (mut power, mut steps) = (1usize, 0usize);
    loop {
        let overridden = current.cancel_override.take();
        current.cancel_override.set(overridden.clone());
        if let Some(f) = overridden {
            return f.cancel(current);
        }
        if !current.called.get() {
            let canceller = current.canceller.take();
            current.canceller.set(canceller.clone());
            match canceller {
                Some(canceller) => canceller.cancel(current)?,
                // Arrange to eat the fire that the producer will eventually
                // make, since nothing told it to stop.
                None => current.suppress.set(true),
            }
            if !current.called.get() {
                fire(current, Slot::Failure(Failure::new(CancelledError)))?;
            }
            return Ok(());
        }
        let next = match &*current.slot.borrow() {
            Slot::Deferred(waited_on) => waited_on.clone(),
            _ => return Ok(()),
        };
        if Rc::ptr_eq(&next, &checkpoint) {
            return Err(Failure::new(RecursionError));
        }
        steps += 1;
        if steps == power {
            checkpoint = next.clone();
            power *= 2;
            steps = 0;
        }
        release(std::mem::replace(current, next));
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

/// Puts a link in front of every other (Twisted's coroutine canceller does
/// this to its errback), without running anything.
pub(crate) fn insert_front<F>(this: &Rc<Inner>, f: F)
where
    F: FnOnce(Slot) -> Slot + 'static,
{
    let mut links = this.links.borrow_mut();
    let head = links.head;
    links.items.insert(head, Link::Call(SmallFnOnce::new(f)));
}

/// `chainDeferred(target)`: appends the forwarding link (and runs it if the
/// Deferred has fired).
pub(crate) fn add_forward(this: &Rc<Inner>, target: Rc<Inner>) {
    this.forwards.set(this.forwards.get() + 1);
    add_link(this, Link::Forward(ForwardTarget::new(this, target)));
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
#[inline]
fn take_input(cur: &Inner) -> Slot {
    let mut slot = cur.slot.borrow_mut();
    let copy = match &*slot {
        // A non-clonable value shared behind an `Rc` (an opaque `AnyValue`)
        // is moved, not shared, so that a typed callback can unwrap it.
        Slot::Value(v) if v.is_shareable() && !v.is::<crate::value::SharedValue>() => {
            v.try_clone().map(Slot::Value)
        }
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

/// Whether [`take_input`] would move this result out of the slot (leaving
/// `Lent`) rather than copy it.
#[inline(always)]
fn moved_by_take_input(slot: &Slot) -> bool {
    match slot {
        Slot::Value(v) => !v.is_shareable() || v.is::<crate::value::SharedValue>(),
        _ => false,
    }
}

impl Inner {
    #[inline(always)]
    fn slot_is_lent(&self) -> bool {
        matches!(*self.slot.borrow(), Slot::Lent)
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
                abandon(current, &mut stack);
                return;
            }
            drop(current.chained_to.take());
        }
        let mut waiter = None;
        // Between two callbacks the result a callback would move out of the
        // slot anyway is kept here instead; the slot holds `Lent` all along
        // (nothing runs in between to look at it), and gets it back before
        // anything else happens.
        let mut held: Option<Slot> = None;
        loop {
            let link = current.links.borrow_mut().pop_front();
            let Some(link) = link else { break };
            match link {
                Link::Call(f) => {
                    let input = match held.take() {
                        Some(value) => value,
                        None => take_input(&current),
                    };
                    current.running.set(true);
                    let output = f.call(input);
                    current.running.set(false);
                    if moved_by_take_input(&output) && current.slot_is_lent() {
                        held = Some(output);
                    } else if let Flow::Chained = apply(&current, output) {
                        break;
                    }
                }
                Link::Continue(w) => {
                    if let Some(value) = held.take() {
                        current.set_slot(value);
                    }
                    hand_off(&current, &w);
                    waiter = Some(w);
                    break;
                }
                Link::Forward(target) => {
                    if let Some(value) = held.take() {
                        current.set_slot(value);
                    }
                    if let Flow::Chained = forward(&current, target) {
                        break;
                    }
                }
                Link::Done => {}
            }
        }
        if let Some(value) = held.take() {
            current.set_slot(value);
        }
        match waiter {
            Some(w) => {
                // Run the waiter's links now; come back to `current` after.
                stack.push(std::mem::replace(&mut current, w));
            }
            None => {
                finish(&current);
                match stack.pop() {
                    Some(below) => release(std::mem::replace(&mut current, below)),
                    None => {
                        release(current);
                        return;
                    }
                }
            }
        }
    }
}

/// Hands `current`'s result to `waiter` (the `_CONTINUE` link) and keeps
/// Python's `None`.
#[inline(never)]
fn hand_off(current: &Inner, waiter: &Inner) {
    current.continuations.set(current.continuations.get() - 1);
    current.graph_refs.set(current.graph_refs.get() - 1);
    let result = current.slot.replace(Slot::none());
    drop(current.unhandled.take());
    let old = waiter.slot.replace(result);
    if waiter.waits.replace(false) {
        waiter.graph_refs.set(waiter.graph_refs.get() - 1);
    }
    waiter.paused.set(waiter.paused.get() - 1);
    drop(old);
}

/// Runs a `chainDeferred` link: fires `target` with the current result
/// (nesting a run, as Twisted's `target.callback` does); `None` is left.
#[inline(never)]
fn forward(current: &Rc<Inner>, target: ForwardTarget) -> Flow {
    current.forwards.set(current.forwards.get() - 1);
    let Some(target) = target.take() else {
        return Flow::Next;
    };
    let input = take_input(current);
    current.running.set(true);
    let output = match fire(&target, input) {
        Ok(()) => Slot::none(),
        Err(f) => Slot::Failure(f),
    };
    current.running.set(false);
    release(target);
    apply(current, output)
}

/// Leaves a run early: the Deferreds on the stack stay as they are.
#[inline(never)]
fn abandon(current: Rc<Inner>, stack: &mut Stack) {
    release(current);
    for below in stack.drain(..) {
        release(below);
    }
}

/// The end of processing a Deferred in a run: update its unhandled-error
/// record (set to a failure result, cleared otherwise).
#[inline]
fn finish(current: &Inner) {
    let failure = match &*current.slot.borrow() {
        Slot::Failure(f) => Some(f.clone()),
        _ => None,
    };
    if failure.is_some() {
        current.has_debug_info.set(true);
    }
    drop(current.unhandled.replace(failure));
}

/// Stores what a link produced; for a returned Deferred, takes its result if
/// it has one available, else starts waiting on it.
#[inline(always)]
fn apply(current: &Rc<Inner>, output: Slot) -> Flow {
    if let Slot::Deferred(_) = output {
        return apply_deferred(current, output);
    }
    current.set_slot(output);
    Flow::Next
}

/// [`apply`] for a link that returned a Deferred.
#[inline(never)]
fn apply_deferred(current: &Rc<Inner>, output: Slot) -> Flow {
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
        if !current.waits.replace(true) {
            current.graph_refs.set(current.graph_refs.get() + 1);
        }
        returned.continuations.set(returned.continuations.get() + 1);
        returned.graph_refs.set(returned.graph_refs.get() + 1);
        returned
            .links
            .borrow_mut()
            .push_back(Link::Continue(current.clone()));
        Flow::Chained
    }
}

/// Drops a reference the library held, first checking whether it was the
/// last one keeping a cycle of waiting Deferreds reachable.
#[inline]
pub(crate) fn release(rc: Rc<Inner>) {
    if rc.in_wait_graph() {
        collect_if_garbage(&rc, 1);
    }
    drop(rc);
}

#[inline(never)]
#[cold]
fn collect_slow(x: &Rc<Inner>, dropping: usize) {
    collect_walk(x, dropping)
}

impl Inner {
    /// Whether this Deferred has a result an `await` can use right now
    /// (`called and not paused`, and not lent to a running callback).
    #[inline]
    pub(crate) fn awaitable_now(&self) -> bool {
        self.called.get()
            && self.paused.get() == 0
            && !matches!(*self.slot.borrow(), Slot::Empty | Slot::Lent)
    }

    /// The failure an `await` of this already-failed Deferred raises:
    /// Twisted asserts that the Deferred's debug record exists (it does once
    /// a run ended on a failure; not while the first such run is still
    /// going) and then clears its unhandled-error record.
    pub(crate) fn take_awaited_failure(&self, failure: Failure) -> Failure {
        if self.has_debug_info.get() {
            drop(self.unhandled.take());
            failure
        } else {
            Failure::new(crate::errors::AssertionError::new(
                "awaited a failed Deferred that has no debug record yet",
            ))
        }
    }

    /// True when this Deferred waits on another, is waited on, or is the
    /// target of a `chainDeferred`: the only ways the library itself makes
    /// reference cycles.
    #[inline]
    pub(crate) fn in_wait_graph(&self) -> bool {
        self.graph_refs.get() != 0
    }

    /// The most references to this Deferred the wait graph can hold: one per
    /// Deferred waiting on it, one from the Deferred it waits on, one per
    /// `chainDeferred` link targeting it. More than that means someone
    /// outside holds it.
    #[inline]
    fn max_wait_refs(&self) -> usize {
        self.continuations.get() as usize
            + usize::from(self.waits.get())
            + self.forwarded_to.get() as usize
    }

    /// The Deferreds this one holds strong references to through the wait
    /// graph: the one in its slot, and those its continuations hand off to.
    /// `None` if its state is borrowed right now.
    fn wait_edges(&self) -> Option<Vec<Rc<Inner>>> {
        let mut out = Vec::new();
        if let Slot::Deferred(d) = &*self.slot.try_borrow().ok()? {
            out.push(d.clone());
        }
        for link in &self.links.try_borrow().ok()?.items {
            match link {
                Link::Continue(d) => out.push(d.clone()),
                Link::Forward(target) => out.extend(target.get().cloned()),
                _ => {}
            }
        }
        Some(out)
    }
}

/// A small collector for the one kind of reference cycle Deferreds make on
/// their own: a Deferred waiting on another holds it in its slot, and the
/// other holds a continuation back (Twisted relies on Python's garbage
/// collector for these; when one is collected its unhandled failure, if
/// any, is reported).
///
/// Called when `dropping` references to `x` are about to go away. Walks the
/// part of the wait graph reachable from `x`; if every Deferred in it is
/// referenced only by wait edges from within it, nothing outside can reach
/// them any more: the edges are cut so that they are freed (and report their
/// unhandled failures) as Python's collector would. References held by
/// anything else (handles, closures, a running loop) count as outside, so
/// this never frees anything still reachable.
pub(crate) fn collect_if_garbage(x: &Rc<Inner>, dropping: usize) {
    // The common case, decided without allocating: `x` itself is still
    // referenced from outside.
    let outside = Rc::strong_count(x).saturating_sub(dropping);
    if outside > x.max_wait_refs() {
        return;
    }
    collect_slow(x, dropping);
}

/// The walk of [`collect_if_garbage`].
fn collect_walk(x: &Rc<Inner>, dropping: usize) {
    use std::collections::HashMap;
    let key = |rc: &Rc<Inner>| Rc::as_ptr(rc) as usize;
    let mut nodes: Vec<Rc<Inner>> = vec![x.clone()];
    let mut index: HashMap<usize, usize> = HashMap::from([(key(x), 0)]);
    let mut in_degree: Vec<usize> = vec![0];
    let mut i = 0;
    while i < nodes.len() {
        // Every reference this walk holds, plus the ones being dropped
        // (counted before `wait_edges` clones any edge, a self-edge
        // included).
        let held = 1 + if i == 0 { dropping } else { 0 };
        let outside = Rc::strong_count(&nodes[i]).saturating_sub(held);
        if outside > nodes[i].max_wait_refs() {
            return;
        }
        let Some(edges) = nodes[i].wait_edges() else {
            return;
        };
        for target in edges {
            let k = key(&target);
            match index.get(&k) {
                Some(&j) => in_degree[j] += 1,
                None => {
                    index.insert(k, nodes.len());
                    nodes.push(target);
                    in_degree.push(1);
                }
            }
        }
        // Forwarding links are the one kind of edge without a reverse edge:
        // follow them backwards through the table of sources (their own
        // out-edges count the references).
        for source in forward_sources(&nodes[i]) {
            if let std::collections::hash_map::Entry::Vacant(e) = index.entry(key(&source)) {
                e.insert(nodes.len());
                nodes.push(source);
                in_degree.push(0);
            }
        }
        i += 1;
    }
    for (i, n) in nodes.iter().enumerate() {
        // `edges` clones are gone; the walk holds one reference per node.
        let held = 1 + if i == 0 { dropping } else { 0 };
        if Rc::strong_count(n).saturating_sub(held) != in_degree[i] {
            return;
        }
    }
    // Unreachable from outside: cut the edges.
    let mut cut: Vec<Slot> = Vec::new();
    let mut cut_links: Vec<Link> = Vec::new();
    for n in &nodes {
        if matches!(*n.slot.borrow(), Slot::Deferred(_)) {
            cut.push(n.slot.replace(Slot::none()));
        }
        let mut links = n.links.borrow_mut();
        let mut kept = Links::default();
        while let Some(link) = links.pop_front() {
            match link {
                Link::Continue(_) => cut_links.push(link),
                Link::Forward(target) => {
                    n.forwards.set(n.forwards.get() - 1);
                    cut_links.push(Link::Forward(target));
                }
                Link::Done => {}
                other => kept.push_back(other),
            }
        }
        *links = kept;
        n.continuations.set(0);
        n.waits.set(false);
        n.graph_refs.set(n.forwarded_to.get());
    }
    drop(cut);
    drop(cut_links);
    drop(nodes);
}

#[inline]
fn track(inner: &Rc<Inner>) {
    let _ = TRACKED.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut()
            && let Some(list) = t.as_mut()
        {
            list.push(Rc::downgrade(inner));
        }
    });
}

/// Starts recording the Deferreds created on this thread.
pub(crate) fn start_tracking() {
    TRACKED.with(|t| *t.borrow_mut() = Some(Vec::new()));
}

/// Stops recording; returns the recorded Deferreds that are still alive.
pub(crate) fn stop_tracking() -> Vec<Rc<Inner>> {
    let list = TRACKED.with(|t| t.borrow_mut().take()).unwrap_or_default();
    list.iter().filter_map(Weak::upgrade).collect()
}

/// Breaks every reference a Deferred holds to other objects (its links,
/// result, canceller), so that whatever cycle keeps it alive falls apart.
pub(crate) fn tear_down(inner: &Inner) {
    let links = std::mem::take(&mut *inner.links.borrow_mut());
    inner.continuations.set(0);
    inner.forwards.set(0);
    inner.waits.set(false);
    inner.graph_refs.set(inner.forwarded_to.get());
    let holds_deferred = matches!(*inner.slot.borrow(), Slot::Deferred(_));
    let slot = holds_deferred.then(|| inner.slot.replace(Slot::none()));
    let canceller = inner.canceller.take();
    let cancel_override = inner.cancel_override.take();
    drop(links);
    drop(slot);
    drop(canceller);
    drop(cancel_override);
}

#[cfg(test)]
mod layout {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn fields_a_fire_touches_come_first() {
        let hot = [
            offset_of!(Inner, paused),
            offset_of!(Inner, called),
            offset_of!(Inner, slot),
            offset_of!(Inner, canceller),
            offset_of!(Inner, chained_to),
            offset_of!(Inner, unhandled),
        ];
        for offset in hot {
            assert!(offset < offset_of!(Inner, links), "a hot field at {offset}");
        }
        // The link list follows them; the cold fields come after it.
        assert!(offset_of!(Inner, links) < offset_of!(Inner, cancel_override));
        assert!(offset_of!(Inner, links) < offset_of!(Inner, class));
        assert!(offset_of!(Inner, links) < offset_of!(Inner, debug));
    }
}
