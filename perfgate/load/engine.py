"""The async load engine: warm-up until warm, then one measured window, closed or open loop.

Closed loop: ``concurrency`` workers, each sends its next request when its last one finished. Open loop:
request *i* goes out at its scheduled time (gamma gaps, Poisson when burstiness is 1, normalised like
``vllm bench serve`` so N requests span N/rate seconds) whether or not earlier ones finished. The client
checks itself: send lag (sent - scheduled), achieved vs offered rate and its own CPU; when it fell behind,
the result is marked invalid with the reason rather than passing with numbers that describe the client.

Prompts come from a ``PromptStream`` (scenario seed, run nonce, repeat index): the measured window, every
warm-up batch and every sweep point draw from their own named part of it, so none re-sends prompts an
earlier request on the server sent (vLLM's prefix cache would serve them), and the same stream rebuilds
the same prompts.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from perfgate.load.prompts import PromptBuilder, load_tokenizer
from perfgate.load.request import RequestRecord, RequestSpec, send_request
from perfgate.load.stream import PromptStream, new_nonce
from perfgate.metrics import compute_metrics, mismatch_summary
from perfgate.scenario import ClosedLoop, OpenLoop, Scenario

Hook = Callable[[], Awaitable[None]]


@dataclass
class LoadResult:
    scenario: str
    workload: str
    records: list[RequestRecord]
    warmup_records: list[RequestRecord]
    metrics: dict[str, float]
    valid: bool
    invalid_reasons: list[str]
    window_start: float  # time.time() when the measured window opened (after warm-up)
    window_end: float  # time.time() when its last request finished
    events: list[dict[str, Any]] = field(default_factory=list)  # timeline: {"t": unix time, "event": ...}
    # time.time() - time.perf_counter(): turns the records' perf_counter stamps into unix times.
    clock_offset: float = 0.0
    notes: list[str] = field(default_factory=list)
    # PromptStream.as_dict() of the prompts sent: enough to rebuild them.
    prompt_stream: dict[str, Any] = field(default_factory=dict)

    def wall(self, perf_t: float) -> float:
        return perf_t + self.clock_offset


def make_client(base_url: str, *, api_key: str | None = None, max_connections: int | None = None,
                timeout_s: float = 600.0, transport: str = "fast") -> Any:
    """The engine's HTTP client: perfgate's FastClient for plain http (the default), else httpx.

    The httpx client drops the defaults that throttle load (100 connections, 5 s timeouts).
    """
    headers = {"Accept-Encoding": "identity", "Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if transport == "fast" and base_url.startswith("http://"):
        from perfgate.load.fasthttp import FastClient

        return FastClient(base_url, headers=headers)
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"), headers=headers,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                            keepalive_expiry=60.0),
        # read bounds a stalled stream; pool=None: waiting for a connection is the engine's business.
        timeout=httpx.Timeout(connect=10.0, read=timeout_s, write=30.0, pool=None))


def arrival_offsets(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Seconds from the window start at which each request is due (vLLM's ``get_request`` schedule)."""
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    offsets = np.cumsum(gaps)
    if n and offsets[-1] > 0:
        offsets *= (n / rate) / offsets[-1]  # so the achieved rate is the asked one, whatever the seed
    return offsets.tolist()


