//! [`JsonResource`]: servlets registered by method and path pattern, and
//! the render path that runs them (Synapse's `synapse.http.server`:
//! `JsonResource`, `_AsyncResource`, `wrap_async_request_handler`,
//! `respond_with_json`, `return_json_error`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use twisted_deferred::{CancelledError, Deferred, Failure};

use crate::cancellable_marker::MaybeCancellable;
use crate::logcontext::run_in_background;

use super::json::Json;
use super::request::{SynapseRequest, unquote};

/// `HTTP_STATUS_REQUEST_CANCELLED`: the code recorded for a request whose
/// handler was cancelled because its client disconnected (nginx's 499).
/// Clients never see it: the response is not sent.
///
/// ```
/// assert_eq!(twisted_compat::http::HTTP_STATUS_REQUEST_CANCELLED, 499);
/// ```
pub const HTTP_STATUS_REQUEST_CANCELLED: u16 = 499;

/// Matrix error codes (`synapse.api.errors.Codes`) used here.
///
/// ```
/// use twisted_compat::http::Codes;
/// assert_eq!(Codes::UNRECOGNIZED, "M_UNRECOGNIZED");          // Codes.UNRECOGNIZED
/// ```
#[derive(Debug)]
pub struct Codes;

impl Codes {
    /// `M_UNKNOWN`.
    pub const UNKNOWN: &'static str = "M_UNKNOWN";
    /// `M_UNRECOGNIZED`: no such endpoint (404) or method (405).
    pub const UNRECOGNIZED: &'static str = "M_UNRECOGNIZED";
    /// `M_NOT_JSON`: the body is not JSON.
    pub const NOT_JSON: &'static str = "M_NOT_JSON";
    /// `M_BAD_JSON`: the body is JSON of the wrong shape.
    pub const BAD_JSON: &'static str = "M_BAD_JSON";
    /// `M_TOO_LARGE`: the body is over the limit (413).
    pub const TOO_LARGE: &'static str = "M_TOO_LARGE";
    /// `M_NOT_FOUND`.
    pub const NOT_FOUND: &'static str = "M_NOT_FOUND";
    /// `M_MISSING_PARAM`.
    pub const MISSING_PARAM: &'static str = "M_MISSING_PARAM";
    /// `M_INVALID_PARAM`.
    pub const INVALID_PARAM: &'static str = "M_INVALID_PARAM";
}

/// Synapse's `SynapseError(code, msg, errcode)`: an error a handler raises
/// to answer with `code` and `{"errcode": errcode, "error": msg}`. Raise it
/// as a [`Failure`] (`Err(Failure::new(err))`, or `?` on a
/// `Result<_, SynapseError>`).
///
/// ```
/// use twisted_compat::http::{Codes, SynapseError};
/// // raise SynapseError(400, "Missing room_id", Codes.MISSING_PARAM)
/// let e = SynapseError::new(400, "Missing room_id", Codes::MISSING_PARAM);
/// assert_eq!(e.error_dict().to_string(), r#"{"errcode":"M_MISSING_PARAM","error":"Missing room_id"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynapseError {
    /// The HTTP status code.
    pub code: u16,
    /// The human-readable message (`error`).
    pub msg: String,
    /// The Matrix error code (`errcode`).
    pub errcode: String,
}

impl SynapseError {
    /// `SynapseError(code, msg, errcode)`.
    ///
    /// ```
    /// use twisted_compat::http::{Codes, SynapseError};
    /// let e = SynapseError::new(404, "Unknown room", Codes::NOT_FOUND);
    /// assert_eq!(e.code, 404);
    /// ```
    pub fn new(code: u16, msg: impl Into<String>, errcode: &str) -> SynapseError {
        SynapseError {
            code,
            msg: msg.into(),
            errcode: errcode.to_owned(),
        }
    }

    /// `UnrecognizedRequestError(code=code)`: `M_UNRECOGNIZED`,
    /// "Unrecognized request" (what unknown paths and methods get).
    ///
    /// ```
    /// use twisted_compat::http::SynapseError;
    /// assert_eq!(SynapseError::unrecognized(405).errcode, "M_UNRECOGNIZED");
    /// ```
    pub fn unrecognized(code: u16) -> SynapseError {
        SynapseError::new(code, "Unrecognized request", Codes::UNRECOGNIZED)
    }

    /// `error_dict()`: the JSON body.
    ///
    /// See [`SynapseError`] for an example.
    ///
    /// ```
    /// use twisted_compat::http::SynapseError;
    /// let body = SynapseError::unrecognized(404).error_dict();
    /// assert_eq!(body.get("error").and_then(|e| e.as_str()), Some("Unrecognized request"));
    /// ```
    pub fn error_dict(&self) -> Json {
        Json::object([
            ("errcode", self.errcode.as_str()),
            ("error", self.msg.as_str()),
        ])
    }
}

