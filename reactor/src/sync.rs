//! The synchronisation primitives of the thread hand-off, swapped for
//! `loom`'s models under `cfg(loom)` (the pattern of tokio's `loom` module
//! and crossbeam's `cfg(crossbeam_loom)`), so that
//! `RUSTFLAGS="--cfg loom" cargo test -p twisted-reactor --release --test loom_hand_off`
//! explores every interleaving of [`HandOff`](crate::thread_hand_off)'s
//! senders and receiver.

#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning: the hand-off's critical sections
/// only push to and swap a `Vec`, which a panic cannot leave half done.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
