//! Real-socket test support for the HTTP server tests: a site served on a
//! loopback port by the reactor on the test thread, clients on a helper
//! thread with blocking `std::net::TcpStream`s, and the site's events
//! passed to the client thread so that it can wait for them.
//!
//! Every wait has a generous timeout and panics with what was seen; a
//! panicking client stops the reactor, and the panic is re-raised on the
//! test thread.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::resume_unwind;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use integration_tests::support::capture_logs;
use twisted_compat::http::{
    AccessLogEntry, FakeResponse, SiteEvent, SynapseSite, parse_response_for,
};
use twisted_compat::{LogcontextError, capture_logcontext_errors};
use twisted_reactor::{Reactor, ReactorHandle};

/// How long any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// What the client thread hears from the server, in order.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // test plumbing, a few hundred events
pub enum Event {
    /// A [`SiteEvent`].
    Site(SiteEvent),
    /// Something a handler noted (the demo's events).
    Note(String),
}

/// Stops the reactor when dropped (also while a client panics).
struct StopOnDrop(ReactorHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.call_from_thread(|r| {
            let _ = r.stop();
        });
    }
}

/// The client side: connects to the site and waits for its events.
pub struct Client {
    pub address: SocketAddr,
    events: Receiver<Event>,
    /// Every event received so far, in order.
    pub seen: Vec<Event>,
    claimed: Vec<String>,
}

/// What a served scenario gives back.
pub struct Served<R> {
    /// The scenario's value.
    pub value: R,
    /// Logcontext misuse reported on the reactor thread meanwhile.
    pub logcontext_errors: Vec<LogcontextError>,
    /// What was logged on the reactor thread (level, message).
    pub logs: Vec<(log::Level, String)>,
}

/// A sender of [`Event`]s for the site's observer and handlers, and the
/// receiver the client will read.
pub fn events() -> (Sender<Event>, Receiver<Event>) {
    mpsc::channel()
}

/// Forwards every event of `site` to `tx`.
pub fn forward_site_events(site: &SynapseSite, tx: Sender<Event>) {
    site.add_observer(move |event| {
        let _ = tx.send(Event::Site(event.clone()));
    });
}

/// Serves `site` on a loopback port of `reactor` and runs `scenario` on a
/// client thread while the reactor runs here; stops when the scenario
/// ends.
pub fn serve<R: Send + 'static>(
    reactor: &Reactor,
    site: &SynapseSite,
    events: Receiver<Event>,
    scenario: impl FnOnce(&mut Client) -> R + Send + 'static,
) -> Served<R> {
    let port = site.listen_tcp(reactor, 0, "127.0.0.1").unwrap();
    let address = port.get_host();
    let handle = reactor.handle();
    let client = std::thread::spawn(move || {
        let _stop = StopOnDrop(handle);
        let mut client = Client {
            address,
            events,
            seen: Vec::new(),
            claimed: Vec::new(),
        };
        scenario(&mut client)
    });
    // A last resort: never run forever.
    let r = reactor.clone();
    let _watchdog = reactor.call_later(600.0, move || {
        let _ = r.stop();
    });
    let ((run, logcontext_errors), logs) =
        capture_logs(|| capture_logcontext_errors(|| reactor.run()));
    run.unwrap();
    let value = client.join().unwrap_or_else(|p| resume_unwind(p));
    Served {
        value,
        logcontext_errors,
        logs,
    }
}

impl Client {
    /// A new connection, with read timeouts.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.address).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// Sends an HTTP/1.1 request with a `Content-Length`.
    pub fn send(&self, stream: &mut TcpStream, method: &str, path: &str, body: &[u8]) {
        let mut raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        stream.write_all(&raw).unwrap();
    }

    /// Reads one complete response.
    pub fn read_response(&self, stream: &mut TcpStream) -> FakeResponse {
        let mut buf = Vec::new();
        read_response_into(stream, &mut buf)
    }

