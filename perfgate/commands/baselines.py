"""``perfgate baselines show|refresh``: inspect stored baselines, or write them from a saved run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from perfgate._errors import BaselineError, InvalidRunError
from perfgate.core.catalog import METRICS
from perfgate.core.fmt import format_value
from perfgate.core.results import read_declared_phases
from perfgate.verdict.baseline import baseline_path, default_baselines_dir, load_baseline, write_baseline
from perfgate.verdict.gate import sensitivity
from perfgate.verdict.gate_settings import load_gate_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baselines", help="show stored baselines, or refresh them from a saved run")
    p.add_argument("--dir", type=Path, default=None, help="baselines directory (default: baselines/)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    show = verbs.add_parser("show", help="list baselines; with a filter, each metric's mean, noise and the "
                                         "smallest regression the gate detects")
    show.add_argument("filter", nargs="?", default="", help="substring of gpu_class/profile/scenario")
    show.add_argument("--repeats", type=int, default=None,
                      help="repeats of a current run assumed for the detectable change (default: the gate's "
                           "configured repeats)")
    show.set_defaults(func=run_show)
    refresh = verbs.add_parser("refresh", help="write baselines from a results directory's phase JSON files")
    refresh.add_argument("--from", dest="sources", type=Path, required=True, action="append", metavar="RESULTS_DIR",
                         help="a run's results directory; repeat it to merge runs of separate server sessions")
    refresh.add_argument("--only", default="", help="substring of gpu_class/profile/scenario to refresh")
    refresh.add_argument("--min-repeats", type=int, default=3)
    refresh.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    refresh.add_argument("--accept-regression", metavar="WHY", default="",
                         help="write the baseline although the run's gate was REGRESSED or INCONCLUSIVE (a "
                              "slowdown you accept, e.g. 'vLLM 0.26 trades 5%% throughput for correctness'); "
                              "WHY is stored in the baseline")
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
        try:
            b = load_baseline(path)
        except BaselineError as exc:  # listed, not fatal: an old or broken file is one line among many
            print(f"{key}: REFUSED: {exc.message} ({path})\n  fix: {exc.fix}")
            continue
        print(f"{b.key}: {b.repeats} repeats, {b.gpu_model or b.gpu_class}, vLLM {b.vllm_version or '?'}, "
              f"written {b.created_at or '?'} ({path})")
        if b.accepted_regression:
            print(f"  accepted although its gate failed: {b.accepted_regression}")
        if not args.filter:
            continue
        settings = load_gate_settings(b.gpu_class)
        n_cur = args.repeats or settings.repeats
        rows = sensitivity(b, settings, n_cur)
        print(f"  {b.repeats} repeats in {b.session_count} server session(s); a run of {n_cur} repeats, "
              f"alpha {settings.alpha:g}, {len(rows)} gated metrics" + (" (smoke gate)" if settings.smoke else ""))
        print(f"  {'metric':<24} {'mean':>14} {'within':>7} {'session':>8} {'margin':>7} {'detectable':>11} "
              f"{'A/A alarm':>9}")
        for r in rows:
            unit = METRICS[r.metric].unit
            if r.log_scale:
                within, margin = f"{r.within_cv * 100:.1f}%", f"{r.margin * 100:+.0f}%"
                between = "?" if r.between_cv is None else f"{r.between_cv * 100:.1f}%"
                detect = "-" if r.detectable is None else f"{r.detectable * 100:+.1f}%"
            else:  # judged in the metric's own unit (a count from 0, a queue time under its floor)
                within, margin = format_value(r.within_cv, unit), format_value(abs(r.margin * (r.mean or 1)), unit)
                between = "?" if r.between_cv is None else format_value(r.between_cv, unit)
                detect = "-" if r.detectable is None else format_value(abs(r.detectable * (r.mean or 1)), unit)
            print(f"  {r.metric:<24} {format_value(r.mean, unit):>14} {within:>7} {between:>8} {margin:>7} "
                  f"{detect:>11} {r.false_alarm * 100:>8.2f}%")
    if not shown:
        print(f"no baselines{' matching ' + repr(args.filter) if args.filter else ''} in {directory}")
    return 0


# Gate verdicts --accept-regression may overrule (a slowdown someone accepts); INVALID never: an invalid
# run's figures describe the client or a broken telemetry, not the server.
ACCEPTABLE = ("regressed", "inconclusive")


def _failed_keys(results_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Keys whose SLOs failed or gate was INVALID (refused always), and keys whose gate was REGRESSED or
    INCONCLUSIVE (refused unless accepted), from the saved run's run.json, each with why."""
    try:
        run = json.loads((results_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}, {}
    failed: dict[str, str] = {}
    regressed: dict[str, str] = {}
    for v in run.get("slo", []):
        if not v.get("passed", True):
            names = [r["metric"] for r in v.get("rows", []) if r.get("status") == "fail"]
            failed[v["key"]] = "SLO failed: " + ", ".join(names)
    for v in run.get("gate", []):
        status = v.get("status")
        if status == "invalid":
            failed.setdefault(v["key"], "its baseline gate was INVALID (" + "; ".join(v.get("reasons", [])) + ")")
        elif status in ACCEPTABLE:
            regressed[v["key"]] = f"its baseline gate was {status.upper()}"
    return failed, regressed


def run_refresh(args: argparse.Namespace) -> int:
    phases, failed, regressed = [], {}, {}
    for source in args.sources:
        for p in read_declared_phases(source):
            if args.only in p.key:  # artifacts made absolute: phases of several runs are pooled below
                p.artifacts = {k: str(Path(source, v).resolve()) for k, v in p.artifacts.items()}
                phases.append(p)
        refused, accepted = _failed_keys(source)
        for key, why in refused.items():
            failed[key] = f"{why} in {source}"
        for key, why in accepted.items():
            regressed.setdefault(key, []).append(f"{why} in {source}")
    for key, whys in regressed.items():
        if not args.accept_regression:
            failed.setdefault(key, "; ".join(whys) + " (a regression does not become the baseline unless you "
                                   "say why: --accept-regression WHY)")
    if not phases:
        raise BaselineError(f"no phase results{' matching ' + repr(args.only) if args.only else ''}",
                            source=", ".join(map(str, args.sources)),
                            fix="point --from at a results directory of a finished run")
    groups: dict[str, list] = {}
    for p in phases:
        groups.setdefault(p.key, []).append(p)
    refused = 0
    label = ", ".join(map(str, args.sources))

    def accepted(key: str) -> str:
        """The stored reason where this key's gate failed and the user accepted it: why, and what failed."""
        if key not in regressed or not args.accept_regression:
            return ""
        return f"{args.accept_regression} ({'; '.join(regressed[key])})"

    for key, group in groups.items():
        path = baseline_path(group[0].gpu_class, group[0].profile, group[0].scenario, args.dir)
        sessions = load_gate_settings(group[0].gpu_class).baseline_sessions
        try:
            if args.dry_run:
                from perfgate.verdict.baseline import baseline_from_phases, diff_baselines

                new = baseline_from_phases(group, results_dir=args.sources[0], min_repeats=args.min_repeats,
                                           failed=failed.get(key), min_sessions=sessions)
                new.source, new.accepted_regression = label, accepted(key)
                old = load_baseline(path) if path.exists() else None
                print(f"(dry run) {path}:\n{diff_baselines(old, new)}\n")
            else:
                write_baseline(path, group, results_dir=args.sources[0], min_repeats=args.min_repeats,
                               failed=failed.get(key), min_sessions=sessions, echo=print, source=label,
                               accepted_regression=accepted(key))
                print()
        except (BaselineError, InvalidRunError) as exc:
            refused += 1
            print(f"refused {key}: {exc}\n")
    return 1 if refused else 0
