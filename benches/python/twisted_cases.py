#!/usr/bin/env python3
"""Times Twisted's Deferred on the cases of the Rust benchmark suite.

The first seven cases are the ones Twisted's own ``benchmarks/test_deferred.py``
measures (with pytest-benchmark); the others are the suite's scale cases.
Each is written here from its description, with the same job and the same
untimed setup as its Rust twin in ``benches/src/cases.rs``.

Every case is a function ``run(iters) -> seconds`` that does the job
``iters`` times and returns the time spent in the timed part (setup, such
as making the inputs of a combinator, stays outside), as Rust's
``iter_custom`` does. The driver warms each case up, picks ``iters`` so
that one sample lasts at least ``--min-time``, takes ``--repeat`` samples
and reports the median time per iteration, in nanoseconds, as JSON on
standard output::

    {"implementation": "CPython 3.11.7", "twisted": "26.10.0",
     "results": {"chain_fires_at_end": {"median_ns": 1234.5, "samples": 11,
                                         "iters": 4096}, ...}}

The garbage collector stays on, as under pytest-benchmark.

Usage: ``twisted_cases.py [--quick] [--only CASE,CASE...] [--list] [--tsv]``
(``--tsv`` is the format the comparison command reads).
"""

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import threading
import time

import twisted
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    ensureDeferred,
    gatherResults,
    succeed,
)

clock = time.perf_counter

SIZES = (10_000, 100_000, 1_000_000)
# Pending timers are due between FAR and 2 * FAR seconds from now.
FAR = 1000.0
BATCH = 1000
NESTED = 10
# Calls per iteration of call_from_thread.
CALLS = 100_000


def add(x, a):
    return x + a


# --- Twisted's benchmarks/test_deferred.py ---------------------------------


def await_fired_1000(iters):
    """A coroutine awaiting 1,000 Deferreds that already have a result."""

    async def run():
        for x in range(1000):
            await succeed(x)

    start = clock()
    for _ in range(iters):
        ensureDeferred(run())
    return clock() - start


def await_unfired_20(iters):
    """A coroutine awaiting 20 Deferreds, each fired while it waits."""

    async def run(deferreds):
        total = 0
        for d in deferreds:
            total += await d
        return total

    start = clock()
    for _ in range(iters):
        deferreds = [Deferred() for _ in range(20)]
        result = ensureDeferred(run(deferreds))
        for i, d in enumerate(deferreds):
            d.callback(i)
    elapsed = clock() - start
    assert result.result == sum(range(20))
    return elapsed


def chain_fires_at_start(iters):
    """Four callbacks added to a Deferred that has fired."""
    start = clock()
    for _ in range(iters):
        d = Deferred()
        d.callback(2)
        d.addCallback(add, 1)
        d.addCallback(add, 2)
        d.addCallback(add, 3)
        d.addCallback(add, 4)
    return clock() - start


def chain_fires_at_end(iters):
    """Four callbacks added, then the Deferred fires."""
    start = clock()
    for _ in range(iters):
        d = Deferred()
        d.addCallback(add, 1)
        d.addCallback(add, 2)
        d.addCallback(add, 3)
        d.addCallback(add, 4)
        d.callback(2)
    return clock() - start


def errback_chain(iters):
    """A callback raises, an errback traps and raises again, a final
    addBoth swallows the failure."""

    def raise_first(_):
        raise Exception("boom!")

    def trap_and_raise(failure):
        failure.trap(Exception)
        raise Exception("lesser boom!")

    def swallow(_):
        return None

    start = clock()
    for _ in range(iters):
        d = succeed("result")
        d.addCallback(raise_first)
        d.addErrback(trap_and_raise)
        d.addBoth(swallow)
    return clock() - start


def chained_already_fired(iters):
    """Callbacks return two Deferreds that have fired already."""
    start = clock()
    for _ in range(iters):
        d, d2, d3 = Deferred(), Deferred(), Deferred()
        d2.callback(123)
        d3.callback(456)
        d.addCallback(lambda _, d2=d2: d2)
        d.addCallback(lambda _, d3=d3: d3)
        d.callback(123)
    elapsed = clock() - start
    assert d.result == 456
    return elapsed


def chained_not_fired(iters):
    """Callbacks return Deferreds that fire later; one of them itself waits
    on a fourth."""
    start = clock()
    for _ in range(iters):
        d, d2, d3, d4 = Deferred(), Deferred(), Deferred(), Deferred()
        d3.addCallback(lambda _, d4=d4: d4)
        d3.callback(123)
        d.addCallback(lambda _, d2=d2: d2)
        d.addCallback(lambda _, d3=d3: d3)
        d2.callback(123)
        d4.callback(57)
        d.callback(7)
    elapsed = clock() - start
    assert d.result == 57
    return elapsed


# --- combinators ----------------------------------------------------------


