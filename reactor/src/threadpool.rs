//! [`ThreadPool`]: Twisted's `twisted.python.threadpool.ThreadPool`, a
//! pool of worker threads that run blocking functions.
//!
//! Work queued before [`start`](ThreadPool::start) waits for it. Workers
//! are started on demand, up to `max`, and at least `min` run once started.
//! [`stop`](ThreadPool::stop) refuses new work, lets the workers finish
//! what is queued (Twisted's team does not honour `quit` for pending work),
//! and joins them; a stopped pool can be started again.
//!
//! The pool is a `Send + Sync` handle; clones share the pool. Results come
//! back to the reactor thread through
//! [`defer_to_threadpool`](crate::defer_to_threadpool).
//!
//! ```
//! use std::sync::mpsc;
//! use twisted_reactor::ThreadPool;
//!
//! let pool = ThreadPool::new(0, 4, "example").unwrap();            // pool = ThreadPool(0, 4, "example")
//! pool.start();                                                     // pool.start()
//! let (tx, rx) = mpsc::channel();
//! pool.call_in_thread(move || tx.send(6 * 7).unwrap()).unwrap();   // pool.callInThread(f)
//! assert_eq!(rx.recv().unwrap(), 42);
//! pool.stop();                                                      // pool.stop()
//! ```

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::error::{PoolSizeError, ThreadPoolStopped};

type Job = Box<dyn FnOnce() + Send>;

/// What a function run by [`ThreadPool::call_in_thread_with_callback`]
/// produced: its value, or the payload of its panic (Python's
/// `(success, result)` pair).
///
/// ```
/// use twisted_reactor::ThreadResult;
/// fn on_result(r: ThreadResult<u32>) -> bool { r.is_ok() }          // def onResult(success, result)
/// assert!(on_result(Ok(1)));
/// ```
pub type ThreadResult<R> = Result<R, Box<dyn Any + Send>>;

struct State {
    queue: VecDeque<Job>,
    min: usize,
    max: usize,
    started: bool,
    joined: bool,
    /// Workers alive.
    workers: usize,
    /// Workers waiting for work.
    idle: usize,
    /// Idle workers asked to exit (`shrink`).
    to_shrink: usize,
    /// Every worker exits once the queue is empty (`stop`).
    quitting: bool,
    handles: Vec<JoinHandle<()>>,
    spawned: u64,
}

struct Shared {
    name: String,
    state: Mutex<State>,
    work: Condvar,
}

