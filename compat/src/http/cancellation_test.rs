//! Synapse's endpoint cancellation harness,
//! `make_request_with_cancellation_test` (Synapse's
//! `tests/http/server/_base.py`), as a thin use of the
//! [cancellation fuzzer](crate::cancellation_fuzzer).
//!
//! Synapse's harness makes a request, lets it run to an `await` it has not
//! disconnected at yet, disconnects the client there, checks that the
//! request ended in 499 with its logging contexts intact, and makes the
//! request again, one `await` further each time, until a request runs to
//! completion; that last channel is what it returns.
//! [`make_request_with_cancellation_test`] does the same with
//! [`fuzz_cancellation`](crate::cancellation_fuzzer::fuzz_cancellation):
//!
//! | Synapse's harness | here |
//! |---|---|
//! | `make_request(reactor, site, method, path, content, await_result=False)` per attempt | the fuzzer's start function: [`make_request`] on the same site, once per run |
//! | patching `Deferred.__await__` to find the `await`s, one new one per attempt | the fuzzer's suspension points, found in a first run that is not disconnected, then one run per point |
//! | `reactor.advance(0)`, `reactor.advance(1)` | [`FuzzRun::clock`]: due calls first, else the clock jumps to its next call |
//! | `request.connectionLost(ConnectionDone())` | [`FuzzRun::cancel_with`]`(`[`FakeChannel::disconnect`]`)` |
//! | `respond_mock` called; `request.code == 499` | the run's Deferred: the request's access-log line, its code, 499 as `CancelledError` |
//! | `request.logcontext.finished = True` after the disconnect | marked once the disconnected request's response is out ([`FuzzRun::after_each_step`]) |
//! | `@logcontext_clean` (any logging-context error fails the test) | every logging-context rule of the fuzzer, and logging-context errors without a disconnect too |
//! | "Request appears to be stuck" | [`Rule::NeverFinished`](crate::cancellation_fuzzer::Rule::NeverFinished); a final request that never answers |
//! | the request that runs to completion, returned | a final request, made after every disconnected one, returned (it must answer as the first one did) |
//!
//! Beyond Synapse's checks, each disconnect is judged by all the fuzzer's
//! rules: a shared Deferred cancelled for its other waiters, a cancel that
//! did not reach the awaited Deferred, `FirstError` not unwrapped, failures
//! left unhandled.
//!
//! Differences, each with its reason:
//!
//! * Synapse forces an `await` on a Deferred that already has a result to
//!   block, so that it can disconnect there too. The fuzzer disconnects
//!   only where the request really waits: an await that does not wait is
//!   not a place where a client can leave. Awaits that waited and resumed
//!   within one clock step are listed in the report ("within one step").
//! * Synapse drives each attempt only until the response, plus two short
//!   pumps after the disconnect. The fuzzer drives each run until the
//!   clock has nothing left to run (at most
//!   [`FuzzOptions::max_steps`](crate::cancellation_fuzzer::FuzzOptions::max_steps)
//!   steps), so processing the cancelled request left behind is seen
//!   however late it runs.
//! * Synapse's first attempt is already disconnected; here a first request
//!   runs undisturbed to find the points, and one more request, made after
//!   all the disconnected ones, is the one returned (as Synapse's last).
//!   A later run that no longer reaches a point (a cache the earlier runs
//!   filled) is accepted if it answered as the first request did, as
//!   Synapse accepts an attempt that completes without a new `await`.
//! * Synapse logs the whole stack of each `await`; a point here names the
//!   innermost `.await` on a Deferred, which is inside the helper when the
//!   servlet awaits one (`clock.sleep(…)` is named at its `.await` in
//!   `compat/src/clock.rs`).
//! * The runs share the site and what its servlets keep, so the fuzzer's
//!   teardown of what a run leaves alive
//!   ([`FuzzOptions::collect_garbage`](crate::cancellation_fuzzer::FuzzOptions::collect_garbage))
//!   is off: failures abandoned in reference cycles are not reported
//!   (those dropped are).
//! * `content` is bytes; there is no `token` argument (this
//!   [`make_request`] sends no `Authorization` header).
//!
//! Like Synapse's, a servlet that is not cancellable fails the harness: a
//! disconnect does not cancel it, so it runs to completion and answers
//! with its own code, not 499. The message says so, and what it answered.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

