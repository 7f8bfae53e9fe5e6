//! Synapse's cancellation document, "defer.gatherResults", **Good**: the
//! gathered Deferred gets `.addErrback(unwrapFirstError)`, so the first
//! child's `CancelledError` comes out of the `await` as itself, the
//! `except CancelledError: raise` re-raises it, and Synapse answers 499.
//!
//! ```sh
//! cargo run -p twisted-compat --example gather_first_error_good
//! ```

#[path = "common/mod.rs"]
mod common;

use common::{Example, Outcome, describe, info, slow_operation};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{CancelledError, Deferred, Failure, make_deferred_yieldable};
use twisted_deferred::{gather_results, unwrap_first_error};

// async def do_something() -> None:
async fn do_something() -> Result<(), Failure> {
    // await make_deferred_yieldable(
    //     defer.gatherResults([...], consumeErrors=True)
    // ).addErrback(unwrapFirstError)
    make_deferred_yieldable(gather_results(
        [
            slow_operation("child 0", 5.0),
            slow_operation("child 1", 5.0),
        ],
        true,
    ))
    .add_errback(unwrap_first_error)
    .await?;
    Ok(())
}

/// The handler that calls it (unchanged from the Bad version).
async fn handler() -> Result<String, Failure> {
    // try:
    //     await do_something()
    match do_something().await {
        Ok(()) => {}
        // except CancelledError:
        //     raise
        Err(failure) if failure.check::<CancelledError>() => return Err(failure),
        // except Exception:
        //     logger.info(...)
        Err(failure) => info(format!("do_something failed: {}", describe(&failure))),
    }
    Ok("{}".to_owned())
}

/// Runs the example and returns what it observed.
pub fn run() -> Outcome {
    let example = Example::new("gatherResults, Good: unwrapFirstError lets CancelledError out");
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
