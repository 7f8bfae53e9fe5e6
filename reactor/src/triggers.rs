//! System event triggers: Twisted's `_ThreePhaseEvent` behind
//! `addSystemEventTrigger`, `removeSystemEventTrigger` and
//! `fireSystemEvent`.
//!
//! Each event type (`"startup"`, `"shutdown"`, or any other name) has three
//! phases run in order: `before`, `during`, `after`. Every trigger runs
//! once, when its event next fires. If `before` triggers return Deferreds,
//! the `during` and `after` phases wait until all of them have fired (with a
//! result or a failure): that is how a `before shutdown` trigger delays
//! shutdown. A trigger that fails is logged and the others still run.
//!
//! ```
//! use std::{cell::RefCell, rc::Rc};
//! use twisted_reactor::{Phase, Reactor};
//!
//! let reactor = Reactor::new().unwrap();
//! let log = Rc::new(RefCell::new(Vec::new()));
//! for (phase, name) in [(Phase::After, "after"), (Phase::During, "during"), (Phase::Before, "before")] {
//!     let l = log.clone();
//!     // reactor.addSystemEventTrigger(phase, "test", log.append, name)
//!     reactor.add_system_event_trigger(phase, "test", move || l.borrow_mut().push(name));
//! }
//! reactor.fire_system_event("test");                                 // reactor.fireSystemEvent("test")
//! assert_eq!(*log.borrow(), ["before", "during", "after"]);
//! ```

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use twisted_deferred::{AnyValue, Deferred, Failure};

use crate::error::TriggerNotFound;

/// The phase of a system event a trigger runs in (Twisted's `"before"`,
/// `"during"`, `"after"` strings; an enum cannot be misspelt, so there is
/// no `KeyError("invalid phase")`).
///
/// ```
/// use twisted_reactor::Phase;
/// assert_eq!(Phase::Before.to_string(), "before");                 // "before"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Runs first; a returned Deferred delays the other phases.
    Before,
    /// Runs once every `before` Deferred has fired.
    During,
    /// Runs last.
    After,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Before => "before",
            Phase::During => "during",
            Phase::After => "after",
        })
    }
}

/// What `addSystemEventTrigger` returns: the handle to give
/// [`remove_system_event_trigger`](crate::Reactor::remove_system_event_trigger).
///
/// ```
/// use twisted_reactor::{Phase, Reactor};
/// let reactor = Reactor::new().unwrap();
/// // id = reactor.addSystemEventTrigger("before", "shutdown", f)
/// let id = reactor.add_system_event_trigger(Phase::Before, "shutdown", || {});
/// assert_eq!((id.phase(), id.event_type()), (Phase::Before, "shutdown"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TriggerId {
    event: Rc<str>,
    phase: Phase,
    id: u64,
}

impl TriggerId {
    /// The event type the trigger was added to.
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let id = reactor.add_system_event_trigger(twisted_reactor::Phase::After, "custom", || {});
    /// assert_eq!(id.event_type(), "custom");
    /// ```
    pub fn event_type(&self) -> &str {
        &self.event
    }

    /// The phase the trigger runs in.
    ///
    /// ```
    /// let reactor = twisted_reactor::Reactor::new().unwrap();
    /// let id = reactor.add_system_event_trigger(twisted_reactor::Phase::During, "custom", || {});
    /// assert_eq!(id.phase(), twisted_reactor::Phase::During);
    /// ```
    pub fn phase(&self) -> Phase {
        self.phase
    }
}

