//! Rust `async` code on Deferreds: [`ensure_deferred`] (Twisted's
//! `ensureDeferred` / `Deferred.fromCoroutine`) and `.await` on a
//! [`Deferred`].
//!
//! There is no executor. `ensure_deferred` polls the future at once, until it
//! awaits a Deferred that has no result yet; that Deferred gets a link which,
//! when its chain reaches it, polls the future again right there, inside
//! whatever `callback()` fired it, exactly as Twisted's `_inlineCallbacks`
//! resumes a coroutine inside `_gotResultInlineCallbacks`.
//!
//! Cancelling the returned Deferred cancels the Deferred the coroutine is
//! awaiting; the failure that produces comes out of the `.await` as an `Err`
//! (Twisted's `_handleCancelInlineCallbacks`, step for step: an internal
//! errback in front of the Deferred's links, a fresh Deferred for the
//! coroutine's eventual outcome, which the cancelled one then waits on).
//!
//! Futures that are not Deferreds can be awaited too. They get a real
//! [`Waker`]: woken on the coroutine's thread, the coroutine resumes at once,
//! inside `wake()`; woken from another thread, it resumes when that thread
//! next calls [`run_wakeups`] (the reactor does). Cancelling a coroutine
//! while it awaits such a future drops the coroutine (its destructors run, as
//! Python's `coroutine.close()` runs `finally` blocks) and fails its Deferred
//! with `CancelledError`; a foreign future cannot be cancelled from the
//! inside. To get Twisted's behaviour, where the `CancelledError` comes out of
//! that very `await`, turn the future into a Deferred first
//! ([`from_future`]).

use std::cell::{Cell, RefCell};
use std::future::{Future, IntoFuture};
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::ThreadId;

use smallvec::SmallVec;

use crate::chain::{self, Inner, Slot};
use crate::deferred::{Deferred, State, store_slot, value_as};
use crate::errors::{AssertionError, CancelledError, InternalInlineCallbacksCancelledError};
use crate::failure::Failure;
use crate::value::AnyValue;

type BoxedCoroutine = Pin<Box<dyn Future<Output = Slot>>>;

/// The Deferreds one suspension awaits: almost always exactly one.
type Awaited = SmallVec<[Rc<Inner>; 1]>;

/// One running coroutine: Twisted's generator plus its `_CancellationStatus`.
struct Coroutine {
    /// The future; `None` while it is being polled and once it finished.
    future: RefCell<Option<BoxedCoroutine>>,
    /// `status.deferred`: the Deferred to fire with the outcome (the one
    /// `ensure_deferred` returned, or the fresh one a cancel made).
    deferred: RefCell<Rc<Inner>>,
    /// `status.waitingOn`: the Deferreds awaited at the latest suspension
    /// (left in place after they fire, as in Twisted).
    waiting_on: RefCell<Awaited>,
    /// The Deferreds awaited during the poll in progress.
    awaiting_now: RefCell<Awaited>,
    /// The waker its polls get, made once (foreign futures may keep it).
    waker: Waker,
    /// The driver loop is running (polling, or just after a poll).
    stepping: Cell<bool>,
    /// A resume arrived while stepping: poll again before returning
    /// (Twisted's `waiting` flag).
    resume_pending: Cell<bool>,
    /// Identifies it to observers (never reused on a thread).
    id: u64,
    /// Its entry in this thread's waker registry (reused once it is gone).
    key: u32,
    /// What the links of its suspended awaits delivered, by ticket, until
    /// the await takes it (usually one at most).
    inbox: RefCell<SmallVec<[(u64, Slot); 1]>>,
    /// The ticket of its next suspended await.
    next_ticket: Cell<u64>,
    /// Tickets whose awaits were dropped before their delivery, while
    /// their links still exist.
    forgotten: RefCell<SmallVec<[u64; 1]>>,
}

impl Coroutine {
    /// Records what the link of await `ticket` delivered.
    fn deliver(&self, ticket: u64, input: Slot) {
        let mut forgotten = self.forgotten.borrow_mut();
        if let Some(i) = forgotten.iter().position(|&t| t == ticket) {
            forgotten.swap_remove(i);
            drop(forgotten);
            drop(input);
            return;
        }
        drop(forgotten);
        self.inbox.borrow_mut().push((ticket, input));
    }

    /// Takes what await `ticket` was delivered, if it was.
    fn take_delivery(&self, ticket: u64) -> Option<Slot> {
        let mut inbox = self.inbox.borrow_mut();
        let i = inbox.iter().position(|(t, _)| *t == ticket)?;
        Some(inbox.swap_remove(i).1)
    }

    /// Await `ticket` was dropped: discard its delivery, now or when it
    /// comes.
    fn forget_ticket(&self, ticket: u64) {
        let taken = self.take_delivery(ticket);
        if taken.is_none() {
            self.forgotten.borrow_mut().push(ticket);
        }
        drop(taken);
    }
}

