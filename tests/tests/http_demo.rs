//! The HTTP demo (`compat/examples/http_demo.rs`) in-process on a loopback
//! port, driven with real sockets: clients disconnect mid-request and the
//! server's access log, handlers and shared work are checked.
//!
//! Citations: `synapse_semantics.md` 2.10 (behaviours 98–104), the
//! cancellation document's "Uncancelled processing" and "Deferred
//! shared between requests", and Synapse's
//! `TSERVLET::TestRestServletCancellation` (`tests/http/test_servlet.py`).
//! Every scenario also checks that no logging-context misuse was reported
//! on the reactor thread (Synapse's `@logcontext_clean`).

#[path = "../../compat/examples/http_demo.rs"]
#[allow(dead_code)]
mod http_demo;
mod http_support;

use std::rc::Rc;

use http_support::{Client, Event, Served, events, forward_site_events, hang_up, serve};
use twisted_compat::http::{Json, SiteEvent};
use twisted_reactor::Reactor;

/// Serves the demo and runs `scenario` against it.
fn run_demo<R: Send + 'static>(
    scenario: impl FnOnce(&mut Client) -> R + Send + 'static,
) -> (Served<R>, Rc<http_demo::Demo>) {
    let reactor = Reactor::new().unwrap();
    let (site, demo) = http_demo::build_site(&reactor, "test.server");
    let (tx, rx) = events();
    forward_site_events(&site, tx.clone());
    demo.set_event_hook(move |note| {
        let _ = tx.send(Event::Note(note.to_owned()));
    });
    let served = serve(&reactor, &site, rx, scenario);
    assert!(
        served.logcontext_errors.is_empty(),
        "logcontext misuse: {:?}",
        served.logcontext_errors
    );
    (served, demo)
}

fn logged(logs: &[(log::Level, String)], needle: &str) -> bool {
    logs.iter().any(|(_, m)| m.contains(needle))
}

// Synapse: TSERVLET::TestRestServletCancellation.test_cancellable_disconnect
// (behaviours 101–104)
#[test]
fn a_cancellable_handler_is_cancelled_when_its_client_disconnects() {
    let (served, demo) = run_demo(|c| {
        let mut a = c.connect();
        c.send(&mut a, "GET", "/sleep/3600", b"");
        let id = c.wait_received("/sleep/3600");
        c.wait_note(&format!("sleep {id}: started"));
        hang_up(a);
        let entry = c.wait_processed(&id);
        // The server goes on serving.
        let state = c.request("GET", "/state", b"");
        (id, entry, state, c.seen.clone(), c.notes())
    });
    let (id, entry, state, seen, notes) = served.value;
    assert_eq!(entry.code, 499);
    assert!(!entry.finished);
    assert_eq!(entry.code_field(), "499!");
    assert_eq!(entry.sent_length, 0);
    assert_eq!(entry.servlet_name, "SleepServlet");
    assert_eq!(
        notes,
        [
            format!("sleep {id}: started"),
            format!("sleep {id}: cancelled")
        ]
    );
    // In order: the disconnect, the cancellation arriving in the handler,
    // the 499 response dropped, the access log; all inside connectionLost.
    let at = |pred: &dyn Fn(&Event) -> bool| seen.iter().position(pred).unwrap();
    let disconnected = at(&|e| matches!(e, Event::Site(SiteEvent::ClientDisconnected { .. })));
    let cancelled = at(&|e| matches!(e, Event::Note(n) if n.ends_with("cancelled")));
    let dropped = at(
        &|e| matches!(e, Event::Site(SiteEvent::ResponseDropped { code: 499, request_id }) if *request_id == id),
    );
    let processed = at(&|e| matches!(e, Event::Site(SiteEvent::Processed(_))));
    assert!(disconnected < cancelled && cancelled < dropped && dropped < processed);
    assert_eq!(state.code, 200);
    assert!(
        logged(&served.logs, "499! \"GET /sleep/3600 HTTP/1.1\""),
        "{:?}",
        served.logs
    );
    assert!(logged(&served.logs, "Not sending response to request"));
    assert!(!demo.events().iter().any(|e| e.ends_with("done")));
}