/// A pool of threads for blocking work: Twisted's `ThreadPool`.
///
/// ```
/// use std::sync::mpsc;
/// let pool = twisted_reactor::ThreadPool::new(0, 2, "work").unwrap();  // ThreadPool(0, 2, "work")
/// pool.start();
/// let (tx, rx) = mpsc::channel();
/// pool.call_in_thread(move || tx.send(std::thread::current().name().map(String::from)).unwrap()).unwrap();
/// assert!(rx.recv().unwrap().unwrap().starts_with("PoolThread-work-"));
/// pool.stop();
/// ```
#[derive(Clone)]
pub struct ThreadPool {
    shared: Arc<Shared>,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    match shared.state.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl ThreadPool {
    /// `ThreadPool(minthreads, maxthreads, name)`: a stopped pool. Fails
    /// when `min > max` (Python asserts).
    ///
    /// ```
    /// use twisted_reactor::ThreadPool;
    /// let pool = ThreadPool::new(1, 3, "db").unwrap();                 // ThreadPool(1, 3, "db")
    /// assert_eq!((pool.min(), pool.max(), pool.started()), (1, 3, false));
    /// assert!(ThreadPool::new(4, 3, "db").is_err());
    /// ```
    pub fn new(min: usize, max: usize, name: &str) -> Result<ThreadPool, PoolSizeError> {
        if min > max {
            return Err(PoolSizeError { min, max });
        }
        Ok(ThreadPool::with_bounds(min, max, name))
    }

    /// `new` without the check; `min <= max`.
    pub(crate) fn with_bounds(min: usize, max: usize, name: &str) -> ThreadPool {
        ThreadPool {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    min,
                    max,
                    started: false,
                    joined: false,
                    workers: 0,
                    idle: 0,
                    to_shrink: 0,
                    quitting: false,
                    handles: Vec::new(),
                    spawned: 0,
                }),
                work: Condvar::new(),
            }),
        }
    }

    /// `start()`: starts `min` workers, and more for work already queued.
    /// Starting a started pool does nothing more.
    ///
    /// ```
    /// let pool = twisted_reactor::ThreadPool::new(2, 4, "p").unwrap();
    /// pool.start();                                                   // pool.start()
    /// assert!(pool.started());
    /// assert_eq!(pool.workers(), 2);
    /// pool.stop();
    /// ```
    pub fn start(&self) {
        let mut state = lock(&self.shared);
        state.joined = false;
        state.started = true;
        state.quitting = false;
        let wanted = state.min.max(state.queue.len().min(state.max));
        while state.workers < wanted {
            if !self.spawn_worker(&mut state) {
                break;
            }
        }
    }

    /// `stop()`: refuses new work, lets the workers finish the work queued,
    /// and waits for them to exit. Work queued in a pool that never started
    /// is dropped (anything waiting on it is told, see
    /// [`defer_to_threadpool`](crate::defer_to_threadpool)). Called from
    /// one of the pool's own workers, it does not wait for that worker.
    ///
    /// ```
    /// let pool = twisted_reactor::ThreadPool::new(0, 2, "p").unwrap();
    /// pool.start();
    /// pool.call_in_thread(|| std::thread::sleep(std::time::Duration::from_millis(10))).unwrap();
    /// pool.stop();                                                    // pool.stop(): joins the worker
    /// assert_eq!(pool.workers(), 0);
    /// assert!(!pool.started());
    /// ```
    pub fn stop(&self) {
        let (handles, dropped) = {
            let mut state = lock(&self.shared);
            state.joined = true;
            state.started = false;
            state.quitting = true;
            let dropped = if state.workers == 0 {
                std::mem::take(&mut state.queue)
            } else {
                VecDeque::new()
            };
            (std::mem::take(&mut state.handles), dropped)
        };
        self.shared.work.notify_all();
        drop(dropped);
        let me = std::thread::current().id();
        for handle in handles {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
    }

    /// `callInThread(f)`: runs `f` on a worker. A panic in `f` is logged
    /// (Python's `log.err`). Fails once the pool was stopped (Twisted drops
    /// the work silently).
    ///
    /// ```
    /// use std::sync::mpsc;
    /// let pool = twisted_reactor::ThreadPool::new(0, 1, "p").unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// pool.call_in_thread(move || tx.send("ran").unwrap()).unwrap();  // queued until start
    /// pool.start();
    /// assert_eq!(rx.recv().unwrap(), "ran");
    /// pool.stop();
    /// ```
    pub fn call_in_thread<F>(&self, f: F) -> Result<(), ThreadPoolStopped>
    where
        F: FnOnce() + Send + 'static,
    {
        self.dispatch(Box::new(move || {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
                log::error!(
                    "Unhandled error in a thread pool worker: {}",
                    twisted_deferred::Failure::from_panic(panic)
                );
            }
        }))
    }

    /// `callInThreadWithCallback(onResult, f)`: runs `f` on a worker, then,
    /// on that same worker, `on_result` with `f`'s value or its panic.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// let pool = twisted_reactor::ThreadPool::new(0, 1, "p").unwrap();
    /// pool.start();
    /// let (tx, rx) = mpsc::channel();
    /// // pool.callInThreadWithCallback(onResult, lambda: 2 + 2)
    /// pool.call_in_thread_with_callback(move |r| tx.send(r.ok()).unwrap(), || 2 + 2).unwrap();
    /// assert_eq!(rx.recv().unwrap(), Some(4));
    /// pool.stop();
    /// ```
    pub fn call_in_thread_with_callback<R, F, C>(
        &self,
        on_result: C,
        f: F,
    ) -> Result<(), ThreadPoolStopped>
    where
        R: 'static,
        F: FnOnce() -> R + Send + 'static,
        C: FnOnce(ThreadResult<R>) + Send + 'static,
    {
        self.dispatch(Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(f));
            if let Err(panic) = catch_unwind(AssertUnwindSafe(move || on_result(result))) {
                log::error!(
                    "Unhandled error in a thread pool result callback: {}",
                    twisted_deferred::Failure::from_panic(panic)
                );
            }
        }))
    }

    fn dispatch(&self, job: Job) -> Result<(), ThreadPoolStopped> {
        let mut state = lock(&self.shared);
        if state.joined {
            return Err(ThreadPoolStopped);
        }
        state.queue.push_back(job);
        if state.started && state.queue.len() > state.idle && state.workers < state.max {
            self.spawn_worker(&mut state);
        }
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    /// `adjustPoolsize(min, max)`: new bounds; a started pool starts or
    /// retires workers to fit them (busy workers finish their work first).
    ///
    /// ```
    /// let pool = twisted_reactor::ThreadPool::new(0, 10, "p").unwrap();
    /// pool.start();
    /// pool.adjust_pool_size(3, 5).unwrap();                           // pool.adjustPoolsize(3, 5)
    /// assert_eq!(pool.workers(), 3);
    /// assert!(pool.adjust_pool_size(6, 5).is_err());
    /// pool.stop();
    /// ```
    pub fn adjust_pool_size(&self, min: usize, max: usize) -> Result<(), PoolSizeError> {
        if min > max {
            return Err(PoolSizeError { min, max });
        }
        let mut state = lock(&self.shared);
        state.min = min;
        state.max = max;
        if !state.started {
            return Ok(());
        }
        let surplus = state.workers.saturating_sub(state.to_shrink);
        if surplus > max {
            state.to_shrink += surplus - max;
            drop(state);
            self.shared.work.notify_all();
            return Ok(());
        }
        while state.workers < min {
            if !self.spawn_worker(&mut state) {
                break;
            }
        }
        Ok(())
    }

    /// The minimum number of workers (`min`).
    ///
    /// ```
    /// assert_eq!(twisted_reactor::ThreadPool::new(2, 3, "p").unwrap().min(), 2);
    /// ```
    pub fn min(&self) -> usize {
        lock(&self.shared).min
    }

    /// The maximum number of workers (`max`).
    ///
    /// ```
    /// assert_eq!(twisted_reactor::ThreadPool::new(2, 3, "p").unwrap().max(), 3);
    /// ```
    pub fn max(&self) -> usize {
        lock(&self.shared).max
    }

    /// `started`.
    ///
    /// ```
    /// assert!(!twisted_reactor::ThreadPool::new(0, 1, "p").unwrap().started());
    /// ```
    pub fn started(&self) -> bool {
        lock(&self.shared).started
    }

    /// `workers`: the workers alive, idle or busy.
    ///
    /// ```
    /// assert_eq!(twisted_reactor::ThreadPool::new(0, 1, "p").unwrap().workers(), 0);
    /// ```
    pub fn workers(&self) -> usize {
        lock(&self.shared).workers
    }

    /// `len(waiters)`: the workers waiting for work.
    ///
    /// ```
    /// assert_eq!(twisted_reactor::ThreadPool::new(0, 1, "p").unwrap().idle_workers(), 0);
    /// ```
    pub fn idle_workers(&self) -> usize {
        lock(&self.shared).idle
    }

    /// `q.qsize()`: work queued that no worker has taken yet.
    ///
    /// ```
    /// let pool = twisted_reactor::ThreadPool::new(0, 1, "p").unwrap();
    /// pool.call_in_thread(|| {}).unwrap();                            // not started: waits
    /// assert_eq!(pool.queued(), 1);
    /// ```
    pub fn queued(&self) -> usize {
        lock(&self.shared).queue.len()
    }

    /// The pool's name, used in its threads' names
    /// (`PoolThread-{name}-{n}`).
    ///
    /// ```
    /// assert_eq!(twisted_reactor::ThreadPool::new(0, 1, "db").unwrap().name(), "db");
    /// ```
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Starts one worker; false if the OS refused a thread (the work stays
    /// queued, as when Twisted's `createWorker` returns `None`).
    fn spawn_worker(&self, state: &mut State) -> bool {
        state.handles.retain(|h| !h.is_finished());
        let name = format!("PoolThread-{}-{}", self.shared.name, state.spawned);
        let shared = self.shared.clone();
        match std::thread::Builder::new()
            .name(name)
            .spawn(move || worker(&shared))
        {
            Ok(handle) => {
                state.spawned += 1;
                state.workers += 1;
                state.handles.push(handle);
                true
            }
            Err(e) => {
                log::error!("could not start a thread pool worker: {e}");
                false
            }
        }
    }

    /// Stops the workers without waiting for them (used when the reactor
    /// owning the pool is dropped).
    pub(crate) fn quit_without_joining(&self) {
        {
            let mut state = lock(&self.shared);
            state.joined = true;
            state.started = false;
            state.quitting = true;
            state.handles.clear();
        }
        self.shared.work.notify_all();
    }
}

fn worker(shared: &Shared) {
    let mut state = lock(shared);
    loop {
        if let Some(job) = state.queue.pop_front() {
            drop(state);
            job();
            state = lock(shared);
            continue;
        }
        if state.quitting || state.to_shrink > 0 {
            if !state.quitting {
                state.to_shrink -= 1;
            }
            state.workers -= 1;
            return;
        }
        state.idle += 1;
        state = match shared.work.wait(state) {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        state.idle -= 1;
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared);
        f.debug_struct("ThreadPool")
            .field("name", &self.shared.name)
            .field("min", &state.min)
            .field("max", &state.max)
            .field("started", &state.started)
            .field("workers", &state.workers)
            .field("queued", &state.queue.len())
            .finish()
    }
}
