"""The gate's false-alarm rate and power, simulated from noise measured on an H200 (acceptance of the gate).

benchmarks/noise/h200-fixed-512-256.json holds the within-session and session-to-session noise that
`benchmarks/sensitivity.py` measured from real runs (fixed-512-256, 3 server sessions, fresh prompts). The
simulation runs the gate as the runner does: the configured repeats against a baseline of the configured
server sessions, one more repeat while INCONCLUSIVE, up to max_repeats.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from perfgate.verdict.baseline import baseline_from_phases
from perfgate.verdict.gate import REGRESSED, compare
from perfgate.verdict.gate_settings import load_gate_settings
from perfgate.verdict.power import SimulatedSession, simulate_gate

NOISE = json.loads((Path(__file__).resolve().parent.parent / "benchmarks" / "noise" /
                    "h200-fixed-512-256.json").read_text())["metrics"]
SETTINGS = load_gate_settings("h200")


def test_an_unchanged_server_rarely_fails_and_a_warmer_gpu_never_matters():
    aa = simulate_gate(NOISE, SETTINGS, trials=600, seed=11)
    warm = simulate_gate(NOISE, SETTINGS, trials=600, seed=11, current_extra={"temperature_c_peak": 64.0},
                         baseline_extra={"temperature_c_peak": 61.0})
    assert aa <= 0.01, f"A/A: {aa:.2%} of unchanged runs did not PASS"
    assert warm == aa  # the same draws with the GPU 3 C warmer: temperature is reported, never gated


@pytest.mark.parametrize("metric, change", [("output_throughput", -0.05), ("median_tpot_ms", 0.05)])
def test_a_five_percent_loss_is_caught(metric, change):
    caught = simulate_gate(NOISE, SETTINGS, trials=300, seed=12, shift={metric: change})
    assert caught >= 0.95, f"a 5 % worse {metric} was caught in only {caught:.1%} of trials"


def test_a_twenty_percent_slowdown_is_regressed_not_only_inconclusive():
    rng = random.Random(5)
    base = []
    for s in range(2):
        session = SimulatedSession(f"base{s}", NOISE, rng, {})
        base += [session.repeat() for _ in range(4)]
    current = SimulatedSession("current", NOISE, rng, {"output_throughput": -0.2, "median_tpot_ms": 0.25})
    # Gate what the noise model simulates (simulate_gate does the same): VRAM has no noise figure here.
    settings = SETTINGS.model_copy(update={"gated": tuple(m for m in SETTINGS.gated if m in NOISE)})
    verdict = compare([current.repeat() for _ in range(4)], baseline_from_phases(base), settings)
    assert verdict.status == REGRESSED
    assert {r.metric for r in verdict.regressions} >= {"output_throughput", "median_tpot_ms"}
