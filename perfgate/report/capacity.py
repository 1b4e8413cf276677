"""The capacity part of a report: the throughput-vs-latency plot of a sweep and its summary.md section.

A ``CapacityVerdict`` holds its sweeps' points (offered rate, verdict, figures); this module draws them with
``plots.plot_sweep`` (completed rate and P99/median latency per point, the SLO bounds, the bracket shaded)
and writes the section a reviewer reads: the verdict, the rule's thresholds, every point and why it failed.
"""

from __future__ import annotations

from pathlib import Path

from perfgate.core.fmt import format_value
from perfgate.core.phase import PhaseResult
from perfgate.report.markdown import md_table
from perfgate.report.plots import plot_sweep
from perfgate.verdict.capacity import CapacityVerdict
from perfgate.verdict.capacity_baseline import rate_text


def plot_capacity(path: Path, verdict: CapacityVerdict) -> Path | None:
    """Offered rate against completed rate and P99/median TTFT and E2E, one point per sweep point, failing
    points crossed out, the SLO bounds drawn and the capacity bracket shaded (None: fewer than two points)."""
    gpu_class, profile, scenario = verdict.key.split("/")
    phases = [PhaseResult(profile, scenario, gpu_class, metrics={**p.metrics, "offered_rate": p.rate})
              for sweep in verdict.sweeps for p in sweep.points]
    failing = {profile: {p.rate for sweep in verdict.sweeps for p in sweep.points if p.verdict in ("fail", "saturated")}}
    invalid = {profile: {p.rate for sweep in verdict.sweeps for p in sweep.points
                         if p.verdict in ("invalid", "client_limit")}}
    title = (f"{verdict.key}: capacity at the SLO {verdict.current.text()}, gate {verdict.status.upper()}"
             + (" (provisional SLO)" if verdict.slo_provisional else ""))
    return plot_sweep(path, phases, verdict.slo_max, brackets={profile: (verdict.current.lower, verdict.current.upper)},
                      failing=failing, invalid=invalid, title=title)


def capacity_section(verdict: CapacityVerdict, plot: str | None = None, sweep_file: str | None = None) -> list[str]:
    """Markdown lines: the verdict, its rule with the thresholds, the brackets, each point, the plot."""
    ok = verdict.passed
    badge = {True: "✅", False: "❌"}[ok] if verdict.status != "new" else "⚪"
    out = [f"## Capacity at the SLO `{verdict.key}`", "",
           f"{badge} **Capacity gate: {verdict.status.upper()}**" + (" (smoke gate)" if verdict.smoke else "")
           + f" — max_sustained_rate in **{verdict.current.text()}**"
           + (f", baseline {verdict.baseline.text()}" if verdict.baseline is not None else ""), ""]
    if verdict.workload:
        out += [f"Workload per point: {verdict.workload}.", ""]
    m = f"{verdict.min_effect:.0%}"
    rule = (f"Rule: the bracket is [highest offered rate whose SLOs held, lowest that failed or saturated). "
            f"REGRESSED when today's lowest failing rate <= the baseline's highest passing / (1 + {m})")
    if verdict.regress_at is not None:
        rule += f" = {rate_text(verdict.regress_at)} req/s"
    rule += f"; PASS when today's highest passing rate >= the baseline's lowest failing / (1 + {m})"
    if verdict.pass_at is not None:
        rule += f" = {rate_text(verdict.pass_at)} req/s"
    out += [rule + "; else INCONCLUSIVE, after up to [sweep] extra_refine_steps points placed at those "
            f"thresholds ({verdict.probes} added).", ""]
    out += [f"- {r}" for r in verdict.reasons]
    if not verdict.floor_met:
        out.append(f"- ❌ below the SLO's capacity floor of {rate_text(verdict.floor or 0)} req/s")
    rows = []
    for i, sweep in enumerate(verdict.sweeps, 1):
        for p in sweep.points:
            rows.append(((f"{i}: " if len(verdict.sweeps) > 1 else "") + f"{rate_text(p.rate)} req/s", p.stage,
                         "pass" if p.passed else f"**{p.verdict.replace('_', ' ')}**",
                         format_value(p.metrics.get("request_throughput"), "req/s"),
                         format_value(p.metrics.get("median_e2el_ms"), "ms"),
                         format_value(p.metrics.get("p99_e2el_ms"), "ms"),
                         format_value(p.metrics.get("p99_ttft_ms"), "ms"),
                         "; ".join(p.reasons[:2])[:200],
                         f"[phase]({p.phase_file})" if p.phase_file else ""))
    out += ["", md_table(("offered", "stage", "verdict", "completed", "median E2E", "p99 E2E", "p99 TTFT", "why",
                          "file"), rows), ""]
    bounds = ", ".join(f"`{k}` <= {v:,.4g} ms" for k, v in verdict.slo_max.items() if k.endswith("_ms"))
    if bounds:
        out += [f"Each point: valid, not saturated, and {bounds}"
                + (" (provisional bounds)" if verdict.slo_provisional else "") + ".", ""]
    notes = [n for s in verdict.sweeps for n in s.notes] + verdict.notes
    out += [f"- {n}" for n in notes] + ([""] if notes else [])
    if verdict.changes:
        out += ["Changed since the baseline: " + "; ".join(verdict.changes), ""]
    if plot:
        out += [f"![{Path(plot).stem}]({plot})", "",
                ("How to read it: top, completed rate against offered rate (on the dashed diagonal the server "
                 "keeps up; red crosses are points that failed or saturated, grey rings invalid windows, which are "
                 "neither end); bottom, P99 TTFT, TPOT and E2E, and median (dotted) TTFT and E2E, each SLO bound "
                 "dotted in its curve's colour. The green band is the capacity bracket: its left edge the highest "
                 "rate that held, the red dashed line the lowest that failed."), ""]
    if sweep_file:
        out += [f"Sweep: [{Path(sweep_file).name}]({sweep_file})", ""]
    return out
