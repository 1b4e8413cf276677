"""SLO verdicts: every bound of an SLO set (``perfgate.verdict.slo_files`` reads them) judged in every repeat.

Every repeat is judged: ``SloSet.evaluate`` takes all repeats of one phase key, and a bound holds only if it
holds in each repeat. A row shows the worst repeat's value as ``measured``, every repeat's value in
``per_repeat``, and a failing row's note names the repeat(s) it failed in ("fails in repeat 2 of 3"). A bound
whose metric is missing in some repeat (and fails in none) is a skip with the reason, never a pass; a GPU
metric (``MetricSpec.needs_gpu``) missing on a GPU run fails with the reason (the runner's telemetry broke),
and on the CPU class it is "n/a".

Throughput bounds (kind ``throughput`` in the catalog: ``request_throughput``, ``output_throughput``,
``total_token_throughput``, ``request_goodput``) mean a rate SUSTAINED while the latency and error SLOs hold,
and judge the MEASURED completion rate, never the configured one:

- with a sweep, ``request_throughput`` is judged on ``max_sustained_rate``;
- otherwise it is "not sustained" (FAIL) when the run is invalid, a latency/error SLO failed in that repeat,
  or, open loop, the client sent < 95 % of the offered rate or the server saturated;
- open loop (the phase has ``offered_rate``): a scenario that offers less than ``min`` fails ("cannot show
  that rate"); else the row passes when measured >= min x (1 - tolerance), tolerance 0.10 unless the bound
  sets one. Why a tolerance: completions / duration counts the drain after the last send, so a server that
  keeps up still measures a little under the offered rate (H100 chat: offered 6, measured 5.75 req/s). The
  margin is against that tolerated floor. Token rates are offered at offered_rate x tokens per completed
  request;
- closed loop: measured >= min, no tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from perfgate.core.catalog import METRICS
from perfgate.core.fmt import format_value
from perfgate.core.hardware import CPU_CLASS
from perfgate.core.phase import PhaseResult

PASS, FAIL, SKIP = "pass", "fail", "skip"
MIN_ACHIEVED_RATIO = 0.95
DEFAULT_RATE_TOLERANCE = 0.10
_RANK = {FAIL: 0, SKIP: 1, PASS: 2}


def is_rate_bound(metric: str) -> bool:
    """A bound judged as a sustained rate (not ``max_sustained_rate`` itself: that one is a plain bound)."""
    return METRICS[metric].kind == "throughput" and metric != "max_sustained_rate"


def _is_quality(metric: str) -> bool:
    return METRICS[metric].kind in ("latency", "error")


@dataclass(frozen=True)
class ResolvedBound:
    metric: str
    min: float | None
    max: float | None
    note: str
    written: str  # the bound as written, e.g. "<= 20 GB"
    source: str  # "slos/a10g.toml [*/chat]"
    tolerance: float | None = None  # open-loop throughput only; None = DEFAULT_RATE_TOLERANCE

    def text(self) -> str:
        return self.written


@dataclass
class SloRow:
    metric: str
    bound: str
    measured: float | None  # the worst repeat's value
    margin: float | None  # relative headroom: +0.05 = 5 % inside the bound, negative = outside
    status: Literal["pass", "fail", "skip"]
    note: str = ""
    per_repeat: list[float | None] = field(default_factory=list)  # every repeat's value, in order
    failing_repeats: list[int] = field(default_factory=list)  # 1-based positions of the repeats it failed in

    def per_repeat_text(self) -> str:
        """``1,180 / 1,310 / 1,150 ms``: every repeat's value, the unit once."""
        unit = METRICS[self.metric].unit
        parts = [format_value(v, unit) for v in self.per_repeat]
        suffix = f" {unit}"
        if unit and all(p.endswith(suffix) or p == "-" for p in parts):
            return " / ".join(p.removesuffix(suffix) for p in parts) + suffix
        return " / ".join(parts)


def rule_text(repeats: int) -> str:
    if repeats == 1:
        return "every repeat: a bound holds only if it holds in each repeat (1 repeat judged)"
    return f"every repeat: a bound holds only if it holds in each of the {repeats} repeats"


@dataclass
class SloVerdict:
    key: str
    rows: list[SloRow]
    files: list[str]
    provisional: bool = False
    results_dir: str | None = None  # set by the caller so a failure names the raw results
    repeats: int = 1
    rule: str = ""  # how the repeats were combined; set from ``repeats`` when empty

    def __post_init__(self) -> None:
        self.rule = self.rule or rule_text(self.repeats)

    @property
    def passed(self) -> bool:
        """True when no row failed (skipped rows are listed, never counted as passes)."""
        return not self.failed

    @property
    def failed(self) -> list[SloRow]:
        return [r for r in self.rows if r.status == FAIL]

    @property
    def skipped(self) -> list[SloRow]:
        return [r for r in self.rows if r.status == SKIP]

    def headline(self) -> str:
        """One line for the terminal summary: the verdict, what failed, and PROVISIONAL when it is."""
        counts = [f"{len(self.failed)} of {len(self.rows)} failed"] if self.failed else []
        if self.skipped:
            counts.append(f"{len(self.skipped)} skipped")
        if self.provisional:
            counts.append("PROVISIONAL bounds, not yet reviewed")
        return f"SLOs {self.key}: {'PASS' if self.passed else 'FAIL'}" + (f" ({', '.join(counts)})" if counts else "")


