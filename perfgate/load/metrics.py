"""RequestRecords -> the flat metric dict, with ``vllm bench serve``'s definitions and key names.

Same as ``vllm/benchmarks/serve.py::calculate_metrics``: throughputs divide by the window's duration;
TTFT and E2E latency are per successful request from its send; TPOT is (latency - TTFT) / (output - 1)
over requests with more than one output token; ITL pools every gap between token chunks; goodput counts
requests meeting every per-request SLO (TPOT 0 for single-token outputs); std is numpy's (population).
Token counts come from the server's ``usage``. One difference: where vLLM reports 0 for a statistic with
no samples (no request completed), perfgate leaves the key out, so an SLO on it fails as missing instead
of passing on a fake 0 ms.

perfgate's own addition, ``flushed_stream_pct``: the CPU build serves in two regimes about 2x apart in
throughput, and in one of them it flushes each stream whole (every token of a request in one read, TPOT
~0 ms). The metric says which regime a window ran in; ``regime_note`` turns it into a line for reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from perfgate.core.records import ERROR_CLASSES, RequestRecord
from perfgate.telemetry.throttle import THROTTLE_KEYS, throttled_text

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
GOODPUT_KEYS = ("ttft", "tpot", "e2el")
# Token events of one read share one timestamp in the asyncio transports (gap exactly 0); a flushed stream
# split over back-to-back reads, or Locust's line reader (one stamp per line), leaves gaps of microseconds.
# A real decode step is milliseconds even on a GPU.
FLUSH_GAP_S = 0.05e-3
FLUSHED_REGIME_PCT = 50.0  # from here on, a window is "in the flushed regime" (regime_note)


def latency_stats(name: str, values_s: Sequence[float], percentiles: Iterable[int] = PERCENTILES) -> dict[str, float]:
    """``mean|median|std|p<N>_<name>_ms`` from seconds; empty input gives no keys."""
    if not values_s:
        return {}
    arr = np.asarray(values_s, dtype=float) * 1000.0
    out = {f"mean_{name}_ms": float(np.mean(arr)), f"median_{name}_ms": float(np.median(arr)),
           f"std_{name}_ms": float(np.std(arr))}
    for p in percentiles:
        out[f"p{p}_{name}_ms"] = float(np.percentile(arr, p))
    return out


def is_flushed_stream(record: RequestRecord) -> bool | None:
    """Whether every token of a completed stream arrived in one read; None when it cannot say (failed, or
    fewer than 2 output tokens). One token event carrying several tokens counts as one read too."""
    if not record.success or record.output_len < 2 or not record.token_times:
        return None
    return all(gap < FLUSH_GAP_S for gap in record.itl)


def compute_metrics(records: Sequence[RequestRecord], duration_s: float, *,
                    goodput_slos_ms: dict[str, float] | None = None,
                    percentiles: Iterable[int] = PERCENTILES) -> dict[str, float]:
    """The load metrics of one measured window (``records`` of that window only, warm-up excluded)."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    percentiles = tuple(percentiles)
    ok = [r for r in records if r.success]
    failed = [r for r in records if not r.success]

    ttfts: list[float] = []
    e2els: list[float] = []
    tpots: list[float] = []
    all_tpots: list[float] = []
    itls: list[float] = []
    ttft_sched: list[float] = []
    e2el_sched: list[float] = []
    total_in = total_out = 0
    for r in ok:
        out_len = r.output_len
        total_in += r.prompt_tokens if r.prompt_tokens is not None else r.prompt_tokens_expected
        total_out += out_len
        ttft, latency = r.ttft, r.latency
        assert ttft is not None and latency is not None  # a success has at least one token chunk
        ttfts.append(ttft)
        e2els.append(latency)
        tpot = 0.0
        if out_len > 1:
            tpot = (latency - ttft) / (out_len - 1)
            tpots.append(tpot)
        all_tpots.append(tpot)
        itls.extend(r.itl)
        ttft_sched.append(r.first_token - r.scheduled)  # type: ignore[operator]
        e2el_sched.append(r.end - r.scheduled)  # type: ignore[operator]

    m: dict[str, float] = {
        "completed": len(ok),
        "failed": len(failed),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "duration": duration_s,
        "request_throughput": len(ok) / duration_s,
        "output_throughput": total_out / duration_s,
        "total_token_throughput": (total_in + total_out) / duration_s,
        "error_rate": len(failed) / len(records) if records else 0.0,
    }
    for cls in ERROR_CLASSES:
        m[f"errors_{cls}"] = sum(1 for r in failed if r.error == cls)
    m["token_count_mismatches"] = sum(1 for r in ok if r.token_count_mismatch)

    if goodput_slos_ms:
        unknown = set(goodput_slos_ms) - set(GOODPUT_KEYS)
        if unknown:
            raise ValueError(f"unknown goodput SLO(s) {sorted(unknown)}; allowed: {', '.join(GOODPUT_KEYS)} (ms)")
        series = {"ttft": ttfts, "tpot": all_tpots, "e2el": e2els}
        good = sum(1 for i in range(len(ok))
                   if all(series[k][i] * 1000.0 <= bound for k, bound in goodput_slos_ms.items()))
        m["request_goodput"] = good / duration_s

    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els),
                         ("ttft_from_scheduled", ttft_sched), ("e2el_from_scheduled", e2el_sched)):
        m.update(latency_stats(name, values, percentiles))

    flushed = [f for r in ok if (f := is_flushed_stream(r)) is not None]
    if flushed:
        m["flushed_stream_pct"] = 100.0 * sum(flushed) / len(flushed)

    lags = [r.send_lag for r in records]
    if lags:
        arr = np.asarray(lags) * 1000.0
        m["p50_send_lag_ms"] = float(np.percentile(arr, 50))
        m["p99_send_lag_ms"] = float(np.percentile(arr, 99))
        m["max_send_lag_ms"] = float(np.max(arr))
    return m


