//! [`DeferredList`] and [`gather_results`]: Twisted's `DeferredList`,
//! `gatherResults`, and Synapse's `unwrapFirstError`.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Deref;
use std::rc::Rc;

use crate::chain::{self, Inner, Slot};
use crate::deferred::{Deferred, store_slot, value_as};
use crate::erased::ErasedValue;
use crate::errors::FirstError;
use crate::failure::Failure;

/// The flags of a [`DeferredList`], Python's keyword arguments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeferredListFlags {
    /// `fireOnOneCallback`: fire with `(value, index)` as soon as one input
    /// succeeds.
    pub fire_on_one_callback: bool,
    /// `fireOnOneErrback`: errback with [`FirstError`] as soon as one input
    /// fails.
    pub fire_on_one_errback: bool,
    /// `consumeErrors`: once recorded, an input's failure is replaced by
    /// `None` in that input's own chain.
    pub consume_errors: bool,
}

/// What a [`DeferredList`] fires with. Equality compares failures by
/// identity, as Python compares `Failure` objects; `Debug` prints what
/// Python's `repr` shows (`[(true, 1), (false, <Failure …>)]`, `(v, index)`).
#[derive(Clone)]
pub enum DeferredListResult<T> {
    /// Every input's outcome, in input order: Python's list of
    /// `(True, value)` / `(False, failure)` pairs as `Ok` / `Err`.
    All(Vec<Result<T, Failure>>),
    /// With `fire_on_one_callback`: the first success and its index,
    /// Python's `(value, index)`.
    First(T, usize),
}

impl<T: fmt::Debug> fmt::Debug for DeferredListResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Pair<'a, T>(&'a Result<T, Failure>);
        impl<T: fmt::Debug> fmt::Debug for Pair<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    Ok(v) => write!(f, "(true, {v:?})"),
                    Err(e) => write!(f, "(false, {e:?})"),
                }
            }
        }
        match self {
            DeferredListResult::All(results) => {
                f.debug_list().entries(results.iter().map(Pair)).finish()
            }
            DeferredListResult::First(v, i) => write!(f, "({v:?}, {i})"),
        }
    }
}

impl<T: PartialEq> PartialEq for DeferredListResult<T> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (DeferredListResult::First(a, i), DeferredListResult::First(b, j)) => a == b && i == j,
            (DeferredListResult::All(a), DeferredListResult::All(b)) => {
                a.len() == b.len()
                    && a.iter().zip(b).all(|pair| match pair {
                        (Ok(x), Ok(y)) => x == y,
                        (Err(x), Err(y)) => Failure::ptr_eq(x, y),
                        _ => false,
                    })
            }
            _ => false,
        }
    }
}

/// Twisted's `DeferredList`: a Deferred that fires once the Deferreds it
/// watches have.
///
/// By default it fires with every outcome in input order, once all have
/// one, and never fails. The flags make it fire early on the first success
/// or errback on the first failure. Cancelling it, before it fires, cancels
/// every input in turn (an input's canceller that fails is logged and the
/// loop goes on), and its outcome is whatever the cancelled inputs produce.
///
/// It dereferences to the Deferred itself, as `DeferredList` is a
/// `Deferred` subclass, and keeps Twisted's `resultList` (which goes on
/// recording inputs that fire after the list did).
///
/// ```
/// use twisted_deferred::{Deferred, DeferredList, DeferredListResult, Failure};
///
/// let (a, b) = (Deferred::<i32>::new(), Deferred::<i32>::new());
/// let dl = DeferredList::new([a.clone(), b.clone()]);   // dl = DeferredList([a, b])
/// b.errback(Failure::msg("no")).unwrap();
/// a.callback(1).unwrap();
/// let DeferredListResult::All(results) = dl.result().value().unwrap() else { panic!() };
/// assert_eq!(results[0].as_ref().ok(), Some(&1));              // (True, 1)
/// assert_eq!(results[1].as_ref().unwrap_err().message(), "no"); // (False, Failure)
/// # b.add_errback(|_| Ok(0));
/// ```
pub struct DeferredList<T> {
    deferred: Deferred<DeferredListResult<T>>,
    state: Rc<ListState<T>>,
}

struct ListState<T> {
    result_list: RefCell<Vec<Option<Result<T, Failure>>>>,
    finished: Cell<usize>,
    flags: DeferredListFlags,
}

