//! Requests in memory: [`FakeChannel`] and [`make_request`] (Synapse's
//! `tests.server.FakeChannel` and `make_request`). A test makes a request
//! on a site with no socket, runs the clock, and disconnects the client at
//! the moment it chooses; the site, resource, request and logging contexts
//! are the real ones, and the bytes go through the real parser.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use twisted_deferred::Failure;
use twisted_reactor::error::ConnectionDone;

use super::json::Json;
use super::request::SynapseRequest;
use super::site::{HttpChannel, HttpTransport, SynapseSite};

#[derive(Default)]
struct FakeState {
    written: Vec<u8>,
    lose_connection: bool,
    aborted: bool,
    paused: bool,
}

/// The in-memory transport behind a [`FakeChannel`].
struct FakeTransport {
    state: RefCell<FakeState>,
    peer: String,
}

impl HttpTransport for FakeTransport {
    fn write(&self, data: &[u8]) {
        let mut state = self.state.borrow_mut();
        if !state.aborted {
            state.written.extend_from_slice(data);
        }
    }

    fn lose_connection(&self) {
        self.state.borrow_mut().lose_connection = true;
    }

    fn abort_connection(&self) {
        self.state.borrow_mut().aborted = true;
    }

    fn pause_producing(&self) {
        self.state.borrow_mut().paused = true;
    }

    fn resume_producing(&self) {
        self.state.borrow_mut().paused = false;
    }

    fn peer_ip(&self) -> String {
        self.peer.clone()
    }
}

/// A client connection in memory (Synapse's test `FakeChannel`): what the
/// test sends goes to a real [`HttpChannel`] of the site; what the site
/// writes is kept and parsed back into responses.
///
/// The connection never closes by itself: when the site closes it
/// (HTTP/1.0, `Connection: close`, a refused request),
/// [`server_closed`](FakeChannel::server_closed) says so, and
/// [`disconnect`](FakeChannel::disconnect) is how the client goes away.
///
/// ```
/// use twisted_compat::http::*;
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
/// let channel = FakeChannel::new(&site);
/// channel.send(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");  // two requests, pipelined
/// assert_eq!(channel.responses().len(), 2);
/// assert!(!channel.server_closed());                                 // kept alive
/// ```
pub struct FakeChannel {
    channel: HttpChannel,
    transport: Rc<FakeTransport>,
}

impl fmt::Debug for FakeChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeChannel")
            .field("channel", &self.channel)
            .field("written", &self.transport.state.borrow().written.len())
            .finish()
    }
}

impl FakeChannel {
    /// A new connection to `site` from `127.0.0.1`, with nothing sent yet.
    ///
    /// See [`FakeChannel`] for an example.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = FakeChannel::new(&site);
    /// assert!(channel.written().is_empty());
    /// ```
    pub fn new(site: &SynapseSite) -> FakeChannel {
        let transport = Rc::new(FakeTransport {
            state: RefCell::new(FakeState::default()),
            peer: "127.0.0.1".to_owned(),
        });
        let channel = HttpChannel::new(site);
        channel.connection_made(transport.clone());
        FakeChannel { channel, transport }
    }

    /// Sends bytes to the site, as the client (`dataReceived`).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = FakeChannel::new(&site);
    /// channel.send(b"not http\r\n\r\n");
    /// assert_eq!(channel.code(), Some(400));
    /// assert!(channel.server_closed());
    /// ```
    pub fn send(&self, data: &[u8]) {
        self.channel.data_received(data);
    }

    /// The client goes away: `connectionLost(ConnectionDone)`. A
    /// cancellable handler is cancelled right there (Synapse's
    /// `disconnect_and_assert`):
    ///
    /// ```
    /// use twisted_compat::Clock;
    /// use twisted_compat::http::*;
    ///
    /// let reactor = twisted_reactor::Clock::new();
    /// let clock = Clock::new(reactor.clone(), "hs");
    /// let resource = JsonResource::new();
    /// let c = clock.clone();
    /// resource.register_paths("GET", ["/slow"], move |_request| {
    ///     let c = c.clone();
    ///     twisted_compat::Cancellable::new(async move {
    ///         c.sleep(10.0).await?;                                  // await self.clock.sleep(10)
    ///         Ok((200, Json::Null))
    ///     })
    /// }, "SlowServlet").unwrap();
    /// let site = SynapseSite::new(SiteConfig::new("client", "hs"), resource, reactor.clone());
    ///
    /// // channel = make_request(self.reactor, site, "GET", "/slow", await_result=False)
    /// let channel = make_request(&site, "GET", "/slow", b"");
    /// reactor.advance(1.0).unwrap();
    /// assert!(!channel.is_finished());
    /// channel.disconnect();                                          // channel.transport.connectionLost(...)
    /// let request = channel.request().unwrap();
    /// assert_eq!(request.code(), 499);                               // cancelled at once
    /// assert!(!channel.is_finished());                               // and nothing was written
    /// ```
    pub fn disconnect(&self) {
        self.disconnect_with(Failure::new(ConnectionDone));
    }

