//! Parsing scenario text into a [`Scenario`], with the static checks of
//! FORMAT.md (names bound once and before use, coroutines defined before
//! they are called). Never panics: every rejection is a [`ParseError`]
//! naming the line and what was expected.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::ast::*;

/// Why a scenario was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

type PResult<T> = Result<T, String>;

const RESERVED: &[&str] = &[
    "none",
    "true",
    "false",
    "any",
    "last",
    "consume",
    "foc",
    "foe",
    "canceller",
    "catch",
    "reraise",
    "sentinel",
];

fn is_word(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

fn name(s: &str) -> PResult<String> {
    if is_word(s) && !RESERVED.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "expected a name ([a-z][a-z0-9_]*, not reserved), found `{s}`"
        ))
    }
}

fn literal(s: &str) -> PResult<Literal> {
    match s {
        "none" => return Ok(Literal::None),
        "true" => return Ok(Literal::Bool(true)),
        "false" => return Ok(Literal::Bool(false)),
        _ => {}
    }
    if is_word(s) {
        return Ok(Literal::Word(s.to_owned()));
    }
    integer(s).map(Literal::Int).map_err(|_| {
        format!("expected a value (an integer, none, true, false or a bare word), found `{s}`")
    })
}

fn integer(s: &str) -> PResult<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected an integer, found `{s}`"));
    }
    s.parse::<i64>()
        .map_err(|_| format!("integer `{s}` is out of range"))
}

fn err_kind(s: &str) -> PResult<ErrKind> {
    Ok(match s {
        "CancelledError" => ErrKind::Cancelled,
        "TimeoutError" => ErrKind::Timeout,
        "FirstError" => ErrKind::First,
        "AlreadyCalledError" => ErrKind::AlreadyCalled,
        "TypeError" => ErrKind::Type,
        "FailureGroup" => ErrKind::FailureGroup,
        "any" => ErrKind::Any,
        _ => match s.as_bytes() {
            [b'E', d @ b'1'..=b'9'] => ErrKind::User(d - b'0'),
            _ => {
                return Err(format!(
                    "expected an error type (E1…E9, CancelledError, TimeoutError, FirstError, AlreadyCalledError, TypeError, FailureGroup, any), found `{s}`"
                ));
            }
        },
    })
}

/// An error to raise, from its `:`-separated parts (`E1`, `E1:msg`).
fn err_spec(parts: &[&str]) -> PResult<ErrSpec> {
    let (kind, message) = match parts {
        [kind] => (err_kind(kind)?, None),
        [kind, msg] => {
            let kind = err_kind(kind)?;
            if !matches!(kind, ErrKind::User(_)) {
                return Err(format!(
                    "only E1…E9 carry a message, found `{}:{msg}`",
                    parts[0]
                ));
            }
            if !is_word(msg) {
                return Err(format!("expected a message (a bare word), found `{msg}`"));
            }
            (kind, Some((*msg).to_owned()))
        }
        _ => {
            return Err(format!(
                "expected an error (E or E:msg), found `{}`",
                parts.join(":")
            ));
        }
    };
    if !kind.raisable() {
        return Err(format!("`{}` can only be matched, not raised", parts[0]));
    }
    Ok(ErrSpec { kind, message })
}

/// A RESULT token from its `:`-separated parts.
fn result_tok(parts: &[&str]) -> PResult<ResultTok> {
    let joined = || parts.join(":");
    Ok(match parts {
        ["pass"] => ResultTok::Pass,
        ["add", n] => ResultTok::Add(integer(n)?),
        ["const", v] => ResultTok::Const(literal(v)?),
        ["raise", rest @ ..] if !rest.is_empty() => ResultTok::Raise(err_spec(rest)?),
        ["fail", rest @ ..] if !rest.is_empty() => ResultTok::Fail(err_spec(rest)?),
        ["return", y] => ResultTok::Return(name(y)?),
        ["trap", e] => ResultTok::Trap(err_kind(e)?, Literal::None),
        ["trap", e, v] => ResultTok::Trap(err_kind(e)?, literal(v)?),
        _ => {
            return Err(format!(
                "expected a result (pass, add:N, const:V, raise:E, fail:E, return:Y, trap:E[:V]), found `{}`",
                joined()
            ));
        }
    })
}

