"""The two ways the engine drives requests: closed loop and open loop.

Closed loop: ``concurrency`` workers, each sends its next request when its last one finished. Open loop:
request *i* goes out at its scheduled time whether or not earlier ones finished; each record keeps when it
was due, so the send lag (sent - scheduled) shows a client that fell behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from perfgate.core.records import RequestRecord, RequestSpec
from perfgate.load.request import send_request


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
