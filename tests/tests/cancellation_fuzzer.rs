//! The cancellation fuzzer (`twisted_compat::cancellation_fuzzer`): over
//! every example of Synapse's "Cancellation" document, and rule by rule on
//! small coroutines.
//!
//! The examples are included as modules, as in
//! `cancellation_doc_examples.rs`, so the fuzzer runs the very code
//! `cargo run -p twisted-compat --example NAME` runs (each example's
//! `fuzz_target`). Awaits are named through the core's coroutine
//! observer; the focused tests spell theirs `observed(…)` /
//! `observed_coroutine(…)` (plain `.await` / `ensure_deferred`) so that
//! the line they expect is easy to find.

// Each example includes the shared `common/mod.rs` itself, so that it also
// builds on its own; here that file is therefore compiled once per example.
#![allow(clippy::duplicate_mod)]

use std::cell::Cell;
use std::rc::Rc;

use twisted_compat::cancellation_fuzzer::{
    Ending, FuzzOptions, FuzzReport, FuzzRun, Protection, Rule, SourceLocation,
    assert_cancellation_safe, fuzz_cancellation, fuzz_cancellation_with, observed,
    observed_coroutine,
};
use twisted_compat::{
    CancelledError, Deferred, Failure, LoggingContext, SENTINEL_CONTEXT, current_context,
    delay_cancellation, make_deferred_yieldable, run_in_background, set_current_context,
    stop_cancellation,
};
use twisted_deferred::{ensure_deferred, gather_results, unwrap_first_error};
use twisted_reactor::{Clock, defer_later};

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

type Target = fn(&mut FuzzRun) -> Deferred<String>;

/// This file's source, to find the lines of marked awaits.
const SELF: &str = include_str!("cancellation_fuzzer.rs");

/// The location of the `await` keyword on the first line of `source`
/// containing `needle` (`#[track_caller]` on `into_future` reports the
/// `.await` there).
fn await_in(file: &str, source: &str, needle: &str) -> SourceLocation {
    let (index, text) = source
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap_or_else(|| panic!("no line of {file} contains {needle:?}"));
    let column = text.find("await").expect("an await on that line") + 1;
    SourceLocation {
        file: file.to_owned(),
        line: index as u32 + 1,
        column: column as u32,
    }
}

/// The line of `observed(` on the line of this file marked `marker`.
fn observed_at(marker: &str) -> SourceLocation {
    let (index, text) = SELF
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(marker) && l.contains("observed("))
        .unwrap_or_else(|| panic!("no observed await marked {marker:?}"));
    SourceLocation {
        file: "tests/tests/cancellation_fuzzer.rs".to_owned(),
        line: index as u32 + 1,
        column: text.find("observed(").expect("observed(") as u32 + 1,
    }
}

fn rules_at(report: &FuzzReport, point: usize) -> Vec<Rule> {
    report.points[point]
        .violations
        .iter()
        .map(|v| v.rule)
        .collect()
}

// ---------------------------------------------------------------------------
// The document's examples

/// Each Bad example, with the rule it breaks: (when awaits are observed,
/// when they are not: without them a `FirstError` swallowed by a catch-all
/// looks like any swallowed cancel).
const BAD: &[(&str, Target, Rule, Rule)] = &[
    (
        "cancel_catching_bad",
        cancel_catching_bad::fuzz_target,
        Rule::CancelledErrorSwallowed,
        Rule::CancelledErrorSwallowed,
    ),
    (
        "gather_first_error_bad",
        gather_first_error_bad::fuzz_target,
        Rule::FirstErrorNotUnwrapped,
        Rule::CancelledErrorSwallowed,
    ),
    (
        "shared_deferred_bad",
        shared_deferred_bad::fuzz_target,
        Rule::SharedDeferredCancelled,
        Rule::SharedDeferredCancelled,
    ),
    (
        "uncancelled_processing_bad",
        uncancelled_processing_bad::fuzz_target,
        Rule::LoggingContextReusedAfterFinish,
        Rule::LoggingContextReusedAfterFinish,
    ),
];

/// Every Good and OK example, and the two examples that only show the
/// mechanics.
const GOOD: &[(&str, Target)] = &[
    ("mechanics", mechanics::fuzz_target),
    ("async_function_calls", async_function_calls::fuzz_target),
    ("cancel_catching_good", cancel_catching_good::fuzz_target),
    ("cancel_catching_ok", cancel_catching_ok::fuzz_target),
    (
        "cancel_catching_good_narrow",
        cancel_catching_good_narrow::fuzz_target,
    ),
    (
        "gather_first_error_good",
        gather_first_error_good::fuzz_target,
    ),
    (
        "shared_deferred_good_stop_cancellation",
        shared_deferred_good_stop_cancellation::fuzz_target,
    ),
    (
        "shared_deferred_good_own_deferred",
        shared_deferred_good_own_deferred::fuzz_target,
    ),
    (
        "uncancelled_processing_good",
        uncancelled_processing_good::fuzz_target,
    ),
    (
        "uncancelled_processing_ok",
        uncancelled_processing_ok::fuzz_target,
    ),
];

