//! Synapse's `synapse.util.cancellation`: the [`cancellable`](macro@crate::cancellable)
//! mark and [`is_function_cancellable`].
//!
//! In Python, `@cancellable` sets an attribute on the function and
//! `is_function_cancellable(f)` reads it. A Rust function has no attributes
//! at run time, so the attribute marks the function's *return type*: a
//! marked `async fn` returns a [`Cancellable`]`<impl Future>`, which is
//! awaited exactly like the plain future (it is `IntoFuture`, at no cost),
//! and [`is_function_cancellable`] reads the mark from the function's type,
//! without calling it. Code that receives a function generically reads the
//! mark through the [`MaybeCancellable`] bound: the HTTP router
//! ([`JsonResource::register_paths`](crate::http::JsonResource::register_paths))
//! and [`ResponseCache::wrap`](crate::ResponseCache::wrap) do.
//!
//! | Synapse | here |
//! |---|---|
//! | `@cancellable` on `async def f(...)` | `#[cancellable]` on `async fn f(...)` ([`cancellable`](macro@crate::cancellable)) |
//! | `is_function_cancellable(f)` | [`is_function_cancellable`]`(&f)` |
//! | `functools.wraps(f)` copying the flag onto a wrapper | a closure returning the marked call's value: `move \|r\| f(r)` |
//! | an undecorated wrapper (`lambda r: g(f(r))`, `async def w(r): return await f(r)`) | a closure returning anything else: `move \|r\| async move { f(r).await }` |
//! | decorating a lambda | a closure returning [`Cancellable::new`]`(…)` |
//!
//! What counts is what the function returns, so the mark follows a value
//! the way `functools.wraps` copies the flag: a closure that returns the
//! marked function's value is marked too, one that awaits it inside a new
//! `async` block is not (a new coroutine that nobody audited). As in
//! Synapse, the mark only documents an audit; it changes behaviour only
//! where code reads it.
//!
//! Limits: the mark lives in the type, so a function returning a marked
//! value on some paths and an unmarked one on others cannot be written (the
//! types differ); the trait behind [`is_function_cancellable`] covers
//! functions of up to eight arguments returning a future, a [`Deferred`],
//! a `Result` or a [`Cancellable`]; a trait method can be marked only if the
//! trait declares the `Cancellable<…>` return type. A marked function's value
//! is not itself a `Future`: `.await` it, or call `.into_future()` for an
//! API that wants a `Future` (`ensure_deferred(f().into_future())`).

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;

use twisted_deferred::{Deferred, Failure, ensure_deferred};

#[cfg(doc)]
use crate::logcontext::run_in_background;
use crate::logcontext::{IntoDeferred, ReturnsDeferred, ReturnsFuture, ReturnsResult};

/// What a function marked [`cancellable`](macro@crate::cancellable) returns:
/// its future, carrying the mark in its type.
///
/// It is `IntoFuture` (the wrapped future), so `.await` works as on the
/// plain future; [`Cancellable::new`] marks a closure's value by hand (the
/// way `cancellable(lambda: ...)` would in Python).
///
/// ```
/// use twisted_compat::{Cancellable, Failure, is_function_cancellable};
///
/// // handler = cancellable(lambda request: respond(request))
/// let handler = |n: u32| Cancellable::new(async move { Ok::<_, Failure>(n + 1) });
/// assert!(is_function_cancellable(&handler));
/// let d = twisted_deferred::ensure_deferred(async move { handler(1).await });
/// assert_eq!(d.result().value(), Some(2));
/// ```
#[must_use = "a marked function's future does nothing unless awaited"]
pub struct Cancellable<F> {
    future: F,
}

impl<F: Future> Cancellable<F> {
    /// Marks `future` (anything `IntoFuture`: an `async` block, a
    /// [`Deferred`]) as the value of a cancellable function.
    ///
    /// ```
    /// use twisted_compat::{Cancellable, Deferred, is_function_cancellable};
    /// // @cancellable
    /// // def lookup(): return d
    /// let d: Deferred<u8> = Deferred::new();
    /// let lookup = move || Cancellable::new(d.clone());
    /// assert!(is_function_cancellable(&lookup));
    /// ```
    pub fn new<I>(future: I) -> Cancellable<F>
    where
        I: IntoFuture<IntoFuture = F>,
    {
        Cancellable {
            future: future.into_future(),
        }
    }

