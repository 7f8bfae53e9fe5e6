//! Synapse's logging contexts ("logcontexts"): `synapse.logging.context`.
//!
//! A logging context names the unit of work (a request, a background
//! process) that the code running now belongs to. Each thread has a *current*
//! context, the [`SENTINEL_CONTEXT`] when there is none. Deferreds know
//! nothing about contexts: a callback runs in whatever context is current
//! when its Deferred fires. Synapse therefore follows two rules, which the
//! helpers of this module implement:
//!
//! 1. A function returning an awaitable returns in the context it started in
//!    if the awaitable is complete, and with the sentinel current otherwise,
//!    restoring its caller's context before anything resumes
//!    ([`make_deferred_yieldable`]).
//! 2. An awaitable is awaited straight away; work that is not awaited is
//!    started with [`run_in_background`] (or in a [`PreserveLoggingContext`]
//!    block).
//!
//! ```
//! use twisted_compat::{current_context, make_deferred_yieldable, Deferred, LoggingContext};
//!
//! let request = LoggingContext::new("GET-1", "example.com");
//! let scope = request.entered();                       // with LoggingContext(...):
//! let d: Deferred<i32> = Deferred::new();
//! let d = make_deferred_yieldable(d);                  //     d = make_deferred_yieldable(d)
//! assert!(current_context().is_sentinel());            //     (cleared while d is pending)
//! d.callback(1).unwrap();                              // (the reactor fires d)
//! assert_eq!(current_context(), request);              // the restore link brought it back
//! drop(scope);                                         // end of the with block
//! assert!(current_context().is_sentinel());
//! assert!(request.finished());
//! ```
//!
//! # Misuse reports
//!
//! Every misuse Synapse detects (re-starting a finished context, finding
//! another context than the one expected, …) is reported through one hook,
//! Synapse's `logcontext_error`: [`logcontext_error`] calls this thread's
//! hook ([`set_logcontext_error_hook`], [`capture_logcontext_errors`]) or,
//! without one, logs a warning through the [`log`] facade. As in Synapse, a
//! report never changes what happens: the switch it complains about takes
//! place anyway.
//!
//! What Synapse logs rather than reports is logged here too, at error level
//! through the [`log`] facade: CPU time going backwards ("utime went
//! backwards! …", counted as 0) and a background process's context started
//! or exited after its process ended ("Background process re-entered
//! without a proc: …", "… exited without a proc: …").
//!
//! # Resource accounting
//!
//! Each context accounts the resources used while it is current: CPU time
//! from the thread's CPU clock, read once per switch by
//! [`set_current_context`] and shared by the `stop` of the old context and
//! the `start` of the new one (see [`get_thread_resource_usage`] for the
//! clock), and the database counters code reports
//! ([`LoggingContext::add_database_transaction`],
//! [`LoggingContext::add_database_scheduled`],
//! [`LoggingContext::record_event_fetch`]). Everything recorded is added at
//! once to the context and to each of its ancestors
//! ([`LoggingContext::parent_context`]); [`LoggingContext::get_resource_usage`]
//! returns a copy that includes the period running now.
//!
//! ```
//! use twisted_compat::LoggingContext;
//!
//! let request = LoggingContext::new("GET-1", "example.com");
//! // with LoggingContext(name="GET-1-db", server_name=..., parent_context=request) as db:
//! let db = LoggingContext::builder("GET-1-db", "example.com").parent_context(&request).build();
//! let scope = db.entered();
//! db.add_database_transaction(0.25).unwrap();          //     db.add_database_transaction(0.25)
//! drop(scope);
//! assert_eq!(request.get_resource_usage().db_txn_count, 1);   // credited to the parent at once
//! assert!(db.get_resource_usage().ru_utime >= 0.0);
//! ```
//!
//! # Threads
//!
//! Contexts are reference counted with [`Rc`] and therefore bound to the
//! thread that created them, which is what Synapse checks at run time
//! ("Started logcontext X on different thread"): here the compiler enforces
//! it. Each thread has its own current context.
//!
//! [`defer_to_thread`] and [`defer_to_threadpool`] run a function on a
//! worker thread in a context of its own, the child of the caller's. A
//! context cannot cross threads, so the child is made on the worker from a
//! `Send` description of the caller's (name, server name, request) and its
//! usage is added to the caller's context, and its ancestors, back on the
//! reactor thread, before the returned Deferred fires; see
//! [`defer_to_threadpool`].
//!
//! # Log records
//!
//! [`LoggingContextFilter`] wraps a [`log::Log`] and adds the current
//! context's name (as `request`), server name and request attributes to
//! each record's key-values, as Synapse's `LoggingContextFilter` does.
//!
//! # Map from Synapse
//!
//! | Synapse | here |
//! |---|---|
//! | `LoggingContext(name=, server_name=)` | [`LoggingContext::new`], [`LoggingContext::builder`] |
//! | `with ctx:` / `ctx.__enter__()` / `ctx.__exit__(…)` | [`LoggingContext::entered`] / [`LoggingContext::enter`] / [`LoggingContext::exit`] |
//! | `SENTINEL_CONTEXT`, `LoggingContextOrSentinel` | [`SENTINEL_CONTEXT`], [`LoggingContextOrSentinel`] |
//! | `current_context()`, `set_current_context(c)` | [`current_context`], [`set_current_context`] |
//! | `with PreserveLoggingContext(c):` | [`PreserveLoggingContext::new`] (a guard) |
//! | `nested_logging_context(suffix)` | [`nested_logging_context`] |
//! | `make_deferred_yieldable(d)` | [`make_deferred_yieldable`] |
//! | `run_in_background(f, *args)` | [`run_in_background`]`(move \|\| f(args))` |
//! | `preserve_fn(f)(*args)` | [`run_in_background`]`(move \|\| f(args))` |
//! | `run_coroutine_in_background(coro)` | [`run_coroutine_in_background`] |
//! | `logcontext_error(msg)` | [`logcontext_error`], [`LogcontextError`] |
//! | `run_as_background_process(desc, server_name, func)` | [`run_as_background_process`](crate::run_as_background_process) |
//! | `BackgroundProcessLoggingContext(name=, server_name=, instance_id=)` | [`background_process_logging_context`](crate::background_process::background_process_logging_context) |
//! | `ContextRequest` | [`ContextRequest`] |
//! | `ContextResourceUsage` | [`ContextResourceUsage`] |
//! | `ctx.start(rusage)`, `ctx.stop(rusage)` | [`LoggingContext::start_with`], [`LoggingContext::stop_with`] ([`LoggingContext::start`], [`LoggingContext::stop`] read the clock) |
//! | `get_thread_resource_usage()` | [`get_thread_resource_usage`], [`ThreadCpuUsage`] |
//! | `ctx.get_resource_usage()`, `ctx.add_cputime(u, s)` | [`LoggingContext::get_resource_usage`], [`LoggingContext::add_cputime`] |
//! | `ctx.add_database_transaction(s)`, `ctx.add_database_scheduled(s)`, `ctx.record_event_fetch(n)` | [`LoggingContext::add_database_transaction`], [`LoggingContext::add_database_scheduled`], [`LoggingContext::record_event_fetch`] |
//! | `defer_to_thread(reactor, f)`, `defer_to_threadpool(reactor, pool, f)` | [`defer_to_thread`], [`defer_to_threadpool`] |
//! | `LoggingContextFilter()` | [`LoggingContextFilter::wrap`] |

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use twisted_deferred::{Deferred, Failure, ensure_deferred, fail, succeed};

use crate::background_process::ProcessSlot;

mod filter;
mod resource_usage;
mod threads;

pub use filter::LoggingContextFilter;
pub use resource_usage::{
    ContextResourceUsage, InvalidDurationError, ThreadCpuUsage, get_thread_resource_usage,
};
pub use threads::{defer_to_thread, defer_to_threadpool};

use resource_usage::cputime_delta;

/// The attributes of the HTTP request a context works for: Synapse's
/// `ContextRequest`. A child context shares its parent's.
///
/// ```
/// use std::rc::Rc;
/// use twisted_compat::{ContextRequest, LoggingContext};
///
/// // ContextRequest(request_id="GET-1", method="GET", url="/sync", ...)
/// let request = ContextRequest {
///     request_id: "GET-1".into(),
///     method: "GET".into(),
///     url: "/sync".into(),
///     ..ContextRequest::default()
/// };
/// let ctx = LoggingContext::builder("GET-1", "example.com").request(request).build();
/// assert_eq!(ctx.request().unwrap().url, "/sync");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ContextRequest {
    /// `request_id`: the request's identifier, e.g. `GET-42`.
    pub request_id: String,
    /// `ip_address`: the client's address.
    pub ip_address: String,
    /// `site_tag`: the listener that received the request.
    pub site_tag: String,
    /// `requester`: who made the request, once known.
    pub requester: Option<String>,
    /// `authenticated_entity`: who authenticated it, once known.
    pub authenticated_entity: Option<String>,
    /// `method`: the HTTP method.
    pub method: String,
    /// `url`: the request's URL.
    pub url: String,
    /// `protocol`: the HTTP version.
    pub protocol: String,
    /// `user_agent`: the client's user agent.
    pub user_agent: String,
}

