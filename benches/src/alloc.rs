//! A counting global allocator: [`CountingAlloc`] wraps the system
//! allocator and, while counting is on, counts allocations (including
//! reallocations, which may move a block) and bytes requested.
//!
//! It counts only when installed (`#[global_allocator]`, done by the
//! comparison binary and the allocation-count test, never by the criterion
//! benchmarks) and only inside [`timed`](crate::timed) sections after
//! [`request_counting`] was called, so measuring time and counting
//! allocations are separate passes. Counts are global (atomics): allocations
//! made by other threads during a counted section count too, which is what
//! `call_from_thread` needs (the sender's allocations are part of a call).

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static ON: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// One count at a time (the counters are global).
static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// The system allocator, counting while counting is on.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

impl CountingAlloc {
    #[inline]
    fn count(size: usize) {
        if ON.load(Relaxed) {
            ALLOCS.fetch_add(1, Relaxed);
            BYTES.fetch_add(size as u64, Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are `CountingAlloc`'s; the counting
// only touches atomics and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract (a
        // non-zero-sized layout), which is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, that is by
        // `System`, with `layout` (the caller's contract).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        // SAFETY: `ptr` came from `System` with `layout`, and the caller
        // guarantees `new_size` is valid for it (`GlobalAlloc::realloc`'s
        // contract, which is `System.realloc`'s).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations counted.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Counts {
    /// Allocations and reallocations.
    pub allocs: u64,
    /// Bytes requested by them.
    pub bytes: u64,
}

impl Counts {
    /// Per unit, for `n` units.
    pub fn per(self, n: u64) -> (f64, f64) {
        let n = n.max(1) as f64;
        (self.allocs as f64 / n, self.bytes as f64 / n)
    }
}

/// Turns counting on for every [`timed`](crate::timed) section until the
/// returned guard is dropped, and resets the counters. Returns `None` when
/// the counting allocator is not the global allocator. Requests from
/// several threads wait for each other.
pub fn request_counting() -> Option<CountRequest> {
    let exclusive = EXCLUSIVE.lock().unwrap_or_else(|e| e.into_inner());
    ALLOCS.store(0, Relaxed);
    BYTES.store(0, Relaxed);
    ON.store(true, Relaxed);
    let probe = std::hint::black_box(Box::new(0u64));
    drop(probe);
    ON.store(false, Relaxed);
    let installed = ALLOCS.swap(0, Relaxed) > 0;
    BYTES.store(0, Relaxed);
    if !installed {
        return None;
    }
    REQUESTED.store(true, Relaxed);
    Some(CountRequest(exclusive))
}

/// Counting requested; [`CountRequest::counts`] reads the counters.
#[derive(Debug)]
pub struct CountRequest(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

impl CountRequest {
    /// What the timed sections allocated since the request.
    pub fn counts(&self) -> Counts {
        Counts {
            allocs: ALLOCS.load(Relaxed),
            bytes: BYTES.load(Relaxed),
        }
    }
}

impl Drop for CountRequest {
    fn drop(&mut self) {
        REQUESTED.store(false, Relaxed);
        ON.store(false, Relaxed);
    }
}

/// Counting on for a timed section (when requested).
#[derive(Debug)]
pub(crate) struct CountingGuard(bool);

impl CountingGuard {
    #[inline]
    pub(crate) fn start() -> CountingGuard {
        let on = REQUESTED.load(Relaxed);
        if on {
            ON.store(true, Relaxed);
        }
        CountingGuard(on)
    }
}

impl Drop for CountingGuard {
    #[inline]
    fn drop(&mut self) {
        if self.0 {
            ON.store(false, Relaxed);
        }
    }
}

/// Counts the allocations of `f` (which should use [`timed`](crate::timed)
/// sections, as every case does). `None` when not installed.
pub fn count<R>(f: impl FnOnce() -> R) -> Option<(Counts, R)> {
    let request = request_counting()?;
    let r = f();
    Some((request.counts(), r))
}

/// Counts every allocation of `f`, timed sections or not. `None` when not
/// installed.
pub fn count_all<R>(f: impl FnOnce() -> R) -> Option<(Counts, R)> {
    count(|| crate::timed(f).1)
}