use twisted_deferred::{CancelledError, Deferred, Failure};
use twisted_reactor::Clock;

use crate::cancellation_fuzzer::{
    CancellationPoint, Ending, FuzzOptions, FuzzReport, FuzzRun, fuzz_cancellation_with,
};
use crate::logcontext::{capture_logcontext_errors, current_context, set_current_context};

use super::{
    FakeChannel, HTTP_STATUS_REQUEST_CANCELLED, SiteEvent, SynapseRequest, SynapseSite,
    make_request,
};

/// How many clock steps the final request may take before it counts as
/// stuck (the fuzzer's own limit per run).
const MAX_FINAL_STEPS: usize = 1000;

/// `make_request_with_cancellation_test(test_name, reactor, site, method,
/// path, content)`: makes the request, disconnects its client at each point
/// where the handler waits, one run per point, checks each disconnected
/// run, and returns the channel of a final request that runs to
/// completion. Checking what that response holds is left to the caller, as
/// in Synapse.
///
/// Panics, as a test assertion does, naming the point (the `.await` the
/// handler was suspended at) and the rule broken, when a disconnected run:
///
/// * did not end with 499: a `CancelledError` was swallowed (or turned
///   into another error, or a `FirstError`);
/// * never answered ("Request appears to be stuck");
/// * used the request's logging context after its response
///   ("Re-starting finished log context"), misused logging contexts
///   otherwise, or left one current;
/// * cancelled a Deferred another coroutine awaits too, cancelled nothing
///   it awaited, or left a failure unhandled;
///
/// and also when the request does so without any disconnect, when the
/// servlet is not cancellable (a disconnect lets it run to completion),
/// when a later run ends differently before reaching its point, or when
/// the final request never answers or answers with another code than the
/// first (both "possibly due to a previous cancelled request"). The
/// message ends with the fuzzer's whole report. Progress is logged
/// (`log`, info level), as Synapse logs each attempt.
///
/// `clock` must be the one the site and its servlets run on (Synapse's
/// `reactor`); the harness drives it, so time moves on between and during
/// runs. The site is used as it is, so what the servlets keep between
/// requests (caches) is shared by the runs, as between Synapse's attempts.
///
/// ```
/// use std::rc::Rc;
/// use twisted_compat::http::cancellation_test::make_request_with_cancellation_test;
/// use twisted_compat::http::{Json, JsonResource, ServletResult, SiteConfig, SynapseRequest, SynapseSite};
/// use twisted_compat::{cancellable, Clock};
///
/// struct RoomServlet { clock: Clock }
///
/// impl RoomServlet {
///     #[cancellable]                                              // @cancellable
///     async fn on_get(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
///         self.clock.sleep(1.0).await?;                           // await self.clock.sleep(1)
///         self.clock.sleep(2.0).await?;                           // await self.clock.sleep(2)
///         Ok((200, Json::object([("room_id", request.path_arg("room_id"))])))
///     }
/// }
///
/// let reactor = twisted_reactor::Clock::new();                    // self.reactor
/// let servlet = Rc::new(RoomServlet { clock: Clock::new(reactor.clone(), "test") });
/// let resource = JsonResource::new();
/// resource.register_paths("GET", ["/rooms/{room_id}"], move |r| servlet.clone().on_get(r), "RoomServlet").unwrap();
/// let site = SynapseSite::new(SiteConfig::new("client", "test"), resource, reactor.clone());
///
/// // channel = make_request_with_cancellation_test("test_get_room", self.reactor, self.site, "GET", "/rooms/!a")
/// let channel = make_request_with_cancellation_test("test_get_room", &reactor, &site, "GET", "/rooms/!a", b"");
/// // self.assertEqual(200, channel.code, msg=channel.result["body"])
/// assert_eq!(channel.code(), Some(200));
/// assert_eq!(channel.json_body().unwrap(), Json::object([("room_id", "!a")]));
/// ```
#[track_caller]
pub fn make_request_with_cancellation_test(
    test_name: &str,
    clock: &Clock,
    site: &SynapseSite,
    method: &str,
    path: &str,
    content: &[u8],
) -> FakeChannel {
    let what = format!("make_request_with_cancellation_test for {test_name} ({method} {path})");
    log::info!("Running {what}...");

    let watch = watch_responses(site);
    // What each run's request was: the run without a disconnect first,
    // then one per point.
    let runs: Rc<RefCell<Vec<Option<RunSeen>>>> = Rc::default();
    let options = FuzzOptions::new().collect_garbage(false);
    let report = fuzz_cancellation_with(&options, |run| {
        start_request(run, clock, site, method, path, content, &watch, &runs)
    });
    let runs = runs.take();

    for point in &report.points {
        let request_id = run_request_id(&runs, point.index + 1);
        log::info!(
            "{test_name}: {request_id} disconnected at point {} ({}): {}",
            point.index,
            where_suspended(point),
            answer(&point.ending)
        );
    }

    let problems = judge(&report, &runs);
    if !problems.is_empty() {
        panic!("{}", failure_message(&what, &problems, &report));
    }

    // The request that runs to completion, after every disconnected one.
    let (outcome, errors) = capture_logcontext_errors(|| {
        let channel = make_request(site, method, path, content);
        drive_until_answered(clock, &channel);
        (channel, current_context())
    });
    let (channel, left_current) = outcome;
    let mut problems = Vec::new();
    let first = code_of(&report.baseline.ending);
    match channel.code() {
        None => problems.push(
            "the final request, made after the disconnected ones, never answered: \
             Request appears to be stuck, possibly due to a previous cancelled request"
                .to_owned(),
        ),
        Some(code)
            if first
                .as_ref()
                .is_some_and(|first| *first != code.to_string()) =>
        {
            problems.push(format!(
                "the final request, made after the disconnected ones, answered {code} where the \
                 first request answered {}: possibly due to a previous cancelled request",
                answer(&report.baseline.ending)
            ))
        }
        _ => {}
    }
    for error in &errors {
        problems.push(format!(
            "the final request misused logging contexts: \"{error}\""
        ));
    }
    if !left_current.is_sentinel() {
        set_current_context(crate::logcontext::SENTINEL_CONTEXT);
        problems.push(format!(
            "the final request left the logging context {left_current} current"
        ));
    }
    if !problems.is_empty() {
        panic!("{}", failure_message(&what, &problems, &report));
    }
    log::info!(
        "{test_name}: --- response finished --- ({:?})",
        channel.code()
    );
    channel
}

