"""The baseline gate: noise-aware, direction-aware comparison of a run's repeats with a baseline's.

Serving figures are noisy (identical runs differ by 10-20 % at low load), so a fixed "fail above 5 %" either
cries wolf or misses real losses. Per metric the gate estimates the relative change of the mean with a Welch
confidence interval on the log scale (the noise is learned from the repeats; with a single current repeat
the baseline's repeats supply it), then calls a change only when BOTH hold:

* it is statistically clear after correcting for the number of metrics tested (Benjamini-Hochberg by
  default; Holm on request), and
* its size is at least the metric's minimum effect (default 5 %).

False alarms: when nothing changed, BH's false-discovery rate equals the probability that a run reports any
change, so ``alpha`` (default 5 %) bounds the rate at which an unchanged server fails the gate; the minimum
effect pushes it further down. When a real slowdown moves several metrics, BH keeps more power than Holm.

A metric with no baseline is "new": reported, never counted as a pass, and it does not fail the test (the
lead's fixture marks such tests so a missing baseline is visible). A baseline from another GPU or vLLM
version is "incomparable" and fails unless explicitly allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from perfgate.baseline import Baseline, comparability_problems
from perfgate.catalog import METRICS
from perfgate.phase import PhaseResult

Correction = Literal["bh", "holm", "none"]
REGRESSED, IMPROVED, NO_CHANGE = "regressed", "improved", "no significant change"
NEW, INCOMPARABLE, SKIPPED = "new", "incomparable", "skipped"


# ---------------------------------------------------------------- Student t (no scipy in the venv)
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (Numerical Recipes, Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
            last = d * c
        if abs(last - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile (0.5 < q < 1) of Student's t, by bisection on the CDF."""
    lo, hi = 0.0, 1e3
    target = 2.0 * (1.0 - q)  # two-sided tail mass at the quantile
    for _ in range(52):  # 1e3 / 2**52: far below any precision that matters here
        mid = (lo + hi) / 2.0
        if t_two_sided_p(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


# ---------------------------------------------------------------- one metric's change
@dataclass(frozen=True)
class Change:
    """Relative change of the mean, ``current/baseline - 1``, with its confidence interval and p-value."""

    relative: float  # +0.10 = current is 10 % higher
    ci_low: float
    ci_high: float
    p_value: float
    method: str  # "welch" | "baseline-noise" | "exact" | "absolute" | "no-noise"
    noise: float | None  # pooled coefficient of variation of one repeat, if known


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, sd


def relative_change(base: Sequence[float], cur: Sequence[float], confidence: float = 0.95) -> Change:
    """Welch interval for log(mean_cur / mean_base) by the delta method, turned into a relative change.

    With one current repeat the baseline's coefficient of variation stands in for the current's (same
    environment, same noise). Zero means (error counts) fall back to an absolute Welch test.
    """
    if not base or not cur:
        raise ValueError("relative_change needs at least one value on each side")
    (mb, sb), (mc, sc) = _mean_sd(base), _mean_sd(cur)
    nb, nc = len(base), len(cur)
    if mb <= 0 or mc <= 0:
        return _absolute_change(base, cur, confidence)
    cvb, cvc = sb / mb, sc / mc
    method = "welch"
    if nc < 2 and nb >= 2:
        cvc, method = cvb, "baseline-noise"
    elif nb < 2 and nc >= 2:
        cvb, method = cvc, "baseline-noise"
    ratio = math.log(mc / mb)
    rel = math.exp(ratio) - 1.0
    if nb < 2 and nc < 2:
        return Change(rel, rel, rel, 1.0, "no-noise", None)
    vb, vc = cvb * cvb / nb, cvc * cvc / nc
    se = math.sqrt(vb + vc)
    noise = math.sqrt((cvb * cvb + cvc * cvc) / 2.0)
    if se == 0.0:  # deterministic figures (a request count): any difference is real
        return Change(rel, rel, rel, 0.0 if ratio else 1.0, "exact", 0.0)
    if method == "welch":
        df = (vb + vc) ** 2 / (vb * vb / (nb - 1) + vc * vc / (nc - 1))
    else:
        df = max(nb, nc) - 1.0
    t = ratio / se
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return Change(rel, math.exp(ratio - half) - 1.0, math.exp(ratio + half) - 1.0,
                  t_two_sided_p(t, df), method, noise)


def _absolute_change(base: Sequence[float], cur: Sequence[float], confidence: float) -> Change:
    (mb, sb), (mc, sc) = _mean_sd(base), _mean_sd(cur)
    nb, nc = len(base), len(cur)
    diff = mc - mb
    scale = mb if mb else 1.0  # from zero the "relative" change is reported per unit of the metric
    rel = diff / mb if mb else (math.inf if diff > 0 else (0.0 if diff == 0 else -math.inf))
    se2 = (sb * sb / nb if nb > 1 else 0.0) + (sc * sc / nc if nc > 1 else 0.0)
    if se2 == 0.0:
        return Change(rel, rel, rel, 0.0 if diff else 1.0, "exact", None)
    se, df = math.sqrt(se2), max(nb + nc - 2, 1)
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    lo, hi = (diff - half) / scale, (diff + half) / scale
    return Change(rel, lo, hi, t_two_sided_p(diff / se, df), "absolute", None)


def adjust_pvalues(p_values: Sequence[float], method: Correction = "bh") -> list[float]:
    """Multiplicity-adjusted p-values (Benjamini-Hochberg step-up, Holm step-down, or unchanged)."""
    m = len(p_values)
    if method == "none" or m == 0:
        return list(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    if method == "holm":
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p_values[i]))
            adjusted[i] = running
        return adjusted
    if method != "bh":
        raise ValueError(f"unknown correction {method!r}; use 'bh', 'holm' or 'none'")
    running = 1.0
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        running = min(running, p_values[i] * m / (rank + 1))
        adjusted[i] = running
    return adjusted


