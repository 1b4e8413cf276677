"""Verdict tables as text: the baseline gate's, an SLO set's and an A/B's.

Verdicts (``perfgate.verdict``) hold the figures and the policy; this module renders them, for failure
messages, the terminal and ``summary.md``. One entry point, ``table(verdict)``, whatever the verdict's kind.
"""

from __future__ import annotations

from functools import singledispatch
from typing import Any

from perfgate.core.catalog import METRICS
from perfgate.core.fmt import format_value, pct, text_table
from perfgate.verdict.ab import BETTER, SAME, WORSE, AbVerdict
from perfgate.verdict.capacity import CapacityVerdict
from perfgate.verdict.capacity_baseline import Bracket, rate_text
from perfgate.verdict.gate import (
    INCOMPARABLE,
    INCONCLUSIVE,
    MISSING,
    NEW,
    PASS,
    REGRESSED,
    REPORTED,
    GateVerdict,
)
from perfgate.verdict.slo import FAIL, SKIP, SloVerdict
from perfgate.verdict.slo import PASS as SLO_PASS


@singledispatch
def table(verdict: Any, **_: Any) -> str:
    raise TypeError(f"no table for {type(verdict).__name__}: a GateVerdict, SloVerdict, AbVerdict or "
                    "CapacityVerdict is expected")


@table.register
def _gate_table(verdict: GateVerdict, all_rows: bool = False) -> str:
    """Gated metrics (worst first), then report-only ones that moved by more than 10 % when asked."""
    order = {REGRESSED: 0, MISSING: 0, INCONCLUSIVE: 1, INCOMPARABLE: 2, NEW: 3, PASS: 4, REPORTED: 5}
    shown = [r for r in verdict.rows if r.verdict != REPORTED or all_rows]
    shown.sort(key=lambda r: (order.get(r.verdict, 9), r.metric))
    level = round((1 - verdict.settings.alpha) * 100)
    body: list[tuple[str, ...]] = [("metric", "baseline", "current", "change", f"{level}% bounds", "margin",
                                    "detectable", "verdict")]
    for r in shown:
        unit = METRICS[r.metric].unit
        bounds = f"[{pct(r.ci_low)}, {pct(r.ci_high)}]" if r.ci_low is not None else ""
        body.append((r.metric, format_value(r.baseline, unit), format_value(r.current, unit), pct(r.relative),
                     bounds, pct(r.margin, 0) if r.margin is not None else "",
                     pct(r.detectable, 1) if r.detectable is not None else "",
                     r.verdict.upper() + (f" ({r.note})" if r.note else "")))
    lines = [verdict.headline()]
    if verdict.baseline_repeats:
        lines.append(f"this run: {verdict.repeats} repeat(s); baseline: {verdict.baseline_repeats} repeats in "
                     f"{verdict.baseline_sessions} server session(s); alpha {verdict.settings.alpha:g} one-sided, "
                     f"{verdict.settings.correction} across {len(verdict.gated_rows)} gated metrics")
    lines += text_table(body, "  ")
    lines += [f"note: {n}" for n in verdict.notes]
    if verdict.unchecked:
        lines.append("note: identity not checked (one side does not record it): " + ", ".join(verdict.unchecked))
    return "\n".join(lines)


@table.register
def _slo_table(verdict: SloVerdict) -> str:
    lines = [f"{verdict.headline()} — {verdict.rule}"]
    order = {FAIL: 0, SKIP: 2, SLO_PASS: 1}
    per = verdict.repeats > 1
    cols = ("status", "metric", "bound", "measured" + (" (worst)" if per else ""))
    body = [cols + (("per repeat",) if per else ()) + ("margin", "note")]
    for r in sorted(verdict.rows, key=lambda r: order[r.status]):
        cells = (r.status.upper() if r.status == FAIL else r.status, r.metric, r.bound,
                 format_value(r.measured, METRICS[r.metric].unit))
        if per:
            cells += (r.per_repeat_text() if r.status == FAIL else "",)
        body.append(cells + ("-" if r.margin is None else f"{r.margin * 100:+.1f}%", r.note))
    lines += text_table(body, "  ")
    if verdict.results_dir:
        lines.append(f"raw results: {verdict.results_dir}")
    lines.append(f"SLO files: {', '.join(verdict.files)}")
    if verdict.provisional:
        lines.append("PROVISIONAL: these bounds were derived from one run and no person has reviewed them yet "
                     "(a reviewer deletes `provisional = true` from the SLO file)")
    return "\n".join(lines)


