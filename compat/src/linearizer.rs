//! Synapse's `synapse.util.async_helpers.Linearizer`: a per-key FIFO
//! semaphore.
//!
//! At most `max_count` holders per key run at once; the others wait in the
//! order they arrived. Keys are independent.
//!
//! # Python's `async with`, in Rust
//!
//! Synapse's `linearizer.queue(key)` is an async context manager:
//!
//! ```python
//! async with linearizer.queue(key):
//!     ...
//! ```
//!
//! Here [`Linearizer::queue`] returns a future that resolves to a
//! [`LinearizerGuard`] once the lock is held; the lock is released when the
//! guard is dropped, which is where Python's `__aexit__` runs:
//!
//! ```
//! use twisted_compat::{Clock, Failure, Linearizer};
//! use twisted_deferred::ensure_deferred;
//!
//! let reactor = twisted_reactor::Clock::new();
//! let clock = Clock::new(reactor.clone(), "hs");
//! let linearizer = Linearizer::new("example", &clock);   // Linearizer(name="example", clock=clock)
//! let l = linearizer.clone();
//! let d = ensure_deferred(async move {
//!     let _guard = l.queue("room").await?;                // async with linearizer.queue("room"):
//!     // ... the body ...
//!     Ok::<_, Failure>(())                                // released when `_guard` goes
//! });
//! assert!(d.called());                                    // uncontended: synchronous
//! ```
//!
//! A body that fails with `?` or is cancelled (the `CancelledError` comes out
//! of an `.await` in it) drops the guard on its way out, as Python's `finally`
//! releases the lock. A guard also releases when the future holding it is
//! dropped, and a `queue(key)` future dropped while it waits leaves the
//! queue (or, if it had just been woken, hands the lock on), so a dropped
//! coroutine never leaks the lock.
//!
//! # Behaviour
//!
//! * Without contention the lock is taken synchronously: the body starts
//!   inside the call that awaited `queue`.
//! * With contention, the waiter waits in the sentinel context
//!   (`make_deferred_yieldable`). A release hands the lock to the
//!   longest-waiting waiter at once, under the sentinel context; the waiter
//!   takes its place in the count before anything else can look, then
//!   sleeps zero seconds on the clock while holding the lock (Synapse's
//!   guard against unbounded recursion through synchronously finishing
//!   holders), so its body starts after one trip through the reactor.
//! * A waiter cancelled while queued leaves the queue and fails with
//!   `CancelledError`; one cancelled during that zero sleep gives the lock
//!   back (to the next waiter) and fails with `CancelledError`.
//! * The caller's logging context is current in the body and after it,
//!   queued or not.
//! * A key's state is deleted when its last holder releases with nobody
//!   waiting.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::rc::Rc;

use twisted_deferred::{CancelledError, Deferred, Failure};

use crate::clock::Clock;
use crate::logcontext::{PreserveLoggingContext, make_deferred_yieldable};

/// Synapse's `_LinearizerEntry`: the holders and waiters of one key.
struct Entry {
    /// `count`: the number of holders.
    count: Cell<usize>,
    /// `deferreds`: the waiters, in arrival order (keyed by a sequence
    /// number so that a cancelled waiter leaves in O(log n)).
    deferreds: RefCell<BTreeMap<u64, Deferred<()>>>,
}

struct Inner<K> {
    name: String,
    max_count: usize,
    clock: Clock,
    /// `key_to_defer`.
    key_to_defer: RefCell<HashMap<K, Rc<Entry>>>,
    next_waiter: Cell<u64>,
}

/// Synapse's `Linearizer`: limits concurrent access per key to `max_count`
/// holders, the others queueing in FIFO order. See the [module
/// docs](crate::linearizer) for the guard that stands for `async with`.
///
/// A cheap handle: clones share the same queues (move one into each
/// coroutine).
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use twisted_compat::{Clock, Deferred, Failure, Linearizer};
/// use twisted_deferred::ensure_deferred;
///
/// let reactor = twisted_reactor::Clock::new();
/// let clock = Clock::new(reactor.clone(), "hs");
/// let linearizer = Linearizer::new("example", &clock);
/// let order = Rc::new(RefCell::new(Vec::new()));
/// let gate: Deferred<()> = Deferred::new();
/// for i in 0..3 {
///     let (l, o, g) = (linearizer.clone(), order.clone(), gate.clone());
///     ensure_deferred(async move {
///         let _guard = l.queue("key").await?;             // async with linearizer.queue("key"):
///         o.borrow_mut().push(i);
///         if i == 0 { g.await?; }                         //     the first one blocks
///         Ok::<_, Failure>(())
///     });
/// }
/// assert!(linearizer.is_queued(&"key"));
/// gate.callback(()).unwrap();
/// reactor.advance(0.0).unwrap();                          // the woken waiter's sleep(0)
/// reactor.advance(0.0).unwrap();
/// assert_eq!(*order.borrow(), [0, 1, 2]);                 // first come, first served
/// ```
pub struct Linearizer<K> {
    inner: Rc<Inner<K>>,
}

