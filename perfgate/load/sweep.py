"""The rate sweep: the highest open-loop rate at which every bound holds, one measured window per point.

Two parts. ``SweepControl`` is the search alone: it climbs the offered rate until a point fails, then bisects
between the highest passing rate and the lowest failing one, and can probe chosen rates inside that bracket
later (the capacity gate does, where a point decides its verdict). It calls a ``measure(rate, stage)``
function and knows nothing of HTTP, SLO files or telemetry, so its control is tested with a fake.
``run_sweep`` is the plain-engine sweep on top of it (bounds as a dict, no telemetry);
``perfgate.run.capacity`` measures each point as a full phase (telemetry, saturation, records on disk).

The result is a bracket, not a number: ``[lower, upper)``, ``lower`` the highest rate that passed, ``upper``
the lowest that failed. The capacity lies in it; its width is the sweep's resolution.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from perfgate._errors import ConfigError
from perfgate.core.catalog import spec
from perfgate.load.client import make_client
from perfgate.load.engine import run_load
from perfgate.load.prompts import load_tokenizer
from perfgate.load.scenario import OpenLoop, Scenario, Sweep
from perfgate.load.stream import PromptStream, new_nonce

CLIMB, REFINE, PROBE = "climb", "refine", "probe"


@dataclass
class SweepPoint:
    """One measured rate. ``failures`` says why it failed (empty when it passed).

    ``saturated``: the server fell behind (queue grew, preemptions): a failing point whatever its latencies.
    ``unjudged``: the window is invalid for a reason that is not the server's (the client could not keep the
    rate, the GPU's clocks were throttled, prompts hit a warm cache), so it says nothing about the server:
    it is neither a pass nor a failure. ``client_limited`` says the reason was the client.
    """

    rate: float
    passed: bool
    failures: list[str] = field(default_factory=list)
    saturated: bool = False
    client_limited: bool = False
    unjudged: bool = False
    stage: str = CLIMB
    result: Any = None  # the LoadResult or PhaseResult measured

    @property
    def verdict(self) -> str:
        if self.passed:
            return "pass"
        if self.client_limited:
            return "client limit"
        return "invalid" if self.unjudged else ("saturated" if self.saturated else "fail")


@dataclass
class SweepResult:
    """The bracket ``[lower, upper)`` and every point. ``lower``: the highest rate that passed (None: none
    did, the capacity is below ``upper``); ``upper``: the lowest rate the server failed (None: none failed
    up to the last one tried, the capacity is at least ``lower``). ``invalid_at``: the lowest rate whose
    window was invalid (``SweepPoint.unjudged``); such a point says nothing about the server, so it moves
    neither end, and nothing above it is offered."""

    points: list[SweepPoint] = field(default_factory=list)
    lower: float | None = None
    upper: float | None = None
    invalid_at: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def max_sustained_rate(self) -> float | None:
        """The highest offered rate whose bounds all held (None: not even the first)."""
        return self.lower

    @property
    def cut_short(self) -> bool:
        """True when a window below the server's first failure (or, none failing, any window) was invalid:
        above that rate the sweep could not look, so the server may do more than it shows."""
        return self.invalid_at is not None and (self.upper is None or self.invalid_at < self.upper)

    def search_upper(self) -> float | None:
        """The lowest rate not shown to pass: the server's failure, or an invalid window below it."""
        ends = [r for r in (self.upper, self.invalid_at) if r is not None]
        return min(ends) if ends else None

    def width(self) -> float | None:
        """The bracket's width relative to its upper end (None when it is open above)."""
        if self.upper is None:
            return None
        return (self.upper - (self.lower or 0.0)) / self.upper


PointMeasure = Callable[[float, str], Awaitable[SweepPoint]]


