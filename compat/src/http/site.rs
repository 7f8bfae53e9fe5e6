//! [`SynapseSite`] (what listens: configuration, access log, events) and
//! [`HttpChannel`] (one connection's HTTP/1.1: Twisted's `HTTPChannel`),
//! over any [`HttpTransport`]: the reactor's TCP connections
//! ([`HttpProtocol`]) or the in-memory one of
//! [`FakeChannel`](super::FakeChannel).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};

use twisted_deferred::Failure;
use twisted_deferred::time::ReactorTime;
use twisted_reactor::error::CannotListenError;
use twisted_reactor::{Factory, Port, Protocol, Reactor, TcpTransport};

use crate::logcontext::PreserveLoggingContext;

use super::json::Json;
use super::parser::{Limits, ParseError, RequestParser, header_value};
use super::request::{SynapseRequest, reason_phrase};
use super::resource::{Codes, JsonResource};

/// A site's settings: Synapse's `SynapseSite` arguments and Twisted's
/// `HTTPChannel` limits.
///
/// ```
/// use twisted_compat::http::SiteConfig;
/// let mut config = SiteConfig::new("client", "example.com");   // site_tag, server_name
/// config.max_request_body_size = 64 * 1024;
/// assert_eq!(config.max_header_size, 16384);                   // HTTPChannel.totalHeadersSize
/// ```
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// `site_tag`: names the listener in logs (`synapse.access.http.<tag>`).
    pub site_tag: String,
    /// The server name the request contexts carry.
    pub server_name: String,
    /// The `Server` header (`server_version_string`).
    pub server_version_string: String,
    /// `max_request_body_size`: a larger body is refused with `413
    /// M_TOO_LARGE` and the connection closed. Default 1 MiB.
    pub max_request_body_size: usize,
    /// The most bytes of request line plus headers (Twisted's
    /// `totalHeadersSize`, 16384): more is refused with `400`.
    pub max_header_size: usize,
    /// The most headers in a request (Twisted's `maxHeaders`, 500): more is
    /// refused with `400`.
    pub max_headers: usize,
    /// `request_id_header`: a header whose value, when present, names the
    /// request instead of its sequence number.
    pub request_id_header: Option<String>,
    /// How many bytes of a following (pipelined) request are buffered
    /// while one is handled before reading pauses (Twisted's
    /// `_optimisticEagerReadSize`, 16384). Reading on goes on until then,
    /// so that a disconnect is noticed at once.
    pub eager_read_size: usize,
}

