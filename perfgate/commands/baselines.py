"""``perfgate baselines show|refresh``: inspect stored baselines, or write them from a saved run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from perfgate._errors import BaselineError, InvalidRunError
from perfgate.baseline import baseline_path, default_baselines_dir, load_baseline, write_baseline
from perfgate.catalog import METRICS
from perfgate.gate import smallest_detectable_change
from perfgate.report.json_report import read_phase_results
from perfgate.report.markdown import format_value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baselines", help="show stored baselines, or refresh them from a saved run")
    p.add_argument("--dir", type=Path, default=None, help="baselines directory (default: baselines/)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    show = verbs.add_parser("show", help="list baselines; with a filter, each metric's mean, noise and the "
                                         "smallest regression the gate detects")
    show.add_argument("filter", nargs="?", default="", help="substring of gpu_class/profile/scenario")
    show.add_argument("--repeats", type=int, default=None,
                      help="current repeats assumed for the detectable change (default: the baseline's)")
    show.set_defaults(func=run_show)
    refresh = verbs.add_parser("refresh", help="write baselines from a results directory's phase JSON files")
    refresh.add_argument("--from", dest="source", type=Path, required=True, metavar="RESULTS_DIR")
    refresh.add_argument("--only", default="", help="substring of gpu_class/profile/scenario to refresh")
    refresh.add_argument("--min-repeats", type=int, default=3)
    refresh.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    refresh.set_defaults(func=run_refresh)


def run_show(args: argparse.Namespace) -> int:
    directory = args.dir or default_baselines_dir()
    files = sorted(directory.glob("*/*/*.json"))
    shown = 0
    for path in files:
        key = "/".join(path.relative_to(directory).with_suffix("").parts)
        if args.filter not in key:
            continue
        shown += 1
        b = load_baseline(path)
        print(f"{b.key}: {b.repeats} repeats, {b.gpu_model or b.gpu_class}, vLLM {b.vllm_version or '?'}, "
              f"written {b.created_at or '?'} ({path})")
        if not args.filter:
            continue
        n_cur = args.repeats or b.repeats
        gated = [m for m in b.metrics if METRICS[m].better != "none"]
        print(f"  {'metric':<28} {'mean':>14} {'noise':>7}  detectable regression (n={b.repeats} vs {n_cur},"
              f" {len(gated)} metrics)")
        for m in sorted(gated):
            values = b.metrics[m]
            mean = sum(values) / len(values)
            sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
            cv = sd / mean if mean else 0.0
            mdc = smallest_detectable_change(cv, b.repeats, n_cur, metrics=max(len(gated), 1))
            print(f"  {m:<28} {format_value(mean, METRICS[m].unit):>14} {cv * 100:>6.1f}%  {mdc * 100:.0f}%")
    if not shown:
        print(f"no baselines{' matching ' + repr(args.filter) if args.filter else ''} in {directory}")
    return 0


def _failed_keys(results_dir: Path) -> dict[str, str]:
    """Keys whose SLOs or gate failed in the saved run (from its run.json), with why."""
    try:
        run = json.loads((results_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    failed: dict[str, str] = {}
    for v in run.get("slo", []):
        if not v.get("passed", True):
            names = [r["metric"] for r in v.get("rows", []) if r.get("status") == "fail"]
            failed[v["key"]] = "SLO failed: " + ", ".join(names)
    return failed


def run_refresh(args: argparse.Namespace) -> int:
    phases = [p for p in read_phase_results(args.source) if args.only in p.key]
    if not phases:
        raise BaselineError(f"no phase results{' matching ' + repr(args.only) if args.only else ''}",
                            source=str(args.source), fix="point --from at a results directory of a finished run")
    failed = _failed_keys(args.source)
    groups: dict[str, list] = {}
    for p in phases:
        groups.setdefault(p.key, []).append(p)
    refused = 0
    for key, group in groups.items():
        path = baseline_path(group[0].gpu_class, group[0].profile, group[0].scenario, args.dir)
        try:
            if args.dry_run:
                from perfgate.baseline import baseline_from_phases, diff_baselines

                new = baseline_from_phases(group, results_dir=args.source, min_repeats=args.min_repeats,
                                           failed=failed.get(key))
                old = load_baseline(path) if path.exists() else None
                print(f"(dry run) {path}:\n{diff_baselines(old, new)}\n")
            else:
                write_baseline(path, group, results_dir=args.source, min_repeats=args.min_repeats,
                               failed=failed.get(key), echo=print)
                print()
        except (BaselineError, InvalidRunError) as exc:
            refused += 1
            print(f"refused {key}: {exc}\n")
    return 1 if refused else 0
