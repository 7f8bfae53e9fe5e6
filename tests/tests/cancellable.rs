//! `#[cancellable]` and `is_function_cancellable`
//! (`twisted_compat::cancellable_marker`): behaviours 96–97 and 100 of
//! `synapse_semantics.md` (2.10).
//!
//! Citations: `TRC` is Synapse's `tests/util/caches/test_response_cache.py`,
//! `TSERVLET` its `tests/http/test_servlet.py`; "code" is
//! `synapse/util/cancellation.py`.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::future::IntoFuture;
use std::rc::Rc;

use integration_tests::support::{Log, new_log};
use twisted_compat::http::{
    Json, JsonResource, ServletResult, SiteConfig, SynapseError, SynapseRequest, SynapseSite,
    make_request,
};
use twisted_compat::{
    Cancellable, CancelledError, Clock, Deferred, Failure, ResponseCache, cancellable,
    is_cancellable, is_function_cancellable, make_deferred_yieldable, run_in_background,
};
use twisted_deferred::ensure_deferred;
use twisted_reactor::Clock as TestClock;

#[cancellable]
async fn marked(x: u32) -> Result<u32, Failure> {
    Ok(x + 1)
}

async fn unmarked(x: u32) -> Result<u32, Failure> {
    Ok(x + 1)
}

fn returns_deferred() -> Deferred<u32> {
    Deferred::new()
}

fn returns_result() -> Result<u32, Failure> {
    Ok(1)
}

// Synapse: code (`@cancellable` sets `cancellable = True`;
// `is_function_cancellable` reads it and defaults to False)
#[test]
fn the_mark_is_read_from_the_function_and_defaults_to_false() {
    assert!(is_function_cancellable(&marked));
    assert!(!is_function_cancellable(&unmarked));
    assert!(!is_function_cancellable(&returns_deferred));
    assert!(!is_function_cancellable(&returns_result));
    assert!(!is_function_cancellable(&|| async { 1 }));
}

struct Servlet {
    calls: Cell<u32>,
}

impl Servlet {
    #[cancellable]
    async fn by_ref(&self, n: u32) -> Result<u32, Failure> {
        self.calls.set(self.calls.get() + 1);
        Ok(n)
    }

    #[cancellable]
    async fn by_mut(&mut self, n: u32) -> Result<u32, Failure> {
        *self.calls.get_mut() += n;
        Ok(self.calls.get())
    }

    #[cancellable]
    async fn by_rc(self: Rc<Self>, n: u32) -> Result<u32, Failure> {
        Ok(n + self.calls.get())
    }

    #[cancellable]
    async fn by_value(self) -> u32 {
        self.calls.get()
    }

    async fn not_marked(&self) -> u32 {
        0
    }
}

// Synapse: experiment (`is_function_cancellable` works on bound methods)
#[test]
fn methods_of_every_receiver_carry_the_mark() {
    assert!(is_function_cancellable(&Servlet::by_ref));
    assert!(is_function_cancellable(&Servlet::by_mut));
    assert!(is_function_cancellable(&Servlet::by_rc));
    assert!(is_function_cancellable(&Servlet::by_value));
    assert!(!is_function_cancellable(&Servlet::not_marked));

    let s = Rc::new(Servlet {
        calls: Cell::new(0),
    });
    // A bound method: a closure over the instance returning its value.
    let bound = {
        let s = s.clone();
        move |n: u32| s.clone().by_rc(n)
    };
    assert!(is_function_cancellable(&bound));

    let s2 = s.clone();
    let d = ensure_deferred(async move {
        let a = s2.by_ref(1).await?;
        let b = s2.clone().by_rc(10).await?;
        Ok::<_, Failure>((a, b))
    });
    assert_eq!(d.result().value(), Some((1, 11)));
    let mut owned = Servlet {
        calls: Cell::new(5),
    };
    let d = ensure_deferred(async move {
        let n = owned.by_mut(2).await?;
        Ok::<_, Failure>(n + owned.by_value().await)
    });
    assert_eq!(d.result().value(), Some(14));
}