impl SiteConfig {
    /// The defaults, for a site tagged `site_tag` on `server_name`.
    ///
    /// ```
    /// let config = twisted_compat::http::SiteConfig::new("client", "hs");
    /// assert_eq!(config.max_request_body_size, 1024 * 1024);
    /// ```
    pub fn new(site_tag: &str, server_name: &str) -> SiteConfig {
        SiteConfig {
            site_tag: site_tag.to_owned(),
            server_name: server_name.to_owned(),
            server_version_string: concat!("twisted-compat/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_request_body_size: 1024 * 1024,
            max_header_size: 16384,
            max_headers: 500,
            request_id_header: None,
            eager_read_size: 16384,
        }
    }
}

/// One access-log line (Synapse's `_finished_processing`), as data; its
/// `Display` is Synapse's line. Resource usage (CPU, database) is not
/// tracked here and shows as zeros.
///
/// ```
/// use twisted_compat::http::*;
/// use std::{cell::RefCell, rc::Rc};
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
/// let lines = Rc::new(RefCell::new(Vec::new()));
/// let sink = lines.clone();
/// site.add_observer(move |event| if let SiteEvent::Processed(entry) = event {
///     sink.borrow_mut().push(entry.to_string());
/// });
/// make_request(&site, "GET", "/nothing", b"");
/// assert_eq!(
///     lines.borrow()[0],
///     "127.0.0.1 - client - {None} Processed request: 0.000sec/0.000sec ru=(0.000sec, 0.000sec) \
///      db=(0.000sec/0.000sec/0) 59B 404 \"GET /nothing HTTP/1.1\" \"-\" [0 dbevts]"
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogEntry {
    /// The request id (`GET-0`): not on Synapse's line, which its logging
    /// context tags instead.
    pub request_id: String,
    /// The client's address.
    pub client_ip: String,
    /// The site's tag.
    pub site_tag: String,
    /// Who made the request, if known (`{None}` otherwise).
    pub requester: Option<String>,
    /// Seconds from the request's arrival to the end of its processing.
    pub processing_time: f64,
    /// Seconds from the end of processing to the response being sent
    /// (negative when the response was sent first).
    pub response_send_time: f64,
    /// Body bytes sent.
    pub sent_length: usize,
    /// The response code recorded (499 for a cancelled request).
    pub code: u16,
    /// Whether the response was sent in full; Synapse marks the code with
    /// `!` otherwise (`499!`, or `200!` for a response dropped because the
    /// client left).
    pub finished: bool,
    /// The method.
    pub method: String,
    /// The URI, redacted.
    pub uri: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub protocol: String,
    /// The user agent (`-` when none).
    pub user_agent: String,
    /// The servlet that handled it (Synapse's request metrics name).
    pub servlet_name: String,
}

impl AccessLogEntry {
    /// The code as the line shows it: `"200"`, or `"499!"` when the
    /// response was not sent in full.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// # let seen = std::rc::Rc::new(std::cell::RefCell::new(None));
    /// # let s = seen.clone();
    /// # site.add_observer(move |e| if let SiteEvent::Processed(x) = e { *s.borrow_mut() = Some(x.clone()) });
    /// make_request(&site, "GET", "/nothing", b"");
    /// assert_eq!(seen.borrow().as_ref().unwrap().code_field(), "404");
    /// ```
    pub fn code_field(&self) -> String {
        if self.finished {
            self.code.to_string()
        } else {
            format!("{}!", self.code)
        }
    }
}

impl fmt::Display for AccessLogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} - {} - {{{}}} Processed request: {:.3}sec/{:.3}sec ru=({:.3}sec, {:.3}sec) \
             db=({:.3}sec/{:.3}sec/{}) {}B {} \"{} {} {}\" \"{}\" [{} dbevts]",
            self.client_ip,
            self.site_tag,
            self.requester.as_deref().unwrap_or("None"),
            self.processing_time,
            self.response_send_time,
            0.0,
            0.0,
            0.0,
            0.0,
            0,
            self.sent_length,
            self.code_field(),
            self.method,
            self.uri,
            self.protocol,
            self.user_agent,
            0
        )
    }
}

/// What a site reports to its observers ([`SynapseSite::add_observer`]),
/// in the order it happens: the points where Synapse writes a log line
/// about a request. Every event is plain data (`Send`), so a test can pass
/// it to another thread.
///
/// ```
/// use twisted_compat::http::*;
/// use std::{cell::RefCell, rc::Rc};
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
/// let seen = Rc::new(RefCell::new(Vec::new()));
/// let sink = seen.clone();
/// site.add_observer(move |event| sink.borrow_mut().push(event.clone()));
/// make_request(&site, "GET", "/x", b"");
/// assert!(matches!(&seen.borrow()[0], SiteEvent::RequestReceived { request_id, .. } if request_id == "GET-0"));
/// assert!(matches!(&seen.borrow()[1], SiteEvent::Processed(entry) if entry.code == 404));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SiteEvent {
    /// A request arrived and is being rendered ("Received request").
    RequestReceived {
        /// Its id.
        request_id: String,
        /// Its method.
        method: String,
        /// Its URI, redacted.
        uri: String,
    },
    /// Its client disconnected before the response was sent ("Connection
    /// from client lost before response was sent"); a cancellable handler
    /// has been cancelled by the time observers hear of it.
    ClientDisconnected {
        /// The request's id.
        request_id: String,
    },
    /// A response was not sent because the client had gone ("Not sending
    /// response to request …, already disconnected.").
    ResponseDropped {
        /// The request's id.
        request_id: String,
        /// The code the response had.
        code: u16,
    },
    /// The access-log line: the request is completely done.
    Processed(AccessLogEntry),
    /// A connection sent something that is not a request the site accepts
    /// (400 malformed, 413 too large) and was answered and closed. No
    /// request context exists for it and no access-log line is written, as
    /// in Synapse.
    Rejected {
        /// The status sent.
        code: u16,
        /// Why.
        reason: String,
        /// The client's address.
        client_ip: String,
    },
}