impl<T: Clone + 'static> DeferredList<T> {
    /// `DeferredList(deferreds)`.
    pub fn new(deferreds: impl IntoIterator<Item = Deferred<T>>) -> Self {
        Self::with_flags(deferreds, DeferredListFlags::default())
    }

    /// `DeferredList(deferreds, fireOnOneCallback=…, fireOnOneErrback=…,
    /// consumeErrors=…)`. Inputs that have fired already are taken into
    /// account here, so the list may fire before this returns.
    ///
    /// ```
    /// use twisted_deferred::{succeed, Deferred, DeferredList, DeferredListFlags, DeferredListResult};
    /// // DeferredList([Deferred(), succeed(7)], fireOnOneCallback=True)
    /// let flags = DeferredListFlags { fire_on_one_callback: true, ..Default::default() };
    /// let dl = DeferredList::with_flags([Deferred::new(), succeed(7)], flags);
    /// assert_eq!(dl.result().value(), Some(DeferredListResult::First(7, 1)));
    /// ```
    pub fn with_flags(
        deferreds: impl IntoIterator<Item = Deferred<T>>,
        flags: DeferredListFlags,
    ) -> Self {
        let inputs: Vec<Deferred<T>> = deferreds.into_iter().collect();
        let n = inputs.len();
        let state = Rc::new(ListState {
            result_list: RefCell::new((0..n).map(|_| None).collect()),
            finished: Cell::new(0),
            flags,
        });
        let deferred: Deferred<DeferredListResult<T>> = Deferred::new();
        let inner = deferred.inner().clone();
        inner.set_class_name("DeferredList");
        // `DeferredList.cancel`: before it fires, cancel every input.
        let to_cancel: Vec<Rc<Inner>> = inputs.iter().map(|d| d.inner().clone()).collect();
        inner.set_cancel_override(Rc::new(move |me: &Rc<Inner>| {
            if !me.called() {
                for d in &to_cancel {
                    if let Err(f) = chain::cancel(d) {
                        log::error!("Exception raised from user supplied canceller: {f}");
                    }
                }
            }
            Ok(())
        }));
        if n == 0 && !flags.fire_on_one_callback {
            let _ = chain::fire(
                &inner,
                Slot::Value(ErasedValue::new_cloneable(DeferredListResult::<T>::All(
                    Vec::new(),
                ))),
            );
        }
        for (index, input) in inputs.iter().enumerate() {
            let state = state.clone();
            let list = inner.clone();
            chain::add_call(input.inner(), move |result: Slot| {
                record::<T>(&state, &list, index, result)
            });
        }
        DeferredList { deferred, state }
    }

    /// Twisted's `resultList`: each input's outcome so far (`None` for an
    /// input that has not fired), still updated after the list fired.
    pub fn result_list(&self) -> Vec<Option<Result<T, Failure>>> {
        self.state.result_list.borrow().clone()
    }

    /// Twisted's `finishedCount`.
    pub fn finished_count(&self) -> usize {
        self.state.finished.get()
    }

    /// The list as the Deferred it is.
    pub fn deferred(&self) -> &Deferred<DeferredListResult<T>> {
        &self.deferred
    }

    /// The list as the Deferred it is, consuming the handle.
    pub fn into_deferred(self) -> Deferred<DeferredListResult<T>> {
        self.deferred
    }
}

/// `DeferredList._cbDeferred`: record an input's outcome and fire the list
/// when due. Returns what the input's chain goes on with.
fn record<T: Clone + 'static>(
    state: &ListState<T>,
    list: &Rc<Inner>,
    index: usize,
    result: Slot,
) -> Slot {
    let (outcome, pass_on): (Result<T, Failure>, Slot) = match result {
        Slot::Failure(f) => (Err(f.clone()), Slot::Failure(f)),
        other => match value_as::<T>(other) {
            Ok(v) => (Ok(v.clone()), store_slot(v)),
            Err(f) => (Err(f.clone()), Slot::Failure(f)),
        },
    };
    let failed = outcome.is_err();
    let first = outcome.clone();
    if let Some(entry) = state.result_list.borrow_mut().get_mut(index) {
        *entry = Some(outcome);
    }
    state.finished.set(state.finished.get() + 1);
    if !list.called() {
        let flags = state.flags;
        let fire = match first {
            Ok(v) if flags.fire_on_one_callback => Some(Slot::Value(ErasedValue::new_cloneable(
                DeferredListResult::First(v, index),
            ))),
            Err(f) if flags.fire_on_one_errback => {
                Some(Slot::Failure(Failure::new(FirstError::new(f, index))))
            }
            _ if state.finished.get() == state.result_list.borrow().len() => {
                let all: Vec<Result<T, Failure>> = state
                    .result_list
                    .borrow()
                    .iter()
                    .map(|r| {
                        r.clone()
                            .unwrap_or_else(|| Err(Failure::msg("missing result")))
                    })
                    .collect();
                Some(Slot::Value(ErasedValue::new_cloneable(
                    DeferredListResult::All(all),
                )))
            }
            _ => None,
        };
        if let Some(fire) = fire
            && let Err(f) = chain::fire(list, fire)
        {
            // Only a nesting too deep can fail here (the list is not called).
            return Slot::Failure(f);
        }
    }
    if failed && state.flags.consume_errors {
        return Slot::none();
    }
    pass_on
}

