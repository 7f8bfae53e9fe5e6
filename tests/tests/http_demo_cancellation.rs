//! Synapse's endpoint cancellation harness,
//! `twisted_compat::http::make_request_with_cancellation_test`, applied to
//! every endpoint of the HTTP demo (`compat/examples/http_demo.rs`), on a
//! deterministic `Clock`: what the harness concludes for each, and why that
//! is what Synapse's harness would conclude.
//!
//! The gated endpoints (`/uncancellable/{gate}`, `/shared/{key}`,
//! `/delayed/{gate}`) wait for `POST /gates/{gate}/open`, which the tests
//! issue from a clock call (the demo has no other way to open a gate). An
//! opened gate stays open, and the harness makes the same request (same
//! path, so same gate) in every run, so what each run waits for depends on
//! when the gate opens; each test says which run it opens in, and why.
//!
//! Every test also checks that no logging-context misuse and no unhandled
//! failure was reported on this thread, outside the harness's own checks
//! too (Synapse's `@logcontext_clean`), and that no logging context is left
//! current.
//!
//! Citations: Synapse's `tests/http/server/_base.py`
//! (`make_request_with_cancellation_test`), and the cancellation
//! document's "Deferred shared between requests" and "Uncancelled
//! processing".

#[path = "../../compat/examples/http_demo.rs"]
#[allow(dead_code)]
mod http_demo;

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use twisted_compat::http::{
    FakeChannel, Json, SiteEvent, SynapseSite, make_request, make_request_with_cancellation_test,
};
use twisted_compat::{capture_logcontext_errors, current_context};
use twisted_deferred::capture_unhandled_errors;
use twisted_reactor::Clock as TestClock;

/// The demo on a test clock, with its access log.
struct Server {
    clock: TestClock,
    site: SynapseSite,
    demo: Rc<http_demo::Demo>,
    /// `(request id, "METHOD URI", code field)` of each access-log line.
    access_log: Rc<RefCell<Vec<(String, String, String)>>>,
}

impl Server {
    fn new() -> Server {
        let clock = TestClock::new();
        let (site, demo) = http_demo::build_site(&clock, "test.server");
        let access_log: Rc<RefCell<Vec<(String, String, String)>>> = Rc::default();
        let log = access_log.clone();
        site.add_observer(move |event| {
            if let SiteEvent::Processed(entry) = event {
                log.borrow_mut().push((
                    entry.request_id.clone(),
                    format!("{} {}", entry.method, entry.uri),
                    entry.code_field(),
                ));
            }
        });
        Server {
            clock,
            site,
            demo,
            access_log,
        }
    }

    /// `make_request_with_cancellation_test(name, reactor, site, method, path, content)`.
    fn test(&self, name: &str, method: &str, path: &str) -> FakeChannel {
        make_request_with_cancellation_test(name, &self.clock, &self.site, method, path, b"")
    }

