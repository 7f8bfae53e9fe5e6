//! Synapse's cancellation document, "CancelledErrors", **Bad**: a `try`
//! around an `await` whose `except Exception` also catches the
//! `CancelledError`. Twisted's `CancelledError` is an ordinary `Exception`;
//! here it is an ordinary `Failure`, and a `match` arm `Err(_)` catches it
//! just as well.
//!
//! What goes wrong: the cancelled handler carries on after the `try` and
//! returns normally, so Synapse records a 200 where a cancelled request
//! must end with 499.
//!
//! ```sh
//! cargo run -p twisted-compat --example cancel_catching_bad
//! ```

#[path = "common/mod.rs"]
mod common;

use common::{Example, Outcome, describe, info, sleep};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{Deferred, Failure};

/// `async def do_something()`: waits five seconds (cancellable).
async fn do_something() -> Result<(), Failure> {
    sleep("do_something's sleep", 5.0).await
}

/// The handler: the document's Bad snippet.
async fn handler() -> Result<String, Failure> {
    // try:
    //     await do_something()
    match do_something().await {
        Ok(()) => {}
        // except Exception:
        //     # `CancelledError` gets swallowed here.
        //     logger.info(...)
        Err(failure) => info(format!("do_something failed: {}", describe(&failure))),
    }
    // (the handler goes on, as if nothing had happened)
    info("carrying on after the try");
    Ok("{}".to_owned())
}

/// Runs the example and returns what it observed.
pub fn run() -> Outcome {
    let example = Example::new("CancelledErrors, Bad: `except Exception` swallows the cancel");
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
