//! Synapse's cancellation document, "CancelledErrors", **OK**: a catch-all
//! around code that never awaits. No `CancelledError` can be raised inside
//! such a `try`, because cancellation only ever comes out of an `await`.
//!
//! Here `check_something()` fails with an ordinary error, which is logged;
//! the handler then awaits, is cancelled there, and Synapse answers 499.
//!
//! ```sh
//! cargo run -p twisted-compat --example cancel_catching_ok
//! ```

#[path = "common/mod.rs"]
mod common;

use common::{Example, Outcome, ValueError, describe, info, sleep};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{Deferred, Failure};

/// `def check_something()`: synchronous; it fails here, to show the
/// catch-all at work.
fn check_something() -> Result<(), Failure> {
    Err(Failure::new(ValueError("the room is too big".into())))
}

/// `async def do_something()`: waits five seconds (cancellable).
async fn do_something() -> Result<(), Failure> {
    sleep("do_something's sleep", 5.0).await
}

/// The handler: the document's OK snippet, then an `await`.
async fn handler() -> Result<String, Failure> {
    // try:
    //     check_something()
    //     # A `CancelledError` won't ever be raised here.
    // except Exception:
    //     logger.info(...)
    if let Err(failure) = check_something() {
        info(format!("check_something failed: {}", describe(&failure)));
    }
    // (then the handler awaits, outside any try)
    do_something().await?;
    Ok("{}".to_owned())
}

/// Runs the example and returns what it observed.
pub fn run() -> Outcome {
    let example = Example::new("CancelledErrors, OK: a catch-all around code that never awaits");
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