    /// The harness's panic message, which it must give.
    fn failure(&self, name: &str, method: &str, path: &str) -> String {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.test(name, method, path)));
        let payload = match outcome {
            Ok(channel) => panic!("the harness passed {path}: {:?}", channel.code()),
            Err(payload) => payload,
        };
        match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .unwrap_or_default(),
        }
    }

    /// Opens `gate` (`POST /gates/{gate}/open`) `delay` seconds from now,
    /// from a clock call.
    fn open_gate_later(&self, gate: &str, delay: f64) {
        let site = self.site.clone();
        let path = format!("/gates/{gate}/open");
        self.clock.call_later(delay, move || {
            let channel = make_request(&site, "POST", &path, b"");
            assert_eq!(channel.code(), Some(200), "{path}");
        });
    }

    /// Opens `gate` one second (on the clock) after the `nth` event the
    /// demo records that `matches`; call [`Server::forget_hook`] after.
    fn open_gate_after_event(
        &self,
        gate: &str,
        nth: usize,
        matches: impl Fn(&str) -> bool + 'static,
    ) {
        let seen = Cell::new(0);
        let (clock, site) = (self.clock.clone(), self.site.clone());
        let path = format!("/gates/{gate}/open");
        self.demo.set_event_hook(move |event| {
            if !matches(event) {
                return;
            }
            seen.set(seen.get() + 1);
            if seen.get() == nth {
                let (site, path) = (site.clone(), path.clone());
                clock.call_later(1.0, move || {
                    let channel = make_request(&site, "POST", &path, b"");
                    assert_eq!(channel.code(), Some(200), "{path}");
                });
            }
        });
    }

    /// Drops the event hook, which holds the site, which holds the demo.
    fn forget_hook(&self) {
        self.demo.set_event_hook(|_| {});
    }

    /// The access-log codes of the requests to `method uri`, in order.
    fn codes(&self, method_uri: &str) -> Vec<String> {
        self.access_log
            .borrow()
            .iter()
            .filter(|(_, uri, _)| uri == method_uri)
            .map(|(_, _, code)| code.clone())
            .collect()
    }

    /// The access-log codes of every request, in order.
    fn all_codes(&self) -> Vec<String> {
        let log = self.access_log.borrow();
        log.iter().map(|(_, _, code)| code.clone()).collect()
    }

    /// The demo's events mentioning `what`.
    fn events(&self, what: &str) -> Vec<String> {
        let events = self.demo.events();
        events.into_iter().filter(|e| e.contains(what)).collect()
    }
}

/// The problems a failure message of the harness lists (its `  - ` lines).
fn problems(message: &str) -> Vec<&str> {
    message
        .lines()
        .filter_map(|l| l.strip_prefix("  - "))
        .collect()
}

/// Runs `test` on a fresh demo, then checks that nothing reported a
/// logging-context misuse or an unhandled failure (the demo dropped
/// included), and that no logging context was left current.
fn checked(test: impl FnOnce(&Server)) {
    let ((left_current, logcontext_errors), unhandled) = capture_unhandled_errors(|| {
        capture_logcontext_errors(|| {
            let server = Server::new();
            test(&server);
            drop(server);
            current_context()
        })
    });
    assert!(
        logcontext_errors.is_empty(),
        "logcontext misuse: {logcontext_errors:?}"
    );
    assert!(unhandled.is_empty(), "unhandled failures: {unhandled:?}");
    assert!(left_current.is_sentinel(), "{left_current} left current");
}

// `GET /sleep/{seconds}`: `#[cancellable]`, one await (the clock's sleep).
// Synapse's harness disconnects it there (499, the sleep cancelled), then
// makes it again, and it runs to completion: it passes, and returns 200.
#[test]
fn sleep_passes_disconnected_at_its_sleep_and_returns_200() {
    checked(|s| {
        let channel = s.test("test_sleep", "GET", "/sleep/5");
        assert_eq!(channel.code(), Some(200));
        assert_eq!(channel.json_body().unwrap(), Json::object([("slept", 5.0)]));
        // The first request, undisturbed; one disconnected at the sleep;
        // the final one.
        assert_eq!(s.all_codes(), ["200", "499!", "200"]);
        assert_eq!(
            s.events("sleep"),
            [
                "sleep GET-0: started",
                "sleep GET-0: done",
                "sleep GET-1: started",
                "sleep GET-1: cancelled",
                "sleep GET-2: started",
                "sleep GET-2: done",
            ]
        );
        // Nothing left on the clock: the cancelled sleep's call is gone.
        assert!(s.clock.get_delayed_calls().is_empty());
    });
}

