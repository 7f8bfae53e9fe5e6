//! [`DeferredLock`]: Twisted's `twisted.internet.defer.DeferredLock`, and
//! [`ConcurrencyPrimitive`], Twisted's `_ConcurrencyPrimitive`: what the lock
//! and [`DeferredSemaphore`](crate::DeferredSemaphore) share (`run`, and
//! `async with` support through [`Guard`]).
//!
//! # `async with lock:`
//!
//! Python's `async with lock:` awaits `lock.acquire()` on entry and calls
//! `lock.release()` on exit, whatever happens in the block. This port offers
//! two spellings:
//!
//! * [`acquire_guard`](DeferredLock::acquire_guard)`().await?` gives a
//!   [`Guard`] that releases when dropped, at the end of the scope or when
//!   `?` leaves it early. Dropping cannot report an error, so a failing
//!   release (the lock was already released by hand) is logged; end the block
//!   with [`Guard::release`]`()?` to have it raised, as `__aexit__` raises it.
//! * [`run_async`](DeferredLock::run_async)`(|| async { … })` acquires, runs
//!   the coroutine and releases on either outcome, raising a failed release;
//!   it is `lock.run(async_function)`.
//!
//! ```
//! use twisted_deferred::{ensure_deferred, DeferredLock, Failure};
//!
//! let lock = DeferredLock::new();
//! let l = lock.clone();
//! // async def f():
//! //     async with lock:
//! //         return lock.locked
//! let d = ensure_deferred(async move {
//!     let _guard = l.acquire_guard().await?;
//!     Ok::<_, Failure>(l.locked())
//! });
//! assert_eq!(d.result().value(), Some(true));
//! assert!(!lock.locked());
//! ```

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::coroutine::{DeferredFuture, ensure_deferred};
use crate::deferred::{Deferred, Outcome};
use crate::errors::AssertionError;
use crate::failure::Failure;
use crate::immediate::{maybe_deferred, succeed};

