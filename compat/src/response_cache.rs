//! Synapse's `synapse.util.caches.response_cache.ResponseCache` (with
//! `ResponseCacheContext`, and the `WheelTimer` its pruning uses): callers
//! asking for the same key share one in-flight (or recently finished)
//! computation.
//!
//! | Synapse | here |
//! |---|---|
//! | `ResponseCache(clock=, name=, server_name=, timeout=)` | [`ResponseCache::new`] (`timeout` in seconds, as [`Clock::call_later`] takes it) |
//! | `enable_logging=False` | [`ResponseCache::enable_logging`] |
//! | `await cache.wrap(key, callback, *args)` | `cache.wrap(key, move \|\| callback(args)).await` |
//! | `await cache.wrap(key, callback, *args, cache_context=True)` | `cache.wrap_with_cache_context(key, move \|ctx\| callback(args, ctx)).await` |
//! | `@cancellable` on `callback` (read with `is_function_cancellable`) | `#[cancellable]` on the function the callback returns the value of ([`cancellable`](macro@crate::cancellable)), or [`Wrap::cancellable`]: `cache.wrap(key, f).cancellable().await` |
//! | `cache._get(key).result.observe()` (Synapse's former `get`) | [`ResponseCache::get`] |
//! | `unset`, `keys`, `size`, `len(cache)` | [`ResponseCache::unset`], [`ResponseCache::keys`], [`ResponseCache::size`], [`ResponseCache::len`] |
//!
//! Where Synapse asks `is_function_cancellable(callback)`, `wrap` reads the
//! mark from what the callback returns (see
//! [`cancellable_marker`](crate::cancellable_marker)): a closure returning
//! the value of a function marked `#[cancellable]` is cancellable, as
//! `functools.wraps` would make it; [`Wrap::cancellable`] marks any
//! callback by hand. Cache metrics and tracing spans are not part of this
//! port.
//!
//! # Behaviour
//!
//! * On a miss, the callback runs at once through `run_in_background`, in
//!   the caller's logging context. Its Deferred is watched by an
//!   [`ObservableDeferred`] (errors not consumed) stored in the entry; the
//!   caller, and every concurrent caller with the same key, awaits an
//!   observer of it, each resuming in its own logging context.
//! * A success stays cached for `timeout` after it completes if the cache
//!   has a (non-zero) timeout and the callback left
//!   [`ResponseCacheContext::should_cache`] set; otherwise it is removed at
//!   once. A failure is removed at once and consumed, and reaches every
//!   waiter: errors are never cached.
//! * A caller that joined an entry in flight and is cancelled fails with
//!   `CancelledError` at once; the computation and the other callers go on.
//! * The caller that started the computation, cancelled, swallows the
//!   `CancelledError` for now and waits for the computation itself (not as
//!   an observer, so it does not hold off pruning); it fails with
//!   `CancelledError` once the computation finished or was pruned.
//! * Either cancellation stamps the entry with the time and queues it for a
//!   prune check. With a timeout set, every `timeout / 10` the entries due
//!   for a check are removed, and their computation cancelled, if the
//!   callback is cancellable, the computation has not finished, nobody
//!   observes it, and more than `timeout` has passed since the last
//!   observer went.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::hash::Hash;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use twisted_deferred::{CancelledError, Deferred, Failure};
use twisted_reactor::LoopingCall;

use crate::cancellable_marker::MaybeCancellable;
use crate::cancellation::delay_cancellation;
use crate::clock::Clock;
use crate::logcontext::{make_deferred_yieldable, run_in_background};
use crate::observable::ObservableDeferred;

/// Information about a cache miss, given to the callback by
/// [`ResponseCache::wrap_with_cache_context`]: Synapse's
/// `ResponseCacheContext`.
///
/// A handle: the callback's clone and the cache's share `should_cache`.
///
/// ```
/// use twisted_compat::{Clock, Failure, ResponseCache, ResponseCacheContext};
/// use twisted_deferred::ensure_deferred;
///
/// let reactor = twisted_reactor::Clock::new();
/// let clock = Clock::new(reactor.clone(), "hs");
/// let cache: ResponseCache<u32, &str> = ResponseCache::new(&clock, "c", "hs", Some(60.0));
/// let c = cache.clone();
/// // await cache.wrap(1, compute, cache_context=True)
/// let d = ensure_deferred(c.wrap_with_cache_context(1, |ctx: ResponseCacheContext<u32>| async move {
///     assert_eq!(*ctx.cache_key(), 1);
///     ctx.set_should_cache(false);                       // cache_context.should_cache = False
///     Ok::<_, Failure>("fresh")
/// }));
/// assert_eq!(d.result().value(), Some("fresh"));
/// assert!(cache.keys().is_empty());                      // not kept
/// ```
pub struct ResponseCacheContext<K> {
    cache_key: Rc<K>,
    should_cache: Rc<Cell<bool>>,
}

