//! Synapse's cancellation document, "Creation of Deferreds", first **Good**:
//! every waiter gets its own `stop_cancellation` wrapper around the shared
//! Deferred. Cancelling a waiter fails only its wrapper (at once, with
//! `CancelledError`); the shared Deferred is never cancelled, and the other
//! waiters keep waiting until the room is ready.
//!
//! A caveat the document leaves out: the wrappers are chained to the shared
//! Deferred, and chaining hands its result on, so only the first wrapper
//! receives the real value and the others get `None`. That is harmless for
//! the document's `Deferred[None]`, the only way Synapse uses it.
//!
//! ```sh
//! cargo run -p twisted-compat --example shared_deferred_good_stop_cancellation
//! ```

#[path = "common/mod.rs"]
mod common;

use std::cell::RefCell;
use std::collections::HashMap;

use common::{Example, Outcome, describe, info};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{Deferred, Failure, make_deferred_yieldable, stop_cancellation};

/// The room every request waits for.
const ROOM: &str = "!aAAaaAaaaAAAaAaAA:matrix.org";

thread_local! {
    // cache: Dict[str, Deferred[None]] = {}
    static CACHE: RefCell<HashMap<String, Deferred<()>>> = RefCell::new(HashMap::new());
}

// def wait_for_room(room_id: str) -> Deferred[None]:
fn wait_for_room(room_id: &str) -> Deferred<()> {
    // deferred = cache.get(room_id)
    let deferred = CACHE.with(|cache| cache.borrow().get(room_id).cloned());
    // if deferred is None:
    let deferred = deferred.unwrap_or_else(|| {
        // deferred = Deferred()
        let deferred = Deferred::new();
        // cache[room_id] = deferred
        CACHE.with(|cache| {
            cache
                .borrow_mut()
                .insert(room_id.to_owned(), deferred.clone())
        });
        deferred
    });
    // # `deferred` will never be cancelled now.
    // # A `CancelledError` will still come out of
    // # the `await`.
    // # `delay_cancellation` may also be used.
    // return make_deferred_yieldable(stop_cancellation(deferred))
    make_deferred_yieldable(stop_cancellation(&deferred))
}

/// A request handler: waits for the room, then answers.
async fn handler() -> Result<String, Failure> {
    // await wait_for_room("!aAAaaAaaaAAAaAaAA:matrix.org")
    wait_for_room(ROOM).await?;
    info("the room is ready: carrying on");
    Ok("room ready".to_owned())
}

/// The producer: the room becomes ready and its Deferred is called back.
fn room_becomes_ready() -> Result<(), Failure> {
    let deferred = CACHE.with(|cache| cache.borrow().get(ROOM).cloned());
    match deferred {
        Some(deferred) => deferred.callback(()),
        None => Ok(()),
    }
}

/// Runs the example and returns what it observed.
pub fn run() -> Outcome {
    let example = Example::new("Shared Deferred, Good: stop_cancellation for each waiter");
    CACHE.with(|cache| cache.borrow_mut().clear());
    // # Request 1
    example.request("request-1", handler);
    // # Request 2
    example.request("request-2", handler);
    example.disconnect("request-2");
    example.checkpoint("after request-2 is cancelled");
    example.request("request-3", handler);
    example.checkpoint("after request-3 arrives");
    common::step("the room becomes ready: the producer calls back the cached Deferred");
    let fired = room_becomes_ready();
    example.fact(
        "the producer's callback()",
        match fired {
            Ok(()) => "returned normally".to_owned(),
            Err(f) => format!("raised {}", describe(&f)),
        },
    );
    example.checkpoint("at the end");
    CACHE.with(|cache| cache.borrow_mut().clear());
    example.finish()
}

/// The cancellation fuzzer's target: request-2, cancelled where it waits
/// for the room, while request-1 waits for the same room and must not
/// notice.
pub fn fuzz_target(run: &mut FuzzRun) -> Deferred<String> {
    common::fuzz_setup(run);
    CACHE.with(|cache| cache.borrow_mut().clear());
    run.at_end(|| CACHE.with(|cache| cache.borrow_mut().clear()));
    // # Request 1
    let request_1 = common::start_request("request-1", handler);
    run.bystander("request-1", &request_1);
    run.step("the room becomes ready", room_becomes_ready);
    // # Request 2
    common::start_request("request-2", handler)
}

/// Prints the trace, then what the cancellation fuzzer finds.
pub fn main() {
    run().print();
    common::print_fuzz_report("request-2", fuzz_target);
}
