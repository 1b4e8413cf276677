"""A zero-work OpenAI-compatible streaming server, for measuring load clients rather than servers.

``POST /v1/completions`` (and ``/v1/chat/completions``) answers at once with ``max_tokens`` SSE token
events, a usage event (prompt tokens = whitespace-separated words of the prompt, as the synthetic models'
word-level tokenizer counts them) and ``[DONE]``, shaped like vLLM's chunks; the whole response is built
once per shape and written in one call, so the server costs a few microseconds per request and every
microsecond a client measures beyond that is the client's own (plus loopback).
``GET /v1/models`` and ``/health`` answer like vLLM's. ``--token-interval-ms`` spaces the tokens instead.

    python benchmarks/zero_server.py --port 8011      # prints "READY <port>" when listening
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from functools import lru_cache

MODEL = "zero"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _token_event(i: int, chat: bool, last: bool) -> bytes:
    finish = '"length"' if last else "null"
    if chat:
        body = (b'{"id":"chatcmpl-0","object":"chat.completion.chunk","created":0,"model":"zero","choices":'
                b'[{"index":0,"delta":{"content":" w%d"},"logprobs":null,"finish_reason":%s}]}' % (i, finish.encode()))
    else:
        body = (b'{"id":"cmpl-0","object":"text_completion","created":0,"model":"zero","choices":[{"index":0,'
                b'"text":" w%d","logprobs":null,"finish_reason":%s,"stop_reason":null}]}' % (i, finish.encode()))
    return b"data: " + body + b"\n\n"


@lru_cache(maxsize=4096)
def _body_events(tokens: int, chat: bool) -> tuple[bytes, ...]:
    return tuple(_chunk(_token_event(i, chat, i == tokens - 1)) for i in range(tokens))


def _tail(prompt_tokens: int, tokens: int) -> bytes:
    usage = (b'data: {"id":"cmpl-0","object":"text_completion","created":0,"model":"zero","choices":[],'
             b'"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}}\n\n'
             % (prompt_tokens, prompt_tokens + tokens, tokens))
    return _chunk(usage) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
               b"transfer-encoding: chunked\r\n\r\n")


def _plain(status: str, body: bytes) -> bytes:
    return (b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status.encode(), len(body), body))


MODELS = _plain("200 OK", json.dumps({"object": "list", "data": [
    {"id": MODEL, "object": "model", "owned_by": "perfgate", "root": None, "max_model_len": 1 << 20}]}).encode())


class ZeroProtocol(asyncio.Protocol):
    interval_s = 0.0
    per_token_writes = False  # one transport.write (one TCP segment, TCP_NODELAY) per token event

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                length = int(lower[at + 15:lower.find(b"\r\n", at) if lower.find(b"\r\n", at) > 0 else None])
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            self._answer(head.split(b" ", 2), body)

    def _answer(self, request_line: list[bytes], body: bytes) -> None:
        method, path = request_line[0], request_line[1]
        if method == b"GET":
            self.transport.write(MODELS if path.startswith(b"/v1/models") else _plain("200 OK", b"{}"))
            return
        req = json.loads(body)
        chat = path.endswith(b"chat/completions")
        tokens = int(req.get("max_tokens") or req.get("max_completion_tokens") or 16)
        if chat:
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in req.get("messages", []))
        else:
            prompt = req.get("prompt", "")
            prompt_tokens = len(prompt) if isinstance(prompt, list) else len(prompt.split())
        events = _body_events(tokens, chat)
        if self.interval_s:
            asyncio.ensure_future(self._spaced(events, _tail(prompt_tokens, tokens)))
            return
        if self.per_token_writes:
            self.transport.write(STREAM_HEAD)
            for event in events:
                self.transport.write(event)
            self.transport.write(_tail(prompt_tokens, tokens))
            return
        self.transport.write(STREAM_HEAD + b"".join(events) + _tail(prompt_tokens, tokens))

    async def _spaced(self, events: tuple[bytes, ...], tail: bytes) -> None:
        self.transport.write(STREAM_HEAD)
        for event in events:
            self.transport.write(event)
            await asyncio.sleep(self.interval_s)
        self.transport.write(tail)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ZeroProtocol, host, port, backlog=4096)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token-interval-ms", type=float, default=0.0)
    parser.add_argument("--per-token-writes", action="store_true",
                        help="write each token event separately (as vLLM does) instead of one write per response")
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    ZeroProtocol.interval_s = args.token_interval_ms / 1000.0
    ZeroProtocol.per_token_writes = args.per_token_writes
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port))
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