impl<K> Clone for ResponseCacheContext<K> {
    fn clone(&self) -> Self {
        ResponseCacheContext {
            cache_key: self.cache_key.clone(),
            should_cache: self.should_cache.clone(),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for ResponseCacheContext<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheContext")
            .field("cache_key", &self.cache_key)
            .field("should_cache", &self.should_cache.get())
            .finish()
    }
}

impl<K> ResponseCacheContext<K> {
    /// `ResponseCacheContext(cache_key=key)`: `should_cache` starts true.
    ///
    /// ```
    /// use twisted_compat::ResponseCacheContext;
    /// let ctx = ResponseCacheContext::new("key");          // ResponseCacheContext(cache_key="key")
    /// assert!(ctx.should_cache());
    /// ```
    pub fn new(cache_key: K) -> Self {
        ResponseCacheContext {
            cache_key: Rc::new(cache_key),
            should_cache: Rc::new(Cell::new(true)),
        }
    }

    /// `cache_context.cache_key`: the key that missed.
    ///
    /// ```
    /// use twisted_compat::ResponseCacheContext;
    /// let ctx = ResponseCacheContext::new(7);
    /// assert_eq!(*ctx.cache_key(), 7);                     // cache_context.cache_key
    /// ```
    pub fn cache_key(&self) -> &K {
        &self.cache_key
    }

    /// `cache_context.should_cache`: whether a success is kept for the
    /// cache's timeout.
    ///
    /// ```
    /// use twisted_compat::ResponseCacheContext;
    /// let ctx = ResponseCacheContext::new(7);
    /// assert!(ctx.should_cache());                         // cache_context.should_cache
    /// ```
    pub fn should_cache(&self) -> bool {
        self.should_cache.get()
    }

    /// `cache_context.should_cache = value`.
    ///
    /// ```
    /// use twisted_compat::ResponseCacheContext;
    /// let ctx = ResponseCacheContext::new(7);
    /// ctx.set_should_cache(false);                         // cache_context.should_cache = False
    /// assert!(!ctx.clone().should_cache());
    /// ```
    pub fn set_should_cache(&self, value: bool) {
        self.should_cache.set(value);
    }
}

/// Synapse's `ResponseCacheEntry`.
struct Entry<RV> {
    /// `result`: the (possibly incomplete) result, kept even once complete.
    result: ObservableDeferred<RV>,
    /// `cancellable`: whether pruning may cancel the computation.
    cancellable: bool,
    /// `last_observer_removed_time_ms`.
    last_observer_removed_time_ms: Cell<Option<i64>>,
    /// Insertion order, for `keys()` (Python's dicts keep it).
    seq: u64,
}

/// A duration in microseconds, as Python's `timedelta` (and so Synapse's
/// `Duration`) holds it.
#[derive(Clone, Copy, Debug)]
struct Micros(i64);

impl Micros {
    /// `Duration(seconds=s)`: rounded to the microsecond, half to even.
    fn from_secs(seconds: f64) -> Micros {
        let micros = (seconds * 1e6).round_ties_even();
        Micros(if micros.is_finite() { micros as i64 } else { 0 })
    }

