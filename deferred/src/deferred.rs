//! [`Deferred<T>`]: the handle users hold, Twisted's
//! `twisted.internet.defer.Deferred`, and [`Outcome`], what a callback
//! returns.

use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use crate::chain::{self, Inner, Slot};
use crate::erased::ErasedValue;
use crate::errors::ResultTypeError;
use crate::failure::Failure;
use crate::value::{AnyValue, SharedValue};

/// A result that will be available later, with a chain of callbacks to run
/// on it: Twisted's `Deferred`.
///
/// # Typed handles over one untyped Deferred
///
/// A `Deferred<T>` is a cheap handle (one reference count) to a shared
/// Deferred whose current result has type `T`. Adding a callback returns a
/// handle to the *same* Deferred typed with the callback's output, as
/// Python's `addCallback` returns `self`:
///
/// ```
/// use twisted_deferred::Deferred;
///
/// let d: Deferred<i32> = Deferred::new();            // d = Deferred()
/// let e = d.add_callback(|x| Ok(x.to_string()));     // d.addCallback(str)
/// let e = e.add_callback(|s: String| Ok(s.len()));   // d.addCallback(len)
/// d.callback(1234).unwrap();                         // d.callback(1234)
/// assert_eq!(e.result().value(), Some(4));
/// assert!(e.ptr_eq(&d));                             // the same Deferred
/// ```
///
/// The result itself is stored type-erased, so code ported line for line
/// from Python, which keeps using one variable while the result changes
/// type, also works: re-type the handle with [`cast`](Deferred::cast), or
/// use the dynamically typed `Deferred` (= `Deferred<AnyValue>`) throughout.
/// A typed callback that meets a result of another type is not called; the
/// chain continues with a [`ResultTypeError`] failure, where Python would
/// call it and fail with `TypeError`.
///
/// # What a callback returns
///
/// Anything that converts into an [`Outcome`]: `Ok(value)` or `Err(failure)`
/// (so `?` raises, as in Python), a [`Failure`] (returned, not raised), or
/// another `Deferred` (the chain waits for it, or takes its result at once
/// if it has one). A panic in a callback becomes a [`PanicError`](crate::PanicError)
/// failure and the chain goes on, as a Python exception would.
///
/// # Values and sharing
///
/// Results move along the chain: each callback takes its input by value, so
/// no value is ever copied. Python shares objects by reference instead, and
/// a few operations observe that (awaiting a fired Deferred leaves its result
/// in place, a `DeferredList` records a value its input still holds, an
/// observer sees the same object as the source). Those operations clone the
/// value and therefore need `T: Clone`; wrap a big value in `Rc` to make that
/// clone a pointer copy, which is exactly Python's sharing.
/// [`AnyValue`] results are always shared that way, so the dynamically
/// typed mode reproduces Twisted even while a callback is running (see
/// [`State::InUse`]).
///
/// # Threads
///
/// A Deferred belongs to one thread, as Twisted's do: it is neither `Send`
/// nor `Sync`. Other threads reach it through the reactor's
/// `call_from_thread`.
pub struct Deferred<T = AnyValue> {
    inner: Rc<Inner>,
    _type: PhantomData<fn() -> T>,
}

/// What a callback hands on to the next link: a value, a failure, or a
/// Deferred to wait for (chaining).
///
/// Callbacks usually return `Ok(v)`/`Err(f)`, a `Failure` or a `Deferred`,
/// which convert into an `Outcome` implicitly.
pub enum Outcome<T> {
    /// Continue on the callback path with this value.
    Value(T),
    /// Continue on the errback path with this failure.
    Failure(Failure),
    /// Wait for this Deferred and continue with its result.
    Deferred(Deferred<T>),
}

impl<T: fmt::Debug + 'static> fmt::Debug for Outcome<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Value(v) => f.debug_tuple("Value").field(v).finish(),
            Outcome::Failure(x) => f.debug_tuple("Failure").field(x).finish(),
            Outcome::Deferred(d) => f.debug_tuple("Deferred").field(d).finish(),
        }
    }
}