#[test]
fn every_bad_example_is_flagged_with_its_rule() {
    for (name, target, observed_rule, black_box_rule) in BAD {
        let report = fuzz_cancellation(target);
        let rule = if report.awaits_observed {
            observed_rule
        } else {
            black_box_rule
        };
        assert!(!report.is_safe(), "{name}:\n{report}");
        assert_eq!(report.points.len(), 1, "{name}:\n{report}");
        assert!(
            report.points[0].broke(*rule),
            "{name} should break {rule}:\n{report}"
        );
        // Only what the document describes is flagged.
        for v in &report.points[0].violations {
            assert_eq!(v.rule, *rule, "{name}: {v}\n{report}");
        }
        assert!(report.to_string().contains(rule.name()), "{report}");
    }
}

#[test]
fn every_good_and_ok_example_passes() {
    for (name, target) in GOOD {
        let report = fuzz_cancellation(target);
        assert!(report.is_safe(), "{name}:\n{report}");
        assert!(!report.points.is_empty(), "{name}: no point found");
        for point in &report.points {
            assert_eq!(point.ending, Ending::Cancelled, "{name}:\n{report}");
        }
        assert!(report.to_string().contains("all cancellation-safe"));
    }
}

#[test]
fn each_example_has_the_points_its_request_waits_at() {
    // async_function_calls sleeps twice: cancelled in each sleep.
    let report = fuzz_cancellation(async_function_calls::fuzz_target);
    assert_eq!(report.points.len(), 2);
    assert_eq!(report.points[0].after, "start");
    assert_eq!(report.points[1].after, "clock.advance(1)");
    assert_eq!(
        report.baseline.ending,
        Ending::Completed("\"{}\"".to_owned())
    );
    // mechanics: nothing ever fires do_something's Deferred; it only ends
    // when cancelled.
    let report = fuzz_cancellation(mechanics::fuzz_target);
    assert_eq!(report.baseline.ending, Ending::Pending);
    assert_eq!(report.points[0].ending, Ending::Cancelled);
}

#[test]
fn bad_examples_say_what_the_request_got() {
    let report = fuzz_cancellation(cancel_catching_bad::fuzz_target);
    assert_eq!(
        report.points[0].ending,
        Ending::Completed("\"{}\"".to_owned())
    );
    assert!(
        report
            .to_string()
            .contains("Synapse would answer 200, not 499")
    );
    // The cancelled waiter of the shared Deferred carries on as if the
    // room were ready; the other waiter got its CancelledError.
    let report = fuzz_cancellation(shared_deferred_bad::fuzz_target);
    assert_eq!(
        report.points[0].ending,
        Ending::Completed("\"room ready\"".to_owned())
    );
    let detail = &report.points[0].violations[0].detail;
    assert!(
        detail.contains("request-1, waiting too, ended during the cancel with CancelledError"),
        "{detail}"
    );
    // The cancelled request ends at once; the work it started brings its
    // finished context back a second later.
    let report = fuzz_cancellation(uncancelled_processing_bad::fuzz_target);
    assert_eq!(report.points[0].ending, Ending::Cancelled);
    let reports: Vec<&str> = report.points[0]
        .violations
        .iter()
        .map(|v| v.detail.as_str())
        .collect();
    assert_eq!(
        reports,
        [
            "\"Re-starting finished log context request-1\" reported after the cancel",
            "\"Called stop on logcontext request-1 without recording a start rusage\" reported after the cancel",
        ]
    );
}

#[test]
fn the_ok_example_reports_its_logcontext_loss_without_cancellation_only() {
    // The document's OK code loses the background process's context when
    // it fires `to_resolve` bare, with or without a cancel: listed in the
    // baseline, not held against the point.
    let report = fuzz_cancellation(uncancelled_processing_ok::fuzz_target);
    assert_eq!(
        report.baseline.problems,
        ["logging context misuse \"Expected logging context do_something_else-0 was lost\""]
    );
    assert!(report.is_safe(), "{report}");
    let report = fuzz_cancellation(|run| uncancelled_processing_ok::fuzz_target_variant(run, true));
    assert!(report.baseline.problems.is_empty(), "{report}");
    assert!(report.is_safe(), "{report}");
}

