//! Synapse's request path, cancelled by client disconnects: an HTTP server
//! on the reactor with four kinds of endpoint.
//!
//! | endpoint | what it shows |
//! |---|---|
//! | `GET /sleep/{seconds}` | a `#[cancellable]` slow handler: a client that leaves cancels it (access log `499!`) |
//! | `GET /uncancellable/{gate}` | a handler that is not cancellable: it runs to completion after its client left, and its response is dropped (`200!`) |
//! | `GET /shared/{key}` | concurrent requests share one computation through an `ObservableDeferred`: a client that leaves cancels only its own wait |
//! | `POST /delayed/{gate}` | background work behind `delay_cancellation`: a client that leaves gets its 499 only once the work is done, and the work is never cut short |
//! | `POST /gates/{gate}/open` | opens a gate (what the gated work waits for) |
//! | `GET /state` | the work done so far (the latest events) |
//! | `GET /stats` | counters for soak tests: requests received and logged, disconnects, handlers cancelled, background contexts started and finished, errors |
//!
//! ```sh
//! cargo run -p twisted-compat --example http_demo -- --port 8080
//! curl -m 1 localhost:8080/sleep/30            # give up after 1 s: the log shows 499!
//! curl localhost:8080/shared/k & curl -m 1 localhost:8080/shared/k; curl -X POST localhost:8080/gates/k/open
//! ```
//!
//! `tests/tests/http_demo.rs` runs it in-process on a loopback port and
//! drives it with real sockets; `benches/src/bin/soak.rs` runs it as a child
//! process under load for minutes and reads `/stats`.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use twisted_compat::http::{
    Codes, Json, JsonResource, ServletResult, SiteConfig, SiteEvent, SynapseError, SynapseRequest,
    SynapseSite,
};
use twisted_compat::{
    CancelledError, Clock, Deferred, Failure, LogcontextError, ObservableDeferred,
    PreserveLoggingContext, cancellable, collect_background_process_metrics, delay_cancellation,
    make_deferred_yieldable, run_as_background_process, run_in_background,
};
use twisted_deferred::time::ReactorTime;

/// A gate: work waits on it until someone opens it.
#[derive(Default)]
struct Gate {
    open: bool,
    waiters: Vec<Deferred<()>>,
}

/// What is told of each event ([`Demo::set_event_hook`]).
type EventHook = Box<dyn Fn(&str)>;

/// How many events and writes the demo remembers for `GET /state`: the
/// latest ones. A server soaked for hours must not keep a line per request.
pub const KEPT: usize = 256;

/// The background process of `GET /shared/{key}`.
const SHARED_COMPUTATION: &str = "shared_computation";

/// Error-level records the example's logger printed (`GET /stats`).
static ERROR_LOGS: AtomicU64 = AtomicU64::new(0);

/// What `GET /stats` reports, counted on the reactor thread.
#[derive(Debug, Default)]
struct Stats {
    /// Requests whose logging context was created (`Received request`).
    received: Cell<u64>,
    /// Requests completely done: their access-log line was written.
    processed: Cell<u64>,
    /// Access-log lines `499!`: handlers cancelled by a disconnect.
    logged_499: Cell<u64>,
    /// Clients that left before their response (`connectionLost`).
    disconnected: Cell<u64>,
    /// Responses not sent because their client had left.
    dropped: Cell<u64>,
    /// Handlers that saw the `CancelledError`, per endpoint.
    sleep_cancelled: Cell<u64>,
    shared_cancelled: Cell<u64>,
    delayed_cancelled: Cell<u64>,
    /// Failures reported as "Unhandled error in Deferred".
    unhandled_errors: Cell<u64>,
    /// Logcontext misuse reported (`logcontext_error`).
    logcontext_errors: Cell<u64>,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// Appends to a log that keeps the latest [`KEPT`] lines.
fn push_kept(log: &RefCell<VecDeque<String>>, line: String) {
    let mut log = log.borrow_mut();
    if log.len() == KEPT {
        log.pop_front();
    }
    log.push_back(line);
}

/// The demo's servlets and their state.
pub struct Demo {
    clock: Clock,
    server_name: String,
    gates: RefCell<HashMap<String, Gate>>,
    shared: RefCell<HashMap<String, ObservableDeferred<Option<Json>>>>,
    computations: Cell<u32>,
    writes: RefCell<VecDeque<String>>,
    events: RefCell<VecDeque<String>>,
    on_event: RefCell<Option<EventHook>>,
    stats: Stats,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("computations", &self.computations.get())
            .field("writes", &self.writes.borrow())
            .finish_non_exhaustive()
    }
}

/// The request's gate/key/seconds argument.
fn arg(request: &SynapseRequest, name: &str) -> Result<String, Failure> {
    request.path_arg(name).ok_or_else(|| {
        Failure::new(SynapseError::new(
            400,
            format!("Missing {name}"),
            Codes::MISSING_PARAM,
        ))
    })
}

