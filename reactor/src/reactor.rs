//! [`Reactor`]: the event loop, Twisted's `ReactorBase` and its
//! epoll-based `posixbase` subclass: `run`, `stop`, `crash`,
//! `callWhenRunning`, system event triggers, `seconds`/`callLater` on real
//! time, and the loop that waits for sockets and for calls from other
//! threads.
//!
//! # The loop
//!
//! Each iteration is Twisted's `mainLoop` body: `runUntilCurrent()` (the
//! calls queued by other threads since the last iteration, then the
//! coroutines they woke ([`twisted_deferred::run_wakeups`]), then every
//! timed call due, then, if [`stop`](Reactor::stop) was called, the
//! `shutdown` event), then a wait for I/O until the next timed call is due,
//! and the read/write handlers of the sockets that became ready.
//!
//! # Lifecycle, as Twisted's
//!
//! [`run`](Reactor::run) fires the `startup` event (its `during` phase makes
//! the reactor [`running`](Reactor::running); the `after` phase runs the
//! [`call_when_running`](Reactor::call_when_running) functions) and loops.
//! [`stop`](Reactor::stop) fires `shutdown` at the end of the current
//! iteration: `before` triggers may delay it by returning Deferreds, the
//! `during` phase ends the loop (Twisted's `crash`) and disconnects every
//! socket, and `after` triggers run last; then `run` returns. A stopped
//! reactor cannot run again ([`ReactorNotRestartable`]); a
//! [`crash`](Reactor::crash)ed one, which skips the shutdown event, can.
//!
//! ```
//! use std::{cell::RefCell, rc::Rc};
//! use twisted_reactor::{Phase, Reactor};
//!
//! let reactor = Reactor::new().unwrap();
//! let log = Rc::new(RefCell::new(Vec::new()));
//! let (l, r) = (log.clone(), reactor.clone());
//! reactor.call_when_running(move || {                              // reactor.callWhenRunning(f)
//!     l.borrow_mut().push("running");
//!     r.stop()                                                        // reactor.stop()
//! });
//! let l = log.clone();
//! reactor.add_system_event_trigger(Phase::After, "shutdown", move || l.borrow_mut().push("shut down"));
//! reactor.run().unwrap();                                            // reactor.run()
//! assert_eq!(*log.borrow(), ["running", "shut down"]);
//! ```
//!
//! # Memory
//!
//! `Reactor` is a cheap handle (one reference count); clones share the
//! reactor, which belongs to one thread. A scheduled call or trigger that
//! holds a `Reactor` handle keeps the reactor alive: when `run` returns
//! after a stop, the reactor drops every call, trigger and socket that can
//! no longer run, which breaks those cycles.
//!
//! Only [`ReactorHandle`] crosses threads; the reactor stays on its own:
//!
//! ```compile_fail
//! let reactor = twisted_reactor::Reactor::new().unwrap();
//! std::thread::spawn(move || reactor.run());                       // Reactor is not Send
//! ```

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use polling::{Event, Events, Poller};
use twisted_deferred::Failure;
use twisted_deferred::time::{DelayedCall, ReactorTime, TimedCall};

use crate::clock::TimedResult;
use crate::error::{
    ConnectionLost, InvalidDelayError, ReactorAlreadyRunning, ReactorNotRestartable,
    ReactorNotRunning, RunError, TriggerNotFound,
};
use crate::fdset::Selectable;
use crate::thread_hand_off::queue::HandOff;
use crate::thread_hand_off::{PollerNotify, ReactorHandle, SharedHandOff, ThreadCall};
use crate::threadpool::ThreadPool;
use crate::timers::{DueCall, TimeSource, TimerQueue};
use crate::triggers::{self, Phase, TriggerId, TriggerResult, Triggers, trigger_fn};

/// The longest the loop sleeps: Twisted's `2 ** 31 / 1000` seconds, the
/// most `epoll_wait` takes.
const LONGEST_SLEEP: f64 = 2_147_483.0;

/// The default thread pool and its two triggers (Twisted's `threadpool`,
/// `_threadpoolStartupID`, `threadpoolShutdownID`).
struct DefaultPool {
    pool: ThreadPool,
    startup: Option<TriggerId>,
    shutdown: Option<TriggerId>,
}

