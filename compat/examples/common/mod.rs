//! What every cancellation example shares: a trace of what happened, a small
//! stand-in for Synapse's HTTP layer (it starts request handlers in their
//! own logging context, cancels them when "the client disconnects", and
//! turns their outcome into a status code as Synapse does), and a test
//! `Clock` that drives time.
//!
//! Each example includes this file with `#[path = "common/mod.rs"] mod
//! common;`. The tests (`tests/tests/cancellation_doc_examples.rs`) and the
//! `tour` example include the example files themselves, so they run the
//! very code the examples run.
//!
//! Trace lines:
//!
//! * `-- …`   a step the driver takes (a client disconnects, time passes);
//! * `[ctx] …` a `logger.info(...)` of the ported code, with the logging
//!   context current at that moment (`(finished)` marks a context whose
//!   `with` block has already ended);
//! * `· …`    an observation the example adds (not in the Python);
//! * `=> …`   a request's handler finished: the response Synapse sends;
//! * `!! …`   a logging-context misuse report (Synapse's `logcontext_error`),
//!   or a failure reported as unhandled.

// Each example uses part of this module.
#![allow(dead_code)]

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::rc::Rc;

use twisted_compat::cancellation_fuzzer::{FuzzRun, fuzz_cancellation};
use twisted_compat::{
    LogcontextError, LogcontextErrorHook, LoggingContext, SENTINEL_CONTEXT,
    clear_background_process_counts, current_context, make_deferred_yieldable, set_current_context,
    set_logcontext_error_hook,
};
use twisted_deferred::{
    CancelledError, Deferred, Failure, FirstError, UnhandledErrorHook, ensure_deferred,
    set_unhandled_error_hook,
};
use twisted_reactor::{Clock, defer_later};

/// The server name of every logging context the examples create.
pub const SERVER_NAME: &str = "example.com";

thread_local! {
    /// The trace of the example running on this thread.
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The clock of the example running on this thread (`sleep` uses it).
    static CLOCK: RefCell<Option<Clock>> = const { RefCell::new(None) };
}

fn push(line: String) {
    LINES.with(|lines| lines.borrow_mut().push(line));
}

/// A step the driver takes: `-- text`.
pub fn step(text: impl fmt::Display) {
    push(format!("-- {text}"));
}

/// `logger.info(text)` in the ported code: the line, tagged with the
/// logging context current now, as Synapse's log lines are.
pub fn info(text: impl fmt::Display) {
    push(format!("   [{}] {text}", context_label()));
}

/// An observation the example adds to show what happened: `· text`.
pub fn note(text: impl fmt::Display) {
    push(format!("   · {text}"));
}

/// The current logging context as the trace shows it: its name, with
/// `(finished)` when its `with` block has already ended.
pub fn context_label() -> String {
    let current = current_context();
    if current.finished() {
        format!("{current} (finished)")
    } else {
        current.to_string()
    }
}

/// A failure in a few words: its type, and the failure a `FirstError`
/// wraps (`FirstError[#0, CancelledError]`).
pub fn describe(failure: &Failure) -> String {
    if let Some(first) = failure.downcast_ref::<FirstError>() {
        return format!("FirstError[#{}, {}]", first.index, describe(&first.failure));
    }
    if failure.check::<CancelledError>() {
        return "CancelledError".to_owned();
    }
    failure.to_string()
}

/// Python's `ValueError`, for the examples that need an ordinary error.
#[derive(Debug, Clone)]
pub struct ValueError(pub String);

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueError {}

/// The clock of the example running now.
pub fn clock() -> Clock {
    CLOCK.with(|c| c.borrow().clone()).unwrap_or_default()
}

/// Synapse's HTTP layer starting a request's handler:
/// `defer.ensureDeferred(handler())`, inside `with LoggingContext(name):`.
/// Returns the handler's Deferred (cancelling it is what a client
/// disconnecting does).
pub fn start_request<F, Fut>(name: &str, handler: F) -> Deferred<String>
where
    F: FnOnce() -> Fut + 'static,
    Fut: Future<Output = Result<String, Failure>> + 'static,
{
    let context_name = name.to_owned();
    // request = defer.ensureDeferred(handler())
    ensure_deferred(async move {
        // with LoggingContext(name=..., server_name=...):
        let context = LoggingContext::new(context_name, SERVER_NAME);
        let _scope = context.entered();
        handler().await
    })
}

/// Prepares a run of the cancellation fuzzer: a fresh clock, which the
/// fuzzer drives and `sleep` uses, and a fresh trace; both are cleared when
/// the run is over.
pub fn fuzz_setup(run: &mut FuzzRun) {
    LINES.with(|lines| lines.borrow_mut().clear());
    let clock = Clock::new();
    CLOCK.with(|c| *c.borrow_mut() = Some(clock.clone()));
    run.clock(&clock);
    run.at_end(|| {
        CLOCK.with(|c| c.borrow_mut().take());
        LINES.with(|lines| lines.borrow_mut().clear());
    });
}

