//! Synapse's endpoint cancellation harness,
//! `twisted_compat::http::make_request_with_cancellation_test`: a
//! well-behaved `#[cancellable]` servlet passes, disconnected at each of its
//! awaits; servlets breaking a rule fail it, with the rule and the await
//! named; a servlet that is not cancellable fails it, having run to
//! completion after the disconnect.
//!
//! Citations: Synapse's `tests/http/server/_base.py`
//! (`make_request_with_cancellation_test`, `disconnect_and_assert`), its
//! uses in `tests/rest/client/test_rooms.py`, and the "Cancellation"
//! document's rules (CancelledErrors, Creation of Deferreds, Uncancelled
//! processing).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use twisted_compat::cancellation_fuzzer::Rule;
use twisted_compat::http::{
    FakeChannel, Json, JsonResource, ServletResult, SiteConfig, SiteEvent, SynapseRequest,
    SynapseSite, make_request_with_cancellation_test,
};
use twisted_compat::{
    Clock, Deferred, Failure, ObservableDeferred, PreserveLoggingContext, cancellable,
    current_context, delay_cancellation, make_deferred_yieldable, run_as_background_process,
    run_in_background, succeed,
};
use twisted_reactor::{Clock as TestClock, defer_later};

/// This file's source, to find the lines of marked awaits.
const SELF: &str = include_str!("http_cancellation_test.rs");

/// `http_cancellation_test.rs:LINE:` of the `.await` on the line marked
/// `marker` (the fuzzer names an await by where its `.await` is).
fn await_marked(marker: &str) -> String {
    let (index, text) = SELF
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(marker) && l.contains(".await"))
        .unwrap_or_else(|| panic!("no await marked {marker:?}"));
    let column = text.find("await").expect("an await") + 1;
    format!("http_cancellation_test.rs:{}:{column}", index + 1)
}

/// The servlets under test, with what they did.
struct RoomServlets {
    reactor: TestClock,
    clock: Clock,
    /// Room-name lookups in flight, shared by the requests that want them.
    names: Rc<RefCell<HashMap<String, ObservableDeferred<String>>>>,
    /// Member loads in flight, each Deferred handed to every waiter (the
    /// bug).
    members: Rc<RefCell<HashMap<String, Deferred<()>>>>,
    /// Read markers stored.
    writes: Rc<RefCell<Vec<String>>>,
    /// The topic lock: held, and who waits for it.
    topic_lock: RefCell<(bool, Vec<Deferred<()>>)>,
    /// Handlers started.
    started: Cell<usize>,
    /// Handlers that ran to their end.
    completed: Cell<usize>,
}

impl RoomServlets {
    /// `get_room_name(room_id)`: one lookup per room at a time (2 s), each
    /// caller observing it (`ObservableDeferred.observe()`).
    fn room_name(&self, room_id: &str) -> Deferred<String> {
        if let Some(lookup) = self.names.borrow().get(room_id) {
            return lookup.observe();
        }
        let name = format!("Room {room_id}");
        let origin = defer_later(&self.reactor, 2.0, move || Ok::<_, Failure>(name));
        let (names, key) = (self.names.clone(), room_id.to_owned());
        origin.add_both(move |outcome: Result<String, Failure>| {
            names.borrow_mut().remove(&key);
            outcome
        });
        let lookup = ObservableDeferred::new(origin, true);
        let observer = lookup.observe();
        self.names.borrow_mut().insert(room_id.to_owned(), lookup);
        observer
    }

    /// `wait_for_members(room_id)`: the room's members are loaded once per
    /// room at a time (2 s); every caller gets the same Deferred (the
    /// document's `wait_for_room`).
    fn wait_for_members(&self, room_id: &str) -> Deferred<()> {
        if let Some(loading) = self.members.borrow().get(room_id) {
            return loading.clone();
        }
        let loading = defer_later(&self.reactor, 2.0, || Ok::<_, Failure>(()));
        let (members, key) = (self.members.clone(), room_id.to_owned());
        loading.add_both(move |outcome: Result<(), Failure>| {
            members.borrow_mut().remove(&key);
            outcome
        });
        self.members
            .borrow_mut()
            .insert(room_id.to_owned(), loading.clone());
        loading
    }

    /// `store_read_marker(room_id)`: a write that takes a second.
    fn store_read_marker(&self, room_id: String) -> Deferred<()> {
        let (clock, writes) = (self.clock.clone(), self.writes.clone());
        run_in_background(move || async move {
            clock.sleep(1.0).await?;
            writes.borrow_mut().push(room_id);
            Ok::<_, Failure>(())
        })
    }