impl Demo {
    /// Records what happened, for `GET /state` and for observers.
    fn record(&self, event: String) {
        if let Some(hook) = &*self.on_event.borrow() {
            hook(&event);
        }
        push_kept(&self.events, event);
    }

    /// Calls `hook` with every event the demo records (`"sleep GET-0:
    /// cancelled"`, …), on the reactor's thread.
    pub fn set_event_hook(&self, hook: impl Fn(&str) + 'static) {
        *self.on_event.borrow_mut() = Some(Box::new(hook));
    }

    /// The latest [`KEPT`] events recorded.
    pub fn events(&self) -> Vec<String> {
        self.events.borrow().iter().cloned().collect()
    }

    /// Counts a failure reported as unhandled, for `GET /stats` (see
    /// `twisted_deferred::set_unhandled_error_hook`).
    pub fn count_unhandled_error(&self, failure: &Failure) {
        bump(&self.stats.unhandled_errors);
        log::error!("Unhandled error in Deferred: {failure}");
    }

    /// Counts a logcontext misuse, for `GET /stats` (see
    /// `twisted_compat::set_logcontext_error_hook`).
    pub fn count_logcontext_error(&self, error: &LogcontextError) {
        bump(&self.stats.logcontext_errors);
        log::warn!(target: "synapse.logging.context", "{error}");
    }

    /// Counts what the site reports.
    fn observe(&self, event: &SiteEvent) {
        let stats = &self.stats;
        match event {
            SiteEvent::RequestReceived { .. } => bump(&stats.received),
            SiteEvent::ClientDisconnected { .. } => bump(&stats.disconnected),
            SiteEvent::ResponseDropped { .. } => bump(&stats.dropped),
            SiteEvent::Processed(entry) => {
                bump(&stats.processed);
                if entry.code_field() == "499!" {
                    bump(&stats.logged_499);
                }
            }
            _ => {}
        }
    }

    /// Waits until `gate` is open, following the logcontext rules.
    async fn wait_gate(&self, gate: &str) -> Result<(), Failure> {
        let waiter = {
            let mut gates = self.gates.borrow_mut();
            let entry = gates.entry(gate.to_owned()).or_default();
            if entry.open {
                return Ok(());
            }
            let d: Deferred<()> = Deferred::new();
            entry.waiters.push(d.clone());
            d
        };
        make_deferred_yieldable(waiter).await
    }

    /// `GET /sleep/{seconds}`: sleeps, unless its client leaves first.
    #[cancellable]
    async fn on_get_sleep(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let seconds: f64 = arg(&request, "seconds")?.parse().map_err(|_| {
            Failure::new(SynapseError::new(
                400,
                "seconds: not a number",
                Codes::INVALID_PARAM,
            ))
        })?;
        let id = request.request_id();
        self.record(format!("sleep {id}: started"));
        if let Err(failure) = self.clock.sleep(seconds).await {
            if failure.check::<CancelledError>() {
                // The CancelledError comes out of the await; let it go on up.
                bump(&self.stats.sleep_cancelled);
                self.record(format!("sleep {id}: cancelled"));
            }
            return Err(failure);
        }
        self.record(format!("sleep {id}: done"));
        Ok((200, Json::object([("slept", seconds)])))
    }

    /// `GET /uncancellable/{gate}`: not marked, so it runs to completion
    /// even when its client has left.
    async fn on_get_uncancellable(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let gate = arg(&request, "gate")?;
        let id = request.request_id();
        self.record(format!("uncancellable {id}: started"));
        self.wait_gate(&gate).await?;
        self.record(format!("uncancellable {id}: finished"));
        Ok((200, Json::object([("gate", gate)])))
    }

    /// The shared computation for `key`, started by the first request that
    /// needs it, in a background process of its own (so that it lends no
    /// request's context and outlives any of them).
    fn shared_computation(self: &Rc<Self>, key: &str) -> ObservableDeferred<Option<Json>> {
        if let Some(existing) = self.shared.borrow().get(key) {
            return existing.clone();
        }
        self.computations.set(self.computations.get() + 1);
        self.record(format!("shared {key}: computation started"));
        let demo = self.clone();
        let k = key.to_owned();
        let d: Deferred<Option<Json>> =
            run_as_background_process(SHARED_COMPUTATION, &self.server_name, move || async move {
                demo.wait_gate(&k).await?;
                demo.shared.borrow_mut().remove(&k);
                demo.record(format!("shared {k}: computation finished"));
                Ok::<_, Failure>(Some(Json::from(format!("computed {k}"))))
            });
        // With the gate already open the computation has finished (and
        // removed its entry) before we get here: remembering it now would
        // serve its result to every later request and never compute again.
        let finished = d.called();
        let od = ObservableDeferred::new(d, true);
        if !finished {
            self.shared.borrow_mut().insert(key.to_owned(), od.clone());
        }
        od
    }