/// Runs the cancellation fuzzer over an example's fuzz target, which
/// starts `request` (and whatever else the example needs), and prints its
/// report (`cargo run --example NAME` ends with it).
pub fn print_fuzz_report(request: &str, target: fn(&mut FuzzRun) -> Deferred<String>) {
    let report = fuzz_cancellation(target);
    println!();
    println!("The cancellation fuzzer, cancelling {request} at each point where it waits:");
    print!("{report}");
}

/// A slow operation that has not been made to follow the logging-context
/// rules: `deferLater(clock, seconds)`, whose canceller cancels its timer.
/// The trace shows when the cancel reaches it.
pub fn slow_operation(what: &'static str, seconds: f64) -> Deferred<()> {
    let d = defer_later(&clock(), seconds, || Ok(()));
    d.add_errback(move |failure: Failure| {
        if failure.check::<CancelledError>() {
            note(format!(
                "{what}: cancelled, its timer is removed; it fails with CancelledError"
            ));
        }
        Err::<(), _>(failure)
    })
}

/// `await clock.sleep(seconds)`: a slow operation made yieldable (the
/// current context is cleared while it waits and restored when it fires).
pub fn sleep(what: &'static str, seconds: f64) -> Deferred<()> {
    make_deferred_yieldable(slow_operation(what, seconds))
}

/// The response Synapse's HTTP layer sends for a request handler's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The handler has not finished.
    Pending,
    /// `200`: the handler returned normally, with this body.
    Ok(String),
    /// `499 Request cancelled`: the handler failed with `CancelledError`.
    Cancelled,
    /// `500`: the handler failed with another error (described).
    Error(String),
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Pending => f.write_str("no response yet"),
            Reply::Ok(body) => write!(f, "200 {body}"),
            Reply::Cancelled => f.write_str("499 Request cancelled"),
            Reply::Error(e) => write!(f, "500 {e}"),
        }
    }
}

impl Reply {
    fn of(outcome: Result<String, Failure>) -> Reply {
        match outcome {
            Ok(body) => Reply::Ok(body),
            Err(f) if f.check::<CancelledError>() => Reply::Cancelled,
            Err(f) => Reply::Error(describe(&f)),
        }
    }
}

/// Each request's response at one checkpoint: (request, reply).
pub type Replies = Vec<(String, Reply)>;

/// What an example observed, for its `main` to print and the tests to check.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The example's title.
    pub title: String,
    /// The trace, line by line.
    pub lines: Vec<String>,
    /// Each request's response at each checkpoint: (label, [(request, reply)]).
    pub checkpoints: Vec<(String, Replies)>,
    /// Every logging-context misuse report, in order.
    pub logcontext_errors: Vec<String>,
    /// Every failure reported as unhandled, in order.
    pub unhandled: Vec<String>,
    /// Example-specific observations: (what, value).
    pub facts: Vec<(String, String)>,
    /// The logging context current when the example ended.
    pub final_context: String,
}

impl Outcome {
    /// The response of `request` at the checkpoint `label`.
    pub fn reply(&self, label: &str, request: &str) -> Reply {
        let (_, replies) = self
            .checkpoints
            .iter()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("no checkpoint {label:?}"));
        replies
            .iter()
            .find(|(r, _)| r == request)
            .map(|(_, reply)| reply.clone())
            .unwrap_or_else(|| panic!("no request {request:?} at {label:?}"))
    }

    /// The value recorded for the fact `what`.
    pub fn fact(&self, what: &str) -> &str {
        self.facts
            .iter()
            .find(|(w, _)| w == what)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no fact {what:?}"))
    }

    /// True when a trace line contains `text`.
    pub fn traced(&self, text: &str) -> bool {
        self.lines.iter().any(|l| l.contains(text))
    }

    /// Prints the title and the trace.
    pub fn print(&self) {
        println!("{}", self.title);
        println!("{}", "=".repeat(self.title.chars().count()));
        for line in &self.lines {
            println!("{line}");
        }
    }
}

/// One run of an example: the driver of its requests, its clock, and what
/// it records.
pub struct Example {
    title: String,
    clock: Clock,
    requests: RefCell<Vec<(String, Deferred<Reply>)>>,
    checkpoints: RefCell<Vec<(String, Replies)>>,
    facts: RefCell<Vec<(String, String)>>,
    logcontext_errors: Rc<RefCell<Vec<String>>>,
    unhandled: Rc<RefCell<Vec<String>>>,
    previous_logcontext_hook: Option<LogcontextErrorHook>,
    previous_unhandled_hook: Option<UnhandledErrorHook>,
}

