"""The one parser of OpenAI streaming responses (SSE), shared by every driver: the async engine's two
transports feed it raw bytes as they arrive, Locust's user feeds it one line at a time.

Modelled on vLLM's ``benchmarks/lib/endpoint_request_func.py`` so the figures line up with
``vllm bench serve``: TTFT is the first chunk carrying a token, ITL the gaps between token chunks, E2E
latency ends at the last token chunk. Differences, on purpose: the chat endpoint's role-only first chunk
(``"content": ""``) is not counted as a token (vLLM's client counts it, adding a ~0 ms ITL); a stream that
ends without ``[DONE]`` or carries an ``error`` event is a failure of class ``stream``; the server's token
counts (``usage``) are kept so they can be checked against what was asked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from perfgate.core.records import RequestRecord


class StreamError(Exception):
    """The SSE stream carried an ``error`` event (vLLM reports engine failures mid-stream this way)."""


class SSEParser:
    """Incremental SSE parser: feed raw body bytes as they arrive; token events are stamped ``now``.

    Token events are recognised by shape, not parsed: an event ``data: {...}`` whose ``choices`` array is
    non-empty is a token (vLLM's own client counts exactly those). That keeps the client at about a
    microsecond per token. Everything else (usage, errors, the chat endpoint's role-only opening chunk,
    spaced-out JSON, anything truncated) goes through ``json.loads``; a malformed event raises ValueError
    (or TypeError), an ``error`` event raises StreamError.
    """

    __slots__ = ("buffer", "chat", "done", "output_tokens", "prompt_tokens", "token_times")

    def __init__(self, token_times: list[float], chat: bool) -> None:
        self.buffer = b""
        self.chat = chat
        self.done = False
        self.token_times = token_times
        self.prompt_tokens: int | None = None
        self.output_tokens: int | None = None

    def feed(self, data: bytes, now: float) -> None:
        buf = self.buffer + data if self.buffer else data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        if b"\n\n" not in buf:
            self.buffer = buf
            return
        events = buf.split(b"\n\n")
        self.buffer = events.pop()  # an incomplete event waits for the next bytes
        chat = self.chat
        append = self.token_times.append
        for event in events:
            if (event[:7] == b"data: {" and event[-1:] == b"}"
                    and (b'"choices":[{' in event or b'"choices": [{' in event)
                    and not (chat and b'"role"' in event)):
                append(now)
            else:
                self._slow(event, now)

    def _slow(self, event: bytes, now: float) -> None:
        if not event.startswith(b"data:"):
            if event.startswith(b":") or not event.strip():
                return  # SSE comment (keep-alive ping) or blank
            event = b"\n".join(line[5:] for line in event.split(b"\n") if line.startswith(b"data:"))
            if not event:
                return
        else:
            event = event[5:]
        event = event.strip()
        if event == b"[DONE]":
            self.done = True
            return
        data = json.loads(event)
        if not isinstance(data, dict):
            raise TypeError(f"SSE data is not a JSON object: {event[:80]!r}")
        choices = data.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta") or {}
            # The chat endpoint's role-only opening chunk carries no token.
            if "role" in delta and not delta.get("content") and not choice.get("finish_reason"):
                return
            self.token_times.append(now)
        elif usage := data.get("usage"):
            self.prompt_tokens = usage.get("prompt_tokens")
            self.output_tokens = usage.get("completion_tokens")
        elif "error" in data:
            err = data["error"]
            raise StreamError(err.get("message", err) if isinstance(err, dict) else err)


def finish(record: RequestRecord, parser: SSEParser) -> RequestRecord:
    """Fill the record from a stream that closed cleanly; a stream without [DONE] or tokens is broken."""
    record.closed = time.perf_counter()
    record.prompt_tokens, record.output_tokens = parser.prompt_tokens, parser.output_tokens
    times = record.token_times
    if times:
        record.first_token, record.end = times[0], times[-1]
    if not parser.done:
        return record.fail("stream", "stream ended without data: [DONE] (truncated)")
    if not times:
        return record.fail("stream", "stream carried no token")
    return record


def read_lines(readline: Callable[[], bytes], record: RequestRecord, *, chat: bool, deadline: float,
               timeout_detail: str) -> RequestRecord:
    """Parse a blocking line reader's SSE body into ``record`` (Locust: geventhttpclient's ``readline``).

    Each line is stamped when ``readline`` returned it, so an event is timed by the blank line that ends it.
    Past ``deadline`` (perf_counter) the record fails as a timeout with ``timeout_detail``. Raises
    StreamError on an ``error`` event and ValueError/TypeError on a malformed one, like ``SSEParser.feed``.
    """
    parser = SSEParser(record.token_times, chat)
    while line := readline():
        now = time.perf_counter()
        parser.feed(line, now)
        if now > deadline:
            return record.fail("timeout", timeout_detail)
    return finish(record, parser)