    /// The client goes away with `reason` (`ConnectionLost`, …).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// use twisted_compat::Failure;
    /// use twisted_reactor::error::ConnectionLost;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = FakeChannel::new(&site);
    /// channel.disconnect_with(Failure::new(ConnectionLost::new()));   // a reset
    /// ```
    pub fn disconnect_with(&self, reason: Failure) {
        self.channel.connection_lost(reason);
    }

    /// The site's side of the connection.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = FakeChannel::new(&site);
    /// assert!(channel.channel().current_request().is_none());
    /// ```
    pub fn channel(&self) -> &HttpChannel {
        &self.channel
    }

    /// The request that arrived last (`channel.request`).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/x", b"");
    /// assert_eq!(channel.request().unwrap().path(), "/x");
    /// ```
    pub fn request(&self) -> Option<SynapseRequest> {
        self.channel.last_request()
    }

    /// Every byte the site wrote.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/x", b"");
    /// assert!(channel.written().starts_with(b"HTTP/1.1 404 "));
    /// ```
    pub fn written(&self) -> Vec<u8> {
        self.transport.state.borrow().written.clone()
    }

    /// The complete responses written so far, in order (interim `100
    /// Continue` responses left out). The answer to a `HEAD` request (no
    /// body, whatever its `Content-Length`) is recognised when it is the
    /// last one written.
    ///
    /// See [`FakeChannel`] for an example.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/x", b"");
    /// assert_eq!(channel.responses()[0].code, 404);
    /// ```
    pub fn responses(&self) -> Vec<FakeResponse> {
        let written = self.written();
        let mut rest = written.as_slice();
        let mut responses = Vec::new();
        let last_is_head = self.request().is_some_and(|r| r.method() == "HEAD");
        loop {
            let parsed = parse_response(rest)
                .or_else(|| last_is_head.then(|| parse_head_response(rest)).flatten());
            let Some((response, used)) = parsed else {
                break;
            };
            rest = &rest[used..];
            if response.code != 100 {
                responses.push(response);
            }
        }
        responses
    }

    /// The last complete response.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/x", b"");
    /// assert_eq!(channel.response().unwrap().reason, "Not Found");
    /// ```
    pub fn response(&self) -> Option<FakeResponse> {
        self.responses().pop()
    }

    /// `channel.is_finished()`: a complete response has been written.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert!(make_request(&site, "GET", "/x", b"").is_finished());
    /// ```
    pub fn is_finished(&self) -> bool {
        self.response().is_some()
    }

    /// `channel.code`: the last response's status.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert_eq!(make_request(&site, "GET", "/x", b"").code(), Some(404));
    /// ```
    pub fn code(&self) -> Option<u16> {
        self.response().map(|r| r.code)
    }

    /// `channel.json_body`: the last response's body as JSON.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let body = make_request(&site, "GET", "/x", b"").json_body().unwrap();
    /// assert_eq!(body.get("errcode").unwrap().as_str(), Some("M_UNRECOGNIZED"));
    /// ```
    pub fn json_body(&self) -> Option<Json> {
        self.response().and_then(|r| r.json())
    }

    /// Whether the site closed the connection (`loseConnection`).
    ///
    /// See [`FakeChannel::send`] for an example.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = FakeChannel::new(&site);
    /// channel.send(b"GET /x HTTP/1.0\r\n\r\n");                      // HTTP/1.0: one response, then close
    /// assert!(channel.server_closed());
    /// ```
    pub fn server_closed(&self) -> bool {
        self.transport.state.borrow().lose_connection
    }

    /// Whether the site aborted the connection (`abortConnection`).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert!(!make_request(&site, "GET", "/x", b"").aborted());
    /// ```
    pub fn aborted(&self) -> bool {
        self.transport.state.borrow().aborted
    }

    /// Whether the site stopped reading (too much pipelined data buffered).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert!(!FakeChannel::new(&site).reading_paused());
    /// ```
    pub fn reading_paused(&self) -> bool {
        self.transport.state.borrow().paused
    }

    /// `channel.await_result(timeout)`: advances `clock` by 0.1 s at a time
    /// until a response is complete, or fails after `timeout` seconds of
    /// clock time.
    ///
    /// ```
    /// use twisted_compat::{Clock, Failure};
    /// use twisted_compat::http::*;
    /// let reactor = twisted_reactor::Clock::new();
    /// let clock = Clock::new(reactor.clone(), "hs");
    /// let resource = JsonResource::new();
    /// resource.register_paths("GET", ["/nap"], move |_r| {
    ///     let c = clock.clone();
    ///     async move { c.sleep(1.0).await?; Ok((200, Json::Null)) }
    /// }, "Nap").unwrap();
    /// let site = SynapseSite::new(SiteConfig::new("client", "hs"), resource, reactor.clone());
    /// let channel = make_request(&site, "GET", "/nap", b"");
    /// channel.await_result(&reactor, 10.0).unwrap();
    /// assert_eq!(channel.code(), Some(200));
    /// ```
    pub fn await_result(
        &self,
        clock: &twisted_reactor::Clock,
        timeout: f64,
    ) -> Result<(), AwaitResultTimeout> {
        let start = clock.seconds();
        while !self.is_finished() {
            if clock.seconds() - start >= timeout {
                return Err(AwaitResultTimeout { timeout });
            }
            // A timed call that fails is the call's problem, not the wait's.
            let _ = clock.advance(0.1);
        }
        Ok(())
    }
}