#[test]
fn the_good_example_firing_inside_preserve_logging_context_misuses_contexts_without_a_cancel_too() {
    // What the document leaves out: its Good code, firing `to_resolve` the
    // usual way (inside PreserveLoggingContext), brings the finished
    // request-1 back when that block ends. It does so whether request-1 was
    // cancelled or not (it finishes its context while being resumed inside
    // the work): a logging-context bug, not a cancellation one, so the
    // fuzzer lists it without holding it against the point.
    let report =
        fuzz_cancellation(|run| uncancelled_processing_good::fuzz_target_variant(run, true));
    assert_eq!(
        report.baseline.problems,
        [
            "logging context misuse \"Re-starting finished log context request-1\"",
            "logging context misuse \"Called stop on logcontext request-1 without recording a start rusage\"",
        ]
    );
    assert!(report.is_safe(), "{report}");
    assert!(
        report
            .to_string()
            .contains("(without cancellation too: logging context misuse")
    );
}

#[test]
fn bad_examples_name_the_await_and_the_rule() {
    let cases: &[(&str, Target, &str, &str, Rule)] = &[
        (
            "cancel_catching_bad",
            cancel_catching_bad::fuzz_target,
            include_str!("../../compat/examples/cancel_catching_bad.rs"),
            "sleep(\"do_something's sleep\", 5.0).await",
            Rule::CancelledErrorSwallowed,
        ),
        (
            "gather_first_error_bad",
            gather_first_error_bad::fuzz_target,
            include_str!("../../compat/examples/gather_first_error_bad.rs"),
            "    .await?;",
            Rule::FirstErrorNotUnwrapped,
        ),
        (
            "shared_deferred_bad",
            shared_deferred_bad::fuzz_target,
            include_str!("../../compat/examples/shared_deferred_bad.rs"),
            "wait_for_room(ROOM).await?;",
            Rule::SharedDeferredCancelled,
        ),
        (
            "uncancelled_processing_bad",
            uncancelled_processing_bad::fuzz_target,
            include_str!("../../compat/examples/uncancelled_processing_bad.rs"),
            "make_deferred_yieldable(observe()).await",
            Rule::LoggingContextReusedAfterFinish,
        ),
    ];
    for (name, target, source, waits_at, rule) in cases {
        let file = format!("compat/examples/{name}.rs");
        let report = fuzz_cancellation(target);
        assert!(report.awaits_observed, "{name}: awaits not observed");
        let point = &report.points[0];
        assert_eq!(point.awaiting.len(), 1, "{name}:\n{report}");
        assert_eq!(
            point.awaiting[0].location,
            await_in(&file, source, waits_at),
            "{name}:\n{report}"
        );
        let violation = &point.violations[0];
        assert_eq!(violation.rule, *rule, "{name}:\n{report}");
        let expected = match *name {
            // Reported when the work resumes from its sleep in the
            // finished context.
            "uncancelled_processing_bad" => await_in(
                &file,
                source,
                "sleep(\"do_something_else's work\", 1.0).await?;",
            ),
            _ => await_in(&file, source, waits_at),
        };
        for v in &point.violations {
            assert_eq!(v.location.as_ref(), Some(&expected), "{name}: {v}");
        }
        assert!(report.to_string().contains(&expected.to_string()));
    }
    // The shared Deferred: the other waiter's await is named too.
    let report = fuzz_cancellation(shared_deferred_bad::fuzz_target);
    let detail = &report.points[0].violations[0].detail;
    assert!(
        detail.contains("is also awaited by 1 other coroutine"),
        "{detail}"
    );
    // It was created in wait_for_room.
    let source = include_str!("../../compat/examples/shared_deferred_bad.rs");
    let created = report.points[0].awaiting[0]
        .awaited_created_at
        .clone()
        .unwrap();
    assert_eq!(
        source.lines().nth(created.line as usize - 1).map(str::trim),
        Some("let deferred = Deferred::new();")
    );
}

#[test]
fn good_examples_name_their_awaits_and_protections() {
    let report = fuzz_cancellation(shared_deferred_good_stop_cancellation::fuzz_target);
    assert!(report.awaits_observed);
    let site = &report.points[0].awaiting[0];
    assert_eq!(site.protection, Some(Protection::StopCancellation));
    let source = include_str!("../../compat/examples/shared_deferred_good_stop_cancellation.rs");
    assert_eq!(
        site.location,
        await_in(
            "compat/examples/shared_deferred_good_stop_cancellation.rs",
            source,
            "wait_for_room(ROOM).await?;"
        )
    );
    let created = site.awaited_created_at.clone().unwrap();
    assert!(
        source
            .lines()
            .nth(created.line as usize - 1)
            .unwrap()
            .contains("stop_cancellation(&deferred)")
    );
    let report = fuzz_cancellation(uncancelled_processing_good::fuzz_target);
    assert_eq!(
        report.points[0].awaiting[0].protection,
        Some(Protection::DelayCancellation)
    );
    let report = fuzz_cancellation(async_function_calls::fuzz_target);
    let source = include_str!("../../compat/examples/async_function_calls.rs");
    let file = "compat/examples/async_function_calls.rs";
    assert_eq!(
        report.points[0].awaiting[0].location,
        await_in(file, source, "sleep(\"do_something's sleep\", 1.0).await?;")
    );
    assert_eq!(
        report.points[1].awaiting[0].location,
        await_in(
            file,
            source,
            "sleep(\"do_something_else's sleep\", 1.0).await?;"
        )
    );
}

