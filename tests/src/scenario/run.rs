//! Running a parsed scenario through the library's public API and printing
//! its trace.
//!
//! Each op is the call a user would write (`Deferred::new`,
//! `add_callback`, `cancel`, …) on `Deferred<AnyValue>`s; the runner keeps no
//! model of Twisted of its own, only the bookkeeping the trace needs (body
//! numbers, user pause counts, names).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::{Rc, Weak};

use std::future::Future;
use std::pin::Pin;

use twisted_deferred::{
    AnyValue, Deferred, DeferredList, DeferredListFlags, Failure, Outcome, State,
    capture_unhandled_errors, ensure_deferred, fail, gather_results, race, succeed,
    tracking::Tracker,
};

use super::ast::*;
use super::values::{format_failure, format_value, literal, make_failure, matches};

/// Why a scenario produced no trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The scenario uses an op (or effect) this runner does not support yet.
    Unsupported {
        /// The op's keyword.
        op: &'static str,
        /// Its source line.
        line: usize,
    },
    /// The scenario turned out invalid while running (FORMAT.md, "Invalid
    /// scenarios"), e.g. an effect naming an unbound Deferred or an unpause
    /// below zero.
    Invalid {
        /// The top-level op's source line.
        line: usize,
        /// What went wrong.
        message: String,
    },
    /// The run did more work than its [`Limits`] allow (only with
    /// [`run_with_limits`]): the top-level op during which the budget ran
    /// out, and the budget.
    LimitExceeded {
        /// The top-level op's source line.
        line: usize,
        /// The step budget that was exhausted.
        max_steps: u64,
    },
}

/// Bounds on the work one run may do, so that no scenario text can make the
/// runner spin for long: coroutines calling coroutines twice each, for
/// instance, do exponential work in as many lines.
///
/// A *step* is one callback or canceller body run, one effect, one
/// coroutine line or call. Once the budget is spent, every further body,
/// effect and coroutine line fails at once without doing anything, so the
/// op in progress ends promptly, and the run returns
/// [`RunError::LimitExceeded`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The most steps a run may take; `None` for no bound (what [`run`]
    /// uses).
    pub max_steps: Option<u64>,
}

impl Limits {
    /// No bound: what [`run`] and [`run_recorded`] use.
    pub const UNLIMITED: Limits = Limits { max_steps: None };

    /// At most `max_steps` steps.
    pub fn steps(max_steps: u64) -> Limits {
        Limits {
            max_steps: Some(max_steps),
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Unsupported { op, line } => {
                write!(f, "line {line}: `{op}` is not supported by this runner yet")
            }
            RunError::Invalid { line, message } => {
                write!(f, "line {line}: invalid scenario: {message}")
            }
            RunError::LimitExceeded { line, max_steps } => {
                write!(
                    f,
                    "line {line}: the run exceeded its limit of {max_steps} steps"
                )
            }
        }
    }
}

impl std::error::Error for RunError {}

pub(super) type D = Deferred<AnyValue>;

/// The runner's state, shared (weakly) with the callbacks it installs.
/// Feature modules (`run_*.rs`) keep their own state in [`Features`].
#[derive(Default)]
pub(super) struct Env {
    out: RefCell<String>,
    pub(super) names: RefCell<HashMap<String, D>>,
    order: RefCell<Vec<String>>,
    bodies: RefCell<HashMap<String, u32>>,
    pauses: RefCell<HashMap<usize, i64>>,
    first_name: RefCell<HashMap<usize, String>>,
    invalid: RefCell<Option<String>>,
    pub(super) coroutines: RefCell<HashMap<String, Rc<Vec<CoStmt>>>>,
    /// State of the feature modules.
    #[allow(dead_code)] // read once feature modules keep state
    pub(super) features: super::features::Features,
    /// What is recorded for pictures ([`super::record`]), when asked for.
    recorder: RefCell<Option<super::record::Recorder>>,
    /// Steps taken so far, and the budget ([`Limits`]).
    steps: std::cell::Cell<u64>,
    max_steps: std::cell::Cell<Option<u64>>,
    /// The budget ran out.
    over_budget: std::cell::Cell<bool>,
}

impl Env {
    pub(super) fn line(&self, s: std::fmt::Arguments<'_>) {
        self.record_states();
        if let Ok(mut recorder) = self.recorder.try_borrow_mut()
            && let Some(recorder) = recorder.as_mut()
        {
            recorder.lines += 1;
        }
        let mut out = self.out.borrow_mut();
        let _ = out.write_fmt(s);
        out.push('\n');
    }

