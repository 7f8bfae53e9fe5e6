//! Calls from other threads: Twisted's `callFromThread`, its
//! `threadCallQueue` and the waker that interrupts the reactor's sleep.
//!
//! The reactor is single-threaded; [`ReactorHandle`] is the one piece of it
//! that is `Send + Sync`. [`ReactorHandle::call_from_thread`] queues a
//! function and wakes the loop at once (through `polling`'s notifier: an
//! `eventfd` on Linux); the loop runs the calls queued since its last
//! iteration, in the order they were queued, at the start of its next
//! iteration (Twisted's `runUntilCurrent`).
//!
//! Nothing is lost: a call queued before the reactor stops for good runs
//! (the last ones right before [`Reactor::run`](crate::Reactor::run)
//! returns), and a call that can no longer run is refused with
//! [`ReactorGone`] instead of being dropped silently. The hand-off is
//! model-checked with `loom` (`reactor/tests/loom_hand_off.rs`).
//!
//! ```
//! use twisted_reactor::Reactor;
//!
//! let reactor = Reactor::new().unwrap();
//! let handle = reactor.handle();
//! let worker = std::thread::spawn(move || {
//!     // reactor.callFromThread(reactor.stop)
//!     handle.call_from_thread(|reactor| { reactor.stop().unwrap(); }).unwrap();
//! });
//! reactor.run().unwrap();
//! worker.join().unwrap();
//! ```

pub(crate) mod queue;

use std::fmt;
use std::sync::Arc;

use polling::Poller;

use crate::error::ReactorGone;
use crate::reactor::Reactor;

use self::queue::{HandOff, Notify};

/// A call queued for the reactor thread.
pub(crate) type ThreadCall = Box<dyn FnOnce(&Reactor) + Send>;

/// Wakes the reactor's `poller.wait()`.
pub(crate) struct PollerNotify(pub(crate) Arc<Poller>);

impl Notify for PollerNotify {
    fn notify(&self) {
        if let Err(e) = self.0.notify() {
            log::error!("could not wake the reactor: {e}");
        }
    }
}

pub(crate) type SharedHandOff = Arc<HandOff<ThreadCall, PollerNotify>>;

/// The `Send + Sync` handle other threads use to reach a
/// [`Reactor`]: Twisted's `reactor.callFromThread`.
/// Cloning it is cheap; it does not keep the reactor alive.
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
/// use twisted_reactor::Reactor;
///
/// let reactor = Reactor::new().unwrap();
/// let ran = Arc::new(AtomicUsize::new(0));
/// let threads: Vec<_> = (0..4).map(|_| {
///     let (handle, ran) = (reactor.handle(), ran.clone());
///     std::thread::spawn(move || {
///         handle.call_from_thread(move |_| { ran.fetch_add(1, Ordering::SeqCst); }).unwrap();
///     })
/// }).collect();
/// for t in threads { t.join().unwrap(); }
/// let handle = reactor.handle();
/// handle.call_from_thread(|reactor| { reactor.stop().unwrap(); }).unwrap();
/// reactor.run().unwrap();
/// assert_eq!(ran.load(Ordering::SeqCst), 4);
/// ```
#[derive(Clone)]
pub struct ReactorHandle {
    hand_off: SharedHandOff,
}

impl ReactorHandle {
    pub(crate) fn new(hand_off: SharedHandOff) -> ReactorHandle {
        ReactorHandle { hand_off }
    }

    /// `callFromThread(f)`: runs `f` on the reactor thread, given the
    /// reactor, at the start of the loop's next iteration, waking the loop
    /// now. Calls from one thread run in the order they were made. Callable
    /// from any thread, the reactor's own included; a call queued while the
    /// reactor is not running waits for [`run`](crate::Reactor::run). A
    /// panic in `f` is logged.
    ///
    /// Fails with [`ReactorGone`] (and drops `f` unrun) once the reactor has
    /// stopped for good or was dropped.
    ///
    /// ```
    /// use twisted_reactor::Reactor;
    /// let reactor = Reactor::new().unwrap();
    /// let handle = reactor.handle();
    /// std::thread::spawn(move || {
    ///     handle.call_from_thread(|r| r.stop().unwrap())                // reactor.callFromThread(reactor.stop)
    /// }).join().unwrap().unwrap();
    /// reactor.run().unwrap();
    /// ```
    pub fn call_from_thread<F>(&self, f: F) -> Result<(), ReactorGone>
    where
        F: FnOnce(&Reactor) + Send + 'static,
    {
        self.send(Box::new(f))
    }

    pub(crate) fn send(&self, call: ThreadCall) -> Result<(), ReactorGone> {
        self.hand_off.push(call).map_err(|_| ReactorGone)
    }

    /// `wakeUp()`: interrupts the reactor's wait for I/O without queueing
    /// anything.
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// reactor.handle().wake_up();                                     // reactor.wakeUp()
    /// ```
    pub fn wake_up(&self) {
        self.hand_off.wake();
    }

    /// True once the reactor stopped for good or was dropped: calls are
    /// refused.
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let handle = reactor.handle();
    /// assert!(!handle.is_closed());
    /// drop(reactor);
    /// assert!(handle.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.hand_off.is_closed()
    }
}

impl fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorHandle")
            .field("closed", &self.is_closed())
            .finish()
    }
}
