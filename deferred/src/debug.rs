//! Debugging Deferreds: Twisted's `setDebugging(True)`.
//!
//! With debugging on, every Deferred records where it was created and where
//! it was first fired (`callback`, `errback` or `cancel`), as source
//! locations captured with `#[track_caller]`, where Twisted records whole
//! stacks. They show in the Deferred's `Debug` output, in the
//! [`AlreadyCalledError`](crate::AlreadyCalledError) of a second fire, and in
//! unhandled-error reports. With debugging off (the default) the cost is
//! one relaxed atomic load per Deferred created and per fire.

use std::fmt;
use std::panic::Location;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUGGING: AtomicBool = AtomicBool::new(false);

/// `defer.setDebugging(on)`: records creation and first-fire locations of
/// the Deferreds created (and fired) from now on, on every thread.
///
/// ```
/// use twisted_deferred::{debug, Deferred};
/// debug::set_debugging(true);                        // setDebugging(True)
/// let d: Deferred<u8> = Deferred::new();
/// d.callback(1).unwrap();
/// let err = d.callback(2).unwrap_err();
/// assert!(err.message().contains("Deferred was created"));
/// assert!(err.message().contains("First Invoker was"));
/// debug::set_debugging(false);
/// ```
pub fn set_debugging(on: bool) {
    DEBUGGING.store(on, Ordering::Relaxed);
}

/// `defer.getDebugging()`.
pub fn get_debugging() -> bool {
    DEBUGGING.load(Ordering::Relaxed)
}

#[inline]
pub(crate) fn debugging() -> bool {
    DEBUGGING.load(Ordering::Relaxed)
}

/// What a Deferred recorded while debugging was on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DebugInfo {
    /// Where the Deferred was created.
    pub creator: Option<&'static Location<'static>>,
    /// Where it was first fired.
    pub invoker: Option<&'static Location<'static>>,
}

impl DebugInfo {
    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.creator.is_none() && self.invoker.is_none()
    }
}

impl fmt::Display for DebugInfo {
    /// Twisted's two blocks: ` C: Deferred was created:` / ` I: First
    /// Invoker was:`, each followed by its location.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.creator {
            write!(f, " C: Deferred was created:\n C:  {c}\n")?;
        }
        if let Some(i) = self.invoker {
            write!(f, " I: First Invoker was:\n I:  {i}\n")?;
        }
        Ok(())
    }
}