#[test]
fn plain_awaits_are_observed() {
    let report = fuzz_cancellation(|_run| {
        let d: Deferred<()> = Deferred::new();
        ensure_deferred(async move {
            let _ = d.await; // plain await
            Ok::<_, Failure>(())
        })
    });
    assert!(report.awaits_observed);
    let expected = await_in(
        "tests/tests/cancellation_fuzzer.rs",
        SELF,
        "let _ = d.await; // plain await",
    );
    assert_eq!(report.points[0].awaiting[0].location, expected);
    assert_eq!(
        report.points[0].violations[0].location.as_ref(),
        Some(&expected)
    );
}

// ---------------------------------------------------------------------------
// Each rule on a small coroutine

/// A coroutine awaiting `d`, catching every failure.
fn swallowing(d: Deferred<()>) -> Deferred<&'static str> {
    observed_coroutine(async move {
        let _ = observed(d).await; // <- swallowed
        Ok::<_, Failure>("200")
    })
}

#[test]
fn cancelled_error_swallowed_by_a_catch_all() {
    let report = fuzz_cancellation(|_run| swallowing(Deferred::new()));
    assert!(report.awaits_observed);
    let point = &report.points[0];
    assert_eq!(point.ending, Ending::Completed("\"200\"".to_owned()));
    assert_eq!(rules_at(&report, 0), [Rule::CancelledErrorSwallowed]);
    let at = observed_at("<- swallowed");
    assert_eq!(point.awaiting[0].location, at);
    assert_eq!(point.violations[0].location.as_ref(), Some(&at));
    assert!(
        point.violations[0]
            .detail
            .contains("CancelledError came out of the await at"),
        "{}",
        point.violations[0].detail
    );
}

#[test]
fn cancelled_error_swallowed_then_awaited_again() {
    let report = fuzz_cancellation(|run| {
        let (first, second): (Deferred<()>, Deferred<()>) = (Deferred::new(), Deferred::new());
        let (f, s) = (first.clone(), second.clone());
        run.step("first fires", move || f.callback(()))
            .step("second fires", move || s.callback(()));
        observed_coroutine(async move {
            if let Err(failure) = observed(first).await {
                // except Exception: log and go on
                let _ = failure;
            }
            observed(second).await?; // <- went on
            Ok::<_, Failure>("200")
        })
    });
    // Point 0 (in `first`) swallows; point 1 (in `second`) is fine.
    assert_eq!(rules_at(&report, 0), [Rule::CancelledErrorSwallowed]);
    assert!(report.points[1].is_safe(), "{report}");
    let detail = &report.points[0].violations[0].detail;
    let went_on = observed_at("<- went on");
    assert!(
        detail.contains(&format!("it went on to await at {went_on}")),
        "{detail}"
    );
}

#[test]
fn cancelled_error_replaced_by_another_failure() {
    let report = fuzz_cancellation(|_run| {
        let d: Deferred<()> = Deferred::new();
        observed_coroutine(async move {
            observed(d)
                .await
                .map_err(|_| Failure::msg("backend unavailable"))?;
            Ok::<_, Failure>(())
        })
    });
    assert_eq!(rules_at(&report, 0), [Rule::CancelledErrorSwallowed]);
    assert!(matches!(report.points[0].ending, Ending::Failed(_)));
    assert!(
        report
            .to_string()
            .contains("Synapse would answer 500, not 499")
    );
}

#[test]
fn cleanup_after_the_cancel_then_re_raising_is_safe() {
    let report = fuzz_cancellation(|run| {
        let (work, cleanup): (Deferred<()>, Deferred<()>) = (Deferred::new(), Deferred::new());
        let (w, c) = (work.clone(), cleanup.clone());
        run.step("the work is done", move || w.callback(()))
            .step("the cleanup is done", move || c.callback(()));
        observed_coroutine(async move {
            match observed(work).await {
                Err(failure) if failure.check::<CancelledError>() => {
                    // except CancelledError: await cleanup (protected); raise
                    observed(stop_cancellation(&cleanup)).await?;
                    Err(failure)
                }
                other => other,
            }
        })
    });
    assert!(report.is_safe(), "{report}");
    assert_eq!(report.points[0].ending, Ending::Cancelled);
}