pub(crate) struct ReactorInner {
    poller: Arc<Poller>,
    hand_off: SharedHandOff,
    time: TimeSource,
    timers: TimerQueue,
    triggers: Rc<Triggers>,
    /// `_started`: between `run()` and the end of the loop.
    started: Cell<bool>,
    /// `_stopped`: not between `run()` and `stop()`.
    stopped: Cell<bool>,
    /// `_justStopped`: `stop()` was called; fire `shutdown` at the end of
    /// this iteration.
    just_stopped: Cell<bool>,
    /// `_startedBefore`: `stop()` was called once; no restarting.
    started_before: Cell<bool>,
    /// `running`.
    running: Cell<bool>,
    /// The loop (or `iterate`) is inside an iteration.
    in_iteration: Cell<bool>,
    sources: RefCell<HashMap<usize, Rc<dyn Selectable>>>,
    next_key: Cell<usize>,
    thread_pool: RefCell<Option<DefaultPool>>,
    /// Deferreds waiting for a result from another thread, by id.
    pending: RefCell<HashMap<u64, Box<dyn Any>>>,
    next_id: Cell<u64>,
    events: RefCell<Events>,
    thread_batch: RefCell<Vec<ThreadCall>>,
    /// The buffer sockets are read into (one read at a time).
    read_buffer: RefCell<Vec<u8>>,
    tasks: RefCell<HashMap<u64, Rc<crate::threads::FutureTask>>>,
}

/// The event loop: Twisted's reactor.
///
/// ```
/// use twisted_reactor::Reactor;
///
/// let reactor = Reactor::new().unwrap();                            // from twisted.internet import reactor
/// let r = reactor.clone();
/// reactor.call_later(0.01, move || { r.stop().unwrap(); }).unwrap();  // reactor.callLater(0.01, reactor.stop)
/// reactor.run().unwrap();                                            // reactor.run()
/// assert!(!reactor.running());
/// ```
#[derive(Clone)]
pub struct Reactor {
    inner: Rc<ReactorInner>,
}

impl Reactor {
    /// A new reactor, not running, with nothing scheduled. Fails if the OS
    /// refuses a poller (`epoll_create`) or its waker.
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// assert!(!reactor.running());
    /// ```
    pub fn new() -> io::Result<Reactor> {
        let poller = Arc::new(Poller::new()?);
        let hand_off = Arc::new(HandOff::new(PollerNotify(poller.clone())));
        let time = TimeSource::new();
        let reactor = Reactor {
            inner: Rc::new(ReactorInner {
                poller,
                hand_off,
                time,
                timers: TimerQueue::new(time),
                triggers: Rc::new(Triggers::default()),
                started: Cell::new(false),
                stopped: Cell::new(true),
                just_stopped: Cell::new(false),
                started_before: Cell::new(false),
                running: Cell::new(false),
                in_iteration: Cell::new(false),
                sources: RefCell::new(HashMap::new()),
                next_key: Cell::new(0),
                thread_pool: RefCell::new(None),
                pending: RefCell::new(HashMap::new()),
                next_id: Cell::new(0),
                events: RefCell::new(Events::new()),
                thread_batch: RefCell::new(Vec::new()),
                read_buffer: RefCell::new(Vec::new()),
                tasks: RefCell::new(HashMap::new()),
            }),
        };
        // Coroutines of this thread woken from elsewhere wake the loop,
        // which then resumes them (`run_wakeups`).
        let notify = reactor.inner.poller.clone();
        twisted_deferred::set_remote_wake_notifier(Some(std::sync::Arc::new(move || {
            let _ = notify.notify();
        })));
        // ReactorBase.__init__'s own triggers.
        reactor.add_really_start_running();
        let weak = reactor.downgrade();
        reactor.add_system_event_trigger(Phase::During, "shutdown", move || {
            if let Some(r) = Reactor::upgrade(&weak) {
                r.crash();
            }
        });
        let weak = reactor.downgrade();
        reactor.add_system_event_trigger(Phase::During, "shutdown", move || {
            if let Some(r) = Reactor::upgrade(&weak) {
                r.disconnect_all();
            }
        });
        Ok(reactor)
    }

