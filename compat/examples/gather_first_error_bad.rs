//! Synapse's cancellation document, "defer.gatherResults", **Bad**.
//! `gatherResults` passes `cancel()` on to every Deferred it gathers, and
//! reports the first failure it sees wrapped in a `FirstError`. Cancelled,
//! the first child's `CancelledError` therefore comes out of the `await` as
//! `FirstError(CancelledError)`, which is not a `CancelledError`: the
//! `except CancelledError: raise` does not match it and the catch-all
//! swallows it.
//!
//! What goes wrong: the handler returns normally (Synapse records 200, not
//! 499). The trace also shows an ordering detail the document does not
//! mention: the gather fires on its first failure, in the middle of its
//! cancel loop, so the handler resumes, swallows the error and returns
//! before the second child is even cancelled (its Deferred, and so the
//! response, only fires once the loop is over; real Twisted does the same).
//!
//! ```sh
//! cargo run -p twisted-compat --example gather_first_error_bad
//! ```

#[path = "common/mod.rs"]
mod common;

use common::{Example, Outcome, describe, info, slow_operation};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{CancelledError, Deferred, Failure, make_deferred_yieldable};
use twisted_deferred::gather_results;

// async def do_something() -> None:
async fn do_something() -> Result<(), Failure> {
    // await make_deferred_yieldable(
    //     defer.gatherResults([...], consumeErrors=True)
    // )
    make_deferred_yieldable(gather_results(
        [
            slow_operation("child 0", 5.0),
            slow_operation("child 1", 5.0),
        ],
        true,
    ))
    .await?;
    Ok(())
}

/// The handler that calls it.
async fn handler() -> Result<String, Failure> {
    // try:
    //     await do_something()
    match do_something().await {
        Ok(()) => {}
        // except CancelledError:
        //     raise
        Err(failure) if failure.check::<CancelledError>() => return Err(failure),
        // except Exception:
        //     # `FirstError(CancelledError)` gets swallowed here.
        //     logger.info(...)
        Err(failure) => info(format!("do_something failed: {}", describe(&failure))),
    }
    Ok("{}".to_owned())
}

/// Runs the example and returns what it observed.
pub fn run() -> Outcome {
    let example = Example::new("gatherResults, Bad: FirstError(CancelledError) is swallowed");
    example.request("request-1", handler);
    example.disconnect("request-1");
    example.checkpoint("after cancel()");
    example.fact(
        "timers left on the clock",
        example.clock().delayed_call_count(),
    );
    example.finish()
}

/// The cancellation fuzzer's target: request-1, cancelled where it waits.
pub fn fuzz_target(run: &mut FuzzRun) -> Deferred<String> {
    common::fuzz_setup(run);
    common::start_request("request-1", handler)
}

/// Prints the trace, then what the cancellation fuzzer finds.
pub fn main() {
    run().print();
    common::print_fuzz_report("request-1", fuzz_target);
}
