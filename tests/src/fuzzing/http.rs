//! The HTTP server's fuzz harness: bytes sent to a [`SynapseSite`] as a
//! client would, over the in-memory [`FakeChannel`], and everything the
//! site wrote back checked.
//!
//! An input is a small header and the bytes of the connection ([`Input`],
//! [`decode`]): the first byte holds the flags (when the client
//! disconnects, whether the clock runs between sends, how many chunk sizes
//! follow), the next bytes the sizes of the first sends, and the rest is
//! the payload, sent in those chunks and then in one last send. Every byte
//! string is a valid input, so libFuzzer's mutations always reach the
//! parser.
//!
//! The site has four servlets ([`SERVLETS`]): `GET /ping` (plain JSON),
//! `POST /echo` (the request's JSON body back), `GET /sleep/{seconds}`
//! (`#[cancellable]`, awaits a clock sleep) and `GET
//! /rooms/{room_id}/messages` (path and query arguments, awaits a sleep it
//! does not let be cancelled). The limits are small ([`config`]) so that
//! the fuzzer reaches them.
//!
//! What [`check`] asserts, each a panic (a crash for libFuzzer, a failure
//! for a test):
//!
//! * **No panic escapes**, and none is caught on the way: a servlet never
//!   fails, so a `500` is a panic the resource caught.
//! * **Every byte written is a well-formed response**, parsed back by
//!   [`parse_response_for`] with nothing left over (`100 Continue` interim
//!   responses aside), and nothing is written once the site has closed the
//!   connection or after the client left.
//! * **A request that parses gets its servlet's answer, or 404/405**: the
//!   requests the site reports ([`SiteEvent::RequestReceived`]) are
//!   answered in order, each with the code and body its route calls for
//!   (computed here, independently of the router), each logged exactly
//!   once ([`SiteEvent::Processed`]) with the code sent. Only the last one
//!   may go unanswered, and only when the client left first (a
//!   `#[cancellable]` handler then ends with 499, the other runs on).
//! * **The requests received are the ones sent**: a strict reference
//!   parser written from the site's documented rules ([`reference()`]: one
//!   space in the request line, plain header lines, `Content-Length` or
//!   chunks without extensions) splits what the client sent into requests
//!   where it can; the site must receive those, in order, with the same
//!   method, target, version and body (as the servlets saw it), keep or
//!   close the connection as each asks, and refuse, or wait for more, where
//!   the reference does.
//! * **Garbage gets a 4xx and the connection closed**: a request the site
//!   refuses ([`SiteEvent::Rejected`]) gets `400 Bad Request` (malformed,
//!   headers over `max_header_size` or `max_headers`) or `413` with
//!   `M_TOO_LARGE` (a body over `max_request_body_size`), as the last
//!   thing written, and the site closes the connection. A first request
//!   line that is plainly not `METHOD /target HTTP/1.x`, or a head that
//!   does not end within `max_header_size` bytes, must get that `400`
//!   ([`first_request_is_malformed`]). A response saying `Connection:
//!   close` (HTTP/1.0, `Connection: close`) is the last one and the site
//!   closes the connection after it.
//! * **Nothing stalls**: once the clock has run out of timed calls, no
//!   request is left in flight and reading is not left paused.
//! * **No leak**: no logging context is left current (the sentinel is,
//!   after every send and clock step), no logcontext misuse is reported,
//!   and after dropping everything,
//!   [`Tracker::collect`](twisted_deferred::tracking::Tracker::collect)
//!   finds no Deferred alive. (The fuzz target also counts heap
//!   allocations; LeakSanitizer reports cycles.)

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use twisted_compat::http::{
    Codes, FakeChannel, FakeResponse, Json, JsonResource, ServletResult, SiteConfig, SiteEvent,
    SynapseRequest, SynapseSite, parse_response_for,
};
use twisted_compat::{Clock, cancellable, capture_logcontext_errors, current_context};
use twisted_deferred::tracking::Tracker;
use twisted_reactor::Clock as TestClock;

/// The most chunk sizes an input's header holds.
pub const MAX_SPLITS: usize = 7;
/// The most seconds of clock time a run may need before every timed call
/// has run (each sleep is at most 3 s, one request at a time).
const MAX_TICKS: usize = 100_000;

/// The routes the site serves, as `(method, pattern, servlet)`.
pub const SERVLETS: [(&str, &str, &str); 4] = [
    ("GET", "/ping", "PingServlet"),
    ("POST", "/echo", "EchoServlet"),
    ("GET", "/sleep/{seconds}", "SleepServlet"),
    ("GET", "/rooms/{room_id}/messages", "RoomMessagesServlet"),
];

