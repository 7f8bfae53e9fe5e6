//! Synapse's `synapse.util.async_helpers.ObservableDeferred` (and its
//! consumer interface `AbstractObservableDeferred`), plus `observe_deferred`
//! from the same module.
//!
//! An [`ObservableDeferred`] fans the outcome of one *origin* Deferred out to
//! any number of *observer* Deferreds, each independent of the others and of
//! the origin: cancelling an observer fails that observer alone, a failure in
//! an observer's own callbacks stays in its chain, and the origin's chain
//! carries on as if nobody watched (except for `consume_errors`).
//!
//! | Synapse | here |
//! |---|---|
//! | `ObservableDeferred(d, consumeErrors=False)` | [`ObservableDeferred::new`] |
//! | `od.observe()` | [`ObservableDeferred::observe`] |
//! | `od.observers()`, `od.has_observers()` | [`ObservableDeferred::observers`], [`ObservableDeferred::has_observers`] |
//! | `od.has_called()`, `od.has_succeeded()`, `od.get_result()` | [`ObservableDeferred::has_called`], [`ObservableDeferred::has_succeeded`], [`ObservableDeferred::get_result`] |
//! | `od.addCallback(…)`, `od.cancel()`, `od.called` (attribute delegation) | the same methods through `Deref` to the origin, or [`ObservableDeferred::deferred`] |
//! | `AbstractObservableDeferred` | [`AbstractObservableDeferred`] |
//! | `observe_deferred(d)` | [`observe_deferred`] |
//!
//! Like Synapse's, this does nothing about logging contexts: observers fire
//! in whatever context the origin fires in.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;
use std::rc::{Rc, Weak};

use twisted_deferred::{AnyValue, CancelledError, Deferred, Failure, fail, succeed};

/// The consumer interface of [`ObservableDeferred`]: Synapse's
/// `AbstractObservableDeferred`, what caches hand to their callers.
///
/// ```
/// use twisted_compat::{AbstractObservableDeferred, Deferred, ObservableDeferred};
///
/// // def lookup(cache: AbstractObservableDeferred) -> Deferred: return cache.observe()
/// fn lookup(cache: &dyn AbstractObservableDeferred<i32>) -> Deferred<i32> {
///     cache.observe()
/// }
/// let origin: Deferred<i32> = Deferred::new();
/// let od = ObservableDeferred::new(origin.clone(), false);
/// let d = lookup(&od);
/// assert!(od.has_observers());
/// origin.callback(3).unwrap();
/// assert_eq!(d.result().value(), Some(3));
/// ```
pub trait AbstractObservableDeferred<T> {
    /// `observe()`: a new Deferred that gets the origin's outcome (see
    /// [`ObservableDeferred::observe`]).
    fn observe(&self) -> Deferred<T>;
    /// `has_observers()`: true while some observer is waiting (see
    /// [`ObservableDeferred::has_observers`]).
    fn has_observers(&self) -> bool;
}

/// Synapse's `ObservableDeferred`: fan-out of one origin Deferred to many
/// independent, individually cancellable observer Deferreds.
///
/// `new` adds one callback and one errback to the origin at once, so they
/// run before anything added to the origin later. When the origin fires
/// with a value, the value is recorded, the list of pending observers is
/// detached (observers requested from then on are already fired), and every
/// pending observer is called back with the value, in the order they were
/// requested, inside the origin's callback run; the origin goes on with the
/// value unchanged. A failure is delivered the same way, the *same*
/// [`Failure`] to every observer, and the origin goes on with it, or with
/// Python's `None` (`()`) when `consume_errors` is set.
///
/// An observer that is cancelled before the origin fires leaves the list
/// and fails with [`CancelledError`]; nobody else notices. An observer
/// fired by other means is skipped when the origin fires (the
/// `AlreadyCalledError` is logged, as Synapse logs it).
///
/// The handle dereferences to the origin Deferred, as Python delegates
/// unknown attributes to it: `od.cancel()`, `od.add_callback(…)`,
/// `od.called()` act on the origin.
///
/// Values are cloned for each observer, so `T: Clone` (Python shares one
/// object; wrap big values in `Rc`, or use [`AnyValue`], to share them too).
///
/// ```
/// use twisted_compat::{Deferred, ObservableDeferred};
///
/// let origin: Deferred<&str> = Deferred::new();
/// let od = ObservableDeferred::new(origin.clone(), false); // od = ObservableDeferred(origin)
/// let (a, b) = (od.observe(), od.observe());              // a = od.observe(); b = od.observe()
/// a.cancel().unwrap();                                     // a.cancel(): a alone fails
/// assert_eq!(od.observers().len(), 1);
/// origin.callback("done").unwrap();                        // origin.callback("done")
/// assert_eq!(b.result().value(), Some("done"));
/// assert_eq!(origin.result().value(), Some("done"));      // the origin is untouched
/// assert!(od.has_succeeded());
/// # a.add_errback(|_| Ok(""));
/// ```
pub struct ObservableDeferred<T = AnyValue> {
    deferred: Deferred<T>,
    state: Rc<Shared<T>>,
}

