#!/usr/bin/env python3
"""Write a golden corpus: ``NAME.scenario`` + ``NAME.expected`` pairs.

Usage::

    make_goldens.py --out DIR --features F --count N --seed S [--prefix P]

1. Generates N valid random scenarios with ``gen_scenarios`` (files
   ``PREFIX_0001.scenario`` ..., PREFIX defaulting to ``gen_core`` for core
   alone, ``gen_async`` for ``core,async`` and so on).  ``--count 0`` skips
   this step.
2. Runs *every* ``*.scenario`` in DIR (hand-written ones included) through the
   Twisted driver and (re)writes its ``.expected`` beside it.

Exit status 0 when every scenario in DIR has a trace; 1 if any is malformed
or invalid (reported on stderr, no ``.expected`` written for it).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gen_scenarios  # noqa: E402
import twisted_driver  # noqa: E402


def refresh_expected(out_dir: str) -> int:
    """Rewrite NAME.expected for every NAME.scenario in out_dir."""
    paths = twisted_driver.expand_inputs([out_dir])
    return twisted_driver.run_batch(paths, None, twisted_driver.DEFAULT_BUDGET)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--features", default="core")
    parser.add_argument("--count", type=int, default=0, help="random scenarios to add")
    parser.add_argument("--seed", help="generator seed (required when --count > 0)")
    parser.add_argument("--prefix", help="file name prefix of the generated scenarios")
    args = parser.parse_args(argv)
    if args.count and args.seed is None:
        parser.error("--seed is required with --count")
    features = gen_scenarios.parse_features(args.features)
    if args.count:
        gen_scenarios.generate_files(args.seed, args.count, features, args.out, args.prefix)
    return refresh_expected(args.out)


if __name__ == "__main__":
    sys.exit(main())
