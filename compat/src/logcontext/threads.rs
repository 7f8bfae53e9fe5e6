//! Synapse's `defer_to_thread` and `defer_to_threadpool`: Twisted's
//! `deferToThread`/`deferToThreadPool` with logging contexts (see
//! [`defer_to_threadpool`] for how the child context crosses threads).

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use twisted_deferred::Deferred;
use twisted_reactor::{Reactor, ReactorHandle, ThreadPool};

use super::{
    ContextRequest, ContextResourceUsage, LoggingContext, LoggingContextOrSentinel,
    SENTINEL_SERVER_NAME, current_context, make_deferred_yieldable,
};

/// What the worker needs to make the caller's child context: the `Send`
/// half of the caller's context.
struct ChildContextSeed {
    name: String,
    server_name: String,
    request: Option<ContextRequest>,
}

impl ChildContextSeed {
    /// Made on the worker: the context the function runs in.
    fn build(self) -> LoggingContext {
        let builder = LoggingContext::builder(self.name, self.server_name);
        match self.request {
            Some(request) => builder.request(Rc::new(request)).build(),
            None => builder.build(),
        }
    }
}

/// Numbers the parents waiting for a thread's usage (unique across threads,
/// so that a message landing on the wrong thread finds nothing).
static NEXT_CREDIT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The contexts waiting for the usage of a child running on a worker,
    /// by number.
    static WAITING_PARENTS: RefCell<HashMap<u64, LoggingContext>> =
        RefCell::new(HashMap::new());
}

/// Adds `usage` to the parent registered under `id` on this thread, and
/// forgets it.
fn credit_parent(id: u64, usage: Option<ContextResourceUsage>) {
    let parent = WAITING_PARENTS
        .try_with(|w| w.try_borrow_mut().ok().and_then(|mut w| w.remove(&id)))
        .ok()
        .flatten();
    if let (Some(parent), Some(usage)) = (parent, usage) {
        parent.credit_usage(&usage);
    }
}

/// Carries the worker context's usage back to the reactor thread when
/// dropped, also when the work is dropped unrun (then with nothing to add,
/// which only forgets the parent).
struct CreditOnDrop {
    id: u64,
    handle: ReactorHandle,
    usage: Option<ContextResourceUsage>,
}

impl CreditOnDrop {
    fn register(reactor: &Reactor, parent: LoggingContext) -> CreditOnDrop {
        let id = NEXT_CREDIT.fetch_add(1, Ordering::Relaxed);
        let _ = WAITING_PARENTS.try_with(|w| {
            if let Ok(mut w) = w.try_borrow_mut() {
                w.insert(id, parent);
            }
        });
        CreditOnDrop {
            id,
            handle: reactor.handle(),
            usage: None,
        }
    }
}

impl Drop for CreditOnDrop {
    fn drop(&mut self) {
        let (id, usage) = (self.id, self.usage.take());
        if self
            .handle
            .call_from_thread(move |_| credit_parent(id, usage))
            .is_err()
        {
            // The reactor is gone. On its thread, forget the parent now; on
            // a worker this finds nothing.
            credit_parent(id, None);
        }
    }
}