def smallest_detectable_change(noise: float, n_base: int, n_current: int | None = None, *, metrics: int = 1,
                               alpha: float = 0.05, power: float = 0.8, min_effect: float = 0.05) -> float:
    """The smallest relative regression the gate flags with probability ``power``.

    ``noise`` is one repeat's coefficient of variation (0.12 = 12 %). Conservatively assumes the regression
    moves one metric alone among ``metrics`` tested (BH then needs p < alpha/metrics, as Bonferroni); a
    slowdown that moves several metrics together is caught at smaller sizes. Never below ``min_effect``.
    """
    n_current = n_current or n_base
    if n_base < 2 and n_current < 2:
        return math.inf
    df = max(n_base, n_current) - 1.0 if min(n_base, n_current) < 2 else n_base + n_current - 2.0
    se = noise * math.sqrt(1.0 / n_base + 1.0 / n_current)
    delta = (t_quantile(1.0 - alpha / metrics / 2.0, df) + t_quantile(power, df)) * se
    return max(min_effect, math.exp(delta) - 1.0)


# ---------------------------------------------------------------- the gate over a run
@dataclass
class GateConfig:
    alpha: float = 0.05
    correction: Correction = "bh"
    min_effect: float = 0.05
    # Per-metric overrides of the minimum relative effect, e.g. {"p99_e2el_ms": 0.10}.
    min_effect_by_metric: dict[str, float] = field(default_factory=dict)
    # Absolute floors for metrics that sit at zero (error counts): from 0 to 1 failed request is no regression.
    min_abs_effect: dict[str, float] = field(default_factory=lambda: {
        "failed": 2.0, "error_rate": 0.005, "errors_connect": 2.0, "errors_timeout": 2.0,
        "errors_http_4xx": 2.0, "errors_http_5xx": 2.0, "errors_stream": 2.0, "token_count_mismatches": 2.0,
        "preemptions": 5.0, "waiting_queue_mean": 1.0, "waiting_queue_peak": 2.0})
    # With no noise estimate at all (one repeat on each side) only a change this large is called.
    no_noise_threshold: float = 0.20
    # Metrics to leave out; by default the client's self-check figures (they describe the client).
    exclude: set[str] = field(default_factory=lambda: {
        k for k, s in METRICS.items() if s.source == "client" and k != "max_sustained_rate"})
    allow_incomparable: bool = False

    def effect_for(self, metric: str) -> float:
        return self.min_effect_by_metric.get(metric, self.min_effect)