impl<T> From<Result<T, Failure>> for Outcome<T> {
    #[inline]
    fn from(r: Result<T, Failure>) -> Self {
        match r {
            Ok(v) => Outcome::Value(v),
            Err(f) => Outcome::Failure(f),
        }
    }
}

impl<T> From<Failure> for Outcome<T> {
    #[inline]
    fn from(f: Failure) -> Self {
        Outcome::Failure(f)
    }
}

impl<T> From<Deferred<T>> for Outcome<T> {
    #[inline]
    fn from(d: Deferred<T>) -> Self {
        Outcome::Deferred(d)
    }
}

impl<T: 'static> Outcome<T> {
    /// The result slot this outcome becomes (a Deferred means: chain to it).
    #[inline]
    pub(crate) fn into_slot(self) -> Slot {
        match self {
            Outcome::Value(v) => store_slot(v),
            Outcome::Failure(f) => Slot::Failure(f),
            Outcome::Deferred(d) => Slot::Deferred(d.inner.clone()),
        }
    }
}

/// A Deferred's current result, as [`Deferred::result`] sees it.
#[non_exhaustive]
pub enum State<T> {
    /// Not fired yet.
    Pending,
    /// Fired, and waiting on this Deferred (it returned it from a callback).
    Waiting(Deferred<AnyValue>),
    /// Fired with this value.
    Value(T),
    /// Fired with this failure.
    Failure(Failure),
    /// The value has been moved into one of this Deferred's own callbacks,
    /// which is running now (Twisted would show the callback's input; a
    /// typed Rust callback owns it meanwhile).
    InUse,
    /// Fired with a value of another type than `T` (named here), or a value
    /// that cannot be cloned.
    OtherType(&'static str),
}

impl<T: fmt::Debug> fmt::Debug for State<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Pending => f.write_str("Pending"),
            State::Waiting(d) => f.debug_tuple("Waiting").field(d).finish(),
            State::Value(v) => f.debug_tuple("Value").field(v).finish(),
            State::Failure(x) => f.debug_tuple("Failure").field(x).finish(),
            State::InUse => f.write_str("InUse"),
            State::OtherType(t) => f.debug_tuple("OtherType").field(t).finish(),
        }
    }
}