fn effect(token: &str) -> PResult<Effect> {
    let parts: Vec<&str> = token.split(':').collect();
    Ok(match parts.as_slice() {
        ["callback", y, v] => Effect::Callback(name(y)?, literal(v)?),
        ["errback", y, rest @ ..] if !rest.is_empty() => Effect::Errback(name(y)?, err_spec(rest)?),
        ["cancel", y] => Effect::Cancel(name(y)?),
        ["pause", y] => Effect::Pause(name(y)?),
        ["unpause", y] => Effect::Unpause(name(y)?),
        ["cb", y, rest @ ..] if !rest.is_empty() => Effect::Cb(name(y)?, result_tok(rest)?),
        ["ctx"] => Effect::Ctx,
        _ => {
            return Err(format!(
                "expected an effect (callback:Y:V, errback:Y:E, cancel:Y, pause:Y, unpause:Y, cb:Y:RESULT, ctx), found `{token}`"
            ));
        }
    })
}

fn effects(tokens: &[&str]) -> PResult<Vec<Effect>> {
    tokens.iter().map(|t| effect(t)).collect()
}

fn body(tokens: &[&str]) -> PResult<Body> {
    let Some((first, rest)) = tokens.split_first() else {
        return Err("expected a body: a result followed by effects".into());
    };
    let parts: Vec<&str> = first.split(':').collect();
    Ok(Body {
        result: result_tok(&parts)?,
        effects: effects(rest)?,
    })
}

fn time(s: &str) -> PResult<Time> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    let ok = digits(int) && frac.is_none_or(|f| digits(f) && f.len() <= 6);
    if !ok {
        return Err(format!(
            "expected a time (a non-negative integer or decimal with at most six decimal places), found `{s}`"
        ));
    }
    s.parse::<f64>()
        .ok()
        .filter(|t| t.is_finite())
        .map(Time)
        .ok_or_else(|| format!("time `{s}` is out of range"))
}

fn arity(tokens: &[&str], n: usize, usage: &str) -> PResult<()> {
    if tokens.len() == n {
        Ok(())
    } else {
        Err(format!("expected `{usage}`, found `{}`", tokens.join(" ")))
    }
}

/// What kind of thing a name is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Deferred,
    Observable,
}

struct Checker {
    names: HashMap<String, Kind>,
    coroutines: HashSet<String>,
    entered: HashSet<String>,
}

impl Checker {
    fn bind(&mut self, n: &str, kind: Kind) -> PResult<()> {
        if self.names.contains_key(n) {
            return Err(format!("`{n}` is already bound"));
        }
        self.names.insert(n.to_owned(), kind);
        Ok(())
    }

    fn use_as(&self, n: &str, kind: Kind) -> PResult<()> {
        match self.names.get(n) {
            None => Err(format!("`{n}` is not bound by an earlier op")),
            Some(k) if *k != kind => Err(format!(
                "`{n}` is {}, expected {}",
                describe(*k),
                describe(kind)
            )),
            Some(_) => Ok(()),
        }
    }

    fn coroutine(&self, c: &str) -> PResult<()> {
        if self.coroutines.contains(c) {
            Ok(())
        } else {
            Err(format!(
                "coroutine `{c}` is not defined by an earlier `async` block"
            ))
        }
    }
}

fn describe(k: Kind) -> &'static str {
    match k {
        Kind::Deferred => "a Deferred",
        Kind::Observable => "an observable",
    }
}

fn split_flags<'a>(tokens: &[&'a str], flags: &[&str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut set = Vec::new();
    let mut rest = Vec::new();
    for t in tokens {
        if rest.is_empty() && flags.contains(t) {
            set.push(*t);
        } else {
            rest.push(*t);
        }
    }
    (set, rest)
}

