"""Warm-up: batches of requests until the median TTFT settles, outside the measured window."""

from __future__ import annotations

import statistics
import time
from typing import Any

from perfgate.core.records import RequestRecord
from perfgate.load.client import make_client
from perfgate.load.drivers import closed_loop
from perfgate.load.prompts import PromptBuilder, load_tokenizer
from perfgate.load.scenario import ClosedLoop, Scenario
from perfgate.load.schedule import request_specs
from perfgate.load.stream import PromptStream, new_nonce


async def warm_up_batches(client: Any, scenario: Scenario, builder: PromptBuilder, model: str, stream: PromptStream,
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
        return await warm_up_batches(client, scenario, builder, model, stream, [], [], label=stream_name)
    finally:
        await client.aclose()