    /// `as_secs()`.
    fn as_secs(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `as_millis()`: `int(self / timedelta(milliseconds=1))`.
    fn as_millis(self) -> i64 {
        (self.0 as f64 / 1000.0) as i64
    }

    /// `self / n`: `timedelta` division, rounded half to even.
    fn div(self, n: i64) -> Micros {
        let (q, r) = (self.0.div_euclid(n), self.0.rem_euclid(n));
        let twice = 2 * r;
        let round_up = twice > n || (twice == n && q % 2 == 1);
        Micros(if round_up { q + 1 } else { q })
    }

    /// `bool(duration)`.
    fn is_truthy(self) -> bool {
        self.0 != 0
    }
}

/// One bucket of a [`WheelTimer`].
struct WheelEntry<K> {
    end_key: i64,
    elements: Vec<K>,
}

/// Synapse's `synapse.util.wheel_timer.WheelTimer`: objects returned by
/// `fetch` once their time has passed, bucketed by `bucket_size`.
struct WheelTimer<K> {
    bucket_size_ms: i64,
    entries: VecDeque<WheelEntry<K>>,
}

impl<K: PartialEq + fmt::Debug> WheelTimer<K> {
    fn new(bucket_size: Micros) -> Self {
        WheelTimer {
            // Synapse would divide by zero below 1 ms.
            bucket_size_ms: bucket_size.as_millis().max(1),
            entries: VecDeque::new(),
        }
    }

    fn bucket(&self, ms: i64) -> i64 {
        (ms as f64 / self.bucket_size_ms as f64) as i64
    }

    fn add(entry: &mut WheelEntry<K>, obj: K) {
        if !entry.elements.contains(&obj) {
            entry.elements.push(obj);
        }
    }

    /// `insert(now, obj, then)`: `obj` comes out of a `fetch` strictly
    /// after `then` (ms).
    fn insert(&mut self, now: i64, obj: K, then: i64) {
        let then_key = self.bucket(then) + 1;
        let now_key = self.bucket(now);
        if let (Some(first), Some(last)) = (self.entries.front(), self.entries.back()) {
            let (min_key, max_key) = (first.end_key, last.end_key);
            if min_key < now_key - 10 {
                log::warn!(
                    target: "synapse.util.wheel_timer",
                    "Inserting into a wheel timer that hasn't been read from recently. Item: {obj:?}"
                );
            }
            if then_key <= max_key {
                // The max protects against inserts for times in the past.
                let index = (then_key.max(min_key) - min_key) as usize;
                if let Some(entry) = self.entries.get_mut(index) {
                    Self::add(entry, obj);
                }
                return;
            }
        }
        let last_key = match self.entries.back() {
            Some(last) => last.end_key + 1,
            None => now_key + 1,
        };
        let then_key = then_key.max(last_key);
        for key in last_key..=then_key {
            self.entries.push_back(WheelEntry {
                end_key: key,
                elements: Vec::new(),
            });
        }
        if let Some(last) = self.entries.back_mut() {
            Self::add(last, obj);
        }
    }

    /// `fetch(now)`: the objects whose time has passed.
    fn fetch(&mut self, now: i64) -> Vec<K> {
        let now_key = self.bucket(now);
        let mut ret = Vec::new();
        while self.entries.front().is_some_and(|e| e.end_key <= now_key) {
            if let Some(entry) = self.entries.pop_front() {
                ret.extend(entry.elements);
            }
        }
        ret
    }
}

struct Inner<K, RV> {
    /// `_result_cache`.
    result_cache: RefCell<HashMap<K, Rc<Entry<RV>>>>,
    clock: Clock,
    timeout: Option<Micros>,
    name: String,
    server_name: String,
    enable_logging: Cell<bool>,
    prune_timer: Option<RefCell<WheelTimer<K>>>,
    prune_call: RefCell<Option<LoopingCall>>,
    next_seq: Cell<u64>,
}

impl<K, RV> Drop for Inner<K, RV> {
    fn drop(&mut self) {
        // Nothing is left to prune: stop the loop, which would otherwise
        // run as long as the clock lives.
        if let Some(call) = self.prune_call.get_mut().take()
            && call.running()
        {
            let _ = call.stop();
        }
    }
}

/// Synapse's `ResponseCache`: callers of [`wrap`](ResponseCache::wrap)
/// with the same key share one computation, in flight or (with a timeout)
/// recently finished. See the [module docs](crate::response_cache) for the
/// rules.
///
/// A cheap handle: clones share the same cache (move one into each
/// coroutine).
///
/// ```
/// use std::{cell::Cell, rc::Rc};
/// use twisted_compat::{Clock, Deferred, Failure, ResponseCache};
/// use twisted_deferred::ensure_deferred;
///
/// let reactor = twisted_reactor::Clock::new();
/// let clock = Clock::new(reactor.clone(), "hs");
/// // cache = ResponseCache(clock=clock, name="sync", server_name="hs", timeout=Duration(seconds=2))
/// let cache: ResponseCache<&str, u32> = ResponseCache::new(&clock, "sync", "hs", Some(2.0));
/// let calls = Rc::new(Cell::new(0));
/// let work: Deferred<u32> = Deferred::new();
/// let mut callers = Vec::new();
/// for _ in 0..2 {
///     let (c, n, w) = (cache.clone(), calls.clone(), work.clone());
///     // await cache.wrap("@alice", compute)
///     callers.push(ensure_deferred(c.wrap("@alice", move || {
///         n.set(n.get() + 1);
///         w
///     })));
/// }
/// assert_eq!(calls.get(), 1);                            // one computation, shared
/// work.callback(42).unwrap();
/// assert_eq!(callers[0].result().value(), Some(42));
/// assert_eq!(callers[1].result().value(), Some(42));
/// assert_eq!(cache.keys(), ["@alice"]);                  // kept for 2 s
/// reactor.advance(2.0).unwrap();
/// assert!(cache.keys().is_empty());
/// ```
pub struct ResponseCache<K, RV> {
    inner: Rc<Inner<K, RV>>,
}

impl<K, RV> Clone for ResponseCache<K, RV> {
    fn clone(&self) -> Self {
        ResponseCache {
            inner: self.inner.clone(),
        }
    }
}

impl<K, RV> fmt::Debug for ResponseCache<K, RV> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("name", &self.inner.name)
            .field("size", &self.inner.result_cache.borrow().len())
            .field("timeout", &self.inner.timeout.map(Micros::as_secs))
            .finish()
    }
}