#[test]
fn a_canceller_giving_a_value_lets_the_request_complete() {
    let report = fuzz_cancellation(|_run| {
        let d: Deferred<u32> = Deferred::with_canceller(|d: &Deferred<u32>| {
            let _ = d.callback(0);
        });
        observed_coroutine(async move { Ok::<_, Failure>(observed(d).await? + 1) })
    });
    assert_eq!(rules_at(&report, 0), [Rule::CancelledErrorSwallowed]);
    assert!(
        report.points[0].violations[0]
            .detail
            .contains("resumed with a value after the cancel")
    );
}

/// Awaits a gather of two children (`consumeErrors=True`), catching all
/// but `CancelledError`; `unwrap` adds `unwrapFirstError`.
fn gathering(run: &mut FuzzRun, unwrap: bool) -> Deferred<&'static str> {
    let children = [Deferred::<()>::new(), Deferred::<()>::new()];
    let fire = children.clone();
    run.step("the children are done", move || {
        fire.iter().try_for_each(|c| c.callback(()))
    });
    observed_coroutine(async move {
        let mut gathered = gather_results(children, true);
        if unwrap {
            gathered = gathered.add_errback(unwrap_first_error);
        }
        let outcome = observed(gathered).await; // <- gather
        match outcome {
            Ok(_) => {}
            Err(f) if f.check::<CancelledError>() => return Err(f),
            Err(_) => {}
        }
        Ok::<_, Failure>("200")
    })
}

#[test]
fn first_error_not_unwrapped() {
    let report = fuzz_cancellation(|run| gathering(run, false));
    assert_eq!(rules_at(&report, 0), [Rule::FirstErrorNotUnwrapped]);
    assert_eq!(
        report.points[0].violations[0].location.as_ref(),
        Some(&observed_at("<- gather"))
    );
    let report = fuzz_cancellation(|run| gathering(run, true));
    assert!(report.is_safe(), "{report}");
}

#[test]
fn first_error_propagated_as_is() {
    // No catch at all: the request fails with FirstError(CancelledError).
    let report = fuzz_cancellation(|_run| {
        let children = [Deferred::<()>::new(), Deferred::<()>::new()];
        observed_coroutine(async move {
            observed(gather_results(children, true)).await?;
            Ok::<_, Failure>(())
        })
    });
    assert_eq!(report.points[0].ending, Ending::FirstErrorCancelled);
    assert_eq!(rules_at(&report, 0), [Rule::FirstErrorNotUnwrapped]);
}

/// Waits for the room, as the document's handlers do.
fn waiter(room: Deferred<()>) -> Deferred<&'static str> {
    observed_coroutine(async move {
        observed(room).await?; // <- room
        Ok::<_, Failure>("room ready")
    })
}

#[test]
fn shared_deferred_cancelled_seen_from_the_awaits() {
    // No bystander declared: the fuzzer sees two coroutines awaiting the
    // same Deferred.
    let report = fuzz_cancellation(|run| {
        let room: Deferred<()> = Deferred::new();
        let _first = waiter(room.clone());
        let r = room.clone();
        run.step("the room is ready", move || r.callback(()));
        waiter(room)
    });
    // And the first waiter's CancelledError, which nobody expects, is left
    // unhandled.
    assert_eq!(
        rules_at(&report, 0),
        [Rule::SharedDeferredCancelled, Rule::UnhandledError]
    );
    let v = &report.points[0].violations[0];
    let room = observed_at("<- room");
    assert_eq!(v.location.as_ref(), Some(&room));
    assert!(
        v.detail
            .contains(&format!("is also awaited by 1 other coroutine (at {room})")),
        "{}",
        v.detail
    );
    // The cancelled waiter resumed with the value the other one left: no
    // swallowed cancel is blamed on it.
    assert_eq!(
        report.points[0].ending,
        Ending::Completed("\"room ready\"".to_owned())
    );
}

#[test]
fn shared_deferred_cancelled_seen_from_a_bystander_released_by_the_cancel() {
    // The cancelled request is the first waiter: it gets its CancelledError
    // as it should, but the other is released at once, as if the room were
    // ready.
    let report = fuzz_cancellation(|run| {
        let room: Deferred<()> = Deferred::new();
        let first = waiter(room.clone());
        let second = waiter(room.clone());
        run.bystander("request-2", &second);
        let r = room.clone();
        run.step("the room is ready", move || r.callback(()));
        first
    });
    assert_eq!(report.points[0].ending, Ending::Cancelled);
    assert!(report.points[0].broke(Rule::SharedDeferredCancelled));
    assert!(
        report.to_string().contains(
            "request-2, waiting too, ended during the cancel with completed normally with \"room ready\""
        ),
        "{report}"
    );
}

#[test]
fn a_waiter_protected_by_stop_cancellation_is_safe() {
    assert_cancellation_safe(|run| {
        let room: Deferred<()> = Deferred::new();
        let first = waiter(stop_cancellation(&room));
        run.bystander("request-1", &first);
        let r = room.clone();
        run.step("the room is ready", move || r.callback(()));
        waiter(stop_cancellation(&room))
    });
}