impl<K> Clone for Linearizer<K> {
    fn clone(&self) -> Self {
        Linearizer {
            inner: self.inner.clone(),
        }
    }
}

impl<K> fmt::Debug for Linearizer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Linearizer")
            .field("name", &self.inner.name)
            .field("max_count", &self.inner.max_count)
            .field("keys", &self.inner.key_to_defer.borrow().len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug + 'static> Linearizer<K> {
    /// `Linearizer(name, clock)`: one holder per key at a time.
    ///
    /// ```
    /// use twisted_compat::{Clock, Linearizer};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let linearizer: Linearizer<String> = Linearizer::new("joins", &clock);  // Linearizer(name="joins", clock=clock)
    /// assert_eq!(linearizer.max_count(), 1);
    /// ```
    pub fn new(name: &str, clock: &Clock) -> Self {
        Linearizer::with_max_count(name, clock, 1)
    }

    /// `Linearizer(name, clock, max_count=n)`: up to `max_count` holders
    /// per key at a time. A `max_count` of 0 is taken as 1 (Synapse would
    /// queue every caller forever).
    ///
    /// ```
    /// use twisted_compat::{Clock, Linearizer};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// // Linearizer(name="fetch", clock=clock, max_count=3)
    /// let limiter: Linearizer<u32> = Linearizer::with_max_count("fetch", &clock, 3);
    /// assert_eq!(limiter.max_count(), 3);
    /// assert_eq!(limiter.name(), "fetch");
    /// ```
    pub fn with_max_count(name: &str, clock: &Clock, max_count: usize) -> Self {
        Linearizer {
            inner: Rc::new(Inner {
                name: name.to_owned(),
                max_count: max_count.max(1),
                clock: clock.clone(),
                key_to_defer: RefCell::new(HashMap::new()),
                next_waiter: Cell::new(0),
            }),
        }
    }

    /// `linearizer.name`.
    ///
    /// ```
    /// use twisted_compat::{Clock, Linearizer};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let linearizer: Linearizer<u8> = Linearizer::new("state", &clock);
    /// assert_eq!(linearizer.name(), "state");             // linearizer.name
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `linearizer.max_count`.
    ///
    /// ```
    /// use twisted_compat::{Clock, Linearizer};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let linearizer: Linearizer<u8> = Linearizer::with_max_count("state", &clock, 2);
    /// assert_eq!(linearizer.max_count(), 2);              // linearizer.max_count
    /// ```
    pub fn max_count(&self) -> usize {
        self.inner.max_count
    }

    /// `is_queued(key)`: true when at least one caller *waits* for `key`
    /// (holders do not count).
    ///
    /// ```
    /// use twisted_compat::{Clock, Deferred, Failure, Linearizer};
    /// use twisted_deferred::ensure_deferred;
    ///
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let linearizer = Linearizer::new("l", &clock);
    /// let gate: Deferred<()> = Deferred::new();
    /// let (l, g) = (linearizer.clone(), gate.clone());
    /// ensure_deferred(async move { let _g = l.queue(1).await?; g.await?; Ok::<_, Failure>(()) });
    /// assert!(!linearizer.is_queued(&1));                 // linearizer.is_queued(1): a holder only
    /// let l = linearizer.clone();
    /// ensure_deferred(async move { let _g = l.queue(1).await?; Ok::<_, Failure>(()) });
    /// assert!(linearizer.is_queued(&1));                  // now one waits
    /// # gate.callback(()).unwrap();
    /// ```
    pub fn is_queued(&self, key: &K) -> bool {
        self.inner
            .key_to_defer
            .borrow()
            .get(key)
            .is_some_and(|entry| !entry.deferreds.borrow().is_empty())
    }

    /// `async with linearizer.queue(key):`: a future resolving to the guard
    /// that holds the lock on `key` until it is dropped, or failing with
    /// `CancelledError` if the coroutine awaiting it is cancelled before it
    /// holds the lock (see the [module docs](crate::linearizer)). Nothing
    /// happens until it is first polled.
    ///
    /// ```
    /// use twisted_compat::{Clock, Failure, Linearizer, current_context, LoggingContext};
    /// use twisted_deferred::ensure_deferred;
    ///
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let linearizer = Linearizer::new("l", &clock);
    /// let l = linearizer.clone();
    /// let d = ensure_deferred(async move {
    ///     let ctx = LoggingContext::new("req", "hs");
    ///     let _scope = ctx.entered();                     // with LoggingContext("req"):
    ///     let guard = l.queue("k").await?;                //     async with linearizer.queue("k"):
    ///     assert_eq!(current_context(), ctx);
    ///     drop(guard);                                    //     (end of the block)
    ///     Ok::<_, Failure>(())
    /// });
    /// assert!(d.called());
    /// assert!(!linearizer.is_queued(&"k"));
    /// ```
    pub fn queue(
        &self,
        key: K,
    ) -> impl Future<Output = Result<LinearizerGuard<K>, Failure>> + 'static {
        let inner = self.inner.clone();
        async move { acquire_lock(inner, key).await }
    }
}

