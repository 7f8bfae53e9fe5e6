//! The HTTP server (`twisted_compat::http`): parsing, limits, status codes,
//! keep-alive, pipelining and disconnects over real loopback sockets, then
//! the request path's logging contexts and cancellation in memory
//! (`FakeChannel`).
//!
//! Citations: `synapse_semantics.md` 2.10 (behaviours 96–109); Twisted's
//! `twisted/web/test/test_http.py` (`HTTPChannel` parsing and limits);
//! Synapse's `tests/test_server.py` (`JsonResourceTests`,
//! `SiteTestCase`), `tests/http/test_site.py` (`SynapseRequestTestCase`:
//! the 413) and `tests/http/server/_base.py` (`disconnect_and_assert`).

mod http_support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;

use http_support::{
    Event, Served, events, forward_site_events, hang_up, read_response_into, read_to_close, serve,
};
use integration_tests::support::capture_logs;
use twisted_compat::http::{
    Codes, FakeChannel, Json, JsonResource, ServletResult, SiteConfig, SiteEvent, SynapseError,
    SynapseRequest, SynapseSite, make_request,
};
use twisted_compat::{
    Cancellable, CancelledError, Clock, Deferred, Failure, LoggingContextOrSentinel,
    PreserveLoggingContext, cancellable, capture_logcontext_errors, current_context,
    make_deferred_yieldable,
};
use twisted_deferred::time::ReactorTime;
use twisted_reactor::{Clock as TestClock, Reactor};

/// The servlets the tests talk to.
struct TestServlets {
    gates: RefCell<HashMap<String, Vec<Deferred<()>>>>,
    notes: RefCell<Vec<String>>,
}

impl TestServlets {
    async fn wait(&self, gate: &str) -> Result<(), Failure> {
        let d: Deferred<()> = Deferred::new();
        self.gates
            .borrow_mut()
            .entry(gate.to_owned())
            .or_default()
            .push(d.clone());
        make_deferred_yieldable(d).await
    }

    /// Opens a gate (from outside any handler or inside one).
    fn open(&self, gate: &str) -> usize {
        let waiters = self.gates.borrow_mut().remove(gate).unwrap_or_default();
        let _preserve = PreserveLoggingContext::sentinel();
        let n = waiters.len();
        for w in waiters {
            let _ = w.callback(());
        }
        n
    }

    #[cancellable]
    async fn on_get_gate(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let gate = request.path_arg("gate").unwrap_or_default();
        let r = self.wait(&gate).await;
        self.notes.borrow_mut().push(format!(
            "{} {}",
            request.request_id(),
            if r.is_ok() { "opened" } else { "cancelled" }
        ));
        r?;
        Ok((200, Json::object([("gate", gate)])))
    }

    async fn on_get_uncancellable(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let gate = request.path_arg("gate").unwrap_or_default();
        self.wait(&gate).await?;
        self.notes
            .borrow_mut()
            .push(format!("{} finished", request.request_id()));
        Ok((200, Json::object([("gate", gate)])))
    }

    async fn on_post_open(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let gate = request.path_arg("gate").unwrap_or_default();
        let n = self.open(&gate);
        Ok((200, Json::object([("released", n)])))
    }
}