@table.register
def _ab_table(verdict: AbVerdict) -> str:
    head = (f"A/B {verdict.scenario}: B={verdict.b_name} vs A={verdict.a_name} "
            f"({verdict.n_a} x A, {verdict.n_b} x B{', paired' if verdict.paired else ''}): "
            f"{len(verdict.better)} better, {len(verdict.worse)} worse")
    body = [("metric", "A", "B", "change", f"{round((1 - verdict.alpha) * 100)}% CI", "verdict")]
    order = {WORSE: 0, BETTER: 1, SAME: 2}
    for r in sorted(verdict.rows, key=lambda r: order.get(r.verdict, 3)):
        unit = METRICS[r.metric].unit
        c = r.change
        body.append((r.metric, format_value(r.a, unit), format_value(r.b, unit), pct(c.relative) if c else "",
                     f"[{pct(c.ci_low)}, {pct(c.ci_high)}]" if c else "",
                     r.verdict + (f" ({r.note})" if r.note else "")))
    lines = [head] + text_table(body, "  ")
    return "\n".join(lines + [f"note: {n}" for n in verdict.notes])


@table.register
def _capacity_table(verdict: CapacityVerdict) -> str:
    """The capacity gate: the rule with its two thresholds, both brackets, then every point of this run."""
    m = f"{verdict.min_effect:.0%}"
    lines = [verdict.headline()]
    if verdict.baseline is not None:
        pass_at = rate_text(verdict.pass_at) if verdict.pass_at is not None else "- (baseline open above)"
        regress_at = rate_text(verdict.regress_at) if verdict.regress_at is not None else "-"
        lines.append(f"rule: REGRESSED if today's lowest failing rate <= baseline's highest passing / (1 + {m}) = "
                     f"{regress_at}; PASS if today's highest passing rate >= baseline's lowest failing / (1 + {m}) "
                     f"= {pass_at}; else INCONCLUSIVE (up to [sweep] extra_refine_steps points added where they "
                     f"decide; {verdict.probes} added)")
    lines += [f"why: {r}" for r in verdict.reasons]
    body: list[tuple[str, ...]] = [("bracket", "highest passing", "lowest failing", "width", "points")]

    def row(side: str, bracket: Bracket, points: int, sweeps: int) -> tuple[str, ...]:
        width = (f"{(bracket.upper - bracket.low) / bracket.upper:.0%}" if bracket.upper else "open")
        return (side, rate_text(bracket.lower) if bracket.lower is not None else "none",
                rate_text(bracket.upper) if bracket.upper is not None else "none", width,
                f"{points}" + (f" in {sweeps} sweeps" if sweeps > 1 else ""))

    body.append(row("this run", verdict.current, sum(len(s.points) for s in verdict.sweeps), len(verdict.sweeps)))
    if verdict.baseline is not None:
        body.append(row("baseline", verdict.baseline, 0, 0)[:4] + ("",))
    lines += text_table(body, "  ")
    points: list[tuple[str, ...]] = [("offered", "stage", "verdict", "completed", "p99 TTFT", "p99 E2E", "why")]
    for sweep in verdict.sweeps:
        for p in sweep.points:
            points.append((f"{rate_text(p.rate)} req/s", p.stage, p.verdict.replace("_", " ").upper()
                           if not p.passed else "pass", format_value(p.metrics.get("request_throughput"), "req/s"),
                           format_value(p.metrics.get("p99_ttft_ms"), "ms"),
                           format_value(p.metrics.get("p99_e2el_ms"), "ms"), "; ".join(p.reasons[:2])[:160]))
    lines += text_table(points, "  ")
    bounds = ", ".join(f"{k} <= {format_value(v, METRICS[k].unit)}" for k, v in verdict.slo_max.items())
    lines.append(f"each point judged on: {bounds or 'the SLO set'}; valid, not saturated"
                 + (" (PROVISIONAL bounds, not yet reviewed)" if verdict.slo_provisional else ""))
    if verdict.floor is not None:
        lines.append(f"SLO capacity floor: >= {rate_text(verdict.floor)} req/s "
                     f"({'met' if verdict.floor_met else 'NOT met'}: the highest passing rate is judged)")
    lines += [f"note: {n}" for s in verdict.sweeps for n in s.notes] + [f"note: {n}" for n in verdict.notes]
    if verdict.changes:
        lines.append("changed since the baseline: " + "; ".join(verdict.changes))
    return "\n".join(lines)