/// The server name the sentinel reports, and that a context nested in it
/// gets (Synapse's `unknown_server_from_sentinel_context`).
///
/// ```
/// use twisted_compat::{nested_logging_context, SENTINEL_SERVER_NAME};
/// let orphan = nested_logging_context("startup");   // from the sentinel context
/// assert_eq!(orphan.server_name(), SENTINEL_SERVER_NAME);
/// ```
pub const SENTINEL_SERVER_NAME: &str = "unknown_server_from_sentinel_context";

struct ContextInner {
    name: String,
    server_name: String,
    parent: Option<LoggingContext>,
    previous: LoggingContextOrSentinel,
    request: RefCell<Option<Rc<ContextRequest>>>,
    finished: Cell<bool>,
    /// Synapse's `usage_start`: the thread CPU snapshot taken by `start`,
    /// until the matching `stop` (the context is running).
    usage_start: Cell<Option<ThreadCpuUsage>>,
    /// Synapse's `_resource_usage`: what was accounted so far.
    usage: Cell<ContextResourceUsage>,
    /// Set on a background process's context: Synapse's
    /// `BackgroundProcessLoggingContext._proc`.
    background: Option<ProcessSlot>,
}

/// A logging context: Synapse's `LoggingContext`.
///
/// A cheap handle (one reference count); clones are the same context, and
/// `==` is identity, as in Python. It records, when it is *created*, the
/// context current at that moment ([`previous_context`]), and exiting it
/// makes that one current again, whichever was current when it was entered.
///
/// ```
/// use twisted_compat::{current_context, LoggingContext};
///
/// {
///     // with LoggingContext(name="req", server_name="example.com") as ctx:
///     let ctx = LoggingContext::new("req", "example.com");
///     let _scope = ctx.entered();
///     assert_eq!(current_context().to_string(), "req");
/// }
/// assert!(current_context().is_sentinel());
/// ```
///
/// [`previous_context`]: LoggingContext::previous_context
#[derive(Clone)]
pub struct LoggingContext {
    inner: Rc<ContextInner>,
}

/// The arguments of a [`LoggingContext`] beyond its name and server name:
/// Synapse's keyword arguments `parent_context=` and `request=`.
///
/// ```
/// use twisted_compat::LoggingContext;
///
/// let parent = LoggingContext::new("req", "example.com");
/// // LoggingContext(name="req-db", server_name="example.com", parent_context=parent)
/// let child = LoggingContext::builder("req-db", "example.com")
///     .parent_context(&parent)
///     .build();
/// assert_eq!(child.parent_context(), Some(&parent));
/// ```
#[derive(Debug)]
#[must_use = "call `build()` to create the context"]
pub struct LoggingContextBuilder {
    name: String,
    server_name: String,
    parent: Option<LoggingContext>,
    request: Option<Rc<ContextRequest>>,
    background: Option<ProcessSlot>,
}

impl LoggingContextBuilder {
    /// `parent_context=parent`: the context this one's usage also counts
    /// for; its request is inherited unless [`request`](Self::request) gives
    /// one.
    ///
    /// ```
    /// use twisted_compat::{ContextRequest, LoggingContext};
    ///
    /// let parent = LoggingContext::builder("req", "hs").request(ContextRequest::default()).build();
    /// // LoggingContext(name="child", server_name="hs", parent_context=parent)
    /// let child = LoggingContext::builder("child", "hs").parent_context(&parent).build();
    /// assert!(child.request().is_some());
    /// ```
    pub fn parent_context(mut self, parent: &LoggingContext) -> Self {
        self.parent = Some(parent.clone());
        self
    }

    /// `request=request`: the request this context works for. Wins over the
    /// parent's.
    ///
    /// ```
    /// use std::rc::Rc;
    /// use twisted_compat::{ContextRequest, LoggingContext};
    ///
    /// let shared = Rc::new(ContextRequest { request_id: "GET-7".into(), ..Default::default() });
    /// // LoggingContext(name="a", server_name="hs", request=shared)
    /// let a = LoggingContext::builder("a", "hs").request(shared.clone()).build();
    /// assert!(Rc::ptr_eq(&a.request().unwrap(), &shared));
    /// ```
    pub fn request(mut self, request: impl Into<Rc<ContextRequest>>) -> Self {
        self.request = Some(request.into());
        self
    }

    /// Makes the context a background process's (Synapse's
    /// `BackgroundProcessLoggingContext`).
    pub(crate) fn background(mut self, slot: ProcessSlot) -> Self {
        self.background = Some(slot);
        self
    }

    /// Creates the context. Its previous context is the one current now.
    ///
    /// ```
    /// use twisted_compat::{current_context, LoggingContext};
    ///
    /// let ctx = LoggingContext::builder("a", "hs").build();   // LoggingContext(name="a", server_name="hs")
    /// assert_eq!(ctx.previous_context(), &current_context());
    /// ```
    pub fn build(self) -> LoggingContext {
        let request = match self.request {
            Some(r) => Some(r),
            None => self.parent.as_ref().and_then(|p| p.request()),
        };
        LoggingContext {
            inner: Rc::new(ContextInner {
                name: self.name,
                server_name: self.server_name,
                parent: self.parent,
                previous: current_context(),
                request: RefCell::new(request),
                finished: Cell::new(false),
                usage_start: Cell::new(None),
                usage: Cell::new(ContextResourceUsage::default()),
                background: self.background,
            }),
        }
    }
}

impl LoggingContext {
    /// `LoggingContext(name=name, server_name=server_name)`: a context with
    /// no parent and no request. It records the context current now as its
    /// previous context.
    ///
    /// ```
    /// use twisted_compat::LoggingContext;
    /// let ctx = LoggingContext::new("req", "example.com");  // LoggingContext(name="req", server_name="example.com")
    /// assert_eq!(ctx.name(), "req");
    /// assert_eq!(ctx.server_name(), "example.com");
    /// assert!(ctx.parent_context().is_none() && ctx.request().is_none());
    /// ```
    pub fn new(name: impl Into<String>, server_name: impl Into<String>) -> LoggingContext {
        LoggingContext::builder(name, server_name).build()
    }

    /// Starts a `LoggingContext(name=…, server_name=…, parent_context=…,
    /// request=…)` with more arguments than [`new`](Self::new) takes.
    ///
    /// ```
    /// use twisted_compat::LoggingContext;
    /// let parent = LoggingContext::new("req", "hs");
    /// // LoggingContext(name="req-1", server_name="hs", parent_context=parent)
    /// let ctx = LoggingContext::builder("req-1", "hs").parent_context(&parent).build();
    /// assert_eq!(ctx.parent_context().unwrap().name(), "req");
    /// ```
    pub fn builder(
        name: impl Into<String>,
        server_name: impl Into<String>,
    ) -> LoggingContextBuilder {
        LoggingContextBuilder {
            name: name.into(),
            server_name: server_name.into(),
            parent: None,
            request: None,
            background: None,
        }
    }

    /// `ctx.name` (also `str(ctx)`).
    ///
    /// ```
    /// let ctx = twisted_compat::LoggingContext::new("req", "hs");
    /// assert_eq!(ctx.name(), "req");                  // ctx.name
    /// assert_eq!(ctx.to_string(), "req");             // str(ctx)
    /// ```
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `ctx.server_name`.
    ///
    /// ```
    /// let ctx = twisted_compat::LoggingContext::new("req", "hs");
    /// assert_eq!(ctx.server_name(), "hs");            // ctx.server_name
    /// ```
    pub fn server_name(&self) -> &str {
        &self.inner.server_name
    }

    /// `ctx.parent_context`.
    ///
    /// ```
    /// let ctx = twisted_compat::LoggingContext::new("req", "hs");
    /// assert!(ctx.parent_context().is_none());        // ctx.parent_context is None
    /// ```
    pub fn parent_context(&self) -> Option<&LoggingContext> {
        self.inner.parent.as_ref()
    }