impl<T> State<T> {
    /// The value, if the Deferred holds one of type `T`.
    pub fn value(self) -> Option<T> {
        match self {
            State::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The failure, if the Deferred holds one.
    pub fn failure(self) -> Option<Failure> {
        match self {
            State::Failure(f) => Some(f),
            _ => None,
        }
    }

    /// True when the Deferred has not fired.
    pub fn is_pending(&self) -> bool {
        matches!(self, State::Pending)
    }
}

/// What a canceller may return: nothing, or a `Result` whose error is
/// raised out of `cancel()` (Python lets a canceller raise).
pub trait CancelResult {
    /// The canceller's outcome.
    fn into_result(self) -> Result<(), Failure>;
}

impl CancelResult for () {
    fn into_result(self) -> Result<(), Failure> {
        Ok(())
    }
}

impl CancelResult for Result<(), Failure> {
    fn into_result(self) -> Result<(), Failure> {
        self
    }
}

impl<T: 'static> Deferred<T> {
    /// `Deferred()`: a Deferred with no canceller.
    ///
    /// ```
    /// let d: twisted_deferred::Deferred<u8> = twisted_deferred::Deferred::new();
    /// assert!(!d.called());
    /// ```
    #[track_caller]
    pub fn new() -> Self {
        Deferred::from_inner(Inner::new(None))
    }

    /// `Deferred(canceller)`: `canceller` runs when the Deferred is cancelled
    /// before it fired, and receives the Deferred. If it does not fire the
    /// Deferred, a [`CancelledError`](crate::CancelledError) follows. A
    /// canceller that returns `Err` (or panics) makes `cancel()` return that
    /// failure and leaves the Deferred unfired, as a raising canceller does.
    ///
    /// ```
    /// use twisted_deferred::Deferred;
    /// // d = Deferred(lambda d: d.callback("stopped"))
    /// let d = Deferred::with_canceller(|d: &Deferred<&str>| {
    ///     d.callback("stopped").unwrap();
    /// });
    /// d.cancel().unwrap();
    /// assert_eq!(d.result().value(), Some("stopped"));
    /// ```
    #[track_caller]
    pub fn with_canceller<F, R>(canceller: F) -> Self
    where
        F: Fn(&Deferred<T>) -> R + 'static,
        R: CancelResult,
    {
        let canceller: Rc<chain::CancelFn> = Rc::new(move |inner: &Rc<Inner>| {
            let d = Deferred::<T>::from_inner(inner.clone());
            match catch_unwind(AssertUnwindSafe(|| canceller(&d).into_result())) {
                Ok(r) => r,
                Err(panic) => Err(Failure::from_panic(panic)),
            }
        });
        Deferred::from_inner(Inner::new(Some(canceller)))
    }

    /// `callback(value)`: fires the Deferred and runs its callbacks before
    /// returning. Fails with [`AlreadyCalledError`](crate::AlreadyCalledError)
    /// if it has fired already (except the one call a cancel without
    /// canceller swallows).
    #[track_caller]
    pub fn callback(&self, value: T) -> Result<(), Failure> {
        chain::fire(&self.inner, store_slot(value))
    }

    /// `errback(failure)`: fires the Deferred with a failure.
    ///
    /// ```
    /// use twisted_deferred::{Deferred, Failure};
    /// let d: Deferred<i32> = Deferred::new();
    /// d.add_errback(|f: Failure| Ok(f.message().len() as i32));
    /// d.errback(Failure::msg("four")).unwrap();      // d.errback(Exception("four"))
    /// assert_eq!(d.result().value(), Some(4));
    /// ```
    #[track_caller]
    pub fn errback(&self, failure: impl Into<Failure>) -> Result<(), Failure> {
        chain::fire(&self.inner, Slot::Failure(failure.into()))
    }

    /// `addCallbacks(callback, errback)`: one link whose `callback` runs on a
    /// value and `errback` on a failure. Runs at once if the Deferred has
    /// fired (and is neither paused nor already running its callbacks).
    pub fn add_callbacks<U, C, RC, E, RE>(&self, callback: C, errback: E) -> Deferred<U>
    where
        U: 'static,
        C: FnOnce(T) -> RC + 'static,
        RC: Into<Outcome<U>>,
        E: FnOnce(Failure) -> RE + 'static,
        RE: Into<Outcome<U>>,
    {
        chain::add_call(&self.inner, move |input: Slot| match input {
            Slot::Failure(f) => run_guarded(move || errback(f).into()),
            other => match value_as::<T>(other) {
                Ok(v) => run_guarded(move || callback(v).into()),
                Err(f) => Slot::Failure(f),
            },
        });
        self.cast()
    }

    /// `addCallback(callback)`: runs `callback` on a value; a failure passes
    /// by untouched.
    ///
    /// ```
    /// use twisted_deferred::Deferred;
    /// let d = twisted_deferred::succeed(2);               // d = succeed(2)
    /// let d = d.add_callback(|x| Ok(x * 10));             // d.addCallback(lambda x: x * 10)
    /// assert_eq!(d.result().value(), Some(20));
    /// ```
    pub fn add_callback<U, C, R>(&self, callback: C) -> Deferred<U>
    where
        U: 'static,
        C: FnOnce(T) -> R + 'static,
        R: Into<Outcome<U>>,
    {
        chain::add_call(&self.inner, move |input: Slot| match input {
            Slot::Failure(f) => Slot::Failure(f),
            other => match value_as::<T>(other) {
                Ok(v) => run_guarded(move || callback(v).into()),
                Err(f) => Slot::Failure(f),
            },
        });
        self.cast()
    }

    /// `addErrback(errback)`: runs `errback` on a failure; a value passes by
    /// untouched. Returning `Ok(v)` recovers, `Err(f)` (or `f.trap::<E>()?`)
    /// keeps failing.
    pub fn add_errback<E, R>(&self, errback: E) -> Deferred<T>
    where
        E: FnOnce(Failure) -> R + 'static,
        R: Into<Outcome<T>>,
    {
        chain::add_call(&self.inner, move |input: Slot| match input {
            Slot::Failure(f) => run_guarded(move || errback(f).into()),
            other => other,
        });
        self.clone()
    }

    /// `addBoth(f)`: `f` runs on either outcome, given as a `Result`.
    ///
    /// ```
    /// use twisted_deferred::{Deferred, Failure};
    /// let d: Deferred<i32> = Deferred::new();
    /// let d = d.add_both(|r: Result<i32, Failure>| Ok(r.is_ok()));
    /// d.cast::<i32>().errback(Failure::msg("x")).unwrap();
    /// assert_eq!(d.result().value(), Some(false));
    /// ```
    pub fn add_both<U, F, R>(&self, f: F) -> Deferred<U>
    where
        U: 'static,
        F: FnOnce(Result<T, Failure>) -> R + 'static,
        R: Into<Outcome<U>>,
    {
        chain::add_call(&self.inner, move |input: Slot| {
            let input = match input {
                Slot::Failure(failure) => Err(failure),
                other => match value_as::<T>(other) {
                    Ok(v) => Ok(v),
                    Err(failure) => return Slot::Failure(failure),
                },
            };
            run_guarded(move || f(input).into())
        });
        self.cast()
    }

    /// `addBoth(lambda result: (f(), result)[1])`: runs `f` on either
    /// outcome and hands the result on untouched, whatever its type. For
    /// library code that must act when a Deferred's chain reaches a point
    /// (Synapse's logging-context hooks) without caring what flows through.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// use twisted_deferred::Deferred;
    /// let ran = Rc::new(Cell::new(false));
    /// let d: Deferred<u8> = Deferred::new();
    /// let r = ran.clone();
    /// d.add_passthrough(move || r.set(true));
    /// d.callback(3).unwrap();
    /// assert!(ran.get());
    /// assert_eq!(d.result().value(), Some(3));
    /// ```
    pub fn add_passthrough<F>(&self, f: F) -> Deferred<T>
    where
        F: FnOnce() + 'static,
    {
        chain::add_call(&self.inner, move |input: Slot| {
            match catch_unwind(AssertUnwindSafe(f)) {
                Ok(()) => input,
                Err(panic) => Slot::Failure(Failure::from_panic(panic)),
            }
        });
        self.clone()
    }

    /// `chainDeferred(other)`: forwards this Deferred's outcome to `other`
    /// (`addCallbacks(other.callback, other.errback)`) and marks `other` as
    /// waiting on this one. Afterwards this Deferred holds Python's `None`
    /// (`()`), which is why the handle returned is a `Deferred<()>`.
    ///
    /// Unlike returning a Deferred from a callback, this nests: each link
    /// calls the next Deferred's `callback` (see
    /// [`MAX_NESTING`](crate::MAX_NESTING)).
    ///
    /// ```
    /// use twisted_deferred::Deferred;
    /// let (a, b) = (Deferred::<i32>::new(), Deferred::<i32>::new());
    /// a.chain_deferred(&b);                               // a.chainDeferred(b)
    /// a.callback(5).unwrap();
    /// assert_eq!(b.result().value(), Some(5));
    /// ```
    pub fn chain_deferred(&self, other: &Deferred<T>) -> Deferred<()> {
        other.inner.set_chained_to(&self.inner);
        chain::add_forward(&self.inner, other.inner.clone());
        self.cast()
    }

    /// `pause()`: no callback runs until as many `unpause()` calls.
    pub fn pause(&self) {
        chain::pause(&self.inner);
    }

    /// `unpause()`: when the pause count returns to zero on a fired
    /// Deferred, runs the callbacks that were held back. An `unpause` without
    /// a matching `pause` is not an error (the count goes negative and the
    /// Deferred counts as paused), as in Twisted.
    pub fn unpause(&self) {
        chain::unpause(&self.inner);
    }

    /// `cancel()`. Before the Deferred fired: runs the canceller (if any)
    /// and, unless that fired the Deferred, errbacks with
    /// [`CancelledError`](crate::CancelledError); without a canceller, the
    /// producer's next `callback()`/`errback()` is silently swallowed. While
    /// waiting on a chained Deferred: cancels that one instead. Otherwise:
    /// does nothing. Returns the canceller's failure if it raised one.
    ///
    /// ```
    /// use twisted_deferred::{CancelledError, Deferred, Failure};
    /// let d: Deferred<i32> = Deferred::new();
    /// d.add_errback(|f: Failure| { f.trap::<CancelledError>()?; Ok(-1) });
    /// d.cancel().unwrap();
    /// d.callback(3).unwrap();            // swallowed: there was no canceller
    /// assert_eq!(d.result().value(), Some(-1));
    /// ```
    #[track_caller]
    pub fn cancel(&self) -> Result<(), Failure> {
        chain::cancel(&self.inner)
    }

    /// `called`: true once fired (never reset).
    pub fn called(&self) -> bool {
        self.inner.called()
    }

    /// `paused`: the pause count, including the internal pause held while
    /// waiting on a chained Deferred.
    pub fn paused(&self) -> i32 {
        self.inner.paused()
    }

    /// True while this Deferred records another one as the one it waits on
    /// (Twisted's `_chainedTo`; what `Debug` prints as "waiting on").
    pub fn is_waiting(&self) -> bool {
        self.inner.chained_to().is_some()
    }

    /// The current result (Twisted's `result` attribute), cloned.
    ///
    /// ```
    /// use twisted_deferred::{Deferred, State};
    /// let d: Deferred<i32> = Deferred::new();
    /// assert!(d.result().is_pending());
    /// d.callback(7).unwrap();
    /// assert!(matches!(d.result(), State::Value(7)));
    /// ```
    pub fn result(&self) -> State<T>
    where
        T: Clone,
    {
        match &*self.inner.slot.borrow() {
            Slot::Empty => State::Pending,
            Slot::Deferred(d) => State::Waiting(Deferred::from_inner(d.clone())),
            Slot::Failure(f) => State::Failure(f.clone()),
            Slot::Lent => State::InUse,
            Slot::Value(v) => peek_value::<T>(v),
        }
    }

    /// The same Deferred with its result typed as `U`: for code that changes
    /// the result's type along the chain while keeping one variable, as
    /// Python code does. Costs one reference count.
    pub fn cast<U: 'static>(&self) -> Deferred<U> {
        Deferred::from_inner(self.inner.clone())
    }