    pub(super) fn bind(&self, name: &str, d: D) {
        let canonical = self
            .first_name
            .borrow_mut()
            .entry(d.id())
            .or_insert_with(|| name.to_owned())
            .clone();
        self.mark(super::record::Mark::Bind {
            name: name.to_owned(),
            canonical,
        });
        self.names.borrow_mut().insert(name.to_owned(), d);
        self.order.borrow_mut().push(name.to_owned());
    }

    /// The Deferred bound to `name`, or a failure that stops the body (and
    /// marks the scenario invalid) if there is none yet.
    pub(super) fn get(&self, name: &str) -> Result<D, Failure> {
        if let Some(d) = self.names.borrow().get(name) {
            return Ok(d.clone());
        }
        self.invalidate(format!("`{name}` is used before it is bound"));
        Err(Failure::msg("unbound name"))
    }

    /// Counts one step of work ([`Limits`]); fails once the budget is
    /// spent, and from then on.
    pub(super) fn step(&self) -> Result<(), Failure> {
        if self.over_budget.get() {
            return Err(Failure::msg("step limit exceeded"));
        }
        let steps = self.steps.get() + 1;
        self.steps.set(steps);
        if self.max_steps.get().is_some_and(|max| steps > max) {
            self.over_budget.set(true);
            return Err(Failure::msg("step limit exceeded"));
        }
        Ok(())
    }

    pub(super) fn invalidate(&self, message: String) {
        self.invalid.borrow_mut().get_or_insert(message);
    }

    pub(super) fn next_body(&self, name: &str) -> u32 {
        let mut bodies = self.bodies.borrow_mut();
        let n = bodies.entry(name.to_owned()).or_insert(0);
        *n += 1;
        *n
    }

    pub(super) fn add_pause(&self, d: &D, delta: i64) {
        let mut pauses = self.pauses.borrow_mut();
        let n = pauses.entry(d.id()).or_insert(0);
        *n += delta;
        if *n < 0 {
            drop(pauses);
            self.invalidate("unpause without a matching pause".into());
        }
    }

    /// The logging context current now, as the trace names it.
    pub(super) fn context(&self) -> String {
        super::features::context_name(self)
    }

    /// Records `mark` if this run is recorded.
    pub(super) fn mark(&self, mark: super::record::Mark) {
        if let Ok(mut recorder) = self.recorder.try_borrow_mut()
            && let Some(recorder) = recorder.as_mut()
        {
            recorder.mark(mark);
        }
    }

    /// If this run is recorded, records every named Deferred whose state
    /// changed since it was last recorded.
    fn record_states(&self) {
        use super::record::{Mark, Snap};
        let Ok(mut recorder) = self.recorder.try_borrow_mut() else {
            return;
        };
        let Some(recorder) = recorder.as_mut() else {
            return;
        };
        let (Ok(names), Ok(first_name), Ok(order)) = (
            self.names.try_borrow(),
            self.first_name.try_borrow(),
            self.order.try_borrow(),
        ) else {
            return;
        };
        // In the order the names were bound: what a Deferred gets its result
        // from is usually bound before it.
        let mut seen = std::collections::HashSet::new();
        for d in order.iter().filter_map(|name| names.get(name)) {
            let id = d.id();
            if !seen.insert(id) {
                continue;
            }
            let Some(name) = first_name.get(&id) else {
                continue;
            };
            let state = match d.result() {
                State::Pending => Snap::Pending,
                State::Waiting(w) => Snap::Waiting(first_name.get(&w.id()).cloned()),
                _ if d.paused() > 0 => Snap::Held,
                State::Value(v) => Snap::Value(format_value(&v)),
                State::Failure(f) => Snap::Failure(format_failure(&f)),
                _ => Snap::InUse,
            };
            if recorder.last.get(&id) != Some(&state) {
                recorder.last.insert(id, state.clone());
                recorder.mark(Mark::State {
                    name: name.clone(),
                    state,
                });
            }
        }
    }
}

