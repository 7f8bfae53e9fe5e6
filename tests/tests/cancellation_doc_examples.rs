//! Every example of Synapse's "Cancellation" document, as ported in
//! `compat/examples/`: each Bad variant's misbehaviour is asserted, and its
//! absence in the Good and OK variants. The example files are included as
//! modules, so these tests run the very code `cargo run -p twisted-compat
//! --example NAME` runs.
//!
//! Where the document is imprecise (`../shared/reference/synapse_semantics.md`,
//! §2.12 and §4), the tests pin what really happens, as real Twisted and
//! Synapse do it.

// Each example includes the shared `common/mod.rs` itself, so that it also
// builds on its own; here that file is therefore compiled once per example.
#![allow(clippy::duplicate_mod)]

// Their `main`s are not used here.
#[allow(dead_code)]
#[path = "../../compat/examples/mechanics.rs"]
mod mechanics;

#[allow(dead_code)]
#[path = "../../compat/examples/async_function_calls.rs"]
mod async_function_calls;

#[allow(dead_code)]
#[path = "../../compat/examples/cancel_catching_bad.rs"]
mod cancel_catching_bad;

#[allow(dead_code)]
#[path = "../../compat/examples/cancel_catching_good.rs"]
mod cancel_catching_good;

#[allow(dead_code)]
#[path = "../../compat/examples/cancel_catching_ok.rs"]
mod cancel_catching_ok;

#[allow(dead_code)]
#[path = "../../compat/examples/cancel_catching_good_narrow.rs"]
mod cancel_catching_good_narrow;

#[allow(dead_code)]
#[path = "../../compat/examples/gather_first_error_bad.rs"]
mod gather_first_error_bad;

#[allow(dead_code)]
#[path = "../../compat/examples/gather_first_error_good.rs"]
mod gather_first_error_good;

#[allow(dead_code)]
#[path = "../../compat/examples/shared_deferred_bad.rs"]
mod shared_deferred_bad;

#[allow(dead_code)]
#[path = "../../compat/examples/shared_deferred_good_stop_cancellation.rs"]
mod shared_deferred_good_stop_cancellation;

#[allow(dead_code)]
#[path = "../../compat/examples/shared_deferred_good_own_deferred.rs"]
mod shared_deferred_good_own_deferred;

#[allow(dead_code)]
#[path = "../../compat/examples/uncancelled_processing_bad.rs"]
mod uncancelled_processing_bad;

#[allow(dead_code)]
#[path = "../../compat/examples/uncancelled_processing_good.rs"]
mod uncancelled_processing_good;

#[allow(dead_code)]
#[path = "../../compat/examples/uncancelled_processing_ok.rs"]
mod uncancelled_processing_ok;

/// The responses, as the examples print them (each example has its own
/// copy of the `Reply` type, so the tests compare what they print).
const CANCELLED: &str = "499 Request cancelled";
const PENDING: &str = "no response yet";

/// The position of the first trace line containing `text`.
fn position(lines: &[String], text: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no trace line contains {text:?}:\n{}", lines.join("\n")))
}

fn ok(body: &str) -> String {
    format!("200 {body}")
}

// ---------------------------------------------------------------------------
// Mechanics

#[test]
fn mechanics_cancel_goes_down_and_cancelled_error_comes_up() {
    let out = mechanics::run();
    assert_eq!(
        out.reply("while on_GET waits on d", "request-1")
            .to_string(),
        PENDING
    );
    // Down: the request's cancel() reaches the Deferred on_GET awaits and
    // runs its canceller; up: the CancelledError comes out of the await,
    // then out of the handler, which Synapse answers with 499.
    let down = position(&out.lines, "its canceller runs");
    let up = position(&out.lines, "comes out of `await d`");
    let answered = position(&out.lines, "=> request-1: 499");
    assert!(down < up && up < answered, "{:#?}", out.lines);
    assert_eq!(
        out.reply("after cancel()", "request-1").to_string(),
        CANCELLED
    );
    assert!(out.logcontext_errors.is_empty() && out.unhandled.is_empty());
}

