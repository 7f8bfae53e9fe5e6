//! The operation-sequence fuzzer's harness: bytes decoded into a sequence of
//! public-API calls on a handful of `Deferred<AnyValue>`s and
//! `Deferred<i64>`s, run, and checked.
//!
//! Every byte string is a valid program ([`decode`]; a missing byte reads as
//! 0), so libFuzzer's mutations always reach the library. The calls are the
//! ones a user makes: `new`/`with_canceller`, `succeed`/`fail`,
//! `callback`/`errback`, `add_callback`/`add_errback`/`add_both`/
//! `add_callbacks` whose bodies return values, failures or other Deferreds
//! (chaining), panic, and fire, cancel, pause or unpause Deferreds
//! themselves; `cancel`, `pause`/`unpause` (balanced or not),
//! `chain_deferred`, `gather_results`, `DeferredList`, `race`,
//! `ensure_deferred` of small coroutines, handles cloned, re-typed and
//! dropped.
//!
//! What [`run`] checks, each a panic (so a crash for libFuzzer, a failure
//! for a test) raised outside the library once the op that broke it
//! returns:
//!
//! * **No panic escapes the library.** The panics bodies raise on purpose
//!   ([`IntentionalPanic`]) must come back as failures; any other panic,
//!   caught by the library or not, is a bug (the fuzz target's panic hook
//!   aborts on it, see [`install_panic_filter`]).
//! * **Each callback runs at most once** (B11), and firing a Deferred that
//!   has fired runs nothing and changes nothing: it fails with
//!   `AlreadyCalledError` (B60), except for the one fire a cancel without
//!   canceller swallows (B49): at most one such swallow per Deferred, only
//!   for Deferreds made without a canceller, and exactly the next fire when
//!   the harness itself cancelled the Deferred (B49, B50, B51).
//! * **Nothing wedges where Twisted would not.** At the end the harness
//!   drains: it balances the pauses it made, fires every Deferred that has
//!   not fired, and adds a callback to each (which re-triggers chains a
//!   paused waiter left stalled, B40, and links a `RecursionError` left
//!   waiting), until nothing more runs. Then every Deferred whose pause
//!   count is 0 must have run every callback added to it, and one whose
//!   count is 1 must be waiting on a Deferred that cannot hand over (one
//!   still paused: a cycle of waits, or itself, B41).
//! * **Bounded work**: a sequence has at most [`MAX_OPS`] ops, bodies have at
//!   most three effects, effects add only callbacks without effects, and a
//!   run does at most [`MAX_EFFECTS_RUN`] effects, so every run ends; the
//!   fuzz target's `-timeout` catches a loop in the library.
//! * **No leak**: after dropping everything and
//!   [`Tracker::collect`](twisted_deferred::tracking::Tracker::collect), no
//!   [`Token`] is alive. Every value, failure, callback, canceller and
//!   coroutine the harness makes holds one, so a Deferred (or a link) kept
//!   alive by anything shows up. (The fuzz target also counts heap
//!   allocations, and LeakSanitizer reports cycles nothing points to.)
//!
//! Set `DEFERRED_OPS_TRACE=1` to print the decoded ops as they run (for a
//! crash found by the fuzzer: `DEFERRED_OPS_TRACE=1 cargo +nightly fuzz run
//! --fuzz-dir tests/fuzz deferred_ops ARTIFACT`).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use twisted_deferred::{
    AlreadyCalledError, AnyValue, CancelledError, Deferred, DeferredList, DeferredListFlags,
    Failure, Outcome, RecursionError, State, capture_unhandled_errors, ensure_deferred, fail,
    gather_results, race, succeed, tracking::Tracker,
};

/// The most ops one input decodes to.
pub const MAX_OPS: usize = 256;
/// Slots for `Deferred<AnyValue>` handles.
pub const ANY_SLOTS: u8 = 8;
/// Slots for `Deferred<i64>` handles.
pub const TYPED_SLOTS: u8 = 4;
const MAX_EFFECTS: u8 = 3;
const MAX_INPUTS: u8 = 4;
const MAX_STEPS: u8 = 6;
/// The most effects one run does; later ones are skipped. Bodies that
/// cancel their own Deferred from its canceller, three times each, recurse
/// exponentially until `RecursionError` (as they would in Twisted): this
/// bounds the work.
pub const MAX_EFFECTS_RUN: u32 = 5_000;
/// The most plain results one combinator's result holds, nested
/// combinators' included (see `Harness::inputs`).
pub const MAX_WEIGHT: u64 = 256;

// ---------------------------------------------------------------------------
// Tokens: the leak detector.

thread_local! {
    static LIVE_TOKENS: Cell<i64> = const { Cell::new(0) };
}

/// A value that counts its live copies on this thread. The harness puts one
/// in every value, failure, closure and coroutine it hands the library.
#[derive(Debug)]
pub struct Token(());

impl Token {
    /// A new token.
    pub fn new() -> Token {
        LIVE_TOKENS.with(|n| n.set(n.get() + 1));
        Token(())
    }

    /// How many tokens are alive on this thread.
    pub fn live() -> i64 {
        LIVE_TOKENS.with(Cell::get)
    }
}

impl Default for Token {
    fn default() -> Self {
        Token::new()
    }
}

impl Clone for Token {
    fn clone(&self) -> Self {
        Token::new()
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        let _ = LIVE_TOKENS.try_with(|n| n.set(n.get() - 1));
    }
}

/// The harness's own error type, carrying a token.
#[derive(Debug, Clone)]
struct UserError(#[allow(dead_code)] Token);

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("user error")
    }
}

impl std::error::Error for UserError {}

/// The payload of the panics bodies raise on purpose.
#[derive(Debug)]
pub struct IntentionalPanic;

/// Installs (once per process) a panic hook that stays silent for
/// [`IntentionalPanic`]s and hands every other panic to the hook installed
/// before it (libFuzzer's, which aborts: so a panic the library catches and
/// turns into a failure is still found if it was not one of ours).
pub fn install_panic_filter() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<IntentionalPanic>().is_none() {
                previous(info);
            }
        }));
    });
}

fn intentional_panic() -> ! {
    std::panic::panic_any(IntentionalPanic)
}

// ---------------------------------------------------------------------------
// The ops.

/// A slot: one of the `Deferred<AnyValue>` or `Deferred<i64>` handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ref {
    /// A `Deferred<AnyValue>` slot.
    Any(u8),
    /// A `Deferred<i64>` slot.
    Typed(u8),
}

/// A value given to `callback` or returned by a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    /// A fresh [`Token`] (as an `i64` 1 for typed Deferreds).
    Token,
    /// An integer.
    Int(i64),
    /// Python's `None` (0 for typed Deferreds).
    None,
    /// A token as an opaque (non-clonable) `AnyValue`.
    Opaque,
    /// A slot's Deferred as a plain value (Twisted's `callback(aDeferred)`,
    /// B5).
    Deferred(Ref),
    /// A failure as a value (`callback(aFailure)` is `errback`, B4).
    Failure(Err),
}

