"""The rate sweep: the highest open-loop rate at which every bound holds, one measured window per point."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from perfgate._errors import ConfigError
from perfgate.core.catalog import spec
from perfgate.load.client import make_client
from perfgate.load.engine import LoadResult, run_load
from perfgate.load.prompts import load_tokenizer
from perfgate.load.scenario import OpenLoop, Scenario
from perfgate.load.stream import PromptStream, new_nonce


@dataclass
class SweepPoint:
    rate: float
    result: LoadResult
    passed: bool
    failures: list[str]


@dataclass
class SweepResult:
    """``max_sustained_rate``: the highest offered rate whose bounds all held (None: not even the first)."""

    max_sustained_rate: float | None
    points: list[SweepPoint]
    # True when the sweep stopped because the client could not keep the rate: the server may do more.
    limited_by_client: bool = False
    notes: list[str] = field(default_factory=list)


def check_bounds(metrics: dict[str, float], bounds: dict[str, float]) -> list[str]:
    """Failures of ``metrics`` against ``bounds`` (catalog keys; "lower is better" keys are maxima)."""
    failures = []
    for key, bound in bounds.items():
        better = spec(key).better
        value = metrics.get(key)
        if value is None:
            failures.append(f"{key} missing (no completed request)")
        elif (better == "higher" and value < bound) or (better != "higher" and value > bound):
            failures.append(f"{key} = {value:.4g} {'<' if better == 'higher' else '>'} {bound:g}")
    return failures


async def run_sweep(base_url: str, scenario: Scenario, *, model: str, tokenizer: Any, bounds: dict[str, float],
                    rates: list[float] | None = None, start_rate: float = 1.0, growth: float = 2.0,
                    max_rate: float = 1000.0, refine_steps: int = 3, api_key: str | None = None,
                    max_error_rate: float = 0.0, transport: str = "fast",
                    prompt_stream: PromptStream | None = None) -> SweepResult:
    """Find the highest open-loop rate at which every bound in ``bounds`` holds.

    Rates climb (``rates`` in order, else ``start_rate`` x ``growth`` up to ``max_rate``) until one fails,
    then ``refine_steps`` bisections between the last pass and the first failure. Warm-up runs once,
    before the first point. A point the client could not keep (invalid) ends the sweep: above it, the
    figures would describe the client, so the result says the limit is the client's. Point *k* draws its
    prompts from the part ``f"sweep{k}"`` of ``prompt_stream`` (default: a fresh one), so points share none.
    """
    if not isinstance(scenario.load, OpenLoop):
        raise ConfigError(f"scenario '{scenario.name}' is closed loop; a sweep varies the request rate",
                          fix="use an open-loop scenario ([load] kind = \"open\")")
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    stream = prompt_stream or PromptStream(scenario.seed, new_nonce(), 0)
    bounds = {**bounds, "error_rate": max_error_rate}
    points: list[SweepPoint] = []
    result = SweepResult(None, points)

    async def measure(rate: float) -> SweepPoint:
        load = scenario.load.model_copy(update={"rate": rate})
        point_scenario = scenario.model_copy(update={"load": load})
        res = await run_load(base_url, point_scenario, model=model, tokenizer=tokenizer, api_key=api_key,
                             client=client, warmup=not points, prompt_stream=stream,
                             stream_name=f"sweep{len(points)}")
        failures = check_bounds(res.metrics, bounds)
        point = SweepPoint(rate, res, res.valid and not failures, failures + res.invalid_reasons)
        points.append(point)
        return point

    schedule = iter(sorted(rates)) if rates else (start_rate * growth ** i for i in itertools.count())
    client = make_client(base_url, api_key=api_key, timeout_s=scenario.request_timeout_s, transport=transport)
    try:
        good: float | None = None
        bad: float | None = None
        for rate in schedule:
            if rate > max_rate:
                break
            point = await measure(rate)
            if not point.result.valid:
                result.limited_by_client = True
                result.notes.append(f"stopped at {rate:g} req/s: {'; '.join(point.result.invalid_reasons)}")
                bad = rate
                break
            if not point.passed:
                bad = rate
                break
            good = rate
        if bad is not None and not result.limited_by_client:
            low = good if good is not None else 0.0
            for _ in range(refine_steps):
                mid = (low + bad) / 2
                if mid <= 0:
                    break
                point = await measure(mid)
                if not point.result.valid:
                    result.limited_by_client = True
                    bad = mid
                elif point.passed:
                    low = good = mid
                else:
                    bad = mid
        result.max_sustained_rate = good
    finally:
        await client.aclose()
    return result