def regime_note(metrics: dict[str, float]) -> str | None:
    """One line when most streams were flushed whole (the CPU build's second regime), else None."""
    pct = metrics.get("flushed_stream_pct")
    if pct is None or pct < FLUSHED_REGIME_PCT:
        return None
    tpot = metrics.get("median_tpot_ms")
    tpot_text = "n/a" if tpot is None else f"{tpot:.2f}"
    return (f"streams flushed whole: {pct:.0f} % of requests got every token in one read (median TPOT "
            f"{tpot_text} ms); the CPU build's second regime, about 2x apart in throughput — figures from "
            "this phase are not comparable with the other regime")


def mismatch_summary(records: Sequence[RequestRecord], limit: int = 5) -> list[str]:
    """Human lines for the first few token-count mismatches (for reports and invalid reasons)."""
    lines = [f"request {r.index}: {why}" for r in records if (why := r.token_count_mismatch)]
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines


def energy_lines(metrics: dict[str, float]) -> list[str]:
    """The table's NVML energy and throttling block (nothing when NVML did not measure, e.g. on CPU)."""
    rows = [(label, fmt.format(metrics[key])) for label, key, fmt in (
        ("Energy per output token (J/token):", "energy_per_output_token_j", "{:.4f}"),
        ("Average GPU power (W):", "avg_power_w", "{:.1f}"),
        ("GPU energy (J):", "energy_j", "{:.1f}")) if key in metrics]
    if any(key in metrics for key in THROTTLE_KEYS.values()):
        rows.append(("Throttled (power/thermal, % of samples):", throttled_text(metrics) or "none"))
    if not rows:
        return []
    return [f"{'Energy and throttling (NVML)':-^60}"] + [f"{a:<42} {b:>17}" for a, b in rows]


def format_table(metrics: dict[str, float], *, title: str = "perfgate bench") -> str:
    """The metric table, laid out like ``vllm bench serve``'s result block."""
    rows: list[tuple[str, str]] = []

    def add(label: str, key: str, fmt: str = "{:.2f}") -> None:
        if key in metrics:
            rows.append((label, fmt.format(metrics[key])))

    add("Successful requests:", "completed", "{:.0f}")
    add("Failed requests:", "failed", "{:.0f}")
    add("Benchmark duration (s):", "duration")
    add("Total input tokens:", "total_input_tokens", "{:.0f}")
    add("Total generated tokens:", "total_output_tokens", "{:.0f}")
    add("Request throughput (req/s):", "request_throughput")
    add("Request goodput (req/s):", "request_goodput")
    add("Output token throughput (tok/s):", "output_throughput")
    add("Total token throughput (tok/s):", "total_token_throughput")
    add("Streams flushed whole (%):", "flushed_stream_pct", "{:.1f}")
    lines = [f"{' ' + title + ' ':=^60}"] + [f"{a:<42} {b:>17}" for a, b in rows]
    for name, label in (("ttft", "Time to First Token"), ("tpot", "Time per Output Token (excl. 1st token)"),
                        ("itl", "Inter-token Latency"), ("e2el", "End-to-end Latency"),
                        ("e2el_from_scheduled", "E2E Latency from scheduled send")):
        if f"mean_{name}_ms" not in metrics:
            continue
        lines.append(f"{label:-^60}")
        for stat in ("mean", "median", "p90", "p99"):
            key = f"{stat}_{name}_ms"
            if key in metrics:
                lines.append(f"{stat.capitalize() + ' ' + name.upper().split('_')[0] + ' (ms):':<42} "
                             f"{metrics[key]:>17.2f}")
    lines += energy_lines(metrics)
    lines.append(f"{'Errors and client self-check':-^60}")
    for key in ("error_rate", "errors_connect", "errors_timeout", "errors_http_4xx", "errors_http_5xx",
                "errors_stream", "token_count_mismatches", "offered_rate", "achieved_rate",
                "achieved_rate_ratio", "p50_send_lag_ms", "p99_send_lag_ms", "client_cpu_pct"):
        if key in metrics:
            value = metrics[key]
            text = f"{value:.0f}" if float(value).is_integer() else f"{value:.3f}"
            lines.append(f"{key + ':':<42} {text:>17}")
    lines.append("=" * 60)
    if note := regime_note(metrics):
        lines.append(f"note: {note}")
    return "\n".join(lines)
