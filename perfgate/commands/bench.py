"""``perfgate bench``: the load engine against any OpenAI-compatible server, from the command line.

Takes ``vllm bench serve``'s flag names for what the two share, or ``--scenario NAME``; prints the metric
table and writes the JSON result (``--result-file``) with ``vllm bench serve``'s keys.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from perfgate._errors import ConfigError, InvalidRunError, ServerError
from perfgate.serving.sigint import restore_sigint


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="drive load at a running server and print vllm-bench-style metrics",
                       description="Drive a scenario (or vllm bench serve's random-dataset flags) at a running "
                                   "OpenAI-compatible server; print the metric table; write JSON.")
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="server root (default %(default)s)")
    p.add_argument("--model", help="served model name (default: the server's first model)")
    p.add_argument("--tokenizer", help="tokenizer directory or synthetic:<name> (default: the model's "
                                       "directory as the server reports it)")
    p.add_argument("--scenario", help="a scenario name from scenarios/ or a .toml path; overrides the "
                                      "random-dataset flags below")
    p.add_argument("--endpoint", default="/v1/completions", choices=("/v1/completions", "/v1/chat/completions"))
    p.add_argument("--random-input-len", type=int, default=1024)
    p.add_argument("--random-output-len", type=int, default=128)
    p.add_argument("--num-prompts", type=int, default=1000)
    p.add_argument("--request-rate", type=float, default=float("inf"),
                   help="requests/s; inf (default) = closed loop at --max-concurrency")
    p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape; 1 = Poisson")
    p.add_argument("--max-concurrency", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--temperature", type=float, default=None, help="default: the server's own")
    p.add_argument("--prompt-nonce", default=None, metavar="NONCE",
                   help="seed the prompts with this nonce to re-send an earlier run's exact prompts (its result "
                        "file has it); default: a fresh one, printed and saved, so prompts are new to the server")
    p.add_argument("--num-warmups", type=int, default=0,
                   help="warm-up requests per batch, repeated until median TTFT settles (scenario runs use "
                        "the scenario's [warmup])")
    p.add_argument("--goodput", nargs="+", default=None, metavar="KEY:MS",
                   help="per-request SLOs for goodput, e.g. ttft:200 tpot:50 e2el:2000")
    p.add_argument("--transport", choices=("fast", "httpx"), default="fast",
                   help="HTTP client: perfgate's HTTP/1.1 fast path (plain http) or httpx")
    p.add_argument("--api-key", default=None, help="default: $OPENAI_API_KEY (never printed)")
    p.add_argument("--result-file", type=Path, default=None, help="write the JSON result here")
    p.add_argument("--save-records", type=Path, default=None, help="write every request record (JSON lines)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    restore_sigint()  # `kill -INT` stops a bench started as a script's background job too
    from perfgate.load.scenario import load_scenario, scenario_from_flags

    goodput = _parse_goodput(args.goodput)
    if args.scenario:
        scenario = load_scenario(args.scenario)
    else:
        for flag in ("random_input_len", "random_output_len", "num_prompts"):
            if getattr(args, flag) <= 0:
                raise ConfigError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
        if args.request_rate <= 0:
            raise ConfigError(f"--request-rate must be positive (or inf), got {args.request_rate}")
        scenario = scenario_from_flags(
            input_len=args.random_input_len, output_len=args.random_output_len, num_prompts=args.num_prompts,
            request_rate=args.request_rate, burstiness=args.burstiness, max_concurrency=args.max_concurrency,
            seed=args.seed, ignore_eos=args.ignore_eos, endpoint=args.endpoint,
            warmup_requests=args.num_warmups, temperature=args.temperature)
    from perfgate.load.stream import PromptStream, new_nonce

    if args.prompt_nonce is not None and not args.prompt_nonce.strip():
        raise ConfigError("--prompt-nonce is empty", fix="pass the nonce an earlier run printed, or leave it out")
    stream = PromptStream(scenario.seed, args.prompt_nonce or new_nonce(), 0)
    print(f"prompt nonce: {stream.nonce} (rerun with --prompt-nonce {stream.nonce} to send the same prompts)")
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    try:
        import uvloop  # the client's own overhead is part of what it measures: use the faster loop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    size = f"{scenario.num_requests} requests" if scenario.num_requests else f"{scenario.duration_s:g} s"
    print(f"started, {size}, {scenario.workload().rsplit(', ', 1)[0]}, against {args.base_url}", file=sys.stderr,
          flush=True)
    result, model = runner(_bench(args, scenario, api_key, goodput, stream))

    from perfgate.load.metrics import format_table

    print(f"scenario: {scenario.name}: {scenario.workload()}")
    print(format_table(result.metrics, title=f"perfgate bench ({model})"))
    for note in result.notes:
        print(f"note: {note}")
    payload: dict[str, Any] = {
        "date": time.strftime("%Y%m%d-%H%M%S"), "backend": "perfgate", "base_url": args.base_url,
        "model_id": model, "scenario": scenario.name, "workload": scenario.workload(),
        "prompt_nonce": stream.nonce, "prompt_stream": stream.as_dict(),
        "num_prompts": len(result.records), "valid": result.valid, "invalid_reasons": result.invalid_reasons,
        "window_start": result.window_start, "window_end": result.window_end, **result.metrics}
    if args.result_file:
        from perfgate.core.phase import write_json_atomic

        write_json_atomic(args.result_file, payload)
        print(f"result written to {args.result_file}")
    if args.save_records:
        args.save_records.parent.mkdir(parents=True, exist_ok=True)
        with args.save_records.open("w", encoding="utf-8") as fh:
            for rec in [*result.warmup_records, *result.records]:
                fh.write(json.dumps(rec.to_dict()) + "\n")
    if not result.valid:
        # Exit 1 (the check ran and failed), after the table and the JSON: nothing measured is lost.
        err = InvalidRunError("the run is INVALID; do not trust its figures:\n  " + "\n  ".join(result.invalid_reasons),
                              fix="lower the rate, or give the client a core of its own; for token-count "
                                  "mismatches pass the served model's --tokenizer")
        print(f"perfgate bench: {err}", file=sys.stderr)
        return 1
    return 0


def _parse_goodput(items: list[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        key, _, value = item.partition(":")
        try:
            out[key] = float(value)
        except ValueError:
            raise ConfigError(f"bad --goodput item '{item}'", fix="write KEY:MS, e.g. ttft:200 tpot:50") from None
        if key not in ("ttft", "tpot", "e2el"):
            raise ConfigError(f"bad --goodput key '{key}'", fix="use ttft, tpot or e2el")
    return out


async def _bench(args: argparse.Namespace, scenario: Any, api_key: str | None,
                 goodput: dict[str, float] | None, stream: Any) -> tuple[Any, str]:
    import httpx

    from perfgate.load import run_load

    base = args.base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with httpx.AsyncClient(timeout=10.0, headers=headers) as probe:
            resp = await probe.get(f"{base}/v1/models")
    except httpx.HTTPError as exc:
        raise ServerError(f"cannot reach the server at {base} ({type(exc).__name__}: {exc or 'no answer'})",
                          fix="start the server (or check --base-url: scheme, host and port)") from None
    if resp.status_code == 401:
        raise ServerError(f"{base} refused the API key (HTTP 401)", fix="pass --api-key or set OPENAI_API_KEY")
    if resp.status_code != 200:
        raise ServerError(f"{base}/v1/models answered HTTP {resp.status_code}; is this an OpenAI-compatible "
                          "server?", fix="point --base-url at the server root (without /v1)")
    try:
        served = resp.json().get("data") or []
    except ValueError:
        served = []
    names = [m.get("id") for m in served]
    model = args.model or (names[0] if names else None)
    if model is None:
        raise ServerError(f"{base} lists no models", fix="pass --model")
    if names and model not in names:
        raise ConfigError(f"the server does not serve '{model}'", fix=f"use one of: {', '.join(names)}")
    tokenizer = args.tokenizer
    if tokenizer is None:
        root = next((m.get("root") for m in served if m.get("id") == model), None)
        tokenizer = root if root and Path(root).is_dir() else model
    result = await run_load(base, scenario, model=model, tokenizer=tokenizer, api_key=api_key,
                            goodput_slos_ms=goodput, transport=args.transport, prompt_stream=stream)
    return result, model