/// A failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Err {
    /// The harness's error, carrying a token.
    User,
    /// `CancelledError`.
    Cancelled,
    /// `Failure::msg`.
    Msg,
}

/// Which half of a link a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// `add_callback`.
    Callback,
    /// `add_errback`.
    Errback,
    /// `add_both`.
    Both,
}

/// What a body returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Res {
    /// Its input.
    Pass,
    /// A value.
    Value(Val),
    /// A failure (returned).
    Fail(Err),
    /// A slot's Deferred (chaining; the slot's own Deferred makes it wait on
    /// itself, B41).
    Return(Ref),
    /// A panic ([`IntentionalPanic`]).
    Panic,
    /// The value if the input is a `CancelledError` failure; the input
    /// otherwise.
    Trap(Val),
    /// The input plus `n` (a failure if it is not an integer, or on
    /// overflow).
    Add(i64),
}

/// What a body does before returning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `callback(v)` on a slot.
    Fire(Ref, Val),
    /// `errback(e)` on a slot.
    Errback(Ref, Err),
    /// `cancel()` on a slot.
    Cancel(Ref),
    /// `pause()` on a slot.
    Pause(Ref),
    /// `unpause()` on a slot.
    Unpause(Ref),
    /// Adds a body without effects to a slot.
    AddLeaf(Ref, Half, Res),
    /// `a.chain_deferred(b)`.
    Chain(Ref, Ref),
}

/// A callback, errback or canceller body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// What it returns.
    pub res: Res,
    /// What it does first, in order.
    pub effects: Vec<Effect>,
}

/// One line of a coroutine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoStep {
    /// `await` a slot's Deferred; with `catch`, a failure is caught (the
    /// coroutine goes on with `None`), else it is raised.
    Await(Ref, bool),
    /// Does an effect.
    Effect(Effect),
    /// Returns a value.
    Return(Val),
    /// Raises a failure.
    Raise(Err),
    /// Panics.
    Panic,
}

/// One public-API call (or a few, for the combinators).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `Deferred::new()` or `Deferred::with_canceller(body)`.
    New(Ref, Option<Body>),
    /// `succeed(v)`.
    Succeed(Ref, Val),
    /// `fail(e)`.
    Fail(Ref, Err),
    /// `callback(v)`.
    Fire(Ref, Val),
    /// `errback(e)`.
    Errback(Ref, Err),
    /// `add_callback` / `add_errback` / `add_both`.
    Add(Ref, Half, Body),
    /// `add_callbacks(cb, eb)`.
    AddCallbacks(Ref, Body, Body),
    /// `cancel()`.
    Cancel(Ref),
    /// `pause()`.
    Pause(Ref),
    /// `unpause()`.
    Unpause(Ref),
    /// `a.chain_deferred(b)`.
    Chain(Ref, Ref),
    /// `gather_results(inputs, consume_errors)`.
    Gather(Ref, Vec<Ref>, bool),
    /// `DeferredList::with_flags(inputs, flags)` (bits: fire on one
    /// callback, fire on one errback, consume errors).
    DList(Ref, Vec<Ref>, u8),
    /// `race(inputs)`.
    Race(Ref, Vec<Ref>),
    /// `ensure_deferred(async { steps })`.
    Coroutine(Ref, Vec<CoStep>),
    /// The first slot's handle copied into the second (re-typed with `cast`
    /// when the kinds differ).
    Copy(Ref, Ref),
    /// Drops a slot's handle.
    Drop(Ref),
    /// `add_passthrough`.
    Passthrough(Ref),
}

// ---------------------------------------------------------------------------
// Decoding and encoding.

/// Bytes read one at a time; past the end, every byte is 0.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn slot(&mut self) -> Ref {
        let b = self.byte() % (ANY_SLOTS + TYPED_SLOTS);
        if b < ANY_SLOTS {
            Ref::Any(b)
        } else {
            Ref::Typed(b - ANY_SLOTS)
        }
    }

    fn int(&mut self) -> i64 {
        match self.byte() {
            b @ 0..=250 => i64::from(b) - 125,
            251 => i64::MAX,
            252 => i64::MIN,
            253 => i64::MAX - 1,
            254 => i64::MIN + 1,
            _ => 1_000_000,
        }
    }

    fn err(&mut self) -> Err {
        match self.byte() % 3 {
            0 => Err::User,
            1 => Err::Cancelled,
            _ => Err::Msg,
        }
    }

    fn half(&mut self) -> Half {
        match self.byte() % 3 {
            0 => Half::Callback,
            1 => Half::Errback,
            _ => Half::Both,
        }
    }

    fn val(&mut self) -> Val {
        match self.byte() % 6 {
            0 => Val::Token,
            1 => Val::Int(self.int()),
            2 => Val::None,
            3 => Val::Opaque,
            4 => Val::Deferred(self.slot()),
            _ => Val::Failure(self.err()),
        }
    }

    fn res(&mut self) -> Res {
        match self.byte() % 7 {
            0 => Res::Pass,
            1 => Res::Value(self.val()),
            2 => Res::Fail(self.err()),
            3 => Res::Return(self.slot()),
            4 => Res::Panic,
            5 => Res::Trap(self.val()),
            _ => Res::Add(self.int()),
        }
    }

    fn effect(&mut self) -> Effect {
        match self.byte() % 7 {
            0 => Effect::Fire(self.slot(), self.val()),
            1 => Effect::Errback(self.slot(), self.err()),
            2 => Effect::Cancel(self.slot()),
            3 => Effect::Pause(self.slot()),
            4 => Effect::Unpause(self.slot()),
            5 => Effect::AddLeaf(self.slot(), self.half(), self.res()),
            _ => Effect::Chain(self.slot(), self.slot()),
        }
    }

    fn body(&mut self) -> Body {
        let res = self.res();
        let n = self.byte() % (MAX_EFFECTS + 1);
        let effects = (0..n).map(|_| self.effect()).collect();
        Body { res, effects }
    }

    fn inputs(&mut self) -> Vec<Ref> {
        let n = self.byte() % (MAX_INPUTS + 1);
        (0..n).map(|_| self.slot()).collect()
    }

    fn step(&mut self) -> CoStep {
        match self.byte() % 5 {
            0 => CoStep::Await(self.slot(), self.byte() % 2 == 1),
            1 => CoStep::Effect(self.effect()),
            2 => CoStep::Return(self.val()),
            3 => CoStep::Raise(self.err()),
            _ => CoStep::Panic,
        }
    }

    fn op(&mut self) -> Op {
        match self.byte() % 18 {
            0 => {
                let slot = self.slot();
                let canceller = (self.byte() % 2 == 1).then(|| self.body());
                Op::New(slot, canceller)
            }
            1 => Op::Succeed(self.slot(), self.val()),
            2 => Op::Fail(self.slot(), self.err()),
            3 => Op::Fire(self.slot(), self.val()),
            4 => Op::Errback(self.slot(), self.err()),
            5 => Op::Add(self.slot(), self.half(), self.body()),
            6 => Op::AddCallbacks(self.slot(), self.body(), self.body()),
            7 => Op::Cancel(self.slot()),
            8 => Op::Pause(self.slot()),
            9 => Op::Unpause(self.slot()),
            10 => Op::Chain(self.slot(), self.slot()),
            11 => Op::Gather(self.slot(), self.inputs(), self.byte() % 2 == 1),
            12 => Op::DList(self.slot(), self.inputs(), self.byte() % 8),
            13 => Op::Race(self.slot(), self.inputs()),
            14 => {
                let slot = self.slot();
                let n = self.byte() % (MAX_STEPS + 1);
                Op::Coroutine(slot, (0..n).map(|_| self.step()).collect())
            }
            15 => Op::Copy(self.slot(), self.slot()),
            16 => Op::Drop(self.slot()),
            _ => Op::Passthrough(self.slot()),
        }
    }
}