    /// `ctx.previous_context`: the context that was current when this one
    /// was created, made current again by [`exit`](Self::exit).
    ///
    /// ```
    /// use twisted_compat::LoggingContext;
    /// let outer = LoggingContext::new("outer", "hs");
    /// let _scope = outer.entered();
    /// let inner = LoggingContext::new("inner", "hs");
    /// assert_eq!(inner.previous_context(), &outer);   // inner.previous_context is outer
    /// ```
    pub fn previous_context(&self) -> &LoggingContextOrSentinel {
        &self.inner.previous
    }

    /// `ctx.request`.
    ///
    /// ```
    /// use twisted_compat::{ContextRequest, LoggingContext};
    /// let ctx = LoggingContext::new("req", "hs");
    /// assert!(ctx.request().is_none());               // ctx.request is None
    /// ctx.set_request(Some(ContextRequest::default().into()));
    /// assert!(ctx.request().is_some());
    /// ```
    pub fn request(&self) -> Option<Rc<ContextRequest>> {
        self.inner.request.borrow().clone()
    }

    /// `ctx.request = request`. Contexts created from this one afterwards
    /// inherit it; those created before keep theirs.
    ///
    /// ```
    /// use twisted_compat::{ContextRequest, LoggingContext};
    /// let ctx = LoggingContext::new("req", "hs");
    /// // ctx.request = ContextRequest(request_id="GET-1", ...)
    /// ctx.set_request(Some(ContextRequest { request_id: "GET-1".into(), ..Default::default() }.into()));
    /// assert_eq!(ctx.request().unwrap().request_id, "GET-1");
    /// ```
    pub fn set_request(&self, request: Option<Rc<ContextRequest>>) {
        *self.inner.request.borrow_mut() = request;
    }

    /// `ctx.finished`: true once [`exit`](Self::exit) has run (it is never
    /// reset). Making a finished context current again is reported as
    /// [`LogcontextError::RestartFinished`].
    ///
    /// ```
    /// let ctx = twisted_compat::LoggingContext::new("req", "hs");
    /// ctx.enter();                                    // ctx.__enter__()
    /// assert!(!ctx.finished());
    /// ctx.exit();                                     // ctx.__exit__(None, None, None)
    /// assert!(ctx.finished());                        // ctx.finished
    /// ```
    pub fn finished(&self) -> bool {
        self.inner.finished.get()
    }

    /// `ctx.__enter__()`: makes this context current. If the context found
    /// current is not the one recorded at creation, reports
    /// [`LogcontextError::UnexpectedPrevious`] and carries on.
    ///
    /// Prefer [`entered`](Self::entered), which exits when its guard is
    /// dropped; `enter`/`exit` are for code whose entry and exit are not in
    /// one scope.
    ///
    /// ```
    /// use twisted_compat::{current_context, LoggingContext};
    /// let ctx = LoggingContext::new("req", "hs");
    /// ctx.enter();                                    // ctx.__enter__()
    /// assert_eq!(current_context(), ctx);
    /// ctx.exit();                                     // ctx.__exit__(None, None, None)
    /// ```
    pub fn enter(&self) {
        let found = set_current_context(self);
        if found != self.inner.previous {
            logcontext_error(LogcontextError::UnexpectedPrevious {
                expected: self.inner.previous.clone(),
                found,
            });
        }
    }

    /// `ctx.__exit__(None, None, None)`: makes the context recorded at
    /// creation current again, whichever context is current now, and marks
    /// this one finished. If this context was not the current one, reports
    /// [`LogcontextError::UnexpectedContext`] (after the switch, which may
    /// itself report bringing back a finished context). The switch stops
    /// this context, which accounts its last period of CPU time.
    ///
    /// ```
    /// use twisted_compat::{capture_logcontext_errors, current_context, LoggingContext};
    /// let a = LoggingContext::new("a", "hs");
    /// a.enter();                                      // a.__enter__()
    /// let b = LoggingContext::new("b", "hs");
    /// b.enter();                                      // b.__enter__()
    /// let ((), errors) = capture_logcontext_errors(|| a.exit());   // a.__exit__(...)
    /// assert_eq!(errors[0].to_string(), "Expected logging context a but found b");
    /// assert!(current_context().is_sentinel());       // a's previous context
    /// # b.exit();
    /// ```
    pub fn exit(&self) {
        let found = set_current_context(&self.inner.previous);
        if found != *self {
            logcontext_error(LogcontextError::UnexpectedContext {
                expected: self.into(),
                found,
            });
        }
        self.inner.finished.set(true);
        if let Some(slot) = &self.inner.background {
            slot.exited(self);
        }
    }

    /// `with ctx:`: enters the context now and exits it when the returned
    /// guard is dropped (also while unwinding from a panic, as Python's
    /// `__exit__` runs on an exception).
    ///
    /// ```
    /// use twisted_compat::{current_context, LoggingContext};
    /// let ctx = LoggingContext::new("req", "hs");
    /// {
    ///     let _scope = ctx.entered();                 // with ctx:
    ///     assert_eq!(current_context(), ctx);
    /// }
    /// assert!(ctx.finished() && current_context().is_sentinel());
    /// ```
    pub fn entered(&self) -> EnteredContext {
        self.enter();
        EnteredContext {
            context: self.clone(),
        }
    }

    /// `ctx.start(rusage)` with the thread's CPU clock read now
    /// ([`start_with`](Self::start_with)`(`[`get_thread_resource_usage`]`())`).
    /// Called by [`set_current_context`] on the context it switches to; call
    /// it yourself only to reproduce Synapse's checks. A finished context is
    /// reported ([`LogcontextError::RestartFinished`]) and not started; one
    /// already running is reported ([`LogcontextError::RestartActive`]).
    ///
    /// ```
    /// use twisted_compat::{capture_logcontext_errors, LogcontextError, LoggingContext};
    /// let ctx = LoggingContext::new("job", "hs");
    /// let ((), errors) = capture_logcontext_errors(|| {
    ///     ctx.start();                                // ctx.start(rusage)
    ///     ctx.start();                                // ctx.start(rusage) again
    ///     ctx.stop();                                 // ctx.stop(rusage)
    /// });
    /// assert!(matches!(&errors[..], [LogcontextError::RestartActive { .. }]));
    /// ```
    pub fn start(&self) {
        self.start_with(get_thread_resource_usage());
    }

    /// `ctx.start(rusage)`: records that the context is running from the
    /// thread CPU snapshot `rusage` on.
    ///
    /// * A finished context is reported ([`LogcontextError::RestartFinished`])
    ///   and left stopped: nothing is accounted to it until it is started
    ///   again (Synapse 1.163's behaviour).
    /// * A context already running is reported
    ///   ([`LogcontextError::RestartActive`]) and keeps its first snapshot.
    /// * `None` (a platform without a thread CPU clock) records nothing.
    ///
    /// A background process's context that has ended also logs "Background
    /// process re-entered without a proc" at error level.
    ///
    /// ```
    /// use twisted_compat::{LoggingContext, ThreadCpuUsage};
    /// let ctx = LoggingContext::new("job", "hs");
    /// ctx.start_with(Some(ThreadCpuUsage { ru_utime: 1.0, ru_stime: 1.0 }));   // ctx.start((1.0, 1.0))
    /// ctx.stop_with(Some(ThreadCpuUsage { ru_utime: 3.0, ru_stime: 1.5 }));    // ctx.stop((3.0, 1.5))
    /// let used = ctx.get_resource_usage();
    /// assert_eq!((used.ru_utime, used.ru_stime), (2.0, 0.5));
    /// ```
    pub fn start_with(&self, rusage: Option<ThreadCpuUsage>) {
        self.record_start(rusage);
        if let Some(slot) = &self.inner.background {
            slot.started(self);
        }
    }

    fn record_start(&self, rusage: Option<ThreadCpuUsage>) {
        if self.finished() {
            logcontext_error(LogcontextError::RestartFinished {
                context: self.clone(),
            });
            return;
        }
        if self.inner.usage_start.get().is_some() {
            logcontext_error(LogcontextError::RestartActive {
                context: self.clone(),
            });
        } else {
            self.inner.usage_start.set(rusage);
        }
    }

