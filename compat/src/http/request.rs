//! [`SynapseRequest`]: one HTTP request, from its arrival to its access-log
//! line (Synapse's `synapse.http.site.SynapseRequest` over Twisted's
//! `twisted.web.server.Request`).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::rc::{Rc, Weak};

use twisted_deferred::{CancelledError, Deferred, Failure};

use crate::logcontext::{ContextRequest, LoggingContext, PreserveLoggingContext};

use super::json::Json;
use super::parser::{ParsedRequest, header_value};
use super::resource::return_json_error;
use super::site::{AccessLogEntry, ChannelInner, SiteEvent, SiteInner};
use super::{Codes, SynapseError};

/// One HTTP request: Synapse's `SynapseRequest`. A cheap handle; clones are
/// the same request.
///
/// It holds what arrived (method, URI, headers, body), the response being
/// built (code, headers), the request's logging context (named by its
/// request id, `GET-0`, `POST-1`, …), the handler's Deferred
/// (`render_deferred`) and whether it may be cancelled
/// (`is_render_cancellable`), and the times its access-log line reports.
///
/// ```
/// use twisted_compat::http::{Json, JsonResource, SiteConfig, SynapseSite, make_request};
///
/// let resource = JsonResource::new();
/// resource.register_paths("GET", ["/rooms/{room_id}"], |request| async move {
///     // async def on_GET(self, request, room_id):
///     let room = request.path_arg("room_id").unwrap_or_default();
///     Ok((200, Json::object([("room", room)])))
/// }, "RoomServlet").unwrap();
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), resource, twisted_reactor::Clock::new());
/// let channel = make_request(&site, "GET", "/rooms/%21abc", b"");
/// let request = channel.request().unwrap();
/// assert_eq!(request.request_id(), "GET-0");
/// assert_eq!(request.code(), 200);
/// assert_eq!(channel.json_body().unwrap(), Json::object([("room", "!abc")]));
/// ```
#[derive(Clone)]
pub struct SynapseRequest {
    inner: Rc<RequestInner>,
}

pub(crate) struct RequestInner {
    site: Rc<SiteInner>,
    channel: RefCell<Weak<ChannelInner>>,
    method: String,
    uri: String,
    path: String,
    version: &'static str,
    headers: Vec<(String, Vec<u8>)>,
    content: Vec<u8>,
    client_ip: String,
    request_seq: u64,
    persistent: bool,
    code: Cell<u16>,
    response_headers: RefCell<Vec<(String, String)>>,
    sent_length: Cell<usize>,
    started_writing: Cell<bool>,
    finished: Cell<bool>,
    disconnected: Cell<bool>,
    logcontext: RefCell<Option<LoggingContext>>,
    render_deferred: RefCell<Option<Deferred<()>>>,
    is_render_cancellable: Cell<bool>,
    is_processing: Cell<bool>,
    start_time: Cell<f64>,
    processing_finished_time: Cell<Option<f64>>,
    finish_time: Cell<Option<f64>>,
    servlet_name: RefCell<String>,
    path_args: RefCell<BTreeMap<String, String>>,
    requester: RefCell<Option<String>>,
    logged: Cell<bool>,
    /// A response (sent or dropped) was produced.
    responded: Cell<bool>,
}

impl SynapseRequest {
    pub(crate) fn new(
        site: Rc<SiteInner>,
        channel: Weak<ChannelInner>,
        parsed: ParsedRequest,
        client_ip: String,
        request_seq: u64,
        persistent: bool,
    ) -> SynapseRequest {
        let ParsedRequest { head, body } = parsed;
        let path = head.target.split('?').next().unwrap_or_default().to_owned();
        SynapseRequest {
            inner: Rc::new(RequestInner {
                site,
                channel: RefCell::new(channel),
                method: head.method,
                uri: head.target,
                path,
                version: head.version,
                headers: head.headers,
                content: body,
                client_ip,
                request_seq,
                persistent,
                code: Cell::new(200),
                response_headers: RefCell::new(Vec::new()),
                sent_length: Cell::new(0),
                started_writing: Cell::new(false),
                finished: Cell::new(false),
                disconnected: Cell::new(false),
                logcontext: RefCell::new(None),
                render_deferred: RefCell::new(None),
                is_render_cancellable: Cell::new(false),
                is_processing: Cell::new(false),
                start_time: Cell::new(0.0),
                processing_finished_time: Cell::new(None),
                finish_time: Cell::new(None),
                servlet_name: RefCell::new(String::new()),
                path_args: RefCell::new(BTreeMap::new()),
                requester: RefCell::new(None),
                logged: Cell::new(false),
                responded: Cell::new(false),
            }),
        }
    }

