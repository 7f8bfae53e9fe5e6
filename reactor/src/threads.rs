//! Work done elsewhere, results on the reactor thread: Twisted's
//! `twisted.internet.threads` (`deferToThread`, `deferToThreadPool`) and,
//! for Rust futures, `Deferred.fromFuture` on a reactor.
//!
//! A Deferred belongs to the reactor thread, so a worker thread never
//! touches it: the worker's outcome travels through the reactor's
//! `callFromThread` queue and the Deferred fires on the reactor thread, in
//! the loop. Errors cross threads as their own (`Send`) type and become a
//! [`Failure`] there; a panic becomes a
//! [`PanicError`](twisted_deferred::PanicError) failure.
//!
//! ```
//! use twisted_reactor::{Reactor, defer_to_thread};
//!
//! let reactor = Reactor::new().unwrap();
//! // d = deferToThread(lambda: sum(range(1000)))
//! let d = defer_to_thread(&reactor, || Ok::<u64, std::io::Error>((0..1000).sum()));
//! let r = reactor.clone();
//! let d = d.add_callback(move |total| {
//!     r.stop().unwrap();
//!     Ok(total)
//! });
//! reactor.run().unwrap();
//! assert_eq!(d.result().value(), Some(499_500));
//! ```

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use twisted_deferred::{Deferred, Failure};

use crate::error::ThreadPoolStopped;
use crate::reactor::Reactor;
use crate::thread_hand_off::ReactorHandle;
use crate::threadpool::ThreadPool;

/// What a worker hands back: the function's `Result`, or its panic.
type ThreadOutcome<T, E> = std::thread::Result<Result<T, E>>;

/// Brings a worker's outcome back to the reactor thread; if it is dropped
/// unsent (the pool dropped the work), the Deferred fails with
/// [`ThreadPoolStopped`] instead of waiting forever.
struct Delivery<T: 'static, E> {
    id: u64,
    handle: ReactorHandle,
    sent: bool,
    _types: PhantomData<fn() -> (T, E)>,
}

impl<T, E> Delivery<T, E>
where
    T: Send + 'static,
    E: Error + Send + 'static,
{
    fn deliver(mut self, outcome: ThreadOutcome<T, E>) {
        self.sent = true;
        let id = self.id;
        // A reactor that is gone has dropped the Deferred too.
        let _ = self.handle.call_from_thread(move |reactor| {
            fire_pending::<T>(reactor, id, |deferred| match outcome {
                Ok(Ok(value)) => deferred.callback(value),
                Ok(Err(e)) => deferred.errback(Failure::new(e)),
                Err(panic) => deferred.errback(Failure::from_panic(panic)),
            });
        });
    }
}

impl<T: 'static, E> Drop for Delivery<T, E> {
    fn drop(&mut self) {
        if !self.sent {
            let id = self.id;
            let _ = self.handle.call_from_thread(move |reactor| {
                fire_pending::<T>(reactor, id, |deferred| {
                    deferred.errback(Failure::new(ThreadPoolStopped))
                });
            });
        }
    }
}

/// On the reactor thread: fires the Deferred registered under `id`, if it
/// is still waiting.
fn fire_pending<T: 'static>(
    reactor: &Reactor,
    id: u64,
    fire: impl FnOnce(&Deferred<T>) -> Result<(), Failure>,
) {
    let Some(pending) = reactor.take_pending(id) else {
        return;
    };
    let Ok(deferred) = pending.downcast::<Deferred<T>>() else {
        return;
    };
    if let Err(failure) = fire(&deferred) {
        log::error!("could not fire a Deferred with a thread's result: {failure}");
    }
}