impl fmt::Display for SynapseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.msg)
    }
}

impl std::error::Error for SynapseError {}

/// A path pattern given to [`JsonResource::register_paths`] could not be
/// parsed.
///
/// ```
/// use twisted_compat::http::JsonResource;
/// let r = JsonResource::new();
/// let e = r.register_paths("GET", ["no-slash"], |_req| async { unreachable!() }, "S").unwrap_err();
/// assert_eq!(e.pattern, "no-slash");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid path pattern {:?}: {}",
            self.pattern, self.reason
        )
    }
}

impl std::error::Error for PatternError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: one segment (`[^/]*`).
    Arg(String),
    /// `{name*}`, last: the rest of the path (`.*`).
    Rest(String),
}

/// A path pattern: `/`-separated literal segments and `{name}` arguments
/// (one whole segment each, Synapse's `(?P<name>[^/]*)`), optionally
/// ending with `{name*}` (the rest of the path). It matches the whole path
/// (Synapse's patterns end in `$`). Arguments are percent-decoded.
///
/// ```
/// use twisted_compat::http::PathPattern;
/// // re.compile("^/_matrix/client/v3/rooms/(?P<room_id>[^/]*)/state/(?P<rest>.*)$")
/// let p = PathPattern::parse("/_matrix/client/v3/rooms/{room_id}/state/{rest*}").unwrap();
/// let args = p.matches("/_matrix/client/v3/rooms/%21r/state/m.room.name/").unwrap();
/// assert_eq!(args["room_id"], "!r");
/// assert_eq!(args["rest"], "m.room.name/");
/// assert!(p.matches("/_matrix/client/v3/rooms/!r").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
}

impl PathPattern {
    /// Parses a pattern.
    ///
    /// ```
    /// use twisted_compat::http::PathPattern;
    /// assert!(PathPattern::parse("/a/{b}").is_ok());
    /// assert!(PathPattern::parse("/a/{b*}/c").is_err());           // a rest argument must come last
    /// ```
    pub fn parse(pattern: &str) -> Result<PathPattern, PatternError> {
        let error = |reason| PatternError {
            pattern: pattern.to_owned(),
            reason,
        };
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(error("a pattern starts with '/'"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut names = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            if let Some(inner) = part.strip_prefix('{') {
                let Some(name) = inner.strip_suffix('}') else {
                    return Err(error("an argument is a whole segment: {name}"));
                };
                let (name, rest) = match name.strip_suffix('*') {
                    Some(n) => (n, true),
                    None => (name, false),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(error("an argument name is letters, digits and '_'"));
                }
                if names.contains(&name) {
                    return Err(error("an argument name is used twice"));
                }
                names.push(name);
                if rest {
                    if i + 1 != parts.len() {
                        return Err(error("a {name*} argument must come last"));
                    }
                    segments.push(Segment::Rest(name.to_owned()));
                } else {
                    segments.push(Segment::Arg(name.to_owned()));
                }
            } else if part.contains(['{', '}']) {
                return Err(error("braces are only allowed around a whole segment"));
            } else {
                segments.push(Segment::Literal((*part).to_owned()));
            }
        }
        Ok(PathPattern {
            source: pattern.to_owned(),
            segments,
        })
    }

    /// The pattern as written.
    ///
    /// ```
    /// use twisted_compat::http::PathPattern;
    /// assert_eq!(PathPattern::parse("/a/{b}").unwrap().as_str(), "/a/{b}");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// `pattern.match(path)`: the arguments (percent-decoded) if `path`
    /// matches.
    ///
    /// See [`PathPattern`] for an example.
    ///
    /// ```
    /// use twisted_compat::http::PathPattern;
    /// let p = PathPattern::parse("/a/{b}").unwrap();
    /// assert_eq!(p.matches("/a/x%20y").unwrap()["b"], "x y");
    /// assert!(p.matches("/a/x/y").is_none());
    /// ```
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let rest = path.strip_prefix('/')?;
        let mut args = BTreeMap::new();
        let mut remaining = Some(rest);
        for segment in &self.segments {
            let current = remaining?;
            if let Segment::Rest(name) = segment {
                args.insert(name.clone(), unquote(current));
                remaining = None;
                continue;
            }
            let (part, next) = match current.split_once('/') {
                Some((part, next)) => (part, Some(next)),
                None => (current, None),
            };
            match segment {
                Segment::Literal(literal) if literal == part => {}
                Segment::Literal(_) => return None,
                Segment::Arg(name) => {
                    args.insert(name.clone(), unquote(part));
                }
                Segment::Rest(_) => {}
            }
            remaining = next;
        }
        remaining.is_none().then_some(args)
    }
}

