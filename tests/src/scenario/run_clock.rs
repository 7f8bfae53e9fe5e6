//! Time in scenarios: `call_later T EFFECT…`, `advance T` (Twisted's
//! `task.Clock`), `add_timeout X T` (`Deferred.addTimeout`) and
//! `timeout Y X T` (Synapse's `timeout_deferred`, whose `Clock` wraps the same
//! `task.Clock`), each the one library call a user would write.

use std::rc::Rc;

use twisted_compat::{Clock as SynapseClock, timeout_deferred};
use twisted_reactor::Clock;

use super::ast::{Op, Stmt};
use super::run::{Runner, run_effects};

/// The scenario's clock, shared by every time op.
pub(super) struct ClockState {
    clock: Clock,
    synapse: SynapseClock,
}

impl Default for ClockState {
    fn default() -> Self {
        let clock = Clock::new();
        let synapse = SynapseClock::new(clock.clone(), "test");
        ClockState { clock, synapse }
    }
}

/// True for the ops this module runs.
pub(super) fn supports(op: &Op) -> bool {
    matches!(
        op,
        Op::CallLater(..) | Op::Advance(_) | Op::AddTimeout(..) | Op::Timeout(..)
    )
}

/// Runs `stmt` if it is one of this module's ops; false otherwise.
pub(super) fn run_op(runner: &Runner, stmt: &Stmt) -> bool {
    let env = &runner.env;
    let state = &env.features.clock;
    match &stmt.op {
        Op::CallLater(t, effects) => {
            // clock.callLater(T, f): f runs the effects; if one raises, the
            // advance that runs f raises it.
            let weak = Rc::downgrade(env);
            let effects = effects.clone();
            state.clock.call_later(t.0, move || match weak.upgrade() {
                Some(env) => run_effects(&env, &effects),
                None => Ok(()),
            });
        }
        Op::Advance(t) => runner.raised(stmt.line, state.clock.advance(t.0)),
        Op::AddTimeout(x, t) => {
            runner.get(x).add_timeout(t.0, &state.clock);
        }
        Op::Timeout(y, x, t) => {
            let d = timeout_deferred(runner.get(x), t.0, &state.synapse);
            env.bind(y, d);
        }
        _ => return false,
    }
    true
}
