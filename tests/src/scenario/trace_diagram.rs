//! Pictures of a scenario run: a sequence diagram of its Deferreds and
//! coroutines, the callbacks that ran, the `cancel()` calls going *down*
//! from a waiting Deferred to the one it waits on, and the results and
//! failures coming back *up*, as Mermaid text ([`Diagram::mermaid`]) and as
//! a self-contained SVG file ([`Diagram::svg`]).
//!
//! [`Diagram::from_run`] builds it from the trace and from what the runner
//! recorded while the scenario ran ([`super::record`]): the trace shows
//! callbacks, cancellers, awaits and coroutine ends; the recording adds the
//! ops and effects (who called `callback`/`cancel` on what), what each
//! coroutine awaits, and when each Deferred fired. Cancels the library
//! passes on by itself (a coroutine's Deferred to the Deferred it awaits, a
//! Deferred to the one it waits on, a `gatherResults` to its inputs) are
//! drawn when they visibly reach a Deferred: its canceller runs, or it fires
//! while the cancel is in progress.
//!
//! Lanes: `caller` (the scenario's top level: the reactor, the HTTP layer,
//! the test), then one lane per Deferred and per coroutine, ordered so that
//! a Deferred waiting on another is to its left: a cancel goes left to right
//! (down), a result or a failure right to left (up).
//!
//! ```
//! use integration_tests::scenario::trace_diagram::diagram_text;
//!
//! let (trace, diagram) = diagram_text(
//!     "new d canceller\nasync h\n  await d\nend\nstart r h\ncancel r\n",
//! )
//! .unwrap();
//! assert!(trace.starts_with("d canceller @sentinel\n"));
//! let mermaid = diagram.mermaid();
//! assert!(mermaid.contains("caller-xd_r: cancel()"));   // down from the caller
//! assert!(mermaid.contains("d_r-xd_d: cancel()"));      // passed on to d
//! assert!(mermaid.contains("d_d--xd_r: F(CancelledError)")); // up again
//! assert!(diagram.svg("example").starts_with("<svg"));
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::ast::{Effect, Op, Scenario};
use super::record::{Mark, Recording, Snap};

/// What a lane stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneKind {
    /// The scenario's top level.
    Caller,
    /// A Deferred.
    Deferred,
    /// A coroutine (and the Deferred `ensureDeferred` gave for it).
    Coroutine,
}

/// A participant of the diagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    /// Its identifier in Mermaid text (`caller`, `d_<name>`).
    pub id: String,
    /// What its header shows.
    pub label: String,
    /// What it stands for.
    pub kind: LaneKind,
}

/// What an arrow means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrow {
    /// A call: `callback(v)`, `errback(e)`, `pause()`, starting a
    /// coroutine, a coroutine awaiting a Deferred, a callback running.
    Call,
    /// `cancel()`, going down.
    Cancel,
    /// A result handed on (up): a value.
    Value,
    /// A result handed on (up): a failure.
    Failure,
}

impl Arrow {
    /// The class name the SVG gives it (`call`, `cancel`, `value`,
    /// `failure`).
    pub fn class(self) -> &'static str {
        match self {
            Arrow::Call => "call",
            Arrow::Cancel => "cancel",
            Arrow::Value => "value",
            Arrow::Failure => "failure",
        }
    }

    fn mermaid(self) -> &'static str {
        match self {
            Arrow::Call => "->>",
            Arrow::Cancel => "-x",
            Arrow::Value => "-->>",
            Arrow::Failure => "--x",
        }
    }
}

/// One row of the diagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// An arrow from one lane to another (or to itself: a callback running
    /// on its Deferred).
    Message {
        /// The lane it starts from (index into [`Diagram::lanes`]).
        from: usize,
        /// The lane it points to.
        to: usize,
        /// What it means.
        arrow: Arrow,
        /// Its label.
        label: String,
    },
    /// A note over a lane.
    Note {
        /// The lane.
        lane: usize,
        /// The text.
        text: String,
        /// A warning (a logging-context report, a raised op, an unhandled
        /// failure) rather than a plain note.
        warning: bool,
    },
}

/// A sequence diagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagram {
    /// A title (the scenario's first comment line, if any).
    pub title: Option<String>,
    /// The lanes, left to right.
    pub lanes: Vec<Lane>,
    /// The rows, top to bottom.
    pub rows: Vec<Row>,
}

/// Runs scenario text with recording on, and returns its trace (the same
/// trace `run_text` gives) and its diagram. The title is the scenario's
/// first comment line.
pub fn diagram_text(text: &str) -> Result<(String, Diagram), super::Error> {
    diagram_text_with_limits(text, super::Limits::UNLIMITED)
}

/// [`diagram_text`] within `limits` (see
/// [`run_text_with_limits`](super::run_text_with_limits)).
pub fn diagram_text_with_limits(
    text: &str,
    limits: super::Limits,
) -> Result<(String, Diagram), super::Error> {
    let scenario = super::parse(text).map_err(super::Error::Parse)?;
    let (trace, recording) =
        super::run_recorded_with_limits(&scenario, limits).map_err(super::Error::Run)?;
    let mut diagram = Diagram::from_run(&scenario, &trace, &recording);
    diagram.title = title(text);
    Ok((trace, diagram))
}

