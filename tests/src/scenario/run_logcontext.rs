//! Logging contexts in scenarios: `enter N`, `exit N`, `current`,
//! `yieldable Y X`, `background R C` and `bgprocess R C`, each the one call
//! of `twisted_compat` a user would write; the current context that `@C`
//! and `ctx` print; and the `! logcontext:` lines, printed when the
//! library's misuse hook reports a check that fired.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use twisted_compat::{
    LogcontextError, LogcontextErrorHook, LoggingContext, SENTINEL_CONTEXT,
    clear_background_process_counts, current_context, make_deferred_yieldable,
    run_as_background_process, run_in_background, set_current_context, set_logcontext_error_hook,
};

use super::ast::{Op, Stmt};
use super::run::{D, Runner, frame};

/// The server name the scenarios' contexts belong to (the Python driver's).
const SERVER_NAME: &str = "conformance.test";

/// The contexts a scenario entered, and the hook that was installed before
/// the run (put back when the run's state is dropped).
#[derive(Default)]
pub(super) struct LogcontextState {
    /// The context most recently entered under each name.
    contexts: RefCell<HashMap<String, LoggingContext>>,
    previous_hook: RefCell<Option<LogcontextErrorHook>>,
}

impl Drop for LogcontextState {
    fn drop(&mut self) {
        set_logcontext_error_hook(self.previous_hook.take());
        set_current_context(SENTINEL_CONTEXT);
    }
}

/// Before a run: the thread's logcontext globals as a fresh process has
/// them, and the misuse reports routed into this run's trace.
pub(super) fn begin(runner: &Runner) {
    set_current_context(SENTINEL_CONTEXT);
    clear_background_process_counts();
    let weak = runner.weak();
    let hook: LogcontextErrorHook = Rc::new(move |e: &LogcontextError| {
        let Some(env) = weak.upgrade() else { return };
        if let Some(line) = trace_line(e) {
            env.line(format_args!("! logcontext: {line}"));
        }
    });
    let previous = set_logcontext_error_hook(Some(hook));
    *runner.env.features.logcontext.previous_hook.borrow_mut() = previous;
}

/// The trace line of a misuse report; `None` for the reports the trace
/// leaves out (as the Python driver does).
fn trace_line(e: &LogcontextError) -> Option<String> {
    match e {
        LogcontextError::RestartFinished { context } => Some(format!("restart-finished {context}")),
        LogcontextError::UnexpectedContext { expected, found } => {
            Some(format!("expected {expected} found {found}"))
        }
        LogcontextError::ContextNotMaintained { calling, found } => {
            Some(format!("expected {calling} found {found}"))
        }
        _ => None,
    }
}

/// The name of the current logging context.
pub(super) fn context_name() -> String {
    current_context().to_string()
}

/// True for the ops this module runs.
pub(super) fn supports(op: &Op) -> bool {
    matches!(
        op,
        Op::Enter(_)
            | Op::Exit(_)
            | Op::Current
            | Op::Yieldable(..)
            | Op::Background(..)
            | Op::BgProcess(..)
    )
}

/// Runs `stmt` if it is one of this module's ops; false otherwise.
pub(super) fn run_op(runner: &Runner, stmt: &Stmt) -> bool {
    let env = &runner.env;
    let state = &env.features.logcontext;
    match &stmt.op {
        Op::Enter(n) => {
            // LoggingContext(name=n, server_name=...).__enter__()
            let context = LoggingContext::new(n.clone(), SERVER_NAME);
            context.enter();
            state.contexts.borrow_mut().insert(n.clone(), context);
        }
        Op::Exit(n) => {
            // its __exit__(None, None, None)
            let context = state.contexts.borrow().get(n).cloned();
            match context {
                Some(context) => context.exit(),
                None => env.invalidate(format!("`exit {n}` with no earlier `enter {n}`")),
            }
        }
        Op::Current => {
            let name = context_name();
            env.line(format_args!("ctx {name}"));
        }
        Op::Yieldable(y, x) => env.bind(y, make_deferred_yieldable(runner.get(x))),
        Op::Background(r, c) => {
            // R = run_in_background(C)
            let body = env.coroutines.borrow().get(c).cloned().unwrap_or_default();
            let (weak, name) = (runner.weak(), r.clone());
            let d: D = run_in_background(move || frame(weak, name, body));
            env.bind(r, d);
        }
        Op::BgProcess(r, c) => {
            // R = run_as_background_process(C's name, server_name, C)
            let body = env.coroutines.borrow().get(c).cloned().unwrap_or_default();
            let (weak, name) = (runner.weak(), r.clone());
            let d: D = run_as_background_process(c, SERVER_NAME, move || frame(weak, name, body));
            env.bind(r, d);
        }
        _ => return false,
    }
    true
}