/// What the origin's hooks and the observers' cancellers share.
struct Shared<T> {
    /// `_observers`: the pending observers in the order they were requested.
    /// Emptied for good once the origin fires.
    observers: RefCell<Observers<T>>,
    /// `_result`: `None` until the origin fires.
    result: RefCell<Option<Result<T, Failure>>>,
}

impl<T: Clone + 'static> ObservableDeferred<T> {
    /// `ObservableDeferred(deferred, consumeErrors)`: watches `deferred`,
    /// adding its callback and errback to it now (they run at once if it has
    /// fired already).
    ///
    /// ```
    /// use twisted_compat::{Deferred, Failure, ObservableDeferred};
    ///
    /// // od = ObservableDeferred(origin, consumeErrors=True)
    /// let origin: Deferred<i32> = Deferred::new();
    /// let od = ObservableDeferred::new(origin.clone(), true);
    /// let observer = od.observe();
    /// origin.errback(Failure::msg("broken")).unwrap();
    /// assert_eq!(observer.result().failure().unwrap().message(), "broken");
    /// // With consumeErrors the origin's own chain goes on with None.
    /// assert!(origin.result().failure().is_none());
    /// assert!(origin.cast::<()>().result().value().is_some());
    /// # observer.add_errback(|_| Ok(0));
    /// ```
    pub fn new(deferred: Deferred<T>, consume_errors: bool) -> Self {
        let state = Rc::new(Shared {
            observers: RefCell::new(Observers::new()),
            result: RefCell::new(None),
        });
        // Python adds one (callback, errback) pair. The callback never fails,
        // so a callback link followed by an errback link behaves the same;
        // two links let the errback return Python's `None` (`()`) on a chain
        // typed `T`.
        let on_value = state.clone();
        deferred.add_callback(move |r: T| {
            on_value.deliver(Ok(r.clone()));
            Ok(r)
        });
        let on_failure = state.clone();
        deferred.cast::<()>().add_errback(move |f: Failure| {
            on_failure.deliver(Err(f.clone()));
            if consume_errors { Ok(()) } else { Err(f) }
        });
        ObservableDeferred { deferred, state }
    }

    /// `observe()`: before the origin fires, a new Deferred appended to the
    /// observers (its canceller takes it off the list); afterwards, a new
    /// Deferred that already holds the origin's value or failure (the same
    /// `Failure` each time).
    ///
    /// ```
    /// use twisted_compat::{Deferred, ObservableDeferred};
    /// let origin: Deferred<i32> = Deferred::new();
    /// let od = ObservableDeferred::new(origin.clone(), false);
    /// let early = od.observe();                 // early = od.observe()
    /// origin.callback(1).unwrap();
    /// let late = od.observe();                  // late = od.observe()
    /// assert!(!early.ptr_eq(&late));
    /// assert_eq!(early.result().value(), Some(1));
    /// assert_eq!(late.result().value(), Some(1));
    /// ```
    pub fn observe(&self) -> Deferred<T> {
        let fired = self.state.result.borrow().clone();
        match fired {
            None => {
                let key = self.state.observers.borrow().next_key();
                let weak: Weak<Shared<T>> = Rc::downgrade(&self.state);
                // Deferred(canceller=self._remove_observer)
                let d = Deferred::with_canceller(move |_observer: &Deferred<T>| {
                    if let Some(state) = weak.upgrade() {
                        state.remove_observer(key);
                    }
                });
                self.state.observers.borrow_mut().push(d.clone());
                d
            }
            Some(Ok(v)) => succeed(v),
            Some(Err(f)) => fail(f),
        }
    }

    /// `get_result()`: the origin's value (`Ok`) or failure (`Err`) once it
    /// fired; before that, an error (Python raises `ValueError`), which `?`
    /// turns into a failure inside a callback.
    ///
    /// ```
    /// use twisted_compat::{Deferred, ObservableDeferred};
    /// let origin: Deferred<i32> = Deferred::new();
    /// let od = ObservableDeferred::new(origin.clone(), false);
    /// assert!(od.get_result().is_err());              // raises ValueError
    /// origin.callback(4).unwrap();
    /// assert_eq!(od.get_result().unwrap().ok(), Some(4));
    /// ```
    pub fn get_result(&self) -> Result<Result<T, Failure>, NoResultError> {
        self.state.result.borrow().clone().ok_or(NoResultError)
    }
}