    /// The future, without the mark.
    ///
    /// ```
    /// use std::future::Future;
    /// use twisted_compat::{Cancellable, Failure};
    /// let marked = Cancellable::new(async { Ok::<_, Failure>(3) });
    /// let plain = marked.into_inner();                          // the coroutine itself
    /// let d = twisted_deferred::ensure_deferred(plain);         // ensureDeferred(f())
    /// assert_eq!(d.result().value(), Some(3));
    /// ```
    pub fn into_inner(self) -> F {
        self.future
    }
}

impl<F: Future> IntoFuture for Cancellable<F> {
    type Output = F::Output;
    type IntoFuture = F;

    fn into_future(self) -> F {
        self.future
    }
}

impl<F> fmt::Debug for Cancellable<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cancellable(..)")
    }
}

/// The expansion of [`cancellable`](macro@crate::cancellable): marks the
/// body of an `async fn` whose output type is `T` (naming `T` lets `?`
/// infer inside the `async` block as it does in the function).
#[doc(hidden)]
pub fn __mark<T, F: Future<Output = T>>(future: F) -> Cancellable<F> {
    Cancellable { future }
}

/// The [`MaybeCancellable`] (and [`IntoDeferred`]) marker of a
/// [`Cancellable`] value: a function marked
/// [`cancellable`](macro@crate::cancellable) returned it.
///
/// ```
/// use twisted_compat::{Cancellable, MaybeCancellable, ReturnsCancellable};
/// type Marked = Cancellable<std::future::Ready<u8>>;
/// assert!(<Marked as MaybeCancellable<ReturnsCancellable>>::CANCELLABLE);
/// ```
#[derive(Debug)]
pub enum ReturnsCancellable {}

/// What a function may return for code that reads its mark (Synapse's
/// `is_function_cancellable`) and then awaits it: a future, a
/// [`Deferred`], a `Result` (a synchronous function), or a [`Cancellable`].
/// Only the last is cancellable.
///
/// `M` is one of [`ReturnsFuture`], [`ReturnsDeferred`], [`ReturnsResult`]
/// and [`ReturnsCancellable`]; it only tells the four implementations apart
/// and is always inferred (as in [`run_in_background`]'s [`IntoDeferred`]).
///
/// ```
/// use twisted_compat::{Cancellable, MaybeCancellable, ReturnsFuture, ReturnsCancellable};
///
/// fn marked<M, R: MaybeCancellable<M>>(_value: &R) -> bool {
///     R::CANCELLABLE
/// }
/// assert!(!marked(&async { 1 }));                           // a plain coroutine
/// assert!(marked(&Cancellable::new(async { 1 })));          // a @cancellable one
/// ```
pub trait MaybeCancellable<M> {
    /// What awaiting the value gives.
    type Output;

    /// Whether the function that returned this was marked
    /// [`cancellable`](macro@crate::cancellable).
    const CANCELLABLE: bool;

    /// The value as a future to await (boxed, so that a registry can store
    /// handlers of any type).
    ///
    /// ```
    /// use twisted_compat::{Failure, MaybeCancellable};
    /// // a synchronous function's result, awaited: `await maybe_awaitable(x)`
    /// let fut = MaybeCancellable::into_awaitable(Ok::<_, Failure>(4));
    /// let d = twisted_deferred::ensure_deferred(fut);
    /// assert_eq!(d.result().value(), Some(4));
    /// ```
    fn into_awaitable<'a>(self) -> Pin<Box<dyn Future<Output = Self::Output> + 'a>>
    where
        Self: 'a;
}

impl<F: Future> MaybeCancellable<ReturnsFuture> for F {
    type Output = F::Output;
    const CANCELLABLE: bool = false;

    fn into_awaitable<'a>(self) -> Pin<Box<dyn Future<Output = F::Output> + 'a>>
    where
        Self: 'a,
    {
        Box::pin(self)
    }
}

impl<T: Clone + 'static> MaybeCancellable<ReturnsDeferred> for Deferred<T> {
    type Output = Result<T, Failure>;
    const CANCELLABLE: bool = false;

    fn into_awaitable<'a>(self) -> Pin<Box<dyn Future<Output = Result<T, Failure>> + 'a>>
    where
        Self: 'a,
    {
        Box::pin(self.into_future())
    }
}

impl<T, E> MaybeCancellable<ReturnsResult> for Result<T, E> {
    type Output = Result<T, E>;
    const CANCELLABLE: bool = false;