/// The site's configuration: small limits, so that inputs reach them.
pub fn config() -> SiteConfig {
    let mut config = SiteConfig::new("fuzz", "hs");
    config.max_header_size = 1024;
    config.max_headers = 16;
    config.max_request_body_size = 512;
    config.eager_read_size = 256;
    config
}

/// When the client goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// Never (until the run is over and everything has been answered).
    Never,
    /// Right after the last send, before the clock runs.
    AfterSending,
    /// Half a second of clock time after the last send.
    MidHandler,
    /// Right after the first send; later sends go to a closed connection.
    AfterFirstSend,
}

/// A decoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// When the client disconnects.
    pub disconnect: Disconnect,
    /// Whether the clock advances one second after each send.
    pub tick: bool,
    /// The sizes of the first sends (at most [`MAX_SPLITS`]); the rest of
    /// the payload goes in one last send.
    pub splits: Vec<u8>,
    /// The bytes of the connection.
    pub payload: Vec<u8>,
}

/// Decodes an input: flags (bits 0–1 [`Disconnect`], bit 2 `tick`, bits
/// 3–5 the number of chunk sizes), the chunk sizes, then the payload. Every
/// byte string decodes; a missing byte reads as 0.
pub fn decode(data: &[u8]) -> Input {
    let flags = data.first().copied().unwrap_or(0);
    let disconnect = match flags & 3 {
        0 => Disconnect::Never,
        1 => Disconnect::AfterSending,
        2 => Disconnect::MidHandler,
        _ => Disconnect::AfterFirstSend,
    };
    let rest = data.get(1..).unwrap_or_default();
    let n = usize::from((flags >> 3) & 7).min(rest.len());
    Input {
        disconnect,
        tick: flags & 4 != 0,
        splits: rest[..n].to_vec(),
        payload: rest[n..].to_vec(),
    }
}

/// Encodes an input ([`decode`]'s inverse, for writing seeds).
///
/// # Panics
///
/// If `input` has more than [`MAX_SPLITS`] chunk sizes.
pub fn encode(input: &Input) -> Vec<u8> {
    assert!(input.splits.len() <= MAX_SPLITS, "too many chunk sizes");
    let disconnect = match input.disconnect {
        Disconnect::Never => 0,
        Disconnect::AfterSending => 1,
        Disconnect::MidHandler => 2,
        Disconnect::AfterFirstSend => 3,
    };
    let count = u8::try_from(input.splits.len()).unwrap_or(7);
    let mut out = vec![disconnect | (u8::from(input.tick) << 2) | (count << 3)];
    out.extend_from_slice(&input.splits);
    out.extend_from_slice(&input.payload);
    out
}

/// What a run saw, for tests that want to know what a corpus covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The codes of the responses written, in order (`100 Continue`
    /// left out).
    pub codes: Vec<u16>,
    /// The code of the refused request, if one was refused.
    pub rejected: Option<u16>,
    /// How many requests the site received.
    pub requests: usize,
    /// The codes logged for requests whose response was not sent (the
    /// client left first).
    pub unanswered: Vec<u16>,
}

// ---------------------------------------------------------------------------
// The site.

/// What the servlets received: each request's body, by request id.
type Bodies = Rc<RefCell<HashMap<String, Vec<u8>>>>;

/// The servlets that wait on the clock.
struct Servlets {
    clock: Clock,
    bodies: Bodies,
}

/// Records the body `request` brought.
fn record(bodies: &Bodies, request: &SynapseRequest) {
    bodies
        .borrow_mut()
        .insert(request.request_id(), request.content().to_vec());
}

/// The sleep a `/sleep/{seconds}` request asks for: 0 to 3 seconds.
fn sleep_seconds(arg: &str) -> f64 {
    arg.parse::<u8>().map_or(1.0, |n| f64::from(n % 4))
}

impl Servlets {
    #[cancellable]
    async fn on_get_sleep(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        record(&self.bodies, &request);
        let seconds = sleep_seconds(&request.path_arg("seconds").unwrap_or_default());
        self.clock.sleep(seconds).await?;
        Ok((200, Json::object([("slept", seconds)])))
    }

    async fn on_get_messages(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        record(&self.bodies, &request);
        self.clock.sleep(0.5).await?;
        Ok((
            200,
            Json::object([
                ("room_id", Json::from(request.path_arg("room_id"))),
                ("from", Json::from(request.query_arg("from"))),
            ]),
        ))
    }
}

