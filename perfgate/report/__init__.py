"""Reports for one run, in one results directory: run.json, summary.md and PNG plots.

``check_results_dir`` runs before anything expensive (servers, load): a directory that cannot be written,
or a nearly full disk, fails in a second instead of after minutes of GPU time.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfgate._errors import PerfgateError, ResultsDirError
from perfgate.core.fmt import format_value
from perfgate.core.phase import PhaseResult
from perfgate.core.results import jsonable, read_phase_results, write_run_json
from perfgate.report import plots as P
from perfgate.report.capacity import capacity_section, plot_capacity
from perfgate.report.markdown import render_summary
from perfgate.verdict.baseline import find_baseline
from perfgate.verdict.slo_files import load_slos

if TYPE_CHECKING:
    from perfgate.verdict.ab import AbVerdict
    from perfgate.verdict.baseline import Baseline
    from perfgate.verdict.capacity import CapacityVerdict
    from perfgate.verdict.gate import GateVerdict
    from perfgate.verdict.slo import SloSet, SloVerdict

__all__ = ["ReportFiles", "check_results_dir", "format_value", "read_phase_results", "render_summary",
           "write_report", "write_run_json", "write_run_report"]

DEFAULT_MIN_FREE_GIB = 1.0


def check_results_dir(path: Path | str, min_free_gib: float = DEFAULT_MIN_FREE_GIB) -> Path:
    """Create ``path``, write+fsync+delete a probe file, and check free space; ResultsDirError otherwise."""
    path = Path(path)
    fix_perm = f"choose a writable directory (--perfgate-results-dir) or fix the permissions of {path}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsDirError(f"cannot create the results directory: {exc.strerror}", source=str(path),
                              fix=fix_perm) from None
    probe = path / f".perfgate-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"x" * 4096)  # a real block: a full disk fails here, not at the first results file
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise ResultsDirError(f"cannot write to the results directory: {exc.strerror}", source=str(path),
                              fix=fix_perm if exc.errno != 28 else "free disk space, or point "
                              "--perfgate-results-dir at another disk") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free_gib = shutil.disk_usage(path).free / 2**30
    if free_gib < min_free_gib:
        raise ResultsDirError(f"only {free_gib:.2f} GiB free where results go; a run needs {min_free_gib:g} GiB",
                              source=str(path), fix="free disk space, or point --perfgate-results-dir at "
                              "another disk")
    return path


@dataclass
class ReportFiles:
    run_json: Path
    summary_md: Path
    plots: dict[str, list[Path]] = field(default_factory=dict)  # phase key (or "sweep:...") -> PNGs


def _slug(key: str) -> str:
    return key.replace("/", "__").replace(" ", "_")


def write_report(results_dir: Path | str, phases: Sequence[PhaseResult], *,
                 slo_verdicts: Sequence[SloVerdict] = (), gate_verdicts: Sequence[GateVerdict] = (),
                 ab_verdicts: Sequence[AbVerdict] = (), baselines: dict[str, Baseline] | None = None,
                 slo_sets: dict[str, SloSet] | None = None, title: str = "perfgate run",
                 make_plots: bool = True, redact: Callable[[str], str] | None = None,
                 extra: dict[str, Any] | None = None,
                 capacity_verdicts: Sequence[CapacityVerdict] = ()) -> ReportFiles:
    """Write run.json, summary.md and plots under ``results_dir``; paths in the Markdown are relative.

    ``baselines`` and ``slo_sets`` are keyed by ``PhaseResult.key``; they add the baseline's CDF and the
    SLO bounds to the plots. Sweeps (one profile, one scenario, several ``offered_rate`` values) get a
    throughput/P99-vs-offered plot. ``capacity_verdicts`` (``perfgate.capacity`` sweeps) get their own
    section and throughput-vs-latency plot, and count in run.json's ``passed``. ``redact`` filters every string
    written (an API key never leaks).
    """
    results_dir = Path(results_dir)
    baselines, slo_sets = baselines or {}, slo_sets or {}
    groups: dict[str, list[PhaseResult]] = {}
    for p in phases:
        groups.setdefault(p.key, []).append(p)
    plots: dict[str, list[Path]] = {}
    if make_plots:

        plot_dir = results_dir / "plots"
        for key, group in groups.items():
            slo_max = {m: b.max for m, b in slo_sets[key].bounds.items() if b.max is not None} \
                if key in slo_sets else {}
            made = []
            if len({p.metrics.get("offered_rate") for p in group}) == 1:  # a sweep's rates are not pooled
                made.append(P.plot_latency_cdf(plot_dir / f"{_slug(key)}__latency_cdf.png", group, results_dir,
                                               baselines.get(key), slo_max))
            for p in group:
                timeline = P.read_timeline(p, results_dir)
                if timeline is not None:
                    made.append(P.plot_timeline(plot_dir / f"{_slug(key)}__r{p.repeat}__timeline.png", timeline,
                                                f"{key} repeat {p.repeat}: GPU and scheduler timeline"))
            plots[key] = [m for m in made if m is not None]
        by_scenario: dict[tuple[str, str], list[PhaseResult]] = {}
        for p in phases:
            by_scenario.setdefault((p.gpu_class, p.scenario), []).append(p)
        for (gpu, scenario), group in by_scenario.items():
            key = next((k for k in slo_sets if k.startswith(f"{gpu}/") and k.endswith(f"/{scenario}")), None)
            slo_max = {m: b.max for m, b in slo_sets[key].bounds.items() if b.max is not None} if key else {}
            made_sweep = P.plot_sweep(plot_dir / f"{gpu}__{scenario}__sweep.png", group, slo_max)
            if made_sweep is not None:
                plots.setdefault(f"sweep:{gpu}/{scenario}", []).append(made_sweep)
    capacity_md: list[str] = []
    for verdict in capacity_verdicts:
        made_capacity = (plot_capacity(results_dir / "plots" / f"{_slug(verdict.key)}__capacity.png", verdict)
                         if make_plots else None)
        if made_capacity is not None:
            plots[f"capacity:{verdict.key}"] = [made_capacity]
        gpu, profile, scenario = verdict.key.split("/")
        sweep_file = results_dir / "capacity" / f"{profile}__{scenario}" / "sweep.json"
        capacity_md += capacity_section(verdict, str(made_capacity.relative_to(results_dir)) if made_capacity else None,
                                        str(sweep_file.relative_to(results_dir)) if sweep_file.exists() else None)
    rel = {k: [str(p.relative_to(results_dir)) for p in v] for k, v in plots.items()}
    phase_files = {key: sorted({f for p in group for f in p.artifacts.values()}
                               | {f"phases/{p.profile}__{p.scenario}__r{p.repeat}.json" for p in group
                                  if (results_dir / "phases" / f"{p.profile}__{p.scenario}__r{p.repeat}.json").exists()})
                   for key, group in groups.items()}
    md_plots = dict(rel)
    for k, v in rel.items():  # a sweep's plot is shown under each of its phases
        if k.startswith("sweep:"):
            gpu, scenario = k[6:].split("/", 1)
            for key in groups:
                if key.startswith(f"{gpu}/") and key.endswith(f"/{scenario}"):
                    md_plots.setdefault(key, []).extend(v)
    extra = dict(extra or {})
    if capacity_verdicts:  # run.json's "passed" counts the capacity gates too (write_run_json knows phases)
        extra["capacity"] = [{**jsonable(v), "passed": v.passed} for v in capacity_verdicts]
        extra["passed"] = (all(p.valid for p in phases) and all(v.passed for v in [*slo_verdicts, *gate_verdicts])
                           and all(v.passed for v in capacity_verdicts))
    run_json = write_run_json(results_dir / "run.json", phases, slo_verdicts=slo_verdicts,
                              gate_verdicts=gate_verdicts, ab_verdicts=ab_verdicts, plots=rel, redact=redact,
                              extra=extra)
    summary = render_summary(phases, slo_verdicts=slo_verdicts, gate_verdicts=gate_verdicts,
                             ab_verdicts=ab_verdicts, baselines=baselines, plots=md_plots,
                             phase_files=phase_files, title=title)
    if capacity_md:  # before the closing "Everything: run.json" line
        head, sep, tail = summary.rpartition("Everything: [run.json]")
        summary = (head + "\n".join(capacity_md) + "\n" + sep + tail) if sep else summary + "\n".join(capacity_md)
    summary_md = results_dir / "summary.md"
    tmp = summary_md.with_name(".summary.md.tmp")
    tmp.write_text(redact(summary) if redact else summary, encoding="utf-8")
    os.replace(tmp, summary_md)
    return ReportFiles(run_json, summary_md, plots)


def write_run_report(session: Any) -> ReportFiles:
    """The report of a pytest session (``perfgate.run.session.PerfgateSession``): its phases and verdicts.

    Reads ``session.results_dir``, ``session.phases``, ``session.verdicts`` (per phase key: ``"slo"``,
    ``"gate"``, optionally ``"ab"`` as one AbVerdict or a list), ``session.run_id`` and ``session.redact``.
    Baselines and SLO sets are looked up again for the plots; one that cannot be read is left out.
    """

    slo, gate, ab, capacity = [], [], [], []
    for entry in session.verdicts.values():
        if entry.get("capacity") is not None:
            capacity.append(entry["capacity"])
        if entry.get("slo") is not None:
            slo.append(entry["slo"])
        if entry.get("gate") is not None:
            gate.append(entry["gate"])
        extra = entry.get("ab")
        ab += extra if isinstance(extra, list) else ([extra] if extra is not None else [])
    baselines, slo_sets = {}, {}
    for p in {p.key: p for p in session.phases}.values():
        try:
            if (b := find_baseline(p.gpu_class, p.profile, p.scenario)) is not None:
                baselines[p.key] = b
        except PerfgateError:
            pass  # the gate has already reported it
        try:
            if (s := load_slos(p.gpu_class, p.profile, p.scenario)) is not None:
                slo_sets[p.key] = s
        except PerfgateError:
            pass
    return write_report(session.results_dir, session.phases, slo_verdicts=slo, gate_verdicts=gate,
                        ab_verdicts=ab, baselines=baselines, slo_sets=slo_sets,
                        title=f"perfgate run {getattr(session, 'run_id', '')}".strip(),
                        redact=getattr(session, "redact", None),
                        extra={"prompt_nonce": getattr(session, "prompt_nonce", None)},
                        capacity_verdicts=capacity)