    /// Whether the connection stays open after this request's response.
    pub(crate) fn persistent(&self) -> bool {
        self.inner.persistent
    }

    /// `request.method`, e.g. `"GET"`.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "DELETE", "/x", b"");
    /// assert_eq!(channel.request().unwrap().method(), "DELETE");   // request.method
    /// ```
    pub fn method(&self) -> &str {
        &self.inner.method
    }

    /// `request.uri`: the path and query string as sent.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/x?a=1", b"");
    /// assert_eq!(channel.request().unwrap().uri(), "/x?a=1");      // request.uri
    /// ```
    pub fn uri(&self) -> &str {
        &self.inner.uri
    }

    /// `request.path`: the URI without its query string (not
    /// percent-decoded; routing matches on it, as Synapse's does).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/a%20b?c=1", b"");
    /// assert_eq!(channel.request().unwrap().path(), "/a%20b");     // request.path
    /// ```
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// `request.clientproto`: `"HTTP/1.1"` or `"HTTP/1.0"`.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/", b"");
    /// assert_eq!(channel.request().unwrap().clientproto(), "HTTP/1.1");
    /// ```
    pub fn clientproto(&self) -> &str {
        self.inner.version
    }

    /// `request.getHeader(name)`: the first value of a request header
    /// (case-insensitive), as text (invalid UTF-8 replaced).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = FakeChannel::new(&site);
    /// channel.send(b"GET / HTTP/1.1\r\nX-Thing: yes\r\n\r\n");
    /// assert_eq!(channel.request().unwrap().get_header("x-thing").as_deref(), Some("yes"));
    /// ```
    pub fn get_header(&self, name: &str) -> Option<String> {
        header_value(&self.inner.headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// `request.requestHeaders.getRawHeaders(name)`: every value of a
    /// request header, in order.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = FakeChannel::new(&site);
    /// channel.send(b"GET / HTTP/1.1\r\nA: 1\r\nA: 2\r\n\r\n");
    /// assert_eq!(channel.request().unwrap().get_raw_headers("a"), [b"1".to_vec(), b"2".to_vec()]);
    /// ```
    pub fn get_raw_headers(&self, name: &str) -> Vec<Vec<u8>> {
        self.inner
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `request.content.read()`: the request body.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "POST", "/", b"hello");
    /// assert_eq!(channel.request().unwrap().content(), b"hello");
    /// ```
    pub fn content(&self) -> &[u8] {
        &self.inner.content
    }

    /// `parse_json_object_from_request(request)`: the body as a JSON
    /// object; a `400 M_NOT_JSON` [`SynapseError`] otherwise.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let good = make_request(&site, "POST", "/", br#"{"a": 1}"#).request().unwrap();
    /// assert_eq!(good.json_body().unwrap().get("a"), Some(&Json::Int(1)));
    /// let bad = make_request(&site, "POST", "/", b"{").request().unwrap();
    /// assert_eq!(bad.json_body().unwrap_err().errcode, "M_NOT_JSON");
    /// ```
    pub fn json_body(&self) -> Result<Json, SynapseError> {
        let text = std::str::from_utf8(&self.inner.content)
            .map_err(|_| SynapseError::new(400, "Content not JSON.", Codes::NOT_JSON))?;
        match Json::parse(text) {
            Ok(value @ Json::Object(_)) => Ok(value),
            Ok(_) => Err(SynapseError::new(
                400,
                "Content must be a JSON object.",
                Codes::BAD_JSON,
            )),
            Err(_) => Err(SynapseError::new(400, "Content not JSON.", Codes::NOT_JSON)),
        }
    }

    /// A query-string argument, percent-decoded (`parse_string(request,
    /// name)` without the checks); the first one when repeated.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let request = make_request(&site, "GET", "/x?from=s%2072&limit=10", b"").request().unwrap();
    /// assert_eq!(request.query_arg("from").as_deref(), Some("s 72"));
    /// assert_eq!(request.query_arg("to"), None);
    /// ```
    pub fn query_arg(&self, name: &str) -> Option<String> {
        let query = self.inner.uri.split_once('?')?.1;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (unquote(key) == name).then(|| unquote(value))
        })
    }