/// What a servlet handler returns: Synapse's `(code, json_object)` tuple
/// or a raised exception.
pub type ServletResult = Result<(u16, Json), Failure>;

type BoxedHandler = Rc<dyn Fn(SynapseRequest) -> Pin<Box<dyn Future<Output = ServletResult>>>>;

/// `_PathEntry(callback, servlet_classname)`, plus the callback's mark.
struct PathEntry {
    callback: BoxedHandler,
    servlet_classname: String,
    cancellable: bool,
}

struct Route {
    pattern: PathPattern,
    methods: Vec<(String, Rc<PathEntry>)>,
}

struct ResourceInner {
    routes: RefCell<Vec<Route>>,
}

/// Synapse's `JsonResource`: servlets registered by method and path
/// pattern with [`register_paths`](JsonResource::register_paths), each
/// answering with `(code, json)`; errors become JSON error responses. A
/// cheap handle; clones share their routes.
///
/// Rendering a request (Synapse's `_AsyncResource.render` and
/// `_async_render_wrapper`): the handler is looked up (404 for an unknown
/// path, 405 for a known path without the method; `HEAD` is treated as
/// `GET`), `request.is_render_cancellable` is set from its mark, and it
/// runs through `run_in_background`, inside `request.processing()`, in the
/// request's logging context; its Deferred is `request.render_deferred`.
/// Its value is sent with [`respond_with_json`]; a failure with
/// [`return_json_error`] (a [`SynapseError`] gives its code, a
/// `CancelledError` 499, anything else, panics included, 500).
///
/// ```
/// use twisted_compat::http::*;
///
/// let resource = JsonResource::new();                       // JsonResource(hs)
/// resource.register_paths("GET", ["/ping"], |_request| async {
///     Ok((200, Json::object([("pong", true)])))
/// }, "PingServlet").unwrap();
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), resource, twisted_reactor::Clock::new());
/// assert_eq!(make_request(&site, "GET", "/ping", b"").code(), Some(200));
/// assert_eq!(make_request(&site, "HEAD", "/ping", b"").code(), Some(200));
/// assert_eq!(make_request(&site, "POST", "/ping", b"").code(), Some(405));
/// assert_eq!(make_request(&site, "GET", "/pong", b"").code(), Some(404));
/// ```
#[derive(Clone)]
pub struct JsonResource {
    inner: Rc<ResourceInner>,
}

impl Default for JsonResource {
    fn default() -> Self {
        JsonResource::new()
    }
}

impl fmt::Debug for JsonResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let routes = self.inner.routes.borrow();
        let mut list = f.debug_list();
        for route in routes.iter() {
            for (method, entry) in &route.methods {
                list.entry(&format_args!(
                    "{method} {} -> {}{}",
                    route.pattern.as_str(),
                    entry.servlet_classname,
                    if entry.cancellable {
                        " (cancellable)"
                    } else {
                        ""
                    }
                ));
            }
        }
        list.finish()
    }
}

impl JsonResource {
    /// `JsonResource(hs)`: no routes yet.
    ///
    /// ```
    /// let resource = twisted_compat::http::JsonResource::new();
    /// assert_eq!(format!("{resource:?}"), "[]");
    /// ```
    pub fn new() -> JsonResource {
        JsonResource {
            inner: Rc::new(ResourceInner {
                routes: RefCell::new(Vec::new()),
            }),
        }
    }

