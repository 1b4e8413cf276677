"""Micro-benchmarks of perfgate's own client hot path, timed in-process with pytest-benchmark.

perfgate's load client must never be what limits a phase (a client that falls behind its schedule makes
the phase INVALID), and its cost per request is Python code: reading vLLM's HTTP response, parsing the SSE
events, stamping each token. These time that code on real vLLM responses (tests/data/vllm-sse/), so a
change that makes the client slower shows up here, in microseconds, before it shows up as send lag on a
server. Each benchmark asserts what the code produced, never how long it took.

    pytest benchmarks/client_hot_path                                   # a table of timings
    pytest benchmarks/client_hot_path --benchmark-save=v0.1.0           # store them (.benchmarks/)
    pytest benchmarks/client_hot_path --benchmark-compare=0001 --benchmark-compare-fail=mean:25%

Not in the default test run (``testpaths`` is tests/ and perf_tests/); tests/test_benchmark_hot_path.py
runs them through pytester to prove saving and comparing work.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from perfgate.core.records import RequestRecord
from perfgate.load.fasthttp import _Conn
from perfgate.load.metrics import compute_metrics
from perfgate.load.sse import SSEParser, finish, read_lines

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "vllm-sse"
STREAM_FILES = sorted(DATA.glob("*.http"))
ITL_S = 1e-3  # the gap stamped between two writes: a decode step, so no stream looks flushed whole


@dataclass(frozen=True)
class SavedStream:
    """One whole HTTP response of vLLM's OpenAI server, cut the way a client receives it."""

    chat: bool
    reads: list[bytes]  # the head, one framed chunk per vLLM write, the terminating chunk (one socket read each)
    writes: list[bytes]  # the SSE bytes of each chunk: what a transport hands the parser
    prompt_tokens: int  # the usage event's counts, read here with json, not with perfgate's parser
    completion_tokens: int

    @property
    def body(self) -> bytes:
        return b"".join(self.writes)


def load_stream(path: Path) -> SavedStream:
    """Undo the chunked framing of a saved response (vLLM writes one SSE event per chunk)."""
    raw = path.read_bytes()
    end = raw.index(b"\r\n\r\n") + 4
    head, rest = raw[:end], raw[end:]
    assert b"transfer-encoding: chunked" in head.lower(), f"{path.name}: not a chunked response"
    reads, writes, pos = [head], [], 0
    while True:
        eol = rest.index(b"\r\n", pos)
        size = int(rest[pos:eol], 16)
        reads.append(rest[pos:eol + 2 + size + 2])
        if size == 0:
            break
        writes.append(rest[eol + 2:eol + 2 + size])
        pos = eol + 2 + size + 2
    usage = [json.loads(w[len(b"data: "):])["usage"] for w in writes if b'"choices":[],"usage":{' in w]
    assert len(usage) == 1, f"{path.name}: expected one usage event"
    return SavedStream(path.stem.startswith("chat"), reads, writes, usage[0]["prompt_tokens"],
                       usage[0]["completion_tokens"])


@pytest.fixture(params=STREAM_FILES, ids=[p.stem for p in STREAM_FILES])
def vllm_stream(request: pytest.FixtureRequest) -> SavedStream:
    """Each saved vLLM response in turn (completions and chat, 256 tokens)."""
    return load_stream(request.param)


def assert_complete(record: RequestRecord, stream: SavedStream) -> None:
    """The record holds every token of the stream and the server's usage counts, and no error."""
    assert record.error is None, record.error_detail
    assert len(record.token_times) == stream.completion_tokens  # vLLM streams one token per event here
    assert (record.prompt_tokens, record.output_tokens) == (stream.prompt_tokens, stream.completion_tokens)
    assert record.first_token == record.token_times[0] and record.end == record.token_times[-1]


def parse_writes(writes: list[bytes], chat: bool) -> RequestRecord:
    """The async engine's path: each vLLM write fed to the parser as it arrives, then the record finished."""
    record = RequestRecord(index=0)
    parser = SSEParser(record.token_times, chat)
    now = 0.0
    for data in writes:
        now += ITL_S
        parser.feed(data, now)
    return finish(record, parser)


def test_sse_parse_per_write(benchmark, vllm_stream: SavedStream) -> None:
    record = benchmark(parse_writes, vllm_stream.writes, vllm_stream.chat)
    assert_complete(record, vllm_stream)


def parse_lines(body: bytes, chat: bool) -> RequestRecord:
    """The Locust user's path: one line at a time from a blocking reader."""
    return read_lines(io.BytesIO(body).readline, RequestRecord(index=0), chat=chat, deadline=float("inf"),
                      timeout_detail="")


def test_sse_parse_per_line(benchmark, vllm_stream: SavedStream) -> None:
    record = benchmark(parse_lines, vllm_stream.body, vllm_stream.chat)
    assert_complete(record, vllm_stream)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """Only to create the futures a connection resolves; it never runs."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_fast_http_response(benchmark, vllm_stream: SavedStream, loop: asyncio.AbstractEventLoop) -> None:
    """The engine's default transport: a connection's data_received over the whole HTTP response - status
    line, headers, chunked framing, SSE - one socket read per vLLM write. A fresh connection state each
    round (pedantic's setup, untimed), as FastClient.send sets it up for each request."""

    def fresh_connection() -> tuple[tuple[_Conn, RequestRecord, asyncio.Future], dict]:
        conn, record, done = _Conn(), RequestRecord(index=0), loop.create_future()
        conn._reset(record, SSEParser(record.token_times, vllm_stream.chat), done)
        return (conn, record, done), {}

    def receive(conn: _Conn, record: RequestRecord, done: asyncio.Future) -> RequestRecord:
        for data in vllm_stream.reads:
            conn.data_received(data)
        return record

    record = benchmark.pedantic(receive, setup=fresh_connection, rounds=100, warmup_rounds=5)
    assert record.status == 200
    assert_complete(record, vllm_stream)


def window_records(requests: int, tokens: int) -> list[RequestRecord]:
    """A measured window's records: one request every 10 ms, TTFT 50 ms, then a token every 20 ms."""
    records = []
    for i in range(requests):
        sent = i * 0.01
        record = RequestRecord(index=i, scheduled=sent, sent=sent, prompt_tokens_expected=128,
                               output_tokens_expected=tokens, prompt_tokens=128, output_tokens=tokens)
        record.token_times = [sent + 0.05 + k * 0.02 for k in range(tokens)]
        record.first_token, record.end = record.token_times[0], record.token_times[-1]
        records.append(record)
    return records


def test_compute_metrics(benchmark) -> None:
    """After the window, not in it: a phase's records to its metric dict (400 requests of 256 tokens, about
    a 60 s phase at 6-7 req/s)."""
    records = window_records(400, 256)
    metrics = benchmark(compute_metrics, records, 10.0)
    assert (metrics["completed"], metrics["failed"], metrics["total_output_tokens"]) == (400, 0, 400 * 256)
    assert metrics["mean_ttft_ms"] == pytest.approx(50.0)
    assert metrics["median_tpot_ms"] == pytest.approx(20.0) and metrics["p99_itl_ms"] == pytest.approx(20.0)
    assert metrics["mean_e2el_ms"] == pytest.approx(50.0 + 255 * 20.0)
    assert metrics["token_count_mismatches"] == 0 and metrics["flushed_stream_pct"] == 0.0
