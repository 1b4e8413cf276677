"""Every metric perfgate knows: its unit and which direction is better.

The one list SLO files, baselines and reports are checked against: an SLO or baseline naming a key
that is not here is an error, never a silent pass. Load keys follow `vllm bench serve`'s names;
telemetry keys carry their unit in the name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Better = Literal["higher", "lower", "none"]


@dataclass(frozen=True)
class MetricSpec:
    key: str
    unit: str
    better: Better
    doc: str
    source: Literal["load", "client", "nvml", "server", "efficiency"] = "load"


def _latency(kind: str, doc: str) -> list[MetricSpec]:
    stats = ("mean", "median", "std", "p50", "p90", "p95", "p99")
    return [MetricSpec(f"{s}_{kind}_ms", "ms", "none" if s == "std" else "lower", f"{s} {doc}") for s in stats]


_SPECS: list[MetricSpec] = [
    # --- load (vllm bench serve names) ---
    MetricSpec("completed", "requests", "higher", "requests that completed successfully in the window"),
    MetricSpec("failed", "requests", "lower", "requests that failed (any error class)"),
    MetricSpec("total_input_tokens", "tokens", "none", "prompt tokens of completed requests (server usage)"),
    MetricSpec("total_output_tokens", "tokens", "none", "generated tokens of completed requests (server usage)"),
    MetricSpec("duration", "s", "none", "length of the measured window"),
    MetricSpec("request_throughput", "req/s", "higher", "completed requests per second of the window"),
    MetricSpec("output_throughput", "tok/s", "higher", "generated tokens per second"),
    MetricSpec("total_token_throughput", "tok/s", "higher", "prompt + generated tokens per second"),
    MetricSpec("request_goodput", "req/s", "higher", "requests per second that met every per-request SLO"),
    MetricSpec("error_rate", "fraction", "lower", "failed / (completed + failed)"),
    MetricSpec("errors_connect", "requests", "lower", "connection refused/reset before a response"),
    MetricSpec("errors_timeout", "requests", "lower", "client-side timeouts"),
    MetricSpec("errors_http_4xx", "requests", "lower", "HTTP 4xx responses"),
    MetricSpec("errors_http_5xx", "requests", "lower", "HTTP 5xx responses"),
    MetricSpec("errors_stream", "requests", "lower", "broken or malformed SSE streams"),
    MetricSpec("token_count_mismatches", "requests", "lower",
               "requests whose usage.prompt/completion_tokens differ from what was asked"),
    *_latency("ttft", "time to first token"),
    *_latency("tpot", "time per output token after the first"),
    *_latency("itl", "inter-token latency"),
    *_latency("e2el", "end-to-end request latency from send"),
    *_latency("e2el_from_scheduled", "end-to-end latency from the scheduled send time (open loop)"),
    *_latency("ttft_from_scheduled", "time to first token from the scheduled send time (open loop)"),
    # --- client self-check ---
    MetricSpec("offered_rate", "req/s", "none", "request rate the scenario asked for (open loop)", "client"),
    MetricSpec("achieved_rate", "req/s", "higher", "rate at which requests were actually sent", "client"),
    MetricSpec("achieved_rate_ratio", "fraction", "higher", "achieved_rate / offered_rate", "client"),
    MetricSpec("p50_send_lag_ms", "ms", "lower", "median of sent - scheduled", "client"),
    MetricSpec("p99_send_lag_ms", "ms", "lower", "P99 of sent - scheduled", "client"),
    MetricSpec("max_send_lag_ms", "ms", "lower", "worst sent - scheduled", "client"),
    MetricSpec("client_cpu_pct", "%", "lower", "CPU used by the load generator (100 = one core)", "client"),
    MetricSpec("max_sustained_rate", "req/s", "higher",
               "highest offered rate whose latency SLOs held (from a sweep)", "client"),
    # --- NVML ---
    MetricSpec("gpu_util_pct_mean", "%", "higher", "NVML utilization, mean over the window", "nvml"),
    MetricSpec("gpu_util_pct_p50", "%", "higher", "NVML utilization, median", "nvml"),
    MetricSpec("gpu_util_pct_p95", "%", "higher", "NVML utilization, P95", "nvml"),
    MetricSpec("gpu_util_pct_peak", "%", "none", "NVML utilization, peak", "nvml"),
    MetricSpec("vram_used_gib_mean", "GiB", "lower", "device memory used, mean", "nvml"),
    MetricSpec("vram_used_gib_peak", "GiB", "lower", "device memory used, peak (device total)", "nvml"),
    MetricSpec("vram_process_gib_peak", "GiB", "lower", "memory used by the vLLM process tree, peak", "nvml"),
    MetricSpec("power_w_mean", "W", "lower", "board power, mean", "nvml"),
    MetricSpec("power_w_peak", "W", "none", "board power, peak", "nvml"),
    MetricSpec("sm_clock_mhz_mean", "MHz", "none", "SM clock, mean", "nvml"),
    MetricSpec("temperature_c_peak", "C", "lower", "GPU temperature, peak", "nvml"),
    # --- vLLM /metrics ---
    MetricSpec("running_batch_mean", "requests", "higher", "vllm:num_requests_running, mean", "server"),
    MetricSpec("running_batch_p95", "requests", "higher", "vllm:num_requests_running, P95", "server"),
    MetricSpec("waiting_queue_mean", "requests", "lower", "vllm:num_requests_waiting, mean", "server"),
    MetricSpec("waiting_queue_peak", "requests", "lower", "vllm:num_requests_waiting, peak", "server"),
    MetricSpec("kv_cache_usage_pct_peak", "%", "none", "vllm:kv_cache_usage_perc, peak", "server"),
    MetricSpec("preemptions", "count", "lower", "vllm:num_preemptions_total delta in the window", "server"),
    MetricSpec("prefix_cache_hit_pct", "%", "higher", "prefix-cache hits / queries in the window", "server"),
    MetricSpec("server_requests_completed", "requests", "none", "vllm:request_success_total delta", "server"),
    MetricSpec("server_generation_tokens", "tokens", "none", "vllm:generation_tokens_total delta", "server"),
    MetricSpec("server_prompt_tokens", "tokens", "none", "vllm:prompt_tokens_total delta", "server"),
    MetricSpec("server_mean_ttft_ms", "ms", "lower", "server-side TTFT mean (histogram delta)", "server"),
    MetricSpec("server_mean_itl_ms", "ms", "lower", "server-side inter-token latency mean", "server"),
    MetricSpec("server_mean_e2el_ms", "ms", "lower", "server-side E2E latency mean", "server"),
    MetricSpec("server_mean_queue_ms", "ms", "lower", "server-side queue time mean", "server"),
    MetricSpec("tokens_per_step_mean", "tokens", "higher", "tokens scheduled per engine step, mean", "server"),
    # --- efficiency ---
    MetricSpec("mbu_pct", "%", "higher", "model bandwidth utilization vs the GPU's peak", "efficiency"),
    MetricSpec("mfu_pct", "%", "higher", "model FLOPs utilization vs the GPU's peak bf16", "efficiency"),
]

METRICS: dict[str, MetricSpec] = {spec.key: spec for spec in _SPECS}


def spec(key: str) -> MetricSpec:
    """The spec for ``key``; a KeyError naming close matches for a typo."""
    try:
        return METRICS[key]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(key, METRICS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown metric '{key}'{hint} (all metrics: `perfgate metrics`)") from None