/// What a scenario needs that this runner lacks, if anything.
fn unsupported(s: &Scenario) -> Option<RunError> {
    for stmt in &s.stmts {
        let line = stmt.line;
        if super::features::supports(&stmt.op) {
            continue;
        }
        match &stmt.op {
            Op::New { .. }
            | Op::Succeed(..)
            | Op::Fail(..)
            | Op::Callback(..)
            | Op::Errback(..)
            | Op::Cancel(_)
            | Op::Pause(_)
            | Op::Unpause(_)
            | Op::Chain(..)
            | Op::Cb(..)
            | Op::Eb(..)
            | Op::Both(..)
            | Op::Cbs(..)
            | Op::Async(..)
            | Op::Start(..)
            | Op::Gather { .. }
            | Op::DList { .. }
            | Op::Race(..) => {}
            other => {
                return Some(RunError::Unsupported {
                    op: other.keyword(),
                    line,
                });
            }
        }
    }
    None
}

/// Runs a scenario and returns its trace.
pub fn run(s: &Scenario) -> Result<String, RunError> {
    run_with_limits(s, Limits::UNLIMITED)
}

/// Runs a scenario within `limits` and returns its trace (the same trace
/// [`run`] returns, when the run stays within them).
pub fn run_with_limits(s: &Scenario, limits: Limits) -> Result<String, RunError> {
    run_with(s, false, limits).map(|(trace, _)| trace)
}

/// Runs a scenario and returns its trace, with what was recorded for
/// pictures while it ran ([`super::record`]). The trace is the one [`run`]
/// returns.
pub fn run_recorded(s: &Scenario) -> Result<(String, super::record::Recording), RunError> {
    run_recorded_with_limits(s, Limits::UNLIMITED)
}

/// [`run_recorded`] within `limits`.
pub fn run_recorded_with_limits(
    s: &Scenario,
    limits: Limits,
) -> Result<(String, super::record::Recording), RunError> {
    run_with(s, true, limits).map(|(trace, recording)| (trace, recording.unwrap_or_default()))
}

fn run_with(
    s: &Scenario,
    record: bool,
    limits: Limits,
) -> Result<(String, Option<super::record::Recording>), RunError> {
    use super::record::{Mark, Recorder};
    if let Some(e) = unsupported(s) {
        return Err(e);
    }
    let (result, unhandled) = capture_unhandled_errors(|| {
        let tracker = Tracker::start();
        let env = Rc::new(Env::default());
        env.max_steps.set(limits.max_steps);
        if record {
            *env.recorder.borrow_mut() = Some(Recorder::default());
        }
        let runner = Runner { env: env.clone() };
        super::features::begin(&runner);
        let mut failed = None;
        for stmt in &s.stmts {
            env.record_states();
            env.mark(Mark::Op(stmt.clone()));
            runner.op(stmt);
            env.record_states();
            env.mark(Mark::OpEnd);
            if env.over_budget.get() {
                failed = Some(RunError::LimitExceeded {
                    line: stmt.line,
                    max_steps: limits.max_steps.unwrap_or(u64::MAX),
                });
                break;
            }
            if let Some(message) = env.invalid.borrow_mut().take() {
                failed = Some(RunError::Invalid {
                    line: stmt.line,
                    message,
                });
                break;
            }
        }
        let output = match failed {
            Some(e) => Err(e),
            None => {
                runner.final_state();
                let recording = env.recorder.borrow_mut().take().map(|r| r.recording);
                Ok((env.out.take(), recording))
            }
        };
        // Drop every reference; Deferreds left holding an unhandled failure
        // report it now. (A run that failed is torn down the same way, so
        // that it leaves nothing alive behind either.)
        drop(runner);
        let names = std::mem::take(&mut *env.names.borrow_mut());
        drop(names);
        drop(env);
        // Python's final gc.collect(): whatever is still alive now is only
        // kept alive by cycles among garbage.
        tracker.collect();
        output
    });
    let (mut trace, recording) = result?;
    let mut lines: Vec<String> = unhandled
        .iter()
        .map(|f| format!("~ unhandled {}", format_failure(f)))
        .collect();
    lines.sort();
    for l in lines {
        trace.push_str(&l);
        trace.push('\n');
    }
    Ok((trace, recording))
}

pub(super) struct Runner {
    pub(super) env: Rc<Env>,
}

impl Runner {
    pub(super) fn weak(&self) -> Weak<Env> {
        Rc::downgrade(&self.env)
    }

    pub(super) fn get(&self, name: &str) -> D {
        // The parser checked that top-level names are bound.
        match self.env.names.borrow().get(name) {
            Some(d) => d.clone(),
            None => D::new(),
        }
    }