/// A site with the test servlets, timed on `reactor`.
fn build<R: ReactorTime + Clone + 'static>(
    reactor: &R,
    config: SiteConfig,
) -> (SynapseSite, Rc<TestServlets>) {
    let servlets = Rc::new(TestServlets {
        gates: RefCell::new(HashMap::new()),
        notes: RefCell::new(Vec::new()),
    });
    let r = JsonResource::new();
    r.register_paths(
        "GET",
        ["/ping"],
        |_req| async { Ok((200, Json::object([("pong", true)]))) },
        "PingServlet",
    )
    .unwrap();
    r.register_paths(
        "POST",
        ["/echo"],
        |req: SynapseRequest| async move { Ok((200, req.json_body()?)) },
        "EchoServlet",
    )
    .unwrap();
    r.register_paths(
        "GET",
        ["/rooms/{room_id}/messages"],
        |req: SynapseRequest| async move {
            Ok((
                200,
                Json::object([
                    ("room_id", Json::from(req.path_arg("room_id"))),
                    ("from", Json::from(req.query_arg("from"))),
                    ("id", Json::from(req.request_id())),
                ]),
            ))
        },
        "RoomMessagesServlet",
    )
    .unwrap();
    r.register_paths(
        "GET",
        ["/panic"],
        |_req| async {
            if true {
                panic!("handler bug");
            }
            Ok((200, Json::Null))
        },
        "PanicServlet",
    )
    .unwrap();
    r.register_paths(
        "GET",
        ["/forbidden"],
        |_req| async { Err(SynapseError::new(403, "Not allowed", "M_FORBIDDEN").into()) },
        "ForbiddenServlet",
    )
    .unwrap();
    let s = servlets.clone();
    r.register_paths(
        "GET",
        ["/gate/{gate}"],
        move |req| s.clone().on_get_gate(req),
        "GateServlet",
    )
    .unwrap();
    let s = servlets.clone();
    r.register_paths(
        "GET",
        ["/uncancellable/{gate}"],
        move |req| s.clone().on_get_uncancellable(req),
        "UncancellableServlet",
    )
    .unwrap();
    let s = servlets.clone();
    r.register_paths(
        "POST",
        ["/open/{gate}"],
        move |req| s.clone().on_post_open(req),
        "OpenServlet",
    )
    .unwrap();
    let site = SynapseSite::new(config, r, reactor.clone());
    (site, servlets)
}

/// Serves the test servlets on a real port and runs `scenario`.
fn run<R: Send + 'static>(
    config: SiteConfig,
    scenario: impl FnOnce(&mut http_support::Client) -> R + Send + 'static,
) -> Served<R> {
    let reactor = Reactor::new().unwrap();
    let (site, _servlets) = build(&reactor, config);
    let (tx, rx) = events();
    forward_site_events(&site, tx);
    let served = serve(&reactor, &site, rx, scenario);
    assert!(
        served.logcontext_errors.is_empty(),
        "logcontext misuse: {:?}",
        served.logcontext_errors
    );
    served
}

fn config() -> SiteConfig {
    SiteConfig::new("test", "test.server")
}

fn rejected(seen: &[Event]) -> Vec<u16> {
    seen.iter()
        .filter_map(|e| match e {
            Event::Site(SiteEvent::Rejected { code, .. }) => Some(*code),
            _ => None,
        })
        .collect()
}

