"""The progress lines of a measured phase: one when it starts, one with its result when it ends."""

from __future__ import annotations

import math

from perfgate.core.phase import PhaseResult
from perfgate.load.scenario import Scenario


def phase_started_line(profile: str, phase_name: str, repeat: int, scenario: Scenario, *,
                       ramp: str | None = None) -> str:
    """``cpu-tiny/cpu-closed repeat 0: started, 160 requests, /v1/completions, prompt 128 tok, ...``"""
    workload = scenario.workload().rsplit(", ", 1)[0]  # its count or window goes first, below
    if ramp is not None:  # Locust runs for the ramp's time, not the scenario's count
        size = f"Locust ramp {ramp}"
    else:
        size = f"{scenario.num_requests} requests" if scenario.num_requests else f"{scenario.duration_s:g} s window"
    return f"{profile}/{phase_name} repeat {repeat}: started, {size}, {workload}"


def _figure(metrics: dict[str, float], key: str, fmt: str) -> str:
    value = metrics.get(key)
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def phase_result_line(phase: PhaseResult) -> str:
    """``cpu-tiny/cpu-closed repeat 0: 5.08 req/s, p99 e2el 820 ms, median ttft 99 ms, 160 requests in
    31.5 s, valid`` (or ``INVALID: why``)."""
    m = phase.metrics
    verdict = "valid" if phase.valid else "INVALID: " + "; ".join(phase.invalid_reasons)
    return (f"{phase.profile}/{phase.scenario} repeat {phase.repeat}: {_figure(m, 'request_throughput', '.2f')} req/s, "
            f"p99 e2el {_figure(m, 'p99_e2el_ms', '.0f')} ms, median ttft {_figure(m, 'median_ttft_ms', '.0f')} ms, "
            f"{_figure(m, 'completed', '.0f')} requests in {_figure(m, 'duration', '.1f')} s, {verdict}")
