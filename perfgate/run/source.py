"""Where a measured phase's load comes from: the async engine, or Locust users in a child process.

``perfgate.run.measure.measure_phase`` takes one of these as its ``source``: it owns telemetry, records and the
phase JSON; a source only drives the load, calls ``window_started`` right before its measured window opens,
puts its records in ``sink`` as they exist, and says what it measured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from perfgate.core.progress import Progress, silent
from perfgate.core.records import RequestRecord
from perfgate.load.engine import LoadResult, run_load
from perfgate.load.locust_runner import LocustRunError, run_locust
from perfgate.load.scenario import Scenario
from perfgate.load.stream import PromptStream
from perfgate.load.warmup import warm_up
from perfgate.run.target import Target

Hook = Callable[[], Awaitable[None]]


@dataclass
class LoadOutcome:
    """What a source measured in its window (``events``: unix-time timeline events, ``sent`` stamps included)."""

    metrics: dict[str, float]
    invalid_reasons: list[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)


class LoadSource(Protocol):
    def phase_name(self, scenario: Scenario) -> str:
        """The phase's scenario name (its results' file stem and baseline key)."""

    def workload_note(self, scenario: Scenario) -> str: ...

    def incomplete_reason(self, finished: int) -> str:
        """Why the phase is invalid when ``run`` raised after ``finished`` records."""

    async def run(self, target: Target, scenario: Scenario, stream: PromptStream, *, window_started: Hook,
                  sink: list[RequestRecord], notes: list[str], results_dir: Path, stem: str) -> LoadOutcome: ...


@dataclass(frozen=True)
class EngineLoad:
    """perfgate's async engine: warm-up, then one closed- or open-loop window (``perfgate.load.engine``).

    A capacity sweep's point sets ``sweep_index``: its prompts come from the part ``sweep<index>`` of the
    stream, which no other point or phase draws from, and ``warmup`` is off after the sweep's first point
    (the server stays warm between points, and every point drains before the next starts)."""

    sweep_index: int | None = None
    warmup: bool = True

    def phase_name(self, scenario: Scenario) -> str:
        return scenario.name

    def workload_note(self, scenario: Scenario) -> str:
        point = f"sweep point {self.sweep_index}: " if self.sweep_index is not None else ""
        return f"workload: {point}{scenario.workload()}"

    def incomplete_reason(self, finished: int) -> str:
        what = "the sweep point" if self.sweep_index is not None else "the load"
        return f"{what} did not complete ({finished} requests finished; see the test's error)"

    async def run(self, target: Target, scenario: Scenario, stream: PromptStream, *, window_started: Hook,
                  sink: list[RequestRecord], notes: list[str], results_dir: Path, stem: str) -> LoadOutcome:
        part = f"sweep{self.sweep_index}" if self.sweep_index is not None else "measure"
        load = await run_load(target.base_url, scenario, model=target.served_model_name,
                              tokenizer=target.tokenizer_object(), api_key=target.api_key, warmup=self.warmup,
                              window_started=window_started, sink=sink, prompt_stream=stream, stream_name=part)
        notes += load.notes
        return LoadOutcome(metrics=load.metrics, invalid_reasons=list(load.invalid_reasons),
                           events=load_events(load))


ENGINE = EngineLoad()


@dataclass(frozen=True)
class LocustLoad:
    """Locust users ramped by ``ramp`` ("USERS:SPAWN_RATE:SECONDS,..."), in a child process, after the engine's
    warm-up (a fresh server compiles on its first batches); measured from the users' raw records."""

    ramp: str
    processes: int | None = None
    progress: Progress = field(default=silent, repr=False, compare=False)  # a line per ramp stage change

    def phase_name(self, scenario: Scenario) -> str:
        return f"{scenario.name}-locust"

    def workload_note(self, scenario: Scenario) -> str:
        return f"workload: {scenario.workload()}, driven by Locust users, ramp {self.ramp}"

    def incomplete_reason(self, finished: int) -> str:
        return f"Locust did not complete ({finished} requests recorded; see the test's error)"

    async def run(self, target: Target, scenario: Scenario, stream: PromptStream, *, window_started: Hook,
                  sink: list[RequestRecord], notes: list[str], results_dir: Path, stem: str) -> LoadOutcome:
        warm = await warm_up(target.base_url, scenario, model=target.served_model_name,
                             tokenizer=target.tokenizer_object(), api_key=target.api_key, prompt_stream=stream,
                             stream_name="locust-warmup")
        notes.append(f"warm-up: {len(warm)} requests through the async engine before Locust started")
        await window_started()
        try:
            result = await asyncio.to_thread(
                run_locust, target.base_url, scenario, model=target.served_model_name, tokenizer=target.tokenizer,
                results_dir=results_dir / "locust" / stem, ramp=self.ramp, processes=self.processes,
                api_key=target.api_key, prompt_stream=stream, progress=self.progress)
        except LocustRunError as exc:  # keep what the users recorded before Locust failed
            if exc.result is not None:
                sink += exc.result.records
            raise
        sink += result.records
        return LoadOutcome(metrics=result.metrics, invalid_reasons=list(result.invalid_reasons),
                           artifacts={"locust_log": str(result.log)})


def load_events(load: LoadResult) -> list[dict[str, Any]]:
    """The engine's phase events plus one event per measured request, all in unix time.

    Records are stamped with ``time.perf_counter()`` (monotonic); telemetry samples with ``time.time()``.
    The timeline and the saturation check (which looks only at the sending period) need one clock.
    """
    events = [dict(e) for e in load.events]
    for r in load.records:
        event: dict[str, Any] = {"event": "request", "index": r.index, "error": r.error}
        for stamp in ("scheduled", "sent", "first_token", "end"):
            value = getattr(r, stamp)
            event[stamp] = load.wall(value) if value else None
        events.append(event)
    return events