    /// A path argument: the `{name}` segment of the matched pattern,
    /// percent-decoded (Synapse passes these to the handler as keyword
    /// arguments, after `urllib.parse.unquote`).
    ///
    /// See [`SynapseRequest`] for an example.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let request = make_request(&site, "GET", "/unrouted", b"").request().unwrap();
    /// assert_eq!(request.path_arg("room_id"), None);                 // no pattern matched
    /// ```
    pub fn path_arg(&self, name: &str) -> Option<String> {
        self.inner.path_args.borrow().get(name).cloned()
    }

    pub(crate) fn set_path_args(&self, args: BTreeMap<String, String>) {
        *self.inner.path_args.borrow_mut() = args;
    }

    /// `request.request_seq`: the request's number on its site (0, 1, …).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// make_request(&site, "GET", "/", b"");
    /// assert_eq!(make_request(&site, "GET", "/", b"").request().unwrap().request_seq(), 1);
    /// ```
    pub fn request_seq(&self) -> u64 {
        self.inner.request_seq
    }

    /// `request.get_request_id()`: `"<METHOD>-<seq>"`, or
    /// `"<METHOD>-<header value>"` when the site names a request-id header
    /// and the request has it. The request's logging context has this name.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "PUT", "/", b"");
    /// assert_eq!(channel.request().unwrap().request_id(), "PUT-0");
    /// ```
    pub fn request_id(&self) -> String {
        let from_header = self
            .inner
            .site
            .config
            .request_id_header
            .as_deref()
            .and_then(|name| self.get_header(name));
        match from_header {
            Some(id) => format!("{}-{id}", self.inner.method),
            None => format!("{}-{}", self.inner.method, self.inner.request_seq),
        }
    }

    /// `request.get_redacted_uri()`: the URI with `access_token` and
    /// `client_secret` query values replaced by `<redacted>` (Synapse's
    /// `redact_uri`, which redacts the last occurrence of each).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let request = make_request(&site, "GET", "/sync?access_token=secret&since=1", b"").request().unwrap();
    /// assert_eq!(request.get_redacted_uri(), "/sync?access_token=<redacted>&since=1");
    /// ```
    pub fn get_redacted_uri(&self) -> String {
        redact_uri(&self.inner.uri)
    }

    /// `request.get_client_ip_if_available()`: the peer's address.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let request = make_request(&site, "GET", "/", b"").request().unwrap();
    /// assert_eq!(request.get_client_ip_if_available(), "127.0.0.1");
    /// ```
    pub fn get_client_ip_if_available(&self) -> &str {
        &self.inner.client_ip
    }