@dataclass
class SloSet:
    gpu_class: str
    profile: str
    scenario: str
    bounds: dict[str, ResolvedBound]
    files: list[str] = field(default_factory=list)
    provisional: bool = False

    @property
    def key(self) -> str:
        return f"{self.gpu_class}/{self.profile}/{self.scenario}"

    def evaluate(self, phases: Sequence[PhaseResult] | PhaseResult,
                 results_dir: str | Path | None = None) -> SloVerdict:
        """Judge every bound in every repeat of one phase key; a bound holds only if it holds in each."""
        runs = [phases] if isinstance(phases, PhaseResult) else list(phases)
        if not runs:
            raise ValueError(f"SLOs {self.key}: no repeats to judge")
        keys = sorted({p.key for p in runs})
        if len(keys) > 1:
            raise ValueError(f"SLOs {self.key}: repeats of one phase key expected, got {', '.join(keys)}")
        per_repeat = [self._evaluate_one(p) for p in runs]
        rows = [_combine(self.bounds[m], [rows[m] for rows in per_repeat]) for m in per_repeat[0]]
        return SloVerdict(self.key, rows, self.files, self.provisional,
                          str(results_dir) if results_dir is not None else None, repeats=len(runs))

    def _evaluate_one(self, phase: PhaseResult) -> dict[str, SloRow]:
        """One repeat: quality (latency/error) and other rows first, then the rates, which depend on them."""
        rows = {m: _check(b, _measured(phase, m), phase) for m, b in self.bounds.items() if not is_rate_bound(m)}
        quality = [r for r in rows.values() if _is_quality(r.metric)]
        rows.update({m: _check_rate(b, phase, quality) for m, b in self.bounds.items() if is_rate_bound(m)})
        return rows


def _badness(bound: ResolvedBound, row: SloRow) -> tuple:
    """Sort key, worst first: failed, then least margin; against a bound of 0 (no margin), the value."""
    value = row.measured if row.measured is not None else 0.0
    directional = -value if bound.max is not None else value
    return (_RANK[row.status], row.margin if row.margin is not None else 0.0, directional)


def _repeats(positions: list[int], n: int) -> str:
    if len(positions) == 1:
        return f"repeat {positions[0]} of {n}"
    return f"repeats {', '.join(map(str, positions[:-1]))} and {positions[-1]} of {n}"


def _combine(bound: ResolvedBound, rows: list[SloRow]) -> SloRow:
    """One row from a bound's per-repeat rows: FAIL if any repeat failed, else SKIP if any could not be
    judged, else PASS; ``measured`` is the worst judged repeat's value."""
    n = len(rows)
    values = [r.measured for r in rows]
    failing = [i for i, r in enumerate(rows, 1) if r.status == FAIL]
    missing = [i for i, r in enumerate(rows, 1) if r.status == SKIP]
    judged = [r for r in rows if r.status != SKIP]
    worst = min(judged, key=lambda r: _badness(bound, r)) if judged else rows[0]
    if failing:
        status, note = FAIL, worst.note
        if n > 1:
            note = f"fails in {_repeats(failing, n)}" + (f": {note}" if note else "")
    elif missing:
        status = SKIP
        reasons = "; ".join(dict.fromkeys(rows[i - 1].note for i in missing))
        note = reasons if n == 1 else f"not measured in {_repeats(missing, n)}: {reasons}"
    else:
        status, note = PASS, worst.note
    measured = worst.measured if judged else None
    margin = worst.margin if judged else None
    return SloRow(bound.metric, bound.text(), measured, margin, status, note, values, failing)


def _measured(phase: PhaseResult, metric: str) -> float | None:
    value = phase.metrics.get(metric)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _margin(bound: ResolvedBound, value: float) -> float | None:
    """Relative headroom to the nearer bound; None against a bound of 0 (no relative scale)."""
    margins = []
    if bound.max is not None:
        margins.append((bound.max - value) / abs(bound.max) if bound.max else None)
    if bound.min is not None:
        margins.append((value - bound.min) / abs(bound.min) if bound.min else None)
    known = [m for m in margins if m is not None]
    return min(known) + 0.0 if known else None


def _inside(bound: ResolvedBound, value: float) -> bool:
    return (bound.max is None or value <= bound.max) and (bound.min is None or value >= bound.min)


