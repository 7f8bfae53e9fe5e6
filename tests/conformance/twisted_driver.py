#!/usr/bin/env python3
"""Run Deferred scenario files through real Twisted and Synapse and print the trace.

The scenario format and the trace format are defined in
``../shared/conformance/FORMAT.md`` (beside the repository).  This driver is an interpreter: every
operation of a scenario is performed by the call a user of Twisted / Synapse
would write (``Deferred.addCallback``, ``gatherResults``, ``timeout_deferred``,
``LoggingContext.__enter__`` ...).  The driver only *observes*: it logs what
its own callback bodies, cancellers and coroutine frames see, reads the public
state of the named Deferreds at the end, listens to Twisted's log for
"Unhandled error in Deferred" reports and to Synapse's ``logging`` warnings for
logging-context misuse.  It holds no model of Deferred behaviour.

Usage::

    twisted_driver.py FILE.scenario          # print the trace on stdout
    twisted_driver.py --batch [--out DIR] DIR_OR_FILE...
                                             # write NAME.expected files

Exit codes (single-file mode): 0 success, 2 malformed scenario (message on
stderr), 4 invalid scenario detected at run time (nothing on stdout).
Batch mode exits 0 when every scenario ran, 1 if any was malformed or invalid
(those are reported on stderr and get no ``.expected`` file).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import os
import re
import signal
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

warnings.simplefilter("ignore")

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.defer import (  # noqa: E402
    AlreadyCalledError,
    CancelledError,
    Deferred,
    DeferredList,
    FailureGroup,
    FirstError,
    fail,
    gatherResults,
    race,
    succeed,
)
from twisted.logger import globalLogBeginner  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from synapse.logging.context import (  # noqa: E402
    SENTINEL_CONTEXT,
    LoggingContext,
    current_context,
    make_deferred_yieldable,
    run_in_background,
    set_current_context,
)
from synapse.metrics import background_process_metrics  # noqa: E402
from synapse.metrics.background_process_metrics import (  # noqa: E402
    run_as_background_process,
)
from synapse.util.async_helpers import (  # noqa: E402
    ObservableDeferred,
    delay_cancellation,
    stop_cancellation,
    timeout_deferred,
)
from synapse.util.clock import Clock as SynapseClock  # noqa: E402

SERVER_NAME = "conformance.test"

# Exit codes.
EXIT_OK = 0
EXIT_MALFORMED = 2
EXIT_INVALID = 4

# CPU seconds a single scenario may use before it is declared an endless loop.
DEFAULT_BUDGET = 1.0
# Unbounded recursion (e.g. a canceller that cancels its own Deferred) ends in
# a RecursionError whose exact depth depends on the interpreter's stack: such
# a scenario loops forever in principle and has no well-defined trace.
UNBOUNDED_RECURSION = "unbounded recursion (RecursionError)"


# ---------------------------------------------------------------------------
# Error types
# ---------------------------------------------------------------------------


def _make_user_error(n: int) -> type:
    return type(f"E{n}", (Exception,), {"__module__": __name__})


USER_ERRORS: dict[str, type] = {f"E{n}": _make_user_error(n) for n in range(1, 10)}

# Built-in error types a scenario may name.  Only these (and E1..E9) may be
# raised; FirstError and FailureGroup may only be matched.
RAISABLE_BUILTINS: dict[str, type] = {
    "CancelledError": CancelledError,
    "TimeoutError": defer.TimeoutError,
    "AlreadyCalledError": AlreadyCalledError,
    "TypeError": TypeError,
}
MATCH_ONLY_BUILTINS: dict[str, type] = {
    "FirstError": FirstError,
    "FailureGroup": FailureGroup,
}


class MalformedScenario(Exception):
    """The scenario text does not follow the grammar (exit code 2)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


class InvalidScenario(BaseException):
    """The scenario is invalid per FORMAT.md (exit code 4).

    A BaseException so that user-level ``except Exception`` handlers in the
    driver's own bodies never swallow it.  Twisted converts it into a Failure
    when it is raised inside a callback, which is why the run also records the
    reason in ``Run.invalid`` and checks it after every operation.
    """


class _BudgetExceeded(BaseException):
    """Raised from the CPU-time signal handler to break an endless loop."""


# ---------------------------------------------------------------------------
# Scenario syntax
# ---------------------------------------------------------------------------

NAME_RE = re.compile(r"[a-z][a-z0-9_]*\Z")
INT_RE = re.compile(r"-?[0-9]+\Z")
TIME_RE = re.compile(r"[0-9]+(\.[0-9]{1,6})?\Z")
RESERVED = frozenset(
    "none true false any last consume foc foe canceller catch reraise sentinel".split()
)


@dataclass(frozen=True)
class Err:
    """An error token: a type name and, for E1..E9, an optional message."""

    name: str
    msg: Optional[str] = None

    def make(self) -> BaseException:
        if self.name in USER_ERRORS:
            cls = USER_ERRORS[self.name]
            return cls(self.msg) if self.msg is not None else cls()
        return RAISABLE_BUILTINS[self.name]()


@dataclass(frozen=True)
class Result:
    """The RESULT part of a callback body."""

    kind: str  # pass add const raise fail return trap
    arg: Any = None  # N, V, Err, name, or the matched type name
    value: Any = None  # the value returned by trap


@dataclass(frozen=True)
class Effect:
    kind: str  # callback errback cancel pause unpause cb ctx
    target: Optional[str] = None
    arg: Any = None  # V, Err or Result