#[test]
fn async_function_calls_cancel_reaches_the_await_in_progress() {
    let out = async_function_calls::run();
    let (r1, r2) = (
        context_lines(&out.lines, "[request-1]"),
        context_lines(&out.lines, "[request-2]"),
    );
    // request-1 was cancelled inside do_something: do_something_else never
    // started.
    assert_eq!(r1, ["check_something", "do_something starts"]);
    // request-2 was cancelled inside do_something_else.
    assert_eq!(
        r2,
        [
            "check_something",
            "do_something starts",
            "do_something ends",
            "do_something_else starts"
        ]
    );
    assert!(out.traced("do_something's sleep: cancelled"));
    assert!(out.traced("do_something_else's sleep: cancelled"));
    assert_eq!(
        out.reply("after both are cancelled", "request-1")
            .to_string(),
        CANCELLED
    );
    assert_eq!(
        out.reply("after both are cancelled", "request-2")
            .to_string(),
        CANCELLED
    );
    assert_eq!(out.fact("timers left on the clock"), "0");
}

/// The log lines of one context, without their tag.
fn context_lines(lines: &[String], tag: &str) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.trim_start().strip_prefix(tag))
        .map(|l| l.trim().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// CancelledErrors

#[test]
fn cancel_catching_bad_swallows_the_cancel() {
    let out = cancel_catching_bad::run();
    // The cancel did reach do_something...
    assert!(out.traced("do_something's sleep: cancelled"));
    // ...but `except Exception` caught the CancelledError and the handler
    // carried on: 200 for a cancelled request.
    assert!(out.traced("[request-1] do_something failed: CancelledError"));
    assert!(out.traced("[request-1] carrying on after the try"));
    assert_eq!(
        out.reply("after cancel()", "request-1").to_string(),
        ok("{}")
    );
}

#[test]
fn cancel_catching_good_lets_the_cancel_through() {
    let out = cancel_catching_good::run();
    assert!(out.traced("do_something's sleep: cancelled"));
    assert!(!out.traced("do_something failed"));
    assert!(!out.traced("carrying on"));
    assert_eq!(
        out.reply("after cancel()", "request-1").to_string(),
        CANCELLED
    );
}

#[test]
fn cancel_catching_ok_catch_all_around_code_that_never_awaits() {
    let out = cancel_catching_ok::run();
    // The catch-all did its job on the ordinary error...
    assert!(out.traced("[request-1] check_something failed: ValueError"));
    // ...and could not meet the CancelledError, which comes from the await.
    assert_eq!(
        out.reply("after cancel()", "request-1").to_string(),
        CANCELLED
    );
}

#[test]
fn cancel_catching_good_narrow_catches_only_its_error() {
    let out = cancel_catching_good_narrow::run();
    assert_eq!(
        out.reply("after cancel()", "request-2").to_string(),
        CANCELLED
    );
    assert_eq!(
        out.reply("after cancel()", "request-1").to_string(),
        PENDING
    );
    assert!(out.traced("[request-1] do_something failed: ValueError: bad input"));
    assert_eq!(out.reply("after 5 s", "request-1").to_string(), ok("{}"));
    assert!(!out.traced("[request-2] do_something failed"));
}

// ---------------------------------------------------------------------------
// defer.gatherResults

#[test]
fn gather_first_error_bad_swallows_first_error() {
    let out = gather_first_error_bad::run();
    // Every gathered child was cancelled...
    assert!(out.traced("child 0: cancelled"));
    assert!(out.traced("child 1: cancelled"));
    assert_eq!(out.fact("timers left on the clock"), "0");
    // ...but the CancelledError came out as FirstError(CancelledError), which
    // `except CancelledError` does not match: swallowed, 200.
    assert!(out.traced("[request-1] do_something failed: FirstError[#0, CancelledError]"));
    assert_eq!(
        out.reply("after cancel()", "request-1").to_string(),
        ok("{}")
    );
    // The handler resumed (and swallowed) before the second child was even
    // cancelled; its response only went out after the cancel loop.
    let swallowed = position(&out.lines, "do_something failed");
    let child1 = position(&out.lines, "child 1: cancelled");
    let answered = position(&out.lines, "=> request-1");
    assert!(swallowed < child1 && child1 < answered, "{:#?}", out.lines);
}

#[test]
fn gather_first_error_good_unwraps_to_cancelled_error() {
    let out = gather_first_error_good::run();
    assert!(out.traced("child 0: cancelled"));
    assert!(out.traced("child 1: cancelled"));
    assert!(!out.traced("do_something failed"));
    assert_eq!(
        out.reply("after cancel()", "request-1").to_string(),
        CANCELLED
    );
}

// ---------------------------------------------------------------------------
// Creation of Deferreds

#[test]
fn shared_deferred_bad_fails_the_wrong_waiter_and_releases_the_others() {
    let out = shared_deferred_bad::run();
    let after = "after request-2 is cancelled";
    // request-2 was cancelled, yet request-1, the first-registered waiter,
    // gets the CancelledError (the document says every waiter would)...
    assert_eq!(out.reply(after, "request-1").to_string(), CANCELLED);
    // ...and request-2 itself resumes at once as if the room were ready.
    assert_eq!(out.reply(after, "request-2").to_string(), ok("room ready"));
    // The cache entry is spoiled: a new request is released at once.
    assert_eq!(
        out.reply("after request-3 arrives", "request-3")
            .to_string(),
        ok("room ready")
    );
    // The producer's real callback() is swallowed silently.
    assert_eq!(
        out.fact("the producer's callback()"),
        "returned normally (swallowed: nobody was told)"
    );
}

#[test]
fn shared_deferred_good_stop_cancellation_fails_only_the_cancelled_waiter() {
    let out = shared_deferred_good_stop_cancellation::run();
    let after = "after request-2 is cancelled";
    assert_eq!(out.reply(after, "request-2").to_string(), CANCELLED);
    assert_eq!(out.reply(after, "request-1").to_string(), PENDING);
    assert_eq!(
        out.reply("after request-3 arrives", "request-3")
            .to_string(),
        PENDING
    );
    assert_eq!(out.fact("the producer's callback()"), "returned normally");
    assert_eq!(
        out.reply("at the end", "request-1").to_string(),
        ok("room ready")
    );
    assert_eq!(out.reply("at the end", "request-2").to_string(), CANCELLED);
    assert_eq!(
        out.reply("at the end", "request-3").to_string(),
        ok("room ready")
    );
}

#[test]
fn shared_deferred_good_own_deferred_fails_only_the_cancelled_waiter() {
    let out = shared_deferred_good_own_deferred::run();
    let after = "after request-2 is cancelled";
    assert_eq!(out.reply(after, "request-2").to_string(), CANCELLED);
    assert_eq!(out.reply(after, "request-1").to_string(), PENDING);
    assert_eq!(
        out.reply("after request-3 arrives", "request-3")
            .to_string(),
        PENDING
    );
    // The call on the cancelled waiter's Deferred is ignored, not an error.
    assert_eq!(out.fact("the producer's callback() calls"), "ok, ok, ok");
    assert_eq!(
        out.reply("at the end", "request-1").to_string(),
        ok("room ready")
    );
    assert_eq!(
        out.reply("at the end", "request-3").to_string(),
        ok("room ready")
    );
}

// ---------------------------------------------------------------------------
// Uncancelled processing

const RESTART_REQUEST_1: &str = "Re-starting finished log context request-1";

#[test]
fn uncancelled_processing_bad_reuses_the_finished_context() {
    let out = uncancelled_processing_bad::run();
    // request-1 fails at once; its context is finished...
    assert_eq!(
        out.reply("after request-1 is cancelled", "request-1")
            .to_string(),
        CANCELLED
    );
    // ...while the work it started still runs in it, brings it back and
    // logs against it.
    assert!(out.logcontext_errors.iter().any(|e| e == RESTART_REQUEST_1));
    assert!(out.traced("[request-1 (finished)] done!"));
    let restart = position(&out.lines, RESTART_REQUEST_1);
    assert!(restart < position(&out.lines, "done!"));
    // request-2 still gets the result.
    assert_eq!(
        out.reply("after the work is done", "request-2").to_string(),
        ok("done")
    );
}

#[test]
fn uncancelled_processing_good_waits_for_the_work() {
    let out = uncancelled_processing_good::run();
    // request-1 has no result until the work is done, then CancelledError.
    assert_eq!(
        out.reply("after request-1 is cancelled", "request-1")
            .to_string(),
        PENDING
    );
    assert_eq!(
        out.reply("after the work is done", "request-1").to_string(),
        CANCELLED
    );
    assert_eq!(
        out.reply("after the work is done", "request-2").to_string(),
        ok("done")
    );
    // "done!" is logged while request-1 is alive; nothing is reported.
    assert!(out.traced("[request-1] done!"));
    assert!(
        out.logcontext_errors.is_empty(),
        "{:?}",
        out.logcontext_errors
    );
    // What the document leaves out: with its bare callback(), the rest of
    // do_something_else runs in the sentinel context, silently.
    assert!(out.traced("[sentinel] do_something_else: after to_resolve.callback()"));
}

#[test]
fn uncancelled_processing_good_firing_inside_preserve_restarts_request_1() {
    // The document's Good code, firing to_resolve the usual way (inside
    // PreserveLoggingContext): request-1 finished while being resumed
    // inside do_something_else, and comes back when the block ends.
    let out = uncancelled_processing_good::run_variant(true);
    assert_eq!(
        out.reply("after the work is done", "request-1").to_string(),
        CANCELLED
    );
    assert!(out.traced("[request-1] done!"));
    assert!(out.logcontext_errors.iter().any(|e| e == RESTART_REQUEST_1));
}

#[test]
fn uncancelled_processing_ok_runs_the_work_in_its_own_context() {
    let out = uncancelled_processing_ok::run();
    assert_eq!(
        out.reply("after request-1 is cancelled", "request-1")
            .to_string(),
        CANCELLED
    );
    assert_eq!(
        out.reply("after the work is done", "request-2").to_string(),
        ok("done")
    );
    assert!(out.traced("[do_something_else-0] done!"));
    assert!(!out.traced("request-1 (finished)"));
    assert!(
        !out.logcontext_errors
            .iter()
            .any(|e| e.contains("request-1"))
    );
    // What the document leaves out: its bare callback() resumes request-2,
    // which leaves the sentinel current, and the process's end reports it.
    assert_eq!(
        out.logcontext_errors,
        ["Expected logging context do_something_else-0 was lost"]
    );
}

#[test]
fn uncancelled_processing_ok_firing_inside_preserve_is_clean() {
    let out = uncancelled_processing_ok::run_variant(true);
    assert_eq!(
        out.reply("after request-1 is cancelled", "request-1")
            .to_string(),
        CANCELLED
    );
    assert_eq!(
        out.reply("after the work is done", "request-2").to_string(),
        ok("done")
    );
    assert!(
        out.logcontext_errors.is_empty(),
        "{:?}",
        out.logcontext_errors
    );
    assert!(out.traced("[do_something_else-0] do_something_else: after to_resolve.callback()"));
}

// ---------------------------------------------------------------------------
// Every example

#[test]
fn every_example_ends_in_the_sentinel_context_with_nothing_unhandled() {
    let outcomes = [
        mechanics::run().unhandled,
        async_function_calls::run().unhandled,
        cancel_catching_bad::run().unhandled,
        cancel_catching_good::run().unhandled,
        cancel_catching_ok::run().unhandled,
        cancel_catching_good_narrow::run().unhandled,
        gather_first_error_bad::run().unhandled,
        gather_first_error_good::run().unhandled,
        shared_deferred_bad::run().unhandled,
        shared_deferred_good_stop_cancellation::run().unhandled,
        shared_deferred_good_own_deferred::run().unhandled,
        uncancelled_processing_bad::run().unhandled,
        uncancelled_processing_good::run().unhandled,
        uncancelled_processing_ok::run().unhandled,
    ];
    for unhandled in outcomes {
        assert!(unhandled.is_empty(), "{unhandled:?}");
    }
    let finals = [
        mechanics::run().final_context,
        cancel_catching_bad::run().final_context,
        gather_first_error_bad::run().final_context,
        shared_deferred_bad::run().final_context,
        uncancelled_processing_bad::run().final_context,
        uncancelled_processing_good::run().final_context,
        uncancelled_processing_ok::run().final_context,
    ];
    for context in finals {
        assert_eq!(context, "sentinel");
    }
}
