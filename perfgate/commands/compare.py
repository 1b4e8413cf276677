"""``perfgate compare BASELINE RESULTS_DIR``: judge a saved run again, offline, with the gate's current settings.

    perfgate compare baselines/h200/optimized/chat.json results/nightly     # one key: the baseline's
    perfgate compare baselines results/nightly                              # every key the run holds

BASELINE is a baseline JSON file (the run's phases of its gpu class / profile / scenario are judged) or a
baselines directory laid out as ``<gpu-class>/<profile>/<scenario>.json`` (every key the run holds that has a
file there is judged). The run's phases are the ones it declares (its ``session.json``, else ``run.json``),
read as ``perfgate baselines refresh --from`` reads them. Settings: ``[tool.perfgate.gate]`` of the
pyproject.toml found from here (or ``$PERFGATE_PYPROJECT``), for the phases' GPU class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from perfgate._errors import ConfigError
from perfgate.core.phase import PhaseResult
from perfgate.core.results import read_declared_phases
from perfgate.report.tables import table
from perfgate.verdict.baseline import Baseline, baseline_path, load_baseline
from perfgate.verdict.exit_codes import EPILOG, gate_exit_code, worst_exit_code
from perfgate.verdict.gate import GateVerdict, compare
from perfgate.verdict.gate_settings import load_gate_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="judge a saved run against a baseline again (offline), with the gate's "
                                       "current settings",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baseline", type=Path, metavar="BASELINE",
                   help="a baseline JSON file, or a baselines directory (<gpu-class>/<profile>/<scenario>.json)")
    p.add_argument("results", type=Path, metavar="RESULTS_DIR", help="a finished run's results directory")
    p.add_argument("--allow-incomparable", action="store_true",
                   help="compare although the baseline is of another GPU model, model or scenario content")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    phases = read_declared_phases(args.results)
    groups: dict[str, list[PhaseResult]] = {}
    for p in phases:
        groups.setdefault(p.key, []).append(p)
    pairs = _pairs(args.baseline, groups, args.results)
    codes = []
    for baseline, group in pairs:
        verdict = _judge(group, baseline, args.allow_incomparable)
        codes.append(gate_exit_code(verdict))
        print(table(verdict) + "\n")
    code = worst_exit_code(codes)
    print(f"perfgate compare: {len(pairs)} phase key(s) judged against {args.baseline}; exit {code}")
    return code


def _judge(group: list[PhaseResult], baseline: Baseline, allow_incomparable: bool) -> GateVerdict:
    settings = load_gate_settings(group[0].gpu_class, allow_incomparable=allow_incomparable)
    return compare(group, baseline, settings)


def _holds(groups: dict[str, list[PhaseResult]]) -> str:
    return ", ".join(f"{k} ({len(v)} repeat{'s' if len(v) != 1 else ''})" for k, v in sorted(groups.items())) \
        or "no phases"


def _pairs(where: Path, groups: dict[str, list[PhaseResult]],
           results: Path) -> list[tuple[Baseline, list[PhaseResult]]]:
    """(baseline, the run's repeats of its key) for each key to judge; bad input raises with the fix."""
    if where.is_dir():
        pairs, missing = [], []
        for key, group in sorted(groups.items()):
            path = baseline_path(group[0].gpu_class, group[0].profile, group[0].scenario, where)
            if path.is_file():
                pairs.append((load_baseline(path), group))
            else:
                missing.append(key)
        if missing and pairs:
            print(f"not judged (no baseline file in {where}): {', '.join(missing)}\n")
        if not pairs:
            raise ConfigError(f"{where} has no baseline for any phase of the run {results}, which holds: "
                              f"{_holds(groups)}",
                              fix="point BASELINE at the baselines directory (or one file) recorded for "
                                  "these keys, or record one with `perfgate baselines refresh --from RUN`")
        return pairs
    baseline = load_baseline(where)
    group = groups.get(baseline.key)
    if not group:
        raise ConfigError(f"the run {results} holds no phase of {baseline.key} (the baseline's gpu class / "
                          f"profile / scenario); it holds: {_holds(groups)}",
                          fix="give the baseline of one of those keys (baselines/<gpu-class>/<profile>/"
                              "<scenario>.json), or a run that measured this one")
    return [(baseline, group)]