    pub(super) fn raised(&self, line: usize, r: Result<(), Failure>) {
        if let Err(f) = r {
            self.env
                .line(format_args!("! line {line}: {}", format_failure(&f)));
        }
    }

    fn op(&self, stmt: &Stmt) {
        let env = &self.env;
        let line = stmt.line;
        match &stmt.op {
            Op::New { name, canceller } => {
                let d = match canceller {
                    None => D::new(),
                    Some(effects) => {
                        let weak = self.weak();
                        let (name, effects) = (name.clone(), effects.clone());
                        D::with_canceller(move |_d: &D| -> Result<(), Failure> {
                            let Some(env) = weak.upgrade() else {
                                return Ok(());
                            };
                            env.step()?;
                            env.line(format_args!("{name} canceller @{}", env.context()));
                            env.mark(super::record::Mark::ActorStart(name.clone()));
                            let r = run_effects(&env, &effects);
                            env.mark(super::record::Mark::ActorEnd);
                            r
                        })
                    }
                };
                env.bind(name, d);
            }
            Op::Succeed(name, v) => env.bind(name, succeed(literal(v))),
            Op::Fail(name, e) => env.bind(name, fail(make_failure(e))),
            Op::Callback(name, v) => self.raised(line, self.get(name).callback(literal(v))),
            Op::Errback(name, e) => self.raised(line, self.get(name).errback(make_failure(e))),
            Op::Cancel(name) => self.raised(line, self.get(name).cancel()),
            Op::Pause(name) => {
                let d = self.get(name);
                env.add_pause(&d, 1);
                d.pause();
            }
            Op::Unpause(name) => {
                let d = self.get(name);
                env.add_pause(&d, -1);
                d.unpause();
            }
            Op::Cb(name, body) => add_logged(
                &self.get(name),
                name,
                Rc::new(body.clone()),
                Half::Callback,
                self.weak(),
            ),
            Op::Eb(name, body) => add_logged(
                &self.get(name),
                name,
                Rc::new(body.clone()),
                Half::Errback,
                self.weak(),
            ),
            Op::Both(name, body) => add_logged(
                &self.get(name),
                name,
                Rc::new(body.clone()),
                Half::Both,
                self.weak(),
            ),
            Op::Cbs(name, cb, eb, effects) => {
                let d = self.get(name);
                let n = env.next_body(name);
                let effects = Rc::new(effects.clone());
                let (w1, w2) = (self.weak(), self.weak());
                let (n1, n2) = (name.clone(), name.clone());
                let (e1, e2) = (effects.clone(), effects);
                let (cb, eb) = (cb.clone(), eb.clone());
                d.add_callbacks(
                    move |v: AnyValue| run_body(&w1, &n1, n, Ok(v), &cb, &e1),
                    move |f: Failure| run_body(&w2, &n2, n, Err(f), &eb, &e2),
                );
            }
            Op::Chain(a, b) => {
                self.get(a).chain_deferred(&self.get(b));
            }
            Op::Gather {
                name,
                consume,
                inputs,
            } => {
                let ds: Vec<D> = inputs.iter().map(|x| self.get(x)).collect();
                env.bind(name, gather_results(ds, *consume).cast());
            }
            Op::DList {
                name,
                foc,
                foe,
                consume,
                inputs,
            } => {
                let ds: Vec<D> = inputs.iter().map(|x| self.get(x)).collect();
                let flags = DeferredListFlags {
                    fire_on_one_callback: *foc,
                    fire_on_one_errback: *foe,
                    consume_errors: *consume,
                };
                env.bind(
                    name,
                    DeferredList::with_flags(ds, flags).into_deferred().cast(),
                );
            }
            Op::Race(name, inputs) => {
                let ds: Vec<D> = inputs.iter().map(|x| self.get(x)).collect();
                env.bind(name, race(ds).cast());
            }
            Op::Async(name, body) => {
                env.coroutines
                    .borrow_mut()
                    .insert(name.clone(), Rc::new(body.clone()));
            }
            Op::Start(r, c) => {
                let body = env.coroutines.borrow().get(c).cloned().unwrap_or_default();
                // `R = Deferred.fromCoroutine(C())`: bound once it returns.
                let d: D = ensure_deferred(frame(self.weak(), r.clone(), body));
                env.bind(r, d);
            }
            other => {
                if !super::features::run_op(self, stmt) {
                    // `unsupported` rejected everything else before the run.
                    env.invalidate(format!("`{}` is not supported", other.keyword()));
                }
            }
        }
    }

