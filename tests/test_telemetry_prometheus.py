"""vLLM /metrics: window deltas checked against real vLLM on the CPU (the client's own counts must match),
plus the edge cases a live server rarely shows (several engines, older names, a restart, not vLLM)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from perfgate.serving.server import free_port
from perfgate.telemetry import Telemetry, compute_efficiency, load_model_shape, write_timeline
from perfgate.telemetry.efficiency import estimate_work
from perfgate.telemetry.prometheus import (
    MIN_GAUGE_SAMPLES,
    MetricsScraper,
    _sample_row,
    parse_metrics,
    summarize,
)


def _exposition(engines: dict[str, dict[str, float]], kv_name: str = "vllm:kv_cache_usage_perc") -> str:
    """A small vLLM-style exposition: per engine label, counters with _total, one histogram."""
    lines = ["# TYPE vllm:num_requests_running gauge", "# TYPE vllm:num_requests_waiting gauge",
             f"# TYPE {kv_name} gauge", "# TYPE vllm:generation_tokens counter",
             "# TYPE vllm:request_success counter", "# TYPE vllm:estimated_flops_per_gpu counter",
             "# TYPE vllm:time_to_first_token_seconds histogram"]
    for eng, v in engines.items():
        lab = f'engine="{eng}",model_name="m"'
        lines += [f"vllm:num_requests_running{{{lab}}} {v['running']}",
                  f"vllm:num_requests_waiting{{{lab}}} {v['waiting']}",
                  f"{kv_name}{{{lab}}} {v['kv']}",
                  f"vllm:generation_tokens_total{{{lab}}} {v['gen']}",
                  f'vllm:request_success_total{{{lab},finished_reason="length"}} {v["done"]}',
                  f'vllm:request_success_total{{{lab},finished_reason="abort"}} {v["aborted"]}',
                  f"vllm:estimated_flops_per_gpu_total{{{lab}}} {v['flops']}",
                  f'vllm:time_to_first_token_seconds_bucket{{{lab},le="+Inf"}} {v["done"]}',
                  f"vllm:time_to_first_token_seconds_count{{{lab}}} {v['done']}",
                  f"vllm:time_to_first_token_seconds_sum{{{lab}}} {v['ttft_sum']}"]
    return "\n".join(lines) + "\n"


ZERO = {"running": 0, "waiting": 0, "kv": 0.0, "gen": 0, "done": 0, "aborted": 0, "flops": 0, "ttft_sum": 0.0}


def test_two_engines_sum_counts_and_average_per_gpu_counters() -> None:
    before = parse_metrics(_exposition({"0": {**ZERO, "gen": 100, "done": 5}, "1": {**ZERO}}), t=0.0)
    after = parse_metrics(_exposition({
        "0": {**ZERO, "running": 3, "waiting": 1, "kv": 0.25, "gen": 180, "done": 9, "aborted": 2,
              "flops": 4e12, "ttft_sum": 0.2},
        "1": {**ZERO, "running": 2, "kv": 0.40, "gen": 60, "done": 3, "flops": 2e12, "ttft_sum": 0.1}}), t=10.0)
    res = summarize(before, after, [_sample_row(before, before), _sample_row(after, before)], min_gauge_samples=1)
    assert res.metrics["server_generation_tokens"] == 140  # (180 - 100) + 60
    assert res.metrics["server_requests_completed"] == 7  # aborted requests did not complete
    assert res.metrics["server_mean_ttft_ms"] == pytest.approx(1000 * 0.3 / 7)
    assert res.metrics["kv_cache_usage_pct_peak"] == pytest.approx(40.0)  # fullest engine, as %
    assert res.metrics["running_batch_mean"] == pytest.approx(2.5)  # samples 0 and 3 + 2
    assert res.deltas["flops_per_gpu"] == pytest.approx(3e12)  # per-GPU counters: mean over engines
    assert res.duration_s == 10.0
    assert "vllm:num_preemptions" in res.unavailable_metrics["preemptions"]


def test_older_kv_cache_name_is_read() -> None:
    snap = parse_metrics(_exposition({"0": {**ZERO, "kv": 0.5}}, kv_name="vllm:gpu_cache_usage_perc"))
    res = summarize(snap, snap, [_sample_row(snap, snap)], min_gauge_samples=1)
    assert res.metrics["kv_cache_usage_pct_peak"] == 50.0


def test_counter_going_backwards_is_a_restart_not_a_negative_count() -> None:
    before = parse_metrics(_exposition({"0": {**ZERO, "gen": 500, "done": 20}}), t=0.0)
    after = parse_metrics(_exposition({"0": {**ZERO, "gen": 30, "done": 2}}), t=5.0)
    res = summarize(before, after, [])
    assert "server_generation_tokens" not in res.metrics
    assert "restarted" in res.unavailable_metrics["server_generation_tokens"]
    assert res.deltas == {}


@pytest.fixture
def http_endpoint() -> Iterator[tuple[str, dict]]:
    """A real local HTTP server whose /metrics body and status the test sets."""
    reply = {"status": 200, "body": "# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total 1.5\n"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = reply["body"].encode()
            self.send_response(reply["status"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics", reply
    server.shutdown()
    server.server_close()


async def _scrape_reason(url: str) -> str:
    scraper = MetricsScraper(url, interval_s=0.05, timeout_s=2.0)
    await scraper.start()
    result = await scraper.stop()
    assert result.available is False and result.metrics == {}
    return result.reason


async def test_a_metrics_page_that_is_not_vllm_says_so(http_endpoint) -> None:
    url, _ = http_endpoint
    assert "not a vLLM server" in await _scrape_reason(url)


async def test_http_error_and_unreachable_are_reasons(http_endpoint) -> None:
    url, reply = http_endpoint
    reply["status"], reply["body"] = 404, "not found"
    assert "HTTP 404" in await _scrape_reason(url)
    dead_port = free_port()  # bound, then released: nothing listens there
    assert "cannot reach" in await _scrape_reason(f"http://127.0.0.1:{dead_port}/metrics")


# --- real vLLM on the CPU -------------------------------------------------------------------------

N_REQUESTS = 6
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def cpu_vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, str]]:
    pytest.importorskip("vllm", reason="vLLM's CPU build is not installed (bash scripts/setup.sh)")
    from perfgate.models import resolve_model
    from perfgate.serving.profile import load_profile
    from perfgate.serving.server import VllmServer

    profile = load_profile("cpu-tiny")
    # vLLM's own FLOP/byte counters, so the estimate can be checked against them; eager: faster start.
    profile = profile.model_copy(update={"flags": {**profile.flags, "enable-mfu-metrics": True,
                                                   "enforce-eager": True}})
    model_dir = str(resolve_model(profile.model))
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with VllmServer(profile, model_dir, log_path=log) as server:
        yield server, model_dir


async def _stream_completion(client: httpx.AsyncClient, base_url: str, i: int) -> dict:
    usage: dict = {}
    payload = {"model": "tiny", "prompt": f"request {i}: the quick brown fox", "max_tokens": MAX_TOKENS,
               "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", base_url + "/v1/completions", json=payload) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                usage = json.loads(line[6:]).get("usage") or usage
    return usage


@pytest.mark.cpu
@pytest.mark.slow
async def test_server_counts_match_the_clients_own(cpu_vllm, tmp_path: Path) -> None:
    server, model_dir = cpu_vllm
    async with httpx.AsyncClient(timeout=120) as client:
        await _stream_completion(client, server.base_url, -1)  # warm-up: must not count in the window
        tele = Telemetry(server.metrics_url, pids_provider=server.pids, gpu_class="cpu",
                         model_dir=model_dir, metrics_interval_s=0.2)
        await tele.start()
        usages = await asyncio.gather(*(_stream_completion(client, server.base_url, i)
                                        for i in range(N_REQUESTS)))
        result = await tele.stop()

    m = result.metrics
    assert "server" not in result.unavailable, result.unavailable
    assert m["server_requests_completed"] == len(usages) == N_REQUESTS
    assert m["server_generation_tokens"] == sum(u["completion_tokens"] for u in usages) == N_REQUESTS * MAX_TOKENS
    assert m["server_prompt_tokens"] == sum(u["prompt_tokens"] for u in usages)
    assert m["preemptions"] == 0
    for key in ("server_mean_ttft_ms", "server_mean_itl_ms", "server_mean_e2el_ms", "tokens_per_step_mean"):
        assert key in m, f"{key} missing: {result.unavailable.get(key)}"
    # Gauge statistics need MIN_GAUGE_SAMPLES samples; a window this short may have fewer, and then each key
    # is reported unavailable with that reason (never a number from two or three instants).
    samples = len(result.server.samples)
    for key in ("running_batch_mean", "running_batch_p95", "waiting_queue_peak", "kv_cache_usage_pct_peak"):
        if samples >= MIN_GAUGE_SAMPLES:
            assert key in m, f"{key} missing: {result.unavailable.get(key)}"
        else:
            assert key not in m and "too few" in result.unavailable[key], (key, samples)
    assert m["server_mean_e2el_ms"] >= m["server_mean_ttft_ms"] > 0
    assert m["tokens_per_step_mean"] >= 1
    # GPU telemetry on a CPU host: unavailable with reasons, no figures
    assert "NVML" in result.unavailable["nvml"] and "gpu_util_pct_mean" not in m
    assert "'cpu'" in result.unavailable["mfu_pct"] and "mbu_pct" not in m
    assert result.saturated is not True

    # vLLM's own counters were on: efficiency against a card's peaks uses them, and the config-based
    # estimate of the same window's FLOPs agrees with vLLM's count.
    d = result.server.deltas
    assert d["flops_per_gpu"] > 0 and d["read_bytes_per_gpu"] > 0
    assert compute_efficiency("a10g", result.server.duration_s, d).source == "vllm-counters"
    flops, _ = estimate_work(load_model_shape(model_dir), requests=d["requests"],
                             prompt_tokens=d["prompt_tokens"], generation_tokens=d["generation_tokens"],
                             engine_steps=d["engine_steps"])
    assert flops == pytest.approx(d["flops_per_gpu"], rel=0.05)

    # the timeline: /metrics samples inside the window, on the time.time() clock, written atomically
    events = [{"request": i, "sent": result.window[0], "end": result.window[1]} for i in range(N_REQUESTS)]
    path = write_timeline(tmp_path / "timeline.json", result.timeline(events))
    timeline = json.loads(path.read_text())
    samples = timeline["server"]["samples"]
    assert len(samples) >= 2 and timeline["load"] == events
    assert all(result.window[0] <= s["t"] <= result.window[1] for s in samples)
    assert samples[-1]["generation_tokens"] == m["server_generation_tokens"]
    assert timeline["nvml"]["available"] is False and timeline["nvml"]["reason"]



def test_too_few_gauge_samples_are_unavailable_not_a_reading() -> None:
    snap = parse_metrics(_exposition({"0": {**ZERO, "kv": 0.5}}))
    rows = [_sample_row(snap, snap)] * (MIN_GAUGE_SAMPLES - 1)
    res = summarize(snap, snap, rows)
    for key in ("running_batch_mean", "running_batch_p95", "kv_cache_usage_pct_peak"):
        assert key not in res.metrics
        assert "too few" in res.unavailable_metrics[key]
    assert "kv_cache_usage_pct_peak" in summarize(snap, snap, rows + rows[:1]).metrics


def test_a_timeline_row_parses_only_its_families_and_reads_the_same() -> None:
    from perfgate.telemetry.prometheus import ROW_FAMILIES, only_families

    before = parse_metrics(_exposition({"0": {**ZERO, "gen": 100, "done": 5}}), t=0.0)
    text = _exposition({"0": {**ZERO, "running": 3, "waiting": 1, "kv": 0.25, "gen": 180, "done": 9, "flops": 4e12,
                              "ttft_sum": 0.2}})
    small = only_families(text, ROW_FAMILIES)
    assert "time_to_first_token" not in small and "estimated_flops" not in small  # not parsed every tick
    full_row, small_row = (_sample_row(parse_metrics(t, t=1.0), before) for t in (text, small))
    assert small_row == full_row and small_row["running"] == 3 and small_row["generation_tokens"] == 80