fn op(tokens: &[&str], ck: &mut Checker) -> PResult<Op> {
    use Kind::Deferred as D;
    let kw = tokens[0];
    let args = &tokens[1..];
    let op = match kw {
        "new" => {
            let n = name(args.first().copied().unwrap_or(""))?;
            let canceller = match args.get(1..) {
                Some([]) | None => None,
                Some(["canceller"]) => Some(Vec::new()),
                Some([c]) if c.starts_with("canceller=") => {
                    let list = &c["canceller=".len()..];
                    Some(effects(&list.split(',').collect::<Vec<_>>())?)
                }
                _ => {
                    return Err(format!(
                        "expected `new X [canceller[=EFF,…]]`, found `{}`",
                        tokens.join(" ")
                    ));
                }
            };
            ck.bind(&n, D)?;
            Op::New { name: n, canceller }
        }
        "succeed" | "fail" | "callback" | "errback" => {
            arity(
                tokens,
                3,
                &format!(
                    "{kw} X {}",
                    if kw == "succeed" || kw == "callback" {
                        "V"
                    } else {
                        "E"
                    }
                ),
            )?;
            let n = name(args[0])?;
            let binds = kw == "succeed" || kw == "fail";
            let op = match kw {
                "succeed" => Op::Succeed(n.clone(), literal(args[1])?),
                "callback" => Op::Callback(n.clone(), literal(args[1])?),
                "fail" => Op::Fail(
                    n.clone(),
                    err_spec(&args[1].split(':').collect::<Vec<_>>())?,
                ),
                _ => Op::Errback(
                    n.clone(),
                    err_spec(&args[1].split(':').collect::<Vec<_>>())?,
                ),
            };
            if binds {
                ck.bind(&n, D)?
            } else {
                ck.use_as(&n, D)?
            }
            op
        }
        "cancel" | "pause" | "unpause" => {
            arity(tokens, 2, &format!("{kw} X"))?;
            let n = name(args[0])?;
            ck.use_as(&n, D)?;
            match kw {
                "cancel" => Op::Cancel(n),
                "pause" => Op::Pause(n),
                _ => Op::Unpause(n),
            }
        }
        "cb" | "eb" | "both" => {
            if args.len() < 2 {
                return Err(format!(
                    "expected `{kw} X BODY`, found `{}`",
                    tokens.join(" ")
                ));
            }
            let n = name(args[0])?;
            ck.use_as(&n, D)?;
            let b = body(&args[1..])?;
            match kw {
                "cb" => Op::Cb(n, b),
                "eb" => Op::Eb(n, b),
                _ => Op::Both(n, b),
            }
        }
        "cbs" => {
            if args.len() < 3 {
                return Err(format!(
                    "expected `cbs X RESULT RESULT [EFFECT…]`, found `{}`",
                    tokens.join(" ")
                ));
            }
            let n = name(args[0])?;
            ck.use_as(&n, D)?;
            let c = result_tok(&args[1].split(':').collect::<Vec<_>>())?;
            let e = result_tok(&args[2].split(':').collect::<Vec<_>>())?;
            Op::Cbs(n, c, e, effects(&args[3..])?)
        }
        "chain" => {
            arity(tokens, 3, "chain X Y")?;
            let (a, b) = (name(args[0])?, name(args[1])?);
            ck.use_as(&a, D)?;
            ck.use_as(&b, D)?;
            Op::Chain(a, b)
        }
        "gather" | "dlist" | "race" => {
            let n = name(args.first().copied().unwrap_or(""))?;
            let flags: &[&str] = match kw {
                "gather" => &["consume"],
                "dlist" => &["foc", "foe", "consume"],
                _ => &[],
            };
            let (set, inputs) = split_flags(args.get(1..).unwrap_or(&[]), flags);
            let mut seen = HashSet::new();
            for f in &set {
                if !seen.insert(*f) {
                    return Err(format!("flag `{f}` given twice"));
                }
            }
            let inputs = inputs
                .iter()
                .map(|x| name(x))
                .collect::<PResult<Vec<_>>>()?;
            for i in &inputs {
                ck.use_as(i, D)?;
            }
            if kw == "race" && inputs.is_empty() {
                // An empty race is legal in Twisted (it never fires).
            }
            ck.bind(&n, D)?;
            match kw {
                "gather" => Op::Gather {
                    name: n,
                    consume: seen.contains("consume"),
                    inputs,
                },
                "dlist" => Op::DList {
                    name: n,
                    foc: seen.contains("foc"),
                    foe: seen.contains("foe"),
                    consume: seen.contains("consume"),
                    inputs,
                },
                _ => Op::Race(n, inputs),
            }
        }
        "observable" => {
            let (n, consume, src) = match args {
                [n, x] => (n, false, x),
                [n, c, x] if *c == "consume" => (n, true, x),
                _ => {
                    return Err(format!(
                        "expected `observable O [consume] X`, found `{}`",
                        tokens.join(" ")
                    ));
                }
            };
            let (n, src) = (name(n)?, name(src)?);
            ck.use_as(&src, D)?;
            ck.bind(&n, Kind::Observable)?;
            Op::Observable {
                name: n,
                consume,
                source: src,
            }
        }
        "observe" => {
            arity(tokens, 3, "observe Y O")?;
            let (y, o) = (name(args[0])?, name(args[1])?);
            ck.use_as(&o, Kind::Observable)?;
            ck.bind(&y, D)?;
            Op::Observe(y, o)
        }
        "stop_cancellation" | "delay_cancellation" | "yieldable" => {
            arity(tokens, 3, &format!("{kw} Y X"))?;
            let (y, x) = (name(args[0])?, name(args[1])?);
            ck.use_as(&x, D)?;
            ck.bind(&y, D)?;
            match kw {
                "stop_cancellation" => Op::StopCancellation(y, x),
                "delay_cancellation" => Op::DelayCancellation(y, x),
                _ => Op::Yieldable(y, x),
            }
        }
        "add_timeout" => {
            arity(tokens, 3, "add_timeout X T")?;
            let x = name(args[0])?;
            ck.use_as(&x, D)?;
            Op::AddTimeout(x, time(args[1])?)
        }
        "timeout" => {
            arity(tokens, 4, "timeout Y X T")?;
            let (y, x) = (name(args[0])?, name(args[1])?);
            let t = time(args[2])?;
            ck.use_as(&x, D)?;
            ck.bind(&y, D)?;
            Op::Timeout(y, x, t)
        }
        "call_later" => {
            if args.is_empty() {
                return Err("expected `call_later T EFFECT…`".into());
            }
            Op::CallLater(time(args[0])?, effects(&args[1..])?)
        }
        "advance" => {
            arity(tokens, 2, "advance T")?;
            Op::Advance(time(args[0])?)
        }
        "start" | "background" | "bgprocess" => {
            arity(tokens, 3, &format!("{kw} R C"))?;
            let (r, c) = (name(args[0])?, name(args[1])?);
            ck.coroutine(&c)?;
            ck.bind(&r, D)?;
            match kw {
                "start" => Op::Start(r, c),
                "background" => Op::Background(r, c),
                _ => Op::BgProcess(r, c),
            }
        }
        "enter" | "exit" => {
            arity(tokens, 2, &format!("{kw} N"))?;
            let n = name(args[0])?;
            if kw == "enter" {
                ck.entered.insert(n.clone());
                Op::Enter(n)
            } else {
                if !ck.entered.contains(&n) {
                    return Err(format!("`exit {n}` without an earlier `enter {n}`"));
                }
                Op::Exit(n)
            }
        }
        "current" => {
            arity(tokens, 1, "current")?;
            Op::Current
        }
        "end" => return Err("`end` without `async`".into()),
        _ => return Err(format!("expected an operation, found `{kw}`")),
    };
    Ok(op)
}