    /// `ctx.stop(rusage)` with the thread's CPU clock read now
    /// ([`stop_with`](Self::stop_with)`(`[`get_thread_resource_usage`]`())`).
    /// Called by [`set_current_context`] on the context it switches away
    /// from. A context that was not running is reported
    /// ([`LogcontextError::StopWithoutStart`]).
    ///
    /// ```
    /// use twisted_compat::{capture_logcontext_errors, LogcontextError, LoggingContext};
    /// let ctx = LoggingContext::new("job", "hs");
    /// let ((), errors) = capture_logcontext_errors(|| ctx.stop());   // ctx.stop(rusage)
    /// assert!(matches!(&errors[..], [LogcontextError::StopWithoutStart { .. }]));
    /// ```
    pub fn stop(&self) {
        self.stop_with(get_thread_resource_usage());
    }

    /// `ctx.stop(rusage)`: records that the context stopped running at the
    /// thread CPU snapshot `rusage`, and accounts the CPU time since its
    /// start to it and its ancestors ([`add_cputime`](Self::add_cputime)).
    /// A part of the time that went backwards is logged at error level
    /// ("utime went backwards! …") and counted as 0. A context that was not
    /// running is reported ([`LogcontextError::StopWithoutStart`]); `None`
    /// (no clock) forgets the start snapshot and reports nothing.
    ///
    /// ```
    /// use twisted_compat::{LoggingContext, ThreadCpuUsage};
    /// let parent = LoggingContext::new("req", "hs");
    /// let child = LoggingContext::builder("req-1", "hs").parent_context(&parent).build();
    /// child.start_with(Some(ThreadCpuUsage { ru_utime: 5.0, ru_stime: 5.0 }));   // child.start((5.0, 5.0))
    /// child.stop_with(Some(ThreadCpuUsage { ru_utime: 4.0, ru_stime: 6.0 }));    // child.stop((4.0, 6.0))
    /// let used = parent.get_resource_usage();
    /// assert_eq!((used.ru_utime, used.ru_stime), (0.0, 1.0));   // utime went backwards: 0
    /// ```
    pub fn stop_with(&self, rusage: Option<ThreadCpuUsage>) {
        let Some(rusage) = rusage else {
            self.inner.usage_start.set(None);
            return;
        };
        match self.inner.usage_start.take() {
            Some(start) => {
                let (utime, stime) = cputime_delta(start, rusage);
                self.add_cputime(utime, stime);
            }
            None => logcontext_error(LogcontextError::StopWithoutStart {
                context: self.clone(),
            }),
        }
    }

    /// `ctx.get_resource_usage()`: a copy of what this context used so far,
    /// its children's usage included, and, while it is running, the CPU
    /// time of the current period.
    ///
    /// ```
    /// use twisted_compat::{get_thread_resource_usage, LoggingContext};
    /// let ctx = LoggingContext::new("req", "hs");
    /// let _scope = ctx.entered();
    /// let start = get_thread_resource_usage().unwrap();
    /// while get_thread_resource_usage().unwrap().total() - start.total() < 0.002 {
    ///     std::hint::black_box(0);                        // burn CPU
    /// }
    /// let used = ctx.get_resource_usage();               // ctx.get_resource_usage()
    /// assert!(used.ru_utime + used.ru_stime > 0.0);       // the period running now counts
    /// ```
    pub fn get_resource_usage(&self) -> ContextResourceUsage {
        let mut usage = self.inner.usage.get();
        if let Some(start) = self.inner.usage_start.get()
            && let Some(now) = get_thread_resource_usage()
        {
            let (utime, stime) = cputime_delta(start, now);
            usage.ru_utime += utime;
            usage.ru_stime += stime;
        }
        usage
    }

    /// `ctx.add_cputime(utime_delta, stime_delta)`: adds CPU time to this
    /// context and every ancestor, as it is. [`stop_with`](Self::stop_with)
    /// calls it; code that measured CPU time elsewhere may too.
    ///
    /// ```
    /// use twisted_compat::LoggingContext;
    /// let parent = LoggingContext::new("req", "hs");
    /// let child = LoggingContext::builder("req-1", "hs").parent_context(&parent).build();
    /// child.add_cputime(1.0, 2.0);                     // child.add_cputime(1.0, 2.0)
    /// assert_eq!(parent.get_resource_usage().ru_stime, 2.0);
    /// ```
    pub fn add_cputime(&self, utime_delta: f64, stime_delta: f64) {
        self.for_self_and_ancestors(|usage| {
            usage.ru_utime += utime_delta;
            usage.ru_stime += stime_delta;
        });
    }

    /// `ctx.add_database_transaction(duration_sec)`: records a database
    /// transaction that took `duration_sec` seconds (connection wait
    /// excluded), on this context and every ancestor. A negative duration
    /// records nothing and is an error (Synapse raises `ValueError`).
    ///
    /// ```
    /// use twisted_compat::LoggingContext;
    /// let ctx = LoggingContext::new("req", "hs");
    /// ctx.add_database_transaction(0.5).unwrap();      // ctx.add_database_transaction(0.5)
    /// let used = ctx.get_resource_usage();
    /// assert_eq!((used.db_txn_count, used.db_txn_duration_sec), (1, 0.5));
    /// assert!(ctx.add_database_transaction(-0.1).is_err());
    /// ```
    pub fn add_database_transaction(&self, duration_sec: f64) -> Result<(), InvalidDurationError> {
        if duration_sec < 0.0 {
            return Err(InvalidDurationError {
                what: "DB txn",
                duration_sec,
            });
        }
        self.for_self_and_ancestors(|usage| {
            usage.db_txn_count = usage.db_txn_count.wrapping_add(1);
            usage.db_txn_duration_sec += duration_sec;
        });
        Ok(())
    }

    /// `ctx.add_database_scheduled(sched_sec)`: records `sched_sec` seconds
    /// spent waiting for a database connection, on this context and every
    /// ancestor. A negative duration records nothing and is an error.
    ///
    /// ```
    /// use twisted_compat::LoggingContext;
    /// let ctx = LoggingContext::new("req", "hs");
    /// ctx.add_database_scheduled(0.25).unwrap();       // ctx.add_database_scheduled(0.25)
    /// assert_eq!(ctx.get_resource_usage().db_sched_duration_sec, 0.25);
    /// let e = ctx.add_database_scheduled(-1.0).unwrap_err();
    /// assert_eq!(e.to_string(), "DB scheduling time can only be zero or non-negative");
    /// ```
    pub fn add_database_scheduled(&self, sched_sec: f64) -> Result<(), InvalidDurationError> {
        if sched_sec < 0.0 {
            return Err(InvalidDurationError {
                what: "DB scheduling",
                duration_sec: sched_sec,
            });
        }
        self.for_self_and_ancestors(|usage| usage.db_sched_duration_sec += sched_sec);
        Ok(())
    }

    /// `ctx.record_event_fetch(event_count)`: records `event_count` events
    /// fetched from the database, on this context and every ancestor. Any
    /// count is taken, as in Synapse.
    ///
    /// ```
    /// use twisted_compat::LoggingContext;
    /// let ctx = LoggingContext::new("req", "hs");
    /// ctx.record_event_fetch(4);                       // ctx.record_event_fetch(4)
    /// assert_eq!(ctx.get_resource_usage().evt_db_fetch_count, 4);
    /// ```
    pub fn record_event_fetch(&self, event_count: i64) {
        self.for_self_and_ancestors(|usage| {
            usage.evt_db_fetch_count = usage.evt_db_fetch_count.wrapping_add(event_count);
        });
    }

    /// A number that identifies this context while it is alive (its
    /// address).
    pub(crate) fn identity(&self) -> usize {
        Rc::as_ptr(&self.inner).addr()
    }

    /// The background process part of this context, if it is a background
    /// process's.
    pub(crate) fn background_slot(&self) -> Option<&ProcessSlot> {
        self.inner.background.as_ref()
    }

    /// Adds `used` (all of it) to this context and every ancestor: how the
    /// usage of a context on another thread reaches its parent.
    pub(crate) fn credit_usage(&self, used: &ContextResourceUsage) {
        self.for_self_and_ancestors(|usage| *usage += *used);
    }

    fn for_self_and_ancestors(&self, mut update: impl FnMut(&mut ContextResourceUsage)) {
        let mut next = Some(self);
        while let Some(ctx) = next {
            let mut usage = ctx.inner.usage.get();
            update(&mut usage);
            ctx.inner.usage.set(usage);
            next = ctx.parent_context();
        }
    }

    /// True when both handles are the same context (Python's `is`; also
    /// what `==` compares).
    ///
    /// ```
    /// use twisted_compat::LoggingContext;
    /// let a = LoggingContext::new("a", "hs");
    /// let b = LoggingContext::new("a", "hs");
    /// assert!(a.ptr_eq(&a.clone()) && !a.ptr_eq(&b));   // a is a, a is not b
    /// ```
    pub fn ptr_eq(&self, other: &LoggingContext) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }
}

