"""One streamed request on the async engine's clients. ``send_request`` never raises: every outcome is a record.

The request itself (``RequestSpec``) and its record (``RequestRecord``) live in ``perfgate.core.records``; the
SSE body is parsed by ``perfgate.load.sse`` (the same parser the Locust user uses), incrementally from raw
bytes as they arrive.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from perfgate.core.records import ERROR_CLASSES, ErrorClass, RequestRecord, RequestSpec
from perfgate.load.sse import SSEParser, StreamError, finish

__all__ = ["ERROR_CLASSES", "ErrorClass", "RequestRecord", "RequestSpec", "send_request"]


async def send_request(client: Any, spec: RequestSpec, *, scheduled: float | None = None,
                       queued_s: float = 0.0, phase: str = "measure", timeout_s: float = 600.0,
                       headers: dict[str, str] | None = None) -> RequestRecord:
    """Send ``spec`` on ``client``, stream the answer, return its record. Never raises (but cancellation).

    ``client``: an ``httpx.AsyncClient`` whose base_url is the server (general: TLS, proxies), or the
    engine's ``perfgate.load.fasthttp.FastClient`` (plain HTTP/1.1, several times cheaper per token).
    Connection failures, HTTP errors, timeouts and broken streams become ``record.error``;
    ``timeout_s`` bounds the whole request.
    """
    record = RequestRecord.for_spec(spec, scheduled=scheduled, queued_s=queued_s, phase=phase)
    if not isinstance(client, httpx.AsyncClient):
        return await client.send(spec, record, timeout_s=timeout_s)
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
                return record.fail(kind, f"HTTP {response.status_code}: {body}")
            parser = SSEParser(record.token_times, spec.chat)
            async for chunk in response.aiter_raw():
                now = time.perf_counter()
                parser.feed(chunk, now)
                if now > deadline:
                    return record.fail("timeout", f"request exceeded {timeout_s:g} s")
        return finish(record, parser)
    except StreamError as exc:
        return record.fail("stream", f"error event in the stream: {exc}")
    except httpx.TimeoutException as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            return record.fail("connect", f"connect timeout: {exc}")
        return record.fail("timeout", f"{type(exc).__name__}: {exc or 'no data within the read timeout'}")
    except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
        return record.fail("connect", f"{type(exc).__name__}: {exc}")
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.DecodingError) as exc:
        # Before any response this is a connection that died (reset, refused mid-handshake).
        return record.fail("stream" if got_response else "connect", f"{type(exc).__name__}: {exc}")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # json / shape errors in an event
        return record.fail("stream", f"malformed SSE event: {type(exc).__name__}: {exc}")
    except httpx.HTTPError as exc:
        return record.fail("stream" if got_response else "connect", f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        return record.fail("connect", f"{type(exc).__name__}: {exc}")