/// What the harness learnt about one run's request.
#[derive(Debug, Clone)]
struct RunSeen {
    request_id: String,
    cancellable: bool,
}

/// The request id of run `i` (0: the run without a disconnect).
fn run_request_id(runs: &[Option<RunSeen>], i: usize) -> String {
    runs.get(i)
        .and_then(|r| r.as_ref())
        .map_or_else(|| "the request".to_owned(), |r| r.request_id.clone())
}

/// The response of the request the current run makes.
#[derive(Default)]
struct ResponseWatch {
    /// Set once the site has received the request.
    request_id: Option<String>,
    /// The run's Deferred, until it fires.
    response: Option<Deferred<u16>>,
}

/// Watches `site` for the responses of the harness's requests: a run's
/// Deferred fires when its request's access-log line is written (its
/// processing is over and its response sent, or dropped because the client
/// left) with the code, 499 as `CancelledError` (Synapse's check that
/// `respond_with_json` was called, and with which code). A request the
/// site rejects before it has a request context (400, 413) answers with
/// that code.
///
/// The observer stays on the site, inert once the watch is dropped.
fn watch_responses(site: &SynapseSite) -> Rc<RefCell<ResponseWatch>> {
    let watch = Rc::new(RefCell::new(ResponseWatch::default()));
    let weak = Rc::downgrade(&watch);
    site.add_observer(move |event| {
        let Some(watch) = weak.upgrade() else {
            return;
        };
        let answered = {
            let mut w = watch.borrow_mut();
            match event {
                SiteEvent::RequestReceived { request_id, .. }
                    if w.response.is_some() && w.request_id.is_none() =>
                {
                    w.request_id = Some(request_id.clone());
                    None
                }
                SiteEvent::Processed(entry)
                    if w.request_id.as_deref() == Some(entry.request_id.as_str()) =>
                {
                    w.response.take().map(|d| (d, entry.code))
                }
                SiteEvent::Rejected { code, .. } if w.request_id.is_none() => {
                    w.response.take().map(|d| (d, *code))
                }
                _ => None,
            }
        };
        if let Some((response, code)) = answered {
            // A Deferred nobody else fires: it cannot be fired already.
            let _ = if code == HTTP_STATUS_REQUEST_CANCELLED {
                response.errback(Failure::new(CancelledError))
            } else {
                response.callback(code)
            };
        }
    });
    watch
}

