"""Statistics the verdicts share: Student t, mean/CV, p-value adjustment, and the session-aware margin test.

A leaf: imports nothing of perfgate. No scipy in the venv, so Student's t is computed here (regularized
incomplete beta, Numerical Recipes' continued fraction).

The margin test (``margin_test``) is the gate's core. Serving figures vary at two levels: repeat to repeat
inside one server session, and session to session (a restarted server lands in another CUDA-graph/compile/
allocator state: on an H200, median TTFT moved -19 % between two sessions whose repeats agreed within 6-9 %).
A current run is one session, so its mean carries one session's offset; a model that knew only the repeats'
noise would call such offsets regressions. Each side is therefore a list of sessions, each a list of repeats,
and the difference of the two sides' means gets the variance

    sigma_b^2 * (1/S_base + 1/S_cur) + sigma_w^2 * (sum 1/R_j / S_base^2 + sum 1/R_k / S_cur^2)

with sigma_w^2 pooled within sessions and sigma_b^2 from the spread of session means (method of moments,
floored at 0), and Satterthwaite's degrees of freedom. The question asked is one-sided and against a margin:
"is it worse by more than the minimum effect?" (REGRESSED when the lower confidence bound of the worsening
is above the margin), and its mirror "is it within the margin?" (PASS when the upper bound is below it).
Neither: INCONCLUSIVE. A change below the margin can only make a metric PASS or INCONCLUSIVE, never push
another metric over its bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Correction = Literal["bh", "holm", "none"]


# ---------------------------------------------------------------- Student t
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


def t_upper_p(t: float, df: float) -> float:
    """P(T >= t): the one-sided p-value of an observed t."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    half = t_two_sided_p(t, df) / 2.0
    return half if t >= 0 else 1.0 - half


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


# ---------------------------------------------------------------- summaries
def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def cv(values: Sequence[float]) -> float | None:
    """Coefficient of variation (sd / mean); None for fewer than 2 values or a zero mean."""
    if len(values) < 2:
        return None
    m, sd = mean_sd(values)
    return sd / abs(m) if m else None


def relative_change(before: float | None, after: float | None) -> float | None:
    """``after / before - 1``; None when either is unknown or ``before`` is 0."""
    if before is None or after is None or before == 0:
        return None
    return after / before - 1.0


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


# ---------------------------------------------------------------- two-level noise
Sessions = Sequence[Sequence[float]]  # one list of repeat values per server session


@dataclass(frozen=True)
class Noise:
    """Noise of one metric on the scale it is tested on (log scale: ~ a coefficient of variation)."""

    within_sd: float  # repeat to repeat inside one session
    between_sd: float | None  # session to session (None: fewer than two sessions anywhere, unknown)
    df_within: int
    df_between: int


def estimate_noise(*sides: Sessions) -> Noise:
    """Pool within-session variance over every session of every side; between-session variance from the
    spread of session means of each side that has two or more sessions."""
    ss_w, df_w = 0.0, 0
    ss_b, df_b, inv_r = 0.0, 0, []
    for side in sides:
        means = []
        for values in side:
            if not values:
                continue
            m, sd = mean_sd(values)
            ss_w += sd * sd * (len(values) - 1)
            df_w += len(values) - 1
            means.append(m)
            inv_r.append(1.0 / len(values))
        if len(means) >= 2:
            m, sd = mean_sd(means)
            ss_b += sd * sd * (len(means) - 1)
            df_b += len(means) - 1
    var_w = ss_w / df_w if df_w else 0.0
    if not df_b:
        return Noise(math.sqrt(var_w), None, df_w, 0)
    # Var(session mean) = sigma_b^2 + sigma_w^2 / R: take the repeats' share out (never below zero).
    var_b = max(0.0, ss_b / df_b - var_w * (sum(inv_r) / len(inv_r)))
    return Noise(math.sqrt(var_w), math.sqrt(var_b), df_w, df_b)