    /// The same Deferred, dynamically typed.
    pub fn as_any(&self) -> Deferred<AnyValue> {
        self.cast()
    }

    /// True when both handles are the same Deferred (Python's `is`).
    pub fn ptr_eq<U>(&self, other: &Deferred<U>) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// A number identifying this Deferred while it lives (Python's `id`),
    /// shown in `Debug` as `0x…`.
    pub fn id(&self) -> usize {
        Rc::as_ptr(&self.inner) as *const () as usize
    }

    /// Where this Deferred was created and first fired, if debugging was
    /// on ([`debug::set_debugging`](crate::debug::set_debugging)) when
    /// that happened.
    ///
    /// ```
    /// use twisted_deferred::{debug, Deferred};
    /// debug::set_debugging(true);
    /// let d: Deferred<u8> = Deferred::new();
    /// assert_eq!(d.debug_info().unwrap().creator.unwrap().line(), line!() - 1);
    /// debug::set_debugging(false);
    /// ```
    pub fn debug_info(&self) -> Option<crate::debug::DebugInfo> {
        self.inner.debug_info()
    }

    pub(crate) fn inner(&self) -> &Rc<Inner> {
        &self.inner
    }

    pub(crate) fn from_inner(inner: Rc<Inner>) -> Self {
        Deferred {
            inner,
            _type: PhantomData,
        }
    }
}

