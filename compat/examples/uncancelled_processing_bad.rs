//! Synapse's cancellation document, "Uncancelled processing", **Bad**.
//! `request-1` starts shared work, `do_something_else`, with
//! `run_in_background`: the work runs in request-1's logging context. Other
//! requests join it through an `ObservableDeferred`. Nothing cancels the
//! work (each request waits on an observer of its own).
//!
//! What goes wrong: cancelling request-1 fails its observer at once, so its
//! `with LoggingContext("request-1")` block ends and the context is
//! finished, while `do_something_else` is still running *in that context*.
//! When the work resumes it brings the finished context back ("Re-starting
//! finished log context request-1") and logs "done!" against it, so
//! request-1's resources are counted after its end. request-2 still gets
//! the result.
//!
//! ```sh
//! cargo run -p twisted-compat --example uncancelled_processing_bad
//! ```

#[path = "common/mod.rs"]
mod common;

use std::cell::RefCell;

use common::{Example, Outcome, info, sleep};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{
    Deferred, Failure, ObservableDeferred, make_deferred_yieldable, run_in_background,
};

thread_local! {
    // cache: ObservableDeferred[None] | None = None
    static CACHE: RefCell<Option<ObservableDeferred<()>>> = const { RefCell::new(None) };
}

// async def do_something_else(
//     to_resolve: Deferred[None]
// ) -> None:
async fn do_something_else(to_resolve: Deferred<()>) -> Result<(), Failure> {
    // await ...
    sleep("do_something_else's work", 1.0).await?;
    // logger.info("done!")
    info("done!");
    // to_resolve.callback(None)
    to_resolve.callback(())?;
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
        // # `do_something_else` will never be cancelled and
        // # can outlive the `request-1` logging context.
        // run_in_background(do_something_else, to_resolve)
        let _: Deferred<()> = run_in_background(move || do_something_else(to_resolve));
    }
    // await make_deferred_yieldable(cache.observe())
    make_deferred_yieldable(observe()).await
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

/// Runs the example and returns what it observed.
pub fn run() -> Outcome {
    let example =
        Example::new("Uncancelled processing, Bad: the work outlives request-1's context");
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

/// The cancellation fuzzer's target: request-1, which starts the work,
/// cancelled where it waits, while request-2 joins the work and must not
/// notice.
pub fn fuzz_target(run: &mut FuzzRun) -> Deferred<String> {
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

/// Prints the trace, then what the cancellation fuzzer finds.
pub fn main() {
    run().print();
    common::print_fuzz_report("request-1", fuzz_target);
}