// Synapse: experiment (`functools.wraps` copies the flag; a wrapper without
// it is not cancellable)
#[test]
fn a_wrapper_is_marked_when_it_returns_the_marked_functions_value() {
    let wraps = |x: u32| marked(x);
    assert!(is_function_cancellable(&wraps));
    let new_coroutine = |x: u32| async move { marked(x).await };
    assert!(!is_function_cancellable(&new_coroutine));
    // cancellable(lambda: ...) by hand
    let by_hand = |x: u32| Cancellable::new(async move { Ok::<_, Failure>(x) });
    assert!(is_function_cancellable(&by_hand));
    let deferred_by_hand = || Cancellable::new(Deferred::<u8>::new());
    assert!(is_function_cancellable(&deferred_by_hand));
    // The same question asked of a value.
    assert!(is_cancellable(&marked(1)));
    assert!(!is_cancellable(&unmarked(1)));
    assert!(!is_cancellable(&returns_deferred()));
}

#[cancellable]
async fn generic<T, U>(items: Vec<T>, extra: impl Into<String>) -> Result<String, Failure>
where
    T: Display,
    U: Default + Display,
{
    let mut out: String = items.iter().map(|i| i.to_string()).collect();
    out.push_str(&extra.into());
    out.push_str(&U::default().to_string());
    Ok(out)
}

#[cancellable]
async fn borrows<'a>(first: &'a str, second: &str) -> Result<usize, Failure> {
    Ok(first.len() + second.len())
}

#[cancellable]
async fn patterns((a, b): (u32, u32), mut c: u32, _: u8) -> u32 {
    c += a * b;
    c
}

#[cancellable]
async fn early_and_question_mark(fail: bool, stop: bool) -> Result<u32, Failure> {
    if stop {
        return Ok(0);
    }
    let parsed: Result<u32, SynapseError> = if fail {
        Err(SynapseError::new(400, "bad", "M_BAD"))
    } else {
        Ok(7)
    };
    let n = parsed?; // SynapseError -> Failure, as in the async fn
    Ok(n)
}

#[cancellable]
async fn no_output(log: Log<&'static str>) {
    log.borrow_mut().push("ran");
}

#[cancellable]
async fn displays(n: u32) -> impl Display {
    n * 3
}

// Synapse: code (the decorator returns the function itself: a marked
// function behaves exactly as before)
#[test]
fn marked_functions_keep_their_signature_and_behaviour() {
    let d = ensure_deferred(async {
        let g = generic::<u8, u32>(vec![1, 2], "x").await?;
        let b = borrows("ab", "cde").await?;
        let p = patterns((2, 3), 1, 0).await;
        let e = early_and_question_mark(false, false).await?;
        let s = early_and_question_mark(false, true).await?;
        let shown = displays(2).await.to_string();
        Ok::<_, Failure>(format!("{g} {b} {p} {e} {s} {shown}"))
    });
    assert_eq!(d.result().value().as_deref(), Some("12x0 5 7 7 0 6"));

    let d = ensure_deferred(early_and_question_mark(true, false).into_future());
    let failure = d.result().failure().unwrap();
    assert_eq!(failure.downcast_ref::<SynapseError>().unwrap().code, 400);

    let log = new_log();
    let d = ensure_deferred({
        let log = log.clone();
        async move {
            no_output(log).await;
            Ok::<_, Failure>(())
        }
    });
    assert!(d.called());
    assert_eq!(*log.borrow(), ["ran"]);
}