/// What [`DeferredLock`] and [`DeferredSemaphore`](crate::DeferredSemaphore)
/// have in common: Twisted's `_ConcurrencyPrimitive`. Implement
/// [`acquire`](ConcurrencyPrimitive::acquire) and
/// [`release`](ConcurrencyPrimitive::release); `run`, `run_async` and
/// `acquire_guard` come with it. Both primitives also have these methods as
/// inherent methods, so the trait is needed only by code generic over them.
///
/// ```
/// use twisted_deferred::{ConcurrencyPrimitive, DeferredLock, DeferredSemaphore};
///
/// // def guarded(p): return p.run(lambda: 1)     (p: a lock or a semaphore)
/// fn guarded<P: ConcurrencyPrimitive>(p: &P) -> twisted_deferred::Deferred<i32> {
///     p.run(|| Ok(1))
/// }
/// assert_eq!(guarded(&DeferredLock::new()).result().value(), Some(1));
/// assert_eq!(guarded(&DeferredSemaphore::new(2).unwrap()).result().value(), Some(1));
/// ```
pub trait ConcurrencyPrimitive: Clone + fmt::Debug + 'static {
    /// `acquire()`: a Deferred that fires with the primitive once it is
    /// acquired (at once, if it is free).
    ///
    /// ```
    /// use twisted_deferred::{ConcurrencyPrimitive, DeferredLock};
    /// let lock = DeferredLock::new();
    /// let d = ConcurrencyPrimitive::acquire(&lock);       // d = lock.acquire()
    /// assert!(d.called());
    /// ```
    fn acquire(&self) -> Deferred<Self>;

    /// `release()`: gives the primitive back, handing it to the first waiter
    /// if there is one.
    ///
    /// ```
    /// use twisted_deferred::{ConcurrencyPrimitive, DeferredLock};
    /// let lock = DeferredLock::new();
    /// lock.acquire();
    /// ConcurrencyPrimitive::release(&lock).unwrap();      // lock.release()
    /// assert!(!lock.locked());
    /// ```
    fn release(&self) -> Result<(), Failure>;

    /// `run(f)`: acquires, then calls `f` through
    /// [`maybe_deferred`](crate::maybe_deferred), releases once its outcome is
    /// known (value or failure, at once or when a returned Deferred fires) and
    /// returns a Deferred of that outcome.
    ///
    /// The Deferred returned is the acquire Deferred itself (Python's
    /// `self.acquire().addCallback(execute)`), so while it waits it is in the
    /// wait list, and cancelling it then withdraws the request without
    /// calling `f`. Once `f` runs, cancelling it cancels the Deferred `f`
    /// returned. A failing release (`f` released the primitive itself)
    /// replaces `f`'s outcome with that failure.
    ///
    /// ```
    /// use twisted_deferred::{ConcurrencyPrimitive, DeferredLock};
    /// let lock = DeferredLock::new();
    /// let d = ConcurrencyPrimitive::run(&lock, || Ok(42));  // d = lock.run(lambda: 42)
    /// assert_eq!(d.result().value(), Some(42));
    /// assert!(!lock.locked());
    /// ```
    fn run<T, F, R>(&self, f: F) -> Deferred<T>
    where
        T: 'static,
        F: FnOnce() -> R + 'static,
        R: Into<Outcome<T>>,
    {
        self.acquire().add_callback(move |this: Self| {
            // `maybeDeferred(f).addBoth(self._releaseAndReturn)`
            maybe_deferred(f).add_both(move |outcome: Result<T, Failure>| {
                this.release()?;
                outcome
            })
        })
    }

    /// `run(async_function)`: [`run`](ConcurrencyPrimitive::run) for a
    /// coroutine; `f` is called once the primitive is acquired and its future
    /// is run by [`ensure_deferred`](crate::ensure_deferred), as Python's
    /// `maybeDeferred` does with a coroutine.
    ///
    /// ```
    /// use twisted_deferred::{ConcurrencyPrimitive, DeferredLock, Failure};
    /// let lock = DeferredLock::new();
    /// // async def co(): return "coro result"
    /// // d = lock.run(co)
    /// let d = ConcurrencyPrimitive::run_async(&lock, || async { Ok::<_, Failure>("coro result") });
    /// assert_eq!(d.result().value(), Some("coro result"));
    /// ```
    fn run_async<T, F, Fut>(&self, f: F) -> Deferred<T>
    where
        T: 'static,
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = Result<T, Failure>> + 'static,
    {
        self.run(move || ensure_deferred(f()))
    }

    /// `async with primitive:`: a future that acquires the primitive (the
    /// request is made now, as `__aenter__` is called before it is awaited)
    /// and resolves to a [`Guard`] releasing it on drop.
    ///
    /// ```
    /// use twisted_deferred::{ensure_deferred, ConcurrencyPrimitive, DeferredLock, Failure};
    /// let lock = DeferredLock::new();
    /// let l = lock.clone();
    /// let d = ensure_deferred(async move {
    ///     let _g = ConcurrencyPrimitive::acquire_guard(&l).await?;   // async with lock:
    ///     Ok::<_, Failure>(l.locked())
    /// });
    /// assert_eq!(d.result().value(), Some(true));
    /// assert!(!lock.locked());
    /// ```
    fn acquire_guard(&self) -> GuardFuture<Self> {
        GuardFuture::new(self)
    }
}

struct LockState {
    locked: Cell<bool>,
    waiting: RefCell<VecDeque<Deferred<DeferredLock>>>,
}

/// A lock for event-driven code: Twisted's `DeferredLock`.
///
/// [`acquire`](DeferredLock::acquire) returns a Deferred that fires with the
/// lock once it is held: at once when the lock is free, otherwise when it
/// reaches the front of the FIFO wait list. [`release`](DeferredLock::release)
/// hands the lock to the first waiter by firing its Deferred right there,
/// inside `release()`, so the waiter's callbacks run before `release()`
/// returns. A waiting acquire can be cancelled; it then leaves the wait list
/// and fails with [`CancelledError`](crate::CancelledError).
///
/// A `DeferredLock` is a cheap handle (one reference count); clones are the
/// same lock.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use twisted_deferred::DeferredLock;
///
/// let lock = DeferredLock::new();                         // lock = DeferredLock()
/// let log = Rc::new(RefCell::new(Vec::new()));
/// lock.acquire();                                         // lock.acquire()
/// let l = log.clone();
/// // lock.acquire().addCallback(lambda _: log.append("waiter"))
/// lock.acquire().add_callback(move |_| { l.borrow_mut().push("waiter"); Ok(()) });
/// log.borrow_mut().push("release start");
/// lock.release().unwrap();                                // lock.release()
/// log.borrow_mut().push("release end");
/// assert_eq!(*log.borrow(), ["release start", "waiter", "release end"]);
/// assert!(lock.locked());                                 // handed over, still locked
/// ```
#[derive(Clone)]
pub struct DeferredLock {
    state: Rc<LockState>,
}

