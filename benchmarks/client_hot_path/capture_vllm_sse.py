"""Save real vLLM streaming responses, byte for byte, for the client hot-path benchmarks.

Sends one ``/v1/completions`` and one ``/v1/chat/completions`` request (streamed, ``ignore_eos``, usage
included) to a running vLLM server over a raw socket and writes each whole HTTP response - status line,
headers, chunked framing, SSE events, ``[DONE]`` - to ``tests/data/vllm-sse/``. How they were made:

    flock /tmp/vllm-cpu.lock perfgate serve cpu-tiny --ready-file /tmp/url &   # then, once /tmp/url exists:
    python benchmarks/client_hot_path/capture_vllm_sse.py "$(cat /tmp/url)" --tokens 256
"""

from __future__ import annotations

import argparse
import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "vllm-sse"


def raw_response(base_url: str, path: str, payload: dict) -> bytes:
    """The server's whole response to one POST, as the socket delivered it (``Connection: close``)."""
    url = urlsplit(base_url)
    body = json.dumps(payload).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=300) as sock:
        sock.sendall(head + body)
        parts = []
        while data := sock.recv(65536):
            parts.append(data)
    return b"".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base_url", help="the server, e.g. http://127.0.0.1:8000")
    ap.add_argument("--model", default="tiny", help="served model name (default: tiny, profile cpu-tiny)")
    ap.add_argument("--tokens", type=int, default=256, help="output tokens per response (ignore_eos)")
    args = ap.parse_args()
    common = {"model": args.model, "stream": True, "stream_options": {"include_usage": True},
              "ignore_eos": True, "temperature": 0.0}
    prompt = "the quick brown fox jumps over the lazy dog"
    requests = {
        "completions": ("/v1/completions", {**common, "prompt": prompt, "max_tokens": args.tokens}),
        "chat": ("/v1/chat/completions", {**common, "messages": [{"role": "user", "content": prompt}],
                                           "max_completion_tokens": args.tokens}),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (path, payload) in requests.items():
        data = raw_response(args.base_url, path, payload)
        if not data.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"{name}: the server answered {data[:200]!r}")
        target = OUT / f"{name}-{args.tokens}.http"
        target.write_bytes(data)
        print(f"{target}: {len(data)} bytes")


if __name__ == "__main__":
    main()
