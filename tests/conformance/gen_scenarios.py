#!/usr/bin/env python3
"""Generate random, valid Deferred scenarios (see FORMAT.md).

Usage::

    gen_scenarios.py --seed S --count N --out DIR \\
        --features core[,async,combinators,clock,logcontext] [--prefix NAME]

Writes ``DIR/PREFIX_0001.scenario`` ... (PREFIX defaults to ``gen_core`` for
``core`` alone, else ``gen_`` plus the non-core features joined by ``_``,
e.g. ``gen_async`` or ``gen_async_clock``).  Every file starts with
``# generated: seed=S index=I features=F``.

Scenario ``I`` of seed ``S`` is a pure function of ``(S, I, features)``: its
random generator is seeded with that triple plus an attempt counter.  Each
candidate is run through the Twisted driver (in this process); a candidate the
driver rejects as invalid (exit code 4) is discarded and the next attempt is
generated, so every emitted scenario is valid and has a trace.

The generator keeps only a rough picture of the scenario (which Deferreds the
top-level ops have fired, paused, ...) to bias its choices towards the subtle
parts of Deferred semantics: re-entrant bodies, callbacks returning Deferreds,
chains of waiting Deferreds, cancellers with effects, forwarded cancellation,
late callbacks after cancel, AlreadyCalledError, nested pauses, trap/any,
TypeErrors from add:N, chainDeferred and unhandled failures.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

FEATURES = ("core", "async", "combinators", "clock", "logcontext")
MAX_ATTEMPTS = 500
# Candidates that loop forever are invalid; do not wait long for them.
GEN_BUDGET = 0.25

WORDS = ["ok", "done", "late", "x", "v", "hello"]
CONTEXT_NAMES = ["req", "foo", "bar", "other"]
TIMES = ["0", "0.5", "1", "1", "1.5", "2", "2", "3", "5", "0.1", "0.2", "0.3", "0.7"]


def parse_features(text: str) -> tuple[str, ...]:
    feats = [f.strip() for f in text.split(",") if f.strip()]
    for f in feats:
        if f not in FEATURES:
            raise ValueError(f"unknown feature {f!r} (known: {', '.join(FEATURES)})")
    if "core" not in feats:
        feats.insert(0, "core")
    return tuple(f for f in FEATURES if f in feats)


@dataclass
class DInfo:
    """What the generator believes about one named Deferred."""

    name: str
    fired: bool = False
    canceller: bool = False
    pauses: int = 0  # top-level pauses minus unpauses
    plain: bool = True  # created by new/succeed/fail
    # Calling back a gatherResults Deferred by hand feeds the value to
    # Twisted's private result-parsing callback (ValueError, TypeError...):
    # never do that.
    value_ok: bool = True
    # Deferreds that this one's bodies, canceller or chainDeferred fire once
    # it runs (a rough guess, used to avoid piling up AlreadyCalledErrors).
    fires_on_run: list[str] = field(default_factory=list)
    fires_on_cancel: list[str] = field(default_factory=list)


@dataclass
class State:
    deferreds: list[DInfo] = field(default_factory=list)
    observables: list[str] = field(default_factory=list)
    coroutines: list[str] = field(default_factory=list)
    open_contexts: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    timers: int = 0
    lines: list[str] = field(default_factory=list)

    def fresh(self, prefix: str) -> str:
        n = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = n
        return f"{prefix}{n}"

    def names(self) -> list[str]:
        return [d.name for d in self.deferreds]

    def mark_fired(self, name: str, cancelled: bool = False) -> None:
        """Believe ``name`` fired now, and so whatever its run fires."""
        todo, seen = [(name, cancelled)], set()
        while todo:
            n, by_cancel = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            d = self.info(n)
            if by_cancel and not d.fired:
                todo += [(m, False) for m in d.fires_on_cancel]
            d.fired = True
            todo += [(m, False) for m in d.fires_on_run]

    def info(self, name: str) -> DInfo:
        for d in self.deferreds:
            if d.name == name:
                return d
        raise KeyError(name)


class Generator:
    """Builds one candidate scenario from a seeded random generator."""

    PLAIN_NAMES = ["a", "b", "c", "d", "e", "f"]

    def __init__(self, rng: random.Random, features: tuple[str, ...]) -> None:
        self.rng = rng
        self.features = set(features)
        self.st = State()

    # -- small random pieces ----------------------------------------------------

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def value(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return str(self.rng.randint(-2, 20))
        if r < 0.7:
            return "none"
        if r < 0.78:
            return self.rng.choice(["true", "false"])
        return self.rng.choice(WORDS)

    def raisable(self) -> str:
        r = self.rng.random()
        if r < 0.85:
            e = f"E{self.rng.randint(1, 5)}"
            if self.chance(0.35):
                e += ":" + self.rng.choice(["boom", "bad", "oops", "late"])
            return e
        return self.rng.choice(["CancelledError", "AlreadyCalledError", "TypeError", "TimeoutError"])

    def matcher(self) -> str:
        choices = ["E1", "E2", "E3", "any", "any", "CancelledError", "AlreadyCalledError", "TypeError"]
        if self.features & {"combinators"}:
            choices += ["FirstError", "FailureGroup"]
        if "clock" in self.features:
            choices += ["TimeoutError"]
        return self.rng.choice(choices)

    def time(self) -> str:
        return self.rng.choice(TIMES)

    def target(self, owner: Optional[str] = None, prefer_unfired: bool = False,
               for_value: bool = False) -> str:
        """A Deferred name; ``for_value``: one that may be called back by hand."""
        candidates = [d for d in self.st.deferreds if d.value_ok or not for_value]
        if owner is not None and self.chance(0.3) and any(d.name == owner for d in candidates):
            return owner
        if prefer_unfired:
            unfired = [d.name for d in candidates if not d.fired]
            if unfired and self.chance(0.9):
                return self.rng.choice(unfired)
        return self.rng.choice([d.name for d in candidates])

    def result(self, owner: Optional[str] = None, errback: bool = False) -> str:
        r = self.rng.random()
        if r < 0.17:
            return "pass"
        if r < 0.35:
            return f"add:{self.rng.randint(-1, 10)}"
        if r < 0.47:
            return f"const:{self.value()}"
        if r < 0.57:
            return f"raise:{self.raisable()}"
        if r < 0.63:
            return f"fail:{self.raisable()}"
        if r < 0.78:
            # Returning the Deferred a body is attached to is always invalid.
            others = [n for n in self.st.names() if n != owner]
            if others:
                return f"return:{self.rng.choice(others)}"
            return "pass"
        m = self.matcher()
        if errback or self.chance(0.5):
            return f"trap:{m}:{self.value()}" if self.chance(0.6) else f"trap:{m}"
        return f"trap:{m}"

    def effect(self, owner: Optional[str] = None, allow_cb: bool = True) -> list[str]:
        """One effect (or a balanced pause/unpause pair)."""
        r = self.rng.random()
        if "logcontext" in self.features and r < 0.08:
            return ["ctx"]
        r = self.rng.random()
        if r < 0.28:
            return [f"callback:{self.target(owner, prefer_unfired=True, for_value=True)}:{self.value()}"]
        if r < 0.40:
            return [f"errback:{self.target(owner, prefer_unfired=True)}:{self.raisable()}"]
        if r < 0.55:
            return [f"cancel:{self.target(owner)}"]
        if r < 0.70:
            y = self.target(owner)
            return [f"pause:{y}", f"unpause:{y}"] if self.chance(0.65) else [f"pause:{y}"]
        if r < 0.75:
            paused = [d.name for d in self.st.deferreds if d.pauses > 0]
            if paused:
                y = self.rng.choice(paused)
                self.st.info(y).pauses -= 1
                return [f"unpause:{y}"]
        if allow_cb:
            return [f"cb:{self.target(owner)}:{self.result(owner)}"]
        return [f"cancel:{self.target(owner)}"]

    def effects(self, owner: Optional[str] = None, most: int = 3) -> list[str]:
        n = self.rng.choices([0, 1, 2, 3], weights=[45, 33, 15, 7])[0]
        out: list[str] = []
        for _ in range(min(n, most)):
            out += self.effect(owner)
        return out

    def emit(self, line: str) -> None:
        self.st.lines.append(line)

    # -- operations ---------------------------------------------------------------

    def add_plain(self, name: Optional[str] = None) -> str:
        st = self.st
        if name is None:
            used = set(st.names())
            name = next(n for n in self.PLAIN_NAMES + [f"d{i}" for i in range(1, 50)]
                        if n not in used)
        r = self.rng.random()
        info = DInfo(name)
        if r < 0.55:
            self.emit(f"new {name}")
        elif r < 0.72:
            self.emit(f"new {name} canceller")
            info.canceller = True
        elif r < 0.87:
            st.deferreds.append(info)  # the canceller may refer to its own Deferred
            effs: list[str] = []
            for _ in range(self.rng.choice([1, 1, 2])):
                effs += self.effect(name, allow_cb=True)
            st.deferreds.pop()
            self.emit(f"new {name} canceller={','.join(effs)}")
            info.canceller = True
            info.fires_on_cancel = [e.split(":")[1] for e in effs
                                    if e.split(":")[0] in ("callback", "errback", "cancel")]
        elif r < 0.94:
            self.emit(f"succeed {name} {self.value()}")
            info.fired = True
        else:
            self.emit(f"fail {name} {self.raisable()}")
            info.fired = True
        st.deferreds.append(info)
        return name

    def op_fire(self) -> None:
        if self.chance(0.7):
            x = self.target(prefer_unfired=True, for_value=True)
            self.emit(f"callback {x} {self.value()}")
        else:
            x = self.target(prefer_unfired=True)
            self.emit(f"errback {x} {self.raisable()}")
        self.st.mark_fired(x)

    def op_cancel(self) -> None:
        x = self.target(prefer_unfired=True)
        self.emit(f"cancel {x}")
        self.st.mark_fired(x, cancelled=True)

    def op_pause(self) -> None:
        x = self.target()
        self.emit(f"pause {x}")
        self.st.info(x).pauses += 1

    def op_unpause(self) -> None:
        paused = [d for d in self.st.deferreds if d.pauses > 0]
        if not paused:
            return self.op_pause()
        d = self.rng.choice(paused)
        self.emit(f"unpause {d.name}")
        d.pauses -= 1

    def op_body(self) -> None:
        x = self.target()
        kind = self.rng.choices(["cb", "eb", "both", "cbs"], weights=[40, 20, 20, 15])[0]
        if kind == "cbs":
            line = f"cbs {x} {self.result(x)} {self.result(x, errback=True)}"
        else:
            line = f"{kind} {x} {self.result(x, errback=kind != 'cb')}"
        effs = self.effects(x)
        self.emit(" ".join([line] + effs))
        fired = [e.split(":")[1] for e in effs if e.split(":")[0] in ("callback", "errback", "cancel")]
        self.st.info(x).fires_on_run += fired
        if self.st.info(x).fired:
            for y in fired:  # the body probably runs at once
                self.st.mark_fired(y)

    def op_chain(self) -> None:
        x = self.target()
        y = self.target(for_value=True)  # chainDeferred calls y.callback
        if x != y or self.chance(0.1):
            self.emit(f"chain {x} {y}")
            self.st.info(x).fires_on_run.append(y)
            if self.st.info(x).fired:
                self.st.mark_fired(y)

    def op_wait_chain(self) -> None:
        """Macro: X returns Y (returns Z), then fire the links in some order."""
        names = self.st.names()
        k = min(len(names), self.rng.choice([2, 2, 3]))
        link = self.rng.sample(names, k)
        for a, b in zip(link, link[1:]):
            self.emit(f"cb {a} return:{b}")
        order = link[:]
        self.rng.shuffle(order)
        for n in order[: self.rng.randint(1, len(order))]:
            if not self.st.info(n).fired and self.st.info(n).value_ok:
                self.emit(f"callback {n} {self.value()}")
                self.st.mark_fired(n)

    def op_cancel_forward(self) -> None:
        """Macro: an outer Deferred waits on one with a canceller; cancel the outer."""
        inner = self.add_plain() if len(self.st.deferreds) < 6 else self.target()
        outer = self.target()
        if outer == inner:
            return
        self.emit(f"cb {outer} return:{inner}")
        if not self.st.info(outer).fired and self.st.info(outer).value_ok:
            self.emit(f"callback {outer} {self.value()}")
            self.st.mark_fired(outer)
        self.emit(f"cancel {outer}")

    def op_late_fire(self) -> None:
        """Macro: cancel, then fire once (maybe swallowed) and maybe again."""
        x = self.target(prefer_unfired=True, for_value=True)
        self.emit(f"cancel {x}")
        self.emit(f"callback {x} {self.value()}" if self.chance(0.6) else f"errback {x} {self.raisable()}")
        if self.chance(0.4):
            self.emit(f"callback {x} {self.value()}")
        self.st.mark_fired(x, cancelled=True)

    # -- async ----------------------------------------------------------------------

    def define_coroutine(self) -> str:
        st = self.st
        name = st.fresh("c")
        body: list[str] = []
        n = self.rng.randint(1, 4)
        names = st.names()
        for i in range(n):
            r = self.rng.random()
            if r < 0.55:
                x = self.rng.choice(names)
                line = f"await {x}"
                if self.chance(0.35):
                    line += f" catch {self.matcher()}"
                    if self.chance(0.25):
                        line += " reraise"
                body.append(line)
            elif r < 0.68 and st.coroutines:
                body.append(f"call {self.rng.choice(st.coroutines)}")
            elif r < 0.85:
                body.append("effect " + " ".join(self.effect() + (self.effect() if self.chance(0.3) else [])))
            elif "logcontext" in self.features and r < 0.93:
                body.append("ctx")
            else:
                body.append(f"await {self.rng.choice(names)}")
        r = self.rng.random()
        if r < 0.35:
            body.append("return last")
        elif r < 0.55:
            body.append(f"return {self.value()}")
        elif r < 0.68:
            body.append(f"raise {self.raisable()}")
        self.emit(f"async {name}")
        for line in body:
            self.emit("  " + line)
        self.emit("end")
        st.coroutines.append(name)
        return name

    def op_start(self, how: str = "start") -> None:
        st = self.st
        if not st.coroutines or self.chance(0.55):
            c = self.define_coroutine()
        else:
            c = self.rng.choice(st.coroutines)
        r = st.fresh({"start": "r", "background": "bg", "bgprocess": "bp"}[how])
        self.emit(f"{how} {r} {c}")
        st.deferreds.append(DInfo(r, plain=False, canceller=True))

    # -- combinators -------------------------------------------------------------------

    def members(self, most: int = 3) -> list[str]:
        names = self.st.names()
        k = self.rng.choices([0, 1, 2, 3, 4], weights=[4, 14, 45, 30, 7])[0]
        k = min(k, most + 1)
        return [self.rng.choice(names) if self.chance(0.1) else self.target(prefer_unfired=True)
                for _ in range(k)]

    def op_combinator(self) -> None:
        st = self.st
        kind = self.rng.choices(["gather", "dlist", "race", "observable", "observe", "stop", "delay"],
                                weights=[15, 15, 10, 8, 12 if st.observables else 0, 10, 10])[0]
        if kind == "gather":
            g = st.fresh("g")
            flags = ["consume"] if self.chance(0.4) else []
            self.emit(" ".join(["gather", g] + flags + self.members()))
            st.deferreds.append(DInfo(g, plain=False, canceller=True, value_ok=False))
        elif kind == "dlist":
            n = st.fresh("l")
            flags = [f for f in ("foc", "foe", "consume") if self.chance(0.35)]
            self.rng.shuffle(flags)
            self.emit(" ".join(["dlist", n] + flags + self.members()))
            st.deferreds.append(DInfo(n, plain=False, canceller=True))
        elif kind == "race":
            n = st.fresh("rc")
            self.emit(" ".join(["race", n] + self.members()))
            st.deferreds.append(DInfo(n, plain=False, canceller=True))
        elif kind == "observable":
            o = st.fresh("o")
            flag = ["consume"] if self.chance(0.4) else []
            self.emit(" ".join(["observable", o] + flag + [self.target(prefer_unfired=True)]))
            st.observables.append(o)
            for _ in range(self.rng.randint(0, 2)):
                self.observe()
        elif kind == "observe":
            self.observe()
        else:
            y = st.fresh("s" if kind == "stop" else "w")
            self.emit(f"{kind}_cancellation {y} {self.target(prefer_unfired=True)}")
            st.deferreds.append(DInfo(y, plain=False, canceller=kind == "delay"))

    def observe(self) -> None:
        st = self.st
        y = st.fresh("p")
        self.emit(f"observe {y} {self.rng.choice(st.observables)}")
        st.deferreds.append(DInfo(y, plain=False, canceller=True))

    # -- clock ------------------------------------------------------------------------------

    def op_clock(self) -> None:
        st = self.st
        kind = self.rng.choices(["add_timeout", "timeout", "call_later", "advance"],
                                weights=[14, 14, 14, 22 if st.timers else 4])[0]
        if kind == "add_timeout":
            self.emit(f"add_timeout {self.target(prefer_unfired=True)} {self.time()}")
            st.timers += 1
        elif kind == "timeout":
            y = st.fresh("t")
            self.emit(f"timeout {y} {self.target(prefer_unfired=True)} {self.time()}")
            st.deferreds.append(DInfo(y, plain=False))
            st.timers += 1
        elif kind == "call_later":
            effs: list[str] = []
            for _ in range(self.rng.choice([1, 1, 2, 3])):
                effs += self.effect()
            self.emit(" ".join(["call_later", self.time()] + effs))
            st.timers += 1
        else:
            self.op_advance()

    def op_advance(self) -> None:
        st = self.st
        if "logcontext" in self.features and st.open_contexts and self.chance(0.7):
            # A timeout timer must not come due outside the sentinel context.
            self.exit_context()
        self.emit(f"advance {self.time()}")
        st.timers = max(0, st.timers - 1)

    # -- logcontext ------------------------------------------------------------------------

    def exit_context(self) -> None:
        st = self.st
        if self.chance(0.8):
            n = st.open_contexts.pop()
        else:
            n = st.open_contexts.pop(self.rng.randrange(len(st.open_contexts)))
        self.emit(f"exit {n}")

    def op_logcontext(self) -> None:
        st = self.st
        kind = self.rng.choices(
            ["enter", "exit", "current", "yieldable", "background", "bgprocess"],
            weights=[14 if len(st.open_contexts) < 3 else 2, 14 if st.open_contexts else 0,
                     10, 12, 10, 10])[0]
        if kind == "enter":
            free = [n for n in CONTEXT_NAMES if n not in st.open_contexts]
            n = self.rng.choice(free or CONTEXT_NAMES)
            if n in st.open_contexts:
                return
            self.emit(f"enter {n}")
            st.open_contexts.append(n)
        elif kind == "exit":
            self.exit_context()
        elif kind == "current":
            self.emit("current")
        elif kind == "yieldable":
            y, x = st.fresh("y"), self.target(prefer_unfired=True)
            self.emit(f"yieldable {y} {x}")
            st.deferreds.append(DInfo(y, plain=False, value_ok=st.info(x).value_ok))
        else:
            self.op_start(kind)

    # -- whole scenario ------------------------------------------------------------------------

    def generate(self) -> list[str]:
        rng, st = self.rng, self.st
        target_deferreds = rng.randint(2, 6)
        n_ops = rng.randint(5, 25)
        for _ in range(rng.randint(1, min(2, target_deferreds))):
            self.add_plain()
        ops: list[tuple[float, Callable[[], None]]] = []
        while len(st.lines) < n_ops:
            n_plain = sum(1 for d in st.deferreds if d.plain)
            unfired = any(not d.fired for d in st.deferreds)
            ops = [
                (4.0 if n_plain < target_deferreds else 0.0, lambda: self.add_plain()),
                (5.0 if unfired else 0.4, self.op_fire),
                (2.0 if unfired else 0.4, self.op_cancel),
                (1.2, self.op_pause),
                (1.5 if any(d.pauses > 0 for d in st.deferreds) else 0.0, self.op_unpause),
                (9.0, self.op_body),
                (1.0, self.op_chain),
                (1.2, self.op_wait_chain),
                (0.8, self.op_cancel_forward),
                (0.4 if unfired else 0.1, self.op_late_fire),
            ]
            if "async" in self.features:
                ops.append((3.0, self.op_start))
            if "combinators" in self.features:
                ops.append((4.0, self.op_combinator))
            if "clock" in self.features:
                ops.append((4.0, self.op_clock))
            if "logcontext" in self.features:
                ops.append((4.0, self.op_logcontext))
            weights = [w for w, _ in ops]
            rng.choices([f for _, f in ops], weights=weights)[0]()
        # Wind down: often fire what is still pending and let timers run.
        if rng.random() < 0.6:
            for d in st.deferreds:
                if d.plain and not d.fired and rng.random() < 0.6:
                    self.emit(f"callback {d.name} {self.value()}" if rng.random() < 0.75
                              else f"errback {d.name} {self.raisable()}")
                    st.mark_fired(d.name)
        if "clock" in self.features and st.timers and rng.random() < 0.7:
            self.op_advance()
        if "logcontext" in self.features and st.open_contexts and rng.random() < 0.5:
            self.exit_context()
        return st.lines


def candidate(seed: str, index: int, attempt: int, features: tuple[str, ...]) -> str:
    rng = random.Random(f"{seed}/{index}/{attempt}/{','.join(features)}")
    lines = Generator(rng, features).generate()
    header = f"# generated: seed={seed} index={index} features={','.join(features)}"
    return "\n".join([header] + lines) + "\n"


@dataclass
class Generated:
    index: int
    text: str
    trace: str
    attempts: int
    path: str = ""


def generate_one(seed: str, index: int, features: tuple[str, ...]) -> Generated:
    """The index-th valid scenario for this seed, with its trace."""
    import twisted_driver  # imported lazily: it starts Twisted and Synapse

    for attempt in range(MAX_ATTEMPTS):
        text = candidate(seed, index, attempt, features)
        outcome = twisted_driver.run_text(text, budget=GEN_BUDGET)
        if outcome.code == twisted_driver.EXIT_OK:
            return Generated(index, text, outcome.trace, attempt + 1)
        if outcome.code == twisted_driver.EXIT_MALFORMED:
            raise RuntimeError(f"generator produced a malformed scenario: {outcome.message}\n{text}")
    raise RuntimeError(f"no valid scenario for seed={seed} index={index} after {MAX_ATTEMPTS} attempts")


def default_prefix(features: tuple[str, ...]) -> str:
    """``gen_core`` for core alone, else ``gen_`` + the other features."""
    extra = [f for f in features if f != "core"]
    return "gen_" + ("_".join(extra) if extra else "core")


def generate_files(seed: str, count: int, features: tuple[str, ...], out_dir: str,
                   prefix: Optional[str] = None, with_expected: bool = False,
                   start: int = 1) -> list[Generated]:
    """Write scenarios ``start .. start+count-1``; return them (with their traces)."""
    os.makedirs(out_dir, exist_ok=True)
    prefix = prefix or default_prefix(features)
    generated = []
    rejected = 0
    for index in range(start, start + count):
        g = generate_one(seed, index, features)
        rejected += g.attempts - 1
        path = g.path = os.path.join(out_dir, f"{prefix}_{index:04d}.scenario")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(g.text)
        if with_expected:
            with open(path[: -len(".scenario")] + ".expected", "w", encoding="utf-8",
                      newline="\n") as f:
                f.write(g.trace)
        generated.append(g)
    print(f"generated {count} scenarios in {out_dir} ({rejected} invalid candidates discarded)",
          file=sys.stderr)
    return generated


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", required=True, help="any string; the same seed gives the same files")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--features", default="core",
                        help="comma-separated subset of: " + ",".join(FEATURES))
    parser.add_argument("--prefix", help="file name prefix (default gen_core / gen_FEATURES)")
    parser.add_argument("--start", type=int, default=1, help="first index (default 1)")
    parser.add_argument("--expected", action="store_true",
                        help="also write NAME.expected (the trace found while validating)")
    args = parser.parse_args(argv)
    features = parse_features(args.features)
    generate_files(args.seed, args.count, features, args.out, args.prefix, args.expected, args.start)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