/// The site of [`SERVLETS`] on `reactor`; its servlets record the bodies
/// they receive in `bodies`.
fn build_site(reactor: &TestClock, bodies: &Bodies) -> SynapseSite {
    let servlets = Rc::new(Servlets {
        clock: Clock::new(reactor.clone(), "hs"),
        bodies: bodies.clone(),
    });
    let resource = JsonResource::new();
    let b = bodies.clone();
    resource
        .register_paths(
            "GET",
            ["/ping"],
            move |request: SynapseRequest| {
                record(&b, &request);
                async { Ok((200, Json::object([("pong", true)]))) }
            },
            "PingServlet",
        )
        .expect("a valid pattern");
    let b = bodies.clone();
    resource
        .register_paths(
            "POST",
            ["/echo"],
            move |request: SynapseRequest| {
                record(&b, &request);
                async move { Ok((200, request.json_body()?)) }
            },
            "EchoServlet",
        )
        .expect("a valid pattern");
    let s = servlets.clone();
    resource
        .register_paths(
            "GET",
            ["/sleep/{seconds}"],
            move |request| s.clone().on_get_sleep(request),
            "SleepServlet",
        )
        .expect("a valid pattern");
    resource
        .register_paths(
            "GET",
            ["/rooms/{room_id}/messages"],
            move |request| servlets.clone().on_get_messages(request),
            "RoomMessagesServlet",
        )
        .expect("a valid pattern");
    SynapseSite::new(config(), resource, reactor.clone())
}

// ---------------------------------------------------------------------------
// The oracles.

/// What a request's route calls for, worked out from its method and path
/// without the site's router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Ping,
    Echo,
    Sleep,
    Messages,
    MethodNotAllowed,
    NotFound,
}

fn route(method: &str, uri: &str) -> Route {
    let path = uri.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let get = method == "GET" || method == "HEAD";
    let (found, allowed) = match segments.as_slice() {
        ["ping"] => (Route::Ping, get),
        ["echo"] => (Route::Echo, method == "POST"),
        ["sleep", _] => (Route::Sleep, get),
        ["rooms", _, "messages"] => (Route::Messages, get),
        _ => return Route::NotFound,
    };
    if allowed {
        found
    } else {
        Route::MethodNotAllowed
    }
}

/// The bytes `httparse` accepts in a request target.
fn is_target_byte(b: u8) -> bool {
    matches!(b, b'!'..=0x7e | 0x80..=0xff)
}

/// The bytes of an HTTP token (a method).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// How a request line (without its line ending) compares with `METHOD SP
/// /target SP HTTP/1.x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestLine {
    /// It is one.
    Fine,
    /// It is one, but its target is not a path (`*`, `http://…`): refused
    /// once the head is complete.
    NotAPath,
    /// It is not one: refused as soon as the line is there.
    Malformed,
}

fn request_line(line: &[u8]) -> RequestLine {
    let mut parts = line.splitn(3, |b| *b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return RequestLine::Malformed;
    };
    let well_formed = !method.is_empty()
        && method.iter().all(|b| is_token_byte(*b))
        && !target.is_empty()
        && target.iter().all(|b| is_target_byte(*b))
        && (version == b"HTTP/1.0" || version == b"HTTP/1.1");
    match (well_formed, target.first()) {
        (false, _) => RequestLine::Malformed,
        (true, Some(b'/')) => RequestLine::Fine,
        (true, _) => RequestLine::NotAPath,
    }
}

/// Whether the first request of `delivered` (everything the site received)
/// is one the site must refuse with `400`, judged without the site's
/// parser: after the empty lines a request may start with, a stray `\r`;
/// a complete first line that is not a request line; a complete head
/// whose target is not a path; or a head (up to its empty line) longer
/// than `max_header_size`, or no end of head within it. Anything else may be fine, or may be refused for reasons this does
/// not look for.
pub fn first_request_is_malformed(delivered: &[u8], max_header_size: usize) -> bool {
    let mut start = 0;
    loop {
        match delivered.get(start..) {
            Some([b'\r', b'\n', ..]) => start += 2,
            Some([b'\n', ..]) => start += 1,
            Some([b'\r', _, ..]) => return true,
            _ => break,
        }
    }
    let rest = &delivered[start..];
    let head_end = rest
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| at + 2)
        .into_iter()
        .chain(
            rest.windows(3)
                .position(|w| w == b"\n\r\n")
                .map(|at| at + 3),
        )
        .min()
        .map(|end| start + end);
    match head_end {
        Some(end) if end > max_header_size => return true,
        None if delivered.len() > max_header_size => return true,
        _ => {}
    }
    let Some(line_end) = rest.iter().position(|b| *b == b'\n') else {
        return false;
    };
    let line = &rest[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match request_line(line) {
        RequestLine::Fine => false,
        RequestLine::NotAPath => head_end.is_some(),
        RequestLine::Malformed => true,
    }
}

