//! Synapse's cancellation document, "Creation of Deferreds", **Bad**: one
//! Deferred per room, handed to every request that waits for that room.
//!
//! The document says that when one waiter is cancelled, *all* of them
//! observe a `CancelledError`. That is not what happens (here, and in real
//! Twisted; see `../shared/reference/synapse_semantics.md`, §4 D-Bad):
//!
//! * the cancel reaches the shared Deferred, which fails with
//!   `CancelledError`;
//! * the **first-registered** waiter gets that `CancelledError`, although
//!   it was the *other* request that was cancelled: a wrongly failed
//!   request;
//! * every other waiter, the cancelled one included, resumes at once with
//!   `None`, as if the room were ready (an await hands the result on and
//!   leaves `None` behind for the next awaiter);
//! * the cache entry is spoiled: a later request "finds the room ready" at
//!   once;
//! * and the producer's real `callback()` later is swallowed silently (a
//!   Deferred cancelled without a canceller ignores the next call).
//!
//! ```sh
//! cargo run -p twisted-compat --example shared_deferred_bad
//! ```

#[path = "common/mod.rs"]
mod common;

use std::cell::RefCell;
use std::collections::HashMap;

use common::{Example, Outcome, describe, info};
use twisted_compat::cancellation_fuzzer::FuzzRun;
use twisted_compat::{Deferred, Failure, make_deferred_yieldable};

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
    // # `deferred` can have multiple waiters.
    // # All of them will observe a `CancelledError`
    // # if any one of them is cancelled.
    // return make_deferred_yieldable(deferred)
    make_deferred_yieldable(deferred)
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
    let example = Example::new("Shared Deferred, Bad: one Deferred for every waiter");
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
            Ok(()) => "returned normally (swallowed: nobody was told)".to_owned(),
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