    /// `GET /shared/{key}`: waits on an observer of the shared computation.
    /// Cancelling the observer leaves the computation and the other
    /// requests alone.
    #[cancellable]
    async fn on_get_shared(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let key = arg(&request, "key")?;
        let id = request.request_id();
        let od = self.shared_computation(&key);
        self.record(format!("shared {id}: waiting"));
        let result = match make_deferred_yieldable(od.observe()).await {
            Ok(result) => result,
            Err(failure) => {
                if failure.check::<CancelledError>() {
                    bump(&self.stats.shared_cancelled);
                    self.record(format!("shared {id}: cancelled"));
                }
                return Err(failure);
            }
        };
        let Some(result) = result else {
            return Err(Failure::msg("the shared computation failed"));
        };
        self.record(format!("shared {id}: got it"));
        Ok((
            200,
            Json::object([
                ("key", Json::from(key)),
                ("result", result),
                ("computations", Json::from(self.computations.get())),
            ]),
        ))
    }

    /// `POST /delayed/{gate}`: a write in the background that must not be
    /// cut short; the request waits for it through `delay_cancellation`.
    #[cancellable]
    async fn on_post_delayed(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let gate = arg(&request, "gate")?;
        let id = request.request_id();
        self.record(format!("delayed {id}: started"));
        let demo = self.clone();
        let g = gate.clone();
        let write: Deferred<()> = run_in_background(move || async move {
            demo.wait_gate(&g).await?;
            push_kept(&demo.writes, g.clone());
            demo.record(format!("delayed write {g}: stored"));
            Ok::<_, Failure>(())
        });
        if let Err(failure) = make_deferred_yieldable(delay_cancellation(&write)).await {
            if failure.check::<CancelledError>() {
                bump(&self.stats.delayed_cancelled);
                self.record(format!("delayed {id}: cancelled after the write"));
            }
            return Err(failure);
        }
        self.record(format!("delayed {id}: done"));
        Ok((200, Json::object([("stored", gate)])))
    }

    /// `POST /gates/{gate}/open`.
    async fn on_post_open(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let gate = arg(&request, "gate")?;
        let waiters = {
            let mut gates = self.gates.borrow_mut();
            let entry = gates.entry(gate.clone()).or_default();
            entry.open = true;
            std::mem::take(&mut entry.waiters)
        };
        self.record(format!("gate {gate}: opened"));
        let released = waiters.len();
        {
            // Whatever resumes runs in its own context; ours comes back at
            // the end of the block.
            let _preserve = PreserveLoggingContext::sentinel();
            for waiter in waiters {
                // A waiter cancelled meanwhile has its result already.
                let _ = waiter.callback(());
            }
        }
        Ok((
            200,
            Json::object([
                ("gate", Json::from(gate)),
                ("released", Json::from(released)),
            ]),
        ))
    }

    /// `GET /stats`: what a soak test checks. `in_flight` does not count
    /// this request; a background context has finished once it exited.
    async fn on_get_stats(self: Rc<Self>, _request: SynapseRequest) -> ServletResult {
        let s = &self.stats;
        let background = collect_background_process_metrics()
            .into_iter()
            .filter(|m| m.name == SHARED_COMPUTATION)
            .fold((0u64, 0u64), |(started, running), m| {
                (
                    started + m.start_count,
                    running + u64::try_from(m.in_flight).unwrap_or(0),
                )
            });
        let cancelled = [
            ("sleep", s.sleep_cancelled.get()),
            ("shared", s.shared_cancelled.get()),
            ("delayed", s.delayed_cancelled.get()),
        ];
        let total: u64 = cancelled.iter().map(|(_, n)| n).sum();
        Ok((
            200,
            Json::object([
                (
                    "requests",
                    Json::object([
                        ("received", s.received.get()),
                        ("processed", s.processed.get()),
                        (
                            "in_flight",
                            s.received.get().saturating_sub(s.processed.get() + 1),
                        ),
                    ]),
                ),
                ("disconnects", Json::from(s.disconnected.get())),
                ("responses_dropped", Json::from(s.dropped.get())),
                ("access_log_499", Json::from(s.logged_499.get())),
                (
                    "cancelled",
                    Json::object(cancelled.into_iter().chain([("total", total)])),
                ),
                (
                    "background_contexts",
                    Json::object([
                        ("started", background.0),
                        ("finished", background.0 - background.1),
                    ]),
                ),
                ("unhandled_errors", Json::from(s.unhandled_errors.get())),
                ("logcontext_errors", Json::from(s.logcontext_errors.get())),
                ("error_logs", Json::from(ERROR_LOGS.load(Ordering::Relaxed))),
                ("gates", Json::from(self.gates.borrow().len())),
                ("shared_pending", Json::from(self.shared.borrow().len())),
            ]),
        ))
    }