impl DeferredLock {
    /// `DeferredLock()`: a new, unlocked lock.
    ///
    /// ```
    /// let lock = twisted_deferred::DeferredLock::new();   // lock = DeferredLock()
    /// assert!(!lock.locked());
    /// ```
    pub fn new() -> Self {
        DeferredLock {
            state: Rc::new(LockState {
                locked: Cell::new(false),
                waiting: RefCell::new(VecDeque::new()),
            }),
        }
    }

    /// `lock.locked`: true while someone holds the lock.
    ///
    /// ```
    /// let lock = twisted_deferred::DeferredLock::new();
    /// lock.acquire();
    /// assert!(lock.locked());                             // lock.locked
    /// ```
    pub fn locked(&self) -> bool {
        self.state.locked.get()
    }

    /// `len(lock.waiting)`: how many acquires wait for the lock.
    ///
    /// ```
    /// let lock = twisted_deferred::DeferredLock::new();
    /// lock.acquire();
    /// lock.acquire();
    /// assert_eq!(lock.waiting(), 1);                      // len(lock.waiting)
    /// ```
    pub fn waiting(&self) -> usize {
        self.state.waiting.borrow().len()
    }

    /// `acquire()`: when the lock is free, locks it and returns a Deferred
    /// already fired with the lock; otherwise returns an unfired Deferred at
    /// the end of the wait list, fired with the lock when its turn comes.
    /// Cancelling that Deferred while it waits removes it from the list (it
    /// fails with `CancelledError`); cancelling it once it has the lock does
    /// nothing.
    ///
    /// ```
    /// use twisted_deferred::{CancelledError, DeferredLock};
    /// let lock = DeferredLock::new();
    /// let d1 = lock.acquire();                            // d1 = lock.acquire()
    /// let d2 = lock.acquire();                            // d2 = lock.acquire()
    /// assert!(d1.result().value().unwrap().ptr_eq(&lock)); // d1.result is lock
    /// assert!(!d2.called());
    /// d2.cancel().unwrap();                               // d2.cancel()
    /// assert!(d2.result().failure().unwrap().check::<CancelledError>());
    /// assert_eq!(lock.waiting(), 0);
    /// # d2.add_errback(move |_| Ok(lock.clone()));
    /// ```
    pub fn acquire(&self) -> Deferred<DeferredLock> {
        if self.state.locked.get() {
            let state = Rc::downgrade(&self.state);
            let d = Deferred::with_canceller(move |d: &Deferred<DeferredLock>| {
                // `_cancelAcquire`: `self.waiting.remove(d)`
                if let Some(state) = state.upgrade() {
                    remove_waiter(&state.waiting, d);
                }
            });
            self.state.waiting.borrow_mut().push_back(d.clone());
            d
        } else {
            self.state.locked.set(true);
            // `Deferred(canceller)` then `callback(self)`: the canceller is
            // dropped at once, so a fired Deferred is all that is left.
            succeed(self.clone())
        }
    }