@dataclass(frozen=True)
class Body:
    result: Result
    effects: tuple[Effect, ...] = ()


@dataclass
class Op:
    line: int
    name: str
    args: tuple = ()


@dataclass
class CoroLine:
    line: int
    kind: str  # await call effect ctx return raise
    target: Optional[str] = None
    catch: Optional[str] = None
    reraise: bool = False
    value: Any = None
    effects: tuple[Effect, ...] = ()
    err: Optional[Err] = None
    last: bool = False


@dataclass
class CoroDef:
    name: str
    line: int
    lines: list[CoroLine] = field(default_factory=list)


@dataclass
class Scenario:
    ops: list[Op]


class Parser:
    """Turns scenario text into a list of operations (raises MalformedScenario)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.line = 0

    def fail(self, message: str) -> "MalformedScenario":
        return MalformedScenario(self.line, message)

    # -- tokens -------------------------------------------------------------

    def name(self, tok: str, what: str = "a name") -> str:
        if not NAME_RE.match(tok) or tok in RESERVED:
            raise self.fail(f"expected {what}, found {tok!r}")
        return tok

    def value(self, tok: str) -> Any:
        if INT_RE.match(tok):
            return int(tok)
        if tok == "none":
            return None
        if tok == "true":
            return True
        if tok == "false":
            return False
        if NAME_RE.match(tok):
            return tok
        raise self.fail(f"expected a value (integer, none, true, false or a bare word), found {tok!r}")

    def time(self, tok: str) -> float:
        if not TIME_RE.match(tok):
            raise self.fail(f"expected a time in seconds, found {tok!r}")
        return float(tok)

    def integer(self, tok: str) -> int:
        if not INT_RE.match(tok):
            raise self.fail(f"expected an integer, found {tok!r}")
        return int(tok)

    def raisable(self, tok: str) -> Err:
        name, sep, msg = tok.partition(":")
        if name in USER_ERRORS:
            if sep:
                if not NAME_RE.match(msg):
                    raise self.fail(f"expected a bare-word error message, found {msg!r}")
                return Err(name, msg)
            return Err(name)
        if name in RAISABLE_BUILTINS and not sep:
            return Err(name)
        raise self.fail(f"expected an error to raise (E1..E9[:msg], CancelledError, "
                        f"TimeoutError, AlreadyCalledError or TypeError), found {tok!r}")

    def matcher(self, tok: str) -> str:
        if tok == "any" or tok in USER_ERRORS or tok in RAISABLE_BUILTINS or tok in MATCH_ONLY_BUILTINS:
            return tok
        raise self.fail(f"expected an error type to match, found {tok!r}")

    def result(self, tok: str) -> Result:
        kind, sep, rest = tok.partition(":")
        if kind == "pass" and not sep:
            return Result("pass")
        if not sep:
            raise self.fail(f"expected a RESULT (pass, add:N, const:V, raise:E, fail:E, "
                            f"return:Y, trap:E[:V]), found {tok!r}")
        if kind == "add":
            return Result("add", self.integer(rest))
        if kind == "const":
            return Result("const", self.value(rest))
        if kind in ("raise", "fail"):
            return Result(kind, self.raisable(rest))
        if kind == "return":
            return Result("return", self.name(rest, "a Deferred name"))
        if kind == "trap":
            err, sep2, val = rest.partition(":")
            return Result("trap", self.matcher(err), self.value(val) if sep2 else None)
        raise self.fail(f"expected a RESULT, found {tok!r}")

    def effect(self, tok: str) -> Effect:
        if tok == "ctx":
            return Effect("ctx")
        parts = tok.split(":", 2)
        kind = parts[0]
        if kind in ("cancel", "pause", "unpause") and len(parts) == 2:
            return Effect(kind, self.name(parts[1], "a Deferred name"))
        if kind in ("callback", "errback", "cb") and len(parts) == 3:
            target = self.name(parts[1], "a Deferred name")
            if kind == "callback":
                return Effect(kind, target, self.value(parts[2]))
            if kind == "errback":
                return Effect(kind, target, self.raisable(parts[2]))
            return Effect(kind, target, self.result(parts[2]))
        raise self.fail(f"expected an EFFECT (callback:Y:V, errback:Y:E, cancel:Y, pause:Y, "
                        f"unpause:Y, cb:Y:RESULT, ctx), found {tok!r}")

    # -- lines ----------------------------------------------------------------

    def parse(self) -> Scenario:
        ops: list[Op] = []
        coro: Optional[CoroDef] = None
        for self.line, raw in enumerate(self.text.split("\n"), start=1):
            toks = raw.split("#", 1)[0].split()
            if not toks:
                continue
            if coro is not None:
                if toks == ["end"]:
                    coro = None
                else:
                    coro.lines.append(self.coro_line(toks))
                continue
            if toks[0] == "async":
                self.arity(toks, 2, "async C")
                coro = CoroDef(self.name(toks[1], "a coroutine name"), self.line)
                ops.append(Op(self.line, "async", (coro,)))
                continue
            ops.append(self.op(toks))
        if coro is not None:
            raise MalformedScenario(coro.line, f"'async {coro.name}' has no matching 'end'")
        return Scenario(ops)

    def arity(self, toks: list[str], n: int, form: str) -> None:
        if len(toks) != n:
            raise self.fail(f"expected '{form}'")

    def op(self, toks: list[str]) -> Op:
        op, args = toks[0], toks[1:]
        line = self.line
        name = self.name
        if op == "new":
            if len(args) == 1:
                return Op(line, op, (name(args[0]), None))
            if len(args) == 2 and args[1] == "canceller":
                return Op(line, op, (name(args[0]), ()))
            if len(args) == 2 and args[1].startswith("canceller="):
                effs = tuple(self.effect(t) for t in args[1][len("canceller="):].split(","))
                return Op(line, op, (name(args[0]), effs))
            raise self.fail("expected 'new X', 'new X canceller' or 'new X canceller=EFF,...'")
        if op == "succeed":
            self.arity(toks, 3, "succeed X V")
            return Op(line, op, (name(args[0]), self.value(args[1])))
        if op == "fail":
            self.arity(toks, 3, "fail X E")
            return Op(line, op, (name(args[0]), self.raisable(args[1])))
        if op == "callback":
            self.arity(toks, 3, "callback X V")
            return Op(line, op, (name(args[0]), self.value(args[1])))
        if op == "errback":
            self.arity(toks, 3, "errback X E")
            return Op(line, op, (name(args[0]), self.raisable(args[1])))
        if op in ("cancel", "pause", "unpause"):
            self.arity(toks, 2, f"{op} X")
            return Op(line, op, (name(args[0]),))
        if op in ("cb", "eb", "both"):
            if len(args) < 2:
                raise self.fail(f"expected '{op} X RESULT [EFFECT...]'")
            body = Body(self.result(args[1]), tuple(self.effect(t) for t in args[2:]))
            return Op(line, op, (name(args[0]), body))
        if op == "cbs":
            if len(args) < 3:
                raise self.fail("expected 'cbs X RESULT RESULT [EFFECT...]'")
            effs = tuple(self.effect(t) for t in args[3:])
            return Op(line, op, (name(args[0]), self.result(args[1]), self.result(args[2]), effs))
        if op == "chain":
            self.arity(toks, 3, "chain X Y")
            return Op(line, op, (name(args[0]), name(args[1])))
        if op in ("gather", "dlist", "race"):
            if not args:
                raise self.fail(f"expected '{op} NAME ...'")
            allowed = {"gather": {"consume"}, "dlist": {"foc", "foe", "consume"}, "race": set()}[op]
            flags: set[str] = set()
            members: list[str] = []
            for t in args[1:]:
                if t in allowed:
                    if t in flags:
                        raise self.fail(f"flag {t!r} given twice")
                    flags.add(t)
                else:
                    members.append(name(t, "a Deferred name or flag"))
            return Op(line, op, (name(args[0]), frozenset(flags), tuple(members)))
        if op == "observable":
            if len(args) == 3 and args[1] == "consume":
                return Op(line, op, (name(args[0]), True, name(args[2])))
            self.arity(toks, 3, "observable O [consume] X")
            return Op(line, op, (name(args[0]), False, name(args[1])))
        if op in ("observe", "stop_cancellation", "delay_cancellation", "yieldable",
                  "start", "background", "bgprocess"):
            self.arity(toks, 3, f"{op} NAME NAME")
            return Op(line, op, (name(args[0]), name(args[1])))
        if op == "add_timeout":
            self.arity(toks, 3, "add_timeout X T")
            return Op(line, op, (name(args[0]), self.time(args[1])))
        if op == "timeout":
            self.arity(toks, 4, "timeout Y X T")
            return Op(line, op, (name(args[0]), name(args[1]), self.time(args[2])))
        if op == "call_later":
            if len(args) < 1:
                raise self.fail("expected 'call_later T EFFECT...'")
            return Op(line, op, (self.time(args[0]), tuple(self.effect(t) for t in args[1:])))
        if op == "advance":
            self.arity(toks, 2, "advance T")
            return Op(line, op, (self.time(args[0]),))
        if op in ("enter", "exit"):
            self.arity(toks, 2, f"{op} N")
            return Op(line, op, (name(args[0], "a context name"),))
        if op == "current":
            self.arity(toks, 1, "current")
            return Op(line, op, ())
        if op == "end":
            raise self.fail("'end' without 'async'")
        raise self.fail(f"expected an operation, found {op!r}")

    def coro_line(self, toks: list[str]) -> CoroLine:
        kind, args = toks[0], toks[1:]
        line = self.line
        if kind == "await":
            if len(args) == 1:
                return CoroLine(line, kind, target=self.name(args[0]))
            if len(args) in (3, 4) and args[1] == "catch":
                if len(args) == 4 and args[3] != "reraise":
                    raise self.fail("expected 'await X catch E [reraise]'")
                return CoroLine(line, kind, target=self.name(args[0]),
                                catch=self.matcher(args[2]), reraise=len(args) == 4)
            raise self.fail("expected 'await X [catch E [reraise]]'")
        if kind == "call":
            self.arity(toks, 2, "call C")
            return CoroLine(line, kind, target=self.name(args[0], "a coroutine name"))
        if kind == "effect":
            if not args:
                raise self.fail("expected 'effect EFFECT...'")
            return CoroLine(line, kind, effects=tuple(self.effect(t) for t in args))
        if kind == "ctx":
            self.arity(toks, 1, "ctx")
            return CoroLine(line, kind)
        if kind == "return":
            self.arity(toks, 2, "return V")
            if args[0] == "last":
                return CoroLine(line, kind, last=True)
            return CoroLine(line, kind, value=self.value(args[0]))
        if kind == "raise":
            self.arity(toks, 2, "raise E")
            return CoroLine(line, kind, err=self.raisable(args[0]))
        raise self.fail(f"expected a coroutine body line (await, call, effect, ctx, return, "
                        f"raise) or 'end', found {kind!r}")


def parse_scenario(text: str) -> Scenario:
    return Parser(text).parse()


# ---------------------------------------------------------------------------
# Printing values and failures
# ---------------------------------------------------------------------------


def fmt_exc(exc: BaseException) -> str:
    """Format an exception as a trace failure ``F(...)``."""
    cls = type(exc)
    if isinstance(exc, FirstError):
        return f"F(FirstError[{exc.index}]:{fmt_exc(exc.subFailure.value)})"
    if isinstance(exc, FailureGroup):
        return "F(FailureGroup[" + ", ".join(fmt_exc(f.value) for f in exc.failures) + "])"
    name = cls.__name__
    if cls in USER_ERRORS.values() and exc.args:
        return f"F({name}:{exc.args[0]})"
    return f"F({name})"


def fmt(value: Any) -> str:
    """Format a value as the trace prints it."""
    if isinstance(value, Failure):
        return fmt_exc(value.value)
    if value is None:
        return "none"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(fmt(v) for v in value) + ")"
    raise AssertionError(f"driver cannot print value {value!r}")


def ctx_name() -> str:
    return str(current_context())


# ---------------------------------------------------------------------------
# Global observers (Twisted log, Synapse logging), shared by all runs
# ---------------------------------------------------------------------------

_LOGCONTEXT_PATTERNS = [
    (re.compile(r"Re-starting finished log context (.*)\Z", re.S), "restart-finished {0}"),
    (re.compile(r"Expected logging context (.*) was lost\Z", re.S), "expected {0} found sentinel"),
    (re.compile(r"Expected logging context (.*) but found (.*)\Z", re.S), "expected {0} found {1}"),
    (re.compile(r"run_in_background\(.*\): deferred already completed but the function did "
                r"not maintain the calling logcontext (.*) \(found (.*)\)\Z", re.S),
     "expected {0} found {1}"),
]


class _Observers:
    """Routes Twisted's unhandled-error reports and Synapse's logcontext
    warnings to the run in progress."""

    def __init__(self) -> None:
        self.run: Optional[Run] = None
        self.capture_unhandled = False
        self.unhandled: list[str] = []
        # Twisted reports an unhandled error as two events: the message, then
        # the failure (format "" or "(debug: ...)").  A garbage collection
        # triggered while logging may nest another pair in between.
        self._announced = 0

    def start_capture(self, run: "Run") -> None:
        self.run = run
        self.unhandled = []
        self._announced = 0
        self.capture_unhandled = True

    def stop_capture(self) -> list[str]:
        """Stop collecting unhandled-error reports; return them sorted by bytes."""
        reports = sorted(self.unhandled, key=lambda s: s.encode())
        self.capture_unhandled = False
        self.unhandled = []
        return reports

    def twisted_event(self, event: dict) -> None:
        fmt_string = event.get("log_format") or ""
        failure = event.get("log_failure")
        if failure is not None and self.run is not None and _mentions_recursion(failure):
            # A RecursionError that Twisted caught and logged (e.g. inside
            # DeferredList.cancel): the outcome depends on where the limit
            # struck, so the scenario has no well-defined trace.
            self.run.invalid = self.run.invalid or UNBOUNDED_RECURSION
        if fmt_string == "Unhandled error in Deferred:":
            self._announced += 1
            return
        if (self._announced and "log_failure" in event
                and (fmt_string == "" or fmt_string.startswith("(debug:"))):
            self._announced -= 1
            if self.capture_unhandled:
                self.unhandled.append("~ unhandled " + fmt(event["log_failure"]))

    def logcontext_warning(self, message: str) -> None:
        run = self.run
        if run is None:
            return
        for pattern, template in _LOGCONTEXT_PATTERNS:
            m = pattern.match(message)
            if m:
                run.emit("! logcontext: " + template.format(*m.groups()))
                return
        # Other messages (CPU-usage accounting) are not part of the trace.


OBSERVERS = _Observers()


class _LogcontextHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            OBSERVERS.logcontext_warning(record.getMessage())


def _install_observers() -> None:
    globalLogBeginner.beginLoggingTo(
        [OBSERVERS.twisted_event], discardBuffer=True, redirectStandardIO=False
    )
    warnings.simplefilter("ignore")  # beginLoggingTo touches warnings too
    # Synapse's other log output (e.g. "Background process ... threw") is not
    # part of the trace: give the root logger a sink so nothing hits stderr.
    logging.getLogger().addHandler(logging.NullHandler())
    ctx_logger = logging.getLogger("synapse.logging.context")
    ctx_logger.addHandler(_LogcontextHandler())
    ctx_logger.setLevel(logging.WARNING)
    ctx_logger.propagate = False


_install_observers()
# Everything imported so far lives forever: keep it out of the collector's
# way so that the per-scenario gc.collect() calls stay cheap.
gc.collect()
gc.freeze()


# ---------------------------------------------------------------------------
# Running a scenario
# ---------------------------------------------------------------------------


class Run:
    """One execution of a scenario against real Twisted / Synapse objects."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.out: list[str] = []
        self.closed = False
        self.invalid: Optional[str] = None
        # name -> (kind, object); kind is "d" (Deferred), "o" (observable)
        # or "c" (coroutine definition).
        self.names: dict[str, tuple[str, Any]] = {}
        self.deferred_order: list[str] = []
        self.first_name: dict[int, str] = {}
        self.body_numbers: dict[str, int] = {}
        self.user_pauses: dict[int, int] = {}
        self.contexts: dict[str, LoggingContext] = {}
        self.clock = task.Clock()
        self.synapse_clock = SynapseClock(self.clock, SERVER_NAME)  # type: ignore[arg-type]

    # -- bookkeeping ----------------------------------------------------------

    def emit(self, line: str) -> None:
        if not self.closed:
            self.out.append(line)

    def mark_invalid(self, reason: str) -> InvalidScenario:
        if self.invalid is None:
            self.invalid = reason
        return InvalidScenario(reason)

    def bind(self, name: str, kind: str, obj: Any) -> None:
        if name in self.names:
            raise self.mark_invalid(f"name {name!r} bound twice")
        self.names[name] = (kind, obj)
        if kind == "d":
            self.deferred_order.append(name)
            self.first_name.setdefault(id(obj), name)

    def lookup(self, name: str, kind: str) -> Any:
        entry = self.names.get(name)
        what = {"d": "Deferred", "o": "observable", "c": "coroutine"}[kind]
        if entry is None:
            raise self.mark_invalid(f"{name!r} is not bound")
        if entry[0] != kind:
            raise self.mark_invalid(f"{name!r} is not a {what}")
        return entry[1]

    def deferred(self, name: str) -> Deferred:
        return self.lookup(name, "d")

    def next_body_number(self, name: str) -> int:
        n = self.body_numbers.get(name, 0) + 1
        self.body_numbers[name] = n
        return n

    def pause(self, name: str) -> None:
        d = self.deferred(name)
        # Pausing a Deferred during its run while a coroutine awaiting it is
        # resumed later in that run is invalid (FORMAT.md): the coroutine finds
        # it paused and awaits it again, forever.  The CPU budget catches that.
        self.user_pauses[id(d)] = self.user_pauses.get(id(d), 0) + 1
        d.pause()

    def unpause(self, name: str) -> None:
        d = self.deferred(name)
        count = self.user_pauses.get(id(d), 0)
        if count <= 0:
            raise self.mark_invalid(f"unpause of {name!r} without a matching pause")
        self.user_pauses[id(d)] = count - 1
        d.unpause()

    # -- bodies -----------------------------------------------------------------

    def run_effect(self, eff: Effect) -> None:
        kind = eff.kind
        if kind == "ctx":
            self.emit(f"ctx {ctx_name()}")
        elif kind == "callback":
            self.deferred(eff.target).callback(eff.arg)
        elif kind == "errback":
            self.deferred(eff.target).errback(eff.arg.make())
        elif kind == "cancel":
            self.deferred(eff.target).cancel()
        elif kind == "pause":
            self.pause(eff.target)
        elif kind == "unpause":
            self.unpause(eff.target)
        elif kind == "cb":
            d = self.deferred(eff.target)
            d.addCallback(self.body_function(eff.target, "cb", eff.arg, ()))
        else:  # pragma: no cover - the parser only produces the kinds above
            raise AssertionError(kind)

    def compute(self, result: Result, value: Any) -> Any:
        kind = result.kind
        if kind == "pass":
            return value
        if kind == "add":
            if type(value) is not int:
                raise TypeError()
            return value + result.arg
        if kind == "const":
            return result.arg
        if kind == "raise":
            raise result.arg.make()
        if kind == "fail":
            return Failure(result.arg.make())
        if kind == "return":
            return self.deferred(result.arg)
        if kind == "trap":
            if not isinstance(value, Failure):
                return value
            if result.arg != "any":
                value.trap(error_type(result.arg))
            return result.value
        raise AssertionError(kind)  # pragma: no cover

    def body_function(self, name: str, kind: str, result: Result,
                      effects: tuple[Effect, ...], number: Optional[int] = None) -> Callable:
        """A logged callback body; ``kind`` is cb, eb or both."""
        n = self.next_body_number(name) if number is None else number

        def body(value: Any) -> Any:
            shown = kind if kind != "both" else ("eb" if isinstance(value, Failure) else "cb")
            self.emit(f"{name}.{n} {shown} <- {fmt(value)} @{ctx_name()}")
            try:
                for eff in effects:
                    self.run_effect(eff)
                return self.compute(result, value)
            except RecursionError:
                self.invalid = self.invalid or UNBOUNDED_RECURSION
                raise

        return body

    def canceller(self, name: str, effects: tuple[Effect, ...]) -> Callable:
        def cancel(d: Deferred) -> None:
            self.emit(f"{name} canceller @{ctx_name()}")
            try:
                for eff in effects:
                    self.run_effect(eff)
            except RecursionError:
                self.invalid = self.invalid or UNBOUNDED_RECURSION
                raise

        return cancel

    # -- coroutines -------------------------------------------------------------

    async def frame(self, coro: CoroDef, label: str) -> Any:
        """Run one instance (or nested call) of a coroutine definition."""
        try:
            value = await self._frame_body(coro, label)
        except RecursionError:
            self.invalid = self.invalid or UNBOUNDED_RECURSION
            raise
        except Exception as e:
            self.emit(f"{label}: raised {fmt_exc(e)}")
            raise
        self.emit(f"{label}: returned {fmt(value)}")
        return value

    async def _frame_body(self, coro: CoroDef, label: str) -> Any:
        last = None
        for line in coro.lines:
            kind = line.kind
            if kind == "await":
                d = self.deferred(line.target)
                try:
                    value = await d
                except Exception as e:
                    self.emit(f"{label}: await {line.target} raised {fmt_exc(e)}")
                    if line.catch is None or not matches(e, line.catch):
                        raise
                    self.emit(f"{label}: caught {fmt_exc(e)}")
                    if line.reraise:
                        raise
                else:
                    self.emit(f"{label}: await {line.target} -> {fmt(value)}")
                    last = value
            elif kind == "call":
                callee = self.lookup(line.target, "c")
                value = await self.frame(callee, f"{label}>{line.target}")
                self.emit(f"{label}: call {line.target} -> {fmt(value)}")
                last = value
            elif kind == "effect":
                for eff in line.effects:
                    self.run_effect(eff)
            elif kind == "ctx":
                self.emit(f"ctx {ctx_name()}")
            elif kind == "return":
                return last if line.last else line.value
            elif kind == "raise":
                raise line.err.make()
        return None

    def coroutine_function(self, name: str, label: str) -> Callable:
        coro = self.lookup(name, "c")
        return functools.partial(self.frame, coro, label)

    # -- operations -------------------------------------------------------------

    def execute(self) -> None:
        for op in self.scenario.ops:
            try:
                getattr(self, "op_" + op.name)(*op.args)
                self.check_no_wait_cycle()
            except (InvalidScenario, _BudgetExceeded):
                pass
            except Exception as e:
                if isinstance(e, RecursionError):
                    self.mark_invalid(UNBOUNDED_RECURSION)
                elif isinstance(e, AssertionError) and "Expected `call_later` callback" in str(e):
                    self.mark_invalid("a timeout timer came due outside the sentinel context")
                elif self.invalid is None:
                    self.emit(f"! line {op.line}: {fmt_exc(e)}")
            if self.invalid is not None:
                raise InvalidScenario(f"line {op.line}: {self.invalid}")

    def check_no_wait_cycle(self) -> None:
        for name in self.deferred_order:
            d = self.names[name][1]
            seen = set()
            while d.called and isinstance(d.result, Deferred):
                if id(d) in seen:
                    raise self.mark_invalid(f"{name!r} waits on itself")
                seen.add(id(d))
                d = d.result

    def op_async(self, coro: CoroDef) -> None:
        defined = {n for n, (k, _) in self.names.items() if k == "c"}
        for line in coro.lines:
            if line.kind == "call" and line.target not in defined:
                raise self.mark_invalid(
                    f"'call {line.target}' (line {line.line}) needs an earlier async block")
        self.bind(coro.name, "c", coro)

    def op_new(self, name: str, canceller: Optional[tuple[Effect, ...]]) -> None:
        if canceller is None:
            self.bind(name, "d", Deferred())
        else:
            self.bind(name, "d", Deferred(self.canceller(name, canceller)))

    def op_succeed(self, name: str, value: Any) -> None:
        self.bind(name, "d", succeed(value))

    def op_fail(self, name: str, err: Err) -> None:
        self.bind(name, "d", fail(err.make()))

    def op_callback(self, name: str, value: Any) -> None:
        self.deferred(name).callback(value)

    def op_errback(self, name: str, err: Err) -> None:
        self.deferred(name).errback(err.make())

    def op_cancel(self, name: str) -> None:
        self.deferred(name).cancel()

    def op_pause(self, name: str) -> None:
        self.pause(name)

    def op_unpause(self, name: str) -> None:
        self.unpause(name)

    def op_cb(self, name: str, body: Body) -> None:
        d = self.deferred(name)
        d.addCallback(self.body_function(name, "cb", body.result, body.effects))

    def op_eb(self, name: str, body: Body) -> None:
        d = self.deferred(name)
        d.addErrback(self.body_function(name, "eb", body.result, body.effects))

    def op_both(self, name: str, body: Body) -> None:
        d = self.deferred(name)
        d.addBoth(self.body_function(name, "both", body.result, body.effects))

    def op_cbs(self, name: str, on_value: Result, on_failure: Result,
               effects: tuple[Effect, ...]) -> None:
        d = self.deferred(name)
        n = self.next_body_number(name)
        d.addCallbacks(self.body_function(name, "cb", on_value, effects, n),
                       self.body_function(name, "eb", on_failure, effects, n))

    def op_chain(self, source: str, target: str) -> None:
        self.deferred(source).chainDeferred(self.deferred(target))

    def op_gather(self, name: str, flags: frozenset, members: tuple[str, ...]) -> None:
        ds = [self.deferred(m) for m in members]
        self.bind(name, "d", gatherResults(ds, consumeErrors="consume" in flags))

    def op_dlist(self, name: str, flags: frozenset, members: tuple[str, ...]) -> None:
        ds = [self.deferred(m) for m in members]
        self.bind(name, "d", DeferredList(ds, fireOnOneCallback="foc" in flags,
                                          fireOnOneErrback="foe" in flags,
                                          consumeErrors="consume" in flags))

    def op_race(self, name: str, flags: frozenset, members: tuple[str, ...]) -> None:
        ds = [self.deferred(m) for m in members]
        self.bind(name, "d", race(ds))

    def op_observable(self, name: str, consume: bool, source: str) -> None:
        self.bind(name, "o", ObservableDeferred(self.deferred(source), consumeErrors=consume))

    def op_observe(self, name: str, observable: str) -> None:
        self.bind(name, "d", self.lookup(observable, "o").observe())

    def op_stop_cancellation(self, name: str, source: str) -> None:
        self.bind(name, "d", stop_cancellation(self.deferred(source)))

    def op_delay_cancellation(self, name: str, source: str) -> None:
        self.bind(name, "d", delay_cancellation(self.deferred(source)))

    def op_add_timeout(self, name: str, seconds: float) -> None:
        self.deferred(name).addTimeout(seconds, self.clock)

    def op_timeout(self, name: str, source: str, seconds: float) -> None:
        self.bind(name, "d", timeout_deferred(deferred=self.deferred(source), timeout=seconds,
                                              clock=self.synapse_clock))

    def op_call_later(self, seconds: float, effects: tuple[Effect, ...]) -> None:
        def timer() -> None:
            try:
                for eff in effects:
                    self.run_effect(eff)
            except RecursionError:
                self.invalid = self.invalid or UNBOUNDED_RECURSION
                raise

        self.clock.callLater(seconds, timer)

    def op_advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def op_start(self, name: str, coro: str) -> None:
        self.bind(name, "d", Deferred.fromCoroutine(self.coroutine_function(coro, name)()))

    def op_background(self, name: str, coro: str) -> None:
        self.bind(name, "d", run_in_background(self.coroutine_function(coro, name)))

    def op_bgprocess(self, name: str, coro: str) -> None:
        f = self.coroutine_function(coro, name)
        self.bind(name, "d", run_as_background_process(coro, SERVER_NAME, f))

    def op_enter(self, name: str) -> None:
        context = LoggingContext(name=name, server_name=SERVER_NAME)
        context.__enter__()
        self.contexts[name] = context

    def op_exit(self, name: str) -> None:
        context = self.contexts.get(name)
        if context is None:
            raise self.mark_invalid(f"'exit {name}' with no earlier 'enter {name}'")
        context.__exit__(None, None, None)

    def op_current(self) -> None:
        self.emit(f"ctx {ctx_name()}")

    def op_yieldable(self, name: str, source: str) -> None:
        self.bind(name, "d", make_deferred_yieldable(self.deferred(source)))

    # -- the end ----------------------------------------------------------------

    def final_state(self) -> None:
        for name in self.deferred_order:
            d = self.names[name][1]
            if not d.called:
                line = f"= {name} pending"
            elif isinstance(d.result, Deferred):
                line = f"= {name} waiting {self.first_name.get(id(d.result), '?')}"
            else:
                line = f"= {name} result {fmt(d.result)}"
            paused = self.user_pauses.get(id(d), 0)
            if paused > 0:
                line += f" paused {paused}"
            self.emit(line)

    def close(self) -> None:
        """Stop printing and drop every reference to scenario objects."""
        self.closed = True
        self.names.clear()
        self.first_name.clear()
        self.contexts.clear()
        self.clock = None  # type: ignore[assignment]
        self.synapse_clock = None  # type: ignore[assignment]
        self.scenario = None  # type: ignore[assignment]


