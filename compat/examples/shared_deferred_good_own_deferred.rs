//! Synapse's cancellation document, "Creation of Deferreds", second
//! **Good**: every waiter gets a Deferred of its own, kept in a list per
//! room. Cancelling a waiter fails only its own Deferred; when the room is
//! ready the producer calls back every Deferred in the list, the call on the
//! cancelled one is silently ignored (a Deferred cancelled without a
//! canceller ignores the next call), and every live waiter gets the value.
//!
//! (The document's snippet has a typo, `cache[room_id]].append(deferred)`.)
//!
//! ```sh
//! cargo run -p twisted-compat --example shared_deferred_good_own_deferred
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
    // cache: Dict[str, List[Deferred[None]]] = {}
    static CACHE: RefCell<HashMap<String, Vec<Deferred<()>>>> = RefCell::new(HashMap::new());
}

// def wait_for_room(room_id: str) -> Deferred[None]:
fn wait_for_room(room_id: &str) -> Deferred<()> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        // if room_id not in cache:
        if !cache.contains_key(room_id) {
            // cache[room_id] = []
            cache.insert(room_id.to_owned(), Vec::new());
        }
    });
    // # Each request gets its own `Deferred` to wait on.
    // deferred = Deferred()
    let deferred = Deferred::new();
    // cache[room_id].append(deferred)
    CACHE.with(|cache| {
        if let Some(waiters) = cache.borrow_mut().get_mut(room_id) {
            waiters.push(deferred.clone());
        }
    });
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

/// The producer: the room becomes ready and every waiter's Deferred is
/// called back. Returns the outcome of each call.
fn room_becomes_ready() -> Vec<Result<(), Failure>> {
    let waiters = CACHE.with(|cache| cache.borrow_mut().remove(ROOM).unwrap_or_default());
    waiters
        .iter()
        .map(|deferred| deferred.callback(()))
        .collect()
}

/// Runs the example and returns what it observed.
pub fn run() -> Outcome {
    let example = Example::new("Shared Deferred, Good: one Deferred per waiter");
    CACHE.with(|cache| cache.borrow_mut().clear());
    // # Request 1
    example.request("request-1", handler);
    // # Request 2
    example.request("request-2", handler);
    example.disconnect("request-2");
    example.checkpoint("after request-2 is cancelled");
    example.request("request-3", handler);
    example.checkpoint("after request-3 arrives");
    common::step("the room becomes ready: the producer calls back every waiter's Deferred");
    let fired: Vec<String> = room_becomes_ready()
        .into_iter()
        .map(|r| match r {
            Ok(()) => "ok".to_owned(),
            Err(f) => describe(&f),
        })
        .collect();
    example.fact("the producer's callback() calls", fired.join(", "));
    example.checkpoint("at the end");
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
    run.step("the room becomes ready", || {
        room_becomes_ready()
            .into_iter()
            .collect::<Result<Vec<()>, Failure>>()?;
        Ok(())
    });
    // # Request 2
    common::start_request("request-2", handler)
}

/// Prints the trace, then what the cancellation fuzzer finds.
pub fn main() {
    run().print();
    common::print_fuzz_report("request-2", fuzz_target);
}
