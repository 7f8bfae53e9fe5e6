//! Synapse's `synapse.util.async_helpers.ReadWriteLock`: a per-key
//! reader/writer lock in which later readers queue behind a waiting writer.
//!
//! # Python's `async with`, in Rust
//!
//! `async with rwlock.read(key):` and `async with rwlock.write(key):` become
//! [`ReadWriteLock::read`] and [`ReadWriteLock::write`], futures resolving
//! to a [`ReadWriteLockGuard`] that releases the lock when dropped (Python's
//! `finally`). The guard's place in the queue is taken when the future is
//! first polled and released when the guard (or the pending future) is
//! dropped, as Python's `try`/`finally` spans the wait and the body:
//!
//! ```
//! use twisted_compat::{Failure, ReadWriteLock};
//! use twisted_deferred::ensure_deferred;
//!
//! let lock = ReadWriteLock::new();                       // ReadWriteLock()
//! let l = lock.clone();
//! let d = ensure_deferred(async move {
//!     let _guard = l.write("room").await?;               // async with lock.write("room"):
//!     Ok::<_, Failure>(())                               //     ... released at the end
//! });
//! assert!(d.called());                                   // uncontended: synchronous
//! ```
//!
//! # Behaviour
//!
//! * Readers share; a writer is exclusive.
//! * A new reader waits only for the latest writer queued when it arrives.
//!   A new writer waits for every reader that arrived since the previous
//!   writer, and for that writer, then becomes the latest writer: readers
//!   arriving after a queued writer wait for it.
//! * Acquiring without contention is synchronous, and so is every
//!   hand-off (a chain of writers finishing at once completes inside the
//!   first release).
//! * A reader cancelled while waiting fails with `CancelledError` at once
//!   (Synapse wraps the writer in `stop_cancellation`) and gives its place
//!   back at once; the writer it waited for is not cancelled.
//! * A writer cancelled while waiting fails with `CancelledError` only once
//!   it would have got the lock (`delay_cancellation`), and then releases it
//!   at once without running its body; nothing it waited for is cancelled,
//!   and the writers behind it keep their order.
//! * A holder cancelled (or failing) releases the lock on its way out.
//! * Releases happen in the sentinel logging context; waiting follows the
//!   logging-context rules (the sentinel while waiting, the caller's
//!   context back on resumption).
//!
//! Synapse keeps an empty reader set behind for every key ever read; this
//! implementation drops a key's reader set once it is empty, which nothing
//! can observe.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::rc::Rc;

use twisted_deferred::{Deferred, Failure, gather_results};

use crate::cancellation::{delay_cancellation, stop_cancellation};
use crate::logcontext::{PreserveLoggingContext, make_deferred_yieldable};

struct Inner<K> {
    /// `key_to_current_readers`: the readers queued since the latest
    /// writer, by a sequence number.
    key_to_current_readers: RefCell<HashMap<K, BTreeMap<u64, Deferred<()>>>>,
    /// `key_to_current_writer`: the latest writer queued.
    key_to_current_writer: RefCell<HashMap<K, Deferred<()>>>,
    next_reader: Cell<u64>,
}

/// Synapse's `ReadWriteLock`: an async reader/writer lock per key. See the
/// [module docs](crate::rwlock) for the guard standing for `async with` and
/// the ordering rules.
///
/// A cheap handle: clones share the same lock.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use twisted_compat::{Deferred, Failure, ReadWriteLock};
/// use twisted_deferred::ensure_deferred;
///
/// let lock = ReadWriteLock::new();
/// let log = Rc::new(RefCell::new(Vec::new()));
/// let gate: Deferred<()> = Deferred::new();
/// let (l, g, k) = (lock.clone(), gate.clone(), log.clone());
/// ensure_deferred(async move {
///     let _r = l.read("k").await?;                       // async with lock.read("k"):
///     k.borrow_mut().push("reader in");
///     g.await?;
///     Ok::<_, Failure>(())
/// });
/// let (l, k) = (lock.clone(), log.clone());
/// ensure_deferred(async move {
///     let _w = l.write("k").await?;                      // async with lock.write("k"):
///     k.borrow_mut().push("writer in");
///     Ok::<_, Failure>(())
/// });
/// assert_eq!(*log.borrow(), ["reader in"]);              // the writer waits for the reader
/// gate.callback(()).unwrap();
/// assert_eq!(*log.borrow(), ["reader in", "writer in"]);
/// ```
pub struct ReadWriteLock<K> {
    inner: Rc<Inner<K>>,
}

impl<K> Clone for ReadWriteLock<K> {
    fn clone(&self) -> Self {
        ReadWriteLock {
            inner: self.inner.clone(),
        }
    }
}