// `GET /uncancellable/{gate}`: not `#[cancellable]`. Synapse's harness
// disconnects its very first request at its first await (the gate), sees it
// not cancelled (no 499: "Cancelled request did not finish with the correct
// status code") and fails. Here the first request runs undisturbed, and the
// harness can tell that the endpoint is not cancellable only from a run
// disconnected at the gate, which must then still be closed: had the gate
// opened during the first request, no later run would wait at all (see the
// next test). So the gate opens on the clock during the first disconnected
// run: that run is not cancelled, runs to completion once the gate opens,
// and answers 200 to a client that is gone, and the harness fails, saying
// the servlet is not cancellable, as Synapse's does. The price of the gate
// staying open: the first request could not be answered in its own run
// (the clock had nothing that would open the gate), so the harness also
// reports it stuck; it is released, late, by the same opening.
#[test]
fn uncancellable_fails_the_harness_as_not_cancellable() {
    checked(|s| {
        // Open the gate one second after the second request started (the
        // first run disconnected at the gate), not in the first one.
        s.open_gate_after_event("u", 2, |e| {
            e.starts_with("uncancellable ") && e.ends_with(": started")
        });
        let message = s.failure("test_uncancellable", "GET", "/uncancellable/u");
        s.forget_hook();
        // Two problems: the first request stuck, and the servlet not
        // cancellable.
        assert_eq!(problems(&message).len(), 2, "{message}");
        assert!(
            message.starts_with(
                "make_request_with_cancellation_test for test_uncancellable \
                 (GET /uncancellable/u) failed:"
            ),
            "{message}"
        );
        assert!(
            message.contains(
                "the servlet is not cancellable (not #[cancellable]), so disconnecting its \
                 client does not cancel it: GET-1 was disconnected at point 0"
            ),
            "{message}"
        );
        assert!(
            message.contains(
                "it was not cancelled, ran to completion and answered 200 (dropped: the \
                 client was gone), where a cancelled request answers 499"
            ),
            "{message}"
        );
        assert!(
            message.contains(
                "GET-0 never answered, even without a disconnect: Request appears to be stuck"
            ),
            "{message}"
        );
        // Both ran to completion when the gate opened, in the order they
        // started waiting: the first one's 200 sent (to a channel the
        // harness had let go of), the disconnected one's dropped.
        assert_eq!(
            s.codes("GET /uncancellable/u"),
            ["200", "200!"],
            "{:?}",
            s.access_log
        );
        assert_eq!(
            s.events("uncancellable"),
            [
                "uncancellable GET-0: started",
                "uncancellable GET-1: started",
                "uncancellable GET-0: finished",
                "uncancellable GET-1: finished",
            ]
        );
    });
}

// The harness's blind spot on the same endpoint: with the gate opening on
// the clock during the first request (as a test naturally arranges, for
// the first request to be answered), that request waits at the gate and
// is answered; every later run finds the gate open, answers 200 without
// waiting, never reaches the point it was to be disconnected at, and is
// accepted because it answered as the first did. The harness passes
// without a single disconnect, although the endpoint is not cancellable.
// Synapse's harness would fail it: it disconnects the first request, at
// the gate.
#[test]
fn uncancellable_passes_unexercised_when_its_gate_opens_during_the_first_request() {
    checked(|s| {
        s.open_gate_later("v", 1.0);
        let channel = s.test("test_uncancellable", "GET", "/uncancellable/v");
        assert_eq!(channel.code(), Some(200));
        assert_eq!(channel.json_body().unwrap(), Json::object([("gate", "v")]));
        // No disconnect: no `!`.
        assert_eq!(s.codes("GET /uncancellable/v"), ["200", "200", "200"]);
    });
}