fn co_line(tokens: &[&str], ck: &Checker, defining: &str) -> PResult<CoLine> {
    let args = &tokens[1..];
    Ok(match tokens[0] {
        "await" => {
            let n = name(args.first().copied().unwrap_or(""))?;
            match &args[1..] {
                [] => CoLine::Await {
                    name: n,
                    catch: None,
                    reraise: false,
                },
                ["catch", e] => CoLine::Await {
                    name: n,
                    catch: Some(err_kind(e)?),
                    reraise: false,
                },
                ["catch", e, "reraise"] => CoLine::Await {
                    name: n,
                    catch: Some(err_kind(e)?),
                    reraise: true,
                },
                _ => {
                    return Err(format!(
                        "expected `await X [catch E [reraise]]`, found `{}`",
                        tokens.join(" ")
                    ));
                }
            }
        }
        "call" => {
            arity(tokens, 2, "call C2")?;
            let c = name(args[0])?;
            if c == defining {
                return Err(format!("coroutine `{c}` cannot call itself"));
            }
            ck.coroutine(&c)?;
            CoLine::Call(c)
        }
        "effect" => {
            if args.is_empty() {
                return Err("expected `effect EFFECT …`".into());
            }
            CoLine::Effects(effects(args)?)
        }
        "ctx" => {
            arity(tokens, 1, "ctx")?;
            CoLine::Ctx
        }
        "return" => {
            arity(tokens, 2, "return V")?;
            if args[0] == "last" {
                CoLine::Return(None)
            } else {
                CoLine::Return(Some(literal(args[0])?))
            }
        }
        "raise" => {
            arity(tokens, 2, "raise E")?;
            CoLine::Raise(err_spec(&args[0].split(':').collect::<Vec<_>>())?)
        }
        other => {
            return Err(format!(
                "expected a coroutine line (await, call, effect, ctx, return, raise) or `end`, found `{other}`"
            ));
        }
    })
}

