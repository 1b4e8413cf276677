"""The gate's power and false-alarm rate by simulation, from measured noise.

Sessions are drawn the way serving figures vary: every metric of a server session is offset by a normal
draw of its session-to-session noise, every repeat adds its within-session noise (both on the log scale).
A trial runs the gate as the runner does: ``repeats`` repeats, then one more while the gate is INCONCLUSIVE,
up to ``max_repeats``. The result is the fraction of trials that did not PASS.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from perfgate.core.phase import PhaseResult
from perfgate.verdict.baseline import baseline_from_phases
from perfgate.verdict.gate import INCONCLUSIVE, PASS, compare
from perfgate.verdict.gate_settings import GateSettings

# metric -> {"mean": value, "within": log-scale sd between repeats, "between": sd between sessions}
NoiseModel = Mapping[str, Mapping[str, float]]


class SimulatedSession:
    def __init__(self, name: str, noise: NoiseModel, rng: random.Random, shift: Mapping[str, float]) -> None:
        self.name, self.noise, self.rng, self.shift = name, noise, rng, shift
        self.offset = {m: rng.gauss(0, v.get("between") or 0.0) for m, v in noise.items()}
        self.repeats = 0

    def repeat(self, extra: Mapping[str, float] | None = None) -> PhaseResult:
        metrics = {}
        for m, v in self.noise.items():
            metrics[m] = v["mean"] * (1 + self.shift.get(m, 0.0)) * math.exp(self.offset[m] + self.rng.gauss(0, v["within"]))
        metrics.update(extra or {})
        self.repeats += 1
        return PhaseResult("sim", "sim", "sim", metrics=metrics, repeat=self.repeats, server_session=self.name)


def simulate_gate(noise: NoiseModel, settings: GateSettings, *, trials: int, shift: Mapping[str, float] | None = None,
                  current_extra: Mapping[str, float] | None = None, baseline_extra: Mapping[str, float] | None = None,
                  seed: int = 0) -> float:
    """Fraction of ``trials`` whose gate verdict is not PASS.

    ``shift`` moves the current run's metrics (relative, e.g. {"output_throughput": -0.05}); the ``*_extra``
    dicts set fixed values on every repeat of either side (e.g. a temperature 3 C higher now).
    """
    rng = random.Random(seed)
    # The gate judges what the noise model simulates: a gated metric with no noise figure would be missing
    # from every simulated repeat, which the gate (rightly) calls a telemetry failure on a GPU class.
    settings = settings.model_copy(update={"gated": tuple(m for m in settings.gated if m in noise)})
    alarms = 0
    for _ in range(trials):
        base = []
        for s in range(settings.baseline_sessions):
            session = SimulatedSession(f"base{s}", noise, rng, {})
            base += [session.repeat(baseline_extra) for _ in range(settings.repeats)]
        baseline = baseline_from_phases(base, min_repeats=2, min_sessions=settings.baseline_sessions)
        current = SimulatedSession("current", noise, rng, shift or {})
        phases = [current.repeat(current_extra) for _ in range(settings.repeats)]
        verdict = compare(phases, baseline, settings)
        while verdict.status == INCONCLUSIVE and len(phases) < settings.max_repeats:
            phases.append(current.repeat(current_extra))
            verdict = compare(phases, baseline, settings)
        alarms += verdict.status != PASS
    return alarms / trials