type Observer = Rc<dyn Fn(&SiteEvent)>;

pub(crate) struct SiteInner {
    pub config: SiteConfig,
    pub clock: Rc<dyn ReactorTime>,
    pub resource: JsonResource,
    pub access_logger: String,
    next_seq: Cell<u64>,
    observers: RefCell<Vec<Observer>>,
}

impl SiteInner {
    pub fn emit(&self, event: &SiteEvent) {
        let observers = self.observers.borrow().clone();
        for observer in observers {
            observer(event);
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_header_size: self.config.max_header_size,
            max_headers: self.config.max_headers,
            max_body_size: self.config.max_request_body_size,
        }
    }
}

/// Synapse's `SynapseSite`: serves a [`JsonResource`] over HTTP/1.1, with
/// one logging context per request and an access-log line per request. A
/// cheap handle; it is the [`Factory`] of its connections, so
/// [`listen_tcp`](SynapseSite::listen_tcp) (or `reactor.listen_tcp_with(…,
/// site.clone(), …)`) serves it, and [`FakeChannel`](super::FakeChannel)
/// drives it in memory.
///
/// Access-log lines go to the `log` facade under the target
/// `synapse.access.http.<site_tag>` (info, debug for `/health` and
/// `OPTIONS`, as in Synapse) and to the observers, as
/// [`SiteEvent::Processed`].
///
/// ```
/// use twisted_compat::http::*;
/// use twisted_reactor::Reactor;
///
/// let resource = JsonResource::new();
/// resource.register_paths("GET", ["/hello"], |_r| async { Ok((200, Json::from("hi"))) }, "Hello").unwrap();
/// let reactor = Reactor::new().unwrap();
/// // SynapseSite("synapse.access.http.client", "client", config, resource, ...); listenTCP(0, site)
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), resource, reactor.clone());
/// let port = site.listen_tcp(&reactor, 0, "127.0.0.1").unwrap();
/// let address = port.get_host();
/// let handle = reactor.handle();
/// let client = std::thread::spawn(move || {
///     use std::io::{Read, Write};
///     let mut stream = std::net::TcpStream::connect(address).unwrap();
///     stream.write_all(b"GET /hello HTTP/1.0\r\n\r\n").unwrap();
///     let mut reply = Vec::new();
///     stream.read_to_end(&mut reply).unwrap();               // HTTP/1.0: closed after the response
///     handle.call_from_thread(|r| r.stop().unwrap()).unwrap();
///     parse_response(&reply).unwrap().0
/// });
/// reactor.run().unwrap();
/// let response = client.join().unwrap();
/// assert_eq!(response.code, 200);
/// assert_eq!(response.body, b"\"hi\"");
/// ```
#[derive(Clone)]
pub struct SynapseSite {
    inner: Rc<SiteInner>,
}

impl fmt::Debug for SynapseSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SynapseSite")
            .field("site_tag", &self.inner.config.site_tag)
            .field("resource", &self.inner.resource)
            .finish()
    }
}

impl SynapseSite {
    /// A site serving `resource`, timing requests on `reactor` (the
    /// [`Reactor`], or a test `Clock`).
    ///
    /// See [`SynapseSite`] for an example.
    ///
    /// ```
    /// use twisted_compat::http::*;
    /// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert_eq!(site.config().site_tag, "client");
    /// ```
    pub fn new(
        config: SiteConfig,
        resource: JsonResource,
        reactor: impl ReactorTime + 'static,
    ) -> SynapseSite {
        let access_logger = format!("synapse.access.http.{}", config.site_tag);
        SynapseSite {
            inner: Rc::new(SiteInner {
                config,
                clock: Rc::new(reactor),
                resource,
                access_logger,
                next_seq: Cell::new(0),
                observers: RefCell::new(Vec::new()),
            }),
        }
    }