impl PartialEq for LoggingContext {
    fn eq(&self, other: &LoggingContext) -> bool {
        self.ptr_eq(other)
    }
}

impl Eq for LoggingContext {}

impl std::hash::Hash for LoggingContext {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Rc::as_ptr(&self.inner).hash(state);
    }
}

impl fmt::Display for LoggingContext {
    /// `str(ctx)`: the name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for LoggingContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoggingContext")
            .field("name", &self.name())
            .field("finished", &self.finished())
            .finish_non_exhaustive()
    }
}

/// The guard of a `with ctx:` block ([`LoggingContext::entered`]): exits
/// the context when dropped.
///
/// ```
/// use twisted_compat::{current_context, LoggingContext};
/// let scope = LoggingContext::new("req", "hs").entered();   // with LoggingContext(...) as ctx:
/// assert_eq!(scope.context(), &current_context());
/// drop(scope);                                              // end of the block
/// assert!(current_context().is_sentinel());
/// ```
#[must_use = "the context exits as soon as this guard is dropped"]
#[derive(Debug)]
pub struct EnteredContext {
    context: LoggingContext,
}

impl EnteredContext {
    /// The context entered (the `as ctx` of `with … as ctx:`).
    ///
    /// ```
    /// use twisted_compat::LoggingContext;
    /// let scope = LoggingContext::new("req", "hs").entered();   // with ... as ctx:
    /// assert_eq!(scope.context().name(), "req");                //     ctx.name
    /// ```
    pub fn context(&self) -> &LoggingContext {
        &self.context
    }
}

impl Drop for EnteredContext {
    fn drop(&mut self) {
        self.context.exit();
    }
}

/// A logging context or the sentinel: Synapse's `LoggingContextOrSentinel`,
/// what [`current_context`] returns and [`set_current_context`] takes.
///
/// The sentinel stands for "no context". It prints as `sentinel`, has no
/// request, is never finished, and accepts `start`/`stop` and the
/// accounting calls without doing or reporting anything.
///
/// ```
/// use twisted_compat::{LoggingContext, LoggingContextOrSentinel, SENTINEL_CONTEXT};
///
/// assert!(SENTINEL_CONTEXT.is_sentinel());                    // not SENTINEL_CONTEXT
/// assert_eq!(SENTINEL_CONTEXT.to_string(), "sentinel");      // str(SENTINEL_CONTEXT)
/// let ctx = LoggingContext::new("req", "hs");
/// let either: LoggingContextOrSentinel = ctx.clone().into();
/// assert_eq!(either, ctx);
/// assert_eq!(either.context(), Some(&ctx));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum LoggingContextOrSentinel {
    /// `SENTINEL_CONTEXT`: no context.
    #[default]
    Sentinel,
    /// A logging context.
    Context(LoggingContext),
}

/// `SENTINEL_CONTEXT`: the "no context" value, current on a thread until
/// something else is made current.
///
/// ```
/// use twisted_compat::{current_context, SENTINEL_CONTEXT};
/// assert_eq!(current_context(), SENTINEL_CONTEXT);     // current_context() is SENTINEL_CONTEXT
/// ```
pub const SENTINEL_CONTEXT: LoggingContextOrSentinel = LoggingContextOrSentinel::Sentinel;

impl LoggingContextOrSentinel {
    /// `not ctx`: true for the sentinel (which is falsy in Python).
    ///
    /// ```
    /// use twisted_compat::{current_context, LoggingContext};
    /// assert!(current_context().is_sentinel());     // if not current_context(): ...
    /// let _scope = LoggingContext::new("req", "hs").entered();
    /// assert!(!current_context().is_sentinel());
    /// ```
    pub fn is_sentinel(&self) -> bool {
        matches!(self, LoggingContextOrSentinel::Sentinel)
    }

    /// The logging context, `None` for the sentinel (Python's
    /// `isinstance(ctx, LoggingContext)`).
    ///
    /// ```
    /// use twisted_compat::{current_context, SENTINEL_CONTEXT};
    /// assert!(SENTINEL_CONTEXT.context().is_none());
    /// assert!(current_context().context().is_none());
    /// ```
    pub fn context(&self) -> Option<&LoggingContext> {
        match self {
            LoggingContextOrSentinel::Sentinel => None,
            LoggingContextOrSentinel::Context(c) => Some(c),
        }
    }

    /// `str(ctx)`: the context's name, `sentinel` for the sentinel.
    ///
    /// ```
    /// use twisted_compat::SENTINEL_CONTEXT;
    /// assert_eq!(SENTINEL_CONTEXT.name(), "sentinel");     // str(SENTINEL_CONTEXT)
    /// ```
    pub fn name(&self) -> &str {
        match self {
            LoggingContextOrSentinel::Sentinel => "sentinel",
            LoggingContextOrSentinel::Context(c) => c.name(),
        }
    }

    /// `ctx.server_name`; [`SENTINEL_SERVER_NAME`] for the sentinel.
    ///
    /// ```
    /// use twisted_compat::{SENTINEL_CONTEXT, SENTINEL_SERVER_NAME};
    /// assert_eq!(SENTINEL_CONTEXT.server_name(), SENTINEL_SERVER_NAME);   // SENTINEL_CONTEXT.server_name
    /// ```
    pub fn server_name(&self) -> &str {
        match self {
            LoggingContextOrSentinel::Sentinel => SENTINEL_SERVER_NAME,
            LoggingContextOrSentinel::Context(c) => c.server_name(),
        }
    }

    /// `ctx.request`; `None` for the sentinel.
    ///
    /// ```
    /// use twisted_compat::SENTINEL_CONTEXT;
    /// assert!(SENTINEL_CONTEXT.request().is_none());       // SENTINEL_CONTEXT.request is None
    /// ```
    pub fn request(&self) -> Option<Rc<ContextRequest>> {
        self.context().and_then(LoggingContext::request)
    }

    /// `ctx.finished`; false for the sentinel.
    ///
    /// ```
    /// use twisted_compat::SENTINEL_CONTEXT;
    /// assert!(!SENTINEL_CONTEXT.finished());               // SENTINEL_CONTEXT.finished
    /// ```
    pub fn finished(&self) -> bool {
        self.context().is_some_and(LoggingContext::finished)
    }

    /// `ctx.start(rusage)`: [`LoggingContext::start`]; nothing for the
    /// sentinel.
    ///
    /// ```
    /// use twisted_compat::{capture_logcontext_errors, SENTINEL_CONTEXT};
    /// let ((), errors) = capture_logcontext_errors(|| {
    ///     SENTINEL_CONTEXT.start();                        // SENTINEL_CONTEXT.start(rusage)
    ///     SENTINEL_CONTEXT.start();
    /// });
    /// assert!(errors.is_empty());
    /// ```
    pub fn start(&self) {
        if let LoggingContextOrSentinel::Context(c) = self {
            c.start();
        }
    }

    /// `ctx.stop(rusage)`: [`LoggingContext::stop`]; nothing for the
    /// sentinel.
    ///
    /// ```
    /// use twisted_compat::{capture_logcontext_errors, SENTINEL_CONTEXT};
    /// let ((), errors) = capture_logcontext_errors(|| SENTINEL_CONTEXT.stop());   // SENTINEL_CONTEXT.stop(rusage)
    /// assert!(errors.is_empty());
    /// ```
    pub fn stop(&self) {
        if let LoggingContextOrSentinel::Context(c) = self {
            c.stop();
        }
    }

    /// `ctx.start(rusage)`: [`LoggingContext::start_with`]; nothing for the
    /// sentinel.
    ///
    /// ```
    /// use twisted_compat::{get_thread_resource_usage, current_context};
    /// current_context().start_with(get_thread_resource_usage());   // SENTINEL_CONTEXT.start(rusage)
    /// ```
    pub fn start_with(&self, rusage: Option<ThreadCpuUsage>) {
        if let LoggingContextOrSentinel::Context(c) = self {
            c.start_with(rusage);
        }
    }

    /// `ctx.stop(rusage)`: [`LoggingContext::stop_with`]; nothing for the
    /// sentinel.
    ///
    /// ```
    /// use twisted_compat::{get_thread_resource_usage, current_context};
    /// current_context().stop_with(get_thread_resource_usage());    // SENTINEL_CONTEXT.stop(rusage)
    /// ```
    pub fn stop_with(&self, rusage: Option<ThreadCpuUsage>) {
        if let LoggingContextOrSentinel::Context(c) = self {
            c.stop_with(rusage);
        }
    }

