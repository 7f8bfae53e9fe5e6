#!/usr/bin/env python3
"""Differential check: random scenarios through real Twisted and a runner under test.

Usage::

    differential.py --runner RUNNER --count N [--seed S] \\
        --features core[,async,combinators,clock,logcontext] \\
        [--jobs 2] [--keep DIR] [--allow-unsupported] [--timeout SECONDS]

1. Picks a fresh random seed unless ``--seed`` is given, and prints it first.
2. Generates N valid scenarios (``gen_scenarios``).
3. Runs them all through ``twisted_driver.py --batch`` (split over ``--jobs``
   processes) to get the expected traces.
4. Runs ``RUNNER FILE.scenario`` on each (``--jobs`` at a time).  RUNNER is a
   command line (split like a shell would), e.g. ``target/release/runner`` or
   ``"python twisted_driver.py"``.  Its exit codes: 0 trace on stdout,
   2 malformed scenario, 3 an op it does not support yet.
5. Compares stdout byte for byte, prints each mismatch with the scenario text
   and a unified diff, then a summary line
   ``N scenarios, M match, K mismatch, U unsupported``.

Exit status: 1 if any mismatch (a runner exit code other than 0 or 3 counts as
a mismatch), or if any scenario was unsupported and ``--allow-unsupported``
was not given; 0 otherwise.  With ``--keep DIR`` the scenarios, expected
traces (``NAME.expected``) and runner outputs (``NAME.actual``) stay in DIR.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import difflib
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gen_scenarios  # noqa: E402

EXIT_UNSUPPORTED = 3


@dataclass
class RunnerResult:
    path: str
    code: int
    stdout: str
    stderr: str


def run_twisted_batch(paths: list[str], out_dir: str, jobs: int) -> None:
    """Expected traces via the driver's batch mode, in ``jobs`` processes."""
    chunks = [paths[i::jobs] for i in range(jobs) if paths[i::jobs]]
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "twisted_driver.py"),
                               "--batch", "--out", out_dir] + chunk,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for chunk in chunks]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"twisted_driver.py --batch failed:\n{err}")


def run_runner(runner: list[str], path: str, timeout: float) -> RunnerResult:
    try:
        proc = subprocess.run(runner + [path], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return RunnerResult(path, -1, "", f"runner timed out after {timeout}s")
    except OSError as e:
        return RunnerResult(path, -1, "", f"cannot run the runner: {e}")
    return RunnerResult(path, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                        proc.stderr.decode("utf-8", "replace"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runner", required=True, help="command that runs one scenario file")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", help="generator seed (default: a fresh random one)")
    parser.add_argument("--features", default="core")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", metavar="DIR", help="keep scenarios and traces in DIR")
    parser.add_argument("--allow-unsupported", action="store_true",
                        help="do not fail because of scenarios the runner does not support")
    parser.add_argument("--timeout", type=float, default=20.0,
                        help="seconds the runner may take per scenario (default %(default)s)")
    args = parser.parse_args(argv)

    seed = args.seed or secrets.token_hex(4)
    features = gen_scenarios.parse_features(args.features)
    print(f"seed: {seed} (features={','.join(features)})", flush=True)

    work = args.keep or tempfile.mkdtemp(prefix="differential-")
    try:
        generated = gen_scenarios.generate_files(seed, args.count, features, work)
        paths = [g.path for g in generated]
        run_twisted_batch(paths, work, max(1, args.jobs))
        for g in generated:
            # The generator validated each scenario in one long-lived process;
            # batch mode must have found the very same trace.
            with open(g.path[: -len(".scenario")] + ".expected", encoding="utf-8") as f:
                if f.read() != g.trace:
                    raise SystemExit(f"twisted_driver is not deterministic on {g.path}")
        runner = shlex.split(args.runner)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(lambda p: run_runner(runner, p, args.timeout), paths))

        matched = mismatched = unsupported = 0
        for res in results:
            base = res.path[: -len(".scenario")]
            with open(base + ".expected", encoding="utf-8") as f:
                expected = f.read()
            if args.keep:
                with open(base + ".actual", "w", encoding="utf-8", newline="\n") as f:
                    f.write(res.stdout)
            if res.code == EXIT_UNSUPPORTED:
                unsupported += 1
                continue
            if res.code == 0 and res.stdout == expected:
                matched += 1
                continue
            mismatched += 1
            with open(res.path, encoding="utf-8") as f:
                scenario = f.read()
            print(f"=== MISMATCH {os.path.basename(res.path)} (runner exit code {res.code})")
            print(scenario, end="" if scenario.endswith("\n") else "\n")
            print("--- diff (expected = real Twisted, actual = runner)")
            sys.stdout.writelines(difflib.unified_diff(
                expected.splitlines(keepends=True), res.stdout.splitlines(keepends=True),
                fromfile="expected", tofile="actual"))
            if res.stderr.strip():
                print("--- runner stderr")
                print(res.stderr.rstrip())
        print(f"{len(results)} scenarios, {matched} match, {mismatched} mismatch, "
              f"{unsupported} unsupported")
        if args.keep:
            print(f"scenarios and traces kept in {work}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if mismatched or (unsupported and not args.allow_unsupported):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