    /// `release()`: if someone waits, the lock stays locked and the first
    /// waiter's Deferred is fired with it before `release()` returns;
    /// otherwise the lock becomes unlocked.
    ///
    /// Releasing an unlocked lock is Twisted's `AssertionError("Tried to
    /// release an unlocked lock")`: an `Err` holding an
    /// [`AssertionError`](crate::AssertionError) with that message. Firing the
    /// waiter fails with [`AlreadyCalledError`](crate::AlreadyCalledError) if
    /// someone fired its Deferred by hand: the waiter is dropped and the lock
    /// stays locked, as in Twisted.
    ///
    /// ```
    /// use twisted_deferred::{AssertionError, DeferredLock};
    /// let lock = DeferredLock::new();
    /// lock.acquire();
    /// lock.release().unwrap();                            // lock.release()
    /// let err = lock.release().unwrap_err();              // raises AssertionError
    /// assert_eq!(err.downcast_ref::<AssertionError>().unwrap().message,
    ///            "Tried to release an unlocked lock");
    /// ```
    pub fn release(&self) -> Result<(), Failure> {
        if !self.state.locked.get() {
            return Err(Failure::new(AssertionError::new(
                "Tried to release an unlocked lock",
            )));
        }
        self.state.locked.set(false);
        let next = self.state.waiting.borrow_mut().pop_front();
        if let Some(d) = next {
            self.state.locked.set(true);
            hand_off(&self.state.waiting, d, self.clone())?;
        }
        Ok(())
    }

    /// `run(f)`: see [`ConcurrencyPrimitive::run`]. The closure stands for
    /// `f, *args, **kwargs`.
    ///
    /// ```
    /// use twisted_deferred::{Deferred, DeferredLock};
    /// let lock = DeferredLock::new();
    /// let ctl: Deferred<&str> = Deferred::new();
    /// let c = ctl.clone();
    /// let r = lock.run(move || c);                        // r = lock.run(lambda: ctl)
    /// assert!(lock.locked());                             // held until ctl fires
    /// ctl.callback("v").unwrap();
    /// assert_eq!(r.result().value(), Some("v"));
    /// assert!(!lock.locked());
    /// ```
    pub fn run<T, F, R>(&self, f: F) -> Deferred<T>
    where
        T: 'static,
        F: FnOnce() -> R + 'static,
        R: Into<Outcome<T>>,
    {
        ConcurrencyPrimitive::run(self, f)
    }

    /// `run(async_function)`: see [`ConcurrencyPrimitive::run_async`].
    ///
    /// ```
    /// use twisted_deferred::{DeferredLock, Failure};
    /// let lock = DeferredLock::new();
    /// let d = lock.run_async(|| async { Ok::<_, Failure>(1) });   // lock.run(returnsCoroInt)
    /// assert_eq!(d.result().value(), Some(1));
    /// assert!(!lock.locked());
    /// ```
    pub fn run_async<T, F, Fut>(&self, f: F) -> Deferred<T>
    where
        T: 'static,
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = Result<T, Failure>> + 'static,
    {
        ConcurrencyPrimitive::run_async(self, f)
    }

    /// `async with lock:`: see [`ConcurrencyPrimitive::acquire_guard`] and
    /// [`Guard`].
    ///
    /// ```
    /// use twisted_deferred::{ensure_deferred, DeferredLock, Failure};
    /// let lock = DeferredLock::new();
    /// let l = lock.clone();
    /// let d = ensure_deferred(async move {
    ///     let guard = l.acquire_guard().await?;           // async with lock:
    ///     assert!(l.locked());
    ///     guard.release()                                 // (end of the block)
    /// });
    /// assert!(d.result().value().is_some());
    /// assert!(!lock.locked());
    /// ```
    pub fn acquire_guard(&self) -> GuardFuture<DeferredLock> {
        GuardFuture::new(self)
    }

    /// True when both handles are the same lock (Python's `is`).
    ///
    /// ```
    /// let lock = twisted_deferred::DeferredLock::new();
    /// assert!(lock.ptr_eq(&lock.clone()));                // lock is lock
    /// assert!(!lock.ptr_eq(&twisted_deferred::DeferredLock::new()));
    /// ```
    pub fn ptr_eq(&self, other: &DeferredLock) -> bool {
        Rc::ptr_eq(&self.state, &other.state)
    }
}

impl Default for DeferredLock {
    fn default() -> Self {
        DeferredLock::new()
    }
}

impl ConcurrencyPrimitive for DeferredLock {
    fn acquire(&self) -> Deferred<Self> {
        DeferredLock::acquire(self)
    }

    fn release(&self) -> Result<(), Failure> {
        DeferredLock::release(self)
    }
}

impl fmt::Debug for DeferredLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredLock")
            .field("locked", &self.locked())
            .field("waiting", &self.waiting())
            .finish()
    }
}