// `GET /shared/{key}`: `#[cancellable]`, waits on an observer of a shared
// computation, which waits on the gate `key`. The gate must open during
// the first request (or that request is stuck); the computation then ends
// and is forgotten, and every later request computes again, finds the
// gate open, and is answered at once (a fresh computation each time).
// So the disconnected runs do not reach the point (the observer's await)
// and are accepted, answering 200 as the first request did: the harness
// passes, and returns the final request's 200, from the third
// computation. Synapse's harness passes it too, but having disconnected
// one: its first attempt is disconnected at that await while the
// computation is pending (the observer cancelled, 499: what the next test
// reaches), and its next attempt, meeting no new await, completes with 200.
#[test]
fn shared_passes_and_returns_200_when_its_gate_opens_during_the_first_request() {
    checked(|s| {
        s.open_gate_later("k", 1.0);
        let channel = s.test("test_shared", "GET", "/shared/k");
        assert_eq!(channel.code(), Some(200));
        assert_eq!(
            channel.json_body().unwrap(),
            Json::object([
                ("computations", Json::from(3)),
                ("key", Json::from("k")),
                ("result", Json::from("computed k")),
            ])
        );
        assert_eq!(s.codes("GET /shared/k"), ["200", "200", "200"]);
        // Only the first request waited; none was cancelled.
        assert_eq!(
            s.events("shared"),
            [
                "shared k: computation started",
                "shared GET-0: waiting",
                "shared k: computation finished",
                "shared GET-0: got it",
                "shared k: computation started",
                "shared k: computation finished",
                "shared GET-2: waiting",
                "shared GET-2: got it",
                "shared k: computation started",
                "shared k: computation finished",
                "shared GET-3: waiting",
                "shared GET-3: got it",
            ]
        );
    });
}

// The disconnect the previous test could not reach: the gate opens on the
// clock one second after the second request (the first run to be
// disconnected) began waiting, so that request joins the computation the
// first one started, still pending, and is disconnected while both wait on
// it. Its own observer is cancelled (499, "shared GET-1: cancelled"), and
// the computation goes on: when the gate opens it finishes, once, and the
// first request gets its result. The fuzzer finds no rule broken there (no
// shared Deferred cancelled, the CancelledError let through). The harness
// still fails, for one reason only: the first request could not be
// answered in its own run (nothing on the clock opened the gate yet), so
// it is reported stuck; and it does not make the final request.
#[test]
fn shared_disconnected_while_sharing_the_pending_computation_answers_499_and_breaks_no_rule() {
    checked(|s| {
        s.open_gate_after_event("k", 2, |e| {
            e.starts_with("shared GET") && e.ends_with(": waiting")
        });
        let message = s.failure("test_shared", "GET", "/shared/k");
        s.forget_hook();
        assert_eq!(
            problems(&message),
            ["GET-0 never answered, even without a disconnect: Request appears to be stuck"],
            "{message}"
        );
        assert!(
            message.contains("1 suspension point, all cancellation-safe"),
            "{message}"
        );
        assert!(
            message.contains("cancelled there: CancelledError"),
            "{message}"
        );
        assert!(!message.contains('✗'), "{message}");
        // The disconnected request answered 499 at once; the first one got
        // the result when the gate opened.
        assert_eq!(s.codes("GET /shared/k"), ["499!", "200"]);
        assert_eq!(
            s.events("shared"),
            [
                "shared k: computation started",
                "shared GET-0: waiting",
                "shared GET-1: waiting",
                "shared GET-1: cancelled",
                "shared k: computation finished",
                "shared GET-0: got it",
            ]
        );
    });
}

// `POST /delayed/{gate}`: `#[cancellable]`, waits through
// `delay_cancellation` for a write in the background, which waits on the
// gate. As for `/shared`, the gate must open during the first request, and
// the later runs find it open: their writes are done at once, they answer
// 200 without waiting, do not reach the point and are accepted. The
// harness passes and returns the final 200; each request stored its write.
// Synapse's harness passes it too, but having disconnected one: its first
// attempt is disconnected at that await while the write waits
// (`delay_cancellation` answers 499 once the write is stored: what the
// next test reaches), and its next attempt, meeting no new await,
// completes with 200.
#[test]
fn delayed_passes_and_returns_200_when_its_gate_opens_during_the_first_request() {
    checked(|s| {
        s.open_gate_later("d", 1.0);
        let channel = s.test("test_delayed", "POST", "/delayed/d");
        assert_eq!(channel.code(), Some(200));
        assert_eq!(
            channel.json_body().unwrap(),
            Json::object([("stored", "d")])
        );
        assert_eq!(s.codes("POST /delayed/d"), ["200", "200", "200"]);
        assert_eq!(s.events("delayed write d: stored").len(), 3);
        assert!(s.events("cancelled").is_empty());
    });
}

