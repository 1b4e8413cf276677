"""``perfgate junit-check FILE --min-passed N``: fail a CI job whose tests ran but too few of them passed.

Exit 0: at least N passed. 1: fewer (skipped and deselected tests do not count). 2: the file is missing or
not JUnit XML.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from perfgate._errors import ConfigError
from perfgate.junit_counts import read_junit, shortfall


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("junit-check", help="fail unless a JUnit XML file shows at least N passed tests",
                       description=__doc__)
    p.add_argument("junit", type=Path, metavar="FILE", help="pytest's --junitxml output")
    p.add_argument("--min-passed", type=int, required=True, metavar="N",
                   help="tests that must have passed (the count the job expects)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.min_passed < 1:
        raise ConfigError(f"--min-passed {args.min_passed}: must be at least 1 (a job that expects no passed "
                          "test needs no check)", fix="state how many tests the job runs and must pass")
    counts = read_junit(args.junit)
    problem = shortfall(counts, args.min_passed)
    if problem is not None:
        print(f"perfgate junit-check: FAILED: {args.junit}: {problem}")
        return 1
    print(f"perfgate junit-check: ok: {args.junit}: {counts.line()} (expected >= {args.min_passed} passed)")
    return 0
