"""The baseline gate: is this run worse than its baseline by more than each metric's minimum effect?

Only metrics whose catalog spec says ``gated`` are tested (duplicates, environment readings and occupancy
figures are reported, never gated). Per gated metric, on the log scale (absolute for error counts):

* the worsening is the current mean against the baseline's mean of session means;
* its noise has two levels, repeat-to-repeat and server-session-to-session (``perfgate.core.stats``), so a
  baseline records at least two server sessions and an unchanged server's session offset is not a finding;
* the margin is the larger of the minimum effect (a relative worsening, e.g. 5 %) and the metric's
  absolute floor (a count's quantum, a latency's resolution): a zero-variance figure is compared with the
  margin directly, so +1 °C or one request never fails anything by itself;
* REGRESSED when the one-sided test "worse by more than the margin" rejects at ``alpha`` after Holm's
  correction across the gated metrics; PASS when "within the margin" is shown at ``alpha`` (every metric must
  show it, so a missed regression at the margin happens with probability <= alpha); else INCONCLUSIVE.

The phase is REGRESSED if any metric is, else INCONCLUSIVE if any metric is, else PASS. The runner adds
repeats to an INCONCLUSIVE phase up to ``max_repeats`` before it decides. A smoke gate (the CPU path, see
``[tool.perfgate.gate.class.cpu]``) fails only on REGRESSED and says that it is a smoke test.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from perfgate.core import stats
from perfgate.core.catalog import METRICS
from perfgate.core.fmt import format_value, pct
from perfgate.core.hardware import CPU_CLASS
from perfgate.core.phase import PhaseResult
from perfgate.verdict.baseline import Baseline, identity_check
from perfgate.verdict.gate_settings import GateSettings
from perfgate.verdict.identity import changes, describe_changes

PASS, REGRESSED, INCONCLUSIVE = "pass", "regressed", "inconclusive"
NEW, INCOMPARABLE, INVALID, REPORTED = "new", "incomparable", "invalid", "reported"
MISSING = "missing"  # a row: a gated GPU metric a GPU run did not measure (the phase is then INVALID)
POWER = 0.95  # the power at which "smallest detectable change" is quoted
NO_BASELINE = ("no baseline: record one with --perfgate-update-baselines (two server sessions) or "
               "`perfgate baselines refresh`")
INCOMPARABLE_FIX = ("refresh the baseline on this environment, or allow the comparison "
                    "(--perfgate-allow-incomparable)")
REQUIRED_BASELINE = ("a baseline is required (--perfgate-require-baselines): record one with `pytest "
                     "perf_tests --perfgate-update-baselines -k TEST` or `perfgate baselines refresh --from "
                     "RESULTS_DIR`")


@dataclass
class MetricVerdict:
    metric: str
    verdict: str  # pass | regressed | inconclusive | new | incomparable | missing | reported
    baseline: float | None = None  # mean of the baseline's session means
    current: float | None = None  # mean of this run's repeats
    relative: float | None = None  # current / baseline - 1
    ci_low: float | None = None  # one-sided (1 - alpha) bounds of the relative change
    ci_high: float | None = None
    margin: float | None = None  # the minimum effect as a relative change in the worse direction
    p_adjusted: float | None = None  # Holm-adjusted p of "worse by more than the margin"
    detectable: float | None = None  # smallest relative worsening called REGRESSED at 95 % power
    false_alarm: float | None = None  # probability an unchanged server does not PASS this metric
    test: stats.MarginTest | None = None
    note: str = ""


@dataclass
class GateVerdict:
    key: str
    rows: list[MetricVerdict]
    status: str  # pass | regressed | inconclusive | new | incomparable | invalid
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: GateSettings = field(default_factory=GateSettings)
    repeats: int = 0
    baseline_repeats: int = 0
    baseline_sessions: int = 0
    # What changed since the baseline (perfgate.verdict.identity.CHANGE_KEYS), each "vLLM 0.25.1 → 0.26.0"; None
    # when there was no baseline to compare with.
    changes: list[str] | None = None
    unchecked: list[str] = field(default_factory=list)  # identity fields one side does not record

    @property
    def passed(self) -> bool:
        """PASS, or NEW unless baselines are required; a smoke gate also lets INCONCLUSIVE through (it says
        so in its table)."""
        return (self.status == PASS or (self.status == NEW and not self.settings.require_baseline)
                or (self.settings.smoke and self.status == INCONCLUSIVE))

    def by_verdict(self, verdict: str) -> list[MetricVerdict]:
        return [r for r in self.rows if r.verdict == verdict]

    @property
    def regressions(self) -> list[MetricVerdict]:
        return self.by_verdict(REGRESSED)

    @property
    def gated_rows(self) -> list[MetricVerdict]:
        return [r for r in self.rows if r.verdict != REPORTED]

    def change_text(self) -> str:
        """What changed since the baseline: ``vLLM 0.25.1 → 0.26.0`` (empty without a baseline)."""
        if self.changes is None:
            return ""
        return "; ".join(self.changes) if self.changes else describe_changes([])

    def movement(self) -> MetricVerdict | None:
        """The gated row a reader looks at first: the worst-judged, and within that the largest worsening;
        output throughput when every row passed."""
        rank = {REGRESSED: 0, INCONCLUSIVE: 1, PASS: 2}
        rows = [r for r in self.rows if r.verdict in rank and r.relative is not None]
        if not rows:
            return None

        def worsening(r: MetricVerdict) -> float:
            return r.relative if METRICS[r.metric].better == "lower" else -r.relative  # type: ignore[operator]

        worst = min(rows, key=lambda r: (rank[r.verdict], -worsening(r)))
        if worst.verdict == PASS:  # nothing failed: the figure a reader asks about first, if it was tested
            return next((r for r in rows if r.metric == "output_throughput"), worst)
        return worst

    def first_line(self) -> str:
        """``vLLM 0.25.1 → 0.26.0: output_throughput -6.2% [-7.0%, -5.4%]``: what changed, then the movement
        that decided (or would have decided) the verdict, with its bounds."""
        row = self.movement()
        moved = ""
        if row is not None:
            bounds = f" [{pct(row.ci_low)}, {pct(row.ci_high)}]" if row.ci_low is not None else ""
            moved = f"{row.metric} {pct(row.relative)}{bounds}"
        return ": ".join(filter(None, [self.change_text(), moved]))

    def headline(self) -> str:
        label = self.status.upper() + (" (smoke gate)" if self.settings.smoke else "")
        first = f" — {self.first_line()}" if self.first_line() else ""
        reasons = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return f"baseline gate {self.key}: {label}{first}{reasons}"


def _missing_gpu_rows(current: Sequence[PhaseResult], gated: Sequence[str],
                      baseline: Baseline | None) -> list[MetricVerdict]:
    """Gated GPU metrics (``MetricSpec.needs_gpu``) that a GPU run did not measure in every repeat. Their
    absence means the runner's telemetry failed (NVML, the driver), which must fail, not skip."""
    if current[0].gpu_class == CPU_CLASS:
        return []
    rows = []
    for m in gated:
        if METRICS[m].needs_gpu and len(values(current, m)) < len(current):
            source = METRICS[m].source
            why = next((p.unavailable[source] for p in current if p.unavailable.get(source)), "")
            note = f"{source} unavailable: {why}" if why else f"{source} did not report it"
            base = stats.mean(baseline.metrics[m]) if baseline is not None and baseline.metrics.get(m) else None
            rows.append(MetricVerdict(m, MISSING, base, note=note))
    return rows


