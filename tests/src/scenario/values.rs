//! Scenario values and errors as Rust types, and their trace text.
//!
//! Values travel through Deferreds as [`AnyValue`]s holding a [`Value`]
//! (Python's `None` is the library's own `()`). The nine user error types
//! `E1` … `E9` are nine distinct Rust types, so trapping one exercises
//! [`Failure::check`] exactly as user code would.

use std::error::Error;
use std::fmt;

use twisted_deferred::{
    AlreadyCalledError, AnyValue, CancelledError, DeferredListResult, Failure, FailureGroup,
    FirstError, InternalInlineCallbacksCancelledError, PanicError, RecursionError, ResultTypeError,
    TimeoutError,
};

use super::ast::{ErrKind, ErrSpec, Literal};

/// A scenario value other than `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// `true` / `false`.
    Bool(bool),
    /// A bare word.
    Word(String),
}

/// The value a literal denotes.
pub fn literal(l: &Literal) -> AnyValue {
    match l {
        Literal::None => AnyValue::none(),
        Literal::Int(i) => AnyValue::new(Value::Int(*i)),
        Literal::Bool(b) => AnyValue::new(Value::Bool(*b)),
        Literal::Word(w) => AnyValue::new(Value::Word(w.clone())),
    }
}

/// The user error type `Ek`, with an optional message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserError<const K: u8>(pub Option<String>);

impl<const K: u8> fmt::Display for UserError<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or(""))
    }
}

impl<const K: u8> Error for UserError<K> {}

/// The `TypeError` that `add:N` raises on a non-integer input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeError;

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unsupported operand type for +")
    }
}

impl Error for TypeError {}

/// The failure an error spec raises.
pub fn make_failure(spec: &ErrSpec) -> Failure {
    let m = spec.message.clone();
    match spec.kind {
        ErrKind::User(k) => match k {
            1 => Failure::new(UserError::<1>(m)),
            2 => Failure::new(UserError::<2>(m)),
            3 => Failure::new(UserError::<3>(m)),
            4 => Failure::new(UserError::<4>(m)),
            5 => Failure::new(UserError::<5>(m)),
            6 => Failure::new(UserError::<6>(m)),
            7 => Failure::new(UserError::<7>(m)),
            8 => Failure::new(UserError::<8>(m)),
            _ => Failure::new(UserError::<9>(m)),
        },
        ErrKind::Cancelled => Failure::new(CancelledError),
        ErrKind::Timeout => Failure::new(TimeoutError::default()),
        ErrKind::AlreadyCalled => Failure::new(AlreadyCalledError::new()),
        ErrKind::Type => Failure::new(TypeError),
        // The parser rejects raising these; a plain message keeps this total.
        ErrKind::First | ErrKind::FailureGroup | ErrKind::Any => Failure::msg("unraisable"),
    }
}

/// True when `f` matches the error type written `kind` (`trap:E`,
/// `catch E`): `f.check(E)`.
pub fn matches(f: &Failure, kind: ErrKind) -> bool {
    match kind {
        ErrKind::Any => true,
        ErrKind::User(k) => match k {
            1 => f.check::<UserError<1>>(),
            2 => f.check::<UserError<2>>(),
            3 => f.check::<UserError<3>>(),
            4 => f.check::<UserError<4>>(),
            5 => f.check::<UserError<5>>(),
            6 => f.check::<UserError<6>>(),
            7 => f.check::<UserError<7>>(),
            8 => f.check::<UserError<8>>(),
            _ => f.check::<UserError<9>>(),
        },
        ErrKind::Cancelled => f.check::<CancelledError>(),
        ErrKind::Timeout => f.check::<TimeoutError>(),
        ErrKind::First => f.check::<FirstError>(),
        ErrKind::AlreadyCalled => f.check::<AlreadyCalledError>(),
        ErrKind::Type => f.check::<TypeError>(),
        ErrKind::FailureGroup => f.check::<FailureGroup>(),
    }
}

/// A failure as the trace prints it: `F(Type)`, `F(Type:msg)`,
/// `F(FirstError[i]:F(…))`.
pub fn format_failure(f: &Failure) -> String {
    fn user<const K: u8>(f: &Failure) -> Option<String> {
        f.downcast_ref::<UserError<K>>().map(|e| match &e.0 {
            Some(m) => format!("F(E{K}:{m})"),
            None => format!("F(E{K})"),
        })
    }
    let user = user::<1>(f)
        .or_else(|| user::<2>(f))
        .or_else(|| user::<3>(f))
        .or_else(|| user::<4>(f))
        .or_else(|| user::<5>(f))
        .or_else(|| user::<6>(f))
        .or_else(|| user::<7>(f))
        .or_else(|| user::<8>(f))
        .or_else(|| user::<9>(f));
    if let Some(s) = user {
        return s;
    }
    if let Some(e) = f.downcast_ref::<FirstError>() {
        return format!("F(FirstError[{}]:{})", e.index, format_failure(&e.failure));
    }
    if let Some(g) = f.downcast_ref::<FailureGroup>() {
        let inner: Vec<String> = g.failures.iter().map(format_failure).collect();
        return format!("F(FailureGroup[{}])", inner.join(", "));
    }
    let simple = [
        (f.check::<CancelledError>(), "CancelledError"),
        (f.check::<TimeoutError>(), "TimeoutError"),
        (f.check::<AlreadyCalledError>(), "AlreadyCalledError"),
        (f.check::<TypeError>(), "TypeError"),
        (f.check::<RecursionError>(), "RecursionError"),
        (f.check::<ResultTypeError>(), "ResultTypeError"),
    ];
    if let Some((_, name)) = simple.iter().find(|(hit, _)| *hit) {
        return format!("F({name})");
    }
    if f.check::<InternalInlineCallbacksCancelledError>() {
        return "F(_InternalInlineCallbacksCancelledError)".into();
    }
    if let Some(p) = f.downcast_ref::<PanicError>() {
        return format!("F(PanicError:{})", p.message);
    }
    format!("F({})", f.short_type_name())
}

/// A value as the trace prints it.
pub fn format_value(v: &AnyValue) -> String {
    if v.is_none() {
        return "none".into();
    }
    if let Some(x) = v.downcast_ref::<Value>() {
        return match x {
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Word(w) => w.clone(),
        };
    }
    if let Some(list) = v.downcast_ref::<Vec<AnyValue>>() {
        let items: Vec<String> = list.iter().map(format_value).collect();
        return format!("[{}]", items.join(", "));
    }
    if let Some(r) = v.downcast_ref::<DeferredListResult<AnyValue>>() {
        return match r {
            DeferredListResult::All(pairs) => {
                let items: Vec<String> = pairs
                    .iter()
                    .map(|p| match p {
                        Ok(v) => format!("(true, {})", format_value(v)),
                        Err(f) => format!("(false, {})", format_failure(f)),
                    })
                    .collect();
                format!("[{}]", items.join(", "))
            }
            DeferredListResult::First(v, i) => format!("({}, {i})", format_value(v)),
        };
    }
    if let Some((i, v)) = v.downcast_ref::<(usize, AnyValue)>() {
        return format!("({i}, {})", format_value(v));
    }
    if let Some(f) = v.downcast_ref::<Failure>() {
        return format_failure(f);
    }
    format!("{v:?}")
}