    /// `addSystemEventTrigger("during", "startup", self._reallyStartRunning)`.
    fn add_really_start_running(&self) {
        let weak = self.downgrade();
        self.add_system_event_trigger(Phase::During, "startup", move || {
            if let Some(r) = Reactor::upgrade(&weak) {
                r.inner.running.set(true);
            }
        });
    }

    pub(crate) fn downgrade(&self) -> Weak<ReactorInner> {
        Rc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(weak: &Weak<ReactorInner>) -> Option<Reactor> {
        weak.upgrade().map(|inner| Reactor { inner })
    }

    /// `run()`: starts the reactor (the `startup` event) and runs the loop
    /// until [`stop`](Reactor::stop) has shut it down or
    /// [`crash`](Reactor::crash) ended it. Fails with
    /// [`RunError::AlreadyRunning`] when called from inside the loop and
    /// [`RunError::NotRestartable`] on a reactor that was stopped.
    ///
    /// After a stop, before returning, `run` runs the calls other threads
    /// queued until then and refuses any later ones (see
    /// [`ReactorHandle::call_from_thread`]), then drops the timed calls,
    /// triggers and sockets that can never run again.
    ///
    /// ```
    /// use twisted_reactor::Reactor;
    /// let reactor = Reactor::new().unwrap();
    /// let r = reactor.clone();
    /// reactor.call_when_running(move || r.stop());                      // reactor.callWhenRunning(reactor.stop)
    /// reactor.run().unwrap();                                         // reactor.run()
    /// ```
    pub fn run(&self) -> Result<(), RunError> {
        self.start_running()?;
        let outcome = self.main_loop();
        if self.inner.started_before.get() && !self.inner.started.get() {
            self.finish();
        }
        outcome
    }

    /// `startRunning()`.
    fn start_running(&self) -> Result<(), RunError> {
        let inner = &self.inner;
        if inner.started.get() {
            return Err(RunError::AlreadyRunning(ReactorAlreadyRunning));
        }
        if inner.started_before.get() {
            return Err(RunError::NotRestartable(ReactorNotRestartable));
        }
        if inner.in_iteration.get() {
            return Err(RunError::AlreadyRunning(ReactorAlreadyRunning));
        }
        inner.started.set(true);
        inner.stopped.set(false);
        self.fire_system_event("startup");
        Ok(())
    }

    /// `mainLoop()`.
    fn main_loop(&self) -> Result<(), RunError> {
        while self.inner.started.get() {
            self.inner.in_iteration.set(true);
            self.run_until_current();
            let timeout = if self.inner.running.get() {
                self.timeout()
            } else {
                Some(0.0)
            };
            let waited = self.do_iteration(timeout);
            self.inner.in_iteration.set(false);
            if let Err(e) = waited {
                self.crash();
                return Err(RunError::Io(e));
            }
        }
        Ok(())
    }

    /// `iterate(delay)`: one iteration of the loop by hand: runs what is
    /// due, then waits at most `delay` seconds for I/O and handles it. For
    /// tests and for driving the reactor from another loop; it does not
    /// start the reactor (no `startup` event). Fails with
    /// [`RunError::AlreadyRunning`] while [`run`](Reactor::run) is running.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let ran = Rc::new(Cell::new(false));
    /// let r = ran.clone();
    /// reactor.call_later(0.0, move || r.set(true)).unwrap();
    /// reactor.iterate(0.0).unwrap();                                  // reactor.iterate()
    /// assert!(ran.get());
    /// ```
    pub fn iterate(&self, delay: f64) -> Result<(), RunError> {
        if self.inner.started.get() || self.inner.in_iteration.get() {
            return Err(RunError::AlreadyRunning(ReactorAlreadyRunning));
        }
        self.inner.in_iteration.set(true);
        self.run_until_current();
        let delay = if delay >= 0.0 {
            delay.min(LONGEST_SLEEP)
        } else {
            0.0
        };
        let waited = self.do_iteration(Some(delay));
        self.inner.in_iteration.set(false);
        waited.map_err(RunError::Io)
    }

    /// `stop()`: shuts the reactor down at the end of the current loop
    /// iteration (the `shutdown` event; see the module docs). Fails with
    /// [`ReactorNotRunning`] if it is not running or already stopping.
    ///
    /// ```
    /// use twisted_reactor::Reactor;
    /// let reactor = Reactor::new().unwrap();
    /// assert!(reactor.stop().is_err());                               // not running yet
    /// let r = reactor.clone();
    /// reactor.call_when_running(move || {
    ///     r.stop().unwrap();                                          // reactor.stop()
    ///     assert!(r.stop().is_err());                                 // twice: ReactorNotRunning
    /// });
    /// reactor.run().unwrap();
    /// ```
    pub fn stop(&self) -> Result<(), ReactorNotRunning> {
        let inner = &self.inner;
        if inner.stopped.get() {
            return Err(ReactorNotRunning);
        }
        inner.stopped.set(true);
        inner.just_stopped.set(true);
        inner.started_before.set(true);
        Ok(())
    }

    /// `crash()`: ends the loop after the current iteration without the
    /// `shutdown` event; [`run`](Reactor::run) returns and may be called
    /// again.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// use twisted_reactor::Reactor;
    /// let reactor = Reactor::new().unwrap();
    /// let runs = Rc::new(Cell::new(0));
    /// for _ in 0..2 {
    ///     let (r, n) = (reactor.clone(), runs.clone());
    ///     reactor.call_when_running(move || { n.set(n.get() + 1); r.crash() });  // reactor.crash()
    ///     reactor.run().unwrap();                                     // runs again after a crash
    /// }
    /// assert_eq!(runs.get(), 2);
    /// ```
    pub fn crash(&self) {
        self.inner.started.set(false);
        self.inner.running.set(false);
        self.add_really_start_running();
    }

    /// `running`: true from the `during startup` phase until the loop ends.
    ///
    /// ```
    /// use twisted_reactor::Reactor;
    /// let reactor = Reactor::new().unwrap();
    /// assert!(!reactor.running());
    /// let r = reactor.clone();
    /// reactor.call_when_running(move || { assert!(r.running()); r.stop() });
    /// reactor.run().unwrap();
    /// assert!(!reactor.running());
    /// ```
    pub fn running(&self) -> bool {
        self.inner.running.get()
    }

    /// `callWhenRunning(f)`: runs `f` now if the reactor is running,
    /// otherwise once it is (an `after startup` trigger, whose id is
    /// returned).
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// use twisted_reactor::Reactor;
    /// let reactor = Reactor::new().unwrap();
    /// let ran = Rc::new(Cell::new(false));
    /// let (r, flag) = (reactor.clone(), ran.clone());
    /// let id = reactor.call_when_running(move || { flag.set(true); r.stop() });
    /// assert!(id.is_some() && !ran.get());                            // waits for run()
    /// reactor.run().unwrap();
    /// assert!(ran.get());
    /// ```
    pub fn call_when_running<F, R>(&self, f: F) -> Option<TriggerId>
    where
        F: FnOnce() -> R + 'static,
        R: TriggerResult,
    {
        if self.running() {
            let f = trigger_fn(f);
            match catch_unwind(AssertUnwindSafe(f)) {
                Ok(crate::triggers::TriggerOutcome::Failed(failure)) => {
                    log::error!("Unhandled error in callWhenRunning: {failure}");
                }
                Ok(_) => {}
                Err(panic) => log::error!(
                    "Unhandled error in callWhenRunning: {}",
                    Failure::from_panic(panic)
                ),
            }
            None
        } else {
            Some(self.add_system_event_trigger(Phase::After, "startup", f))
        }
    }

    /// `addSystemEventTrigger(phase, eventType, f)`: runs `f` in `phase`
    /// the next time `event_type` fires (`"startup"`, `"shutdown"`, or any
    /// name given to [`fire_system_event`](Reactor::fire_system_event)).
    /// See [`TriggerResult`] for what `f` may return.
    ///
    /// ```
    /// use twisted_deferred::Deferred;
    /// use twisted_reactor::{Phase, Reactor};
    ///
    /// let reactor = Reactor::new().unwrap();
    /// // A before-shutdown trigger returning a Deferred delays shutdown until it fires.
    /// let r = reactor.clone();
    /// reactor.add_system_event_trigger(Phase::Before, "shutdown", move || {
    ///     let d: Deferred<()> = Deferred::new();
    ///     let fire = d.clone();
    ///     r.call_later(0.01, move || fire.callback(())).unwrap();       // fires a little later
    ///     d
    /// });
    /// let r = reactor.clone();
    /// reactor.call_when_running(move || r.stop());
    /// reactor.run().unwrap();                                         // returns once it fired
    /// ```
    pub fn add_system_event_trigger<F, R>(&self, phase: Phase, event_type: &str, f: F) -> TriggerId
    where
        F: FnOnce() -> R + 'static,
        R: TriggerResult,
    {
        self.inner.triggers.add(phase, event_type, trigger_fn(f))
    }

    /// `removeSystemEventTrigger(id)`: the trigger will not run. Fails with
    /// [`TriggerNotFound`] if it was removed already or has run (except a
    /// `before` trigger of the event firing now, which only logs a warning,
    /// as Twisted's `DeprecationWarning`).
    ///
    /// ```
    /// use twisted_reactor::{Phase, Reactor};
    /// let reactor = Reactor::new().unwrap();
    /// let id = reactor.add_system_event_trigger(Phase::During, "test", || -> () { unreachable!() });
    /// reactor.remove_system_event_trigger(&id).unwrap();              // reactor.removeSystemEventTrigger(id)
    /// reactor.fire_system_event("test");                              // nothing runs
    /// ```
    pub fn remove_system_event_trigger(&self, id: &TriggerId) -> Result<(), TriggerNotFound> {
        self.inner.triggers.remove(id)
    }

    /// `fireSystemEvent(eventType)`: runs the event's triggers, phase by
    /// phase (see [`triggers`]).
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// use twisted_reactor::{Phase, Reactor};
    /// let reactor = Reactor::new().unwrap();
    /// let ran = Rc::new(Cell::new(false));
    /// let r = ran.clone();
    /// reactor.add_system_event_trigger(Phase::During, "custom", move || r.set(true));
    /// reactor.fire_system_event("custom");                            // reactor.fireSystemEvent("custom")
    /// assert!(ran.get());
    /// ```
    pub fn fire_system_event(&self, event_type: &str) {
        triggers::fire_event(&self.inner.triggers, event_type);
    }

    /// `seconds()`: the current time in seconds, from a monotonic clock
    /// (it never goes backwards), counted so that it starts near the Unix
    /// time at which the reactor was made.
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let t0 = reactor.seconds();                                     // reactor.seconds()
    /// assert!(reactor.seconds() >= t0);
    /// assert!(t0 > 1_000_000_000.0);                                  // looks like time.time()
    /// ```
    pub fn seconds(&self) -> f64 {
        self.inner.time.now()
    }

    /// `callLater(delay, f)`: runs `f` once, on the reactor thread, `delay`
    /// seconds from now, with the same [`DelayedCall`] API as the
    /// [`Clock`](crate::Clock)'s (`cancel`, `reset`, `delay`, `active`,
    /// `get_time`). Calls due at the same time run in the order they were
    /// scheduled. A call that fails (returns `Err` or panics) is logged and
    /// the loop goes on, as Twisted logs a raising timed call.
    ///
    /// A negative or `NaN` delay is refused with [`InvalidDelayError`] (the
    /// real reactor asserts `delay >= 0`; the `Clock` accepts it).
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use twisted_reactor::Reactor;
    ///
    /// let reactor = Reactor::new().unwrap();
    /// let log = Rc::new(RefCell::new(Vec::new()));
    /// let l = log.clone();
    /// reactor.call_later(0.02, move || l.borrow_mut().push("later")).unwrap();
    /// let l = log.clone();
    /// let cancelled = reactor.call_later(0.01, move || l.borrow_mut().push("cancelled")).unwrap();
    /// let l = log.clone();
    /// reactor.call_later(0.0, move || l.borrow_mut().push("soon")).unwrap();
    /// cancelled.cancel().unwrap();                                    // call.cancel()
    /// let r = reactor.clone();
    /// reactor.call_later(0.03, move || { r.stop().unwrap(); }).unwrap();
    /// reactor.run().unwrap();
    /// assert_eq!(*log.borrow(), ["soon", "later"]);
    /// ```
    pub fn call_later<F, R>(&self, delay: f64, f: F) -> Result<DelayedCall, InvalidDelayError>
    where
        F: FnOnce() -> R + 'static,
        R: TimedResult,
    {
        if delay.is_nan() || delay < 0.0 {
            return Err(InvalidDelayError { delay });
        }
        Ok(self.inner.timers.schedule(delay, move || f().into_result()))
    }

    /// `getDelayedCalls()`: the pending timed calls, in the order they will
    /// run.
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let b = reactor.call_later(2.0, || {}).unwrap();
    /// let a = reactor.call_later(1.0, || {}).unwrap();
    /// let calls = reactor.get_delayed_calls();                        // reactor.getDelayedCalls()
    /// assert!(calls[0].ptr_eq(&a) && calls[1].ptr_eq(&b));
    /// ```
    pub fn get_delayed_calls(&self) -> Vec<DelayedCall> {
        self.inner.timers.delayed_calls()
    }

    /// `len(getDelayedCalls())`, in O(1).
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let call = reactor.call_later(1.0, || {}).unwrap();
    /// assert_eq!(reactor.delayed_call_count(), 1);
    /// call.cancel().unwrap();
    /// assert_eq!(reactor.delayed_call_count(), 0);
    /// ```
    pub fn delayed_call_count(&self) -> usize {
        self.inner.timers.len()
    }

    /// The `Send + Sync` handle other threads use to reach this reactor
    /// (`reactor.callFromThread`).
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let handle = reactor.handle();
    /// std::thread::spawn(move || handle.call_from_thread(|r| r.stop().unwrap()).unwrap())
    ///     .join().unwrap();
    /// reactor.run().unwrap();
    /// ```
    pub fn handle(&self) -> ReactorHandle {
        ReactorHandle::new(self.inner.hand_off.clone())
    }

    /// `getThreadPool()`: the reactor's own thread pool (0 to 10 threads,
    /// like Twisted's), made on first use, started when the reactor runs and
    /// stopped (its work finished) during shutdown.
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let pool = reactor.get_thread_pool();                           // reactor.getThreadPool()
    /// assert_eq!((pool.min(), pool.max()), (0, 10));
    /// ```
    pub fn get_thread_pool(&self) -> ThreadPool {
        if let Some(p) = &*self.inner.thread_pool.borrow() {
            return p.pool.clone();
        }
        // ThreadPool(0, 10, "twisted.internet.reactor")
        let pool = ThreadPool::with_bounds(0, 10, "twisted.internet.reactor");
        let starter = pool.clone();
        let startup = self.call_when_running(move || starter.start());
        let weak = self.downgrade();
        let shutdown = self.add_system_event_trigger(Phase::During, "shutdown", move || {
            if let Some(r) = Reactor::upgrade(&weak) {
                r.stop_thread_pool();
            }
        });
        *self.inner.thread_pool.borrow_mut() = Some(DefaultPool {
            pool: pool.clone(),
            startup,
            shutdown: Some(shutdown),
        });
        pool
    }

    /// `_stopThreadPool()`.
    fn stop_thread_pool(&self) {
        let taken = self.inner.thread_pool.borrow_mut().take();
        if let Some(p) = taken {
            for id in [p.startup, p.shutdown].into_iter().flatten() {
                let _ = self.remove_system_event_trigger(&id);
            }
            p.pool.stop();
        }
    }

    /// `callInThread(f)`: runs `f` on the reactor's thread pool.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// reactor.call_in_thread(move || tx.send(1).unwrap()).unwrap();    // reactor.callInThread(f)
    /// let r = reactor.clone();
    /// reactor.call_when_running(move || r.stop());
    /// reactor.run().unwrap();                                         // the pool runs it, then stops
    /// assert_eq!(rx.recv().unwrap(), 1);
    /// ```
    pub fn call_in_thread<F>(&self, f: F) -> Result<(), crate::error::ThreadPoolStopped>
    where
        F: FnOnce() + Send + 'static,
    {
        self.get_thread_pool().call_in_thread(f)
    }

    /// `suggestThreadPoolSize(size)`: the reactor's pool may grow to `size`
    /// threads.
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// reactor.suggest_thread_pool_size(4);                            // reactor.suggestThreadPoolSize(4)
    /// assert_eq!(reactor.get_thread_pool().max(), 4);
    /// ```
    pub fn suggest_thread_pool_size(&self, size: usize) {
        let pool = self.get_thread_pool();
        let min = pool.min().min(size);
        let _ = pool.adjust_pool_size(min, size);
    }

    /// `runUntilCurrent()`.
    fn run_until_current(&self) {
        let inner = &self.inner;
        // The calls other threads queued since the last iteration; any
        // queued meanwhile wait for the next one (the queue notified the
        // poller, so it will not sleep).
        let mut batch = std::mem::take(&mut *inner.thread_batch.borrow_mut());
        inner.hand_off.take(&mut batch);
        for call in batch.drain(..) {
            self.run_thread_call(call);
        }
        *inner.thread_batch.borrow_mut() = batch;
        twisted_deferred::run_wakeups();

        let now = self.seconds();
        {
            let _running = inner.timers.begin_run();
            while let Some(call) = inner.timers.pop_due(now) {
                run_timed_call(&call);
            }
        }

        if inner.just_stopped.get() {
            inner.just_stopped.set(false);
            self.fire_system_event("shutdown");
        }
    }

    fn run_thread_call(&self, call: ThreadCall) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| call(self))) {
            log::error!(
                "Unhandled error in a call from another thread: {}",
                Failure::from_panic(panic)
            );
        }
    }

    /// `timeout()`: how long the loop may sleep.
    fn timeout(&self) -> Option<f64> {
        let next = self.inner.timers.time_until_next(self.seconds());
        Some(next.map_or(LONGEST_SLEEP, |t| t.min(LONGEST_SLEEP)))
    }

    /// `doIteration(timeout)`: waits for I/O (or a wake-up) at most
    /// `timeout` seconds, then runs the handlers of the ready sockets.
    fn do_iteration(&self, timeout: Option<f64>) -> io::Result<()> {
        let inner = &self.inner;
        let ready: Vec<Event> = {
            let mut events = inner.events.borrow_mut();
            events.clear();
            let timeout = timeout.map(|t| {
                let t = if t.is_nan() {
                    0.0
                } else {
                    t.clamp(0.0, LONGEST_SLEEP)
                };
                Duration::from_secs_f64(t)
            });
            inner.poller.wait(&mut events, timeout)?;
            events.iter().collect()
        };
        for event in ready {
            let source = inner.sources.borrow().get(&event.key).cloned();
            if let Some(source) = source {
                source.handle_event(self, event);
            }
        }
        Ok(())
    }

    /// `disconnectAll()`: every socket loses its connection.
    fn disconnect_all(&self) {
        let sources: Vec<Rc<dyn Selectable>> = {
            let mut map = self.inner.sources.borrow_mut();
            let mut keys: Vec<usize> = map.keys().copied().collect();
            keys.sort_unstable();
            keys.into_iter().filter_map(|k| map.remove(&k)).collect()
        };
        for source in sources {
            source.disconnect(self, Failure::new(ConnectionLost::new()));
        }
    }

    /// The reactor stopped for good: run the last calls from other threads,
    /// refuse later ones, drop everything that can no longer run.
    fn finish(&self) {
        let inner = &self.inner;
        loop {
            let rest = inner.hand_off.close();
            if rest.is_empty() {
                break;
            }
            for call in rest {
                self.run_thread_call(call);
            }
        }
        twisted_deferred::run_wakeups();
        self.release();
    }

    fn release(&self) {
        let inner = &self.inner;
        inner.timers.release_all();
        inner.triggers.clear();
        let pending = std::mem::take(&mut *inner.pending.borrow_mut());
        drop(pending);
        let tasks = std::mem::take(&mut *inner.tasks.borrow_mut());
        drop(tasks);
        let sources = std::mem::take(&mut *inner.sources.borrow_mut());
        for source in sources.values() {
            source.release();
        }
        drop(sources);
        let pool = inner.thread_pool.borrow_mut().take();
        if let Some(p) = pool {
            p.pool.quit_without_joining();
        }
    }

    // Plumbing for the other modules.

    pub(crate) fn poller(&self) -> Arc<Poller> {
        self.inner.poller.clone()
    }

    /// A key for a new socket.
    pub(crate) fn allocate_key(&self) -> usize {
        let key = self.inner.next_key.get();
        self.inner.next_key.set(key + 1);
        key
    }

    pub(crate) fn add_source(&self, key: usize, source: Rc<dyn Selectable>) {
        self.inner.sources.borrow_mut().insert(key, source);
    }

    pub(crate) fn remove_source(&self, key: usize) -> Option<Rc<dyn Selectable>> {
        self.inner.sources.borrow_mut().remove(&key)
    }

    /// A fresh id (for Deferreds awaiting other threads, future tasks).
    pub(crate) fn next_id(&self) -> u64 {
        let id = self.inner.next_id.get();
        self.inner.next_id.set(id + 1);
        id
    }

    /// Keeps `value` (a Deferred) until [`take_pending`](Reactor::take_pending).
    pub(crate) fn add_pending(&self, id: u64, value: Box<dyn Any>) {
        self.inner.pending.borrow_mut().insert(id, value);
    }

    pub(crate) fn take_pending(&self, id: u64) -> Option<Box<dyn Any>> {
        self.inner.pending.borrow_mut().remove(&id)
    }

    /// Lends the read buffer (`size` bytes); give it back with
    /// [`return_read_buffer`](Reactor::return_read_buffer).
    pub(crate) fn borrow_read_buffer(&self, size: usize) -> Vec<u8> {
        let mut buffer = std::mem::take(&mut *self.inner.read_buffer.borrow_mut());
        buffer.resize(size, 0);
        buffer
    }

    pub(crate) fn return_read_buffer(&self, buffer: Vec<u8>) {
        *self.inner.read_buffer.borrow_mut() = buffer;
    }

    /// The futures [`defer_future`](Reactor::defer_future) polls, by id.
    pub(crate) fn inner_tasks(&self) -> &RefCell<HashMap<u64, Rc<crate::threads::FutureTask>>> {
        &self.inner.tasks
    }
}