def request_specs(scenario: Scenario, builder: PromptBuilder, model: str, stream: PromptStream,
                  name: str = "measure", count: int | None = None, *,
                  prefix_name: str | None = None) -> Iterator[RequestSpec]:
    """The scenario's requests, drawn from the part ``name`` of ``stream`` ("measure", "warmup0", ...).

    The same stream and name give byte-identical requests; another repeat, nonce, scenario or name gives
    other prompts from their first token. A scenario's ``shared_prefix_tokens`` open every request with one
    prefix, drawn from ``prefix_name`` (default: ``name``): shared within a phase, never across phases.

    The LENGTHS (prompt and output tokens of request i) come from the seed and ``name`` alone (not the nonce
    or the repeat), so every repeat and every run of a scenario is the same workload with other text. Drawn
    per repeat, they made the workload itself vary: on an H200, open-loop chat (outputs 32-512 tokens, 120
    requests) showed 4.9 % repeat-to-repeat CV in output throughput and 9.2 % in median E2E from that alone.
    """
    if not isinstance(stream, PromptStream):
        raise TypeError(f"request_specs needs a PromptStream, not {type(stream).__name__} "
                        "(PromptStream(scenario.seed, new_nonce(), repeat))")
    rng = stream.rng(f"{scenario.name}:{name}")
    lengths = random.Random(f"{stream.seed}:{scenario.name}:{name}:lengths")
    prefix = ""
    if scenario.shared_prefix_tokens:
        prefix = builder.prefix_text(scenario.shared_prefix_tokens,
                                     stream.rng(f"{scenario.name}:{prefix_name or name}:prefix"))
    sampling = scenario.sampling.body()
    for i in itertools.count() if count is None else range(count):
        prompt_len, output_len = scenario.prompt_tokens.sample(lengths), scenario.output_tokens.sample(lengths)
        prompt = builder.build(prompt_len, rng, prefix)
        yield RequestSpec.build(i, model=model, path=scenario.endpoint, prompt_tokens=prompt.tokens,
                                max_tokens=output_len, text=prompt.text,
                                messages=prompt.messages, ignore_eos=scenario.ignore_eos, sampling=sampling)


async def closed_loop(client: Any, specs: Iterable[RequestSpec], concurrency: int, *,
                      sink: list[RequestRecord], deadline: float | None = None, phase: str = "measure",
                      timeout_s: float = 600.0) -> None:
    """``concurrency`` workers; each takes the next spec when its request finished, until specs or time run out."""
    it = iter(specs)

    async def worker() -> None:
        while deadline is None or time.perf_counter() < deadline:
            spec = next(it, None)
            if spec is None:
                return
            sink.append(await send_request(client, spec, phase=phase, timeout_s=timeout_s))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def open_loop(client: Any, specs: Iterable[RequestSpec], offsets: list[float], *,
                    sink: list[RequestRecord], max_concurrency: int | None = None,
                    timeout_s: float = 600.0) -> float:
    """Send each spec at ``start + offset`` regardless of earlier ones; returns ``start`` (perf_counter)."""
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def one(spec: RequestSpec, due: float) -> None:
        if gate is None:
            sink.append(await send_request(client, spec, scheduled=due, timeout_s=timeout_s))
            return
        t = time.perf_counter()
        async with gate:
            queued = time.perf_counter() - t
            sink.append(await send_request(client, spec, scheduled=due, queued_s=queued, timeout_s=timeout_s))

    tasks: list[asyncio.Task] = []
    start = time.perf_counter()
    try:
        for spec, offset in zip(specs, offsets):
            due = start + offset
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(spec, due)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:  # cancelled (SIGINT, a phase timeout): do not leave requests running
            task.cancel()
    return start