    /// The site's settings.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert_eq!(site.config().server_name, "hs");
    /// ```
    pub fn config(&self) -> &SiteConfig {
        &self.inner.config
    }

    /// The resource served.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert_eq!(format!("{:?}", site.resource()), "[]");
    /// ```
    pub fn resource(&self) -> &JsonResource {
        &self.inner.resource
    }

    /// The `log` target of the access log: `synapse.access.http.<site_tag>`
    /// (Synapse's `access_logger`).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert_eq!(site.access_logger(), "synapse.access.http.client");
    /// ```
    pub fn access_logger(&self) -> &str {
        &self.inner.access_logger
    }

    /// Calls `observer` with every [`SiteEvent`], on the reactor's thread,
    /// synchronously where it happens (a test hook: the access log, client
    /// disconnects, dropped responses, refused connections).
    ///
    /// See [`SiteEvent`] for an example.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// site.add_observer(|event| println!("{event:?}"));
    /// ```
    pub fn add_observer(&self, observer: impl Fn(&SiteEvent) + 'static) {
        self.inner.observers.borrow_mut().push(Rc::new(observer));
    }

    /// `reactor.listenTCP(port, site, interface=interface)`: serves the site
    /// on `interface:port` (0: a port the OS picks).
    ///
    /// See [`SynapseSite`] for an example.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), reactor.clone());
    /// let port = site.listen_tcp(&reactor, 0, "127.0.0.1").unwrap();
    /// assert!(port.get_host().port() != 0);
    /// ```
    pub fn listen_tcp(
        &self,
        reactor: &Reactor,
        port: u16,
        interface: &str,
    ) -> Result<Port, CannotListenError> {
        reactor.listen_tcp_with(port, self.clone(), interface, 50)
    }

    pub(crate) fn inner(&self) -> &Rc<SiteInner> {
        &self.inner
    }
}

/// `buildProtocol(addr)`: an [`HttpProtocol`] per connection.
impl Factory for SynapseSite {
    type Protocol = HttpProtocol;

    fn build_protocol(&self, _addr: SocketAddr) -> Option<HttpProtocol> {
        Some(HttpProtocol {
            channel: HttpChannel::new(self),
        })
    }
}

/// What an [`HttpChannel`] writes to: Twisted's `ITransport`, as much as
/// HTTP needs. Implemented for the reactor's [`TcpTransport`]; a test
/// transport implements it too (as [`FakeChannel`](super::FakeChannel)'s
/// does).
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use twisted_compat::http::*;
///
/// /// Keeps what is written.
/// #[derive(Default)]
/// struct Memory(RefCell<Vec<u8>>);
/// impl HttpTransport for Memory {
///     fn write(&self, data: &[u8]) { self.0.borrow_mut().extend_from_slice(data) }
///     fn lose_connection(&self) {}
///     fn abort_connection(&self) {}
///     fn pause_producing(&self) {}
///     fn resume_producing(&self) {}
///     fn peer_ip(&self) -> String { "192.0.2.1".into() }
/// }
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
/// let memory = Rc::new(Memory::default());
/// let channel = HttpChannel::new(&site);
/// channel.connection_made(memory.clone());
/// channel.data_received(b"GET / HTTP/1.1\r\n\r\n");
/// assert!(memory.0.borrow().starts_with(b"HTTP/1.1 404 Not Found\r\n"));
/// ```
pub trait HttpTransport {
    /// `transport.write(data)`.
    fn write(&self, data: &[u8]);
    /// `transport.loseConnection()`: close once everything is sent.
    fn lose_connection(&self);
    /// `transport.abortConnection()`: close now.
    fn abort_connection(&self);
    /// `transport.pauseProducing()`: stop reading.
    fn pause_producing(&self);
    /// `transport.resumeProducing()`: read again.
    fn resume_producing(&self);
    /// The client's address, for logs (`getPeer().host`).
    fn peer_ip(&self) -> String;
}

