"""The baseline gate: statistics, the margin test, verdicts per metric and per phase, settings."""

from __future__ import annotations

import math
import random

import pytest

from perfgate._errors import ConfigError
from perfgate.core.catalog import GATED, METRICS
from perfgate.core.phase import PhaseResult
from perfgate.core.stats import (
    adjust_pvalues,
    estimate_noise,
    false_alarm_rate,
    margin_test,
    t_quantile,
    t_two_sided_p,
    t_upper_p,
)
from perfgate.report.tables import table
from perfgate.verdict.baseline import baseline_from_phases
from perfgate.verdict.gate import (
    INCOMPARABLE,
    INCONCLUSIVE,
    INVALID,
    MISSING,
    NEW,
    PASS,
    REGRESSED,
    REPORTED,
    compare,
    sensitivity,
)
from perfgate.verdict.gate_settings import GateSettings, load_gate_settings

CENTRES = {"output_throughput": 4800.0, "request_throughput": 18.7, "median_ttft_ms": 120.0, "p99_ttft_ms": 210.0,
           "median_tpot_ms": 6.3, "p99_tpot_ms": 7.1, "median_e2el_ms": 1700.0, "p99_e2el_ms": 1850.0,
           "p50_ttft_ms": 120.0, "failed": 0.0, "error_rate": 0.0, "token_count_mismatches": 0.0,
           "vram_used_gib_peak": 126.9, "temperature_c_peak": 61.0, "power_w_mean": 520.0,
           "server_mean_queue_ms": 0.4, "energy_per_output_token_j": 0.108}
FP = {"gpu_model": "NVIDIA H200", "vllm_version": "0.25.1", "driver": "580.1"}


def session(sid: str, n: int, rng: random.Random, *, cv: float = 0.005, offset: float = 0.0,
            change: dict[str, float] | None = None, fingerprint: dict | None = None, **extra) -> list[PhaseResult]:
    """``n`` repeats of one server session: every metric at its centre x (1 + change) x session offset x noise."""
    out = []
    for r in range(n):
        metrics = {}
        for m, centre in CENTRES.items():
            factor = (1 + (change or {}).get(m, 0.0)) * math.exp(offset + rng.gauss(0, cv))
            metrics[m] = centre * factor if METRICS[m].kind != "environment" else centre + (change or {}).get(m, 0.0)
        out.append(PhaseResult("optimized", "fixed-512-256", "h200", metrics=metrics, repeat=r, server_session=sid,
                               started_at=float(r), fingerprint=dict(fingerprint or FP), **extra))
    return out


def baseline(rng: random.Random, sessions: int = 2, repeats: int = 3, **kw):
    phases = [p for s in range(sessions) for p in session(f"base{s}", repeats, rng, **kw)]
    return baseline_from_phases(phases)


# ---------------------------------------------------------------- statistics
def test_student_t_matches_tables():
    assert t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-3)
    assert t_quantile(0.95, 4) == pytest.approx(2.1318, abs=1e-3)
    assert t_two_sided_p(2.2281, 10) == pytest.approx(0.05, abs=1e-4)
    assert t_upper_p(2.1318, 4) == pytest.approx(0.05, abs=1e-4)
    assert t_upper_p(-2.1318, 4) == pytest.approx(0.95, abs=1e-4)


