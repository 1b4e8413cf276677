"""``perfgate ab``: A/B of two launch profiles over a saved run's phase results (repeats of each).

``perfgate ab run`` (perfgate/commands/ab_run.py) runs an A/B of two Python environments instead.

Exit code (perfgate.verdict.exit_codes): 1 when B is significantly worse than A on any metric; 3 when a side
has one repeat (no noise estimate, no verdict); else 0; 2 bad input. The A/B asks "which is better"
(two-sided, no margin): 0 means B was not shown worse, not that it was shown equal.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from perfgate._errors import ConfigError
from perfgate.commands import ab_run
from perfgate.core.results import read_phase_results
from perfgate.report.tables import table
from perfgate.verdict.ab import ab_compare
from perfgate.verdict.exit_codes import EPILOG, ab_exit_code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ab", help="compare two profiles on one scenario from a saved run (repeats of each)",
                       epilog=f"{EPILOG}. Here: 1 when B is significantly worse than A on any metric, 3 "
                              "when a side has one repeat (no verdict), else 0 (B not shown worse).")
    p.add_argument("--results", type=Path, metavar="DIR", help="results directory of the run")
    p.add_argument("--a", metavar="PROFILE", help="the reference profile (e.g. defaults)")
    p.add_argument("--b", metavar="PROFILE", help="the candidate profile (e.g. optimized)")
    p.add_argument("--scenario")
    p.add_argument("--gpu-class", default=None, help="only phases of this GPU class (default: any)")
    p.add_argument("--metrics", default="", help="comma-separated metric keys (default: the serving metrics)")
    p.add_argument("--alpha", type=float, default=0.05, help="false-discovery rate across metrics (default 0.05)")
    p.add_argument("--min-effect", type=float, default=0.0, help="smallest relative change to call (e.g. 0.05)")
    p.add_argument("--paired", action="store_true",
                   help="pair repeat i of A with repeat i of B (runs interleaved A B A B)")
    p.set_defaults(func=run)
    # `perfgate ab run ...`: the two-environment A/B; without it, `perfgate ab --results ...` as before.
    ab_run.register(p.add_subparsers(dest="ab_action", metavar="run"))


def run(args: argparse.Namespace) -> int:
    missing = [f"--{k}" for k in ("results", "a", "b", "scenario") if getattr(args, k) is None]
    if missing:
        raise ConfigError(f"perfgate ab: {', '.join(missing)} missing (a saved run's A/B needs --results, --a, --b "
                          "and --scenario)", fix="give them, or run a new A/B of two environments: `perfgate ab run "
                          "--a-python A/bin/python --b-python B/bin/python --profile P --scenario S --results DIR`")
    phases = [p for p in read_phase_results(args.results) if p.scenario == args.scenario
              and (args.gpu_class is None or p.gpu_class == args.gpu_class)]
    a = [p for p in phases if p.profile == args.a]
    b = [p for p in phases if p.profile == args.b]
    if not a or not b:
        found = sorted({p.profile for p in phases})
        raise ConfigError(f"no phases of {'A=' + args.a if not a else 'B=' + args.b} for scenario "
                          f"'{args.scenario}' in {args.results}",
                          fix=f"profiles found for that scenario: {', '.join(found) or '(none)'}")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] or None
    try:
        verdict = ab_compare(a, b, metrics=metrics, alpha=args.alpha, min_effect=args.min_effect,
                             paired=args.paired)
    except (KeyError, ValueError) as exc:
        raise ConfigError(str(exc).strip("'\""), fix="see `perfgate metrics`, or drop --paired") from None
    print(table(verdict))
    return ab_exit_code(verdict)