impl HttpTransport for TcpTransport {
    fn write(&self, data: &[u8]) {
        TcpTransport::write(self, data);
    }

    fn lose_connection(&self) {
        TcpTransport::lose_connection(self);
    }

    fn abort_connection(&self) {
        TcpTransport::abort_connection(self);
    }

    fn pause_producing(&self) {
        TcpTransport::pause_producing(self);
    }

    fn resume_producing(&self) {
        TcpTransport::resume_producing(self);
    }

    fn peer_ip(&self) -> String {
        self.get_peer().ip().to_string()
    }
}

pub(crate) struct ChannelInner {
    site: Rc<SiteInner>,
    transport: RefCell<Option<Rc<dyn HttpTransport>>>,
    peer: RefCell<String>,
    parser: RefCell<RequestParser>,
    buffer: RefCell<Vec<u8>>,
    current: RefCell<Option<SynapseRequest>>,
    last: RefCell<Option<SynapseRequest>>,
    closing: Cell<bool>,
    lost: Cell<bool>,
    dispatching: Cell<bool>,
    paused: Cell<bool>,
    me: Weak<ChannelInner>,
}

impl ChannelInner {
    fn transport(&self) -> Option<Rc<dyn HttpTransport>> {
        self.transport.borrow().clone()
    }

    pub fn write(&self, data: &[u8]) {
        if self.lost.get() {
            return;
        }
        if let Some(t) = self.transport() {
            t.write(data);
        }
    }

    pub fn abort(&self) {
        self.closing.set(true);
        if let Some(t) = self.transport() {
            t.abort_connection();
        }
    }

    /// `requestDone(request)`: the response is complete; go on with the
    /// next request, or close.
    pub fn request_done(&self, request: &SynapseRequest) {
        let is_current = self
            .current
            .borrow()
            .as_ref()
            .is_some_and(|c| c.ptr_eq(request));
        if !is_current {
            return;
        }
        *self.current.borrow_mut() = None;
        if !request.persistent() {
            self.closing.set(true);
            if let Some(t) = self.transport() {
                t.lose_connection();
            }
            return;
        }
        if !self.dispatching.get() {
            // Called from a handler's context: the next request starts from
            // the sentinel, as it would from the reactor.
            let _sentinel = PreserveLoggingContext::sentinel();
            self.process_input();
        }
    }

    fn data_received(&self, data: &[u8]) {
        if self.lost.get() || self.closing.get() {
            return;
        }
        self.buffer.borrow_mut().extend_from_slice(data);
        if self.current.borrow().is_some() {
            if self.buffer.borrow().len() > self.site.config.eager_read_size
                && !self.paused.replace(true)
                && let Some(t) = self.transport()
            {
                t.pause_producing();
            }
            return;
        }
        self.process_input();
    }

