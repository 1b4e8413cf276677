"""The async load engine: warm-up until warm, then one measured window, closed or open loop.

The parts: ``schedule`` (the requests and the open loop's arrival times: gamma gaps, Poisson when
burstiness is 1, normalised like ``vllm bench serve`` so N requests span N/rate seconds), ``drivers``
(closed and open loop), ``warmup``, ``client``; the rate sweep is in ``sweep``. The engine runs one window
and checks itself: send lag (sent - scheduled), achieved vs offered rate and its own CPU; when the client
fell behind, the result is marked invalid with the reason rather than passing with numbers that describe
the client.

Prompts come from a ``PromptStream`` (scenario seed, run nonce, repeat index): the measured window, every
warm-up batch and every sweep point draw from their own named part of it, so none re-sends prompts an
earlier request on the server sent (vLLM's prefix cache would serve them), and the same stream rebuilds
the same prompts.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from perfgate.core.records import RequestRecord, RequestSpec
from perfgate.load.client import make_client
from perfgate.load.drivers import closed_loop, open_loop
from perfgate.load.metrics import compute_metrics, mismatch_summary
from perfgate.load.prompts import PromptBuilder, load_tokenizer
from perfgate.load.scenario import ClosedLoop, OpenLoop, Scenario
from perfgate.load.schedule import arrival_offsets, request_specs
from perfgate.load.stream import PromptStream, new_nonce
from perfgate.load.warmup import warm_up_batches

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
        warm = await warm_up_batches(client, scenario, builder, model, stream, events, notes) if warmup else []

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