    fn final_state(&self) {
        let env = &self.env;
        let order = env.order.borrow().clone();
        for name in order {
            let d = self.get(&name);
            let state = match d.result() {
                State::Pending => "pending".to_owned(),
                State::Waiting(w) => {
                    let other = env.first_name.borrow().get(&w.id()).cloned();
                    format!("waiting {}", other.as_deref().unwrap_or("?"))
                }
                State::Value(v) => format!("result {}", format_value(&v)),
                State::Failure(f) => format!("result {}", format_failure(&f)),
                State::InUse => "result <in use>".to_owned(),
                State::OtherType(t) => format!("result <{t}>"),
                _ => "result <unknown>".to_owned(),
            };
            let paused = env.pauses.borrow().get(&d.id()).copied().unwrap_or(0);
            if paused > 0 {
                env.line(format_args!("= {name} {state} paused {paused}"));
            } else {
                env.line(format_args!("= {name} {state}"));
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Half {
    Callback,
    Errback,
    Both,
}

/// `cb` / `eb` / `both X BODY`: adds a body that logs its call.
fn add_logged(d: &D, name: &str, body: Rc<Body>, half: Half, weak: Weak<Env>) {
    let Some(env) = weak.upgrade() else { return };
    let n = env.next_body(name);
    let name = name.to_owned();
    match half {
        Half::Callback => {
            d.add_callback(move |v: AnyValue| {
                run_body(&weak, &name, n, Ok(v), &body.result, &body.effects)
            });
        }
        Half::Errback => {
            d.add_errback(move |f: Failure| {
                run_body(&weak, &name, n, Err(f), &body.result, &body.effects)
            });
        }
        Half::Both => {
            d.add_both(move |r: Result<AnyValue, Failure>| {
                run_body(&weak, &name, n, r, &body.result, &body.effects)
            });
        }
    }
}

/// Runs one body: log the call, run the effects, compute the result.
fn run_body(
    weak: &Weak<Env>,
    name: &str,
    n: u32,
    input: Result<AnyValue, Failure>,
    result: &ResultTok,
    effects: &[Effect],
) -> Outcome<AnyValue> {
    let Some(env) = weak.upgrade() else {
        return Outcome::Failure(Failure::msg("scenario is over"));
    };
    if let Err(f) = env.step() {
        return Outcome::Failure(f);
    }
    match &input {
        Ok(v) => env.line(format_args!(
            "{name}.{n} cb <- {} @{}",
            format_value(v),
            env.context()
        )),
        Err(f) => env.line(format_args!(
            "{name}.{n} eb <- {} @{}",
            format_failure(f),
            env.context()
        )),
    }
    env.mark(super::record::Mark::ActorStart(name.to_owned()));
    let ran = run_effects(&env, effects);
    env.mark(super::record::Mark::ActorEnd);
    if let Err(f) = ran {
        return Outcome::Failure(f);
    }
    compute(&env, result, input)
}

/// The RESULT token applied to the body's input.
fn compute(env: &Env, result: &ResultTok, input: Result<AnyValue, Failure>) -> Outcome<AnyValue> {
    use super::values::{TypeError, Value};
    match result {
        ResultTok::Pass => input.into(),
        ResultTok::Add(k) => match input.ok().as_ref().and_then(|v| v.downcast_ref::<Value>()) {
            Some(Value::Int(i)) => match i.checked_add(*k) {
                Some(sum) => Outcome::Value(AnyValue::new(Value::Int(sum))),
                None => Outcome::Failure(Failure::msg("integer overflow")),
            },
            _ => Outcome::Failure(Failure::new(TypeError)),
        },
        ResultTok::Const(v) => Outcome::Value(literal(v)),
        ResultTok::Raise(e) | ResultTok::Fail(e) => Outcome::Failure(make_failure(e)),
        ResultTok::Return(y) => match env.get(y) {
            Ok(d) => Outcome::Deferred(d),
            Err(f) => Outcome::Failure(f),
        },
        ResultTok::Trap(kind, v) => match input {
            Err(f) if matches(&f, *kind) => Outcome::Value(literal(v)),
            other => other.into(),
        },
    }
}

/// Runs effects in order; the first that raises stops the rest.
pub(super) fn run_effects(env: &Rc<Env>, effects: &[Effect]) -> Result<(), Failure> {
    for e in effects {
        env.step()?;
        env.mark(super::record::Mark::EffectStart(e.clone()));
        let ran = run_effect(env, e);
        env.mark(super::record::Mark::EffectEnd);
        ran?;
    }
    Ok(())
}

/// Runs one effect.
fn run_effect(env: &Rc<Env>, e: &Effect) -> Result<(), Failure> {
    match e {
        Effect::Callback(y, v) => env.get(y)?.callback(literal(v))?,
        Effect::Errback(y, err) => env.get(y)?.errback(make_failure(err))?,
        Effect::Cancel(y) => env.get(y)?.cancel()?,
        Effect::Pause(y) => {
            let d = env.get(y)?;
            env.add_pause(&d, 1);
            d.pause();
        }
        Effect::Unpause(y) => {
            let d = env.get(y)?;
            env.add_pause(&d, -1);
            d.unpause();
        }
        Effect::Cb(y, result) => {
            let d = env.get(y)?;
            let body = Rc::new(Body {
                result: result.clone(),
                effects: Vec::new(),
            });
            add_logged(&d, y, body, Half::Callback, Rc::downgrade(env));
        }
        Effect::Ctx => env.line(format_args!("ctx {}", env.context())),
    }
    Ok(())
}

pub(super) type Frame = Pin<Box<dyn Future<Output = Result<AnyValue, Failure>>>>;

/// One coroutine frame (an instance, or a nested `call`): runs the body
/// lines, logging each await, catch and call, and its own end.
pub(super) fn frame(weak: Weak<Env>, name: String, body: Rc<Vec<CoStmt>>) -> Frame {
    Box::pin(async move {
        let result = frame_body(&weak, &name, &body).await;
        if let Some(env) = weak.upgrade() {
            match &result {
                Ok(v) => env.line(format_args!("{name}: returned {}", format_value(v))),
                Err(f) => env.line(format_args!("{name}: raised {}", format_failure(f))),
            }
        }
        result
    })
}

async fn frame_body(weak: &Weak<Env>, name: &str, body: &[CoStmt]) -> Result<AnyValue, Failure> {
    let mut last = AnyValue::none();
    for stmt in body {
        let Some(env) = weak.upgrade() else {
            return Err(Failure::msg("scenario is over"));
        };
        env.step()?;
        match &stmt.stmt {
            CoLine::Await {
                name: x,
                catch,
                reraise,
            } => {
                let d = env.get(x)?;
                let target = env.first_name.borrow().get(&d.id()).cloned();
                env.mark(super::record::Mark::Await {
                    frame: name.to_owned(),
                    target: target.unwrap_or_else(|| x.clone()),
                });
                drop(env);
                let outcome = d.await;
                let Some(env) = weak.upgrade() else {
                    return Err(Failure::msg("scenario is over"));
                };
                match outcome {
                    Ok(v) => {
                        env.line(format_args!("{name}: await {x} -> {}", format_value(&v)));
                        last = v;
                    }
                    Err(f) => {
                        env.line(format_args!(
                            "{name}: await {x} raised {}",
                            format_failure(&f)
                        ));
                        match catch {
                            Some(kind) if matches(&f, *kind) => {
                                env.line(format_args!("{name}: caught {}", format_failure(&f)));
                                if *reraise {
                                    return Err(f);
                                }
                            }
                            _ => return Err(f),
                        }
                    }
                }
            }
            CoLine::Call(c2) => {
                let body = env.coroutines.borrow().get(c2).cloned().unwrap_or_default();
                drop(env);
                let v = frame(weak.clone(), format!("{name}>{c2}"), body).await?;
                if let Some(env) = weak.upgrade() {
                    env.line(format_args!("{name}: call {c2} -> {}", format_value(&v)));
                }
                last = v;
            }
            CoLine::Effects(effects) => {
                env.mark(super::record::Mark::ActorStart(name.to_owned()));
                let ran = run_effects(&env, effects);
                env.mark(super::record::Mark::ActorEnd);
                ran?
            }
            CoLine::Ctx => {
                env.mark(super::record::Mark::ActorStart(name.to_owned()));
                env.line(format_args!("ctx {}", env.context()));
                env.mark(super::record::Mark::ActorEnd);
            }
            CoLine::Return(Some(v)) => return Ok(literal(v)),
            CoLine::Return(None) => return Ok(last),
            CoLine::Raise(e) => return Err(make_failure(e)),
        }
    }
    Ok(AnyValue::none())
}