impl<K> fmt::Debug for ReadWriteLock<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadWriteLock")
            .field(
                "keys_with_readers",
                &self.inner.key_to_current_readers.borrow().len(),
            )
            .field(
                "keys_with_writer",
                &self.inner.key_to_current_writer.borrow().len(),
            )
            .finish()
    }
}

impl<K: Hash + Eq + Clone + 'static> Default for ReadWriteLock<K> {
    fn default() -> Self {
        ReadWriteLock::new()
    }
}

impl<K: Hash + Eq + Clone + 'static> ReadWriteLock<K> {
    /// `ReadWriteLock()`.
    ///
    /// ```
    /// use twisted_compat::ReadWriteLock;
    /// let lock: ReadWriteLock<String> = ReadWriteLock::new();   // ReadWriteLock()
    /// # let _ = lock;
    /// ```
    pub fn new() -> Self {
        ReadWriteLock {
            inner: Rc::new(Inner {
                key_to_current_readers: RefCell::new(HashMap::new()),
                key_to_current_writer: RefCell::new(HashMap::new()),
                next_reader: Cell::new(0),
            }),
        }
    }

    /// `async with lock.read(key):`: a future resolving to a read guard
    /// once the latest writer queued on `key` (when it is first polled) has
    /// released. Cancelling the coroutine awaiting it fails it with
    /// `CancelledError` at once, without cancelling that writer.
    ///
    /// ```
    /// use twisted_compat::{Failure, ReadWriteLock};
    /// use twisted_deferred::ensure_deferred;
    ///
    /// let lock = ReadWriteLock::new();
    /// let (a, b) = (lock.clone(), lock.clone());
    /// let d = ensure_deferred(async move {
    ///     let _r1 = a.read("k").await?;                  // async with lock.read("k"):
    ///     let _r2 = b.read("k").await?;                  //     async with lock.read("k"):
    ///     Ok::<_, Failure>("readers share")
    /// });
    /// assert_eq!(d.result().value(), Some("readers share"));
    /// ```
    pub fn read(
        &self,
        key: K,
    ) -> impl Future<Output = Result<ReadWriteLockGuard<K>, Failure>> + 'static {
        let inner = self.inner.clone();
        async move {
            let new_defer: Deferred<()> = Deferred::new();
            let id = inner.next_reader.get();
            inner.next_reader.set(id + 1);
            let curr_writer = inner.key_to_current_writer.borrow().get(&key).cloned();
            inner
                .key_to_current_readers
                .borrow_mut()
                .entry(key.clone())
                .or_default()
                .insert(id, new_defer.clone());
            // try: ... finally: the guard releases, whatever happens next.
            let guard = ReadWriteLockGuard {
                inner,
                key,
                new_defer,
                kind: Kind::Read(id),
                released: false,
            };
            // Wait for the latest writer to finish. Cancelling us must not
            // cancel it: we do not own it.
            if let Some(writer) = curr_writer {
                make_deferred_yieldable(stop_cancellation(&writer)).await?;
            }
            Ok(guard)
        }
    }

    /// `async with lock.write(key):`: a future resolving to a write guard
    /// once every reader queued on `key` since the previous writer, and
    /// that writer, have released. Cancelling the coroutine awaiting it
    /// fails it with `CancelledError` only once it would have got the lock
    /// (it then releases at once); nothing it waits for is cancelled.
    ///
    /// ```
    /// use twisted_compat::{Deferred, Failure, ReadWriteLock};
    /// use twisted_deferred::ensure_deferred;
    ///
    /// let lock = ReadWriteLock::new();
    /// let gate: Deferred<()> = Deferred::new();
    /// let (l, g) = (lock.clone(), gate.clone());
    /// ensure_deferred(async move {
    ///     let _w = l.write("k").await?;                  // async with lock.write("k"):
    ///     g.await?;
    ///     Ok::<_, Failure>(())
    /// });
    /// let l = lock.clone();
    /// let second = ensure_deferred(async move {
    ///     let _w = l.write("k").await?;                  // async with lock.write("k"):
    ///     Ok::<_, Failure>(())
    /// });
    /// assert!(!second.called());                          // exclusive
    /// gate.callback(()).unwrap();
    /// assert!(second.called());
    /// ```
    pub fn write(
        &self,
        key: K,
    ) -> impl Future<Output = Result<ReadWriteLockGuard<K>, Failure>> + 'static {
        let inner = self.inner.clone();
        async move {
            let new_defer: Deferred<()> = Deferred::new();
            // We wait on all latest readers and the latest writer, and can
            // forget those readers since `new_defer` waits for them.
            let curr_readers = inner.key_to_current_readers.borrow_mut().remove(&key);
            let curr_writer = inner
                .key_to_current_writer
                .borrow_mut()
                .insert(key.clone(), new_defer.clone());
            let mut to_wait_on: Vec<Deferred<()>> = curr_readers
                .into_iter()
                .flat_map(|r| r.into_values())
                .collect();
            to_wait_on.extend(curr_writer);
            let to_wait_on_defer = gather_results(to_wait_on, false);
            let guard = ReadWriteLockGuard {
                inner,
                key,
                new_defer,
                kind: Kind::Write,
                released: false,
            };
            // The CancelledError comes out once we would have the lock, so
            // that we release it only after acquiring it.
            make_deferred_yieldable(delay_cancellation(&to_wait_on_defer)).await?;
            Ok(guard)
        }
    }
}

