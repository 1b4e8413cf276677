"""A minimal HTTP/1.1 keep-alive client for the engine's hot path: plain http, POST, streamed SSE.

Why not httpx here: httpx (httpcore + h11 + anyio) spends tens of microseconds per HTTP chunk and vLLM
sends every token as its own chunk, so at a few thousand tokens/s the client, not the server, sets the
pace (measured: 444 req/s against a zero-work server where ``vllm bench serve``'s aiohttp client does
~2,100). This client parses the response inside ``asyncio.Protocol.data_received`` - status line,
chunked framing, SSE - stamping each read with the time it arrived, and wakes the waiting request once,
when the response is complete. httpx stays the path for anything else (https, proxies, probes).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from perfgate.core.records import ErrorClass, RequestRecord, RequestSpec
from perfgate.load.sse import SSEParser, StreamError, finish


class _Conn(asyncio.Protocol):
    """One connection; parses one response at a time into ``record`` and resolves ``done``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.keep_alive = True
        self._reset(None, None, None)

    def _reset(self, record: RequestRecord | None, parser: SSEParser | None, done: asyncio.Future | None) -> None:
        self.record, self.parser, self.done = record, parser, done
        self.head = b""
        self.got_bytes = False
        self.status = 0
        self.chunked = False
        self.remaining = -1  # content-length left; -1 = until EOF (or chunked)
        self.cbuf = b""
        self.need = 0  # chunk data bytes still to come; -2 = the CRLF after a chunk
        self.error_body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.record is not None and self.done is not None and not self.done.done():
            if not self.got_bytes:
                self._end("connect", f"connection closed before a response ({exc or 'EOF'})")
            elif self.status == 200 and self.remaining < 0 and not self.chunked:
                self._end(None, "")  # body delimited by EOF
            else:
                self._end("stream", f"connection closed mid-response ({exc or 'EOF'})")

    def _end(self, error: ErrorClass | None, detail: str) -> None:
        done, record, parser, status = self.done, self.record, self.parser, self.status
        self._reset(None, None, None)
        if done is None or done.done() or record is None:
            return
        if error is not None:
            record.fail(error, detail)
            self.keep_alive = False
        elif status != 200:
            kind: ErrorClass = "http_4xx" if 400 <= status < 500 else "http_5xx"
            record.fail(kind, f"HTTP {status}: {detail}")
        else:
            assert parser is not None
            finish(record, parser)
        done.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.record is None:
            return  # bytes nobody asked for (a server that talks after the response): ignore
        self.got_bytes = True
        try:
            if not self.status:
                self.head += data
                end = self.head.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._headers(self.head[:end])
                data, self.head = self.head[end + 4:], b""
            if self.chunked:
                self._chunked(data, now)
            else:
                self._body(data, now)
        except StreamError as exc:
            self._end("stream", f"error event in the stream: {exc}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._end("stream", f"malformed response: {type(exc).__name__}: {exc}")

    def _headers(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ", 2)[1])
        self.record.status = self.status  # type: ignore[union-attr]
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True
            elif name == b"content-length":
                self.remaining = int(value)
            elif name == b"connection" and b"close" in value.lower():
                self.keep_alive = False

    def _deliver(self, data: bytes, now: float) -> None:
        if self.status == 200:
            self.parser.feed(data, now)  # type: ignore[union-attr]
        elif len(self.error_body) < 300:
            self.error_body += data

    def _body(self, data: bytes, now: float) -> None:
        if self.remaining >= 0:
            data = data[:self.remaining]
            self.remaining -= len(data)
        if data:
            self._deliver(data, now)
        if self.remaining == 0:
            self._end(None, self.error_body[:300].decode("utf-8", "replace"))

    def _chunked(self, data: bytes, now: float) -> None:
        buf = self.cbuf + data if self.cbuf else data
        pos, n, out = 0, len(buf), []
        while True:
            if self.need > 0:
                take = min(self.need, n - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self.need -= take
                if self.need:
                    break
                self.need = -2
            if self.need == -2:
                if n - pos < 2:
                    break
                pos += 2
                self.need = 0
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(buf[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if size == 0:  # last chunk (trailers, if any, are ignored)
                if out:
                    self._deliver(b"".join(out), now)
                self._end(None, self.error_body[:300].decode("utf-8", "replace"))
                return
            self.need = size
        self.cbuf = buf[pos:]
        if out:
            self._deliver(b"".join(out), now)


class FastClient:
    """Keep-alive connections to one plain-http server; ``send`` is ``send_request``'s fast path."""

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None, connect_timeout_s: float = 10.0):
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"FastClient speaks plain http only, not {base_url!r}")
        self.host, self.port = url.hostname, url.port or 80
        self.prefix = url.path.rstrip("/").encode()
        extra = b"".join(f"{k}: {v}\r\n".encode() for k, v in (headers or {}).items()
                         if k.lower() not in ("host", "content-length", "content-type"))
        self._head = (b"Host: %s:%d\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n%s"
                      b"Content-Length: " % (self.host.encode(), self.port, extra))
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(_Conn, self.host, self.port),
                                         self.connect_timeout_s)
        self._all.add(conn)
        return conn

    async def send(self, spec: RequestSpec, record: RequestRecord, *, timeout_s: float) -> RequestRecord:
        loop = asyncio.get_running_loop()
        request = b"POST %s%s HTTP/1.1\r\n%s%d\r\n\r\n%s" % (self.prefix, spec.path.encode(), self._head,
                                                               len(spec.body), spec.body)
        record.sent = time.perf_counter()
        deadline = record.sent + timeout_s
        for attempt in (0, 1):
            reused = bool(self._idle)
            conn = None
            while self._idle and conn is None:
                candidate = self._idle.pop()
                conn = None if candidate.lost else candidate
            try:
                if conn is None:
                    reused = False
                    conn = await self._connect()
            except (OSError, asyncio.TimeoutError) as exc:
                return record.fail("connect", f"{type(exc).__name__}: {exc or 'connect timeout'}")
            done = loop.create_future()
            conn._reset(record, SSEParser(record.token_times, spec.chat), done)
            timer = loop.call_at(loop.time() + max(0.0, deadline - time.perf_counter()), self._timeout,
                                 conn, timeout_s)
            try:
                conn.transport.write(request)  # type: ignore[union-attr]
                await done
            finally:
                timer.cancel()
                if not done.done():  # cancelled: the connection is mid-response, unusable
                    conn.keep_alive = False
                    conn._reset(None, None, None)
                    conn.transport.abort()  # type: ignore[union-attr]
            # A keep-alive connection the server had closed: retry once on a fresh one (as httpx does).
            if (attempt == 0 and reused and record.error == "connect" and not record.token_times
                    and record.status == 0):
                record.error, record.error_detail = None, ""
                self._all.discard(conn)
                continue
            break
        if conn.keep_alive and not conn.lost:
            self._idle.append(conn)
        else:
            self._all.discard(conn)
            if not conn.lost:
                conn.transport.close()  # type: ignore[union-attr]
        return record

    @staticmethod
    def _timeout(conn: _Conn, timeout_s: float) -> None:
        conn._end("timeout", f"request exceeded {timeout_s:g} s")
        if conn.transport is not None:
            conn.transport.abort()

    async def aclose(self) -> None:
        for conn in self._all:
            if conn.transport is not None and not conn.lost:
                conn.transport.close()
        self._all.clear()
        self._idle.clear()

    async def __aenter__(self) -> FastClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