// Synapse: TSERVLET::TestRestServletCancellation.test_uncancellable_disconnect
// (behaviours 101, 104)
#[test]
fn a_non_cancellable_handler_runs_to_completion_and_its_response_is_dropped() {
    let (served, _demo) = run_demo(|c| {
        let mut a = c.connect();
        c.send(&mut a, "GET", "/uncancellable/g1", b"");
        let id = c.wait_received("/uncancellable/g1");
        c.wait_note(&format!("uncancellable {id}: started"));
        hang_up(a);
        c.wait_disconnected(&id);
        c.drain();
        let processed_before_release = c.processed(&id);
        let opened = c.request("POST", "/gates/g1/open", b"");
        let entry = c.wait_processed(&id);
        (
            id,
            processed_before_release,
            opened,
            entry,
            c.notes(),
            c.seen.clone(),
        )
    });
    let (id, processed_before_release, opened, entry, notes, seen) = served.value;
    assert!(
        !processed_before_release,
        "still processing after the disconnect"
    );
    assert_eq!(opened.code, 200);
    assert_eq!(opened.json().unwrap().get("released"), Some(&Json::Int(1)));
    assert_eq!(entry.code, 200);
    assert!(!entry.finished);
    assert_eq!(entry.code_field(), "200!");
    assert_eq!(
        notes,
        [
            format!("uncancellable {id}: started"),
            "gate g1: opened".to_owned(),
            format!("uncancellable {id}: finished"),
        ]
    );
    assert!(seen.iter().any(|e| matches!(
        e,
        Event::Site(SiteEvent::ResponseDropped { code: 200, request_id }) if *request_id == id
    )));
    assert!(logged(
        &served.logs,
        "200! \"GET /uncancellable/g1 HTTP/1.1\""
    ));
}

// Synapse: cancellation document, "Deferred shared between requests"
// (an `ObservableDeferred` gives each request its own cancellable observer)
#[test]
fn requests_sharing_an_observable_deferred_are_cancelled_alone() {
    let (served, _demo) = run_demo(|c| {
        let mut a = c.connect();
        c.send(&mut a, "GET", "/shared/k", b"");
        let id_a = c.wait_received("/shared/k");
        c.wait_note(&format!("shared {id_a}: waiting"));
        let mut b = c.connect();
        c.send(&mut b, "GET", "/shared/k", b"");
        let id_b = c.wait_received("/shared/k");
        c.wait_note(&format!("shared {id_b}: waiting"));
        hang_up(a);
        let entry_a = c.wait_processed(&id_a);
        c.drain();
        let finished_before_release = c.note_at("shared k: computation finished").is_some();
        let opened = c.request("POST", "/gates/k/open", b"");
        let response_b = c.read_response(&mut b);
        let entry_b = c.wait_processed(&id_b);
        (
            id_a,
            id_b,
            entry_a,
            entry_b,
            finished_before_release,
            opened,
            response_b,
            c.notes(),
        )
    });
    let (id_a, id_b, entry_a, entry_b, finished_before_release, opened, response_b, notes) =
        served.value;
    assert_eq!(entry_a.code_field(), "499!");
    assert!(!finished_before_release);
    assert_eq!(opened.json().unwrap().get("released"), Some(&Json::Int(1)));
    assert_eq!(response_b.code, 200);
    assert_eq!(
        response_b.json().unwrap(),
        Json::object([
            ("key", Json::from("k")),
            ("result", Json::from("computed k")),
            ("computations", Json::from(1)),
        ])
    );
    assert_eq!(entry_b.code_field(), "200");
    assert_eq!(
        notes,
        [
            "shared k: computation started".to_owned(),
            format!("shared {id_a}: waiting"),
            format!("shared {id_b}: waiting"),
            format!("shared {id_a}: cancelled"),
            "gate k: opened".to_owned(),
            "shared k: computation finished".to_owned(),
            format!("shared {id_b}: got it"),
        ]
    );
}

// Synapse: cancellation document, "Uncancelled processing" (Good:
// `delay_cancellation`), behaviour 24
#[test]
fn delay_cancellation_keeps_the_request_processing_until_the_work_is_done() {
    let (served, _demo) = run_demo(|c| {
        let mut a = c.connect();
        c.send(&mut a, "POST", "/delayed/w", b"");
        let id = c.wait_received("/delayed/w");
        c.wait_note(&format!("delayed {id}: started"));
        hang_up(a);
        c.wait_disconnected(&id);
        // Still processing: no access-log line, the write not done.
        let state_before = c.request("GET", "/state", b"");
        c.drain();
        let processed_before = c.processed(&id);
        let opened = c.request("POST", "/gates/w/open", b"");
        let entry = c.wait_processed(&id);
        let state_after = c.request("GET", "/state", b"");
        (
            id,
            state_before,
            processed_before,
            opened,
            entry,
            state_after,
            c.notes(),
        )
    });
    let (id, state_before, processed_before, opened, entry, state_after, notes) = served.value;
    assert!(!processed_before);
    assert_eq!(
        state_before.json().unwrap().get("writes"),
        Some(&Json::array(Vec::<Json>::new()))
    );
    assert_eq!(opened.code, 200);
    assert_eq!(entry.code_field(), "499!");
    assert_eq!(
        state_after.json().unwrap().get("writes"),
        Some(&Json::array(["w"]))
    );
    assert_eq!(
        notes,
        [
            format!("delayed {id}: started"),
            "gate w: opened".to_owned(),
            "delayed write w: stored".to_owned(),
            format!("delayed {id}: cancelled after the write"),
        ]
    );
}