// Synapse: tests/test_server.py JsonResourceTests (test_good_response,
// test_no_handler (404), test_unknown_method (405), test_head_request,
// test_callback_direct_exception (500), test_callback_synapseerror,
// test_callback_indirect_exception); behaviour 99
#[test]
fn status_codes_of_the_router() {
    let served = run(config(), |c| {
        vec![
            c.request("GET", "/ping", b""),
            c.request("GET", "/nowhere", b""),
            c.request("DELETE", "/ping", b""),
            c.request("HEAD", "/ping", b""),
            c.request("GET", "/panic", b""),
            c.request("GET", "/forbidden", b""),
            c.request("GET", "/rooms/%21r%3Ahs/messages?from=s%2072&x=1", b""),
            c.request("POST", "/echo", b"{not json"),
            c.request("POST", "/echo", br#"{"k":["v",1,true,null]}"#),
        ]
    });
    let r = served.value;
    assert_eq!(
        (r[0].code, r[0].json().unwrap()),
        (200, Json::object([("pong", true)]))
    );
    assert_eq!(r[1].code, 404);
    assert_eq!(
        r[1].json().unwrap(),
        Json::object([
            ("errcode", Codes::UNRECOGNIZED),
            ("error", "Unrecognized request")
        ])
    );
    assert_eq!(r[2].code, 405);
    assert_eq!(
        r[2].json().unwrap().get("errcode").unwrap().as_str(),
        Some("M_UNRECOGNIZED")
    );
    // HEAD: GET's status and headers, no body.
    assert_eq!(r[3].code, 200);
    assert!(r[3].body.is_empty());
    assert_eq!(r[3].header("content-length"), r[0].header("content-length"));
    assert_eq!(r[4].code, 500);
    assert_eq!(
        r[4].json().unwrap(),
        Json::object([("errcode", "M_UNKNOWN"), ("error", "Internal server error")])
    );
    assert_eq!(r[5].code, 403);
    assert_eq!(
        r[5].json().unwrap().get("errcode").unwrap().as_str(),
        Some("M_FORBIDDEN")
    );
    assert_eq!(r[6].code, 200);
    assert_eq!(
        r[6].json().unwrap().get("room_id").unwrap().as_str(),
        Some("!r:hs")
    );
    assert_eq!(
        r[6].json().unwrap().get("from").unwrap().as_str(),
        Some("s 72")
    );
    assert_eq!(r[7].code, 400);
    assert_eq!(
        r[7].json().unwrap().get("errcode").unwrap().as_str(),
        Some(Codes::NOT_JSON)
    );
    assert_eq!(
        r[8].body, br#"{"k":["v",1,true,null]}"#,
        "canonical JSON echoed back"
    );
    for response in &r {
        assert_eq!(
            response
                .header("server")
                .map(|s| s.starts_with("twisted-compat/")),
            Some(true)
        );
        assert!(response.header("date").is_some());
    }
    assert!(
        served
            .logs
            .iter()
            .any(|(l, m)| *l == log::Level::Error && m.contains("handler bug")),
        "the panic is logged: {:?}",
        served.logs
    );
}

// Twisted: test_http.py PersistenceTests / HTTP1_1_Tests (keep-alive,
// Connection: close, HTTP/1.0 closes)
#[test]
fn keep_alive_connection_close_and_http_1_0() {
    let served = run(config(), |c| {
        let mut s = c.connect();
        let mut buf = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            c.send(&mut s, "GET", "/rooms/r/messages", b"");
            let response = read_response_into(&mut s, &mut buf);
            ids.push(
                response
                    .json()
                    .unwrap()
                    .get("id")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        s.write_all(b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let response = read_response_into(&mut s, &mut buf);
        let after_close = read_to_close(&mut s);

        let mut old = c.connect();
        old.write_all(b"GET /ping HTTP/1.0\r\n\r\n").unwrap();
        let all = read_to_close(&mut old);
        (ids, response, after_close, all)
    });
    let (ids, response, after_close, all) = served.value;
    assert_eq!(ids, ["GET-0", "GET-1", "GET-2"]);
    assert_eq!(response.code, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(after_close.is_empty(), "closed after the response");
    let (old, used) = twisted_compat::http::parse_response(&all).unwrap();
    assert_eq!((old.code, used), (200, all.len()));
    assert!(all.starts_with(b"HTTP/1.0 200 OK\r\n"));
}

// Twisted: test_http.py HTTPChannelTests pipelining (head-of-line
// blocking: pipelined requests wait for the one ahead, answered in order)
#[test]
fn pipelined_requests_are_served_one_at_a_time_in_order() {
    let served = run(config(), |c| {
        let mut s = c.connect();
        s.write_all(
            b"GET /gate/p HTTP/1.1\r\n\r\nGET /ping HTTP/1.1\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
        )
        .unwrap();
        let first = c.wait_received("/gate/p");
        c.drain();
        let second_early = c.position(
            |e| matches!(e, Event::Site(SiteEvent::RequestReceived { uri, .. }) if uri == "/ping"),
        );
        let opened = c.request("POST", "/open/p", b"");
        let mut buf = Vec::new();
        let responses: Vec<_> = (0..3)
            .map(|_| read_response_into(&mut s, &mut buf))
            .collect();
        c.wait_received("/ping");
        c.drain();
        let order: Vec<String> = c
            .seen
            .iter()
            .filter_map(|e| match e {
                Event::Site(SiteEvent::RequestReceived { uri, .. }) => Some(format!("in {uri}")),
                Event::Site(SiteEvent::Processed(entry)) => Some(format!("out {}", entry.uri)),
                _ => None,
            })
            .collect();
        (first, second_early, opened, responses, order)
    });
    let (first, second_early, opened, responses, order) = served.value;
    assert_eq!(first, "GET-0");
    assert_eq!(second_early, None);
    assert_eq!(opened.code, 200);
    let codes: Vec<u16> = responses.iter().map(|r| r.code).collect();
    assert_eq!(codes, [200, 200, 200]);
    assert_eq!(responses[0].json().unwrap(), Json::object([("gate", "p")]));
    assert_eq!(
        responses[2].json().unwrap(),
        Json::object(Vec::<(String, Json)>::new())
    );
    // /ping was read only once /gate/p could answer (after the gate was
    // opened), /echo only once /ping was done. (The next request starts as
    // soon as the response ahead is complete, as in Twisted's requestDone:
    // before the access-log line of the one ahead, which comes when its
    // handler's processing ends.)
    let pos = |s: &str| order.iter().position(|o| o == s).unwrap();
    assert!(pos("in /open/p") < pos("in /ping"), "{order:?}");
    assert!(pos("out /ping") < pos("in /echo"), "{order:?}");
}

// Twisted: test_http.py ParsingTests (test_invalidHeaders,
// test_tooManyHeaders, test_headerLimitPerRequest, test_duplicateContentLengths,
// test_contentLengthMalformed...): 400 and close; the other connections
// are not disturbed
#[test]
fn malformed_requests_get_400_and_disturb_no_other_connection() {
    let served = run(config(), |c| {
        let mut waiting = c.connect();
        c.send(&mut waiting, "GET", "/gate/m", b"");
        c.wait_received("/gate/m");
        let mut answers = Vec::new();
        for raw in [
            &b"this is not http\r\n\r\n"[..],
            b"GET /ping HTTP/1.1\r\nContent-Length: 12x\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /ping HTTP/1.1\r\nBad Header\r\n\r\n",
            b"GET http://elsewhere/ping HTTP/1.1\r\n\r\n",
            b"GET /ping HTTP/2.0\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut s = c.connect();
            s.write_all(raw).unwrap();
            answers.push(read_to_close(&mut s));
        }
        let still_fine = c.request("GET", "/ping", b"");
        let opened = c.request("POST", "/open/m", b"");
        let waited = c.read_response(&mut waiting);
        c.drain();
        (answers, still_fine, opened, waited, c.seen.clone())
    });
    let (answers, still_fine, opened, waited, seen) = served.value;
    for answer in &answers {
        assert_eq!(
            answer.as_slice(),
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            "{:?}",
            String::from_utf8_lossy(answer)
        );
    }
    assert_eq!(rejected(&seen), vec![400; answers.len()]);
    assert_eq!(still_fine.code, 200);
    assert_eq!(opened.json().unwrap().get("released"), Some(&Json::Int(1)));
    assert_eq!(waited.code, 200);
}

// Twisted: test_http.py test_headersTooBigInitialCommand /
// test_headersTooBigOtherHeaders (totalHeadersSize) and maxHeaders
#[test]
fn too_large_or_too_many_headers_get_400() {
    let mut small = config();
    small.max_header_size = 1024;
    small.max_headers = 10;
    let served = run(small, |c| {
        let mut results = Vec::new();
        let long = format!("GET /ping HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(1500));
        let many: String = (0..11).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET /ping HTTP/1.1\r\n{many}\r\n");
        let endless = "a".repeat(1500);
        for raw in [long, many, endless] {
            let mut s = c.connect();
            s.write_all(raw.as_bytes()).unwrap();
            // The server may close before reading everything, which can
            // reset the connection: the answer, if it arrives, is a 400.
            results.push(read_to_close(&mut s));
        }
        let fine = c.request("GET", "/ping", b"");
        c.drain();
        (results, fine, c.seen.clone())
    });
    let (results, fine, seen) = served.value;
    for r in &results {
        assert!(
            r.is_empty() || r.as_slice() == b"HTTP/1.1 400 Bad Request\r\n\r\n",
            "{:?}",
            String::from_utf8_lossy(r)
        );
    }
    assert_eq!(rejected(&seen), [400, 400, 400]);
    assert_eq!(fine.code, 200);
}

// Synapse: tests/http/test_site.py (a Content-Length over
// max_request_body_size gets 413 M_TOO_LARGE); a chunked body over the
// limit too (Synapse aborts the connection there)
#[test]
fn bodies_over_the_limit_get_413() {
    let mut small = config();
    small.max_request_body_size = 1024;
    let served = run(small, |c| {
        let mut declared = c.connect();
        declared
            .write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n")
            .unwrap();
        let declared = read_to_close(&mut declared);
        let mut chunked = c.connect();
        chunked
            .write_all(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n")
            .unwrap();
        let chunked = read_to_close(&mut chunked);
        let just_fits = c.request(
            "POST",
            "/echo",
            format!("{{\"a\":\"{}\"}}", "x".repeat(1000)).as_bytes(),
        );
        c.drain();
        (declared, chunked, just_fits, c.seen.clone())
    });
    let (declared, chunked, just_fits, seen) = served.value;
    for raw in [&declared, &chunked] {
        let (response, _) = twisted_compat::http::parse_response(raw).unwrap();
        assert_eq!(response.code, 413);
        assert_eq!(
            response.json().unwrap(),
            Json::object([
                ("errcode", Codes::TOO_LARGE),
                ("error", "Request content is too large (>1024)")
            ])
        );
    }
    assert_eq!(rejected(&seen), [413, 413]);
    assert_eq!(just_fits.code, 200);
    // No access-log line for refused requests (no request context exists).
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::Site(SiteEvent::Processed(entry)) if entry.code == 413))
    );
}

// Twisted: test_http.py ChunkedTransferEncodingTests, test_expect100Continue;
// bodies arriving in pieces
#[test]
fn chunked_bodies_split_bodies_and_100_continue() {
    let served = run(config(), |c| {
        let mut s = c.connect();
        let mut buf = Vec::new();
        s.write_all(
            b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n",
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.write_all(b"3\r\n:1}\r\n0\r\nTrailer: t\r\n\r\n").unwrap();
        let chunked = read_response_into(&mut s, &mut buf);

        let body = br#"{"split":"yes"}"#;
        write!(
            s,
            "POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        for piece in body.chunks(4) {
            s.write_all(piece).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let split = read_response_into(&mut s, &mut buf);

        write!(
            s,
            "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        let mut interim = [0u8; 25];
        std::io::Read::read_exact(&mut s, &mut interim).unwrap();
        s.write_all(body).unwrap();
        let continued = read_response_into(&mut s, &mut buf);
        (chunked, split, interim.to_vec(), continued)
    });
    let (chunked, split, interim, continued) = served.value;
    assert_eq!(chunked.json().unwrap(), Json::object([("a", 1)]));
    assert_eq!(split.json().unwrap(), Json::object([("split", "yes")]));
    assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(continued.code, 200);
}

// Synapse: behaviour 101 ("Connection from ... lost before request headers
// were read"): a client leaving mid-request disturbs nothing
#[test]
fn clients_leaving_mid_request_or_between_requests_disturb_nothing() {
    let served = run(config(), |c| {
        let mut half_headers = c.connect();
        half_headers
            .write_all(b"GET /ping HTTP/1.1\r\nHost: x")
            .unwrap();
        hang_up(half_headers);
        let mut half_body = c.connect();
        half_body
            .write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"a\"")
            .unwrap();
        hang_up(half_body);
        let mut idle = c.connect();
        c.send(&mut idle, "GET", "/ping", b"");
        let first = c.read_response(&mut idle);
        hang_up(idle);
        let after = c.request("GET", "/rooms/r/messages", b"");
        c.drain();
        (first, after, c.seen.clone())
    });
    let (first, after, seen) = served.value;
    assert_eq!(first.code, 200);
    // Only complete requests got ids, and each one access-log line.
    assert_eq!(
        after.json().unwrap().get("id").unwrap().as_str(),
        Some("GET-1")
    );
    let processed: Vec<(String, String)> = seen
        .iter()
        .filter_map(|e| match e {
            Event::Site(SiteEvent::Processed(entry)) => {
                Some((entry.request_id.clone(), entry.code_field()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        processed,
        [
            ("GET-0".to_owned(), "200".to_owned()),
            ("GET-1".to_owned(), "200".to_owned())
        ]
    );
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::Site(SiteEvent::ClientDisconnected { .. })))
    );
}

// Synapse: behaviours 101–104 over TCP, the client leaving with a reset
// (SO_LINGER 0) or a clean close, many at once: each cancellable request
// whose client left gets 499!, the others their response
#[test]
fn many_clients_some_leave_each_gets_its_own_outcome() {
    let served = run(config(), |c| {
        let mut streams = Vec::new();
        let mut ids = Vec::new();
        for i in 0..12 {
            let mut s = c.connect();
            c.send(&mut s, "GET", &format!("/gate/g{}", i % 3), b"");
            ids.push(c.wait_received(&format!("/gate/g{}", i % 3)));
            streams.push(s);
        }
        let mut stayed = Vec::new();
        for (i, s) in streams.into_iter().enumerate() {
            match i % 4 {
                0 => hang_up(s),
                1 => {
                    socket2::SockRef::from(&s)
                        .set_linger(Some(std::time::Duration::ZERO))
                        .unwrap();
                    drop(s); // a reset
                }
                _ => stayed.push((i, s)),
            }
        }
        for id in ids.iter().step_by(4) {
            c.wait_processed(id);
        }
        for id in ids.iter().skip(1).step_by(4) {
            c.wait_processed(id);
        }
        for g in 0..3 {
            c.request("POST", &format!("/open/g{g}"), b"");
        }
        let mut answers = Vec::new();
        for (i, mut s) in stayed {
            answers.push((i, c.read_response(&mut s).code));
            c.wait_processed(&ids[i]);
        }
        c.drain();
        (ids, answers, c.seen.clone())
    });
    let (ids, answers, seen) = served.value;
    let entry = |id: &str| {
        seen.iter()
            .find_map(|e| match e {
                Event::Site(SiteEvent::Processed(entry)) if entry.request_id == id => {
                    Some(entry.clone())
                }
                _ => None,
            })
            .unwrap()
    };
    for (i, id) in ids.iter().enumerate() {
        let code = entry(id).code_field();
        if i % 4 < 2 {
            assert_eq!(code, "499!", "request {i}");
        } else {
            assert_eq!(code, "200", "request {i}");
        }
    }
    assert_eq!(answers.len(), 6);
    assert!(answers.iter().all(|(_, code)| *code == 200));
}

// ---------------------------------------------------------------------
// In memory: the request path's logging contexts and cancellation, with
// the deterministic clock (Synapse's FakeChannel tests).

fn in_memory() -> (TestClock, SynapseSite, Rc<TestServlets>) {
    let reactor = TestClock::new();
    let (site, servlets) = build(&reactor, config());
    (reactor, site, servlets)
}

// Synapse: tests/http/server/_base.py disconnect_and_assert with
// expect_cancellation=True (behaviour 102: the 499 is produced inside
// connectionLost) and False (the response comes later, and is dropped)
#[test]
fn disconnect_and_assert_cancellable_and_not() {
    let ((), errors) = capture_logcontext_errors(|| {
        let (reactor, site, servlets) = in_memory();
        let channel = make_request(&site, "GET", "/gate/a", b"");
        let request = channel.request().unwrap();
        assert!(!channel.is_finished() && request.is_processing());
        channel.disconnect();
        assert_eq!(
            request.code(),
            499,
            "produced synchronously during the disconnect"
        );
        assert!(!request.is_processing());
        assert!(
            request.render_deferred().unwrap().called(),
            "render_deferred succeeded"
        );
        assert!(channel.written().is_empty());
        assert_eq!(*servlets.notes.borrow(), ["GET-0 cancelled"]);

        let channel = make_request(&site, "GET", "/uncancellable/b", b"");
        let request = channel.request().unwrap();
        channel.disconnect();
        assert_eq!(request.code(), 200);
        assert!(request.is_processing(), "not produced yet");
        reactor.advance(1.0).unwrap();
        servlets.open("b");
        assert!(!request.is_processing());
        assert_eq!(request.code(), 200);
        assert!(channel.written().is_empty());
        assert_eq!(
            *servlets.notes.borrow(),
            ["GET-0 cancelled", "GET-1 finished"]
        );
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: behaviour 98 (the request context: named by the request id,
// no parent, carries the request, current while the handler runs, never
// finished) and 109 (the access log is written in it)
#[test]
fn each_request_runs_in_its_own_logging_context() {
    let ((), errors) = capture_logcontext_errors(|| {
        let reactor = TestClock::new();
        let clock = Clock::new(reactor.clone(), "hs");
        let seen: Rc<RefCell<Vec<String>>> = Rc::default();
        let resource = JsonResource::new();
        let (s, c) = (seen.clone(), clock.clone());
        resource
            .register_paths(
                "GET",
                ["/ctx"],
                move |_req| {
                    let (s, c) = (s.clone(), c.clone());
                    async move {
                        s.borrow_mut().push(format!("start {}", current_context()));
                        c.sleep(1.0).await?;
                        s.borrow_mut()
                            .push(format!("resumed {}", current_context()));
                        Ok((200, Json::Null))
                    }
                },
                "CtxServlet",
            )
            .unwrap();
        let site = SynapseSite::new(config(), resource, reactor.clone());
        let s = seen.clone();
        site.add_observer(move |e| {
            if let SiteEvent::Processed(entry) = e {
                s.borrow_mut().push(format!(
                    "access log {} in {}",
                    entry.request_id,
                    current_context()
                ));
            }
        });
        let one = make_request(&site, "GET", "/ctx", b"");
        seen.borrow_mut()
            .push(format!("after render {}", current_context()));
        let two = make_request(&site, "GET", "/ctx?access_token=secret", b"");
        reactor.advance(1.0).unwrap();
        seen.borrow_mut()
            .push(format!("after advance {}", current_context()));
        assert_eq!(
            *seen.borrow(),
            [
                "start GET-0",
                "after render sentinel",
                "start GET-1",
                "resumed GET-0",
                "access log GET-0 in GET-0",
                "resumed GET-1",
                "access log GET-1 in GET-1",
                "after advance sentinel",
            ]
        );
        let ctx = two.request().unwrap().logcontext().unwrap();
        assert!(ctx.parent_context().is_none());
        assert!(!ctx.finished(), "Synapse never finishes a request context");
        let details = ctx.request().unwrap();
        assert_eq!(details.request_id, "GET-1");
        assert_eq!(details.url, "/ctx?access_token=<redacted>");
        assert_eq!(details.site_tag, "test");
        assert_eq!(ctx.server_name(), "test.server");
        assert!(matches!(
            current_context(),
            LoggingContextOrSentinel::Sentinel
        ));
        assert!(one.is_finished() && two.is_finished());
    });
    assert!(errors.is_empty(), "{errors:?}");
}

// Synapse: behaviour 105 (a CancelledError without a disconnect: logged as
// an error, and the client does get 499) and 107 (a handler swallowing the
// CancelledError answers normally; nothing is sent, "200!")
#[test]
fn cancellation_without_disconnect_and_swallowed_cancellation() {
    let (((), errors), logs) = capture_logs(|| {
        capture_logcontext_errors(|| {
            let reactor = TestClock::new();
            let clock = Clock::new(reactor.clone(), "hs");
            let resource = JsonResource::new();
            let c = clock.clone();
            resource
                .register_paths(
                    "GET",
                    ["/swallow"],
                    move |_req| {
                        let c = c.clone();
                        Cancellable::new(async move {
                            match c.sleep(1.0).await {
                                Err(f) if f.check::<CancelledError>() => {
                                    Ok((200, Json::from("swallowed")))
                                }
                                Err(f) => Err(f),
                                Ok(()) => Ok((200, Json::from("slept"))),
                            }
                        })
                    },
                    "SwallowServlet",
                )
                .unwrap();
            let c = clock.clone();
            resource
                .register_paths(
                    "GET",
                    ["/sleep"],
                    move |_req| {
                        let c = c.clone();
                        async move {
                            c.sleep(1.0).await?;
                            Ok((200, Json::Null))
                        }
                    },
                    "SleepServlet",
                )
                .unwrap();
            let site = SynapseSite::new(config(), resource, reactor.clone());

            let swallowing = make_request(&site, "GET", "/swallow", b"");
            swallowing.disconnect();
            let request = swallowing.request().unwrap();
            assert_eq!(request.code(), 200);
            assert!(!request.is_finished());
            assert!(swallowing.written().is_empty());

            // Something else cancels render_deferred: the client gets 499.
            let cancelled = make_request(&site, "GET", "/sleep", b"");
            cancelled
                .request()
                .unwrap()
                .render_deferred()
                .unwrap()
                .cancel()
                .unwrap();
            assert_eq!(cancelled.code(), Some(499));
            assert_eq!(
                cancelled.json_body().unwrap(),
                Json::object([("errcode", "M_UNKNOWN"), ("error", "Request cancelled")])
            );
        })
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        logs.iter().any(|(l, m)| *l == log::Level::Error
            && m.starts_with("Got cancellation before client disconnection")),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|(_, m)| m.contains("200! \"GET /swallow HTTP/1.1\""))
    );
}

// Twisted: HTTPChannel._optimisticEagerReadSize (reading pauses while
// too much pipelined data waits, and resumes when the request ahead is
// done)
#[test]
fn reading_pauses_when_too_much_waits_behind_a_request() {
    let (_reactor, site, servlets) = in_memory();
    let channel = FakeChannel::new(&site);
    channel.send(b"GET /gate/z HTTP/1.1\r\n\r\n");
    assert!(!channel.reading_paused());
    let ping = b"GET /ping HTTP/1.1\r\n\r\n".repeat(1000);
    channel.send(&ping);
    assert!(channel.reading_paused());
    servlets.open("z");
    assert!(!channel.reading_paused());
    assert_eq!(channel.responses().len(), 1001);
    assert!(channel.responses().iter().all(|r| r.code == 200));
}

// Twisted: test_http.py (a non-persistent connection ignores what follows
// the request); the site's request counter
#[test]
fn data_after_a_closing_request_is_ignored() {
    let (_reactor, site, _servlets) = in_memory();
    let channel = FakeChannel::new(&site);
    channel.send(b"GET /ping HTTP/1.0\r\n\r\nGET /ping HTTP/1.1\r\n\r\n");
    assert_eq!(channel.responses().len(), 1);
    assert!(channel.server_closed());
    let channel = FakeChannel::new(&site);
    channel.send(
        b"GET /ping HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\nGET /ping HTTP/1.1\r\n\r\n",
    );
    assert_eq!(channel.responses().len(), 1);
    assert_eq!(channel.request().unwrap().request_id(), "GET-1");
}

// Synapse: SynapseRequest.get_request_id with request_id_header
#[test]
fn a_request_id_header_names_the_request() {
    let reactor = TestClock::new();
    let mut cfg = config();
    cfg.request_id_header = Some("X-Request-ID".into());
    let (site, _s) = build(&reactor, cfg);
    let channel = FakeChannel::new(&site);
    channel.send(b"GET /ping HTTP/1.1\r\nX-Request-ID: abc\r\n\r\n");
    let request = channel.request().unwrap();
    assert_eq!(request.request_id(), "GET-abc");
    assert_eq!(request.logcontext().unwrap().name(), "GET-abc");
}

// Rust-only: a cancellable handler awaiting something that is not a
// Deferred (a foreign future) cannot be cancelled from the inside; the
// coroutine is dropped, and the request still ends with 499 (dropped for a
// gone client, sent otherwise), as if the CancelledError had come out of
// that await.
#[test]
fn a_handler_awaiting_a_foreign_future_still_ends_with_499() {
    let (((), errors), logs) = capture_logs(|| {
        capture_logcontext_errors(|| {
            let reactor = TestClock::new();
            let resource = JsonResource::new();
            let senders = Rc::new(RefCell::new(Vec::new()));
            let s = senders.clone();
            resource
                .register_paths(
                    "GET",
                    ["/foreign"],
                    move |_req| {
                        let (tx, rx) = futures::channel::oneshot::channel::<u8>();
                        s.borrow_mut().push(tx);
                        Cancellable::new(async move {
                            let n = rx.await.map_err(Failure::new)?;
                            Ok((200, Json::from(n)))
                        })
                    },
                    "ForeignServlet",
                )
                .unwrap();
            let site = SynapseSite::new(config(), resource, reactor.clone());
            let gone = make_request(&site, "GET", "/foreign", b"");
            gone.disconnect();
            let request = gone.request().unwrap();
            assert_eq!(request.code(), 499);
            assert!(!request.is_processing());
            assert!(gone.written().is_empty());

            let cancelled = make_request(&site, "GET", "/foreign", b"");
            cancelled
                .request()
                .unwrap()
                .render_deferred()
                .unwrap()
                .cancel()
                .unwrap();
            assert_eq!(cancelled.code(), Some(499));
        })
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        logs.iter()
            .any(|(_, m)| m.contains("499! \"GET /foreign HTTP/1.1\"")),
        "{logs:?}"
    );
}