/// Synapse's `_acquire_lock`.
async fn acquire_lock<K: Hash + Eq + Clone + fmt::Debug + 'static>(
    inner: Rc<Inner<K>>,
    key: K,
) -> Result<LinearizerGuard<K>, Failure> {
    let entry = inner
        .key_to_defer
        .borrow_mut()
        .entry(key.clone())
        .or_insert_with(|| {
            Rc::new(Entry {
                count: Cell::new(0),
                deferreds: RefCell::new(BTreeMap::new()),
            })
        })
        .clone();

    if entry.count.get() < inner.max_count {
        log::debug!(
            target: "synapse.util.async_helpers",
            "Acquired uncontended linearizer lock {:?} for key {key:?}",
            inner.name
        );
        entry.count.set(entry.count.get() + 1);
        return Ok(LinearizerGuard {
            inner,
            key,
            entry,
            released: false,
        });
    }

    log::debug!(
        target: "synapse.util.async_helpers",
        "Waiting to acquire linearizer lock {:?} for key {key:?}",
        inner.name
    );
    let new_defer: Deferred<()> = make_deferred_yieldable(Deferred::new());
    let id = inner.next_waiter.get();
    inner.next_waiter.set(id + 1);
    entry.deferreds.borrow_mut().insert(id, new_defer.clone());
    // Leaves the queue (or hands the lock on) if this future is dropped
    // while it waits.
    let mut waiting = Waiting {
        inner: inner.clone(),
        key: key.clone(),
        entry: entry.clone(),
        id,
        armed: true,
    };

    if let Err(e) = new_defer.clone().await {
        log::info!(
            target: "synapse.util.async_helpers",
            "defer {new_defer:?} got err {e}"
        );
        if e.check::<CancelledError>() {
            log::debug!(
                target: "synapse.util.async_helpers",
                "Cancelling wait for linearizer lock {:?} for key {key:?}",
                inner.name
            );
        } else {
            log::warn!(
                target: "synapse.util.async_helpers",
                "Unexpected exception waiting for linearizer lock {:?} for key {key:?}",
                inner.name
            );
        }
        // We just have to take ourselves back out of the queue (`waiting`
        // does, as it goes).
        drop(waiting);
        return Err(e);
    }
    waiting.armed = false;

    log::debug!(
        target: "synapse.util.async_helpers",
        "Acquired linearizer lock {:?} for key {key:?}",
        inner.name
    );
    entry.count.set(entry.count.get() + 1);
    let guard = LinearizerGuard {
        inner: inner.clone(),
        key,
        entry,
        released: false,
    };

    // If the code holding the lock completes synchronously, it would run
    // the next claimant recursively: fall back to the reactor once, while
    // holding the lock. Cancelled here, the guard releases as it goes.
    inner.clock.sleep(0.0).await?;
    Ok(guard)
}

/// A waiter's place in the queue while its `queue(key)` future is pending.
struct Waiting<K: Hash + Eq + Clone + fmt::Debug + 'static> {
    inner: Rc<Inner<K>>,
    key: K,
    entry: Rc<Entry>,
    id: u64,
    armed: bool,
}

