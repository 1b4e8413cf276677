"""One request as the load side sends it (``RequestSpec``) and what happened to it (``RequestRecord``).

The data the load drivers (async engine, Locust users) produce and ``perfgate.load.metrics`` reads; it imports
nothing of perfgate, so metrics sits below the drivers and the drivers above it, one way.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Literal

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

    @classmethod
    def for_spec(cls, spec: RequestSpec, *, scheduled: float | None = None, queued_s: float = 0.0,
                 phase: str = "measure") -> RequestRecord:
        """A fresh record of ``spec``; ``scheduled`` None: now (the closed loop's slot freed now)."""
        now = time.perf_counter()
        return cls(index=spec.index, phase=phase, scheduled=now if scheduled is None else scheduled,
                   queued_s=queued_s, prompt_tokens_expected=spec.prompt_tokens,
                   output_tokens_expected=spec.max_tokens, ignore_eos=spec.ignore_eos)

    def fail(self, error: ErrorClass, detail: str) -> RequestRecord:
        """Mark the request failed with ``error`` (its class) and ``detail`` (cut to 500 characters)."""
        self.error, self.error_detail = error, detail[:500]
        return self

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