def values(phases: Iterable[PhaseResult], metric: str) -> list[float]:
    """The finite values of ``metric`` across ``phases``."""
    out = []
    for p in phases:
        v = p.metrics.get(metric)
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            out.append(float(v))
    return out


def by_session(phases: Sequence[PhaseResult], metric: str) -> list[list[float]]:
    groups: dict[str, list[float]] = {}
    for p in phases:
        v = p.metrics.get(metric)
        if isinstance(v, (int, float)) and math.isfinite(float(v)):
            groups.setdefault(p.server_session or "(unknown)", []).append(float(v))
    return list(groups.values())


def _margin(metric: str, base_mean: float, settings: GateSettings, log_scale: bool) -> float:
    """The margin on the test's scale: max(minimum effect, absolute floor)."""
    effect, floor = settings.effect(metric), settings.floor_of(metric)
    if not log_scale:
        return max(effect * abs(base_mean), floor)
    by_floor = 0.0
    if floor > 0:
        if METRICS[metric].better == "lower":
            by_floor = math.log1p(floor / base_mean)
        else:
            by_floor = math.log(base_mean / (base_mean - floor)) if floor < base_mean else math.inf
    return max(math.log1p(effect), by_floor)


def _test_metric(metric: str, base: list[list[float]], cur: list[list[float]], settings: GateSettings,
                 tests: int) -> MetricVerdict:
    sign = 1 if METRICS[metric].better == "lower" else -1
    flat_b = [v for s in base for v in s]
    flat_c = [v for s in cur for v in s]
    b_mean, c_mean = stats.side_mean(base), stats.side_mean(cur)
    # Log scale (relative changes) unless a value is 0 or the absolute floor is the binding margin (a queue
    # time near 0 ms: its relative noise is huge, its absolute noise tiny).
    log_scale = min(flat_b + flat_c) > 0 and settings.floor_of(metric) < settings.effect(metric) * abs(b_mean)
    if log_scale:
        base_t, cur_t = [[math.log(v) for v in s] for s in base], [[math.log(v) for v in s] for s in cur]
    else:
        base_t, cur_t = base, cur
    margin = _margin(metric, b_mean, settings, log_scale)
    test = stats.margin_test(base_t, cur_t, margin=margin, worse_sign=sign)
    lo, hi = test.bounds(settings.alpha)
    detect = stats.detectable_worsening(test.se, test.df, margin, alpha=settings.alpha, power=POWER, tests=tests)
    row = MetricVerdict(metric, INCONCLUSIVE, b_mean, c_mean, stats.relative_change(b_mean, c_mean), test=test,
                        false_alarm=stats.false_alarm_rate(test.se, test.df, margin, alpha=settings.alpha))
    if log_scale:  # worsening w -> relative change of the mean in the metric's own direction
        row.ci_low, row.ci_high = sorted((math.exp(sign * lo) - 1, math.exp(sign * hi) - 1))
        row.margin = math.exp(sign * margin) - 1 if math.isfinite(margin) else None
        row.detectable = math.exp(sign * detect) - 1 if math.isfinite(detect) else None
    else:  # absolute scale: a relative column means little (often from 0), so the note gives the units
        unit = METRICS[metric].unit
        row.note = (f"absolute: worse by {format_value(test.worsening, unit)} (bounds {format_value(lo, unit)} "
                    f"to {format_value(hi, unit)}), margin {format_value(margin, unit)}")
        if b_mean:
            row.ci_low, row.ci_high = sorted((sign * lo / abs(b_mean), sign * hi / abs(b_mean)))
            row.margin, row.detectable = sign * margin / abs(b_mean), sign * detect / abs(b_mean)
    if test.noise.between_sd is None:
        row.note = "; ".join(filter(None, [row.note, "session noise unknown"]))
    return row