    /// `register_paths(method, path_patterns, callback, servlet_classname)`:
    /// routes `method` requests whose path matches one of `patterns` (see
    /// [`PathPattern`]) to `callback`. Patterns are tried in the order they
    /// were first registered; registering a pattern and method again
    /// replaces the callback.
    ///
    /// `callback` takes the request and returns an `async` block (or any
    /// future), a [`Deferred`], a `Result`, or the value of a function
    /// marked [`cancellable`](macro@crate::cancellable), giving
    /// `(code, json)`. Its mark is read here, as Synapse reads
    /// `is_function_cancellable(callback)`: a cancellable callback is
    /// cancelled when its client disconnects; any other runs to completion
    /// and its response is dropped.
    ///
    /// ```
    /// use twisted_compat::{cancellable, Failure};
    /// use twisted_compat::http::*;
    ///
    /// #[cancellable]
    /// async fn on_get(request: SynapseRequest) -> Result<(u16, Json), Failure> {
    ///     Ok((200, Json::from(request.path_arg("id"))))
    /// }
    /// let resource = JsonResource::new();
    /// // http_server.register_paths("GET", client_patterns(...), self.on_GET, "ThingServlet")
    /// resource.register_paths("GET", ["/things/{id}"], on_get, "ThingServlet").unwrap();
    /// assert_eq!(format!("{resource:?}"), "[GET /things/{id} -> ThingServlet (cancellable)]");
    /// ```
    pub fn register_paths<F, R, M, P>(
        &self,
        method: &str,
        patterns: impl IntoIterator<Item = P>,
        callback: F,
        servlet_classname: &str,
    ) -> Result<(), PatternError>
    where
        F: Fn(SynapseRequest) -> R + 'static,
        R: MaybeCancellable<M, Output = ServletResult> + 'static,
        P: AsRef<str>,
    {
        let patterns = patterns
            .into_iter()
            .map(|p| PathPattern::parse(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let callback: BoxedHandler = Rc::new(move |request| callback(request).into_awaitable());
        let entry = Rc::new(PathEntry {
            callback,
            servlet_classname: servlet_classname.to_owned(),
            cancellable: R::CANCELLABLE,
        });
        let method = method.to_ascii_uppercase();
        let mut routes = self.inner.routes.borrow_mut();
        for pattern in patterns {
            log::debug!(
                target: "synapse.http.server",
                "Registering for {method} {}",
                pattern.as_str()
            );
            let route = match routes.iter_mut().position(|r| r.pattern == pattern) {
                Some(i) => &mut routes[i],
                None => {
                    routes.push(Route {
                        pattern,
                        methods: Vec::new(),
                    });
                    let last = routes.len() - 1;
                    &mut routes[last]
                }
            };
            route.methods.retain(|(m, _)| *m != method);
            route.methods.push((method.clone(), entry.clone()));
        }
        Ok(())
    }

    /// `_get_handler_for_request(request)`.
    fn handler_for(
        &self,
        request: &SynapseRequest,
    ) -> Result<(Rc<PathEntry>, BTreeMap<String, String>), SynapseError> {
        let method = match request.method() {
            "HEAD" => "GET",
            other => other,
        };
        let routes = self.inner.routes.borrow();
        for route in routes.iter() {
            if let Some(args) = route.pattern.matches(request.path()) {
                return match route.methods.iter().find(|(m, _)| m == method) {
                    Some((_, entry)) => Ok((entry.clone(), args)),
                    None => Err(SynapseError::unrecognized(405)),
                };
            }
        }
        Err(SynapseError::unrecognized(404))
    }

    /// `_AsyncResource.render(request)`: starts the wrapper with
    /// `run_in_background` and keeps its Deferred as the request's
    /// `render_deferred`.
    pub(crate) fn render(&self, request: &SynapseRequest) {
        let resource = self.clone();
        let req = request.clone();
        let d: Deferred<()> = run_in_background(move || async move {
            resource.async_render_wrapper(req).await;
            Ok::<(), Failure>(())
        });
        request.set_render_deferred(d);
    }

    /// `wrapped_async_request_handler` around `_async_render_wrapper`.
    async fn async_render_wrapper(self, request: SynapseRequest) {
        let processing = match request.processing() {
            Ok(guard) => guard,
            Err(failure) => {
                log::error!(target: "synapse.http.server", "{failure}");
                return;
            }
        };
        let outcome = CatchPanic(Box::pin(self.async_render(request.clone()))).await;
        match outcome {
            Ok((code, json)) => respond_with_json(&request, code, &json, true),
            Err(failure) => return_json_error(&failure, &request),
        }
        drop(processing);
    }

    /// `JsonResource._async_render(request)`.
    async fn async_render(self, request: SynapseRequest) -> ServletResult {
        let (entry, args) = self.handler_for(&request)?;
        request.set_render_cancellable(entry.cancellable);
        request.set_servlet_name(&entry.servlet_classname);
        request.set_path_args(args);
        (entry.callback)(request).await
    }
}

/// Polls a future, turning a panic into a failure (the response becomes a
/// 500 instead of never coming).
struct CatchPanic<'a>(Pin<Box<dyn Future<Output = ServletResult> + 'a>>);

impl Future for CatchPanic<'_> {
    type Output = ServletResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ServletResult> {
        let inner = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => Poll::Ready(Err(Failure::from_panic(panic))),
        }
    }
}

