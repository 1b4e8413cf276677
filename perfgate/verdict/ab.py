"""A/B of two launch profiles on one scenario: each metric's change with its confidence interval and a verdict.

The seed write-up claimed +50 % throughput from its flags; an A/B confirms or refutes such a claim on the
user's hardware. Repeats of A and B are compared with the same statistics as the baseline gate
(Welch intervals on the log ratio, multiplicity-corrected), direction-aware: "better" means better for the
metric (lower latency, higher throughput). When the GPU holds one server at a time, run them interleaved
(A B A B ...) so slow drifts (thermals, a noisy neighbour) hit both; ``paired=True`` then compares
repeat i of A with repeat i of B (in start order), which removes a drift shared by the pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from perfgate.core.catalog import METRICS
from perfgate.core.phase import PhaseResult
from perfgate.core.stats import Correction, adjust_pvalues, mean_sd, t_quantile, t_two_sided_p
from perfgate.core.stats import mean as _mean
from perfgate.verdict.gate import values as _values

BETTER, WORSE, SAME = "better", "worse", "no significant difference"
# Metrics an A/B reports by default: what serving is judged on (not the client's self-check).
DEFAULT_METRICS = tuple(k for k, s in METRICS.items() if s.better != "none" and s.source != "client"
                        and not k.startswith("errors_")) + ("max_sustained_rate",)


@dataclass(frozen=True)
class Change:
    """Relative change of the mean, ``b/a - 1``, with its two-sided confidence interval and p-value."""

    relative: float  # +0.10 = B is 10 % higher
    ci_low: float
    ci_high: float
    p_value: float
    method: str  # "welch" | "paired" | "exact" | "absolute" | "no-noise"
    noise: float | None  # pooled coefficient of variation of one repeat, if known


def relative_change(base: Sequence[float], cur: Sequence[float], confidence: float = 0.95) -> Change:
    """Welch interval for log(mean_cur / mean_base) by the delta method, as a relative change.

    An A/B asks "which is better, and by how much": two-sided, no margin (the gate asks another question,
    see perfgate.verdict.gate). Zero means fall back to an absolute Welch test.
    """
    (mb, sb), (mc, sc) = mean_sd(base), mean_sd(cur)
    nb, nc = len(base), len(cur)
    if mb <= 0 or mc <= 0:
        return _absolute_change(base, cur, confidence)
    rel = mc / mb - 1.0
    if nb < 2 or nc < 2:
        return Change(rel, rel, rel, 1.0, "no-noise", None)
    vb, vc = (sb / mb) ** 2 / nb, (sc / mc) ** 2 / nc
    se = math.sqrt(vb + vc)
    if se == 0.0:
        return Change(rel, rel, rel, 0.0 if rel else 1.0, "exact", 0.0)
    df = (vb + vc) ** 2 / (vb * vb / (nb - 1) + vc * vc / (nc - 1))
    ratio = math.log(mc / mb)
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    noise = math.sqrt(((sb / mb) ** 2 + (sc / mc) ** 2) / 2.0)
    return Change(rel, math.exp(ratio - half) - 1.0, math.exp(ratio + half) - 1.0,
                  t_two_sided_p(ratio / se, df), "welch", noise)


def _absolute_change(base: Sequence[float], cur: Sequence[float], confidence: float) -> Change:
    (mb, sb), (mc, sc) = mean_sd(base), mean_sd(cur)
    nb, nc = len(base), len(cur)
    diff = mc - mb
    scale = mb if mb else 1.0  # from zero the "relative" change is reported per unit of the metric
    rel = diff / mb if mb else (math.inf if diff > 0 else (0.0 if diff == 0 else -math.inf))
    se2 = (sb * sb / nb if nb > 1 else 0.0) + (sc * sc / nc if nc > 1 else 0.0)
    if se2 == 0.0:
        return Change(rel, rel, rel, 0.0 if diff else 1.0, "exact", None)
    se, df = math.sqrt(se2), max(nb + nc - 2, 1)
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return Change(rel, (diff - half) / scale, (diff + half) / scale, t_two_sided_p(diff / se, df), "absolute", None)


@dataclass
class AbRow:
    metric: str
    a: float | None
    b: float | None
    change: Change | None  # B relative to A
    p_adjusted: float | None
    verdict: str
    note: str = ""


@dataclass
class AbVerdict:
    scenario: str
    a_name: str
    b_name: str
    rows: list[AbRow]
    n_a: int
    n_b: int
    paired: bool = False
    notes: list[str] = field(default_factory=list)
    alpha: float = 0.05

    def row(self, metric: str) -> AbRow:
        return next(r for r in self.rows if r.metric == metric)

    @property
    def better(self) -> list[str]:
        return [r.metric for r in self.rows if r.verdict == BETTER]

    @property
    def worse(self) -> list[str]:
        return [r.metric for r in self.rows if r.verdict == WORSE]


def _paired_change(a: Sequence[float], b: Sequence[float], confidence: float) -> Change:
    """t interval on the mean of per-pair log ratios log(b_i / a_i)."""
    logs = [math.log(y / x) for x, y in zip(a, b)]
    n = len(logs)
    mean = sum(logs) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / (n - 1))
    rel = math.exp(mean) - 1.0
    if sd == 0.0:
        return Change(rel, rel, rel, 0.0 if mean else 1.0, "exact", 0.0)
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * se
    return Change(rel, math.exp(mean - half) - 1.0, math.exp(mean + half) - 1.0,
                  t_two_sided_p(mean / se, n - 1), "paired", sd / math.sqrt(2))


def ab_compare(a: list[PhaseResult], b: list[PhaseResult], *, metrics: Sequence[str] | None = None,
               alpha: float = 0.05, correction: Correction = "bh", min_effect: float = 0.0,
               paired: bool = False) -> AbVerdict:
    """Compare B's repeats against A's, metric by metric (change = B/A - 1, verdict for B).

    ``min_effect`` (0 by default: an A/B reports any clear difference) is the smallest relative change
    called better/worse. ``paired`` needs equal numbers of repeats, sorted by ``started_at``.
    """
    if not a or not b:
        raise ValueError(f"ab_compare needs repeats on both sides (got {len(a)} x A, {len(b)} x B)")
    scenarios = {p.scenario for p in (*a, *b)}
    if len(scenarios) > 1:
        raise ValueError(f"A/B compares one scenario; got {sorted(scenarios)}")
    notes = []
    if {p.gpu_class for p in a} != {p.gpu_class for p in b}:
        notes.append(f"GPU classes differ: A on {sorted({p.gpu_class for p in a})}, "
                     f"B on {sorted({p.gpu_class for p in b})}")
    for side, phases in (("A", a), ("B", b)):
        bad = [p.repeat for p in phases if not p.valid]
        if bad:
            notes.append(f"{side} has invalid repeat(s) {bad}: their figures describe the client; left out")
    a_ok = sorted((p for p in a if p.valid), key=lambda p: p.started_at)
    b_ok = sorted((p for p in b if p.valid), key=lambda p: p.started_at)
    if paired and len(a_ok) != len(b_ok):
        raise ValueError(f"paired A/B needs as many valid repeats of A as of B ({len(a_ok)} vs {len(b_ok)})")
    wanted = metrics if metrics is not None else DEFAULT_METRICS
    rows: list[AbRow] = []
    tested: list[AbRow] = []
    for m in wanted:
        if m not in METRICS:
            raise KeyError(f"unknown metric '{m}' (list them with `perfgate metrics`)")
        va, vb = _values(a_ok, m), _values(b_ok, m)
        if not va or not vb:
            continue
        if paired and len(va) == len(vb) >= 2 and all(x > 0 for x in va + vb):
            change = _paired_change(va, vb, 1.0 - alpha)
        else:
            change = relative_change(va, vb, 1.0 - alpha)
        row = AbRow(m, _mean(va), _mean(vb), change, None, SAME)
        rows.append(row)
        if METRICS[m].better != "none":
            tested.append(row)
    for row, p_adj in zip(tested, adjust_pvalues([r.change.p_value for r in tested], correction)):
        row.p_adjusted = p_adj
        c = row.change
        if c.method == "no-noise":
            row.note = "one repeat each: no noise estimate, no verdict"
        elif p_adj < alpha and abs(c.relative) >= min_effect:
            higher = c.relative > 0
            row.verdict = BETTER if higher == (METRICS[row.metric].better == "higher") else WORSE
    if len(a_ok) < 3 or len(b_ok) < 3:
        notes.append("fewer than 3 repeats per side: intervals are wide; run more repeats to resolve small changes")
    return AbVerdict(a[0].scenario, a[0].profile, b[0].profile, rows, len(a_ok), len(b_ok), paired, notes, alpha)