def _mentions_recursion(failure: Failure) -> bool:
    """True when a failure is, or wraps (FirstError, FailureGroup), a
    RecursionError."""
    seen = 0
    stack = [failure]
    while stack and seen < 1000:
        seen += 1
        f = stack.pop()
        if f.check(RecursionError):
            return True
        value = f.value
        if isinstance(value, FirstError):
            stack.append(value.subFailure)
        for sub in getattr(value, "failures", None) or ():
            if isinstance(sub, Failure):
                stack.append(sub)
    return False


def error_type(name: str) -> type:
    if name in USER_ERRORS:
        return USER_ERRORS[name]
    if name in RAISABLE_BUILTINS:
        return RAISABLE_BUILTINS[name]
    return MATCH_ONLY_BUILTINS[name]


def matches(exc: BaseException, matcher: str) -> bool:
    return matcher == "any" or isinstance(exc, error_type(matcher))


# ---------------------------------------------------------------------------
# Scenario-level entry points
# ---------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int  # EXIT_OK, EXIT_MALFORMED or EXIT_INVALID
    trace: str = ""
    message: str = ""


def _collect_garbage() -> None:
    for _ in range(4):
        if gc.collect() == 0:
            break


def _reset_globals() -> None:
    """Put Twisted / Synapse process state back to a fresh start."""
    OBSERVERS.run = None
    set_current_context(SENTINEL_CONTEXT)
    background_process_metrics._background_process_counts.clear()
    background_process_metrics._background_processes_active_since_last_scrape.clear()