/// A request the reference parser found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The method.
    pub method: String,
    /// The request target.
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// Whether the connection stays open after its response.
    pub keep_alive: bool,
    /// The body, unframed.
    pub body: Vec<u8>,
}

/// How the bytes after the reference parser's requests end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Nothing is left, or the last request closes the connection (what
    /// follows is ignored).
    Complete,
    /// A request whose head is complete and whose body is not all there:
    /// neither received nor refused.
    Incomplete,
    /// The next request must be refused with this code.
    Refused(u16),
    /// The rest is outside the strict grammar: no claim.
    Unknown,
}

/// What the reference parser makes of a connection's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The requests, in order.
    pub requests: Vec<Expected>,
    /// What follows them.
    pub end: End,
}

/// Splits off one line: the line without its ending (`\r\n` or `\n`) and
/// what follows, or `None` if no `\n` is there.
fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|b| *b == b'\n')?;
    let line = &bytes[..end];
    Some((line.strip_suffix(b"\r").unwrap_or(line), &bytes[end + 1..]))
}

/// A header line of the strict grammar: `name:value`, the name a token,
/// the value printable ASCII, spaces and tabs (those around it are not
/// part of it).
fn strict_header(line: &[u8]) -> Option<(String, &[u8])> {
    let colon = line.iter().position(|b| *b == b':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !blank(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |at| at + 1);
    let value = &value[start..end];
    let well_formed = !name.is_empty()
        && name.iter().all(|b| is_token_byte(*b))
        && value.iter().all(|b| blank(b) || (0x21..=0x7e).contains(b));
    well_formed.then(|| (String::from_utf8_lossy(name).to_ascii_lowercase(), value))
}

/// Parses `bytes` as a sequence of requests in a strict subset of HTTP/1.1
/// (one space between the parts of the request line, strict header lines,
/// chunk sizes without extensions, no trailers), written from the site's
/// documented rules and not from its parser: the requests the site must
/// receive, and how what follows them must end. Outside the subset it
/// stops with [`End::Unknown`].
pub fn reference(bytes: &[u8], config: &SiteConfig) -> Reference {
    let mut requests = Vec::new();
    let mut rest = bytes;
    let end = loop {
        // The buffer (what earlier requests left, empty lines included) is
        // what the header limit counts.
        if first_request_is_malformed(rest, config.max_header_size) {
            break End::Refused(400);
        }
        while let Some(after) = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
        {
            rest = after;
        }
        if rest.is_empty() {
            break End::Complete;
        }
        let Some((line, mut after)) = split_line(rest) else {
            break End::Unknown;
        };
        if request_line(line) != RequestLine::Fine {
            break End::Unknown;
        }
        let mut parts = line.splitn(3, |b| *b == b' ');
        let (method, target, version) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let mut headers = Vec::new();
        let complete = loop {
            let Some((line, next)) = split_line(after) else {
                break false;
            };
            after = next;
            if line.is_empty() {
                break true;
            }
            match strict_header(line) {
                Some(header) => headers.push(header),
                None => break false,
            }
        };
        if !complete || std::str::from_utf8(target).is_err() {
            break End::Unknown;
        }
        if headers.len() > config.max_headers {
            break End::Refused(400);
        }
        let values = |name: &str| -> Vec<&[u8]> {
            headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .collect()
        };
        let lengths = values("content-length");
        let encodings: Vec<&[u8]> = values("transfer-encoding")
            .into_iter()
            .filter(|v| !v.eq_ignore_ascii_case(b"identity"))
            .collect();
        let body = match (lengths.as_slice(), encodings.as_slice()) {
            ([], []) => Ok(Vec::new()),
            ([], [te]) if te.eq_ignore_ascii_case(b"chunked") => {
                unchunk(&mut after, config.max_request_body_size)
            }
            ([length], []) if !length.is_empty() && length.iter().all(u8::is_ascii_digit) => {
                let n = std::str::from_utf8(length)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(usize::MAX);
                if n > config.max_request_body_size {
                    Err(End::Refused(413))
                } else if n > after.len() {
                    Err(End::Incomplete)
                } else {
                    let (body, next) = after.split_at(n);
                    after = next;
                    Ok(body.to_vec())
                }
            }
            _ => Err(End::Refused(400)),
        };
        let body = match body {
            Ok(body) => body,
            Err(end) => break end,
        };
        let keep_alive = version == b"HTTP/1.1"
            && !values("connection").first().is_some_and(|v| {
                v.split(|b| *b == b',' || b.is_ascii_whitespace())
                    .any(|t| t.eq_ignore_ascii_case(b"close"))
            });
        requests.push(Expected {
            method: String::from_utf8_lossy(method).into_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
            version: String::from_utf8_lossy(version).into_owned(),
            keep_alive,
            body,
        });
        rest = after;
        if !keep_alive {
            break End::Complete;
        }
    };
    Reference { requests, end }
}

/// Decodes a chunked body at the start of `bytes` (strictly: sizes of at
/// most 15 hex digits, no extensions, no trailers), moving `bytes` past
/// it; `Err` with how it ends otherwise.
fn unchunk(bytes: &mut &[u8], limit: usize) -> Result<Vec<u8>, End> {
    let mut body = Vec::new();
    loop {
        let Some((line, after)) = split_line(bytes) else {
            let partial = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            let hex = partial.len() <= 15 && partial.iter().all(u8::is_ascii_hexdigit);
            return Err(if hex { End::Incomplete } else { End::Unknown });
        };
        if line.is_empty()
            || line.len() > 15
            || !line.iter().all(u8::is_ascii_hexdigit)
            || !bytes.starts_with(line)
            || bytes.get(line.len()) != Some(&b'\r')
        {
            return Err(End::Unknown);
        }
        let size = std::str::from_utf8(line)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or(End::Unknown)?;
        *bytes = after;
        if size == 0 {
            return match *bytes {
                [b'\r', b'\n', ..] => {
                    *bytes = &bytes[2..];
                    Ok(body)
                }
                [] | [b'\r'] => Err(End::Incomplete),
                _ => Err(End::Unknown),
            };
        }
        if size > limit - body.len() {
            return Err(End::Refused(413));
        }
        if bytes.len() < size {
            return Err(End::Incomplete);
        }
        body.extend_from_slice(&bytes[..size]);
        *bytes = &bytes[size..];
        match *bytes {
            [b'\r', b'\n', ..] => *bytes = &bytes[2..],
            [] | [_] => return Err(End::Incomplete),
            _ => return Err(End::Refused(400)),
        }
    }
}

// ---------------------------------------------------------------------------
// The run.

/// A request the site received.
#[derive(Debug, Clone)]
struct Received {
    request_id: String,
    method: String,
    uri: String,
}

/// The connection and what the harness watches of it.
struct Connection {
    reactor: TestClock,
    channel: FakeChannel,
    events: Rc<RefCell<Vec<SiteEvent>>>,
    /// How much had been written when the site closed the connection or
    /// the client left.
    written_at_close: Cell<Option<usize>>,
    disconnected: Cell<bool>,
}

impl Connection {
    /// Checks what must hold between any two steps.
    fn step_done(&self, what: &str) {
        assert!(
            current_context().is_sentinel(),
            "a logging context was left current after {what}: {:?}",
            current_context()
        );
        let written = self.channel.written().len();
        match self.written_at_close.get() {
            Some(at) => assert_eq!(
                written, at,
                "bytes written after the connection closed (after {what})"
            ),
            None if self.channel.server_closed() || self.disconnected.get() => {
                self.written_at_close.set(Some(written));
            }
            None => {}
        }
        assert!(
            !self.channel.aborted(),
            "the connection was aborted (after {what})"
        );
    }

    fn send(&self, data: &[u8]) {
        self.channel.send(data);
        self.step_done("a send");
    }

    fn disconnect(&self) {
        if !self.disconnected.replace(true) {
            self.channel.disconnect();
            self.step_done("the disconnect");
        }
    }

    fn advance(&self, seconds: f64) {
        self.reactor
            .advance(seconds)
            .unwrap_or_else(|f| panic!("a timed call failed: {f}"));
        self.step_done("a clock step");
    }

    /// Runs the clock until no timed call is left.
    fn drive(&self) {
        for _ in 0..MAX_TICKS {
            if self.reactor.delayed_call_count() == 0 {
                return;
            }
            self.advance(1.0);
        }
        panic!("timed calls still pending after {MAX_TICKS} s of clock time");
    }

    fn received(&self) -> Vec<Received> {
        self.events
            .borrow()
            .iter()
            .filter_map(|e| match e {
                SiteEvent::RequestReceived {
                    request_id,
                    method,
                    uri,
                } => Some(Received {
                    request_id: request_id.clone(),
                    method: method.clone(),
                    uri: uri.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    fn rejections(&self) -> Vec<(u16, String)> {
        self.events
            .borrow()
            .iter()
            .filter_map(|e| match e {
                SiteEvent::Rejected { code, reason, .. } => Some((*code, reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// The responses written, parsed back: request `i`'s is parsed as the
    /// answer to its method; `100 Continue` is left out.
    fn responses(&self, received: &[Received]) -> Vec<FakeResponse> {
        let written = self.channel.written();
        let mut rest = written.as_slice();
        let mut responses = Vec::new();
        while !rest.is_empty() {
            let method = received
                .get(responses.len())
                .map_or("GET", |r| r.method.as_str());
            let Some((response, used)) = parse_response_for(method, rest) else {
                panic!(
                    "bytes written that are not a complete response: {:?}\nafter: {responses:?}",
                    String::from_utf8_lossy(rest)
                );
            };
            assert!(used > 0, "an empty response");
            rest = &rest[used..];
            if response.code != 100 {
                responses.push(response);
            }
        }
        responses
    }
}

/// Runs one input through a fresh site and checks everything the module
/// documentation lists.
///
/// # Panics
///
/// When a check fails.
pub fn check(data: &[u8]) -> Report {
    let input = decode(data);
    let tracker = Tracker::start();
    let (report, errors) = capture_logcontext_errors(|| run(&input));
    assert!(errors.is_empty(), "logcontext misuse reported: {errors:?}");
    let alive = tracker.collect();
    assert_eq!(
        alive, 0,
        "{alive} Deferreds still alive once the site, the connection and the clock were dropped"
    );
    assert!(
        current_context().is_sentinel(),
        "a logging context was left current"
    );
    report
}

fn run(input: &Input) -> Report {
    let reactor = TestClock::new();
    let bodies = Bodies::default();
    let site = build_site(&reactor, &bodies);
    let events: Rc<RefCell<Vec<SiteEvent>>> = Rc::default();
    let sink = events.clone();
    site.add_observer(move |e| sink.borrow_mut().push(e.clone()));
    let conn = Connection {
        reactor,
        channel: FakeChannel::new(&site),
        events,
        written_at_close: Cell::new(None),
        disconnected: Cell::new(false),
    };

    // The client's side: the sends, the clock, the disconnect.
    let mut rest = input.payload.as_slice();
    let mut delivered = 0;
    let mut chunks: Vec<&[u8]> = Vec::new();
    for size in &input.splits {
        let (chunk, after) = rest.split_at(usize::from(*size).min(rest.len()));
        chunks.push(chunk);
        rest = after;
    }
    if !rest.is_empty() || chunks.is_empty() {
        chunks.push(rest);
    }
    for (i, chunk) in chunks.iter().enumerate() {
        if !conn.disconnected.get() {
            delivered += chunk.len();
        }
        conn.send(chunk);
        if input.tick {
            conn.advance(1.0);
        }
        if i == 0 && input.disconnect == Disconnect::AfterFirstSend {
            conn.disconnect();
        }
    }
    match input.disconnect {
        Disconnect::AfterSending => conn.disconnect(),
        Disconnect::MidHandler => {
            conn.advance(0.5);
            conn.disconnect();
        }
        Disconnect::Never | Disconnect::AfterFirstSend => {}
    }
    conn.drive();
    let left_early = conn.disconnected.get();
    if !left_early {
        let channel = conn.channel.channel();
        assert!(
            channel.current_request().is_none(),
            "a request still in flight once the clock ran out: {:?}",
            channel.current_request()
        );
        assert!(
            conn.channel.server_closed() || !conn.channel.reading_paused(),
            "reading left paused on an idle connection"
        );
    }
    let received = conn.received();
    let responses = conn.responses(&received);
    let rejections = conn.rejections();
    assert!(rejections.len() <= 1, "refused twice: {rejections:?}");
    let rejected = rejections.first().map(|(code, _)| *code);

    // The end of the connection, then every request must have been logged.
    conn.disconnect();
    conn.drive();
    let mut processed = HashMap::new();
    for event in conn.events.borrow().iter() {
        if let SiteEvent::Processed(entry) = event {
            let previous = processed.insert(entry.request_id.clone(), entry.clone());
            assert!(previous.is_none(), "logged twice: {entry:?}");
        }
    }
    assert_eq!(
        processed.len(),
        received.len(),
        "requests received {received:?}, logged {processed:?}"
    );

    // Each request's answer.
    let mut unanswered = Vec::new();
    for (i, request) in received.iter().enumerate() {
        let entry = &processed[&request.request_id];
        let route = route(&request.method, &request.uri);
        let allowed: &[u16] = match route {
            Route::Ping | Route::Messages => &[200],
            Route::Echo => &[200, 400],
            Route::Sleep if left_early => &[200, 499],
            Route::Sleep => &[200],
            Route::MethodNotAllowed => &[405],
            Route::NotFound => &[404],
        };
        assert!(
            allowed.contains(&entry.code),
            "{request:?} ({route:?}) logged with {}, expected one of {allowed:?}",
            entry.code
        );
        let Some(response) = responses.get(i) else {
            assert!(
                left_early && i + 1 == received.len() && !entry.finished,
                "{request:?} got no response: {entry:?}, responses {responses:?}"
            );
            unanswered.push(entry.code);
            continue;
        };
        assert_eq!(
            response.code, entry.code,
            "{request:?}: the response sent is not the one logged"
        );
        assert!(entry.finished, "{request:?} answered but logged as not");
        check_body(request, route, response);
        if entry.protocol == "HTTP/1.0" {
            assert_eq!(
                response.header("connection"),
                Some("close"),
                "an HTTP/1.0 response that keeps the connection"
            );
        }
        if response.header("connection") == Some("close") {
            assert!(
                i + 1 == responses.len() && conn.channel.server_closed(),
                "{request:?}: the connection goes on after Connection: close"
            );
        }
    }

    // The refused request's answer.
    match rejections.first() {
        Some((code, reason)) => {
            assert_eq!(
                responses.len(),
                received.len() + 1,
                "refused with {code} ({reason}) but responses are {responses:?}"
            );
            let response = &responses[received.len()];
            assert_eq!(response.code, *code, "refused with another code");
            assert!(conn.channel.server_closed(), "not closed after {code}");
            match code {
                400 => assert!(response.body.is_empty(), "400 with a body"),
                413 => {
                    let body = response.json().expect("413 with a JSON body");
                    assert_eq!(
                        body.get("errcode").and_then(Json::as_str),
                        Some(Codes::TOO_LARGE)
                    );
                    assert_eq!(response.header("connection"), Some("close"));
                }
                _ => panic!("refused with {code} ({reason})"),
            }
        }
        None => assert_eq!(
            responses.len(),
            received.len() - unanswered.len(),
            "responses that answer no request: {responses:?}"
        ),
    }
    if conn.channel.server_closed() {
        let last = responses.last().expect("closed without a response");
        assert!(
            rejected.is_some() || last.header("connection") == Some("close"),
            "closed after a response that did not say so: {last:?}"
        );
    }

    // The requests, judged without the site's parser.
    let sent = &input.payload[..delivered];
    let expected = reference(sent, &config());
    let rejected_or_not = |ok: bool, what: &str| {
        assert!(
            ok,
            "{what}: the site received {received:?} and refused {rejected:?}; the reference \
             parser expects {expected:?}"
        );
    };
    for (request, wanted) in received.iter().zip(&expected.requests) {
        let path = |uri: &str| uri.split('?').next().unwrap_or_default().to_owned();
        let same_target = request.uri == wanted.target
            || (path(&request.uri) == path(&wanted.target)
                && (wanted.target.contains("token=") || wanted.target.contains("secret=")));
        rejected_or_not(
            request.method == wanted.method && same_target,
            "another request was received",
        );
        if let Some(body) = bodies.borrow().get(&request.request_id) {
            rejected_or_not(body == &wanted.body, "another body was received");
        }
        let entry = &processed[&request.request_id];
        rejected_or_not(
            entry.protocol == wanted.version,
            "another version was logged",
        );
        if let Some(response) = responses
            .iter()
            .zip(&received)
            .find_map(|(response, r)| (r.request_id == request.request_id).then_some(response))
        {
            rejected_or_not(
                (response.header("connection") == Some("close")) != wanted.keep_alive,
                "the connection is kept or closed against the request's wishes",
            );
        }
    }
    let n = expected.requests.len();
    match expected.end {
        End::Unknown => rejected_or_not(left_early || received.len() >= n, "requests went missing"),
        End::Complete | End::Incomplete => rejected_or_not(
            (left_early || received.len() == n) && received.len() <= n && rejected.is_none(),
            "not the requests expected",
        ),
        End::Refused(code) => rejected_or_not(
            if left_early && received.len() < n {
                rejected.is_none()
            } else {
                received.len() == n && (rejected == Some(code) || left_early && rejected.is_none())
            },
            "not refused as expected",
        ),
    }

    Report {
        codes: responses.iter().map(|r| r.code).collect(),
        rejected,
        requests: received.len(),
        unanswered,
    }
}

/// Checks a response's body against its route.
fn check_body(request: &Received, route: Route, response: &FakeResponse) {
    if request.method == "HEAD" {
        assert!(response.body.is_empty(), "a body in answer to HEAD");
        return;
    }
    let body = response.json().unwrap_or_else(|| {
        panic!(
            "{request:?}: the body is not JSON: {:?}",
            String::from_utf8_lossy(&response.body)
        )
    });
    let errcode = body.get("errcode").and_then(Json::as_str);
    match (route, response.code) {
        (Route::Ping, _) => assert_eq!(body, Json::object([("pong", true)])),
        (Route::Echo, 200) => assert!(matches!(body, Json::Object(_)), "echoed {body:?}"),
        (Route::Echo, _) => assert!(
            errcode == Some(Codes::NOT_JSON) || errcode == Some(Codes::BAD_JSON),
            "{request:?}: {body:?}"
        ),
        (Route::Sleep, _) => assert!(body.get("slept").is_some(), "{body:?}"),
        (Route::Messages, _) => assert!(
            body.get("room_id").and_then(Json::as_str).is_some(),
            "{body:?}"
        ),
        (Route::MethodNotAllowed | Route::NotFound, _) => {
            assert_eq!(errcode, Some(Codes::UNRECOGNIZED), "{body:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_round_trip_through_encode() {
        let input = Input {
            disconnect: Disconnect::MidHandler,
            tick: true,
            splits: vec![3, 0, 200],
            payload: b"GET /ping HTTP/1.1\r\n\r\n".to_vec(),
        };
        assert_eq!(decode(&encode(&input)), input);
        assert_eq!(decode(&[]).payload, b"");
    }

    #[test]
    fn routes_are_worked_out_like_the_router() {
        assert_eq!(route("GET", "/ping?x=1"), Route::Ping);
        assert_eq!(route("HEAD", "/sleep/2"), Route::Sleep);
        assert_eq!(route("POST", "/ping"), Route::MethodNotAllowed);
        assert_eq!(route("GET", "/ping/"), Route::NotFound);
        assert_eq!(route("GET", "/rooms//messages"), Route::Messages);
    }

    #[test]
    fn plainly_malformed_first_requests_are_recognised() {
        assert!(first_request_is_malformed(b"hello\r\n\r\n", 1024));
        assert!(first_request_is_malformed(b"\r\rGET / HTTP/1.1", 1024));
        assert!(first_request_is_malformed(b"GET x HTTP/1.1\r\n\r\n", 1024));
        assert!(!first_request_is_malformed(b"GET x HTTP/1.1\r\n", 1024));
        assert!(first_request_is_malformed(&[b'a'; 2000], 1024));
        assert!(!first_request_is_malformed(b"\r\nGET / HTTP/1.1\n\n", 1024));
        assert!(!first_request_is_malformed(b"GET / HTTP/1.", 1024));
    }
    #[test]
    fn the_reference_parser_frames_pipelined_requests() {
        let r = reference(
            b"GET /a HTTP/1.1\r\n\r\n\r\nPOST /b?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}\
              POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n\
              GET /d HTTP/1.0\r\n\r\nGARBAGE",
            &config(),
        );
        let seen: Vec<(&str, &str, &[u8])> = r
            .requests
            .iter()
            .map(|e| (e.method.as_str(), e.target.as_str(), e.body.as_slice()))
            .collect();
        assert_eq!(
            seen,
            [
                ("GET", "/a", &b""[..]),
                ("POST", "/b?x=1", b"{}"),
                ("POST", "/c", b"abc"),
                ("GET", "/d", b""),
            ]
        );
        assert_eq!(r.end, End::Complete);
    }

    #[test]
    fn the_reference_parser_knows_what_must_be_refused() {
        let end = |bytes: &[u8]| reference(bytes, &config()).end;
        let big = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 513);
        assert_eq!(end(big.as_bytes()), End::Refused(413));
        assert_eq!(
            end(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n201\r\n"),
            End::Refused(413)
        );
        assert_eq!(
            end(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            End::Refused(400)
        );
        assert_eq!(
            end(b"GET / HTTP/1.1\r\n\r\nno request\n"),
            End::Refused(400)
        );
        assert_eq!(
            end(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"),
            End::Incomplete
        );
        assert_eq!(end(b"GET / HTTP/1.1\r\nX : y\r\n\r\n"), End::Unknown);
        assert_eq!(
            end(b"POST / HTTP/1.1\r\nContent-Length:\t\r\n\r\n"),
            End::Refused(400)
        );
    }
}