/// The boxed future of a computation.
type BoxedResult<RV> = Pin<Box<dyn Future<Output = Result<RV, Failure>>>>;

type Callback<K, RV> = Box<dyn FnOnce(ResponseCacheContext<K>) -> BoxedResult<RV>>;

impl<K, RV> ResponseCache<K, RV>
where
    K: Hash + Eq + Clone + fmt::Debug + 'static,
    RV: Clone + 'static,
{
    /// `ResponseCache(clock=clock, name=name, server_name=server_name,
    /// timeout=timeout)`, `timeout` in seconds (`None`, or 0, keeps no
    /// result once computed and prunes nothing). With a timeout, a looping
    /// call on `clock` checks for entries to prune every `timeout / 10`.
    ///
    /// ```
    /// use twisted_compat::{Clock, ResponseCache};
    /// let reactor = twisted_reactor::Clock::new();
    /// let clock = Clock::new(reactor.clone(), "hs");
    /// // ResponseCache(clock=clock, name="c", server_name="hs", timeout=Duration(milliseconds=300))
    /// let cache: ResponseCache<String, u8> = ResponseCache::new(&clock, "c", "hs", Some(0.3));
    /// assert_eq!(cache.name(), "c");
    /// assert_eq!(reactor.delayed_call_count(), 1);           // the prune loop
    /// ```
    pub fn new(clock: &Clock, name: &str, server_name: &str, timeout: Option<f64>) -> Self {
        let timeout = timeout.map(Micros::from_secs);
        let truthy = timeout.filter(|t| t.is_truthy());
        let cache = ResponseCache {
            inner: Rc::new(Inner {
                result_cache: RefCell::new(HashMap::new()),
                clock: clock.clone(),
                timeout,
                name: name.to_owned(),
                server_name: server_name.to_owned(),
                enable_logging: Cell::new(true),
                prune_timer: truthy.map(|t| RefCell::new(WheelTimer::new(t.div(10)))),
                prune_call: RefCell::new(None),
                next_seq: Cell::new(0),
            }),
        };
        if let Some(t) = truthy {
            let weak = Rc::downgrade(&cache.inner);
            let call = clock.looping_call(
                move || -> Result<(), Failure> {
                    if let Some(inner) = weak.upgrade() {
                        Inner::prune_inflight_entries(&inner);
                    }
                    Ok(())
                },
                t.div(10).as_secs(),
            );
            *cache.inner.prune_call.borrow_mut() = call.ok();
        }
        cache
    }

    /// `enable_logging=enabled`: whether `wrap` logs its misses and hits
    /// (on by default).
    ///
    /// ```
    /// use twisted_compat::{Clock, ResponseCache};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// // ResponseCache(clock=clock, name="c", server_name="hs", enable_logging=False)
    /// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "c", "hs", None).enable_logging(false);
    /// # let _ = cache;
    /// ```
    pub fn enable_logging(self, enabled: bool) -> Self {
        self.inner.enable_logging.set(enabled);
        self
    }

    /// The cache's name.
    ///
    /// ```
    /// use twisted_compat::{Clock, ResponseCache};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "initial_sync", "hs", None);
    /// assert_eq!(cache.name(), "initial_sync");
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The server name given at creation (Synapse labels the cache's
    /// metrics with it).
    ///
    /// ```
    /// use twisted_compat::{Clock, ResponseCache};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "c", "example.com", None);
    /// assert_eq!(cache.server_name(), "example.com");
    /// ```
    pub fn server_name(&self) -> &str {
        &self.inner.server_name
    }

    /// `size()`: the number of entries, in flight or kept.
    ///
    /// ```
    /// use twisted_compat::{Clock, ResponseCache};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "c", "hs", None);
    /// assert_eq!(cache.size(), 0);                           // cache.size()
    /// ```
    pub fn size(&self) -> usize {
        self.inner.result_cache.borrow().len()
    }

    /// `len(cache)`: the same as [`size`](ResponseCache::size).
    ///
    /// ```
    /// use twisted_compat::{Clock, ResponseCache};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "c", "hs", None);
    /// assert_eq!(cache.len(), 0);                            // len(cache)
    /// ```
    pub fn len(&self) -> usize {
        self.size()
    }

    /// `len(cache) == 0`.
    ///
    /// ```
    /// use twisted_compat::{Clock, ResponseCache};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "c", "hs", None);
    /// assert!(cache.is_empty());                             // not cache
    /// ```
    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// `keys()`: the keys of the entries in flight or kept, in the order
    /// they were added.
    ///
    /// ```
    /// use twisted_compat::{Clock, Failure, ResponseCache};
    /// use twisted_deferred::ensure_deferred;
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "c", "hs", Some(10.0));
    /// for k in [3, 1] {
    ///     ensure_deferred(cache.wrap(k, move || async move { Ok::<_, Failure>(k) }));
    /// }
    /// assert_eq!(cache.keys(), [3, 1]);                      // list(cache.keys())
    /// ```
    pub fn keys(&self) -> Vec<K> {
        let map = self.inner.result_cache.borrow();
        let mut keys: Vec<(&K, u64)> = map.iter().map(|(k, e)| (k, e.seq)).collect();
        keys.sort_by_key(|(_, seq)| *seq);
        keys.into_iter().map(|(k, _)| k.clone()).collect()
    }

    /// A new observer of the entry for `key`, if there is one: Synapse's
    /// `cache._get(key).result.observe()` (its former
    /// `ResponseCache.get`). Like every observer it does not follow the
    /// logging-context rules (await it through `make_deferred_yieldable`),
    /// and cancelling it affects nobody else.
    ///
    /// ```
    /// use twisted_compat::{Clock, Deferred, ResponseCache};
    /// use twisted_deferred::ensure_deferred;
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let cache: ResponseCache<u8, &str> = ResponseCache::new(&clock, "c", "hs", None);
    /// assert!(cache.get(&1).is_none());
    /// let work: Deferred<&str> = Deferred::new();
    /// let w = work.clone();
    /// ensure_deferred(cache.wrap(1, move || w));
    /// let observer = cache.get(&1).unwrap();               // cache.get(1)
    /// work.callback("done").unwrap();
    /// assert_eq!(observer.result().value(), Some("done"));
    /// ```
    pub fn get(&self, key: &K) -> Option<Deferred<RV>> {
        let entry = self.inner.result_cache.borrow().get(key).cloned();
        entry.map(|e| e.result.observe())
    }

    /// `unset(key)`: removes the entry for `key`, if any (the computation,
    /// if still running, goes on; its callers still get its result).
    ///
    /// ```
    /// use twisted_compat::{Clock, Failure, ResponseCache};
    /// use twisted_deferred::ensure_deferred;
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "c", "hs", Some(10.0));
    /// ensure_deferred(cache.wrap(1, || async { Ok::<_, Failure>(1) }));
    /// cache.unset(&1);                                       // cache.unset(1)
    /// assert!(cache.is_empty());
    /// ```
    pub fn unset(&self, key: &K) {
        self.inner.unset(key);
    }

    /// `await cache.wrap(key, callback)`: the result for `key`: from the
    /// entry in flight or kept, or, on a miss, by calling `callback` (which
    /// returns an `async` block or a Deferred) and sharing its outcome with
    /// every caller of the same key meanwhile. See the [module
    /// docs](crate::response_cache) for caching, cancellation and pruning.
    ///
    /// Nothing happens until the returned [`Wrap`] is first polled (Python's
    /// `wrap` is a coroutine too). The callback is cancellable (Synapse's
    /// `is_function_cancellable(callback)`) when it returns the value of a
    /// function marked [`cancellable`](macro@crate::cancellable);
    /// [`Wrap::cancellable`] marks it by hand.
    ///
    /// ```
    /// use twisted_compat::{cancellable, Clock, Failure, ResponseCache};
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "c", "hs", Some(1.0));
    /// #[cancellable]
    /// async fn compute() -> Result<u8, Failure> { Ok(1) }
    /// // await cache.wrap(1, compute)   with compute decorated @cancellable
    /// assert!(format!("{:?}", cache.wrap(1, compute)).contains("cancellable: true"));
    /// assert!(format!("{:?}", cache.wrap(1, || async { Ok(1) })).contains("cancellable: false"));
    /// ```
    ///
    /// ```
    /// use twisted_compat::{Clock, Failure, ResponseCache};
    /// use twisted_deferred::ensure_deferred;
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let cache: ResponseCache<u8, String> = ResponseCache::new(&clock, "c", "hs", Some(10.0));
    /// let c = cache.clone();
    /// // return await cache.wrap(1, handle_request, "hello")
    /// let d = ensure_deferred(async move {
    ///     c.wrap(1, || async { Ok::<_, Failure>("hello".to_string()) }).await
    /// });
    /// assert_eq!(d.result().value().as_deref(), Some("hello"));
    /// ```
    pub fn wrap<F, Fut, M>(&self, key: K, callback: F) -> Wrap<K, RV>
    where
        F: FnOnce() -> Fut + 'static,
        Fut: IntoFuture<Output = Result<RV, Failure>> + MaybeCancellable<M>,
        Fut::IntoFuture: 'static,
    {
        self.wrap_with_cache_context(key, move |_context: ResponseCacheContext<K>| callback())
    }

    /// `await cache.wrap(key, callback, cache_context=True)`: as
    /// [`wrap`](ResponseCache::wrap), the callback receiving the miss's
    /// [`ResponseCacheContext`] (it may clear `should_cache`).
    ///
    /// ```
    /// use twisted_compat::{Clock, Failure, ResponseCache, ResponseCacheContext};
    /// use twisted_deferred::ensure_deferred;
    /// let reactor = twisted_reactor::Clock::new();
    /// let clock = Clock::new(reactor.clone(), "hs");
    /// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "c", "hs", Some(10.0));
    /// // await cache.wrap(5, compute, cache_context=True)
    /// let d = ensure_deferred(cache.wrap_with_cache_context(5, |ctx: ResponseCacheContext<u8>| async move {
    ///     Ok::<_, Failure>(*ctx.cache_key() * 2)
    /// }));
    /// assert_eq!(d.result().value(), Some(10));
    /// assert_eq!(cache.keys(), [5]);                         // should_cache was left set
    /// ```
    pub fn wrap_with_cache_context<F, Fut, M>(&self, key: K, callback: F) -> Wrap<K, RV>
    where
        F: FnOnce(ResponseCacheContext<K>) -> Fut + 'static,
        Fut: IntoFuture<Output = Result<RV, Failure>> + MaybeCancellable<M>,
        Fut::IntoFuture: 'static,
    {
        let callback: Callback<K, RV> = Box::new(move |context: ResponseCacheContext<K>| {
            Box::pin(callback(context).into_future())
        });
        Wrap {
            pending: Some(Box::new(WrapArgs {
                inner: self.inner.clone(),
                key,
                callback,
            })),
            // is_function_cancellable(callback)
            cancellable: <Fut as MaybeCancellable<M>>::CANCELLABLE,
            running: None,
        }
    }
}