def _on_budget(signum: int, frame: Any) -> None:
    run = OBSERVERS.run
    if run is not None and not run.closed:
        run.mark_invalid("the scenario seems to loop forever (CPU budget exceeded)")
        raise _BudgetExceeded()


signal.signal(signal.SIGVTALRM, _on_budget)


def run_scenario(scenario: Scenario, budget: float = DEFAULT_BUDGET) -> Outcome:
    """Run a parsed scenario; return its trace or why it has none."""
    _reset_globals()
    _collect_garbage()
    run = Run(scenario)
    OBSERVERS.start_capture(run)
    signal.setitimer(signal.ITIMER_VIRTUAL, budget, 0.01)
    invalid: Optional[str] = None
    try:
        try:
            run.execute()
        finally:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        run.final_state()
    except (InvalidScenario, _BudgetExceeded) as e:
        invalid = str(e) if isinstance(e, InvalidScenario) else run.invalid
    lines = run.out
    if invalid is None and run.invalid is not None:
        invalid = run.invalid
    run.close()
    del run
    _collect_garbage()
    unhandled = OBSERVERS.stop_capture()
    _reset_globals()
    if invalid is None and any("RecursionError" in line for line in lines + unhandled):
        invalid = UNBOUNDED_RECURSION
    if invalid is not None:
        return Outcome(EXIT_INVALID, message=f"invalid scenario: {invalid}")
    return Outcome(EXIT_OK, "".join(line + "\n" for line in lines + unhandled))


