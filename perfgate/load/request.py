"""One streamed request and its record. ``send_request`` never raises: every outcome is a record.

Modelled on vLLM's ``benchmarks/lib/endpoint_request_func.py`` so the figures line up with
``vllm bench serve``: TTFT is the first chunk carrying a token, ITL the gaps between token chunks, E2E
latency ends at the last token chunk. Differences, on purpose: the SSE stream is parsed incrementally
from raw bytes; the chat endpoint's role-only first chunk (``"content": ""``) is not counted as a token
(vLLM's client counts it, adding a ~0 ms ITL); a stream that ends without ``[DONE]`` or carries an
``error`` event is a failure of class ``stream``; server token counts (``usage``) are checked against what
was asked.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

ErrorClass = Literal["connect", "timeout", "http_4xx", "http_5xx", "stream"]
ERROR_CLASSES: tuple[ErrorClass, ...] = ("connect", "timeout", "http_4xx", "http_5xx", "stream")


@dataclass
class RequestSpec:
    """A request ready to send: the JSON body is encoded once, before the measured window."""

    index: int
    path: str  # "/v1/completions" or "/v1/chat/completions"
    body: bytes
    prompt_tokens: int  # as the server should count them
    max_tokens: int
    ignore_eos: bool
    chat: bool

    @classmethod
    def build(cls, index: int, *, model: str, path: str, prompt_tokens: int, max_tokens: int,
              text: str | None = None, messages: list[dict[str, str]] | None = None,
              ignore_eos: bool = False, sampling: dict | None = None) -> RequestSpec:
        chat = path.endswith("chat/completions")
        payload: dict = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
        if chat:
            payload["messages"] = messages if messages is not None else [{"role": "user", "content": text}]
            payload["max_completion_tokens"] = max_tokens
        else:
            payload["prompt"] = text
            payload["max_tokens"] = max_tokens
        if ignore_eos:
            payload["ignore_eos"] = True
        payload.update(sampling or {})
        return cls(index, path, json.dumps(payload, separators=(",", ":")).encode(), prompt_tokens, max_tokens,
                   ignore_eos, chat)


@dataclass
class RequestRecord:
    """What happened to one request. Times are ``time.perf_counter()`` seconds (monotonic)."""

    index: int
    phase: str = "measure"  # or "warmup"
    scheduled: float = 0.0  # when it should have gone out (open loop), or when its slot freed (closed)
    sent: float = 0.0  # just before the request was handed to the HTTP client
    queued_s: float = 0.0  # deliberate wait for a max_concurrency slot (open loop with a cap)
    first_token: float | None = None
    token_times: list[float] = field(default_factory=list)  # every chunk that carried a token
    end: float | None = None  # last token chunk (vLLM's definition of the end of a request)
    closed: float | None = None  # when the stream was fully read (after usage and [DONE])
    prompt_tokens_expected: int = 0
    output_tokens_expected: int = 0
    ignore_eos: bool = False
    prompt_tokens: int | None = None  # usage.prompt_tokens
    output_tokens: int | None = None  # usage.completion_tokens
    status: int = 0  # HTTP status; 0 when no response arrived
    error: ErrorClass | None = None
    error_detail: str = ""

    @property
    def success(self) -> bool:
        return self.error is None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.sent

    @property
    def latency(self) -> float | None:
        return None if self.end is None else self.end - self.sent

    @property
    def itl(self) -> list[float]:
        t = self.token_times
        return [b - a for a, b in itertools.pairwise(t)]

    @property
    def send_lag(self) -> float:
        """How late the client sent it, leaving out any deliberate max_concurrency queue."""
        return max(0.0, self.sent - self.scheduled - self.queued_s)

    @property
    def output_len(self) -> int:
        """Generated tokens: the server's usage count, else the number of token chunks."""
        return self.output_tokens if self.output_tokens is not None else len(self.token_times)

    @property
    def token_count_mismatch(self) -> str | None:
        """Why the served token counts differ from what was asked, or None when they agree."""
        if not self.success:
            return None
        if self.prompt_tokens is None or self.output_tokens is None:
            return "server sent no usage (stream_options.include_usage ignored)"
        problems = []
        if self.prompt_tokens != self.prompt_tokens_expected:
            problems.append(f"prompt {self.prompt_tokens} tokens, asked {self.prompt_tokens_expected}")
        if self.output_tokens > self.output_tokens_expected or (
                self.ignore_eos and self.output_tokens != self.output_tokens_expected):
            problems.append(f"output {self.output_tokens} tokens, asked {self.output_tokens_expected}")
        return "; ".join(problems) or None

    def to_dict(self) -> dict:
        data = {k: v for k, v in self.__dict__.items()}
        data["ttft"], data["latency"], data["mismatch"] = self.ttft, self.latency, self.token_count_mismatch
        return data