    /// One request on a new connection, and its response.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> FakeResponse {
        let mut stream = self.connect();
        self.send(&mut stream, method, path, body);
        let mut buf = Vec::new();
        read_response_for(method, &mut stream, &mut buf)
    }

    /// Waits for (or finds among the events already seen) the first event
    /// matching `pred`.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return e.clone();
        }
        loop {
            match self.events.recv_timeout(TIMEOUT) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Err(_) => panic!("timed out waiting for {what}; seen: {:#?}", self.seen),
            }
        }
    }

    /// Takes in the events that have arrived, without waiting.
    pub fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }

    /// Waits for a request to `uri` to arrive (one not returned before);
    /// its request id.
    pub fn wait_received(&mut self, uri: &str) -> String {
        let claimed = self.claimed.clone();
        let u = uri.to_owned();
        let event = self.wait_for(&format!("a request to {uri}"), move |e| {
            matches!(e, Event::Site(SiteEvent::RequestReceived { uri, request_id, .. })
                if *uri == u && !claimed.contains(request_id))
        });
        let Event::Site(SiteEvent::RequestReceived { request_id, .. }) = event else {
            unreachable!()
        };
        self.claimed.push(request_id.clone());
        request_id
    }

    /// Waits for a handler's note.
    pub fn wait_note(&mut self, note: &str) {
        let note = note.to_owned();
        self.wait_for(
            &note.clone(),
            move |e| matches!(e, Event::Note(n) if *n == note),
        );
    }

    /// Waits for the access-log entry of `request_id`.
    pub fn wait_processed(&mut self, request_id: &str) -> AccessLogEntry {
        let id = request_id.to_owned();
        match self.wait_for(&format!("the access log of {id}"), move |e| {
            matches!(e, Event::Site(SiteEvent::Processed(entry)) if entry.request_id == id)
        }) {
            Event::Site(SiteEvent::Processed(entry)) => entry,
            _ => unreachable!(),
        }
    }

    /// Waits for the disconnect of `request_id`'s client to be noticed.
    pub fn wait_disconnected(&mut self, request_id: &str) {
        let id = request_id.to_owned();
        self.wait_for(&format!("the disconnect of {id}"), move |e| {
            matches!(e, Event::Site(SiteEvent::ClientDisconnected { request_id }) if *request_id == id)
        });
    }

    /// Where in the events seen the first one matching `pred` is.
    pub fn position(&self, pred: impl Fn(&Event) -> bool) -> Option<usize> {
        self.seen.iter().position(pred)
    }

    /// Where a note is.
    pub fn note_at(&self, note: &str) -> Option<usize> {
        self.position(|e| matches!(e, Event::Note(n) if n == note))
    }

    /// The notes seen, in order.
    pub fn notes(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Note(n) => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether `request_id` has an access-log entry among the events seen.
    pub fn processed(&self, request_id: &str) -> bool {
        self.seen.iter().any(
            |e| matches!(e, Event::Site(SiteEvent::Processed(entry)) if entry.request_id == request_id),
        )
    }
}

/// Reads from `stream` into `buf` until it holds a complete response;
/// returns it and leaves what follows in `buf`.
pub fn read_response_into(stream: &mut TcpStream, buf: &mut Vec<u8>) -> FakeResponse {
    read_response_for("GET", stream, buf)
}

/// [`read_response_into`] for the answer to a `method` request.
pub fn read_response_for(method: &str, stream: &mut TcpStream, buf: &mut Vec<u8>) -> FakeResponse {
    loop {
        if let Some((response, used)) = parse_response_for(method, buf) {
            buf.drain(..used);
            if response.code == 100 {
                continue;
            }
            return response;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "the server closed the connection after {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads until the server closes the connection; what arrived.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!(
                "reading until close: {e}; got {:?}",
                String::from_utf8_lossy(&all)
            ),
        }
    }
}

/// Closes our side completely (the peer sees EOF).
pub fn hang_up(stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Both);
    drop(stream);
}