/// Parses scenario text.
pub fn parse(text: &str) -> Result<Scenario, ParseError> {
    let mut ck = Checker {
        names: HashMap::new(),
        coroutines: HashSet::new(),
        entered: HashSet::new(),
    };
    let mut stmts = Vec::new();
    let mut open: Option<(usize, String, Vec<CoStmt>)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let code = raw.split('#').next().unwrap_or("");
        let tokens: Vec<&str> = code.split_whitespace().collect();
        if tokens.is_empty() {
            continue;
        }
        let err = |message: String| ParseError { line, message };
        if let Some((start, c, mut body)) = open.take() {
            if tokens == ["end"] {
                ck.coroutines.insert(c.clone());
                stmts.push(Stmt {
                    line: start,
                    op: Op::Async(c, body),
                });
            } else if tokens[0] == "async" {
                return Err(err("`async` blocks cannot nest; expected `end`".into()));
            } else {
                body.push(CoStmt {
                    line,
                    stmt: co_line(&tokens, &ck, &c).map_err(err)?,
                });
                open = Some((start, c, body));
            }
            continue;
        }
        if tokens[0] == "async" {
            if tokens.len() != 2 {
                return Err(err(format!(
                    "expected `async C`, found `{}`",
                    tokens.join(" ")
                )));
            }
            let c = name(tokens[1]).map_err(err)?;
            if ck.coroutines.contains(&c) {
                return Err(err(format!("coroutine `{c}` is already defined")));
            }
            open = Some((line, c, Vec::new()));
            continue;
        }
        let op = op(&tokens, &mut ck).map_err(err)?;
        stmts.push(Stmt { line, op });
    }
    if let Some((start, c, _)) = open {
        return Err(ParseError {
            line: start,
            message: format!("`async {c}` has no `end`"),
        });
    }
    Ok(Scenario { stmts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shared_case_parses() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/conformance/cases"
        );
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "scenario") {
                let text = std::fs::read_to_string(&p).unwrap();
                parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 31);
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_expectation() {
        let e = parse("new x\n\ncb x add:q\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("expected an integer"), "{e}");
        let e = parse("cancel y\n").unwrap_err();
        assert!(e.message.contains("not bound"), "{e}");
        let e = parse("new x\nnew x\n").unwrap_err();
        assert!(e.message.contains("already bound"), "{e}");
        let e = parse("async c\n await x\n").unwrap_err();
        assert!(e.message.contains("no `end`"), "{e}");
        let e = parse("fail x FirstError\n").unwrap_err();
        assert!(e.message.contains("only be matched"), "{e}");
        let e = parse("advance 0.1234567\n").unwrap_err();
        assert!(e.message.contains("six decimal"), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "\u{0}",
            "new",
            "new :",
            "cb x",
            "cbs",
            "dlist",
            "new X",
            "observable o",
            "async",
            "end",
            "trap",
            "new x canceller=",
            "a:b:c",
        ] {
            let _ = parse(text);
        }
    }
}
