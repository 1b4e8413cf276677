"""``perfgate slos``: check SLO sets against physics, and derive a provisional set from a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from perfgate.core.hardware import known_class_keys
from perfgate.verdict.physics import check_all
from perfgate.verdict.slo_derive import derive_slo_file
from perfgate.verdict.slo_files import default_slos_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("slos", help="SLO sets: check them against physical floors; derive one from a run",
                       description="`perfgate slos check`: refuse any SLO bound below its physical floor. "
                                   "`perfgate slos derive --from RUN_DIR --gpu-class NAME`: write a provisional "
                                   "SLO set from a run's phases.")
    actions = p.add_subparsers(dest="slos_action", metavar="ACTION")
    actions.required = True

    check = actions.add_parser(
        "check", help="refuse SLO bounds no card of the GPU class can meet (memory bandwidth, FLOP/s)",
        description="For each SLO set x profile x scenario, compute the physical floor of every latency bound "
                    "and the ceiling of every throughput bound from the GPU class's bandwidth and dense bf16 "
                    "FLOP/s, the model's bytes and the scenario's lengths, showing the arithmetic. "
                    "Exit 0: no bound below its floor; 1: some are; 2: bad input.")
    check.add_argument("--gpu-class", action="append", choices=[k for k in known_class_keys() if k != "cpu"],
                       help="only this class (repeatable; default: every slos/<class>.toml)")
    check.add_argument("--profile", action="append", help="only this profile (repeatable)")
    check.add_argument("--scenario", action="append", help="only this scenario (repeatable)")
    check.add_argument("--slos-dir", type=Path, default=None, help="where SLO sets live (default: slos/)")
    check.add_argument("--profiles-dir", type=Path, default=None, help="default: profiles/")
    check.add_argument("--scenarios-dir", type=Path, default=None, help="default: scenarios/")
    check.add_argument("--model-dir", type=Path, default=None, help="the model directory (default: each profile's)")
    check.add_argument("-v", "--verbose", action="store_true", help="show the arithmetic of passing keys too")
    check.set_defaults(func=run_check)

    derive = actions.add_parser(
        "derive", help="write a provisional SLO set from a run's saved phases",
        description="Derive bounds from every repeat of a run (latency: worst repeat x 1.15; throughput, closed "
                    "loop: worst repeat x 0.85; open loop: the offered rate; VRAM: peak + 1 GiB; GPU util: worst "
                    "- 10 points), each with its derivation as a comment, marked provisional until reviewed.")
    derive.add_argument("--from", dest="results_dir", type=Path, required=True, metavar="RESULTS_DIR")
    derive.add_argument("--gpu-class", required=True, help="the class the run measured (its phases must say so)")
    derive.add_argument("--out", type=Path, default=None, help="default: slos/<gpu-class>.toml")
    derive.add_argument("--force", action="store_true", help="replace an existing file")
    derive.set_defaults(func=run_derive)


def run_check(args: argparse.Namespace) -> int:
    run = check_all(slos_dir=args.slos_dir or default_slos_dir(), gpu_classes=args.gpu_class,
                    profiles=args.profile, scenarios=args.scenario, profiles_dir=args.profiles_dir,
                    scenarios_dir=args.scenarios_dir, model_dir=args.model_dir)
    for report in run.reports:
        if args.verbose or not report.ok or report.notes:
            print(report.render())
        else:
            print(f"ok {report.key}: {len(report.checks)} bound(s) above their physical floor")
    for note in run.notes:
        print(f"not checked: {note}")
    print(run.render().splitlines()[-1])
    return 1 if run.refused else 0


def run_derive(args: argparse.Namespace) -> int:
    out = args.out or (default_slos_dir() / f"{args.gpu_class}.toml")
    path, summary = derive_slo_file(args.results_dir, args.gpu_class, out, overwrite=args.force)
    print(summary)
    print(f"wrote {path} (provisional: review every bound, then delete the `provisional = true` line)")
    return 0