    fn into_awaitable<'a>(self) -> Pin<Box<dyn Future<Output = Result<T, E>> + 'a>>
    where
        Self: 'a,
    {
        Box::pin(std::future::ready(self))
    }
}

impl<F: Future> MaybeCancellable<ReturnsCancellable> for Cancellable<F> {
    type Output = F::Output;
    const CANCELLABLE: bool = true;

    fn into_awaitable<'a>(self) -> Pin<Box<dyn Future<Output = F::Output> + 'a>>
    where
        Self: 'a,
    {
        Box::pin(self.future)
    }
}

/// A marked function's value runs in the background like any coroutine:
/// `run_in_background(lambda: f())` with `f` decorated.
///
/// ```
/// use twisted_compat::{Cancellable, Failure, run_in_background};
/// let d = run_in_background(|| Cancellable::new(async { Ok::<_, Failure>(5) }));
/// assert_eq!(d.result().value(), Some(5));
/// ```
impl<T, F> IntoDeferred<T, ReturnsCancellable> for Cancellable<F>
where
    T: 'static,
    F: Future<Output = Result<T, Failure>> + 'static,
{
    fn into_deferred(self) -> Result<Deferred<T>, Failure> {
        Ok(ensure_deferred(self.future))
    }
}

/// The return type of a function of any arity up to eight, for
/// [`is_function_cancellable`]: implemented for every `FnOnce(A, B, …) -> R`
/// with `Args = (A, B, …)`. `Args` is always inferred.
///
/// ```
/// use twisted_compat::cancellable_marker::FunctionReturn;
/// fn returns<Args, F: FunctionReturn<Args, Output = u8>>(_f: &F) {}
/// returns(&|a: u8, b: u8| a + b);
/// ```
pub trait FunctionReturn<Args> {
    /// What the function returns.
    type Output;
}

macro_rules! function_return {
    ($($arg:ident),*) => {
        impl<Func, Ret, $($arg),*> FunctionReturn<($($arg,)*)> for Func
        where
            Func: FnOnce($($arg),*) -> Ret,
        {
            type Output = Ret;
        }
    };
}

function_return!();
function_return!(A1);
function_return!(A1, A2);
function_return!(A1, A2, A3);
function_return!(A1, A2, A3, A4);
function_return!(A1, A2, A3, A4, A5);
function_return!(A1, A2, A3, A4, A5, A6);
function_return!(A1, A2, A3, A4, A5, A6, A7);
function_return!(A1, A2, A3, A4, A5, A6, A7, A8);

/// Synapse's `is_function_cancellable(function)`: whether `function` was
/// marked [`cancellable`](macro@crate::cancellable) (or returns what a
/// marked function returned, as `functools.wraps` copies the flag). Read
/// from the function's return type; the function is not called. Works on
/// functions, methods (`Servlet::on_get`) and closures.
///
/// ```
/// use twisted_compat::{Failure, cancellable, is_function_cancellable};
///
/// #[cancellable]
/// async fn on_get(room: String) -> Result<String, Failure> {
///     Ok(room)
/// }
/// async fn on_put(room: String) -> Result<String, Failure> {
///     Ok(room)
/// }
/// assert!(is_function_cancellable(&on_get));                // is_function_cancellable(on_GET)
/// assert!(!is_function_cancellable(&on_put));
/// // functools.wraps: the wrapper returns the marked function's value
/// assert!(is_function_cancellable(&|room: String| on_get(room)));
/// // a new coroutine around it was not audited
/// assert!(!is_function_cancellable(&|room: String| async move { on_get(room).await }));
/// ```
pub fn is_function_cancellable<F, Args, M>(function: &F) -> bool
where
    F: FunctionReturn<Args>,
    F::Output: MaybeCancellable<M>,
{
    let _ = function;
    <F::Output as MaybeCancellable<M>>::CANCELLABLE
}

/// Whether the value a function returned carries the mark: the same
/// question as [`is_function_cancellable`], asked of the value.
///
/// ```
/// use twisted_compat::{Cancellable, is_cancellable};
/// assert!(is_cancellable(&Cancellable::new(async { 1 })));
/// assert!(!is_cancellable(&async { 1 }));
/// assert!(!is_cancellable(&Ok::<u8, ()>(1)));
/// ```
pub fn is_cancellable<M, R: MaybeCancellable<M>>(value: &R) -> bool {
    let _ = value;
    R::CANCELLABLE
}