impl<K: Hash + Eq + Clone + fmt::Debug + 'static> Drop for Waiting<K> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let removed = self.entry.deferreds.borrow_mut().remove(&self.id);
        if removed.is_none() {
            // A release had already handed us the lock, but we never took
            // it (the future was dropped before it resumed): take it and
            // give it back, so that the next waiter goes ahead.
            self.entry.count.set(self.entry.count.get() + 1);
            release_lock(&self.inner, &self.key, &self.entry);
        }
    }
}

/// Synapse's `_release_lock`.
fn release_lock<K: Hash + Eq + Clone + fmt::Debug + 'static>(
    inner: &Inner<K>,
    key: &K,
    entry: &Rc<Entry>,
) {
    log::debug!(
        target: "synapse.util.async_helpers",
        "Releasing linearizer lock {:?} for key {key:?}",
        inner.name
    );
    entry.count.set(entry.count.get().saturating_sub(1));
    let next = entry.deferreds.borrow_mut().pop_first();
    match next {
        Some((_, next_def)) => {
            // We need to run the next thing in the sentinel context.
            let _preserve = PreserveLoggingContext::sentinel();
            let _ = next_def.callback(());
        }
        None if entry.count.get() == 0 => {
            // We were the last thing for this key: remove it from the map.
            let mut map = inner.key_to_defer.borrow_mut();
            if map.get(key).is_some_and(|e| Rc::ptr_eq(e, entry)) {
                map.remove(key);
            }
        }
        None => {}
    }
}

/// The lock on one key of a [`Linearizer`], held until dropped: the body of
/// Python's `async with linearizer.queue(key):` block.
///
/// Dropping it releases the lock, which hands it to the longest-waiting
/// waiter at once (that waiter's coroutine resumes inside the drop, in the
/// sentinel context, up to its zero sleep).
///
/// ```
/// use twisted_compat::{Clock, Failure, Linearizer};
/// use twisted_deferred::ensure_deferred;
///
/// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
/// let linearizer = Linearizer::new("l", &clock);
/// let l = linearizer.clone();
/// ensure_deferred(async move {
///     let guard = l.queue(7).await?;                      // async with linearizer.queue(7):
///     assert_eq!(*guard.key(), 7);
///     Ok::<_, Failure>(())                                // __aexit__: released
/// });
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LinearizerGuard<K: Hash + Eq + Clone + fmt::Debug + 'static> {
    inner: Rc<Inner<K>>,
    key: K,
    entry: Rc<Entry>,
    released: bool,
}

impl<K: Hash + Eq + Clone + fmt::Debug + 'static> LinearizerGuard<K> {
    /// The key this guard holds.
    ///
    /// ```
    /// use twisted_compat::{Clock, Failure, Linearizer};
    /// use twisted_deferred::ensure_deferred;
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let l = Linearizer::new("l", &clock);
    /// ensure_deferred(async move {
    ///     let guard = l.queue("k").await?;                // async with linearizer.queue("k"):
    ///     assert_eq!(*guard.key(), "k");
    ///     Ok::<_, Failure>(())
    /// });
    /// ```
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Releases the lock now (the end of the `async with` block); the same
    /// as dropping the guard.
    ///
    /// ```
    /// use twisted_compat::{Clock, Failure, Linearizer};
    /// use twisted_deferred::ensure_deferred;
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let linearizer = Linearizer::new("l", &clock);
    /// let l = linearizer.clone();
    /// ensure_deferred(async move {
    ///     let guard = l.queue("k").await?;                // async with linearizer.queue("k"):
    ///     guard.release();                                //     (block ends)
    ///     Ok::<_, Failure>(())
    /// });
    /// ```
    pub fn release(mut self) {
        self.release_now();
    }

    fn release_now(&mut self) {
        if !self.released {
            self.released = true;
            release_lock(&self.inner, &self.key, &self.entry);
        }
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug + 'static> Drop for LinearizerGuard<K> {
    fn drop(&mut self) {
        self.release_now();
    }
}

impl<K: Hash + Eq + Clone + fmt::Debug + 'static> fmt::Debug for LinearizerGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinearizerGuard")
            .field("linearizer", &self.inner.name)
            .field("key", &self.key)
            .field("released", &self.released)
            .finish()
    }
}