impl Example {
    /// Starts an example on this thread: a fresh trace and clock, the
    /// sentinel context current, background processes numbered from 0, and
    /// misuse reports and unhandled failures routed into the trace.
    pub fn new(title: &str) -> Example {
        LINES.with(|lines| lines.borrow_mut().clear());
        let clock = Clock::new();
        CLOCK.with(|c| *c.borrow_mut() = Some(clock.clone()));
        set_current_context(SENTINEL_CONTEXT);
        clear_background_process_counts();
        let logcontext_errors = Rc::new(RefCell::new(Vec::new()));
        let sink = logcontext_errors.clone();
        let previous_logcontext_hook =
            set_logcontext_error_hook(Some(Rc::new(move |e: &LogcontextError| {
                push(format!("   !! logcontext: {e}"));
                sink.borrow_mut().push(e.to_string());
            })));
        let unhandled = Rc::new(RefCell::new(Vec::new()));
        let sink = unhandled.clone();
        let previous_unhandled_hook =
            set_unhandled_error_hook(Some(Box::new(move |f: &Failure| {
                push(format!(
                    "   !! unhandled error in Deferred: {}",
                    describe(f)
                ));
                sink.borrow_mut().push(describe(f));
            })));
        Example {
            title: title.to_owned(),
            clock,
            requests: RefCell::new(Vec::new()),
            checkpoints: RefCell::new(Vec::new()),
            facts: RefCell::new(Vec::new()),
            logcontext_errors,
            unhandled,
            previous_logcontext_hook,
            previous_unhandled_hook,
        }
    }

    /// The example's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A request arrives: Synapse runs its handler as
    /// `defer.ensureDeferred(handler())`, here inside
    /// `with LoggingContext(name):`, and sends a response when the handler
    /// finishes: 200 with what it returned, 499 if it failed with
    /// `CancelledError`, 500 for any other failure.
    pub fn request<F, Fut>(&self, name: &str, handler: F)
    where
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = Result<String, Failure>> + 'static,
    {
        step(format!("{name} arrives"));
        let request = start_request(name, handler);
        let request_name = name.to_owned();
        let reply = request.add_both(move |outcome: Result<String, Failure>| {
            let reply = Reply::of(outcome);
            push(format!("=> {request_name}: {reply}"));
            Ok::<_, Failure>(reply)
        });
        self.requests.borrow_mut().push((name.to_owned(), reply));
    }

    fn find(&self, name: &str) -> Deferred<Reply> {
        self.requests
            .borrow()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("no request {name:?}"))
    }

    /// The client of `name` goes away: Synapse calls `cancel()` on the
    /// handler's Deferred (the request is `@cancellable`).
    pub fn disconnect(&self, name: &str) {
        step(format!(
            "the client of {name} disconnects: Synapse calls cancel() on its Deferred"
        ));
        if let Err(f) = self.find(name).cancel() {
            note(format!("cancel() raised {}", describe(&f)));
        }
    }

    /// `clock.advance(seconds)`: timers due by then run.
    pub fn advance(&self, seconds: f64) {
        step(format!("{seconds} s pass: clock.advance({seconds})"));
        if let Err(f) = self.clock.advance(seconds) {
            note(format!("a timer raised {}", describe(&f)));
        }
    }

    /// The response of `name` so far.
    pub fn reply(&self, name: &str) -> Reply {
        self.find(name).result().value().unwrap_or(Reply::Pending)
    }

    /// Records (and traces) every request's response so far under `label`.
    pub fn checkpoint(&self, label: &str) {
        let replies: Replies = self
            .requests
            .borrow()
            .iter()
            .map(|(name, d)| (name.clone(), d.result().value().unwrap_or(Reply::Pending)))
            .collect();
        let summary: Vec<String> = replies
            .iter()
            .map(|(name, reply)| format!("{name}: {reply}"))
            .collect();
        note(format!("{label}: {}", summary.join("; ")));
        self.checkpoints
            .borrow_mut()
            .push((label.to_owned(), replies));
    }

    /// Records (and traces) an example-specific observation.
    pub fn fact(&self, what: &str, value: impl fmt::Display) {
        let value = value.to_string();
        note(format!("{what}: {value}"));
        self.facts.borrow_mut().push((what.to_owned(), value));
    }

    /// Ends the example: drops its requests (a failure nobody handled is
    /// reported now), puts the hooks back and returns what it observed.
    pub fn finish(self) -> Outcome {
        let final_context = context_label();
        if !current_context().is_sentinel() {
            note(format!(
                "the example ends with {final_context} current, not the sentinel"
            ));
        }
        let requests = std::mem::take(&mut *self.requests.borrow_mut());
        drop(requests);
        set_logcontext_error_hook(self.previous_logcontext_hook);
        set_unhandled_error_hook(self.previous_unhandled_hook);
        set_current_context(SENTINEL_CONTEXT);
        CLOCK.with(|c| c.borrow_mut().take());
        Outcome {
            title: self.title,
            lines: LINES.with(|lines| std::mem::take(&mut *lines.borrow_mut())),
            checkpoints: self.checkpoints.take(),
            logcontext_errors: self.logcontext_errors.take(),
            unhandled: self.unhandled.take(),
            facts: self.facts.take(),
            final_context,
        }
    }
}
