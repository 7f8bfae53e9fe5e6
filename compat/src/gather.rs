//! Synapse's gathering helpers from `synapse.util.async_helpers`:
//! `yieldable_gather_results`, `yieldable_gather_results_delaying_cancellation`,
//! `concurrently_execute`, and the tuple-form `gather_results`.
//!
//! | Synapse | here |
//! |---|---|
//! | `await yieldable_gather_results(func, iter, *args)` | [`yieldable_gather_results`]`(move \|item\| func(item, args), iter).await` |
//! | `await yieldable_gather_results_delaying_cancellation(func, iter)` | [`yieldable_gather_results_delaying_cancellation`] |
//! | `await concurrently_execute(func, args, limit)` | [`concurrently_execute`] |
//! | `await concurrently_execute(func, args, limit, delay_cancellation=True)` | [`concurrently_execute_delaying_cancellation`] |
//! | `gather_results((d1, d2), consumeErrors)` | [`gather_results`]`((d1, d2), consume_errors)` |
//!
//! Functions given to these helpers return what
//! [`run_in_background`]'s function does: a [`Deferred`], a future (an
//! `async` block, Python's coroutine), or a `Result` (a plain value, or an
//! exception raised at once). Python's extra `*args, **kwargs` are captured
//! by the closure.
//!
//! The tuple-form `gather_results` is not re-exported at the crate root:
//! there the name would clash with Twisted's `gatherResults`
//! ([`twisted_deferred::gather_results`], list form). Import it from this
//! module.

use std::cell::RefCell;
use std::rc::Rc;

use twisted_deferred::{AnyValue, Deferred, Failure, FirstError, ResultTypeError};

use crate::cancellation::delay_cancellation;
use crate::logcontext::{IntoDeferred, make_deferred_yieldable, run_in_background};

/// The failure `gatherResults` wrapped in a [`FirstError`], or `failure`
/// itself: Synapse's `raise dfe.subFailure.value from None`.
fn unwrap_first_error(failure: Failure) -> Failure {
    match failure.downcast_ref::<FirstError>() {
        Some(first) => first.failure.clone(),
        None => failure,
    }
}

/// `run_in_background(func, item)` for each item, in order, then
/// `gatherResults(..., consumeErrors=True)`.
fn start_all<I, T, M, F, R>(mut func: F, iter: I) -> Deferred<Vec<T>>
where
    I: IntoIterator,
    T: Clone + 'static,
    F: FnMut(I::Item) -> R,
    R: IntoDeferred<T, M>,
{
    let children: Vec<Deferred<T>> = iter
        .into_iter()
        .map(|item| run_in_background(|| func(item)))
        .collect();
    twisted_deferred::gather_results(children, true)
}

/// `await yieldable_gather_results(func, iter)`: runs `func(item)` for every
/// item concurrently and returns their results in input order.
///
/// * Each call goes through [`run_in_background`], in iteration order, in
///   the caller's logging context: each child runs up to its first
///   suspension before the next one starts. Nothing happens until the
///   returned future is first polled.
/// * While the caller waits, the sentinel context is current; the caller's
///   context is back when it resumes (`make_deferred_yieldable`).
/// * The first failure wins: the caller gets the child's own failure (the
///   `FirstError` unwrapped) as soon as it happens. The other children are
///   not cancelled; they run on, still in the caller's context, and their
///   failures are consumed.
/// * Cancelling the awaiting coroutine cancels every child in order. The
///   caller resumes with the first child's `CancelledError` as soon as it
///   arrives, before the later children are cancelled (which then switch
///   back to the caller's context, finished or not: see the spec's #35).
///   Children that swallow the cancellation keep the caller waiting.
/// * An empty `iter` gives an empty `Vec` at once.
///
/// ```
/// use twisted_compat::{Deferred, Failure, yieldable_gather_results};
/// use twisted_deferred::ensure_deferred;
///
/// let slow: Deferred<i32> = Deferred::new();
/// let s = slow.clone();
/// // results = await yieldable_gather_results(fetch, [1, 2, 3])
/// let d = ensure_deferred(yieldable_gather_results(
///     move |i: i32| {
///         let s = s.clone();
///         async move { Ok::<_, Failure>(if i == 2 { s.await? } else { i * 10 }) }
///     },
///     [1, 2, 3],
/// ));
/// assert!(!d.called());
/// slow.callback(20).unwrap();
/// assert_eq!(d.result().value(), Some(vec![10, 20, 30]));
/// ```
pub async fn yieldable_gather_results<I, T, M, F, R>(func: F, iter: I) -> Result<Vec<T>, Failure>
where
    I: IntoIterator + 'static,
    T: Clone + 'static,
    F: FnMut(I::Item) -> R + 'static,
    R: IntoDeferred<T, M>,
{
    let gathered = start_all(func, iter);
    make_deferred_yieldable(gathered)
        .await
        .map_err(unwrap_first_error)
}

