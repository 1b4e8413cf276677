"""summary.md: the run in Markdown, for ``$GITHUB_STEP_SUMMARY`` and PR comments.

One overview table (a line per phase: SLO verdict, gate verdict), then per phase its key metrics against
the baseline, the failed or notable SLO and gate rows, its plots and links to its raw files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from perfgate.core.catalog import KEY_METRICS, METRICS
from perfgate.core.fmt import format_value, pct
from perfgate.core.phase import PhaseResult
from perfgate.report.tables import table
from perfgate.telemetry.throttle import throttled_text

if TYPE_CHECKING:
    from perfgate.verdict.ab import AbVerdict
    from perfgate.verdict.baseline import Baseline
    from perfgate.verdict.gate import GateVerdict
    from perfgate.verdict.slo import SloVerdict


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(x: object) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _mean(phases: Sequence[PhaseResult], metric: str) -> float | None:
    values = [p.metrics[metric] for p in phases if isinstance(p.metrics.get(metric), (int, float))]
    return sum(values) / len(values) if values else None


def _badge(ok: bool | None, text: str) -> str:
    return {True: f"✅ {text}", False: f"❌ {text}", None: f"⚪ {text}"}[ok]


def render_summary(phases: Sequence[PhaseResult], *, slo_verdicts: Sequence[SloVerdict] = (),
                   gate_verdicts: Sequence[GateVerdict] = (), ab_verdicts: Sequence[AbVerdict] = (),
                   baselines: dict[str, Baseline] | None = None, plots: dict[str, list[str]] | None = None,
                   phase_files: dict[str, list[str]] | None = None, title: str = "perfgate run") -> str:
    """The Markdown text. ``plots``/``phase_files`` map a phase key to paths relative to the results dir."""
    baselines, plots, phase_files = baselines or {}, plots or {}, phase_files or {}
    groups: dict[str, list[PhaseResult]] = {}
    for p in phases:
        groups.setdefault(p.key, []).append(p)
    slo_by = {v.key: v for v in slo_verdicts}  # one verdict per phase key, over all its repeats
    gate_by = {v.key: v for v in gate_verdicts}

    out = [f"# {title}", ""] + _changes_section(gate_verdicts)
    rows = []
    for key, group in groups.items():
        slo = slo_by.get(key)
        slo_cell = _badge(slo.passed, "pass" if slo.passed else
                          f"fail: {', '.join(sorted(r.metric for r in slo.failed))}") \
            if slo else _badge(None, "no SLO set")
        gate = gate_by.get(key)
        if gate is None:
            gate_cell = _badge(None, "not gated")
        elif gate.status == "regressed":
            gate_cell = _badge(False, "REGRESSED: " + ", ".join(r.metric for r in gate.regressions))
        elif gate.status == "inconclusive":
            gate_cell = _badge(None if gate.passed else False, "INCONCLUSIVE" + (" (smoke gate)" if gate.passed
                                                                               else ""))
        elif gate.status == "new":
            gate_cell = _badge(None if gate.passed else False, "NEW (no baseline)")
        else:
            gate_cell = _badge(gate.status == "pass", gate.status.upper())
        valid = all(p.valid for p in group)
        rows.append((f"`{key}`", str(len(group)), "yes" if valid else "**no**", slo_cell, gate_cell))
    out += [md_table(("phase", "repeats", "valid", "SLOs", "baseline gate"), rows), ""]

    for key, group in groups.items():
        out += [f"## `{key}`", ""]
        for p in group:
            if not p.valid:
                out.append(f"> ⚠️ repeat {p.repeat} INVALID: {'; '.join(p.invalid_reasons)}")
            if p.saturated:
                out.append(f"> repeat {p.repeat} saturated: {'; '.join(p.saturation_reasons)}")
            if throttled := throttled_text(p.metrics):
                out.append(f"> repeat {p.repeat} GPU clocks held down by power or heat: {throttled} of NVML "
                           "samples (worst GPU)")
        for source, reason in group[0].unavailable.items():
            out.append(f"> {source} unavailable: {reason}")
        base = baselines.get(key)
        metric_rows = []
        for m in KEY_METRICS:
            cur = _mean(group, m)
            if cur is None:
                continue
            unit = METRICS[m].unit
            old = base.metrics.get(m) if base else None
            old_mean = sum(old) / len(old) if old else None
            change = f"{(cur / old_mean - 1) * 100:+.1f}%" if old_mean else ""
            metric_rows.append((m, format_value(cur, unit), format_value(old_mean, unit), change))
        if metric_rows:
            out += ["", md_table(("metric", f"this run (mean of {len(group)})", "baseline", "change"),
                                 metric_rows), ""]
        if (slo := slo_by.get(key)) is not None:
            out += _slo_section(slo)
        gate = gate_by.get(key)
        if gate is not None:
            out += _gate_section(gate)
        for path in plots.get(key, []):
            out += [f"![{Path(path).stem}]({path})", ""]
        if phase_files.get(key):
            out += ["Files: " + ", ".join(f"[{Path(f).name}]({f})" for f in phase_files[key]), ""]

    for ab in ab_verdicts:
        out += [f"## A/B `{ab.scenario}`: `{ab.a_name}` vs `{ab.b_name}`", "", "```", table(ab), "```", ""]
    out += ["Everything: [run.json](run.json)", ""]
    return "\n".join(out)


def _changes_section(gate_verdicts: Sequence[GateVerdict]) -> list[str]:
    """The summary's opening: what changed since the baseline (versions, driver, flags), phases that share
    the same change on one line; phases without a baseline, and refused comparisons, said as such."""
    if not gate_verdicts:
        return ["**What changed since the baseline:** nothing was compared (no baseline gate ran).", ""]
    by_text: dict[str, list[str]] = {}
    for gate in gate_verdicts:
        if gate.changes is None:
            text = "no baseline to compare with (NEW)"
        else:
            text = gate.change_text()
            if gate.status == "incomparable":
                text += f" (not compared: {gate.reasons[0]})"
        by_text.setdefault(text, []).append(gate.key)
    if len(by_text) == 1:
        text, keys = next(iter(by_text.items()))
        return [f"**What changed since the baseline:** {text}"
                + ("" if len(keys) == 1 else f" (all {len(keys)} gated phases)") + f" — `{'`, `'.join(keys)}`", ""]
    return ["**What changed since the baseline:**", ""] + [f"- {text}: `{'`, `'.join(keys)}`"
                                                          for text, keys in by_text.items()] + [""]


def _slo_section(verdict: SloVerdict) -> list[str]:
    """The phase key's SLO verdict over all its repeats: the rule, one row per bound (its worst repeat),
    and every repeat's value for the rows that failed."""
    rank = {"fail": 0, "skip": 1, "pass": 2}
    n, per = verdict.repeats, verdict.repeats > 1
    counts = [f"{len(verdict.failed)} of {len(verdict.rows)} bounds failed"] if verdict.failed else []
    counts += [f"{len(verdict.skipped)} skipped"] if verdict.skipped else []
    counts += [f"{n} repeat{'s' if per else ''} judged"] + (["provisional bounds"] if verdict.provisional else [])
    rows = []
    for r in sorted(verdict.rows, key=lambda r: rank[r.status]):
        cells = [r.status.upper() if r.status == "fail" else r.status, r.metric, r.bound,
                 format_value(r.measured, METRICS[r.metric].unit)]
        cells += [r.per_repeat_text() if r.status == "fail" else ""] if per else []
        rows.append(cells + ["-" if r.margin is None else f"{r.margin * 100:+.1f}%", r.note])
    header = ["status", "metric", "bound", "measured (worst repeat)"] + (["per repeat"] if per else [])
    return [f"**SLOs: {'PASS' if verdict.passed else 'FAIL'}** ({', '.join(counts)})", "",
            "Rule: a bound holds only if it holds in every repeat; `measured` is the worst repeat"
            + ("; failing rows list every repeat's value." if per else "."), "",
            md_table(header + ["margin", "note"], rows), ""]