def _check(bound: ResolvedBound, value: float | None, phase: PhaseResult, note: str = "") -> SloRow:
    if value is None:
        spec = METRICS[bound.metric]
        reason = phase.unavailable.get(spec.source)
        why = f"{spec.source} unavailable: {reason}" if reason else "not measured in this phase"
        if spec.needs_gpu and phase.gpu_class != CPU_CLASS:  # the runner's GPU telemetry failed: not a pass
            return SloRow(bound.metric, bound.text(), None, None, FAIL,
                          f"GPU metric missing on a {phase.gpu_class} run ({why}); fix the runner's NVML/driver",
                          [None])
        if spec.needs_gpu:
            why = f"n/a on the {CPU_CLASS} class (no GPU)"
        return SloRow(bound.metric, bound.text(), None, None, SKIP, why, [None])
    status = PASS if _inside(bound, value) else FAIL
    return SloRow(bound.metric, bound.text(), value, _margin(bound, value), status, note or bound.note, [value])


def _fmt(value: float, metric: str) -> str:
    return format_value(value, METRICS[metric].unit)


def _offered(phase: PhaseResult, metric: str) -> float | None:
    """The rate the scenario offered, in the bound's unit (tokens: offered req/s x tokens per completion)."""
    rate = _measured(phase, "offered_rate")
    if rate is None or METRICS[metric].unit == "req/s":
        return rate
    completed = _measured(phase, "completed")
    tokens = {"output_throughput": ("total_output_tokens",),
              "total_token_throughput": ("total_input_tokens", "total_output_tokens")}.get(metric)
    counts = [_measured(phase, k) for k in tokens or ()]
    if not completed or not counts or any(c is None for c in counts):
        return None
    return rate * sum(counts) / completed  # type: ignore[arg-type]


def _blockers(phase: PhaseResult, quality: list[SloRow]) -> list[str]:
    """Why this repeat's rate does not count as sustained (empty: it does)."""
    blockers = []
    if not phase.valid:
        blockers.append("run invalid (" + "; ".join(phase.invalid_reasons or ["client fell behind"]) + ")")
    failed = [r.metric for r in quality if r.status == FAIL]
    if failed:
        blockers.append("latency/error SLOs failed: " + ", ".join(failed))
    offered = _measured(phase, "offered_rate")
    ratio = _measured(phase, "achieved_rate_ratio")
    if ratio is None and offered and (achieved := _measured(phase, "achieved_rate")) is not None:
        ratio = achieved / offered
    if offered and ratio is not None and ratio < MIN_ACHIEVED_RATIO:
        blockers.append(f"client sent {ratio:.0%} of the offered {offered:g} req/s (needs >= 95%)")
    if offered and phase.saturated:
        blockers.append("server saturated (" + "; ".join(phase.saturation_reasons or ["queue grew"]) + ")")
    return blockers


def _check_rate(bound: ResolvedBound, phase: PhaseResult, quality: list[SloRow]) -> SloRow:
    """A throughput bound in one repeat: the MEASURED rate, counted only where it was sustained."""
    metric = bound.metric
    if metric == "request_throughput" and (swept := _measured(phase, "max_sustained_rate")) is not None:
        return _check(bound, swept, phase, "max_sustained_rate from the sweep (highest rate whose latency SLOs held)")
    value = _measured(phase, metric)
    open_loop = _measured(phase, "offered_rate") is not None
    offered = _offered(phase, metric)
    tolerance = DEFAULT_RATE_TOLERANCE if bound.tolerance is None else bound.tolerance
    judged = replace(bound, min=bound.min * (1 - tolerance)) if open_loop and bound.min is not None else bound
    cannot_show = open_loop and offered is not None and bound.min is not None and offered < bound.min
    blockers = _blockers(phase, quality)
    if cannot_show or blockers:
        why = []
        if cannot_show:
            why.append(f"the scenario offers {_fmt(offered, metric)}: it cannot show >= "  # type: ignore[arg-type]
                       f"{_fmt(bound.min, metric)}; raise its rate to at least the bound")  # type: ignore[arg-type]
        why += ["not sustained: " + "; ".join(blockers)] if blockers else []
        row = _check(judged, value, phase)
        if cannot_show or row.status != SKIP:
            row.status, row.note = FAIL, "; ".join(why)
        return row
    untied = "" if quality else " (no latency SLO in this set to tie it to)"
    met = f"latency SLOs met{untied}" if quality else untied.strip()
    if not open_loop:
        return _check(bound, value, phase, "closed loop: measured rate" + (f", {met}" if met else ""))
    seen = f"measured {_fmt(value, metric)}" if value is not None else "measured rate missing"
    if offered and value is not None:
        seen = f"offered {_fmt(offered, metric)}, {seen} ({value / offered:.0%} of offered)"
    if judged.min is not None:
        seen += f"; passes at >= {_fmt(judged.min, metric)} (min - {tolerance:.0%} tolerance)"
    return _check(judged, value, phase, f"open loop: {seen}" + (f", {met}" if met else ""))
