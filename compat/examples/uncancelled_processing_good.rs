//! Synapse's cancellation document, "Uncancelled processing", **Good**:
//! the request that *started* the shared work (and lent it its logging
//! context) waits for it through `delay_cancellation`; requests that join
//! later wait on a plain observer.
//!
//! Cancelling request-1 now leaves it without a result until the work has
//! finished; only then does it fail with `CancelledError` (499). "done!" is
//! logged while request-1's context is still alive, and no misuse is
//! reported. request-2 gets the result.
//!
//! What the document does not say (real Synapse behaves the same): firing
//! `to_resolve` resumes request-1 *inside* `do_something_else`, and
//! request-1 finishes its context there. With the document's bare
//! `to_resolve.callback(None)` nothing is reported, but the rest of
//! `do_something_else` runs in the sentinel context: its context is
//! silently lost. Firing it inside `PreserveLoggingContext()` (the usual
//! practice when firing a Deferred) brings the finished request-1 back when
//! that block ends: "Re-starting finished log context request-1". This
//! example runs both. Synapse's own code avoids the problem by doing the
//! shared work inline, in the initiator's coroutine, under
//! `delay_cancellation` (see `synapse_semantics.md`, #116).
//!
//! ```sh
//! cargo run -p twisted-compat --example uncancelled_processing_good
//! ```

#[path = "common/mod.rs"]
mod common;

use std::cell::{Cell, RefCell};

use common::{Example, Outcome, info, sleep};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{
    Deferred, Failure, ObservableDeferred, PreserveLoggingContext, delay_cancellation,
    make_deferred_yieldable, run_in_background,
};

thread_local! {
    // cache: ObservableDeferred[None] | None = None
    static CACHE: RefCell<Option<ObservableDeferred<()>>> = const { RefCell::new(None) };
    /// The variant: fire `to_resolve` inside `PreserveLoggingContext()`.
    static FIRE_INSIDE_PRESERVE: Cell<bool> = const { Cell::new(false) };
}

// async def do_something_else(
//     to_resolve: Deferred[None]
// ) -> None:
async fn do_something_else(to_resolve: Deferred<()>) -> Result<(), Failure> {
    // await ...
    sleep("do_something_else's work", 1.0).await?;
    // logger.info("done!")
    info("done!");
    if FIRE_INSIDE_PRESERVE.get() {
        // (variant) with PreserveLoggingContext():
        //               to_resolve.callback(None)
        let _preserve = PreserveLoggingContext::sentinel();
        to_resolve.callback(())?;
    } else {
        // to_resolve.callback(None)
        to_resolve.callback(())?;
    }
    // (added: the context the rest of do_something_else would run in)
    info("do_something_else: after to_resolve.callback()");
    Ok(())
}

// async def do_something() -> None:
async fn do_something() -> Result<(), Failure> {
    // if not cache:
    if CACHE.with(|cache| cache.borrow().is_none()) {
        // to_resolve = Deferred()
        let to_resolve: Deferred<()> = Deferred::new();
        // cache = ObservableDeferred(to_resolve)
        let observable = ObservableDeferred::new(to_resolve.clone(), false);
        CACHE.with(|cache| *cache.borrow_mut() = Some(observable));
        // run_in_background(do_something_else, to_resolve)
        let _: Deferred<()> = run_in_background(move || do_something_else(to_resolve));
        // # We'll wait until `do_something_else` is
        // # done before raising a `CancelledError`.
        // await make_deferred_yieldable(
        //     delay_cancellation(cache.observe())
        // )
        make_deferred_yieldable(delay_cancellation(&observe())).await
    // else:
    } else {
        // await make_deferred_yieldable(cache.observe())
        make_deferred_yieldable(observe()).await
    }
}

/// `cache.observe()`.
fn observe() -> Deferred<()> {
    CACHE.with(|cache| {
        cache
            .borrow()
            .as_ref()
            .map(|od| od.observe())
            .unwrap_or_default()
    })
}

/// A request handler: `await do_something()` (the Python runs it inside
/// `with LoggingContext("request-1"):`, which the request driver provides).
async fn handler() -> Result<String, Failure> {
    // await do_something()
    do_something().await?;
    info("got the result");
    Ok("done".to_owned())
}

/// Runs the document's version (`to_resolve` fired bare) and returns what
/// it observed.
pub fn run() -> Outcome {
    run_variant(false)
}

/// Runs it with `to_resolve` fired bare (`false`, the document's code) or
/// inside `PreserveLoggingContext()` (`true`).
pub fn run_variant(fire_inside_preserve: bool) -> Outcome {
    let title = if fire_inside_preserve {
        "Uncancelled processing, Good (variant): to_resolve fired inside PreserveLoggingContext()"
    } else {
        "Uncancelled processing, Good: request-1 waits for the work with delay_cancellation"
    };
    let example = Example::new(title);
    FIRE_INSIDE_PRESERVE.set(fire_inside_preserve);
    CACHE.with(|cache| cache.borrow_mut().take());
    // with LoggingContext("request-1"):
    //     await do_something()
    example.request("request-1", handler);
    example.request("request-2", handler);
    example.disconnect("request-1");
    example.checkpoint("after request-1 is cancelled");
    example.advance(1.0);
    example.checkpoint("after the work is done");
    CACHE.with(|cache| cache.borrow_mut().take());
    example.finish()
}

/// The cancellation fuzzer's target, the document's version: request-1,
/// which starts the work, cancelled where it waits, while request-2 joins
/// the work and must not notice.
pub fn fuzz_target(run: &mut FuzzRun) -> Deferred<String> {
    fuzz_target_variant(run, false)
}

/// The cancellation fuzzer's target, with `to_resolve` fired bare
/// (`false`) or inside `PreserveLoggingContext()` (`true`).
pub fn fuzz_target_variant(run: &mut FuzzRun, fire_inside_preserve: bool) -> Deferred<String> {
    FIRE_INSIDE_PRESERVE.set(fire_inside_preserve);
    common::fuzz_setup(run);
    CACHE.with(|cache| cache.borrow_mut().take());
    run.at_end(|| {
        CACHE.with(|cache| cache.borrow_mut().take());
    });
    let request_1 = common::start_request("request-1", handler);
    let request_2 = common::start_request("request-2", handler);
    run.bystander("request-2", &request_2);
    request_1
}

/// Prints the traces of both versions, then what the cancellation fuzzer
/// finds in the document's.
pub fn main() {
    run().print();
    println!();
    run_variant(true).print();
    common::print_fuzz_report("request-1", fuzz_target);
}
