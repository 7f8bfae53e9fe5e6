//! Finding Deferreds that are still alive, and freeing them as Python's
//! garbage collector would: for tests and for tools that must reproduce
//! Twisted's unhandled-error reports exactly.
//!
//! Reference counting frees a Deferred as soon as nothing refers to it, and
//! [`Deferred`](crate::Deferred) collects the cycles waiting Deferreds form
//! on their own. Cycles that run through other objects (a suspended
//! coroutine's future holding handles of the Deferreds it awaits, a callback
//! capturing its own Deferred) stay alive, where Python's cyclic collector
//! would free them and report their unhandled failures. A [`Tracker`] records
//! every Deferred created on the thread while it is active, so that a test
//! can see what survived and, once it has dropped everything it holds, tear
//! the survivors down.

use crate::chain;

/// Records the Deferreds created on this thread from [`Tracker::start`] on.
///
/// ```
/// use twisted_deferred::{Deferred, tracking::Tracker};
///
/// let tracker = Tracker::start();
/// let d: Deferred<u8> = Deferred::new();
/// let me = d.clone();
/// d.add_callback(move |x| { let _ = &me; Ok(x) });  // d holds itself: a cycle
/// drop(d);
/// assert_eq!(tracker.collect(), 1);                  // torn down and freed
/// ```
#[derive(Debug)]
#[must_use = "a tracker records until it is collected or dropped"]
pub struct Tracker {
    _private: (),
}

impl Tracker {
    /// Starts recording (replacing any tracker already active on this
    /// thread).
    pub fn start() -> Tracker {
        chain::start_tracking();
        Tracker { _private: () }
    }

    /// Stops recording and frees every recorded Deferred still alive, as if
    /// all references from outside them were gone: their links (callbacks,
    /// suspended coroutines), results and cancellers are dropped, so the
    /// cycles holding them fall apart and each reports its unhandled failure,
    /// if it has one. Call it only once everything that should keep a
    /// Deferred alive has been dropped. Returns how many were alive.
    pub fn collect(self) -> usize {
        let alive = chain::stop_tracking();
        let n = alive.len();
        for inner in &alive {
            chain::tear_down(inner);
        }
        drop(alive);
        n
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        drop(chain::stop_tracking());
    }
}