    /// `get_request_user_agent(request)`: the last `User-Agent` header, or
    /// `""`.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = FakeChannel::new(&site);
    /// channel.send(b"GET / HTTP/1.1\r\nUser-Agent: curl/8\r\n\r\n");
    /// assert_eq!(channel.request().unwrap().user_agent(), "curl/8");
    /// ```
    pub fn user_agent(&self) -> String {
        self.inner
            .headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    /// `request.requester = requester`: who made the request, for the
    /// access log (`{requester}`) and the logging context's
    /// `ContextRequest`. Normally set by authentication.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let request = make_request(&site, "GET", "/", b"").request().unwrap();
    /// request.set_requester("@alice:hs");                          // request.requester = requester
    /// assert_eq!(request.requester().as_deref(), Some("@alice:hs"));
    /// ```
    pub fn set_requester(&self, requester: &str) {
        *self.inner.requester.borrow_mut() = Some(requester.to_owned());
        if let Some(ctx) = self.logcontext()
            && let Some(old) = ctx.request()
        {
            let mut updated = (*old).clone();
            updated.requester = Some(requester.to_owned());
            updated.authenticated_entity = Some(requester.to_owned());
            ctx.set_request(Some(Rc::new(updated)));
        }
    }

    /// `request.requester`, as set by [`set_requester`](Self::set_requester).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert_eq!(make_request(&site, "GET", "/", b"").request().unwrap().requester(), None);
    /// ```
    pub fn requester(&self) -> Option<String> {
        self.inner.requester.borrow().clone()
    }

    /// `request.logcontext`: the request's logging context, created when
    /// the request is rendered (`None` before). Synapse never finishes it
    /// (it is made current with `PreserveLoggingContext`, not entered).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let request = make_request(&site, "GET", "/", b"").request().unwrap();
    /// let ctx = request.logcontext().unwrap();
    /// assert_eq!(ctx.name(), "GET-0");
    /// assert_eq!(ctx.request().unwrap().url, "/");
    /// assert!(!ctx.finished());
    /// ```
    pub fn logcontext(&self) -> Option<LoggingContext> {
        self.inner.logcontext.borrow().clone()
    }

    /// `request.render_deferred`: the Deferred of the handler's run
    /// (started with `run_in_background`), the one cancelled when a client
    /// of a cancellable handler disconnects. It always succeeds: failures
    /// become error responses.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let request = make_request(&site, "GET", "/missing", b"").request().unwrap();
    /// assert!(request.render_deferred().unwrap().called());        // the 404 was sent at once
    /// ```
    pub fn render_deferred(&self) -> Option<Deferred<()>> {
        self.inner.render_deferred.borrow().clone()
    }

    pub(crate) fn set_render_deferred(&self, d: Deferred<()>) {
        *self.inner.render_deferred.borrow_mut() = Some(d);
    }

    /// `request.is_render_cancellable`: whether the handler chosen for
    /// this request was marked [`cancellable`](macro@crate::cancellable);
    /// set just before the handler is called, read when the client
    /// disconnects.
    ///
    /// ```
    /// use twisted_compat::http::*;
    /// use twisted_compat::Cancellable;
    /// let resource = JsonResource::new();
    /// resource.register_paths("GET", ["/c"], |_r| Cancellable::new(async { Ok((200, Json::Null)) }), "C").unwrap();
    /// let site = SynapseSite::new(SiteConfig::new("client", "hs"), resource, twisted_reactor::Clock::new());
    /// assert!(make_request(&site, "GET", "/c", b"").request().unwrap().is_render_cancellable());
    /// ```
    pub fn is_render_cancellable(&self) -> bool {
        self.inner.is_render_cancellable.get()
    }

    pub(crate) fn set_render_cancellable(&self, cancellable: bool) {
        self.inner.is_render_cancellable.set(cancellable);
    }

    /// The servlet name used in logs (`request.request_metrics.name`): the
    /// `servlet_classname` given to `register_paths`, or `JsonResource`.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert_eq!(make_request(&site, "GET", "/", b"").request().unwrap().servlet_name(), "JsonResource");
    /// ```
    pub fn servlet_name(&self) -> String {
        self.inner.servlet_name.borrow().clone()
    }

    pub(crate) fn set_servlet_name(&self, name: &str) {
        *self.inner.servlet_name.borrow_mut() = name.to_owned();
    }

    /// `request.code`: the response code (200 until set). Set even when
    /// the response cannot be sent any more, for the access log: a
    /// cancelled request shows 499.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert_eq!(make_request(&site, "GET", "/missing", b"").request().unwrap().code(), 404);
    /// ```
    pub fn code(&self) -> u16 {
        self.inner.code.get()
    }

    /// `request.setResponseCode(code)`.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let request = make_request(&site, "GET", "/missing", b"").request().unwrap();
    /// request.set_response_code(418);
    /// assert_eq!(request.code(), 418);
    /// ```
    pub fn set_response_code(&self, code: u16) {
        self.inner.code.set(code);
    }

    /// `request.setHeader(name, value)`: sets a response header, replacing
    /// any of the same name.
    ///
    /// ```
    /// use twisted_compat::http::*;
    /// let resource = JsonResource::new();
    /// resource.register_paths("GET", ["/h"], |request: SynapseRequest| async move {
    ///     request.set_header("ETag", "\"1\"");                       // request.setHeader(b"ETag", b'"1"')
    ///     Ok((200, Json::Null))
    /// }, "H").unwrap();
    /// let site = SynapseSite::new(SiteConfig::new("client", "hs"), resource, twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/h", b"");
    /// assert_eq!(channel.response().unwrap().header("etag"), Some("\"1\""));
    /// ```
    pub fn set_header(&self, name: &str, value: &str) {
        let mut headers = self.inner.response_headers.borrow_mut();
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.to_owned(), value.to_owned()));
    }

    /// Whether a response header is set (`responseHeaders.hasHeader`).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let request = make_request(&site, "GET", "/missing", b"").request().unwrap();
    /// assert!(request.has_response_header("content-type"));
    /// ```
    pub fn has_response_header(&self, name: &str) -> bool {
        self.inner
            .response_headers
            .borrow()
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// `request._disconnected`: the client went away before the response
    /// was sent.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/missing", b"");
    /// assert!(!channel.request().unwrap().is_disconnected());
    /// ```
    pub fn is_disconnected(&self) -> bool {
        self.inner.disconnected.get()
    }

    /// `request.finished`: the whole response was handed to the transport.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert!(make_request(&site, "GET", "/missing", b"").request().unwrap().is_finished());
    /// ```
    pub fn is_finished(&self) -> bool {
        self.inner.finished.get()
    }

    /// `request.startedWriting`: response bytes have gone out.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert!(make_request(&site, "GET", "/missing", b"").request().unwrap().started_writing());
    /// ```
    pub fn started_writing(&self) -> bool {
        self.inner.started_writing.get()
    }

    /// `request.sentLength`: the body bytes sent.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/missing", b"");
    /// assert_eq!(channel.request().unwrap().sent_length(), channel.response().unwrap().body.len());
    /// ```
    pub fn sent_length(&self) -> usize {
        self.inner.sent_length.get()
    }

    /// `request._is_processing`: a handler is running for it (inside
    /// [`processing`](Self::processing)).
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// assert!(!make_request(&site, "GET", "/missing", b"").request().unwrap().is_processing());
    /// ```
    pub fn is_processing(&self) -> bool {
        self.inner.is_processing.get()
    }

    /// `with request.processing():` as a guard: records that a handler is
    /// working on the request. When the guard is dropped, the end of
    /// processing is recorded and, if the response has been sent (or the
    /// client has gone), the access-log line is written. Fails, as
    /// Synapse's raises `RuntimeError`, if the request is already
    /// processing.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let request = make_request(&site, "GET", "/missing", b"").request().unwrap();
    /// let guard = request.processing().unwrap();                   // with request.processing():
    /// assert!(request.processing().is_err());                      //     RuntimeError("Request is already processing")
    /// drop(guard);
    /// assert!(!request.is_processing());
    /// ```
    pub fn processing(&self) -> Result<ProcessingGuard, Failure> {
        if self.inner.is_processing.get() {
            return Err(Failure::msg("Request is already processing"));
        }
        self.inner.is_processing.set(true);
        Ok(ProcessingGuard {
            request: self.clone(),
        })
    }

    fn now(&self) -> f64 {
        self.inner.site.clock.seconds()
    }

    /// Builds and writes the response: status line, headers, `body` (not
    /// for `HEAD`), then `finish()`. Nothing is written once disconnected.
    pub(crate) fn write_response(&self, body: &[u8]) {
        if self.inner.disconnected.get() || self.inner.finished.get() {
            return;
        }
        let code = self.inner.code.get();
        let mut head = format!(
            "{} {} {}\r\n",
            self.inner.version,
            code,
            reason_phrase(code)
        );
        let mut headers = self.inner.response_headers.borrow().clone();
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
        headers.push(("Content-Length".into(), body.len().to_string()));
        if !self.inner.persistent {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case("connection"));
            headers.push(("Connection".into(), "close".into()));
        }
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("date")) {
            headers.push(("Date".into(), http_date(std::time::SystemTime::now())));
        }
        for (name, value) in &headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let send_body = self.inner.method != "HEAD";
        let channel = self.inner.channel.borrow().upgrade();
        if let Some(channel) = &channel {
            channel.write(head.as_bytes());
            if send_body {
                channel.write(body);
            }
        }
        self.inner.started_writing.set(true);
        self.inner
            .sent_length
            .set(if send_body { body.len() } else { 0 });
        self.finish();
    }

    /// `request.finish()`: the response is complete. Records the finish
    /// time, lets the connection go on to its next request and, if no
    /// handler is processing, writes the access-log line (in the request's
    /// context).
    fn finish(&self) {
        if self.inner.finished.get() {
            return;
        }
        self.inner.finish_time.set(Some(self.now()));
        self.inner.finished.set(true);
        let channel = self.inner.channel.replace(Weak::new()).upgrade();
        if let Some(channel) = channel {
            channel.request_done(self);
        }
        if !self.inner.is_processing.get() {
            let _preserve = self.logcontext().map(PreserveLoggingContext::new);
            self.finished_processing();
        }
    }

    /// `request.render(resource)`: creates the request's logging context
    /// and runs the resource in it (`with PreserveLoggingContext(ctx):`).
    pub(crate) fn render(&self) {
        let request_id = self.request_id();
        let context = LoggingContext::builder(&request_id, &self.inner.site.config.server_name)
            .request(ContextRequest {
                request_id: request_id.clone(),
                ip_address: self.inner.client_ip.clone(),
                site_tag: self.inner.site.config.site_tag.clone(),
                requester: None,
                authenticated_entity: None,
                method: self.inner.method.clone(),
                url: self.get_redacted_uri(),
                protocol: self.inner.version.to_owned(),
                user_agent: self.user_agent(),
            })
            .build();
        *self.inner.logcontext.borrow_mut() = Some(context.clone());
        self.set_header("Server", &self.inner.site.config.server_version_string);
        let _preserve = PreserveLoggingContext::new(&context);
        self.started_processing("JsonResource");
        let resource = self.inner.site.resource.clone();
        resource.render(self);
    }

    /// `_started_processing(servlet_name)`.
    fn started_processing(&self, servlet_name: &str) {
        self.inner.start_time.set(self.now());
        self.set_servlet_name(servlet_name);
        let site = &self.inner.site;
        log::debug!(
            target: &site.access_logger,
            "{} - {} - Received request: {} {}",
            self.inner.client_ip,
            site.config.site_tag,
            self.inner.method,
            self.get_redacted_uri()
        );
        site.emit(&SiteEvent::RequestReceived {
            request_id: self.request_id(),
            method: self.inner.method.clone(),
            uri: self.get_redacted_uri(),
        });
    }

    /// The end of [`processing`](Self::processing).
    fn processing_ended(&self) {
        if !self.inner.responded.get() && !std::thread::panicking() {
            // The handler's coroutine was dropped before it answered: it was
            // cancelled while awaiting something that is not a Deferred
            // (which cannot be cancelled from the inside). Answer as a
            // CancelledError coming out of that await would have.
            return_json_error(&Failure::new(CancelledError), self);
        }
        self.inner.processing_finished_time.set(Some(self.now()));
        self.inner.is_processing.set(false);
        if self.inner.finish_time.get().is_some() {
            self.finished_processing();
        }
    }

    /// `_finished_processing()`: the access-log line, once.
    fn finished_processing(&self) {
        if self.inner.logged.replace(true) {
            return;
        }
        let Some(finish_time) = self.inner.finish_time.get() else {
            self.inner.logged.set(false);
            return;
        };
        let processing_finished = match self.inner.processing_finished_time.get() {
            Some(t) => t,
            None => {
                let now = self.now();
                self.inner.processing_finished_time.set(Some(now));
                now
            }
        };
        let site = &self.inner.site;
        let entry = AccessLogEntry {
            request_id: self.request_id(),
            client_ip: self.inner.client_ip.clone(),
            site_tag: site.config.site_tag.clone(),
            requester: self.requester(),
            processing_time: processing_finished - self.inner.start_time.get(),
            response_send_time: finish_time - processing_finished,
            sent_length: self.inner.sent_length.get(),
            code: self.inner.code.get(),
            finished: self.inner.finished.get(),
            method: self.inner.method.clone(),
            uri: self.get_redacted_uri(),
            protocol: self.inner.version.to_owned(),
            user_agent: {
                let ua = self.user_agent();
                if ua.is_empty() { "-".to_owned() } else { ua }
            },
            servlet_name: self.servlet_name(),
        };
        let level = if self.inner.path == "/health" || self.inner.method == "OPTIONS" {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(target: &site.access_logger, level, "{entry}");
        site.emit(&SiteEvent::Processed(entry));
    }

    /// `request.connectionLost(reason)`: the client went away before the
    /// response was sent. In the request's context: logs it, and if a
    /// handler is processing, cancels it (in the sentinel context) when it
    /// is cancellable, or lets it run to completion otherwise; if none is,
    /// writes the access-log line now.
    pub(crate) fn connection_lost(&self, reason: &Failure) {
        self.inner.finish_time.set(Some(self.now()));
        self.inner.disconnected.set(true);
        *self.inner.channel.borrow_mut() = Weak::new();
        let Some(context) = self.logcontext() else {
            log::info!(
                target: "synapse.http.site",
                "Connection from {} lost before request headers were read",
                self.inner.client_ip
            );
            return;
        };
        let _preserve = PreserveLoggingContext::new(&context);
        log::info!(
            target: "synapse.http.site",
            "Connection from client lost before response was sent ({})",
            reason.message()
        );
        self.inner.site.emit(&SiteEvent::ClientDisconnected {
            request_id: self.request_id(),
        });
        if self.inner.is_processing.get() {
            if self.inner.is_render_cancellable.get() {
                match self.render_deferred() {
                    Some(d) => {
                        // with PreserveLoggingContext(): self.render_deferred.cancel()
                        let _sentinel = PreserveLoggingContext::sentinel();
                        if let Err(failure) = d.cancel() {
                            log::error!(
                                target: "synapse.http.site",
                                "Cancelling the request's handler failed: {failure}"
                            );
                        }
                    }
                    None => log::error!(
                        target: "synapse.http.site",
                        "Connection from client lost, but have no Deferred to cancel even \
                         though the request is marked as cancellable."
                    ),
                }
            }
        } else {
            self.finished_processing();
        }
    }

    /// `request.channel.forceAbortClient()`, if the connection is still
    /// this request's.
    pub(crate) fn abort_connection(&self) {
        let channel = self.inner.channel.borrow().upgrade();
        if let Some(channel) = channel {
            channel.abort();
        }
    }

    /// `respond_with_json`'s check: the code is recorded; if the client is
    /// gone, the response is dropped with Synapse's warning and `false` is
    /// returned.
    pub(crate) fn prepare_response(&self, code: u16) -> bool {
        self.inner.responded.set(true);
        self.set_response_code(code);
        if self.inner.disconnected.get() {
            log::warn!(
                target: "synapse.http.site",
                "Not sending response to request {self:?}, already disconnected."
            );
            self.inner.site.emit(&SiteEvent::ResponseDropped {
                request_id: self.request_id(),
                code,
            });
            return false;
        }
        true
    }

    /// Whether two handles are the same request.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let channel = make_request(&site, "GET", "/", b"");
    /// assert!(channel.request().unwrap().ptr_eq(&channel.request().unwrap()));
    /// ```
    pub fn ptr_eq(&self, other: &SynapseRequest) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Synapse's `repr(request)`:
/// `<SynapseRequest at 0x… method='GET' uri='/x' clientproto='HTTP/1.1' site='client'>`.
impl fmt::Debug for SynapseRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<SynapseRequest at {:#x} method='{}' uri='{}' clientproto='{}' site='{}'>",
            Rc::as_ptr(&self.inner) as usize,
            self.inner.method,
            self.get_redacted_uri(),
            self.inner.version,
            self.inner.site.config.site_tag
        )
    }
}