@dataclass
class MetricVerdict:
    metric: str
    verdict: str
    baseline: float | None = None  # mean of the baseline's repeats
    current: float | None = None  # mean of the current repeats
    change: Change | None = None
    p_adjusted: float | None = None
    note: str = ""


@dataclass
class GateVerdict:
    key: str
    rows: list[MetricVerdict]
    # "pass" | "fail" | "new" | "incomparable" | "invalid"
    status: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config: GateConfig = field(default_factory=GateConfig)

    @property
    def passed(self) -> bool:
        """False on a regression, an invalid run, or an incomparable baseline not explicitly allowed."""
        return self.status in ("pass", "new")

    def by_verdict(self, verdict: str) -> list[MetricVerdict]:
        return [r for r in self.rows if r.verdict == verdict]

    @property
    def regressions(self) -> list[MetricVerdict]:
        return self.by_verdict(REGRESSED)

    def table(self, all_rows: bool = False) -> str:
        """Metric, baseline, current, change %, CI, verdict: changed metrics first, unchanged ones counted."""
        from perfgate.report.markdown import format_value

        rows = [r for r in self.rows if all_rows or r.verdict not in (NO_CHANGE,)]
        order = {REGRESSED: 0, INCOMPARABLE: 1, IMPROVED: 2, NEW: 3, SKIPPED: 4, NO_CHANGE: 5}
        rows.sort(key=lambda r: (order.get(r.verdict, 9), r.metric))
        lines = [f"baseline gate {self.key}: {self.status.upper()}"
                 + (f" ({'; '.join(self.reasons)})" if self.reasons else "")]
        head = ("metric", "baseline", "current", "change", f"{round((1 - self.config.alpha) * 100)}% CI",
                "verdict")
        body = []
        for r in rows:
            unit = METRICS[r.metric].unit if r.metric in METRICS else ""
            c = r.change
            body.append((r.metric, format_value(r.baseline, unit), format_value(r.current, unit),
                         _pct(c.relative) if c else "", f"[{_pct(c.ci_low)}, {_pct(c.ci_high)}]" if c else "",
                         r.verdict + (f" ({r.note})" if r.note else "")))
        if body:
            widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
            for line in (head, *body):
                lines.append("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip())
        unchanged = len(self.by_verdict(NO_CHANGE))
        if unchanged and not all_rows:
            lines.append(f"({unchanged} metric(s) with no significant change not shown)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _pct(x: float) -> str:
    if math.isinf(x):
        return "from 0"
    return f"{x * 100:+.1f}%"


def _values(phases: Iterable[PhaseResult], metric: str) -> list[float]:
    return [float(p.metrics[metric]) for p in phases
            if metric in p.metrics and p.metrics[metric] is not None and math.isfinite(float(p.metrics[metric]))]


def compare(current: list[PhaseResult], baseline: Baseline | None, config: GateConfig | None = None, *,
            allow_incomparable: bool | None = None) -> GateVerdict:
    """Compare a run's repeats of one phase (same gpu_class/profile/scenario) with its baseline."""
    config = config or GateConfig()
    if allow_incomparable is not None:  # a copy: the caller's config object is not changed
        config = dataclasses.replace(config, allow_incomparable=allow_incomparable)
    if not current:
        raise ValueError("compare() needs at least one current PhaseResult")
    keys = {p.key for p in current}
    if len(keys) > 1:
        raise ValueError(f"compare() got phases of several keys {sorted(keys)}; compare one key at a time")
    key = current[0].key
    metrics = sorted({m for p in current for m in p.metrics if m in METRICS and METRICS[m].better != "none"
                      and m not in config.exclude})
    notes: list[str] = []
    invalid = [f"repeat {p.repeat}: {'; '.join(p.invalid_reasons) or 'invalid'}" for p in current if not p.valid]

    if baseline is None:
        rows = [MetricVerdict(m, NEW, current=_mean(_values(current, m)), note="no baseline") for m in metrics]
        status = "invalid" if invalid else "new"
        no_baseline = ("no baseline: run with --perfgate-update-baselines (or `perfgate baselines refresh`)"
                       " to record one")
        return GateVerdict(key, rows, status, invalid or [no_baseline], notes, config)

    problems = comparability_problems(baseline, current[0])
    if problems and not config.allow_incomparable:
        rows = [MetricVerdict(m, INCOMPARABLE, _mean(baseline.metrics.get(m, [])),
                              _mean(_values(current, m)), note="; ".join(problems)) for m in metrics]
        way_out = "refresh the baseline on this environment, or allow the comparison (--perfgate-allow-incomparable)"
        return GateVerdict(key, rows, "incomparable", [*problems, way_out], notes, config)
    if problems:
        notes.append("compared although the environment differs (allowed): " + "; ".join(problems))
    notes += baseline.fingerprint_notes(current[0])

    rows: list[MetricVerdict] = []
    tested: list[tuple[MetricVerdict, float]] = []
    for m in metrics:
        cur = _values(current, m)
        base = [float(v) for v in baseline.metrics.get(m, [])]
        if not base:
            rows.append(MetricVerdict(m, NEW, current=_mean(cur), note="not in the baseline"))
            continue
        change = relative_change(base, cur, 1.0 - config.alpha)
        row = MetricVerdict(m, NO_CHANGE, _mean(base), _mean(cur), change)
        rows.append(row)
        tested.append((row, change.p_value))
    for m in sorted(set(baseline.metrics) - set(metrics)):
        if m in METRICS and METRICS[m].better != "none" and m not in config.exclude:
            source = METRICS[m].source
            reason = current[0].unavailable.get(source) or "not measured in this run"
            rows.append(MetricVerdict(m, SKIPPED, _mean(baseline.metrics[m]), note=reason))

    adjusted = adjust_pvalues([p for _, p in tested], config.correction)
    for (row, _), p_adj in zip(tested, adjusted):
        row.p_adjusted = p_adj
        _decide(row, p_adj, config)

    reasons = list(invalid)
    if invalid:
        status = "invalid"
        reasons.append("figures of an invalid run describe the client, not the server")
    elif any(r.verdict == REGRESSED for r in rows):
        status = "fail"
        reasons.append("regressed: " + ", ".join(r.metric for r in rows if r.verdict == REGRESSED))
    else:
        status = "pass"
    return GateVerdict(key, rows, status, reasons, notes, config)


def _decide(row: MetricVerdict, p_adj: float, config: GateConfig) -> None:
    """Set ``row.verdict``: a change needs significance after correction AND the minimum effect."""
    c, m = row.change, row.metric
    assert c is not None and row.baseline is not None and row.current is not None
    effect = config.effect_for(m)
    floor = config.min_abs_effect.get(m, 0.0)
    big_enough = abs(c.relative) >= effect and abs(row.current - row.baseline) >= floor
    if c.method == "no-noise":
        significant = abs(c.relative) >= max(effect, config.no_noise_threshold)
        row.note = f"noise unknown (1 repeat each); judged by the {config.no_noise_threshold:.0%} fallback"
    else:
        significant = p_adj < config.alpha
    if not (significant and big_enough):
        if significant and not big_enough:
            row.note = f"below the {effect:.0%} minimum effect" + (f" / {floor:g} absolute" if floor else "")
        return
    worse = (c.relative > 0) == (METRICS[m].better == "lower")
    row.verdict = REGRESSED if worse else IMPROVED


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
