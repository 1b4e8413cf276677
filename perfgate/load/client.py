"""The engine's HTTP client: perfgate's own for plain http (the hot path), httpx for everything else."""

from __future__ import annotations

from typing import Any

import httpx

from perfgate.load.fasthttp import FastClient


def make_client(base_url: str, *, api_key: str | None = None, max_connections: int | None = None,
                timeout_s: float = 600.0, transport: str = "fast") -> Any:
    """The engine's HTTP client: perfgate's FastClient for plain http (the default), else httpx.

    The httpx client drops the defaults that throttle load (100 connections, 5 s timeouts).
    """
    headers = {"Accept-Encoding": "identity", "Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if transport == "fast" and base_url.startswith("http://"):
        return FastClient(base_url, headers=headers)
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"), headers=headers,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections,
                            keepalive_expiry=60.0),
        # read bounds a stalled stream; pool=None: waiting for a connection is the engine's business.
        timeout=httpx.Timeout(connect=10.0, read=timeout_s, write=30.0, pool=None))