class SweepControl:
    """Climb, bisect and probe the offered rate; ``result`` holds the bracket and the points so far.

    ``measure(rate, stage)`` measures one point and returns it (passed or not, with why). ``rates``: an
    explicit climbing schedule instead of the sweep settings' geometric one.
    """

    def __init__(self, measure: PointMeasure, settings: Sweep, *, rates: list[float] | None = None) -> None:
        self._measure = measure
        self.settings = settings
        self._rates = sorted(rates) if rates else None
        self.result = SweepResult()

    async def run(self) -> SweepResult:
        """Climb, then refine with up to ``refine_steps`` bisections."""
        await self.climb()
        await self.bisect(self.settings.refine_steps)
        return self.result

    async def _point(self, rate: float, stage: str) -> SweepPoint:
        point = await self._measure(rate, stage)
        point.stage = stage
        self.result.points.append(point)
        res = self.result
        if point.passed:
            res.lower = rate if res.lower is None else max(res.lower, rate)
        elif point.unjudged or point.client_limited:
            res.invalid_at = rate if res.invalid_at is None else min(res.invalid_at, rate)
        else:
            res.upper = rate if res.upper is None else min(res.upper, rate)
        return point

    async def climb(self) -> None:
        """Offer rising rates until one fails: its SLOs broke, the server saturated, or the client could not
        keep the rate. That point is the bracket's upper end."""
        schedule = self._rates or self.settings.climb_rates()
        for rate in schedule:
            if rate > self.settings.max_rate:
                break
            point = await self._point(rate, CLIMB)
            if not point.passed:
                why = ("the client could not keep it (the server may do more)" if point.client_limited
                       else "its window was invalid (it says nothing about the server)" if point.unjudged
                       else "the server saturated" if point.saturated else "its SLOs failed")
                self.result.notes.append(f"climbing stopped at {rate:g} req/s: {why}: "
                                         + "; ".join(point.failures[:3]))
                return
        if self.result.upper is None and self.result.lower is not None:
            last = self.result.lower
            self.result.notes.append(f"no point failed up to {last:g} req/s (the last climbing point): the "
                                     "capacity is at least that; raise [sweep] max_rate or max_climb_points to "
                                     "find its upper end")

    def within_resolution(self) -> bool:
        width = self.result.width()
        return width is not None and width <= self.settings.resolution

    async def bisect(self, steps: int) -> int:
        """Up to ``steps`` bisections between the highest passing rate and the lowest one not shown to pass
        (the server's failure, or an invalid window below it); stops early once the bracket is within the
        resolution. Nothing above is bisected when nothing failed. Returns the points measured."""
        done = 0
        for _ in range(steps):
            res = self.result
            top = res.search_upper()
            if top is None:
                break
            if self.within_resolution():
                res.notes.append(f"bisection stopped: the bracket is within the resolution "
                                 f"({self.settings.resolution:.0%} of its upper end)")
                break
            if (top - (res.lower or 0.0)) <= self.settings.resolution * top:
                res.notes.append(f"bisection stopped: the window at {top:.4g} req/s was invalid and the rates "
                                 "between it and the highest passing one are within the resolution")
                break
            await self._point(((res.lower or 0.0) + top) / 2, REFINE)
            done += 1
        return done

    async def probe(self, rate: float) -> SweepPoint | None:
        """Measure ``rate`` if it lies strictly inside the bracket (where it can move an end); else None."""
        res = self.result
        top = res.search_upper()
        if (res.lower is not None and rate <= res.lower) or (top is not None and rate >= top) or rate <= 0:
            return None
        return await self._point(rate, PROBE)


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
                    prompt_stream: PromptStream | None = None, max_climb_points: int = 30,
                    resolution: float = 0.01) -> SweepResult:
    """Find the highest open-loop rate at which every bound in ``bounds`` holds, with the plain engine.

    Rates climb (``rates`` in order, else ``start_rate`` x ``growth`` up to ``max_rate``) until one fails,
    then ``refine_steps`` bisections between the last pass and the first failure. Warm-up runs once,
    before the first point. A point the client could not keep (invalid) fails as the client's limit: above
    it, the figures would describe the client, so the result says the limit is the client's. Point *k*
    draws its prompts from the part ``f"sweep{k}"`` of ``prompt_stream`` (default: a fresh one), so points
    share none.
    """
    if not isinstance(scenario.load, OpenLoop):
        raise ConfigError(f"scenario '{scenario.name}' is closed loop; a sweep varies the request rate",
                          fix="use an open-loop scenario ([load] kind = \"open\")")
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    stream = prompt_stream or PromptStream(scenario.seed, new_nonce(), 0)
    bounds = {**bounds, "error_rate": max_error_rate}
    schedule = [r for r in rates if r <= max_rate] if rates else None
    if rates and not schedule:
        return SweepResult(notes=[f"no rate of {rates} is within max_rate {max_rate:g}"])
    settings = Sweep(start_rate=min([start_rate, *(schedule or [])]), growth=growth,
                     max_rate=max(max_rate, start_rate), max_climb_points=max_climb_points,
                     refine_steps=refine_steps, resolution=resolution,
                     point_duration_s=scenario.duration_s if not scenario.num_requests else None,
                     point_requests=scenario.num_requests)
    client = make_client(base_url, api_key=api_key, timeout_s=scenario.request_timeout_s, transport=transport)
    measured = 0

    async def measure(rate: float, stage: str) -> SweepPoint:
        nonlocal measured
        load = scenario.load.model_copy(update={"rate": rate})
        res = await run_load(base_url, scenario.model_copy(update={"load": load}), model=model,
                             tokenizer=tokenizer, api_key=api_key, client=client, warmup=not measured,
                             prompt_stream=stream, stream_name=f"sweep{measured}")
        measured += 1
        failures = check_bounds(res.metrics, bounds)
        return SweepPoint(rate, res.valid and not failures, failures + res.invalid_reasons,
                          client_limited=not res.valid, unjudged=not res.valid, result=res)

    control = SweepControl(measure, settings, rates=schedule)
    try:
        return await control.run()
    finally:
        await client.aclose()
