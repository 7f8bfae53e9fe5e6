//! Synapse's cancellation helpers in scenarios: `observable O [consume] X`,
//! `observe Y O`, `stop_cancellation Y X` and `delay_cancellation Y X`, each
//! the one call of `twisted_compat` a user would write.

use std::cell::RefCell;
use std::collections::HashMap;

use twisted_compat::{ObservableDeferred, delay_cancellation, stop_cancellation};
use twisted_deferred::AnyValue;

use super::ast::{Op, Stmt};
use super::run::Runner;

/// The observables a scenario has named (they are not Deferreds, so they
/// live here rather than among the runner's names).
#[derive(Default)]
pub(super) struct SynapseState {
    observables: RefCell<HashMap<String, ObservableDeferred<AnyValue>>>,
}

/// True for the ops this module runs.
pub(super) fn supports(op: &Op) -> bool {
    matches!(
        op,
        Op::Observable { .. }
            | Op::Observe(..)
            | Op::StopCancellation(..)
            | Op::DelayCancellation(..)
    )
}

/// Runs `stmt` if it is one of this module's ops; false otherwise.
pub(super) fn run_op(runner: &Runner, stmt: &Stmt) -> bool {
    let env = &runner.env;
    let state = &env.features.synapse;
    match &stmt.op {
        Op::Observable {
            name,
            consume,
            source,
        } => {
            // O = ObservableDeferred(X, consumeErrors=consume)
            let od = ObservableDeferred::new(runner.get(source), *consume);
            state.observables.borrow_mut().insert(name.clone(), od);
        }
        Op::Observe(y, o) => {
            // Y = O.observe() (the parser checked that O is an observable)
            let od = state.observables.borrow().get(o).cloned();
            match od {
                Some(od) => env.bind(y, od.observe()),
                None => env.invalidate(format!("`{o}` is not an observable")),
            }
        }
        Op::StopCancellation(y, x) => env.bind(y, stop_cancellation(&runner.get(x))),
        Op::DelayCancellation(y, x) => env.bind(y, delay_cancellation(&runner.get(x))),
        _ => return false,
    }
    true
}
