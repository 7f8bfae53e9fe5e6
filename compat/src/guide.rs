//! # A guide to Deferreds and cancellation, for Twisted users
//!
//! This guide walks through Twisted's `Deferred` as this project reproduces
//! it, how `cancel()` travels, how code must be written to survive being
//! cancelled, and Synapse's logging contexts, which cancellation can break.
//! It follows Synapse's "Cancellation" document; every example of that
//! document is a program you can run, which prints what happens, including
//! what goes wrong in the Bad versions:
//!
//! ```sh
//! cargo run -p twisted-compat --example tour      # all of them, in order
//! cargo run -p twisted-compat --example NAME      # one of them
//! ```
//!
//! The examples live in `compat/examples/`; each Python line of the
//! document is the comment above its Rust port. The tests in
//! `tests/tests/cancellation_doc_examples.rs` run the same code and assert
//! each Bad version's misbehaviour and its absence in the Good ones. Every
//! snippet below is a doctest.
//!
//! The pictures are drawn from real runs: each is a small scenario (in
//! `compat/src/guide/`, beside its SVG) run by the conformance runner, whose
//! trace is the one real Twisted and Synapse print for it. See
//! [Drawing your own](#drawing-your-own).
//!
//! ## 1. The core: callbacks, errbacks, chaining
//!
//! A [`Deferred`](crate::Deferred) is a result that arrives later, with a
//! chain of callbacks to run on it. `add_callback` runs on a value,
//! `add_errback` on a failure; each link's output is the next link's input.
//! A callback "raises" by returning `Err` (or with `?`), an errback
//! "recovers" by returning `Ok`.
//!
//! ```
//! use twisted_compat::{Deferred, Failure};
//!
//! // d = Deferred()
//! let d: Deferred<i32> = Deferred::new();
//! // d.addCallback(lambda x: x * 2)
//! let d2 = d.add_callback(|x| Ok(x * 2));
//! // d.addCallback(lambda x: 1 / 0 if x > 10 else x)
//! let d3 = d2.add_callback(|x: i32| {
//!     if x > 10 { Err(Failure::msg("too big")) } else { Ok(x) }
//! });
//! // d.addErrback(lambda f: -1)
//! d3.add_errback(|_f: Failure| Ok(-1));
//! d.callback(21).unwrap();                  // runs the chain, now
//! assert_eq!(d3.result().value(), Some(-1)); // 42 was too big; recovered
//! ```
//!
//! A callback that returns another Deferred makes the chain *wait* for it:
//! the outer Deferred is "waiting on" the inner one, and takes its result
//! when it fires. This link, from a Deferred to the one it waits on, is the
//! road `cancel()` travels.
//!
//! ```
//! use twisted_compat::Deferred;
//!
//! let inner: Deferred<String> = Deferred::new();
//! let outer: Deferred<()> = Deferred::new();
//! let waited = inner.clone();
//! // outer.addCallback(lambda _: inner)
//! let outer = outer.add_callback(move |()| waited);
//! outer.cast::<()>().callback(()).unwrap();
//! assert!(outer.is_waiting());              // outer waits on inner
//! inner.callback("hello".into()).unwrap();
//! assert_eq!(outer.result().value().as_deref(), Some("hello"));
//! ```
//!
//! Rust `async` code runs on Deferreds the way Twisted runs a coroutine:
//! [`ensure_deferred`](twisted_deferred::ensure_deferred) runs it at once, up
//! to its first `.await` on a Deferred without a result, and the `callback()`
//! that fires that Deferred resumes it, right there. There is no executor.
//!
//! ```
//! use twisted_compat::{Deferred, Failure};
//! use twisted_deferred::ensure_deferred;
//!
//! let page: Deferred<String> = Deferred::new();
//! let p = page.clone();
//! // d = ensureDeferred(fetch())   with   async def fetch(): return len(await page)
//! let d = ensure_deferred(async move { Ok::<_, Failure>(p.await?.len()) });
//! assert!(!d.called());                     // suspended on `page`
//! page.callback("hello".into()).unwrap();   // resumes it, inside this call
//! assert_eq!(d.result().value(), Some(5));
//! ```
//!
//! ## 2. Cancellation mechanics
//!
//! Cancellation has two stages: a `cancel()` call goes **down**, from the
//! Deferred being cancelled to the Deferred it waits on, and so on; then a
//! `CancelledError` comes back **up**, out of each `await`, as an ordinary
//! failure.
//!
//! *Down.* `cancel()` on a Deferred that has not fired runs its canceller
//! (if it has one) and, unless the canceller fired it, fails it with
//! [`CancelledError`](crate::CancelledError). On a Deferred that waits on
//! another, it cancels that one instead. On a coroutine's Deferred, it
//! cancels the Deferred the coroutine is awaiting. On a `gatherResults`, it
//! cancels every input.
//!
//! *Up.* The `CancelledError` is thrown into the awaiting code at its
//! `.await`, as an `Err`; `?` propagates it, through any depth of nested
//! `async fn`s, and the coroutine's Deferred fails with it. Synapse answers
//! a request that failed with `CancelledError` with 499.
//!
//! The document's mechanics example, ported
//! (`cargo run -p twisted-compat --example mechanics`):
//!
//! ```
//! use std::{cell::Cell, rc::Rc};
//! use twisted_compat::{make_deferred_yieldable, CancelledError, Deferred, Failure};
//! use twisted_deferred::ensure_deferred;
//!
//! let stopped = Rc::new(Cell::new(false));
//! let flag = stopped.clone();
//! // def do_something() -> Deferred[None]: ...   (a Deferred whose canceller stops the work)
//! let do_something = move || Deferred::<()>::with_canceller(move |_d: &Deferred<()>| flag.set(true));
//! // async def on_GET():
//! //     d = make_deferred_yieldable(do_something())
//! //     await d
//! //     return 200, {}
//! let on_get = async move {
//!     let d = make_deferred_yieldable(do_something());
//!     d.await?;
//!     Ok::<_, Failure>(200)
//! };
//! // request = defer.ensureDeferred(on_GET())
//! let request = ensure_deferred(on_get);
//! request.cancel().unwrap();                // the client disconnected
//! assert!(stopped.get());                   // down: d's canceller ran
//! let failure = request.result().failure().unwrap();
//! assert!(failure.check::<CancelledError>()); // up: the request failed with it
//! # request.add_errback(|_| Ok(0));
//! ```
//!
//! Here is that run, drawn. Lanes are ordered so that the cancel goes from
//! left to right (down) and the failure from right to left (up):
//!
#![doc = include_str!("guide/cancel_flow.svg")]
//!
//! Twisted's `CancelledError` is an ordinary `Exception` (asyncio's is a
//! `BaseException`), so `except Exception` catches it. Here it is an
//! ordinary [`Failure`](crate::Failure), so `Err(_) =>` catches it just as
//! well: the same trap, which the next section is about.
//!
//! A function that only calls and awaits other `async` functions is
//! cancelled correctly if each of them is: the cancel reaches whichever
//! `.await` is in progress
//! (`cargo run -p twisted-compat --example async_function_calls`).
//!
//! ## 3. Handling cancellation correctly
//!
//! When code may be cancelled, consider two things: what the
//! `CancelledError` coming out of each `.await` does on its way up, and what
//! cancelling each Deferred it creates does to whoever else holds it.
//!
//! ### Do not swallow `CancelledError`
//!
//! A catch-all around an `.await` catches the cancel, and the cancelled
//! handler carries on: Synapse sends 200 for a request that should end with
//! 499. Re-raise `CancelledError` first, or catch only what you expect.
//!
//! | variant | command |
//! |---|---|
//! | Bad: `except Exception` | `cargo run -p twisted-compat --example cancel_catching_bad` |
//! | Good: `except CancelledError: raise` first | `cargo run -p twisted-compat --example cancel_catching_good` |
//! | OK: a catch-all around code that never awaits | `cargo run -p twisted-compat --example cancel_catching_ok` |
//! | Good: `except ValueError` only | `cargo run -p twisted-compat --example cancel_catching_good_narrow` |
//!
//! ```
//! use twisted_compat::{CancelledError, Deferred, Failure};
//! use twisted_deferred::ensure_deferred;
//!
//! async fn handler(slow: Deferred<()>, good: bool) -> Result<u16, Failure> {
//!     // try:
//!     //     await do_something()
//!     match slow.await {
//!         Ok(()) => {}
//!         // except CancelledError: raise        (the Good version only)
//!         Err(f) if good && f.check::<CancelledError>() => return Err(f),
//!         // except Exception: logger.info(...)
//!         Err(_f) => {}
//!     }
//!     Ok(200)
//! }
//!
//! let bad = ensure_deferred(handler(Deferred::new(), false));
//! bad.cancel().unwrap();
//! assert_eq!(bad.result().value(), Some(200));    // Bad: cancelled, yet 200
//!
//! let good = ensure_deferred(handler(Deferred::new(), true));
//! good.cancel().unwrap();
//! assert!(good.result().failure().unwrap().check::<CancelledError>()); // 499
//! # good.add_errback(|_| Ok(0));
//! ```
//!
#![doc = include_str!("guide/swallowed_cancel.svg")]
//!
//! ### Unwrap `gatherResults`' `FirstError`
//!
//! [`gather_results`](twisted_deferred::gather_results) passes `cancel()`
//! on to every Deferred it gathers and fails with the first failure it sees
//! wrapped in a [`FirstError`](crate::FirstError). The cancelled request's
//! `CancelledError` therefore comes out of the `.await` as
//! `FirstError(CancelledError)`, which `except CancelledError` does not
//! match, and the catch-all swallows it. Add
//! [`unwrap_first_error`](twisted_deferred::unwrap_first_error) as an
//! errback.
//!
//! | variant | command |
//! |---|---|
//! | Bad | `cargo run -p twisted-compat --example gather_first_error_bad` |
//! | Good: `.addErrback(unwrapFirstError)` | `cargo run -p twisted-compat --example gather_first_error_good` |
//!
//! ```
//! use twisted_compat::{CancelledError, Deferred, FirstError};
//! use twisted_deferred::{gather_results, unwrap_first_error};
//!
//! let children = || [Deferred::<()>::new(), Deferred::<()>::new()];
//! // gatherResults([...], consumeErrors=True)
//! let bad = gather_results(children(), true);
//! bad.cancel().unwrap();
//! let f = bad.result().failure().unwrap();
//! assert!(f.check::<FirstError>() && !f.check::<CancelledError>());
//! # bad.add_errback(|_| Ok(vec![]));
//!
//! // gatherResults([...], consumeErrors=True).addErrback(unwrapFirstError)
//! let good = gather_results(children(), true).add_errback(unwrap_first_error);
//! good.cancel().unwrap();
//! assert!(good.result().failure().unwrap().check::<CancelledError>());
//! # good.add_errback(|_| Ok(vec![]));
//! ```
//!
//! The picture of the Bad version shows a detail the document leaves out:
//! the gather fires on its first failure, in the middle of its cancel loop,
//! so the handler has swallowed the error and returned before the second
//! input is even cancelled.
//!
#![doc = include_str!("guide/gather_first_error.svg")]
//!
//! ### Do not share a Deferred that may be cancelled
//!
//! Synapse's document keeps one Deferred per room and gives it to every
//! request waiting for that room. It says that cancelling one waiter makes
//! *all* of them see a `CancelledError`. What really happens (here and in
//! real Twisted) is worse: the cancel reaches the shared Deferred, which
//! fails; the **first** waiter gets the `CancelledError`, even when another
//! request was the one cancelled; every other waiter, the cancelled one
//! included, resumes at once with `None`, as if the room were ready (an
//! await hands the result on and leaves `None` behind for the next awaiter);
//! later requests find the room "ready" at once; and the producer's real
//! `callback()` is silently swallowed.
//!
//! | variant | command |
//! |---|---|
//! | Bad: one Deferred for every waiter | `cargo run -p twisted-compat --example shared_deferred_bad` |
//! | Good: `stop_cancellation` for each waiter | `cargo run -p twisted-compat --example shared_deferred_good_stop_cancellation` |
//! | Good: one Deferred per waiter | `cargo run -p twisted-compat --example shared_deferred_good_own_deferred` |
//!
//! ```
//! use twisted_compat::{CancelledError, Deferred, Failure};
//! use twisted_deferred::ensure_deferred;
//!
//! let room: Deferred<()> = Deferred::new();         // the shared Deferred
//! let wait = |room: Deferred<()>| ensure_deferred(async move {
//!     room.await?;                                   // await wait_for_room(...)
//!     Ok::<_, Failure>("room ready")
//! });
//! let (r1, r2) = (wait(room.clone()), wait(room.clone()));
//! r2.cancel().unwrap();                              // request 2 goes away
//! assert!(r1.result().failure().unwrap().check::<CancelledError>()); // r1 fails!
//! assert_eq!(r2.result().value(), Some("room ready"));              // r2 carries on!
//! room.callback(()).unwrap();                        // swallowed, silently
//! # r1.add_errback(|_| Ok(""));
//! ```
//!
#![doc = include_str!("guide/shared_deferred.svg")]
//!
//! [`stop_cancellation`](crate::stop_cancellation) gives each waiter a
//! wrapper that a `cancel()` cannot get past: the cancelled waiter fails at
//! once, the shared Deferred is untouched, the others wait on. (The wrappers
//! are chained to the shared Deferred, which hands its result on, so only
//! the first wrapper gets the real value and the others `None`: fine for a
//! `Deferred[None]`, the only way Synapse uses it.)
//!
//! ```
//! use twisted_compat::{stop_cancellation, CancelledError, Deferred, Failure};
//! use twisted_deferred::ensure_deferred;
//!
//! let room: Deferred<()> = Deferred::new();
//! let wait = |room: &Deferred<()>| {
//!     // return make_deferred_yieldable(stop_cancellation(deferred))
//!     let wrapper = stop_cancellation(room);
//!     ensure_deferred(async move { wrapper.await?; Ok::<_, Failure>("room ready") })
//! };
//! let (r1, r2) = (wait(&room), wait(&room));
//! r2.cancel().unwrap();
//! assert!(r2.result().failure().unwrap().check::<CancelledError>());
//! assert!(r1.result().is_pending());                 // still waiting
//! room.callback(()).unwrap();
//! assert_eq!(r1.result().value(), Some("room ready"));
//! # r2.add_errback(|_| Ok(""));
//! ```
//!
#![doc = include_str!("guide/shared_deferred_stop_cancellation.svg")]
//!
//! [`delay_cancellation`](crate::delay_cancellation) is the other wrapper:
//! the cancel does not reach the source either, but the waiter's
//! `CancelledError` is held back until the source has resolved. Use it when
//! the waiter must not leave before the work it started has finished (the
//! next section shows why).
//!
//! ```
//! use twisted_compat::{delay_cancellation, CancelledError, Deferred, Failure};
//! use twisted_deferred::ensure_deferred;
//!
//! let work: Deferred<()> = Deferred::new();
//! let wrapper = delay_cancellation(&work);
//! let request = ensure_deferred(async move { wrapper.await?; Ok::<_, Failure>(200) });
//! request.cancel().unwrap();
//! assert!(request.result().failure().is_none());     // no CancelledError yet...
//! work.callback(()).unwrap();                        // ...until the work is done
//! assert!(request.result().failure().unwrap().check::<CancelledError>());
//! # request.add_errback(|_| Ok(0));
//! ```
//!
#![doc = include_str!("guide/delay_cancellation.svg")]
//!
//! ## 4. Logging contexts
//!
//! Synapse tags everything it logs, and accounts CPU and database time, to
//! the current [`LoggingContext`](crate::LoggingContext): one per request,
//! entered with a `with` block that *finishes* it when it ends. Deferreds
//! know nothing about contexts: a callback runs in whatever context is
//! current when its Deferred fires. So Synapse follows two rules (see
//! [`logcontext`](crate::logcontext)): a function returning an unfired
//! awaitable clears the context and restores its caller's before anything
//! resumes ([`make_deferred_yieldable`](crate::make_deferred_yieldable));
//! and work that is not awaited is started with
//! [`run_in_background`](crate::run_in_background), which runs it *in the
//! caller's context* and gives the caller its context back.
//!
//! ```
//! use twisted_compat::{current_context, make_deferred_yieldable, Deferred, LoggingContext};
//!
//! let request = LoggingContext::new("request-1", "example.com");
//! let scope = request.entered();                     // with LoggingContext("request-1"):
//! let d: Deferred<()> = Deferred::new();
//! let d = make_deferred_yieldable(d);                //     await make_deferred_yieldable(d)
//! assert!(current_context().is_sentinel());          //     (cleared while d is pending)
//! d.callback(()).unwrap();                           // the reactor fires d
//! assert_eq!(current_context(), request);            // the caller's context is back
//! drop(scope);                                       // end of the with block
//! assert!(request.finished());
//! ```
//!
//! Cancellation meets contexts in the document's last section,
//! "Uncancelled processing". A request starts shared work with
//! `run_in_background`, so the work runs in the request's context, and
//! waits for it through an [`ObservableDeferred`](crate::ObservableDeferred)
//! (other requests join the same work). Cancel the request: its observer
//! fails at once, its `with` block ends and finishes its context, while the
//! work still runs in it. When the work resumes it brings the finished
//! context back: Synapse reports "Re-starting finished log context
//! request-1", and the work's logs and usage are counted against a request
//! that has ended.
//!
//! What `cargo run -p twisted-compat --example uncancelled_processing_bad`
//! prints (`[ctx]` is the context a line is logged in, `!!` a report):
//!
//! ```text
//! -- request-1 arrives
//! -- request-2 arrives
//! -- the client of request-1 disconnects: Synapse calls cancel() on its Deferred
//! => request-1: 499 Request cancelled
//! -- 1 s pass: clock.advance(1)
//!    !! logcontext: Re-starting finished log context request-1
//!    [request-1 (finished)] done!
//!    !! logcontext: Called stop on logcontext request-1 without recording a start rusage
//!    [request-2] got the result
//! => request-2: 200 done
//! ```
//!
//! | variant | command |
//! |---|---|
//! | Bad: `run_in_background`, a plain observer | `cargo run -p twisted-compat --example uncancelled_processing_bad` |
//! | Good: the initiator waits with `delay_cancellation` | `cargo run -p twisted-compat --example uncancelled_processing_good` |
//! | OK: `run_as_background_process` (a context of its own) | `cargo run -p twisted-compat --example uncancelled_processing_ok` |
//!
//! ```
//! use twisted_compat::{
//!     capture_logcontext_errors, make_deferred_yieldable, run_in_background, Deferred,
//!     Failure, LoggingContext, ObservableDeferred,
//! };
//! use twisted_deferred::ensure_deferred;
//!
//! let work: Deferred<()> = Deferred::new();          // the `await ...` in do_something_else
//! let to_resolve: Deferred<()> = Deferred::new();
//! // cache = ObservableDeferred(to_resolve)
//! let cache = ObservableDeferred::new(to_resolve.clone(), false);
//! let ((), reports) = capture_logcontext_errors(|| {
//!     let (w, t, c) = (work.clone(), to_resolve.clone(), cache.clone());
//!     let request = ensure_deferred(async move {
//!         let context = LoggingContext::new("request-1", "example.com");
//!         let _scope = context.entered();            // with LoggingContext("request-1"):
//!         // run_in_background(do_something_else, to_resolve)
//!         let _work: Deferred<()> = run_in_background(move || async move {
//!             make_deferred_yieldable(w).await?;     //     await ...
//!             t.callback(())                         //     to_resolve.callback(None)
//!         });
//!         make_deferred_yieldable(c.observe()).await // await make_deferred_yieldable(cache.observe())
//!     });
//!     request.cancel().unwrap();                     // request-1 fails at once...
//!     assert!(request.result().failure().is_some());
//! #   request.add_errback(|_| Ok(()));
//!     work.callback(()).unwrap();                    // ...and the work resumes
//! });
//! assert_eq!(reports[0].to_string(), "Re-starting finished log context request-1");
//! ```
//!
//! The Good version makes the request that started the work (and lent it
//! its context) wait for it through `delay_cancellation`; the OK version
//! runs the work with
//! [`run_as_background_process`](crate::run_as_background_process), in a
//! context of its own. Run them to see that no finished context comes back.
//! The examples also show two things the document does not say (real
//! Synapse does the same):
//!
//! * Good: firing `to_resolve` resumes and finishes request-1 *inside* the
//!   work. With the document's bare `to_resolve.callback(None)` the rest of
//!   the work runs in the sentinel context, its context silently lost;
//!   firing it inside `PreserveLoggingContext()`, the usual practice, brings
//!   the finished request-1 back when that block ends. Synapse's own code
//!   (its event fetching) does the shared work inline in the initiator's
//!   coroutine under `delay_cancellation` instead.
//! * OK: with the bare `callback`, the joining request's
//!   `make_deferred_yieldable` leaves the sentinel current when it returns
//!   into the background process, and Synapse reports "Expected logging
//!   context do_something_else-0 was lost" when the process ends; firing it
//!   inside `PreserveLoggingContext()` is clean.
//!
//! Tests check these reports with
//! [`capture_logcontext_errors`](crate::capture_logcontext_errors), as
//! Synapse's tests turn every report into a failure.
//!
//! ## 5. Finding these bugs in your code: the cancellation fuzzer
//!
//! Synapse tests each endpoint by disconnecting at every `await` in turn.
//! [`cancellation_fuzzer`](crate::cancellation_fuzzer) does the same for
//! any code: give it a function that starts the coroutine (with the
//! Deferreds and the clock it needs, made afresh on each call); it runs it
//! once to find where it waits, then once per such point, cancelling
//! there, and reports each rule of this guide that the cancel broke.
//!
//! ```
//! use twisted_compat::cancellation_fuzzer::{fuzz_cancellation, Rule};
//! use twisted_compat::{make_deferred_yieldable, CancelledError, Failure};
//! use twisted_deferred::ensure_deferred;
//! use twisted_reactor::{defer_later, Clock};
//!
//! let report = fuzz_cancellation(|run| {
//!     let clock = Clock::new();
//!     run.clock(&clock);                             // the fuzzer advances it
//!     ensure_deferred(async move {
//!         // try: await clock.sleep(5)  except Exception: logger.info(...)
//!         if let Err(f) = make_deferred_yieldable(defer_later(&clock, 5.0, || Ok::<_, Failure>(()))).await {
//!             let _ = f.check::<CancelledError>();   // logged, not re-raised
//!         }
//!         Ok::<_, Failure>("200")
//!     })
//! });
//! assert_eq!(report.broken_rules(), [Rule::CancelledErrorSwallowed]);
//! println!("{report}");                              // a verdict per point
//! ```
//!
//! Every example above has a `fuzz_target`, and `cargo run -p
//! twisted-compat --example NAME` ends with the fuzzer's report: it flags
//! each Bad version with the rule it breaks and passes the Good and OK
//! ones (`tests/tests/cancellation_fuzzer.rs`).
//!
//! ## Drawing your own
//!
//! The conformance runner draws any scenario
//! (`../shared/conformance/FORMAT.md`) it runs:
//!
//! ```sh
//! cargo run -q --bin deferred-scenario -- --mermaid out.mmd --svg out.svg \
//!     compat/src/guide/cancel_flow.scenario
//! ```
//!
//! The trace still goes to stdout; `out.mmd` is a Mermaid `sequenceDiagram`
//! (paste it into any Mermaid renderer) and `out.svg` a self-contained
//! picture like the ones above. In both, `->>` is a call, a solid arrow
//! ending in a cross (`-x`) a `cancel()`, and dashed arrows results (`-->>`)
//! and failures (`--x`), each labelled with what the Deferred it points to
//! holds then. The guide's pictures are regenerated with
//! `UPDATE_GUIDE_PICTURES=1 cargo test -p integration-tests --test
//! trace_diagram` (the test fails when one is stale).