def test_pvalue_adjustments():
    ps = [0.01, 0.04, 0.03, 0.005]
    assert adjust_pvalues(ps, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_pvalues(ps, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_noise_is_split_into_repeats_and_sessions():
    same = estimate_noise([[1.0, 1.1, 0.9], [1.0, 1.1, 0.9]])
    assert same.within_sd == pytest.approx(0.1) and same.between_sd == 0.0
    apart = estimate_noise([[1.0, 1.1, 0.9], [2.0, 2.1, 1.9]])
    assert apart.within_sd == pytest.approx(0.1)
    # Var(session mean) = (1/sqrt(2))^2 = 0.5; minus the repeats' share 0.01/3.
    assert apart.between_sd == pytest.approx(math.sqrt(0.5 - 0.01 / 3))
    assert estimate_noise([[1.0, 1.2]]).between_sd is None  # one session: unknown, not zero


def test_margin_test_counts_the_current_sessions_own_offset():
    base, cur = [[0.0, 0.01, -0.01], [0.1, 0.11, 0.09]], [[0.05, 0.06, 0.04]]
    t = margin_test(base, cur, margin=0.05, worse_sign=1)
    noise = t.noise
    expected = noise.between_sd ** 2 * (1 / 2 + 1) + noise.within_sd ** 2 * ((1 / 3 + 1 / 3) / 4 + 1 / 3)
    assert t.se == pytest.approx(math.sqrt(expected))


def test_zero_variance_is_compared_with_the_margin_not_called_exact():
    within = margin_test([[5.0, 5.0], [5.0, 5.0]], [[5.5, 5.5]], margin=1.0, worse_sign=1)
    assert within.se == 0 and within.p_within == 0.0 and within.p_regressed == 1.0
    beyond = margin_test([[5.0, 5.0], [5.0, 5.0]], [[7.0, 7.0]], margin=1.0, worse_sign=1)
    assert beyond.p_regressed == 0.0


def test_false_alarm_arithmetic_matches_simulation():
    rng = random.Random(3)
    se, df, margin = 0.02, 6.0, 0.05
    alarms = 0
    for _ in range(4000):
        w = se * rng.gauss(0, 1) * math.sqrt(df / sum(rng.gauss(0, 1) ** 2 for _ in range(int(df))))
        alarms += w + t_quantile(0.95, df) * se >= margin
    assert alarms / 4000 == pytest.approx(false_alarm_rate(se, df, margin, alpha=0.05), abs=0.015)


# ---------------------------------------------------------------- verdicts
def test_catalog_gates_no_duplicate_and_no_environment_reading():
    for key in GATED:
        spec = METRICS[key]
        assert spec.duplicate_of is None and spec.kind not in ("environment", "occupancy", "client"), key
    assert "p50_ttft_ms" not in GATED and "temperature_c_peak" not in GATED and "power_w_mean" not in GATED


def test_unchanged_server_passes():
    rng = random.Random(1)
    verdict = compare(session("cur", 3, rng), baseline(rng))
    assert verdict.status == PASS, table(verdict)
    assert {r.verdict for r in verdict.gated_rows} == {PASS}


def test_three_degrees_warmer_gpu_alone_never_fails():
    rng = random.Random(2)
    verdict = compare(session("cur", 3, rng, change={"temperature_c_peak": 3.0, "power_w_mean": 40.0}),
                      baseline(rng))
    assert verdict.status == PASS, table(verdict)
    temperature = next(r for r in verdict.rows if r.metric == "temperature_c_peak")
    assert temperature.verdict == REPORTED


def test_a_real_throughput_loss_is_regressed_and_named():
    rng = random.Random(4)
    verdict = compare(session("cur", 3, rng, change={"output_throughput": -0.12, "request_throughput": -0.12}),
                      baseline(rng))
    assert verdict.status == REGRESSED, table(verdict)
    assert [r.metric for r in verdict.regressions] == ["output_throughput"]
    assert "output_throughput" in table(verdict) and "REGRESSED" in table(verdict)


def test_a_change_under_the_margin_passes_and_does_not_move_other_verdicts():
    rng = random.Random(5)
    base = baseline(rng)
    drift = {"median_tpot_ms": 0.02, "p99_e2el_ms": 0.02, "median_e2el_ms": 0.02}
    alone = compare(session("cur", 3, random.Random(9), change={"output_throughput": -0.2}), base)
    with_drift = compare(session("cur", 3, random.Random(9), change={"output_throughput": -0.2, **drift}), base)
    for verdict in (alone, with_drift):
        assert next(r for r in verdict.rows if r.metric == "output_throughput").verdict == REGRESSED
    assert all(next(r for r in with_drift.rows if r.metric == m).verdict == PASS for m in drift)


def test_too_noisy_to_tell_is_inconclusive_not_pass():
    rng = random.Random(6)
    verdict = compare(session("cur", 3, rng, cv=0.15), baseline(rng, cv=0.15))
    assert verdict.status == INCONCLUSIVE, table(verdict)
    assert not verdict.passed


def test_smoke_gate_lets_inconclusive_through_and_says_so():
    rng = random.Random(6)
    smoke = GateSettings(gpu_class="cpu", smoke=True)
    verdict = compare(session("cur", 3, rng, cv=0.15), baseline(rng, cv=0.15), smoke)
    assert verdict.status == INCONCLUSIVE and verdict.passed
    assert "smoke gate" in table(verdict)


def test_error_counts_need_the_absolute_floor():
    rng = random.Random(7)
    one = compare(session("cur", 3, rng, change={}), baseline(rng))
    assert next(r for r in one.rows if r.metric == "failed").verdict == PASS
    phases = session("cur", 3, rng)
    for p in phases:
        p.metrics["failed"] = 1.0  # below the floor of 2 requests
    assert next(r for r in compare(phases, baseline(rng)).rows if r.metric == "failed").verdict == PASS
    for p in phases:
        p.metrics["failed"] = 5.0
    assert next(r for r in compare(phases, baseline(rng)).rows if r.metric == "failed").verdict == REGRESSED


def test_no_baseline_is_new_other_gpu_incomparable_invalid_run_invalid():
    rng = random.Random(8)
    assert compare(session("cur", 3, rng), None).status == NEW
    other = session("cur", 3, rng, fingerprint={**FP, "gpu_model": "NVIDIA H100 80GB HBM3"})
    verdict = compare(other, baseline(rng))
    assert verdict.status == INCOMPARABLE and not verdict.passed
    assert compare(other, baseline(rng), allow_incomparable=True).status == PASS
    bad = session("cur", 3, rng)
    bad[1].valid, bad[1].invalid_reasons = False, ["client fell behind"]
    verdict = compare(bad, baseline(rng))
    assert verdict.status == INVALID and "client fell behind" in verdict.headline()


def test_gated_gpu_metric_missing_on_a_gpu_run_fails_with_the_reason():
    """NVML broken on the GPU runner: VRAM is gated, so the phase fails (INVALID), never skips and passes."""
    rng = random.Random(10)
    cur = session("cur", 3, rng)
    for p in cur:
        del p.metrics["vram_used_gib_peak"]
        p.unavailable["nvml"] = "NVML: driver not loaded"
    for base in (baseline(rng), None):  # with a baseline, and a new one (nothing to compare with)
        verdict = compare(cur, base)
        row = next(r for r in verdict.rows if r.metric == "vram_used_gib_peak")
        assert row.verdict == MISSING and "driver not loaded" in row.note
        assert verdict.status == INVALID and not verdict.passed
        assert "vram_used_gib_peak not measured on a GPU run (nvml unavailable: NVML: driver not loaded)" \
            in verdict.headline()
    # Missing in one repeat only is missing too (a bound holds in every repeat, and so does telemetry).
    cur = session("cur", 3, rng)
    del cur[1].metrics["vram_used_gib_peak"]
    assert compare(cur, baseline(rng)).status == INVALID
    # Not gated (a user's [tool.perfgate.gate] gated list without it): not judged, not failed.
    settings = GateSettings(gpu_class="h200", gated=("output_throughput",))
    for p in cur:
        p.metrics.pop("vram_used_gib_peak", None)
    assert compare(cur, baseline(rng), settings).status == PASS


def test_gpu_metric_absent_on_the_cpu_path_is_not_a_failure():
    rng = random.Random(10)
    cur = [PhaseResult("cpu-tiny", "cpu-closed", "cpu", metrics={k: v for k, v in p.metrics.items()
                                                                  if not METRICS[k].needs_gpu},
                       repeat=p.repeat, server_session="cur") for p in session("cur", 3, rng)]
    verdict = compare(cur, None)
    assert verdict.status == NEW and not verdict.by_verdict(MISSING)


def test_sensitivity_reports_noise_and_detectable_change():
    rng = random.Random(11)
    rows = {r.metric: r for r in sensitivity(baseline(rng, offset=0.0), GateSettings(gpu_class="h200"), 3)}
    tput = rows["output_throughput"]
    assert tput.within_cv == pytest.approx(0.005, rel=0.8)
    assert -0.10 < tput.detectable < tput.margin < 0  # a loss, bigger than the 5 % margin
    assert tput.false_alarm < 0.01


# ---------------------------------------------------------------- settings
def _pyproject(tmp_path, text: str):
    path = tmp_path / "pyproject.toml"
    path.write_text(text)
    return path


def test_settings_from_pyproject_with_class_overrides(tmp_path):
    path = _pyproject(tmp_path, """
[tool.perfgate.gate]
alpha = 0.01
max_repeats = 8
[tool.perfgate.gate.min_effect]
median_ttft_ms = 0.5
[tool.perfgate.gate.class.cpu]
smoke = true
min_effect_all = 2.0
gated = ["failed", "output_throughput"]
""")
    h200 = load_gate_settings("h200", path)
    assert h200.alpha == 0.01 and h200.max_repeats == 8 and not h200.smoke
    assert h200.effect("median_ttft_ms") == 0.5 and h200.effect("p99_e2el_ms") == METRICS["p99_e2el_ms"].min_effect
    cpu = load_gate_settings("cpu", path)
    assert cpu.smoke and cpu.effect("p99_e2el_ms") == 2.0 and cpu.gated == ("failed", "output_throughput")


@pytest.mark.parametrize("text, expect", [
    ("[tool.perfgate.gate]\nalpah = 0.05\n", "valid keys: alpha"),
    ("[tool.perfgate.gate.min_effect]\np99_e2e_ms = 0.1\n", "did you mean p99_e2el_ms"),
    ("[tool.perfgate.gate]\ngated = [\"temperature_c_peak\"]\n", "cannot be gated"),
    ("[tool.perfgate.gate]\nrepeats = 5\nmax_repeats = 3\n", "max_repeats"),
])
def test_bad_settings_name_the_file_and_the_fix(tmp_path, text, expect):
    path = _pyproject(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_gate_settings("h200", path)
    assert expect in str(err.value) and str(path) in str(err.value)


def test_the_repositorys_settings_load():
    cpu = load_gate_settings("cpu")
    assert cpu.smoke and cpu.min_effect_all is not None
    assert not load_gate_settings("h200").smoke