    /// `current_context().add_database_transaction(duration_sec)`:
    /// [`LoggingContext::add_database_transaction`]; the sentinel records
    /// nothing and accepts any duration.
    ///
    /// ```
    /// use twisted_compat::{current_context, LoggingContext};
    /// assert!(current_context().add_database_transaction(-1.0).is_ok());   // the sentinel: pass
    /// let ctx = LoggingContext::new("req", "hs");
    /// let _scope = ctx.entered();
    /// current_context().add_database_transaction(0.5).unwrap();   // current_context().add_database_transaction(0.5)
    /// assert_eq!(ctx.get_resource_usage().db_txn_count, 1);
    /// ```
    pub fn add_database_transaction(&self, duration_sec: f64) -> Result<(), InvalidDurationError> {
        match self {
            LoggingContextOrSentinel::Sentinel => Ok(()),
            LoggingContextOrSentinel::Context(c) => c.add_database_transaction(duration_sec),
        }
    }

    /// `current_context().add_database_scheduled(sched_sec)`:
    /// [`LoggingContext::add_database_scheduled`]; the sentinel records
    /// nothing and accepts any duration.
    ///
    /// ```
    /// use twisted_compat::SENTINEL_CONTEXT;
    /// assert!(SENTINEL_CONTEXT.add_database_scheduled(0.1).is_ok());   // SENTINEL_CONTEXT.add_database_scheduled(0.1)
    /// ```
    pub fn add_database_scheduled(&self, sched_sec: f64) -> Result<(), InvalidDurationError> {
        match self {
            LoggingContextOrSentinel::Sentinel => Ok(()),
            LoggingContextOrSentinel::Context(c) => c.add_database_scheduled(sched_sec),
        }
    }

    /// `current_context().record_event_fetch(event_count)`:
    /// [`LoggingContext::record_event_fetch`]; nothing for the sentinel.
    ///
    /// ```
    /// use twisted_compat::{current_context, LoggingContext};
    /// let ctx = LoggingContext::new("req", "hs");
    /// let _scope = ctx.entered();
    /// current_context().record_event_fetch(2);        // current_context().record_event_fetch(2)
    /// assert_eq!(ctx.get_resource_usage().evt_db_fetch_count, 2);
    /// ```
    pub fn record_event_fetch(&self, event_count: i64) {
        if let LoggingContextOrSentinel::Context(c) = self {
            c.record_event_fetch(event_count);
        }
    }
}

impl From<LoggingContext> for LoggingContextOrSentinel {
    fn from(c: LoggingContext) -> Self {
        LoggingContextOrSentinel::Context(c)
    }
}

impl From<&LoggingContext> for LoggingContextOrSentinel {
    fn from(c: &LoggingContext) -> Self {
        LoggingContextOrSentinel::Context(c.clone())
    }
}

impl From<&LoggingContextOrSentinel> for LoggingContextOrSentinel {
    fn from(c: &LoggingContextOrSentinel) -> Self {
        c.clone()
    }
}

impl PartialEq<LoggingContext> for LoggingContextOrSentinel {
    fn eq(&self, other: &LoggingContext) -> bool {
        self.context().is_some_and(|c| c.ptr_eq(other))
    }
}

impl PartialEq<LoggingContextOrSentinel> for LoggingContext {
    fn eq(&self, other: &LoggingContextOrSentinel) -> bool {
        other == self
    }
}

impl fmt::Display for LoggingContextOrSentinel {
    /// `str(ctx)`: the name, or `sentinel`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for LoggingContextOrSentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoggingContextOrSentinel::Sentinel => f.write_str("Sentinel"),
            LoggingContextOrSentinel::Context(c) => fmt::Debug::fmt(c, f),
        }
    }
}

thread_local! {
    static CURRENT: RefCell<LoggingContextOrSentinel> =
        const { RefCell::new(LoggingContextOrSentinel::Sentinel) };
    static HOOK: RefCell<Option<LogcontextErrorHook>> = const { RefCell::new(None) };
}

/// `current_context()`: this thread's current logging context (the
/// sentinel when there is none; never anything else).
///
/// ```
/// use twisted_compat::{current_context, LoggingContext};
/// assert!(current_context().is_sentinel());           // current_context() is SENTINEL_CONTEXT
/// let ctx = LoggingContext::new("req", "hs");
/// let _scope = ctx.entered();
/// assert_eq!(current_context(), ctx);                 // current_context() is ctx
/// ```
pub fn current_context() -> LoggingContextOrSentinel {
    CURRENT
        .try_with(|c| c.try_borrow().map(|c| c.clone()).unwrap_or_default())
        .unwrap_or_default()
}

/// `set_current_context(context)`: makes `context` current on this thread
/// and returns the context that was. Switching to the context already
/// current does nothing; otherwise the thread's CPU clock is read once, and
/// with that snapshot the old context is stopped (accounting the CPU time
/// it ran) and the new one started ([`LoggingContext::stop_with`],
/// [`LoggingContext::start_with`]), so that bringing back a finished
/// context is reported, and happens anyway.
///
/// ```
/// use twisted_compat::{current_context, set_current_context, LoggingContext, SENTINEL_CONTEXT};
/// let ctx = LoggingContext::new("req", "hs");
/// let previous = set_current_context(&ctx);           // previous = set_current_context(ctx)
/// assert!(previous.is_sentinel());
/// assert_eq!(current_context(), ctx);
/// set_current_context(previous);                      // set_current_context(previous)
/// assert_eq!(current_context(), SENTINEL_CONTEXT);
/// ```
pub fn set_current_context(
    context: impl Into<LoggingContextOrSentinel>,
) -> LoggingContextOrSentinel {
    let new = context.into();
    let old = current_context();
    if old == new {
        return old;
    }
    // One snapshot for both, as Synapse: the time between the two calls is
    // nobody's.
    let rusage = get_thread_resource_usage();
    old.stop_with(rusage);
    let _ = CURRENT.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            *c = new.clone();
        }
    });
    new.start_with(rusage);
    old
}

/// `with PreserveLoggingContext(new_context):` as a guard: makes
/// `new_context` current when created and, when dropped, makes the context
/// current before it current again. It never finishes anything, so it can
/// make a context current without ending it.
///
/// When dropped, it checks that `new_context` is still the current context
/// and reports [`LogcontextError::UnexpectedContext`] otherwise (the
/// context found is replaced all the same).
///
/// ```
/// use twisted_compat::{current_context, LoggingContext, PreserveLoggingContext};
/// let ctx = LoggingContext::new("req", "hs");
/// let _scope = ctx.entered();
/// {
///     let _preserve = PreserveLoggingContext::sentinel();   // with PreserveLoggingContext():
///     assert!(current_context().is_sentinel());
/// }
/// assert_eq!(current_context(), ctx);
/// ```
#[must_use = "the previous context comes back as soon as this guard is dropped"]
#[derive(Debug)]
pub struct PreserveLoggingContext {
    old: LoggingContextOrSentinel,
    new: LoggingContextOrSentinel,
}

impl PreserveLoggingContext {
    /// `with PreserveLoggingContext(new_context):`: switches to
    /// `new_context` now.
    ///
    /// ```
    /// use twisted_compat::{current_context, LoggingContext, PreserveLoggingContext};
    /// let main = LoggingContext::new("main", "hs");
    /// {
    ///     let _preserve = PreserveLoggingContext::new(&main);   // with PreserveLoggingContext(main):
    ///     assert_eq!(current_context(), main);
    /// }
    /// assert!(current_context().is_sentinel());
    /// assert!(!main.finished());                               // not ended
    /// ```
    pub fn new(new_context: impl Into<LoggingContextOrSentinel>) -> PreserveLoggingContext {
        let new = new_context.into();
        let old = set_current_context(&new);
        PreserveLoggingContext { old, new }
    }

    /// `with PreserveLoggingContext():`: switches to the sentinel now.
    ///
    /// ```
    /// use twisted_compat::{current_context, PreserveLoggingContext};
    /// let _preserve = PreserveLoggingContext::sentinel();   // with PreserveLoggingContext():
    /// assert!(current_context().is_sentinel());
    /// ```
    pub fn sentinel() -> PreserveLoggingContext {
        PreserveLoggingContext::new(SENTINEL_CONTEXT)
    }

    /// Ends the block now (the same as dropping the guard): the end of the
    /// `with` block.
    ///
    /// ```
    /// use twisted_compat::{current_context, LoggingContext, PreserveLoggingContext};
    /// let ctx = LoggingContext::new("req", "hs");
    /// let preserve = PreserveLoggingContext::new(&ctx);     // with PreserveLoggingContext(ctx):
    /// preserve.exit();                                      // (end of block)
    /// assert!(current_context().is_sentinel());
    /// ```
    pub fn exit(self) {}
}

