//! [`race`]: Twisted's `race()`, the first success wins and the rest are
//! cancelled, and [`FailureGroup`], its failure when none succeeds.

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::fmt;
use std::rc::Rc;

use crate::chain::{self, Inner, Slot};
use crate::deferred::{Deferred, value_as};
use crate::erased::ErasedValue;
use crate::failure::Failure;

/// Every Deferred given to [`race`] failed: Twisted's `FailureGroup`, with
/// the failures in the order of the raced Deferreds.
#[derive(Clone)]
pub struct FailureGroup {
    /// One failure per raced Deferred, in input order.
    pub failures: Vec<Failure>,
}

impl fmt::Debug for FailureGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.failures).finish()
    }
}

impl fmt::Display for FailureGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all {} raced Deferreds failed", self.failures.len())
    }
}

impl Error for FailureGroup {}

struct RaceState<T> {
    inputs: Vec<Rc<Inner>>,
    winner: Cell<Option<usize>>,
    failures: RefCell<Vec<(usize, Failure)>>,
    result: Deferred<(usize, T)>,
}

/// `race(deferreds)`: fires with `(index, value)` of the first input to
/// succeed, after cancelling every other input (in input order); if all
/// fail, fails with [`FailureGroup`]. Every input's result becomes `None`
/// afterwards (race consumes them). Cancelling the race cancels every input.
///
/// ```
/// use twisted_deferred::{race, Deferred};
/// let ds: Vec<Deferred<&str>> = (0..3).map(|_| Deferred::new()).collect();
/// let r = race(ds.clone());                       // r = race(ds)
/// ds[1].callback("win").unwrap();
/// assert_eq!(r.result().value(), Some((1, "win")));
/// assert!(ds[0].called() && ds[2].called());      // the others were cancelled
/// ```
pub fn race<T: Clone + 'static>(
    deferreds: impl IntoIterator<Item = Deferred<T>>,
) -> Deferred<(usize, T)> {
    let inputs: Vec<Deferred<T>> = deferreds.into_iter().collect();
    let cancel_list: Vec<Rc<Inner>> = inputs.iter().map(|d| d.inner().clone()).collect();
    let to_cancel = cancel_list.clone();
    let result: Deferred<(usize, T)> =
        Deferred::with_canceller(move |_r: &Deferred<(usize, T)>| {
            for d in &to_cancel {
                chain::cancel(d)?;
            }
            Ok(())
        });
    let state = Rc::new(RaceState {
        inputs: cancel_list,
        winner: Cell::new(None),
        failures: RefCell::new(Vec::new()),
        result: result.clone(),
    });
    for (index, input) in inputs.iter().enumerate() {
        let state = state.clone();
        chain::add_call(input.inner(), move |outcome: Slot| match outcome {
            Slot::Failure(f) => failed(&state, index, f),
            other => match value_as::<T>(other) {
                Ok(v) => succeeded(&state, index, v),
                Err(f) => failed(&state, index, f),
            },
        });
    }
    result
}

fn succeeded<T: Clone + 'static>(state: &RaceState<T>, index: usize, value: T) -> Slot {
    if state.winner.get().is_none() {
        state.winner.set(Some(index));
        for (i, d) in state.inputs.iter().enumerate() {
            if i != index
                && let Err(f) = chain::cancel(d)
            {
                return Slot::Failure(f);
            }
        }
        // If the race Deferred was fired by hand, Twisted's
        // AlreadyCalledError surfaces here, as this input's failure.
        if let Err(f) = chain::fire(
            state.result.inner(),
            Slot::Value(ErasedValue::new_cloneable((index, value))),
        ) {
            return Slot::Failure(f);
        }
    }
    Slot::none()
}

fn failed<T: Clone + 'static>(state: &RaceState<T>, index: usize, failure: Failure) -> Slot {
    let mut failures = state.failures.borrow_mut();
    failures.push((index, failure));
    if failures.len() == state.inputs.len() {
        failures.sort_by_key(|(i, _)| *i);
        let group = FailureGroup {
            failures: failures.iter().map(|(_, f)| f.clone()).collect(),
        };
        drop(failures);
        if let Err(f) = chain::fire(state.result.inner(), Slot::Failure(Failure::new(group))) {
            return Slot::Failure(f);
        }
    }
    Slot::none()
}
