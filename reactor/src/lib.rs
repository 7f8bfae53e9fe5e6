//! A hand-written event loop in the shape of Twisted's reactor, for
//! [`twisted_deferred`]: `call_later` with cancellable delayed calls, a
//! deterministic `Clock` for tests, `call_from_thread`, a thread pool and TCP.
//!
//! Not built yet: this crate is a placeholder so the workspace has its final
//! shape. See the README's "What is not built yet".

#![warn(missing_docs)]

pub use twisted_deferred;