/// `respond_with_json(request, code, json_object, send_cors)`: records
/// `code` on the request and, unless its client is gone (then Synapse's
/// warning "Not sending response to request …, already disconnected." is
/// logged and nothing is written), sends `json` canonically encoded with
/// `Content-Type: application/json`, a default `Cache-Control`, and the
/// CORS headers if `send_cors`. Synapse encodes on a thread; this encodes
/// inline.
///
/// ```
/// use twisted_compat::http::*;
/// let resource = JsonResource::new();
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), resource, twisted_reactor::Clock::new());
/// let channel = make_request(&site, "GET", "/missing", b"");   // answered 404 through respond_with_json
/// let response = channel.response().unwrap();
/// assert_eq!(response.header("content-type"), Some("application/json"));
/// assert_eq!(response.header("cache-control"), Some("no-cache, no-store, must-revalidate"));
/// assert_eq!(response.header("access-control-allow-origin"), Some("*"));
/// ```
pub fn respond_with_json(request: &SynapseRequest, code: u16, json: &Json, send_cors: bool) {
    if !request.prepare_response(code) {
        return;
    }
    request.set_header("Content-Type", "application/json");
    if !request.has_response_header("Cache-Control") {
        request.set_header("Cache-Control", "no-cache, no-store, must-revalidate");
    }
    if send_cors {
        set_cors_headers(request);
    }
    request.write_response(&json.encode());
}

/// `set_cors_headers(request)`.
///
/// ```
/// use twisted_compat::http::*;
/// # let site = SynapseSite::new(SiteConfig::new("client", "hs"), JsonResource::new(), twisted_reactor::Clock::new());
/// let request = make_request(&site, "GET", "/missing", b"").request().unwrap();
/// set_cors_headers(&request);
/// assert!(request.has_response_header("Access-Control-Allow-Methods"));
/// ```
pub fn set_cors_headers(request: &SynapseRequest) {
    request.set_header("Access-Control-Allow-Origin", "*");
    request.set_header(
        "Access-Control-Allow-Methods",
        "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    );
    request.set_header(
        "Access-Control-Allow-Headers",
        "X-Requested-With, Content-Type, Authorization, Date",
    );
    request.set_header("Access-Control-Expose-Headers", "Synapse-Trace-Id, Server");
}

/// `return_json_error(failure, request)`: the error response for a failed
/// handler. A [`SynapseError`] gives its code and error dict; a
/// `CancelledError` gives 499 `{"errcode": "M_UNKNOWN", "error": "Request
/// cancelled"}` (logged as an error if the client had not disconnected:
/// "Got cancellation before client disconnection"); anything else gives 500
/// `{"errcode": "M_UNKNOWN", "error": "Internal server error"}`, logged. If
/// response bytes had already gone out, the connection is aborted instead.
///
/// ```
/// use twisted_compat::{CancelledError, Failure};
/// use twisted_compat::http::*;
/// let resource = JsonResource::new();
/// resource.register_paths("GET", ["/c"], |_r| async { Err(Failure::new(CancelledError)) }, "C").unwrap();
/// let site = SynapseSite::new(SiteConfig::new("client", "hs"), resource, twisted_reactor::Clock::new());
/// let channel = make_request(&site, "GET", "/c", b"");
/// assert_eq!(channel.code(), Some(499));                       // a CancelledError without a disconnect reaches the client
/// assert_eq!(channel.json_body().unwrap().get("error").unwrap().as_str(), Some("Request cancelled"));
/// ```
pub fn return_json_error(failure: &Failure, request: &SynapseRequest) {
    let (code, body) = if let Some(error) = failure.downcast_ref::<SynapseError>() {
        log::info!(
            target: "synapse.http.server",
            "{request:?} SynapseError: {} - {}",
            error.code,
            error.msg
        );
        (error.code, error.error_dict())
    } else if failure.check::<CancelledError>() {
        if !request.is_disconnected() {
            log::error!(
                target: "synapse.http.server",
                "Got cancellation before client disconnection from {:?}: {request:?}",
                request.servlet_name()
            );
        }
        (
            HTTP_STATUS_REQUEST_CANCELLED,
            Json::object([("errcode", Codes::UNKNOWN), ("error", "Request cancelled")]),
        )
    } else {
        log::error!(
            target: "synapse.http.server",
            "Failed handle request via {:?}: {request:?}: {failure}",
            request.servlet_name()
        );
        (
            500,
            Json::object([
                ("errcode", Codes::UNKNOWN),
                ("error", "Internal server error"),
            ]),
        )
    };
    if request.started_writing() {
        request.abort_connection();
    } else {
        respond_with_json(request, code, &body, true);
    }
}