@dataclass(frozen=True)
class MarginTest:
    """Worsening of ``current`` against ``baseline`` tested against a margin (all on the test's scale)."""

    worsening: float  # > 0: current is worse (log ratio, or absolute units)
    se: float
    df: float
    margin: float
    p_regressed: float  # H0: worsening <= margin
    p_within: float  # H0: worsening >= margin
    noise: Noise

    def bounds(self, alpha: float) -> tuple[float, float]:
        """One-sided (1 - alpha) bounds of the worsening: (lower, upper)."""
        if self.se == 0:
            return self.worsening, self.worsening
        half = t_quantile(1.0 - alpha, self.df) * self.se
        return self.worsening - half, self.worsening + half


def side_mean(side: Sessions) -> float:
    """Mean of session means: each session weighs the same, however many repeats it has."""
    means = [sum(v) / len(v) for v in side if v]
    return sum(means) / len(means)


def margin_test(baseline: Sessions, current: Sessions, *, margin: float, worse_sign: int,
                noise: Noise | None = None, between_unknown_as: float | None = None) -> MarginTest:
    """Test whether ``current`` is worse than ``baseline`` by more than ``margin``.

    Values must already be on the test's scale (log for ratios). ``worse_sign`` is +1 when higher is worse
    (latency), -1 when lower is worse (throughput). When no side has two sessions the session-to-session
    noise is unknown: ``between_unknown_as`` stands in for it (None: treated as 0, and the caller says so).
    """
    baseline = [list(s) for s in baseline if s]
    current = [list(s) for s in current if s]
    if not baseline or not current:
        raise ValueError("margin_test needs at least one value on each side")
    noise = noise or estimate_noise(baseline, current)
    between = noise.between_sd if noise.between_sd is not None else (between_unknown_as or 0.0)
    w = worse_sign * (side_mean(current) - side_mean(baseline))
    k_b = 1.0 / len(baseline) + 1.0 / len(current)
    k_w = (sum(1.0 / len(s) for s in baseline) / len(baseline) ** 2
           + sum(1.0 / len(s) for s in current) / len(current) ** 2)
    c_b, c_w = between * between * k_b, noise.within_sd ** 2 * k_w
    var = c_b + c_w
    if var <= 0.0:  # no noise at all: the figure is deterministic, compare it with the margin directly
        worse = w > margin
        return MarginTest(w, 0.0, math.inf, margin, 0.0 if worse else 1.0, 1.0 if worse else 0.0, noise)
    # Degrees of freedom: the within-session estimate's. The between-session variance of a baseline of two
    # sessions has one degree of freedom; Satterthwaite would then give t quantiles of 6-12 and a gate blind
    # to anything under ~50 %. It is treated as known instead, and what that costs in false alarms is
    # measured (benchmarks/sensitivity.py, A/A over real sessions) rather than assumed.
    df = float(max(1, noise.df_within))
    se = math.sqrt(var)
    t = (w - margin) / se
    return MarginTest(w, se, df, margin, t_upper_p(t, df), 1.0 - t_upper_p(t, df), noise)


def expected_se(noise: Noise, baseline_sizes: Sequence[int], current_sizes: Sequence[int]) -> float:
    """The standard error ``margin_test`` will have for sides of these session sizes, given ``noise``."""
    between = noise.between_sd or 0.0
    k_b = 1.0 / len(baseline_sizes) + 1.0 / len(current_sizes)
    k_w = (sum(1.0 / r for r in baseline_sizes) / len(baseline_sizes) ** 2
           + sum(1.0 / r for r in current_sizes) / len(current_sizes) ** 2)
    return math.sqrt(between * between * k_b + noise.within_sd ** 2 * k_w)


def detectable_worsening(se: float, df: float, margin: float, *, alpha: float, power: float,
                         tests: int = 1) -> float:
    """The smallest true worsening called REGRESSED with probability ``power`` (Bonferroni over ``tests``)."""
    if se == 0:
        return margin
    return margin + (t_quantile(1.0 - alpha / tests, df) + t_quantile(power, df)) * se


def false_alarm_rate(se: float, df: float, margin: float, *, alpha: float) -> float:
    """Probability that an unchanged server does not PASS this metric (its upper bound reaches the margin)."""
    if se == 0:
        return 0.0 if margin > 0 else 1.0
    # Not PASS when w_hat + t_{1-alpha} * se >= margin, w_hat ~ t(df) * se around 0.
    return t_upper_p(margin / se - t_quantile(1.0 - alpha, df), df)