impl<T> Deref for DeferredList<T> {
    type Target = Deferred<DeferredListResult<T>>;

    fn deref(&self) -> &Self::Target {
        &self.deferred
    }
}

impl<T> Clone for DeferredList<T> {
    fn clone(&self) -> Self {
        DeferredList {
            deferred: self.deferred.clone(),
            state: self.state.clone(),
        }
    }
}

impl<T: fmt::Debug + 'static> fmt::Debug for DeferredList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.deferred, f)
    }
}

/// `gatherResults(deferreds, consumeErrors)`: a Deferred firing with every
/// input's value, in input order, or failing with [`FirstError`] (wrapping
/// the first failure and its index) as soon as one input fails. It is a
/// [`DeferredList`] underneath: cancelling it cancels every input.
///
/// ```
/// use twisted_deferred::{gather_results, succeed, Deferred, FirstError, Failure};
///
/// let d = gather_results([succeed(1), succeed(2)], false);   // gatherResults([...])
/// assert_eq!(d.result().value(), Some(vec![1, 2]));
///
/// let (a, b) = (Deferred::<i32>::new(), Deferred::<i32>::new());
/// let g = gather_results([a.clone(), b.clone()], true);     // consumeErrors=True
/// b.errback(Failure::msg("second")).unwrap();
/// let f = g.result().failure().unwrap();
/// assert_eq!(f.downcast_ref::<FirstError>().unwrap().index, 1);
/// # g.add_errback(|_| Ok(vec![]));
/// ```
pub fn gather_results<T: Clone + 'static>(
    deferreds: impl IntoIterator<Item = Deferred<T>>,
    consume_errors: bool,
) -> Deferred<Vec<T>> {
    let flags = DeferredListFlags {
        fire_on_one_errback: true,
        consume_errors,
        ..Default::default()
    };
    let list = DeferredList::with_flags(deferreds, flags).into_deferred();
    // `_parseDeferredListResult`, added to the list itself.
    chain::add_call(list.inner(), |input: Slot| match input {
        Slot::Failure(f) => Slot::Failure(f),
        other => match value_as::<DeferredListResult<T>>(other) {
            Ok(DeferredListResult::All(results)) => {
                match results.into_iter().collect::<Result<Vec<T>, Failure>>() {
                    Ok(values) => Slot::Value(ErasedValue::new_cloneable(values)),
                    Err(f) => Slot::Failure(f),
                }
            }
            Ok(DeferredListResult::First(v, _)) => Slot::Value(ErasedValue::new_cloneable(vec![v])),
            Err(f) => Slot::Failure(f),
        },
    });
    list.cast()
}

/// Synapse's `unwrapFirstError`, as an errback: a [`FirstError`] failure
/// becomes the failure it wraps; any other failure is returned as it is
/// (where Synapse's `trap` would re-raise it, which comes to the same).
///
/// ```
/// use twisted_deferred::{gather_results, unwrap_first_error, Deferred, Failure};
/// let a: Deferred<i32> = Deferred::new();
/// // gatherResults([a], consumeErrors=True).addErrback(unwrapFirstError)
/// let g = gather_results([a.clone()], true);
/// g.add_errback(|f| unwrap_first_error(f));
/// a.errback(Failure::msg("inner")).unwrap();
/// assert_eq!(g.result().failure().unwrap().message(), "inner");
/// # g.add_errback(|_| Ok(vec![]));
/// ```
pub fn unwrap_first_error(failure: Failure) -> Failure {
    match failure.downcast_ref::<FirstError>() {
        Some(first) => first.failure.clone(),
        None => failure,
    }
}
