"""Capacity at the SLO: which sweep points pass, and the gate on the capacity bracket.

A sweep point passes when its window was valid, the server did not saturate, and every latency and error
bound of the scenario's SLO set held (``judge_point``). The sweep's result is a bracket ``[lower, upper)``:
``lower`` the highest offered rate that passed, ``upper`` the lowest that failed; the capacity lies in it.

The gate (``judge_capacity``) compares today's bracket with the baseline's (the envelope of its sweeps), with
m the minimum effect of ``max_sustained_rate`` (catalog 0.10; ``[tool.perfgate.gate]`` may override it):

* **REGRESSED** when ``current.upper <= baseline.lower / (1 + m)``: a rate today failed that is more than m
  below a rate the baseline sustained, so even the most favourable reading of today is a loss beyond m;
* **PASS** when ``current.lower >= baseline.upper / (1 + m)``: today sustained a rate within m of a rate the
  baseline failed, so even the least favourable reading is a loss of at most m;
* else **INCONCLUSIVE**: the runner measures more points where they decide it (``next_probe``), a bounded
  number, before it gives up INCONCLUSIVE. **NEW** without a baseline; **INCOMPARABLE** when the baseline's
  GPU, model or scenario differ; **INVALID** when the sweep says nothing about the server.

Where this departs from "upper < lower x (1 - m)", and why:

* the margin is ``1 / (1 + m)``, the gate's own log-scale margin (``perfgate.verdict.gate``), so one minimum
  effect means the same worsening for every gated metric and stays meaningful when m >= 1 (the CPU smoke
  class sets 2.0, "3x worse"; 1 - m would be negative there). For m = 0.10 it is 0.909, not 0.900;
* ``<=`` rather than ``<`` for REGRESSED: the bracket is half open (the capacity is below ``upper``), so a
  failure at exactly the threshold already shows a loss beyond m, and a probe placed there can decide;
* a window that is invalid for a reason not the server's (the client could not keep the rate, the GPU was
  throttled) is neither end of the bracket: nothing above it is offered, and bisection looks below it;
* refining bisects nothing blindly: ``next_probe`` measures at the PASS threshold, then at the REGRESSED
  one, each a single point that decides the verdict when it lands that way. When the capacity falls between
  the two thresholds, no point of today can decide: the baseline's own bracket is too wide, and the verdict
  says so.

Each end of a bracket is one window; near the knee a point can pass or fail by chance, so a bracket is as
firm as its two points (a baseline of several sessions widens to cover their drift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from perfgate.core.catalog import METRICS
from perfgate.core.phase import PhaseResult
from perfgate.load.scenario import SelfCheck
from perfgate.load.sweep import SweepPoint
from perfgate.verdict.capacity_baseline import Bracket, CapacityBaseline, SweepRecord, envelope, rate_text
from perfgate.verdict.identity import changes, check_identity
from perfgate.verdict.slo import FAIL, SKIP, SloSet

PASS, REGRESSED, INCONCLUSIVE, NEW = "pass", "regressed", "inconclusive", "new"
INCOMPARABLE, INVALID = "incomparable", "invalid"
# The SLO kinds a sweep point is judged on: how fast and how reliably requests are served at that rate.
POINT_KINDS = ("latency", "error")


def point_bounds(slos: SloSet) -> SloSet:
    """The part of an SLO set a sweep point is judged on: its latency and error bounds."""
    bounds = {m: b for m, b in slos.bounds.items() if METRICS[m].kind in POINT_KINDS}
    return SloSet(slos.gpu_class, slos.profile, slos.scenario, bounds, slos.files, slos.provisional)


def capacity_floor(slos: SloSet) -> float | None:
    """A minimum capacity the SLO set asks for: ``max_sustained_rate.min``, else ``request_throughput.min``
    (with a sweep, the request rate bound is judged on the capacity)."""
    for metric in ("max_sustained_rate", "request_throughput"):
        bound = slos.bounds.get(metric)
        if bound is not None and bound.min is not None:
            return bound.min
    return None


def judge_point(phase: PhaseResult, rate: float, slos: SloSet, self_check: SelfCheck) -> SweepPoint:
    """One sweep point from its phase: passed when valid, not saturated and every bound of ``slos`` (already
    cut to ``point_bounds``) held; a bound not measured is not a pass.

    An invalid window is the server's failure only when the server caused it (no request completed, token
    counts it did not honour); invalid for another reason (the client could not keep the rate, the GPU's
    clocks were throttled, prompts hit a warm cache) it says nothing about the server, so it is neither a
    pass nor a failure (``SweepPoint.unjudged``), whatever its latencies."""
    m = phase.metrics
    client = (m.get("achieved_rate_ratio", 1.0) < self_check.min_achieved_rate_ratio
              or m.get("p99_send_lag_ms", 0.0) > self_check.max_p99_send_lag_ms)
    server_broke = not m.get("completed") or bool(m.get("token_count_mismatches"))
    failures = list(phase.invalid_reasons)
    for row in slos.evaluate(phase).rows:
        if row.status == FAIL:
            failures.append(f"{row.metric} {rate_text(row.measured) if row.measured is not None else '-'} "
                            f"breaks {row.bound}")
        elif row.status == SKIP:
            failures.append(f"{row.metric} not measured ({row.note})")
    if phase.saturated:
        failures.append("saturated: " + "; ".join(phase.saturation_reasons))
    unjudged = not phase.valid and not server_broke
    return SweepPoint(rate, phase.valid and not failures, failures, saturated=bool(phase.saturated),
                      client_limited=client and not phase.valid, unjudged=unjudged, result=phase)


@dataclass
class CapacityVerdict:
    key: str
    status: str
    current: Bracket
    baseline: Bracket | None = None
    min_effect: float = 0.10
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sweeps: list[SweepRecord] = field(default_factory=list)  # this run's (one, or one per session when recording)
    smoke: bool = False
    require_baseline: bool = False
    changes: list[str] | None = None  # what changed since the baseline; None without one
    workload: str = ""
    slo_max: dict[str, float] = field(default_factory=dict)  # the point bounds, for the plot
    slo_provisional: bool = False
    floor: float | None = None  # the SLO set's minimum capacity, if it sets one
    probes: int = 0  # points added to decide an INCONCLUSIVE verdict
    fingerprint: dict[str, Any] = field(default_factory=dict)  # this run's environment and scenario digest

    @property
    def factor(self) -> float:
        return 1.0 / (1.0 + self.min_effect)

    @property
    def pass_at(self) -> float | None:
        """The lowest current lower end that PASSes (None: none can, the baseline's bracket is open)."""
        if self.baseline is None or self.baseline.upper is None:
            return None
        return self.baseline.upper * self.factor

    @property
    def regress_at(self) -> float | None:
        """The highest current upper end that is REGRESSED."""
        if self.baseline is None or self.baseline.lower is None:
            return None
        return self.baseline.lower * self.factor

    @property
    def floor_met(self) -> bool:
        return self.floor is None or (self.current.lower is not None and self.current.lower >= self.floor)

    @property
    def passed(self) -> bool:
        """PASS, or NEW unless baselines are required, or INCONCLUSIVE on a smoke gate; and the floor met."""
        gate = (self.status == PASS or (self.status == NEW and not self.require_baseline)
                or (self.smoke and self.status == INCONCLUSIVE))
        return gate and self.floor_met

    def change(self) -> tuple[float, float] | None:
        """The relative change of the capacity, least and most favourable reading (None without both ends)."""
        if self.baseline is None or self.baseline.upper is None or not self.baseline.lower:
            return None
        high = self.current.high
        return self.current.low / self.baseline.upper - 1, (high / self.baseline.lower - 1) if math.isfinite(
            high) else math.inf

    def headline(self) -> str:
        label = self.status.upper() + (" (smoke gate)" if self.smoke else "")
        base = f" vs baseline {self.baseline.text()}" if self.baseline is not None else ""
        floor = "" if self.floor_met else f"; below the SLO's capacity floor {rate_text(self.floor or 0)} req/s"
        return f"capacity {self.key}: {label} — max_sustained_rate in {self.current.text()}{base}{floor}"


def judge_capacity(key: str, sweeps: Sequence[SweepRecord], baseline: CapacityBaseline | None, *,
                   min_effect: float, fingerprint: dict[str, Any], method_version: int, smoke: bool = False,
                   require_baseline: bool = False, allow_incomparable: bool = False, **extra: Any) -> CapacityVerdict:
    """The gate on this run's bracket (the envelope of ``sweeps``) against ``baseline``'s (module docstring)."""
    current = envelope(sweeps)
    verdict = CapacityVerdict(key, INCONCLUSIVE, current, min_effect=min_effect, sweeps=list(sweeps), smoke=smoke,
                              require_baseline=require_baseline, fingerprint=dict(fingerprint), **extra)
    if current.lower is None and current.upper is None:
        verdict.status = INVALID
        verdict.reasons = [("no point passed and none failed on the server's account (the client could not keep "
                            "the first rate): the sweep says nothing about the server")]
        return verdict
    if baseline is None:
        verdict.status = NEW
        verdict.reasons = ["no capacity baseline: record one with --perfgate-update-baselines"
                           + (" (required: --perfgate-require-baselines)" if require_baseline else "")]
        return verdict
    verdict.baseline = baseline.bracket
    verdict.changes = [str(c) for c in changes(baseline.environment, fingerprint)]
    identity = check_identity(baseline.environment, fingerprint, old_method=baseline.method_version,
                              new_method=method_version)
    if identity.problems and not allow_incomparable:
        verdict.status = INCOMPARABLE
        verdict.reasons = [*identity.problems, ("re-record the capacity baseline on this environment, or allow "
                           "the comparison (--perfgate-allow-incomparable)")]
        return verdict
    if identity.problems:
        verdict.notes.append("compared although the environment differs (allowed): " + "; ".join(identity.problems))
    pass_at, regress_at = verdict.pass_at, verdict.regress_at
    m = f"{min_effect:.0%}"
    if regress_at is not None and current.high <= regress_at:
        verdict.status = REGRESSED
        verdict.reasons = [(f"{rate_text(current.high)} req/s failed today, at or below the baseline's "
                           f"sustained {rate_text(verdict.baseline.low)} req/s / (1 + {m}) = "
                           f"{rate_text(regress_at)}: the capacity fell by more than {m}")]
    elif pass_at is not None and current.low >= pass_at:
        verdict.status = PASS
        verdict.reasons = [(f"{rate_text(current.low)} req/s held today, at or above the baseline's failing "
                           f"{rate_text(verdict.baseline.upper or 0)} req/s / (1 + {m}) = {rate_text(pass_at)}: "
                           f"the capacity fell by at most {m}")]
    else:
        verdict.reasons = [_undecided(verdict)]
    return verdict


def _undecided(v: CapacityVerdict) -> str:
    if v.pass_at is None:
        return ("the baseline's bracket is open above (no rate failed when it was recorded), so no run can show "
                "it is within the minimum effect: raise [sweep] max_rate and re-record the baseline")
    low, high = v.regress_at or 0.0, v.pass_at
    if v.current.low >= low and v.current.high <= high:
        return (f"the capacity lies in [{rate_text(low)}, {rate_text(high)}), between the REGRESSED and PASS "
                "thresholds: only a baseline with a narrower bracket can decide (re-record it with a finer "
                "[sweep] resolution)")
    return (f"the bracket {v.current.text()} straddles a threshold (PASS needs its lower end >= "
            f"{rate_text(high)}, REGRESSED its upper end <= {rate_text(low)})")


def next_probe(verdict: CapacityVerdict) -> float | None:
    """Where one more point can decide an INCONCLUSIVE verdict: the PASS threshold if it lies inside today's
    bracket (a pass there is PASS), else the REGRESSED threshold (a failure there is REGRESSED); None when
    neither does (no point of today can decide)."""
    if verdict.status != INCONCLUSIVE:
        return None
    low, high = verdict.current.low, verdict.current.high
    for threshold in (verdict.pass_at, verdict.regress_at):
        if threshold is not None and low < threshold < high:
            return threshold
    return None
