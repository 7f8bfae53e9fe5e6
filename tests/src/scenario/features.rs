//! The runner's feature modules: ops beyond the core (logging contexts,
//! Synapse's helpers, the clock), each in its own `run_*.rs` file. This file
//! only dispatches to them and holds their state.

use super::ast::{Op, Stmt};
use super::run::{Env, Runner};

/// State kept by the feature modules.
#[derive(Default)]
pub(super) struct Features {}

/// True when a feature module runs `op`.
pub(super) fn supports(op: &Op) -> bool {
    let _ = op;
    false
}

/// Runs `stmt` if a feature module handles it; false otherwise.
pub(super) fn run_op(runner: &Runner, stmt: &Stmt) -> bool {
    let _ = (runner, stmt);
    false
}

/// The name of the logging context current now (`sentinel` when none).
pub(super) fn context_name(env: &Env) -> String {
    let _ = env;
    "sentinel".into()
}