#[test]
fn cancel_not_propagated_to_the_awaited_deferred() {
    let start = |run: &mut FuzzRun, protect: bool| {
        let work: Deferred<()> = Deferred::new();
        let w = work.clone();
        run.step("the work is done", move || w.callback(()));
        let coroutine = observed_coroutine(async move {
            observed(work).await?; // <- unreached
            Ok::<_, Failure>(())
        });
        if protect {
            // On purpose: the work goes on, the caller does not wait.
            stop_cancellation(&coroutine)
        } else {
            // By hand: the caller's Deferred does not lead to the coroutine.
            let out: Deferred<()> = Deferred::new();
            coroutine.chain_deferred(&out);
            out
        }
    };
    let report = fuzz_cancellation(|run| start(run, false));
    assert_eq!(report.points[0].ending, Ending::Cancelled);
    assert_eq!(rules_at(&report, 0), [Rule::CancelNotPropagated]);
    assert_eq!(
        report.points[0].violations[0].location.as_ref(),
        Some(&observed_at("<- unreached"))
    );
    let report = fuzz_cancellation(|run| start(run, true));
    assert!(report.is_safe(), "{report}");
}

#[test]
fn cancel_reaches_the_awaits_of_awaited_coroutines() {
    // A coroutine awaiting another coroutine's Deferred: the cancel goes
    // through both.
    assert_cancellation_safe(|_run| {
        let leaf: Deferred<()> = Deferred::new();
        let inner = observed_coroutine(async move {
            observed(leaf).await?;
            Ok::<_, Failure>(())
        });
        observed_coroutine(async move {
            observed(inner).await?;
            Ok::<_, Failure>(())
        })
    });
}

#[test]
fn logging_context_reused_after_finish() {
    let report = fuzz_cancellation(|run| {
        let clock = Clock::new();
        run.clock(&clock);
        observed_coroutine(async move {
            let context = LoggingContext::new("request-1", "example.com");
            let _scope = context.entered();
            let result: Deferred<()> = Deferred::new();
            let r = result.clone();
            // run_in_background(work): the work runs in request-1's context.
            let _work: Deferred<()> = run_in_background(move || async move {
                make_deferred_yieldable(defer_later(&clock, 1.0, || Ok::<_, Failure>(()))).await?;
                r.callback(())
            });
            observed(make_deferred_yieldable(result)).await?;
            Ok::<_, Failure>(())
        })
    });
    assert!(report.baseline.problems.is_empty(), "{report}");
    assert_eq!(report.points[0].ending, Ending::Cancelled);
    assert!(
        report.points[0].broke(Rule::LoggingContextReusedAfterFinish),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .contains("Re-starting finished log context request-1")
    );
}

#[test]
fn logging_context_misused_on_the_way_out() {
    let report = fuzz_cancellation(|run| {
        let d: Deferred<()> = Deferred::new();
        let fire = d.clone();
        run.step("d fires", move || fire.callback(()));
        observed_coroutine(async move {
            let context = LoggingContext::new("request-1", "example.com");
            let _scope = context.entered();
            match observed(make_deferred_yieldable(d)).await {
                Ok(()) => Ok::<_, Failure>(()),
                Err(failure) => {
                    // Loses its context before leaving the `with` block.
                    set_current_context(SENTINEL_CONTEXT);
                    Err(failure)
                }
            }
        })
    });
    assert_eq!(rules_at(&report, 0), [Rule::LoggingContextMisused]);
    assert!(
        report.points[0].violations[0]
            .detail
            .contains("Expected logging context request-1 was lost")
    );
}

#[test]
fn logging_context_left_current() {
    let report = fuzz_cancellation(|run| {
        let d: Deferred<()> = Deferred::new();
        let fire = d.clone();
        run.step("d fires", move || fire.callback(()));
        observed_coroutine(async move {
            if let Err(failure) = observed(d).await {
                set_current_context(LoggingContext::new("leaked", "example.com"));
                return Err(failure);
            }
            Ok::<_, Failure>(())
        })
    });
    let point = &report.points[0];
    assert_eq!(point.ending, Ending::Cancelled);
    assert_eq!(
        rules_at(&report, 0),
        [
            Rule::LoggingContextLeftCurrent,
            Rule::LoggingContextLeftCurrent
        ]
    );
    assert!(
        point.violations[0]
            .detail
            .contains("cancel() returned with the logging context leaked current")
    );
    // The fuzzer puts the caller's context back afterwards.
    assert!(current_context().is_sentinel());
}