/// [`FakeChannel::await_result`] ran out of time.
///
/// ```
/// use twisted_compat::http::AwaitResultTimeout;
/// assert_eq!(AwaitResultTimeout { timeout: 1.0 }.to_string(), "Timed out waiting for request (1s)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AwaitResultTimeout {
    /// The timeout, in seconds.
    pub timeout: f64,
}

impl fmt::Display for AwaitResultTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timed out waiting for request ({}s)", self.timeout)
    }
}

impl std::error::Error for AwaitResultTimeout {}

/// `make_request(reactor, site, method, path, content)`: connects a
/// [`FakeChannel`] to `site` and sends one HTTP/1.1 request (with
/// `Host` and `Content-Length`). The handler starts at once and runs until
/// it first waits; run the clock to let it go on
/// ([`FakeChannel::await_result`]).
///
/// ```
/// use twisted_compat::http::*;
/// let resource = JsonResource::new();
/// resource.register_paths("POST", ["/echo"], |request: SynapseRequest| async move {
///     Ok((200, request.json_body()?))
/// }, "Echo").unwrap();
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), resource, twisted_reactor::Clock::new());
/// let channel = make_request(&site, "POST", "/echo", br#"{"a":1}"#);
/// assert_eq!(channel.json_body().unwrap(), Json::object([("a", 1)]));
/// ```
pub fn make_request(site: &SynapseSite, method: &str, path: &str, content: &[u8]) -> FakeChannel {
    let channel = FakeChannel::new(site);
    let mut raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
        site.config().server_name,
        content.len()
    )
    .into_bytes();
    raw.extend_from_slice(content);
    channel.send(&raw);
    channel
}

/// A response, parsed back from bytes.
///
/// ```
/// use twisted_compat::http::parse_response;
/// let (response, used) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}rest").unwrap();
/// assert_eq!((response.code, response.body.as_slice(), used), (200, &b"{}"[..], 40));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeResponse {
    /// The status code.
    pub code: u16,
    /// The reason phrase.
    pub reason: String,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl FakeResponse {
    /// The first value of a header (case-insensitive).
    ///
    /// ```
    /// use twisted_compat::http::parse_response;
    /// let (r, _) = parse_response(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n").unwrap();
    /// assert_eq!(r.header("x-a"), Some("1"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is.
    ///
    /// ```
    /// use twisted_compat::http::{parse_response, Json};
    /// let (r, _) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ntrue").unwrap();
    /// assert_eq!(r.json(), Some(Json::Bool(true)));
    /// ```
    pub fn json(&self) -> Option<Json> {
        std::str::from_utf8(&self.body)
            .ok()
            .and_then(|t| Json::parse(t).ok())
    }
}

/// Parses one complete response at the start of `bytes`: the response and
/// how many bytes it took, or `None` if it is not all there. Without
/// `Content-Length`, the body is everything that follows (it ends when the
/// connection closes).
///
/// See [`FakeResponse`] for an example.
///
/// ```
/// use twisted_compat::http::parse_response;
/// assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").is_none());
/// let (bad, _) = parse_response(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
/// assert_eq!(bad.code, 400);
/// ```
pub fn parse_response(bytes: &[u8]) -> Option<(FakeResponse, usize)> {
    parse_one(bytes, false)
}

/// [`parse_response`] for the answer to a `method` request: the answer to
/// `HEAD` has no body, whatever its `Content-Length` says.
///
/// ```
/// use twisted_compat::http::parse_response_for;
/// let head = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
/// assert_eq!(parse_response_for("HEAD", head).unwrap().1, head.len());
/// assert!(parse_response_for("GET", head).is_none());
/// ```
pub fn parse_response_for(method: &str, bytes: &[u8]) -> Option<(FakeResponse, usize)> {
    parse_one(bytes, method == "HEAD")
}

/// A response to `HEAD`: the head alone.
fn parse_head_response(bytes: &[u8]) -> Option<(FakeResponse, usize)> {
    parse_one(bytes, true)
}

fn parse_one(bytes: &[u8], head_only: bool) -> Option<(FakeResponse, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok());
    let code = response.code?;
    let reason = response.reason.unwrap_or_default().to_owned();
    let body_len = match length {
        _ if head_only => 0,
        Some(n) if code != 100 => n,
        Some(_) | None if code == 100 || code == 204 || code == 304 => 0,
        _ => bytes.len() - head_len,
    };
    let end = head_len.checked_add(body_len)?;
    let body = bytes.get(head_len..end)?.to_vec();
    Some((
        FakeResponse {
            code,
            reason,
            headers,
            body,
        },
        end,
    ))
}
