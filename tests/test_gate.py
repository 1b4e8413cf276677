"""The baseline gate: statistics, verdicts per metric, and a simulation of its false-alarm rate and power."""

from __future__ import annotations

import math
import random

import pytest

from perfgate.baseline import Baseline
from perfgate.gate import (
    IMPROVED,
    INCOMPARABLE,
    NEW,
    NO_CHANGE,
    REGRESSED,
    SKIPPED,
    GateConfig,
    adjust_pvalues,
    compare,
    relative_change,
    smallest_detectable_change,
    t_quantile,
    t_two_sided_p,
)
from perfgate.phase import PhaseResult

# Serving metrics of a chat phase, with realistic centres (A10G-like); a run multiplies them by noise.
CENTRES = {
    "request_throughput": 6.3, "output_throughput": 1700.0, "total_token_throughput": 2600.0,
    "mean_ttft_ms": 95.0, "median_ttft_ms": 80.0, "p90_ttft_ms": 160.0, "p99_ttft_ms": 310.0,
    "mean_tpot_ms": 21.0, "median_tpot_ms": 20.0, "p99_tpot_ms": 34.0, "mean_itl_ms": 21.0,
    "p99_itl_ms": 55.0, "mean_e2el_ms": 620.0, "median_e2el_ms": 580.0, "p90_e2el_ms": 950.0,
    "p99_e2el_ms": 1180.0, "running_batch_mean": 4.1, "server_mean_ttft_ms": 70.0,
    "server_mean_e2el_ms": 600.0, "gpu_util_pct_mean": 57.0,
}
# What a slowdown moves together: the rates fall, the latencies rise.
SLOWDOWN = ("request_throughput", "output_throughput", "total_token_throughput", "mean_tpot_ms", "median_tpot_ms",
            "p99_tpot_ms", "mean_e2el_ms", "median_e2el_ms", "p90_e2el_ms", "p99_e2el_ms")
FP = {"gpu_model": "NVIDIA A10G", "vllm_version": "0.32.0", "driver_version": "550.54"}


def phases(n: int, rng: random.Random, noise: dict[str, float] | float = 0.1, shift: float = 0.0,
           shifted: tuple[str, ...] = (), fingerprint: dict | None = None, **extra) -> list[PhaseResult]:
    out = []
    for r in range(n):
        metrics = {}
        for m, centre in CENTRES.items():
            sd = noise[m] if isinstance(noise, dict) else noise
            factor = 1.0
            if m in shifted:  # a slowdown: latencies up by `shift`, rates down by the same factor
                factor = (1 + shift) if m.endswith("_ms") else 1 / (1 + shift)
            metrics[m] = centre * factor * math.exp(rng.gauss(0, sd))
        out.append(PhaseResult("optimized", "chat", "a10g", metrics=metrics, repeat=r,
                               fingerprint={**(fingerprint or FP)}, **extra))
    return out


def baseline_of(runs: list[PhaseResult], **kw) -> Baseline:
    metrics = {m: [p.metrics[m] for p in runs] for m in runs[0].metrics}
    fields = {"gpu_class": "a10g", "profile": "optimized", "scenario": "chat", "repeats": len(runs),
              "metrics": metrics, "fingerprint": dict(runs[0].fingerprint),
              "gpu_model": runs[0].fingerprint.get("gpu_model"),
              "vllm_version": runs[0].fingerprint.get("vllm_version")}
    fields.update(kw)
    return Baseline(**fields)


# ---------------------------------------------------------------- statistics
def test_student_t_matches_tables():
    assert t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-3)
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-3)
    assert t_two_sided_p(2.2281, 10) == pytest.approx(0.05, abs=1e-4)
    assert t_two_sided_p(0.0, 5) == pytest.approx(1.0)