#[test]
fn unhandled_error_left_behind() {
    // gatherResults without consumeErrors: the cancelled children keep
    // their CancelledErrors, which nobody handles.
    let start = |run: &mut FuzzRun, consume: bool| {
        let children = [Deferred::<()>::new(), Deferred::<()>::new()];
        let fire = children.clone();
        run.step("the children are done", move || {
            fire.iter().try_for_each(|c| c.callback(()))
        });
        observed_coroutine(async move {
            observed(gather_results(children, consume).add_errback(unwrap_first_error)).await?;
            Ok::<_, Failure>(())
        })
    };
    let report = fuzz_cancellation(|run| start(run, false));
    assert_eq!(report.points[0].ending, Ending::Cancelled);
    assert_eq!(
        rules_at(&report, 0),
        [Rule::UnhandledError, Rule::UnhandledError],
        "{report}"
    );
    assert!(
        report.points[0].violations[0]
            .detail
            .starts_with("Unhandled error in Deferred: ")
    );
    let report = fuzz_cancellation(|run| start(run, true));
    assert!(report.is_safe(), "{report}");
}

#[test]
fn a_step_raising_after_the_cancel_is_an_unhandled_error() {
    let report = fuzz_cancellation(|run| {
        // Its canceller fires it, so the producer's callback() fails.
        let d: Deferred<()> = Deferred::with_canceller(|d: &Deferred<()>| {
            let _ = d.errback(Failure::new(CancelledError));
        });
        let producer = d.clone();
        run.step("the producer fires", move || producer.callback(()));
        observed_coroutine(async move {
            observed(d).await?;
            Ok::<_, Failure>(())
        })
    });
    assert_eq!(rules_at(&report, 0), [Rule::UnhandledError]);
    assert!(
        report.points[0].violations[0]
            .detail
            .starts_with("the producer fires raised"),
        "{report}"
    );
}

#[test]
fn never_finished_after_the_cancel() {
    // delay_cancellation over work nothing ever finishes: the cancel is
    // held back forever.
    let start = |run: &mut FuzzRun, finish: bool| {
        let work: Deferred<()> = Deferred::new();
        if finish {
            let w = work.clone();
            run.step("the work is done", move || w.callback(()));
        }
        observed_coroutine(async move {
            observed(delay_cancellation(&work)).await?; // <- delayed
            Ok::<_, Failure>(())
        })
    };
    let report = fuzz_cancellation(|run| start(run, false));
    assert_eq!(report.points[0].ending, Ending::Pending);
    assert_eq!(rules_at(&report, 0), [Rule::NeverFinished]);
    let delayed = observed_at("<- delayed");
    assert_eq!(
        report.points[0].awaiting[0].protection,
        Some(Protection::DelayCancellation)
    );
    assert_eq!(
        report.points[0].violations[0].location.as_ref(),
        Some(&delayed)
    );
    let report = fuzz_cancellation(|run| start(run, true));
    assert!(report.is_safe(), "{report}");
    assert_eq!(report.points[0].ending, Ending::Cancelled);
}

// ---------------------------------------------------------------------------
// Without observed awaits, driving, and the report

#[test]
fn without_observed_awaits_the_rules_are_judged_from_outside() {
    // Plain awaits: the points are the moments between steps.
    let report = fuzz_cancellation(|run| {
        let clock = Clock::new();
        run.clock(&clock);
        ensure_deferred(async move {
            defer_later(&clock, 1.0, || Ok::<_, Failure>(())).await?;
            let _ = defer_later(&clock, 1.0, || Ok::<_, Failure>(())).await;
            Ok::<_, Failure>("200")
        })
    });
    assert_eq!(report.points.len(), 2);
    assert!(report.points[0].is_safe(), "{report}");
    assert_eq!(rules_at(&report, 1), [Rule::CancelledErrorSwallowed]);
}

#[test]
fn suspensions_within_one_step_are_listed_as_passed_through() {
    let report = fuzz_cancellation(|run| {
        let (a, b): (Deferred<()>, Deferred<()>) = (Deferred::new(), Deferred::new());
        let (a2, b2) = (a.clone(), b.clone());
        run.step("both fire", move || {
            a2.callback(())?;
            b2.callback(())
        });
        observed_coroutine(async move {
            observed(a).await?;
            observed(b).await?; // <- passed through
            Ok::<_, Failure>(())
        })
    });
    assert_eq!(report.points.len(), 1);
    assert_eq!(report.passed_through.len(), 1);
    assert_eq!(
        report.passed_through[0].location,
        observed_at("<- passed through")
    );
    assert!(report.to_string().contains("within one step"));
}