// The disconnect the previous test could not reach: the gate opens on the
// clock one second after the second request (the first run to be
// disconnected) started, so that request is disconnected while its write
// waits at the gate. `delay_cancellation` holds the cancel until the write
// is stored; then the request answers 499 ("cancelled after the write").
// The fuzzer finds no rule broken there. As for `/shared`, the harness
// fails only because the first request could not be answered in its own
// run (reported stuck); the same opening stores its write, and it answers
// 200 late.
#[test]
fn delayed_disconnected_while_its_write_waits_answers_499_once_the_write_is_stored() {
    checked(|s| {
        s.open_gate_after_event("d", 2, |e| {
            e.starts_with("delayed POST") && e.ends_with(": started")
        });
        let message = s.failure("test_delayed", "POST", "/delayed/d");
        s.forget_hook();
        assert_eq!(
            problems(&message),
            ["POST-0 never answered, even without a disconnect: Request appears to be stuck"],
            "{message}"
        );
        assert!(
            message.contains("1 suspension point, all cancellation-safe"),
            "{message}"
        );
        assert!(
            message.contains("awaiting a delay_cancellation wrapper"),
            "{message}"
        );
        assert!(
            message.contains("cancelled there: CancelledError"),
            "{message}"
        );
        assert!(!message.contains('✗'), "{message}");
        assert_eq!(s.codes("POST /delayed/d"), ["200", "499!"]);
        assert_eq!(
            s.events("delayed"),
            [
                "delayed POST-0: started",
                "delayed POST-1: started",
                "delayed write d: stored",
                "delayed POST-0: done",
                "delayed write d: stored",
                "delayed POST-1: cancelled after the write",
            ]
        );
    });
}

// `POST /gates/{gate}/open`, `GET /state`, `GET /stats`: answered at once,
// without an await, so there is nowhere to disconnect: the first request
// answers, and the final one is returned (Synapse's harness too: its first
// attempt completes without an await, and is returned).
#[test]
fn opening_a_gate_is_answered_at_once_and_returned_without_disconnects() {
    checked(|s| {
        let channel = s.test("test_open", "POST", "/gates/o/open");
        assert_eq!(channel.code(), Some(200));
        assert_eq!(
            channel.json_body().unwrap(),
            Json::object([("gate", Json::from("o")), ("released", Json::from(0))])
        );
        assert_eq!(s.all_codes(), ["200", "200"]);
    });
}

#[test]
fn state_is_answered_at_once_and_returned_without_disconnects() {
    checked(|s| {
        let channel = s.test("test_state", "GET", "/state");
        assert_eq!(channel.code(), Some(200));
        assert_eq!(
            channel.json_body().unwrap(),
            Json::object([
                ("computations", Json::from(0)),
                ("events", Json::array(Vec::<String>::new())),
                ("writes", Json::array(Vec::<String>::new())),
            ])
        );
        assert_eq!(s.all_codes(), ["200", "200"]);
    });
}

#[test]
fn stats_are_answered_at_once_and_returned_without_disconnects() {
    checked(|s| {
        let channel = s.test("test_stats", "GET", "/stats");
        assert_eq!(channel.code(), Some(200));
        let stats = channel.json_body().unwrap();
        // The first request, logged; the final one, in flight.
        assert_eq!(
            stats.get("requests"),
            Some(&Json::object([
                ("in_flight", 0),
                ("processed", 1),
                ("received", 2)
            ]))
        );
        assert_eq!(stats.get("disconnects"), Some(&Json::from(0)));
        assert_eq!(s.all_codes(), ["200", "200"]);
    });
}
