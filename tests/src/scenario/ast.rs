//! The syntax tree of a scenario (`../shared/conformance/FORMAT.md`).

/// A literal value `V`: an integer, `none`, `true`, `false` or a bare word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// An integer.
    Int(i64),
    /// `none`.
    None,
    /// `true` / `false`.
    Bool(bool),
    /// A bare word, a string.
    Word(String),
}

/// The type part of an error `E`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrKind {
    /// `E1` … `E9`.
    User(u8),
    /// `CancelledError`.
    Cancelled,
    /// `TimeoutError`.
    Timeout,
    /// `FirstError` (matched only).
    First,
    /// `AlreadyCalledError`.
    AlreadyCalled,
    /// `TypeError`.
    Type,
    /// `FailureGroup` (matched only).
    FailureGroup,
    /// `any` (matched only).
    Any,
}

impl ErrKind {
    /// True for the kinds that may be raised (not only matched).
    pub fn raisable(self) -> bool {
        !matches!(self, ErrKind::First | ErrKind::FailureGroup | ErrKind::Any)
    }
}

/// An error to raise: its type and, for `E1` … `E9`, an optional message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrSpec {
    /// The type.
    pub kind: ErrKind,
    /// The message of `E1:msg`.
    pub message: Option<String>,
}

/// The RESULT token of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultTok {
    /// `pass`.
    Pass,
    /// `add:N`.
    Add(i64),
    /// `const:V`.
    Const(Literal),
    /// `raise:E`.
    Raise(ErrSpec),
    /// `fail:E`.
    Fail(ErrSpec),
    /// `return:Y`.
    Return(String),
    /// `trap:E` / `trap:E:V`.
    Trap(ErrKind, Literal),
}

/// An EFFECT token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `callback:Y:V`.
    Callback(String, Literal),
    /// `errback:Y:E`.
    Errback(String, ErrSpec),
    /// `cancel:Y`.
    Cancel(String),
    /// `pause:Y`.
    Pause(String),
    /// `unpause:Y`.
    Unpause(String),
    /// `cb:Y:RESULT`.
    Cb(String, ResultTok),
    /// `ctx`.
    Ctx,
}

/// A callback body: a result and the effects run before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// How the body computes its return value.
    pub result: ResultTok,
    /// What it does first.
    pub effects: Vec<Effect>,
}

/// A line of a coroutine body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoLine {
    /// `await X [catch E [reraise]]`.
    Await {
        /// The awaited Deferred.
        name: String,
        /// The caught error type.
        catch: Option<ErrKind>,
        /// Re-raise after logging.
        reraise: bool,
    },
    /// `call C2`.
    Call(String),
    /// `effect EFFECT …`.
    Effects(Vec<Effect>),
    /// `ctx`.
    Ctx,
    /// `return V`; `None` for `return last`.
    Return(Option<Literal>),
    /// `raise E`.
    Raise(ErrSpec),
}

/// A coroutine body line with its source line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoStmt {
    /// 1-based source line.
    pub line: usize,
    /// The statement.
    pub stmt: CoLine,
}

/// A time `T`, kept with its text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Time(pub f64);

/// A top-level operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `new X [canceller[=EFF,…]]`.
    New {
        /// X.
        name: String,
        /// `None`: no canceller; `Some(effects)`: a logging canceller
        /// running `effects`.
        canceller: Option<Vec<Effect>>,
    },
    /// `succeed X V`.
    Succeed(String, Literal),
    /// `fail X E`.
    Fail(String, ErrSpec),
    /// `callback X V`.
    Callback(String, Literal),
    /// `errback X E`.
    Errback(String, ErrSpec),
    /// `cancel X`.
    Cancel(String),
    /// `pause X`.
    Pause(String),
    /// `unpause X`.
    Unpause(String),
    /// `cb X BODY`.
    Cb(String, Body),
    /// `eb X BODY`.
    Eb(String, Body),
    /// `both X BODY`.
    Both(String, Body),
    /// `cbs X RESULT RESULT [EFFECT…]`.
    Cbs(String, ResultTok, ResultTok, Vec<Effect>),
    /// `chain X Y`.
    Chain(String, String),
    /// `gather G [consume] X …`.
    Gather {
        /// G.
        name: String,
        /// consumeErrors.
        consume: bool,
        /// The inputs.
        inputs: Vec<String>,
    },
    /// `dlist L [foc] [foe] [consume] X …`.
    DList {
        /// L.
        name: String,
        /// fireOnOneCallback.
        foc: bool,
        /// fireOnOneErrback.
        foe: bool,
        /// consumeErrors.
        consume: bool,
        /// The inputs.
        inputs: Vec<String>,
    },
    /// `race R X …`.
    Race(String, Vec<String>),
    /// `observable O [consume] X`.
    Observable {
        /// O.
        name: String,
        /// consumeErrors.
        consume: bool,
        /// X.
        source: String,
    },
    /// `observe Y O`.
    Observe(String, String),
    /// `stop_cancellation Y X`.
    StopCancellation(String, String),
    /// `delay_cancellation Y X`.
    DelayCancellation(String, String),
    /// `add_timeout X T`.
    AddTimeout(String, Time),
    /// `timeout Y X T`.
    Timeout(String, String, Time),
    /// `call_later T EFFECT…`.
    CallLater(Time, Vec<Effect>),
    /// `advance T`.
    Advance(Time),
    /// `async C` … `end`.
    Async(String, Vec<CoStmt>),
    /// `start R C`.
    Start(String, String),
    /// `enter N`.
    Enter(String),
    /// `exit N`.
    Exit(String),
    /// `current`.
    Current,
    /// `yieldable Y X`.
    Yieldable(String, String),
    /// `background R C`.
    Background(String, String),
    /// `bgprocess R C`.
    BgProcess(String, String),
}

impl Op {
    /// The op's keyword, as written in a scenario.
    pub fn keyword(&self) -> &'static str {
        match self {
            Op::New { .. } => "new",
            Op::Succeed(..) => "succeed",
            Op::Fail(..) => "fail",
            Op::Callback(..) => "callback",
            Op::Errback(..) => "errback",
            Op::Cancel(_) => "cancel",
            Op::Pause(_) => "pause",
            Op::Unpause(_) => "unpause",
            Op::Cb(..) => "cb",
            Op::Eb(..) => "eb",
            Op::Both(..) => "both",
            Op::Cbs(..) => "cbs",
            Op::Chain(..) => "chain",
            Op::Gather { .. } => "gather",
            Op::DList { .. } => "dlist",
            Op::Race(..) => "race",
            Op::Observable { .. } => "observable",
            Op::Observe(..) => "observe",
            Op::StopCancellation(..) => "stop_cancellation",
            Op::DelayCancellation(..) => "delay_cancellation",
            Op::AddTimeout(..) => "add_timeout",
            Op::Timeout(..) => "timeout",
            Op::CallLater(..) => "call_later",
            Op::Advance(_) => "advance",
            Op::Async(..) => "async",
            Op::Start(..) => "start",
            Op::Enter(_) => "enter",
            Op::Exit(_) => "exit",
            Op::Current => "current",
            Op::Yieldable(..) => "yieldable",
            Op::Background(..) => "background",
            Op::BgProcess(..) => "bgprocess",
        }
    }
}

/// A top-level op with its source line number.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    /// 1-based source line.
    pub line: usize,
    /// The op.
    pub op: Op,
}

/// A parsed scenario.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scenario {
    /// The ops in order.
    pub stmts: Vec<Stmt>,
}