/// The wait lists' `waiting.remove(d)`: drops `d` from `waiting` (after the
/// borrow ends, as dropping a Deferred handle may run code).
pub(crate) fn remove_waiter<T: 'static>(waiting: &RefCell<VecDeque<Deferred<T>>>, d: &Deferred<T>) {
    let removed = {
        let mut waiting = waiting.borrow_mut();
        waiting
            .iter()
            .position(|w| w.ptr_eq(d))
            .and_then(|i| waiting.remove(i))
    };
    drop(removed);
}

/// `waiting.pop(0).callback(value)` for a waiter already popped off
/// `waiting`. When the callbacks are too deeply nested to run
/// ([`RecursionError`](crate::RecursionError)), the waiter is nonetheless
/// handed the value (its callbacks run on its next trigger), as when
/// Python's recursion limit strikes inside `callback`; a Deferred fired by
/// hand meanwhile ([`AlreadyCalledError`](crate::AlreadyCalledError)) is
/// dropped, as in Twisted. Either way the error is returned. A waiter that
/// could not be fired at all goes back to the front of the list.
pub(crate) fn hand_off<T: 'static>(
    waiting: &RefCell<VecDeque<Deferred<T>>>,
    d: Deferred<T>,
    value: T,
) -> Result<(), Failure> {
    match d.callback(value) {
        Ok(()) => Ok(()),
        Err(f) => {
            if !d.called() {
                waiting.borrow_mut().push_front(d);
            }
            Err(f)
        }
    }
}

/// The future of [`acquire_guard`](ConcurrencyPrimitive::acquire_guard):
/// Python's `await primitive.__aenter__()`. Resolves to a [`Guard`], or to
/// the failure of the acquire Deferred (a `CancelledError` when the
/// coroutine awaiting it was cancelled while it waited, which also withdraws
/// the request from the wait list).
///
/// Dropped before it resolved, it withdraws the request (cancelling the
/// waiting acquire) or, if the primitive was handed to it meanwhile,
/// releases it, so an abandoned future never keeps a lock.
///
/// ```
/// use twisted_deferred::DeferredLock;
/// let lock = DeferredLock::new();
/// lock.acquire();
/// let pending = lock.acquire_guard();                 // queued behind the holder
/// assert_eq!(lock.waiting(), 1);
/// drop(pending);                                      // withdraws the request
/// assert_eq!(lock.waiting(), 0);
/// ```
pub struct GuardFuture<P: ConcurrencyPrimitive> {
    /// `Some` until the future resolved.
    primitive: Option<P>,
    /// Set by a callback on the acquire Deferred when it fires with the
    /// primitive (that is, when this request holds it).
    acquired: Rc<Cell<bool>>,
    /// The acquire Deferred, after that callback.
    deferred: Deferred<()>,
    future: DeferredFuture<()>,
}

impl<P: ConcurrencyPrimitive> GuardFuture<P> {
    fn new(primitive: &P) -> Self {
        let acquired = Rc::new(Cell::new(false));
        let flag = acquired.clone();
        let deferred = primitive.acquire().add_callback(move |_: P| {
            flag.set(true);
            Ok(())
        });
        GuardFuture {
            primitive: Some(primitive.clone()),
            acquired,
            future: deferred.clone().into_future(),
            deferred,
        }
    }
}

// No field is structurally pinned: the future is only reached through
// `&mut`, and `DeferredFuture` is `Unpin`.
impl<P: ConcurrencyPrimitive> Unpin for GuardFuture<P> {}

impl<P: ConcurrencyPrimitive> Future for GuardFuture<P> {
    type Output = Result<Guard<P>, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(primitive) = this.primitive.take() else {
            return Poll::Ready(Err(Failure::new(AssertionError::new(
                "GuardFuture polled after it completed",
            ))));
        };
        let outcome = match Pin::new(&mut this.future).poll(cx) {
            Poll::Pending => {
                this.primitive = Some(primitive);
                return Poll::Pending;
            }
            Poll::Ready(outcome) => outcome,
        };
        Poll::Ready(match outcome {
            Ok(()) => Ok(Guard {
                primitive,
                released: false,
            }),
            Err(f) => {
                if this.acquired.get() {
                    // Held, yet failed afterwards: never keep it.
                    release_dropped(&primitive);
                }
                Err(f)
            }
        })
    }
}