def test_pvalue_adjustments():
    ps = [0.01, 0.04, 0.03, 0.005]
    assert adjust_pvalues(ps, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_pvalues(ps, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust_pvalues(ps, "none") == ps
    with pytest.raises(ValueError, match="unknown correction"):
        adjust_pvalues(ps, "bonf")  # type: ignore[arg-type]


def test_relative_change_interval_covers_the_truth():
    rng = random.Random(1)
    covered = 0
    for _ in range(300):
        base = [100 * math.exp(rng.gauss(0, 0.12)) for _ in range(5)]
        cur = [120 * math.exp(rng.gauss(0, 0.12)) for _ in range(5)]
        c = relative_change(base, cur)
        covered += c.ci_low <= 0.2 <= c.ci_high
    assert 0.9 <= covered / 300 <= 0.99  # a 95 % interval, approximately


def test_one_current_repeat_borrows_the_baselines_noise():
    c = relative_change([100, 110, 90, 105, 95], [150])
    assert c.method == "baseline-noise" and c.p_value < 0.05 and c.ci_low > 0
    assert relative_change([100], [150]).method == "no-noise"


# ---------------------------------------------------------------- verdicts
def test_identical_runs_pass_with_no_change():
    rng = random.Random(7)
    verdict = compare(phases(5, rng), baseline_of(phases(5, rng)))
    assert verdict.passed and verdict.status == "pass"
    assert not verdict.regressions
    assert {r.verdict for r in verdict.rows} <= {NO_CHANGE, IMPROVED, REGRESSED}


def test_slowdown_fails_naming_the_metrics():
    rng = random.Random(3)
    base = baseline_of(phases(5, rng))
    verdict = compare(phases(5, rng, shift=0.4, shifted=SLOWDOWN), base)
    assert not verdict.passed and verdict.status == "fail"
    names = {r.metric for r in verdict.regressions}
    assert {"request_throughput", "p99_e2el_ms"} <= names
    assert names <= set(SLOWDOWN)
    table = verdict.table()
    assert "FAIL" in table and "p99_e2el_ms" in table and "regressed" in table
    row = next(r for r in verdict.rows if r.metric == "request_throughput")
    assert row.change.relative < 0 and row.change.ci_high < 0  # direction-aware: lower rate is worse


def test_speedup_is_improved_and_passes():
    rng = random.Random(5)
    base = baseline_of(phases(5, rng, shift=0.4, shifted=SLOWDOWN))
    verdict = compare(phases(5, rng), base)
    assert verdict.passed
    assert {"request_throughput", "p99_e2el_ms"} <= {r.metric for r in verdict.by_verdict(IMPROVED)}


def test_clear_but_small_change_is_below_the_minimum_effect():
    rng = random.Random(11)
    quiet = 0.002  # very low noise: a 3 % change is statistically clear
    base = baseline_of(phases(6, rng, noise=quiet))
    current = phases(6, rng, noise=quiet, shift=0.03, shifted=("p99_e2el_ms",))
    row = next(r for r in compare(current, base).rows if r.metric == "p99_e2el_ms")
    assert row.verdict == NO_CHANGE and "minimum effect" in row.note
    strict = GateConfig(min_effect_by_metric={"p99_e2el_ms": 0.02})
    row = next(r for r in compare(current, base, strict).rows if r.metric == "p99_e2el_ms")
    assert row.verdict == REGRESSED


def test_no_baseline_is_new_not_a_pass():
    verdict = compare(phases(3, random.Random(0)), None)
    assert verdict.status == "new" and verdict.passed  # the test is marked, not failed
    assert {r.verdict for r in verdict.rows} == {NEW}
    assert "--perfgate-update-baselines" in verdict.reasons[0]


def test_metric_added_since_the_baseline_is_new():
    rng = random.Random(2)
    base = baseline_of(phases(4, rng))
    del base.metrics["p99_itl_ms"]
    row = next(r for r in compare(phases(4, rng), base).rows if r.metric == "p99_itl_ms")
    assert row.verdict == NEW


@pytest.mark.parametrize("key,value", [("vllm_version", "0.33.0"), ("gpu_model", "NVIDIA L4")])
def test_other_environment_is_incomparable_unless_allowed(key, value):
    rng = random.Random(4)
    base = baseline_of(phases(4, rng))
    current = phases(4, rng, fingerprint={**FP, key: value})
    verdict = compare(current, base)
    assert verdict.status == "incomparable" and not verdict.passed
    assert any(key in r for r in verdict.reasons)
    assert {r.verdict for r in verdict.rows} == {INCOMPARABLE}
    allowed = compare(current, base, allow_incomparable=True)
    assert allowed.status == "pass" and any(key in n for n in allowed.notes)


def test_driver_change_is_noted_not_blocking():
    rng = random.Random(4)
    base = baseline_of(phases(4, rng))
    verdict = compare(phases(4, rng, fingerprint={**FP, "driver_version": "560.1"}), base)
    assert verdict.passed and any("driver_version" in n for n in verdict.notes)


def test_invalid_run_fails_the_gate():
    rng = random.Random(6)
    base = baseline_of(phases(4, rng))
    current = phases(4, rng)
    current[1].valid, current[1].invalid_reasons = False, ["achieved 80% of the offered rate"]
    verdict = compare(current, base)
    assert verdict.status == "invalid" and not verdict.passed
    assert "achieved 80%" in verdict.reasons[0]


def test_error_counts_from_zero_need_the_absolute_floor():
    rng = random.Random(8)
    base = baseline_of(phases(4, rng))
    base.metrics["failed"] = [0, 0, 0, 0]
    one = phases(4, rng)
    for p in one:
        p.metrics["failed"] = 1
    many = phases(4, rng)
    for p in many:
        p.metrics["failed"] = 12
    assert next(r for r in compare(one, base).rows if r.metric == "failed").verdict == NO_CHANGE
    assert next(r for r in compare(many, base).rows if r.metric == "failed").verdict == REGRESSED


def test_metric_missing_now_is_skipped_with_the_reason():
    rng = random.Random(9)
    base = baseline_of(phases(4, rng))
    current = phases(4, rng, unavailable={"nvml": "no NVIDIA driver"})
    for p in current:
        del p.metrics["gpu_util_pct_mean"]
    row = next(r for r in compare(current, base).rows if r.metric == "gpu_util_pct_mean")
    assert row.verdict == SKIPPED and row.note == "no NVIDIA driver"


def test_client_self_check_metrics_are_not_gated():
    rng = random.Random(10)
    current = phases(3, rng)
    for p in current:
        p.metrics["p99_send_lag_ms"] = 500.0
    base = baseline_of(phases(3, rng))
    base.metrics["p99_send_lag_ms"] = [1.0, 1.2, 0.9]
    assert all(r.metric != "p99_send_lag_ms" for r in compare(current, base).rows)


# ---------------------------------------------------------------- simulation
def _noise(rng: random.Random) -> dict[str, float]:
    return {m: rng.uniform(0.10, 0.15) for m in CENTRES}  # identical runs differ by 10-15 %


def test_false_alarm_rate_under_alpha_over_many_seeds():
    """Identical distributions, 20 metrics, 8 repeats each side: the run falsely fails at most alpha (5 %)."""
    false_fails = 0
    seeds = 150
    for seed in range(seeds):
        rng = random.Random(seed)
        noise = _noise(rng)
        verdict = compare(phases(8, rng, noise), baseline_of(phases(8, rng, noise)))
        false_fails += not verdict.passed
    assert false_fails / seeds <= 0.05


def test_a_25_percent_slowdown_is_detected():
    detected = 0
    seeds = 60
    for seed in range(seeds):
        rng = random.Random(1000 + seed)
        noise = _noise(rng)
        verdict = compare(phases(8, rng, noise, shift=0.25, shifted=SLOWDOWN), baseline_of(phases(8, rng, noise)))
        detected += verdict.status == "fail"
    assert detected / seeds >= 0.9


def test_smallest_detectable_change_matches_simulated_power():
    """A single-metric shift of the computed size is caught about 80 % of the time (its stated power)."""
    noise, n = 0.12, 8
    size = smallest_detectable_change(noise, n, n, metrics=len(CENTRES), min_effect=0.0)
    detected, seeds = 0, 150
    for seed in range(seeds):
        rng = random.Random(5000 + seed)
        current = phases(n, rng, noise, shift=size, shifted=("p99_e2el_ms",))
        verdict = compare(current, baseline_of(phases(n, rng, noise)))
        detected += any(r.metric == "p99_e2el_ms" for r in verdict.regressions)
    assert 0.65 <= detected / seeds <= 0.97
    assert smallest_detectable_change(noise, 3, 3, metrics=20) > size > smallest_detectable_change(noise, 20, 20)
    assert smallest_detectable_change(0.001, 10) == 0.05  # never below the minimum effect
    assert math.isinf(smallest_detectable_change(0.1, 1, 1))
