//! [`DeferredQueue`]: Twisted's `twisted.internet.defer.DeferredQueue`, an
//! event-driven queue whose `get` returns a Deferred, with its errors
//! [`QueueOverflow`] and [`QueueUnderflow`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use crate::deferred::Deferred;
use crate::failure::Failure;
use crate::immediate::succeed;
use crate::lock::{hand_off, remove_waiter};

/// `put` on a full queue: `twisted.internet.defer.QueueOverflow`.
///
/// Python's has no message (`str()` is empty); this one's `Display`
/// follows the crate's convention of a short sentence.
///
/// ```
/// use twisted_deferred::{DeferredQueue, QueueOverflow};
/// let q = DeferredQueue::with_limits(Some(0), None);     // q = DeferredQueue(size=0)
/// let err = q.put(1).unwrap_err();                       // raises QueueOverflow
/// assert!(err.check::<QueueOverflow>());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueOverflow;

impl fmt::Display for QueueOverflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue is full")
    }
}
impl Error for QueueOverflow {}

/// `get` on an empty queue that already has `backlog` gets waiting:
/// `twisted.internet.defer.QueueUnderflow`.
///
/// Python's has no message (`str()` is empty); this one's `Display`
/// follows the crate's convention of a short sentence.
///
/// ```
/// use twisted_deferred::{DeferredQueue, QueueUnderflow};
/// let q = DeferredQueue::<i32>::with_limits(None, Some(0)); // q = DeferredQueue(backlog=0)
/// let err = q.get().unwrap_err();                        // raises QueueUnderflow
/// assert!(err.check::<QueueUnderflow>());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueUnderflow;

impl fmt::Display for QueueUnderflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("too many gets are waiting on the queue")
    }
}
impl Error for QueueUnderflow {}

struct QueueState<T: 'static> {
    waiting: RefCell<VecDeque<Deferred<T>>>,
    pending: RefCell<VecDeque<T>>,
    size: Cell<Option<usize>>,
    backlog: Cell<Option<usize>>,
}

/// An event-driven queue: Twisted's `DeferredQueue`.
///
/// [`put`](DeferredQueue::put) gives an item to the oldest waiting `get`,
/// firing its Deferred right there, inside `put()`; with nobody waiting it
/// stores the item (at most [`size`](DeferredQueue::size) of them).
/// [`get`](DeferredQueue::get) returns a Deferred already fired with the
/// oldest stored item, or a waiting Deferred (at most
/// [`backlog`](DeferredQueue::backlog) of them). Both limits are checked
/// synchronously: `put` fails with [`QueueOverflow`], `get` with
/// [`QueueUnderflow`]. A waiting get can be cancelled; it then leaves the
/// waiters and fails with [`CancelledError`](crate::CancelledError).
///
/// A cheap handle (one reference count); clones are the same queue.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use twisted_deferred::DeferredQueue;
///
/// let q = DeferredQueue::new();                          // q = DeferredQueue()
/// let log = Rc::new(RefCell::new(Vec::new()));
/// let l = log.clone();
/// // q.get().addCallback(lambda v: log.append(("getter runs inside put()", v)))
/// q.get().unwrap().add_callback(move |v: i32| { l.borrow_mut().push(format!("getter {v}")); Ok(()) });
/// q.put(1).unwrap();                                     // q.put(1)
/// log.borrow_mut().push("put returned".to_string());
/// assert_eq!(*log.borrow(), ["getter 1", "put returned"]);
/// ```
pub struct DeferredQueue<T: 'static> {
    state: Rc<QueueState<T>>,
}