/// `await yieldable_gather_results_delaying_cancellation(func, iter)`:
/// [`yieldable_gather_results`], but cancellation does not reach the
/// children and the caller's `CancelledError` waits until the gather
/// resolves (every child succeeded, or the first one failed, other
/// children possibly still running). Once cancelled, the caller always gets
/// `CancelledError`: it never sees the results, and child failures are
/// dropped.
///
/// ```
/// use twisted_compat::{CancelledError, Deferred, Failure, yieldable_gather_results_delaying_cancellation};
/// use twisted_deferred::ensure_deferred;
///
/// let slow: Deferred<i32> = Deferred::new();
/// let s = slow.clone();
/// let d = ensure_deferred(yieldable_gather_results_delaying_cancellation(
///     move |_: ()| s.clone(),                            // func returns a Deferred
///     [()],
/// ));
/// d.cancel().unwrap();
/// assert!(!slow.called());                                // not cancelled...
/// slow.callback(1).unwrap();                              // ...the CancelledError waits for it
/// assert!(d.result().failure().unwrap().check::<CancelledError>());
/// # d.add_errback(|_| Ok(vec![]));
/// ```
pub async fn yieldable_gather_results_delaying_cancellation<I, T, M, F, R>(
    func: F,
    iter: I,
) -> Result<Vec<T>, Failure>
where
    I: IntoIterator + 'static,
    T: Clone + 'static,
    F: FnMut(I::Item) -> R + 'static,
    R: IntoDeferred<T, M>,
{
    let gathered = start_all(func, iter);
    make_deferred_yieldable(delay_cancellation(&gathered))
        .await
        .map_err(unwrap_first_error)
}

/// One worker of `concurrently_execute`: its first item, then items from
/// the shared iterator until it runs out.
async fn concurrently_execute_inner<A, M, U, F, R>(
    func: Rc<F>,
    it: Rc<RefCell<Box<dyn Iterator<Item = A>>>>,
    first: A,
) -> Result<(), Failure>
where
    A: 'static,
    M: 'static,
    U: 'static,
    F: Fn(A) -> R + 'static,
    R: IntoDeferred<U, M>,
{
    let mut value = first;
    loop {
        // await maybe_awaitable(func(value)): the value is discarded.
        let done: Deferred<()> = func(value).into_deferred()?.add_callback(|_: U| Ok(()));
        done.await?;
        // next(it): re-entering the iterator from its own `next` fails, as
        // a Python generator already executing raises ValueError.
        let next = match it.try_borrow_mut() {
            Ok(mut it) => it.next(),
            Err(_) => return Err(Failure::msg("generator already executing")),
        };
        match next {
            Some(v) => value = v,
            None => return Ok(()),
        }
    }
}

/// The workers' shared iterator, and the lazy `islice(it, limit)` that
/// starts them.
#[allow(clippy::type_complexity)]
fn workers<I, M, U, F, R>(
    func: F,
    args: I,
    limit: usize,
) -> (
    impl FnMut(I::Item) -> Deferred<()> + 'static,
    impl Iterator<Item = I::Item> + 'static,
)
where
    I: IntoIterator + 'static,
    I::IntoIter: 'static,
    M: 'static,
    U: 'static,
    F: Fn(I::Item) -> R + 'static,
    R: IntoDeferred<U, M> + 'static,
{
    let it: Rc<RefCell<Box<dyn Iterator<Item = I::Item>>>> =
        Rc::new(RefCell::new(Box::new(args.into_iter())));
    let func = Rc::new(func);
    let shared = it.clone();
    let mut taken = 0;
    // (value for value in itertools.islice(it, limit)): pulled lazily, one
    // item per worker started, so a worker that finishes synchronously
    // takes the next items itself.
    let first_items = std::iter::from_fn(move || {
        if taken >= limit {
            return None;
        }
        taken += 1;
        shared.try_borrow_mut().ok()?.next()
    });
    let start = move |value: I::Item| {
        twisted_deferred::ensure_deferred(concurrently_execute_inner(
            func.clone(),
            it.clone(),
            value,
        ))
    };
    (start, first_items)
}