struct WrapArgs<K, RV> {
    inner: Rc<Inner<K, RV>>,
    key: K,
    callback: Callback<K, RV>,
}

/// The future of [`ResponseCache::wrap`]: resolves to the result for its
/// key. It starts work when first polled.
///
/// ```
/// use twisted_compat::{Clock, Failure, ResponseCache};
/// use twisted_deferred::ensure_deferred;
/// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
/// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "c", "hs", None);
/// let wrap = cache.wrap(1, || async { Ok::<_, Failure>(2) });
/// assert!(cache.is_empty());                             // not started yet
/// let d = ensure_deferred(wrap);                         // ensureDeferred(cache.wrap(1, f))
/// assert_eq!(d.result().value(), Some(2));
/// ```
#[must_use = "a ResponseCache::wrap future does nothing unless awaited"]
pub struct Wrap<K, RV> {
    pending: Option<Box<WrapArgs<K, RV>>>,
    cancellable: bool,
    running: Option<BoxedResult<RV>>,
}

impl<K, RV> Wrap<K, RV> {
    /// Marks the callback as cancellable (Synapse's `@cancellable` on it,
    /// which `wrap` reads with `is_function_cancellable`): only then may
    /// pruning cancel a computation nobody waits for any more. Applies when
    /// this call starts the computation.
    ///
    /// ```
    /// use twisted_compat::{Clock, Failure, ResponseCache};
    /// use twisted_deferred::ensure_deferred;
    /// let clock = Clock::new(twisted_reactor::Clock::new(), "hs");
    /// let cache: ResponseCache<u8, u8> = ResponseCache::new(&clock, "c", "hs", Some(1.0));
    /// // @cancellable async def compute(): ...;  await cache.wrap(1, compute)
    /// let d = ensure_deferred(cache.wrap(1, || async { Ok::<_, Failure>(1) }).cancellable());
    /// assert_eq!(d.result().value(), Some(1));
    /// ```
    pub fn cancellable(mut self) -> Self {
        self.cancellable = true;
        self
    }
}

