//! Bytes sent to the HTTP server as a client would, in chunks, the client
//! sometimes leaving: see `integration_tests::fuzzing::http`. On top of the
//! harness's own checks, this target counts the heap allocations a run
//! leaves behind.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use integration_tests::fuzzing::http;

/// The system allocator, counting live allocations.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(1, Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(1, Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(1, Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let before = LIVE.load(Relaxed);
    http::check(data);
    let left = LIVE.load(Relaxed) - before;
    if left != 0 {
        // The first run may fill the libraries' thread-local tables (kept
        // for reuse); a second run of the same input must leave nothing
        // behind.
        let before = LIVE.load(Relaxed);
        http::check(data);
        let left = LIVE.load(Relaxed) - before;
        assert!(left == 0, "{left} heap allocations left alive by one run");
    }
});