/// `defer_to_threadpool(reactor, threadpool, f)`: runs `f` on `threadpool`
/// in a child of the current logging context and returns a Deferred that
/// follows the logcontext rules.
///
/// * `f` runs inside a new context with the current context's name, server
///   name and request; its CPU time and database usage (nested contexts
///   included) are added to the current context and its ancestors, on this
///   thread, before the Deferred fires (see below how the child crosses
///   threads; unlike Synapse's, it has no
///   [`parent_context`](LoggingContext::parent_context) on the worker).
/// * Called from the sentinel, it logs the warning "Calling
///   defer_to_threadpool from sentinel context: metrics will be lost"; the
///   function then runs in a context named `sentinel` whose usage goes
///   nowhere.
/// * The result is Twisted's `deferToThreadPool` Deferred through
///   [`make_deferred_yieldable`]: the sentinel is current when this returns,
///   and the caller's context again when it fires. Await it straight away.
/// * It has no canceller: cancelling it fails it with `CancelledError` at
///   once (in the caller's context); the function runs on and its result
///   is dropped, its usage still credited.
/// * `f`'s error fails the Deferred; a panic fails it with a
///   [`PanicError`](twisted_deferred::PanicError) (the worker's context
///   exits first); a pool that refuses the work fails it with
///   [`ThreadPoolStopped`](twisted_reactor::error::ThreadPoolStopped), at
///   once, leaving the current context alone.
///
/// # A child context on another thread
///
/// Contexts are [`Rc`]s and belong to one thread, so the child is made in
/// two halves:
///
/// * on the calling (reactor) thread, a `Send` description of the caller's
///   context (name, server name, a copy of its request) goes with the
///   function, and the caller's context is kept in a table of this thread
///   under a number;
/// * on the worker, a context is made from that description (same name,
///   server name and request, **no parent**, the worker's current context
///   as its previous one) and entered around the function, so that
///   everything the function does on the worker is accounted to it, nested
///   contexts included;
/// * when it has exited, its usage (a [`ContextResourceUsage`], `Send`)
///   travels back through the reactor's `callFromThread` queue, ahead of
///   the result, and is added on the reactor thread to the caller's context
///   and each of its ancestors.
///
/// So the caller's context has the thread's usage before the returned
/// Deferred fires, also when the Deferred was cancelled meanwhile (the
/// thread's result is dropped, not its usage). Where Synapse credits the
/// parent at each switch on the worker, here it is credited once, when the
/// function has returned; the totals are the same. If the reactor is gone
/// by then, the usage is lost with it.
///
/// ```
/// use twisted_compat::{current_context, defer_to_threadpool, Failure, LoggingContext};
/// use twisted_deferred::ensure_deferred;
/// use twisted_reactor::{Reactor, ThreadPool};
///
/// let reactor = Reactor::new().unwrap();
/// let pool = ThreadPool::new(0, 1, "db").unwrap();
/// pool.start();
/// let (r, p) = (reactor.clone(), pool.clone());
/// let d = ensure_deferred(async move {
///     let request = LoggingContext::new("GET-1", "hs");
///     let _scope = request.entered();                    // with LoggingContext(name="GET-1", ...):
///     // name = await defer_to_threadpool(reactor, pool, lambda: str(current_context()))
///     let name = defer_to_threadpool(&r, &p, || Ok::<_, std::io::Error>(current_context().to_string())).await?;
///     assert_eq!(current_context(), request);           // the caller's context is back
///     Ok::<_, Failure>(name)
/// });
/// let r = reactor.clone();
/// let d = d.add_both(move |outcome| { r.stop().unwrap(); outcome });
/// reactor.run().unwrap();
/// pool.stop();
/// assert_eq!(d.result().value().as_deref(), Some("GET-1"));   // the child has the caller's name
/// ```
pub fn defer_to_threadpool<T, E, F>(reactor: &Reactor, threadpool: &ThreadPool, f: F) -> Deferred<T>
where
    T: Send + 'static,
    E: Error + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    let calling = current_context();
    let (parent, server_name) = match &calling {
        LoggingContextOrSentinel::Sentinel => {
            log::warn!(
                target: "synapse.logging.context",
                "Calling defer_to_threadpool from sentinel context: metrics will be lost"
            );
            (None, SENTINEL_SERVER_NAME.to_owned())
        }
        LoggingContextOrSentinel::Context(c) => (Some(c.clone()), c.server_name().to_owned()),
    };
    let seed = ChildContextSeed {
        name: calling.name().to_owned(),
        server_name,
        request: calling.request().map(|r| ContextRequest::clone(&r)),
    };
    let credit = parent.map(|parent| CreditOnDrop::register(reactor, parent));
    let deferred = twisted_reactor::defer_to_threadpool(reactor, threadpool, move || {
        let mut credit = credit;
        let context = seed.build();
        let scope = context.entered();
        let outcome = catch_unwind(AssertUnwindSafe(f));
        drop(scope);
        if let Some(credit) = credit.as_mut() {
            credit.usage = Some(context.get_resource_usage());
        }
        // Sends the usage now, ahead of the result.
        drop(credit);
        match outcome {
            Ok(result) => result,
            Err(panic) => resume_unwind(panic),
        }
    });
    make_deferred_yieldable(deferred)
}

/// `defer_to_thread(reactor, f)`: [`defer_to_threadpool`] on the reactor's
/// own thread pool ([`Reactor::get_thread_pool`], started when the reactor
/// runs).
///
/// ```
/// use twisted_compat::{defer_to_thread, get_thread_resource_usage, Failure, LoggingContext};
/// use twisted_deferred::ensure_deferred;
/// use twisted_reactor::Reactor;
///
/// let reactor = Reactor::new().unwrap();
/// let request = LoggingContext::new("GET-1", "hs");
/// let (r, req) = (reactor.clone(), request.clone());
/// let d = ensure_deferred(async move {
///     let _scope = req.entered();                          // with request:
///     // await defer_to_thread(reactor, burn_cpu)
///     defer_to_thread(&r, || {
///         let start = get_thread_resource_usage().unwrap();
///         while get_thread_resource_usage().unwrap().total() - start.total() < 0.005 {
///             std::hint::black_box(0);
///         }
///         Ok::<_, std::io::Error>(())
///     })
///     .await?;
///     Ok::<_, Failure>(())
/// });
/// let r = reactor.clone();
/// d.add_both(move |outcome| { r.stop().unwrap(); outcome });
/// reactor.run().unwrap();
/// let used = request.get_resource_usage();
/// assert!(used.ru_utime + used.ru_stime >= 0.004);        // the thread's CPU time, credited
/// ```
pub fn defer_to_thread<T, E, F>(reactor: &Reactor, f: F) -> Deferred<T>
where
    T: Send + 'static,
    E: Error + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    defer_to_threadpool(reactor, &reactor.get_thread_pool(), f)
}
