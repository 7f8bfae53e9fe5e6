//! Time for [`twisted_deferred`], in the shape of Twisted's reactor.
//!
//! Built so far: the deterministic side of `twisted.internet.task`, which
//! tests and the conformance runner drive by hand:
//!
//! | Twisted | here |
//! |---|---|
//! | `task.Clock()`, `seconds()`, `callLater`, `advance`, `pump`, `getDelayedCalls`, `rightNow` | [`Clock`], [`Clock::seconds`], [`Clock::call_later`], [`Clock::advance`], [`Clock::pump`], [`Clock::get_delayed_calls`], [`Clock::set_right_now`] |
//! | `DelayedCall`: `getTime`, `cancel`, `reset`, `delay`, `active`; `AlreadyCancelled`, `AlreadyCalled` | [`DelayedCall`](twisted_deferred::time::DelayedCall), [`DelayedCallError`](twisted_deferred::time::DelayedCallError) (from the core) |
//! | `deferLater(clock, delay, f)` | [`defer_later()`] |
//! | `LoopingCall(f)`, `LoopingCall.withCount(f)`, `start`, `stop`, `reset`, `running`, `interval` | [`LoopingCall`], [`LoopingCall::with_count`], [`LoopingCall::start`], [`LoopingCall::stop`], [`LoopingCall::reset`], [`LoopingCall::running`], [`LoopingCall::interval`] |
//!
//! The real event loop (wall-clock `call_later`, `call_from_thread`, a
//! thread pool, TCP) is a later piece of work; everything here runs on any
//! [`ReactorTime`](twisted_deferred::time::ReactorTime), so it will run on
//! that reactor too.
//!
//! ```
//! use twisted_reactor::{defer_later, Clock};
//!
//! let clock = Clock::new();                                       // c = Clock()
//! let d = defer_later(&clock, 5.0, || Ok("done"));                // d = deferLater(c, 5, lambda: "done")
//! clock.advance(5.0).unwrap();                                    // c.advance(5)
//! assert_eq!(d.result().value(), Some("done"));
//! ```

#![warn(missing_docs)]

pub mod clock;
pub mod defer_later;
pub mod looping_call;

pub use clock::{Clock, InvalidTimeError, TimedResult};
pub use defer_later::defer_later;
pub use looping_call::{LoopingCall, LoopingCallError};
pub use twisted_deferred;