thread_local! {
    /// The coroutine whose future is being polled on this thread.
    static CURRENT: RefCell<Option<Rc<Coroutine>>> = const { RefCell::new(None) };
    /// Coroutines that foreign wakers may resume.
    static REGISTRY: RefCell<Registry> = const { RefCell::new(Registry::new()) };
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

/// Identifies a coroutine (one [`ensure_deferred`] call) on its thread
/// while it lives.
pub type CoroutineId = u64;

/// Sees what coroutines do: started, awaiting a Deferred (where), resumed
/// (with what), finished. Tools install one per thread with
/// [`set_coroutine_observer`] (the cancellation fuzzer of `twisted-compat`
/// does). Every method does nothing by default. Methods run inside the
/// coroutine's driver: they must not fire, cancel or await Deferreds.
///
/// ```
/// use std::{cell::RefCell, panic::Location, rc::Rc};
/// use twisted_deferred::{ensure_deferred, set_coroutine_observer, CoroutineId, CoroutineObserver, Deferred, Failure};
///
/// #[derive(Default)]
/// struct Lines(RefCell<Vec<u32>>);
/// impl CoroutineObserver for Lines {
///     fn on_await(&self, _: CoroutineId, _: &Deferred, at: &'static Location<'static>, _: bool) {
///         self.0.borrow_mut().push(at.line());
///     }
/// }
/// let lines = Rc::new(Lines::default());
/// set_coroutine_observer(Some(lines.clone()));
/// let d: Deferred<()> = Deferred::new();
/// let e = d.clone();
/// let _c = ensure_deferred(async move { e.await?; Ok::<_, Failure>(()) });
/// set_coroutine_observer(None);
/// assert_eq!(*lines.0.borrow(), [line!() - 2]);   // the line of `e.await`
/// # d.callback(()).unwrap();
/// ```
pub trait CoroutineObserver {
    /// A coroutine was started at `location` (the `ensure_deferred` call);
    /// `deferred` is the Deferred it returns. Runs before its first poll.
    fn on_start(
        &self,
        coroutine: CoroutineId,
        deferred: &Deferred<AnyValue>,
        location: &'static Location<'static>,
    ) {
        let _ = (coroutine, deferred, location);
    }

    /// The coroutine awaits `awaited` at `location` (the `.await`), for the
    /// first time at this await; `suspends` is false when it has a result
    /// to give at once.
    fn on_await(
        &self,
        coroutine: CoroutineId,
        awaited: &Deferred<AnyValue>,
        location: &'static Location<'static>,
        suspends: bool,
    ) {
        let _ = (coroutine, awaited, location, suspends);
    }

    /// The await at `location` gives the coroutine its outcome (a value, or
    /// the failure about to come out of it), before the coroutine goes on.
    fn on_resume(
        &self,
        coroutine: CoroutineId,
        location: &'static Location<'static>,
        outcome: Result<(), &Failure>,
    ) {
        let _ = (coroutine, location, outcome);
    }

    /// The coroutine finished (returned, raised, panicked, or was dropped
    /// by a cancel while awaiting a foreign future), about to fire its
    /// Deferred with `outcome`.
    fn on_finish(&self, coroutine: CoroutineId, outcome: Result<(), &Failure>) {
        let _ = (coroutine, outcome);
    }
}

thread_local! {
    /// This thread's coroutine observer.
    static OBSERVER: RefCell<Option<Rc<dyn CoroutineObserver>>> = const { RefCell::new(None) };
    /// `OBSERVER.is_some()`, read without a borrow on every await.
    static OBSERVING: Cell<bool> = const { Cell::new(false) };
}

/// Installs `observer` to see this thread's coroutines (`None` removes
/// it) and returns the previous one.
///
/// ```
/// use std::rc::Rc;
/// use twisted_deferred::{set_coroutine_observer, CoroutineObserver};
/// struct Nothing;
/// impl CoroutineObserver for Nothing {}
/// assert!(set_coroutine_observer(Some(Rc::new(Nothing))).is_none());
/// assert!(set_coroutine_observer(None).is_some());
/// ```
pub fn set_coroutine_observer(
    observer: Option<Rc<dyn CoroutineObserver>>,
) -> Option<Rc<dyn CoroutineObserver>> {
    OBSERVING.with(|o| o.set(observer.is_some()));
    OBSERVER.with(|o| o.replace(observer))
}

/// This thread's observer, if any.
#[inline]
fn observer() -> Option<Rc<dyn CoroutineObserver>> {
    if !OBSERVING.try_with(Cell::get).unwrap_or(false) {
        return None;
    }
    OBSERVER.try_with(|o| o.borrow().clone()).ok().flatten()
}

/// `Ok(())` or the failure, from what fires a coroutine's Deferred.
fn slot_outcome(slot: &Slot) -> Result<(), &Failure> {
    match slot {
        Slot::Failure(f) => Err(f),
        _ => Ok(()),
    }
}

/// Wakes that arrived from other threads, per thread, to run on
/// [`run_wakeups`].
static REMOTE_WAKES: Mutex<Vec<(ThreadId, u32, u64)>> = Mutex::new(Vec::new());

/// Wakes a thread's event loop from another thread (see
/// [`set_remote_wake_notifier`]).
pub type WakeNotifier = Arc<dyn Fn() + Send + Sync>;

/// Per thread, what wakes its event loop when a coroutine of that thread is
/// woken from elsewhere.
static NOTIFIERS: Mutex<Vec<(ThreadId, WakeNotifier)>> = Mutex::new(Vec::new());

/// Registers `notifier` as what wakes this thread's event loop when a
/// coroutine running here is woken from another thread (the loop then calls
/// [`run_wakeups`]); `None` removes it. The reactor registers one for its
/// thread.
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
/// let woken = Arc::new(AtomicBool::new(false));
/// let w = woken.clone();
/// twisted_deferred::set_remote_wake_notifier(Some(Arc::new(move || w.store(true, Ordering::SeqCst))));
/// # twisted_deferred::set_remote_wake_notifier(None);
/// ```
pub fn set_remote_wake_notifier(notifier: Option<WakeNotifier>) {
    let me = std::thread::current().id();
    if let Ok(mut all) = NOTIFIERS.lock() {
        all.retain(|(t, _)| *t != me);
        if let Some(n) = notifier {
            all.push((me, n));
        }
    }
}

/// A thread's coroutines, for wakers to find them: a slab of weak
/// references with a free list (a key is reused after its coroutine is
/// gone; a waker also carries the coroutine's id, so a stale waker finds
/// nothing). Each key keeps its waker for the next coroutine to take it,
/// once nothing else holds that waker any more: a coroutine then costs no
/// waker allocation.
struct Registry {
    slots: Vec<RegistrySlot>,
    free: Vec<u32>,
    /// This thread, once known.
    thread: Option<ThreadId>,
}

struct RegistrySlot {
    coroutine: Option<Weak<Coroutine>>,
    /// The waker last handed out under this key.
    waker: Option<Arc<CoroutineWaker>>,
}

impl Registry {
    const fn new() -> Registry {
        Registry {
            slots: Vec::new(),
            free: Vec::new(),
            thread: None,
        }
    }

    /// A key and a waker for coroutine `id`, about to be made.
    fn reserve(&mut self, id: u64) -> (u32, Waker) {
        let key = match self.free.pop() {
            Some(key) => key,
            None => {
                self.slots.push(RegistrySlot {
                    coroutine: None,
                    waker: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let thread = *self
            .thread
            .get_or_insert_with(|| std::thread::current().id());
        let slot = &mut self.slots[key as usize];
        let waker = match &slot.waker {
            // Held by this table alone: no stale copy can wake the new
            // coroutine, so the allocation is reused.
            Some(w) if Arc::strong_count(w) == 1 => {
                // Relaxed: no other thread holds this waker; whoever gets a
                // copy later gets it through something that synchronises.
                w.id.store(id, Ordering::Relaxed);
                w.clone()
            }
            _ => {
                let w = Arc::new(CoroutineWaker {
                    thread,
                    key,
                    id: AtomicU64::new(id),
                });
                slot.waker = Some(w.clone());
                w
            }
        };
        (key, Waker::from(waker))
    }

    fn fill(&mut self, key: u32, co: Weak<Coroutine>) {
        if let Some(slot) = self.slots.get_mut(key as usize) {
            slot.coroutine = Some(co);
        }
    }

    fn remove(&mut self, key: u32) {
        if let Some(slot) = self.slots.get_mut(key as usize)
            && slot.coroutine.take().is_some()
        {
            self.free.push(key);
        }
    }

    /// The live coroutine `id` under `key`, if it still is.
    fn get(&self, key: u32, id: u64) -> Option<Rc<Coroutine>> {
        let co = self.slots.get(key as usize)?.coroutine.as_ref()?;
        co.upgrade().filter(|co| co.id == id)
    }
}

impl Drop for Coroutine {
    fn drop(&mut self) {
        let key = self.key;
        let _ = REGISTRY.try_with(|r| r.borrow_mut().remove(key));
    }
}

/// `ensureDeferred(coro)` / `Deferred.fromCoroutine(coro)`: runs `future`
/// now, until it first awaits a Deferred without a result (or finishes), and
/// returns a Deferred for its outcome: `Ok(v)` calls it back with `v`,
/// `Err(f)` (or a panic) errbacks it.
///
/// ```
/// use twisted_deferred::{ensure_deferred, Deferred, Failure};
///
/// let page: Deferred<String> = Deferred::new();
/// let p = page.clone();
/// // d = ensureDeferred(fetch())  with  async def fetch(): return len(await page)
/// let d = ensure_deferred(async move {
///     let body = p.await?;
///     Ok::<_, Failure>(body.len())
/// });
/// assert!(!d.called());                     // suspended on `page`
/// page.callback("hello".into()).unwrap();   // resumes it, right here
/// assert_eq!(d.result().value(), Some(5));
/// ```
#[track_caller]
pub fn ensure_deferred<T, F>(future: F) -> Deferred<T>
where
    T: 'static,
    F: Future<Output = Result<T, Failure>> + 'static,
{
    let boxed: BoxedCoroutine = Box::pin(async move {
        match future.await {
            Ok(v) => store_slot(v),
            Err(f) => Slot::Failure(f),
        }
    });
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    let (key, waker) = REGISTRY.with(|r| r.borrow_mut().reserve(id));
    let deferred = Inner::new(None);
    let co = Rc::new(Coroutine {
        future: RefCell::new(Some(boxed)),
        deferred: RefCell::new(deferred.clone()),
        waiting_on: RefCell::new(Awaited::new()),
        awaiting_now: RefCell::new(Awaited::new()),
        waker,
        stepping: Cell::new(false),
        resume_pending: Cell::new(false),
        id,
        key,
        inbox: RefCell::new(SmallVec::new()),
        next_ticket: Cell::new(0),
        forgotten: RefCell::new(SmallVec::new()),
    });
    // Twisted's canceller holds the cancellation status; this one is the
    // coroutine (held until the Deferred fires and drops its canceller).
    deferred.set_canceller(co.clone());
    REGISTRY.with(|r| r.borrow_mut().fill(key, Rc::downgrade(&co)));
    let d = Deferred::from_inner(co.deferred.borrow().clone());
    if let Some(observer) = observer() {
        observer.on_start(id, &d.as_any(), Location::caller());
    }
    // Nobody can have fired `d` yet, so finishing cannot fail here.
    let _ = step(&co);
    d
}

impl<T: 'static> Deferred<T> {
    /// `Deferred.fromCoroutine(coro)`: the same as [`ensure_deferred`].
    #[track_caller]
    pub fn from_coroutine<F>(future: F) -> Deferred<T>
    where
        F: Future<Output = Result<T, Failure>> + 'static,
    {
        ensure_deferred(future)
    }
}

thread_local! {
    /// The failure a coroutine's canceller errbacks its Deferred with, made
    /// once per thread: it never leaves the coroutine's own handler, so
    /// sharing one instance is unobservable and saves an allocation per
    /// cancelled coroutine.
    static INTERNAL_CANCEL: Failure = Failure::new(InternalInlineCallbacksCancelledError);
}

/// A coroutine is the canceller of its Deferred: Twisted's
/// `_addCancelCallbackToDeferred`, which puts the handler in front of the
/// Deferred's links and errbacks it with the internal error. (Twisted's
/// canceller closes over the cancellation status; this one is the
/// coroutine itself, kept alive until the Deferred fires and drops its
/// canceller, with no closure to allocate.)
impl chain::Cancel for Coroutine {
    fn cancel(self: Rc<Self>, d: &Rc<Inner>) -> Result<(), Failure> {
        let co = self;
        chain::insert_front(d, move |input: Slot| handle_cancel(input, &co));
        let internal = INTERNAL_CANCEL
            .try_with(Failure::clone)
            .unwrap_or_else(|_| Failure::new(InternalInlineCallbacksCancelledError));
        chain::fire(d, Slot::Failure(internal))
    }
}

/// Twisted's `_handleCancelInlineCallbacks`: a fresh Deferred for the
/// coroutine's outcome, the awaited Deferred cancelled, and the fresh one
/// returned so that the cancelled Deferred waits on it.
fn handle_cancel(input: Slot, co: &Rc<Coroutine>) -> Slot {
    match &input {
        Slot::Failure(f) if f.check::<InternalInlineCallbacksCancelledError>() => {}
        // `trap` re-raises anything else; a value passes by.
        _ => return input,
    }
    let fresh = Inner::new(Some(co.clone()));
    *co.deferred.borrow_mut() = fresh.clone();
    let awaited = co.waiting_on.borrow().clone();
    if awaited.is_empty() {
        if co.stepping.get() {
            // Cancelled by its own code before it ever waited on a
            // Deferred: Twisted's `assert awaited is not None` fails, and the
            // coroutine goes on to completion, unobserved.
            return Slot::Failure(Failure::new(AssertionError::new(
                "a coroutine was cancelled before awaiting any Deferred",
            )));
        }
        // Suspended on a foreign future, which cannot be cancelled from the
        // inside: drop the coroutine (its destructors run) and fail.
        let dropped = co.future.borrow_mut().take();
        drop(dropped);
        let cancelled = Failure::new(CancelledError);
        if let Some(observer) = observer() {
            observer.on_finish(co.id, Err(&cancelled));
        }
        let _ = chain::fire(&fresh, Slot::Failure(cancelled));
        return Slot::Deferred(fresh);
    }
    for w in awaited {
        if let Err(f) = chain::cancel(&w) {
            return Slot::Failure(f);
        }
    }
    Slot::Deferred(fresh)
}

/// Resumes the coroutine now, or, if its driver loop is already running,
/// has that loop poll it again. An error is the one firing the coroutine's
/// Deferred raised (see [`finish`]).
fn resume(co: &Rc<Coroutine>) -> Result<(), Failure> {
    if co.stepping.get() {
        co.resume_pending.set(true);
        Ok(())
    } else {
        step(co)
    }
}

/// Twisted's `_inlineCallbacks` loop: poll until the future suspends with
/// nothing ready, or finishes.
fn step(co: &Rc<Coroutine>) -> Result<(), Failure> {
    co.stepping.set(true);
    let mut outcome = Ok(());
    loop {
        co.resume_pending.set(false);
        let Some(mut future) = co.future.borrow_mut().take() else {
            break;
        };
        co.awaiting_now.borrow_mut().clear();
        let previous = CURRENT.with(|c| c.replace(Some(co.clone())));
        let polled = catch_unwind(AssertUnwindSafe(|| {
            future.as_mut().poll(&mut Context::from_waker(&co.waker))
        }));
        CURRENT.with(|c| c.replace(previous));
        match polled {
            Ok(Poll::Pending) => {
                *co.future.borrow_mut() = Some(future);
                // The new suspension's Deferreds replace the last one's
                // (swapped, so that both lists keep their storage).
                std::mem::swap(
                    &mut *co.waiting_on.borrow_mut(),
                    &mut *co.awaiting_now.borrow_mut(),
                );
                let previous = std::mem::take(&mut *co.awaiting_now.borrow_mut());
                drop(previous);
                if co.resume_pending.get() {
                    continue;
                }
                break;
            }
            Ok(Poll::Ready(result)) => {
                drop(future);
                outcome = finish(co, result);
                break;
            }
            Err(panic) => {
                drop(future);
                outcome = finish(co, Slot::Failure(Failure::from_panic(panic)));
                break;
            }
        }
    }
    co.stepping.set(false);
    outcome
}

/// The coroutine returned or raised: fire `status.deferred`. If user code
/// fired that Deferred by hand already, this raises `AlreadyCalledError`,
/// which, as in Twisted, surfaces where the coroutine was resumed: it
/// becomes the failure of the Deferred whose link resumed it.
fn finish(co: &Rc<Coroutine>, outcome: Slot) -> Result<(), Failure> {
    co.waiting_on.borrow_mut().clear();
    if let Some(observer) = observer() {
        observer.on_finish(co.id, slot_outcome(&outcome));
    }
    let d = co.deferred.borrow().clone();
    let fired = chain::fire(&d, outcome);
    chain::release(d);
    fired
}

/// The waker given to futures a coroutine awaits.
struct CoroutineWaker {
    thread: ThreadId,
    key: u32,
    /// The coroutine's id (rewritten when the waker is reused for the next
    /// coroutine under the same key).
    id: AtomicU64,
}

impl Wake for CoroutineWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let id = self.id.load(Ordering::Relaxed);
        if std::thread::current().id() == self.thread {
            wake_here(self.key, id);
            return;
        }
        if let Ok(mut queue) = REMOTE_WAKES.lock() {
            queue.push((self.thread, self.key, id));
        }
        let notifier = NOTIFIERS.lock().ok().and_then(|all| {
            all.iter()
                .find(|(t, _)| *t == self.thread)
                .map(|(_, n)| n.clone())
        });
        if let Some(notify) = notifier {
            notify();
        }
    }
}

fn wake_here(key: u32, id: u64) {
    let co = REGISTRY
        .try_with(|r| r.borrow().get(key, id))
        .ok()
        .flatten();
    if let Some(co) = co {
        // Nothing to report a failure to when a foreign future woke it.
        let _ = resume(&co);
    }
}

/// Resumes the coroutines of this thread that were woken from other
/// threads (a foreign future completed elsewhere). The reactor calls this;
/// without one, call it yourself. Returns how many were resumed.
pub fn run_wakeups() -> usize {
    let me = std::thread::current().id();
    let mine: Vec<(u32, u64)> = match REMOTE_WAKES.lock() {
        Ok(mut queue) => {
            let (mine, others): (Vec<_>, Vec<_>) = queue.drain(..).partition(|(t, _, _)| *t == me);
            *queue = others;
            mine.into_iter().map(|(_, key, id)| (key, id)).collect()
        }
        Err(_) => Vec::new(),
    };
    let n = mine.len();
    for (key, id) in mine {
        wake_here(key, id);
    }
    n
}

/// What a pending `.await` on a Deferred registered: the link's delivery,
/// for an await outside any coroutine (another executor's task).
#[derive(Default)]
struct Mailbox {
    input: RefCell<Option<Slot>>,
    waker: RefCell<Option<Waker>>,
}

/// Where a suspended `.await` finds what its link delivered.
enum Suspension {
    /// Inside a coroutine: the coroutine's inbox, under this ticket (no
    /// allocation; the link resumes the coroutine). Weak: the future lives
    /// inside the coroutine.
    Coroutine(Weak<Coroutine>, u64),
    /// In another executor: a mailbox shared with the link, which wakes the
    /// task.
    Foreign(Rc<Mailbox>),
}

/// The future of `deferred.await` (Twisted's `Deferred.__await__`).
///
/// A Deferred with a usable result (fired, not paused, not waiting) gives it
/// at once and keeps it (which is why `T: Clone`); a failure comes out as
/// `Err` and counts as handled. Otherwise the await adds a link to the
/// Deferred and suspends; the link hands the result over (the Deferred keeps
/// Python's `None`) and resumes the awaiting code.
///
/// Inside [`ensure_deferred`] the resumption is synchronous. In any other
/// executor (tokio's `LocalSet`, `futures::executor`), the link wakes the
/// task's waker; the Deferred must then be fired on the same thread, as
/// Deferreds are not `Send`.
pub struct DeferredFuture<T> {
    deferred: Deferred<T>,
    suspended: Option<Suspension>,
    /// The `.await` (`into_future`'s caller).
    location: &'static Location<'static>,
    /// The observer was told about this await.
    announced: bool,
}

impl<T: 'static> std::fmt::Debug for DeferredFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredFuture")
            .field("deferred", &format_args!("{:#x}", self.deferred.id()))
            .field("suspended", &self.suspended.is_some())
            .finish()
    }
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox")
    }
}