impl<K, RV> fmt::Debug for Wrap<K, RV> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wrap")
            .field("started", &self.running.is_some())
            .field("cancellable", &self.cancellable)
            .finish()
    }
}

impl<K, RV> Future for Wrap<K, RV>
where
    K: Hash + Eq + Clone + fmt::Debug + 'static,
    RV: Clone + 'static,
{
    type Output = Result<RV, Failure>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.running.is_none() {
            match this.pending.take() {
                Some(args) => {
                    let WrapArgs {
                        inner,
                        key,
                        callback,
                    } = *args;
                    this.running =
                        Some(Box::pin(wrap_impl(inner, key, callback, this.cancellable)));
                }
                None => {
                    return Poll::Ready(Err(Failure::msg(
                        "ResponseCache::wrap polled after it completed",
                    )));
                }
            }
        }
        match this.running.as_mut() {
            Some(running) => {
                let poll = running.as_mut().poll(cx);
                if poll.is_ready() {
                    this.running = None;
                }
                poll
            }
            None => Poll::Pending,
        }
    }
}

/// The body of Synapse's `ResponseCache.wrap`.
async fn wrap_impl<K, RV>(
    inner: Rc<Inner<K, RV>>,
    key: K,
    callback: Callback<K, RV>,
    cancellable: bool,
) -> Result<RV, Failure>
where
    K: Hash + Eq + Clone + fmt::Debug + 'static,
    RV: Clone + 'static,
{
    let existing = inner.result_cache.borrow().get(&key).cloned();
    let Some(entry) = existing else {
        if inner.enable_logging.get() {
            log::debug!(
                target: "synapse.util.caches.response_cache",
                "[{}]: no cached result for [{key:?}], calculating new one",
                inner.name
            );
        }
        let context = ResponseCacheContext::new(key.clone());
        let for_callback = context.clone();
        let d: Deferred<RV> =
            run_in_background(move || async move { callback(for_callback).await });
        let entry = Inner::set(&inner, context, d.clone(), cancellable);
        match make_deferred_yieldable(entry.result.observe()).await {
            Err(f) if f.check::<CancelledError>() => {}
            other => return other,
        }

        // We've been cancelled, but we started the computation: wait for
        // it (not as an observer, so that pruning can still take it away),
        // and only then raise the CancelledError.
        let now = inner.clock.time_msec();
        entry.last_observer_removed_time_ms.set(Some(now));
        inner.queue_prune_check(now, &key);
        let _ = make_deferred_yieldable(delay_cancellation(&d.as_any())).await;
        return Err(Failure::new(CancelledError));
    };

    let result = entry.result.observe();
    if inner.enable_logging.get() {
        if result.called() {
            log::info!(
                target: "synapse.util.caches.response_cache",
                "[{}]: using completed cached result for [{key:?}]",
                inner.name
            );
        } else {
            log::info!(
                target: "synapse.util.caches.response_cache",
                "[{}]: using incomplete cached result for [{key:?}]",
                inner.name
            );
        }
    }
    match make_deferred_yieldable(result).await {
        Err(f) if f.check::<CancelledError>() => {
            let now = inner.clock.time_msec();
            entry.last_observer_removed_time_ms.set(Some(now));
            inner.queue_prune_check(now, &key);
            Err(f)
        }
        other => other,
    }
}