// Synapse: behaviour 98–99 (a request whose client stays gets its
// response; the access log line has no "!")
#[test]
fn a_client_that_stays_gets_its_response() {
    let (served, _demo) = run_demo(|c| {
        let response = c.request("GET", "/sleep/0.01", b"");
        let id = c.wait_received("/sleep/0.01");
        let entry = c.wait_processed(&id);
        (response, entry)
    });
    let (response, entry) = served.value;
    assert_eq!(response.code, 200);
    assert_eq!(response.json().unwrap(), Json::object([("slept", 0.01)]));
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(entry.code_field(), "200");
    assert!(entry.finished);
    assert_eq!(entry.sent_length, response.body.len());
}

// Soak regression: with its gate already open, the shared computation ends
// inside `run_as_background_process`, before the demo remembered it; it was
// then remembered anyway, finished, and served to every later request
// without computing again (and never removed).
#[test]
fn a_shared_computation_that_finished_at_once_is_not_kept() {
    let (served, _demo) = run_demo(|c| {
        let opened = c.request("POST", "/gates/k/open", b"");
        let first = c.request("GET", "/shared/k", b"");
        let second = c.request("GET", "/shared/k", b"");
        let stats = c.request("GET", "/stats", b"");
        // Noted before the responses were written.
        c.drain();
        (opened, first, second, stats, c.notes())
    });
    let (opened, first, second, stats, notes) = served.value;
    assert_eq!(opened.code, 200);
    let computations =
        |r: &twisted_compat::http::FakeResponse| r.json().unwrap().get("computations").cloned();
    assert_eq!(computations(&first), Some(Json::Int(1)));
    assert_eq!(computations(&second), Some(Json::Int(2)));
    let stats = stats.json().unwrap();
    assert_eq!(stats.get("shared_pending"), Some(&Json::Int(0)));
    assert_eq!(
        stats.get("background_contexts"),
        Some(&Json::object([("finished", 2), ("started", 2)]))
    );
    assert_eq!(
        notes
            .iter()
            .filter(|n| *n == "shared k: computation finished")
            .count(),
        2
    );
}

// Soak regression: the demo kept every event (and every write) for
// `GET /state`, so its memory grew with each request served, and so did
// each `/state` response.
#[test]
fn the_demo_keeps_only_its_latest_events() {
    let requests = http_demo::KEPT / 2 + 10;
    let (served, demo) = run_demo(move |c| {
        for _ in 0..requests {
            assert_eq!(c.request("GET", "/sleep/0", b"").code, 200);
        }
        c.request("GET", "/state", b"")
    });
    let state = served.value.json().unwrap();
    let Some(Json::Array(events)) = state.get("events") else {
        panic!("no events in {state:?}");
    };
    assert_eq!(events.len(), http_demo::KEPT);
    assert_eq!(demo.events().len(), http_demo::KEPT);
    // The latest are kept.
    assert!(demo.events().last().unwrap().ends_with(": done"));
}

// The soak test's view: `/stats` counts disconnects, cancelled handlers,
// `499!` lines, and requests whose context is still in flight.
#[test]
fn stats_count_disconnects_and_cancelled_handlers() {
    let (served, _demo) = run_demo(|c| {
        let mut a = c.connect();
        c.send(&mut a, "GET", "/sleep/3600", b"");
        let id = c.wait_received("/sleep/3600");
        c.wait_note(&format!("sleep {id}: started"));
        hang_up(a);
        c.wait_processed(&id);
        assert_eq!(c.request("GET", "/sleep/0", b"").code, 200);
        c.request("GET", "/stats", b"")
    });
    let stats = served.value.json().unwrap();
    let get = |key: &str| stats.get(key).cloned();
    assert_eq!(get("disconnects"), Some(Json::Int(1)));
    assert_eq!(get("access_log_499"), Some(Json::Int(1)));
    assert_eq!(get("responses_dropped"), Some(Json::Int(1)));
    assert_eq!(
        get("cancelled"),
        Some(Json::object([
            ("delayed", 0),
            ("shared", 0),
            ("sleep", 1),
            ("total", 1)
        ]))
    );
    assert_eq!(
        get("requests"),
        Some(Json::object([
            ("in_flight", 0),
            ("processed", 2),
            ("received", 3)
        ]))
    );
    assert_eq!(get("unhandled_errors"), Some(Json::Int(0)));
    assert_eq!(get("logcontext_errors"), Some(Json::Int(0)));
}