def _fail(record: RequestRecord, error: ErrorClass, detail: str) -> RequestRecord:
    record.error, record.error_detail = error, detail[:500]
    return record


class StreamError(Exception):
    """The SSE stream carried an ``error`` event (vLLM reports engine failures mid-stream this way)."""


class SSEParser:
    """Incremental SSE parser: feed raw body bytes as they arrive; token events are stamped ``now``.

    Token events are recognised by shape, not parsed: an event ``data: {...}`` whose ``choices`` array is
    non-empty is a token (vLLM's own client counts exactly those). That keeps the client at about a
    microsecond per token. Everything else (usage, errors, the chat endpoint's role-only opening chunk,
    spaced-out JSON, anything truncated) goes through ``json.loads``; a malformed event raises ValueError.
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
        return _fail(record, "stream", "stream ended without data: [DONE] (truncated)")
    if not times:
        return _fail(record, "stream", "stream carried no token")
    return record


def new_record(spec: RequestSpec, scheduled: float | None, queued_s: float, phase: str) -> RequestRecord:
    now = time.perf_counter()
    return RequestRecord(index=spec.index, phase=phase, scheduled=now if scheduled is None else scheduled,
                         queued_s=queued_s, prompt_tokens_expected=spec.prompt_tokens,
                         output_tokens_expected=spec.max_tokens, ignore_eos=spec.ignore_eos)


async def send_request(client: Any, spec: RequestSpec, *, scheduled: float | None = None,
                       queued_s: float = 0.0, phase: str = "measure", timeout_s: float = 600.0,
                       headers: dict[str, str] | None = None) -> RequestRecord:
    """Send ``spec`` on ``client``, stream the answer, return its record. Never raises (but cancellation).

    ``client``: an ``httpx.AsyncClient`` whose base_url is the server (general: TLS, proxies), or the
    engine's ``perfgate.load.fasthttp.FastClient`` (plain HTTP/1.1, several times cheaper per token).
    Connection failures, HTTP errors, timeouts and broken streams become ``record.error``;
    ``timeout_s`` bounds the whole request.
    """
    if not isinstance(client, httpx.AsyncClient):
        return await client.send(spec, new_record(spec, scheduled, queued_s, phase), timeout_s=timeout_s)
    record = new_record(spec, scheduled, queued_s, phase)
    got_response = False
    record.sent = time.perf_counter()
    deadline = record.sent + timeout_s
    try:
        async with client.stream("POST", spec.path, content=spec.body, headers=headers) as response:
            got_response = True
            record.status = response.status_code
            if response.status_code != 200:
                body = (await response.aread())[:300].decode("utf-8", "replace")
                kind: ErrorClass = "http_4xx" if 400 <= response.status_code < 500 else "http_5xx"
                return _fail(record, kind, f"HTTP {response.status_code}: {body}")
            parser = SSEParser(record.token_times, spec.chat)
            async for chunk in response.aiter_raw():
                now = time.perf_counter()
                parser.feed(chunk, now)
                if now > deadline:
                    return _fail(record, "timeout", f"request exceeded {timeout_s:g} s")
        return finish(record, parser)
    except StreamError as exc:
        return _fail(record, "stream", f"error event in the stream: {exc}")
    except httpx.TimeoutException as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            return _fail(record, "connect", f"connect timeout: {exc}")
        return _fail(record, "timeout", f"{type(exc).__name__}: {exc or 'no data within the read timeout'}")
    except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
        return _fail(record, "connect", f"{type(exc).__name__}: {exc}")
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.DecodingError) as exc:
        # Before any response this is a connection that died (reset, refused mid-handshake).
        return _fail(record, "stream" if got_response else "connect", f"{type(exc).__name__}: {exc}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # json / shape errors in an event
        return _fail(record, "stream", f"malformed SSE event: {type(exc).__name__}: {exc}")
    except httpx.HTTPError as exc:
        return _fail(record, "stream" if got_response else "connect", f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        return _fail(record, "connect", f"{type(exc).__name__}: {exc}")
