"""The one SSE parser (perfgate.load.sse), through both ways a driver feeds it: raw bytes as they arrive
(the engine's two transports) and one line at a time (the Locust user's ``readline``).

Each stream is an OpenAI streaming body like vLLM's; both paths must give the same record: token events,
usage, the failure class. The byte path is also fed in random splits (a chunk boundary anywhere)."""

from __future__ import annotations

import io
import json
import random

import pytest

from perfgate.core.records import RequestRecord
from perfgate.load.sse import SSEParser, StreamError, finish, read_lines


def event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def token(i: int) -> bytes:
    return event({"choices": [{"index": 0, "text": f" w{i}", "finish_reason": None}]})


USAGE = event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
DONE = b"data: [DONE]\n\n"
CHAT_ROLE = event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
STREAMS: dict[str, bytes] = {
    "completions": b"".join(token(i) for i in range(3)) + USAGE + DONE,
    "chat": CHAT_ROLE + b"".join(event({"choices": [{"delta": {"content": f"w{i}"}}]}) for i in range(3))
    + USAGE + DONE,
    "crlf_and_pings": (b": ping\r\n\r\n" + b"".join(token(i) for i in range(3)) + USAGE + DONE).replace(
        b"\n", b"\r\n"),
    "spaced_json": b'data:  {"choices" : [ {"text": "x"} ] }\n\n' * 3 + USAGE + DONE,
    "truncated": b"".join(token(i) for i in range(2)),
    "no_token": USAGE + DONE,
}


def by_bytes(body: bytes, chat: bool, seed: int) -> RequestRecord:
    record = RequestRecord(index=0)
    parser = SSEParser(record.token_times, chat)
    rng, pos = random.Random(seed), 0
    while pos < len(body):
        step = rng.randint(1, 40)
        parser.feed(body[pos:pos + step], 1.0 + pos)
        pos += step
    return finish(record, parser)


def by_lines(body: bytes, chat: bool) -> RequestRecord:
    reader = io.BytesIO(body)
    return read_lines(reader.readline, RequestRecord(index=0), chat=chat, deadline=float("inf"), timeout_detail="")


def summary(record: RequestRecord) -> tuple:
    return (len(record.token_times), record.prompt_tokens, record.output_tokens, record.error,
            record.error_detail, record.first_token is not None)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_bytes_and_lines_give_the_same_record(name: str) -> None:
    chat = name == "chat"
    lines = by_lines(STREAMS[name], chat)
    for seed in range(5):
        assert summary(by_bytes(STREAMS[name], chat, seed)) == summary(lines)
    expected = {"truncated": (2, "stream ended without data: [DONE] (truncated)"),
                "no_token": (0, "stream carried no token")}.get(name, (3, ""))
    assert (len(lines.token_times), lines.error_detail) == expected
    if not expected[1]:
        assert lines.success and (lines.prompt_tokens, lines.output_tokens) == (7, 3)


def test_chat_role_chunk_is_no_token_but_a_role_with_content_is() -> None:
    with_content = event({"choices": [{"delta": {"role": "assistant", "content": "Hi"}}]})
    for body, tokens in ((CHAT_ROLE + USAGE + DONE, 0), (with_content + USAGE + DONE, 1)):
        assert len(by_lines(body, chat=True).token_times) == tokens
        assert len(by_bytes(body, chat=True, seed=0).token_times) == tokens


def test_error_event_and_malformed_json_raise_on_both_paths() -> None:
    error = token(0) + event({"error": {"message": "engine died", "code": 500}})
    with pytest.raises(StreamError, match="engine died"):
        by_lines(error, chat=False)
    with pytest.raises(StreamError, match="engine died"):
        by_bytes(error, chat=False, seed=0)
    for bad in (b'data: {"choices": [{"text": \n\n', b"data: [1, 2]\n\n"):
        with pytest.raises((ValueError, TypeError)):
            by_lines(bad, chat=False)
        with pytest.raises((ValueError, TypeError)):
            by_bytes(bad, chat=False, seed=0)


def test_line_reader_stamps_each_event_when_its_blank_line_arrived_and_times_out() -> None:
    lines = iter([b"data: {\"choices\":[{\"text\":\"a\"}]}\n", b"\n", b"data: [DONE]\n", b"\n", b""])
    record = read_lines(lambda: next(lines), RequestRecord(index=0), chat=False, deadline=float("inf"),
                        timeout_detail="")
    assert record.success and len(record.token_times) == 1 and record.first_token == record.end
    late = read_lines(io.BytesIO(STREAMS["completions"]).readline, RequestRecord(index=0), chat=False,
                      deadline=0.0, timeout_detail="past the scenario's request_timeout_s")
    assert (late.error, late.error_detail) == ("timeout", "past the scenario's request_timeout_s")