def run_text(text: str, budget: float = DEFAULT_BUDGET) -> Outcome:
    """Run scenario text in a forked child process (see `_run_isolated`)."""
    try:
        scenario = parse_scenario(text)
    except MalformedScenario as e:
        return Outcome(EXIT_MALFORMED, message=f"malformed scenario: {e}")
    return _run_isolated(scenario, budget)


# Wall-clock seconds a forked scenario may take, per CPU-second of budget.
WALL_FACTOR = 10.0


def _run_isolated(scenario: Scenario, budget: float) -> Outcome:
    """Run a scenario in a forked child, killing it if it overruns.

    The CPU budget (SIGVTALRM) cannot stop every endless scenario: Twisted
    catches BaseException in a few places (DeferredList.cancel logs and
    swallows anything its inputs' cancel raises), so an unbounded mutual
    cancel recursion swallows the budget signal as well as RecursionError
    and branches on for ever. A child process can always be killed. Fork is
    cheap here (Twisted and Synapse are already imported), and the child's
    process state (logcontexts, counters, garbage) goes away with it.
    """
    if not hasattr(os, "fork"):
        return run_scenario(scenario, budget)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            outcome = run_scenario(scenario, budget)
            payload = json.dumps([outcome.code, outcome.trace, outcome.message]).encode()
        except BaseException as e:  # noqa: BLE001 - report anything as invalid
            payload = json.dumps([EXIT_INVALID, "", f"driver error: {e!r}"]).encode()
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_fd)
    deadline = budget * WALL_FACTOR + 2.0
    chunks: list[bytes] = []
    timed_out = False
    with os.fdopen(read_fd, "rb") as pipe:
        import select
        import time
        end = time.monotonic() + deadline
        while True:
            left = end - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([pipe], [], [], left)
            if not ready:
                continue
            chunk = pipe.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
    if timed_out:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.waitpid(pid, 0)
    if timed_out or not chunks:
        return Outcome(EXIT_INVALID, message="invalid scenario: the scenario seems to loop forever "
                       "(wall-clock limit exceeded)")
    code, trace, message = json.loads(b"".join(chunks).decode())
    return Outcome(code, trace, message)