/// What a trigger may return: nothing, a `Result` (an `Err` is logged, as
/// Twisted logs a raising trigger), or a Deferred. A Deferred returned by a
/// `before` trigger delays the event's other phases until it fires; in the
/// other phases it is ignored, as in Twisted.
///
/// ```
/// use twisted_deferred::Deferred;
/// use twisted_reactor::{Phase, Reactor};
///
/// let reactor = Reactor::new().unwrap();
/// let gate: Deferred<()> = Deferred::new();
/// let g = gate.clone();
/// reactor.add_system_event_trigger(Phase::Before, "test", move || g.clone());   // returns a Deferred
/// let id = reactor.add_system_event_trigger(Phase::During, "test", || {});
/// reactor.fire_system_event("test");
/// assert!(reactor.remove_system_event_trigger(&id).is_ok());         // still waiting: not run yet
/// gate.callback(()).unwrap();
/// ```
pub trait TriggerResult {
    /// The outcome as the event sees it.
    ///
    /// ```
    /// use twisted_reactor::TriggerResult;
    /// let _ = ().into_trigger_outcome();                              // return None
    /// ```
    fn into_trigger_outcome(self) -> TriggerOutcome;
}

/// A trigger's outcome, as [`TriggerResult`] reports it.
///
/// ```
/// use twisted_reactor::{TriggerOutcome, TriggerResult};
/// assert!(matches!(().into_trigger_outcome(), TriggerOutcome::Done));
/// ```
#[derive(Debug)]
pub enum TriggerOutcome {
    /// It returned nothing to wait for.
    Done,
    /// It failed (logged).
    Failed(Failure),
    /// It returned a Deferred.
    Wait(Deferred<AnyValue>),
}

impl TriggerResult for () {
    fn into_trigger_outcome(self) -> TriggerOutcome {
        TriggerOutcome::Done
    }
}

impl<E: Into<Failure>> TriggerResult for Result<(), E> {
    fn into_trigger_outcome(self) -> TriggerOutcome {
        match self {
            Ok(()) => TriggerOutcome::Done,
            Err(e) => TriggerOutcome::Failed(e.into()),
        }
    }
}

impl<T: 'static> TriggerResult for Deferred<T> {
    fn into_trigger_outcome(self) -> TriggerOutcome {
        TriggerOutcome::Wait(self.as_any())
    }
}

pub(crate) type TriggerFn = Box<dyn FnOnce() -> TriggerOutcome>;

/// Wraps a user function as a trigger.
pub(crate) fn trigger_fn<F, R>(f: F) -> TriggerFn
where
    F: FnOnce() -> R + 'static,
    R: TriggerResult,
{
    Box::new(move || f().into_trigger_outcome())
}

#[derive(Default)]
struct ThreePhaseEvent {
    before: VecDeque<(u64, TriggerFn)>,
    during: VecDeque<(u64, TriggerFn)>,
    after: VecDeque<(u64, TriggerFn)>,
    /// `state == "BEFORE"`.
    firing_before: bool,
    /// `finishedBefore`: the `before` triggers run in the current firing.
    finished_before: Vec<u64>,
}

impl ThreePhaseEvent {
    fn phase(&mut self, phase: Phase) -> &mut VecDeque<(u64, TriggerFn)> {
        match phase {
            Phase::Before => &mut self.before,
            Phase::During => &mut self.during,
            Phase::After => &mut self.after,
        }
    }
}

/// Every event's triggers (the reactor's `_eventTriggers`).
#[derive(Default)]
pub(crate) struct Triggers {
    events: RefCell<HashMap<Rc<str>, ThreePhaseEvent>>,
    next_id: Cell<u64>,
}

impl Triggers {
    /// `addSystemEventTrigger(phase, eventType, f)`.
    pub(crate) fn add(&self, phase: Phase, event_type: &str, f: TriggerFn) -> TriggerId {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let mut events = self.events.borrow_mut();
        let event: Rc<str> = match events.get_key_value(event_type) {
            Some((name, _)) => name.clone(),
            None => {
                let name: Rc<str> = Rc::from(event_type);
                events.insert(name.clone(), ThreePhaseEvent::default());
                name
            }
        };
        if let Some(e) = events.get_mut(&event) {
            e.phase(phase).push_back((id, f));
        }
        TriggerId { event, phase, id }
    }

