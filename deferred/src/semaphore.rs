//! [`DeferredSemaphore`]: Twisted's `twisted.internet.defer.DeferredSemaphore`,
//! a counting semaphore for event-driven code, and [`InvalidTokensError`],
//! the `ValueError` its constructor raises.
//!
//! `run`, `run_async` and `async with` support (`acquire_guard`) work as for
//! [`DeferredLock`](crate::DeferredLock); see [`ConcurrencyPrimitive`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::rc::Rc;

use crate::deferred::{Deferred, Outcome};
use crate::errors::AssertionError;
use crate::failure::Failure;
use crate::immediate::succeed;
use crate::lock::{ConcurrencyPrimitive, GuardFuture, hand_off, remove_waiter};

/// `DeferredSemaphore(tokens)` with `tokens < 1`: Python raises
/// `ValueError("DeferredSemaphore requires tokens >= 1")`; this is that
/// error, with that message.
///
/// ```
/// use twisted_deferred::{DeferredSemaphore, InvalidTokensError};
/// let err = DeferredSemaphore::new(0).unwrap_err();       // DeferredSemaphore(0)
/// assert!(err.check::<InvalidTokensError>());             // raises ValueError
/// assert_eq!(err.message(), "DeferredSemaphore requires tokens >= 1");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvalidTokensError;

impl fmt::Display for InvalidTokensError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeferredSemaphore requires tokens >= 1")
    }
}
impl Error for InvalidTokensError {}

struct SemaphoreState {
    tokens: Cell<usize>,
    limit: usize,
    waiting: RefCell<VecDeque<Deferred<DeferredSemaphore>>>,
}

/// A semaphore for event-driven code: Twisted's `DeferredSemaphore`.
///
/// At most [`limit`](DeferredSemaphore::limit) users hold it at once;
/// [`tokens`](DeferredSemaphore::tokens) counts the free slots.
/// [`acquire`](DeferredSemaphore::acquire) takes a token at once if there is
/// one, otherwise waits in a FIFO list; [`release`](DeferredSemaphore::release)
/// hands the token to the first waiter by firing its Deferred right there,
/// inside `release()`. A waiting acquire can be cancelled; it then leaves the
/// wait list and fails with [`CancelledError`](crate::CancelledError).
///
/// A cheap handle (one reference count); clones are the same semaphore.
///
/// ```
/// use twisted_deferred::DeferredSemaphore;
///
/// let sem = DeferredSemaphore::new(2).unwrap();          // sem = DeferredSemaphore(2)
/// let (a, b, c) = (sem.acquire(), sem.acquire(), sem.acquire());
/// assert!(a.called() && b.called() && !c.called());
/// assert_eq!((sem.tokens(), sem.limit(), sem.waiting()), (0, 2, 1));
/// sem.release().unwrap();                                // sem.release(): c gets it
/// assert!(c.called());
/// assert_eq!(sem.tokens(), 0);
/// ```
#[derive(Clone)]
pub struct DeferredSemaphore {
    state: Rc<SemaphoreState>,
}

impl DeferredSemaphore {
    /// `DeferredSemaphore(tokens)`: `tokens` is both the initial number of
    /// free slots and the limit. Fails with [`InvalidTokensError`] (Python's
    /// `ValueError`) when `tokens` is 0; Python's negative counts cannot be
    /// written with a `usize`.
    ///
    /// ```
    /// use twisted_deferred::DeferredSemaphore;
    /// let sem = DeferredSemaphore::new(13).unwrap();      // sem = DeferredSemaphore(13)
    /// assert_eq!((sem.tokens(), sem.limit()), (13, 13));
    /// assert!(DeferredSemaphore::new(0).is_err());        // ValueError
    /// ```
    pub fn new(tokens: usize) -> Result<Self, Failure> {
        if tokens < 1 {
            return Err(Failure::new(InvalidTokensError));
        }
        Ok(DeferredSemaphore {
            state: Rc::new(SemaphoreState {
                tokens: Cell::new(tokens),
                limit: tokens,
                waiting: RefCell::new(VecDeque::new()),
            }),
        })
    }

    /// `sem.tokens`: the number of free slots (`limit` minus the holders).
    ///
    /// ```
    /// let sem = twisted_deferred::DeferredSemaphore::new(3).unwrap();
    /// sem.acquire();
    /// assert_eq!(sem.tokens(), 2);                         // sem.tokens
    /// ```
    pub fn tokens(&self) -> usize {
        self.state.tokens.get()
    }

    /// `sem.limit`: how many may hold the semaphore at once.
    ///
    /// ```
    /// let sem = twisted_deferred::DeferredSemaphore::new(3).unwrap();
    /// assert_eq!(sem.limit(), 3);                          // sem.limit
    /// ```
    pub fn limit(&self) -> usize {
        self.state.limit
    }

    /// `len(sem.waiting)`: how many acquires wait for a token.
    ///
    /// ```
    /// let sem = twisted_deferred::DeferredSemaphore::new(1).unwrap();
    /// sem.acquire();
    /// sem.acquire();
    /// assert_eq!(sem.waiting(), 1);                        // len(sem.waiting)
    /// ```
    pub fn waiting(&self) -> usize {
        self.state.waiting.borrow().len()
    }