/// The first sentence of a scenario's leading comment.
fn title(text: &str) -> Option<String> {
    let comment: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .map_while(|l| l.strip_prefix('#'))
        .map(str::trim)
        .collect();
    let comment = comment.join(" ");
    let end = comment
        .find(". ")
        .map_or(comment.len(), |i| i + 1)
        .min(comment.len());
    let sentence = comment[..end].trim().trim_end_matches('.').to_owned();
    (!sentence.is_empty()).then_some(sentence)
}

/// A parsed trace line.
enum Line<'a> {
    Body {
        name: &'a str,
        n: &'a str,
        errback: bool,
        input: &'a str,
        context: &'a str,
    },
    Canceller(&'a str),
    AwaitResult {
        frame: &'a str,
        target: &'a str,
        failed: bool,
        result: &'a str,
    },
    Caught(&'a str, &'a str),
    Call,
    Finished {
        frame: &'a str,
        failed: bool,
        result: &'a str,
    },
    Context(&'a str),
    Raised(&'a str),
    Logcontext(&'a str),
    Final(&'a str, &'a str),
    Unhandled(&'a str),
    Other(&'a str),
}

fn parse_line(line: &str) -> Line<'_> {
    if let Some(rest) = line.strip_prefix("= ") {
        let (name, state) = rest.split_once(' ').unwrap_or((rest, ""));
        return Line::Final(name, state);
    }
    if let Some(f) = line.strip_prefix("~ unhandled ") {
        return Line::Unhandled(f);
    }
    if let Some(rest) = line.strip_prefix("! logcontext: ") {
        return Line::Logcontext(rest);
    }
    if let Some(rest) = line.strip_prefix("! ") {
        return Line::Raised(rest);
    }
    if let Some(c) = line.strip_prefix("ctx ") {
        return Line::Context(c);
    }
    if let Some((name, rest)) = line.split_once(": ") {
        if let Some(rest) = rest.strip_prefix("await ") {
            if let Some((target, result)) = rest.split_once(" -> ") {
                return Line::AwaitResult {
                    frame: name,
                    target,
                    failed: false,
                    result,
                };
            }
            if let Some((target, result)) = rest.split_once(" raised ") {
                return Line::AwaitResult {
                    frame: name,
                    target,
                    failed: true,
                    result,
                };
            }
        }
        if let Some(f) = rest.strip_prefix("caught ") {
            return Line::Caught(name, f);
        }
        if rest.starts_with("call ") {
            return Line::Call;
        }
        if let Some(v) = rest.strip_prefix("returned ") {
            return Line::Finished {
                frame: name,
                failed: false,
                result: v,
            };
        }
        if let Some(f) = rest.strip_prefix("raised ") {
            return Line::Finished {
                frame: name,
                failed: true,
                result: f,
            };
        }
    }
    if let Some((name, rest)) = line.split_once(" canceller @") {
        let _ = rest;
        return Line::Canceller(name);
    }
    // X.n cb <- V @C / X.n eb <- F @C
    if let Some((head, rest)) = line.split_once(" <- ")
        && let Some((body, kind)) = head.rsplit_once(' ')
        && let Some((name, n)) = body.rsplit_once('.')
        && let Some((input, context)) = rest.rsplit_once(" @")
    {
        return Line::Body {
            name,
            n,
            errback: kind == "eb",
            input,
            context,
        };
    }
    Line::Other(line)
}

/// What the builder knows while it walks the run.
struct Builder {
    lanes: Vec<Lane>,
    index: HashMap<String, usize>,
    alias: HashMap<String, String>,
    rows: Vec<Row>,
    /// The lane whose code runs now (bodies, cancellers, coroutine lines).
    actors: Vec<usize>,
    /// What each effect pushed (so that `EffectEnd` pops it).
    effect_pushes: Vec<Option<Push>>,
    /// What the current op pushed.
    op_push: Option<Push>,
    /// Cancels in progress, innermost last: their target, and where the
    /// library passes the cancel on from there (each lane reached, with the
    /// lane it is reached from), as the Deferreds waited on one another when
    /// the cancel started.
    cancels: Vec<(usize, HashMap<usize, usize>)>,
    /// Deferreds being fired by an explicit `callback`/`errback` call.
    explicit: Vec<usize>,
    /// Lanes a cancel was drawn into during the current op.
    cancel_drawn: HashSet<usize>,
    /// What each coroutine lane awaits now.
    awaiting: HashMap<usize, usize>,
    /// What each Deferred waits on now (chained).
    waiting: HashMap<usize, usize>,
    /// The inputs of each `gather`/`dlist`/`race`.
    inputs: HashMap<usize, Vec<usize>>,
    /// Where each Deferred's result comes from (gather inputs, wrapped
    /// sources, observed sources, chained sources).
    feeders: HashMap<usize, Vec<usize>>,
    /// Observables: their source lane.
    observables: HashMap<String, usize>,
    /// The last recorded state of each lane.
    states: HashMap<usize, Snap>,
    /// When each lane last fired (a counter), for choosing a feeder.
    fired_at: HashMap<usize, usize>,
    clock: usize,
}

#[derive(Clone, Copy)]
enum Push {
    Cancel,
    Explicit,
}

const CALLER: usize = 0;

impl Builder {
    fn new() -> Builder {
        Builder {
            lanes: vec![Lane {
                id: "caller".into(),
                label: "caller".into(),
                kind: LaneKind::Caller,
            }],
            index: HashMap::new(),
            alias: HashMap::new(),
            rows: Vec::new(),
            actors: Vec::new(),
            effect_pushes: Vec::new(),
            op_push: None,
            cancels: Vec::new(),
            explicit: Vec::new(),
            cancel_drawn: HashSet::new(),
            awaiting: HashMap::new(),
            waiting: HashMap::new(),
            inputs: HashMap::new(),
            feeders: HashMap::new(),
            observables: HashMap::new(),
            states: HashMap::new(),
            fired_at: HashMap::new(),
            clock: 0,
        }
    }

    /// The lane of `name` (resolving second names), created if new.
    fn lane(&mut self, name: &str) -> usize {
        let name = self.alias.get(name).map_or(name, String::as_str).to_owned();
        if let Some(&i) = self.index.get(&name) {
            return i;
        }
        self.add_lane(&name, &name, LaneKind::Deferred)
    }

    fn add_lane(&mut self, name: &str, label: &str, kind: LaneKind) -> usize {
        let i = self.lanes.len();
        self.lanes.push(Lane {
            id: format!("d_{name}"),
            label: label.to_owned(),
            kind,
        });
        self.index.insert(name.to_owned(), i);
        i
    }

    /// The lane of a coroutine frame (`r`, or `r>c2` for a nested call).
    fn frame_lane(&mut self, frame: &str) -> usize {
        let root = frame.split('>').next().unwrap_or(frame);
        self.lane(root)
    }

    fn actor(&self) -> usize {
        self.actors.last().copied().unwrap_or(CALLER)
    }

    fn message(&mut self, from: usize, to: usize, arrow: Arrow, label: impl Into<String>) {
        self.rows.push(Row::Message {
            from,
            to,
            arrow,
            label: label.into(),
        });
    }

    fn note(&mut self, lane: usize, text: impl Into<String>, warning: bool) {
        self.rows.push(Row::Note {
            lane,
            text: text.into(),
            warning,
        });
    }

    fn is_coroutine(&self, lane: usize) -> bool {
        self.lanes[lane].kind == LaneKind::Coroutine
    }

    /// The lanes a cancel of `lane` is passed on to by the library.
    fn cancel_targets(&self, lane: usize) -> Vec<usize> {
        let mut out = Vec::new();
        if let Some(&t) = self.awaiting.get(&lane) {
            out.push(t);
        }
        if let Some(&t) = self.waiting.get(&lane) {
            out.push(t);
        }
        if let Some(ts) = self.inputs.get(&lane) {
            out.extend(ts.iter().copied());
        }
        out
    }

    /// Where a cancel of `root` is passed on to, transitively: each lane
    /// reached, with the lane it is reached from.
    fn cancel_tree(&self, root: usize) -> HashMap<usize, usize> {
        let mut parent = HashMap::new();
        let mut frontier = vec![root];
        while let Some(at) = frontier.pop() {
            for next in self.cancel_targets(at) {
                if next != root && !parent.contains_key(&next) {
                    parent.insert(next, at);
                    frontier.push(next);
                }
            }
        }
        parent
    }

    /// True when `lane` is a cancel in progress, or is reached by one.
    fn cancelling(&self, lane: usize) -> bool {
        self.cancels
            .iter()
            .any(|(root, tree)| *root == lane || tree.contains_key(&lane))
    }

    /// Draws the cancel reaching `lane` from the innermost cancel in
    /// progress that reaches it, each hop once per op. False when no cancel
    /// in progress reaches it.
    fn cancel_into(&mut self, lane: usize) -> bool {
        let Some(path) = self.cancels.iter().rev().find_map(|(root, tree)| {
            let mut path = vec![lane];
            let mut at = lane;
            while at != *root {
                at = *tree.get(&at)?;
                if path.contains(&at) {
                    return None;
                }
                path.push(at);
            }
            Some(path)
        }) else {
            return false;
        };
        for hop in path.windows(2).rev() {
            let (to, from) = (hop[0], hop[1]);
            if self.cancel_drawn.insert(to) {
                self.message(from, to, Arrow::Cancel, "cancel()");
            }
        }
        true
    }

    fn push(&mut self, push: Push, lane: usize) {
        match push {
            Push::Cancel => {
                let tree = self.cancel_tree(lane);
                self.cancels.push((lane, tree));
                self.cancel_drawn.insert(lane);
            }
            Push::Explicit => self.explicit.push(lane),
        }
    }

    fn pop(&mut self, push: Option<Push>) {
        match push {
            Some(Push::Cancel) => {
                self.cancels.pop();
            }
            Some(Push::Explicit) => {
                self.explicit.pop();
            }
            None => {}
        }
    }

    fn op(&mut self, op: &Op) {
        self.cancel_drawn.clear();
        self.op_push = None;
        match op {
            Op::New { name, .. } => {
                self.lane(name);
            }
            Op::Succeed(name, v) => {
                let l = self.lane(name);
                self.note(l, format!("succeed({})", literal_text(v)), false);
                self.push(Push::Explicit, l);
                self.op_push = Some(Push::Explicit);
            }
            Op::Fail(name, e) => {
                let l = self.lane(name);
                self.note(l, format!("fail({})", error_text(e)), false);
                self.push(Push::Explicit, l);
                self.op_push = Some(Push::Explicit);
            }
            Op::Callback(name, v) => {
                let l = self.lane(name);
                self.message(
                    CALLER,
                    l,
                    Arrow::Call,
                    format!("callback({})", literal_text(v)),
                );
                self.push(Push::Explicit, l);
                self.op_push = Some(Push::Explicit);
            }
            Op::Errback(name, e) => {
                let l = self.lane(name);
                self.message(
                    CALLER,
                    l,
                    Arrow::Call,
                    format!("errback({})", error_text(e)),
                );
                self.push(Push::Explicit, l);
                self.op_push = Some(Push::Explicit);
            }
            Op::Cancel(name) => {
                let l = self.lane(name);
                self.message(CALLER, l, Arrow::Cancel, "cancel()");
                self.push(Push::Cancel, l);
                self.op_push = Some(Push::Cancel);
            }
            Op::Pause(name) => {
                let l = self.lane(name);
                self.message(CALLER, l, Arrow::Call, "pause()");
            }
            Op::Unpause(name) => {
                let l = self.lane(name);
                self.message(CALLER, l, Arrow::Call, "unpause()");
            }
            Op::Chain(a, b) => {
                let (la, lb) = (self.lane(a), self.lane(b));
                self.feeders.entry(lb).or_default().push(la);
                self.message(CALLER, la, Arrow::Call, format!("chainDeferred({b})"));
            }
            Op::Gather { name, inputs, .. }
            | Op::DList { name, inputs, .. }
            | Op::Race(name, inputs) => {
                let what = match op {
                    Op::Gather { .. } => "gatherResults",
                    Op::DList { .. } => "DeferredList",
                    _ => "race",
                };
                let ls: Vec<usize> = inputs.iter().map(|x| self.lane(x)).collect();
                let l = self.lane(name);
                self.inputs.insert(l, ls.clone());
                self.feeders.entry(l).or_default().extend(ls);
                self.note(l, format!("{what}([{}])", inputs.join(", ")), false);
            }
            Op::Observable { name, source, .. } => {
                let s = self.lane(source);
                self.observables.insert(name.clone(), s);
                self.note(s, format!("{name} = ObservableDeferred({source})"), false);
            }
            Op::Observe(y, o) => {
                let l = self.lane(y);
                if let Some(&s) = self.observables.get(o) {
                    self.feeders.entry(l).or_default().push(s);
                }
                self.note(l, format!("{o}.observe()"), false);
            }
            Op::StopCancellation(y, x) | Op::DelayCancellation(y, x) | Op::Timeout(y, x, _) => {
                let what = match op {
                    Op::StopCancellation(..) => format!("stop_cancellation({x})"),
                    Op::DelayCancellation(..) => format!("delay_cancellation({x})"),
                    Op::Timeout(_, _, t) => format!("timeout_deferred({x}, {})", t.0),
                    _ => unreachable!("matched above"),
                };
                let (lx, ly) = (self.lane(x), self.lane(y));
                self.feeders.entry(ly).or_default().push(lx);
                self.note(ly, what, false);
            }
            Op::AddTimeout(x, t) => {
                let l = self.lane(x);
                self.note(l, format!("addTimeout({})", t.0), false);
            }
            Op::CallLater(t, _) => self.note(CALLER, format!("callLater({})", t.0), false),
            Op::Advance(t) => self.note(CALLER, format!("clock.advance({})", t.0), false),
            Op::Start(r, c) | Op::Background(r, c) | Op::BgProcess(r, c) => {
                let what = match op {
                    Op::Start(..) => format!("ensureDeferred({c}())"),
                    Op::Background(..) => format!("run_in_background({c})"),
                    _ => format!("run_as_background_process({c})"),
                };
                let l = match self.index.get(r) {
                    Some(&l) => l,
                    None => self.add_lane(r, &format!("{r}: {c}()"), LaneKind::Coroutine),
                };
                self.message(CALLER, l, Arrow::Call, what);
            }
            Op::Enter(n) => self.note(CALLER, format!("enter {n}"), false),
            Op::Exit(n) => self.note(CALLER, format!("exit {n}"), false),
            Op::Yieldable(y, x) => {
                let l = self.lane(x);
                self.note(l, format!("{y} = make_deferred_yieldable({x})"), false);
            }
            Op::Cb(..) | Op::Eb(..) | Op::Both(..) | Op::Cbs(..) | Op::Async(..) | Op::Current => {}
        }
    }

    fn effect(&mut self, effect: &Effect) {
        let actor = self.actor();
        let pushed = match effect {
            Effect::Callback(y, v) => {
                let l = self.lane(y);
                self.message(
                    actor,
                    l,
                    Arrow::Call,
                    format!("callback({})", literal_text(v)),
                );
                self.push(Push::Explicit, l);
                Some(Push::Explicit)
            }
            Effect::Errback(y, e) => {
                let l = self.lane(y);
                self.message(actor, l, Arrow::Call, format!("errback({})", error_text(e)));
                self.push(Push::Explicit, l);
                Some(Push::Explicit)
            }
            Effect::Cancel(y) => {
                let l = self.lane(y);
                self.message(actor, l, Arrow::Cancel, "cancel()");
                self.push(Push::Cancel, l);
                Some(Push::Cancel)
            }
            Effect::Pause(y) => {
                let l = self.lane(y);
                self.message(actor, l, Arrow::Call, "pause()");
                None
            }
            Effect::Unpause(y) => {
                let l = self.lane(y);
                self.message(actor, l, Arrow::Call, "unpause()");
                None
            }
            Effect::Cb(..) | Effect::Ctx => None,
        };
        self.effect_pushes.push(pushed);
    }

    /// A Deferred's state changed.
    fn state(&mut self, name: &str, state: Snap) {
        let l = self.lane(name);
        let previous = self.states.insert(l, state.clone());
        if let Snap::Waiting(Some(on)) = &state {
            let target = self.lane(on);
            self.waiting.insert(l, target);
            if !self.is_coroutine(l) {
                self.feeders.entry(l).or_default().push(target);
                self.note(l, format!("waits on {on}"), false);
            }
            return;
        }
        let was_waiting = self.waiting.remove(&l);
        if state == Snap::Held
            && matches!(previous, None | Some(Snap::Pending))
            && self.cancelling(l)
        {
            // delay_cancellation's wrapper: cancelled, its CancelledError
            // held back.
            self.cancel_into(l);
            self.note(l, "cancelled: result held back", false);
            return;
        }
        if !state.is_final() {
            return;
        }
        if previous.as_ref().is_some_and(Snap::is_final) {
            return;
        }
        self.clock += 1;
        self.fired_at.insert(l, self.clock);
        if self.is_coroutine(l) || self.explicit.contains(&l) {
            return;
        }
        let (arrow, text) = match &state {
            Snap::Failure(f) => (Arrow::Failure, f.clone()),
            Snap::Value(v) => (Arrow::Value, v.clone()),
            _ => return,
        };
        // A result handed on from where it came from.
        let feeder = was_waiting.or_else(|| {
            self.feeders.get(&l).and_then(|fs| {
                fs.iter()
                    .filter(|f| self.fired_at.contains_key(f))
                    .max_by_key(|f| self.fired_at.get(f))
                    .copied()
            })
        });
        if let Some(from) = feeder {
            self.message(from, l, arrow, text);
            return;
        }
        // Reached by a cancel in progress.
        let consumed = self.awaiting.values().any(|&t| t == l)
            || self.feeders.values().any(|fs| fs.contains(&l));
        if self.cancelling(l) {
            self.cancel_into(l);
            if !consumed {
                self.note(l, text, false);
            }
            return;
        }
        self.note(l, format!("fires: {text}"), false);
    }

    fn line(&mut self, line: &str) {
        match parse_line(line) {
            Line::Body {
                name,
                n,
                errback,
                input,
                context,
            } => {
                let l = self.lane(name);
                let ctx = if context == "sentinel" {
                    String::new()
                } else {
                    format!(" @{context}")
                };
                let (arrow, kind) = if errback {
                    (Arrow::Failure, "eb")
                } else {
                    (Arrow::Value, "cb")
                };
                self.message(l, l, arrow, format!("{kind} {n}({input}){ctx}"));
            }
            Line::Canceller(name) => {
                let l = self.lane(name);
                self.cancel_into(l);
                self.note(l, "canceller runs", false);
            }
            Line::AwaitResult {
                frame,
                target,
                failed,
                result,
            } => {
                let r = self.frame_lane(frame);
                let t = self.lane(target);
                self.awaiting.remove(&r);
                let arrow = if failed { Arrow::Failure } else { Arrow::Value };
                self.message(t, r, arrow, result);
            }
            Line::Caught(frame, f) => {
                let r = self.frame_lane(frame);
                self.note(r, format!("caught {f}"), false);
            }
            Line::Call => {}
            Line::Finished {
                frame,
                failed,
                result,
            } => {
                let r = self.frame_lane(frame);
                let verb = if failed { "raises" } else { "returns" };
                if let Some((_, nested)) = frame.split_once('>') {
                    self.note(r, format!("{nested} {verb} {result}"), false);
                    return;
                }
                let consumed = self.awaiting.values().any(|&t| t == r)
                    || self.feeders.values().any(|fs| fs.contains(&r));
                if consumed {
                    self.note(r, format!("{verb} {result}"), false);
                } else {
                    let arrow = if failed { Arrow::Failure } else { Arrow::Value };
                    self.message(r, CALLER, arrow, format!("{verb} {result}"));
                }
            }
            Line::Context(c) => {
                let a = self.actor();
                self.note(a, format!("ctx {c}"), false);
            }
            Line::Raised(text) => self.note(CALLER, text, true),
            Line::Logcontext(text) => {
                let a = self.actor();
                self.note(a, format!("logcontext: {text}"), true);
            }
            Line::Final(name, state) => {
                // One line per Deferred, under its first name.
                if !self.alias.contains_key(name) {
                    let l = self.lane(name);
                    self.note(l, format!("end: {state}"), false);
                }
            }
            Line::Unhandled(f) => self.note(CALLER, format!("unhandled {f}"), true),
            Line::Other(text) => self.note(CALLER, text, false),
        }
    }

    fn mark(&mut self, mark: &Mark) {
        match mark {
            Mark::Op(stmt) => self.op(&stmt.op),
            Mark::OpEnd => {
                let push = self.op_push.take();
                self.pop(push);
            }
            Mark::Bind { name, canonical } => {
                if name != canonical {
                    self.alias.insert(name.clone(), canonical.clone());
                }
            }
            Mark::ActorStart(name) => {
                let l = self.frame_lane(name);
                self.actors.push(l);
            }
            Mark::ActorEnd => {
                self.actors.pop();
            }
            Mark::EffectStart(effect) => self.effect(effect),
            Mark::EffectEnd => {
                let push = self.effect_pushes.pop().flatten();
                self.pop(push);
            }
            Mark::Await { frame, target } => {
                let r = self.frame_lane(frame);
                let t = self.lane(target);
                self.awaiting.insert(r, t);
                self.message(r, t, Arrow::Call, "await");
            }
            Mark::State { name, state } => self.state(name, state.clone()),
        }
    }

    /// Orders the lanes: the caller first, then each Deferred left of what
    /// it waits on or gets its result from; otherwise in order of
    /// appearance.
    fn finish(self) -> Diagram {
        let n = self.lanes.len();
        // Edges consumer -> producer.
        let mut edges: Vec<(usize, usize)> = Vec::new();
        for (&x, fs) in &self.feeders {
            edges.extend(fs.iter().map(|&f| (x, f)));
        }
        for (&x, ts) in &self.inputs {
            edges.extend(ts.iter().map(|&t| (x, t)));
        }
        for row in &self.rows {
            if let Row::Message {
                from,
                to,
                arrow: Arrow::Cancel,
                ..
            } = *row
                && from != CALLER
                && from != to
            {
                edges.push((from, to));
            }
            if let Row::Message {
                from,
                to,
                arrow: Arrow::Call,
                label,
            } = row
                && label == "await"
            {
                edges.push((*from, *to));
            }
        }
        let mut depth = vec![0usize; n];
        for d in depth.iter_mut().skip(1) {
            *d = 1;
        }
        // Longest path, bounded (cycles cannot loop for ever).
        for _ in 0..n {
            let mut changed = false;
            for &(a, b) in &edges {
                if a != b && b != CALLER && depth[b] < depth[a] + 1 && depth[a] < n {
                    depth[b] = depth[a] + 1;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (depth[i], i));
        let mut position = vec![0; n];
        for (p, &i) in order.iter().enumerate() {
            position[i] = p;
        }
        let lanes = order.iter().map(|&i| self.lanes[i].clone()).collect();
        let rows = self
            .rows
            .into_iter()
            .map(|row| match row {
                Row::Message {
                    from,
                    to,
                    arrow,
                    label,
                } => Row::Message {
                    from: position[from],
                    to: position[to],
                    arrow,
                    label,
                },
                Row::Note {
                    lane,
                    text,
                    warning,
                } => Row::Note {
                    lane: position[lane],
                    text,
                    warning,
                },
            })
            .collect();
        Diagram {
            title: None,
            lanes,
            rows,
        }
    }
}

fn literal_text(v: &super::ast::Literal) -> String {
    super::values::format_value(&super::values::literal(v))
}

fn error_text(e: &super::ast::ErrSpec) -> String {
    super::values::format_failure(&super::values::make_failure(e))
}

impl Diagram {
    /// Builds the diagram of a run from the scenario, its trace and what
    /// was recorded while it ran ([`super::run_recorded`]).
    pub fn from_run(scenario: &Scenario, trace: &str, recording: &Recording) -> Diagram {
        let _ = scenario;
        let mut b = Builder::new();
        let mut marks = recording.marks.iter().peekable();
        for (i, line) in trace.lines().enumerate() {
            while let Some((_, mark)) = marks.next_if(|(at, _)| *at <= i) {
                b.mark(mark);
            }
            b.line(line);
        }
        for (_, mark) in marks {
            b.mark(mark);
        }
        b.finish()
    }

    /// The diagram as Mermaid text (a `sequenceDiagram`).
    pub fn mermaid(&self) -> String {
        let mut out = String::from("sequenceDiagram\n");
        if let Some(title) = &self.title {
            let _ = writeln!(out, "    title {}", mermaid_text(title));
        }
        for lane in &self.lanes {
            if lane.id == lane.label {
                let _ = writeln!(out, "    participant {}", lane.id);
            } else {
                let _ = writeln!(
                    out,
                    "    participant {} as {}",
                    lane.id,
                    mermaid_text(&lane.label)
                );
            }
        }
        for row in &self.rows {
            match row {
                Row::Message {
                    from,
                    to,
                    arrow,
                    label,
                } => {
                    let _ = writeln!(
                        out,
                        "    {}{}{}: {}",
                        self.lanes[*from].id,
                        arrow.mermaid(),
                        self.lanes[*to].id,
                        mermaid_text(label)
                    );
                }
                Row::Note {
                    lane,
                    text,
                    warning,
                } => {
                    let mark = if *warning { "!! " } else { "" };
                    let _ = writeln!(
                        out,
                        "    Note over {}: {mark}{}",
                        self.lanes[*lane].id,
                        mermaid_text(text)
                    );
                }
            }
        }
        out
    }

    /// The diagram as a self-contained SVG document. `id` prefixes the
    /// element ids it defines (arrowheads), so that several diagrams can be
    /// inlined in one HTML page. The SVG has no blank line, so that it can
    /// be inlined in Markdown (rustdoc) as it is.
    pub fn svg(&self, id: &str) -> String {
        svg::render(self, id)
    }
}

/// Text that Mermaid shows as it is: `;` and `#` (which Mermaid reads as a
/// statement end and an entity start) and `<`/`>` are written as entities.
fn mermaid_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '#' => out.push_str("#35;"),
            ';' => out.push_str("#59;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

mod svg {
    //! The SVG renderer: a header box per lane, dashed lifelines, one row
    //! per message or note.

    use std::fmt::Write as _;

    use super::{Arrow, Diagram, LaneKind, Row};

    const CHAR_W: f64 = 7.0;
    const FONT: &str =
        "font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" font-size=\"12\"";
    /// A white halo around message labels, so that lifelines do not cross
    /// them.
    const HALO: &str = "paint-order=\"stroke\" stroke=\"#ffffff\" stroke-width=\"4\"";
    const ROW_H: f64 = 30.0;
    const SELF_H: f64 = 40.0;
    const HEADER_H: f64 = 30.0;
    const MARGIN: f64 = 20.0;

    const LEGEND: &[(Arrow, &str)] = &[
        (Arrow::Call, "call"),
        (Arrow::Cancel, "cancel() (goes down)"),
        (Arrow::Value, "result (comes up)"),
        (Arrow::Failure, "failure (comes up)"),
    ];

    fn text_w(text: &str) -> f64 {
        text.chars().count() as f64 * CHAR_W
    }

    fn esc(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
        out
    }

    fn color(arrow: Arrow) -> &'static str {
        match arrow {
            Arrow::Call => "#37474f",
            Arrow::Cancel => "#c62828",
            Arrow::Value => "#2e7d32",
            Arrow::Failure => "#e65100",
        }
    }

    fn slug(id: &str) -> String {
        id.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    }

    /// A note centred on `x`, its text's baseline at `y`.
    fn note_svg(x: f64, y: f64, text: &str, warning: bool) -> String {
        let w = text_w(text) + 16.0;
        let (fill, stroke, class) = if warning {
            ("#ffebee", "#c62828", "note warning")
        } else {
            ("#fff8e1", "#bfa045", "note")
        };
        format!(
            "<g class=\"{class}\"><rect x=\"{rx:.1}\" y=\"{ry:.1}\" width=\"{w:.1}\" height=\"20\" rx=\"3\" fill=\"{fill}\" stroke=\"{stroke}\"/><text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" {FONT} fill=\"#212121\">{}</text></g>",
            esc(text),
            rx = x - w / 2.0,
            ry = y - 14.0,
        )
    }

    pub(super) fn render(d: &Diagram, id: &str) -> String {
        let id = slug(id);
        let n = d.lanes.len();
        // Lane centres: each gap wide enough for what is drawn across it.
        let header_w: Vec<f64> = d
            .lanes
            .iter()
            .map(|l| (text_w(&l.label) + 20.0).max(70.0))
            .collect();
        let mut gap: Vec<f64> = (0..n.saturating_sub(1))
            .map(|i| (header_w[i] + header_w[i + 1]) / 2.0 + 30.0)
            .collect();
        let mut right_extra: f64 = header_w.last().copied().unwrap_or(0.0) / 2.0;
        let mut left_extra: f64 = header_w.first().copied().unwrap_or(0.0) / 2.0;
        for row in &d.rows {
            match row {
                Row::Message {
                    from, to, label, ..
                } if from != to => {
                    let (a, b) = (*from.min(to), *from.max(to));
                    let need = (text_w(label) + 60.0) / (b - a) as f64;
                    for g in &mut gap[a..b] {
                        *g = g.max(need);
                    }
                }
                Row::Message { from, label, .. } => {
                    let need = text_w(label) + 50.0;
                    if *from + 1 < n {
                        gap[*from] = gap[*from].max(need);
                    } else {
                        right_extra = right_extra.max(need);
                    }
                }
                Row::Note { lane, text, .. } => {
                    let half = (text_w(text) + 16.0) / 2.0 + 8.0;
                    if *lane > 0 {
                        gap[lane - 1] = gap[lane - 1].max(half + 30.0);
                    } else {
                        left_extra = left_extra.max(half);
                    }
                    if *lane + 1 < n {
                        gap[*lane] = gap[*lane].max(half + 30.0);
                    } else {
                        right_extra = right_extra.max(half);
                    }
                }
            }
        }
        let mut x = vec![MARGIN + left_extra; n];
        for i in 1..n {
            x[i] = x[i - 1] + gap[i - 1];
        }
        let width = x.last().copied().unwrap_or(MARGIN) + right_extra + MARGIN;
        let title_h = if d.title.is_some() { 28.0 } else { 0.0 };
        let top = MARGIN + title_h;
        let mut y = top + HEADER_H + 20.0;
        let mut body = String::new();
        // The final-state notes ("end: …") share rows where they fit.
        let mut end_row: Option<(f64, Vec<(f64, f64)>)> = None;
        for row in &d.rows {
            if let Row::Note { lane, text, .. } = row
                && text.starts_with("end: ")
            {
                let w = text_w(text) + 16.0;
                let span = (x[*lane] - w / 2.0 - 4.0, x[*lane] + w / 2.0 + 4.0);
                let fits = end_row.as_ref().is_some_and(|(_, spans)| {
                    spans.iter().all(|&(a, b)| span.1 <= a || span.0 >= b)
                });
                if fits && let Some((row_y, spans)) = end_row.as_mut() {
                    spans.push(span);
                    let _ = writeln!(body, "{}", note_svg(x[*lane], *row_y, text, false));
                    continue;
                }
                end_row = Some((y, vec![span]));
            } else {
                end_row = None;
            }
            match row {
                Row::Message {
                    from,
                    to,
                    arrow,
                    label,
                } => {
                    let c = color(*arrow);
                    let dash = match arrow {
                        Arrow::Value | Arrow::Failure => " stroke-dasharray=\"6 4\"",
                        _ => "",
                    };
                    let marker = format!("{id}-{}", arrow.class());
                    if from == to {
                        let x0 = x[*from];
                        let _ = writeln!(
                            body,
                            "<g class=\"msg {}\"><path d=\"M{x0:.1},{y0:.1} h30 v14 h-26\" fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\"{dash} marker-end=\"url(#{marker})\"/><text x=\"{tx:.1}\" y=\"{ty:.1}\" {FONT} {HALO} fill=\"{c}\">{}</text></g>",
                            arrow.class(),
                            esc(label),
                            y0 = y - 6.0,
                            tx = x0 + 36.0,
                            ty = y + 6.0,
                        );
                        y += SELF_H;
                    } else {
                        let (x0, x1) = (x[*from], x[*to]);
                        let inset = if x1 > x0 { -4.0 } else { 4.0 };
                        let _ = writeln!(
                            body,
                            "<g class=\"msg {}\"><line x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x2:.1}\" y2=\"{y:.1}\" stroke=\"{c}\" stroke-width=\"1.5\"{dash} marker-end=\"url(#{marker})\"/><text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" {FONT} {HALO} fill=\"{c}\">{}</text></g>",
                            arrow.class(),
                            esc(label),
                            x2 = x1 + inset,
                            tx = (x0 + x1) / 2.0,
                            ty = y - 6.0,
                        );
                        y += ROW_H;
                    }
                }
                Row::Note {
                    lane,
                    text,
                    warning,
                } => {
                    let _ = writeln!(body, "{}", note_svg(x[*lane], y, text, *warning));
                    y += ROW_H;
                }
            }
        }
        let bottom = y;
        let legend_y = bottom + HEADER_H + 30.0;
        let height = legend_y + 20.0;
        let legend_w: f64 = LEGEND
            .iter()
            .map(|(_, text)| 44.0 + text_w(text) + 24.0)
            .sum::<f64>()
            + 2.0 * MARGIN;
        let width = width.max(legend_w);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" style=\"max-width: 100%; height: auto\" role=\"img\" aria-label=\"{}\">",
            esc(d.title.as_deref().unwrap_or("sequence diagram"))
        );
        let _ = writeln!(out, "<defs>");
        for arrow in [Arrow::Call, Arrow::Value] {
            let _ = writeln!(
                out,
                "<marker id=\"{id}-{}\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{}\"/></marker>",
                arrow.class(),
                color(arrow)
            );
        }
        for arrow in [Arrow::Cancel, Arrow::Failure] {
            let _ = writeln!(
                out,
                "<marker id=\"{id}-{}\" viewBox=\"0 0 10 10\" refX=\"5\" refY=\"5\" markerWidth=\"10\" markerHeight=\"10\" orient=\"auto\"><path d=\"M1,1 L9,9 M9,1 L1,9\" stroke=\"{}\" stroke-width=\"2\"/></marker>",
                arrow.class(),
                color(arrow)
            );
        }
        let _ = writeln!(out, "</defs>");
        let _ = writeln!(
            out,
            "<rect x=\"0\" y=\"0\" width=\"{width:.0}\" height=\"{height:.0}\" fill=\"#ffffff\"/>"
        );
        if let Some(title) = &d.title {
            let _ = writeln!(
                out,
                "<text class=\"title\" x=\"{MARGIN}\" y=\"{:.1}\" font-family=\"sans-serif\" font-size=\"14\" font-weight=\"bold\" fill=\"#212121\">{}</text>",
                MARGIN + 8.0,
                esc(title)
            );
        }
        for (i, lane) in d.lanes.iter().enumerate() {
            let w = header_w[i];
            let fill = match lane.kind {
                LaneKind::Caller => "#eceff1",
                LaneKind::Deferred => "#e3f2fd",
                LaneKind::Coroutine => "#ede7f6",
            };
            let _ = writeln!(
                out,
                "<g class=\"lane\" data-lane=\"{}\"><line x1=\"{cx:.1}\" y1=\"{y0:.1}\" x2=\"{cx:.1}\" y2=\"{bottom:.1}\" stroke=\"#9e9e9e\" stroke-dasharray=\"3 3\"/>",
                esc(&lane.id),
                cx = x[i],
                y0 = top + HEADER_H,
            );
            for by in [top, bottom] {
                let _ = writeln!(
                    out,
                    "<rect x=\"{rx:.1}\" y=\"{by:.1}\" width=\"{w:.1}\" height=\"{HEADER_H}\" rx=\"4\" fill=\"{fill}\" stroke=\"#546e7a\"/><text x=\"{cx:.1}\" y=\"{ty:.1}\" text-anchor=\"middle\" {FONT} fill=\"#212121\">{}</text>",
                    esc(&lane.label),
                    rx = x[i] - w / 2.0,
                    cx = x[i],
                    ty = by + 19.0,
                );
            }
            let _ = writeln!(out, "</g>");
        }
        out.push_str(&body);
        // Legend.
        let mut lx = MARGIN;
        let _ = writeln!(out, "<g class=\"legend\">");
        for &(arrow, text) in LEGEND {
            let dash = match arrow {
                Arrow::Value | Arrow::Failure => " stroke-dasharray=\"6 4\"",
                _ => "",
            };
            let _ = writeln!(
                out,
                "<line x1=\"{lx:.1}\" y1=\"{legend_y:.1}\" x2=\"{x2:.1}\" y2=\"{legend_y:.1}\" stroke=\"{c}\" stroke-width=\"1.5\"{dash} marker-end=\"url(#{id}-{class})\"/><text x=\"{tx:.1}\" y=\"{ty:.1}\" {FONT} fill=\"#424242\">{text}</text>",
                x2 = lx + 30.0,
                c = color(arrow),
                class = arrow.class(),
                tx = lx + 44.0,
                ty = legend_y + 4.0,
            );
            lx += 44.0 + text_w(text) + 24.0;
        }
        let _ = writeln!(out, "</g>");
        out.push_str("</svg>\n");
        out
    }
}