impl<T: 'static> ObservableDeferred<T> {
    /// `observers()`: the observers still waiting, in the order they were
    /// requested; empty once the origin has fired.
    ///
    /// ```
    /// use twisted_compat::{Deferred, ObservableDeferred};
    /// let origin: Deferred<i32> = Deferred::new();
    /// let od = ObservableDeferred::new(origin.clone(), false);
    /// let (a, b) = (od.observe(), od.observe());
    /// a.cancel().unwrap();                          // a leaves the list
    /// let pending = od.observers();                 // pending = od.observers()
    /// assert_eq!(pending.len(), 1);
    /// assert!(pending[0].ptr_eq(&b));
    /// origin.callback(1).unwrap();
    /// assert!(od.observers().is_empty());           // () once resolved
    /// # a.add_errback(|_| Ok(0));
    /// ```
    pub fn observers(&self) -> Vec<Deferred<T>> {
        self.state.observers.borrow().iter().cloned().collect()
    }

    /// `has_observers()`: true while some observer is waiting.
    ///
    /// ```
    /// use twisted_compat::{Deferred, ObservableDeferred};
    /// let origin: Deferred<i32> = Deferred::new();
    /// let od = ObservableDeferred::new(origin.clone(), false);
    /// assert!(!od.has_observers());                 // od.has_observers()
    /// let _a = od.observe();
    /// assert!(od.has_observers());
    /// origin.callback(1).unwrap();
    /// assert!(!od.has_observers());
    /// ```
    pub fn has_observers(&self) -> bool {
        !self.state.observers.borrow().is_empty()
    }

    /// `has_called()`: true once the origin has fired (its outcome reached
    /// this observable's hooks).
    ///
    /// ```
    /// use twisted_compat::{Deferred, ObservableDeferred};
    /// let origin: Deferred<i32> = Deferred::new();
    /// let od = ObservableDeferred::new(origin.clone(), false);
    /// assert!(!od.has_called());                    // od.has_called()
    /// origin.callback(1).unwrap();
    /// assert!(od.has_called());
    /// ```
    pub fn has_called(&self) -> bool {
        self.state.result.borrow().is_some()
    }

    /// `has_succeeded()`: true once the origin has fired with a value.
    ///
    /// ```
    /// use twisted_compat::{Deferred, ObservableDeferred};
    /// let origin: Deferred<i32> = Deferred::new();
    /// let od = ObservableDeferred::new(origin.clone(), true);
    /// od.cancel().unwrap();                     // od.cancel(): delegated to the origin
    /// assert!(od.has_called());
    /// assert!(!od.has_succeeded());
    /// ```
    pub fn has_succeeded(&self) -> bool {
        matches!(*self.state.result.borrow(), Some(Ok(_)))
    }

    /// The origin Deferred (`od._deferred`), which Python reaches by
    /// attribute delegation; the handle also dereferences to it.
    ///
    /// ```
    /// use twisted_compat::{Deferred, ObservableDeferred};
    /// let origin: Deferred<i32> = Deferred::new();
    /// let od = ObservableDeferred::new(origin.clone(), false);
    /// assert!(od.deferred().ptr_eq(&origin));       // od._deferred is origin
    /// od.add_callback(|x| Ok(x + 1));              // od.addCallback(...): on the origin
    /// origin.callback(1).unwrap();
    /// assert!(od.called());                         // od.called
    /// assert_eq!(origin.result().value(), Some(2));
    /// ```
    pub fn deferred(&self) -> &Deferred<T> {
        &self.deferred
    }
}

impl<T: 'static> Shared<T> {
    /// `_remove_observer`: the canceller of a pending observer.
    fn remove_observer(&self, key: u64) {
        if self.result.borrow().is_some() {
            // The origin fired already; the observer has (or is about to
            // get) its result.
            return;
        }
        // An observer that is not in the list any more is fine (Synapse
        // catches the ValueError).
        let removed = self.observers.borrow_mut().remove(key);
        drop(removed);
    }
}