impl<T: 'static> Default for Deferred<T> {
    fn default() -> Self {
        Deferred::new()
    }
}

impl<T> Clone for Deferred<T> {
    fn clone(&self) -> Self {
        Deferred {
            inner: self.inner.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> Drop for Deferred<T> {
    /// Dropping the last handle to Deferreds that only wait on each other
    /// frees them (see the crate docs, "Memory").
    fn drop(&mut self) {
        if self.inner.in_wait_graph() {
            chain::collect_if_garbage(&self.inner, 1);
        }
    }
}

impl<T: fmt::Debug + 'static> fmt::Debug for Deferred<T> {
    /// Twisted's `repr`: `<Deferred at 0x…>`, `<Deferred at 0x… current
    /// result: …>` or `<Deferred at 0x… waiting on Deferred at 0x…>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} at {:#x}", self.inner.class_name(), self.id())?;
        if let Some(other) = self.inner.chained_to() {
            let other = Rc::as_ptr(&other) as *const () as usize;
            write!(f, " waiting on Deferred at {other:#x}")?;
        } else {
            match &*self.inner.slot.borrow() {
                Slot::Empty => {}
                Slot::Value(v) => match v.downcast_ref::<T>() {
                    Some(t) => write!(f, " current result: {t:?}")?,
                    None => write!(f, " current result: {v:?}")?,
                },
                Slot::Failure(failure) => write!(f, " current result: {failure:?}")?,
                Slot::Deferred(d) => {
                    let other = Rc::as_ptr(d) as *const () as usize;
                    write!(f, " current result: <Deferred at {other:#x}>")?
                }
                Slot::Lent => f.write_str(" current result: <in use by a running callback>")?,
            }
        }
        // With debugging on: where it was created and first fired.
        if let Some(info) = self.inner.debug_info() {
            if let Some(c) = info.creator {
                write!(f, " created at {c}")?;
            }
            if let Some(i) = info.invoker {
                write!(f, " first fired at {i}")?;
            }
        }
        f.write_str(">")
    }
}

impl<T: fmt::Debug + 'static> fmt::Display for Deferred<T> {
    /// The same text as `Debug`, as Python's `str()` equals `repr()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The result a value becomes. As in Python, where a result is whatever
/// object it is, a [`Failure`] is a failure (`callback(aFailure)` is
/// `errback(aFailure)`) and a Deferred is a Deferred (a callback returning one
/// chains; `callback(aDeferred)` holds it, and `cancel()` is forwarded to it).
/// Rust can only recognise the Deferreds and failures of the dynamic mode
/// this way: `Failure`, `Deferred<AnyValue>`, and an [`AnyValue`] holding
/// either. A typed `Deferred<Deferred<i32>>` holds its Deferred as an
/// ordinary value.
#[inline]
pub(crate) fn store_slot<T: 'static>(value: T) -> Slot {
    let value = match crate::cast::<T, Failure>(value) {
        Ok(f) => return Slot::Failure(f),
        Err(value) => value,
    };
    let value = match crate::cast::<T, Deferred<AnyValue>>(value) {
        Ok(d) => return Slot::Deferred(d.inner.clone()),
        Err(value) => value,
    };
    match crate::cast::<T, AnyValue>(value) {
        Ok(any) => {
            if let Some(f) = any.downcast_ref::<Failure>() {
                return Slot::Failure(f.clone());
            }
            if let Some(d) = any.downcast_ref::<Deferred<AnyValue>>() {
                return Slot::Deferred(d.inner.clone());
            }
            Slot::Value(any.into_erased())
        }
        Err(value) => Slot::Value(store(value)),
    }
}