/// The guard of `with request.processing():` (see
/// [`SynapseRequest::processing`]). Dropping it ends processing.
///
/// ```
/// # use twisted_compat::http::*;
/// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
/// let request = make_request(&site, "GET", "/missing", b"").request().unwrap();
/// let guard: ProcessingGuard = request.processing().unwrap();
/// assert!(guard.request().is_processing());
/// ```
#[must_use = "processing ends when the guard is dropped"]
pub struct ProcessingGuard {
    request: SynapseRequest,
}

impl ProcessingGuard {
    /// The request being processed.
    ///
    /// See [`ProcessingGuard`] for an example.
    ///
    /// ```
    /// # use twisted_compat::http::*;
    /// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
    /// let request = make_request(&site, "GET", "/missing", b"").request().unwrap();
    /// assert!(request.processing().unwrap().request().ptr_eq(&request));
    /// ```
    pub fn request(&self) -> &SynapseRequest {
        &self.request
    }
}

impl fmt::Debug for ProcessingGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProcessingGuard")
            .field(&self.request)
            .finish()
    }
}

impl Drop for ProcessingGuard {
    fn drop(&mut self) {
        self.request.processing_ended();
    }
}

/// `urllib.parse.unquote`: percent-decoding, invalid escapes kept as they
/// are, invalid UTF-8 replaced.
pub(crate) fn unquote(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (
                (bytes[i + 1] as char).to_digit(16),
                (bytes[i + 2] as char).to_digit(16),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Synapse's `redact_uri`.
fn redact_uri(uri: &str) -> String {
    let once = redact_param(
        uri,
        &["access_token=", "access%5Ftoken=", "access%5ftoken="],
    );
    redact_param(
        &once,
        &["client_secret=", "client%5Fsecret=", "client%5fsecret="],
    )
}

/// Replaces the value of the last of `keys` after the `?` by `<redacted>`
/// (the regex `(\?.*KEY=)[^&]*(.*)$`, whose greedy `.*` finds the last).
fn redact_param(uri: &str, keys: &[&str]) -> String {
    let Some(q) = uri.find('?') else {
        return uri.to_owned();
    };
    let found = keys
        .iter()
        .filter_map(|k| uri[q..].rfind(k).map(|at| (q + at, k.len())))
        .max_by_key(|(at, _)| *at);
    let Some((at, len)) = found else {
        return uri.to_owned();
    };
    let value_start = at + len;
    let value_end = uri[value_start..]
        .find('&')
        .map_or(uri.len(), |e| value_start + e);
    format!("{}<redacted>{}", &uri[..value_start], &uri[value_end..])
}

/// Twisted's `RESPONSES` reason phrases (`Unknown Status` otherwise, as
/// Twisted writes for 499).
pub(crate) fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown Status",
    }
}

/// An RFC 9110 `Date` value (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{weekday}, {day:02} {month_name} {year} {hour:02}:{minute:02}:{second:02} GMT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(http_date(t), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_uri("/a"), "/a");
        assert_eq!(
            redact_uri("/a?access_token=x&access_token=y&b=1"),
            "/a?access_token=x&access_token=<redacted>&b=1"
        );
        assert_eq!(
            redact_uri("/a?client_secret=s&access%5Ftoken=t"),
            "/a?client_secret=<redacted>&access%5Ftoken=<redacted>"
        );
    }

    #[test]
    fn unquoting() {
        assert_eq!(unquote("%21a%2"), "!a%2");
        assert_eq!(unquote("%e2%82%ac"), "€");
    }
}
