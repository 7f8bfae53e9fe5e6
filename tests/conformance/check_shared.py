#!/usr/bin/env python3
"""Check that the Twisted driver reproduces stored traces byte for byte.

Usage::

    check_shared.py [--single] [DIR_OR_FILE ...]

With no argument it checks the shared cases in
``../shared/conformance/cases`` (beside the repository).  Any directory of ``NAME.scenario`` /
``NAME.expected`` pairs (e.g. ``tests/golden/core``) can be checked the same
way.  Each scenario is run through ``twisted_driver`` (in this process, the
way batch mode runs it; ``--single`` runs ``twisted_driver.py FILE`` in a
fresh process per scenario instead) and its output is compared with the
``.expected`` file; every mismatch is shown as a unified diff.

Exit status: 0 if every scenario matched, 1 otherwise.
"""

from __future__ import annotations

import argparse
import difflib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_CASES = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "conformance", "cases")
)


def actual_trace(path: str, single: bool) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the driver on one scenario."""
    if single:
        proc = subprocess.run([sys.executable, os.path.join(HERE, "twisted_driver.py"), path],
                              capture_output=True, text=True)
        return proc.returncode, proc.stdout, proc.stderr
    import twisted_driver

    outcome = twisted_driver.run_file(path)
    return outcome.code, outcome.trace, outcome.message


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--single", action="store_true",
                        help="run each scenario in its own driver process (single-file mode)")
    parser.add_argument("inputs", nargs="*", default=[SHARED_CASES], metavar="DIR_OR_FILE")
    args = parser.parse_args(argv)

    sys.path.insert(0, HERE)
    import twisted_driver

    paths = twisted_driver.expand_inputs(args.inputs)
    matched = 0
    problems = 0
    for path in paths:
        expected_path = path[: -len(".scenario")] + ".expected"
        name = os.path.relpath(path)
        if not os.path.exists(expected_path):
            print(f"MISSING {name}: no .expected file")
            problems += 1
            continue
        with open(expected_path, encoding="utf-8") as f:
            expected = f.read()
        code, out, err = actual_trace(path, args.single)
        if code != 0:
            print(f"FAILED  {name}: driver exit code {code}: {err.strip()}")
            problems += 1
        elif out != expected:
            print(f"DIFF    {name}")
            sys.stdout.writelines(difflib.unified_diff(
                expected.splitlines(keepends=True), out.splitlines(keepends=True),
                fromfile=expected_path, tofile="twisted_driver"))
            problems += 1
        else:
            matched += 1
    print(f"{len(paths)} scenarios, {matched} match, {problems} mismatch")
    return 0 if problems == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