async def run_load(base_url: str, scenario: Scenario, *, model: str, tokenizer: Any,
                   api_key: str | None = None, client: Any = None, transport: str = "fast",
                   goodput_slos_ms: dict[str, float] | None = None, warmup: bool = True,
                   window_started: Hook | None = None, window_ended: Hook | None = None,
                   sink: list[RequestRecord] | None = None, prompt_stream: PromptStream | None = None,
                   stream_name: str = "measure") -> LoadResult:
    """Warm up, then drive ``scenario`` against ``base_url`` and measure one window.

    ``tokenizer``: the served model's tokenizer (object, directory, or ``synthetic:<name>``).
    ``transport``: "fast" (perfgate's HTTP/1.1 client, plain http) or "httpx"; ``client`` overrides both.
    ``window_started``/``window_ended`` are awaited right around the measured window (telemetry start and
    stop there; ``window_ended`` runs even when the load is cancelled). ``sink`` receives records as they
    complete, so a caller keeps partial results when the run is interrupted.
    ``prompt_stream``: where the prompts are drawn from (None: ``PromptStream(scenario.seed, new_nonce(), 0)``,
    prompts no earlier run sent); the measured window draws from its part ``stream_name``.
    """
    stream = prompt_stream or PromptStream(scenario.seed, new_nonce(), 0)
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    builder = PromptBuilder(tokenizer, chat=scenario.endpoint.endswith("chat/completions"))
    load = scenario.load
    opened = client is None
    if client is None:
        cap = load.concurrency if isinstance(load, ClosedLoop) else load.max_concurrency
        client = make_client(base_url, api_key=api_key, max_connections=cap and cap + 8,
                             timeout_s=scenario.request_timeout_s, transport=transport)
    clock_offset = time.time() - time.perf_counter()
    events: list[dict[str, Any]] = []
    notes: list[str] = []
    records: list[RequestRecord] = sink if sink is not None else []
    try:
        warm = await _warm_up(client, scenario, builder, model, stream, events, notes) if warmup else []

        # Build every measured request before the window opens: prompt building is not load.
        if isinstance(load, OpenLoop):
            n = scenario.num_requests or max(1, round(load.rate * (scenario.duration_s or 0)))
            specs: Iterable[RequestSpec] = list(request_specs(scenario, builder, model, stream, stream_name, n))
            offsets = arrival_offsets(n, load.rate, load.burstiness, scenario.seed)
        else:
            n = scenario.num_requests or load.concurrency * 8
            lazy = request_specs(scenario, builder, model, stream, stream_name)
            specs = list(itertools.islice(lazy, n)) if scenario.num_requests else itertools.chain(
                list(itertools.islice(lazy, n)), lazy)

        if window_started is not None:
            await window_started()
        window_start = time.time()
        events.append({"t": window_start, "event": "window_start"})
        cpu0, t0 = time.process_time(), time.perf_counter()
        start = t0
        try:
            if isinstance(load, OpenLoop):
                start = await open_loop(client, specs, offsets, sink=records, timeout_s=scenario.request_timeout_s,
                                        max_concurrency=load.max_concurrency)
            else:
                deadline = t0 + scenario.duration_s if scenario.duration_s and not scenario.num_requests else None
                await closed_loop(client, specs, load.concurrency, sink=records, deadline=deadline,
                                  timeout_s=scenario.request_timeout_s)
            t1 = time.perf_counter()
            cpu = time.process_time() - cpu0
        finally:
            window_end = time.time()
            events.append({"t": window_end, "event": "window_end"})
            if window_ended is not None:
                await window_ended()
    finally:
        if opened:
            await client.aclose()

    duration = t1 - t0
    metrics = compute_metrics(records, duration, goodput_slos_ms=goodput_slos_ms)
    metrics["client_cpu_pct"] = 100.0 * cpu / duration
    reasons: list[str] = []
    if records:
        metrics["achieved_rate"] = len(records) / max(max(r.sent for r in records) - start, 1e-9)
    if isinstance(load, OpenLoop) and records:
        # Offered = the drawn schedule's rate (N / last due time); achieved = N / last actual send.
        due_span = max(r.scheduled for r in records) - start
        metrics["offered_rate"] = load.rate
        metrics["achieved_rate_ratio"] = min(1.0, due_span / max(max(r.sent for r in records) - start, 1e-9))
        if metrics["achieved_rate_ratio"] < scenario.self_check.min_achieved_rate_ratio:
            cap = (f"; max_concurrency={load.max_concurrency} may be binding"
                   if load.max_concurrency else "")
            reasons.append(f"client sent at {metrics['achieved_rate']:.2f} req/s, "
                           f"{metrics['achieved_rate_ratio']:.0%} of the offered {load.rate:g} req/s "
                           f"(bound {scenario.self_check.min_achieved_rate_ratio:.0%}){cap}")
    lag = metrics.get("p99_send_lag_ms", 0.0)
    if lag > scenario.self_check.max_p99_send_lag_ms:
        reasons.append(f"client fell behind its schedule: P99 send lag {lag:.1f} ms > "
                       f"{scenario.self_check.max_p99_send_lag_ms:g} ms (client CPU "
                       f"{metrics['client_cpu_pct']:.0f} % of one core)")
    if metrics["completed"] == 0:
        reasons.append(f"no request completed ({int(metrics['failed'])} failed); first error: "
                       f"{next((r.error_detail for r in records if r.error), 'none sent')}")
    if metrics["token_count_mismatches"]:
        reasons.append(f"{int(metrics['token_count_mismatches'])} request(s) served other token counts "
                       "than asked: " + "; ".join(mismatch_summary(records, 3)))
    return LoadResult(scenario=scenario.name, workload=scenario.workload(), records=list(records),
                      warmup_records=warm, metrics=metrics, valid=not reasons, invalid_reasons=reasons,
                      window_start=window_start, window_end=window_end, events=events,
                      clock_offset=clock_offset, notes=notes, prompt_stream=stream.as_dict())