/// The ops `data` decodes to (at most [`MAX_OPS`]).
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut r = Reader { data, pos: 0 };
    let mut ops = Vec::new();
    while !r.at_end() && ops.len() < MAX_OPS {
        ops.push(r.op());
    }
    ops
}

/// Bytes that [`decode`] turns back into `ops` (for writing seeds).
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut w = Writer(Vec::new());
    for op in ops {
        w.op(op);
    }
    w.0
}

struct Writer(Vec<u8>);

impl Writer {
    fn b(&mut self, b: u8) {
        self.0.push(b);
    }

    fn slot(&mut self, r: Ref) {
        match r {
            Ref::Any(i) => self.b(i % ANY_SLOTS),
            Ref::Typed(i) => self.b(ANY_SLOTS + i % TYPED_SLOTS),
        }
    }

    fn int(&mut self, n: i64) {
        self.b(match n {
            i64::MAX => 251,
            i64::MIN => 252,
            n if n == i64::MAX - 1 => 253,
            n if n == i64::MIN + 1 => 254,
            1_000_000 => 255,
            n => (n.clamp(-125, 125) + 125) as u8,
        });
    }

    fn err(&mut self, e: Err) {
        self.b(match e {
            Err::User => 0,
            Err::Cancelled => 1,
            Err::Msg => 2,
        });
    }

    fn half(&mut self, h: Half) {
        self.b(match h {
            Half::Callback => 0,
            Half::Errback => 1,
            Half::Both => 2,
        });
    }

    fn val(&mut self, v: &Val) {
        match v {
            Val::Token => self.b(0),
            Val::Int(n) => {
                self.b(1);
                self.int(*n);
            }
            Val::None => self.b(2),
            Val::Opaque => self.b(3),
            Val::Deferred(r) => {
                self.b(4);
                self.slot(*r);
            }
            Val::Failure(e) => {
                self.b(5);
                self.err(*e);
            }
        }
    }

    fn res(&mut self, r: &Res) {
        match r {
            Res::Pass => self.b(0),
            Res::Value(v) => {
                self.b(1);
                self.val(v);
            }
            Res::Fail(e) => {
                self.b(2);
                self.err(*e);
            }
            Res::Return(s) => {
                self.b(3);
                self.slot(*s);
            }
            Res::Panic => self.b(4),
            Res::Trap(v) => {
                self.b(5);
                self.val(v);
            }
            Res::Add(n) => {
                self.b(6);
                self.int(*n);
            }
        }
    }

    fn effect(&mut self, e: &Effect) {
        match e {
            Effect::Fire(r, v) => {
                self.b(0);
                self.slot(*r);
                self.val(v);
            }
            Effect::Errback(r, e) => {
                self.b(1);
                self.slot(*r);
                self.err(*e);
            }
            Effect::Cancel(r) => {
                self.b(2);
                self.slot(*r);
            }
            Effect::Pause(r) => {
                self.b(3);
                self.slot(*r);
            }
            Effect::Unpause(r) => {
                self.b(4);
                self.slot(*r);
            }
            Effect::AddLeaf(r, h, res) => {
                self.b(5);
                self.slot(*r);
                self.half(*h);
                self.res(res);
            }
            Effect::Chain(a, b) => {
                self.b(6);
                self.slot(*a);
                self.slot(*b);
            }
        }
    }

    fn body(&mut self, body: &Body) {
        self.res(&body.res);
        let n = body.effects.len().min(MAX_EFFECTS as usize);
        self.b(n as u8);
        for e in &body.effects[..n] {
            self.effect(e);
        }
    }

    fn inputs(&mut self, inputs: &[Ref]) {
        let n = inputs.len().min(MAX_INPUTS as usize);
        self.b(n as u8);
        for r in &inputs[..n] {
            self.slot(*r);
        }
    }