impl Drop for PreserveLoggingContext {
    fn drop(&mut self) {
        let found = set_current_context(&self.old);
        if found != self.new {
            logcontext_error(LogcontextError::UnexpectedContext {
                expected: self.new.clone(),
                found,
            });
        }
    }
}

/// `nested_logging_context(suffix)`: a new context named
/// `"<current name>-<suffix>"`, child of the current context and with its
/// server name. Called with the sentinel current it logs a warning
/// ("metrics will be lost"; a warning of the `log` facade, not a
/// [`logcontext_error`]) and returns a context without parent named
/// `sentinel-<suffix>`. The context is not entered.
///
/// ```
/// use twisted_compat::{nested_logging_context, LoggingContext};
/// let parent = LoggingContext::new("req", "hs");
/// let _scope = parent.entered();
/// let child = nested_logging_context("db");           // child = nested_logging_context("db")
/// assert_eq!(child.name(), "req-db");
/// assert_eq!(child.parent_context(), Some(&parent));
/// assert_eq!(child.server_name(), "hs");
/// ```
pub fn nested_logging_context(suffix: &str) -> LoggingContext {
    match current_context() {
        LoggingContextOrSentinel::Sentinel => {
            log::warn!(
                "Starting nested logging context from sentinel context: metrics will be lost"
            );
            LoggingContext::new(format!("sentinel-{suffix}"), SENTINEL_SERVER_NAME)
        }
        LoggingContextOrSentinel::Context(parent) => {
            LoggingContext::builder(format!("{}-{suffix}", parent.name()), parent.server_name())
                .parent_context(&parent)
                .build()
        }
    }
}

/// `make_deferred_yieldable(d)`: makes `deferred` follow the logcontext
/// rules, so that it can be awaited.
///
/// If `deferred` is complete (fired, not paused, not waiting on another
/// Deferred), returns it and changes nothing. Otherwise switches to the
/// sentinel now, adds a link that makes the caller's context current again
/// when `deferred` fires (on success and failure alike; a finished context
/// comes back too, reported), and returns `deferred` itself.
///
/// The link takes the result as a `T`, so `deferred`'s result must be a `T`
/// when it reaches the link (as it is unless the handle was re-typed with
/// [`Deferred::cast`]); any result passes with a `Deferred<AnyValue>`.
///
/// ```
/// use twisted_compat::{current_context, make_deferred_yieldable, Deferred, LoggingContext};
/// let ctx = LoggingContext::new("req", "hs");
/// let _scope = ctx.entered();
/// let d: Deferred<&str> = Deferred::new();
/// let y = make_deferred_yieldable(d.clone());        // y = make_deferred_yieldable(d)
/// assert!(y.ptr_eq(&d));                              // the same Deferred
/// assert!(current_context().is_sentinel());
/// d.callback("done").unwrap();
/// assert_eq!(current_context(), ctx);
/// assert_eq!(d.result().value(), Some("done"));
/// ```
pub fn make_deferred_yieldable<T: 'static>(deferred: Deferred<T>) -> Deferred<T> {
    if deferred.called() && deferred.paused() == 0 {
        return deferred;
    }
    let calling = set_current_context(SENTINEL_CONTEXT);
    deferred.add_both(move |result: Result<T, Failure>| {
        set_current_context(calling);
        result
    });
    deferred
}

/// What [`run_in_background`]'s function may return, and how it becomes a
/// Deferred: a [`Deferred`] is used as it is, a future (an `async` block)
/// is run as a coroutine ([`ensure_deferred`]), and a `Result` is an
/// outcome: `Ok(v)` a plain value (`succeed(v)`), `Err(f)` an exception
/// raised by the function.
///
/// `M` is one of the markers [`ReturnsDeferred`], [`ReturnsFuture`] and
/// [`ReturnsResult`]; it only tells the three implementations apart and is
/// always inferred.
///
/// ```
/// use twisted_compat::{IntoDeferred, Failure};
/// // run_in_background(lambda: 3): a plain value
/// let d = IntoDeferred::into_deferred(Ok::<_, Failure>(3)).unwrap();
/// assert_eq!(d.result().value(), Some(3));
/// ```
pub trait IntoDeferred<T, M> {
    /// The Deferred for this outcome, or the failure the function raised.
    ///
    /// ```
    /// use twisted_compat::{Failure, IntoDeferred};
    /// // raise Exception("no")
    /// let raised = IntoDeferred::<i32, _>::into_deferred(Err::<i32, _>(Failure::msg("no")));
    /// assert_eq!(raised.err().unwrap().message(), "no");
    /// ```
    fn into_deferred(self) -> Result<Deferred<T>, Failure>;
}

/// The [`IntoDeferred`] marker of a function returning a [`Deferred`].
///
/// ```
/// use twisted_compat::{run_in_background, succeed};
/// let d = run_in_background(|| succeed(1));         // run_in_background(lambda: succeed(1))
/// assert_eq!(d.result().value(), Some(1));
/// ```
#[derive(Debug)]
pub enum ReturnsDeferred {}

/// The [`IntoDeferred`] marker of a function returning a future (an `async`
/// block; Python's coroutine).
///
/// ```
/// use twisted_compat::{run_in_background, Failure};
/// let d = run_in_background(|| async { Ok::<_, Failure>(2) });   // run_in_background(coro_fn)
/// assert_eq!(d.result().value(), Some(2));
/// ```
#[derive(Debug)]
pub enum ReturnsFuture {}

/// The [`IntoDeferred`] marker of a function returning a `Result`: a plain
/// value, or a failure it raised.
///
/// ```
/// use twisted_compat::{run_in_background, Failure};
/// let d = run_in_background(|| Ok::<_, Failure>(3));   // run_in_background(lambda: 3)
/// assert_eq!(d.result().value(), Some(3));
/// ```
#[derive(Debug)]
pub enum ReturnsResult {}

impl<T: 'static> IntoDeferred<T, ReturnsDeferred> for Deferred<T> {
    fn into_deferred(self) -> Result<Deferred<T>, Failure> {
        Ok(self)
    }
}

impl<T: 'static> IntoDeferred<T, ReturnsResult> for Result<T, Failure> {
    fn into_deferred(self) -> Result<Deferred<T>, Failure> {
        self.map(succeed)
    }
}

impl<T, F> IntoDeferred<T, ReturnsFuture> for F
where
    T: 'static,
    F: Future<Output = Result<T, Failure>> + 'static,
{
    fn into_deferred(self) -> Result<Deferred<T>, Failure> {
        Ok(ensure_deferred(self))
    }
}

/// `run_in_background(f)`: starts work that will not be awaited, in the
/// caller's context, and gives the caller its context back.
///
/// `f` runs now, in the current context (the work shares the caller's
/// context; it is not a child). It may return a [`Deferred`], a future (run
/// as a coroutine until it first suspends), or a `Result` (a plain value, or
/// a failure raised: see [`IntoDeferred`]).
///
/// * If `f` raises (returns `Err` or panics), the failed Deferred is
///   returned and the context is left alone.
/// * If the result is complete, it is returned. Should the current context
///   then differ from the caller's, that is reported
///   ([`LogcontextError::ContextNotMaintained`]) and left as it is.
/// * Otherwise the caller's context is made current again before returning,
///   and a link that resets the context to the sentinel is added, so that
///   the work's end does not leak its context.
///
/// The Deferred returned is the work's own (cancelling it cancels the
/// work), and does **not** follow the logcontext rules: await it through
/// [`make_deferred_yieldable`].
/// Like [`make_deferred_yieldable`]'s, the reset link takes the result as a
/// `T`.
///
/// ```
/// use twisted_compat::{current_context, run_in_background, Deferred, Failure, LoggingContext};
///
/// let ctx = LoggingContext::new("req", "hs");
/// let _scope = ctx.entered();
/// let x: Deferred<i32> = Deferred::new();
/// let x2 = x.clone();
/// // d = run_in_background(work)   with   async def work(): return await x
/// let d = run_in_background(move || async move {
///     let v = x2.await?;
///     Ok::<_, Failure>(v)
/// });
/// assert_eq!(current_context(), ctx);                 // the caller's context is back
/// x.callback(5).unwrap();
/// assert_eq!(d.result().value(), Some(5));
/// assert!(current_context().is_sentinel());           // the reset link ran
/// ```
pub fn run_in_background<T, M, F, R>(f: F) -> Deferred<T>
where
    T: 'static,
    F: FnOnce() -> R,
    R: IntoDeferred<T, M>,
{
    let calling = current_context();
    let d = match catch_unwind(AssertUnwindSafe(|| f().into_deferred())) {
        Ok(Ok(d)) => d,
        Ok(Err(failure)) => return fail(failure),
        Err(panic) => return fail(Failure::from_panic(panic)),
    };
    if d.called() && d.paused() == 0 {
        let found = current_context();
        if found != calling {
            logcontext_error(LogcontextError::ContextNotMaintained { calling, found });
        }
        return d;
    }
    set_current_context(calling);
    d.add_both(|result: Result<T, Failure>| {
        set_current_context(SENTINEL_CONTEXT);
        result
    });
    d
}

