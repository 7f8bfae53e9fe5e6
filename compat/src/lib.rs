//! The names a porter types: Twisted's `twisted.internet.defer` functions
//! and Synapse's cancellation helpers (`ObservableDeferred`,
//! `stop_cancellation`, `delay_cancellation`, logging contexts, …) on top of
//! [`twisted_deferred`].
//!
//! So far this crate re-exports the core under Twisted's names; Synapse's
//! helpers are not built yet (see the README).

#![warn(missing_docs)]

pub use twisted_deferred::{
    AlreadyCalledError, CancelledError, Deferred, Failure, FirstError, TimeoutError, execute, fail,
    maybe_deferred, passthru, succeed,
};