/// `await concurrently_execute(func, args, limit)`: runs `func` on every
/// item of `args`, at most `limit` at a time, and returns once all have
/// finished. Return values are discarded.
///
/// It starts `min(limit, len(args))` workers (through
/// [`yieldable_gather_results`], so in the caller's logging context); each
/// handles its item and then takes the next one from the shared iterator
/// until it runs out. `func` may return a Deferred, a future, or a
/// `Result` (a plain value, done without a trip through the reactor; a
/// worker whose calls all finish at once takes every item itself).
///
/// The first failure reaches the caller at once, unwrapped; the other
/// workers keep running and keep using up the remaining items in the
/// background. Cancelling the caller cancels the workers, as
/// [`yieldable_gather_results`] does.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use twisted_compat::{concurrently_execute, Deferred, Failure};
/// use twisted_deferred::ensure_deferred;
///
/// let waiters: Rc<RefCell<Vec<Deferred<()>>>> = Rc::default();
/// let w = waiters.clone();
/// // await concurrently_execute(process, [1, 2, 3, 4, 5], 3)
/// let d = ensure_deferred(concurrently_execute(
///     move |_item: i32| {
///         let d = Deferred::new();
///         w.borrow_mut().push(d.clone());
///         d                                              // a Deferred to wait for
///     },
///     vec![1, 2, 3, 4, 5],
///     3,
/// ));
/// assert_eq!(waiters.borrow().len(), 3);                  // three in flight
/// loop {
///     let next = waiters.borrow_mut().pop();
///     let Some(next) = next else { break };
///     next.callback(()).unwrap();                        // one finishes, the next starts
/// }
/// assert!(d.called());
/// ```
pub async fn concurrently_execute<I, M, U, F, R>(
    func: F,
    args: I,
    limit: usize,
) -> Result<(), Failure>
where
    I: IntoIterator + 'static,
    I::IntoIter: 'static,
    M: 'static,
    U: 'static,
    F: Fn(I::Item) -> R + 'static,
    R: IntoDeferred<U, M> + 'static,
{
    let (start, first_items) = workers(func, args, limit);
    yieldable_gather_results(start, first_items).await?;
    Ok(())
}

/// `await concurrently_execute(func, args, limit, delay_cancellation=True)`:
/// [`concurrently_execute`] through
/// [`yieldable_gather_results_delaying_cancellation`]: cancelling the
/// caller does not cancel the workers, and its `CancelledError` waits until
/// they have all finished (or one failed).
///
/// ```
/// use twisted_compat::{concurrently_execute_delaying_cancellation, CancelledError, Deferred};
/// use twisted_deferred::ensure_deferred;
///
/// let gate: Deferred<()> = Deferred::new();
/// let g = gate.clone();
/// let d = ensure_deferred(concurrently_execute_delaying_cancellation(
///     move |_: u8| g.clone(),
///     [1u8],
///     10,
/// ));
/// d.cancel().unwrap();
/// assert!(!gate.called());                                // the worker runs on
/// gate.callback(()).unwrap();
/// assert!(d.result().failure().unwrap().check::<CancelledError>());
/// # d.add_errback(|_| Ok(()));
/// ```
pub async fn concurrently_execute_delaying_cancellation<I, M, U, F, R>(
    func: F,
    args: I,
    limit: usize,
) -> Result<(), Failure>
where
    I: IntoIterator + 'static,
    I::IntoIter: 'static,
    M: 'static,
    U: 'static,
    F: Fn(I::Item) -> R + 'static,
    R: IntoDeferred<U, M> + 'static,
{
    let (start, first_items) = workers(func, args, limit);
    yieldable_gather_results_delaying_cancellation(start, first_items).await?;
    Ok(())
}

/// A tuple of Deferreds that [`gather_results`] combines into a Deferred of
/// the tuple of their values (Synapse's overloads of `gather_results`, for
/// tuples of up to eight Deferreds).
///
/// ```
/// use twisted_compat::gather::DeferredTuple;
/// use twisted_deferred::{succeed, Deferred};
/// // gather_results((succeed(1), succeed("a")))
/// let d: Deferred<(i32, &str)> = (succeed(1), succeed("a")).gather(false);
/// assert_eq!(d.result().value(), Some((1, "a")));
/// ```
pub trait DeferredTuple {
    /// The tuple of the Deferreds' value types.
    type Output: 'static;