impl<T: 'static> DeferredQueue<T> {
    /// `DeferredQueue()`: no limit on stored items nor on waiting gets.
    ///
    /// ```
    /// let q = twisted_deferred::DeferredQueue::<i32>::new();  // q = DeferredQueue()
    /// assert_eq!((q.size(), q.backlog()), (None, None));
    /// ```
    pub fn new() -> Self {
        DeferredQueue::with_limits(None, None)
    }

    /// `DeferredQueue(size, backlog)`: at most `size` stored items and
    /// `backlog` waiting gets (`None`: no limit). `Some(0)` makes every `put`
    /// without a waiter overflow, or every `get` on an empty queue underflow.
    ///
    /// ```
    /// use twisted_deferred::DeferredQueue;
    /// let q = DeferredQueue::with_limits(Some(1), Some(1));  // DeferredQueue(size=1, backlog=1)
    /// q.put("y").unwrap();
    /// assert!(q.put("z").is_err());                       // QueueOverflow
    /// ```
    pub fn with_limits(size: Option<usize>, backlog: Option<usize>) -> Self {
        DeferredQueue {
            state: Rc::new(QueueState {
                waiting: RefCell::new(VecDeque::new()),
                pending: RefCell::new(VecDeque::new()),
                size: Cell::new(size),
                backlog: Cell::new(backlog),
            }),
        }
    }

    /// `put(obj)`: fires the oldest waiting get's Deferred with `obj` before
    /// returning, if there is one; otherwise stores `obj` if there is room,
    /// else fails with [`QueueOverflow`] (and `obj` is dropped).
    ///
    /// Firing the waiter fails with
    /// [`AlreadyCalledError`](crate::AlreadyCalledError) if someone fired its
    /// Deferred by hand; that waiter is gone and `obj` lost, as in Twisted.
    ///
    /// ```
    /// use twisted_deferred::DeferredQueue;
    /// let q = DeferredQueue::new();
    /// let g = q.get().unwrap();                           // g = q.get()
    /// q.put("x").unwrap();                                // q.put("x")
    /// assert_eq!(g.result().value(), Some("x"));          // handed straight over
    /// assert_eq!(q.pending_len(), 0);
    /// ```
    pub fn put(&self, obj: T) -> Result<(), Failure> {
        let waiter = self.state.waiting.borrow_mut().pop_front();
        if let Some(d) = waiter {
            return hand_off(&self.state.waiting, d, obj);
        }
        let stored = self.state.pending.borrow().len();
        match self.state.size.get() {
            Some(size) if stored >= size => {
                drop(obj);
                Err(Failure::new(QueueOverflow))
            }
            _ => {
                self.state.pending.borrow_mut().push_back(obj);
                Ok(())
            }
        }
    }

    /// `get()`: a Deferred already fired with the oldest stored item (Python's
    /// `succeed(self.pending.pop(0))`); with none stored, a waiting Deferred
    /// if fewer than `backlog` gets wait, else [`QueueUnderflow`].
    ///
    /// Cancelling a waiting get removes it from the waiters (it fails with
    /// `CancelledError`, and a later `put` goes elsewhere); cancelling a get
    /// that has its item does nothing.
    ///
    /// ```
    /// use twisted_deferred::{CancelledError, DeferredQueue};
    /// let q = DeferredQueue::new();
    /// let g = q.get().unwrap();                           // g = q.get()
    /// g.cancel().unwrap();                                // g.cancel()
    /// assert!(g.result().failure().unwrap().check::<CancelledError>());
    /// q.put(1).unwrap();                                  // q.put(1)
    /// assert_eq!(q.pending(), [1]);                       // q.pending == [1]
    /// # g.add_errback(|_| Ok(0));
    /// ```
    pub fn get(&self) -> Result<Deferred<T>, Failure> {
        let item = self.state.pending.borrow_mut().pop_front();
        if let Some(item) = item {
            return Ok(succeed(item));
        }
        let waiting = self.state.waiting.borrow().len();
        if let Some(backlog) = self.state.backlog.get()
            && waiting >= backlog
        {
            return Err(Failure::new(QueueUnderflow));
        }
        let state = Rc::downgrade(&self.state);
        let d = Deferred::with_canceller(move |d: &Deferred<T>| {
            // `_cancelGet`: `self.waiting.remove(d)`
            if let Some(state) = state.upgrade() {
                remove_waiter(&state.waiting, d);
            }
        });
        self.state.waiting.borrow_mut().push_back(d.clone());
        Ok(d)
    }

    /// `len(q.waiting)`: how many gets wait for an item.
    ///
    /// ```
    /// let q = twisted_deferred::DeferredQueue::<i32>::new();
    /// q.get().unwrap();
    /// assert_eq!(q.waiting(), 1);                          // len(q.waiting)
    /// ```
    pub fn waiting(&self) -> usize {
        self.state.waiting.borrow().len()
    }

    /// `len(q.pending)`: how many items are stored.
    ///
    /// ```
    /// let q = twisted_deferred::DeferredQueue::new();
    /// q.put(()).unwrap();
    /// assert_eq!(q.pending_len(), 1);                      // len(q.pending)
    /// ```
    pub fn pending_len(&self) -> usize {
        self.state.pending.borrow().len()
    }

    /// `q.pending`: the stored items, oldest first, cloned.
    ///
    /// ```
    /// let q = twisted_deferred::DeferredQueue::new();
    /// q.put(1).unwrap();
    /// q.put(2).unwrap();
    /// assert_eq!(q.pending(), [1, 2]);                     // q.pending == [1, 2]
    /// ```
    pub fn pending(&self) -> Vec<T>
    where
        T: Clone,
    {
        self.state.pending.borrow().iter().cloned().collect()
    }

    /// `q.size`: the most items stored at once (`None`: no limit).
    ///
    /// ```
    /// let q = twisted_deferred::DeferredQueue::<u8>::with_limits(Some(2), None);
    /// assert_eq!(q.size(), Some(2));                       // q.size
    /// ```
    pub fn size(&self) -> Option<usize> {
        self.state.size.get()
    }

    /// `q.size = size`: changes the limit; items stored already stay.
    ///
    /// ```
    /// let q = twisted_deferred::DeferredQueue::new();
    /// q.set_size(Some(0));                                 // q.size = 0
    /// assert!(q.put(1).is_err());
    /// ```
    pub fn set_size(&self, size: Option<usize>) {
        self.state.size.set(size);
    }

    /// `q.backlog`: the most gets waiting at once (`None`: no limit).
    ///
    /// ```
    /// let q = twisted_deferred::DeferredQueue::<u8>::with_limits(None, Some(3));
    /// assert_eq!(q.backlog(), Some(3));                    // q.backlog
    /// ```
    pub fn backlog(&self) -> Option<usize> {
        self.state.backlog.get()
    }

    /// `q.backlog = backlog`: changes the limit; gets waiting already stay.
    ///
    /// ```
    /// let q = twisted_deferred::DeferredQueue::<u8>::new();
    /// q.set_backlog(Some(0));                              // q.backlog = 0
    /// assert!(q.get().is_err());
    /// ```
    pub fn set_backlog(&self, backlog: Option<usize>) {
        self.state.backlog.set(backlog);
    }

    /// True when both handles are the same queue (Python's `is`).
    ///
    /// ```
    /// let q = twisted_deferred::DeferredQueue::<u8>::new();
    /// assert!(q.ptr_eq(&q.clone()));                       // q is q
    /// ```
    pub fn ptr_eq(&self, other: &DeferredQueue<T>) -> bool {
        Rc::ptr_eq(&self.state, &other.state)
    }
}

impl<T: 'static> Clone for DeferredQueue<T> {
    fn clone(&self) -> Self {
        DeferredQueue {
            state: self.state.clone(),
        }
    }
}

impl<T: 'static> Default for DeferredQueue<T> {
    fn default() -> Self {
        DeferredQueue::new()
    }
}

impl<T: 'static> fmt::Debug for DeferredQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeferredQueue")
            .field("pending", &self.pending_len())
            .field("waiting", &self.waiting())
            .field("size", &self.size())
            .field("backlog", &self.backlog())
            .finish()
    }
}