/// `run_coroutine_in_background(coro)`: [`run_in_background`] for a future
/// you already have (`run_in_background(lambda: coro)`).
///
/// ```
/// use twisted_compat::{run_coroutine_in_background, Failure};
/// let work = async { Ok::<_, Failure>("done") };
/// let d = run_coroutine_in_background(work);          // run_coroutine_in_background(work())
/// assert_eq!(d.result().value(), Some("done"));
/// ```
pub fn run_coroutine_in_background<T, F>(future: F) -> Deferred<T>
where
    T: 'static,
    F: Future<Output = Result<T, Failure>> + 'static,
{
    run_in_background(move || future)
}

/// A misuse of logging contexts, as Synapse reports it through
/// `logcontext_error`. `Display` gives Synapse's message.
///
/// ```
/// use twisted_compat::{LogcontextError, LoggingContext, SENTINEL_CONTEXT};
/// let ctx = LoggingContext::new("req", "hs");
/// let e = LogcontextError::UnexpectedContext { expected: ctx.into(), found: SENTINEL_CONTEXT };
/// assert_eq!(e.to_string(), "Expected logging context req was lost");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogcontextError {
    /// A finished context was made current again ("Re-starting finished
    /// log context X"). The switch happened anyway.
    RestartFinished {
        /// The finished context.
        context: LoggingContext,
    },
    /// `start` on a context already running ("Re-starting already-active
    /// log context X").
    RestartActive {
        /// The context.
        context: LoggingContext,
    },
    /// `stop` on a context that was not running ("Called stop on logcontext
    /// X without recording a start rusage"), e.g. one brought back after it
    /// finished.
    StopWithoutStart {
        /// The context.
        context: LoggingContext,
    },
    /// Entering a context found another context current than the one
    /// current when it was created ("Expected previous context A, found
    /// B").
    UnexpectedPrevious {
        /// The context current when the entered one was created.
        expected: LoggingContextOrSentinel,
        /// The context current when it was entered.
        found: LoggingContextOrSentinel,
    },
    /// At the end of a block (exiting a [`LoggingContext`], ending a
    /// [`PreserveLoggingContext`]), `expected` should have been current but
    /// `found` was ("Expected logging context A was lost" when `found` is
    /// the sentinel, "Expected logging context A but found B" otherwise).
    UnexpectedContext {
        /// The context that should have been current.
        expected: LoggingContextOrSentinel,
        /// The context that was.
        found: LoggingContextOrSentinel,
    },
    /// [`run_in_background`]'s function completed at once but left another
    /// context current than its caller's ("deferred already completed but
    /// the function did not maintain the calling logcontext A (found B)").
    /// It is left current.
    ContextNotMaintained {
        /// The caller's context.
        calling: LoggingContextOrSentinel,
        /// The context current after the function.
        found: LoggingContextOrSentinel,
    },
}

impl fmt::Display for LogcontextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogcontextError::RestartFinished { context } => {
                write!(f, "Re-starting finished log context {context}")
            }
            LogcontextError::RestartActive { context } => {
                write!(f, "Re-starting already-active log context {context}")
            }
            LogcontextError::StopWithoutStart { context } => write!(
                f,
                "Called stop on logcontext {context} without recording a start rusage"
            ),
            LogcontextError::UnexpectedPrevious { expected, found } => {
                write!(f, "Expected previous context {expected}, found {found}")
            }
            LogcontextError::UnexpectedContext { expected, found } => {
                if found.is_sentinel() {
                    write!(f, "Expected logging context {expected} was lost")
                } else {
                    write!(f, "Expected logging context {expected} but found {found}")
                }
            }
            LogcontextError::ContextNotMaintained { calling, found } => write!(
                f,
                "run_in_background: deferred already completed but the function did not \
                 maintain the calling logcontext {calling} (found {found})"
            ),
        }
    }
}

impl std::error::Error for LogcontextError {}

/// A function receiving logcontext misuse reports
/// ([`set_logcontext_error_hook`]).
///
/// ```
/// use std::rc::Rc;
/// use twisted_compat::{LogcontextError, LogcontextErrorHook};
/// // def logcontext_error(msg): print("logcontext misuse:", msg)
/// let strict: LogcontextErrorHook = Rc::new(|e: &LogcontextError| eprintln!("logcontext misuse: {e}"));
/// # let _ = strict;
/// ```
pub type LogcontextErrorHook = Rc<dyn Fn(&LogcontextError)>;

/// Installs `hook` to receive every logcontext misuse reported on this
/// thread, and returns the previous hook (Synapse's tests patch
/// `logcontext_error` the same way). Without a hook, reports are logged as
/// warnings.
///
/// The hook runs inside the call that made the report (`exit`,
/// `set_current_context`, a restore link…); it may switch contexts,
/// report again (it is called again) or replace itself. A hook that panics
/// makes that call panic, as a raising hook makes it raise in Python.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use twisted_compat::{set_logcontext_error_hook, LogcontextError, LoggingContext};
///
/// let seen = Rc::new(RefCell::new(Vec::new()));
/// let sink = seen.clone();
/// // patch("synapse.logging.context.logcontext_error", side_effect=...)
/// let previous = set_logcontext_error_hook(Some(Rc::new(move |e: &LogcontextError| {
///     sink.borrow_mut().push(e.to_string())
/// })));
/// let ctx = LoggingContext::new("req", "hs");
/// ctx.exit();                                         // exiting a context never entered
/// assert_eq!(*seen.borrow(), ["Expected logging context req was lost"]);
/// set_logcontext_error_hook(previous);
/// ```
pub fn set_logcontext_error_hook(hook: Option<LogcontextErrorHook>) -> Option<LogcontextErrorHook> {
    HOOK.try_with(|h| match h.try_borrow_mut() {
        Ok(mut slot) => std::mem::replace(&mut *slot, hook),
        Err(_) => None,
    })
    .unwrap_or(None)
}

/// Runs `f` and returns what it returned with every logcontext misuse
/// reported on this thread meanwhile, in order. Meant for tests (Synapse's
/// `@logcontext_clean` makes any report fail the test).
///
/// ```
/// use twisted_compat::{capture_logcontext_errors, LoggingContext};
///
/// let ((), errors) = capture_logcontext_errors(|| {
///     let ctx = LoggingContext::new("req", "hs");
///     let _scope = ctx.entered();                     // with ctx: pass
/// });
/// assert!(errors.is_empty());                         // clean
/// ```
pub fn capture_logcontext_errors<R>(f: impl FnOnce() -> R) -> (R, Vec<LogcontextError>) {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let sink = seen.clone();
    let previous = set_logcontext_error_hook(Some(Rc::new(move |e: &LogcontextError| {
        sink.borrow_mut().push(e.clone())
    })));
    let result = f();
    set_logcontext_error_hook(previous);
    let errors = seen.take();
    (result, errors)
}

/// `logcontext_error(msg)`: reports a logcontext misuse to this thread's
/// hook, or logs it as a warning (target `synapse.logging.context`) when
/// there is none. The checks of this module call it; code built on them may
/// too.
///
/// ```
/// use twisted_compat::{capture_logcontext_errors, logcontext_error, LogcontextError, LoggingContext};
/// let ctx = LoggingContext::new("req", "hs");
/// let ((), errors) = capture_logcontext_errors(|| {
///     // logcontext_error("Re-starting finished log context req")
///     logcontext_error(LogcontextError::RestartFinished { context: ctx.clone() });
/// });
/// assert_eq!(errors.len(), 1);
/// ```
pub fn logcontext_error(error: LogcontextError) {
    let hook = HOOK
        .try_with(|h| h.try_borrow().ok().and_then(|h| h.clone()))
        .ok()
        .flatten();
    match hook {
        Some(hook) => hook(&error),
        None => log::warn!(target: "synapse.logging.context", "{error}"),
    }
}