    /// `GET /state`.
    async fn on_get_state(self: Rc<Self>, _request: SynapseRequest) -> ServletResult {
        Ok((
            200,
            Json::object([
                ("computations", Json::from(self.computations.get())),
                ("writes", Json::array(self.writes.borrow().iter())),
                ("events", Json::array(self.events.borrow().iter())),
            ]),
        ))
    }
}

/// The demo's site on `reactor` (the real one, or a test clock).
pub fn build_site<R>(reactor: &R, server_name: &str) -> (SynapseSite, Rc<Demo>)
where
    R: ReactorTime + Clone + 'static,
{
    let demo = Rc::new(Demo {
        clock: Clock::new(reactor.clone(), server_name),
        server_name: server_name.to_owned(),
        gates: RefCell::new(HashMap::new()),
        shared: RefCell::new(HashMap::new()),
        computations: Cell::new(0),
        writes: RefCell::new(VecDeque::new()),
        events: RefCell::new(VecDeque::new()),
        on_event: RefCell::new(None),
        stats: Stats::default(),
    });
    let resource = JsonResource::new();
    let registered = [
        {
            let d = demo.clone();
            resource.register_paths(
                "GET",
                ["/sleep/{seconds}"],
                move |r| d.clone().on_get_sleep(r),
                "SleepServlet",
            )
        },
        {
            let d = demo.clone();
            resource.register_paths(
                "GET",
                ["/uncancellable/{gate}"],
                move |r| d.clone().on_get_uncancellable(r),
                "UncancellableServlet",
            )
        },
        {
            let d = demo.clone();
            resource.register_paths(
                "GET",
                ["/shared/{key}"],
                move |r| d.clone().on_get_shared(r),
                "SharedServlet",
            )
        },
        {
            let d = demo.clone();
            resource.register_paths(
                "POST",
                ["/delayed/{gate}"],
                move |r| d.clone().on_post_delayed(r),
                "DelayedServlet",
            )
        },
        {
            let d = demo.clone();
            resource.register_paths(
                "POST",
                ["/gates/{gate}/open"],
                move |r| d.clone().on_post_open(r),
                "GateServlet",
            )
        },
        {
            let d = demo.clone();
            resource.register_paths(
                "GET",
                ["/state"],
                move |r| d.clone().on_get_state(r),
                "StateServlet",
            )
        },
        {
            let d = demo.clone();
            resource.register_paths(
                "GET",
                ["/stats"],
                move |r| d.clone().on_get_stats(r),
                "StatsServlet",
            )
        },
    ];
    for result in registered {
        if let Err(e) = result {
            // The patterns above are fixed and valid.
            eprintln!("{e}");
        }
    }
    let site = SynapseSite::new(
        SiteConfig::new("client", server_name),
        resource,
        reactor.clone(),
    );
    let observer = demo.clone();
    site.add_observer(move |event| observer.observe(event));
    (site, demo)
}

/// Prints access-log lines and warnings.
struct PrintLogger;

impl log::Log for PrintLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Error {
            ERROR_LOGS.fetch_add(1, Ordering::Relaxed);
        }
        if self.enabled(record.metadata()) {
            println!("{} {}: {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: PrintLogger = PrintLogger;

fn main() {
    let mut port: u16 = 8080;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().map(|p| p.parse::<u16>())) {
            ("--port", Some(Ok(p))) => port = p,
            _ => {
                eprintln!("usage: http_demo [--port N]");
                std::process::exit(2);
            }
        }
    }
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
    let reactor = match twisted_reactor::Reactor::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the reactor: {e}");
            std::process::exit(1);
        }
    };
    let (site, demo) = build_site(&reactor, "localhost");
    // Counted for `GET /stats`, and still logged. The hooks are the
    // reactor thread's: this one.
    let d = demo.clone();
    twisted_deferred::set_unhandled_error_hook(Some(Box::new(move |f: &Failure| {
        d.count_unhandled_error(f)
    })));
    let d = demo.clone();
    twisted_compat::set_logcontext_error_hook(Some(Rc::new(move |e: &LogcontextError| {
        d.count_logcontext_error(e)
    })));
    // `--port 0`: a port the OS picks, printed here (the soak test reads it).
    let port = match site.listen_tcp(&reactor, port, "127.0.0.1") {
        Ok(p) => {
            println!("serving on http://{}", p.get_host());
            p.get_host().port()
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!("try: curl -m 1 localhost:{port}/sleep/30   (then watch for 499!)");
    if let Err(e) = reactor.run() {
        eprintln!("{e}");
    }
}