def compare(current: list[PhaseResult], baseline: Baseline | None, settings: GateSettings | None = None, *,
            allow_incomparable: bool | None = None) -> GateVerdict:
    """Judge a run's repeats of one phase key against its baseline."""
    if not current:
        raise ValueError("compare() needs at least one current PhaseResult")
    keys = {p.key for p in current}
    if len(keys) > 1:
        raise ValueError(f"compare() got phases of several keys {sorted(keys)}; compare one key at a time")
    key = current[0].key
    settings = settings or GateSettings(gpu_class=current[0].gpu_class)
    if allow_incomparable is not None:
        settings = settings.model_copy(update={"allow_incomparable": allow_incomparable})
    gated = [m for m in settings.gated if m in METRICS]
    verdict = GateVerdict(key, [], PASS, settings=settings, repeats=len(current))
    if settings.smoke:
        verdict.notes.append(f"smoke gate for {settings.gpu_class}: fails only on a clear regression; minimum "
                             "effects are wide because this platform's noise is (see the detectable column)")
    invalid = [f"repeat {p.repeat}: {'; '.join(p.invalid_reasons) or 'invalid'}" for p in current if not p.valid]
    missing = _missing_gpu_rows(current, gated, baseline)
    invalid += [f"{r.metric} not measured on a GPU run ({r.note}): without it the run cannot show this "
                "figure did not regress" for r in missing]
    if baseline is None:
        verdict.rows = missing + [MetricVerdict(m, NEW, current=stats.mean(values(current, m)), note="no baseline")
                                  for m in gated if values(current, m)]
        verdict.status = INVALID if invalid else NEW
        verdict.reasons = invalid or [REQUIRED_BASELINE if settings.require_baseline else NO_BASELINE]
        return verdict
    verdict.baseline_repeats, verdict.baseline_sessions = baseline.repeats, baseline.session_count
    verdict.changes = [str(c) for c in changes(baseline.environment, current[0].fingerprint)]
    identity = identity_check(baseline, current[0])
    verdict.unchecked = identity.unknown
    problems = identity.problems
    if problems and not settings.allow_incomparable:
        verdict.rows = [MetricVerdict(m, INCOMPARABLE, stats.mean(baseline.metrics.get(m, [])),
                                      stats.mean(values(current, m))) for m in gated]
        verdict.status = INCOMPARABLE
        verdict.reasons = [*problems, INCOMPARABLE_FIX]
        return verdict
    if problems:
        verdict.notes.append("compared although the environment differs (allowed): " + "; ".join(problems))
    verdict.notes += baseline.fingerprint_notes(current[0])

    tested = [m for m in gated if baseline.metrics.get(m) and values(current, m)]
    verdict.rows += missing
    for m in gated:
        if any(r.metric == m for r in missing):
            continue
        if m in tested:
            verdict.rows.append(_test_metric(m, baseline.by_session(m), by_session(current, m), settings,
                                             len(tested)))
        elif baseline.metrics.get(m):
            reason = current[0].unavailable.get(METRICS[m].source) or "not measured in this run"
            verdict.rows.append(MetricVerdict(m, INCONCLUSIVE, stats.mean(baseline.metrics[m]), note=reason))
        elif values(current, m):
            verdict.rows.append(MetricVerdict(m, NEW, current=stats.mean(values(current, m)),
                                              note="not in the baseline"))
    rows = [r for r in verdict.rows if r.test is not None]
    adjusted = stats.adjust_pvalues([r.test.p_regressed for r in rows], settings.correction)
    for row, p_adj in zip(rows, adjusted):
        row.p_adjusted = p_adj
        if p_adj < settings.alpha:
            row.verdict = REGRESSED
        elif row.test.p_within < settings.alpha:
            row.verdict = PASS
    for m in sorted(set(baseline.metrics) & {k for p in current for k in p.metrics} - set(gated)):
        if m in METRICS:
            b, c = stats.mean(baseline.metrics[m]), stats.mean(values(current, m))
            verdict.rows.append(MetricVerdict(m, REPORTED, b, c, stats.relative_change(b, c)))
    if any("session noise unknown" in r.note for r in rows):
        verdict.notes.append("session-to-session noise unknown (one server session on each side): the test "
                             "knows repeat-to-repeat noise only")

    if invalid:
        verdict.status, verdict.reasons = INVALID, [*invalid, "figures of an invalid run do not describe the server"]
    elif verdict.regressions:
        verdict.status = REGRESSED
        verdict.reasons = ["worse by more than the minimum effect: "
                           + ", ".join(f"{r.metric} {pct(r.relative)}" for r in verdict.regressions)]
    elif verdict.by_verdict(INCONCLUSIVE):
        verdict.status = INCONCLUSIVE
        verdict.reasons = ["not shown to be within the minimum effect: "
                           + ", ".join(r.metric for r in verdict.by_verdict(INCONCLUSIVE))]
    return verdict