impl<T: Clone + 'static> Shared<T> {
    /// The origin's callback or errback: record, detach, notify in order.
    fn deliver(&self, result: Result<T, Failure>) {
        *self.result.borrow_mut() = Some(result.clone());
        // No observer is added once the result is recorded, so the list can
        // be detached (observe() now returns fired Deferreds).
        let observers = self.observers.borrow_mut().take();
        let (method, shown) = match &result {
            Ok(_) => ("callback", "a value"),
            Err(_) => ("errback", "a failure"),
        };
        for observer in observers {
            let delivered = match &result {
                Ok(v) => observer.callback(v.clone()),
                Err(f) => observer.errback(f.clone()),
            };
            match delivered {
                Ok(()) => {}
                // Cancellations must not reach the origin or other observers.
                Err(e) if e.check::<CancelledError>() => {}
                Err(e) => log::error!(
                    "observer Deferred at {:#x} threw an exception on .{method}({shown}), \
                     ignoring...: {e}",
                    observer.id()
                ),
            }
        }
    }
}

/// The pending observers, in the order they were requested, each under a
/// sequence number that its canceller holds. A cancelled observer leaves a
/// hole, found by binary search (the numbers only grow); the holes are
/// squeezed out once they outnumber the observers still waiting, so a
/// removal costs O(log n) amortised and there are never more than twice as
/// many slots as waiting observers.
struct Observers<T> {
    /// `(key, observer)` in increasing key order; `None` where one left.
    slots: Vec<(u64, Option<Deferred<T>>)>,
    /// The key of the next observer.
    next: u64,
    /// How many slots are holes.
    holes: usize,
}

impl<T> Observers<T> {
    fn new() -> Self {
        Observers {
            slots: Vec::new(),
            next: 0,
            holes: 0,
        }
    }

    /// The key [`Observers::push`] gives the next observer.
    fn next_key(&self) -> u64 {
        self.next
    }

    /// Appends an observer under [`Observers::next_key`].
    fn push(&mut self, observer: Deferred<T>) {
        self.slots.push((self.next, Some(observer)));
        self.next += 1;
    }

    /// Takes the observer under `key` off the list, if it is still there.
    fn remove(&mut self, key: u64) -> Option<Deferred<T>> {
        let index = self.slots.binary_search_by_key(&key, |&(k, _)| k).ok()?;
        let removed = self.slots[index].1.take()?;
        self.holes += 1;
        if self.holes * 2 > self.slots.len() {
            self.slots.retain(|(_, o)| o.is_some());
            self.holes = 0;
        }
        Some(removed)
    }

    fn is_empty(&self) -> bool {
        self.slots.len() == self.holes
    }

    /// The observers still waiting, in order.
    fn iter(&self) -> impl Iterator<Item = &Deferred<T>> {
        self.slots.iter().filter_map(|(_, o)| o.as_ref())
    }

    /// Empties the list, handing over the observers still waiting, in order.
    fn take(&mut self) -> impl Iterator<Item = Deferred<T>> + use<T> {
        self.holes = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .filter_map(|(_, o)| o)
    }
}

impl<T: Clone + 'static> AbstractObservableDeferred<T> for ObservableDeferred<T> {
    fn observe(&self) -> Deferred<T> {
        ObservableDeferred::observe(self)
    }

    fn has_observers(&self) -> bool {
        ObservableDeferred::has_observers(self)
    }
}

impl<T> Deref for ObservableDeferred<T> {
    type Target = Deferred<T>;

    fn deref(&self) -> &Deferred<T> {
        &self.deferred
    }
}

impl<T> Clone for ObservableDeferred<T> {
    /// Another handle on the same observable (Python's second reference).
    fn clone(&self) -> Self {
        ObservableDeferred {
            deferred: self.deferred.clone(),
            state: self.state.clone(),
        }
    }
}

impl<T: fmt::Debug + 'static> fmt::Debug for ObservableDeferred<T> {
    /// Synapse's repr: `<ObservableDeferred object at 0x…, result=…,
    /// _deferred=<Deferred at 0x…>>`, the result shown as Python's
    /// `(True, value)`, `(False, failure)` or `None`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<ObservableDeferred object at {:#x}, result=",
            Rc::as_ptr(&self.state) as *const () as usize
        )?;
        match &*self.state.result.borrow() {
            None => f.write_str("None")?,
            Some(Ok(v)) => write!(f, "(True, {v:?})")?,
            Some(Err(e)) => write!(f, "(False, {e:?})")?,
        }
        write!(f, ", _deferred={:?}>", self.deferred)
    }
}

