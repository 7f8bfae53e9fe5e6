//! The runner's feature modules: ops beyond the core (logging contexts,
//! Synapse's helpers, the clock), each in its own `run_*.rs` file. This file
//! only dispatches to them and holds their state.

use super::ast::{Op, Stmt};
use super::run::{Env, Runner};

/// State kept by the feature modules.
#[derive(Default)]
pub(super) struct Features {
    /// Synapse's helpers (`run_synapse.rs`): the named observables.
    pub(super) synapse: super::run_synapse::SynapseState,
    /// Logging contexts (`run_logcontext.rs`): the entered contexts.
    pub(super) logcontext: super::run_logcontext::LogcontextState,
    /// Time (`run_clock.rs`): the scenario's clock.
    pub(super) clock: super::run_clock::ClockState,
}

/// Called once per run, before its first op: feature modules reset the
/// thread's global state there.
pub(super) fn begin(runner: &Runner) {
    super::run_logcontext::begin(runner);
}

/// True when a feature module runs `op`.
pub(super) fn supports(op: &Op) -> bool {
    super::run_synapse::supports(op)
        || super::run_logcontext::supports(op)
        || super::run_clock::supports(op)
}

/// Runs `stmt` if a feature module handles it; false otherwise.
pub(super) fn run_op(runner: &Runner, stmt: &Stmt) -> bool {
    super::run_synapse::run_op(runner, stmt)
        || super::run_logcontext::run_op(runner, stmt)
        || super::run_clock::run_op(runner, stmt)
}

/// The name of the logging context current now (`sentinel` when none).
pub(super) fn context_name(env: &Env) -> String {
    let _ = env;
    super::run_logcontext::context_name()
}