async def _warm_up(client: Any, scenario: Scenario, builder: PromptBuilder, model: str, stream: PromptStream,
                   events: list[dict[str, Any]], notes: list[str], label: str = "warmup") -> list[RequestRecord]:
    """Batches of warm-up requests until the median TTFT settles (the CPU build compiles on first use).

    Batch *b* draws from the stream's part ``f"{label}{b}"``: fresh prompts, so each batch does the work a
    measured request does instead of being served from the previous batch's prefix cache.
    """
    w, load = scenario.warmup, scenario.load
    if w.requests == 0:
        return []
    concurrency = w.concurrency or (load.concurrency if isinstance(load, ClosedLoop)
                                    else min(w.requests, load.max_concurrency or w.requests))
    done: list[RequestRecord] = []
    previous: float | None = None
    for batch in range(w.max_batches):
        batch_records: list[RequestRecord] = []
        specs = request_specs(scenario, builder, model, stream, f"{label}{batch}", w.requests)
        await closed_loop(client, specs, concurrency, sink=batch_records, phase="warmup",
                          timeout_s=scenario.request_timeout_s)
        done += batch_records
        ttfts = [r.ttft for r in batch_records if r.ttft is not None and r.success]
        median = statistics.median(ttfts) if ttfts else None
        events.append({"t": time.time(), "event": "warmup_batch", "batch": batch,
                       "median_ttft_ms": None if median is None else median * 1000.0,
                       "failed": sum(1 for r in batch_records if not r.success)})
        if median is None:
            notes.append(f"warm-up batch {batch}: every request failed "
                         f"({batch_records[0].error_detail if batch_records else 'none sent'})")
            break
        if w.until_stable_pct == 0:
            break
        if previous is not None and abs(median - previous) <= previous * w.until_stable_pct / 100.0:
            break
        previous = median
    else:
        notes.append(f"warm-up did not settle within {w.max_batches} batches of {w.requests} "
                     f"(median TTFT still moving more than {w.until_stable_pct:g} %)")
    return done


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
    from perfgate.catalog import spec

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
        from perfgate._errors import ConfigError

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


async def warm_up(base_url: str, scenario: Scenario, *, model: str, tokenizer: Any,
                  api_key: str | None = None, prompt_stream: PromptStream | None = None,
                  stream_name: str = "warmup") -> list[RequestRecord]:
    """Only the scenario's warm-up phase (until the median TTFT settles), for drivers other than this
    engine: Locust measures from its first request, and a fresh server compiles on its first batches.
    Batch *b* draws from the part ``f"{stream_name}{b}"`` of ``prompt_stream`` (default: a fresh one)."""
    stream = prompt_stream or PromptStream(scenario.seed, new_nonce(), 0)
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    builder = PromptBuilder(tokenizer, chat=scenario.endpoint.endswith("chat/completions"))
    client = make_client(base_url, api_key=api_key, timeout_s=scenario.request_timeout_s)
    try:
        return await _warm_up(client, scenario, builder, model, stream, [], [], label=stream_name)
    finally:
        await client.aclose()
