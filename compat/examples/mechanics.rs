//! Synapse's cancellation document, "Mechanics": the two stages of a
//! cancellation. `cancel()` goes *down* from the request's Deferred to the
//! Deferred it is waiting on, which fails with `CancelledError`; the
//! `CancelledError` comes *up* out of the `await` and out of the handler,
//! and Synapse answers 499.
//!
//! ```sh
//! cargo run -p twisted-compat --example mechanics
//! ```
//!
//! Each Python line of the document is the comment above its Rust port;
//! `note(...)`, `step(...)` and `Example` are this project's instrumentation
//! (see `common/mod.rs`).

#[path = "common/mod.rs"]
mod common;

use common::{Example, Outcome, describe, note};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{Deferred, Failure, make_deferred_yieldable};

// def do_something() -> Deferred[None]:
//     ...
fn do_something() -> Deferred<()> {
    // (the `...`: a Deferred whose canceller stops the work it stands for)
    Deferred::with_canceller(|_d: &Deferred<()>| {
        note("do_something's Deferred: its canceller runs (the work is stopped)")
    })
}

// @cancellable
// async def on_GET() -> Tuple[int, JsonDict]:
async fn on_get() -> Result<String, Failure> {
    // d = make_deferred_yieldable(do_something())
    let d = make_deferred_yieldable(do_something());
    // await d
    if let Err(failure) = d.await {
        note(format!(
            "{} comes out of `await d` in on_GET and propagates",
            describe(&failure)
        ));
        return Err(failure);
    }
    // return 200, {}
    Ok("{}".to_owned())
}

/// Runs the example and returns what it observed.
pub fn run() -> Outcome {
    let example = Example::new("Mechanics: cancel() goes down, CancelledError comes up");
    // request = defer.ensureDeferred(on_GET())
    example.request("request-1", on_get);
    example.checkpoint("while on_GET waits on d");
    example.disconnect("request-1");
    example.checkpoint("after cancel()");
    example.finish()
}

/// The cancellation fuzzer's target: request-1, cancelled where it waits.
pub fn fuzz_target(run: &mut FuzzRun) -> Deferred<String> {
    common::fuzz_setup(run);
    common::start_request("request-1", on_get)
}

/// Prints the trace, then what the cancellation fuzzer finds.
pub fn main() {
    run().print();
    common::print_fuzz_report("request-1", fuzz_target);
}
