//! Synapse's cancellation document, "CancelledErrors", **Good**: the
//! `CancelledError` is re-raised before the catch-all. In Rust: a match arm
//! for `f.check::<CancelledError>()` that returns the failure, placed before
//! the arm that catches everything.
//!
//! The handler stops at the cancelled `await`, and Synapse answers 499.
//!
//! ```sh
//! cargo run -p twisted-compat --example cancel_catching_good
//! ```

#[path = "common/mod.rs"]
mod common;

use common::{Example, Outcome, describe, info, sleep};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{CancelledError, Deferred, Failure};

/// `async def do_something()`: waits five seconds (cancellable).
async fn do_something() -> Result<(), Failure> {
    sleep("do_something's sleep", 5.0).await
}

/// The handler: the document's Good snippet.
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
    info("carrying on after the try");
    Ok("{}".to_owned())
}

/// Runs the example and returns what it observed.
pub fn run() -> Outcome {
    let example = Example::new("CancelledErrors, Good: re-raise CancelledError first");
    example.request("request-1", handler);
    example.disconnect("request-1");
    example.checkpoint("after cancel()");
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
