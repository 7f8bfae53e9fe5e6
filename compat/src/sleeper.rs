//! Synapse's `synapse.util.async_helpers.AwakenableSleeper`: a sleep that
//! can be cut short by name.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::rc::Rc;

use twisted_deferred::{Deferred, Failure, TimeoutError};

use crate::cancellation::stop_cancellation;
use crate::clock::Clock;
use crate::logcontext::{PreserveLoggingContext, make_deferred_yieldable};
use crate::timeout::timeout_deferred;

struct Inner {
    /// `_streams`: the Deferreds of the sleepers of each name, in the order
    /// they went to sleep (keyed by a sequence number).
    streams: RefCell<HashMap<String, BTreeMap<u64, Deferred<()>>>>,
    clock: Clock,
    next: Cell<u64>,
}

/// Synapse's `AwakenableSleeper`: [`sleep`](AwakenableSleeper::sleep)
/// returns after a delay, or as soon as [`wake`](AwakenableSleeper::wake)
/// is called with the same name.
///
/// A cheap handle: clones share the same sleepers.
///
/// ```
/// use twisted_compat::{AwakenableSleeper, Clock, Failure};
/// use twisted_deferred::ensure_deferred;
///
/// let reactor = twisted_reactor::Clock::new();
/// let sleeper = AwakenableSleeper::new(&Clock::new(reactor.clone(), "hs"));  // AwakenableSleeper(clock)
/// let s = sleeper.clone();
/// // d = ensureDeferred(sleeper.sleep("remote", 1000))
/// let d = ensure_deferred(async move { s.sleep("remote", 1000).await });
/// reactor.advance(0.5).unwrap();
/// assert!(!d.called());
/// sleeper.wake("remote");                                 // sleeper.wake("remote")
/// assert!(d.called());
/// ```
#[derive(Clone)]
pub struct AwakenableSleeper {
    inner: Rc<Inner>,
}

impl fmt::Debug for AwakenableSleeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwakenableSleeper")
            .field("names", &self.inner.streams.borrow().len())
            .finish_non_exhaustive()
    }
}

impl AwakenableSleeper {
    /// `AwakenableSleeper(clock)`.
    ///
    /// ```
    /// use twisted_compat::{AwakenableSleeper, Clock};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let sleeper = AwakenableSleeper::new(&clock);      // AwakenableSleeper(clock)
    /// sleeper.wake("nobody");                             // nothing sleeps: nothing happens
    /// ```
    pub fn new(clock: &Clock) -> Self {
        AwakenableSleeper {
            inner: Rc::new(Inner {
                streams: RefCell::new(HashMap::new()),
                clock: clock.clone(),
                next: Cell::new(0),
            }),
        }
    }

    /// `wake(name)`: wakes every sleeper of `name` now, each in the sentinel
    /// logging context (they resume inside this call). An unknown name does
    /// nothing.
    ///
    /// ```
    /// use twisted_compat::{AwakenableSleeper, Clock, Failure};
    /// use twisted_deferred::ensure_deferred;
    ///
    /// let reactor = twisted_reactor::Clock::new();
    /// let sleeper = AwakenableSleeper::new(&Clock::new(reactor.clone(), "hs"));
    /// let (a, b) = (sleeper.clone(), sleeper.clone());
    /// let d1 = ensure_deferred(async move { a.sleep("name", 1000).await });
    /// let d2 = ensure_deferred(async move { b.sleep("name", 5000).await });
    /// sleeper.wake("name");                               // sleeper.wake("name")
    /// assert!(d1.called() && d2.called());                // both woken
    /// ```
    pub fn wake(&self, name: &str) {
        let stream_set = self.inner.streams.borrow_mut().remove(name);
        for (_, deferred) in stream_set.into_iter().flatten() {
            let _preserve = PreserveLoggingContext::sentinel();
            // try: deferred.callback(None) except Exception: pass
            let _ = deferred.callback(());
        }
    }

    /// `await sleeper.sleep(name, delay_ms)`: returns after `delay_ms`
    /// milliseconds, or when [`wake`](AwakenableSleeper::wake)`(name)` is
    /// called, whichever comes first. Nothing happens until the future is
    /// first polled.
    ///
    /// It waits in the sentinel context (`make_deferred_yieldable`) and
    /// resumes in the caller's. Cancelling the coroutine that awaits it
    /// fails it with `CancelledError` at once; its registration is removed
    /// either way, and its timer stays scheduled and fires harmlessly later.
    ///
    /// ```
    /// use twisted_compat::{AwakenableSleeper, Clock, Failure};
    /// use twisted_deferred::ensure_deferred;
    ///
    /// let reactor = twisted_reactor::Clock::new();
    /// let sleeper = AwakenableSleeper::new(&Clock::new(reactor.clone(), "hs"));
    /// let s = sleeper.clone();
    /// let d = ensure_deferred(async move { s.sleep("name", 1000).await });  // await sleeper.sleep("name", 1000)
    /// reactor.advance(0.5).unwrap();
    /// assert!(!d.called());
    /// reactor.advance(0.6).unwrap();
    /// assert!(d.called());
    /// ```
    pub fn sleep(
        &self,
        name: &str,
        delay_ms: u64,
    ) -> impl Future<Output = Result<(), Failure>> + 'static {
        let inner = self.inner.clone();
        let name = name.to_owned();
        async move {
            // Create a Deferred that `wake` calls back.
            let notify_deferred: Deferred<()> = Deferred::new();
            let id = inner.next.get();
            inner.next.set(id + 1);
            inner
                .streams
                .borrow_mut()
                .entry(name.clone())
                .or_default()
                .insert(id, notify_deferred.clone());
            // finally: clean up the state (also if this future is dropped).
            let _cleanup = Cleanup {
                inner: inner.clone(),
                name,
                id,
            };
            // Wait for either the delay or `wake`.
            let waited = make_deferred_yieldable(timeout_deferred(
                stop_cancellation(&notify_deferred),
                delay_ms as f64 / 1000.0,
                &inner.clock,
            ))
            .await;
            match waited {
                Ok(()) => Ok(()),
                Err(f) if f.check::<TimeoutError>() => Ok(()),
                Err(f) => Err(f),
            }
        }
    }
}

/// Removes a sleeper's registration when its `sleep` ends or is dropped.
struct Cleanup {
    inner: Rc<Inner>,
    name: String,
    id: u64,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut streams = self.inner.streams.borrow_mut();
        if let Some(set) = streams.get_mut(&self.name) {
            set.remove(&self.id);
            if set.is_empty() {
                streams.remove(&self.name);
            }
        }
    }
}