struct Loud(&'static str, Log<String>);

impl Drop for Loud {
    fn drop(&mut self) {
        self.1.borrow_mut().push(format!("drop {}", self.0));
    }
}

#[cancellable]
async fn holds_its_arguments(_unused: Loud, used: Loud, gate: Deferred<()>) -> Result<(), Failure> {
    used.1.borrow_mut().push("body".into());
    gate.await
}

// Synapse: code (an `async def`'s arguments live as long as its coroutine;
// so do a marked function's)
#[test]
fn arguments_live_until_the_future_ends_as_in_an_async_fn() {
    let log: Log<String> = new_log();
    let gate: Deferred<()> = Deferred::new();
    let fut = holds_its_arguments(
        Loud("unused", log.clone()),
        Loud("used", log.clone()),
        gate.clone(),
    );
    log.borrow_mut().push("called".into());
    let d = ensure_deferred(fut.into_future());
    log.borrow_mut().push("suspended".into());
    gate.callback(()).unwrap();
    assert!(d.called());
    assert_eq!(
        *log.borrow(),
        ["called", "body", "suspended", "drop used", "drop unused"]
    );
}

#[cancellable]
async fn inner_wait(d: Deferred<u32>, log: Log<String>) -> Result<u32, Failure> {
    match make_deferred_yieldable(d).await {
        Err(f) if f.check::<CancelledError>() => {
            log.borrow_mut().push("inner saw CancelledError".into());
            Err(f)
        }
        other => other,
    }
}

#[cancellable]
async fn outer_wait(d: Deferred<u32>, log: Log<String>) -> Result<u32, Failure> {
    let n = inner_wait(d, log.clone()).await?;
    log.borrow_mut().push("outer resumed".into());
    Ok(n)
}

// Synapse: docs (cancel() reaches the Deferred awaited at the bottom of a
// chain of audited functions; CancelledError comes back up through each)
#[test]
fn cancel_flows_down_through_marked_functions_and_back_up() {
    let log: Log<String> = new_log();
    let waited: Deferred<u32> = Deferred::new();
    let d = run_in_background(|| outer_wait(waited.clone(), log.clone()));
    assert!(!d.called());
    d.cancel().unwrap();
    assert!(d.result().failure().unwrap().check::<CancelledError>());
    assert!(waited.called());
    assert_eq!(*log.borrow(), ["inner saw CancelledError"]);
    d.add_errback(|_| Ok(0));
}

#[derive(Default)]
struct Tracker {
    cancelled: Cell<bool>,
    completed: Cell<bool>,
}

/// TRC's `@cancellable async def delayed_return` wrapped by the test's
/// `@wraps`-decorated `wrapped`: records cancellation and completion.
#[cancellable]
async fn tracked(clock: Clock, tracker: Rc<Tracker>, o: &'static str) -> Result<String, Failure> {
    let r = clock.sleep(1.0).await;
    tracker.completed.set(true);
    if let Err(f) = r {
        tracker.cancelled.set(f.check::<CancelledError>());
        return Err(f);
    }
    Ok(o.to_owned())
}

/// The same, not marked.
async fn untracked(clock: Clock, tracker: Rc<Tracker>) -> Result<String, Failure> {
    let r = clock.sleep(1.0).await;
    tracker.completed.set(true);
    if let Err(f) = r {
        tracker.cancelled.set(f.check::<CancelledError>());
        return Err(f);
    }
    Ok("howdy".to_owned())
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_cancel_first_wait_expire
// (the cache reads `is_function_cancellable(callback)`: no `.cancellable()`
// on the call, the mark comes from the function)
#[test]
fn the_response_cache_prunes_a_marked_computation() {
    let reactor = TestClock::new();
    let clock = Clock::new(reactor.clone(), "test_server");
    let cache: ResponseCache<i32, String> =
        ResponseCache::new(&clock, "cancel_expire_cache", "test_server", Some(0.3));
    let tracker = Rc::new(Tracker::default());
    let (c, t) = (clock.clone(), tracker.clone());
    // the callback returns the marked function's value (TRC's @wraps)
    let wrap_d = ensure_deferred(cache.wrap(0, move || tracked(c, t, "howdy")));
    wrap_d.cancel().unwrap();
    assert!(!wrap_d.called() || wrap_d.paused() > 0);
    reactor.advance(0.7).unwrap();
    assert!(wrap_d.result().failure().unwrap().check::<CancelledError>());
    assert!(tracker.completed.get() && tracker.cancelled.get());
    assert!(cache.keys().is_empty());
    wrap_d.add_errback(|_| Ok(String::new()));
}

// Synapse: TRC::ResponseCacheTestCase.test_cache_cancel_non_cancellable
#[test]
fn the_response_cache_never_prunes_an_unmarked_computation() {
    let reactor = TestClock::new();
    let clock = Clock::new(reactor.clone(), "test_server");
    let cache: ResponseCache<i32, String> = ResponseCache::new(
        &clock,
        "cancel_non_cancellable_cache",
        "test_server",
        Some(0.3),
    );
    let tracker = Rc::new(Tracker::default());
    let (c, t) = (clock.clone(), tracker.clone());
    let wrap_d = ensure_deferred(cache.wrap(0, move || untracked(c, t)));
    wrap_d.cancel().unwrap();
    reactor.advance(2.0).unwrap();
    assert!(wrap_d.result().failure().unwrap().check::<CancelledError>());
    assert!(tracker.completed.get() && !tracker.cancelled.get());
    wrap_d.add_errback(|_| Ok(String::new()));
}

struct SleepServlet {
    clock: Clock,
    log: RefCell<Vec<String>>,
}

impl SleepServlet {
    #[cancellable]
    async fn on_get(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let r = self.clock.sleep(1.0).await;
        self.log.borrow_mut().push(format!(
            "cancellable {}",
            if r.is_ok() { "done" } else { "cancelled" }
        ));
        r?;
        Ok((200, Json::from(request.path().to_owned())))
    }

    async fn on_post(self: Rc<Self>, _request: SynapseRequest) -> ServletResult {
        let r = self.clock.sleep(1.0).await;
        self.log.borrow_mut().push(format!(
            "uncancellable {}",
            if r.is_ok() { "done" } else { "cancelled" }
        ));
        r?;
        Ok((200, Json::Null))
    }
}

// Synapse: TSERVLET::TestRestServletCancellation.test_cancellable_disconnect,
// .test_uncancellable_disconnect (the HTTP layer reads the mark of the
// registered callback)
#[test]
fn the_http_layer_reads_the_mark_of_the_registered_callback() {
    let reactor = TestClock::new();
    let servlet = Rc::new(SleepServlet {
        clock: Clock::new(reactor.clone(), "test"),
        log: RefCell::new(Vec::new()),
    });
    let resource = JsonResource::new();
    let s = servlet.clone();
    resource
        .register_paths("GET", ["/sleep"], move |r| s.clone().on_get(r), "Sleep")
        .unwrap();
    let s = servlet.clone();
    resource
        .register_paths("POST", ["/sleep"], move |r| s.clone().on_post(r), "Sleep")
        .unwrap();
    let site = SynapseSite::new(SiteConfig::new("test", "test"), resource, reactor.clone());

    let get = make_request(&site, "GET", "/sleep", b"");
    let request = get.request().unwrap();
    assert!(request.is_render_cancellable());
    get.disconnect();
    assert_eq!(request.code(), 499);
    assert_eq!(*servlet.log.borrow(), ["cancellable cancelled"]);

    let post = make_request(&site, "POST", "/sleep", b"");
    let request = post.request().unwrap();
    assert!(!request.is_render_cancellable());
    post.disconnect();
    assert!(request.is_processing());
    reactor.advance(1.0).unwrap();
    assert_eq!(request.code(), 200);
    assert_eq!(
        *servlet.log.borrow(),
        ["cancellable cancelled", "uncancellable done"]
    );
    assert!(get.written().is_empty() && post.written().is_empty());
}