def gather(n):
    """gatherResults over n Deferreds made beforehand, then each fired."""

    def run(iters):
        total = 0.0
        for _ in range(iters):
            inputs = [Deferred() for _ in range(n)]
            start = clock()
            g = gatherResults(inputs)
            for i, d in enumerate(inputs):
                d.callback(i)
            total += clock() - start
            assert len(g.result) == n
            del g, inputs
        return total

    return run


def deferred_list(n):
    """DeferredList over n Deferreds made beforehand, then each fired."""

    def run(iters):
        total = 0.0
        for _ in range(iters):
            inputs = [Deferred() for _ in range(n)]
            start = clock()
            dl = DeferredList(inputs)
            for i, d in enumerate(inputs):
                d.callback(i)
            total += clock() - start
            assert len(dl.result) == n
            del dl, inputs
        return total

    return run


def chain_depth(n):
    """n Deferreds, each waiting on the next (its callback returns it; linked
    from the innermost out), then the innermost fires and the value travels
    out through all of them."""

    def run(iters):
        total = 0.0
        for _ in range(iters):
            start = clock()
            ds = [Deferred() for _ in range(n)]
            for i in reversed(range(n - 1)):
                ds[i].addCallback(lambda _, nxt=ds[i + 1]: nxt)
                ds[i].callback(None)
            ds[-1].callback(7)
            total += clock() - start
            assert ds[0].result == 7
            del ds
        return total

    return run


# --- coroutines -------------------------------------------------------------


def _swallow_cancel(failure):
    failure.trap(CancelledError)


def cancel_nested(wrapped):
    """One cancel() of a coroutine nested 10 deep that awaits a Deferred:
    each level an ensureDeferred of its own (``wrapped``) or a plain await."""

    async def level(k, inner):
        if k == 0:
            return await inner
        if wrapped:
            return await ensureDeferred(level(k - 1, inner))
        return await level(k - 1, inner)

    def run(iters):
        total = 0.0
        left = iters
        while left:
            k = min(left, BATCH)
            outers = []
            for _ in range(k):
                outer = ensureDeferred(level(NESTED - 1, Deferred()))
                outer.addErrback(_swallow_cancel)
                outers.append(outer)
            start = clock()
            for outer in outers:
                outer.cancel()
            total += clock() - start
            assert outers[-1].called
            left -= k
        return total

    return run


# --- timers (a real reactor's callLater, not running) -------------------------


def _new_reactor():
    try:
        from twisted.internet.epollreactor import EPollReactor

        return EPollReactor()
    except ImportError:  # not Linux
        from twisted.internet.selectreactor import SelectReactor

        return SelectReactor()


class Timers:
    """One reactor with n calls pending far in the future, shared by the
    schedule, cancel and fire cases of that size."""

    def __init__(self, n):
        self.rng = random.Random(0x9E3779B97F4A7C15)
        self.reactor = _new_reactor()
        self.ran = 0
        for _ in range(n):
            self.reactor.callLater(FAR + self.rng.random() * FAR, self.tick)
        self.reactor.runUntilCurrent()  # into the heap

    def tick(self):
        self.ran += 1

    def schedule(self, iters):
        r, total, left = self.reactor, 0.0, iters
        while left:
            k = min(left, BATCH)
            delays = [FAR + self.rng.random() * FAR for _ in range(k)]
            start = clock()
            calls = [r.callLater(delay, self.tick) for delay in delays]
            r.runUntilCurrent()  # Twisted moves new calls into its heap here
            total += clock() - start
            for call in calls:
                call.cancel()
            r.runUntilCurrent()
            left -= k
        return total

    def cancel(self, iters):
        r, total, left = self.reactor, 0.0, iters
        while left:
            k = min(left, BATCH)
            calls = [
                r.callLater(FAR + self.rng.random() * FAR, self.tick) for _ in range(k)
            ]
            r.runUntilCurrent()
            start = clock()
            for call in calls:
                call.cancel()
            total += clock() - start
            r.runUntilCurrent()
            left -= k
        return total

    def fire(self, iters):
        r, total, left = self.reactor, 0.0, iters
        while left:
            k = min(left, BATCH)
            for _ in range(k):
                r.callLater(0, self.tick)
            before = self.ran
            start = clock()
            r.runUntilCurrent()
            total += clock() - start
            assert self.ran - before == k
            left -= k
        return total


_timers = {}


def timers(op, n):
    def run(iters):
        if n not in _timers:
            _timers.clear()
            gc.collect()
            _timers[n] = Timers(n)
        return getattr(_timers[n], op)(iters)

    return run


# --- callFromThread (the global reactor, run once at the end) -----------------


