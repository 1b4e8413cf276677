"""The load engine against a small local server that streams like vLLM and injects faults on request.

The server (asyncio, raw HTTP/1.1, chunked SSE) reads the request's ``model`` field as the behaviour to
play: ``ok``, ``slow`` (50 ms per token), ``warming`` (first 4 requests slow), ``http400``, ``http503``,
``truncated``, ``malformed``, ``nodone``, ``errorevent``, ``stall``, ``wrongcount``. Real vLLM runs in
test_bench_accuracy.py; faults that vLLM cannot be made to produce on demand are injected here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from dataclasses import dataclass

import pytest

from perfgate.load import (
    PromptBuilder,
    RequestSpec,
    load_tokenizer,
    make_client,
    run_load,
    run_sweep,
    send_request,
)
from perfgate.load.scenario import ClosedLoop, Fixed, OpenLoop, Scenario, SelfCheck, Warmup
from perfgate.load.schedule import arrival_offsets


@dataclass
class ServerState:
    count: int = 0
    active: int = 0
    peak: int = 0


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: object) -> bytes:
    return _chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")


async def _play(writer: asyncio.StreamWriter, req: dict, state: ServerState) -> bool:
    """Answer one request; False when the connection must close."""
    mode = req.get("model", "ok")
    n = req.get("max_tokens") or req.get("max_completion_tokens") or 1
    prompt_len = len(str(req.get("prompt", "")).split())
    if mode in ("http400", "http503"):
        code = int(mode[4:])
        body = json.dumps({"error": {"message": f"injected {code}"}}).encode()
        writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (code, len(body), body))
        return True
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    await writer.drain()
    first_delay = {"slow": 0.05, "stall": 0.0}.get(mode, 0.0)
    if mode == "warming":
        first_delay = 0.5 if state.count <= 4 else 0.1
    per_token = 0.05 if mode == "slow" else 0.0
    await asyncio.sleep(first_delay)
    for i in range(n):
        if i and per_token:
            await asyncio.sleep(per_token)
        writer.write(_event({"choices": [{"index": 0, "text": f" w{i}", "finish_reason": None}]}))
        if mode == "truncated" and i == 1:
            await writer.drain()
            return False  # close mid-stream, no terminating chunk
        if mode == "malformed" and i == 1:
            writer.write(_chunk(b'data: {"choices": [{"text": \n\n'))
        if mode == "stall":
            await writer.drain()
            await asyncio.sleep(3.0)
            return False
    if mode == "errorevent":
        writer.write(_event({"error": {"message": "injected engine error", "code": 500}}))
    extra = 1 if mode == "wrongcount" else 0
    writer.write(_event({"choices": [], "usage": {"prompt_tokens": prompt_len + extra, "completion_tokens": n}}))
    if mode != "nodone":
        writer.write(_chunk(b"data: [DONE]\n\n"))
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


@pytest.fixture(scope="module")
async def fault_server():
    state = ServerState()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(line.split(":", 1) for line in head.decode().split("\r\n")[1:] if ":" in line)
                length = int({k.lower(): v for k, v in headers.items()}.get("content-length", 0))
                req = json.loads(await reader.readexactly(length)) if length else {}
                state.count += 1
                state.active += 1
                state.peak = max(state.peak, state.active)
                try:
                    if not await _play(writer, req, state):
                        break
                finally:
                    state.active -= 1
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", state
    server.close()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("synthetic:tiny")


def peak_in_flight(records) -> int:
    """Most requests in flight at once, as the client saw them (send to stream closed)."""
    edges = sorted([(r.sent, 1) for r in records] + [(r.closed, -1) for r in records])
    return max(itertools.accumulate(step for _, step in edges))


def spec(mode: str, max_tokens: int = 4, index: int = 0) -> RequestSpec:
    return RequestSpec.build(index, model=mode, path="/v1/completions", prompt_tokens=3, max_tokens=max_tokens,
                             text="ba be bi", ignore_eos=True)


def scenario(load, *, n: int = 8, out: int = 4, warmup: int = 0, **kw) -> Scenario:
    return Scenario(name="t", description="test", prompt_tokens=Fixed(value=8), output_tokens=Fixed(value=out),
                    load=load, num_requests=n, warmup=Warmup(requests=warmup, until_stable_pct=15,
                                                             max_batches=8), **kw)


TRANSPORTS = pytest.mark.parametrize("transport", ["fast", "httpx"])


async def one(base: str, mode: str, transport: str = "fast", **kw) -> object:
    async with make_client(base, timeout_s=kw.get("timeout_s", 30.0), transport=transport) as client:
        return await send_request(client, spec(mode), **kw)


@TRANSPORTS
async def test_ok_stream_is_timed_and_counted(fault_server, transport: str) -> None:
    rec = await one(fault_server[0], "ok", transport)
    assert rec.success and rec.status == 200
    assert len(rec.token_times) == 4 and rec.output_tokens == 4 and rec.prompt_tokens == 3
    assert rec.sent <= rec.first_token <= rec.end <= rec.closed
    assert rec.token_count_mismatch is None


@pytest.mark.parametrize("mode, error", [("http400", "http_4xx"), ("http503", "http_5xx"),
                                         ("truncated", "stream"), ("malformed", "stream"), ("nodone", "stream"),
                                         ("errorevent", "stream")])
@TRANSPORTS
async def test_faults_are_classified_never_raised(fault_server, mode: str, error: str, transport: str) -> None:
    rec = await one(fault_server[0], mode, transport)
    assert rec.error == error, rec.error_detail
    assert rec.error_detail


@TRANSPORTS
async def test_client_timeout_is_a_timeout(fault_server, transport: str) -> None:
    rec = await one(fault_server[0], "stall", transport, timeout_s=0.3)
    assert rec.error == "timeout", rec.error_detail


@TRANSPORTS
async def test_refused_connection_is_connect(transport: str) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = await one(f"http://127.0.0.1:{port}", "ok", transport)
    assert rec.error == "connect" and rec.status == 0


@TRANSPORTS
async def test_token_count_mismatch_is_reported(fault_server, transport: str) -> None:
    rec = await one(fault_server[0], "wrongcount", transport)
    assert rec.success and "prompt 4 tokens, asked 3" in rec.token_count_mismatch


async def test_engine_counts_error_classes_and_marks_mismatch_invalid(fault_server, tokenizer) -> None:
    base, _ = fault_server
    res = await run_load(base, scenario(ClosedLoop(concurrency=2), n=4), model="http503", tokenizer=tokenizer)
    assert res.metrics["errors_http_5xx"] == 4 and res.metrics["error_rate"] == 1.0
    assert not res.valid and "no request completed" in res.invalid_reasons[0]
    res = await run_load(base, scenario(ClosedLoop(concurrency=2), n=4), model="wrongcount", tokenizer=tokenizer)
    assert res.metrics["token_count_mismatches"] == 4
    assert not res.valid and "other token counts than asked" in " ".join(res.invalid_reasons)


async def test_closed_loop_never_exceeds_its_concurrency(fault_server, tokenizer) -> None:
    base, _ = fault_server
    res = await run_load(base, scenario(ClosedLoop(concurrency=3), n=9), model="slow", tokenizer=tokenizer)
    assert res.metrics["completed"] == 9 and peak_in_flight(res.records) == 3
    assert res.valid, res.invalid_reasons


async def test_open_loop_sends_on_schedule_not_on_completion(fault_server, tokenizer) -> None:
    base, _ = fault_server
    # 8 requests due within 0.4 s; each takes ~0.5 s (10 tokens x 50 ms): they overlap on the server.
    res = await run_load(base, scenario(OpenLoop(rate=20.0), n=8, out=10), model="slow", tokenizer=tokenizer)
    recs = sorted(res.records, key=lambda r: r.scheduled)
    assert len(recs) == 8 and all(r.success for r in recs)
    assert max(r.sent for r in recs) < recs[0].end  # the last went out before the first had finished
    assert peak_in_flight(recs) >= 4
    assert res.metrics["offered_rate"] == 20.0 and 0 < res.metrics["achieved_rate_ratio"] <= 1.0


async def test_starved_client_is_invalid(fault_server, tokenizer) -> None:
    base, _ = fault_server
    # 2,000 requests due within 2 ms, each on a new connection: no Python client sends that fast.
    sc = scenario(OpenLoop(rate=1_000_000.0), n=2000, out=1, self_check=SelfCheck(max_p99_send_lag_ms=5.0))
    res = await run_load(base, sc, model="ok", tokenizer=tokenizer)
    assert not res.valid
    assert res.metrics["p99_send_lag_ms"] > sc.self_check.max_p99_send_lag_ms
    assert res.metrics["achieved_rate_ratio"] < sc.self_check.min_achieved_rate_ratio
    assert any("fell behind" in r for r in res.invalid_reasons)
    assert any("of the offered" in r for r in res.invalid_reasons)
    assert res.metrics["mean_e2el_from_scheduled_ms"] > res.metrics["mean_e2el_ms"]


async def test_warmup_repeats_until_warm_and_is_excluded(fault_server, tokenizer) -> None:
    base, state = fault_server
    state.count = 0
    calls: list[str] = []

    async def started() -> None:
        calls.append("start")

    async def ended() -> None:
        calls.append("end")

    res = await run_load(base, scenario(ClosedLoop(concurrency=4), n=4, warmup=4), model="warming",
                         tokenizer=tokenizer, window_started=started, window_ended=ended)
    batches = [e for e in res.events if e["event"] == "warmup_batch"]
    assert batches[0]["median_ttft_ms"] > 400 and batches[1]["median_ttft_ms"] < 400
    assert len(batches) >= 3 and len(res.warmup_records) == 4 * len(batches)
    assert all(r.phase == "warmup" for r in res.warmup_records) and len(res.records) == 4
    assert calls == ["start", "end"]
    window = next(e["t"] for e in res.events if e["event"] == "window_start")
    assert all(res.wall(r.end) <= window for r in res.warmup_records)


async def test_cancelled_run_keeps_partial_records_and_closes_the_window(fault_server, tokenizer) -> None:
    base, _ = fault_server
    sink: list = []
    ended = asyncio.Event()

    async def window_ended() -> None:
        ended.set()

    task = asyncio.create_task(run_load(base, scenario(ClosedLoop(concurrency=1), n=50), model="slow",
                                        tokenizer=tokenizer, sink=sink, window_ended=window_ended))
    while len(sink) < 2:
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended.is_set() and 2 <= len(sink) < 50


async def test_sweep_finds_the_highest_rate_within_bounds(fault_server, tokenizer) -> None:
    base, _ = fault_server
    # (A loose self-check: this is about the sweep's logic, and 6 requests make a window of 0.15-0.6 s.)
    sc = scenario(OpenLoop(rate=1.0), n=6, out=1, self_check=SelfCheck(max_p99_send_lag_ms=500,
                                                                      min_achieved_rate_ratio=0.3))
    # Each "slow" 1-token request takes ~50 ms: a 1 s bound holds at every rate, a 10 ms bound at none.
    ok = await run_sweep(base, sc, model="slow", tokenizer=tokenizer, bounds={"p99_e2el_ms": 1000.0},
                         rates=[10.0, 20.0, 40.0])
    assert ok.max_sustained_rate == 40.0 and [p.passed for p in ok.points] == [True, True, True]
    none = await run_sweep(base, sc, model="slow", tokenizer=tokenizer, bounds={"p99_e2el_ms": 10.0},
                           rates=[10.0, 20.0], refine_steps=0)
    assert none.max_sustained_rate is None and "p99_e2el_ms" in none.points[0].failures[0]


def test_arrival_schedule_matches_rate_and_burstiness() -> None:
    poisson = arrival_offsets(2000, 10.0, 1.0, seed=1)
    assert poisson[-1] == pytest.approx(200.0) and poisson == sorted(poisson)
    assert arrival_offsets(50, 10.0, 1.0, seed=1) == arrival_offsets(50, 10.0, 1.0, seed=1)

    def cv(offsets: list[float]) -> float:
        gaps = [b - a for a, b in zip([0.0, *offsets], offsets)]
        mean = sum(gaps) / len(gaps)
        return (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean

    # Gamma gaps with shape k have coefficient of variation 1/sqrt(k): burstier below 1, even above.
    assert cv(arrival_offsets(4000, 10.0, 0.25, 2)) > 1.6 > cv(poisson) > 0.8 > cv(arrival_offsets(4000, 10.0, 4.0, 2))


@pytest.mark.parametrize("chat", [False, True])
def test_prompts_have_exact_token_counts_word_level(tokenizer, chat: bool) -> None:
    builder = PromptBuilder(tokenizer, chat=chat)
    rng = random.Random(0)
    for n in (6, 17, 128, 1500):
        prompt = builder.build(n, rng)
        assert prompt.tokens == n == builder.count(prompt.text if not chat else prompt.messages[0]["content"])


@pytest.mark.parametrize("chat", [False, True])
def test_prompts_have_exact_token_counts_bpe(chat: bool, bpe_tokenizer) -> None:
    tok = bpe_tokenizer
    builder = PromptBuilder(tok, chat=chat)
    assert builder.overhead >= 1  # the BOS (completions) or the template (chat) is counted
    rng = random.Random(1)
    exact = [builder.build(n, rng).tokens == n for n in (12, 40, 100, 300, 700)]
    assert all(exact), exact


def test_too_short_prompt_is_a_clear_error(tokenizer) -> None:
    from perfgate._errors import ConfigError

    with pytest.raises(ConfigError, match="chat template"):
        PromptBuilder(tokenizer, chat=True).build(3, random.Random(0))
