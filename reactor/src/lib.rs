//! Time, threads and TCP for [`twisted_deferred`], in the shape of Twisted's
//! reactor, written here (not borrowed from an async runtime).
//!
//! Two implementations of [`ReactorTime`](twisted_deferred::time::ReactorTime)
//! run every time-based helper ([`defer_later()`], [`LoopingCall`],
//! `Deferred::add_timeout`, the compat crate's helpers):
//!
//! * [`Clock`]: Twisted's deterministic `task.Clock`, driven by hand in
//!   tests and by the conformance runner;
//! * [`Reactor`]: the real event loop, with `call_later` on monotonic time,
//!   `call_from_thread`, a thread pool, TCP over level-triggered OS
//!   readiness (the `polling` crate: epoll, kqueue, …).
//!
//! ```
//! use twisted_reactor::{defer_later, Clock, Reactor};
//!
//! let clock = Clock::new();                                       // c = Clock()
//! let d = defer_later(&clock, 5.0, || Ok("done"));                // d = deferLater(c, 5, lambda: "done")
//! clock.advance(5.0).unwrap();                                    // c.advance(5)
//! assert_eq!(d.result().value(), Some("done"));
//!
//! let reactor = Reactor::new().unwrap();                          // the same helper on real time
//! let d = defer_later(&reactor, 0.01, || Ok("done"));
//! let r = reactor.clone();
//! let d = d.add_callback(move |v| { r.stop().unwrap(); Ok(v) });
//! reactor.run().unwrap();                                         // reactor.run()
//! assert_eq!(d.result().value(), Some("done"));
//! ```
//!
//! # Map from Twisted
//!
//! | Twisted | here |
//! |---|---|
//! | `task.Clock()`, `seconds()`, `callLater`, `advance`, `pump`, `getDelayedCalls`, `rightNow` | [`Clock`], [`Clock::seconds`], [`Clock::call_later`], [`Clock::advance`], [`Clock::pump`], [`Clock::get_delayed_calls`], [`Clock::set_right_now`] |
//! | `DelayedCall`: `getTime`, `cancel`, `reset`, `delay`, `active`; `AlreadyCancelled`, `AlreadyCalled` | [`DelayedCall`](twisted_deferred::time::DelayedCall), [`DelayedCallError`](twisted_deferred::time::DelayedCallError) (from the core) |
//! | `deferLater(clock, delay, f)` | [`defer_later()`] |
//! | `LoopingCall(f)`, `withCount`, `start`, `stop`, `reset` | [`LoopingCall`] |
//! | `reactor.run()`, `stop()`, `crash()`, `running`, `iterate()` | [`Reactor::run`], [`Reactor::stop`], [`Reactor::crash`], [`Reactor::running`], [`Reactor::iterate`] |
//! | `callWhenRunning`, `addSystemEventTrigger`, `removeSystemEventTrigger`, `fireSystemEvent` | [`Reactor::call_when_running`], [`Reactor::add_system_event_trigger`], [`Reactor::remove_system_event_trigger`], [`Reactor::fire_system_event`] ([`Phase`], [`TriggerId`]) |
//! | `reactor.seconds()`, `callLater`, `getDelayedCalls` | [`Reactor::seconds`], [`Reactor::call_later`], [`Reactor::get_delayed_calls`] |
//! | `callFromThread`, `wakeUp` | [`ReactorHandle::call_from_thread`], [`ReactorHandle::wake_up`] ([`Reactor::handle`]) |
//! | `getThreadPool`, `callInThread`, `suggestThreadPoolSize` | [`Reactor::get_thread_pool`], [`Reactor::call_in_thread`], [`Reactor::suggest_thread_pool_size`] |
//! | `ThreadPool(min, max, name)`, `start`, `stop`, `callInThread`, `callInThreadWithCallback`, `adjustPoolsize` | [`ThreadPool`] |
//! | `threads.deferToThread`, `deferToThreadPool` | [`defer_to_thread()`], [`defer_to_threadpool()`] |
//! | `Deferred.fromFuture` (futures woken from any thread) | [`Reactor::defer_future`] |
//! | `listenTCP`, `connectTCP` | [`Reactor::listen_tcp`], [`Reactor::listen_tcp_with`], [`Reactor::connect_tcp`], [`Reactor::connect_tcp_with_timeout`] |
//! | `Protocol`, `Factory`, `IHalfCloseableProtocol` | [`Protocol`], [`Factory`] |
//! | `ITCPTransport`: `write`, `writeSequence`, `loseConnection`, `abortConnection`, `loseWriteConnection`, `getPeer`, `getHost`, `pauseProducing`, `resumeProducing` | [`TcpTransport`] |
//! | `tcp.Port`: `getHost`, `stopListening` | [`Port`] |
//! | `twisted.internet.error` | [`error`] |
//!
//! # Modules
//!
//! | module | Twisted |
//! |---|---|
//! | [`reactor`] | `ReactorBase`, `posixbase.PosixReactorBase`, `epollreactor` |
//! | [`timers`] | `ReactorBase.callLater` and its heap of `DelayedCall`s |
//! | [`clock`] | `task.Clock` |
//! | [`triggers`] | `_ThreePhaseEvent` (system event triggers) |
//! | [`thread_hand_off`] | `callFromThread`, `threadCallQueue`, the waker |
//! | [`threadpool`] | `twisted.python.threadpool` |
//! | [`threads`] | `twisted.internet.threads` |
//! | [`tcp`] | `twisted.internet.tcp` |
//! | [`protocol`] | `twisted.internet.protocol` |
//! | [`error`] | `twisted.internet.error` |
//! | [`defer_later`](mod@defer_later), [`looping_call`] | `task.deferLater`, `task.LoopingCall` |

#![warn(missing_docs)]

pub mod clock;
pub mod defer_later;
pub mod error;
mod fdset;
mod heap;
pub mod looping_call;
pub mod protocol;
pub mod reactor;
mod sync;
pub mod tcp;
pub mod thread_hand_off;
pub mod threadpool;
pub mod threads;
pub mod timers;
pub mod triggers;

pub use clock::{Clock, InvalidTimeError, TimedResult};
pub use defer_later::defer_later;
pub use error::RunError;
pub use looping_call::{LoopingCall, LoopingCallError};
pub use protocol::{Factory, Protocol};
pub use reactor::Reactor;
pub use tcp::{Port, TcpTransport};
pub use thread_hand_off::ReactorHandle;
pub use threadpool::{ThreadPool, ThreadResult};
pub use threads::{defer_to_thread, defer_to_threadpool};
pub use triggers::{Phase, TriggerId, TriggerOutcome, TriggerResult};
pub use twisted_deferred;

/// The hand-off's internals, for the `loom` model test only.
#[cfg(loom)]
#[doc(hidden)]
pub mod loom_hand_off {
    pub use crate::thread_hand_off::queue::{HandOff, Notify};
}