    /// `acquire()`: takes a token and returns a Deferred already fired with
    /// the semaphore, or, with no token free, returns an unfired Deferred at
    /// the end of the wait list. Cancelling it while it waits removes it from
    /// the list (it fails with `CancelledError`); cancelling it once it has a
    /// token does nothing.
    ///
    /// ```
    /// use twisted_deferred::{CancelledError, DeferredSemaphore};
    /// let sem = DeferredSemaphore::new(1).unwrap();
    /// sem.acquire();                                       // sem.acquire()
    /// let d = sem.acquire();                               // d = sem.acquire()
    /// d.cancel().unwrap();                                 // d.cancel()
    /// assert!(d.result().failure().unwrap().check::<CancelledError>());
    /// assert_eq!(sem.waiting(), 0);
    /// # d.add_errback(move |_| Ok(sem.clone()));
    /// ```
    pub fn acquire(&self) -> Deferred<DeferredSemaphore> {
        // Twisted asserts "Internal inconsistency??  tokens should never be
        // negative" here; a `usize` cannot be.
        let tokens = self.state.tokens.get();
        if tokens == 0 {
            let state = Rc::downgrade(&self.state);
            let d = Deferred::with_canceller(move |d: &Deferred<DeferredSemaphore>| {
                // `_cancelAcquire`: `self.waiting.remove(d)`
                if let Some(state) = state.upgrade() {
                    remove_waiter(&state.waiting, d);
                }
            });
            self.state.waiting.borrow_mut().push_back(d.clone());
            d
        } else {
            self.state.tokens.set(tokens - 1);
            succeed(self.clone())
        }
    }

    /// `release()`: gives a token back; if someone waits, the token goes
    /// straight to the first waiter, whose Deferred fires before `release()`
    /// returns.
    ///
    /// Releasing when all tokens are free is Twisted's
    /// `AssertionError("Someone released me too many times: too many
    /// tokens!")`: an `Err` holding an [`AssertionError`] with that message.
    /// Firing the waiter fails with
    /// [`AlreadyCalledError`](crate::AlreadyCalledError) if someone fired its
    /// Deferred by hand (the token is then lost, as in Twisted).
    ///
    /// ```
    /// use twisted_deferred::DeferredSemaphore;
    /// let sem = DeferredSemaphore::new(1).unwrap();
    /// sem.acquire();
    /// sem.release().unwrap();                              // sem.release()
    /// let err = sem.release().unwrap_err();                // raises AssertionError
    /// assert_eq!(err.message(), "Someone released me too many times: too many tokens!");
    /// ```
    pub fn release(&self) -> Result<(), Failure> {
        let tokens = self.state.tokens.get();
        if tokens >= self.state.limit {
            return Err(Failure::new(AssertionError::new(
                "Someone released me too many times: too many tokens!",
            )));
        }
        let next = self.state.waiting.borrow_mut().pop_front();
        match next {
            // The token goes straight to the waiter: `tokens` is unchanged.
            Some(d) => hand_off(&self.state.waiting, d, self.clone()),
            None => {
                self.state.tokens.set(tokens + 1);
                Ok(())
            }
        }
    }

    /// `run(f)`: see [`ConcurrencyPrimitive::run`]. The closure stands for
    /// `f, *args, **kwargs`.
    ///
    /// ```
    /// use twisted_deferred::{DeferredSemaphore, Failure};
    /// let sem = DeferredSemaphore::new(2).unwrap();
    /// let r = sem.run(|| Err::<i32, _>(Failure::msg("division by zero")));  // sem.run(lambda: 1/0)
    /// assert!(r.result().failure().is_some());
    /// assert_eq!(sem.tokens(), 2);                         // released on failure too
    /// # r.add_errback(|_| Ok(0));
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
    /// use twisted_deferred::{DeferredSemaphore, Failure};
    /// let sem = DeferredSemaphore::new(1).unwrap();
    /// let d = sem.run_async(|| async { Ok::<_, Failure>(1) });  // sem.run(returnsCoroInt)
    /// assert_eq!(d.result().value(), Some(1));
    /// assert_eq!(sem.tokens(), 1);
    /// ```
    pub fn run_async<T, F, Fut>(&self, f: F) -> Deferred<T>
    where
        T: 'static,
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = Result<T, Failure>> + 'static,
    {
        ConcurrencyPrimitive::run_async(self, f)
    }

    /// `async with sem:`: see [`ConcurrencyPrimitive::acquire_guard`] and
    /// [`Guard`](crate::Guard).
    ///
    /// ```
    /// use twisted_deferred::{ensure_deferred, DeferredSemaphore, Failure};
    /// let sem = DeferredSemaphore::new(3).unwrap();
    /// let s = sem.clone();
    /// let d = ensure_deferred(async move {
    ///     let _g = s.acquire_guard().await?;               // async with sem:
    ///     Ok::<_, Failure>(s.tokens())
    /// });
    /// assert_eq!(d.result().value(), Some(2));
    /// assert_eq!(sem.tokens(), 3);
    /// ```
    pub fn acquire_guard(&self) -> GuardFuture<DeferredSemaphore> {
        ConcurrencyPrimitive::acquire_guard(self)
    }

    /// True when both handles are the same semaphore (Python's `is`).
    ///
    /// ```
    /// let sem = twisted_deferred::DeferredSemaphore::new(1).unwrap();
    /// let d = sem.acquire();
    /// assert!(d.result().value().unwrap().ptr_eq(&sem));  // d.result is sem
    /// ```
    pub fn ptr_eq(&self, other: &DeferredSemaphore) -> bool {
        Rc::ptr_eq(&self.state, &other.state)
    }
}

impl ConcurrencyPrimitive for DeferredSemaphore {
    fn acquire(&self) -> Deferred<Self> {
        DeferredSemaphore::acquire(self)
    }

    fn release(&self) -> Result<(), Failure> {
        DeferredSemaphore::release(self)
    }
}

impl fmt::Debug for DeferredSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredSemaphore")
            .field("tokens", &self.tokens())
            .field("limit", &self.limit())
            .field("waiting", &self.waiting())
            .finish()
    }
}
