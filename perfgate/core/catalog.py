"""Every metric perfgate knows, and the one place its policy lives.

A spec carries the metric's unit, which direction is better, its kind, and how the baseline gate treats
it: gated or report-only, the minimum relative effect that counts as material, and the absolute floor below
which no change is material (a count's quantum, a latency's resolution). SLO files, baselines, the gate,
A/B and reports read these specs; nothing else holds metric policy.

What is gated, and why so few: each gated metric is one more chance of a false alarm and one more term in
the multiplicity correction. Gated are the figures a serving change moves and a user feels (output
throughput, TTFT/TPOT/E2E median and P99, errors, VRAM, queue time, energy per token). Report-only are duplicates
(``p50_*`` = ``median_*``, ``*_from_scheduled`` = ``*`` in a closed loop, ``total_token_throughput`` and
``request_throughput`` move with ``output_throughput`` at fixed lengths), environment readings (power,
temperature, clocks: they describe the room, not the server), and occupancy figures whose "better"
direction flips between closed and open loop (running batch, KV usage, GPU utilization).

Load keys follow ``vllm bench serve``'s names; telemetry keys carry their unit in the name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

Better = Literal["higher", "lower", "none"]
Source = Literal["load", "client", "nvml", "server", "efficiency"]
# throughput/latency/error/memory: what serving is judged on. environment: the room (power, heat, clocks).
# occupancy: how full the server was (direction depends on the load shape). count: sizes of the window.
# client: the load generator's self-check. efficiency: derived ratios (MBU/MFU).
Kind = Literal["throughput", "latency", "error", "memory", "environment", "occupancy", "count", "client",
               "efficiency"]


# Sources read from the GPU itself: on a GPU run their absence is a failure, not a skip.
GPU_SOURCES: tuple[str, ...] = ("nvml",)


@dataclass(frozen=True)
class MetricSpec:
    key: str
    unit: str
    better: Better
    doc: str
    source: Source = "load"
    kind: Kind = "latency"
    gated: bool = False  # the baseline gate tests it; every other metric is reported only
    min_effect: float = 0.05  # smallest relative worsening that is a regression (0.05 = 5 %)
    floor: float = 0.0  # smallest absolute worsening that is a regression, in the metric's unit
    key_metric: bool = False  # in the summary's table of key figures
    duplicate_of: str | None = None  # same figure as another key (reported, never gated twice)

    @property
    def needs_gpu(self) -> bool:
        """Read from the GPU (NVML). Missing on a GPU run means the runner's telemetry failed: a check of it
        then fails with the reason (gate and SLOs), never passes as skipped."""
        return self.source in GPU_SOURCES


def _latency(kind: str, doc: str, gated: dict[str, float], key: tuple[str, ...] = (),
             duplicate: str | None = None) -> list[MetricSpec]:
    """mean/median/std/p50/p90/p95/p99 of one latency; ``gated`` maps a statistic to its minimum effect."""
    out = []
    for s in ("mean", "median", "std", "p50", "p90", "p95", "p99"):
        key_name = f"{s}_{kind}_ms"
        dup = f"median_{kind}_ms" if s == "p50" else (f"{s}_{duplicate}_ms" if duplicate else None)
        out.append(MetricSpec(key_name, "ms", "none" if s == "std" else "lower", f"{s} {doc}", "load",
                              "latency", gated=s in gated and dup is None, min_effect=gated.get(s, 0.05),
                              floor=0.01, key_metric=s in key, duplicate_of=dup))
    return out


def _count(key: str, unit: str, better: Better, doc: str, **kw: object) -> MetricSpec:
    return MetricSpec(key, unit, better, doc, kind="count", **kw)  # type: ignore[arg-type]


def _error(key: str, doc: str, floor: float = 2.0, gated: bool = False, unit: str = "requests") -> MetricSpec:
    return MetricSpec(key, unit, "lower", doc, kind="error", gated=gated, min_effect=0.0, floor=floor)


def _env(key: str, unit: str, doc: str) -> MetricSpec:
    return MetricSpec(key, unit, "none", doc, "nvml", "environment")


def _occupancy(key: str, unit: str, doc: str, source: Source = "server", **kw: object) -> MetricSpec:
    return MetricSpec(key, unit, "none", doc, source, "occupancy", **kw)  # type: ignore[arg-type]


def _client(key: str, unit: str, doc: str) -> MetricSpec:
    return MetricSpec(key, unit, "none", doc, "client", "client")


_SPECS: list[MetricSpec] = [
    # --- load (vllm bench serve names) ---
    _count("completed", "requests", "none", "requests that completed successfully in the window"),
    _count("total_input_tokens", "tokens", "none", "prompt tokens of completed requests (server usage)"),
    _count("total_output_tokens", "tokens", "none", "generated tokens of completed requests (server usage)"),
    _count("duration", "s", "none", "length of the measured window"),
    MetricSpec("request_throughput", "req/s", "higher", "completed requests per second of the window",
               kind="throughput", key_metric=True, duplicate_of="output_throughput"),
    # 4.5 %, not 5 %: the runner looks again after each added repeat, so a loss right at the margin can pass
    # on a later look. Simulated with the H200 noise, 4 repeats against a 2 x 4 baseline: a 5 % loss is caught
    # in 99 % of trials and an unchanged server fails 0.6 % (at 5 %: 96.6 % and 0.2 %; 3 repeats: 93.5 %).
    MetricSpec("output_throughput", "tok/s", "higher", "generated tokens per second", kind="throughput",
               gated=True, min_effect=0.045, floor=0.01, key_metric=True),
    MetricSpec("total_token_throughput", "tok/s", "higher", "prompt + generated tokens per second",
               kind="throughput", duplicate_of="output_throughput"),
    MetricSpec("request_goodput", "req/s", "higher", "requests per second that met every per-request SLO",
               kind="throughput"),
    _error("failed", "requests that failed (any error class)", gated=True),
    _error("error_rate", "failed / (completed + failed)", floor=0.005, gated=True, unit="fraction"),
    _error("errors_connect", "connection refused/reset before a response"),
    _error("errors_timeout", "client-side timeouts"),
    _error("errors_http_4xx", "HTTP 4xx responses"),
    _error("errors_http_5xx", "HTTP 5xx responses"),
    _error("errors_stream", "broken or malformed SSE streams"),
    _error("token_count_mismatches", "requests whose usage.prompt/completion_tokens differ from what was asked",
           floor=1.0, gated=True),
    # Minimum effects from the H200 sensitivity run (fixed-512-256, closed loop, 3 server sessions; see
    # README "Gate power"): each is the smallest margin whose A/A not-PASS rate stayed near or under 1 % with
    # 3 repeats against a 2-session baseline. Median TTFT varies 8 % between repeats and 6 % between sessions
    # at concurrency 32 (prefill interleaving), so only a doubling is a finding there.
    *_latency("ttft", "time to first token", {"median": 1.0, "p99": 0.35}, key=("median", "p99")),
    *_latency("tpot", "time per output token after the first", {"median": 0.05, "p99": 0.10},
              key=("median", "p99")),
    *_latency("itl", "inter-token latency", {}),
    *_latency("e2el", "end-to-end request latency from send", {"median": 0.08, "p99": 0.08},
              key=("median", "p99")),
    *_latency("e2el_from_scheduled", "end-to-end latency from the scheduled send time (open loop)", {},
              duplicate="e2el"),
    *_latency("ttft_from_scheduled", "time to first token from the scheduled send time (open loop)", {},
              duplicate="ttft"),
    MetricSpec("flushed_stream_pct", "%", "none", "completed streams whose tokens all arrived in one read "
               "(TPOT ~0: the server flushed the whole stream at once)", "load", "occupancy"),
    # --- client self-check ---
    _client("offered_rate", "req/s", "request rate the scenario asked for (open loop)"),
    _client("achieved_rate", "req/s", "rate at which requests were actually sent"),
    _client("achieved_rate_ratio", "fraction", "achieved_rate / offered_rate"),
    _client("p50_send_lag_ms", "ms", "median of sent - scheduled"),
    _client("p99_send_lag_ms", "ms", "P99 of sent - scheduled"),
    _client("max_send_lag_ms", "ms", "worst sent - scheduled"),
    _client("client_cpu_pct", "%", "CPU used by the load generator (100 = one core)"),
    MetricSpec("max_sustained_rate", "req/s", "higher", "highest offered rate whose latency SLOs held (from a "
               "sweep)", "client", "throughput", gated=True, min_effect=0.10, key_metric=True),
    # --- NVML ---
    _occupancy("gpu_util_pct_mean", "%", "NVML utilization, mean over the window", "nvml", key_metric=True),
    _occupancy("gpu_util_pct_p50", "%", "NVML utilization, median", "nvml"),
    _occupancy("gpu_util_pct_p95", "%", "NVML utilization, P95", "nvml"),
    _occupancy("gpu_util_pct_peak", "%", "NVML utilization, peak", "nvml"),
    MetricSpec("vram_used_gib_mean", "GiB", "lower", "device memory used, mean", "nvml", "memory"),
    MetricSpec("vram_used_gib_peak", "GiB", "lower", "device memory used, peak (device total)", "nvml",
               "memory", gated=True, min_effect=0.02, floor=0.25, key_metric=True),
    MetricSpec("vram_process_gib_peak", "GiB", "lower", "memory used by the vLLM process tree, peak", "nvml",
               "memory", duplicate_of="vram_used_gib_peak"),
    _env("power_w_mean", "W", "board power, mean"),
    _env("power_w_peak", "W", "board power, peak"),
    _env("sm_clock_mhz_mean", "MHz", "SM clock, mean"),
    _env("temperature_c_peak", "C", "GPU temperature, peak"),
    # --- NVML energy and throttling (perfgate/telemetry/energy.py, throttle.py) ---
    # Gated: joules per generated token is what batching, kernels and clocks move and what a fleet pays for;
    # it needs no SLO to matter. 8 %, like E2E: it is power / throughput, so it carries throughput's noise and
    # the room's (power varies with temperature); not yet measured on a GPU run, re-derive it from one.
    MetricSpec("energy_per_output_token_j", "J/token", "lower", "GPU energy in the window (NVML energy "
               "counter, summed over GPUs) / generated tokens of completed requests", "nvml", "efficiency",
               gated=True, min_effect=0.08, key_metric=True),
    MetricSpec("avg_power_w", "W", "none", "GPU energy in the window / its length (NVML energy counter, summed "
               "over GPUs)", "nvml", "environment", key_metric=True),
    _env("energy_j", "J", "GPU energy in the window (NVML energy counter delta, summed over GPUs)"),
    _env("throttle_sw_power_cap_pct", "%", "samples with the SW power cap holding clocks down, worst GPU"),
    _env("throttle_hw_slowdown_pct", "%", "samples with HW slowdown (power or heat) active, worst GPU"),
    _env("throttle_sw_thermal_pct", "%", "samples with SW thermal slowdown active, worst GPU"),
    _env("throttle_hw_thermal_pct", "%", "samples with HW thermal slowdown active, worst GPU"),
    _env("throttle_hw_power_brake_pct", "%", "samples with the HW power brake active, worst GPU"),
    # --- vLLM /metrics ---
    _occupancy("running_batch_mean", "requests", "vllm:num_requests_running, mean", key_metric=True),
    _occupancy("running_batch_p95", "requests", "vllm:num_requests_running, P95"),
    _occupancy("waiting_queue_mean", "requests", "vllm:num_requests_waiting, mean"),
    _occupancy("waiting_queue_peak", "requests", "vllm:num_requests_waiting, peak"),
    _occupancy("kv_cache_usage_pct_peak", "%", "vllm:kv_cache_usage_perc, peak", key_metric=True),
    _occupancy("preemptions", "count", "vllm:num_preemptions_total delta in the window"),
    _occupancy("prefix_cache_hit_pct", "%", "prefix-cache hits / queries in the window (checked against what "
               "the scenario declares, not gated)", key_metric=True),
    _count("server_requests_completed", "requests", "none", "vllm:request_success_total delta", source="server"),
    _count("server_generation_tokens", "tokens", "none", "vllm:generation_tokens_total delta", source="server"),
    _count("server_prompt_tokens", "tokens", "none", "vllm:prompt_tokens_total delta", source="server"),
    MetricSpec("server_mean_ttft_ms", "ms", "lower", "server-side TTFT mean (histogram delta)", "server",
               duplicate_of="mean_ttft_ms"),
    MetricSpec("server_mean_itl_ms", "ms", "lower", "server-side inter-token latency mean", "server",
               duplicate_of="mean_itl_ms"),
    MetricSpec("server_mean_e2el_ms", "ms", "lower", "server-side E2E latency mean", "server",
               duplicate_of="mean_e2el_ms"),
    # Gated: the time requests wait for a scheduler slot is what --max-num-seqs and friends govern, and a
    # client cannot see it apart from TTFT. Near 0 when nothing waits, so the absolute floor does the work.
    MetricSpec("server_mean_queue_ms", "ms", "lower", "server-side queue time mean", "server", gated=True,
               min_effect=1.50, floor=2.0),
    _occupancy("tokens_per_step_mean", "tokens", "tokens scheduled per engine step, mean"),
    # --- efficiency ---
    MetricSpec("mbu_pct", "%", "higher", "model bandwidth utilization vs the GPU's peak", "efficiency",
               "efficiency", key_metric=True),
    MetricSpec("mfu_pct", "%", "higher", "model FLOPs utilization vs the GPU's peak bf16", "efficiency",
               "efficiency"),
]

METRICS: dict[str, MetricSpec] = {s.key: s for s in _SPECS}
GATED: tuple[str, ...] = tuple(k for k, s in METRICS.items() if s.gated)
KEY_METRICS: tuple[str, ...] = tuple(k for k, s in METRICS.items() if s.key_metric)


def spec(key: str) -> MetricSpec:
    """The spec for ``key``; a KeyError naming close matches for a typo."""
    try:
        return METRICS[key]
    except KeyError:
        close = difflib.get_close_matches(key, METRICS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown metric '{key}'{hint} (all metrics: `perfgate metrics`)") from None