#[test]
fn the_step_limit_stops_a_clock_that_never_runs_out() {
    fn rearm(clock: &Clock) {
        let c = clock.clone();
        clock.call_later(1.0, move || rearm(&c));
    }
    let options = FuzzOptions::new().max_steps(5);
    let report = fuzz_cancellation_with(&options, |run| {
        let clock = Clock::new();
        rearm(&clock);
        run.clock(&clock);
        // The clock and its call hold each other (Python's collector would
        // free them): cancel what is left when the run ends.
        let pending = clock.clone();
        run.at_end(move || {
            for call in pending.get_delayed_calls() {
                call.cancel().ok();
            }
        });
        let d: Deferred<()> = Deferred::new();
        observed_coroutine(async move {
            observed(d).await?;
            Ok::<_, Failure>(())
        })
    });
    assert!(report.step_limit_hit);
    assert_eq!(report.baseline.steps, 5);
    // Pending at every moment: one point per step, and after the start.
    assert_eq!(report.points.len(), 6);
    assert!(report.is_safe(), "{report}");
}

#[test]
fn a_point_not_reached_again_is_unsafe() {
    let calls = Rc::new(Cell::new(0));
    let report = fuzz_cancellation(move |_run| {
        calls.set(calls.get() + 1);
        let d: Deferred<()> = Deferred::new();
        if calls.get() > 1 {
            d.callback(()).unwrap();
        }
        observed_coroutine(async move {
            observed(d).await?;
            Ok::<_, Failure>(())
        })
    });
    assert!(!report.points[0].reached);
    assert!(!report.is_safe());
    assert!(report.to_string().contains("not reached when run again"));
}

#[test]
fn cancel_with_replaces_the_cancel() {
    let report = fuzz_cancellation(|run| {
        let d: Deferred<()> = Deferred::new();
        let request = observed_coroutine(async move {
            observed(d).await?;
            Ok::<_, Failure>(())
        });
        // The "client" disconnects: an HTTP harness closes the connection,
        // which cancels the request's Deferred.
        let connection = request.clone();
        run.cancel_with(move || connection.cancel());
        request
    });
    assert!(report.is_safe(), "{report}");
    assert_eq!(report.points[0].ending, Ending::Cancelled);
}

#[test]
fn debugging_gives_the_creation_location_of_awaited_deferreds() {
    let start = |_run: &mut FuzzRun| {
        let d: Deferred<()> = Deferred::new(); // <- created
        observed_coroutine(async move {
            observed(d).await?;
            Ok::<_, Failure>(())
        })
    };
    let report = fuzz_cancellation(start);
    let created = report.points[0].awaiting[0]
        .awaited_created_at
        .clone()
        .expect("recorded with debugging on");
    let line = SELF
        .lines()
        .position(|l| l.ends_with("// <- created"))
        .unwrap();
    assert_eq!(created.line as usize, line + 1);
    assert_eq!(created.file, "tests/tests/cancellation_fuzzer.rs");
    // Without debugging (another test may have it on meanwhile: the flag is
    // process-wide), the fuzzer works the same.
    let report = fuzz_cancellation_with(&FuzzOptions::new().debugging(false), start);
    assert!(report.is_safe());
}

#[test]
fn the_caller_state_is_restored() {
    let caller = LoggingContext::new("test", "example.com");
    let scope = caller.entered();
    let (report, errors) = twisted_compat::capture_logcontext_errors(|| {
        fuzz_cancellation(uncancelled_processing_bad::fuzz_target)
    });
    // The fuzzer's runs report to the fuzzer, not to the caller's hook.
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!report.is_safe());
    assert_eq!(current_context(), caller);
    drop(scope);
    let ((), unhandled) = twisted_deferred::capture_unhandled_errors(|| {
        fuzz_cancellation(|run| {
            let children = [Deferred::<()>::new(), Deferred::<()>::new()];
            let fire = children.clone();
            run.step("done", move || fire.iter().try_for_each(|c| c.callback(())));
            ensure_deferred(async move {
                gather_results(children, false)
                    .add_errback(unwrap_first_error)
                    .await?;
                Ok::<_, Failure>(())
            })
        });
    });
    assert!(unhandled.is_empty(), "{unhandled:?}");
}

#[test]
fn the_report_reads_as_a_verdict_per_point() {
    let report = fuzz_cancellation(|_run| swallowing(Deferred::new()));
    let text = report.to_string();
    let at = observed_at("<- swallowed");
    assert!(
        text.starts_with("cancellation fuzzer: 1 suspension point, 1 unsafe\n"),
        "{text}"
    );
    assert!(text.contains("without cancellation: no result after 0 steps"));
    assert!(text.contains(&format!("point 0, after start: suspended at {at}")));
    assert!(text.contains("cancelled there: completed normally with \"200\""));
    assert!(text.contains(&format!(
        "✗ CancelledError swallowed (\"CancelledErrors\") at {at}"
    )));
    assert!(text.contains("re-raise CancelledError before any catch-all"));
}

#[test]
#[should_panic(expected = "not cancellation-safe")]
fn assert_cancellation_safe_fails_with_the_report() {
    assert_cancellation_safe(|_run| swallowing(Deferred::new()));
}
