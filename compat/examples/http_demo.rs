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
//! | `GET /state` | the work done so far |
//!
//! ```sh
//! cargo run -p twisted-compat --example http_demo -- --port 8080
//! curl -m 1 localhost:8080/sleep/30            # give up after 1 s: the log shows 499!
//! curl localhost:8080/shared/k & curl -m 1 localhost:8080/shared/k; curl -X POST localhost:8080/gates/k/open
//! ```
//!
//! `tests/tests/http_demo.rs` runs it in-process on a loopback port and
//! drives it with real sockets.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use twisted_compat::http::{
    Codes, Json, JsonResource, ServletResult, SiteConfig, SynapseError, SynapseRequest, SynapseSite,
};
use twisted_compat::{
    CancelledError, Clock, Deferred, Failure, ObservableDeferred, PreserveLoggingContext,
    cancellable, delay_cancellation, make_deferred_yieldable, run_as_background_process,
    run_in_background,
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

/// The demo's servlets and their state.
pub struct Demo {
    clock: Clock,
    server_name: String,
    gates: RefCell<HashMap<String, Gate>>,
    shared: RefCell<HashMap<String, ObservableDeferred<Option<Json>>>>,
    computations: Cell<u32>,
    writes: RefCell<Vec<String>>,
    events: RefCell<Vec<String>>,
    on_event: RefCell<Option<EventHook>>,
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
        self.events.borrow_mut().push(event);
    }

    /// Calls `hook` with every event the demo records (`"sleep GET-0:
    /// cancelled"`, …), on the reactor's thread.
    pub fn set_event_hook(&self, hook: impl Fn(&str) + 'static) {
        *self.on_event.borrow_mut() = Some(Box::new(hook));
    }

    /// The events recorded so far.
    pub fn events(&self) -> Vec<String> {
        self.events.borrow().clone()
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
        let d: Deferred<Option<Json>> = run_as_background_process(
            "shared_computation",
            &self.server_name,
            move || async move {
                demo.wait_gate(&k).await?;
                demo.shared.borrow_mut().remove(&k);
                demo.record(format!("shared {k}: computation finished"));
                Ok::<_, Failure>(Some(Json::from(format!("computed {k}"))))
            },
        );
        let od = ObservableDeferred::new(d, true);
        self.shared.borrow_mut().insert(key.to_owned(), od.clone());
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
            demo.writes.borrow_mut().push(g.clone());
            demo.record(format!("delayed write {g}: stored"));
            Ok::<_, Failure>(())
        });
        if let Err(failure) = make_deferred_yieldable(delay_cancellation(&write)).await {
            if failure.check::<CancelledError>() {
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
        writes: RefCell::new(Vec::new()),
        events: RefCell::new(Vec::new()),
        on_event: RefCell::new(None),
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
    (site, demo)
}

/// Prints access-log lines and warnings.
struct PrintLogger;

impl log::Log for PrintLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
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
    let (site, _demo) = build_site(&reactor, "localhost");
    match site.listen_tcp(&reactor, port, "127.0.0.1") {
        Ok(p) => println!("serving on http://{}", p.get_host()),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
    println!("try: curl -m 1 localhost:{port}/sleep/30   (then watch for 499!)");
    if let Err(e) = reactor.run() {
        eprintln!("{e}");
    }
}