    fn process_input(&self) {
        if self.dispatching.replace(true) {
            return;
        }
        loop {
            if self.lost.get() || self.closing.get() || self.current.borrow().is_some() {
                break;
            }
            let result = {
                let mut buffer = self.buffer.borrow_mut();
                self.parser.borrow_mut().parse(&mut buffer)
            };
            if self.parser.borrow_mut().take_continue() {
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            match result {
                Ok(None) => break,
                Ok(Some(parsed)) => {
                    let keep_alive = parsed.head.version == "HTTP/1.1"
                        && !header_value(&parsed.head.headers, "connection").is_some_and(|v| {
                            v.split(|b| *b == b',' || b.is_ascii_whitespace())
                                .any(|t| t.eq_ignore_ascii_case(b"close"))
                        });
                    let seq = self.site.next_seq.get();
                    self.site.next_seq.set(seq + 1);
                    let request = SynapseRequest::new(
                        self.site.clone(),
                        self.me.clone(),
                        parsed,
                        self.peer.borrow().clone(),
                        seq,
                        keep_alive,
                    );
                    *self.current.borrow_mut() = Some(request.clone());
                    *self.last.borrow_mut() = Some(request.clone());
                    request.render();
                }
                Err(error) => {
                    self.reject(&error);
                    break;
                }
            }
        }
        self.dispatching.set(false);
        if self.paused.get()
            && self.current.borrow().is_none()
            && !self.closing.get()
            && !self.lost.get()
        {
            self.paused.set(false);
            if let Some(t) = self.transport() {
                t.resume_producing();
            }
        }
    }

    /// Answers a request the site refuses and closes the connection.
    fn reject(&self, error: &ParseError) {
        self.closing.set(true);
        self.buffer.borrow_mut().clear();
        let code = match error {
            ParseError::BadRequest(_) => {
                // Twisted's _respondToBadRequestAndDisconnect
                self.write(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                400
            }
            ParseError::TooLarge { .. } => {
                // SynapseRequest._respond_with_error(ContentLengthError(413, ...))
                let body = Json::object([
                    ("errcode", Codes::TOO_LARGE),
                    ("error", error.to_string().as_str()),
                ])
                .encode();
                let head = format!(
                    "HTTP/1.1 413 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    reason_phrase(413),
                    body.len()
                );
                self.write(head.as_bytes());
                self.write(&body);
                413
            }
        };
        let client_ip = self.peer.borrow().clone();
        log::info!(
            target: "synapse.http.site",
            "Rejecting request from {client_ip}: {code} {error}"
        );
        self.site.emit(&SiteEvent::Rejected {
            code,
            reason: error.to_string(),
            client_ip,
        });
        if let Some(t) = self.transport() {
            t.lose_connection();
        }
    }

    fn connection_lost(&self, reason: Failure) {
        if self.lost.replace(true) {
            return;
        }
        let transport = self.transport.borrow_mut().take();
        drop(transport);
        self.buffer.borrow_mut().clear();
        let current = self.current.borrow_mut().take();
        match current {
            Some(request) => request.connection_lost(&reason),
            None => {
                if self.parser.borrow().in_request() {
                    log::info!(
                        target: "synapse.http.site",
                        "Connection from {} lost before request headers were read",
                        self.peer.borrow()
                    );
                }
            }
        }
    }
}

/// One connection's HTTP/1.1 (Twisted's `HTTPChannel`), independent of the
/// transport: bytes in through [`data_received`](HttpChannel::data_received),
/// responses out through the [`HttpTransport`] given to
/// [`connection_made`](HttpChannel::connection_made), the end through
/// [`connection_lost`](HttpChannel::connection_lost).
///
/// One request is handled at a time. Requests pipelined behind it are
/// buffered (up to [`SiteConfig::eager_read_size`], then reading pauses)
/// and served in order once its response is complete (Twisted's
/// head-of-line blocking). Connections are kept alive for HTTP/1.1 unless
/// the request says `Connection: close`; HTTP/1.0 connections close after
/// one response. A malformed request gets `400 Bad Request`, one with too
/// large a body `413` with `M_TOO_LARGE`, and the connection is closed;
/// other connections are not affected.
///
/// See [`HttpTransport`] for an example.
///
/// ```
/// # use twisted_compat::http::*;
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
/// let channel = HttpChannel::new(&site);                       // HTTPChannel()
/// assert!(channel.last_request().is_none());
/// ```
#[derive(Clone)]
pub struct HttpChannel {
    inner: Rc<ChannelInner>,
}

impl fmt::Debug for HttpChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpChannel")
            .field("peer", &*self.inner.peer.borrow())
            .field("current", &*self.inner.current.borrow())
            .field("closing", &self.inner.closing.get())
            .field("lost", &self.inner.lost.get())
            .finish()
    }
}