enum Kind {
    /// A reader, with its number in the key's reader set.
    Read(u64),
    Write,
}

/// A read or write lock on one key of a [`ReadWriteLock`], held until
/// dropped: the body of Python's `async with lock.read(key):` /
/// `async with lock.write(key):` block.
///
/// Dropping it releases the lock in the sentinel logging context; whoever
/// waited for it resumes inside the drop.
///
/// ```
/// use twisted_compat::{Failure, ReadWriteLock};
/// use twisted_deferred::ensure_deferred;
///
/// let lock = ReadWriteLock::new();
/// let l = lock.clone();
/// ensure_deferred(async move {
///     let guard = l.read(3).await?;                      // async with lock.read(3):
///     assert!(guard.is_read());
///     Ok::<_, Failure>(())
/// });
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ReadWriteLockGuard<K: Hash + Eq + Clone + 'static> {
    inner: Rc<Inner<K>>,
    key: K,
    new_defer: Deferred<()>,
    kind: Kind,
    released: bool,
}

impl<K: Hash + Eq + Clone + 'static> ReadWriteLockGuard<K> {
    /// The key this guard locks.
    ///
    /// ```
    /// use twisted_compat::{Failure, ReadWriteLock};
    /// use twisted_deferred::ensure_deferred;
    /// let lock = ReadWriteLock::new();
    /// ensure_deferred(async move {
    ///     let guard = lock.write("k").await?;            // async with lock.write("k"):
    ///     assert_eq!(*guard.key(), "k");
    ///     Ok::<_, Failure>(())
    /// });
    /// ```
    pub fn key(&self) -> &K {
        &self.key
    }

    /// True for a read lock, false for a write lock.
    ///
    /// ```
    /// use twisted_compat::{Failure, ReadWriteLock};
    /// use twisted_deferred::ensure_deferred;
    /// let lock = ReadWriteLock::new();
    /// ensure_deferred(async move {
    ///     assert!(!lock.write(1).await?.is_read());       // async with lock.write(1):
    ///     Ok::<_, Failure>(())
    /// });
    /// ```
    pub fn is_read(&self) -> bool {
        matches!(self.kind, Kind::Read(_))
    }

    /// Releases the lock now (the end of the `async with` block); the same
    /// as dropping the guard.
    ///
    /// ```
    /// use twisted_compat::{Failure, ReadWriteLock};
    /// use twisted_deferred::ensure_deferred;
    /// let lock = ReadWriteLock::new();
    /// let l = lock.clone();
    /// ensure_deferred(async move {
    ///     let guard = l.write("k").await?;               // async with lock.write("k"):
    ///     guard.release();                               //     (block ends)
    ///     let _again = l.write("k").await?;              // free again at once
    ///     Ok::<_, Failure>(())
    /// });
    /// ```
    pub fn release(mut self) {
        self.release_now();
    }

    fn release_now(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        {
            let _preserve = PreserveLoggingContext::sentinel();
            let _ = self.new_defer.callback(());
        }
        match self.kind {
            Kind::Read(id) => {
                let mut readers = self.inner.key_to_current_readers.borrow_mut();
                if let Some(set) = readers.get_mut(&self.key) {
                    set.remove(&id);
                    if set.is_empty() {
                        readers.remove(&self.key);
                    }
                }
            }
            Kind::Write => {
                // The entry may be gone, or be a later writer's, if a writer
                // waiting for us completed entirely within the callback
                // above.
                let mut writers = self.inner.key_to_current_writer.borrow_mut();
                if writers
                    .get(&self.key)
                    .is_some_and(|w| w.ptr_eq(&self.new_defer))
                {
                    writers.remove(&self.key);
                }
            }
        }
    }
}

impl<K: Hash + Eq + Clone + 'static> Drop for ReadWriteLockGuard<K> {
    fn drop(&mut self) {
        self.release_now();
    }
}

impl<K: Hash + Eq + Clone + 'static> fmt::Debug for ReadWriteLockGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadWriteLockGuard")
            .field("read", &self.is_read())
            .field("released", &self.released)
            .finish_non_exhaustive()
    }
}