    fn step(&mut self, s: &CoStep) {
        match s {
            CoStep::Await(r, catch) => {
                self.b(0);
                self.slot(*r);
                self.b(u8::from(*catch));
            }
            CoStep::Effect(e) => {
                self.b(1);
                self.effect(e);
            }
            CoStep::Return(v) => {
                self.b(2);
                self.val(v);
            }
            CoStep::Raise(e) => {
                self.b(3);
                self.err(*e);
            }
            CoStep::Panic => self.b(4),
        }
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::New(r, canceller) => {
                self.b(0);
                self.slot(*r);
                match canceller {
                    None => self.b(0),
                    Some(body) => {
                        self.b(1);
                        self.body(body);
                    }
                }
            }
            Op::Succeed(r, v) => {
                self.b(1);
                self.slot(*r);
                self.val(v);
            }
            Op::Fail(r, e) => {
                self.b(2);
                self.slot(*r);
                self.err(*e);
            }
            Op::Fire(r, v) => {
                self.b(3);
                self.slot(*r);
                self.val(v);
            }
            Op::Errback(r, e) => {
                self.b(4);
                self.slot(*r);
                self.err(*e);
            }
            Op::Add(r, h, body) => {
                self.b(5);
                self.slot(*r);
                self.half(*h);
                self.body(body);
            }
            Op::AddCallbacks(r, cb, eb) => {
                self.b(6);
                self.slot(*r);
                self.body(cb);
                self.body(eb);
            }
            Op::Cancel(r) => {
                self.b(7);
                self.slot(*r);
            }
            Op::Pause(r) => {
                self.b(8);
                self.slot(*r);
            }
            Op::Unpause(r) => {
                self.b(9);
                self.slot(*r);
            }
            Op::Chain(a, b) => {
                self.b(10);
                self.slot(*a);
                self.slot(*b);
            }
            Op::Gather(r, inputs, consume) => {
                self.b(11);
                self.slot(*r);
                self.inputs(inputs);
                self.b(u8::from(*consume));
            }
            Op::DList(r, inputs, flags) => {
                self.b(12);
                self.slot(*r);
                self.inputs(inputs);
                self.b(flags % 8);
            }
            Op::Race(r, inputs) => {
                self.b(13);
                self.slot(*r);
                self.inputs(inputs);
            }
            Op::Coroutine(r, steps) => {
                self.b(14);
                self.slot(*r);
                let n = steps.len().min(MAX_STEPS as usize);
                self.b(n as u8);
                for s in &steps[..n] {
                    self.step(s);
                }
            }
            Op::Copy(a, b) => {
                self.b(15);
                self.slot(*a);
                self.slot(*b);
            }
            Op::Drop(r) => {
                self.b(16);
                self.slot(*r);
            }
            Op::Passthrough(r) => {
                self.b(17);
                self.slot(*r);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Running.

type D = Deferred<AnyValue>;
type T = Deferred<i64>;

/// A handle of either kind.
#[derive(Clone)]
enum Handle {
    Any(D),
    Typed(T),
}

impl Handle {
    fn any(&self) -> D {
        match self {
            Handle::Any(d) => d.clone(),
            Handle::Typed(t) => t.as_any(),
        }
    }

    fn typed(&self) -> T {
        match self {
            Handle::Any(d) => d.cast(),
            Handle::Typed(t) => t.clone(),
        }
    }

    fn called(&self) -> bool {
        match self {
            Handle::Any(d) => d.called(),
            Handle::Typed(t) => t.called(),
        }
    }

    fn paused(&self) -> i32 {
        match self {
            Handle::Any(d) => d.paused(),
            Handle::Typed(t) => t.paused(),
        }
    }

    fn repr(&self) -> String {
        match self {
            Handle::Any(d) => format!("{d:?}"),
            Handle::Typed(t) => format!("{t:?}"),
        }
    }

    /// The Deferred this one waits on, if it holds one.
    fn waiting_on(&self) -> Option<D> {
        match self.any().result() {
            State::Waiting(w) => Some(w),
            _ => None,
        }
    }

    fn ptr_eq(&self, other: &D) -> bool {
        match self {
            Handle::Any(d) => d.ptr_eq(other),
            Handle::Typed(t) => t.ptr_eq(other),
        }
    }
}

/// What the harness knows about one Deferred (by serial number: handles
/// copied between slots keep theirs).
#[derive(Default)]
struct Info {
    /// Made by `new` without a canceller: the only kind whose cancel may
    /// swallow a fire.
    plain: bool,
    /// Target of a `chain_deferred`: the library may fire it.
    chain_target: bool,
    /// Pauses minus unpauses made by the harness.
    net_pause: i64,
    /// Fires on it that came back `Ok` although it had fired.
    swallowed: u32,
    /// The harness cancelled it without a canceller: its next fire must be
    /// swallowed.
    armed: bool,
    /// A coroutine awaited it: bodies no longer pause or unpause it (see
    /// [`Harness::effect`]).
    awaited: bool,
    /// A `race`, `gather_results` or `DeferredList`: never given as a
    /// plain value (see [`Harness::any_value`]).
    composite: bool,
    /// A combinator with two inputs or more: never returned from a body
    /// or awaited (see [`Harness::may_wait_on`]).
    fans_out: bool,
    /// It was paused or unpaused while it waited on another Deferred, or by
    /// a body (while a chain runs, when it may be about to wait): the
    /// wait's own pause and the harness's then mix (an unpause undoes the
    /// wait's pause, the hand-off undoes it again; a wait begun after an
    /// unpause absorbs it), so balancing the harness's pauses does not
    /// restore a count the checks can read (in Twisted too: such a
    /// Deferred can end paused once waiting on nothing, or twice).
    paused_while_waiting: bool,
    /// How many plain results a combinator's result holds, counting
    /// nested combinators' (0 for a plain Deferred, which counts as 1).
    weight: u64,
}

struct Slot {
    serial: usize,
    handle: Handle,
}

struct Callback {
    serial: usize,
    /// Its body ran.
    ran: bool,
    /// Its link was consumed: the body ran, or the link passed the result
    /// by (a callback meeting a failure, an errback meeting a value).
    consumed: bool,
    noop: bool,
}

/// Marks a callback's link consumed when the library drops it (after
/// running it or passing the result by).
struct Consumed {
    harness: std::rc::Weak<Harness>,
    id: usize,
}

impl Drop for Consumed {
    fn drop(&mut self) {
        if let Some(h) = self.harness.upgrade()
            && let Ok(mut cbs) = h.callbacks.try_borrow_mut()
        {
            cbs[self.id].consumed = true;
        }
    }
}

struct Harness {
    slots: RefCell<Vec<Option<Slot>>>,
    infos: RefCell<Vec<Info>>,
    callbacks: RefCell<Vec<Callback>>,
    violations: RefCell<Vec<String>>,
    /// Effects done so far ([`MAX_EFFECTS_RUN`]).
    effects_run: Cell<u32>,
    trace: bool,
}

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ops decoded and run.
    pub ops: usize,
    /// Callbacks the harness added (drain included).
    pub callbacks: usize,
    /// Callbacks that ran.
    pub ran: usize,
    /// Deferreds [`Tracker::collect`] freed at the end.
    pub collected: usize,
}

fn index(r: Ref) -> usize {
    match r {
        Ref::Any(i) => usize::from(i % ANY_SLOTS),
        Ref::Typed(i) => usize::from(ANY_SLOTS + i % TYPED_SLOTS),
    }
}

fn make_failure(e: Err) -> Failure {
    match e {
        Err::User => Failure::new(UserError(Token::new())),
        Err::Cancelled => Failure::new(CancelledError),
        Err::Msg => Failure::msg("message"),
    }
}

impl Harness {
    fn violate(&self, message: String) {
        self.violations.borrow_mut().push(message);
    }

    fn get(&self, r: Ref) -> Option<(usize, Handle)> {
        self.slots.borrow()[index(r)]
            .as_ref()
            .map(|s| (s.serial, s.handle.clone()))
    }

    /// Binds a new Deferred (a new serial) to `r`.
    fn bind_new(&self, r: Ref, handle: Handle, plain: bool) {
        self.bind_info(
            r,
            handle,
            Info {
                plain,
                ..Info::default()
            },
        );
    }

    /// Binds a new combinator Deferred (of `inputs` inputs, holding
    /// `weight` plain results) to `r`.
    fn bind_composite(&self, r: Ref, handle: Handle, (inputs, weight): (usize, u64)) {
        self.bind_info(
            r,
            handle,
            Info {
                composite: true,
                fans_out: inputs >= 2,
                weight,
                ..Info::default()
            },
        );
    }

    /// Whether a body may return (or a coroutine await) the Deferred of
    /// `serial`. Not a combinator of several inputs: cancelling one cancels
    /// each input, and an input that waits on it, directly or through
    /// others, forwards that cancel back to it, which cancels each input
    /// again… until `RecursionError` at a depth of
    /// [`MAX_NESTING`](twisted_deferred::MAX_NESTING): n^200 cancels for n
    /// inputs. Twisted does the same (`DeferredList.cancel` logs each
    /// input's exception and goes on to the next), so the harness keeps
    /// such waits to combinators of one input, where the recursion is
    /// linear.
    fn may_wait_on(&self, serial: usize) -> bool {
        !self.infos.borrow()[serial].fans_out
    }

    fn bind_info(&self, r: Ref, handle: Handle, info: Info) {
        let serial = {
            let mut infos = self.infos.borrow_mut();
            infos.push(info);
            infos.len() - 1
        };
        self.bind(r, serial, handle);
    }

    fn bind(&self, r: Ref, serial: usize, handle: Handle) {
        // The handle is stored as the slot's kind.
        let handle = match r {
            Ref::Any(_) => Handle::Any(handle.any()),
            Ref::Typed(_) => Handle::Typed(handle.typed()),
        };
        let old = self.slots.borrow_mut()[index(r)].replace(Slot { serial, handle });
        drop(old);
    }

    fn register(&self, serial: usize, noop: bool) -> usize {
        let mut cbs = self.callbacks.borrow_mut();
        cbs.push(Callback {
            serial,
            ran: false,
            consumed: false,
            noop,
        });
        cbs.len() - 1
    }

    fn ran(&self, id: usize) {
        let twice = {
            let mut cbs = self.callbacks.borrow_mut();
            std::mem::replace(&mut cbs[id].ran, true)
        };
        if twice {
            self.violate(format!("callback #{id} ran twice (B11)"));
        }
    }

    fn runs(&self) -> usize {
        self.callbacks.borrow().iter().filter(|c| c.ran).count()
    }

    /// The value `v` as a Rust value for a `Deferred<AnyValue>`.
    fn any_value(&self, v: &Val) -> AnyValue {
        match v {
            Val::Token => AnyValue::new(Token::new()),
            Val::Int(n) => AnyValue::new(*n),
            Val::None => AnyValue::none(),
            Val::Opaque => AnyValue::opaque(Token::new()),
            // A combinator's Deferred given as a value to one of its own
            // inputs ends up inside its own result (`race([d])` with
            // `d.callback(AnyValue::new(r))`: r's result is `(0, r)`), a
            // cycle through a value that `Tracker::collect` does not break
            // (it drops links and Deferreds held as results, not values):
            // a known leak, reported; the harness stays clear of it.
            Val::Deferred(r) => match self.get(*r) {
                Some((serial, h)) if !self.infos.borrow()[serial].composite => {
                    AnyValue::new(h.any())
                }
                _ => AnyValue::none(),
            },
            Val::Failure(e) => AnyValue::new(make_failure(*e)),
        }
    }

    fn typed_value(v: &Val) -> i64 {
        match v {
            Val::Token => 1,
            Val::Int(n) => *n,
            Val::None => 0,
            Val::Opaque => 2,
            Val::Deferred(_) => 3,
            Val::Failure(_) => 4,
        }
    }

    /// `callback(v)` / `errback(e)` on `r`, with the checks of a fire.
    fn fire(&self, r: Ref, what: Result<&Val, Err>) {
        let Some((serial, h)) = self.get(r) else {
            return;
        };
        let was_called = h.called();
        let before = was_called.then(|| (h.repr(), self.runs()));
        let result = match (&h, what) {
            (Handle::Any(d), Ok(v)) => d.callback(self.any_value(v)),
            (Handle::Typed(t), Ok(Val::Failure(e))) => t.errback(make_failure(*e)),
            (Handle::Typed(t), Ok(v)) => t.callback(Self::typed_value(v)),
            (Handle::Any(d), Err(e)) => d.errback(make_failure(e)),
            (Handle::Typed(t), Err(e)) => t.errback(make_failure(e)),
        };
        let mut infos = self.infos.borrow_mut();
        let info = &mut infos[serial];
        if let Some((repr, runs)) = before {
            // B60, B49: a fired Deferred never fires again.
            if h.repr() != repr || self.runs() != runs {
                self.violate(format!(
                    "firing fired {repr} changed it to {} or ran callbacks (B13, B60)",
                    h.repr()
                ));
            }
            match &result {
                Ok(()) => {
                    info.swallowed += 1;
                    if !info.plain || info.swallowed > 1 {
                        self.violate(format!(
                            "a fire of fired {repr} was swallowed (swallows: {}, made without canceller: {}) (B49-B51)",
                            info.swallowed, info.plain
                        ));
                    }
                }
                Err(f) if f.check::<AlreadyCalledError>() => {
                    if info.armed && !info.chain_target {
                        self.violate(format!(
                            "the first fire after a cancel without canceller raised AlreadyCalledError on {repr} (B49)"
                        ));
                    }
                }
                Err(f) => self.violate(format!("fire of fired {repr} failed with {f:?}")),
            }
            info.armed = false;
        } else {
            match &result {
                Ok(()) => {}
                Err(f) if f.check::<RecursionError>() => {}
                Err(f) => self.violate(format!("first fire of {} failed: {f:?}", h.repr())),
            }
            if !h.called() {
                self.violate(format!("{} is not called after its first fire", h.repr()));
            }
        }
    }

    fn cancel(&self, r: Ref) {
        let Some((serial, h)) = self.get(r) else {
            return;
        };
        let was_called = h.called();
        let result = h.any().cancel();
        let plain = self.infos.borrow()[serial].plain;
        if !was_called && plain && result.is_ok() {
            if !h.called() {
                self.violate(format!(
                    "cancel without canceller left {} unfired (B48)",
                    h.repr()
                ));
            }
            let mut infos = self.infos.borrow_mut();
            // B50: only the first cancel arms the swallow.
            infos[serial].armed = infos[serial].swallowed == 0;
        }
    }

    /// `pause()` (`delta` 1) or `unpause()` (-1) of `r`, from a body's
    /// effect when `in_body`.
    fn pause(&self, r: Ref, delta: i64, in_body: bool) {
        let Some((serial, h)) = self.get(r) else {
            return;
        };
        {
            let mut infos = self.infos.borrow_mut();
            infos[serial].net_pause += delta;
            if in_body || h.any().is_waiting() {
                infos[serial].paused_while_waiting = true;
            }
        }
        if delta > 0 {
            h.any().pause();
        } else {
            h.any().unpause();
        }
    }

    fn chain(&self, a: Ref, b: Ref) {
        let (Some((_, ha)), Some((sb, hb))) = (self.get(a), self.get(b)) else {
            return;
        };
        self.infos.borrow_mut()[sb].chain_target = true;
        match (ha, hb) {
            (Handle::Typed(x), Handle::Typed(y)) => {
                x.chain_deferred(&y);
            }
            (x, y) => {
                x.any().chain_deferred(&y.any());
            }
        }
    }

    fn effect(self: &Rc<Self>, e: &Effect) {
        let n = self.effects_run.get();
        if n >= MAX_EFFECTS_RUN {
            return;
        }
        self.effects_run.set(n + 1);
        if let Effect::Pause(r) | Effect::Unpause(r) = e
            && let Some((serial, _)) = self.get(*r)
            && self.infos.borrow()[serial].awaited
        {
            // A Deferred paused (or unpaused below zero) by one of the links
            // of its own run, then awaited by a coroutine that one of its
            // later links resumes, spins forever: the coroutine finds it
            // paused, adds a link to it and suspends; the running loop runs
            // that link at once (B26), which resumes the coroutine, which
            // finds it paused… Twisted does the same (`Deferred.send`
            // returns `self` while paused). Not a wedge Twisted lacks, so
            // the harness stays clear of it.
            return;
        }
        match e {
            Effect::Fire(r, v) => self.fire(*r, Ok(v)),
            Effect::Errback(r, e) => self.fire(*r, Err(*e)),
            Effect::Cancel(r) => self.cancel(*r),
            Effect::Pause(r) => self.pause(*r, 1, true),
            Effect::Unpause(r) => self.pause(*r, -1, true),
            Effect::AddLeaf(r, half, res) => self.add(
                *r,
                *half,
                Rc::new(Body {
                    res: res.clone(),
                    effects: Vec::new(),
                }),
                false,
            ),
            Effect::Chain(a, b) => self.chain(*a, *b),
        }
    }

    /// What a body of a `Deferred<AnyValue>` returns for `input`.
    fn any_outcome(
        self: &Rc<Self>,
        res: &Res,
        input: Result<AnyValue, Failure>,
        _owner: usize,
    ) -> Outcome<AnyValue> {
        match res {
            Res::Pass => input.into(),
            Res::Value(v) => Outcome::Value(self.any_value(v)),
            Res::Fail(e) => Outcome::Failure(make_failure(*e)),
            Res::Return(r) => match self.get(*r) {
                Some((serial, h)) if self.may_wait_on(serial) => Outcome::Deferred(h.any()),
                _ => input.into(),
            },
            Res::Panic => intentional_panic(),
            Res::Trap(v) => match input {
                Err(f) if f.check::<CancelledError>() => Outcome::Value(self.any_value(v)),
                other => other.into(),
            },
            Res::Add(n) => match input.as_ref().ok().and_then(|v| v.downcast_ref::<i64>()) {
                Some(x) => match x.checked_add(*n) {
                    Some(sum) => Outcome::Value(AnyValue::new(sum)),
                    None => Outcome::Failure(Failure::msg("overflow")),
                },
                None => input.into(),
            },
        }
    }

    /// What a body of a `Deferred<i64>` (the one of serial `owner`)
    /// returns for `input`. It never returns `owner` itself: a typed
    /// Deferred waiting on itself cannot give itself to the typed callbacks
    /// added later (Python passes them the Deferred), so what follows is
    /// not Twisted's (Twisted deprecates returning the Deferred itself).
    fn typed_outcome(
        self: &Rc<Self>,
        res: &Res,
        input: Result<i64, Failure>,
        owner: usize,
    ) -> Outcome<i64> {
        match res {
            Res::Pass => input.into(),
            Res::Value(v) => Outcome::Value(Self::typed_value(v)),
            Res::Fail(e) => Outcome::Failure(make_failure(*e)),
            Res::Return(r) => match self.get(*r) {
                Some((serial, h)) if serial != owner && self.may_wait_on(serial) => {
                    Outcome::Deferred(h.typed())
                }
                _ => input.into(),
            },
            Res::Panic => intentional_panic(),
            Res::Trap(v) => match input {
                Err(f) if f.check::<CancelledError>() => Outcome::Value(Self::typed_value(v)),
                other => other.into(),
            },
            Res::Add(n) => match input {
                Ok(x) => match x.checked_add(*n) {
                    Some(sum) => Outcome::Value(sum),
                    None => Outcome::Failure(Failure::msg("overflow")),
                },
                Err(f) => Outcome::Failure(f),
            },
        }
    }

    /// Adds a body to `r` (`noop`: the drain's re-triggering pass-through).
    fn add(self: &Rc<Self>, r: Ref, half: Half, body: Rc<Body>, noop: bool) {
        let Some((serial, h)) = self.get(r) else {
            return;
        };
        let id = self.register(serial, noop);
        let weak = Rc::downgrade(self);
        let token = Token::new();
        let consumed = Consumed {
            harness: Rc::downgrade(self),
            id,
        };
        // Runs the body: marks it run, does its effects, computes its result.
        macro_rules! run_body {
            ($outcome:ident, $input:expr, $pass:expr) => {{
                let _token = &token;
                let _consumed = &consumed;
                let input = $input;
                let Some(h) = weak.upgrade() else {
                    return $pass(input);
                };
                h.ran(id);
                for e in &body.effects {
                    h.effect(e);
                }
                h.$outcome(&body.res, input, serial)
            }};
        }
        match (h, half) {
            (Handle::Any(d), Half::Callback) => {
                d.add_callback(move |v: AnyValue| run_body!(any_outcome, Ok(v), Outcome::from));
            }
            (Handle::Any(d), Half::Errback) => {
                d.add_errback(move |f: Failure| run_body!(any_outcome, Err(f), Outcome::from));
            }
            (Handle::Any(d), Half::Both) => {
                d.add_both(move |r: Result<AnyValue, Failure>| {
                    run_body!(any_outcome, r, Outcome::from)
                });
            }
            (Handle::Typed(t), Half::Callback) => {
                t.add_callback(move |v: i64| run_body!(typed_outcome, Ok(v), Outcome::from));
            }
            (Handle::Typed(t), Half::Errback) => {
                t.add_errback(move |f: Failure| run_body!(typed_outcome, Err(f), Outcome::from));
            }
            (Handle::Typed(t), Half::Both) => {
                t.add_both(move |r: Result<i64, Failure>| {
                    run_body!(typed_outcome, r, Outcome::from)
                });
            }
        }
    }

    /// `add_callbacks(cb, eb)`: one link, registered as one callback.
    fn add_callbacks(self: &Rc<Self>, r: Ref, cb: Rc<Body>, eb: Rc<Body>) {
        let Some((serial, h)) = self.get(r) else {
            return;
        };
        let id = self.register(serial, false);
        let (w1, w2) = (Rc::downgrade(self), Rc::downgrade(self));
        let (t1, t2) = (Token::new(), Token::new());
        // Both halves live in one link: dropping either marks it consumed.
        let c1 = Consumed {
            harness: Rc::downgrade(self),
            id,
        };
        let c2 = Consumed {
            harness: Rc::downgrade(self),
            id,
        };
        macro_rules! half {
            ($w:ident, $t:ident, $c:ident, $body:ident, $outcome:ident, $input:expr) => {{
                let _token = &$t;
                let _consumed = &$c;
                let input = $input;
                let Some(h) = $w.upgrade() else {
                    return Outcome::from(input);
                };
                h.ran(id);
                for e in &$body.effects {
                    h.effect(e);
                }
                h.$outcome(&$body.res, input, serial)
            }};
        }
        match h {
            Handle::Any(d) => {
                d.add_callbacks(
                    move |v: AnyValue| half!(w1, t1, c1, cb, any_outcome, Ok(v)),
                    move |f: Failure| half!(w2, t2, c2, eb, any_outcome, Err(f)),
                );
            }
            Handle::Typed(t) => {
                t.add_callbacks(
                    move |v: i64| half!(w1, t1, c1, cb, typed_outcome, Ok(v)),
                    move |f: Failure| half!(w2, t2, c2, eb, typed_outcome, Err(f)),
                );
            }
        }
    }

    fn new_deferred(self: &Rc<Self>, r: Ref, canceller: &Option<Body>) {
        let Some(body) = canceller else {
            let handle = match r {
                Ref::Any(_) => Handle::Any(D::new()),
                Ref::Typed(_) => Handle::Typed(T::new()),
            };
            self.bind_new(r, handle, true);
            return;
        };
        let weak = Rc::downgrade(self);
        let body = body.clone();
        let token = Token::new();
        // A canceller runs its effects; a `Fail`/`Panic` result makes it
        // raise, anything else lets the Deferred be cancelled.
        let canceller = move || -> Result<(), Failure> {
            let _token = &token;
            let Some(h) = weak.upgrade() else {
                return Ok(());
            };
            for e in &body.effects {
                h.effect(e);
            }
            match &body.res {
                Res::Fail(e) => Err(make_failure(*e)),
                Res::Panic => intentional_panic(),
                _ => Ok(()),
            }
        };
        let handle = match r {
            Ref::Any(_) => Handle::Any(D::with_canceller(move |_d: &D| canceller())),
            Ref::Typed(_) => Handle::Typed(T::with_canceller(move |_t: &T| canceller())),
        };
        self.bind_new(r, handle, false);
    }

    fn coroutine(self: &Rc<Self>, r: Ref, steps: &[CoStep]) {
        let weak = Rc::downgrade(self);
        let steps = steps.to_vec();
        let token = Token::new();
        // Its own serial, once bound: it never awaits itself. A coroutine
        // awaiting its own Deferred, cancelled and then unpaused, loops for
        // ever, in Twisted too (checked against Twisted 26.10.0).
        let own = Rc::new(Cell::new(usize::MAX));
        let me = own.clone();
        let body = async move {
            let _token = token;
            let mut last = AnyValue::none();
            for step in &steps {
                let Some(h) = weak.upgrade() else {
                    return Err(Failure::msg("harness is gone"));
                };
                match step {
                    CoStep::Await(r, catch) => {
                        let Some((serial, d)) = h.get(*r) else {
                            continue;
                        };
                        if serial == me.get()
                            || !h.may_wait_on(serial)
                            || d.called() && d.paused() != 0
                        {
                            // Awaiting a fired, paused Deferred spins if it is
                            // running (see `effect`), in Twisted too.
                            continue;
                        }
                        h.infos.borrow_mut()[serial].awaited = true;
                        drop(h);
                        let outcome = match d {
                            Handle::Any(d) => d.await,
                            Handle::Typed(t) => t.await.map(AnyValue::new),
                        };
                        match outcome {
                            Ok(v) => last = v,
                            Err(_) if *catch => last = AnyValue::none(),
                            Err(f) => return Err(f),
                        }
                    }
                    CoStep::Effect(e) => h.effect(e),
                    CoStep::Return(v) => return Ok(h.any_value(v)),
                    CoStep::Raise(e) => return Err(make_failure(*e)),
                    CoStep::Panic => intentional_panic(),
                }
            }
            Ok(last)
        };
        let handle = match r {
            Ref::Any(_) => Handle::Any(ensure_deferred(body)),
            Ref::Typed(_) => Handle::Typed(ensure_deferred(async move {
                body.await
                    .map(|v| v.downcast_ref::<i64>().copied().unwrap_or(0))
            })),
        };
        self.bind_new(r, handle, false);
        own.set(self.infos.borrow().len() - 1);
    }

    /// A combinator's inputs, with how many plain results its result will
    /// hold. Results are values, cloned into the combinator's result
    /// (Python shares them by reference): a list whose inputs are the same
    /// list twice, 20 times over, holds 2^20 copies. Inputs past
    /// [`MAX_WEIGHT`] are left out, which keeps such nests linear.
    fn inputs(&self, inputs: &[Ref]) -> (Vec<Handle>, u64) {
        let infos = self.infos.borrow();
        let mut weight = 0u64;
        let mut kept = Vec::new();
        for (serial, h) in inputs.iter().filter_map(|r| self.get(*r)) {
            let w = infos.get(serial).map_or(1, |i| i.weight.max(1));
            if weight + w <= MAX_WEIGHT {
                weight += w;
                kept.push(h);
            }
        }
        (kept, weight)
    }

    fn op(self: &Rc<Self>, op: &Op) {
        match op {
            Op::New(r, canceller) => self.new_deferred(*r, canceller),
            Op::Succeed(r, v) => {
                let handle = match r {
                    Ref::Any(_) => Handle::Any(succeed(self.any_value(v))),
                    Ref::Typed(_) => Handle::Typed(succeed(Self::typed_value(v))),
                };
                self.bind_new(*r, handle, false);
            }
            Op::Fail(r, e) => {
                let handle = match r {
                    Ref::Any(_) => Handle::Any(fail(make_failure(*e))),
                    Ref::Typed(_) => Handle::Typed(fail(make_failure(*e))),
                };
                self.bind_new(*r, handle, false);
            }
            Op::Fire(r, v) => self.fire(*r, Ok(v)),
            Op::Errback(r, e) => self.fire(*r, Err(*e)),
            Op::Add(r, half, body) => self.add(*r, *half, Rc::new(body.clone()), false),
            Op::AddCallbacks(r, cb, eb) => {
                self.add_callbacks(*r, Rc::new(cb.clone()), Rc::new(eb.clone()))
            }
            Op::Cancel(r) => self.cancel(*r),
            Op::Pause(r) => self.pause(*r, 1, false),
            Op::Unpause(r) => self.pause(*r, -1, false),
            Op::Chain(a, b) => self.chain(*a, *b),
            Op::Gather(r, inputs, consume) => {
                let (inputs, weight) = self.inputs(inputs);
                let handle = match r {
                    Ref::Any(_) => {
                        Handle::Any(gather_results(inputs.iter().map(Handle::any), *consume).cast())
                    }
                    Ref::Typed(_) => Handle::Typed(
                        gather_results(inputs.iter().map(Handle::typed), *consume).cast(),
                    ),
                };
                self.bind_composite(*r, handle, (inputs.len(), weight));
            }
            Op::DList(r, inputs, flags) => {
                let (inputs, weight) = self.inputs(inputs);
                let flags = DeferredListFlags {
                    fire_on_one_callback: flags & 1 != 0,
                    fire_on_one_errback: flags & 2 != 0,
                    consume_errors: flags & 4 != 0,
                };
                let handle = match r {
                    Ref::Any(_) => Handle::Any(
                        DeferredList::with_flags(inputs.iter().map(Handle::any), flags)
                            .into_deferred()
                            .cast(),
                    ),
                    Ref::Typed(_) => Handle::Typed(
                        DeferredList::with_flags(inputs.iter().map(Handle::typed), flags)
                            .into_deferred()
                            .cast(),
                    ),
                };
                self.bind_composite(*r, handle, (inputs.len(), weight));
            }
            Op::Race(r, inputs) => {
                let (inputs, weight) = self.inputs(inputs);
                let handle = match r {
                    Ref::Any(_) => Handle::Any(race(inputs.iter().map(Handle::any)).cast()),
                    Ref::Typed(_) => Handle::Typed(race(inputs.iter().map(Handle::typed)).cast()),
                };
                self.bind_composite(*r, handle, (inputs.len(), weight));
            }
            Op::Coroutine(r, steps) => self.coroutine(*r, steps),
            Op::Copy(from, to) => {
                if let Some((serial, h)) = self.get(*from) {
                    self.bind(*to, serial, h);
                }
            }
            Op::Drop(r) => {
                let old = self.slots.borrow_mut()[index(*r)].take();
                drop(old);
            }
            Op::Passthrough(r) => {
                if let Some((_, h)) = self.get(*r) {
                    let token = Token::new();
                    h.any().add_passthrough(move || drop(token));
                }
            }
        }
    }

    /// The live slots, one per Deferred: (serial, slot reference, handle).
    fn live(&self) -> Vec<(usize, Ref, Handle)> {
        let slots = self.slots.borrow();
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            if let Some(s) = s
                && seen.insert(s.serial)
            {
                let r = if i < usize::from(ANY_SLOTS) {
                    Ref::Any(i as u8)
                } else {
                    Ref::Typed(i as u8 - ANY_SLOTS)
                };
                out.push((s.serial, r, s.handle.clone()));
            }
        }
        out
    }

    /// Balances the pauses, fires what has not fired and re-triggers every
    /// chain, until a round runs nothing but the re-triggering callbacks.
    fn drain(self: &Rc<Self>) {
        for _round in 0..10_000 {
            let real_runs = || {
                self.callbacks
                    .borrow()
                    .iter()
                    .filter(|c| c.consumed && !c.noop)
                    .count()
            };
            let before = real_runs();
            // Balancing by `pause()` from -1 to 0 runs nothing (in Twisted
            // either): the callbacks left waiting run only when the next
            // round's added callback starts the chain again.
            let mut rebalanced = false;
            for (serial, r, h) in self.live() {
                let net = std::mem::take(&mut self.infos.borrow_mut()[serial].net_pause);
                rebalanced |= net != 0;
                for _ in 0..net.max(0) {
                    h.any().unpause();
                }
                for _ in 0..(-net).max(0) {
                    h.any().pause();
                }
                if !h.called() {
                    self.fire(r, Ok(&Val::Token));
                }
            }
            for (_, r, _) in self.live() {
                self.add(
                    r,
                    Half::Both,
                    Rc::new(Body {
                        res: Res::Pass,
                        effects: Vec::new(),
                    }),
                    true,
                );
            }
            let balanced = {
                let infos = self.infos.borrow();
                self.live()
                    .iter()
                    .all(|(serial, _, _)| infos[*serial].net_pause == 0)
            };
            if real_runs() == before && balanced && !rebalanced {
                return;
            }
        }
        self.violate("the drain did not settle".into());
    }

    /// After the drain: every Deferred with pause count 0 ran everything;
    /// one with count 1 waits on a Deferred that cannot hand over.
    fn check_drained(&self) {
        let live = self.live();
        {
            // A Deferred the harness paused or unpaused unevenly and then
            // let go of cannot be balanced: whatever waits on it (or is held
            // up by it, B40) may stay stuck, as in Twisted (B45).
            let infos = self.infos.borrow();
            let unbalanced_gone = infos.iter().enumerate().any(|(serial, info)| {
                info.net_pause != 0 && !live.iter().any(|(s, _, _)| *s == serial)
            });
            if unbalanced_gone {
                return;
            }
        }
        for (serial, _, h) in &live {
            if !h.called() {
                self.violate(format!("{} never fired", h.repr()));
            }
            // A Deferred whose callback returned the Deferred itself waits
            // on itself for ever (Twisted warns it "breaks the callback
            // chain"); every callback added to it later re-chains it and
            // pauses it once more, as in Twisted, so its count says nothing.
            // (Typed bodies never return their own Deferred: see
            // `typed_outcome`.)
            if h.waiting_on().is_some_and(|w| h.ptr_eq(&w))
                || self.infos.borrow()[*serial].paused_while_waiting
            {
                continue;
            }
            match h.paused() {
                0 => {
                    let stuck: Vec<usize> = self
                        .callbacks
                        .borrow()
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.serial == *serial && !c.consumed)
                        .map(|(i, _)| i)
                        .collect();
                    if !stuck.is_empty() {
                        self.violate(format!(
                            "{} is fired and not paused, but callbacks {stuck:?} never ran (wedged)",
                            h.repr()
                        ));
                    }
                }
                1 => match h.waiting_on() {
                    Some(w) => {
                        for (_, _, other) in &live {
                            if other.ptr_eq(&w) && other.called() && other.paused() == 0 {
                                self.violate(format!(
                                    "{} waits on {}, which is fired and not paused (wedged)",
                                    h.repr(),
                                    other.repr()
                                ));
                            }
                        }
                    }
                    None => self.violate(format!(
                        "{} has pause count 1 after balancing but waits on nothing",
                        h.repr()
                    )),
                },
                n => self.violate(format!("{} has pause count {n} after balancing", h.repr())),
            }
        }
    }