    /// `GET /rooms/{room_id}/summary`: well behaved, with four awaits.
    #[cancellable]
    async fn on_get_summary(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        self.started.set(self.started.get() + 1);
        let room_id = request.path_arg("room_id").unwrap_or_default();
        // await self.auth.get_user_by_req(request)
        self.clock.sleep(1.0).await?;
        // name = await make_deferred_yieldable(self._name_lookups.observe())
        let name = make_deferred_yieldable(self.room_name(&room_id)).await?;
        // await make_deferred_yieldable(delay_cancellation(run_in_background(store, ...)))
        let write = self.store_read_marker(room_id.clone());
        make_deferred_yieldable(delay_cancellation(&write)).await?;
        // await self.clock.sleep(1)
        self.clock.sleep(1.0).await?;
        self.completed.set(self.completed.get() + 1);
        Ok((
            200,
            Json::object([("room_id", room_id.as_str()), ("name", name.as_str())]),
        ))
    }

    /// `GET /rooms/{room_id}/swallow`: catches every error of its await,
    /// `CancelledError` included.
    #[cancellable]
    async fn on_get_swallowing(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let room_id = request.path_arg("room_id").unwrap_or_default();
        let nap = defer_later(&self.reactor, 1.0, || Ok::<_, Failure>(()));
        // try: await ...  except Exception: pass
        let outcome = make_deferred_yieldable(nap).await; // <- swallows
        if let Err(failure) = outcome {
            log::warn!("ignoring {failure}");
        }
        Ok((200, Json::object([("room_id", room_id)])))
    }

    /// `GET /rooms/{room_id}/members`: awaits the shared Deferred
    /// directly, which a background prefetch awaits too.
    #[cancellable]
    async fn on_get_members(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let room_id = request.path_arg("room_id").unwrap_or_default();
        let loaded = self.wait_for_members(&room_id);
        let prefetch = loaded.clone();
        // run_as_background_process("prefetch_profiles", ...): awaits it too
        let _: Deferred<()> =
            run_as_background_process("prefetch_profiles", "test", move || async move {
                make_deferred_yieldable(prefetch).await
            });
        // await make_deferred_yieldable(wait_for_members(room_id))   -- Bad!
        make_deferred_yieldable(loaded).await?; // <- shared
        Ok((200, Json::object([("joined_members", 3)])))
    }

    /// `POST /rooms/{room_id}/read_markers`: the write runs on in the
    /// request's logging context, and the request only waits for a signal
    /// from it: cancelling the request does not stop the write.
    #[cancellable]
    async fn on_post_read_marker(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        let room_id = request.path_arg("room_id").unwrap_or_default();
        let done: Deferred<()> = Deferred::new();
        let signal = done.clone();
        let (clock, writes) = (self.clock.clone(), self.writes.clone());
        // run_in_background(update_read_marker, done)
        let _: Deferred<()> = run_in_background(move || async move {
            clock.sleep(1.0).await?;
            writes.borrow_mut().push(room_id);
            // The request may have been cancelled meanwhile.
            let _ = signal.callback(());
            Ok::<_, Failure>(())
        });
        make_deferred_yieldable(done).await?; // <- signal
        Ok((200, Json::object([("room_id", "ok")])))
    }

    /// Takes the topic lock, waiting for it if it is held.
    fn acquire_topic_lock(&self) -> Deferred<()> {
        let mut lock = self.topic_lock.borrow_mut();
        if !lock.0 {
            lock.0 = true;
            return succeed(());
        }
        let waiter = Deferred::new();
        lock.1.push(waiter.clone());
        waiter
    }

    /// Hands the topic lock to the next waiter, or frees it.
    fn release_topic_lock(&self) {
        let next = {
            let mut lock = self.topic_lock.borrow_mut();
            if lock.1.is_empty() {
                lock.0 = false;
                None
            } else {
                Some(lock.1.remove(0))
            }
        };
        if let Some(next) = next {
            let _preserve = PreserveLoggingContext::sentinel();
            let _ = next.callback(());
        }
    }

    /// `PUT /rooms/{room_id}/topic`: releases its lock only when it
    /// succeeds (no `try`/`finally`), so a cancelled request leaves it held.
    #[cancellable]
    async fn on_put_topic(self: Rc<Self>, _request: SynapseRequest) -> ServletResult {
        make_deferred_yieldable(self.acquire_topic_lock()).await?;
        self.clock.sleep(1.0).await?;
        self.clock.sleep(1.0).await?;
        self.release_topic_lock();
        Ok((200, Json::object([("event_id", "$topic")])))
    }

    /// `GET /rooms/{room_id}/state`: not cancellable.
    async fn on_get_state(self: Rc<Self>, request: SynapseRequest) -> ServletResult {
        self.started.set(self.started.get() + 1);
        let room_id = request.path_arg("room_id").unwrap_or_default();
        self.clock.sleep(1.0).await?;
        self.completed.set(self.completed.get() + 1);
        Ok((200, Json::object([("room_id", room_id)])))
    }
}