/// `deferToThreadPool(reactor, threadpool, f)`: runs `f` on `pool` and
/// returns a Deferred that fires, on the reactor thread, with `f`'s value,
/// or fails with its error (or its panic, as a
/// [`PanicError`](twisted_deferred::PanicError)). Fails with
/// [`ThreadPoolStopped`] if the pool refuses the work or drops it unrun.
///
/// The Deferred has no canceller (as in Twisted): cancelling it fails it
/// with `CancelledError` at once; the work still runs and its result is
/// ignored.
///
/// ```
/// use twisted_reactor::{Reactor, ThreadPool, defer_to_threadpool};
///
/// let reactor = Reactor::new().unwrap();
/// let pool = ThreadPool::new(0, 2, "mine").unwrap();
/// pool.start();
/// // d = deferToThreadPool(reactor, pool, lambda: 6 * 7)
/// let d = defer_to_threadpool(&reactor, &pool, || Ok::<_, std::io::Error>(6 * 7));
/// let r = reactor.clone();
/// let d = d.add_callback(move |v| { r.stop().unwrap(); Ok(v) });
/// reactor.run().unwrap();
/// pool.stop();
/// assert_eq!(d.result().value(), Some(42));
/// ```
pub fn defer_to_threadpool<T, E, F>(reactor: &Reactor, pool: &ThreadPool, f: F) -> Deferred<T>
where
    T: Send + 'static,
    E: Error + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    let deferred = Deferred::new();
    let id = reactor.next_id();
    reactor.add_pending(id, Box::new(deferred.clone()));
    let delivery: Delivery<T, E> = Delivery {
        id,
        handle: reactor.handle(),
        sent: false,
        _types: PhantomData,
    };
    let queued = pool.call_in_thread(move || {
        let outcome = catch_unwind(AssertUnwindSafe(f));
        delivery.deliver(outcome);
    });
    if queued.is_err() {
        // Refused: fail now (the dropped delivery's message finds nothing).
        reactor.take_pending(id);
        let _ = deferred.errback(Failure::new(ThreadPoolStopped));
    }
    deferred
}

/// `deferToThread(f)`: [`defer_to_threadpool`] on the reactor's own pool
/// ([`Reactor::get_thread_pool`], started when the reactor runs).
///
/// ```
/// use twisted_reactor::{Reactor, defer_to_thread};
/// let reactor = Reactor::new().unwrap();
/// let d = defer_to_thread(&reactor, || std::fs::metadata("/").map(|m| m.is_dir()));  // deferToThread(os.path.isdir, "/")
/// let r = reactor.clone();
/// let d = d.add_both(move |outcome| { r.stop().unwrap(); outcome });
/// reactor.run().unwrap();
/// assert!(d.called());
/// # d.add_errback(|_| Ok(false));
/// ```
pub fn defer_to_thread<T, E, F>(reactor: &Reactor, f: F) -> Deferred<T>
where
    T: Send + 'static,
    E: Error + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    defer_to_threadpool(reactor, &reactor.get_thread_pool(), f)
}

/// A future polled on the reactor thread by [`Reactor::defer_future`].
pub(crate) struct FutureTask {
    future: RefCell<Option<Pin<Box<dyn Future<Output = ()>>>>>,
    waker: Arc<TaskWaker>,
    cancelled: Cell<bool>,
}

/// Wakes a [`FutureTask`] from any thread: queues a poll through the
/// reactor's `callFromThread` queue, which wakes the loop at once.
struct TaskWaker {
    id: u64,
    handle: ReactorHandle,
    /// A poll is queued already.
    scheduled: AtomicBool,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            let id = self.id;
            // A reactor that is gone has dropped the task too.
            let _ = self
                .handle
                .call_from_thread(move |reactor| poll_task(reactor, id));
        }
    }
}

/// Polls a future's output out under `catch_unwind`, as a failure if it
/// panicked.
struct Guarded<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, Failure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(move || inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(Failure::from_panic(panic))),
        }
    }
}

