//! Synapse's cancellation document, "`async` function calls": a function
//! that only calls and awaits other `async` functions handles cancellation
//! correctly if each of them does. `cancel()` reaches whichever `await` is
//! in progress, however deep in nested `async fn`s, and the
//! `CancelledError` propagates out through each of them; synchronous calls
//! (`check_something`) cannot be interrupted and need no checking.
//!
//! Two requests: request-1 is cancelled while `do_something` runs (so
//! `do_something_else` never starts), request-2 while `do_something_else`
//! runs.
//!
//! ```sh
//! cargo run -p twisted-compat --example async_function_calls
//! ```

#[path = "common/mod.rs"]
mod common;

use common::{Example, Outcome, info, sleep};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{Deferred, Failure};

/// `def check_something()`: synchronous.
fn check_something() {
    info("check_something");
}

/// `async def do_something()`: one second of work.
async fn do_something() -> Result<(), Failure> {
    info("do_something starts");
    sleep("do_something's sleep", 1.0).await?;
    info("do_something ends");
    Ok(())
}

/// `async def do_something_else()`: one more second of work.
async fn do_something_else() -> Result<(), Failure> {
    info("do_something_else starts");
    sleep("do_something_else's sleep", 1.0).await?;
    info("do_something_else ends");
    Ok(())
}

// async def do_two_things() -> None:
async fn do_two_things() -> Result<(), Failure> {
    // check_something()
    check_something();
    // await do_something()
    do_something().await?;
    // await do_something_else()
    do_something_else().await?;
    Ok(())
}

/// The handler.
async fn handler() -> Result<String, Failure> {
    do_two_things().await?;
    Ok("{}".to_owned())
}

/// Runs the example and returns what it observed.
pub fn run() -> Outcome {
    let example = Example::new("async function calls: cancel() reaches the await in progress");
    example.request("request-1", handler);
    example.request("request-2", handler);
    example.advance(0.5);
    example.disconnect("request-1");
    example.advance(1.0);
    example.disconnect("request-2");
    example.checkpoint("after both are cancelled");
    example.advance(1.0);
    example.fact(
        "timers left on the clock",
        example.clock().delayed_call_count(),
    );
    example.finish()
}

/// The cancellation fuzzer's target: request-1, cancelled at each of its
/// sleeps.
pub fn fuzz_target(run: &mut FuzzRun) -> Deferred<String> {
    common::fuzz_setup(run);
    common::start_request("request-1", handler)
}

/// Prints the trace, then what the cancellation fuzzer finds.
pub fn main() {
    run().print();
    common::print_fuzz_report("request-1", fuzz_target);
}
