//! Synapse's HTTP request path on the reactor: a small HTTP/1.1 server
//! ([`SynapseSite`], [`HttpChannel`]), servlets registered by method and
//! path pattern ([`JsonResource::register_paths`]) answering `(code,
//! json)`, one logging context per request, an access-log line per request,
//! and cancellation of [`cancellable`](macro@crate::cancellable) handlers
//! when their client disconnects. [`FakeChannel`] and [`make_request`]
//! drive a site in memory, for tests.
//!
//! ```
//! use twisted_compat::{cancellable, Clock, Failure};
//! use twisted_compat::http::*;
//!
//! struct RoomServlet { clock: Clock }
//!
//! impl RoomServlet {
//!     #[cancellable]
//!     async fn on_get(self: std::rc::Rc<Self>, request: SynapseRequest) -> Result<(u16, Json), Failure> {
//!         self.clock.sleep(5.0).await?;                      // await self.clock.sleep(5)
//!         Ok((200, Json::object([("room_id", request.path_arg("room_id"))])))
//!     }
//! }
//!
//! let reactor = twisted_reactor::Clock::new();
//! let servlet = std::rc::Rc::new(RoomServlet { clock: Clock::new(reactor.clone(), "hs") });
//! let resource = JsonResource::new();
//! let s = servlet.clone();
//! // http_server.register_paths("GET", client_patterns("/rooms/(?P<room_id>[^/]*)$"), self.on_GET, "RoomServlet")
//! resource.register_paths("GET", ["/rooms/{room_id}"], move |r| s.clone().on_get(r), "RoomServlet").unwrap();
//! let site = SynapseSite::new(SiteConfig::new("client", "hs"), resource, reactor.clone());
//!
//! let finished = make_request(&site, "GET", "/rooms/!a", b"");
//! finished.await_result(&reactor, 10.0).unwrap();
//! assert_eq!(finished.json_body().unwrap(), Json::object([("room_id", "!a")]));
//!
//! let cancelled = make_request(&site, "GET", "/rooms/!b", b"");
//! cancelled.disconnect();                                   // the client goes away
//! assert_eq!(cancelled.request().unwrap().code(), 499);      // handler cancelled, 499 recorded, nothing sent
//! assert!(cancelled.written().is_empty());
//! ```
//!
//! # The request path
//!
//! | Synapse / Twisted | here |
//! |---|---|
//! | `SynapseSite`, `listenTCP(port, site)` | [`SynapseSite`], [`SynapseSite::listen_tcp`] ([`SiteConfig`]) |
//! | `HTTPChannel` (`dataReceived`, `connectionLost`, `requestDone`) | [`HttpChannel`] over an [`HttpTransport`]; [`HttpProtocol`] on TCP |
//! | `SynapseRequest` (`render`, `processing()`, `finish`, `connectionLost`, `_finished_processing`) | [`SynapseRequest`], [`ProcessingGuard`] |
//! | `JsonResource.register_paths(method, patterns, callback, servlet_classname)` | [`JsonResource::register_paths`] with [`PathPattern`]s |
//! | `_AsyncResource.render` / `_async_render_wrapper` / `wrap_async_request_handler` | the render path of [`JsonResource`] |
//! | `respond_with_json`, `return_json_error`, `set_cors_headers` | [`respond_with_json`], [`return_json_error`], [`set_cors_headers`] |
//! | `SynapseError`, `UnrecognizedRequestError`, `Codes` | [`SynapseError`], [`SynapseError::unrecognized`], [`Codes`] |
//! | `HTTP_STATUS_REQUEST_CANCELLED` | [`HTTP_STATUS_REQUEST_CANCELLED`] |
//! | `encode_canonical_json`, `json_decoder` | [`Json`] |
//! | the `synapse.access.http.<tag>` access log | the `log` target of [`SynapseSite::access_logger`]; [`AccessLogEntry`] via [`SynapseSite::add_observer`] |
//! | `tests.server.make_request`, `FakeChannel` | [`make_request`], [`FakeChannel`] |
//! | `tests.http.server._base.make_request_with_cancellation_test` | [`make_request_with_cancellation_test`] |
//!
//! When a complete request has arrived, the request gets a logging context
//! named by its request id (`GET-0`: method and the site's sequence
//! number), carrying the request's details, with no parent; it is made
//! current with `PreserveLoggingContext`, never entered, so (as in
//! Synapse) it is never marked finished. In it, the resource finds the
//! handler (404, 405), sets `is_render_cancellable` from the handler's mark
//! and starts it through `run_in_background`, inside `request.processing()`;
//! that Deferred is `request.render_deferred`. The handler's value is sent
//! as canonical JSON; its failure as a JSON error (a [`SynapseError`]'s
//! code, 499 for `CancelledError`, 500 for anything else, panics included).
//! When processing has ended and the response has gone (or the client),
//! the access-log line is written, in the request's context.
//!
//! # When the client disconnects first
//!
//! `connection_lost` on the channel reaches the request in flight, which
//! records the finish time and, in its context, reports the disconnect:
//!
//! * a **cancellable** handler's `render_deferred` is cancelled, inside
//!   `PreserveLoggingContext()` (the sentinel), as Synapse does. When every
//!   await on the way cancels promptly, the `CancelledError` comes back up
//!   at once: the error response (499) is produced *inside*
//!   `connection_lost`, dropped because the client is gone ("Not sending
//!   response …"), and the access-log line shows `499!`;
//! * a **non-cancellable** handler runs to completion; its response is
//!   dropped the same way and the line shows its code with `!` (`200!`);
//! * if no handler is processing any more, the line is written now.
//!
//! Nothing is ever written to the dead connection. A handler that awaits
//! [`delay_cancellation`](crate::delay_cancellation) keeps processing until
//! the protected work is done, then ends with 499.
//!
//! # Connections
//!
//! HTTP/1.1 with keep-alive (HTTP/1.0 and `Connection: close` close after
//! the response). One request is handled at a time per connection;
//! pipelined requests are **serialised**: buffered while the one ahead is
//! handled (reading goes on so that a disconnect is noticed, up to
//! [`SiteConfig::eager_read_size`] bytes, then pauses), and served in order.
//! Bodies come with `Content-Length` or chunked. Limits: request line plus
//! headers at most [`SiteConfig::max_header_size`] bytes and
//! [`SiteConfig::max_headers`] headers (else `400`), body at most
//! [`SiteConfig::max_request_body_size`] (else `413 M_TOO_LARGE`, sent as
//! soon as the headers announce it or the chunks exceed it). Malformed
//! requests get Twisted's bare `400 Bad Request`. Each of these closes that
//! connection only; no access-log line is written for them (they have no
//! request context), a [`SiteEvent::Rejected`] is reported instead.
//!
//! Differences from Synapse, each for a reason: responses are encoded
//! inline (Synapse encodes on a thread pool: here the bodies are small and
//! the thread hop would add an await that changes nothing about
//! cancellation); a body over the limit gets 413 also when it is streamed
//! in chunks (Synapse aborts the connection then, without an answer);
//! request ids count per site (Synapse's counter is per process); there is
//! no idle timeout, no rate-limit pause, no OPTIONS/CORS pre-flight
//! resource, no resource-usage accounting (the access log shows zeros).

pub mod cancellation_test;
mod fake;
pub mod json;
mod parser;
mod request;
mod resource;
mod site;

pub use cancellation_test::make_request_with_cancellation_test;
pub use fake::{
    AwaitResultTimeout, FakeChannel, FakeResponse, make_request, parse_response, parse_response_for,
};
pub use json::{Json, JsonError};
pub use request::{ProcessingGuard, SynapseRequest};
pub use resource::{
    Codes, HTTP_STATUS_REQUEST_CANCELLED, JsonResource, PathPattern, PatternError, ServletResult,
    SynapseError, respond_with_json, return_json_error, set_cors_headers,
};
pub use site::{
    AccessLogEntry, HttpChannel, HttpProtocol, HttpTransport, SiteConfig, SiteEvent, SynapseSite,
};