/// The fuzzer's start function: one request on a fresh connection, its
/// client disconnected when the fuzzer cancels.
#[allow(clippy::too_many_arguments)]
fn start_request(
    run: &mut FuzzRun,
    clock: &Clock,
    site: &SynapseSite,
    method: &str,
    path: &str,
    content: &[u8],
    watch: &Rc<RefCell<ResponseWatch>>,
    runs: &Rc<RefCell<Vec<Option<RunSeen>>>>,
) -> Deferred<u16> {
    run.clock(clock);
    let response: Deferred<u16> = Deferred::new();
    *watch.borrow_mut() = ResponseWatch {
        request_id: None,
        response: Some(response.clone()),
    };
    // channel = make_request(self.reactor, site, method, path, content, await_result=False)
    let channel = Rc::new(make_request(site, method, path, content));
    let request = channel.request();
    runs.borrow_mut().push(request.as_ref().map(|r| RunSeen {
        request_id: r.request_id(),
        cancellable: r.is_render_cancellable(),
    }));
    if let Some(request) = request {
        run.after_each_step(move || finish_logcontext_once_answered(&request));
    }
    let client = channel.clone();
    // request.connectionLost(reason=ConnectionDone())
    run.cancel_with(move || {
        client.disconnect();
        Ok(())
    });
    let watch = watch.clone();
    run.at_end(move || {
        *watch.borrow_mut() = ResponseWatch::default();
        drop(channel);
    });
    response
}

/// `request.logcontext.finished = True`, once the disconnected request has
/// answered: from then on, anything that makes its context current again
/// is reported ("Re-starting finished log context"). Synapse sets the flag
/// after pumping the reactor a little; here it is set as soon as the
/// response is out and the stack has unwound (between the fuzzer's steps).
/// The only way to finish a context is to exit it, so it is made current
/// for a moment and exited.
fn finish_logcontext_once_answered(request: &SynapseRequest) {
    if !request.is_disconnected() || request.is_processing() {
        return;
    }
    let Some(context) = request.logcontext() else {
        return;
    };
    if context.finished() || current_context() == context {
        return;
    }
    let previous = set_current_context(&context);
    context.exit();
    set_current_context(previous);
}

/// Advances `clock`, due calls first, until `channel` has its response,
/// or the clock runs out of calls (or the steps run out).
fn drive_until_answered(clock: &Clock, channel: &FakeChannel) {
    for _ in 0..MAX_FINAL_STEPS {
        if channel.is_finished() {
            return;
        }
        let Some(due) = clock
            .get_delayed_calls()
            .iter()
            .map(|c| c.get_time())
            .filter(|t| t.is_finite())
            .min_by(f64::total_cmp)
        else {
            return;
        };
        // A timed call that fails is the call's problem, not the wait's.
        let _ = clock.advance((due - clock.seconds()).max(0.0));
    }
}