    /// `removeSystemEventTrigger(id)`. While the `before` phase is firing,
    /// removing a `before` trigger that already ran only warns (Twisted's
    /// `DeprecationWarning`).
    pub(crate) fn remove(&self, id: &TriggerId) -> Result<(), TriggerNotFound> {
        let removed = {
            let mut events = self.events.borrow_mut();
            let event = events.get_mut(&id.event).ok_or(TriggerNotFound)?;
            if id.phase == Phase::Before
                && event.firing_before
                && event.finished_before.contains(&id.id)
            {
                log::warn!(
                    "Removing already-fired system event triggers will raise an exception in a \
                     future version of Twisted."
                );
                return Ok(());
            }
            let list = event.phase(id.phase);
            let position = list
                .iter()
                .position(|(i, _)| *i == id.id)
                .ok_or(TriggerNotFound)?;
            list.remove(position)
        };
        // Dropped outside the borrow: dropping the function may run user code.
        drop(removed);
        Ok(())
    }

    fn pop(&self, event: &str, phase: Phase) -> Option<TriggerFn> {
        let mut events = self.events.borrow_mut();
        let e = events.get_mut(event)?;
        let (id, f) = e.phase(phase).pop_front()?;
        if phase == Phase::Before {
            e.finished_before.push(id);
        }
        Some(f)
    }

    fn set_firing_before(&self, event: &str, on: bool) {
        if let Some(e) = self.events.borrow_mut().get_mut(event) {
            e.firing_before = on;
            e.finished_before.clear();
        }
    }

    /// Drops every trigger (the reactor stopped for good).
    pub(crate) fn clear(&self) {
        let events = std::mem::take(&mut *self.events.borrow_mut());
        drop(events);
    }
}

/// Runs one trigger, logging a failure or a panic.
fn run_trigger(event: &str, phase: Phase, f: TriggerFn) -> Option<Deferred<AnyValue>> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(TriggerOutcome::Done) => None,
        Ok(TriggerOutcome::Wait(d)) => Some(d),
        Ok(TriggerOutcome::Failed(failure)) => {
            log::error!("Unhandled error in {phase} {event} system event trigger: {failure}");
            None
        }
        Err(panic) => {
            let failure = Failure::from_panic(panic);
            log::error!("Unhandled error in {phase} {event} system event trigger: {failure}");
            None
        }
    }
}

/// `fireEvent()`: runs the `before` triggers, then, once every Deferred they
/// returned has fired, the `during` and `after` ones.
pub(crate) fn fire_event(triggers: &Rc<Triggers>, event: &str) {
    if !triggers.events.borrow().contains_key(event) {
        return;
    }
    triggers.set_firing_before(event, true);
    let mut waits = Vec::new();
    while let Some(f) = triggers.pop(event, Phase::Before) {
        if let Some(d) = run_trigger(event, Phase::Before, f) {
            waits.push(d);
        }
    }
    if waits.is_empty() {
        continue_firing(triggers, event);
        return;
    }
    // DeferredList(beforeResults).addCallback(self._continueFiring); the
    // results, failures included, stay in the trigger's Deferreds.
    let left = Rc::new(Cell::new(waits.len()));
    let event: Rc<str> = Rc::from(event);
    for d in waits {
        let (left, triggers, event) = (left.clone(), Rc::downgrade(triggers), event.clone());
        d.add_passthrough(move || {
            left.set(left.get() - 1);
            if left.get() == 0
                && let Some(triggers) = triggers.upgrade()
            {
                continue_firing(&triggers, &event);
            }
        });
    }
}

/// `_continueFiring()`: the `during` then the `after` triggers.
fn continue_firing(triggers: &Rc<Triggers>, event: &str) {
    triggers.set_firing_before(event, false);
    for phase in [Phase::During, Phase::After] {
        while let Some(f) = triggers.pop(event, phase) {
            run_trigger(event, phase, f);
        }
    }
}