/// [`ObservableDeferred::get_result`] before the origin fired (Python raises
/// `ValueError("… has no result yet")`).
///
/// ```
/// use twisted_compat::{Deferred, NoResultError, ObservableDeferred};
/// let od = ObservableDeferred::new(Deferred::<i32>::new(), false);
/// // try: od.get_result() except ValueError: ...
/// assert_eq!(od.get_result().unwrap_err(), NoResultError);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoResultError;

impl fmt::Display for NoResultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ObservableDeferred has no result yet")
    }
}

impl std::error::Error for NoResultError {}

/// Synapse's `observe_deferred(d)`: a new Deferred with `d`'s outcome, which
/// leaves `d`'s own chain as it is (unlike `chainDeferred`): `d` keeps its
/// value, and a failure stays unhandled on `d` unless something handles it
/// there too. Cancelling the new Deferred fails it at once and does not
/// touch `d`; `d`'s result is then dropped for it.
///
/// It adds to `d` the pair `(new.callback(r); return r, new.errback(f);
/// return f)`, so, as in Synapse, if the new Deferred has been fired by hand
/// (not by a cancel), the `AlreadyCalledError` that raises becomes `d`'s
/// failure.
///
/// ```
/// use twisted_compat::{Deferred, observe_deferred};
///
/// let d: Deferred<i32> = Deferred::new();
/// let mirror = observe_deferred(&d);        // mirror = observe_deferred(d)
/// d.callback(8).unwrap();
/// assert_eq!(mirror.result().value(), Some(8));
/// assert_eq!(d.result().value(), Some(8)); // d keeps its value
/// ```
pub fn observe_deferred<T: Clone + 'static>(d: &Deferred<T>) -> Deferred<T> {
    let new_deferred: Deferred<T> = Deferred::new();
    let (on_value, on_failure) = (new_deferred.clone(), new_deferred.clone());
    d.add_callbacks(
        move |r: T| {
            on_value.callback(r.clone())?;
            Ok(r)
        },
        move |f: Failure| {
            on_failure.errback(f.clone())?;
            Err(f)
        },
    );
    new_deferred
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cancels and requests observers in a tangle that makes the list
    /// squeeze out its holes many times over, checking against a model that
    /// `observers()` keeps the order of `observe()` and that delivery
    /// follows it.
    #[test]
    fn cancelled_observers_leave_and_the_rest_keep_their_order() {
        let origin: Deferred<u32> = Deferred::new();
        let od = ObservableDeferred::new(origin.clone(), false);
        let mut model: Vec<Deferred<u32>> = Vec::new();
        let mut cancelled: Vec<Deferred<u32>> = Vec::new();
        let mut seed = 7u32;
        for round in 0..2000u32 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            if model.is_empty() || (seed >> 16) % 5 < 3 {
                model.push(od.observe());
            } else {
                let victim = model.remove(((seed >> 8) as usize) % model.len());
                victim.cancel().unwrap();
                // A second cancel does not reach the canceller; the list is
                // unchanged either way.
                victim.cancel().unwrap();
                cancelled.push(victim);
            }
            if round % 97 == 0 {
                let listed = od.observers();
                assert_eq!(listed.len(), model.len());
                assert!(listed.iter().zip(&model).all(|(a, b)| a.ptr_eq(b)));
                assert_eq!(od.has_observers(), !model.is_empty());
            }
        }
        // Cancel everything left but the last few: the list ends up holding
        // only those.
        let keep = model.split_off(model.len() - 3);
        for o in model.drain(..) {
            o.cancel().unwrap();
            cancelled.push(o);
        }
        let listed = od.observers();
        assert_eq!(listed.len(), keep.len());
        assert!(listed.iter().zip(&keep).all(|(a, b)| a.ptr_eq(b)));

        let order = Rc::new(RefCell::new(Vec::new()));
        for (i, o) in keep.iter().enumerate() {
            let order = order.clone();
            o.add_callback(move |v: u32| {
                order.borrow_mut().push(i);
                Ok(v)
            });
        }
        origin.callback(5).unwrap();
        assert_eq!(*order.borrow(), vec![0, 1, 2]);
        assert!(keep.iter().all(|o| o.result().value() == Some(5)));
        assert!(!od.has_observers() && od.observers().is_empty());
        for o in &cancelled {
            assert!(o.result().failure().unwrap().check::<CancelledError>());
            o.add_errback(|_| Ok(0));
        }
    }
}