/// A site serving the servlets, with its access log's codes (`200`,
/// `499!`, …) in order.
struct Homeserver {
    reactor: TestClock,
    site: SynapseSite,
    servlets: Rc<RoomServlets>,
    access_log: Rc<RefCell<Vec<String>>>,
}

impl Homeserver {
    fn new() -> Homeserver {
        let reactor = TestClock::new();
        let servlets = Rc::new(RoomServlets {
            reactor: reactor.clone(),
            clock: Clock::new(reactor.clone(), "test"),
            names: Rc::default(),
            members: Rc::default(),
            writes: Rc::default(),
            topic_lock: RefCell::default(),
            started: Cell::new(0),
            completed: Cell::new(0),
        });
        let resource = JsonResource::new();
        let s = servlets.clone();
        resource
            .register_paths(
                "GET",
                ["/rooms/{room_id}/summary"],
                move |r| s.clone().on_get_summary(r),
                "RoomSummaryServlet",
            )
            .unwrap();
        let s = servlets.clone();
        resource
            .register_paths(
                "GET",
                ["/rooms/{room_id}/swallow"],
                move |r| s.clone().on_get_swallowing(r),
                "SwallowingServlet",
            )
            .unwrap();
        let s = servlets.clone();
        resource
            .register_paths(
                "GET",
                ["/rooms/{room_id}/members"],
                move |r| s.clone().on_get_members(r),
                "JoinedMembersServlet",
            )
            .unwrap();
        let s = servlets.clone();
        resource
            .register_paths(
                "POST",
                ["/rooms/{room_id}/read_markers"],
                move |r| s.clone().on_post_read_marker(r),
                "ReadMarkerServlet",
            )
            .unwrap();
        let s = servlets.clone();
        resource
            .register_paths(
                "PUT",
                ["/rooms/{room_id}/topic"],
                move |r| s.clone().on_put_topic(r),
                "RoomTopicServlet",
            )
            .unwrap();
        let s = servlets.clone();
        resource
            .register_paths(
                "GET",
                ["/rooms/{room_id}/state"],
                move |r| s.clone().on_get_state(r),
                "RoomStateServlet",
            )
            .unwrap();
        let site = SynapseSite::new(SiteConfig::new("client", "test"), resource, reactor.clone());
        let access_log: Rc<RefCell<Vec<String>>> = Rc::default();
        let log = access_log.clone();
        site.add_observer(move |event| {
            if let SiteEvent::Processed(entry) = event {
                log.borrow_mut().push(entry.code_field());
            }
        });
        Homeserver {
            reactor,
            site,
            servlets,
            access_log,
        }
    }

    /// `make_request_with_cancellation_test(...)`.
    fn test(&self, name: &str, method: &str, path: &str) -> FakeChannel {
        make_request_with_cancellation_test(name, &self.reactor, &self.site, method, path, b"")
    }

    /// The harness's panic message, which it must give.
    fn failure(&self, name: &str, method: &str, path: &str) -> String {
        let outcome = catch_unwind(AssertUnwindSafe(|| self.test(name, method, path)));
        let payload = match outcome {
            Ok(channel) => panic!("the harness passed {path}: {:?}", channel.code()),
            Err(payload) => payload,
        };
        assert!(current_context().is_sentinel());
        match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .unwrap_or_default(),
        }
    }
}

// Synapse: tests/rest/client/test_rooms.py (RoomsMemberListTestCase and
// others: make_request_with_cancellation_test on a @cancellable servlet,
// then the returned channel's code and body checked).
#[test]
fn a_well_behaved_cancellable_servlet_passes_and_the_final_response_is_returned() {
    let hs = Homeserver::new();
    let channel = hs.test("test_room_summary", "GET", "/rooms/!a/summary");
    assert_eq!(channel.code(), Some(200));
    assert_eq!(
        channel.json_body().unwrap(),
        Json::object([("room_id", "!a"), ("name", "Room !a")])
    );
    // A first request to find the four awaits, one disconnected at each,
    // and the final one: six handlers started.
    assert_eq!(hs.servlets.started.get(), 6);
    assert_eq!(
        *hs.access_log.borrow(),
        ["200", "499!", "499!", "499!", "499!", "200"]
    );
    // The write is protected by delay_cancellation: it was completed in the
    // run disconnected while waiting for it, and not started in the runs
    // disconnected before it.
    assert_eq!(hs.servlets.writes.borrow().len(), 4);
    // Nothing left in flight for later requests.
    assert!(hs.servlets.names.borrow().is_empty());
    assert!(current_context().is_sentinel());
}