def call_from_thread(calls, rounds):
    """Rounds of ``calls`` calls sent by one thread through
    reactor.callFromThread while the reactor runs, each timed from the first
    send until the last call ran; returns the seconds of each round."""
    from twisted.internet import reactor

    state = {"ran": 0, "start": 0.0}
    times = []

    def tick():
        state["ran"] += 1
        if state["ran"] == calls:
            times.append(clock() - state["start"])
            if len(times) == rounds:
                reactor.stop()
            else:
                reactor.callLater(0, begin)

    def sender():
        for _ in range(calls):
            reactor.callFromThread(tick)

    def begin():
        state["ran"] = 0
        state["start"] = clock()
        threading.Thread(target=sender, daemon=True).start()

    reactor.callWhenRunning(begin)
    reactor.run(installSignalHandlers=False)
    return times


# --- the driver ---------------------------------------------------------------

# name -> (run, heavy): a heavy case's single iteration is long, so it is not
# calibrated (one iteration per sample) and takes fewer samples.
CASES = {
    "await_fired_1000": (await_fired_1000, False),
    "await_unfired_20": (await_unfired_20, False),
    "chain_fires_at_start": (chain_fires_at_start, False),
    "chain_fires_at_end": (chain_fires_at_end, False),
    "errback_chain": (errback_chain, False),
    "chained_already_fired": (chained_already_fired, False),
    "chained_not_fired": (chained_not_fired, False),
    "cancel_nested_coroutines": (cancel_nested(True), False),
    "cancel_nested_async_fns": (cancel_nested(False), False),
}
for _n in SIZES:
    CASES[f"gather/{_n}"] = (gather(_n), _n >= 100_000)
for _n in (1000,) + SIZES:
    CASES[f"deferred_list/{_n}"] = (deferred_list(_n), _n >= 100_000)
for _n in SIZES:
    CASES[f"chain_depth/{_n}"] = (chain_depth(_n), _n >= 100_000)
for _n in SIZES:
    for _op in ("schedule", "cancel", "fire"):
        CASES[f"timers_{_op}/{_n}"] = (timers(_op, _n), False)
# Runs the global reactor, which cannot restart: measured in one run, last.
CASES["call_from_thread"] = (call_from_thread, True)


def measure(run, heavy, min_time, repeat, heavy_repeat):
    if heavy:
        if heavy_repeat > 1:
            run(1)  # warm-up
        samples = [run(1) for _ in range(heavy_repeat)]
        return statistics.median(samples) * 1e9, len(samples), 1
    run(1)
    iters = 1
    while True:
        elapsed = run(iters)
        if elapsed >= min_time or iters >= 1 << 24:
            break
        iters *= 2 if elapsed <= 0 else max(2, min(10, int(min_time / elapsed * 1.2)))
    samples = [elapsed / iters] + [run(iters) / iters for _ in range(repeat - 1)]
    return statistics.median(samples) * 1e9, len(samples), iters


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter samples")
    p.add_argument("--only", help="comma-separated case names")
    p.add_argument("--list", action="store_true", help="print the case names")
    p.add_argument("--verbose", action="store_true", help="progress on stderr")
    p.add_argument(
        "--tsv",
        action="store_true",
        help="print '# key value' header lines and 'case<TAB>median_ns<TAB>samples<TAB>iters' lines instead of JSON",
    )
    args = p.parse_args()
    if args.list:
        print("\n".join(CASES))
        return
    names = list(CASES)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - set(CASES)
        if unknown:
            sys.exit(f"unknown cases: {', '.join(sorted(unknown))}")
        names = [n for n in names if n in wanted]
    if args.quick:
        min_time, repeat, heavy_repeat = 0.01, 3, 1
    else:
        min_time, repeat, heavy_repeat = 0.05, 11, 3
    results = {}
    for name in names:
        run, heavy = CASES[name]
        if name.startswith("call_from_thread"):
            # one reactor run (it cannot restart): a warm-up round, then
            # samples; reported per CALLS calls, the Rust iteration
            n, rounds = (20_000, 2) if args.quick else (CALLS, 1 + heavy_repeat)
            times = run(n, rounds)[1:]
            ns = statistics.median(times) / n * CALLS * 1e9
            results[name] = {"median_ns": ns, "samples": len(times), "iters": n}
        else:
            median, samples, iters = measure(run, heavy, min_time, repeat, heavy_repeat)
            results[name] = {"median_ns": median, "samples": samples, "iters": iters}
        if args.verbose:
            print(f"{name}: {results[name]['median_ns']:.1f} ns", file=sys.stderr)
        if name.startswith("timers_fire"):
            _timers.clear()
    impl = platform.python_implementation()
    if args.tsv:
        print(f"# implementation\t{impl} {platform.python_version()}")
        print(f"# twisted\t{twisted.__version__}")
        for name, r in results.items():
            print(f"{name}\t{r['median_ns']:.3f}\t{r['samples']}\t{r['iters']}")
        return
    json.dump(
        {
            "implementation": f"{impl} {platform.python_version()}",
            "twisted": twisted.__version__,
            "results": results,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
