//! What the runner records while it runs a scenario, beside the trace, so
//! that [`trace_diagram`](super::trace_diagram) can draw it: the ops as
//! they start and end, the effects bodies run, what each coroutine awaits,
//! the names bound, and every change of a named Deferred's state (when it
//! fires, what it holds, what it waits on), which the trace does not show.
//!
//! Recording is off unless [`run_recorded`](super::run_recorded) asks for
//! it; it only reads the Deferreds through their public API (`called`,
//! `paused`, `result`), between the runner's own steps, and never changes
//! the trace.

use std::collections::HashMap;

use super::ast::{Effect, Stmt};

/// A named Deferred's state, as the trace would print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snap {
    /// Not fired.
    Pending,
    /// Fired but paused: nothing can see its result yet.
    Held,
    /// Fired, and waiting on another Deferred (its first name, if it has
    /// one).
    Waiting(Option<String>),
    /// Holds a value (printed as the trace prints values).
    Value(String),
    /// Holds a failure (printed as the trace prints failures).
    Failure(String),
    /// Its value is in one of its own callbacks, running now.
    InUse,
}

impl Snap {
    /// True once the Deferred has a result others can see.
    pub fn is_final(&self) -> bool {
        matches!(self, Snap::Value(_) | Snap::Failure(_))
    }
}

/// One recorded event. Each comes with the number of trace lines printed
/// before it.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    /// A top-level op starts.
    Op(Stmt),
    /// The op that started last ends.
    OpEnd,
    /// `name` is bound to the Deferred first named `canonical` (the same
    /// name, except for a second name such as `yieldable`'s).
    Bind {
        /// The new name.
        name: String,
        /// The first name of its Deferred.
        canonical: String,
    },
    /// Code belonging to `lane` (a body or canceller of that Deferred, a
    /// coroutine's line) starts running.
    ActorStart(String),
    /// That code is done.
    ActorEnd,
    /// An effect is about to run (in the code of the current actor).
    EffectStart(Effect),
    /// The effect that started last is done.
    EffectEnd,
    /// The coroutine frame `frame` (`r`, or `r>c2` for a nested call)
    /// awaits the Deferred `target` (its first name).
    Await {
        /// The frame.
        frame: String,
        /// What it awaits.
        target: String,
    },
    /// The Deferred first named `name` changed state.
    State {
        /// Its first name.
        name: String,
        /// Its state now.
        state: Snap,
    },
}

/// Everything recorded during one run: marks, each with the number of trace
/// lines printed before it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recording {
    /// The marks, in order.
    pub marks: Vec<(usize, Mark)>,
}

/// The recorder the runner's `Env` holds while recording.
#[derive(Default)]
pub(super) struct Recorder {
    /// Trace lines printed so far.
    pub(super) lines: usize,
    /// What has been recorded.
    pub(super) recording: Recording,
    /// The last state recorded per Deferred (by id).
    pub(super) last: HashMap<usize, Snap>,
}

impl Recorder {
    pub(super) fn mark(&mut self, mark: Mark) {
        let at = self.lines;
        self.recording.marks.push((at, mark));
    }
}
