//! Synapse's cancellation document, "CancelledErrors", the second **Good**
//! cell: catch only the error you expect (`except ValueError`). In Rust:
//! match on `f.check::<ValueError>()` and let every other failure,
//! `CancelledError` included, propagate.
//!
//! Two requests: in the first, `do_something` fails with a `ValueError`,
//! which is caught and logged (200); the second is cancelled and its
//! `CancelledError` passes through the `try` (499).
//!
//! ```sh
//! cargo run -p twisted-compat --example cancel_catching_good_narrow
//! ```

#[path = "common/mod.rs"]
mod common;

use common::{Example, Outcome, ValueError, describe, info, sleep};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{Deferred, Failure};

/// `async def do_something()`: waits five seconds (cancellable), then
/// fails with `ValueError` when `broken`.
async fn do_something(broken: bool) -> Result<(), Failure> {
    sleep("do_something's sleep", 5.0).await?;
    if broken {
        return Err(Failure::new(ValueError("bad input".into())));
    }
    Ok(())
}

/// The handler: the document's second Good snippet.
async fn handler(broken: bool) -> Result<String, Failure> {
    // try:
    //     await do_something()
    match do_something(broken).await {
        Ok(()) => {}
        // except ValueError:
        //     logger.info(...)
        Err(failure) if failure.check::<ValueError>() => {
            info(format!("do_something failed: {}", describe(&failure)))
        }
        // (anything else, CancelledError included, propagates)
        Err(failure) => return Err(failure),
    }
    Ok("{}".to_owned())
}

/// Runs the example and returns what it observed.
pub fn run() -> Outcome {
    let example = Example::new("CancelledErrors, Good: catch only the error you expect");
    example.request("request-1", || handler(true));
    example.request("request-2", || handler(false));
    example.disconnect("request-2");
    example.checkpoint("after cancel()");
    example.advance(5.0);
    example.checkpoint("after 5 s");
    example.finish()
}

/// The cancellation fuzzer's target: request-2, cancelled where it waits, while
/// request-1 (whose `do_something` fails with `ValueError`) must not notice.
pub fn fuzz_target(run: &mut FuzzRun) -> Deferred<String> {
    common::fuzz_setup(run);
    let request_1 = common::start_request("request-1", || handler(true));
    run.bystander("request-1", &request_1);
    common::start_request("request-2", || handler(false))
}

/// Prints the trace, then what the cancellation fuzzer finds.
pub fn main() {
    run().print();
    common::print_fuzz_report("request-2", fuzz_target);
}
