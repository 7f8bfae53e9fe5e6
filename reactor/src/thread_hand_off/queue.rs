//! The hand-off itself, free of the reactor so that the `loom` model test
//! runs exactly this code: Twisted's `threadCallQueue` plus `wakeUp()`.
//!
//! Senders push under a mutex, then notify; the receiver swaps the whole
//! queue out under the same mutex, runs the batch, and sleeps until
//! notified. A notification is sticky (it wakes the current or the next
//! sleep, as `polling::Poller::notify` does), so a push that lands after a
//! swap always wakes the sleep that follows it: no call is left behind. The
//! receiver can close the queue: a push after that is refused and handed
//! back, so every call is either delivered exactly once or refused.

use crate::sync::{Mutex, lock};

/// Wakes the receiver: its current sleep, or its next one.
pub trait Notify {
    /// `wakeUp()`.
    fn notify(&self);
}

struct Queue<T> {
    items: Vec<T>,
    closed: bool,
}

/// A many-senders, one-receiver queue of calls with a wake-up.
pub struct HandOff<T, N> {
    queue: Mutex<Queue<T>>,
    notifier: N,
}

impl<T, N: Notify> HandOff<T, N> {
    /// An open, empty hand-off that wakes its receiver through `notifier`.
    pub fn new(notifier: N) -> Self {
        HandOff {
            queue: Mutex::new(Queue {
                items: Vec::new(),
                closed: false,
            }),
            notifier,
        }
    }

    /// `threadCallQueue.append(f); wakeUp()`. Gives `item` back if the
    /// receiver closed the queue.
    pub fn push(&self, item: T) -> Result<(), T> {
        {
            let mut queue = lock(&self.queue);
            if queue.closed {
                return Err(item);
            }
            queue.items.push(item);
        }
        self.notifier.notify();
        Ok(())
    }

    /// Takes every queued item, in the order they were pushed, into
    /// `batch` (which should be empty; its allocation is reused).
    pub fn take(&self, batch: &mut Vec<T>) {
        let mut queue = lock(&self.queue);
        std::mem::swap(&mut queue.items, batch);
    }

    /// Closes the queue and returns what was still in it. Later pushes are
    /// refused.
    pub fn close(&self) -> Vec<T> {
        let mut queue = lock(&self.queue);
        queue.closed = true;
        std::mem::take(&mut queue.items)
    }

    /// True once [`close`](HandOff::close) was called.
    pub fn is_closed(&self) -> bool {
        lock(&self.queue).closed
    }

    /// Wakes the receiver without queueing anything.
    pub fn wake(&self) {
        self.notifier.notify();
    }
}

impl<T, N> std::fmt::Debug for HandOff<T, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = lock(&self.queue);
        f.debug_struct("HandOff")
            .field("queued", &queue.items.len())
            .field("closed", &queue.closed)
            .finish()
    }
}