/// Runs one timed call, logging its failure.
fn run_timed_call(call: &DueCall) {
    let outcome = match catch_unwind(AssertUnwindSafe(|| call.run())) {
        Ok(outcome) => outcome,
        Err(panic) => Err(Failure::from_panic(panic)),
    };
    if let Err(failure) = outcome {
        log::error!("Unhandled error in a timed call: {failure}");
    }
}

impl Drop for ReactorInner {
    fn drop(&mut self) {
        let queued = self.hand_off.close();
        drop(queued);
        self.timers.release_all();
        self.triggers.clear();
        let sources = std::mem::take(&mut *self.sources.borrow_mut());
        for source in sources.values() {
            source.release();
        }
        drop(sources);
        let pool = self.thread_pool.borrow_mut().take();
        if let Some(p) = pool {
            p.pool.quit_without_joining();
        }
    }
}

impl ReactorTime for Reactor {
    fn seconds(&self) -> f64 {
        Reactor::seconds(self)
    }

    /// As [`Reactor::call_later`]; a negative or `NaN` delay, which this
    /// signature cannot refuse, is logged and treated as 0.
    fn call_later(&self, delay: f64, f: TimedCall) -> DelayedCall {
        let delay = if delay >= 0.0 {
            delay
        } else {
            log::error!(
                "{}; scheduling the call with no delay",
                InvalidDelayError { delay }
            );
            0.0
        };
        self.inner.timers.schedule(delay, f)
    }
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("running", &self.running())
            .field("delayed_calls", &self.delayed_call_count())
            .field("sockets", &self.inner.sources.borrow().len())
            .finish()
    }
}