impl<K, RV> Inner<K, RV>
where
    K: Hash + Eq + Clone + fmt::Debug + 'static,
    RV: Clone + 'static,
{
    /// `truthy(self.timeout)`.
    fn live_timeout(&self) -> Option<Micros> {
        self.timeout.filter(|t| t.is_truthy())
    }

    /// `unset(key)`.
    fn unset(&self, key: &K) {
        let removed = self.result_cache.borrow_mut().remove(key);
        drop(removed);
    }

    /// `_set(context, deferred, cancellable)`: stores the entry, then hooks
    /// its removal to the computation's end (callback before errback, and
    /// both after the entry is stored: the computation may be complete
    /// already).
    fn set(
        this: &Rc<Self>,
        context: ResponseCacheContext<K>,
        deferred: Deferred<RV>,
        cancellable: bool,
    ) -> Rc<Entry<RV>> {
        let result = ObservableDeferred::new(deferred, false);
        let key = context.cache_key().clone();
        let seq = this.next_seq.get();
        this.next_seq.set(seq + 1);
        let entry = Rc::new(Entry {
            result: result.clone(),
            cancellable,
            last_observer_removed_time_ms: Cell::new(None),
            seq,
        });
        this.result_cache
            .borrow_mut()
            .insert(key.clone(), entry.clone());

        let (weak, succeeded_key) = (Rc::downgrade(this), key.clone());
        result.add_callback(move |r: RV| {
            if let Some(inner) = weak.upgrade() {
                match inner.live_timeout() {
                    Some(timeout) if context.should_cache() => {
                        let weak: Weak<Self> = Rc::downgrade(&inner);
                        let _call = inner.clock.call_later(
                            timeout.as_secs(),
                            move || -> Result<(), Failure> {
                                // _entry_timeout(key)
                                if let Some(inner) = weak.upgrade() {
                                    inner.unset(&succeeded_key);
                                }
                                Ok(())
                            },
                        );
                    }
                    _ => inner.unset(&succeeded_key),
                }
            }
            Ok(r)
        });
        let weak = Rc::downgrade(this);
        result.cast::<()>().add_errback(move |_failure: Failure| {
            if let Some(inner) = weak.upgrade() {
                inner.unset(&key);
            }
            // Handled: errors are not cached, and not reported.
            Ok(())
        });
        entry
    }

    /// Stamps a prune check for `key`, `timeout` from `now`.
    fn queue_prune_check(&self, now: i64, key: &K) {
        if let (Some(timer), Some(timeout)) = (&self.prune_timer, self.live_timeout()) {
            timer
                .borrow_mut()
                .insert(now, key.clone(), now + timeout.as_millis());
        }
    }

    /// `_prune_inflight_entries`.
    fn prune_inflight_entries(this: &Rc<Self>) {
        let (Some(timer), Some(timeout)) = (&this.prune_timer, this.live_timeout()) else {
            return;
        };
        let now = this.clock.time_msec();
        let keys_to_check = timer.borrow_mut().fetch(now);
        for key in keys_to_check {
            let entry = this.result_cache.borrow().get(&key).cloned();
            let Some(entry) = entry else { continue };
            if !entry.cancellable || entry.result.has_called() || entry.result.has_observers() {
                continue;
            }
            let Some(last) = entry.last_observer_removed_time_ms.get() else {
                continue;
            };
            if now - last > timeout.as_millis() {
                this.unset(&key);
                // Best effort.
                let _ = entry.result.cancel();
            }
        }
    }
}