def run_file(path: str, budget: float = DEFAULT_BUDGET) -> Outcome:
    with open(path, encoding="utf-8") as f:
        return run_text(f.read(), budget)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Directories expand to their ``*.scenario`` files, sorted by name."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            paths.extend(os.path.join(item, n) for n in sorted(os.listdir(item))
                         if n.endswith(".scenario"))
        else:
            paths.append(item)
    return paths


def run_batch(paths: list[str], out_dir: Optional[str], budget: float) -> int:
    failures = 0
    for path in paths:
        outcome = run_file(path, budget)
        base = os.path.basename(path)[: -len(".scenario")] if path.endswith(".scenario") \
            else os.path.basename(path)
        target_dir = out_dir if out_dir is not None else os.path.dirname(path)
        target = os.path.join(target_dir, base + ".expected")
        if outcome.code == EXIT_OK:
            with open(target, "w", encoding="utf-8", newline="\n") as f:
                f.write(outcome.trace)
        else:
            failures += 1
            status = "MALFORMED" if outcome.code == EXIT_MALFORMED else "INVALID"
            print(f"{status} {path}: {outcome.message}", file=sys.stderr)
    print(f"{len(paths)} scenarios, {len(paths) - failures} written, {failures} skipped",
          file=sys.stderr)
    return 0 if failures == 0 else 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", action="store_true",
                        help="run many scenarios, writing NAME.expected files")
    parser.add_argument("--out", metavar="DIR",
                        help="batch mode: write .expected files here instead of beside the input")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                        help="CPU seconds per scenario before it counts as an endless loop "
                             "(default %(default)s)")
    parser.add_argument("inputs", nargs="+", metavar="PATH")
    args = parser.parse_args(argv)
    if args.batch:
        if args.out:
            os.makedirs(args.out, exist_ok=True)
        return run_batch(expand_inputs(args.inputs), args.out, args.budget)
    if len(args.inputs) != 1 or args.out:
        parser.error("single-file mode takes exactly one FILE.scenario (use --batch for more)")
    outcome = run_file(args.inputs[0], args.budget)
    if outcome.code != EXIT_OK:
        print(f"{args.inputs[0]}: {outcome.message}", file=sys.stderr)
        return outcome.code
    sys.stdout.write(outcome.trace)
    sys.stdout.flush()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