    /// `gather_results(self, consume_errors)`: see [`gather_results`].
    ///
    /// ```
    /// use twisted_compat::gather::DeferredTuple;
    /// use twisted_deferred::succeed;
    /// let d = (succeed(2u8),).gather(false);             // gather_results((succeed(2),))
    /// assert_eq!(d.result().value(), Some((2u8,)));
    /// ```
    fn gather(self, consume_errors: bool) -> Deferred<Self::Output>;
}

impl DeferredTuple for () {
    type Output = ();

    fn gather(self, consume_errors: bool) -> Deferred<()> {
        twisted_deferred::gather_results(Vec::<Deferred<AnyValue>>::new(), consume_errors)
            .add_callback(|_: Vec<AnyValue>| Ok(()))
    }
}

/// The value of a gathered input as its own type.
fn take_value<T: Clone + 'static>(value: Option<&AnyValue>) -> Result<T, Failure> {
    let found = value.map_or("no value", AnyValue::type_name);
    value
        .and_then(|v| v.downcast_ref::<T>())
        .cloned()
        .ok_or_else(|| {
            Failure::new(ResultTypeError {
                expected: std::any::type_name::<T>(),
                found,
            })
        })
}

macro_rules! deferred_tuple {
    ($($name:ident : $index:tt),+) => {
        impl<$($name: Clone + 'static),+> DeferredTuple for ($(Deferred<$name>,)+) {
            type Output = ($($name,)+);

            fn gather(self, consume_errors: bool) -> Deferred<Self::Output> {
                let inputs = vec![$(self.$index.as_any()),+];
                twisted_deferred::gather_results(inputs, consume_errors).add_callback(
                    |values: Vec<AnyValue>| -> Result<Self::Output, Failure> {
                        Ok(($(take_value::<$name>(values.get($index))?,)+))
                    },
                )
            }
        }
    };
}

deferred_tuple!(A: 0);
deferred_tuple!(A: 0, B: 1);
deferred_tuple!(A: 0, B: 1, C: 2);
deferred_tuple!(A: 0, B: 1, C: 2, D: 3);
deferred_tuple!(A: 0, B: 1, C: 2, D: 3, E: 4);
deferred_tuple!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5);
deferred_tuple!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6);
deferred_tuple!(A: 0, B: 1, C: 2, D: 3, E: 4, F: 5, G: 6, H: 7);

/// Synapse's `gather_results(deferredList, consumeErrors=False)`: Twisted's
/// `gatherResults` over a *tuple* of Deferreds of different types, firing
/// with the tuple of their values.
///
/// It is `gatherResults` itself underneath: it fails on the first failure
/// with a [`FirstError`] carrying that failure and its index (not
/// unwrapped), `consume_errors` replaces each input's failure by `None` in
/// that input's own chain, cancelling it cancels every input in order, and
/// it does nothing about logging contexts (await it through
/// [`make_deferred_yieldable`]).
///
/// As in Python, an input's value is shared with the gather, not moved:
/// until every input has fired, a value that fired is also held by the
/// gather, so a callback added to that input meanwhile can read it
/// ([`Deferred::result`], `.await`) but not take it by value (it would get
/// a `ResultTypeError`).
///
/// ```
/// use twisted_compat::gather::gather_results;
/// use twisted_compat::{Deferred, Failure, FirstError};
///
/// let (a, b): (Deferred<i32>, Deferred<String>) = (Deferred::new(), Deferred::new());
/// let d = gather_results((a.clone(), b.clone()), false);   // gather_results((a, b))
/// b.callback("two".into()).unwrap();
/// a.callback(1).unwrap();
/// assert_eq!(d.result().value(), Some((1, "two".to_string())));
///
/// let (c, e): (Deferred<i32>, Deferred<u8>) = (Deferred::new(), Deferred::new());
/// let d = gather_results((c.clone(), e.clone()), true);    // consumeErrors=True
/// e.errback(Failure::msg("no")).unwrap();
/// let failure = d.result().failure().unwrap();
/// assert_eq!(failure.downcast_ref::<FirstError>().unwrap().index, 1);
/// # d.add_errback(|_| Ok((0, 0)));
/// ```
pub fn gather_results<D: DeferredTuple>(
    deferred_list: D,
    consume_errors: bool,
) -> Deferred<D::Output> {
    deferred_list.gather(consume_errors)
}