    fn assert_no_violation(&self, after: &str) {
        let v = self.violations.borrow();
        if !v.is_empty() {
            panic!("after {after}:\n  {}", v.join("\n  "));
        }
    }
}

/// Decodes `data` and runs it with every check (see the module docs);
/// panics on a violation.
pub fn run(data: &[u8]) -> Stats {
    run_ops(&decode(data))
}

/// Runs `ops` with every check (see the module docs); panics on a violation.
pub fn run_ops(ops: &[Op]) -> Stats {
    let tokens_before = Token::live();
    let trace = std::env::var_os("DEFERRED_OPS_TRACE").is_some();
    let (stats, reports) = capture_unhandled_errors(|| {
        let tracker = Tracker::start();
        let h = Rc::new(Harness {
            slots: RefCell::new(
                (0..usize::from(ANY_SLOTS + TYPED_SLOTS))
                    .map(|_| None)
                    .collect(),
            ),
            infos: RefCell::new(Vec::new()),
            callbacks: RefCell::new(Vec::new()),
            violations: RefCell::new(Vec::new()),
            effects_run: Cell::new(0),
            trace,
        });
        for (i, op) in ops.iter().enumerate() {
            if h.trace {
                eprintln!("op {i}: {op:?}");
            }
            h.op(op);
            h.assert_no_violation(&format!("op {i} ({op:?})"));
        }
        h.drain();
        h.assert_no_violation("the drain");
        h.check_drained();
        h.assert_no_violation("the drain (wedge check)");
        let callbacks = h.callbacks.borrow().len();
        let ran = h.runs();
        drop(h);
        let collected = tracker.collect();
        Stats {
            ops: ops.len(),
            callbacks,
            ran,
            collected,
        }
    });
    drop(reports);
    let leaked = Token::live() - tokens_before;
    assert!(
        leaked == 0,
        "{leaked} tokens (values, failures, callbacks, coroutines) still alive after Tracker::collect"
    );
    stats
}