impl<T: Clone + 'static> IntoFuture for Deferred<T> {
    type Output = Result<T, Failure>;
    type IntoFuture = DeferredFuture<T>;

    #[track_caller]
    fn into_future(self) -> DeferredFuture<T> {
        DeferredFuture {
            deferred: self,
            suspended: None,
            location: Location::caller(),
            announced: false,
        }
    }
}

impl<T: Clone + 'static> Future for DeferredFuture<T> {
    type Output = Result<T, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = self.poll_inner(cx);
        if let Some(observer) = observer() {
            let this = &mut *self;
            let current = CURRENT.with(|c| c.borrow().as_ref().map(|co| co.id));
            if let Some(id) = current {
                if !this.announced {
                    this.announced = true;
                    observer.on_await(
                        id,
                        &this.deferred.as_any(),
                        this.location,
                        polled.is_pending(),
                    );
                }
                if let Poll::Ready(outcome) = &polled {
                    observer.on_resume(id, this.location, outcome.as_ref().map(|_| ()));
                }
            }
        }
        polled
    }
}

impl<T: Clone + 'static> DeferredFuture<T> {
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, Failure>> {
        let this = self;
        let inner = this.deferred.inner().clone();
        if let Some(suspension) = &this.suspended {
            let delivered = match suspension {
                Suspension::Coroutine(co, ticket) => {
                    co.upgrade().and_then(|co| co.take_delivery(*ticket))
                }
                Suspension::Foreign(mailbox) => mailbox.input.borrow_mut().take(),
            };
            match delivered {
                // Resumed with a failure: thrown in at the await.
                Some(Slot::Failure(f)) => {
                    this.suspended = None;
                    return Poll::Ready(Err(f));
                }
                // Resumed with a value: Twisted looks at the Deferred again
                // and suspends once more if it is paused meanwhile.
                Some(value) => {
                    this.suspended = None;
                    if inner.called() && inner.paused() == 0 {
                        return Poll::Ready(value_as::<T>(value));
                    }
                }
                None => {
                    // Still waiting.
                    note_awaiting(&inner);
                    if let Suspension::Foreign(mailbox) = suspension {
                        *mailbox.waker.borrow_mut() = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        } else if inner.awaitable_now() {
            return Poll::Ready(take_now(&this.deferred));
        }
        // Suspend: a both-link hands the result over and resumes us. The
        // link holds the coroutine, as Twisted's holds the generator: a
        // suspended coroutine lives as long as what it awaits.
        let driver = CURRENT.with(|c| c.borrow().clone());
        let suspension = match driver {
            Some(co) => {
                let ticket = co.next_ticket.get();
                co.next_ticket.set(ticket + 1);
                let link = TicketLink {
                    co: co.clone(),
                    ticket,
                };
                chain::add_call(&inner, move |input: Slot| {
                    link.co.deliver(link.ticket, input);
                    match resume(&link.co) {
                        Ok(()) => Slot::none(),
                        Err(f) => Slot::Failure(f),
                    }
                });
                Suspension::Coroutine(Rc::downgrade(&co), ticket)
            }
            None => {
                let mailbox = Rc::new(Mailbox::default());
                *mailbox.waker.borrow_mut() = Some(cx.waker().clone());
                let mb = mailbox.clone();
                chain::add_call(&inner, move |input: Slot| {
                    *mb.input.borrow_mut() = Some(input);
                    if let Some(w) = mb.waker.borrow_mut().take() {
                        w.wake();
                    }
                    Slot::none()
                });
                Suspension::Foreign(mailbox)
            }
        };
        note_awaiting(&inner);
        this.suspended = Some(suspension);
        Poll::Pending
    }
}

/// What the link of a suspended await in a coroutine holds.
struct TicketLink {
    co: Rc<Coroutine>,
    ticket: u64,
}

impl Drop for TicketLink {
    fn drop(&mut self) {
        // Run or dropped unrun (its Deferred freed), the link will deliver
        // nothing more: a dropped await needs no reminder any longer.
        let mut forgotten = self.co.forgotten.borrow_mut();
        if let Some(i) = forgotten.iter().position(|&t| t == self.ticket) {
            forgotten.swap_remove(i);
        }
    }
}

impl<T> Drop for DeferredFuture<T> {
    fn drop(&mut self) {
        // An await given up before its delivery (its future dropped, by a
        // `select` or with its coroutine) leaves nothing in the inbox.
        if let Some(Suspension::Coroutine(co, ticket)) = &self.suspended
            && let Some(co) = co.upgrade()
        {
            co.forget_ticket(*ticket);
        }
    }
}

/// Records, for the coroutine being polled, that it awaits `inner`.
fn note_awaiting(inner: &Rc<Inner>) {
    CURRENT.with(|c| {
        if let Some(co) = c.borrow().as_ref() {
            co.awaiting_now.borrow_mut().push(inner.clone());
        }
    });
}

/// The result of a Deferred that has one, leaving it in place.
fn take_now<T: Clone + 'static>(d: &Deferred<T>) -> Result<T, Failure> {
    match d.result() {
        State::Value(v) => Ok(v),
        State::Failure(f) => Err(d.inner().take_awaited_failure(f)),
        State::Waiting(other) => value_as::<T>(Slot::Deferred(other.inner().clone())),
        State::OtherType(found) => Err(Failure::new(crate::errors::ResultTypeError {
            expected: std::any::type_name::<T>(),
            found,
        })),
        // `awaitable_now` excluded these.
        State::Pending | State::InUse => Err(Failure::new(AssertionError::new(
            "awaited a Deferred without a result",
        ))),
    }
}

/// A Deferred fired by a future that is not a Deferred, polled as a
/// coroutine: `Deferred.fromFuture` for Rust futures. Cancelling the
/// Deferred drops the future and fails with `CancelledError`, so a coroutine
/// awaiting it sees the `CancelledError` at that await.
///
/// ```
/// use futures::channel::oneshot;
/// use twisted_deferred::{ensure_deferred, from_future, Failure};
///
/// let (tx, rx) = oneshot::channel::<u8>();
/// let d = ensure_deferred(async move {
///     let v = from_future(async move { rx.await.map_err(Failure::new) }).await?;
///     Ok::<_, Failure>(v * 2)
/// });
/// tx.send(21).unwrap();                 // wakes it on this thread: resumes now
/// assert_eq!(d.result().value(), Some(42));
/// ```
#[track_caller]
pub fn from_future<T, F>(future: F) -> Deferred<T>
where
    T: 'static,
    F: Future<Output = Result<T, Failure>> + 'static,
{
    let d: Deferred<T> = ensure_deferred(future);
    // A coroutine that never awaited a Deferred, cancelled from outside,
    // drops its future and fails with CancelledError (see the module docs).
    d
}

impl<T: 'static> Deferred<T> {
    /// The result as an [`AnyValue`] future, for code awaiting Deferreds of
    /// types that are not `Clone` as dynamic values.
    #[track_caller]
    pub fn into_any_future(self) -> DeferredFuture<AnyValue> {
        self.as_any().into_future()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::IntoFuture;

    /// The coroutine being polled, seen from inside it.
    fn this_coroutine() -> Weak<Coroutine> {
        CURRENT.with(|c| Rc::downgrade(c.borrow().as_ref().expect("inside a coroutine")))
    }

    /// The first of two awaits to finish; the other is dropped.
    async fn first_of(a: Deferred<i32>, b: Deferred<i32>) -> Result<i32, Failure> {
        let mut a = Some(a.into_future());
        let mut b = Some(b.into_future());
        std::future::poll_fn(move |cx| {
            let mut won = None;
            for side in [&mut a, &mut b] {
                if let Some(f) = side.as_mut()
                    && let Poll::Ready(r) = Pin::new(f).poll(cx)
                {
                    won = Some(r);
                    break;
                }
            }
            match won {
                Some(r) => {
                    // The loser's await is dropped here, still suspended.
                    a = None;
                    b = None;
                    Poll::Ready(r)
                }
                None => Poll::Pending,
            }
        })
        .await
    }

    fn inbox_and_forgotten(co: &Weak<Coroutine>) -> (usize, usize) {
        let co = co.upgrade().expect("alive");
        (co.inbox.borrow().len(), co.forgotten.borrow().len())
    }

    #[test]
    fn awaits_dropped_before_delivery_leave_nothing_behind() {
        let (a, b, c, e, g) = (
            Deferred::<i32>::new(),
            Deferred::<i32>::new(),
            Deferred::<i32>::new(),
            Deferred::<i32>::new(),
            Deferred::<i32>::new(),
        );
        let seen: Rc<RefCell<Option<Weak<Coroutine>>>> = Rc::default();
        let (a2, b2, c2, e2, g2) = (a.clone(), b.clone(), c.clone(), e.clone(), g.clone());
        let seen2 = seen.clone();
        let d = ensure_deferred(async move {
            *seen2.borrow_mut() = Some(this_coroutine());
            let first = first_of(a2, b2).await?;
            let second = first_of(c2, e2).await?;
            let third = g2.await?;
            Ok::<_, Failure>(first * 100 + second * 10 + third)
        });
        let co = seen.borrow().clone().expect("the coroutine ran");
        assert_eq!(inbox_and_forgotten(&co), (0, 0));

        // `a` wins: `b`'s await is dropped while its link waits on `b`.
        a.callback(1).unwrap();
        assert_eq!(inbox_and_forgotten(&co), (0, 1));
        // `b` fires later: its delivery is discarded, the reminder goes.
        b.callback(2).unwrap();
        assert_eq!(inbox_and_forgotten(&co), (0, 0));
        assert!(!d.called());

        // `c` wins; `e` is freed unfired, which drops its link unrun.
        c.callback(3).unwrap();
        assert_eq!(inbox_and_forgotten(&co), (0, 1));
        drop(e);
        assert_eq!(inbox_and_forgotten(&co), (0, 0));
        assert!(!d.called());

        g.callback(4).unwrap();
        assert_eq!(d.result().value(), Some(134));
        assert!(co.upgrade().is_none(), "the finished coroutine is freed");
    }
}

#[cfg(test)]
mod waker_reuse {
    use super::*;

    /// The waker allocation under the key of the coroutine made last.
    fn last_waker() -> (u32, *const CoroutineWaker) {
        REGISTRY.with(|r| {
            let r = r.borrow();
            let key = r.slots.len() as u32 - 1;
            let w = r.slots[key as usize].waker.as_ref().expect("a waker");
            (key, Arc::as_ptr(w))
        })
    }

    #[test]
    fn a_finished_coroutines_waker_is_reused_only_when_nothing_else_holds_it() {
        // A coroutine that finishes at once leaves its key and its waker.
        let a = ensure_deferred(async { Ok::<_, Failure>(1) });
        assert_eq!(a.result().value(), Some(1));
        let (key_a, waker_a) = last_waker();
        let b = ensure_deferred(async { Ok::<_, Failure>(2) });
        assert_eq!(b.result().value(), Some(2));
        let (key_b, waker_b) = last_waker();
        assert_eq!((key_b, waker_b), (key_a, waker_a), "the waker was reused");

        // One whose waker a foreign future kept: the next gets a new one.
        let kept: Rc<RefCell<Option<Waker>>> = Rc::default();
        let k = kept.clone();
        let c = ensure_deferred(std::future::poll_fn(move |cx| {
            *k.borrow_mut() = Some(cx.waker().clone());
            Poll::Ready(Ok::<_, Failure>(3))
        }));
        assert_eq!(c.result().value(), Some(3));
        let (key_c, waker_c) = last_waker();
        assert_eq!((key_c, waker_c), (key_a, waker_a));
        let d = ensure_deferred(async { Ok::<_, Failure>(4) });
        assert_eq!(d.result().value(), Some(4));
        let (key_d, waker_d) = last_waker();
        assert_eq!(key_d, key_a, "the key is reused");
        assert_ne!(waker_d, waker_a, "a waker still held elsewhere is not");
        // The kept waker still names the finished coroutine: waking it
        // resumes nothing.
        kept.borrow().as_ref().expect("kept").wake_by_ref();
    }
}
