"""How fast can one client process drive load, and how much latency does it add? Side by side.

Against a zero-work streaming server on loopback (benchmarks/zero_server.py, pinned to its own core),
each client - perfgate's engine (its fast HTTP/1.1 path, and its httpx path), Locust with perfgate's LLM
user, and ``vllm bench serve`` - runs pinned to one core:
  * throughput: a closed loop at --concurrency, --input-len/--output-len tokens: requests/s and streamed
    tokens/s one client process sustains;
  * added latency: concurrency 1: median and P99 end-to-end latency as the client measures it. The server
    does no work, so this is the client's own cost (plus loopback and the server's few microseconds).

    python benchmarks/overhead.py                       # prints one table
    python benchmarks/overhead.py --per-token-writes    # server writes each token separately, as vLLM does
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pin(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def start_server(cpu: int | None, per_token_writes: bool) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, str(REPO / "benchmarks" / "zero_server.py"), "--port", "0"]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    if per_token_writes:
        cmd.append("--per-token-writes")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("READY"):
        proc.kill()
        raise SystemExit(f"zero server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{line.split()[1]}"


def perfgate_bench(base: str, cpu: int | None, tokenizer: str, n: int, conc: int, args: argparse.Namespace,
                   out: Path, transport: str) -> dict:
    code = ("import sys, uvloop, json\n"
            "from perfgate.load.scenario import scenario_from_flags\n"
            "from perfgate.load import run_load\n"
            f"sc = scenario_from_flags(input_len={args.input_len}, output_len={args.output_len}, num_prompts={n},"
            f" request_rate=float('inf'), max_concurrency={conc}, ignore_eos=True)\n"
            f"r = uvloop.run(run_load({base!r}, sc, model='zero', tokenizer={tokenizer!r}, transport={transport!r}))\n"
            f"json.dump(dict(r.metrics, valid=r.valid), open({str(out)!r}, 'w'))\n")
    subprocess.run([*pin(cpu), sys.executable, "-c", code], check=True, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.read_text())


def vllm_bench(base: str, cpu: int | None, tokenizer: str, n: int, conc: int, args: argparse.Namespace,
               out: Path) -> dict:
    cmd = [*pin(cpu), sys.executable, str(REPO / "benchmarks" / "vllm_bench_serve.py"), "--base-url", base,
           "--model", "zero", "--tokenizer", tokenizer, "--dataset-name", "random", "--random-input-len",
           str(args.input_len), "--random-output-len", str(args.output_len), "--num-prompts", str(n),
           "--max-concurrency", str(conc), "--ignore-eos", "--disable-tqdm", "--save-result",
           "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
           "--result-filename", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=out.parent)
    return json.loads(out.read_text())


def locust(base: str, cpu: int | None, tokenizer: str, conc: int, seconds: float, args: argparse.Namespace,
           out_dir: Path) -> dict | None:
    try:
        from perfgate.load.locust_runner import run_locust
    except ImportError:
        return None
    from perfgate.load.scenario import ClosedLoop, Fixed, Scenario, Warmup

    scenario = Scenario(name="overhead", description="zero-work overhead", prompt_tokens=Fixed(value=args.input_len),
                        output_tokens=Fixed(value=args.output_len), load=ClosedLoop(concurrency=conc),
                        duration_s=seconds, warmup=Warmup(requests=0))
    res = run_locust(base, scenario, model="zero", tokenizer=tokenizer, results_dir=out_dir, users=conc,
                     spawn_rate=conc, run_time_s=seconds, launcher=tuple(pin(cpu)))
    return dict(res.metrics, client_cpu_pct=100.0 * res.cpu_s / max(res.wall_s, 1e-9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000, help="requests in the throughput run")
    parser.add_argument("--latency-requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--input-len", type=int, default=32)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--locust-seconds", type=float, default=10.0)
    parser.add_argument("--client-cpu", type=int, default=0)
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--per-token-writes", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], choices=["perfgate", "perfgate-httpx", "locust", "vllm"])
    args = parser.parse_args()

    from perfgate.models import resolve_model

    tokenizer = resolve_model("synthetic:tiny")  # word-level: the zero server counts prompt words as tokens
    server, base = start_server(args.server_cpu, args.per_token_writes)
    rows: list[tuple[str, dict | None, dict | None, str]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="perfgate-overhead-") as tmp:
            t = Path(tmp)
            runs = {
                "perfgate": lambda n, c, tag: perfgate_bench(base, args.client_cpu, tokenizer, n, c, args,
                                                             t / f"pg-{tag}.json", "fast"),
                "perfgate-httpx": lambda n, c, tag: perfgate_bench(base, args.client_cpu, tokenizer, n, c, args,
                                                                   t / f"pgx-{tag}.json", "httpx"),
                "vllm": lambda n, c, tag: vllm_bench(base, args.client_cpu, tokenizer, n, c, args,
                                                     t / f"vllm-{tag}.json"),
            }
            labels = {"perfgate": "perfgate engine (fast HTTP/1.1)", "perfgate-httpx": "perfgate engine (httpx)",
                      "vllm": "vllm bench serve client", "locust": "Locust + perfgate LLM user"}
            for name in ("perfgate", "perfgate-httpx", "vllm", "locust"):
                if name in args.skip:
                    continue
                print(f"running {labels[name]} ...", file=sys.stderr, flush=True)
                if name == "locust":
                    try:
                        thr = locust(base, args.client_cpu, tokenizer, args.concurrency, args.locust_seconds,
                                     args, t / "locust-thr")
                        lat = locust(base, args.client_cpu, tokenizer, 1, args.locust_seconds / 2, args,
                                     t / "locust-lat")
                    except Exception as exc:  # noqa: BLE001 - report it, do not lose the other rows
                        rows.append((labels[name], None, None, f"failed: {type(exc).__name__}: {exc}"[:120]))
                        continue
                    if thr is None:
                        rows.append((labels[name], None, None, "TODO: perfgate/load/locust_runner.py not found"))
                    else:
                        rows.append((labels[name], thr, lat, ""))
                    continue
                thr = runs[name](args.requests, args.concurrency, "thr")
                lat = runs[name](args.latency_requests, 1, "lat")
                rows.append((labels[name], thr, lat, ""))
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=10)

    ref = next((r for r in rows if r[0].startswith("vllm") and r[1]), None)
    print(f"\nzero-work server, {args.input_len}-in/{args.output_len}-out, closed loop at concurrency "
          f"{args.concurrency} ({args.requests} requests); latency at concurrency 1 ({args.latency_requests}); "
          f"client pinned to CPU {args.client_cpu}, server to CPU {args.server_cpu}"
          f"{'; server writes each token separately' if args.per_token_writes else '; one write per response'}")
    head = f"{'client':<34} {'req/s':>8} {'tok/s':>9} {'CPU %':>6} {'x vllm':>7} {'E2E p50 ms':>11} {'E2E p99 ms':>11}"
    print(head)
    print("-" * len(head))
    for label, thr, lat, note in rows:
        if thr is None:
            print(f"{label:<34} {note}")
            continue
        ratio = thr["request_throughput"] / ref[1]["request_throughput"] if ref else float("nan")
        p50 = lat.get("median_e2el_ms", float("nan")) if lat else float("nan")
        p99 = lat.get("p99_e2el_ms", float("nan")) if lat else float("nan")
        cpu = thr.get("client_cpu_pct", float("nan"))
        print(f"{label:<34} {thr['request_throughput']:>8.0f} {thr['output_throughput']:>9.0f} {cpu:>6.0f} "
              f"{ratio:>7.2f} {p50:>11.3f} {p99:>11.3f}")
    print(f"(measured {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs; CPU % for vllm bench not "
          "reported by it)")


if __name__ == "__main__":
    main()