@dataclass(frozen=True)
class Sensitivity:
    """What the gate can resolve for one metric of a baseline, with ``current`` repeats in one session."""

    metric: str
    mean: float
    within_cv: float
    between_cv: float | None
    margin: float  # the minimum effect, relative, in the worse direction
    detectable: float | None  # smallest relative worsening called REGRESSED at 95 % power
    false_alarm: float  # probability that an unchanged server does not PASS this metric
    log_scale: bool  # True: the noise figures are log-scale (~ CVs); False: absolute, in the metric's unit


def sensitivity(baseline: Baseline, settings: GateSettings, current: int) -> list[Sensitivity]:
    """Per gated metric of ``baseline``: its noise, the smallest detectable change and the A/A false-alarm
    rate, for a run of ``current`` repeats in one server session (the gate's own arithmetic)."""
    out = []
    gated = [m for m in settings.gated if baseline.metrics.get(m)]
    for m in gated:
        groups = baseline.by_session(m)
        flat = [v for g in groups for v in g]
        b_mean = stats.side_mean(groups)
        log_scale = min(flat) > 0 and settings.floor_of(m) < settings.effect(m) * abs(b_mean)
        scaled = [[math.log(v) for v in g] for g in groups] if log_scale else groups
        noise = stats.estimate_noise(scaled)
        se = stats.expected_se(noise, [len(g) for g in groups], [current])
        df = float(max(1, noise.df_within + current - 1))
        margin = _margin(m, b_mean, settings, log_scale)
        detect = stats.detectable_worsening(se, df, margin, alpha=settings.alpha, power=POWER, tests=len(gated))
        sign = 1 if METRICS[m].better == "lower" else -1
        if log_scale:
            rel_margin, rel_detect = math.exp(sign * margin) - 1, math.exp(sign * detect) - 1
        else:
            scale = abs(b_mean) or 1.0
            rel_margin, rel_detect = sign * margin / scale, sign * detect / scale
        out.append(Sensitivity(m, b_mean, noise.within_sd, noise.between_sd, rel_margin,
                               rel_detect if math.isfinite(detect) else None,
                               stats.false_alarm_rate(se, df, margin, alpha=settings.alpha), log_scale))
    return out