/// Erases a value into the form a Deferred stores. An [`AnyValue`] is
/// unwrapped, so typed handles of the same Deferred find their type.
#[inline]
pub(crate) fn store<T: 'static>(value: T) -> ErasedValue {
    match crate::cast::<T, AnyValue>(value) {
        Ok(any) => any.into_erased(),
        Err(value) => match crate::cast::<T, ()>(value) {
            Ok(()) => ErasedValue::new_shareable(()),
            Err(value) => ErasedValue::new(value),
        },
    }
}

fn type_error<T>(found: &'static str) -> Failure {
    Failure::new(ResultTypeError {
        expected: std::any::type_name::<T>(),
        found,
    })
}

fn slot_type_name(slot: &Slot) -> &'static str {
    match slot {
        Slot::Value(v) => v.type_name(),
        Slot::Deferred(_) => "a Deferred",
        Slot::Failure(_) => "a Failure",
        Slot::Empty => "no result",
        Slot::Lent => "a value in use by a running callback",
    }
}

/// A (non-failure) result as the `T` a typed callback takes. A value of
/// another type becomes a [`ResultTypeError`] failure.
#[inline(always)]
pub(crate) fn value_as<T: 'static>(input: Slot) -> Result<T, Failure> {
    let v = match input {
        Slot::Value(v) => v,
        Slot::Deferred(d) => {
            let any = AnyValue::new(Deferred::<AnyValue>::from_inner(d));
            return crate::cast::<AnyValue, T>(any).map_err(|_| type_error::<T>("a Deferred"));
        }
        other => return Err(type_error::<T>(slot_type_name(&other))),
    };
    if TypeId::of::<T>() == TypeId::of::<AnyValue>() {
        return crate::cast::<AnyValue, T>(AnyValue::from_erased(v))
            .map_err(|a| type_error::<T>(a.type_name()));
    }
    match v.downcast::<T>() {
        Ok(t) => Ok(t),
        Err(v) => match v.downcast::<SharedValue>() {
            Ok(shared) => AnyValue::from_erased(ErasedValue::new_shareable(shared))
                .downcast::<T>()
                .map_err(|any| type_error::<T>(any.type_name())),
            Err(v) => Err(type_error::<T>(v.type_name())),
        },
    }
}

fn peek_value<T: Clone + 'static>(v: &ErasedValue) -> State<T> {
    if TypeId::of::<T>() == TypeId::of::<AnyValue>() {
        return match v.try_clone() {
            Some(c) => match crate::cast::<AnyValue, T>(AnyValue::from_erased(c)) {
                Ok(t) => State::Value(t),
                Err(_) => State::OtherType(v.type_name()),
            },
            None => State::OtherType(v.type_name()),
        };
    }
    if let Some(t) = v.downcast_ref::<T>() {
        return State::Value(t.clone());
    }
    if let Some(shared) = v.downcast_ref::<SharedValue>() {
        let any = AnyValue::from_erased(ErasedValue::new_shareable(shared.clone()));
        if let Some(t) = any.downcast_ref::<T>() {
            return State::Value(t.clone());
        }
        return State::OtherType(any.type_name());
    }
    State::OtherType(v.type_name())
}

/// Runs user code, turning a panic into a failure.
#[inline]
pub(crate) fn run_guarded<U: 'static>(f: impl FnOnce() -> Outcome<U>) -> Slot {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(outcome) => outcome.into_slot(),
        Err(panic) => Slot::Failure(Failure::from_panic(panic)),
    }
}
