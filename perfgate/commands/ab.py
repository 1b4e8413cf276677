"""``perfgate ab``: A/B of two launch profiles over a saved run's phase results (repeats of each)."""

from __future__ import annotations

import argparse
from pathlib import Path

from perfgate._errors import ConfigError
from perfgate.ab import ab_compare
from perfgate.report.json_report import read_phase_results


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ab", help="compare two profiles on one scenario from a saved run (repeats of each)")
    p.add_argument("--results", type=Path, required=True, metavar="DIR", help="results directory of the run")
    p.add_argument("--a", required=True, metavar="PROFILE", help="the reference profile (e.g. defaults)")
    p.add_argument("--b", required=True, metavar="PROFILE", help="the candidate profile (e.g. optimized)")
    p.add_argument("--scenario", required=True)
    p.add_argument("--gpu-class", default=None, help="only phases of this GPU class (default: any)")
    p.add_argument("--metrics", default="", help="comma-separated metric keys (default: the serving metrics)")
    p.add_argument("--alpha", type=float, default=0.05, help="false-discovery rate across metrics (default 0.05)")
    p.add_argument("--min-effect", type=float, default=0.0, help="smallest relative change to call (e.g. 0.05)")
    p.add_argument("--paired", action="store_true",
                   help="pair repeat i of A with repeat i of B (runs interleaved A B A B)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
    print(verdict.table())
    return 0