// Synapse: the harness's "The request does not return a 499 when the client
// disconnects. This implies that a `CancelledError` was swallowed somewhere."
#[test]
fn a_servlet_swallowing_cancelled_error_fails_naming_the_await() {
    let hs = Homeserver::new();
    let message = hs.failure("test_swallow", "GET", "/rooms/!a/swallow");
    assert!(
        message.contains(Rule::CancelledErrorSwallowed.name()),
        "{message}"
    );
    assert!(message.contains(&await_marked("<- swallows")), "{message}");
    assert!(
        message.contains(
            "make_request_with_cancellation_test for test_swallow (GET /rooms/!a/swallow) failed"
        ),
        "{message}"
    );
    // The disconnected request answered 200, which the client never saw.
    assert!(message.contains("it answered 200"), "{message}");
    assert_eq!(*hs.access_log.borrow(), ["200", "200!"]);
}

// The document's "Creation of Deferreds": a Deferred awaited by several
// coroutines is cancelled for all of them when one request is cancelled.
#[test]
fn a_servlet_awaiting_a_shared_deferred_directly_fails() {
    let hs = Homeserver::new();
    let message = hs.failure("test_members", "GET", "/rooms/!a/members");
    assert!(
        message.contains(Rule::SharedDeferredCancelled.name()),
        "{message}"
    );
    assert!(message.contains(&await_marked("<- shared")), "{message}");
    // The request itself answered 499: only the rule about sharing is broken.
    assert!(
        !message.contains(Rule::CancelledErrorSwallowed.name()),
        "{message}"
    );
}

// The document's "Uncancelled processing" and Synapse's harness marking the
// request's logging context finished: work the cancelled request left
// running in its context is reported when it resumes there.
#[test]
fn a_servlet_leaving_work_in_its_logging_context_fails() {
    let hs = Homeserver::new();
    let message = hs.failure("test_read_marker", "POST", "/rooms/!a/read_markers");
    assert!(
        message.contains(Rule::LoggingContextReusedAfterFinish.name()),
        "{message}"
    );
    assert!(
        message.contains("Re-starting finished log context POST-1"),
        "{message}"
    );
    assert!(message.contains(&await_marked("<- signal")), "{message}");
    // The disconnected request answered 499 at once; its write went on.
    assert_eq!(*hs.access_log.borrow(), ["200", "499!"]);
    assert_eq!(hs.servlets.writes.borrow().len(), 2);
}

// Synapse: "A request gets stuck, possibly due to a previous
// cancellation": the lock the first disconnected request never released
// holds up the requests made after it.
#[test]
fn a_lock_left_held_by_a_cancelled_request_makes_the_next_ones_stuck() {
    let hs = Homeserver::new();
    let message = hs.failure("test_topic", "PUT", "/rooms/!a/topic");
    // The run for the second point waits for the lock before reaching it.
    assert!(
        message.contains(
            "point 1: PUT-2, made again after the earlier disconnects, ended with no response"
        ),
        "{message}"
    );
    assert!(
        message.contains("possibly due to a previous cancelled request"),
        "{message}"
    );
    // The disconnected requests themselves behaved: 499 at once, no rule broken.
    assert!(!message.contains('✗'), "{message}");
    assert_eq!(*hs.access_log.borrow(), ["200", "499!"]);
    // The stuck requests wait for the lock for ever: a cycle (servlets →
    // lock → waiter → handler → servlets) only a collector would free.
    // Cancelling the waits ends them.
    let waiters = std::mem::take(&mut hs.servlets.topic_lock.borrow_mut().1);
    for waiter in waiters {
        waiter.cancel().ok();
    }
}

// Synapse's harness on a servlet without @cancellable: the disconnect does
// not cancel it (`disconnect_and_assert(..., expect_cancellation=False)`:
// it runs to completion), so it answers 200, not 499, and the harness fails
// ("Cancelled request did not finish with the correct status code").
#[test]
fn a_non_cancellable_servlet_runs_to_completion_and_fails_the_harness() {
    let hs = Homeserver::new();
    let message = hs.failure("test_state", "GET", "/rooms/!a/state");
    assert!(message.contains("is not cancellable"), "{message}");
    assert!(
        message.contains("ran to completion and answered 200"),
        "{message}"
    );
    // The first request, and the one disconnected at its only await: both
    // ran to the end; the second's response was dropped.
    assert_eq!(hs.servlets.started.get(), 2);
    assert_eq!(hs.servlets.completed.get(), 2);
    assert_eq!(*hs.access_log.borrow(), ["200", "200!"]);
}

// Synapse: an endpoint that never waits is answered by the first request;
// there is nothing to disconnect at.
#[test]
fn a_request_answered_at_once_is_returned_without_disconnects() {
    let hs = Homeserver::new();
    let channel = hs.test("test_missing", "GET", "/rooms/!a/nothing");
    assert_eq!(channel.code(), Some(404));
    assert_eq!(*hs.access_log.borrow(), ["404", "404"]);
}