impl HttpChannel {
    /// A channel of `site`, not connected yet.
    ///
    /// See [`HttpTransport`] for an example.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let _channel = HttpChannel::new(&site);
    /// ```
    pub fn new(site: &SynapseSite) -> HttpChannel {
        let site = site.inner().clone();
        let limits = site.limits();
        HttpChannel {
            inner: Rc::new_cyclic(|me| ChannelInner {
                site,
                transport: RefCell::new(None),
                peer: RefCell::new(String::new()),
                parser: RefCell::new(RequestParser::new(limits)),
                buffer: RefCell::new(Vec::new()),
                current: RefCell::new(None),
                last: RefCell::new(None),
                closing: Cell::new(false),
                lost: Cell::new(false),
                dispatching: Cell::new(false),
                paused: Cell::new(false),
                me: me.clone(),
            }),
        }
    }

    /// `makeConnection(transport)`.
    ///
    /// See [`HttpTransport`] for an example.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = FakeChannel::new(&site);                        // connection_made is done for you
    /// assert!(channel.request().is_none());
    /// ```
    pub fn connection_made(&self, transport: Rc<dyn HttpTransport>) {
        *self.inner.peer.borrow_mut() = transport.peer_ip();
        *self.inner.transport.borrow_mut() = Some(transport);
    }

    /// `dataReceived(data)`: bytes from the client, in pieces of any size.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = FakeChannel::new(&site);
    /// for byte in b"GET / HTTP/1.1\r\n\r\n" {
    ///     channel.send(&[*byte]);                                   // one byte at a time
    /// }
    /// assert_eq!(channel.code(), Some(404));
    /// ```
    pub fn data_received(&self, data: &[u8]) {
        self.inner.data_received(data);
    }

    /// `connectionLost(reason)`: the connection is gone. A request whose
    /// response was not sent gets `SynapseRequest.connectionLost`: a
    /// cancellable handler is cancelled, any other runs to completion.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = FakeChannel::new(&site);
    /// channel.disconnect();                                         // connectionLost(ConnectionDone)
    /// channel.send(b"GET / HTTP/1.1\r\n\r\n");                      // ignored: the connection is gone
    /// assert!(channel.request().is_none());
    /// ```
    pub fn connection_lost(&self, reason: Failure) {
        self.inner.connection_lost(reason);
    }

    /// The request being handled now, if any.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/", b"");          // answered at once (404)
    /// assert!(channel.channel().current_request().is_none());
    /// ```
    pub fn current_request(&self) -> Option<SynapseRequest> {
        self.inner.current.borrow().clone()
    }

    /// The request that arrived last on this connection.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/", b"");
    /// assert_eq!(channel.channel().last_request().unwrap().request_id(), "GET-0");
    /// ```
    pub fn last_request(&self) -> Option<SynapseRequest> {
        self.inner.last.borrow().clone()
    }
}

/// The reactor [`Protocol`] of a [`SynapseSite`]'s TCP connections: an
/// [`HttpChannel`] over the connection's [`TcpTransport`]. Built by the
/// site's [`Factory`] implementation.
///
/// ```
/// use twisted_reactor::Factory;
/// # use twisted_compat::http::*;
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
/// let protocol = site.build_protocol("127.0.0.1:1".parse().unwrap()).unwrap();  // site.buildProtocol(addr)
/// assert!(protocol.channel().last_request().is_none());
/// ```
#[derive(Debug)]
pub struct HttpProtocol {
    channel: HttpChannel,
}

impl HttpProtocol {
    /// The connection's channel.
    ///
    /// See [`HttpProtocol`] for an example.
    ///
    /// ```
    /// use twisted_reactor::Factory;
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let protocol = site.build_protocol("127.0.0.1:1".parse().unwrap()).unwrap();
    /// assert!(protocol.channel().current_request().is_none());
    /// ```
    pub fn channel(&self) -> &HttpChannel {
        &self.channel
    }
}

impl Protocol for HttpProtocol {
    fn connection_made(&mut self, transport: TcpTransport) {
        self.channel.connection_made(Rc::new(transport));
    }

    fn data_received(&mut self, data: &[u8]) {
        self.channel.data_received(data);
    }

    fn connection_lost(&mut self, reason: Failure) {
        self.channel.connection_lost(reason);
    }
}