/// What the response was, for messages.
fn answer(ending: &Ending) -> String {
    match ending {
        Ending::Cancelled => "499 (CancelledError)".to_owned(),
        Ending::Completed(code) => code.clone(),
        Ending::Pending => "no response".to_owned(),
        other => other.to_string(),
    }
}

/// The status code a run's Deferred ending stands for.
fn code_of(ending: &Ending) -> Option<String> {
    match ending {
        Ending::Cancelled => Some(HTTP_STATUS_REQUEST_CANCELLED.to_string()),
        Ending::Completed(code) => Some(code.clone()),
        _ => None,
    }
}

/// "suspended at FILE:LINE:COL", or the step the point follows when the
/// awaits were not observed.
fn where_suspended(point: &CancellationPoint) -> String {
    match point.awaiting.as_slice() {
        [] => format!("after {}", point.after),
        sites => {
            let sites: Vec<String> = sites.iter().map(ToString::to_string).collect();
            format!("suspended at {}", sites.join(" and "))
        }
    }
}

/// Everything that fails the harness, one sentence each.
fn judge(report: &FuzzReport, runs: &[Option<RunSeen>]) -> Vec<String> {
    let mut problems = Vec::new();
    let baseline = &report.baseline;
    if baseline.ending == Ending::Pending {
        problems.push(format!(
            "{} never answered, even without a disconnect: Request appears to be stuck",
            run_request_id(runs, 0)
        ));
    }
    for problem in &baseline.problems {
        problems.push(format!("even without a disconnect: {problem}"));
    }
    let cancellable = runs.first().and_then(|r| r.as_ref()).map(|r| r.cancellable);
    if cancellable == Some(false)
        && let Some(point) = report.points.iter().find(|p| p.reached)
    {
        let outcome = match &point.ending {
            Ending::Completed(code) => format!(
                "it was not cancelled, ran to completion and answered {code} (dropped: the client was gone)"
            ),
            other => format!("it was not cancelled, and ended with {}", answer(other)),
        };
        problems.push(format!(
            "the servlet is not cancellable (not #[cancellable]), so disconnecting its client does not cancel it: \
             {} was disconnected at point {} ({}); {outcome}, where a cancelled request answers 499 \
             (\"Cancelled request did not finish with the correct status code\"); mark the handler \
             #[cancellable] once it is safe to cancel, or test its disconnect with make_request and \
             FakeChannel::disconnect",
            run_request_id(runs, point.index + 1),
            point.index,
            where_suspended(point),
        ));
        return problems;
    }
    for point in &report.points {
        let request_id = run_request_id(runs, point.index + 1);
        if !point.reached {
            if point.ending != baseline.ending {
                problems.push(format!(
                    "point {}: {request_id}, made again after the earlier disconnects, ended with {} \
                     before reaching the point ({}), where the first request answered {}: \
                     possibly due to a previous cancelled request",
                    point.index,
                    answer(&point.ending),
                    where_suspended(point),
                    answer(&baseline.ending),
                ));
            }
            continue;
        }
        if !point.violations.is_empty() {
            let mut problem = format!(
                "point {}: {request_id} disconnected while {}; it answered {}:",
                point.index,
                where_suspended(point),
                answer(&point.ending),
            );
            for violation in &point.violations {
                let _ = write!(problem, "\n      ✗ {violation}");
            }
            problems.push(problem);
        }
    }
    problems
}

fn failure_message(what: &str, problems: &[String], report: &FuzzReport) -> String {
    let mut message = format!("{what} failed:\n");
    for problem in problems {
        let _ = writeln!(message, "  - {problem}");
    }
    let _ = write!(
        message,
        "Every point (the cancellation fuzzer's report):\n{report}"
    );
    message
}