impl<P: ConcurrencyPrimitive> Drop for GuardFuture<P> {
    fn drop(&mut self) {
        let Some(primitive) = self.primitive.take() else {
            return;
        };
        if self.acquired.get() {
            release_dropped(&primitive);
        } else {
            // Withdraw the request; nobody will look at its failure.
            self.deferred.add_errback(|_| Ok(()));
            let _ = self.deferred.cancel();
        }
    }
}

impl<P: ConcurrencyPrimitive> fmt::Debug for GuardFuture<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardFuture")
            .field("primitive", &self.primitive)
            .field("acquired", &self.acquired.get())
            .finish()
    }
}

/// A held [`DeferredLock`] or [`DeferredSemaphore`](crate::DeferredSemaphore)
/// token, released when the guard is dropped: the body of Python's
/// `async with primitive:`.
///
/// A release failing on drop (the primitive was released by hand already)
/// is logged at error level; [`Guard::release`] returns that failure
/// instead, which is what `__aexit__` does.
///
/// ```
/// use twisted_deferred::{ensure_deferred, DeferredSemaphore, Failure};
/// let sem = DeferredSemaphore::new(3).unwrap();           // sem = DeferredSemaphore(3)
/// let s = sem.clone();
/// let d = ensure_deferred(async move {
///     let _outer = s.acquire_guard().await?;              // async with sem:
///     let inner = s.acquire_guard().await?;               //     async with sem:
///     assert_eq!(inner.primitive().tokens(), 1);
///     drop(inner);
///     Ok::<_, Failure>(s.tokens())
/// });
/// assert_eq!(d.result().value(), Some(2));
/// assert_eq!(sem.tokens(), 3);
/// ```
pub struct Guard<P: ConcurrencyPrimitive> {
    primitive: P,
    released: bool,
}

impl<P: ConcurrencyPrimitive> Guard<P> {
    /// The primitive held (what `async with lock as l` binds to `l`).
    ///
    /// ```
    /// use twisted_deferred::{ensure_deferred, DeferredLock, Failure};
    /// let lock = DeferredLock::new();
    /// let l = lock.clone();
    /// let d = ensure_deferred(async move {
    ///     let g = l.acquire_guard().await?;               // async with lock as held:
    ///     Ok::<_, Failure>(g.primitive().ptr_eq(&l))      //     held is lock
    /// });
    /// assert_eq!(d.result().value(), Some(true));
    /// ```
    pub fn primitive(&self) -> &P {
        &self.primitive
    }

    /// Leaves the block: `__aexit__`, which releases and raises what
    /// `release()` raises.
    ///
    /// ```
    /// use twisted_deferred::{ensure_deferred, AssertionError, DeferredLock, Failure};
    /// let lock = DeferredLock::new();
    /// let l = lock.clone();
    /// // async with lock:
    /// //     lock.release()        # then __aexit__ raises AssertionError
    /// let d = ensure_deferred(async move {
    ///     let guard = l.acquire_guard().await?;
    ///     l.release()?;
    ///     guard.release()
    /// });
    /// let f = d.result().failure().unwrap();
    /// assert_eq!(f.message(), "Tried to release an unlocked lock");
    /// # d.add_errback(|_| Ok(()));
    /// ```
    pub fn release(mut self) -> Result<(), Failure> {
        self.released = true;
        self.primitive.release()
    }
}

impl<P: ConcurrencyPrimitive> Drop for Guard<P> {
    fn drop(&mut self) {
        if !self.released {
            self.released = true;
            release_dropped(&self.primitive);
        }
    }
}

impl<P: ConcurrencyPrimitive> fmt::Debug for Guard<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("primitive", &self.primitive)
            .finish()
    }
}

/// A release nobody can be told about fails: log it.
fn release_dropped<P: ConcurrencyPrimitive>(primitive: &P) {
    if let Err(f) = primitive.release() {
        log::error!("releasing {primitive:?} at the end of its guard failed: {f}");
    }
}