fn poll_task(reactor: &Reactor, id: u64) {
    let task = reactor.inner_tasks().borrow().get(&id).cloned();
    let Some(task) = task else {
        return;
    };
    task.waker.scheduled.store(false, Ordering::Release);
    // `None`: it is being polled right now (a wake from inside its own
    // poll); the queued poll that wake made comes later.
    let Some(mut future) = task.future.borrow_mut().take() else {
        return;
    };
    let waker = Waker::from(task.waker.clone());
    let mut cx = Context::from_waker(&waker);
    match future.as_mut().poll(&mut cx) {
        Poll::Pending if !task.cancelled.get() => {
            *task.future.borrow_mut() = Some(future);
        }
        _ => {
            reactor.inner_tasks().borrow_mut().remove(&id);
            drop(future);
        }
    }
}

impl Reactor {
    /// `Deferred.fromFuture(future)` on this reactor: a Deferred that fires
    /// with `future`'s output (`Err(e)` errbacks with `e.into()`; a panic
    /// with a [`PanicError`](twisted_deferred::PanicError)).
    ///
    /// The future is polled on the reactor thread (first right away, inside
    /// this call), and its waker may be called from any thread: a wake
    /// queues the next poll through [`call_from_thread`](ReactorHandle::call_from_thread),
    /// waking the loop at once. So it suits futures completed elsewhere: a
    /// channel fed by another thread, a task spawned on another runtime
    /// (await its join handle), any `Send` future driven by someone else.
    /// Cancelling the Deferred drops the future and fails with
    /// `CancelledError`.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::task::{Poll, Waker};
    /// use twisted_deferred::Failure;
    /// use twisted_reactor::Reactor;
    ///
    /// // A one-value channel, filled by another thread.
    /// let slot: Arc<Mutex<(Option<u32>, Option<Waker>)>> = Arc::default();
    /// let reactor = Reactor::new().unwrap();
    /// let s = slot.clone();
    /// let d = reactor.defer_future(std::future::poll_fn(move |cx| {
    ///     let mut slot = s.lock().unwrap();
    ///     match slot.0.take() {
    ///         Some(v) => Poll::Ready(Ok::<_, Failure>(v)),
    ///         None => { slot.1 = Some(cx.waker().clone()); Poll::Pending }
    ///     }
    /// }));
    /// std::thread::spawn(move || {
    ///     let mut slot = slot.lock().unwrap();
    ///     slot.0 = Some(42);
    ///     if let Some(w) = slot.1.take() { w.wake(); }                // wakes the reactor
    /// });
    /// let r = reactor.clone();
    /// let d = d.add_callback(move |v| { r.stop().unwrap(); Ok(v) });
    /// reactor.run().unwrap();
    /// assert_eq!(d.result().value(), Some(42));
    /// ```
    pub fn defer_future<T, E, F>(&self, future: F) -> Deferred<T>
    where
        T: 'static,
        E: Into<Failure> + 'static,
        F: Future<Output = Result<T, E>> + 'static,
    {
        let id = self.next_id();
        let weak = self.downgrade();
        let deferred: Deferred<T> = Deferred::with_canceller(move |_d: &Deferred<T>| {
            if let Some(reactor) = Reactor::upgrade(&weak) {
                reactor.cancel_task(id);
            }
        });
        let fire = deferred.clone();
        let body = async move {
            let outcome = Guarded {
                inner: Box::pin(future),
            }
            .await;
            let fired = match outcome {
                Ok(Ok(value)) => fire.callback(value),
                Ok(Err(e)) => fire.errback(e.into()),
                Err(panic) => fire.errback(panic),
            };
            if let Err(failure) = fired {
                log::error!("could not fire a Deferred with a future's output: {failure}");
            }
        };
        let task = Rc::new(FutureTask {
            future: RefCell::new(Some(Box::pin(body))),
            waker: Arc::new(TaskWaker {
                id,
                handle: self.handle(),
                scheduled: AtomicBool::new(false),
            }),
            cancelled: Cell::new(false),
        });
        self.inner_tasks().borrow_mut().insert(id, task);
        poll_task(self, id);
        deferred
    }

    fn cancel_task(&self, id: u64) {
        let task = self.inner_tasks().borrow_mut().remove(&id);
        if let Some(task) = task {
            task.cancelled.set(true);
            let future = task.future.borrow_mut().take();
            drop(future);
        }
    }
}