def _gate_section(gate: GateVerdict) -> list[str]:
    """The gate's verdict: the rule, every gated metric (worst first), then report-only figures that moved."""
    order = {"regressed": 0, "missing": 0, "inconclusive": 1, "incomparable": 2, "new": 3, "pass": 4}
    gated = sorted(gate.gated_rows, key=lambda r: (order.get(r.verdict, 9), r.metric))
    level = round((1 - gate.settings.alpha) * 100)
    rows = [(r.verdict.upper(), r.metric, format_value(r.baseline, METRICS[r.metric].unit),
             format_value(r.current, METRICS[r.metric].unit), pct(r.relative),
             f"[{pct(r.ci_low)}, {pct(r.ci_high)}]" if r.ci_low is not None else "",
             pct(r.margin, 0) if r.margin is not None else "", pct(r.detectable) if r.detectable is not None else "",
             r.note) for r in gated]
    out = [f"**Baseline gate: {gate.status.upper()}**" + (" (smoke gate)" if gate.settings.smoke else "")
           + (f" — {gate.first_line()}" if gate.first_line() else "")
           + (f" — {'; '.join(gate.reasons)}" if gate.reasons else ""), ""]
    if gate.baseline_repeats:
        out += [(f"Rule: each gated metric is tested one-sided against its margin (the minimum effect, or its "
                 f"absolute floor if larger), with noise from {gate.baseline_sessions} baseline server "
                 f"session(s) and {gate.repeats} repeat(s) of this run: REGRESSED when worse by more than the "
                 f"margin at {level} % confidence ({gate.settings.correction}-corrected), PASS when shown within "
                 f"it, else INCONCLUSIVE (more repeats, up to {gate.settings.max_repeats})."), ""]
    if rows:
        out += [md_table(("verdict", "metric", "baseline", "current", "change", f"{level}% bounds", "margin",
                          "detectable", "note"), rows), ""]
    moved = [r for r in gate.rows if r.verdict == "reported" and r.relative is not None and abs(r.relative) > 0.10]
    if moved:
        out += ["Report-only figures that moved by more than 10 % (not gated: duplicates, environment, "
                "occupancy): " + ", ".join(f"{r.metric} {pct(r.relative)}" for r in moved), ""]
    notes = gate.notes + (["identity not checked (one side does not record it): " + ", ".join(gate.unchecked)]
                          if gate.unchecked else [])
    out += [f"- {n}" for n in notes] + ([""] if notes else [])
    return out
