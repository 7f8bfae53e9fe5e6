//! Synapse's `synapse.util.async_helpers.DeferredEvent`: Python's
//! `threading.Event` for async code.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::rc::Rc;

use twisted_deferred::{Deferred, Failure, TimeoutError};

use crate::cancellation::stop_cancellation;
use crate::clock::Clock;
use crate::logcontext::{PreserveLoggingContext, make_deferred_yieldable};
use crate::timeout::timeout_deferred;

struct Inner {
    clock: Clock,
    /// `_deferred`: called once the event is set; replaced by `clear()`.
    deferred: RefCell<Deferred<()>>,
}

/// Synapse's `DeferredEvent`: a flag that coroutines can wait for, with a
/// timeout.
///
/// A cheap handle: clones share the same event.
///
/// ```
/// use twisted_compat::{Clock, DeferredEvent, Failure};
/// use twisted_deferred::ensure_deferred;
///
/// let reactor = twisted_reactor::Clock::new();
/// let event = DeferredEvent::new(&Clock::new(reactor.clone(), "hs"));  // event = DeferredEvent(clock)
/// let e = event.clone();
/// let d = ensure_deferred(async move { e.wait(10.0).await });           // await event.wait(10)
/// assert!(!d.called());
/// event.set();                                                          // event.set()
/// assert_eq!(d.result().value(), Some(true));
/// ```
#[derive(Clone)]
pub struct DeferredEvent {
    inner: Rc<Inner>,
}

impl fmt::Debug for DeferredEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredEvent")
            .field("is_set", &self.is_set())
            .finish_non_exhaustive()
    }
}

impl DeferredEvent {
    /// `DeferredEvent(clock)`: a new event, not set.
    ///
    /// ```
    /// use twisted_compat::{Clock, DeferredEvent};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let event = DeferredEvent::new(&clock);            // DeferredEvent(clock)
    /// assert!(!event.is_set());
    /// ```
    pub fn new(clock: &Clock) -> Self {
        DeferredEvent {
            inner: Rc::new(Inner {
                clock: clock.clone(),
                deferred: RefCell::new(Deferred::new()),
            }),
        }
    }

    /// `set()`: sets the event, waking every waiter now, in the sentinel
    /// logging context. Setting a set event does nothing.
    ///
    /// ```
    /// use twisted_compat::{Clock, DeferredEvent};
    /// let event = DeferredEvent::new(&Clock::new(twisted_reactor::Clock::new(), "hs"));
    /// event.set();                                        // event.set()
    /// event.set();                                        // idempotent
    /// assert!(event.is_set());
    /// ```
    pub fn set(&self) {
        let deferred = self.inner.deferred.borrow().clone();
        if !deferred.called() {
            let _preserve = PreserveLoggingContext::sentinel();
            let _ = deferred.callback(());
        }
    }

    /// `clear()`: unsets a set event (waiters from then on wait for the next
    /// `set()`); does nothing to an event that is not set.
    ///
    /// ```
    /// use twisted_compat::{Clock, DeferredEvent};
    /// let event = DeferredEvent::new(&Clock::new(twisted_reactor::Clock::new(), "hs"));
    /// event.set();
    /// event.clear();                                      // event.clear()
    /// assert!(!event.is_set());
    /// ```
    pub fn clear(&self) {
        let called = self.inner.deferred.borrow().called();
        if called {
            *self.inner.deferred.borrow_mut() = Deferred::new();
        }
    }

    /// `is_set()`.
    ///
    /// ```
    /// use twisted_compat::{Clock, DeferredEvent};
    /// let event = DeferredEvent::new(&Clock::new(twisted_reactor::Clock::new(), "hs"));
    /// assert!(!event.is_set());                           // event.is_set()
    /// ```
    pub fn is_set(&self) -> bool {
        self.inner.deferred.borrow().called()
    }

    /// `await event.wait(timeout_seconds)`: `Ok(true)` at once if the event
    /// is set; otherwise waits (in the sentinel logging context, resuming in
    /// the caller's) for [`set`](DeferredEvent::set) or the timeout, and
    /// returns [`is_set`](DeferredEvent::is_set) then (`false` after a
    /// timeout). Cancelling the coroutine that awaits it fails it with
    /// `CancelledError`. Nothing happens until the future is first polled.
    ///
    /// ```
    /// use twisted_compat::{Clock, DeferredEvent};
    /// use twisted_deferred::ensure_deferred;
    ///
    /// let reactor = twisted_reactor::Clock::new();
    /// let event = DeferredEvent::new(&Clock::new(reactor.clone(), "hs"));
    /// let e = event.clone();
    /// let d = ensure_deferred(async move { e.wait(1.0).await });  // await event.wait(1)
    /// reactor.advance(1.0).unwrap();
    /// assert_eq!(d.result().value(), Some(false));                // timed out
    /// ```
    pub fn wait(
        &self,
        timeout_seconds: f64,
    ) -> impl Future<Output = Result<bool, Failure>> + 'static {
        let this = self.clone();
        async move {
            if this.is_set() {
                return Ok(true);
            }
            let current = this.inner.deferred.borrow().clone();
            let waited = make_deferred_yieldable(timeout_deferred(
                stop_cancellation(&current),
                timeout_seconds,
                &this.inner.clock,
            ))
            .await;
            match waited {
                Ok(()) => {}
                Err(f) if f.check::<TimeoutError>() => {}
                Err(f) => return Err(f),
            }
            Ok(this.is_set())
        }
    }
}
